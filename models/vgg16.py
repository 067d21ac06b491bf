"""VGG16 as in rcmalli keras-vggface (VGGFace v1) with MIVIA's 7-class head (BENCHMARK.md §4.1).

13 conv 3x3 + ReLU ('same') in 5 blocks (64, 128, 256, 512, 512), a max-pool 2x2/2 after each block;
Flatten -> fc6 4096 ReLU -> fc7 4096 ReLU -> ``fc8_7`` Dense(softmax). Layer names are rcmalli's
(``conv1_1`` ... ``fc7``), so VGGFace weight files load by name; at inputs other than 224 px fc6
has a different number of inputs, and its weights are reported as mismatched.
BlurPool (lpf >= 1, BENCHMARK.md §4.2): the 5 max-pools (max-pool 2x2/1 + BlurPool).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head

BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed, BGR); returns the softmax output tensor."""
    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for index in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=l2(weight_decay),
                              name=f"conv{block}_{index}")(x)
        x = strided(lambda stride: layers.MaxPooling2D(2, strides=stride, name=f"pool{block}"), x, lpf, f"pool{block}")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(FC_WIDTH, kernel_regularizer=l2(weight_decay), name="fc6")(x)
    x = layers.Activation("relu", name="fc6_relu")(x)
    x = layers.Dense(FC_WIDTH, kernel_regularizer=l2(weight_decay), name="fc7")(x)
    x = layers.Activation("relu", name="fc7_relu")(x)
    return softmax_head(x, num_classes, "fc8_7", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """VGGFace VGG16 (13 conv, 5 max-pools, fc6/fc7 4096) with an `fc8_7` softmax head."""
    return functional(network, "vgg16", input_shape, num_classes, lpf, weight_decay)
