"""What ``partial_fit`` keeps between calls: the rows that set the threshold, the labels.

scikit-learn's incremental estimators (IncrementalPCA, MiniBatchKMeans, SGDClassifier)
keep a running state of bounded size and give, after the last call, the model of one fit
on all the rows. The detectors' threshold ``offset_`` is read from the held-out scores of
the rows of :func:`~sklearn_reclag.base.threshold_rows`: the :data:`THRESHOLD_ROWS`
distinct rows with the smallest content keys (:func:`~sklearn_reclag.base.row_keys`).
That choice is mergeable: a row among the smallest keys of all the rows is among the
smallest keys of every part that holds it, so :class:`ThresholdReservoir` keeps the
smallest keys seen so far (and how often each occurred: its copies) and holds, after any
number of calls, exactly the rows that one fit on the concatenation would read.
"""

import numpy as np

from .base import THRESHOLD_ROWS


class ThresholdReservoir:
    """The :data:`~sklearn_reclag.base.THRESHOLD_ROWS` distinct rows of smallest key.

    Attributes
    ----------
    keys : ndarray of uint64, in increasing order of first appearance
    rows : ndarray of shape (n_kept, n_features), float64
        The rows as given (before any normalisation of the detector).
    labels : ndarray or None
        Their class labels (None when fitted without y).
    copies : ndarray of int64
        How many rows of all the calls had the key: exact for every kept key, since a
        key among the smallest at the end was kept from its first occurrence on.
    extra : dict of ndarrays
        Per-row values a detector keeps with the rows (e.g. the slot of a stored
        pattern), as given with the row's first occurrence.
    """

    def __init__(self, n_features, size=THRESHOLD_ROWS):
        self.size = size
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows = np.empty((0, n_features))
        self.labels = None
        self.copies = np.empty(0, dtype=np.int64)
        self.order = np.empty(0, dtype=np.int64)
        self.extra = {}
        self.n_seen = 0

    def update(self, keys, X, y=None, **extra):
        """Merge a chunk: its rows ``X`` (n, D), their ``keys`` (n,), labels and extras."""
        n_old = len(self.keys)
        all_keys = np.concatenate([self.keys, keys])
        # First occurrence of each key: the kept rows come first, then the chunk in order.
        unique, first, counts = np.unique(all_keys, return_index=True, return_counts=True)
        old_counts = np.zeros(len(unique), dtype=np.int64)
        kept = first < n_old
        old_counts[kept] = self.copies[first[kept]] - 1
        # unique is sorted by key: the smallest keys are the first ``size``.
        chosen = first[: self.size]
        counts = (counts + old_counts)[: self.size]
        order = np.concatenate([self.order, self.n_seen + np.arange(len(keys))])
        arrangement = np.argsort(order[chosen], kind="stable")
        chosen, counts = chosen[arrangement], counts[arrangement]
        self.n_seen += len(keys)

        # The kept rows come first (their first appearance is earlier): gather the
        # chosen rows of each part, so only those of the chunk are copied and converted.
        from_old, from_new = chosen[chosen < n_old], chosen[chosen >= n_old] - n_old

        def take(old, new):
            return np.concatenate([old[from_old], np.asarray(new)[from_new]])

        self.rows = np.concatenate([self.rows[from_old],
                                    np.asarray(X[from_new], dtype=np.float64)])
        self.labels = None if y is None else take(
            self.labels if self.labels is not None else np.empty(0, dtype=np.asarray(y).dtype),
            y)
        self.extra = {name: take(self.extra.get(name, np.empty(0, dtype=np.asarray(value).dtype)),
                                 value) for name, value in extra.items()}
        self.keys, self.copies, self.order = all_keys[chosen], counts, order[chosen]
