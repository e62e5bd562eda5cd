"""The default threshold holds on new rows: offset_ comes from held-out training scores.

A detector that learned from the training rows scores them higher than new rows, so a
threshold read from their own scores rejects more than `contamination` of new rows.
The suite's detectors read it from cross-fitted scores (a fold scored by the detector
fitted on the other four of 5 folds, with the final fit's head) or, when they store the
rows or sums over them, from leave-one-out scores; the logit detectors keep the training
rows' own scores (a given head learned nothing from X, and a head fitted on fewer rows
would score on another scale). At most THRESHOLD_ROWS rows are scored.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf
from sklearn.linear_model import LogisticRegression

from sklearn_reclag import (
    EnergyDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
    RecLagDetector,
)
from sklearn_reclag.base import THRESHOLD_ROWS, held_out_folds, row_keys, threshold_rows


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
    # A covariance estimator given as an object has no closed-form downdate.
    "Mahalanobis (given estimator)": MahalanobisDetector(
        covariance=EmpiricalCovariance(), device="cpu", dtype="float64"),
    "RecLag (em)": RecLagDetector(solver="em", energy="density", beta=0.5, device="cpu",
                                  dtype="float64", random_state=0),
    # SHE's class means are left out exactly (tests/test_partial_fit.py); through a
    # learned whitening they are cross-fitted.
    "SHE (whitened)": HopfieldEnergyDetector(patterns="mean", metric="mahalanobis",
                                             device="cpu", dtype="float64"),
}


@pytest.mark.parametrize("name", list(CROSS_FITTED))
@pytest.mark.parametrize("labelled", [True, False])
def test_offset_is_the_quantile_of_cross_fitted_scores(gaussians, name, labelled):
    X, y, _, _ = gaussians
    detector = CROSS_FITTED[name]
    if not labelled:
        y = None
    fitted = clone(detector).set_params(contamination=0.1).fit(X, y)
    # The folds keep the final fit's head (a fitted softmax regression is not refitted).
    head = getattr(fitted, "head_coef_", None)
    fold_params = {} if head is None else {"head": (head, fitted.head_intercept_)}
    # The folds of held_out_folds: stratified, dealt in the order of the rows' keys.
    folds = held_out_folds(row_keys(X, y, dtype="float64"), y)
    held_out = np.empty(len(X))
    for index in range(5):
        train, test = np.flatnonzero(folds != index), np.flatnonzero(folds == index)
        fold = clone(detector).set_params(**fold_params)
        fold.fit(X[train], None if y is None else y[train])
        held_out[test] = fold.score_samples(X[test])
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
    folds = held_out_folds(row_keys(X, dtype="float64"))
    for index in range(5):
        train, test = np.flatnonzero(folds != index), np.flatnonzero(folds == index)
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
        # The rows of threshold_rows (1,000 of the 1,200).
        scores = detector.score_samples(
            X[threshold_rows(len(X), row_keys(X, y, dtype="float64"))])
        assert detector.offset_ == pytest.approx(np.percentile(scores, 5), rel=1e-12)


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


def _numpy_mahalanobis_scores(X_fit, y_fit, X, shrinkage=0.0, mu=None):
    """-1/2 min_c (x - mu_c)^T Sigma^+ (x - mu_c) in numpy, with Sigma = (1 - s) C + s mu I
    (C the empirical covariance of the class-centred rows; mu its mean variance unless
    given)."""
    classes = np.unique(y_fit)
    means = np.array([X_fit[y_fit == c].mean(axis=0) for c in classes])
    centred = X_fit - means[np.searchsorted(classes, y_fit)]
    empirical = centred.T @ centred / len(X_fit)
    mu = np.trace(empirical) / len(empirical) if mu is None else mu
    sigma = (1 - shrinkage) * empirical + shrinkage * mu * np.eye(len(empirical))
    precision = np.linalg.pinv(sigma, hermitian=True)
    diffs = X[:, None, :] - means[None]
    return -0.5 * np.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(axis=1)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "oas"])
def test_mahalanobis_offset_is_the_quantile_of_exact_leave_one_out_scores(gaussians,
                                                                         covariance):
    """The empirical covariance and the means are sums over rows: fit downdates them in
    closed form (Sherman-Morrison), which equals refitting without each row; a shrunk
    covariance keeps the final fit's shrinkage and mean variance, as a fold keeps a
    fitted beta."""
    X, y, _, _ = gaussians
    X, y = X[::8], y[::8]  # 150 rows: a refit per row stays cheap
    detector = MahalanobisDetector(covariance=covariance, contamination=0.1, device="cpu",
                                   dtype="float64").fit(X, y)
    estimator = {"ledoit_wolf": LedoitWolf, "oas": OAS}.get(covariance)
    if estimator is None:
        shrinkage = 0.0
    else:
        centred = X - np.array([X[y == c].mean(axis=0) for c in (0, 1)])[y]
        shrinkage = estimator(assume_centered=True).fit(centred).shrinkage_
    mu = np.trace(detector.covariance_) / X.shape[1]
    rows = np.arange(len(X))
    loo = np.array([_numpy_mahalanobis_scores(X[rows != i], y[rows != i], X[i:i + 1],
                                              shrinkage, mu)[0] for i in rows])
    assert detector.offset_ == pytest.approx(np.percentile(loo, 10), rel=1e-9)


def test_mahalanobis_closed_form_handles_a_class_of_one_row():
    """A class of one row leaves with the row: the row is scored against the others."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(41, 3))
    y = np.r_[np.zeros(40, dtype=int), 1]
    detector = MahalanobisDetector(covariance="empirical", normalize=False, device="cpu",
                                   dtype="float64").fit(X, y)
    loo = detector._leave_one_out_scores(X, y, 0.0)
    assert np.isfinite(loo).all()
    assert loo[-1] == pytest.approx(_numpy_mahalanobis_scores(X[:-1], y[:-1], X[-1:])[0],
                                    rel=1e-9)


def _count_fits(monkeypatch, cls):
    calls = []
    real = cls._fit

    def counted(self, X, y):
        calls.append(len(X))
        return real(self, X, y)

    monkeypatch.setattr(cls, "_fit", counted)
    return calls


@pytest.mark.parametrize("n_samples, n_fits", [(800, 6), (2000, 4), (6000, 2)])
def test_cross_fit_fits_only_the_folds_the_threshold_needs(monkeypatch, n_samples, n_fits):
    """Folds are fitted until THRESHOLD_ROWS rows have held-out scores: all 5 on small
    data, one on 5 x THRESHOLD_ROWS rows and more (the final fit is the first call)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, 4))
    calls = _count_fits(monkeypatch, MahalanobisDetector)
    MahalanobisDetector(covariance=EmpiricalCovariance(), device="cpu").fit(X)
    assert len(calls) == n_fits
    assert calls[0] == n_samples and all(n < n_samples for n in calls[1:])


@pytest.mark.parametrize("detector", [
    MahalanobisDetector(device="cpu"),
    HopfieldEnergyDetector(patterns="all", metric="euclidean", device="cpu"),
    KNNDetector(device="cpu"),
    MSPDetector(device="cpu"),
], ids=lambda detector: type(detector).__name__)
def test_threshold_scores_at_most_threshold_rows(monkeypatch, detector):
    """Leave-one-out and own-score thresholds score THRESHOLD_ROWS training rows, not
    all of them, and fit nothing again: the fit stays linear in the rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3 * THRESHOLD_ROWS, 4))
    y = (X[:, 0] > 0).astype(int)
    calls = _count_fits(monkeypatch, type(detector))
    scored = []
    real = type(detector)._fit_offset

    def spy(self, training_scores):
        scores = training_scores()
        scored.append(len(scores))
        return real(self, lambda: scores)

    monkeypatch.setattr(type(detector), "_fit_offset", spy)
    clone(detector).fit(X, y)
    assert scored == [THRESHOLD_ROWS] and len(calls) == 1


def test_threshold_rows_are_a_fixed_draw():
    assert np.array_equal(threshold_rows(500), np.arange(500))
    rows = threshold_rows(10 * THRESHOLD_ROWS)
    assert len(rows) == THRESHOLD_ROWS == len(np.unique(rows))
    assert np.all(np.diff(rows) > 0) and np.array_equal(rows, threshold_rows(10 * THRESHOLD_ROWS))
