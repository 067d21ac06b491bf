"""Small helpers shared by the network builders: weight decay, input checks, the softmax head."""

from __future__ import annotations

import keras
from keras import layers

MIN_INPUT_SIZE = 64


def l2(weight_decay: float):
    """A real L2 kernel regulariser (weight_decay * sum(w**2)) at build time, or None (BENCHMARK.md §4.8 FIX)."""
    weight_decay = float(weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def check_input(input_shape, minimum: int = MIN_INPUT_SIZE) -> tuple[int, int, int]:
    """Validate an (H, W, C) input shape: H, W >= ``minimum``, C in {1, 3}."""
    try:
        height, width, channels = (int(value) for value in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape: expected (height, width, channels), got {input_shape!r}") from None
    if height < minimum or width < minimum:
        raise ValueError(f"input_shape: expected at least {minimum}x{minimum} px, got {height}x{width}")
    if channels not in (1, 3):
        raise ValueError(f"input_shape: expected 1 or 3 channels, got {channels}")
    return height, width, channels


def softmax_head(x, num_classes: int, name: str, weight_decay: float = 0.0, use_bias: bool = True):
    """Dense(num_classes, softmax) named ``name`` (float32 output, also under mixed precision)."""
    return layers.Dense(num_classes, activation="softmax", use_bias=use_bias, kernel_regularizer=l2(weight_decay),
                        dtype="float32", name=name)(x)


def functional(network, name: str, input_shape, num_classes, lpf, weight_decay) -> keras.Model:
    """A Functional model ``name`` applying ``network(x, num_classes, lpf, weight_decay)`` to an Input."""
    from .blurpool import check_lpf

    input_shape = check_input(input_shape)
    lpf = check_lpf(lpf)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    inputs = keras.Input(shape=input_shape, name="input")
    outputs = network(inputs, int(num_classes), lpf=lpf, weight_decay=float(weight_decay))
    return keras.Model(inputs, outputs, name=name)
