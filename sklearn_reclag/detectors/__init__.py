"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector
from .hopfield_energy import HopfieldEnergyDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .reclag import RecLagDetector
from .vim import ViMDetector

__all__ = [
    "EnergyDetector",
    "HopfieldEnergyDetector",
    "KNNDetector",
    "MahalanobisDetector",
    "MSPDetector",
    "ReActDetector",
    "RecLagDetector",
    "ViMDetector",
]
