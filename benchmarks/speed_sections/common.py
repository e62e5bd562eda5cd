"""What the sections of benchmarks/speed.py share: sizes, timing, synthetic data."""

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sklearn_reclag.benchmark import PAPER_PARAMS
from sklearn_reclag.metrics import fpr_at_tpr

GIB = 2**30
MIB = 2**20
# The detectors' largest scoring block (sklearn_reclag.detectors._banks._SCORE_BLOCK):
# the baseline gets the same memory budget.
BLOCK = 2**24
# The naive one-shot product is timed only when it fits in this many bytes.
NAIVE_LIMIT = GIB

# RecLag's official settings (the paper's code: Moriai et al., AAAI 2025), without the two
# that the sections set themselves. The estimator's defaults are not the paper's.
OFFICIAL = {k: v for k, v in PAPER_PARAMS["RecLag"].items() if k not in ("solver", "max_epochs")}
HE_PAPER = PAPER_PARAMS["HE"]  # HE as the paper runs it (Zhang et al., ICLR 2023)

FULL = {
    "n_classes": 10, "n_per_class": 5000, "n_features": 512, "n_ood": 5000, "n_id_test": 5000,
    "ref_epochs": 2, "batched_epochs": 50, "full_epochs": 50, "fpr_seeds": 3, "repeats": 3,
    "rounds": 5,
    "n_test_throughput": 20_000, "n_test_memory": 100_000,
    "scale_fit": {"n_per_class": [1000, 2000, 4000], "n_memories": [10, 20, 40],
                   "n_features": [128, 256, 512], "epochs": 5},
    "scale_he": {"n_test": [2000, 4000, 8000], "n_stored": [10_000, 20_000, 40_000],
                  "n_features": [128, 256, 512]},
    "scale_reclag": {"n_test": [25_000, 50_000, 100_000], "n_memories": [10, 20, 40],
                      "n_features": [128, 256, 512]},
    # Section 5, the threshold's cost: every detector; RecLag against the reference
    # (the paper's objective, a few epochs).
    "threshold_fit": {"n_classes": 10, "n_per_class": 800, "n_features": 128},
    "threshold_reference": {"n_classes": 10, "n_per_class": 1000, "n_features": 128,
                            "epochs": 10},
}
QUICK = {
    "n_classes": 3, "n_per_class": 200, "n_features": 32, "n_ood": 300, "n_id_test": 300,
    "ref_epochs": 1, "batched_epochs": 2, "full_epochs": 3, "fpr_seeds": 2, "repeats": 2,
    "rounds": 2,
    "n_test_throughput": 1000, "n_test_memory": 2000,
    "scale_fit": {"n_per_class": [100, 200, 400], "n_memories": [2, 4, 8],
                   "n_features": [16, 32, 64], "epochs": 1},
    "scale_he": {"n_test": [250, 500, 1000], "n_stored": [150, 300, 600],
                  "n_features": [16, 32, 64]},
    "scale_reclag": {"n_test": [250, 500, 1000], "n_memories": [2, 4, 8],
                      "n_features": [16, 32, 64]},
    "threshold_fit": {"n_classes": 3, "n_per_class": 200, "n_features": 32},
    "threshold_reference": {"n_classes": 3, "n_per_class": 200, "n_features": 32,
                            "epochs": 2},
}


def resolve(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine.")
    return device


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """Seconds of one call of ``fn`` (device work included), and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median_time(fn, device, repeats, warmup=None):
    """Median seconds over ``repeats`` calls of ``fn`` after one untimed call of
    ``warmup`` (default ``fn`` itself; pass a cheaper call of the same code path)."""
    (fn if warmup is None else warmup)()
    return float(np.median([timed(fn, device)[0] for _ in range(repeats)]))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg():
    try:
        return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def fmt_ratio(x):
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def verdict(ok):
    return "**met**" if ok else "**MISSED**"


def make_data(n_classes, n_per_class, n_features, *, seed, n_ood=0, n_id_test=0):
    """ReLU-like non-negative features with class structure, and OOD rows.

    Class c: ``relu(s * p_c + noise)``, p_c a sparse non-negative prototype, s a per-row
    scale around 1; OOD: the same with ``(p_a + p_b) / 2`` for two distinct classes.
    Returns X (train), y, X_id_test, y_id_test, X_ood, the head (class-mean linear
    classifier: coef p_c, intercept -|p_c|^2 / 2).
    """
    rng = np.random.default_rng(seed)
    protos = np.maximum(rng.normal(0.0, 1.0, (n_classes, n_features)), 0.0) * 1.5

    def rows(centres):
        scale = rng.lognormal(0.0, 0.2, (len(centres), 1))
        noise = rng.normal(0.0, 1.0, centres.shape)
        return np.maximum(scale * centres + noise, 0.0).astype(np.float32)

    y = np.repeat(np.arange(n_classes), n_per_class)
    X = rows(protos[y])
    y_test = rng.integers(0, n_classes, n_id_test)
    X_test = rows(protos[y_test])
    a = rng.integers(0, n_classes, n_ood)
    b = (a + rng.integers(1, max(n_classes, 2), n_ood)) % n_classes
    X_ood = rows(0.5 * (protos[a] + protos[b]))
    head = (protos, -0.5 * (protos**2).sum(axis=1))
    return X, y, X_test, y_test, X_ood, head


def fpr95(score_fn, X_id, X_ood):
    scores = np.concatenate([score_fn(X_id), score_fn(X_ood)])
    is_id = np.r_[np.ones(len(X_id), bool), np.zeros(len(X_ood), bool)]
    return fpr_at_tpr(is_id, scores)


def loglog_slope(xs, ts):
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def interleaved_times(fns, device, rounds):
    """Seconds of each of ``fns`` in ``rounds`` rounds that call them in turn, after one
    untimed call of each (so that a slow spell of a shared machine hits all of them)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            ts.append(timed(fn, device)[0])
    return times
