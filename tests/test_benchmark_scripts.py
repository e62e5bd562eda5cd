"""The benchmarks run end to end in their quick forms and write their results files."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
SECTIONS = [
    "# Speed and memory (quick form, cpu)",
    "## Summary",
    "## 1. RecLag fit",
    "## 2. Scoring throughput",
    "## 3. Peak memory",
    "## 4. Scaling",
    "## 5. What the threshold costs",
]


@pytest.mark.slow
def test_speed_quick_writes_results(tmp_path):
    output = tmp_path / "speed.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, f"speed.py failed:\n{done.stdout}\n{done.stderr}"
    text = output.read_text()
    for heading in SECTIONS:
        assert heading in text, f"missing section {heading!r}"
    # The machine is named and every target has a verdict.
    assert "torch intra-op threads" in text and "torch " in text
    assert text.count("**met**") + text.count("**MISSED**") >= 4
    # The fit ratio says how it was timed.
    assert "minimum over the rounds" in text and "fastest thread count" in text


SAE_EPOCHS = Path(__file__).resolve().parents[1] / "benchmarks" / "sae_epochs.py"


@pytest.mark.slow
def test_sae_epochs_quick_writes_table_and_plot(tmp_path):
    """benchmarks/sae_epochs.py --quick writes its table (every configuration, every
    benchmark, the command and the machine) and its plot."""
    done = subprocess.run(
        [sys.executable, str(SAE_EPOCHS), "--quick", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, f"sae_epochs.py failed:\n{done.stdout}\n{done.stderr}"
    text = (tmp_path / "sae_epochs.md").read_text()
    assert "python benchmarks/sae_epochs.py --quick" in text and "CPU cores" in text
    for heading in ["## digits (euclidean)", "## digits (mahalanobis)",
                    "## pixels (novelty, y=None)"]:
        assert heading in text, f"missing section {heading!r}"
    for config in ["| paper |", "| paper objective, density score |", "| likelihood |",
                   "| em |"]:
        assert text.count(config) == 3, f"missing rows {config!r}"
    assert (tmp_path / "sae_epochs.png").stat().st_size > 0


KNN_SCRIPT = SCRIPT.parent / "knn_speed.py"


@pytest.mark.slow
def test_knn_speed_quick_writes_results(tmp_path):
    """The KNN speed benchmark in its quick form: every search runs, agrees with
    scikit-learn, and every target has a verdict; faiss is measured when installed and
    said to be missing otherwise."""
    output = tmp_path / "knn_speed.md"
    done = subprocess.run(
        [sys.executable, str(KNN_SCRIPT), "--quick", "--threads", "1", "--output",
         str(output)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, f"knn_speed.py failed:\n{done.stdout}\n{done.stderr}"
    text = output.read_text()
    for heading in ["# KNN speed (quick form, KNNDetector on cpu)", "## Summary",
                    "## Search time and memory", "## The bare matrix products",
                    "## Agreement"]:
        assert heading in text, f"missing section {heading!r}"
    assert "KNNDetector.score_samples (cpu) | 1 |" in text
    assert "sklearn NearestNeighbors(algorithm='brute').kneighbors | 1 |" in text
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert "faiss-cpu is not installed" in text
    else:
        assert "faiss IndexFlatL2.search | 1 |" in text
    # Two speed/memory verdicts and the agreement, which must hold.
    assert text.count("**met**") + text.count("**MISSED**") >= 3
    assert "| k-th distances agree with scikit-learn (max difference) |" in text
    agreement = next(line for line in text.splitlines() if "k-th distances agree" in line)
    assert "**met**" in agreement
    assert "Every search returned finite distances: True" in text


# script: (results file, lines it must hold, whether it draws a figure next to it)
DENSE_SCRIPTS = {
    "dense_stability.py": ("dense_stability.md", [
        "## What the grid shows", "## Per n", "| random | 20 | original | - |",
        "| random | 2 | scaled |",
    ], True),
    "dense_capacity.py": ("dense_capacity.md", [
        "## Largest P with at least 90 % of the patterns recalled", "## Every point",
        "| 2 | 10.9 |",
    ], True),
    "dense_n_dip.py": ("dense_n_dip.md", [
        "## Findings (computed)", "| T=0.5, float64 | 25 |", "| T=0.3, float32 | 3 |",
    ], False),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(DENSE_SCRIPTS))
def test_dense_benchmark_quick_writes_results(script, tmp_path):
    """The quick forms run end to end and write their table (and figure) where told."""
    path = SCRIPT.parent / script
    done = subprocess.run(
        [sys.executable, str(path), "--quick", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    name, expected, draws = DENSE_SCRIPTS[script]
    text = (tmp_path / name).read_text()
    for line in expected:
        assert line in text, f"{line!r} missing from {name}"
    if draws:
        assert (tmp_path / name.replace(".md", ".png")).stat().st_size > 10_000
