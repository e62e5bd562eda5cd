"""Dask: block-wise scoring of dask arrays and GridSearchCV on a dask.distributed cluster."""

import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sklearn_reclag import (
    DensePolynomialHopfield,
    EnergyDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    ReActDetector,
    RecLagDetector,
)
from sklearn_reclag.distributed import ShardedDetector, score_dask_array
from sklearn_reclag.metrics import fpr95_scorer, ood_balanced_accuracy_scorer
from sklearn_reclag.model_selection import make_ood_dataset

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """One in-process worker with two threads: small, and no process start-up cost."""
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 6)), rng.integers(0, 3, 300)
    return ReActDetector(device="cpu").fit(X, y), rng.normal(size=(1000, 6))


@pytest.mark.parametrize("method", ["score_samples", "decision_function", "predict"])
def test_block_scores_equal_in_memory_scores(client, fitted, method):
    det, X = fitted
    X_dask = da.from_array(X, chunks=(128, 6))
    result = score_dask_array(det, X_dask, method=method)
    assert isinstance(result, da.Array)  # lazy until computed
    assert result.chunks == (X_dask.chunks[0],)
    computed = client.compute(result).result()
    expected = getattr(det, method)(X)
    assert computed.dtype == expected.dtype
    np.testing.assert_allclose(computed, expected, rtol=1e-6)


def test_column_chunks_are_merged_so_every_block_holds_all_features(client, fitted):
    det, X = fitted
    X_dask = da.from_array(X, chunks=(250, 2))
    result = score_dask_array(det, X_dask)
    assert result.chunks == ((250, 250, 250, 250),)
    np.testing.assert_allclose(client.compute(result).result(), det.score_samples(X), rtol=1e-6)


def test_uneven_and_empty_blocks_are_scored(fitted):
    det, X = fitted
    X_dask = da.from_array(X, chunks=(333, 6))[np.r_[0:10, 500:1000]]
    X_dask = da.concatenate([X_dask, da.zeros((0, 6), chunks=(0, 6))])
    np.testing.assert_allclose(
        score_dask_array(det, X_dask).compute(), det.score_samples(X[np.r_[0:10, 500:1000]]),
        rtol=1e-6,
    )


def test_input_is_not_modified(fitted):
    det, X = fitted
    X_copy = X.copy()
    score_dask_array(det, da.from_array(X, chunks=(100, 3))).compute()
    np.testing.assert_array_equal(X, X_copy)


def test_bad_input_is_reported(fitted):
    det, X = fitted
    X_dask = da.from_array(X, chunks=(100, 6))
    with pytest.raises(ValueError, match="method must be one of"):
        score_dask_array(det, X_dask, method="transform")
    with pytest.raises(TypeError, match="must be a dask array"):
        score_dask_array(det, X)
    with pytest.raises(ValueError, match="X has 5 features.*fitted with 6"):
        score_dask_array(det, X_dask[:, :5])
    with pytest.raises(ValueError, match="2-D"):
        score_dask_array(det, X_dask[:, 0])
    with pytest.raises(NotFittedError):
        score_dask_array(EnergyDetector(), X_dask)


def test_methods_without_one_number_per_row_are_refused_when_computed():
    """A classifier's per-class decision_function and string predictions cannot be
    stacked as one number per row: computing the blocks says so."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(60, 4))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]
    model = DensePolynomialHopfield(n_memories=6, max_epochs=2, device="cpu",
                                    random_state=0).fit(X, y)
    X_dask = da.from_array(X, chunks=(30, 4))
    with pytest.raises(ValueError, match=r"one value per row.*shape \(30, 3\)"):
        score_dask_array(model, X_dask, method="decision_function").compute()
    with pytest.raises(ValueError, match="string class labels"):
        score_dask_array(model, X_dask, method="predict").compute()


def test_missing_dask_names_the_extra_to_install(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.array", None)  # import dask.array fails
    with pytest.raises(ImportError, match=r"pip install sklearn-reclag\[dask\]"):
        score_dask_array(fitted[0], None)


@pytest.mark.slow
def test_grid_search_runs_on_the_cluster_with_the_same_results(client, digits_split):
    X_id, y_id, X_ood = digits_split
    X, y = make_ood_dataset(X_id[:200], y_id[:200], X_ood[:100], random_state=0)
    search = GridSearchCV(
        EnergyDetector(device="cpu"),
        {"temperature": [0.5, 1.0, 2.0], "contamination": [0.05, 0.2]},
        scoring={"fpr95": fpr95_scorer, "bacc": ood_balanced_accuracy_scorer},
        refit="bacc",
        cv=StratifiedKFold(3),
    )
    local = search.fit(X, y).cv_results_
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        on_cluster = clone(search).set_params(n_jobs=-1).fit(X, y)
    assert len(stream.data) > 0  # the fits ran as tasks of the cluster
    assert on_cluster.cv_results_["params"] == local["params"]
    for key in ("mean_test_fpr95", "mean_test_bacc"):
        np.testing.assert_allclose(on_cluster.cv_results_[key], local[key], rtol=1e-12)
    assert on_cluster.best_params_ == search.best_params_


# ------------------------------------------------------------- banks sharded on workers
@pytest.fixture(scope="module")
def two_workers():
    """Two in-process workers: the shards live on different workers."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def _bank_data(dtype=np.float64):
    rng = np.random.default_rng(0)
    X = np.maximum(rng.normal(size=(2000, 12)), 0).astype(dtype)
    y = rng.integers(0, 4, 2000)
    queries = (1.3 * np.maximum(rng.normal(size=(300, 12)), 0)).astype(dtype)
    return X, y, queries


SHARDED = {
    "HE": lambda dt: (HopfieldEnergyDetector(device="cpu", dtype=dt), True),
    "HE-lse-max": lambda dt: (HopfieldEnergyDetector(energy="lse", routing="max", device="cpu",
                                                     dtype=dt), True),
    "HE-pooled-mahalanobis": lambda dt: (HopfieldEnergyDetector(
        routing="pooled", metric="mahalanobis", device="cpu", dtype=dt), True),
    "HE-no-labels": lambda dt: (HopfieldEnergyDetector(device="cpu", dtype=dt), False),
    "SHE": lambda dt: (HopfieldEnergyDetector(patterns="mean", device="cpu", dtype=dt), True),
    "RecLag": lambda dt: (RecLagDetector(max_epochs=2, tol=None, random_state=0, device="cpu",
                                         dtype=dt), True),
    "KNN-1": lambda dt: (KNNDetector(1, device="cpu", dtype=dt), False),
    "KNN-10-brute": lambda dt: (KNNDetector(10, algorithm="brute", device="cpu", dtype=dt),
                                False),
}


@pytest.mark.parametrize("name", list(SHARDED))
def test_sharded_scores_equal_single_host_scores_in_float32(two_workers, name):
    """float32: the merge differs from the single host's running sums by rounding
    alone. Density scores cross 0 (|v - xi|^2 terms cancel), so the tolerance is
    relative to the largest score of the batch (the single host's own float32 error
    against float64 is of the same size: 2e-6 to 1e-5 here)."""
    X, y, queries = _bank_data(np.float32)
    det, labelled = SHARDED[name]("float32")
    det.fit(X, y if labelled else None)
    sharded = ShardedDetector(det, two_workers)
    assert len(set(sharded.workers_)) == 2  # one shard on each worker
    expected = det.score_samples(queries)
    scores = sharded.score_samples(queries)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(sharded.predict(queries),
                                  np.where(sharded.decision_function(queries) > 0, 1, -1))
    np.testing.assert_allclose(sharded.decision_function(queries), scores - det.offset_)


@pytest.mark.parametrize("name", ["HE", "HE-pooled-mahalanobis", "SHE", "RecLag", "KNN-10-brute"])
def test_sharded_scores_equal_single_host_scores_in_float64(two_workers, name):
    X, y, queries = _bank_data()
    det, labelled = SHARDED[name]("float64")
    det.fit(X, y if labelled else None)
    scores = ShardedDetector(det, two_workers, n_shards=3).score_samples(queries)
    np.testing.assert_allclose(scores, det.score_samples(queries), rtol=1e-10)


def test_faiss_knn_shards_search_with_faiss(two_workers):
    pytest.importorskip("faiss")
    X, _, queries = _bank_data(np.float32)
    det = KNNDetector(5, algorithm="faiss", device="cpu").fit(X)
    np.testing.assert_allclose(ShardedDetector(det, two_workers).score_samples(queries),
                               det.score_samples(queries), rtol=1e-6)


def test_shards_partition_the_bank_and_leave_the_estimator_alone(two_workers):
    X, y, queries = _bank_data()
    det = HopfieldEnergyDetector(device="cpu").fit(X, y)
    memories = det.memories_.copy()
    sharded = ShardedDetector(det, two_workers, n_shards=3)
    shards = two_workers.gather(sharded.shards_)
    assert sum(s.memories_.shape[1] for s in shards) == det.memories_.shape[1]
    np.testing.assert_array_equal(np.concatenate([s.memories_ for s in shards], axis=1),
                                  memories)
    assert det.memories_.shape == memories.shape
    np.testing.assert_array_equal(det.memories_, memories)
    # Each shard is kept where it was sent (who_has: the worker holding it).
    holders = two_workers.who_has(sharded.shards_)
    assert [list(holders[f.key]) for f in sharded.shards_] == [[w] for w in sharded.workers_]


def test_sharding_bad_input_is_reported(two_workers):
    X, y, queries = _bank_data()
    det = HopfieldEnergyDetector(device="cpu").fit(X, y)
    with pytest.raises(TypeError, match="HopfieldEnergyDetector, RecLagDetector or KNNDetector"):
        ShardedDetector(EnergyDetector(device="cpu").fit(X, y), two_workers)
    with pytest.raises(NotFittedError):
        ShardedDetector(HopfieldEnergyDetector(), two_workers)
    with pytest.raises(ValueError, match=r"n_shards must be an integer in \[1, "):
        ShardedDetector(det, two_workers, n_shards=0)
    with pytest.raises(ValueError, match="12 features"):
        ShardedDetector(det, two_workers).score_samples(queries[:, :5])
    faiss = pytest.importorskip("faiss")  # noqa: F841
    ivf = KNNDetector(3, algorithm="faiss-ivf", device="cpu").fit(X.astype(np.float32))
    with pytest.raises(ValueError, match="algorithm='faiss' or 'brute'"):
        ShardedDetector(ivf, two_workers)


@pytest.mark.parametrize("make", [lambda: KNNDetector(3, device="cpu"),
                                  lambda: HopfieldEnergyDetector(device="cpu")])
def test_a_bank_built_by_partial_fit_is_sharded_without_its_buffer(two_workers, make):
    """partial_fit keeps the whole bank in a growing buffer: a shard must not carry it
    (each worker would receive the whole bank)."""
    X, _, queries = _bank_data(np.float32)
    det = make()
    for chunk in np.array_split(X, 4):
        det.partial_fit(chunk)
    sharded = ShardedDetector(det, two_workers)
    for shard in two_workers.gather(sharded.shards_):
        assert not hasattr(shard, "_partial")
    scale = np.abs(det.score_samples(queries)).max()
    np.testing.assert_allclose(sharded.score_samples(queries), det.score_samples(queries),
                               rtol=1e-5, atol=1e-5 * scale)
