"""Reference formulations of RecLag's learning objectives: NOT for use, for tests and benchmarks.

This module trains the memories the plain way, in the style of the official
``learn_RecLag.py`` (RyoMoriai/RecLag_ood_detection): one class at a time, one batch at a
time, the loss written term by term, gradients by autograd and one ``torch.optim.Adam``
per class; for the paper's objective (:func:`fit_reclag_reference`) and for the
'likelihood' objective (:func:`fit_likelihood_reference`). It exists so that

- the tests can check that the batched solver of :class:`~sklearn_reclag.RecLagDetector`
  (all classes in one tensor program, a closed-form gradient, a per-class masked Adam)
  computes the same thing, step for step, given the same random draws;
- the benchmarks can time the batched solver against the straightforward one.

The paper's objective (Moriai et al., "Rectified Lagrangian for Out-of-Distribution
Detection in Modern Hopfield Networks", AAAI 2025, as its authors' code computes it), per
class and batch x of B rows, with z = softmax(beta * x Xi^T), S memories xi_s drawn from z
for each row and importance weights ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``,
``p_s = exp(-|x - xi_s|^2 / 2)``, treated as constants::

    loss = mean_{s, b} w_s * (mean_D (x - xi_s)^2 - log(z_{b, s} + 1e-12))

Adam: betas (0.9, 0.98), eps 1e-9; batches in order, the last partial one dropped. The
'likelihood' objective: the mean over the batch of
``-log (1/M) sum_mu N(x; xi_mu, I / beta)``, every batch kept.
"""

import numpy as np
import torch

_INIT_NORM = 10.0


def fit_reclag_reference(X, y, n_memories=10, beta=5.0, n_draws=5, max_epochs=50,
                         batch_size=50, lr=1e-3, init_memories=None, seed=0, *,
                         sampler="categorical", uniforms=None, dtype=torch.float32,
                         losses=None):
    """Learn the memories of every class, one class and one batch at a time (reference).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Stored patterns (e.g. the training rows the head classifies correctly).
    y : ndarray of shape (n_samples,)
        Their classes; banks follow ``np.unique(y)``.
    n_memories, beta, n_draws, max_epochs, batch_size, lr
        As in :class:`~sklearn_reclag.RecLagDetector` (``batch_size`` is its
        ``learning_batch_size``).
    init_memories : ndarray of shape (n_classes, n_memories, n_features), default=None
        Initial memories. A class with ``m < n_memories`` rows uses the first ``m``.
        None takes ``n_memories`` random rows of each class (all its rows when it has
        fewer), each scaled to norm 10.
    seed : int, default=0
        Seeds the initialisation and the draws (a torch.Generator per class).
    sampler : {'categorical', 'double_softmax'}, default='categorical'
        Draw from z, or from softmax(z) as the authors' code does.
    uniforms : callable, default=None
        ``uniforms(class_index, epoch, batch_index)`` returns the (n_draws, batch_size)
        uniform numbers of that step's draws (inverse-CDF sampling); None draws them from
        the per-class generator. Tests use it to feed the reference and the batched solver
        the same draws.
    dtype : torch.dtype, default=torch.float32
    losses : list, default=None
        When given, the loss of every step is appended to it as a tuple
        ``(class_index, epoch, batch_index, loss)``.

    Returns
    -------
    memories : ndarray of shape (n_classes, n_memories, n_features)
        Zeros in the slots of a class with fewer than ``n_memories`` rows.
    """
    X = np.asarray(X)
    classes = np.unique(y)
    rng = np.random.RandomState(seed)
    memories = np.zeros((len(classes), n_memories, X.shape[1]))
    for i, c in enumerate(classes):
        rows = torch.tensor(X[y == c], dtype=dtype)
        n_kept = min(n_memories, len(rows))
        if init_memories is None:
            init = rows[rng.permutation(len(rows))[:n_kept]]
            init = _INIT_NORM * init / init.norm(dim=1, keepdim=True)
        else:
            init = torch.tensor(np.asarray(init_memories)[i, :n_kept], dtype=dtype)
        xi = torch.nn.Parameter(init.clone())
        optimizer = torch.optim.Adam([xi], lr=lr, betas=(0.9, 0.98), eps=1e-9)
        generator = torch.Generator().manual_seed(seed + i)
        for epoch in range(max_epochs):
            for b in range(len(rows) // batch_size):
                x = rows[b * batch_size:(b + 1) * batch_size]
                if uniforms is None:
                    u = torch.rand((n_draws, batch_size), generator=generator, dtype=dtype)
                else:
                    u = torch.as_tensor(uniforms(i, epoch, b), dtype=dtype)
                loss = reference_loss(x, xi, u, beta=beta, sampler=sampler)
                if losses is not None:
                    losses.append((i, epoch, b, loss.item()))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        memories[i, :n_kept] = xi.detach().double().numpy()
    return memories


def reference_loss(x, xi, u, *, beta, sampler="categorical"):
    """The objective on one batch ``x`` (B, D) of one class with memories ``xi`` (M, D).

    ``u`` (S, B) holds the uniform numbers of the draws: row b's s-th memory is the first
    index whose cumulative probability reaches ``u[s, b]``.
    """
    h = x @ xi.T
    z = torch.softmax(beta * h, dim=-1)
    probs = z if sampler == "categorical" else torch.softmax(z, dim=-1)
    index = (probs.cumsum(dim=-1)[None] < u[..., None]).sum(dim=-1)
    index = index.clamp(max=xi.shape[0] - 1)
    onehot = torch.nn.functional.one_hot(index, xi.shape[0]).to(x.dtype)  # (S, B, M)
    x_decoded = onehot @ xi  # (S, B, D)

    p = torch.exp(-((x[None] - x_decoded) ** 2).sum(dim=-1) / 2)
    weight = ((p + 1e-16) / (p + 1e-16).mean(dim=0)).detach()
    mse = ((x[None] - x_decoded) ** 2).mean(dim=-1)
    log_z = torch.log((z[None] * onehot).sum(dim=-1) + 1e-12)
    return (weight * (mse - log_z)).mean()


def likelihood_reference_loss(x, xi, *, beta):
    """Mean negative log-likelihood of the rows ``x`` (B, D) under the equal-weight
    isotropic Gaussian mixture of variance 1/beta on the memories ``xi`` (M, D), written
    term by term: ``-log (1/M) sum_mu N(x; xi_mu, I / beta)``."""
    n_features = x.shape[1]
    sq_dist = ((x[:, None, :] - xi[None, :, :]) ** 2).sum(dim=-1)  # (B, M)
    log_normal = -0.5 * beta * sq_dist + 0.5 * n_features * np.log(beta / (2 * np.pi))
    log_density = torch.logsumexp(log_normal, dim=1) - np.log(xi.shape[0])
    return -log_density.mean()


def fit_likelihood_reference(X, y, init_memories, *, beta=5.0, max_epochs=50, batch_size=50,
                             lr=1e-3, dtype=torch.float32):
    """Learn the memories by the 'likelihood' objective, one class and one batch at a time.

    Batches are taken in order, the last partial batch kept; one ``torch.optim.Adam``
    (betas (0.9, 0.98), eps 1e-9) per class on :func:`likelihood_reference_loss`, by
    autograd. The reference of the batched solver's ``objective='likelihood'``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Classes; banks follow ``np.unique(y)``.
    init_memories : ndarray of shape (n_classes, n_memories, n_features)
        A class with ``m < n_memories`` rows uses the first ``m``.
    beta, max_epochs, batch_size : as in :class:`~sklearn_reclag.RecLagDetector`
    lr : float or sequence of float (one per class)
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    memories : ndarray of shape (n_classes, n_memories, n_features)
        Zeros in the slots of a class with fewer than ``n_memories`` rows.
    losses : list of list of float
        ``losses[c]``: the loss of every step of class c, in order.
    """
    X = np.asarray(X)
    classes = np.unique(y)
    init_memories = np.asarray(init_memories)
    lrs = np.broadcast_to(np.asarray(lr, dtype=float), (len(classes),))
    memories = np.zeros(init_memories.shape)
    losses = []
    for i, c in enumerate(classes):
        rows = torch.tensor(X[y == c], dtype=dtype)
        n_kept = min(init_memories.shape[1], len(rows))
        xi = torch.nn.Parameter(torch.tensor(init_memories[i, :n_kept], dtype=dtype))
        optimizer = torch.optim.Adam([xi], lr=float(lrs[i]), betas=(0.9, 0.98), eps=1e-9)
        losses.append([])
        for _ in range(max_epochs):
            for start in range(0, len(rows), batch_size):
                loss = likelihood_reference_loss(rows[start:start + batch_size], xi, beta=beta)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses[-1].append(loss.item())
        memories[i, :n_kept] = xi.detach().double().numpy()
    return memories, losses
