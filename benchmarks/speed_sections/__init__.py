"""The sections of benchmarks/speed.py, one module each; ``common`` holds what they share."""
