"""The detection-quality benchmark: every method on one data set, several seeds, one table.

Used by ``python -m sklearn_reclag demo`` / ``benchmark`` and by ``benchmarks/quality.py``.
Hyperparameters are chosen by GridSearchCV with the FPR95 scorer on the validation OOD set
(``X_val_ood``), which is disjoint from every OOD test set; the test sets are only scored.
"""

from dataclasses import dataclass, field
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from ._labels import OOD_LABEL
from .base import BaseOODDetector
from .metrics import fpr95_scorer, fpr_at_tpr, ood_aupr, ood_auroc
from .model_selection import make_ood_dataset

METRICS = {"FPR95": fpr_at_tpr, "AUROC": ood_auroc, "AUPR-In": ood_aupr}
"""Metric name -> function(y_true, scores); FPR95 lower is better, the others higher."""


KINDS = {
    "paper": "a published method as published (its score and its defaults; beta searched)",
    "baseline": "a feature-space baseline every OOD paper compares against",
    "extension": "this suite's extensions of the Hopfield methods (energy, metric, solver)",
    "default": "the estimator's default parameters, nothing searched",
    "peer": "an outlier detector from outside the suite (PyOD, scikit-learn)",
}
"""The kinds of table rows, as the tables' captions explain them."""


@dataclass
class Method:
    """One row of the table: an estimator and the grid searched on validation OOD data.

    ``param_grid`` is a GridSearchCV grid, or a callable ``(estimator, X, y) -> grid`` for
    grids that depend on the training rows (the scale of beta, see
    :func:`~sklearn_reclag.model_selection.default_param_grid`).
    """

    name: str
    estimator: BaseEstimator
    param_grid: object = field(default_factory=dict)
    uses_head: bool = False
    kind: str = "extension"

    def grid_for(self, X, y):
        """The grid to search on the training rows (X, y)."""
        if callable(self.param_grid):
            return self.param_grid(self.estimator, X, y)
        return self.param_grid

    def describe(self):
        """The row's configuration: the estimator (non-default parameters) and its grid."""
        grid = "data-dependent beta grid (multiples of beta='auto' per metric)" if callable(
            self.param_grid) else (self.param_grid or "nothing searched")
        return f"`{_short_repr(self.estimator)}`; searched: {grid}"


def _short_repr(estimator):
    """The estimator's repr on one line, without the benchmark's device setting."""
    text = " ".join(repr(estimator).split())
    return text.replace("device='cpu', ", "").replace(", device='cpu'", "").replace(
        "device='cpu'", "")


PRESETS = ("all", "paper", "unlabelled")
"""Method sets of the command line's ``--preset``: every row; the papers' methods only;
the rows that need neither labels nor a head (novelty detection)."""


def default_methods(*, quick=False, device="auto", random_state=0, preset="all"):
    """The suite's methods with the grids the benchmark searches.

    Parameters
    ----------
    quick : bool, default=False
        Smaller grids and fewer training epochs, for the demo and CI.
    device : str, default='auto'
    random_state : int, default=0
        Seeds the stochastic methods (RecLag, the dense memory).
    preset : {'all', 'paper', 'unlabelled'}, default='all'
        Which rows (see :data:`PRESETS`).

    Returns
    -------
    methods : list of Method
    """
    from . import (
        DensePolynomialHopfield,
        EnergyDetector,
        HopfieldEnergyDetector,
        KNNDetector,
        MahalanobisDetector,
        MSPDetector,
        ReActDetector,
        RecLagDetector,
        ViMDetector,
    )
    from .model_selection import default_param_grid

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}.")
    rs = random_state
    epochs = 10 if quick else 50
    betas = [0.1, 1.0] if quick else [0.01, 0.1, 0.5, 1.0]
    reclag_betas = [0.5, 2.0] if quick else [0.1, 0.5, 2.0, 5.0]
    factors = (1.0, 10.0) if quick else (0.3, 1.0, 3.0, 10.0, 30.0)

    def bank_grid(estimator, X, y):
        return default_param_grid(estimator, X, y, beta_factors=factors)

    def logit_grid(estimator):
        return {k: v[:1] for k, v in estimator.search_space.items()} if quick else (
            estimator.search_space)

    paper = [
        Method("MSP", MSPDetector(device=device), uses_head=True, kind="paper"),
        Method("Energy", EnergyDetector(device=device),
               logit_grid(EnergyDetector), uses_head=True, kind="paper"),
        Method("ReAct", ReActDetector(device=device),
               logit_grid(ReActDetector), uses_head=True, kind="paper"),
        Method("HE", HopfieldEnergyDetector(**PAPER_PARAMS["HE"], device=device),
               {"beta": betas}, uses_head=True, kind="paper"),
        Method("SHE", HopfieldEnergyDetector(**PAPER_PARAMS["SHE"], device=device),
               uses_head=True, kind="paper"),
        Method("RecLag", RecLagDetector(**{**PAPER_PARAMS["RecLag"], "max_epochs": epochs},
                                        device=device, random_state=rs),
               {"beta": reclag_betas}, uses_head=True, kind="paper"),
    ]
    baselines = [
        Method("KNN", KNNDetector(device=device),
               {"n_neighbors": [1, 10]} if quick else KNNDetector.search_space, kind="baseline"),
        Method("Mahalanobis", MahalanobisDetector(device=device),
               MahalanobisDetector.search_space, kind="baseline"),
        Method("ViM", ViMDetector(device=device), ViMDetector.search_space, uses_head=True,
               kind="baseline"),
    ]
    density_he = HopfieldEnergyDetector(energy="density", routing="max", device=device)
    density_em = RecLagDetector(solver="em", energy="density", routing="max",
                                max_epochs=epochs, device=device, random_state=rs)
    extensions = [
        Method("HE (density)", density_he, bank_grid, uses_head=True),
        Method("RecLag (em, density)", density_em, bank_grid, uses_head=True),
    ]
    defaults = [
        Method("HE (default)", HopfieldEnergyDetector(device=device), uses_head=True,
               kind="default"),
        Method("RecLag (default)", RecLagDetector(device=device, random_state=rs),
               uses_head=True, kind="default"),
        # What the default's learning buys: the same detector on its initial memories.
        Method("RecLag (default, untrained)",
               RecLagDetector(max_epochs=0, device=device, random_state=rs),
               uses_head=True, kind="default"),
    ]
    dense = make_pipeline(
        MinMaxScaler(feature_range=(-1, 1), clip=True),
        DensePolynomialHopfield(max_epochs=30 if quick else 100, device=device, random_state=rs),
    )
    dense_row = [Method("Dense (energy)", dense,
                        {"densepolynomialhopfield__n": [2, 3] if quick else [2, 3, 6, 10]})]
    if preset == "paper":
        return paper
    if preset == "unlabelled":
        return [m for m in defaults + extensions + baselines if m.name != "ViM"]
    return paper + baselines + extensions + defaults + dense_row


PAPER_PARAMS = {
    "HE": dict(patterns="all", beta=0.01, energy="lse", routing="predicted",
               metric="euclidean"),
    "SHE": dict(patterns="mean", energy="lse", routing="predicted", metric="euclidean"),
    "RecLag": dict(n_memories=10, beta=5.0, gamma="auto", solver="sae", objective="paper",
                   n_draws=5, max_epochs=50, tol=None, learning_batch_size=50, lr=1e-3,
                   init="random", init_norm=10.0, energy="lse", routing="predicted",
                   metric="euclidean"),
}
"""The papers' exact configurations (Zhang et al., ICLR 2023: HE, SHE; Moriai et al.,
AAAI 2025: RecLag) as constructor parameters; README's "Reproducing the papers"."""


class _PeerScore(BaseEstimator):
    """Adapter giving a peer outlier detector the suite's ``score_samples`` convention.

    PyOD's ``decision_function`` is higher for outliers: it is negated. scikit-learn's
    GaussianMixture ``score_samples`` (the log-density) is already higher for inliers.

    Parameters
    ----------
    estimator : estimator
        A PyOD detector or a scikit-learn density model.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y=None):
        self.estimator_ = clone(self.estimator).fit(X)
        return self

    def score_samples(self, X):
        if hasattr(self.estimator_, "decision_scores_"):  # a PyOD detector
            return -self.estimator_.decision_function(X)
        return self.estimator_.score_samples(X)


def peer_methods(*, random_state=0, quick=False):
    """PyOD's KNN, LOF, IsolationForest and ECOD, and a GaussianMixture log-density.

    The neighbour counts of KNN and LOF and the GaussianMixture's components are searched
    on the validation OOD set like the suite's own hyperparameters: every comparison is
    against the peers at their best. Needs the optional ``pyod`` package (``pip install
    sklearn-reclag[peers]``).
    """
    try:
        from pyod.models.ecod import ECOD
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
        from pyod.models.lof import LOF
    except ImportError as exc:
        raise ImportError(
            "The peer detectors need PyOD: pip install 'sklearn-reclag[peers]'."
        ) from exc
    def grid(name, values):
        return {f"estimator__{name}": values[:1] if quick else values}

    return [
        Method("PyOD KNN", _PeerScore(KNN()), grid("n_neighbors", [5, 1, 10, 20]),
               kind="peer"),
        Method("PyOD LOF", _PeerScore(LOF()), grid("n_neighbors", [20, 5, 10, 35]),
               kind="peer"),
        Method("PyOD IForest", _PeerScore(IForest(random_state=random_state)), kind="peer"),
        Method("PyOD ECOD", _PeerScore(ECOD()), kind="peer"),
        Method("GaussianMixture", _PeerScore(GaussianMixture(
            n_components=5, covariance_type="diag", random_state=random_state)),
            grid("n_components", [5, 1, 2, 10]), kind="peer"),
    ]


def _with_head(estimator, head):
    """Give the head to a detector (directly or as the last step of a pipeline)."""
    if head is None:
        return clone(estimator)
    return clone(estimator).set_params(head=head)


# Folds of the search: every class of y_train needs this many rows.
N_SPLITS = 3


def check_benchmark_data(data):
    """Raise a ValueError saying what keeps ``data`` from the benchmark, before any fit.

    The benchmark chooses hyperparameters by a 3-fold search on the training rows and
    ``X_val_ood``: it needs the validation OOD set (never a test set in its place), at
    least 3 rows of it and of every class (2 in each training fold: the fewest a memory
    bank takes), 2 classes unless a head is given, and a head whose outputs match the
    classes of ``y_train``.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        As :func:`~sklearn_reclag.datasets.load_features_npz` returns.
    """
    if data.X_val_ood is None:
        raise ValueError(
            "there is no X_val_ood: the benchmark chooses every method's hyperparameters "
            "on a validation OOD set, never on the test sets. Add X_val_ood (OOD rows "
            "disjoint from every ood_<name> test set) to the features file."
        )
    if len(data.X_val_ood) < N_SPLITS:
        raise ValueError(
            f"X_val_ood has {len(data.X_val_ood)} rows; the {N_SPLITS}-fold search needs at "
            f"least {N_SPLITS} (one OOD row in each test fold)."
        )
    labels, counts = np.unique(data.y_train, return_counts=True)
    if counts.min() < N_SPLITS:
        few = labels[counts < N_SPLITS]
        raise ValueError(
            f"class {few[0].item()!r} of y_train has {counts.min()} row(s) "
            f"({len(few)} class(es) with fewer than {N_SPLITS}); the {N_SPLITS}-fold search "
            f"needs at least {N_SPLITS} rows per class."
        )
    if data.head is None:
        if len(labels) < 2:
            raise ValueError(
                "y_train holds a single class and there is no head: the logit-based "
                "methods need 2 classes or a head (head_coef, head_intercept)."
            )
        return
    n_outputs = len(data.head[1])
    matches = len(labels) == n_outputs or (
        labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < n_outputs)
    if not matches:
        raise ValueError(
            f"the head has {n_outputs} outputs but y_train holds {len(labels)} classes "
            f"{labels[:5].tolist()}; the labels must be 0..{n_outputs - 1}, one per output."
        )


def fit_method(method, data, *, random_state=0, param_grid=None):
    """Fit one method on ``data.X_train``, searching its grid on the validation OOD set.

    ``param_grid`` is the grid to search when the caller has it already, else
    ``method.grid_for(data.X_train, data.y_train)``.

    The search is a 3-fold stratified GridSearchCV with the FPR95 scorer on the training
    rows and ``data.X_val_ood`` (labelled OOD_LABEL); a fold whose scoring fails stops it
    (``error_score='raise'``) rather than leaving a NaN that would keep the first value.

    Returns
    -------
    estimator : fitted estimator
    best_params : dict
        The chosen hyperparameters (empty when there is nothing to search).

    Raises
    ------
    ValueError
        If the method has a grid and ``data.X_val_ood`` is None: hyperparameters are
        never chosen on a test set, nor silently left at their defaults.
    """
    estimator = _with_head(method.estimator, data.head) if method.uses_head else clone(
        method.estimator)
    if param_grid is None:
        param_grid = method.grid_for(data.X_train, data.y_train)
    if not param_grid:
        return estimator.fit(data.X_train, data.y_train), {}
    if data.X_val_ood is None:
        raise ValueError(
            f"{method.name} has hyperparameters to choose ({param_grid}) but the data has "
            "no X_val_ood to choose them on."
        )
    # OOD rows labelled OOD_LABEL: -1, or '-1' when the class labels are strings;
    # unlabelled data (novelty detection) is one ID class, 0, for the splitter and scorer.
    y_id = np.zeros(len(data.X_train), dtype=int) if data.y_train is None else data.y_train
    X, y = make_ood_dataset(data.X_train, y_id, data.X_val_ood, shuffle=False)
    cv = StratifiedKFold(n_splits=N_SPLITS, shuffle=True, random_state=random_state)
    search = GridSearchCV(estimator, param_grid, scoring=fpr95_scorer, cv=cv,
                          refit=False, error_score="raise")
    search.fit(X, y)
    # Refit on the ID rows alone: in a Pipeline only the detector drops OOD_LABEL rows,
    # so GridSearchCV's refit would let a scaler in front of it see the validation OOD rows.
    best = clone(estimator).set_params(**search.best_params_)
    return best.fit(data.X_train, data.y_train), search.best_params_


def evaluate(estimator, data):
    """Metrics of a fitted estimator on every OOD test set against the ID test rows.

    Returns
    -------
    results : dict
        ``{ood_set: {metric: value}}``, the raw scores under ``"scores"``: ``{"ID": ...,
        ood_set: ...}``, and, for the suite's detectors, the fraction of ID test rows that
        ``predict`` accepts at the fitted threshold under ``"acceptance"`` (1 -
        contamination if the threshold holds on new rows).
    """
    scores = {"ID": estimator.score_samples(data.X_test)}
    results = {}
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if isinstance(final, BaseOODDetector):
        results["acceptance"] = float(np.mean(estimator.predict(data.X_test) == 1))
    for name, X_ood in data.ood_test.items():
        scores[name] = estimator.score_samples(X_ood)
        y_true = np.r_[np.zeros(len(data.X_test), dtype=int), np.full(len(X_ood), OOD_LABEL)]
        y_score = np.r_[scores["ID"], scores[name]]
        results[name] = {metric: fn(y_true, y_score) for metric, fn in METRICS.items()}
    results["scores"] = scores
    return results


def run_quality_benchmark(load_data, seeds, methods_for_seed, *, progress=None):
    """Fit and evaluate every method on the data of every seed.

    Parameters
    ----------
    load_data : callable seed -> Bunch
        Data with X_train, y_train, X_test, ood_test, X_val_ood and head.
    seeds : sequence of int
    methods_for_seed : callable seed -> list of Method
    progress : callable or None
        Called with a short text before each fit (e.g. a tqdm bar's ``set_description``).

    Returns
    -------
    runs : list of dict
        One per (seed, method): ``seed``, ``method``, ``best_params``, ``results``
        (as :func:`evaluate` returns).
    """
    runs = []
    for seed in seeds:
        data = load_data(seed)
        for method in methods_for_seed(seed):
            if progress is not None:
                progress(f"seed {seed}: {method.name}")
            grid = method.grid_for(data.X_train, data.y_train)
            estimator, best_params = fit_method(method, data, random_state=seed,
                                                param_grid=grid)
            runs.append(dict(seed=seed, method=method.name, best_params=best_params,
                             param_grid=grid, at_grid_edge=at_grid_edge(best_params, grid),
                             results=evaluate(estimator, data)))
    return runs


def at_grid_edge(best_params, param_grid):
    """Names of the chosen hyperparameters at the smallest or largest value of their grid.

    Only numeric grids of 3 values or more count: the best value may then lie beyond the
    grid, and the grid should be widened. (With 2 values every choice is an end.) For a
    list of grids, the one that holds the chosen values is read.

    Examples
    --------
    >>> at_grid_edge({"beta": 5.0, "n": 3}, {"beta": [0.1, 0.5, 5.0], "n": [2, 3]})
    ['beta']
    """
    if isinstance(param_grid, (list, tuple)):
        holding = [grid for grid in param_grid
                   if all(value in grid.get(name, ()) for name, value in best_params.items())]
        param_grid = holding[0] if holding else {}
    edges = []
    for name, value in best_params.items():
        grid = list(param_grid.get(name, []))
        numeric = all(isinstance(v, Real) and not isinstance(v, bool) for v in grid)
        if numeric and len(grid) >= 3 and value in (min(grid), max(grid)):
            edges.append(name)
    return edges


# Entries of evaluate's results that are not OOD test sets.
_NOT_OOD_SETS = ("scores", "acceptance")


def summarize_acceptance(runs):
    """Mean and std over seeds of the ID test rows' acceptance, for the rows that have
    one: ``{method: (mean, std)}``."""
    accepted = {}
    for run in runs:
        if "acceptance" in run["results"]:
            accepted.setdefault(run["method"], []).append(run["results"]["acceptance"])
    return {method: (float(np.mean(v)), float(np.std(v))) for method, v in accepted.items()}


def summarize(runs):
    """Mean and standard deviation over seeds of every (method, OOD set, metric).

    Returns
    -------
    summary : dict
        ``{method: {ood_set or "average": {metric: (mean, std)}}}``; "average" is the
        mean over OOD sets within each seed, then over seeds. ``std`` is None for a
        single seed (there is no spread to measure).
    """
    summary = {}
    methods = list(dict.fromkeys(run["method"] for run in runs))
    for method in methods:
        per_seed = [run["results"] for run in runs if run["method"] == method]
        sets = [name for name in per_seed[0] if name not in _NOT_OOD_SETS]
        table = {}
        for name in sets + ["average"]:
            table[name] = {}
            for metric in METRICS:
                if name == "average":
                    values = [np.mean([r[s][metric] for s in sets]) for r in per_seed]
                else:
                    values = [r[name][metric] for r in per_seed]
                spread = float(np.std(values)) if len(values) > 1 else None
                table[name][metric] = (float(np.mean(values)), spread)
        summary[method] = table
    return summary


def format_markdown(summary, metric, *, percent=True):
    """A markdown table of one metric: methods as rows, OOD sets and their average as columns.

    Cells are ``mean ± std`` over seeds (in % when ``percent``), the mean alone for one
    seed; the best mean of each column is in bold (lowest for FPR95, highest otherwise).
    """
    methods = list(summary)
    columns = list(next(iter(summary.values())))
    scale = 100.0 if percent else 1.0
    lower_is_better = metric == "FPR95"
    header = f"| {metric}{' (%)' if percent else ''} | " + " | ".join(columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    best = {}
    for column in columns:
        means = [summary[m][column][metric][0] for m in methods]
        best[column] = min(means) if lower_is_better else max(means)
    for method in methods:
        cells = []
        for column in columns:
            mean, std = summary[method][column][metric]
            cell = f"{scale * mean:.2f}" + ("" if std is None else f" ± {scale * std:.2f}")
            cells.append(f"**{cell}**" if mean == best[column] else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_caption(methods):
    """What each row of the tables is: its kind (a paper's method, a baseline, an
    extension, a default, a peer) and its exact configuration, as markdown."""
    lines = ["Rows, by kind:", ""]
    for kind, meaning in KINDS.items():
        rows = [m for m in methods if m.kind == kind]
        if rows:
            lines.append(f"- *{kind}* ({meaning}):")
            lines.extend(f"  - **{m.name}**: {m.describe()}" for m in rows)
    return "\n".join(lines)


HOPFIELD_PREFIXES = ("HE", "SHE", "RecLag")
"""Rows of the Hopfield detectors (HE, SHE, RecLag), by the start of their names."""


def compare_families(summary, *, exclude=("Dense (energy)",)):
    """The best Hopfield row and the best other row by mean FPR95 over the OOD sets.

    Returns
    -------
    comparison : dict
        ``hopfield`` and ``other``: ``(name, mean FPR95)`` of the best row of each
        family; ``reclag``: the best RecLag row's; ``ratio``: hopfield / other;
        ``reclag_below_all``: whether the best RecLag row is below every other row.
    """
    fpr = {name: table["average"]["FPR95"][0] for name, table in summary.items()
           if name not in exclude}
    hopfield = {n: v for n, v in fpr.items() if n.startswith(HOPFIELD_PREFIXES)}
    other = {n: v for n, v in fpr.items() if not n.startswith(HOPFIELD_PREFIXES)}
    reclag = {n: v for n, v in hopfield.items() if n.startswith("RecLag")}
    best = {family: min(rows.items(), key=lambda item: item[1]) if rows else None
            for family, rows in (("hopfield", hopfield), ("other", other),
                                 ("reclag", reclag))}
    ratio = (best["hopfield"][1] / best["other"][1]
             if best["hopfield"] and best["other"] and best["other"][1] > 0 else None)
    below = bool(best["reclag"] and other and best["reclag"][1] < min(other.values()))
    return {**best, "ratio": ratio, "reclag_below_all": below}
