"""The detector base class: the API contract every detector of the suite follows.

A detector describes what it computes on one batch of feature rows (``_score_batch``) and what
it learns (``_fit``). This class does the rest once: validation, the OOD_LABEL convention,
the linear head, device handling, chunked scoring, the contamination offset and predict.
"""

import warnings
from abc import ABCMeta, abstractmethod
from functools import partial
from types import SimpleNamespace
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.exceptions import InconsistentVersionWarning as _SklearnVersionWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._labels import OOD_LABEL, drop_ood_rows, is_ood_label  # noqa: F401 (re-exported)
from ._backend import (
    as_tensor,
    check_value_range,
    iter_slices,
    loadable_device,
    map_batches,
    resolve_device,
    resolve_dtype,
    safe_max_abs,
    take_rows,
)

class InconsistentVersionWarning(_SklearnVersionWarning):
    """A pickled estimator was saved with another sklearn-reclag version.

    A subclass of scikit-learn's warning of the same name, so that a filter on
    scikit-learn's warning catches this one too.
    """

    def __init__(self, message):
        self.message = message

    def __str__(self):
        return self.message


class TorchEstimatorMixin:
    """What every torch estimator of the suite shares (detectors and classifiers).

    Batched evaluation: ``_batch_kwargs`` moves the fitted numpy arrays named in
    ``_tensor_attributes`` to ``device_`` once per call and gives :func:`map_batches`
    its arguments. Pickling: the pickled state records the sklearn-reclag version, and
    unpickling warns when it differs (as scikit-learn does for its own version). A model
    fitted on CUDA resumes on the CPU of a machine without one: fitted arrays are numpy,
    only ``device_`` moves.
    """

    # Names of fitted numpy attributes that the batched computations need as tensors.
    _tensor_attributes: tuple = ()
    # Those of them that the computations only read and that may be large (a bank of
    # training rows): on the CPU they are shared with torch, not copied once per call,
    # so scoring reads a bank on disk (an np.memmap) block by block.
    _shared_attributes: tuple = ()
    # Those of them that hold row indices: int64 tensors, not ``dtype``.
    _index_attributes: tuple = ()

    def _batch_kwargs(self, names=None):
        device = torch.device(self.device_)
        dtype = resolve_dtype(self.dtype)
        names = self._tensor_attributes if names is None else names
        return dict(
            batch_size=self._rows_per_chunk(device),
            device=device,
            dtype=dtype,
            state={name: _state_tensor(getattr(self, name), device, dtype,
                                       shared=name in self._shared_attributes,
                                       index=name in self._index_attributes)
                   for name in names},
            check_finite=device.type != "cpu",
            max_abs=safe_max_abs(dtype, self.n_features_in_),
        )

    def _rows_per_chunk(self, device):
        """``batch_size``, or for None the default of the device: 4096 rows on a CPU (a
        chunk of a few MiB stays in cache while it is sorted and multiplied; measured
        slower beyond 8192), 16384 on a GPU (fewer transfers and kernel launches)."""
        if self.batch_size is not None:
            return self.batch_size
        return 4096 if device.type == "cpu" else 16384

    def _validate_rows(self, X):
        """``validate_data`` for the rows to predict on (not in fit).

        NaN and infinity are refused where the rows are computed on: by scikit-learn on
        the host for the CPU; on a GPU by :func:`map_batches` (``check_finite``, set by
        ``_batch_kwargs``), on each chunk as it arrives, since a pass over X on the host
        would cost about as much as the GPU's whole scoring. Values too large for
        ``dtype`` (:func:`~sklearn_reclag._backend.safe_max_abs`) are refused there too,
        on every device.
        """
        on_host = torch.device(self.device_).type == "cpu"
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                             ensure_all_finite=on_host)

    def __getstate__(self):
        # A copy: on Python >= 3.11 scikit-learn's __getstate__ returns the instance's
        # own __dict__ for estimators outside sklearn, and writing to it would change
        # the estimator being saved.
        state = dict(super().__getstate__())
        state["_sklearn_reclag_version"] = _package_version()
        return state

    def __setstate__(self, state):
        saved = state.pop("_sklearn_reclag_version", None)
        if saved is not None and saved != _package_version():
            warnings.warn(
                f"This {type(self).__name__} was saved with sklearn-reclag {saved} and is "
                f"loaded with {_package_version()}; results may differ or break.",
                InconsistentVersionWarning,
                stacklevel=2,
            )
        if "device_" in state:
            state["device_"] = loadable_device(state["device_"])
        super().__setstate__(state)


# Folds of the cross-fit that gives held-out scores of the training rows.
_N_THRESHOLD_FOLDS = 5

# How many training rows' held-out scores the threshold is read from, at least where the
# data has them, and at most where they cost a search each (leave-one-out). The threshold
# is a quantile: from m scores the acceptance rate it gives new rows has a standard error
# of sqrt(q (1 - q) / m), 0.7 points at q = 0.05 and m = 1000, well inside the +-4 points
# the suite promises; more rows would cost more and buy little.
THRESHOLD_ROWS = 1000


def threshold_rows(n_samples, keys=None):
    """Indices of the training rows whose held-out scores set the threshold.

    With ``keys`` (:func:`row_keys` of the rows): one row per distinct key (copies of a
    row are one observation: their held-out scores are the same, and new rows have no
    copy in the training set), all of them up to :data:`THRESHOLD_ROWS`, else the
    :data:`THRESHOLD_ROWS` with the smallest keys: a pseudo-random sample that the rows'
    content fixes, so that the rows fitted in another order give the same rows, hence the
    same ``offset_``. Without: all rows up to :data:`THRESHOLD_ROWS`, else that many
    drawn at random by position (a fixed draw, so a fit is reproducible, but one that
    depends on the rows' order). In increasing order.
    """
    if keys is not None:
        _, first = np.unique(keys, return_index=True)  # in increasing order of key
        return np.sort(first[:THRESHOLD_ROWS])
    if n_samples <= THRESHOLD_ROWS:
        return np.arange(n_samples)
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n_samples, size=THRESHOLD_ROWS, replace=False))


# The seed of the fixed multipliers of row_keys: a key depends on the row alone, in every
# process and on every machine.
_ROW_KEY_SEED = 20231123
# Rows per chunk of row_keys: a few MiB of words at a time.
_ROW_KEY_CHUNK = 4096


def row_keys(X, y=None, *, dtype, codes=None):
    """A 64-bit key of each row's content and label: equal rows have equal keys.

    The row is cast to ``dtype`` (the detector's, so a float64 copy of float32 data has
    the keys of the data), -0.0 read as 0.0, and its bytes, as 64-bit words (32-bit for
    an odd number of float32 features), are each mixed by the finaliser of SplitMix64
    (Steele, Lea & Flood, OOPSLA 2014), combined as ``sum_j mix(w_j) a_j mod 2**64``
    with fixed random odd multipliers ``a_j``, and mixed again, so that the keys' order
    is a pseudo-random one.
    Distinct rows share a key with a probability of about ``2**-64`` per pair. A label,
    when given, is mixed in through its index among ``np.unique(y)``: the key of a row
    and its class. The key orders the rows by content, not by position: the threshold's
    rows (:func:`threshold_rows`) and the cross-fit's folds (:func:`held_out_folds`) are
    the same for the rows in any order. Costs one pass over X (an integer product).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,), default=None
    dtype : {'float32', 'float64'} or numpy dtype
    codes : ndarray of shape (n_samples,) of int, default=None
        The labels' indices among all the classes, where ``y`` is one chunk of the
        labels (``partial_fit``): the key of a row and its class then does not depend
        on which classes the chunk holds. Default: the indices in ``np.unique(y)``.

    Returns
    -------
    keys : ndarray of shape (n_samples,) of uint64
    """
    dtype = np.dtype(dtype)
    n_samples, n_features = X.shape
    word = np.dtype(np.uint64 if n_features * dtype.itemsize % 8 == 0 else np.uint32)
    n_words = n_features * dtype.itemsize // word.itemsize
    multipliers = np.random.default_rng(_ROW_KEY_SEED).integers(
        np.iinfo(np.uint64).max, size=n_words, dtype=np.uint64, endpoint=True) | np.uint64(1)
    keys = np.zeros(n_samples, dtype=np.uint64)
    for rows in iter_slices(n_samples, _ROW_KEY_CHUNK):
        # A fresh C-ordered copy in dtype (X is never written); + 0 turns -0.0 into 0.0,
        # whose bytes differ but whose value does not.
        block = np.array(X[rows], dtype=dtype, order="C")
        block += 0
        if n_words:
            # Each word mixed first: a plain weighted sum loses bits that only shift
            # words by a power of two (the sign bit of +-1 features: 2**63 * a is
            # 2**63 for any odd a, so bipolar rows got 2 keys in all). Integer
            # arithmetic wraps modulo 2**64, as the hash wants.
            words = _mix64(block.view(word).astype(np.uint64))
            keys[rows] = (words * multipliers).sum(axis=1, dtype=np.uint64)
    if y is not None or codes is not None:
        if codes is None:
            codes = np.unique(y, return_inverse=True)[1].reshape(-1)
        codes = np.asarray(codes).astype(np.uint64)
        keys += (codes + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return _mix64(keys)


def _mix64(h):
    """The finaliser of SplitMix64: every bit of the output depends on every input bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def held_out_folds(keys, y=None, n_splits=None):
    """The fold of each training row in the threshold's cross-fit, from the rows' content.

    Within each class (stratified, as :class:`~sklearn.model_selection.StratifiedKFold`),
    the distinct keys of :func:`row_keys`, in increasing order (a pseudo-random order
    fixed by the content), are dealt to the folds in turn, the count going on from one
    class to the next so that the folds stay balanced. So the folds do not depend on the
    order of the rows, and the copies of a row share its key, hence its fold (as with
    :class:`~sklearn.model_selection.GroupKFold`): a held-out row's copy is never among
    the rows its fold learned from.

    Returns
    -------
    folds : ndarray of shape (n_samples,) of int, in ``range(n_splits)``

    Raises
    ------
    ValueError
        If there are fewer distinct rows than folds.
    """
    n_splits = _N_THRESHOLD_FOLDS if n_splits is None else n_splits
    labels = (np.zeros(len(keys), dtype=np.intp) if y is None
              else np.unique(y, return_inverse=True)[1].reshape(-1))
    order = np.lexsort((keys, labels))
    sorted_keys, sorted_labels = keys[order], labels[order]
    new = np.ones(len(keys), dtype=bool)
    new[1:] = (sorted_keys[1:] != sorted_keys[:-1]) | (sorted_labels[1:] != sorted_labels[:-1])
    rank = np.cumsum(new) - 1
    if len(keys) == 0 or rank[-1] + 1 < n_splits:
        raise ValueError(
            f"Cannot have number of splits n_splits={n_splits} greater than the number "
            f"of distinct rows, {0 if len(keys) == 0 else rank[-1] + 1}."
        )
    folds = np.empty(len(keys), dtype=np.intp)
    folds[order] = rank % n_splits
    return folds


# A common offset of the rows that dwarfs their spread, |mean|^2 > _OFFSET_RATIO *
# E|x - mean|^2 (unnormalised features, a mean of 1e4): float32 expansions such as
# |v|^2 + |xi|^2 - 2 v.xi then cancel all but spread / |mean|^2 of their digits, and
# lbfgs fits a linear head on such rows badly. Below the ratio they lose fewer than
# about _OFFSET_RATIO units in the last place.
_OFFSET_RATIO = 100.0
# Rows per block of the passes over the training rows on the host (statistics, copies):
# 4,096 rows of 512 float64 features are 16 MiB, whatever the size of the bank.
_STATISTICS_BLOCK = 4096


def mean_and_spread(X, rows=None):
    """The rows' mean (float64) and their mean squared distance from it,
    ``E|x - mean|^2``, in two passes.

    In float64 a block of rows at a time: no float64 copy of X (twice a float32 bank)
    and none of X - mean; a memmap is read once per pass, block by block. With
    ``rows``, those of the rows ``X[rows]``, read in place
    (:func:`~sklearn_reclag._backend.take_rows`).
    """
    n_rows = len(X) if rows is None else len(rows)
    mean = np.zeros(X.shape[1])
    for block in iter_slices(n_rows, _STATISTICS_BLOCK):
        mean += np.asarray(take_rows(X, rows, block), dtype=np.float64).sum(axis=0)
    mean /= n_rows
    spread = 0.0
    for block in iter_slices(n_rows, _STATISTICS_BLOCK):
        centred = np.asarray(take_rows(X, rows, block), dtype=np.float64) - mean
        spread += float(np.einsum("ij,ij->", centred, centred))
    return mean, spread / n_rows


def dominant_offset(X, rows=None):
    """The rows' mean (float64) where it dwarfs their spread (see ``_OFFSET_RATIO``),
    else None: the point to centre them on before a computation that is
    shift-invariant in exact arithmetic only. ``rows``: of the rows ``X[rows]``."""
    mean, spread = mean_and_spread(X, rows)
    return mean if mean @ mean > _OFFSET_RATIO * spread else None


_ORDER_SEED = 20251206


def canonical_order(X, rows=None):
    """An order of the rows of X that depends on their values alone: by their projection
    on a fixed random direction (float64, a block of rows at a time; O(N D)).

    The same rows in any order, shifted, or scaled by a positive factor, get the same
    order; rows with equal projections are (almost surely) equal rows, whose order does
    not matter. With ``rows``, the order of the rows ``X[rows]`` (positions in
    ``rows``), read without copying them (:func:`~sklearn_reclag._backend.take_rows`).
    """
    direction = np.random.default_rng(_ORDER_SEED).standard_normal(X.shape[1])
    projections = np.empty(len(X) if rows is None else len(rows))
    for block in iter_slices(len(projections), _STATISTICS_BLOCK):
        projections[block] = np.asarray(take_rows(X, rows, block), dtype=np.float64) @ direction
    return np.argsort(projections, kind="stable")


class _MovedHead:
    """A linear classifier fitted on rows minus ``offset``, read as one on the rows:
    the same ``coef_`` and ``classes_``, the intercept ``intercept_ - coef_ . offset``."""

    def __init__(self, head, offset):
        self.classes_ = getattr(head, "classes_", None)
        self.coef_ = np.asarray(head.coef_, dtype=np.float64)
        self.intercept_ = np.asarray(head.intercept_, dtype=np.float64) - self.coef_ @ offset


def _state_tensor(value, device, dtype, shared=False, index=False):
    """A fitted attribute on the device: boolean masks stay boolean, row indices
    (``index``) int64, numbers take dtype; ``shared``: without a copy where it can be
    (see ``_shared_attributes``)."""
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return as_tensor(value, device, torch.bool)
    if index:
        return as_tensor(value, device, torch.int64)
    return as_tensor(value, device, dtype, copy=not shared, read_only=shared)


def _all_finite(array):
    """Whether every entry of ``array`` is finite, read a block of rows at a time: a
    bank the size of memory (a memory map) gets no boolean temporary of its size."""
    array = np.asarray(array)
    if array.ndim == 0 or array.dtype.kind not in "fc":
        return bool(np.isfinite(array).all())
    # Blocks of about 2**22 entries: a 4 MiB boolean temporary.
    rows = max(1, 2**22 // max(1, array[0].size))
    return all(np.isfinite(array[block]).all() for block in iter_slices(len(array), rows))


def _package_version():
    from . import __version__

    return __version__


def quantile_off_ties(scores, contamination, dtype):
    """The ``contamination`` quantile of ``scores``, moved off any score it lands on.

    ``predict`` accepts a row iff its score is strictly above the threshold, so a
    quantile equal to a score that several rows share would reject the whole group. The
    threshold then moves halfway down to the next lower score, or 4 units in the last
    place of ``dtype`` below the group when there is none.
    """
    offset = float(np.percentile(scores, 100.0 * contamination))
    if np.any(scores == offset):
        lower = scores[scores < offset]
        if lower.size:
            # Two adjacent floats have no float between them: then the lower one.
            offset = min((offset + float(lower.max())) / 2,
                         float(np.nextafter(offset, -np.inf)))
        else:
            offset -= 4 * float(np.spacing(np.dtype(dtype).type(abs(offset))))
    return offset


class ThresholdedScoresMixin:
    """``decision_function`` and ``predict`` from ``score_samples`` and ``offset_``, as
    every detector of the suite and ``calibration.HeldOutThreshold`` read them."""

    def decision_function(self, X):
        """``score_samples(X) - offset_``: positive for rows accepted as in-distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for in-distribution rows (``decision_function > 0``), -1 for OOD rows.

        A row exactly on the threshold is OOD, as RecLag's rule has it (OOD iff
        ``G(v) <= 0``); ``offset_`` is fitted off every training score, so no training
        row sits there, whatever the ties among the training scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,) of int
        """
        return np.where(self.decision_function(X) > 0, 1, -1)


class BaseOODDetector(ThresholdedScoresMixin, TorchEstimatorMixin, OutlierMixin, BaseEstimator,
                      metaclass=ABCMeta):
    """Shared behaviour of the OOD detectors (not for direct use).

    A subclass implements the two abstract hooks, ``_fit`` and ``_score_batch``, and
    optionally overrides ``_fit_offset`` when the threshold is not the contamination
    quantile of the training scores.

    The threshold is only as good as the training scores it is read from: they must be
    the scores of rows the detector did not learn from, by cross-fitting
    (:meth:`_held_out_scores`) unless ``_fit`` offers a cheaper way.

    Fitted state is kept as numpy arrays so that a model pickled on a GPU machine loads
    anywhere; it is moved to the device once per scoring call.
    """

    _parameter_constraints: dict = {
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    # Whether fit needs class labels (or a head to provide them), and why (the error
    # raised without them says it).
    _needs_classes = True
    _why_classes = "it needs class labels to fit its head (or pass a fitted head)"

    # The linear head, for the detectors that read logits or a predicted class: those
    # take ``head`` as a constructor parameter, which shadows this default.
    head = None

    def __init__(self, *, contamination=0.05, device="auto", dtype="float32", batch_size=None):
        self.contamination = contamination
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    # ------------------------------------------------------------ the hooks
    @abstractmethod
    def _fit(self, X, y):
        """Learn the fitted attributes from the in-distribution rows.

        ``X`` is validated, without OOD_LABEL rows; ``y`` holds their class labels, or is
        None. ``device_`` is set already.

        Returns None, or a function of no argument that returns training rows' scores
        as new rows would get them (those of :func:`threshold_rows`, or all), when the
        detector has a cheaper way to them than the cross-fit of
        :meth:`_held_out_scores` (leave-one-out scores of a detector that stores X, or
        the plain scores of one that learned nothing from X). It is called only when
        the threshold needs it.
        """

    @abstractmethod
    def _score_batch(self, V, state):
        """Scores of one batch of rows, higher = more in-distribution.

        ``V`` is a (batch, n_features) tensor on ``device_``; ``state`` maps the names in
        ``_tensor_attributes`` to the fitted arrays as tensors on the same device. Returns
        a (batch,) tensor. Must not write to ``V`` (it may be a view of the user's X).
        """

    # ------------------------------------------------------------------ fit
    # Not skipping nested validation: a head given as an unfitted scikit-learn
    # classifier is cloned and fitted here and must validate its own parameters.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the detector on in-distribution features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, e.g. a network's penultimate layer.
        y : array-like of shape (n_samples,), default=None
            Class labels. Rows labelled ``OOD_LABEL`` (-1) are ignored, so that a
            cross-validation split may carry OOD rows for scoring.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X, y = self._validate_fit_data(X, y)
        # A fit starts afresh: the running state of partial_fit goes.
        for name in ("_partial", "n_samples_seen_"):
            self.__dict__.pop(name, None)
        self.device_ = str(resolve_device(self.device))
        training_scores = self._fit(X, y)
        self._check_finite_state()
        if training_scores is None:
            training_scores = partial(self._held_out_scores, X, y)
        self.offset_ = float(self._fit_offset(training_scores))
        if not np.isfinite(self.offset_):
            raise self._overflow_error("threshold offset_")
        return self

    def _validate_fit_data(self, X, y):
        if y is None:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
            if self._requires_y():
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is "
                    f"None: {self._why_classes}."
                )
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32],
                                 y_numeric=False)
            X, y = drop_ood_rows(X, column_or_1d(y, warn=True))
            check_classification_targets(y)
        # Finite but huge values (say 1e30) would overflow float32 inside the fit.
        check_value_range(X, resolve_dtype(self.dtype))
        return X, y

    def _requires_y(self):
        return self._needs_classes and self.head is None

    def _validate_partial_fit_data(self, X, y, classes):
        """Validate one chunk of ``partial_fit``, as scikit-learn's incremental
        estimators do: the features fixed by the first call (``reset`` then only), the
        classes too (``classes``, or those of the first chunk's y).

        Returns the chunk's in-distribution rows, their labels, and the labels' indices
        in ``classes_`` (zeros without y).
        """
        first = not hasattr(self, "_partial")
        X, y = self._validate_fit_data(X, y) if first else self._validate_more_data(X, y)
        if first:
            if y is None:
                if classes is not None:
                    raise ValueError("classes was given without y; pass y with it.")
                self.classes_ = None
            else:
                self.classes_ = np.unique(y if classes is None else column_or_1d(classes))
        elif (y is None) != (self.classes_ is None):
            raise ValueError(
                f"{type(self).__name__}.partial_fit was first called "
                f"{'without' if self.classes_ is None else 'with'} y; every call must be."
            )
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes)!r} is not the same as on the first call of "
                f"partial_fit, {self.classes_!r}."
            )
        if y is None:
            return X, None, np.zeros(len(X), dtype=np.intp)
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y holds labels {unknown[:5].tolist()} that are not in classes "
                f"{self.classes_.tolist()}: pass every class with classes= on the first "
                "call of partial_fit."
            )
        return X, y, np.searchsorted(self.classes_, y)

    def _validate_more_data(self, X, y):
        """``_validate_fit_data`` for a later chunk of ``partial_fit``: n_features_in_
        and feature_names_in_ are checked, not reset."""
        if y is None:
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        else:
            X, y = validate_data(self, X, y, reset=False, dtype=[np.float64, np.float32],
                                 y_numeric=False)
            X, y = drop_ood_rows(X, column_or_1d(y, warn=True))
            check_classification_targets(y)
        check_value_range(X, resolve_dtype(self.dtype))
        return X, y

    def _fit_offset(self, training_scores):
        """Threshold of ``decision_function``: accept ``1 - contamination`` of the
        training rows as new rows would score. ``training_scores()`` computes their
        scores (only when called: a fixed threshold needs none)."""
        return self._contamination_offset(training_scores())

    def _fitted_hyperparameters(self):
        """Hyperparameters that fit set from the data (e.g. ``beta='auto'``), as their
        fitted values: the folds of :meth:`_held_out_scores` must score on the final
        model's scale, not re-derive it from fewer rows."""
        return {}

    def _fitted_head(self):
        """The final fit's head as a parameter of the folds of :meth:`_held_out_scores`,
        where fit trained it on X. Refitting a softmax regression on each fold would
        cost more than the rest of most fits and give logits of another scale (see
        ``_LogitDetector._fit``); the folds measure the optimism of what the detector
        learns on top of the head: memories, a covariance, a principal subspace."""
        if getattr(self, "head_coef_", None) is None or not self._head_fitted_on_X():
            return {}
        return {"head": SimpleNamespace(coef_=self.head_coef_,
                                        intercept_=self.head_intercept_,
                                        classes_=self.classes_)}

    def _align_fold(self, fold):
        """Put a fitted fold of :meth:`_held_out_scores` on the final model's scale,
        where fitting on fewer rows shifts the scores by a known amount."""

    def _fitted_fold(self, X, y, rows):
        """A clone fitted on the training rows ``X[rows]`` of one fold (``y``: their
        labels), with the hyperparameters and the head the final fit derived from the
        data (see :meth:`_held_out_scores`), put on the final model's scale
        (:meth:`_align_fold`)."""
        fold = clone(self).set_params(**self._fitted_hyperparameters(),
                                      **self._fitted_head())
        # What fit's validation set on self, which the fold skips.
        fold.device_, fold.n_features_in_ = self.device_, self.n_features_in_
        fold._fit_rows(X, y, rows)
        self._align_fold(fold)
        return fold

    def _fit_rows(self, X, y, rows):
        """:meth:`_fit` on the rows ``X[rows]`` (``y``: their labels): read in place,
        ``_fit(X, y, rows)``, where :meth:`_fits_rows_in_place` says the detector can
        (a block at a time), so that a fold of the threshold's cross-fit on a bank of a
        million rows does not copy 4/5 of it; else on a copy of them."""
        if self._fits_rows_in_place():
            return self._fit(X, y, rows)
        return self._fit(X[rows], y)

    def _fits_rows_in_place(self):
        """Whether ``_fit`` takes ``rows`` and reads ``X[rows]`` in place (no detector
        does by default)."""
        return False

    def _held_out_scores(self, X, y):
        """Held-out scores of training rows, as rows the detector never saw would get them.

        The training rows' own scores are optimistic whenever the detector learned
        from them (a covariance, memories, a head), and a threshold read from them
        rejects more than ``contamination`` of new rows. Cross-fitting removes that: the
        rows are split in 5 folds (stratified by class when there are labels), and a
        fold's rows are scored by the detector fitted on the 4 others, with the
        hyperparameters the final fit derived from the data held fixed, and the final
        fit's head (see :meth:`_fitted_head`). Only as many folds are fitted as give
        :data:`THRESHOLD_ROWS` held-out scores: all 5 up to that many training rows, a
        single one (4/5 of a fit) from 5 times as many, so the threshold costs at most
        one more fit however large the data. The final fit
        is unaffected; if a fold cannot be fitted (a class too small to split), the
        training rows' own scores are used, with a warning. A row's held-out score is
        capped at its own score.

        The folds are a function of the rows' content (:func:`held_out_folds`), not of
        their positions: the rows in another order give the same folds, hence the same
        ``offset_``; and the copies of a row (repeated or duplicated data) fall in one
        fold, so that no held-out row is scored by a fold that learned from its copy.
        """
        n_splits = _N_THRESHOLD_FOLDS
        keys = row_keys(X, y, dtype=self.dtype)
        # One held-out score per distinct row, as in threshold_rows: copies score alike.
        distinct = np.zeros(len(X), dtype=bool)
        distinct[np.unique(keys, return_index=True)[1]] = True
        wanted = min(int(distinct.sum()), THRESHOLD_ROWS)
        rows, scores = [], []
        try:
            folds = held_out_folds(keys, y, n_splits)
            with warnings.catch_warnings():
                # A fold repeats the final fit's warnings (a small class, say).
                warnings.simplefilter("ignore")
                for index in range(n_splits):
                    train = np.flatnonzero(folds != index)
                    held_out = np.flatnonzero((folds == index) & distinct)
                    fold = self._fitted_fold(X, None if y is None else y[train], train)
                    rows.append(held_out)
                    scores.append(fold._score_array(X, held_out))
                    if sum(map(len, rows)) >= wanted:
                        break
        except ValueError as exc:
            warnings.warn(
                f"The threshold is set from the training rows' own scores, which are "
                f"optimistic: a {n_splits}-fold cross-fit of the training rows failed "
                f"({exc})",
                UserWarning,
                stacklevel=4,  # the caller of fit (through _fit_context)
            )
            return self._score_array(X[threshold_rows(len(X), keys)])
        rows = np.concatenate(rows)
        # A row scored by a model that never saw it should not score higher than by the
        # one that learned from it; where fold noise says otherwise (constant features,
        # a few epochs of a stochastic fit), the row's own score is the safer one.
        return np.minimum(np.concatenate(scores), self._score_array(X, rows))

    def _check_finite_state(self):
        """No fit ends with NaN or infinity in what it learned (``_tensor_attributes``)."""
        for name in self._tensor_attributes:
            value = getattr(self, name, None)
            if value is not None and not _all_finite(value):
                raise self._overflow_error(f"fitted attribute {name}")

    def _overflow_error(self, what):
        return ValueError(
            f"{type(self).__name__}.fit computed a non-finite {what} with "
            f"dtype={self.dtype!r}: the computation overflowed. Use dtype='float64', "
            "scale the features, or choose less extreme hyperparameters."
        )

    def _contamination_offset(self, scores):
        """The ``contamination`` quantile of the training scores, kept off tied scores.

        ``predict`` accepts a row iff its score is strictly above ``offset_`` (RecLag's
        rule: a row is OOD iff ``G(v) <= 0``). The quantile (numpy's linear
        interpolation) may land exactly on a score that several training rows share
        (every row, for constant scores), and ``predict`` would reject that whole group:
        up to 100 % of the training rows. The offset then moves halfway down to the next
        lower training score, or just below the group (4 units in the last place of
        ``dtype``) when there is none. So ``predict`` rejects at most ``contamination``
        of the training rows plus one row, and fewer when ties leave no threshold in
        between: this warns when ties keep it below half of ``contamination``, or when
        the scores differ only at the level of the dtype's rounding.
        """
        scores = self._finite_training_scores(scores)
        offset = quantile_off_ties(scores, self.contamination, self.dtype)
        self._warn_if_tied(scores, offset, int(np.sum(scores == np.percentile(
            scores, 100.0 * self.contamination))))
        return offset

    def _finite_training_scores(self, scores):
        """The training scores, refused if NaN or +inf (an overflow); a -inf score (a
        leave-one-out score against an otherwise empty bank) counts as the lowest
        finite one, which ranks it the same without making the quantile NaN."""
        if np.isnan(scores).any() or np.isposinf(scores).any():
            raise self._overflow_error("training score")
        finite = np.isfinite(scores)
        if finite.all():
            return scores
        if not finite.any():
            raise self._overflow_error("training score")
        return np.where(finite, scores, scores[finite].min())

    def _warn_if_tied(self, scores, offset, n_tied):
        """Warn when ties or rounding leave the training scores unable to rank the rows."""
        rejected = float(np.mean(scores <= offset))
        spread = float(np.ptp(scores))
        resolution = 64 * np.finfo(np.dtype(self.dtype)).eps * float(np.max(np.abs(scores)))
        # Below half of contamination by ties, and by more than the rounding of a few rows.
        if rejected < self.contamination / 2 and self.contamination * len(scores) >= 1:
            what = (f"all {len(scores)} training scores are equal" if spread == 0 else
                    f"{n_tied} of the {len(scores)} training scores tie at the threshold")
        elif spread <= resolution:
            what = (f"the {len(scores)} training scores differ by at most {spread:.3g}, at "
                    f"the level of {self.dtype} rounding, so their ranking is noise")
        else:
            return
        warnings.warn(
            f"{type(self).__name__}: {what}; predict rejects {rejected:.1%} of the training "
            f"rows (contamination={self.contamination}). The scores barely depend on the "
            "rows: check the hyperparameters (e.g. a tiny beta, ReAct's percentile=0), "
            "constant features, or use dtype='float64'.",
            UserWarning,
            # The caller of fit: above _warn_if_tied, _contamination_offset, _fit_offset,
            # fit and scikit-learn's _fit_context wrapper.
            stacklevel=6,
        )

    # ----------------------------------------------------------------- head
    def _fit_head(self, X, y):
        """Set ``classes_``, ``head_coef_`` (C, D) and ``head_intercept_`` (C,).

        ``head`` may be None (a softmax regression is fitted on (X, y)), an unfitted
        scikit-learn linear classifier (cloned, then fitted on (X, y)), a fitted one
        (``coef_``, ``intercept_``), or a tuple ``(coef, intercept)``.
        """
        head = self.head
        if self._head_fitted_on_X():
            if y is None:
                raise ValueError(
                    f"{type(self).__name__} needs y to fit its head; pass y or a fitted head."
                )
            self._check_n_classes(y)
            head = LogisticRegression(max_iter=1000) if head is None else clone(head)
            offset = dominant_offset(X)
            # The rows in an order of their values: the same rows in another order give
            # the same head, not one that differs by lbfgs's tolerance (which flips the
            # stored patterns of HE and RecLag near the decision boundaries).
            order = canonical_order(X)
            if offset is None:
                head.fit(X[order], y[order])
            else:
                # Fitted on the centred rows: the same linear model (the penalty leaves
                # the intercept alone) with its intercept moved back, where lbfgs on
                # the raw rows stops far from it.
                head.fit(X[order] - offset.astype(X.dtype), y[order])
                head = _MovedHead(head, offset)
        if isinstance(head, tuple):
            if len(head) != 2:
                raise ValueError("head as a tuple must be (coef, intercept).")
            coef, intercept = head
            classes = None
        elif hasattr(head, "coef_") and hasattr(head, "intercept_"):
            coef, intercept = head.coef_, head.intercept_
            classes = getattr(head, "classes_", None)
        else:
            raise TypeError(
                "head must be None, a scikit-learn linear classifier (with coef_ and "
                f"intercept_) or a tuple (coef, intercept); got {type(head).__name__}."
            )
        coef = np.array(coef, dtype=np.float64, ndmin=2)
        intercept = np.array(intercept, dtype=np.float64)
        if intercept.ndim == 0:
            # A classifier fitted with fit_intercept=False has the scalar intercept_ 0.0.
            intercept = np.full(coef.shape[0], float(intercept))
        if coef.ndim != 2 or coef.shape[1] != X.shape[1]:
            raise ValueError(
                f"head coef has shape {coef.shape}, expected (n_classes, {X.shape[1]}) "
                f"to match the {X.shape[1]} features of X."
            )
        if intercept.shape != (coef.shape[0],):
            raise ValueError(
                f"head intercept has shape {intercept.shape}, expected ({coef.shape[0]},) "
                "to match the rows of coef."
            )
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ValueError("head coef and intercept must be finite.")
        if coef.shape[0] == 1:
            # A binary linear classifier scores only class 1; logit 0 for class 0 gives
            # the same softmax (the sigmoid).
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        if classes is None:
            classes = self._classes_for_head(coef.shape[0], y)
        classes = np.asarray(classes)
        if len(classes) != coef.shape[0]:
            raise ValueError(
                f"head has {coef.shape[0]} output classes but {len(classes)} class labels."
            )
        if y is not None and not np.isin(y, classes).all():
            unknown = np.setdiff1d(np.unique(y), classes)
            raise ValueError(f"y holds labels {unknown[:5]} that the head does not predict.")
        self.classes_ = classes
        self.head_coef_ = coef
        self.head_intercept_ = intercept

    def _head_fitted_on_X(self):
        """Whether fit trains the head on (X, y): None or an unfitted classifier."""
        head = self.head
        return head is None or (hasattr(head, "fit") and not hasattr(head, "coef_"))

    @staticmethod
    def _classes_for_head(n_classes, y):
        if y is None:
            return np.arange(n_classes)
        labels = np.unique(y)
        if len(labels) == n_classes:
            return labels
        if np.isin(labels, np.arange(n_classes)).all():
            return np.arange(n_classes)
        raise ValueError(
            f"head has {n_classes} classes, but y holds {len(labels)} labels that are not "
            f"0..{n_classes - 1}; pass a fitted classifier with classes_ instead."
        )

    @staticmethod
    def _check_n_classes(y):
        n_classes = len(np.unique(y))
        if n_classes < 2:
            raise ValueError(
                f"y has {n_classes} class; at least 2 classes are needed to fit a head."
            )

    @staticmethod
    def _head_logits(V, state):
        return torch.addmm(state["head_intercept_"], V, state["head_coef_"].T)

    def _predict_class_index(self, X, rows=None):
        """Index into ``classes_`` of the head's prediction for each row (int array);
        ``rows``: of the rows ``X[rows]``, read in place a block at a time."""
        return map_batches(
            lambda V, state: self._head_logits(V, state).argmax(dim=1),
            X,
            read_only=True,
            rows=rows,
            **self._batch_kwargs(("head_coef_", "head_intercept_")),
        ).astype(np.intp)

    # -------------------------------------------------------------- scoring
    def _score_array(self, X, rows=None):
        """Scores of the rows X, or of ``X[rows]`` gathered a chunk at a time (a held-out
        fold of a million training rows is not copied whole, 2 GiB at 1.28M x 2,048, to
        score it). Scoring never writes to its input chunk (tests/test_*::*not_mutated).
        """
        return map_batches(self._score_batch, X, read_only=True, rows=rows,
                           **self._batch_kwargs())

    def score_samples(self, X):
        """Score of each row: higher means more in-distribution.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self._score_array(self._validate_rows(X))

    def fit_predict(self, X, y=None):
        """Fit on ``(X, y)``, then label each row of X as if the detector had not seen it.

        scikit-learn's outlier detectors flag ``contamination`` of the rows they are
        fitted on. This suite's threshold ``offset_`` is read from held-out scores, so
        that it holds on new rows; the rows the detector learned from score higher, and
        ``fit(X).predict(X)`` flags fewer of them (measured: 0 % with
        HopfieldEnergyDetector, 2.5 % with MahalanobisDetector at
        ``contamination=0.05``). ``fit_predict`` instead labels each in-distribution row
        of X by its held-out score: a 5-fold cross-fit over all the rows (the folds of
        the threshold's own cross-fit, each fitted as the threshold's are), every row
        scored by the fold that did not learn from it, capped at its own score, and
        the ``contamination`` of them with the lowest held-out scores flagged (the
        quantile is read from these scores as ``offset_`` is from the threshold's, as
        :class:`~sklearn.neighbors.LocalOutlierFactor` reads its training rows' own
        factors). So it flags ``contamination`` of X (up to tied scores), whichever
        held-out scores set ``offset_`` (leave-one-out ones score a row against 4/5 of
        the rows here, all but one there), and ``fit_predict(X)`` differs from
        ``fit(X).predict(X)`` on the training rows, which is the point.
        Rows labelled ``OOD_LABEL``, which fit ignores, get ``predict``'s label.

        It costs a fit and the cross-fit (about 4 more fits). If a fold cannot be fitted
        (a class too small to split), the rows get ``predict``'s label, with a warning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            Class labels (OOD_LABEL rows are ignored by fit).

        Returns
        -------
        labels : ndarray of shape (n_samples,) of int
            +1 for rows accepted as in-distribution, -1 for the others.
        """
        # OutlierMixin.fit_predict drops y, which the labelled detectors need.
        labels = self.fit(X, y).predict(X)
        fitted = slice(None) if y is None else ~is_ood_label(column_or_1d(y))
        # The rows and labels fit learned from, exactly as fit validated them.
        X_fit, y_fit = self._validate_fit_data(X, y)
        held_out = self._cross_fitted_scores(X_fit, y_fit)
        if held_out is not None:
            labels[fitted] = np.where(held_out > self._contamination_offset(held_out), 1, -1)
        return labels

    def _cross_fitted_scores(self, X, y):
        """Held-out score of every row of ``(X, y)`` (validated, no OOD rows), from the
        folds of :func:`held_out_folds` fitted as :meth:`_held_out_scores` fits them, each
        capped at the row's own score; None, with a warning, if a fold cannot be fitted.
        """
        scores = np.empty(len(X))
        try:
            folds = held_out_folds(row_keys(X, y, dtype=self.dtype), y)
            with warnings.catch_warnings():
                # A fold repeats the final fit's warnings (a small class, say).
                warnings.simplefilter("ignore")
                for index in range(_N_THRESHOLD_FOLDS):
                    train, held = np.flatnonzero(folds != index), folds == index
                    fold = self._fitted_fold(X, None if y is None else y[train], train)
                    scores[held] = fold._score_array(X[held])
        except ValueError as exc:
            warnings.warn(
                f"fit_predict labels the training rows by their own scores, which are "
                f"optimistic (it flags fewer than contamination={self.contamination} of "
                f"them): a {_N_THRESHOLD_FOLDS}-fold cross-fit of the rows failed ({exc})",
                UserWarning,
                stacklevel=3,  # the caller of fit_predict
            )
            return None
        return np.minimum(scores, self._score_array(X))

    # ---------------------------------------------------------- sklearn glue
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._requires_y()
        return tags
