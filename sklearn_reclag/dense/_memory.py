"""DenseAssociativeMemory: the autoassociative dense associative memory.

Krotov & Hopfield (2016) with McAlister, Robins & Szymanski's (2024) scaling, learned as
McAlister's autoassociative network is: every neuron of every stored pattern is predicted
from the others. The network itself is in :mod:`._engine`.
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._backend import as_tensor, resolve_dtype
from .._labels import drop_ood_rows
from ..base import (
    _N_THRESHOLD_FOLDS,
    THRESHOLD_ROWS,
    BaseOODDetector,
    held_out_folds,
    row_keys,
    threshold_rows,
)
from ._engine import (
    INIT_MOMENTS,
    NETWORK_CONSTRAINTS,
    SCALINGS,
    Energy,
    fraction_outside_unit_range,
    free_neurons,
    initial_memories,
    recall,
    train_memories,
    warn_if_overflow,
)

# The levels (in %) of the quantiles of the training rows' scores that _align_fold maps by.
_QUANTILE_LEVELS = np.linspace(0, 100, 1001)


class DenseAssociativeMemory(OneToOneFeatureMixin, TransformerMixin, BaseOODDetector):
    """Autoassociative dense associative memory: pattern completion and novelty detection.

    A network of N neurons (one per feature) with K memories ``xi_mu`` in [-1, 1]^N
    (Krotov & Hopfield, 2016). A state sigma in [-1, 1]^N has the energy

        E(sigma) = - sum_mu F~(xi_mu . sigma),

    with F the interaction function of vertex n and ``F~`` set by ``scaling``:

    - ``'mcalister'`` (McAlister, Robins & Szymanski, 2024): ``F~(h) = F(h / (N T))``;
      the argument of F stays in [-1/T, 1/T], so large n does not overflow float32.
    - ``None``, Krotov & Hopfield's original: ``F~(h) = F(h) / T^n``, computed as
      written (F of the raw overlap, which reaches ``N^n``, then times ``1 / T^n``). For
      the homogeneous F (polynomial, rectified) it is the same model at
      ``T = N T_mcalister``; in float32 it overflows once ``N^n`` exceeds 3.4e38
      (N = 100, n >= 20). Kept for comparison.

    **Recall** (``transform``, ``recall``). Each free neuron i is set to the sign of the
    energy it gains by being on rather than off (ties to -1),

        Delta_i = sum_mu [F~(xi_mu . sigma^(i+)) - F~(xi_mu . sigma^(i-))],

    where ``sigma^(i+/-)`` is sigma with neuron i at +1 / -1. Asynchronous updates
    (the default) take the neurons one at a time in a random order drawn for every
    sweep from ``random_state``, until a sweep changes nothing; each update lowers the
    energy, so recall settles in a local minimum. Clamped neurons (``recall``'s
    ``mask``) keep their values: pattern completion.

    **Learning** (``fit``). Every neuron of every training pattern x is predicted from the
    others, ``c_i = tanh(Delta_i(x))``, and the loss ``sum_i (x_i - c_i)^(2m)``
    (``m = loss_power``) is minimised with Krotov's rule: gradient by autograd,
    ``V <- momentum V - grad``, each memory moved by ``lr V_mu / max_j |V_mu,j|`` and
    clipped to [-1, 1]; ``lr`` is multiplied by ``lr_decay`` after every epoch.

    **Novelty detection.** ``score_samples`` is the negative energy of the row brought to
    the norm of a bipolar state, ``-E(x / r(x))`` with ``r(x) = |x| / sqrt(N)`` the
    root mean square of its entries (``normalize=True``); bipolar rows have ``r = 1`` and
    score ``-E(x)`` exactly. It is higher for rows like the stored patterns;
    ``decision_function`` subtracts ``offset_``, the ``contamination`` quantile of
    held-out scores of the training rows, and ``predict`` gives +1 / -1, as the suite's
    detectors do.

    Why the rescaling: Krotov & Hopfield's states are bipolar, all of norm ``sqrt(N)``,
    and their energies compare patterns of equal norm. F grows with the overlap, so the
    energy of continuous rows as given ranks them by their norm as much as by their
    likeness to the memories: rows that a ``MinMaxScaler`` clips to +-1 (the novelties)
    score higher than the training rows. Measured with the defaults (ID rows fitted on
    70 %, scaled with ``MinMaxScaler((-1, 1), clip=True)`` fitted on them), AUROC
    ``-E(x)`` -> ``-E(x / r(x))``: wine class 0 0.07 -> 0.66, class 1 0.56 -> 0.94;
    breast cancer benign 0.48 -> 0.91, malignant 0.06 -> 0.92; digits 0-4 against 5-9,
    pixels scaled to [-1, 1], 0.92 -> 0.95, bipolar 0.88 either way. Where it works: on
    bipolar patterns, the network's own data. On continuous tabular features it is no
    longer inverted but weaker than :class:`MahalanobisDetector` (AUROC 0.94, 0.98 on
    wine class 0 and breast cancer benign): prefer that there. ``normalize=False``
    scores ``-E(x)`` as given, and ``fit`` warns when the rows are not bipolar.

    **The threshold.** The held-out scores come from networks fitted on parts of the
    rows (a cross-fit), whose energies differ from the fitted network's by a factor
    (0.03 to 36 on bipolar digits), and not by the same factor at every score: each
    one's scores are mapped onto the fitted network's by the quantiles of the scores of
    the rows each learned from (see ``offset_``). New rows drawn like the training rows
    are then accepted at about ``1 - contamination``; measured over 6 splits (70 % of
    the rows fitted, the defaults) at contamination 0.05 / 0.1 / 0.2: bipolar digits
    0-4 95.3 / 92.1 / 81.4 %, breast cancer benign 96.6 / 90.1 / 77.8 % and malignant
    97.9 / 92.2 / 81.2 % (``MinMaxScaler((-1, 1))``), where a single factor (and
    content keys that confused distinct bipolar rows) accepted 98.0 / 95.8 / 90.3 %,
    96.6 / 92.3 / 81.0 % and 96.6 / 91.9 / 84.9 %. On a few dozen
    rows (a wine class, 33-49 rows fitted) the folds, fitted on fewer rows, generalise
    worse than the fitted network, and the threshold accepts a few points more than
    asked: 83-87 % for 80 % over 30 splits (85-89 % with a single factor).

    Patterns must lie in [-1, 1] (bipolar +-1 patterns, or features scaled with
    ``MinMaxScaler(feature_range=(-1, 1), clip=True)``); other values are refused.

    Parameters
    ----------
    n : int >= 1, default=10
        Interaction vertex: the power of F. Small n learns feature-like memories, large
        n prototype-like ones (a memory per pattern) and stores more patterns
        (:func:`~sklearn_reclag.capacity`).
    n_memories : int >= 1, default=100
        Number of memories K.
    interaction : {'rectified', 'polynomial', 'leaky'}, default='rectified'
        F: ``max(x, 0)^n`` (Krotov's RePoly), ``x^n``, or ``x^n`` for x > 0 and
        ``0.01 x`` otherwise (McAlister's leaky variant, not homogeneous). With an even
        n, 'polynomial' cannot tell a pattern from its negative.
    temperature : float > 0, default=0.3
        Temperature T: ``beta = 1 / T`` inside F (scaled), or ``1 / T^n`` outside it
        (``scaling=None``, where T is on the scale of the overlaps, up to N).
    scaling : {'mcalister'} or None, default='mcalister'
        Where the temperature and N enter the energy (see above).
    loss_power : int >= 1, default=2
        m in the loss ``(x_i - c_i)^(2m)``; large m concentrates learning on the
        neurons furthest from their target.
    lr : float > 0, default=0.1
        Initial learning rate: the largest change of any memory entry in one step.
    lr_decay : float in (0, 1], default=0.98
        Factor applied to the learning rate after every epoch.
    momentum : float in [0, 1), default=0.0
        Momentum p of the update ``V <- p V - grad``.
    max_epochs : int >= 0, default=50
        Passes over the training patterns (all of them run: no early stop). 0 keeps the
        initial memories: with ``init=X`` and ``n_memories=len(X)`` the patterns
        themselves are the memories (Krotov & Hopfield's direct storage).
    learning_batch_size : int >= 1, default=100
        Patterns per training step. A step builds a (rows, memories, neurons) block.
    init : {'patterns', 'normal', 'krotov'} or array-like of shape (n_memories, \
n_features), default='patterns'
        Initial memories: 'patterns' takes training patterns, each once in a random
        order before any is taken twice (see Notes); 'normal' draws N(0, 0.3^2),
        'krotov' N(-0.3, 0.3^2), both clipped to [-1, 1]; an array is used as given.
    max_iter : int >= 1, default=100
        Most sweeps of asynchronous recall (or updates of synchronous recall); a
        :class:`~sklearn.exceptions.ConvergenceWarning` says when a probe still moved.
    synchronous : bool, default=False
        Update every free neuron at once from the previous state in recall (faster on a
        GPU, but it may end in a 2-cycle, hence ``max_iter``).
    normalize : bool, default=True
        Score each row at the norm of a bipolar state, ``-E(x / r(x))`` with ``r(x) =
        |x| / sqrt(N)`` (a zero row scores ``-E(0)``); bipolar rows are unchanged.
        False scores ``-E(x)``, which grows with the norm of x and ranks continuous rows
        inversely on tabular data (see Novelty detection); ``fit`` then warns unless the
        patterns are bipolar. Learning and recall are the same either way.
    contamination : float in (0, 0.5], default=0.05
        Fraction of the training patterns whose ``decision_function`` is negative.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Torch device; 'auto' uses CUDA when available. Resolved in ``fit``
        (``device_``).
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the torch computation.
    batch_size : int >= 1 or None, default=None
        Rows scored or recalled at a time (it bounds memory). None: 4096 on a CPU,
        16384 on a GPU; synchronous recall takes fewer when a chunk's (rows, memories,
        neurons) block would exceed 2**24 values.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial memories, the order of the training patterns and the order
        of the asynchronous updates in recall (the same for every probe and, with an
        int, for every call).
    verbose : int, default=0
        Show a progress bar over epochs when > 0.

    Attributes
    ----------
    memories_ : ndarray of shape (n_memories, n_features_in_)
        The learned memories.
    loss_curve_ : list of float
        Training loss ``sum (x_i - c_i)^(2m)`` (on the evolving memories) of every epoch.
    n_iter_ : int
        Number of epochs run.
    offset_ : float
        The ``contamination`` quantile of held-out scores of the training rows: a
        cross-fit of 5 folds (up to 10 on fewer than 1,000 distinct rows, as many as
        fit no more rows than 5 folds of 1,000), each fold's scores mapped onto this
        network's by the monotone map that takes the quantiles of its scores of the
        rows it learned from to those of this network's scores of all the training
        rows. Unlike the other detectors' cross-fits, a held-out score is not capped at
        the row's own score (a fold is another network; the cap would bias the
        quantile down).
        ``decision_function = score_samples - offset_``.
    device_ : str
        The resolved torch device.
    n_features_in_ : int
        Number of features (neurons) seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.

    See Also
    --------
    DensePolynomialHopfield : the same network as a classifier, with label neurons.
    capacity : how many random patterns a network of N neurons and vertex n stores.

    Notes
    -----
    The memories start at the training patterns (``init='patterns'``). From random
    memories (``init='normal'``, as McAlister's code starts) learning fails for n >= 10
    in float32 and float64 alike: a memory that only partly matches a pattern drives
    the neurons it disagrees with harder (F is convex) than those it agrees with, so the
    loss pushes it away until it matches nothing. Started at the patterns, the memories
    are prototypes from the first step, which large n needs; at small n learning then
    turns them into whatever stores the patterns best: at n = 2, 32 random patterns of
    dimension 100 are restored exactly, three times Krotov & Hopfield's capacity of 10.9
    for stored patterns (``benchmarks/results/dense_capacity.md``). With few, strongly
    correlated patterns and a small n (ten digits, n <= 3), ``init='normal'`` learns
    better features (``benchmarks/results/dense_stability_init-normal.md``).

    The other defaults (T = 0.3, lr = 0.1 decaying x0.98 per epoch, 50 epochs, m = 2)
    were chosen on a grid over temperature and learning rate
    (``benchmarks/dense_stability.py``, seed 0); on fresh random patterns (10 of
    dimension 100, 10 % of the entries flipped) they restore every probe exactly for
    every n from 2 to 25 in float32, while the unscaled network overflows float32 from
    n = 20 on (``benchmarks/results/dense_stability.md``). T = 0.3 keeps ``K (1/T)^n``
    within float32 up to n = 69 (with the default 100 memories).

    ``fit`` warns when the largest energy (``K (1/T)^n`` scaled, ``K N^n`` unscaled) can
    exceed the largest number of ``dtype``, and raises a ValueError if the energies do
    overflow while learning: a fit never ends with non-finite memories. Recall raises
    when an energy difference is ``inf - inf``.

    References
    ----------
    D. Krotov and J. J. Hopfield, "Dense Associative Memory for Pattern Recognition",
    NeurIPS 2016. H. McAlister, A. Robins and L. Szymanski, "Improved Robustness and
    Hyperparameter Selection in the Modern Hopfield Network", arXiv:2407.08742, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_reclag import DenseAssociativeMemory
    >>> rng = np.random.default_rng(0)
    >>> patterns = rng.choice([-1.0, 1.0], size=(10, 100))
    >>> memory = DenseAssociativeMemory(n=10, random_state=0, device="cpu").fit(patterns)
    >>> probes = np.where(rng.random(patterns.shape) < 0.1, -patterns, patterns)
    >>> (memory.transform(probes) == patterns).all(axis=1).mean()
    np.float64(1.0)
    >>> half = patterns.copy()
    >>> half[:, 50:] = 1.0  # unknown half, clamped known half
    >>> known = np.arange(100) < 50
    >>> bool((memory.recall(half, mask=known) == patterns).all())
    True
    >>> unseen = rng.choice([-1.0, 1.0], size=(4, 100))
    >>> bool(memory.score_samples(patterns).min() > memory.score_samples(unseen).max())
    True

    ``predict`` judges the distribution, not membership: its threshold ``offset_`` is
    read from held-out scores of the training rows, so that it accepts ``1 -
    contamination`` of new rows drawn like the stored ones.

    >>> memory.predict(patterns[:4])
    array([1, 1, 1, 1])
    """

    _tensor_attributes = ("memories_",)
    _needs_classes = False
    _parameter_constraints: dict = {
        **BaseOODDetector._parameter_constraints,
        **NETWORK_CONSTRAINTS,
        "scaling": [StrOptions({s for s in SCALINGS if s}), None],
        "learning_batch_size": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"patterns", *INIT_MOMENTS}), "array-like"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "synchronous": ["boolean"],
        "normalize": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n=10,
        *,
        n_memories=100,
        interaction="rectified",
        temperature=0.3,
        scaling="mcalister",
        loss_power=2,
        lr=0.1,
        lr_decay=0.98,
        momentum=0.0,
        max_epochs=50,
        learning_batch_size=100,
        init="patterns",
        max_iter=100,
        synchronous=False,
        normalize=True,
        contamination=0.05,
        device="auto",
        dtype="float32",
        batch_size=None,
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.n = n
        self.n_memories = n_memories
        self.interaction = interaction
        self.temperature = temperature
        self.scaling = scaling
        self.loss_power = loss_power
        self.lr = lr
        self.lr_decay = lr_decay
        self.momentum = momentum
        self.max_epochs = max_epochs
        self.learning_batch_size = learning_batch_size
        self.init = init
        self.max_iter = max_iter
        self.synchronous = synchronous
        self.normalize = normalize
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def _validate_fit_data(self, X, y):
        # Unsupervised: y only marks the OOD rows to leave out, whatever its other labels.
        if y is None:
            return validate_data(self, X, dtype=[np.float64, np.float32]), None
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        X, _ = drop_ood_rows(X, column_or_1d(y, warn=True))
        return X, None

    def _fit(self, X, y):
        """Learn the memories: every neuron of every pattern predicted from the others."""
        _check_unit_range(X)
        if not self.normalize and not np.all(np.abs(X) == 1):
            warnings.warn(
                "DenseAssociativeMemory(normalize=False) scores continuous rows by -E(x), "
                "which grows with the norm of x: rows far from the patterns but of larger "
                "norm (e.g. clipped to +-1 by a scaler) score higher, and novelty is ranked "
                "inversely (AUROC 0.07 on wine). Use normalize=True (the default) or "
                "bipolar (+-1) patterns.",
                UserWarning,
                stacklevel=5,  # the caller of fit (through the base fit and _fit_context)
            )
        dtype = resolve_dtype(self.dtype)
        energy = self._energy(X.shape[1])
        warn_if_overflow(energy, self.n_memories, dtype, self.dtype)
        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        if isinstance(self.init, str) and self.init == "patterns":
            memories = torch.tensor(_drawn_patterns(X, self.n_memories, rng), dtype=dtype)
        else:
            memories = initial_memories(self.init, (self.n_memories, X.shape[1]), generator,
                                        dtype, "n_features")
        device = torch.device(self.device_)
        patterns = as_tensor(X, device, dtype)

        def batch_loss(rows, memories):
            x = patterns[rows]
            c = torch.tanh(energy.all_flip_gains(memories, x))
            return ((x - c) ** (2 * self.loss_power)).sum()

        self.memories_, self.loss_curve_ = train_memories(
            memories.to(device), X.shape[0], batch_loss, lr=self.lr, lr_decay=self.lr_decay,
            momentum=self.momentum, epochs=self._epochs(),
            batch_size=self.learning_batch_size, generator=generator,
            describe=energy.describe(),
        )
        self.n_iter_ = len(self.loss_curve_)
        # The distribution of this network's scores of the rows it learned from, which
        # _align_fold maps a threshold fold's scores by: one scoring pass.
        scores = self._score_array(X)
        self._score_quantiles = np.percentile(scores, _QUANTILE_LEVELS)
        self._energy_scale = float(np.median(np.abs(scores)))

    # Set on the folds of the threshold's cross-fit only (see _align_fold).
    _fold_map = None

    def _align_fold(self, fold):
        # Learning does not fix the scale of the energy, nor the shape of its
        # distribution: fits on 4/5 and all of the same rows end in memories whose
        # energies differ by a factor (0.03 to 36 on bipolar digits with the defaults,
        # where n = 10 raises every difference in the overlaps to the 10th power), and
        # not by the same factor at every score. A fold's scores are put on this
        # network's scale by the monotone map that takes the quantiles of the fold's
        # scores of the rows it learned from to those of this network's scores of the
        # rows it learned from (linear between quantiles; beyond the fold's extreme
        # scores, the ratio of the extreme quantiles, where both are positive, else of
        # the median |scores|). A single factor, the ratio of the median |scores|, put
        # the median right but not the tail the threshold is read in: on bipolar digits
        # 0-4 (12 splits, without the cap of _held_out_scores) new rows were accepted at
        # 96.1 % for 95 % asked, 83.9 % for 80 %; mapped, 95.1 % and 80.9 %.
        if fold._energy_scale > 0 and self._energy_scale > 0:
            scale = self._energy_scale / fold._energy_scale
        else:
            scale = 1.0
        source, target = fold._score_quantiles, self._score_quantiles
        slopes = [target[end] / source[end] if source[end] > 0 and target[end] > 0
                  else scale for end in (0, -1)]
        fold._fold_map = (source, target, *slopes)

    def _to_final_scale(self, scores):
        """A fold's scores on the final network's scale (see ``_align_fold``)."""
        source, target, low_slope, high_slope = self._fold_map
        scores = np.asarray(scores, dtype=np.float64)
        mapped = np.interp(scores, source, target)
        low, high = scores < source[0], scores > source[-1]
        mapped[low] = target[0] + low_slope * (scores[low] - source[0])
        mapped[high] = target[-1] + high_slope * (scores[high] - source[-1])
        return mapped

    def _held_out_scores(self, X, y):
        """Held-out scores of the training rows: the base class's cross-fit (the same
        folds and rows, and the same fallback to the rows' own scores where it fails),
        each fold's scores mapped to this network's scale (``_align_fold``), without
        the base class's cap at the row's own score.

        The cap assumes a row scores no higher by a model that never saw it than by
        the one that learned from it, up to noise. A fold here is another network, its
        scores mapped onto this one's only in distribution: a row's mapped held-out
        score and its own score are two comparable draws (above it for 40 % of the
        rows of bipolar digits 0-4), and the lower of two draws biased the quantile
        down, the more so the higher the quantile: new rows accepted at 85 % for 80 %
        asked with the cap, 81 % without it (12 splits)."""
        keys = row_keys(X, y, dtype=self.dtype)
        distinct = np.zeros(len(X), dtype=bool)
        distinct[np.unique(keys, return_index=True)[1]] = True
        n_distinct = int(distinct.sum())
        n_splits = _n_threshold_folds(n_distinct)
        wanted = min(n_distinct, THRESHOLD_ROWS)
        scores = []
        try:
            folds = held_out_folds(keys, y, n_splits)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a fold repeats the final fit's warnings
                for index in range(n_splits):
                    held_out = np.flatnonzero((folds == index) & distinct)
                    fold = self._fitted_fold(X, None, np.flatnonzero(folds != index))
                    scores.append(fold._score_array(X[held_out]))
                    if sum(map(len, scores)) >= wanted:
                        break
        except ValueError as exc:
            warnings.warn(
                f"The threshold is set from the training rows' own scores, which are "
                f"optimistic: a {n_splits}-fold cross-fit of the training rows "
                f"failed ({exc})",
                UserWarning,
                # The caller of fit: above _fit_offset, the base fit, _fit_context and fit.
                stacklevel=6,
            )
            return self._score_array(X[threshold_rows(len(X), keys)])
        return np.concatenate(scores)

    def __sklearn_is_fitted__(self):
        # fit sets n_features_in_ and device_ before learning, which may still raise.
        return hasattr(self, "offset_")

    def _overflow_error(self, what):
        # The base class's advice, in this network's terms.
        return ValueError(
            f"The energies of the training patterns overflowed {self.dtype} "
            f"({self._energy(self.n_features_in_).describe()}): the {what} is not finite. "
            "Use scaling='mcalister', raise the temperature, or use dtype='float64'."
        )

    def _epochs(self):
        if self.verbose > 0:
            from tqdm.auto import trange

            return trange(self.max_epochs, desc=type(self).__name__)
        return range(self.max_epochs)

    def _energy(self, n_neurons):
        return Energy(self.n, self.interaction, self.temperature, self.scaling, n_neurons)

    # ------------------------------------------------------------- scoring
    def _validate_rows(self, X):
        X = super()._validate_rows(X)
        _check_unit_range(X)
        return X

    def _score_batch(self, V, state):
        """``-E(v / r(v)) = sum_mu F~(xi_mu . v / r(v))`` of every row v of the batch,
        ``r(v)`` the root mean square of v (1 without ``normalize``)."""
        memories = state["memories_"]
        overlaps = V @ memories.T
        if self.normalize:
            # The mean of squares, not |v| / sqrt(N): exactly 1 for a bipolar row, whose
            # scores then equal -E(v) to the last bit. A zero row keeps overlaps 0.
            rms = V.square().mean(dim=1, keepdim=True).sqrt_()
            overlaps = overlaps / torch.where(rms > 0, rms, torch.ones_like(rms))
        return self._energy(memories.shape[1]).neg_energy(overlaps)

    def _score_array(self, X, rows=None):
        scores = super()._score_array(X, rows)
        return scores if self._fold_map is None else self._to_final_scale(scores)

    def score_samples(self, X):
        """Negative energy of each row at the norm of a bipolar state.

        ``-E(x / r(x)) = sum_mu F~(xi_mu . x / r(x))``, ``r(x)`` the root mean square
        of x (``-E(x)`` for bipolar rows, and for every row with ``normalize=False``).
        Higher for rows like the stored patterns (more in-distribution).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows in [-1, 1].

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return super().score_samples(X)

    # -------------------------------------------------------------- recall
    def recall(self, X, mask=None):
        """Relax each probe to a minimum of the energy; clamped neurons keep their values.

        Parameters
        ----------
        X : array-like of shape (n_probes, n_features)
            Initial states (probes) in [-1, 1]: corrupted patterns, or patterns whose
            unknown entries hold any value (e.g. 0 or +-1) and are left free.
        mask : array-like of bool, of shape (n_features,) or (n_probes, n_features), \
default=None
            True for the clamped (known) neurons, which keep their initial value:
            pattern completion. None lets every neuron move.

        Returns
        -------
        states : ndarray of shape (n_probes, n_features)
            The relaxed states; free neurons are +1 or -1.

        Raises
        ------
        ValueError
            If an energy difference overflows to ``inf - inf`` (see ``scaling``).
        """
        check_is_fitted(self)
        X = self._validate_rows(X)
        free = free_neurons(mask, *X.shape)
        return recall(self, self._energy(X.shape[1]), X, free, max_iter=self.max_iter,
                      synchronous=self.synchronous,
                      random_state=check_random_state(self.random_state))

    def transform(self, X):
        """Recall every probe with no neuron clamped: ``recall(X)``.

        Parameters
        ----------
        X : array-like of shape (n_probes, n_features)
            Probes in [-1, 1].

        Returns
        -------
        states : ndarray of shape (n_probes, n_features)
            The relaxed states, +1 or -1.
        """
        return self.recall(X)

    def fit_transform(self, X, y=None):
        """Fit on X, then recall X: ``fit(X, y).transform(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Patterns in [-1, 1].
        y : array-like of shape (n_samples,), default=None
            Ignored, except that rows labelled ``OOD_LABEL`` (-1) are left out of fit.

        Returns
        -------
        states : ndarray of shape (n_samples, n_features)
        """
        return self.fit(X, y).transform(X)

    def fit(self, X, y=None):
        """Learn the memories from the patterns X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Patterns in [-1, 1]: bipolar (+-1) or continuous.
        y : array-like of shape (n_samples,), default=None
            Not used, except that rows labelled ``OOD_LABEL`` (-1) are left out, so that a
            cross-validation split may carry OOD rows for scoring.

        Returns
        -------
        self : object
            The fitted memory.

        Raises
        ------
        ValueError
            If X holds values outside [-1, 1], or if the energies overflow ``dtype``
            while learning.
        """
        return super().fit(X, y)


def _check_unit_range(X):
    outside = fraction_outside_unit_range(X)
    if outside > 0:
        raise ValueError(
            f"{outside:.1%} of the values of X lie outside [-1, 1]; a dense associative "
            "memory takes bipolar (+-1) patterns or values in [-1, 1]. Scale the features "
            "first, e.g. with MinMaxScaler(feature_range=(-1, 1), clip=True)."
        )


def _n_threshold_folds(n_distinct):
    """Folds of the threshold's cross-fit: 5, as the base class's, and more on small data
    (up to 10, and no more than the distinct rows), as many as fit no more rows in all
    than 5 folds of ``THRESHOLD_ROWS`` rows do: ``(k - 1) n_distinct <= 4 THRESHOLD_ROWS``.

    A fold learns from ``1 - 1/k`` of the rows, and on small data it generalises worse
    than the network fitted on all of them: its held-out rows score lower than new rows
    score on the fitted network, even on its scale, and the threshold accepts more new
    rows than ``1 - contamination``. Measured with the defaults at contamination=0.2 on
    70 % of a class, ``MinMaxScaler((-1, 1))``-scaled (20-30 splits): breast cancer
    malignant (148 rows) 82.4 % accepted with 5 folds, 80.8 % with 10, 80.3 % with 30;
    wine class 2 (33 rows) 90.4 %, 87.1 %, 83.3 % with one row per fold. Fits on so
    few rows cost little; from 1,000 rows on, the fits are of 5 folds."""
    folds = 1 + 4 * THRESHOLD_ROWS // max(n_distinct, 1)
    return max(_N_THRESHOLD_FOLDS, min(10, folds, n_distinct))


def _drawn_patterns(X, n_memories, rng):
    """``n_memories`` training patterns: a random permutation of the rows, repeated as
    often as needed, so that every pattern starts ``n_memories / n_samples`` memories
    (give or take one) and none is left out while ``n_memories >= n_samples``."""
    n_rounds = -(-n_memories // X.shape[0])
    order = np.concatenate([rng.permutation(X.shape[0]) for _ in range(n_rounds)])
    return X[order[:n_memories]]
