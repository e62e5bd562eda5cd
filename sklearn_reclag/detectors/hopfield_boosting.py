"""The test-time score of Hopfield Boosting (Hofmann et al., NeurIPS 2024).

Two modern Hopfield memories, one of the in-distribution training rows and one of
auxiliary outliers, both L2-normalised; a row scores the difference of its log-mean-exp
similarities to the two. Scored in chunks of test rows and of stored rows merged by an
online log-sum-exp (``_backend.class_logsumexp``), so no (n_test x n_stored) matrix is
built.
"""

import math
from functools import partial
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_array

from .._backend import _memory_chunk, class_logsumexp, iter_slices, map_batches, near_copies
from .._docstrings import fill_doc
from ..base import BaseOODDetector, row_keys, threshold_rows
from ._banks import _unit_rows as _unit_rows_numpy
from .knn import _unit_rows

# Entries of the largest (rows x stored rows) block of logits: 64 MiB in float32.
_SCORE_BLOCK = 2**24


@fill_doc
class HopfieldBoostingDetector(BaseOODDetector):
    """The test-time score of Hopfield Boosting: ID memories against outlier memories.

    Hofmann, Schmid, Lehner, Klotz & Hochreiter, "Energy-based Hopfield Boosting for
    Out-of-Distribution Detection", NeurIPS 2024 (code: ml-jku/hopfield-boosting). With
    ``z = v / ||v||``, X the L2-normalised in-distribution training rows (N of them),
    O the L2-normalised auxiliary outliers (M of them), and
    ``lme_beta(a) = (1/beta) log((1/n) sum_i exp(beta a_i))`` the log-mean-exp::

        score_samples(v) = lme_beta(X z) - lme_beta(O z)

    the official ``OneSidedEnergy`` negated (``HopfieldTrainer.ood_tester``): the
    negative Hopfield energy of z in the memory of the ID rows less that in the memory
    of the outliers. Higher means more in-distribution: near ID rows and far from the
    outliers. ``fit`` needs the outliers: ``fit(X, y, outliers=O)``.

    **What this is not.** Hopfield Boosting is a training method: it fine-tunes the
    network (encoder, projection head and classifier) with a boosting objective, the
    "border energy" of the two memories, on ID rows and on auxiliary outliers sampled
    with weights that favour those near the boundary between them (the weak learners
    the boosting concentrates on), so that the features themselves separate ID from
    outliers. A detector that sees fixed features cannot change them: this is only the
    score the paper computes at test time, on whatever features it is given. It is as
    good as those features separate the ID rows from the outliers supplied, and the
    outliers must resemble the OOD rows to be met (the paper uses ImageNet images as
    the auxiliary set for CIFAR).

    Parameters
    ----------
    beta : float > 0, default=4.0
        Inverse temperature of both log-mean-exps (the official configuration's
        ``beta: 4``). The similarities lie in [-1, 1]: a small beta averages the
        memories, a large one tends to the nearest stored row of each memory.
    ${contamination}
    ${device}

    Attributes
    ----------
    id_patterns_ : ndarray of shape (n_train, n_features)
        The in-distribution training rows, L2-normalised: the first memory.
    outlier_patterns_ : ndarray of shape (n_outliers, n_features)
        The auxiliary outliers, L2-normalised: the second memory.
    ${fitted_common}

    See Also
    --------
    HopfieldEnergyDetector : one memory of the ID rows, without outliers.
    KNNDetector : the nearest normalised training rows, the large-beta limit of the
        first term.

    Notes
    -----
    **The outliers.** ``fit(X, y=None, *, outliers)`` takes an array of outlier
    features of shape (n_outliers, n_features), any number of rows, never the OOD sets
    the detector will be judged on (feature-shuffled or noise rows made from the
    training features, or a broad auxiliary data set, as the paper's). Without it fit
    raises a ValueError. In a :class:`~sklearn.pipeline.Pipeline` or a
    :class:`~sklearn.model_selection.GridSearchCV` it travels by scikit-learn's
    metadata routing: ``sklearn.set_config(enable_metadata_routing=True)``,
    ``HopfieldBoostingDetector().set_fit_request(outliers=True)``, then
    ``search.fit(X, y, outliers=O)``. Metadata reach the detector as given, not
    through the steps before it in a Pipeline: give the outliers in the space the
    detector sees (transformed by those steps). A search splits along with X the
    metadata with as many rows as X (scikit-learn's rule for sample-aligned metadata):
    give the outliers another number of rows for every fold to see them all. The rows
    labelled ``OOD_LABEL`` in y are left out, as for every detector, not used as
    outliers.

    **Threshold.** The first memory holds the training rows, so each training row is
    scored leave-one-out (without itself and any copy of it, the mean taken over the
    other rows), as a new row would be; ``offset_`` is the ``contamination`` quantile
    of those scores, for at most 1,000 distinct rows chosen by their content (the same
    rows in another order give the same threshold). The outliers do not change between
    the two.

    **Hyperparameter search.** ``HopfieldBoostingDetector.search_space``:
    ``{'beta': [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]}``. The official 4 suits the
    embeddings that the boosting trains; on fixed features a sharper memory may do
    better (on the digits benchmark's CNN features, 256-1024 did).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import HopfieldBoostingDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> X_id = X[y < 5]
    >>> rng = np.random.default_rng(0)  # outliers: ID features shuffled independently
    >>> outliers = np.take_along_axis(X_id, rng.integers(0, len(X_id), X_id.shape), 0)
    >>> det = HopfieldBoostingDetector(device="cpu").fit(X_id, outliers=outliers)
    >>> bool(det.score_samples(X_id).mean() > det.score_samples(X[y >= 5]).mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="neither")],
    }
    _needs_classes = False
    _tensor_attributes = ("id_patterns_", "outlier_patterns_")

    search_space = {"beta": [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]}
    """A GridSearchCV ``param_grid``: inverse temperatures from the official 4 to the
    nearly nearest-neighbour memories that fixed features may need (see Notes)."""

    def __init__(self, beta=4.0, *, contamination=0.05, device="auto", dtype="float32",
                 batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.beta = beta

    def fit(self, X, y=None, *, outliers=None):
        """Fit the two memories: the in-distribution rows X and the ``outliers``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In-distribution features.
        y : array-like of shape (n_samples,), default=None
            Not needed; when given, rows labelled ``OOD_LABEL`` (-1) are left out.
        outliers : array-like of shape (n_outliers, n_features)
            Auxiliary outlier features (required; see Notes).

        Returns
        -------
        self : object
            The fitted detector.
        """
        if outliers is None:
            raise ValueError(
                "HopfieldBoostingDetector.fit requires outliers: call fit(X, y, "
                "outliers=O) with O an array of auxiliary outlier features of shape "
                "(n_outliers, n_features), e.g. feature-shuffled training rows. In a "
                "Pipeline or a search, route it with sklearn.set_config("
                "enable_metadata_routing=True) and set_fit_request(outliers=True)."
            )
        # _fit reads them once X is validated (their width is checked against X's).
        self._outliers_to_fit = outliers
        try:
            return super().fit(X, y)
        finally:
            del self._outliers_to_fit

    def fit_predict(self, X, y=None, *, outliers=None):
        """Fit on ``(X, y)`` and the ``outliers``, and return ``predict(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
        outliers : array-like of shape (n_outliers, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,) of int
        """
        return self.fit(X, y, outliers=outliers).predict(X)

    def _fit(self, X, y):
        n_train = X.shape[0]
        if n_train < 2:
            raise ValueError(
                f"HopfieldBoostingDetector needs at least 2 in-distribution training rows "
                f"(n_samples = {n_train}): offset_ scores each training row against the "
                "other rows."
            )
        outliers = self._validate_outliers(self._outliers_to_fit)
        # New arrays (the user's X may change after fit), normalised in float64.
        dtype = np.dtype(self.dtype)
        self.id_patterns_ = _unit_rows_numpy(X.astype(np.float64)).astype(dtype, copy=False)
        self.outlier_patterns_ = _unit_rows_numpy(
            outliers.astype(np.float64)).astype(dtype, copy=False)
        return partial(self._leave_one_out_scores, X)

    def _validate_outliers(self, outliers):
        outliers = check_array(outliers, dtype=[np.float64, np.float32],
                               input_name="outliers")
        if outliers.shape[1] != self.n_features_in_:
            raise ValueError(
                f"outliers has {outliers.shape[1]} features, but X has "
                f"{self.n_features_in_}: the outliers must be features of the same kind as "
                "X (the same network layer)."
            )
        # No range check as for X: the outliers are normalised in float64 before they
        # take dtype, so their scale does not matter.
        return outliers

    def _leave_one_out_scores(self, X):
        # One row per distinct row, chosen by content (the same rows in any order give
        # the same offset_), each scored without every copy of it in the ID memory.
        rows = threshold_rows(len(X), row_keys(X, dtype=self.dtype))
        return map_batches(partial(self._score_batch, leave_out_copies=True), X[rows],
                           read_only=True, **self._batch_kwargs())

    def _score_batch(self, V, state, leave_out_copies=False):
        Z = _unit_rows(V)
        inliers = self._log_mean_exp(Z, state["id_patterns_"], leave_out_copies)
        return inliers - self._log_mean_exp(Z, state["outlier_patterns_"])

    def _log_mean_exp(self, Z, patterns, leave_out_copies=False):
        """``lme_beta(patterns z)`` for each row z of Z; with ``leave_out_copies`` the
        mean is over the patterns that are not copies of z (up to rounding,
        :func:`~sklearn_reclag._backend.near_copies`): a training row's leave-one-out
        score, without itself and any duplicate of it, as a new row would get."""
        n_patterns = patterns.shape[0]
        mask = torch.ones((1, n_patterns), dtype=torch.bool, device=patterns.device)
        lse = class_logsumexp(Z, patterns[None], mask, self.beta, max_block=_SCORE_BLOCK,
                              exclude_copies=leave_out_copies)[:, 0]
        if not leave_out_copies:
            return (lse - math.log(n_patterns)) / self.beta
        kept = n_patterns - _count_copies(Z, patterns)
        loo = (lse - torch.log(kept.clamp_min(1).to(lse.dtype))) / self.beta
        if bool((kept > 0).all()):
            return loo
        # Every training row is a copy of this one (one distinct direction, e.g. a
        # single feature): nothing to leave it out against; its own score is the
        # score of a new row in that direction.
        return torch.where(kept > 0, loo, self._log_mean_exp(Z, patterns))


def _count_copies(Z, patterns):
    """How many of the patterns are copies of each row of Z, up to rounding (the test
    of ``class_logsumexp(..., exclude_copies=True)``), a chunk of patterns at a time."""
    count = torch.zeros(Z.shape[0], dtype=torch.int64, device=Z.device)
    for rows in iter_slices(patterns.shape[0], _memory_chunk(_SCORE_BLOCK, Z.shape[0])):
        count += near_copies(Z, patterns[rows]).sum(dim=1)
    return count
