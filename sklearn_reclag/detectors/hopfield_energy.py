"""Modern Hopfield energy scores: HE and SHE (Zhang et al., ICLR 2023).

With X_c the stored patterns of class c (the training rows of class c that the head
classifies as c) and c_hat the routed class:

- HE: ``(1/beta) * lse(beta * X_{c_hat} v)`` over every stored pattern of the class;
- SHE: ``v . m_{c_hat}``, m_c the mean of X_c.

SHE is HE with a single stored pattern per class, the mean, since
``(1/beta) * lse(beta * [m . v]) = m . v``; both share the memory-bank machinery of
:mod:`._banks`.
"""

from functools import partial
from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from types import SimpleNamespace

from sklearn.base import _fit_context

from ._banks import (
    _is_every_row_in_order,
    _MemoryBankDetector,
    _unit_rows,
    auto_beta,
    bank_layout,
    index_of,
    route,
    row_banks,
)
from .._backend import iter_slices, map_batches, resolve_device, take_rows
from .._incremental import ThresholdReservoir
from .._labels import is_ood_label
from ..base import _STATISTICS_BLOCK, row_keys, threshold_rows
from .._docstrings import fill_doc

@fill_doc
class HopfieldEnergyDetector(_MemoryBankDetector):
    """Modern Hopfield energy (HE) and simplified Hopfield energy (SHE) scores.

    Zhang et al., "Out-of-distribution detection based on in-distribution data patterns
    memorization with modern Hopfield energy", ICLR 2023. The stored patterns X_c are the
    training rows of class c that the head classifies as c (no normalization); a class the
    head never gets right stores all its rows (with a warning). Scores, with c the routed
    class:

    - ``patterns='all'`` (HE): ``score_samples(v) = (1/beta) * lse(beta * X_c v)``;
    - ``patterns='mean'`` (SHE): ``score_samples(v) = v . m_c``, m_c the mean of X_c
      (with ``routing='pooled'``: ``(1/beta) * lse_c(beta * v . m_c)``).

    ``energy='full'`` subtracts ``|v|^2 / 2``. Scoring runs in chunks of test rows and of
    stored patterns merged by an online log-sum-exp, so no (n_test x n_stored) matrix is
    ever built.

    Parameters
    ----------
    patterns : {'all', 'mean'}, default='all'
        'all' stores every pattern (HE), 'mean' one mean per class (SHE).
    beta : float > 0 or 'auto', default='auto'
        Inverse temperature of the log-sum-exp. The official value is 0.01 for ResNet
        features, 0.2 for WRN. ${beta_auto}
    ${routing}
    energy : {'lse', 'full', 'density'}, default='density'
        ${energy}
    metric : {'euclidean', 'cosine', 'mahalanobis'}, default='euclidean'
        ${metric}
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='ledoit_wolf'
        ${covariance} Used by ``metric='mahalanobis'`` only.
    max_patterns : int, default=None
        Keep at most this many randomly chosen patterns per class (drawn with
        ``random_state``); None keeps all.
    ${head}${head_without_y}
    ${contamination}
    ${device}
    random_state : int, RandomState instance or None, default=None
        Seeds the subsampling of ``max_patterns``.

    Attributes
    ----------
    memories_ : ndarray of shape (n_banks, n_slots, n_features)
        The stored patterns of every class (HE) or their means (SHE), padded with zeros
        to the largest bank; one bank when fitted without y and head. HE's ``fit``
        keeps its per-class banks as ``bank_rows_[memory_index_]`` (no copy of the
        rows): ``memories_`` is then gathered when read, a new array the size of the
        banks.
    bank_rows_ : ndarray of shape (n_rows, n_features)
        HE fitted with several banks: the rows the memories are read from, X itself
        where it is C-contiguous in ``dtype`` (a memory map too: the bank stays on
        disk, and writing to X after fit changes the bank), else one compact copy of
        the stored rows (converted, or mapped by ``metric``). Scoring gathers the slots
        it multiplies a chunk at a time. Absent where ``memories_`` is stored itself
        (SHE, ``partial_fit``, one bank of X).
    memory_index_ : ndarray of shape (n_banks, n_slots) of int64
        With ``bank_rows_``: the row of each memory slot (0 on padding slots).
    ${fitted_banks}
    ${fitted_beta}
    offset_ : float
        ``decision_function = score_samples - offset_``; the ``contamination`` quantile
        of the training rows' leave-one-out scores, as a new row would get them (HE:
        each stored row scored without its own copy; SHE: against its class mean
        without it, ``(n_c m_c - k x) / (n_c - k)``, exact, no refit) or of their
        cross-fitted scores (a learned whitening, ``metric='mahalanobis'``). A row that
        occurs more than once (repeated or augmented data) is scored without all its k
        copies (HE: the stored patterns at a distance of rounding from it, ``|z - x|^2
        <= 4 sqrt(D) eps (|z|^2 + |x|^2)``; SHE: the rows equal to it), and its copies
        share a fold; ``beta='auto'`` ignores copies too, so data whose every row occurs
        twice gets the threshold and beta of the data once.

    Notes
    -----
    The defaults are this suite's, chosen by measurement on four feature types together
    (digits CNN, MNIST-1D CNN and digits MLP features, unlabelled tabular data;
    ``benchmarks/results/defaults.md``): the density score with a data-driven beta on
    the raw features. No metric stays within 2x of the best on all four: the Euclidean
    one is 2.4x the best on the digits CNN features (where the whitened metric wins),
    the whitened one 4.4x on the MLP's features (dead units) and the cosine 4.3x on
    standardised tables; AutoOODDetector chooses among them on the user's rows. The
    papers' scores are one set of parameters away::

        HopfieldEnergyDetector(patterns="all", beta=0.01, energy="lse",
                               metric="euclidean", routing="predicted")   # HE
        HopfieldEnergyDetector(patterns="mean", energy="lse",
                               metric="euclidean", routing="predicted")   # SHE

    (beta 0.01 is the official value for ResNet features, 0.2 for WRN). The ``lse``
    score rewards the norm of the features: on standardised tabular data, where
    outliers have the larger norms, it ranks them above the inliers.

    See Also
    --------
    RecLagDetector : a few learned memories per class and a rectified energy.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import HopfieldEnergyDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> he = HopfieldEnergyDetector(beta=1.0, device="cpu").fit(X[y < 5], y[y < 5])
    >>> he.memories_.shape[0]
    5
    >>> bool(he.score_samples(X[y < 5]).mean() > he.score_samples(X[y >= 5]).mean())
    True
    """

    _parameter_constraints = {
        **_MemoryBankDetector._parameter_constraints,
        "patterns": [StrOptions({"all", "mean"})],
        "max_patterns": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, patterns="all", beta="auto", *, routing="predicted", energy="density",
                 metric="euclidean", covariance="ledoit_wolf", max_patterns=None, head=None,
                 contamination=0.05, device="auto", dtype="float32", batch_size=None,
                 random_state=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.patterns = patterns
        self.beta = beta
        self.routing = routing
        self.energy = energy
        self.metric = metric
        self.covariance = covariance
        self.max_patterns = max_patterns
        self.head = head
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Learn from a chunk of rows: a loop over chunks gives the model of one fit on
        the concatenated rows.

        HE (``patterns='all'``) appends the chunk's stored patterns: each bank grows
        in place (its buffer doubles when full: O(n D) copying for n rows in any number
        of calls), and ``beta='auto'`` is recomputed from the current banks (it queries
        at most 2,000 patterns: linear cost). SHE (``patterns='mean'``) adds them to
        running sums per class (float64), whose means are the memories. ``offset_`` is
        recomputed at the end of every call from the 1,000 threshold rows of
        :meth:`fit` (the rows of smallest content key, kept across calls by a bounded
        reservoir, :class:`~sklearn_reclag._incremental.ThresholdReservoir`), scored as
        fit scores them: leave-one-out against the current banks (HE), or against
        class means without the row and its copies (SHE). After the last call
        ``memories_``, ``score_samples`` and ``offset_`` are those of :meth:`fit` on the
        concatenated rows, to float rounding, and so is HE's ``beta_``.

        What needs all the rows at once raises a NotImplementedError that says so:
        a head fitted from the data (``head=None`` with y of two or more classes: pass
        a fitted head, whose predictions then route each chunk's rows), the whitening
        of ``metric='mahalanobis'`` (a covariance of all the rows, through which every
        pattern is stored), HE's ``max_patterns`` (a random subsample of all the rows),
        and SHE's ``beta='auto'`` with ``routing='pooled'`` (it reads the rows'
        nearest-neighbour gaps; pass a number). With one memory per class, SHE's
        scores under the other routings do not depend on beta (``(1/beta) lse(beta s)
        = s``): there ``beta='auto'`` leaves ``beta_ = 1.0``. With a head, a class it
        never classifies right in a chunk stores none of that chunk's rows (``fit``
        stores all the rows of a class the head never gets right anywhere).
        ``energy='lse'``'s warning reads the first chunk only, and so does ``center_``
        (the first chunk's mean: the scores do not depend on it, ``memories_ +
        center_`` do not either).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            Class labels (OOD_LABEL rows are ignored); given on every call or never.

        Returns
        -------
        self : object
        """
        means = self.patterns == "mean"
        refused = {
            "metric='mahalanobis'": self.metric == "mahalanobis",
            "max_patterns": self.max_patterns is not None and not means,
            "a head to fit on X (pass a fitted head)": (
                self.head is not None and self._head_fitted_on_X()),
            "patterns='mean', beta='auto' and routing='pooled' (pass a number as beta)": (
                means and self.beta == "auto" and self.routing == "pooled"),
        }
        reasons = [name for name, applies in refused.items() if applies]
        first = not hasattr(self, "_partial")
        if first and self.head is None and y is not None and len(np.unique(
                np.asarray(y)[~is_ood_label(np.asarray(y))])) > 1:
            reasons.append("head=None with y of several classes (pass a fitted head)")
        if reasons:
            raise NotImplementedError(
                f"HopfieldEnergyDetector.partial_fit appends stored patterns, and cannot "
                f"with {', '.join(reasons)}: that is fitted from all the rows at once. "
                "Use fit (see partial_fit's docstring)."
            )
        X, y = self._validate_fit_data(X, y) if first else self._validate_more_data(X, y)
        if first:
            self.device_ = str(resolve_device(self.device))
            self._whitening = None
            # From the first chunk: any point near the rows serves the precision (the
            # scores do not depend on it).
            self._fit_center(X)
            if self.head is None:
                self.classes_ = None if y is None else np.unique(y)
                self.head_coef_ = self.head_intercept_ = None
            else:
                self._fit_head(X, y)
            n_banks = 1 if self.head_coef_ is None else len(self.classes_)
            self._partial = SimpleNamespace(
                buffer=np.zeros((n_banks, 0, X.shape[1]), dtype=self.dtype),
                counts=np.zeros(n_banks, dtype=np.int64), with_y=y is not None,
                reservoir=ThresholdReservoir(X.shape[1]))
            if means:
                self._pattern_sums = np.zeros((n_banks, X.shape[1]))
                self._pattern_counts = np.zeros(n_banks, dtype=np.int64)
        state = self._partial
        if (y is not None) != state.with_y:
            raise ValueError(
                "HopfieldEnergyDetector.partial_fit was first called "
                f"{'with' if state.with_y else 'without'} y; every call must be.")
        predicted = None
        if self.head_coef_ is None:
            if y is not None and not np.isin(y, self.classes_).all():
                raise ValueError(
                    f"y holds labels other than {self.classes_.tolist()}, the one class of "
                    "the first call: several classes need a fitted head.")
            labels, stored = np.zeros(len(X), dtype=np.intp), np.ones(len(X), dtype=bool)
        else:
            predicted = self._predict_class_index(X)
            if y is None:
                labels, stored = predicted, np.ones(len(X), dtype=bool)
            else:
                if not np.isin(y, self.classes_).all():
                    unknown = np.setdiff1d(y, self.classes_)
                    raise ValueError(
                        f"y holds labels {unknown[:5]} that the head does not predict.")
                labels = index_of(y, self.classes_)
                stored = predicted == labels
        if means:
            self._add_to_means(X if stored.all() else X[stored], labels[stored])
            slots = np.where(stored, 0, -1)  # the one memory of the bank, or none
        else:
            slots = np.full(len(X), -1, dtype=np.int64)
            slots[stored] = self._append_patterns(X if stored.all() else X[stored],
                                                  labels[stored])
        codes = None if y is None else labels
        extra = {"bank": labels, "slot": slots}
        if predicted is not None:
            extra["predicted"] = predicted
        state.reservoir.update(row_keys(X, dtype=self.dtype, codes=codes), X, **extra)
        self.n_samples_seen_ = state.reservoir.n_seen
        self.patterns_are_rows_ = not means
        if self.beta != "auto":
            self.beta_ = float(self.beta)
        elif means:
            self.beta_ = 1.0  # no effect on the scores (see the docstring)
        else:
            bank_of = np.repeat(np.arange(len(state.counts)), state.counts)
            self.beta_ = auto_beta(self.memories_[self.memory_mask_], bank_of,
                                   len(state.counts), device=self.device_)
        self._check_finite_state()
        reservoir = state.reservoir
        rows = reservoir.rows.astype(X.dtype)
        if means:
            own_bank = np.where(reservoir.extra["slot"] >= 0, reservoir.extra["bank"], -1)
            row_args = [own_bank, reservoir.copies]
        else:
            row_args = [reservoir.extra["bank"], reservoir.extra["slot"]]
        if self.routing == "predicted" and predicted is not None:
            row_args.append(self._present_bank(rows, reservoir.extra["predicted"]))
        scores = (self._mean_left_out(rows, row_args) if means
                  else self._leave_one_out(rows, row_args))
        self.offset_ = float(self._fit_offset(lambda: scores))
        if not np.isfinite(self.offset_):
            raise self._overflow_error("threshold offset_")
        return self

    def _add_to_means(self, X, labels):
        """Add stored patterns (rows X of bank ``labels``) to the running sums of
        partial_fit's SHE; ``memories_`` are their means."""
        self._accumulate(self._to_memory_space(X), labels)
        self._set_means()

    def _accumulate(self, patterns, labels, rows=None):
        """Add the patterns ``patterns[rows]`` of bank ``labels`` to ``_pattern_sums``
        (float64, a block at a time: no float64 copy of them) and ``_pattern_counts``."""
        for block in iter_slices(len(labels), _STATISTICS_BLOCK):
            np.add.at(self._pattern_sums, labels[block],
                      np.asarray(take_rows(patterns, rows, block), dtype=np.float64))
        self._pattern_counts += np.bincount(labels, minlength=len(self._pattern_counts))

    def _set_means(self):
        means = self._pattern_means
        if self.metric == "cosine":
            means = _unit_rows(means)  # as fit leaves them
        self._set_banks((self._pattern_counts > 0)[:, None],
                        memories=means[:, None, :].astype(self.dtype))

    @property
    def _pattern_means(self):
        """SHE's class means of the stored patterns (float64; zeros for an empty class),
        before ``metric='cosine'`` puts them on the unit sphere."""
        return self._pattern_sums / np.maximum(self._pattern_counts, 1)[:, None]

    def _append_patterns(self, X, labels):
        """Append stored patterns (rows X of bank ``labels``) to the banks of
        partial_fit; their slots. ``memories_`` is a view of the grown buffer."""
        state = self._partial
        patterns = self._to_memory_space(X).astype(self.dtype, copy=False)
        if self.metric == "cosine":
            patterns = _unit_rows(patterns)  # as fit leaves the memories
        n_banks = len(state.counts)
        chunk_counts = np.bincount(labels, minlength=n_banks)
        order = np.argsort(labels, kind="stable")
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels)) - (np.cumsum(chunk_counts) - chunk_counts)[
            labels[order]]
        slots = state.counts[labels] + rank
        needed = int((state.counts + chunk_counts).max(initial=0))
        if needed > state.buffer.shape[1]:
            grown = np.zeros((n_banks, max(needed, 2 * state.buffer.shape[1]),
                              state.buffer.shape[2]), dtype=self.dtype)
            grown[:, : state.buffer.shape[1]] = state.buffer
            state.buffer = grown
        state.buffer[labels, slots] = patterns
        state.counts += chunk_counts
        n_slots = max(int(state.counts.max(initial=0)), 1)
        self._set_banks(np.arange(n_slots) < state.counts[:, None],
                        memories=state.buffer[:, :n_slots])
        return slots

    def _fit_memories(self, X, labels, n_banks, rows=None):
        if self.patterns == "mean":
            self._pattern_sums = np.zeros((n_banks, X.shape[1]))
            self._pattern_counts = np.zeros(n_banks, dtype=np.int64)
            self._accumulate(X, labels, rows)
            self._set_means()
            return None
        order = None
        if self.max_patterns is not None:
            order = check_random_state(self.random_state).permutation(len(labels))
        layout = bank_layout(labels, n_banks, max_rows=self.max_patterns, order=order)
        if rows is None and X.dtype == np.dtype(self.dtype) and _is_every_row_in_order(
                layout, len(X)):
            # One bank of every row in order (no labels): X itself, a view.
            self._set_banks(layout[3], memories=X[None])
            slots = np.arange(len(X))
        else:
            # The stored rows in place, and the row of each slot: no copy of the bank
            # (per-class banks padded from the rows would be one, 10 GB at ImageNet's
            # 1.28M x 2,048).
            bank_rows, index, mask, slots = row_banks(
                X, labels, n_banks, dtype=self.dtype, max_rows=self.max_patterns,
                order=order, rows=rows)
            self._set_banks(mask, bank_rows=bank_rows, index=index)
        # The memories are the stored patterns: fit scores them leave-one-out.
        return slots

    def _left_out_scores(self, X, y, labels, stored, slots, predicted):
        if self.patterns == "all":
            return super()._left_out_scores(X, y, labels, stored, slots, predicted)
        # SHE: each threshold row against the class means without it and its copies
        # (equal content keys): exact leave-one-out, no refit.
        keys = row_keys(X, y, dtype=self.dtype)
        rows = threshold_rows(len(X), keys)
        _, inverse, copies = np.unique(keys, return_inverse=True, return_counts=True)
        own_bank = np.where(stored, labels, -1)
        row_args = [own_bank[rows], copies[inverse[rows]]]
        if self.routing == "predicted" and predicted is not None:
            row_args.append(self._present_bank(X[rows], predicted[rows]))
        return partial(self._mean_left_out, X[rows], row_args)

    def _mean_left_out(self, X, row_args):
        """SHE's threshold scores of the training rows X (``row_args``: the bank each
        is stored in, -1 for none; its copies among the training rows; its routed
        bank)."""
        names = self._tensor_attributes + ("_pattern_means", "_pattern_counts")
        return map_batches(self._mean_left_out_batch, X, read_only=True, row_args=row_args,
                           **self._batch_kwargs(names))

    def _mean_left_out_batch(self, V, state, own_bank, copies, predicted=None):
        """Scores of training rows against the class means without them: the mean of a
        row's own bank c becomes ``m_c + k (m_c - z) / (n_c - k)`` (``= (n_c m_c - k z)
        / (n_c - k)``, k the row and its copies); a row whose bank holds nothing else
        keeps the score a new copy of it would get."""
        if predicted is None and self.routing == "predicted":
            predicted = self._predicted_bank(V, state)
        Z = self._memory_space(V, state)
        lse = self._class_lse(Z, state)  # (B, C): one memory a bank
        n_rows = state["_pattern_counts"][own_bank.clamp_min(0)]
        left = (own_bank >= 0) & (n_rows > copies)
        rows, bank = left.nonzero()[:, 0], own_bank[left]
        n_rows, k = n_rows[left], copies[left].to(n_rows.dtype)
        mean = state["_pattern_means"][bank]
        moved = mean + (k / (n_rows - k))[:, None] * (mean - Z[rows])
        if self.metric == "cosine":
            moved = torch.nn.functional.normalize(moved, dim=1)
        value = self.beta_ * torch.einsum("nd,nd->n", moved, Z[rows])
        if self.energy == "density":
            value = value - 0.5 * self.beta_ * torch.einsum("nd,nd->n", moved, moved)
        lse[rows, bank] = value
        routed = (lse.gather(1, predicted[:, None])[:, 0] if predicted is not None
                  else route(lse, self.routing))
        return self._add_visible_energy(routed / self.beta_, Z)
