"""Network builders, BlurPool and the preprocessing layers (BENCHMARK.md §4.1, §4.2, §4.4).

``NETS`` maps each network name to its builder ``build(input_shape, num_classes, lpf=1,
weight_decay=0.0) -> keras.Model`` (backbone + head on already-preprocessed input).
:func:`build_model` puts the preprocessing layers in front, so a saved model takes raw RGB floats
0..255 and describes itself. The original's ``--net`` names stay accepted as ``ALIASES``.

Example::

    import models
    net, size = models.resolve_net("senet50-100")          # ("senet50", 100)
    model = models.build_model(net, size, lpf=3)
    report = models.load_pretrained(model, "weights.h5")    # matched by layer name
"""

from __future__ import annotations

import keras

from . import densenet121bc, mobilenetv2, resnet50, senet50, smallcnn, vgg16, xception
from .blurpool import LPF_CHOICES, BlurPool, binomial_filter, check_lpf
from .common import check_input
from .preprocessing import (
    COLOURS,
    MEAN_ORDERS,
    PREPROCESSING_MODES,
    ChannelFlip,
    FullNormalization,
    VGGFace2Mean,
    ZNormalization,
    preprocess_numpy,
    preprocessing_layers,
)
from .pretrained import load_pretrained, imagenet_file_name

_MODULES = (smallcnn, senet50, vgg16, densenet121bc, xception, mobilenetv2, resnet50)

# name -> builder; the names come from the modules, so name and code cannot drift.
NETS = {module.__name__.rsplit(".", 1)[-1]: module.build for module in _MODULES}
_NETWORKS = {module.__name__.rsplit(".", 1)[-1]: module.network for module in _MODULES}

# Input size of each plain name when --input-size is not given: the original's (or the network's
# native) size; smallcnn is ours and uses RAF-DB's 100 px aligned faces.
DEFAULT_SIZES = {
    "smallcnn": 100,
    "senet50": 224,
    "vgg16": 224,
    "densenet121bc": 224,
    "xception": 299,
    "mobilenetv2": 224,
    "resnet50": 224,
}

# The original's --net values -> (network, input size) (BENCHMARK.md §4.1).
ALIASES = {
    "senet50": ("senet50", 224),
    "senet50-100": ("senet50", 100),
    "vgg16-100": ("vgg16", 100),
    "densenet121bc": ("densenet121bc", 224),
    "densenet121bc-100": ("densenet121bc", 100),
    "xception-100": ("xception", 100),
    "mobilenet96": ("mobilenetv2", 96),
    "mobilenet224": ("mobilenetv2", 224),
}

# Channel order the backbone's pretrained weights expect; build_model flips RGB to BGR for "BGR".
# senet50/vgg16: rcmalli keras-vggface weights (Caffe, BGR); vgg16 and resnet50 ImageNet: Keras's
# weights converted from Caffe, preprocess_input mode "caffe" (BGR). Xception, MobileNetV2 and
# DenseNet take RGB ("tf"/"torch" modes); smallcnn is trained from scratch on RGB.
CHANNEL_ORDER = {name: "RGB" for name in NETS}
CHANNEL_ORDER.update(senet50="BGR", vgg16="BGR", resnet50="BGR")

NET_CHOICES = tuple(NETS) + tuple(name for name in ALIASES if name not in NETS)


def resolve_net(name: str, input_size: int | None = None) -> tuple[str, int]:
    """(network, input size) for a registry name or an original --net alias; ValueError if unknown.

    A plain name takes ``input_size`` (default ``DEFAULT_SIZES``); a sized alias such as
    ``senet50-100`` fixes the size, and a different ``input_size`` is an error.
    """
    if name in NETS:
        size = DEFAULT_SIZES[name] if input_size is None else int(input_size)
        return name, size
    if name in ALIASES:
        net, size = ALIASES[name]
        if input_size is not None and int(input_size) != size:
            raise ValueError(f"net {name!r} means {net} at {size} px; it conflicts with input size {input_size} "
                             f"(use --net {net} --input-size {input_size})")
        return net, size
    raise ValueError(f"unknown net {name!r}: expected one of {', '.join(NET_CHOICES)}")


def custom_objects() -> dict:
    """Every custom layer of the package by class name (they are also registered as 'fer>Name')."""
    return {cls.__name__: cls for cls in (BlurPool, FullNormalization, VGGFace2Mean, ZNormalization, ChannelFlip)}


def build_model(net: str, input_size: int, *, channels: int = 3, num_classes: int = 7, lpf: int = 1,
                preprocessing: str = "full_normalization", mean_order: str = "correct", colour: str = "rgb",
                weight_decay: float = 0.0) -> keras.Model:
    """The full model: raw RGB floats 0..255 -> preprocessing layers -> (BGR flip) -> network -> softmax."""
    if net not in NETS:
        net, _ = resolve_net(net, input_size)
    input_shape = check_input((input_size, input_size, channels))
    lpf = check_lpf(lpf)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in preprocessing_layers(preprocessing, channels=input_shape[2], mean_order=mean_order, colour=colour):
        x = layer(x)
    if CHANNEL_ORDER[net] == "BGR" and input_shape[2] == 3:
        x = ChannelFlip(name="rgb_to_bgr")(x)
    outputs = _NETWORKS[net](x, int(num_classes), lpf=lpf, weight_decay=float(weight_decay))
    return keras.Model(inputs, outputs, name=net)


__all__ = [
    "ALIASES", "BlurPool", "CHANNEL_ORDER", "COLOURS", "ChannelFlip", "DEFAULT_SIZES", "FullNormalization",
    "LPF_CHOICES", "MEAN_ORDERS", "NETS", "NET_CHOICES", "PREPROCESSING_MODES", "VGGFace2Mean", "ZNormalization",
    "binomial_filter", "build_model", "custom_objects", "imagenet_file_name", "load_pretrained",
    "preprocess_numpy", "preprocessing_layers", "resolve_net",
]
