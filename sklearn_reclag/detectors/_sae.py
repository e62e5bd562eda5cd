"""RecLag's 'sae' solver: gradient steps on the memories, all classes as one batched program.

Two objectives, per class and batch x of B rows (Moriai et al., "Rectified Lagrangian for
Out-of-Distribution Detection in Modern Hopfield Networks", AAAI 2025):

- 'paper', the authors' objective, as their code computes it: with
  z = softmax(beta * x Xi^T), S memories xi_s drawn from z for each row and constant
  importance weights ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``,
  ``p_s = exp(-|x - xi_s|^2 / 2)``::

      loss = mean_{s, b} w_s * (mean_D (x - xi_s)^2 - log(z_{b, s} + 1e-12))

  each class's last partial batch dropped;
- 'likelihood', the negative log-likelihood of the equal-weight isotropic Gaussian mixture
  of variance 1/beta on the M memories (the density that ``energy='density'`` scores)::

      loss = mean_b -log (1/M) sum_mu N(x_b; xi_mu, I / beta)

  with its exact gradient (no draws), every row used.

Both are trained with Adam (betas (0.9, 0.98), eps 1e-9) on batches taken in order. The
classes are independent, so one step trains every class at once on its own batch, with a
closed-form gradient and a per-class Adam; a class with fewer batches than the others is
idle (not moved) for the rest of the epoch. The result equals one training run per class,
step for step, given the same draws (:mod:`sklearn_reclag._reference`). Each epoch records
the mean objective per training row, and a tolerance can stop the training early.

Two forms of each step: torch operations (:func:`sae_loss_and_grad`,
:func:`likelihood_loss_and_grad` and :class:`_MaskedAdam`), for any device, and on the CPU
the compiled kernels of :mod:`._sae_kernels`, which do the elementwise part of a step in
two passes instead of some thirty torch calls.
"""

import math
from collections import namedtuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .._backend import iter_slices, masked_offset

# Constants of the official objective and optimizer (the authors' code).
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-9
_WEIGHT_EPS = 1e-16
_EXP_FLOOR = -80.0
_LOG_EPS = 1e-12


def sae_batch_rows(labels, n_banks, batch_size, *, drop_last=True, order=None, rows=None):
    """Which row fills each slot of the training batches of every class, batch-major.

    Batches are taken in order (``order``, a permutation of the rows; None: their order
    in X), without shuffling. With ``drop_last`` the last partial batch of each class is
    dropped, as the official code does; without it, it is kept, padded (position -1).

    Parameters
    ----------
    labels, n_banks
        The bank index of each row and the number of banks, as in
        :func:`~sklearn_reclag.detectors._banks.pad_banks`.
    batch_size : int
    drop_last : bool, default=True
    order : ndarray of shape (n_samples,) of int, default=None
    rows : ndarray of shape (n_samples,) of int, default=None
        The rows are ``X[rows]`` (as in ``pad_banks``): the positions returned are then
        positions in X.

    Returns
    -------
    positions : ndarray of shape (n_steps, n_banks, batch_size) of int64
        ``positions[b, c]``: the rows of X in the b-th batch of class c; -1 on padding
        (once class c has no batch left, and after a kept last partial batch).
    n_batches : ndarray of shape (n_banks,) of int
        Batches per class; ``n_steps = n_batches.max()``.
    """
    labels = np.asarray(labels, dtype=np.intp)
    order = np.arange(len(labels)) if order is None else np.asarray(order)
    counts = np.bincount(labels, minlength=n_banks)
    n_batches = counts // batch_size if drop_last else -(-counts // batch_size)
    positions = np.full((int(n_batches.max(initial=0)), n_banks, batch_size), -1,
                        dtype=np.int64)
    for c in np.flatnonzero(n_batches):
        members = order[labels[order] == c][: n_batches[c] * batch_size]
        if rows is not None:
            members = rows[members]  # positions in X
        filled = np.full(n_batches[c] * batch_size, -1, dtype=np.int64)
        filled[: len(members)] = members
        positions[: n_batches[c], c] = filled.reshape(n_batches[c], batch_size)
    return positions, n_batches


def sae_batches(X, labels, n_banks, batch_size, *, drop_last=True, order=None, rows=None):
    """The training batches of every class, batch-major, in one array: what
    :func:`fit_sae` reads (:class:`SaeBatches` gathers them a step at a time instead).

    Parameters are those of :func:`sae_batch_rows`, with the rows ``X``.

    Returns
    -------
    batches : ndarray of shape (n_steps, n_banks, batch_size, n_features)
        ``batches[b, c]`` is the b-th batch of class c (zeros on padding).
    n_batches : ndarray of shape (n_banks,) of int
    """
    positions, n_batches = sae_batch_rows(labels, n_banks, batch_size, drop_last=drop_last,
                                          order=order, rows=rows)
    batches = np.zeros(positions.shape + (X.shape[1],), dtype=X.dtype)
    for step in range(len(positions)):
        _gather(X, positions[step], batches[step])
    return batches, n_batches


def _gather(X, positions, out):
    """``out[...] = X[positions]``, zeros where ``positions`` is -1 (padding)."""
    padding = positions < 0
    np.take(X, np.where(padding, 0, positions), axis=0, out=out, mode="clip")
    out[padding] = 0


class SaeBatches:
    """The training batches of :func:`sae_batches`, gathered from the rows a step at a
    time: what :func:`fit_sae` reads, without a copy of the bank.

    Iterating gives the (n_banks, batch_size, n_features) tensor of each step on the
    device, in order (one epoch); ``batches[step]`` gives one. A step's tensor is
    written into the same buffer as the others (a host buffer, and a device one off
    the CPU): it is valid until the next step is read. An epoch reads every stored row
    once, a gather at memory speed, next to the step's two products over the same rows.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The rows (a memmap too), read in place.
    positions : ndarray of shape (n_steps, n_banks, batch_size) of int
        From :func:`sae_batch_rows`.
    device : torch.device
    dtype : torch.dtype
    """

    def __init__(self, X, positions, device, dtype):
        self.X, self.positions = X, positions
        self.shape = positions.shape + (X.shape[1],)
        self._host = np.empty(self.shape[1:], dtype=X.dtype)
        self._device, self._dtype = device, dtype
        self._out = None

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, step):
        _gather(self.X, self.positions[step], self._host)
        host = torch.from_numpy(self._host)
        if host.device == self._device and host.dtype == self._dtype:
            return host
        if self._out is None:
            self._out = torch.empty(self.shape[1:], device=self._device, dtype=self._dtype)
        return self._out.copy_(host)

    def __iter__(self):
        for step in range(len(self)):
            yield self[step]


def batch_row_counts(labels, n_banks, batch_size, n_steps):
    """Real rows of every batch of :func:`sae_batches`: ndarray of shape (n_steps, n_banks).

    ``batch_size`` for a full batch, fewer for a kept last partial batch, 0 once the class
    has no batch left (or for the dropped partial batch with ``drop_last``).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.intp), minlength=n_banks)
    starts = batch_size * np.arange(n_steps)[:, None]
    return np.clip(counts - starts, 0, batch_size)


# Entries of the batches per block of class_spread's reductions: 2**22 float64 are 32 MiB.
_SPREAD_BLOCK = 2**22


def class_spread(batches, row_counts):
    """Root-mean-square deviation per feature of each class's rows from their mean.

    ``s_c = sqrt(sum_i |x_i - m_c|^2 / (n_c D))`` over the rows of the batches of class c
    (0 for a class without rows): the scale of the 'likelihood' objective's steps.

    Parameters
    ----------
    batches : tensor of shape (n_steps, C, B, D) or SaeBatches
        As :func:`sae_batches` returns them (zeros on padding rows).
    row_counts : ndarray of shape (n_steps, C)
        Real rows of every batch (:func:`batch_row_counts`).

    Returns
    -------
    ndarray of shape (C,) of float64
    """
    n_rows = torch.as_tensor(np.maximum(row_counts.sum(axis=0), 1), dtype=torch.float64)
    n_steps, n_banks, batch_size, n_features = batches.shape
    sums = torch.zeros((n_banks, n_features), dtype=torch.float64)
    sq_sums = torch.zeros(n_banks, dtype=torch.float64)
    # A few classes of one step at a time: a reduction with dtype=float64 casts its whole
    # input first, and one step of a thousand classes is half the bank (a float64 copy
    # of 1 GiB at 128,117 x 2,048, measured).
    n_classes = max(1, _SPREAD_BLOCK // max(batch_size * n_features, 1))
    for step in range(n_steps):
        for classes in iter_slices(n_banks, n_classes):
            block = batches[step][classes]
            sums[classes] += block.sum(dim=1, dtype=torch.float64).cpu()
            # Row norms first: no temporary of the size of the block.
            sq_sums[classes] += torch.linalg.vector_norm(
                block, dim=-1, dtype=torch.float64).square_().sum(dim=1).cpu()
    # sum |x - m|^2 = sum |x|^2 - n |m|^2, in float64.
    scatter = (sq_sums - (sums * sums).sum(dim=1) / n_rows).clamp(min=0)
    return torch.sqrt(scatter / (n_rows * batches.shape[3])).numpy()


# --------------------------------------------------------------------- the torch step
def draw_memories(probs, uniforms, last):
    """Categorical draws by inverse CDF: the first index whose cumulative probability
    reaches u.

    Parameters
    ----------
    probs : tensor of shape (C, M, B)
        A distribution over the M memories for each of the B rows of each class.
    uniforms : tensor of shape (C, B, S), values in [0, 1)
        The S uniform numbers of each row.
    last : tensor of shape (C, 1, 1)
        Index of the last real memory of each class (0 for an empty bank): rounding of
        the cumulative sum never picks padding.

    Returns
    -------
    tensor of shape (C, B, S) of int64
    """
    # Summed along the transposed view, the cumulative sums come out rows first and
    # contiguous, as searchsorted reads them. searchsorted (left) counts the cumulative
    # probabilities below u, without the (C, B, S, M) block a broadcast comparison builds.
    cdf = torch.cumsum(probs.transpose(1, 2), dim=2)
    return torch.searchsorted(cdf, uniforms).clamp_(max=last)


def _last_memory(memory_mask):
    return (memory_mask.sum(dim=1) - 1).clamp_(min=0)


def sae_loss_and_grad(x, memories, memory_mask, uniforms, *, beta, sampler="categorical",
                      x_sq=None, compute_loss=True, padding_logits=None, last_memory=None,
                      out=None, loss_out=None):
    """The official objective on one batch per class, and its gradient (torch form).

    The classes' losses are independent, so the gradient of their sum is computed in
    closed form for all classes at once (checked against autograd in the tests).
    With W[mu, b] (resp. A[mu, b]) the sum of w_s (resp. a_s = w_s z_s / (z_s + 1e-12))
    over the draws of row b that picked memory mu::

        dloss/dxi_mu = (1/(S B)) * sum_b ((2/D) W[mu, b] (xi_mu - x_b)
                                          - beta (A[mu, b] - z[mu, b] sum_s a_s) x_b)

    (with w_s of mean 1 over the draws; below they are normalised to sum 1, which absorbs
    the 1/S).

    Parameters
    ----------
    x : tensor of shape (C, B, D)
        One batch of stored patterns per class.
    memories : tensor of shape (C, M, D)
    memory_mask : bool tensor of shape (C, M)
        True on real memories, False on padding.
    uniforms : tensor of shape (C, B, S)
        The randomness of the S draws per row (see :func:`draw_memories`).
    beta : float
    sampler : {'categorical', 'double_softmax'}
        'categorical' draws from z; 'double_softmax' from softmax(z) over the real
        memories, as the authors' code does (it passes the probabilities z to a sampler
        that expects logits).
    x_sq : tensor of shape (C, B), default=None
        ``|x|^2`` of the rows, when the caller has it already.
    compute_loss : bool, default=True
        False skips the loss (the gradient does not need it) and returns None for it.
    padding_logits, last_memory : tensors, default=None
        ``memory_mask`` in the forms the step uses (0 / -inf of shape (C, M, 1), index
        of the last real memory of shape (C,)), when the caller has them already (a
        training loop computes them once).
    out : tensor of shape (C, M, D), default=None
        Where to write the gradient (a training loop reuses one buffer).
    loss_out : tensor of shape (C,), default=None
        Where to write the loss.

    Returns
    -------
    loss : tensor of shape (C,) or None
    grad : tensor of shape (C, M, D)
    """
    batch, n_features = x.shape[1], x.shape[2]
    if x_sq is None:
        x_sq = torch.linalg.vector_norm(x, dim=-1).square_()
    if padding_logits is None:
        padding_logits = masked_offset(memories, memory_mask)[:, :, None]
    if last_memory is None:
        last_memory = _last_memory(memory_mask)
    # Memories on dim 1 and rows last: a softmax over a short middle dimension is fast.
    # beta * x.xi, -inf on padding (C, M, B).
    logits = torch.baddbmm(padding_logits, memories, x.transpose(1, 2), alpha=beta)
    z = torch.softmax(logits, dim=1)
    probs = z if sampler == "categorical" else torch.softmax(z + padding_logits, dim=1)
    # The per-draw quantities below are (C, B, S), rows first like the draws.
    drawn = draw_memories(probs, uniforms, last_memory[:, None, None])

    # log p = -|x - xi|^2 / 2 = x.xi - |xi|^2 / 2 - |x|^2 / 2 for every (memory, row),
    # then per draw (never padding, whose -inf logits give -inf here).
    # vector_norm, not vecdot: vecdot allocates a (C, M, D) product first.
    norms = torch.linalg.vector_norm(memories, dim=-1, keepdim=True)
    log_p = torch.div(logits, beta).addcmul_(norms, norms, value=-0.5)
    log_p = log_p.sub_(x_sq[:, None, :], alpha=0.5).transpose(1, 2).gather(2, drawn)
    z_drawn = z.transpose(1, 2).gather(2, drawn)
    loss = None
    if compute_loss:
        # mean_D (x - xi)^2 = -2 log p / D, with log p <= 0 (up to rounding).
        log_p_0 = log_p.clamp(max=0.0)
    # |x - xi|^2 >= 0 up to rounding, hence the clamp at 0. exp is clamped at exp(-80)
    # (about 2e-35, still normal in float32): below that p is lost in the 1e-16 added
    # anyway, and subnormal results make exp 5x slower.
    w = log_p.clamp_(min=_EXP_FLOOR, max=0.0).exp_().add_(_WEIGHT_EPS)
    # Normalised to sum 1 over the draws: w_s / mean_s(w) = S w_s / sum_s(w), and the
    # factor S cancels against the 1 / S of the mean over draws.
    w = w.div_(w.sum(dim=2, keepdim=True))
    scale = 1.0 / batch
    if compute_loss:
        # loss = -(1/B) sum_(b, s) w (log(z + 1e-12) + (2/D) log p): one dot product per
        # class, few operations (on a GPU each costs a kernel launch).
        terms = torch.add(z_drawn, _LOG_EPS).log_().add_(log_p_0, alpha=2.0 / n_features)
        loss = torch.linalg.vecdot(w.flatten(1), terms.flatten(1), out=loss_out).mul_(-scale)

    a = w * z_drawn / (z_drawn + _LOG_EPS)
    # coef / beta = (A - z sum_s a_s) + (2 / (beta D)) W, with one scatter for A and W.
    coef = torch.zeros_like(logits)
    coef.transpose(1, 2).scatter_add_(2, drawn, torch.add(a, w, alpha=2.0 / (beta * n_features)))
    coef.addcmul_(z, a.sum(dim=2)[:, None, :], value=-1.0)
    # sum_b W[mu, b] from the draws directly.
    weight_sum = torch.zeros_like(norms).scatter_add_(
        1, drawn.view(drawn.shape[0], -1, 1), w.view(w.shape[0], -1, 1))
    grad = torch.mul(memories, weight_sum, out=out)
    return loss, grad.baddbmm_(coef, x, beta=2.0 * scale / n_features, alpha=-scale * beta)


def likelihood_loss_and_grad(x, row_weights, memories, memory_mask, *, beta, sq_norms=None,
                             x_sq=None, padding_logits=None, log_n_memories=None,
                             loss_offset=None, compute_loss=True, out=None, loss_out=None):
    """The 'likelihood' objective on one batch per class, and its gradient (torch form).

    The negative log-likelihood, per row, of the equal-weight isotropic Gaussian mixture
    of variance 1/beta on the M_c memories of the row's class (the density that
    ``energy='density'`` scores, and that the 'em' solver fits)::

        nll(x) = -log (1/M_c) sum_mu N(x; xi_mu, I / beta)
               = -lse_mu(-beta |x - xi_mu|^2 / 2) + log M_c + (D/2) log(2 pi / beta)

    averaged over the batch's rows with ``row_weights``. Its gradient is exact (no draws),
    with r = softmax_mu(-beta |x - xi_mu|^2 / 2) the responsibilities::

        dloss/dxi_mu = beta * sum_b row_weights[b] r[mu, b] (xi_mu - x_b)

    Parameters
    ----------
    x : tensor of shape (C, B, D)
        One batch of stored patterns per class, zeros on padding rows.
    row_weights : tensor of shape (C, B)
        ``1 / n_rows`` on the batch's real rows, 0 on padding rows (and for an idle class).
    memories : tensor of shape (C, M, D)
    memory_mask : bool tensor of shape (C, M)
    beta : float
    sq_norms, x_sq : tensors of shape (C, M) and (C, B), default=None
        ``|xi|^2`` and ``|x|^2``, when the caller has them already.
    padding_logits, log_n_memories : tensors, default=None
        0 / -inf of shape (C, M, 1) (0 throughout for an empty bank, so that nothing is
        NaN), and ``log M_c`` of shape (C,) (0 for an empty bank), when the caller has them.
    loss_offset : tensor of shape (C,), default=None
        The part of the loss that depends on the rows only
        (:func:`likelihood_loss_offset`), when the caller has it already.
    compute_loss : bool, default=True
        False skips the loss and returns None for it.
    out : tensor of shape (C, M, D), default=None
        Where to write the gradient.
    loss_out : tensor of shape (C,), default=None
        Where to write the loss.

    Returns
    -------
    loss : tensor of shape (C,) or None
    grad : tensor of shape (C, M, D)
    """
    if sq_norms is None:
        sq_norms = torch.linalg.vector_norm(memories, dim=-1).square_()
    if padding_logits is None:
        padding_logits = likelihood_padding(memory_mask).to(memories.dtype)
    if compute_loss and loss_offset is None:
        if x_sq is None:
            x_sq = torch.linalg.vector_norm(x, dim=-1).square_()
        if log_n_memories is None:
            log_n_memories = log_bank_sizes(memory_mask)
        loss_offset = likelihood_loss_offset(x_sq, row_weights, log_n_memories, beta,
                                             x.shape[2])
    # beta x.xi - beta |xi|^2 / 2: the log-responsibilities up to a per-row constant.
    logits = torch.baddbmm(padding_logits.add(sq_norms[:, :, None], alpha=-0.5 * beta),
                           memories, x.transpose(1, 2), alpha=beta)
    log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
    resp = logits.sub_(log_norm).exp_().mul_(row_weights[:, None, :])
    grad = torch.mul(memories, resp.sum(dim=2, keepdim=True), out=out)
    grad = grad.baddbmm_(resp, x, alpha=-1.0).mul_(beta)
    loss = None
    if compute_loss:
        # nll = offset - lse_mu(beta x.xi - beta |xi|^2 / 2), weighted over the rows.
        loss = torch.sub(loss_offset, torch.linalg.vecdot(log_norm[:, 0, :], row_weights),
                         out=loss_out)
    return loss, grad


def likelihood_loss_offset(x_sq, row_weights, log_n_memories, beta, n_features):
    """The part of the 'likelihood' loss that depends on the rows only.

    ``sum_b w_b (beta |x_b|^2 / 2 + log M_c + (D/2) log(2 pi / beta))`` for each class
    (0 for a class whose row weights are all 0), so that the loss of a step is this minus
    ``sum_b w_b lse_mu(beta x_b . xi_mu - beta |xi_mu|^2 / 2)``.

    Parameters
    ----------
    x_sq, row_weights : tensors of shape (..., C, B)
        ``|x|^2`` and the weights of the rows (several batches at once: leading dims).
    log_n_memories : tensor of shape (C,)
    beta : float
    n_features : int

    Returns
    -------
    tensor of shape (..., C), of the dtype of ``x_sq``
    """
    constant = log_n_memories.to(x_sq.dtype) + 0.5 * n_features * math.log(2 * math.pi / beta)
    return (torch.linalg.vecdot(x_sq, row_weights).mul_(0.5 * beta)
            .addcmul_(row_weights.sum(dim=-1), constant))


def likelihood_padding(memory_mask):
    """(C, M, 1) logit offsets of the 'likelihood' step: 0 on real memories, -inf on
    padding, and 0 throughout an empty bank (whose class never trains: no NaN there)."""
    empty = ~memory_mask.any(dim=1, keepdim=True)
    offset = torch.zeros(memory_mask.shape, device=memory_mask.device)
    return offset.masked_fill_(~(memory_mask | empty), -math.inf)[:, :, None]


def log_bank_sizes(memory_mask):
    """``log M_c`` of every bank (float64), 0 for an empty one."""
    return torch.log(memory_mask.sum(dim=1).clamp(min=1).double())


def adam_factors(n_batches, epoch, *, lr, betas=_ADAM_BETAS, eps=_ADAM_EPS):
    """Per-class factors of Adam for every step of an epoch, on the host in float64.

    Class c takes ``n_batches[c]`` steps per epoch, counts its own steps for the bias
    corrections and is idle for the rest of the epoch: zero lerp weights and step size.

    Returns
    -------
    ndarray of shape (n_steps, 4, C)
        For each step: the lerp weights of the two moments (``1 - beta1``,
        ``1 - beta2``), ``eps * b2`` and ``step_size * b2``, b2 the square root of the
        second bias correction (``step_size m / (sqrt(v) / b2 + eps) = (step_size b2) m /
        (sqrt(v) + eps b2)``).
    """
    beta1, beta2 = betas
    b = np.arange(n_batches.max(initial=0))[:, None]
    active = b < n_batches
    t = epoch * n_batches + np.minimum(b + 1, np.maximum(n_batches, 1))
    bias2 = np.sqrt(1 - beta2**t)
    return np.stack([
        (1 - beta1) * active,
        (1 - beta2) * active,
        eps * bias2,
        active * lr / (1 - beta1**t) * bias2,
    ], axis=1)


class _MaskedAdam:
    """Adam (torch.optim.Adam's update) for one parameter block per class, torch form.

    An idle class keeps its parameters *and* its moments, whereas torch's Adam would keep
    moving it through its momentum on a zero gradient; with the factors of
    :func:`adam_factors` idleness enters as zero interpolation weights and step sizes,
    which leave a class exactly as it was. The batched run thus equals one
    torch.optim.Adam per class. A step allocates nothing: its temporaries go to one
    scratch buffer.
    """

    def __init__(self, param):
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self._scratch = torch.empty_like(param)
        # sqrt of zeros and subnormals takes a slow path on x86 CPUs (about 5x); adding
        # the smallest normal number changes sqrt(v) by at most sqrt(tiny) (1e-19 in
        # float32), far below eps.
        self._tiny = torch.finfo(param.dtype).tiny

    def step(self, param, grad, factors):
        """Update ``param`` (C, M, D) in place; ``factors`` is a sequence of four (C, 1, 1)
        tensors, one step of :func:`adam_factors`."""
        lerp1, lerp2, eps, step_size = factors
        self.exp_avg.lerp_(grad, lerp1)
        self.exp_avg_sq.lerp_(torch.mul(grad, grad, out=self._scratch), lerp2)
        # A zero step size (idle class) gives 0 exactly.
        denom = torch.add(self.exp_avg_sq, self._tiny, out=self._scratch).sqrt_()
        param.addcdiv_(self.exp_avg, denom.add_(eps).div_(step_size), value=-1.0)


# --------------------------------------------------------------------- the engines
class _TorchSteps:
    """The steps of an epoch of the official objective as torch operations, any device."""

    def __init__(self, memories, memory_mask, *, beta, sampler):
        self.memories, self.memory_mask = memories, memory_mask
        self.optimizer = _MaskedAdam(memories)
        self.step_kwargs = {
            "beta": beta, "sampler": sampler,
            "padding_logits": masked_offset(memories, memory_mask)[:, :, None],
            "last_memory": _last_memory(memory_mask),
        }
        self.grad = torch.empty_like(memories)

    def run_epoch(self, batches, x_sq, weights, uniforms, factors, losses):
        """Train on every step of one epoch, writing each step's per-class losses into
        the rows of ``losses`` (n_steps, C), a tensor on the device (None: no loss)."""
        device, dtype = self.memories.device, self.memories.dtype
        # Split once per epoch: indexing inside the step loop costs more than the step's
        # small products.
        factors = torch.as_tensor(factors[..., None, None], device=device, dtype=dtype)
        for step, (x, x_sq_b, u, f) in enumerate(zip(batches, x_sq, uniforms,
                                                     factors.unbind(0))):
            _, grad = sae_loss_and_grad(
                x, self.memories, self.memory_mask, u, x_sq=x_sq_b,
                compute_loss=losses is not None, out=self.grad,
                loss_out=None if losses is None else losses[step], **self.step_kwargs)
            self.optimizer.step(self.memories, grad, f.unbind(0))


class _CompiledSteps:
    """The steps of an epoch of the official objective on the CPU: the products and the
    softmax by torch, the rest by the compiled kernels of :mod:`._sae_kernels`, on numpy
    views of the same memory."""

    def __init__(self, memories, memory_mask, *, beta, sampler, batch_size):
        # Imported here, not with the package: numba takes a third of a second to import.
        from . import _sae_kernels

        self.kernels = _sae_kernels
        n_banks, n_memories, n_features = memories.shape
        self.memories, self.beta = memories, beta
        self.double_softmax = sampler == "double_softmax"
        self.padding_logits = masked_offset(memories, memory_mask)[:, :, None]
        # torch writes the products into these tensors, the kernels read and write them
        # through the numpy views (the same memory).
        self.logits = memories.new_empty((n_banks, n_memories, batch_size))
        self.coef = torch.empty_like(self.logits)
        self.products = torch.empty_like(memories)
        self.views = {name: getattr(self, name).numpy()
                      for name in ("memories", "logits", "coef", "products")}
        dtype = self.views["memories"].dtype
        self.last = _last_memory(memory_mask).numpy()
        self.weight_sum = np.empty((n_banks, n_memories), dtype=dtype)
        self.sq_norms = np.einsum("cmd,cmd->cm", self.views["memories"],
                                  self.views["memories"])
        self.exp_avg = np.zeros((n_banks, n_memories, n_features), dtype=dtype)
        self.exp_avg_sq = np.zeros_like(self.exp_avg)
        self.no_loss = np.empty(0, dtype=dtype)
        # grad = (2 / (B D)) W xi - (beta / B) coef @ x (see draws_and_weights)
        self.weight_scale = 2.0 / (batch_size * n_features)
        self.product_scale = -beta / batch_size

    def run_epoch(self, batches, x_sq, weights, uniforms, factors, losses):
        """As :meth:`_TorchSteps.run_epoch`; ``losses`` is a numpy array."""
        views, kernels, dtype = self.views, self.kernels, self.exp_avg.dtype
        for step, (x, x_sq_b, u, f) in enumerate(zip(batches, x_sq.numpy(), uniforms.numpy(),
                                                     factors.astype(dtype))):
            torch.baddbmm(self.padding_logits, self.memories, x.transpose(1, 2),
                          alpha=self.beta, out=self.logits)
            z = torch.softmax(self.logits, dim=1)
            # The kernel writes the step's losses straight into their row.
            kernels.draws_and_weights(
                views["logits"], z.numpy(), x_sq_b, self.sq_norms, u, self.last, self.beta,
                x.shape[2], self.double_softmax, views["coef"], self.weight_sum,
                self.no_loss if losses is None else losses[step])
            torch.bmm(self.coef, x, out=self.products)
            kernels.adam_step(
                views["memories"], views["products"], self.weight_sum, self.exp_avg,
                self.exp_avg_sq, f, self.weight_scale, self.product_scale, self.sq_norms,
                np.finfo(dtype).tiny)


class _LikelihoodSteps:
    """The steps of an epoch of the 'likelihood' objective: torch operations on any device
    (:func:`likelihood_loss_and_grad`, then :class:`_MaskedAdam`)."""

    def __init__(self, memories, memory_mask, *, beta):
        self.memories, self.beta = memories, beta
        self.optimizer = _MaskedAdam(memories)
        self.step_kwargs = {
            "beta": beta,
            "padding_logits": likelihood_padding(memory_mask).to(memories.dtype),
        }
        self.log_n_memories = log_bank_sizes(memory_mask)
        self.loss_offsets = None  # of every batch, computed on the first epoch
        self.grad = torch.empty_like(memories)

    def run_epoch(self, batches, x_sq, weights, uniforms, factors, losses):
        """As :meth:`_TorchSteps.run_epoch`; ``weights`` (n_steps, C, B) holds the row
        weights of every batch."""
        device, dtype = self.memories.device, self.memories.dtype
        factors = torch.as_tensor(factors[..., None, None], device=device, dtype=dtype)
        if self.loss_offsets is None:
            self.loss_offsets = likelihood_loss_offset(x_sq, weights, self.log_n_memories,
                                                       self.beta, batches.shape[3])
        for step, (x, w, f) in enumerate(zip(batches, weights, factors.unbind(0))):
            sq_norms = torch.linalg.vector_norm(self.memories, dim=-1).square_()
            _, grad = likelihood_loss_and_grad(
                x, w, self.memories, None, sq_norms=sq_norms,
                loss_offset=self.loss_offsets[step], compute_loss=losses is not None,
                out=self.grad, loss_out=None if losses is None else losses[step],
                **self.step_kwargs)
            self.optimizer.step(self.memories, grad, f.unbind(0))


class _CompiledLikelihoodSteps:
    """The steps of an epoch of the 'likelihood' objective on the CPU: the two products by
    torch, the responsibilities and Adam by the compiled kernels of :mod:`._sae_kernels`
    (as :class:`_CompiledSteps` for the official objective)."""

    def __init__(self, memories, memory_mask, *, beta, batch_size):
        from . import _sae_kernels

        self.kernels = _sae_kernels
        n_banks, n_memories, n_features = memories.shape
        self.memories, self.beta = memories, beta
        self.padding_logits = likelihood_padding(memory_mask).to(memories.dtype)
        self.logits = memories.new_empty((n_banks, n_memories, batch_size))
        self.resp = torch.empty_like(self.logits)
        self.products = torch.empty_like(memories)
        self.views = {name: getattr(self, name).numpy()
                      for name in ("memories", "logits", "resp", "products")}
        dtype = self.views["memories"].dtype
        self.constant = (log_bank_sizes(memory_mask).numpy()
                         + 0.5 * n_features * math.log(2 * math.pi / beta)).astype(dtype)
        self.weight_sum = np.empty((n_banks, n_memories), dtype=dtype)
        self.sq_norms = np.einsum("cmd,cmd->cm", self.views["memories"],
                                  self.views["memories"])
        self.exp_avg = np.zeros((n_banks, n_memories, n_features), dtype=dtype)
        self.exp_avg_sq = np.zeros_like(self.exp_avg)
        self.no_loss = np.empty(0, dtype=dtype)

    def run_epoch(self, batches, x_sq, weights, uniforms, factors, losses):
        """As :meth:`_LikelihoodSteps.run_epoch`; ``weights`` and ``losses`` are numpy
        arrays."""
        views, kernels, dtype = self.views, self.kernels, self.exp_avg.dtype
        for step, (x, x_sq_b, w, f) in enumerate(zip(batches, x_sq.numpy(), weights,
                                                     factors.astype(dtype))):
            torch.baddbmm(self.padding_logits, self.memories, x.transpose(1, 2),
                          alpha=self.beta, out=self.logits)
            kernels.mixture_responsibilities(
                views["logits"], self.sq_norms, x_sq_b, w, self.beta, self.constant,
                views["resp"], self.weight_sum, self.no_loss if losses is None else losses[step])
            torch.bmm(self.resp, x, out=self.products)
            # grad = beta (weight_sum xi - resp @ x)
            kernels.adam_step(
                views["memories"], views["products"], self.weight_sum, self.exp_avg,
                self.exp_avg_sq, f, self.beta, -self.beta, self.sq_norms,
                np.finfo(dtype).tiny)


SaeFit = namedtuple("SaeFit", ["memories", "loss_curve", "converged"])
SaeFit.__doc__ = """What :func:`fit_sae` returns.

memories : tensor of shape (C, M, D)
    The learned memories.
loss_curve : list of float
    The mean objective per training row of every epoch run (``len(loss_curve)`` epochs).
converged : bool
    Whether the early-stopping rule stopped the training (always False for ``tol=None``).
"""


def fit_sae(batches, n_batches, memories, memory_mask, *, beta, max_epochs, lr, uniforms=None,
            objective="paper", sampler="categorical", row_counts=None, tol=None,
            n_iter_no_change=10, verbose=0, compiled=None):
    """Train the memories of every class by gradient steps, all classes at once.

    Class c has ``n_batches[c]`` batches per epoch, taken in order, and is idle once
    they are used up, so the batched run equals one run per class. Every epoch records
    the mean objective per training row (the objective of each class's batch, weighted by
    its rows) in ``loss_curve``. With ``tol`` set, training stops once that mean has not
    improved on the best so far by at least ``tol`` for ``n_iter_no_change`` epochs in a
    row (:class:`~sklearn.linear_model.SGDClassifier`'s rule).

    Parameters
    ----------
    batches : tensor of shape (n_steps, C, B, D) or SaeBatches
        The training batches, batch-major (see :func:`sae_batches`); SaeBatches
        gathers each step's from the rows when it is read.
    n_batches : array-like of shape (C,) of int
        Batches per class.
    memories : tensor of shape (C, M, D)
        Initial memories (zeros on padding).
    memory_mask : bool tensor of shape (C, M)
    beta : float
    max_epochs : int
    lr : float or array-like of shape (C,)
        Adam's learning rate (per class when an array).
    uniforms : callable, default=None
        ``uniforms(epoch)`` returns a tensor of shape (n_steps, C, B, S) of values
        in [0, 1), on the device of ``memories``, of its dtype: the randomness of one
        epoch's S draws per row (objective 'paper' only). Passing the same numbers to
        :func:`sklearn_reclag._reference.fit_reclag_reference` gives the same draws.
    objective : {'paper', 'likelihood'}, default='paper'
        The official objective (:func:`sae_loss_and_grad`) or the mixture's negative
        log-likelihood (:func:`likelihood_loss_and_grad`).
    sampler : {'categorical', 'double_softmax'}, default='categorical'
        How 'paper' draws memories: from z, or from softmax(z) (see
        :func:`sae_loss_and_grad`).
    row_counts : ndarray of shape (n_steps, C) of int, default=None
        Real rows of every batch (:func:`batch_row_counts`); None: every batch of an
        active class is full.
    tol : float or None, default=None
        None runs exactly ``max_epochs`` epochs.
    n_iter_no_change : int, default=10
    verbose : int
        > 0 shows a progress bar over epochs, with the mean loss.
    compiled : bool, default=None
        Use the compiled kernels (CPU only); None uses them on the CPU.

    Returns
    -------
    SaeFit
        ``(memories, loss_curve, converged)``.
    """
    n_batches = np.asarray(n_batches)
    n_steps, n_banks, batch_size = batches.shape[:3]
    if row_counts is None:
        row_counts = batch_size * (np.arange(n_steps)[:, None] < n_batches)
    total_rows = row_counts.sum()
    memories = memories.clone()  # updated in place
    device, dtype = memories.device, memories.dtype
    if compiled is None:
        compiled = device.type == "cpu"
    # |x|^2 of every row once, not per step and epoch.
    # A step at a time (SaeBatches gathers one step at a time).
    x_sq = memories.new_empty(batches.shape[:3])
    for step, x in enumerate(batches):
        x_sq[step] = torch.linalg.vector_norm(x, dim=-1).square_()
    weights = None
    if objective == "likelihood":
        # Each row weighs 1 / (real rows of its batch); padding rows weigh 0.
        weights = np.where(np.arange(batch_size) < row_counts[:, :, None],
                           1.0 / np.maximum(row_counts, 1)[:, :, None], 0.0)
        uniforms = _no_uniforms
        if compiled:
            engine = _CompiledLikelihoodSteps(memories, memory_mask, beta=beta,
                                              batch_size=batch_size)
            weights = weights.astype(engine.exp_avg.dtype)
        else:
            engine = _LikelihoodSteps(memories, memory_mask, beta=beta)
            weights = torch.as_tensor(weights, device=device, dtype=dtype)
    elif compiled:
        engine = _CompiledSteps(memories, memory_mask, beta=beta, sampler=sampler,
                                batch_size=batch_size)
    else:
        engine = _TorchSteps(memories, memory_mask, beta=beta, sampler=sampler)
    # The per-step losses of an epoch, averaged with the row counts as weights at its end:
    # one transfer per epoch.
    row_weights = row_counts / max(total_rows, 1)
    if compiled:
        losses = np.zeros((n_steps, n_banks), dtype=engine.exp_avg.dtype)
    else:
        losses = torch.zeros((n_steps, n_banks), device=device, dtype=dtype)
        row_weights = torch.as_tensor(row_weights, device=device)
    loss_curve, converged = [], False
    best, stalled = np.inf, 0
    epochs = tqdm(range(max_epochs if total_rows else 0), desc="RecLag (sae)", unit="epoch",
                  disable=verbose <= 0)
    for epoch in epochs:
        engine.run_epoch(batches, x_sq, weights, uniforms(epoch),
                         adam_factors(n_batches, epoch, lr=lr), losses)
        # Idle (step, class) pairs weigh 0; where() keeps a NaN there out of the sum.
        loss = float((row_weights * _where_counted(losses, row_weights)).sum())
        loss_curve.append(loss)
        if verbose > 0:
            epochs.set_postfix(loss=loss)
        if tol is not None:
            stalled = stalled + 1 if loss > best - tol else 0
            best = min(best, loss)
            if stalled >= n_iter_no_change:
                converged = True
                break
    return SaeFit(memories, loss_curve, converged)


def _no_uniforms(epoch):
    return None


def _where_counted(losses, row_weights):
    if isinstance(losses, np.ndarray):
        return np.where(row_weights > 0, losses, 0.0)
    return torch.where(row_weights > 0, losses, 0.0)
