"""Why DensePolynomialHopfield's digits accuracy dips at large n: seeds, precision, memories.

``dense_n_sweep.py`` runs one seed, and its curve dips at large n. This script measures
what the dip is made of, on the same digits split and Pipeline, at three n past the dip and
one before it:

- the spread over seeds (a new split and a new model for each seed), at the default
  temperature and at a lower one;
- float64 against float32 at the default temperature: if the energies lost precision or
  overflowed in float32, float64 would do better;
- the number of memories in use: memories that contribute most to the energy of at least
  one training row, at the row's predicted label.

Writes ``results/dense_n_dip.md``.

    python benchmarks/dense_n_dip.py           # about 10 minutes on one core
    python benchmarks/dense_n_dip.py --quick   # n in {3, 25}, 2 seeds, 30 epochs
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from sklearn_reclag import DensePolynomialHopfield

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))
from collect_results import collect  # noqa: E402
from dense_n_sweep import digits_split  # noqa: E402
from dense_patterns import environment  # noqa: E402

N_VALUES = [3, 20, 25, 27]
SEEDS = [0, 1, 2]
LOW_TEMPERATURE = 0.3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def memories_in_use(model, X):
    """Memories that contribute most to -E of at least one row (at its predicted label)."""
    dph = model[-1]
    Xs = model[0].transform(X)
    memories = dph.memories_
    visible, labels = memories[:, :Xs.shape[1]], memories[:, Xs.shape[1]:]
    predicted = np.searchsorted(dph.classes_, dph.predict(Xs))
    overlaps = Xs @ visible.T - labels.sum(axis=1) + 2 * labels.T[predicted]
    return np.unique(overlaps.argmax(axis=1)).size


def measure(n, seed, **params):
    """(test accuracy, train accuracy, memories in use) of one fit."""
    X_train, X_test, y_train, y_test = digits_split(seed)
    model = Pipeline([
        ("scale", MinMaxScaler(feature_range=(-1, 1), clip=True)),
        ("dph", DensePolynomialHopfield(n, device="cpu", random_state=seed, **params)),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(X_train, y_train)
    return (model.score(X_test, y_test), model.score(X_train, y_train),
            memories_in_use(model, X_train))


def run(settings, seeds, extra):
    """rows: (setting label, n, [(test, train, used) per seed])."""
    rows = []
    for label, params, n_values in settings:
        for n in n_values:
            start = time.perf_counter()
            per_seed = [measure(n, seed, **params, **extra) for seed in seeds]
            rows.append((label, n, per_seed))
            tests = [r[0] for r in per_seed]
            print(f"{label:28s} n={n:2d}: test {np.mean(tests):.4f} +- {np.std(tests):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def findings(rows, default_t, n_values):
    by = {(label, n): np.array(per_seed) for label, n, per_seed in rows}
    default = f"T={default_t:g}, float32"
    small, large = n_values[0], n_values[1:]
    lines = []
    test_small = by[(default, small)][:, 0]
    lines.append(
        f"- At the defaults, n = {small} reaches {test_small.mean():.3f} test accuracy "
        f"(seeds {test_small.min():.3f}-{test_small.max():.3f}); n = "
        + ", ".join(f"{n}: {by[(default, n)][:, 0].mean():.3f} (seeds "
                    f"{by[(default, n)][:, 0].min():.3f}-{by[(default, n)][:, 0].max():.3f})"
                    for n in large) + "."
    )
    f64 = f"T={default_t:g}, float64"
    if any(label == f64 for label, _, _ in rows):
        parts = []
        for n in large:
            diff = by[(f64, n)][:, 0].mean() - by[(default, n)][:, 0].mean()
            spread = max(by[(f64, n)][:, 0].std(), by[(default, n)][:, 0].std())
            parts.append(f"n = {n}: {diff:+.3f} (seed std up to {spread:.3f})")
        lines.append(
            "- float64 minus float32 at the default T, mean test accuracy over seeds: "
            + ", ".join(parts) + ". Lost precision or overflow in float32 would show as "
            "float64 doing better by more than the spread over seeds.")
    used = {n: by[(default, n)][:, 2].mean() for n in n_values}
    lines.append(
        "- Memories in use (of 100) at the defaults, mean over seeds: "
        + ", ".join(f"n = {n}: {u:.0f}" for n, u in used.items()) + ".")
    low = f"T={LOW_TEMPERATURE:g}, float32"
    if any(label == low for label, _, _ in rows):
        lines.append(
            f"- T = {LOW_TEMPERATURE:g} instead of {default_t:g}, mean test accuracy: "
            + ", ".join(f"n = {n}: {by[(low, n)][:, 0].mean():.3f} vs "
                        f"{by[(default, n)][:, 0].mean():.3f}" for n in n_values) + ".")
    return lines


def write_markdown(path, rows, seeds, extra, default_t, n_values, elapsed):
    command = " ".join(["python benchmarks/dense_n_dip.py", *sys.argv[1:]])
    lines = [
        "# DensePolynomialHopfield: what the dip of the n sweep is made of",
        "",
        "Written by `benchmarks/dense_n_dip.py`; do not edit by hand.",
        "",
        f"- command: `{command}` ({elapsed:.0f} s)",
        "- data and model: as in dense_n_sweep.md (digits, 70/30 stratified split, "
        "MinMaxScaler(feature_range=(-1, 1), clip=True), defaults except the named "
        f"settings{', ' + repr(extra) if extra else ''}); seed s: split and model seed s, "
        f"seeds {seeds}",
        "- memories in use: memories that contribute most to the energy of at least one "
        "training row at its predicted label",
        f"- environment: {environment()}",
        "",
        "## Findings (computed)",
        "",
        *findings(rows, default_t, n_values),
        "",
        "## Every setting",
        "",
        "| setting | n | test accuracy, mean +- std | per seed | train accuracy | "
        "memories in use |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for label, n, per_seed in rows:
        arr = np.array(per_seed)
        lines.append(
            f"| {label} | {n} | {arr[:, 0].mean():.4f} +- {arr[:, 0].std():.4f} | "
            + ", ".join(f"{v:.3f}" for v in arr[:, 0])
            + f" | {arr[:, 1].mean():.4f} | {arr[:, 2].mean():.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    default_t = DensePolynomialHopfield().temperature
    if args.quick:
        n_values, seeds, extra = [3, 25], [0, 1], {"max_epochs": 30}
    else:
        n_values, seeds, extra = N_VALUES, SEEDS, {}
    # float64 (several times slower) only where the dip is: precision is the question there.
    settings = [
        (f"T={default_t:g}, float32", {}, n_values),
        (f"T={default_t:g}, float64", {"dtype": "float64"}, n_values[1:]),
        (f"T={LOW_TEMPERATURE:g}, float32", {"temperature": LOW_TEMPERATURE}, n_values),
    ]
    start = time.perf_counter()
    rows = run(settings, seeds, extra)
    elapsed = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "dense_n_dip.md"
    write_markdown(path, rows, seeds, extra, default_t, n_values, elapsed)
    print(f"wrote {path}")
    if args.output.resolve() == RESULTS and not args.quick:
        print(f"wrote {collect()}")


if __name__ == "__main__":
    main()
