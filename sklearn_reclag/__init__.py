"""sklearn-reclag: out-of-distribution detection with modern Hopfield networks.

Scikit-learn estimators on a PyTorch backend: the Rectified Lagrangian (RecLag) detector,
Hopfield energy scores (HE, SHE), dense associative memories, and the MSP, Energy and ReAct
baselines, with FPR95 metrics and scorers for model selection.
"""

from .base import OOD_LABEL
from .detectors import EnergyDetector, MSPDetector, ReActDetector

__version__ = "0.1.0"

__all__ = [
    "OOD_LABEL",
    "EnergyDetector",
    "MSPDetector",
    "ReActDetector",
    "__version__",
]

from .detectors import HopfieldEnergyDetector, RecLagDetector  # noqa: E402

__all__ += ["HopfieldEnergyDetector", "RecLagDetector"]

from .dense import DensePolynomialHopfield, capacity  # noqa: E402

__all__ += ["DensePolynomialHopfield", "capacity"]
