"""Speed and memory of RecLag and HE against the reference formulation and the hardware limit.

Issue 6 ("Speed and memory") and the speed benchmarks of issue 3. Every figure is measured
side by side in one run of this script, on one machine, and written to a markdown file:

1. RecLag fit, ``solver='sae'`` with the official settings (10 memories, beta 5, 5 draws,
   batches of 50, lr 1e-3) on 10 classes x 5,000 rows x 512 features, against
   :func:`sklearn_reclag._reference.fit_reclag_reference` (one class at a time, one batch at
   a time, autograd + torch.optim.Adam) on the same data from the same initial memories;
   seconds per epoch in interleaved rounds (minimum and median), the ratio, the
   50-epoch figure (fixed cost + 50 epochs, against 50 reference epochs),
   FPR95 of both on a held-out synthetic OOD set, and ``solver='em'``.
2. Scoring throughput of HE (``patterns='all'``) and RecLag against a bare chunked
   matmul + ``torch.logsumexp`` of the same shapes written inline here (the hardware-limit
   baseline, same 64 MiB block as the detectors), and against the naive one-shot
   (n_test x n_stored) product where it fits in 1 GiB.
3. Peak memory of HE scoring 100,000 x 512 test rows against 50,000 stored rows, in a fresh
   subprocess: peak RSS above the inputs on the CPU (``ru_maxrss`` and a psutil sampler),
   ``torch.cuda.max_memory_allocated`` on CUDA.
4. Scaling: fit and score time against n_samples, n_stored and n_features (3 values each,
   log-log slope).

The data are synthetic, generated with a seeded numpy RNG: non-negative ReLU-like
features with class structure (a sparse non-negative prototype per class, a per-row scale
and Gaussian noise, rectified); the OOD rows are rectified mixtures of two class prototypes.

CPU results are *ratios*: on a shared 2-core machine the absolute seconds say little, and
small-op workloads suffer badly when OpenMP threads compete with other processes (the
header records the load average). Absolute times are quoted only from a GPU run::

    python benchmarks/speed.py                  # full form, ~10-15 minutes on 2 CPU cores
    python benchmarks/speed.py --quick          # tiny shapes, seconds (CI, README demo)
    python benchmarks/speed.py --device cuda    # writes results/speed_cuda.md

``--output`` changes the results file (default ``benchmarks/results/speed_<cpu|cuda>.md``),
``--threads`` sets torch's intra-op threads (default: torch's / OpenMP's default) for
sections 2-4 and the cross-checks; on a CPU, section 1 times both sides at one thread and
at one thread per core and compares each at its fastest.
"""

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.utils import check_random_state

import sklearn_reclag
from sklearn_reclag import HopfieldEnergyDetector, RecLagDetector
from sklearn_reclag._reference import fit_reclag_reference
from sklearn_reclag.detectors._banks import pad_banks
from sklearn_reclag.detectors.reclag import initial_memories
from sklearn_reclag.metrics import fpr_at_tpr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
MIB = 2**20
# The detectors' largest scoring block (sklearn_reclag.detectors._banks._SCORE_BLOCK):
# the baseline gets the same memory budget.
BLOCK = 2**24
# The naive one-shot product is timed only when it fits in this many bytes.
NAIVE_LIMIT = GIB

# Official RecLag settings (specs/reclag.md).
OFFICIAL = {"n_memories": 10, "beta": 5.0, "n_draws": 5, "learning_batch_size": 50, "lr": 1e-3}
HE_BETA = 0.01

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
}


# ------------------------------------------------------------------------------ helpers
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default benchmarks/results/speed_<device>.md)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


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


# ----------------------------------------------------------------- 1. RecLag fit
def section_fit(cfg, device, seed, repeats, out):
    C, N, D = cfg["n_classes"], cfg["n_per_class"], cfg["n_features"]
    X, y, X_id, _, X_ood, head = make_data(
        C, N, D, seed=seed, n_ood=cfg["n_ood"], n_id_test=cfg["n_id_test"]
    )

    def detector(**kw):
        return RecLagDetector(**{**OFFICIAL, "head": head, "device": device,
                                 "random_state": seed, **kw})

    # The detector's stored patterns and initial memories, rebuilt for the reference.
    predicted = np.argmax(X @ head[0].T + head[1], axis=1)
    stored = predicted == y
    init, _ = initial_memories(
        X[stored], y[stored], C, OFFICIAL["n_memories"], init="random", init_norm=10.0,
        random_state=check_random_state(seed),
    )
    det0 = detector(max_epochs=0).fit(X, y)
    init_diff = float(np.abs(det0.memories_ - init).max())

    E_ref, E_b, E_full = cfg["ref_epochs"], cfg["batched_epochs"], cfg["full_epochs"]
    ref_kw = {"n_memories": OFFICIAL["n_memories"], "beta": OFFICIAL["beta"],
              "n_draws": OFFICIAL["n_draws"], "batch_size": OFFICIAL["learning_batch_size"],
              "lr": OFFICIAL["lr"], "seed": seed}

    def reference(epochs):
        # The reference runs on the CPU (plain torch code).
        return fit_reclag_reference(X[stored], y[stored], max_epochs=epochs,
                                    init_memories=init, **ref_kw)

    # Warm-ups, then rounds that interleave the two sides (reference: fits of 0 and 1
    # epoch; batched: fits of 0 and E_b epochs), so that a slow spell of a shared machine
    # hits both. Each figure is its minimum over the rounds, timeit's estimate of the
    # undisturbed time; the medians are reported beside them. On a CPU, every round runs
    # at one torch thread and at one per core: the batched solver's larger products use
    # more cores, the reference's small ones lose time to threading.
    fit_reclag_reference(X[:200], np.zeros(200, int), max_epochs=1, **ref_kw)
    detector(max_epochs=1).fit(X, y)
    initial_threads = torch.get_num_threads()
    thread_counts = sorted({1, os.cpu_count() or 1}) if device == "cpu" else [initial_threads]
    runs = {"ref0": lambda: reference(0), "ref1": lambda: reference(1),
            "batched0": lambda: detector(max_epochs=0).fit(X, y),
            "batchedE": lambda: detector(max_epochs=E_b).fit(X, y)}
    times = {(name, T): [] for name in runs for T in thread_counts}
    for _ in range(cfg["rounds"]):
        for T in thread_counts:
            torch.set_num_threads(T)
            for name, run in runs.items():
                times[name, T].append(timed(run, "cpu" if name.startswith("ref") else
                                            device)[0])
    torch.set_num_threads(initial_threads)

    def per_side(pick, T):
        ref0, ref1 = pick(times["ref0", T]), pick(times["ref1", T])
        t0, tE = pick(times["batched0", T]), pick(times["batchedE", T])
        return {"ref_epoch": ref1 - ref0, "ref_fixed": ref0,
                "batched_epoch": (tE - t0) / E_b, "batched_fixed": t0}

    def ratios(pick, ref_threads, batched_threads):
        ref, bat = per_side(pick, ref_threads), per_side(pick, batched_threads)
        return {"epoch": ref["ref_epoch"] / bat["batched_epoch"],
                "fit50": (ref["ref_fixed"] + 50 * ref["ref_epoch"])
                / (bat["batched_fixed"] + 50 * bat["batched_epoch"]),
                "ref": ref, "batched": bat, "threads": (ref_threads, batched_threads)}

    def fastest(key):
        return min(thread_counts, key=lambda T: per_side(min, T)[key])

    ref_T, batched_T = fastest("ref_epoch"), fastest("batched_epoch")
    best = ratios(min, ref_T, batched_T)
    typical = ratios(np.median, ref_T, batched_T)
    same = {T: ratios(min, T, T) for T in thread_counts}
    t_full, det_full = timed(lambda: detector(max_epochs=E_full).fit(X, y), device)
    t_ref, ref_memories = timed(lambda: reference(E_ref), "cpu")

    # FPR95 after the same number of epochs; the batched solver over a few seeds (noise).
    fprs = []
    det_same = None
    for s in range(cfg["fpr_seeds"]):
        det = detector(max_epochs=E_ref, random_state=seed + s).fit(X, y)
        det_same = det if s == 0 else det_same
        fprs.append(fpr95(det.score_samples, X_id, X_ood))
    ref_det = copy.deepcopy(det_same)
    ref_det.memories_ = ref_memories.astype(det_same.memories_.dtype)
    fpr_ref = fpr95(ref_det.score_samples, X_id, X_ood)
    fpr_full = fpr95(det_full.score_samples, X_id, X_ood)
    fpr_init = fpr95(det0.score_samples, X_id, X_ood)
    spread = float(np.std(fprs))
    # Within noise: the reference lies within the batched seeds' range widened by 2 std
    # (and by one OOD row, the resolution of FPR95).
    tol = 2 * spread + 1.0 / len(X_ood)
    within = min(fprs) - tol <= fpr_ref <= max(fprs) + tol

    t_em, det_em = timed(
        lambda: detector(solver="em", max_epochs=50).fit(X, y), device)
    em_repeats = [t_em] + [timed(lambda: detector(solver="em", max_epochs=50).fit(X, y),
                                 device)[0] for _ in range(max(repeats - 1, 0))]
    t_em = float(np.median(em_repeats))
    fpr_em = fpr95(det_em.score_samples, X_id, X_ood)

    ok = best["epoch"] >= 20 and best["fit50"] >= 20
    ref50 = best["ref"]["ref_fixed"] + 50 * best["ref"]["ref_epoch"]

    def seconds(values):
        return ", ".join(f"{v:.3f}" for v in values)

    out += [
        "## 1. RecLag fit: batched `solver='sae'` vs the one-class-at-a-time reference",
        "",
        (f"Data: {C} classes x {N:,} rows x {D} features (synthetic, non-negative, seeded), "
        f"{int(stored.sum()):,} stored patterns (rows the head classifies correctly). "
        f"Official settings: {OFFICIAL}. Both start from the same initial memories "
        f"(max |difference| {init_diff:.1e}). The reference "
        "(`sklearn_reclag._reference.fit_reclag_reference`: per class, per batch, autograd, "
        "`torch.optim.Adam`) runs on the CPU; the batched solver on "
        f"`{device}`."),
        "",
        (f"Timing: {cfg['rounds']} rounds; each times the reference's fits of 0 and 1 "
        f"epoch and the batched fits of 0 and {E_b} epochs (0 epochs: the fixed cost; "
        "batched: validation, head routing, initialisation, batching, gamma calibration), "
        "at each torch thread count in "
        f"{thread_counts}, so that a slow spell of the shared machine hits both sides. A "
        "figure is the minimum over the rounds (the undisturbed time, as timeit advises); "
        "medians beside it. Per epoch = (t(E) - t(0)) / E; a 50-epoch fit = t(0) + 50 "
        "epochs (for the batched solver in the full form, E = 50: the 50-epoch fit is "
        "timed whole, and the noisy fixed cost weighs 1/50 on its per-epoch figure). "
        "The headline compares each side at its fastest thread count."),
        "",
        "| threads | | seconds in each round | minimum | median |",
        "|---:|---|---|---:|---:|",
        *[f"| {T} | {label} | {seconds(times[name, T])} | {min(times[name, T]):.3f} | "
          f"{np.median(times[name, T]):.3f} |"
          for T in thread_counts
          for name, label in (("ref0", "reference, 0 epochs"), ("ref1", "reference, 1 epoch"),
                              ("batched0", "batched `RecLagDetector.fit`, 0 epochs"),
                              ("batchedE", f"batched `RecLagDetector.fit`, {E_b} epochs"))],
        "",
        "| reference threads | batched threads | per epoch: reference / batched (s) | "
        "speed-up per epoch | speed-up of a 50-epoch fit |",
        "|---:|---:|---|---:|---:|",
        *[f"| {r['threads'][0]} | {r['threads'][1]} | {r['ref']['ref_epoch']:.3f} / "
          f"{r['batched']['batched_epoch']:.4f} | {fmt_ratio(r['epoch'])} | "
          f"{fmt_ratio(r['fit50'])} |"
          for r in [*same.values(), *([best] if ref_T != batched_T else [])]],
        "",
        (f"- Each side at its fastest thread count (reference {ref_T}, batched "
        f"{batched_T}): speed-up per epoch **{fmt_ratio(best['epoch'])}**, of a whole "
        f"50-epoch fit **{fmt_ratio(best['fit50'])}** (medians: "
        f"{fmt_ratio(typical['epoch'])}, {fmt_ratio(typical['fit50'])})."),
        f"- Target >= 20x (both, minima, each side at its fastest): {verdict(ok)}.",
        (f"- Cross-checks, one run each at {initial_threads} thread(s): a measured "
        f"{E_full}-epoch batched fit took {t_full:.2f} s; the reference's {E_ref}-epoch run "
        f"for FPR95 below took {t_ref:.2f} s."),
        (f"- `solver='em'` fit (max_iter 50, ran {det_em.n_iter_} iterations, "
        f"{initial_threads} thread(s)): median {t_em:.2f} s over {len(em_repeats)} runs, "
        f"{fmt_ratio(ref50 / t_em)} against a 50-epoch reference fit."),
        "",
        (f"FPR95 (ID: {len(X_id):,} held-out rows, OOD: {len(X_ood):,} rectified two-class "
        f"mixtures), lower is better, after {E_ref} epochs:"),
        "",
        "| model | FPR95 |",
        "|---|---:|",
        f"| initial memories (0 epochs) | {fpr_init:.4f} |",
        f"| reference, {E_ref} epochs | {fpr_ref:.4f} |",
        (f"| batched, {E_ref} epochs, {cfg['fpr_seeds']} seeds | "
        f"{np.mean(fprs):.4f} +- {spread:.4f} ({', '.join(f'{f:.4f}' for f in fprs)}) |"),
        f"| batched, {E_full} epochs | {fpr_full:.4f} |",
        f"| `solver='em'` | {fpr_em:.4f} |",
        "",
        (f"- Reference within the noise of the batched solver (seed range +- 2 std + one OOD "
        f"row): {verdict(within)}. The two draw different random numbers, so they are "
        "different samples of the same stochastic training; that they optimise the same "
        "objective step for step when given the same draws is checked exactly by "
        "`tests/test_reclag.py::test_sae_batched_equals_per_class_reference_step_for_step`."),
        "",
    ]
    return {"ratio_epoch": best["epoch"], "ratio_50": best["fit50"], "fpr_ref": fpr_ref,
            "fpr_batched": fprs, "t_em": t_em}


# ------------------------------------------------------------- 2. scoring throughput
def baseline_lse(X, stored, beta, device, block=BLOCK):
    """The hardware-limit baseline: chunked ``logsumexp(beta * V S^T)`` over all stored
    rows, one GEMM per chunk of test rows, from a numpy array to a numpy array."""
    S = torch.as_tensor(stored, device=device)
    rows = max(1, block // S.shape[0])
    out = []
    with torch.no_grad():
        for start in range(0, len(X), rows):
            V = torch.as_tensor(X[start:start + rows], device=device)
            out.append(torch.logsumexp(beta * (V @ S.T), dim=1))
        return torch.cat(out).cpu().numpy()


def naive_lse(X, stored, beta, device):
    """The naive one-shot product: the whole (n_test x n_stored) matrix at once."""
    with torch.no_grad():
        V = torch.as_tensor(X, device=device)
        S = torch.as_tensor(stored, device=device)
        return torch.logsumexp(beta * (V @ S.T), dim=1).cpu().numpy()


def baseline_route(X, head, device, block=BLOCK):
    """The head's argmax of every row, chunked: the routing of ``routing='predicted'``."""
    coef, intercept = (torch.as_tensor(a, device=device, dtype=torch.float32) for a in head)
    rows = max(1, block // coef.shape[0])
    with torch.no_grad():
        return torch.cat([
            torch.addmm(intercept, torch.as_tensor(X[start:start + rows], device=device),
                        coef.T).argmax(dim=1)
            for start in range(0, len(X), rows)
        ]).cpu().numpy()


def baseline_routed_lse(X, banks, bank_mask, beta, device, *, head=None, bank_of_row=None,
                        block=BLOCK):
    """The same baseline for rows routed to one bank each: the rows of bank c against
    the stored rows of bank c only (the work of routing='predicted'). The routing is
    the head's argmax computed here (``head``, timed with the rest), or given
    (``bank_of_row``, computed beforehand)."""
    if bank_of_row is None:
        bank_of_row = baseline_route(X, head, device, block)
    out = np.empty(len(X), dtype=np.float32)
    for c in range(len(banks)):
        rows = np.flatnonzero(bank_of_row == c)
        if len(rows):
            out[rows] = baseline_lse(X[rows], banks[c][bank_mask[c]], beta, device, block)
    return out


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


def section_throughput(cfg, device, seed, out, he_model, rl_model):
    # A GPU scores the 100,000 rows in well under a second; a 2-core CPU takes
    # minutes per pass, hence fewer rows there.
    n_test = cfg["n_test_memory"] if device == "cuda" else cfg["n_test_throughput"]
    D = cfg["n_features"]
    C = cfg["n_classes"]
    # Held-out rows of the training classes (scoring speed can depend on the data).
    X_test = make_data(C, 2, D, seed=seed, n_id_test=n_test)[2]
    results = {}
    rows = []
    for name, model in (("HE (`patterns='all'`)", he_model),
                        (f"RecLag ({C} x {rl_model.n_memories} memories)", rl_model)):
        beta = model.beta
        banks = model.memories_.astype(np.float32)
        mask = model.memory_mask_
        stored = banks[mask]
        n_stored = len(stored)
        head = (model.head_coef_, model.head_intercept_)
        for routing in ("predicted", "max"):
            scorer = copy.deepcopy(model).set_params(routing=routing)
            fns = [partial(scorer.score_samples, X_test)]
            if routing == "predicted":
                fns += [partial(baseline_routed_lse, X_test, banks, mask, beta, device,
                                head=head),
                        partial(baseline_routed_lse, X_test, banks, mask, beta, device,
                                bank_of_row=baseline_route(X_test, head, device))]
                work = f"each row vs its bank (~{n_stored // C:,} stored rows)"
            else:
                fns += [partial(baseline_lse, X_test, stored, beta, device)]
                work = f"each row vs all {n_stored:,} stored rows"
            times = interleaved_times(fns, device, cfg["rounds"])
            t_det, t_base = min(times[0]), min(times[1])
            ratio = t_base / t_det
            median_ratio = np.median(times[1]) / np.median(times[0])
            naive = "-"
            naive_rows = min(n_test, NAIVE_LIMIT // (4 * n_stored))
            if routing == "predicted":
                bank_only = min(times[2]) / t_det
                naive = (f"routing excluded from the baseline (given, untimed): "
                         f"{100 * bank_only:.0f} %")
            elif naive_rows >= min(n_test, 1000):
                X_n = X_test[:naive_rows]
                td, tn = (min(t) for t in interleaved_times(
                    [partial(scorer.score_samples, X_n),
                     partial(naive_lse, X_n, stored, beta, device)], device, cfg["rounds"]))
                naive = (f"naive at {100 * td / tn:.0f} % of the detector's speed "
                         f"(on {naive_rows:,} rows)")
            else:
                naive = "not run (> 1 GiB)"
            results[(name, routing)] = ratio
            rows.append(
                f"| {name} | `{routing}` | {n_test:,} x {D}; {work} | {n_test / t_det:,.0f} | "
                f"{n_test / t_base:,.0f} | **{100 * ratio:.0f} %** {verdict(ratio >= 0.7)} "
                f"| {100 * median_ratio:.0f} % | {naive} |")
    he_ratio = min(v for (n, _), v in results.items() if n.startswith("HE"))
    rl_ratio = min(v for (n, _), v in results.items() if n.startswith("RecLag"))
    smaller = "" if cfg is QUICK or n_test >= 100_000 else (
        f" The throughput test uses {n_test:,} test rows rather than 100,000 to keep the "
        "run short on a 2-core CPU; the 100,000-row pass is timed in section 3.")
    out += [
        "## 2. Scoring throughput vs the bare chunked matmul + logsumexp",
        "",
        "Baseline (written inline in this script): for each chunk of test rows, "
        "`torch.logsumexp(beta * (V @ S.T), dim=1)`, chunks sized to the detectors' block "
        f"({BLOCK * 4 // MIB} MiB of logits), numpy in, numpy out, doing the same work as "
        "the detector: with `routing='predicted'` the detectors route each row by the "
        "head's argmax and score it against the bank of that class only, so the baseline "
        "computes the same argmax (a chunked matmul with the head) and multiplies the rows "
        "of each class by that class's stored rows; the figure without the routing (argmax "
        "given, untimed) is in the last column. With `routing='max'` every row meets every "
        "stored row. The detectors' times are the public `score_samples` (input "
        "validation, head, per-class online logsumexp, float64 output included). "
        f"{cfg['rounds']} interleaved rounds of detector and baselines; rows/s from the "
        "minimum time of each (the median ratio beside it). Naive: the whole "
        "(n_test x n_stored) product in one piece, where it fits in 1 GiB; the test rows "
        "are held-out rows of the training classes." + smaller,
        "",
        ("| detector | routing | work | detector rows/s | baseline rows/s | "
        "detector / baseline (target >= 70 %) | median ratio | naive one-shot / note |"),
        "|---|---|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        (f"- HE at >= 70 % of the baseline (worst routing): {verdict(he_ratio >= 0.7)} "
        f"({100 * he_ratio:.0f} %)."),
        (f"- RecLag at >= 70 % of the baseline (worst routing): {verdict(rl_ratio >= 0.7)} "
        f"({100 * rl_ratio:.0f} %)."),
        "",
    ]
    return {"he": he_ratio, "reclag": rl_ratio}


# ------------------------------------------------------------------- 3. peak memory
_CHILD = """
import json, resource, sys, threading, time
import joblib, numpy as np, psutil, torch
threads, device, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if threads > 0:
    torch.set_num_threads(threads)
X = np.load(folder + "/X_test.npy")
model = joblib.load(folder + "/model.joblib")
model.score_samples(X[:64])  # warm-up: torch's lazy initialisation is not the scoring
proc = psutil.Process()
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None
try:  # Linux >= 4.0: writing 5 resets the peak RSS (VmHWM) to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
rss0 = proc.memory_info().rss
hwm0 = hwm()
maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = [rss0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)
thread = threading.Thread(target=sample, daemon=True)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    cuda0 = torch.cuda.memory_allocated()
thread.start()
start = time.perf_counter()
scores = model.score_samples(X)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
stop.set(); thread.join()
result = dict(rss0=rss0, maxrss0=maxrss0, sampled_peak=peak[0], hwm0=hwm0, hwm=hwm(),
              maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              seconds=seconds, finite=bool(np.isfinite(scores).all()))
if device == "cuda":
    result["cuda_peak"] = torch.cuda.max_memory_allocated() - cuda0
print(json.dumps(result))
"""


def section_memory(cfg, device, seed, threads, out, he_model):
    import joblib

    n_test, D = cfg["n_test_memory"], cfg["n_features"]
    C = cfg["n_classes"]
    X_test = make_data(C, 2, D, seed=seed, n_id_test=n_test)[2]
    n_stored = int(he_model.memory_mask_.sum())
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "X_test.npy", X_test)
        joblib.dump(he_model, Path(folder) / "model.joblib")
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(threads or 0), device, folder],
            capture_output=True, text=True, check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"memory subprocess failed:\n{done.stderr}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    input_bytes = X_test.nbytes + he_model.memories_.nbytes
    naive_bytes = 4 * n_test * n_stored
    above_maxrss = max(r["maxrss"] - r["rss0"], 0)
    above_sampled = max(r["sampled_peak"] - r["rss0"], 0)
    # The kernel's peak RSS, reset just before scoring: clean when the reset worked.
    hwm_reset = r["hwm0"] is not None and r["hwm0"] <= r["rss0"] * 1.01
    above_hwm = max(r["hwm"] - r["rss0"], 0) if hwm_reset else None
    # Whether the ru_maxrss reading is a clean one: the loading peak lay below the
    # pre-scoring RSS (otherwise it is an upper bound, loading included).
    clean = r["maxrss0"] <= r["rss0"] * 1.01
    if device == "cuda":
        headline = r["cuda_peak"]
    elif above_hwm is not None:
        headline = max(above_hwm, above_sampled)
    else:
        headline = max(above_maxrss if clean else 0, above_sampled)
    ok = headline < GIB
    out += [
        "## 3. Peak memory of HE scoring",
        "",
        f"`HopfieldEnergyDetector.score_samples` on {n_test:,} x {D} test rows (float32) "
        f"against {n_stored:,} stored rows, in a fresh subprocess that loads the inputs and "
        "the fitted model (joblib), warms up, then scores. On the CPU the peak above the "
        "inputs is the process's peak RSS during scoring minus its RSS just before: the "
        "kernel's high-water mark VmHWM reset just before scoring (`/proc/self/clear_refs`), "
        "a psutil sampler every 5 ms, and `ru_maxrss`"
        + ("" if clean else " (which cannot be reset: here it is the loading peak, an upper "
           "bound, not used for the verdict)")
        + "; on CUDA `torch.cuda.max_memory_allocated`.",
        "",
        "| quantity | MiB |",
        "|---|---:|",
        (f"| inputs: test rows ({X_test.nbytes / MIB:,.0f}) + stored memories "
        f"({he_model.memories_.nbytes / MIB:,.0f}) | {input_bytes / MIB:,.0f} |"),
        "| peak RSS above the inputs (VmHWM, reset before scoring) | "
        + (f"{above_hwm / MIB:,.0f} |" if above_hwm is not None else "reset unavailable |"),
        (f"| peak RSS above the inputs (ru_maxrss{'' if clean else ', upper bound'}) | "
        f"{above_maxrss / MIB:,.0f} |"),
        f"| peak RSS above the inputs (psutil sampling) | {above_sampled / MIB:,.0f} |",
    ]
    if device == "cuda":
        out.append(f"| CUDA max_memory_allocated during scoring | {r['cuda_peak'] / MIB:,.0f} |")
    out += [
        (f"| the naive one-shot (n_test x n_stored) float32 product (computed, not allocated) "
        f"| {naive_bytes / MIB:,.0f} |"),
        "",
        (f"- Under 1 GiB above the inputs: {verdict(ok)} "
        f"({headline / MIB:,.0f} MiB; the naive product alone would be "
        f"{naive_bytes / GIB:,.1f} GiB). Scores finite: {r['finite']}. "
        f"Scoring took {r['seconds']:.1f} s ({n_test / r['seconds']:,.0f} rows/s)."),
        "",
    ]
    return {"peak_mib": headline / MIB, "ok": ok}


# ----------------------------------------------------------------------- 4. scaling
def section_scaling(cfg, device, seed, repeats, out):
    sf, sh, sr = cfg["scale_fit"], cfg["scale_he"], cfg["scale_reclag"]
    base_n, base_m, base_d = sf["n_per_class"][1], sf["n_memories"][1], sf["n_features"][1]
    C = cfg["n_classes"]
    lines = []

    def fit_time(n, m, d):
        X, y, *_, head = make_data(C, n, d, seed=seed)
        det = RecLagDetector(**{**OFFICIAL, "n_memories": m}, max_epochs=sf["epochs"],
                             head=head, device=device, random_state=seed)
        return median_time(lambda: det.fit(X, y), device, repeats)

    def series(label, param, values, fn):
        times = [fn(v) for v in values]
        cells = " | ".join(f"{v:,} | {t:.3g}" for v, t in zip(values, times))
        lines.append(f"| {label} | {param} | {cells} | **{loglog_slope(values, times):.2f}** |")

    fit_label = f"RecLag fit (`sae`, {sf['epochs']} epochs)"
    series(fit_label, "rows per class (x10 classes)", sf["n_per_class"],
           lambda n: fit_time(n, base_m, base_d))
    series(fit_label, "n_memories per class (stored)", sf["n_memories"],
           lambda m: fit_time(base_n, m, base_d))
    series(fit_label, "n_features", sf["n_features"], lambda d: fit_time(base_n, base_m, d))

    def he_time(n_test, n_stored, d):
        X, y, *_, head = make_data(C, -(-n_stored // C), d, seed=seed)
        he = HopfieldEnergyDetector(beta=HE_BETA, head=head, device=device)
        # Fit cheaply (the offset pass is not what is timed): one stored row per class
        # scores the training rows, then the full banks are swapped in.
        per_class = -(-n_stored // C)
        he.fit(X[:: max(per_class // 2, 1)], y[:: max(per_class // 2, 1)])
        he.memories_, he.memory_mask_ = pad_banks(X, y, C)
        Xt = make_data(C, 2, d, seed=seed, n_id_test=n_test)[2]
        return median_time(lambda: he.score_samples(Xt), device, repeats,
                           warmup=lambda: he.score_samples(Xt[:200]))

    label = f"HE score ({C} classes)"
    series(label, "test rows", sh["n_test"], lambda n: he_time(n, sh["n_stored"][1],
                                                               sh["n_features"][1]))
    series(label, "stored rows", sh["n_stored"], lambda s: he_time(sh["n_test"][1], s,
                                                                   sh["n_features"][1]))
    series(label, "n_features", sh["n_features"], lambda d: he_time(sh["n_test"][1],
                                                                    sh["n_stored"][1], d))

    def rl_time(n_test, m, d):
        X, y, *_, head = make_data(C, 200, d, seed=seed)
        det = RecLagDetector(**{**OFFICIAL, "n_memories": m}, solver="em", max_epochs=2,
                             head=head, device=device, random_state=seed).fit(X, y)
        Xt = make_data(C, 2, d, seed=seed, n_id_test=n_test)[2]
        return median_time(lambda: det.score_samples(Xt), device, repeats)

    label = f"RecLag score ({C} classes)"
    series(label, "test rows", sr["n_test"], lambda n: rl_time(n, sr["n_memories"][1],
                                                               sr["n_features"][1]))
    series(label, "n_memories per class (stored)", sr["n_memories"],
           lambda m: rl_time(sr["n_test"][1], m, sr["n_features"][1]))
    series(label, "n_features", sr["n_features"], lambda d: rl_time(sr["n_test"][1],
                                                                    sr["n_memories"][1], d))
    out += [
        "## 4. Scaling (log-log)",
        "",
        ("Seconds (median of "
        f"{repeats}) as one size varies and the others stay at the middle value; the slope "
        "is the least-squares fit of log(time) on log(size) (1 = linear). Fit times include "
        "the fixed cost of `fit` (validation, head routing, gamma calibration)."),
        "",
        "| what | varies | size | s | size | s | size | s | slope |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
    ]


# --------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve(args.device)
    cfg = QUICK if args.quick else FULL
    output = args.output or RESULTS / f"speed_{device}.md"
    repeats = cfg["repeats"]
    started = time.perf_counter()
    load_start = loadavg()
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv)

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none used"
    out = [
        f"# Speed and memory ({'quick' if args.quick else 'full'} form, {device})",
        "",
        (f"Written by `{command.strip()}` on {datetime.date.today().isoformat()}; do not "
        "edit by hand."),
        "",
        (f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores), torch intra-op threads: "
        f"{torch.get_num_threads()}"),
        f"- GPU: {gpu}",
        (f"- torch {torch.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}, sklearn-reclag {sklearn_reclag.__version__}"),
        f"- float32; medians of {repeats} repeats after a warm-up unless said otherwise",
        f"- Load average (1/5/15 min) at the start: {load_start} on {os.cpu_count()} cores"
        + (" (a shared machine: other processes were running; with more than one torch "
           "thread, OpenMP threads then wait on each other and small-op workloads slow down "
           "by an order of magnitude, hence `--threads 1` on such a machine)"
           if os.getloadavg()[0] > 1.0 and hasattr(os, "getloadavg") else ""),
        "- " + ("Absolute times are meaningful on this GPU run." if device == "cuda" else
                "CPU run: read the **ratios**; absolute seconds depend on the machine and its "
                "load and are quoted only from a GPU run."),
        "",
    ]
    body = []
    s1 = section_fit(cfg, device, args.seed, repeats, body)
    print(f"[{time.perf_counter() - started:.0f}s] 1. fit: {fmt_ratio(s1['ratio_epoch'])} per "
          "epoch", flush=True)

    X, y, *_, head = make_data(cfg["n_classes"], cfg["n_per_class"], cfg["n_features"],
                               seed=args.seed)
    he = HopfieldEnergyDetector(beta=HE_BETA, head=head, device=device).fit(X, y)
    rl = RecLagDetector(**OFFICIAL, solver="em", head=head, device=device,
                        random_state=args.seed).fit(X, y)
    s2 = section_throughput(cfg, device, args.seed, body, he, rl)
    print(f"[{time.perf_counter() - started:.0f}s] 2. throughput: HE {100 * s2['he']:.0f} %, "
          f"RecLag {100 * s2['reclag']:.0f} %", flush=True)
    s3 = section_memory(cfg, device, args.seed, args.threads, body, he)
    print(f"[{time.perf_counter() - started:.0f}s] 3. memory: {s3['peak_mib']:.0f} MiB",
          flush=True)
    section_scaling(cfg, device, args.seed, repeats, body)
    print(f"[{time.perf_counter() - started:.0f}s] 4. scaling done", flush=True)

    summary = [
        "## Summary",
        "",
        "| target | result | |",
        "|---|---|---|",
        (f"| RecLag `sae` fit >= 20x the reference | {fmt_ratio(s1['ratio_epoch'])} per epoch, "
        f"{fmt_ratio(s1['ratio_50'])} for a 50-epoch fit (minima of interleaved rounds) | "
        f"{verdict(s1['ratio_epoch'] >= 20 and s1['ratio_50'] >= 20)} |"),
        (f"| HE scoring >= 70 % of the bare chunked matmul + logsumexp (worst routing) | "
        f"{100 * s2['he']:.0f} % | {verdict(s2['he'] >= 0.7)} |"),
        (f"| RecLag scoring >= 70 % of the bare chunked matmul + logsumexp (worst routing) | "
        f"{100 * s2['reclag']:.0f} % | {verdict(s2['reclag'] >= 0.7)} |"),
        (f"| HE scoring {cfg['n_test_memory']:,} x {cfg['n_features']} vs "
        f"{cfg['n_classes'] * cfg['n_per_class']:,} stored: < 1 GiB above the inputs | "
        f"{s3['peak_mib']:,.0f} MiB | {verdict(s3['ok'])} |"),
        "",
    ]
    elapsed = time.perf_counter() - started
    footer = [
        (f"Total run time {elapsed / 60:.1f} min. Load average (1/5/15 min) at the start: "
        f"{load_start}; at the end: {loadavg()}."),
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(out + summary + body + footer))
    print(f"wrote {output}")
    if args.output is None and not args.quick:
        print(f"wrote {collect()}")
    return output


if __name__ == "__main__":
    main()
