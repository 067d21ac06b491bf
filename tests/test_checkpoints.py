"""checkpoints.py: finding, safe loading and adapting Keras classifiers (BENCHMARK.md §4.7, §5.3, §8.4).

The models are tiny probes built here: global average pooling followed by a Dense layer whose
weights the test chooses, so every output is a known function of the image (or a constant).
"""

import json
import re

import cv2
import numpy as np
import pytest

import keras

import checkpoints  # noqa: E402
import rafdb_dataset  # noqa: E402
from cli_common import UserError  # noqa: E402

RAF = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
FER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER2013 index of each RAF-DB class, worked out by hand from the two lists above.
FER_INDEX_OF_RAF = [5, 2, 1, 3, 4, 0, 6]


def probe_model(path, size, channels, kernel, bias, *, softmax=False, lam=False):
    """GAP -> Dense(kernel, bias): output = mean pixel per channel @ kernel + bias."""
    kernel = np.asarray(kernel, np.float32)
    inputs = keras.Input((size, size, channels))
    x = inputs
    if lam:
        x = keras.layers.Lambda(lambda t: t * 1.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(kernel.shape[1], activation="softmax" if softmax else None)
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.set_weights([kernel, np.asarray(bias, np.float32)])
    model.save(path)
    return path


def logits_of(probabilities, zero_column):
    """A probe's raw outputs z from the probabilities an evaluation reports for it: its outputs are
    logits (not rows summing to 1), so a softmax is applied, and log(p_i / p_j) = z_i - z_j, where
    column ``zero_column`` has kernel and bias 0, so z_j = 0."""
    probabilities = np.asarray(probabilities, np.float64)
    return np.log(probabilities / probabilities[:, [zero_column]])


def write_images(folder, count=5, size=100, seed=0):
    """Random smooth RGB images written as PNG (lossless), returned with their RGB arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    for index in range(count):
        small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        path = folder / f"img_{index}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
        images.append(image)
    return paths, images


def channel_means(image, size, channels, crop="exact"):
    """What the probe's GAP sees before preprocessing, computed by hand (BENCHMARK.md §4.3)."""
    if crop == "legacy99":
        image = image[:-1, :-1]
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    if channels == 1:
        resized = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)[:, :, None]
    return resized.astype(np.float64)


# --------------------------------------------------------------------------------------------
# find_checkpoints


def test_find_checkpoints_file_run_and_runs(tmp_path):
    runs = tmp_path / "runs"
    for run, epochs in (("b_run", (3, 12, 9)), ("a_run", (1, 2))):
        (runs / run).mkdir(parents=True)
        for epoch in epochs:
            (runs / run / f"checkpoint.{epoch:02d}.hdf5").write_bytes(b"x")
        (runs / run / "run.json").write_text("{}")
    (runs / "empty").mkdir()
    assert checkpoints.find_checkpoints(runs) == [runs / "a_run" / "checkpoint.02.hdf5",
                                                  runs / "b_run" / "checkpoint.12.hdf5"]
    assert checkpoints.find_checkpoints(runs / "b_run") == [runs / "b_run" / "checkpoint.12.hdf5"]
    single = runs / "a_run" / "checkpoint.01.hdf5"
    assert checkpoints.find_checkpoints(single) == [single]


def test_a_folder_of_other_model_files_is_told_to_give_them_one_by_one(tmp_path):
    """A folder holding third-party model files (no training run): the error said only that no
    checkpoint.NN.hdf5 was found; it now names the files it holds and what to do."""
    for name in ("a.onnx", "b.tflite", "c.keras", "d.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(UserError, match=r"give other model files one by one \(it holds a\.onnx, b\.tflite, "
                                        r"c\.keras \.\.\.\)$"):
        checkpoints.find_checkpoints(tmp_path)


def test_a_folder_of_model_folders_names_the_files_inside(tmp_path):
    """One folder per third-party model (a model zoo): the files one level down are named."""
    for name in ("resnet/model.onnx", "vit/model.tflite", "vit/README.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(UserError, match=r"one by one \(it holds resnet/model\.onnx, vit/model\.tflite\)$"):
        checkpoints.find_checkpoints(tmp_path)


@pytest.mark.parametrize("make", ["missing", "empty_dir", "bad_suffix"])
def test_find_checkpoints_errors_name_the_path(tmp_path, make):
    path = tmp_path / "thing"
    if make == "empty_dir":
        path.mkdir()
    elif make == "bad_suffix":
        path = tmp_path / "weights.txt"
        path.write_text("x")
    with pytest.raises(UserError, match=str(path)):
        checkpoints.find_checkpoints(path)


# --------------------------------------------------------------------------------------------
# Class order


def test_constants_match_the_project():
    assert checkpoints.RAFDB_CLASS_NAMES == rafdb_dataset.CLASS_NAMES == RAF
    import models
    assert set(checkpoints.PREPROCESSING_CHOICES) - {"none"} == set(models.PREPROCESSING_MODES) - {"no"}


@pytest.mark.parametrize("text", ["fer2013", "FER2013", ",".join(FER),
                                  "anger,disgusted,fearful,happiness,sadness,surprised,neutral"])
def test_fer2013_permutation(text):
    names = checkpoints.parse_class_order(text)
    assert list(checkpoints.class_permutation(names)) == FER_INDEX_OF_RAF


def test_extra_classes_are_dropped():
    names = checkpoints.parse_class_order("neutral,happy,surprise,sad,angry,disgust,fear,contempt")
    # FER+ order, worked out by hand: surprise 2, fear 6, disgust 5, happy 1, sad 3, angry 4, neutral 0.
    assert list(checkpoints.class_permutation(names)) == [2, 6, 5, 1, 3, 4, 0]


@pytest.mark.parametrize("text, message", [
    ("angry,disgust,fear,happy,sad,surprise", "missing neutral"),
    ("angry,angry,fear,happy,sad,surprise,neutral", "named twice: anger"),
])
def test_bad_class_orders(text, message):
    with pytest.raises(ValueError, match=message):
        checkpoints.class_permutation(checkpoints.parse_class_order(text))


# --------------------------------------------------------------------------------------------
# Loading


def test_load_refuses_lambda_and_names_unsafe(tmp_path):
    path = probe_model(tmp_path / "lambda.hdf5", 32, 3, np.zeros((3, 7)), np.zeros(7), lam=True)
    with pytest.raises(UserError, match=r"lambda\.hdf5.*--unsafe"):
        checkpoints.load_classifier(path)
    model = checkpoints.load_classifier(path, unsafe=True)
    assert model.outputs[0].shape[-1] == 7


@pytest.mark.parametrize("content", [None, b"not an hdf5 file"])
def test_load_missing_or_corrupt(tmp_path, content):
    path = tmp_path / "model.hdf5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=str(path)):
        checkpoints.load_classifier(path)


def test_a_renamed_archive_weights_only_file_and_a_joblib_pickle_are_named(tmp_path):
    """A .keras zip renamed .h5 (it was HDF5's 'file signature not found'), a save_weights file
    (it was 'No model config found') and a .joblib file (a pickle; it was 'unknown model format')
    each get a message saying what the file is and what to do."""
    import shutil

    path = probe_model(tmp_path / "m.keras", 32, 3, np.zeros((3, 7)), np.zeros(7))
    renamed = tmp_path / "m.h5"
    shutil.copy(path, renamed)
    with pytest.raises(UserError, match=r"m\.h5: a \.keras archive \(a zip file, as model\.save writes\) under a \.h5 "
                                        r"name, which Keras reads as HDF5; rename it to \.keras$"):
        checkpoints.load_classifier(renamed)
    weights = tmp_path / "m.weights.h5"
    checkpoints.load_classifier(path).save_weights(weights)
    with pytest.raises(UserError, match=r"m\.weights\.h5: holds weights only \(model\.save_weights\), not a model"):
        checkpoints.load_classifier(weights)
    joblib_file = tmp_path / "svm.joblib"
    joblib_file.write_bytes(b"a pickle, never opened")
    with pytest.raises(UserError, match=r"svm\.joblib: pickle files are refused because unpickling runs code"):
        checkpoints.load_classifier(joblib_file)


# --------------------------------------------------------------------------------------------
# Adaptation


def test_fer2013_64x64x1_constant_output(tmp_path):
    """A FER2013-shaped model (64x64x1) with a constant output in FER order maps onto RAF-DB."""
    fer_logits = np.array([3.0, 0.5, 1.0, 2.0, 0.0, -1.0, 1.5])  # angry wins
    path = probe_model(tmp_path / "fer.hdf5", 64, 1, np.zeros((1, 7)), fer_logits, softmax=True)
    model = checkpoints.load_classifier(path)
    classifier = checkpoints.adapt(model, path, preprocessing="scale-1-1", class_order="fer2013")
    assert classifier.image_size == (64, 64) and classifier.channels == 1
    paths, _ = write_images(tmp_path / "images", count=3)
    probs = classifier.predict_paths(paths)
    fer_probs = np.exp(fer_logits) / np.exp(fer_logits).sum()
    # RAF order: surprise<-FER 5, fear<-2, disgust<-1, happiness<-3, sadness<-4, anger<-0, neutral<-6
    expected = fer_probs[[5, 2, 1, 3, 4, 0, 6]]
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs, np.tile(expected, (3, 1)), rtol=1e-5)
    assert set(np.argmax(probs, axis=1)) == {RAF.index("anger")}
    description = classifier.describe()
    assert description["input_shape"] == [64, 64, 1]
    assert description["output_classes"][0] == "anger"


def test_grey_scale_minus1_1_is_fed(tmp_path):
    """64x64x1 with --preprocessing scale-1-1: the model sees grey(resize(x)) / 127.5 - 1."""
    kernel = np.zeros((1, 7))
    kernel[0, 0] = 1.0  # output 0 = mean of the model input
    path = probe_model(tmp_path / "grey.hdf5", 64, 1, kernel, np.zeros(7))
    classifier = checkpoints.adapt(checkpoints.load_classifier(path), path,
                                   preprocessing="scale-1-1")
    paths, images = write_images(tmp_path / "images", count=4, seed=3)
    outputs = logits_of(classifier.predict_paths(paths), 1)
    expected = [(channel_means(image, 64, 1) / 127.5 - 1.0).mean() for image in images]
    np.testing.assert_allclose(outputs[:, 0], expected, atol=1e-4)
    assert all(-1.0 <= value <= 1.0 for value in expected)
    # a 3-channel mode on it: the error names the model file (it said "this one")
    for flags, needle in (({"preprocessing": "z_normalization"}, "--preprocessing z_normalization"),
                          ({"eval_preprocessing": "legacy-vggface2"}, "--eval-preprocessing legacy-vggface2")):
        with pytest.raises(UserError, match=rf"^{needle} needs a 3-channel model; {re.escape(str(path))} takes 1"):
            checkpoints.adapt(checkpoints.load_classifier(path), path, **flags)


def test_legacy_vggface2_and_run_json(tmp_path):
    """legacy-vggface2: BGR input minus (131.0912, 103.8827, 91.4953) on B, G, R (BENCHMARK.md §4.4)."""
    kernel = np.zeros((3, 7))
    kernel[0, 0] = kernel[1, 1] = kernel[2, 2] = 0.01  # outputs 0..2 = channel means of the input / 100
    path = probe_model(tmp_path / "run" / "checkpoint.01.hdf5", 32, 3, kernel, np.zeros(7))
    paths, images = write_images(tmp_path / "images", count=3, seed=5)
    model = checkpoints.load_classifier(path)

    legacy = checkpoints.adapt(model, path, eval_preprocessing="legacy-vggface2")
    outputs = 100 * logits_of(legacy.predict_paths(paths), 6)
    for row, image in zip(outputs, images):
        bgr_means = channel_means(image, 32, 3)[:, :, ::-1].mean(axis=(0, 1))
        np.testing.assert_allclose(row[:3], bgr_means - [131.0912, 103.8827, 91.4953], atol=1e-3)

    # run.json: preprocessing inside the model -> raw pixels; the recorded crop is used.
    (path.parent / "run.json").write_text(json.dumps({
        "preprocessing": "vggface2", "preprocessing_in_model": True, "crop": "legacy99",
        "class_names": list(RAF), "input_shape": [32, 32, 3]}))
    from_run = checkpoints.adapt(model, path)
    assert from_run.crop == "legacy99" and from_run.preprocess is None
    outputs = 100 * logits_of(from_run.predict_paths(paths), 6)
    for row, image in zip(outputs, images):
        np.testing.assert_allclose(row[:3], channel_means(image, 32, 3, "legacy99").mean(axis=(0, 1)),
                                   atol=1e-3)


def test_seven_outputs_without_run_json_assume_rafdb_order(tmp_path, caplog):
    path = probe_model(tmp_path / "m.h5", 32, 3, np.zeros((3, 7)), np.arange(7.0))
    with caplog.at_level("WARNING", logger="fer.checkpoints"):
        classifier = checkpoints.adapt(checkpoints.load_classifier(path), path)
    assert classifier.output_names == RAF
    assert "assuming RAF-DB class order" in caplog.text
    assert "raw RGB pixels" in caplog.text


def test_non_seven_outputs(tmp_path):
    path = probe_model(tmp_path / "ferplus.keras", 32, 3, np.zeros((3, 8)), np.arange(8.0))
    model = checkpoints.load_classifier(path)
    with pytest.raises(UserError, match=r"8 outputs.*--class-order"):
        checkpoints.adapt(model, path)
    with pytest.raises(UserError, match="7 class names for a model with 8 outputs"):
        checkpoints.adapt(model, path, class_order="fer2013")
    classifier = checkpoints.adapt(
        model, path, class_order="neutral,happiness,surprise,sadness,anger,disgust,fear,contempt")
    paths, _ = write_images(tmp_path / "images", count=2)
    # Constant logits 0..7 in FER+ order; RAF order takes indices 2,6,5,1,3,4,0 (contempt dropped).
    # The evaluation reports their softmax over all eight: e^z / sum(e^0..e^7).
    probabilities = classifier.predict_paths(paths)[0]
    np.testing.assert_allclose(probabilities, np.exp([2, 6, 5, 1, 3, 4, 0]) / np.exp(np.arange(8.0)).sum(),
                               rtol=1e-5)


def test_checkpoint_args_round_trip(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    checkpoints.add_checkpoint_args(parser)
    args = parser.parse_args(["--preprocessing", "scale01", "--class-order", "fer2013", "--batch",
                              "5", "--crop", "legacy99"])
    path = probe_model(tmp_path / "m.hdf5", 32, 3, np.zeros((3, 7)), np.zeros(7))
    classifier = checkpoints.classifier_from_args(path, args)
    assert (classifier.batch_size, classifier.crop, classifier.preprocessing_label) == (5, "legacy99", "scale01")
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch", "0"])


def test_preprocessing_no_is_an_alias_of_none(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    checkpoints.add_checkpoint_args(parser)
    assert parser.parse_args(["--preprocessing", "no"]).preprocessing == "none"
    assert "'no'" in parser.format_help()
    path = probe_model(tmp_path / "m.hdf5", 32, 3, np.zeros((3, 7)), np.zeros(7))
    classifier = checkpoints.adapt(checkpoints.load_classifier(path), path, preprocessing="no")
    assert classifier.preprocessing_label == "none" and classifier.preprocess is None


# --------------------------------------------------------------------------------------------
# A flag replaces the checkpoint's own preprocessing layers instead of running on top of them.

VGGFACE2_MEANS_RGB = np.array([131.0912, 103.8827, 91.4953])  # BENCHMARK.md §4.4, R, G, B


@pytest.fixture(scope="module")
def vggface2_checkpoint(tmp_path_factory):
    """A real build_model(vgg16, preprocessing=vggface2) checkpoint with its run.json, the same
    backbone built on its own (no preprocessing, no flip) with the same weights, and 64 px images."""
    import models

    root = tmp_path_factory.mktemp("vggface2_run")
    keras.utils.set_random_seed(7)
    model = models.build_model("vgg16", 64, preprocessing="vggface2")
    assert [type(layer).__name__ for layer in model.layers[1:3]] == ["VGGFace2Mean", "ChannelFlip"]
    path = root / "run" / "checkpoint.03.hdf5"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "run.json").write_text(json.dumps({
        "net": "vgg16", "input_shape": [64, 64, 3], "channel_order": "BGR", "preprocessing": "vggface2",
        "preprocessing_in_model": True, "mean_order": "correct", "class_names": list(RAF), "crop": "exact"}))
    backbone = models.NETS["vgg16"]((64, 64, 3), 7)  # the bare network: its first layer is a conv
    backbone.set_weights(model.get_weights())  # the preprocessing layers have no weights
    paths, images = write_images(root / "images", count=3, size=64, seed=11)  # 64 px: no resize
    return path, backbone, paths, np.stack(images).astype(np.float32)


def test_legacy_vggface2_strips_the_models_own_preprocessing(vggface2_checkpoint):
    path, backbone, paths, images = vggface2_checkpoint
    model = checkpoints.load_classifier(path)
    classifier = checkpoints.adapt(model, path, eval_preprocessing="legacy-vggface2")
    assert classifier.stripped_layers == ("vggface2_mean", "rgb_to_bgr")
    # The original's input, by hand: BGR pixels, 131.0912 subtracted from B, 103.8827 from G, 91.4953 from R.
    bgr = images[..., ::-1] - np.array([131.0912, 103.8827, 91.4953], np.float32)
    expected = backbone.predict(bgr, verbose=0)
    outputs = classifier.predict_paths(paths)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-6)
    # The bug this guards against: the full model (own means and flip) on top of the legacy input.
    doubled = model.predict(bgr, verbose=0)
    assert not np.allclose(doubled, expected, rtol=1e-4, atol=1e-6)
    # Without the flag the model's own layers run: RGB - correct means, flipped to BGR.
    auto = checkpoints.adapt(model, path)
    assert auto.stripped_layers == () and auto.preprocess is None
    np.testing.assert_allclose(auto.predict_paths(paths),
                               backbone.predict((images - VGGFACE2_MEANS_RGB)[..., ::-1].astype(np.float32),
                                                verbose=0), rtol=1e-4, atol=1e-6)


def test_preprocessing_flag_strips_the_layers_but_keeps_the_bgr_flip(vggface2_checkpoint):
    path, backbone, paths, images = vggface2_checkpoint
    model = checkpoints.load_classifier(path)
    classifier = checkpoints.adapt(model, path, preprocessing="scale01")
    assert classifier.stripped_layers == ("vggface2_mean",)
    expected = backbone.predict((images / 255.0)[..., ::-1].astype(np.float32), verbose=0)  # flip kept
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, rtol=1e-4, atol=1e-6)


def test_preprocessing_in_model_without_removable_layers_is_refused(tmp_path):
    path = probe_model(tmp_path / "run" / "checkpoint.01.hdf5", 32, 3, np.zeros((3, 7)), np.zeros(7))
    (path.parent / "run.json").write_text(json.dumps({
        "preprocessing": "full_normalization", "preprocessing_in_model": True, "class_names": list(RAF)}))
    model = checkpoints.load_classifier(path)
    with pytest.raises(UserError, match=r"run\.json.*full_normalization.*--preprocessing"):
        checkpoints.adapt(model, path, preprocessing="scale01")
    with pytest.raises(UserError, match="--eval-preprocessing"):
        checkpoints.adapt(model, path, eval_preprocessing="legacy-vggface2")


def test_raw_input_used_past_the_preprocessing_cannot_be_stripped(tmp_path):
    import models

    inputs = keras.Input((32, 32, 3))
    normalised = models.ZNormalization()(inputs)
    x = keras.layers.Add()([inputs, keras.layers.Conv2D(3, 1)(normalised)])  # raw pixels skip it
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "branch.keras"
    keras.Model(inputs, keras.layers.Dense(7)(x)).save(path)
    with pytest.raises(UserError, match="cannot remove its own preprocessing"):
        checkpoints.adapt(checkpoints.load_classifier(path), path, preprocessing="none")


def write_keras22_sequential(path, conv_weight, dense_kernel, dense_bias, form="dict"):
    """An HDF5 file as Keras 2 saved a Sequential model, weights named 'layer/kernel:0': Conv2D 1x1
    (one filter, no bias) on 8x8x1 -> GlobalAveragePooling2D -> Dense(7, softmax). ``form``: "dict"
    (Keras 2.2/2.3: no InputLayer, batch_input_shape on the first layer), "list" (Keras 2.0/2.1: the
    same with the config a bare layer list), "input_layer" (tf.keras 2.4+: an InputLayer first, and
    batch_input_shape repeated on the Conv2D)."""
    import h5py

    def layer(kind, name, **config):
        return {"class_name": kind, "config": {"name": name, "trainable": True, "dtype": "float32", **config}}

    layers = [
        layer("Conv2D", "conv2d_1", batch_input_shape=[None, 8, 8, 1], filters=1, kernel_size=[1, 1],
              strides=[1, 1], padding="valid", data_format="channels_last", dilation_rate=[1, 1],
              activation="linear", use_bias=False),
        layer("GlobalAveragePooling2D", "global_average_pooling2d_1", data_format="channels_last"),
        layer("Dense", "dense_1", units=7, activation="softmax", use_bias=True),
    ]
    if form == "input_layer":
        layers.insert(0, {"class_name": "InputLayer", "config": {
            "batch_input_shape": [None, 8, 8, 1], "dtype": "float32", "sparse": False, "ragged": False,
            "name": "conv2d_1_input"}})
    weights = {"conv2d_1": [("kernel:0", np.full((1, 1, 1, 1), conv_weight, np.float32))],
               "dense_1": [("kernel:0", np.asarray(dense_kernel, np.float32)),
                           ("bias:0", np.asarray(dense_bias, np.float32))]}
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"2.2.4"
        handle.attrs["backend"] = b"tensorflow"
        inner = layers if form == "list" else {"name": "sequential_1", "layers": layers}
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": inner}).encode()
        weighted = [entry for entry in layers if entry["class_name"] != "InputLayer"]
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = [entry["config"]["name"].encode() for entry in weighted]
        for entry in weighted:
            name = entry["config"]["name"]
            sub = group.create_group(name)
            sub.attrs["weight_names"] = [f"{name}/{weight}".encode() for weight, _ in weights.get(name, [])]
            for weight, value in weights.get(name, []):
                sub.create_dataset(f"{name}/{weight}", data=value)
    return path


@pytest.mark.parametrize("form", ["dict", "list", "input_layer"])
def test_keras2_sequential_hdf5_loads(tmp_path, form):
    """Keras 3 alone fails on a Keras 2.0-2.3 file (one axis too many); the loader reads it from a
    corrected copy, and the model computes softmax(2 mean(x) W + b). A tf.keras 2.4+ file needs no
    copy."""
    kernel = np.array([[0.5, -1.0, 0.25, 2.0, 0.0, -0.5, 1.0]], np.float32)
    bias = np.array([0.1, 0.0, -0.2, 0.0, 0.3, 0.0, 0.05], np.float32)
    path = write_keras22_sequential(tmp_path / "old.hdf5", 2.0, kernel, bias, form=form)
    if form == "input_layer":
        assert checkpoints._keras2_sequential_copy(path, tmp_path) is None
    else:
        with pytest.raises(Exception):
            keras.models.load_model(path, compile=False)
    model = checkpoints.load_classifier(path)
    assert tuple(model.inputs[0].shape) == (None, 8, 8, 1)
    x = np.random.default_rng(4).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32)
    z = 2.0 * x.reshape(3, -1).mean(axis=1, dtype=np.float64)[:, None] * kernel + bias
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    import h5py

    with h5py.File(path, "r") as handle:  # the user's file is not rewritten
        assert "batch_input_shape" in str(handle.attrs["model_config"])


def test_garbage_keras_file_message(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip archive at all")
    with pytest.raises(UserError, match="broken.keras: cannot load as a Keras model .*not a Keras archive"):
        checkpoints.load_classifier(path)


def test_a_keras_archive_cut_short_is_named_as_such(tmp_path):
    """The first half of a real .keras file (a copy that stopped): a damaged zip archive, not "not
    a Keras archive"."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(7)])
    whole = tmp_path / "whole.keras"
    model.save(whole)
    cut = tmp_path / "cut.keras"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError) as error:
        checkpoints.load_classifier(cut)
    assert f"{cut}: cannot load as a Keras model" in str(error.value)
    assert "a damaged zip archive" in str(error.value) and "cut short" in str(error.value)


def test_a_mixed_precision_checkpoint_is_evaluated_in_float32_on_the_cpu(tmp_path):
    """A model saved with mixed_float16 layers: on the CPU it loads as a float32 copy with the same
    weights (oneDNN aborts on float16 convolutions under DNNL_MAX_CPU_ISA=AVX2: run here with oneDNN
    on, in a fresh interpreter, the load and predict must succeed), predictions within float16
    rounding of the float16 model's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
        x = keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = tmp_path / "mixed.h5"
    model.save(path)
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    loaded = checkpoints.load_classifier(path)
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    for mine, theirs in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=5e-3)
    # a Lambda layer allowed with --unsafe stays allowed in the float32 copy (refused without it)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        lam_inputs = keras.Input((16, 16, 3))
        doubled = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Conv2D(2, 3)(lam_inputs))
        lam = keras.Model(lam_inputs, keras.layers.Activation("softmax", dtype="float32")(
            keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(doubled))))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="Lambda"):
        checkpoints.load_classifier(tmp_path / "lambda.keras")
    unsafe = checkpoints.load_classifier(tmp_path / "lambda.keras", unsafe=True)
    assert {layer.dtype_policy.name for layer in unsafe.layers} == {"float32"}
    np.testing.assert_allclose(unsafe.predict(images, verbose=0), lam.predict(images, verbose=0), atol=5e-3)
    repo = Path(checkpoints.__file__).resolve().parent
    code = ("import sys, numpy as np; sys.path.insert(0, %r); import checkpoints; "
            "m = checkpoints.load_classifier(%r); print(m.predict(np.ones((2, 16, 16, 3), np.float32), verbose=0).sum())"
            % (str(repo), str(path)))
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", DNNL_MAX_CPU_ISA="AVX2", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) == pytest.approx(2.0, abs=1e-4)  # two softmax rows


@pytest.mark.parametrize("colour, flag, expected", [
    ("rgb", None, "z_normalization+in_model"),
    # the flag recomputes the removed layer with the same constants: the same input, one setting
    ("rgb", "z_normalization", "z_normalization+in_model"),
    # the model was trained with the original's constants: the flag computes something else
    ("bgr-compat", "z_normalization", "z_normalization+without=znorm"),
    ("rgb", "scale01", "scale01+without=znorm"),
])
def test_a_flag_naming_the_models_own_preprocessing_is_one_setting_with_it(tmp_path, colour, flag, expected):
    import models

    inputs = keras.Input((32, 32, 3))
    x = models.ZNormalization(colour=colour, name="znorm")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "run" / "m.keras"
    path.parent.mkdir()
    keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x)).save(path)
    (path.parent / "run.json").write_text(json.dumps({
        "preprocessing": "z_normalization", "preprocessing_in_model": True, "colour": colour,
        "class_names": list(RAF)}))
    classifier = checkpoints.adapt(checkpoints.load_classifier(path), path, preprocessing=flag)
    assert classifier.describe()["preprocessing_setting"] == expected


@pytest.mark.parametrize("key, value, expected", [
    ("channel_order", "BRG", "RGB or BGR"),  # was RGB, silently
    ("preprocessing_in_model", "false", "true or false (a JSON boolean)"),  # the string was true
    ("colour", "grey", "one of rgb, bgr-compat"),  # was a traceback from the input pipeline
    ("mean_order", "x", "one of correct, legacy-swapped"),
    ("crop", "center", "one of exact, legacy99"),
])
def test_a_run_json_value_the_evaluation_cannot_use_is_refused_naming_the_file(tmp_path, key, value, expected):
    (tmp_path / "run").mkdir()
    path = probe_model(tmp_path / "run" / "m.keras", 32, 3, np.zeros((3, 7)), np.zeros(7))
    run_json = path.parent / "run.json"
    run_json.write_text(json.dumps({"preprocessing": "scale-1-1", key: value}))
    with pytest.raises(UserError) as error:
        checkpoints.adapt(checkpoints.load_classifier(path), path)
    assert str(error.value) == f"{run_json}: {key} {value!r}: expected {expected}"
    # the flag that replaces the value wins (flag > run.json): the bad value is not read, so no error
    if key == "channel_order":  # kept under --preprocessing (the order the model takes), so still read
        with pytest.raises(UserError, match="expected RGB or BGR"):
            checkpoints.adapt(checkpoints.load_classifier(path), path, preprocessing="scale-1-1")
    if key != "preprocessing_in_model":  # read with the flag too (to strip the model's own layers)
        flag = {"crop": {"crop": "exact"}, "channel_order": {"eval_preprocessing": "legacy-vggface2"}}.get(
            key, {"preprocessing": "scale-1-1"})
        assert checkpoints.adapt(checkpoints.load_classifier(path), path, **flag).crop == "exact"
    run_json.write_text(json.dumps({"preprocessing": "scale-1-1", key: None}))  # null: as absent
    checkpoints.adapt(checkpoints.load_classifier(path), path)


def test_a_run_json_naming_no_preprocessing_or_class_names_is_warned_about(tmp_path, caplog):
    """A misspelt key ("preprocesing") is not read: the model gets raw pixels, now with a warning
    naming the key and the missing preprocessing, and the class-order warning names run.json's
    missing class_names (it said there was no run.json); class_names of the wrong length are blamed
    on run.json, not on --class-order."""
    (tmp_path / "run").mkdir()
    path = probe_model(tmp_path / "run" / "m.keras", 32, 3, np.zeros((3, 7)), np.zeros(7))
    run_json = path.parent / "run.json"
    run_json.write_text(json.dumps({"preprocesing": "z_normalization"}))
    with caplog.at_level("WARNING", logger="fer.checkpoints"):
        classifier = checkpoints.adapt(checkpoints.load_classifier(path), path)
    assert classifier.preprocess is None
    assert f"{run_json}: key 'preprocesing' is not read (did you mean 'preprocessing'?); its value is ignored" \
        in caplog.messages
    assert any(m.startswith(f"{run_json}: names no preprocessing: the model is fed raw pixels") for m in caplog.messages)
    assert any(f"7 outputs and no class_names in {run_json}: assuming RAF-DB class order" in m for m in caplog.messages)
    run_json.write_text(json.dumps({"preprocessing": "none", "class_names": list(RAF)[:6]}))
    with pytest.raises(UserError) as error:
        checkpoints.adapt(checkpoints.load_classifier(path), path)
    assert str(error.value).startswith(f"{run_json}: class_names: 6 class names for a model with 7 outputs")
