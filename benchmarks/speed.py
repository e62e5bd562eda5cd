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
5. The threshold's cost: every detector's whole fit, its threshold (held-out scores of
   training rows) and its learning alone, on 10 classes x 800 rows x 128 features; RecLag's
   whole fit and learning alone against the one-class-at-a-time reference (10 classes x
   1,000 rows x 128 features, 10 epochs of the paper's objective).

The data are synthetic, generated with a seeded numpy RNG: non-negative ReLU-like
features with class structure (a sparse non-negative prototype per class, a per-row scale
and Gaussian noise, rectified); the OOD rows are rectified mixtures of two class prototypes.

CPU results are *ratios*: on a shared 2-core machine the absolute seconds say little, and
small-op workloads suffer badly when OpenMP threads compete with other processes (the
header records the load average). Absolute times are quoted only from a GPU run::

    python benchmarks/speed.py                  # full form, ~10-15 minutes on 2 CPU cores
    python benchmarks/speed.py --quick          # tiny shapes, seconds (CI, README demo)
    python benchmarks/speed.py --device cuda    # writes results/speed_cuda.md

The sections live in ``benchmarks/speed_sections/`` (one module each, ``common`` for the
sizes, timing and data they share); this script runs them and writes the file.

``--output`` changes the results file (default ``benchmarks/results/speed_<cpu|cuda>.md``),
``--threads`` sets torch's intra-op threads (default: torch's / OpenMP's default) for
sections 2-4 and the cross-checks; on a CPU, section 1 times both sides at one thread and
at one thread per core and compares each at its fastest.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sklearn_reclag
from sklearn_reclag import HopfieldEnergyDetector, RecLagDetector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402
from speed_sections.common import (  # noqa: E402
    FULL,
    HE_PAPER,
    OFFICIAL,
    QUICK,
    cpu_model,
    fmt_ratio,
    loadavg,
    make_data,
    resolve,
    verdict,
)
from speed_sections.fit import section_fit  # noqa: E402
from speed_sections.memory import section_memory  # noqa: E402
from speed_sections.scaling import section_scaling  # noqa: E402
from speed_sections.threshold import MAX_FIT_OVER_LEARNING, section_threshold  # noqa: E402
from speed_sections.throughput import section_throughput  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


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
    he = HopfieldEnergyDetector(**HE_PAPER, head=head, device=device).fit(X, y)
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
    s5 = section_threshold(cfg, device, args.seed, repeats, body)
    worst = max(s5["ratios"], key=s5["ratios"].get)
    print(f"[{time.perf_counter() - started:.0f}s] 5. threshold: worst fit / learning "
          f"{fmt_ratio(s5['ratios'][worst])} ({worst})", flush=True)

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
        (f"| every detector's fit <= {MAX_FIT_OVER_LEARNING}x its learning alone, "
         f"accepting 95 +- 4 % of new ID rows | worst {fmt_ratio(s5['ratios'][worst])} "
         f"({worst}) | {verdict(s5['all_met'])} |"),
        (f"| RecLag's whole fit >= 10x the one-class-at-a-time reference | "
         f"{fmt_ratio(s5['reference']['whole'])} (learning alone "
         f"{fmt_ratio(s5['reference']['learning'])}) | "
         f"{verdict(s5['reference']['whole'] >= 10)} |"),
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
