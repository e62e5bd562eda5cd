"""The command line and the quality-benchmark engine behind it."""

import json

import numpy as np
import pytest

from sklearn.utils import Bunch

from sklearn_reclag import HopfieldEnergyDetector, ReActDetector
from sklearn_reclag.__main__ import (
    _PEER_KEYS,
    _acceptance_table,
    _chosen_hyperparameters,
    _methods,
    _parser,
    _row_key,
    main,
)
from sklearn_reclag.benchmark import (
    Method,
    _PeerScore,
    at_grid_edge,
    fit_method,
    format_markdown,
    summarize,
)
from sklearn_reclag.datasets import save_features_npz


@pytest.fixture
def features_file(tmp_path):
    """A user's own features: 3 classes of blobs, a far OOD set, a validation OOD set."""
    rng = np.random.default_rng(0)
    centers = 4 * rng.normal(size=(3, 6))

    def blobs(n):
        y = rng.integers(0, 3, n)
        return np.abs(centers[y] + rng.normal(size=(n, 6))), y

    X_train, y_train = blobs(240)
    X_test, y_test = blobs(90)
    path = tmp_path / "features.npz"
    save_features_npz(path, {
        "X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test,
        "ood_test": {"far": 12 + rng.normal(size=(60, 6)), "shifted": blobs(60)[0] + 3},
        "X_val_ood": 9 + rng.normal(size=(60, 6)),
    })
    return path


# The quick grid's CV folds leave some classes with fewer rows than RecLag's SAE batch.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Classes .* have fewer stored patterns:UserWarning")
def test_benchmark_on_user_features_writes_table_and_plots(features_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["benchmark", "--features", str(features_file), "--quick", "--seeds", "2",
                   "--device", "cpu", "--output", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    for method in ("MSP", "Energy", "ReAct", "HE", "SHE", "RecLag", "KNN", "Mahalanobis",
                   "ViM", "HE (density)", "RecLag (em, density)", "HE (default)",
                   "RecLag (default)", "RecLag (default, untrained)", "Dense (energy)"):
        assert f"| {method} |" in printed
    assert (out / "results.md").read_text() in printed
    runs = json.loads((out / "results.json").read_text())
    assert {run["seed"] for run in runs} == {0, 1}
    # One entry per OOD set, and the share of held-out ID rows predict accepts.
    assert set(runs[0]["metrics"]) == {"far", "shifted", "acceptance"}
    assert all(0.5 < run["metrics"]["acceptance"] <= 1 for run in runs
               if "acceptance" in run["metrics"])
    # Every run records its grid and which chosen values sit at an end of it.
    for run in runs:
        if run["method"].startswith("Auto"):  # what AutoOODDetector chose, no grid
            assert set(run["best_params"]) == {"candidate"} and not run["at_grid_edge"]
            continue
        # A grid is a dict, or a list of dicts (one per metric, each with its betas).
        grids = run["param_grid"] if isinstance(run["param_grid"], list) else [
            run["param_grid"]]
        assert any(set(run["best_params"]) == set(grid) for grid in grids)
        assert set(run["at_grid_edge"]) <= set(run["best_params"])
    assert "Hyperparameters chosen (per seed" in printed
    # Near / far groups (no near set in this file: all far), paired intervals, Auto rows.
    assert "| FPR95 (%) | far |" in printed and "Paired FPR95 difference" in printed
    assert "| Auto |" in printed and "- Auto: seed 0: " in printed
    for name in ("roc_far.png", "roc_shifted.png", "hist_reclag_em_density.png",
                 "energy_landscape.png"):
        assert (out / name).stat().st_size > 0


def test_missing_features_file_is_a_clear_error(tmp_path, capsys):
    status = main(["benchmark", "--features", str(tmp_path / "nope.npz"), "--output",
                   str(tmp_path)])
    assert status == 2
    assert "No features file" in capsys.readouterr().err


def test_malformed_features_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, X_train=np.zeros((4, 2)))
    output = tmp_path / "out"
    assert main(["benchmark", "--features", str(path), "--output", str(output)]) == 2
    assert "y_train" in capsys.readouterr().err
    assert not output.exists()  # refused input, no folder left behind


@pytest.mark.parametrize("name, content", [
    ("text.npz", b"1,2,3\n4,5,6\n"), ("empty.npz", b""), ("array.npy", None),
    ("truncated.npz", "truncated")])
def test_a_file_that_is_no_npz_leaves_no_output_folder(name, content, tmp_path, capsys):
    """The output folder was created before the file was read: every refused file left
    an empty folder behind."""
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((3, 2)))
    elif content == "truncated":
        np.savez(path, X_train=np.zeros((40, 2)))
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    output = tmp_path / "new" / "out"
    assert main(["benchmark", "--features", str(path), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command, option", [("demo", "--output"), ("benchmark", "--features")])
def test_help_of_each_command(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert option in capsys.readouterr().out


def _run(method, seed, fpr_a, fpr_b):
    metrics = {"FPR95": 0.0, "AUROC": 1.0, "AUPR-In": 1.0}
    return dict(seed=seed, method=method, best_params={}, results={
        "a": {**metrics, "FPR95": fpr_a}, "b": {**metrics, "FPR95": fpr_b}, "scores": {}})


def test_summary_is_mean_and_std_over_seeds():
    runs = [_run("m", 0, 0.1, 0.3), _run("m", 1, 0.3, 0.5), _run("n", 0, 0.0, 0.0),
            _run("n", 1, 0.0, 0.2)]
    summary = summarize(runs)
    assert summary["m"]["a"]["FPR95"] == pytest.approx((0.2, 0.1))
    # The average over OOD sets is taken within each seed (0.2, 0.4), then over seeds.
    assert summary["m"]["average"]["FPR95"] == pytest.approx((0.3, 0.1))
    table = format_markdown(summary, "FPR95")
    assert "| m | 20.00 ± 10.00 | 40.00 ± 10.00 | 30.00 ± 10.00 |" in table
    # Lowest FPR95 of each column in bold.
    assert "| n | **0.00 ± 0.00** | **10.00 ± 10.00** | **5.00 ± 5.00** |" in table


def test_peer_scores_are_higher_for_inliers():
    from pyod.models.knn import KNN
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    far = 8 + rng.normal(size=(20, 3))
    for peer in (KNN(), GaussianMixture(2, random_state=0)):
        scorer = _PeerScore(peer).fit(X)
        assert scorer.score_samples(X).min() > scorer.score_samples(far).max()


def test_unknown_device_is_a_clear_error(capsys):
    assert main(["demo", "--device", "tpu"]) == 2
    assert "Unknown device" in capsys.readouterr().err


def test_one_seed_shows_no_spread():
    """With one seed there is no standard deviation to show: '± 0.00' claimed one."""
    summary = summarize([_run("m", 0, 0.1, 0.3)])
    assert summary["m"]["a"]["FPR95"] == (pytest.approx(0.1), None)
    table = format_markdown(summary, "FPR95")
    assert "±" not in table and "| m | **10.00** | **30.00** | **20.00** |" in table


# ------------------------------------------------------ bad input: one line, exit 2
def _blob_data(rng, labels=(0, 1, 2), n=60, n_features=5):
    centers = 4 * rng.normal(size=(len(labels), n_features))
    index = np.arange(n) % len(labels)
    X = np.abs(centers[index] + rng.normal(size=(n, n_features)))
    return X, np.asarray(labels)[index]


def _features(rng, **changes):
    X_train, y_train = _blob_data(rng)
    data = {"X_train": X_train, "y_train": y_train, "X_test": _blob_data(rng, n=20)[0],
            "ood_test": {"far": 12 + rng.normal(size=(15, 5))},
            "X_val_ood": 9 + rng.normal(size=(15, 5))}
    data.update(changes)
    return data


def _write_npz(path, data):
    """np.savez with the file's keys, bypassing save_features_npz's own checks."""
    arrays = {k: v for k, v in data.items() if k not in ("ood_test", "head") and v is not None}
    arrays.update({f"ood_{name}": X for name, X in data["ood_test"].items()})
    if data.get("head") is not None:
        arrays["head_coef"], arrays["head_intercept"] = data["head"]
    np.savez(path, **arrays)


def _with_nan(X, value=np.nan):
    X = X.copy()
    X[3, 1] = value
    return X


@pytest.mark.parametrize("name, change, message", [
    ("nan_train", lambda d: {"X_train": _with_nan(d["X_train"])},
     "'X_train' holds 1 NaN or infinite values"),
    ("inf_ood", lambda d: {"ood_test": {"far": _with_nan(d["ood_test"]["far"], np.inf)}},
     "'ood_far' holds 1 NaN"),
    ("nan_head", lambda d: {"head": (np.full((3, 5), np.nan), np.zeros(3))},
     "'head_coef' holds 15 NaN"),
    ("empty_ood", lambda d: {"ood_test": {"far": np.zeros((0, 5))}}, "'ood_far' is empty"),
    ("complex", lambda d: {"X_test": d["X_test"] + 1j}, "complex numbers"),
    ("ood_in_train", lambda d: {"y_train": np.r_[d["y_train"][:-1], -1]},
     "'y_train' labels 1 rows OOD"),
    ("one_row_class", lambda d: {"y_train": np.r_[d["y_train"][:-1], 7]},
     "class 7 of y_train has 1 row"),
    ("head_mismatch", lambda d: {"head": (np.zeros((4, 5)), np.zeros(4)),
                                 "y_train": np.array(["a", "b", "c"])[d["y_train"]]},
     "head has 4 outputs but y_train holds 3 classes"),
])
def test_bad_features_file_is_a_one_line_error_before_any_fit(name, change, message,
                                                            tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sklearn_reclag.__main__._run", _no_fitting)
    data = _features(np.random.default_rng(0))
    data.update(change(data))
    path = tmp_path / f"{name}.npz"
    _write_npz(path, data)
    status = main(["benchmark", "--features", str(path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "o").exists()  # validated first, created after


@pytest.mark.parametrize("name, change, message", [
    ("no_val_ood", lambda d: {"X_val_ood": None}, "there is no X_val_ood"),
    ("tiny_val_ood", lambda d: {"X_val_ood": d["X_val_ood"][:2]}, "X_val_ood has 2 rows"),
])
def test_validation_selection_needs_a_validation_ood_set(name, change, message, tmp_path,
                                                         capsys, monkeypatch):
    """--selection validation searches on X_val_ood; the default (proxy) needs none."""
    monkeypatch.setattr("sklearn_reclag.__main__._run", _no_fitting)
    data = _features(np.random.default_rng(0))
    data.update(change(data))
    path = tmp_path / f"{name}.npz"
    _write_npz(path, data)
    status = main(["benchmark", "--features", str(path), "--selection", "validation",
                   "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1, err
    with pytest.raises(AssertionError, match="benchmark started"):
        main(["benchmark", "--features", str(path), "--output", str(tmp_path / "o")])


def _no_fitting(*args, **kwargs):
    raise AssertionError("the benchmark started before the input was checked")


@pytest.mark.parametrize("seeds", ["0", "-2", "two", str(2**32 + 1), "9" * 30])
def test_seeds_must_be_a_positive_integer(seeds, capsys):
    """A huge count was an OverflowError (or MemoryError) traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--seeds", seeds])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "Traceback" not in err


def test_a_fit_that_the_features_make_fail_is_one_line(tmp_path, capsys):
    """Features that pass the file check but that a method cannot fit (values near 1e30
    overflow float32's products) gave a traceback and exit 1."""
    data = _features(np.random.default_rng(0))
    data = {key: value * 1e30 if key.startswith("X_") else value
            for key, value in data.items()}
    data["ood_test"] = {"far": 12e30 + np.zeros((15, 5))}
    path = tmp_path / "huge.npz"
    _write_npz(path, data)
    status = main(["benchmark", "--features", str(path), "--methods", "knn", "--quick",
                   "--seeds", "1", "--device", "cpu", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: seed 0: KNN failed on ") and err.count("\n") == 1, err
    assert "--methods" in err
    assert not (tmp_path / "o").exists()  # the folder it created is removed, empty


def test_unwritable_output_is_refused_before_any_fit(tmp_path, capsys, monkeypatch):
    """It was found after all the fitting, as a NotADirectoryError traceback."""
    monkeypatch.setattr("sklearn_reclag.__main__._run", _no_fitting)
    a_file = tmp_path / "taken"
    a_file.write_text("")
    for output in (a_file, a_file / "below"):
        assert main(["demo", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot write to --output") and err.count("\n") == 1


def test_empty_output_is_refused(capsys):
    """--output '' was the working directory: it overwrote a results.md there."""
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output", ""])
    assert exit_info.value.code == 2
    assert "--output: is empty" in capsys.readouterr().err


def test_a_folder_holding_files_is_written_only_with_overwrite(tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.setattr("sklearn_reclag.__main__._run", _no_fitting)
    (tmp_path / "results.md").write_text("my own results")
    assert main(["demo", "--output", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "already holds 1 file(s) or folder(s) (results.md)" in err and "--overwrite" in err
    assert (tmp_path / "results.md").read_text() == "my own results"
    with pytest.raises(AssertionError, match="before the input was checked"):
        main(["demo", "--output", str(tmp_path), "--device", "cpu", "--overwrite"])
    # An empty folder takes the results without --overwrite.
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="before the input was checked"):
        main(["demo", "--output", str(tmp_path / "empty"), "--device", "cpu"])


def test_missing_output_folders_are_created_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sklearn_reclag.__main__._run", _no_fitting)
    output = tmp_path / "new" / "deeper"
    with pytest.raises(AssertionError, match="before the input was checked"):
        main(["demo", "--output", str(output), "--device", "cpu"])
    assert output.is_dir()


# ------------------------------------------------------------------ --methods
def _rows(*argv):
    args = _parser().parse_args(["benchmark", "--device", "cpu", *argv])
    return [m.name for m in _methods(args, quick=True, peers=args.peers, seed=0)]


def test_methods_are_named_without_case_or_quoting():
    """--methods he knn was refused as case-sensitive; 'HE (default)' needed quotes."""
    assert _rows("--methods", "he", "knn") == ["HE", "KNN"]
    assert _rows("--methods", "he-default", "HE (default)", "He_Default",
                 "reclag-em-density") == ["RecLag (em, density)", "HE (default)"]


def test_methods_add_rows_to_a_preset():
    """--preset paper --methods KNN Mahalanobis said the run had no such rows."""
    paper = _rows("--preset", "paper")
    assert paper == ["MSP", "Energy", "ReAct", "HE", "SHE", "RecLag"]
    assert _rows("--preset", "paper", "--methods", "KNN", "mahalanobis") == paper + [
        "KNN", "Mahalanobis"]
    assert _rows("--preset", "paper", "--methods", "he") == paper
    assert len(_rows()) > len(paper)  # neither option: every row


def test_peer_rows_are_named_or_added():
    pytest.importorskip("pyod")
    assert _rows("--methods", "pyod-knn", "he") == ["HE", "PyOD KNN"]
    with_peers = _rows("--peers", "--methods", "he")
    assert with_peers[0] == "HE" and "GaussianMixture" in with_peers


def test_unknown_method_name_lists_the_names(tmp_path, capsys):
    status = main(["benchmark", "--methods", "he", "hopfield", "--output",
                   str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "no row is named 'hopfield'" in err and "he-default" in err
    assert not (tmp_path / "o").exists()


def test_help_lists_every_row_s_name(capsys):
    from sklearn_reclag.benchmark import default_methods

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for method in default_methods(quick=True, device="cpu"):
        assert _row_key(method.name) in text
    assert "reclag-default-untrained" in text  # wrapped at spaces, not at the hyphens
    pytest.importorskip("pyod")
    from sklearn_reclag.benchmark import peer_methods

    assert list(_PEER_KEYS) == [_row_key(m.name) for m in peer_methods()]


# ------------------------------------------------------------------ the report
def test_acceptance_table_lists_every_row_and_no_spread_for_one_seed():
    """One seed printed '± 0.0' after every number; the Dense row was left out."""
    runs = [dict(seed=0, method="HE", results={"acceptance": 0.95}),
            dict(seed=0, method="Dense (energy)", results={})]
    table = _acceptance_table(runs)
    assert "| HE | 95.0 |" in table and "±" not in table
    assert "| Dense (energy) | no threshold" in table
    runs.append(dict(seed=1, method="HE", results={"acceptance": 0.93}))
    assert "| HE | 94.0 ± 1.0 |" in _acceptance_table(runs)


def test_plots_close_their_figures_as_they_go(tmp_path):
    """More than 20 rows opened more than 20 figures at once: matplotlib warned."""
    import warnings

    from sklearn_reclag.__main__ import _plots

    rng = np.random.default_rng(0)
    X_train, y_train = _blob_data(rng, n=30, n_features=1)
    data = Bunch(X_train=X_train, y_train=y_train, X_test=X_train[:10],
                 ood_test={"far": 9 + rng.normal(size=(10, 1))})
    runs = [dict(seed=0, method=f"m{i}", results={"scores": {
        "ID": rng.normal(1, 1, 10), "far": rng.normal(0, 1, 10)}}) for i in range(22)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        paths = _plots(runs, data, tmp_path, "cpu")
    assert len(paths) == 23


# ------------------------------------------------------------- the search itself
def _bunch(rng, labels):
    data = _features(rng)
    X_train, y_train = _blob_data(rng, labels=labels, n=90)
    return Bunch(X_train=X_train, y_train=y_train, X_test=data["X_test"],
                 ood_test=data["ood_test"], X_val_ood=data["X_val_ood"], head=None)


def test_fit_method_with_string_labels_searches_on_finite_scores():
    """benchmark.fit_method stacks y_train with OOD_LABEL: with string classes, -1 became
    the class '-1', every FPR95 was NaN and the search kept its first value. percentile=0
    ties every ReAct score (FPR95 = 1): a working search picks 100."""
    rng = np.random.default_rng(0)
    data = _bunch(rng, labels=("cat", "dog", "owl"))
    # Between the classes' centres: low logits, so a low energy score.
    data.X_val_ood = data.X_train.mean(axis=0) + 0.1 * rng.normal(size=(30, 5))
    method = Method("ReAct", ReActDetector(device="cpu"), {"percentile": [0, 100]},
                    uses_head=True)
    with pytest.warns(UserWarning, match="training scores are equal"):
        estimator, best = fit_method(method, data, selection="validation")
    assert best == {"percentile": 100}
    assert set(estimator.classes_) == {"cat", "dog", "owl"}


def test_fit_method_refuses_to_leave_a_grid_unsearched():
    data = _bunch(np.random.default_rng(0), labels=(0, 1, 2))
    data.X_val_ood = None
    method = Method("HE", HopfieldEnergyDetector(device="cpu"), {"beta": [0.1, 1.0]})
    with pytest.raises(ValueError, match="no X_val_ood"):
        fit_method(method, data, selection="validation")


def test_values_chosen_at_an_end_of_their_grid_are_marked():
    grid = {"beta": [0.01, 0.1, 0.5, 1.0], "n": [2, 3]}
    assert at_grid_edge({"beta": 1.0, "n": 3}, grid) == ["beta"]
    assert at_grid_edge({"beta": 0.5, "n": 2}, grid) == []
    assert at_grid_edge({"energy": "lse"}, {"energy": ["lse", "full", "density"]}) == []
    runs = [dict(seed=seed, method="HE", param_grid=grid, best_params={"beta": beta, "n": 2},
                 at_grid_edge=at_grid_edge({"beta": beta}, grid))
            for seed, beta in ((0, 1.0), (1, 0.5))]
    runs.append(dict(seed=0, method="MSP", param_grid={}, best_params={}, at_grid_edge=[]))
    text = _chosen_hyperparameters(runs)
    assert "* = the smallest or largest value of its grid" in text
    # Floats to 3 significant digits (the beta grids are multiples of a fitted scale).
    assert "- HE (beta in [0.01, 0.1, 0.5, 1]; n in [2, 3]): seed 0: beta=1* n=2, " \
           "seed 1: beta=0.5 n=2" in text
    assert "MSP" not in text


@pytest.mark.parametrize("n_features", [1, 2, 7])
def test_plots_draw_the_energy_landscape_from_the_run_s_features(n_features, tmp_path):
    """The landscape was a synthetic 2-D toy unrelated to the user's features; it is now
    a 2-D view of them (none for a single feature, which has no 2-D view)."""
    from sklearn_reclag.__main__ import _plots

    rng = np.random.default_rng(0)
    X_train, y_train = _blob_data(rng, n=60, n_features=n_features)
    data = Bunch(X_train=X_train, y_train=y_train, X_test=X_train[:20],
                 ood_test={"far": 9 + rng.normal(size=(15, n_features))})
    runs = [dict(seed=0, method=name, results={"scores": {
        "ID": rng.normal(1, 1, 20), "far": rng.normal(0, 1, 15)}}) for name in ("a", "b")]
    names = {path.name for path in _plots(runs, data, tmp_path, "cpu")}
    assert {"roc_far.png", "hist_a.png", "hist_b.png"} <= names
    assert ("energy_landscape.png" in names) == (n_features >= 2)
