"""Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018)."""

from functools import partial

import numpy as np
import torch

from .._docstrings import fill_doc
from ..base import BaseOODDetector, threshold_rows
from ._covariance import COVARIANCE_CONSTRAINT, shared_covariance, whitening


@fill_doc
class MahalanobisDetector(BaseOODDetector):
    """Mahalanobis distance to the nearest class mean, with one shared covariance.

    Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks", NeurIPS 2018. With ``mu_c`` the mean of the training
    rows of class c and Sigma the covariance of the class-centred training rows (one for
    all classes)::

        score_samples(v) = -1/2 * min_c (v - mu_c)^T Sigma^+ (v - mu_c)

    ``Sigma^+`` is the pseudo-inverse, so a singular covariance (dead ReLU units are
    common in penultimate features) is handled: directions in which no training row
    varies are ignored. The paper's input preprocessing and layer ensemble need the
    network and are not part of this features-only detector.

    Parameters
    ----------
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='empirical'
        ${covariance}
    ${contamination}
    ${device}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or None
        Class labels, in the order of ``means_``; None when fitted without y.
    means_ : ndarray of shape (n_classes, n_features)
        The class means (one mean when fitted without y).
    covariance_ : ndarray of shape (n_features, n_features)
        The shared within-class covariance Sigma.
    precision_ : ndarray of shape (n_features, n_features)
        Its pseudo-inverse ``Sigma^+``.
    whitening_ : ndarray of shape (n_features, n_features)
        The symmetric square root of ``precision_``, ``Sigma^{+1/2}``: scoring computes
        ``|W v - W mu_c|^2``.
    whitened_means_ : ndarray of shape (n_classes, n_features)
        ``means_ @ whitening_``.
    ${fitted_common}

    See Also
    --------
    HopfieldEnergyDetector : with ``patterns='mean'``, ``energy='density'``,
        ``metric='mahalanobis'`` and ``routing='max'`` it ranks rows exactly as this
        detector; its other settings extend it.
    KNNDetector : distance to the k-th nearest training row.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import MahalanobisDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = MahalanobisDetector(covariance="ledoit_wolf", device="cpu")
    >>> det = det.fit(X[y < 5] / 16, y[y < 5])
    >>> det.means_.shape
    (5, 64)
    >>> bool(det.score_samples(X[y < 5] / 16).mean() > det.score_samples(X[y >= 5] / 16).mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "covariance": COVARIANCE_CONSTRAINT,
    }
    _needs_classes = False  # y=None: one class mean
    _tensor_attributes = ("whitening_", "whitened_means_")

    search_space = {"covariance": ["empirical", "ledoit_wolf"]}
    """A GridSearchCV ``param_grid``: the covariance estimates worth comparing."""

    def __init__(self, *, covariance="empirical", contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.covariance = covariance

    def _fit(self, X, y):
        if len(X) < 2:
            raise ValueError(
                f"MahalanobisDetector needs at least 2 rows to estimate a covariance; got "
                f"n_samples={len(X)}."
            )
        self.classes_, self.means_, self.covariance_ = shared_covariance(
            X, y, self.covariance)
        self.whitening_ = whitening(self.covariance_)
        self.precision_ = self.whitening_ @ self.whitening_
        self.whitened_means_ = self.means_ @ self.whitening_
        if isinstance(self.covariance, str) and self.covariance == "empirical":
            return partial(self._leave_one_out_scores, X, y)
        # A shrunk or user-given covariance has no closed-form downdate: cross-fitted.
        return None

    def _leave_one_out_scores(self, X, y):
        """Exact leave-one-out scores of the rows of :func:`threshold_rows`, in closed form.

        The empirical fit is a sum over rows: with ``S = N Sigma`` the within-class
        scatter, leaving out row x of class c (n_c rows, ``u = x - mu_c``) moves the mean
        to ``mu_c - u / (n_c - 1)`` and the scatter to ``S - k u u^T``, ``k = n_c /
        (n_c - 1)``, and Sherman-Morrison gives the new distances from the old ones
        (``h = u^T S^+ u``, ``g_j = u^T S^+ (x - mu_j)``)::

            d_c' = k^2 (N - 1) h / (1 - k h)
            d_j' = (N - 1) [ (x - mu_j)^T S^+ (x - mu_j) + k g_j^2 / (1 - k h) ]

        which is what refitting on the N - 1 other rows gives, at the cost of scoring
        the rows. Where a row alone spans a direction of the covariance (``k h`` near
        1, fewer rows than features), the downdate is ill-posed and the threshold is
        cross-fitted instead.
        """
        n_samples = len(X)
        rows = threshold_rows(n_samples)
        if y is None:
            labels = np.zeros(n_samples, dtype=np.intp)
        else:
            labels = np.searchsorted(self.classes_, y)
        counts = np.bincount(labels, minlength=len(self.means_))
        own, n_own = labels[rows], counts[labels[rows]].astype(np.float64)
        Z = X[rows] @ self.whitening_  # float64, as the fitted state
        Z_means = self.whitened_means_
        # (Z - M_j).(Z - M_c) and |Z - M_j|^2 from products, without an (m, C, D) block.
        products = Z @ Z_means.T
        mean_products = Z_means @ Z_means.T
        sq_norms = np.einsum("ij,ij->i", Z, Z)
        index = np.arange(len(rows))
        distances = (sq_norms[:, None] - 2 * products + np.diag(mean_products)[None, :])
        cross = (sq_norms[:, None] - products - products[index, own][:, None]
                 + mean_products[own])
        with np.errstate(divide="ignore", invalid="ignore"):
            k = n_own / (n_own - 1)  # inf for a class of one row: it leaves with it
            h = distances[index, own] / n_samples
            denominator = 1 - k * h
            if np.any((n_own > 1) & (denominator < 1e-6)):
                return self._held_out_scores(X, y)
            k, denominator = np.where(n_own > 1, k, 0.0), np.where(n_own > 1, denominator, 1)
            downdated = (n_samples - 1) * (
                distances / n_samples + (k / denominator)[:, None] * (cross / n_samples) ** 2)
            downdated[index, own] = np.where(
                n_own > 1, k ** 2 * (n_samples - 1) * h / denominator, np.inf)
        return -0.5 * downdated.min(axis=1)

    def _score_batch(self, V, state):
        Z = V @ state["whitening_"]
        distances = torch.cdist(Z, state["whitened_means_"]).square_()
        return -0.5 * distances.amin(dim=1)
