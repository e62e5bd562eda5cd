"""Thresholds read from held-out in-distribution rows.

Every detector of the suite sets ``offset_`` itself, from held-out scores of its training
rows (a cross-fit, or leave-one-out scores for the detectors that store the rows). That
works when the training rows are a fair sample of the rows the detector will meet. It
cannot see that the *features* themselves are optimistic on the training rows, as a
network's penultimate layer is on the images it was trained on: there the threshold must
come from in-distribution rows that neither the network nor the detector has seen.
:class:`HeldOutThreshold` reads it from such rows, in the way scikit-learn's
:class:`~sklearn.model_selection.FixedThresholdClassifier` and
:class:`~sklearn.model_selection.TunedThresholdClassifierCV` set a classifier's
threshold.
"""

import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OutlierMixin, _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._labels import drop_ood_rows
from .base import ThresholdedScoresMixin, quantile_off_ties

__all__ = ["HeldOutThreshold"]


class HeldOutThreshold(ThresholdedScoresMixin, OutlierMixin, MetaEstimatorMixin, BaseEstimator):
    """A detector whose threshold is read from in-distribution rows it did not learn from.

    Two ways to use it:

    * **A fitted detector, frozen**: ``HeldOutThreshold(FrozenEstimator(detector))``.
      ``fit(X_held_out)`` fits nothing: every row of ``X_held_out`` (in-distribution rows
      the detector, and the network that made the features, never saw) sets the
      threshold.
    * **An unfitted detector**: ``fit(X, y)`` holds out ``held_out_size`` of the
      in-distribution rows (stratified by class when ``y`` is given), fits a clone of the
      detector on the rest and reads the threshold from the held-out part.

    The threshold is the ``contamination`` quantile of the held-out rows' scores, so that
    ``predict`` accepts ``1 - contamination`` of new in-distribution rows. It replaces
    the detector's own ``offset_``; the scores are the detector's.

    Parameters
    ----------
    estimator : estimator object
        An OOD detector with ``score_samples`` (higher = more in-distribution): any of the
        suite's detectors, a Pipeline ending in one, or a
        :class:`~sklearn.frozen.FrozenEstimator` wrapping a fitted one.
    contamination : float in (0, 0.5], default=0.05
        Fraction of in-distribution rows that ``predict`` rejects.
    held_out_size : float in (0, 1), default=0.2
        Fraction of the in-distribution rows of ``fit`` held out to set the threshold,
        when ``estimator`` is not frozen. Ignored for a frozen one.
    random_state : int, RandomState instance or None, default=None
        Seeds the held-out split.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted detector (the frozen one itself, or the clone fitted on the rows not
        held out).
    offset_ : float
        The threshold: ``decision_function = score_samples - offset_``.
    n_features_in_ : int
        Number of features seen during fit.

    See Also
    --------
    sklearn.model_selection.FixedThresholdClassifier : the classifier analogue.

    Notes
    -----
    Rows labelled :data:`~sklearn_reclag.OOD_LABEL` (-1) in ``y`` are dropped from both
    the fit and the held-out rows, as the detectors' ``fit`` drops them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn_reclag import MahalanobisDetector
    >>> from sklearn_reclag.calibration import HeldOutThreshold
    >>> rng = np.random.default_rng(0)
    >>> X_train, X_held_out = rng.normal(size=(200, 3)), rng.normal(size=(1000, 3))
    >>> detector = MahalanobisDetector(device="cpu").fit(X_train)
    >>> held_out = HeldOutThreshold(FrozenEstimator(detector), contamination=0.1)
    >>> held_out = held_out.fit(X_held_out)
    >>> float(np.mean(held_out.predict(X_held_out) == 1))
    0.9
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "score_samples"])],
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "held_out_size": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, contamination=0.05, held_out_size=0.2,
                 random_state=None):
        self.estimator = estimator
        self.contamination = contamination
        self.held_out_size = held_out_size
        self.random_state = random_state

    # Not skipping nested validation: the detector validates its own parameters in fit.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **fit_params):
        """Fit the detector (unless frozen) and read the threshold from held-out rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In-distribution rows: all of them held out for a frozen detector, otherwise
            split into rows to fit and rows held out.
        y : array-like of shape (n_samples,), default=None
            Class labels, passed to the detector's fit and used to stratify the split.
            Rows labelled ``OOD_LABEL`` are dropped.
        **fit_params : dict
            Passed to the detector's ``fit``.

        Returns
        -------
        self : object
            The fitted meta-estimator.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if y is not None:
            y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
            X, y = drop_ood_rows(X, y)
            # A None among the labels would reach numpy's sort in the stratified split as
            # a TypeError; scikit-learn's classifiers refuse it with this ValueError.
            check_classification_targets(y)
        if isinstance(self.estimator, FrozenEstimator):
            self.estimator_ = self.estimator
            X_held_out = X
        else:
            X_fit, X_held_out, y_fit = self._split(X, y)
            self.estimator_ = clone(self.estimator).fit(X_fit, y_fit, **fit_params)
        scores = np.asarray(self.estimator_.score_samples(X_held_out), dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError(
                f"The detector's scores of {int(np.sum(~np.isfinite(scores)))} held-out rows "
                "are not finite: no threshold can be read from them."
            )
        self._warn_if_few_held_out_rows(len(scores))
        dtype = getattr(self.estimator_, "dtype", "float32")
        self.offset_ = quantile_off_ties(scores, self.contamination,
                                         dtype if dtype in ("float32", "float64") else
                                         "float32")
        return self

    def _warn_if_few_held_out_rows(self, n_held_out):
        """Warn when too few held-out rows make the acceptance rate of new rows noisy.

        The threshold is the ``contamination`` quantile of m held-out scores, and the
        fraction of new rows it accepts has a standard error of about ``sqrt(c (1 - c) /
        m)``: beyond 4 points (the suite's promise, see ``base.THRESHOLD_ROWS``) from
        fewer than 30 rows at c = 0.05. From one row, new rows were accepted at 22 %
        (95 % asked).
        """
        c = self.contamination
        error = np.sqrt(c * (1 - c) / n_held_out)
        if error > 0.04:
            needed = int(np.ceil(c * (1 - c) / 0.04**2 - 1e-9))  # 100, not 100.000...1
            advice = ("pass more held-out rows" if isinstance(self.estimator, FrozenEstimator)
                      else "raise held_out_size or pass more rows")
            warnings.warn(
                f"HeldOutThreshold reads the threshold from {n_held_out} held-out rows: the "
                f"fraction of new rows that predict accepts has a standard error of "
                f"{error:.1%} around 1 - contamination = {1 - c:.0%}. At least {needed} "
                f"held-out rows keep it within 4 points: {advice}.",
                UserWarning,
                stacklevel=4,  # the caller of fit (through _fit_context)
            )

    def _split(self, X, y):
        """The rows to fit on, the rows held out, and the labels of the former."""
        n_held_out = int(np.ceil(self.held_out_size * len(X)))
        if n_held_out < 1 or n_held_out >= len(X):
            raise ValueError(
                f"held_out_size={self.held_out_size} of n_samples = {len(X)} in-distribution "
                "rows leaves no row to fit on or none to hold out."
            )
        stratify = None
        if y is not None:
            _, counts = np.unique(y, return_counts=True)
            # Stratify when every class can be split; a class with one row cannot.
            stratify = y if counts.min() >= 2 and n_held_out >= len(counts) else None
        if y is None:
            X_fit, X_held_out = train_test_split(
                X, test_size=self.held_out_size, random_state=self.random_state)
            return X_fit, X_held_out, None
        X_fit, X_held_out, y_fit, _ = train_test_split(
            X, y, test_size=self.held_out_size, stratify=stratify,
            random_state=self.random_state)
        return X_fit, X_held_out, y_fit

    def score_samples(self, X):
        """The detector's scores: higher means more in-distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        # The feature names and count fit saw, checked as scikit-learn checks them
        # (renamed or reordered columns raise, an array after a DataFrame warns); the
        # detector gets an array, as in fit.
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.score_samples(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.target_tags.required = inner.target_tags.required
        return tags
