"""The shared tf.data pipeline: same pixels from files and arrays, order, labels, per-element seeds."""

import re

import cv2
import numpy as np
import pytest

import input_pipeline as ip
import rafdb_dataset as rd


@pytest.fixture(scope="module")
def test_set(sample_tree):
    labels = rd.load_labels(sample_tree, "test", "hard")
    return labels, labels.aligned_paths(sample_tree)


def _collect(dataset):
    images, labels = [], []
    for batch in dataset:
        if isinstance(batch, tuple):
            images.append(batch[0].numpy())
            labels.append(batch[1].numpy())
        else:
            images.append(batch.numpy())
    return np.concatenate(images), (np.concatenate(labels) if labels else None)


def test_files_are_decoded_resized_and_kept_in_order(test_set):
    labels, paths = test_set
    images, got_labels = _collect(ip.make_dataset(paths, labels.labels, image_size=(64, 48), batch_size=8))
    assert images.shape == (len(paths), 64, 48, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(got_labels, labels.labels)
    for index in (0, len(paths) - 1):
        bgr = cv2.imread(str(paths[index]))
        expected = cv2.resize(bgr, (48, 64), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        np.testing.assert_array_equal(images[index], expected.astype(np.float32))


def test_arrays_and_files_give_identical_inputs(test_set):
    _, paths = test_set
    arrays = [rd.read_image(path) for path in paths[:5]]
    from_files, _ = _collect(ip.make_dataset(paths[:5], image_size=(100, 100), batch_size=2, crop="legacy99"))
    from_arrays, _ = _collect(ip.make_array_dataset(arrays, image_size=(100, 100), batch_size=3, crop="legacy99"))
    np.testing.assert_array_equal(from_files, from_arrays)


def test_legacy99_drops_last_row_and_column():
    image = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    assert ip.full_frame_cut(image, "legacy99").shape == (99, 99, 3)
    np.testing.assert_array_equal(ip.full_frame_cut(image, "legacy99"), image[:99, :99])
    np.testing.assert_array_equal(ip.load_for_model(image, (100, 100), crop="exact"), image)
    with pytest.raises(ValueError, match="crop must be one of"):
        ip.full_frame_cut(image, "centre")


def test_grey_input_uses_rgb_luma():
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = 100  # pure red: grey = 0.299 * 100 = 29.9 -> 30
    grey = ip.load_for_model(image, (10, 10), channels=1)
    assert grey.shape == (10, 10, 1) and np.all(grey == 30)


class _Shift:
    """A picklable augmentation: adds a per-element random offset so seeds become visible."""

    def __call__(self, image, rng):
        return np.clip(image.astype(np.int16) + int(rng.integers(0, 50)), 0, 255).astype(np.uint8)


def test_augmentation_seeds_are_deterministic_and_redrawn_each_epoch(test_set):
    _, paths = test_set
    first = ip.make_dataset(paths[:6], image_size=(32, 32), batch_size=6, augment=_Shift(), seed=3)
    epoch1, _ = _collect(first)
    epoch2, _ = _collect(first)
    again, _ = _collect(ip.make_dataset(paths[:6], image_size=(32, 32), batch_size=6, augment=_Shift(), seed=3))
    np.testing.assert_array_equal(epoch1, again)
    assert not np.array_equal(epoch1, epoch2)


def test_shuffle_changes_the_order_every_epoch_and_is_seeded(test_set):
    _, paths = test_set
    n = len(paths)
    positions = np.arange(n, dtype=np.float32)[:, None]  # the label of each image is its position

    def orders(seed, epochs):
        dataset = ip.make_dataset(paths, positions, image_size=(8, 8), batch_size=4, shuffle=True, seed=seed)
        return [_collect(dataset)[1][:, 0].astype(int).tolist() for _ in range(epochs)]

    first, second, third = orders(5, 3)
    for order in (first, second, third):
        assert sorted(order) == list(range(n))  # a permutation: nothing lost or repeated
    assert first != list(range(n))  # a no-op shuffle keeps the file order
    assert first != second and second != third  # re-drawn every epoch
    assert orders(5, 2) == [first, second]  # the same seed gives the same sequence of epochs
    assert orders(6, 1)[0] != first
    unshuffled = _collect(ip.make_dataset(paths, positions, image_size=(8, 8), batch_size=4))[1]
    assert unshuffled[:, 0].astype(int).tolist() == list(range(n))


def test_corrupt_image_becomes_a_user_error_inside_the_context_manager(test_set, tmp_path):
    import shutil

    import tensorflow as tf

    from cli_common import UserError

    _, paths = test_set
    good = tmp_path / "test_0001_aligned.jpg"
    shutil.copy(paths[0], good)
    bad = tmp_path / "test_0002_aligned.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG")
    dataset = ip.make_dataset([good, bad, good], np.eye(7)[:3], image_size=(16, 16), batch_size=1)
    # Without the helper: TensorFlow's OpError, whose message buries ours in a traceback.
    with pytest.raises(tf.errors.OpError):
        _collect(dataset)
    # With it: exactly the message rafdb_dataset.read_image gives, as a UserError.
    with pytest.raises(UserError) as error:
        with ip.user_errors_from_pipeline():
            _collect(dataset)
    assert str(error.value) == f"{bad}: not a readable image (corrupt, or not a JPEG, PNG, BMP, WebP or TIFF file)"
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_missing_image_in_keras_predict_becomes_a_user_error(test_set, tmp_path):
    import keras

    from cli_common import UserError

    _, paths = test_set
    missing = tmp_path / "test_0009_aligned.jpg"
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(7)])

    @ip.user_errors_from_pipeline()
    def predict():
        return model.predict(ip.make_dataset([paths[0], missing], image_size=(16, 16), batch_size=1), verbose=0)

    with pytest.raises(UserError, match=rf"^{re.escape(str(missing))}: image not found$"):
        predict()


def test_other_errors_pass_through_unchanged():
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="shapes differ"):
        with ip.user_errors_from_pipeline():
            raise tf.errors.InvalidArgumentError(None, None, "shapes differ")
    with pytest.raises(KeyError):
        with ip.user_errors_from_pipeline():
            raise KeyError("x")
    assert ip.pipeline_user_error(ValueError("no marker")) is None


def test_grey_source_copied_to_three_channels_or_kept_for_one():
    plane = np.arange(48 * 48, dtype=np.int64).reshape(48, 48).__mod__(251).astype(np.uint8)
    grey = plane[:, :, None]
    three = ip.load_for_model(grey, (48, 48), channels=3)
    assert three.shape == (48, 48, 3)
    for channel in range(3):
        np.testing.assert_array_equal(three[:, :, channel], plane)  # exact 48x48: no crop, no resize
    one = ip.load_for_model(grey, (48, 48), channels=1)
    np.testing.assert_array_equal(one[:, :, 0], plane)
    resized = ip.load_for_model(grey, (64, 64), channels=3)
    expected = cv2.resize(plane, (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resized[:, :, 1], expected)


def test_legacy99_cuts_fer_to_47_pixels_before_the_resize():
    plane = (np.arange(48 * 48).reshape(48, 48) * 7 % 256).astype(np.uint8)
    got = ip.load_for_model(plane[:, :, None], (48, 48), channels=1, crop="legacy99")
    expected = cv2.resize(plane[:47, :47], (48, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(got[:, :, 0], expected)
    assert not np.array_equal(got[:, :, 0], plane)


def test_dataset_ids_with_the_dataset_reader(tmp_path):
    import datasets
    import synthetic_faces

    root = synthetic_faces.write_fer_sample(tmp_path / "FERPlus", 20, 9, 9, seed=3)
    data = datasets.get("ferplus", root)
    test = data.labels("test")
    images, labels = _collect(ip.make_dataset_for(data, test, image_size=(48, 48), batch_size=4))
    np.testing.assert_array_equal(labels, test.labels)
    pixels = data.images(test)[:, :, :, 0].astype(np.float32)
    np.testing.assert_array_equal(images, np.stack([pixels] * 3, axis=-1))


def test_each_position_gets_its_own_seed_whatever_the_batching(test_set):
    """Images are loaded a batch at a time; the k-th element of an epoch still gets the k-th value
    of ``tf.data.Dataset.random(seed)``, whatever the batch size and number of parallel calls."""
    import tensorflow as tf

    _, paths = test_set
    paths = paths[:7]
    stream = [int(value) for value in tf.data.Dataset.random(seed=4, rerandomize_each_iteration=True).take(len(paths)).as_numpy_iterator()]
    expected = []
    for path, element_seed in zip(paths, stream):
        offset = int(np.random.Generator(np.random.PCG64(element_seed & 0xFFFFFFFFFFFFFFFF)).integers(0, 50))
        shifted = np.clip(cv2.imread(str(path))[:, :, ::-1].astype(np.int16) + offset, 0, 255).astype(np.uint8)
        expected.append(cv2.resize(shifted, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32))
    for batch_size, calls in ((1, 1), (3, 2), (7, ip.AUTOTUNE)):
        dataset = ip.make_dataset(paths, image_size=(32, 32), batch_size=batch_size, augment=_Shift(),
                                  seed=4, num_parallel_calls=calls)
        batches = [batch.numpy() for batch in dataset]  # one epoch (the next re-draws the seeds)
        sizes = [len(batch) for batch in batches]
        assert sizes == [batch_size] * (7 // batch_size) + ([7 % batch_size] if 7 % batch_size else [])
        np.testing.assert_array_equal(np.concatenate(batches), np.stack(expected))


def test_batches_are_stacked_once_into_aligned_float32():
    # uint8 and float64 images (an augmentation may return either) stacked as astype(float32)
    # of each image would give them, into memory TensorFlow can adopt without a copy.
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(3)]
    images.append(rng.random((5, 4, 3)) * 255.0)
    batch = ip._stack_float32(images)
    assert batch.dtype == np.float32 and batch.shape == (4, 5, 4, 3)
    assert batch.ctypes.data % 64 == 0
    for image, row in zip(images, batch):
        np.testing.assert_array_equal(row, np.array(image.tolist(), dtype=np.float32))
    with pytest.raises(ValueError):  # shapes must agree, as np.stack requires
        ip._stack_float32([images[0], images[0][:4]])


def test_fractional_augmentation_output_reaches_the_model_as_float32(test_set):
    _, paths = test_set

    def halve(image, rng):  # float64 output with fractions: resized in float64, then float32
        return image.astype(np.float64) * 0.5 + 0.25

    images, _ = _collect(ip.make_dataset(paths[:3], image_size=(50, 50), batch_size=2, augment=halve))
    for index in range(3):
        source = cv2.imread(str(paths[index]))[:, :, ::-1].astype(np.float64) * 0.5 + 0.25
        expected = cv2.resize(source, (50, 50), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        np.testing.assert_array_equal(images[index], expected)


@pytest.mark.parametrize("channels", [3, 1])
def test_grey_dataset_through_the_training_augmentation(tmp_path, channels):
    """FER+ rows are grey (48x48x1); the training augmentations take RGB. With a transform that
    only flips (AutoAugment-free check: its own RGB check must pass), the batch equals the flipped
    grey plane, copied to three channels or kept as one."""
    import augmentations
    import datasets
    import synthetic_faces

    root = synthetic_faces.write_fer_sample(tmp_path / "FERPlus", 20, 9, 9, seed=3)
    data = datasets.get("ferplus", root)
    test = data.labels("test")

    def flip(image, rng):
        augmentations._check_image(image)  # the augmentations' own check: RGB uint8 H x W x 3
        return image[:, ::-1].copy()

    images, _ = _collect(ip.make_dataset_for(data, test, image_size=(48, 48), channels=channels, batch_size=4,
                                             augment=flip, seed=1))
    pixels = data.images(test)[:, :, ::-1, 0].astype(np.float32)
    np.testing.assert_array_equal(images, np.stack([pixels] * channels, axis=-1))
    # the default training transform runs on grey rows too (it raised on H x W x 1 before)
    transform = augmentations.make_train_transform("default")
    images, _ = _collect(ip.make_dataset_for(data, test, image_size=(48, 48), channels=channels, batch_size=4,
                                             augment=transform, seed=1))
    assert images.shape == (len(test.names), 48, 48, channels)
