"""Logit-based baselines: MSP, Energy and ReAct.

With z = W v + b the logits of a linear head (the network's last layer):

- MSP (Hendrycks & Gimpel, 2017): ``max_k softmax(z)_k``
- Energy (Liu et al., 2020): ``T * logsumexp(z / T)``
- ReAct (Sun et al., 2021): ``T * logsumexp((W min(v, c) + b) / T)``, c the ``percentile``-th
  percentile of every training activation value.
"""

from functools import partial
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval

from .._docstrings import fill_doc
from ..base import BaseOODDetector, row_keys, threshold_rows

class _LogitDetector(BaseOODDetector):
    """A detector that scores a function of the head's logits."""

    _parameter_constraints = {**BaseOODDetector._parameter_constraints, "head": [None, object]}
    _tensor_attributes = ("head_coef_", "head_intercept_")

    def __init__(self, *, head=None, contamination=0.05, device="auto", dtype="float32",
                 batch_size=None):
        super().__init__(
            contamination=contamination, device=device, dtype=dtype, batch_size=batch_size
        )
        self.head = head

    def _fit(self, X, y):
        self._fit_head(X, y)
        # The training rows' own scores. A given head learned nothing from X; a head
        # fitted here did, but cross-fitting it is worse: a softmax regression fitted on
        # fewer rows has logits of another scale (measured on Gaussian classes in 40-60
        # dimensions: 93-95 % of new rows accepted with the own scores, 90-93 % with
        # cross-fitted ones, for 95 % asked).
        return partial(self._score_array,
                       X[threshold_rows(len(X), row_keys(X, y, dtype=self.dtype))])


@fill_doc
class MSPDetector(_LogitDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017).

    ``score_samples(v) = max_k softmax(W v + b)_k``.

    Parameters
    ----------
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    EnergyDetector : the logsumexp of the logits, usually a better OOD score.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import MSPDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = MSPDetector(device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> float((det.predict(X[y < 5] / 16) == 1).mean())  # 1 - contamination of the rows
    0.95...
    """

    search_space = {}
    """MSP has no hyperparameter to search."""

    def _score_batch(self, V, state):
        return torch.softmax(self._head_logits(V, state), dim=1).amax(dim=1)


@fill_doc
class EnergyDetector(_LogitDetector):
    """Energy score (Liu et al., 2020).

    ``score_samples(v) = T * logsumexp((W v + b) / T)`` (the negative free energy).

    Parameters
    ----------
    temperature : float > 0, default=1.0
        The temperature T.
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    ${fitted_head}
    ${fitted_common}

    See Also
    --------
    ReActDetector : the same score on clipped activations.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import EnergyDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = EnergyDetector(temperature=1.0, device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> det.score_samples(X[:2] / 16).shape
    (2,)
    """

    _parameter_constraints = {
        **_LogitDetector._parameter_constraints,
        "temperature": [Interval(Real, 0, None, closed="neither")],
    }

    search_space = {"temperature": [0.5, 1.0, 2.0]}
    """A GridSearchCV ``param_grid``: the temperatures worth comparing."""

    def __init__(self, temperature=1.0, *, head=None, contamination=0.05, device="auto",
                 dtype="float32", batch_size=None):
        super().__init__(
            head=head, contamination=contamination, device=device, dtype=dtype,
            batch_size=batch_size,
        )
        self.temperature = temperature

    def _score_batch(self, V, state):
        logits = self._head_logits(V, state)
        return self.temperature * torch.logsumexp(logits / self.temperature, dim=1)


@fill_doc
class ReActDetector(EnergyDetector):
    """ReAct: energy score on clipped activations (Sun et al., 2021).

    ``score_samples(v) = T * logsumexp((W min(v, c) + b) / T)`` where the clip value
    ``c = clip_`` is the ``percentile``-th percentile of every activation value of every
    training row (numpy's default linear interpolation). The predicted class used
    elsewhere is computed on the unclipped v; ReAct itself only needs the logits.

    Parameters
    ----------
    percentile : float in [0, 100], default=90
        Percentile of the training activations used as the clip value (the official
        ReAct code uses 90; the RecLag repository's copy used 98).
    temperature : float > 0, default=1.0
        The temperature T.
    ${head}
    ${contamination}
    ${device}

    Attributes
    ----------
    clip_ : float
        The clip value c.
    ${fitted_head}
    ${fitted_common}

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag import ReActDetector
    >>> X, y = load_digits(return_X_y=True)
    >>> det = ReActDetector(percentile=90, device="cpu").fit(X[y < 5] / 16, y[y < 5])
    >>> float(det.clip_)
    0.9375
    """

    _parameter_constraints = {
        **EnergyDetector._parameter_constraints,
        "percentile": [Interval(Real, 0, 100, closed="both")],
    }

    search_space = {"percentile": [80, 90, 95, 99]}
    """A GridSearchCV ``param_grid``: the clip percentiles worth comparing (the paper's 90
    among them)."""
    _tensor_attributes = ("head_coef_", "head_intercept_", "clip_")

    def __init__(self, percentile=90, temperature=1.0, *, head=None, contamination=0.05,
                 device="auto", dtype="float32", batch_size=None):
        super().__init__(
            temperature=temperature, head=head, contamination=contamination, device=device,
            dtype=dtype, batch_size=batch_size,
        )
        self.percentile = percentile

    def _fit(self, X, y):
        self.clip_ = float(np.percentile(X, self.percentile))
        # The clip is a percentile of X, learned from X too, but a percentile of every
        # activation of every row moves by little when one row is left out.
        return super()._fit(X, y)

    def _score_batch(self, V, state):
        return super()._score_batch(torch.minimum(V, state["clip_"]), state)
