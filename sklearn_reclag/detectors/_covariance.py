"""The shared within-class covariance, and the whitening map it defines.

Used by :class:`~sklearn_reclag.MahalanobisDetector` and by the ``metric='mahalanobis'``
option of the memory-bank detectors. With class means ``mu_c`` and the N training rows
``x_i`` of class ``c_i``, the covariance is that of the class-centred rows,

    Sigma = cov({x_i - mu_{c_i}}),

estimated by a scikit-learn covariance estimator: 'empirical' is the maximum-likelihood
``(1/N) sum_i (x_i - mu_{c_i})(x_i - mu_{c_i})^T`` of Lee et al. (NeurIPS 2018), 'ledoit_wolf'
and 'oas' shrink it towards a scaled identity (better conditioned when features are many
or some are dead). The whitening map is the symmetric pseudo-inverse square root
``W = Sigma^{+1/2}``: ``|W (v - mu)|^2 = (v - mu)^T Sigma^+ (v - mu)``, the squared
Mahalanobis distance, with directions of zero variance (dead ReLU units, say) ignored.
"""

import numpy as np
from sklearn.base import clone
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf
from sklearn.utils._param_validation import HasMethods, StrOptions

_ESTIMATORS = {"empirical": EmpiricalCovariance, "ledoit_wolf": LedoitWolf, "oas": OAS}

COVARIANCE_CONSTRAINT = [StrOptions(set(_ESTIMATORS)), HasMethods(["fit"])]
"""Parameter constraint of ``covariance``: a name or a scikit-learn covariance estimator."""


def class_means(X, labels, n_classes):
    """Mean of the rows of each class (``labels`` in ``range(n_classes)``), (C, D)."""
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.zeros((n_classes, X.shape[1]))
    np.add.at(sums, labels, X)
    return sums / np.maximum(counts, 1)[:, None]


def shared_covariance(X, y, covariance, *, return_shrinkage=False):
    """Class means and the shared covariance of the class-centred rows.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or None
        Class labels; None treats every row as one class.
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator
        The estimator fitted on the class-centred rows (a given estimator is cloned).
        The named ones assume the centred rows have mean zero, as they do.
    return_shrinkage : bool, default=False
        Also return the shrinkage ``s`` of a named estimator: the covariance is then
        ``(1 - s) C + s (trace(C) / D) I`` with C the empirical covariance (s = 0 for
        'empirical'); None for a given estimator.

    Returns
    -------
    classes : ndarray of shape (n_classes,) or None
        The sorted class labels (None for ``y=None``).
    means : ndarray of shape (n_classes, n_features)
    covariance : ndarray of shape (n_features, n_features)
    shrinkage : float or None
        Only with ``return_shrinkage=True``.
    """
    if y is None:
        classes, labels = None, np.zeros(len(X), dtype=np.intp)
    else:
        classes, labels = np.unique(y, return_inverse=True)
    means = class_means(X, labels, 1 if classes is None else len(classes))
    centred = X - means[labels]
    if isinstance(covariance, str):
        estimator = _ESTIMATORS[covariance](assume_centered=True)
    else:
        estimator = clone(covariance)
    sigma = np.asarray(estimator.fit(centred).covariance_, dtype=np.float64)
    if sigma.shape != (X.shape[1], X.shape[1]) or not np.isfinite(sigma).all():
        raise ValueError(
            f"The covariance estimator {estimator!r} gave a covariance_ of shape "
            f"{sigma.shape} with non-finite values or the wrong shape; expected "
            f"({X.shape[1]}, {X.shape[1]}) and finite."
        )
    if not return_shrinkage:
        return classes, means, sigma
    shrinkage = None
    if isinstance(covariance, str):
        shrinkage = float(getattr(estimator, "shrinkage_", 0.0))
    return classes, means, sigma, shrinkage


def whitening(sigma, eigh=None):
    """The symmetric pseudo-inverse square root ``Sigma^{+1/2}`` (D, D).

    Eigenvalues at or below ``D * eps * max eigenvalue`` count as zero (the tolerance of
    :func:`scipy.linalg.pinvh`), so ``whitening(S) @ whitening(S)`` is ``pinvh(S)``.
    ``eigh``: ``np.linalg.eigh(sigma)`` when the caller has it already.

    Raises
    ------
    ValueError
        If the covariance is zero: the features do not vary within the classes.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(sigma) if eigh is None else eigh
    if eigenvalues.max(initial=0.0) <= 0:
        raise ValueError(
            "The within-class covariance of the training rows is zero: the features do "
            "not vary within the classes, so no Mahalanobis distance is defined."
        )
    return (eigenvectors * inverse_square_roots(eigenvalues)) @ eigenvectors.T


def inverse_square_roots(eigenvalues):
    """``1 / sqrt`` of the eigenvalues above the pseudo-inverse's cut-off (``D * eps *
    max eigenvalue``), 0 for the others: directions without variance are ignored."""
    keep = eigenvalues > len(eigenvalues) * np.finfo(np.float64).eps * max(
        eigenvalues.max(initial=0.0), 0.0)
    scale = np.zeros_like(eigenvalues)
    scale[keep] = 1.0 / np.sqrt(eigenvalues[keep])
    return scale
