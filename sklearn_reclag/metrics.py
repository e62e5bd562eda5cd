"""OOD detection metrics and scorers.

Convention (the RecLag and SHE papers'): in-distribution (ID) is the positive class and scores
are higher for ID rows. ``y_true`` follows the fit convention: rows labelled
:data:`~sklearn_reclag.OOD_LABEL` (-1) are OOD, any other label is ID; a boolean "is ID"
array is accepted too. The other convention (OpenOOD v1.5, pytorch-ood: OOD positive, FPR of
ID rows at 95 % OOD recall) is available with ``positive="ood"``.
"""

import numbers

import numpy as np
from sklearn.metrics import average_precision_score, make_scorer, roc_auc_score, roc_curve

from ._labels import OOD_LABEL, is_ood_label

_POSITIVES = ("id", "ood")


def _real_array(values, name):
    """``values`` as a float64 array, refusing what would silently lose information.

    numpy casts complex numbers to float by dropping their imaginary part (with only a
    ComplexWarning): a metric of such scores would measure something else than asked.
    """
    values = np.asarray(values)
    if values.dtype.kind == "c":
        raise ValueError(
            f"{name} holds complex numbers; OOD metrics need real scores (take the real "
            "part or the modulus yourself if that is what you mean)."
        )
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold real numbers; got dtype {values.dtype}.") from exc


def _check_inputs(y_true, y_score):
    """``(is_id, score)`` as validated arrays; the errors say what is wrong."""
    y_true = np.asarray(y_true)
    if y_true.dtype.kind == "c":
        raise ValueError(
            "y_true holds complex numbers; it must hold class labels (OOD_LABEL -1 for "
            "OOD rows) or a boolean 'is ID' array."
        )
    y_score = _real_array(y_score, "y_score")
    if y_true.ndim != 1 or y_score.ndim != 1:
        raise ValueError(
            f"y_true and y_score must be 1-D; got shapes {y_true.shape} and {y_score.shape}."
        )
    if len(y_true) != len(y_score):
        raise ValueError(
            f"y_true has {len(y_true)} entries but y_score has {len(y_score)}."
        )
    if np.isnan(y_score).any():
        raise ValueError(f"y_score holds {int(np.isnan(y_score).sum())} NaN values.")
    y_score = _finite_ranks(y_score)
    is_id = y_true.astype(bool) if y_true.dtype.kind == "b" else ~is_ood_label(y_true)
    if is_id.all():
        raise ValueError(
            "y_true has no OOD rows (label -1; '-1' in string labels; False in a boolean "
            "array): OOD metrics need both ID and OOD rows."
        )
    if not is_id.any():
        raise ValueError("y_true has no in-distribution rows: OOD metrics need both.")
    return is_id, y_score


def _finite_ranks(y_score):
    """Replace -inf / +inf by finite values just beyond the finite scores.

    A detector may score a row -inf (a log-sum-exp over nothing); the metrics only read the
    ranking, which this keeps, while scikit-learn's curves reject infinite values.
    """
    infinite = np.isinf(y_score)
    if not infinite.any():
        return y_score
    finite = y_score[~infinite]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    return np.where(y_score == -np.inf, low - 1.0, np.where(y_score == np.inf, high + 1.0,
                                                             y_score))


def _positive_view(y_true, y_score, positive):
    """Labels and scores with the chosen positive class higher, as sklearn expects."""
    if positive not in _POSITIVES:
        raise ValueError(f"positive must be 'id' or 'ood'; got {positive!r}.")
    is_id, y_score = _check_inputs(y_true, y_score)
    if positive == "id":
        return is_id, y_score
    return ~is_id, -y_score


def fpr_at_tpr(y_true, y_score, *, tpr=0.95, positive="id"):
    """False-positive rate at the first threshold reaching a true-positive rate (FPR95).

    With ``positive="id"``: the largest threshold s* such that at least a fraction ``tpr``
    of the ID rows score >= s*; the result is the fraction of OOD rows scoring >= s*.
    Tied scores are grouped: a threshold accepts every row with an equal score. This is
    :func:`sklearn.metrics.roc_curve` followed by its first point with tpr >= ``tpr``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_score : array-like of shape (n_samples,)
        Scores, higher = more in-distribution.
    tpr : float in (0, 1], default=0.95
        The true-positive rate to reach.
    positive : {'id', 'ood'}, default='id'
        'id': ID rows are positives (the papers' FPR95: OOD accepted at 95 % ID recall).
        'ood': OOD rows are positives, scored by ``-y_score`` (OpenOOD v1.5 and
        pytorch-ood: ID rows rejected at 95 % OOD recall).

    Returns
    -------
    fpr : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import fpr_at_tpr
    >>> fpr_at_tpr([0, 0, 1, -1, -1], [0.9, 0.8, 0.7, 0.75, 0.1])
    0.5
    """
    if not (isinstance(tpr, numbers.Real) and 0 < tpr <= 1):
        raise ValueError(f"tpr must be a number in (0, 1]; got {tpr!r}.")
    is_positive, score = _positive_view(y_true, y_score, positive)
    fprs, tprs, _ = roc_curve(is_positive, score, drop_intermediate=False)
    # roc_curve's tpr is a float ratio; the tolerance keeps tpr=0.95 on 20 positives exact.
    return float(fprs[np.argmax(tprs >= tpr - 1e-12)])


def ood_auroc(y_true, y_score):
    """Area under the ROC curve with ID as the positive class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_score : array-like of shape (n_samples,)
        Scores, higher = more in-distribution.

    Returns
    -------
    auroc : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import ood_auroc
    >>> ood_auroc([0, 3, -1, -1], [0.9, 0.8, 0.85, 0.1])
    0.75
    """
    is_id, score = _positive_view(y_true, y_score, "id")
    return float(roc_auc_score(is_id, score))


def ood_aupr(y_true, y_score, *, positive="id"):
    """Area under the precision-recall curve (average precision).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_score : array-like of shape (n_samples,)
        Scores, higher = more in-distribution.
    positive : {'id', 'ood'}, default='id'
        'id' gives AUPR-In; 'ood' gives AUPR-Out (OOD positive, scored by ``-y_score``).

    Returns
    -------
    aupr : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import ood_aupr
    >>> ood_aupr([0, 0, -1, -1], [0.9, 0.8, 0.3, 0.1])
    1.0
    """
    is_positive, score = _positive_view(y_true, y_score, positive)
    return float(average_precision_score(is_positive, score))


_METRICS = {
    "fpr": (fpr_at_tpr, False),
    "auroc": (ood_auroc, True),
    "aupr": (ood_aupr, True),
}


class OODScorer:
    """A scorer ``(estimator, X, y) -> float`` computed on ``estimator.score_samples(X)``.

    Use :func:`make_ood_scorer` to build one. Works with every estimator of the suite
    (detectors and :class:`DensePolynomialHopfield` alike), in GridSearchCV,
    cross_validate or by hand. The sign is flipped for lower-is-better metrics so that
    greater is always better, as scikit-learn's model selection expects.

    Parameters
    ----------
    metric : callable
        ``metric(y_true, y_score, **kwargs) -> float``.
    sign : {1, -1}
        -1 for a lower-is-better metric.
    kwargs : dict
        Keyword arguments of the metric.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import OOD_LABEL, EnergyDetector
    >>> from sklearn_reclag.metrics import make_ood_scorer
    >>> X, y = load_digits(return_X_y=True)
    >>> detector = EnergyDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> y_ood = np.where(y < 5, y, OOD_LABEL)  # digits 5-9 are the OOD rows
    >>> aupr_out = make_ood_scorer("aupr", positive="ood")
    >>> aupr_out
    make_ood_scorer(ood_aupr, positive='ood')
    >>> bool(0 < aupr_out(detector, X / 16, y_ood) <= 1)
    True
    """

    def __init__(self, metric, sign, kwargs):
        self.metric = metric
        self.sign = sign
        self.kwargs = kwargs

    def __call__(self, estimator, X, y):
        if y is None:
            raise ValueError(
                "OOD scorers need y: OOD_LABEL (-1) for OOD rows, class labels for ID rows."
            )
        _check_both_kinds_of_rows(y)
        return self.sign * self.metric(y, estimator.score_samples(X), **self.kwargs)

    def __repr__(self):
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        name = getattr(self.metric, "__name__", repr(self.metric))
        sign = "" if self.sign > 0 else ", greater_is_better=False"
        return f"make_ood_scorer({name}{sign}{args})"


def _check_both_kinds_of_rows(y):
    """Refuse, before any scoring, a set of rows without ID or without OOD rows.

    Said in the words of a cross-validation, where this happens: GridSearchCV turns a
    scorer's error into a NaN score (unless ``error_score='raise'``), and when every
    candidate is NaN it keeps the first one without a word.
    """
    y = np.asarray(y)
    if y.dtype.kind == "c":
        return  # _check_inputs says what is wrong
    is_id = y.astype(bool) if y.dtype.kind == "b" else ~is_ood_label(y)
    if is_id.all() or not is_id.any():
        missing = "no OOD row" if is_id.all() else "no in-distribution row"
        raise ValueError(
            f"An OOD scorer got {len(y)} rows with {missing}: FPR95, AUROC and AUPR need "
            f"both. OOD rows are labelled OOD_LABEL ({OOD_LABEL}; '{OOD_LABEL}' among "
            "string labels). In a cross-validation every test fold needs both kinds of "
            "rows: use StratifiedKFold(shuffle=True), or KFold on rows shuffled by "
            "make_ood_dataset; and pass error_score='raise' to GridSearchCV, which "
            "otherwise scores the candidate NaN and, when all are NaN, keeps the first."
        )


def make_ood_scorer(metric, *, greater_is_better=None, **kwargs):
    """Make a scorer that reads ``score_samples`` and compares it with OOD labels.

    Parameters
    ----------
    metric : {'fpr', 'auroc', 'aupr'} or callable
        'fpr' is :func:`fpr_at_tpr` (lower is better: the scorer returns its negative),
        'auroc' :func:`ood_auroc`, 'aupr' :func:`ood_aupr`. A callable
        ``metric(y_true, y_score, **kwargs) -> float`` needs ``greater_is_better``.
    greater_is_better : bool, default=None
        Only for a callable metric (the named ones know their direction).
    **kwargs
        Passed to the metric, e.g. ``tpr=0.9`` or ``positive="ood"``.

    Returns
    -------
    scorer : OODScorer

    Examples
    --------
    >>> from sklearn_reclag.metrics import make_ood_scorer
    >>> make_ood_scorer("fpr", tpr=0.9)
    make_ood_scorer(fpr_at_tpr, greater_is_better=False, tpr=0.9)
    """
    if isinstance(metric, str):
        if metric not in _METRICS:
            raise ValueError(
                f"metric must be one of {sorted(_METRICS)} or a callable; got {metric!r}."
            )
        if greater_is_better is not None:
            raise ValueError("greater_is_better is only for callable metrics.")
        metric, greater_is_better = _METRICS[metric]
    elif not callable(metric):
        raise TypeError(f"metric must be a name or a callable; got {type(metric).__name__}.")
    elif greater_is_better is None:
        raise ValueError("Pass greater_is_better for a callable metric.")
    return OODScorer(metric, 1 if greater_is_better else -1, kwargs)


def _scorer_example(name, check):
    """The Examples section of a scorer's docstring: the scorer called on a detector fitted
    on digits 0-4, with digits 5-9 as the OOD rows; ``check`` is a boolean expression of
    its value ``score``."""
    return f"""

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import OOD_LABEL, EnergyDetector
    >>> from sklearn_reclag.metrics import {name}
    >>> X, y = load_digits(return_X_y=True)
    >>> detector = EnergyDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> y_ood = np.where(y < 5, y, OOD_LABEL)  # digits 5-9 are the OOD rows
    >>> score = {name}(detector, X / 16, y_ood)
    >>> bool({check})
    True
"""


def _documented(scorer, doc):
    """Give a scorer instance its own docstring, which ``help(scorer)`` shows (pydoc
    documents an instance by its own ``__doc__`` when it differs from its class's)."""
    scorer.__doc__ = doc
    return scorer


_SCORER_USE = """
    Use it as ``scoring=`` of GridSearchCV, cross_validate or cross_val_score, or call it
    as ``scorer(estimator, X, y)``. ``y`` holds class labels for ID rows and OOD_LABEL
    (-1; ``'-1'`` among string labels) for OOD rows; every test fold needs both, or the
    scorer raises a ValueError (pass ``error_score='raise'`` to GridSearchCV so that the
    error is not turned into a NaN score)."""

fpr95_scorer = _documented(make_ood_scorer("fpr", tpr=0.95), """\
Scorer of -FPR95 on ``estimator.score_samples(X)``: greater is better.

    FPR95 (:func:`fpr_at_tpr` with ``tpr=0.95``, ID positive) is the fraction of OOD rows
    accepted at the largest threshold that accepts 95 % of the ID rows; the scorer returns
    its negative, so that GridSearchCV maximises it. Select the parameters that change
    the ranking of the scores with it (``beta``, ``temperature``, ``n``...).
""" + _SCORER_USE + """

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import GridSearchCV, StratifiedKFold
    >>> from sklearn_reclag import EnergyDetector
    >>> from sklearn_reclag.metrics import fpr95_scorer
    >>> from sklearn_reclag.model_selection import make_ood_dataset
    >>> X, y = load_digits(return_X_y=True)
    >>> X_cv, y_cv = make_ood_dataset(X[y < 5] / 16, y[y < 5], X[y >= 5] / 16)
    >>> search = GridSearchCV(EnergyDetector(device="cpu"), {"temperature": [0.5, 1.0]},
    ...                       scoring=fpr95_scorer, error_score="raise",
    ...                       cv=StratifiedKFold(3, shuffle=True, random_state=0))
    >>> bool(-1 <= search.fit(X_cv, y_cv).best_score_ <= 0)
    True
""")

ood_auroc_scorer = _documented(make_ood_scorer("auroc"), """\
Scorer of the OOD AUROC (ID positive) on ``estimator.score_samples(X)``.

    :func:`ood_auroc`: the probability that an ID row scores higher than an OOD row
    (ties count one half); greater is better. A threshold-free alternative to
    :data:`fpr95_scorer` for the parameters that change the ranking of the scores.
""" + _SCORER_USE + _scorer_example("ood_auroc_scorer", "0.5 < score <= 1"))


# ------------------------------------------------------- metrics of predict (the threshold)
def _accepted(y_true, y_pred):
    """``(is_id, accepted)`` boolean arrays from OOD labels and ``predict``'s +1 / -1."""
    if y_true is None:
        raise ValueError(
            "This OOD metric needs y_true: OOD_LABEL (-1) for OOD rows, class labels for "
            "ID rows."
        )
    is_id, y_pred = _check_inputs(y_true, y_pred)
    unexpected = np.setdiff1d(np.unique(y_pred), [-1, 1])
    if unexpected.size:
        raise ValueError(
            f"y_pred must hold +1 (ID) and -1 (OOD) as an OOD detector's predict returns; "
            f"got the values {unexpected[:5]}. For a classifier, select on its scores with "
            "fpr95_scorer instead."
        )
    return is_id, y_pred == 1


def tpr_at_threshold(y_true, y_pred):
    """Fraction of in-distribution rows that ``predict`` accepts (+1).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_pred : array-like of shape (n_samples,)
        +1 (accepted as ID) or -1 (rejected as OOD), as a detector's ``predict`` returns.

    Returns
    -------
    tpr : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import tpr_at_threshold
    >>> tpr_at_threshold([0, 1, 2, 3, -1], [1, 1, 1, -1, 1])
    0.75
    """
    is_id, accepted = _accepted(y_true, y_pred)
    return float(accepted[is_id].mean())


def fpr_at_threshold(y_true, y_pred):
    """Fraction of OOD rows that ``predict`` wrongly accepts (+1): lower is better.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_pred : array-like of shape (n_samples,)
        +1 (accepted as ID) or -1 (rejected as OOD), as a detector's ``predict`` returns.

    Returns
    -------
    fpr : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import fpr_at_threshold
    >>> fpr_at_threshold([0, 0, -1, -1], [1, 1, 1, -1])
    0.5
    """
    is_id, accepted = _accepted(y_true, y_pred)
    return float(accepted[~is_id].mean())


def ood_balanced_accuracy(y_true, y_pred):
    """Mean of the ID acceptance rate and the OOD rejection rate of ``predict``.

    ``(TPR + (1 - FPR)) / 2`` at the detector's fitted threshold: 1 for a perfect
    split, 0.5 for a detector that accepts (or rejects) everything, whatever the share of
    OOD rows. Unlike FPR95 or AUROC it depends on the threshold, so it is the criterion
    for ``gamma`` and ``contamination``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        OOD_LABEL (-1) for OOD rows, any other label for ID rows; or boolean "is ID".
    y_pred : array-like of shape (n_samples,)
        +1 (accepted as ID) or -1 (rejected as OOD), as a detector's ``predict`` returns.

    Returns
    -------
    balanced_accuracy : float

    Examples
    --------
    >>> from sklearn_reclag.metrics import ood_balanced_accuracy
    >>> ood_balanced_accuracy([0, 0, -1, -1], [1, 1, 1, -1])
    0.75
    """
    is_id, accepted = _accepted(y_true, y_pred)
    return float((accepted[is_id].mean() + (~accepted[~is_id]).mean()) / 2)


_THRESHOLD_SCORER_USE = """
    It reads ``estimator.predict(X)`` (+1 accepted, -1 rejected), so it depends on the
    fitted threshold ``offset_``: the criterion for ``contamination`` and RecLag's
    ``gamma``, which leave FPR95 and AUROC flat. ``y`` as for :data:`fpr95_scorer`: class
    labels for ID rows, OOD_LABEL (-1; ``'-1'`` among string labels) for OOD rows."""

ood_balanced_accuracy_scorer = _documented(make_scorer(ood_balanced_accuracy), """\
Scorer of :func:`ood_balanced_accuracy` on ``estimator.predict(X)``: greater is better.

    ``(TPR + 1 - FPR) / 2`` at the detector's threshold: the mean of the ID acceptance
    rate and the OOD rejection rate.
""" + _THRESHOLD_SCORER_USE + _scorer_example("ood_balanced_accuracy_scorer",
                                              "0.5 < score <= 1"))

fpr_at_threshold_scorer = _documented(
    make_scorer(fpr_at_threshold, greater_is_better=False), """\
Scorer of ``-fpr_at_threshold`` on ``estimator.predict(X)``: greater is better.

    The fraction of OOD rows that ``predict`` accepts, negated. Report it next to
    :data:`tpr_at_threshold_scorer` in a multi-metric ``scoring`` dict; do not select on
    it alone (rejecting every row minimises it).
""" + _THRESHOLD_SCORER_USE + _scorer_example("fpr_at_threshold_scorer", "-1 <= score <= 0"))

tpr_at_threshold_scorer = _documented(make_scorer(tpr_at_threshold), """\
Scorer of :func:`tpr_at_threshold` on ``estimator.predict(X)``: greater is better.

    The fraction of ID rows that ``predict`` accepts. Report it, do not select on it
    alone (accepting every row maximises it).
""" + _THRESHOLD_SCORER_USE + _scorer_example("tpr_at_threshold_scorer", "0.9 < score <= 1"))

# The scorers' docstrings hold examples too: doctest runs the strings listed here.
__test__ = {
    name: scorer.__doc__
    for name, scorer in [
        ("fpr95_scorer", fpr95_scorer),
        ("ood_auroc_scorer", ood_auroc_scorer),
        ("ood_balanced_accuracy_scorer", ood_balanced_accuracy_scorer),
        ("fpr_at_threshold_scorer", fpr_at_threshold_scorer),
        ("tpr_at_threshold_scorer", tpr_at_threshold_scorer),
    ]
}
