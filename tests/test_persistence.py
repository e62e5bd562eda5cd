"""Persistence: joblib and skops round trips, CUDA-fitted models on CPU, version warnings."""

import inspect
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

import sklearn_reclag
from sklearn_reclag.base import InconsistentVersionWarning


def _public_estimators():
    """Every public estimator of the suite that scores rows (detectors and classifiers)."""
    found = []
    for name in sklearn_reclag.__all__:
        obj = getattr(sklearn_reclag, name)
        is_estimator = inspect.isclass(obj) and issubclass(obj, BaseEstimator)
        if is_estimator and hasattr(obj, "score_samples") and obj not in found:
            found.append(obj)
    return found


ESTIMATORS = _public_estimators()


def _make(Estimator):
    params = Estimator().get_params()
    settings = {"device": "cpu", "random_state": 0}
    return Estimator(**{k: v for k, v in settings.items() if k in params})


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return X[y < 3][:240], y[y < 3][:240], X[y >= 5][:60]


def _outputs(estimator, X):
    """Everything a fitted estimator computes on X, by method name."""
    methods = ["score_samples", "decision_function", "predict", "predict_proba"]
    return {m: getattr(estimator, m)(X) for m in methods if hasattr(estimator, m)}


def _assert_same_outputs(a, b, X):
    out_a, out_b = _outputs(a, X), _outputs(b, X)
    assert out_a.keys() == out_b.keys()
    for method in out_a:
        np.testing.assert_array_equal(out_a[method], out_b[method], err_msg=method)


def _fitted(Estimator, data):
    X, y, _ = data
    return _make(Estimator).fit(X, y)


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_joblib_round_trip_gives_identical_outputs(Estimator, data, tmp_path):
    est = _fitted(Estimator, data)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same version, same device: no warning at all
        loaded = joblib.load(path)
    assert type(loaded) is Estimator
    assert loaded.get_params() == est.get_params()
    X_test = np.vstack([data[0][:50], data[2]])
    _assert_same_outputs(est, loaded, X_test)


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_model_fitted_on_cuda_loads_and_scores_on_cpu(Estimator, data, monkeypatch):
    """A pickle whose device_ is 'cuda:0' loads on a machine without CUDA: a warning, the
    CPU, and the same outputs (the fitted state is numpy, only device_ moves)."""
    if not hasattr(Estimator(), "device"):
        pytest.skip(f"{Estimator.__name__} has no device")
    est = _fitted(Estimator, data)
    on_gpu = pickle.loads(pickle.dumps(est))
    on_gpu.device_ = "cuda:0"  # as if fitted on a GPU machine
    payload = pickle.dumps(on_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fitted on 'cuda:0'.*CPU"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == "cpu"
    _assert_same_outputs(est, loaded, data[2])


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_version_mismatch_warns_and_still_loads(Estimator, data, monkeypatch):
    est = _fitted(Estimator, data)
    monkeypatch.setattr(sklearn_reclag, "__version__", "0.0.0.dev0")
    payload = pickle.dumps(est)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning, match="saved with sklearn-reclag 0.0.0.dev0"):
        loaded = pickle.loads(payload)
    # The version is not left behind as an attribute of the loaded estimator.
    assert not hasattr(loaded, "_sklearn_reclag_version")
    _assert_same_outputs(est, loaded, data[2])


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_skops_round_trip_with_trusted_types(Estimator, data, tmp_path):
    """skops stores the state without pickle; loading asks the user to trust our types."""
    sio = pytest.importorskip("skops.io")
    est = _fitted(Estimator, data)
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    untrusted = sio.get_untrusted_types(file=path)
    # Only the suite's own classes need trusting: numpy, torch-free state, sklearn parts.
    assert all(t.startswith("sklearn_reclag.") for t in untrusted), untrusted
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.load(path)
    loaded = sio.load(path, trusted=untrusted)
    _assert_same_outputs(est, loaded, data[2])


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_saving_leaves_the_estimator_as_it_was(Estimator, data):
    """On Python >= 3.11 scikit-learn's __getstate__ hands back the instance's own
    __dict__: writing the version into it added an attribute to the saved estimator."""
    est = _fitted(Estimator, data)
    before = dict(vars(est))
    pickle.dumps(est)
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[name] is value for name, value in before.items())
