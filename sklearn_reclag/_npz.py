"""A user's own features in one ``.npz`` file: the input of ``benchmark --features``.

:func:`save_features_npz` and :func:`load_features_npz` are public in
:mod:`sklearn_reclag.datasets`, next to the built-in digits benchmark whose content they
store. Both check the arrays, shapes and values, so that a malformed file is a one-line
error before any fitting, not a traceback in the middle of a benchmark.
"""

import os
import zipfile

import numpy as np
from sklearn.utils import Bunch

from ._labels import is_ood_label

_REQUIRED_KEYS = ("X_train", "y_train", "X_test")
_OOD_PREFIX = "ood_"


def save_features_npz(path, data):
    """Store ID / OOD features and a head in one ``.npz`` file.

    Keys of the file (the format :func:`load_features_npz` and
    ``python -m sklearn_reclag benchmark --features`` read):

    ========================= ==================================================== =========
    key                       content                                              needed
    ========================= ==================================================== =========
    ``X_train``               ID training features, (n_train, n_features)          yes
    ``y_train``               their class labels, (n_train,)                       yes
    ``X_test``                ID test features, (n_test, n_features)               yes
    ``y_test``                their class labels, (n_test,)                        no
    ``ood_<name>``            one OOD test set, (n, n_features); at least one      yes
    ``X_val_ood``             validation OOD features for hyperparameter choice    benchmark
    ``head_coef``             the network's last layer weight, (n_classes, n_f.)   no
    ``head_intercept``        its bias, (n_classes,); with ``head_coef``           no
    ========================= ==================================================== =========

    ``benchmark --features`` needs ``X_val_ood``: it chooses every method's
    hyperparameters on it, never on a test set. Features are real numbers, finite, at
    least one row per array; labels are integers or strings, and none marks an OOD row
    (OOD rows go in ``ood_<name>`` and ``X_val_ood``).

    Parameters
    ----------
    path : str or path-like
        Where to write; numpy adds ``.npz`` if the name lacks it.
    data : dict or :class:`~sklearn.utils.Bunch`
        With ``X_train``, ``y_train``, ``X_test``, ``ood_test`` (dict name -> features)
        and optionally ``y_test``, ``X_val_ood`` and ``head`` (a tuple (coef, intercept)
        or None), as :func:`~sklearn_reclag.datasets.load_digits_ood_features` returns.

    Raises
    ------
    ValueError
        If a key is missing, or an array has the wrong shape or values (see above).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sklearn_reclag.datasets import load_features_npz, save_features_npz
    >>> rng = np.random.RandomState(0)
    >>> data = {"X_train": rng.normal(size=(20, 3)), "y_train": np.arange(20) % 2,
    ...         "X_test": rng.normal(size=(5, 3)), "ood_test": {"far": rng.normal(size=(4, 3))}}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_features_npz(Path(folder) / "features.npz", data)
    ...     sorted(load_features_npz(Path(folder) / "features.npz").ood_test)
    ['far']
    """
    missing = [key for key in (*_REQUIRED_KEYS, "ood_test") if data.get(key) is None]
    if missing:
        raise ValueError(f"data lacks {missing}; see save_features_npz for the keys.")
    arrays = {key: np.asarray(data[key]) for key in _REQUIRED_KEYS}
    for key in ("y_test", "X_val_ood"):
        if data.get(key) is not None:
            arrays[key] = np.asarray(data[key])
    for name, X in data["ood_test"].items():
        arrays[_OOD_PREFIX + name] = np.asarray(X)
    if data.get("head") is not None:
        arrays["head_coef"], arrays["head_intercept"] = map(np.asarray, data["head"])
    check_features(arrays, source="data")
    np.savez(path, **arrays)


def load_features_npz(path):
    """Read features stored by :func:`save_features_npz` (or written with the same keys).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file; see :func:`save_features_npz` for its keys.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``X_train``, ``y_train``, ``X_test``, ``y_test`` (None if absent), ``ood_test``
        (dict name -> features, in the file's order), ``X_val_ood`` (None if absent) and
        ``head`` (``(coef, intercept)``, or None if absent: the detectors then fit their
        own head on ``(X_train, y_train)``).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not an ``.npz`` archive, lacks a required key, or holds arrays of
        inconsistent shapes or invalid values (NaN, infinity, complex numbers, empty
        sets, OOD labels in ``y_train``).

    Examples
    --------
    >>> from sklearn_reclag.datasets import load_features_npz
    >>> load_features_npz("no-such-file.npz")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No features file at 'no-such-file.npz'.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No features file at {os.fspath(path)!r}.")
    needs = ("save the features with sklearn_reclag.datasets.save_features_npz (named "
             "arrays X_train, y_train, X_test and ood_<name>)")
    if not zipfile.is_zipfile(path):
        # numpy would read any other file as a pickle and advise allow_pickle=True: never.
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable .npz archive of arrays (not a zip file: "
            f"empty, truncated, a .npy, a text or a pickle file); {needs}."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable .npz archive of arrays: {exc}; {needs}."
        ) from exc
    check_features(arrays, source=repr(os.fspath(path)))
    head = None
    if "head_coef" in arrays:
        head = (arrays["head_coef"], arrays["head_intercept"])
    return Bunch(
        X_train=arrays["X_train"],
        y_train=arrays["y_train"],
        X_test=arrays["X_test"],
        y_test=arrays.get("y_test"),
        ood_test={key[len(_OOD_PREFIX):]: X for key, X in arrays.items()
                  if key.startswith(_OOD_PREFIX)},
        X_val_ood=arrays.get("X_val_ood"),
        head=head,
    )


def check_features(arrays, *, source):
    """Raise a ValueError naming what is missing or wrong in a features mapping.

    Checks the keys, then the shapes, then the values: features real, finite and
    non-empty; labels integers or strings, with no OOD label in ``y_train``.
    """
    _check_keys(arrays, source)
    n_features = _check_shapes(arrays, source)
    for key, values in arrays.items():
        if _is_features(key):
            _check_feature_values(values, f"{source}: {key!r}")
        elif key.startswith("y_"):
            _check_labels(values, f"{source}: {key!r}")
    if "head_coef" in arrays:
        coef, intercept = arrays["head_coef"], arrays["head_intercept"]
        if coef.ndim != 2 or coef.shape[1] != n_features or intercept.shape != coef.shape[:1]:
            raise ValueError(
                f"{source}: head_coef {coef.shape} and head_intercept {intercept.shape} "
                f"must have shapes (n_classes, {n_features}) and (n_classes,)."
            )
        for key in ("head_coef", "head_intercept"):
            _check_feature_values(arrays[key], f"{source}: {key!r}")
    ood_rows = is_ood_label(arrays["y_train"])
    if ood_rows.any():
        raise ValueError(
            f"{source}: 'y_train' labels {int(ood_rows.sum())} rows OOD (-1): training "
            "rows are in-distribution; put OOD rows in X_val_ood or an ood_<name> set."
        )


def _is_features(key):
    return key.startswith(("X_", _OOD_PREFIX))


def _check_keys(arrays, source):
    missing = [key for key in _REQUIRED_KEYS if key not in arrays]
    if not any(key.startswith(_OOD_PREFIX) for key in arrays):
        missing.append(_OOD_PREFIX + "<name> (at least one OOD test set)")
    if ("head_coef" in arrays) != ("head_intercept" in arrays):
        missing.append("head_intercept" if "head_coef" in arrays else "head_coef")
    if missing:
        raise ValueError(
            f"{source} lacks the keys {missing}; it has {sorted(arrays)}. See "
            "sklearn_reclag.datasets.save_features_npz for the format."
        )


def _check_shapes(arrays, source):
    """The number of features, after checking every array's shape against X_train."""
    if arrays["X_train"].ndim != 2:
        raise ValueError(
            f"{source}: 'X_train' must be 2-D (n_samples, n_features); got shape "
            f"{arrays['X_train'].shape}."
        )
    n_features = arrays["X_train"].shape[1]
    for key, X in arrays.items():
        if _is_features(key) and (X.ndim != 2 or X.shape[1] != n_features):
            raise ValueError(
                f"{source}: {key!r} has shape {X.shape}, expected (n_samples, "
                f"{n_features}) like X_train."
            )
        if _is_features(key) and X.shape[0] == 0:
            raise ValueError(f"{source}: {key!r} is empty (0 rows).")
    for X_key, y_key in (("X_train", "y_train"), ("X_test", "y_test")):
        if y_key in arrays and arrays[y_key].shape != (len(arrays[X_key]),):
            raise ValueError(
                f"{source}: {y_key!r} has shape {arrays[y_key].shape}, expected "
                f"({len(arrays[X_key])},) to match {X_key!r}."
            )
    return n_features


def _check_feature_values(values, name):
    if values.dtype.kind not in "iuf":
        what = "complex numbers" if values.dtype.kind == "c" else f"dtype {values.dtype}"
        raise ValueError(f"{name} must hold real numbers; got {what}.")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite values (first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}); features must be finite."
        )


def _check_labels(values, name):
    if values.dtype.kind not in "iuUSb" and not (
            values.dtype.kind == "f" and np.isfinite(values).all()
            and (values == np.round(values)).all()):
        raise ValueError(
            f"{name} must hold class labels (integers or strings); got dtype "
            f"{values.dtype}" + (" with NaN, infinite or fractional values"
                                 if values.dtype.kind == "f" else "") + "."
        )
