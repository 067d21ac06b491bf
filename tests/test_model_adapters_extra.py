"""Model adapters on odd model files: non-finite outputs, integer Keras inputs, dict outputs, free
TFLite sizes, rank-1 ONNX outputs, channel-first inputs, ignored --input-size, output names and
per-class sigmoid outputs (model_files.py, checkpoints.py, inference.py).

Every model is built here (onnx.helper, keras, tf.lite.TFLiteConverter) and its expected scores
are computed from the images directly (channel means and the weights), or by running the model in
its own runtime.
"""

import logging

import numpy as np
import pytest

import checkpoints
import model_files
from cli_common import UserError
from test_model_files import B, SIZE, W, args, save_onnx, softmax, write_images


def channel_means(images):
    return images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1)


def onnx_scores(path, images_nchw_or_nhwc):
    """The model's own output, run directly in onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: images_nchw_or_nhwc})[0]


# --------------------------------------------------------------------------------------------
# 1. Non-finite outputs are refused; -inf beside a finite maximum is a probability of 0


def scaled_mean_onnx(path, scale, *, cast_fp16=False, add=None):
    """NHWC channel means @ W * scale + B [+ add row] [-> Cast float16]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"])]
    out, kind = "logits", TensorProto.FLOAT
    initializers = [numpy_helper.from_array(W * np.float32(scale), "w"),
                    numpy_helper.from_array(B, "b")]
    if add is not None:
        nodes.append(helper.make_node("Add", [out, "extra"], ["shifted"]))
        initializers.append(numpy_helper.from_array(np.asarray(add, np.float32), "extra"))
        out = "shifted"
    if cast_fp16:
        nodes.append(helper.make_node("Cast", [out], ["half"], to=TensorProto.FLOAT16))
        out, kind = "half", TensorProto.FLOAT16
    graph = helper.make_graph(
        nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info(out, kind, ["N", 7])], initializer=initializers)
    return save_onnx(graph, path)


def test_float16_overflow_is_refused_naming_rows_and_cause(tmp_path):
    path = scaled_mean_onnx(tmp_path / "overflow.onnx", 1e5, cast_fp16=True)
    paths, images = write_images(tmp_path / "img", count=4, seed=1)
    direct = onnx_scores(path, images.astype(np.float32))  # the model in its own runtime
    bad_rows = int((~np.isfinite(direct.astype(np.float64).max(axis=1))).sum())
    assert bad_rows == 4  # the file really overflows to +inf
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=4))
    with pytest.raises(UserError) as caught:
        classifier.predict_paths(paths)
    message = str(caught.value)
    assert message.startswith(str(path)) and f"{bad_rows} of the 4 rows" in message
    assert "inf" in message and "float16" in message and "\n" not in message


def test_nan_output_is_refused():
    runner = model_files.Runner()
    runner.path = "m.tflite"
    scores = np.array([[0.1, 0.9], [np.nan, 0.5], [0.3, 0.7]], np.float32)
    with pytest.raises(UserError, match=r"m.tflite: .* 1 of the 3 rows .* row 1: \[ *nan"):
        runner.to_probabilities(scores)


def test_minus_inf_logits_beside_a_finite_maximum_give_zero_probability(tmp_path):
    minus_inf = np.array([0, 0, 0, 0, 0, 0, -np.inf], np.float32)
    path = scaled_mean_onnx(tmp_path / "logprob.onnx", 1.0, add=minus_inf)
    paths, images = write_images(tmp_path / "img", count=3, seed=2)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    got = classifier.predict_paths(paths)
    logits = channel_means(images) @ W.astype(np.float64) + B
    expected = np.zeros((3, 7))
    expected[:, :6] = softmax(logits[:, :6])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[:, 6] == 0)


# --------------------------------------------------------------------------------------------
# 2. A Keras model with an integer input takes raw pixels only


def uint8_keras(path):
    """uint8 input -> Rescaling(1/255) -> channel means -> Dense(7) logits (W * 64, B)."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    dense = keras.layers.Dense(7)
    model = keras.Model(inputs, dense(x))
    dense.set_weights([W * 64.0, B])
    model.save(path)
    return path


def test_keras_uint8_input_refuses_a_preprocessing_and_takes_raw_pixels(tmp_path):
    import inference

    path = uint8_keras(tmp_path / "u8.keras")
    paths, images = write_images(tmp_path / "img", seed=4)
    expected = softmax(channel_means(images) / 255.0 @ (W * 64.0).astype(np.float64) + B)
    for mode in ("scale01", "scale-1-1", "z_normalization"):
        with pytest.raises(UserError) as caught:
            checkpoints.classifier_from_args(path, args(preprocessing=mode))
        message = str(caught.value)
        assert f"--preprocessing {mode}" in message and str(path) in message
        assert "uint8" in message and "use --preprocessing none" in message
    with pytest.raises(UserError, match="--eval-preprocessing legacy-vggface2"):
        checkpoints.classifier_from_args(path, args(eval_preprocessing="legacy-vggface2"))
    for mode in (None, "none"):
        classifier = checkpoints.classifier_from_args(path, args(preprocessing=mode))
        assert classifier.preprocess is None and "raw pixels" in classifier.preprocessing_label
        np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    # the XLA evaluation copy (inference.Runner) feeds the same integers
    runner = inference.Runner(classifier, jit=True)
    np.testing.assert_allclose(runner.predict(classifier.make_dataset(paths)), expected, atol=1e-5)
    # float pixels are rounded to the nearest integer, not truncated by a cast
    shifted = images.astype(np.float32) + 0.6
    direct = classifier.model(np.clip(np.round(shifted), 0, 255).astype(np.uint8)).numpy()
    np.testing.assert_allclose(classifier.runner.predict(shifted), softmax(direct.astype(np.float64)),
                               atol=1e-5)


# --------------------------------------------------------------------------------------------
# 3. Dict outputs: the first in model.outputs order (sorted keys), with the multi-output warning


def dict_output_keras(path, keys):
    """Channel means -> Dense(7) logits (W, B) under keys[0]; a 2-unit head under any other key."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    means = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(7, name="emotion_head")
    outputs = {keys[0]: dense(means)}
    for key in keys[1:]:
        outputs[key] = keras.layers.Dense(2, name=f"head_{key}")(means)
    model = keras.Model(inputs, outputs)
    dense.set_weights([W, B])
    model.save(path)
    return path


@pytest.mark.parametrize("keys", [("emo",), ("a_emo", "z_aux")])
def test_keras_dict_outputs_use_the_first_in_sorted_key_order(tmp_path, keys, caplog):
    import inference

    path = dict_output_keras(tmp_path / "dict.keras", keys)
    paths, images = write_images(tmp_path / "img", seed=7)
    expected = softmax(channel_means(images) @ W.astype(np.float64) + B)
    with caplog.at_level(logging.WARNING):
        classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    assert ("has 2 outputs (heads); the first is read" in caplog.text) == (len(keys) == 2)
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    runner = inference.Runner(classifier, jit=True)  # the evaluation copy's forward
    np.testing.assert_allclose(runner.predict(classifier.make_dataset(paths)), expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 4. A TFLite model with a free height and width is allocated at the first real size


def free_size_keras():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def test_tflite_free_height_and_width_runs_at_the_input_size(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = free_size_keras()
    path = tmp_path / "free.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["shape_signature"].tolist() == [-1, -1, -1, 3]
    with pytest.raises(RuntimeError):  # the file's default 1x1 shape does not allocate
        interpreter.allocate_tensors()
    paths, images = write_images(tmp_path / "img", count=4, seed=8)
    with pytest.raises(UserError, match="--input-size"):
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=3,
                                                             input_size=(SIZE, SIZE)))
    expected = model.predict(images.astype(np.float32), verbose=0)  # the Keras original
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    assert classifier.runner.batch == 3 and classifier.runner.batch_resizable


# --------------------------------------------------------------------------------------------
# 5. A batch-1 ONNX model with a rank-1 output (logits.squeeze()) is one row of K


@pytest.mark.parametrize("declared", [[7], ["K"]])
def test_onnx_batch_one_rank_one_output_is_one_row(tmp_path, declared):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["row"]),
             helper.make_node("Squeeze", ["row", "axis0"], ["logits"])]
    graph = helper.make_graph(
        nodes, "squeezed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, declared)],
        initializer=[numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b"),
                     numpy_helper.from_array(np.array([0], np.int64), "axis0")])
    path = save_onnx(graph, tmp_path / "squeeze.onnx")
    paths, images = write_images(tmp_path / "img", count=3, seed=9)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    assert classifier.runner.n_outputs == 7
    expected = softmax(channel_means(images) @ W.astype(np.float64) + B)
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 6. Channel-first inputs: TFLite [N,3,H,W] is fed as such; a Keras one is refused clearly


def channel_first_keras(size):
    """(3, H, W) input -> Permute to (H, W, 3) -> channel means -> Dense(7) logits (W, B)."""
    import keras

    inputs = keras.Input((3, size, size))
    means = keras.layers.GlobalAveragePooling2D()(keras.layers.Permute((2, 3, 1))(inputs))
    dense = keras.layers.Dense(7)
    model = keras.Model(inputs, dense(means))
    dense.set_weights([W, B])
    return model


@pytest.mark.parametrize("size", [SIZE, None])
def test_tflite_channel_first_input_is_fed_nchw(tmp_path, size):
    import tensorflow as tf

    path = tmp_path / "nchw.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(channel_first_keras(size)).convert())
    paths, images = write_images(tmp_path / "img", count=4, seed=10)
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none", batch=3,
                                                             input_size=(SIZE, SIZE)))
    assert classifier.runner.layout == "NCHW" and classifier.channels == 3
    assert classifier.image_size == (SIZE, SIZE)
    expected = softmax(channel_means(images) @ W.astype(np.float64) + B)
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)


def test_keras_channel_first_input_is_refused_naming_the_layout(tmp_path):
    path = tmp_path / "cf.keras"
    channel_first_keras(SIZE).save(path)
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert message.startswith(str(path)) and "channel-first" in message
    assert "channel-last" in message and "100 channels" not in message


# --------------------------------------------------------------------------------------------
# 7. --input-size on a fixed-size Keras model warns that it is ignored, as for ONNX and TFLite


def test_input_size_ignored_by_a_fixed_size_keras_model_warns(tmp_path, caplog):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    path = tmp_path / "fixed.keras"
    model.save(path)
    with caplog.at_level(logging.WARNING):
        classifier = checkpoints.classifier_from_args(path, args(preprocessing="none",
                                                                 input_size=(64, 48)))
    assert classifier.image_size == (SIZE, SIZE)
    assert f"{path}: the model takes 100x100 images; --input-size 64x48 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        checkpoints.classifier_from_args(path, args(preprocessing="none", input_size=(SIZE, SIZE)))
    assert "is ignored" not in caplog.text


# --------------------------------------------------------------------------------------------
# 8. Several Keras outputs are named by their layers (or dict keys); heads are not classes


@pytest.mark.parametrize("as_dict", [False, True])
def test_keras_output_heads_are_named_by_layer_and_key(tmp_path, as_dict, caplog):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    means = keras.layers.GlobalAveragePooling2D()(inputs)
    aux = keras.layers.Dense(2, name="aux_head")(means)
    emotion = keras.layers.Dense(7, name="emotion_logits")(means)
    outputs = {"a_aux": aux, "b_emotion": emotion} if as_dict else [aux, emotion]
    path = tmp_path / "heads.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(UserError) as caught:
        checkpoints.classifier_from_args(path, args(preprocessing="none"))
    message = str(caught.value)
    assert "keras_tensor" not in message
    assert "the model has 2 outputs (class scores; read from the first of its 2 output heads: " \
           in message and "and nothing names their classes (no --class-order, no names in the file, no class_names " \
           "in a run.json beside it; only 7 outputs are taken as RAF-DB's order)" in message \
           and "RAF-DB's 7 classes" not in message
    # the example has as many names as the model has outputs (it was always FER+'s eight)
    assert ("--class-order (comma-separated, 2 names in the order of its outputs, as the evaluated dataset spells its "
            "classes, e.g. neutral,happiness,") in message
    first, other = ("'a_aux' (layer 'aux_head') (None, 2)", "'b_emotion' (layer 'emotion_logits') (None, 7)") \
        if as_dict else ("'aux_head' (None, 2)", "'emotion_logits' (None, 7)")
    assert f"output heads: {first}; the others: {other})" in message
    with pytest.raises(UserError, match=r"7 class names for a model with 2 outputs \(class scores;"):
        checkpoints.classifier_from_args(path, args(preprocessing="none", class_order="rafdb"))


# --------------------------------------------------------------------------------------------
# 9. Per-class sigmoid outputs: softmax applied, with a warning saying what the metrics describe


def test_sigmoid_outputs_are_softmaxed_with_a_warning(tmp_path, caplog):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"])]
    graph = helper.make_graph(
        nodes, "sigmoid", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")])
    path = save_onnx(graph, tmp_path / "sigmoid.onnx")
    paths, images = write_images(tmp_path / "img", seed=11)
    sigmoid = 1 / (1 + np.exp(-(channel_means(images) @ W.astype(np.float64) + B)))
    classifier = checkpoints.classifier_from_args(path, args(preprocessing="none"))
    with caplog.at_level(logging.WARNING):
        got = classifier.predict_paths(paths)
    np.testing.assert_allclose(got, softmax(sigmoid), atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in text and "sigmoids" in text and "ECE, NLL and Brier describe that "
               "softmax" in text for text in warnings), warnings
    # the result files say so too (output_kind alone said "logits")
    assert classifier.runner.describe()["output_scores"].startswith("sigmoid-like scores in [0, 1]")
    # logits with negative values keep the plain INFO line
    caplog.clear()
    plain = checkpoints.classifier_from_args(scaled_mean_onnx(tmp_path / "logits.onnx", 1.0),
                                             args(preprocessing="none"))
    with caplog.at_level(logging.WARNING):
        plain.predict_paths(paths)
    assert "sigmoids" not in caplog.text and "output_scores" not in plain.runner.describe()


def test_a_flat_or_rank_3_keras_input_gets_a_wrapping_hint_that_works(tmp_path):
    """FER2013 repositories often take (batch, 48, 48) or (batch, 2304) and reshape inside: refused
    (no image input) with a hint; the hinted wrapper, saved as .keras, is then evaluated."""
    import keras

    inputs = keras.Input((48, 48))
    x = keras.layers.Reshape((48, 48, 1))(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "rank3.keras")
    with pytest.raises(UserError, match=r"found shape \(None, 48, 48\); wrap it with an image input, e\.g\. "
                                        r"keras\.Sequential\(\[keras\.Input\(\(48, 48, 1\)\), "
                                        r"keras\.layers\.Reshape\(\(48, 48\)\), model\]\)"):
        checkpoints.classifier_from_args(tmp_path / "rank3.keras", args(preprocessing="none"))
    wrapped = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Reshape((48, 48)), model])
    wrapped.save(tmp_path / "wrapped.keras")
    classifier = checkpoints.classifier_from_args(tmp_path / "wrapped.keras", args(preprocessing="none"))
    assert classifier.image_size == (48, 48)


def test_a_class_order_of_other_classes_is_reported_as_matched_by_name(caplog):
    """A folder dataset's own classes (pos,neg,other) drew 'no RAF-DB order (class order pos,neg,other:
    missing surprise, fear, ...)', which read like an error for a valid setup."""
    from pathlib import Path

    with caplog.at_level("INFO"):
        names, source, permutation = checkpoints.resolve_class_order(3, "pos,neg,other", None, Path("m.keras"))
    assert (names, source, permutation) == (("pos", "neg", "other"), "flag", None)
    assert ("m.keras: its classes (pos,neg,other) are not RAF-DB's seven; they are matched by name to the "
            "evaluated dataset's classes") in caplog.text
    assert "missing" not in caplog.text


def test_a_single_output_model_is_named_as_no_classifier():
    """A model whose (first) output has one score read 'the model has 1 outputs ... 1 names in the
    order of its outputs, e.g. neutral'; one score is no class distribution."""
    from pathlib import Path

    with pytest.raises(UserError, match=r"^m\.keras: the model has 1 output \(class scores\); a classifier gives one "
                                        r"score per class$"):
        checkpoints.resolve_class_order(1, None, None, Path("m.keras"))
    with pytest.raises(UserError, match=r"2 class names for a model with 1 output \(class scores\)$"):
        checkpoints.resolve_class_order(1, "happy,sad", None, Path("m.keras"))


# --------------------------------------------------------------------------------------------
# 9. --bgr-input: a model trained on OpenCV's BGR images gets its input with the channels reversed


def test_bgr_input_reverses_the_channels_after_the_preprocessing(tmp_path):
    """Expected scores from the channel means reversed by hand: none, scale01, and z_normalization
    with ImageNet's RGB mean and std (normalise in RGB, then reverse = the BGR image normalised with
    the constants in BGR order)."""
    from test_model_files import mean_linear_onnx

    path = mean_linear_onnx(tmp_path / "m.onnx", "NCHW", W, B)
    paths, images = write_images(tmp_path / "img", seed=7)
    means = channel_means(images)
    mean_rgb, std_rgb = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    cases = {"none": means, "scale01": means / 255.0, "z_normalization": (means / 255.0 - mean_rgb) / std_rgb}
    for mode, rgb_input in cases.items():
        expected_rgb = softmax(rgb_input @ W.astype(np.float64) + B)
        expected_bgr = softmax(rgb_input[:, ::-1] @ W.astype(np.float64) + B)
        assert np.abs(expected_rgb - expected_bgr).max() > 5e-5  # far beyond the tolerance below
        classifier = checkpoints.classifier_from_args(path, args(preprocessing=mode, bgr_input=True))
        np.testing.assert_allclose(classifier.predict_paths(paths), expected_bgr, atol=5e-6, err_msg=mode)
        assert classifier.preprocessing_setting == f"{mode}+bgr"
        assert "BGR input" in classifier.describe()["preprocessing"]
        # without the flag: the RGB order
        plain = checkpoints.classifier_from_args(path, args(preprocessing=mode)).predict_paths(paths)
        np.testing.assert_allclose(plain, expected_rgb, atol=5e-6, err_msg=mode)
    # one token for one computation: the flag and a run.json saying channel_order BGR
    assert checkpoints.preprocessing_setting("z_normalization", bgr_input=True) == "z_normalization+bgr"


def test_bgr_input_on_raw_integer_pixels(tmp_path):
    path = uint8_keras(tmp_path / "u8.keras")
    paths, images = write_images(tmp_path / "img", seed=8)
    classifier = checkpoints.classifier_from_args(path, args(bgr_input=True))
    expected = softmax(channel_means(images)[:, ::-1] / 255.0 @ (W * 64.0).astype(np.float64) + B)
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5)
    assert classifier.preprocessing_setting == "none+bgr"


def test_bgr_input_refused_where_it_cannot_apply(tmp_path):
    import json

    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    grey = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(inputs)))
    grey.save(tmp_path / "grey.keras")
    with pytest.raises(UserError, match=r"^--bgr-input: .*grey.keras takes 1 channel\(s\); the channel order "
                                        r"applies to 3-channel \(colour\) models only"):
        checkpoints.classifier_from_args(tmp_path / "grey.keras", args(preprocessing="none", bgr_input=True))
    from test_model_files import mean_linear_onnx

    path = mean_linear_onnx(tmp_path / "m.onnx", "NHWC", W, B)
    with pytest.raises(UserError, match=r"^--bgr-input: .*legacy-vggface2 hands over BGR itself\); drop --bgr-input"):
        checkpoints.classifier_from_args(path, args(eval_preprocessing="legacy-vggface2", bgr_input=True))
    (tmp_path / "run.json").write_text(json.dumps({"preprocessing": "vggface2", "channel_order": "BGR"}))
    with pytest.raises(UserError, match=r"run.json says channel_order BGR\); drop --bgr-input"):
        checkpoints.classifier_from_args(path, args(bgr_input=True))
    import argparse

    with pytest.raises(UserError, match=r"^--bgr-input: not with --predictions"):
        checkpoints.refuse_model_flags_with_predictions(argparse.Namespace(bgr_input=True))


def test_bgr_input_refused_for_a_model_that_reverses_its_channels_itself(tmp_path):
    """The project's BGR checkpoints start with a ChannelFlip and their run.json says channel_order
    BGR (preprocessing in the model, so nothing is flipped outside): --bgr-input would reverse the
    channels twice, i.e. feed RGB. Refused by the run.json, and by the layer alone without one."""
    import json

    import keras

    from models.preprocessing import ChannelFlip

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(ChannelFlip()(inputs))))
    folder = tmp_path / "run"
    folder.mkdir()
    model.save(folder / "flip.keras")
    with pytest.raises(UserError, match=r"is BGR already \(the model starts with its own ChannelFlip layer\)"):
        checkpoints.classifier_from_args(folder / "flip.keras", args(preprocessing="scale01", bgr_input=True))
    for run_info in ({"preprocessing": "none", "preprocessing_in_model": True, "channel_order": "BGR"},
                     {"preprocessing": "none", "channel_order": "BGR"}):
        (folder / "run.json").write_text(json.dumps(run_info))
        with pytest.raises(UserError, match=r"run.json says channel_order BGR\); drop --bgr-input"):
            checkpoints.classifier_from_args(folder / "flip.keras", args(bgr_input=True))


# --------------------------------------------------------------------------------------------
# 10. A run.json's channel_order BGR: honoured for none and raw pixels, and kept under --preprocessing


def float_keras(path):
    """float input -> channel means -> Dense(7) logits (W, B)."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(7)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([W, B])
    model.save(path)
    return path


def write_run_json(folder, **values):
    import json

    (folder / "run.json").write_text(json.dumps(values))


def test_run_json_bgr_is_honoured_for_none_and_raw_pixels(tmp_path):
    """run.json {"preprocessing": "none", "channel_order": "BGR"}: the raw pixels are handed over
    reversed (ONNX, Keras float, Keras and ONNX uint8), the setting says so (none+bgr, the token of
    --bgr-input on the same model without the run.json's order), and --bgr-input is refused."""
    from test_model_files import mean_linear_onnx, uint8_onnx

    paths, images = write_images(tmp_path / "img", seed=11)
    means = channel_means(images)
    rgb = softmax(means @ W.astype(np.float64) + B)
    bgr = softmax(means[:, ::-1] @ W.astype(np.float64) + B)
    assert (rgb.argmax(1) != bgr.argmax(1)).any() or np.abs(rgb - bgr).max() > 1e-3
    raw_rgb = softmax(means / 255.0 @ (W * 64.0).astype(np.float64) + B)
    raw_bgr = softmax(means[:, ::-1] / 255.0 @ (W * 64.0).astype(np.float64) + B)
    assert np.abs(raw_rgb - raw_bgr).max() > 1e-3
    cases = [("onnx", lambda p: mean_linear_onnx(p / "m.onnx", "NHWC", W, B), bgr, "none (BGR input)"),
             ("keras", lambda p: float_keras(p / "m.keras"), bgr, "none (BGR input)"),
             ("u8_onnx", lambda p: uint8_onnx(p / "m.onnx"), raw_bgr, "BGR order: run.json"),
             ("u8_keras", lambda p: uint8_keras(p / "m.keras"), raw_bgr, "BGR order: run.json")]
    for name, make, expected, label in cases:
        folder = tmp_path / name
        folder.mkdir()
        path = make(folder)
        for mode in ("none", "no"):
            write_run_json(folder, preprocessing=mode, channel_order="BGR")
            classifier = checkpoints.classifier_from_args(path, args())
            np.testing.assert_allclose(classifier.predict_paths(paths), expected, atol=1e-5, err_msg=name)
            assert classifier.preprocessing_setting == "none+bgr", name
            assert label in classifier.preprocessing_label, name
            assert classifier.describe()["preprocessing_setting"] == "none+bgr"
            with pytest.raises(UserError, match=r"run.json says channel_order BGR\); drop --bgr-input"):
                checkpoints.classifier_from_args(path, args(bgr_input=True))
        # the same computation as --bgr-input on the run.json without the order: one token
        write_run_json(folder, preprocessing="none")
        flagged = checkpoints.classifier_from_args(path, args(bgr_input=True))
        np.testing.assert_allclose(flagged.predict_paths(paths), expected, atol=1e-5, err_msg=name)
        assert flagged.preprocessing_setting == "none+bgr", name
        # the project's own models reverse the channels inside: nothing is reversed outside
        write_run_json(folder, preprocessing="none", preprocessing_in_model=True, channel_order="BGR")
        inside = checkpoints.classifier_from_args(path, args())
        np.testing.assert_allclose(inside.predict_paths(paths), raw_rgb if name.startswith("u8") else rgb,
                                   atol=1e-5, err_msg=name)
        assert inside.preprocessing_setting == "none", name
    assert checkpoints.preprocessing_setting("none", bgr_input=True) == "none+bgr"
    assert checkpoints.preprocessing_setting_from_label("none (BGR input)") == "none+bgr"


def test_preprocessing_flag_keeps_the_run_json_channel_order(tmp_path, caplog):
    """run.json scale01 + channel_order BGR, evaluated with --preprocessing scale-1-1 (and none):
    the flag replaces the mode, the BGR order stays (x / 127.5 - 1 of the reversed means), with a
    warning naming what is kept; --bgr-input stays refused. With preprocessing_in_model true the
    order is the model's inside, and the flag's input goes in RGB."""
    from test_model_files import mean_linear_onnx

    paths, images = write_images(tmp_path / "img", seed=12)
    means = channel_means(images)
    scaled = means / 127.5 - 1.0
    for name, make in (("onnx", lambda p: mean_linear_onnx(p / "m.onnx", "NHWC", W * 64.0, B)),
                       ("keras", lambda p: float_keras(p / "m.keras"))):
        folder = tmp_path / name
        folder.mkdir()
        path = make(folder)
        weights = (W * 64.0 if name == "onnx" else W).astype(np.float64)
        write_run_json(folder, preprocessing="scale01", channel_order="BGR")
        caplog.clear()
        with caplog.at_level("WARNING", logger="fer.checkpoints"):
            classifier = checkpoints.classifier_from_args(path, args(preprocessing="scale-1-1"))
        np.testing.assert_allclose(classifier.predict_paths(paths), softmax(scaled[:, ::-1] @ weights + B),
                                   atol=1e-5, err_msg=name)
        assert classifier.preprocessing_setting == "scale-1-1+bgr", name
        assert any(m.startswith(f"--preprocessing scale-1-1 overrides {folder / 'run.json'} (preprocessing "
                                f"scale01); its channel_order BGR is kept") for m in caplog.messages), name
        none = checkpoints.classifier_from_args(path, args(preprocessing="none"))
        np.testing.assert_allclose(none.predict_paths(paths), softmax(means[:, ::-1] @ weights + B),
                                   atol=1e-5, err_msg=name)
        assert none.preprocessing_setting == "none+bgr", name
        with pytest.raises(UserError, match=r"is BGR already \(.*run.json says channel_order BGR\)"):
            checkpoints.classifier_from_args(path, args(preprocessing="scale-1-1", bgr_input=True))
        # the model reverses the channels itself: the flag's input goes in RGB, --bgr-input refused
        write_run_json(folder, preprocessing="none", preprocessing_in_model=True, channel_order="BGR")
        inside = checkpoints.classifier_from_args(path, args(preprocessing="scale-1-1"))
        np.testing.assert_allclose(inside.predict_paths(paths), softmax(scaled @ weights + B),
                                   atol=1e-5, err_msg=name)
        assert inside.preprocessing_setting == "scale-1-1", name
        with pytest.raises(UserError, match=r"run.json says channel_order BGR\); drop --bgr-input"):
            checkpoints.classifier_from_args(path, args(preprocessing="scale-1-1", bgr_input=True))
        # the flag does not replace the channel order, so its value is checked (also under the
        # command line's --eval-preprocessing auto, which replaces nothing)
        write_run_json(folder, preprocessing="scale01", channel_order="BRG")
        for flags in ({}, {"preprocessing": "scale-1-1"}):
            with pytest.raises(UserError, match=r"run.json: channel_order 'BRG': expected RGB or BGR$"):
                checkpoints.classifier_from_args(path, args(**flags))
        # an RGB run.json and the flag: RGB, and --bgr-input applies
        write_run_json(folder, preprocessing="scale01", channel_order="RGB")
        flagged = checkpoints.classifier_from_args(path, args(preprocessing="scale-1-1", bgr_input=True))
        np.testing.assert_allclose(flagged.predict_paths(paths), softmax(scaled[:, ::-1] @ weights + B),
                                   atol=1e-5, err_msg=name)
        assert flagged.preprocessing_setting == "scale-1-1+bgr", name


# --------------------------------------------------------------------------------------------
# 11. The results record how the model was trained (run.json's cutout, jsd, center loss, AugMix)


def test_describe_records_the_training_recipe_of_run_json(tmp_path):
    from test_model_files import mean_linear_onnx

    path = mean_linear_onnx(tmp_path / "m.onnx", "NHWC", W, B)
    augmix = {"width": 3, "depth": -1, "severity": 3}
    write_run_json(tmp_path, preprocessing="none", net="resnet18", augmentation="default", cutout=True,
                   effective_augmentation="cutout", jsd=False, augmix=augmix, center_loss=None, seed=3,
                   lr=0.1, argv=["train_fer.py"])
    record = checkpoints.classifier_from_args(path, args()).describe()["run_json"]
    assert record == {"net": "resnet18", "preprocessing": "none", "augmentation": "default", "cutout": True,
                      "effective_augmentation": "cutout", "jsd": False, "center_loss": None, "seed": 3}
    write_run_json(tmp_path, preprocessing="none", augmentation="augmix", cutout=False,
                   effective_augmentation="augmix", jsd=True, augmix=augmix,
                   center_loss={"weight": 0.01, "alpha": 0.5})
    record = checkpoints.classifier_from_args(path, args()).describe()["run_json"]
    assert record == {"preprocessing": "none", "augmentation": "augmix", "cutout": False,
                      "effective_augmentation": "augmix", "jsd": True, "augmix": augmix,
                      "center_loss": {"weight": 0.01, "alpha": 0.5}}
    # an older run.json (no effective_augmentation): AugMix read from augmentation
    write_run_json(tmp_path, preprocessing="none", augmentation="augmix", augmix=augmix)
    record = checkpoints.classifier_from_args(path, args()).describe()["run_json"]
    assert record == {"preprocessing": "none", "augmentation": "augmix", "augmix": augmix}
