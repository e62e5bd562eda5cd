"""KNNDetector (deep KNN): exact scores, the leave-one-out threshold, bounded blocks,
labels and bad input (the contract shared by every estimator is in test_common.py)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize as l2_normalize

from sklearn_reclag import OOD_LABEL, KNNDetector
from sklearn_reclag.detectors import knn
from sklearn_reclag.metrics import fpr95_scorer


def _relu_rows(rng, n, d=12):
    """Non-negative rows with a few exact zeros, like a network's ReLU features."""
    return np.maximum(rng.normal(0.3, 1.0, size=(n, d)), 0)


# ---------------------------------------------------------------- reference formula
def knn_reference(X_test, X_train, k, normalize=True):
    """-||z - z_(k)|| by a full numpy distance matrix and a sort."""
    def unit(A):
        norms = np.linalg.norm(A, axis=1, keepdims=True)
        return A / np.where(norms > 0, norms, 1)

    Z, T = (unit(X_test), unit(X_train)) if normalize else (X_test, X_train)
    distances = np.sqrt(((Z[:, None, :] - T[None, :, :]) ** 2).sum(axis=2))
    return -np.sort(distances, axis=1)[:, k - 1]


def loo_reference(X_train, k, normalize=True):
    """Each training row's score against the other training rows."""
    return np.array([
        knn_reference(X_train[i:i + 1], np.delete(X_train, i, axis=0), k, normalize)[0]
        for i in range(len(X_train))
    ])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("k", [1, 7, 60])
@pytest.mark.parametrize("dtype, atol", [("float64", 1e-12), ("float32", 1e-6)])
def test_scores_equal_numpy_reference(rng, monkeypatch, k, normalize, dtype, atol):
    X_train, X_test = _relu_rows(rng, 90), _relu_rows(rng, 40)
    X_test[:5] = X_train[:5]  # at distance 0 from a training row
    # Small blocks and chunks, so that the top-k is merged across many chunks of
    # training rows (some smaller than k) and of queries.
    monkeypatch.setattr(knn, "_BLOCK", 8 * 13)
    det = KNNDetector(k, normalize=normalize, device="cpu", dtype=dtype, batch_size=8)
    det.fit(X_train)
    np.testing.assert_allclose(det.score_samples(X_test),
                               knn_reference(X_test, X_train, k, normalize), atol=atol)


def test_scores_equal_sklearn_nearest_neighbors(rng):
    X_train, X_test = _relu_rows(rng, 300, d=32), _relu_rows(rng, 100, d=32)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    nn = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(unit(X_train))
    expected = -nn.kneighbors(unit(X_test))[0][:, -1]
    det = KNNDetector(10, device="cpu", dtype="float64").fit(X_train)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=1e-10)


def test_scores_do_not_depend_on_chunking(rng, monkeypatch):
    X_train, X_test = _relu_rows(rng, 200), _relu_rows(rng, 70)
    whole = KNNDetector(5, device="cpu", dtype="float64").fit(X_train).score_samples(X_test)
    monkeypatch.setattr(knn, "_BLOCK", 17)
    det = KNNDetector(5, device="cpu", dtype="float64", batch_size=3).fit(X_train)
    np.testing.assert_allclose(det.score_samples(X_test), whole, rtol=1e-12)


def test_rows_of_zeros_stay_zeros(rng):
    """normalize=True leaves a zero row as it is: distance 1 to every unit row."""
    X_train = _relu_rows(rng, 30)
    X_train[3] = 0
    det = KNNDetector(2, device="cpu", dtype="float64").fit(X_train)
    unit_rows = det.train_rows_ * det.train_scales_[:, None]
    np.testing.assert_array_equal(unit_rows[3], 0)
    np.testing.assert_allclose(np.linalg.norm(np.delete(unit_rows, 3, 0), axis=1), 1)
    zero = np.zeros((1, X_train.shape[1]))
    assert det.score_samples(zero)[0] == pytest.approx(-1.0)  # the 2nd nearest is a unit row
    np.testing.assert_allclose(det.score_samples(zero), knn_reference(zero, X_train, 2))


def test_normalize_ignores_the_scale_of_rows(rng):
    X_train, X_test = _relu_rows(rng, 50), _relu_rows(rng, 10)
    det = KNNDetector(3, device="cpu", dtype="float64").fit(X_train)
    scales = rng.uniform(0.1, 10, size=(10, 1))
    np.testing.assert_allclose(det.score_samples(scales * X_test), det.score_samples(X_test))


def test_distances_near_zero_are_exact(rng):
    """|z|^2 - 2 z.x + |x|^2 rounds to about eps (even below 0) for duplicated rows; the
    distances are computed again from z - x, so duplicates score 0 up to the rounding of
    the normalisation (float32 eps), not sqrt(eps)."""
    X_train = np.repeat(_relu_rows(rng, 20, d=64), 3, axis=0).astype(np.float32)
    det = KNNDetector(2, device="cpu").fit(X_train)
    np.testing.assert_allclose(det.score_samples(X_train), 0, atol=1e-6)
    # Near-duplicates keep their small distance, in float32 too.
    X_near = X_train[::3] + 1e-4 * rng.standard_normal((20, 64)).astype(np.float32)
    np.testing.assert_allclose(det.score_samples(X_near),
                               knn_reference(X_near, X_train, 1), rtol=1e-3)


# ------------------------------------------------------------------------ threshold
def test_offset_is_the_quantile_of_leave_one_out_scores(rng):
    X_train = _relu_rows(rng, 120)
    det = KNNDetector(4, contamination=0.1, device="cpu", dtype="float64").fit(X_train)
    expected = np.percentile(loo_reference(X_train, 4), 10)
    assert det.offset_ == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("k", [1, 10])
def test_new_rows_are_accepted_at_one_minus_contamination(rng, k):
    """The leave-one-out threshold holds on fresh rows of the training distribution,
    where the training rows' own scores (each row its own nearest neighbour) would not:
    for k=1 they are all 0 and would reject every new row."""
    X_train, X_new = rng.normal(size=(3000, 8)), rng.normal(size=(3000, 8))
    det = KNNDetector(k, contamination=0.1, device="cpu", dtype="float64").fit(X_train)
    assert np.mean(det.predict(X_new) == 1) == pytest.approx(0.9, abs=0.03)
    in_sample_offset = np.percentile(det.score_samples(X_train), 10)
    assert in_sample_offset > det.offset_
    if k == 1:
        assert in_sample_offset == pytest.approx(0, abs=1e-6)


# --------------------------------------------------------------------- memory bound
def test_distance_blocks_stay_bounded(rng, monkeypatch, product_sizes):
    """No block of distances exceeds the budget, for queries and training rows many times
    larger than it."""
    budget = 64 * 50
    monkeypatch.setattr(knn, "_BLOCK", budget)
    X_train, X_test = _relu_rows(rng, 1000), _relu_rows(rng, 512)
    det = KNNDetector(20, device="cpu", dtype="float64", batch_size=64).fit(X_train)
    product_sizes.clear()
    scores = det.score_samples(X_test)
    assert product_sizes and max(product_sizes) <= budget
    # 1000 / (3200 // 64) = 20 training chunks for each of the 8 query chunks.
    assert len(product_sizes) == 8 * 20
    np.testing.assert_allclose(scores, knn_reference(X_test, X_train, 20), atol=1e-10)


def test_default_block_is_bounded_for_the_default_chunks(rng, product_sizes):
    X_train = _relu_rows(rng, 5000, d=4)
    # The torch search's blocks (algorithm='auto' would search with faiss where it is
    # installed: its blocks are faiss's own).
    det = KNNDetector(5, algorithm="brute", device="cpu").fit(X_train)
    product_sizes.clear()
    det.score_samples(_relu_rows(rng, 9000, d=4))
    assert max(product_sizes) <= knn._BLOCK


# ------------------------------------------------------------------------- contract
def test_y_is_optional_and_ood_rows_are_ignored(rng):
    X_train, X_ood = _relu_rows(rng, 80), 3 + _relu_rows(rng, 20)
    X_all = np.vstack([X_train, X_ood])
    y_all = np.r_[rng.integers(0, 3, size=80), np.full(20, OOD_LABEL)]
    a = KNNDetector(5, device="cpu", dtype="float64").fit(X_train)
    b = KNNDetector(5, device="cpu", dtype="float64").fit(X_all, y_all)
    np.testing.assert_array_equal(a.train_rows_, b.train_rows_)
    np.testing.assert_allclose(a.score_samples(X_all), b.score_samples(X_all))
    assert a.offset_ == pytest.approx(b.offset_)
    assert not hasattr(a, "classes_")


@pytest.mark.parametrize("n_neighbors, n_rows", [(30, 30), (31, 30), (50, 27)])
def test_too_many_neighbors_uses_n_samples_minus_one(rng, n_neighbors, n_rows):
    """As LocalOutlierFactor: k = n - 1 with a warning, so a default that is too large for
    a small data set does not fail; the scores are then those of k = n - 1."""
    X = _relu_rows(rng, n_rows)
    with pytest.warns(UserWarning, match=f"n_neighbors will be set to \\(n_samples - 1\\) = "
                                         f"{n_rows - 1}"):
        det = KNNDetector(n_neighbors, device="cpu").fit(X)
    assert det.n_neighbors_ == n_rows - 1
    exact = KNNDetector(n_rows - 1, device="cpu").fit(X)
    queries = _relu_rows(rng, 5)
    np.testing.assert_array_equal(det.score_samples(queries), exact.score_samples(queries))
    assert det.offset_ == exact.offset_


def test_one_training_row_is_rejected(rng):
    with pytest.raises(ValueError, match="at least 2 in-distribution training rows"):
        KNNDetector(1, device="cpu").fit(_relu_rows(rng, 1))


def test_ood_rows_do_not_count_as_training_rows(rng):
    X = _relu_rows(rng, 30)
    assert KNNDetector(29, device="cpu").fit(X).n_neighbors_ == 29
    with pytest.warns(UserWarning, match="training rows \\(29\\)"):
        det = KNNDetector(29, device="cpu").fit(X, np.r_[np.zeros(29), OOD_LABEL])
    assert det.n_neighbors_ == 28


@pytest.mark.parametrize("bad", [0, -3, 2.5, "5"])
def test_invalid_n_neighbors_is_rejected(rng, bad):
    with pytest.raises(ValueError, match="n_neighbors"):
        KNNDetector(bad, device="cpu").fit(_relu_rows(rng, 20))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(rng, bad):
    X = _relu_rows(rng, 30)
    X_bad = X.copy()
    X_bad[4, 1] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        KNNDetector(3, device="cpu").fit(X_bad)
    with pytest.raises(ValueError, match="NaN|infinity"):
        KNNDetector(3, device="cpu").fit(X).score_samples(X_bad)


def test_search_space_drives_grid_search(digits_split):
    X_id, _, X_ood = digits_split
    X = np.vstack([X_id, X_ood])
    y = np.r_[np.zeros(len(X_id), dtype=int), np.full(len(X_ood), OOD_LABEL)]
    assert KNNDetector.search_space == {"n_neighbors": [1, 5, 10, 20, 50, 100, 200]}
    search = GridSearchCV(KNNDetector(device="cpu"), KNNDetector.search_space,
                          scoring=fpr95_scorer, cv=KFold(3, shuffle=True, random_state=0))
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all((scores <= 0) & (scores >= -1))
    assert search.best_params_["n_neighbors"] in KNNDetector.search_space["n_neighbors"]


# ------------------------------------------- sklearn's outlier checks (test_common.py)
# Those two checks cannot apply (the reason is in _expected_checks.py): the rest of
# their contract, on their data.
def test_outlier_check_contract_holds_apart_from_the_training_rejection_rate():
    """The parts of check_outliers_train that apply, on its data (300 blobs in 2-D)."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=300, random_state=0)
    det = KNNDetector(5, device="cpu", contamination=0.1).fit(X)
    scores, decision, pred = det.score_samples(X), det.decision_function(X), det.predict(X)
    assert scores.dtype == np.float64 and scores.shape == (300,)
    assert pred.dtype.kind == "i" and set(np.unique(pred)) == {-1, 1}
    np.testing.assert_allclose(decision, scores - det.offset_)
    np.testing.assert_array_equal(pred, np.where(decision > 0, 1, -1))
    # Fewer training rows than `contamination` are rejected, for the reason above.
    assert 0 < np.mean(pred == -1) < 0.1
    # fit_predict labels the rows by held-out scores instead: about contamination of them.
    assert np.mean(det.fit_predict(X) == -1) == pytest.approx(0.1, abs=0.03)


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("normalize", [True, False])
def test_cuda_scores_match_cpu(rng, monkeypatch, normalize):
    X_train, X_test = _relu_rows(rng, 400, d=32), _relu_rows(rng, 150, d=32)
    cpu = KNNDetector(10, normalize=normalize, device="cpu", dtype="float64").fit(X_train)
    gpu = KNNDetector(10, normalize=normalize, device="cuda").fit(X_train)
    assert gpu.device_.startswith("cuda")
    np.testing.assert_allclose(gpu.score_samples(X_test), cpu.score_samples(X_test),
                               atol=2e-3)
    assert gpu.offset_ == pytest.approx(cpu.offset_, abs=2e-3)
    # The chunked merge on the device, with many small chunks.
    monkeypatch.setattr(knn, "_BLOCK", 64 * 9)
    gpu = KNNDetector(10, normalize=normalize, device="cuda", dtype="float64", batch_size=64)
    np.testing.assert_allclose(gpu.fit(X_train).score_samples(X_test),
                               cpu.score_samples(X_test), rtol=1e-10)
    X_test[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        gpu.score_samples(X_test)


@pytest.mark.cuda
def test_cuda_kth_distance_matches_numpy_on_the_device():
    g = torch.Generator(device="cuda").manual_seed(0)
    train = torch.rand(3000, 64, device="cuda", generator=g, dtype=torch.float64)
    queries = torch.rand(500, 64, device="cuda", generator=g, dtype=torch.float64)
    got = knn.kth_neighbour_distance(queries, train, 25, max_block=500 * 7)
    expected = -knn_reference(queries.cpu().numpy(), train.cpu().numpy(), 25, normalize=False)
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-10)


def test_normalize_auto_keeps_standardised_rows_as_they_are():
    # Standardised columns are centred on the origin: their directions from it say
    # little, and L2 normalisation inverts the score (issue 23, item 2). 'auto' keeps
    # them; ReLU-like rows, whose origin is informative, are normalised.
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from sklearn_reclag.metrics import ood_auroc

    X, y = load_breast_cancer(return_X_y=True)
    benign, malignant = X[y == 1], X[y == 0]
    scaler = StandardScaler().fit(benign[:250])
    train, test, ood = (scaler.transform(A) for A in (benign[:250], benign[250:], malignant))
    y_true = np.r_[np.zeros(len(test), dtype=int), np.full(len(ood), OOD_LABEL)]

    def auroc(det):
        return ood_auroc(y_true, np.r_[det.score_samples(test), det.score_samples(ood)])

    auto = KNNDetector(5, device="cpu").fit(train)
    assert not auto.normalize_
    assert auroc(auto) > 0.9
    assert auroc(KNNDetector(5, normalize=True, device="cpu").fit(train)) < 0.6
    assert KNNDetector(5, device="cpu").fit(_relu_rows(np.random.default_rng(0), 50)).normalize_


# ------------------------------------------------------------------ algorithm (faiss)
def _faiss():
    """faiss is an optional extra: its tests are skipped without it."""
    return pytest.importorskip("faiss")


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("k", [1, 7])
def test_faiss_exact_search_gives_the_brute_scores(normalize, k):
    _faiss()
    rng = np.random.default_rng(0)
    X, Q = _relu_rows(rng, 3000, 24), _relu_rows(rng, 700, 24)
    brute = KNNDetector(k, normalize=normalize, algorithm="brute", device="cpu").fit(X)
    fast = KNNDetector(k, normalize=normalize, algorithm="faiss", device="cpu").fit(X)
    assert (brute.algorithm_, fast.algorithm_) == ("brute", "faiss")
    np.testing.assert_allclose(fast.score_samples(Q), brute.score_samples(Q), rtol=1e-6)
    np.testing.assert_allclose(fast.score_samples(Q), knn_reference(Q, X, k, normalize),
                               rtol=1e-5)
    assert fast.offset_ == brute.offset_  # offset_ is read by the exact search


@pytest.mark.parametrize("block_rows", [1000, 7])
def test_faiss_searches_the_unit_rows_a_block_at_a_time(monkeypatch, block_rows):
    """faiss reads the rows it searches, so the unit rows are formed a block at a time
    (no copy of the bank): the k best of the blocks are those of the unit bank."""
    _faiss()
    rng = np.random.default_rng(3)
    X, Q = _relu_rows(rng, 500, 24).astype(np.float32), _relu_rows(rng, 60, 24)
    monkeypatch.setattr(knn, "_SCALED_BLOCK", block_rows * X.shape[1])
    scales = torch.as_tensor(knn.row_scales(X, np.float32))
    queries = torch.as_tensor(l2_normalize(Q).astype(np.float32))
    unit = torch.as_tensor(X) * scales[:, None]
    for k in (1, 9):
        squared, nearest = knn.faiss_exact_search(queries, torch.as_tensor(X), k,
                                                  scales=scales)
        expected_squared, expected = knn.faiss_exact_search(queries, unit, k)
        np.testing.assert_allclose(squared, expected_squared, rtol=1e-5, atol=1e-6)
        assert (nearest == expected).float().mean() > 0.99  # ties may swap
        assert squared.shape == nearest.shape == (60, k)
        # Sorted, nearest first, as faiss returns them.
        assert bool((squared[:, 1:] >= squared[:, :-1]).all())


def test_faiss_takes_larger_chunks_of_queries_and_the_same_scores(rng):
    """faiss blocks the queries itself: by default it gets chunks of up to 128 MiB of
    queries (fewer at a large k), not the torch search's 4,096; batch_size still rules,
    and the scores do not depend on the chunks."""
    _faiss()
    X, Q = _relu_rows(rng, 300, 16), _relu_rows(rng, 50, 16)
    cpu = torch.device("cpu")
    det = KNNDetector(5, algorithm="faiss", device="cpu").fit(X)
    assert det._rows_per_chunk(cpu) == min(knn._FAISS_QUERY_ENTRIES // 16,
                                           knn._FAISS_RESULT_ENTRIES // 5)
    assert KNNDetector(5, algorithm="brute", device="cpu").fit(X)._rows_per_chunk(cpu) == 4096
    small = KNNDetector(5, algorithm="faiss", batch_size=7, device="cpu").fit(X)
    assert small._rows_per_chunk(cpu) == 7
    np.testing.assert_allclose(small.score_samples(Q), det.score_samples(Q), rtol=1e-6)


def test_a_model_pickled_with_unit_rows_scores_as_before(rng):
    """Models fitted before train_scales_ held the unit rows themselves as train_rows_:
    loaded, they search those rows unscaled and score as a fresh fit does."""
    X_train, X_test = _relu_rows(rng, 200), _relu_rows(rng, 20)
    det = KNNDetector(4, algorithm="brute", device="cpu", dtype="float64").fit(X_train)
    old = pickle.loads(pickle.dumps(det))
    old.train_rows_ = l2_normalize(X_train)
    del old.train_scales_
    np.testing.assert_allclose(old.score_samples(X_test), det.score_samples(X_test),
                               rtol=1e-12)


def test_auto_uses_faiss_on_cpu_float32_and_brute_otherwise(monkeypatch):
    _faiss()
    X = _relu_rows(np.random.default_rng(0), 60)
    assert KNNDetector(3, device="cpu").fit(X).algorithm_ == "faiss"
    assert KNNDetector(3, device="cpu", dtype="float64").fit(X).algorithm_ == "brute"
    assert KNNDetector(3, device="cpu").fit(X).faiss_index_ is None
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss fails
    assert KNNDetector(3, device="cpu").fit(X).algorithm_ == "brute"


def test_faiss_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    X = _relu_rows(np.random.default_rng(0), 60)
    with pytest.raises(ImportError, match=r"pip install \"sklearn-reclag\[faiss\]\""):
        KNNDetector(3, algorithm="faiss", device="cpu").fit(X)


@pytest.mark.parametrize("algorithm", ["faiss", "faiss-ivf"])
def test_faiss_in_float64_warns_and_searches_exactly(algorithm):
    _faiss()
    rng = np.random.default_rng(1)
    X, Q = _relu_rows(rng, 200), _relu_rows(rng, 50)
    with pytest.warns(UserWarning, match="algorithm='brute'.*dtype='float32'"):
        det = KNNDetector(3, algorithm=algorithm, device="cpu", dtype="float64").fit(X)
    assert det.algorithm_ == "brute" and det.faiss_index_ is None
    np.testing.assert_allclose(det.score_samples(Q), knn_reference(Q, X, 3), rtol=1e-10)


def test_faiss_ivf_never_finds_nearer_rows_and_is_exact_with_every_cell_searched():
    _faiss()
    rng = np.random.default_rng(2)
    X, Q = _relu_rows(rng, 4000, 16), _relu_rows(rng, 500, 16)
    exact = KNNDetector(5, algorithm="brute", device="cpu").fit(X).score_samples(Q)
    ivf = KNNDetector(5, algorithm="faiss-ivf", faiss_params={"nlist": 40, "nprobe": 2},
                      device="cpu").fit(X)
    assert ivf.faiss_index_.nlist == 40 and ivf.faiss_index_.nprobe == 2
    approximate = ivf.score_samples(Q)
    # Missed neighbours make the k-th distance found larger: scores only go down.
    assert np.all(approximate <= exact + 1e-6)
    every_cell = KNNDetector(5, algorithm="faiss-ivf", faiss_params={"nlist": 40, "nprobe": 40},
                             device="cpu").fit(X)
    np.testing.assert_allclose(every_cell.score_samples(Q), exact, rtol=1e-6)


def test_faiss_ivf_pickles_with_its_index():
    import pickle

    _faiss()
    rng = np.random.default_rng(3)
    X, Q = _relu_rows(rng, 2000), _relu_rows(rng, 100)
    det = KNNDetector(3, algorithm="faiss-ivf", device="cpu").fit(X)
    loaded = pickle.loads(pickle.dumps(det))
    assert loaded.faiss_index_.ntotal == 2000
    assert loaded.faiss_index_.nprobe == det.faiss_index_.nprobe
    np.testing.assert_array_equal(loaded.score_samples(Q), det.score_samples(Q))
    assert det.faiss_index_ is not loaded.faiss_index_ and det.faiss_index_.ntotal == 2000


@pytest.mark.parametrize("params, message", [
    ({"nlists": 4}, "accepts the keys 'nlist' and 'nprobe'"),
    ({"nlist": 0}, r"faiss_params\['nlist'\] must be an integer in \[1, 200\]"),
    ({"nlist": 4, "nprobe": 5}, r"faiss_params\['nprobe'\] must be an integer in \[1, 4\]"),
])
def test_bad_faiss_params_are_reported(params, message):
    _faiss()
    X = _relu_rows(np.random.default_rng(0), 200)
    with pytest.raises(ValueError, match=message):
        KNNDetector(3, algorithm="faiss-ivf", faiss_params=params, device="cpu").fit(X)


def test_faiss_params_without_the_ivf_index_warn_that_they_are_ignored():
    X = _relu_rows(np.random.default_rng(0), 100)
    with pytest.warns(UserWarning, match="faiss_params=.*is ignored.*algorithm='faiss-ivf'"):
        det = KNNDetector(3, algorithm="brute", faiss_params={"nprobe": 4}, device="cpu").fit(X)
    assert det.faiss_index_ is None


@pytest.mark.parametrize("k", [1, 5, 50])
def test_faiss_kth_distance_recomputes_only_rows_that_can_be_the_largest(k):
    pytest.importorskip("faiss")
    from sklearn_reclag.detectors.knn import _largest_distance, faiss_nearest_neighbours

    rng = np.random.default_rng(0)
    train = torch.from_numpy(np.abs(rng.normal(size=(5000, 64))).astype(np.float32))
    train = train / train.norm(dim=1, keepdim=True)
    queries = torch.from_numpy(np.abs(rng.normal(size=(500, 64))).astype(np.float32))
    queries = queries / queries.norm(dim=1, keepdim=True)
    queries[:20] = train[:20]  # copies: distance 0, where faiss's expansion cancels
    train[100:110] = train[90:100]  # tied neighbours
    nearest, squared = faiss_nearest_neighbours(queries, train, k, return_squared=True)
    squared[:5] = float("nan")  # rows searched again without faiss keep all k
    # The rows within faiss's rounding of its largest: the same distance as from all k.
    torch.testing.assert_close(
        _largest_distance(queries, train, nearest, 2**24, squared=squared),
        _largest_distance(queries, train, nearest, 2**24), rtol=0, atol=0)
