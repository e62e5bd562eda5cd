"""AutoOODDetector and the held-out-group criterion it chooses by.

The shared contract (estimator checks, OOD_LABEL rows, persistence) is in test_common.py.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from sklearn_reclag import (
    OOD_LABEL,
    AutoOODDetector,
    EnergyDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
)
from sklearn_reclag.auto import default_candidates
from sklearn_reclag.metrics import fpr95_scorer
from sklearn_reclag.model_selection import held_out_group_split, proxy_ood_folds


@pytest.fixture(scope="module")
def classes():
    """Four Gaussian classes in 6 dimensions, 60 rows each."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 6))
    y = np.repeat(np.arange(4), 60)
    return centres[y] + rng.normal(size=(len(y), 6)), y


def _numpy_fpr95(id_scores, ood_scores):
    """The fraction of OOD rows at or above the 5 % quantile of the ID scores (the
    threshold that keeps 95 % of ID rows), by brute force over candidate thresholds."""
    candidates = np.sort(np.r_[id_scores, ood_scores])
    kept = [t for t in candidates if np.mean(id_scores >= t) >= 0.95]
    threshold = max(kept)
    return float(np.mean(ood_scores >= threshold))


# --------------------------------------------------------------- the proxy folds
def test_folds_hold_out_each_class_once_and_never_train_on_it(classes):
    _, y = classes
    folds = proxy_ood_folds(y, n_splits=4, random_state=0)
    assert sorted(np.concatenate([f.held_out for f in folds]).tolist()) == [0, 1, 2, 3]
    for fold in folds:
        assert not np.isin(y[fold.train], fold.held_out).any()
        assert not np.isin(y[fold.test], fold.held_out).any()
        assert np.isin(y[fold.ood], fold.held_out).all()
        assert np.intersect1d(fold.train, fold.test).size == 0
        # Every row of the held-out classes is a proxy OOD row.
        assert len(fold.ood) == np.isin(y, fold.held_out).sum()


def test_more_classes_than_folds_are_dealt_into_the_folds():
    y = np.repeat(np.arange(12), 5)
    folds = proxy_ood_folds(y, n_splits=5, random_state=0)
    assert len(folds) == 5
    assert sorted(np.concatenate([f.held_out for f in folds]).tolist()) == list(range(12))


def test_split_feeds_grid_search_the_folds_fpr95(classes):
    """The search's per-fold scores are the FPR95 of the held-out ID rows against the
    held-out class's rows, computed here with numpy."""
    X, y = classes
    X_search, y_search, cv = held_out_group_split(X, y, n_splits=4, random_state=0)
    assert X_search.shape == (2 * len(X), X.shape[1])
    assert (y_search[len(X):] == OOD_LABEL).all() and np.array_equal(y_search[:len(X)], y)
    search = GridSearchCV(KNNDetector(device="cpu", dtype="float64"),
                          {"n_neighbors": [1, 20]}, scoring=fpr95_scorer, cv=cv).fit(
        X_search, y_search)
    folds = proxy_ood_folds(y, n_splits=4, random_state=0)
    for k, fold in enumerate(folds):
        det = KNNDetector(20, device="cpu", dtype="float64").fit(X[fold.train], y[fold.train])
        expected = _numpy_fpr95(det.score_samples(X[fold.test]), det.score_samples(X[fold.ood]))
        got = -search.cv_results_[f"split{k}_test_score"][1]
        assert got == pytest.approx(expected)


def test_without_two_classes_the_groups_are_clusters(classes):
    X, _ = classes
    X_search, y_search, cv = held_out_group_split(X, None, n_splits=3, random_state=0)
    assert set(np.unique(y_search[:len(X)])) == {0}
    assert len(cv) == 3
    # A training fold never holds an OOD-labelled copy.
    assert all((train < len(X)).all() for train, _ in cv)


def test_split_refuses_ood_rows_in_y(classes):
    X, y = classes
    y = y.copy()
    y[0] = OOD_LABEL
    with pytest.raises(ValueError, match="OOD_LABEL"):
        held_out_group_split(X, y)


def test_string_labels_get_the_string_ood_label(classes):
    X, y = classes
    _, y_search, _ = held_out_group_split(X, np.array(list("abcd"))[y], random_state=0)
    assert y_search.dtype.kind == "U" and (y_search[len(X):] == "-1").all()


# ------------------------------------------------------------------ the choice
CANDIDATES = [KNNDetector(1, normalize=False, device="cpu", dtype="float64"),
              KNNDetector(50, normalize=False, device="cpu", dtype="float64"),
              MahalanobisDetector(device="cpu", dtype="float64")]


def test_criterion_is_the_mean_fpr95_over_the_folds(classes):
    X, y = classes
    auto = AutoOODDetector(CANDIDATES, n_splits=4, random_state=0).fit(X, y)
    folds = proxy_ood_folds(y, n_splits=4, random_state=0)
    per_fold = np.empty((len(CANDIDATES), len(folds)))
    for i, candidate in enumerate(CANDIDATES):
        for f, fold in enumerate(folds):
            det = clone(candidate).fit(X[fold.train], y[fold.train])
            per_fold[i, f] = _numpy_fpr95(det.score_samples(X[fold.test]),
                                          det.score_samples(X[fold.ood]))
        assert auto.cv_results_["mean_fpr95"][i] == pytest.approx(per_fold[i].mean())
    # The first candidate within one standard error of the best mean.
    best = per_fold.mean(axis=1).argmin()
    bound = per_fold[best].mean() + per_fold[best].std(ddof=1) / np.sqrt(len(folds))
    expected = np.flatnonzero(per_fold.mean(axis=1) <= bound + 1e-12)[0]
    assert auto.best_index_ == expected and auto.cv_results_["rank"][expected] == 1
    assert auto.criterion_ == "held-out classes"


@pytest.mark.parametrize("fpr, chosen", [
    # The second is better by more than the standard error of its folds: it is chosen.
    ([[0.10, 0.12, 0.08, 0.11, 0.09], [0.09, 0.10, 0.09, 0.10, 0.08]], 1),
    # Its folds spread more: the gap is within one standard error, the first is kept.
    ([[0.10, 0.12, 0.08, 0.11, 0.09], [0.02, 0.15, 0.05, 0.12, 0.10]], 0),
    # A candidate that failed a fold (NaN) is never within reach.
    ([[np.nan, 0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]], 1),
])
def test_one_standard_error_rule(fpr, chosen):
    """The rule by itself; rule='best' takes the lowest mean (test_benchmark.py)."""
    from sklearn_reclag.auto import _one_standard_error_choice

    fpr = np.array(fpr)
    best = int(np.nan_to_num(fpr.mean(axis=1), nan=np.inf).argmin())
    assert _one_standard_error_choice(fpr, best) == chosen


def test_behaves_as_the_chosen_detector_refitted_on_all_rows(classes):
    X, y = classes
    auto = AutoOODDetector(CANDIDATES, n_splits=4, random_state=0).fit(X, y)
    chosen = clone(CANDIDATES[auto.best_index_]).fit(X, y)
    X_new = X[::7] + 0.5
    np.testing.assert_array_equal(auto.score_samples(X_new), chosen.score_samples(X_new))
    assert auto.offset_ == chosen.offset_
    np.testing.assert_array_equal(auto.predict(X_new), chosen.predict(X_new))
    np.testing.assert_array_equal(auto.decision_function(X_new),
                                  chosen.decision_function(X_new))
    assert auto.best_params_["candidate"] == auto.cv_results_["candidate"][auto.best_index_]


def test_chooses_the_local_detector_where_classes_are_rings():
    """Each class is a thin ring around the origin (of its own radius): the held-out ring
    lies inside the convex hull of the others, which a class-mean Mahalanobis score cannot
    see and a 1-NN score can."""
    rng = np.random.default_rng(1)
    angle = rng.uniform(0, 2 * np.pi, 400)
    y = np.repeat(np.arange(4), 100)
    radius = 1.0 + y + 0.02 * rng.normal(size=400)
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    auto = AutoOODDetector(CANDIDATES, n_splits=4, random_state=0).fit(X, y)
    assert auto.best_params_["candidate"] == (
        "KNNDetector(dtype='float64', normalize=False)")


@pytest.mark.parametrize("y_kind", ["none", "one class"])
def test_without_two_classes_it_keeps_the_first_candidate_with_a_warning(classes, y_kind):
    X, _ = classes
    y = None if y_kind == "none" else np.zeros(len(X), dtype=int)
    with pytest.warns(UserWarning, match="fewer than two classes.*keeps the first"):
        auto = AutoOODDetector(CANDIDATES, random_state=0).fit(X, y)
    assert auto.criterion_.startswith("none") and auto.best_index_ == 0
    assert list(auto.cv_results_["rank"]) == [1, 2, 3]
    np.testing.assert_array_equal(auto.score_samples(X), clone(CANDIDATES[0]).fit(
        X, y).score_samples(X))


@pytest.mark.parametrize("y_kind", ["none", "one class"])
def test_proxy_groups_chooses_on_clusters_without_classes(classes, y_kind):
    X, _ = classes
    y = None if y_kind == "none" else np.zeros(len(X), dtype=int)
    auto = AutoOODDetector(CANDIDATES, proxy="groups", random_state=0).fit(X, y)
    assert auto.criterion_ == "held-out clusters"
    assert np.isfinite(auto.cv_results_["mean_fpr95"]).all()


def test_the_given_head_loses_the_held_out_classes_in_the_folds(classes):
    X, y = classes
    head = LogisticRegression(max_iter=1000).fit(X, y)
    auto = AutoOODDetector([EnergyDetector(device="cpu")], head=head, n_splits=4,
                           random_state=0)
    auto.fit(X, y)
    fold = proxy_ood_folds(y, n_splits=4, random_state=0)[0]
    coef, intercept = auto._fold_head(fold, y, "classes")
    keep = ~np.isin(head.classes_, fold.held_out)
    np.testing.assert_array_equal(coef, head.coef_[keep])
    np.testing.assert_array_equal(intercept, head.intercept_[keep])
    # The final fit keeps the whole head.
    np.testing.assert_array_equal(auto.best_estimator_.head_coef_, head.coef_)


def test_default_candidates_span_the_families():
    labelled = {type(c).__name__ for c in default_candidates(labelled=True)}
    unlabelled = {type(c).__name__ for c in default_candidates(labelled=False)}
    head_only = {type(c).__name__ for c in default_candidates(labelled=True, classes=False)}
    assert {"HopfieldEnergyDetector", "RecLagDetector", "KNNDetector", "LOFDetector",
            "MahalanobisDetector"} <= unlabelled
    assert labelled - unlabelled == {
        "EnergyDetector", "MSPDetector", "ViMDetector", "SCALEDetector", "ASHDetector",
        "GENDetector", "FDBDDetector", "NCIDetector", "NNGuideDetector", "RMDSDetector"}
    assert labelled - head_only == {"RMDSDetector"}  # it needs the labels themselves
    assert "HopfieldBoostingDetector" not in labelled  # it needs auxiliary outliers


# ------------------------------------------------------------------ bad input
class _Exploding(BaseEstimator):
    """A detector whose fit must never be reached."""

    def fit(self, X, y=None):
        raise AssertionError("fitted before the candidates were checked")

    def score_samples(self, X):
        return np.zeros(len(X))


def test_an_entry_that_is_not_a_detector_is_refused_before_any_fit(classes):
    X, y = classes
    with pytest.raises(TypeError, match=r"candidates\[1\] is 'knn'"):
        AutoOODDetector([_Exploding(), "knn"]).fit(X, y)


def test_a_candidate_that_needs_labels_is_refused_without_them(classes):
    X, _ = classes
    with pytest.raises(ValueError, match=r"candidates\[1\] \(MSPDetector\(\)\) needs class"):
        AutoOODDetector([_Exploding(), MSPDetector()]).fit(X)


def test_an_empty_list_is_refused(classes):
    X, y = classes
    with pytest.raises(ValueError, match="empty"):
        AutoOODDetector([]).fit(X, y)


def test_a_candidate_that_cannot_fit_a_fold_is_ranked_last_with_a_warning(classes):
    """Two classes: a fold keeps one, on which no softmax head can be fitted."""
    X, y = classes
    two = y < 2
    with pytest.warns(UserWarning, match="could not be fitted.*MSPDetector"):
        auto = AutoOODDetector([MSPDetector(device="cpu"), KNNDetector(5, device="cpu")],
                               random_state=0).fit(X[two], y[two])
    assert auto.cv_results_["rank"][0] == 2 and np.isnan(auto.cv_results_["mean_fpr95"][0])
    assert isinstance(auto.best_estimator_, KNNDetector)


def test_ties_are_reported(classes):
    """Two copies of one detector tie on every criterion."""
    X, y = classes
    same = [HopfieldEnergyDetector(device="cpu"), HopfieldEnergyDetector(device="cpu")]
    with pytest.warns(UserWarning, match="tie on the proxy OOD tasks"):
        AutoOODDetector(same, n_splits=4, random_state=0).fit(X, y)


def test_too_few_rows_are_refused():
    with pytest.raises(ValueError, match="n_samples=3"):
        AutoOODDetector(CANDIDATES).fit(np.zeros((3, 2)))


def test_max_samples_bounds_the_rows_of_the_proxy_tasks(classes, monkeypatch):
    X, y = classes
    seen = []
    real = AutoOODDetector._score_candidates

    def spy(self, candidates, X_proxy, y_proxy):
        seen.append(len(X_proxy))
        return real(self, candidates, X_proxy, y_proxy)

    monkeypatch.setattr(AutoOODDetector, "_score_candidates", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few rows per class for KNN k=50
        auto = AutoOODDetector(CANDIDATES, max_samples=100, random_state=0).fit(X, y)
    assert seen == [100]
    assert auto.best_estimator_.n_features_in_ == X.shape[1]


def test_the_shuffled_proxy_takes_the_worse_of_the_two_per_fold(classes):
    X, y = classes
    auto = AutoOODDetector(CANDIDATES, proxy="groups+shuffled", n_splits=4,
                           random_state=0).fit(X, y)
    results = auto.cv_results_
    assert "feature-shuffled" in auto.criterion_
    # The mean of per-fold maxima is at least each mean.
    assert np.all(results["mean_fpr95"] >= results["mean_fpr95_groups"] - 1e-12)
    assert np.all(results["mean_fpr95"] >= results["mean_fpr95_shuffled"] - 1e-12)
    plain = AutoOODDetector(CANDIDATES, n_splits=4, random_state=0).fit(X, y)
    np.testing.assert_allclose(results["mean_fpr95_groups"], plain.cv_results_["mean_fpr95"])


def test_separation_margin_ranks_what_fpr95_and_auroc_cannot():
    """Both separate completely (FPR95 0, AUROC 1); the farther OOD has the wider margin,
    whatever the scale of the scores."""
    from sklearn_reclag.auto import separation_margin

    rng = np.random.default_rng(0)
    id_scores = rng.uniform(0, 1, 500)
    near, far = rng.uniform(-1.5, -1, 300), rng.uniform(-6, -5, 300)
    assert separation_margin(id_scores, far) > separation_margin(id_scores, near) > 0
    # (0.05 - 0.95 q of OOD) / 0.9 for uniform ID on [0, 1], by hand.
    assert separation_margin(np.linspace(0, 1, 10001), np.full(10, -0.85)) == pytest.approx(
        1.0)
    assert separation_margin(10 * id_scores + 3, 10 * far + 3) == pytest.approx(
        separation_margin(id_scores, far))
    assert separation_margin(np.ones(5), np.zeros(5)) == 0.0


def test_rule_best_takes_the_lowest_mean(classes):
    X, y = classes
    auto = AutoOODDetector(CANDIDATES, rule="best", n_splits=4, random_state=0).fit(X, y)
    means = auto.cv_results_["mean_fpr95"]
    assert means[auto.best_index_] == means.min()
