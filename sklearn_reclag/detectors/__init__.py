"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector

__all__ = ["EnergyDetector", "MSPDetector", "ReActDetector"]

from .hopfield_energy import HopfieldEnergyDetector  # noqa: E402
from .reclag import RecLagDetector  # noqa: E402

__all__ += ["HopfieldEnergyDetector", "RecLagDetector"]
