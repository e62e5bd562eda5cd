"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector
from .hopfield_energy import HopfieldEnergyDetector
from .mahalanobis import MahalanobisDetector
from .reclag import RecLagDetector

__all__ = [
    "EnergyDetector",
    "HopfieldEnergyDetector",
    "MahalanobisDetector",
    "MSPDetector",
    "ReActDetector",
    "RecLagDetector",
]
