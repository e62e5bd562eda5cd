"""The detection-quality benchmark: every method on one data set, several seeds, one table.

Used by ``python -m sklearn_reclag demo`` / ``benchmark`` and by ``benchmarks/quality.py``.
Hyperparameters are chosen without OOD data, by the criterion of
:class:`~sklearn_reclag.AutoOODDetector`: FPR95 on proxy OOD tasks built from the training
rows (held-out classes, or k-means clusters without labels). ``selection='validation'``
chooses them on a validation OOD set (``X_val_ood``) instead, disjoint from every OOD test
set. The test sets are only scored.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from ._labels import OOD_LABEL
from .base import ThresholdedScoresMixin
from .metrics import fpr95_scorer, fpr_at_tpr, ood_aupr, ood_auroc
from .model_selection import _at_grid_edge, make_ood_dataset, search_diagnostics

METRICS = {"FPR95": fpr_at_tpr, "AUROC": ood_auroc, "AUPR-In": ood_aupr}
"""Metric name -> function(y_true, scores); FPR95 lower is better, the others higher."""


KINDS = {
    "paper": "a published method as published (its score and its defaults; beta searched)",
    "baseline": "a feature-space baseline every OOD paper compares against",
    "extension": "this suite's extensions of the Hopfield methods (energy, metric, solver)",
    "default": "the estimator's default parameters, nothing searched",
    "leaderboard": "a post-hoc detector of OpenOOD's leaderboard (logits or class "
                   "statistics; the official defaults, searched as published)",
    "outliers": "fitted with auxiliary outliers as well, which no other row sees: "
                "feature-shuffled training rows (each feature drawn from its training "
                "values independently), disjoint from every test OOD set",
    "peer": "an outlier detector from outside the suite (PyOD, scikit-learn)",
    "auto": "AutoOODDetector: a detector and its hyperparameters chosen from the training "
            "rows alone (held-out classes, or clusters without labels)",
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
    # A callable (X_train, random_state) -> auxiliary outlier rows passed to fit as
    # ``outliers=`` (HopfieldBoostingDetector); such a row has nothing to search.
    outliers: object = None

    def grid_for(self, X, y):
        """The grid to search on the training rows (X, y)."""
        if callable(self.param_grid):
            return self.param_grid(self.estimator, X, y)
        return self.param_grid

    def describe(self, selection="proxy"):
        """The row's configuration: the estimator (non-default parameters) and the values
        its search tries, as :func:`fit_method` does: with ``selection='proxy'`` the row's
        own setting first, then the grid's other values (a quick grid need not hold the
        paper's beta, which is tried all the same; a grid of one other value is a choice
        of two); with 'validation' the grid alone."""
        if callable(self.param_grid):
            grid = "data-dependent beta grid (multiples of beta='auto' per metric)"
        elif isinstance(self.param_grid, (list, tuple)) or selection != "proxy":
            grid = self.param_grid
        else:
            own = self.estimator.get_params()
            tried = {name: [own[name]] + [v for v in values if v != own[name]]
                     for name, values in self.param_grid.items()}
            grid = {name: values for name, values in tried.items() if len(values) > 1}
        return f"`{_short_repr(self.estimator)}`; searched: {grid or 'nothing searched'}"


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
        ASHDetector,
        AutoOODDetector,
        DensePolynomialHopfield,
        EnergyDetector,
        FDBDDetector,
        GENDetector,
        HopfieldBoostingDetector,
        HopfieldEnergyDetector,
        KNNDetector,
        LOFDetector,
        MahalanobisDetector,
        MSPDetector,
        NCIDetector,
        NNGuideDetector,
        ReActDetector,
        RecLagDetector,
        RMDSDetector,
        SCALEDetector,
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
        Method("LOF", LOFDetector(device=device, random_state=rs),
               {"n_neighbors": [10, 35]} if quick else LOFDetector.search_space,
               kind="baseline"),
    ]
    leaderboard = [
        Method(name, cls(device=device), logit_grid(cls), uses_head=cls is not RMDSDetector,
               kind="leaderboard")
        for name, cls in (("SCALE", SCALEDetector), ("ASH", ASHDetector),
                          ("GEN", GENDetector), ("fDBD", FDBDDetector), ("NCI", NCIDetector),
                          ("RMDS", RMDSDetector))
    ] + [Method("NNGuide", NNGuideDetector(device=device, random_state=rs),
                logit_grid(NNGuideDetector), uses_head=True, kind="leaderboard")]
    density_he = HopfieldEnergyDetector(energy="density", routing="max", device=device)
    # EM iterations cost milliseconds, and 22-46 of them converge on the digits features:
    # the quick runs' 10 stopped every fit short, with a ConvergenceWarning each.
    density_em = RecLagDetector(solver="em", energy="density", routing="max",
                                max_epochs=100, device=device, random_state=rs)
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
    # Hopfield Boosting's test-time score with the official beta; its outliers are
    # feature-shuffled training rows, as many as the training rows (the paper's auxiliary
    # data set is an image corpus the features-only benchmark does not have).
    boosting = [Method("Hopfield Boosting", HopfieldBoostingDetector(device=device),
                       kind="outliers", outliers=_shuffled_features)]
    dense = make_pipeline(
        MinMaxScaler(feature_range=(-1, 1), clip=True),
        DensePolynomialHopfield(max_epochs=30 if quick else 100, device=device, random_state=rs),
    )
    dense_row = [Method("Dense (energy)", dense,
                        {"densepolynomialhopfield__n": [2, 3] if quick else [2, 3, 6, 10]})]
    n_splits = 3 if quick else 5
    auto = [Method("Auto", AutoOODDetector(device=device, random_state=rs, n_splits=n_splits),
                   uses_head=True, kind="auto"),
            # The same with a far-OOD proxy too: which criterion to default to is measured.
            Method("Auto (+shuffled)", AutoOODDetector(
                proxy="groups+shuffled", device=device, random_state=rs, n_splits=n_splits),
                uses_head=True, kind="auto")]
    if preset == "paper":
        return paper
    if preset == "unlabelled":
        return [m for m in defaults + extensions + baselines + auto if m.name != "ViM"]
    return (paper + baselines + leaderboard + boosting + extensions + defaults + dense_row
            + auto)


def _shuffled_features(X, random_state):
    """Auxiliary outliers for Hopfield Boosting: as many rows as X, each feature drawn from
    that feature's training values independently (the marginals without their joint
    structure), seeded."""
    from .auto import _feature_shuffled

    return _feature_shuffled(np.asarray(X), len(X), np.random.default_rng(random_state))


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
    like the suite's own hyperparameters (:func:`fit_method`): every comparison is against
    the peers at their best. Needs the optional ``pyod`` package (``pip install
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


SELECTIONS = ("proxy", "validation")
"""How the benchmark chooses hyperparameters: 'proxy', the criterion of
:class:`~sklearn_reclag.AutoOODDetector` on the training rows alone; 'validation', a
GridSearchCV on the validation OOD set ``X_val_ood``."""


def check_benchmark_data(data, selection="proxy"):
    """Raise a ValueError saying what keeps ``data`` from the benchmark, before any fit.

    With ``selection='validation'`` the benchmark chooses hyperparameters by a 3-fold
    search on the training rows and ``X_val_ood``: it needs the validation OOD set (never
    a test set in its place), at least 3 rows of it. Either way it needs 3 rows of every
    class (2 in each training fold: the fewest a memory bank takes), 2 classes unless a
    head is given, and a head whose outputs match the classes of ``y_train``.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        As :func:`~sklearn_reclag.datasets.load_features_npz` returns.
    selection : {'proxy', 'validation'}, default='proxy'
        See :data:`SELECTIONS`.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}; got {selection!r}.")
    if selection == "validation" and data.X_val_ood is None:
        raise ValueError(
            "there is no X_val_ood: selection='validation' chooses every method's "
            "hyperparameters on a validation OOD set, never on the test sets. Add X_val_ood "
            "(OOD rows disjoint from every ood_<name> test set) to the features file, or "
            "choose them from the training rows alone (selection='proxy')."
        )
    if selection == "validation" and len(data.X_val_ood) < N_SPLITS:
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


def fit_method(method, data, *, random_state=0, param_grid=None, selection="proxy"):
    """Fit one method on ``data.X_train``, choosing its hyperparameters without the test sets.

    ``param_grid`` is the grid to search when the caller has it already, else
    ``method.grid_for(data.X_train, data.y_train)``.

    ``selection='proxy'`` (the default) scores every point of the grid by the criterion of
    :class:`~sklearn_reclag.AutoOODDetector` (FPR95 on held-out classes of the training
    rows, or held-out k-means clusters without labels; a given head loses the held-out
    classes in each fold; held-out k-means clusters without two classes) and refits the
    best on all training rows.
    ``selection='validation'`` is a 3-fold stratified GridSearchCV with the FPR95 scorer
    on the training rows and ``data.X_val_ood`` (labelled OOD_LABEL); a fold whose scoring
    fails stops it (``error_score='raise'``) rather than leaving a NaN that would keep the
    first value.

    Returns
    -------
    estimator : fitted estimator
    best_params : dict
        The chosen hyperparameters (empty when there is nothing to search).

    Raises
    ------
    ValueError
        If ``selection='validation'``, the method has a grid and ``data.X_val_ood`` is
        None: hyperparameters are never chosen on a test set, nor silently left at their
        defaults.
    """
    from .auto import AutoOODDetector

    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}; got {selection!r}.")
    head = data.head if method.uses_head else None
    estimator = _with_head(method.estimator, head)
    if param_grid is None:
        param_grid = method.grid_for(data.X_train, data.y_train)
    if method.outliers is not None:
        if param_grid:
            raise ValueError(f"{method.name} fits with outliers: nothing can be searched "
                             "(the proxy tasks do not pass them); give it no grid.")
        outliers = method.outliers(data.X_train, random_state)
        return estimator.fit(data.X_train, data.y_train, outliers=outliers), {}
    if not param_grid:
        return estimator.fit(data.X_train, data.y_train), {}
    if selection == "proxy":
        # The row's own setting first, then the grid's other points: AutoOODDetector's
        # choice among them (any estimator with score_samples: a peer or a classifier
        # pipeline too), refitted here. As AutoOODDetector does, a point replaces the
        # row's setting only where it is better by more than one standard error of the
        # proxy's folds, and without two classes (no held-out classes; k-means clusters
        # chose worse than the defaults) the row's setting is kept: a search never
        # trades a default for a point the proxy cannot tell apart from it.
        grids = param_grid if isinstance(param_grid, (list, tuple)) else [param_grid]
        names = dict.fromkeys(name for grid in grids for name in grid)
        own = {name: method.estimator.get_params()[name] for name in names}
        points = [own] + [p for p in ParameterGrid(param_grid) if p != own]
        candidates = [clone(method.estimator).set_params(**p) for p in points]
        auto = AutoOODDetector(candidates, head=head, rule="one_standard_error",
                               random_state=random_state)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "AutoOODDetector: y has fewer than two")
            auto._select(np.asarray(data.X_train), data.y_train)
        best = points[auto.best_index_]
        return clone(estimator).set_params(**best).fit(data.X_train, data.y_train), best
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
    search_diagnostics(search)  # a tie or a grid edge, said in a warning
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
    if isinstance(final, ThresholdedScoresMixin):  # the suite's detectors, AutoOODDetector
        results["acceptance"] = float(np.mean(estimator.predict(data.X_test) == 1))
    for name, X_ood in data.ood_test.items():
        scores[name] = estimator.score_samples(X_ood)
        y_true = np.r_[np.zeros(len(data.X_test), dtype=int), np.full(len(X_ood), OOD_LABEL)]
        y_score = np.r_[scores["ID"], scores[name]]
        results[name] = {metric: fn(y_true, y_score) for metric, fn in METRICS.items()}
    results["scores"] = scores
    return results


def run_quality_benchmark(load_data, seeds, methods_for_seed, *, progress=None,
                          selection="proxy"):
    """Fit and evaluate every method on the data of every seed.

    Parameters
    ----------
    load_data : callable seed -> Bunch
        Data with X_train, y_train, X_test, ood_test, X_val_ood and head.
    seeds : sequence of int
    methods_for_seed : callable seed -> list of Method
    progress : callable or None
        Called with a short text before each fit (e.g. a tqdm bar's ``set_description``).
    selection : {'proxy', 'validation'}, default='proxy'
        How hyperparameters are chosen (:func:`fit_method`).

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
                                                param_grid=grid, selection=selection)
            final = estimator[-1] if hasattr(estimator, "steps") else estimator
            if hasattr(final, "best_params_"):  # AutoOODDetector: what it chose
                best_params = {"candidate": final.best_params_["candidate"]}
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
    return _at_grid_edge(best_params, param_grid)


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


def format_caption(methods, selection="proxy"):
    """What each row of the tables is: its kind (a paper's method, a baseline, an
    extension, a default, a peer) and its exact configuration (:meth:`Method.describe`
    under ``selection``), as markdown."""
    lines = ["Rows, by kind:", ""]
    for kind, meaning in KINDS.items():
        rows = [m for m in methods if m.kind == kind]
        if rows:
            lines.append(f"- *{kind}* ({meaning}):")
            lines.extend(f"  - **{m.name}**: {m.describe(selection)}" for m in rows)
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


# ------------------------------------------------------- near / far, paired intervals
NEAR_OOD_SETS = ("digits 5-9", "near")
"""OOD test sets that hold new classes of the same data (near OOD, as OpenOOD splits them);
the others are far OOD. A data Bunch may name its own in ``near_ood``."""


def ood_groups(set_names, near=NEAR_OOD_SETS):
    """``{'near': [...], 'far': [...]}``: the OOD sets of each group (empty groups left
    out)."""
    groups = {"near": [n for n in set_names if n in near],
              "far": [n for n in set_names if n not in near]}
    return {group: names for group, names in groups.items() if names}


def _per_seed(runs, method):
    return {run["seed"]: run["results"] for run in runs if run["method"] == method}


def summarize_groups(runs, groups):
    """Mean ± std over seeds of each metric averaged over the sets of each group.

    Returns
    -------
    summary : dict
        ``{method: {group: {metric: (mean, std)}}}`` in the layout of :func:`summarize`,
        so :func:`format_markdown` prints it.
    """
    summary = {}
    for method in dict.fromkeys(run["method"] for run in runs):
        per_seed = list(_per_seed(runs, method).values())
        summary[method] = {}
        for group, names in groups.items():
            summary[method][group] = {}
            for metric in METRICS:
                values = [np.mean([r[n][metric] for n in names]) for r in per_seed]
                spread = float(np.std(values)) if len(values) > 1 else None
                summary[method][group][metric] = (float(np.mean(values)), spread)
    return summary


def paired_difference(runs, method, reference, sets, *, metric="FPR95", n_boot=200,
                      random_state=0):
    """``method - reference`` of ``metric`` averaged over ``sets`` and seeds, with a 95 %
    interval.

    Paired: both rows are scored on the same rows of the same seeds. The interval is a
    two-level bootstrap: seeds are drawn with replacement (the spread of training runs),
    then, within each drawn seed, the ID test rows and each OOD set's rows (the same
    draw for both rows: the spread of the test sample); the 2.5 and 97.5 percentiles of
    the ``n_boot`` replicates.

    Returns
    -------
    difference : float
    interval : (float, float)
    """
    fn = METRICS[metric]
    ours, theirs = _per_seed(runs, method), _per_seed(runs, reference)
    seeds = sorted(set(ours) & set(theirs))

    def seed_difference(seed, draw=None):
        a, b = ours[seed]["scores"], theirs[seed]["scores"]
        id_rows = draw["ID"] if draw else slice(None)
        values = []
        for name in sets:
            rows = draw[name] if draw else slice(None)
            y_true = np.r_[np.zeros(len(a["ID"][id_rows]), dtype=int),
                           np.full(len(a[name][rows]), OOD_LABEL)]
            values.append(fn(y_true, np.r_[a["ID"][id_rows], a[name][rows]])
                          - fn(y_true, np.r_[b["ID"][id_rows], b[name][rows]]))
        return float(np.mean(values))

    difference = float(np.mean([seed_difference(s) for s in seeds]))
    rng = np.random.default_rng(random_state)
    replicates = []
    for _ in range(n_boot):
        drawn = rng.choice(seeds, size=len(seeds))
        total = 0.0
        for seed in drawn:
            scores = ours[seed]["scores"]
            draw = {name: rng.integers(0, len(scores[name]), len(scores[name]))
                    for name in ["ID", *sets]}
            total += seed_difference(seed, draw)
        replicates.append(total / len(drawn))
    low, high = np.percentile(replicates, [2.5, 97.5])
    return difference, (float(low), float(high))


def strongest_other(summary, *, exclude=("Dense (energy)",)):
    """The best row by mean FPR95 over every OOD set that is not a Hopfield detector nor
    AutoOODDetector: the row every Hopfield row is compared with."""
    rows = {name: table["average"]["FPR95"][0] for name, table in summary.items()
            if not name.startswith(HOPFIELD_PREFIXES + ("Auto",)) and name not in exclude}
    return min(rows, key=rows.get) if rows else None


def format_paired_differences(runs, summary, groups, *, n_boot=200, random_state=0):
    """Markdown: every row's paired FPR95 difference to the strongest non-Hopfield row,
    for each group of OOD sets, with its 95 % interval and whether it is resolved."""
    reference = strongest_other(summary)
    if reference is None:
        return ""
    header = "| row | " + " | ".join(f"Δ FPR95 {g} (points) [95 % interval]"
                                        for g in groups) + " |"
    lines = [
        f"Paired FPR95 difference of each row to **{reference}**, the best row that is "
        "neither a Hopfield detector nor AutoOODDetector (negative: fewer false positives "
        "than it). Intervals: a bootstrap over seeds and, within each, over test rows "
        f"({n_boot} replicates). *better* / *worse*: the interval excludes 0 (resolved); "
        "*~*: it does not (not resolved).",
        "",
        header,
        "|---" * (len(groups) + 1) + "|",
    ]
    for method in summary:
        if method == reference:
            continue
        cells = []
        for names in groups.values():
            diff, (low, high) = paired_difference(runs, method, reference, names,
                                                  n_boot=n_boot, random_state=random_state)
            word = "better" if high < 0 else "worse" if low > 0 else "~"
            cells.append(f"{100 * diff:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] {word}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def auto_verdicts(summary, methods):
    """The targets of the AutoOODDetector rows against the table, as markdown lines.

    The oracle is the row of the table with the lowest mean FPR95 over the OOD sets, known
    only in hindsight (on the test sets); AutoOODDetector should be within
    ``max(1.25 x, + 2 points)`` of it and never worse than the best row of default
    parameters.
    """
    autos = [m.name for m in methods if m.kind == "auto" and m.name in summary]
    fpr = {name: table["average"]["FPR95"][0] for name, table in summary.items()}
    others = {name: value for name, value in fpr.items() if name not in autos}
    if not autos or not others:
        return []
    oracle = min(others, key=others.get)
    bound = max(1.25 * others[oracle], others[oracle] + 0.02)
    defaults = {m.name for m in methods if m.kind == "default"} & set(fpr)
    lines = []
    for auto in autos:
        lines.append(
            f"- {auto}: {100 * fpr[auto]:.2f} % mean FPR95 vs the best row in hindsight "
            f"({oracle}, {100 * others[oracle]:.2f} %): at most {100 * bound:.2f} % asked: "
            f"{'**met**' if fpr[auto] <= bound else '**missed**'}.")
        if defaults:
            best_default = min(defaults, key=fpr.get)
            met = fpr[auto] <= fpr[best_default]
            lines.append(
                f"- {auto} vs the best default row ({best_default}, "
                f"{100 * fpr[best_default]:.2f} %): never worse asked: "
                f"{'**met**' if met else '**missed**'}.")
    return lines
