"""Reference formulation of RecLag's learning objective: NOT for use, for tests and benchmarks.

This module trains the memories the plain way, in the style of the official
``learn_RecLag.py`` (RyoMoriai/RecLag_ood_detection): one class at a time, one batch at a
time, the loss written term by term, gradients by autograd and one ``torch.optim.Adam``
per class. It exists so that

- the tests can check that the batched solver of :class:`~sklearn_reclag.RecLagDetector`
  (all classes in one tensor program, a closed-form gradient, a per-class masked Adam)
  computes the same thing, step for step, given the same random draws;
- the benchmarks can time the batched solver against the straightforward one.

The objective (specs/reclag.md), per class and batch x of B rows, with
z = softmax(beta * x Xi^T), S memories xi_s drawn from z for each row and importance
weights ``w_s = (p_s + 1e-16) / mean_s(p + 1e-16)``, ``p_s = exp(-|x - xi_s|^2 / 2)``,
treated as constants::

    loss = mean_{s, b} w_s * (mean_D (x - xi_s)^2 - log(z_{b, s} + 1e-12))

Adam: betas (0.9, 0.98), eps 1e-9; batches in order, the last partial one dropped.
"""

import numpy as np
import torch

_INIT_NORM = 10.0


def fit_reclag_reference(X, y, n_memories=10, beta=5.0, n_draws=5, max_epochs=50,
                         batch_size=50, lr=1e-3, init_memories=None, seed=0, *,
                         sampler="categorical", uniforms=None, dtype=torch.float32):
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
    sampler : {'categorical', 'official'}, default='categorical'
        Draw from z, or from softmax(z) as the official code does.
    uniforms : callable, default=None
        ``uniforms(class_index, epoch, batch_index)`` returns the (n_draws, batch_size)
        uniform numbers of that step's draws (inverse-CDF sampling); None draws them from
        the per-class generator. Tests use it to feed the reference and the batched solver
        the same draws.
    dtype : torch.dtype, default=torch.float32

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
