"""MSP, Energy and ReAct: exact formulas, heads, devices and bad input (the contract
shared by every estimator is in test_common.py)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import check_outliers_fit_predict, check_outliers_train

from sklearn_reclag import OOD_LABEL, EnergyDetector, MSPDetector, ReActDetector
from sklearn_reclag.metrics import fpr95_scorer

DETECTORS = [MSPDetector, EnergyDetector, ReActDetector]


def _problem(rng, n=120, d=7, k=4):
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
    return X, y, (coef, intercept)


# ---------------------------------------------------------------- reference formulas
def msp_reference(X, coef, intercept):
    return softmax(X @ coef.T + intercept, axis=1).max(axis=1)


def energy_reference(X, coef, intercept, T):
    return T * logsumexp((X @ coef.T + intercept) / T, axis=1)


def react_reference(X, X_train, coef, intercept, T, percentile):
    clip = np.percentile(X_train.ravel(), percentile)
    return energy_reference(np.minimum(X, clip), coef, intercept, T)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
def test_scores_equal_numpy_reference(rng, dtype, rtol, T):
    X, y, head = _problem(rng)
    X_test = 2 * rng.normal(size=(50, X.shape[1]))
    kw = dict(head=head, device="cpu", dtype=dtype, batch_size=16)
    np.testing.assert_allclose(
        MSPDetector(**kw).fit(X, y).score_samples(X_test), msp_reference(X_test, *head),
        rtol=rtol, atol=rtol,
    )
    np.testing.assert_allclose(
        EnergyDetector(T, **kw).fit(X, y).score_samples(X_test),
        energy_reference(X_test, *head, T), rtol=rtol, atol=rtol,
    )
    react = ReActDetector(percentile=80, temperature=T, **kw).fit(X, y)
    assert react.clip_ == pytest.approx(np.percentile(X, 80))
    np.testing.assert_allclose(
        react.score_samples(X_test), react_reference(X_test, X, *head, T, 80),
        rtol=rtol, atol=rtol,
    )


@pytest.mark.parametrize("Detector", DETECTORS)
def test_default_head_is_softmax_regression_on_X_y(rng, Detector):
    X, y, _ = _problem(rng)
    reference = LogisticRegression(max_iter=1000).fit(X, y)
    det = Detector(device="cpu", dtype="float64").fit(X, y)
    np.testing.assert_allclose(det.head_coef_, reference.coef_)
    np.testing.assert_array_equal(det.classes_, reference.classes_)
    # An unfitted classifier is cloned and fitted; the one passed in stays unfitted.
    unfitted = LogisticRegression(C=0.1, max_iter=1000)
    det = Detector(head=unfitted, device="cpu").fit(X, y)
    assert not hasattr(unfitted, "coef_")
    expected = LogisticRegression(C=0.1, max_iter=1000).fit(X, y).coef_
    np.testing.assert_allclose(det.head_coef_, expected)


def test_binary_head_gives_sigmoid_probabilities(rng):
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    det = MSPDetector(head=clf, device="cpu", dtype="float64").fit(X)
    np.testing.assert_allclose(det.score_samples(X), clf.predict_proba(X).max(axis=1))
    np.testing.assert_array_equal(det.classes_, [0, 1])


@pytest.mark.parametrize("Detector", DETECTORS)
def test_decision_function_and_predict_follow_offset(rng, Detector):
    X, y, head = _problem(rng, n=400)
    det = Detector(head=head, contamination=0.1, device="cpu").fit(X, y)
    scores = det.score_samples(X)
    assert det.offset_ == pytest.approx(np.percentile(scores, 10))
    np.testing.assert_allclose(det.decision_function(X), scores - det.offset_)
    pred = det.predict(X)
    assert pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, np.where(scores > det.offset_, 1, -1))
    # contamination is the rejected fraction of the training rows.
    assert np.mean(pred == -1) == pytest.approx(0.1, abs=0.01)


# The detectors' dtype matches X's: scoring then reads views of X, never copies.


def test_string_labels_and_head_classes(rng):
    X, y, _ = _problem(rng, k=3)
    labels = np.array(["cat", "dog", "emu"])[y]
    det = EnergyDetector(device="cpu").fit(X, labels)
    np.testing.assert_array_equal(det.classes_, ["cat", "dog", "emu"])


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("Detector", DETECTORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(rng, Detector, bad):
    X, y, head = _problem(rng)
    X_bad = X.copy()
    X_bad[3, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        Detector(head=head, device="cpu").fit(X_bad, y)
    det = Detector(head=head, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="NaN|infinity"):
        det.score_samples(X_bad)


def test_wrong_number_of_features_is_rejected(rng):
    X, y, head = _problem(rng)
    det = EnergyDetector(head=head, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="features"):
        det.predict(X[:, :-1])


@pytest.mark.parametrize("fitted", [True, False])
@pytest.mark.parametrize("Head", [LinearSVC, RidgeClassifier])
def test_head_without_intercept_gets_zero_logit_offsets(rng, Head, fitted):
    """A linear classifier fitted with fit_intercept=False (scalar intercept_ 0.0), fitted
    or to be fitted, is a head whose logits are X @ coef_.T."""
    X, y, _ = _problem(rng)
    head = Head(fit_intercept=False)
    if fitted:
        head.fit(X, y)
    det = EnergyDetector(head=head, device="cpu", dtype="float64").fit(X, y)
    if fitted:
        np.testing.assert_array_equal(det.head_coef_, head.coef_)
    np.testing.assert_array_equal(det.head_intercept_, np.zeros(4))
    np.testing.assert_allclose(det.score_samples(X), logsumexp(X @ det.head_coef_.T, axis=1),
                               rtol=1e-10)


@pytest.mark.parametrize(
    "head, message",
    [
        ((np.ones((3, 5)), np.zeros(3)), r"coef has shape \(3, 5\), expected \(n_classes, 7\)"),
        ((np.ones((4, 7)), np.zeros(3)), r"intercept has shape \(3,\), expected \(4,\)"),
        ((np.ones((4, 7)),), "must be \\(coef, intercept\\)"),
    ],
)
def test_head_shape_mismatch_is_rejected(rng, head, message):
    X, y, _ = _problem(rng)
    with pytest.raises(ValueError, match=message):
        EnergyDetector(head=head, device="cpu").fit(X, y)


def test_head_of_wrong_type_is_rejected(rng):
    X, y, _ = _problem(rng)
    with pytest.raises(TypeError, match="head must be None"):
        EnergyDetector(head="logits", device="cpu").fit(X, y)


def test_labels_unknown_to_the_head_are_rejected(rng):
    X, y, head = _problem(rng, k=4)
    with pytest.raises(ValueError, match="does not predict"):
        EnergyDetector(head=LogisticRegression().fit(X[y < 3], y[y < 3]), device="cpu").fit(X, y)


def test_single_class_is_rejected(rng):
    X = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="1 class; at least 2"):
        MSPDetector(device="cpu").fit(X, np.zeros(20, dtype=int))


def test_missing_labels_without_head_is_rejected(rng):
    X, _, _ = _problem(rng)
    with pytest.raises(ValueError, match="requires y to be passed"):
        MSPDetector(device="cpu").fit(X)


def test_all_rows_ood_is_rejected(rng):
    X, _, head = _problem(rng)
    with pytest.raises(ValueError, match="no in-distribution rows"):
        EnergyDetector(head=head, device="cpu").fit(X, np.full(len(X), OOD_LABEL))


@pytest.mark.parametrize(
    "device, message", [("tpu", "Unknown device"), ("mps", "Unsupported device")]
)
def test_unknown_device_is_rejected(rng, device, message):
    X, y, head = _problem(rng)
    with pytest.raises(ValueError, match=message):
        EnergyDetector(head=head, device=device).fit(X, y)


def test_cuda_requested_but_absent_is_rejected(rng, monkeypatch):
    X, y, head = _problem(rng)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    with pytest.raises(ValueError, match="asks for CUDA"):
        EnergyDetector(head=head, device="cuda").fit(X, y)


def test_device_is_stored_as_given_and_resolved_in_fit(rng):
    X, y, head = _problem(rng)
    det = EnergyDetector(head=head)
    assert det.device == "auto"
    det.fit(X, y)
    assert det.device == "auto"
    assert det.device_ == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("Detector", DETECTORS)
def test_cuda_scores_match_cpu(rng, Detector):
    X, y, head = _problem(rng)
    cpu = Detector(head=head, device="cpu").fit(X, y).score_samples(X)
    gpu = Detector(head=head, device="cuda").fit(X, y)
    assert gpu.device_.startswith("cuda")
    np.testing.assert_allclose(gpu.score_samples(X), cpu, rtol=1e-4, atol=1e-5)
    # On a GPU, NaN and infinity are refused on the device (not by a host pass).
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        gpu.score_samples(X)


# ---------------------------------------------------------------- model selection
def test_grid_search_over_temperature_with_fpr95_scorer(digits_split):
    X_id, y_id, X_ood = digits_split
    X = np.vstack([X_id, X_ood])
    y = np.concatenate([y_id, np.full(len(X_ood), OOD_LABEL)])
    search = GridSearchCV(
        EnergyDetector(device="cpu"),
        {"temperature": [0.5, 1, 2]},
        scoring=fpr95_scorer,
        cv=KFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores <= 0) & (scores >= -1))
    assert search.best_params_["temperature"] == [0.5, 1, 2][int(np.argmax(scores))]
    # The temperature changes the ranking, so the candidates do not all tie.
    assert len(np.unique(np.round(scores, 6))) > 1


# ------------------------------------------- sklearn's outlier checks (test_common.py)
# They fit on X alone, which a baseline cannot (it needs labels to fit its head); given a
# fitted head it passes them.
class _HeadFor2Features:
    """A fitted linear classifier over the 2 features of sklearn's outlier checks."""

    coef_ = np.array([[1.0, -0.5], [-0.3, 0.8], [0.2, 0.1]])
    intercept_ = np.array([0.1, -0.2, 0.0])
    classes_ = np.array([0, 1, 2])


@pytest.mark.parametrize("Detector", DETECTORS)
def test_fitted_head_baselines_pass_outlier_checks(Detector):
    estimator = Detector(head=_HeadFor2Features(), device="cpu")
    check_outliers_train(Detector.__name__, estimator)
    check_outliers_fit_predict(Detector.__name__, estimator)
