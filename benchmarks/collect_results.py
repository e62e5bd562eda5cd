"""Assemble benchmarks/RESULTS.md from the result files the benchmark scripts wrote.

Every benchmark script writes its own file under benchmarks/results/ and then calls
:func:`collect`, so RESULTS.md always holds exactly what the last runs measured; no number
in it is typed by hand.

    python benchmarks/collect_results.py
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (file under results/, the script that writes it), in the order RESULTS.md shows them.
SECTIONS = [
    ("quality.md", "benchmarks/quality.py"),
    ("quality_mnist1d.md", "benchmarks/quality.py --dataset mnist1d"),
    ("novelty.md", "benchmarks/novelty.py"),
    ("speed_cpu.md", "benchmarks/speed.py"),
    ("speed_cuda.md", "benchmarks/speed.py --device cuda"),
    ("sae_epochs.md", "benchmarks/sae_epochs.py"),
    ("dense_n_sweep.md", "benchmarks/dense_n_sweep.py"),
    ("knn_speed.md", "benchmarks/knn_speed.py"),
    ("knn_speed_cuda.md", "benchmarks/knn_speed.py --device cuda"),
    ("dense_n_dip.md", "benchmarks/dense_n_dip.py"),
    ("dense_stability.md", "benchmarks/dense_stability.py"),
    ("dense_stability_init-normal.md", "benchmarks/dense_stability.py --init normal"),
    ("dense_capacity.md", "benchmarks/dense_capacity.py"),
]


def collect():
    """Write RESULTS.md from the result files present; say which ones are missing."""
    parts = [
        "# Benchmark results\n",
        "Assembled by `python benchmarks/collect_results.py` from the files the benchmark "
        "scripts wrote under `benchmarks/results/`. Do not edit by hand: re-run the script "
        "named in each section.\n",
    ]
    for name, script in SECTIONS:
        path = RESULTS / name
        if path.exists():
            body = path.read_text().strip()
            # Demote the file's own headings by one level under this page's title.
            body = "\n".join("#" + line if line.startswith("#") else line
                             for line in body.splitlines())
            parts.append(body + "\n")
        else:
            parts.append(f"## {name}\n\nNot run yet on this revision: `python {script}`.\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    return HERE / "RESULTS.md"


if __name__ == "__main__":
    print(f"wrote {collect()}")
