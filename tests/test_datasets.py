"""The digits OOD benchmark data: shapes, ranges, seeding, disjoint sets, the .npz format."""

import numpy as np
import pytest
import torch

from sklearn_reclag.datasets import (
    ID_CLASSES,
    OOD_TEST_SETS,
    load_digits_ood_features,
    load_digits_ood_images,
    load_features_npz,
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


def test_files_that_are_not_npz_archives_are_refused(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_features_npz(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_features_npz(single)


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
