"""The detector families, one module each."""

from .baselines import EnergyDetector, MSPDetector, ReActDetector

__all__ = ["EnergyDetector", "MSPDetector", "ReActDetector"]
