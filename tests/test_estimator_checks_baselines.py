"""scikit-learn's estimator checks for the logit baselines.

The baselines read a linear head; without a head they fit one on (X, y), so they cannot be
fitted on X alone. scikit-learn's outlier-detector checks fit on X alone: those are the
checks that cannot apply, listed here with that reason. A baseline given a fitted head
passes them (test_fitted_head_baselines_pass_outlier_checks).
"""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import (
    check_outliers_fit_predict,
    check_outliers_train,
    parametrize_with_checks,
)

from sklearn_reclag import EnergyDetector, MSPDetector, ReActDetector

_NEEDS_LABELS = (
    "fits on X alone, without y; the detector needs class labels to fit its head "
    "(or a fitted head), so it raises the documented 'requires y' error"
)


def _expected_failed_checks(estimator):
    return {
        "check_outliers_train": _NEEDS_LABELS,
        "check_outliers_fit_predict": _NEEDS_LABELS,
    }


@parametrize_with_checks(
    [MSPDetector(device="cpu"), EnergyDetector(device="cpu"), ReActDetector(device="cpu")],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


class _HeadFor2Features:
    """A fitted linear classifier over the 2 features of sklearn's outlier checks."""

    coef_ = np.array([[1.0, -0.5], [-0.3, 0.8], [0.2, 0.1]])
    intercept_ = np.array([0.1, -0.2, 0.0])
    classes_ = np.array([0, 1, 2])


@pytest.mark.parametrize("Detector", [MSPDetector, EnergyDetector, ReActDetector])
def test_fitted_head_baselines_pass_outlier_checks(Detector):
    estimator = Detector(head=_HeadFor2Features(), device="cpu")
    check_outliers_train(Detector.__name__, estimator)
    check_outliers_fit_predict(Detector.__name__, estimator)
