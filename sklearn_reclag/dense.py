"""Dense associative memory (Krotov & Hopfield, 2016) with McAlister's stabilisation.

Formulas from specs/dense_polynomial.md. A state ``sigma`` of N neurons (the visible
features followed by one label neuron per class) has energy

    E(sigma) = - sum_mu F(s * xi_mu . sigma),    s = (1 / T) / N,

over K memories ``xi_mu`` in [-1, 1]^N. F is the interaction function of vertex n
('polynomial' x^n, 'rectified' max(x, 0)^n, 'leaky' x^n for x > 0 else 0.01 x). Putting
``1 / T`` inside F and dividing by N (McAlister, Robins & Szymanski, 2024) keeps the argument
of F in [-1/T, 1/T], so large n no longer overflows; for a homogeneous F it is exactly
Krotov's model at temperature ``T_Krotov = N * T``.
"""

import math
import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import _safe_indexing, check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._backend import as_tensor, iter_slices, map_batches, resolve_device, resolve_dtype
from .base import TorchEstimatorMixin, drop_ood_rows, is_ood_label

_LEAKY_SLOPE = 0.01
# Initial memories N(mean, std^2): Krotov's MNIST init has mean -0.3, which only suits
# MNIST's -1 background; mean 0 keeps half the initial overlaps positive on any data.
_INIT_MOMENTS = {"normal": (0.0, 0.3), "krotov": (-0.3, 0.3)}
# Per-memory normalisation floor (Krotov's `prec`): a memory without gradient stays put.
_MIN_STEP_NORM = 1e-30
# Slack for values that rounding puts just outside [-1, 1] (e.g. a MinMaxScaler's output).
_RANGE_TOL = 1e-6


@validate_params(
    {"N": [Interval(Integral, 2, None, closed="left")],
     "n": [Interval(Integral, 2, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def capacity(N, n):
    """Number of random patterns a dense associative memory can store and recall.

    Krotov & Hopfield (2016), eq. 6: ``K_max = N^(n-1) / (2 (2n-3)!! ln N)``, for
    N neurons and the interaction vertex n (n = 2 gives the classical
    ``N / (2 ln N)``).

    Parameters
    ----------
    N : int >= 2
        Number of neurons.
    n : int >= 2
        Interaction vertex.

    Returns
    -------
    K_max : float

    Examples
    --------
    >>> from sklearn_reclag import capacity
    >>> round(capacity(100, 2), 2)
    10.86
    >>> capacity(100, 3) > 10 * capacity(100, 2)
    True
    """
    double_factorial = math.prod(range(2 * n - 3, 0, -2))
    return float(N) ** (n - 1) / (2.0 * double_factorial * math.log(N))


def _interaction(x, n, kind):
    """F(x) for the interaction function ``kind`` of vertex n (elementwise)."""
    if kind == "polynomial":
        return x**n
    if kind == "rectified":
        return torch.clamp(x, min=0) ** n
    return torch.where(x > 0, x**n, _LEAKY_SLOPE * x)


class DensePolynomialHopfield(TorchEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Dense associative memory classifier with interaction vertex n.

    Krotov & Hopfield's (2016) classifier: N = n_features + n_classes neurons (the
    features, then one label neuron per class) and K memories of N entries each, with
    McAlister's scaling (specs/dense_polynomial.md). The label neurons are updated once
    from the "off" state (every label -1)::

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
    batch_size : int >= 1, default=1000
        Minibatch size in training, and rows evaluated at a time in prediction and
        recall (bounds memory: a batch needs ``batch_size * n_classes * n_memories``
        entries).
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
    --momenta 0 0.6``); the defaults give 94 % at n = 30 after 300 epochs
    (benchmarks/results/dense_n_sweep.md).

    The argument of F lies in [-1/T, 1/T], so ``K * (1/T)^n`` bounds the energy; ``fit``
    warns when that bound exceeds the largest number of ``dtype``.

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
        "n": [Interval(Integral, 1, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "n_memories": [Interval(Integral, 1, None, closed="left")],
        "interaction": [StrOptions({"rectified", "polynomial", "leaky"})],
        "loss_power": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "lr_decay": [Interval(Real, 0, 1, closed="right")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions(set(_INIT_MOMENTS)), "array-like"],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
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
        batch_size=1000,
        init="normal",
        device="auto",
        dtype="float32",
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
        self.batch_size = batch_size
        self.init = init
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
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
        """
        self._validate_params()
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
        self.device_ = str(resolve_device(self.device))
        dtype = resolve_dtype(self.dtype)
        self._warn_if_overflow(dtype)

        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        memories = self._initial_memories(X.shape[1] + len(self.classes_), generator, dtype)
        self.memories_, self.loss_curve_ = self._train(X, y_index, memories, generator)
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _initial_memories(self, n_neurons, generator, dtype):
        shape = (self.n_memories, n_neurons)
        if isinstance(self.init, str):
            mean, std = _INIT_MOMENTS[self.init]
            memories = torch.normal(mean, std, size=shape, generator=generator, dtype=dtype)
            return memories.clamp_(-1, 1)
        init = np.asarray(self.init, dtype=np.float64)
        if init.shape != shape:
            raise ValueError(
                f"init has shape {init.shape}, expected (n_memories, n_features + n_classes) "
                f"= {shape}."
            )
        if not np.isfinite(init).all() or np.abs(init).max() > 1:
            raise ValueError("init must hold finite values in [-1, 1].")
        return torch.tensor(init, dtype=dtype)

    def _train(self, X, y_index, memories, generator):
        """Krotov's minibatch rule; returns the memories (numpy) and the loss per epoch."""
        device = torch.device(self.device_)
        dtype = memories.dtype
        memories = memories.to(device)
        X_all = as_tensor(X, device, dtype)
        # Targets t: +1 for the true class, -1 for the others.
        one_hot = np.eye(len(self.classes_))[y_index]
        targets = as_tensor(2 * one_hot - 1, device, dtype)
        velocity = torch.zeros_like(memories)
        lr, losses = self.lr, []
        for _ in self._epochs():
            order = torch.randperm(X.shape[0], generator=generator).to(device)
            epoch_loss = 0.0
            for rows in iter_slices(X.shape[0], self.batch_size):
                batch = order[rows]
                memories.requires_grad_(True)
                c = torch.tanh(self._label_drive(X_all[batch], memories))
                loss = ((targets[batch] - c) ** (2 * self.loss_power)).sum()
                (grad,) = torch.autograd.grad(loss, memories)
                memories = memories.detach()
                with torch.no_grad():
                    velocity = self.momentum * velocity - grad
                    step_norm = velocity.abs().amax(dim=1, keepdim=True).clamp(min=_MIN_STEP_NORM)
                    memories = (memories + lr * velocity / step_norm).clamp_(-1, 1)
                epoch_loss += float(loss.detach())
            losses.append(epoch_loss)
            lr *= self.lr_decay
        return memories.detach().cpu().numpy(), losses

    def _epochs(self):
        if self.verbose > 0:
            from tqdm.auto import trange

            return trange(self.max_epochs, desc=type(self).__name__)
        return range(self.max_epochs)

    def _warn_if_overflow(self, dtype):
        # |s xi . sigma| <= 1/T, so K (1/T)^n bounds the energy; compare in log space.
        log_bound = math.log(self.n_memories) - self.n * math.log(self.temperature)
        if log_bound > math.log(torch.finfo(dtype).max):
            warnings.warn(
                f"With n={self.n} and temperature={self.temperature}, n_memories * (1/T)^n "
                f"= exp({log_bound:.0f}) exceeds the largest {self.dtype} number: energies "
                "of well-matched states may overflow to inf. Raise the temperature or use "
                "dtype='float64'.",
                RuntimeWarning,
            )

    # ------------------------------------------------------------- forward
    def _scale(self, n_neurons):
        return 1.0 / (self.temperature * n_neurons)

    def _label_drive(self, V, memories):
        """x_a of every row of V (B, D) and class a: (B, C)."""
        n_features = V.shape[1]
        visible, labels = memories[:, :n_features], memories[:, n_features:]
        s = self._scale(memories.shape[1])
        # xi . off = xi_v . v - sum_b xi_b; on_a differs from off only in label a: +2 xi_a.
        h_off = V @ visible.T - labels.sum(dim=1)
        h_on = h_off.unsqueeze(1) + 2 * labels.T.unsqueeze(0)
        f_off = _interaction(s * h_off, self.n, self.interaction)
        # Subtract per memory before summing: the difference is small next to the terms.
        return (_interaction(s * h_on, self.n, self.interaction) - f_off.unsqueeze(1)).sum(2)

    def _map(self, fn, X):
        return map_batches(fn, X, **self._batch_kwargs())

    def _check_X(self, X):
        check_is_fitted(self)
        return self._check_range(self._validate_rows(X), warn=False)

    def _check_range(self, X, *, warn):
        outside = (np.abs(X) > 1 + _RANGE_TOL).mean() if warn else 0.0
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
            s = self._scale(memories.shape[1])
            return _interaction(s * h, self.n, self.interaction).sum(dim=1)

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
        free = self._free_neurons(mask, X.shape[0], n_neurons)
        if synchronous:
            relax = partial(self._relax_synchronous, max_iter=max_iter)
        else:
            # Drawn up front so that every chunk of probes sees the same orders.
            rng = check_random_state(self.random_state)
            orders = [rng.permutation(n_neurons) for _ in range(max_iter)]
            relax = partial(self._relax_asynchronous, orders=orders)
        # The mask travels with its rows: append it as extra columns of the batch.
        results = self._map(relax, np.hstack([X, free.astype(X.dtype)]))
        states, converged = results[:, :n_neurons], results[:, n_neurons].astype(bool)
        if not converged.all():
            warnings.warn(
                f"{int((~converged).sum())} of {len(converged)} probes still changed after "
                f"max_iter={max_iter} {'updates' if synchronous else 'sweeps'}.",
                ConvergenceWarning,
            )
        return states

    def _check_states(self, X, n_neurons):
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != n_neurons:
            raise ValueError(
                f"recall takes whole network states of {n_neurons} columns (the "
                f"{self.n_features_in_} features, then {len(self.classes_)} label neurons); "
                f"X has {X.shape[1]}."
            )
        return np.clip(X, -1, 1)

    @staticmethod
    def _free_neurons(mask, n_probes, n_neurons):
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

    def _flip_gain(self, h, xi_i, sigma_i, s):
        """Delta_i for every probe, from the overlaps h (B, K) and column xi_i (K,)."""
        base = h - sigma_i.unsqueeze(1) * xi_i
        plus = _interaction(s * (base + xi_i), self.n, self.interaction)
        minus = _interaction(s * (base - xi_i), self.n, self.interaction)
        return (plus - minus).sum(dim=1)

    def _relax_asynchronous(self, batch, state, *, orders):
        memories = state["memories_"]
        n_neurons = memories.shape[1]
        sigma, free = batch[:, :n_neurons].clone(), batch[:, n_neurons:] > 0
        s = self._scale(n_neurons)
        h = sigma @ memories.T
        changed = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
        for order in orders:
            changed[:] = False
            # Asynchronous dynamics are sequential in the neurons; the probes move together.
            for i in order.tolist():
                delta = self._flip_gain(h, memories[:, i], sigma[:, i], s)
                new = torch.where(delta > 0, 1.0, -1.0).to(sigma.dtype)
                new = torch.where(free[:, i], new, sigma[:, i])
                step = new - sigma[:, i]
                flipped = step != 0
                if flipped.any():
                    h += step.unsqueeze(1) * memories[:, i]
                    sigma[:, i] = new
                    changed |= flipped
            if not changed.any():
                break
        return torch.hstack([sigma, (~changed).to(sigma.dtype).unsqueeze(1)])

    def _relax_synchronous(self, batch, state, *, max_iter):
        memories = state["memories_"]
        n_neurons = memories.shape[1]
        sigma, free = batch[:, :n_neurons].clone(), batch[:, n_neurons:] > 0
        s = self._scale(n_neurons)
        changed = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
        for _ in range(max_iter):
            h = sigma @ memories.T
            # (B, K, N): the overlap with neuron i at +1 / -1, for every i at once.
            base = h.unsqueeze(2) - memories.unsqueeze(0) * sigma.unsqueeze(1)
            delta = (
                _interaction(s * (base + memories), self.n, self.interaction)
                - _interaction(s * (base - memories), self.n, self.interaction)
            ).sum(dim=1)
            new = torch.where(delta > 0, 1.0, -1.0).to(sigma.dtype)
            new = torch.where(free, new, sigma)
            changed = (new != sigma).any(dim=1)
            sigma = new
            if not changed.any():
                break
        return torch.hstack([sigma, (~changed).to(sigma.dtype).unsqueeze(1)])
