"""Features or prototypes: the memories a dense associative memory learns, for small and large n
=============================================================================================

Krotov & Hopfield (2016) observed that the interaction vertex n changes what the memories of
a :class:`~sklearn_reclag.DensePolynomialHopfield` look like: with a small n each digit is
the sum of many memories that each match a part of it (feature-like memories, often
ambiguous about the class), with a large n a single memory must match a whole digit, so the
memories turn into prototypes of one class each. This script trains both on scikit-learn's
digits and draws the visible part of the memories as 8x8 images, titled with the class whose
label neuron the memory drives hardest.

Run::

    python examples/plot_dense_memories.py [OUTPUT_DIR] [--quick]   # default: ./output

It writes ``OUTPUT_DIR/dense_memories.png``; ``--quick`` trains 100 epochs instead of 300
(well under a minute on one CPU core).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from sklearn_reclag import DensePolynomialHopfield  # noqa: E402

N_SHOWN = 24  # memories drawn per model


def fit_model(n, X_train, y_train, max_epochs):
    model = make_pipeline(
        MinMaxScaler(feature_range=(-1, 1), clip=True),
        DensePolynomialHopfield(n, max_epochs=max_epochs, device="cpu", random_state=0),
    )
    return model.fit(X_train, y_train)


def draw_memories(subfig, model, title):
    axes = subfig.subplots(3, 8)
    subfig.suptitle(title, fontsize=10)
    dph = model[-1]
    memories = dph.memories_
    visible, labels = memories[:, : dph.n_features_in_], memories[:, dph.n_features_in_:]
    # Show the memories that commit hardest to one class first, grouped by that class.
    commitment = labels.max(axis=1) - np.sort(labels, axis=1)[:, -2]
    shown = np.argsort(-commitment)[:N_SHOWN]
    shown = shown[np.argsort(labels[shown].argmax(axis=1), kind="stable")]
    for ax, mu in zip(axes.ravel(), shown):
        ax.imshow(visible[mu].reshape(8, 8), cmap="bwr", vmin=-1, vmax=1)
        ax.set_title(str(dph.classes_[labels[mu].argmax()]), fontsize=8)
        ax.set_axis_off()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output", type=Path)
    parser.add_argument("--quick", action="store_true", help="100 epochs instead of 300")
    parser.add_argument("--n-small", type=int, default=2)
    parser.add_argument("--n-large", type=int, default=30)
    args = parser.parse_args(argv)
    max_epochs = 100 if args.quick else 300

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    fig = plt.figure(figsize=(9, 8), layout="constrained")
    fig.suptitle("DensePolynomialHopfield memories on digits: features (small n) "
                 "vs prototypes (large n)", fontsize=11)
    for subfig, n in zip(fig.subfigures(2, 1), [args.n_small, args.n_large]):
        model = fit_model(n, X_train, y_train, max_epochs)
        accuracy = model.score(X_test, y_test)
        print(f"n = {n}: test accuracy {accuracy:.3f}")
        draw_memories(subfig, model, f"n = {n} (test accuracy {accuracy:.3f})")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "dense_memories.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
