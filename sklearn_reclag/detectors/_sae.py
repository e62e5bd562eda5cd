"""RecLag's official learning objective ('sae'), all classes trained as one batched program.

The objective (specs/reclag.md), per class and batch x of B rows, with
z = softmax(beta * x Xi^T), S memories xi_s drawn from z for each row and constant
importance weights ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``, ``p_s = exp(-|x - xi_s|^2 / 2)``::

    loss = mean_{s, b} w_s * (mean_D (x - xi_s)^2 - log(z_{b, s} + 1e-12))

trained with Adam (betas (0.9, 0.98), eps 1e-9) on batches taken in order, the last partial
batch dropped. The classes are independent, so one step trains every class at once on its
own batch, with a closed-form gradient and a per-class Adam; a class with fewer batches
than the others is idle (not moved) for the rest of the epoch. The result equals one
training run per class, step for step, given the same draws
(:func:`sklearn_reclag._reference.fit_reclag_reference`).

Two forms of the step: torch operations (:func:`sae_loss_and_grad` and :class:`_MaskedAdam`),
for any device, and on the CPU the compiled kernels of :mod:`._sae_kernels`, which do the
elementwise part of the step in two passes instead of some thirty torch calls.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from .._backend import masked_offset

# Constants of the official objective and optimizer (specs/reclag.md).
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-9
_WEIGHT_EPS = 1e-16
_EXP_FLOOR = -80.0
_LOG_EPS = 1e-12


def sae_batches(X, labels, n_banks, batch_size):
    """The training batches of every class, batch-major: what :func:`fit_sae` reads.

    Batches are taken in order, without shuffling, and the last partial batch of each
    class is dropped, as the official code does.

    Parameters
    ----------
    X, labels, n_banks
        The rows, the bank index of each row and the number of banks, as in
        :func:`~sklearn_reclag.detectors._banks.pad_banks`.
    batch_size : int

    Returns
    -------
    batches : ndarray of shape (n_steps, n_banks, batch_size, n_features)
        ``batches[b, c]`` is the b-th batch of class c (zeros once class c has no batch
        left); one contiguous block per step.
    n_batches : ndarray of shape (n_banks,) of int
        Batches per class; ``n_steps = n_batches.max()``.
    """
    labels = np.asarray(labels, dtype=np.intp)
    n_batches = np.bincount(labels, minlength=n_banks) // batch_size
    batches = np.zeros((int(n_batches.max(initial=0)), n_banks, batch_size, X.shape[1]),
                       dtype=X.dtype)
    for c in np.flatnonzero(n_batches):
        rows = np.flatnonzero(labels == c)[: n_batches[c] * batch_size]
        # Straight into the batch-major slots, without a temporary copy of the rows.
        np.take(X, rows.reshape(n_batches[c], batch_size), axis=0,
                out=batches[: n_batches[c], c], mode="clip")
    return batches, n_batches


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
                      out=None):
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
    sampler : {'categorical', 'official'}
        'categorical' draws from z; 'official' reproduces the official code, which
        passes z as logits, i.e. draws from softmax(z).
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
        sq_dist = log_p.clamp(max=0.0).mul_(-2.0)
    # |x - xi|^2 >= 0 up to rounding, hence the clamp at 0. exp is clamped at exp(-80)
    # (about 2e-35, still normal in float32): below that p is lost in the 1e-16 added
    # anyway, and subnormal results make exp 5x slower.
    w = log_p.clamp_(min=_EXP_FLOOR, max=0.0).exp_().add_(_WEIGHT_EPS)
    # Normalised to sum 1 over the draws: w_s / mean_s(w) = S w_s / sum_s(w), and the
    # factor S cancels against the 1 / S of the mean over draws.
    w = w.div_(w.sum(dim=2, keepdim=True))
    scale = 1.0 / batch
    if compute_loss:
        loss = (w * (sq_dist / n_features - torch.log(z_drawn + _LOG_EPS))).sum(dim=(1, 2))
        loss = loss.mul_(scale)

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


# --------------------------------------------------------------------- the two engines
class _TorchSteps:
    """The steps of an epoch as torch operations, on any device."""

    def __init__(self, memories, memory_mask, *, beta, sampler):
        self.memories, self.memory_mask = memories, memory_mask
        self.optimizer = _MaskedAdam(memories)
        self.step_kwargs = {
            "beta": beta, "sampler": sampler,
            "padding_logits": masked_offset(memories, memory_mask)[:, :, None],
            "last_memory": _last_memory(memory_mask),
        }
        self.grad = torch.empty_like(memories)

    def run_epoch(self, batches, x_sq, uniforms, factors, compute_loss):
        """Train on every step of one epoch; the mean loss of the steps' active classes
        when ``compute_loss``, else None."""
        device, dtype = self.memories.device, self.memories.dtype
        # Split once per epoch: indexing inside the step loop costs more than the step's
        # small products.
        factors = torch.as_tensor(factors[..., None, None], device=device, dtype=dtype)
        losses = []
        for x, x_sq_b, u, f in zip(batches, x_sq, uniforms, factors.unbind(0)):
            loss, grad = sae_loss_and_grad(x, self.memories, self.memory_mask, u, x_sq=x_sq_b,
                                           compute_loss=compute_loss, out=self.grad,
                                           **self.step_kwargs)
            self.optimizer.step(self.memories, grad, f.unbind(0))
            if compute_loss:
                losses.append(loss[f[3].view(-1) > 0].mean())
        return float(torch.stack(losses).mean()) if losses else None


class _CompiledSteps:
    """The steps of an epoch on the CPU: the products and the softmax by torch, the rest
    by the compiled kernels of :mod:`._sae_kernels`, on numpy views of the same memory."""

    def __init__(self, memories, memory_mask, *, beta, sampler, batch_size):
        # Imported here, not with the package: numba takes a third of a second to import.
        from . import _sae_kernels

        self.kernels = _sae_kernels
        n_banks, n_memories, n_features = memories.shape
        self.memories, self.beta, self.official = memories, beta, sampler == "official"
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
        # grad = (2 / (B D)) W xi - (beta / B) coef @ x (see draws_and_weights)
        self.weight_scale = 2.0 / (batch_size * n_features)
        self.product_scale = -beta / batch_size

    def run_epoch(self, batches, x_sq, uniforms, factors, compute_loss):
        """As :meth:`_TorchSteps.run_epoch`."""
        views, kernels, dtype = self.views, self.kernels, self.exp_avg.dtype
        loss = np.empty(len(self.last) if compute_loss else 0, dtype=dtype)
        losses = []
        for x, x_sq_b, u, f in zip(batches, x_sq.numpy(), uniforms.numpy(),
                                   factors.astype(dtype)):
            torch.baddbmm(self.padding_logits, self.memories, x.transpose(1, 2),
                          alpha=self.beta, out=self.logits)
            z = torch.softmax(self.logits, dim=1)
            kernels.draws_and_weights(
                views["logits"], z.numpy(), x_sq_b, self.sq_norms, u, self.last, self.beta,
                x.shape[2], self.official, views["coef"], self.weight_sum, loss)
            torch.bmm(self.coef, x, out=self.products)
            kernels.adam_step(
                views["memories"], views["products"], self.weight_sum, self.exp_avg,
                self.exp_avg_sq, f, self.weight_scale, self.product_scale, self.sq_norms,
                np.finfo(dtype).tiny)
            if compute_loss:
                losses.append(loss[f[3] > 0].mean())
        return float(np.mean(losses)) if losses else None


def fit_sae(batches, n_batches, memories, memory_mask, *, beta, max_epochs, lr, uniforms,
            sampler="categorical", verbose=0, compiled=None):
    """Train the memories of every class by the official objective, all classes at once.

    Class c has ``n_batches[c]`` batches per epoch, taken in order, and is idle once
    they are used up, so the batched run equals one run per class.

    Parameters
    ----------
    batches : tensor of shape (n_steps, C, B, D)
        The training batches, batch-major (see :func:`sae_batches`).
    n_batches : array-like of shape (C,) of int
        Batches per class.
    memories : tensor of shape (C, M, D)
        Initial memories (zeros on padding).
    memory_mask : bool tensor of shape (C, M)
    uniforms : callable
        ``uniforms(epoch)`` returns a tensor of shape (n_steps, C, B, S) of values
        in [0, 1), on the device of ``memories``, of its dtype: the randomness of one
        epoch's S draws per row. Passing the same numbers to
        :func:`sklearn_reclag._reference.fit_reclag_reference` gives the same draws.
    verbose : int
        > 0 shows a progress bar over epochs, with the mean loss.
    compiled : bool, default=None
        Use the compiled kernels (CPU only); None uses them on the CPU.

    Returns
    -------
    memories : tensor of shape (C, M, D)
    """
    n_batches = np.asarray(n_batches)
    memories = memories.clone()  # updated in place
    if compiled is None:
        compiled = memories.device.type == "cpu"
    if compiled:
        engine = _CompiledSteps(memories, memory_mask, beta=beta, sampler=sampler,
                                batch_size=batches.shape[2])
    else:
        engine = _TorchSteps(memories, memory_mask, beta=beta, sampler=sampler)
    # |x|^2 of every row once, not per step and epoch.
    x_sq = torch.linalg.vector_norm(batches, dim=-1).square_()
    epochs = tqdm(range(max_epochs), desc="RecLag (sae)", unit="epoch", disable=verbose <= 0)
    for epoch in epochs:
        loss = engine.run_epoch(batches, x_sq, uniforms(epoch),
                                adam_factors(n_batches, epoch, lr=lr), verbose > 0)
        if loss is not None:
            epochs.set_postfix(loss=loss)
    return memories
