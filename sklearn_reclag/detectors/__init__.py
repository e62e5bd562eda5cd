"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector
from .hopfield_boosting import HopfieldBoostingDetector
from .hopfield_energy import HopfieldEnergyDetector
from .knn import KNNDetector
from .lof import LOFDetector
from .leaderboard import (
    ASHDetector,
    FDBDDetector,
    GENDetector,
    NCIDetector,
    SCALEDetector,
)
from .mahalanobis import MahalanobisDetector
from .nnguide import NNGuideDetector
from .reclag import RecLagDetector
from .rmds import RMDSDetector
from .vim import ViMDetector

__all__ = [
    "ASHDetector",
    "EnergyDetector",
    "FDBDDetector",
    "GENDetector",
    "HopfieldBoostingDetector",
    "HopfieldEnergyDetector",
    "KNNDetector",
    "LOFDetector",
    "MahalanobisDetector",
    "MSPDetector",
    "NCIDetector",
    "NNGuideDetector",
    "ReActDetector",
    "RecLagDetector",
    "RMDSDetector",
    "SCALEDetector",
    "ViMDetector",
]
