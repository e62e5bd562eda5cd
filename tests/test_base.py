"""The base class's guards, on every detector: values too large for the dtype, non-finite
fitted state, and a threshold that ties cannot push onto every training row."""

import warnings

import numpy as np
import pytest
import torch

from sklearn_reclag import (
    EnergyDetector,
    HopfieldEnergyDetector,
    MSPDetector,
    ReActDetector,
    RecLagDetector,
)
from sklearn_reclag._backend import safe_max_abs

DETECTORS = {
    "MSP": lambda **kw: MSPDetector(**kw),
    "Energy": lambda **kw: EnergyDetector(**kw),
    "ReAct": lambda **kw: ReActDetector(**kw),
    "HE": lambda **kw: HopfieldEnergyDetector(**kw),
    "SHE": lambda **kw: HopfieldEnergyDetector(patterns="mean", **kw),
    "HE density": lambda **kw: HopfieldEnergyDetector(energy="density", **kw),
    "RecLag em": lambda **kw: RecLagDetector(solver="em", n_memories=3, random_state=0, **kw),
    "RecLag sae": lambda **kw: RecLagDetector(solver="sae", n_memories=3, max_epochs=2,
                                              learning_batch_size=10, random_state=0, **kw),
}

TIE_CASES = list(DETECTORS)


@pytest.fixture(scope="module")
def blobs():
    """Two classes of 4-D blobs, 60 rows each."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)) + np.repeat([[3.0, 0, 0, 0], [0, 3.0, 0, 0]], 60, axis=0)
    return X, np.repeat([0, 1], 60)


# ------------------------------------------------------------ values beyond the dtype
@pytest.mark.parametrize("name", DETECTORS)
def test_huge_features_are_refused_in_float32_naming_float64(name, blobs):
    """1e30 is finite, but products of such rows overflow float32: fit said nothing and
    ended with a NaN offset_ and NaN scores, and predict rejected every row."""
    X, y = blobs
    huge = X * 1e30
    with pytest.raises(ValueError, match="dtype='float64'"):
        DETECTORS[name](device="cpu").fit(huge, y)
    fitted = DETECTORS[name](device="cpu").fit(X, y)
    for method in ("score_samples", "decision_function", "predict"):
        with pytest.raises(ValueError, match="values up to 5.*e\\+30.*dtype='float64'"):
            getattr(fitted, method)(huge)


@pytest.mark.parametrize("name", DETECTORS)
def test_float64_computes_the_same_huge_features(name, blobs):
    X, y = blobs
    with warnings.catch_warnings():
        # sklearn's LogisticRegression head does not converge on such features.
        warnings.simplefilter("ignore")
        det = DETECTORS[name](device="cpu", dtype="float64").fit(X * 1e30, y)
        scores = det.score_samples(X * 1e30)
    assert np.isfinite(det.offset_) and np.isfinite(scores).all()
    assert (det.predict(X * 1e30) == 1).mean() >= 0.9


def test_the_safe_bound_is_just_inside_the_dtype(blobs):
    """Right below the bound fits and scores finite values; right above is refused."""
    X, y = blobs
    bound = safe_max_abs(torch.float32, X.shape[1])
    scaled = X / np.abs(X).max() * bound * 0.99
    det = HopfieldEnergyDetector(beta=1.0, energy="full", device="cpu").fit(scaled, y)
    assert np.isfinite(det.score_samples(scaled)).all()
    with pytest.raises(ValueError, match="computes safely only up to"):
        det.score_samples(scaled * 1.02)


# RecLag's own _fit_offset takes np.percentile of the infinite scores first.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("name", ["HE", "RecLag em"])
def test_a_fit_that_overflows_is_an_error_not_a_nan_model(name, blobs):
    """beta=1e38 makes beta * xi.v infinite in float32: fit refuses to end with it."""
    X, y = blobs
    with pytest.raises(ValueError, match="non-finite .*dtype='float32'.*float64"):
        DETECTORS[name](device="cpu", beta=1e38).fit(X, y)


# --------------------------------------------------------------- ties at the threshold
def _fitted_with_warning(detector, X, y):
    with pytest.warns(UserWarning, match="training scores"):
        return detector.fit(X, y)


# Constant rows are all predicted one class: the other's bank stores all its rows.
@pytest.mark.filterwarnings("ignore:The head classifies no training row:UserWarning")
@pytest.mark.parametrize("name", TIE_CASES)
def test_constant_features_do_not_make_predict_reject_every_training_row(name, blobs):
    """Every score ties: the quantile is that score, and 'score > offset_' rejected 100 %
    of the rows. The threshold now sits below the tied group, and fit warns."""
    _, y = blobs
    X = np.ones((len(y), 4))
    # RecLag's default metric='mahalanobis' has no distance on constant features
    # (test_constant_features_have_no_mahalanobis_distance); the ties are the euclidean's.
    params = {"metric": "euclidean"} if name.startswith("RecLag") else {}
    det = _fitted_with_warning(DETECTORS[name](device="cpu", **params), X, y)
    assert (det.predict(X) == 1).all()
    assert (det.decision_function(X) > 0).all()


def test_constant_features_have_no_mahalanobis_distance(blobs):
    """A zero within-class covariance is a clear error, not a NaN whitening."""
    _, y = blobs
    with pytest.raises(ValueError, match="within-class covariance of the training rows is "
                                         "zero"):
        RecLagDetector(solver="em", metric="mahalanobis", device="cpu").fit(
            np.ones((len(y), 4)), y)


def test_tiny_beta_ties_every_float32_score_and_predict_accepts_them(blobs):
    """(1/beta) lse(beta X v) with beta=1e-9 is log(N)/beta up to float32 rounding."""
    X, y = blobs
    det = _fitted_with_warning(HopfieldEnergyDetector(beta=1e-9, device="cpu"), X, y)
    rejected = (det.predict(X) == -1).mean()
    assert rejected <= det.contamination + 1 / len(X)


def test_react_percentile_zero_clips_everything_to_one_score(blobs):
    X, y = blobs
    det = _fitted_with_warning(ReActDetector(percentile=0, device="cpu"), X, y)
    assert np.ptp(det.score_samples(X)) == 0
    assert (det.predict(X) == 1).all()


def test_distinct_scores_reject_the_contamination_fraction_without_warning(blobs):
    X, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = EnergyDetector(contamination=0.1, device="cpu").fit(X, y)
    assert (det.predict(X) == -1).sum() == 12


class _FixedScores(EnergyDetector):
    """An Energy detector whose training scores are given (the first feature)."""

    def _score_batch(self, V, state):
        return V[:, 0]


@pytest.mark.parametrize(
    "scores, contamination, n_rejected, offset",
    [
        # (n - 1) * c = 1 exactly: the quantile is the second score itself, which
        # 'score > offset_' used to reject with the first. Halfway down to the first.
        (np.arange(21.0), 0.05, 1, 0.5),
        # Ten rows tie at the lowest score: none of them can be told apart, so the
        # threshold goes just below them.
        (np.r_[np.zeros(10), np.arange(1.0, 91.0)], 0.05, 0, None),
        # Ties above the quantile do not matter: numpy's interpolated quantile.
        (np.r_[np.arange(10.0), np.full(90, 50.0)], 0.05, 5, 4.95),
        # The quantile falls inside a tied group that does not start at the bottom: the
        # threshold goes halfway down to the next lower score.
        (np.r_[np.arange(3.0), np.full(20, 7.0), np.arange(8.0, 85.0)], 0.1, 3, 4.5),
    ],
)
def test_offset_is_off_every_training_score(scores, contamination, n_rejected, offset):
    # Tied scores on distinct rows (copies of a row would count once, thresholds.rst).
    X = np.c_[scores, np.arange(len(scores))]
    y = np.arange(len(scores)) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det = _FixedScores(contamination=contamination, device="cpu",
                           dtype="float64").fit(X, y)
    assert not np.isin(det.offset_, scores)
    assert (det.predict(X) == -1).sum() == n_rejected
    if offset is None:
        assert scores.min() - 1e-12 < det.offset_ < scores.min()
    else:
        assert det.offset_ == pytest.approx(offset)


def test_a_class_with_one_row_is_named_as_the_user_wrote_it():
    """The message read "Class np.int64(7) has 1 sample"."""
    X = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(ValueError, match=r"^Class 7 has 1 sample"):
        HopfieldEnergyDetector(device="cpu").fit(X, [0, 0, 7])
    with pytest.raises(ValueError, match=r"^Class 'owl' has 1 sample"):
        HopfieldEnergyDetector(device="cpu").fit(X, ["cat", "cat", "owl"])


def test_offset_between_adjacent_scores_is_the_lower_one():
    """No float lies between two adjacent floats: the midpoint would round onto the tied
    score and reject its rows."""
    low = np.nextafter(1.0, 2.0)  # odd last bit: the midpoint rounds up, onto high
    high = np.nextafter(low, 2.0)
    scores = np.r_[np.full(3, low), np.full(60, high)]
    X = np.c_[scores, np.arange(len(scores))]  # distinct rows, tied scores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det = _FixedScores(contamination=0.05, device="cpu", dtype="float64").fit(
            X, np.arange(len(scores)) % 2)
    assert det.offset_ == low
    assert (det.predict(X) == -1).sum() == 3
