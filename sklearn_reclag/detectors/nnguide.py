"""Nearest Neighbor Guidance, NNGuide (Park, Jung & Teoh, ICCV 2023).

The energy of the head's logits, ``E(v) = logsumexp(W v + b)``, times the mean cosine
similarity of v to its k nearest rows of a guide bank whose rows are the L2-normalised
training rows scaled by their own energy. The search is exact: brute force on the device
(the bank is multiplied a chunk at a time and the k largest similarities of every chunk
are merged with those of the chunks before, so no (n_test x n_bank) matrix is built), or
faiss's flat inner-product search on the CPU (``algorithm``).
"""

import math
import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import _memory_chunk, iter_slices, map_batches, near_copies
from .._docstrings import fill_doc
from ..base import BaseOODDetector, row_keys, threshold_rows
from ._banks import _unit_rows as _unit_rows_numpy
from .knn import (
    _merge_smallest,
    _unit_rows,
    faiss_exact_search,
    resolve_algorithm,
    usable_neighbours,
)

# Bank rows per block of fit: 4,096 rows of 512 float64 features are 16 MiB.
_FIT_BLOCK_ROWS = 4096
# Most entries of one block of (query rows x bank rows) similarities: 64 MiB in float32.
_BLOCK = 2**24


@fill_doc
class NNGuideDetector(BaseOODDetector):
    """Nearest Neighbor Guidance (NNGuide): the energy score guided by a bank of rows.

    Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution Detection",
    ICCV 2023. With ``E(v) = logsumexp(W v + b)`` the energy confidence of the head's
    logits, ``z = v / ||v||``, and the guide bank ``g_i = E(x_i) x_i / ||x_i||`` of
    training rows x_i::

        score_samples(v) = E(v) * mean_{i in N_k(v)} z . g_i

    where ``N_k(v)`` are the k bank rows with the largest ``z . g_i``. The mean is a
    cosine similarity scaled by the neighbours' confidence: a row near confident
    training rows keeps its energy, a row far from all of them (or near unconfident
    ones) loses it. Higher means more in-distribution.

    This follows the official code (OpenOOD's ``nnguide_postprocessor.py``, the
    authors' own): the bank is a random ``bank_fraction`` of the training rows (``alpha
    = 0.01``, whole loader batches, in the code; the paper describes the bank as the
    training set), the neighbours are the k largest inner products with the guide rows
    (a faiss ``IndexFlatIP``), k = 100. Its normaliser adds 1e-10 to every component
    after dividing by the norm, which changes a similarity by about 1e-10 and is left
    out here; a row of zeros has no direction and stays zero (similarity 0).

    ``algorithm`` chooses who finds the k largest similarities: the suite's exact torch
    search (the bank multiplied a chunk at a time, the k largest of every chunk merged
    into a running top-k, as :class:`KNNDetector`'s), or faiss's exact flat
    inner-product search (the kernel of the official ``IndexFlatIP``, on the bank in
    place: no copy of it). Both find the k largest similarities (rows tied at the k-th
    place may differ, with the same similarity), so they give the same scores to
    float32 rounding.

    Parameters
    ----------
    n_neighbors : int >= 1, default=100
        The k of the mean over the nearest bank rows (the official value). With fewer
        training rows than ``n_neighbors + 1``, fit uses ``n_samples - 1`` (with a
        warning): ``n_neighbors_``.
    bank_fraction : float in (0, 1], default=0.01
        Fraction of the training rows kept as the guide bank, drawn at random with
        ``random_state`` (the official code keeps about 1 %); 1.0 keeps them all. The
        bank holds ``ceil(bank_fraction * n_samples)`` rows and never fewer than
        ``n_neighbors_ + 1`` (a mean over k neighbours needs k rows, and the threshold
        scores a bank row without itself; the official bank is whole batches of the
        training loader, never fewer than one batch).
    algorithm : {'auto', 'brute', 'faiss'}, default='auto'
        The search for the k largest similarities ``z . g`` over the bank.

        - 'brute': the suite's exact torch search, on any ``device`` and ``dtype``.
        - 'faiss': faiss's exact flat inner-product search (``faiss.knn`` with
          ``METRIC_INNER_PRODUCT``: the kernel of ``IndexFlatIP.search``, which the
          official code uses) on the CPU, float32; ``pip install
          "sklearn-reclag[faiss]"``. The same scores as 'brute' to float32 rounding, and
          faster on the CPU (see Notes).
        - 'auto': 'faiss' when faiss is importable, ``device`` resolves to the CPU and
          ``dtype='float32'``; 'brute' otherwise.

        'faiss' with ``dtype='float64'`` or a GPU device warns and uses 'brute'
        (faiss-cpu searches float32 rows in host memory): ``algorithm_``. There is no
        approximate index (:class:`KNNDetector`'s 'faiss-ivf'): see Notes.
    ${head}
    ${contamination}
    ${device}
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of the bank rows (unused when the bank holds every row).

    Attributes
    ----------
    bank_ : ndarray of shape (n_bank, n_features)
        The guide bank: the bank rows, L2-normalised and scaled by their energy.
    bank_indices_ : ndarray of shape (n_bank,)
        Which in-distribution training rows (after the ``OOD_LABEL`` rows are left
        out) form the bank, in increasing order.
    n_neighbors_ : int
        The k used: ``min(n_neighbors, n_samples - 1)``.
    algorithm_ : {'brute', 'faiss'}
        The search used (``algorithm``, with 'auto' resolved).
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    EnergyDetector : the energy score alone, ``E(v)``.
    KNNDetector : the distance to the k-th nearest normalised training row.

    Notes
    -----
    **Threshold.** ``offset_`` is the ``contamination`` quantile of training rows'
    scores as new rows would get them: each row is scored against the bank without
    its own guide row and those of its copies (leave one out; a row outside the bank
    and without a copy in it is such a row already), for at most 1,000 distinct rows
    chosen by their content. The bank too is drawn by content, so the same rows in
    another order give the same model. The head, when fit trains it, is held fixed, as
    for the logit detectors. The threshold's scores come from the torch search whatever
    ``algorithm`` is (faiss cannot leave out each row's copies; they are read from at
    most 1,000 rows), so ``offset_`` does not depend on ``algorithm``.

    **Search speed** (``algorithm``). ``score_samples`` of 10,000 queries against a bank
    of 50,000 guide rows of 512 features, k = 100, float32, on a 2-core AMD EPYC (3 runs
    each, the machine otherwise idle): 'brute' 14.3-15.1 s on 1 thread and 8.5-8.9 s on
    2, 'faiss' 6.4-6.9 s and 4.2-5.8 s (``torch.set_num_threads``,
    ``faiss.omp_set_num_threads``); the scores agreed to 3e-7 (relative), ``offset_``
    exactly. There is no approximate search: the default bank is 1 % of the training
    rows (12,800 rows for ImageNet-1K's 1.28 million: with its 2,048 features, the
    multiply-adds per query of the bank measured here), which the exact search covers in
    seconds per 10,000 queries; :class:`KNNDetector`'s inverted file ('faiss-ivf') was
    slower than the exact search on 100,000 rows at its default ``nprobe`` (its Notes);
    a missed neighbour lowers a score; and a guide row's norm is its energy, so the
    cells of a query's nearest centroids need not hold its largest inner products.

    **Energies.** The score assumes positive energies, as a network's logits give: a
    negative ``E`` flips the sign of a guide row and of the query's confidence, and
    the product no longer ranks rows by confidence. Fit warns when a bank row's
    energy is not positive; adding a constant to the head's intercept adds it to
    every energy.

    **Hyperparameter search.** ``NNGuideDetector.search_space``:
    ``{'n_neighbors': [1, 10, 50, 100], 'bank_fraction': [0.01, 0.1, 1.0]}``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import NNGuideDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> det = NNGuideDetector(n_neighbors=10, bank_fraction=0.1, device="cpu",
    ...                       random_state=0).fit(X[y < 5], y[y < 5])
    >>> det.bank_.shape
    (91, 64)
    >>> bool(det.score_samples(X[y < 5]).mean() > det.score_samples(X[y >= 5]).mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "bank_fraction": [Interval(Real, 0, 1, closed="right")],
        "algorithm": [StrOptions({"auto", "brute", "faiss"})],
        "head": [None, object],
        "random_state": ["random_state"],
    }
    _tensor_attributes = ("bank_", "head_coef_", "head_intercept_")
    _shared_attributes = ("bank_",)  # only read by scoring: not copied once per call

    search_space = {"n_neighbors": [1, 10, 50, 100], "bank_fraction": [0.01, 0.1, 1.0]}
    """A GridSearchCV ``param_grid``: k around the official 100, and banks of 1 %, 10 %
    and all of the training rows."""

    def __init__(self, n_neighbors=100, *, bank_fraction=0.01, algorithm="auto", head=None,
                 contamination=0.05, device="auto", dtype="float32", batch_size=None,
                 random_state=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n_neighbors = n_neighbors
        self.bank_fraction = bank_fraction
        self.algorithm = algorithm
        self.head = head
        self.random_state = random_state

    def _fit(self, X, y):
        n_train = X.shape[0]
        self.n_neighbors_ = usable_neighbours(
            self, n_train, "offset_ scores a bank row against the other bank rows")
        self.algorithm_ = resolve_algorithm(self.algorithm, self.device_, self.dtype)
        self._fit_head(X, y)
        n_bank = min(n_train, max(math.ceil(self.bank_fraction * n_train),
                                  self.n_neighbors_ + 1))
        keys = row_keys(X, dtype=self.dtype)
        if n_bank == n_train:
            self.bank_indices_ = np.arange(n_train)
        else:
            # A random draw fixed by the rows' content and random_state, not by their
            # positions: the rows in another order give the same bank (the keys are
            # pseudo-random; a salt drawn from random_state reorders them).
            salt = check_random_state(self.random_state).randint(
                np.iinfo(np.int64).max, dtype=np.int64)
            order = np.argsort(keys ^ np.uint64(salt), kind="stable")
            self.bank_indices_ = np.sort(order[:n_bank])
        # Block by block into one array of dtype: no float64 copies of the bank rows
        # (four of them before, 8x a float32 bank with bank_fraction=1).
        self.bank_ = np.empty((n_bank, X.shape[1]), dtype=self.dtype)
        energies = np.empty(n_bank)
        for rows in iter_slices(n_bank, _FIT_BLOCK_ROWS):
            block = np.asarray(X[self.bank_indices_[rows]], dtype=np.float64)
            energies[rows] = logsumexp(block @ self.head_coef_.T + self.head_intercept_,
                                       axis=1)
            self.bank_[rows] = _unit_rows_numpy(block) * energies[rows, None]
        if not (energies > 0).all():
            warnings.warn(
                f"{int(np.sum(energies <= 0))} of the {n_bank} bank rows have an energy "
                "(logsumexp of the head's logits) <= 0: NNGuide multiplies energies and "
                "assumes them positive, so its score no longer ranks rows by confidence. "
                "Add a constant to the head's intercept (it adds to every energy) to make "
                "them positive.",
                UserWarning,
                stacklevel=4,  # the caller of fit (through fit and _fit_context)
            )
        # The threshold's rows: one per distinct row, chosen by content.
        return partial(self._held_out_training_scores, X[threshold_rows(n_train, keys)])

    def _held_out_training_scores(self, X):
        """Scores of training rows as new rows would get them: without their own guide
        row and those of their copies (a new row has no copy in the bank)."""
        return map_batches(partial(self._score_batch, leave_out_copies=True), X,
                           read_only=True, **self._batch_kwargs())

    def _score_batch(self, V, state, leave_out_copies=False):
        energy = torch.logsumexp(self._head_logits(V, state), dim=1)
        return energy * self._mean_top_similarity(_unit_rows(V), state["bank_"],
                                                  leave_out_copies)

    def _mean_top_similarity(self, Z, bank, leave_out_copies=False):
        """Mean of the ``n_neighbors_`` largest ``z . g`` over the bank rows g, exact,
        with the bank multiplied a chunk at a time. ``leave_out_copies`` leaves out of
        each query's neighbours the guide rows of its copies (up to rounding,
        :func:`~sklearn_reclag._backend.near_copies` on the normalised rows), the
        mean then over as many neighbours as are left. With ``algorithm_='faiss'``, faiss
        finds the largest ``z . g`` instead (but for ``leave_out_copies``: the threshold's
        scores stay with the exact torch search, which can leave out each row's copies)."""
        if not leave_out_copies and getattr(self, "algorithm_", "brute") == "faiss":
            similarities, _ = faiss_exact_search(Z, bank, self.n_neighbors_,
                                                 inner_product=True)
            return similarities.mean(dim=1)
        n_queries, n_bank = Z.shape[0], bank.shape[0]
        values = nearest = None
        for rows in iter_slices(n_bank, _memory_chunk(_BLOCK, n_queries)):
            # Negated, so that the k largest similarities are the k smallest entries.
            block = -(Z @ bank[rows].T)
            if leave_out_copies:
                block.masked_fill_(near_copies(Z, _unit_rows(bank[rows])), math.inf)
            values, nearest = _merge_smallest(values, nearest, block, rows.start,
                                              self.n_neighbors_)
        kept = torch.isfinite(values)
        total = torch.where(kept, values, torch.zeros_like(values)).sum(dim=1)
        n_kept = kept.sum(dim=1)
        mean = -total / n_kept.clamp_min(1)
        if bool((n_kept > 0).all()):
            return mean
        # Every bank row is a copy of this row (one distinct direction): nothing to
        # leave it out against; its own score is the score of a new row like it.
        return torch.where(n_kept > 0, mean, self._mean_top_similarity(Z, bank))
