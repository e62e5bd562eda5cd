"""The data of the real-data OOD benchmark: digits 0-4 in distribution, four OOD test sets.

Everything ships with scikit-learn, nothing is downloaded:

- in distribution: :func:`sklearn.datasets.load_digits`, classes 0-4, a seeded stratified
  train / test split;
- features: the penultimate (pooled ReLU) layer of :class:`DigitsCNN`, a small CNN trained
  with skorch on the ID training split; its final linear layer is the detectors' head;
- OOD test sets, reported separately: 'digits 5-9' (near OOD), 'photo patches' (grey 8x8
  patches of :func:`sklearn.datasets.load_sample_images`), 'uniform noise' and 'blurred
  noise';
- a validation OOD set for hyperparameter selection, disjoint from every test set by
  construction: half pixel-shuffled ID training digits, half averages of two ID training
  digits of different classes.

:func:`save_features_npz` / :func:`load_features_npz` store the same content for a user's
own features, the input of ``python -m sklearn_reclag benchmark --features FILE.npz``
(defined in :mod:`sklearn_reclag._npz`, public here).
"""

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_digits, load_sample_images
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch, check_random_state

from ._backend import resolve_device
from ._novelty_data import NOVELTY_DATASETS, load_novelty_tasks  # noqa: F401 (public here)
from ._npz import load_features_npz, save_features_npz  # noqa: F401 (public here)
from .features import TorchFeatureExtractor, linear_head

ID_CLASSES = (0, 1, 2, 3, 4)
"""Digit classes that are in distribution."""

OOD_TEST_SETS = ("digits 5-9", "photo patches", "uniform noise", "blurred noise")
"""Names of the OOD test sets, in the order the benchmark reports them."""

_MAX_INTENSITY = 16.0  # digits' pixels are counts 0..16
_IMAGE_SHAPE = (8, 8)
_N_PIXELS = 64

_DESCR = """Digits OOD benchmark (sklearn-reclag)
=====================================

In distribution: scikit-learn's digits (8x8 grey images, integer intensities 0..16),
classes 0-4, split into train / test with a seeded stratified split.

Features: the penultimate layer (global-average-pooled ReLU activations, {width} values) of
DigitsCNN trained with skorch on the ID training split; ``head`` is its final linear layer
(coef, intercept). Test accuracy of the CNN on the ID test split: {accuracy:.3f}.

OOD test sets (every image 8x8, intensities rounded to the integers 0..16 like digits):
- 'digits 5-9': every digit of classes 5-9 (near OOD).
- 'photo patches': random square windows (16 to 64 pixels wide) of the grey-scale sample
  photographs of load_sample_images, averaged down to 8x8 and min-max scaled to 0..16
  (far OOD, natural images).
- 'uniform noise': independent uniform pixels in 0..16.
- 'blurred noise': Gaussian noise blurred with a Gaussian filter (sigma 1 pixel), min-max
  scaled to 0..16.

Validation OOD set (X_val_ood), for hyperparameter selection only, never a test set: half
pixel-shuffled ID training digits (each a random permutation of one image's pixels), half
the rounded mean of two ID training digits of different classes. It is built from the ID
training split alone, so neither the ID test rows nor any OOD test image is seen in
selection.
"""


# ------------------------------------------------------------------------------ the CNN
class DigitsCNN(torch.nn.Module):
    """A small CNN for 8x8 digits whose penultimate layer is pooled ReLU features.

    conv 3x3 (32) -> ReLU -> max-pool 2 -> conv 3x3 (``width``) -> ReLU -> global average
    pooling -> ``head`` (:class:`torch.nn.Linear`). The pooled ReLU activations (the
    input of ``head``) are the features the detectors read.

    Parameters
    ----------
    n_classes : int, default=5
        Number of outputs (logits) of ``head``.
    width : int, default=64
        Number of channels of the second convolution, i.e. the feature width.

    Examples
    --------
    >>> import torch
    >>> from sklearn_reclag.datasets import DigitsCNN
    >>> DigitsCNN(n_classes=5)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 5])
    """

    def __init__(self, n_classes=5, width=64):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, kernel_size=3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, width, kernel_size=3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(width, n_classes)

    def forward(self, X):
        """Logits of a batch of images of shape (batch, 1, 8, 8), intensities 0..16."""
        # Scaling inside the network lets raw digits rows go straight into a Pipeline.
        return self.head(self.features(X / _MAX_INTENSITY))


def train_digits_cnn(X, y, *, max_epochs=30, random_state=0, device="auto", verbose=0):
    """Train :class:`DigitsCNN` on digits rows with skorch.

    Parameter initialisation and shuffling draw from torch's global generator inside
    :func:`torch.random.fork_rng`, seeded from ``random_state``: the result is
    reproducible on the CPU and the caller's global random state is left as it was.

    Parameters
    ----------
    X : array-like of shape (n_samples, 64)
        Flattened 8x8 images, intensities 0..16 (as :func:`~sklearn.datasets.load_digits`).
    y : array-like of shape (n_samples,)
        Integer class labels 0..n_classes-1.
    max_epochs : int, default=30
        Epochs of Adam over the whole of (X, y) (no internal validation split).
    random_state : int, RandomState instance or None, default=0
        Seeds the initialisation and the shuffling.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where to train; 'auto' uses CUDA when available.
    verbose : int, default=0
        skorch's per-epoch table when > 0.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        The fitted net; ``net.module_`` is the trained :class:`DigitsCNN`, and
        ``net.predict`` takes images of shape (n, 1, 8, 8).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_reclag.datasets import train_digits_cnn
    >>> X, y = load_digits(return_X_y=True)
    >>> net = train_digits_cnn(X[y < 2], y[y < 2], max_epochs=2, device="cpu")
    >>> net.module_.head.out_features
    2
    """
    from skorch import NeuralNetClassifier

    images = _as_images(X)
    y = np.asarray(y)
    if y.shape != (len(images),) or y.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold {len(images)} integer class labels; got shape {y.shape}, "
            f"dtype {y.dtype}."
        )
    n_classes = int(y.max()) + 1
    if y.min() < 0 or len(np.unique(y)) != n_classes:
        raise ValueError(f"y must hold every label 0..{n_classes - 1}; got {np.unique(y)}.")
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    net = NeuralNetClassifier(
        DigitsCNN,
        module__n_classes=n_classes,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=max_epochs,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
        device=str(resolve_device(device)),
        verbose=verbose,
    )
    # fork_rng saves and restores the CPU generator: seeding inside it leaves no trace.
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator (restored on exit): torch.manual_seed would also seed
        # every CUDA generator, which fork_rng(devices=[]) does not restore.
        torch.default_generator.manual_seed(seed)
        net.fit(images, y.astype(np.int64))
    return net


def _as_images(X):
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != _N_PIXELS:
        raise ValueError(f"X must have shape (n_samples, 64) (8x8 images); got {X.shape}.")
    return X.reshape(-1, 1, *_IMAGE_SHAPE)


# ----------------------------------------------------------------------- the OOD images
def _rescale(images):
    """Min-max scale each image to digits' integer intensities 0..16.

    Rounding puts every OOD set on digits' own value grid, so that no detector can tell
    them apart by non-integer pixels alone.
    """
    low = images.min(axis=1, keepdims=True)
    span = np.maximum(images.max(axis=1, keepdims=True) - low, 1e-12)
    return np.rint(_MAX_INTENSITY * (images - low) / span)


def _photo_patches(n, rng):
    """Random square windows of the sample photos, grey, averaged down to 8x8."""
    greys = [image.mean(axis=2) for image in load_sample_images().images]
    patches = np.empty((n, _N_PIXELS))
    for i in range(n):
        grey = greys[rng.randint(len(greys))]
        block = rng.randint(2, 9)  # window of 8 * block pixels: 16 to 64 wide
        size = 8 * block
        top = rng.randint(grey.shape[0] - size + 1)
        left = rng.randint(grey.shape[1] - size + 1)
        window = grey[top:top + size, left:left + size]
        patches[i] = window.reshape(8, block, 8, block).mean(axis=(1, 3)).ravel()
    return _rescale(patches)


def _uniform_noise(n, rng):
    return rng.randint(0, int(_MAX_INTENSITY) + 1, size=(n, _N_PIXELS)).astype(np.float64)


def _blurred_noise(n, rng):
    noise = rng.normal(size=(n, *_IMAGE_SHAPE))
    blurred = gaussian_filter(noise, sigma=(0, 1.0, 1.0), mode="reflect")
    return _rescale(blurred.reshape(n, _N_PIXELS))


def _validation_ood(X_train, y_train, n, rng):
    """Pixel-shuffled and pairwise-averaged ID training digits (see the module docstring)."""
    n_shuffled = n // 2
    shuffled = X_train[rng.randint(len(X_train), size=n_shuffled)].copy()
    for row in shuffled:
        rng.shuffle(row)
    first = rng.randint(len(X_train), size=n - n_shuffled)
    second = np.array([rng.choice(np.flatnonzero(y_train != y_train[i])) for i in first])
    mixed = np.rint((X_train[first] + X_train[second]) / 2)
    return np.vstack([shuffled, mixed])


def load_digits_ood_images(*, random_state=0, test_size=0.3, n_ood=500):
    """The benchmark's images: digits 0-4 split into train / test, and the OOD sets.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seeds the split and every generated OOD set.
    test_size : float in (0, 1), default=0.3
        Fraction of the ID digits held out as the ID test set (stratified).
    n_ood : int, default=500
        Number of images of each generated set ('photo patches', 'uniform noise',
        'blurred noise' and the validation set); 'digits 5-9' holds all 896 digits 5-9.

    Returns
    -------
    images : :class:`~sklearn.utils.Bunch`
        ``X_train``, ``y_train``, ``X_test``, ``y_test``: ID images as rows of 64 pixels
        (float64, 0..16) and their labels; ``ood_test``: dict name -> images, in the order
        of :data:`OOD_TEST_SETS`; ``X_val_ood``: the validation OOD images.

    Examples
    --------
    >>> from sklearn_reclag.datasets import load_digits_ood_images
    >>> images = load_digits_ood_images(n_ood=10)
    >>> images.X_train.shape, list(images.ood_test)
    ((630, 64), ['digits 5-9', 'photo patches', 'uniform noise', 'blurred noise'])
    """
    rng = check_random_state(random_state)
    X, y = load_digits(return_X_y=True)
    is_id = np.isin(y, ID_CLASSES)
    X_train, X_test, y_train, y_test = train_test_split(
        X[is_id], y[is_id], test_size=test_size, stratify=y[is_id],
        random_state=rng.randint(np.iinfo(np.int32).max),
    )
    ood_test = {
        "digits 5-9": X[~is_id],
        "photo patches": _photo_patches(n_ood, rng),
        "uniform noise": _uniform_noise(n_ood, rng),
        "blurred noise": _blurred_noise(n_ood, rng),
    }
    return Bunch(
        X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test, ood_test=ood_test,
        X_val_ood=_validation_ood(X_train, y_train, n_ood, rng),
    )


def load_digits_ood_features(*, random_state=0, quick=False, device="auto"):
    """The benchmark's features: DigitsCNN penultimate features of every set, and its head.

    Trains :class:`DigitsCNN` with skorch on the ID training images (seeded by
    ``random_state``, without touching torch's global random state) and extracts the
    pooled ReLU features of the ID train / test images and of every OOD set. Takes a
    few seconds on a CPU.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seeds the split, the OOD sets and the CNN's training: the same int gives the same
        features (on the CPU; CUDA convolutions may differ in the last bits).
    quick : bool, default=False
        Fewer epochs (20 instead of 40) and 200 instead of 500 images per generated OOD
        set, for demos and CI.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where the CNN is trained and run.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        - ``X_train``, ``y_train``, ``X_test``, ``y_test``: ID features (float64, shape
          (n, 64)) and labels 0-4;
        - ``ood_test``: dict name -> OOD test features, in the order of
          :data:`OOD_TEST_SETS`;
        - ``X_val_ood``: validation OOD features, for hyperparameter selection only;
        - ``head``: ``(coef, intercept)`` of the CNN's final linear layer;
        - ``images``: the same content as images (:func:`load_digits_ood_images`);
        - ``net``: the fitted skorch net; ``test_accuracy``: its ID test accuracy;
        - ``DESCR``: a description of the data.

    See Also
    --------
    save_features_npz : store such a Bunch (or your own features) in one file.

    Examples
    --------
    >>> from sklearn_reclag import EnergyDetector
    >>> from sklearn_reclag.datasets import load_digits_ood_features
    >>> data = load_digits_ood_features(quick=True, device="cpu")
    >>> data.X_train.shape, data.head[0].shape
    ((630, 64), (5, 64))
    >>> det = EnergyDetector(head=data.head).fit(data.X_train, data.y_train)
    >>> det.score_samples(data.ood_test["photo patches"]).shape
    (200,)
    """
    rng = check_random_state(random_state)
    images = load_digits_ood_images(
        random_state=rng.randint(np.iinfo(np.int32).max), n_ood=200 if quick else 500
    )
    net = train_digits_cnn(
        images.X_train, images.y_train, max_epochs=20 if quick else 40,
        random_state=rng.randint(np.iinfo(np.int32).max), device=device,
    )
    extractor = TorchFeatureExtractor(net.module_, input_shape=(1, *_IMAGE_SHAPE),
                                      device=net.device).fit(images.X_train)
    accuracy = float(np.mean(net.predict(_as_images(images.X_test)) == images.y_test))
    return Bunch(
        X_train=extractor.transform(images.X_train),
        y_train=images.y_train,
        X_test=extractor.transform(images.X_test),
        y_test=images.y_test,
        ood_test={name: extractor.transform(X) for name, X in images.ood_test.items()},
        X_val_ood=extractor.transform(images.X_val_ood),
        head=linear_head(net),
        images=images,
        net=net,
        test_accuracy=accuracy,
        DESCR=_DESCR.format(width=extractor.n_features_out_, accuracy=accuracy),
    )
