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

from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import clone
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf
from sklearn.utils._param_validation import HasMethods, StrOptions

_ESTIMATORS = {"empirical": EmpiricalCovariance, "ledoit_wolf": LedoitWolf, "oas": OAS}

COVARIANCE_CONSTRAINT = [StrOptions(set(_ESTIMATORS)), HasMethods(["fit"])]
"""Parameter constraint of ``covariance``: a name or a scikit-learn covariance estimator."""


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
    classes, labels, means = _classes_and_means(X, y)
    sigma, shrinkage = _fit_covariance(X - means[labels], covariance)
    if not return_shrinkage:
        return classes, means, sigma
    return classes, means, sigma, shrinkage


def _classes_and_means(X, y):
    if y is None:
        classes, labels = None, np.zeros(len(X), dtype=np.intp)
    else:
        classes, labels = np.unique(y, return_inverse=True)
        labels = labels.reshape(-1)
    return classes, labels, class_means(X, labels, 1 if classes is None else len(classes))


def _fit_covariance(centred, covariance):
    """The (D, D) covariance of the class-centred rows, and the shrinkage of a named
    estimator (None for a given one)."""
    if isinstance(covariance, str):
        # store_precision=False: the estimator's pinvh, a second eigendecomposition that
        # nothing reads (203 s at 5,000 features), is skipped.
        estimator = _ESTIMATORS[covariance](assume_centered=True, store_precision=False)
    else:
        estimator = clone(covariance)
    sigma = np.asarray(estimator.fit(centred).covariance_, dtype=np.float64)
    n_features = centred.shape[1]
    if sigma.shape != (n_features, n_features) or not np.isfinite(sigma).all():
        raise ValueError(
            f"The covariance estimator {estimator!r} gave a covariance_ of shape "
            f"{sigma.shape} with non-finite values or the wrong shape; expected "
            f"({n_features}, {n_features}) and finite."
        )
    shrinkage = None
    if isinstance(covariance, str):
        shrinkage = float(getattr(estimator, "shrinkage_", 0.0))
    return sigma, shrinkage


class Spectrum(NamedTuple):
    """A (D, D) covariance as ``basis diag(eigenvalues) basis^T + rest (I - basis
    basis^T)``: ``basis`` (D, k) has orthonormal columns, and every direction orthogonal
    to them has the eigenvalue ``rest``. k = D from a full eigendecomposition (``rest``
    then unused); k <= N + C from :func:`shared_spectrum`'s low-rank path."""

    basis: np.ndarray
    eigenvalues: np.ndarray
    rest: float

    @property
    def n_features(self):
        return self.basis.shape[0]

    def trace(self):
        return float(self.eigenvalues.sum() + (self.n_features - len(self.eigenvalues))
                     * self.rest)

    def whitening_scales(self):
        """The scales of ``Sigma^{+1/2}`` on the basis (k,) and on the rest (float),
        with :func:`whitening`'s cut-off over all D eigenvalues."""
        n_rest = self.n_features - len(self.eigenvalues)
        values = np.append(self.eigenvalues, self.rest if n_rest else 0.0)
        if values.max(initial=0.0) <= 0:
            raise ValueError(_ZERO_COVARIANCE)
        scales = inverse_square_roots(values, n_features=self.n_features)
        return scales[:-1], float(scales[-1])

    def scaled_basis(self):
        """``Sigma^{+1/2}`` in compact form: the basis B (D, k), ``B diag(a)`` (the
        whitening's scales a on it) and the scale t of every direction outside B (see
        :func:`whitened_distances`)."""
        scales, rest_scale = self.whitening_scales()
        return self.basis, self.basis * scales, rest_scale

    def dense(self, power=1.0):
        """``Sigma`` (power 1), ``Sigma^{+1/2}`` (-0.5) or ``Sigma^+`` (-1) as a (D, D)
        array: D^2 k operations and D^2 memory."""
        if power == 1.0:
            values, rest = self.eigenvalues, self.rest
        else:
            scales, rest_scale = self.whitening_scales()
            values, rest = scales ** (-2 * power), rest_scale ** (-2 * power)
        out = (self.basis * (values - rest)) @ self.basis.T
        if len(values) < self.n_features:
            out.flat[:: self.n_features + 1] += rest
        return out


def whitened_distances(Z, scaled_basis, whitened_means, basis, rest_scale):
    """Squared Mahalanobis distances ``|Sigma^{+1/2} (z - m)|^2`` (B, C) of rows Z
    (tensor) to means whose offsets lie in the span of the basis, from the compact form
    of :meth:`Spectrum.scaled_basis` (``whitened_means = means @ B diag(a)``)::

        |z B diag(a) - m B diag(a)|^2 + t^2 |z - (z B) B^T|^2

    without a (D, D) matrix: 2 D k a row. ``basis`` is not read when t = 0.
    """
    distances = torch.cdist(Z @ scaled_basis, whitened_means).square_()
    if rest_scale > 0:
        rest = Z - (Z @ basis) @ basis.T
        distances += rest_scale ** 2 * rest.square().sum(dim=1, keepdim=True)
    return distances


_ZERO_COVARIANCE = (
    "The within-class covariance of the training rows is zero: the features do not vary "
    "within the classes, so no Mahalanobis distance is defined."
)


def shared_spectrum(X, y, covariance, *, center=None, low_rank=None):
    """Class means, and the shared covariance as a :class:`Spectrum`.

    The covariance is :func:`shared_covariance`'s. With fewer rows than features (N
    training rows and C classes, N + C < D) and a named estimator, it is computed in
    the span of the class-centred rows and of the class means' offsets from ``center``,
    without a (D, D) array: the empirical covariance ``C = U^T U / N`` (U the centred
    rows) lives in that span, and the named estimators' shrinkage target ``mu I`` adds
    the same eigenvalue ``s mu`` to every other direction; their shrinkage depends on
    U through ``U U^T`` only (the formulas of :func:`sklearn.covariance.
    ledoit_wolf_shrinkage` and :class:`~sklearn.covariance.OAS`, rewritten with the
    N x N Gram matrix). An SVD of the (N + C, D) rows costs ``O((N + C)^2 D)`` where
    the covariance and its eigendecomposition cost ``O(N D^2 + D^3)``: at 5,000
    features, seconds instead of minutes. ``low_rank`` forces (True) or forbids
    (False) that path; None chooses it when N + C < D.

    Returns
    -------
    classes : ndarray of shape (n_classes,) or None
    means : ndarray of shape (n_classes, n_features)
    spectrum : Spectrum
    shrinkage : float or None
        That of a named estimator (0 for 'empirical'); None for a given estimator.
    """
    classes, labels, means = _classes_and_means(X, y)
    centred = X - means[labels]
    n_samples, n_features = X.shape
    if low_rank is None:
        low_rank = n_samples + len(means) < n_features
    if not (low_rank and isinstance(covariance, str)):
        sigma, shrinkage = _fit_covariance(centred, covariance)
        eigenvalues, eigenvectors = np.linalg.eigh(sigma)
        return classes, means, Spectrum(eigenvectors, eigenvalues, 0.0), shrinkage
    offsets = means - (X.mean(axis=0) if center is None else center)
    stacked = np.vstack([centred, offsets])
    _, singular, vt = np.linalg.svd(stacked, full_matrices=False)
    keep = singular > singular.max(initial=0.0) * max(stacked.shape) * np.finfo(
        np.float64).eps
    span = vt[keep].T  # (D, k), orthonormal
    gram = centred @ centred.T
    trace = float(np.trace(gram)) / n_samples  # of C, over all D features
    mu = trace / n_features
    shrinkage = _shrinkage(covariance, gram, n_features, mu)
    coordinates = centred @ span
    small = (1 - shrinkage) * (coordinates.T @ coordinates) / n_samples
    small.flat[:: len(small) + 1] += shrinkage * mu
    eigenvalues, eigenvectors = np.linalg.eigh(small)
    return classes, means, Spectrum(span @ eigenvectors, eigenvalues, shrinkage * mu), (
        shrinkage)


def _shrinkage(covariance, gram, n_features, mu):
    """The shrinkage scikit-learn's named estimator computes (assume_centered=True)
    from the rows U, written with their Gram matrix ``U U^T``."""
    if covariance == "empirical" or n_features == 1:
        return 0.0
    n_samples = len(gram)
    # |U^T U|_F^2 = |U U^T|_F^2.
    frobenius = float(np.sum(gram ** 2)) / n_samples ** 2
    trace_sum = mu * n_features
    if covariance == "ledoit_wolf":
        row_norms = np.diag(gram)
        beta = (float(np.sum(row_norms ** 2)) / n_samples - frobenius) / (
            n_features * n_samples)
        delta = (frobenius - 2.0 * mu * trace_sum + n_features * mu ** 2) / n_features
        beta = min(beta, delta)
        return 0.0 if beta == 0 else float(beta / delta)
    alpha = frobenius / n_features ** 2  # 'oas'
    numerator = alpha + mu ** 2
    denominator = (n_samples + 1) * (alpha - mu ** 2 / n_features)
    return 1.0 if denominator == 0 else float(min(numerator / denominator, 1.0))


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
        raise ValueError(_ZERO_COVARIANCE)
    return (eigenvectors * inverse_square_roots(eigenvalues)) @ eigenvectors.T


def inverse_square_roots(eigenvalues, n_features=None):
    """``1 / sqrt`` of the eigenvalues above the pseudo-inverse's cut-off (``D * eps *
    max eigenvalue``), 0 for the others: directions without variance are ignored.
    ``n_features``: D, where ``eigenvalues`` are not all D of them (a :class:`Spectrum`);
    default ``len(eigenvalues)``."""
    size = len(eigenvalues) if n_features is None else n_features
    keep = eigenvalues > size * np.finfo(np.float64).eps * max(
        eigenvalues.max(initial=0.0), 0.0)
    scale = np.zeros_like(eigenvalues)
    scale[keep] = 1.0 / np.sqrt(eigenvalues[keep])
    return scale


# Rows per block of the streamed statistics: 4,096 rows of 512 float64 features are 16 MiB,
# whatever the number of rows (a memmap bank is read block by block).
_MOMENTS_BLOCK = 4096


class ClassMoments:
    """Running sums of the rows of each class, from which the class means and the
    shared covariance of a named estimator follow exactly, one block of rows at a time.

    Each class c keeps its rows' count ``n_c`` and sums about a reference point ``r_c``
    (the mean of the class's first block, so that the sums stay small and the
    subtraction below loses no digits): ``s_c = sum a``, and over all classes ``M =
    sum_c sum_{i in c} a_i a_i^T``, with ``a = x - r_c``. The scatter of the
    class-centred rows is then ``S = M - sum_c s_c s_c^T / n_c`` (Chan, Golub & LeVeque,
    "Updating formulae and a pairwise algorithm for computing sample variances", 1979:
    sums about a shifted origin), the empirical covariance ``C = S / N``, and OAS's
    shrinkage reads C alone. Ledoit-Wolf's also reads ``sum_i |u_i|^4`` (``u = x - mu_c``;
    sklearn's :func:`~sklearn.covariance.ledoit_wolf_shrinkage` as ``sum(X2.T @ X2)``);
    with ``d_c = s_c / n_c = mu_c - r_c``, ``|u|^2 = |a|^2 - 2 a.d_c + |d_c|^2`` and so::

        sum_{i in c} |u_i|^4 = P4_c - 4 d_c.P3_c + 4 d_c^T M_c d_c + 2 |d_c|^2 P2_c
                               - 3 n_c |d_c|^4

    (``P2 = sum |a|^2``, ``P3 = sum |a|^2 a``, ``P4 = sum |a|^4``), which needs each class's
    own ``M_c`` (C (D, D) arrays): kept only for 'ledoit_wolf' (``fourth=True``), and
    only when the class means are not known beforehand (``partial_fit``): a ``fit`` that
    passes them as ``means`` has ``d_c = 0`` (up to rounding) and needs no ``M_c``.
    Memory: O(D^2), or O(C D^2) for a streamed Ledoit-Wolf (1,000 classes of 2,048
    features: 31 GiB, so ``fit`` reads the rows twice instead), whatever the rows.
    """

    def __init__(self, n_features, fourth=False, means=None):
        self.n_features = n_features
        self.fourth = fourth
        self.counts = np.zeros(0, dtype=np.int64)
        self.references = np.zeros((0, n_features))
        self.sums = np.zeros((0, n_features))
        self.scatter = np.zeros((n_features, n_features))
        # Exact class means as the references: the sums about them stay at rounding.
        self.known_means = means is not None
        if fourth:
            self.class_scatter = np.zeros((0, n_features, n_features))
            self.p2, self.p3, self.p4 = np.zeros(0), np.zeros((0, n_features)), np.zeros(0)
        if self.known_means:
            self.grow(len(means))
            self.references[:] = means

    def grow(self, n_classes):
        """Make room for classes up to index ``n_classes - 1`` (new ones empty)."""
        extra = n_classes - len(self.counts)
        if extra <= 0:
            return
        d = self.n_features
        self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])
        self.references = np.vstack([self.references, np.zeros((extra, d))])
        self.sums = np.vstack([self.sums, np.zeros((extra, d))])
        if self.fourth:
            if not self.known_means:
                self.class_scatter = np.concatenate([self.class_scatter,
                                                     np.zeros((extra, d, d))])
            self.p2 = np.concatenate([self.p2, np.zeros(extra)])
            self.p3 = np.vstack([self.p3, np.zeros((extra, d))])
            self.p4 = np.concatenate([self.p4, np.zeros(extra)])

    def update(self, X, labels, transform=None):
        """Add the rows ``X`` (any float dtype, a memmap too) of class index ``labels``,
        block by block in float64; ``transform`` maps a float64 block first (e.g. the
        L2 normalisation of Mahalanobis++)."""
        self.grow(int(labels.max(initial=-1)) + 1)
        for rows in _blocks(len(X)):
            block = np.asarray(X[rows], dtype=np.float64)
            if transform is not None:
                block = transform(block)
            index = labels[rows]
            new = [] if self.known_means else np.unique(index[self.counts[index] == 0])
            # A class seen for the first time: its reference is its mean in this block.
            for c in new:
                self.references[c] = block[index == c].mean(axis=0)
            block = block - self.references[index]  # a (block, D) temporary, not X
            np.add.at(self.sums, index, block)
            self.counts += np.bincount(index, minlength=len(self.counts))
            self.scatter += block.T @ block
            if self.fourth:
                squared = np.einsum("ij,ij->i", block, block)
                for c in ([] if self.known_means else np.unique(index)):
                    mine = block[index == c]
                    self.class_scatter[c] += mine.T @ mine
                np.add.at(self.p2, index, squared)
                np.add.at(self.p3, index, squared[:, None] * block)
                np.add.at(self.p4, index, squared ** 2)

    @property
    def n_samples(self):
        return int(self.counts.sum())

    def means(self):
        present = self.counts > 0
        out = self.references.copy()
        out[present] += self.sums[present] / self.counts[present, None]
        return out

    def center(self):
        """The mean of all the rows."""
        return (self.references * self.counts[:, None] + self.sums).sum(axis=0) / (
            self.n_samples)

    def empirical_covariance(self):
        """``C = S / N``, S the scatter of the class-centred rows."""
        present = self.counts > 0
        sums = self.sums[present]
        scatter = self.scatter - (sums / self.counts[present, None]).T @ sums
        return scatter / self.n_samples

    def sum_fourth_powers(self):
        """``sum_i |x_i - mu_{c_i}|^4`` (see the class's docstring)."""
        total = 0.0
        for c in np.flatnonzero(self.counts > 0):
            d = self.sums[c] / self.counts[c]
            dd = float(d @ d)
            # With the exact means as references d is rounding, and d^T M_c d its square.
            quadratic = 0.0 if self.known_means else float(d @ self.class_scatter[c] @ d)
            total += (self.p4[c] - 4 * float(d @ self.p3[c]) + 4 * quadratic
                      + 2 * dd * self.p2[c] - 3 * self.counts[c] * dd ** 2)
        return total

    def covariance(self, covariance):
        """The covariance of the named estimator and its shrinkage, as
        :func:`shared_covariance` fits them on the class-centred rows."""
        sigma = self.empirical_covariance()
        n_samples, n_features = self.n_samples, self.n_features
        mu = float(np.trace(sigma)) / n_features
        if covariance == "empirical" or n_features == 1:
            shrinkage = 0.0
        else:
            frobenius = float(np.sum(sigma ** 2))
            if covariance == "ledoit_wolf":
                beta = (self.sum_fourth_powers() / n_samples - frobenius) / (
                    n_features * n_samples)
                delta = (frobenius - 2.0 * mu * mu * n_features + n_features * mu ** 2) / (
                    n_features)
                beta = min(beta, delta)
                shrinkage = 0.0 if beta == 0 else float(beta / delta)
            else:  # 'oas'
                alpha = frobenius / n_features ** 2
                denominator = (n_samples + 1) * (alpha - mu ** 2 / n_features)
                shrinkage = 1.0 if denominator == 0 else float(
                    min((alpha + mu ** 2) / denominator, 1.0))
        shrunk = (1.0 - shrinkage) * sigma
        shrunk.flat[:: n_features + 1] += shrinkage * mu
        return shrunk, shrinkage


def class_means(X, labels, n_classes, transform=None):
    """The mean of each class's rows (``labels`` in ``range(n_classes)``), (C, D) in
    float64, read a block of rows at a time (``transform`` maps each float64 block)."""
    sums, counts = np.zeros((n_classes, X.shape[1])), np.zeros(n_classes)
    for rows in _blocks(len(X)):
        block = np.asarray(X[rows], dtype=np.float64)
        if transform is not None:
            block = transform(block)
        np.add.at(sums, labels[rows], block)
        counts += np.bincount(labels[rows], minlength=n_classes)
    return sums / np.maximum(counts, 1)[:, None]


def _blocks(n_rows):
    for start in range(0, n_rows, _MOMENTS_BLOCK):
        yield slice(start, min(start + _MOMENTS_BLOCK, n_rows))
