"""BlurPool padding implementations (docs/SCALE.md §4, BENCHMARK.md §4.2): the backend's mirror pad
and the former two-gather padding give the same outputs and the same gradients, and both equal a
numpy reference written from the definition."""

import math

import numpy as np
import pytest

import models.blurpool as blurpool


def numpy_blurpool(x: np.ndarray, f: int) -> np.ndarray:
    """Reference: np.pad reflect, then the binomial filter at every second position (float64)."""
    before, after = (f - 1) // 2, f // 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (before, after), (before, after), (0, 0)], mode="reflect")
    row = np.array([1.0, 2.0, 1.0]) if f == 3 else np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = np.outer(row, row) / np.outer(row, row).sum()
    n, h, w, c = padded.shape
    out_h, out_w = (h - f) // 2 + 1, (w - f) // 2 + 1
    out = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, 2 * i:2 * i + f, 2 * j:2 * j + f, :]
            out[:, i, j, :] = np.einsum("nhwc,hw->nc", window, kernel)
    return out


def forward_and_gradient(mode: str, x: np.ndarray, f: int, weights: np.ndarray):
    import tensorflow as tf

    old = blurpool.PAD_MODE
    blurpool.PAD_MODE = mode
    try:
        layer = blurpool.BlurPool(filt_size=f)
        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            y = layer(tensor)
            loss = tf.reduce_sum(y * weights)  # a weighted sum, so every output's gradient differs
        return y.numpy(), tape.gradient(loss, tensor).numpy()
    finally:
        blurpool.PAD_MODE = old


@pytest.mark.parametrize("f, size", [(3, 9), (5, 8), (3, 2), (5, 2)])
def test_pad_and_gather_give_equal_outputs_and_gradients(f, size):
    rng = np.random.default_rng(f * 100 + size)
    x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    reference = numpy_blurpool(x, f)
    weights = rng.normal(size=reference.shape).astype(np.float32)
    y_pad, g_pad = forward_and_gradient("pad", x, f, weights)
    y_gather, g_gather = forward_and_gradient("gather", x, f, weights)
    np.testing.assert_allclose(y_pad, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_gather, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_pad, g_gather, rtol=1e-5, atol=1e-6)
    # The gradient of a linear layer is its adjoint: <blurpool(x), w> = <x, gradient>, and the
    # gradient is the same for every x; check it against the numpy reference by linearity.
    basis_value = np.einsum("nhwc,nhwc->", numpy_blurpool(x, f), weights.astype(np.float64))
    assert np.einsum("nhwc,nhwc->", x.astype(np.float64), g_pad.astype(np.float64)) == pytest.approx(basis_value, rel=1e-4)


def test_small_maps_fall_back_to_the_gather():
    """A 2-pixel axis with f=5 pads 2 on one side, as large as the axis: only the gather reflects
    twice (as np.pad does), and the 'pad' mode must use it there."""
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)
    y, _ = forward_and_gradient("pad", x, 5, np.ones((1, 1, 1, 3), np.float32))
    np.testing.assert_allclose(y, numpy_blurpool(x, 5), rtol=1e-6)


def test_pad_mode_uses_the_mirror_pad_op():
    """The point of the change: no gather (whose gradient is a scatter) in the traced graph."""
    import tensorflow as tf

    layer = blurpool.BlurPool(filt_size=3)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 16, 16, 4), tf.float32)).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "MirrorPad" in kinds and not kinds & {"GatherV2", "ResourceGather"}


@pytest.mark.parametrize("lpf", [1, 3, 5])
def test_blur_before_1x1_conv_gives_the_same_senet(lpf):
    """SENet's stride-2 1x1 reduce/projection convs: BlurPool before the conv (the quarter-size
    conv) equals BlurPool after it, outputs and weight gradients, to float tolerance."""
    import keras
    import tensorflow as tf

    import models

    def build(reorder):
        old = blurpool.REORDER_1X1
        blurpool.REORDER_1X1 = reorder
        try:
            keras.utils.set_random_seed(1)
            return models.NETS["senet50"]((64, 64, 3), 7, lpf=lpf)
        finally:
            blurpool.REORDER_1X1 = old

    assert blurpool.REORDER_1X1 is False  # the literal placement of BENCHMARK.md §4.2 is the default
    literal, reordered = build(False), build(True)
    reordered.set_weights(literal.get_weights())
    # The reordered model really blurs the smaller input of a 1x1 conv: its BlurPool has Cin channels.
    blur = reordered.get_layer("conv3_1_1x1_reduce_blurpool")
    assert blur.channels == 256  # stage 2 output (the conv reduces it to 128)
    assert literal.get_layer("conv3_1_1x1_reduce_blurpool").channels == 128
    x = tf.constant(np.random.default_rng(lpf).normal(size=(2, 64, 64, 3)).astype(np.float32))
    results = []
    for model in (literal, reordered):
        with tf.GradientTape() as tape:
            y = model(x, training=False)  # batch statistics of 2 images would amplify rounding
            loss = tf.reduce_sum(y * tf.range(1.0, 8.0))
        results.append((y.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for g_literal, g_reordered in zip(results[0][1], results[1][1]):
        scale = max(float(np.abs(g_literal).max()), 1e-6)
        np.testing.assert_allclose(g_literal / scale, g_reordered / scale, atol=2e-4)


@pytest.mark.parametrize("filt_size", [2, 4])
def test_even_filters_pad_one_less_before_than_after(filt_size):
    """docs/BENCHMARK.md §4.2: reflect-pad floor((f−1)/2) before and ceil((f−1)/2) after (for even f: one less before);
    compared with a float64 sum of the padded windows, stride 2, kernel outer(row, row) / sum."""
    import tensorflow as tf

    x = np.random.default_rng(filt_size).normal(size=(1, 7, 8, 2)).astype(np.float32)
    before, after = (filt_size - 1) // 2, filt_size // 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (before, after), (before, after), (0, 0)], mode="reflect")
    row = np.array([math.comb(filt_size - 1, k) for k in range(filt_size)], float)
    kernel = np.outer(row, row) / np.outer(row, row).sum()
    out_h, out_w = (padded.shape[1] - filt_size) // 2 + 1, (padded.shape[2] - filt_size) // 2 + 1
    ref = np.zeros((1, out_h, out_w, 2))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, 2 * i:2 * i + filt_size, 2 * j:2 * j + filt_size]
            ref[:, i, j] = np.einsum("nhwc,hw->nc", window, kernel)
    out = blurpool.BlurPool(filt_size=filt_size)(tf.constant(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
