"""RecLagDetector: scores, threshold, retrieval and both solvers, against plain formulas.

Formulas (specs/reclag.md): score = (1/beta) lse(beta Xi_c v) [- |v|^2/2],
G(v) = score - (1/beta) log gamma, update v <- C(G(v)) Xi_c^T softmax(beta Xi_c v).
"""

import copy

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_reclag import OOD_LABEL, RecLagDetector
from sklearn_reclag._reference import fit_reclag_reference, reference_loss
from sklearn_reclag.detectors._sae import (
    _MaskedAdam,
    adam_factors,
    fit_sae,
    sae_batches,
    sae_loss_and_grad,
)
from sklearn_reclag.detectors._sae_kernels import adam_step, draws_and_weights
from sklearn_reclag.detectors.reclag import initial_memories

from _expected_checks import HELD_OUT_THRESHOLD_CHECKS


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
    params = {"head": head, "device": "cpu", "dtype": "float64", "random_state": 0,
              "max_epochs": 3, **params}
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
    rows' cross-fitted scores (5 stratified folds, each scored by the detector fitted on
    the other four), so that about `contamination` of new rows have G <= 0."""
    X, y, _, _ = data
    det = _fit(data, contamination=contamination, solver="em")
    held_out = np.empty(len(X))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        fold = _fit((X[train], y[train], None, data[3]), contamination=contamination,
                    solver="em")
        held_out[test] = fold.score_samples(X[test])
    held_out = np.minimum(held_out, det.score_samples(X))  # capped at their own scores
    assert det.offset_ == pytest.approx(np.percentile(held_out, 100 * contamination))
    assert det.log_gamma_ == pytest.approx(det.beta_ * det.offset_)
    assert det.gamma_ == pytest.approx(np.exp(det.log_gamma_))


def test_auto_gamma_stays_usable_beyond_float64_range(data):
    """A huge log gamma gives gamma_ = inf but a finite log_gamma_ and working predict."""
    X, y, X_test, head = data
    det = RecLagDetector(beta=50.0, solver="em", max_epochs=3, head=head, device="cpu",
                         random_state=0).fit(X * 10, y)
    assert det.log_gamma_ > 709 and det.gamma_ == np.inf
    assert np.isfinite(det.offset_)
    assert set(det.predict(X_test * 10)) <= {-1, 1}


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


@pytest.mark.parametrize("routing", ["predicted", "max", "pooled"])
def test_scores_and_retrieval_do_not_depend_on_batch_size(data, routing):
    """Scoring and transform in chunks of 4 rows give what one chunk gives."""
    _, _, X_test, _ = data
    det = _fit(data, solver="em", routing=routing)
    chunked = copy.deepcopy(det).set_params(batch_size=4)
    np.testing.assert_allclose(chunked.score_samples(X_test), det.score_samples(X_test),
                               rtol=1e-12)
    np.testing.assert_allclose(chunked.transform(X_test), det.transform(X_test), rtol=1e-12,
                               atol=1e-12)


# ------------------------------------------------------------------- the 'sae' solver
def test_sae_batches_are_each_class_rows_in_order_batch_major(rng):
    """batches[b, c] holds rows b*B .. (b+1)*B - 1 of class c in their order in X; a
    class's last partial batch is dropped and its exhausted steps are zeros."""
    y = rng.permutation(np.repeat([0, 1, 2], [23, 9, 4]))
    X = rng.normal(size=(len(y), 3))
    batches, n_batches = sae_batches(X, y, 4, 4)
    assert batches.shape == (5, 4, 4, 3)
    assert n_batches.tolist() == [5, 2, 1, 0]
    for c in range(4):
        rows = X[y == c]
        for b in range(5):
            expected = rows[4 * b:4 * b + 4] if b < n_batches[c] else np.zeros((4, 3))
            np.testing.assert_array_equal(batches[b, c], expected)


@pytest.mark.parametrize("sampler", ["categorical", "official"])
def test_sae_gradient_equals_autograd_of_reference_loss(sampler):
    """The closed-form batched gradient equals autograd of the per-class loss."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(2, 8, 4)))
    memories = torch.tensor(rng.normal(scale=1.5, size=(2, 3, 4)))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    memories[1, 2] = 0.0
    u = torch.tensor(rng.uniform(size=(2, 8, 5)))
    loss, grad = sae_loss_and_grad(x, memories, mask, u, beta=1.3, sampler=sampler)
    for c in range(2):
        xi = memories[c][mask[c]].clone().requires_grad_(True)
        expected = reference_loss(x[c], xi, u[c].T, beta=1.3, sampler=sampler)
        expected.backward()
        assert float(loss[c]) == pytest.approx(expected.item(), rel=1e-12)
        np.testing.assert_allclose(grad[c][mask[c]].numpy(), xi.grad.numpy(), rtol=1e-10,
                                   atol=1e-12)
        assert (grad[c][~mask[c]] == 0).all()


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("sampler", ["categorical", "official"])
def test_compiled_step_equals_torch_step(dtype, rtol, sampler):
    """One step of the compiled CPU kernels gives the loss, the gradient and the Adam
    update of the torch form, in float64 and float32. Class 1 has padding memories (their
    gradient is 0), class 2 is idle this step (it does not move)."""
    rng = np.random.default_rng(5)
    n_banks, n_memories, batch, n_features, beta = 3, 4, 6, 5, 1.3
    x = torch.tensor(rng.normal(size=(n_banks, batch, n_features)), dtype=dtype)
    memories = torch.tensor(rng.normal(scale=1.5, size=(n_banks, n_memories, n_features)),
                            dtype=dtype)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    memories[~mask] = 0.0
    u = torch.tensor(rng.uniform(size=(n_banks, batch, 3)), dtype=dtype)
    factors = adam_factors(np.array([2, 2, 0]), 0, lr=0.05)[0]  # classes 0 and 1 step

    loss, grad = sae_loss_and_grad(x, memories, mask, u, beta=beta, sampler=sampler)
    expected = memories.clone()
    _MaskedAdam(expected).step(expected, grad, torch.tensor(factors[:, :, None, None],
                                                            dtype=dtype).unbind(0))

    padding = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, -np.inf)[:, :, None]
    logits = torch.baddbmm(padding, memories, x.transpose(1, 2), alpha=beta)
    np_dtype = logits.numpy().dtype
    coef = np.empty_like(logits.numpy())
    weight_sum = np.empty((n_banks, n_memories), dtype=np_dtype)
    got_loss = np.empty(n_banks, dtype=np_dtype)
    sq_norms = (memories**2).sum(dim=-1).numpy()
    draws_and_weights(logits.numpy(), torch.softmax(logits, dim=1).numpy(),
                      (x**2).sum(dim=-1).numpy(), sq_norms, u.numpy(),
                      mask.sum(dim=1).numpy() - 1, beta, n_features, sampler == "official",
                      coef, weight_sum, got_loss)
    got_grad = torch.bmm(torch.from_numpy(coef), x).numpy()
    got = memories.numpy().copy()
    adam_step(got, got_grad, weight_sum, np.zeros_like(got), np.zeros_like(got),
              factors.astype(np_dtype), 2.0 / (batch * n_features), -beta / batch, sq_norms,
              np.finfo(np_dtype).tiny)

    np.testing.assert_allclose(got_loss, loss.numpy(), rtol=rtol)
    np.testing.assert_allclose(got_grad[:2], grad[:2].numpy(), rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(got, expected.numpy(), rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_array_equal(got[2], memories[2].numpy())
    np.testing.assert_allclose(sq_norms[:2], (got[:2] ** 2).sum(axis=-1), rtol=rtol)


_CUDA = [pytest.mark.cuda,
         pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("engine", ["compiled", "torch", pytest.param("cuda", marks=_CUDA)])
@pytest.mark.parametrize("sampler", ["categorical", "official"])
@pytest.mark.parametrize("epochs", [1, 2, 4])
def test_sae_batched_equals_per_class_reference_step_for_step(sampler, epochs, engine):
    """Given the same draws, training all classes at once equals training each class on
    its own with autograd and torch.optim.Adam, after every epoch, in each form of the
    step (the compiled CPU kernels; torch operations on the CPU and on CUDA). The classes
    have 5, 2 and 0 batches (idle classes must not move) and the last has fewer rows
    than memories."""
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], [130, 60, 3])
    X = rng.normal(size=(len(y), 6)) + 2 * rng.normal(size=(3, 6))[y]
    n_memories, batch, n_draws = 4, 25, 3
    init, mask = initial_memories(X, y, 3, n_memories, init_norm=3.0, random_state=0)
    assert mask.sum(axis=1).tolist() == [4, 4, 3]
    uniforms = rng.uniform(size=(epochs, 5, 3, batch, n_draws))

    expected = fit_reclag_reference(
        X, y, n_memories, beta=0.7, n_draws=n_draws, max_epochs=epochs, batch_size=batch,
        lr=0.05, init_memories=init, sampler=sampler, dtype=torch.float64,
        uniforms=lambda c, e, b: uniforms[e, b, c].T,
    )
    batches, n_batches = sae_batches(X, y, 3, batch)
    assert n_batches.tolist() == [5, 2, 0]
    device = "cuda" if engine == "cuda" else "cpu"
    got = fit_sae(
        torch.tensor(batches, device=device), n_batches, torch.tensor(init, device=device),
        torch.tensor(mask, device=device), beta=0.7, max_epochs=epochs, lr=0.05,
        uniforms=lambda e: torch.tensor(uniforms[e], device=device), sampler=sampler,
        compiled=engine == "compiled",
    ).cpu()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(got[2].numpy(), init[2])  # no full batch: never moves
    assert not np.allclose(got[0].numpy(), init[0])


def test_sae_is_deterministic_under_random_state(data):
    """Same random_state, same memories; another random_state, other memories."""
    a = _fit(data, random_state=7).memories_
    np.testing.assert_array_equal(_fit(data, random_state=7).memories_, a)
    assert not np.array_equal(_fit(data, random_state=8).memories_, a)


def test_sae_learns_the_official_objective(data):
    """Training lowers the mean objective on the training batches (a sanity check that
    the steps descend)."""
    X, y, _, head = data
    before = _fit(data, max_epochs=0, lr=0.05).memories_
    after = _fit(data, max_epochs=20, lr=0.05).memories_

    def mean_loss(memories):
        gen = np.random.default_rng(0)
        total = 0.0
        for c in range(3):
            x = torch.tensor(X[y == c][:50])
            u = torch.tensor(gen.uniform(size=(64, 50)))
            total += float(reference_loss(x, torch.tensor(memories[c]), u, beta=5.0))
        return total

    assert mean_loss(after) < mean_loss(before)


def test_small_class_keeps_initial_memories_with_warning(data):
    """A class with fewer stored patterns than a learning batch is not trained (as in the
    official code) and fit says so."""
    X, y, _, head = data
    with pytest.warns(UserWarning, match="learning_batch_size"):
        det = _fit(data, learning_batch_size=70, max_epochs=1)
    stored = head.predict(X) == y
    init, _ = initial_memories(X[stored], y[stored], 3, 10, random_state=0)
    np.testing.assert_allclose(det.memories_[2], init[2], rtol=1e-12)


def test_verbose_shows_a_progress_bar(data, capsys):
    _fit(data, verbose=1, max_epochs=2)
    assert "RecLag (sae)" in capsys.readouterr().err


# -------------------------------------------------------------------- the 'em' solver
def test_em_iteration_equals_numpy(data):
    """One EM iteration from the initial memories equals the numpy E and M steps."""
    X, y, _, head = data
    beta = 0.5
    det = _fit(data, solver="em", max_epochs=1, beta=beta, init_norm=None)
    assert det.n_iter_ == 1
    stored = head.predict(X) == y
    init, mask = initial_memories(X[stored], y[stored], 3, 10, init_norm=None,
                                  random_state=np.random.RandomState(0))
    for c in range(3):
        rows = X[stored & (y == c)]
        mu = init[c][mask[c]]
        resp = softmax(beta * (rows @ mu.T - 0.5 * (mu**2).sum(axis=1)), axis=1)
        expected = resp.T @ rows / resp.sum(axis=0)[:, None]
        np.testing.assert_allclose(det.memories_[c][mask[c]], expected, rtol=1e-9)


def test_em_converges_to_a_fixed_point(data):
    """Converged EM memories are a fixed point: one more iteration does not move them."""
    det = _fit(data, solver="em", max_epochs=500, beta=0.5)
    assert det.n_iter_ < 500
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


@pytest.mark.parametrize("solver", ["sae", "em"])
def test_fit_ignores_ood_rows(data, solver):
    """Rows labelled OOD_LABEL (held-out OOD rows of a CV split) do not reach the memories,
    gamma_ or the stored patterns: the fit equals the fit without them."""
    X, y, X_test, head = data
    X_ood = np.random.default_rng(1).normal(scale=5.0, size=(30, X.shape[1]))
    order = np.random.default_rng(2).permutation(len(X) + 30)
    X_all = np.vstack([X, X_ood])[order]
    y_all = np.r_[y, np.full(30, OOD_LABEL)][order]
    with_ood = _fit((X_all, y_all, X_test, head), solver=solver)
    keep = y_all != OOD_LABEL
    without = _fit((X_all[keep], y_all[keep], X_test, head), solver=solver)
    np.testing.assert_array_equal(with_ood.memories_, without.memories_)
    assert with_ood.gamma_ == without.gamma_
    np.testing.assert_array_equal(with_ood.score_samples(X_test), without.score_samples(X_test))


def test_without_labels_one_bank(data):
    """y=None and no head: one bank of n_memories memories learned on every row."""
    X = data[0]
    det = RecLagDetector(solver="em", max_epochs=5, device="cpu", random_state=0).fit(X)
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_are_not_modified(data, dtype):
    """With a matching dtype scoring reads views of X; nothing writes to them."""
    X, y, X_test, head = data
    X, X_test = X.astype(dtype), X_test.astype(dtype)
    copies = X.copy(), y.copy(), X_test.copy()
    det = _fit((X, y, X_test, head), dtype=dtype)
    det.score_samples(X_test)
    det.predict(X_test)
    retrieved = det.transform(X_test)
    assert not np.shares_memory(retrieved, X_test)
    for original, saved in zip((X, y, X_test), copies, strict=True):
        np.testing.assert_array_equal(original, saved)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
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


@pytest.mark.filterwarnings("ignore:Classes .* have fewer stored patterns:UserWarning")
@parametrize_with_checks(
    [
        RecLagDetector(device="cpu", max_epochs=2, random_state=0),
        RecLagDetector(device="cpu", max_epochs=2, random_state=0, dtype="float64"),
        RecLagDetector(solver="em", energy="full", routing="pooled", device="cpu",
                       dtype="float64", random_state=0),
    ],
    expected_failed_checks=lambda estimator: HELD_OUT_THRESHOLD_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("solver", ["sae", "em"])
@pytest.mark.parametrize("energy", ["lse", "density"])
def test_head_class_without_training_rows_is_routed_to_present_banks(data, solver, energy):
    """A head that knows a class fit never sees leaves that bank empty; rows the head
    assigns to it are routed to the best present bank, so scores and offset_ stay finite
    and predict still accepts 1 - contamination of the training rows."""
    X, y, X_test, head = data
    keep = y != 2
    with pytest.warns(UserWarning, match="no stored patterns"):
        det = RecLagDetector(head=head, solver=solver, energy=energy, device="cpu",
                             learning_batch_size=20, max_epochs=2, random_state=0)
        det.fit(X[keep], y[keep])
    assert not det.memory_mask_[2].any()
    assert np.isfinite(det.memories_).all()
    scores = det.score_samples(np.vstack([X, X_test]))
    assert np.isfinite(scores).all() and np.isfinite(det.offset_)
    assert np.mean(det.predict(X[keep]) == 1) == pytest.approx(0.95, abs=0.02)
    assert np.isfinite(det.transform(X_test)).all()
