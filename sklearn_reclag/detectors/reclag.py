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
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._backend import as_tensor, map_batches, resolve_dtype, to_numpy
from ._banks import _SCORE_BLOCK, _MemoryBankDetector, pad_banks
from ._sae import fit_sae, sae_batches

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
@fill_doc
class RecLagDetector(OneToOneFeatureMixin, TransformerMixin, _MemoryBankDetector):
    """Rectified Lagrangian (RecLag) modern Hopfield network OOD detector.

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
    beta : float > 0 or 'auto', default=5.0
        Inverse temperature of the log-sum-exp; the same beta is used to learn and to
        score. ${beta_auto}
    ${routing_energy}
    ${metric}
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='ledoit_wolf'
        Used by ``metric='mahalanobis'`` only. ${covariance}
    gamma : float > 0 or 'auto', default='auto'
        Rectification constant. 'auto' sets ``gamma_`` so that a ``contamination``
        fraction of the training rows has ``decision_function <= 0``.
    contamination : float in (0, 0.5], default=0.05
        Fraction of the training rows rejected when ``gamma='auto'`` (0.05 is the
        FPR95 operating point); unused for a numeric gamma.
    solver : {'sae', 'em'}, default='sae'
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
    init : {'random', 'kmeans'}, default='random'
        Initial memories: random stored patterns of the class, or its k-means++
        centres.
    init_norm : float > 0 or None, default=10.0
        Norm the initial memories are scaled to (the official value); None keeps them.
    sampler : {'categorical', 'official'}, default='categorical'
        How 'sae' draws memories: from the categorical distribution z, or as the
        official code does, from softmax(z) (nearly uniform; for exact reproduction
        studies only).
    ${head}${head_without_y}
    max_iter : int, default=10
        Most steps of the update rule in ``transform`` (it stops early once the states
        stop moving).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Torch device, for learning and scoring; 'auto' uses CUDA when available.
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the torch computation.
    batch_size : int or None, default=None
        Rows scored at a time (moved to the device together); bounds the memory of
        scoring. None: 4096 on a CPU, 16384 on a GPU. ``transform`` takes fewer when a
        chunk's (rows, memories, features) block of retrieval would exceed 2**24 values.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial memories and a torch.Generator for the draws of 'sae' (on the
        host, so the draws are the same on every device).
    verbose : int, default=0
        > 0 shows a progress bar over the epochs of 'sae'.

    Attributes
    ----------
    memories_ : ndarray of shape (n_banks, n_slots, n_features)
        The learned memories Xi_c of every class, padded with zeros to the largest
        bank; one bank when fitted without y and head.
    ${fitted_banks}
    ${fitted_beta}
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

    ``solver='sae'`` trains every class in one batched program
    (:mod:`sklearn_reclag.detectors._sae`): a step is two batched matrix products and
    elementwise work on small arrays, for all classes at once. On a GPU the elementwise
    work is a few dozen torch operations; on a CPU, where each torch call would cost more
    in dispatch than in arithmetic, it is two compiled numba loops (compiled once per
    installation and dtype, in about three seconds, then cached on disk). The products use
    torch's intra-op threads (``torch.set_num_threads``). Fit holds one extra copy of
    the stored patterns, laid out batch-major. benchmarks/RESULTS.md times it against
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
                 routing="predicted", metric="euclidean", covariance="ledoit_wolf",
                 head=None, max_iter=10, device="auto",
                 dtype="float32", batch_size=None, random_state=None, verbose=0):
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
        self.metric = metric
        self.covariance = covariance
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
                    memories, memory_mask, beta=self.beta_, max_iter=self.max_epochs,
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
                stacklevel=6,  # the caller of fit (through _fit_context)
            )
        device, dtype = memories.device, memories.dtype
        # Drawn on the host whatever the device (an epoch's draws are small), so that a
        # random_state gives the same draws on every device.
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        shape = (batches.shape[0], n_banks, self.learning_batch_size, self.n_draws)

        def uniforms(epoch):
            return torch.rand(shape, generator=generator, dtype=dtype).to(device)

        # A private array: fit_sae reads it in place (as_tensor(copy=False)).
        return fit_sae(
            as_tensor(batches, device, dtype, copy=False), n_batches, memories, memory_mask,
            beta=self.beta_, max_epochs=self.max_epochs, lr=self.lr, uniforms=uniforms,
            sampler=self.sampler, verbose=self.verbose,
        )

    def _fit_offset(self, training_scores):
        """``offset_ = log(gamma_) / beta_``; 'auto' puts it at the contamination quantile."""
        if self.gamma == "auto":
            offset = self._contamination_offset(training_scores())
            self.log_gamma_ = float(self.beta_ * offset)
            # exp overflows float64 past 709; the threshold itself only uses log_gamma_.
            self.gamma_ = math.exp(self.log_gamma_) if self.log_gamma_ < 709.0 else math.inf
        else:
            self.gamma_ = float(self.gamma)
            self.log_gamma_ = math.log(self.gamma)
            offset = self.log_gamma_ / self.beta_
        return offset

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Retrieve: run the rectified update rule from each row, return the final states.

        ``v <- C(G(v)) * Xi_c^T softmax(beta * Xi_c v)`` for at most ``max_iter`` steps,
        stopping once no state moves; c is the bank the row is routed to ('pooled': every
        memory). Rows with ``G(v) <= 0`` fall into the OOD attractor: zeros when
        ``gamma_ >= M`` (see Notes). With ``energy='density'`` the softmax also holds
        each memory's ``-beta |xi|^2 / 2`` (``softmax(-beta |v - xi|^2 / 2)``, the
        mixture's posterior over its components), so a step is one mean-shift step of the
        Gaussian mixture that the score is the log-density of, and the gate compares that
        score with ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        states : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        kwargs = self._batch_kwargs()
        # Retrieval gathers each row's bank: a (rows, memories, features) block.
        per_row = self.memories_.shape[1] * self.memories_.shape[2]
        kwargs["batch_size"] = min(kwargs["batch_size"], max(1, _SCORE_BLOCK // per_row))
        return map_batches(self._retrieve_batch, self._validate_rows(X), **kwargs)

    def _retrieve_batch(self, V, state):
        banks, mask = state["memories_"], state["memory_mask_"]
        bias = self._memory_bias(banks)  # (C, M) or None, computed once per batch
        # The head reads the raw rows; the update rule runs where the memories live.
        Z = self._memory_space(V, state)
        if self.routing == "pooled" or banks.shape[0] == 1:
            bank = banks.reshape(1, -1, banks.shape[2]).expand(Z.shape[0], -1, -1)
            bank_mask = mask.reshape(1, -1).expand(Z.shape[0], -1)
            bias = None if bias is None else bias.reshape(1, -1)
        else:
            if self.routing == "predicted":
                chosen = self._predicted_bank(V, state)
            else:
                chosen = self._class_lse(Z, state).argmax(dim=1)
            bank, bank_mask = banks[chosen], mask[chosen]
            bias = None if bias is None else bias[chosen]
        # Each row stops once its own state stops moving, so a row's result does not
        # depend on the other rows of its batch.
        moving = torch.ones(Z.shape[0], dtype=torch.bool, device=Z.device)
        for _ in range(self.max_iter):
            logits = self.beta_ * torch.einsum("bd,bmd->bm", Z, bank)
            if bias is not None:
                logits = logits + bias
            logits = logits.masked_fill(~bank_mask, -math.inf)
            score = self._add_visible_energy(torch.logsumexp(logits, dim=1) / self.beta_, Z)
            retrieved = torch.einsum("bm,bmd->bd", torch.softmax(logits, dim=1), bank)
            # where, not a product: a row routed to an empty bank has NaN weights.
            new = torch.where((score - self.offset_ > 0)[:, None], retrieved, 0.0)
            if self.metric == "cosine":
                # The states of the cosine metric live on the unit sphere (0 stays 0).
                new = self._memory_space(new, state)
            shift = (new - Z).abs().amax(dim=1)
            Z = torch.where(moving[:, None], new, Z)
            moving &= shift > _TOL * (1 + Z.abs().amax(dim=1))
            if not moving.any():
                break
        return Z
