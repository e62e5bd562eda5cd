"""Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018)."""

from functools import partial

import numpy as np
import torch

from .._docstrings import fill_doc
from ..base import BaseOODDetector, threshold_rows
from ._covariance import (
    COVARIANCE_CONSTRAINT,
    inverse_square_roots,
    shared_covariance,
    whitening,
)


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
        self.classes_, self.means_, self.covariance_, shrinkage = shared_covariance(
            X, y, self.covariance, return_shrinkage=True)
        eigh = np.linalg.eigh(self.covariance_)  # the whitening's, and the downdate's
        self.whitening_ = whitening(self.covariance_, eigh)
        self.precision_ = self.whitening_ @ self.whitening_
        self.whitened_means_ = self.means_ @ self.whitening_
        if shrinkage is None:
            # A user-given covariance estimator has no closed-form downdate: cross-fitted.
            return None
        return partial(self._leave_one_out_scores, X, y, shrinkage, eigh)

    def _leave_one_out_scores(self, X, y, shrinkage, eigh=None):
        """Exact leave-one-out scores of the rows of :func:`threshold_rows`, in closed form.

        The named covariances are ``Sigma = (1 - s) C + s mu I`` with C the empirical
        covariance of the class-centred rows, ``mu = trace(C) / D`` and the shrinkage s
        (0 for 'empirical'). C and the class means are sums over rows: leaving out row x
        of class c (n_c rows, ``u = x - mu_c``) moves the mean to ``mu_c - u / (n_c -
        1)`` and the scatter ``S = N C`` to ``S - k u u^T``, ``k = n_c / (n_c - 1)``, so
        that, with s and mu held fixed (as the cross-fit holds a fitted beta), the new
        covariance is ``B - b u u^T``: ``B = (1 - s) S / (N - 1) + s mu I``, ``b = (1 - s)
        k / (N - 1)``. Sherman-Morrison then gives the new squared distances from
        products in the metric of ``B`` (``h = u^T B^+ u``, ``g_j = u^T B^+ (x - mu_j)``,
        ``q_j = (x - mu_j)^T B^+ (x - mu_j)``)::

            d_c' = k^2 h / (1 - b h)
            d_j' = q_j + b g_j^2 / (1 - b h)

        which is what refitting on the N - 1 other rows gives ('empirical': exactly),
        at the cost of scoring the rows. Where a row alone spans a direction of the
        covariance (``b h`` near 1, fewer rows than features), the downdate is
        ill-posed and the threshold is cross-fitted instead.
        """
        n_samples = len(X)
        rows = threshold_rows(n_samples)
        if y is None:
            labels = np.zeros(n_samples, dtype=np.intp)
        else:
            labels = np.searchsorted(self.classes_, y)
        counts = np.bincount(labels, minlength=len(self.means_))
        own, n_own = labels[rows], counts[labels[rows]].astype(np.float64)
        # B in the eigenbasis of Sigma (C shares it): its eigenvalues from Sigma's.
        eigenvalues, eigenvectors = np.linalg.eigh(self.covariance_) if eigh is None else eigh
        mu = np.trace(self.covariance_) / len(eigenvalues)
        b_eigenvalues = n_samples / (n_samples - 1) * (eigenvalues - shrinkage * mu) + (
            shrinkage * mu)
        # |(v - w) to_b|^2 = (v - w)^T B^+ (v - w), with whitening()'s cut-off.
        to_b = eigenvectors * inverse_square_roots(b_eigenvalues)
        Z, Z_means = X[rows] @ to_b, self.means_ @ to_b
        # (Z - M_j).(Z - M_c) and |Z - M_j|^2 from products, without an (m, C, D) block.
        products = Z @ Z_means.T
        mean_products = Z_means @ Z_means.T
        sq_norms = np.einsum("ij,ij->i", Z, Z)
        index = np.arange(len(rows))
        distances = sq_norms[:, None] - 2 * products + np.diag(mean_products)[None, :]
        cross = (sq_norms[:, None] - products - products[index, own][:, None]
                 + mean_products[own])
        with np.errstate(divide="ignore", invalid="ignore"):
            k = n_own / (n_own - 1)  # inf for a class of one row: it leaves with it
            b = (1 - shrinkage) * k / (n_samples - 1)
            h = distances[index, own]
            denominator = 1 - b * h
            if np.any((n_own > 1) & (denominator < 1e-6)):
                return self._held_out_scores(X, y)
            single = n_own <= 1
            b, k = np.where(single, 0.0, b), np.where(single, 0.0, k)
            denominator = np.where(single, 1.0, denominator)
            downdated = distances + (b / denominator)[:, None] * cross ** 2
            downdated[index, own] = np.where(single, np.inf, k ** 2 * h / denominator)
        return -0.5 * downdated.min(axis=1)

    def _score_batch(self, V, state):
        Z = V @ state["whitening_"]
        distances = torch.cdist(Z, state["whitened_means_"]).square_()
        return -0.5 * distances.amin(dim=1)
