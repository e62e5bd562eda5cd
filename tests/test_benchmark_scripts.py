"""The speed benchmark runs end to end in its quick form and writes its results file."""

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
