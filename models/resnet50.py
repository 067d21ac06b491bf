"""ResNet-50 v1 (keras.applications layout and names) with GAP -> Dense(softmax) ``Logits``.

The original's ImageNet ResNet50 branch is unreachable (BENCHMARK.md §4.1); this is the plain network.
BlurPool (lpf >= 1; our choice, following the SENet placement): the stem conv 7x7/2, the stem
max-pool 3x3/2 and the stride-2 1x1 convs (``_1_conv`` and shortcut ``_0_conv``) of the first block
of stages 3-5 (8 BlurPools).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head

BN_EPSILON = 1.001e-5
STAGES = ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2))  # stage, width, blocks, stride


def _conv(x, filters, kernel, name, lpf, weight_decay, stride=1, padding="valid"):
    def factory(strides):
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, kernel_regularizer=l2(weight_decay),
                             name=name)

    return strided(factory, x, lpf, name, stride) if stride != 1 else factory(1)(x)


def _block(x, filters, name, lpf, weight_decay, stride=1, shortcut_conv=True):
    if shortcut_conv:
        shortcut = _conv(x, 4 * filters, 1, f"{name}_0_conv", lpf, weight_decay, stride=stride)
        shortcut = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = _conv(x, filters, 1, f"{name}_1_conv", lpf, weight_decay, stride=stride)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv(x, filters, 3, f"{name}_2_conv", lpf, weight_decay, padding="same")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv(x, 4 * filters, 1, f"{name}_3_conv", lpf, weight_decay)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed, BGR); returns the softmax output tensor."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = _conv(x, 64, 7, "conv1_conv", lpf, weight_decay, stride=2)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = strided(lambda stride: layers.MaxPooling2D(3, strides=stride, name="pool1_pool"), x, lpf, "pool1_pool")
    for stage, width, blocks, stride in STAGES:
        for block in range(1, blocks + 1):
            x = _block(x, width, f"conv{stage}_block{block}", lpf, weight_decay,
                       stride=stride if block == 1 else 1, shortcut_conv=block == 1)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return softmax_head(x, num_classes, "Logits", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """ResNet-50 v1 with a `Logits` softmax head."""
    return functional(network, "resnet50", input_shape, num_classes, lpf, weight_decay)
