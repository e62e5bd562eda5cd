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
