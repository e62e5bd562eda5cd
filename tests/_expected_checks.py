"""The scikit-learn estimator checks that cannot apply to an estimator, with the reasons.

``expected_failed_checks(estimator)`` gives them for any estimator of the suite (or a
Pipeline ending in one), for ``parametrize_with_checks``.
"""

import copy

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from sklearn_reclag import (
    ASHDetector,
    AutoOODDetector,
    DenseAssociativeMemory,
    DensePolynomialHopfield,
    EnergyDetector,
    FDBDDetector,
    GENDetector,
    HopfieldBoostingDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    MSPDetector,
    NCIDetector,
    NNGuideDetector,
    ReActDetector,
    RMDSDetector,
    SCALEDetector,
    TorchFeatureExtractor,
    ViMDetector,
)

HELD_OUT_THRESHOLD = (
    "checks that predict on the training rows rejects exactly `contamination` of them (the "
    "outlier-detection reading of contamination); the suite's detectors are novelty "
    "detectors whose threshold is set from held-out scores of the training rows "
    "(cross-fitted, or leave-one-out when they store the rows) so that it holds on new "
    "rows: on the training rows themselves, which the detector learned from, predict "
    "rejects fewer"
)

HELD_OUT_FIT_PREDICT = (
    "checks that fit_predict(X) equals fit(X).predict(X); the suite's fit_predict labels "
    "each training row by its held-out score (a 5-fold cross-fit), so that it flags about "
    "`contamination` of X (test_fit_predict.py), while predict scores the rows with the "
    "final fit, which learned from them and rejects fewer; where the two happen to agree "
    "on the check's blobs the check passes"
)

HELD_OUT_THRESHOLD_CHECKS = {
    "check_outliers_train": HELD_OUT_THRESHOLD,
    "check_outliers_fit_predict": HELD_OUT_FIT_PREDICT,
}

# HeldOutThreshold's fit_predict is scikit-learn's fit(X).predict(X): its detector learned
# from most of X, so both read fewer than `contamination` of X as outliers.
HELD_OUT_THRESHOLD_META_CHECKS = dict.fromkeys(
    ["check_outliers_train", "check_outliers_fit_predict"], HELD_OUT_THRESHOLD)

_NEEDS_LABELS = (
    "fits on X alone, without y; the detector needs class labels to fit its head (or a "
    "fitted head), so it raises the documented 'requires y' error (given a fitted head it "
    "passes the check: test_baselines.py, test_vim.py, test_leaderboard.py)"
)

_NEEDS_CLASSES = (
    "fits on X alone, without y; RMDS compares class-conditional Gaussians with one "
    "Gaussian of all the rows, which needs class labels, so it raises the documented "
    "'requires y' error (test_leaderboard.py)"
)

_TRAIN_ROWS_OWN_NEIGHBOURS = (
    "checks that predict rejects `contamination` of the training rows; the threshold is "
    "the contamination quantile of leave-one-out scores, so new rows from the training "
    "distribution are rejected at that rate (test_knn.py); each training row is its own "
    "nearest neighbour, so fewer training rows are rejected"
)

_OOD_LABEL_IN_BINARY_CLASSES = (
    "its last problem labels the binary classes -1 and 1; by the project's OOD_LABEL "
    "convention fit ignores rows labelled -1 (they are OOD rows in a CV split), which "
    "leaves one class and the documented 'at least 2 classes' error"
)

# DenseAssociativeMemory refuses data outside [-1, 1] with a ValueError; the checks' data
# (blobs, random normals) mostly lies outside it. They all run on
# Pipeline(MinMaxScaler(feature_range=(-1, 1), clip=True), memory) instead.
_OUTSIDE_UNIT_RANGE = (
    "the check's data lies outside [-1, 1], which the memory refuses (the check passes on "
    "a MinMaxScaler(feature_range=(-1, 1), clip=True) pipeline)"
)
_NEEDS_UNIT_RANGE = [
    "check_estimators_dtypes", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_pipeline_consistency",
    "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_transformer_data_not_an_array",
    "check_transformer_general", "check_transformer_preserve_dtypes",
    "check_transformer_n_iter", "check_outliers_fit_predict", "check_outliers_train",
    "check_classifier_data_not_an_array", "check_non_transformer_estimators_n_iter",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_dont_overwrite_parameters", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_empty_data",
    "check_set_output_transform", "check_global_output_transform_pandas",
    "check_global_set_output_transform_polars", "check_set_output_transform_pandas",
    "check_set_output_transform_polars",
]
_TIED_TRAINING_SCORES = (
    "its blobs give the rows far from every memory an energy of exactly 0, so many "
    "training scores tie at the threshold; the threshold is kept off tied training scores "
    "(predict accepts them all, with a warning), so predict cannot reject `contamination` "
    "of the training rows, which the check expects"
)
_MEMORY_PIPELINE = {
    "check_estimators_overwrite_params": "Pipeline's own `steps` parameter holds the fitted "
    "step objects; scikit-learn does not run this check on Pipelines either",
    "check_dont_overwrite_parameters": "the same: Pipeline fits the estimators in `steps`",
    "check_outliers_train": _TIED_TRAINING_SCORES,
    "check_outliers_fit_predict": _TIED_TRAINING_SCORES,
}

_TORCH_MODULE_HASH = (
    "joblib.hash of a torch module differs from the hash of its deepcopy (tensor pickles "
    "record storage identity), so the check reports a change even when nothing changed; "
    "test_features.py's test_module_weights_modes_and_hooks_are_left_as_they_were checks "
    "the property directly"
)


_PARTIAL_FIT_NEEDS_HEAD = (
    "calls partial_fit(X, y) with y of three classes; HopfieldEnergyDetector.partial_fit "
    "appends stored patterns, which with head=None and several classes are the rows a "
    "head fitted on all the rows classifies right, so it raises the documented "
    "NotImplementedError (pass a fitted head). Without y, or with a fitted head, it "
    "passes both properties: test_partial_fit.py::"
    "test_hopfield_energy_partial_fit_checks_features_and_takes_y"
)


_NEEDS_OUTLIERS = (
    "fits without `outliers`, which HopfieldBoostingDetector.fit requires (it raises the "
    "documented 'requires outliers' error: scikit-learn's checks pass no fit metadata); "
    "every check runs on HopfieldBoostingWithNoiseOutliers, which passes noise rows"
)


# The checks that fit the estimator (measured: all but the 14 that only construct,
# clone, set parameters or call an unfitted estimator).
FITTING_CHECKS = [
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_complex_data",
    "check_dtype_object", "check_estimators_empty_data_messages",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimator_sparse_tag",
    "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_outliers_fit_predict", "check_outliers_train",
    "check_classifier_data_not_an_array", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d",
]


class HopfieldBoostingWithNoiseOutliers(HopfieldBoostingDetector):
    """HopfieldBoostingDetector as scikit-learn's checks can fit it, for the tests only.

    ``fit(X, y)`` without ``outliers`` passes 20 rows of seeded standard Gaussian noise of
    X's width: they depend on nothing but that width, so a fit is deterministic and the
    same with or without OOD_LABEL rows in X. An X that is not two-dimensional goes on
    as the outliers too, so that X's own validation reports what is wrong with it.
    """

    def fit(self, X, y=None, *, outliers=None):
        if outliers is None:
            shape = np.asarray(X).shape  # a sparse X gives shape (): passed on
            outliers = (X if len(shape) != 2 else
                        np.random.default_rng(0).normal(size=(20, shape[1])))
        return super().fit(X, y, outliers=outliers)


# scikit-learn compares a method's output on a whole array with its output on subsets (and on
# a permutation) at an absolute 1e-7 (1e-9): float64 rounding.
FLOAT32_BATCH_CHECKS = ["check_methods_subset_invariance", "check_methods_sample_order_invariance"]
_FLOAT32_BATCH = (
    "the estimator computes in float32 (the suite's default dtype): a row's output comes from "
    "matrix products whose rounding depends on the BLAS kernel, which the library picks by "
    "the number of rows multiplied together, so the same row differs between batches by a "
    "few float32 units in the last place of the products (1.2e-7 to 2.7e-5 measured on an "
    "Intel Xeon), above the check's float64 tolerance. The check runs on the float64 twin of "
    "this estimator, where it holds (test_common.py::"
    "test_sklearn_batch_invariance_checks_hold_in_float64), and test_common.py::"
    "test_float32_outputs_agree_across_batches checks the float32 property at a tolerance "
    "derived from float32's epsilon and the outputs' scale"
)


def computes_in_float32(estimator):
    """Whether ``estimator`` (or a Pipeline's last step) computes in float32."""
    last = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(last, AutoOODDetector):  # scores with the candidate it chooses
        return any(computes_in_float32(candidate) for candidate in last.candidates)
    return getattr(last, "dtype", "float32") == "float32"


def float64_twin(estimator):
    """A copy of ``estimator`` that computes in float64 (the last step of a Pipeline)."""
    twin = clone(estimator)
    last = twin[-1] if isinstance(twin, Pipeline) else twin
    last.set_params(dtype="float64")
    if isinstance(last, TorchFeatureExtractor):
        last.set_params(module=copy.deepcopy(last.module).double())
    return twin


def expected_failed_checks(estimator):
    """The checks that cannot apply to ``estimator``, by check name, with the reason."""
    checks = {}
    if computes_in_float32(estimator):
        checks.update(dict.fromkeys(FLOAT32_BATCH_CHECKS, _FLOAT32_BATCH))
    # A reason of the estimator's own comes first: the check cannot apply in float64 either.
    checks.update(own_expected_failed_checks(estimator))
    return checks


def own_expected_failed_checks(estimator):
    """The checks that cannot apply to ``estimator`` whatever its dtype."""
    if isinstance(estimator, Pipeline):
        if isinstance(estimator[-1], DenseAssociativeMemory):
            return _MEMORY_PIPELINE
        return {}
    if isinstance(estimator, (MSPDetector, EnergyDetector, ReActDetector, ViMDetector,
                              NNGuideDetector, SCALEDetector, ASHDetector, GENDetector,
                              FDBDDetector, NCIDetector)):
        return dict.fromkeys(["check_outliers_train", "check_outliers_fit_predict"],
                             _NEEDS_LABELS)
    if isinstance(estimator, RMDSDetector):
        return dict.fromkeys(["check_outliers_train", "check_outliers_fit_predict"],
                             _NEEDS_CLASSES)
    if type(estimator) is HopfieldBoostingDetector:
        return dict.fromkeys(FITTING_CHECKS, _NEEDS_OUTLIERS)
    if isinstance(estimator, HopfieldBoostingWithNoiseOutliers):
        # Its leave-one-out threshold rejects `contamination` of the checks' training rows
        # too (measured): every check applies.
        return {}
    if isinstance(estimator, KNNDetector):
        return dict.fromkeys(["check_outliers_train", "check_outliers_fit_predict"],
                             _TRAIN_ROWS_OWN_NEIGHBOURS)
    if isinstance(estimator, DensePolynomialHopfield):
        return {"check_classifiers_classes": _OOD_LABEL_IN_BINARY_CLASSES}
    if isinstance(estimator, DenseAssociativeMemory):
        return dict.fromkeys(_NEEDS_UNIT_RANGE, _OUTSIDE_UNIT_RANGE)
    if isinstance(estimator, TorchFeatureExtractor):
        return {"check_estimators_overwrite_params": _TORCH_MODULE_HASH}
    if isinstance(estimator, HopfieldEnergyDetector) and estimator.head is None:
        return {**HELD_OUT_THRESHOLD_CHECKS,
                **dict.fromkeys(["check_fit_score_takes_y",
                                 "check_n_features_in_after_fitting"], _PARTIAL_FIT_NEEDS_HEAD)}
    # The memory-bank detectors (HE, SHE, RecLag) and Mahalanobis.
    return HELD_OUT_THRESHOLD_CHECKS
