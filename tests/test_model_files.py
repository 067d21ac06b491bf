"""Model files of every format behind the Classifier (docs/BENCHMARK.md §11.4).

ONNX models are built here with onnx.helper and compute closed-form functions of the channel means;
the TFLite models are converted here from a small Keras model and compared with it.
"""

import argparse
import os
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

import checkpoints
import model_files
from cli_common import UserError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 100  # the images are 100x100 and the models take 100x100: the resize is the identity
RAF = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def write_images(folder, count=4, seed=0):
    """Smooth random RGB 100x100 PNGs (lossless) and their arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    for index in range(count):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        path = folder / f"img_{index}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
        images.append(image)
    return paths, np.stack(images)


def args(**overrides):
    values = dict(preprocessing=None, eval_preprocessing="auto", class_order=None, unsafe=False,
                  crop=None, batch=3, input_size=None)
    values.update(overrides)
    return argparse.Namespace(**values)


# --------------------------------------------------------------------------------------------
# ONNX models made with onnx.helper


def mean_linear_onnx(path, layout, weights, bias, *, softmax=False, shape=None, batch="N"):
    """Mean of each channel -> @ weights (3, K) + bias [-> Softmax]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(weights, np.float32)
    if shape is None:
        shape = [batch, 3, SIZE, SIZE] if layout == "NCHW" else [batch, SIZE, SIZE, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=axes, keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        output = "probs"
    graph = helper.make_graph(
        nodes, "mean_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "w"),
                     numpy_helper.from_array(np.asarray(bias, np.float32), "b")])
    return save_onnx(graph, path)


def save_onnx(graph, path, check=True):
    """An opset-17 model of ``graph`` saved at ``path`` (checked by onnx unless ``check=False``)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


W = np.array([[1, 0, 0, -1, 0.5, 0, 0], [0, 1, 0, 0, -0.5, 0, 2], [0, 0, 1, 0, 0, 1, -1]],
             np.float32) / 64.0
B = np.array([0.1, -0.2, 0, 0.3, 0, 0, 0.05], np.float32)


@pytest.mark.parametrize("layout,softmax_inside", [("NCHW", False), ("NHWC", True)])
def test_onnx_layouts_logits_and_probabilities(tmp_path, layout, softmax_inside):
    path = mean_linear_onnx(tmp_path / f"m_{layout}.onnx", layout, W, B, softmax=softmax_inside)
    paths, images = write_images(tmp_path / "img")
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    assert classifier.runner.layout == layout
    assert classifier.image_size == (SIZE, SIZE) and classifier.channels == 3
    got = classifier.predict_paths(paths)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    expected = softmax(means @ W.astype(np.float64) + B)  # once, whichever the model outputs
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert classifier.runner.output_kind == ("probabilities" if softmax_inside else "logits")
    assert classifier.describe()["format"] == "onnx"


def test_onnx_class_order_and_preprocessing(tmp_path):
    """--class-order fer2013 permutes the columns; scale-1-1 feeds x/127.5 - 1."""
    path = mean_linear_onnx(tmp_path / "m.onnx", "NCHW", W * 64.0, B)
    paths, images = write_images(tmp_path / "img", seed=5)
    classifier = checkpoints.classifier_from_args(
        path, args(preprocessing="scale-1-1", class_order="fer2013"))
    got = classifier.predict_paths(paths)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1) / 127.5 - 1.0
    fer = softmax(means @ (W * 64.0).astype(np.float64) + B)
    # RAF order from FER2013 order (angry, disgust, fear, happy, sad, surprise, neutral)
    np.testing.assert_allclose(got, fer[:, [5, 2, 1, 3, 4, 0, 6]], atol=1e-5)


def test_onnx_fixed_batch_of_one(tmp_path):
    path = mean_linear_onnx(tmp_path / "b1.onnx", "NHWC", W, B, batch=1)
    paths, images = write_images(tmp_path / "img", count=5)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=4))
    assert classifier.runner.fixed_batch == 1
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(classifier.predict_paths(paths), softmax(means @ W + B), atol=1e-5)


def test_onnx_free_size_needs_input_size(tmp_path):
    path = mean_linear_onnx(tmp_path / "free.onnx", "NCHW", W, B, shape=["N", 3, "H", "W"])
    with pytest.raises(UserError, match="--input-size"):
        checkpoints.classifier_from_args(path, args())
    classifier = checkpoints.classifier_from_args(path, args(input_size=(40, 40)))
    assert classifier.image_size == (40, 40)
    paths, images = write_images(tmp_path / "img", count=2)
    small = np.stack([cv2.resize(image, (40, 40), interpolation=cv2.INTER_LINEAR)
                      for image in images]).reshape(2, -1, 3).mean(axis=1)
    np.testing.assert_allclose(classifier.predict_paths(paths), softmax(small @ W + B), atol=2e-3)


@pytest.mark.parametrize("shape,words", [([1, 4, SIZE, SIZE], "channel"),
                                         (["N", SIZE * SIZE * 3], "rank 2"),
                                         # every axis symbolic: the way out is named
                                         (["N", "C", "H", "W"], "the channel axis is not fixed in the file: "
                                                                "export the model again with a fixed channel")])
def test_onnx_input_that_cannot_be_fed(tmp_path, shape, words):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    path = save_onnx(graph, tmp_path / "odd.onnx", check=False)
    with pytest.raises(UserError) as error:
        checkpoints.classifier_from_args(path, args())
    assert str(path) in str(error.value) and words in str(error.value)
    assert str(shape[1]) in str(error.value)  # names the shape it expects


# --------------------------------------------------------------------------------------------
# TFLite, converted from a small Keras model


@pytest.fixture(scope="module")
def keras_and_tflite(tmp_path_factory):
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tflite")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.Dense(16)(x))
    model = keras.Model(inputs, outputs)
    model.save(folder / "small.keras")
    (folder / "float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    paths, _ = write_images(folder / "calib", count=8, seed=9)
    calibration = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (32, 32),
                              interpolation=cv2.INTER_LINEAR).astype(np.float32) for p in paths]

    def representative():
        for image in calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (folder / "int8.tflite").write_bytes(converter.convert())
    # the same quantisation with the input and output types left float (QUANTIZE / DEQUANTIZE)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (folder / "int8_float_io.tflite").write_bytes(converter.convert())
    return folder


def _sample_paths(sample_tree):
    return sorted((sample_tree / "basic" / "Image" / "aligned").glob("test_*"))


def test_tflite_float_agrees_with_keras(keras_and_tflite, sample_tree):
    paths = _sample_paths(sample_tree)
    reference = checkpoints.classifier_from_args(keras_and_tflite / "small.keras",
                                                 args(preprocessing="none", batch=8))
    lite = checkpoints.classifier_from_args(keras_and_tflite / "float.tflite",
                                            args(preprocessing="none", batch=8))
    assert lite.runner.batch_resizable and lite.runner.batch == 8
    assert lite.image_size == (32, 32)
    expected = reference.predict_paths(paths)
    np.testing.assert_allclose(lite.predict_paths(paths), expected, atol=1e-5)
    assert lite.runner.output_kind == "probabilities"


def test_tflite_int8_within_tolerance(keras_and_tflite, sample_tree):
    """Stated tolerance: probabilities within 0.03 of the float model's (one int8 output step is
    1/256), and the same class wherever the float model's top two differ by more than 0.06."""
    paths = _sample_paths(sample_tree)
    reference = checkpoints.classifier_from_args(keras_and_tflite / "small.keras",
                                                 args(preprocessing="none"))
    lite = checkpoints.classifier_from_args(keras_and_tflite / "int8.tflite",
                                            args(preprocessing="none"))
    assert lite.runner.quantized
    scale, zero = lite.runner.in_scale, lite.runner.in_zero
    assert scale > 0 and -128 <= zero <= 127
    expected = reference.predict_paths(paths)
    got = lite.predict_paths(paths)
    assert lite.runner.output_kind == "probabilities"  # a softmax, read within its 1/256 steps
    np.testing.assert_allclose(got, expected, atol=0.03)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.06
    assert np.array_equal(got[clear].argmax(1), expected[clear].argmax(1))


def test_tflite_quantize_formula():
    """q = clip(round(x / scale + zero), -128, 127), computed by hand for one scale."""
    runner = object.__new__(model_files.LiteRTRunner)
    runner.in_dtype, runner.in_scale, runner.in_zero = np.dtype(np.int8), 2.0, -10
    x = np.array([0.0, 1.0, 3.0, 300.0, -500.0], np.float32)
    assert runner._quantize(x).tolist() == [-10, -10, -8, 127, -128]  # round half to even: 0.5->0


def test_quantised_input_range_that_the_preprocessing_overflows_is_named(caplog):
    """An int8 input of scale 1/255 and zero point -128 holds [0, 1] (a scale01 model). Raw pixels
    [0, 0.2, 1, 2, 255] quantise to x * 255 - 128 = -128, -77, 127, 382, 64,897: 2 of 5 (40 %) are
    clipped, which used to pass without a word (every prediction one class)."""
    runner = object.__new__(model_files.LiteRTRunner)
    runner.path, runner.in_dtype, runner.in_scale, runner.in_zero = "m.tflite", np.dtype(np.int8), 1 / 255, -128
    runner.input_range, runner._range_checked = ((-128 + 128) / 255, (127 + 128) / 255), False
    with caplog.at_level("WARNING"):
        assert runner._quantize(np.array([0.0, 0.2, 1.0, 2.0, 255.0], np.float32)).tolist() == [-128, -77, 127, 127, 127]
    assert ("m.tflite: 40 % of the preprocessed input values fall outside the model's quantised input range "
            "[0, 1] (scale 0.00392157, zero point -128) and are clipped: that range is --preprocessing "
            "scale01's") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        runner._quantize(np.array([300.0], np.float32))  # the first batch only
    assert caplog.text == ""
    # one step past the range is rounding at its end, not a misfit: 128 for int8 is no warning
    caplog.clear()
    runner._range_checked = False
    with caplog.at_level("WARNING"):
        runner._quantize(np.array([1.0 + 0.5 / 255] * 3, np.float32))  # 255.5 - 128 -> 128 (one step)
    assert caplog.text == ""
    # too narrow: scale01's [0, 1] into a uint8 input quantised for raw pixels (scale 1, zero 0) rounds
    # every value to 0 or 1, 2 of the 256 steps; it passed without a word (clean error 31.6 -> 85.1 %)
    raw = object.__new__(model_files.LiteRTRunner)
    raw.path, raw.in_dtype, raw.in_scale, raw.in_zero = "raw.tflite", np.dtype(np.uint8), 1.0, 0
    raw.input_range, raw._range_checked = (0.0, 255.0), False
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert raw._quantize(np.array([0.0, 0.3, 0.7, 1.0], np.float32)).tolist() == [0, 0, 1, 1]
    assert ("raw.tflite: the preprocessed input values span only 1 of the 256 steps of the model's quantised "
            "input range [0, 255] (scale 1, zero point 0): the images reach it at a coarse resolution: that "
            "range is --preprocessing none's") in caplog.text
    raw._range_checked = False
    caplog.clear()
    with caplog.at_level("WARNING"):
        raw._quantize(np.array([0.0, 17.0, 200.0, 255.0], np.float32))  # raw pixels: 255 steps, no warning
    assert caplog.text == ""
    assert model_files.preprocessing_for_range(-1.0078, 0.9922) == "scale-1-1"
    assert model_files.preprocessing_for_range(0.0, 255.0) == "none"
    assert model_files.preprocessing_for_range(-3.0, 3.0) is None


def test_no_preprocessing_for_an_input_quantised_for_raw_pixels_is_not_a_warning(caplog):
    """Without --preprocessing, raw pixels go in; for an input quantised for [0, 255] that is right,
    yet the warning suggested "e.g. scale-1-1 or z_normalization". Now an INFO line says it fits; an
    input quantised for [0, 1] still gets the warning naming scale01."""
    import checkpoints

    runner = types.SimpleNamespace(raw_pixel_input=None, preprocessing_inside=False, format="tflite",
                                   input_range=(0.0, 255.0))
    with caplog.at_level("INFO"):
        _, label, source, _ = checkpoints._runner_preprocessing(runner, Path("q.tflite"), None, None, None, 3)
    assert (label, source) == ("none", "default")
    assert [r.levelname for r in caplog.records if "no --preprocessing" in r.getMessage()] == ["INFO"]
    assert "the range its quantised input holds ([0, 255])" in caplog.text
    caplog.clear()
    runner.input_range = (0.0, 1.0)
    with caplog.at_level("INFO"):
        checkpoints._runner_preprocessing(runner, Path("q.tflite"), None, None, None, 3)
    assert [r.levelname for r in caplog.records if "no --preprocessing" in r.getMessage()] == ["WARNING"]
    assert "its quantised input holds [0, 1]: --preprocessing scale01 probably" in caplog.text


# --------------------------------------------------------------------------------------------
# .skops (LBP+SVM), dispatched lazily to lbp_svm


def test_skops_goes_to_lbp_svm_with_raw_grey(tmp_path, monkeypatch):
    seen = {}

    class Fake:
        class_names = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")
        image_size = (SIZE, SIZE)
        channels = 1
        settings = types.SimpleNamespace(width=SIZE, height=SIZE, keep_ar=False)  # descriptor size

        def predict_batch(self, images):
            seen["images"] = np.array(images)
            out = np.zeros((len(images), 7), np.float32)
            out[:, 3] = 1.0
            return out

    module = types.ModuleType("lbp_svm")
    module.load_skops = lambda path: Fake()
    monkeypatch.setitem(sys.modules, "lbp_svm", module)
    path = tmp_path / "lbp.skops"
    path.write_bytes(b"not read by the fake")
    paths, images = write_images(tmp_path / "img", count=3)
    classifier = checkpoints.classifier_from_args(path, args())
    probs = classifier.predict_paths(paths)
    assert probs.argmax(1).tolist() == [RAF.index("happiness")] * 3
    grey = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images])[..., None]
    assert seen["images"].shape == (3, SIZE, SIZE, 1)
    np.testing.assert_array_equal(seen["images"], grey)  # raw 0..255, no preprocessing
    with pytest.raises(UserError, match="raw pixels"):
        checkpoints.classifier_from_args(path, args(preprocessing="vggface2"))


def test_skops_without_lbp_svm_module(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lbp_svm", None)  # import fails
    path = tmp_path / "m.skops"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="lbp_svm"):
        checkpoints.classifier_from_args(path, args())


# --------------------------------------------------------------------------------------------
# Pickles are refused before they are opened


class _Trap:
    """Unpickling this creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pickle", ".pkl"])
def test_pickle_refused_unopened(tmp_path, suffix):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / f"svc{suffix}"
    path.write_bytes(pickle.dumps(_Trap(str(marker))))
    for call in (lambda: checkpoints.find_checkpoints(path),
                 lambda: checkpoints.classifier_from_args(path, args()),
                 lambda: model_files.open_runner(path),
                 lambda: checkpoints.load_classifier(path)):
        with pytest.raises(UserError) as error:
            call()
        assert ".skops" in str(error.value) and "runs code" in str(error.value)
        assert str(path) in str(error.value)
    assert not marker.exists()
    # the check really would have fired: loading it does create the marker
    probe = tmp_path / "probe.pkl"
    probe.write_bytes(pickle.dumps(_Trap(str(tmp_path / "proof.txt"))))
    pickle.loads(probe.read_bytes()).close()
    assert (tmp_path / "proof.txt").exists()


def evaluate_refused(model, tmp_path):
    """eval_corrupted_rafdb.py MODEL in a fresh process: exit 2 without a traceback (checked here)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(ROOT / "eval_corrupted_rafdb.py"), str(model),
                             "--rafdb", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return result


def test_pickle_refused_by_the_evaluation_script(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "svc_c4.000000_g0.000003_bal.pickle"
    path.write_bytes(pickle.dumps(_Trap(str(marker))))
    result = evaluate_refused(path, tmp_path)
    assert ".skops" in result.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Output kinds, several outputs, class-order shorthands, a third-party Rescaling


def test_probability_tolerance_widens_with_the_output_resolution():
    """A uint8 softmax (step 1/256): 7 values rounded to multiples of 1/256 may sum to 1 +- 7/512.
    [0, 0, 1, 245, 4, 4, 0] / 256 sums to 254/256 (off by 0.0078): probabilities for that step,
    logits for the default 1e-3."""
    row = np.array([[0, 0, 1, 245, 4, 4, 0]], np.float64) / 256.0
    assert model_files.looks_like_probabilities(row, step=1 / 256)
    assert not model_files.looks_like_probabilities(row)
    off = np.array([[0, 0, 1, 235, 4, 4, 0]], np.float64) / 256.0  # 244/256: off by 0.047 > 7/256
    assert not model_files.looks_like_probabilities(off, step=1 / 256)
    assert not model_files.looks_like_probabilities(-row, step=1 / 256)  # negative: logits


def test_keras_model_ending_in_logits_gets_a_softmax(tmp_path):
    """A third-party Keras model: channel means -> Dense(7) without activation. Its outputs are
    logits, so the evaluation scores softmax(means @ W + B), as for ONNX and TFLite."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(7)
    outputs = dense(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    dense.set_weights([W, B])
    model.save(tmp_path / "logits.keras")
    paths, images = write_images(tmp_path / "img", seed=3)
    classifier = checkpoints.classifier_from_args(tmp_path / "logits.keras", args(preprocessing="none"))
    got = classifier.predict_paths(paths)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(got, softmax(means @ W.astype(np.float64) + B), atol=1e-5)
    assert classifier.runner.output_kind == "logits"


def two_output_onnx(path):
    """Outputs 'features' (N, 12) first, then 'logits' (N, 7), both from the channel means."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "f"], ["features"]),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 12]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(np.ones((3, 12), np.float32), "f"),
                     numpy_helper.from_array(W, "w")])
    return save_onnx(graph, path, check=False)


def test_several_outputs_error_names_them(tmp_path):
    path = two_output_onnx(tmp_path / "two.onnx")
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert "12 outputs (class scores; read from the first of its 2 output heads" in message
    assert "'features'" in message and "'logits'" in message


def test_ferplus_shorthand_and_shorthands_named_in_errors(tmp_path):
    assert checkpoints.parse_class_order("ferplus") == (
        "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    eight = np.concatenate([W, np.zeros((3, 1), np.float32)], axis=1)
    path = mean_linear_onnx(tmp_path / "eight.onnx", "NCHW", eight, np.zeros(8, np.float32))
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", class_order="ferplus"))
    assert classifier.output_names[-1] == "contempt"
    with pytest.raises(UserError, match=r"'fer\+' is not one of the shorthands fer2013, ferplus, rafdb"):
        checkpoints.classifier_from_args(path, args(preprocessing="none", class_order="fer+"))


def test_a_misspelt_class_name_is_refused_and_an_unknown_one_named(tmp_path):
    """'suprise' (one letter from surprise) would be kept as a class of the model's own, and the
    dataset's surprise images silently left out (N 30 -> 26 on FER2013): refused with the likely
    name. 'joyful' is like no emotion name: kept, and RAF-DB's refusal (every RAF-DB class must be
    an output) now names it."""
    path = mean_linear_onnx(tmp_path / "m.onnx", "NCHW", W, np.zeros(7, np.float32))
    with pytest.raises(UserError, match=r"--class-order: 'suprise' is no emotion name; did you mean 'surprise'\?"):
        checkpoints.classifier_from_args(path, args(preprocessing="none",
                                                    class_order="angry,disgust,fear,happy,sad,suprise,neutral"))
    classifier = checkpoints.classifier_from_args(
        path, args(preprocessing="none", class_order="angry,disgust,fear,joyful,sad,surprise,neutral"))
    with pytest.raises(UserError, match=r"cannot output happiness \(its outputs: .*\); each RAF-DB class must be one "
                                        r"of its outputs, .*; its outputs joyful are no emotion name; if its outputs "
                                        r"mean other classes, name them with --class-order$"):
        classifier.use_classes(checkpoints.RAFDB_CLASS_NAMES, require_all="RAF-DB")


def test_third_party_rescaling_is_kept_with_a_warning(tmp_path, caplog):
    """--preprocessing scale01 on a model whose first layer is its own Rescaling(1/255): the layer
    stays (it is not the project's) and the warning says both apply."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)  # default name "rescaling"
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "own_rescaling.keras")
    with caplog.at_level("WARNING"):
        classifier = checkpoints.classifier_from_args(tmp_path / "own_rescaling.keras",
                                                      args(preprocessing="scale01"))
    assert any(type(layer).__name__ == "Rescaling" for layer in classifier.model.layers)
    assert "Rescaling layer 'rescaling" in caplog.text and "which is kept" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        checkpoints.classifier_from_args(tmp_path / "own_rescaling.keras", args(preprocessing="none"))
    assert "which is kept" not in caplog.text


def test_rescaling_behind_a_nested_augmentation_block_is_found(tmp_path, caplog):
    """The Keras tutorials' layout: Sequential([data_augmentation (a nested Sequential of Random*
    layers), Rescaling(1/255), ...]). Its Rescaling is as much the model's own as a first-layer one:
    --preprocessing scale01 warns that both apply (it did not look past the nested block)."""
    import keras

    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)],
                                    name="data_augmentation")
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), augmentation, keras.layers.Rescaling(1 / 255.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7, activation="softmax")])
    model.save(tmp_path / "tutorial.keras")
    with caplog.at_level("WARNING"):
        checkpoints.classifier_from_args(tmp_path / "tutorial.keras", args(preprocessing="scale01"))
    assert "own Rescaling layer 'rescaling" in caplog.text and "which is kept" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        checkpoints.classifier_from_args(tmp_path / "tutorial.keras", args(preprocessing=None))
    assert "to its own leading Rescaling layer 'rescaling" in caplog.text


# --------------------------------------------------------------------------------------------
# Quantised graphs whose float output is a dequantised softmax


def qdq_softmax_onnx(path, weights, bias, scale, *, softmax_inside=True):
    """Channel means -> @ weights + bias [-> Softmax] -> QuantizeLinear/DequantizeLinear (uint8,
    ``scale``, zero point 0) -> float output, as a QDQ-quantised model ends."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source = "probs" if softmax_inside else "logits"
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    if softmax_inside:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    nodes += [helper.make_node("QuantizeLinear", [source, "s", "zp"], ["q"]),
              helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["out"])]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(np.asarray(weights, np.float32), "w"),
                     numpy_helper.from_array(np.asarray(bias, np.float32), "b"),
                     numpy_helper.from_array(np.array(scale, np.float32), "s"),
                     numpy_helper.from_array(np.array(0, np.uint8), "zp")])
    return save_onnx(graph, path)


def test_onnx_dequantised_softmax_is_read_as_probabilities(tmp_path):
    """Softmax -> uint8 Q/DQ at scale 1/256: the output is round(256 p) / 256 (round half to even,
    at most 255), whose rows miss 1 by a few steps. They are probabilities within 7/256 and are
    returned as they are, not passed through a second softmax."""
    path = qdq_softmax_onnx(tmp_path / "qdq.onnx", W * 4.0, B, 1 / 256)
    paths, images = write_images(tmp_path / "img", count=8, seed=11)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    got = classifier.predict_paths(paths)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    p = softmax(means @ (W * 4.0).astype(np.float64) + B)
    expected = np.minimum(np.round(p * 256), 255) / 256  # the dequantised uint8 values
    assert np.any(np.abs(expected.sum(axis=1) - 1) > 1e-3)  # the 1e-3 test alone says logits
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert classifier.runner.output_kind == "probabilities"
    assert classifier.runner.output_step == pytest.approx(1 / 256)


def test_onnx_dequantised_logits_keep_the_plain_test(tmp_path):
    """The same Q/DQ pair after logits (no Softmax before it): no widening, so such outputs are
    still read as logits when they are not probabilities."""
    path = qdq_softmax_onnx(tmp_path / "qdq_logits.onnx", W, B, 1 / 256, softmax_inside=False)
    assert model_files.open_runner(path).output_step == 0.0


def test_tflite_full_integer_with_float_io_is_read_as_probabilities(keras_and_tflite):
    """Full-integer quantised with float input/output (DEQUANTIZE of the int8 SOFTMAX, whose output
    scale TFLite fixes at 1/256): the values are used as the interpreter returns them."""
    from ai_edge_litert.interpreter import Interpreter

    path = keras_and_tflite / "int8_float_io.tflite"
    runner = model_files.LiteRTRunner(path, batch_size=16)
    assert runner.in_dtype == np.float32
    images = np.random.default_rng(4).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    got = runner.predict(images)
    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [16, 32, 32, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    direct = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    steps = direct * 256
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # multiples of 1/256
    assert np.any(np.abs(direct.sum(axis=1) - 1) > 1e-3)  # the 1e-3 test alone says logits
    np.testing.assert_array_equal(got, direct)
    assert runner.output_kind == "probabilities" and runner.output_step == pytest.approx(1 / 256)


# --------------------------------------------------------------------------------------------
# uint8 input: raw pixels only


def uint8_onnx(path):
    """UINT8 [N,3,H,W] -> Cast -> / 255 -> channel means -> @ (W * 64) + B: logits (N, 7)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["xf", "d"], ["x01"]),
             helper.make_node("ReduceMean", ["x01"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "uint8_in", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(np.array(255, np.float32), "d"),
                     numpy_helper.from_array(W * 64.0, "w"), numpy_helper.from_array(B, "b")])
    return save_onnx(graph, path)


def test_uint8_onnx_takes_raw_pixels_and_refuses_a_preprocessing(tmp_path, caplog):
    path = uint8_onnx(tmp_path / "u8.onnx")
    paths, images = write_images(tmp_path / "img", seed=2)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1) / 255.0
    expected = softmax(means @ (W * 64.0).astype(np.float64) + B)
    with caplog.at_level("WARNING"):
        classifier = checkpoints.classifier_from_args(path, args())
    assert "scale-1-1 or z_normalization" not in caplog.text  # no advice to scale a uint8 input
    assert classifier.preprocess is None and "raw pixels" in classifier.preprocessing_label
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    none = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    np.testing.assert_allclose(none.predict_paths(paths), expected, atol=1e-5)
    for mode in ("scale01", "scale-1-1", "z_normalization"):
        with pytest.raises(UserError) as caught:
            checkpoints.classifier_from_args(path, args(preprocessing=mode))
        message = str(caught.value)
        assert f"--preprocessing {mode}" in message and str(path) in message
        assert "uint8" in message and "use --preprocessing none" in message
    with pytest.raises(UserError, match="--eval-preprocessing legacy-vggface2"):
        checkpoints.classifier_from_args(path, args(eval_preprocessing="legacy-vggface2"))


# --------------------------------------------------------------------------------------------
# A symbolic class axis


def symbolic_classes_onnx(path):
    """Concat(means @ W[:, :3], zeros (N, 4)) with the zeros from ConstantOfShape(Shape(means)[:1]
    + [4]): onnxruntime cannot infer the class axis, declared (Concat_dim_0, Concat_dim_1) as
    torch's legacy export of a torch.cat head declares it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["a"]),
             helper.make_node("Shape", ["m"], ["batch"], start=0, end=1),
             helper.make_node("Concat", ["batch", "four"], ["zeros_shape"], axis=0),
             helper.make_node("ConstantOfShape", ["zeros_shape"], ["zeros"]),
             helper.make_node("Concat", ["a", "zeros"], ["scores"], axis=1)]
    graph = helper.make_graph(
        nodes, "cat_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["Concat_dim_0", "Concat_dim_1"])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(W[:, :3]), "w"),
                     numpy_helper.from_array(np.array([4], np.int64), "four")])
    return save_onnx(graph, path)


def test_onnx_symbolic_class_axis_is_counted_by_one_run(tmp_path):
    path = symbolic_classes_onnx(tmp_path / "cat.onnx")
    assert model_files.open_runner(path).n_outputs is None  # the file does not say
    paths, images = write_images(tmp_path / "img", seed=6)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    logits = np.concatenate([means @ W[:, :3].astype(np.float64), np.zeros((len(means), 4))], axis=1)
    expected = softmax(logits)
    for order in (None, "rafdb"):
        classifier = checkpoints.classifier_from_args(path, args(preprocessing="none",
                                                                 class_order=order))
        assert classifier.runner.n_outputs == 7
        np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    with pytest.raises(UserError, match="8 class names for a model with 7 outputs"):
        checkpoints.classifier_from_args(path, args(preprocessing="none", class_order="ferplus"))


# --------------------------------------------------------------------------------------------
# Messages: a SavedModel folder, a .keras file with an unregistered custom layer


def test_saved_model_folder_is_named_with_how_to_convert(tmp_path):
    folder = tmp_path / "sm"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")  # recognised by its name alone
    for target in (folder, folder / "saved_model.pb"):
        with pytest.raises(UserError) as caught:
            checkpoints.find_checkpoints(target)
        message = str(caught.value)
        assert str(target) in message and "SavedModel" in message and "not read directly" in message
        assert "TFLiteConverter.from_saved_model" in message and "tf2onnx" in message
        assert "checkpoint.NN.hdf5" not in message
    assert "SavedModel" in evaluate_refused(folder, tmp_path).stderr


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_with_an_unregistered_custom_layer_names_it(tmp_path, monkeypatch, suffix):
    """The .h5 file gave Keras's own text (custom_object_scope, a URL) where .keras got this one."""
    import keras

    @keras.saving.register_keras_serializable(package="mine_test")
    class MyLayer(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(MyLayer()(inputs))
    keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x)).save(tmp_path / f"c{suffix}")
    # as on a machine without the code that defines it
    monkeypatch.delitem(keras.saving.get_custom_objects(), "mine_test>MyLayer")
    with pytest.raises(UserError) as caught:
        checkpoints.load_classifier(tmp_path / f"c{suffix}")
    message = str(caught.value)
    assert str(tmp_path / f"c{suffix}") in message and "'mine_test>MyLayer'" in message
    assert "register_keras_serializable" in message and "ONNX" in message and "TFLite" in message


# --------------------------------------------------------------------------------------------
# Models exported from PyTorch: external data, a batch fixed inside the graph, argmax outputs,
# float64 inputs, .pt/.pth files


def external_data_onnx(path, weights, bias):
    """mean_linear_onnx's model with its weights in ``<name>.data`` beside it (as torch.onnx.export
    writes a large model); returns the .onnx path."""
    import onnx

    mean_linear_onnx(path, "NCHW", weights, bias)
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
    return path


def test_onnx_external_data_is_part_of_the_model_identity(tmp_path):
    import hashlib

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = external_data_onnx(tmp_path / "a" / "m.onnx", W, B)
    second = external_data_onnx(tmp_path / "b" / "m.onnx", 2 * W, B)  # other weights
    graph_a, graph_b = first.read_bytes(), second.read_bytes()
    assert graph_a == graph_b  # the same graph: only the data files differ
    data_a = (tmp_path / "a" / "m.onnx.data").read_bytes()
    expected = hashlib.sha256(graph_a + b"\0m.onnx.data\0" + data_a).hexdigest()
    assert model_files.model_sha256(first) == expected
    assert model_files.model_sha256(second) != expected
    assert model_files.model_size(first) == len(graph_a) + len(data_a)
    classifier = checkpoints.classifier_from_args(first, args(preprocessing="none"))
    assert classifier.describe()["checkpoint_size"] == len(graph_a) + len(data_a)
    assert classifier.describe()["checkpoint_sha256"] == expected
    # a single-file model keeps the plain SHA-256 of its bytes
    single = mean_linear_onnx(tmp_path / "single.onnx", "NCHW", W, B)
    assert model_files.model_sha256(single) == hashlib.sha256(single.read_bytes()).hexdigest()


def test_onnx_missing_external_data_file_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    path = external_data_onnx(tmp_path / "a" / "m.onnx", W, B)
    moved = tmp_path / "m.onnx"
    path.rename(moved)  # copied without its data file
    for call in (lambda: checkpoints.classifier_from_args(moved, args(preprocessing="none")),
                 lambda: model_files.model_sha256(moved)):
        with pytest.raises(UserError) as caught:
            call()
        assert str(moved) in str(caught.value) and "'m.onnx.data'" in str(caught.value)
        assert "beside" in str(caught.value)


def test_onnx_damaged_external_data_is_named(tmp_path):
    """A data file copied short: onnxruntime's message was cut mid-word and named no data file; a
    folder in the data file's place was 'not in' the folder."""
    path = external_data_onnx(tmp_path / "m.onnx", W, B)
    data = tmp_path / "m.onnx.data"
    whole = data.stat().st_size  # the two float32 tensors, W (3x7) and B (7), one after the other
    assert whole >= 4 * (3 * 7 + 7)
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot load as an ONNX model (")
    assert message.endswith(f"; its weights are read from {data}: {data} is 10 bytes, and the model's tensors "
                            f"need {whole:,} (copied short, or from another export): copy it again from the export")
    data.unlink()
    data.mkdir()
    with pytest.raises(UserError, match=rf"its weights are stored in the external data file 'm\.onnx\.data', but "
                                        rf"{re.escape(str(data))} is a folder, not that file"):
        checkpoints.classifier_from_args(path, args(preprocessing="none"))


@pytest.mark.parametrize("location", ["w.data", "./w.data"])
def test_onnx_load_failure_with_complete_external_data_does_not_blame_the_data_file(tmp_path, monkeypatch, location):
    """onnxruntime failing for a reason of its own (here made to fail) on a model whose data file is
    whole: the file is named, not called copied short; cut short, it is, also when the model spells
    its location './w.data' (the lookup missed it and vouched for a 10-byte file)."""
    import onnx
    import onnxruntime

    path = external_data_onnx(tmp_path / "m.onnx", W, B)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))
    (tmp_path / "m.onnx.data").rename(tmp_path / "w.data")
    data = tmp_path / "w.data"
    whole = data.stat().st_size

    def failing(*_args, **_kwargs):
        raise RuntimeError("made to fail by the test")

    monkeypatch.setattr(onnxruntime, "InferenceSession", failing)
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    assert str(caught.value).endswith(f"(RuntimeError: made to fail by the test); its weights are read from {data}, "
                                      f"of the size the model records")
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    assert str(caught.value).endswith(f"; its weights are read from {data}: {data} is 10 bytes, and the model's "
                                      f"tensors need {whole:,} (copied short, or from another export): copy it "
                                      f"again from the export")


def batch_fixed_inside_onnx(path):
    """Declares a free batch N, but flattens the channel means with Reshape(m, [1, -1]) (PyTorch's
    ``x.view(1, -1)``): one image works, a batch of two or more fails in the MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Reshape", ["m", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "view_1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b"),
                     numpy_helper.from_array(np.array([1, -1], np.int64), "shape")])
    return save_onnx(graph, path, check=False)


def test_onnx_batch_fixed_inside_the_graph_runs_one_image_at_a_time(tmp_path, caplog):
    path = batch_fixed_inside_onnx(tmp_path / "view1.onnx")
    paths, images = write_images(tmp_path / "img", count=5)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=4))
    assert classifier.runner.fixed_batch is None  # as declared
    with caplog.at_level("WARNING", logger="fer.model_files"):
        got = classifier.predict_paths(paths)
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(got, softmax(means @ W + B), atol=1e-5)
    assert classifier.runner.fixed_batch == 1
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "one image at a time" in warning and "view(1, -1)" in warning and str(path) in warning


def test_onnx_model_failing_on_one_image_is_an_error(tmp_path):
    """Reshape to [2, -1]: fails on one image, so there is nothing to fall back to."""
    import onnx

    path = batch_fixed_inside_onnx(tmp_path / "view2.onnx")
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if tensor.name == "shape":
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.array([2, -1], np.int64), "shape"))
    onnx.save(model, str(path))
    paths, _ = write_images(tmp_path / "img", count=3)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=1))
    with pytest.raises(UserError) as caught:
        classifier.predict_paths(paths)
    assert str(path) in str(caught.value) and "failed on a batch of 1 image" in str(caught.value)


def test_onnx_argmax_output_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("ArgMax", ["z"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "argmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(W, "w")])
    path = save_onnx(graph, tmp_path / "argmax.onnx")
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert str(path) in message and "argmax" in message and "'z'" in message


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pt2", ".safetensors"])
def test_pytorch_files_are_refused_unopened_with_how_to_export(tmp_path, suffix):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Trap(str(marker))))
    with pytest.raises(UserError) as caught:
        checkpoints.find_checkpoints(path)
    message = str(caught.value)
    assert str(path) in message and "torch.onnx.export" in message and "--predictions" in message
    assert ("pickle" in message) == (suffix not in (".pt2", ".safetensors"))  # safetensors is no pickle
    assert ("torch.export.load('model.pt2')" in message) == (suffix == ".pt2")
    # What PyTorch 2.13 needs on these two routes (the default exporter refuses a ScriptModule, and a
    # .pt2 of a fixed batch with dynamic_axes)
    assert ("torch.jit.load for TorchScript, whose export needs dynamo=False" in message) == (
        suffix not in (".pt2", ".safetensors"))
    assert ("export it then with an input of that batch size and without dynamic_axes" in message) == (
        suffix == ".pt2")
    if suffix == ".pth":
        assert "torch.onnx.export" in evaluate_refused(path, tmp_path).stderr
        # a folder holding only such a file names it, with the same advice
        with pytest.raises(UserError, match=r"it holds model\.pth: a PyTorch \.pth file .* torch\.onnx\.export"):
            checkpoints.find_checkpoints(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("conv", [False, True])
def test_onnx_float64_input_is_told_to_export_in_float32(tmp_path, conv):
    """A float64 mean-linear graph loads and is refused by its input type; a float64 CNN
    (``conv``) fails in onnxruntime before that check (the CPU build has no float64 Conv), and the
    error still says what to do."""
    from onnx import TensorProto, helper, numpy_helper

    if conv:
        shape, weights = ["N", 3, SIZE, SIZE], np.ones((7, 3, SIZE, SIZE), np.float64) / (3 * SIZE * SIZE)
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["z"])]
    else:
        shape, weights = ["N", SIZE, SIZE, 3], W.astype(np.float64)
        nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
                 helper.make_node("MatMul", ["m", "w"], ["z"])]
    graph = helper.make_graph(
        nodes, "double",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, shape)],
        [helper.make_tensor_value_info("z", TensorProto.DOUBLE, ["N", 7])],
        initializer=[numpy_helper.from_array(weights, "w")])
    path = save_onnx(graph, tmp_path / "double.onnx")
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert str(path) in message and "'x' has type tensor(double)" in message and "model.float()" in message


def test_onnx_renamed_external_data_file_is_told_to_keep_its_recorded_name(tmp_path):
    (tmp_path / "a").mkdir()
    path = external_data_onnx(tmp_path / "a" / "model.onnx", W, B)
    renamed = tmp_path / "resnet.onnx"
    path.rename(renamed)
    (tmp_path / "a" / "model.onnx.data").rename(tmp_path / "resnet.onnx.data")
    with pytest.raises(UserError) as caught:
        model_files.model_sha256(renamed)
    message = str(caught.value)
    assert "resnet.onnx.data is there" in message and "give it back the name 'model.onnx.data'" in message


def test_onnx_graph_preprocessing_inside_is_one_setting_with_or_without_none(tmp_path):
    """An ONNX model whose run.json says it preprocesses inside: the default route and
    --preprocessing none both feed raw pixels to the graph, one setting (MODE+in_model); another
    flag is another computation."""
    import json

    path = mean_linear_onnx(tmp_path / "m.onnx", "NHWC", W, B)
    (tmp_path / "run.json").write_text(json.dumps({"preprocessing": "z_normalization",
                                                   "preprocessing_in_model": True}))
    settings = [checkpoints.classifier_from_args(path, args(preprocessing=flag)).describe()["preprocessing_setting"]
                for flag in (None, "none", "scale01")]
    assert settings == ["z_normalization+in_model", "z_normalization+in_model", "scale01"]


@pytest.mark.parametrize("text", ["100000x100000", "0x0", "64x0", "5000"])
def test_input_size_out_of_range_is_a_flag_error(text):
    """--input-size sides must lie in 1..4096: 100000x100000 allocated 112 GiB and crashed with a
    traceback; a zero width passed the parser."""
    import argparse

    parser = argparse.ArgumentParser()
    checkpoints.add_checkpoint_args(parser)
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--input-size", text])
    assert caught.value.code == 2
    assert checkpoints._input_size("4096x48") == (4096, 48) and checkpoints._input_size("64") == (64, 64)


def test_a_model_file_under_another_format_s_suffix_is_named_with_the_right_one(keras_and_tflite, tmp_path):
    # A TFLite file named .onnx, an ONNX file named .tflite or .h5, an HDF5 file named .onnx and a
    # .keras archive named .tflite: each runtime's parser failed with its own words ("Protobuf parsing
    # failed", "not a valid Flatbuffer buffer"); the file's first bytes tell what it is.
    import keras

    onnx_file = mean_linear_onnx(tmp_path / "real.onnx", "NHWC", np.eye(3, 7), np.zeros(7))
    hdf5 = tmp_path / "real.h5"
    keras.saving.save_model(keras.models.load_model(keras_and_tflite / "small.keras"), hdf5)
    cases = [(keras_and_tflite / "float.tflite", "x.onnx", r"a TFLite flatbuffer \(identifier TFL3\), not the onnx "
                                                            r"model its \.onnx name says: rename it to \.tflite"),
             (onnx_file, "x.tflite", r"an ONNX model \(protobuf\), not the tflite model its \.tflite name says: "
                                     r"rename it to \.onnx"),
             (onnx_file, "x.h5", r"an ONNX model \(protobuf\), not the keras model .*rename it to \.onnx"),
             (hdf5, "x.onnx", r"an HDF5 file \(a Keras \.h5 model\), not the onnx model .*rename it to \.h5"),
             (keras_and_tflite / "small.keras", "x.tflite", r"a \.keras archive, not the tflite model .*rename it "
                                                            r"to \.keras")]
    for source, name, message in cases:
        renamed = tmp_path / name
        renamed.write_bytes(source.read_bytes())
        with pytest.raises(UserError, match=rf"{re.escape(str(renamed))}: the file is {message}"):
            model_files.model_format(renamed)
    # each under its own name: its format
    for source, kind in ((keras_and_tflite / "float.tflite", "tflite"), (onnx_file, "onnx"), (hdf5, "keras"),
                         (keras_and_tflite / "small.keras", "keras")):
        assert model_files.model_format(source) == kind and model_files.sniff_model_file(source)[0] == kind
