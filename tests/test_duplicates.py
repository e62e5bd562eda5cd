"""Thresholds hold with duplicated training rows, and do not depend on the rows' order.

Issue 23, items 13 and 14. Repeated or augmented data holds rows more than once: a
leave-one-out score that keeps a row's copy (distance 0) or a fold that learned from it
is as optimistic as the row's own score, and `beta='auto'` read the copies' distance of
rounding as the data's scale (3.6e16), so `predict` rejected every new row. And the
held-out rows and folds followed the rows' positions, so the same rows in another order
gave another `offset_`. Copies of a row count as one observation, left out together and
kept in one fold, and the rows and folds follow the rows' content (`row_keys`).
"""

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.covariance import EmpiricalCovariance

from sklearn_reclag import (
    HopfieldEnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
    RecLagDetector,
    ViMDetector,
)
from sklearn_reclag._backend import class_logsumexp, routed_logsumexp
from sklearn_reclag.base import THRESHOLD_ROWS, held_out_folds, row_keys, threshold_rows


def _blobs(rng, centres, n):
    y = rng.integers(0, len(centres), n)
    return centres[y] + rng.normal(size=(n, centres.shape[1])), y


@pytest.fixture(scope="module")
def blobs():
    """Three Gaussian blobs in 16 dimensions: 1,500 training rows (more than
    THRESHOLD_ROWS, so that the threshold's rows are a sample) and 6,000 new rows from the
    same distribution (the acceptance rate's standard error is 0.3 points)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(3, 16))
    X, y = _blobs(rng, centres, 1500)
    X_new, _ = _blobs(rng, centres, 6000)
    return X, y, X_new


def _duplicated(X, y, fraction, seed=1):
    """X and y with ``fraction`` of their rows appended a second time, shuffled."""
    rng = np.random.default_rng(seed)
    again = rng.choice(len(X), size=int(round(fraction * len(X))), replace=False)
    order = rng.permutation(len(X) + len(again))
    return np.r_[X, X[again]][order], np.r_[y, y[again]][order]


DETECTORS = {
    "KNN(n_neighbors=1)": KNNDetector(n_neighbors=1, device="cpu"),
    "KNN(n_neighbors=5)": KNNDetector(n_neighbors=5, device="cpu"),
    # Stored rows in the raw and normalised metrics: leave-one-out scores.
    "HE(beta='auto')": HopfieldEnergyDetector(beta="auto", metric="euclidean", device="cpu"),
    "HE(routing='max')": HopfieldEnergyDetector(beta="auto", metric="cosine", routing="max",
                                                device="cpu"),
    # A learned whitening: cross-fitted.
    "HE(metric='mahalanobis')": HopfieldEnergyDetector(beta="auto", metric="mahalanobis",
                                                       device="cpu"),
    "Mahalanobis": MahalanobisDetector(device="cpu"),
    "SHE": HopfieldEnergyDetector(patterns="mean", device="cpu"),
    "ViM": ViMDetector(device="cpu"),
    "RecLag (em)": RecLagDetector(solver="em", device="cpu", random_state=0),
}


@pytest.mark.parametrize("fraction", [1.0, 0.6, 0.3])
@pytest.mark.parametrize("name", list(DETECTORS))
def test_new_rows_are_accepted_at_one_minus_contamination_with_duplicates(blobs, name,
                                                                           fraction):
    """Every row twice (or 60 %, 30 % of them): predict accepts 95 % +- 4 of new rows.
    Before, KNN(n_neighbors=1) and HE accepted 0 % with every row twice, 77-81 % with
    60 % of them."""
    X, y, X_new = blobs
    X_dup, y_dup = _duplicated(X, y, fraction)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing is wrong with these data
        detector = clone(DETECTORS[name]).fit(X_dup, y_dup)
    assert np.mean(detector.predict(X_new) == 1) == pytest.approx(0.95, abs=0.04)


@pytest.mark.parametrize("detector", [
    HopfieldEnergyDetector(beta="auto", metric="euclidean", device="cpu"),
    HopfieldEnergyDetector(beta="auto", metric="cosine", device="cpu"),
    HopfieldEnergyDetector(beta="auto", metric="mahalanobis", device="cpu"),
], ids=lambda detector: detector.metric)
def test_auto_beta_ignores_copies(blobs, detector):
    """beta='auto' follows the gap between distinct neighbours: every row twice gives
    about the beta of the rows once (before: 3.6e16, from the copies' rounding)."""
    X, y, _ = blobs
    once = clone(detector).fit(X, y).beta_
    twice = clone(detector).fit(*_duplicated(X, y, 1.0)).beta_
    assert twice == pytest.approx(once, rel=0.1)


def test_copies_that_differ_by_rounding_count_as_copies(blobs):
    """Copies need not be equal to the bit: a copy passed through another computation
    (here a relative change of 1e-7, float32's rounding) is still one observation."""
    X, y, X_new = blobs
    X32 = X.astype(np.float32)
    nudged = X32 * np.float32(1 + 1e-7) + np.float32(1e-7) * np.sign(X32)
    X_dup, y_dup = np.r_[X32, nudged], np.r_[y, y]
    for detector in (KNNDetector(n_neighbors=1, device="cpu"),
                     HopfieldEnergyDetector(beta="auto", metric="euclidean", device="cpu")):
        fitted = clone(detector).fit(X_dup, y_dup)
        assert np.mean(fitted.predict(X_new) == 1) == pytest.approx(0.95, abs=0.04)


def _permuted(X, y, seed=2):
    order = np.random.default_rng(seed).permutation(len(X))
    return X[order], y[order]


# Every detector whose threshold is cross-fitted, leave-one-out or read from a sample of
# the rows, and whose learning does not depend on the order, in float64 so that only the
# order of sums can differ.
ORDER_FREE = {
    "Mahalanobis": MahalanobisDetector(device="cpu", dtype="float64"),
    "Mahalanobis (ledoit_wolf)": MahalanobisDetector(covariance="ledoit_wolf", device="cpu",
                                                     dtype="float64"),
    "Mahalanobis (given estimator)": MahalanobisDetector(covariance=EmpiricalCovariance(),
                                                         device="cpu", dtype="float64"),
    "KNN": KNNDetector(n_neighbors=5, device="cpu", dtype="float64"),
    "HE": HopfieldEnergyDetector(metric="euclidean", device="cpu", dtype="float64"),
    "HE (mahalanobis)": HopfieldEnergyDetector(metric="mahalanobis", device="cpu",
                                               dtype="float64"),
    "SHE": HopfieldEnergyDetector(patterns="mean", device="cpu", dtype="float64"),
    "ViM": ViMDetector(device="cpu", dtype="float64"),
    "MSP": MSPDetector(device="cpu", dtype="float64"),
}
# Not RecLag: its learning itself depends on the order (initial memories drawn among the
# rows by position, as KMeans's are), not only its threshold.


@pytest.mark.parametrize("name", list(ORDER_FREE))
def test_permuted_rows_give_the_same_threshold_and_scores(blobs, name):
    """The same rows in another order: the same offset_ and decision_function. Before,
    Mahalanobis, SHE and ViM moved offset_ by 0.01-0.1 and flipped predictions."""
    X, y, X_new = blobs
    detector = ORDER_FREE[name]
    fitted = clone(detector).fit(X, y)
    permuted = clone(detector).fit(*_permuted(X, y))
    assert permuted.offset_ == pytest.approx(fitted.offset_, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(permuted.decision_function(X_new),
                               fitted.decision_function(X_new), rtol=1e-7, atol=1e-7)


def test_permuted_rows_in_float32_predict_the_same(blobs):
    """float32: the same offset_ up to the rounding of sums in another order."""
    X, y, X_new = blobs
    for detector in (MahalanobisDetector(device="cpu"),
                     HopfieldEnergyDetector(patterns="mean", device="cpu"),
                     ViMDetector(device="cpu")):
        fitted = clone(detector).fit(X, y)
        permuted = clone(detector).fit(*_permuted(X, y))
        assert permuted.offset_ == pytest.approx(fitted.offset_, rel=1e-4)


# ----------------------------------------------------------------- the helpers
def test_row_keys_follow_the_content():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7)).astype(np.float32)  # 28 bytes a row: 32-bit words
    y = rng.integers(0, 3, 50)
    keys = row_keys(X, y, dtype="float32")
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 50
    order = rng.permutation(50)
    assert np.array_equal(row_keys(X[order], y[order], dtype="float32"), keys[order])
    # A float64 copy of float32 data, cast back to the detector's dtype: the same keys.
    assert np.array_equal(row_keys(X.astype(np.float64), y, dtype="float32"), keys)
    # -0.0 equals 0.0; another label is another observation.
    zeros = np.zeros((2, 7))
    zeros[1, 3] = -0.0
    assert len(np.unique(row_keys(zeros, dtype="float64"))) == 1
    labelled = row_keys(np.r_[X[:1], X[:1]], [0, 1], dtype="float32")
    assert labelled[0] != labelled[1]
    # X is not written (the -0.0 goes on a copy).
    assert np.signbit(zeros[1, 3])


def test_held_out_folds_keep_copies_together_and_ignore_the_order():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = rng.integers(0, 3, 300)
    X_dup, y_dup = np.r_[X, X[:100]], np.r_[y, y[:100]]
    folds = held_out_folds(row_keys(X_dup, y_dup, dtype="float64"), y_dup)
    assert np.array_equal(folds[300:], folds[:100])
    # Stratified and balanced: every class in every fold, about a fifth of its rows.
    for label in range(3):
        counts = np.bincount(folds[:300][y == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    order = rng.permutation(400)
    permuted = held_out_folds(row_keys(X_dup[order], y_dup[order], dtype="float64"),
                              y_dup[order])
    assert np.array_equal(permuted, folds[order])
    with pytest.raises(ValueError, match="number of distinct rows"):
        held_out_folds(row_keys(np.repeat(X[:4], 3, axis=0), dtype="float64"))


def test_threshold_rows_take_one_row_per_copy_and_a_sample_fixed_by_content():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3 * THRESHOLD_ROWS, 3))
    X_dup = np.r_[X, X]
    rows = threshold_rows(len(X_dup), row_keys(X_dup, dtype="float64"))
    assert len(rows) == THRESHOLD_ROWS == len(np.unique(X_dup[rows], axis=0))
    order = rng.permutation(len(X_dup))
    permuted = threshold_rows(len(X_dup), row_keys(X_dup[order], dtype="float64"))
    chosen = np.unique(X_dup[rows], axis=0)
    assert np.array_equal(np.unique(X_dup[order][permuted], axis=0), chosen)
    # Up to THRESHOLD_ROWS distinct rows: all of them, once.
    small = np.r_[X[:10], X[:10], X[10:15]]
    assert len(threshold_rows(25, row_keys(small, dtype="float64"))) == 15


# ----------------------------------------------- leave-one-out without the copies
def test_knn_leave_one_out_leaves_out_every_copy(blobs):
    """A row's leave-one-out score is its k-th neighbour among the rows that are not
    copies of it, computed here by brute force in numpy."""
    X, _, _ = blobs
    X = X[:300]
    X_dup = np.r_[X, X[:150], X[:50]]  # 50 rows three times, 100 twice, 150 once
    detector = KNNDetector(n_neighbors=3, normalize=False, contamination=0.1,
                           device="cpu", dtype="float64").fit(X_dup)
    distances = np.linalg.norm(X[:, None] - X_dup[None], axis=2)
    distances[distances == 0] = np.inf
    expected = -np.sort(distances, axis=1)[:, 2]
    assert detector.offset_ == pytest.approx(np.percentile(expected, 10), rel=1e-9)


def _mahalanobis_scores(X_fit, y_fit, X):
    classes = np.unique(y_fit)
    means = np.array([X_fit[y_fit == c].mean(axis=0) for c in classes])
    centred = X_fit - means[np.searchsorted(classes, y_fit)]
    precision = np.linalg.pinv(centred.T @ centred / len(X_fit), hermitian=True)
    diffs = X[:, None, :] - means[None]
    return -0.5 * np.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(axis=1)


def test_mahalanobis_closed_form_leaves_out_every_copy(blobs):
    """The closed-form downdate removes a row with all its copies (m rows at once):
    what refitting on the other rows gives."""
    X, y, _ = blobs
    X, y = X[:150], y[:150]
    X_dup, y_dup = np.r_[X, X[:60], X[:20]], np.r_[y, y[:60], y[:20]]
    detector = MahalanobisDetector(covariance="empirical", normalize=False,
                                   contamination=0.1, device="cpu",
                                   dtype="float64").fit(X_dup, y_dup)
    loo = np.array([
        _mahalanobis_scores(X_dup[(X_dup != X[i]).any(axis=1)],
                            y_dup[(X_dup != X[i]).any(axis=1)], X[i:i + 1])[0]
        for i in range(len(X))])
    assert detector.offset_ == pytest.approx(np.percentile(loo, 10), rel=1e-9)


@pytest.mark.parametrize("n_banks", [3, 80])  # a loop over banks; one padded product
def test_logsumexp_kernels_leave_out_the_copies_of_each_query(n_banks):
    """exclude_copies drops every memory equal to the query up to rounding, in the
    per-class and the routed kernels (both of the routed kernel's paths): the sums of
    numpy over the other memories."""
    rng = np.random.default_rng(0)
    banks = rng.normal(size=(n_banks, 6, 5))
    mask = np.ones((n_banks, 6), dtype=bool)
    mask[0, 4:] = False
    route = rng.integers(0, n_banks, 200)
    # Each query is a memory of its bank (slot 0 or 1), and slot 2 holds a copy of slot 0
    # nudged by rounding.
    banks[:, 2] = banks[:, 0] * (1 + 1e-15)
    queries = banks[route, route % 2]
    beta = 0.7
    logits = beta * np.einsum("bd,cmd->bcm", queries, banks)
    copies = np.linalg.norm(queries[:, None, None] - banks[None], axis=3) < 1e-12
    logits[copies | ~mask[None]] = -np.inf
    expected = logsumexp(logits, axis=2)
    as_t = torch.as_tensor
    got = class_logsumexp(as_t(queries), as_t(banks), as_t(mask), beta, exclude_copies=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    routed = routed_logsumexp(as_t(queries), as_t(route), as_t(banks), as_t(mask), beta,
                              exclude_copies=True)
    np.testing.assert_allclose(routed.numpy(), expected[np.arange(200), route], rtol=1e-12)
    # What was left out: each query's own slot, and slot 2 for the copies of slot 0.
    own = copies[np.arange(200), route]
    assert own[np.arange(200), route % 2].all() and own[route % 2 == 0, 2].all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_keys_tell_every_distinct_row_apart(dtype):
    """Distinct rows get distinct keys, also where rows differ only in sign bits
    (bipolar +-1 features gave 2 keys in float64 and 506 for 608 rows in float32: the
    weighted sum of unmixed words lost every bit a power-of-two shift moves) and where
    the words have many trailing zero bits (pixels / 16: 1,697 keys for 1,797 rows)."""
    from sklearn.datasets import load_digits

    from sklearn_reclag.base import row_keys

    X, _ = load_digits(return_X_y=True)
    for rows in (np.where(X >= 8, 1.0, -1.0), X / 16):
        rows = rows.astype(dtype)
        n_distinct = len(np.unique(rows, axis=0))
        assert len(np.unique(row_keys(rows, dtype=dtype))) == n_distinct
