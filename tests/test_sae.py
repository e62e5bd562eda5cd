"""RecLag's 'sae' solver, and the progress and stopping of both solvers' fits.

The paper's objective (Moriai et al., "Rectified Lagrangian for Out-of-Distribution
Detection in Modern Hopfield Networks", AAAI 2025), per class and batch x of B rows, with
z = softmax(beta x Xi^T), S memories xi_s drawn from z per row and constant importance
weights w_s::

    loss = mean_{s, b} w_s (mean_D (x - xi_s)^2 - log(z_s + 1e-12))

The 'likelihood' objective, per row::

    nll(x) = -log (1/M) sum_mu N(x; xi_mu, I / beta)

Both are trained by the batched program (every class at once) and checked step for step
against per-class references with autograd and torch.optim.Adam (sklearn_reclag._reference).
"""

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sklearn_reclag import RecLagDetector
from sklearn_reclag._reference import (
    fit_likelihood_reference,
    fit_reclag_reference,
    likelihood_reference_loss,
    reference_loss,
)
from sklearn_reclag.detectors._sae import (
    _MaskedAdam,
    adam_factors,
    batch_row_counts,
    class_spread,
    fit_sae,
    likelihood_loss_and_grad,
    sae_batches,
    sae_loss_and_grad,
)
from sklearn_reclag.detectors._sae_kernels import (
    adam_step,
    draws_and_weights,
    mixture_responsibilities,
)
from sklearn_reclag.detectors.reclag import canonical_order, initial_memories

ENGINES = ["compiled", "torch", pytest.param("cuda", marks=pytest.mark.cuda)]


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
    # The paper's objective and initial norm, in the raw feature space, unless a test
    # says otherwise: the references below are written for them (the metrics are tested
    # in test_metric.py).
    params = {"head": head, "device": "cpu", "dtype": "float64", "random_state": 0,
              "max_epochs": 3, "tol": None, "metric": "euclidean", "objective": "paper",
              "init_norm": 10.0, **params}
    return RecLagDetector(**params).fit(X, y)


def _unequal_classes():
    """Classes of 130, 60 and 3 rows: 5, 2 and 0 full batches of 25 (the last class has
    fewer rows than memories)."""
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], [130, 60, 3])
    X = rng.normal(size=(len(y), 6)) + 2 * rng.normal(size=(3, 6))[y]
    return X, y


def _nll_numpy(X, memories, beta):
    """Mean over the rows of -log (1/M) sum_mu N(x; xi_mu, I / beta), plain numpy."""
    sq_dist = ((X[:, None, :] - memories[None]) ** 2).sum(axis=-1)
    log_normal = -0.5 * beta * sq_dist + 0.5 * X.shape[1] * np.log(beta / (2 * np.pi))
    return -np.mean(logsumexp(log_normal, axis=1) - np.log(len(memories)))


# --------------------------------------------------------------------------- batches
def test_sae_batches_are_each_class_rows_in_order_batch_major(rng):
    """batches[b, c] holds rows b*B .. (b+1)*B - 1 of class c in their order in X; a
    class's last partial batch is dropped (or kept, zero-padded, with drop_last=False) and
    its exhausted steps are zeros; batch_row_counts says how many rows are real."""
    y = rng.permutation(np.repeat([0, 1, 2], [23, 9, 4]))
    X = rng.normal(size=(len(y), 3))
    for drop_last, expected_batches in [(True, [5, 2, 1, 0]), (False, [6, 3, 1, 0])]:
        batches, n_batches = sae_batches(X, y, 4, 4, drop_last=drop_last)
        n_steps = max(expected_batches)
        assert batches.shape == (n_steps, 4, 4, 3)
        assert n_batches.tolist() == expected_batches
        counts = batch_row_counts(y, 4, 4, n_steps)
        for c in range(4):
            rows = X[y == c]
            for b in range(n_steps):
                real = rows[4 * b:4 * b + 4] if b < n_batches[c] else np.zeros((0, 3))
                np.testing.assert_array_equal(batches[b, c, :len(real)], real)
                np.testing.assert_array_equal(batches[b, c, len(real):], 0.0)
                if not drop_last:
                    assert counts[b, c] == len(real)


def test_class_spread_equals_numpy(rng):
    """class_spread = sqrt(mean_i |x_i - m_c|^2 / D) over each class's rows."""
    y = np.repeat([0, 1, 2], [23, 9, 1])
    X = rng.normal(size=(len(y), 3)) * np.array([0.1, 2.0, 5.0])[y][:, None] + 7.0
    batches, _ = sae_batches(X, y, 4, 4, drop_last=False)
    got = class_spread(torch.tensor(batches), batch_row_counts(y, 4, 4, len(batches)))
    expected = [np.sqrt(((X[y == c] - X[y == c].mean(0)) ** 2).sum(1).mean() / 3)
                for c in range(3)]
    # The one-row class: 0 up to the rounding of |x|^2 - |m|^2 (rows of norm 13).
    np.testing.assert_allclose(got, expected + [0.0], rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------- the paper's objective
@pytest.mark.parametrize("sampler", ["categorical", "double_softmax"])
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
@pytest.mark.parametrize("sampler", ["categorical", "double_softmax"])
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
                      mask.sum(dim=1).numpy() - 1, beta, n_features, sampler == "double_softmax",
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


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sampler", ["categorical", "double_softmax"])
@pytest.mark.parametrize("epochs", [1, 2, 4])
def test_sae_batched_equals_per_class_reference_step_for_step(sampler, epochs, engine):
    """Given the same draws, training all classes at once equals training each class on
    its own with autograd and torch.optim.Adam, after every epoch, in each form of the
    step (the compiled CPU kernels; torch operations on the CPU and on CUDA). The classes
    have 5, 2 and 0 batches (idle classes must not move) and the last has fewer rows
    than memories. loss_curve holds each epoch's mean of the reference's step losses."""
    X, y = _unequal_classes()
    n_memories, batch, n_draws = 4, 25, 3
    init, mask = initial_memories(X, y, 3, n_memories, init_norm=3.0, random_state=0)
    assert mask.sum(axis=1).tolist() == [4, 4, 3]
    uniforms = np.random.default_rng(4).uniform(size=(epochs, 5, 3, batch, n_draws))

    losses = []
    expected = fit_reclag_reference(
        X, y, n_memories, beta=0.7, n_draws=n_draws, max_epochs=epochs, batch_size=batch,
        lr=0.05, init_memories=init, sampler=sampler, dtype=torch.float64,
        uniforms=lambda c, e, b: uniforms[e, b, c].T, losses=losses,
    )
    batches, n_batches = sae_batches(X, y, 3, batch)
    assert n_batches.tolist() == [5, 2, 0]
    device = "cuda" if engine == "cuda" else "cpu"
    got = fit_sae(
        torch.tensor(batches, device=device), n_batches, torch.tensor(init, device=device),
        torch.tensor(mask, device=device), beta=0.7, max_epochs=epochs, lr=0.05,
        uniforms=lambda e: torch.tensor(uniforms[e], device=device), sampler=sampler,
        compiled=engine == "compiled",
    )
    memories = got.memories.cpu().numpy()
    np.testing.assert_allclose(memories, expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(memories[2], init[2])  # no full batch: never moves
    assert not np.allclose(memories[0], init[0])
    per_epoch = [np.mean([loss for _, e, _, loss in losses if e == epoch])
                 for epoch in range(epochs)]
    np.testing.assert_allclose(got.loss_curve, per_epoch, rtol=1e-10)
    assert not got.converged


def test_sae_is_deterministic_under_random_state(data):
    """Same random_state, same memories; another random_state, other memories."""
    for objective in ["paper", "likelihood"]:
        a = _fit(data, objective=objective, random_state=7).memories_
        np.testing.assert_array_equal(_fit(data, objective=objective,
                                           random_state=7).memories_, a)
        assert not np.array_equal(_fit(data, objective=objective,
                                       random_state=8).memories_, a)


def test_double_softmax_sampler_draws_differently_from_categorical(data):
    """The two samplers give other memories from the same draws' uniforms."""
    a = _fit(data, objective="paper", sampler="categorical").memories_
    b = _fit(data, objective="paper", sampler="double_softmax").memories_
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("solver", ["sae", "em"])
def test_sampler_official_is_a_deprecated_alias_of_double_softmax(data, solver):
    """sampler='official' (the old name) fits what 'double_softmax' fits, with a
    FutureWarning, for one release."""
    with pytest.warns(FutureWarning, match="sampler='official' is deprecated.*"
                                           "'double_softmax'"):
        old = _fit(data, solver=solver, objective="paper", sampler="official")
    new = _fit(data, solver=solver, objective="paper", sampler="double_softmax")
    np.testing.assert_array_equal(old.memories_, new.memories_)
    assert old.sampler == "official"  # the parameter is left as the user set it


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
    """With the paper's objective a class with fewer stored patterns than a learning batch
    is not trained (as in the official code) and fit says so, and what to change; the
    'likelihood' objective trains it on its partial batch, without a warning."""
    X, y, _, head = data
    with pytest.warns(UserWarning, match=r"Classes \[2\] .* learning_batch_size=70.*"
                                         "objective='likelihood'"):
        det = _fit(data, learning_batch_size=70, max_epochs=1)
    stored = head.predict(X) == y
    init, _ = initial_memories(X[stored], y[stored], 3, 10, random_state=0,
                               order=canonical_order(X[stored]))
    np.testing.assert_allclose(det.memories_[2], init[2], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = _fit(data, learning_batch_size=70, max_epochs=1, objective="likelihood")
    assert not np.allclose(det.memories_[2], init[2])


def test_unlabelled_warning_names_no_class(data):
    """y=None: one bank, no classes; the warning speaks of stored patterns."""
    X = data[0][:30]
    with pytest.warns(UserWarning, match="There are 30 stored patterns, fewer than "
                                         "learning_batch_size=50") as record:
        RecLagDetector(objective="paper", metric="euclidean", max_epochs=2, tol=None,
                       device="cpu", random_state=0).fit(X)
    assert not any("Classes" in str(w.message) for w in record)


def test_verbose_shows_a_progress_bar(data, capsys):
    _fit(data, verbose=1, max_epochs=2)
    assert "RecLag (sae)" in capsys.readouterr().err


# ------------------------------------------------------------- the 'likelihood' objective
def test_likelihood_loss_and_grad_equal_numpy_and_autograd():
    """likelihood_loss_and_grad: the loss equals the numpy mixture log-density and the
    term-by-term reference, its gradient equals autograd's; padding rows (row weight 0)
    and padding memories play no part."""
    rng = np.random.default_rng(3)
    beta, n_rows = 0.8, [8, 5]
    x = torch.tensor(rng.normal(scale=2.0, size=(2, 8, 4)))
    x[1, 5:] = 0.0
    weights = torch.tensor([[1 / 8] * 8, [1 / 5] * 5 + [0.0] * 3], dtype=torch.float64)
    memories = torch.tensor(rng.normal(scale=1.5, size=(2, 3, 4)))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    memories[1, 2] = 0.0
    loss, grad = likelihood_loss_and_grad(x, weights, memories, mask, beta=beta)
    for c in range(2):
        rows, xi = x[c, :n_rows[c]], memories[c][mask[c]]
        assert float(loss[c]) == pytest.approx(_nll_numpy(rows.numpy(), xi.numpy(), beta),
                                               rel=1e-12)
        xi = xi.clone().requires_grad_(True)
        likelihood_reference_loss(rows, xi, beta=beta).backward()
        np.testing.assert_allclose(grad[c][mask[c]].numpy(), xi.grad.numpy(), rtol=1e-10,
                                   atol=1e-12)
        assert (grad[c][~mask[c]] == 0).all()


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_compiled_likelihood_step_equals_torch_step(dtype, rtol):
    """The compiled responsibilities kernel gives the torch form's loss and gradient."""
    rng = np.random.default_rng(6)
    n_banks, n_memories, batch, n_features, beta = 3, 4, 6, 5, 0.9
    x = torch.tensor(rng.normal(size=(n_banks, batch, n_features)), dtype=dtype)
    x[1, 4:] = 0.0
    weights = torch.tensor([[1 / 6] * 6, [1 / 4] * 4 + [0.0] * 2, [0.0] * 6], dtype=dtype)
    memories = torch.tensor(rng.normal(scale=1.5, size=(n_banks, n_memories, n_features)),
                            dtype=dtype)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    memories[~mask] = 0.0
    loss, grad = likelihood_loss_and_grad(x, weights, memories, mask, beta=beta)

    padding = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, -np.inf)[:, :, None]
    logits = torch.baddbmm(padding, memories, x.transpose(1, 2), alpha=beta).numpy()
    resp = np.empty_like(logits)
    weight_sum = np.empty((n_banks, n_memories), dtype=logits.dtype)
    got_loss = np.empty(n_banks, dtype=logits.dtype)
    constant = (np.log(mask.sum(1).numpy()) + 0.5 * n_features * np.log(2 * np.pi / beta))
    mixture_responsibilities(logits, (memories**2).sum(-1).numpy(), (x**2).sum(-1).numpy(),
                             weights.numpy(), beta, constant.astype(logits.dtype), resp,
                             weight_sum, got_loss)
    got_grad = beta * (weight_sum[:, :, None] * memories.numpy()
                       - torch.bmm(torch.from_numpy(resp), x).numpy())
    np.testing.assert_allclose(got_loss[:2], loss[:2].numpy(), rtol=rtol)
    assert got_loss[2] == 0 and (resp[2] == 0).all()  # no rows: no loss, no gradient
    np.testing.assert_allclose(got_grad, grad.numpy(), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("epochs", [1, 3])
def test_likelihood_batched_equals_per_class_reference_step_for_step(epochs, engine):
    """objective='likelihood' trains all classes at once exactly as one autograd +
    torch.optim.Adam run per class (per-class learning rates), every batch kept: the
    classes have 6, 3 and 1 batches (the last ones partial); loss_curve holds each epoch's
    mean loss per row."""
    X, y = _unequal_classes()
    init, mask = initial_memories(X, y, 3, 4, init_norm=None, random_state=0)
    lr = np.array([0.05, 0.2, 0.1])
    expected, losses = fit_likelihood_reference(
        X, y, init, beta=0.7, max_epochs=epochs, batch_size=25, lr=lr, dtype=torch.float64)
    batches, n_batches = sae_batches(X, y, 3, 25, drop_last=False)
    assert n_batches.tolist() == [6, 3, 1]
    counts = batch_row_counts(y, 3, 25, len(batches))
    device = "cuda" if engine == "cuda" else "cpu"
    got = fit_sae(
        torch.tensor(batches, device=device), n_batches, torch.tensor(init, device=device),
        torch.tensor(mask, device=device), beta=0.7, max_epochs=epochs, lr=lr,
        objective="likelihood", row_counts=counts, compiled=engine == "compiled",
    )
    np.testing.assert_allclose(got.memories.cpu().numpy(), expected, rtol=1e-9, atol=1e-10)
    assert not np.allclose(expected[2][mask[2]], init[2][mask[2]])  # 3 rows: still trained
    per_epoch = [
        sum(losses[c][epoch * n_batches[c] + b] * counts[b, c]
            for c in range(3) for b in range(n_batches[c])) / counts.sum()
        for epoch in range(epochs)
    ]
    np.testing.assert_allclose(got.loss_curve, per_epoch, rtol=1e-10)


def test_likelihood_step_is_relative_to_the_data_scale(data):
    """With lr relative to each class's spread, the 'likelihood' fit is equivariant to
    the scale of the data: features times 1000 (and beta / 1000**2) give memories times
    1000, where an absolute lr would move them 1000 times less."""
    X, y, _, head = data
    params = {"objective": "likelihood", "init_norm": None, "max_epochs": 30, "tol": None,
              "metric": "euclidean", "device": "cpu", "dtype": "float64", "random_state": 0}
    small = RecLagDetector(beta=0.5, head=head, **params).fit(X, y)
    # The same stored patterns: a head scaled to the data.
    large = RecLagDetector(beta=0.5e-6, head=(head.coef_ / 1000, head.intercept_),
                           **params).fit(1000 * X, y)
    assert not np.allclose(small.memories_, _fit(data, max_epochs=0).memories_)
    # Up to Adam's eps (1e-9, not scale-free), against rows of unit spread.
    np.testing.assert_allclose(large.memories_ / 1000, small.memories_, atol=1e-4)


def test_likelihood_reaches_the_em_optimum(data):
    """Both solvers minimise the same negative log-likelihood from the same initial
    memories: 'sae' with objective='likelihood' ends where 'em' converges, and its
    loss_curve_ is in the same units as EM's."""
    # This likelihood has two optima 1.5e-5 apart (6.89418 and 6.89428): from the
    # initial memories of seeds 0, 2 and 3 the two solvers end in different ones (their
    # memories then differ by 0.4); seed 1's initial memories lie in one's basin alone.
    params = {"init_norm": None, "beta": 1.0, "dtype": "float64", "random_state": 1}
    em = _fit(data, solver="em", max_epochs=2000, tol=1e-10, **params)
    sae = _fit(data, objective="likelihood", learning_batch_size=200, lr=0.3,
               max_epochs=1000, tol=1e-9, **params)
    assert em.converged_ and sae.converged_
    assert sae.loss_curve_[-1] < sae.loss_curve_[0]
    assert sae.loss_curve_[-1] == pytest.approx(em.loss_curve_[-1], rel=1e-5)
    np.testing.assert_allclose(np.sort(sae.memories_, axis=1),
                               np.sort(em.memories_, axis=1), atol=0.05)


# ------------------------------------------------------------ progress and stopping
def _sgd_stop(loss_curve, tol, n_iter_no_change):
    """Epochs SGDClassifier's rule runs on this curve, or None if it never stops."""
    best, stalled = np.inf, 0
    for epoch, loss in enumerate(loss_curve, start=1):
        stalled = stalled + 1 if loss > best - tol else 0
        best = min(best, loss)
        if stalled >= n_iter_no_change:
            return epoch
    return None


@pytest.mark.parametrize("solver, objective", [("sae", "paper"), ("sae", "likelihood"),
                                               ("em", "paper")])
def test_tol_none_runs_exactly_max_epochs(data, solver, objective):
    """tol=None: exactly max_epochs epochs (the paper's protocol), one finite loss per
    epoch, converged_ False and no ConvergenceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        det = _fit(data, solver=solver, objective=objective, max_epochs=7, tol=None)
    assert det.n_iter_ == 7 and len(det.loss_curve_) == 7
    assert np.isfinite(det.loss_curve_).all() and not det.converged_


@pytest.mark.parametrize("objective", ["paper", "likelihood"])
def test_sae_stops_by_sgd_rule(data, objective):
    """tol: the fit stops at the first epoch where the mean objective has not improved on
    the best by tol for n_iter_no_change epochs in a row, and its memories are those of a
    tol=None fit of that many epochs."""
    params = {"objective": objective, "lr": 0.1, "max_epochs": 300}
    full = _fit(data, **params, tol=None)
    tol, patience = 1e-3, 4
    expected = _sgd_stop(full.loss_curve_, tol, patience)
    assert expected is not None and expected < 300
    det = _fit(data, **params, tol=tol, n_iter_no_change=patience)
    assert det.converged_ and det.n_iter_ == expected
    np.testing.assert_array_equal(det.loss_curve_, full.loss_curve_[:expected])
    shorter = _fit(data, **{**params, "max_epochs": expected}, tol=None)
    np.testing.assert_array_equal(det.memories_, shorter.memories_)


def test_huge_tol_stops_after_patience(data):
    """No epoch improves by a huge tol: the fit stops after n_iter_no_change + 1 epochs
    (the first one sets the best loss)."""
    det = _fit(data, max_epochs=50, tol=1e9, n_iter_no_change=3)
    assert det.converged_ and det.n_iter_ == 4


@pytest.mark.parametrize("solver", ["sae", "em"])
def test_convergence_warning_when_max_epochs_ends_first(data, solver):
    """tol set and max_epochs reached first: a ConvergenceWarning that says what to do."""
    with pytest.warns(ConvergenceWarning, match="max_epochs=3 .* tol=None"):
        det = _fit(data, solver=solver, max_epochs=3, tol=0.0, n_iter_no_change=10)
    assert not det.converged_ and det.n_iter_ == 3


def test_em_stops_when_the_log_likelihood_stops_changing(data):
    """'em' records the mean negative log-likelihood of its memories before each
    iteration (the first equals the numpy formula on the initial memories), never
    increases it, and stops at the first change smaller than tol (GaussianMixture's
    rule)."""
    X, y, _, head = data
    tol = 1e-3
    det = _fit(data, solver="em", beta=0.5, init_norm=None, max_epochs=500, tol=tol)
    curve = np.asarray(det.loss_curve_)
    assert det.converged_ and det.n_iter_ == len(curve) < 500
    changes = np.abs(np.diff(curve))
    assert changes[-1] < tol and (changes[:-1] >= tol).all()
    assert (np.diff(curve) <= 1e-12 * np.abs(curve[1:])).all()
    stored = head.predict(X) == y
    init, mask = initial_memories(X[stored], y[stored], 3, 10, init_norm=None,
                                  random_state=np.random.RandomState(0),
                                  order=canonical_order(X[stored]))
    rows = [X[stored & (y == c)] for c in range(3)]
    expected = sum(len(r) * _nll_numpy(r, init[c][mask[c]], 0.5)
                   for c, r in enumerate(rows)) / stored.sum()
    assert curve[0] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("solver", ["sae", "em"])
def test_max_epochs_zero_keeps_the_initial_memories(data, solver):
    """max_epochs=0: no training, no loss, not converged, no warning."""
    X, y, _, head = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det = _fit(data, solver=solver, max_epochs=0, tol=1e-4)
    assert det.n_iter_ == 0 and det.loss_curve_ == [] and not det.converged_
    stored = head.predict(X) == y
    init, _ = initial_memories(X[stored], y[stored], 3, 10, random_state=0,
                               order=canonical_order(X[stored]))
    np.testing.assert_allclose(det.memories_, init, rtol=1e-12)
