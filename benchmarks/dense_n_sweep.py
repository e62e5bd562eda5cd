"""Test accuracy of DensePolynomialHopfield on digits against the interaction vertex n.

The curve McAlister's slides show for MNIST, measured on scikit-learn's digits: a 70/30
stratified split, ``Pipeline(MinMaxScaler(feature_range=(-1, 1)), DensePolynomialHopfield)``
with the default settings except n (and, with ``--momenta``, the momentum). Writes
``results/dense_n_sweep.md`` and ``results/dense_n_sweep.png`` next to this script.

    python benchmarks/dense_n_sweep.py            # n = 2..30, about 4 minutes on one core
    python benchmarks/dense_n_sweep.py --quick    # 6 values of n, 100 epochs, < 1 minute
    python benchmarks/dense_n_sweep.py --momenta 0 0.6   # add Krotov's momentum
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

import sklearn_reclag
from sklearn_reclag import DensePolynomialHopfield

RESULTS = Path(__file__).resolve().parent / "results"

sys.path.insert(0, str(RESULTS.parent))
from collect_results import collect  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="n in {2, 3, 5, 10, 20, 30} and 100 epochs")
    parser.add_argument("--n-min", type=int, default=2)
    parser.add_argument("--n-max", type=int, default=30)
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.0],
                        help="one curve per momentum (default: the estimator's default, 0)")
    parser.add_argument("--seed", type=int, default=0, help="split and model seed")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def digits_split(seed):
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)


def run(n_values, momenta, max_epochs, seed):
    """Rows (n, momentum, test accuracy, train accuracy, fit seconds, finite scores)."""
    X_train, X_test, y_train, y_test = digits_split(seed)
    extra = {} if max_epochs is None else {"max_epochs": max_epochs}
    rows = []
    for momentum in momenta:
        for n in n_values:
            model = Pipeline([
                # clip=True: test pixels beyond the training range stay in [-1, 1].
                ("scale", MinMaxScaler(feature_range=(-1, 1), clip=True)),
                ("dph", DensePolynomialHopfield(n, momentum=momentum, device="cpu",
                                                random_state=seed, **extra)),
            ])
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            finite = bool(np.isfinite(model.score_samples(X_test)).all()
                          and np.isfinite(model.predict_proba(X_test)).all())
            rows.append((n, momentum, model.score(X_test, y_test),
                         model.score(X_train, y_train), seconds, finite))
            print(f"n={n:2d} momentum={momentum:g}: test accuracy {rows[-1][2]:.4f} "
                  f"({seconds:.1f} s)", flush=True)
    return rows


def write_markdown(rows, args, max_epochs, path):
    defaults = DensePolynomialHopfield().get_params()
    command = " ".join(["python benchmarks/dense_n_sweep.py", *sys.argv[1:]])
    lines = [
        "# DensePolynomialHopfield: digits test accuracy against n",
        "",
        "Written by `benchmarks/dense_n_sweep.py`; do not edit by hand.",
        "",
        f"- command: `{command}`",
        "- data: scikit-learn digits (1797 rows, 64 features, 10 classes), 70/30 "
        f"stratified split (seed {args.seed}), MinMaxScaler(feature_range=(-1, 1), clip=True)",
        f"- model: defaults except n and momentum: temperature={defaults['temperature']}, "
        f"n_memories={defaults['n_memories']}, interaction='{defaults['interaction']}', "
        f"loss_power={defaults['loss_power']}, lr={defaults['lr']}, "
        f"lr_decay={defaults['lr_decay']}, max_epochs="
        f"{defaults['max_epochs'] if max_epochs is None else max_epochs}, "
        f"batch_size={defaults['batch_size']}, dtype='float32', device='cpu'",
        f"- environment: sklearn-reclag {sklearn_reclag.__version__}, torch "
        f"{torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads (fit times are "
        "wall-clock and depend on the machine's load)",
        "",
        "| n | momentum | test accuracy | train accuracy | fit time (s) | finite scores |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for n, momentum, test, train, seconds, finite in rows:
        lines.append(f"| {n} | {momentum:g} | {test:.4f} | {train:.4f} | {seconds:.1f} | "
                     f"{'yes' if finite else 'NO'} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for momentum in sorted({row[1] for row in rows}):
        curve = [(row[0], row[2]) for row in rows if row[1] == momentum]
        ax.plot(*zip(*curve), marker="o", label=f"momentum {momentum:g}")
    ax.set_xlabel("interaction vertex n")
    ax.set_ylabel("digits test accuracy")
    ax.set_title("DensePolynomialHopfield (McAlister scaling, float32)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        n_values, max_epochs = [2, 3, 5, 10, 20, 30], 100
    else:
        n_values, max_epochs = list(range(args.n_min, args.n_max + 1)), None
    rows = run(n_values, args.momenta, max_epochs, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    write_markdown(rows, args, max_epochs, args.output / "dense_n_sweep.md")
    write_plot(rows, args.output / "dense_n_sweep.png")
    print(f"wrote {args.output / 'dense_n_sweep.md'} and {args.output / 'dense_n_sweep.png'}")
    if args.output.resolve() == RESULTS:
        print(f"wrote {collect()}")


if __name__ == "__main__":
    main()
