"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector
from .hopfield_boosting import HopfieldBoostingDetector
from .hopfield_energy import HopfieldEnergyDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .nnguide import NNGuideDetector
from .reclag import RecLagDetector
from .vim import ViMDetector

__all__ = [
    "EnergyDetector",
    "HopfieldBoostingDetector",
    "HopfieldEnergyDetector",
    "KNNDetector",
    "MahalanobisDetector",
    "MSPDetector",
    "NNGuideDetector",
    "ReActDetector",
    "RecLagDetector",
    "ViMDetector",
]
