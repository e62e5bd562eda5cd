"""Relative Mahalanobis distance (RMDS; Ren et al., 2021)."""

import numpy as np

from .._docstrings import fill_doc
from ..base import BaseOODDetector
from ._covariance import COVARIANCE_CONSTRAINT, shared_spectrum, whitened_distances


@fill_doc
class RMDSDetector(BaseOODDetector):
    """Relative Mahalanobis distance: the class-conditional distance minus that of one
    background Gaussian of all the training rows.

    Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A Simple Fix to Mahalanobis Distance
    for Improving Near-OOD Detection", arXiv:2106.09022 (2021), as OpenOOD's
    ``rmds_postprocessor.py`` computes it. With ``mu_c`` the mean of the training rows of
    class c and Sigma the covariance of the class-centred rows (Mahalanobis's), and
    ``mu_0``, ``Sigma_0`` the mean and covariance of all the training rows (the
    background Gaussian), ``d_c(v) = (v - mu_c)^T Sigma^+ (v - mu_c)`` and
    ``d_0(v) = (v - mu_0)^T Sigma_0^+ (v - mu_0)``::

        score_samples(v) = max_c -(d_c(v) - d_0(v)) = d_0(v) - min_c d_c(v)

    Subtracting the background distance removes what is far from every class alike
    (directions in which the whole training set varies, but which say nothing about the
    classes), which the paper shows to help near OOD. There is no factor 1/2, as in the
    official code: the score is ``d_0 + 2 * MahalanobisDetector's score``.

    Parameters
    ----------
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='empirical'
        ${covariance} The same estimate is used for Sigma and Sigma_0 ('empirical',
        the official one).
    ${contamination}
    ${device}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of ``means_``.
    means_ : ndarray of shape (n_classes, n_features)
        The class means ``mu_c``.
    covariance_ : ndarray of shape (n_features, n_features)
        The shared within-class covariance Sigma.
    whitening_ : ndarray of shape (n_features, n_features)
        ``Sigma^{+1/2}``.
    whitened_means_ : ndarray of shape (n_classes, n_features)
        ``(means_ - background_mean_) @ whitening_``: distances do not change under a
        shift, and scoring takes them about the training rows' mean, where a common
        offset of the features (a mean of 1e4) cannot cancel their float32 digits.
    background_mean_ : ndarray of shape (n_features,)
        ``mu_0``, the mean of the training rows.
    background_covariance_ : ndarray of shape (n_features, n_features)
        ``Sigma_0``, their covariance.
    background_whitening_ : ndarray of shape (n_features, n_features)
        ``Sigma_0^{+1/2}``.
    ${fitted_common}

    The (D, D) attributes are computed when read, from the two spectra the fit keeps
    (eigenvectors and eigenvalues; with fewer rows than features, those of the rows'
    span and one eigenvalue for every other direction): scoring never forms them.

    See Also
    --------
    MahalanobisDetector : the class-conditional distance alone.

    Notes
    -----
    RMDS needs class labels: with one class the two Gaussians are the same and every
    score is 0. The threshold ``offset_`` is cross-fitted (the means and covariances are
    learned from the rows).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import RMDSDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = RMDSDetector(covariance="ledoit_wolf", device="cpu")
    >>> det = det.fit(X[y < 5] / 16, y[y < 5])
    >>> det.means_.shape, det.background_mean_.shape
    ((5, 64), (64,))
    >>> bool(det.score_samples(X[y < 5] / 16).mean() > det.score_samples(X[y >= 5] / 16).mean())
    True
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "covariance": COVARIANCE_CONSTRAINT,
    }
    _why_classes = ("it compares class-conditional Gaussians with one Gaussian of all the "
                    "rows, which needs class labels")
    _tensor_attributes = ("background_mean_", "_scaled_basis", "_basis", "_whitened_means",
                          "_background_scaled_basis", "_background_basis",
                          "_background_origin")

    search_space = {"covariance": ["empirical", "ledoit_wolf"]}
    """A GridSearchCV ``param_grid``: the covariance estimates worth comparing."""

    def __init__(self, *, covariance="empirical", contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.covariance = covariance

    def _fit(self, X, y):
        n_classes = len(np.unique(y))
        if n_classes < 2:
            raise ValueError(
                f"RMDSDetector needs at least 2 classes in y; got {n_classes} class. With "
                "one class the class-conditional and the background Gaussians are the "
                "same, and every score would be 0; use MahalanobisDetector."
            )
        # Compact spectra (shared_spectrum): with fewer rows than features, in the span
        # of the rows, and scored without a (D, D) matrix (seconds at 8,192 features,
        # where four of them in each of the cross-fit's fits took minutes).
        _, background_mean, background, _ = shared_spectrum(X, None, self.covariance)
        self.background_mean_ = background_mean[0]
        # About the background mean: the class means' offsets from it lie in the
        # spectrum's span, and a common offset of the features cannot cancel digits.
        self.classes_, self.means_, spectrum, _ = shared_spectrum(
            X, y, self.covariance, center=self.background_mean_)
        self._spectrum, self._background_spectrum = spectrum, background
        self._basis, self._scaled_basis, self._rest_scale = spectrum.scaled_basis()
        self._background_basis, self._background_scaled_basis, self._background_rest_scale = (
            background.scaled_basis())
        self._whitened_means = (self.means_ - self.background_mean_) @ self._scaled_basis
        # The background Gaussian's one mean, at the origin of the centred rows.
        self._background_origin = np.zeros((1, self._background_scaled_basis.shape[1]))
        # The means and covariances are learned from the rows: the threshold is
        # cross-fitted (BaseOODDetector._held_out_scores).
        return None

    def _score_batch(self, V, state):
        centred = V - state["background_mean_"]
        class_distances = whitened_distances(
            centred, state["_scaled_basis"], state["_whitened_means"], state["_basis"],
            self._rest_scale)
        background = whitened_distances(
            centred, state["_background_scaled_basis"], state["_background_origin"],
            state["_background_basis"], self._background_rest_scale)[:, 0]
        return background - class_distances.amin(dim=1)

    @property
    def covariance_(self):
        return self._spectrum.dense()

    @property
    def whitening_(self):
        return self._spectrum.dense(-0.5)

    @property
    def whitened_means_(self):
        return (self.means_ - self.background_mean_) @ self.whitening_

    @property
    def background_covariance_(self):
        return self._background_spectrum.dense()

    @property
    def background_whitening_(self):
        return self._background_spectrum.dense(-0.5)

