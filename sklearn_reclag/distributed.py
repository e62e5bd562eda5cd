"""Beyond one machine: score dask arrays block by block, search parameters on a cluster.

Needs the ``dask`` extra (``pip install sklearn-reclag[dask]``); dask is imported only when
a function here is called.

Scoring features larger than memory
-----------------------------------

:func:`score_dask_array` maps a fitted estimator over the row blocks of a dask array. Each
block is scored where it lives, and only one block per worker thread is in memory at a time
(the estimator scores a block in ``batch_size`` chunks too)::

    import dask.array as da
    X = da.from_zarr("features.zarr")           # (n_samples, n_features), any size
    scores = score_dask_array(detector, X)      # lazy, (n_samples,)
    da.to_zarr(scores, "scores.zarr")           # computed block by block

Grid search on a Dask cluster
-----------------------------

:class:`~sklearn.model_selection.GridSearchCV` fans its fits out with joblib; joblib's
``"dask"`` backend sends them to the workers of a ``dask.distributed`` cluster. Nothing in
the estimators changes::

    import joblib
    from dask.distributed import Client
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn_reclag.metrics import fpr95_scorer

    client = Client("scheduler-address:8786")   # or Client() for a local cluster
    search = GridSearchCV(detector, {"beta": [1, 5, 10]}, scoring=fpr95_scorer, n_jobs=-1,
                          cv=StratifiedKFold(3, shuffle=True), error_score="raise")
    with joblib.parallel_backend("dask"):
        search.fit(X, y)

Estimators are pickled to the workers; pin ``device="cpu"`` or ``"cuda"`` explicitly
when the workers' hardware differs from the client's, since ``"auto"`` resolves on the
worker that fits.

A bank sharded across workers
-----------------------------

:class:`ShardedDetector` splits the bank of a fitted HE, SHE, RecLag or KNN detector
into shards, one per worker of a ``dask.distributed`` cluster: each worker scores the
queries against its shard alone, and the client merges the partial results, because
log-sum-exp and top-k are associative::

    lse(a_1, ..., a_n) = lse(lse(shard 1), lse(shard 2), ...)
    k-th smallest of all = k-th smallest of the union of each shard's k smallest

so the scores equal the single-host scores (to the rounding of the partial sums)::

    from dask.distributed import Client
    client = Client("scheduler-address:8786")
    sharded = ShardedDetector(detector, client)     # one shard per worker
    del detector                                    # the bank now lives on the workers
    scores = sharded.score_samples(X_queries)
"""

import math

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["ShardedDetector", "score_dask_array"]

# Methods that return one value per row, and the dtype of what they return.
_ROW_METHODS = {
    "score_samples": np.float64,
    "decision_function": np.float64,
    "predict": np.int64,
}


def _import_dask_array():
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(
            "sklearn_reclag.distributed needs dask; install it with "
            "`pip install sklearn-reclag[dask]`."
        ) from exc
    return da


def score_dask_array(estimator, X, method="score_samples"):
    """Apply a fitted estimator's per-row method to a dask array, block by block.

    The result is lazy: nothing is computed until ``.compute()`` (or a store such as
    ``to_zarr``) asks for it, and then one row block at a time per worker thread, so
    ``X`` may be far larger than memory. Blocks are cut along rows only: an ``X``
    chunked along its columns is rechunked so each block holds every feature.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted estimator (of the suite or of scikit-learn) whose ``method`` returns
        one number per row: the detectors' three methods, a classifier's ``predict``
        with integer labels. (``DensePolynomialHopfield.decision_function`` returns one
        column per class and is refused when the blocks are computed.)
    X : dask.array.Array of shape (n_samples, n_features)
        Features, chunked along the rows.
    method : {'score_samples', 'decision_function', 'predict'}, default='score_samples'
        The method to apply to each block.

    Returns
    -------
    result : dask.array.Array of shape (n_samples,)
        Lazy scores (float64) or predictions (int64), chunked like the rows of ``X``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn_reclag import EnergyDetector
    >>> from sklearn_reclag.distributed import score_dask_array
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(200, 4)), rng.integers(0, 2, 200)
    >>> det = EnergyDetector(device="cpu").fit(X, y)
    >>> scores = score_dask_array(det, da.from_array(X, chunks=(50, 4)))
    >>> scores.chunks
    ((50, 50, 50, 50),)
    >>> bool(np.allclose(scores.compute(), det.score_samples(X)))
    True
    """
    da = _import_dask_array()
    if method not in _ROW_METHODS:
        raise ValueError(
            f"method must be one of {sorted(_ROW_METHODS)} (one value per row); got {method!r}."
        )
    if not hasattr(estimator, method):
        raise TypeError(f"{type(estimator).__name__} has no method {method!r}.")
    check_is_fitted(estimator)
    if not isinstance(X, da.Array):
        raise TypeError(
            f"X must be a dask array; got {type(X).__name__}. Wrap in-memory data with "
            "dask.array.from_array, or call the estimator directly."
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}.")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} was fitted with "
            f"{n_features} features."
        )
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    dtype = _ROW_METHODS[method]
    import dask

    # One graph key holds the estimator, so a cluster ships it to each worker once rather
    # than inside every block's task (an HE model carries all its stored patterns).
    return da.map_blocks(
        _apply_to_block,
        X,
        estimator=dask.delayed(estimator, pure=True),
        method=method,
        dtype=dtype,
        drop_axis=1,
        meta=np.empty((0,), dtype=dtype),
    )


def _apply_to_block(block, *, estimator, method):
    # Empty blocks happen (e.g. after slicing); the estimators reject 0 rows.
    if block.shape[0] == 0:
        return np.empty((0,), dtype=_ROW_METHODS[method])
    result = np.asarray(getattr(estimator, method)(block))
    if result.shape != (block.shape[0],):
        raise ValueError(
            f"score_dask_array needs one value per row, but {type(estimator).__name__}."
            f"{method} returned shape {result.shape} for {block.shape[0]} rows."
        )
    if not np.issubdtype(result.dtype, np.number):
        raise ValueError(
            f"score_dask_array needs numbers, but {type(estimator).__name__}.{method} "
            f"returned {result.dtype} values (e.g. string class labels)."
        )
    return result.astype(_ROW_METHODS[method], copy=False)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "ShardedDetector needs dask.distributed; install it with "
            "`pip install sklearn-reclag[dask]`."
        ) from exc
    return distributed


class ShardedDetector:
    """A fitted detector whose bank is split across the workers of a Dask cluster.

    Log-sum-exp and top-k are associative, so a bank can be scored a shard at a time
    and the partial results merged. The bank is cut into ``n_shards`` shards, each
    scattered to one worker (``Client.scatter``); :meth:`score_samples` sends the
    queries to every worker, which scores them against its shard alone, and merges:

    - :class:`~sklearn_reclag.HopfieldEnergyDetector` (HE, SHE) and
      :class:`~sklearn_reclag.RecLagDetector`: the memory slots of every class are cut
      into shards; a worker returns, per query and class, ``lse(beta Xi_c z + bias)``
      over its slots (against the head's predicted class alone for
      ``routing='predicted'``), and the client takes the log-sum-exp of the shards'
      values (Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021: the
      energy is ``-(1/beta) lse(beta Xi z)``), then routes and adds the visible energy
      as the detector does.
    - :class:`~sklearn_reclag.KNNDetector`: the training rows are cut into shards; a
      worker returns the distances of each query to its ``n_neighbors_`` nearest rows
      of the shard (computed as ``||z - x||``, as the detector does), and the client
      takes the ``n_neighbors_``-th smallest of the union.

    The scores equal the detector's own to the rounding of the partial sums, up to
    k-th neighbours tied to rounding: k-NN scores are the same numbers (the same
    distances, computed by the same code), HE / SHE / RecLag scores differ by less
    than 1e-5 of the largest score in float32 (the single host's own float32 error,
    against float64, is of that size: density scores are differences of terms that
    cancel) and by 1e-10 relatively in float64 (``tests/test_dask.py``). Measured
    on two worker processes with an HE bank of 200,000 x 256 float32 rows (195 MiB):
    each worker's resident memory grew by 115-120 MiB for its 98 MiB shard, with a
    peak of about twice the shard while it arrived (the message and the array). Each
    worker holds its shard and the detector's small parts (head, whitening); the
    client keeps none of the bank once the detector passed in is dropped. A shard of
    HE's banks kept as rows of X (``bank_rows_``) is gathered into padded banks of its
    own slots: the rows of X outside it do not travel.

    Parameters
    ----------
    estimator : fitted HopfieldEnergyDetector, RecLagDetector or KNNDetector
        Not modified. A KNNDetector fitted with ``algorithm='faiss-ivf'`` is refused
        (its index covers the whole bank; refit with 'faiss' or 'brute').
    client : distributed.Client
        The cluster's client.
    n_shards : int >= 1, default=None
        The number of shards (at most the bank's memory slots or rows); None for one
        per worker. Shard i goes to worker ``i % n_workers``.

    Attributes
    ----------
    shards_ : list of distributed.Future
        The shards on the workers.
    workers_ : list of str
        The worker address of each shard.
    offset_ : float
        The estimator's ``offset_`` (``decision_function = score_samples - offset_``).

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from sklearn_reclag import HopfieldEnergyDetector
    >>> from sklearn_reclag.distributed import ShardedDetector
    >>> rng = np.random.default_rng(0)
    >>> X, y = np.abs(rng.normal(size=(400, 8))), rng.integers(0, 3, 400)
    >>> det = HopfieldEnergyDetector(device="cpu").fit(X, y)
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
    ...     with Client(cluster) as client:
    ...         scores = ShardedDetector(det, client).score_samples(X[:50])
    >>> expected = det.score_samples(X[:50])
    >>> bool(np.abs(scores - expected).max() <= 1e-5 * np.abs(expected).max())
    True
    """

    def __init__(self, estimator, client, n_shards=None):
        from .detectors._banks import _MemoryBankDetector
        from .detectors.knn import KNNDetector

        _import_distributed()
        check_is_fitted(estimator)
        if isinstance(estimator, KNNDetector):
            kind, size = "knn", estimator.train_rows_.shape[0]
            if getattr(estimator, "algorithm_", "brute") == "faiss-ivf":
                raise ValueError(
                    "A KNNDetector fitted with algorithm='faiss-ivf' cannot be sharded: its "
                    "index covers the whole bank. Refit it with algorithm='faiss' or 'brute'."
                )
        elif isinstance(estimator, _MemoryBankDetector):
            # The memory slots of every class are cut; a bank of fewer slots than
            # shards (SHE: one mean per class) is cut along its classes instead.
            n_banks, n_slots = estimator.memory_mask_.shape
            wanted = len(client.scheduler_info()["workers"]) if n_shards is None else n_shards
            by_class = isinstance(wanted, (int, np.integer)) and n_slots < wanted <= n_banks
            kind = "classes" if by_class else "banks"
            size = n_banks if by_class else n_slots
        else:
            raise TypeError(
                "ShardedDetector shards the bank of a fitted HopfieldEnergyDetector, "
                f"RecLagDetector or KNNDetector; got {type(estimator).__name__}."
            )
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("The client's cluster has no workers.")
        n_shards = len(workers) if n_shards is None else n_shards
        if (not isinstance(n_shards, (int, np.integer)) or isinstance(n_shards, bool)
                or not 1 <= n_shards <= size):
            raise ValueError(
                f"n_shards must be an integer in [1, {size}] (the bank's "
                f"{dict(knn='rows', banks='memory slots', classes='classes')[kind]}); got "
                f"{n_shards!r}."
            )
        self.estimator_type_ = type(estimator).__name__
        self._kind = kind
        self._client = client
        self.offset_ = float(estimator.offset_)
        self.n_features_in_ = estimator.n_features_in_
        if kind == "knn":
            self._n_neighbors = estimator.n_neighbors_
        else:
            self._beta = float(estimator.beta_)
            self._routing = estimator.routing
            # A class whose bank is empty on the whole host is never predicted; on a
            # shard it may just hold no slots, so the client's mask decides.
            self._present = np.asarray(estimator.memory_mask_).any(axis=1)
        bounds = np.linspace(0, size, n_shards + 1).round().astype(int)
        self.workers_, self.shards_ = [], []
        for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            worker = workers[i % len(workers)]
            shard = _cut_shard(estimator, kind, slice(start, stop))
            self.workers_.append(worker)
            self.shards_.append(client.scatter(shard, workers=[worker], direct=True))

    def score_samples(self, X):
        """Scores of the rows of ``X`` (higher: more in-distribution), equal to the
        estimator's ``score_samples(X)`` to float tolerance.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X must be 2-D with {self.n_features_in_} features (as the estimator was "
                f"fitted); got shape {X.shape}."
            )
        function = _knn_partial if self._kind == "knn" else _bank_partial
        extra = () if self._kind == "knn" else (self._present, self._kind == "classes")
        # The queries go to each worker once (scattered, not inside every task's graph).
        queries = self._client.scatter(X, workers=sorted(set(self.workers_)), broadcast=True,
                                       hash=False)
        futures = [
            self._client.submit(function, shard, queries, *extra, workers=[worker],
                                pure=False)
            for shard, worker in zip(self.shards_, self.workers_)
        ]
        partials = self._client.gather(futures)
        del queries, futures  # released on the workers
        if self._kind == "knn":
            distances = np.concatenate(partials, axis=1)
            k = self._n_neighbors - 1
            return -np.partition(distances, k, axis=1)[:, k]
        return self._merge_banks(partials)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for rows the estimator rejects."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """-1 where ``decision_function(X) <= 0`` (rejected, as the estimator does), else +1."""
        return np.where(self.decision_function(X) > 0, 1, -1)

    def _merge_banks(self, partials):
        from scipy.special import logsumexp

        if self._kind == "classes":  # each shard holds whole classes: side by side
            lse = np.concatenate([p[0] for p in partials], axis=1)
        else:  # each shard holds some slots of every class: (B, C) or (B, 1)
            lse = logsumexp(np.stack([p[0] for p in partials]), axis=0)
        predicted = partials[0][2]
        if lse.shape[1] == 1:
            lse = lse[:, 0]
        elif self._routing == "predicted" and predicted is not None:
            lse = np.take_along_axis(lse, predicted[:, None], axis=1)[:, 0]
        elif self._routing == "max":
            lse = lse.max(axis=1)
        else:  # 'pooled': one bank of every memory
            lse = logsumexp(lse, axis=1)
        return lse / self._beta - partials[0][1]


def _cut_shard(estimator, kind, rows):
    """A shallow copy of ``estimator`` holding the part ``rows`` of its bank (its own
    arrays, so that pickling sends the shard alone)."""
    import copy

    shard = copy.copy(estimator)
    # partial_fit's state holds the whole bank (its growing buffer): not for a shard.
    shard.__dict__.pop("_partial", None)
    if kind == "knn":
        shard.train_rows_ = np.ascontiguousarray(estimator.train_rows_[rows])
        if getattr(estimator, "train_scales_", None) is not None:
            shard.train_scales_ = np.ascontiguousarray(estimator.train_scales_[rows])
        shard.faiss_index_ = None
    else:
        # Padded memories of the shard's part alone (gathered where the estimator keeps
        # its banks as rows of X, which would otherwise travel whole).
        key = (rows, slice(None)) if kind == "classes" else (slice(None), rows)
        shard._set_banks(np.ascontiguousarray(estimator.memory_mask_[key]),
                         memories=np.ascontiguousarray(estimator._dense_banks(key)))
    return shard


def _knn_partial(shard, X):
    """The distances of each query to its nearest rows of the shard: (B, k') with
    k' = min(n_neighbors_, rows of the shard)."""
    import torch

    from .detectors.knn import (
        _BLOCK, _unit_rows, faiss_nearest_neighbours, nearest_neighbours,
        neighbour_distances,
    )

    k = min(shard.n_neighbors_, shard.train_rows_.shape[0])
    algorithm = getattr(shard, "algorithm_", "brute")

    def distances(V, state):
        queries = _unit_rows(V) if shard.normalize_ else V
        train, scales = state["train_rows_"], state.get("train_scales_")
        search = faiss_nearest_neighbours if algorithm == "faiss" else nearest_neighbours
        nearest = search(queries, train, k, max_block=_BLOCK, scales=scales)
        return neighbour_distances(queries, train, nearest, max_block=_BLOCK, scales=scales)

    with torch.no_grad():
        return _map(shard, distances, X)


def _bank_partial(shard, X, present, by_class):
    """Per query: the shard's ``lse`` of each of its classes (B, C_shard), or, for a
    shard of slots and ``routing='predicted'``, of the head's predicted class alone
    (B, 1); the visible energy ``|z|^2 / 2`` (0 for energy='lse') that the client
    subtracts once; and the head's predicted class (None without a head), over the
    classes ``present`` on the whole host, as the detector predicts it."""
    import torch

    with_head = shard.routing == "predicted" and getattr(shard, "head_coef_", None) is not None

    def partial(V, state):
        predicted = torch.zeros(V.shape[0], dtype=V.dtype, device=V.device)
        if with_head:
            logits = shard._head_logits(V, state)
            mask = torch.as_tensor(present, device=V.device)
            predicted = logits.masked_fill(~mask, -math.inf).argmax(dim=1)
        Z = shard._memory_space(V, state)
        if with_head and not by_class:
            lse = shard._routed_lse(Z, state, predicted)[:, None]
        else:
            lse = shard._class_lse(Z, state)
        visible = shard._add_visible_energy(torch.zeros_like(lse[:, 0]), Z)
        return torch.cat([lse, -visible[:, None], predicted[:, None].to(V.dtype)], dim=1)

    with torch.no_grad():
        out = _map(shard, partial, X)
    predicted = out[:, -1].astype(np.intp) if with_head else None
    return out[:, :-2], out[:, -2], predicted


def _map(shard, function, X):
    from ._backend import map_batches

    X = shard._validate_rows(X) if hasattr(shard, "_validate_rows") else X
    return map_batches(function, X, read_only=True, **shard._batch_kwargs())
