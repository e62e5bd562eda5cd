"""MahalanobisDetector against the formula of Lee et al. (NeurIPS 2018), written in numpy.

score(v) = -1/2 min_c (v - mu_c)^T Sigma^+ (v - mu_c), mu_c the class means, Sigma the
covariance of the class-centred training rows (ML estimate: scatter / N), ^+ the
pseudo-inverse.
"""

from functools import partial

import numpy as np
import pytest
from scipy.linalg import pinvh
from sklearn.covariance import OAS, LedoitWolf, ShrunkCovariance

from sklearn_reclag import MahalanobisDetector as _MahalanobisDetector

# The reference formulas of this module are the paper's: the empirical covariance of the
# raw rows, unless a test says otherwise (the defaults, Ledoit-Wolf on rows normalised
# where the origin is informative, are tested at the end).
MahalanobisDetector = partial(_MahalanobisDetector, covariance="empirical", normalize=False)


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




# --------------------------------------------------- Mahalanobis++ (issue 21)
def test_normalize_is_mahalanobis_plus_plus(data):
    """normalize=True (Mueller et al., ICML 2025): L2-normalise the rows, then the usual
    Mahalanobis score of the normalised rows."""
    X, y, X_test = data
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    det = MahalanobisDetector(normalize=True, device="cpu", dtype="float64").fit(X, y)
    expected, means, sigma = _numpy_score(unit(X), y, unit(X_test))
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(det.means_, means)
    np.testing.assert_allclose(det.covariance_, sigma, atol=1e-12)
    # A row's scale no longer matters; without normalize it does.
    np.testing.assert_allclose(det.score_samples(3 * X_test), expected, rtol=1e-9, atol=1e-9)
    plain = MahalanobisDetector(device="cpu", dtype="float64").fit(X, y)
    assert not np.allclose(plain.score_samples(3 * X_test), plain.score_samples(X_test))
    assert _MahalanobisDetector.search_space["normalize"] == [False, True]


# ------------------------------------ many features, few rows (issue 23, item 16)
# One class, 'empirical', fewer rows than features: every row is at the same distance.
@pytest.mark.filterwarnings("ignore:MahalanobisDetector. the 24 training scores")
@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "oas"])
@pytest.mark.parametrize("labelled", [True, False])
def test_low_rank_covariance_equals_the_full_one(covariance, labelled, monkeypatch):
    """With fewer rows than features the covariance is computed in the span of the rows;
    scores, covariance and threshold equal those of the (D, D) computation."""
    from sklearn_reclag.detectors import _covariance, mahalanobis

    rng = np.random.default_rng(3)
    X = np.maximum(rng.normal(size=(24, 60)), 0) + rng.normal(size=60)
    y = np.arange(24) % 3 if labelled else None
    X_test = np.maximum(rng.normal(size=(15, 60)), 0)
    kwargs = dict(covariance=covariance, device="cpu", dtype="float64")
    low = MahalanobisDetector(**kwargs).fit(X, y)
    assert low._spectrum.basis.shape[1] < X.shape[1]  # the low-rank path ran
    monkeypatch.setattr(mahalanobis, "shared_spectrum", lambda *a, **k: (
        _covariance.shared_spectrum(*a, **{**k, "low_rank": False})))
    full = MahalanobisDetector(**kwargs).fit(X, y)
    assert full._spectrum.basis.shape[1] == X.shape[1]
    np.testing.assert_allclose(low.covariance_, full.covariance_, atol=1e-12)
    np.testing.assert_allclose(low.precision_, full.precision_, rtol=1e-7,
                               atol=1e-7 * np.abs(full.precision_).max())
    np.testing.assert_allclose(low.score_samples(X_test), full.score_samples(X_test),
                               rtol=1e-7)
    np.testing.assert_allclose(low.offset_, full.offset_, rtol=1e-7)
    # And both are the formula of Lee et al. with sklearn's estimate.
    sigma = {"empirical": None, "ledoit_wolf": LedoitWolf, "oas": OAS}[covariance]
    labels = np.zeros(len(X)) if y is None else y
    if sigma is not None:
        _, means, _ = _numpy_score(X, labels, X_test)
        centred = X - means[np.searchsorted(np.unique(labels), labels)]
        sigma = sigma(assume_centered=True).fit(centred).covariance_
    expected, _, _ = _numpy_score(X, labels, X_test, sigma)
    np.testing.assert_allclose(low.score_samples(X_test), expected, rtol=1e-6)


def test_many_features_never_eigendecompose_a_features_square(monkeypatch):
    """5,000 features, 40 rows: no (D, D) eigendecomposition (each took minutes), no
    pseudo-inverse; the fit (with its cross-fitted threshold) takes seconds."""
    import time

    import scipy.linalg

    sizes = []
    eigh = np.linalg.eigh

    def recording_eigh(a, *args, **kwargs):
        sizes.append(np.shape(a)[-1])
        return eigh(a, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "eigh", recording_eigh)
    monkeypatch.setattr(scipy.linalg, "pinvh", lambda *a, **k: pytest.fail("pinvh called"))
    rng = np.random.default_rng(0)
    X = np.maximum(rng.normal(size=(40, 5000)), 0)
    y = np.arange(40) % 4
    start = time.perf_counter()
    for covariance in ("empirical", "ledoit_wolf"):
        det = MahalanobisDetector(covariance=covariance, device="cpu").fit(X, y)
        assert np.isfinite(det.score_samples(X[:5])).all()
    assert sizes and max(sizes) < 50
    assert time.perf_counter() - start < 60  # > 10 minutes before


# ------------------------------- a large common offset (issue 23, item 18)
def test_large_feature_offset_changes_nothing_in_float32():
    """Distances do not change under a shift: features with a mean of 1e4 or 1e6 score
    as the same features without it, in float32 (they scored at chance before)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 16))
    y = (X[:, 0] > 0).astype(int)
    X_test = np.r_[rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) * 1.8]
    labels = np.r_[np.ones(200), np.zeros(200)]
    reference = MahalanobisDetector(device="cpu").fit(X, y).score_samples(X_test)
    auroc = roc_auc_score(labels, reference)
    assert auroc > 0.8
    for offset in (1e4, 1e6):
        det = MahalanobisDetector(device="cpu").fit(X + offset, y)
        scores = det.score_samples(X_test + offset)
        np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4)
        assert abs(roc_auc_score(labels, scores) - auroc) < 0.002
        np.testing.assert_allclose(det.center_, X.mean(axis=0) + offset)


def test_defaults_are_ledoit_wolf_and_normalise_unless_the_rows_are_centred():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(0.3, 1.0, size=(200, 8)), 0)
    y = rng.integers(0, 2, size=200)
    det = _MahalanobisDetector(device="cpu", dtype="float64").fit(relu, y)
    assert det.normalize_ and det.covariance == "ledoit_wolf"
    explicit = _MahalanobisDetector(normalize=True, device="cpu", dtype="float64").fit(relu, y)
    np.testing.assert_array_equal(det.score_samples(relu), explicit.score_samples(relu))
    centred = relu - relu.mean(axis=0)
    assert not _MahalanobisDetector(device="cpu").fit(centred, y).normalize_


def test_fit_keeps_no_scatter_matrix_per_class_for_ledoit_wolf():
    # 1,000 classes of 2,048 features would need 31 GiB of per-class (D, D) scatters: fit
    # passes the class means first, and Ledoit-Wolf's sums need none (issue 22).
    from sklearn_reclag.detectors._covariance import ClassMoments, class_means

    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(300, 6)) + 5, rng.integers(0, 30, size=300)
    streamed = ClassMoments(6, fourth=True)
    streamed.update(X, labels)
    known = ClassMoments(6, fourth=True, means=class_means(X, labels, 30))
    known.update(X, labels)
    assert known.class_scatter.shape == (0, 6, 6)
    for name in ("ledoit_wolf", "oas", "empirical"):
        for a, b in zip(known.covariance(name), streamed.covariance(name)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(known.means(), streamed.means(), rtol=1e-12)
