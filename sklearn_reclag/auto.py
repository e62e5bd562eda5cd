"""Choosing a detector for a user's features without OOD data: :class:`AutoOODDetector`."""

import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OutlierMixin, _fit_context, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._labels import OOD_LABEL, drop_ood_rows
from .base import BaseOODDetector, ThresholdedScoresMixin
from .metrics import fpr_at_tpr, ood_auroc
from .model_selection import proxy_groups, proxy_ood_folds

__all__ = ["AutoOODDetector", "default_candidates", "separation_margin"]

# Two groups to hold one out, and a training and a test row of the other.
_MIN_SAMPLES = 4


def default_candidates(*, labelled=True, device="auto", random_state=None, classes=None):
    """The detectors :class:`AutoOODDetector` chooses among by default.

    One or more settings of each family, the settings that decide what a detector sees
    (the metric, the neighbourhood, the covariance, the normalisation), with the
    data-driven defaults for the rest (``beta='auto'``, ``normalize='auto'``), in order of
    preference (AutoOODDetector keeps the first candidate within one standard error of the
    best):

    - the suite's defaults: HopfieldEnergyDetector() and RecLagDetector();
    - MahalanobisDetector() (Ledoit-Wolf; Mahalanobis++ where the origin is informative);
    - Hopfield energy (density) with ``metric`` 'mahalanobis' and 'cosine';
    - deep KNN, ``n_neighbors`` 1, 10 and 50, and the local outlier factor, 10 and 35;
    - with labels or a head: the logit scores Energy and MSP, ViM, and the leaderboard's
      post-hoc detectors (SCALE, ASH, GEN, fDBD, NCI, NNGuide; RMDS with labels).

    Not a candidate: HopfieldBoostingDetector, which needs auxiliary outliers.

    Parameters
    ----------
    labelled : bool, default=True
        Whether class labels or a head are available (the logit scores need them).
    classes : bool or None, default=None
        Whether y holds two classes or more (RMDS needs them; a head alone does not do):
        None means ``labelled``.
    device : str, default='auto'
    random_state : int or None, default=None
        Seeds RecLag's fit (and LOF's and NNGuide's draws).

    Returns
    -------
    candidates : list of estimators
    """
    from .detectors import (
        ASHDetector,
        EnergyDetector,
        FDBDDetector,
        GENDetector,
        HopfieldEnergyDetector,
        KNNDetector,
        LOFDetector,
        MahalanobisDetector,
        MSPDetector,
        NCIDetector,
        NNGuideDetector,
        RecLagDetector,
        RMDSDetector,
        SCALEDetector,
        ViMDetector,
    )

    # In order of preference (see AutoOODDetector: the first within one standard error of
    # the best is chosen): the suite's defaults, then the other settings.
    candidates = [
        HopfieldEnergyDetector(device=device),
        RecLagDetector(device=device, random_state=random_state),
        MahalanobisDetector(device=device),
        HopfieldEnergyDetector(metric="mahalanobis", device=device),
        HopfieldEnergyDetector(metric="cosine", device=device),
    ]
    candidates += [KNNDetector(k, device=device) for k in (1, 10, 50)]
    candidates += [LOFDetector(k, device=device, random_state=random_state) for k in (10, 35)]
    if labelled:
        candidates += [EnergyDetector(device=device), MSPDetector(device=device),
                       ViMDetector(device=device), SCALEDetector(device=device),
                       ASHDetector(device=device), GENDetector(device=device),
                       FDBDDetector(device=device), NCIDetector(device=device),
                       NNGuideDetector(device=device, random_state=random_state)]
    if labelled if classes is None else classes:
        candidates.append(RMDSDetector(device=device))
    return candidates


def _describe(estimator):
    """A candidate's name: its class and non-default parameters, on one line, without
    the device and the seed (the same for every candidate)."""
    text = " ".join(repr(estimator).split())
    for noise in ("device='cpu'", "device='cuda'", "device='auto'"):
        text = text.replace(noise + ", ", "").replace(", " + noise, "").replace(noise, "")
    return text


class AutoOODDetector(ThresholdedScoresMixin, OutlierMixin, MetaEstimatorMixin, BaseEstimator):
    """The OOD detector chosen for these features, from in-distribution rows alone.

    A user holds features and no OOD rows. ``fit(X, y)`` scores every candidate detector
    on proxy OOD tasks built from the in-distribution rows
    (:func:`~sklearn_reclag.model_selection.proxy_ood_folds`): each fold holds out some
    classes, fits the candidate on part of the other classes' rows and measures how well
    it tells their remaining rows from the held-out classes' rows (FPR95, mean over the
    folds). A candidate listed earlier is kept unless a later one is better by more than
    one standard error of the best one's criterion over the folds (the one-standard-error
    rule of cross-validation: differences the folds cannot resolve do not count; among
    equals AUROC, then the separation margin, rank). The chosen candidate is refitted on
    all rows and this estimator then behaves as it: ``score_samples``,
    ``decision_function``, ``predict`` and ``offset_`` are its.

    Without two classes (``y=None`` or one class) no class can be held out. The
    stand-in, held-out k-means clusters (``proxy='groups'``), chose worse than the
    defaults on the novelty benchmark, so by default (``proxy='auto'``) the first
    candidate is kept then, with a warning.

    Held-out classes are near-OOD: new classes of the same kind of data, the hard case.
    The criterion never sees an OOD set; the user guide's "Which detector" page reports
    how its choice compares with the best detector chosen on the test OOD sets in
    hindsight, on the suite's benchmarks, and when to trust it.

    Parameters
    ----------
    candidates : list of estimators or None, default=None
        The detectors to choose among (unfitted, each with ``fit`` and
        ``score_samples``, ``offset_`` once fitted: the suite's detectors or a Pipeline
        ending in one), in order of preference: the first candidate within one standard
        error of the best is chosen. None: :func:`default_candidates`, with the logit
        scores only where labels or a head are given.
    head : None, fitted linear classifier or tuple (coef, intercept), default=None
        Passed to every candidate that takes a ``head``. In the proxy folds the held-out
        classes' rows of the head are removed (a head that knows a class would single its
        rows out as ID).
    n_splits : int >= 2, default=5
        Proxy folds (groups are dealt into this many).
    n_groups : int >= 2, default=5
        k-means clusters to hold out when there are no two classes.
    rule : {'one_standard_error', 'best'}, default='one_standard_error'
        'one_standard_error': the first candidate (in the order of ``candidates``) whose
        mean FPR95 is within one standard error of the best one's; 'best': the lowest
        mean FPR95 (AUROC, then the separation margin, break ties), for candidates in no
        order of preference (the points of a grid).
    proxy : {'auto', 'groups', 'groups+shuffled'}, default='auto'
        The proxy OOD rows. 'groups': the held-out classes, or k-means clusters without
        two classes. '+shuffled' adds rows whose features are permuted independently
        across the fold's training rows (each feature's values kept, their dependence
        destroyed: a far-OOD proxy); a fold's criterion is the worse of the two FPR95.
        'auto': 'groups' with two classes or more; without them, no proxy: the first
        candidate is kept, with a warning. Held-out clusters chose far worse detectors
        than the defaults on the suite's novelty benchmark (standardised tabular
        classes, where the held-out cluster of a class lies inside the rest of it and
        rewards the most local detectors), and so did the shuffled rows: see the user
        guide's "Which detector" page. Pass 'groups' to choose on clusters anyway.
    max_samples : int, default=10_000
        At most this many rows (a fixed random draw) build the proxy tasks; the chosen
        candidate is refitted on all rows.
    contamination : float in (0, 0.5], default=0.05
        Passed to every candidate: the fraction of new ID rows ``predict`` rejects.
    device : str, default='auto'
        Passed to every candidate that takes one.
    random_state : int, RandomState instance or None, default=None
        Seeds the proxy tasks (clusters, splits) and the candidates that draw.
    n_jobs : int or None, default=None
        Candidate-fold fits run in parallel (joblib).
    verbose : int, default=0
        Prints each candidate's criterion when > 0.

    Attributes
    ----------
    best_estimator_ : estimator
        The chosen candidate, refitted on all rows.
    best_params_ : dict
        ``{'candidate': name}`` and the chosen candidate's parameters.
    best_index_ : int
        Its index in ``cv_results_``.
    cv_results_ : dict of arrays
        One entry per candidate: 'candidate' (its name), 'estimator', 'mean_fpr95',
        'std_fpr95', 'mean_auroc', 'std_auroc', 'mean_margin' (the tie-breaker, see
        :func:`separation_margin`), 'mean_fit_time' (seconds per fold), and 'rank' (1 =
        chosen). ``pandas.DataFrame(cv_results_)`` reads it as a table.
    criterion_ : str
        The proxy OOD used: 'held-out classes', 'held-out clusters' (with '... and
        feature-shuffled rows'), or none (no two classes, ``proxy='auto'``).
    offset_ : float
        The chosen detector's threshold.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when X has feature names that are all strings.

    See Also
    --------
    sklearn_reclag.model_selection.held_out_group_split : the same criterion for a
        GridSearchCV of one's own.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import AutoOODDetector, KNNDetector, MahalanobisDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> auto = AutoOODDetector([KNNDetector(1, device="cpu"), KNNDetector(50, device="cpu"),
    ...                         MahalanobisDetector(device="cpu")], random_state=0)
    >>> auto = auto.fit(X[y < 5] / 16, y[y < 5])
    >>> auto.best_params_["candidate"]
    'KNNDetector()'
    >>> bool(auto.score_samples(X[y >= 5] / 16).mean() < auto.score_samples(X[y < 5] / 16).mean())
    True
    """

    _parameter_constraints: dict = {
        "candidates": [list, None],
        "head": [None, object],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "n_groups": [Interval(Integral, 2, None, closed="left")],
        "proxy": [StrOptions({"auto", "groups", "groups+shuffled"})],
        "rule": [StrOptions({"one_standard_error", "best"})],
        "max_samples": [Interval(Integral, 10, None, closed="left")],
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "device": [str, object],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(self, candidates=None, *, head=None, n_splits=5, n_groups=5,
                 rule="one_standard_error", proxy="auto", max_samples=10_000,
                 contamination=0.05, device="auto", random_state=None, n_jobs=None,
                 verbose=0):
        self.candidates = candidates
        self.head = head
        self.n_splits = n_splits
        self.n_groups = n_groups
        self.rule = rule
        self.proxy = proxy
        self.max_samples = max_samples
        self.contamination = contamination
        self.device = device
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Choose a detector on proxy OOD tasks from (X, y), then refit it on all rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In-distribution features.
        y : array-like of shape (n_samples,), default=None
            Class labels; rows labelled ``OOD_LABEL`` are ignored.

        Returns
        -------
        self : object
        """
        if y is None:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
            X, y = drop_ood_rows(X, column_or_1d(y, warn=True))
            check_classification_targets(y)
        candidates = self._select(X, y)
        chosen = candidates[self.best_index_]
        self.best_estimator_ = self._prepared(chosen, self.head).fit(X, y)
        self.best_params_ = {"candidate": self.cv_results_["candidate"][self.best_index_],
                             **chosen.get_params(deep=False)}
        final = self.best_estimator_
        final = final[-1] if hasattr(final, "steps") else final
        if not hasattr(final, "offset_"):
            raise TypeError(
                f"The chosen candidate {self.best_params_['candidate']} has no offset_ "
                "once fitted, so predict has no threshold: candidates must be OOD "
                "detectors (the suite's, or a Pipeline ending in one)."
            )
        self.offset_ = float(final.offset_)
        return self

    def _select(self, X, y):
        """Score the candidates on the proxy OOD tasks of validated (X, y): sets
        ``cv_results_``, ``best_index_`` and ``criterion_``; returns the candidates."""
        if len(X) < _MIN_SAMPLES:
            raise ValueError(
                f"AutoOODDetector needs at least {_MIN_SAMPLES} in-distribution rows to "
                f"build proxy OOD tasks (two groups, training and test rows); got "
                f"n_samples={len(X)}."
            )
        has_classes = y is not None and len(np.unique(y)) >= 2
        labelled = has_classes or self.head is not None
        candidates = self._checked_candidates(labelled, y)
        if self.proxy == "auto" and not has_classes:
            return self._keep_first(candidates)
        rng = np.random.RandomState(self._seed())
        rows = np.arange(len(X))
        if len(X) > self.max_samples:
            rows = np.sort(rng.choice(len(X), self.max_samples, replace=False))
        self.cv_results_ = self._score_candidates(candidates, X[rows],
                                                  None if y is None else y[rows])
        self.best_index_ = int(np.argmin(self.cv_results_["rank"]))
        return candidates

    def _keep_first(self, candidates):
        """No two classes and proxy='auto': the first candidate, without proxy tasks."""
        self.criterion_ = "none (no two classes): the first candidate is kept"
        n = len(candidates)
        self.cv_results_ = {
            "candidate": np.array([_describe(c) for c in candidates], dtype=object),
            "estimator": np.array(candidates + [None], dtype=object)[:-1],
            **{key: np.full(n, np.nan) for key in (
                "mean_fpr95", "std_fpr95", "mean_auroc", "std_auroc", "mean_margin",
                "mean_fit_time")},
            "rank": np.arange(1, n + 1),
        }
        self.best_index_ = 0
        warnings.warn(
            f"AutoOODDetector: y has fewer than two classes, so no classes can be held out "
            f"as proxy OOD; it keeps the first candidate, {_describe(candidates[0])}. "
            "Held-out k-means clusters, the proxy without classes, chose worse detectors "
            "than the defaults on the suite's novelty benchmark; pass proxy='groups' to "
            "choose on them anyway.",
            UserWarning,
            stacklevel=4,
        )
        return candidates

    def _seed(self):
        if self.random_state is None or isinstance(self.random_state, Integral):
            return self.random_state
        return self.random_state.randint(2**31 - 1)

    def _checked_candidates(self, labelled, y):
        """The candidates, refused before any fit when one cannot be fitted here."""
        if self.candidates is None:
            return default_candidates(
                labelled=labelled, device=self.device, random_state=self._seed(),
                classes=y is not None and len(np.unique(y)) >= 2)
        if not self.candidates:
            raise ValueError("candidates is an empty list; pass None for the default set.")
        for i, candidate in enumerate(self.candidates):
            if not (hasattr(candidate, "fit") and hasattr(candidate, "score_samples")
                    and hasattr(candidate, "get_params")):
                raise TypeError(
                    f"candidates[{i}] is {candidate!r}, not an OOD detector: each candidate "
                    "must be an unfitted estimator with fit and score_samples (a detector "
                    "of the suite or a Pipeline ending in one)."
                )
            prepared = self._prepared(candidate, self.head)
            final = prepared[-1] if hasattr(prepared, "steps") else prepared
            if isinstance(final, BaseOODDetector) and final._requires_y() and not labelled:
                raise ValueError(
                    f"candidates[{i}] ({_describe(candidate)}) needs class labels or a "
                    "head, and there are neither (y is None or holds one class, head is "
                    "None): remove it, or pass y or head."
                )
        return list(self.candidates)

    def _prepared(self, candidate, head):
        """A clone of ``candidate`` with this estimator's head, contamination and device
        (where it takes them)."""
        estimator = clone(candidate)
        final_name = ""
        if hasattr(estimator, "steps"):
            final_name = estimator.steps[-1][0] + "__"
        params = estimator.get_params()
        settings = {"contamination": self.contamination}
        if head is not None:
            settings["head"] = head
        if self.device != "auto":
            settings["device"] = self.device
        return estimator.set_params(**{final_name + k: v for k, v in settings.items()
                                       if final_name + k in params})

    def _score_candidates(self, candidates, X, y):
        """The criterion of every candidate on the proxy folds: ``cv_results_``."""
        seed = self._seed()
        groups, kind = proxy_groups(X, y, n_clusters=self.n_groups, random_state=seed)
        self.criterion_ = f"held-out {kind}"
        folds = proxy_ood_folds(groups, n_splits=self.n_splits, random_state=seed)
        shuffled = [None] * len(folds)
        if self.proxy == "groups+shuffled":
            self.criterion_ += " and feature-shuffled rows (the worse of the two)"
            rng = np.random.default_rng(seed)
            shuffled = [_feature_shuffled(X[fold.train], len(fold.test), rng)
                        for fold in folds]
        fit_y = y if kind == "classes" else None
        tasks = [(c, f) for c in range(len(candidates)) for f in range(len(folds))]
        outcomes = Parallel(n_jobs=self.n_jobs)(
            delayed(_evaluate)(
                self._prepared(candidates[c], self._fold_head(folds[f], y, kind)),
                X, fit_y, folds[f], shuffled[f])
            for c, f in tasks)
        n_candidates, n_folds = len(candidates), len(folds)

        def table(i):
            return np.array([o[i] for o in outcomes]).reshape(n_candidates, n_folds)

        fpr, auroc, seconds, margin = table(0), table(1), table(2), table(6)
        extra = {}
        if self.proxy == "groups+shuffled":
            extra = {"mean_fpr95_groups": fpr.mean(axis=1),
                     "mean_fpr95_shuffled": table(4).mean(axis=1)}
            fpr, auroc = np.maximum(fpr, table(4)), np.minimum(auroc, table(5))
            margin = np.minimum(margin, table(7))
        mean_fpr, mean_auroc, mean_margin = fpr.mean(axis=1), auroc.mean(axis=1), margin.mean(
            axis=1)
        failed = np.isnan(mean_fpr)
        if failed.all():
            raise ValueError(
                "AutoOODDetector: no candidate could be fitted on the proxy OOD tasks "
                f"({self.criterion_}); the first error: {outcomes[0][3]}"
            )
        if failed.any():
            warnings.warn(
                "AutoOODDetector: these candidates could not be fitted on every proxy OOD "
                f"task ({self.criterion_}) and are ranked last: "
                + "; ".join(f"{_describe(candidates[i])} ({outcomes[i * n_folds][3] or ''})"
                            for i in np.flatnonzero(failed)),
                UserWarning,
                stacklevel=4,
            )
        # Lowest FPR95, then highest AUROC, then the widest margin (both saturate on easy
        # proxy OOD), then the earlier candidate; failed ones last.
        order = np.lexsort((np.arange(n_candidates),
                            -np.nan_to_num(mean_margin, nan=-np.inf),
                            -np.nan_to_num(mean_auroc, nan=-1.0),
                            np.nan_to_num(mean_fpr, nan=np.inf)))
        if self.rule == "one_standard_error":
            chosen = _one_standard_error_choice(fpr, order[0])
            order = np.r_[chosen, order[order != chosen]]
        rank = np.empty(n_candidates, dtype=int)
        rank[order] = np.arange(1, n_candidates + 1)
        results = {
            "candidate": np.array([_describe(c) for c in candidates], dtype=object),
            "estimator": np.array(candidates + [None], dtype=object)[:-1],
            "mean_fpr95": mean_fpr, "std_fpr95": fpr.std(axis=1),
            "mean_auroc": mean_auroc, "std_auroc": auroc.std(axis=1),
            "mean_margin": mean_margin,
            "mean_fit_time": seconds.mean(axis=1), "rank": rank, **extra,
        }
        self._warn_if_tied(results, order)
        if self.verbose:
            for i in order:
                print(f"[AutoOODDetector] {results['candidate'][i]}: FPR95 "
                      f"{mean_fpr[i]:.3f}, AUROC {mean_auroc[i]:.3f}, "
                      f"{seconds[i].mean():.2f} s a fold")
        return results

    def _fold_head(self, fold, y, kind):
        """The head a fold's candidates get: without the held-out classes' rows."""
        head = self.head
        if head is None or kind != "classes":
            return head
        if isinstance(head, tuple):
            coef, intercept = (np.asarray(a, dtype=np.float64) for a in head)
            classes = np.unique(y) if len(np.unique(y)) == len(coef) else np.arange(len(coef))
        else:
            coef = np.asarray(head.coef_, dtype=np.float64)
            intercept = np.broadcast_to(np.asarray(head.intercept_, dtype=np.float64),
                                        (len(coef),))
            classes = getattr(head, "classes_", np.arange(len(coef)))
            if len(coef) == 1:  # binary: class 0 has logit 0
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.r_[0.0, intercept]
        keep = ~np.isin(classes, fold.held_out)
        if keep.sum() < 2:
            # One class left: no softmax to restrict; the head goes as it is.
            return head
        return (coef[keep], intercept[keep])

    def _warn_if_tied(self, results, order):
        best, second = order[0], order[1] if len(order) > 1 else None
        if second is None:
            return
        tied = all(np.isclose(results[key][best], results[key][second])
                   for key in ("mean_fpr95", "mean_auroc", "mean_margin"))
        if tied:
            warnings.warn(
                f"AutoOODDetector: {results['candidate'][best]} and "
                f"{results['candidate'][second]} tie on the proxy OOD tasks "
                f"({self.criterion_}: FPR95 {results['mean_fpr95'][best]:.3f}, AUROC "
                f"{results['mean_auroc'][best]:.3f}); the first listed is kept. The tasks "
                "do not separate them: compare them on OOD rows of your own if you have "
                "some.",
                UserWarning,
                stacklevel=4,
            )

    # -------------------------------------------------------------- scoring
    def score_samples(self, X):
        """The chosen detector's scores: higher means more in-distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.best_estimator_.score_samples(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


def _one_standard_error_choice(fpr, best):
    """The first candidate (in the order given: of preference) whose mean FPR95 over the
    folds is within one standard error of the best one's.

    The one-standard-error rule of cross-validation (Breiman et al., 1984; Hastie,
    Tibshirani & Friedman, *The Elements of Statistical Learning*, 7.10): a difference
    that the folds do not resolve is no reason to leave a candidate listed earlier, the
    suite's defaults first. On the digits benchmark every candidate separates the held-out
    classes of the CNN's features almost perfectly, and the best-scoring one was a worse
    detector of new classes than the defaults.
    """
    if not np.isfinite(fpr[best]).all():
        return best
    n_folds = fpr.shape[1]
    standard_error = fpr[best].std(ddof=1) / np.sqrt(n_folds) if n_folds > 1 else 0.0
    means = np.nan_to_num(fpr.mean(axis=1), nan=np.inf)
    within = np.flatnonzero(means <= means[best] + standard_error + 1e-12)
    return int(within[0])


def _feature_shuffled(X, n_rows, rng):
    """``n_rows`` rows whose every feature is drawn from that feature's values in X, each
    feature permuted independently: the marginals of X without their dependence."""
    rows = rng.integers(0, len(X), size=(n_rows, X.shape[1]))
    return np.take_along_axis(X, rows, axis=0)


def _fpr_auroc(estimator, id_scores, X_ood):
    """FPR95, AUROC and the separation margin of ID scores from the scores of X_ood."""
    ood_scores = estimator.score_samples(X_ood)
    y_true = np.r_[np.zeros(len(id_scores), dtype=int), np.full(len(ood_scores), OOD_LABEL)]
    scores = np.concatenate([id_scores, ood_scores])
    return (fpr_at_tpr(y_true, scores), ood_auroc(y_true, scores),
            separation_margin(id_scores, ood_scores))


def separation_margin(id_scores, ood_scores):
    """How far the OOD scores lie below the ID scores, in units of the ID scores' spread:
    ``(q_ID(0.05) - q_OOD(0.95)) / (q_ID(0.95) - q_ID(0.05))``.

    Positive when 95 % of the ID rows score above 95 % of the OOD rows. It keeps
    ranking detectors where FPR95 and AUROC saturate (0 and 1 on proxy OOD that every
    candidate separates, as held-out classes are in the features of a network that was
    trained on them): the larger the margin, the farther a harder OOD set may move
    towards the ID rows before it is accepted. Invariant to shifting and scaling the
    scores.
    """
    low, high = np.percentile(id_scores, [5, 95])
    spread = high - low
    if not spread > 0:
        return 0.0
    return float((low - np.percentile(ood_scores, 95)) / spread)


def _evaluate(estimator, X, y, fold, shuffled=None):
    """FPR95 and AUROC of ``estimator`` fitted on a proxy fold, the fit's seconds, the
    error that kept it from fitting (or None), and FPR95 and AUROC against ``shuffled``
    rows (NaN without)."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # A fold repeats the final fit's warnings (a small class, a tie), once per fold.
            warnings.simplefilter("ignore")
            estimator.fit(X[fold.train], None if y is None else y[fold.train])
    except ValueError as exc:
        # A fold it cannot fit (one class left for a head, too few rows): judged unfit.
        nan = np.nan
        return nan, nan, time.perf_counter() - start, str(exc), nan, nan, nan, nan
    seconds = time.perf_counter() - start
    id_scores = estimator.score_samples(X[fold.test])
    fpr, auroc, margin = _fpr_auroc(estimator, id_scores, X[fold.ood])
    shuffled_metrics = (np.nan, np.nan, np.nan)
    if shuffled is not None:
        shuffled_metrics = _fpr_auroc(estimator, id_scores, shuffled)
    return (fpr, auroc, seconds, None, shuffled_metrics[0], shuffled_metrics[1], margin,
            shuffled_metrics[2])
