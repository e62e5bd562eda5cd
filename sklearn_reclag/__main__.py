"""Command line: ``python -m sklearn_reclag {demo,benchmark} --help``.

demo       the quick end-to-end run of the README: every detector on the digits benchmark
           (CNN features, four OOD sets), a table on stdout and plots in --output.
benchmark  the full table: several seeds, optional PyOD / GaussianMixture peers, on the
           built-in digits benchmark or on your own features (--features FILE.npz).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from ._backend import resolve_device
from ._labels import OOD_LABEL
from .benchmark import METRICS, default_methods, format_markdown, peer_methods, \
    run_quality_benchmark, summarize


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_reclag",
        description="OOD detection with modern Hopfield networks: demo and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"sklearn-reclag {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="quick end-to-end run on the digits benchmark (table + plots)",
        description="Fit every detector on CNN features of digits 0-4 and score four OOD "
                    "sets (digits 5-9, photo patches, uniform and blurred noise). Prints "
                    "FPR95 / AUROC tables and writes ROC, histogram and energy-landscape "
                    "plots to --output.",
    )
    benchmark = commands.add_parser(
        "benchmark", help="full quality table over seeds, on digits or your own features",
        description="The detection-quality table (FPR95, AUROC, AUPR-In; mean ± std over "
                    "seeds). Hyperparameters are chosen by GridSearchCV with the FPR95 "
                    "scorer on the validation OOD set, never on the test sets.",
    )
    benchmark.add_argument(
        "--features", type=Path, default=None, metavar="FILE.npz",
        help="your own features (see sklearn_reclag.datasets.save_features_npz for the "
             "keys); default: the built-in digits benchmark",
    )
    benchmark.add_argument("--seeds", type=int, default=5,
                           help="number of seeds (default 5)")
    benchmark.add_argument("--quick", action="store_true",
                           help="small grids and few epochs (seconds, for CI)")
    benchmark.add_argument("--peers", action="store_true",
                           help="add PyOD KNN/LOF/IForest/ECOD and GaussianMixture rows")
    for sub in (demo, benchmark):
        sub.add_argument("--output", type=Path, default=Path("output"),
                         help="directory for the tables and plots (default ./output)")
        sub.add_argument("--device", default="auto",
                         help="'auto' (default), 'cpu', 'cuda' or 'cuda:N'")
    return parser


def _loader(args, quick):
    if getattr(args, "features", None) is not None:
        from .datasets import load_features_npz

        data = load_features_npz(args.features)  # fixed features: seeds only seed the methods
        return lambda seed: data
    from .datasets import load_digits_ood_features

    return lambda seed: load_digits_ood_features(random_state=seed, quick=quick,
                                                 device=args.device)


def _run(args, load_data, *, seeds, quick, peers):
    def methods_for_seed(seed):
        methods = default_methods(quick=quick, device=args.device, random_state=seed)
        return methods + (peer_methods(random_state=seed) if peers else [])

    n_fits = len(seeds) * len(methods_for_seed(seeds[0]))
    with tqdm(total=n_fits, unit="fit", disable=not sys.stderr.isatty()) as bar:
        def progress(text):
            bar.set_description(text)
            bar.update(1)

        runs = run_quality_benchmark(load_data, seeds, methods_for_seed, progress=progress)
    return runs


def _report(runs, output, title):
    summary = summarize(runs)
    tables = [f"## {title}\n"]
    for metric in METRICS:
        tables.append(format_markdown(summary, metric) + "\n")
    chosen = {}
    for run in runs:
        chosen.setdefault(run["method"], []).append(run["best_params"])
    tables.append("Hyperparameters chosen on the validation OOD set (per seed):\n")
    tables.extend(f"- {method}: {params}" for method, params in chosen.items() if any(params))
    text = "\n".join(tables) + "\n"
    print(text)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(text)
    raw = [{k: v for k, v in run.items() if k != "results"} | {
        "metrics": {s: m for s, m in run["results"].items() if s != "scores"}} for run in runs]
    (output / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    return summary


def _plots(runs, output, device):
    """ROC curves per OOD set and score histograms per method (first seed), and the
    energy landscape of a RecLag memory fitted on 2-D data, as in the RecLag poster."""
    import matplotlib.pyplot as plt

    from . import plotting

    first_seed = runs[0]["seed"]
    scores = {run["method"]: run["results"]["scores"] for run in runs if run["seed"] == first_seed}
    any_method = next(iter(scores.values()))  # every method scored the same rows
    figures = {}
    for ood in [name for name in any_method if name != "ID"]:
        y_true = np.r_[np.zeros(len(any_method["ID"]), dtype=int),
                       np.full(len(any_method[ood]), OOD_LABEL)]
        ax = plotting.plot_roc_curves(
            {method: np.r_[s["ID"], s[ood]] for method, s in scores.items()}, y_true)
        ax.set_title(f"ROC: ID test rows vs {ood}")
        figures[f"roc_{ood}"] = ax.figure
    for method, s in scores.items():
        ax = plotting.plot_score_histograms(s["ID"], {k: v for k, v in s.items() if k != "ID"})
        ax.set_title(f"{method}: scores of ID and OOD rows")
        figures[f"hist_{method}"] = ax.figure
    figures["energy_landscape"] = _energy_landscape_figure(plotting, device)
    paths = []
    for name, figure in figures.items():
        path = output / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() + ".png")
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _energy_landscape_figure(plotting, device):
    from sklearn.datasets import make_blobs

    from . import RecLagDetector

    X, _ = make_blobs(n_samples=300, centers=[[2, 2], [-2, 1.5], [0.5, -2.5]],
                      cluster_std=0.5, random_state=0)
    detector = RecLagDetector(n_memories=3, beta=2.0, solver="em", device=device,
                              random_state=0).fit(X)
    ax = plotting.plot_energy_landscape(detector, X, class_index=0)
    ax.set_title("RecLag energy, one bank of 3 memories; shaded: OOD attractor G(v) <= 0")
    return ax.figure


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        # Read a user's file before any fitting, so a missing or malformed file is a
        # one-line error; errors during the run itself are bugs and keep their traceback.
        resolve_device(args.device)
        load_data = _loader(args, quick=args.command == "demo" or args.quick)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        runs = _run(args, load_data, seeds=[0], quick=True, peers=False)
        _report(runs, args.output, "Demo: digits 0-4 vs four OOD sets (1 seed, quick)")
    else:
        seeds = list(range(args.seeds))
        runs = _run(args, load_data, seeds=seeds, quick=args.quick, peers=args.peers)
        source = args.features or "digits benchmark"
        _report(runs, args.output, f"{source}: {len(seeds)} seeds")
    for path in _plots(runs, args.output, args.device):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
