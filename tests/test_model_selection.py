"""OOD-aware model selection: the (X, y) helper, threshold scorers, GridSearchCV end to end."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score

from sklearn_reclag import (
    OOD_LABEL,
    DensePolynomialHopfield,
    EnergyDetector,
    KNNDetector,
    ReActDetector,
    RecLagDetector,
)
from sklearn_reclag.metrics import (
    fpr95_scorer,
    fpr_at_threshold,
    fpr_at_threshold_scorer,
    fpr_at_tpr,
    ood_auroc_scorer,
    ood_balanced_accuracy,
    ood_balanced_accuracy_scorer,
    tpr_at_threshold,
    tpr_at_threshold_scorer,
)
from sklearn_reclag.model_selection import is_ood_label, make_ood_dataset, search_diagnostics


@pytest.fixture(scope="module")
def ood_data():
    """A small digits problem: 300 ID rows of classes 0-4, 150 OOD rows of classes 5-9."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    id_rows = rng.choice(np.flatnonzero(y < 5), 300, replace=False)
    ood_rows = rng.choice(np.flatnonzero(y >= 5), 150, replace=False)
    return make_ood_dataset(X[id_rows], y[id_rows], X[ood_rows], random_state=0)


# ------------------------------------------------------------------ make_ood_dataset
def test_make_ood_dataset_stacks_rows_with_ood_label(rng):
    X_id, y_id = rng.normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    X_ood = rng.normal(size=(4, 3))
    X, y = make_ood_dataset(X_id, y_id, X_ood, shuffle=False)
    np.testing.assert_array_equal(X, np.vstack([X_id, X_ood]))
    np.testing.assert_array_equal(y, np.r_[y_id, [OOD_LABEL] * 4])


def test_make_ood_dataset_shuffle_is_a_seeded_permutation(rng):
    X_id, y_id, X_ood = rng.normal(size=(20, 2)), np.arange(20) % 3, rng.normal(size=(10, 2))
    X_id_copy, X_ood_copy = X_id.copy(), X_ood.copy()
    X1, y1 = make_ood_dataset(X_id, y_id, X_ood, random_state=3)
    X2, y2 = make_ood_dataset(X_id, y_id, X_ood, random_state=3)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    # Same rows, each with its own label, in another order.
    X_ref, y_ref = make_ood_dataset(X_id, y_id, X_ood, shuffle=False)
    order_ref, order = np.lexsort(X_ref.T), np.lexsort(X1.T)
    np.testing.assert_array_equal(X_ref[order_ref], X1[order])
    np.testing.assert_array_equal(y_ref[order_ref], y1[order])
    assert not np.array_equal(y1, y_ref)
    np.testing.assert_array_equal(X_id, X_id_copy)
    np.testing.assert_array_equal(X_ood, X_ood_copy)


@pytest.mark.parametrize(
    "X_id, y_id, X_ood, error, match",
    [
        (np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 3)), ValueError, "X_ood has 3;"),
        (np.zeros((3, 2)), [0, 1], np.zeros((2, 2)), ValueError, "y_id has 2 labels"),
        (np.zeros((3, 2)), [0, -1, 1], np.zeros((2, 2)), ValueError, "y_id holds OOD_LABEL"),
        (np.zeros((3, 2)), np.array(["a", 2, "a"], dtype=object), np.zeros((2, 2)), TypeError,
         "mixing strings"),
        (np.zeros((3, 2)), ["a", "-1", "a"], np.zeros((2, 2)), ValueError, "OOD_LABEL \\('-1'\\)"),
        (np.full((3, 2), np.nan), [0, 1, 0], np.zeros((2, 2)), ValueError, "NaN"),
    ],
)
def test_make_ood_dataset_rejects_bad_input(X_id, y_id, X_ood, error, match):
    with pytest.raises(error, match=match):
        make_ood_dataset(X_id, y_id, X_ood)


@pytest.mark.parametrize("y_id", [["cat", "dog", "cat"], np.array(["a", "b", "a"], dtype=object)],
                         ids=["str", "object"])
def test_make_ood_dataset_marks_ood_rows_of_string_labels_with_the_string_minus_one(y_id):
    """A one-character dtype must not truncate '-1' to '-'."""
    X, y = make_ood_dataset(np.zeros((3, 2)), y_id, np.ones((2, 2)), shuffle=False)
    assert y.dtype.kind == "U"
    np.testing.assert_array_equal(y, np.r_[np.asarray(y_id, dtype=str), ["-1", "-1"]])
    np.testing.assert_array_equal(is_ood_label(y), [False] * 3 + [True] * 2)


def test_stratified_folds_of_string_labels_each_hold_ood_rows(ood_data):
    X, y = ood_data
    names = np.array(["zero", "one", "two", "three", "four"])
    X_s, y_s = make_ood_dataset(X[y != OOD_LABEL], names[y[y != OOD_LABEL]],
                                X[y == OOD_LABEL], random_state=0)
    for _, test in StratifiedKFold(5).split(X_s, y_s):
        assert (y_s[test] == "-1").any() and (y_s[test] != "-1").any()


@pytest.mark.parametrize("cv", [StratifiedKFold(5), KFold(5)], ids=["stratified", "kfold"])
def test_every_test_fold_holds_id_and_ood_rows(ood_data, cv):
    """StratifiedKFold treats -1 as a class; KFold relies on make_ood_dataset's shuffle."""
    X, y = ood_data
    for _, test in cv.split(X, y):
        assert (y[test] == OOD_LABEL).any() and (y[test] != OOD_LABEL).any()


# ------------------------------------------------------------- threshold metrics
def test_threshold_metrics_match_their_definitions(rng):
    y_true = np.where(rng.random(200) < 0.3, OOD_LABEL, rng.integers(0, 4, 200))
    y_pred = np.where(rng.random(200) < 0.6, 1, -1)
    is_id, accepted = y_true != OOD_LABEL, y_pred == 1
    tpr, fpr = tpr_at_threshold(y_true, y_pred), fpr_at_threshold(y_true, y_pred)
    assert tpr == pytest.approx(accepted[is_id].mean())
    assert fpr == pytest.approx(accepted[~is_id].mean())
    bacc = ood_balanced_accuracy(y_true, y_pred)
    assert bacc == pytest.approx((tpr + 1 - fpr) / 2)
    assert bacc == pytest.approx(balanced_accuracy_score(is_id, accepted))
    # A boolean "is ID" y_true means the same.
    assert ood_balanced_accuracy(is_id, y_pred) == bacc


def test_accepting_everything_scores_half_whatever_the_ood_share():
    for n_ood in (1, 5, 50):
        y_true = np.r_[np.zeros(10, int), np.full(n_ood, OOD_LABEL)]
        assert ood_balanced_accuracy(y_true, np.ones(len(y_true), int)) == 0.5


@pytest.mark.parametrize("metric", [ood_balanced_accuracy, fpr_at_threshold, tpr_at_threshold])
def test_threshold_metrics_reject_bad_input(metric):
    with pytest.raises(ValueError, match=r"\+1 \(ID\) and -1 \(OOD\)"):
        metric([0, 1, -1], [0, 1, 1])  # class labels, not predict's +1 / -1
    with pytest.raises(ValueError, match="no OOD rows"):
        metric([0, 1, 2], [1, 1, -1])
    with pytest.raises(ValueError, match="needs y_true"):
        metric(None, [1, -1])
    with pytest.raises(ValueError, match="entries"):
        metric([0, -1], [1, -1, 1])


def test_threshold_scorers_read_predict(ood_data):
    X, y = ood_data
    det = EnergyDetector(device="cpu").fit(X, y)
    y_pred = det.predict(X)
    assert ood_balanced_accuracy_scorer(det, X, y) == ood_balanced_accuracy(y, y_pred)
    assert fpr_at_threshold_scorer(det, X, y) == -fpr_at_threshold(y, y_pred)
    assert tpr_at_threshold_scorer(det, X, y) == tpr_at_threshold(y, y_pred)


# ------------------------------------------------------------------ GridSearchCV
def test_grid_search_on_fpr95_equals_hand_computed_cv(ood_data):
    """The search scores each candidate exactly as fit + fpr_at_tpr on every held-out fold."""
    X, y = ood_data
    cv = StratifiedKFold(3)
    grid = GridSearchCV(
        ReActDetector(device="cpu"), {"percentile": [50, 90, 100]}, scoring=fpr95_scorer, cv=cv
    ).fit(X, y)
    for i, params in enumerate(grid.cv_results_["params"]):
        by_hand = [
            -fpr_at_tpr(y[test], ReActDetector(device="cpu", **params).fit(X[train], y[train])
                        .score_samples(X[test]))
            for train, test in cv.split(X, y)
        ]
        assert grid.cv_results_["mean_test_score"][i] == pytest.approx(np.mean(by_hand))
    assert grid.best_index_ == np.argmax(grid.cv_results_["mean_test_score"])
    assert grid.best_estimator_.percentile == grid.best_params_["percentile"]


def test_contamination_moves_only_threshold_scores_and_refit_follows_the_chosen_one(ood_data):
    """FPR95 and AUROC are flat in contamination; balanced accuracy is not, and refit='bacc'
    picks its best candidate."""
    X, y = ood_data
    scoring = {
        "fpr95": fpr95_scorer,
        "auroc": ood_auroc_scorer,
        "bacc": ood_balanced_accuracy_scorer,
        "fpr": fpr_at_threshold_scorer,
        "tpr": tpr_at_threshold_scorer,
    }
    grid = GridSearchCV(
        EnergyDetector(device="cpu"),
        {"contamination": [0.01, 0.1, 0.3, 0.5]},
        scoring=scoring,
        refit="bacc",
        cv=KFold(3),
    ).fit(X, y)
    res = grid.cv_results_
    np.testing.assert_allclose(res["mean_test_fpr95"], res["mean_test_fpr95"][0])
    np.testing.assert_allclose(res["mean_test_auroc"], res["mean_test_auroc"][0])
    assert np.ptp(res["mean_test_bacc"]) > 0.01
    # A higher contamination rejects more rows: fewer ID and fewer OOD rows accepted.
    assert np.all(np.diff(res["mean_test_tpr"]) <= 0)
    assert np.all(np.diff(-res["mean_test_fpr"]) <= 0)
    assert grid.best_index_ == np.argmax(res["mean_test_bacc"])
    assert grid.best_params_ == res["params"][grid.best_index_]
    assert grid.best_estimator_.contamination == grid.best_params_["contamination"]
    assert grid.best_score_ == res["mean_test_bacc"][grid.best_index_]


def test_reclag_grid_search_over_beta_and_gamma(ood_data):
    """GridSearchCV(RecLagDetector(), {beta, gamma}) runs with the OOD scorers; FPR95 is
    flat in gamma (it only moves the threshold) and refit follows balanced accuracy."""
    X, y = ood_data
    grid = GridSearchCV(
        RecLagDetector(solver="em", device="cpu", random_state=0),
        {"beta": [1.0, 5.0], "gamma": [1.0, 10.0, 100.0]},
        scoring={"fpr95": fpr95_scorer, "bacc": ood_balanced_accuracy_scorer},
        refit="bacc",
        cv=StratifiedKFold(3),
    ).fit(X, y)
    res = grid.cv_results_
    for beta in (1.0, 5.0):
        rows = [i for i, p in enumerate(res["params"]) if p["beta"] == beta]
        np.testing.assert_allclose(res["mean_test_fpr95"][rows], res["mean_test_fpr95"][rows[0]])
    assert np.isfinite(res["mean_test_bacc"]).all()
    assert grid.best_index_ == np.argmax(res["mean_test_bacc"])
    assert grid.best_estimator_.gamma == grid.best_params_["gamma"]


@pytest.mark.slow
def test_dense_polynomial_hopfield_grid_search_over_n(ood_data):
    """The classifier's n is selected on FPR95 of its score_samples with the default
    (stratified) CV, OOD rows in every fold."""
    X, y = ood_data
    grid = GridSearchCV(
        DensePolynomialHopfield(device="cpu", random_state=0), {"n": [2, 3]},
        scoring=fpr95_scorer, cv=3,
    ).fit(X, y)
    res = grid.cv_results_
    assert np.isfinite(res["mean_test_score"]).all()
    assert grid.best_index_ == np.argmax(res["mean_test_score"])
    # The search's score of the best candidate is reproducible by hand.
    best = DensePolynomialHopfield(device="cpu", random_state=0, **grid.best_params_)
    score = cross_val_score(best, X, y, scoring=fpr95_scorer, cv=3)
    assert score.mean() == pytest.approx(grid.best_score_)


# ------------------------------------------------------ string labels, end to end
@pytest.fixture(scope="module")
def string_ood_data(ood_data):
    """ood_data with class names instead of digits: numpy makes OOD_LABEL the string '-1'."""
    X, y = ood_data
    names = np.array(["zero", "one", "two", "three", "four"])
    y_str = np.array([OOD_LABEL if label == OOD_LABEL else names[label] for label in y],
                     dtype=object).astype(str)
    assert set(np.unique(y_str)) == {"-1", *names}
    return X, y_str


def test_fit_ignores_rows_labelled_the_string_minus_one(string_ood_data):
    X, y = string_ood_data
    det = EnergyDetector(device="cpu").fit(X, y)
    assert "-1" not in det.classes_ and len(det.classes_) == 5
    same = EnergyDetector(device="cpu").fit(X[y != "-1"], y[y != "-1"])
    np.testing.assert_array_equal(det.score_samples(X), same.score_samples(X))


@pytest.mark.filterwarnings("ignore:ReActDetector. all .* training scores are equal")
def test_grid_search_with_string_labels_scores_finite_and_picks_the_better_value(
        string_ood_data):
    """percentile=0 clips every activation to the same value: every score ties, FPR95 is
    1. A search whose scores were all NaN would keep that first value."""
    X, y = string_ood_data
    grid = GridSearchCV(
        ReActDetector(device="cpu"), {"percentile": [0, 100]}, scoring=fpr95_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0), error_score="raise",
    ).fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert scores[0] == -1.0 and scores[1] > -0.9
    assert grid.best_params_ == {"percentile": 100}


def test_grid_search_with_folds_lacking_ood_rows_raises_with_error_score_raise(ood_data):
    """Sorted rows cut into contiguous folds: one test fold has no OOD row. With
    error_score='raise' the search stops with the scorer's explanation."""
    X, y = ood_data
    order = np.argsort(y == OOD_LABEL, kind="stable")
    with pytest.raises(ValueError, match="no OOD row"):
        GridSearchCV(EnergyDetector(device="cpu"), {"temperature": [1.0, 2.0]},
                     scoring=fpr95_scorer, cv=KFold(3), error_score="raise",
                     ).fit(X[order], y[order])


# -------------------------------------------------------------- search_diagnostics
def _knn_search(offset, grid):
    rng = np.random.default_rng(0)
    X, y = make_ood_dataset(rng.normal(size=(90, 3)), np.zeros(90, dtype=int),
                            rng.normal(size=(45, 3)) + offset, random_state=0)
    return GridSearchCV(KNNDetector(device="cpu"), {"n_neighbors": grid},
                        scoring=fpr95_scorer, cv=3).fit(X, y)


def test_search_diagnostics_warns_on_ties_with_every_tied_candidate():
    # OOD rows far away: every k reaches 0 % FPR95 and GridSearchCV keeps the first.
    search = _knn_search(30.0, [1, 5, 10])
    with pytest.warns(UserWarning, match="2 other candidate.*score the same"):
        found = search_diagnostics(search)
    assert found["tied"] == [{"n_neighbors": 5}, {"n_neighbors": 10}]


def test_search_diagnostics_names_a_choice_at_the_grid_edge_and_is_silent_otherwise():
    search = _knn_search(1.5, [1, 5, 10, 20])  # overlapping OOD: the scores differ
    found = search_diagnostics(search, warn=False)
    assert found["tied"] == []
    best = search.best_params_["n_neighbors"]
    assert found["at_edge"] == (["n_neighbors"] if best in (1, 20) else [])
    if not found["at_edge"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            search_diagnostics(search)
    else:
        with pytest.warns(UserWarning, match="end of its grid"):
            search_diagnostics(search)
