"""Pattern completion with a dense associative memory: corrupted and half-hidden digits
====================================================================================

A :class:`~sklearn_reclag.DenseAssociativeMemory` stores thirty of scikit-learn's 8x8
digits (three of each class) as +-1 images. It is then shown each of ten stored digits

- with 15 % of its pixels flipped: asynchronous recall (``transform``) relaxes the image
  to a minimum of the energy, the stored digit;
- with its bottom half hidden (set to 0, "unknown") and its top half clamped:
  ``recall(X, mask=top_half)`` fills in the bottom half.

Run::

    python examples/plot_pattern_completion.py [OUTPUT_DIR]   # default: ./output

It writes ``OUTPUT_DIR/pattern_completion.png`` (a few seconds on one CPU core).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from sklearn_reclag import DenseAssociativeMemory  # noqa: E402

PER_CLASS = 3  # stored digits of each class
FLIPPED = 0.15  # fraction of the pixels flipped in the corrupted probes


def stored_digits():
    """The first three images of each digit as +-1 images (+1: ink, pixel >= 8 of 16)."""
    X, y = load_digits(return_X_y=True)
    rows = np.concatenate([np.flatnonzero(y == digit)[:PER_CLASS] for digit in range(10)])
    return np.where(X[rows] >= 8, 1.0, -1.0), y[rows]


def _which(state, patterns, labels):
    """What a recalled state is: another stored digit, or no stored pattern."""
    match = np.flatnonzero((patterns == state).all(axis=1))
    return f"another stored {labels[match[0]]}" if len(match) else "no stored digit"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    patterns, labels = stored_digits()
    memory = DenseAssociativeMemory(n=10, random_state=0).fit(patterns)

    shown = patterns[::PER_CLASS]  # one stored digit of each class
    corrupted = np.where(rng.random(shown.shape) < FLIPPED, -shown, shown)
    restored = memory.transform(corrupted)

    top_half = np.arange(64) < 32  # rows 0-3 of the 8x8 image are known and clamped
    hidden = np.where(top_half, shown, 0.0)
    completed = memory.recall(hidden, mask=top_half)

    exact_restored = (restored == shown).all(axis=1)
    exact_completed = (completed == shown).all(axis=1)
    print(f"{exact_restored.sum()} of {len(shown)} digits with {FLIPPED:.0%} of their "
          "pixels flipped were restored exactly")
    print(f"{exact_completed.sum()} of {len(shown)} digits with their bottom half hidden "
          "were completed exactly")
    for name, states in [("restored", restored), ("completed", completed)]:
        for j in np.flatnonzero(~(states == shown).all(axis=1)):
            what = _which(states[j], patterns, labels)
            print(f"  the {labels[::PER_CLASS][j]} was {name} as {what}")

    rows = [
        ("stored", shown, None),
        (f"{FLIPPED:.0%} flipped", corrupted, None),
        ("restored", restored, exact_restored),
        ("bottom half\nhidden", hidden, None),
        ("completed", completed, exact_completed),
    ]
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(1.05 * len(shown), 6.2),
                             layout="constrained")
    for i, (title, images, exact) in enumerate(rows):
        for j, image in enumerate(images):
            ax = axes[i, j]
            # gray_r: ink (+1) black, background (-1) white, unknown (0) grey.
            ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if exact is not None:
                color = "tab:green" if exact[j] else "tab:red"
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(2.5)
                if not exact[j]:
                    ax.set_xlabel(_which(image, patterns, labels), fontsize=8, color=color)
            if j == 0:
                ax.set_ylabel(title, fontsize=10)
            if i == 0:
                ax.set_title(str(labels[::PER_CLASS][j]), fontsize=10)
    fig.suptitle(f"DenseAssociativeMemory(n=10) storing {len(patterns)} digits: "
                 "green frame = the stored digit exactly, red = not", fontsize=11)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "pattern_completion.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
