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
        assert "KNNDetector(algorithm='faiss').score_samples (cpu) | 1 |" in text
        assert "| KNNDetector(algorithm='faiss') >= 1.0x faiss IndexFlatL2's speed" in text
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


# ------------------------------------------------------------- the results page
def _collect_results():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "collect_results.py"
    spec = importlib.util.spec_from_file_location("collect_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result_file(title, version):
    return (f"# {title}\n\nWritten by a script.\n\n- environment: sklearn-reclag {version}, "
            "torch 2.13.0+cpu\n\n## Table\n\n| a |\n|---|\n| 1 |\n")


def test_results_page_tells_runs_versions_and_missing_files_apart(tmp_path, monkeypatch):
    """RESULTS.md (issue 23 item 9): two runs of one script with the same title get
    their commands' options in their headings; a file measured with another version
    says so under its title (a file of this version does not); a file not written yet
    is listed by what it measures under "Not measured yet", not as a bare file name."""
    collect_results = _collect_results()
    monkeypatch.setattr(collect_results, "SECTIONS", [
        ("stability.md", "benchmarks/stability.py", "Stability"),
        ("stability_normal.md", "benchmarks/stability.py --init normal", "Stability, normal"),
        ("knn_cuda.md", "benchmarks/knn.py --device cuda", "KNN speed on CUDA"),
    ])
    (tmp_path / "stability.md").write_text(_result_file("Stability", "0.2.0"))
    (tmp_path / "stability_normal.md").write_text(_result_file("Stability", "0.1.0"))
    page = collect_results.collect(results=tmp_path, output=tmp_path / "RESULTS.md",
                                   version="0.2.0").read_text()
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings == ["## Stability", "## Stability (`--init normal`)", "## Not measured yet"]
    assert page.count("Measured with sklearn-reclag") == 1
    assert ("## Stability (`--init normal`)\n\n> Measured with sklearn-reclag 0.1.0, not "
            "with 0.2.0") in page
    assert ("- KNN speed on CUDA: `python benchmarks/knn.py --device cuda` (needs a CUDA "
            "device)") in page
    assert "knn_cuda.md" not in page


def test_results_page_is_current():
    """benchmarks/RESULTS.md is what collect_results.py writes from the result files."""
    collect_results = _collect_results()
    committed = collect_results.HERE / "RESULTS.md"
    expected = committed.read_text()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        written = collect_results.collect(output=Path(folder) / "RESULTS.md").read_text()
    assert written == expected, "run python benchmarks/collect_results.py"


SCALE_SCRIPT = SCRIPT.parent / "scale.py"


@pytest.mark.slow
def test_scale_quick_writes_results(tmp_path):
    """benchmarks/scale.py --quick: the stand-in is generated on disk, every detector is
    fitted and scored in its own subprocess, and the table gives each one's times, peak
    memory, the memory target's verdict and a sane AUROC, stamped with the version; at
    two sizes, the growth and its figure, which --report writes again from the .json."""
    import sklearn_reclag

    output = tmp_path / "scale.md"
    done = subprocess.run(
        [sys.executable, str(SCALE_SCRIPT), "--quick", "--fractions", "0.5,1", "--output",
         str(output), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, f"scale.py failed:\n{done.stdout}\n{done.stderr}"
    text = output.read_text()
    assert "## Growth" in text and "](scale.png)" in text
    assert output.with_suffix(".png").stat().st_size > 0
    output.with_suffix(".png").unlink()
    again = subprocess.run(
        [sys.executable, str(SCALE_SCRIPT), "--quick", "--report", "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert again.returncode == 0, again.stderr
    assert output.with_suffix(".png").exists()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line for line in output.read_text().splitlines() if line.startswith("| ")] == table
    assert "# Scale (quick form)" in text
    assert f"sklearn-reclag {sklearn_reclag.__version__}" in text
    assert list((tmp_path / "data").glob("X_4000_*.npy"))  # the memory-mapped rows
    rows = [line for line in text.splitlines() if line.startswith("| 4,000 |")]
    assert [line.split("|")[3].split()[0] for line in rows] == [
        "HE", "KNN", "SHE", "Mahalanobis", "ViM", "RecLag"]
    for line in rows:
        cells = [cell.strip() for cell in line.split("|")]
        assert cells[8] in ("**met**", "**MISSED**"), line  # no error, a verdict
        assert float(cells[9]) > 0.8, line  # the detectors see the unseen classes


WIDE_SCRIPT = SCRIPT.parent / "wide.py"


@pytest.mark.slow
def test_wide_quick_fits_every_detector():
    """benchmarks/wide.py --quick fits every detector on 60 x 1,024 rows and prints its
    table, stamped with the version that ran."""
    done = subprocess.run([sys.executable, str(WIDE_SCRIPT), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"wide.py failed:\n{done.stdout}\n{done.stderr}"
    from sklearn_reclag import __version__

    assert f"sklearn-reclag {__version__}" in done.stdout
    assert done.stdout.count("| 60 x 1,024 |") == 13
