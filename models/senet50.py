"""SE-ResNet-50 as rcmalli keras-vggface builds it (the original's default network, BENCHMARK.md §4.1).

Stem conv 7x7/2 'same' (64, no bias) -> BN (eps 1e-4) -> ReLU -> max-pool 3x3/2 (valid); bottleneck
stages [3, 4, 6, 3] with widths (64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048),
stride 2 in the first 1x1 reduce conv and in the 1x1 projection of stages 3-5; an SE block (reduction
16, 1x1 convs with bias, sigmoid) on every residual; MIVIA's Dropout(0.5) after both SE 1x1 convs of
stage 5, block 3. Head: AvgPool 7x7 -> Flatten -> Dense(softmax) ``classifier`` when the final map is
7x7, otherwise global average pooling (FIX, BENCHMARK.md §6 row 19: ``senet50-100`` builds).

Layer names are rcmalli's with '/' replaced by '_' (``conv1_7x7_s2``, ``conv2_1_1x1_reduce_bn``, ...),
so VGGFace2 weight files load by name. BlurPool (lpf >= 1, BENCHMARK.md §4.2): the stem conv, the stem
max-pool, and the stride-2 1x1 reduce and projection convs of stages 3-5 (8 BlurPools).
"""

from __future__ import annotations

from keras import layers

from .blurpool import strided
from .common import functional, l2, softmax_head

BN_EPSILON = 1e-4
SE_REDUCTION = 16
STAGES = ((2, 3, (64, 64, 256)), (3, 4, (128, 128, 512)), (4, 6, (256, 256, 1024)), (5, 3, (512, 512, 2048)))
DROPOUT_BLOCK = (5, 3)  # MIVIA's Dropout(0.5) after both SE convs of this block
DROPOUT = 0.5
FINAL_POOL = 7


def _conv_bn(x, filters, kernel, name, lpf, weight_decay, stride=1, padding="valid", use_bias=False):
    """Conv (stride via BlurPool when lpf >= 1) then BN named ``<name>_bn``."""
    def factory(strides):
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                             kernel_regularizer=l2(weight_decay), name=name)

    x = strided(factory, x, lpf, name, stride) if stride != 1 else factory(1)(x)
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def _se_block(x, stage, block, weight_decay):
    channels = int(x.shape[-1])
    prefix = f"conv{stage}_{block}"
    dropout = (stage, block) == DROPOUT_BLOCK
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_se_pool")(x)
    se = layers.Conv2D(channels // SE_REDUCTION, 1, kernel_regularizer=l2(weight_decay), name=f"{prefix}_1x1_down")(se)
    if dropout:
        se = layers.Dropout(DROPOUT, name=f"{prefix}_1x1_down_dropout")(se)
    se = layers.Activation("relu", name=f"{prefix}_1x1_down_relu")(se)
    se = layers.Conv2D(channels, 1, kernel_regularizer=l2(weight_decay), name=f"{prefix}_1x1_up")(se)
    if dropout:
        se = layers.Dropout(DROPOUT, name=f"{prefix}_1x1_up_dropout")(se)
    se = layers.Activation("sigmoid", name=f"{prefix}_1x1_up_sigmoid")(se)
    return layers.Multiply(name=f"{prefix}_se_scale")([x, se])


def _block(x, widths, stage, block, lpf, weight_decay, stride=1, project=False):
    """Bottleneck with SE; ``project`` adds rcmalli's 1x1 projection shortcut (conv block)."""
    reduce_width, middle_width, out_width = widths
    prefix = f"conv{stage}_{block}"
    shortcut = x
    y = _conv_bn(x, reduce_width, 1, f"{prefix}_1x1_reduce", lpf, weight_decay, stride=stride)
    y = layers.Activation("relu", name=f"{prefix}_1x1_reduce_relu")(y)
    y = _conv_bn(y, middle_width, 3, f"{prefix}_3x3", lpf, weight_decay, padding="same")
    y = layers.Activation("relu", name=f"{prefix}_3x3_relu")(y)
    y = _conv_bn(y, out_width, 1, f"{prefix}_1x1_increase", lpf, weight_decay)
    y = _se_block(y, stage, block, weight_decay)
    if project:
        shortcut = _conv_bn(x, out_width, 1, f"{prefix}_1x1_proj", lpf, weight_decay, stride=stride)
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{prefix}_relu")(y)


def network(x, num_classes, lpf=1, weight_decay=0.0):
    """The layers on tensor ``x`` (already preprocessed, BGR); returns the softmax output tensor."""
    x = _conv_bn(x, 64, 7, "conv1_7x7_s2", lpf, weight_decay, stride=2, padding="same")
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = strided(lambda stride: layers.MaxPooling2D(3, strides=stride, name="pool1_3x3_s2"), x, lpf, "pool1_3x3_s2")
    for stage, blocks, widths in STAGES:
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = _block(x, widths, stage, block, lpf, weight_decay, stride=stride, project=block == 1)
    if x.shape[1] == FINAL_POOL and x.shape[2] == FINAL_POOL:
        x = layers.AveragePooling2D(FINAL_POOL, name="avg_pool")(x)
        x = layers.Flatten(name="flatten")(x)
    else:  # FIX (BENCHMARK.md §6 row 19): the 7x7 pool cannot apply to a smaller/larger map
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return softmax_head(x, num_classes, "classifier", weight_decay)


def build(input_shape, num_classes, lpf=1, weight_decay=0.0):
    """rcmalli SE-ResNet-50 with MIVIA's stage-5 SE dropout and a `classifier` softmax head."""
    return functional(network, "senet50", input_shape, num_classes, lpf, weight_decay)
