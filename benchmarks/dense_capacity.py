"""Capacity of DenseAssociativeMemory: recall against the number of stored patterns.

Krotov & Hopfield (2016, eq. 6) estimate that a dense associative memory of N neurons and
interaction vertex n stores ``K_max = N^(n-1) / (2 (2n-3)!! ln N)`` random patterns
(:func:`sklearn_reclag.capacity`). This script stores P random bipolar patterns of
dimension 100 for n in {2, 3, 4} and measures, for growing P:

- **stored**: the patterns themselves are the memories (``init=X``, ``max_epochs=0``):
  the setting of the estimate. Measured: the fraction of patterns that are fixed points of
  the update rule, and the fraction of probes (each pattern with 10 % of its entries
  flipped) recalled exactly.
- **learned**: the estimator's defaults (100 memories, learned from the patterns), the
  fraction of probes recalled exactly.

Writes ``results/dense_capacity.md`` and ``results/dense_capacity.png``.

    python benchmarks/dense_capacity.py           # about 5 minutes on one core
    python benchmarks/dense_capacity.py --quick   # n in {2, 3}, a few small P
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sklearn_reclag import DenseAssociativeMemory, capacity

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))
from collect_results import collect  # noqa: E402
from dense_patterns import corrupt, environment, random_patterns, recall_quality  # noqa: E402

N_NEURONS = 100
N_VALUES = [2, 3, 4]
# P on a log grid; each n stops after two points without any exact recall.
STORED_P = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
LEARNED_P = [8, 16, 32, 64, 128, 256, 512]
FLIP_FRACTION = 0.1
MAX_PROBES = 100  # probes per point: the first patterns (all of them while P <= 100)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n in {2, 3}, P <= 64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def measure(n, n_patterns, *, stored, seed):
    """(fixed-point fraction or NaN, exact recall fraction from flipped probes)."""
    rng = np.random.default_rng([seed, n, n_patterns])
    X = random_patterns(n_patterns, N_NEURONS, rng)
    tested = X[:MAX_PROBES]
    targets, probes = corrupt(tested, rng, FLIP_FRACTION, copies=1)
    params = dict(n_memories=n_patterns, init=X, max_epochs=0) if stored else {}
    memory = DenseAssociativeMemory(n, device="cpu", random_state=seed, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a probe still moving after max_iter is wrong
        memory.fit(X)
        fixed = recall_quality(memory.transform(tested), tested)[1] if stored else np.nan
        exact = recall_quality(memory.transform(probes), targets)[1]
    return fixed, exact


def sweep(n_values, p_values, *, stored, seed):
    """{n: [(P, fixed, exact), ...]}, stopping after two points with no exact recall."""
    curves = {}
    for n in n_values:
        curves[n], zeros = [], 0
        for n_patterns in p_values:
            start = time.perf_counter()
            fixed, exact = measure(n, n_patterns, stored=stored, seed=seed)
            curves[n].append((n_patterns, fixed, exact))
            print(f"{'stored' if stored else 'learned':7s} n={n} P={n_patterns:5d}: fixed "
                  f"points {fixed:.2f}, exact recall {exact:.2f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
            zeros = zeros + 1 if exact == 0 else 0
            if zeros == 2:
                break
    return curves


def largest_p(curve, column, level=0.9):
    """The largest P of the curve whose measure is at least ``level`` ('-' if none)."""
    good = [row[0] for row in curve if row[column] >= level]
    return str(max(good)) if good else "-"


def write_markdown(path, stored, learned, n_values, elapsed):
    command = " ".join(["python benchmarks/dense_capacity.py", *sys.argv[1:]])
    defaults = DenseAssociativeMemory().get_params()
    lines = [
        "# DenseAssociativeMemory: capacity against Krotov & Hopfield's estimate",
        "",
        "Written by `benchmarks/dense_capacity.py`; do not edit by hand.",
        "",
        f"- command: `{command}` ({elapsed:.0f} s)",
        f"- patterns: P random bipolar patterns of dimension N = {N_NEURONS}; probes: "
        f"the first {MAX_PROBES} patterns with {FLIP_FRACTION:.0%} of their entries "
        "flipped; asynchronous recall",
        "- stored: the memories are the patterns (`init=X, n_memories=P, max_epochs=0`); "
        "fixed points: the patterns that recall leaves unchanged",
        f"- learned: the defaults ({defaults['n_memories']} memories, "
        f"init={defaults['init']!r}, {defaults['max_epochs']} epochs, "
        f"T={defaults['temperature']}, lr={defaults['lr']})",
        "- estimate: `capacity(N, n) = N^(n-1) / (2 (2n-3)!! ln N)` (Krotov & Hopfield, "
        "2016, eq. 6)",
        f"- environment: {environment()}",
        "",
        "![capacity](dense_capacity.png)",
        "",
        "## Largest P with at least 90 % of the patterns recalled",
        "",
        "| n | capacity(N, n) | stored: fixed points | stored: from 10 % flips | "
        "learned: from 10 % flips |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in n_values:
        lines.append(f"| {n} | {capacity(N_NEURONS, n):.1f} | {largest_p(stored[n], 1)} | "
                     f"{largest_p(stored[n], 2)} | "
                     f"{largest_p(learned.get(n, []), 2)} |")
    lines += ["", "## Every point", "",
              "| n | P | P / capacity | stored: fixed points | stored: exact recall | "
              "learned: exact recall |",
              "|---:|---:|---:|---:|---:|---:|"]
    for n in n_values:
        learned_at = {row[0]: row[2] for row in learned.get(n, [])}
        p_values = sorted({row[0] for row in stored[n]} | set(learned_at))
        stored_at = {row[0]: row[1:] for row in stored[n]}
        for p in p_values:
            fixed, exact = stored_at.get(p, (np.nan, np.nan))
            lines.append(
                f"| {n} | {p} | {p / capacity(N_NEURONS, n):.2f} | {_pct(fixed)} | "
                f"{_pct(exact)} | {_pct(learned_at.get(p, np.nan))} |")
    path.write_text("\n".join(lines) + "\n")


def _pct(value):
    return "-" if np.isnan(value) else f"{value:.0%}"


def write_figure(path, stored, learned, n_values):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True,
                             layout="constrained")
    colors = dict(zip(n_values, plt.get_cmap("tab10").colors))
    for n in n_values:
        p, fixed, exact = np.array(stored[n]).T
        axes[0].plot(p, exact, marker="o", color=colors[n], label=f"n = {n}: 10 % flipped")
        axes[0].plot(p, fixed, linestyle=":", color=colors[n], label=f"n = {n}: fixed points")
        if learned.get(n):
            p, _, exact = np.array(learned[n]).T
            axes[1].plot(p, exact, marker="o", color=colors[n], label=f"n = {n}")
        for ax in axes:
            ax.axvline(capacity(N_NEURONS, n), color=colors[n], linestyle="--", linewidth=1)
    n_memories = DenseAssociativeMemory().n_memories
    axes[1].axvline(n_memories, color="0.5", linestyle=":", linewidth=1.5,
                    label=f"P = {n_memories} memories")
    axes[0].set_title("stored: the memories are the patterns")
    axes[1].set_title(f"learned: {n_memories} memories (defaults)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"stored patterns P (N = {N_NEURONS})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction recalled exactly")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="lower left", title="dashed: capacity(N, n)",
                   title_fontsize=7)
    fig.suptitle("DenseAssociativeMemory: recall against the number of patterns, with "
                 "Krotov & Hopfield's capacity(N, n) (dashed)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        n_values, stored_p, learned_p = [2, 3], [4, 16, 64], [8, 32]
    else:
        n_values, stored_p, learned_p = N_VALUES, STORED_P, LEARNED_P
    start = time.perf_counter()
    stored = sweep(n_values, stored_p, stored=True, seed=args.seed)
    learned = sweep(n_values, learned_p, stored=False, seed=args.seed)
    elapsed = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    write_markdown(args.output / "dense_capacity.md", stored, learned, n_values, elapsed)
    write_figure(args.output / "dense_capacity.png", stored, learned, n_values)
    print(f"wrote {args.output / 'dense_capacity.md'} and {args.output / 'dense_capacity.png'}")
    if args.output.resolve() == RESULTS and not args.quick:
        print(f"wrote {collect()}")


if __name__ == "__main__":
    main()
