"""The plots of an OOD study: ROC curves, score histograms and a RecLag energy landscape
=====================================================================================

Needs the ``plot`` extra: ``pip install sklearn-reclag[plot]``.

The features are the penultimate layer of a small CNN trained on digits 0-4
(:func:`sklearn_reclag.datasets.load_digits_ood_features`); every detector uses the CNN's
own linear layer as its head, except the one on L2-normalised features, which fits its own.

- ``roc_curves.png``: the ROC of every detector against the near-OOD set (digits 5-9);
- ``score_histograms.png``: the scores of RecLag on L2-normalised features for the ID test
  rows and for each OOD test set, with the fitted threshold ``offset_``;
- ``energy_landscape.png``: the energy of one class bank of a RecLag detector fitted on
  the features reduced to 2-D by PCA, with its memories and the OOD attractor region
  ``G(v) <= 0``, where rows are rejected and retrieval collapses to the origin.

Run::

    python examples/plot_detectors.py [OUTPUT_DIR]    # default: ./output
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, open no window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import Normalizer  # noqa: E402

from sklearn_reclag import (  # noqa: E402
    OOD_LABEL,
    EnergyDetector,
    HopfieldEnergyDetector,
    MSPDetector,
    ReActDetector,
    RecLagDetector,
)
from sklearn_reclag.datasets import load_digits_ood_features  # noqa: E402
from sklearn_reclag.plotting import (  # noqa: E402
    plot_energy_landscape,
    plot_roc_curves,
    plot_score_histograms,
)


def main(output_dir="output"):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits_ood_features(quick=True, random_state=0, device="cpu")
    common = dict(head=data.head, device="cpu")
    detectors = {
        "MSP": MSPDetector(**common),
        "Energy": EnergyDetector(**common),
        "ReAct": ReActDetector(**common),
        "HE": HopfieldEnergyDetector(**common),
        "RecLag": RecLagDetector(random_state=0, **common),
        # The papers' lse scores grow with the feature norm; on unit-norm features they
        # do not.
        "RecLag, L2-normalised": make_pipeline(
            Normalizer(), RecLagDetector(beta=50.0, energy="lse", metric="euclidean",
                                         device="cpu", random_state=0)
        ),
    }
    for detector in detectors.values():
        detector.fit(data.X_train, data.y_train)

    # ROC curves against the near-OOD set.
    X_near = data.ood_test["digits 5-9"]
    X_test = np.vstack([data.X_test, X_near])
    y_test = np.r_[data.y_test, np.full(len(X_near), OOD_LABEL)]
    ax = plot_roc_curves({name: det.score_samples(X_test) for name, det in detectors.items()},
                         y_test)
    ax.set_title("ID: digits 0-4, OOD: digits 5-9")
    _save(ax, output_dir / "roc_curves.png")

    # Score distributions of the normalised RecLag, ID test rows against each OOD test set.
    reclag = detectors["RecLag, L2-normalised"]
    ax = plot_score_histograms(
        reclag.score_samples(data.X_test),
        {name: reclag.score_samples(X) for name, X in data.ood_test.items()},
        threshold=reclag[-1].offset_,
    )
    ax.set_title("RecLag scores on L2-normalised features")
    _save(ax, output_dir / "score_histograms.png")

    # The energy landscape needs 2-D features: reduce them, then fit RecLag there. It draws
    # the paper's energy, whose score is energy='lse' in the raw (euclidean) space.
    pca = PCA(2).fit(data.X_train)
    V_train, V_near = pca.transform(data.X_train), pca.transform(X_near)
    landscape = RecLagDetector(n_memories=5, beta=0.5, solver="em", energy="lse",
                               metric="euclidean", device="cpu",
                               random_state=0).fit(V_train, data.y_train)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(V_near[:, 0], V_near[:, 1], s=6, color="tab:orange", alpha=0.4,
               label="OOD: digits 5-9")
    plot_energy_landscape(landscape, V_train[data.y_train == 0], class_index=0, ax=ax)
    _save(ax, output_dir / "energy_landscape.png")


def _save(ax, path):
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output",
                        help="where to write the PNG files (default: ./output)")
    main(parser.parse_args().output_dir)
