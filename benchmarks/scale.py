"""Scale: fit and score time and peak memory on a synthetic ImageNet-1K stand-in.

Issue 22, item 5. The features are a seeded stand-in for a network's penultimate layer on
ImageNet-1K: 1,281,167 rows x 2048 float32 features of 1,000 classes (10.5 GB), generated
block by block into a ``.npy`` file on disk and read back as a memory map. Every class has
a sparse non-negative prototype; a row is a rectified, randomly scaled copy of its class's
prototype plus Gaussian noise (as ``benchmarks/knn_speed.py`` draws them). The network's
head stands in as the nearest-prototype linear classifier (``coef = prototypes``,
``intercept = -|prototype|^2 / 2``), given to the detectors that take a head, as a user
gives the network's last layer. The rows' classes take turns (balanced classes, as
ImageNet's nearly are). The 10,000 queries are 5,000 new rows of the 1,000
classes and 5,000 rows of 100 unseen prototypes (OOD), so the AUROC is a sanity check.

Each detector is fitted and scored in a fresh subprocess (``--child``) on the first
``n`` rows of the file (the sizes nest: every block of rows is drawn from its own seed):
the fit time (its threshold included), the score time of the 10,000 queries, and the
process's peak resident memory (the kernel's VmHWM, including the pages of the memory
map that the process touched, and the ~0.5 GiB of Python, torch and numpy), next to the
bank's size. The detectors: HE (``HopfieldEnergyDetector``), KNN (``KNNDetector``, k = 1,
its default search: faiss's exact flat search when installed), SHE (HE with
``patterns='mean'``), Mahalanobis, ViM and RecLag (``max_epochs=3``, ``tol=None``: three
epochs of its 'sae' solver over the stored patterns)::

    python benchmarks/scale.py                          # 1/100 and 1/10 of the rows
    python benchmarks/scale.py --fractions 1            # the full 1,281,167 rows
    python benchmarks/scale.py --quick                  # 4,000 x 64, seconds (CI)

The rows measured are kept in ``results/scale.json`` (by size and detector), so runs at
different sizes add up to one table in ``results/scale.md`` and one figure,
``results/scale.png`` (fit and score time against the rows, log-log, with the line of
linear growth through each detector's smallest size); ``--report`` writes both again
from ``scale.json`` without measuring. ``--data-dir`` is where the
features are generated (default: the system's temporary folder; reused when present).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
FULL = {"n_rows": 1_281_167, "n_features": 2048, "n_classes": 1000, "n_queries": 10_000,
        "n_ood_classes": 100, "fractions": "0.01,0.1"}
QUICK = {"n_rows": 4_000, "n_features": 64, "n_classes": 10, "n_queries": 500,
         "n_ood_classes": 3, "fractions": "0.5,1"}
DETECTORS = ["HE", "KNN", "SHE", "Mahalanobis", "ViM", "RecLag"]
RECLAG_EPOCHS = 3
# Rows generated per block (each block from its own seed, so that sizes nest).
BLOCK = 65_536
# The target: peak resident memory at most the bank's size + 2 GiB.
MARGIN = 2 * GIB


# ------------------------------------------------------------------------------ data
def prototypes(cfg, seed):
    """Sparse non-negative class prototypes: the ID classes, then the OOD ones."""
    rng = np.random.default_rng([seed, 0])
    n, d = cfg["n_classes"] + cfg["n_ood_classes"], cfg["n_features"]
    return (1.5 * np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0)
            * (rng.random((n, d), dtype=np.float32) < 0.3)).astype(np.float32)


def draw_rows(protos, labels, rng):
    """Rectified, randomly scaled copies of the prototypes plus Gaussian noise."""
    scale = rng.lognormal(0.0, 0.2, (len(labels), 1)).astype(np.float32)
    rows = scale * protos[labels]
    rows += rng.standard_normal(rows.shape, dtype=np.float32)
    return np.maximum(rows, 0, out=rows)


def generate(cfg, n_rows, folder, seed):
    """The first ``n_rows`` rows (a memory-mapped ``.npy``), their labels, the queries
    and the head, in ``folder``; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{cfg['n_features']}f_{cfg['n_classes']}c_s{seed}"
    paths = {"X": folder / f"X_{n_rows}_{tag}.npy", "y": folder / f"y_{n_rows}_{tag}.npy",
             "queries": folder / f"queries_{cfg['n_queries']}_{tag}.npz",
             "head": folder / f"head_{tag}.npz"}
    protos = prototypes(cfg, seed)
    if not paths["head"].exists():
        ids = protos[: cfg["n_classes"]].astype(np.float64)
        np.savez(paths["head"], coef=ids, intercept=-0.5 * (ids * ids).sum(axis=1))
    if not paths["queries"].exists():
        rng = np.random.default_rng([seed, 1])
        half = cfg["n_queries"] // 2
        id_labels = rng.integers(0, cfg["n_classes"], half)
        ood_labels = rng.integers(cfg["n_classes"], len(protos), cfg["n_queries"] - half)
        queries = np.vstack([draw_rows(protos, id_labels, rng),
                             draw_rows(protos, ood_labels, rng)])
        np.savez(paths["queries"], X=queries,
                 is_id=np.r_[np.ones(half, bool), np.zeros(len(queries) - half, bool)])
    if not (paths["X"].exists() and paths["y"].exists()):
        partial = paths["X"].with_suffix(".partial.npy")
        X = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                      shape=(n_rows, cfg["n_features"]))
        y = np.empty(n_rows, dtype=np.int64)
        for block, start in enumerate(range(0, n_rows, BLOCK)):
            stop = min(start + BLOCK, n_rows)
            rng = np.random.default_rng([seed, 2, block])
            # Classes in turn, as ImageNet's are balanced (1,281 rows each on average):
            # at 1/100 of the rows every class still has 12 or 13.
            labels = np.arange(start, stop) % cfg["n_classes"]
            X[start:stop] = draw_rows(protos, labels, rng)
            y[start:stop] = labels
        X.flush()
        del X
        np.save(paths["y"], y)
        partial.rename(paths["X"])
    return paths


# ----------------------------------------------------------------- the measured child
def make_detector(name, head, epochs):
    from sklearn_reclag import (
        HopfieldEnergyDetector,
        KNNDetector,
        MahalanobisDetector,
        RecLagDetector,
        ViMDetector,
    )

    return {
        "HE": lambda: HopfieldEnergyDetector(head=head, device="cpu"),
        "KNN": lambda: KNNDetector(1, device="cpu"),
        "SHE": lambda: HopfieldEnergyDetector(patterns="mean", head=head, device="cpu"),
        "Mahalanobis": lambda: MahalanobisDetector(device="cpu"),
        "ViM": lambda: ViMDetector(head=head, device="cpu"),
        "RecLag": lambda: RecLagDetector(head=head, max_epochs=epochs, tol=None,
                                         random_state=0, device="cpu"),
    }[name]()


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args):
    """Fit and score one detector in this (fresh) process; prints one JSON line."""
    import warnings

    import torch
    from sklearn.metrics import roc_auc_score

    import sklearn_reclag  # noqa: F401  (its import is part of the base memory)

    base = _status_kib("VmRSS") * 1024
    paths = json.loads(args.child_paths)
    head_file = np.load(paths["head"])
    head = (head_file["coef"], head_file["intercept"])
    queries = np.load(paths["queries"])
    X = np.load(paths["X"], mmap_mode="r")
    y = np.load(paths["y"])
    detector = make_detector(args.child, head, args.epochs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        detector.fit(X, y)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = detector.score_samples(queries["X"])
        score_seconds = time.perf_counter() - start
    print(json.dumps({
        "fit_s": fit_seconds, "score_s": score_seconds,
        "peak_rss": _status_kib("VmHWM") * 1024, "base_rss": base,
        "auroc": float(roc_auc_score(queries["is_id"], scores)),
        "threads": torch.get_num_threads(),
        "algorithm": getattr(detector, "algorithm_", None),
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}"
                            for w in caught}),
    }))


def measure(name, paths, args):
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name,
               "--child-paths", json.dumps({k: str(v) for k, v in paths.items()}),
               "--epochs", str(args.epochs)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {args.timeout} s (--timeout)"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - start
    return row


# ----------------------------------------------------------------------------- report
def _gib(n_bytes):
    return f"{n_bytes / GIB:,.2f}"


def report(cfg, raw, command, quick, figure_name="scale.png"):
    sizes = sorted({int(key.split("/")[0]) for key in raw})
    lines = [
        f"# Scale ({'quick' if quick else 'full'} form): fit, score and memory against the "
        "bank's rows",
        "",
        f"Written by `{command}` on {machine()}; {os.cpu_count()} logical cores. "
        "Rows measured by earlier runs at other sizes are kept (results/scale.json): each "
        "row says the version that measured it.",
        "",
        f"Synthetic stand-in for ImageNet-1K penultimate features: {cfg['n_features']:,} "
        f"float32 features, {cfg['n_classes']:,} classes, the first n of "
        f"{cfg['n_rows']:,} rows read as a memory map from disk; "
        f"{cfg['n_queries']:,} queries (half of {cfg['n_ood_classes']} unseen classes). "
        "HE, SHE, ViM and RecLag get the head (the nearest-prototype linear classifier); "
        f"RecLag runs {RECLAG_EPOCHS if not quick else 'the given'} epochs "
        "(max_epochs, tol=None). Peak RSS is the process's VmHWM: Python, torch and numpy "
        "(the base, before the data) plus everything the fit and scoring held, the "
        "touched pages of the memory map included. Target (issue 22): peak at most the "
        "bank's size + 2 GiB.",
        "",
        "| rows | bank GiB | detector | fit s | score s | peak RSS GiB | base GiB "
        "| target | AUROC | version |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    notes = []
    for n in sizes:
        bank = n * cfg["n_features"] * 4
        for name in DETECTORS:
            row = raw.get(f"{n}/{name}")
            if row is None:
                continue
            if "error" in row:
                lines.append(f"| {n:,} | {_gib(bank)} | {name} | - | - | - | - | "
                             f"{row['error']} | - | {row.get('version', '')} |")
                continue
            met = row["peak_rss"] <= bank + MARGIN
            label = name + (f" ({row['algorithm']})" if row.get("algorithm") else "")
            lines.append(
                f"| {n:,} | {_gib(bank)} | {label} | {row['fit_s']:,.1f} "
                f"| {row['score_s']:,.2f} | {_gib(row['peak_rss'])} | {_gib(row['base_rss'])} "
                f"| {'**met**' if met else '**MISSED**'} | {row['auroc']:.3f} "
                f"| {row.get('version', '')} |")
            for warning in row.get("warnings", []):
                notes.append(f"- {n:,} rows, {name}: {warning}")
    if len(sizes) > 1:
        lines += ["", "## Growth", "",
                  "Time at the largest size over time at the smallest, against the ratio of "
                  f"rows ({sizes[-1] / sizes[0]:,.1f}x): linear growth gives about that ratio.",
                  "", "| detector | fit | score |", "|---|---:|---:|"]
        for name in DETECTORS:
            small, large = raw.get(f"{sizes[0]}/{name}"), raw.get(f"{sizes[-1]}/{name}")
            if not small or not large or "error" in small or "error" in large:
                continue
            lines.append(f"| {name} | {large['fit_s'] / small['fit_s']:,.1f}x "
                         f"| {large['score_s'] / small['score_s']:,.1f}x |")
        lines += ["", f"![fit and score time against the rows]({figure_name})", "",
                  "Dotted: linear growth from each detector's smallest size. KNN scores "
                  "the 10,000 queries against every row of the bank and HE against the "
                  "rows of each query's class, so their score time grows with the bank; "
                  "SHE and RecLag keep a few memories a class and Mahalanobis and ViM "
                  "none, so theirs stays flat."]
    if notes:
        lines += ["", "## Warnings the fits gave", ""] + notes
    return "\n".join(lines) + "\n"


def write_figure(path, raw):
    """Fit and score seconds against the bank's rows, log-log, one line per detector,
    with the line of linear growth from its smallest size dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    colors = dict(zip(DETECTORS, plt.get_cmap("tab10").colors))
    for name in DETECTORS:
        measured = sorted((int(key.split("/")[0]), row) for key, row in raw.items()
                          if key.endswith(f"/{name}") and "error" not in row)
        if len(measured) < 2:
            continue
        rows = np.array([n for n, _ in measured])
        for ax, field in zip(axes, ("fit_s", "score_s")):
            seconds = np.array([row[field] for _, row in measured])
            ax.plot(rows, seconds, marker="o", color=colors[name], label=name)
            ax.plot(rows, seconds[0] * rows / rows[0], linestyle=":", color=colors[name])
    for ax, title in zip(axes, ("fit", "score (10,000 queries)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows of the bank")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 x 64 rows, seconds")
    parser.add_argument("--fractions", default=None,
                        help="comma-separated fractions of the rows (default 0.01,0.1)")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--data-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "sklearn_reclag_scale")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds for one detector at one size")
    parser.add_argument("--epochs", type=int, default=RECLAG_EPOCHS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true",
                        help="write the table and figure again from the .json, no measuring")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-paths", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    cfg = QUICK if args.quick else FULL
    fractions = [float(f) for f in (args.fractions or cfg["fractions"]).split(",")]
    if not all(0 < f <= 1 for f in fractions):
        raise SystemExit(f"--fractions must lie in (0, 1]; got {args.fractions}.")
    names = args.detectors.split(",")
    unknown = set(names) - set(DETECTORS)
    if unknown:
        raise SystemExit(f"--detectors: unknown {sorted(unknown)}; choose from {DETECTORS}.")
    output = args.output or RESULTS / ("scale_quick.md" if args.quick else "scale.md")
    raw_file = output.with_suffix(".json")
    raw = json.loads(raw_file.read_text()) if raw_file.exists() else {}
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import sklearn_reclag

    started = time.perf_counter()
    for fraction in ([] if args.report else fractions):
        n_rows = max(cfg["n_classes"] * 2, math.ceil(fraction * cfg["n_rows"]))
        begin = time.perf_counter()
        paths = generate(cfg, n_rows, args.data_dir, args.seed)
        print(f"[{time.perf_counter() - started:.0f}s] {n_rows:,} rows ready "
              f"({time.perf_counter() - begin:.0f} s)", flush=True)
        for name in names:
            row = measure(name, paths, args)
            row["version"] = sklearn_reclag.__version__
            raw[f"{n_rows}/{name}"] = row
            print(f"[{time.perf_counter() - started:.0f}s] {n_rows:,} {name}: "
                  + (row["error"] if "error" in row else
                     f"fit {row['fit_s']:.1f} s, score {row['score_s']:.2f} s, "
                     f"peak {row['peak_rss'] / GIB:.2f} GiB"), flush=True)
            raw_file.parent.mkdir(parents=True, exist_ok=True)
            raw_file.write_text(json.dumps(raw, indent=1, sort_keys=True))
    figure = output.with_suffix(".png")
    write_figure(figure, raw)
    output.write_text(report(cfg, raw, command.strip(), args.quick, figure.name))
    print(f"wrote {output} and {figure}")
    if not args.quick and args.output is None:
        print(f"wrote {collect()}")
    return output


if __name__ == "__main__":
    main()
