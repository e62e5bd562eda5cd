"""The command line and the quality-benchmark engine behind it."""

import json

import numpy as np
import pytest

from sklearn_reclag.__main__ import main
from sklearn_reclag.benchmark import _PeerScore, format_markdown, summarize
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
@pytest.mark.filterwarnings("ignore:Classes .* have fewer stored patterns:UserWarning")
def test_benchmark_on_user_features_writes_table_and_plots(features_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["benchmark", "--features", str(features_file), "--quick", "--seeds", "2",
                   "--device", "cpu", "--output", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    for method in ("MSP", "Energy", "ReAct", "HE", "SHE", "RecLag (sae, lse)",
                   "RecLag (em, full)", "Dense (energy)"):
        assert f"| {method} |" in printed
    assert (out / "results.md").read_text() in printed
    runs = json.loads((out / "results.json").read_text())
    assert {run["seed"] for run in runs} == {0, 1}
    assert set(runs[0]["metrics"]) == {"far", "shifted"}
    for name in ("roc_far.png", "roc_shifted.png", "hist_reclag_em_full.png",
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
    assert main(["benchmark", "--features", str(path), "--output", str(tmp_path)]) == 2
    assert "y_train" in capsys.readouterr().err


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
