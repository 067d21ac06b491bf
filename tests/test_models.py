"""models/: registry, BlurPool, preprocessing layers, saving, weight decay, local-only pretraining.

Expected numbers are worked out by hand or from BENCHMARK.md §4.1/§4.2/§4.4 formulas, never taken from the
code under test.
"""

import math
import os
import socket
import time

import cv2
import h5py
import keras
import numpy as np
import pytest

import models
from models.blurpool import BlurPool

SIZE = 64  # the smallest input every network accepts


def _blurpool_inputs(model):
    """{BlurPool layer name: name of the layer feeding it}."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, BlurPool):
            found[layer.name] = layer.input._keras_history.operation.name
    return found


def _hand_filter(row):
    row = np.array(row, dtype=np.float64)
    grid = np.outer(row, row)
    return grid / grid.sum()


# --------------------------------------------------------------------------------------------
# Every network: builds, predicts, BlurPool placement (BENCHMARK.md §4.2 table; our choices for the rest).

EXPECTED_BLURPOOL_AFTER = {
    "smallcnn": ["block1_pool", "block2_pool", "block3_pool"],
    "senet50": ["conv1_7x7_s2", "pool1_3x3_s2", "conv3_1_1x1_reduce", "conv3_1_1x1_proj",
                "conv4_1_1x1_reduce", "conv4_1_1x1_proj", "conv5_1_1x1_reduce", "conv5_1_1x1_proj"],
    "vgg16": ["pool1", "pool2", "pool3", "pool4", "pool5"],
    "densenet121bc": ["conv1_conv", "pool1", "pool2_conv", "pool3_conv", "pool4_conv"],
    "xception": ["block1_conv1", "block2_residual_conv", "block2_pool", "block3_residual_conv", "block3_pool",
                 "block4_residual_conv", "block4_pool", "block13_residual_conv", "block13_pool"],
    "mobilenetv2": ["Conv1", "block_1_depthwise", "block_3_depthwise", "block_6_depthwise", "block_13_depthwise"],
    "resnet50": ["conv1_conv", "pool1_pool", "conv3_block1_0_conv", "conv3_block1_1_conv", "conv4_block1_0_conv",
                 "conv4_block1_1_conv", "conv5_block1_0_conv", "conv5_block1_1_conv"],
}
HEADS = {"smallcnn": "classifier", "senet50": "classifier", "vgg16": "fc8_7", "densenet121bc": "Logits",
         "xception": "Logits", "mobilenetv2": "Logits", "resnet50": "Logits"}


def test_registry_names():
    assert list(models.NETS) == ["smallcnn", "senet50", "vgg16", "densenet121bc", "xception", "mobilenetv2",
                                 "resnet50"]


@pytest.mark.parametrize("net", list(models.NETS))
def test_network_builds_predicts_and_places_blurpool(net):
    model = models.NETS[net]((SIZE, SIZE, 3), 7, lpf=3)
    images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype("float32")
    predictions = model.predict(images, verbose=0)
    assert predictions.shape == (2, 7)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    assert model.layers[-1].name == HEADS[net] and model.layers[-1].units == 7

    placement = _blurpool_inputs(model)
    assert sorted(placement.values()) == sorted(EXPECTED_BLURPOOL_AFTER[net])
    expected_filter = _hand_filter([1, 2, 1])  # b_3 (BENCHMARK.md §4.2)
    for blur_name, source in placement.items():
        blur = model.get_layer(blur_name)
        assert blur.filt_size == 3 and blur.stride == 2
        np.testing.assert_allclose(blur._kernel[:, :, 0, 0], expected_filter, atol=1e-7)
        assert model.get_layer(source).strides in ((1, 1), 1)  # the strided layer now has stride 1


def test_blur_sits_before_batch_norm():
    model = models.NETS["senet50"]((SIZE, SIZE, 3), 7, lpf=2)
    bn = model.get_layer("conv1_7x7_s2_bn")
    assert bn.input._keras_history.operation.name == "conv1_7x7_s2_blurpool"


@pytest.mark.parametrize("net", ["senet50", "vgg16", "xception", "mobilenetv2", "resnet50", "smallcnn"])
def test_lpf0_keeps_strided_layers(net):
    model = models.NETS[net]((SIZE, SIZE, 3), 7, lpf=0)
    assert _blurpool_inputs(model) == {}


def test_densenet_transition_always_blurpool():
    """DenseNet: every transition average pool is BlurPool(max(2, lpf)), even with lpf 0 (2x2 box)."""
    model = models.NETS["densenet121bc"]((SIZE, SIZE, 3), 7, lpf=0)
    placement = _blurpool_inputs(model)
    assert sorted(placement.values()) == ["pool2_conv", "pool3_conv", "pool4_conv"]
    for name in placement:
        assert model.get_layer(name).filt_size == 2
        np.testing.assert_allclose(model.get_layer(name)._kernel[:, :, 0, 0], np.full((2, 2), 0.25))
    assert not any(isinstance(layer, keras.layers.AveragePooling2D) for layer in model.layers)


@pytest.mark.parametrize("size", [64, 100, 224])
def test_senet_head_gap_unless_final_map_is_7(size):
    """FIX (BENCHMARK.md §6 row 19): 7x7 average pool only for a 7x7 final map (224 px), GAP otherwise."""
    model = models.NETS["senet50"]((size, size, 3), 7, lpf=1)
    pool = model.get_layer("avg_pool")
    if size == 224:
        assert isinstance(pool, keras.layers.AveragePooling2D) and pool.pool_size == (7, 7)
    else:
        assert isinstance(pool, keras.layers.GlobalAveragePooling2D)


def test_mobilenet_width_follows_input_size():
    # first conv: make_divisible(32 * alpha, 8): alpha .75 -> 24 filters; alpha 1 -> 32
    assert models.NETS["mobilenetv2"]((96, 96, 3), 7, lpf=0).get_layer("Conv1").filters == 24
    assert models.NETS["mobilenetv2"]((100, 100, 3), 7, lpf=0).get_layer("Conv1").filters == 32


def test_smallcnn_parameter_count():
    # conv 3*3*3*32+32, 3*3*32*64+64, 3*3*64*128+128; BN 4*(32+64+128); fc 128*128+128; head 128*7+7
    expected = (864 + 32) + (18432 + 64) + (73728 + 128) + 4 * 224 + (16384 + 128) + (896 + 7)
    assert models.NETS["smallcnn"]((100, 100, 3), 7).count_params() == expected == 111559


@pytest.mark.slow
@pytest.mark.parametrize("net,application,kwargs,size", [
    ("densenet121bc", "DenseNet121", {}, 64),
    ("xception", "Xception", {}, 71),
    ("mobilenetv2", "MobileNetV2", {"alpha": 0.75}, 96),
    ("resnet50", "ResNet50", {}, 64),
])
def test_backbones_match_keras_applications_at_lpf0(net, application, kwargs, size):
    """At lpf 0 the backbones equal keras.applications' (weights and layer names), head aside."""
    ours = models.NETS[net]((size, size, 3), 7, lpf=0)
    reference = getattr(keras.applications, application)(weights=None, include_top=False, pooling="avg",
                                                          input_shape=(size, size, 3), **kwargs)
    head = ours.get_layer(HEADS[net])
    # (DenseNet's transition average pools became BlurPools, which have no weights either)
    assert ours.count_params() - head.count_params() == reference.count_params()
    named = {layer.name for layer in reference.layers if layer.weights and not layer.name.startswith(
        ("conv2d", "batch_normalization"))}
    assert named <= {layer.name for layer in ours.layers}


# --------------------------------------------------------------------------------------------
# BlurPool on hand-made inputs (BENCHMARK.md §4.2).

BINOMIAL_ROWS = {2: [1, 1], 3: [1, 2, 1], 4: [1, 3, 3, 1], 5: [1, 4, 6, 4, 1], 6: [1, 5, 10, 10, 5, 1],
                 7: [1, 6, 15, 20, 15, 6, 1]}


@pytest.mark.parametrize("filt_size", sorted(BINOMIAL_ROWS))
def test_blurpool_filter_is_normalised_binomial(filt_size):
    layer = BlurPool(filt_size=filt_size)
    layer.build((None, 8, 8, 2))
    for channel in range(2):
        np.testing.assert_allclose(layer._kernel[:, :, channel, 0], _hand_filter(BINOMIAL_ROWS[filt_size]),
                                   atol=1e-7)


@pytest.mark.parametrize("filt_size", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("size", [5, 6, 7, 8])
def test_blurpool_output_size_is_ceil_half(filt_size, size):
    images = np.zeros((1, size, size + 1, 3), dtype="float32")
    output = BlurPool(filt_size=filt_size)(images)
    assert tuple(output.shape) == (1, math.ceil(size / 2), math.ceil((size + 1) / 2), 3)


def _row_image(values):
    """A 1-channel image whose every row is ``values`` (so the 2-D blur reduces to the 1-D one)."""
    row = np.array(values, dtype="float32")
    return np.tile(row, (len(row), 1))[None, :, :, None]


def test_blurpool_reflect_padding_by_hand():
    # f=3: pad 1 before/after, reflect [0,4,8,16] -> [4,0,4,8,16,8]; [1,2,1]/4 at stride 2: 8/4=2, 36/4=9
    output = np.asarray(BlurPool(filt_size=3)(_row_image([0, 4, 8, 16])))
    np.testing.assert_allclose(output[0, :, :, 0], [[2, 9], [2, 9]], atol=1e-5)
    # n=5: [4,0,4,8,16,32,16] -> (4+0+4)/4, (4+16+16)/4, (16+64+16)/4
    output = np.asarray(BlurPool(filt_size=3)(_row_image([0, 4, 8, 16, 32])))
    np.testing.assert_allclose(output[0, 0, :, 0], [2, 9, 24], atol=1e-5)
    # f=2: pad 0 before, 1 after: [0,4,8,16,8]; [1,1]/2: (0+4)/2, (8+16)/2
    output = np.asarray(BlurPool(filt_size=2)(_row_image([0, 4, 8, 16])))
    np.testing.assert_allclose(output[0, 0, :, 0], [2, 12], atol=1e-5)
    # f=1: plain subsampling x[::2]
    output = np.asarray(BlurPool(filt_size=1)(_row_image([0, 4, 8, 16, 32])))
    np.testing.assert_allclose(output[0, 0, :, 0], [0, 8, 32])
    # f=7 on a 4-wide map: padding 3 is as wide as the map; reflection continues as numpy's
    padded = np.pad(np.array([0, 4, 8, 16], dtype=float), 3, mode="reflect")  # [16,8,4,0,4,8,16,8,4,0]
    weights = np.array(BINOMIAL_ROWS[7]) / 64.0
    expected = [padded[0:7] @ weights, padded[2:9] @ weights]
    output = np.asarray(BlurPool(filt_size=7)(_row_image([0, 4, 8, 16])))
    np.testing.assert_allclose(output[0, 0, :, 0], expected, atol=1e-4)


def test_blurpool_stride1_is_identity():
    images = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(BlurPool(filt_size=5, stride=1)(images)), images)


def test_blurpool_config_round_trip():
    layer = BlurPool(filt_size=5, stride=2, pad_off=0, channels=3, name="blur")
    config = layer.get_config()
    for key, value in dict(filt_size=5, stride=2, pad_type="reflect", pad_off=0, channels=3).items():
        assert config[key] == value
    clone = BlurPool.from_config(config)
    assert clone.get_config() == config
    images = np.random.default_rng(2).uniform(size=(1, 9, 9, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(images)), np.asarray(layer(images)), atol=1e-6)


def test_blurpool_rejects_bad_size():
    with pytest.raises(ValueError, match="filt_size"):
        BlurPool(filt_size=9)


# --------------------------------------------------------------------------------------------
# Preprocessing (BENCHMARK.md §4.4).


def _reference_full_normalization(image_rgb_float):
    """BENCHMARK.md §4.4 written out independently with cv2 and np.linalg.lstsq."""
    pixels = np.clip(np.rint(image_rgb_float), 0, 255).astype(np.uint8)
    yuv = cv2.cvtColor(pixels, cv2.COLOR_RGB2YUV)
    yuv[:, :, 0] = cv2.equalizeHist(yuv[:, :, 0])
    image = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB).astype(np.float32)
    yuv = cv2.cvtColor(image, cv2.COLOR_RGB2YUV)
    height, width = yuv.shape[:2]
    luma16 = cv2.resize(yuv[:, :, 0], (16, 16))
    grid = np.linspace(0, 1, 16)
    design = np.array([[v, u, 1.0] for v in grid for u in grid])  # row-major: v = row, u = column
    (a, b, c), *_ = np.linalg.lstsq(design, luma16.reshape(-1).astype(np.float64), rcond=None)
    plane = np.array([[a * r / height + b * q / width + c for q in range(width)] for r in range(height)])
    yuv[:, :, 0] = yuv[:, :, 0] - plane + plane.mean()
    image = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
    if image.max() - image.min() < 1:
        return image
    return (image - image.mean(axis=(0, 1))) / np.maximum(image.std(axis=(0, 1)), 0.001)


def _lit_face(height=40, width=52, seed=0):
    """A textured image under a strong left-to-right and top-to-bottom illumination gradient."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 160, size=(height, width, 3))
    rows, cols = np.mgrid[0:height, 0:width]
    light = 0.8 * rows + 1.5 * cols
    return np.clip(base + light[:, :, None], 0, 255).round().astype("float32")


def _layer_output(layer, images):
    return np.asarray(layer(np.asarray(images, dtype="float32")))


def test_full_normalization_layer_matches_spec_reference():
    images = np.stack([_lit_face(seed=0), _lit_face(seed=1)])
    output = _layer_output(models.FullNormalization(), images)
    for index in range(2):
        expected = _reference_full_normalization(images[index])
        np.testing.assert_allclose(output[index], expected, atol=2e-3)
        # z-scored per channel
        np.testing.assert_allclose(output[index].mean(axis=(0, 1)), 0.0, atol=1e-4)
        np.testing.assert_allclose(output[index].std(axis=(0, 1)), 1.0, atol=1e-3)


def test_full_normalization_removes_a_pure_plane():
    """A constant image plus a linear ramp: after flattening only the equalised levels remain."""
    rows, cols = np.mgrid[0:48, 0:64]
    ramp = (40 + 1.0 * rows + 0.5 * cols).astype("float32")
    image = np.repeat(ramp[:, :, None], 3, axis=2)
    output = _layer_output(models.FullNormalization(), image[None])[0]
    np.testing.assert_allclose(output, _reference_full_normalization(image), atol=2e-3)


def test_full_normalization_constant_image_skips_zscore():
    # grey 100: equalizeHist maps a one-level image to itself, the plane is flat, max - min = 0 < 1
    image = np.full((1, 32, 32, 3), 100.0, dtype="float32")
    np.testing.assert_allclose(_layer_output(models.FullNormalization(), image), 100.0, atol=1e-3)
    np.testing.assert_allclose(models.preprocess_numpy(image, "full_normalization"), 100.0, atol=1e-3)


def test_full_normalization_numpy_and_layer_agree():
    images = np.stack([_lit_face(64, 64, seed=s) for s in range(3)])
    layer = _layer_output(models.FullNormalization(), images)
    numpy = models.preprocess_numpy(images, "full_normalization")
    np.testing.assert_allclose(layer, numpy, atol=1e-4)


def test_full_normalization_grey():
    image = _lit_face(seed=3)[:, :, :1]
    output = _layer_output(models.FullNormalization(), image[None])[0]
    np.testing.assert_allclose(output, models.preprocess_numpy(image, "full_normalization"), atol=1e-4)
    assert output.shape == image.shape


PIXEL = (200.0, 150.0, 100.0)  # R, G, B


@pytest.mark.parametrize("mean_order,expected", [
    ("correct", (200 - 131.0912, 150 - 103.8827, 100 - 91.4953)),
    ("legacy-swapped", (200 - 91.4953, 150 - 103.8827, 100 - 131.0912)),  # the original: 131 from B
])
def test_vggface2_mean_order(mean_order, expected):
    image = np.array(PIXEL, dtype="float32").reshape(1, 1, 1, 3)
    np.testing.assert_allclose(_layer_output(models.VGGFace2Mean(mean_order), image)[0, 0, 0], expected, atol=1e-4)
    np.testing.assert_allclose(models.preprocess_numpy(image, "vggface2", mean_order=mean_order)[0, 0, 0],
                               expected, atol=1e-4)


@pytest.mark.parametrize("colour,expected", [
    ("rgb", ((200 - 123.675) / 58.395, (150 - 116.28) / 57.12, (100 - 103.53) / 57.375)),
    ("bgr-compat", ((200 - 103.53) / 57.375, (150 - 116.28) / 57.12, (100 - 123.675) / 58.395)),
])
def test_z_normalization(colour, expected):
    image = np.array(PIXEL, dtype="float32").reshape(1, 1, 1, 3)
    np.testing.assert_allclose(_layer_output(models.ZNormalization(colour), image)[0, 0, 0], expected, atol=1e-5)
    np.testing.assert_allclose(models.preprocess_numpy(image, "z_normalization", colour=colour)[0, 0, 0],
                               expected, atol=1e-5)


def test_scale_modes():
    image = np.array([0.0, 127.5, 255.0], dtype="float32").reshape(1, 1, 3)
    np.testing.assert_allclose(models.preprocess_numpy(image, "scale01")[0, 0], [0, 0.5, 1])
    np.testing.assert_allclose(models.preprocess_numpy(image, "scale-1-1")[0, 0], [-1, 0, 1])
    np.testing.assert_array_equal(models.preprocess_numpy(image, "no"), image)
    with pytest.raises(ValueError, match="full_normalization"):
        models.preprocess_numpy(image, "imagenet")


def test_bgr_backbone_gets_flipped_mean_subtracted_input():
    """senet50/vgg16 (rcmalli weights): RGB in, means subtracted in RGB, then flipped to BGR."""
    model = models.build_model("vgg16", SIZE, preprocessing="vggface2")
    probe = keras.Model(model.input, model.get_layer("rgb_to_bgr").output)
    image = np.broadcast_to(np.array(PIXEL, dtype="float32"), (1, SIZE, SIZE, 3))
    np.testing.assert_allclose(probe.predict(image, verbose=0)[0, 0, 0],
                               (100 - 91.4953, 150 - 103.8827, 200 - 131.0912), atol=1e-4)
    # Caffe-converted weights (rcmalli VGGFace, Keras's VGG16/ResNet50 ImageNet "caffe" mode) expect BGR.
    assert {net for net, order in models.CHANNEL_ORDER.items() if order == "BGR"} == {"senet50", "vgg16", "resnet50"}


def test_resnet50_gets_the_bgr_flip_and_rgb_nets_do_not():
    resnet = models.build_model("resnet50", SIZE, preprocessing="no")
    assert [type(layer).__name__ for layer in resnet.layers[1:3]] == ["ChannelFlip", "ZeroPadding2D"]
    probe = keras.Model(resnet.input, resnet.get_layer("rgb_to_bgr").output)
    image = np.broadcast_to(np.array(PIXEL, dtype="float32"), (1, SIZE, SIZE, 3))
    np.testing.assert_allclose(probe.predict(image, verbose=0)[0, 0, 0], PIXEL[::-1])
    smallcnn = models.build_model("smallcnn", SIZE, preprocessing="no")
    assert not any(type(layer).__name__ == "ChannelFlip" for layer in smallcnn.layers)


# --------------------------------------------------------------------------------------------
# build_model, saving, weight decay.


def test_build_model_saves_to_hdf5_and_reloads_in_safe_mode(tmp_path):
    model = models.build_model("smallcnn", SIZE, lpf=3, preprocessing="full_normalization")
    assert model.layers[1].name == "full_normalization"  # preprocessing is the first layer
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    images = np.stack([_lit_face(SIZE, SIZE, seed=s) for s in range(2)])
    path = tmp_path / "checkpoint.01.hdf5"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_every_custom_layer_serialises(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = models.VGGFace2Mean("legacy-swapped")(inputs)
    x = models.ZNormalization("bgr-compat")(x)
    x = models.ChannelFlip()(x)
    x = keras.layers.Add()([models.FullNormalization()(inputs), x])
    x = BlurPool(filt_size=5)(x)
    model = keras.Model(inputs, x)
    images = np.random.default_rng(3).uniform(0, 255, size=(2, 16, 16, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    for name in ("m.hdf5", "m.keras"):
        model.save(tmp_path / name)
        reloaded = keras.models.load_model(tmp_path / name, safe_mode=True)
        np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)
    assert set(models.custom_objects()) == {"BlurPool", "FullNormalization", "VGGFace2Mean", "ZNormalization",
                                            "ChannelFlip"}


def test_weight_decay_adds_real_l2_losses():
    model = models.build_model("smallcnn", SIZE, preprocessing="no", weight_decay=0.01)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    for kernel in kernels:
        kernel.assign(np.ones(kernel.shape, dtype="float32"))
    # 3 convs + fc + classifier; 0.01 * sum(1**2) over 864 + 18432 + 73728 + 16384 + 896 weights
    assert len(model.losses) == 5
    np.testing.assert_allclose(float(sum(float(loss) for loss in model.losses)), 0.01 * 110304, rtol=1e-5)
    assert models.build_model("smallcnn", SIZE, weight_decay=0.0).losses == []


# --------------------------------------------------------------------------------------------
# Names and aliases.


def test_resolve_net_aliases_and_defaults():
    assert models.resolve_net("senet50-100") == ("senet50", 100)
    assert models.resolve_net("vgg16-100") == ("vgg16", 100)
    assert models.resolve_net("densenet121bc-100") == ("densenet121bc", 100)
    assert models.resolve_net("xception-100") == ("xception", 100)
    assert models.resolve_net("mobilenet96") == ("mobilenetv2", 96)
    assert models.resolve_net("mobilenet224") == ("mobilenetv2", 224)
    assert models.resolve_net("senet50") == ("senet50", 224)
    assert models.resolve_net("senet50", 100) == ("senet50", 100)
    assert models.resolve_net("smallcnn") == ("smallcnn", 100)
    with pytest.raises(ValueError, match="conflicts"):
        models.resolve_net("mobilenet96", 128)


def test_unknown_net_lists_choices():
    with pytest.raises(ValueError) as error:
        models.resolve_net("resnet18")
    message = str(error.value)
    assert "resnet18" in message
    for name in list(models.NETS) + ["senet50-100", "mobilenet96"]:
        assert name in message
    with pytest.raises(ValueError, match="smallcnn"):
        models.build_model("alexnet", 100)


def test_too_small_input_is_rejected():
    with pytest.raises(ValueError, match="64"):
        models.build_model("smallcnn", 32)


# --------------------------------------------------------------------------------------------
# Pretrained weights from local files.


def _small(num_classes=7, seed=0):
    keras.utils.set_random_seed(seed)
    return models.build_model("smallcnn", SIZE, num_classes=num_classes, preprocessing="no", lpf=0)


WEIGHTED_SMALLCNN = ["block1_conv", "block1_bn", "block2_conv", "block2_bn", "block3_conv", "block3_bn", "fc",
                     "classifier"]


@pytest.mark.parametrize("file_name", ["full.hdf5", "weights.weights.h5", "model.keras"])
def test_load_pretrained_by_name(tmp_path, file_name):
    source = _small(seed=1)
    path = tmp_path / file_name
    if file_name.endswith(".weights.h5"):
        source.save_weights(path)
    else:
        source.save(path)
    target = _small(seed=2)
    report = models.load_pretrained(target, str(path))
    assert sorted(report["matched"]) == sorted(WEIGHTED_SMALLCNN)
    assert report["mismatched"] == [] and report["missing"] == [] and report["unused"] == []
    images = np.random.default_rng(4).uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(target.predict(images, verbose=0), source.predict(images, verbose=0))


def test_load_pretrained_reports_shape_mismatch(tmp_path):
    source = _small(num_classes=5, seed=1)
    source.save(tmp_path / "five.hdf5")
    target = _small(seed=2)
    before = target.get_layer("classifier").get_weights()[0].copy()
    report = models.load_pretrained(target, str(tmp_path / "five.hdf5"))
    assert report["mismatched"] == [{"layer": "classifier", "expected": [(128, 7), (7,)], "found": [(128, 5), (5,)]}]
    assert "classifier" not in report["matched"] and len(report["matched"]) == 7
    np.testing.assert_array_equal(target.get_layer("classifier").get_weights()[0], before)


def test_load_pretrained_legacy_slash_names(tmp_path):
    """A Keras 2 style weights file with '/' in layer names (rcmalli style) maps '/' to '_'."""
    kernel = np.arange(3 * 3 * 3 * 32, dtype="float32").reshape(3, 3, 3, 32) / 1000.0
    bias = np.linspace(-1, 1, 32, dtype="float32")
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"block1/conv", b"extra/layer"]
        group = handle.create_group("block1/conv")
        group.attrs["weight_names"] = [b"block1/conv/kernel:0", b"block1/conv/bias:0"]
        group["block1/conv/kernel:0"] = kernel
        group["block1/conv/bias:0"] = bias
        extra = handle.create_group("extra/layer")
        extra.attrs["weight_names"] = [b"extra/layer/kernel:0"]
        extra["extra/layer/kernel:0"] = np.zeros((2, 2), dtype="float32")
    target = _small()
    report = models.load_pretrained(target, str(path))
    assert report["matched"] == ["block1_conv"]
    assert report["unused"] == ["extra_layer"]
    assert sorted(report["missing"]) == sorted(set(WEIGHTED_SMALLCNN) - {"block1_conv"})
    loaded_kernel, loaded_bias = target.get_layer("block1_conv").get_weights()
    np.testing.assert_array_equal(loaded_kernel, kernel)
    np.testing.assert_array_equal(loaded_bias, bias)


def test_load_pretrained_missing_file():
    with pytest.raises(ValueError, match="no/such/file.h5"):
        models.load_pretrained(_small(), "no/such/file.h5")


def test_imagenet_without_cache_fails_immediately(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    inputs = keras.Input((SIZE, SIZE, 3))
    stand_in = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="mobilenetv2")  # 64 px: alpha .75, rows 224
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        models.load_pretrained(stand_in, "imagenet")
    assert time.monotonic() - start < 2.0
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.75_224_no_top.h5" in message
    assert os.path.join(str(tmp_path / "keras_home"), "models") in message
    with pytest.raises(ValueError, match="no ImageNet weights"):
        models.load_pretrained(_small(), "imagenet")
    with pytest.raises(ValueError, match="rcmalli_vggface_tf_notop_senet50.h5"):
        models.load_pretrained(keras.Model(inputs, inputs, name="senet50"), "vggface2")


@pytest.mark.slow
def test_imagenet_from_cache_loads_by_name_and_order(tmp_path, monkeypatch):
    """A cached Keras Xception notop file: named layers by name, the 4 unnamed residual convs by order."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    keras.utils.set_random_seed(5)
    reference = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    (tmp_path / "models").mkdir()
    reference.save(tmp_path / "models" / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5")
    model = models.build_model("xception", 71, lpf=1, preprocessing="no")
    report = models.load_pretrained(model, "imagenet")
    assert report["mismatched"] == [] and report["unused"] == []
    assert report["missing"] == ["Logits"]
    by_order = dict(report["matched_by_order"])
    assert sorted(by_order) == sorted(f"block{b}_residual_{kind}" for b in (2, 3, 4, 13) for kind in ("conv", "bn"))
    unnamed_convs = [layer for layer in reference.layers if layer.name.startswith("conv2d")]
    for block, reference_layer in zip((2, 3, 4, 13), unnamed_convs):
        np.testing.assert_array_equal(model.get_layer(f"block{block}_residual_conv").get_weights()[0],
                                      reference_layer.get_weights()[0])
    np.testing.assert_array_equal(model.get_layer("block14_sepconv2").get_weights()[1],
                                  reference.get_layer("block14_sepconv2").get_weights()[1])


def test_scale_minus1_1_layer_maps_0_127_5_255_to_minus1_0_1():
    """docs/MODELS.md: `scale-1-1` is x / 127.5 − 1."""
    from models.preprocessing import preprocessing_layers

    layer = preprocessing_layers("scale-1-1")[0]
    out = np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]], np.float32)))
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-6)


def test_zscore_floors_the_standard_deviation_at_0_001():
    """docs/BENCHMARK.md §4.4: z-score per image and channel, the std floored at 0.001. Channel 0 is zero but
    one pixel of 0.05 (mean 5e-6, std ≈ 5e-4 < 0.001), so that pixel becomes (0.05 − 5e-6) / 0.001."""
    import tensorflow as tf
    from models.preprocessing import FullNormalization

    x = np.zeros((1, 100, 100, 3), np.float32)
    x[0, :, :, 1] = 50.0
    x[0, 0, 0, 0] = 0.05
    out = FullNormalization._zscore(tf.constant(x)).numpy()
    assert out[0, 0, 0, 0] == pytest.approx((0.05 - 0.05 / 10000) / 0.001, rel=1e-3)
