"""Detection-quality benchmark: the paper's table on data that ships with scikit-learn.

In distribution: digits 0-4, as penultimate features of a small CNN trained with skorch (its
last layer is the head). OOD test sets: digits 5-9, sample-photo patches, uniform noise,
blurred noise. Hyperparameters are chosen by GridSearchCV with the FPR95 scorer on the
validation OOD set (pixel-shuffled and two-class-blended ID training digits), never on a test
set. Every method is run on the features of each seed (a new split, new OOD draws and a
newly trained CNN), and the tables give mean ± std over seeds.

    python benchmarks/quality.py              # 5 seeds, with the PyOD / GMM peers
    python benchmarks/quality.py --quick      # seconds: small grids, 2 seeds

Writes benchmarks/results/quality.md (the tables, the machine, the command) and ROC plots.
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
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    out = RESULTS / ("quality_quick" if args.quick else "quality")
    command = ["benchmark", "--seeds", str(seeds), "--peers", "--device", args.device,
               "--output", str(out)] + (["--quick"] if args.quick else [])
    start = time.perf_counter()
    status = cli_main(command)
    elapsed = time.perf_counter() - start
    if status:
        return status
    tables = (out / "results.md").read_text()
    report = (
        "# Detection quality on the digits benchmark\n\n"
        f"Written by `python benchmarks/quality.py{' --quick' if args.quick else ''}` in "
        f"{elapsed:.0f} s on {machine()}.\n\n"
        "ID: digits 0-4 (CNN penultimate features, the CNN's last layer as head). "
        "Hyperparameters: GridSearchCV (FPR95 scorer, 3-fold StratifiedKFold) on the "
        "validation OOD set (pixel-shuffled and two-class-blended ID training digits), "
        "disjoint from the test OOD sets. Mean ± std over seeds; best mean in bold.\n\n"
        + tables
    )
    (RESULTS / f"{out.name}.md").write_text(report)
    print(f"wrote {RESULTS / (out.name + '.md')}")
    if not args.quick:
        print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
