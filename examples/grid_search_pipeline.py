"""Tune a RecLag detector inside a Pipeline with GridSearchCV
==========================================================

The features are the penultimate layer of a small CNN trained on digits 0-4
(:func:`sklearn_reclag.datasets.load_digits_ood_features`). Model selection uses the
*validation* OOD set, which is disjoint from every OOD test set, so the test numbers at the
end are honest.

Two searches, because the parameters do two different jobs
(see :mod:`sklearn_reclag.model_selection`):

1. ``metric`` and ``n_memories`` change how the rows are *ranked*: select them on FPR95
   (``fpr95_scorer`` reads ``score_samples``).
2. ``contamination`` (equivalently ``gamma``) only moves the *threshold* of ``predict``:
   FPR95 is flat in it, so select it on the OOD balanced accuracy of ``predict``.

Run::

    python examples/grid_search_pipeline.py [OUTPUT_DIR]    # default: ./output

It prints both searches and the test table and writes ``grid_search_results.json``.
"""

# sphinx_gallery_thumbnail_path = "_static/thumbnails/grid_search_pipeline.png"

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from sklearn_reclag import OOD_LABEL, RecLagDetector
from sklearn_reclag.datasets import load_digits_ood_features
from sklearn_reclag.metrics import (
    fpr95_scorer,
    fpr_at_threshold_scorer,
    fpr_at_tpr,
    ood_auroc,
    ood_auroc_scorer,
    ood_balanced_accuracy,
    ood_balanced_accuracy_scorer,
    tpr_at_threshold_scorer,
)
from sklearn_reclag.model_selection import make_ood_dataset


def main(output_dir="output"):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data = load_digits_ood_features(quick=True, random_state=0, device="cpu")
    # ID training rows with their classes, validation OOD rows labelled OOD_LABEL (-1).
    # Each detector's fit ignores the OOD rows; the scorers need them in every test fold,
    # which StratifiedKFold guarantees by treating -1 as one more class.
    X, y = make_ood_dataset(data.X_train, data.y_train, data.X_val_ood, random_state=0)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)

    # Unit-norm features (a common first step in feature-space OOD detection), then RecLag
    # with its own softmax head fitted on them for the routing; beta='auto' follows the
    # scale of whichever metric is searched. 30 epochs keep the example quick.
    pipe = Pipeline([
        ("normalize", Normalizer()),
        ("reclag", RecLagDetector(max_epochs=30, device="cpu", random_state=0)),
    ])

    # 1. Ranking parameters on FPR95 (AUROC reported alongside).
    ranking = GridSearchCV(
        pipe,
        {"reclag__metric": ["euclidean", "mahalanobis"], "reclag__n_memories": [5, 10]},
        scoring={"fpr95": fpr95_scorer, "auroc": ood_auroc_scorer},
        refit="fpr95",
        cv=cv,
        error_score="raise",  # a failed fold stops the search instead of scoring NaN
    ).fit(X, y)
    print("1. ranking parameters, selected on FPR95 (validation OOD):")
    _print_results(ranking, ["fpr95", "auroc"])

    # 2. The threshold on the OOD balanced accuracy; FPR95 stays flat.
    threshold = GridSearchCV(
        ranking.best_estimator_,
        {"reclag__contamination": [0.01, 0.05, 0.1, 0.2, 0.4]},
        scoring={
            "bacc": ood_balanced_accuracy_scorer,
            "fpr": fpr_at_threshold_scorer,
            "tpr": tpr_at_threshold_scorer,
            "fpr95": fpr95_scorer,
        },
        refit="bacc",
        cv=cv,
        error_score="raise",
    ).fit(X, y)
    print("\n2. threshold, selected on balanced accuracy (FPR95 does not move):")
    _print_results(threshold, ["bacc", "fpr", "tpr", "fpr95"])

    # The refitted best pipeline on the OOD *test* sets, never seen during selection.
    best = threshold.best_estimator_
    print(f"\nbest: {threshold.best_params_ | ranking.best_params_}")
    print(f"{'OOD test set':<16} {'FPR95':>6} {'AUROC':>6} {'bal. acc.':>9}")
    report = {"best_params": {**ranking.best_params_, **threshold.best_params_}, "test": {}}
    for name, X_ood in data.ood_test.items():
        y_test = np.r_[data.y_test, np.full(len(X_ood), OOD_LABEL)]
        X_test = np.vstack([data.X_test, X_ood])
        scores = best.score_samples(X_test)
        row = {
            "fpr95": fpr_at_tpr(y_test, scores),
            "auroc": ood_auroc(y_test, scores),
            "balanced_accuracy": ood_balanced_accuracy(y_test, best.predict(X_test)),
        }
        report["test"][name] = row
        print(f"{name:<16} {row['fpr95']:6.3f} {row['auroc']:6.3f} "
              f"{row['balanced_accuracy']:9.3f}")

    path = output_dir / "grid_search_results.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return report


def _print_results(search, metrics):
    res = search.cv_results_
    header = "  ".join(f"{m:>7}" for m in metrics)
    print(f"  {'parameters':<48}{header}")
    for i, params in enumerate(res["params"]):
        values = "  ".join(f"{res[f'mean_test_{m}'][i]:7.3f}" for m in metrics)
        mark = " <- refit" if i == search.best_index_ else ""
        short = {k.split("__")[1]: v for k, v in params.items()}
        print(f"  {str(short):<48}{values}{mark}")
    print("  (scores are 'greater is better': FPR columns are negated)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output",
                        help="where to write the results (default: ./output)")
    main(parser.parse_args().output_dir)
