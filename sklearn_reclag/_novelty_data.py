"""The unlabelled novelty-detection benchmark: scikit-learn's shipped tabular data, y=None.

Each task takes one class of a data set as the in-distribution and every other class of
the same data set as the OOD test set; no labels are used (novelty detection, as PyOD's
detectors do it):

- 'wine': each of the 3 cultivars of :func:`sklearn.datasets.load_wine` (13 chemical
  measurements), standardised with the mean and scale of its training rows;
- 'breast cancer': the benign tumours of :func:`sklearn.datasets.load_breast_cancer` (30
  features) against the malignant ones, standardised the same way;
- 'digits': each of the 10 classes of :func:`sklearn.datasets.load_digits` as raw pixels
  (intensities 0..16).

The ID rows of a task are split into train / test with a seeded random split.
The validation OOD set, for hyperparameter selection only, is built from the ID training
rows alone: every feature permuted independently across the rows, which keeps each
feature's distribution and breaks their dependence. No OOD test row is seen in selection.
"""

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state

NOVELTY_DATASETS = ("wine", "breast cancer", "digits")
"""The data sets of the novelty benchmark, in the order the tables report them."""


def _tasks():
    """(data set, task name, X, is_id) for every task."""
    X, y = load_wine(return_X_y=True)
    for c in range(3):
        yield "wine", f"wine, cultivar {c}", X, y == c, True
    X, y = load_breast_cancer(return_X_y=True)
    yield "breast cancer", "breast cancer, benign", X, y == 1, True
    X, y = load_digits(return_X_y=True)
    for c in range(10):
        yield "digits", f"digits, class {c}", X, y == c, False


def _feature_shuffled(X, rng):
    """Every column of X permuted independently: ID marginals without their dependence."""
    return np.column_stack([rng.permutation(column) for column in X.T])


def load_novelty_tasks(*, random_state=0, test_size=0.3):
    """The tasks of the unlabelled novelty-detection benchmark.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seeds the train / test splits and the validation OOD sets.
    test_size : float in (0, 1), default=0.3
        Fraction of each task's ID rows held out as its ID test set.

    Returns
    -------
    tasks : list of :class:`~sklearn.utils.Bunch`
        One per task, with ``dataset`` (one of :data:`NOVELTY_DATASETS`), ``name``,
        ``X_train`` (ID rows only), ``y_train`` (None: no labels), ``X_test`` (held-out ID
        rows), ``ood_test`` (``{name: the other classes' rows}``), ``X_val_ood`` (the
        feature-shuffled training rows) and ``head`` (None).

    Examples
    --------
    >>> from sklearn_reclag.datasets import load_novelty_tasks
    >>> tasks = load_novelty_tasks()
    >>> len(tasks), tasks[0].name, tasks[0].X_train.shape
    (14, 'wine, cultivar 0', (41, 13))
    """
    rng = check_random_state(random_state)
    tasks = []
    for dataset, name, X, is_id, standardise in _tasks():
        X_train, X_test = train_test_split(
            X[is_id], test_size=test_size, random_state=rng.randint(np.iinfo(np.int32).max))
        X_ood = X[~is_id]
        if standardise:
            scaler = StandardScaler().fit(X_train)
            X_train, X_test, X_ood = (scaler.transform(A) for A in (X_train, X_test, X_ood))
        tasks.append(Bunch(
            dataset=dataset, name=name, X_train=X_train, y_train=None, X_test=X_test,
            ood_test={name: X_ood}, X_val_ood=_feature_shuffled(X_train, rng), head=None,
        ))
    return tasks
