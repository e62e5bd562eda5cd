"""HeldOutThreshold: the threshold read from in-distribution rows the detector never saw."""

import warnings

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_reclag import HopfieldEnergyDetector, KNNDetector, MahalanobisDetector
from sklearn_reclag.calibration import HeldOutThreshold

from _expected_checks import HELD_OUT_THRESHOLD_META_CHECKS


@parametrize_with_checks(
    [HeldOutThreshold(MahalanobisDetector(device="cpu"), random_state=0),
     HeldOutThreshold(KNNDetector(1, device="cpu"), random_state=0)],
    expected_failed_checks=lambda est: HELD_OUT_THRESHOLD_META_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_frozen_detector_threshold_is_the_held_out_quantile():
    """A frozen detector is not refitted: its scores are the detector's, and offset_ is
    the contamination quantile of the held-out rows' scores (numpy reference)."""
    rng = np.random.default_rng(0)
    X_train, X_held_out = rng.normal(size=(150, 4)), rng.normal(size=(400, 4))
    detector = MahalanobisDetector(device="cpu").fit(X_train)
    fitted_offset = detector.offset_
    model = HeldOutThreshold(FrozenEstimator(detector), contamination=0.05).fit(X_held_out)
    assert model.estimator_.estimator is detector and detector.offset_ == fitted_offset
    scores = detector.score_samples(X_held_out)
    np.testing.assert_array_equal(model.score_samples(X_held_out), scores)
    assert model.offset_ == pytest.approx(np.percentile(scores, 5.0))
    assert np.mean(model.predict(X_held_out) == 1) == pytest.approx(0.95)
    np.testing.assert_allclose(model.decision_function(X_held_out), scores - model.offset_)


def test_optimistic_features_get_a_threshold_that_holds_on_new_rows():
    """Features that are tighter on the training rows than on new rows (a network's
    features of the images it was trained on) fool any threshold read from the training
    rows; one read from held-out rows accepts 1 - contamination of new rows."""
    rng = np.random.default_rng(1)
    center = np.zeros(5)
    X_train = center + 0.5 * rng.normal(size=(300, 5))       # "memorised": tight
    X_held_out = center + rng.normal(size=(300, 5))           # new rows: wider
    X_new = center + rng.normal(size=(3000, 5))
    detector = HopfieldEnergyDetector(device="cpu").fit(X_train)
    own = np.mean(detector.predict(X_new) == 1)
    held = HeldOutThreshold(FrozenEstimator(detector), contamination=0.05).fit(X_held_out)
    accepted = np.mean(held.predict(X_new) == 1)
    assert own < 0.5
    assert abs(accepted - 0.95) < 0.02


def test_unfitted_detector_is_fitted_on_the_rows_not_held_out():
    """held_out_size of the ID rows set the threshold; the rest fit a clone, stratified
    by class; OOD_LABEL rows take part in neither."""
    rng = np.random.default_rng(2)
    X = np.r_[rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + 4,
              rng.normal(size=(20, 3)) + 20]
    y = np.r_[np.zeros(100, int), np.ones(100, int), np.full(20, -1)]
    detector = HopfieldEnergyDetector(device="cpu")
    model = HeldOutThreshold(detector, held_out_size=0.25, random_state=0).fit(X, y)
    assert not hasattr(detector, "offset_")
    fitted = model.estimator_
    stored = fitted.memories_[fitted.memory_mask_]
    assert stored.shape[0] == 150
    assert np.all(np.abs(stored).max(axis=1) < 15)  # no OOD row stored
    fitted_rows = {tuple(row) for row in stored.astype(np.float32)}
    held_out = np.array([row for row in X[:200]
                         if tuple(row.astype(np.float32)) not in fitted_rows])
    assert held_out.shape[0] == 50
    np.testing.assert_allclose(
        model.offset_, np.percentile(model.estimator_.score_samples(held_out), 5.0))
    # Stratified: 25 held-out rows of each class.
    assert np.sum(held_out[:, 0] > 2) == pytest.approx(25, abs=1)


def test_works_in_a_pipeline_and_is_deterministic():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 4))
    pipe = make_pipeline(StandardScaler(), MahalanobisDetector(device="cpu"))
    a = HeldOutThreshold(pipe, random_state=7).fit(X)
    b = HeldOutThreshold(pipe, random_state=7).fit(X)
    assert a.offset_ == b.offset_
    assert a.n_features_in_ == 4


@pytest.mark.parametrize("params, message", [
    ({"contamination": 0.7}, "contamination"),
    ({"held_out_size": 1.0}, "held_out_size"),
])
def test_bad_parameters_are_refused(params, message):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match=message):
        HeldOutThreshold(MahalanobisDetector(device="cpu"), **params).fit(X)


def test_too_few_rows_to_split_is_a_clear_error():
    X = np.random.default_rng(0).normal(size=(1, 2))
    with pytest.raises(ValueError, match="no row to fit on or none to hold out"):
        HeldOutThreshold(MahalanobisDetector(device="cpu"), held_out_size=0.5).fit(X)


def test_non_finite_held_out_scores_are_refused():
    X = np.random.default_rng(0).normal(size=(40, 2))
    detector = MahalanobisDetector(device="cpu").fit(X)
    with pytest.raises(ValueError, match="not finite|NaN|infinity"):
        HeldOutThreshold(FrozenEstimator(detector)).fit(np.r_[X, [[np.nan, 0.0]]])


def _frame(X, columns):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(X, columns=columns)


def test_feature_names_are_checked_as_scikit_learn_checks_them():
    """Renamed or reordered columns raise; an array after a DataFrame fit warns (issue 23,
    item 15: both were scored silently)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = HeldOutThreshold(MahalanobisDetector(device="cpu"), random_state=0)
    model.fit(_frame(X, ["a", "b", "c"]))
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="feature names"):
        model.score_samples(_frame(X, ["a", "b", "d"]))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(_frame(X[:, [1, 0, 2]], ["b", "a", "c"]))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        model.score_samples(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same columns: no warning from any level
        scores = model.score_samples(_frame(X, ["a", "b", "c"]))
    np.testing.assert_array_equal(scores, model.estimator_.score_samples(X))


def test_labels_holding_none_are_a_clear_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.array([0, 1] * 9 + [None, 1], dtype=object)
    with pytest.raises(ValueError, match="Unknown label type"):
        HeldOutThreshold(MahalanobisDetector(device="cpu")).fit(X, y)


@pytest.mark.parametrize("frozen", [False, True])
def test_a_threshold_from_too_few_held_out_rows_warns(frozen):
    """held_out_size=0.005 of 200 rows holds out one row, and new rows were accepted at
    22 % (95 % asked) without a word. 30 rows at contamination=0.05 keep the standard
    error of the acceptance within 4 points; 0.2 needs 100."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    if frozen:
        model = HeldOutThreshold(FrozenEstimator(MahalanobisDetector(device="cpu").fit(X)))
        small, large = X[:5], X[:40]
    else:
        model = HeldOutThreshold(MahalanobisDetector(device="cpu"), held_out_size=0.005,
                                 random_state=0)
        small, large = X, None
    with pytest.warns(UserWarning, match="standard error"):
        model.fit(small)
    if large is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.fit(large)
    with pytest.warns(UserWarning, match="At least 100 held-out rows"):
        model.set_params(contamination=0.2).fit(X[:40] if frozen else X)
