"""Local outlier factor on features (Breunig, Kriegel, Ng & Sander, SIGMOD 2000).

A row's score compares the density of the training rows around it with the densities
around its neighbours: a row in a sparse region of a dense class is flagged, where the
k-th-neighbour distance of :class:`~sklearn_reclag.KNNDetector`, one radius for every
region, accepts it. The k-nearest-neighbour search is KNNDetector's exact, chunked one
on the detector's device, or faiss's exact flat search (``algorithm``).
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.preprocessing import normalize as l2_normalize
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from .._backend import as_tensor, iter_slices, resolve_dtype, to_numpy
from .._docstrings import fill_doc
from ..base import BaseOODDetector
from .knn import (
    _unit_rows,
    faiss_nearest_neighbours,
    nearest_neighbours,
    neighbour_distances,
    resolve_algorithm,
    resolved_normalize,
    usable_neighbours,
    warn_if_offset_dominates,
)

# Added to a mean reachability distance before it is inverted, as scikit-learn's
# LocalOutlierFactor does, so that duplicated rows (distance 0) give a large, finite density.
_DENSITY_EPS = 1e-10


@fill_doc
class LOFDetector(BaseOODDetector):
    """Local outlier factor of a row among the training rows.

    Breunig, Kriegel, Ng & Sander, "LOF: Identifying Density-Based Local Outliers",
    SIGMOD 2000 (Definitions 3-7); the scores are those of scikit-learn's
    :class:`~sklearn.neighbors.LocalOutlierFactor` with ``novelty=True``. With
    ``N_k(v)`` the k nearest training rows of v, ``k-dist(o)`` the distance from a
    training row o to its k-th nearest other training row, and::

        reach-dist(v, o) = max(k-dist(o), ||v - o||)
        lrd(v)           = 1 / (mean_{o in N_k(v)} reach-dist(v, o) + 1e-10)
        score_samples(v) = -LOF(v) = -mean_{o in N_k(v)} lrd(o) / lrd(v)

    Higher means more in-distribution; about -1 inside a cluster of the training rows.
    The detector needs no labels: ``y`` may be omitted; when given, only its
    ``OOD_LABEL`` rows matter (they are left out).

    Parameters
    ----------
    n_neighbors : int >= 1, default=10
        The k of the neighbourhoods: within 1.01x of the best k on the suite's feature
        types (``benchmarks/results/defaults.md``), where scikit-learn's and PyOD's 20
        was up to 1.55x. With fewer
        training rows, fit uses ``n_samples - 1`` (with a warning): ``n_neighbors_``.
    normalize : 'auto' or bool, default='auto'
        L2-normalise the training rows and the queries first (as deep KNN does). Without
        it, distances are taken between the rows centred on the training mean (the
        same distances, without the cancellation a large common offset would cause).
        'auto' normalises unless the training rows are centred on the origin, as
        :class:`~sklearn_reclag.KNNDetector` does (:func:`~sklearn_reclag.detectors.knn.origin_is_informative`).
    max_samples : int >= 2 or None, default=20000
        How many training rows are kept as the reference set (drawn at random where
        there are more). Fitting computes the neighbourhood of every reference row:
        ``max_samples**2 * n_features`` multiply-adds, so the cost of a fit stops growing
        with the data there. None keeps every row (quadratic in the rows).
    random_state : int, RandomState instance or None, default=None
        Draws the reference rows when there are more than ``max_samples``.
    algorithm : {'auto', 'brute', 'faiss'}, default='auto'
        The search for the k nearest rows, as :class:`KNNDetector`'s: 'brute' the
        torch search, 'faiss' faiss's exact flat search (CPU, float32; ``pip install
        "sklearn-reclag[faiss]"``), 'auto' faiss where it is installed and can run.
        Either way the distances are then computed by the same code: the same scores
        (up to neighbours tied to the float32 rounding of the search).
    contamination : float in (0, 0.5], default=0.05
        Fraction of new in-distribution rows that ``predict`` rejects (see Notes).
    ${device}

    Attributes
    ----------
    train_rows_ : ndarray of shape (n_reference, n_features)
        The reference rows, centred on ``center_`` or L2-normalised.
    center_ : ndarray of shape (n_features,)
        The training rows' mean (float64), subtracted from every row; zeros with
        ``normalize_`` (the rows are L2-normalised instead).
    k_distances_ : ndarray of shape (n_reference,)
        Each reference row's distance to its k-th nearest other reference row.
    local_densities_ : ndarray of shape (n_reference,)
        The local reachability density lrd of each reference row.
    n_neighbors_ : int
        The k used.
    normalize_ : bool
        Whether the rows are L2-normalised (``normalize``, with 'auto' resolved).
    algorithm_ : {'brute', 'faiss'}
        The search used (``algorithm``, with 'auto' resolved).
    ${fitted_common}

    See Also
    --------
    sklearn.neighbors.LocalOutlierFactor : the same scores on the host (``novelty=True``).
    KNNDetector : the k-th neighbour's distance alone.

    Notes
    -----
    **Threshold.** ``offset_`` is the ``contamination`` quantile of the reference rows'
    own local outlier factors, each computed without the row itself among its
    neighbours (scikit-learn's ``negative_outlier_factor_``): the leave-one-out score
    that costs nothing beyond the fit.

    **Duplicates.** Rows repeated more than k times have a k-distance of 0 and an lrd of
    1e10 (as in scikit-learn); fit warns then: raise ``n_neighbors`` above the number of
    repeats.

    **Hyperparameter search.** ``LOFDetector.search_space``: ``{'n_neighbors': [5, 10,
    20, 35, 50]}``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import LOFDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = LOFDetector(device="cpu").fit(X[y < 5])
    >>> in_dist, out_dist = det.score_samples(X[y < 5][:3]), det.score_samples(X[y >= 5][:3])
    >>> bool(in_dist.mean() > out_dist.mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean", StrOptions({"auto"})],
        "max_samples": [Interval(Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
        "algorithm": [StrOptions({"auto", "brute", "faiss"})],
    }
    _needs_classes = False
    _tensor_attributes = ("train_rows_", "center_", "k_distances_", "local_densities_")

    # The grid a user should search (see Notes).
    search_space = {"n_neighbors": [5, 10, 20, 35, 50]}

    def __init__(self, n_neighbors=10, *, normalize="auto", max_samples=20000,
                 random_state=None, algorithm="auto", contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n_neighbors = n_neighbors
        self.normalize = normalize
        self.max_samples = max_samples
        self.random_state = random_state
        self.algorithm = algorithm

    def _fit(self, X, y):
        if self.max_samples is not None and len(X) > self.max_samples:
            rows = check_random_state(self.random_state).choice(
                len(X), self.max_samples, replace=False)
            X = X[np.sort(rows)]
        n_train = len(X)
        self.n_neighbors_ = usable_neighbours(
            self, n_train, "a row's density is read from its neighbours among the others")
        self.normalize_ = resolved_normalize(self.normalize, X)
        if self.normalize_:
            # Unnormalised rows are centred below; unit rows cannot be.
            warn_if_offset_dominates(self, X)
            self.center_ = np.zeros(X.shape[1])
            self.train_rows_ = l2_normalize(X)
        else:
            self.center_ = X.mean(axis=0, dtype=np.float64)
            self.train_rows_ = (X - self.center_).astype(X.dtype)
        self.algorithm_ = resolve_algorithm(self.algorithm, self.device_, self.dtype)
        nearest, distances = self._reference_neighbourhoods()
        self.k_distances_ = to_numpy(distances.amax(dim=1))
        reach = torch.maximum(distances, distances.new_tensor(self.k_distances_)[nearest])
        densities = 1.0 / (reach.mean(dim=1) + _DENSITY_EPS)
        self.local_densities_ = to_numpy(densities)
        if np.any(self.k_distances_ == 0):
            warnings.warn(
                f"{int(np.sum(self.k_distances_ == 0))} training rows have more than "
                f"n_neighbors={self.n_neighbors_} exact duplicates, so their local density "
                "is 1e10 and their neighbours' factors are unreliable: raise n_neighbors "
                "above the number of repeats.",
                UserWarning,
                stacklevel=4,
            )
        own_factors = densities[nearest].mean(dim=1) / densities
        return lambda: -to_numpy(own_factors)

    def _reference_neighbourhoods(self):
        """Each reference row's k nearest other reference rows and their distances, as
        (n_reference, k) tensors on the device: its k + 1 nearest rows, less itself (or,
        where duplicates kept it out of those, less the farthest)."""
        device, dtype = torch.device(self.device_), resolve_dtype(self.dtype)
        bank = as_tensor(self.train_rows_, device, dtype)
        k = self.n_neighbors_
        nearest_all, distances_all = [], []
        for rows in iter_slices(len(bank), self._rows_per_chunk(device)):
            queries = bank[rows]
            nearest = self._search(queries, bank, k + 1)
            distances = neighbour_distances(queries, bank, nearest)
            own = torch.arange(rows.start, rows.stop, device=device)[:, None]
            distances = distances.masked_fill(nearest == own, torch.inf)
            kept = torch.topk(distances, k, dim=1, largest=False).indices
            nearest_all.append(nearest.gather(1, kept))
            distances_all.append(distances.gather(1, kept))
        return torch.cat(nearest_all), torch.cat(distances_all)

    def _search(self, queries, bank, k):
        """Indices of the k nearest rows of ``bank``, by the search of ``algorithm_``."""
        if self.algorithm_ == "faiss":
            return faiss_nearest_neighbours(queries, bank, k)
        return nearest_neighbours(queries, bank, k)

    def _score_batch(self, V, state):
        if self.normalize_:
            queries = _unit_rows(V)
        else:
            queries = V - state["center_"]
        bank = state["train_rows_"]
        nearest = self._search(queries, bank, self.n_neighbors_)
        distances = neighbour_distances(queries, bank, nearest)
        reach = torch.maximum(distances, state["k_distances_"][nearest])
        density = 1.0 / (reach.mean(dim=1) + _DENSITY_EPS)
        return -state["local_densities_"][nearest].mean(dim=1) / density
