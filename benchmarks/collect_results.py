"""Assemble benchmarks/RESULTS.md from the result files the benchmark scripts wrote.

Every benchmark script writes its own file under benchmarks/results/ and then calls
:func:`collect`, so RESULTS.md always holds exactly what the last runs measured; no number
in it is typed by hand.

    python benchmarks/collect_results.py
"""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (file under results/, the script that writes it, what it measures), in the order
# RESULTS.md shows them. The title names a file that has not been written yet.
SECTIONS = [
    ("quality.md", "benchmarks/quality.py", "Detection quality on the digits benchmark"),
    ("quality_mnist1d.md", "benchmarks/quality.py --dataset mnist1d",
     "Detection quality on the MNIST-1D benchmark"),
    ("novelty.md", "benchmarks/novelty.py", "Novelty detection on tabular data"),
    ("defaults.md", "benchmarks/defaults.py",
     "Defaults study: every candidate default on every benchmark"),
    ("speed_cpu.md", "benchmarks/speed.py", "Speed and memory on a CPU"),
    ("speed_cuda.md", "benchmarks/speed.py --device cuda", "Speed and memory on CUDA"),
    ("sae_epochs.md", "benchmarks/sae_epochs.py", "RecLag 'sae': FPR95 against epochs"),
    ("dense_n_sweep.md", "benchmarks/dense_n_sweep.py",
     "DensePolynomialHopfield: accuracy against n"),
    ("knn_speed.md", "benchmarks/knn_speed.py", "KNN speed on a CPU"),
    ("knn_speed_cuda.md", "benchmarks/knn_speed.py --device cuda", "KNN speed on CUDA"),
    ("scale.md", "benchmarks/scale.py",
     "Scale: fit, score and memory on an ImageNet-1K stand-in"),
    ("wide.md", "benchmarks/wide.py",
     "Fit time on wide features (few rows, thousands of features)"),
    ("dense_n_dip.md", "benchmarks/dense_n_dip.py", "DensePolynomialHopfield: the dip of n"),
    ("dense_stability.md", "benchmarks/dense_stability.py",
     "DenseAssociativeMemory: hyperparameter stability"),
    ("dense_stability_init-normal.md", "benchmarks/dense_stability.py --init normal",
     "DenseAssociativeMemory: hyperparameter stability, init='normal'"),
    ("dense_capacity.md", "benchmarks/dense_capacity.py",
     "DenseAssociativeMemory: capacity"),
]

# How the scripts stamp the version that ran (their environment line).
_STAMP = re.compile(r"sklearn-reclag (\d+(?:\.\d+)*(?:[.+-]?[A-Za-z0-9]+)*?)\.?(?=[,;)\s]|$)",
                    re.MULTILINE)


def _current_version():
    import sklearn_reclag

    return sklearn_reclag.__version__


def _demoted(body):
    """The file's headings one level down, under this page's title."""
    return ["#" + line if line.startswith("#") else line for line in body.splitlines()]


def _section(body, script, version, seen_titles):
    """A result file as a section of RESULTS.md.

    A title an earlier section already has gets the options of its command (two runs of
    one script, e.g. ``--init normal``), so that the page's contents tell them apart. A
    file stamped with another version than ``version`` says so under its title: the
    numbers were measured with that version and have not been re-run since.
    """
    lines = _demoted(body)
    heading = next((i for i, line in enumerate(lines) if line.startswith("## ")), None)
    if heading is None:  # no title of its own: the script's
        lines[:0], heading = [f"## `{script}`", ""], 0
    title = lines[heading]
    if title in seen_titles:
        options = script.split(".py", 1)[1].strip()
        title = f"{title} (`{options}`)" if options else f"{title} (`{script}`)"
        lines[heading] = title
    seen_titles.add(title)
    stamps = sorted(set(_STAMP.findall(body)))
    if stamps and stamps != [version]:
        measured = ", ".join(stamps)
        lines[heading + 1:heading + 1] = [
            "",
            f"> Measured with sklearn-reclag {measured}, not with {version}: these numbers "
            f"have not been re-run since. `python {script}` measures the current version.",
        ]
    return "\n".join(lines) + "\n"


def collect(results=RESULTS, output=HERE / "RESULTS.md", version=None):
    """Write RESULTS.md from the result files present; list the ones not measured yet.

    Parameters
    ----------
    results : Path, default=benchmarks/results
        The folder of the result files.
    output : Path, default=benchmarks/RESULTS.md
    version : str, default=None
        The version this page is for (``sklearn_reclag.__version__`` when None): sections
        stamped with another one are marked as such.
    """
    version = _current_version() if version is None else version
    parts = [
        "# Benchmark results\n",
        "Assembled by `python benchmarks/collect_results.py` from the files the benchmark "
        "scripts wrote under `benchmarks/results/`. Do not edit by hand: re-run the script "
        f"named in each section. This page is for sklearn-reclag {version}; a section "
        "measured with another version says so under its title.\n",
    ]
    seen_titles, missing = set(), []
    for name, script, title in SECTIONS:
        path = Path(results) / name
        if path.exists():
            parts.append(_section(path.read_text().strip(), script, version, seen_titles))
        else:
            needs = " (needs a CUDA device)" if "--device cuda" in script else ""
            missing.append(f"- {title}: `python {script}`{needs}")
    if missing:
        parts.append("## Not measured yet\n\nThese benchmarks have no result file on this "
                     "revision; each command writes its section.\n\n" + "\n".join(missing)
                     + "\n")
    Path(output).write_text("\n".join(parts))
    return Path(output)


if __name__ == "__main__":
    print(f"wrote {collect()}")
