"""Novelty-detection benchmark: no labels, scikit-learn's shipped tabular data, PyOD peers.

Each task takes one class of wine (3 cultivars, standardised), breast cancer (benign,
standardised) or digits (10 classes, raw pixels) as the in-distribution, fitted with y=None,
and every other class of the same data set as the OOD test set
(:func:`sklearn_reclag.datasets.load_novelty_tasks`). Hyperparameters are chosen from the
ID training rows alone, by the criterion of AutoOODDetector (FPR95 on held-out k-means
clusters of the rows: there are no labels), never on the OOD test classes. The Auto row is
AutoOODDetector's default, which without classes keeps its first candidate (the suite's
default detector); the Auto (+shuffled) row chooses on the clusters and feature-shuffled
rows. A data set's cell is the mean over its tasks
within a seed, then mean ± std over seeds.

    python benchmarks/novelty.py            # 5 seeds
    python benchmarks/novelty.py --quick    # 1 seed, small grids

Writes benchmarks/results/novelty.md (the tables, the machine, the command).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sklearn_reclag.benchmark import (
    METRICS,
    auto_verdicts,
    compare_families,
    default_methods,
    evaluate,
    fit_method,
    format_caption,
    format_markdown,
    peer_methods,
    summarize,
    summarize_acceptance,
)
from sklearn_reclag.datasets import NOVELTY_DATASETS, load_novelty_tasks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run(seeds, *, quick, device):
    """One run per (seed, method): results keyed by data set, averaged over its tasks."""
    runs = []
    for seed in seeds:
        methods = (default_methods(quick=quick, device=device, random_state=seed,
                                   preset="unlabelled")
                   + peer_methods(random_state=seed, quick=quick))
        per_task = {m.name: [] for m in methods}
        for task in load_novelty_tasks(random_state=seed):
            for method in methods:
                with warnings.catch_warnings():
                    # RecLag on a class smaller than one learning batch says so; expected.
                    warnings.filterwarnings("ignore", "Classes .* fewer stored patterns")
                    estimator, best = fit_method(method, task, random_state=seed)
                per_task[method.name].append((task, evaluate(estimator, task), best))
            print(f"seed {seed}: {task.name}", flush=True)
        for method in methods:
            runs.append(dict(seed=seed, method=method.name, results=_by_dataset(
                per_task[method.name]), best_params=[best for *_, best in per_task[
                    method.name]]))
    return runs, methods


def _by_dataset(task_results):
    """Mean over the tasks of each data set of every metric (and of the acceptance)."""
    results = {}
    for dataset in NOVELTY_DATASETS:
        rows = [r[task.name] for task, r, _ in task_results if task.dataset == dataset]
        results[dataset] = {metric: float(np.mean([row[metric] for row in rows]))
                            for metric in METRICS}
    accepted = [r["acceptance"] for _, r, _ in task_results if "acceptance" in r]
    if accepted:
        results["acceptance"] = float(np.mean(accepted))
    return results


def report(runs, methods, *, seeds, quick, elapsed, command="python benchmarks/novelty.py"):
    summary = summarize(runs)
    lines = [
        "# Novelty detection (no labels) on scikit-learn's tabular data",
        "",
        f"Written by `{command}` in "
        f"{elapsed:.0f} s on {machine()}.",
        "",
        "Tasks: each wine cultivar (13 features) and the benign breast tumours (30 "
        "features), standardised with their training rows' mean and scale, and each "
        "digits class as raw pixels (64), as the in-distribution, fitted with y=None; "
        "the other classes of the same data set are the OOD test set. A seed changes "
        "the ID train / test split (70 / 30). Every hyperparameter is chosen from the ID "
        "training rows alone, by AutoOODDetector's criterion: FPR95 on 5 held-out "
        "k-means clusters of the rows (proxy OOD; no OOD row is seen). The Auto row is "
        "AutoOODDetector's default, which without classes keeps its first candidate; "
        "Auto (+shuffled) chooses on the clusters and feature-shuffled rows. Cells: mean over "
        f"the data set's tasks, then mean ± std over {len(seeds)} seeds.",
        "",
        format_caption(methods),
        "",
    ]
    for metric in ("FPR95", "AUROC"):
        lines += [format_markdown(summary, metric), ""]
    acceptance = summarize_acceptance(runs)
    lines += [
        "Held-out ID rows accepted by `predict` at the fitted threshold (contamination "
        "0.05: 95 % asked), mean over all tasks:",
        "",
        "| detector | accepted (%) |",
        "|---|---|",
    ]
    lines += [f"| {name} | {100 * mean:.1f} ± {100 * std:.1f} |"
              for name, (mean, std) in acceptance.items()]
    lines += ["", "Verdicts:", ""] + verdicts(summary) + auto_verdicts(summary, methods)
    return "\n".join(lines) + "\n"


def verdicts(summary):
    """The targets of this benchmark, each with the numbers it was judged on."""
    peers = {name: table for name, table in summary.items()
             if name.startswith(("PyOD", "GaussianMixture"))}
    pyod = {name: table for name, table in peers.items() if name.startswith("PyOD")}
    compared = compare_families(summary)
    best_pyod = min(pyod, key=lambda n: pyod[n]["average"]["FPR95"][0])
    best_pyod_fpr = pyod[best_pyod]["average"]["FPR95"][0]
    hopfield_name, hopfield_fpr = compared["hopfield"]
    lines = [
        f"- Best Hopfield row at most the best PyOD peer (mean FPR95): {hopfield_name} "
        f"{100 * hopfield_fpr:.2f} % vs {best_pyod} {100 * best_pyod_fpr:.2f} %: "
        f"**{'met' if hopfield_fpr <= best_pyod_fpr else 'missed'}**.",
    ]
    for default in ("HE (default)", "RecLag (default)"):
        for dataset in ("wine", "breast cancer"):
            fpr = summary[default][dataset]["FPR95"][0]
            auroc = summary[default][dataset]["AUROC"][0]
            best = min(pyod, key=lambda n: pyod[n][dataset]["FPR95"][0])
            best_fpr = pyod[best][dataset]["FPR95"][0]
            met = auroc >= 0.9 and fpr <= best_fpr + 0.05
            lines.append(
                f"- {default} on standardised {dataset}: AUROC {100 * auroc:.1f} % (>= 90 "
                f"asked), FPR95 {100 * fpr:.2f} % vs best PyOD peer {best} "
                f"{100 * best_fpr:.2f} % (within 5 points asked): "
                f"**{'met' if met else 'missed'}**.")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # many small fits: threads only add contention
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    start = time.perf_counter()
    runs, methods = run(seeds, quick=args.quick, device=args.device)
    command = " ".join(["python benchmarks/novelty.py",
                        *(sys.argv[1:] if argv is None else argv)])
    text = report(runs, methods, seeds=seeds, quick=args.quick,
                  elapsed=time.perf_counter() - start, command=command)
    name = "novelty_quick.md" if args.quick else "novelty.md"
    (RESULTS / name).write_text(text)
    print(text)
    print(f"wrote {RESULTS / name}")
    if not args.quick:
        print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
