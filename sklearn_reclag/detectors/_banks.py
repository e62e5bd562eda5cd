"""Memory banks shared by the Hopfield detectors (HE, SHE and RecLag).

A detector of this family stores, for every class c, a bank Xi_c of memories (rows in
R^D) and scores a feature vector v with the class-wise log-sum-exp
``lse(beta * Xi_c v)``. Banks of unequal sizes are stored padded to one array of shape
(n_banks, n_slots, n_features) with a boolean mask of the real slots, so that scoring is one
batched tensor program over classes and memories (``_backend.class_logsumexp``).

Routing turns the per-class matrix ``lse`` (B, C) into one
score per row:

- 'predicted': the bank of the head's predicted class (argmax of the unclipped logits);
- 'max': the largest of the per-class values;
- 'pooled': one bank of all memories, i.e. the logsumexp over classes of ``lse``.

Energy 'lse' scores ``(1/beta) * lse``; 'full' also subtracts the visible Lagrangian
``|v|^2 / 2``; 'density' moreover gives each memory the bias ``-beta |xi|^2 / 2``, which
makes the score ``(1/beta) lse(-beta |v - xi|^2 / 2)``: the log-density (up to a constant,
times 1/beta) of an isotropic Gaussian mixture with variance 1/beta on the memories, for any
memory norms.
"""

import math
import warnings
from abc import abstractmethod
from functools import partial
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import (
    RowBanks,
    as_tensor,
    class_logsumexp,
    iter_slices,
    map_batches,
    near_copies,
    resolve_device,
    routed_logsumexp,
    slot_sq_norms,
    take_rows,
)
from ..base import (
    _STATISTICS_BLOCK,
    BaseOODDetector,
    dominant_offset,
    row_keys,
    threshold_rows,
)
from ._covariance import COVARIANCE_CONSTRAINT, shared_spectrum
from .knn import origin_is_informative

# Entries of the largest (rows x classes x memory slots) block built while scoring:
# 2**24 float32 values are 64 MiB, whatever the number of rows or stored patterns.
_SCORE_BLOCK = 2**24


def pad_banks(X, labels, n_banks, *, max_rows=None, order=None, return_slots=False,
              rows=None):
    """Stack the rows of each class into a padded array of banks.

    The rows are copied a block at a time: the banks are the one copy made.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The rows, ``X[rows]`` (see ``rows``).
    labels : ndarray of shape (n_samples,) of int
        Bank index of each row, in ``range(n_banks)``.
    n_banks : int
    max_rows : int, default=None
        Keep at most this many rows per bank (the first ones in ``order``).
    order : ndarray of shape (n_samples,), default=None
        Order in which the rows of a bank are taken (a permutation subsamples at random);
        None keeps the order of ``X``.
    return_slots : bool, default=False
        Also return the slot each row of ``X`` went to.
    rows : ndarray of shape (n_samples,) of int, default=None
        The positions in X of the rows to stack (the stored patterns): the banks are
        filled from ``X[rows]`` without copying it first (:func:`take_rows`); None:
        every row of X.

    Returns
    -------
    banks : ndarray of shape (n_banks, n_slots, n_features)
        Zeros on padding slots.
    mask : ndarray of shape (n_banks, n_slots) of bool
        True on the slots that hold a row.
    slots : ndarray of shape (n_samples,) of int64
        With ``return_slots``: the slot of each row in its bank, -1 for a row left out.
    """
    layout = bank_layout(labels, n_banks, max_rows=max_rows, order=order)
    order, sorted_labels, slot, mask = layout
    if rows is None and _is_every_row_in_order(layout, len(X)):
        # One bank of every row in order (y=None): X itself, no copy (a bank on disk
        # stays there).
        banks = X[None]
    else:
        banks = np.zeros((*mask.shape, X.shape[1]), dtype=X.dtype)
        # A block at a time: X[order] whole would be a second copy of the bank.
        for block in iter_slices(len(order), _STATISTICS_BLOCK):
            banks[sorted_labels[block], slot[block]] = take_rows(X, rows, order[block])
    if not return_slots:
        return banks, mask
    return banks, mask, _slot_of_each_row(layout, len(labels))


def bank_layout(labels, n_banks, *, max_rows=None, order=None):
    """Where each row goes in padded banks (see :func:`pad_banks`): the rows taken, in
    bank order (``order``: positions in ``labels``), their bank and slot, and the
    (n_banks, n_slots) mask of the slots that hold a row."""
    labels = np.asarray(labels, dtype=np.intp)
    order = np.arange(len(labels)) if order is None else np.asarray(order)
    # A stable sort by bank keeps ``order`` within each bank.
    order = order[np.argsort(labels[order], kind="stable")]
    sorted_labels = labels[order]
    counts = np.bincount(labels, minlength=n_banks)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(order)) - starts[sorted_labels]
    if max_rows is not None:
        keep = slot < max_rows
        order, sorted_labels, slot = order[keep], sorted_labels[keep], slot[keep]
        counts = np.minimum(counts, max_rows)
    n_slots = max(int(counts.max(initial=0)), 1)
    return order, sorted_labels, slot, np.arange(n_slots) < counts[:, None]


def _is_every_row_in_order(layout, n_rows):
    """Whether the layout is one bank of the ``n_rows`` rows in their order."""
    order, _, _, mask = layout
    return mask.shape[0] == 1 and len(order) == n_rows and bool((order[1:] > order[:-1]).all())


def _slot_of_each_row(layout, n_rows):
    """The slot of each of the ``n_rows`` rows in its bank, -1 for a row left out."""
    order, _, slot, _ = layout
    slots = np.full(n_rows, -1, dtype=np.int64)
    slots[order] = slot
    return slots


def row_banks(X, labels, n_banks, *, dtype, max_rows=None, order=None, rows=None):
    """The banks of :func:`pad_banks` as rows of one matrix, without a copy of them.

    Returns ``(bank_rows, index, mask, slots)``: the memory in slot (c, m) is
    ``bank_rows[index[c, m]]`` where ``mask[c, m]`` (:class:`~sklearn_reclag._backend.
    RowBanks`). ``bank_rows`` is X itself where its dtype is ``dtype`` and it is
    C-contiguous (an ``np.memmap`` included: the bank stays on disk), and the index
    points at the rows ``rows`` (or every row) in place; otherwise the rows taken are
    converted, a block at a time, into one compact array of ``dtype``. Arguments and
    ``slots`` as in :func:`pad_banks`.
    """
    layout = bank_layout(labels, n_banks, max_rows=max_rows, order=order)
    order, sorted_labels, slot, mask = layout
    positions = order if rows is None else rows[order]
    if X.dtype == np.dtype(dtype) and X.flags.c_contiguous:
        bank_rows = X
    else:
        bank_rows = np.empty((len(order), X.shape[1]), dtype=dtype)
        for block in iter_slices(len(order), _STATISTICS_BLOCK):
            bank_rows[block] = X[positions[block]]
        positions = np.arange(len(order))
    # Padding slots name row 0: scoring masks them.
    index = np.zeros(mask.shape, dtype=np.int64)
    index[sorted_labels, slot] = positions
    return bank_rows, index, mask, _slot_of_each_row(layout, len(labels))


def route(lse, routing, predicted=None):
    """One value per row from the per-class ``lse`` matrix (B, C).

    ``predicted`` (B,) holds the head's predicted class index, used by 'predicted'.
    """
    if lse.shape[1] == 1:
        return lse[:, 0]
    if routing == "predicted":
        return lse.gather(1, predicted[:, None])[:, 0]
    if routing == "max":
        return lse.amax(dim=1)
    return torch.logsumexp(lse, dim=1)


def index_of(values, classes):
    """Position of each entry of ``values`` in ``classes`` (every value must be there)."""
    sorter = np.argsort(classes, kind="stable")
    return sorter[np.searchsorted(classes, values, sorter=sorter)]


class _MemoryBankDetector(BaseOODDetector):
    """Shared machinery of HE, SHE and RecLag (not for direct use).

    Subclasses implement ``_fit_memories(X, labels, n_banks)``, which sets ``memories_``
    (n_banks, n_slots, n_features) and ``memory_mask_`` (n_banks, n_slots) from the stored
    patterns ``X`` (the training rows the head classifies correctly) and their bank index.

    Banks whose memories are training rows (HE) may instead be kept as those rows and
    the row of each slot, ``bank_rows_`` and ``memory_index_`` (:func:`row_banks`): no
    copy of the bank; ``memories_`` is then formed when read.
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "routing": [StrOptions({"predicted", "max", "pooled"})],
        "energy": [StrOptions({"lse", "full", "density"})],
        "metric": [StrOptions({"euclidean", "cosine", "mahalanobis"})],
        "covariance": COVARIANCE_CONSTRAINT,
        "head": [None, object],
    }
    # y=None (and no head) means one bank of every row: fit does not need labels.
    _needs_classes = False

    search_space = {"metric": ["euclidean", "cosine", "mahalanobis"], "beta": ["auto"]}
    """A GridSearchCV ``param_grid`` of the choices that matter most: the metric, and
    beta. :func:`sklearn_reclag.model_selection.default_param_grid` turns 'auto' into
    multiples of the data's own scale in each metric."""

    # The banks are only read by scoring: shared with torch on the CPU, not copied.
    _shared_attributes = ("memories_", "bank_rows_")
    _index_attributes = ("memory_index_",)

    @property
    def _tensor_attributes(self):
        banks = ("bank_rows_", "memory_index_") if self._has_row_banks else ("memories_",)
        names = banks + ("memory_mask_",)
        if getattr(self, "head_coef_", None) is not None:
            names += ("head_coef_", "head_intercept_")
        return names + self._metric_attributes()

    @property
    def _has_row_banks(self):
        return "memory_index_" in vars(self)

    def __getattr__(self, name):
        # Only reached when the attribute is missing: memories_ of banks kept as rows.
        if name == "memories_" and "memory_index_" in vars(self):
            return self._dense_banks()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _dense_banks(self, key=(slice(None), slice(None))):
        """The padded memories (n_banks, n_slots, n_features), zeros on padding, of the
        part ``key`` of the (n_banks, n_slots) slots: a view of ``memories_``, or for
        banks kept as rows (:func:`row_banks`) a new array of the rows gathered."""
        if not self._has_row_banks:
            return self.memories_[key]
        index, mask = self.memory_index_[key], self.memory_mask_[key]
        banks = np.asarray(self.bank_rows_[index.reshape(-1)]).reshape(
            *index.shape, self.bank_rows_.shape[1])
        banks[~mask] = 0
        return banks

    def _set_banks(self, mask, *, memories=None, bank_rows=None, index=None):
        """Store the banks: padded ``memories``, or the rows ``bank_rows[index]``
        (``mask=None``: none; the banks of an earlier fit go)."""
        for name in ("memories_", "bank_rows_", "memory_index_", "memory_mask_"):
            self.__dict__.pop(name, None)
        if mask is None:
            return
        if memories is None:
            self.bank_rows_, self.memory_index_ = bank_rows, index
        else:
            self.memories_ = memories
        self.memory_mask_ = mask

    def _metric_attributes(self):
        """The fitted arrays that the metric's map reads (``_memory_space``)."""
        names = () if getattr(self, "center_", None) is None else ("center_",)
        if getattr(self, "_whitening", None) is not None:
            names += ("_whitening_basis", "_whitening_shift")
        return names

    @property
    def whitening_(self):
        """``Sigma^{+1/2}`` (n_features, n_features) of ``metric='mahalanobis'``, else
        None; formed when read (scoring applies it from its spectrum)."""
        spectrum = getattr(self, "_whitening", None)
        return None if spectrum is None else spectrum.dense(-0.5)

    @abstractmethod
    def _fit_memories(self, X, labels, n_banks, rows=None):
        """Set ``memories_`` (n_banks, n_slots, n_features) and ``memory_mask_``
        (n_banks, n_slots) from the stored patterns ``X[rows]`` (``rows=None``: X;
        already in the space of ``metric``; read with :func:`take_rows`, never copied
        whole) and their bank index ``labels``; ``beta_`` is set.

        Returns the slot of each stored pattern when the memories are the patterns
        themselves (-1 for a pattern left out), else None.
        """

    # ------------------------------------------------------------------ fit
    def _fits_rows_in_place(self):
        # A fold of the cross-fit reads its rows in place, but for the whitening (its
        # covariance reads the rows at once) and a head to train on them.
        return self.metric != "mahalanobis" and not self._head_fitted_on_X()

    def _fit(self, X, y, rows=None):
        """Fit on X, or on the rows ``X[rows]`` read in place (a fold of the
        threshold's cross-fit, :meth:`_fit_rows`: its threshold is never read)."""
        if y is not None:  # before the metric: its covariance needs two rows a class too
            _check_rows_per_class(y)
        self._set_banks(None)  # a fit starts afresh: no banks of an earlier fit
        if (rows is None and self.energy == "lse" and self.metric != "cosine"
                and not origin_is_informative(X)):
            # lse grows with |v|: around the origin, the rows farthest from the data have
            # the largest norms and would be scored the most in-distribution.
            warnings.warn(
                f"{type(self).__name__}(energy='lse') rewards the norm of a row, and these "
                "rows are centred on the origin (standardised columns?), where outliers "
                "have the largest norms: they would be scored as the most "
                "in-distribution. Use energy='density' (the default), or "
                "metric='cosine'.",
                UserWarning,
                stacklevel=4,  # the caller of fit (through fit and _fit_context)
            )
        self._fit_center(X, rows)
        self._fit_metric(X, y)
        labels, stored, n_banks, predicted = self._stored_patterns(X, y, rows)
        patterns, stored_rows = self._stored_rows(X, stored, rows)
        self.beta_ = (auto_beta(patterns, labels[stored], n_banks, device=self.device_,
                                rows=stored_rows)
                      if self.beta == "auto" else float(self.beta))
        slots = self._fit_memories(patterns, labels[stored], n_banks, rows=stored_rows)
        self.patterns_are_rows_ = slots is not None
        if self.metric == "cosine":
            # Learned memories (RecLag) or class means (SHE) leave the unit sphere (and
            # the rows of row banks are the mapped copy of _stored_rows: the fit's own).
            if self._has_row_banks:
                self.bank_rows_ = _unit_rows(self.bank_rows_)
            else:
                self.memories_ = _unit_rows(self.memories_)
        if self.metric == "mahalanobis" or rows is not None:
            # A learned whitening: cross-fitted scores (and a fold has no threshold of
            # its own).
            return None
        return self._left_out_scores(X, y, labels, stored, slots, predicted)

    def _left_out_scores(self, X, y, labels, stored, slots, predicted):
        """The threshold's scores of the training rows as new rows would get them, when
        they can be had without refitting (a callable), else None (cross-fitted: learned
        memories).

        Where the memories are the training rows, the scores are leave-one-out: each
        row scored without its own copy and without every other copy of it (a row that
        occurs twice would otherwise meet itself at distance 0), as a new row is; each
        routed as the head routed it in _stored_patterns (no second pass of the head).
        """
        if slots is None:
            return None
        own_slot = np.full(len(X), -1, dtype=np.int64)
        own_slot[stored] = slots
        # The rows of threshold_rows only: the cost is linear in the bank.
        rows = threshold_rows(len(X), row_keys(X, y, dtype=self.dtype))
        row_args = [labels[rows], own_slot[rows]]
        if self.routing == "predicted" and predicted is not None:
            row_args.append(self._present_bank(X[rows], predicted[rows]))
        return partial(self._leave_one_out, X[rows], row_args)

    def _leave_one_out(self, X, row_args):
        """Scores of the training rows X, each without its own stored copy and without
        the other copies of it (``row_args``: bank, slot and routed bank of each)."""
        scores = np.array(map_batches(partial(self._score_batch, exclude_copies=True), X,
                                      read_only=True, row_args=row_args,
                                      **self._batch_kwargs()), dtype=np.float64)
        alone = ~np.isfinite(scores)
        if alone.any():
            # A row whose bank holds nothing but its own copies has no other pattern
            # to be scored against: it gets the score a new copy of it would get.
            scores[alone] = self._score_array(X[alone])
        return scores

    def _present_bank(self, X, predicted):
        """The head's predictions ``predicted`` of the rows X, moved off empty banks as
        :meth:`_predicted_bank` does (a head may know classes with no stored pattern)."""
        present = self.memory_mask_.any(axis=1)
        moved = ~present[predicted]
        if moved.any():
            logits = X[moved] @ self.head_coef_.T + self.head_intercept_
            predicted = predicted.copy()
            predicted[moved] = np.where(present, logits, -np.inf).argmax(axis=1)
        return predicted

    def _fitted_hyperparameters(self):
        return {"beta": self.beta_}

    def _auto_beta_of(self, X, y=None):
        """The ``beta_`` that ``beta='auto'`` gives on (X, y), with every training row
        as a stored pattern (no head is fitted): the scale of beta in this metric."""
        X, y = self._validate_fit_data(X, y)
        self.device_ = str(resolve_device(self.device))
        self._fit_center(X)
        self._fit_metric(X, y)
        labels = np.zeros(len(X), dtype=np.intp) if y is None else index_of(y, np.unique(y))
        return auto_beta(self._to_memory_space(X), labels, int(labels.max()) + 1,
                         device=self.device_)

    def _align_fold(self, fold):
        # A log-sum-exp over a bank of n stored patterns grows by log n: a fold's banks
        # hold 4/5 of the patterns, so each of its patterns counts n_final / n_fold times
        # (exact for a broad kernel, negligible for a sharp one, where 1/beta is small).
        # Learned memories (a fixed number per bank) and class means need nothing.
        if self.patterns_are_rows_:
            final, in_fold = self.memory_mask_.sum(axis=1), fold.memory_mask_.sum(axis=1)
            fold._pattern_log_weight = np.log(np.maximum(final, 1) / np.maximum(in_fold, 1))

    def _fit_center(self, X, rows=None):
        """``center_``: the training rows' mean where ``energy='density'`` needs it for
        precision (a common offset over ten times the rows' spread), else None.

        The density score reads distances only, ``|v - xi|^2``, which no shift changes:
        the memories and every scored row are centred on it inside the detector. The
        'lse' and 'full' energies read inner products, which a shift does change, and
        'cosine' reads directions from the origin: those are never centred.
        """
        # Only where it needs it: below the offset that costs precision, the bank stays
        # the rows themselves (no centred copy of it).
        self.center_ = None
        if self.energy == "density" and self.metric != "cosine":
            self.center_ = dominant_offset(X, rows)

    def _fit_metric(self, X, y):
        """The whitening of metric='mahalanobis' (None for the other metrics), as the
        spectrum of ``Sigma``: ``Sigma^{+1/2} = B diag(a - t) B^T + t I`` with the
        eigenvectors B (D, k), the whitening's scales a on them and t on every other
        direction. From shared_spectrum: in the span of the rows when features
        outnumber them (O(N^2 D) instead of two (D, D) eigendecompositions), and
        applied as ``(v B) diag(a - t) B^T + t v`` (2 D k a row, no (D, D) matrix: a
        minute at 1,000 x 8,192 before)."""
        self._whitening = None
        if self.metric == "mahalanobis":
            self._whitening = shared_spectrum(X, y, self.covariance)[2]
            scales, self._whitening_rest = self._whitening.whitening_scales()
            self._whitening_basis = self._whitening.basis
            self._whitening_shift = scales - self._whitening_rest

    def _stored_rows(self, X, stored, rows=None):
        """The stored patterns (the rows of ``X[rows]`` where ``stored``) in the
        metric's space, as an array and the positions of the patterns in it (None:
        every row).

        Where the metric leaves rows as they are, X itself and the positions of the
        stored rows: no copy (the banks are then the one copy a fit makes). Otherwise
        the mapped stored rows, one copy, and None.
        """
        if rows is None:
            rows = None if stored.all() else np.flatnonzero(stored)
        elif not stored.all():
            rows = rows[stored]
        if self.metric == "euclidean" and self.center_ is None:
            return X, rows
        return self._to_memory_space(X, rows), None

    def _to_memory_space(self, X, rows=None):
        """The rows ``X[rows]`` (numpy; None: X) as the memories see them (see
        ``metric``)."""
        if self.metric == "euclidean" and self.center_ is None:
            return X if rows is None else X[rows]
        kwargs = self._batch_kwargs(self._metric_attributes())
        n_rows = len(X) if rows is None else len(rows)
        # Written block by block into one array of X's dtype: no float64 copy of X.
        out = np.empty((n_rows, X.shape[1]), dtype=X.dtype)
        for block in iter_slices(n_rows, kwargs["batch_size"]):
            out[block] = map_batches(self._memory_space, take_rows(X, rows, block),
                                     read_only=True, **kwargs)
        return out

    def _memory_space(self, V, state):
        """A batch of rows (tensor) as the memories see them; never writes to ``V``.

        'cosine' divides each row by its L2 norm (a zero row stays zero, as with
        :class:`sklearn.preprocessing.Normalizer`); 'mahalanobis' whitens it,
        ``v -> Sigma^{+1/2} v``; 'euclidean' leaves it as it is. With a ``center_``,
        the row is first moved by minus it.
        """
        if state.get("center_") is not None:
            V = V - state["center_"]
        if self.metric == "cosine":
            norms = torch.linalg.vector_norm(V, dim=1, keepdim=True)
            return V / norms.clamp_min(torch.finfo(V.dtype).tiny)
        if self.metric == "mahalanobis":
            basis = state["_whitening_basis"]
            return ((V @ basis) * state["_whitening_shift"]) @ basis.T + (
                self._whitening_rest * V)
        return V

    def _stored_patterns(self, X, y, rows=None):
        """Bank index of every row (of ``X[rows]``), mask of the rows to store, number
        of banks, and the head's predicted bank of every row (None without a head).

        Stored patterns (Zhang et al., ICLR 2023): the rows with label c that the
        head classifies as c. Without y, the head's predictions are the labels; without y
        and head (or with a single class), every row goes to one bank.
        """
        single_class = y is not None and len(np.unique(y)) == 1
        if self.head is None and (y is None or single_class):
            self.classes_ = None if y is None else np.unique(y)
            self.head_coef_ = self.head_intercept_ = None
            n_rows = len(X) if rows is None else len(rows)
            return np.zeros(n_rows, dtype=np.intp), np.ones(n_rows, dtype=bool), 1, None

        self._fit_head(X, y)  # a given head (a fold): reads X's width and y only
        n_banks = len(self.classes_)
        predicted = self._predict_class_index(X, rows)
        if y is None:
            labels, stored = predicted, np.ones(len(X), dtype=bool)
        else:
            labels = index_of(y, self.classes_)
            stored = predicted == labels
            # A class the head never gets right would have an empty bank (every row
            # routed to it would score -inf): store all its rows instead.
            missed = np.bincount(labels[stored], minlength=n_banks) == 0
            missed &= np.bincount(labels, minlength=n_banks) > 0
            if missed.any():
                warnings.warn(
                    f"The head classifies no training row of classes "
                    f"{self.classes_[missed].tolist()} correctly; all their rows are stored.",
                    UserWarning,
                    stacklevel=5,  # the caller of fit (through _fit_context)
                )
                stored |= missed[labels]
        empty = np.bincount(labels[stored], minlength=n_banks) == 0
        if empty.any():
            warnings.warn(
                f"Classes {self.classes_[empty].tolist()} have no stored patterns; rows "
                "the head assigns to them are routed to the best class that has some.",
                UserWarning,
                stacklevel=5,  # the caller of fit (through _fit_context)
            )
        return labels, stored, n_banks, predicted

    # -------------------------------------------------------------- scoring
    @staticmethod
    def _banks(state):
        """The banks of a batch's ``state``: padded memories or :class:`RowBanks`."""
        if "memory_index_" in state:
            return RowBanks(state["bank_rows_"], state["memory_index_"])
        return state["memories_"]

    def _class_lse(self, V, state, exclude=None, exclude_copies=False):
        """Per-class ``lse(beta * Xi_c v)`` (B, C), in blocks of bounded size."""
        banks, mask = self._banks(state), state["memory_mask_"]
        return class_logsumexp(V, banks, mask, self.beta_, bias=self._memory_bias(banks),
                               max_block=_SCORE_BLOCK, exclude=exclude,
                               exclude_copies=exclude_copies)

    def _routed_lse(self, V, state, bank_index, exclude=None, exclude_copies=False):
        """``lse(beta * Xi_c v)`` (B,) against each row's own bank c only."""
        banks, mask = self._banks(state), state["memory_mask_"]
        return routed_logsumexp(V, bank_index, banks, mask, self.beta_,
                                bias=self._memory_bias(banks), max_block=_SCORE_BLOCK,
                                exclude=exclude, exclude_copies=exclude_copies)

    # Set on the folds of the threshold's cross-fit only (see _align_fold).
    _pattern_log_weight = None

    def _memory_bias(self, banks):
        """Per-memory logit bias: ``-beta |xi|^2 / 2`` for ``energy='density'``, plus a
        fold's pattern weight; None when there is none."""
        bias = None
        if self.energy == "density":
            bias = -0.5 * self.beta_ * slot_sq_norms(banks)
        if self._pattern_log_weight is not None:
            weight = torch.as_tensor(self._pattern_log_weight, device=banks.device,
                                     dtype=banks.dtype)[:, None]
            bias = weight.expand(banks.shape[:2]) if bias is None else bias + weight
        return bias

    def _predicted_bank(self, V, state):
        """The head's predicted class, among the classes that have a memory bank.

        A head may know classes that fit saw no row of (a head fitted elsewhere, a CV
        split); routing a row to such an empty bank would score it -inf, so the
        prediction is taken over the non-empty banks.
        """
        if state.get("head_coef_") is None:
            return None
        present = state["memory_mask_"].any(dim=1)
        logits = self._head_logits(V, state).masked_fill(~present, -math.inf)
        return logits.argmax(dim=1)

    def _score_batch(self, V, state, own_bank=None, own_slot=None, predicted=None, *,
                     exclude_copies=False):
        """Scores of a batch; ``own_bank`` / ``own_slot`` name a memory to leave out of
        each row's sums and ``predicted`` the row's bank, when fit knows them already;
        ``exclude_copies`` leaves out every memory that is a copy of the row (the
        leave-one-out scores of training rows that occur more than once)."""
        # The head reads the raw rows, for routing='predicted' only (None: no head, one
        # bank); the memories see them through the metric.
        if predicted is None and self.routing == "predicted":
            predicted = self._predicted_bank(V, state)
        exclude = None if own_slot is None else (own_bank, own_slot)
        Z = self._memory_space(V, state)
        if predicted is not None:
            # Only the predicted bank matters: score against it alone.
            lse = self._routed_lse(Z, state, predicted, exclude, exclude_copies)
        else:
            lse = route(self._class_lse(Z, state, exclude, exclude_copies), self.routing)
        return self._add_visible_energy(lse / self.beta_, Z)

    def _add_visible_energy(self, score, V):
        if self.energy in ("full", "density"):
            return score - 0.5 * (V * V).sum(dim=1)
        return score


def _unit_rows(array):
    """``array`` with every non-zero row along the last axis scaled to norm 1."""
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


# Patterns per block of auto_beta's pass over a bank: 16,384 rows of 512 float32 features
# are 32 MiB, whatever the size of the bank.
_AUTO_BETA_BLOCK = 16384
# beta_ = factor / median squared nearest-neighbour distance (see auto_beta).
_AUTO_BETA_FACTOR = 4.0


def auto_beta(patterns, labels, n_banks, *, device, max_queries=2000, rows=None):
    """The data-driven inverse temperature of ``beta='auto'``.

    ``beta = 4 / median_i d_i^2``, with ``d_i`` the distance from stored pattern i to the
    nearest other stored pattern of its bank: the Gaussian kernel ``exp(-beta d^2 / 2)``
    then has a standard deviation of half the typical gap between neighbouring
    patterns, in whatever space and scale the metric puts them. The factor was chosen by
    measurement: on the digits and novelty benchmarks, FPR95 of HE (energy='density')
    was lowest between 3 and 10 times ``1 / median d^2`` for the raw and normalised
    metrics, and within noise of its best from 1 to 10 times for 'mahalanobis'. About
    ``max_queries`` evenly spaced patterns, shared among the banks in proportion to
    their sizes, are queried against their whole bank, so the cost stays that of
    scoring ``max_queries`` rows.

    Copies are not neighbours: a pattern's copies (repeated or duplicated training
    rows, equal up to rounding, see :func:`~sklearn_reclag._backend.near_copies`) are
    left out of its nearest-neighbour search like the pattern itself, so that data whose
    every row occurs twice gets the beta of the data once, not the beta of a rounding
    error (which made the kernel a spike that no new row reaches). The distances are
    taken about the bank's mean, where the squared norms that the rounding scales with
    are those of the spread, not of a common offset.

    The patterns are ``patterns[rows]`` (``rows=None``: every row), read a block at
    a time (:func:`pad_banks`' ``rows``).

    Returns
    -------
    float
    """
    counts = np.bincount(labels, minlength=n_banks)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    # as_tensor: a view where it can be (a read-only memmap too), a copy where torch
    # cannot view the array (a negative stride); read only below.
    X = as_tensor(patterns, device, None, copy=False, read_only=True)
    nearest = []
    # Buffers shared by every bank and block: a thousand banks, each allocating its
    # bank-sized temporaries anew (gathered, in float64, centred), left GiBs in glibc's
    # heap (3.2 GiB peak on the 1.28M x 2,048 scale benchmark, measured).
    n_rows = min(_AUTO_BETA_BLOCK, int(counts.max(initial=0)))
    gathered = torch.empty((n_rows, X.shape[1]), dtype=X.dtype, device=device)
    wide = torch.empty((n_rows, X.shape[1]), dtype=torch.float64, device=device)
    # One bank at a time (once per fit, not a hot path): a query meets only its own bank,
    # a block of _AUTO_BETA_BLOCK patterns at a time, so that no copy of the bank (in
    # float64, or centred) is made.
    for c in np.flatnonzero(counts > 1):
        members = order[starts[c]:starts[c + 1]]
        if rows is not None:
            members = rows[members]  # positions in X
        contiguous = members[-1] - members[0] + 1 == len(members)

        def block_of(block, members=members, contiguous=contiguous):
            if contiguous:  # a view of X (one bank of every row, say)
                return X[members[0] + block.start: members[0] + block.stop]
            return torch.index_select(X, 0, torch.as_tensor(members[block], device=device),
                                      out=gathered[: block.stop - block.start])

        # Distances do not change under a shift; the rounding of their expansion does.
        total = torch.zeros(X.shape[1], dtype=torch.float64, device=device)
        for block in iter_slices(len(members), _AUTO_BETA_BLOCK):
            total += wide[: block.stop - block.start].copy_(block_of(block)).sum(dim=0)
        mean = (total / len(members)).to(X.dtype)
        n_queries = max(2, int(np.ceil(max_queries * counts[c] / len(labels))))
        queries = np.unique(np.linspace(0, counts[c] - 1, n_queries).round().astype(int))
        query_rows = X[torch.as_tensor(members[queries], device=device)] - mean
        query_sq_norms = torch.einsum("nd,nd->n", query_rows, query_rows)
        best = torch.full((len(queries),), math.inf, dtype=X.dtype, device=device)
        for block in iter_slices(len(members), _AUTO_BETA_BLOCK):
            bank = torch.sub(block_of(block), mean,
                             out=gathered[: block.stop - block.start])
            bank_sq_norms = torch.einsum("nd,nd->n", bank, bank)
            for group in iter_slices(len(queries), 256):
                query = query_rows[group]
                squared = torch.addmm(bank_sq_norms, query, bank.T, alpha=-2).add_(
                    query_sq_norms[group, None]).clamp_min_(0)
                # The pattern itself and its copies are no neighbours.
                squared.masked_fill_(near_copies(query, bank, bank_sq_norms), math.inf)
                own = torch.as_tensor(queries[group], device=device) - block.start
                inside = ((own >= 0) & (own < block.stop - block.start)).nonzero()[:, 0]
                squared[inside, own[inside]] = math.inf
                best[group] = torch.minimum(best[group], squared.amin(dim=1))
        nearest.append(best)
    nearest = torch.cat(nearest).cpu().numpy() if nearest else np.empty(0)
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        # Every bank holds copies of one pattern (constant features): no gap to follow,
        # and beta only rescales scores that cannot rank rows anyway.
        warnings.warn(
            "beta='auto' found no two distinct stored patterns in any bank (constant "
            "features?); it uses beta=1.0. Set beta to a number to choose another.",
            UserWarning,
            stacklevel=2,
        )
        return 1.0
    return float(_AUTO_BETA_FACTOR / np.median(nearest))


def _check_rows_per_class(y):
    labels, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        raise ValueError(
            f"Class {labels.tolist()[counts.argmin()]!r} has 1 sample in y; every class needs "
            "at least 2 samples to build its memory bank."
        )

