"""HopfieldEnergyDetector (HE, SHE): scores against straightforward numpy formulas.

Formulas (Zhang et al., ICLR 2023): X_c = training rows with label c that the head
classifies as c; HE = (1/beta) lse(beta X_c v), SHE = v . mean(X_c), c the routed class;
energy='full' subtracts |v|^2 / 2.
"""

from functools import partial

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

from sklearn_reclag import HopfieldEnergyDetector as _HopfieldEnergyDetector
from sklearn_reclag.detectors import _banks

# The formulas of this module are those of the raw features: its detectors use
# metric='euclidean' unless a test says otherwise (the default, 'mahalanobis', scores in
# the whitened space: test_metric.py).
HopfieldEnergyDetector = partial(_HopfieldEnergyDetector, metric="euclidean")


@pytest.fixture(scope="module")
def data():
    """Three overlapping Gaussian classes (so the head gets some rows wrong) and test rows."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(3, 6))
    y = np.repeat([0, 1, 2], [40, 30, 50])
    X = centres[y] + rng.normal(size=(len(y), 6))
    X_test = rng.normal(scale=2.5, size=(25, 6))
    head = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, X_test, head


def _numpy_banks(X, y, head):
    """Stored patterns per class, computed with numpy from the head's coefficients."""
    predicted = np.argmax(X @ head.coef_.T + head.intercept_, axis=1)
    return [X[(y == c) & (predicted == c)] for c in range(3)]


def _numpy_route(per_class, routing, X_test, head, beta):
    """Route a (n_test, n_classes) matrix of (1/beta) lse values as the spec says."""
    if routing == "predicted":
        c_hat = np.argmax(X_test @ head.coef_.T + head.intercept_, axis=1)
        return per_class[np.arange(len(X_test)), c_hat]
    if routing == "max":
        return per_class.max(axis=1)
    return logsumexp(beta * per_class, axis=1) / beta


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
@pytest.mark.parametrize("energy", ["lse", "full"])
def test_he_score_equals_numpy_formula(data, routing, energy):
    """HE = (1/beta) lse(beta X_c v) [- |v|^2/2] over the stored patterns of the routed class."""
    X, y, X_test, head = data
    beta = 0.7
    det = HopfieldEnergyDetector(
        beta=beta, routing=routing, energy=energy, head=head, device="cpu", dtype="float64"
    ).fit(X, y)
    banks = _numpy_banks(X, y, head)
    per_class = np.stack([logsumexp(beta * X_test @ b.T, axis=1) / beta for b in banks], 1)
    expected = _numpy_route(per_class, routing, X_test, head, beta)
    if energy == "full":
        expected -= 0.5 * (X_test**2).sum(axis=1)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
def test_he_density_is_the_gaussian_mixture_log_density(data, routing):
    """energy='density' = (1/beta) lse(-beta |v - x|^2 / 2) over the routed class's patterns."""
    X, y, X_test, head = data
    beta = 0.7
    det = HopfieldEnergyDetector(
        beta=beta, routing=routing, energy="density", head=head, device="cpu",
        dtype="float64",
    ).fit(X, y)
    squared_distances = [((X_test[:, None, :] - b[None]) ** 2).sum(-1)
                         for b in _numpy_banks(X, y, head)]
    per_class = np.stack([logsumexp(-0.5 * beta * d2, axis=1) / beta
                          for d2 in squared_distances], 1)
    expected = _numpy_route(per_class, routing, X_test, head, beta)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
def test_she_score_equals_numpy_formula(data, routing):
    """SHE = v . m_c with m_c the mean of the stored patterns of the routed class."""
    X, y, X_test, head = data
    beta = 0.3
    det = HopfieldEnergyDetector(
        patterns="mean", beta=beta, routing=routing, energy="lse", head=head, device="cpu",
        dtype="float64",
    ).fit(X, y)
    means = np.stack([b.mean(axis=0) for b in _numpy_banks(X, y, head)])
    expected = _numpy_route(X_test @ means.T, routing, X_test, head, beta)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-10, atol=1e-10)


def test_float32_default_matches_float64(data):
    """The float32 default agrees with the float64 computation to float32 precision."""
    X, y, X_test, head = data
    s32 = HopfieldEnergyDetector(beta=0.5, head=head, device="cpu").fit(X, y)
    s64 = HopfieldEnergyDetector(beta=0.5, head=head, device="cpu", dtype="float64").fit(X, y)
    assert s32.memories_.dtype == np.float32
    np.testing.assert_allclose(
        s32.score_samples(X_test), s64.score_samples(X_test), rtol=1e-5, atol=1e-5
    )


def test_without_labels_one_bank_of_all_rows(data):
    """y=None and no head: one bank holding every row, no head fitted."""
    X, _, X_test, _ = data
    det = HopfieldEnergyDetector(beta=0.4, energy="lse", device="cpu", dtype="float64").fit(X)
    assert det.memories_.shape == (1, len(X), X.shape[1])
    assert det.head_coef_ is None and det.classes_ is None
    expected = logsumexp(0.4 * X_test @ X.T, axis=1) / 0.4
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-10)


def test_without_labels_a_fitted_head_gives_the_labels(data):
    """y=None with a fitted head: the head's predictions are the labels (all rows stored)."""
    X, _, X_test, head = data
    det = HopfieldEnergyDetector(beta=0.4, head=head, device="cpu", dtype="float64").fit(X)
    predicted = head.predict(X)
    assert det.memory_mask_.sum(axis=1).tolist() == np.bincount(predicted).tolist()


def test_chunked_scoring_bounds_memory_and_matches(data, monkeypatch, product_sizes):
    """Tiny chunks of rows and of stored patterns give the same scores, and no product
    larger than the budget is built while scoring (a chunk of 7 rows x 3 classes = 21
    logits is the smallest block routing='max' can use)."""
    X, y, X_test, head = data
    for routing in ("predicted", "max"):
        whole = HopfieldEnergyDetector(beta=0.5, routing=routing, head=head, device="cpu",
                                       dtype="float64")
        expected = whole.fit(X, y).score_samples(X_test)
        chunked = HopfieldEnergyDetector(beta=0.5, routing=routing, head=head, device="cpu",
                                         dtype="float64", batch_size=7).fit(X, y)
        product_sizes.clear()
        with monkeypatch.context() as patch:
            patch.setattr(_banks, "_SCORE_BLOCK", 30)
            np.testing.assert_allclose(chunked.score_samples(X_test), expected, rtol=1e-10)
        assert product_sizes and max(product_sizes) <= 30


def test_max_patterns_subsamples_each_bank_reproducibly(data):
    """max_patterns keeps at most that many stored patterns per class, seeded."""
    X, y, _, head = data
    fit = lambda seed: HopfieldEnergyDetector(  # noqa: E731
        max_patterns=10, head=head, random_state=seed, device="cpu", dtype="float64"
    ).fit(X, y)
    det = fit(0)
    banks = _numpy_banks(X, y, head)
    assert det.memory_mask_.sum(axis=1).tolist() == [min(10, len(b)) for b in banks]
    for c, bank in enumerate(banks):
        kept = det.memories_[c][det.memory_mask_[c]]
        # every kept pattern is one of the class's stored patterns
        assert np.isclose(kept[:, None, :], bank[None]).all(axis=2).any(axis=1).all()
    np.testing.assert_array_equal(fit(0).memories_, det.memories_)
    assert not np.array_equal(fit(1).memories_, det.memories_)


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
@pytest.mark.parametrize("X_dtype", [np.float32, np.float64])
def test_banks_kept_as_rows_score_as_padded_banks(data, routing, X_dtype):
    """HE keeps its per-class banks as the training rows and the row of each slot (no
    copy where X has the detector's dtype); they score, and are, the padded banks."""
    import pickle

    X, y, X_test, head = data
    X = np.ascontiguousarray(X, dtype=X_dtype)
    det = HopfieldEnergyDetector(beta=0.5, routing=routing, head=head, max_patterns=25,
                                 random_state=0, device="cpu").fit(X, y)
    assert np.shares_memory(det.bank_rows_, X) == (X_dtype == np.float32)
    stored = np.flatnonzero((X @ head.coef_.T + head.intercept_).argmax(axis=1) == y)
    order = np.random.RandomState(0).permutation(len(stored))  # max_patterns' draw
    padded, mask = _banks.pad_banks(X.astype(np.float32), y[stored], 3, max_rows=25,
                                    order=order, rows=stored)
    np.testing.assert_array_equal(det.memories_, padded)
    np.testing.assert_array_equal(det.memory_mask_, mask)
    dense = pickle.loads(pickle.dumps(det))
    dense._set_banks(mask, memories=padded)
    np.testing.assert_allclose(det.score_samples(X_test), dense.score_samples(X_test),
                               rtol=1e-6)
    loaded = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(loaded.score_samples(X_test), det.score_samples(X_test))


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
@pytest.mark.parametrize("energy", ["lse", "density"])
def test_offset_is_contamination_quantile_of_leave_one_out_scores(data, routing, energy):
    """offset_ is the `contamination` quantile of the training rows' scores, each stored
    row scored without its own copy (as a new row would be): numpy reference."""
    X, y, _, head = data
    beta = 0.5
    det = HopfieldEnergyDetector(beta=beta, routing=routing, energy=energy, head=head,
                                 contamination=0.1, device="cpu", dtype="float64").fit(X, y)
    logits = X @ head.coef_.T + head.intercept_
    predicted = logits.argmax(axis=1)
    stored = predicted == y
    loo = np.empty(len(X))
    for i, v in enumerate(X):
        per_class = []
        for c in range(3):
            keep = stored & (y == c)
            keep[i] = False  # its own copy, if it is stored
            bank = X[keep]
            bias = -0.5 * (bank**2).sum(axis=1) if energy == "density" else 0.0
            per_class.append(logsumexp(beta * bank @ v + beta * bias) / beta)
        loo[i] = _numpy_route(np.array([per_class]), routing, v[None], head, beta)[0]
        if energy == "density":
            loo[i] -= 0.5 * v @ v
    np.testing.assert_allclose(det.offset_, np.percentile(loo, 10), rtol=1e-9)
    np.testing.assert_allclose(det.decision_function(X), det.score_samples(X) - det.offset_)
    # In-sample, each stored row sees itself: predict rejects fewer than 10 % of them.
    assert (det.predict(X) == -1).mean() < 0.1


def test_class_never_classified_correctly_stores_all_its_rows():
    """A class the head never gets right keeps all its rows (with a warning), not -inf."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    y = np.repeat([0, 1, 2], 10)
    coef = np.array([[1.0, 0, 0], [0, 1.0, 0], [-50.0, -50.0, -50.0]])
    head = (coef, np.array([0.0, 0.0, -1e3]))
    with pytest.warns(UserWarning, match="correctly"):
        det = HopfieldEnergyDetector(head=head, device="cpu").fit(X, y)
    assert det.memory_mask_[2].sum() == 10
    assert np.isfinite(det.score_samples(X)).all()


@pytest.mark.parametrize(
    "params, X_change, y_change, match",
    [
        ({"beta": 0.0}, None, None, "beta"),
        ({"beta": -1.0}, None, None, "beta"),
        ({"routing": "nearest"}, None, None, "routing"),
        ({}, "nan", None, "NaN"),
        ({}, None, "single", "1 sample"),
    ],
)
def test_bad_input_raises_clear_error(data, params, X_change, y_change, match):
    """Invalid parameters, NaN features and a class with one row are refused clearly."""
    X, y, _, _ = data
    X, y = X.copy(), y.copy()
    if X_change == "nan":
        X[3, 2] = np.nan
    if y_change == "single":
        y[0] = 7
    with pytest.raises(ValueError, match=match):
        HopfieldEnergyDetector(device="cpu", **params).fit(X, y)


def test_wrong_number_of_features_at_score_time(data):
    X, y, _, head = data
    det = HopfieldEnergyDetector(head=head, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(X[:, :4])


@pytest.mark.cuda
def test_cuda_scores_equal_cpu_scores(data):
    """The CUDA path computes the same scores as the CPU path, and refuses NaN (checked
    on the device) with the same kind of error."""
    X, y, X_test, head = data
    cpu = HopfieldEnergyDetector(beta=0.5, head=head, device="cpu", dtype="float64").fit(X, y)
    gpu = HopfieldEnergyDetector(beta=0.5, head=head, device="cuda", dtype="float64").fit(X, y)
    assert gpu.device_.startswith("cuda")
    np.testing.assert_allclose(gpu.score_samples(X_test), cpu.score_samples(X_test), rtol=1e-9)
    X_bad = X_test.copy()
    X_bad[-1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        gpu.score_samples(X_bad)


