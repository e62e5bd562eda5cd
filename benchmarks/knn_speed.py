"""KNN speed: KNNDetector scoring against scikit-learn's and faiss's exact brute force.

Issue 12 ("KNN speed"). ``KNNDetector.score_samples`` (deep KNN, k-th nearest neighbour
on L2-normalised rows) against the two searches the deep-KNN literature uses:
scikit-learn's ``NearestNeighbors(algorithm='brute').kneighbors`` (pytorch-ood's) and
faiss's ``IndexFlatL2.search`` (the paper's code and OpenOOD's; faiss-cpu is an optional
benchmark dependency: without it the script says so and runs the rest). All three are
exact and read the same L2-normalised float32 rows: 100,000 x 512 queries against 50,000
training rows, k = 50 (synthetic, seeded, non-negative ReLU-like features with class
structure).

Every measurement runs in a fresh subprocess that loads the inputs, sets its threads
(``torch.set_num_threads``, threadpoolctl for BLAS and OpenMP, ``faiss.omp_set_num_threads``),
warms up on 64 queries, then answers all the queries once: the wall time, and the peak
resident memory above the process's memory just before (the kernel's high-water mark
VmHWM, reset just before; a psutil sampler every 5 ms; on CUDA also
``torch.cuda.max_memory_allocated``). The first rows' k-th distances of the three are
compared. The bare matrix products (torch's float32, and the OpenBLAS float32 and float64
products that numpy and scikit-learn use) are timed in the same way, because the search is
bound by them: their rates say where the ratios come from::

    python benchmarks/knn_speed.py                # full size, 1 and 2 threads: 35-60 min
    python benchmarks/knn_speed.py --quick        # small shapes, a minute; prints the table
    python benchmarks/knn_speed.py --device cuda  # KNNDetector on the GPU: knn_speed_cuda.md

``--threads 1,2`` sets the thread counts, ``--output`` the results file (default
``benchmarks/results/knn_speed.md``, or ``knn_speed_cuda.md`` with ``--device cuda``;
with ``--quick`` no file unless ``--output`` is given).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import normalize

import sklearn_reclag
from sklearn_reclag import KNNDetector
from sklearn_reclag.base import THRESHOLD_ROWS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402
from speed import cpu_model, fmt_ratio, loadavg, verdict  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB, MIB = 2**30, 2**20
FULL = {"n_train": 50_000, "n_queries": 100_000, "n_features": 512, "k": 50}
QUICK = {"n_train": 2_000, "n_queries": 3_000, "n_features": 64, "k": 10}
# Queries whose k-th distances are compared across the three searches.
N_CHECK = 2_000
# The shape of the bare products timed: one chunk of queries against one chunk of
# training rows, as KNNDetector multiplies them on a CPU.
GEMM_SHAPE = (4096, 4096)
TARGET_SPEEDUP = 2.0


# ------------------------------------------------------------------------------ data
def make_features(n_rows, n_features, rng, prototypes):
    """Rectified noisy copies of sparse non-negative class prototypes (float32)."""
    labels = rng.integers(0, len(prototypes), n_rows)
    scale = rng.lognormal(0.0, 0.2, (n_rows, 1)).astype(np.float32)
    rows = scale * prototypes[labels]
    rows += rng.standard_normal((n_rows, n_features), dtype=np.float32)
    return np.maximum(rows, 0, out=rows)


def make_data(cfg, seed):
    """L2-normalised training rows and queries from the same distribution."""
    rng = np.random.default_rng(seed)
    D = cfg["n_features"]
    prototypes = (1.5 * np.maximum(rng.standard_normal((10, D)), 0)
                  * (rng.random((10, D)) < 0.3)).astype(np.float32)
    train = make_features(cfg["n_train"], D, rng, prototypes)
    queries = make_features(cfg["n_queries"], D, rng, prototypes)
    return normalize(train, copy=False), normalize(queries, copy=False)


# ----------------------------------------------------------------- the measured child
def child(method, threads, folder, device, k):
    """One measurement in this (fresh) process; prints one JSON line."""
    import resource
    import threading

    import psutil
    from threadpoolctl import threadpool_limits

    folder = Path(folder)
    queries = np.load(folder / "queries.npy")
    if method == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        search = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(
            np.load(folder / "train.npy"))
        run = lambda Q: search.kneighbors(Q)[0][:, -1]  # noqa: E731
    elif method == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        train = np.load(folder / "train.npy")
        index = faiss.IndexFlatL2(train.shape[1])
        index.add(train)
        del train  # the index holds its own copy
        # faiss returns squared distances.
        run = lambda Q: np.sqrt(np.maximum(index.search(Q, k)[0][:, -1], 0))  # noqa: E731
    elif method in ("knn", "knn-faiss"):
        import joblib

        if method == "knn-faiss":
            import faiss

            faiss.omp_set_num_threads(threads)
        model = joblib.load(folder / f"model_{method}.joblib")
        run = lambda Q: -model.score_samples(Q)  # noqa: E731
    elif method == "gemm":
        print(json.dumps(_gemm_rates(queries, threads, device)))
        return
    else:
        raise ValueError(method)
    torch.set_num_threads(threads)
    limits = threadpool_limits(threads)  # BLAS and OpenMP of the libraries loaded above
    on_cuda = method == "knn" and device == "cuda"
    run(queries[:64])  # warm-up: lazy initialisation is not the search

    proc = psutil.Process()
    _reset_peak_rss()
    rss0, hwm0 = proc.memory_info().rss, _peak_rss()
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda0 = torch.cuda.memory_allocated()
    sampler.start()
    start = time.perf_counter()
    kth = run(queries)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    limits.restore_original_limits()
    np.save(folder / f"kth_{method}_{threads}.npy", np.asarray(kth[:N_CHECK], np.float64))
    result = {
        "seconds": seconds, "rss0": rss0, "hwm0": hwm0, "hwm": _peak_rss(),
        "sampled_peak": peak[0],
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "finite": bool(np.isfinite(kth).all()),
        "input_bytes": int(queries.nbytes + np.load(folder / "train.npy", mmap_mode="r").nbytes),
    }
    if on_cuda:
        result["cuda_peak"] = torch.cuda.max_memory_allocated() - cuda0
    print(json.dumps(result))


def _reset_peak_rss():
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gemm_rates(queries, threads, device):
    """GFLOP/s of one chunk-sized product: torch float32 (on ``device``), and numpy's
    OpenBLAS float32 and float64 (scikit-learn multiplies float32 rows in float64)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    m, n = GEMM_SHAPE
    A = queries[:m]
    B = queries[-n:]
    flops = 2.0 * m * n * A.shape[1]
    rates = {}

    def best_of(fn, sync=lambda: None, repeats=3):
        fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    tdev = torch.device("cuda" if device == "cuda" else "cpu")
    tA, tB = torch.from_numpy(A).to(tdev), torch.from_numpy(B).to(tdev)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates["torch_float32"] = best_of(lambda: tA @ tB.T, sync)
    with threadpool_limits(threads):
        rates["openblas_float32"] = best_of(lambda: A @ B.T)
        A64, B64 = A.astype(np.float64), B.astype(np.float64)
        rates["openblas_float64"] = best_of(lambda: A64 @ B64.T)
    return rates


def measure(method, threads, folder, device, k):
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, "--threads", str(threads),
         "--folder", str(folder), "--device", device, "--k", str(k)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} at {threads} threads failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_above_inputs(r, device):
    """Bytes above the process's memory just before the search (the inputs loaded)."""
    sampled = max(r["sampled_peak"] - r["rss0"], 0)
    # The kernel's peak, when its reset worked (VmHWM then starts at the current RSS).
    if r["hwm0"] is not None and r["hwm0"] <= r["rss0"] * 1.01:
        host = max(r["hwm"] - r["rss0"], sampled)
    else:
        host = sampled
    return host + (r.get("cuda_peak", 0) if device == "cuda" else 0)


# --------------------------------------------------------------------------- report
def faiss_status():
    try:
        import faiss
    except ImportError:
        return None
    return f"faiss-cpu {faiss.__version__} ({faiss.get_compile_options()})"


def blas_libraries():
    from threadpoolctl import threadpool_info

    import sklearn.neighbors  # noqa: F401  (loads scikit-learn's and scipy's libraries)

    seen = []
    for lib in threadpool_info():
        if lib["user_api"] == "blas":
            seen.append(f"{lib['internal_api']} {lib.get('version')} "
                        f"({lib.get('architecture')} kernels, in "
                        f"{Path(lib['filepath']).parent.name})")
    torch_blas = "MKL" if torch.backends.mkl.is_available() else "torch's own BLAS"
    return f"torch float32 products: {torch_blas}; numpy / scipy: " + "; ".join(seen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where KNNDetector runs (the peers always run on the CPU)")
    parser.add_argument("--quick", action="store_true", help="small shapes, seconds")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, int(args.threads), args.folder, args.device, args.k)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine.")

    cfg = QUICK if args.quick else FULL
    threads = [int(t) for t in args.threads.split(",")]
    device, k = args.device, cfg["k"]
    command = "python benchmarks/knn_speed.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    started, load_start = time.perf_counter(), loadavg()
    faiss_found = faiss_status()
    # knn-faiss: KNNDetector(algorithm='faiss'), faiss's search and the detector's own
    # distances; knn is the torch search (algorithm='brute').
    methods = ["knn", "sklearn"] + (["faiss"] if faiss_found else []) + (
        ["knn-faiss"] if faiss_found and device == "cpu" else [])

    train, queries = make_data(cfg, args.seed)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        np.save(folder / "train.npy", train)
        np.save(folder / "queries.npy", queries)
        # Fitting includes the leave-one-out threshold: a search of THRESHOLD_ROWS rows.
        torch.set_num_threads(max(threads))
        fit_start = time.perf_counter()
        model = KNNDetector(n_neighbors=k, algorithm="brute", device=device).fit(train)
        if device == "cuda":
            torch.cuda.synchronize()
        fit_seconds = time.perf_counter() - fit_start
        import joblib

        joblib.dump(model, folder / "model_knn.joblib")
        if "knn-faiss" in methods:
            # The same fitted state (offset_ is read by the exact search either way).
            model.set_params(algorithm="faiss").algorithm_ = "faiss"
            joblib.dump(model, folder / "model_knn-faiss.joblib")
        del model
        print(f"[{time.perf_counter() - started:.0f}s] fit {fit_seconds:.1f} s", flush=True)
        for t in threads:
            rows[("gemm", t)] = measure("gemm", t, folder, device, k)
            for method in methods:
                if method == "knn" and device == "cuda" and t != threads[0]:
                    continue  # on the GPU the torch threads hardly matter: one run
                rows[(method, t)] = measure(method, t, folder, device, k)
                print(f"[{time.perf_counter() - started:.0f}s] {method} x{t}: "
                      f"{rows[(method, t)]['seconds']:.1f} s", flush=True)
        kth = {key: np.load(folder / f"kth_{key[0]}_{key[1]}.npy")
               for key in rows if key[0] != "gemm"}

    text = report(cfg, device, threads, methods, rows, kth, fit_seconds, command,
                  load_start, faiss_found, time.perf_counter() - started, args.quick)
    output = args.output
    if output is None and not args.quick:
        output = RESULTS / ("knn_speed_cuda.md" if device == "cuda" else "knn_speed.md")
    if output is None:
        print(text)
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")
    if args.output is None:
        print(f"wrote {collect()}")
    return output


def report(cfg, device, threads, methods, rows, kth, fit_seconds, command, load_start,
           faiss_found, elapsed, quick):
    nq, nt, D, k = cfg["n_queries"], cfg["n_train"], cfg["n_features"], cfg["k"]
    flops = 2.0 * nq * nt * D
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none used"
    names = {
        "knn": f"KNNDetector.score_samples ({device})",
        "sklearn": "sklearn NearestNeighbors(algorithm='brute').kneighbors",
        "faiss": "faiss IndexFlatL2.search",
        "knn-faiss": "KNNDetector(algorithm='faiss').score_samples (cpu)",
    }
    short = {"knn": "KNNDetector", "sklearn": "scikit-learn", "faiss": "faiss",
             "knn-faiss": "KNNDetector(algorithm='faiss')"}
    knn_threads = [threads[0]] if device == "cuda" else threads
    header = [
        f"# KNN speed ({'quick' if quick else 'full'} form, KNNDetector on {device})",
        "",
        f"Written by `{command.strip()}` on {datetime.date.today().isoformat()}; do not "
        "edit by hand.",
        "",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores); GPU: {gpu}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}, sklearn-reclag {sklearn_reclag.__version__}, "
        f"scikit-learn {__import__('sklearn').__version__}, "
        + (faiss_found or "faiss-cpu not installed"),
        f"- BLAS: {blas_libraries()}",
        f"- Load average (1/5/15 min) at the start: {load_start}; at the end: {loadavg()} "
        f"on {os.cpu_count()} cores" + (" (a shared machine: other processes were running, "
                                       "which slows every side alike but adds noise)"
                                       if os.getloadavg()[0] > 1.0 else ""),
        "",
        f"{nq:,} queries x {D} features against {nt:,} training rows, k = {k}, float32, "
        "all rows L2-normalised beforehand (KNNDetector normalises again: its real cost). "
        "Each figure is one run (each run answers every query once) in a fresh subprocess "
        "after a warm-up of 64 queries; the memory is the peak resident memory above the "
        "process's memory just before the search (which holds the inputs: "
        f"{(rows[('knn', knn_threads[0])]['input_bytes']) / MIB:,.0f} MiB of queries and "
        "training rows, or the fitted model's copy of the training rows). "
        f"GFLOP/s counts the 2 x {nq:,} x {nt:,} x {D} multiply-adds of the distances.",
        "",
    ]
    out = []
    if not faiss_found:
        header += ["faiss-cpu is not installed, so the faiss column is missing "
                "(`pip install faiss-cpu`, the `benchmarks` extra).", ""]

    out += ["## Search time and memory", "",
            "| search | threads | seconds | queries/s | GFLOP/s | peak MiB above the inputs |",
            "|---|---:|---:|---:|---:|---:|"]
    for t in threads:
        for method in methods:
            if (method, t) not in rows:
                continue
            r = rows[(method, t)]
            out.append(
                f"| {names[method]} | {'GPU' if method == 'knn' and device == 'cuda' else t} "
                f"| {r['seconds']:,.1f} | {nq / r['seconds']:,.0f} "
                f"| {flops / r['seconds'] / 1e9:,.1f} "
                f"| {peak_above_inputs(r, device if method == 'knn' else 'cpu') / MIB:,.0f} |")
    out += ["", "KNNDetector.score_samples is the torch search (``algorithm='brute'``); "
            "KNNDetector(algorithm='faiss') finds the k nearest rows with faiss.knn (the "
            "kernel of IndexFlatL2.search, on the bank in place) and then computes the "
            "k-th distance as the detector always does."]
    out += ["", "## The bare matrix products", "",
            f"GFLOP/s of one {GEMM_SHAPE[0]} x {D} by {D} x {GEMM_SHAPE[1]} product (the "
            "block KNNDetector multiplies on a CPU), best of 3: the search's upper bound. "
            "scikit-learn computes float32 rows' distances with float64 products; faiss "
            "uses its own OpenBLAS.", "",
            "| threads | torch float32 | OpenBLAS float32 | OpenBLAS float64 "
            "| KNNDetector / torch float32 | scikit-learn / OpenBLAS float64 "
            + ("| faiss / OpenBLAS float32 |" if faiss_found else "|"),
            "|---:|---:|---:|---:|---:|---:|" + ("---:|" if faiss_found else "")]
    bounds = []
    for t in threads:
        g = rows[("gemm", t)]
        rate = {m: flops / rows[(m, t)]["seconds"] / 1e9 for m in methods if (m, t) in rows}
        if device == "cuda":
            rate["knn"] = flops / rows[("knn", knn_threads[0])]["seconds"] / 1e9
        line = (f"| {t} | {g['torch_float32']:,.1f} | {g['openblas_float32']:,.1f} "
                f"| {g['openblas_float64']:,.1f} | {rate['knn'] / g['torch_float32']:.0%} "
                f"| {rate['sklearn'] / g['openblas_float64']:.0%} |")
        if faiss_found:
            line += f" {rate['faiss'] / g['openblas_float32']:.0%} |"
        out.append(line)
        bounds.append(f"at {t} thread(s), {g['torch_float32'] / rate['sklearn']:.2f}x (a "
                      f"{TARGET_SPEEDUP:g}x speed-up needs a product of at least "
                      f"{TARGET_SPEEDUP * rate['sklearn']:,.1f} GFLOP/s)")
    out += ["", "The last columns are each search's GFLOP/s as a share of its own product's. "
            "KNNDetector's search cannot run faster than torch's product, so its speed-up "
            "over scikit-learn is at most torch's product rate over scikit-learn's search "
            "rate: " + "; ".join(bounds) + "."]

    # Agreement of the k-th distances.
    reference = kth[("sklearn", threads[0])]
    agree = {key: float(np.abs(v - reference).max()) for key, v in kth.items()
             if key != ("sklearn", threads[0])}
    out += ["", "## Agreement", "",
            f"Largest difference of the k-th distance over the first {N_CHECK:,} queries "
            f"from scikit-learn's at {threads[0]} thread(s): "
            + ", ".join(f"{short[m]} at {t} thread(s) {agree[(m, t)]:.1e}"
                        for (m, t) in sorted(agree)) + ".", ""]

    # Verdicts.
    summary = ["## Summary", "", "| target | result | |", "|---|---|---|"]
    speedups = []
    for t in threads:
        ours = rows[("knn", knn_threads[0] if device == "cuda" else t)]["seconds"]
        ratio = rows[("sklearn", t)]["seconds"] / ours
        speedups.append(ratio)
        ours_label = "KNNDetector on the GPU" if device == "cuda" else "KNNDetector"
        target = (f"| {ours_label} >= {TARGET_SPEEDUP:g}x faster than scikit-learn's brute "
                  f"NearestNeighbors, {t} CPU thread(s) | {fmt_ratio(ratio)} |")
        summary.append(target + (f" {verdict(ratio >= TARGET_SPEEDUP)} |"
                                 if device == "cpu" else " (the target is for the CPU) |"))
    peaks = [peak_above_inputs(rows[("knn", t)], device) for t in knn_threads]
    summary.append(f"| KNNDetector peak memory < 1 GiB above the inputs | "
                   f"{max(peaks) / MIB:,.0f} MiB | {verdict(max(peaks) < GIB)} |")
    if faiss_found:
        for t in threads:
            ours = rows[("knn", knn_threads[0] if device == "cuda" else t)]["seconds"]
            summary.append(f"| faiss IndexFlatL2's time / KNNDetector's, {t} thread(s) "
                           f"(reported, no target) | "
                           f"{fmt_ratio(rows[('faiss', t)]['seconds'] / ours)} | |")
            if ("knn-faiss", t) in rows:
                speed = rows[("faiss", t)]["seconds"] / rows[("knn-faiss", t)]["seconds"]
                summary.append(
                    f"| KNNDetector(algorithm='faiss') >= 1.0x faiss IndexFlatL2's speed, "
                    f"{t} thread(s) | {fmt_ratio(speed)} | {verdict(speed >= 1.0)} |")
    summary.append(f"| k-th distances agree with scikit-learn (max difference) | "
                   f"{max(agree.values()):.1e} | {verdict(max(agree.values()) < 1e-4)} |")
    finite = all(r["finite"] for key, r in rows.items() if key[0] != "gemm")
    summary += ["", f"Every search returned finite distances: {finite}. KNNDetector's fit "
                f"on the {nt:,} training rows, its leave-one-out threshold included (a "
                f"search of {min(nt, THRESHOLD_ROWS):,} training rows against the others), "
                f"took {fit_seconds:.1f} s "
                f"at {max(threads)} thread(s).", ""]
    footer = [f"Total run time {elapsed / 60:.1f} min.", ""]
    return "\n".join(header + summary + out + footer)


if __name__ == "__main__":
    main()
