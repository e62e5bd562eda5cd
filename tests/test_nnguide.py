"""NNGuideDetector: the score against a numpy reference written from the official code, the
bank (the official 1 %, not the paper's whole training set), the leave-one-out threshold,
bad input, and faiss's search (the contract shared by every estimator is in
test_common.py)."""

import math
import pickle
import sys
import warnings

import joblib
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sklearn_reclag import OOD_LABEL, NNGuideDetector
from sklearn_reclag.base import quantile_off_ties
from sklearn_reclag.detectors import nnguide
from sklearn_reclag.metrics import fpr95_scorer


def _classes(rng, n=120, d=12, n_classes=3):
    """Non-negative rows (ReLU-like features) of a few classes, and a head whose
    energies are positive (as a network's logits give)."""
    centres = rng.uniform(0.5, 2.0, size=(n_classes, d))
    y = np.arange(n) % n_classes
    X = np.maximum(centres[y] + 0.5 * rng.normal(size=(n, d)), 0)
    coef = rng.normal(size=(n_classes, d))
    intercept = np.full(n_classes, 5.0)
    return X, y, (coef, intercept)


# ---------------------------------------------------------------- reference formula
def nnguide_reference(X_test, X_bank, coef, intercept, k, leave_out=None):
    """OpenOOD's NNGuidePostprocessor in numpy: the guide bank is the normalised bank rows
    times their logsumexp confidence; the score is the query's logsumexp energy times the
    mean of its k largest inner products with the guide rows (faiss IndexFlatIP), with
    the query normalised. ``leave_out``: a boolean (n_test, n_bank) mask of the bank rows
    left out of each query's search."""
    def normalizer(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    bank_confs = logsumexp(X_bank @ coef.T + intercept, axis=-1)
    bank_guide = normalizer(X_bank) * bank_confs[:, None]
    similarities = normalizer(X_test) @ bank_guide.T
    if leave_out is not None:
        similarities[leave_out] = -np.inf
    top = -np.sort(-similarities, axis=1)[:, :k]
    energy = logsumexp(X_test @ coef.T + intercept, axis=-1)
    return top.mean(axis=1) * energy


@pytest.mark.parametrize("bank_fraction", [0.4, 1.0])
@pytest.mark.parametrize("k", [1, 7, 30])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-5)])
def test_scores_equal_the_official_formula(rng, monkeypatch, k, bank_fraction, dtype, rtol):
    X, y, head = _classes(rng)
    X_test = np.vstack([_classes(rng, n=40)[0], X[:5]])
    # Blocks of 8 x 13 similarities: the top-k is merged across many chunks of the bank
    # (some narrower than k) and of the queries: the torch search's blocks, hence
    # algorithm='brute' ('auto' would search with faiss in float32 where it is installed).
    monkeypatch.setattr(nnguide, "_BLOCK", 8 * 13)
    det = NNGuideDetector(k, bank_fraction=bank_fraction, algorithm="brute", head=head,
                          device="cpu", dtype=dtype, batch_size=8, random_state=0).fit(X, y)
    expected = nnguide_reference(X_test, X[det.bank_indices_], *head, k)
    np.testing.assert_allclose(det.score_samples(X_test), expected, rtol=rtol)


def test_the_bank_is_the_official_fraction_not_the_training_set(rng):
    """The paper guides by the training set; the official code keeps about 1 % of it
    (alpha = 0.01). The default follows the code: a bank of ceil(1 %) of the rows,
    drawn at random, and its scores differ from those of the whole training set."""
    X, y, head = _classes(rng, n=3000)
    X_test = _classes(rng, n=50)[0]
    det = NNGuideDetector(10, head=head, device="cpu", dtype="float64",
                          random_state=0).fit(X, y)
    assert det.bank_.shape == (30, X.shape[1])
    assert len(np.unique(det.bank_indices_)) == 30
    np.testing.assert_allclose(det.score_samples(X_test),
                               nnguide_reference(X_test, X[det.bank_indices_], *head, 10),
                               rtol=1e-10)
    whole = NNGuideDetector(10, bank_fraction=1.0, head=head, device="cpu",
                            dtype="float64").fit(X, y)
    np.testing.assert_array_equal(whole.bank_indices_, np.arange(len(X)))
    np.testing.assert_allclose(whole.score_samples(X_test),
                               nnguide_reference(X_test, X, *head, 10), rtol=1e-10)
    assert not np.allclose(det.score_samples(X_test), whole.score_samples(X_test))


def test_the_bank_holds_at_least_k_plus_one_rows(rng):
    """1 % of 120 rows is 2: the bank grows to k + 1 rows, which the mean over k
    neighbours and the leave-one-out threshold need."""
    X, y, head = _classes(rng)
    det = NNGuideDetector(7, head=head, device="cpu", random_state=0).fit(X, y)
    assert det.bank_.shape[0] == 8
    assert NNGuideDetector(7, bank_fraction=0.5, head=head, device="cpu",
                           random_state=0).fit(X, y).bank_.shape[0] == 60


def test_guide_rows_are_unit_rows_times_their_energy(rng):
    X, y, head = _classes(rng)
    det = NNGuideDetector(5, bank_fraction=1.0, head=head, device="cpu",
                          dtype="float64").fit(X, y)
    energies = logsumexp(X @ head[0].T + head[1], axis=1)
    np.testing.assert_allclose(np.linalg.norm(det.bank_, axis=1), energies, rtol=1e-12)


def test_random_state_draws_the_bank(rng):
    X, y, head = _classes(rng, n=600)
    bank = lambda seed: NNGuideDetector(  # noqa: E731
        5, bank_fraction=0.1, head=head, device="cpu", random_state=seed).fit(X, y).bank_indices_
    np.testing.assert_array_equal(bank(0), bank(0))
    assert not np.array_equal(bank(0), bank(1))


# ------------------------------------------------------------------------ threshold
@pytest.mark.parametrize("bank_fraction", [0.3, 1.0])
def test_threshold_reads_bank_rows_leave_one_out(rng, bank_fraction):
    """offset_ is the contamination quantile of the training rows' scores as new rows
    would get them: a bank row without its own guide row, the other rows as they are."""
    X, y, (coef, intercept) = _classes(rng)
    # Nearly equal energies: a bank row's own guide row is its nearest, so that its own
    # score is optimistic and the threshold's scores must leave it out.
    head = (0.01 * coef, intercept)
    det = NNGuideDetector(5, bank_fraction=bank_fraction, head=head, device="cpu",
                          dtype="float64", random_state=0).fit(X, y)
    own = det.bank_indices_[None, :] == np.arange(len(X))[:, None]
    held_out = nnguide_reference(X, X[det.bank_indices_], *head, 5, leave_out=own)
    assert det.offset_ == pytest.approx(quantile_off_ties(held_out, 0.05, "float64"),
                                        rel=1e-10)
    own_scores = det.score_samples(X)
    assert (own_scores[det.bank_indices_] > held_out[det.bank_indices_]).all()
    assert det.offset_ < quantile_off_ties(own_scores, 0.05, "float64")


def test_threshold_leaves_out_every_copy_of_a_row(rng):
    """Every row twice: a row is scored without both of its guide rows, and one row per
    pair sets the threshold."""
    X, y, (coef, intercept) = _classes(rng)
    head = (0.01 * coef, intercept)
    order = rng.permutation(2 * len(X))
    X2, y2 = np.r_[X, X][order], np.r_[y, y][order]
    det = NNGuideDetector(5, bank_fraction=1.0, head=head, device="cpu",
                          dtype="float64").fit(X2, y2)
    copies = (X2[:, None, :] == X2[None, :, :]).all(axis=2)
    held_out = nnguide_reference(X2, X2, *head, 5, leave_out=copies)
    first = np.unique(X2, axis=0, return_index=True)[1]
    assert det.offset_ == pytest.approx(
        quantile_off_ties(held_out[first], 0.05, "float64"), rel=1e-10)


def test_rows_in_another_order_give_the_same_model(rng):
    """The bank and the threshold's rows are drawn by the rows' content."""
    X, y, head = _classes(rng, n=600)
    X_test = _classes(rng, n=30)[0]
    det = NNGuideDetector(5, bank_fraction=0.1, head=head, device="cpu", dtype="float64",
                          random_state=0).fit(X, y)
    order = rng.permutation(len(X))
    permuted = NNGuideDetector(5, bank_fraction=0.1, head=head, device="cpu",
                               dtype="float64", random_state=0).fit(X[order], y[order])
    np.testing.assert_array_equal(np.sort(order[permuted.bank_indices_]), det.bank_indices_)
    np.testing.assert_allclose(permuted.score_samples(X_test), det.score_samples(X_test),
                               rtol=1e-12)
    assert permuted.offset_ == pytest.approx(det.offset_, rel=1e-12)


def test_new_rows_are_accepted_at_one_minus_contamination(rng):
    X, y, head = _classes(rng, n=3000)
    det = NNGuideDetector(10, bank_fraction=1.0, head=head, device="cpu").fit(X[:1500],
                                                                             y[:1500])
    accepted = float(np.mean(det.predict(X[1500:]) == 1))
    assert abs(accepted - 0.95) < 0.025


# ------------------------------------------------------------------ head and labels
def test_needs_labels_or_a_head(rng):
    X, y, head = _classes(rng)
    with pytest.raises(ValueError, match="requires y"):
        NNGuideDetector(5, device="cpu").fit(X)
    det = NNGuideDetector(5, head=head, device="cpu").fit(X)
    assert det.head_coef_.shape == (3, X.shape[1])
    # head=None fits a softmax regression on (X, y).
    assert NNGuideDetector(5, device="cpu").fit(X, y).classes_.tolist() == [0, 1, 2]


def test_fit_ignores_ood_label_rows(rng):
    X, y, head = _classes(rng)
    X_ood = rng.uniform(0, 3, size=(20, X.shape[1]))
    base = NNGuideDetector(5, bank_fraction=1.0, head=head, device="cpu",
                           dtype="float64").fit(X, y)
    mixed = NNGuideDetector(5, bank_fraction=1.0, head=head, device="cpu",
                            dtype="float64").fit(np.vstack([X, X_ood]),
                                                 np.r_[y, np.full(20, OOD_LABEL)])
    np.testing.assert_array_equal(base.bank_, mixed.bank_)
    assert base.offset_ == mixed.offset_


def test_non_positive_energies_warn_with_the_fix(rng):
    X, y, (coef, intercept) = _classes(rng)
    with pytest.warns(UserWarning, match="energy .* <= 0.*intercept"):
        NNGuideDetector(5, head=(coef, intercept - 100), device="cpu").fit(X, y)


# -------------------------------------------------------------------------- bad input
def test_too_few_rows_for_k_warns_and_uses_n_minus_one(rng):
    X, y, head = _classes(rng, n=12)
    with pytest.warns(UserWarning, match=r"n_neighbors \(50\).*= 11"):
        det = NNGuideDetector(50, head=head, device="cpu").fit(X, y)
    assert det.n_neighbors_ == 11 and det.bank_.shape[0] == 12


def test_one_row_is_refused(rng):
    X, _, head = _classes(rng, n=3)
    with pytest.raises(ValueError, match="n_samples = 1"):
        NNGuideDetector(5, head=head, device="cpu").fit(X[:1])


@pytest.mark.parametrize("params, match", [
    ({"n_neighbors": 0}, "n_neighbors"),
    ({"bank_fraction": 0.0}, "bank_fraction"),
    ({"bank_fraction": 1.5}, "bank_fraction"),
    # No approximate index: see the docstring's Notes.
    ({"algorithm": "faiss-ivf"}, "algorithm"),
])
def test_bad_parameters_are_refused(rng, params, match):
    X, y, _ = _classes(rng)
    with pytest.raises(ValueError, match=match):
        NNGuideDetector(**params, device="cpu").fit(X, y)


def test_head_of_the_wrong_width_is_refused(rng):
    X, y, (coef, intercept) = _classes(rng)
    with pytest.raises(ValueError, match="head coef has shape"):
        NNGuideDetector(5, head=(coef[:, :5], intercept), device="cpu").fit(X, y)


# ------------------------------------------------------------------ model selection
def test_search_space_runs_in_a_grid_search(rng):
    X, y, head = _classes(rng, n=300)
    X_ood = rng.uniform(0, 3, size=(60, X.shape[1]))
    search = GridSearchCV(
        NNGuideDetector(head=head, device="cpu", random_state=0),
        NNGuideDetector.search_space, scoring=fpr95_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    search.fit(np.vstack([X, X_ood]), np.r_[y, np.full(60, OOD_LABEL)])
    assert set(search.best_params_) == {"n_neighbors", "bank_fraction"}
    assert len(search.cv_results_["params"]) == math.prod(
        len(v) for v in NNGuideDetector.search_space.values())


def test_rows_of_one_direction_score_their_own_score(rng):
    """One feature: every bank row is a copy of every training row once normalised; with
    no row to leave out against, a row scores as a new row like it."""
    X = rng.uniform(1, 2, size=(30, 1))
    y = np.arange(30) % 2
    det = NNGuideDetector(5, bank_fraction=1.0, head=(np.array([[1.0], [-1.0]]),
                                                      np.array([3.0, 3.0])),
                          device="cpu", dtype="float64").fit(X, y)
    assert np.isfinite(det.offset_)
    assert np.mean(det.predict(X) == 1) >= 0.9


# ------------------------------------------------------------------ algorithm (faiss)
def _faiss():
    """faiss is an optional extra: its tests are skipped without it."""
    return pytest.importorskip("faiss")


def _digits():
    """Digits pixels in [0, 1] (non-negative, as a network's ReLU features), the classes
    0-4, and a head with positive energies; the queries are every digit and a row of
    zeros (no direction: similarity 0)."""
    X, y = load_digits(return_X_y=True)
    X = X / 16
    rng = np.random.default_rng(0)
    head = (0.3 * rng.normal(size=(5, X.shape[1])), np.full(5, 5.0))
    return X[y < 5], y[y < 5], head, np.vstack([X, np.zeros(X.shape[1])])


@pytest.mark.parametrize("bank_fraction", [0.05, 1.0])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_faiss_search_gives_the_brute_scores(k, bank_fraction):
    """faiss's exact inner-product search finds the same k largest similarities (to
    float32 rounding: its own products), and offset_ is read by the torch search."""
    _faiss()
    X, y, head, queries = _digits()
    fitted = {
        algorithm: NNGuideDetector(k, bank_fraction=bank_fraction, algorithm=algorithm,
                                   head=head, device="cpu", random_state=0).fit(X, y)
        for algorithm in ("brute", "faiss")
    }
    brute, fast = fitted["brute"], fitted["faiss"]
    assert (brute.algorithm_, fast.algorithm_) == ("brute", "faiss")
    np.testing.assert_array_equal(fast.bank_, brute.bank_)
    np.testing.assert_allclose(fast.score_samples(queries), brute.score_samples(queries),
                               rtol=1e-5)
    assert fast.score_samples(queries[-1:])[0] == 0.0
    np.testing.assert_allclose(
        fast.score_samples(queries[:200]),
        nnguide_reference(queries[:200], X[fast.bank_indices_], *head, k), rtol=2e-5)
    assert fast.offset_ == brute.offset_  # offset_ is read by the exact search


def test_auto_uses_faiss_on_cpu_float32_and_brute_otherwise(monkeypatch):
    _faiss()
    X, y, head, _ = _digits()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'auto' never warns
        assert NNGuideDetector(10, head=head, device="cpu").fit(X, y).algorithm_ == "faiss"
        assert NNGuideDetector(10, head=head, device="cpu",
                               dtype="float64").fit(X, y).algorithm_ == "brute"
        monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss fails
        assert NNGuideDetector(10, head=head, device="cpu").fit(X, y).algorithm_ == "brute"


def test_faiss_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    X, y, head, _ = _digits()
    with pytest.raises(ImportError, match=r"pip install \"sklearn-reclag\[faiss\]\""):
        NNGuideDetector(10, algorithm="faiss", head=head, device="cpu").fit(X, y)


def test_faiss_in_float64_warns_and_searches_exactly():
    _faiss()
    X, y, head, queries = _digits()
    with pytest.warns(UserWarning, match="algorithm='brute'.*dtype='float32'"):
        det = NNGuideDetector(10, algorithm="faiss", head=head, device="cpu",
                              dtype="float64", random_state=0).fit(X, y)
    assert det.algorithm_ == "brute"
    brute = NNGuideDetector(10, algorithm="brute", head=head, device="cpu", dtype="float64",
                            random_state=0).fit(X, y)
    np.testing.assert_array_equal(det.score_samples(queries), brute.score_samples(queries))
    assert det.offset_ == brute.offset_


def test_faiss_detector_round_trips_through_joblib_and_pickle(tmp_path):
    _faiss()
    X, y, head, queries = _digits()
    det = NNGuideDetector(10, algorithm="faiss", head=head, device="cpu",
                          random_state=0).fit(X, y)
    joblib.dump(det, tmp_path / "nnguide.joblib")
    for loaded in (joblib.load(tmp_path / "nnguide.joblib"), pickle.loads(pickle.dumps(det))):
        assert loaded.algorithm_ == "faiss" and loaded.offset_ == det.offset_
        np.testing.assert_array_equal(loaded.score_samples(queries), det.score_samples(queries))
