import matplotlib
import numpy as np
import pytest
import torch

# Headless plotting for every test that draws.
matplotlib.use("Agg")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip cleanly on machines without a GPU.

    The suite's one way to skip a GPU test: ``@pytest.mark.cuda`` alone (a parametrised
    case: ``pytest.param(..., marks=pytest.mark.cuda)``), no ``skipif`` of its own.
    """
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def product_sizes(monkeypatch):
    """Entries of every result of torch.mm, torch.addmm and torch.baddbmm during the
    test, in a list the test may clear: the sizes of the logits blocks that scoring
    builds."""
    sizes = []
    for name in ("mm", "addmm", "baddbmm"):
        real = getattr(torch, name)

        def spy(*args, _real=real, **kwargs):
            out = _real(*args, **kwargs)
            sizes.append(out.numel())
            return out

        monkeypatch.setattr(torch, name, spy)
    return sizes


@pytest.fixture(scope="session")
def digits_split():
    """Digits pixels in [0, 1]: classes 0-4 in distribution, 5-9 out of distribution."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return X[y < 5], y[y < 5], X[y >= 5]
