"""Command line: ``python -m sklearn_reclag {demo,benchmark} --help``.

demo       the quick end-to-end run of the README: every detector on the digits benchmark
           (CNN features, four OOD sets), a table on stdout and plots in --output.
benchmark  the full table: several seeds, optional PyOD / GaussianMixture peers, on the
           built-in digits or MNIST-1D benchmark (--dataset) or on your own features
           (--features FILE.npz).
"""

import argparse
import json
import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from ._backend import resolve_device
from ._labels import OOD_LABEL
from .benchmark import (
    METRICS,
    PRESETS,
    SELECTIONS,
    auto_verdicts,
    check_benchmark_data,
    compare_families,
    default_methods,
    format_caption,
    format_markdown,
    format_paired_differences,
    ood_groups,
    peer_methods,
    run_quality_benchmark,
    summarize,
    summarize_acceptance,
    summarize_groups,
)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a row's name for --methods
    (reclag-default-untrained) stays whole. (_split_lines is argparse's hook for this.)"""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


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
        formatter_class=_HelpFormatter,
        description="The detection-quality table (FPR95, AUROC, AUPR-In; mean ± std over "
                    "seeds; near / far OOD and paired intervals). Hyperparameters are "
                    "chosen without the test sets: by default from the training rows "
                    "alone (AutoOODDetector's criterion, --selection proxy), or by "
                    "GridSearchCV on the validation OOD set (--selection validation).",
    )
    benchmark.add_argument(
        "--features", type=Path, default=None, metavar="FILE.npz",
        help="your own features (see sklearn_reclag.datasets.save_features_npz for the "
             "keys); default: the built-in benchmark chosen by --dataset",
    )
    benchmark.add_argument(
        "--dataset", choices=("digits", "mnist1d"), default="digits",
        help="the built-in benchmark when there is no --features: 'digits' (default; "
             "scikit-learn's digits 0-4 vs 5-9 and three far OOD sets) or 'mnist1d' "
             "(MNIST-1D classes 0-6 vs 7-9 and three far OOD sets; needs the mnist1d "
             "package, its features cached in scikit-learn's data home)",
    )
    benchmark.add_argument(
        "--selection", choices=SELECTIONS, default="proxy",
        help="how hyperparameters are chosen: 'proxy' (default; FPR95 on held-out "
             "classes of the training rows, no OOD rows needed) or 'validation' "
             "(GridSearchCV on the features file's X_val_ood)")
    benchmark.add_argument("--seeds", type=_positive_int, default=5,
                           help="number of seeds, at least 1 (default 5); the seeds are "
                                "0, 1, ..., N - 1")
    benchmark.add_argument("--quick", action="store_true",
                           help="small grids and few epochs (seconds, for CI)")
    benchmark.add_argument("--peers", action="store_true",
                           help="add PyOD KNN/LOF/IForest/ECOD and GaussianMixture rows")
    # None, not 'all': --methods alone means only the rows it names, with --preset the
    # preset's rows and those.
    benchmark.add_argument(
        "--preset", choices=PRESETS, default=None,
        help="which rows: 'all' (the default without --methods), 'paper' (the published "
             "methods with the papers' parameters: MSP, Energy, ReAct, HE, SHE, RecLag), "
             "'unlabelled' (the rows that need neither labels nor a head)")
    benchmark.add_argument(
        "--methods", nargs="+", default=None, metavar="NAME",
        help="rows by name: alone, only these rows; with --preset or --peers, these rows "
             "added to theirs (e.g. --preset paper --methods knn mahalanobis). Case and "
             "punctuation do not matter ('HE (default)', he-default and he_default are one "
             "row). The rows: " + ", ".join(_row_keys())
             + "; with PyOD installed also " + ", ".join(_PEER_KEYS))
    for sub in (demo, benchmark):
        sub.add_argument("--output", type=_output_path, default=Path("output"),
                         help="folder for the tables and plots (default ./output), new or "
                              "empty unless --overwrite")
        sub.add_argument("--overwrite", action="store_true",
                         help="write into an --output folder that already holds files, "
                              "replacing those of the run's names (results.md, "
                              "results.json, the .png plots); the others stay")
        sub.add_argument("--device", default="auto",
                         help="'auto' (default), 'cpu', 'cuda' or 'cuda:N'")
    return parser


# The seeds are 0 .. N - 1 and seed numpy's generators, which take at most 2**32 - 1.
_MAX_SEEDS = 2**32


def _positive_int(text):
    """argparse type of --seeds: an integer from 1 to ``_MAX_SEEDS``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= _MAX_SEEDS:
        # A huge count was a MemoryError or OverflowError traceback (list(range(N))).
        shown = text if len(text) <= 20 else f"an integer of {len(text)} digits"
        raise argparse.ArgumentTypeError(
            f"must be from 1 to {_MAX_SEEDS} (the seeds 0 .. N - 1 seed numpy, which takes "
            f"at most 2**32 - 1); got {shown}")
    return value


def _output_path(text):
    """argparse type of --output: a folder's path, never the empty string, which named the
    working directory and overwrote a results.md there."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty: name a folder for the results (e.g. --output results)")
    return Path(text)


def _row_key(name):
    """A row's name as --methods matches it: lower case, every run of spaces and
    punctuation one '-' ('HE (default)' -> 'he-default'), so that no name needs quoting."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _row_keys():
    """The keys of every row of the suite (any preset), in the table's order."""
    return [_row_key(m.name) for m in default_methods(quick=True, device="cpu")]


# The keys of the peer rows, for --help: peer_methods imports PyOD, seconds that --help
# should not cost. tests/test_cli.py checks them against peer_methods.
_PEER_KEYS = ("pyod-knn", "pyod-lof", "pyod-iforest", "pyod-ecod", "gaussianmixture")


def _check_output(output, overwrite):
    """Refuse --output before anything is read, fitted or created: a file, a folder whose
    nearest existing parent is not a writable folder, or a folder that already holds files
    (unless ``overwrite``), which the run's results.md and plots would overwrite."""
    try:
        if output.is_dir():
            held = sorted(path.name for path in output.iterdir())
            if held and not overwrite:
                listed = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
                raise ValueError(
                    f"--output {str(output)!r} already holds {len(held)} file(s) or "
                    f"folder(s) ({listed}): name a new or empty folder, or pass --overwrite "
                    "to write there, replacing the files of the run's names.")
            existing = output
        else:
            existing = next(p for p in (output, *output.parents) if p.exists())
    except OSError as exc:
        raise ValueError(
            f"cannot write to --output {str(output)!r}: {exc.strerror or exc}.") from exc
    if not existing.is_dir():
        raise ValueError(f"cannot write to --output {str(output)!r}: {str(existing)!r} is a "
                         "file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to --output {str(output)!r}: {str(existing)!r} is "
                         "not writable.")


def _prepare_output(output):
    """Create the output folder and check that it takes files: after every input is
    checked (a refused input leaves no folder behind), before any fitting."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as exc:
        raise ValueError(
            f"cannot write to --output {str(output)!r}: {exc.strerror or exc}."
        ) from exc


def _loader(args, quick):
    if getattr(args, "features", None) is not None:
        from .datasets import load_features_npz

        data = load_features_npz(args.features)  # fixed features: seeds only seed the methods
        check_benchmark_data(data, getattr(args, "selection", "proxy"))
        return lambda seed: data
    from . import datasets

    if getattr(args, "dataset", "digits") == "mnist1d":
        datasets._import_mnist1d()  # a missing package is a one-line error, before any fit
        load = datasets.load_mnist1d_ood_features
    else:
        load = datasets.load_digits_ood_features
    return lambda seed: load(random_state=seed, quick=quick, device=args.device)


def _keep_first(load_data, seed):
    """``load_data``, remembering the data of ``seed`` for the plots drawn from it."""
    kept = {}

    def load(s):
        data = load_data(s)
        if s == seed:
            kept["data"] = data
        return data

    return load, kept


def _methods(args, *, quick, peers, seed):
    """The rows of the run, in the table's order: the preset's (every row when neither
    --preset nor --methods is given), the peers' with --peers, and those --methods names
    (matched by :func:`_row_key`)."""
    preset, names = getattr(args, "preset", None), getattr(args, "methods", None) or []
    suite = default_methods(quick=quick, device=args.device, random_state=seed)
    chosen = set()
    if preset or not names:
        chosen.update(m.name for m in default_methods(
            quick=quick, device=args.device, random_state=seed, preset=preset or "all"))
    wanted = {_row_key(name): name for name in names}
    peer_rows = []
    # A peer row may be named without --peers; PyOD is imported only when one is.
    if peers or set(wanted) - {_row_key(m.name) for m in suite}:
        try:
            peer_rows = peer_methods(random_state=seed, quick=quick)
        except ImportError:
            if peers:
                raise
    chosen.update(m.name for m in peer_rows if peers)
    by_key = {_row_key(m.name): m for m in suite + peer_rows}
    unknown = [name for key, name in wanted.items() if key not in by_key]
    if unknown:
        raise ValueError(
            f"--methods: no row is named {', '.join(map(repr, unknown))}; the rows are "
            f"{', '.join(by_key)} (case and punctuation do not matter)"
            + ("" if peer_rows else "; the PyOD / GaussianMixture rows need PyOD: pip "
               "install 'sklearn-reclag[peers]'") + ".")
    chosen.update(by_key[key].name for key in wanted)
    return [m for m in suite + peer_rows if m.name in chosen]


class _RowFailed(Exception):
    """A row could not be fitted or scored on a user's features (a one-line error)."""


# What a fit raises on features that the file check passes but a method cannot take
# (values beyond float32's safe range, a singular covariance): the detectors' own
# ValueErrors, numpy's LinAlgError (a ValueError), overflow, torch's linear algebra.
_DATA_ERRORS = (ValueError, ArithmeticError, torch.linalg.LinAlgError)


def _run(args, load_data, *, seeds, quick, peers):
    def methods_for_seed(seed):
        return _methods(args, quick=quick, peers=peers, seed=seed)

    n_fits = len(seeds) * len(methods_for_seed(seeds[0]))
    current = [""]
    with tqdm(total=n_fits, unit="fit", disable=not sys.stderr.isatty()) as bar:
        def progress(text):
            current[0] = text
            bar.set_description(text)
            bar.update(1)

        try:
            runs = run_quality_benchmark(load_data, seeds, methods_for_seed,
                                         progress=progress,
                                         selection=getattr(args, "selection", "proxy"))
        except _DATA_ERRORS as exc:
            if getattr(args, "features", None) is None:
                raise  # the built-in benchmarks: a bug, its traceback wanted
            message = " ".join(str(exc).split())  # one line
            raise _RowFailed(
                f"{current[0]} failed on {args.features}: {type(exc).__name__}: {message} "
                "(leave the row out with --methods, or change the features)") from exc
    return runs


def _report(runs, output, title, methods, selection="proxy"):
    summary = summarize(runs)
    n_seeds = len({run["seed"] for run in runs})
    tables = [
        f"## {title}\n",
        f"A seed changes the data's split and OOD draws (and, on a built-in benchmark, "
        f"the CNN's training) and the seed of the stochastic methods; cells are the mean"
        f"{' ± std' if n_seeds > 1 else ''} over {n_seeds} seed{'s' * (n_seeds > 1)}, "
        "the best mean of each column in bold.\n",
        format_caption(methods, selection) + "\n",
    ]
    for metric in METRICS:
        tables.append(format_markdown(summary, metric) + "\n")
    tables.append(_near_far(runs, summary) + "\n")
    tables.append(_acceptance_table(runs) + "\n")
    tables.append(_comparison(summary) + "\n")
    verdicts = auto_verdicts(summary, methods)
    if verdicts:
        tables.append("AutoOODDetector (the Auto row) against the table:\n\n"
                      + "\n".join(verdicts) + "\n")
    tables.append(_chosen_hyperparameters(runs))
    text = "\n".join(tables) + "\n"
    print(text)
    (output / "results.md").write_text(text)
    raw = [{k: v for k, v in run.items() if k != "results"} | {
        "metrics": {s: m for s, m in run["results"].items() if s != "scores"}} for run in runs]
    (output / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    return summary


def _near_far(runs, summary):
    """FPR95 and AUROC over the near and the far OOD sets, and each row's paired FPR95
    difference to the strongest non-Hopfield row with its 95 % interval."""
    sets = [name for name in summary[next(iter(summary))] if name != "average"]
    groups = ood_groups(sets)
    grouped = summarize_groups(runs, groups)
    names = " and ".join(f"{group}: {', '.join(members)}" for group, members in groups.items())
    lines = [f"OOD sets by group ({names}); each cell is the mean over the group's sets "
             "within a seed, then over seeds.\n"]
    for metric in ("FPR95", "AUROC"):
        lines.append(format_markdown(grouped, metric) + "\n")
    lines.append(format_paired_differences(runs, summary, groups))
    return "\n".join(lines)


def _acceptance_table(runs):
    """ID test rows accepted by predict at each detector's fitted threshold; every row of
    the run, those without a threshold (a classifier, a peer's scores) said so."""
    acceptance = summarize_acceptance(runs)
    n_seeds = len({run["seed"] for run in runs})
    lines = ["ID test rows accepted by `predict` at the fitted threshold (contamination "
             "0.05: 95 % asked):\n", "| detector | accepted (%) |", "|---|---|"]
    for name in dict.fromkeys(run["method"] for run in runs):
        if name not in acceptance:
            lines.append(f"| {name} | no threshold (its `predict` is not an OOD decision) |")
            continue
        mean, std = acceptance[name]
        # One seed has no spread: '± 0.0' would claim one.
        lines.append(f"| {name} | {100 * mean:.1f}"
                     + (f" ± {100 * std:.1f} |" if n_seeds > 1 else " |"))
    return "\n".join(lines)


def _comparison(summary):
    """The best Hopfield row against the best other row, by mean FPR95."""
    compared = compare_families(summary)
    if not (compared["hopfield"] and compared["other"]):
        return ""
    (hopfield, h_fpr), (other, o_fpr) = compared["hopfield"], compared["other"]
    lines = [f"Best Hopfield row: {hopfield}, mean FPR95 {100 * h_fpr:.2f} %; best other "
             f"row: {other}, {100 * o_fpr:.2f} %"
             + (f" (ratio {compared['ratio']:.2f})." if compared["ratio"] else ".")]
    if compared["reclag"]:
        reclag, r_fpr = compared["reclag"]
        lines.append(f"Best RecLag row: {reclag}, {100 * r_fpr:.2f} %: "
                     f"{'below' if compared['reclag_below_all'] else 'not below'} every "
                     "non-Hopfield row.")
    return " ".join(lines)


def _grid_text(grid):
    """A grid (a dict, or a list of dicts) in a few words; floats to 3 digits."""
    if isinstance(grid, (list, tuple)):
        return " | ".join(_grid_text(g) for g in grid)
    return "; ".join(
        f"{name} in [" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                   for v in values) + "]"
        for name, values in grid.items())


def _chosen_hyperparameters(runs):
    """The values each method's search chose, seed by seed, those at an end of a grid of
    three values or more marked (the best value may lie beyond the grid)."""
    lines = ["Hyperparameters chosen (per seed; * = the smallest or largest value of its "
             "grid, so the best value may lie beyond it; Auto: the detector it chose):\n"]
    by_method = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    for method, method_runs in by_method.items():
        grid = method_runs[0]["param_grid"]
        grids_list = grid if isinstance(grid, (list, tuple)) else [grid]
        if "candidate" in method_runs[0]["best_params"]:
            lines.append(f"- {method}: " + ", ".join(
                f"seed {run['seed']}: {run['best_params']['candidate']}"
                for run in method_runs))
            continue
        if not any(len(values) > 1 for g in grids_list for values in g.values()) and len(
                grids_list) < 2:
            continue  # nothing to choose
        # A data-dependent grid (beta in multiples of the data's scale) differs by seed:
        # the first seed's is shown.
        grids = _grid_text(grid)
        chosen = ", ".join(
            f"seed {run['seed']}: " + " ".join(
                (f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
                + ("*" if name in run["at_grid_edge"] else "")
                for name, value in run["best_params"].items())
            for run in method_runs)
        lines.append(f"- {method} ({grids}): {chosen}")
    return "\n".join(lines)


def _plots(runs, data, output, device):
    """ROC curves per OOD set and score histograms per method (first seed), and RecLag's
    energy landscape in a 2-D view of the first seed's features."""
    import matplotlib.pyplot as plt

    from . import plotting

    first_seed = runs[0]["seed"]
    scores = {run["method"]: run["results"]["scores"] for run in runs if run["seed"] == first_seed}
    any_method = next(iter(scores.values()))  # every method scored the same rows
    paths = []

    def save(name, figure):
        # Saved and closed one by one: more than 20 open figures made matplotlib warn.
        path = output / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() + ".png")
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)

    for ood in [name for name in any_method if name != "ID"]:
        y_true = np.r_[np.zeros(len(any_method["ID"]), dtype=int),
                       np.full(len(any_method[ood]), OOD_LABEL)]
        ax = plotting.plot_roc_curves(
            {method: np.r_[s["ID"], s[ood]] for method, s in scores.items()}, y_true)
        ax.set_title(f"ROC: ID test rows vs {ood} (seed {first_seed})")
        save(f"roc_{ood}", ax.figure)
    for method, s in scores.items():
        ax = plotting.plot_score_histograms(s["ID"], {k: v for k, v in s.items() if k != "ID"})
        ax.set_title(f"{method}: scores of ID and OOD rows")
        save(f"hist_{method}", ax.figure)
    if data.X_train.shape[1] >= 2:  # a 2-D view of one feature does not exist
        save("energy_landscape", _energy_landscape_figure(plotting, data, device))
    return paths


# Rows of each set drawn on the energy landscape (a sample keeps the plot readable).
_LANDSCAPE_ROWS = 150
# The view is scaled so that the median training row lies at this distance from the
# origin, with a spread of a sixth of it along both axes (0.5).
_LANDSCAPE_NORM = 3.0
# Inverse temperature of the memory fitted on the view: its mixture components have the
# standard deviation 1 / sqrt(beta) = 0.35, below the rows' spread, so that the 5
# memories spread over the rows instead of merging at their mean.
_LANDSCAPE_BETA = 8.0


def _energy_landscape_figure(plotting, data, device):
    """RecLag's energy landscape in a 2-D view of the run's own features.

    The features are projected on their first two singular directions (TruncatedSVD:
    no centring, since RecLag's score reads dot products with the memories and the
    origin is its OOD attractor), each direction scaled (see ``_LANDSCAPE_NORM``), and a
    RecLag memory of 5 memories (EM, beta 8) is fitted on the projected training rows.
    It shows the method on this data's geometry; it is not one of the table's models,
    which score all the features.
    """
    import matplotlib.pyplot as plt
    from sklearn.decomposition import TruncatedSVD

    from . import RecLagDetector

    svd = TruncatedSVD(n_components=2, random_state=0).fit(data.X_train)
    train = svd.transform(data.X_train)
    # The first direction carries the rows' mean, far from the origin; the second their
    # spread: scaled apart, the view is neither a thin line nor a point.
    first = _LANDSCAPE_NORM / max(np.median(np.abs(train[:, 0])), 1e-12)
    second = _LANDSCAPE_NORM / 6 / max(train[:, 1].std(), 1e-12)
    scale = np.array([first, second])
    rng = np.random.default_rng(0)

    def view(X):
        rows = rng.choice(len(X), min(len(X), _LANDSCAPE_ROWS), replace=False)
        return scale * svd.transform(X[np.sort(rows)])

    detector = RecLagDetector(n_memories=5, beta=_LANDSCAPE_BETA, solver="em", energy="lse",
                              metric="euclidean", device=device,
                              random_state=0).fit(scale * train)
    # The ID rows last, drawn over the OOD sets.
    points = {name: view(X) for name, X in data.ood_test.items()}
    points["ID test"] = view(data.X_test)
    _, ax = plt.subplots(figsize=(9, 6))
    plotting.plot_energy_landscape(detector, points, class_index=0, ax=ax)
    ax.set_title(
        "RecLag energy in a 2-D view of these features (the training rows' two leading\n"
        "singular directions, each scaled); 5 memories fitted by EM on that view, "
        rf"$\beta$={detector.beta:g}", fontsize="medium")
    return ax.figure


def main(argv=None):
    args = _parser().parse_args(argv)
    quick = args.command == "demo" or args.quick
    peers = args.command == "benchmark" and args.peers
    seeds = range(1 if args.command == "demo" else args.seeds)  # a range: N may be large
    try:
        # Check the device, the output folder, the rows asked for, and read a user's
        # file before any fitting, so that each of them is a one-line error; the folder
        # is created last, so that a refused input leaves none behind. Errors during the
        # run itself are bugs and keep their traceback, but for a fit that a user's
        # features make fail (_RowFailed).
        resolve_device(args.device)
        _check_output(args.output, args.overwrite)
        methods = _methods(args, quick=quick, peers=peers, seed=seeds[0])
        load_data = _loader(args, quick=quick)
        created = [p for p in (args.output, *args.output.parents) if not p.exists()]
        _prepare_output(args.output)
    except (FileNotFoundError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_data, first = _keep_first(load_data, seeds[0])
    try:
        runs = _run(args, load_data, seeds=seeds, quick=quick, peers=peers)
    except _RowFailed as exc:
        for folder in created:  # innermost first; nothing is written before the report
            try:
                folder.rmdir()
            except OSError:
                break
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        title = "Demo: digits 0-4 vs four OOD sets (1 seed, quick)"
    else:
        source = args.features or f"{args.dataset} benchmark"
        title = f"{source}: {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    _report(runs, args.output, title, methods, getattr(args, "selection", "proxy"))
    for path in _plots(runs, first["data"], args.output, args.device):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
