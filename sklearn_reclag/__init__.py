"""sklearn-reclag: out-of-distribution detection with modern Hopfield networks.

Scikit-learn estimators on a PyTorch backend: the Rectified Lagrangian (RecLag) detector,
Hopfield energy scores (HE, SHE), dense associative memories, and the MSP, Energy and ReAct
baselines. Metrics and scorers live in :mod:`sklearn_reclag.metrics`, model-selection helpers
in :mod:`sklearn_reclag.model_selection`, plots in :mod:`sklearn_reclag.plotting`, the
benchmark data in :mod:`sklearn_reclag.datasets`, dask helpers in
:mod:`sklearn_reclag.distributed`.
"""

__version__ = "0.2.0"

from ._labels import OOD_LABEL  # noqa: E402
from .auto import AutoOODDetector  # noqa: E402
from .dense import DenseAssociativeMemory, DensePolynomialHopfield, capacity  # noqa: E402
from .detectors import (  # noqa: E402
    ASHDetector,
    EnergyDetector,
    FDBDDetector,
    GENDetector,
    HopfieldBoostingDetector,
    HopfieldEnergyDetector,
    KNNDetector,
    LOFDetector,
    MahalanobisDetector,
    MSPDetector,
    NCIDetector,
    NNGuideDetector,
    ReActDetector,
    RecLagDetector,
    RMDSDetector,
    SCALEDetector,
    ViMDetector,
)
from .features import TorchFeatureExtractor, linear_head  # noqa: E402

__all__ = [
    "OOD_LABEL",
    "ASHDetector",
    "AutoOODDetector",
    "DenseAssociativeMemory",
    "DensePolynomialHopfield",
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
    "TorchFeatureExtractor",
    "ViMDetector",
    "capacity",
    "linear_head",
    "__version__",
]
