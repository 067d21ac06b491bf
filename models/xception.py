"""Xception (keras.applications layout and names) with GAP -> Dense(softmax, no bias) ``Logits``.

Entry flow (stem convs, blocks 2-4 with 1x1/2 residual convs), middle flow (blocks 5-12), exit flow
(block 13 with a residual conv, block 14). Keras leaves the 4 residual convs unnamed; here they are
``blockN_residual_conv`` / ``blockN_residual_bn``. BlurPool (lpf >= 1, BENCHMARK.md §4.2): the stem conv
3x3/2, the 4 residual 1x1/2 convs and the 4 max-pools 3x3/2 (9 BlurPools).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head


def _sepconv_bn(x, filters, name, weight_decay, relu_first=True):
    if relu_first:
        x = layers.Activation("relu", name=f"{name}_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=l2(weight_decay),
                               pointwise_regularizer=l2(weight_decay), name=name)(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _downsampling_block(x, block, filters, lpf, weight_decay, relu_first_conv=True):
    """Two separable convs and a max-pool 3x3/2, plus a 1x1/2 residual conv (blocks 2, 3, 4, 13)."""
    first, second = filters
    residual = strided(lambda stride: layers.Conv2D(second, 1, strides=stride, padding="same", use_bias=False,
                                                    kernel_regularizer=l2(weight_decay),
                                                    name=f"block{block}_residual_conv"),
                       x, lpf, f"block{block}_residual_conv")
    residual = layers.BatchNormalization(name=f"block{block}_residual_bn")(residual)
    x = _sepconv_bn(x, first, f"block{block}_sepconv1", weight_decay, relu_first=relu_first_conv)
    x = _sepconv_bn(x, second, f"block{block}_sepconv2", weight_decay)
    x = strided(lambda stride: layers.MaxPooling2D(3, strides=stride, padding="same", name=f"block{block}_pool"),
                x, lpf, f"block{block}_pool")
    return layers.Add(name=f"block{block}_add")([x, residual])


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed); returns the softmax output tensor."""
    x = strided(lambda stride: layers.Conv2D(32, 3, strides=stride, use_bias=False,
                                             kernel_regularizer=l2(weight_decay), name="block1_conv1"),
                x, lpf, "block1_conv1")
    x = layers.BatchNormalization(name="block1_conv1_bn")(x)
    x = layers.Activation("relu", name="block1_conv1_act")(x)
    x = layers.Conv2D(64, 3, use_bias=False, kernel_regularizer=l2(weight_decay), name="block1_conv2")(x)
    x = layers.BatchNormalization(name="block1_conv2_bn")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(x)
    # block 2 starts without ReLU (its input has just been through block1_conv2_act)
    x = _downsampling_block(x, 2, (128, 128), lpf, weight_decay, relu_first_conv=False)
    x = _downsampling_block(x, 3, (256, 256), lpf, weight_decay)
    x = _downsampling_block(x, 4, (728, 728), lpf, weight_decay)
    for block in range(5, 13):
        residual = x
        for index in (1, 2, 3):
            x = _sepconv_bn(x, 728, f"block{block}_sepconv{index}", weight_decay)
        x = layers.Add(name=f"block{block}_add")([x, residual])
    x = _downsampling_block(x, 13, (728, 1024), lpf, weight_decay)
    for index, filters in ((1, 1536), (2, 2048)):
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=l2(weight_decay),
                                   pointwise_regularizer=l2(weight_decay), name=f"block14_sepconv{index}")(x)
        x = layers.BatchNormalization(name=f"block14_sepconv{index}_bn")(x)
        x = layers.Activation("relu", name=f"block14_sepconv{index}_act")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return softmax_head(x, num_classes, "Logits", weight_decay, use_bias=False)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """Xception (entry/middle/exit flows) with a bias-free `Logits` softmax head."""
    return functional(network, "xception", input_shape, num_classes, lpf, weight_decay)
