"""Patterns, probes and the recall measures shared by the dense-memory benchmarks.

Used by ``dense_stability.py`` and ``dense_capacity.py``; not a benchmark itself.
"""

import os
import platform

import numpy as np
import torch
from sklearn.datasets import load_digits

import sklearn_reclag


def random_patterns(n_patterns, n_neurons, rng):
    """Random bipolar patterns, each entry +1 or -1 with probability 1/2."""
    return rng.choice([-1.0, 1.0], size=(n_patterns, n_neurons))


def digit_patterns():
    """The first image of each of scikit-learn's ten digits as a +-1 image (8x8 = 64
    neurons): +1 where the pixel is at least 8 (of 16), -1 elsewhere."""
    X, y = load_digits(return_X_y=True)
    first = [np.flatnonzero(y == digit)[0] for digit in range(10)]
    return np.where(X[first] >= 8, 1.0, -1.0)


def corrupt(patterns, rng, fraction, copies):
    """``copies`` probes per pattern, each with ``round(fraction * N)`` entries flipped
    at random places. Returns (targets, probes), row for row."""
    targets = np.repeat(patterns, copies, axis=0)
    n_flips = int(round(fraction * patterns.shape[1]))
    probes = targets.copy()
    for probe in probes:
        probe[rng.choice(len(probe), n_flips, replace=False)] *= -1
    return targets, probes


def recall_quality(states, targets):
    """(mean Euclidean distance between recalled and stored states, fraction of probes
    recalled exactly). For +-1 states the distance is ``2 sqrt(wrong entries)``."""
    distance = np.linalg.norm(states - targets, axis=1)
    return float(distance.mean()), float((distance == 0).mean())


def environment():
    return (f"sklearn-reclag {sklearn_reclag.__version__}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} "
            f"CPU cores, {torch.get_num_threads()} torch thread(s)")
