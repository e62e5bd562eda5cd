"""The ``metric`` and ``beta='auto'`` options of the memory-bank detectors (HE, SHE, RecLag).

metric='cosine' L2-normalises every row, 'mahalanobis' whitens it by Sigma^{+1/2} (Sigma
the shared within-class covariance); the head always reads the raw rows. Checked against
numpy formulas, and against the two baselines the family contains: Mahalanobis
(patterns='mean', energy='density', routing='max') and 1-NN on normalised rows (cosine,
density, beta -> infinity).
"""

import warnings

import numpy as np
import pytest
from scipy.linalg import pinvh
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression

from sklearn_reclag import HopfieldEnergyDetector, MahalanobisDetector, RecLagDetector
from sklearn_reclag.detectors._banks import auto_beta


@pytest.fixture(scope="module")
def data():
    """Three correlated Gaussian classes, the head of a logistic regression, test rows."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(6, 6))
    centres = rng.normal(scale=2.0, size=(3, 6)) + 4.0
    y = np.repeat([0, 1, 2], [40, 30, 50])
    X = centres[y] + rng.normal(size=(len(y), 6)) @ mixing
    X_test = rng.normal(scale=3.0, size=(25, 6)) + 4.0
    head = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, X_test, head


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _whitener(X, y):
    """Sigma^{+1/2} of the Ledoit-Wolf covariance of the class-centred rows."""
    means = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])
    centred = X - means[np.searchsorted(np.unique(y), y)]
    sigma = LedoitWolf(assume_centered=True).fit(centred).covariance_
    w, U = np.linalg.eigh(pinvh(sigma))
    return (U * np.sqrt(np.clip(w, 0, None))) @ U.T


@pytest.mark.parametrize("metric", ["cosine", "mahalanobis"])
@pytest.mark.parametrize("energy", ["lse", "density"])
def test_he_in_metric_space_equals_numpy_formula(data, metric, energy):
    """HE scores the mapped row against the mapped stored patterns of the class the head
    predicts from the raw row."""
    X, y, X_test, head = data
    beta = 0.8
    det = HopfieldEnergyDetector(beta=beta, energy=energy, metric=metric, head=head,
                                 device="cpu", dtype="float64").fit(X, y)
    logits = lambda A: A @ head.coef_.T + head.intercept_  # noqa: E731
    mapping = _unit if metric == "cosine" else (lambda A, W=_whitener(X, y): A @ W)
    Z, Z_test = mapping(X), mapping(X_test)
    stored = logits(X).argmax(axis=1) == y
    c_hat = logits(X_test).argmax(axis=1)
    expected = np.empty(len(X_test))
    for i, (z, c) in enumerate(zip(Z_test, c_hat)):
        bank = Z[stored & (y == c)]
        if energy == "lse":
            expected[i] = logsumexp(beta * bank @ z) / beta
        else:
            expected[i] = logsumexp(-beta * ((bank - z) ** 2).sum(axis=1) / 2) / beta
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)


def test_he_mahalanobis_mean_density_max_is_the_mahalanobis_detector(data):
    """patterns='mean', energy='density', routing='max', metric='mahalanobis' scores
    -1/2 min_c |W (v - mu_c)|^2: exactly MahalanobisDetector with the same covariance
    (the head classifies every training row correctly here, so the stored patterns are
    the training rows and their means the class means)."""
    X, y, X_test, _ = data
    separated = X + 100.0 * np.eye(3, 6)[y]
    head = (np.eye(3, 6), np.zeros(3))  # logit c = feature c: right on every row
    assert (separated[:, :3].argmax(axis=1) == y).all()
    he = HopfieldEnergyDetector(patterns="mean", beta=0.3, energy="density", routing="max",
                                metric="mahalanobis", covariance="empirical", head=head,
                                device="cpu", dtype="float64").fit(separated, y)
    maha = MahalanobisDetector(covariance="empirical", normalize=False, device="cpu",
                               dtype="float64").fit(separated, y)
    queries = np.vstack([X_test, separated[::7]])
    np.testing.assert_allclose(he.score_samples(queries), maha.score_samples(queries),
                               rtol=1e-8, atol=1e-8)


def test_he_cosine_density_tends_to_one_nearest_neighbour(data):
    """(1/beta) lse(-beta |z - x|^2 / 2) -> -min_x |z - x|^2 / 2 as beta grows, with an
    error at most log(n) / beta: the 1-NN score on normalised rows."""
    X, _, X_test, _ = data
    Z, Z_test = _unit(X), _unit(X_test)
    nearest = ((Z_test[:, None, :] - Z[None]) ** 2).sum(axis=2).min(axis=1)
    errors = []
    for beta in (10.0, 1e3, 1e5):
        det = HopfieldEnergyDetector(beta=beta, energy="density", metric="cosine",
                                     device="cpu", dtype="float64").fit(X)
        gap = np.abs(det.score_samples(X_test) + nearest / 2)
        assert gap.max() <= np.log(len(X)) / beta + 1e-9
        errors.append(gap.max())
    assert errors[0] > errors[1] > errors[2]


def test_reclag_memories_live_on_the_unit_sphere_with_cosine(data):
    X, y, X_test, head = data
    det = RecLagDetector(n_memories=4, beta=5.0, solver="em", metric="cosine", head=head,
                         device="cpu", dtype="float64", random_state=0).fit(X, y)
    norms = np.linalg.norm(det.memories_[det.memory_mask_], axis=1)
    np.testing.assert_allclose(norms, 1.0)
    # Retrieval runs on the sphere too: states are unit rows or the OOD zero state.
    states = det.transform(X_test)
    state_norms = np.linalg.norm(states, axis=1)
    assert np.all(np.isclose(state_norms, 1.0) | np.isclose(state_norms, 0.0))


def test_reclag_mahalanobis_scores_whitened_rows(data):
    """RecLag's memories are learned in the whitened space and score whitened rows."""
    X, y, X_test, head = data
    beta = 0.5
    det = RecLagDetector(n_memories=3, beta=beta, solver="em", energy="density",
                         metric="mahalanobis", head=head, device="cpu", dtype="float64",
                         random_state=0).fit(X, y)
    W = _whitener(X, y)
    np.testing.assert_allclose(det.whitening_, W, atol=1e-10)
    c_hat = (X_test @ head.coef_.T + head.intercept_).argmax(axis=1)
    expected = [
        logsumexp(-beta * ((det.memories_[c][det.memory_mask_[c]] - z) ** 2).sum(1) / 2) / beta
        for z, c in zip(X_test @ W, c_hat)
    ]
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "mahalanobis"])
def test_metric_scores_do_not_depend_on_the_chunk_size(data, metric):
    X, y, X_test, head = data
    kwargs = dict(beta=2.0, energy="density", metric=metric, head=head, device="cpu")
    whole = HopfieldEnergyDetector(**kwargs).fit(X, y).score_samples(X_test)
    chunked = HopfieldEnergyDetector(batch_size=4, **kwargs).fit(X, y).score_samples(X_test)
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-5)


def test_fitted_metric_state_is_numpy(data):
    X, y, _, head = data
    det = HopfieldEnergyDetector(metric="mahalanobis", head=head, device="cpu").fit(X, y)
    assert isinstance(det.whitening_, np.ndarray) and isinstance(det.memories_, np.ndarray)
    assert HopfieldEnergyDetector(device="cpu").fit(X, y).whitening_ is None


def test_auto_beta_is_four_over_the_median_squared_neighbour_distance(data):
    X, y, _, _ = data
    expected_d2 = []
    for c in np.unique(y):
        bank = X[y == c]
        d2 = ((bank[:, None] - bank[None]) ** 2).sum(axis=2)
        np.fill_diagonal(d2, np.inf)
        expected_d2.append(d2.min(axis=1))
    expected = 4.0 / np.median(np.concatenate(expected_d2))
    assert auto_beta(X, y, 3, device="cpu") == pytest.approx(expected, rel=1e-9)
    det = HopfieldEnergyDetector(beta="auto", device="cpu", dtype="float64").fit(X, y)
    # Stored patterns only (those the fitted head gets right): close to, not equal to, all rows.
    assert 0.5 * expected < det.beta_ < 2 * expected


def test_auto_beta_follows_the_metric_scale(data):
    """Scaling the features by s scales beta_ by 1/s^2 (euclidean), leaves cosine and
    mahalanobis unchanged."""
    X, y, _, head = data
    scaled_head = (head.coef_ / 10.0, head.intercept_)
    for metric in ("euclidean", "cosine", "mahalanobis"):
        a = HopfieldEnergyDetector(beta="auto", metric=metric, head=head, device="cpu",
                                   dtype="float64").fit(X, y).beta_
        b = HopfieldEnergyDetector(beta="auto", metric=metric, head=scaled_head,
                                   device="cpu", dtype="float64").fit(10 * X, y).beta_
        assert b == pytest.approx(a / 100 if metric == "euclidean" else a, rel=1e-6)


def test_auto_beta_without_two_distinct_patterns_warns_and_uses_one():
    """Constant features leave no gap for beta='auto' to follow: the default must still
    fit (with beta_ = 1 and a warning), not fail where a user first tries it."""
    with pytest.warns(UserWarning, match="no two distinct stored patterns"):
        det = HopfieldEnergyDetector(beta="auto", device="cpu").fit(np.ones((5, 3)))
    assert det.beta_ == 1.0
    assert np.isfinite(det.offset_)


@pytest.mark.parametrize("estimator", [
    HopfieldEnergyDetector(energy="lse", device="cpu"),
    RecLagDetector(energy="lse", max_epochs=2, tol=None, device="cpu", random_state=0),
])
def test_lse_energy_on_rows_centred_on_the_origin_warns_with_the_fix(estimator):
    # Standardised columns: outliers have the largest norms, which lse rewards (issue 23,
    # item 2: AUROC 0.50 without a word).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    with pytest.warns(UserWarning, match="energy='density'"):
        clone(estimator).fit(X - X.mean(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone(estimator).fit(np.abs(X) + 1.0)  # the origin is informative: no warning
