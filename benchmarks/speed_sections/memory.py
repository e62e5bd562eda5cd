"""Section 3 of benchmarks/speed.py: peak memory of HE scoring, in a fresh subprocess."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import GIB, MIB, make_data, verdict

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
