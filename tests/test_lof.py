"""LOFDetector: the local outlier factor against a numpy reference and scikit-learn, its
threshold, the reference-set cap, duplicates, offsets and bad input (the contract shared
by every estimator is in test_common.py)."""

import warnings

import numpy as np
import pytest
from sklearn.neighbors import LocalOutlierFactor

from sklearn_reclag import OOD_LABEL, LOFDetector


def lof_reference(Q, X, k):
    """-LOF(q) of Breunig et al. (2000), Definitions 3-7, from full distance matrices."""
    def distances(A, B):
        return np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=2))

    train = distances(X, X)
    np.fill_diagonal(train, np.inf)  # a training row is not its own neighbour
    train_nearest = np.argsort(train, axis=1)[:, :k]
    k_dist = np.take_along_axis(train, train_nearest, axis=1)[:, -1]

    def lrd(dist, nearest):
        reach = np.maximum(np.take_along_axis(dist, nearest, axis=1), k_dist[nearest])
        return 1.0 / (reach.mean(axis=1) + 1e-10)

    train_lrd = lrd(train, train_nearest)
    query = distances(Q, X)
    query_nearest = np.argsort(query, axis=1)[:, :k]
    own = train_lrd[train_nearest].mean(axis=1) / train_lrd
    return -train_lrd[query_nearest].mean(axis=1) / lrd(query, query_nearest), -own


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    # two clusters of different spread: where LOF and a plain k-NN distance differ
    X = np.r_[rng.normal(0, 1, size=(150, 6)), rng.normal(6, 0.2, size=(150, 6))]
    Q = np.r_[rng.normal(0, 1.5, size=(40, 6)), rng.normal(6, 0.6, size=(40, 6))]
    return X, Q


@pytest.mark.parametrize("k", [1, 5, 20])
def test_scores_equal_numpy_reference_and_sklearn(data, k):
    X, Q = data
    det = LOFDetector(k, normalize=False, dtype="float64", device="cpu").fit(X)
    expected, own = lof_reference(Q, X, k)
    np.testing.assert_allclose(det.score_samples(Q), expected, rtol=1e-9)
    sklearn_lof = LocalOutlierFactor(k, novelty=True, algorithm="brute").fit(X)
    np.testing.assert_allclose(det.score_samples(Q), sklearn_lof.score_samples(Q), rtol=1e-9)
    # the threshold is the contamination quantile of the rows' own (leave-one-out) factors
    np.testing.assert_allclose(own, sklearn_lof.negative_outlier_factor_, rtol=1e-9)
    assert np.mean(own <= det.offset_) == pytest.approx(0.05, abs=0.01)


def test_float32_close_to_float64(data):
    X, Q = data
    s32 = LOFDetector(10, normalize=False, device="cpu").fit(X).score_samples(Q)
    s64 = LOFDetector(10, normalize=False, dtype="float64", device="cpu").fit(X).score_samples(Q)
    np.testing.assert_allclose(s32, s64, rtol=1e-4)


def test_normalize_scores_the_unit_rows(data):
    X, Q = data
    X, Q = np.abs(X), np.abs(Q)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    det = LOFDetector(7, normalize=True, dtype="float64", device="cpu").fit(X)
    np.testing.assert_allclose(det.score_samples(Q), lof_reference(unit(Q), unit(X), 7)[0],
                               rtol=1e-9)


def test_large_common_offset_keeps_the_scores(data):
    # Distances do not change under a shift; the rows are centred before the search, so
    # float32 keeps the ranking of rows offset by 1e4.
    X, Q = data
    plain = LOFDetector(10, normalize=False, device="cpu").fit(X).score_samples(Q)
    shifted = LOFDetector(10, normalize=False, device="cpu").fit(X + 1e4).score_samples(Q + 1e4)
    expected = lof_reference(Q, X, 10)[0]
    assert np.corrcoef(shifted, expected)[0, 1] > 0.999
    np.testing.assert_allclose(plain, expected, rtol=1e-4)


def test_accepts_new_rows_at_the_asked_rate():
    rng = np.random.default_rng(1)
    X, new = rng.normal(size=(2000, 8)), rng.normal(size=(4000, 8))
    det = LOFDetector(20, device="cpu").fit(X)
    assert np.mean(det.predict(new) == 1) == pytest.approx(0.95, abs=0.03)


def test_max_samples_caps_the_reference_rows(data):
    X, Q = data
    det = LOFDetector(5, max_samples=100, random_state=0, device="cpu").fit(X)
    assert det.train_rows_.shape == (100, X.shape[1])
    same = LOFDetector(5, max_samples=100, random_state=0, device="cpu").fit(X)
    np.testing.assert_array_equal(det.score_samples(Q), same.score_samples(Q))
    full = LOFDetector(5, max_samples=None, device="cpu").fit(X)
    assert full.train_rows_.shape == X.shape


def test_ood_rows_are_left_out(data):
    X, Q = data
    y = np.r_[np.zeros(len(X), dtype=int), np.full(len(Q), OOD_LABEL)]
    with_ood = LOFDetector(5, device="cpu").fit(np.r_[X, Q], y)
    plain = LOFDetector(5, device="cpu").fit(X)
    np.testing.assert_array_equal(with_ood.score_samples(Q), plain.score_samples(Q))


def test_too_few_rows_for_n_neighbors_warns_and_uses_n_minus_one(data):
    X, _ = data
    with pytest.warns(UserWarning, match="n_neighbors will be set to"):
        det = LOFDetector(50, device="cpu").fit(X[:10])
    assert det.n_neighbors_ == 9


def test_many_duplicates_warn_with_the_fix():
    rng = np.random.default_rng(2)
    X = np.repeat(rng.normal(size=(30, 4)), 4, axis=0)  # every row 4 times
    with pytest.warns(UserWarning, match="raise n_neighbors"):
        LOFDetector(2, device="cpu").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # more neighbours than repeats: no warning
        det = LOFDetector(10, normalize=False, device="cpu").fit(X)
    assert np.isfinite(det.score_samples(X)).all()
    assert np.mean(det.predict(X) == 1) == pytest.approx(0.95, abs=0.05)


def test_one_row_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        LOFDetector(device="cpu").fit(np.ones((1, 3)))


def test_normalize_auto_normalises_unless_the_rows_are_centred(data):
    X, Q = data
    centred = X - X.mean(axis=0)
    assert not LOFDetector(5, device="cpu").fit(centred).normalize_
    assert LOFDetector(5, device="cpu").fit(np.abs(X)).normalize_
    auto = LOFDetector(5, device="cpu").fit(centred)
    explicit = LOFDetector(5, normalize=False, device="cpu").fit(centred)
    np.testing.assert_array_equal(auto.score_samples(Q), explicit.score_samples(Q))


@pytest.mark.parametrize("normalize", [True, False])
def test_faiss_search_gives_the_brute_scores(data, normalize):
    pytest.importorskip("faiss")
    X, Q = data
    brute = LOFDetector(5, normalize=normalize, algorithm="brute", device="cpu").fit(X)
    fast = LOFDetector(5, normalize=normalize, algorithm="faiss", device="cpu").fit(X)
    assert (brute.algorithm_, fast.algorithm_) == ("brute", "faiss")
    # Both searches rank by the expanded |z|^2 - 2 z.x + |x|^2, whose float32 rounding
    # (a few eps times |x|^2) can swap neighbours tied that closely (the tight cluster
    # here): the k-th squared distances then differ by that rounding alone.
    eps, sq_norms = np.finfo(np.float32).eps, np.max(np.sum(fast.train_rows_**2, axis=1))
    np.testing.assert_allclose(fast.k_distances_**2, brute.k_distances_**2, rtol=0,
                               atol=16 * eps * sq_norms)
    same = np.isclose(fast.k_distances_, brute.k_distances_, rtol=1e-6)
    assert same.mean() >= 0.98
    np.testing.assert_allclose(fast.score_samples(Q), brute.score_samples(Q), rtol=1e-3)
    # 'auto' takes faiss on the CPU in float32, the torch search in float64.
    assert LOFDetector(5, device="cpu").fit(X).algorithm_ == "faiss"
    assert LOFDetector(5, device="cpu", dtype="float64").fit(X).algorithm_ == "brute"


def test_faiss_in_float64_warns_and_searches_with_torch(data):
    pytest.importorskip("faiss")
    X, Q = data
    with pytest.warns(UserWarning, match="algorithm='brute'.*dtype='float32'"):
        det = LOFDetector(5, normalize=False, algorithm="faiss", dtype="float64",
                          device="cpu").fit(X)
    assert det.algorithm_ == "brute"
    np.testing.assert_allclose(det.score_samples(Q), lof_reference(Q, X, 5)[0], rtol=1e-9)
