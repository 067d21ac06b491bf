"""DenseNet-121 (BC: bottleneck + compression 0.5) with a ``Logits`` softmax head (BENCHMARK.md §4.1).

Dense blocks of 6, 12, 24, 16 layers (growth 32; BN eps 1.001e-5), keras.applications layer names
(``conv1_conv``, ``conv2_block1_1_conv``, ``pool2_conv``, ...); GAP -> Dense(softmax, bias) ``Logits``.
BlurPool (BENCHMARK.md §4.2): with lpf >= 1 the stem conv 7x7/2 and the stem max-pool 3x3/2 become stride 1
+ BlurPool(lpf); each transition's 2x2/2 average pool is *always* (also with lpf 0) replaced by
BlurPool(max(2, lpf)), named ``poolN_blurpool`` (5 BlurPools with lpf >= 1, 3 with lpf 0).
"""

from __future__ import annotations

from keras import layers

from .blurpool import BlurPool, strided
from .common import functional, l2, softmax_head

BLOCKS = (6, 12, 24, 16)
GROWTH = 32
COMPRESSION = 0.5
BN_EPSILON = 1.001e-5


def _conv_block(x, name, weight_decay):
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_0_bn")(x)
    y = layers.Activation("relu", name=f"{name}_0_relu")(y)
    y = layers.Conv2D(4 * GROWTH, 1, use_bias=False, kernel_regularizer=l2(weight_decay), name=f"{name}_1_conv")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(GROWTH, 3, padding="same", use_bias=False, kernel_regularizer=l2(weight_decay),
                      name=f"{name}_2_conv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, name, lpf, weight_decay):
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(int(x.shape[-1]) * COMPRESSION), 1, use_bias=False, kernel_regularizer=l2(weight_decay),
                      name=f"{name}_conv")(x)
    return BlurPool(filt_size=max(2, lpf), stride=2, name=f"{name}_blurpool")(x)


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed); returns the softmax output tensor."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = strided(lambda stride: layers.Conv2D(64, 7, strides=stride, use_bias=False,
                                             kernel_regularizer=l2(weight_decay), name="conv1_conv"),
                x, lpf, "conv1_conv")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = strided(lambda stride: layers.MaxPooling2D(3, strides=stride, name="pool1"), x, lpf, "pool1")
    for stage, blocks in enumerate(BLOCKS, start=2):
        for block in range(1, blocks + 1):
            x = _conv_block(x, f"conv{stage}_block{block}", weight_decay)
        if stage < 2 + len(BLOCKS) - 1:
            x = _transition(x, f"pool{stage}", lpf, weight_decay)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return softmax_head(x, num_classes, "Logits", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """DenseNet-121-BC (blocks 6/12/24/16, compression 0.5) with a `Logits` softmax head."""
    return functional(network, "densenet121bc", input_shape, num_classes, lpf, weight_decay)
