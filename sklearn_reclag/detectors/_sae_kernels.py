"""Compiled CPU kernels of RecLag's 'sae' step (numba).

A batched step of the paper's objective is two small batched matrix products and a chain
of elementwise work on arrays of a few thousand numbers: the categorical draws, the
importance weights, the gradient's coefficients and Adam; a step of the 'likelihood'
objective, the mixture's responsibilities and Adam. On a CPU each torch call of that
chain costs more in dispatch than in arithmetic (about 30 calls of 5-30 us each, against
a few microseconds of work), so there the chain runs as two compiled loops; the products
(and the paper's softmax) stay with torch. The torch form of the same steps
(:func:`~sklearn_reclag.detectors._sae.sae_loss_and_grad`,
:func:`~sklearn_reclag.detectors._sae.likelihood_loss_and_grad` and ``_MaskedAdam``) runs
on the other devices, and the tests check that both forms take the same steps.

``error_model='numpy'``: a division by zero gives inf or NaN, as in numpy, instead of a
check per division, which would keep the loops from being vectorised. Compiled code is
cached on disk (``cache=True``) where numba can write its cache: the first fit of a new
installation compiles it once per dtype, in about three seconds (in every new process
when nothing is writable).
"""

import math

import numba
import numpy as np

from ._sae import _EXP_FLOOR, _LOG_EPS, _WEIGHT_EPS


def _compiled(function):
    """``numba.njit``, cached on disk where numba finds a writable place for the cache
    (next to this file, or the user's cache folder); compiled at each first use otherwise,
    e.g. a read-only installation for a user whose home is not writable, where numba
    raises "cannot cache function ...: no locator available" when the cache is asked for.
    """
    options = dict(nogil=True, boundscheck=False, error_model="numpy")
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:
        return numba.njit(cache=False, **options)(function)


@_compiled
def draws_and_weights(logits, z, x_sq, sq_norms, uniforms, last, beta, n_features,
                      double_softmax, coef, weight_sum, loss):
    """The draws, weights and gradient coefficients of one batched step.

    For each class c and row b, with z = softmax(beta * x Xi^T) over the memories:
    S memories are drawn by inverse CDF (the first index whose cumulative probability
    reaches u; from z, or from softmax(z) over the real memories when ``double_softmax``);
    each draw gets ``log p_s = -|x - xi_s|^2 / 2`` and the weight
    ``w_s = (p_s + 1e-16) / sum_s(p + 1e-16)`` (p_s floored at exp(-80), far below the
    1e-16 added); ``a_s = w_s z_s / (z_s + 1e-12)``.

    Parameters
    ----------
    logits : ndarray of shape (C, M, B)
        ``beta * x . xi``, -inf on padding memories.
    z : ndarray of shape (C, M, B)
        softmax of ``logits`` over the memories.
    x_sq : ndarray of shape (C, B)
        ``|x|^2`` of the rows.
    sq_norms : ndarray of shape (C, M)
        ``|xi|^2`` of the memories.
    uniforms : ndarray of shape (C, B, S), values in [0, 1)
    last : ndarray of shape (C,) of int64
        Index of the last real memory of each class: rounding of the cumulative sum never
        picks padding.
    beta : float
    n_features : int
    double_softmax : bool
        Draw from softmax(z), as the authors' code does.
    coef : ndarray of shape (C, M, B), written
        ``(A - z sum_s a_s) + (2 / (beta D)) W``, with ``A[mu, b]`` and ``W[mu, b]`` the
        sums of a_s and w_s over the draws of row b that picked memory mu: the gradient
        is ``(2 / (B D)) sum_b W[mu, b] xi_mu - (beta / B) (coef @ x)[mu]``.
    weight_sum : ndarray of shape (C, M), written
        ``sum_b W[mu, b]``.
    loss : ndarray of shape (C,) or (0,), written
        The objective ``mean_{s, b} w_s (mean_D (x - xi_s)^2 - log(z_s + 1e-12))`` (with
        the weights' mean of 1); an empty array skips it.
    """
    n_banks, n_memories, batch = logits.shape
    n_draws = uniforms.shape[2]
    real = logits.dtype.type
    inv_beta = real(1.0) / real(beta)
    w_scale = real(2.0) / (real(beta) * real(n_features))
    exp_floor = real(_EXP_FLOOR)
    floor_weight = real(math.exp(_EXP_FLOOR)) + real(_WEIGHT_EPS)
    probs = np.empty(n_memories, dtype=logits.dtype)
    drawn = np.empty(n_draws, dtype=np.int64)
    log_p = np.empty(n_draws, dtype=logits.dtype)
    w = np.empty(n_draws, dtype=logits.dtype)
    for c in range(n_banks):
        weight_sum[c, :] = 0
        total_loss = real(0)
        for b in range(batch):
            if double_softmax:
                # softmax(z + padding): z lies in [0, 1], so exp cannot overflow.
                mass = real(0)
                for m in range(n_memories):
                    p = math.exp(z[c, m, b]) if logits[c, m, b] > -np.inf else real(0)
                    probs[m] = p
                    mass += p
                for m in range(n_memories):
                    probs[m] = probs[m] / mass
            else:
                for m in range(n_memories):
                    probs[m] = z[c, m, b]
            w_total = real(0)
            for s in range(n_draws):
                u = uniforms[c, b, s]
                cumulative = real(0)
                k = 0
                for m in range(n_memories - 1):
                    cumulative += probs[m]
                    if cumulative >= u:
                        break
                    k += 1
                k = min(k, last[c])
                drawn[s] = k
                lp = (logits[c, k, b] * inv_beta - real(0.5) * sq_norms[c, k]
                      - real(0.5) * x_sq[c, b])
                lp = min(lp, real(0))  # |x - xi|^2 >= 0 up to rounding
                log_p[s] = lp
                w[s] = floor_weight if lp <= exp_floor else math.exp(lp) + real(_WEIGHT_EPS)
                w_total += w[s]
            a_total = real(0)
            for s in range(n_draws):
                w[s] = w[s] / w_total
                z_s = z[c, drawn[s], b]
                a_total += w[s] * z_s / (z_s + real(_LOG_EPS))
            for m in range(n_memories):
                coef[c, m, b] = -z[c, m, b] * a_total
            for s in range(n_draws):
                k = drawn[s]
                z_s = z[c, k, b]
                coef[c, k, b] += w[s] * z_s / (z_s + real(_LOG_EPS)) + w_scale * w[s]
                weight_sum[c, k] += w[s]
                if loss.size:
                    total_loss += w[s] * (real(-2.0) * log_p[s] / real(n_features)
                                          - math.log(z_s + real(_LOG_EPS)))
        if loss.size:
            loss[c] = total_loss / real(batch)


@_compiled
def adam_step(memories, products, weight_sum, exp_avg, exp_avg_sq, factors, weight_scale,
              product_scale, sq_norms, tiny):
    """The gradient from its two parts, then Adam, per class; ``|xi|^2`` of the result.

    ``grad = weight_scale * weight_sum[c, mu] * xi_mu + product_scale * products[c, mu]``
    (see :func:`draws_and_weights`); then torch.optim.Adam's update with the per-class
    ``factors`` of :func:`~sklearn_reclag.detectors._sae.adam_factors` (the lerp weights
    of the moments, ``eps * b2`` and ``step_size * b2``). A class whose step size is 0 is
    idle this step: its memories and moments stay as they are.

    Parameters
    ----------
    memories, exp_avg, exp_avg_sq : ndarray of shape (C, M, D), updated in place
    products : ndarray of shape (C, M, D)
        ``coef @ x``; overwritten by the gradient.
    weight_sum : ndarray of shape (C, M)
    factors : ndarray of shape (4, C)
    weight_scale, product_scale : float
    sq_norms : ndarray of shape (C, M), written for the classes that moved
    tiny : float
        The dtype's smallest normal number, added under the square root: sqrt of zeros
        and subnormals is slow on x86, and the change (1e-19 in float32) is far below eps.
    """
    n_banks, n_memories, n_features = memories.shape
    real = memories.dtype.type
    for c in range(n_banks):
        lerp1, lerp2, eps, step_size = factors[0, c], factors[1, c], factors[2, c], factors[3, c]
        if step_size == 0:
            continue
        for m in range(n_memories):
            xi, grad = memories[c, m], products[c, m]
            m1, m2 = exp_avg[c, m], exp_avg_sq[c, m]
            scale = real(weight_scale) * weight_sum[c, m]
            for d in range(n_features):
                grad[d] = scale * xi[d] + real(product_scale) * grad[d]
            for d in range(n_features):
                m1[d] += lerp1 * (grad[d] - m1[d])
                m2[d] += lerp2 * (grad[d] * grad[d] - m2[d])
                xi[d] -= step_size * m1[d] / (math.sqrt(m2[d] + real(tiny)) + eps)
            sq_norms[c, m] = np.dot(xi, xi)


@_compiled
def mixture_responsibilities(logits, sq_norms, x_sq, row_weights, beta, constant, resp,
                             weight_sum, loss):
    """The responsibilities and the loss of one batched step of the 'likelihood' objective.

    For each class c and row b of weight ``w = row_weights[c, b]`` (0 on padding rows),
    with ``l_mu = beta x . xi_mu - beta |xi_mu|^2 / 2``: ``r_mu = softmax_mu(l)``, written
    as ``w r_mu``; the gradient is ``beta (weight_sum[c, mu] xi_mu - (resp @ x)[mu])``.

    Parameters
    ----------
    logits : ndarray of shape (C, M, B)
        ``beta * x . xi``, -inf on padding memories.
    sq_norms : ndarray of shape (C, M)
        ``|xi|^2`` of the memories.
    x_sq : ndarray of shape (C, B)
        ``|x|^2`` of the rows.
    row_weights : ndarray of shape (C, B)
        ``1 / n_rows`` on the batch's real rows, 0 on padding rows.
    beta : float
    constant : ndarray of shape (C,)
        ``log M_c + (D/2) log(2 pi / beta)``.
    resp : ndarray of shape (C, M, B), written
        ``w r``.
    weight_sum : ndarray of shape (C, M), written
        ``sum_b w r_mu``.
    loss : ndarray of shape (C,) or (0,), written
        ``sum_b w nll(x_b)``, ``nll(x) = -log (1/M_c) sum_mu N(x; xi_mu, I / beta)``; an
        empty array skips it.
    """
    n_banks, n_memories, batch = logits.shape
    real = logits.dtype.type
    half_beta = real(0.5) * real(beta)
    shifted = np.empty(n_memories, dtype=logits.dtype)
    for c in range(n_banks):
        weight_sum[c, :] = 0
        total = real(0)
        for b in range(batch):
            w = row_weights[c, b]
            if w == 0:
                resp[c, :, b] = 0
                continue
            top = -np.inf
            for m in range(n_memories):
                shifted[m] = logits[c, m, b] - half_beta * sq_norms[c, m]
                top = max(top, shifted[m])
            mass = real(0)
            for m in range(n_memories):
                shifted[m] = math.exp(shifted[m] - top)  # 0 on padding
                mass += shifted[m]
            for m in range(n_memories):
                r = w * shifted[m] / mass
                resp[c, m, b] = r
                weight_sum[c, m] += r
            if loss.size:
                total += w * (constant[c] - top - math.log(mass) + half_beta * x_sq[c, b])
        if loss.size:
            loss[c] = total
