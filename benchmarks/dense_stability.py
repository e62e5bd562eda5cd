"""Recall of DenseAssociativeMemory over (temperature, learning rate): scaled vs original.

McAlister, Robins & Szymanski (arXiv:2407.08742) searched the hyperparameters of an
autoassociative dense associative memory of dimension 100 and reported that Krotov &
Hopfield's original network, ``tanh(beta sum_mu [F(xi . sigma+) - F(xi . sigma-)])`` with
``beta = 1 / T^n``, overflows float32 at large n and that its best region of
hyperparameters shifts with n, and that the scaled network, ``F(xi . sigma / (N T))``,
fixes both. This script repeats the search in float32 for n in {2, 3, 5, 10, 15, 20, 25}:

- patterns: 10 random bipolar patterns of dimension 100, and the first image of each of
  scikit-learn's ten digits as a +-1 image (dimension 64);
- probes: 10 copies of each pattern with 10 % of the entries flipped;
- recall error: the Euclidean distance between the stored pattern and the recalled state
  (asynchronous recall), averaged over the probes, and the fraction recalled exactly;
- grid: temperature x learning rate, every other parameter at the estimator's default.
  The original network is run at ``T_original = N T``: for the homogeneous rectified F
  it is then the same model as the scaled one in exact arithmetic, cell for cell, so
  every difference between the two panels is floating point.

A fit whose energies overflow raises (the estimator never ends a fit with non-finite
memories): such a cell is counted as overflowed and hatched in the figure.

Then the estimator's defaults are checked on fresh patterns (seeds the grid never saw):
the fraction of probes recalled exactly for every n, scaled and original.

Writes ``results/dense_stability.md`` and ``results/dense_stability.png`` (with
``--init normal``, the ``_init-normal`` variants: the memories start random, as in
McAlister's code, instead of at the training patterns).

    python benchmarks/dense_stability.py               # about 8 minutes on one core
    python benchmarks/dense_stability.py --init normal # the random initialisation
    python benchmarks/dense_stability.py --quick       # n in {2, 20}, a 2 x 2 grid
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sklearn_reclag import DenseAssociativeMemory

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))
from collect_results import collect  # noqa: E402
from dense_patterns import (  # noqa: E402
    corrupt,
    digit_patterns,
    environment,
    random_patterns,
    recall_quality,
)

N_VALUES = [2, 3, 5, 10, 15, 20, 25]
TEMPERATURES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]  # of the scaled network
LEARNING_RATES = [0.01, 0.1, 1.0]
SCALINGS = {"original": None, "scaled": "mcalister"}
FLIP_FRACTION, COPIES, N_PATTERNS, N_RANDOM = 0.1, 10, 10, 100
REGION_TOLERANCE = 0.10  # the region: cells whose error is within 10 % of the best
DEFAULT_CHECK_SEEDS = [1, 2, 3]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="n in {2, 20}, 2 temperatures x 2 learning rates, 20 epochs")
    parser.add_argument("--init", default="patterns", choices=["patterns", "normal"],
                        help="initial memories (the estimator's default: patterns)")
    parser.add_argument("--seed", type=int, default=0, help="patterns, probes and models")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def datasets(seed):
    """name -> (patterns, targets, probes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, patterns in [("random", random_patterns(N_PATTERNS, N_RANDOM, rng)),
                           ("digits", digit_patterns())]:
        out[name] = (patterns, *corrupt(patterns, rng, FLIP_FRACTION, COPIES))
    return out


def measure(patterns, targets, probes, *, n, scaling, temperature, seed, **params):
    """(mean distance, exact fraction) of one network; NaN for both if it overflowed.

    ``temperature`` is the scaled network's; the original runs at N times it.
    """
    N = patterns.shape[1]
    memory = DenseAssociativeMemory(
        n, temperature=temperature if scaling else N * temperature, scaling=scaling,
        device="cpu", dtype="float32", random_state=seed, **params,
    )
    with warnings.catch_warnings():
        # The overflow warnings of the original network are what is measured here, and a
        # probe still moving after max_iter sweeps simply counts as recalled wrong.
        warnings.simplefilter("ignore")
        try:
            states = memory.fit(patterns).transform(probes)
        except ValueError as err:
            if "overflow" not in str(err):
                raise
            return np.nan, np.nan
    return recall_quality(states, targets)


def run_grid(data, n_values, temperatures, learning_rates, params, seed):
    """errors[dataset][scaling] of shape (n, lr, T, 2): distance and exact fraction."""
    errors = {}
    for name, (patterns, targets, probes) in data.items():
        errors[name] = {}
        for label, scaling in SCALINGS.items():
            grid = np.empty((len(n_values), len(learning_rates), len(temperatures), 2))
            for a, n in enumerate(n_values):
                start = time.perf_counter()
                for b, lr in enumerate(learning_rates):
                    for c, temperature in enumerate(temperatures):
                        grid[a, b, c] = measure(patterns, targets, probes, n=n,
                                                scaling=scaling, temperature=temperature,
                                                lr=lr, seed=seed, **params)
                distance = grid[a, ..., 0]
                best = f"{np.nanmin(distance):.2f}" if not np.isnan(distance).all() else "-"
                print(f"{name:6s} {label:8s} n={n:2d}: best distance {best}, overflowed "
                      f"{int(np.isnan(distance).sum())} cells "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
            errors[name][label] = grid
    return errors


def region(distance):
    """Boolean mask of the cells within REGION_TOLERANCE of the best (finite) error."""
    if np.isnan(distance).all():
        return np.zeros(distance.shape, dtype=bool)
    best = np.nanmin(distance)
    with np.errstate(invalid="ignore"):
        return distance <= best * (1 + REGION_TOLERANCE) + 1e-9


def jaccard(a, b):
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def check_defaults(n_values, params, seeds):
    """Exact-recall fraction of the defaults on fresh patterns: [dataset][scaling] -> (n,)."""
    exact = {}
    for seed in seeds:
        for name, (patterns, targets, probes) in datasets(seed).items():
            if name == "digits" and seed != seeds[0]:
                continue  # one digit set: fresh probes would change, not the patterns
            for label, scaling in SCALINGS.items():
                row = [measure(patterns, targets, probes, n=n, scaling=scaling,
                               temperature=DenseAssociativeMemory().temperature, seed=seed,
                               **params)[1] for n in n_values]
                exact.setdefault(name, {}).setdefault(label, []).append(row)
    return {name: {label: np.array(rows) for label, rows in by.items()}
            for name, by in exact.items()}


# ------------------------------------------------------------------------ reporting
def _cell(temperatures, learning_rates, index):
    b, c = index
    return f"T={temperatures[c]:g}, lr={learning_rates[b]:g}"


def summary_rows(errors, n_values, temperatures, learning_rates):
    rows = []
    for name, by_scaling in errors.items():
        for label, grid in by_scaling.items():
            reference = region(grid[0, ..., 0])
            for a, n in enumerate(n_values):
                distance, exact = grid[a, ..., 0], grid[a, ..., 1]
                overflowed = int(np.isnan(distance).sum())
                if overflowed == distance.size:
                    rows.append((name, n, label, "-", "-", "-", "-", "-", overflowed))
                    continue
                best = np.unravel_index(np.nanargmin(distance), distance.shape)
                mask = region(distance)
                rows.append((name, n, label, _cell(temperatures, learning_rates, best),
                             f"{distance[best]:.2f}", f"{exact[best]:.0%}",
                             f"{int(mask.sum())}/{mask.size}",
                             f"{jaccard(mask, reference):.2f}", overflowed))
    return rows


def findings(errors, n_values, temperatures, n_memories):
    """Sentences computed from the grid (no number typed by hand)."""
    lines = []
    for name, by_scaling in errors.items():
        original, scaled = by_scaling["original"][..., 0], by_scaling["scaled"][..., 0]
        for label, grid in by_scaling.items():
            overflow = _overflow_sentence(grid[..., 0], n_values, temperatures)
            lines.append(f"- **{name}, {label}**: {overflow}")
        predicted = _scaled_bound_exceeded(n_values, temperatures, n_memories)
        lines.append(
            f"- **{name}, scaled**: every overflowed cell is one where K (1/T)^n exceeds "
            f"float32's 3.4e38: "
            f"{'yes' if (np.isnan(scaled).any(axis=1) <= predicted).all() else 'no'}.")
        both = ~np.isnan(original) & ~np.isnan(scaled)
        apart = both & (np.abs(original - scaled) > 0.5)
        where = sorted({(n_values[a], temperatures[c]) for a, _, c in zip(*np.nonzero(apart))})
        lines.append(
            f"- **{name}**: where both finished ({int(both.sum())} cells), the two networks' "
            f"recall errors differ by more than 0.5 in {int(apart.sum())} cells"
            + (": " + ", ".join(f"n={n} T={t:g}" for n, t in where) if where else "")
            + f" (largest difference {np.abs(original - scaled)[both].max():.2f})."
        )
        exact = by_scaling["scaled"][..., 1]
        best_t = []
        for a, n in enumerate(n_values):
            if np.isnan(scaled[a]).all():
                continue
            columns = np.flatnonzero(region(scaled[a]).any(axis=0))
            best_t.append(f"n={n}: {temperatures[columns.min()]:g}-"
                          f"{temperatures[columns.max()]:g} "
                          f"({np.nanmax(exact[a]):.0%} exact at best)")
        lines.append(f"- **{name}, scaled**: temperatures with a cell in the best region "
                     f"(and the best cell's exact recall): {'; '.join(best_t)}.")
    return lines


def _scaled_bound_exceeded(n_values, temperatures, n_memories):
    """(n, T) mask where the scaled energy bound K (1/T)^n exceeds float32's maximum."""
    log_bound = (np.log(n_memories)
                 - np.outer(n_values, np.log(temperatures)))
    return log_bound > np.log(np.finfo(np.float32).max)


def _overflow_sentence(distance, n_values, temperatures):
    overflowed = np.isnan(distance)
    if not overflowed.any():
        return "no fit overflowed."
    parts = []
    for a, n in enumerate(n_values):
        columns = np.flatnonzero(overflowed[a].any(axis=0))
        if len(columns) == len(temperatures):
            parts.append(f"n={n}: every T")
        elif len(columns):
            parts.append(f"n={n}: T = {', '.join(f'{temperatures[c]:g}' for c in columns)}")
    return (f"the energies overflowed float32 in {int(overflowed.sum())} of "
            f"{overflowed.size} cells ({'; '.join(parts)}).")


def write_markdown(path, args, errors, defaults, n_values, temperatures, learning_rates,
                   params, elapsed):
    command = " ".join(["python benchmarks/dense_stability.py", *sys.argv[1:]])
    lines = [
        # The initialisation in the title: the runs with each --init are sections of one
        # results page, whose contents must tell them apart.
        "# DenseAssociativeMemory: hyperparameter stability, scaled vs original (float32, "
        f"init={args.init!r})",
        "",
        "Written by `benchmarks/dense_stability.py`; do not edit by hand.",
        "",
        f"- command: `{command}` ({elapsed:.0f} s)",
        f"- patterns: {N_PATTERNS} random bipolar patterns of dimension {N_RANDOM} "
        f"(seed {args.seed}); the first image of each digit, +1 where the pixel >= 8 "
        "(dimension 64)",
        f"- probes: {COPIES} per pattern, {FLIP_FRACTION:.0%} of the entries flipped; "
        "asynchronous recall",
        "- recall error: Euclidean distance between stored and recalled state, mean over "
        "the probes (lower is better; 2 sqrt(k) for k wrong entries); 'exact': the "
        "fraction of probes recalled exactly",
        f"- grid: temperature T in {temperatures} (the original network at N T: for the "
        "rectified F the same network in exact arithmetic, so the two panels can differ "
        "only by floating point), "
        f"learning rate in {learning_rates}; other parameters: "
        + ", ".join(f"{k}={v!r}" for k, v in params.items())
        + " and the estimator's defaults",
        f"- region: the cells whose error is within {REGION_TOLERANCE:.0%} of the best "
        "(only the error-free cells when the best is 0); overlap: the Jaccard index "
        "(shared cells / cells in either) of that region with the same network's region "
        "at n = 2; overflowed: cells whose fit stopped because the energies overflowed",
        f"- environment: {environment()}",
        "",
        "## What the grid shows",
        "",
        *findings(errors, n_values, temperatures, DenseAssociativeMemory().n_memories),
        "",
        "![heatmaps](dense_stability" + _suffix(args) + ".png)",
        "",
        "## Per n",
        "",
        "| data | n | network | best cell | error | exact | cells within 10 % | "
        "overlap with n=2 | overflowed |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(errors, n_values, temperatures, learning_rates):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    if defaults:
        lines += [
            "",
            "## The defaults on fresh patterns",
            "",
            f"`DenseAssociativeMemory(n)` with every other parameter at its default "
            f"(init={args.init!r}), the original at T = N x the default T: fraction of the "
            f"probes recalled exactly. Random patterns: seeds {DEFAULT_CHECK_SEEDS} (new "
            "patterns and probes, mean over seeds); digits: the same ten digits, the "
            f"probes of seed {DEFAULT_CHECK_SEEDS[0]}.",
            "",
            "| data | network | " + " | ".join(f"n={n}" for n in n_values) + " |",
            "|---|---|" + "---:|" * len(n_values),
        ]
        for name, by_scaling in defaults.items():
            for label, exact in by_scaling.items():
                cells = [("overflow" if np.isnan(col).any() else f"{np.mean(col):.0%}")
                         for col in exact.T]
                lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_figure(path, errors, n_values, temperatures, learning_rates):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(errors)
    columns = [(name, label) for name in names for label in SCALINGS]
    fig, axes = plt.subplots(len(n_values), len(columns), squeeze=False,
                             figsize=(2.3 * len(columns) + 1.2, 1.55 * len(n_values) + 1.0),
                             layout="constrained")
    for j, (name, label) in enumerate(columns):
        grid = errors[name][label][..., 0]
        vmax = max(np.nanmax(errors[name][s][..., 0], initial=0) for s in SCALINGS) or 1
        for a, n in enumerate(n_values):
            ax = axes[a, j]
            image = ax.imshow(grid[a], origin="lower", cmap="viridis_r", vmin=0, vmax=vmax,
                              aspect="auto")
            overflowed = np.isnan(grid[a])
            for b, c in zip(*np.nonzero(overflowed)):
                ax.add_patch(plt.Rectangle((c - 0.5, b - 0.5), 1, 1, fill=False,
                                           hatch="xx", edgecolor="0.45", linewidth=0))
            good = np.nanmax(errors[name][label][a, ..., 1], initial=0) >= 0.5
            for b, c in zip(*np.nonzero(region(grid[a]) & good)):
                ax.plot(c, b, marker="o", markersize=3, color="white",
                        markeredgecolor="black", markeredgewidth=0.4)
            ax.set_xticks(range(len(temperatures)))
            ax.set_yticks(range(len(learning_rates)))
            ax.set_xticklabels([f"{t:g}" for t in temperatures] if a == len(n_values) - 1
                               else [], fontsize=6)
            ax.set_yticklabels([f"{lr:g}" for lr in learning_rates] if j == 0 else [],
                               fontsize=6)
            if a == 0:
                ax.set_title(f"{name}: {label}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"n = {n}\nlearning rate", fontsize=7)
            if a == len(n_values) - 1:
                ax.set_xlabel("T (original: N T)" if label == "original" else "T",
                              fontsize=7)
        if label == list(SCALINGS)[-1]:
            fig.colorbar(image, ax=axes[:, j - len(SCALINGS) + 1:j + 1], shrink=0.4,
                         aspect=25, label=f"recall error, {name}").ax.tick_params(labelsize=6)
    fig.suptitle("Recall error over (temperature, learning rate), float32. Dots: within "
                 f"{REGION_TOLERANCE:.0%} of the best (where the best recalls half the probes "
                 "exactly); hatched: the energies overflowed", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _suffix(args):
    return "" if args.init == "patterns" else f"_init-{args.init}"


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        n_values, temperatures, learning_rates = [2, 20], [0.1, 1.0], [0.03, 0.3]
        params, check_seeds = {"init": args.init, "max_epochs": 20}, []
    else:
        n_values, temperatures, learning_rates = N_VALUES, TEMPERATURES, LEARNING_RATES
        params, check_seeds = {"init": args.init}, DEFAULT_CHECK_SEEDS
    start = time.perf_counter()
    errors = run_grid(datasets(args.seed), n_values, temperatures, learning_rates, params,
                      args.seed)
    defaults = check_defaults(n_values, {"init": args.init}, check_seeds) if check_seeds \
        else {}
    elapsed = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "dense_stability" + _suffix(args)
    write_markdown(args.output / f"{stem}.md", args, errors, defaults, n_values,
                   temperatures, learning_rates, params, elapsed)
    write_figure(args.output / f"{stem}.png", errors, n_values, temperatures,
                 learning_rates)
    print(f"wrote {args.output / (stem + '.md')} and {args.output / (stem + '.png')}")
    if args.output.resolve() == RESULTS and not args.quick:
        print(f"wrote {collect()}")


if __name__ == "__main__":
    main()
