"""Draw the gallery thumbnails of the examples that save no figure.

sphinx-gallery makes an example's thumbnail from the first figure it saves; an example that
only prints (a table, a check that a loaded model agrees) would get the default placeholder.
These are schematic drawings of what such an example does (no data, no numbers), named in
the example by ``# sphinx_gallery_thumbnail_path = "_static/thumbnails/NAME.png"``.

    python docs/_thumbnails.py     # rewrites docs/_static/thumbnails/*.png
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "_static" / "thumbnails"

# sphinx-gallery's thumbnail shape (400 x 280), drawn at twice the size for sharp scaling.
_SIZE, _DPI = (4.0, 2.8), 200
_BOX, _ACCENT, _TEXT = "#dce6f2", "#2a6fb0", "#1b1b1b"


def _canvas(title):
    fig = plt.figure(figsize=_SIZE, dpi=_DPI)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 2.8)
    ax.axis("off")
    ax.text(2, 2.55, title, ha="center", va="center", fontsize=11, weight="bold",
            color=_TEXT)
    return fig, ax


def _box(ax, x, y, text, *, width=1.1, height=0.5, accent=False, fontsize=7.5):
    """A rounded box centred on (x, y)."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=_ACCENT if accent else _BOX,
                                edgecolor=_ACCENT, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize,
            color="white" if accent else _TEXT)


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10,
                                 color=_ACCENT, linewidth=1.2))


def auto_detector():
    fig, ax = _canvas("AutoOODDetector")
    for i, name in enumerate(["KNN", "Mahalanobis", "Hopfield energy"]):
        y = 1.85 - 0.55 * i
        _box(ax, 0.75, y, name, width=1.2, height=0.4)
        _arrow(ax, (1.37, y), (1.78, 1.3))
    _box(ax, 2.3, 1.3, "held-out\nclasses", width=1.0, height=0.6)
    _arrow(ax, (2.82, 1.3), (3.12, 1.3))
    _box(ax, 3.5, 1.3, "chosen\ndetector", width=0.72, height=0.6, accent=True,
         fontsize=7)
    ax.text(2, 0.35, "chosen from in-distribution rows alone", ha="center", fontsize=7.5,
            color=_TEXT, style="italic")
    return fig


def dask_grid_search():
    fig, ax = _canvas("GridSearchCV on a Dask cluster")
    _box(ax, 0.75, 1.5, "GridSearchCV\n(joblib 'dask')", width=1.25, height=0.7,
         accent=True)
    for i in range(3):
        y = 2.0 - 0.48 * i
        _arrow(ax, (1.4, 1.5), (2.35, y))
        _box(ax, 2.95, y, f"worker {i + 1}", width=1.1, height=0.36)
    for i in range(6):
        ax.add_patch(FancyBboxPatch((0.25 + 0.58 * i, 0.2), 0.5, 0.22,
                                    boxstyle="round,pad=0.01,rounding_size=0.04",
                                    facecolor=_BOX, edgecolor=_ACCENT, linewidth=0.8))
    ax.text(2, 0.58, "a dask array scored one row block at a time", ha="center",
            fontsize=7.5, color=_TEXT, style="italic")
    return fig


def feature_extraction_pipeline():
    fig, ax = _canvas("Network to detector, one Pipeline")
    steps = ["images", "CNN\n(skorch)", "features", "OOD\ndetector"]
    for i, step in enumerate(steps):
        x = 0.5 + 1.0 * i
        _box(ax, x, 1.35, step, width=0.8, height=0.7, accent=i == 3)
        if i:
            _arrow(ax, (x - 0.58, 1.35), (x - 0.42, 1.35))
    ax.text(2, 0.55, "TorchFeatureExtractor  >  detector", ha="center", fontsize=7.5,
            color=_TEXT, family="monospace")
    return fig


def grid_search_pipeline():
    fig, ax = _canvas("Tuning RecLag with GridSearchCV")
    _box(ax, 0.85, 1.35, "Pipeline\nNormalizer > RecLag", width=1.4, height=0.7, accent=True)
    _arrow(ax, (1.58, 1.35), (2.05, 1.35))
    # The first search's grid (2 metrics x 2 sizes), schematic: cells, no values.
    for i in range(2):
        for j in range(2):
            ax.add_patch(FancyBboxPatch((2.3 + 0.62 * i, 0.92 + 0.46 * j), 0.54, 0.4,
                                        boxstyle="round,pad=0.01,rounding_size=0.04",
                                        facecolor=_BOX, edgecolor=_ACCENT, linewidth=0.8))
    ax.text(2.9, 0.62, "metric x n_memories on FPR95", ha="center", fontsize=7.5,
            color=_TEXT, style="italic")
    return fig


def persistence():
    fig, ax = _canvas("Save and load a detector")
    _box(ax, 0.6, 1.35, "fitted\ndetector", width=0.9, height=0.7, accent=True)
    for y, name in [(1.8, "joblib"), (0.9, "skops")]:
        _arrow(ax, (1.07, 1.35), (1.5, y))
        _box(ax, 2.0, y, name, width=0.9, height=0.42)
        _arrow(ax, (2.47, y), (2.9, 1.35))
    _box(ax, 3.4, 1.35, "same\nscores", width=0.9, height=0.7, accent=True)
    return fig


THUMBNAILS = [auto_detector, dask_grid_search, feature_extraction_pipeline,
              grid_search_pipeline, persistence]


def main():
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for draw in THUMBNAILS:
        fig = draw()
        fig.savefig(OUTPUT / f"{draw.__name__}.png", dpi=_DPI)
        plt.close(fig)
        print(f"wrote {OUTPUT / (draw.__name__ + '.png')}")


if __name__ == "__main__":
    main()
