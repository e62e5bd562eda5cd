"""Beyond one machine: GridSearchCV on a Dask cluster, and block-wise scoring of a dask array
==========================================================================================

Needs the ``dask`` extra: ``pip install sklearn-reclag[dask]``.

1. The grid search is ordinary scikit-learn: joblib's ``"dask"`` backend sends its fits to
   the cluster's workers. The example starts a small local cluster; point
   :class:`dask.distributed.Client` at your scheduler's address to use a real one.
2. :func:`sklearn_reclag.distributed.score_dask_array` scores a dask array of features one
   row block at a time, lazily: the array may be far larger than memory, and the scores
   are written to disk block by block without ever being gathered.

Run::

    python examples/dask_grid_search.py [OUTPUT_DIR]    # default: ./output

It writes the scores of 400,000 synthetic feature rows under ``OUTPUT_DIR/scores``
(one ``.npy`` file per block, :func:`dask.array.to_npy_stack`).
"""

# sphinx_gallery_thumbnail_path = "_static/thumbnails/dask_grid_search.png"

import argparse
from pathlib import Path

import dask.array as da
import joblib
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from sklearn_reclag import RecLagDetector
from sklearn_reclag.distributed import score_dask_array
from sklearn_reclag.metrics import fpr95_scorer
from sklearn_reclag.model_selection import make_ood_dataset


def main(output_dir="output"):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    X, y = load_digits(return_X_y=True)
    X_cv, y_cv = make_ood_dataset(X[y < 5], y[y < 5], X[y >= 5], random_state=0)

    # Two single-threaded workers; Client("tcp://scheduler:8786") for a real cluster.
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"cluster: {client}")

        search = GridSearchCV(
            make_pipeline(Normalizer(), RecLagDetector(device="cpu", random_state=0)),
            {"reclagdetector__beta": [5.0, 20.0, 50.0]},
            scoring=fpr95_scorer,
            cv=StratifiedKFold(3, shuffle=True, random_state=0),
            n_jobs=-1,
            error_score="raise",  # a failed fold stops the search instead of scoring NaN
        )
        with joblib.parallel_backend("dask"):
            search.fit(X_cv, y_cv)
        for params, score in zip(search.cv_results_["params"],
                                 search.cv_results_["mean_test_score"]):
            print(f"  {params}: FPR95 {-score:.3f}")
        detector = search.best_estimator_
        print(f"best: {search.best_params_}")

        # A large feature set, generated lazily block by block (think of da.from_zarr on
        # the features of a whole image archive): pixel rows with noise.
        rng = da.random.default_rng(0)
        rows = rng.integers(0, len(X), size=400_000, chunks=50_000)
        big = da.from_array(X, chunks=-1)[rows] + rng.normal(0, 1, (400_000, 64),
                                                              chunks=(50_000, 64))
        scores = score_dask_array(detector, big)  # lazy: nothing computed yet
        print(f"scores: {scores.shape[0]} rows in {scores.numblocks[0]} blocks, lazy")
        da.to_npy_stack(output_dir / "scores", scores)  # computed block by block
        rejected = (score_dask_array(detector, big, method="predict") == -1).mean()
        print(f"wrote {output_dir / 'scores'}; share rejected as OOD: "
              f"{float(rejected.compute()):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output",
                        help="where to write the scores (default: ./output)")
    main(parser.parse_args().output_dir)
