"""Small CNN for 2-core CPUs: 3 x [conv 3x3 - BN - ReLU - max-pool 2x2/2] with 32/64/128 filters,
GAP, Dense(128, ReLU), dropout 0.3, Dense(7, softmax) ``classifier`` (111,559 parameters at any
input size; BENCHMARK.md §7 reports ~112k).

BlurPool (lpf >= 1) replaces the stride of each of the 3 max-pools (max-pool 2x2/1 + BlurPool).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head

FILTERS = (32, 64, 128)
HIDDEN = 128
DROPOUT = 0.3


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed); returns the softmax output tensor."""
    for index, filters in enumerate(FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", kernel_regularizer=l2(weight_decay),
                          name=f"block{index}_conv")(x)
        x = layers.BatchNormalization(name=f"block{index}_bn")(x)
        x = layers.Activation("relu", name=f"block{index}_relu")(x)
        x = strided(lambda stride: layers.MaxPooling2D(2, strides=stride, name=f"block{index}_pool"),
                    x, lpf, f"block{index}_pool")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(HIDDEN, activation="relu", kernel_regularizer=l2(weight_decay), name="fc")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    return softmax_head(x, num_classes, "classifier", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """Small CNN (3 conv blocks 32/64/128, GAP, dense 128, dropout, softmax), ~112k parameters."""
    return functional(network, "smallcnn", input_shape, num_classes, lpf, weight_decay)
