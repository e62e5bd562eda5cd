"""ViM: virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022).

The score is the energy of the head's logits minus a virtual logit: the norm of the
feature's residual outside the principal subspace of the training features (taken about
the origin ``u = -W^+ b`` of the head), scaled by ``alpha`` so that on the training rows
the virtual logit matches the largest real one on average.
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, RealNotInt

from .._backend import iter_slices, take_rows
from .._docstrings import fill_doc
from ..base import BaseOODDetector

# Rows per chunk of the float64 passes over the training rows in fit (bounded memory).
_FIT_ROWS = 8192


@fill_doc
class ViMDetector(BaseOODDetector):
    """Virtual-logit matching (ViM) detector.

    Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
    CVPR 2022, as in the authors' code. With ``W``, ``b`` the head's weights and bias
    and X the N in-distribution training rows:

    - origin ``u = -W^+ b`` (``W^+`` the Moore-Penrose pseudo-inverse, computed in
      float64 with the singular values below ``max(C, D) * eps * sigma_max`` taken as
      zero, ``eps`` that of the least precise of X, ``dtype`` and a given head: a
      softmax head is rank-deficient, and the authors' ``np.linalg.pinv`` (cut-off
      1e-15) inverts the rounding of its null direction, so that float32 and float64
      copies of the same data got origins and scores far apart);
    - principal subspace: the eigenvectors ``P`` (D, d) of the d largest eigenvalues of
      ``(X - u)^T (X - u) / N`` (no centring other than u); the authors' ``P_perp``
      holds the eigenvectors of the D - d others;
    - residual ``r(v) = || (v - u) P_perp || = || z - P P^T z ||``, z = v - u (the
      part of z outside the principal subspace; computed from P, d columns, not from
      the D - d of ``P_perp``);
    - ``alpha = mean_i max_k (W x_i + b)_k / mean_i r(x_i)`` over the training rows;

    and::

        score_samples(v) = logsumexp(W v + b) - alpha * r(v)

    the energy of the logits minus the virtual logit ``alpha * r(v)``. Higher means more
    in-distribution.

    Parameters
    ----------
    n_components : int, float in (0, 1) or None, default=None
        Dimension d of the principal subspace. An int is used as it is; a float keeps
        the fewest leading eigenvectors whose eigenvalues sum to more than that fraction
        of the trace (as :class:`~sklearn.decomposition.PCA` does), at most
        ``n_features - 1``; None follows the
        paper: 1000 when ``n_features >= 1500``, 512 when ``n_features >= 768``, else
        ``n_features // 2`` (at least 1). d must be smaller than ``n_features``.
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    n_components_ : int
        The dimension d of the principal subspace.
    origin_ : ndarray of shape (n_features,)
        The origin ``u = -W^+ b``.
    principal_space_ : ndarray of shape (n_features, n_components_)
        ``P``: orthonormal eigenvectors of the d largest eigenvalues (the authors'
        ``P_perp`` is its orthogonal complement).
    alpha_ : float
        The scale of the virtual logit.
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    EnergyDetector : the first term of the score alone.

    Notes
    -----
    ``alpha`` assumes that the training rows' largest logits are positive on average,
    as they are for a trained network (and for the default head, a softmax regression);
    a head with a negative mean largest logit gives a negative alpha, which rewards the
    residual instead of penalising it, and ``fit`` warns.

    **Hyperparameter search.** ``ViMDetector.search_space`` is the grid to search:
    ``{'n_components': [None, 0.5, 0.8, 0.9, 0.95, 0.99]}`` (fractions of the trace,
    so that the grid fits any feature width, and the paper's rule).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import ViMDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = ViMDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.n_components_, det.principal_space_.shape
    (32, (64, 32))
    >>> det.score_samples(X[:2] / 16).shape
    (2,)
    """

    _parameter_constraints = {
        **BaseOODDetector._parameter_constraints,
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
            None,
        ],
        "head": [None, object],
    }
    _tensor_attributes = (
        "head_coef_", "head_intercept_", "origin_", "principal_space_", "alpha_",
    )

    # The grid a user should search (see Notes).
    search_space = {"n_components": [None, 0.5, 0.8, 0.9, 0.95, 0.99]}

    def __init__(self, n_components=None, *, head=None, contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n_components = n_components
        self.head = head

    def _fits_rows_in_place(self):
        # A fold of the threshold's cross-fit reads its rows a chunk at a time (a copy
        # of 4/5 of a bank of 1.28M x 2,048 rows is 7.8 GiB), but for a head to train.
        return not self._head_fitted_on_X()

    def _fit(self, X, y, rows=None):
        """Fit on X, or on the rows ``X[rows]`` read in place (a fold, :meth:`_fit_rows`)."""
        self._fit_head(X, y)
        coef, intercept = self.head_coef_, self.head_intercept_
        origin = head_origin(coef, intercept, precision=self._head_precision(X))
        eigenvalues, eigenvectors, mean_max_logit = _principal_axes(
            X, origin, coef, intercept, rows)
        n_components = self._resolve_n_components(eigenvalues)
        principal_space = eigenvectors[:, :n_components]
        mean_residual, mean_norm = _mean_residual(X, origin, principal_space, rows)
        # Relative to the rows' size: below this the residual is rounding, not signal.
        if not mean_residual > np.sqrt(np.finfo(np.float64).eps) * mean_norm:
            raise ValueError(
                f"The training rows have no residual outside the {n_components}-dimensional "
                f"principal subspace (mean residual {mean_residual:.3g}, mean norm of "
                f"X - u {mean_norm:.3g}): X - u spans at most {n_components} dimensions, "
                "so the virtual logit's scale alpha is undefined. Use a smaller "
                "n_components, below the rank of the training rows."
            )
        alpha = mean_max_logit / mean_residual
        if alpha <= 0:
            warnings.warn(
                f"ViM's alpha is {alpha:.3g}: the training rows' largest logit is "
                f"{mean_max_logit:.3g} on average, not positive, so the virtual logit "
                "raises the score of rows far from the principal subspace.",
                UserWarning,
                stacklevel=3,
            )
        self.n_components_ = n_components
        self.origin_ = origin
        self.principal_space_ = np.ascontiguousarray(principal_space)
        self.alpha_ = float(alpha)

    def _head_precision(self, X):
        """The machine epsilon of the least precise of X, the fit's ``dtype`` and a given
        head's weights: the head's singular values below it are rounding (see
        :func:`head_origin`)."""
        dtypes = [X.dtype, np.dtype(self.dtype)]
        if not self._head_fitted_on_X():  # a fitted head: its weights' own precision
            coef = self.head[0] if isinstance(self.head, tuple) else self.head.coef_
            if np.asarray(coef).dtype.kind == "f":
                dtypes.append(np.asarray(coef).dtype)
        return max(float(np.finfo(dtype).eps) for dtype in dtypes)

    def _resolve_n_components(self, descending_eigenvalues):
        n_features = len(descending_eigenvalues)
        requested = self.n_components
        if requested is None:
            n_components = 1000 if n_features >= 1500 else 512 if n_features >= 768 else max(
                1, n_features // 2)
            what = f"n_components=None (the paper's rule) gives {n_components}, which"
        elif isinstance(requested, Integral):
            n_components = int(requested)
            what = f"n_components={n_components}"
        else:
            spectrum = np.clip(descending_eigenvalues, 0, None)
            # All rows at u (no spectrum): one component, refused below by the residual.
            explained = np.cumsum(spectrum) / spectrum.sum() if spectrum.any() else np.ones(
                n_features)
            n_components = int(np.searchsorted(explained, requested, side="right")) + 1
            # A fraction is a target: on few features it may ask for every component,
            # and n_features - 1 is the most that leaves a residual to score.
            n_components = min(n_components, max(1, n_features - 1))
            what = (f"n_components={requested} keeps {n_components} components to explain "
                    f"that fraction of the trace, which")
        if n_components >= n_features:
            raise ValueError(
                f"{what} must be smaller than n_features={n_features}: ViM scores the "
                "residual outside the n_components-dimensional principal subspace."
            )
        return n_components

    def _score_batch(self, V, state):
        energy = torch.logsumexp(self._head_logits(V, state), dim=1)
        Z = V - state["origin_"]
        principal = state["principal_space_"]
        residual = torch.linalg.vector_norm(Z - (Z @ principal) @ principal.T, dim=1)
        return energy - state["alpha_"] * residual


def head_origin(coef, intercept, *, precision):
    """ViM's origin ``u = -W^+ b``, computed in float64 whatever the fit's dtype.

    ``W^+`` is the Moore-Penrose pseudo-inverse with the singular values of ``W`` below
    ``max(n_classes, n_features) * precision`` times the largest one taken as zero
    (LAPACK's and numpy's rule, with the epsilon of the precision the head was computed
    in). A softmax head is rank-deficient: its class weights sum to zero, up to rounding
    (an L2-penalised multinomial regression's gradients keep ``sum_k W_k = 0``). In the
    head's precision that direction's singular value is rounding, about
    ``eps * sigma_max`` (1e-7 relative for a head fitted on float32 rows), and
    numpy's float64 cut-off keeps it: ``u`` then gets a component of arbitrary size (-8
    against 0 for the same rows in float64) and the scores move by several units.

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    precision : float
        The machine epsilon of the least precise of the head's weights and the rows.

    Returns
    -------
    ndarray of shape (n_features,) of float64
    """
    coef = np.asarray(coef, dtype=np.float64)
    left, singular, right = np.linalg.svd(coef, full_matrices=False)
    kept = singular > max(coef.shape) * precision * singular[0]
    # -W^+ b over the kept singular triplets only: V_k diag(1/s_k) U_k^T b.
    return -(right[kept].T @ ((left[:, kept].T @ np.asarray(intercept, dtype=np.float64))
                              / singular[kept]))


def _principal_axes(X, origin, coef, intercept, rows=None):
    """The eigenvalues (descending, all D of them) and eigenvectors (D, min(N, D)) of
    ``(X - u)^T (X - u) / N``, and the mean largest logit, in float64, of the rows
    ``X[rows]`` (None: X), read a chunk at a time.

    With fewer rows than features (ViT / CLIP widths, few rows), from the SVD of the
    (N, D) rows: the second moment has rank N at most, its other D - N eigenvalues are
    0, and the SVD costs O(N^2 D) where the (D, D) eigendecomposition costs O(D^3)
    (minutes at 5,000 features, in each of the cross-fit's six fits). Otherwise the
    (D, D) moment is summed a chunk of rows at a time and decomposed.
    """
    n_samples = len(X) if rows is None else len(rows)
    n_features = X.shape[1]
    max_logit_sum = 0.0
    for block in iter_slices(n_samples, _FIT_ROWS):
        chunk = np.asarray(take_rows(X, rows, block), dtype=np.float64)
        max_logit_sum += (chunk @ coef.T + intercept).max(axis=1).sum()
    mean_max_logit = max_logit_sum / n_samples
    if n_samples < n_features:
        centred = np.asarray(X if rows is None else X[rows], dtype=np.float64) - origin
        _, singular, right = np.linalg.svd(centred, full_matrices=False)
        eigenvalues = np.zeros(n_features)
        eigenvalues[: len(singular)] = singular ** 2 / n_samples
        return eigenvalues, right.T, mean_max_logit
    second_moment = np.zeros((n_features, n_features))
    for block in iter_slices(n_samples, _FIT_ROWS):
        centred = np.asarray(take_rows(X, rows, block), dtype=np.float64) - origin
        second_moment += centred.T @ centred
    eigenvalues, eigenvectors = np.linalg.eigh(second_moment / n_samples)  # ascending
    return eigenvalues[::-1], eigenvectors[:, ::-1], mean_max_logit


def _mean_residual(X, origin, principal_space, rows=None):
    """Mean over the rows ``X[rows]`` (None: X) of ``||z - P P^T z||`` (z = x - u) and
    of ``||z||`` (float64)."""
    n_samples = len(X) if rows is None else len(rows)
    residual_sum = norm_sum = 0.0
    for block in iter_slices(n_samples, _FIT_ROWS):
        centred = np.asarray(take_rows(X, rows, block), dtype=np.float64) - origin
        residual = centred - (centred @ principal_space) @ principal_space.T
        residual_sum += np.linalg.norm(residual, axis=1).sum()
        norm_sum += np.linalg.norm(centred, axis=1).sum()
    return residual_sum / n_samples, norm_sum / n_samples
