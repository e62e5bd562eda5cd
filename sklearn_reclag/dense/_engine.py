"""The network both dense associative memories share: energy, update rule, learning rule.

Krotov & Hopfield (2016). A network of N neurons ``sigma`` in [-1, 1]^N stores K memories
``xi_mu`` in [-1, 1]^N and has the energy

    E(sigma) = - sum_mu F~(xi_mu . sigma).

F is the interaction function of vertex n: 'polynomial' ``x^n``, 'rectified' ``max(x, 0)^n``
(Krotov's RePoly) or 'leaky' (``x^n`` for x > 0, ``0.01 x`` otherwise). Two ways of putting
the temperature T into it (``scaling``):

- ``'mcalister'`` (McAlister, Robins & Szymanski, 2024): ``F~(h) = F(h / (N T))``. The
  argument stays in [-1/T, 1/T], so n = 20 or 30 does not overflow float32.
- ``None`` (Krotov & Hopfield's original): ``F~(h) = beta F(h)`` with ``beta = 1 / T^n``,
  the factor applied after the sum over memories, as their code computes it. ``F(h)``
  reaches ``N^n`` before beta shrinks it: 100^20 = 1e40 overflows float32 (3.4e38).

For a homogeneous F (polynomial, rectified) the two are the same model at
``T_original = N T_mcalister``; they differ only in floating point.

A neuron i is updated by the sign of the energy it gains by being on rather than off,

    Delta_i = sum_mu [F~(xi_mu . sigma^(i+)) - F~(xi_mu . sigma^(i-))],

``sigma^(i+/-)`` being sigma with neuron i set to +1 / -1 (ties go to -1). Learning is
Krotov's rule: a loss on ``c = tanh(Delta)``, its gradient accumulated in a velocity
``V <- momentum V - grad``, each memory moved by ``lr V_mu / max_j |V_mu,j|`` and clipped
to [-1, 1].
"""

import math
import sys
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._backend import iter_slices, map_batches

_LEAKY_SLOPE = 0.01
# Initial memories N(mean, std^2): Krotov's MNIST init has mean -0.3, which only suits
# MNIST's -1 background; mean 0 keeps half the initial overlaps positive on any data.
INIT_MOMENTS = {"normal": (0.0, 0.3), "krotov": (-0.3, 0.3)}
# Per-memory normalisation floor (Krotov's `prec`): a memory without gradient stays put.
_MIN_STEP_NORM = 1e-30
# Slack for values that rounding puts just outside [-1, 1] (e.g. a MinMaxScaler's output).
RANGE_TOL = 1e-6
SCALINGS = ("mcalister", None)

# The parameters of the network and its learning, validated alike by both dense memories.
NETWORK_CONSTRAINTS = {
    "n": [Interval(Integral, 1, None, closed="left")],
    "temperature": [Interval(Real, 0, None, closed="neither")],
    "n_memories": [Interval(Integral, 1, None, closed="left")],
    "interaction": [StrOptions({"rectified", "polynomial", "leaky"})],
    "loss_power": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "lr_decay": [Interval(Real, 0, 1, closed="right")],
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "max_epochs": [Interval(Integral, 0, None, closed="left")],
}


@validate_params(
    {"N": [Interval(Integral, 2, None, closed="left")],
     "n": [Interval(Integral, 2, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def capacity(N, n):
    """Number of random patterns a dense associative memory can store and recall.

    Krotov & Hopfield (2016), eq. 6: ``K_max = N^(n-1) / (2 (2n-3)!! ln N)``, for
    N neurons and the interaction vertex n (n = 2 gives the classical
    ``N / (2 ln N)``). It counts random bipolar patterns stored as the memories
    themselves, each a fixed point of the update rule with high probability.

    Parameters
    ----------
    N : int >= 2
        Number of neurons.
    n : int >= 2
        Interaction vertex.

    Returns
    -------
    K_max : float
        Computed in logarithms: ``inf`` beyond the largest float, 0.0 below the
        smallest (for n far above N the estimate falls to 0).

    Examples
    --------
    >>> from sklearn_reclag import capacity
    >>> round(capacity(100, 2), 2)
    10.86
    >>> capacity(100, 3) > 10 * capacity(100, 2)
    True
    """
    # In logarithms: N^(n-1) and (2n-3)!! overflow a float (and the exact integer
    # product costs O(n^2)) long before their ratio does; (2n-3)!! = (2n-2)! /
    # (2^(n-1) (n-1)!). A ratio beyond the float range is inf, below it 0.
    log_double_factorial = (math.lgamma(2 * n - 1) - (n - 1) * math.log(2)
                            - math.lgamma(n))
    log_capacity = ((n - 1) * math.log(N) - math.log(2.0) - log_double_factorial
                    - math.log(math.log(N)))
    if log_capacity > math.log(sys.float_info.max):
        return math.inf
    return math.exp(log_capacity)


def interaction(x, n, kind):
    """F(x) for the interaction function ``kind`` of vertex n (elementwise).

    Differentiable (autograd); see :class:`_Interaction` for how it is computed.
    """
    return _Interaction.apply(x, n, kind)


def _int_power(x, k):
    """``x**k`` for an int k >= 0 by repeated squaring: about log2(k) multiplications,
    an order of magnitude faster than torch.pow's transcendental path on a CPU."""
    if k == 0:
        return torch.ones_like(x)
    result, base = None, x
    while True:
        if k & 1:
            result = base if result is None else result * base
        k >>= 1
        if not k:
            return result
        base = base * base


class _Interaction(torch.autograd.Function):
    """F and its derivative from one power ``p = b^(n-1)``: ``F = p b`` and ``F' = n p``
    (b = x, or max(x, 0) for the rectified and leaky F), so that the backward pass
    costs one multiplication instead of another power."""

    @staticmethod
    def forward(ctx, x, n, kind):
        base = x if kind == "polynomial" else x.clamp(min=0)
        p = _int_power(base, n - 1)
        value = p * base
        if kind == "leaky":
            value = torch.where(x > 0, value, _LEAKY_SLOPE * x)
        ctx.save_for_backward(x, p)
        ctx.n, ctx.kind = n, kind
        return value

    @staticmethod
    def backward(ctx, grad):
        x, p = ctx.saved_tensors
        slope = ctx.n * p
        if ctx.kind == "leaky":
            slope = torch.where(x > 0, slope, _LEAKY_SLOPE)
        elif ctx.kind == "rectified" and ctx.n == 1:
            slope = (x > 0).to(x.dtype)  # b^0 = 1 also where the rectifier is off
        return grad * slope, None, None


class Energy:
    """``F~``: the interaction function of one network with its temperature and scaling.

    Parameters
    ----------
    n, kind, temperature, scaling
        The estimator's ``n``, ``interaction``, ``temperature`` and ``scaling``.
    n_neurons : int
        N, the number of neurons (McAlister's scale is ``1 / (N T)``).
    """

    def __init__(self, n, kind, temperature, scaling, n_neurons):
        self.n, self.kind, self.scaling = n, kind, scaling
        self.temperature, self.n_neurons = temperature, n_neurons

    def terms(self, h):
        """F~ of the overlaps h, before the factor ``beta`` of the original form."""
        if self.scaling == "mcalister":
            h = h / (self.temperature * self.n_neurons)
        return interaction(h, self.n, self.kind)

    def weigh(self, total):
        """Apply the original form's ``beta = 1 / T^n`` to a sum of ``terms``.

        beta is computed in the working precision, as the original network does: in
        float32 it underflows to 0 once ``T^n`` exceeds about 1e45.
        """
        if self.scaling == "mcalister":
            return total
        beta = torch.tensor(self.temperature, dtype=total.dtype, device=total.device)
        return total * beta.pow(-self.n)

    def neg_energy(self, h):
        """``-E = sum_mu F~(h_mu)`` over the last axis of the overlaps h."""
        return self.weigh(self.terms(h).sum(dim=-1))

    def flip_gain(self, base, xi, dim=-1):
        """``Delta = sum_mu [F~(base + xi) - F~(base - xi)]`` over the memory axis ``dim``.

        ``base`` is the overlap of each memory with the state without the neuron's own
        contribution, ``xi`` that memory's entry for the neuron (broadcast against base).
        """
        # Subtract per memory before summing: the difference is small next to the terms.
        return self.weigh((self.terms(base + xi) - self.terms(base - xi)).sum(dim=dim))

    def all_flip_gains(self, memories, sigma):
        """``Delta_i`` of every neuron i of every state: (B, N) from sigma (B, N).

        Builds a (B, K, N) block: the overlap of every memory with every state, less the
        contribution of each neuron in turn.
        """
        h = sigma @ memories.T
        base = h.unsqueeze(2) - memories.unsqueeze(0) * sigma.unsqueeze(1)
        return self.flip_gain(base, memories.unsqueeze(0), dim=1)

    def log_largest_terms(self, n_memories):
        """log of the largest value a sum of ``terms`` can reach, before beta."""
        if self.scaling == "mcalister":
            # |h / (N T)| <= 1 / T
            return math.log(n_memories) - self.n * math.log(self.temperature)
        return math.log(n_memories) + self.n * math.log(self.n_neurons)  # |h| <= N

    def describe(self):
        if self.scaling == "mcalister":
            return f"F(xi . sigma / (N T)) with n={self.n}, T={self.temperature:g}"
        return f"F(xi . sigma) / T^n with n={self.n}, T={self.temperature:g}, N={self.n_neurons}"


def warn_if_overflow(energy, n_memories, dtype, dtype_name):
    """Warn when the terms of the energy can exceed the largest number of ``dtype``, or
    the original form's ``beta = 1 / T^n`` underflows it to zero."""
    finfo = torch.finfo(dtype)
    log_terms = energy.log_largest_terms(n_memories)
    if log_terms > math.log(finfo.max):
        if energy.scaling == "mcalister":
            bound, advice = "n_memories * (1/T)^n", "Raise the temperature or use dtype='float64'."
        else:
            bound = "n_memories * N^n (before beta = 1/T^n)"
            advice = "Use scaling='mcalister' or dtype='float64'."
        warnings.warn(
            f"With n={energy.n} and temperature={energy.temperature:g}, {bound} = "
            f"exp({log_terms:.0f}) exceeds the largest {dtype_name} number: energies of "
            f"well-matched states may overflow to inf. {advice}",
            RuntimeWarning,
            stacklevel=3,
        )
    if energy.scaling is None:
        log_beta = -energy.n * math.log(energy.temperature)
        if not math.log(finfo.smallest_normal * finfo.eps) < log_beta < math.log(finfo.max):
            way = "underflows" if log_beta < 0 else "overflows"
            warnings.warn(
                f"With n={energy.n} and temperature={energy.temperature:g}, beta = 1/T^n "
                f"= exp({log_beta:.0f}) {way} {dtype_name}: energy differences become 0, "
                "inf or NaN. Use scaling='mcalister' or dtype='float64'.",
                RuntimeWarning,
                stacklevel=3,
            )


def initial_memories(init, shape, generator, dtype, what):
    """The memories learning starts from: drawn (``init`` a name) or given (an array).

    ``what`` names the columns of a memory for the error message.
    """
    if isinstance(init, str):
        mean, std = INIT_MOMENTS[init]
        memories = torch.normal(mean, std, size=shape, generator=generator, dtype=dtype)
        return memories.clamp_(-1, 1)
    init = np.asarray(init, dtype=np.float64)
    if init.shape != shape:
        raise ValueError(
            f"init has shape {init.shape}, expected (n_memories, {what}) = {shape}."
        )
    if not np.isfinite(init).all() or np.abs(init).max() > 1:
        raise ValueError("init must hold finite values in [-1, 1].")
    return torch.tensor(init, dtype=dtype)


def fraction_outside_unit_range(X):
    """Fraction of the entries of X outside [-1, 1] (beyond rounding slack)."""
    return float((np.abs(X) > 1 + RANGE_TOL).mean()) if X.size else 0.0


def train_memories(memories, n_rows, batch_loss, *, lr, lr_decay, momentum, epochs,
                   batch_size, generator, describe):
    """Krotov's learning rule; returns the memories (numpy) and the loss of every epoch.

    Parameters
    ----------
    memories : tensor of shape (K, N)
        Initial memories, on the device the rows live on.
    n_rows : int
        Number of training rows; each epoch visits them in a new random order.
    batch_loss : callable
        ``batch_loss(rows, memories)``: the scalar loss of the rows (an index tensor) for
        the memories; differentiated by autograd.
    epochs : iterable
        One item per epoch (a range, or a progress bar over one).
    describe : str
        The energy, for the message of the error raised if the energies overflow.

    Raises
    ------
    ValueError
        If the loss or the memories stop being finite (the energies overflowed): a fit
        never ends with non-finite memories.
    """
    device = memories.device
    velocity = torch.zeros_like(memories)
    losses = []
    for _ in epochs:
        order = torch.randperm(n_rows, generator=generator).to(device)
        epoch_loss = 0.0
        for rows in iter_slices(n_rows, batch_size):
            memories.requires_grad_(True)
            loss = batch_loss(order[rows], memories)
            (grad,) = torch.autograd.grad(loss, memories)
            memories = memories.detach()
            with torch.no_grad():
                velocity = momentum * velocity - grad
                step_norm = velocity.abs().amax(dim=1, keepdim=True).clamp(min=_MIN_STEP_NORM)
                memories = (memories + lr * velocity / step_norm).clamp_(-1, 1)
            epoch_loss += float(loss.detach())
            if not (math.isfinite(epoch_loss) and bool(torch.isfinite(memories).all())):
                raise ValueError(
                    f"The energies overflowed {str(memories.dtype).removeprefix('torch.')} "
                    f"in epoch {len(losses) + 1} "
                    f"of fit ({describe}): the loss or the memories are no longer finite. "
                    "Raise the temperature, lower n, or use dtype='float64'."
                )
        losses.append(epoch_loss)
        lr *= lr_decay
    return memories.detach().cpu().numpy(), losses


def free_neurons(mask, n_probes, n_neurons):
    """Boolean (n_probes, n_neurons) array: True where a neuron may change in recall.

    ``mask`` marks the clamped neurons: None (none), one row for every probe, or a row
    per probe.
    """
    if mask is None:
        return np.ones((n_probes, n_neurons), dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be a boolean array; got dtype {mask.dtype}.")
    if mask.shape not in ((n_neurons,), (n_probes, n_neurons)):
        raise ValueError(
            f"mask has shape {mask.shape}; expected ({n_neurons},) or "
            f"({n_probes}, {n_neurons})."
        )
    return np.broadcast_to(~mask, (n_probes, n_neurons))


def _sign(delta, dtype):
    """+1 where delta > 0, -1 elsewhere (ties and, before the check, NaN)."""
    return torch.where(delta > 0, 1.0, -1.0).to(dtype)


def _check_gains_defined(nan_seen, energy):
    if bool(nan_seen):
        raise ValueError(
            f"The energy differences of recall overflowed ({energy.describe()}): "
            "inf - inf has no sign. Use scaling='mcalister', raise the temperature, or use "
            "dtype='float64'."
        )


def relax_asynchronous(energy, memories, sigma, free, orders):
    """Asynchronous relaxation of the states sigma (B, N), updated in place.

    One sweep updates the free neurons one at a time in ``orders[sweep]``, keeping the
    overlaps ``h_mu = xi_mu . sigma`` up to date as neurons flip; it stops after a sweep
    that changes nothing. Returns the states and a bool tensor: converged or not.
    """
    h = sigma @ memories.T
    changed = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
    nan_seen = torch.zeros((), dtype=torch.bool, device=sigma.device)
    for order in orders:
        changed[:] = False
        # Asynchronous dynamics are sequential in the neurons; the probes move together.
        for i in order.tolist():
            xi_i = memories[:, i]
            delta = energy.flip_gain(h - sigma[:, i, None] * xi_i, xi_i)
            nan_seen |= torch.isnan(delta).any()
            new = torch.where(free[:, i], _sign(delta, sigma.dtype), sigma[:, i])
            step = new - sigma[:, i]
            flipped = step != 0
            h += step.unsqueeze(1) * xi_i
            sigma[:, i] = new
            changed |= flipped
        if not changed.any():
            break
    _check_gains_defined(nan_seen, energy)
    return sigma, ~changed


def relax_synchronous(energy, memories, sigma, free, max_iter):
    """Synchronous relaxation: every free neuron at once from the previous state, at most
    ``max_iter`` times (a 2-cycle never settles). Returns the states and converged."""
    changed = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
    for _ in range(max_iter):
        delta = energy.all_flip_gains(memories, sigma)
        _check_gains_defined(torch.isnan(delta).any(), energy)
        new = torch.where(free, _sign(delta, sigma.dtype), sigma)
        changed = (new != sigma).any(dim=1)
        sigma = new
        if not changed.any():
            break
    return sigma, ~changed


# Most entries of the (rows, memories, neurons) block of one synchronous update.
_SYNC_BLOCK = 2**24


def recall(estimator, energy, X, free, *, max_iter, synchronous, random_state):
    """Relax the states X (n_probes, N) with the memories ``estimator.memories_``.

    ``free`` (n_probes, N) marks the neurons that may change. The probes are relaxed a
    chunk at a time (the estimator's ``batch_size``); the asynchronous sweep orders are
    drawn once from ``random_state`` (a RandomState), so every chunk sees the same.
    Warns with a ConvergenceWarning when some probe still changed after ``max_iter``.
    """
    n_neurons = X.shape[1]
    kwargs = estimator._batch_kwargs(("memories_",))
    if synchronous:
        per_row = estimator.memories_.shape[0] * n_neurons
        kwargs["batch_size"] = min(kwargs["batch_size"], max(1, _SYNC_BLOCK // per_row))

        def relax(batch, state):
            return relax_synchronous(energy, state["memories_"], *_unpack(batch, n_neurons),
                                     max_iter)
    else:
        orders = [random_state.permutation(n_neurons) for _ in range(max_iter)]

        def relax(batch, state):
            return relax_asynchronous(energy, state["memories_"], *_unpack(batch, n_neurons),
                                      orders)

    def relax_packed(batch, state):
        states, converged = relax(batch, state)
        return torch.hstack([states, converged.to(states.dtype).unsqueeze(1)])

    # The mask travels with its rows: appended to the batch as extra columns.
    results = map_batches(relax_packed, np.hstack([X, free.astype(X.dtype)]), **kwargs)
    states, converged = results[:, :n_neurons], results[:, n_neurons].astype(bool)
    if not converged.all():
        warnings.warn(
            f"{int((~converged).sum())} of {len(converged)} probes still changed after "
            f"max_iter={max_iter} {'updates' if synchronous else 'sweeps'}.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return states


def _unpack(batch, n_neurons):
    """States (a copy, relaxed in place) and free-neuron mask of a packed batch."""
    return batch[:, :n_neurons].clone(), batch[:, n_neurons:] > 0
