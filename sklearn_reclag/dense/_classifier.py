"""DensePolynomialHopfield: Krotov & Hopfield's (2016) dense associative memory classifier.

The network, its energy and its learning rule are in :mod:`._engine`; this module adds the
label neurons, one per class, and the classifier's API.
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import _safe_indexing, check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._backend import as_tensor, map_batches, resolve_device, resolve_dtype
from .._labels import drop_ood_rows, is_ood_label
from ..base import TorchEstimatorMixin
from ._engine import (
    INIT_MOMENTS,
    NETWORK_CONSTRAINTS,
    Energy,
    fraction_outside_unit_range,
    free_neurons,
    initial_memories,
    recall,
    train_memories,
    warn_if_overflow,
)

# Most entries of the (rows, classes, memories) block of one chunk of predictions.
_PREDICT_BLOCK = 2**24
# Training minibatch when neither learning_batch_size nor the deprecated batch_size is set.
_DEFAULT_LEARNING_BATCH = 1000


class DensePolynomialHopfield(TorchEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Dense associative memory classifier with interaction vertex n.

    Krotov & Hopfield's (2016) classifier: N = n_features + n_classes neurons (the
    features, then one label neuron per class) and K memories ``xi_mu`` of N entries
    each, with McAlister, Robins & Szymanski's (2024) scaling: the energy of a state
    sigma is ``E(sigma) = -sum_mu F(s xi_mu . sigma)``, ``s = (1 / T) / N``, with F the
    interaction function of vertex n. Putting ``1 / T`` inside F and dividing by N keeps
    the argument of F in [-1/T, 1/T], so that n = 20 or 30 does not overflow float32;
    for a homogeneous F it is exactly Krotov's model at temperature ``T_Krotov = N T``.
    The label neurons are updated once from the "off" state (every label -1)::

        x_a = sum_mu [ F(s xi_mu . on_a) - F(s xi_mu . off) ],   s = (1 / T) / N,
        c_a = tanh(x_a),

    where ``on_a`` is the input with label neuron a at +1 and the others at -1, and ``off``
    the input with every label at -1. N counts every neuron, visible and label.

    - ``predict``: the class of largest ``c_a`` (of ``x_a``, which orders the same way
      and does not saturate).
    - ``predict_proba``: ``p_a = (1 + c_a) / sum_b (1 + c_b)``, computed as
      ``softmax_a(log sigmoid(2 x_a))`` (the same quantity, as ``1 + tanh(x) =
      2 sigmoid(2 x)``) so that it stays defined when every ``c_a`` rounds to -1.
    - ``decision_function``: ``log((1 + c_a) / 2)``, the log of the unnormalised
      probability (binary: class 1 minus class 0).
    - ``score_samples``: ``-E`` at the (input, predicted label) state,
      ``sum_mu F(s xi_mu . sigma)``; higher = more in-distribution.
    - ``recall``: autoassociative relaxation of whole network states.

    Training is Krotov's rule: loss ``sum_a (t_a - c_a)^(2m)`` (t = +1 for the true class,
    -1 otherwise) on the same on/off states, gradient by autograd,
    ``V <- momentum V - grad``, each memory moves by ``lr V_mu / max_j |V_mu,j|`` and is
    clipped to [-1, 1]; ``lr`` is multiplied by ``lr_decay`` after every epoch.

    The features must lie in [-1, 1]: scale them first, e.g. with
    ``MinMaxScaler(feature_range=(-1, 1))`` in a Pipeline. ``fit`` warns when X leaves
    that range and clips it; ``predict`` and the other methods clip silently, as a
    scaler fitted on the training rows maps unseen rows slightly outside its range.

    Parameters
    ----------
    n : int >= 1, default=3
        Interaction vertex: the power of F. Small n learns feature-like memories, large n
        (20-30) prototype-like ones.
    temperature : float > 0, default=0.5
        Temperature T of the scaled model (``beta = 1 / T``). Krotov's ``T_Krotov`` for
        N neurons is ``N * T`` (his MNIST value 540 at N = 794 is T = 0.68).
    n_memories : int >= 1, default=100
        Number of memories K.
    interaction : {'rectified', 'polynomial', 'leaky'}, default='rectified'
        F: ``max(x, 0)^n`` (Krotov's RePoly), ``x^n``, or ``x^n`` for x > 0 and
        ``0.01 x`` otherwise (McAlister's leaky variant, not homogeneous).
    loss_power : int >= 1, default=30
        m in the loss ``(t - c)^(2m)``; large m concentrates the updates on the
        worst-classified rows.
    lr : float > 0, default=0.04
        Initial learning rate: the largest change of any memory entry in one step.
    lr_decay : float in (0, 1], default=0.998
        Factor applied to the learning rate after every epoch.
    momentum : float in [0, 1), default=0.0
        Momentum p of the update ``V <- p V - grad`` (Krotov used 0.6; see Notes).
    max_epochs : int >= 0, default=300
        Passes over the training rows (every one of them is run: no early stop).
    learning_batch_size : int >= 1 or None, default=None
        Rows per training step (Krotov's minibatch). None: 1000 rows (but see
        ``batch_size``).
    init : {'normal', 'krotov'} or array-like of shape (n_memories, n_features + \
n_classes), default='normal'
        Initial memories: 'normal' draws N(0, 0.3^2), 'krotov' N(-0.3, 0.3^2) (Krotov's
        MNIST choice, for data with a -1 background), both clipped to [-1, 1]; an array
        is used as given (``max_epochs=0`` then stores those patterns untrained).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Torch device; 'auto' uses CUDA when available. Resolved in ``fit``
        (``device_``).
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the torch computation.
    batch_size : int >= 1 or None, default=None
        Rows evaluated at a time in prediction and recall, as in the suite's detectors:
        it bounds memory. None: 4096 rows on a CPU, 16384 on a GPU, fewer when a chunk's
        (rows, classes, memories) block would exceed 2**24 values.

        .. deprecated:: 0.1
           ``batch_size`` used to set the training minibatch as well. It still does, with
           a FutureWarning, while ``learning_batch_size`` is None; from 0.2 on it sets
           the scoring chunk only. Pass ``learning_batch_size`` for the minibatch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial memories, the minibatch order and the order of the
        asynchronous updates in ``recall``.
    verbose : int, default=0
        Show a progress bar over epochs when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    memories_ : ndarray of shape (n_memories, n_features_in_ + n_classes)
        The learned memories: visible part first, then one entry per label neuron.
    loss_curve_ : list of float
        Training loss ``sum (t - c)^(2m)`` (on the evolving memories) for every epoch.
    n_iter_ : int
        Number of epochs run.
    device_ : str
        The resolved torch device.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.

    See Also
    --------
    DenseAssociativeMemory : the same network learned autoassociatively (no labels).
    capacity : how many random patterns a network of N neurons and vertex n stores.

    Notes
    -----
    Defaults against Krotov's MNIST ones (n = 20, m = 30, K = 100, lr 0.04 x 0.998 per
    epoch, momentum 0.6, minibatch 1000, 300 epochs, init N(-0.3, 0.3^2)): m, K, the
    learning rate, its decay, the minibatch and the epochs are his; n = 3 (his best MNIST
    error, 1.44 %), a zero-mean init, T = 0.5 (``T_Krotov = N T = 37`` at N = 74 on
    digits) and no momentum were chosen on scikit-learn's digits. The raw gradient spans
    many orders of magnitude from one minibatch to the next at large n (it scales like
    ``(s h)^(n-1)``), so a momentum term keeps repeating a stale step at full learning
    rate: on digits after 100 epochs, momentum 0.6 gives 15 % test accuracy at n = 30
    against 87 % without momentum (``python benchmarks/dense_n_sweep.py --quick
    --momenta 0 0.6``).

    Accuracy against n (``benchmarks/results/dense_n_sweep.md``, one seed, and
    ``benchmarks/results/dense_n_dip.md``, three seeds): about 0.98 up to n = 11, then
    lower and more seed-dependent, 0.91-0.96 for n >= 20 (n = 3: 0.978 +- 0.005 over
    seeds; n = 25: 0.937 +- 0.016), so a single-seed curve dips at some large n (at
    n = 25 for seed 0). The cause is not
    floating point (float64 does no better: its differences to float32 go both ways and
    stay within the spread over seeds; the scaling keeps every energy finite) but the
    prototype regime: at n >= 20 only about 25 of the 100 memories are the strongest
    match of any training row, against 54 at n = 3, so fewer memories do the work and
    which ones survive depends on the seed. A lower temperature narrows the gap on these
    splits (T = 0.3: n = 25 reaches 0.954 +- 0.008, n = 3 0.981), but it was measured on
    test splits, not selected on validation data, so the default stays T = 0.5.

    The argument of F lies in [-1/T, 1/T], so ``K * (1/T)^n`` bounds the energy; ``fit``
    warns when that bound exceeds the largest number of ``dtype``, and raises a
    ValueError if the energies do overflow during training (a fit never ends with
    non-finite memories).

    References
    ----------
    D. Krotov and J. J. Hopfield, "Dense Associative Memory for Pattern Recognition",
    NeurIPS 2016. H. McAlister, A. Robins and L. Szymanski, "Improved Robustness and
    Hyperparameter Selection in the Modern Hopfield Network", arXiv:2407.08742, 2024.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> from sklearn_reclag import DensePolynomialHopfield
    >>> X, y = load_digits(n_class=3, return_X_y=True)
    >>> clf = make_pipeline(
    ...     MinMaxScaler(feature_range=(-1, 1)),
    ...     DensePolynomialHopfield(n=3, n_memories=20, max_epochs=30, random_state=0,
    ...                             device="cpu"),
    ... ).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    >>> clf[-1].memories_.shape
    (20, 67)
    """

    _tensor_attributes = ("memories_",)
    _parameter_constraints: dict = {
        **NETWORK_CONSTRAINTS,
        "learning_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "init": [StrOptions(set(INIT_MOMENTS)), "array-like"],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n=3,
        *,
        temperature=0.5,
        n_memories=100,
        interaction="rectified",
        loss_power=30,
        lr=0.04,
        lr_decay=0.998,
        momentum=0.0,
        max_epochs=300,
        learning_batch_size=None,
        init="normal",
        device="auto",
        dtype="float32",
        batch_size=None,
        random_state=None,
        verbose=0,
    ):
        self.n = n
        self.temperature = temperature
        self.n_memories = n_memories
        self.interaction = interaction
        self.loss_power = loss_power
        self.lr = lr
        self.lr_decay = lr_decay
        self.momentum = momentum
        self.max_epochs = max_epochs
        self.learning_batch_size = learning_batch_size
        self.init = init
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn the memories from labelled rows with Krotov's rule.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features scaled to [-1, 1] (values outside are clipped, with a warning).
        y : array-like of shape (n_samples,)
            Class labels. Rows labelled ``OOD_LABEL`` (-1) are ignored, so that a
            cross-validation split may carry OOD rows for scoring.

        Returns
        -------
        self : object
            The fitted classifier.

        Raises
        ------
        ValueError
            If the energies overflow ``dtype`` during training (the loss or the memories
            stop being finite).
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        X, y = drop_ood_rows(X, column_or_1d(y, warn=True))
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has {len(self.classes_)} class; DensePolynomialHopfield needs at least "
                "2 classes (one label neuron per class)."
            )
        X = self._check_range(X, warn=True)
        learning_batch_size = self._learning_batch_size()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype)
        n_neurons = X.shape[1] + len(self.classes_)
        energy = self._energy(n_neurons)
        warn_if_overflow(energy, self.n_memories, dtype, self.dtype)

        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        memories = initial_memories(self.init, (self.n_memories, n_neurons), generator, dtype,
                                    "n_features + n_classes")
        X_all = as_tensor(X, device, dtype)
        # Targets t: +1 for the true class, -1 for the others.
        targets = as_tensor(2 * np.eye(len(self.classes_))[y_index] - 1, device, dtype)

        def batch_loss(rows, memories):
            c = torch.tanh(self._label_drive(X_all[rows], memories))
            return ((targets[rows] - c) ** (2 * self.loss_power)).sum()

        self.memories_, self.loss_curve_ = train_memories(
            memories.to(device), X.shape[0], batch_loss, lr=self.lr, lr_decay=self.lr_decay,
            momentum=self.momentum, epochs=self._epochs(), batch_size=learning_batch_size,
            generator=generator, describe=energy.describe(),
        )
        self.n_iter_ = len(self.loss_curve_)
        self.device_ = str(device)
        return self

    def __sklearn_is_fitted__(self):
        # validate_data sets n_features_in_ before training, which may still raise.
        return hasattr(self, "memories_")

    def _learning_batch_size(self):
        """The training minibatch; the deprecated ``batch_size`` still sets it for now."""
        if self.learning_batch_size is not None:
            return self.learning_batch_size
        if self.batch_size is not None:
            warnings.warn(
                "batch_size sets the training minibatch only until sklearn-reclag 0.2; from "
                "then on it sets the scoring chunk only, as in the other estimators. Pass "
                "learning_batch_size for the training minibatch (and to silence this "
                "warning).",
                FutureWarning,
                stacklevel=4,  # _learning_batch_size < fit < _fit_context < the caller
            )
            return self.batch_size
        return _DEFAULT_LEARNING_BATCH

    def _epochs(self):
        if self.verbose > 0:
            from tqdm.auto import trange

            return trange(self.max_epochs, desc=type(self).__name__)
        return range(self.max_epochs)

    def _energy(self, n_neurons):
        return Energy(self.n, self.interaction, self.temperature, "mcalister", n_neurons)

    # ------------------------------------------------------------- forward
    def _label_drive(self, V, memories):
        """x_a of every row of V (B, D) and class a: (B, C)."""
        n_features = V.shape[1]
        visible, labels = memories[:, :n_features], memories[:, n_features:]
        energy = self._energy(memories.shape[1])
        # xi . off = xi_v . v - sum_b xi_b; on_a differs from off only in label a: +2 xi_a.
        h_off = V @ visible.T - labels.sum(dim=1)
        h_on = h_off.unsqueeze(1) + 2 * labels.T.unsqueeze(0)
        # Subtract per memory before summing: the difference is small next to the terms.
        return energy.weigh(
            (energy.terms(h_on) - energy.terms(h_off).unsqueeze(1)).sum(dim=2)
        )

    def _map(self, fn, X):
        kwargs = self._batch_kwargs()
        per_row = len(self.classes_) * self.memories_.shape[0]
        kwargs["batch_size"] = min(kwargs["batch_size"], max(1, _PREDICT_BLOCK // per_row))
        return map_batches(fn, X, **kwargs)

    def _check_X(self, X):
        check_is_fitted(self)
        return self._check_range(self._validate_rows(X), warn=False)

    def _check_range(self, X, *, warn):
        outside = fraction_outside_unit_range(X) if warn else 0.0
        if outside > 0:
            warnings.warn(
                f"{outside:.1%} of the values of X lie outside [-1, 1]; they are clipped. "
                "Scale the features first, e.g. with MinMaxScaler(feature_range=(-1, 1)).",
                UserWarning,
            )
        return np.clip(X, -1, 1)

    def _log_odds(self, V, memories):
        """log((1 + c_a) / 2) = log sigmoid(2 x_a): finite even where c_a rounds to -1."""
        return torch.nn.functional.logsigmoid(2 * self._label_drive(V, memories))

    def decision_function(self, X):
        """Confidence of each class: ``log((1 + c_a) / 2)``, the log of the unnormalised
        ``predict_proba``.

        Computed as ``log sigmoid(2 x_a)`` (``1 + tanh(x) = 2 sigmoid(2 x)``). It orders
        the classes as ``c_a`` and the drives ``x_a`` do.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples, n_classes) or (n_samples,)
            With two classes, the difference class 1 minus class 0 (positive where
            ``classes_[1]`` is predicted), as scikit-learn's binary classifiers return.
        """
        X = self._check_X(X)
        decision = self._map(lambda V, state: self._log_odds(V, state["memories_"]), X)
        if len(self.classes_) == 2:
            return decision[:, 1] - decision[:, 0]
        return decision

    def predict(self, X):
        """Class of the label neuron with the largest ``c_a``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        # argmax of the drives x_a: the same class as argmax c_a, without tanh's saturation.
        index = self._map(
            lambda V, state: self._label_drive(V, state["memories_"]).argmax(dim=1), X
        )
        return self.classes_[index.astype(np.intp)]

    def predict_proba(self, X):
        """``p_a = (1 + c_a) / sum_b (1 + c_b)``, computed stably as a softmax.

        ``p = softmax(log sigmoid(2 x))``, equal to the formula as
        ``1 + tanh(x) = 2 sigmoid(2 x)``, and defined when every ``c_a`` rounds to -1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        X = self._check_X(X)
        return self._map(
            lambda V, state: torch.softmax(self._log_odds(V, state["memories_"]), dim=1), X
        )

    def score_samples(self, X):
        """Negative energy at the (input, predicted label) state: higher = in-distribution.

        ``-E(sigma) = sum_mu F(s xi_mu . sigma)``, sigma = the input with the predicted
        class's label neuron at +1 and the others at -1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        X = self._check_X(X)

        def neg_energy(V, state):
            memories = state["memories_"]
            labels = memories[:, V.shape[1]:]
            predicted = self._label_drive(V, memories).argmax(dim=1)
            h = V @ memories[:, : V.shape[1]].T - labels.sum(dim=1) + 2 * labels.T[predicted]
            return self._energy(memories.shape[1]).neg_energy(h)

        return self._map(neg_energy, X)

    def score(self, X, y, sample_weight=None):
        """Accuracy on the in-distribution rows; rows labelled ``OOD_LABEL`` are ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        keep = np.flatnonzero(~is_ood_label(np.asarray(y)))
        if sample_weight is not None:
            sample_weight = _safe_indexing(sample_weight, keep)
        return super().score(
            _safe_indexing(X, keep), _safe_indexing(y, keep), sample_weight=sample_weight
        )

    # -------------------------------------------------------------- recall
    def recall(self, X, mask=None, max_iter=100, synchronous=False):
        """Relax network states towards the stored memories (autoassociative recall).

        Each free neuron i is set to ``sign(Delta_i)`` (ties to -1), with
        ``Delta_i = sum_mu [F(s xi_mu . sigma^(i+)) - F(s xi_mu . sigma^(i-))]`` and
        ``sigma^(i+/-)`` the state with neuron i at +1 / -1. Asynchronous mode updates the
        neurons one at a time, in a random order drawn for every sweep from
        ``random_state`` (the same order for every probe), until a sweep changes nothing;
        it uses the overlaps ``h_mu = xi_mu . sigma``, updated as neurons flip.
        Synchronous mode updates every free neuron at once from the previous state.

        Parameters
        ----------
        X : array-like of shape (n_probes, n_features_in_ + n_classes)
            Initial states of the whole network (features, then the label neurons), in
            [-1, 1] (clipped otherwise).
        mask : array-like of bool, of shape (n_features_in_ + n_classes,) or \
(n_probes, n_features_in_ + n_classes), default=None
            True for clamped neurons, which keep their initial value (pattern
            completion). None lets every neuron move.
        max_iter : int >= 1, default=100
            Largest number of sweeps (asynchronous) or of updates (synchronous). A
            :class:`~sklearn.exceptions.ConvergenceWarning` says when some probe was
            still changing.
        synchronous : bool, default=False
            Update all neurons at once (which may end in a 2-cycle, hence the cap).

        Returns
        -------
        states : ndarray of shape (n_probes, n_features_in_ + n_classes)
            The relaxed states; free neurons are +1 or -1.
        """
        check_is_fitted(self)
        if not (isinstance(max_iter, Integral) and max_iter >= 1):
            raise ValueError(f"max_iter must be an int >= 1; got {max_iter!r}.")
        n_neurons = self.memories_.shape[1]
        X = self._check_states(X, n_neurons)
        free = free_neurons(mask, X.shape[0], n_neurons)
        return recall(self, self._energy(n_neurons), X, free, max_iter=max_iter,
                      synchronous=synchronous,
                      random_state=check_random_state(self.random_state))

    def _check_states(self, X, n_neurons):
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != n_neurons:
            raise ValueError(
                f"recall takes whole network states of {n_neurons} columns (the "
                f"{self.n_features_in_} features, then {len(self.classes_)} label neurons); "
                f"X has {X.shape[1]}."
            )
        return np.clip(X, -1, 1)
