"""Dense associative memories (Krotov & Hopfield, 2016) with McAlister's scaling.

- :class:`DensePolynomialHopfield`: the classifier (one label neuron per class).
- :func:`capacity`: Krotov & Hopfield's capacity estimate.

The estimators share one network (``_engine``): its energy, update and learning rules.
"""

from ._classifier import DensePolynomialHopfield
from ._engine import capacity

__all__ = ["DensePolynomialHopfield", "capacity"]
