"""RecLagDetector: scores, threshold, retrieval, the 'em' solver and input handling,
against plain formulas (the 'sae' solver has its own file, test_sae.py).

Formulas (Moriai et al., AAAI 2025): score = (1/beta) lse(beta Xi_c v) [- |v|^2/2],
G(v) = score - (1/beta) log gamma, update v <- C(G(v)) Xi_c^T softmax(beta Xi_c v).
"""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression

from sklearn_reclag import RecLagDetector
from sklearn_reclag.base import held_out_folds, row_keys
from sklearn_reclag.detectors.reclag import canonical_order, initial_memories


@pytest.fixture(scope="module")
def data():
    """Three Gaussian classes (with 120, 75 and 60 rows) and broader test rows."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(3, 5))
    y = np.repeat([0, 1, 2], [120, 75, 60])
    X = centres[y] + rng.normal(size=(len(y), 5))
    X_test = np.vstack([X[::9], rng.normal(scale=4.0, size=(20, 5))])
    head = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, X_test, head


def _fit(data, **params):
    X, y, _, head = data
    # tol=None: every fit runs exactly max_epochs epochs (or EM iterations).
    # The paper's score in the raw feature space and a fixed beta unless a test says
    # otherwise: the formulas below are written for them (the metrics are tested in
    # test_metric.py, beta='auto' in test_metric.py and test_threshold.py).
    params = {"head": head, "device": "cpu", "dtype": "float64", "random_state": 0,
              "max_epochs": 3, "tol": None, "metric": "euclidean", "energy": "lse",
              "beta": 1.0, **params}
    return RecLagDetector(**params).fit(X, y)


def _numpy_lse_per_class(det, V):
    """(1/beta) lse(beta Xi_c v) for every class, from memories_ with plain numpy."""
    out = np.empty((len(V), len(det.memories_)))
    for c, (bank, mask) in enumerate(zip(det.memories_, det.memory_mask_, strict=True)):
        out[:, c] = logsumexp(det.beta * V @ bank[mask].T, axis=1) / det.beta
    return out


def _numpy_density_per_class(det, V):
    """(1/beta) lse(-beta |v - xi|^2 / 2) for every class: the Gaussian-mixture form."""
    out = np.empty((len(V), len(det.memories_)))
    for c, (bank, mask) in enumerate(zip(det.memories_, det.memory_mask_, strict=True)):
        d2 = ((V[:, None, :] - bank[mask][None]) ** 2).sum(-1)
        out[:, c] = logsumexp(-0.5 * det.beta * d2, axis=1) / det.beta
    return out


def _numpy_score(det, V, head):
    if det.energy == "density":
        per_class = _numpy_density_per_class(det, V)
    else:
        per_class = _numpy_lse_per_class(det, V)
    if det.routing == "predicted":
        score = per_class[np.arange(len(V)), head.predict(V)]
    elif det.routing == "max":
        score = per_class.max(axis=1)
    else:
        score = logsumexp(det.beta * per_class, axis=1) / det.beta
    if det.energy == "full":
        score = score - 0.5 * (V**2).sum(axis=1)
    return score


@pytest.mark.parametrize("solver", ["sae", "em"])
@pytest.mark.parametrize("energy", ["lse", "full", "density"])
@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
def test_score_equals_numpy_formula(data, solver, energy, routing):
    """score_samples = (1/beta) lse(beta Xi_c v) [- |v|^2/2] over the routed bank, or
    (1/beta) lse(-beta |v - xi|^2 / 2) for energy='density'."""
    _, _, X_test, head = data
    det = _fit(data, solver=solver, energy=energy, routing=routing, beta=0.8)
    np.testing.assert_allclose(
        det.score_samples(X_test), _numpy_score(det, X_test, head), rtol=1e-10, atol=1e-10
    )


def test_decision_and_predict_follow_gamma(data):
    """offset_ = log(gamma)/beta, decision_function = G(v), predict = +1 iff G(v) > 0."""
    _, _, X_test, head = data
    det = _fit(data, gamma=3.0, beta=0.8, solver="em")
    assert det.gamma_ == 3.0 and det.offset_ == pytest.approx(np.log(3.0) / 0.8)
    G = (_numpy_score(det, X_test, head) * 0.8 - np.log(3.0)) / 0.8
    np.testing.assert_allclose(det.decision_function(X_test), G, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(det.predict(X_test), np.where(G > 0, 1, -1))


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_auto_gamma_is_the_contamination_quantile_of_held_out_scores(data, contamination):
    """gamma='auto': log gamma_ / beta is the `contamination` quantile of the training
    rows' cross-fitted scores (5 stratified folds of held_out_folds, each scored by the
    detector fitted on the other four), so that about `contamination` of new rows have
    G <= 0."""
    X, y, _, _ = data
    det = _fit(data, contamination=contamination, solver="em")
    held_out = np.empty(len(X))
    folds = held_out_folds(row_keys(X, y, dtype=det.dtype), y)
    for index in range(5):
        train, test = np.flatnonzero(folds != index), np.flatnonzero(folds == index)
        fold = _fit((X[train], y[train], None, data[3]), contamination=contamination,
                    solver="em")
        held_out[test] = fold.score_samples(X[test])
    held_out = np.minimum(held_out, det.score_samples(X))  # capped at their own scores
    assert det.offset_ == pytest.approx(np.percentile(held_out, 100 * contamination))
    assert det.log_gamma_ == pytest.approx(det.beta_ * det.offset_)
    assert det.gamma_ == pytest.approx(np.exp(det.log_gamma_))


def test_auto_gamma_stays_usable_beyond_float64_range(data):
    """A huge log gamma gives gamma_ = inf but a finite log_gamma_, and decision_function
    and predict still follow G(v) = (1/beta) (lse(beta Xi_c v) - log gamma_)."""
    X, y, X_test, head = data
    det = _fit((X * 10, y, None, head), solver="em", beta=50.0)
    assert det.log_gamma_ > 709 and det.gamma_ == np.inf
    assert np.isfinite(det.offset_)
    V = np.vstack([X * 10, X_test * 10])
    G = _numpy_score(det, V, head) - det.log_gamma_ / 50.0
    np.testing.assert_allclose(det.decision_function(V), G, rtol=1e-9,
                               atol=1e-9 * np.abs(G).max())
    np.testing.assert_array_equal(det.predict(V), np.where(G > 0, 1, -1))
    # The threshold still separates: it rejects some rows and accepts most training rows.
    assert (G <= 0).any() and np.mean(G[:len(X)] > 0) >= 0.9


def _numpy_retrieve(det, V, head, steps):
    """The update rule with plain numpy, banks routed by the head's prediction."""
    banks = [bank[mask] for bank, mask in zip(det.memories_, det.memory_mask_, strict=True)]
    chosen = head.predict(V)
    out = V.copy()
    for _ in range(steps):
        for i, v in enumerate(out):
            bank = banks[chosen[i]]
            G = (logsumexp(det.beta * bank @ v) - det.log_gamma_) / det.beta
            out[i] = bank.T @ softmax(det.beta * bank @ v) if G > 0 else 0.0
    return out


def test_transform_sends_rows_below_threshold_to_zero(data):
    """With gamma >= M, rows with G(v) <= 0 come back as zeros; every state follows the
    update rule (checked against numpy)."""
    _, _, X_test, head = data
    det = _fit(data, solver="em", beta=0.5, gamma="auto", contamination=0.3, max_iter=3)
    assert det.gamma_ >= det.n_memories
    rejected = det.decision_function(X_test) <= 0
    assert rejected.any() and (~rejected).any()
    states = det.transform(X_test)
    assert (states[rejected] == 0).all()
    assert (np.abs(states[~rejected]).sum(axis=1) > 0).any()
    np.testing.assert_allclose(
        states, _numpy_retrieve(det, X_test, head, 3), rtol=1e-8, atol=1e-8
    )


def test_transform_with_gamma_below_n_memories_leaves_the_origin(data):
    """gamma < M: the origin is not a fixed point, a rejected row goes to 0 and then to
    the mean memory of its bank (the documented behaviour)."""
    _, _, X_test, head = data
    det = _fit(data, solver="em", beta=0.5, gamma=2.0, max_iter=2)
    far = X_test[-20:][det.decision_function(X_test[-20:]) <= 0][:1] * 20
    assert len(far) == 1 and det.decision_function(far)[0] <= 0
    c = head.predict(far)[0]
    mean_memory = det.memories_[c][det.memory_mask_[c]].mean(axis=0)
    np.testing.assert_allclose(det.transform(far)[0], mean_memory, rtol=1e-10)
    det.set_params(max_iter=1)
    np.testing.assert_array_equal(det.transform(far)[0], 0.0)


# -------------------------------------------------------------------- the 'em' solver
def test_em_iteration_equals_numpy(data):
    """One EM iteration from the initial memories equals the numpy E and M steps."""
    X, y, _, head = data
    beta = 0.5
    det = _fit(data, solver="em", max_epochs=1, beta=beta, init_norm=None)
    assert det.n_iter_ == 1
    stored = head.predict(X) == y
    init, mask = initial_memories(X[stored], y[stored], 3, 10, init_norm=None,
                                  random_state=np.random.RandomState(0),
                                  order=canonical_order(X[stored]))
    for c in range(3):
        rows = X[stored & (y == c)]
        mu = init[c][mask[c]]
        resp = softmax(beta * (rows @ mu.T - 0.5 * (mu**2).sum(axis=1)), axis=1)
        expected = resp.T @ rows / resp.sum(axis=0)[:, None]
        np.testing.assert_allclose(det.memories_[c][mask[c]], expected, rtol=1e-9)


def test_em_converges_to_a_fixed_point(data):
    """EM stopped by a small tol leaves memories at a fixed point: one more iteration
    does not move them."""
    det = _fit(data, solver="em", max_epochs=500, beta=0.5, tol=1e-10)
    assert det.converged_ and det.n_iter_ < 500
    again = _fit(data, solver="em", max_epochs=det.n_iter_ + 1, beta=0.5)
    np.testing.assert_allclose(again.memories_, det.memories_, atol=1e-4)


# ---------------------------------------------------------------------- init and input
@pytest.mark.parametrize("init", ["random", "kmeans"])
def test_initial_memories_have_the_official_norm(data, init):
    """Initial memories are class rows (or class k-means centres) scaled to init_norm; a
    class with <= n_memories rows keeps all its rows and masks the other slots."""
    X, y, _, _ = data
    y = y.copy()
    y[:115] = 3  # class 0 now has 5 rows
    memories, mask = initial_memories(X, y, 4, 10, init=init, random_state=0)
    assert mask.sum(axis=1).tolist() == [5, 10, 10, 10]
    np.testing.assert_allclose(np.linalg.norm(memories[mask], axis=1), 10.0)
    assert (memories[~mask] == 0).all()
    if init == "random":
        unit = X / np.linalg.norm(X, axis=1, keepdims=True)
        assert np.isclose(memories[1][:, None] / 10, unit[y == 1][None]).all(2).any(1).all()


@pytest.mark.parametrize("init", ["random", "kmeans"])
def test_initial_memories_auto_norm_follows_each_class(data, init):
    """init_norm='auto' scales every memory of class c to the mean norm of the class's
    rows, whatever the scale of the data; None keeps the rows (or centres) as they are."""
    X, y, _, _ = data
    X = X * np.array([0.1, 1.0, 10.0])[y][:, None]  # three classes, three scales
    auto, mask = initial_memories(X, y, 3, 10, init=init, init_norm="auto", random_state=0)
    kept, _ = initial_memories(X, y, 3, 10, init=init, init_norm=None, random_state=0)
    for c in range(3):
        target = np.linalg.norm(X[y == c], axis=1).mean()
        np.testing.assert_allclose(np.linalg.norm(auto[c][mask[c]], axis=1), target)
        np.testing.assert_allclose(auto[c], kept[c] * target / np.linalg.norm(
            kept[c], axis=1, keepdims=True))
    if init == "random":  # None: the memories are rows of their class
        assert all(np.isclose(kept[c][:, None], X[y == c][None]).all(2).any(1).all()
                   for c in range(3))


def test_without_labels_one_bank(data):
    """y=None and no head: one bank of n_memories memories learned on every row."""
    X = data[0]
    det = RecLagDetector(solver="em", max_epochs=5, tol=None, device="cpu",
                         random_state=0).fit(X)
    assert det.memories_.shape == (1, 10, X.shape[1]) and det.classes_ is None
    assert det.transform(X[:3]).shape == (3, X.shape[1])


@pytest.mark.parametrize(
    "params, change, match",
    [
        ({"beta": 0.0}, None, "beta"),
        ({"gamma": 0.0}, None, "gamma"),
        ({"gamma": -2.0}, None, "gamma"),
        ({"solver": "adam"}, None, "solver"),
        ({}, "nan", "NaN"),
        ({}, "single", "1 sample"),
    ],
)
def test_bad_input_raises_clear_error(data, params, change, match):
    X, y = data[0].copy(), data[1].copy()
    if change == "nan":
        X[0, 0] = np.nan
    if change == "single":
        y[0] = 5
    with pytest.raises(ValueError, match=match):
        RecLagDetector(device="cpu", **params).fit(X, y)


@pytest.mark.cuda
@pytest.mark.parametrize("solver", ["sae", "em"])
def test_cuda_fit_and_score(data, solver):
    """Fitting and scoring on CUDA: both solvers agree with the CPU, 'sae' is
    deterministic there, and the fitted model's state is numpy (loads on a CPU machine)."""
    _, _, X_test, _ = data
    gpu = _fit(data, solver=solver, device="cuda")
    assert gpu.device_.startswith("cuda") and isinstance(gpu.memories_, np.ndarray)
    # The same draws on every device ('sae'): the CPU fit agrees up to rounding.
    cpu = _fit(data, solver=solver)
    tol = 1e-6 if solver == "sae" else 1e-8  # Adam's eps = 1e-9 magnifies rounding
    np.testing.assert_allclose(gpu.memories_, cpu.memories_, rtol=tol, atol=tol)
    if solver == "sae":
        np.testing.assert_array_equal(_fit(data, solver=solver, device="cuda").memories_,
                                      gpu.memories_)
    assert np.isfinite(gpu.score_samples(X_test)).all()
    assert gpu.transform(X_test).shape == X_test.shape


@pytest.mark.parametrize("solver, objective", [("sae", "paper"), ("sae", "likelihood"),
                                               ("em", "paper")])
@pytest.mark.parametrize("energy", ["lse", "density"])
def test_head_class_without_training_rows_is_routed_to_present_banks(data, solver,
                                                                     objective, energy):
    """A head that knows a class fit never sees leaves that bank empty; rows the head
    assigns to it are routed to the best present bank, so scores and offset_ stay finite
    and predict still accepts at least 1 - contamination of the training rows."""
    X, y, X_test, head = data
    keep = y != 2
    with pytest.warns(UserWarning, match="no stored patterns"):
        det = RecLagDetector(head=head, solver=solver, objective=objective, energy=energy,
                             device="cpu", learning_batch_size=20, max_epochs=2, tol=None,
                             random_state=0)
        det.fit(X[keep], y[keep])
    assert np.isfinite(det.loss_curve_).all()
    assert not det.memory_mask_[2].any()
    assert np.isfinite(det.memories_).all()
    scores = det.score_samples(np.vstack([X, X_test]))
    assert np.isfinite(scores).all() and np.isfinite(det.offset_)
    # The threshold comes from held-out scores: at least 1 - contamination of the
    # training rows themselves are accepted.
    assert np.mean(det.predict(X[keep]) == 1) >= 0.95 - 0.02
    assert np.isfinite(det.transform(X_test)).all()


def test_feature_names_say_when_states_are_in_the_whitened_space():
    # transform's states under metric='mahalanobis' are whitened coordinates, not the input
    # features (issue 23, item 21).
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.repeat([0, 1], 30)
    kwargs = dict(max_epochs=2, tol=None, device="cpu", random_state=0)
    raw = RecLagDetector(**kwargs).fit(X, y)
    assert list(raw.get_feature_names_out()) == ["x0", "x1", "x2", "x3"]
    whitened = RecLagDetector(metric="mahalanobis", **kwargs).fit(X, y)
    assert list(whitened.get_feature_names_out()) == [
        f"reclagdetector_whitened{i}" for i in range(4)]
    assert whitened.transform(X).shape == (60, 4)


# -------------------------------------------------- the order of the rows (issue 23, 14)
@pytest.mark.parametrize("params", [
    {}, {"solver": "em"}, {"init": "kmeans"},
    {"objective": "paper", "energy": "lse", "beta": 5.0, "init_norm": 10.0},
], ids=["likelihood", "em", "kmeans", "paper"])
def test_the_same_rows_in_another_order_give_the_same_model(params):
    """The initial draws, k-means and the learning batches read the rows in an order of
    their values (canonical_order), not of their positions: permuted training rows give
    the same memories and the same decisions (they did not: the batches followed X)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    permutation = np.random.default_rng(0).permutation(len(X))
    kwargs = dict(device="cpu", random_state=0, max_epochs=3, tol=None, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper's energy on these rows says so
        a = RecLagDetector(**kwargs).fit(X, y)
        b = RecLagDetector(**kwargs).fit(X[permutation], y[permutation])
    # EM sums the rows in another order: equal to rounding.
    np.testing.assert_allclose(a.memories_, b.memories_, atol=1e-5)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-4)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_canonical_order_ignores_position_shift_and_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7))
    order = canonical_order(X)
    permutation = rng.permutation(50)
    np.testing.assert_array_equal(permutation[canonical_order(X[permutation])], order)
    np.testing.assert_array_equal(canonical_order(3.0 * X + 100.0), order)
