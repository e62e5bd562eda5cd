"""The contract every public estimator keeps, tested once for all of them.

scikit-learn's estimator checks (a check that cannot apply is listed with its reason), and
the suite's own contract: fit ignores the rows labelled OOD_LABEL, nothing passed in is
modified, the scoring chunk (``batch_size``) does not change a result, a fixed
``random_state`` gives the same model, and a saved model gives the same outputs (joblib,
skops, a model fitted on CUDA loaded on a CPU, a version mismatch). The estimator-specific
behaviour (formulas against numpy, bad input, the estimators' own options) is tested in
each estimator's file.
"""

import copy
import inspect
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_reclag
from sklearn_reclag import (
    OOD_LABEL,
    ASHDetector,
    AutoOODDetector,
    DenseAssociativeMemory,
    DensePolynomialHopfield,
    EnergyDetector,
    FDBDDetector,
    GENDetector,
    HopfieldBoostingDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    LOFDetector,
    MahalanobisDetector,
    MSPDetector,
    NCIDetector,
    NNGuideDetector,
    ReActDetector,
    RecLagDetector,
    RMDSDetector,
    SCALEDetector,
    TorchFeatureExtractor,
    ViMDetector,
)
from sklearn_reclag.base import InconsistentVersionWarning

from _expected_checks import (
    FLOAT32_BATCH_CHECKS,
    HopfieldBoostingWithNoiseOutliers,
    computes_in_float32,
    expected_failed_checks,
    float64_twin,
    own_expected_failed_checks,
)


class AnyWidth(torch.nn.Module):
    """Accepts rows of any width (adaptive pooling), so sklearn's checks can feed it
    their own data sets of 1 to 20 features; its penultimate features have width 4."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool1d(4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, X):
        return self.head(torch.relu(self.pool(X.unsqueeze(1)).flatten(1)))


def _public_estimators():
    """Every public estimator class of the suite."""
    found = []
    for name in sklearn_reclag.__all__:
        obj = getattr(sklearn_reclag, name)
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator) and obj not in found:
            found.append(obj)
    return found


# One small configuration of each estimator (and of each option that changes what fit
# learns). float64 where there is a dtype, so that chunking and round trips are compared
# to float64 rounding; a few epochs, as the contract does not depend on convergence.
_FAST_DENSE = dict(n_memories=8, max_epochs=3, learning_batch_size=32)
CASES = {
    "MSPDetector": lambda: MSPDetector(),
    "EnergyDetector": lambda: EnergyDetector(),
    "ReActDetector": lambda: ReActDetector(),
    "HopfieldEnergyDetector-all": lambda: HopfieldEnergyDetector(patterns="all"),
    "HopfieldEnergyDetector-mean": lambda: HopfieldEnergyDetector(patterns="mean"),
    "RecLagDetector-sae": lambda: RecLagDetector(solver="sae", max_epochs=3, tol=None),
    "RecLagDetector-em": lambda: RecLagDetector(solver="em", max_epochs=3, tol=None),
    "MahalanobisDetector": lambda: MahalanobisDetector(),
    "KNNDetector": lambda: KNNDetector(5),
    "LOFDetector": lambda: LOFDetector(5),
    "ViMDetector": lambda: ViMDetector(),
    # The leaderboard's post-hoc detectors (ASH and SCALE warn at fit: the data has
    # negative values).
    "SCALEDetector": lambda: SCALEDetector(),
    "ASHDetector": lambda: ASHDetector(),
    "ASHDetector-b": lambda: ASHDetector(variant="b"),
    "GENDetector": lambda: GENDetector(),
    "FDBDDetector": lambda: FDBDDetector(),
    "NCIDetector": lambda: NCIDetector(),
    "RMDSDetector": lambda: RMDSDetector(),
    # The bank holds half of the rows: the threshold reads bank and non-bank rows.
    "NNGuideDetector": lambda: NNGuideDetector(5, bank_fraction=0.5),
    # fit(X, y) without outliers: the adapter passes noise rows (_expected_checks).
    "HopfieldBoostingDetector": lambda: HopfieldBoostingWithNoiseOutliers(),
    "DensePolynomialHopfield": lambda: DensePolynomialHopfield(3, **_FAST_DENSE),
    "DenseAssociativeMemory": lambda: DenseAssociativeMemory(3, **_FAST_DENSE),
    "TorchFeatureExtractor": lambda: TorchFeatureExtractor(AnyWidth().double()),
    "AutoOODDetector": lambda: AutoOODDetector(
        [KNNDetector(5, dtype="float64"), MahalanobisDetector(dtype="float64"),
         HopfieldEnergyDetector(metric="cosine", dtype="float64")], n_splits=3),
}
# The estimators that learn from the rows they are fitted on (all but the extractor).
LEARNERS = [name for name in CASES if name != "TorchFeatureExtractor"]
# The estimators that score in chunks of their own ``batch_size`` and compute in their own
# ``dtype``: all but AutoOODDetector, which scores with the candidate it chose (the
# candidates' cases test theirs).
CHUNKED = [name for name in CASES if name != "AutoOODDetector"]


def _make(name, **params):
    """A fresh estimator of the case, on the CPU, seeded, in float64 unless told."""
    estimator = CASES[name]()
    own = estimator.get_params()
    settings = {"device": "cpu", "random_state": 0, "dtype": "float64", **params}
    return estimator.set_params(**{k: v for k, v in settings.items() if k in own})


def _public_class(estimator):
    """The estimator's class, or for the tests' adapter of HopfieldBoostingDetector (which
    fits without outliers, _expected_checks) the public class it adapts."""
    cls = type(estimator)
    return HopfieldBoostingDetector if cls is HopfieldBoostingWithNoiseOutliers else cls


def test_every_public_estimator_has_a_case():
    """A new public estimator must join the contract."""
    covered = {_public_class(CASES[name]()) for name in CASES}
    assert covered == set(_public_estimators())


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def data():
    """Three Gaussian classes in [-1, 1] (the dense memories' range), 16 features, rows
    out of distribution, and test rows of both."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.6, 0.6, size=(3, 16))
    y = np.repeat([0, 1, 2], [40, 35, 45])
    X = np.clip(centres[y] + 0.2 * rng.normal(size=(len(y), 16)), -1, 1)
    X_ood = rng.uniform(-1, 1, size=(30, 16))
    X_test = np.vstack([X[::6], X_ood[:10]])
    return X, y, X_ood, X_test


_FITTED = {}


def _fitted(name, data):
    """The case fitted on the data, once per session (tests copy it before changing it)."""
    if name not in _FITTED:
        X, y, _, _ = data
        _FITTED[name] = _make(name).fit(X, y)
    return _FITTED[name]


def _outputs(estimator, X):
    """Everything a fitted estimator computes on X, by method name."""
    methods = ["score_samples", "decision_function", "predict", "predict_proba", "transform"]
    return {m: getattr(estimator, m)(X) for m in methods if hasattr(estimator, m)}


def _assert_same_outputs(a, b, X, rtol=0.0):
    out_a, out_b = _outputs(a, X), _outputs(b, X)
    assert out_a.keys() == out_b.keys()
    for method in out_a:
        if rtol:
            np.testing.assert_allclose(out_a[method], out_b[method], rtol=rtol, atol=rtol,
                                       err_msg=method)
        else:
            np.testing.assert_array_equal(out_a[method], out_b[method], err_msg=method)
    if hasattr(a, "offset_"):
        assert a.offset_ == pytest.approx(b.offset_, rel=rtol, abs=rtol)


# ------------------------------------------------------------ scikit-learn's checks
# The checks' data sets have a few dozen rows: learning_batch_size=5 lets RecLag's
# 'sae' with the paper's objective train on them (with the default 50 it trains nothing
# there). DenseAssociativeMemory refuses data outside [-1, 1]; on the bare estimator those
# checks cannot apply, and they all run on a MinMaxScaler pipeline, which is how such data
# reaches the memory.
_CHECKED = [
    MSPDetector(device="cpu"),
    EnergyDetector(device="cpu"),
    ReActDetector(device="cpu"),
    HopfieldEnergyDetector(device="cpu"),
    RecLagDetector(objective="paper", energy="lse", metric="euclidean", device="cpu",
                   max_epochs=2, learning_batch_size=5, random_state=0),
    MahalanobisDetector(device="cpu"),
    # n_neighbors=5: the checks fit on as few as 10 rows.
    KNNDetector(5, device="cpu"),
    ViMDetector(device="cpu"),
    SCALEDetector(device="cpu"),
    ASHDetector(device="cpu"),
    GENDetector(device="cpu"),
    FDBDDetector(device="cpu"),
    NCIDetector(device="cpu"),
    RMDSDetector(device="cpu"),
    LOFDetector(5, device="cpu"),
    NNGuideDetector(device="cpu", random_state=0),
    # The checks fit without outliers, which the bare estimator refuses: they all run on
    # the adapter that passes noise rows (_expected_checks.py).
    HopfieldBoostingDetector(device="cpu"),
    HopfieldBoostingWithNoiseOutliers(device="cpu"),
    DensePolynomialHopfield(n_memories=12, max_epochs=5, learning_batch_size=64,
                            device="cpu", random_state=0),
    DenseAssociativeMemory(n_memories=8, max_epochs=3, device="cpu", random_state=0),
    TorchFeatureExtractor(AnyWidth(), device="cpu"),
    # Candidates that fit on the checks' smallest data sets (KNN's k <= n - 1 with a
    # warning, Mahalanobis from 2 rows).
    AutoOODDetector([KNNDetector(5, device="cpu", dtype="float64"),
                     MahalanobisDetector(device="cpu", dtype="float64")],
                    n_splits=2, n_groups=2, random_state=0),
]

# More configurations of the same classes (options that change what fit learns), checked
# in the slow run: the default run checks one configuration of every public class.
_CHECKED_MORE = [
    HopfieldEnergyDetector(patterns="mean", routing="max", energy="full", device="cpu"),
    RecLagDetector(objective="paper", energy="lse", metric="euclidean", device="cpu",
                   max_epochs=2, learning_batch_size=5, random_state=0, dtype="float64"),
    RecLagDetector(init_norm="auto", device="cpu", max_epochs=2, random_state=0),
    RecLagDetector(solver="em", energy="full", metric="euclidean", routing="pooled",
                   device="cpu", dtype="float64", random_state=0),
    KNNDetector(5, normalize=False, device="cpu"),
    ASHDetector(variant="b", device="cpu"),
    NNGuideDetector(5, bank_fraction=0.3, device="cpu", random_state=0),
    make_pipeline(MinMaxScaler(feature_range=(-1, 1), clip=True),
                  DenseAssociativeMemory(n_memories=8, max_epochs=3, device="cpu",
                                         random_state=0)),
]



def _ignore_check_warnings(test):
    """The warnings the estimator checks' tiny data sets raise, by design."""
    for spec in [
        "ignore:Classes .* have fewer stored patterns:UserWarning",
        "ignore:There are .* stored patterns:UserWarning",
        "ignore::sklearn.exceptions.ConvergenceWarning",
        # The checks' data (blobs, random normals) mostly lies outside [-1, 1]:
        # DensePolynomialHopfield clips it with a UserWarning (documented).
        r"ignore:.*outside \[-1, 1\]:UserWarning",
    ]:
        test = pytest.mark.filterwarnings(spec)(test)
    return test


@_ignore_check_warnings
@parametrize_with_checks(_CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@_ignore_check_warnings
@parametrize_with_checks(_CHECKED_MORE, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks_more_configurations(estimator, check):
    check(estimator)


# The float32 estimators' batch-invariance checks, which cannot hold at float64 tolerance
# (see _expected_checks.FLOAT32_BATCH_CHECKS), run on their float64 twins.
_FLOAT64_TWINS = [
    float64_twin(e) for e in _CHECKED + _CHECKED_MORE
    if computes_in_float32(e) and not set(FLOAT32_BATCH_CHECKS) & set(own_expected_failed_checks(e))
]


@_ignore_check_warnings
@pytest.mark.parametrize("check_name", FLOAT32_BATCH_CHECKS)
@pytest.mark.parametrize("estimator", _FLOAT64_TWINS, ids=repr)
def test_sklearn_batch_invariance_checks_hold_in_float64(estimator, check_name):
    """In float64 an output does not depend on the rows computed with it, to sklearn's
    tolerance, on any BLAS."""
    check = getattr(estimator_checks, check_name)
    check(type(estimator).__name__, estimator)


def _float32_tolerance(outputs, n_features):
    """How far float32 outputs may move with the rows they are computed with.

    A score sums products over the features; its rounding is a few units of float32's
    epsilon per term, relative to the magnitude of the outputs (a distance computed as
    ``|z|^2 - 2 z.m + |m|^2`` rounds relative to its largest terms, which the largest
    outputs bound). 8 sqrt(n_features) eps is that bound with a margin.
    """
    scale = max(1.0, float(np.max(np.abs(outputs))))
    return 8 * np.sqrt(n_features) * np.finfo(np.float32).eps * scale


@_ignore_check_warnings
@pytest.mark.parametrize("name", CHUNKED)
def test_float32_outputs_agree_across_batches(name, data):
    """In float32 (the default) an output depends on the rows computed with it only at
    float32's precision: the whole array, each row alone, the rows reversed and chunks of
    7 agree to :func:`_float32_tolerance`; predict agrees on every row that is not within
    that tolerance of the threshold."""
    X, y, _, X_test = data
    X, X_test = X.astype(np.float32), X_test.astype(np.float32)
    estimator = _make(name, dtype="float32")
    if name == "TorchFeatureExtractor":
        estimator.set_params(module=AnyWidth())
    estimator.fit(X, y)
    whole = _outputs(estimator, X_test)
    reverse = np.arange(len(X_test))[::-1]
    alone = [_outputs(estimator, X_test[i:i + 1]) for i in range(len(X_test))]
    rearranged = {
        "one row at a time": {m: np.concatenate([a[m] for a in alone]) for m in whole},
        "reversed": {m: out[reverse] for m, out in _outputs(estimator, X_test[reverse]).items()},
        "chunks of 7": _outputs(copy.deepcopy(estimator).set_params(batch_size=7), X_test),
    }
    for how, outputs in rearranged.items():
        for method, out in whole.items():
            if method == "predict":
                continue
            tol = _float32_tolerance(out, X.shape[1])
            np.testing.assert_allclose(outputs[method], out, rtol=0, atol=tol,
                                       err_msg=f"{method}, {how}")
        if "predict" in whole:
            decided = _clear_decisions(whole, X.shape[1])
            np.testing.assert_array_equal(outputs["predict"][decided],
                                          whole["predict"][decided], err_msg=how)


def _clear_decisions(outputs, n_features):
    """The rows whose prediction float32 rounding cannot flip: a classifier's top two
    probabilities farther apart, a detector's decision farther from 0, than the
    tolerance."""
    if "predict_proba" in outputs:
        top_two = np.sort(outputs["predict_proba"], axis=1)[:, -2:]
        return top_two[:, 1] - top_two[:, 0] > _float32_tolerance(top_two, n_features)
    margin = np.abs(outputs["decision_function"])
    return margin > _float32_tolerance(outputs["score_samples"], n_features)


def test_every_public_estimator_is_checked():
    checked = {_public_class(e[-1] if hasattr(e, "steps") else e) for e in _CHECKED}
    assert checked == set(_public_estimators())


# ------------------------------------------------------------------ OOD_LABEL rows
@pytest.mark.parametrize("name", LEARNERS)
def test_fit_ignores_ood_rows(name, data):
    """Rows labelled OOD_LABEL (the OOD rows of a model-selection split) reach nothing
    that fit learns: the fit equals the fit without them, the threshold included."""
    X, y, X_ood, X_test = data
    # OOD rows in between the ID rows, which keep their order.
    at = np.sort(np.random.default_rng(1).integers(0, len(X), size=len(X_ood)))
    X_all = np.insert(X, at, X_ood, axis=0)
    y_all = np.insert(y, at, OOD_LABEL)
    with_ood = _make(name).fit(X_all, y_all)
    _assert_same_outputs(with_ood, _fitted(name, data), X_test, rtol=1e-12)


# ------------------------------------------------------------------ inputs untouched
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CASES)
def test_inputs_are_not_modified(name, dtype, data):
    """Nothing passed in is written to: X, y, the rows scored, a head given as arrays.
    With a matching dtype the estimators read views of X, so this is not trivial."""
    X, y, _, X_test = data
    X, X_test = X.astype(dtype), X_test.astype(dtype)
    estimator = _make(name, dtype=dtype)
    if name == "TorchFeatureExtractor":
        estimator.set_params(module=AnyWidth().to(getattr(torch, dtype)))
    head = None
    if "head" in estimator.get_params():
        coef = np.random.default_rng(2).normal(size=(3, X.shape[1])).astype(dtype)
        head = (coef, np.zeros(3, dtype=dtype))
        estimator.set_params(head=head)
    given = [X, y, X_test, *(head or ())]
    copies = [array.copy() for array in given]
    estimator.fit(X, y)
    outputs = _outputs(estimator, X_test)
    for original, saved in zip(given, copies, strict=True):
        np.testing.assert_array_equal(original, saved)
    for method, out in outputs.items():
        assert not np.shares_memory(out, X_test), method


# ------------------------------------------------------------- negative strides
def _strided_views(X):
    """Views numpy accepts whose strides torch cannot take as they are (issue 23 item 12):
    the rows reversed, the columns reversed, both (np.flip)."""
    return {"X[::-1]": X[::-1], "X[:, ::-1]": X[:, ::-1], "np.flip(X)": np.flip(X)}


def _fit_case(name, X, y, dtype):
    estimator = _make(name, dtype=dtype)
    if name == "TorchFeatureExtractor":
        estimator.set_params(module=AnyWidth().to(getattr(torch, dtype)))
    return estimator.fit(X, y)


# One view and dtype per estimator in the default run, the others in the slow run.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
@pytest.mark.parametrize("how", ["X[::-1]", pytest.param("X[:, ::-1]", marks=pytest.mark.slow),
                                 pytest.param("np.flip(X)", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", CASES)
def test_negatively_strided_views_give_what_their_copies_give(name, how, dtype, data):
    """fit, the scores and transform accept any array numpy accepts: a view with negative
    strides gives exactly what its contiguous copy gives (in the estimator's dtype, where
    the estimators read views of X without a copy)."""
    X, y, _, X_test = data
    X, X_test = X.astype(dtype), X_test.astype(dtype)
    view, y_view = _strided_views(X)[how], (y[::-1] if how != "X[:, ::-1]" else y)
    test_view = _strided_views(X_test)[how]
    assert any(stride < 0 for stride in view.strides)
    from_view = _fit_case(name, view, y_view, dtype)
    from_copy = _fit_case(name, np.ascontiguousarray(view), y_view.copy(), dtype)
    _assert_same_outputs(from_view, from_copy, np.ascontiguousarray(test_view))
    # Scoring a view, by the model fitted on a copy.
    for method, out in _outputs(from_copy, test_view).items():
        np.testing.assert_array_equal(
            out, _outputs(from_copy, np.ascontiguousarray(test_view))[method], err_msg=method)


@pytest.mark.parametrize("how", ["X[::-1]", "X[:, ::-1]", "np.flip(X)"])
def test_held_out_threshold_takes_negatively_strided_views(how, data):
    """HeldOutThreshold (not re-exported at the top level) as the detectors above."""
    from sklearn_reclag.calibration import HeldOutThreshold

    X, y, _, X_test = data
    view, y_view = _strided_views(X)[how], (y[::-1] if how != "X[:, ::-1]" else y)
    test_view = _strided_views(X_test)[how]
    models = [HeldOutThreshold(KNNDetector(5, device="cpu", dtype="float64"),
                               random_state=0).fit(rows, y_view)
              for rows in (view, np.ascontiguousarray(view))]
    _assert_same_outputs(*models, np.ascontiguousarray(test_view))
    np.testing.assert_array_equal(models[0].score_samples(test_view),
                                  models[0].score_samples(np.ascontiguousarray(test_view)))


# ---------------------------------------------------------------- scoring in chunks
@pytest.mark.parametrize("name", CHUNKED)
def test_outputs_do_not_depend_on_batch_size(name, data):
    """Scoring (and transform) in chunks of 7 rows give what one chunk gives."""
    _, _, _, X_test = data
    whole = _fitted(name, data)
    chunked = copy.deepcopy(whole).set_params(batch_size=7)
    _assert_same_outputs(whole, chunked, X_test, rtol=1e-10)


# ---------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", CASES)
def test_same_random_state_gives_the_same_model(name, data):
    X, y, _, X_test = data
    _assert_same_outputs(_make(name).fit(X, y), _fitted(name, data), X_test)


# The estimators whose fit draws random numbers (initial memories, minibatch order).
RANDOMISED = ["RecLagDetector-sae", "RecLagDetector-em", "DensePolynomialHopfield",
              "DenseAssociativeMemory"]


@pytest.mark.parametrize("name", RANDOMISED)
def test_another_random_state_gives_another_model(name, data):
    """random_state reaches the draws (a fit that ignored it would pass the test above)."""
    X, y, _, _ = data
    other = _make(name, random_state=1).fit(X, y)
    assert not np.array_equal(other.memories_, _fitted(name, data).memories_)


# ---------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", CASES)
def test_joblib_round_trip_gives_identical_outputs(name, data, tmp_path):
    est = _fitted(name, data)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same version, same device: no warning at all
        loaded = joblib.load(path)
    assert type(loaded) is type(est)
    assert set(loaded.get_params()) == set(est.get_params())
    _assert_same_outputs(est, loaded, data[3])


@pytest.mark.parametrize("name", LEARNERS)
def test_model_fitted_on_cuda_loads_and_scores_on_cpu(name, data, monkeypatch):
    """A pickle whose device_ is 'cuda:0' loads on a machine without CUDA: a warning, the
    CPU, and the same outputs (the fitted state is numpy, only device_ moves)."""
    est = _fitted(name, data)
    on_gpu = pickle.loads(pickle.dumps(est))
    # As if fitted on a GPU machine (AutoOODDetector: the detector it chose).
    getattr(on_gpu, "best_estimator_", on_gpu).device_ = "cuda:0"
    payload = pickle.dumps(on_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fitted on 'cuda:0'.*CPU"):
        loaded = pickle.loads(payload)
    assert getattr(loaded, "best_estimator_", loaded).device_ == "cpu"
    _assert_same_outputs(est, loaded, data[3])


@pytest.mark.parametrize("name", CASES)
def test_version_mismatch_warns_and_still_loads(name, data, monkeypatch):
    est = _fitted(name, data)
    monkeypatch.setattr(sklearn_reclag, "__version__", "0.0.0.dev0")
    payload = pickle.dumps(est)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning, match="saved with sklearn-reclag 0.0.0.dev0"):
        loaded = pickle.loads(payload)
    # The version is not left behind as an attribute of the loaded estimator.
    assert not hasattr(loaded, "_sklearn_reclag_version")
    _assert_same_outputs(est, loaded, data[3])


@pytest.mark.parametrize("name", CASES)
def test_skops_round_trip_with_trusted_types(name, data, tmp_path):
    """skops stores the state without pickle; loading asks the user to trust our types."""
    sio = pytest.importorskip("skops.io")
    est = _fitted(name, data)
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    untrusted = sio.get_untrusted_types(file=path)
    # Only the suite's own classes need trusting (and the extractor's network's).
    ours = ("sklearn_reclag.", f"{AnyWidth.__module__}.AnyWidth", "torch.nn.",
            f"{HopfieldBoostingWithNoiseOutliers.__module__}.HopfieldBoostingWithNoiseOutliers")
    assert all(t.startswith(ours) for t in untrusted), untrusted
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.load(path)
    loaded = sio.load(path, trusted=untrusted)
    _assert_same_outputs(est, loaded, data[3])


@pytest.mark.parametrize("name", CASES)
def test_saving_leaves_the_estimator_as_it_was(name, data):
    """On Python >= 3.11 scikit-learn's __getstate__ hands back the instance's own
    __dict__: writing the version into it added an attribute to the saved estimator."""
    est = _fitted(name, data)
    before = dict(vars(est))
    pickle.dumps(est)
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[name] is value for name, value in before.items())

