"""MahalanobisDetector against the formula of Lee et al. (NeurIPS 2018), written in numpy.

score(v) = -1/2 min_c (v - mu_c)^T Sigma^+ (v - mu_c), mu_c the class means, Sigma the
covariance of the class-centred training rows (ML estimate: scatter / N), ^+ the
pseudo-inverse.
"""

import numpy as np
import pytest
from scipy.linalg import pinvh
from sklearn.covariance import OAS, LedoitWolf, ShrunkCovariance

from sklearn_reclag import MahalanobisDetector


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(3, 5))
    y = np.repeat([4, 7, 9], [30, 25, 35])
    X = centres[np.searchsorted([4, 7, 9], y)] + rng.normal(size=(len(y), 5)) @ rng.normal(
        size=(5, 5))
    X_test = rng.normal(scale=3.0, size=(20, 5))
    return X, y, X_test


def _numpy_score(X, y, X_test, sigma=None):
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(axis=0) for c in classes])
    centred = X - means[np.searchsorted(classes, y)]
    if sigma is None:
        sigma = centred.T @ centred / len(X)
    precision = pinvh(sigma)
    d = np.stack([np.einsum("nd,de,ne->n", X_test - m, precision, X_test - m) for m in means])
    return -0.5 * d.min(axis=0), means, sigma


def test_score_equals_numpy_formula(data):
    X, y, X_test = data
    det = MahalanobisDetector(device="cpu", dtype="float64").fit(X, y)
    expected, means, sigma = _numpy_score(X, y, X_test)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(det.means_, means)
    np.testing.assert_allclose(det.covariance_, sigma)
    np.testing.assert_allclose(det.precision_, pinvh(sigma), atol=1e-10)
    np.testing.assert_array_equal(det.classes_, [4, 7, 9])


def test_float32_close_to_float64(data):
    X, y, X_test = data
    expected = MahalanobisDetector(device="cpu", dtype="float64").fit(X, y).score_samples(X_test)
    got = MahalanobisDetector(device="cpu").fit(X, y).score_samples(X_test)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, estimator", [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_shrunk_covariances_are_sklearns(data, name, estimator):
    """'ledoit_wolf' and 'oas' are sklearn's estimators on the class-centred rows."""
    X, y, X_test = data
    _, means, _ = _numpy_score(X, y, X_test)
    centred = X - means[np.searchsorted(np.unique(y), y)]
    sigma = estimator(assume_centered=True).fit(centred).covariance_
    det = MahalanobisDetector(covariance=name, device="cpu", dtype="float64").fit(X, y)
    np.testing.assert_allclose(det.covariance_, sigma)
    expected, _, _ = _numpy_score(X, y, X_test, sigma)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)


def test_covariance_estimator_object_is_cloned_and_used(data):
    X, y, _ = data
    given = ShrunkCovariance(shrinkage=0.5)
    det = MahalanobisDetector(covariance=given, device="cpu", dtype="float64").fit(X, y)
    assert not hasattr(given, "covariance_")  # the user's estimator is not fitted
    _, means, _ = _numpy_score(X, y, X)
    centred = X - means[np.searchsorted(np.unique(y), y)]
    np.testing.assert_allclose(det.covariance_,
                               ShrunkCovariance(shrinkage=0.5).fit(centred).covariance_)


def test_singular_covariance_uses_the_pseudo_inverse(data):
    """A dead unit (always 0) and a duplicated feature make Sigma singular."""
    X, y, X_test = data
    X = np.column_stack([X, np.zeros(len(X)), X[:, 0]])
    X_test = np.column_stack([X_test, np.zeros(len(X_test)), X_test[:, 0]])
    det = MahalanobisDetector(device="cpu", dtype="float64").fit(X, y)
    expected, _, _ = _numpy_score(X, y, X_test)
    assert np.linalg.matrix_rank(det.covariance_) < X.shape[1]
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-7, atol=1e-7)
    assert np.isfinite(det.score_samples(X_test)).all()


def test_without_y_one_mean(data):
    X, _, X_test = data
    det = MahalanobisDetector(device="cpu", dtype="float64").fit(X)
    expected, _, _ = _numpy_score(X, np.zeros(len(X)), X_test)
    assert det.classes_ is None and det.means_.shape == (1, X.shape[1])
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)


def test_constant_features_are_refused_clearly():
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match="covariance of the training rows is zero"):
        MahalanobisDetector(device="cpu").fit(X, np.repeat([0, 1], 5))


