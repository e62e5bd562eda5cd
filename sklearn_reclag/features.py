"""Feature extraction from a trained torch network, as a scikit-learn transformer.

OOD detectors work on a network's features, usually its penultimate layer, and read the
network's own final linear layer as their ``head``. :class:`TorchFeatureExtractor` turns a
trained :class:`torch.nn.Module` (or a fitted skorch net) into the first step of a Pipeline,
and :func:`linear_head` hands that network's last :class:`torch.nn.Linear` to a detector::

    make_pipeline(TorchFeatureExtractor(net), EnergyDetector(head=linear_head(net)))
"""

import copy
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._backend import loadable_device, map_batches, resolve_device, resolve_dtype
from .base import TorchEstimatorMixin


def _as_module(module_or_net):
    """The :class:`torch.nn.Module` behind a module or a fitted skorch net."""
    if isinstance(module_or_net, torch.nn.Module):
        return module_or_net
    module = getattr(module_or_net, "module_", None)
    if isinstance(module, torch.nn.Module):
        return module
    if hasattr(module_or_net, "initialize") and hasattr(module_or_net, "module"):
        # sklearn's clone() of a skorch net makes a new, untrained net: say so, since this
        # is what happens to a net inside a GridSearchCV.
        raise ValueError(
            f"The skorch net {type(module_or_net).__name__} is not initialized, so it has no "
            "trained module_. Fit it first; note that cloning a net (clone, GridSearchCV, "
            "cross_validate) discards its weights, so pass net.module_ in that case."
        )
    raise TypeError(
        "module must be a torch.nn.Module or a fitted skorch net (with module_); got "
        f"{type(module_or_net).__name__}."
    )


def _find_layer(module, layer, *, default_type=torch.nn.Linear):
    """The submodule named ``layer``, or the last ``default_type`` one when ``layer`` is None."""
    named = dict(module.named_modules())
    if layer is None:
        candidates = [m for m in named.values() if isinstance(m, default_type)]
        if not candidates:
            raise ValueError(
                f"{type(module).__name__} has no torch.nn.{default_type.__name__} layer; "
                "name the layer to use with layer=... (a name from module.named_modules())."
            )
        return candidates[-1]
    if layer not in named or layer == "":
        names = [name for name in named if name]
        shown = ", ".join(repr(name) for name in names[:20])
        more = f", ... ({len(names)} in all)" if len(names) > 20 else ""
        raise ValueError(
            f"layer={layer!r} is not a submodule of {type(module).__name__}; "
            f"the names from module.named_modules() are: {shown}{more}."
        )
    return named[layer]


def _module_device(module):
    """The device of the module's first parameter or buffer (None if it has neither)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return None


@contextmanager
def _inference_state(module, device):
    """Run ``module`` in eval mode on ``device``, then put both back as they were.

    Each submodule's own training flag is restored (not one flag for the whole tree), so
    a user who froze some layers in eval mode finds them as they were.
    """
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    original_device = _module_device(module)
    try:
        module.eval()
        if original_device is not None and original_device != device:
            module.to(device)
        yield
    finally:
        if original_device is not None and original_device != device:
            module.to(original_device)
        for submodule, training in modes:
            submodule.training = training


@contextmanager
def _capture(layer_module, *, take_input):
    """Record what ``layer_module`` receives (``take_input``) or returns during the block.

    The hook is removed when the block ends, even after an error. If the layer runs
    several times in one forward pass, the last call wins.
    """
    captured = {}

    def save(value):
        if isinstance(value, tuple) and take_input:
            value = value[0]
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"The chosen layer {type(layer_module).__name__} produced a "
                f"{type(value).__name__}, not a tensor; choose another layer."
            )
        captured["value"] = value

    if take_input:
        handle = layer_module.register_forward_pre_hook(lambda mod, args: save(args))
    else:
        handle = layer_module.register_forward_hook(lambda mod, args, out: save(out))
    try:
        yield captured
    finally:
        handle.remove()


def _check_input_shape(input_shape, n_features):
    if input_shape is None:
        return
    if not all(isinstance(size, Integral) and size > 0 for size in input_shape):
        raise ValueError(f"input_shape must hold positive integers; got {input_shape!r}.")
    if int(np.prod(input_shape)) != n_features:
        raise ValueError(
            f"input_shape={tuple(input_shape)} holds {int(np.prod(input_shape))} values per "
            f"sample, but X has {n_features} features."
        )


class TorchFeatureExtractor(
    TorchEstimatorMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Features of a trained torch network: a layer's output for every row of X.

    By default the features are the penultimate layer, i.e. the input of the network's
    last :class:`torch.nn.Linear` (captured with a forward pre-hook), which is what OOD
    detectors expect; pair them with ``head=linear_head(module)``. Rows are fed in
    batches under :func:`torch.no_grad`, and the captured tensor is flattened to
    (n_samples, n_features_out_).

    The network is already trained, so ``fit`` only checks that it accepts rows of X.

    What happens to ``module``: during ``fit`` and ``transform`` it is put in eval mode
    and moved to the resolved device; afterwards every submodule gets its previous
    training flag back and the module returns to the device it was on. Its weights are
    never changed, and the hooks are removed. Moving a large model to a GPU on every call
    costs time: place it on the target device yourself to avoid the round trip.

    Parameters
    ----------
    module : torch.nn.Module or fitted skorch net
        The trained network. For a skorch net (e.g.
        :class:`skorch.NeuralNetClassifier`) its ``module_`` is used. Cloning a skorch
        net (as :func:`~sklearn.base.clone` and GridSearchCV do) discards its weights:
        pass ``net.module_`` when the extractor will be cloned.
    layer : str, default=None
        Name of the submodule whose *output* is the feature, as in
        ``module.named_modules()`` (e.g. ``"features.3"``). None takes the *input* of
        the last :class:`torch.nn.Linear` (the penultimate features).
    input_shape : tuple of int, default=None
        Shape of one sample as the network expects it, e.g. ``(1, 8, 8)`` for digits as
        one-channel images; each row of X is reshaped to ``(batch, *input_shape)``.
        None feeds the rows as they are, shape (batch, n_features).
    batch_size : int, default=256
        Rows fed to the network at a time; bounds the memory of ``transform``.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where the forward pass runs; 'auto' uses CUDA when available. Resolved in
        ``fit`` (``device_``).
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the input tensors; it must be that of the network's weights.
        The features are returned as float64 numpy arrays.

    Attributes
    ----------
    n_features_in_ : int
        Number of features (values per sample) seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.
    n_features_out_ : int
        Width of the extracted features.
    device_ : str
        The resolved torch device.

    See Also
    --------
    linear_head : the network's final linear layer as a detector's ``head``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn_reclag.features import TorchFeatureExtractor
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> X = np.random.RandomState(0).normal(size=(5, 4))
    >>> TorchFeatureExtractor(net, device="cpu").fit_transform(X).shape
    (5, 8)
    >>> TorchFeatureExtractor(net, layer="0", device="cpu").fit(X).n_features_out_
    8
    """

    _parameter_constraints = {
        "module": [object],
        "layer": [None, str],
        "input_shape": [None, tuple, list],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
    }

    def __init__(self, module, *, layer=None, input_shape=None, batch_size=256,
                 device="auto", dtype="float32"):
        self.module = module
        self.layer = layer
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    # The module is the user's object, not a scikit-learn estimator: nothing nested to validate.
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check that the network accepts the rows of X; nothing is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input rows, e.g. flattened images.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted extractor.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        _check_input_shape(self.input_shape, X.shape[1])
        module = _as_module(self.module)
        _find_layer(module, self.layer)
        self.device_ = str(resolve_device(self.device))
        # One forward pass on the first row: finds the output width and turns a size
        # mismatch into a clear error now rather than in transform.
        self.n_features_out_ = self._extract(X[:1]).shape[1]
        return self

    def transform(self, X):
        """The chosen layer's output for each row of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input rows.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_)
            The flattened features, float64.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._extract(X)

    def _extract(self, X):
        module = _as_module(self.module)
        layer_module = _find_layer(module, self.layer)
        device = torch.device(self.device_)
        batch_shape = (-1, *self.input_shape) if self.input_shape is not None else None

        def forward(V, state):
            if batch_shape is not None:
                V = V.reshape(batch_shape)
            try:
                module(V)
            except RuntimeError as exc:
                raise ValueError(
                    f"{type(module).__name__} cannot process input of shape "
                    f"{tuple(V.shape)} (dtype {V.dtype}): {exc}. Check n_features, "
                    "input_shape and dtype against what the network expects."
                ) from exc
            features = captured["value"].flatten(start_dim=1)
            if not torch.isfinite(features).all():
                # Finite inputs can overflow the network's dtype (1e300 in float32) or its
                # arithmetic: NaN features would pass on silently to any detector.
                raise ValueError(
                    f"{type(module).__name__} gives non-finite features (NaN or infinity) "
                    f"for finite input rows, whose values reach "
                    f"{float(V.abs().max()) if V.numel() else 0.0:.3g} in dtype "
                    f"{str(V.dtype).replace('torch.', '')}: scale the inputs as the network "
                    "was trained, or use dtype='float64'."
                )
            return features

        with _inference_state(module, device), _capture(
            layer_module, take_input=self.layer is None
        ) as captured:
            return map_batches(
                forward, X, batch_size=self.batch_size, device=device,
                dtype=resolve_dtype(self.dtype),
            )

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def __getstate__(self):
        state = super().__getstate__()
        # The module is stored without torch tensors: a copy of its structure whose
        # parameters, buffers and tensor attributes are numpy arrays (_TensorState). So
        # skops, which cannot build a tensor, can save the extractor (the network's
        # classes are then among the types to trust), and a network that lives on a GPU
        # is stored from a host copy of each tensor, with no second copy on the GPU: the
        # extractor loads on a machine without one. __setstate__ puts the tensors back,
        # on that GPU where there is one. (A skorch net serialises itself.)
        if isinstance(self.module, torch.nn.Module):
            device = _module_device(self.module)
            state["module"] = _without_tensors(self.module)
            if device is not None and device.type != "cpu":
                state["_module_device"] = str(device)
        return state

    def __setstate__(self, state):
        device = state.pop("_module_device", None)
        super().__setstate__(state)
        if isinstance(self.module, torch.nn.Module):
            # Where that GPU is missing the module stays on the CPU (transform moves it
            # to device_ anyway, and the base class has warned about device_).
            if device is None or loadable_device(device, warn=False) != device:
                device = "cpu"
            _restore_tensors(self.module, torch.device(device))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags


class _TensorState:
    """A torch tensor stored as a numpy array, with what it takes to rebuild it.

    Parameters
    ----------
    tensor : torch.Tensor or torch.nn.Parameter
        Copied to the host; a dtype that numpy lacks (bfloat16) is stored as float32 and
        cast back.
    """

    def __init__(self, tensor):
        self.is_parameter = isinstance(tensor, torch.nn.Parameter)
        self.requires_grad = bool(tensor.requires_grad)
        self.dtype = str(tensor.dtype).replace("torch.", "")
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        self.array = tensor.cpu().numpy().copy()

    def to_tensor(self, device):
        tensor = torch.from_numpy(self.array).to(device=device,
                                                 dtype=getattr(torch, self.dtype))
        if self.is_parameter:
            return torch.nn.Parameter(tensor, requires_grad=self.requires_grad)
        return tensor


def _tensor_slots(module):
    """``(namespace, name, value)`` of every tensor a module tree holds: parameters,
    buffers and plain tensor attributes of each submodule."""
    for submodule in module.modules():
        for namespace in (submodule._parameters, submodule._buffers, vars(submodule)):
            for name, value in list(namespace.items()):
                if isinstance(value, (torch.Tensor, _TensorState)):
                    yield namespace, name, value


def _without_tensors(module):
    """A copy of ``module`` whose tensors are :class:`_TensorState` (the module is left
    as it is). A tensor held in several places (tied weights) becomes one state."""
    # Seeding deepcopy's memo with the states makes it put them where the tensors were,
    # without ever copying a tensor (on a GPU, that would be a second copy there).
    memo = {}
    for _, _, tensor in _tensor_slots(module):
        if id(tensor) not in memo:
            memo[id(tensor)] = _TensorState(tensor)
    return copy.deepcopy(module, memo)


def _restore_tensors(module, device):
    """Replace, in place, the :class:`_TensorState` of a module tree by tensors on
    ``device`` (one tensor for a state held in several places)."""
    built = {}
    for namespace, name, value in _tensor_slots(module):
        if isinstance(value, _TensorState):
            if id(value) not in built:
                built[id(value)] = value.to_tensor(device)
            namespace[name] = built[id(value)]


def linear_head(module_or_net, layer=None):
    """The weights of a network's final linear layer, as a detector's ``head``.

    Parameters
    ----------
    module_or_net : torch.nn.Module or fitted skorch net
        The trained network (for a skorch net, its ``module_``).
    layer : str, default=None
        Name of a :class:`torch.nn.Linear` submodule, as in ``named_modules()``. None
        takes the last :class:`torch.nn.Linear` of the network.

    Returns
    -------
    coef : ndarray of shape (n_classes, n_features)
        The layer's weight, float64, a copy.
    intercept : ndarray of shape (n_classes,)
        Its bias (zeros when the layer has none), float64, a copy.

    See Also
    --------
    TorchFeatureExtractor : the features that this head reads (its default layer is this
        head's input).

    Examples
    --------
    >>> import torch
    >>> from sklearn_reclag.features import linear_head
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> coef, intercept = linear_head(net)
    >>> coef.shape, intercept.shape
    ((3, 8), (3,))
    """
    module = _as_module(module_or_net)
    linear = _find_layer(module, layer)
    if not isinstance(linear, torch.nn.Linear):
        raise TypeError(
            f"layer={layer!r} is a {type(linear).__name__}, not a torch.nn.Linear: only a "
            "linear layer can serve as a detector's head."
        )
    coef = linear.weight.detach().to("cpu", torch.float64).numpy().copy()
    if linear.bias is None:
        intercept = np.zeros(coef.shape[0])
    else:
        intercept = linear.bias.detach().to("cpu", torch.float64).numpy().copy()
    return coef, intercept
