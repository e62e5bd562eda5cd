"""Memory banks shared by the Hopfield detectors (HE, SHE and RecLag).

A detector of this family stores, for every class c, a bank Xi_c of memories (rows in
R^D) and scores a feature vector v with the class-wise log-sum-exp
``lse(beta * Xi_c v)``. Banks of unequal sizes are stored padded to one array of shape
(n_banks, n_slots, n_features) with a boolean mask of the real slots, so that scoring is one
batched tensor program over classes and memories (``_backend.class_logsumexp``).

Routing (specs/reclag.md, DESIGN.md) turns the per-class matrix ``lse`` (B, C) into one
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
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import class_logsumexp, routed_logsumexp
from ..base import BaseOODDetector

# Entries of the largest (rows x classes x memory slots) block built while scoring:
# 2**24 float32 values are 64 MiB, whatever the number of rows or stored patterns.
_SCORE_BLOCK = 2**24


def pad_banks(X, labels, n_banks, *, max_rows=None, order=None):
    """Stack the rows of each class into a padded array of banks.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,) of int
        Bank index of each row, in ``range(n_banks)``.
    n_banks : int
    max_rows : int, default=None
        Keep at most this many rows per bank (the first ones in ``order``).
    order : ndarray of shape (n_samples,), default=None
        Order in which the rows of a bank are taken (a permutation subsamples at random);
        None keeps the order of ``X``.

    Returns
    -------
    banks : ndarray of shape (n_banks, n_slots, n_features)
        Zeros on padding slots.
    mask : ndarray of shape (n_banks, n_slots) of bool
        True on the slots that hold a row.
    """
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
    banks = np.zeros((n_banks, n_slots, X.shape[1]), dtype=X.dtype)
    banks[sorted_labels, slot] = X[order]
    mask = np.arange(n_slots) < counts[:, None]
    return banks, mask


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
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="neither")],
        "routing": [StrOptions({"predicted", "max", "pooled"})],
        "energy": [StrOptions({"lse", "full", "density"})],
        "head": [None, object],
    }
    # y=None (and no head) means one bank of every row: fit does not need labels.
    _needs_classes = False

    @property
    def _tensor_attributes(self):
        names = ("memories_", "memory_mask_")
        if getattr(self, "head_coef_", None) is not None:
            names += ("head_coef_", "head_intercept_")
        return names

    # ------------------------------------------------------------------ fit
    def _fit(self, X, y):
        labels, stored, n_banks = self._stored_patterns(X, y)
        self._fit_memories(X[stored], labels[stored], n_banks)

    def _stored_patterns(self, X, y):
        """Bank index of every row, mask of the rows to store, number of banks.

        Stored patterns (specs/baselines_and_metrics.md): the rows with label c that the
        head classifies as c. Without y, the head's predictions are the labels; without y
        and head (or with a single class), every row goes to one bank.
        """
        if y is not None:
            _check_rows_per_class(y)
        single_class = y is not None and len(np.unique(y)) == 1
        if self.head is None and (y is None or single_class):
            self.classes_ = None if y is None else np.unique(y)
            self.head_coef_ = self.head_intercept_ = None
            return np.zeros(len(X), dtype=np.intp), np.ones(len(X), dtype=bool), 1

        self._fit_head(X, y)
        n_banks = len(self.classes_)
        predicted = self._predict_class_index(X)
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
                    stacklevel=4,  # the caller of fit
                )
                stored |= missed[labels]
        empty = np.bincount(labels[stored], minlength=n_banks) == 0
        if empty.any():
            warnings.warn(
                f"Classes {self.classes_[empty].tolist()} have no stored patterns; rows "
                "the head assigns to them are routed to the best class that has some.",
                UserWarning,
                stacklevel=4,  # the caller of fit
            )
        return labels, stored, n_banks

    # -------------------------------------------------------------- scoring
    def _class_lse(self, V, state):
        """Per-class ``lse(beta * Xi_c v)`` (B, C), in blocks of bounded size."""
        banks, mask = state["memories_"], state["memory_mask_"]
        return class_logsumexp(V, banks, mask, self.beta, bias=self._memory_bias(banks),
                               max_block=_SCORE_BLOCK)

    def _routed_lse(self, V, state, bank_index):
        """``lse(beta * Xi_c v)`` (B,) against each row's own bank c only."""
        banks, mask = state["memories_"], state["memory_mask_"]
        return routed_logsumexp(V, bank_index, banks, mask, self.beta,
                                bias=self._memory_bias(banks), max_block=_SCORE_BLOCK)

    def _memory_bias(self, banks):
        """Per-memory logit bias of ``energy='density'``: ``-beta |xi|^2 / 2``, else None."""
        if self.energy == "density":
            return -0.5 * self.beta * (banks * banks).sum(dim=-1)
        return None

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

    def _score_batch(self, V, state):
        # The head is read for routing='predicted' only (None: no head, one bank).
        predicted = self._predicted_bank(V, state) if self.routing == "predicted" else None
        if predicted is not None:
            # Only the predicted bank matters: score against it alone.
            lse = self._routed_lse(V, state, predicted)
        else:
            lse = route(self._class_lse(V, state), self.routing)
        return self._add_visible_energy(lse / self.beta, V)

    def _add_visible_energy(self, score, V):
        if self.energy in ("full", "density"):
            return score - 0.5 * (V * V).sum(dim=1)
        return score


def _check_rows_per_class(y):
    labels, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        raise ValueError(
            f"Class {labels.tolist()[counts.argmin()]!r} has 1 sample in y; every class needs "
            "at least 2 samples to build its memory bank."
        )

