"""sklearn_reclag.benchmark: choosing without OOD data, near / far groups, paired intervals
and the AutoOODDetector verdicts (the command line's end-to-end runs are in test_cli.py)."""

import numpy as np
import pytest
from sklearn.utils import Bunch

from sklearn_reclag import AutoOODDetector, KNNDetector
from sklearn_reclag.benchmark import (
    Method,
    auto_verdicts,
    evaluate,
    fit_method,
    format_paired_differences,
    ood_groups,
    paired_difference,
    strongest_other,
    summarize,
    summarize_groups,
)
from sklearn_reclag.metrics import fpr_at_tpr


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 5))
    y = np.repeat(np.arange(4), 50)
    X = centres[y] + rng.normal(size=(len(y), 5))
    return Bunch(X_train=X, y_train=y, X_test=X[::5] + 0.1, ood_test={"far": X[:20] + 9},
                 X_val_ood=None, head=None)


def test_proxy_selection_chooses_as_auto_ood_detector_does(data):
    """No X_val_ood is needed: the row's own setting, then the grid's other points, are
    AutoOODDetector's candidates, chosen by its one-standard-error rule."""
    grid = {"n_neighbors": [1, 5, 40]}
    method = Method("KNN", KNNDetector(5, device="cpu"), grid)
    estimator, best = fit_method(method, data, random_state=0)
    order = [5, 1, 40]  # the row's own k first
    auto = AutoOODDetector([KNNDetector(k, device="cpu") for k in order],
                           random_state=0).fit(data.X_train, data.y_train)
    assert best == {"n_neighbors": order[auto.best_index_]}
    assert estimator.n_neighbors == best["n_neighbors"]
    np.testing.assert_array_equal(estimator.score_samples(data.X_test),
                                  auto.score_samples(data.X_test))


def test_validation_selection_still_needs_x_val_ood(data):
    method = Method("KNN", KNNDetector(device="cpu"), {"n_neighbors": [1, 5]})
    with pytest.raises(ValueError, match="no X_val_ood"):
        fit_method(method, data, selection="validation")
    with pytest.raises(ValueError, match="selection must be one of"):
        fit_method(method, data, selection="test sets")


def test_ood_groups_split_near_from_far():
    assert ood_groups(["digits 5-9", "photo patches", "uniform noise"]) == {
        "near": ["digits 5-9"], "far": ["photo patches", "uniform noise"]}
    assert ood_groups(["far"]) == {"far": ["far"]}


def _runs(rng, shifts, n_seeds=3, n_id=400, n_ood=300):
    """Runs whose scores are ID ~ N(0, 1), OOD ~ N(-shift, 1) on the same rows for every
    method of a seed (the paired setting)."""
    runs = []
    for seed in range(n_seeds):
        base_id, base_ood = rng.normal(size=n_id), rng.normal(size=(2, n_ood))
        for method, shift in shifts.items():
            scores = {"ID": base_id, "near": base_ood[0] - shift, "far": base_ood[1] - 2 * shift}
            results = {name: {"FPR95": fpr_at_tpr(
                np.r_[np.zeros(n_id), -np.ones(len(scores[name]))],
                np.r_[scores["ID"], scores[name]]), "AUROC": 0.5, "AUPR-In": 0.5}
                for name in ("near", "far")}
            runs.append(dict(seed=seed, method=method, results={**results, "scores": scores}))
    return runs


def test_a_row_against_itself_differs_by_nothing():
    runs = _runs(np.random.default_rng(0), {"a": 1.0, "b": 1.0})
    diff, (low, high) = paired_difference(runs, "a", "b", ["near"], n_boot=50)
    assert diff == 0.0 and low == 0.0 and high == 0.0


def test_a_clearly_better_row_is_resolved_and_the_mean_is_over_seeds():
    runs = _runs(np.random.default_rng(0), {"strong": 3.0, "weak": 0.5})
    diff, (low, high) = paired_difference(runs, "strong", "weak", ["near", "far"], n_boot=100)
    per_seed = [np.mean([r_s["results"][n]["FPR95"] - r_w["results"][n]["FPR95"]
                         for n in ("near", "far")])
                for r_s, r_w in zip(runs[0::2], runs[1::2])]
    assert diff == pytest.approx(np.mean(per_seed))
    assert low <= diff <= high < 0


def test_paired_table_names_the_strongest_other_row_and_resolves():
    runs = _runs(np.random.default_rng(1), {"KNN": 3.0, "Mahalanobis": 1.0,
                                            "HE (default)": 0.5})
    summary = summarize(runs)
    assert strongest_other(summary) == "KNN"
    groups = summarize_groups(runs, {"near": ["near"], "far": ["far"]})
    assert set(groups["KNN"]) == {"near", "far"}
    text = format_paired_differences(runs, summary, {"near": ["near"], "far": ["far"]},
                                     n_boot=50)
    assert "**KNN**" in text
    assert "| HE (default) |" in text and "worse" in text and "| KNN |" not in text


def _summary(fprs):
    return {name: {"average": {"FPR95": (value, None)}} for name, value in fprs.items()}


@pytest.mark.parametrize("auto, within_oracle, within_default", [
    (0.05, True, True), (0.052, False, True), (0.06, False, False)])
def test_auto_verdicts(auto, within_oracle, within_default):
    """The best other row (the oracle in hindsight) has 3 %: the bound is max(1.25 x 3,
    3 + 2) = 5 %; the best default row has 5.5 %."""
    methods = [Method("HE (default)", None, kind="default"),
               Method("KNN", None, kind="baseline"), Method("Auto", None, kind="auto")]
    summary = _summary({"HE (default)": 0.055, "KNN": 0.03, "Auto": auto})
    oracle_line, default_line = auto_verdicts(summary, methods)
    assert "(KNN, 3.00 %)" in oracle_line and "at most 5.00 %" in oracle_line
    assert ("**met**" in oracle_line) == within_oracle
    assert ("**met**" in default_line) == within_default


def test_auto_rows_report_their_acceptance(data):
    auto = AutoOODDetector([KNNDetector(5, device="cpu")], random_state=0).fit(
        data.X_train, data.y_train)
    results = evaluate(auto, data)
    assert results["acceptance"] == np.mean(auto.predict(data.X_test) == 1)


def test_rows_are_described_with_the_values_their_search_tries():
    """The quick HE row printed the paper's beta=0.01 and 'searched: [0.1, 1.0]', as if
    0.01 were never fitted, and Energy's 'search' as one value; the search tries the
    row's own setting first, then the grid's other values."""
    from sklearn_reclag import EnergyDetector, HopfieldEnergyDetector

    he = Method("HE", HopfieldEnergyDetector(beta=0.01, energy="lse"), {"beta": [0.1, 1.0]})
    assert he.describe() == ("`HopfieldEnergyDetector(beta=0.01, energy='lse')`; "
                             "searched: {'beta': [0.01, 0.1, 1.0]}")
    energy = Method("Energy", EnergyDetector(), {"temperature": [0.5]})
    assert energy.describe() == "`EnergyDetector()`; searched: {'temperature': [1.0, 0.5]}"
    own = Method("Energy", EnergyDetector(), {"temperature": [1.0]})
    assert own.describe() == "`EnergyDetector()`; searched: nothing searched"
    # GridSearchCV on X_val_ood searches the grid alone.
    assert he.describe("validation").endswith("searched: {'beta': [0.1, 1.0]}")


def test_quick_em_row_converges_at_every_point_of_its_grid():
    """The demo's quick RecLag (em, density) row ran 10 EM iterations: every fit stopped
    short with a ConvergenceWarning (19 of them in the demo)."""
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import ParameterGrid

    from sklearn_reclag.benchmark import default_methods

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 5))
    y = np.repeat(np.arange(4), 50)
    X = centres[y] + rng.normal(size=(len(y), 5))
    row = {m.name: m for m in default_methods(quick=True, device="cpu")}[
        "RecLag (em, density)"]
    for point in ParameterGrid(row.grid_for(X, y)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            detector = clone(row.estimator).set_params(**point).fit(X, y)
        assert detector.converged_, point


def test_a_row_with_outliers_fits_with_them_and_searches_nothing(data):
    from sklearn_reclag import HopfieldBoostingDetector
    from sklearn_reclag.benchmark import _shuffled_features

    method = Method("Hopfield Boosting", HopfieldBoostingDetector(device="cpu"),
                    kind="outliers", outliers=_shuffled_features)
    estimator, best = fit_method(method, data, random_state=0)
    expected = HopfieldBoostingDetector(device="cpu").fit(
        data.X_train, data.y_train, outliers=_shuffled_features(data.X_train, 0))
    assert best == {}
    np.testing.assert_array_equal(estimator.score_samples(data.X_test),
                                  expected.score_samples(data.X_test))
    method.param_grid = {"beta": [1.0, 4.0]}
    with pytest.raises(ValueError, match="nothing can be searched"):
        fit_method(method, data)
