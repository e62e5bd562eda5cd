"""RecLag: the Rectified Lagrangian detector (Moriai et al., AAAI 2025).

Formulas from specs/reclag.md. Xi_c (M x D) holds the memories of class c, beta > 0 is the
inverse temperature and gamma > 0 the rectification constant:

- ``G(v) = (1/beta) * (lse(beta * Xi_c v) - log gamma)``, the un-rectified hidden Lagrangian;
- energy ``E(v) = |v|^2 / 2 - max(G(v), 0)``;
- update rule ``v <- C(G(v)) * Xi_c^T softmax(beta * Xi_c v)``, C the unit step.

v is out of distribution iff ``G(v) <= 0``. The memories of all classes are learned at once,
as one batched tensor program over (classes, memories, features): by the official
stochastic objective (``solver='sae'``) or by EM for the isotropic Gaussian mixture
(``solver='em'``).
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import OneToOneFeatureMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm.auto import tqdm

from .._backend import as_tensor, map_batches, masked_offset, resolve_dtype, to_numpy
from ._banks import _MemoryBankDetector, pad_banks
from .baselines import _HEAD_DOC
from .hopfield_energy import _BANK_DOC, _BANK_FITTED_DOC, _HEAD_Y_DOC

# Constants of the official objective and optimizer (specs/reclag.md).
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-9
_WEIGHT_EPS = 1e-16
_EXP_FLOOR = -80.0
_LOG_EPS = 1e-12
# Relative change of the memories (EM) or of the states (transform) that counts as converged.
_TOL = 1e-6


# --------------------------------------------------------------------- initialisation
def initial_memories(X, labels, n_banks, n_memories, *, init="random", init_norm=10.0,
                     random_state=None):
    """Initial memories of every class and the mask of the real ones.

    'random' takes ``n_memories`` random rows of the class, 'kmeans' the k-means++
    centres of its rows; a class with ``n_memories`` rows or fewer takes all its rows,
    so its bank holds fewer memories (the rest of the bank is masked padding). Each memory
    is then scaled to norm ``init_norm`` (None keeps it as it is).

    Returns
    -------
    memories : ndarray of shape (n_banks, n_memories, n_features)
    mask : ndarray of shape (n_banks, n_memories) of bool
    """
    rng = check_random_state(random_state)
    counts = np.bincount(labels, minlength=n_banks)
    if init == "random":
        banks, _ = pad_banks(
            X, labels, n_banks, max_rows=n_memories, order=rng.permutation(len(X))
        )
    else:
        banks = np.zeros((n_banks, n_memories, X.shape[1]))
        # One k-means per class: initialisation only, not a hot path.
        for c in np.flatnonzero(counts > n_memories):
            kmeans = KMeans(
                n_clusters=n_memories, init="k-means++", n_init=1,
                random_state=rng.randint(np.iinfo(np.int32).max),
            )
            banks[c] = kmeans.fit(X[labels == c]).cluster_centers_
        few, _ = pad_banks(X, labels, n_banks, max_rows=n_memories)
        small = counts <= n_memories
        banks[small, : few.shape[1]] = few[small]
    memories = np.zeros((n_banks, n_memories, X.shape[1]))
    memories[:, : banks.shape[1]] = banks
    mask = np.arange(n_memories) < np.minimum(counts, n_memories)[:, None]
    if init_norm is not None:
        norms = np.linalg.norm(memories, axis=2, keepdims=True)
        np.divide(init_norm * memories, norms, out=memories, where=norms > 0)
    return memories, mask


# -------------------------------------------------------------------------- solver 'sae'
def draw_memories(probs, uniforms, last):
    """Categorical draws by inverse CDF: the first index whose cumulative probability
    reaches u.

    Parameters
    ----------
    probs : tensor of shape (C, M, B)
        A distribution over the M memories for each of the B rows of each class.
    uniforms : tensor of shape (C, B, S), values in [0, 1)
        The S uniform numbers of each row (rows first: the layout searchsorted reads).
    last : tensor of shape (C, 1, 1)
        Index of the last real memory of each class (0 for an empty bank): rounding of
        the cumulative sum never picks padding.

    Returns
    -------
    tensor of shape (C, B, S) of int64, rows first like ``uniforms``
    """
    # Summed along the transposed view, the cumulative sums come out rows first and
    # contiguous, as searchsorted reads them. searchsorted (left) counts the cumulative
    # probabilities below u, without the (C, B, S, M) block a broadcast comparison builds.
    cdf = torch.cumsum(probs.transpose(1, 2), dim=2)
    return torch.searchsorted(cdf, uniforms).clamp_(max=last)


def _last_memory(memory_mask):
    return (memory_mask.sum(dim=1) - 1).clamp_(min=0)[:, None, None]


def sae_loss_and_grad(x, memories, memory_mask, uniforms, *, beta, sampler="categorical",
                      x_sq=None, compute_loss=True, padding_logits=None, last_memory=None,
                      out=None):
    """The official objective on one batch per class, and its gradient.

    For each class (specs/reclag.md), with z = softmax(beta * x Xi^T), S memories
    xi_s drawn per row and constant importance weights
    ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``, ``p_s = exp(-|x - xi_s|^2 / 2)``::

        loss = mean_{s, b} w_s * (mean_D (x - xi_s)^2 - log(z_{b, s} + 1e-12))

    The classes' losses are independent, so the gradient of their sum is computed in
    closed form for all classes at once (checked against autograd in the tests).
    With W[mu, b] (resp. A[mu, b]) the sum of w_s (resp. a_s = w_s z_s / (z_s + 1e-12))
    over the draws of row b that picked memory mu::

        dloss/dxi_mu = (1/(S B)) * sum_b ((2/D) W[mu, b] (xi_mu - x_b)
                                          - beta (A[mu, b] - z[mu, b] sum_s a_s) x_b)

    Parameters
    ----------
    x : tensor of shape (C, B, D)
        One batch of stored patterns per class.
    memories : tensor of shape (C, M, D)
    memory_mask : bool tensor of shape (C, M)
        True on real memories, False on padding.
    uniforms : tensor of shape (C, S, B)
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
        of the last real memory of shape (C, 1, 1)), when the caller has them already
        (a training loop computes them once).
    out : tensor of shape (C, M, D), default=None
        Where to write the gradient (a training loop reuses one buffer).

    Returns
    -------
    loss : tensor of shape (C,) or None
    grad : tensor of shape (C, M, D)
    """
    batch, n_features = x.shape[1], x.shape[2]
    # searchsorted reads rows first; uniforms drawn that way (the estimator's) need no copy.
    uniforms_by_row = uniforms.transpose(1, 2).contiguous()
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
    drawn = draw_memories(probs, uniforms_by_row, last_memory)

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


class _MaskedAdam:
    """Adam (torch.optim.Adam's update) for one parameter block per class.

    Class c has ``n_batches[c]`` steps per epoch and is idle for the rest of the epoch.
    An idle class keeps its parameters *and* its moments, whereas torch's Adam would keep
    moving it through its momentum on a zero gradient; each class counts its own steps
    for the bias corrections. The batched run thus equals one torch.optim.Adam per class.
    Idleness enters as zero interpolation weights and step sizes, which leave a class
    exactly as it was; the per-class factors of a whole epoch are computed once, on the
    host, in float64 as torch's Adam does. A step allocates nothing: its temporaries go
    to one scratch buffer.
    """

    def __init__(self, param, n_batches, *, lr, betas=_ADAM_BETAS, eps=_ADAM_EPS):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.n_batches = np.asarray(n_batches)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self._scratch = torch.empty_like(param)
        # sqrt of zeros and subnormals takes a slow path on x86 CPUs (about 5x); adding
        # the smallest normal number changes sqrt(v) by at most sqrt(tiny) (1e-19 in
        # float32), far below eps.
        self._tiny = torch.finfo(param.dtype).tiny

    def epoch_factors(self, epoch, device, dtype):
        """The per-class factors of each step of an epoch: for step b, the lerp weights of
        the two moments, ``eps * b2`` and ``step_size * b2`` (b2 the square root of the
        second bias correction), each a tensor of shape (C, 1, 1)."""
        beta1, beta2 = self.betas
        b = np.arange(self.n_batches.max())[:, None]
        active = b < self.n_batches
        t = epoch * self.n_batches + np.minimum(b + 1, np.maximum(self.n_batches, 1))
        bias2 = np.sqrt(1 - beta2**t)
        factors = np.stack([
            (1 - beta1) * active,
            (1 - beta2) * active,
            self.eps * bias2,
            active * self.lr / (1 - beta1**t) * bias2,
        ], axis=1)[:, :, :, None, None]
        # Split once per epoch: indexing inside the step loop costs more than the step's
        # small products.
        return [step.unbind(0) for step in torch.as_tensor(factors, device=device,
                                                            dtype=dtype).unbind(0)]

    def step(self, param, grad, factors):
        """Update ``param`` (C, M, D) in place; ``factors`` is one step of epoch_factors."""
        lerp1, lerp2, eps, step_size = factors
        self.exp_avg.lerp_(grad, lerp1)
        self.exp_avg_sq.lerp_(torch.mul(grad, grad, out=self._scratch), lerp2)
        # step_size m / (sqrt(v) / b2 + eps) = (step_size b2) m / (sqrt(v) + eps b2); a
        # zero step size (idle class) gives 0 exactly.
        denom = torch.add(self.exp_avg_sq, self._tiny, out=self._scratch).sqrt_()
        param.addcdiv_(self.exp_avg, denom.add_(eps).div_(step_size), value=-1.0)


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


def fit_sae(batches, n_batches, memories, memory_mask, *, beta, n_draws, max_epochs,
            lr, uniforms, sampler="categorical", verbose=0):
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
        ``uniforms(epoch)`` returns a tensor of shape (n_steps, C, n_draws, B) of values
        in [0, 1): the randomness of one epoch's draws. Passing the same numbers to
        :func:`sklearn_reclag._reference.fit_reclag_reference` gives the same draws.
    verbose : int
        > 0 shows a progress bar over epochs.

    Returns
    -------
    memories : tensor of shape (C, M, D)
    """
    n_batches = np.asarray(n_batches)
    memories = memories.clone()  # updated in place
    optimizer = _MaskedAdam(memories, n_batches, lr=lr)
    # What every step reads, computed or split into per-step views once: |x|^2 of every
    # row, the mask in the forms the step uses.
    steps = list(zip(batches.unbind(0), torch.linalg.vector_norm(batches, dim=-1).square_()))
    mask_kwargs = {"padding_logits": masked_offset(memories, memory_mask)[:, :, None],
                   "last_memory": _last_memory(memory_mask)}
    grad_buffer = torch.empty_like(memories)
    epochs = tqdm(range(max_epochs), desc="RecLag (sae)", unit="epoch", disable=verbose <= 0)
    for epoch in epochs:
        step_inputs = zip(steps, uniforms(epoch).unbind(0),
                          optimizer.epoch_factors(epoch, memories.device, memories.dtype))
        losses = []
        for (x, x_sq), step_uniforms, factors in step_inputs:
            loss, grad = sae_loss_and_grad(
                x, memories, memory_mask, step_uniforms, beta=beta, sampler=sampler,
                x_sq=x_sq, compute_loss=verbose > 0, out=grad_buffer, **mask_kwargs,
            )
            optimizer.step(memories, grad, factors)
            if verbose > 0:
                # The classes this step trains: those whose step size is not zero.
                losses.append(loss[factors[3].view(-1) > 0].mean())
        if losses:
            epochs.set_postfix(loss=float(torch.stack(losses).mean()))
    return memories


# --------------------------------------------------------------------------- solver 'em'
def fit_em(data, row_mask, memories, memory_mask, *, beta, max_iter):
    """EM for the equal-weight isotropic Gaussian mixture of variance 1/beta, per class.

    E step: responsibilities ``softmax_mu(beta * (x . xi_mu - |xi_mu|^2 / 2))``; M step:
    each memory moves to the responsibility-weighted mean of its class's rows (a memory
    that no row claims stays). Deterministic given the initial memories.

    Returns
    -------
    memories : tensor of shape (C, M, D)
    n_iter : int
        Iterations run (fewer than ``max_iter`` once the memories stop moving).
    """
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        logits = beta * (torch.einsum("cnd,cmd->cnm", data, memories)
                         - 0.5 * (memories * memories).sum(dim=-1)[:, None, :])
        logits = logits.masked_fill(~memory_mask[:, None, :], -math.inf)
        resp = torch.softmax(logits, dim=-1) * row_mask[:, :, None]
        mass = resp.sum(dim=1)
        # A memory that (almost) no row claims stays where it is: dividing by a mass near
        # the dtype's underflow would send it towards the origin.
        claimed = (mass > torch.finfo(mass.dtype).eps) & memory_mask
        means = torch.einsum("cnm,cnd->cmd", resp, data) / torch.where(
            claimed, mass, torch.ones_like(mass))[:, :, None]
        new = torch.where(claimed[:, :, None], means, memories)
        shift = (new - memories).abs().max()
        memories = new
        if shift <= _TOL * (1 + memories.abs().max()):
            break
    return memories, n_iter


# ------------------------------------------------------------------------- the estimator
class RecLagDetector(OneToOneFeatureMixin, TransformerMixin, _MemoryBankDetector):
    __doc__ = f"""Rectified Lagrangian (RecLag) modern Hopfield network OOD detector.

    Moriai et al., "Rectified Lagrangian for Out-of-Distribution Detection in Modern
    Hopfield Networks", AAAI 2025. Each class c keeps ``n_memories`` learned memories
    Xi_c, trained on the class's stored patterns (the training rows the head classifies
    as c). With c the routed class (specs/reclag.md):

    - ``score_samples(v) = (1/beta) * lse(beta * Xi_c v)`` (``energy='full'``: minus
      ``|v|^2 / 2``; ``energy='density'``: ``(1/beta) * lse(-beta |v - xi|^2 / 2)``, the
      Gaussian-mixture log-density of the memories, see the ``energy`` parameter),
      rank-equivalent to the official score ``lse(beta * Xi_c v)`` for 'lse';
    - ``offset_ = (1/beta) * log(gamma_)``, so ``decision_function(v) = G(v) =
      (1/beta) * (lse(beta * Xi_c v) - log gamma_)`` and ``predict`` is +1 where
      ``G(v) > 0``, -1 where v falls into the OOD attractor;
    - ``transform`` runs the rectified update rule
      ``v <- C(G(v)) * Xi_c^T softmax(beta * Xi_c v)``.

    Never rank by the rectified value ``max(G, 0)``: it ties every trapped row at 0.

    Parameters
    ----------
    n_memories : int, default=10
        Memories per class, M. A class with M stored patterns or fewer keeps all of them
        as memories: its bank holds fewer (the rest is masked padding, see
        ``memory_mask_``).
    {_BANK_DOC.replace("beta : float > 0", "beta : float > 0, default=5.0")}
        The same beta is used to learn and to score.
    gamma : float > 0 or 'auto', default='auto'
        Rectification constant. 'auto' sets ``gamma_`` so that a ``contamination``
        fraction of the training rows has ``decision_function <= 0``.
    contamination : float in (0, 0.5], default=0.05
        Fraction of the training rows rejected when ``gamma='auto'`` (0.05 is the
        FPR95 operating point); unused for a numeric gamma.
    solver : {{'sae', 'em'}}, default='sae'
        'sae': the official stochastic objective, trained with Adam (lr ``lr``, betas
        (0.9, 0.98), eps 1e-9) on batches of ``learning_batch_size`` rows taken in
        order, the last partial batch dropped; a class with fewer stored patterns than
        one batch keeps its initial memories (with a warning). 'em': EM for the
        equal-weight isotropic Gaussian mixture of variance 1/beta, deterministic given
        the initial memories.
    n_draws : int, default=5
        Memories drawn per row and step ('sae').
    max_epochs : int, default=50
        Epochs ('sae') or the most EM iterations ('em'); 0 keeps the initial memories.
    learning_batch_size : int, default=50
        Rows per class and step ('sae').
    lr : float > 0, default=1e-3
        Adam learning rate ('sae').
    init : {{'random', 'kmeans'}}, default='random'
        Initial memories: random stored patterns of the class, or its k-means++
        centres.
    init_norm : float > 0 or None, default=10.0
        Norm the initial memories are scaled to (the official value); None keeps them.
    sampler : {{'categorical', 'official'}}, default='categorical'
        How 'sae' draws memories: from the categorical distribution z, or as the
        official code does, from softmax(z) (nearly uniform; for exact reproduction
        studies only).
    {_HEAD_DOC}{_HEAD_Y_DOC}
    max_iter : int, default=10
        Most steps of the update rule in ``transform`` (it stops early once the states
        stop moving).
    device : {{'auto', 'cpu', 'cuda', 'cuda:N'}}, default='auto'
        Torch device, for learning and scoring; 'auto' uses CUDA when available.
    dtype : {{'float32', 'float64'}}, default='float32'
        Precision of the torch computation.
    batch_size : int, default=4096
        Rows scored or transformed at a time; bounds the memory of scoring.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial memories and a torch.Generator for the draws of 'sae'.
    verbose : int, default=0
        > 0 shows a progress bar over the epochs of 'sae'.

    Attributes
    ----------
    {_BANK_FITTED_DOC.replace("The memories of every class", "The learned memories Xi_c")}
    gamma_ : float
        The fitted rectification constant; ``inf`` when ``log_gamma_`` exceeds float64's
        range (about 709), which 'auto' can reach for features of large norm.
    log_gamma_ : float
        ``log(gamma_)``, always finite: the threshold is computed from it.
    offset_ : float
        ``log_gamma_ / beta``; ``decision_function = score_samples - offset_``.
    n_iter_ : int
        Epochs ('sae') or EM iterations ('em') run.

    See Also
    --------
    HopfieldEnergyDetector : every stored pattern as a memory (HE) or the class mean (SHE).

    Notes
    -----
    The origin is the OOD attractor: ``G(0) = (1/beta) * log(M / gamma)``. When
    ``gamma_ >= M`` it is a fixed point of the update rule and every row with
    ``G(v) <= 0`` reaches it in one step, so ``transform`` returns zeros for them. When
    ``gamma_ < M`` the origin is not a fixed point: the next step takes it to the mean
    memory of the bank, and a rejected row comes back as that mean or as wherever the
    update rule then goes. With ``energy='full'`` the step gate is ``decision_function >
    0`` (the full score against ``offset_``), so ``transform`` agrees with ``predict``.

    ``solver='sae'`` trains every class in one batched program: a step is two batched
    matrix products and a few dozen small tensor operations for all classes at once; the
    gradient and Adam's temporaries reuse buffers allocated once per fit. Fit holds one
    extra copy of the stored patterns, laid out batch-major (:func:`sae_batches`). On a
    CPU the small operations' dispatch cost bounds the speed; the products use torch's
    intra-op threads (``torch.set_num_threads``). benchmarks/RESULTS.md times it against
    the one-class-at-a-time formulation.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import RecLagDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> det = RecLagDetector(solver="em", random_state=0, device="cpu")
    >>> det = det.fit(X[y < 5], y[y < 5])
    >>> det.memories_.shape
    (5, 10, 64)
    >>> bool(det.predict(X[y < 5]).mean() > det.predict(X[y >= 5]).mean())
    True
    >>> det.transform(X[y >= 5][:2]).shape
    (2, 64)
    """

    _parameter_constraints = {
        **_MemoryBankDetector._parameter_constraints,
        "n_memories": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "solver": [StrOptions({"sae", "em"})],
        "n_draws": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "learning_batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "init": [StrOptions({"random", "kmeans"})],
        "init_norm": [Interval(Real, 0, None, closed="neither"), None],
        "sampler": [StrOptions({"categorical", "official"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, n_memories=10, beta=5.0, gamma="auto", *, contamination=0.05,
                 solver="sae", n_draws=5, max_epochs=50, learning_batch_size=50, lr=1e-3,
                 init="random", init_norm=10.0, sampler="categorical", energy="lse",
                 routing="predicted", head=None, max_iter=10, device="auto",
                 dtype="float32", batch_size=4096, random_state=None, verbose=0):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n_memories = n_memories
        self.beta = beta
        self.gamma = gamma
        self.solver = solver
        self.n_draws = n_draws
        self.max_epochs = max_epochs
        self.learning_batch_size = learning_batch_size
        self.lr = lr
        self.init = init
        self.init_norm = init_norm
        self.sampler = sampler
        self.energy = energy
        self.routing = routing
        self.head = head
        self.max_iter = max_iter
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def _fit_memories(self, X, labels, n_banks):
        rng = check_random_state(self.random_state)
        device, dtype = torch.device(self.device_), resolve_dtype(self.dtype)
        init, mask = initial_memories(
            X, labels, n_banks, self.n_memories, init=self.init, init_norm=self.init_norm,
            random_state=rng,
        )
        memories = as_tensor(init, device, dtype)
        memory_mask = as_tensor(mask, device, torch.bool)
        with torch.no_grad():
            if self.solver == "sae":
                memories = self._fit_sae(X, labels, n_banks, memories, memory_mask, rng)
                self.n_iter_ = self.max_epochs
            else:
                # A private array: EM reads it in place (as_tensor(copy=False)).
                data, row_mask = pad_banks(X, labels, n_banks)
                memories, self.n_iter_ = fit_em(
                    as_tensor(data, device, dtype, copy=False),
                    as_tensor(row_mask, device, dtype),
                    memories, memory_mask, beta=self.beta, max_iter=self.max_epochs,
                )
        # Padding slots hold zeros whatever the solver did there (an empty bank's updates
        # are undefined), so nothing non-finite can reach a retrieval or a plot.
        memories = memories.masked_fill(~memory_mask[:, :, None], 0.0)
        self.memories_ = to_numpy(memories)
        self.memory_mask_ = mask

    def _fit_sae(self, X, labels, n_banks, memories, memory_mask, rng):
        batches, n_batches = sae_batches(X, labels, n_banks, self.learning_batch_size)
        idle = n_batches == 0
        if idle.any() and self.max_epochs > 0:
            names = np.arange(n_banks) if self.classes_ is None else self.classes_
            warnings.warn(
                f"Classes {names[idle].tolist()} have fewer stored patterns than "
                f"learning_batch_size={self.learning_batch_size}: their memories keep "
                "their initial values.",
                UserWarning,
                stacklevel=5,  # the caller of fit
            )
        device, dtype = memories.device, memories.dtype
        generator = torch.Generator(device=device)
        generator.manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        # Drawn rows-first, the layout the draws read (see draw_memories), and handed over
        # as a (n_steps, C, S, B) view: no transposed copy at each step.
        shape = (batches.shape[0], n_banks, self.learning_batch_size, self.n_draws)

        def uniforms(epoch):
            return torch.rand(shape, generator=generator, device=device,
                              dtype=dtype).transpose(-1, -2)

        # A private array: fit_sae reads it in place (as_tensor(copy=False)).
        return fit_sae(
            as_tensor(batches, device, dtype, copy=False), n_batches, memories, memory_mask,
            beta=self.beta, n_draws=self.n_draws, max_epochs=self.max_epochs, lr=self.lr,
            uniforms=uniforms, sampler=self.sampler, verbose=self.verbose,
        )

    def _fit_offset(self, X):
        """``offset_ = log(gamma_) / beta``; 'auto' puts it at the contamination quantile."""
        if self.gamma == "auto":
            offset = np.percentile(self._score_array(X), 100.0 * self.contamination)
            self.log_gamma_ = float(self.beta * offset)
            # exp overflows float64 past 709; the threshold itself only uses log_gamma_.
            self.gamma_ = math.exp(self.log_gamma_) if self.log_gamma_ < 709.0 else math.inf
        else:
            self.gamma_ = float(self.gamma)
            self.log_gamma_ = math.log(self.gamma)
            offset = self.log_gamma_ / self.beta
        return offset

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Retrieve: run the rectified update rule from each row, return the final states.

        ``v <- C(G(v)) * Xi_c^T softmax(beta * Xi_c v)`` for at most ``max_iter`` steps,
        stopping once no state moves; c is the bank the row is routed to ('pooled': every
        memory). Rows with ``G(v) <= 0`` fall into the OOD attractor: zeros when
        ``gamma_ >= M`` (see Notes).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        states : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return map_batches(self._retrieve_batch, X, **self._batch_kwargs())

    def _retrieve_batch(self, V, state):
        banks, mask = state["memories_"], state["memory_mask_"] > 0.5
        bias = self._memory_bias(banks)  # (C, M) or None, computed once per batch
        if self.routing == "pooled" or banks.shape[0] == 1:
            bank = banks.reshape(1, -1, banks.shape[2]).expand(V.shape[0], -1, -1)
            bank_mask = mask.reshape(1, -1).expand(V.shape[0], -1)
            bias = None if bias is None else bias.reshape(1, -1)
        else:
            if self.routing == "predicted":
                chosen = self._predicted_bank(V, state)
            else:
                chosen = self._class_lse(V, state).argmax(dim=1)
            bank, bank_mask = banks[chosen], mask[chosen]
            bias = None if bias is None else bias[chosen]
        # Each row stops once its own state stops moving, so a row's result does not
        # depend on the other rows of its batch.
        moving = torch.ones(V.shape[0], dtype=torch.bool, device=V.device)
        for _ in range(self.max_iter):
            logits = self.beta * torch.einsum("bd,bmd->bm", V, bank)
            if bias is not None:
                logits = logits + bias
            logits = logits.masked_fill(~bank_mask, -math.inf)
            score = self._add_visible_energy(torch.logsumexp(logits, dim=1) / self.beta, V)
            retrieved = torch.einsum("bm,bmd->bd", torch.softmax(logits, dim=1), bank)
            # where, not a product: a row routed to an empty bank has NaN weights.
            new = torch.where((score - self.offset_ > 0)[:, None], retrieved, 0.0)
            shift = (new - V).abs().amax(dim=1)
            V = torch.where(moving[:, None], new, V)
            moving &= shift > _TOL * (1 + V.abs().amax(dim=1))
            if not moving.any():
                break
        return V
