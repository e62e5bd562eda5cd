"""The papers' exact configurations (benchmark.PAPER_PARAMS, the README's "Reproducing the
papers") give the papers' formulas, checked against plain numpy.

- HE and SHE (Zhang et al., ICLR 2023): the stored patterns of class c are its training rows
  that the head classifies as c; a row v is routed to the head's class c_hat;
  HE = (1/beta) lse(beta X_c v) with beta = 0.01, SHE = v . mean(X_c).
- RecLag (Moriai et al., AAAI 2025): 10 memories per class, initialised at norm 10, learned by
  the paper's objective for exactly max_epochs epochs; score (1/beta) lse(beta Xi_c v) with
  beta = 5 over the routed class's memories.
"""

import numpy as np
import pytest
from scipy.special import logsumexp

from sklearn_reclag import HopfieldEnergyDetector, RecLagDetector
from sklearn_reclag.benchmark import PAPER_PARAMS


@pytest.fixture(scope="module")
def data():
    """Three Gaussian classes, a fixed linear head that gets some rows wrong, test rows."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(3, 6))
    y = np.repeat([0, 1, 2], [80, 60, 50])
    X = centres[y] + rng.normal(size=(len(y), 6))
    coef = centres
    intercept = -0.5 * (centres**2).sum(axis=1)
    X_test = np.vstack([X[::7] + 0.3, rng.normal(scale=3.0, size=(15, 6))])
    return X, y, (coef, intercept), X_test


def _head_class(V, head):
    coef, intercept = head
    return np.argmax(V @ coef.T + intercept, axis=1)


def _correctly_classified_rows(X, y, head):
    right = _head_class(X, head) == y
    return [X[right & (y == c)] for c in range(3)]


def test_he_paper_params_give_zhang_et_al_he(data):
    X, y, head, V = data
    params = PAPER_PARAMS["HE"]
    assert params["beta"] == 0.01 and params["patterns"] == "all"
    det = HopfieldEnergyDetector(**params, head=head, device="cpu", dtype="float64").fit(X, y)
    stored = _correctly_classified_rows(X, y, head)
    assert sum(len(s) for s in stored) < len(X)  # the head gets some rows wrong
    routed = _head_class(V, head)
    expected = np.array([logsumexp(0.01 * stored[c] @ v) / 0.01
                         for v, c in zip(V, routed, strict=True)])
    np.testing.assert_allclose(det.score_samples(V), expected, rtol=1e-10)


def test_she_paper_params_give_zhang_et_al_she(data):
    X, y, head, V = data
    det = HopfieldEnergyDetector(**PAPER_PARAMS["SHE"], head=head, device="cpu",
                                 dtype="float64").fit(X, y)
    means = np.array([rows.mean(axis=0) for rows in _correctly_classified_rows(X, y, head)])
    expected = np.einsum("nd,nd->n", V, means[_head_class(V, head)])
    np.testing.assert_allclose(det.score_samples(V), expected, rtol=1e-10, atol=1e-12)


def test_reclag_paper_params_give_moriai_et_al_reclag(data):
    X, y, head, V = data
    params = {**PAPER_PARAMS["RecLag"], "max_epochs": 3}
    assert (params["n_memories"], params["beta"], params["init_norm"]) == (10, 5.0, 10.0)
    start = RecLagDetector(**{**params, "max_epochs": 0}, head=head, device="cpu",
                           dtype="float64", random_state=0).fit(X, y)
    np.testing.assert_allclose(np.linalg.norm(start.memories_, axis=-1)[start.memory_mask_],
                               10.0, rtol=1e-10)
    det = RecLagDetector(**params, head=head, device="cpu", dtype="float64",
                         random_state=0).fit(X, y)
    # tol=None: exactly max_epochs epochs, the paper's protocol.
    assert det.n_iter_ == 3 and len(det.loss_curve_) == 3
    assert not np.allclose(det.memories_, start.memories_)
    routed = _head_class(V, head)
    expected = np.array([
        logsumexp(5.0 * det.memories_[c][det.memory_mask_[c]] @ v) / 5.0
        for v, c in zip(V, routed, strict=True)
    ])
    np.testing.assert_allclose(det.score_samples(V), expected, rtol=1e-10)
    assert det.beta_ == 5.0
