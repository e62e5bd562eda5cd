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
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["score_dask_array"]

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
