"""The default threshold holds on new rows: offset_ comes from held-out training scores.

A detector that learned from the training rows scores them higher than new rows, so a
threshold read from their own scores rejects more than `contamination` of new rows.
The suite's detectors read it from cross-fitted scores (5 folds, each scored by the
detector fitted on the other four) or, when they store the rows, from leave-one-out
scores; the logit detectors keep the training rows' own scores (a given head learned
nothing from X, and a head fitted on fewer rows would score on another scale).
"""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from sklearn_reclag import (
    EnergyDetector,
    HopfieldEnergyDetector,
    MahalanobisDetector,
    MSPDetector,
    RecLagDetector,
)


@pytest.fixture(scope="module")
def gaussians():
    """Two correlated Gaussian classes in 12 dimensions, 600 training rows each (the 5 %
    quantile of 1200 scores has a standard error of 0.6 points), and a large sample of
    new rows from the same distribution."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12)) / 3
    centres = np.array([np.full(12, 2.0), np.full(12, -2.0)])

    def draw(n):
        y = np.repeat([0, 1], n // 2)
        return centres[y] + rng.normal(size=(n, 12)) @ mixing, y

    X, y = draw(1200)
    X_new, _ = draw(6000)
    head = LogisticRegression().fit(X, y)
    return X, y, X_new, head


CROSS_FITTED = {
    "Mahalanobis": MahalanobisDetector(device="cpu", dtype="float64"),
    "RecLag (em)": RecLagDetector(solver="em", energy="density", beta=0.5, device="cpu",
                                  dtype="float64", random_state=0),
    "SHE": HopfieldEnergyDetector(patterns="mean", device="cpu", dtype="float64"),
}


@pytest.mark.parametrize("name", list(CROSS_FITTED))
@pytest.mark.parametrize("labelled", [True, False])
def test_offset_is_the_quantile_of_cross_fitted_scores(gaussians, name, labelled):
    X, y, _, _ = gaussians
    detector = CROSS_FITTED[name]
    if not labelled:
        y = None
    splitter = (StratifiedKFold if labelled else KFold)(5, shuffle=True, random_state=0)
    held_out = np.empty(len(X))
    for train, test in splitter.split(X, y):
        fold = clone(detector).fit(X[train], None if y is None else y[train])
        held_out[test] = fold.score_samples(X[test])
    fitted = clone(detector).set_params(contamination=0.1).fit(X, y)
    # Capped at the rows' own scores.
    held_out = np.minimum(held_out, fitted.score_samples(X))
    assert fitted.offset_ == pytest.approx(np.percentile(held_out, 10), rel=1e-9)


def test_stored_rows_folds_count_each_pattern_for_the_missing_ones(gaussians):
    """HE with a learned whitening is cross-fitted; a fold's bank holds 4/5 of the
    patterns, so its log-sum-exp gets log(n_final / n_fold): the final model's scale."""
    X, _, _, _ = gaussians
    beta = 0.5
    detector = HopfieldEnergyDetector(beta=beta, energy="density", metric="mahalanobis",
                                      device="cpu", dtype="float64")
    held_out = np.empty(len(X))
    for train, test in KFold(5, shuffle=True, random_state=0).split(X):
        fold = clone(detector).fit(X[train])
        held_out[test] = fold.score_samples(X[test]) + np.log(len(X) / len(train)) / beta
    fitted = clone(detector).fit(X)
    held_out = np.minimum(held_out, fitted.score_samples(X))
    assert fitted.offset_ == pytest.approx(np.percentile(held_out, 5), rel=1e-9)


def test_folds_keep_the_fitted_beta(gaussians):
    """beta='auto' is derived once, from all rows: the folds score with the final beta_."""
    X, y, _, _ = gaussians
    auto = RecLagDetector(solver="em", energy="density", beta="auto", device="cpu",
                          dtype="float64", random_state=0).fit(X, y)
    fixed = RecLagDetector(solver="em", energy="density", beta=auto.beta_, device="cpu",
                           dtype="float64", random_state=0).fit(X, y)
    assert auto.offset_ == pytest.approx(fixed.offset_, rel=1e-12)


@pytest.mark.parametrize("given_head", [True, False])
def test_logit_detectors_keep_the_training_rows_own_scores(gaussians, given_head):
    """A given head learned nothing from X; a head fitted on X is not cross-fitted either
    (a softmax regression fitted on fewer rows has logits of another scale)."""
    X, y, _, head = gaussians
    for Detector in (MSPDetector, EnergyDetector):
        detector = Detector(head=head if given_head else None, device="cpu",
                            dtype="float64").fit(X, y)
        assert detector.offset_ == pytest.approx(
            np.percentile(detector.score_samples(X), 5), rel=1e-12)


@pytest.mark.parametrize("detector", [
    MahalanobisDetector(device="cpu"),
    MahalanobisDetector(covariance="ledoit_wolf", device="cpu"),
    HopfieldEnergyDetector(beta="auto", energy="density", device="cpu"),
    HopfieldEnergyDetector(beta="auto", energy="density", metric="mahalanobis", device="cpu"),
    RecLagDetector(solver="em", energy="density", beta="auto", device="cpu", random_state=0),
    EnergyDetector(device="cpu"),
], ids=lambda detector: repr(detector))
def test_new_rows_are_accepted_at_one_minus_contamination(gaussians, detector):
    """On 6000 new rows from the training distribution, predict accepts 95 % +- 2."""
    X, y, X_new, _ = gaussians
    accepted = np.mean(clone(detector).fit(X, y).predict(X_new) == 1)
    assert accepted == pytest.approx(0.95, abs=0.02)


def test_a_fold_that_cannot_be_fitted_falls_back_with_a_warning():
    """A class of 2 rows leaves a fold with 1 row of it, too few for a memory bank."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(42, 3))
    y = np.r_[np.zeros(40, dtype=int), 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: the least populated class
        with pytest.warns(UserWarning, match="cross-fit of the training rows failed"):
            HopfieldEnergyDetector(metric="mahalanobis", device="cpu").fit(X, y)
