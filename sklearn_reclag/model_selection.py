"""Model selection for OOD detectors with ordinary scikit-learn tools.

The OOD_LABEL convention makes :class:`~sklearn.model_selection.GridSearchCV` work unchanged:
stack in-distribution (ID) rows with their class labels and OOD rows labelled
:data:`~sklearn_reclag.OOD_LABEL` (-1) with :func:`make_ood_dataset`; every detector's
``fit`` ignores the OOD rows of a training fold, and the OOD scorers compare the held-out
fold's ID and OOD rows.

Which scorer selects which parameter
------------------------------------

Parameters that change the *ranking* of the scores are chosen with a ranking metric, read
from ``score_samples``; parameters that only move the *threshold* of ``predict`` leave every
ranking metric flat and need a metric of ``predict``:

================================  ===================  ===================================
parameter                         what it moves        select with
================================  ===================  ===================================
``beta`` (RecLag, HE)             the ranking          ``fpr95_scorer`` (or
                                                       ``ood_auroc_scorer``)
``n`` (DensePolynomialHopfield)   the ranking          ``fpr95_scorer`` / AUROC
``n_memories`` (RecLag)           the ranking          ``fpr95_scorer`` / AUROC
``temperature`` (Energy, ReAct)   the ranking          ``fpr95_scorer`` / AUROC
``percentile`` (ReAct)            the ranking          ``fpr95_scorer`` / AUROC
``gamma`` (RecLag)                only the threshold   ``ood_balanced_accuracy_scorer``
``contamination`` (detectors)     only the threshold   ``ood_balanced_accuracy_scorer``
================================  ===================  ===================================

All these scorers live in :mod:`sklearn_reclag.metrics`. ``fpr_at_threshold_scorer`` and ``tpr_at_threshold_scorer`` report the two halves of the
balanced accuracy at the fitted threshold; use them as extra entries of a multi-metric
``scoring`` dict, not to select on their own (accepting every row maximises the TPR).

In a Pipeline only the final detector drops the OOD_LABEL rows: a scaler or PCA in front of
it is fitted on them too. Within a search the OOD rows of the training folds then shape the
preprocessing (keep such steps insensitive to a few outliers, or fit them beforehand on ID
rows), and refit the chosen pipeline on the ID rows alone (``refit=False``, then
``clone(pipeline).set_params(**search.best_params_).fit(X_id, y_id)``), as
``sklearn_reclag.benchmark`` does.

To tune a ranking parameter and the threshold together, pass a dict to ``scoring`` and pick
the one ``refit`` selects on, e.g. ``scoring={"fpr95": fpr95_scorer, "bacc":
ood_balanced_accuracy_scorer}, refit="bacc"``.
"""

import warnings
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state, column_or_1d

from ._labels import OOD_LABEL, is_ood_label
# The threshold metrics and their scorers live in metrics.py with the others; they stay
# importable from here, where earlier releases defined them.
from .metrics import (  # noqa: F401
    fpr_at_threshold,
    fpr_at_threshold_scorer,
    ood_balanced_accuracy,
    ood_balanced_accuracy_scorer,
    tpr_at_threshold,
    tpr_at_threshold_scorer,
)

__all__ = [
    "OOD_LABEL",
    "default_param_grid",
    "held_out_group_split",
    "search_diagnostics",
    "is_ood_label",
    "make_ood_dataset",
]


def make_ood_dataset(X_id, y_id, X_ood, *, shuffle=True, random_state=None):
    """Stack ID rows and OOD rows into one ``(X, y)`` for cross-validation.

    The OOD rows are labelled :data:`~sklearn_reclag.OOD_LABEL` (-1). Detectors fit on the
    ID rows of a training fold only; the OOD scorers need ID *and* OOD rows in every test
    fold (FPR95 and AUROC are undefined without both, and the scorers raise a
    ``ValueError``). Two ways to get them there:

    - :class:`~sklearn.model_selection.StratifiedKFold` treats -1 as one more class and puts
      the same share of OOD rows in every fold (the default ``cv`` of GridSearchCV for
      classifiers such as :class:`~sklearn_reclag.DensePolynomialHopfield`);
    - :class:`~sklearn.model_selection.KFold` (the default ``cv`` for detectors) cuts
      contiguous blocks, so the rows must be shuffled first, which ``shuffle=True`` does.

    Parameters
    ----------
    X_id : array-like of shape (n_id, n_features)
        In-distribution features.
    y_id : array-like of shape (n_id,)
        Class labels of the ID rows: integers, floats or strings; none may be OOD_LABEL
        (-1, or ``'-1'`` among strings). With string labels the OOD rows get the string
        ``'-1'``, so that ``y`` stays an array of strings that splitters can sort.
    X_ood : array-like of shape (n_ood, n_features)
        Out-of-distribution features.
    shuffle : bool, default=True
        Shuffle the rows, so that contiguous CV folds hold ID and OOD rows alike.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle.

    Returns
    -------
    X : ndarray of shape (n_id + n_ood, n_features)
        The stacked features (new array; the inputs are not modified).
    y : ndarray of shape (n_id + n_ood,)
        ``y_id`` for ID rows, OOD_LABEL for OOD rows (``'-1'`` when the labels are
        strings).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_reclag.model_selection import make_ood_dataset
    >>> X, y = make_ood_dataset(np.zeros((4, 2)), [0, 0, 1, 1], np.ones((2, 2)),
    ...                         shuffle=False)
    >>> y
    array([ 0,  0,  1,  1, -1, -1])
    >>> make_ood_dataset(np.zeros((2, 2)), ["cat", "dog"], np.ones((1, 2)), shuffle=False)[1]
    array(['cat', 'dog', '-1'], dtype='<U3')
    """
    X_id = check_array(X_id, dtype="numeric", input_name="X_id")
    X_ood = check_array(X_ood, dtype="numeric", input_name="X_ood")
    if X_id.shape[1] != X_ood.shape[1]:
        raise ValueError(
            f"X_id has {X_id.shape[1]} features but X_ood has {X_ood.shape[1]}; "
            "they must describe the same features."
        )
    y_id = column_or_1d(y_id, warn=True)
    if len(y_id) != len(X_id):
        raise ValueError(f"y_id has {len(y_id)} labels but X_id has {len(X_id)} rows.")
    y_id, ood_label = _labels_and_ood_label(y_id)
    if is_ood_label(y_id).any():
        raise ValueError(
            f"y_id holds OOD_LABEL ({ood_label!r}), which marks OOD rows; pass those rows "
            "in X_ood instead."
        )
    X = np.concatenate([X_id, X_ood])
    y = np.concatenate([y_id, np.full(len(X_ood), ood_label)])
    if shuffle:
        order = check_random_state(random_state).permutation(len(y))
        X, y = X[order], y[order]
    return X, y


def _labels_and_ood_label(y_id):
    """``y_id`` in one sortable dtype, and the OOD_LABEL of that dtype.

    Integers stay integers (int64) and floats floats, with -1; strings (or an object
    array of strings) become a numpy string array, with ``'-1'``. An object array that
    mixes strings and numbers is refused: no splitter can sort it.
    """
    kind = y_id.dtype.kind
    if kind in "iub":
        return y_id.astype(np.int64), OOD_LABEL
    if kind == "f":
        return y_id, float(OOD_LABEL)
    if kind == "O" and all(isinstance(label, str) for label in y_id):
        kind = "U"
    if kind in "US":
        y_id = y_id.astype(str)
        return y_id, str(OOD_LABEL)
    raise TypeError(
        f"y_id must hold integer, float or string class labels; got dtype {y_id.dtype}"
        + (" mixing strings and other values" if kind == "O" else "")
        + ". Encode them first, e.g. with sklearn.preprocessing.LabelEncoder."
    )


def default_param_grid(estimator, X=None, y=None, *, beta_factors=(0.3, 1.0, 3.0, 10.0, 30.0)):
    """The grid worth searching for a detector: a GridSearchCV ``param_grid``.

    Each detector of the suite names the hyperparameters that matter most in its class
    attribute ``search_space`` (the metric and beta of the memory banks, n_neighbors of
    KNN, n_components of ViM, ...). For the memory-bank detectors (HE, SHE, RecLag) the
    useful values of beta depend on the metric and on the scale of the features: given
    the training rows, beta is searched in multiples of the value ``beta='auto'`` takes
    in each metric (one grid per metric).

    Parameters
    ----------
    estimator : estimator of the suite
        An unfitted detector; its ``search_space`` is read.
    X : array-like of shape (n_samples, n_features), default=None
        Training rows, for the scale of beta; without them 'auto' stays as it is.
    y : array-like of shape (n_samples,), default=None
        Their class labels (OOD_LABEL rows are ignored).
    beta_factors : sequence of float, default=(0.3, 1.0, 3.0, 10.0, 30.0)
        Multiples of the data's beta to search.

    Returns
    -------
    param_grid : dict or list of dict

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import HopfieldEnergyDetector
    >>> from sklearn_reclag.model_selection import default_param_grid
    >>> X, y = load_digits(return_X_y=True)
    >>> he = HopfieldEnergyDetector(energy="density", device="cpu")
    >>> default_param_grid(he)
    {'metric': ['euclidean', 'cosine', 'mahalanobis'], 'beta': ['auto']}
    >>> grid = default_param_grid(he, X[y < 5], y[y < 5])
    >>> [(g["metric"], len(g["beta"])) for g in grid]
    [(['euclidean'], 5), (['cosine'], 5), (['mahalanobis'], 5)]
    """
    space = getattr(estimator, "search_space", None)
    if space is None:
        raise TypeError(f"{type(estimator).__name__} has no search_space to search.")
    space = {name: list(values) for name, values in space.items()}
    if X is None or "auto" not in space.get("beta", ()):
        return space
    grid = []
    for metric in space.get("metric", [estimator.get_params()["metric"]]):
        probe = clone(estimator).set_params(metric=metric)
        scale = probe._auto_beta_of(X, y)
        grid.append({**space, "metric": [metric], "beta": [f * scale for f in beta_factors]})
    return grid


# ------------------------------------------------------------ proxy OOD from ID rows
@dataclass
class ProxyFold:
    """One task of :func:`proxy_ood_folds`: rows indices into the ID rows."""

    train: np.ndarray  # ID rows the detector is fitted on
    test: np.ndarray  # held-out ID rows of the kept groups
    ood: np.ndarray  # rows of the held-out groups: the proxy OOD rows
    held_out: np.ndarray  # the held-out class labels (cluster numbers for clusters)


def proxy_groups(X, y=None, *, n_clusters=5, random_state=None):
    """The groups that :func:`proxy_ood_folds` holds out, and what they are.

    With two classes or more in ``y`` the groups are the classes. Without (y=None or a
    single class), the rows are cut into ``n_clusters`` k-means clusters (k-means++,
    4 initialisations): each cluster plays a mode of the distribution that the training
    rows miss.

    Returns
    -------
    groups : ndarray of shape (n_samples,)
    kind : {'classes', 'clusters'}
    """
    if y is not None and len(np.unique(y)) >= 2:
        return np.asarray(y), "classes"
    n_clusters = min(n_clusters, len(X))
    kmeans = KMeans(n_clusters=n_clusters, n_init=4, random_state=random_state)
    return kmeans.fit_predict(np.asarray(X, dtype=np.float64)), "clusters"


def proxy_ood_folds(groups, *, n_splits=5, test_size=0.25, random_state=None):
    """Tasks that turn in-distribution rows into an OOD problem: held-out groups.

    The groups (classes, or clusters: :func:`proxy_groups`) are dealt into ``n_splits``
    folds (at most one per group). For each fold the detector is fitted on a
    ``1 - test_size`` share of the rows of the other groups (stratified by group), and
    judged on how it separates the remaining rows of those groups (ID) from the rows of
    the held-out groups (proxy OOD): new classes for a detector that never saw them, the
    near-OOD case, which OOD sets built by shuffling or blending ID rows do not imitate.

    Returns
    -------
    folds : list of :class:`ProxyFold`
    """
    rng = check_random_state(random_state)
    labels = np.unique(groups)
    n_splits = min(n_splits, len(labels))
    if n_splits < 2:
        raise ValueError(
            f"proxy OOD needs at least 2 groups to hold one out; got {len(labels)}."
        )
    dealt = np.array_split(rng.permutation(labels), n_splits)
    folds = []
    for held_out in dealt:
        is_ood = np.isin(groups, held_out)
        kept = np.flatnonzero(~is_ood)
        counts = np.unique(groups[kept], return_counts=True)[1]
        stratify = groups[kept] if counts.min() >= 2 else None
        train, test = train_test_split(kept, test_size=test_size, stratify=stratify,
                                       random_state=rng.randint(2**31 - 1))
        folds.append(ProxyFold(np.sort(train), np.sort(test), np.flatnonzero(is_ood),
                               np.sort(held_out)))
    return folds


def held_out_group_split(X, y=None, *, n_splits=5, n_clusters=5, test_size=0.25,
                         random_state=None):
    """Model selection without OOD data: held-out classes (or clusters) as the OOD rows.

    A user rarely holds OOD rows to tune a detector on. This turns the in-distribution
    rows alone into a cross-validation whose test folds hold proxy OOD rows: the rows of
    classes that the fold's detector never saw (:func:`proxy_ood_folds`), or, without
    two classes, of k-means clusters. It is the criterion
    :class:`~sklearn_reclag.AutoOODDetector` chooses by, for a search of one's own::

        X_search, y_search, cv = held_out_group_split(X, y, random_state=0)
        GridSearchCV(detector, grid, scoring=fpr95_scorer, cv=cv).fit(X_search, y_search)

    ``X_search`` stacks X and a copy of it labelled OOD_LABEL: a fold trains on ID rows
    of the kept groups (the copy is never in a training fold) and tests on held-out ID
    rows and the OOD-labelled copies of the held-out groups' rows, so the usual scorers
    (:data:`~sklearn_reclag.metrics.fpr95_scorer`) read the fold's FPR95. Refit the
    chosen detector on ``(X, y)`` itself (``refit=False``, then
    ``clone(detector).set_params(**search.best_params_).fit(X, y)``): ``X_search`` holds
    every row twice.

    A detector whose head (``head=``) was trained on every class, a network's last
    layer say, knows the held-out classes, and its logits single them out as ID: give
    such detectors ``head=None`` in the search (a softmax regression is fitted on each
    training fold), or use :class:`~sklearn_reclag.AutoOODDetector`, which removes the
    held-out classes from a given head.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        In-distribution rows.
    y : array-like of shape (n_samples,), default=None
        Their class labels (no OOD_LABEL among them). With None or a single class the
        groups are k-means clusters, and the ID rows of ``y_search`` are all labelled 0.
    n_splits : int, default=5
        Folds; the groups are dealt into this many (at most one fold per group).
    n_clusters : int, default=5
        Clusters when there are no two classes.
    test_size : float, default=0.25
        Share of the kept groups' rows held out as the fold's ID test rows.
    random_state : int, RandomState instance or None, default=None
        Seeds the clustering, the dealing of groups and the splits.

    Returns
    -------
    X_search : ndarray of shape (2 * n_samples, n_features)
    y_search : ndarray of shape (2 * n_samples,)
    cv : list of (train, test) index arrays into ``X_search``

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn_reclag import KNNDetector
    >>> from sklearn_reclag.metrics import fpr95_scorer
    >>> from sklearn_reclag.model_selection import held_out_group_split
    >>> X, y = load_digits(return_X_y=True)
    >>> X_search, y_search, cv = held_out_group_split(X[y < 5], y[y < 5], random_state=0)
    >>> len(cv)  # each of the 5 classes held out once
    5
    >>> search = GridSearchCV(KNNDetector(device="cpu"), {"n_neighbors": [1, 50]},
    ...                       scoring=fpr95_scorer, cv=cv).fit(X_search, y_search)
    >>> search.best_params_
    {'n_neighbors': 1}
    """
    X = check_array(X, dtype="numeric")
    if y is not None:
        y = column_or_1d(y, warn=True)
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} labels but X has {len(X)} rows.")
        y, ood_label = _labels_and_ood_label(y)
        if is_ood_label(y).any():
            raise ValueError(
                "y holds OOD_LABEL rows; held_out_group_split builds the OOD rows from "
                "in-distribution rows alone: pass those only."
            )
    groups, kind = proxy_groups(X, y, n_clusters=n_clusters, random_state=random_state)
    folds = proxy_ood_folds(groups, n_splits=n_splits, test_size=test_size,
                            random_state=random_state)
    if kind == "clusters":
        y, ood_label = np.zeros(len(X), dtype=np.int64), OOD_LABEL
    n = len(X)
    X_search = np.concatenate([X, X])
    y_search = np.concatenate([y, np.full(n, ood_label)])
    cv = [(fold.train, np.concatenate([fold.test, n + fold.ood])) for fold in folds]
    return X_search, y_search, cv


def search_diagnostics(search, *, warn=True):
    """What a fitted search's choice rests on: ties with the best, and grid edges.

    A GridSearchCV keeps the first of several candidates with the same mean test score
    without a word; with an easy validation OOD set (every candidate at 0 % FPR95) that is
    every candidate, and the "best" parameters are just the grid's first point. A best
    value at the end of a numeric grid may lie beyond it.

    Parameters
    ----------
    search : fitted GridSearchCV or RandomizedSearchCV
        Single-metric, or multi-metric with ``refit`` naming the metric that chose.
    warn : bool, default=True
        Warn (UserWarning) when the best candidate is tied or at a grid edge.

    Returns
    -------
    diagnostics : dict
        ``tied``: the parameters of every other candidate whose mean test score equals the
        best one's (to float rounding); ``at_edge``: the names of the chosen numeric
        hyperparameters at the smallest or largest of 3 or more grid values.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn_reclag import KNNDetector
    >>> from sklearn_reclag.metrics import fpr95_scorer
    >>> from sklearn_reclag.model_selection import make_ood_dataset, search_diagnostics
    >>> rng = np.random.default_rng(0)
    >>> X, y = make_ood_dataset(rng.normal(size=(60, 3)), np.zeros(60, dtype=int),
    ...                         rng.normal(size=(30, 3)) + 20, random_state=0)
    >>> search = GridSearchCV(KNNDetector(device="cpu"), {"n_neighbors": [1, 2, 3]},
    ...                       scoring=fpr95_scorer, cv=3).fit(X, y)
    >>> search_diagnostics(search, warn=False)["tied"]
    [{'n_neighbors': 2}, {'n_neighbors': 3}]
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(search, "cv_results_")
    results = search.cv_results_
    metric = search.refit if isinstance(search.refit, str) else "score"
    scores = np.asarray(results[f"mean_test_{metric}"], dtype=float)
    best = search.best_index_
    tied = [dict(results["params"][i]) for i in np.flatnonzero(
        np.isclose(scores, scores[best], rtol=1e-12, atol=1e-12)) if i != best]
    grid = getattr(search, "param_grid", None)
    at_edge = _at_grid_edge(results["params"][best], grid) if grid is not None else []
    if warn and (tied or at_edge):
        problems = []
        if tied:
            problems.append(
                f"{len(tied)} other candidate(s) score the same ({scores[best]:.4g}) as the "
                f"chosen {results['params'][best]}, which is only the first of them: the "
                "validation data do not separate them (make the validation OOD set harder, "
                "or choose among the tied by another criterion)")
        if at_edge:
            problems.append(f"{', '.join(at_edge)} chosen at the end of its grid: widen it")
        warnings.warn("; ".join(problems) + ".", UserWarning, stacklevel=2)
    return {"tied": tied, "at_edge": at_edge}


def _at_grid_edge(best_params, param_grid):
    """Names of the chosen hyperparameters at the smallest or largest value of their grid
    (numeric grids of 3 values or more; for a list of grids, the one holding the values)."""
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
