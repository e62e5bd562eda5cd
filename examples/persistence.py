"""Save a fitted detector and load it back: joblib, and skops as the safer format
==============================================================================

Every estimator of the suite keeps its fitted state as numpy arrays and plain Python values,
so both formats round-trip exactly:

- **joblib** (pickle): the usual scikit-learn way. Loading a pickle runs code, so only load
  files you trust. The file records the sklearn-reclag version; loading it with another
  version warns with ``InconsistentVersionWarning``. A model fitted on a GPU loads on a
  machine without one: it warns and runs on the CPU, with the same scores.
- **skops** (``pip install sklearn-reclag[persist]``): no pickle. ``skops.io.load``
  refuses every type it does not know until you list it in ``trusted``; for the suite these
  are only its own estimator classes, which ``skops.io.get_untrusted_types`` shows you
  before you load. Prefer it for models that come from someone else.

Run::

    python examples/persistence.py [OUTPUT_DIR]    # default: ./output

It writes ``reclag.joblib`` and ``reclag.skops`` and checks that both load with identical
scores.
"""

# sphinx_gallery_thumbnail_path = "_static/thumbnails/persistence.png"

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from sklearn_reclag import RecLagDetector


def main(output_dir="output"):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    X, y = load_digits(return_X_y=True)
    X_id, y_id, X_ood = X[y < 5], y[y < 5], X[y >= 5]
    model = make_pipeline(Normalizer(), RecLagDetector(beta=20.0, random_state=0))
    model.fit(X_id, y_id)
    scores = model.score_samples(X_ood)

    # joblib: a pickle; the file records the library version.
    joblib_path = output_dir / "reclag.joblib"
    joblib.dump(model, joblib_path)
    loaded = joblib.load(joblib_path)
    np.testing.assert_array_equal(loaded.score_samples(X_ood), scores)
    print(f"joblib: {joblib_path} loads with identical scores")

    try:
        import skops.io as sio
    except ImportError:
        print("skops is not installed: pip install sklearn-reclag[persist]")
        return

    # skops: no pickle; review the types the file needs, then trust them explicitly.
    skops_path = output_dir / "reclag.skops"
    sio.dump(model, skops_path)
    untrusted = sio.get_untrusted_types(file=skops_path)
    print(f"skops: types to review before loading: {untrusted}")
    loaded = sio.load(skops_path, trusted=untrusted)
    np.testing.assert_array_equal(loaded.score_samples(X_ood), scores)
    print(f"skops: {skops_path} loads with identical scores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("output_dir", nargs="?", default="output",
                        help="where to write the saved models (default: ./output)")
    main(parser.parse_args().output_dir)
