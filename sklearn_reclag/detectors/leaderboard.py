"""Post-hoc detectors of the OpenOOD v1.5 leaderboard that read the penultimate features
and the last linear layer: SCALE, ASH, GEN, fDBD and NCI.

With v a row of features and z = W v + b the logits of the linear head (the network's last
layer), each score is written from its authors' code, or OpenOOD's where that is the code
the leaderboard ran (openood/postprocessors/*.py and openood/networks/{ash,scale}_net.py):

- SCALE (Xu et al., ICLR 2024): ``logsumexp(W (v * exp(s1 / s2)) + b)``
- ASH (Djurisic et al., ICLR 2023): ``logsumexp(W ash(v) + b)``, ash = prune, binarise or scale
- GEN (Liu et al., CVPR 2023): ``-sum_{top M} p^gamma (1 - p)^gamma``, p = softmax(z)
- fDBD (Liu & Qin, ICML 2024): distances to the decision boundaries over ``|v - mu|``
- NCI (Liu & Qin, CVPR 2025): ``w_c . (v - mu) / |v - mu| + alpha |v|_1``

The relative Mahalanobis distance (RMDS), which reads class statistics rather than the
head, is in :mod:`sklearn_reclag.detectors.rmds`.
"""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._docstrings import fill_doc
from .baselines import _LogitDetector


def _n_kept(n_features, percentile):
    """How many activations ASH and SCALE keep: ``n - round(n * percentile / 100)`` as
    the official code computes it (numpy's round, half to even), and at least one: the
    official code would keep none (percentile 100, or a single feature at 90) and
    divide by zero."""
    return max(1, n_features - int(np.round(n_features * percentile / 100.0)))


def _sharpening_exponent(V, kept_values):
    """``s1 / s2``: the sum of a row over the sum of its kept (largest) values.

    For non-negative features it lies in [1, n_features / n_kept]; a row whose kept
    values sum to 0 (an all-zero row, common after a ReLU) gets 0, i.e. no scaling,
    where the official code computes 0 / 0 = NaN.
    """
    s1, s2 = V.sum(dim=1), kept_values.sum(dim=1)
    nonzero = s2 != 0
    return torch.where(nonzero, s1 / torch.where(nonzero, s2, torch.ones_like(s2)),
                       torch.zeros_like(s1))


class _ActivationShapingDetector(_LogitDetector):
    """SCALE and ASH: the energy of the logits of reshaped activations; ``percentile``
    sets how many of a row's largest activations are kept (per row, nothing learned
    from the training rows but the head)."""

    _parameter_constraints = {
        **_LogitDetector._parameter_constraints,
        "percentile": [Interval(Real, 0, 100, closed="both")],
    }

    # Its name in the warning about negative features.
    _method = ""

    def _fit(self, X, y):
        self.n_kept_ = _n_kept(X.shape[1], self.percentile)
        self._warn_if_negative(X)
        return super()._fit(X, y)

    def _warn_if_negative(self, X):
        low = float(X.min())
        if low < 0:
            warnings.warn(
                f"{type(self).__name__}: X holds negative values (min {low:.3g}). "
                f"{self._method} assumes non-negative activations (the penultimate layer "
                "after its ReLU): with negative values the sum of a row's largest "
                "values no longer bounds its total, so the scaling exp(s1 / s2) may "
                "shrink rows instead of sharpening them, or overflow where the kept "
                "values sum to nearly 0, and ASH-B's fill value may be negative. "
                "Features of networks without a final ReLU (transformers, GELU) are "
                "known to defeat ASH and SCALE: prefer another detector there, or "
                "pass the post-ReLU features.",
                UserWarning,
                # The caller of fit: above this method, _fit, fit and _fit_context.
                stacklevel=5,
            )

    def _kept(self, V):
        """The ``n_kept_`` largest values of each row and their columns (ties broken by
        torch.topk, as in the official code)."""
        return torch.topk(V, self.n_kept_, dim=1)


@fill_doc
class SCALEDetector(_ActivationShapingDetector):
    """SCALE: the energy of activations scaled by their own sharpness (Xu et al., 2024).

    Xu, Lian, Feng, Zhang & Ni, "Scaling for Training Time and Post-hoc
    Out-of-distribution Detection Enhancement", ICLR 2024, as OpenOOD's
    ``scale_postprocessor.py`` and ``scale_net.py`` compute it. With ``s1`` the sum of the
    features of a row v, ``s2`` the sum of its k largest features,
    ``k = n_features - round(n_features * percentile / 100)``, and ``r = s1 / s2``::

        score_samples(v) = logsumexp(W (v * exp(r)) + b)

    Unlike ASH, SCALE keeps every activation: the pruning only measures how much of the
    row's mass its largest values hold, and scales the whole row by ``exp(r)``. For
    non-negative features ``1 <= r <= n_features / k``.

    Parameters
    ----------
    percentile : float in [0, 100], default=85
        Percentile of a row's own activations below which they count as pruned, when
        measuring r (the official default, 85; at least one activation is kept).
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    n_kept_ : int
        k, the number of activations that ``s2`` sums.
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    ASHDetector : prunes the activations instead of only measuring them.
    ReActDetector : clips the activations at a percentile of the training rows.

    Notes
    -----
    The paper assumes non-negative (post-ReLU) features, and ``fit`` warns when X holds
    negative values: s1 may then be smaller than s2 or negative, so that ``exp(r)``
    shrinks a row, and r is unbounded where the kept values sum to nearly 0 (the score
    overflows; ``fit`` then refuses a non-finite threshold). A row whose kept values sum
    to 0 (an all-zero row) is not scaled (the official code computes 0 / 0 there).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import SCALEDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = SCALEDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.n_kept_  # 64 - round(64 * 0.85)
    10
    >>> det.score_samples(X[:2] / 16).shape
    (2,)
    """

    _method = "SCALE"

    search_space = {"percentile": [65, 70, 75, 80, 85, 90, 95]}
    """A GridSearchCV ``param_grid``: the official sweep of the percentile."""

    def __init__(self, percentile=85, *, head=None, contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.percentile = percentile

    def _score_batch(self, V, state):
        scale = torch.exp(_sharpening_exponent(V, self._kept(V).values))
        # W (v * exp(r)) + b, with the scalar exp(r) applied to the product.
        logits = torch.addcmul(state["head_intercept_"], scale[:, None],
                               V @ state["head_coef_"].T)
        return torch.logsumexp(logits, dim=1)


@fill_doc
class ASHDetector(_ActivationShapingDetector):
    """ASH: activation shaping, the energy of pruned activations (Djurisic et al., 2023).

    Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for
    Out-of-Distribution Detection", ICLR 2023, as the authors' ``ash.py`` computes it.
    Each row v keeps its k largest features,
    ``k = n_features - round(n_features * percentile / 100)``, and zeroes the others;
    with ``s1`` the sum of v and ``s2`` that of the kept values, the kept values become:

    - ``'p'`` (prune): themselves;
    - ``'b'`` (binarise): ``s1 / k`` each;
    - ``'s'`` (scale): themselves times ``exp(s1 / s2)``;

    and::

        score_samples(v) = logsumexp(W ash(v) + b)

    **OpenOOD's "ASH" is ASH-B.** The OpenOOD leaderboard's ASH row (ASHNet in
    ``openood/networks/ash_net.py``) applies ``ash_b`` at percentile 90:
    ``ASHDetector(variant='b')``. The default here is the paper's headline ASH-S at 90.

    Parameters
    ----------
    variant : {'s', 'b', 'p'}, default='s'
        How the kept activations are reshaped (see above).
    percentile : float in [0, 100], default=90
        Percentile of a row's own activations below which they are pruned (the
        official default, 90; at least one activation is kept).
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    n_kept_ : int
        k, the number of activations kept.
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    SCALEDetector : ASH-S's scaling applied to the unpruned row.

    Notes
    -----
    The paper assumes non-negative (post-ReLU) features, and ``fit`` warns when X holds
    negative values: ASH-B's fill ``s1 / k`` may then be negative, and ASH-S's
    ``exp(s1 / s2)`` may shrink a row or overflow. Where several activations tie at the
    k-th largest value, torch.topk chooses which are kept, as in the official code; for
    'p' and 's' that matters only when the tied value is not 0, for 'b' also at 0 (a
    row with fewer than k positive activations). A row whose kept values sum to 0 is
    not scaled by 's' (the official code computes 0 / 0 there).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import ASHDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = ASHDetector(variant="s", percentile=90, device="cpu")
    >>> det = det.fit(X[y < 5] / 16, y[y < 5])
    >>> det.n_kept_  # 64 - round(64 * 0.9)
    6
    """

    _parameter_constraints = {
        **_ActivationShapingDetector._parameter_constraints,
        "variant": [StrOptions({"p", "b", "s"})],
    }
    _method = "ASH"

    search_space = {"variant": ["b", "s"], "percentile": [65, 70, 75, 80, 85, 90, 95]}
    """A GridSearchCV ``param_grid``: the official sweep of the percentile, for ASH-B
    (OpenOOD's row) and ASH-S (the paper's best); ASH-P is the weakest in the paper."""

    def __init__(self, variant="s", percentile=90, *, head=None, contamination=0.05,
                 device="auto", dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.variant = variant
        self.percentile = percentile

    def _score_batch(self, V, state):
        coef, intercept = state["head_coef_"], state["head_intercept_"]
        kept_values, columns = self._kept(V)
        # A new tensor: V may be a view of the user's X.
        if self.variant == "b":
            kept = torch.zeros_like(V).scatter_(1, columns, 1.0)
            fill = V.sum(dim=1) / self.n_kept_
            logits = torch.addcmul(intercept, fill[:, None], kept @ coef.T)
        else:
            pruned = torch.zeros_like(V).scatter_(1, columns, kept_values)
            if self.variant == "p":
                logits = torch.addmm(intercept, pruned, coef.T)
            else:
                scale = torch.exp(_sharpening_exponent(V, kept_values))
                logits = torch.addcmul(intercept, scale[:, None], pruned @ coef.T)
        return torch.logsumexp(logits, dim=1)


@fill_doc
class GENDetector(_LogitDetector):
    """GEN: the generalised entropy of the largest softmax probabilities (Liu et al., 2023).

    Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
    Detection", CVPR 2023, as OpenOOD's ``gen_postprocessor.py`` computes it. With
    ``p = softmax(W v + b)`` and ``p_(1) >= ... >= p_(M)`` its M largest probabilities
    (M = ``top_m``, at most the number of classes)::

        score_samples(v) = -sum_{j <= M} p_(j)^gamma (1 - p_(j))^gamma

    A confident prediction (one probability near 1, the others near 0) has a small
    generalised entropy, hence a high score.

    Parameters
    ----------
    gamma : float > 0, default=0.1
        The exponent gamma (the official default).
    top_m : int >= 1, default=100
        M, how many of the largest probabilities enter the sum (the official default,
        100); capped at the number of classes (``top_m_``).
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    top_m_ : int
        ``min(top_m, n_classes)``.
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    MSPDetector : the largest probability alone.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import GENDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = GENDetector(gamma=0.1, top_m=100, device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.top_m_  # capped at the 5 classes
    5
    """

    _parameter_constraints = {
        **_LogitDetector._parameter_constraints,
        "gamma": [Interval(Real, 0, None, closed="neither")],
        "top_m": [Interval(Integral, 1, None, closed="left")],
    }

    search_space = {"gamma": [0.01, 0.1, 0.5, 1.0, 5.0]}
    """A GridSearchCV ``param_grid``: gamma over the official sweep's range. ``top_m``
    (official sweep 10-1000) changes nothing below 10 classes; add it to the grid for
    heads with hundreds of classes."""

    def __init__(self, gamma=0.1, top_m=100, *, head=None, contamination=0.05,
                 device="auto", dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.gamma = gamma
        self.top_m = top_m

    def _fit(self, X, y):
        training_scores = super()._fit(X, y)
        self.top_m_ = min(self.top_m, len(self.classes_))
        return training_scores

    def _score_batch(self, V, state):
        probabilities = torch.softmax(self._head_logits(V, state), dim=1)
        largest = torch.topk(probabilities, self.top_m_, dim=1).values
        return -(largest.pow(self.gamma) * (1 - largest).pow(self.gamma)).sum(dim=1)


class _CentredLogitDetector(_LogitDetector):
    """fDBD and NCI: the head, and the mean of the training features."""

    _tensor_attributes = ("head_coef_", "head_intercept_", "train_mean_")

    def _fit(self, X, y):
        # A mean over every row moves by little when one row is left out: the training
        # rows' own scores stay the threshold's (see _LogitDetector._fit).
        self.train_mean_ = np.mean(X, axis=0, dtype=np.float64)
        return super()._fit(X, y)


def _safe_norm(A, dtype):
    """Row norms of A, at least the smallest normal number of ``dtype``: a row at the
    training mean (or all zero) divides a numerator of 0 by it, which gives 0, not NaN."""
    return torch.linalg.vector_norm(A, dim=1).clamp_min(torch.finfo(dtype).tiny)


@fill_doc
class FDBDDetector(_CentredLogitDetector):
    """fDBD: distance to the decision boundaries, regularised by the feature distance
    to the training mean (Liu & Qin, 2024).

    Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector", ICML 2024,
    as the authors' code (``run_cifar.py`` of litianliu/fDBD-OOD, and OpenOOD's
    ``fdbd_postprocessor.py``) computes it. With ``z = W v + b``, ``f`` the predicted
    class (``argmax z``) and ``mu`` the mean of the training features, the distance of v
    to the boundary between classes f and j is ``(z_f - z_j) / |w_f - w_j|``, and::

        score_samples(v) = sum_{j != f} (z_f - z_j) / |w_f - w_j|  /  |v - mu|

    A row far from every decision boundary relative to its distance from the mean of the
    training features is in distribution.

    **The code sums where the paper averages.** The paper divides the sum by C - 1 (the
    number of other classes); the official code does not. The two differ by a constant
    factor and rank rows identically; this detector follows the code.

    Parameters
    ----------
    distance_as_normalizer : bool, default=True
        Divide by ``|v - mu|`` (True, the paper's and the official default) or by
        ``|v|`` (False, which OpenOOD's code offers and selects on validation data).
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    train_mean_ : ndarray of shape (n_features,)
        mu, the mean of the training rows.
    boundary_norms_ : ndarray of shape (n_classes, n_classes)
        ``|w_f - w_j|``, with 1 on the diagonal (whose terms are 0).
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    NCIDetector : the same authors' alignment with the predicted class's weights.

    Notes
    -----
    Two classes with (nearly) identical weights have no boundary between them, and
    ``fit`` refuses such a head. A row exactly at the normaliser's origin (``mu``, or 0)
    scores +inf, the limit of the score there, as in the official code; where its
    logits also tie it scores 0 rather than the official code's NaN (0 / 0).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import FDBDDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = FDBDDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.boundary_norms_.shape
    (5, 5)
    """

    _parameter_constraints = {
        **_LogitDetector._parameter_constraints,
        "distance_as_normalizer": ["boolean"],
    }
    _tensor_attributes = (*_CentredLogitDetector._tensor_attributes, "boundary_norms_")

    search_space = {"distance_as_normalizer": [True, False]}
    """A GridSearchCV ``param_grid``: the official sweep."""

    def __init__(self, distance_as_normalizer=True, *, head=None, contamination=0.05,
                 device="auto", dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.distance_as_normalizer = distance_as_normalizer

    def _fit(self, X, y):
        training_scores = super()._fit(X, y)
        self.boundary_norms_ = self._boundary_norms(self.head_coef_)
        return training_scores

    def _boundary_norms(self, coef):
        """``|w_f - w_j|`` for every pair of classes, 1 on the diagonal; refuses a head
        with two classes of (nearly) identical weights."""
        squared_norms = np.einsum("ij,ij->i", coef, coef)
        norms = np.sqrt(np.clip(
            squared_norms[:, None] + squared_norms[None, :] - 2 * coef @ coef.T, 0, None))
        off_diagonal = ~np.eye(len(coef), dtype=bool)
        # The Gram form rounds to about sqrt(eps) of the weights' norms: below 1e-6 of
        # them two rows are the same for this purpose.
        tiny = 1e-6 * max(float(np.sqrt(squared_norms.max())), np.finfo(np.float64).tiny)
        same = (norms <= tiny) & off_diagonal
        if same.any():
            f, j = np.argwhere(same)[0]
            raise ValueError(
                f"The head's weights of classes {self.classes_.tolist()[f]!r} and "
                f"{self.classes_.tolist()[j]!r} are identical (|w_f - w_j| = {norms[f, j]:.3g}): "
                "fDBD divides by the distance between the weights of two classes, and "
                "these have no decision boundary between them. Use a head whose classes "
                "have distinct weights."
            )
        np.fill_diagonal(norms, 1.0)
        return norms

    def _score_batch(self, V, state):
        logits = self._head_logits(V, state)
        largest, predicted = logits.max(dim=1)
        # (z_f - z_j) / |w_f - w_j|, 0 for j = f.
        distances = (largest[:, None] - logits) / state["boundary_norms_"][predicted]
        origin = V - state["train_mean_"] if self.distance_as_normalizer else V
        return distances.sum(dim=1) / _safe_norm(origin, V.dtype)


@fill_doc
class NCIDetector(_CentredLogitDetector):
    """NCI: alignment of the centred feature with its predicted class's weights, plus its
    L1 norm (Liu & Qin, 2025).

    Liu & Qin, "Detecting Out-of-Distribution through the Lens of Neural Collapse",
    CVPR 2025, as the authors' code (OpenOOD's ``nci_postprocessor.py``, which their
    repository litianliu/NCI-OOD points to) computes it. With ``z = W v + b``, ``c`` the
    predicted class (``argmax z``), ``w_c`` its row of W and ``mu`` the mean of the
    training features::

        score_samples(v) = w_c . (v - mu) / |v - mu|_2 + alpha * |v|_1

    The first term (the paper's proximity, pScore) is ``|w_c|`` times the cosine of the
    angle between the centred feature and the weights of its class, near which Neural
    Collapse puts the in-distribution features; the second rewards features far from
    the origin, where Neural Collapse's simplex puts them and OOD features are not.

    Parameters
    ----------
    alpha : float >= 0, default=1e-4
        Weight of the L1 norm (the official default; the official sweep is 1e-4 to 0.1).
        Its useful range depends on the scale of the features.
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    train_mean_ : ndarray of shape (n_features,)
        mu, the mean of the training rows.
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    FDBDDetector : the same authors' distance to the decision boundaries.

    Notes
    -----
    A row exactly at the training mean has no direction: its first term is 0.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import NCIDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = NCIDetector(alpha=1e-4, device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.train_mean_.shape
    (64,)
    """

    _parameter_constraints = {
        **_LogitDetector._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
    }

    search_space = {"alpha": [0.0001, 0.001, 0.01, 0.1]}
    """A GridSearchCV ``param_grid``: the official sweep."""

    def __init__(self, alpha=1e-4, *, head=None, contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.alpha = alpha

    def _score_batch(self, V, state):
        coef = state["head_coef_"]
        predicted = self._head_logits(V, state).argmax(dim=1)
        centred = V - state["train_mean_"]
        # w_c . (v - mu) for the predicted c, from the products with every class: a
        # (batch, n_classes) block rather than a (batch, n_features) gather of W's rows.
        alignment = (centred @ coef.T).gather(1, predicted[:, None])[:, 0]
        proximity = alignment / _safe_norm(centred, V.dtype)
        return proximity + self.alpha * torch.linalg.vector_norm(V, ord=1, dim=1)
