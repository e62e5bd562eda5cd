"""ViMDetector: the official formulas, the choice of n_components, bad input,
labels and model selection (the contract shared by every estimator is in
test_common.py)."""

import numpy as np
import pytest
from numpy.linalg import norm, pinv
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_reclag import OOD_LABEL, ViMDetector
from sklearn_reclag.metrics import fpr95_scorer


def _problem(rng, n=300, d=16, k=4):
    """ReLU-like rows with a low-rank structure plus noise, and a head."""
    latent = rng.normal(size=(n, 5)) @ rng.normal(size=(5, d))
    X = np.maximum(latent + 0.3 * rng.normal(size=(n, d)), 0)
    y = rng.integers(0, k, size=n)
    coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
    return X, y, (coef, intercept)


# ---------------------------------------------------------------- reference formula
def vim_reference(X_test, X_train, coef, intercept, dim, rcond=1e-15):
    """The authors' benchmark.py, step by step (EmpiricalCovariance, np.linalg.eig).

    ``rcond``: the pseudo-inverse's cut-off; numpy's default 1e-15, the authors', inverts
    a rank-deficient (softmax) head's rounding, which the suite does not (see
    test_default_head_is_softmax_regression)."""
    u = -np.matmul(pinv(coef, rcond=rcond), intercept)
    ec = EmpiricalCovariance(assume_centered=True).fit(X_train - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T)
    vlogit_train = norm(np.matmul(X_train - u, NS), axis=-1)
    alpha = (X_train @ coef.T + intercept).max(axis=-1).mean() / vlogit_train.mean()
    vlogit = norm(np.matmul(X_test - u, NS), axis=-1) * alpha
    return logsumexp(X_test @ coef.T + intercept, axis=-1) - vlogit, alpha, u


@pytest.mark.parametrize("n_components", [1, 6, 12])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_scores_equal_official_formulas(rng, n_components, dtype, rtol):
    X, y, head = _problem(rng)
    X_test = np.vstack([_problem(rng, n=50)[0], 3 * rng.random((20, X.shape[1]))])
    expected, alpha, origin = vim_reference(X_test, X, *head, n_components)
    det = ViMDetector(n_components, head=head, device="cpu", dtype=dtype, batch_size=16)
    det.fit(X, y)
    assert det.n_components_ == n_components
    assert det.alpha_ == pytest.approx(alpha, rel=1e-9)
    np.testing.assert_allclose(det.origin_, origin, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


def test_principal_space_is_orthonormal_and_spans_the_largest_eigenvalues(rng):
    X, y, head = _problem(rng)
    det = ViMDetector(6, head=head, device="cpu").fit(X, y)
    P = det.principal_space_
    assert P.shape == (16, 6)
    np.testing.assert_allclose(P.T @ P, np.eye(6), atol=1e-10)
    centred = X - det.origin_
    second_moment = centred.T @ centred / len(X)
    eigenvalues = np.linalg.eigvalsh(second_moment)  # ascending
    # The Rayleigh quotients on P are the 6 largest eigenvalues.
    np.testing.assert_allclose(np.sort(np.diag(P.T @ second_moment @ P)),
                               eigenvalues[-6:], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("n_rows", [10, 200], ids=["fewer rows than features", "more"])
def test_residual_is_that_of_the_authors_complement_basis(rng, n_rows):
    """``||z - P P^T z||`` equals the authors' ``||z P_perp||`` (P_perp the eigenvectors
    of the D - d smallest eigenvalues of the (D, D) moment), on either path of the fit:
    the SVD of the rows when they are fewer than the features, the (D, D) moment
    otherwise."""
    X, y, head = _problem(rng)
    X, y = X[:n_rows], y[:n_rows]
    det = ViMDetector(4, head=head, device="cpu", dtype="float64").fit(X, y)
    centred = X - det.origin_
    _, vectors = np.linalg.eigh(centred.T @ centred / len(X))
    perp = vectors[:, : 16 - 4]
    Z = rng.normal(size=(30, 16))
    expected = np.linalg.norm((Z - det.origin_) @ perp, axis=1)
    energy = np.log(np.exp(Z @ head[0].T + head[1]).sum(axis=1))
    np.testing.assert_allclose(det.score_samples(Z), energy - det.alpha_ * expected,
                               rtol=1e-9, atol=1e-9)


def test_default_head_is_softmax_regression(rng):
    X, y, _ = _problem(rng)
    reference = LogisticRegression(max_iter=1000).fit(X, y)
    det = ViMDetector(device="cpu", dtype="float64").fit(X, y)
    np.testing.assert_allclose(det.head_coef_, reference.coef_)
    # A softmax head is rank-deficient (its class weights sum to zero); its null
    # direction's singular value, 1e-15 of the largest in float64, is rounding, which
    # the authors' pinv (rcond=1e-15) inverts and the suite drops (max(C, D) * eps).
    rcond = max(reference.coef_.shape) * np.finfo(np.float64).eps
    expected = vim_reference(X[:30], X, reference.coef_, reference.intercept_, 8,
                             rcond=rcond)[0]
    np.testing.assert_allclose(det.score_samples(X[:30]), expected, rtol=1e-9)


def test_fitted_head_needs_no_labels(rng):
    X, y, head = _problem(rng)
    with_y = ViMDetector(head=head, device="cpu").fit(X, y)
    without_y = ViMDetector(head=head, device="cpu").fit(X)
    np.testing.assert_array_equal(with_y.score_samples(X), without_y.score_samples(X))


# ------------------------------------------------------------------ n_components
@pytest.mark.parametrize("n_features, expected", [
    (1, 1), (2, 1), (7, 3), (64, 32), (512, 256), (767, 383), (768, 512), (1024, 512),
    (1499, 512), (1500, 1000), (2048, 1000),
])
def test_default_n_components_follows_the_paper(n_features, expected):
    resolve = ViMDetector()._resolve_n_components
    if expected >= n_features:
        with pytest.raises(ValueError, match=f"gives {expected}, which must be smaller than "
                                             f"n_features={n_features}"):
            resolve(np.ones(n_features))
    else:
        assert resolve(np.ones(n_features)) == expected


def test_fractional_n_components_explains_that_fraction_of_the_trace(rng):
    X, y, head = _problem(rng)
    det = ViMDetector(0.9, head=head, device="cpu").fit(X, y)
    centred = X - det.origin_
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(X)))[::-1]
    explained = np.cumsum(eigenvalues) / eigenvalues.sum()
    d = det.n_components_
    assert explained[d - 1] > 0.9 >= explained[d - 2]
    assert det.principal_space_.shape == (16, d)


@pytest.mark.parametrize("n_components", [16, 40])
def test_n_components_not_below_n_features_is_rejected(rng, n_components):
    X, y, head = _problem(rng)
    with pytest.raises(ValueError, match=f"n_components={n_components} must be smaller "
                                         "than n_features=16"):
        ViMDetector(n_components, head=head, device="cpu").fit(X, y)


def test_fraction_that_needs_every_component_keeps_all_but_one(rng):
    """0.999 of an isotropic trace needs all 4 components; a fraction is a target, so ViM
    keeps the most that leaves a residual (3) instead of failing on few features."""
    X = rng.normal(size=(200, 4))
    head = (rng.normal(size=(3, 4)), rng.normal(size=3))
    det = ViMDetector(0.999, head=head, device="cpu").fit(X)
    assert det.n_components_ == 3 and det.principal_space_.shape == (4, 3)


@pytest.mark.parametrize("bad", [0, -1, 1.0, 1.5, "all"])
def test_invalid_n_components_is_rejected(rng, bad):
    X, y, head = _problem(rng)
    with pytest.raises(ValueError, match="n_components"):
        ViMDetector(bad, head=head, device="cpu").fit(X, y)


def test_no_residual_in_the_training_rows_is_rejected(rng):
    """With fewer rows than components, X - u lies in the principal subspace: the mean
    residual is rounding and alpha would be meaningless."""
    X, y, head = _problem(rng, n=5)
    with pytest.raises(ValueError, match="no residual outside the 8-dimensional"):
        ViMDetector(8, head=head, device="cpu").fit(X, y)


def test_negative_alpha_warns(rng):
    X, y, (coef, intercept) = _problem(rng)
    with pytest.warns(UserWarning, match="alpha is -"):
        det = ViMDetector(4, head=(coef, intercept - 100), device="cpu").fit(X, y)
    assert det.alpha_ < 0


# ------------------------------------------------------------------------ contract
@pytest.mark.parametrize(
    "head, message",
    [
        ((np.ones((3, 5)), np.zeros(3)), r"coef has shape \(3, 5\), expected \(n_classes, 16\)"),
        ((np.ones((4, 16)), np.zeros(3)), r"intercept has shape \(3,\), expected \(4,\)"),
    ],
)
def test_head_shape_mismatch_is_rejected(rng, head, message):
    X, y, _ = _problem(rng)
    with pytest.raises(ValueError, match=message):
        ViMDetector(head=head, device="cpu").fit(X, y)


def test_missing_labels_without_head_is_rejected(rng):
    X, _, _ = _problem(rng)
    with pytest.raises(ValueError, match="requires y to be passed"):
        ViMDetector(device="cpu").fit(X)


def test_fit_chunks_give_the_same_model(rng, monkeypatch):
    from sklearn_reclag.detectors import vim

    X, y, head = _problem(rng)
    whole = ViMDetector(head=head, device="cpu").fit(X, y)
    monkeypatch.setattr(vim, "_FIT_ROWS", 7)
    chunked = ViMDetector(head=head, device="cpu").fit(X, y)
    assert chunked.alpha_ == pytest.approx(whole.alpha_, rel=1e-12)
    np.testing.assert_allclose(np.abs(chunked.principal_space_.T @ whole.principal_space_),
                               np.eye(8), atol=1e-8)


# ------------------------------------------------- float32 and float64 copies agree
def _float32_tolerance(outputs, n_features):
    """float32 rounding of a score summed over the features (as in test_common.py)."""
    return 8 * np.sqrt(n_features) * np.finfo(np.float32).eps * max(
        1.0, float(np.max(np.abs(outputs))))


def _assert_copies_agree(det32, det64, X_test, score_tol, origin_tol):
    """origin_ and the scores within the tolerances; predict equal on every row whose
    decision is farther than ``score_tol`` from the threshold."""
    np.testing.assert_allclose(det32.origin_, det64.origin_, rtol=0, atol=origin_tol)
    X32 = X_test.astype(np.float32)
    np.testing.assert_allclose(det32.score_samples(X32), det64.score_samples(X_test),
                               rtol=0, atol=score_tol)
    decided = np.abs(det64.decision_function(X_test)) > 2 * score_tol
    assert decided.mean() > 0.9  # the test compares most rows
    np.testing.assert_array_equal(det32.predict(X32)[decided],
                                  det64.predict(X_test)[decided])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_and_float64_copies_agree_with_a_softmax_head(digits_split, dtype):
    """A softmax regression's weights sum to zero over the classes: W is rank-deficient,
    and in float32 that direction's singular value is rounding (1e-7 relative), which
    the pseudo-inverse must not invert (issue 23 item 17: origin_ -8 against 0, scores
    3 apart, 2-3 % of the predictions flipped). The same rows and head in float32 and
    float64 give the same model to float32's precision."""
    X_id, y_id, X_ood = digits_split
    X_test = np.vstack([X_id[::3], X_ood[::3]])
    softmax = LogisticRegression(max_iter=1000).fit(X_id, y_id)
    assert np.abs(softmax.coef_.sum(axis=0)).max() < 1e-10  # rank-deficient
    head64 = (softmax.coef_, softmax.intercept_)
    head32 = tuple(a.astype(np.float32) for a in head64)
    det32 = ViMDetector(head=head32, device="cpu", dtype=dtype).fit(
        X_id.astype(np.float32), y_id)
    det64 = ViMDetector(head=head64, device="cpu", dtype=dtype).fit(X_id, y_id)
    tol = _float32_tolerance(det64.score_samples(X_test), X_id.shape[1])
    _assert_copies_agree(det32, det64, X_test, score_tol=tol,
                         origin_tol=_float32_tolerance(det64.origin_, X_id.shape[1]))


def test_float32_and_float64_copies_agree_with_the_default_head(digits_split):
    """ViMDetector() on float32 and float64 copies of the same rows (as the issue found
    them). The two default heads are lbfgs solutions in two precisions, equal to its
    tolerance (tol=1e-4), not to float32's: the model agrees to that, 1e-3 of the scores'
    scale (the rank-deficient pseudo-inverse moved the scores by 2 of 18)."""
    X_id, y_id, X_ood = digits_split
    X_test = np.vstack([X_id[::3], X_ood[::3]])
    det32 = ViMDetector(device="cpu").fit(X_id.astype(np.float32), y_id)
    det64 = ViMDetector(device="cpu").fit(X_id, y_id)
    scale = np.abs(det64.score_samples(X_test)).max()
    _assert_copies_agree(det32, det64, X_test, score_tol=1e-3 * scale,
                         origin_tol=1e-3 * max(1.0, np.abs(det64.origin_).max()))


def test_origin_drops_singular_values_below_the_heads_precision():
    """head_origin inverts W's singular values above max(C, D) eps sigma_max only, eps
    the head's precision: a null direction rounded to 1e-7 in float32 is dropped, and
    the origin is the float64 minimum-norm solution; a full-rank head's origin is the
    ordinary pseudo-inverse's."""
    from sklearn_reclag.detectors.vim import head_origin

    rng = np.random.default_rng(0)
    coef = rng.normal(size=(5, 12))
    coef -= coef.mean(axis=0)  # columns sum to zero: rank 4
    intercept = rng.normal(size=5)
    intercept -= intercept.mean()
    exact = -pinv(coef) @ intercept
    rounded = coef.astype(np.float32).astype(np.float64)
    eps32 = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(head_origin(rounded, intercept, precision=eps32), exact,
                               atol=1e-5)
    # numpy's float64 cut-off inverts the rounding: the origin it gives is far off.
    assert np.abs(-pinv(rounded) @ intercept - exact).max() > 1e-2
    full_rank = rng.normal(size=(5, 12))
    np.testing.assert_allclose(head_origin(full_rank, intercept, precision=eps32),
                               -pinv(full_rank) @ intercept, rtol=1e-10)


@pytest.mark.slow
def test_search_space_drives_grid_search(digits_split):
    X_id, y_id, X_ood = digits_split
    X = np.vstack([X_id, X_ood])
    y = np.r_[y_id, np.full(len(X_ood), OOD_LABEL)]
    search = GridSearchCV(ViMDetector(device="cpu"), ViMDetector.search_space,
                          scoring=fpr95_scorer, cv=KFold(3, shuffle=True, random_state=0))
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all((scores <= 0) & (scores >= -1))


# ------------------------------------------- sklearn's outlier checks (test_common.py)
# They fit on X alone, which ViM can only do given a fitted head.
class _HeadFor2Features:
    """A fitted linear classifier over the 2 features of sklearn's outlier checks."""

    coef_ = np.array([[1.0, -0.5], [-0.3, 0.8], [0.2, 0.1]])
    intercept_ = np.array([0.1, -0.2, 0.0])
    classes_ = np.array([0, 1, 2])


def test_fitted_head_fits_on_x_alone_with_a_held_out_threshold():
    """With a fitted head ViM fits on X alone. Its principal subspace is learned from X,
    so offset_ comes from cross-fitted scores: new rows of the training distribution
    are accepted at 1 - contamination, the training rows themselves at least as often
    (sklearn's check_outliers_train asks for exactly that fraction of the training
    rows: an expected failure in test_common.py)."""
    rng = np.random.default_rng(0)
    # Anisotropic, so that the principal subspace is the same in every fold.
    X, X_new = rng.normal(size=(300, 2)) * [3.0, 1.0], rng.normal(size=(20000, 2)) * [3.0, 1.0]
    det = ViMDetector(head=_HeadFor2Features(), contamination=0.1, device="cpu").fit(X)
    assert np.mean(det.predict(X_new) == 1) == pytest.approx(0.9, abs=0.03)
    assert np.mean(det.predict(X) == 1) >= 0.9 - 1 / len(X)


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cuda_scores_match_cpu(rng):
    X, y, head = _problem(rng)
    cpu = ViMDetector(head=head, device="cpu", dtype="float64").fit(X, y)
    gpu = ViMDetector(head=head, device="cuda").fit(X, y)
    assert gpu.device_.startswith("cuda")
    assert gpu.alpha_ == pytest.approx(cpu.alpha_)
    expected = cpu.score_samples(X)
    np.testing.assert_allclose(gpu.score_samples(X), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        gpu.score_samples(X)
