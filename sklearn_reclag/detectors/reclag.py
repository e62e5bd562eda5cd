"""RecLag: the Rectified Lagrangian detector (Moriai et al., AAAI 2025).

Xi_c (M x D) holds the memories of class c, beta > 0 is the inverse temperature and
gamma > 0 the rectification constant:

- ``G(v) = (1/beta) * (lse(beta * Xi_c v) - log gamma)``, the un-rectified hidden Lagrangian;
- energy ``E(v) = |v|^2 / 2 - max(G(v), 0)``;
- update rule ``v <- C(G(v)) * Xi_c^T softmax(beta * Xi_c v)``, C the unit step.

v is out of distribution iff ``G(v) <= 0``. The memories of all classes are learned at once,
as one batched tensor program over (classes, memories, features): by gradient steps
(``solver='sae'``) on the paper's stochastic objective or on the likelihood of the
memories' Gaussian mixture (:mod:`._sae`), or by EM for that mixture (``solver='em'``).
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import OneToOneFeatureMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._docstrings import fill_doc
from .._backend import as_tensor, iter_slices, map_batches, resolve_dtype, take_rows, to_numpy
from ..base import _STATISTICS_BLOCK, canonical_order
from ._banks import _SCORE_BLOCK, _MemoryBankDetector, pad_banks
from ._sae import SaeBatches, batch_row_counts, class_spread, fit_sae, sae_batch_rows

# lr='auto': the official Adam learning rate of the paper's objective, and the step of the
# 'likelihood' objective relative to the spread of each class's rows (see the lr parameter).
_PAPER_LR = 1e-3
_LIKELIHOOD_LR = 0.3

# Relative change of the states that stops the update rule in transform (the fit's own
# stopping rule is the ``tol`` parameter).
_RETRIEVAL_TOL = 1e-6


# --------------------------------------------------------------------- initialisation
def initial_memories(X, labels, n_banks, n_memories, *, init="random", init_norm=10.0,
                     random_state=None, order=None, rows=None):
    """Initial memories of every class and the mask of the real ones.

    'random' takes ``n_memories`` random rows of the class, 'kmeans' the k-means++
    centres of its rows; a class with ``n_memories`` rows or fewer takes all its rows,
    so its bank holds fewer memories (the rest of the bank is masked padding). Each memory
    is then scaled to norm ``init_norm``: a number, 'auto' (the mean norm of the class's
    rows) or None (kept as it is). ``order`` (a permutation of the rows) is the order in
    which the draws and k-means read the rows; None: their order in X. RecLagDetector
    passes an order of their contents, so that the same rows in another order give the
    same memories. ``rows``: the rows are ``X[rows]``, read without copying them first
    (as in :func:`~sklearn_reclag.detectors._banks.pad_banks`).

    Returns
    -------
    memories : ndarray of shape (n_banks, n_memories, n_features)
    mask : ndarray of shape (n_banks, n_memories) of bool
    """
    rng = check_random_state(random_state)
    counts = np.bincount(labels, minlength=n_banks)
    n_rows = len(labels)
    order = np.arange(n_rows) if order is None else np.asarray(order)
    if init == "random":
        banks, _ = pad_banks(
            X, labels, n_banks, max_rows=n_memories, order=order[rng.permutation(n_rows)],
            rows=rows,
        )
    else:
        banks = np.zeros((n_banks, n_memories, X.shape[1]))
        # One k-means per class: initialisation only, not a hot path.
        for c in np.flatnonzero(counts > n_memories):
            kmeans = KMeans(
                n_clusters=n_memories, init="k-means++", n_init=1,
                random_state=rng.randint(np.iinfo(np.int32).max),
            )
            banks[c] = kmeans.fit(
                take_rows(X, rows, order[labels[order] == c])).cluster_centers_
        few, _ = pad_banks(X, labels, n_banks, max_rows=n_memories, order=order, rows=rows)
        small = counts <= n_memories
        banks[small, : few.shape[1]] = few[small]
    memories = np.zeros((n_banks, n_memories, X.shape[1]))
    memories[:, : banks.shape[1]] = banks
    mask = np.arange(n_memories) < np.minimum(counts, n_memories)[:, None]
    if init_norm is not None:
        if init_norm == "auto":
            row_norms = np.empty(n_rows)
            for block in iter_slices(n_rows, _STATISTICS_BLOCK):
                row_norms[block] = np.linalg.norm(take_rows(X, rows, block), axis=1)
            target = (np.bincount(labels, weights=row_norms, minlength=n_banks)
                      / np.maximum(counts, 1))[:, None, None]
        else:
            target = init_norm
        norms = np.linalg.norm(memories, axis=2, keepdims=True)
        np.divide(target * memories, norms, out=memories, where=norms > 0)
    return memories, mask


# --------------------------------------------------------------------------- solver 'em'
def fit_em(data, row_mask, memories, memory_mask, *, beta, max_iter, tol=None):
    """EM for the equal-weight isotropic Gaussian mixture of variance 1/beta, per class.

    E step: responsibilities ``softmax_mu(beta * (x . xi_mu - |xi_mu|^2 / 2))``; M step:
    each memory moves to the responsibility-weighted mean of its class's rows (a memory
    that no row claims stays). Deterministic given the initial memories. Each iteration
    records the mean negative log-likelihood of the rows under the memories it starts
    from (in nats per row, over every class's rows)::

        nll(x) = -log (1/M_c) sum_mu N(x; xi_mu, I / beta)

    and, with ``tol`` set, stops once an iteration changes it by less than ``tol``
    (:class:`~sklearn.mixture.GaussianMixture`'s rule); ``tol=None`` runs ``max_iter``
    iterations.

    Returns
    -------
    memories : tensor of shape (C, M, D)
    loss_curve : list of float
        The mean negative log-likelihood of every iteration run.
    converged : bool
    """
    n_features = data.shape[2]
    sq_rows = (data * data).sum(dim=-1)
    counted = row_mask > 0
    n_rows = float(row_mask.sum())
    constant = (torch.log(memory_mask.sum(dim=1).clamp(min=1).to(data.dtype))[:, None]
                + 0.5 * n_features * math.log(2 * math.pi / beta))
    loss_curve, converged = [], False
    for _ in range(max_iter):
        logits = beta * (torch.einsum("cnd,cmd->cnm", data, memories)
                         - 0.5 * (memories * memories).sum(dim=-1)[:, None, :])
        logits = logits.masked_fill(~memory_mask[:, None, :], -math.inf)
        log_norm = torch.logsumexp(logits, dim=-1)
        # where, not a product: the rows of an empty bank have log_norm = -inf.
        nll = torch.where(counted, constant - log_norm + 0.5 * beta * sq_rows, 0.0)
        loss_curve.append(float(nll.sum()) / n_rows)
        resp = torch.softmax(logits, dim=-1) * row_mask[:, :, None]
        mass = resp.sum(dim=1)
        # A memory that (almost) no row claims stays where it is: dividing by a mass near
        # the dtype's underflow would send it towards the origin.
        claimed = (mass > torch.finfo(mass.dtype).eps) & memory_mask
        means = torch.einsum("cnm,cnd->cmd", resp, data) / torch.where(
            claimed, mass, torch.ones_like(mass))[:, :, None]
        memories = torch.where(claimed[:, :, None], means, memories)
        if tol is not None and len(loss_curve) > 1 and abs(
                loss_curve[-1] - loss_curve[-2]) < tol:
            converged = True
            break
    return memories, loss_curve, converged


# ------------------------------------------------------------------------- the estimator
@fill_doc
class RecLagDetector(OneToOneFeatureMixin, TransformerMixin, _MemoryBankDetector):
    """Rectified Lagrangian (RecLag) modern Hopfield network OOD detector.

    Moriai et al., "Rectified Lagrangian for Out-of-Distribution Detection in Modern
    Hopfield Networks", AAAI 2025. Each class c keeps ``n_memories`` learned memories
    Xi_c, trained on the class's stored patterns (the training rows the head classifies
    as c). With c the routed class:

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
    beta : float > 0 or 'auto', default='auto'
        Inverse temperature of the log-sum-exp; the same beta is used to learn and to
        score. ${beta_auto}
    ${routing}
    energy : {'lse', 'full', 'density'}, default='density'
        ${energy}
    metric : {'euclidean', 'cosine', 'mahalanobis'}, default='euclidean'
        ${metric} The default is the one whose mean FPR95 stayed within 2x of the best
        metric on all four feature types of ``benchmarks/results/defaults.md``; the
        whitened metric, best on the digits CNN features, was 2.4x the best on an MLP's
        ReLU features with dead units, the cosine 4.3x on standardised tables.
    covariance : {'empirical', 'ledoit_wolf', 'oas'} or estimator, default='ledoit_wolf'
        ${covariance} Used by ``metric='mahalanobis'`` only.
    gamma : float > 0 or 'auto', default='auto'
        Rectification constant. 'auto' sets ``gamma_`` so that a ``contamination``
        fraction of training rows' held-out (cross-fitted) scores has
        ``decision_function <= 0``: new rows are rejected at that rate.
    contamination : float in (0, 0.5], default=0.05
        Fraction of new in-distribution rows rejected when ``gamma='auto'`` (0.05 is the
        FPR95 operating point); unused for a numeric gamma.
    solver : {'sae', 'em'}, default='sae'
        'sae' (stochastic auto-encoding, the paper's way of learning the memories: its
        objective encodes each row as memories drawn from ``z = softmax(beta * x
        Xi_c^T)`` and decodes it as the drawn memory): minibatch gradient steps on
        ``objective`` with Adam (betas (0.9, 0.98), eps 1e-9) on batches of
        ``learning_batch_size`` rows of each class, taken in order.
        'em': EM for the equal-weight isotropic Gaussian mixture of variance 1/beta
        (the model of ``objective='likelihood'``), deterministic given the initial
        memories.
    objective : {'paper', 'likelihood'}, default='likelihood'
        What 'sae' minimises, per batch x (B rows) of class c.

        - 'paper': the authors' objective. With ``z = softmax(beta * x Xi_c^T)``, S =
          ``n_draws`` memories xi_s drawn from z for each row and constant importance
          weights ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``,
          ``p_s = exp(-|x - xi_s|^2 / 2)``:
          ``loss = mean_(s, b) w_s * (mean_D (x - xi_s)^2 - log(z_s + 1e-12))``.
          Each class's last partial batch is dropped, as in the authors' code, so a
          class with fewer stored patterns than one batch keeps its initial memories
          (with a warning).
        - 'likelihood' (an extension beyond the paper): the negative log-likelihood of
          the equal-weight isotropic Gaussian mixture of variance 1/beta on the
          memories, whose log-density ``energy='density'`` scores:
          ``nll(x) = -log (1/M) sum_mu N(x; xi_mu, I / beta)``, averaged over the batch.
          Its gradient is exact, without draws:
          ``beta * mean_b r_mu(x_b) (xi_mu - x_b)``, with ``r(x) = softmax_mu(-beta
          |x - xi_mu|^2 / 2)`` the mixture's responsibilities. Every row is used,
          partial batches too. See Notes for why the paper's objective barely moves
          the memories.
    n_draws : int, default=5
        Memories drawn per row and step ('sae' with ``objective='paper'``).
    max_epochs : int, default=100
        Most epochs ('sae') or EM iterations ('em'); fewer when ``tol`` stops the fit
        first; 0 keeps the initial memories.
    learning_batch_size : int, default=50
        Rows per class and step ('sae').
    lr : float > 0 or 'auto', default='auto'
        Adam's learning rate ('sae'). With ``objective='paper'`` an absolute step
        size; 'auto' is 1e-3, the official value. With 'likelihood' it is relative to
        the spread of each class's stored patterns: class c steps by ``lr * s_c``,
        ``s_c = sqrt(mean_i |x_i - m_c|^2 / D)`` (m_c their mean), so that one value
        suits features of any scale; 'auto' is 0.3.
    tol : float >= 0 or None, default=1e-4
        Tolerance on the mean objective per training row (``loss_curve_``). 'sae'
        stops once it has not improved on the best epoch by at least ``tol`` for
        ``n_iter_no_change`` epochs in a row (the rule of
        :class:`~sklearn.linear_model.SGDClassifier`); 'em' stops once an iteration
        changes it by less than ``tol`` (the rule of
        :class:`~sklearn.mixture.GaussianMixture`). None runs exactly ``max_epochs``
        epochs, the paper's protocol. A fit that reaches ``max_epochs`` with ``tol``
        set warns with a :class:`~sklearn.exceptions.ConvergenceWarning`.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` after which 'sae' stops (unused by
        'em').
    init : {'random', 'kmeans'}, default='random'
        Initial memories: random stored patterns of the class, or its k-means++
        centres.
    init_norm : float > 0, 'auto' or None, default=None
        Norm the initial memories are scaled to: a number (10.0 is the official value,
        a scale of the paper's CNN features), 'auto' (the mean norm of the class's
        stored patterns: the scale follows the data) or None (kept as they are, rows
        of the data or k-means centres, which suits ``energy='density'``).
    sampler : {'categorical', 'double_softmax'}, default='categorical'
        How 'sae' draws memories for ``objective='paper'``: from the categorical
        distribution z, or from ``softmax(z)``, z passed through a second softmax,
        which makes the draws nearly uniform. The authors' code does the latter (it
        passes the probabilities z to a sampler that expects logits); for exact
        reproduction studies only.

        .. deprecated:: 0.1
           ``sampler='official'`` is the old name of 'double_softmax' (the same
           draws, with a FutureWarning); it will be removed in 0.2.
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
        Seeds the initial memories, the rows of each learning batch of 'sae' (drawn
        once, the same every epoch) and a torch.Generator for its draws (on the host,
        so the draws are the same on every device). The rows are drawn from an order
        of their values (:func:`~sklearn_reclag.base.canonical_order`), not of their
        positions: the same rows in another order give the same model.
    verbose : int, default=0
        > 0 shows a progress bar over the epochs of 'sae', with the mean objective.

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
    loss_curve_ : list of float
        The mean objective per training row of every epoch ('sae', over the epoch's
        steps) or iteration ('em': the mean negative log-likelihood of the memories the
        iteration starts from, in nats, the same quantity as 'likelihood').
    n_iter_ : int
        Epochs ('sae') or EM iterations ('em') run, ``len(loss_curve_)``.
    converged_ : bool
        Whether ``tol`` stopped the fit before ``max_epochs``; False for ``tol=None``
        and ``max_epochs=0``.

    See Also
    --------
    HopfieldEnergyDetector : every stored pattern as a memory (HE) or the class mean (SHE).

    Notes
    -----
    The defaults are this suite's, chosen by measurement on four feature types together
    (``benchmarks/results/defaults.md``): the likelihood objective, the density score,
    the raw features' metric and a data-driven beta. The paper's RecLag is one set of
    parameters away::

        RecLagDetector(n_memories=10, beta=5.0, objective="paper", energy="lse",
                       metric="euclidean", init_norm=10.0, lr=1e-3, max_epochs=50,
                       tol=None, n_draws=5, learning_batch_size=50, routing="predicted")

    (``sampler='double_softmax'`` also reproduces a quirk of the authors' code, which
    draws from ``softmax(z)`` instead of z). Its ``lse`` score rewards the norm of the
    features: on standardised tabular data, where outliers have the larger norms, it
    ranks them above the inliers.

    The origin is the OOD attractor: ``G(0) = (1/beta) * log(M / gamma)``. When
    ``gamma_ >= M`` it is a fixed point of the update rule and every row with
    ``G(v) <= 0`` reaches it in one step, so ``transform`` returns zeros for them. When
    ``gamma_ < M`` the origin is not a fixed point: the next step takes it to the mean
    memory of the bank, and a rejected row comes back as that mean or as wherever the
    update rule then goes. With ``energy='full'`` the step gate is ``decision_function >
    0`` (the full score against ``offset_``), so ``transform`` agrees with ``predict``.

    Why the paper's objective barely changes the detector: with draws from z, the
    expected gradient of its ``-log z_s`` term is zero (``sum_mu z_mu grad log z_mu =
    grad sum_mu z_mu = 0``): it adds noise but no direction. On network features that
    noise is tens of times the gradient of the reconstruction term, and it sets Adam's
    normaliser, so the memories move by about one percent in 50 epochs at lr 1e-3.
    The weights ``p_s`` underflow (``|x - xi_s|^2`` is in the hundreds) and are then
    uniform. What remains in expectation, the reconstruction error of z's draws, is
    minimised by z-weighted means: a fit unrelated to the density any energy scores,
    which trained longer does not lower FPR95 either. ``objective='likelihood'`` fits
    the density that ``energy='density'`` scores, by maximum likelihood, as 'em' does
    in full batches.

    ``solver='sae'`` trains every class in one batched program
    (:mod:`sklearn_reclag.detectors._sae`): a step is two batched matrix products and
    elementwise work on small arrays, for all classes at once. On a GPU the elementwise
    work is a few dozen torch operations; on a CPU, where each torch call would cost more
    in dispatch than in arithmetic, it is two compiled numba loops per objective
    (compiled once per installation and dtype, in about three seconds, then cached on
    disk). The products use torch's intra-op threads (``torch.set_num_threads``). Fit
    holds one extra copy of the stored patterns, laid out batch-major.
    benchmarks/RESULTS.md times it against the one-class-at-a-time formulation.

    **No partial_fit.** HE, SHE, KNN and Mahalanobis have one (their fitted state is a
    running sum or an appendable bank, so chunks give the model of one fit); RecLag has
    none, on purpose. Its memories are learned: ``max_epochs`` passes of SAE or EM over
    all the stored patterns of a class, so a fit on chunks one after another is another
    model (the memories drift to the last chunk, as an online k-means does), and
    nothing short of the rows themselves gives the fit on their concatenation. Its
    threshold (``gamma='auto'``) is read from cross-fitted scores, which are refitted
    memories too, and ``beta='auto'``, the head (``head=None``) and
    ``metric='mahalanobis'``'s whitening are fitted from all the rows before training
    starts. Fit on the rows (an ``np.memmap`` is read without a copy where it is float32
    and C-ordered; training holds one batch-major copy of the stored patterns), or fit
    on a subsample: a few memories per class need far fewer rows than a bank does.
    ``det.partial_fit`` raises an AttributeError that says so.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import RecLagDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> det = RecLagDetector(solver="em", max_epochs=100, random_state=0, device="cpu")
    >>> det = det.fit(X[y < 5], y[y < 5])
    >>> det.memories_.shape
    (5, 10, 64)
    >>> det.converged_, det.n_iter_ == len(det.loss_curve_) < 100
    (True, True)
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
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "init": [StrOptions({"random", "kmeans"})],
        "init_norm": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"}), None],
        "objective": [StrOptions({"paper", "likelihood"})],
        "sampler": [StrOptions({"categorical", "double_softmax", "official"},
                               deprecated={"official"})],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, n_memories=10, beta="auto", gamma="auto", *, contamination=0.05,
                 solver="sae", objective="likelihood", n_draws=5, max_epochs=100,
                 learning_batch_size=50, lr="auto", tol=1e-4, n_iter_no_change=10,
                 init="random", init_norm=None, sampler="categorical", energy="density",
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
        self.objective = objective
        self.n_draws = n_draws
        self.max_epochs = max_epochs
        self.learning_batch_size = learning_batch_size
        self.lr = lr
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
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

    def __getattr__(self, name):
        # Only reached where normal lookup failed: hasattr(det, "partial_fit") is False
        # (as scikit-learn reads it), and a call says why (see Notes).
        if name == "partial_fit":
            raise AttributeError(
                "RecLagDetector has no partial_fit: its memories are learned by passes over "
                "all the rows of a class, so chunks fitted one after another give another "
                "model. Fit on all the rows (a float32 np.memmap is not copied) or on a "
                "subsample; HopfieldEnergyDetector, KNNDetector and MahalanobisDetector "
                "have a partial_fit."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ fit
    def _fit_memories(self, X, labels, n_banks, rows=None):
        rng = check_random_state(self.random_state)
        device, dtype = torch.device(self.device_), resolve_dtype(self.dtype)
        # The draws, k-means and the learning batches read the rows in an order of
        # their values, not of their positions in X: the same rows in another order
        # give the same memories (as they give the same threshold folds).
        order = canonical_order(X, rows)
        init, mask = initial_memories(
            X, labels, n_banks, self.n_memories, init=self.init, init_norm=self.init_norm,
            random_state=rng, order=order, rows=rows,
        )
        memories = as_tensor(init, device, dtype)
        memory_mask = as_tensor(mask, device, torch.bool)
        with torch.no_grad():
            sampler = self._sampler()  # says so once per fit, whatever the solver
            if self.solver == "sae":
                memories, loss_curve, converged = self._fit_sae(
                    X, labels, n_banks, memories, memory_mask, rng, sampler, order, rows)
            else:
                # A private array: EM reads it in place (as_tensor(copy=False)); its
                # sums run in the same order for the same rows in any order.
                data, row_mask = pad_banks(X, labels, n_banks, order=order, rows=rows)
                memories, loss_curve, converged = fit_em(
                    as_tensor(data, device, dtype, copy=False),
                    as_tensor(row_mask, device, dtype),
                    memories, memory_mask, beta=self.beta_, max_iter=self.max_epochs,
                    tol=self.tol,
                )
        self.loss_curve_ = loss_curve
        self.n_iter_ = len(loss_curve)
        self.converged_ = converged
        if self.tol is not None and self.n_iter_ == self.max_epochs > 0 and not converged:
            unit = "epochs" if self.solver == "sae" else "iterations"
            warnings.warn(
                f"RecLagDetector(solver={self.solver!r}) ran max_epochs={self.max_epochs} "
                f"{unit} without converging (tol={self.tol}): increase max_epochs, or set "
                f"tol=None to run exactly max_epochs {unit}.",
                ConvergenceWarning,
                stacklevel=5,  # the caller of fit (through _fit_context)
            )
        # Padding slots hold zeros whatever the solver did there (an empty bank's updates
        # are undefined), so nothing non-finite can reach a retrieval or a plot.
        memories = memories.masked_fill(~memory_mask[:, :, None], 0.0)
        self._set_banks(mask, memories=to_numpy(memories))

    def _fit_sae(self, X, labels, n_banks, memories, memory_mask, rng, sampler, order, rows):
        likelihood = self.objective == "likelihood"
        batch_size = self.learning_batch_size
        # The official objective drops each class's last partial batch, as the authors'
        # code does; the likelihood trains on every row.
        # Batches of rows drawn at random (seeded), the same for every epoch.
        positions, n_batches = sae_batch_rows(labels, n_banks, batch_size,
                                              drop_last=not likelihood,
                                              order=order[rng.permutation(len(order))],
                                              rows=rows)
        counts = np.bincount(labels, minlength=n_banks)
        # An empty bank was warned about with the stored patterns.
        idle = (n_batches == 0) & (counts > 0)
        if idle.any() and self.max_epochs > 0:
            self._warn_idle(counts, idle)
        device, dtype = memories.device, memories.dtype
        uniforms = None
        if not likelihood:
            # Drawn on the host whatever the device (an epoch's draws are small), so that
            # a random_state gives the same draws on every device.
            generator = torch.Generator().manual_seed(
                int(rng.randint(np.iinfo(np.int32).max)))
            shape = (len(positions), n_banks, batch_size, self.n_draws)

            def uniforms(epoch):
                return torch.rand(shape, generator=generator, dtype=dtype).to(device)

        # Gathered from X a step at a time: no copy of the bank.
        batches = SaeBatches(X, positions, device, dtype)
        if likelihood:
            row_counts = batch_row_counts(labels, n_banks, batch_size, batches.shape[0])
            rate = _LIKELIHOOD_LR if self.lr == "auto" else self.lr
            lr = rate * class_spread(batches, row_counts)
        else:
            row_counts = None
            lr = _PAPER_LR if self.lr == "auto" else self.lr
        return fit_sae(
            batches, n_batches, memories, memory_mask, beta=self.beta_,
            max_epochs=self.max_epochs, lr=lr, uniforms=uniforms, objective=self.objective,
            sampler=sampler, row_counts=row_counts, tol=self.tol,
            n_iter_no_change=self.n_iter_no_change, verbose=self.verbose,
        )

    def _sampler(self):
        """``sampler``, the deprecated name 'official' read as 'double_softmax'."""
        if self.sampler != "official":
            return self.sampler
        warnings.warn(
            "sampler='official' is deprecated in 0.1 and will be removed in 0.2; use "
            "sampler='double_softmax', the same draws (from softmax(z), as the authors' "
            "code does).",
            FutureWarning,
            stacklevel=2,
        )
        return "double_softmax"

    def _warn_idle(self, counts, idle):
        """Say which banks the official objective cannot train, and what to change."""
        advice = ("lower learning_batch_size, or use objective='likelihood', which also "
                  "trains on partial batches")
        if self.classes_ is None:
            message = (f"There are {counts[0]} stored patterns, fewer than "
                       f"learning_batch_size={self.learning_batch_size}: the memories keep "
                       f"their initial values ({advice}).")
        else:
            message = (f"Classes {self.classes_[idle].tolist()} have fewer stored patterns "
                       f"than learning_batch_size={self.learning_batch_size}: their memories "
                       f"keep their initial values ({advice}).")
        warnings.warn(message, UserWarning, stacklevel=7)  # the caller of fit

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

    def get_feature_names_out(self, input_features=None):
        """Names of :meth:`transform`'s columns: the input features' names, but under
        ``metric='mahalanobis'``, whose states live in the whitened space (its axes are
        not the input features), ``reclagdetector_whitened0``, ``...1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            As :meth:`sklearn.base.OneToOneFeatureMixin.get_feature_names_out`.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        names = super().get_feature_names_out(input_features)  # validates input_features
        if self.metric != "mahalanobis":
            return names
        return np.asarray([f"{type(self).__name__.lower()}_whitened{i}"
                           for i in range(len(names))], dtype=object)

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
        # The OOD attractor is the input space's origin, wherever the metric moves it
        # (minus center_, whitened): the zero row as the memories see it.
        origin = self._memory_space(torch.zeros_like(V[:1]), state)
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
            new = torch.where((score - self.offset_ > 0)[:, None], retrieved, origin)
            if self.metric == "cosine":
                # The states of the cosine metric live on the unit sphere (0 stays 0).
                new = self._memory_space(new, state)
            shift = (new - Z).abs().amax(dim=1)
            Z = torch.where(moving[:, None], new, Z)
            moving &= shift > _RETRIEVAL_TOL * (1 + Z.abs().amax(dim=1))
            if not moving.any():
                break
        # States about the input's origin, as the memories would see them uncentred.
        return Z - origin
