"""DensePolynomialHopfield: the spec's formulas against numpy, recall dynamics, McAlister's
scaling, determinism, model selection and bad input (the contract shared by every
estimator, scikit-learn's checks included, is in test_common.py).

The reference functions below build every network state explicitly (the input with label
neurons on or off, the state with neuron i at +1 or -1) and evaluate the energy directly,
independently of the cheap overlap updates the estimator uses.
"""

import warnings

import numpy as np
import pytest
from scipy.special import factorial2
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from sklearn_reclag import OOD_LABEL, DensePolynomialHopfield, capacity
from sklearn_reclag.metrics import fpr95_scorer

FAST = dict(n_memories=12, max_epochs=5, learning_batch_size=64, device="cpu", random_state=0)


# ---------------------------------------------------------------- reference formulas
def F_ref(x, n, kind):
    if kind == "polynomial":
        return x**n
    if kind == "rectified":
        return np.where(x >= 0, x, 0.0) ** n
    return np.where(x > 0, x**n, 0.01 * x)


def label_states(v, n_classes):
    """The 'off' state and the 'on_a' states of one input v (spec: Classification)."""
    off = np.concatenate([v, -np.ones(n_classes)])
    on = np.tile(off, (n_classes, 1))
    on[np.arange(n_classes), len(v) + np.arange(n_classes)] = 1.0
    return off, on


def drive_ref(X, memories, n, T, kind):
    """x_a = sum_mu [F(s xi.on_a) - F(s xi.off)], s = (1/T)/N, N = all neurons."""
    n_classes = memories.shape[1] - X.shape[1]
    s = 1.0 / (T * memories.shape[1])
    out = np.empty((len(X), n_classes))
    for row, v in enumerate(X):
        off, on = label_states(v, n_classes)
        f_off = F_ref(s * memories @ off, n, kind).sum()
        out[row] = [F_ref(s * memories @ state, n, kind).sum() - f_off for state in on]
    return out


def neg_energy_ref(states, memories, n, T, kind):
    """-E(sigma) = sum_mu F(s xi_mu . sigma)."""
    s = 1.0 / (T * memories.shape[1])
    return F_ref(s * states @ memories.T, n, kind).sum(axis=1)


def flip_gain_ref(sigma, memories, n, T, kind):
    """Delta_i = -E(sigma^(i+)) + E(sigma^(i-)) for every neuron i of one state."""
    gains = np.empty(len(sigma))
    for i in range(len(sigma)):
        plus, minus = sigma.copy(), sigma.copy()
        plus[i], minus[i] = 1.0, -1.0
        gains[i] = (neg_energy_ref(plus[None], memories, n, T, kind)
                    - neg_energy_ref(minus[None], memories, n, T, kind))[0]
    return gains


def _blobs(rng, n_rows=90, n_features=6, n_classes=3):
    centers = rng.uniform(-0.8, 0.8, size=(n_classes, n_features))
    y = np.arange(n_rows) % n_classes
    X = np.clip(centers[y] + 0.15 * rng.normal(size=(n_rows, n_features)), -1, 1)
    return X, y


@pytest.fixture(scope="module")
def digits():
    """Digits scaled to [-1, 1] on the training rows, a 70/30 stratified split."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    scaler = MinMaxScaler(feature_range=(-1, 1), clip=True).fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


# ------------------------------------------------------------------- forward pass
@pytest.mark.parametrize("kind", ["rectified", "polynomial", "leaky"])
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-4), ("float64", 1e-10)])
def test_forward_pass_equals_numpy_formula(rng, kind, dtype, rtol):
    X, y = _blobs(rng)
    n, T = 3, 0.4
    model = DensePolynomialHopfield(n, temperature=T, interaction=kind, dtype=dtype,
                                    **FAST).fit(X, y)
    M = model.memories_.astype(np.float64)
    X_test = rng.uniform(-1, 1, size=(25, X.shape[1]))
    drive = drive_ref(X_test, M, n, T, kind)
    c = np.tanh(drive)
    # decision_function: log((1 + c_a) / 2), evaluated without cancellation in numpy.
    log_odds = -np.logaddexp(0, -2 * drive)
    np.testing.assert_allclose(model.decision_function(X_test), log_odds, rtol=rtol,
                               atol=rtol * np.abs(log_odds).max())

    # predict: argmax_a c_a; predict_proba: (1 + c_a) / sum_b (1 + c_b), c = tanh(x).
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[drive.argmax(1)])
    np.testing.assert_allclose(model.predict_proba(X_test),
                               (1 + c) / (1 + c).sum(1, keepdims=True), rtol=10 * rtol,
                               atol=1e-6)

    # score_samples: -E at the input with the predicted label on.
    states = np.array([label_states(v, 3)[1][a] for v, a in zip(X_test, drive.argmax(1))])
    expected = neg_energy_ref(states, M, n, T, kind)
    np.testing.assert_allclose(model.score_samples(X_test), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


def test_predict_proba_stays_defined_when_every_label_saturates(rng):
    """All c_a round to -1 in float32 when the drives are very negative: the stable form
    still gives a distribution that ranks like the drives."""
    X, y = _blobs(rng)
    model = DensePolynomialHopfield(2, temperature=0.01, **FAST).fit(X, y)
    drive = drive_ref(X, model.memories_.astype(np.float64), 2, 0.01, "rectified")
    saturated = (np.tanh(drive.astype(np.float32)) == -1).all(axis=1)
    assert saturated.any()
    proba = model.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba[saturated].argmax(1), drive[saturated].argmax(1))


def test_binary_decision_function_is_the_log_odds_difference(rng):
    X, y = _blobs(rng, n_classes=2)
    model = DensePolynomialHopfield(3, dtype="float64", **FAST).fit(X, y)
    drive = drive_ref(X, model.memories_, 3, model.temperature, "rectified")
    log_odds = -np.logaddexp(0, -2 * drive)
    decision = model.decision_function(X)
    np.testing.assert_allclose(decision, log_odds[:, 1] - log_odds[:, 0], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(model.predict(X), model.classes_[(decision > 0) * 1])


# ------------------------------------------------------------------ McAlister scaling
def krotov_unscaled_drive(X, memories, n, T_krotov, kind, dtype):
    """Krotov's form: beta_K * sum_mu [F(xi.on_a) - F(xi.off)], beta_K = 1 / T_K^n."""
    n_classes = memories.shape[1] - X.shape[1]
    M = memories.astype(dtype)
    out = np.empty((len(X), n_classes), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for row, v in enumerate(X.astype(dtype)):
            off, on = label_states(v, n_classes)
            f_off = F_ref(M @ off.astype(dtype), n, kind)
            for a, state in enumerate(on.astype(dtype)):
                diff = (F_ref(M @ state, n, kind) - f_off).sum()
                out[row, a] = diff / dtype(T_krotov) ** n
    return out


@pytest.mark.parametrize("kind", ["polynomial", "rectified"])
def test_scaled_model_equals_krotov_model_at_temperature_N_T(rng, kind):
    """F homogeneous of degree n: F(x / (N T)) = F(x) / (N T)^n, Krotov's T_K = N T."""
    X, y = _blobs(rng)
    n, T = 4, 0.3
    model = DensePolynomialHopfield(n, temperature=T, interaction=kind, dtype="float64",
                                    **FAST).fit(X, y)
    N = model.memories_.shape[1]
    unscaled = krotov_unscaled_drive(X, model.memories_, n, N * T, kind, np.float64)
    scaled = drive_ref(X, model.memories_, n, T, kind)
    np.testing.assert_allclose(scaled, unscaled, rtol=1e-9, atol=1e-12 * np.abs(unscaled).max())
    np.testing.assert_array_equal(model.predict(X), model.classes_[unscaled.argmax(1)])


def test_krotov_form_overflows_float32_at_n30_where_the_scaled_one_does_not(digits):
    X_train, X_test, y_train, y_test = digits
    model = DensePolynomialHopfield(30, max_epochs=40, device="cpu", random_state=0)
    model.fit(X_train, y_train)
    N = model.memories_.shape[1]
    unscaled = krotov_unscaled_drive(X_test[:50], model.memories_, 30, N * model.temperature,
                                     "rectified", np.float32)
    assert not np.isfinite(unscaled).all()  # xi.sigma up to N = 74: 74^30 ~ 1e56 > 3.4e38
    for output in (model.decision_function(X_test), model.predict_proba(X_test),
                   model.score_samples(X_test)):
        assert np.isfinite(output).all()
    assert model.score(X_test, y_test) > 0.5  # far above chance (0.1) after 40 epochs


def test_warns_where_even_the_scaled_energy_overflows(rng):
    X, y = _blobs(rng)
    # K (1/T)^n = 12 * 100^30 = 1e61 > float32's 3.4e38, but < float64's 1.8e308.
    with pytest.warns(RuntimeWarning, match="exceeds the largest float32"):
        DensePolynomialHopfield(30, temperature=0.01, **{**FAST, "max_epochs": 0}).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float64 holds 1e61: no warning
        model = DensePolynomialHopfield(30, temperature=0.01, dtype="float64",
                                        **{**FAST, "max_epochs": 0}).fit(X, y)
    # ... and computes it: the energies and log-odds of the formulas, in numpy.
    drive = drive_ref(X, model.memories_, 30, 0.01, "rectified")
    states = np.array([label_states(v, 3)[1][a] for v, a in zip(X, drive.argmax(1))])
    np.testing.assert_allclose(model.score_samples(X),
                               neg_energy_ref(states, model.memories_, 30, 0.01, "rectified"),
                               rtol=1e-9)
    np.testing.assert_allclose(model.decision_function(X), -np.logaddexp(0, -2 * drive),
                               rtol=1e-9)
    np.testing.assert_array_equal(model.predict(X), model.classes_[drive.argmax(1)])


def test_a_fit_never_ends_with_non_finite_memories(rng):
    """temperature=1e-30 overflows every energy: fit raises a clear error instead of
    ending with NaN memories, and leaves the estimator unfitted."""
    X, y = _blobs(rng)
    model = DensePolynomialHopfield(3, temperature=1e-30, **FAST)
    with pytest.warns(RuntimeWarning, match="exceeds the largest float32"):
        with pytest.raises(ValueError, match="overflowed float32 in epoch 1 of fit"):
            model.fit(X, y)
    with pytest.raises(NotFittedError):
        model.predict(X)


# -------------------------------------------------------------------------- recall
def _stored_patterns(rng, n_patterns=8, n_visible=60, n_classes=2):
    """A network storing random bipolar patterns as its memories (max_epochs=0)."""
    patterns = rng.choice([-1.0, 1.0], size=(n_patterns, n_visible + n_classes))
    model = DensePolynomialHopfield(
        3, temperature=1.0, n_memories=n_patterns, init=patterns, max_epochs=0,
        device="cpu", random_state=0,
    ).fit(patterns[:, :n_visible], np.arange(n_patterns) % n_classes)
    return model, patterns


@pytest.mark.parametrize("synchronous", [False, True])
def test_recall_restores_a_corrupted_pattern_under_capacity(rng, synchronous):
    model, patterns = _stored_patterns(rng)
    assert len(patterns) < capacity(patterns.shape[1], 3)
    probes = patterns.copy()
    flip = rng.random(probes.shape) < 0.15
    probes[flip] *= -1
    recalled = model.recall(probes, synchronous=synchronous)
    np.testing.assert_array_equal(recalled, patterns)
    np.testing.assert_array_equal(probes[flip], -patterns[flip])  # input not modified


def test_recall_ends_in_a_fixed_point_of_the_sign_rule_and_lowers_the_energy(rng):
    """Every free neuron equals sign(Delta_i) (ties -> -1), Delta_i from explicit states."""
    X, y = _blobs(rng, n_features=10)
    model = DensePolynomialHopfield(3, temperature=0.5, **FAST).fit(X, y)
    probes = rng.uniform(-1, 1, size=(6, model.memories_.shape[1]))
    recalled = model.recall(probes, max_iter=50)
    args = (model.memories_.astype(np.float64), 3, 0.5, "rectified")
    for state in recalled:
        gains = flip_gain_ref(state, *args)
        decided = np.abs(gains) > 1e-5 * np.abs(gains).max()  # float32 ties are undecided
        np.testing.assert_array_equal(state[decided], np.where(gains > 0, 1.0, -1.0)[decided])
    assert np.all(neg_energy_ref(recalled, *args) >= neg_energy_ref(np.sign(probes), *args)
                  - 1e-4)


def test_recall_keeps_clamped_neurons_and_completes_the_rest(rng):
    model, patterns = _stored_patterns(rng)
    probes = patterns.copy()
    hidden = np.zeros(patterns.shape[1], dtype=bool)
    hidden[40:] = True  # the last 20 visible neurons and the labels are unknown
    probes[:, hidden] = rng.choice([-1.0, 1.0], size=(len(probes), hidden.sum()))
    recalled = model.recall(probes, mask=~hidden)
    np.testing.assert_array_equal(recalled, patterns)

    # Per-probe masks: a clamped neuron keeps even a wrong value.
    per_probe = np.zeros(patterns.shape, dtype=bool)
    per_probe[:, 0] = True
    wrong = patterns.copy()
    wrong[:, 0] *= -1
    np.testing.assert_array_equal(model.recall(wrong, mask=per_probe)[:, 0], wrong[:, 0])


def test_recall_warns_when_the_sweep_cap_is_hit(rng):
    model, patterns = _stored_patterns(rng)
    probes = -patterns  # far from every memory: one sweep does not settle it
    with pytest.warns(ConvergenceWarning, match="still changed"):
        model.recall(probes[:, ::-1].copy(), max_iter=1)


# ---------------------------------------------------------------------------- capacity
@pytest.mark.parametrize("N, n", [(100, 2), (100, 3), (794, 20), (50, 5)])
def test_capacity_is_krotov_hopfield_eq6(N, n):
    expected = N ** (n - 1) / (2 * factorial2(2 * n - 3, exact=True) * np.log(N))
    assert capacity(N, n) == pytest.approx(expected, rel=1e-12)


def test_capacity_for_huge_sizes_is_a_number_not_an_overflow_error():
    """N^(n-1) overflowed a float (a bare OverflowError) where the ratio does not; it
    is computed in logarithms: 0 where the ratio underflows, inf where it overflows."""
    assert capacity(100, 10**5) == 0.0
    assert capacity(10**300, 5) == np.inf
    assert capacity(2000, 200) == pytest.approx(
        np.exp(199 * np.log(2000) - np.log(2) - np.sum(np.log(np.arange(397, 0, -2)))
               - np.log(np.log(2000))), rel=1e-9)


# --------------------------------------------------------------------- determinism
def test_same_random_state_gives_the_same_model_and_recall(rng):
    X, y = _blobs(rng)
    a = DensePolynomialHopfield(3, **FAST).fit(X, y)
    b = DensePolynomialHopfield(3, **FAST).fit(X, y)
    np.testing.assert_array_equal(a.memories_, b.memories_)
    probes = rng.uniform(-1, 1, size=(5, a.memories_.shape[1]))
    np.testing.assert_array_equal(a.recall(probes), b.recall(probes))
    c = DensePolynomialHopfield(3, **{**FAST, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.memories_, c.memories_)


def test_batch_size_is_the_scoring_chunk_and_learning_batch_size_the_minibatch(rng):
    X, y = _blobs(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning once both are explicit
        a = DensePolynomialHopfield(3, **FAST).fit(X, y)
        b = DensePolynomialHopfield(3, batch_size=7, **FAST).fit(X, y)
    np.testing.assert_array_equal(a.memories_, b.memories_)
    other = DensePolynomialHopfield(3, **{**FAST, "learning_batch_size": 16}).fit(X, y)
    assert not np.array_equal(a.memories_, other.memories_)


def test_batch_size_alone_still_sets_the_minibatch_with_a_future_warning(rng):
    """The old meaning is deprecated for one release: batch_size without
    learning_batch_size still sets the training minibatch, and says so."""
    X, y = _blobs(rng)
    params = {k: v for k, v in FAST.items() if k != "learning_batch_size"}
    with pytest.warns(FutureWarning, match="batch_size sets the training minibatch only"):
        old = DensePolynomialHopfield(3, batch_size=16, **params).fit(X, y)
    new = DensePolynomialHopfield(3, learning_batch_size=16, **params).fit(X, y)
    np.testing.assert_array_equal(old.memories_, new.memories_)


def test_verbose_shows_a_progress_bar(rng, capsys):
    X, y = _blobs(rng)
    DensePolynomialHopfield(3, verbose=1, **FAST).fit(X, y)
    assert "DensePolynomialHopfield" in capsys.readouterr().err


# ------------------------------------------------------------------ digits accuracy
@pytest.mark.slow
def test_defaults_reach_95_percent_on_digits(digits):
    """The issue's bar: 70/30 stratified split, features scaled to [-1, 1]."""
    X_train, X_test, y_train, y_test = digits
    model = DensePolynomialHopfield(device="cpu", random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.95


# ---------------------------------------------------------------- model selection
def _digits_with_ood_rows():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    id_rows = np.flatnonzero(y < 4)
    ood_rows = rng.choice(np.flatnonzero(y >= 7), size=150, replace=False)
    y_all = np.concatenate([y[id_rows], np.full(len(ood_rows), OOD_LABEL)])
    return np.vstack([X[id_rows], X[ood_rows]]), y_all


def _pipeline():
    return Pipeline([
        ("scale", MinMaxScaler(feature_range=(-1, 1), clip=True)),
        ("dph", DensePolynomialHopfield(n_memories=20, max_epochs=15, learning_batch_size=200,
                                        device="cpu", random_state=0)),
    ])


@pytest.mark.slow
@pytest.mark.parametrize("scoring", ["accuracy", fpr95_scorer])
def test_grid_search_over_n_and_temperature(scoring):
    """OOD rows (label -1) are ignored by fit; accuracy is computed on the ID rows for the
    default scorer, and the FPR95 scorer compares ID and OOD rows of each held-out fold."""
    X, y = _digits_with_ood_rows()
    grid = {"dph__n": [2, 3, 4], "dph__temperature": [0.3, 1.0]}
    X_id, y_id = X[y != OOD_LABEL], y[y != OOD_LABEL]
    data = (X_id, y_id) if scoring == "accuracy" else (X, y)
    search = GridSearchCV(_pipeline(), grid, cv=StratifiedKFold(3), scoring=scoring)
    search.fit(*data)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and len(scores) == 6
    if scoring == "accuracy":
        assert scores.max() > 0.9
    else:
        assert -scores.min() <= 1.0 and search.best_score_ > -0.9
    np.testing.assert_array_equal(search.best_estimator_[-1].classes_, [0, 1, 2, 3])


def test_fit_ignores_ood_rows_and_score_skips_them(rng):
    X, y = _blobs(rng)
    X_ood = rng.uniform(-1, 1, size=(20, X.shape[1]))
    y_mixed = np.concatenate([y, np.full(20, OOD_LABEL)])
    X_mixed = np.vstack([X, X_ood])
    a = DensePolynomialHopfield(3, **FAST).fit(X, y)
    b = DensePolynomialHopfield(3, **FAST).fit(X_mixed, y_mixed)
    np.testing.assert_array_equal(a.memories_, b.memories_)
    assert b.score(X_mixed, y_mixed) == pytest.approx(b.score(X, y))


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, match", [
    ({"n": 0}, "'n' parameter"),
    ({"temperature": 0.0}, "'temperature' parameter"),
    ({"temperature": -1.0}, "'temperature' parameter"),
    ({"interaction": "cubic"}, "'interaction' parameter"),
    ({"momentum": 1.0}, "'momentum' parameter"),
    ({"init": "zeros"}, "'init' parameter"),
])
def test_bad_parameters_are_rejected(rng, params, match):
    X, y = _blobs(rng)
    with pytest.raises(ValueError, match=match):
        DensePolynomialHopfield(**{**FAST, **params}).fit(X, y)


def test_values_outside_unit_range_warn_in_fit_and_are_clipped(rng):
    X, y = _blobs(rng)
    X_wide = 3 * X
    X_copy = X_wide.copy()
    with pytest.warns(UserWarning, match=r"outside \[-1, 1\]; they are clipped"):
        wide = DensePolynomialHopfield(3, **FAST).fit(X_wide, y)
    np.testing.assert_array_equal(X_wide, X_copy)  # the caller's array is not modified
    clipped = DensePolynomialHopfield(3, **FAST).fit(np.clip(X_wide, -1, 1), y)
    np.testing.assert_array_equal(wide.memories_, clipped.memories_)
    np.testing.assert_array_equal(wide.predict_proba(X_wide),
                                  clipped.predict_proba(np.clip(X_wide, -1, 1)))


def test_other_bad_input_gets_a_clear_error(rng):
    X, y = _blobs(rng)
    with pytest.raises(ValueError, match="at least 2 classes"):
        DensePolynomialHopfield(**FAST).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="no in-distribution rows"):
        DensePolynomialHopfield(**FAST).fit(X, np.full(len(X), OOD_LABEL))
    with pytest.raises(ValueError, match=r"init has shape \(3, 4\)"):
        DensePolynomialHopfield(**{**FAST, "init": np.zeros((3, 4))}).fit(X, y)
    with pytest.raises(ValueError, match="init must hold finite values in"):
        DensePolynomialHopfield(**{**FAST, "init": np.full((12, 9), 2.0)}).fit(X, y)
    model = DensePolynomialHopfield(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="recall takes whole network states of 9 columns"):
        model.recall(X)
    states = np.hstack([X, -np.ones((len(X), 3))])
    with pytest.raises(ValueError, match="mask has shape"):
        model.recall(states, mask=np.ones(4, dtype=bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        model.recall(states, mask=np.ones(9))
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        model.recall(states, max_iter=0)
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full_like(X, np.nan))


# ------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
def test_cuda_fit_matches_the_numpy_formula_and_unpickles_to_numpy_state(rng):
    X, y = _blobs(rng)
    model = DensePolynomialHopfield(3, dtype="float64", **{**FAST, "device": "cuda"})
    model.fit(X, y)
    assert model.device_.startswith("cuda") and isinstance(model.memories_, np.ndarray)
    drive = drive_ref(X, model.memories_, 3, 0.5, "rectified")
    np.testing.assert_allclose(model.decision_function(X), -np.logaddexp(0, -2 * drive),
                               rtol=1e-9)
