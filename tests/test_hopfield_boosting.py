"""HopfieldBoostingDetector: the score against a numpy reference written from the official
code, the leave-one-out threshold, the outliers (required, validated, routed through a
Pipeline and a GridSearchCV by metadata routing) and bad input (the contract shared by
every estimator is in test_common.py)."""

import numpy as np
import pytest
import sklearn
from scipy.special import logsumexp
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer

from sklearn_reclag import OOD_LABEL, HopfieldBoostingDetector
from sklearn_reclag.base import quantile_off_ties
from sklearn_reclag.detectors import hopfield_boosting
from sklearn_reclag.metrics import fpr95_scorer


def _data(rng, n=90, n_outliers=37, d=10):
    """ID rows around a direction, outliers around another, and test rows of both."""
    centre = rng.normal(size=d)
    X = centre + 0.6 * rng.normal(size=(n, d))
    outliers = -centre + 0.6 * rng.normal(size=(n_outliers, d))
    X_test = np.vstack([centre + 0.6 * rng.normal(size=(20, d)),
                        rng.normal(size=(20, d)), X[:3]])
    return X, outliers, X_test


# ---------------------------------------------------------------- reference formula
def hopfield_boosting_reference(X_test, X_id, outliers, beta, mask_own=False):
    """The official OneSidedEnergy negated (hopfield_boosting/energy.py, util.py), in
    numpy: rows L2-normalised, attention to the concatenated memories, a log-mean-exp
    over each. ``mask_own``: X_test is X_id and each row's own entry is left out of the
    ID memory (its mean over the N - 1 others)."""
    def normalize(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def logmeanexp(beta, tensor):
        n = np.sum(np.isfinite(tensor), axis=-1)
        return logsumexp(beta * tensor, axis=-1) / beta - np.log(n) / beta

    a, b, x = normalize(X_id), normalize(outliers), normalize(X_test)
    attn = x @ np.concatenate([a, b]).T
    if mask_own:
        attn[np.arange(len(a)), np.arange(len(a))] = -np.inf
    a_energy = -logmeanexp(beta, attn[:, :len(a)])
    b_energy = -logmeanexp(beta, attn[:, len(a):])
    return -(a_energy - b_energy)


@pytest.mark.parametrize("beta", [0.5, 4.0, 50.0])
@pytest.mark.parametrize("dtype, atol", [("float64", 1e-12), ("float32", 1e-5)])
def test_scores_equal_the_official_formula(rng, monkeypatch, beta, dtype, atol):
    X, outliers, X_test = _data(rng)
    # Blocks of 8 x 7 logits: the log-sum-exps are merged across chunks of the memories
    # and of the queries.
    monkeypatch.setattr(hopfield_boosting, "_SCORE_BLOCK", 8 * 7)
    det = HopfieldBoostingDetector(beta, device="cpu", dtype=dtype, batch_size=8)
    det.fit(X, outliers=outliers)
    np.testing.assert_allclose(det.score_samples(X_test),
                               hopfield_boosting_reference(X_test, X, outliers, beta),
                               atol=atol)


def test_memories_are_unit_rows_and_zero_rows_stay_zero(rng):
    X, outliers, _ = _data(rng)
    X[4] = 0
    det = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(X, outliers=outliers)
    np.testing.assert_array_equal(det.id_patterns_[4], 0)
    norms = np.linalg.norm(np.delete(det.id_patterns_, 4, axis=0), axis=1)
    np.testing.assert_allclose(norms, 1, rtol=1e-12)
    assert det.outlier_patterns_.shape == outliers.shape
    np.testing.assert_allclose(np.linalg.norm(det.outlier_patterns_, axis=1), 1, rtol=1e-12)


def test_rows_near_the_outliers_score_lower(rng):
    """The outlier memory is what this detector adds to a Hopfield energy of the ID rows:
    of two rows equally far from the ID rows, the one near the outliers scores lower."""
    X, outliers, _ = _data(rng)
    det = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(X, outliers=outliers)
    id_unit = X.mean(axis=0) / np.linalg.norm(X.mean(axis=0))
    out_unit = outliers.mean(axis=0) - id_unit @ outliers.mean(axis=0) * id_unit
    out_unit /= np.linalg.norm(out_unit)
    # Two unit rows at the same angle from the ID mean, towards or away from the outliers.
    near, far = id_unit + 0.8 * out_unit, id_unit - 0.8 * out_unit
    scores = det.score_samples(np.vstack([near, far]))
    assert scores[0] < scores[1]


# ------------------------------------------------------------------------ threshold
def test_threshold_is_the_quantile_of_leave_one_out_scores(rng):
    X, outliers, _ = _data(rng)
    det = HopfieldBoostingDetector(8.0, device="cpu", dtype="float64")
    det.fit(X, outliers=outliers)
    held_out = hopfield_boosting_reference(X, X, outliers, 8.0, mask_own=True)
    assert det.offset_ == pytest.approx(quantile_off_ties(held_out, 0.05, "float64"),
                                        rel=1e-10)
    # Below the quantile of the rows' own scores, where each row meets its own copy.
    assert det.offset_ < quantile_off_ties(det.score_samples(X), 0.05, "float64")


def test_duplicated_rows_give_the_threshold_of_the_distinct_rows(rng):
    """Every row twice, in another order: each row is scored without both copies (the
    mean over the other rows is that of the distinct rows) and one row per pair sets the
    threshold, which is then that of the distinct rows."""
    X, outliers, X_test = _data(rng)
    plain = HopfieldBoostingDetector(8.0, device="cpu", dtype="float64")
    plain.fit(X, outliers=outliers)
    twice = np.r_[X, X][rng.permutation(2 * len(X))]
    doubled = HopfieldBoostingDetector(8.0, device="cpu", dtype="float64")
    doubled.fit(twice, outliers=outliers)
    assert doubled.offset_ == pytest.approx(plain.offset_, rel=1e-10)
    np.testing.assert_allclose(doubled.score_samples(X_test), plain.score_samples(X_test),
                               rtol=1e-10)


def test_rows_in_another_order_give_the_same_threshold(rng):
    X, outliers, _ = _data(rng, n=1500)  # more rows than the threshold reads
    det = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(X, outliers=outliers)
    permuted = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(
        X[rng.permutation(len(X))], outliers=outliers)
    assert permuted.offset_ == pytest.approx(det.offset_, rel=1e-12)


def test_new_rows_are_accepted_at_one_minus_contamination(rng):
    X, outliers, _ = _data(rng, n=4000)
    det = HopfieldBoostingDetector(16.0, device="cpu").fit(X[:2000], outliers=outliers)
    accepted = float(np.mean(det.predict(X[2000:]) == 1))
    assert abs(accepted - 0.95) < 0.02


# --------------------------------------------------------------------- the outliers
def test_fit_without_outliers_is_a_clear_error(rng):
    X, _, _ = _data(rng)
    with pytest.raises(ValueError, match="requires outliers.*set_fit_request"):
        HopfieldBoostingDetector(device="cpu").fit(X)
    with pytest.raises(ValueError, match="requires outliers"):
        HopfieldBoostingDetector(device="cpu").fit_predict(X)


def test_outliers_of_another_width_are_a_clear_error(rng):
    X, outliers, _ = _data(rng)
    with pytest.raises(ValueError, match="outliers has 5 features, but X has 10"):
        HopfieldBoostingDetector(device="cpu").fit(X, outliers=outliers[:, :5])


@pytest.mark.parametrize("bad, match", [
    (np.full((3, 10), np.nan), "outliers contains NaN"),
    (np.ones(10), "Expected 2D array"),
    (np.empty((0, 10)), "0 sample"),
])
def test_bad_outliers_are_refused(rng, bad, match):
    X, _, _ = _data(rng)
    with pytest.raises(ValueError, match=match):
        HopfieldBoostingDetector(device="cpu").fit(X, outliers=bad)


def test_the_scale_of_the_outliers_does_not_matter(rng):
    """They are normalised in float64 before they take dtype: outliers beyond float32's
    range give the scores of the same rows at their own scale, in float32 too."""
    X, outliers, X_test = _data(rng)
    det = HopfieldBoostingDetector(device="cpu")
    scores = det.fit(X, outliers=outliers).score_samples(X_test)
    np.testing.assert_array_equal(det.fit(X, outliers=outliers * 1e39).score_samples(X_test),
                                  scores)


def test_any_number_of_outliers(rng):
    X, outliers, X_test = _data(rng)
    for n in (1, 37, 500):
        rows = outliers[np.arange(n) % len(outliers)]
        det = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(X, outliers=rows)
        np.testing.assert_allclose(det.score_samples(X_test),
                                   hopfield_boosting_reference(X_test, X, rows, 4.0),
                                   atol=1e-12)


def test_outliers_and_x_are_not_modified(rng):
    X, outliers, X_test = _data(rng)
    X, outliers = X.astype(np.float32), outliers.astype(np.float32)
    copies = X.copy(), outliers.copy()
    det = HopfieldBoostingDetector(device="cpu").fit(X, outliers=outliers)
    det.score_samples(X_test)
    np.testing.assert_array_equal(X, copies[0])
    np.testing.assert_array_equal(outliers, copies[1])
    assert not np.shares_memory(det.outlier_patterns_, outliers)


def test_ood_label_rows_are_left_out_not_taken_as_outliers(rng):
    X, outliers, X_test = _data(rng)
    extra = rng.normal(size=(15, X.shape[1]))
    mixed = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(
        np.vstack([X, extra]), np.r_[np.zeros(len(X)), np.full(15, OOD_LABEL)],
        outliers=outliers)
    plain = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(X, outliers=outliers)
    np.testing.assert_array_equal(mixed.score_samples(X_test), plain.score_samples(X_test))
    assert mixed.offset_ == plain.offset_
    assert len(mixed.outlier_patterns_) == len(outliers)


def test_fit_predict_takes_the_outliers(rng):
    X, outliers, _ = _data(rng)
    det = HopfieldBoostingDetector(device="cpu")
    np.testing.assert_array_equal(det.fit_predict(X, outliers=outliers), det.predict(X))


# ---------------------------------------------------------- metadata routing
def test_pipeline_routes_outliers_with_and_without_metadata_routing(rng):
    """A Normalizer before the detector changes nothing it sees (it normalises the rows
    itself), so the pipeline must score as the bare detector fitted on the same
    outliers: proof that they arrived. Outliers reach the last step as given, not
    through the steps before it."""
    X, outliers, X_test = _data(rng)
    expected = HopfieldBoostingDetector(device="cpu", dtype="float64").fit(
        X, outliers=outliers).score_samples(X_test)
    # Without routing: scikit-learn's step__param fit parameters.
    pipe = make_pipeline(Normalizer(), HopfieldBoostingDetector(device="cpu", dtype="float64"))
    pipe.fit(X, hopfieldboostingdetector__outliers=outliers)
    np.testing.assert_allclose(pipe.score_samples(X_test), expected, atol=1e-12)
    with sklearn.config_context(enable_metadata_routing=True):
        det = HopfieldBoostingDetector(device="cpu", dtype="float64")
        pipe = Pipeline([("norm", Normalizer()), ("det", det.set_fit_request(outliers=True))])
        pipe.fit(X, outliers=outliers)
        np.testing.assert_allclose(pipe.score_samples(X_test), expected, atol=1e-12)
        # Not requested: scikit-learn refuses to drop the metadata silently.
        unrequested = make_pipeline(Normalizer(), HopfieldBoostingDetector(device="cpu"))
        with pytest.raises(ValueError, match="outliers"):
            unrequested.fit(X, outliers=outliers)


def test_grid_search_routes_outliers_to_every_fold(rng):
    X, outliers, _ = _data(rng)
    X_ood = rng.normal(size=(30, X.shape[1]))
    X_all = np.vstack([X, X_ood])
    y_all = np.r_[np.zeros(len(X), dtype=int), np.full(len(X_ood), OOD_LABEL)]
    seen = []

    class Recording(HopfieldBoostingDetector):
        def fit(self, X, y=None, *, outliers=None):
            seen.append(len(outliers))
            return super().fit(X, y, outliers=outliers)

    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(Normalizer(), Recording(device="cpu").set_fit_request(
            outliers=True))
        search = GridSearchCV(
            pipe, {"recording__beta": HopfieldBoostingDetector.search_space["beta"]},
            scoring=fpr95_scorer, cv=KFold(3, shuffle=True, random_state=0),
        ).fit(X_all, y_all, outliers=outliers)
    # Every beta on 3 folds, and the refit, each with all 37 outlier rows.
    n_fits = 3 * len(HopfieldBoostingDetector.search_space["beta"]) + 1
    assert seen == [len(outliers)] * n_fits
    assert len(search.best_estimator_[-1].outlier_patterns_) == len(outliers)
    assert search.best_params_["recording__beta"] in HopfieldBoostingDetector.search_space[
        "beta"]
    # As many outlier rows as X: scikit-learn splits them with X (documented).
    seen.clear()
    with sklearn.config_context(enable_metadata_routing=True):
        GridSearchCV(pipe, {"recording__beta": [4.0]}, scoring=fpr95_scorer,
                     cv=KFold(3, shuffle=True, random_state=0)).fit(
            X_all, y_all, outliers=rng.normal(size=X_all.shape))
    assert seen == [2 * len(X_all) // 3] * 3 + [len(X_all)]


def test_beta_must_be_positive(rng):
    X, outliers, _ = _data(rng)
    with pytest.raises(ValueError, match="beta"):
        HopfieldBoostingDetector(0.0, device="cpu").fit(X, outliers=outliers)


def test_one_row_is_refused(rng):
    X, outliers, _ = _data(rng)
    with pytest.raises(ValueError, match="n_samples = 1"):
        HopfieldBoostingDetector(device="cpu").fit(X[:1], outliers=outliers)


def test_rows_of_one_direction_score_their_own_score(rng):
    """One feature: every positive row normalises to 1, a copy of every other; with no
    row to leave it out against, a training row scores as a new row in its direction,
    and the threshold is finite."""
    X = rng.uniform(1, 2, size=(30, 1))
    det = HopfieldBoostingDetector(device="cpu", dtype="float64")
    det.fit(X, outliers=-X[:5])
    assert np.isfinite(det.offset_)
    assert det.offset_ < det.score_samples(X[:1])[0]
