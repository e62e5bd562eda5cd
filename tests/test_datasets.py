"""The OOD benchmark data (digits, MNIST-1D): shapes, ranges, seeding, disjoint sets, the
MNIST-1D cache, the .npz format."""

import json
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sklearn_reclag import datasets
from sklearn_reclag.__main__ import main
from sklearn_reclag.datasets import (
    ID_CLASSES,
    OOD_TEST_SETS,
    load_digits_ood_features,
    load_digits_ood_images,
    load_features_npz,
    load_mnist1d_ood_features,
    save_features_npz,
    train_digits_cnn,
)
from sklearn_reclag.features import linear_head


@pytest.fixture(scope="module")
def data():
    return load_digits_ood_features(random_state=0, quick=True, device="cpu")


@pytest.fixture(scope="module")
def images():
    return load_digits_ood_images(random_state=0, n_ood=100)


def _feature_arrays(bunch):
    return {"X_train": bunch.X_train, "X_test": bunch.X_test, "X_val_ood": bunch.X_val_ood,
            **bunch.ood_test}


def _rows(X):
    return {row.tobytes() for row in np.asarray(X, dtype=np.float64)}


# ------------------------------------------------------------------------------- images
def test_image_sets_are_8x8_integer_intensities_0_to_16(images):
    sets = {"X_train": images.X_train, "X_test": images.X_test,
            "X_val_ood": images.X_val_ood, **images.ood_test}
    for name, X in sets.items():
        assert X.shape[1] == 64, name
        assert X.min() >= 0 and X.max() <= 16, name
        np.testing.assert_array_equal(X, np.rint(X), err_msg=name)
    assert list(images.ood_test) == list(OOD_TEST_SETS)
    assert len(images.ood_test["digits 5-9"]) == 896
    assert all(len(images.ood_test[name]) == 100 for name in OOD_TEST_SETS[1:])


def test_id_split_is_stratified_over_classes_0_to_4(images):
    assert set(np.unique(images.y_train)) == set(np.unique(images.y_test)) == set(ID_CLASSES)
    train_share = np.bincount(images.y_train) / len(images.y_train)
    test_share = np.bincount(images.y_test) / len(images.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_ood_sets_are_disjoint_from_id_and_validation_from_test(images):
    id_rows = _rows(images.X_train) | _rows(images.X_test)
    test_ood_rows = set().union(*(_rows(X) for X in images.ood_test.values()))
    val_rows = _rows(images.X_val_ood)
    for name, X in images.ood_test.items():
        assert not _rows(X) & id_rows, name
    assert not val_rows & id_rows
    assert not val_rows & test_ood_rows


def test_validation_set_is_built_from_the_training_split_only(images):
    """Its first half is pixel-shuffled training digits: same pixel multiset as one."""
    shuffled = images.X_val_ood[: len(images.X_val_ood) // 2]
    train_histograms = _rows(np.sort(images.X_train, axis=1))
    assert _rows(np.sort(shuffled, axis=1)) <= train_histograms


def test_generated_sets_are_not_degenerate(images):
    for name in ("photo patches", "blurred noise"):
        X = images.ood_test[name]
        # Min-max scaling: every image spans the full range, and images differ.
        assert (X.min(axis=1) == 0).all() and (X.max(axis=1) == 16).all(), name
        assert len(_rows(X)) == len(X), name


# ----------------------------------------------------------------------------- features
def test_feature_shapes_and_head(data):
    assert data.X_train.shape == (630, 64) and data.X_test.shape == (271, 64)
    assert data.y_train.shape == (630,) and data.y_test.shape == (271,)
    assert list(data.ood_test) == list(OOD_TEST_SETS)
    assert all(X.shape == (len(data.images.ood_test[name]), 64)
               for name, X in data.ood_test.items())
    assert data.X_val_ood.shape == (200, 64)
    coef, intercept = data.head
    assert coef.shape == (5, 64) and intercept.shape == (5,)
    for expected, actual in zip(linear_head(data.net), data.head):
        np.testing.assert_array_equal(expected, actual)


def test_features_are_finite_pooled_relu_activations(data):
    for name, X in _feature_arrays(data).items():
        assert np.isfinite(X).all() and (X >= 0).all(), name


def test_cnn_classifies_the_id_test_split_accurately(data):
    predicted = data.net.predict(data.images.X_test.reshape(-1, 1, 8, 8).astype(np.float32))
    accuracy = np.mean(predicted == data.y_test)
    assert accuracy == pytest.approx(data.test_accuracy)
    assert accuracy >= 0.9
    # The detectors' head reads the extracted features: it predicts what the CNN predicts.
    coef, intercept = data.head
    np.testing.assert_array_equal((data.X_test @ coef.T + intercept).argmax(axis=1), predicted)


@pytest.mark.slow
def test_full_form_cnn_is_accurate_too():
    data = load_digits_ood_features(random_state=1, device="cpu")
    assert data.test_accuracy >= 0.9
    assert data.X_val_ood.shape == (500, 64)


def test_same_seed_gives_identical_features_other_seed_differs(data):
    again = load_digits_ood_features(random_state=0, quick=True, device="cpu")
    other = load_digits_ood_features(random_state=1, quick=True, device="cpu")
    for name, X in _feature_arrays(data).items():
        np.testing.assert_array_equal(X, _feature_arrays(again)[name], err_msg=name)
    np.testing.assert_array_equal(data.head[0], again.head[0])
    assert not np.array_equal(data.images.X_train, other.images.X_train)
    assert not np.array_equal(data.head[0], other.head[0])
    assert not np.array_equal(data.ood_test["uniform noise"], other.ood_test["uniform noise"])


def test_training_leaves_the_global_random_states_alone(images):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    train_digits_cnn(images.X_train[:50], images.y_train[:50], max_epochs=1, device="cpu")
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()


def test_train_digits_cnn_rejects_bad_labels_and_widths():
    X = np.zeros((4, 64))
    with pytest.raises(ValueError, match="every label 0..2"):
        train_digits_cnn(X, np.array([0, 2, 2, 0]))
    with pytest.raises(ValueError, match="integer class labels"):
        train_digits_cnn(X, np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 64\)"):
        train_digits_cnn(np.zeros((4, 63)), np.array([0, 1, 0, 1]))


# ------------------------------------------------------------------------------ the npz
def test_npz_round_trip_keeps_every_array_and_the_set_order(data, tmp_path):
    path = tmp_path / "features.npz"
    save_features_npz(path, data)
    loaded = load_features_npz(path)
    for key in ("X_train", "y_train", "X_test", "y_test", "X_val_ood"):
        np.testing.assert_array_equal(loaded[key], data[key], err_msg=key)
    assert list(loaded.ood_test) == list(data.ood_test)
    for name in data.ood_test:
        np.testing.assert_array_equal(loaded.ood_test[name], data.ood_test[name])
    for saved, read in zip(data.head, loaded.head):
        np.testing.assert_array_equal(saved, read)


def test_npz_optional_keys_read_as_none(tmp_path, rng):
    path = tmp_path / "minimal.npz"
    np.savez(path, X_train=rng.normal(size=(6, 3)), y_train=np.arange(6) % 2,
             X_test=rng.normal(size=(2, 3)), ood_far=rng.normal(size=(3, 3)))
    loaded = load_features_npz(path)
    assert loaded.y_test is None and loaded.X_val_ood is None and loaded.head is None
    assert list(loaded.ood_test) == ["far"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No features file at"):
        load_features_npz(tmp_path / "absent.npz")


def _not_npz_files(tmp_path):
    """Files a user may pass for a features file that are not .npz archives."""
    np.savez(tmp_path / "whole.npz", X_train=np.zeros((3, 2)))
    archive = (tmp_path / "whole.npz").read_bytes()
    files = {"notes.npz": b"not an archive", "features.csv": b"a,b\n1,2\n",
             "empty.npz": b"", "truncated.npz": archive[: len(archive) // 2]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "single.npy", np.zeros(3))
    return [tmp_path / name for name in [*files, "single.npy"]]


def test_files_that_are_not_npz_archives_are_refused(tmp_path):
    """A text, empty, truncated or .npy file: a ValueError that says what a features
    file must hold, never numpy's advice to load pickles (allow_pickle)."""
    for path in _not_npz_files(tmp_path):
        with pytest.raises(ValueError, match="not a readable .npz archive") as error:
            load_features_npz(path)
        assert "pickle=" not in str(error.value) and "save_features_npz" in str(error.value)


def test_the_command_line_refuses_them_in_one_line(tmp_path, capsys):
    from sklearn_reclag.__main__ import main

    for path in _not_npz_files(tmp_path):
        status = main(["benchmark", "--features", str(path), "--output", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("drop, message", [
    ("X_test", r"lacks the keys \['X_test'\]"),
    ("ood_far", "at least one OOD test set"),
    ("head_intercept", r"lacks the keys \['head_intercept'\]"),
])
def test_npz_missing_keys_are_named(tmp_path, rng, drop, message):
    arrays = dict(X_train=rng.normal(size=(6, 3)), y_train=np.arange(6) % 2,
                  X_test=rng.normal(size=(2, 3)), ood_far=rng.normal(size=(3, 3)),
                  head_coef=rng.normal(size=(2, 3)), head_intercept=np.zeros(2))
    del arrays[drop]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_features_npz(tmp_path / "bad.npz")


def test_npz_inconsistent_shapes_are_named(tmp_path, rng):
    base = dict(X_train=rng.normal(size=(6, 3)), y_train=np.arange(6) % 2,
                X_test=rng.normal(size=(2, 3)))
    np.savez(tmp_path / "width.npz", **base, ood_far=rng.normal(size=(3, 4)))
    with pytest.raises(ValueError, match=r"'ood_far' has shape \(3, 4\), expected"):
        load_features_npz(tmp_path / "width.npz")
    np.savez(tmp_path / "labels.npz", **{**base, "y_train": np.zeros(5)},
             ood_far=rng.normal(size=(3, 3)))
    with pytest.raises(ValueError, match="'y_train' has shape"):
        load_features_npz(tmp_path / "labels.npz")
    np.savez(tmp_path / "head.npz", **base, ood_far=rng.normal(size=(3, 3)),
             head_coef=np.zeros((2, 4)), head_intercept=np.zeros(2))
    with pytest.raises(ValueError, match="head_coef"):
        load_features_npz(tmp_path / "head.npz")


def test_save_refuses_incomplete_data(tmp_path, rng):
    with pytest.raises(ValueError, match=r"lacks \['ood_test'\]"):
        save_features_npz(tmp_path / "x.npz", {"X_train": rng.normal(size=(3, 2)),
                                               "y_train": np.arange(3),
                                               "X_test": rng.normal(size=(2, 2))})


def test_save_features_npz_example_runs_outside_pytest():
    """The example called pytest's getfixture: a NameError for anyone who copied it."""
    import doctest

    from sklearn_reclag import _npz

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(_npz.save_features_npz, globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


@pytest.mark.parametrize("key, value, message", [
    ("X_test", np.full((5, 3), np.nan), "'X_test' holds 15 NaN"),
    ("X_val_ood", np.zeros((0, 3)), "'X_val_ood' is empty"),
    ("y_train", np.full(20, 0.5), "class labels"),
])
def test_save_features_npz_refuses_values_it_could_not_load(tmp_path, key, value, message):
    rng = np.random.RandomState(0)
    data = {"X_train": rng.normal(size=(20, 3)), "y_train": np.arange(20) % 2,
            "X_test": rng.normal(size=(5, 3)), "ood_test": {"far": rng.normal(size=(4, 3))},
            key: value}
    with pytest.raises(ValueError, match=message):
        save_features_npz(tmp_path / "f.npz", data)
    assert not (tmp_path / "f.npz").exists()


# ------------------------------------------------------------------------------ MNIST-1D
MNIST1D_SETS = ["near", "shuffled", "smooth_noise", "sine"]
# The quick form: 2,500 signals, 250 of each class; classes 0-6 split 60 / 40.
QUICK_SIZES = {"X_train": 1050, "X_test": 700, "X_val_ood": 200, "near": 750,
               "shuffled": 200, "smooth_noise": 200, "sine": 200}


def _random_states():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _same_random_states(before, after):
    return (torch.equal(before[0], after[0])
            and np.array_equal(before[1][1], after[1][1]) and before[1][2] == after[1][2]
            and before[2] == after[2])


def _no_computing(*args, **kwargs):
    raise AssertionError("computed the features instead of reading the cache")


@pytest.fixture(scope="module")
def mnist1d_home(tmp_path_factory):
    return tmp_path_factory.mktemp("scikit_learn_data")


@pytest.fixture(scope="module")
def mnist1d_run(mnist1d_home):
    """The quick form computed once, and the global random states around the call."""
    before = _random_states()
    data = load_mnist1d_ood_features(random_state=0, quick=True, device="cpu",
                                     data_home=mnist1d_home)
    return SimpleNamespace(data=data, before=before, after=_random_states())


@pytest.fixture(scope="module")
def mnist1d(mnist1d_run):
    return mnist1d_run.data


def _cache_files(home):
    return sorted((home / "sklearn_reclag").iterdir())


def test_mnist1d_has_the_digits_keys_shapes_and_set_sizes(mnist1d):
    digits_keys = {"X_train", "y_train", "X_test", "y_test", "ood_test", "X_val_ood", "head",
                   "images", "net", "test_accuracy", "DESCR"}
    assert set(mnist1d) == digits_keys
    assert list(mnist1d.ood_test) == list(mnist1d.images.ood_test) == MNIST1D_SETS
    for name, X in _feature_arrays(mnist1d).items():
        assert X.shape == (QUICK_SIZES[name], 64), name
        assert X.dtype == np.float64 and np.isfinite(X).all() and (X >= 0).all(), name
    for name, X in _feature_arrays(mnist1d.images).items():
        assert X.shape == (QUICK_SIZES[name], 40) and X.dtype == np.float32, name
    for y, n in ((mnist1d.y_train, 1050), (mnist1d.y_test, 700)):
        assert y.shape == (n,) and set(np.unique(y)) == set(range(7))
        np.testing.assert_array_equal(np.bincount(y), n // 7)  # stratified
    coef, intercept = mnist1d.head
    assert coef.shape == (7, 64) and intercept.shape == (7,)
    assert "MNIST-1D" in mnist1d.DESCR and "classes 0-6" in mnist1d.DESCR


def test_mnist1d_head_classifies_id_test_rows_well_above_chance(mnist1d):
    coef, intercept = mnist1d.head
    predicted = (mnist1d.X_test @ coef.T + intercept).argmax(axis=1)
    accuracy = np.mean(predicted == mnist1d.y_test)
    assert accuracy >= 0.6  # chance: 1/7
    assert accuracy == pytest.approx(mnist1d.test_accuracy)
    np.testing.assert_array_equal(
        mnist1d.net.predict(mnist1d.images.X_test.reshape(-1, 1, 40)), predicted)


def test_mnist1d_leaves_the_global_random_states_alone(mnist1d_run):
    assert _same_random_states(mnist1d_run.before, mnist1d_run.after)


def test_mnist1d_ood_signals_are_built_as_documented(mnist1d):
    signals = mnist1d.images
    id_rows = _rows(signals.X_train) | _rows(signals.X_test)
    test_ood_rows = set().union(*(_rows(X) for X in signals.ood_test.values()))
    # 'shuffled': each row holds the values of one ID test row, in another order.
    shuffled = signals.ood_test["shuffled"]
    assert _rows(np.sort(shuffled, axis=1)) <= _rows(np.sort(signals.X_test, axis=1))

    # The generated sets are smooth (neighbouring steps correlated), unlike 'shuffled'.
    def lag_one_correlation(X):
        X = X - X.mean(axis=1, keepdims=True)
        return np.mean(np.sum(X[:, 1:] * X[:, :-1], axis=1) / np.sum(X * X, axis=1))

    assert lag_one_correlation(shuffled) < 0.2
    assert lag_one_correlation(signals.ood_test["smooth_noise"]) > 0.7
    assert lag_one_correlation(signals.ood_test["sine"]) > 0.6
    # On the ID signals' scale: row means and standard deviations of ID rows.
    for name in ("smooth_noise", "sine"):
        std = signals.ood_test[name].std(axis=1)
        assert signals.X_train.std(axis=1).min() - 1e-4 <= std.min(), name
        assert std.max() <= signals.X_train.std(axis=1).max() + 1e-4, name
    # The validation set: from ID training rows only (its first half is block-shuffled
    # training rows), and no row of it or of a test set is an ID row.
    blocks = signals.X_val_ood[: len(signals.X_val_ood) // 2]
    assert _rows(np.sort(blocks, axis=1)) <= _rows(np.sort(signals.X_train, axis=1))
    assert not _rows(signals.X_val_ood) & (id_rows | test_ood_rows)
    for name, X in signals.ood_test.items():
        assert not _rows(X) & id_rows, name


def test_mnist1d_second_call_reads_the_cache(mnist1d, mnist1d_home, monkeypatch):
    monkeypatch.setattr(datasets, "_make_mnist1d", _no_computing)
    monkeypatch.setattr(datasets, "_train_mnist1d_cnn", _no_computing)
    before = _random_states()
    again = load_mnist1d_ood_features(random_state=0, quick=True, device="cpu",
                                      data_home=mnist1d_home)
    assert _same_random_states(before, _random_states())
    for arrays, cached in ((mnist1d, again), (mnist1d.images, again.images)):
        for name, X in _feature_arrays(arrays).items():
            np.testing.assert_array_equal(X, _feature_arrays(cached)[name], err_msg=name)
            assert X.dtype == _feature_arrays(cached)[name].dtype
        np.testing.assert_array_equal(arrays.y_train, cached.y_train)
        np.testing.assert_array_equal(arrays.y_test, cached.y_test)
    for saved, read in zip(mnist1d.head, again.head):
        np.testing.assert_array_equal(saved, read)
    assert again.test_accuracy == mnist1d.test_accuracy and again.DESCR == mnist1d.DESCR
    # The net is rebuilt from the cached weights: it predicts what the trained one did.
    signals = mnist1d.images.X_test.reshape(-1, 1, 40)
    np.testing.assert_array_equal(again.net.predict(signals), mnist1d.net.predict(signals))
    # One whole file, named after the seed, the form and the versions; no temporary left.
    (path,) = _cache_files(mnist1d_home)
    assert path.suffix == ".npz" and "seed0_quick" in path.name
    assert "sklearn-reclag-" in path.name and "mnist1d-" in path.name


def test_mnist1d_cache_is_keyed_by_seed_and_form(mnist1d, mnist1d_home, monkeypatch):
    monkeypatch.setattr(datasets, "_make_mnist1d", _no_computing)
    for changed in ({"random_state": 1}, {"quick": False}):
        arguments = {"random_state": 0, "quick": True, **changed}
        with pytest.raises(AssertionError, match="instead of reading the cache"):
            load_mnist1d_ood_features(device="cpu", data_home=mnist1d_home, **arguments)


@pytest.fixture
def tiny_mnist1d_form(monkeypatch):
    """A form of 300 signals and 2 epochs: the whole loader in a second or two."""
    monkeypatch.setitem(datasets._MNIST1D_FORMS, True,
                        dict(n_samples=300, n_ood=20, max_epochs=2, batch_size=64))


def test_mnist1d_same_seed_same_features_other_seed_differs_tiny(tiny_mnist1d_form,
                                                                 tmp_path):
    first, again, other = (
        load_mnist1d_ood_features(random_state=seed, quick=True, device="cpu",
                                  data_home=tmp_path / name)
        for seed, name in ((0, "first"), (0, "again"), (1, "other")))
    for name, X in _feature_arrays(first).items():
        assert X.shape[0] == {"X_train": 126, "X_test": 84, "near": 90}.get(name, 20), name
        np.testing.assert_array_equal(X, _feature_arrays(again)[name], err_msg=name)
        assert not np.array_equal(X, _feature_arrays(other)[name]), name
    for name, X in _feature_arrays(first.images).items():
        np.testing.assert_array_equal(X, _feature_arrays(again.images)[name], err_msg=name)
        assert not np.array_equal(X, _feature_arrays(other.images)[name]), name
    np.testing.assert_array_equal(first.head[0], again.head[0])
    assert not np.array_equal(first.head[0], other.head[0])


@pytest.mark.slow
def test_mnist1d_same_seed_same_features_other_seed_differs(mnist1d, tmp_path):
    again = load_mnist1d_ood_features(random_state=0, quick=True, device="cpu",
                                      data_home=tmp_path / "again")
    other = load_mnist1d_ood_features(random_state=1, quick=True, device="cpu",
                                      data_home=tmp_path / "other")
    for name, X in _feature_arrays(mnist1d).items():
        np.testing.assert_array_equal(X, _feature_arrays(again)[name], err_msg=name)
        assert not np.array_equal(X, _feature_arrays(other)[name]), name
    np.testing.assert_array_equal(mnist1d.head[0], again.head[0])
    assert not np.array_equal(mnist1d.head[0], other.head[0])
    assert not np.array_equal(mnist1d.images.X_train, other.images.X_train)


def test_mnist1d_unreadable_cache_is_computed_again(mnist1d, mnist1d_home, tmp_path,
                                                   monkeypatch):
    (cached,) = _cache_files(mnist1d_home)
    arrays = datasets._read_cache(cached)
    monkeypatch.setattr(datasets, "_mnist1d_arrays", lambda *args: (arrays, mnist1d.net))
    path = datasets._mnist1d_cache_file(tmp_path, 0, True)
    path.write_text("not an archive")
    with pytest.warns(UserWarning, match="unreadable cache"):
        data = load_mnist1d_ood_features(random_state=0, quick=True, device="cpu",
                                         data_home=tmp_path)
    np.testing.assert_array_equal(data.X_test, mnist1d.X_test)
    assert _cache_files(tmp_path) == [path]  # replaced by a whole file, nothing left over
    assert set(datasets._read_cache(path)) == set(arrays)


def test_mnist1d_without_its_package_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r"pip install 'sklearn-reclag\[benchmarks\]'"):
        load_mnist1d_ood_features(quick=True, data_home=tmp_path)
    status = main(["benchmark", "--dataset", "mnist1d", "--output", str(tmp_path)])
    assert status == 2


# ----------------------------------------------------------- the CLI's --dataset option
@pytest.mark.parametrize("dataset, loader", [
    ("mnist1d", "load_mnist1d_ood_features"), ("digits", "load_digits_ood_features"),
    (None, "load_digits_ood_features"),
])
def test_benchmark_dataset_option_picks_the_loader(dataset, loader, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(datasets, loader, lambda **kwargs: calls.append(kwargs))

    def first_seed_only(args, load_data, **kwargs):
        load_data(0)
        raise KeyboardInterrupt  # stop before any fit

    monkeypatch.setattr("sklearn_reclag.__main__._run", first_seed_only)
    option = [] if dataset is None else ["--dataset", dataset]
    with pytest.raises(KeyboardInterrupt):
        main(["benchmark", *option, "--quick", "--device", "cpu", "--output", str(tmp_path)])
    assert calls == [{"random_state": 0, "quick": True, "device": "cpu"}]


def test_benchmark_dataset_option_refuses_other_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--dataset", "cifar10"])
    assert exit_info.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_benchmark_runs_on_the_cached_mnist1d_features(mnist1d, mnist1d_home, tmp_path,
                                                       monkeypatch, capsys):
    """The CLI reads the features from scikit-learn's data home (SCIKIT_LEARN_DATA)."""
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(mnist1d_home))
    monkeypatch.setattr(datasets, "_make_mnist1d", _no_computing)
    out = tmp_path / "out"
    status = main(["benchmark", "--dataset", "mnist1d", "--quick", "--seeds", "1",
                   "--methods", "MSP", "--device", "cpu", "--output", str(out)])
    assert status == 0
    assert "## mnist1d benchmark: 1 seed" in capsys.readouterr().out
    runs = json.loads((out / "results.json").read_text())
    assert [run["method"] for run in runs] == ["MSP"]
    assert all(set(run["metrics"]) >= set(MNIST1D_SETS) for run in runs)
