"""OOD metrics against brute-force definitions, and the scorers."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score

from sklearn_reclag import OOD_LABEL, EnergyDetector
from sklearn_reclag.metrics import (
    fpr95_scorer,
    fpr_at_tpr,
    make_ood_scorer,
    ood_aupr,
    ood_auroc,
    ood_auroc_scorer,
    ood_balanced_accuracy,
)


def fpr_brute_force(is_pos, score, tpr):
    """Largest threshold accepting >= tpr of positives; fraction of negatives accepted."""
    pos, neg = score[is_pos], score[~is_pos]
    for threshold in np.sort(np.unique(score))[::-1]:
        if np.mean(pos >= threshold) >= tpr:
            return np.mean(neg >= threshold)
    raise AssertionError("unreachable: the lowest score accepts every positive")


def auroc_brute_force(is_pos, score):
    """P(score of a positive > score of a negative) + half the ties."""
    diff = score[is_pos][:, None] - score[~is_pos][None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0))


def average_precision_brute_force(is_pos, score):
    """sum over distinct thresholds of (recall gain) x precision, ties grouped."""
    ap, previous_recall = 0.0, 0.0
    for threshold in np.sort(np.unique(score))[::-1]:
        accepted = score >= threshold
        recall = np.sum(accepted & is_pos) / np.sum(is_pos)
        precision = np.sum(accepted & is_pos) / np.sum(accepted)
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def _labels_and_scores(rng, n_id, n_ood, n_levels=None):
    y = np.concatenate([rng.integers(0, 5, n_id), np.full(n_ood, OOD_LABEL)])
    score = np.concatenate([rng.normal(1, 1, n_id), rng.normal(0, 1, n_ood)])
    if n_levels is not None:  # heavy ties
        score = np.round(score * n_levels) / n_levels
    return y, score


@pytest.mark.parametrize("n_id, n_ood", [(1, 1), (2, 3), (7, 4), (20, 20), (300, 150)])
@pytest.mark.parametrize("n_levels", [None, 1, 3])
@pytest.mark.parametrize("tpr", [0.95, 0.5, 1.0, 0.8])
def test_fpr_at_tpr_equals_brute_force(rng, n_id, n_ood, n_levels, tpr):
    for _ in range(5):
        y, score = _labels_and_scores(rng, n_id, n_ood, n_levels)
        is_id = y != OOD_LABEL
        assert fpr_at_tpr(y, score, tpr=tpr) == pytest.approx(
            fpr_brute_force(is_id, score, tpr)
        )
        assert fpr_at_tpr(y, score, tpr=tpr, positive="ood") == pytest.approx(
            fpr_brute_force(~is_id, -score, tpr)
        )


def test_fpr95_exact_small_case():
    # 20 ID scores 1..20 and OOD scores; 95 % of ID accepted at threshold 2.
    id_scores = np.arange(1, 21, dtype=float)
    ood_scores = np.array([0.5, 1.5, 2.0, 3.0])
    y = np.r_[np.zeros(20), np.full(4, OOD_LABEL)]
    # OOD scores >= 2: 2.0 and 3.0.
    assert fpr_at_tpr(y, np.r_[id_scores, ood_scores]) == 0.5


def test_tied_threshold_accepts_every_equal_score():
    # All scores equal: the only threshold accepts everything.
    assert fpr_at_tpr([0, 1, -1, -1], [1.0, 1.0, 1.0, 1.0]) == 1.0


@pytest.mark.parametrize("n_levels", [None, 2])
def test_auroc_and_aupr_equal_brute_force(rng, n_levels):
    y, score = _labels_and_scores(rng, 40, 25, n_levels)
    is_id = y != OOD_LABEL
    assert ood_auroc(y, score) == pytest.approx(auroc_brute_force(is_id, score))
    assert ood_aupr(y, score) == pytest.approx(average_precision_brute_force(is_id, score))
    assert ood_aupr(y, score, positive="ood") == pytest.approx(
        average_precision_brute_force(~is_id, -score)
    )


def test_boolean_is_id_labels_are_accepted(rng):
    y, score = _labels_and_scores(rng, 30, 30)
    is_id = y != OOD_LABEL
    assert fpr_at_tpr(is_id, score) == fpr_at_tpr(y, score)
    assert ood_auroc(is_id, score) == ood_auroc(y, score)


def test_string_class_labels_count_as_in_distribution():
    y = np.array(["cat", "dog", -1, -1], dtype=object)
    assert ood_auroc(y, [3.0, 2.0, 1.0, 0.0]) == 1.0


@pytest.mark.parametrize(
    "y, score, message",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "no OOD rows"),
        ([-1, -1], [0.1, 0.2], "no in-distribution rows"),
        ([0, -1], [0.1, np.nan], "NaN"),
        ([0, -1, 1], [0.1, 0.2], "3 entries but y_score has 2"),
        ([[0, -1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_bad_metric_input_is_rejected(y, score, message):
    for metric in (fpr_at_tpr, ood_auroc, ood_aupr):
        with pytest.raises(ValueError, match=message):
            metric(y, score)


def test_bad_metric_arguments_are_rejected():
    with pytest.raises(ValueError, match="positive must be"):
        fpr_at_tpr([0, -1], [1, 0], positive="in")
    with pytest.raises(ValueError, match="tpr must be"):
        fpr_at_tpr([0, -1], [1, 0], tpr=95)
    with pytest.raises(ValueError, match="metric must be one of"):
        make_ood_scorer("fpr95")
    with pytest.raises(ValueError, match="greater_is_better"):
        make_ood_scorer(lambda y, s: 0.0)
    with pytest.raises(TypeError, match="name or a callable"):
        make_ood_scorer(3)


# ---------------------------------------------------------------------- scorers
class _FixedScores:
    """A stand-in estimator whose score_samples returns its input's first column."""

    def score_samples(self, X):
        return np.asarray(X)[:, 0]


def test_fpr95_scorer_is_negative_fpr95(rng):
    y, score = _labels_and_scores(rng, 60, 40)
    X = score[:, None]
    assert fpr95_scorer(_FixedScores(), X, y) == -fpr_at_tpr(y, score)
    assert make_ood_scorer("auroc")(_FixedScores(), X, y) == ood_auroc(y, score)
    assert make_ood_scorer("aupr", positive="ood")(_FixedScores(), X, y) == ood_aupr(
        y, score, positive="ood"
    )
    custom = make_ood_scorer(lambda yt, s: float(np.mean(s)), greater_is_better=False)
    assert custom(_FixedScores(), X, y) == -np.mean(score)


def test_scorer_needs_labels(rng):
    with pytest.raises(ValueError, match="OOD scorers need y"):
        fpr95_scorer(_FixedScores(), np.zeros((3, 1)), None)


def test_fpr95_scorer_in_cross_validation(digits_split):
    """Each fold's score is -FPR95 of a detector fitted on that fold's training rows,
    computed by hand from the brute-force definition."""
    X_id, y_id, X_ood = digits_split
    X = np.vstack([X_id, X_ood])
    y = np.r_[y_id, np.full(len(X_ood), OOD_LABEL)]
    # Stratifying on y (OOD_LABEL is one more stratum) puts OOD rows in every test fold.
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(EnergyDetector(device="cpu"), X, y, scoring=fpr95_scorer, cv=cv,
                             error_score="raise")
    by_hand = []
    for train, test in cv.split(X, y):
        fold_scores = EnergyDetector(device="cpu").fit(X[train], y[train]).score_samples(
            X[test])
        by_hand.append(-fpr_brute_force(y[test] != OOD_LABEL, fold_scores, 0.95))
    np.testing.assert_allclose(scores, by_hand)
    # Digits 5-9 against an energy score on raw pixels: far from perfect, far from chance.
    assert -0.9 < scores.mean() < -0.1


def test_string_labels_mark_ood_rows_with_the_string_minus_one():
    """numpy turns ['cat', ..., -1] into strings; '-1' is then the OOD label."""
    y = np.array(["cat", "dog", "cat", -1, -1])
    assert y.dtype.kind == "U"
    score = [3.0, 2.0, 0.5, 1.0, 0.0]
    assert ood_auroc(y, score) == pytest.approx(auroc_brute_force(y != "-1", np.array(score)))
    assert fpr_at_tpr(y, score) == 0.5


@pytest.mark.parametrize("metric", [fpr_at_tpr, ood_auroc, ood_aupr])
def test_complex_scores_are_refused(metric):
    """numpy would drop the imaginary part with only a ComplexWarning."""
    with pytest.raises(ValueError, match="complex"):
        metric([0, 1, -1], np.array([1 + 2j, 0.5, 0.1]))
    with pytest.raises(ValueError, match="complex"):
        metric(np.array([0, 1, -1], dtype=complex), [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="real numbers"):
        metric([0, 1, -1], ["a", "b", "c"])


def test_complex_predictions_are_refused():
    with pytest.raises(ValueError, match="complex"):
        ood_balanced_accuracy([0, -1], np.array([1 + 0j, -1 + 0j]))


def test_scorer_without_ood_rows_says_how_to_split_and_to_raise():
    """In a search, such a fold's error would become NaN and the first candidate kept."""
    X = np.arange(6, dtype=float)[:, None]
    with pytest.raises(ValueError, match="no OOD row.*StratifiedKFold.*error_score='raise'"):
        fpr95_scorer(_FixedScores(), X, [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="no in-distribution row"):
        ood_auroc_scorer(_FixedScores(), X, np.array(["-1"] * 6))
    # String labels without '-1' have no OOD row either.
    with pytest.raises(ValueError, match="'-1' among string labels"):
        fpr95_scorer(_FixedScores(), X, np.array(["cat", "dog"] * 3))


@pytest.mark.parametrize("name", ["fpr95_scorer", "ood_auroc_scorer",
                                  "ood_balanced_accuracy_scorer", "fpr_at_threshold_scorer",
                                  "tpr_at_threshold_scorer"])
def test_each_scorer_has_its_own_help(name):
    import pydoc

    from sklearn_reclag import metrics

    scorer = getattr(metrics, name)
    assert scorer.__doc__ != type(scorer).__doc__
    text = pydoc.render_doc(scorer)
    assert scorer.__doc__.splitlines()[0] in text
    assert "greater is better" in text


def test_infinite_scores_keep_their_rank():
    """A -inf score (e.g. a log-sum-exp over an empty bank) ranks lowest, +inf highest."""
    y = [0, 0, -1, -1]
    assert ood_auroc(y, [np.inf, 1.0, 0.5, -np.inf]) == 1.0
    assert fpr_at_tpr(y, [2.0, 1.0, np.inf, -np.inf]) == 0.5
