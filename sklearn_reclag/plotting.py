"""Plots of OOD detection: ROC curves, ID vs OOD score histograms, RecLag energy maps.

Needs the ``plot`` extra (``pip install sklearn-reclag[plot]``); matplotlib is imported only
when a function here is called. Every function draws on ``ax`` (a new figure when None),
returns the Axes and never calls ``plt.show()``, so the plots work headless: save them with
``ax.figure.savefig("roc.png")``.
"""

from collections.abc import Mapping
from numbers import Integral

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.utils.validation import check_is_fitted

from .metrics import _check_inputs, _real_array, fpr_at_tpr

__all__ = ["plot_energy_landscape", "plot_roc_curves", "plot_score_histograms"]

# Curve styles: the 10 colours, solid; then the same colours dashed, then dash-dotted.
# Up to 30 curves get a pair of their own, and two curves of one colour differ in the
# clearest way, solid against broken.
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan", "black")
_LINESTYLES = ("-", "--", "-.")


def _curve_style(index):
    """Colour and line style of the ``index``-th curve: distinct for up to 30 curves.

    Examples
    --------
    >>> from sklearn_reclag.plotting import _curve_style
    >>> _curve_style(0), _curve_style(1), _curve_style(10)
    (('tab:blue', '-'), ('tab:orange', '-'), ('tab:blue', '--'))
    """
    n = len(_COLOURS)
    return _COLOURS[index % n], _LINESTYLES[(index // n) % len(_LINESTYLES)]


def _axes(ax, figsize=None):
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "sklearn_reclag.plotting needs matplotlib; install it with "
            "`pip install sklearn-reclag[plot]`."
        ) from exc
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _legend_outside(ax, **kwargs):
    """A legend to the right of the axes, where it covers nothing; save the figure with
    ``bbox_inches="tight"`` to keep it whole."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     fontsize="small", **kwargs)


def _check_scores(scores, name):
    scores = _real_array(scores, name)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {scores.shape}.")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return scores


def _check_named(scores, name):
    if not isinstance(scores, Mapping) or not scores:
        raise TypeError(
            f"{name} must be a non-empty dict mapping a name to an array of scores, "
            f"e.g. {{'RecLag': det.score_samples(X)}}; got {type(scores).__name__}."
        )
    return {str(key): _check_scores(value, f"{name}[{key!r}]") for key, value in scores.items()}


def plot_roc_curves(scores, y_true, *, ax=None):
    """ROC curves of several detectors on the same rows, ID as the positive class.

    Each curve's legend entry carries its AUROC and FPR95; a dotted line marks the
    95 % TPR at which FPR95 is read. Every curve has its own pair of colour and line
    style (up to 30 curves), and the legend sits to the right of the axes, off the
    curves: save with ``ax.figure.savefig(path, bbox_inches="tight")``.

    Parameters
    ----------
    scores : dict of str -> array-like of shape (n_samples,)
        Scores of each detector (higher = more in-distribution), by name.
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_reclag.plotting import plot_roc_curves
    >>> y = np.r_[np.zeros(50), np.full(50, -1)]  # 50 ID rows, then 50 OOD rows
    >>> ax = plot_roc_curves({"perfect": (y + 1) * 2.0, "constant": np.zeros(100)}, y)
    >>> [line.get_label() for line in ax.get_lines()][:2]
    ['perfect (AUROC 1.00, FPR95 0.00)', 'constant (AUROC 0.50, FPR95 1.00)']
    """
    scores = _check_named(scores, "scores")
    ax = _axes(ax, figsize=(9, 5.5))
    for index, (name, score) in enumerate(scores.items()):
        is_id, score = _check_inputs(y_true, score)
        fpr, tpr, _ = roc_curve(is_id, score)
        auroc, fpr95 = roc_auc_score(is_id, score), fpr_at_tpr(is_id, score)
        colour, linestyle = _curve_style(index)
        ax.plot(fpr, tpr, color=colour, linestyle=linestyle, linewidth=1.6,
                label=f"{name} (AUROC {auroc:.2f}, FPR95 {fpr95:.2f})")
    ax.plot([0, 1], [0, 1], linestyle=(0, (1, 3)), color="grey", linewidth=1,
            label="chance")
    ax.axhline(0.95, linestyle=":", color="grey", linewidth=1, label="TPR 0.95")
    ax.set(
        xlabel="False positive rate (OOD rows accepted)",
        ylabel="True positive rate (ID rows accepted)",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="ROC, in-distribution positive",
    )
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return ax


def plot_score_histograms(scores_id, scores_ood, *, bins=50, threshold=None, ax=None):
    """Histograms of the scores of ID rows and of one or several OOD sets.

    All histograms share the same bins and are normalised to densities, so sets of
    different sizes compare directly.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of the in-distribution rows.
    scores_ood : array-like of shape (n_ood,) or dict of str -> array-like
        Scores of the OOD rows, or of several OOD sets by name.
    bins : int, default=50
        Number of bins over the range of all scores.
    threshold : float, default=None
        A threshold to mark with a vertical line, e.g. a detector's ``offset_``.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_reclag.plotting import plot_score_histograms
    >>> rng = np.random.default_rng(0)
    >>> ax = plot_score_histograms(rng.normal(2, 1, 100), {"noise": rng.normal(0, 1, 80)},
    ...                            threshold=0.5)
    >>> ax.get_legend_handles_labels()[1]
    ['noise', 'ID', 'threshold']
    """
    scores_id = _check_scores(scores_id, "scores_id")
    if isinstance(scores_ood, Mapping):
        scores_ood = _check_named(scores_ood, "scores_ood")
    else:
        scores_ood = {"OOD": _check_scores(scores_ood, "scores_ood")}
    if not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}.")
    ax = _axes(ax)
    edges = np.histogram_bin_edges(np.concatenate([scores_id, *scores_ood.values()]), bins)
    # ID as a black outline on top, so overlapping OOD sets never hide it.
    for name, score in scores_ood.items():
        ax.hist(score, bins=edges, density=True, histtype="stepfilled", alpha=0.4, label=name)
    ax.hist(scores_id, bins=edges, density=True, histtype="step", color="black",
            linewidth=1.5, label="ID")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", linestyle="--", label="threshold")
    ax.set(xlabel="score (higher = more in-distribution)", ylabel="density")
    ax.legend()
    return ax


def plot_energy_landscape(detector, X=None, *, class_index=0, grid=200, extent=None,
                          levels=20, ax=None):
    """The 2-D energy landscape of one memory bank of a fitted RecLag detector.

    The energy of the Rectified Lagrangian (Moriai et al., "Rectified Lagrangian for
    Out-of-Distribution Detection in Modern Hopfield Networks", AAAI 2025): with Xi the
    memories of the class, ``G(v) = (1/beta) (lse(beta Xi v) - log gamma_)`` and
    ``E(v) = |v|^2 / 2 - max(G(v), 0)``. The plot shows the contours of E, the memories
    (its minima for large beta) and, shaded, the OOD attractor region ``G(v) <= 0``:
    rows there are rejected by ``predict``, and the update rule
    ``v <- C(G(v)) Xi^T softmax(beta Xi v)`` (C the unit step) sends them to the origin.

    Parameters
    ----------
    detector : fitted RecLagDetector
        Fitted on 2-D features (``n_features_in_ == 2``).
    X : array-like of shape (n_samples, 2) or dict of str -> array-like, default=None
        Rows to draw on top, e.g. training or OOD features; a dict draws each named set
        in its own colour.
    class_index : int or None, default=0
        Which bank to draw: the index into ``detector.classes_``. None draws every
        memory as one bank, the one ``routing='pooled'`` scores against.
    grid : int, default=200
        Points per axis at which E is evaluated.
    extent : tuple (xmin, xmax, ymin, ymax), default=None
        Region to draw; by default the memories, ``X`` and the origin with a margin.
    levels : int, default=20
        Number of energy contour levels.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_reclag import RecLagDetector
    >>> from sklearn_reclag.plotting import plot_energy_landscape
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(3, 0.5, (40, 2)), rng.normal(-3, 0.5, (40, 2))]
    >>> det = RecLagDetector(n_memories=3, beta=2.0, solver="em", energy="lse",
    ...                      metric="euclidean", device="cpu", random_state=0).fit(X)
    >>> ax = plot_energy_landscape(det, X, grid=50)
    >>> ax.get_xlabel()
    '$v_1$'
    """
    memories, log_gamma, beta = _check_landscape(detector, class_index)
    if not isinstance(grid, Integral) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2; got {grid!r}.")
    point_sets = _check_point_sets(X)
    if extent is None:
        extent = _default_extent(memories, point_sets)
    xmin, xmax, ymin, ymax = extent
    ax = _axes(ax)

    xs, ys = np.linspace(xmin, xmax, grid), np.linspace(ymin, ymax, grid)
    xx, yy = np.meshgrid(xs, ys)
    V = np.column_stack([xx.ravel(), yy.ravel()])
    G = ((logsumexp(beta * V @ memories.T, axis=1) - log_gamma) / beta).reshape(xx.shape)
    energy = 0.5 * (xx**2 + yy**2) - np.maximum(G, 0.0)

    contours = ax.contour(xx, yy, energy, levels=levels, cmap="viridis", linewidths=0.8)
    # A colour bar in an axes of its own, as tall as the (equal-aspect) plot.
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    bar_axes = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.1)
    ax.figure.colorbar(contours, cax=bar_axes, label="energy E(v)")
    # Shade G(v) <= 0 through an indicator so an empty region draws nothing, warning-free.
    ax.contourf(xx, yy, (G <= 0).astype(float), levels=[0.5, 1.5], colors=["tab:red"],
                alpha=0.2)
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:red", alpha=0.2, label=r"OOD attractor region $G(v) \leq 0$")]
    for index, (name, points) in enumerate(point_sets.items()):
        colour = "grey" if name == "samples" else _curve_style(index)[0]
        handles.append(ax.scatter(points[:, 0], points[:, 1], s=8, color=colour, alpha=0.6,
                                  label=name))
    handles.append(ax.scatter(memories[:, 0], memories[:, 1], marker="*", s=150,
                              color="black", label="memories"))
    handles.append(ax.scatter([0], [0], marker="+", s=100, color="tab:red", label="origin"))
    if len(point_sets) > 1:
        # Below the axes: the colour bar takes the right-hand side.
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                  ncol=3, fontsize="small", borderaxespad=0.0)
    else:
        ax.legend(handles=handles, loc="best", fontsize="small")
    if class_index is None:
        bank = "all classes pooled"
    else:
        classes = getattr(detector, "classes_", None)
        bank = f"class {class_index if classes is None else classes[class_index]}"
    ax.set(
        xlim=(xmin, xmax),
        ylim=(ymin, ymax),
        xlabel="$v_1$",
        ylabel="$v_2$",
        title=f"RecLag energy, {bank}\n" rf"$\beta$={beta:g}, $\log\gamma$={log_gamma:.3g}",
    )
    ax.set_aspect("equal", adjustable="box")
    return ax


def _check_landscape(detector, class_index):
    """Memories (M, 2) of one bank, ``log gamma_`` and beta of a fitted RecLag detector."""
    if not hasattr(type(detector), "fit"):
        raise TypeError(f"detector must be a fitted RecLagDetector; got {type(detector)}.")
    check_is_fitted(detector)
    if not (hasattr(detector, "memories_") and hasattr(detector, "log_gamma_")):
        raise TypeError(
            "plot_energy_landscape needs a fitted RecLagDetector (memories_, log_gamma_); "
            f"got {type(detector).__name__}."
        )
    if getattr(detector, "energy", "lse") != "lse":
        raise ValueError(
            "plot_energy_landscape draws the paper's energy |v|^2/2 - max(G(v), 0), whose "
            f"G is the energy='lse' score; this detector has energy={detector.energy!r}."
        )
    banks = np.asarray(detector.memories_, dtype=np.float64)
    if banks.shape[-1] != 2:
        raise ValueError(
            f"The energy landscape is drawn for 2-D features; this detector was fitted on "
            f"{banks.shape[-1]} features (reduce them first, e.g. with PCA(2) in a Pipeline)."
        )
    mask = getattr(detector, "memory_mask_", None)
    mask = np.ones(banks.shape[:2], bool) if mask is None else np.asarray(mask, dtype=bool)
    if class_index is None:
        return banks[mask], float(detector.log_gamma_), float(detector.beta_)
    if not isinstance(class_index, Integral) or not 0 <= class_index < banks.shape[0]:
        raise ValueError(
            f"class_index must be None or an integer in [0, {banks.shape[0] - 1}]; "
            f"got {class_index!r}."
        )
    # Classes with few rows have padding slots: keep the real memories only.
    memories = banks[class_index][mask[class_index]]
    return memories, float(detector.log_gamma_), float(detector.beta_)


def _check_point_sets(X):
    """``{name: (n, 2) array}`` of the rows to draw: 'samples' for one array."""
    if X is None:
        return {}
    named = dict(X) if isinstance(X, Mapping) else {"samples": X}
    point_sets = {}
    for name, points in named.items():
        points = _real_array(points, f"X[{name!r}]" if isinstance(X, Mapping) else "X")
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"X must have shape (n_samples, 2); got {points.shape}.")
        point_sets[str(name)] = points
    return point_sets


def _default_extent(memories, point_sets):
    points = np.vstack([memories, *point_sets.values()])
    points = np.vstack([points, np.zeros((1, 2))])  # the origin, where OOD rows go
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.25 * np.maximum(high - low, 1.0)
    low, high = low - margin, high + margin
    return low[0], high[0], low[1], high[1]
