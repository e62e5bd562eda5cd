"""partial_fit (issue 22, item 2) and fitting on banks without copies (item 1).

The property of scikit-learn's incremental estimators: a loop of partial_fit over
chunks gives the model of one fit on the concatenated rows, here scores and offset_.
"""

import pickle

import numpy as np
import pytest
import torch

from sklearn_reclag import (
    HopfieldEnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    RecLagDetector,
    ViMDetector,
)
from sklearn_reclag._incremental import ThresholdReservoir
from sklearn_reclag.base import THRESHOLD_ROWS, row_keys, threshold_rows


def _data(n=3000, d=16, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(n_classes, size=n)
    centres = rng.normal(size=(n_classes, d)) * 3
    X = (np.abs(centres[y] + rng.normal(size=(n, d)))).astype(np.float32)
    X[10] = X[20]  # a copy: leave-one-out leaves both out
    y[10] = y[20]
    queries = np.abs(rng.normal(size=(300, d)) * 3).astype(np.float32)
    return X, y, queries


def _chunks(n, n_chunks=10):
    return np.array_split(np.arange(n), n_chunks)


def _assert_same_model(fitted, incremental, queries):
    # float32 scores computed in another order: float32 tolerance, not float64's.
    np.testing.assert_allclose(incremental.score_samples(queries),
                               fitted.score_samples(queries), rtol=1e-5, atol=1e-5)
    assert incremental.offset_ == pytest.approx(fitted.offset_, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "oas"])
@pytest.mark.parametrize("normalize", [False, True])
def test_mahalanobis_partial_fit_over_ten_chunks_equals_fit(covariance, normalize):
    X, y, queries = _data()
    fitted = MahalanobisDetector(covariance=covariance, normalize=normalize,
                                 device="cpu").fit(X, y)
    incremental = MahalanobisDetector(covariance=covariance, normalize=normalize,
                                      device="cpu")
    for rows in _chunks(len(X)):
        incremental.partial_fit(X[rows], y[rows], classes=np.unique(y))
    _assert_same_model(fitted, incremental, queries)
    np.testing.assert_allclose(incremental.means_, fitted.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(incremental.covariance_, fitted.covariance_, rtol=1e-9,
                               atol=1e-12)
    assert incremental.n_samples_seen_ == len(X)


def test_mahalanobis_streamed_fit_matches_sklearn_estimators():
    from sklearn.covariance import LedoitWolf

    X, y, _ = _data(d=8)
    det = MahalanobisDetector(covariance="ledoit_wolf", normalize=False, device="cpu")
    det.fit(X, y)
    X64 = X.astype(np.float64)
    means = np.stack([X64[y == c].mean(axis=0) for c in np.unique(y)])
    reference = LedoitWolf(assume_centered=True).fit(X64 - means[y]).covariance_
    np.testing.assert_allclose(det.covariance_, reference, rtol=1e-9, atol=1e-12)


def test_partial_fit_classes_are_fixed_by_the_first_call():
    X, y, _ = _data()
    det = MahalanobisDetector(device="cpu").partial_fit(X[y < 3], y[y < 3])
    with pytest.raises(ValueError, match="classes= on the first call"):
        det.partial_fit(X[y == 3], y[y == 3])
    with pytest.raises(ValueError, match="with y; every call"):
        det.partial_fit(X)
    declared = MahalanobisDetector(device="cpu")
    declared.partial_fit(X[y < 3], y[y < 3], classes=[0, 1, 2, 3])
    # A declared class without rows yet is no candidate for the nearest mean.
    assert np.isnan(declared.means_[3]).all()
    assert np.isfinite(declared.score_samples(X[:5])).all()
    declared.partial_fit(X[y == 3], y[y == 3])
    assert np.isfinite(declared.means_).all()


def test_partial_fit_checks_the_features_of_later_chunks():
    X, y, _ = _data()
    det = KNNDetector(device="cpu").partial_fit(X[:100])
    with pytest.raises(ValueError, match="features"):
        det.partial_fit(X[100:200, :5])


def test_mahalanobis_partial_fit_refuses_a_covariance_estimator():
    from sklearn.covariance import MinCovDet

    with pytest.raises(ValueError, match="named covariance"):
        MahalanobisDetector(covariance=MinCovDet(), device="cpu").partial_fit(
            np.ones((10, 2)))


@pytest.mark.parametrize("n_neighbors", [1, 5])
@pytest.mark.parametrize("normalize", [True, False])
def test_knn_partial_fit_over_ten_chunks_equals_fit(n_neighbors, normalize):
    X, _, queries = _data()
    fitted = KNNDetector(n_neighbors, normalize=normalize, device="cpu").fit(X)
    incremental = KNNDetector(n_neighbors, normalize=normalize, device="cpu")
    for rows in _chunks(len(X)):
        incremental.partial_fit(X[rows])
    _assert_same_model(fitted, incremental, queries)
    np.testing.assert_array_equal(incremental.train_rows_, fitted.train_rows_)
    # fit starts afresh: the running state goes.
    incremental.fit(X[:50])
    assert not hasattr(incremental, "n_samples_seen_")
    assert len(incremental.train_rows_) == 50


def test_knn_partial_fit_is_picklable():
    X, _, queries = _data(n=300)
    det = KNNDetector(3, device="cpu").partial_fit(X[:150]).partial_fit(X[150:])
    loaded = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(loaded.score_samples(queries), det.score_samples(queries))
    loaded.partial_fit(X[:10])
    assert loaded.n_samples_seen_ == 310


def test_threshold_reservoir_keeps_the_rows_of_threshold_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5000, 3))
    X[4000:4100] = X[:100]  # copies, across chunks
    keys = row_keys(X, dtype="float32")
    reservoir = ThresholdReservoir(3)
    for rows in _chunks(len(X), 7):
        reservoir.update(keys[rows], X[rows])
    expected = threshold_rows(len(X), keys)
    assert len(expected) == THRESHOLD_ROWS
    np.testing.assert_array_equal(reservoir.rows, X[expected])
    counts = np.unique(keys, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(reservoir.copies, counts[2][counts[1]][expected])


@pytest.mark.parametrize("normalize", [False, True])
def test_knn_fit_on_a_float32_memmap_keeps_the_bank_on_disk(tmp_path, normalize):
    X, _, queries = _data()
    path = tmp_path / "bank.npy"
    np.save(path, X)
    bank = np.load(path, mmap_mode="r")
    det = KNNDetector(3, normalize=normalize, device="cpu").fit(bank)
    # No copy: the bank is the memmap's memory, and scoring reads it in place (a
    # read-only mapping, shared with torch, not copied per call); normalising reads
    # the rows' norms, not unit copies of the rows.
    assert np.shares_memory(det.train_rows_, bank)
    assert det._batch_kwargs()["state"]["train_rows_"].data_ptr() == bank.ctypes.data
    assert (det.train_scales_ is not None) == normalize
    reference = KNNDetector(3, normalize=normalize, device="cpu").fit(X)
    np.testing.assert_array_equal(det.score_samples(queries), reference.score_samples(queries))
    assert det.offset_ == reference.offset_


@pytest.mark.parametrize("normalize", [False, True])
def test_scoring_does_not_copy_the_knn_bank(normalize):
    import torch

    X, _, _ = _data(n=500)
    det = KNNDetector(normalize=normalize, device="cpu").fit(X)
    state = det._batch_kwargs()["state"]
    assert state["train_rows_"].data_ptr() == det.train_rows_.ctypes.data
    assert state["train_rows_"].dtype == torch.float32


def test_reclag_has_no_partial_fit_and_says_why():
    det = RecLagDetector()
    assert not hasattr(det, "partial_fit")
    with pytest.raises(AttributeError, match="learned"):
        det.partial_fit


@pytest.mark.parametrize("params, labelled", [
    ({}, False),
    ({"metric": "cosine"}, False),
    ({"head": "fitted"}, True),
    ({"head": "fitted", "routing": "max", "beta": 0.5}, True),
    ({"head": "fitted", "energy": "lse"}, False),
])
def test_hopfield_energy_partial_fit_over_ten_chunks_equals_fit(params, labelled):
    from sklearn.linear_model import LogisticRegression

    X, y, queries = _data()
    if params.get("head") == "fitted":
        params = {**params, "head": LogisticRegression(max_iter=500).fit(X, y)}
    target = y if labelled else None
    fitted = HopfieldEnergyDetector(device="cpu", **params).fit(X, target)
    incremental = HopfieldEnergyDetector(device="cpu", **params)
    for rows in _chunks(len(X)):
        incremental.partial_fit(X[rows], None if target is None else target[rows])
    _assert_same_model(fitted, incremental, queries)
    assert incremental.beta_ == pytest.approx(fitted.beta_, rel=1e-5)
    np.testing.assert_array_equal(incremental.memory_mask_, fitted.memory_mask_)
    np.testing.assert_allclose(incremental.memories_, fitted.memories_, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("params, labelled", [
    ({}, False),
    ({"metric": "cosine"}, False),
    ({"head": "fitted"}, True),
    ({"head": "fitted"}, False),
    ({"head": "fitted", "routing": "max", "energy": "lse"}, True),
    ({"head": "fitted", "routing": "pooled", "beta": 0.5}, True),
])
def test_she_partial_fit_over_ten_chunks_equals_fit(params, labelled):
    from sklearn.linear_model import LogisticRegression

    X, y, queries = _data()
    X[30:40] = X[40:50]  # copies within and across chunks: left out of the means together
    y[30:40] = y[40:50]
    if params.get("head") == "fitted":
        params = {**params, "head": LogisticRegression(max_iter=500).fit(X, y)}
    target = y if labelled else None
    fitted = HopfieldEnergyDetector("mean", device="cpu", **params).fit(X, target)
    incremental = HopfieldEnergyDetector("mean", device="cpu", **params)
    for rows in _chunks(len(X)):
        incremental.partial_fit(X[rows], None if target is None else target[rows])
    _assert_same_model(fitted, incremental, queries)
    np.testing.assert_array_equal(incremental.memory_mask_, fitted.memory_mask_)
    np.testing.assert_allclose(incremental.memories_, fitted.memories_, rtol=1e-6, atol=1e-7)
    assert incremental.n_samples_seen_ == len(X)
    loaded = pickle.loads(pickle.dumps(incremental))
    np.testing.assert_array_equal(loaded.score_samples(queries),
                                  incremental.score_samples(queries))


@pytest.mark.parametrize("routing", ["predicted", "max"])
def test_she_threshold_scores_leave_each_row_out_of_its_class_mean(routing):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    X, y, _ = _data(n=600)
    X[30] = X[40] = X[50]  # three copies of one row (and _data's pair)
    y[30] = y[40] = y[50]
    X = X.astype(np.float64)
    head = LogisticRegression(max_iter=500).fit(X, y)
    det = HopfieldEnergyDetector("mean", head=head, routing=routing, device="cpu",
                                 dtype="float64").fit(X, y)
    fresh = clone(det)
    fresh.device_, fresh.n_features_in_ = "cpu", X.shape[1]
    scores = fresh._fit(X, y)()  # the threshold's scores, before the quantile

    # Independent reference (numpy): row i, stored when the head classifies it right,
    # is scored against its class mean without its k copies, (S_c - k x_i) / (n_c - k);
    # the density score of one memory is -|v - m|^2 / 2.
    predicted = head.predict(X)
    stored = predicted == y
    sums = np.stack([X[stored & (y == c)].sum(axis=0) for c in range(4)])
    counts = np.array([np.sum(stored & (y == c)) for c in range(4)])
    rows = threshold_rows(len(X), row_keys(X, y, dtype="float64"))
    expected = []
    for i in rows:
        means = sums / counts[:, None]
        if stored[i]:
            k = np.sum(stored & (X == X[i]).all(axis=1) & (y == y[i]))
            means[y[i]] = (sums[y[i]] - k * X[i]) / (counts[y[i]] - k)
        per_class = -0.5 * ((X[i] - means) ** 2).sum(axis=1)
        expected.append(per_class[predicted[i]] if routing == "predicted"
                        else per_class.max())
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-10)
    assert det.offset_ == pytest.approx(det._contamination_offset(np.array(expected)))


@pytest.mark.parametrize("params, match", [
    ({"patterns": "mean", "routing": "pooled"}, "routing='pooled'"),
    ({"metric": "mahalanobis"}, "metric='mahalanobis'"),
    ({"max_patterns": 10}, "max_patterns"),
    ({}, "head=None with y of several classes"),
])
def test_hopfield_energy_partial_fit_refuses_what_needs_all_rows(params, match):
    X, y, _ = _data(n=200)
    with pytest.raises(NotImplementedError, match=match):
        HopfieldEnergyDetector(device="cpu", **params).partial_fit(X, y)


def test_hopfield_energy_fit_on_a_float32_memmap_keeps_the_bank_on_disk(tmp_path):
    X, _, queries = _data(n=500)
    path = tmp_path / "bank.npy"
    np.save(path, X)
    bank = np.load(path, mmap_mode="r")
    det = HopfieldEnergyDetector(beta=1.0, device="cpu").fit(bank)
    assert np.shares_memory(det.memories_, bank)
    reference = HopfieldEnergyDetector(beta=1.0, device="cpu").fit(X)
    np.testing.assert_array_equal(det.score_samples(queries), reference.score_samples(queries))


def test_hopfield_energy_partial_fit_checks_features_and_takes_y():
    import inspect

    from sklearn.linear_model import LogisticRegression

    X, y, _ = _data(n=300)
    assert list(inspect.signature(HopfieldEnergyDetector.partial_fit).parameters)[1:3] == [
        "X", "y"]
    head = LogisticRegression(max_iter=500).fit(X, y)
    for det, target in [(HopfieldEnergyDetector(device="cpu"), None),
                        (HopfieldEnergyDetector(head=head, device="cpu"), y)]:
        det.partial_fit(X, target)
        assert det.n_features_in_ == X.shape[1]
        with pytest.raises(ValueError, match="features"):
            det.partial_fit(X[:, :-1], target)
        with pytest.raises(ValueError, match="features"):
            det.score_samples(X[:, :-1])


@pytest.mark.parametrize("make", [
    lambda: KNNDetector(normalize=False, device="cpu"),
    lambda: KNNDetector(normalize=True, device="cpu"),
    lambda: MahalanobisDetector(device="cpu"),
    lambda: HopfieldEnergyDetector(beta=1.0, device="cpu"),
])
def test_fit_on_float32_rows_allocates_less_than_a_copy_of_them(make):
    import tracemalloc

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(100_000, 64))).astype(np.float32)  # 24 MiB
    det = make()
    make().fit(X[:100])  # imports and caches of a first fit are not copies of X
    tracemalloc.start()
    try:
        det.fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # numpy's allocations (tracemalloc sees them; torch's own are not traced): before,
    # 2x to 8x X (float64 copies of it, normalised or centred; KNN's unit rows); now
    # blocks of rows and a few numbers per row (content keys, KNN's norms).
    assert peak < X.nbytes


# A head of 10 classes on 512 features (any linear head routes rows to banks).
_HEAD_OF_10 = (np.random.default_rng(5).normal(size=(10, 512)), np.zeros(10))


@pytest.mark.parametrize("routing", ["predicted", "max"])
def test_row_banks_are_gathered_a_bounded_chunk_at_a_time(monkeypatch, routing):
    """HE's banks kept as rows: scoring gathers at most the logits' budget of memories
    at once, on both of routed_logsumexp's paths (100 balanced banks take the padded
    batched product) and in class_logsumexp, whatever the number of queries."""
    from torch.profiler import ProfilerActivity, profile

    from sklearn_reclag.detectors import _banks

    rng = np.random.default_rng(0)
    y = np.arange(20_000) % 100
    X = (3 * rng.normal(size=(100, 512))[y] + rng.normal(size=(20_000, 512))).astype(
        np.float32)  # 39 MiB
    head = _nearest_prototype_head(X, y)
    det = HopfieldEnergyDetector(beta=1.0, head=head, routing=routing,
                                 device="cpu").fit(X, y)
    monkeypatch.setattr(_banks, "_SCORE_BLOCK", 2**18)  # 1 MiB of entries
    for queries in (X[:5], X[:2000]):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            det.score_samples(queries)
        largest = max(event.cpu_memory_usage for event in prof.events())
        assert largest <= max(2**18 * 4 * 2, queries.nbytes)


def _nearest_prototype_head(X, y):
    means = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)]).astype(np.float64)
    return means, -0.5 * (means * means).sum(axis=1)


@pytest.mark.parametrize("make, most", [
    # No copy: the banks are the rows of X in place and the row of each slot, with a
    # few integers per row (labels, slots, content keys); before: 1.37x at 64 features
    # with padded banks of the stored rows, 2.2x before that.
    (lambda head: HopfieldEnergyDetector(head=head, device="cpu"), 0.5),
    # No copy: the learning batches are gathered a step at a time, and the threshold's
    # fold reads its rows in place (before: 1.95x in numpy's allocations, the stored
    # rows, the batches, the fold's rows and its batches).
    (lambda head: RecLagDetector(head=head, max_epochs=2, tol=None, random_state=0,
                                 device="cpu"), 0.5),
])
def test_fit_with_a_head_makes_no_copy_of_the_rows(make, most):
    import tracemalloc

    rng = np.random.default_rng(0)
    y = rng.integers(10, size=100_000)
    X = np.abs(rng.normal(size=(10, 64))[y] * 3 + rng.normal(size=(100_000, 64))).astype(
        np.float32)  # 24 MiB
    head = _nearest_prototype_head(X, y)
    make(head).fit(X[:2000], y[:2000])  # imports and caches of a first fit
    tracemalloc.start()
    try:
        det = make(head).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < most * X.nbytes
    if isinstance(det, HopfieldEnergyDetector):
        assert np.shares_memory(det.bank_rows_, X)


@pytest.mark.parametrize("make", [
    lambda head: HopfieldEnergyDetector(head=head, device="cpu"),
    lambda head: HopfieldEnergyDetector(patterns="mean", head=head, device="cpu"),
    lambda head: RecLagDetector(head=head, max_epochs=3, tol=None, random_state=0,
                                device="cpu"),
    lambda head: RecLagDetector(head=head, solver="em", max_epochs=3, tol=None,
                                random_state=0, device="cpu"),
    lambda head: ViMDetector(8, head=head, device="cpu"),
])
def test_a_fold_fitted_in_place_is_the_fold_fitted_on_a_copy(make):
    X, y, queries = _data(n=1500)
    head = _nearest_prototype_head(X, y)
    det = make(head).fit(X, y)
    train = np.flatnonzero(np.arange(len(X)) % 5 != 0)
    in_place = det._fitted_fold(X, y[train], train)
    copied = det._fitted_fold(X[train], y[train], np.arange(len(train)))
    for name in ("memories_", "principal_space_", "alpha_"):
        if hasattr(copied, name):
            np.testing.assert_array_equal(getattr(in_place, name), getattr(copied, name))
    np.testing.assert_array_equal(in_place.score_samples(queries),
                                  copied.score_samples(queries))


def test_banks_and_batches_read_the_stored_rows_in_place():
    from sklearn_reclag.detectors._banks import pad_banks
    from sklearn_reclag.detectors._sae import SaeBatches, sae_batch_rows, sae_batches

    X, y, _ = _data(n=500)
    rows = np.flatnonzero(np.arange(len(X)) % 3 != 0)
    order = np.random.default_rng(0).permutation(len(rows))
    for a, b in zip(pad_banks(X, y[rows], 4, rows=rows, order=order, return_slots=True),
                    pad_banks(X[rows], y[rows], 4, order=order, return_slots=True)):
        np.testing.assert_array_equal(a, b)
    for drop_last in (True, False):
        batches, n_batches = sae_batches(X[rows], y[rows], 4, 16, drop_last=drop_last,
                                         order=order)
        positions, n_steps = sae_batch_rows(y[rows], 4, 16, drop_last=drop_last,
                                            order=order, rows=rows)
        np.testing.assert_array_equal(n_steps, n_batches)
        gathered = SaeBatches(X, positions, torch.device("cpu"), torch.float32)
        assert gathered.shape == batches.shape
        for step, batch in enumerate(gathered):
            np.testing.assert_array_equal(batch.numpy(), batches[step])


def test_class_spread_reduces_the_batches_without_a_float64_copy():
    import subprocess
    import sys

    # In a fresh process: peak resident memory only grows, so it is read around the call.
    code = """
import resource, numpy as np, torch
from sklearn_reclag.detectors._sae import class_spread
batches = torch.randn(200, 10, 50, 512, generator=torch.Generator().manual_seed(0))
rows = np.full((200, 10), 50)
class_spread(batches[:2], rows[:2])  # torch's first-call set-up is not the reduction's
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spread = class_spread(batches, rows)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
flat = batches.double().transpose(0, 1).reshape(10, -1, 512)
reference = (flat - flat.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2)).sqrt()
assert np.allclose(spread, reference.numpy(), rtol=1e-10), (spread, reference)
print(grown * 1024 / batches.numel() / 4)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    # Before: a float64 copy of the batches, 2x their size in float32; now blocks of 32 MiB.
    assert float(result.stdout.strip().splitlines()[-1]) < 0.5


@pytest.mark.parametrize("make", [
    lambda: HopfieldEnergyDetector(beta=1.0, device="cpu"),
    lambda: HopfieldEnergyDetector(beta=1.0, head=_HEAD_OF_10, device="cpu"),
    lambda: HopfieldEnergyDetector(beta=1.0, head=_HEAD_OF_10, routing="max", device="cpu"),
    lambda: KNNDetector(normalize=False, device="cpu"),
    lambda: KNNDetector(normalize=True, algorithm="brute", device="cpu"),
])
def test_scoring_allocates_no_copy_of_the_bank(make):
    from torch.profiler import ProfilerActivity, profile

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(20_000, 512))).astype(np.float32)  # 39 MiB
    y = rng.integers(10, size=len(X))
    queries = X[:100].copy()
    det = make()
    det.fit(X, y if det.get_params().get("head") is not None else None)
    det.score_samples(queries)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        det.score_samples(queries)
    largest = max(event.cpu_memory_usage for event in prof.events())
    # Before: a copy of the bank per call (as a tensor; HE also a bank of squares). Now
    # the largest block is the (queries x bank rows) logits or distances: 100 / 512 of it.
    assert largest < 0.5 * X.nbytes
