"""Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018)."""

import warnings
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions

from sklearn.base import _fit_context

from .._backend import map_batches, resolve_device
from .._incremental import ThresholdReservoir
from .._docstrings import fill_doc
from ..base import BaseOODDetector, row_keys, threshold_rows
from .knn import resolved_normalize
from ._covariance import (
    COVARIANCE_CONSTRAINT,
    ClassMoments,
    class_means,
    Spectrum,
    inverse_square_roots,
    shared_spectrum,
    whitened_distances,
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

    ``normalize=True`` is Mahalanobis++ (Mueller, Hein et al., "Mahalanobis++: Improving
    OOD Detection via Feature Normalization", ICML 2025): every row is first divided
    by its L2 norm, ``v -> v / |v|_2``, and the class means, the shared covariance and
    the scores are those of the normalised rows. The paper finds that the feature norms
    of pretrained networks vary far more than the Gaussian model of Mahalanobis allows,
    and that normalising them lifts Mahalanobis to the leading post-hoc detectors
    (ImageNet-1K, ResNet-50: AUROC near / far OOD from 55 / 74 to 72 / 93).

    Distances do not change under a shift: the rows are centred on the mean of the
    training rows (``center_``, computed in float64) before anything else, so that
    features with a large common offset (unnormalised features with a mean of 1e4,
    say) keep their float32 digits where they differ. With more features than
    training rows, the covariance is computed in the span of the training rows
    (:func:`~sklearn_reclag.detectors._covariance.shared_spectrum`): no (D, D) array
    is formed by fit or scoring, and 8,192 features fit in seconds.

    Parameters
    ----------
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='ledoit_wolf'
        ${covariance}
    normalize : 'auto' or bool, default='auto'
        L2-normalise every row first (fit and scoring): Mahalanobis++ (Mueller et al.,
        ICML 2025). A zero row stays zero. 'auto' normalises unless the training rows are
        centred on the origin (:func:`~sklearn_reclag.detectors.knn.origin_is_informative`):
        a network's features, not standardised tabular columns, where the rows'
        directions from their own mean mean little.

    The defaults (Ledoit-Wolf shrinkage, 'auto' normalisation) are those whose mean
    FPR95 stayed closest to the best setting on all four feature types of
    ``benchmarks/results/defaults.md`` (digits CNN, MNIST-1D CNN, digits MLP, tabular):
    the paper's empirical covariance without normalisation was 2.4-2.5x the best on
    MNIST-1D and the MLP features, Mahalanobis++ everywhere 3.9x on standardised tables.
    ${contamination}
    ${device}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or None
        Class labels, in the order of ``means_``; None when fitted without y.
    means_ : ndarray of shape (n_classes, n_features)
        The class means (one mean when fitted without y).
    center_ : ndarray of shape (n_features,)
        The mean of the training rows (normalised with ``normalize_``): the origin
        that scoring centres the rows on.
    normalize_ : bool
        Whether the rows are L2-normalised (``normalize``, with 'auto' resolved).
    covariance_ : ndarray of shape (n_features, n_features)
        The shared within-class covariance Sigma. Computed on access from its
        eigendecomposition, as are the next two (D^2 memory each: fit and scoring use
        the eigendecomposition only).
    precision_ : ndarray of shape (n_features, n_features)
        Its pseudo-inverse ``Sigma^+``.
    whitening_ : ndarray of shape (n_features, n_features)
        The symmetric square root of ``precision_``, ``Sigma^{+1/2}``: the score is
        ``-1/2 min_c |W (v - mu_c)|^2``.
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
        "normalize": ["boolean", StrOptions({"auto"})],
    }
    _needs_classes = False  # y=None: one class mean

    search_space = {"covariance": ["empirical", "ledoit_wolf"], "normalize": [False, True]}
    """A GridSearchCV ``param_grid``: the covariance estimates worth comparing, with
    and without the feature normalisation of Mahalanobis++."""

    def __init__(self, *, covariance="ledoit_wolf", normalize="auto", contamination=0.05,
                 device="auto", dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.covariance = covariance
        self.normalize = normalize

    @property
    def _tensor_attributes(self):
        names = ("center_", "_scaled_basis", "_whitened_means")
        # The directions outside the basis (a shrunk covariance of fewer rows than
        # features) have one scale; the rows' components there need the basis itself.
        return names + (("_basis",) if self._rest_scale > 0 else ())

    def _fit(self, X, y):
        if len(X) < 2:
            raise ValueError(
                f"MahalanobisDetector needs at least 2 rows to estimate a covariance; got "
                f"n_samples={len(X)}."
            )
        self.normalize_ = resolved_normalize(self.normalize, X)
        n_classes = 1 if y is None else len(np.unique(y))
        if isinstance(self.covariance, str) and len(X) + n_classes >= X.shape[1]:
            # Streamed: running sums of blocks of rows (ClassMoments), no copy of X in
            # float64, normalised or centred (three of them before: 6x a float32 bank).
            self.classes_, labels = ((None, np.zeros(len(X), dtype=np.intp)) if y is None
                                     else np.unique(y, return_inverse=True))
            labels = labels.reshape(-1)
            transform = _unit_rows if self.normalize_ else None
            # The class means first (a second read of X), so that Ledoit-Wolf's sums need
            # no (D, D) scatter per class (ClassMoments).
            means = class_means(X, labels, int(labels.max()) + 1, transform)
            moments = ClassMoments(X.shape[1], fourth=self.covariance == "ledoit_wolf",
                                   means=means)
            moments.update(X, labels, transform=transform)
            shrinkage = self._set_moments(moments)
        else:
            if self.normalize_:
                X = _unit_rows(X)
            self.center_ = X.mean(axis=0)
            self.classes_, self.means_, self._spectrum, shrinkage = shared_spectrum(
                X, y, self.covariance, center=self.center_)
        self._set_whitening()
        # The whitening's, and the downdate's.
        eigh = (self._spectrum.eigenvalues, self._spectrum.basis)
        if shrinkage is None:
            # A user-given covariance estimator has no closed-form downdate: cross-fitted.
            return None
        return partial(self._leave_one_out_scores, X, y, shrinkage, eigh)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, classes=None):
        """Fit on one more chunk of rows: a loop over chunks gives the model of one fit.

        The class means and the shared covariance are running sums
        (:class:`~sklearn_reclag.detectors._covariance.ClassMoments`: O(D^2) memory,
        O(C D^2) for 'ledoit_wolf', whatever the number of rows), and so are the named
        estimators' shrinkages, so after any number of calls ``means_``, the covariance,
        ``score_samples`` and ``offset_`` are those of :meth:`fit` on the
        concatenated rows, to float rounding. ``offset_`` is recomputed at the end of
        every call: the closed-form leave-one-out scores of :meth:`fit` of the 1,000
        threshold rows (those with the smallest content keys, which a bounded
        reservoir keeps exactly across calls) against the current model; a call costs
        O(n_chunk D^2 + D^3) (the eigendecomposition), not a pass over the earlier rows.

        ``normalize='auto'`` is resolved on the first chunk; a covariance given as an
        estimator has no running form and is refused (use a name). The classes are fixed
        on the first call: ``classes``, or the labels of its y; a class declared and not
        yet seen has a NaN row in ``means_`` and is no candidate until it has rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            Class labels (OOD_LABEL rows are ignored); given on every call or never.
        classes : array-like of shape (n_classes,), default=None
            Every class label of all the calls, on the first call; default: the labels
            of the first call's y.

        Returns
        -------
        self : object
        """
        if not isinstance(self.covariance, str):
            raise ValueError(
                f"MahalanobisDetector.partial_fit needs a named covariance ('empirical', "
                f"'ledoit_wolf' or 'oas'), whose estimate is a running sum; got "
                f"{self.covariance!r}. Use fit, or a named covariance."
            )
        first = not hasattr(self, "_partial")
        X, y, labels = self._validate_partial_fit_data(X, y, classes)
        n_features = X.shape[1]
        if first:
            self.device_ = str(resolve_device(self.device))
            self.normalize_ = resolved_normalize(self.normalize, X)
            self._partial = SimpleNamespace(
                moments=ClassMoments(n_features, fourth=self.covariance == "ledoit_wolf"),
                reservoir=ThresholdReservoir(n_features))
        moments, reservoir = self._partial.moments, self._partial.reservoir
        moments.grow(1 if self.classes_ is None else len(self.classes_))
        moments.update(X, labels, transform=_unit_rows if self.normalize_ else None)
        reservoir.update(row_keys(X, dtype=self.dtype,
                                  codes=None if y is None else labels), X, labels)
        self.n_samples_seen_ = moments.n_samples
        if self.n_samples_seen_ < 2:
            raise ValueError(
                f"MahalanobisDetector needs at least 2 rows to estimate a covariance; got "
                f"n_samples={self.n_samples_seen_} so far."
            )
        shrinkage = self._set_moments(moments)
        self.means_[moments.counts == 0] = np.nan
        self._set_whitening()
        self._check_finite_state()
        scores = self._downdated_scores(reservoir.rows, reservoir.labels,
                                        reservoir.copies.astype(np.float64), moments.counts,
                                        shrinkage)
        if scores is None:
            warnings.warn(
                "MahalanobisDetector.partial_fit: a threshold row alone spans a direction "
                "of the covariance (fewer rows than features), where leaving it out is "
                "ill-posed; offset_ is read from the rows' own scores, which are "
                "optimistic. Fit on more rows.", UserWarning, stacklevel=3)
            scores = self._score_array(reservoir.rows)
        self.offset_ = float(self._fit_offset(lambda: scores))
        if not np.isfinite(self.offset_):
            raise self._overflow_error("threshold offset_")
        return self

    def _set_moments(self, moments):
        """``center_``, ``means_`` and the spectrum from running sums; the shrinkage."""
        self.center_ = moments.center()
        self.means_ = moments.means()
        sigma, shrinkage = moments.covariance(self.covariance)
        eigenvalues, eigenvectors = np.linalg.eigh(sigma)
        self._spectrum = Spectrum(eigenvectors, eigenvalues, 0.0)
        return shrinkage

    def _set_whitening(self):
        # |W (v - mu_c)|^2 = |((v - c) - (mu_c - c)) B a|^2 + t^2 |the rest of v - c|^2,
        # with Sigma's eigenvectors B (D, k), the whitening's scales a on them and t on
        # the directions outside them, where the class means have no component.
        self._basis, self._scaled_basis, self._rest_scale = self._spectrum.scaled_basis()
        # A class declared to partial_fit that has no rows yet (a NaN mean) is no
        # candidate for the nearest mean.
        present = ~np.isnan(self.means_).any(axis=1)
        self._whitened_means = (self.means_[present] - self.center_) @ self._scaled_basis

    def _leave_one_out_scores(self, X, y, shrinkage, eigh=None):
        """Exact leave-one-out scores of the rows of :func:`threshold_rows`, in closed form.

        The named covariances are ``Sigma = (1 - s) C + s mu I`` with C the empirical
        covariance of the class-centred rows, ``mu = trace(C) / D`` and the shrinkage s
        (0 for 'empirical'). C and the class means are sums over rows: leaving out row x
        of class c (n_c rows, ``u = x - mu_c``) together with its copies, m rows in all
        (m = 1 for a row that occurs once; copies of one observation leave together, as
        a new row has no copy in the training set), moves the mean to ``mu_c - m u /
        (n_c - m)`` and the scatter ``S = N C`` to ``S - k u u^T``, ``k = m a``, ``a =
        n_c / (n_c - m)``, so that, with s and mu held fixed (as the cross-fit holds a
        fitted beta), the new covariance is ``B - b u u^T``: ``B = (1 - s) S / (N - m) + s
        mu I``, ``b = (1 - s) k / (N - m)``. Sherman-Morrison then gives the new squared
        distances from products in the metric of ``B`` (``h = u^T B^+ u``, ``g_j = u^T
        B^+ (x - mu_j)``, ``q_j = (x - mu_j)^T B^+ (x - mu_j)``)::

            d_c' = a^2 h / (1 - b h)
            d_j' = q_j + b g_j^2 / (1 - b h)

        which is what refitting on the N - m other rows gives ('empirical': exactly),
        at the cost of scoring the rows (once per distinct m). Copies are rows equal in
        the fit's dtype, with the same label (:func:`row_keys`). Where a row alone spans
        a direction of the covariance (``b h`` near 1, fewer rows than features), the
        downdate is ill-posed and the threshold is cross-fitted instead.
        """
        n_samples = len(X)
        keys = row_keys(X, y, dtype=self.dtype)
        rows = threshold_rows(n_samples, keys)
        copies = np.unique(keys, return_inverse=True, return_counts=True)
        copies = copies[2][copies[1].reshape(-1)][rows].astype(np.float64)
        if y is None:
            labels = np.zeros(n_samples, dtype=np.intp)
        else:
            labels = np.searchsorted(self.classes_, y)
        counts = np.bincount(labels, minlength=len(self.means_))
        scores = self._downdated_scores(X[rows], labels[rows], copies, counts, shrinkage,
                                        eigh)
        return self._held_out_scores(X, y) if scores is None else scores

    def _downdated_scores(self, X, own, copies, counts, shrinkage, eigh=None):
        """The leave-one-out scores of :meth:`_leave_one_out_scores` of the rows X (as
        given, before normalisation) of class index ``own``, each with ``copies`` rows
        in all, the classes holding ``counts`` rows; None where a downdate is ill-posed.
        """
        n_samples = int(counts.sum())
        n_own = counts[own].astype(np.float64)
        # B in the eigenbasis of Sigma (C shares it): its eigenvalues from Sigma's.
        eigenvalues, eigenvectors = np.linalg.eigh(self.covariance_) if eigh is None else eigh
        mu = self._spectrum.trace() / self.n_features_in_
        scores = np.empty(len(X))
        for m in np.unique(copies):
            group = copies == m
            b_eigenvalues = n_samples / (n_samples - m) * (eigenvalues - shrinkage * mu) + (
                shrinkage * mu)
            # |(v - w) to_b|^2 = (v - w)^T B^+ (v - w), with whitening()'s cut-off.
            to_b = eigenvectors * inverse_square_roots(b_eigenvalues, self.n_features_in_)
            Z, Z_means = self._centred(X[group]) @ to_b, (
                self.means_ - self.center_) @ to_b
            # (Z - M_j).(Z - M_c) and |Z - M_j|^2 from products, without an (m, C, D) block.
            products = Z @ Z_means.T
            mean_products = Z_means @ Z_means.T
            sq_norms = np.einsum("ij,ij->i", Z, Z)
            index, own_class, n_class = np.arange(len(Z)), own[group], n_own[group]
            distances = sq_norms[:, None] - 2 * products + np.diag(mean_products)[None, :]
            cross = (sq_norms[:, None] - products - products[index, own_class][:, None]
                     + mean_products[own_class])
            with np.errstate(divide="ignore", invalid="ignore"):
                # inf for a class of only these copies: it leaves with them
                a = n_class / (n_class - m)
                b = (1 - shrinkage) * m * a / (n_samples - m)
                h = distances[index, own_class]
                denominator = 1 - b * h
                if np.any((n_class > m) & (denominator < 1e-6)):
                    return None
                single = n_class <= m
                b, a = np.where(single, 0.0, b), np.where(single, 0.0, a)
                denominator = np.where(single, 1.0, denominator)
                downdated = distances + (b / denominator)[:, None] * cross ** 2
                downdated[index, own_class] = np.where(single, np.inf, a ** 2 * h / denominator)
            # nanmin: a class declared to partial_fit without rows yet has a NaN mean.
            scores[group] = -0.5 * np.nanmin(downdated, axis=1)
        return scores

    def _centred(self, X):
        """Training rows (numpy) as scoring sees them: normalised, minus ``center_``."""
        return (_unit_rows(X) if self.normalize_ else X) - self.center_

    def _score_array(self, X, rows=None):
        if self.normalize_:
            return super()._score_array(X, rows)
        # Centred on the host side of the cast, in X's precision (see map_batches).
        return map_batches(self._score_batch, X, read_only=True, center=self.center_,
                           rows=rows, **self._batch_kwargs())

    def _score_batch(self, V, state):
        if self.normalize_:
            norms = torch.linalg.vector_norm(V, dim=1, keepdim=True)
            V = V / norms.clamp_min(torch.finfo(V.dtype).tiny) - state["center_"]
        distances = whitened_distances(V, state["_scaled_basis"], state["_whitened_means"],
                                       state.get("_basis"), self._rest_scale)
        return -0.5 * distances.amin(dim=1)

    @property
    def covariance_(self):
        return self._spectrum.dense()

    @property
    def precision_(self):
        return self._spectrum.dense(-1.0)

    @property
    def whitening_(self):
        return self._spectrum.dense(-0.5)


def _unit_rows(X):
    """The rows of X divided by their L2 norms; a zero row stays zero (as with
    :class:`sklearn.preprocessing.Normalizer`)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros(X.shape), where=norms > 0)
