"""Reasons for the scikit-learn estimator checks that cannot apply, shared by the tests."""

HELD_OUT_THRESHOLD = (
    "checks that predict on the training rows rejects exactly `contamination` of them (the "
    "outlier-detection reading of contamination); the suite's detectors are novelty "
    "detectors whose threshold is set from held-out scores of the training rows "
    "(cross-fitted, or leave-one-out when they store the rows) so that it holds on new "
    "rows: on the training rows themselves, which the detector learned from, predict "
    "rejects fewer"
)

HELD_OUT_THRESHOLD_CHECKS = {
    "check_outliers_train": HELD_OUT_THRESHOLD,
    "check_outliers_fit_predict": HELD_OUT_THRESHOLD,
}
