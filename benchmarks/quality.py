"""Detection-quality benchmarks: the paper's table on data that ships with packages.

Two data sets (``--dataset``):

- ``digits`` (default): digits 0-4 of scikit-learn's digits, as penultimate features of a
  small CNN trained with skorch (its last layer is the head). OOD test sets: digits 5-9
  (near), sample-photo patches, uniform noise, blurred noise (far).
- ``mnist1d``: classes 0-6 of MNIST-1D (Greydanus & Kobak, ICML 2024; generated offline by
  the ``mnist1d`` package), as penultimate features of a small 1-D CNN. OOD test sets:
  classes 7-9 (near), time-shuffled signals, smooth noise, sinusoids (far).

Hyperparameters are chosen from the ID training rows alone, by AutoOODDetector's criterion
(FPR95 on held-out classes), never on a test set; the Auto row chooses the detector the same
way. Every method is run on the features of each seed (a new split, new OOD draws and a
newly trained CNN); the tables give mean ± std over seeds, near / far OOD, and each row's
paired difference to the strongest non-Hopfield row with a 95 % interval.

    python benchmarks/quality.py                      # digits, 5 seeds, with the peers
    python benchmarks/quality.py --dataset mnist1d    # MNIST-1D
    python benchmarks/quality.py --quick              # seconds: small grids, 2 seeds

Writes benchmarks/results/quality.md (quality_mnist1d.md) and ROC plots.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from sklearn_reclag import __version__
from sklearn_reclag.__main__ import main as cli_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import collect  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine():
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, "
            f"sklearn-reclag {__version__}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", choices=("digits", "mnist1d"), default="digits")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    name = "quality" + ("_mnist1d" if args.dataset == "mnist1d" else "")
    out = RESULTS / (name + "_quick" if args.quick else name)
    # --overwrite: the results folder is this script's own, rewritten by each run.
    command = ["benchmark", "--dataset", args.dataset, "--seeds", str(seeds), "--peers",
               "--device", args.device, "--output", str(out), "--overwrite"] + (
        ["--quick"] if args.quick else [])
    start = time.perf_counter()
    status = cli_main(command)
    elapsed = time.perf_counter() - start
    if status:
        return status
    tables = (out / "results.md").read_text()
    data_text = {
        "digits": ("the digits benchmark", "digits 0-4 (CNN penultimate features, the CNN's "
                   "last layer as head); near OOD: digits 5-9; far OOD: photo patches, "
                   "uniform noise, blurred noise"),
        "mnist1d": ("the MNIST-1D benchmark", "MNIST-1D classes 0-6 (1-D CNN penultimate "
                    "features, its last layer as head); near OOD: classes 7-9; far OOD: "
                    "time-shuffled signals, smooth noise, sinusoids"),
    }[args.dataset]
    invocation = " ".join(["python benchmarks/quality.py",
                           *(sys.argv[1:] if argv is None else argv)])
    report = (
        f"# Detection quality on {data_text[0]}\n\n"
        f"Written by `{invocation}` in {elapsed:.0f} s on {machine()}.\n\n"
        f"ID: {data_text[1]}. Hyperparameters: chosen from the ID training rows alone, "
        "by AutoOODDetector's criterion (FPR95 on 5 folds of held-out classes; a given "
        "head loses the held-out classes), never on an OOD set. Mean ± std over seeds; "
        "best mean in bold.\n\n"
        + tables
    )
    (RESULTS / f"{out.name}.md").write_text(report)
    print(f"wrote {RESULTS / (out.name + '.md')}")
    if not args.quick:
        print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
