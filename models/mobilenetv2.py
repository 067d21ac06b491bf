"""MobileNetV2 (keras.applications layout and names) with GAP -> Dense(softmax, bias) ``Logits``.

Width alpha = 0.75 when the input is at most 96 px, else 1.0 (the original's mobilenet96 /
mobilenet224, BENCHMARK.md §4.1). BlurPool (lpf >= 1; our choice, the original had no anti-aliased
MobileNetV2): every strided layer, i.e. the stem conv ``Conv1`` and the depthwise convs of blocks 1,
3, 6 and 13, become stride 1 ('same') + BlurPool(lpf), before their BN (5 BlurPools).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head

BN = dict(epsilon=1e-3, momentum=0.999)
# (filters, stride, expansion) of blocks 0..16
BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
          (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
          (320, 1, 6))


def alpha_for_size(size: int) -> float:
    """The original's width: 0.75 up to 96 px, 1.0 above."""
    return 0.75 if size <= 96 else 1.0


def make_divisible(value, divisor=8):
    """Round ``value`` to a multiple of ``divisor`` without going more than 10 % down (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _correct_pad(x):
    """Keras's zero padding before a 3x3/2 'valid' depthwise conv: (0 or 1, 1) per side."""
    height, width = int(x.shape[1]), int(x.shape[2])
    return ((height % 2, 1), (width % 2, 1))


def _inverted_residual(x, filters, alpha, stride, expansion, block_id, lpf, weight_decay):
    in_channels = int(x.shape[-1])
    pointwise_filters = make_divisible(int(filters * alpha))
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                          kernel_regularizer=l2(weight_decay), name=f"{prefix}expand")(x)
        x = layers.BatchNormalization(**BN, name=f"{prefix}expand_BN")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    if stride == 2 and lpf == 0:
        x = layers.ZeroPadding2D(_correct_pad(x), name=f"{prefix}pad")(x)
    x = strided(lambda strides: layers.DepthwiseConv2D(3, strides=strides, use_bias=False,
                                                       padding="valid" if strides == 2 else "same",
                                                       depthwise_regularizer=l2(weight_decay),
                                                       name=f"{prefix}depthwise"),
                x, lpf, f"{prefix}depthwise", stride)
    x = layers.BatchNormalization(**BN, name=f"{prefix}depthwise_BN")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, kernel_regularizer=l2(weight_decay),
                      name=f"{prefix}project")(x)
    x = layers.BatchNormalization(**BN, name=f"{prefix}project_BN")(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed); returns the softmax output tensor."""
    alpha = alpha_for_size(int(x.shape[1]))
    x = strided(lambda stride: layers.Conv2D(make_divisible(32 * alpha), 3, strides=stride, padding="same",
                                             use_bias=False, kernel_regularizer=l2(weight_decay), name="Conv1"),
                x, lpf, "Conv1")
    x = layers.BatchNormalization(**BN, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (filters, stride, expansion) in enumerate(BLOCKS):
        x = _inverted_residual(x, filters, alpha, stride, expansion, block_id, lpf, weight_decay)
    last_filters = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, 1, use_bias=False, kernel_regularizer=l2(weight_decay), name="Conv_1")(x)
    x = layers.BatchNormalization(**BN, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return softmax_head(x, num_classes, "Logits", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """MobileNetV2 (alpha 0.75 up to 96 px, else 1.0) with a `Logits` softmax head."""
    return functional(network, "mobilenetv2", input_shape, num_classes, lpf, weight_decay)
