"""Plots render headless to PNG and carry the lines, labels and regions they promise."""

import sys

import matplotlib

matplotlib.use("Agg")  # headless, whatever the test is run from

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from sklearn_reclag import OOD_LABEL, EnergyDetector, RecLagDetector  # noqa: E402
from sklearn_reclag.plotting import (  # noqa: E402
    plot_energy_landscape,
    plot_roc_curves,
    plot_score_histograms,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def scored(digits_split):
    X_id, y_id, X_ood = digits_split
    det = EnergyDetector(device="cpu").fit(X_id[:300], y_id[:300])
    return det, det.score_samples(X_id[300:500]), det.score_samples(X_ood[:200])


def _save(ax, path):
    ax.figure.savefig(path)
    assert path.exists() and path.stat().st_size > 1000  # a real image, not an empty file


def test_roc_curves_draw_one_curve_per_detector(scored, tmp_path):
    _, s_id, s_ood = scored
    y = np.r_[np.zeros(len(s_id), int), np.full(len(s_ood), OOD_LABEL)]
    scores = {"energy": np.r_[s_id, s_ood], "reversed": -np.r_[s_id, s_ood]}
    ax = plot_roc_curves(scores, y)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("energy (AUROC") and labels[1].startswith("reversed (AUROC")
    assert labels[2:] == ["chance", "TPR 0.95"]
    # The curve is sklearn's ROC of the scores with ID as the positive class.
    fpr, tpr, _ = roc_curve(y != OOD_LABEL, scores["energy"])
    np.testing.assert_allclose(ax.get_lines()[0].get_xydata(), np.c_[fpr, tpr])
    assert "False positive rate" in ax.get_xlabel()
    _save(ax, tmp_path / "roc.png")


def test_thirteen_roc_curves_each_have_their_own_style_and_the_legend_covers_none(tmp_path):
    """The demo draws 13 curves: matplotlib's 10-colour cycle gave MSP and the eleventh
    the same blue, and the legend sat on the curves."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.full(50, OOD_LABEL)]
    scores = {f"method {i}": np.r_[rng.normal(i / 8, 1, 50), rng.normal(0, 1, 50)]
              for i in range(13)}
    ax = plot_roc_curves(scores, y)
    curves = ax.get_lines()[:13]
    styles = {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle())
              for line in curves}
    assert len(styles) == 13
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # to the right of the axes
    path = tmp_path / "roc13.png"
    ax.figure.savefig(path, bbox_inches="tight")
    width, _ = matplotlib.image.imread(path).shape[1::-1]
    assert width > ax.figure.get_size_inches()[0] * ax.figure.dpi * 0.9  # legend kept


def test_complex_scores_are_refused_by_the_plots():
    with pytest.raises(ValueError, match="complex"):
        plot_roc_curves({"a": np.array([1 + 1j, 0.5])}, [0, -1])
    with pytest.raises(ValueError, match="complex"):
        plot_score_histograms(np.array([1 + 1j]), [0.5])


def test_roc_curves_draw_on_the_given_axes():
    fig, (left, right) = plt.subplots(1, 2)
    ax = plot_roc_curves({"a": [0.1, 0.9, 0.5]}, [-1, 0, 0], ax=right)
    assert ax is right and not left.get_lines()


def test_score_histograms_share_bins_for_id_and_each_ood_set(scored, tmp_path):
    det, s_id, s_ood = scored
    ax = plot_score_histograms(s_id, {"digits 5-9": s_ood, "noise": s_ood[:50] - 5},
                               bins=30, threshold=det.offset_)
    assert ax.get_legend_handles_labels()[1] == ["digits 5-9", "noise", "ID", "threshold"]
    assert len(ax.patches) == 3  # one stepfilled polygon per set
    (vline,) = ax.get_lines()
    assert vline.get_xdata()[0] == pytest.approx(det.offset_)
    _save(ax, tmp_path / "hist.png")


def test_score_histograms_accept_one_ood_array(scored):
    _, s_id, s_ood = scored
    ax = plot_score_histograms(s_id, s_ood)
    assert ax.get_legend_handles_labels()[1] == ["OOD", "ID"]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: plot_roc_curves([0.1, 0.2], [0, -1]), TypeError, "dict mapping a name"),
        (lambda: plot_roc_curves({}, [0, -1]), TypeError, "non-empty dict"),
        (lambda: plot_roc_curves({"a": [0.1, np.nan]}, [0, -1]), ValueError, "NaN"),
        (lambda: plot_roc_curves({"a": [0.1, 0.2]}, [0, 1]), ValueError, "no OOD rows"),
        (lambda: plot_score_histograms([], [1.0]), ValueError, "non-empty 1-D"),
        (lambda: plot_score_histograms([1.0], [1.0], bins=0), ValueError, "bins"),
    ],
)
def test_bad_input_is_reported(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_missing_matplotlib_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install sklearn-reclag\[plot\]"):
        plot_score_histograms([1.0, 2.0], [0.0])


# ------------------------------------------------------------- energy landscape
@pytest.fixture(scope="module")
def reclag_2d():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(3, 0.5, (60, 2)), rng.normal(-3, 0.5, (60, 2))]
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    # The paper's energy: the lse score in the raw feature space.
    det = RecLagDetector(n_memories=3, beta=2.0, solver="em", energy="lse", metric="euclidean",
                         device="cpu", random_state=0)
    return det.fit(X, y), X, y


def _filled_mask(ax, xy):
    """Whether the shaded OOD region of ``ax`` covers each point of ``xy``."""
    fill = ax.collections[1]  # after the energy contours
    paths = fill.get_paths()
    return np.array([any(p.contains_point(pt) for p in paths) for pt in xy])


def test_energy_landscape_marks_memories_and_shades_the_ood_region(reclag_2d, tmp_path):
    det, X, y = reclag_2d
    ax = plot_energy_landscape(det, X[y == 1], class_index=1, grid=80)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [r"OOD attractor region $G(v) \leq 0$", "samples", "memories", "origin"]
    stars = [c for c in ax.collections if isinstance(c, PathCollection)
             and c.get_label() == "memories"]
    np.testing.assert_allclose(stars[0].get_offsets(), det.memories_[1])
    # The shaded region is where G(v) <= 0 for the bank of class 1: check a grid of
    # points inside the axes, away from the boundary, against the formula.
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    gx, gy = np.meshgrid(np.linspace(x0, x1, 9)[1:-1], np.linspace(y0, y1, 9)[1:-1])
    probe = np.c_[gx.ravel(), gy.ravel()]
    G = (logsumexp(det.beta * probe @ det.memories_[1].T, axis=1) - det.log_gamma_) / det.beta
    confident = np.abs(G) > 0.3
    assert (G[confident] <= 0).any() and (G[confident] > 0).any()
    np.testing.assert_array_equal(_filled_mask(ax, probe)[confident], (G <= 0)[confident])
    assert "class 1" in ax.get_title()
    _save(ax, tmp_path / "energy.png")


def test_energy_landscape_draws_each_named_set_in_its_own_colour(reclag_2d):
    det, X, y = reclag_2d
    ax = plot_energy_landscape(det, {"class 0": X[y == 0], "class 1": X[y == 1]}, grid=30)
    scatters = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    np.testing.assert_array_equal(scatters["class 1"].get_offsets(), X[y == 1])
    colours = {tuple(scatters[name].get_facecolor()[0]) for name in ("class 0", "class 1")}
    assert len(colours) == 2
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[1:3] == ["class 0", "class 1"]
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        plot_energy_landscape(det, {"bad": np.zeros((3, 3))})


def test_energy_landscape_pools_every_bank_when_asked(reclag_2d):
    det, X, _ = reclag_2d
    ax = plot_energy_landscape(det, class_index=None, grid=30, extent=(-5, 5, -5, 5))
    stars = [c for c in ax.collections if c.get_label() == "memories"]
    assert len(stars[0].get_offsets()) == det.memory_mask_.sum()
    assert ax.get_xlim() == (-5, 5) and "pooled" in ax.get_title()


def test_energy_landscape_rejects_what_it_cannot_draw(reclag_2d, scored):
    det, _, _ = reclag_2d
    with pytest.raises(ValueError, match="class_index"):
        plot_energy_landscape(det, class_index=2)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        plot_energy_landscape(det, np.zeros((3, 3)))
    with pytest.raises(TypeError, match="RecLagDetector"):
        plot_energy_landscape(scored[0])  # fitted, but not a memory model
    wide = type(det)(n_memories=2, solver="em", energy="lse", metric="euclidean",
                     device="cpu").fit(np.eye(4).repeat(5, 0))
    with pytest.raises(ValueError, match="fitted on 4 features"):
        plot_energy_landscape(wide)


def test_energy_landscape_refuses_other_energies():
    """The plotted energy is the paper's (energy='lse'); other scores would not match it."""
    from sklearn_reclag import RecLagDetector
    from sklearn_reclag.plotting import plot_energy_landscape

    X = np.random.default_rng(0).normal(size=(60, 2))
    det = RecLagDetector(n_memories=3, solver="em", energy="full", device="cpu").fit(X)
    with pytest.raises(ValueError, match="energy='full'"):
        plot_energy_landscape(det)
