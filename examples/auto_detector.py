"""Choose a detector for your features without OOD data: AutoOODDetector
======================================================================

You hold in-distribution features and no OOD rows. :class:`~sklearn_reclag.AutoOODDetector`
holds out some classes at a time, fits every candidate detector on part of the other
classes and measures how well it rejects the held-out classes' rows (FPR95, mean over the
folds). It keeps the first candidate of its list, the suite's defaults first, unless a
later one is better by more than one standard error, refits it on all rows and behaves as
it. The same criterion is available to a GridSearchCV of your own through
:func:`~sklearn_reclag.model_selection.held_out_group_split`.

Here the features are scikit-learn's digits pixels: classes 0-4 are in distribution, and
the held-out digits 5-9, which the choice never sees, show how the chosen detector fares
on real new classes, next to every candidate's.

Run::

    python examples/auto_detector.py [OUTPUT_DIR]    # default: ./output

It prints the candidates' table (``cv_results_``) and writes it to ``auto_detector.csv``.
"""

# sphinx_gallery_thumbnail_path = "_static/thumbnails/auto_detector.png"

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.datasets import load_digits

from sklearn_reclag import OOD_LABEL, AutoOODDetector
from sklearn_reclag.metrics import fpr_at_tpr


def main(output_dir="output"):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    train = np.arange(len(X)) % 2 == 0
    X_train, y_train = X[train & (y < 5)], y[train & (y < 5)]
    X_test, X_new_classes = X[~train & (y < 5)], X[y >= 5]

    auto = AutoOODDetector(device="cpu", random_state=0).fit(X_train, y_train)
    print(f"criterion: {auto.criterion_}; chosen: {auto.best_params_['candidate']}")

    # What each candidate would have scored on the real new classes (for this example
    # only: a user has no such rows, and the choice above never saw them).
    y_true = np.r_[np.zeros(len(X_test)), np.full(len(X_new_classes), OOD_LABEL)]
    real = []
    for candidate in auto.cv_results_["estimator"]:
        detector = clone(candidate).set_params(device="cpu").fit(X_train, y_train)
        scores = np.r_[detector.score_samples(X_test), detector.score_samples(X_new_classes)]
        real.append(fpr_at_tpr(y_true, scores))
    table = pd.DataFrame({key: value for key, value in auto.cv_results_.items()
                          if key != "estimator"})
    table["fpr95_on_digits_5_9"] = real
    table = table.sort_values("rank")
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(table[["candidate", "mean_fpr95", "mean_auroc", "fpr95_on_digits_5_9",
                     "mean_fit_time"]].to_string(index=False, float_format="%.3f"))
    table.to_csv(output_dir / "auto_detector.csv", index=False)
    chosen = auto.predict(X_new_classes)
    print(f"predict rejects {np.mean(chosen == -1):.1%} of digits 5-9 and accepts "
          f"{np.mean(auto.predict(X_test) == 1):.1%} of new digits 0-4")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output",
                        help="where to write the candidates' table (default: ./output)")
    main(parser.parse_args().output_dir)
