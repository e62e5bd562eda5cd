"""What training buys RecLag's 'sae' solver: FPR95 against epochs, for each objective.

RecLagDetector (Moriai et al., "Rectified Lagrangian for Out-of-Distribution Detection in
Modern Hopfield Networks", AAAI 2025) starts from random stored patterns as memories and
learns them. This script measures what that learning changes: test FPR95 after 0, 1, 2,
5, ... epochs (``tol=None``, so each fit runs exactly that many), for four configurations:

- ``paper``: the paper's configuration (objective='paper', energy='lse', init_norm=10,
  lr=1e-3, beta chosen below instead of 5);
- ``paper objective, density score``: the paper's objective, scored with the Gaussian-mixture
  log-density of the memories (energy='density', init_norm=None), as ``likelihood`` is;
- ``likelihood``: objective='likelihood', energy='density', init_norm=None, lr='auto';
- ``em``: solver='em' on the same mixture, after as many EM iterations.

Benchmarks (every one with several seeds):

- ``digits``: the digits benchmark's CNN features (digits 0-4 in distribution, 4 OOD test
  sets, :func:`sklearn_reclag.datasets.load_digits_ood_features`), with class labels, the
  network's head choosing the stored patterns and routing='max', on the raw features
  ('euclidean') and on the features whitened by the Ledoit-Wolf shared within-class
  covariance ('mahalanobis');
- ``pixels``: novelty detection without labels (y=None): each of the digits 0-4 as raw
  pixels, half its rows for training, against the other digits.

beta is chosen for every (configuration, epochs, seed, task) on validation data only, as
the lowest validation FPR95 over ``beta = c / v`` (c in a grid, v the mean per-feature
variance within classes): ID rows held out from the training rows (a third) against the
digits benchmark's validation OOD set (pixel-shuffled and blended ID digits), or for
``pixels`` against the digits at odd offsets from the ID digit; the test OOD sets (the
even offsets for ``pixels``) are never seen in selection. Writes
``results/sae_epochs.md`` and ``results/sae_epochs.png`` next to this script.

    python benchmarks/sae_epochs.py            # 3 seeds, epochs 0..100, a few minutes
    python benchmarks/sae_epochs.py --quick    # 1 seed, 3 epoch counts, < 1 minute
"""

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

import sklearn_reclag
from sklearn_reclag import RecLagDetector
from sklearn_reclag.datasets import load_digits_ood_features
from sklearn_reclag.metrics import fpr_at_tpr

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS = {
    "paper": {"solver": "sae", "objective": "paper", "energy": "lse", "init_norm": 10.0,
              "lr": 1e-3},
    "paper objective, density score": {"solver": "sae", "objective": "paper",
                                       "energy": "density", "init_norm": None,
                                       "lr": 1e-3},
    "likelihood": {"solver": "sae", "objective": "likelihood", "energy": "density",
                   "init_norm": None, "lr": "auto"},
    "em": {"solver": "em", "energy": "density", "init_norm": None},
}
FULL = {"seeds": 3, "epochs": [0, 1, 2, 5, 10, 20, 50, 100], "c": [0.03, 0.1, 0.3, 1.0, 3.0],
        "pixel_digits": [0, 1, 2, 3, 4]}
QUICK = {"seeds": 1, "epochs": [0, 5, 20], "c": [0.3, 1.0], "pixel_digits": [0]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 3 epoch counts, 2 values of beta, 1 pixel digit, "
                             "quick CNN features")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ data
def whitening(X, y):
    """Sigma^(-1/2), Sigma the Ledoit-Wolf covariance of the class-centred rows."""
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(axis=0) for c in classes])
    centred = X - means[np.searchsorted(classes, y)]
    values, vectors = np.linalg.eigh(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    return vectors @ np.diag(values ** -0.5) @ vectors.T


def digits_tasks(seed, quick):
    data = load_digits_ood_features(random_state=seed, quick=quick, device="cpu")
    tasks = []
    for metric in ("euclidean", "mahalanobis"):
        tasks.append(Bunch(benchmark=f"digits ({metric})", X=data.X_train, y=data.y_train,
                           X_test=data.X_test, X_val_ood=data.X_val_ood, ood=data.ood_test,
                           head=data.head, whiten=metric == "mahalanobis"))
    return tasks


def pixel_tasks(seed, digits):
    X, y = load_digits(return_X_y=True)
    tasks = []
    for k in digits:
        train, test = train_test_split(X[y == k], test_size=0.5, random_state=seed)
        validation = np.isin(y, [(k + offset) % 10 for offset in (1, 3, 5, 7, 9)])
        held_out = np.isin(y, [(k + offset) % 10 for offset in (2, 4, 6, 8)])
        tasks.append(Bunch(benchmark="pixels (novelty, y=None)", X=train, y=None,
                           X_test=test, X_val_ood=X[validation],
                           ood={"other digits": X[held_out]}, head=None, whiten=False))
    return tasks


# ------------------------------------------------------------------------ measuring
def fpr95(detector, X_id, X_ood):
    scores = np.r_[detector.score_samples(X_id), detector.score_samples(X_ood)]
    return fpr_at_tpr(np.r_[np.ones(len(X_id), bool), np.zeros(len(X_ood), bool)], scores)


def feature_space(task, X, y):
    """The map to the task's feature space (fitted on X, y) and the head read there."""
    if not task.whiten:
        return (lambda A: A), task.head
    root = whitening(X, y)
    coef, intercept = task.head
    # The network's head on whitened rows: x W^T + b = (x root) (root^-1 W^T) + b.
    return (lambda A: A @ root), (np.linalg.solve(root, coef.T).T, intercept)


def fitted(task, X, y, params):
    """The detector fitted on (X, y) in the task's feature space, and that space's map.

    With labels, the network's head picks the stored patterns (the rows it classifies
    correctly) and routing='max' scores each row against its best class."""
    space, head = feature_space(task, X, y)
    extra = {} if y is None else {"routing": "max", "head": head}
    with warnings.catch_warnings():
        # Tiny digits leave some classes without a learning batch in the quick run.
        warnings.simplefilter("ignore", UserWarning)
        return RecLagDetector(**params, **extra).fit(space(X), y), space


def within_variance(task):
    X = feature_space(task, task.X, task.y)[0](task.X)
    if task.y is None:
        return float(X.var(axis=0).mean())
    return float(np.mean([X[task.y == c].var(axis=0).mean() for c in np.unique(task.y)]))


def measure(task, config, epochs, c_grid, seed):
    """Test FPR95 per OOD set with beta chosen on validation, and the chosen beta."""
    params = {**CONFIGS[config], "max_epochs": epochs, "tol": None, "device": "cpu",
              "random_state": seed}
    split = train_test_split(task.X, *([] if task.y is None else [task.y]), test_size=1 / 3,
                             stratify=task.y, random_state=seed)
    X_fit, X_held = split[:2]
    y_fit = None if task.y is None else split[2]
    variance = within_variance(task)
    best = None
    for c in c_grid:
        beta = c / variance
        detector, space = fitted(task, X_fit, y_fit, {**params, "beta": beta})
        score = fpr95(detector, space(X_held), space(task.X_val_ood))
        if best is None or score < best[0]:
            best = (score, beta)
    detector, space = fitted(task, task.X, task.y, {**params, "beta": best[1]})
    return {name: fpr95(detector, space(task.X_test), space(X_ood))
            for name, X_ood in task.ood.items()}, best[1]


def run(settings, quick):
    """Rows (benchmark, config, epochs, seed, mean test FPR95 over OOD sets and tasks)."""
    rows = []
    for seed in range(settings["seeds"]):
        tasks = digits_tasks(seed, quick) + pixel_tasks(seed, settings["pixel_digits"])
        for config in CONFIGS:
            for epochs in settings["epochs"]:
                start = time.perf_counter()
                by_benchmark = {}
                for task in tasks:
                    fprs, _ = measure(task, config, epochs, settings["c"], seed)
                    by_benchmark.setdefault(task.benchmark, []).extend(fprs.values())
                for benchmark, values in by_benchmark.items():
                    rows.append((benchmark, config, epochs, seed, float(np.mean(values))))
                print(f"seed {seed} {config:32s} {epochs:4d} epochs "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    return rows


# --------------------------------------------------------------------------- writing
def summary(rows):
    """{(benchmark, config, epochs): (mean, std over seeds, per-seed values)}."""
    table = {}
    for benchmark, config, epochs, _, value in rows:
        table.setdefault((benchmark, config, epochs), []).append(value)
    return {key: (float(np.mean(v)), _std(v), v) for key, v in table.items()}


def _std(values):
    """The sample standard deviation (0 for one value)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def write_markdown(rows, settings, seconds, path):
    table = summary(rows)
    benchmarks = list(dict.fromkeys(row[0] for row in rows))
    epochs = settings["epochs"]
    command = " ".join(["python benchmarks/sae_epochs.py", *sys.argv[1:]])
    lines = [
        "# RecLag 'sae': test FPR95 against training epochs",
        "",
        "Written by `benchmarks/sae_epochs.py`; do not edit by hand.",
        "",
        f"- command: `{command}` ({seconds / 60:.1f} minutes)",
        f"- environment: sklearn-reclag {sklearn_reclag.__version__}, torch "
        f"{torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
        f"- {settings['seeds']} seeds; each cell: mean ± sample std over seeds of the test FPR95 "
        "(%, lower is better), averaged over the OOD test sets (digits) or over the ID "
        f"digits {settings['pixel_digits']} (pixels); 'em' columns count EM iterations",
        "- beta chosen for every cell on validation data only, among beta = c / v, c in "
        f"{settings['c']}, v the mean per-feature variance within classes; every fit with "
        "tol=None (exactly that many epochs), n_memories=10, learning_batch_size=50, "
        "random initial memories (the same ones for every configuration of a seed)",
        "- configurations: "
        + "; ".join(f"**{name}**: " + ", ".join(f"{k}={v!r}" for k, v in params.items())
                    for name, params in CONFIGS.items()),
        "",
    ]
    for benchmark in benchmarks:
        lines += [f"## {benchmark}", "",
                  "| configuration | " + " | ".join(f"{e}" for e in epochs)
                  + " | last - 0 (paired over seeds) |",
                  "|---|" + "---:|" * (len(epochs) + 1)]
        for config in CONFIGS:
            cells = [table[(benchmark, config, e)] for e in epochs]
            change = np.subtract(cells[-1][2], cells[0][2]) * 100
            lines.append(f"| {config} | " + " | ".join(
                f"{100 * m:.1f} ± {100 * s:.1f}" for m, s, _ in cells)
                + f" | {change.mean():+.1f} ± {_std(change):.1f} |")
        lines.append("")
    path.write_text("\n".join(lines))


def write_plot(rows, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(rows)
    benchmarks = list(dict.fromkeys(row[0] for row in rows))
    epochs = settings["epochs"]
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.6),
                             squeeze=False)
    for ax, benchmark in zip(axes[0], benchmarks, strict=True):
        for config in CONFIGS:
            means = [100 * table[(benchmark, config, e)][0] for e in epochs]
            stds = [100 * table[(benchmark, config, e)][1] for e in epochs]
            ax.errorbar(epochs, means, yerr=stds, marker="o", markersize=3, capsize=2,
                        label=config)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("symlog", linthresh=1)  # linear below 1 %: a 0 stays plotted
        ax.set_xlabel("epochs (EM: iterations)")
        ax.set_ylabel("test FPR95 (%)")
        ax.set_title(benchmark, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    start = time.perf_counter()
    rows = run(settings, args.quick)
    seconds = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    markdown, plot = args.output / "sae_epochs.md", args.output / "sae_epochs.png"
    write_markdown(rows, settings, seconds, markdown)
    write_plot(rows, settings, plot)
    print(f"wrote {markdown} and {plot}")


if __name__ == "__main__":
    main()
