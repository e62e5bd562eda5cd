"""Dask: block-wise scoring of dask arrays and GridSearchCV on a dask.distributed cluster."""

import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sklearn_reclag import DensePolynomialHopfield, EnergyDetector, ReActDetector
from sklearn_reclag.distributed import score_dask_array
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
