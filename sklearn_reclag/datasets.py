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

:func:`load_mnist1d_ood_features` is a second, larger benchmark of the same form on
MNIST-1D (Greydanus & Kobak, ICML 2024), generated offline by the ``mnist1d`` package:
classes 0-6 in distribution, classes 7-9 near OOD, three far OOD sets of signals, a 1-D
CNN's features (:class:`MNIST1DCNN`), cached on disk under scikit-learn's data home.

:func:`save_features_npz` / :func:`load_features_npz` store the same content for a user's
own features, the input of ``python -m sklearn_reclag benchmark --features FILE.npz``
(defined in :mod:`sklearn_reclag._npz`, public here).
"""

import contextlib
import os
import random
import tempfile
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from sklearn.datasets import get_data_home, load_digits, load_sample_images
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


class MNIST1DCNN(torch.nn.Module):
    """A small 1-D CNN for MNIST-1D signals whose penultimate layer is pooled ReLU features.

    conv 5 (32) -> ReLU -> max-pool 2 -> conv 5 (64) -> ReLU -> max-pool 2 -> conv 3
    (``width``) -> ReLU -> global average pooling -> ``head`` (:class:`torch.nn.Linear`).
    The pooled ReLU activations (the input of ``head``) are the features the detectors
    read; the pooling makes them invariant to where the digit sits in the signal, as
    MNIST-1D translates its digits at random.

    Parameters
    ----------
    n_classes : int, default=7
        Number of outputs (logits) of ``head``.
    width : int, default=64
        Number of channels of the last convolution, i.e. the feature width.

    Examples
    --------
    >>> import torch
    >>> from sklearn_reclag.datasets import MNIST1DCNN
    >>> MNIST1DCNN(n_classes=7)(torch.zeros(2, 1, 40)).shape
    torch.Size([2, 7])
    """

    def __init__(self, n_classes=7, width=64):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv1d(1, 32, kernel_size=5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool1d(2),
            torch.nn.Conv1d(32, 64, kernel_size=5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool1d(2),
            torch.nn.Conv1d(64, width, kernel_size=3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool1d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(width, n_classes)

    def forward(self, X):
        """Logits of a batch of signals of shape (batch, 1, 40) (MNIST-1D's scale)."""
        return self.head(self.features(X))


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
    return _fit_seeded(net, images, y, random_state)


def _fit_seeded(net, X, y, random_state):
    """``net.fit(X, y)`` with torch's CPU generator seeded from ``random_state``, restored
    afterwards: a reproducible fit that leaves the caller's global random state alone."""
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    # fork_rng saves and restores the CPU generator: seeding inside it leaves no trace.
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator (restored on exit): torch.manual_seed would also seed
        # every CUDA generator, which fork_rng(devices=[]) does not restore.
        torch.default_generator.manual_seed(seed)
        net.fit(X, np.asarray(y).astype(np.int64))
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


# ------------------------------------------------------------------------------ MNIST-1D
_MNIST1D_ID_CLASSES = (0, 1, 2, 3, 4, 5, 6)
_MNIST1D_OOD_TEST_SETS = ("near", "shuffled", "smooth_noise", "sine")
_MNIST1D_LENGTH = 40  # time steps of a signal (mnist1d's final_seq_length)
_MNIST1D_TEST_SIZE = 0.4
# Signals generated (10 classes, equal shares), rows of each generated OOD set and of the
# validation set, and the CNN's training, in the full and the quick form.
_MNIST1D_FORMS = {
    False: dict(n_samples=40_000, n_ood=3_000, max_epochs=10, batch_size=128),
    True: dict(n_samples=2_500, n_ood=200, max_epochs=15, batch_size=64),
}
_SMOOTH_NOISE_SIGMA = 2.0  # time steps
_SINE_PERIODS = (2.0, 6.0)  # periods over the 40 steps
_N_BLOCKS = 8  # the validation set's block shuffle: 8 blocks of 5 time steps
_MNIST1D_CACHE_FORMAT = 1  # bump when the cached arrays change meaning

_MNIST1D_DESCR = """MNIST-1D OOD benchmark (sklearn-reclag)
=======================================

Data: MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML
2024), generated offline by the mnist1d package (make_dataset, seeded from random_state):
{n_samples} signals of 40 time steps, an equal share of each of ten 1-D digit templates,
each padded, scaled, translated, sheared and laid on correlated and white noise; the
package standardises the whole set to mean 0 and standard deviation 1.

In distribution: classes 0-6 (seven of ten templates, most of the data to train on; the
three held out, 7-9, share shapes with ID templates, see 'near'), split into train / test
({test_percent} % test) with a seeded stratified split.

Features: the penultimate layer (global-average-pooled ReLU activations, {width} values) of
MNIST1DCNN trained with skorch on the ID training split; ``head`` is its final linear
layer (coef, intercept). Test accuracy of the CNN on the ID test split: {accuracy:.3f}.

OOD test sets (every row 40 time steps, on the ID signals' scale):
- 'near': every generated signal of classes 7-9 (near OOD: 7 is 1 upside down, 8 is 3
  upside down, 9 a dip like 4 and 6).
- 'shuffled': ID test signals, each with its 40 time steps in a random order: the ID
  values without a digit's shape (far OOD).
- 'smooth_noise': white Gaussian noise smoothed with a Gaussian kernel (sigma 2 steps),
  each row scaled to the mean and standard deviation of a random ID training signal.
- 'sine': sinusoids of 2 to 6 periods over the 40 steps with a random phase, plus white
  noise of a tenth of their amplitude, scaled like 'smooth_noise': a smooth oscillation
  over the whole signal, where an MNIST-1D digit is one localised template on a
  low-amplitude background (far OOD).

Validation OOD set (X_val_ood), for hyperparameter selection only, never a test set: half
block-shuffled ID training signals (8 blocks of 5 time steps in a random order other
than the original one), half the mean of two ID training signals of different classes,
scaled to the first one's mean and standard deviation. It is built from the ID training
split alone, so neither the ID test rows nor any OOD test row is seen in selection.
"""


def _import_mnist1d():
    """mnist1d's ``data`` module, or an ImportError that says how to install it."""
    try:
        import mnist1d.data
    except ImportError as exc:
        raise ImportError(
            "load_mnist1d_ood_features needs the mnist1d package (it generates MNIST-1D "
            "offline): pip install 'sklearn-reclag[benchmarks]' (or the 'examples' "
            "extra), or pip install mnist1d."
        ) from exc
    return mnist1d.data


def _make_mnist1d(n_samples, seed):
    """``n_samples`` MNIST-1D signals (float32, (n, 40)) and labels, from mnist1d's own
    generator; never its ``get_dataset``, which downloads."""
    data = _import_mnist1d()
    args = data.get_dataset_args()
    args.num_samples = n_samples
    args.seed = seed
    args.train_split = 1.0  # every signal in 'x': the split below is ours, stratified
    # make_dataset seeds and draws from numpy's and Python's global generators: they are
    # put back as they were.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        dataset = data.make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return dataset["x"].astype(np.float32), dataset["y"].astype(np.int64)


def _match_rows(signals, reference):
    """Each row of ``signals`` shifted and scaled to the mean and standard deviation of
    the same row of ``reference``."""
    standard = (signals - signals.mean(axis=1, keepdims=True)) / np.maximum(
        signals.std(axis=1, keepdims=True), 1e-12)
    return standard * reference.std(axis=1, keepdims=True) + reference.mean(
        axis=1, keepdims=True)


def _random_rows(X, n, rng):
    return X[rng.randint(len(X), size=n)]


def _shuffled_signals(X, n, rng):
    """``n`` rows of X, each with its time steps in a random order."""
    rows = X[rng.choice(len(X), size=n, replace=n > len(X))]
    order = np.argsort(rng.random_sample(rows.shape), axis=1)
    return np.take_along_axis(rows, order, axis=1)


def _smooth_noise(n, X_train, rng):
    noise = rng.normal(size=(n, _MNIST1D_LENGTH))
    smooth = gaussian_filter1d(noise, sigma=_SMOOTH_NOISE_SIGMA, axis=1, mode="reflect")
    return _match_rows(smooth, _random_rows(X_train, n, rng))


def _sines(n, X_train, rng):
    steps = np.arange(_MNIST1D_LENGTH) / _MNIST1D_LENGTH
    periods = rng.uniform(*_SINE_PERIODS, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    waves = np.sin(2 * np.pi * periods * steps + phase)
    waves += 0.1 * rng.normal(size=waves.shape)
    return _match_rows(waves, _random_rows(X_train, n, rng))


def _mnist1d_validation_ood(X_train, y_train, n, rng):
    """Block-shuffled and pairwise-averaged ID training signals (see _MNIST1D_DESCR)."""
    n_blocks = n // 2
    blocks = _random_rows(X_train, n_blocks, rng).reshape(n_blocks, _N_BLOCKS, -1)
    order = np.argsort(rng.random_sample((n_blocks, _N_BLOCKS)), axis=1)
    unchanged = (order == np.arange(_N_BLOCKS)).all(axis=1)
    order[unchanged] = np.roll(order[unchanged], 1, axis=1)  # never the signal itself
    shuffled = np.take_along_axis(blocks, order[:, :, None], axis=1).reshape(n_blocks, -1)
    first = rng.randint(len(X_train), size=n - n_blocks)
    second = np.array([rng.choice(np.flatnonzero(y_train != y_train[i])) for i in first])
    mixed = _match_rows((X_train[first] + X_train[second]) / 2, X_train[first])
    return np.vstack([shuffled, mixed])


def _mnist1d_signals(random_state, quick):
    """The benchmark's signals: ID train / test, the OOD test sets, the validation set."""
    form = _MNIST1D_FORMS[bool(quick)]
    rng = check_random_state(random_state)
    X, y = _make_mnist1d(form["n_samples"], seed=rng.randint(np.iinfo(np.int32).max))
    is_id = np.isin(y, _MNIST1D_ID_CLASSES)
    X_train, X_test, y_train, y_test = train_test_split(
        X[is_id], y[is_id], test_size=_MNIST1D_TEST_SIZE, stratify=y[is_id],
        random_state=rng.randint(np.iinfo(np.int32).max),
    )
    n = form["n_ood"]
    ood_test = {
        "near": X[~is_id],
        "shuffled": _shuffled_signals(X_test, n, rng),
        "smooth_noise": _smooth_noise(n, X_train, rng),
        "sine": _sines(n, X_train, rng),
    }
    return Bunch(
        X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
        ood_test={name: X.astype(np.float32) for name, X in ood_test.items()},
        X_val_ood=_mnist1d_validation_ood(X_train, y_train, n, rng).astype(np.float32),
    )


def _mnist1d_net(n_classes, *, quick, device):
    """The unfitted skorch net of :class:`MNIST1DCNN` for the given form."""
    from skorch import NeuralNetClassifier

    form = _MNIST1D_FORMS[bool(quick)]
    return NeuralNetClassifier(
        MNIST1DCNN,
        module__n_classes=n_classes,
        classes=list(range(n_classes)),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=form["max_epochs"],
        batch_size=form["batch_size"],
        train_split=None,
        iterator_train__shuffle=True,
        device=str(resolve_device(device)),
        verbose=0,
    )


def _train_mnist1d_cnn(X, y, *, quick, random_state, device):
    """:class:`MNIST1DCNN` trained with skorch on signals X (n, 40), seeded like
    :func:`train_digits_cnn` (the caller's global random state is left alone)."""
    net = _mnist1d_net(len(_MNIST1D_ID_CLASSES), quick=quick, device=device)
    return _fit_seeded(net, X.reshape(-1, 1, _MNIST1D_LENGTH), y, random_state)


def _mnist1d_arrays(random_state, quick, device):
    """Train the CNN and extract every set's features: the arrays of the cache file, and
    the trained net."""
    rng = check_random_state(random_state)
    signals = _mnist1d_signals(rng.randint(np.iinfo(np.int32).max), quick)
    net = _train_mnist1d_cnn(signals.X_train, signals.y_train, quick=quick,
                             random_state=rng.randint(np.iinfo(np.int32).max), device=device)
    extractor = TorchFeatureExtractor(net.module_, input_shape=(1, _MNIST1D_LENGTH),
                                      device=net.device).fit(signals.X_train)
    predicted = net.predict(signals.X_test.reshape(-1, 1, _MNIST1D_LENGTH))
    coef, intercept = linear_head(net)
    arrays = {
        "X_train": extractor.transform(signals.X_train), "y_train": signals.y_train,
        "X_test": extractor.transform(signals.X_test), "y_test": signals.y_test,
        "X_val_ood": extractor.transform(signals.X_val_ood),
        "head_coef": coef, "head_intercept": intercept,
        "test_accuracy": np.float64(np.mean(predicted == signals.y_test)),
        "images_X_train": signals.X_train, "images_X_test": signals.X_test,
        "images_X_val_ood": signals.X_val_ood,
    }
    for name, X in signals.ood_test.items():
        arrays[f"ood_{name}"] = extractor.transform(X)
        arrays[f"images_ood_{name}"] = X
    for name, value in net.module_.state_dict().items():
        arrays[f"module_{name}"] = value.detach().cpu().numpy()
    return arrays, net


def _mnist1d_bunch(arrays, net, *, quick, device):
    """The loader's Bunch from the arrays of a cache file (and the net, if trained)."""
    n_classes = len(arrays["head_intercept"])
    if net is None:  # read from the cache: the trained weights, in a fresh skorch net
        net = _mnist1d_net(n_classes, quick=quick, device=device)
        with torch.random.fork_rng(devices=[]):  # initialize() draws initial weights
            net.initialize()
        net.module_.load_state_dict({
            name[len("module_"):]: torch.from_numpy(value)
            for name, value in arrays.items() if name.startswith("module_")})
    ood_test = {name: arrays[f"ood_{name}"] for name in _MNIST1D_OOD_TEST_SETS}
    images = Bunch(
        X_train=arrays["images_X_train"], y_train=arrays["y_train"],
        X_test=arrays["images_X_test"], y_test=arrays["y_test"],
        ood_test={name: arrays[f"images_ood_{name}"] for name in _MNIST1D_OOD_TEST_SETS},
        X_val_ood=arrays["images_X_val_ood"],
    )
    accuracy = float(arrays["test_accuracy"])
    n_signals = len(images.X_train) + len(images.X_test) + len(images.ood_test["near"])
    return Bunch(
        X_train=arrays["X_train"], y_train=arrays["y_train"],
        X_test=arrays["X_test"], y_test=arrays["y_test"],
        ood_test=ood_test, X_val_ood=arrays["X_val_ood"],
        head=(arrays["head_coef"], arrays["head_intercept"]),
        images=images, net=net, test_accuracy=accuracy,
        DESCR=_MNIST1D_DESCR.format(
            n_samples=f"{n_signals:,}", test_percent=round(100 * _MNIST1D_TEST_SIZE),
            width=arrays["X_train"].shape[1], accuracy=accuracy),
    )


def _mnist1d_cache_file(data_home, random_state, quick):
    """Where the features of this seed and form are cached (folder created), keyed by the
    versions of this package and of mnist1d."""
    from importlib.metadata import version

    from . import __version__

    folder = Path(get_data_home(data_home)) / "sklearn_reclag"
    folder.mkdir(exist_ok=True)
    return folder / (
        f"mnist1d_ood_features_v{_MNIST1D_CACHE_FORMAT}_sklearn-reclag-{__version__}"
        f"_mnist1d-{version('mnist1d')}_seed{int(random_state)}"
        f"_{'quick' if quick else 'full'}.npz")


def _read_cache(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _write_cache(path, arrays):
    """np.savez_compressed to a temporary file of the same folder, then os.replace: a
    reader never sees half a file, and concurrent writers leave one whole file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_mnist1d_ood_features(*, random_state=0, quick=False, device="auto", data_home=None):
    """The MNIST-1D benchmark's features: MNIST1DCNN features of every set, and its head.

    A second benchmark of the form of :func:`load_digits_ood_features`, larger and
    harder: MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D",
    ICML 2024) is generated offline by the ``mnist1d`` package (nothing is downloaded).

    - In distribution: classes 0-6, split into train / test (40 % test, stratified).
      Seven of the ten templates keep most of the data for training, and the three held
      out share shapes with ID ones (7 is 1 upside down, 8 is 3 upside down, 9 a dip like
      4 and 6), which makes them a near-OOD set.
    - OOD test sets, in this order: ``'near'`` (every generated signal of classes 7-9),
      ``'shuffled'`` (ID test signals with their time steps permuted), ``'smooth_noise'``
      (Gaussian noise smoothed by a Gaussian kernel, each row scaled to the mean and
      standard deviation of an ID signal) and ``'sine'`` (random-frequency sinusoids
      plus noise, scaled the same way). The sinusoids are far OOD without being trivial:
      as smooth as the digits and on their scale, they oscillate over the whole signal
      where an MNIST-1D digit is one localised template on a low background. Time
      reversal was not taken: several templates (0, 3, 6, 8) are nearly symmetric, so a
      reversed signal is often an ID digit.
    - A validation OOD set for hyperparameter selection, built from the ID training
      signals only: half block-shuffled signals, half means of two signals of different
      classes (see ``DESCR``).

    Trains :class:`MNIST1DCNN` with skorch on the ID training signals (seeded by
    ``random_state``, without touching the global random state of torch, numpy or
    Python's :mod:`random`) and extracts the pooled ReLU features of every set.

    ========================== ===================== ===================
    form                       full                  ``quick=True``
    ========================== ===================== ===================
    signals generated          40,000                2,500
    ID train / test rows       16,800 / 11,200       1,050 / 700
    'near' rows                12,000                750
    other OOD sets, X_val_ood  3,000 rows each       200 rows each
    CNN training               10 epochs, batch 128  15 epochs, batch 64
    ========================== ===================== ===================

    The full form takes about a minute on one CPU core (generating the signals, then
    training), the quick form a few seconds. With an int ``random_state`` the result is
    cached in the folder ``sklearn_reclag`` of scikit-learn's data home (one compressed
    ``.npz`` per seed and form, about 20 MB for the full form, named after the versions
    of this package and of mnist1d, written atomically): a later call with the same
    arguments reads it instead of training. A cache computed on one device is read on
    any other.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seeds the signals, the split, the OOD sets and the CNN's training: the same int
        gives the same features on the same machine and number of torch threads (the
        order of the CPU's sums follows the threads; CUDA convolutions may differ in
        the last bits too). Only an int is cached: None or a RandomState instance
        computes the features every time.
    quick : bool, default=False
        The small form of the table above, for demos and tests.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where the CNN is trained and run.
    data_home : str or path-like, default=None
        scikit-learn's data home (:func:`sklearn.datasets.get_data_home`): by default
        the ``SCIKIT_LEARN_DATA`` environment variable, else ``~/scikit_learn_data``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of :func:`load_digits_ood_features`:

        - ``X_train``, ``y_train``, ``X_test``, ``y_test``: ID features (float64, shape
          (n, 64)) and labels 0-6;
        - ``ood_test``: dict name -> OOD test features, in the order 'near', 'shuffled',
          'smooth_noise', 'sine';
        - ``X_val_ood``: validation OOD features, for hyperparameter selection only;
        - ``head``: ``(coef, intercept)`` of the CNN's final linear layer;
        - ``images``: the same content as signals (float32, shape (n, 40)), under the
          digits loader's key;
        - ``net``: the skorch net of the trained CNN (rebuilt from the cached weights
          when the cache is read); ``test_accuracy``: its ID test accuracy;
        - ``DESCR``: a description of the data.

    Raises
    ------
    ImportError
        If the ``mnist1d`` package is not installed (the ``benchmarks`` and ``examples``
        extras install it).

    See Also
    --------
    load_digits_ood_features : the smaller digits benchmark of the same form.
    save_features_npz : store such a Bunch (or your own features) in one file.

    Examples
    --------
    The quick form trains for a few seconds, more than a doctest should take (the tests
    run it):

    >>> import tempfile
    >>> from sklearn_reclag import EnergyDetector
    >>> from sklearn_reclag.datasets import load_mnist1d_ood_features
    >>> with tempfile.TemporaryDirectory() as home:  # doctest: +SKIP
    ...     data = load_mnist1d_ood_features(quick=True, device="cpu", data_home=home)
    >>> data.X_train.shape, data.head[0].shape  # doctest: +SKIP
    ((1050, 64), (7, 64))
    >>> det = EnergyDetector(head=data.head).fit(data.X_train, data.y_train)  # doctest: +SKIP
    >>> det.score_samples(data.ood_test["sine"]).shape  # doctest: +SKIP
    (200,)
    """
    _import_mnist1d()  # a clear ImportError before anything else
    path = None
    if isinstance(random_state, Integral):
        try:
            path = _mnist1d_cache_file(data_home, random_state, quick)
        except OSError as exc:
            warnings.warn(f"cannot use the data home for a cache ({exc}); the features "
                          "are computed and not stored.", UserWarning, stacklevel=2)
    if path is not None and path.is_file():
        try:
            return _mnist1d_bunch(_read_cache(path), None, quick=quick, device=device)
        except Exception as exc:  # a damaged or foreign file: computed again, replaced
            warnings.warn(f"ignoring the unreadable cache {str(path)!r} ({exc!r}); the "
                          "features are computed again.", UserWarning, stacklevel=2)
    # A DataLoader draws a seed from torch's CPU generator even when it does not shuffle
    # (net.predict, the feature extraction): the generator is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        arrays, net = _mnist1d_arrays(random_state, quick, device)
    if path is not None:
        try:
            _write_cache(path, arrays)
        except OSError as exc:
            warnings.warn(f"cannot write the cache {str(path)!r} ({exc}); the features "
                          "are not stored.", UserWarning, stacklevel=2)
    return _mnist1d_bunch(arrays, net, quick=quick, device=device)
