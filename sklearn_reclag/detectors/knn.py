"""Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022).

The score of a row v is minus its Euclidean distance to the k-th nearest training row, both
L2-normalised: ``-|| z - z_(k) ||`` with ``z = v / ||v||``. The search is exact brute
force on the detector's device: the training rows are multiplied a chunk at a time
(``|x|^2 - 2 z . x`` in one ``addmm``), and the k nearest rows of each chunk are merged
with those of the chunks before, so no (n_test x n_train) matrix is ever built; the k-th
distance is then computed again from the difference ``z - x`` itself.
"""

import math
import warnings
from functools import partial
from numbers import Integral
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import (
    _memory_chunk,
    copy_tolerance,
    iter_slices,
    map_batches,
    resolve_device,
    resolve_dtype,
)
from .._docstrings import fill_doc
from ..base import (
    _STATISTICS_BLOCK,
    BaseOODDetector,
    dominant_offset,
    mean_and_spread,
    row_keys,
    threshold_rows,
)
from .._incremental import ThresholdReservoir

# Most entries of one block of (query rows x training rows) distances: 64 MiB in float32.
_BLOCK = 2**24
# Most entries of one block of differences z - x when the k-th distances are computed
# again on a CPU: 1 MiB in float32 stays in cache, about 5x faster than blocks of 2**24
# entries gathered through memory (measured on 4,096 queries, k = 50, 512 features:
# 0.65 s against 3.8 s on a 2-core AMD EPYC).
_CPU_DIFFERENCES_BLOCK = 2**18
# Most entries of the block of scaled (unit) training rows that faiss searches at a time:
# 256 MiB in float32, the whole bank up to 65,536 rows of 1,024 features (one faiss call).
_SCALED_BLOCK = 2**26
# Most entries of a chunk of queries that faiss searches in one call by default: 128 MiB
# in float32 (65,536 queries of 512 features), and of its (queries x k) results, which
# the blocks of a large bank merge two at a time (8,388 queries at k = 1,000).
_FAISS_QUERY_ENTRIES = 2**25
_FAISS_RESULT_ENTRIES = 2**23


@fill_doc
class KNNDetector(BaseOODDetector):
    """Deep k-nearest-neighbour detector on L2-normalised features.

    Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
    ICML 2022. With ``z = v / ||v||`` and ``z_(k)`` the k-th nearest of the normalised
    training rows::

        score_samples(v) = -|| z - z_(k) ||

    (``z = v`` itself with ``normalize=False``). Higher means more in-distribution. The
    detector needs no labels: ``y`` may be omitted; when given, only its ``OOD_LABEL``
    rows matter (they are left out of the training rows).

    The search is exact brute force on ``device``, as the paper's code (a faiss
    ``IndexFlatL2``) and scikit-learn's ``NearestNeighbors(algorithm='brute')`` do: each
    chunk of query rows meets the training rows a chunk at a time (at most 2**24
    distances at once, as ``|x|^2 - 2 z.x``: one matrix product per chunk), and the k
    nearest rows of every chunk are merged into a running top-k. The k distances found
    are then computed again as ``||z - x||``, free of the cancellation of the expanded
    form: a score is accurate to the precision of ``dtype``, and depends on its row
    alone, not on the other rows scored with it (but for rows whose k-th and (k+1)-th
    neighbours tie to rounding, where either distance may come out).

    ``algorithm`` chooses who finds the k nearest rows: the suite's torch search above,
    faiss's exact flat search (the kernel of ``IndexFlatL2``, on the bank in place), or
    faiss's approximate inverted-file index for banks of millions of rows.

    No search copies the bank: the training rows are kept as given (X itself where it
    is C-contiguous in ``dtype``, an ``np.memmap`` included) with their norms, and the
    unit rows are formed a block at a time (the torch search scales each block of
    products by ``1 / ||x||``; faiss, which reads the rows it searches, gets them 256
    MiB at a time). Whichever searches, the k distances are then computed as ``||z - x||`` by the
    same code, so the exact searches give the same scores.

    Parameters
    ----------
    n_neighbors : int >= 1, default=1
        The k of the k-th nearest neighbour. The paper uses 50 on CIFAR-10 (50,000
        training rows) and 1000 on ImageNet (1.28 million); on the suite's four feature
        types (630 to 16,800 training rows, ``benchmarks/results/defaults.md``) k = 1
        was within 1.07x of the best k everywhere and k = 50 up to 21x worse. Raise it
        with the number of training rows per class. With fewer
        training rows than that, fit uses ``n_samples - 1`` (with a warning), as
        :class:`~sklearn.neighbors.LocalOutlierFactor` does: ``n_neighbors_``.
    normalize : 'auto' or bool, default='auto'
        L2-normalise the training rows and the queries (the paper's key step). A row of
        zeros has no direction: it is left as it is (as
        :class:`~sklearn.preprocessing.Normalizer` does), so its distance to every unit
        row is 1. 'auto' normalises unless the training rows are centred on the origin
        (:func:`origin_is_informative`): a network's features (ReLU activations, an
        embedding) carry their class in their direction from the origin, standardised
        tabular columns do not, and there L2 normalisation inverts the score (AUROC 0.37
        on standardised breast cancer; ``benchmarks/results/defaults.md``).
    algorithm : {'auto', 'brute', 'faiss', 'faiss-ivf'}, default='auto'
        The search for the k nearest training rows.

        - 'brute': the suite's exact torch search, on any ``device`` and ``dtype``.
        - 'faiss': faiss's exact flat search (``faiss.knn``, the kernel of
          ``IndexFlatL2.search``) on the CPU, float32; ``pip install
          "sklearn-reclag[faiss]"``. The same scores as 'brute' to float32 rounding, and
          faster on the CPU: 100,000 queries against 50,000 rows of 512 features, k =
          50, a 2-core AMD EPYC (``benchmarks/knn_speed.py``, its ``knn-faiss`` row):
          68.9 s against 98.9 s for 'brute' and 64.8 s for faiss's ``IndexFlatL2``
          itself on 1 thread; 40.9, 58.6 and 36.5 s on 2 (an earlier run: 76.0 / 66.2 s
          and 38.7 / 40.8 s for this search / faiss's). With ``batch_size=None`` faiss
          gets the queries in chunks of up to 128 MiB (it blocks them itself), so what
          a call costs beside the search is paid rarely.
        - 'faiss-ivf': faiss's approximate ``IndexIVFFlat`` (Jegou, Douze & Schmid,
          "Product quantization for nearest neighbor search", TPAMI 2011: k-means cells,
          a query searches the ``nprobe`` nearest cells). For banks of millions of rows
          where a user accepts missed neighbours: a k-th distance found is never below
          the exact one, so scores can only go down. The index holds a second copy of
          the bank. See ``faiss_params`` and Notes for the recall measured.
        - 'auto': 'faiss' when faiss is importable, ``device`` resolves to the CPU and
          ``dtype='float32'``; 'brute' otherwise.

        'faiss' and 'faiss-ivf' with ``dtype='float64'`` or a GPU device warn and use
        'brute' (faiss-cpu searches float32 rows in host memory): ``algorithm_``.
    faiss_params : dict or None, default=None
        For ``algorithm='faiss-ivf'``: ``{'nlist': cells, 'nprobe': cells searched}``.
        By default ``nlist = 4 sqrt(n_train)`` (faiss's guideline, at most
        ``n_train / 39`` so that k-means has 39 rows per cell) and ``nprobe = nlist / 8``
        rounded up. A larger ``nprobe`` is slower and nearer the exact search.
    contamination : float in (0, 0.5], default=0.05
        Fraction of new in-distribution rows that ``predict`` rejects. ``offset_`` is that
        quantile of the training rows' leave-one-out scores (see Notes).
    ${device}

    Attributes
    ----------
    train_rows_ : ndarray of shape (n_train, n_features)
        The in-distribution training rows in ``dtype``, as given: X itself where its
        dtype and C-contiguous layout fit (no copy: a bank on disk stays on disk), else
        one converted copy. Not normalised: the rows searched are
        ``train_rows_ * train_scales_[:, None]``.
    train_scales_ : ndarray of shape (n_train,) or None
        ``1 / ||x||`` of each training row with ``normalize_`` (1 for a row of zeros),
        else None. The search applies it a block at a time, so normalising costs no
        copy of the bank.
    n_neighbors_ : int
        The k used: ``min(n_neighbors, n_samples - 1)``.
    normalize_ : bool
        Whether the rows are L2-normalised (``normalize``, with 'auto' resolved).
    algorithm_ : {'brute', 'faiss', 'faiss-ivf'}
        The search used (``algorithm``, with 'auto' resolved).
    faiss_index_ : faiss.IndexIVFFlat or None
        The approximate index of ``algorithm_='faiss-ivf'`` (pickled as faiss's
        serialised bytes), else None.
    ${fitted_common}

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : the same exact search on the host.
    sklearn.neighbors.LocalOutlierFactor : a density ratio of nearest neighbours.

    Notes
    -----
    **Threshold.** A training row is its own nearest neighbour, so its score in the
    training set is optimistic (for k = 1 it is 0). ``offset_`` is therefore the
    ``contamination`` quantile of leave-one-out scores: each training row scored
    against the *other* training rows (its (k+1)-th nearest row, itself included). New
    rows from the training distribution are then accepted at the rate
    ``1 - contamination``, whereas ``predict`` on the training rows themselves rejects
    fewer of them (as :class:`~sklearn.neighbors.LocalOutlierFactor` with
    ``novelty=True``). The quantile is read from at most 1,000 training rows (a fixed
    random draw where there are more; the acceptance rate's standard error is then 0.7
    points), so ``fit`` costs as much as scoring 1,000 rows: O(n_train n_features).

    **Duplicated rows.** A training row that occurs more than once (repeated or
    augmented data) would meet its copy at distance 0, and with ``n_neighbors=1`` every
    leave-one-out score would be 0: ``predict`` would reject every new row. So a row's
    leave-one-out score leaves out all its copies, the rows at a distance of rounding
    from it (``|z - x|^2 <= 4 sqrt(D) eps (|z|^2 + |x|^2)``, eps of ``dtype``), and the
    copies count once among the 1,000 rows (chosen by the rows' content, so the rows in
    any order give the same ``offset_``). New rows are scored against every training
    row, copies included.

    **Approximate search** (``algorithm='faiss-ivf'``). Measured (2-core AMD EPYC,
    2 threads): the recall of the exact k-th distance (the share of queries whose k-th
    distance equals the exact one to 1e-5) and the FPR95 on the digits benchmark's
    features (630 training rows of 64 CNN features, ``nlist=16``; 1,600 test rows
    against its four OOD sets together):

    ====  =========  ==================  =================================
    k     nprobe     recall              FPR95 exact -> ivf (digits 5-9)
    ====  =========  ==================  =================================
    1     1 / 2 / 4  0.67 / 0.84 / 0.95  0.122 -> 0.128 / 0.116 / 0.122
    5     1 / 2 / 4  0.25 / 0.52 / 0.84  0.154 -> 0.173 / 0.140 / 0.153
    ====  =========  ==================  =================================

    On 10,000 queries against 100,000 synthetic rows of 512 features (those of
    ``benchmarks/knn_speed.py``, ``nlist=1265``), the default ``nprobe=159`` found the
    exact k-th distance for 100 % of queries at k = 1 and 99.9 % at k = 50 (largest
    relative excess 2e-4), but took 1.5x the exact search's time: faiss's inverted
    lists scan each query's cells without the matrix products of the flat search, so
    the approximate index pays off only for banks of millions of rows or a small
    ``nprobe`` (16: 0.54x the time at k = 1, recall 0.54, k-th distances up to 8 %
    too large). ``offset_`` is read by the exact search, so with missed neighbours
    ``predict`` rejects more new rows than ``contamination``.

    **Hyperparameter search.** ``KNNDetector.search_space`` is the grid to search, for
    example ``GridSearchCV(KNNDetector(), KNNDetector.search_space,
    scoring=fpr95_scorer)``: ``{'n_neighbors': [1, 5, 10, 20, 50, 100, 200]}``. OpenOOD
    sweeps 50-1000 on ImageNet-scale training sets; k must stay below the number of
    training rows of every fold.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import KNNDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = KNNDetector(n_neighbors=5, device="cpu").fit(X[y < 5])
    >>> in_dist, out_dist = det.score_samples(X[y < 5][:3]), det.score_samples(X[y >= 5][:3])
    >>> bool(in_dist.mean() > out_dist.mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean", StrOptions({"auto"})],
        "algorithm": [StrOptions({"auto", "brute", "faiss", "faiss-ivf"})],
        "faiss_params": [dict, None],
    }
    _needs_classes = False
    _shared_attributes = ("train_rows_",)

    @property
    def _tensor_attributes(self):
        # train_scales_ is None without normalisation (and absent from a model pickled
        # before it existed, whose train_rows_ are the unit rows themselves).
        if getattr(self, "train_scales_", None) is None:
            return ("train_rows_",)
        return ("train_rows_", "train_scales_")

    # The grid a user should search (see Notes).
    search_space = {"n_neighbors": [1, 5, 10, 20, 50, 100, 200]}

    def __init__(self, n_neighbors=1, *, normalize="auto", algorithm="auto", faiss_params=None,
                 contamination=0.05, device="auto", dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n_neighbors = n_neighbors
        self.normalize = normalize
        self.algorithm = algorithm
        self.faiss_params = faiss_params

    def _fit(self, X, y):
        n_train = X.shape[0]
        self.n_neighbors_ = usable_neighbours(
            self, n_train, "offset_ reads each training row's nearest neighbour among the "
            "other rows")
        warn_if_offset_dominates(self, X)
        self.normalize_ = resolved_normalize(self.normalize, X)
        # No copy of the bank where X's dtype and layout fit (see bank_rows): the unit
        # rows are formed a block at a time by the search, from train_scales_.
        self.train_rows_ = bank_rows(X, self.dtype)
        self.train_scales_ = row_scales(X, self.dtype) if self.normalize_ else None
        self.algorithm_ = resolve_algorithm(self.algorithm, self.device_, self.dtype)
        if self.faiss_params is not None and self.algorithm_ != "faiss-ivf":
            warnings.warn(
                f"faiss_params={self.faiss_params!r} is ignored: it sets the approximate "
                f"index of algorithm='faiss-ivf', and the search is {self.algorithm_!r}. "
                "Pass algorithm='faiss-ivf' to use it, or leave faiss_params=None.",
                UserWarning,
                stacklevel=4,  # the caller of fit (through fit and _fit_context)
            )
        self.faiss_index_ = (
            ivf_index(self.train_rows_, self.faiss_params, scales=self.train_scales_)
            if self.algorithm_ == "faiss-ivf" else None
        )
        # Keys of the rows alone: a row's neighbours do not depend on its label.
        rows = threshold_rows(n_train, row_keys(X, dtype=self.dtype))
        return partial(self._leave_one_out_scores, X[rows])

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Append a chunk of rows to the bank: a loop over chunks gives the model of one fit.

        The bank grows (amortised: its buffer doubles when full, so n rows in any
        number of calls cost O(n D) copying), ``n_neighbors_`` is ``min(n_neighbors,
        n_samples_seen_ - 1)``, and ``offset_`` is recomputed at the end of every call:
        the leave-one-out scores of the 1,000 threshold rows of :meth:`fit` (the rows
        with the smallest content keys, kept across calls by a bounded reservoir,
        :class:`~sklearn_reclag._incremental.ThresholdReservoir`) against the current
        bank, a cost linear in the bank. After the last call, ``train_rows_``,
        ``score_samples`` and ``offset_`` are those of :meth:`fit` on the concatenated
        rows, to float rounding. ``normalize='auto'`` is resolved on the first chunk.
        ``algorithm='faiss-ivf'`` is refused (its cells are trained on the whole bank).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            Ignored but for its OOD_LABEL rows, which are left out.

        Returns
        -------
        self : object
        """
        if getattr(self, "algorithm", None) == "faiss-ivf":
            raise ValueError(
                "KNNDetector.partial_fit cannot extend algorithm='faiss-ivf': its cells "
                "are trained on the whole bank. Use algorithm='faiss' or 'brute', or fit."
            )
        first = not hasattr(self, "_partial")
        X, y = (self._validate_fit_data(X, y) if first else self._validate_more_data(X, y))
        if first:
            self.device_ = str(resolve_device(self.device))
            warn_if_offset_dominates(self, X)
            self.normalize_ = resolved_normalize(self.normalize, X)
            if hasattr(self, "algorithm"):
                self.algorithm_ = resolve_algorithm(self.algorithm, self.device_, self.dtype)
                self.faiss_index_ = None
            self._partial = SimpleNamespace(
                buffer=np.empty((0, X.shape[1]), dtype=self.dtype),
                scales=np.empty(0, dtype=self.dtype),
                reservoir=ThresholdReservoir(X.shape[1]))
        state = self._partial
        n_old = self.n_samples_seen_ if not first else 0
        n_new = n_old + len(X)
        if n_new > len(state.buffer):
            capacity = max(n_new, 2 * len(state.buffer))
            grown = np.empty((capacity, X.shape[1]), dtype=self.dtype)
            grown[:n_old] = state.buffer[:n_old]
            scales = np.empty(capacity, dtype=self.dtype)
            scales[:n_old] = state.scales[:n_old]
            state.buffer, state.scales = grown, scales
        bank_rows(X, self.dtype, out=state.buffer[n_old:n_new])
        self.train_rows_ = state.buffer[:n_new]
        self.train_scales_ = None
        if self.normalize_:
            state.scales[n_old:n_new] = row_scales(X, self.dtype)
            self.train_scales_ = state.scales[:n_new]
        self.n_samples_seen_ = n_new
        state.reservoir.update(row_keys(X, dtype=self.dtype), X)
        if n_new < 2:
            raise ValueError(
                f"KNNDetector needs at least 2 in-distribution training rows (n_samples = "
                f"{n_new} so far): offset_ reads each training row's nearest neighbour "
                "among the other rows."
            )
        self.n_neighbors_ = min(self.n_neighbors, n_new - 1)
        self.offset_ = float(self._fit_offset(
            partial(self._leave_one_out_scores, state.reservoir.rows)))
        return self

    def _rows_per_chunk(self, device):
        # faiss blocks the queries itself, and each call pays for the bank once (its
        # norms; the unit rows formed again): 2.6 % of the search with 4,096 queries a
        # call (a 50,000 x 512 bank, k = 50, measured). Larger chunks amortise it.
        rows = super()._rows_per_chunk(device)
        if self.batch_size is None and getattr(self, "algorithm_", "brute") != "brute":
            rows = max(rows, min(_FAISS_QUERY_ENTRIES // self.n_features_in_,
                                 _FAISS_RESULT_ENTRIES // self.n_neighbors_))
        return rows

    def _score_batch(self, V, state):
        return -self._kth_distance(V, state, self.n_neighbors_)

    def _leave_one_out_scores(self, X):
        # X holds training rows (those of threshold_rows: the cost is linear in the
        # bank). A training row meets itself at distance 0, and so does each of its
        # copies (a row that occurs twice is its own nearest neighbour twice): its
        # score is its k-th neighbour among the rows that are not copies of it.
        return map_batches(
            lambda V, state: -self._kth_distance(V, state, self.n_neighbors_,
                                                 exclude_copies=True),
            X, read_only=True, **self._batch_kwargs(),
        )

    def _kth_distance(self, V, state, kth, exclude_copies=False):
        queries = _unit_rows(V) if self.normalize_ else V
        # The leave-one-out scores of offset_ (exclude_copies) stay with the exact search:
        # faiss cannot leave out each query's copies, and they are read from at most
        # 1,000 rows.
        algorithm = "brute" if exclude_copies else getattr(self, "algorithm_", "brute")
        return kth_neighbour_distance(queries, state["train_rows_"], kth, max_block=_BLOCK,
                                      exclude_copies=exclude_copies, algorithm=algorithm,
                                      index=getattr(self, "faiss_index_", None),
                                      scales=state.get("train_scales_"))

    def __getstate__(self):
        state = super().__getstate__()
        # A faiss index is a C++ object: pickled as faiss's own serialised bytes.
        if state.get("faiss_index_") is not None:
            state["faiss_index_"] = _import_faiss().serialize_index(state["faiss_index_"])
        return state

    def __setstate__(self, state):
        if isinstance(state.get("faiss_index_"), np.ndarray):
            state["faiss_index_"] = _import_faiss().deserialize_index(state["faiss_index_"])
        super().__setstate__(state)


def kth_neighbour_distance(queries, train, kth, *, max_block=_BLOCK, exclude_copies=False,
                           algorithm="brute", index=None, scales=None):
    """Euclidean distance from each query to its ``kth`` nearest training row (exact).

    Two steps. The search: the training rows are taken a chunk at a time, so that a
    block of squared distances has at most ``max_block`` entries (one training row per
    block at the least), and the ``kth`` nearest rows of each block are merged with the
    best so far. Neither the query's own ``|z|^2`` (the same for every training row) nor
    the square root changes which rows are nearest, so both are left out. The
    distances: ``|z|^2 - 2 z.x + |x|^2`` loses precision to cancellation near 0 and its
    rounding depends on the shape of the product, so the ``kth`` distances found are
    computed again as ``||z - x||`` (about kth / (2 n_train) of the search's work). A
    query's distance thus depends on its row alone, not on the other rows of its chunk
    (up to near-ties at the k-th place, where the search may pick either row).

    Parameters
    ----------
    queries : tensor of shape (B, D)
    train : tensor of shape (N, D), with N >= kth
    kth : int >= 1
    max_block : int, default=2**24
    exclude_copies : bool, default=False
        Leave out of each query's search the training rows that are copies of it up to
        rounding (:func:`~sklearn_reclag._backend.near_copies`; the query itself among
        them): the leave-one-out distances of training rows, some of which occur more
        than once. A query with fewer than ``kth`` other rows gets the distance to a
        copy (about 0).
    algorithm : {'brute', 'faiss', 'faiss-ivf'}, default='brute'
        Who finds the ``kth`` nearest rows (:class:`KNNDetector`'s ``algorithm``); the
        faiss searches need CPU float32 tensors and no ``exclude_copies``.
    index : faiss index, default=None
        The index of ``train`` that 'faiss-ivf' searches (:func:`ivf_index`).
    scales : tensor of shape (N,), default=None
        A factor for each training row: the rows searched are ``train * scales[:, None]``
        (the unit rows of :class:`KNNDetector`, ``scales = 1 / ||x||``), formed a block
        at a time, never as a copy of ``train``.

    Returns
    -------
    tensor of shape (B,)
    """
    if algorithm == "brute" or exclude_copies:
        nearest = nearest_neighbours(queries, train, kth, max_block=max_block,
                                     exclude_copies=exclude_copies, scales=scales)
        return _largest_distance(queries, train, nearest, max_block, scales=scales)
    nearest, squared = faiss_nearest_neighbours(queries, train, kth, index=index,
                                                max_block=max_block, return_squared=True,
                                                scales=scales)
    return _largest_distance(queries, train, nearest, max_block, squared=squared,
                             scales=scales)


def nearest_neighbours(queries, train, k, *, max_block=_BLOCK, exclude_copies=False,
                       scales=None):
    """Indices of the ``k`` nearest training rows of each query, unsorted: the search of
    :func:`kth_neighbour_distance` (a (B, k) tensor of row indices of ``train``, whose
    rows are scaled by ``scales`` where given), without the copies of the query with
    ``exclude_copies``."""
    n_queries, n_train = queries.shape[0], train.shape[0]
    # Costs N * D per chunk of queries, 1/B of the products.
    train_sq_norms = torch.einsum("nd,nd->n", train, train)
    if scales is not None:
        # The scaled rows' |s x|^2, and the factor -2 s of their products: the scaled
        # rows themselves are never formed.
        train_sq_norms.mul_(scales).mul_(scales)
        product_factors = -2 * scales
    chunk = _memory_chunk(max_block, n_queries)
    # Every block is written into the same memory: on a CPU a fresh block of 64 MiB per
    # product pays its page faults again (measured: 10-20 % of the search).
    buffer = queries.new_empty(n_queries * min(chunk, n_train))
    if exclude_copies:
        query_sq_norms = torch.einsum("bd,bd->b", queries, queries)[:, None]
        tolerance = copy_tolerance(queries.dtype, queries.shape[1])
    values = nearest = None
    for rows in iter_slices(n_train, chunk):
        block = buffer[: n_queries * (rows.stop - rows.start)].view(n_queries, -1)
        if scales is None:
            # |x|^2 - 2 z.x: the squared distance less |z|^2, in one fused product.
            torch.addmm(train_sq_norms[rows], queries, train[rows].T, alpha=-2, out=block)
        else:
            # |s x|^2 - 2 s (z.x): one pass over the block more than the fused product.
            torch.mm(queries, train[rows].T, out=block)
            block.mul_(product_factors[rows]).add_(train_sq_norms[rows])
        if exclude_copies:
            _drop_copies(block, query_sq_norms, train_sq_norms[rows], tolerance)
        values, nearest = _merge_smallest(values, nearest, block, rows.start, k)
    return nearest


def faiss_nearest_neighbours(queries, train, k, *, index=None, max_block=_BLOCK,
                             return_squared=False, scales=None):
    """Indices of the ``k`` nearest training rows of each query, found by faiss: its
    exact flat search (``faiss.knn``: the kernel of ``IndexFlatL2.search``, reading
    ``train`` in place) or, given an ``index``, that index's (approximate) search.

    ``queries`` and ``train`` are CPU float32 tensors. An approximate index may find
    fewer than ``k`` rows for a query (its cells hold too few): those queries are
    searched exactly by :func:`nearest_neighbours`, so every index returned is a row.
    ``return_squared``: also faiss's squared distances of those rows (B, k), from its
    expansion ``|z|^2 + |x|^2 - 2 z.x``; NaN for the queries searched again.
    ``scales``: the rows searched are ``train * scales[:, None]`` (see
    :func:`faiss_exact_search`; an index holds its own rows, scaled when built).
    """
    if index is None:
        squared, nearest = faiss_exact_search(queries, train, k, scales=scales)
    else:
        squared, nearest = index.search(np.ascontiguousarray(queries.numpy()), k)
        squared, nearest = torch.from_numpy(squared), torch.from_numpy(nearest)
    short = (nearest < 0).any(dim=1).nonzero().flatten()
    if short.numel():
        nearest[short] = nearest_neighbours(queries[short], train, k, max_block=max_block,
                                            scales=scales)
        squared[short] = math.nan
    return (nearest, squared) if return_squared else nearest


def faiss_exact_search(queries, train, k, *, inner_product=False, scales=None):
    """faiss's exact flat search (``faiss.knn``: the kernel of ``IndexFlatL2.search``, or
    with ``inner_product`` of ``IndexFlatIP.search``) of the CPU float32 tensors
    ``queries`` in ``train``, read in place: (B, k) tensors of the values (squared
    distances, smallest first, or inner products, largest first) and of the rows.

    ``scales`` (N,): search the rows ``train * scales[:, None]``. faiss reads the rows
    it searches, so these are formed a block of at most ``_SCALED_BLOCK`` entries at a
    time (a bank that fits searched in one call) and the k best of the blocks merged:
    no copy of the bank.
    """
    faiss = _import_faiss()
    metric = faiss.METRIC_INNER_PRODUCT if inner_product else faiss.METRIC_L2
    queries = np.ascontiguousarray(queries.numpy())
    if scales is None:
        values, nearest = faiss.knn(queries, np.ascontiguousarray(train.numpy()), k,
                                    metric=metric)
        return torch.from_numpy(values), torch.from_numpy(nearest)
    n_train = len(train)
    chunk = _memory_chunk(_SCALED_BLOCK, train.shape[1])
    buffer = train.new_empty((min(chunk, n_train), train.shape[1]))
    values = nearest = None
    for rows in iter_slices(n_train, chunk):
        block = torch.mul(train[rows], scales[rows, None], out=buffer[: rows.stop - rows.start])
        found, found_rows = faiss.knn(queries, block.numpy(), min(k, len(block)),
                                      metric=metric)
        found, found_rows = torch.from_numpy(found), torch.from_numpy(found_rows) + rows.start
        if values is None:
            values, nearest = found, found_rows
            continue
        both = torch.cat([values, found], dim=1)
        best = torch.topk(both, min(k, both.shape[1]), dim=1, largest=inner_product).indices
        values, nearest = both.gather(1, best), torch.cat([nearest, found_rows], 1).gather(1, best)
    return values, nearest


# faiss's guideline for the cells of an inverted file: 4 sqrt(N) to 16 sqrt(N), with at
# least 39 training rows per cell for its k-means (it warns below that).
_IVF_CELLS_PER_SQRT_N = 4
_IVF_MIN_ROWS_PER_CELL = 39
# Default nprobe = nlist / 8: the searched fraction of the bank (see KNNDetector Notes
# for the recall this gives).
_IVF_PROBE_FRACTION = 8


def ivf_index(train, faiss_params=None, *, scales=None):
    """faiss ``IndexIVFFlat`` (L2) over the rows ``train`` (scaled by ``scales`` where
    given: the index holds its own float32 copy of them, made here): k-means cells
    (``nlist``), of which a query searches the ``nprobe`` nearest (see
    :class:`KNNDetector`'s ``faiss_params``)."""
    faiss = _import_faiss()
    params = dict(faiss_params or {})
    unknown = set(params) - {"nlist", "nprobe"}
    if unknown:
        raise ValueError(
            f"faiss_params accepts the keys 'nlist' and 'nprobe'; got {sorted(unknown)}."
        )
    n_train, n_features = train.shape
    nlist = params.get("nlist")
    if nlist is None:
        nlist = min(round(_IVF_CELLS_PER_SQRT_N * math.sqrt(n_train)),
                    n_train // _IVF_MIN_ROWS_PER_CELL)
        nlist = max(nlist, 1)
    nprobe = params.get("nprobe", math.ceil(nlist / _IVF_PROBE_FRACTION))
    for name, value, most in (("nlist", nlist, n_train), ("nprobe", nprobe, nlist)):
        if not isinstance(value, Integral) or isinstance(value, bool) or not 1 <= value <= most:
            raise ValueError(
                f"faiss_params[{name!r}] must be an integer in [1, {most}]; got {value!r}."
            )
    train = np.asarray(train, dtype=np.float32)
    if scales is not None:
        train = train * scales[:, None]
    index = faiss.index_factory(n_features, f"IVF{int(nlist)},Flat", faiss.METRIC_L2)
    index.train(train)
    index.add(train)
    index.nprobe = int(nprobe)
    return index


def resolve_algorithm(algorithm, device, dtype):
    """The search :class:`KNNDetector` uses (and LOFDetector, NNGuideDetector):
    ``algorithm`` with 'auto' resolved, and the faiss searches replaced by 'brute' (with
    a warning) where faiss-cpu cannot run them (a GPU device, float64)."""
    if algorithm == "brute":
        return "brute"
    on_cpu = torch.device(device).type == "cpu"
    float32 = resolve_dtype(dtype) == torch.float32
    if algorithm == "auto":
        return "faiss" if on_cpu and float32 and _faiss_available() else "brute"
    _import_faiss()  # an ImportError naming the extra
    if not (on_cpu and float32):
        warnings.warn(
            f"algorithm={algorithm!r} searches float32 rows on the CPU with faiss-cpu, but "
            f"device={device!r} and dtype={dtype!r}: the exact torch search "
            "(algorithm='brute') is used instead. Pass device='cpu' and dtype='float32' "
            "to use faiss, or algorithm='brute' to silence this warning.",
            UserWarning,
            stacklevel=5,  # the caller of fit
        )
        return "brute"
    return algorithm


def _faiss_available():
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "The faiss searches (algorithm='faiss', 'faiss-ivf') need faiss; install it with "
            '`pip install "sklearn-reclag[faiss]"`, or use algorithm=\'brute\'.'
        ) from exc
    return faiss


def _drop_copies(block, query_sq_norms, train_sq_norms, tolerance):
    """Set to +inf the entries of a search block (``|x|^2 - 2 z.x``) where the training
    row is a copy of the query: ``|z - x|^2 <= t (|z|^2 + |x|^2)``, near_copies' rule,
    read from the block as ``(|x|^2 - 2 z.x) - t |x|^2 <= (t - 1) |z|^2``.

    One comparison with a bound per query (``t max |x|^2`` for ``t |x|^2``) finds the
    few candidates, and the rule is tested on them alone: a pass over the block, about a
    tenth of the search's time (1,000 rows searched in 20,000 of 256 features on one
    CPU thread: 1.09-1.11 s against 0.98-0.99 s), where the rule on every entry cost 40 %.
    """
    bound = (tolerance - 1) * query_sq_norms + tolerance * train_sq_norms.max()
    query, row = block.le(bound).nonzero(as_tuple=True)
    if query.numel():
        copies = (block[query, row] - tolerance * train_sq_norms[row]
                  <= (tolerance - 1) * query_sq_norms[query, 0])
        block[query[copies], row[copies]] = math.inf


def _merge_smallest(values, nearest, block, first_row, k):
    """The k smallest values of each row of ``values`` and ``block`` together, and the
    training rows they belong to (``block``'s column j is training row first_row + j).

    Unsorted: only the set matters. The block is reduced to its own k smallest first, so
    the concatenation stays small.
    """
    top = torch.topk(block, min(k, block.shape[1]), dim=1, largest=False, sorted=False)
    top_rows = top.indices + first_row
    if values is None:
        return top.values, top_rows
    both = torch.cat([values, top.values], dim=1)
    keep = torch.topk(both, min(k, both.shape[1]), dim=1, largest=False, sorted=False).indices
    return both.gather(1, keep), torch.cat([nearest, top_rows], dim=1).gather(1, keep)


def _largest_distance(queries, train, nearest, max_block, squared=None, scales=None):
    """``max_j ||z - x_nearest[., j]||`` for each query (see :func:`neighbour_distances`).

    ``squared``: the search's own squared distances of the rows ``nearest`` (faiss's
    expansion, off by at most its rounding ``t (|z|^2 + |x|^2)``,
    :func:`~sklearn_reclag._backend.copy_tolerance`'s t). With ``|x|^2 <= 2 |z|^2 + 2
    |z - x|^2``, that is at most ``e = t (3 |z|^2 + 3 s)`` for rows whose squared
    distances are below s, the largest of ``squared`` (a third more covers its own
    rounding), read from the search: no pass over the bank. The largest true distance
    is then among the rows within ``2 e`` of the largest of them, and only those are
    computed again: about one row a query instead of k (the k differences were 13 % of
    faiss's search time at k = 50, 512 features). The same distance as from all k
    rows; a NaN row of ``squared`` (searched again without faiss) keeps all k.
    """
    if squared is None:
        return neighbour_distances(queries, train, nearest, max_block=max_block,
                                   scales=scales).amax(dim=1)
    largest = squared.amax(dim=1)
    rounding = 3 * copy_tolerance(queries.dtype, queries.shape[1]) * (
        torch.einsum("bd,bd->b", queries, queries) + largest.clamp_min(0))
    candidate = (squared >= (largest - 2 * rounding)[:, None]) | squared.isnan()
    query, column = candidate.nonzero(as_tuple=True)
    distances = neighbour_distances(queries[query], train, nearest[query, column, None],
                                    max_block=max_block, scales=scales)[:, 0]
    out = queries.new_full((len(queries),), -math.inf)
    return out.scatter_reduce_(0, query, distances, reduce="amax")


def neighbour_distances(queries, train, nearest, *, max_block=_BLOCK, scales=None):
    """``||z - x_nearest[., j]||`` for each query and each of its neighbours, a (B, k)
    tensor, from the differences themselves (no cancellation), in chunks of queries of
    at most ``max_block`` entries of differences (fewer on a CPU, see
    ``_CPU_DIFFERENCES_BLOCK``); with ``scales``, the rows are ``train * scales[:, None]``
    (the same product as :func:`faiss_exact_search` forms, so the same distances)."""
    n_queries, n_nearest = nearest.shape
    n_features = queries.shape[1]
    if queries.device.type == "cpu":
        max_block = min(max_block, _CPU_DIFFERENCES_BLOCK)
    out = queries.new_empty(n_queries, n_nearest)
    for rows in iter_slices(n_queries, _memory_chunk(max_block, n_nearest * n_features)):
        neighbours = nearest[rows].reshape(-1)
        differences = train.index_select(0, neighbours)
        if scales is not None:
            differences.mul_(scales.index_select(0, neighbours)[:, None])
        differences = differences.view(-1, n_nearest, n_features).sub_(queries[rows, None])
        out[rows] = torch.linalg.vector_norm(differences, dim=2)
    return out


# Where the origin is informative: the rows' mean is at least half their typical deviation
# from it (|mean|^2 >= 0.25 E|x - mean|^2). Measured: standardised columns give 0.0 (wine,
# breast cancer), a 1-D CNN's ReLU features 1.9, digits pixels 3.2-8.6.
_ORIGIN_RATIO = 0.25


def usable_neighbours(detector, n_train, why):
    """The k a neighbour detector can use on ``n_train`` rows: ``n_neighbors``, or
    ``n_train - 1`` with a warning, as LocalOutlierFactor does (the leave-one-out scores
    of offset_ read k neighbours among the other rows); fewer than 2 rows are an error
    that says ``why`` the detector needs them."""
    if n_train < 2:
        raise ValueError(
            f"{type(detector).__name__} needs at least 2 in-distribution training rows "
            f"(n_samples = {n_train}): {why}."
        )
    k = min(detector.n_neighbors, n_train - 1)
    if k < detector.n_neighbors:
        warnings.warn(
            f"n_neighbors ({detector.n_neighbors}) is not smaller than the number of "
            f"in-distribution training rows ({n_train}). n_neighbors will be set to "
            f"(n_samples - 1) = {k} for estimation.",
            UserWarning,
            stacklevel=5,  # the caller of fit (through fit, _fit_context and _fit)
        )
    return k


def resolved_normalize(normalize, X):
    """``normalize`` with 'auto' resolved on the training rows X."""
    return origin_is_informative(X) if normalize == "auto" else bool(normalize)


def warn_if_offset_dominates(detector, X):
    """Warn where float32 k-NN distances between the training rows X cannot be trusted:
    the rows share a common offset that dwarfs their spread
    (:func:`~sklearn_reclag.base.dominant_offset`), and their distances keep too few
    digits to rank neighbours or to tell a row from its copies."""
    if np.dtype(detector.dtype) == np.float32 and dominant_offset(X) is not None:
        warnings.warn(
            f"{type(detector).__name__}: the training rows share a common offset over ten "
            "times their spread (unnormalised features?): float32 distances between them "
            "keep too few digits to rank neighbours, and the threshold is unreliable. "
            "Centre the features first (StandardScaler(with_std=False) in a Pipeline), or "
            "pass dtype='float64'.",
            UserWarning,
            stacklevel=5,  # the caller of fit (through fit, _fit_context and _fit)
        )


def origin_is_informative(X):
    """Whether a row's direction from the origin says something about it: False for rows
    centred on the origin (standardised columns), where normalising them to unit length
    would compare their directions around their own mean."""
    if X.shape[1] < 2:  # a scalar's direction is its sign alone
        return False
    mean, spread = mean_and_spread(X)
    return bool(mean @ mean >= _ORIGIN_RATIO * spread)


def _unit_rows(V):
    """Rows of V divided by their L2 norm; rows of zeros stay zeros (a new tensor)."""
    norms = torch.linalg.vector_norm(V, dim=1, keepdim=True)
    return V / torch.where(norms > 0, norms, torch.ones_like(norms))


def bank_rows(X, dtype, out=None):
    """The rows of a k-NN bank: X itself where it can be, else one copy in ``dtype``.

    Rows that already have ``dtype`` and a C-contiguous layout (a float32 array, an
    ``np.memmap`` of float32 rows) are kept as they are, not copied: a reference, as
    :class:`~sklearn.neighbors.NearestNeighbors` keeps its ``_fit_X``, so a bank on disk
    stays on disk and scoring reads it block by block (the detector never writes to it;
    writing to X after fit changes the bank). Otherwise the rows are converted a block
    at a time into one new array of ``dtype`` (``out`` where given: the next rows of a
    growing bank): one copy, and no float64 temporary the size of X.
    """
    dtype = np.dtype(dtype)
    if out is None and X.dtype == dtype and X.flags.c_contiguous:
        return X
    out = np.empty(X.shape, dtype=dtype) if out is None else out
    for rows in iter_slices(len(X), _STATISTICS_BLOCK):
        out[rows] = X[rows]
    return out


def row_scales(X, dtype):
    """``1 / ||x||`` of each row of X in ``dtype``, 1 for a row of zeros (which stays
    zeros, as :class:`~sklearn.preprocessing.Normalizer` leaves it): the factors that
    make the rows unit rows. The norms are taken in float64, a block at a time."""
    scales = np.empty(len(X), dtype=dtype)
    for rows in iter_slices(len(X), _STATISTICS_BLOCK):
        block = np.asarray(X[rows], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        scales[rows] = 1.0 / np.where(norms > 0, norms, 1.0)
    return scales
