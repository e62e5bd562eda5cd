"""SCALE, ASH, GEN, fDBD, NCI and RMDS: the scores against numpy references written from
the official code, where the official code and the paper differ, and bad input (the
contract shared by every estimator, persistence included, is in test_common.py)."""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid
from sklearn.utils.estimator_checks import check_outliers_train

from sklearn_reclag import (
    ASHDetector,
    FDBDDetector,
    GENDetector,
    MahalanobisDetector,
    NCIDetector,
    RMDSDetector,
    SCALEDetector,
)
from sklearn_reclag.model_selection import default_param_grid

HEAD_DETECTORS = [SCALEDetector, ASHDetector, GENDetector, FDBDDetector, NCIDetector]


def _relu_problem(rng, n=150, d=64, k=5):
    """Non-negative features (a ReLU of shifted normals: about 30 % exact zeros, as
    penultimate CNN features have), labels, and a random head (coef, intercept)."""
    X = np.maximum(rng.normal(0.5, 1.0, size=(n, d)), 0.0)
    y = rng.integers(0, k, size=n)
    head = (rng.normal(size=(k, d)) / np.sqrt(d), rng.normal(size=k))
    return X, y, head


# ------------------------------------------------------------ references (numpy)
# Written from the official code: andrijazz/ash's ash.py (ash_p, ash_b, ash_s) applied
# to the pooled features, OpenOOD's scale_net.py, gen_postprocessor.py,
# fdbd_postprocessor.py (and litianliu/fDBD-OOD's run_cifar.py), nci_postprocessor.py
# and rmds_postprocessor.py; one row at a time where the code works on a batch.
def _kept_count(n, percentile):
    return n - int(np.round(n * percentile / 100.0))


def _top(x, k):
    return np.argsort(-x, kind="stable")[:k]


def ash_reference(X, coef, intercept, variant, percentile):
    shaped = np.zeros_like(X)
    for row, x in enumerate(X):
        k = _kept_count(len(x), percentile)
        top = _top(x, k)
        s1 = x.sum()
        if variant == "p":
            shaped[row, top] = x[top]
        elif variant == "b":
            shaped[row, top] = s1 / k
        else:
            shaped[row, top] = x[top]
            shaped[row] *= np.exp(s1 / shaped[row].sum())
    return logsumexp(shaped @ coef.T + intercept, axis=1)


def scale_reference(X, coef, intercept, percentile):
    scaled = np.empty_like(X)
    for row, x in enumerate(X):
        top = _top(x, _kept_count(len(x), percentile))
        scaled[row] = x * np.exp(x.sum() / x[top].sum())
    return logsumexp(scaled @ coef.T + intercept, axis=1)


def gen_reference(X, coef, intercept, gamma, M):
    probs = np.sort(softmax(X @ coef.T + intercept, axis=1), axis=1)[:, -M:]
    return -np.sum(probs ** gamma * (1 - probs) ** gamma, axis=1)


def fdbd_reference(X, X_train, coef, intercept, distance_as_normalizer=True):
    num_classes = len(intercept)
    denominator_matrix = np.zeros((num_classes, num_classes))
    for p in range(num_classes):
        denominator = np.linalg.norm(coef - coef[p], axis=1)
        denominator[p] = 1
        denominator_matrix[p] = denominator
    logits = X @ coef.T + intercept
    nn_idx = logits.argmax(axis=1)
    logits_sub = np.abs(logits - logits.max(axis=1, keepdims=True))
    total = np.sum(logits_sub / denominator_matrix[nn_idx], axis=1)
    origin = X_train.mean(axis=0) if distance_as_normalizer else 0.0
    return total / np.linalg.norm(X - origin, axis=1)


def fdbd_paper(X, X_train, coef, intercept):
    """The paper's fDBD: the average over the C - 1 other classes of the distance to the
    boundary with the predicted class f, over |v - mu|."""
    logits = X @ coef.T + intercept
    f = logits.argmax(axis=1)
    scores = []
    for row, x in enumerate(X):
        others = [j for j in range(len(intercept)) if j != f[row]]
        distances = [abs(logits[row, f[row]] - logits[row, j])
                     / np.linalg.norm(coef[f[row]] - coef[j]) for j in others]
        scores.append(np.mean(distances) / np.linalg.norm(x - X_train.mean(axis=0)))
    return np.array(scores)


def nci_reference(X, X_train, coef, intercept, alpha):
    train_mean = X_train.mean(axis=0)
    nn_idx = (X @ coef.T + intercept).argmax(axis=1)
    centred = X - train_mean
    return (np.sum(coef[nn_idx] * centred, axis=1) / np.linalg.norm(centred, axis=1)
            + alpha * np.abs(X).sum(axis=1))


def rmds_reference(X, X_train, y_train):
    classes = np.unique(y_train)
    class_mean = np.stack([X_train[y_train == c].mean(axis=0) for c in classes])
    centred = np.vstack([X_train[y_train == c] - class_mean[i]
                         for i, c in enumerate(classes)])
    precision = np.linalg.pinv(np.cov(centred.T, bias=True), hermitian=True)
    whole_mean = X_train.mean(axis=0)
    whole_precision = np.linalg.pinv(np.cov((X_train - whole_mean).T, bias=True),
                                     hermitian=True)
    t1 = X - whole_mean
    background_scores = -np.einsum("ij,jk,ik->i", t1, whole_precision, t1)
    class_scores = np.empty((len(X), len(classes)))
    for c in range(len(classes)):
        t = X - class_mean[c]
        class_scores[:, c] = -np.einsum("ij,jk,ik->i", t, precision, t) - background_scores
    return class_scores.max(axis=1)


# --------------------------------------------------------------- scores = reference
TOLERANCES = [("float32", 2e-5), ("float64", 1e-10)]


def _fit(Detector, X, y, head, dtype, **params):
    return Detector(**params, head=head, device="cpu", dtype=dtype, batch_size=16).fit(X, y)


def _assert_close(actual, expected, rtol):
    # Relative to the scores' scale: float32 rounds the logits, not each score alone.
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype, rtol", TOLERANCES)
@pytest.mark.parametrize("percentile", [65, 85, 95])
def test_scale_equals_reference(rng, dtype, rtol, percentile):
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(40, X.shape[1])), 0.0)
    det = _fit(SCALEDetector, X, y, head, dtype, percentile=percentile)
    assert det.n_kept_ == _kept_count(X.shape[1], percentile)
    _assert_close(det.score_samples(X_test), scale_reference(X_test, *head, percentile), rtol)


@pytest.mark.parametrize("dtype, rtol", TOLERANCES)
@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [65, 90])
def test_ash_equals_reference(rng, dtype, rtol, variant, percentile):
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(40, X.shape[1])), 0.0)
    det = _fit(ASHDetector, X, y, head, dtype, variant=variant, percentile=percentile)
    _assert_close(det.score_samples(X_test),
                  ash_reference(X_test, *head, variant, percentile), rtol)


@pytest.mark.parametrize("dtype, rtol", TOLERANCES)
@pytest.mark.parametrize("gamma, top_m", [(0.1, 100), (0.5, 3), (2.0, 1)])
def test_gen_equals_reference(rng, dtype, rtol, gamma, top_m):
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(40, X.shape[1])), 0.0)
    det = _fit(GENDetector, X, y, head, dtype, gamma=gamma, top_m=top_m)
    assert det.top_m_ == min(top_m, 5)
    _assert_close(det.score_samples(X_test), gen_reference(X_test, *head, gamma, top_m), rtol)


@pytest.mark.parametrize("dtype, rtol", TOLERANCES)
@pytest.mark.parametrize("distance_as_normalizer", [True, False])
def test_fdbd_equals_reference(rng, dtype, rtol, distance_as_normalizer):
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(40, X.shape[1])), 0.0)
    det = _fit(FDBDDetector, X, y, head, dtype, distance_as_normalizer=distance_as_normalizer)
    _assert_close(det.score_samples(X_test),
                  fdbd_reference(X_test, X, *head, distance_as_normalizer), rtol)


@pytest.mark.parametrize("dtype, rtol", TOLERANCES)
@pytest.mark.parametrize("alpha", [0.0, 1e-4, 0.1])
def test_nci_equals_reference(rng, dtype, rtol, alpha):
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(40, X.shape[1])), 0.0)
    det = _fit(NCIDetector, X, y, head, dtype, alpha=alpha)
    np.testing.assert_allclose(det.train_mean_, X.mean(axis=0))
    _assert_close(det.score_samples(X_test), nci_reference(X_test, X, *head, alpha), rtol)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-9)])
def test_rmds_equals_reference(rng, dtype, rtol):
    # Fewer features than rows per class so that the covariances have full rank, and
    # correlated features so that the background differs from the class covariance.
    X, y, _ = _relu_problem(rng, n=300, d=12, k=4)
    X = X @ rng.normal(size=(12, 12)) + 3.0 * y[:, None]
    X_test = np.vstack([X[:20], rng.normal(size=(20, 12)) * X.std(axis=0) + X.mean(axis=0)])
    det = RMDSDetector(device="cpu", dtype=dtype, batch_size=16).fit(X, y)
    _assert_close(det.score_samples(X_test), rmds_reference(X_test, X, y), rtol)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf"])
def test_rmds_with_fewer_rows_than_features_equals_the_dense_formula(rng, covariance):
    """With fewer rows than features (item 16 of issue 23) RMDS scores from the spectra
    of the rows' span, without a (D, D) matrix: the same scores as the dense
    ``Sigma^{+1/2}`` of scikit-learn's estimators (the directions no row spans: ignored by
    the empirical covariance's pseudo-inverse, one shrunk eigenvalue for Ledoit-Wolf)."""
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    X, y, _ = _relu_problem(rng, n=40, d=60, k=3)
    X_test = np.vstack([X[:10], rng.normal(size=(10, 60)) + X.mean(axis=0)])
    det = RMDSDetector(covariance=covariance, device="cpu", dtype="float64").fit(X, y)
    Estimator = {"empirical": EmpiricalCovariance, "ledoit_wolf": LedoitWolf}[covariance]

    def precision(rows):
        sigma = Estimator(assume_centered=True).fit(rows).covariance_
        return np.linalg.pinv(sigma, hermitian=True, rcond=1e-10)

    means = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])
    within = precision(X - means[np.searchsorted(np.unique(y), y)])
    whole = precision(X - X.mean(axis=0))
    t0 = X_test - X.mean(axis=0)
    expected = np.einsum("ij,jk,ik->i", t0, whole, t0) - np.min(
        [np.einsum("ij,jk,ik->i", X_test - m, within, X_test - m) for m in means], axis=0)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(det.covariance_, Estimator(assume_centered=True).fit(
        X - means[np.searchsorted(np.unique(y), y)]).covariance_, atol=1e-10)


def test_rmds_is_background_distance_plus_twice_mahalanobis(rng):
    """The docstring's relation: RMDS = d_0 + 2 * Mahalanobis's score (-d_min / 2)."""
    X, y, _ = _relu_problem(rng, n=200, d=10, k=3)
    X_test = rng.normal(size=(30, 10))
    rmds = RMDSDetector(device="cpu", dtype="float64").fit(X, y)
    # The same covariance as RMDSDetector's default, on the raw rows.
    maha = MahalanobisDetector(covariance="empirical", normalize=False, device="cpu",
                               dtype="float64").fit(X, y)
    centred = X - X.mean(axis=0)
    background = np.einsum("ij,jk,ik->i", X_test - X.mean(axis=0),
                           np.linalg.pinv(centred.T @ centred / len(X)), X_test - X.mean(axis=0))
    np.testing.assert_allclose(rmds.score_samples(X_test),
                               background + 2 * maha.score_samples(X_test), rtol=1e-8)


# --------------------------------------------------------- official code vs paper
def test_openood_ash_row_is_ash_b_which_ranks_otherwise_than_the_default(rng):
    """OpenOOD's ASH row runs ash_b at percentile 90: ``variant='b'``. The default, the
    paper's ASH-S, is another score that ranks rows differently."""
    X, y, head = _relu_problem(rng)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(200, X.shape[1])), 0.0)
    default = ASHDetector(head=head, device="cpu", dtype="float64").fit(X, y)
    assert (default.variant, default.percentile) == ("s", 90)
    openood = ASHDetector(variant="b", head=head, device="cpu", dtype="float64").fit(X, y)
    np.testing.assert_allclose(openood.score_samples(X_test),
                               ash_reference(X_test, *head, "b", 90), rtol=1e-10)
    correlation = spearmanr(openood.score_samples(X_test), default.score_samples(X_test))[0]
    assert correlation < 0.99


def test_fdbd_sums_where_the_paper_averages(rng):
    """The official code sums the distances to the C - 1 boundaries where the paper
    averages them: (C - 1) times the paper's score, the same ranking."""
    X, y, head = _relu_problem(rng, k=7)
    X_test = np.maximum(rng.normal(0.3, 1.5, size=(60, X.shape[1])), 0.0)
    scores = FDBDDetector(head=head, device="cpu", dtype="float64").fit(X, y).score_samples(X_test)
    paper = fdbd_paper(X_test, X, *head)
    np.testing.assert_allclose(scores, 6 * paper, rtol=1e-10)
    np.testing.assert_array_equal(np.argsort(scores), np.argsort(paper))


def test_gen_top_m_is_capped_at_the_classes(rng):
    X, y, head = _relu_problem(rng)
    kw = dict(head=head, device="cpu", dtype="float64")
    all_classes = GENDetector(top_m=5, **kw).fit(X, y)
    np.testing.assert_array_equal(GENDetector(top_m=100, **kw).fit(X, y).score_samples(X),
                                  all_classes.score_samples(X))
    assert not np.allclose(GENDetector(top_m=2, **kw).fit(X, y).score_samples(X),
                           all_classes.score_samples(X))


@pytest.mark.parametrize("n_features, percentile, kept", [
    (64, 90, 6), (64, 85, 10), (10, 95, 1), (1, 90, 1), (7, 100, 1), (8, 0, 8),
    # n * p / 100 = 4.5 and 8.5: numpy rounds half to even, as the official code does.
    (10, 45, 6), (10, 85, 2),
])
def test_kept_activations_follow_the_official_count_and_keep_one(rng, n_features, percentile,
                                                                 kept):
    X = np.abs(rng.normal(size=(20, n_features)))
    head = (rng.normal(size=(3, n_features)), rng.normal(size=3))
    for Detector in (ASHDetector, SCALEDetector):
        det = Detector(percentile=percentile, head=head, device="cpu").fit(X)
        assert det.n_kept_ == kept
        assert np.isfinite(det.score_samples(X)).all()


# ------------------------------------------------------------------ edge rows
@pytest.mark.parametrize("Detector, params", [
    (SCALEDetector, {}), (ASHDetector, {"variant": "s"}), (ASHDetector, {"variant": "b"}),
    (ASHDetector, {"variant": "p"}),
])
def test_an_all_zero_row_scores_the_energy_of_the_bias(rng, Detector, params):
    """A dead row (every ReLU unit off) has logits b: the scaling s1 / s2 = 0 / 0 is
    taken as no scaling, where the official code gives NaN."""
    X, y, head = _relu_problem(rng)
    det = Detector(**params, head=head, device="cpu", dtype="float64").fit(X, y)
    score = det.score_samples(np.zeros((1, X.shape[1])))
    np.testing.assert_allclose(score, logsumexp(head[1]), rtol=1e-12)


def test_fdbd_row_at_the_training_mean_scores_its_limit(rng):
    """+inf (distances to the boundaries over a distance of 0), or 0 where the logits
    tie too (no NaN)."""
    X, y, (coef, intercept) = _relu_problem(rng)
    mean = X.mean(axis=0, keepdims=True)
    det = FDBDDetector(head=(coef, intercept), device="cpu", dtype="float64").fit(X, y)
    assert det.score_samples(mean)[0] == np.inf
    # Normalised by |v|: the all-zero row, whose logits are the bias, all equal here.
    det = FDBDDetector(False, head=(coef, np.ones(5)), device="cpu").fit(X, y)
    np.testing.assert_array_equal(det.score_samples(np.zeros_like(mean)), [0.0])


def test_nci_row_at_the_training_mean_has_no_proximity(rng):
    X, y, head = _relu_problem(rng)
    det = NCIDetector(alpha=0.01, head=head, device="cpu", dtype="float64").fit(X, y)
    mean = X.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(det.score_samples(mean), 0.01 * np.abs(mean).sum())


# ---------------------------------------------------------------- negative features
@pytest.mark.parametrize("Detector", [SCALEDetector, ASHDetector])
def test_negative_features_warn_once_at_fit(rng, Detector):
    """ASH and SCALE assume post-ReLU features; given negative ones they still score
    (what the formula gives: the reference's value) after one warning at fit."""
    X, y, head = _relu_problem(rng)
    X_signed = X - 0.3
    with pytest.warns(UserWarning, match="negative values") as record:
        det = Detector(head=head, device="cpu", dtype="float64").fit(X_signed, y)
    assert len([w for w in record if "negative values" in str(w.message)]) == 1
    assert record[0].filename == __file__  # points at the caller of fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scoring does not warn again
        scores = det.score_samples(X_signed[:20])
    if Detector is SCALEDetector:
        expected = scale_reference(X_signed[:20], *head, 85)
    else:
        expected = ash_reference(X_signed[:20], *head, "s", 90)
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


def test_negative_features_can_shrink_a_row_instead_of_sharpening_it(rng):
    """What the warning says: a row whose values sum to less than its kept values gets
    exp(s1 / s2) < 1 (s1 / s2 >= 1 for any non-negative row)."""
    X, y, head = _relu_problem(rng)
    row = np.full((1, X.shape[1]), -0.5)
    row[0, :10] = 1.0  # s1 = 10 - 27 = -17, s2 = 10 (SCALE keeps the 10 largest)
    with pytest.warns(UserWarning, match="negative values"):
        det = SCALEDetector(head=head, device="cpu", dtype="float64").fit(X - 0.3, y)
    expected = logsumexp(np.exp(-17 / 10) * (row @ head[0].T) + head[1], axis=1)
    np.testing.assert_allclose(det.score_samples(row), expected, rtol=1e-12)


@pytest.mark.parametrize("Detector", [SCALEDetector, ASHDetector])
def test_non_negative_features_do_not_warn(rng, Detector):
    X, y, head = _relu_problem(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Detector(head=head, device="cpu").fit(X, y)


@pytest.mark.parametrize("Detector", [GENDetector, FDBDDetector, NCIDetector])
def test_detectors_without_the_relu_assumption_do_not_warn(rng, Detector):
    X, y, head = _relu_problem(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Detector(head=head, device="cpu").fit(X - 0.3, y)


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("Detector", HEAD_DETECTORS)
def test_missing_labels_without_head_is_rejected(rng, Detector):
    X, _, _ = _relu_problem(rng)
    with pytest.raises(ValueError, match="requires y to be passed.*fit its head"):
        Detector(device="cpu").fit(X)


@pytest.mark.parametrize("Detector", HEAD_DETECTORS)
def test_a_fitted_head_needs_no_labels(rng, Detector):
    X, y, head = _relu_problem(rng)
    det = Detector(head=head, device="cpu", dtype="float64")
    np.testing.assert_allclose(clone(det).fit(X).score_samples(X),
                               clone(det).fit(X, y).score_samples(X))


def test_rmds_without_labels_or_with_one_class_is_rejected(rng):
    X, _, _ = _relu_problem(rng)
    with pytest.raises(ValueError, match="requires y to be passed.*needs class labels"):
        RMDSDetector(device="cpu").fit(X)
    with pytest.raises(ValueError, match="at least 2 classes in y; got 1 class"):
        RMDSDetector(device="cpu").fit(X, np.zeros(len(X), dtype=int))


def test_fdbd_refuses_a_head_with_two_identical_classes(rng):
    X, y, (coef, intercept) = _relu_problem(rng)
    coef[3] = coef[1]
    with pytest.raises(ValueError, match="weights of classes 1 and 3 are identical"):
        FDBDDetector(head=(coef, intercept), device="cpu").fit(X, y)


@pytest.mark.parametrize("Detector, params", [
    (SCALEDetector, {"percentile": 101}), (SCALEDetector, {"percentile": -1}),
    (ASHDetector, {"variant": "x"}), (GENDetector, {"gamma": 0}), (GENDetector, {"top_m": 0}),
    (FDBDDetector, {"distance_as_normalizer": "yes"}), (NCIDetector, {"alpha": -1.0}),
    (RMDSDetector, {"covariance": "shrunk"}),
])
def test_invalid_parameters_are_rejected(rng, Detector, params):
    X, y, _ = _relu_problem(rng)
    with pytest.raises(ValueError, match=f"'{next(iter(params))}' parameter"):
        Detector(**params, device="cpu").fit(X, y)


@pytest.mark.cuda
@pytest.mark.parametrize("Detector", [*HEAD_DETECTORS, RMDSDetector])
def test_cuda_scores_match_cpu(rng, Detector):
    X, y, head = _relu_problem(rng, n=300)
    kw = {} if Detector is RMDSDetector else {"head": head}
    cpu = Detector(**kw, device="cpu").fit(X, y)
    gpu = Detector(**kw, device="cuda").fit(X, y)
    assert gpu.device_.startswith("cuda")
    # float32 on two devices: the products round differently (RMDS's distances from
    # whitened products the most); the scores agree to float32's precision.
    scale = max(1.0, float(np.abs(cpu.score_samples(X)).max()))
    np.testing.assert_allclose(gpu.score_samples(X), cpu.score_samples(X), rtol=1e-4,
                               atol=1e-4 * scale)
    assert gpu.offset_ == pytest.approx(cpu.offset_, rel=1e-3, abs=1e-3 * scale)


# ---------------------------------------------------------------- model selection
@pytest.mark.parametrize("Detector", [*HEAD_DETECTORS, RMDSDetector])
def test_every_point_of_the_search_space_fits_and_scores(rng, Detector):
    X, y, head = _relu_problem(rng, n=200)
    grid = default_param_grid(Detector())
    assert grid == Detector.search_space and grid
    kw = {} if Detector is RMDSDetector else {"head": head}
    for point in ParameterGrid(grid):
        det = Detector(**point, **kw, device="cpu").fit(X, y)
        assert np.isfinite(det.score_samples(X[:10])).all(), point


# ------------------------------------------- sklearn's outlier checks (test_common.py)
class _HeadFor2Features:
    """A fitted linear classifier over the 2 features of sklearn's outlier checks."""

    coef_ = np.array([[1.0, -0.5], [-0.3, 0.8], [0.2, 0.1]])
    intercept_ = np.array([0.1, -0.2, 0.0])
    classes_ = np.array([0, 1, 2])


@pytest.mark.filterwarnings("ignore:.*negative values:UserWarning")
@pytest.mark.parametrize("Detector", HEAD_DETECTORS)
def test_fitted_head_detectors_pass_outlier_checks(Detector):
    """They fit on X alone, which needs a head that is already fitted."""
    estimator = Detector(head=_HeadFor2Features(), device="cpu")
    check_outliers_train(Detector.__name__, estimator)
    # check_outliers_fit_predict wants fit_predict == fit(X).predict(X); this suite's
    # fit_predict labels the rows by held-out scores instead (_expected_checks.py): it
    # flags the contamination of X.
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=300, random_state=0)
    labels = clone(estimator).set_params(contamination=0.1).fit_predict(X)
    assert np.mean(labels == -1) == pytest.approx(0.1, abs=0.02)
