"""Dense associative memories (Krotov & Hopfield, 2016) with McAlister's scaling.

- :class:`DensePolynomialHopfield`: the classifier (one label neuron per class).
- :class:`DenseAssociativeMemory`: the autoassociative memory (pattern completion,
  denoising, novelty detection).
- :func:`capacity`: Krotov & Hopfield's capacity estimate.

Both estimators share one network (``_engine``): its energy, update and learning rules.
"""

from ._classifier import DensePolynomialHopfield
from ._engine import capacity
from ._memory import DenseAssociativeMemory

__all__ = ["DenseAssociativeMemory", "DensePolynomialHopfield", "capacity"]
