"""TorchFeatureExtractor and linear_head: exact features, a module left as it was, Pipelines."""

import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier

from sklearn_reclag import EnergyDetector, features
from sklearn_reclag.datasets import DigitsCNN, train_digits_cnn
from sklearn_reclag.features import TorchFeatureExtractor, linear_head


def _mlp(generator_seed=0):
    """A small MLP whose weights come from a local generator (no global seeding)."""
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 10), torch.nn.ReLU(),
        torch.nn.Linear(10, 7), torch.nn.ReLU(),
        torch.nn.Linear(7, 3),
    )
    generator = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return net


@pytest.fixture(scope="module")
def digits_net():
    """A DigitsCNN trained briefly with skorch on digits 0-4, and those digits."""
    X, y = load_digits(return_X_y=True)
    X, y = X[y < 5], y[y < 5]
    return train_digits_cnn(X, y, max_epochs=2, device="cpu"), X, y


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


# ----------------------------------------------------------------------- exact features
def test_default_features_are_the_input_of_the_last_linear_layer(rng):
    net = _mlp()
    X = rng.normal(size=(10, 6))
    # batch_size=3 splits the 10 rows unevenly: batching must not change the result
    # (beyond float32 rounding, which depends on the matmul's batch size).
    features = TorchFeatureExtractor(net, batch_size=3, device="cpu").fit_transform(X)
    with torch.no_grad():
        expected = net[:-1](torch.tensor(X, dtype=torch.float32)).numpy()
    assert features.shape == (10, 7)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)


def test_named_layer_output_with_input_shape(rng):
    cnn = DigitsCNN(n_classes=5, width=16)
    X = rng.uniform(0, 16, size=(9, 64))
    extractor = TorchFeatureExtractor(cnn, layer="features.2", input_shape=(1, 8, 8),
                                      batch_size=4, device="cpu").fit(X)
    with torch.no_grad():
        images = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
        expected = cnn.features[:3](images).flatten(start_dim=1).numpy()
    # features.2 is the max-pool: 32 channels of 4x4, flattened per sample.
    assert extractor.n_features_out_ == 32 * 4 * 4
    np.testing.assert_allclose(extractor.transform(X), expected, rtol=1e-6, atol=1e-6)


def test_float64_network(rng):
    net = _mlp().double()
    X = rng.normal(size=(5, 6))
    features = TorchFeatureExtractor(net, dtype="float64", device="cpu").fit_transform(X)
    with torch.no_grad():
        expected = net[:-1](torch.tensor(X)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-12)


def test_feature_names_out_are_numbered(rng):
    extractor = TorchFeatureExtractor(_mlp(), device="cpu").fit(rng.normal(size=(4, 6)))
    names = extractor.get_feature_names_out()
    assert list(names) == [f"torchfeatureextractor{i}" for i in range(7)]


# ---------------------------------------------------------- the module is left untouched
def test_module_weights_modes_and_hooks_are_left_as_they_were(rng):
    net = _mlp()
    net.train()
    net[1].eval()  # a submodule frozen in eval mode must stay so (per-module restore)
    modes = [m.training for m in net.modules()]
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    X = rng.normal(size=(8, 6))
    X_copy = X.copy()
    extractor = TorchFeatureExtractor(net, device="cpu").fit(X)
    extractor.transform(X)
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert _hooks(net) == 0
    assert all(p.device.type == "cpu" for p in net.parameters())
    np.testing.assert_array_equal(X, X_copy)


def test_features_are_computed_in_eval_mode(rng):
    """Dropout is off during extraction, whatever mode the module was left in."""
    net = torch.nn.Sequential(torch.nn.Linear(6, 50), torch.nn.Dropout(0.5),
                              torch.nn.Linear(50, 2)).train()
    X = rng.normal(size=(20, 6))
    features = TorchFeatureExtractor(net, device="cpu").fit_transform(X)
    with torch.no_grad():
        expected = net[0](torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
    assert net.training


def test_hook_is_removed_after_an_error():
    net = _mlp()
    with pytest.raises(ValueError, match="cannot process input of shape"):
        TorchFeatureExtractor(net, device="cpu").fit(np.ones((3, 5)))
    assert _hooks(net) == 0


# ------------------------------------------------------------------- skorch and Pipeline
def test_pipeline_energy_equals_energy_on_manual_features(digits_net):
    net, X, y = digits_net
    pipe = make_pipeline(
        TorchFeatureExtractor(net, input_shape=(1, 8, 8), device="cpu"),
        EnergyDetector(head=linear_head(net), device="cpu"),
    ).fit(X, y)
    with torch.no_grad():
        images = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8)
        manual = net.module_.features(images / 16).numpy()
        logits = net.module_(images).numpy()
    direct = EnergyDetector(head=linear_head(net), device="cpu").fit(manual, y)
    np.testing.assert_allclose(pipe.score_samples(X), direct.score_samples(manual),
                               rtol=1e-5)
    # With the network's own head, the energy is the logsumexp of the network's logits.
    np.testing.assert_allclose(pipe.score_samples(X), logsumexp(logits, axis=1), rtol=1e-5)


def test_skorch_net_and_its_module_give_the_same_features(digits_net):
    net, X, _ = digits_net
    from_net = TorchFeatureExtractor(net, input_shape=(1, 8, 8), device="cpu")
    from_module = TorchFeatureExtractor(net.module_, input_shape=(1, 8, 8), device="cpu")
    np.testing.assert_array_equal(from_net.fit_transform(X), from_module.fit_transform(X))
    for head_part, module_part in zip(linear_head(net), linear_head(net.module_)):
        np.testing.assert_array_equal(head_part, module_part)


def test_unfitted_or_cloned_skorch_net_is_refused(digits_net):
    net, X, _ = digits_net
    for untrained in (NeuralNetClassifier(DigitsCNN), clone(net)):
        with pytest.raises(ValueError, match="not initialized.*net.module_"):
            TorchFeatureExtractor(untrained, input_shape=(1, 8, 8)).fit(X)
        with pytest.raises(ValueError, match="not initialized"):
            linear_head(untrained)


# --------------------------------------------------------------------------- linear_head
def test_linear_head_copies_the_last_linear_layer():
    net = _mlp()
    coef, intercept = linear_head(net)
    np.testing.assert_array_equal(coef, net[4].weight.detach().numpy())
    np.testing.assert_array_equal(intercept, net[4].bias.detach().numpy())
    assert coef.dtype == intercept.dtype == np.float64
    coef[:] = 0  # a copy: the network must not change
    assert net[4].weight.abs().sum() > 0


def test_linear_head_of_a_named_layer_and_without_bias():
    net = torch.nn.Sequential(torch.nn.Linear(4, 5, bias=False), torch.nn.Linear(5, 2))
    coef, intercept = linear_head(net, layer="0")
    assert coef.shape == (5, 4)
    np.testing.assert_array_equal(intercept, np.zeros(5))


def test_linear_head_refuses_a_layer_that_is_not_linear():
    with pytest.raises(TypeError, match="not a torch.nn.Linear"):
        linear_head(_mlp(), layer="1")
    with pytest.raises(ValueError, match="has no torch.nn.Linear"):
        linear_head(torch.nn.Sequential(torch.nn.ReLU()))


# ---------------------------------------------------------------------------- bad input
def test_unknown_layer_name_lists_the_known_names(rng):
    with pytest.raises(ValueError, match=r"layer='fc' is not a submodule.*'0', '1'"):
        TorchFeatureExtractor(_mlp(), layer="fc", device="cpu").fit(rng.normal(size=(3, 6)))


def test_wrong_input_sizes_are_clear_errors(rng):
    extractor = TorchFeatureExtractor(_mlp(), device="cpu")
    with pytest.raises(ValueError, match=r"cannot process input of shape \(1, 5\)"):
        extractor.fit(rng.normal(size=(3, 5)))
    with pytest.raises(ValueError, match=r"input_shape=\(1, 8, 8\) holds 64 values"):
        TorchFeatureExtractor(DigitsCNN(), input_shape=(1, 8, 8)).fit(np.ones((2, 63)))
    extractor.fit(rng.normal(size=(3, 6)))
    with pytest.raises(ValueError, match="X has 5 features"):
        extractor.transform(rng.normal(size=(3, 5)))


def test_dtype_mismatch_with_the_network_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"\(dtype torch.float64\).*same dtype"):
        TorchFeatureExtractor(_mlp(), dtype="float64", device="cpu").fit(
            rng.normal(size=(3, 6)))


def test_module_of_a_wrong_type_is_refused():
    with pytest.raises(TypeError, match="torch.nn.Module or a fitted skorch net"):
        TorchFeatureExtractor("resnet").fit(np.ones((2, 3)))


# ------------------------------------------------------------------------------- devices
def test_pickle_of_a_gpu_network_holds_a_cpu_copy(rng, monkeypatch):
    """An extractor whose network lives on a GPU pickles a CPU copy of it and its device,
    so it loads on a machine without one (device_ falls back to the CPU with a warning)
    and extracts the same features. The GPU is simulated: the module's device is
    reported as cuda:0."""
    net = _mlp()
    X = rng.normal(size=(10, 6))
    extractor = TorchFeatureExtractor(net, device="cpu").fit(X)
    expected = extractor.transform(X)
    extractor.device_ = "cuda:0"
    monkeypatch.setattr(features, "_module_device", lambda module: torch.device("cuda:0"))
    state = extractor.__getstate__()
    assert state["module"] is not net and state["_module_device"] == "cuda:0"
    payload = pickle.dumps(extractor)
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fitted on 'cuda:0'.*CPU"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())
    np.testing.assert_array_equal(loaded.transform(X), expected)


class _Frozen(torch.nn.Module):
    """Tied weights, a frozen parameter, a buffer, a plain tensor attribute, bfloat16."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(6, 6, bias=False)
        self.out = torch.nn.Linear(6, 6, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.scale = torch.nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.norm = torch.nn.BatchNorm1d(6).eval()
        self.norm.running_mean += 0.5
        self.shift = torch.arange(6.0)
        self.low = torch.nn.Parameter(torch.ones(6, dtype=torch.bfloat16))

    def forward(self, X):
        h = self.norm(self.embed(X) * self.scale + self.shift + self.low.float())
        return self.out(torch.relu(h))


def _check_same_network(loaded, original):
    assert loaded.out.weight is loaded.embed.weight
    for (name, a), (_, b) in zip(loaded.named_parameters(), original.named_parameters()):
        assert a.dtype == b.dtype and a.requires_grad == b.requires_grad, name
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(loaded.norm.running_mean, original.norm.running_mean)
    torch.testing.assert_close(loaded.shift, original.shift)


@pytest.mark.parametrize("how", ["pickle", "skops"])
def test_saved_extractor_loads_with_its_network_intact(rng, tmp_path, how):
    """skops cannot build a torch tensor ('Cannot directly construct TensorBase'): the
    extractor stores its network's tensors as numpy arrays, and the network's classes are
    what the user trusts."""
    net = _Frozen()
    X = rng.normal(size=(10, 6))
    extractor = TorchFeatureExtractor(net, device="cpu").fit(X)
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(extractor))
    else:
        sio = pytest.importorskip("skops.io")
        path = tmp_path / "extractor.skops"
        sio.dump(extractor, path)
        untrusted = sio.get_untrusted_types(file=path)
        assert all(t.startswith(("sklearn_reclag.", "torch.nn.modules.", __name__))
                   for t in untrusted), untrusted
        loaded = sio.load(path, trusted=untrusted)
    _check_same_network(loaded.module, net)
    np.testing.assert_array_equal(loaded.transform(X), extractor.transform(X))
    # Saving left the extractor and its network as they were.
    assert extractor.module is net and isinstance(net.embed.weight, torch.nn.Parameter)


def test_skops_saves_a_pipeline_of_extractor_and_detector(digits_net, tmp_path):
    sio = pytest.importorskip("skops.io")
    net, X, y = digits_net
    pipe = make_pipeline(
        TorchFeatureExtractor(net.module_, input_shape=(1, 8, 8), device="cpu"),
        EnergyDetector(head=linear_head(net), device="cpu"),
    ).fit(X, y)
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    loaded = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    np.testing.assert_array_equal(loaded.score_samples(X), pipe.score_samples(X))


@pytest.mark.cuda
def test_pickle_of_a_network_on_cuda_loads_back_on_cuda(rng):
    net = _mlp().to("cuda")
    X = rng.normal(size=(10, 6))
    extractor = TorchFeatureExtractor(net, device="cuda").fit(X)
    loaded = pickle.loads(pickle.dumps(extractor))
    assert all(p.device.type == "cuda" for p in loaded.module.parameters())
    np.testing.assert_allclose(loaded.transform(X), extractor.transform(X), rtol=1e-6)


@pytest.mark.cuda
def test_cuda_features_equal_cpu_features_and_module_returns_to_cpu(rng):
    net = _mlp()
    X = rng.normal(size=(10, 6))
    cpu = TorchFeatureExtractor(net, device="cpu").fit_transform(X)
    cuda = TorchFeatureExtractor(net, device="cuda").fit_transform(X)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-4, atol=1e-5)
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_finite_inputs_that_overflow_the_network_are_a_clear_error(rng):
    # 1e300 is finite in float64 and infinite once cast to float32: the features would be
    # NaN (issue 23, item 21).
    extractor = TorchFeatureExtractor(_mlp(), device="cpu").fit(rng.normal(size=(5, 6)))
    X = rng.normal(size=(4, 6))
    X[2, 1] = 1e300
    with pytest.raises(ValueError, match="non-finite features .* scale the inputs"):
        extractor.transform(X)
    assert np.isfinite(extractor.transform(X[:2])).all()
