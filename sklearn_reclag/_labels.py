"""The label convention: rows of ``y`` equal to OOD_LABEL are out-of-distribution.

Every estimator's ``fit`` drops those rows, and the OOD metrics and scorers read them as the
OOD class, so an ordinary cross-validation split can carry held-out OOD rows.

Labels may be integers or strings. numpy turns a list that mixes string class names with
the integer -1 (``['cat', 'dog', -1]``) into an array of strings, where -1 becomes the
string ``'-1'``: in a string array, ``'-1'`` is therefore OOD_LABEL too. In an object array
both the integer -1 and the string ``'-1'`` are.
"""

import numbers

import numpy as np

OOD_LABEL = -1
"""Label of out-of-distribution rows in ``y``: fit ignores them, the OOD scorers use them."""

_OOD_STRING = str(OOD_LABEL)


def is_ood_label(y):
    """Boolean mask of the entries of ``y`` that mark out-of-distribution rows.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels: integers, floats, strings or objects. OOD rows are ``-1`` in a
        numeric array, ``'-1'`` in a string array, either in an object array.

    Returns
    -------
    mask : ndarray of shape (n_samples,) of bool

    Examples
    --------
    >>> from sklearn_reclag.model_selection import is_ood_label
    >>> is_ood_label([0, 3, -1]).tolist()
    [False, False, True]
    >>> is_ood_label(["cat", "dog", -1]).tolist()  # numpy makes -1 the string '-1'
    [False, False, True]
    """
    y = np.asarray(y)
    if y.dtype.kind in "iuf":
        return y == OOD_LABEL
    if y.dtype.kind == "b":
        return np.zeros(y.shape, dtype=bool)
    if y.dtype.kind in "US":
        return y == (_OOD_STRING if y.dtype.kind == "U" else _OOD_STRING.encode())
    return np.array([_is_ood_object(v) for v in y.ravel()], dtype=bool).reshape(y.shape)


def _is_ood_object(value):
    if isinstance(value, str):
        return value == _OOD_STRING
    # bool is an int subclass; True is never OOD_LABEL.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and (
        value == OOD_LABEL)


def drop_ood_rows(X, y):
    """The rows of ``(X, y)`` whose label is not OOD_LABEL (fit ignores OOD rows).

    Raises
    ------
    ValueError
        If every row is OOD.
    """
    keep = ~is_ood_label(y)
    if not keep.any():
        raise ValueError(
            f"Every row of y is OOD_LABEL ({OOD_LABEL}): there are no in-distribution "
            "rows to fit on."
        )
    if keep.all():
        return X, y
    return X[keep], y[keep]
