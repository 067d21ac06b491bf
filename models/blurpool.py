"""BlurPool anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant
again"), as the original used it (BENCHMARK.md §4.2), plus the helpers that the builders use to place it.

``BlurPool(filt_size=f, stride=2)``: reflect padding of floor((f-1)/2) + pad_off before and
ceil((f-1)/2) + pad_off after (rows and columns), then a depthwise convolution with the normalised
outer product of the binomial row b_f, stride 2, valid padding, so the output size is ceil(n/2)
for pad_off 0. f in {0, 1} is plain subsampling ``x[:, ::2, ::2, :]``; stride 1 is the identity.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

FILTER_SIZES = (0, 1, 2, 3, 4, 5, 6, 7)
# How BlurPool pads a map of known size: "pad" (the backend's reflect pad wherever the padding is
# smaller than the map, the default) or "gather" (two index gathers, the former implementation,
# kept for bench/bench_blurpool.py and the equality tests). Both give the same values.
PAD_MODE = "pad"


def binomial_filter(filt_size: int) -> np.ndarray:
    """The normalised 2-D binomial filter of size ``filt_size`` (outer product of b_f, sum 1)."""
    if filt_size not in FILTER_SIZES or filt_size < 1:
        raise ValueError(f"filt_size: expected one of 1..7, got {filt_size!r}")
    row = np.array([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=np.float64)
    grid = np.outer(row, row)
    return (grid / grid.sum()).astype(np.float32)


def reflect_indices(size: int, before: int, after: int) -> np.ndarray:
    """Indices that reflect-pad an axis of length ``size`` (no edge repeat, as numpy 'reflect').

    Unlike ``tf.pad(mode="REFLECT")`` this also works when the padding is not smaller than the
    axis (it reflects again, as ``np.pad(mode="reflect")`` does); a length-1 axis is repeated.
    """
    positions = np.arange(-before, size + after)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = np.mod(positions, period)
    return np.where(folded < size, folded, period - folded).astype(np.int32)


@keras.saving.register_keras_serializable(package="fer")
class BlurPool(layers.Layer):
    """Anti-aliased downsampling: reflect pad, binomial depthwise blur, subsample by ``stride``."""

    def __init__(self, filt_size=3, stride=2, pad_type="reflect", pad_off=0, channels=None, **kwargs):
        super().__init__(**kwargs)
        if filt_size not in FILTER_SIZES:
            raise ValueError(f"BlurPool filt_size: expected one of {FILTER_SIZES}, got {filt_size!r}")
        if int(stride) < 1:
            raise ValueError(f"BlurPool stride: expected >= 1, got {stride!r}")
        if pad_type not in ("reflect", "refl"):
            raise ValueError(f"BlurPool pad_type: only 'reflect' is supported, got {pad_type!r}")
        self.filt_size = int(filt_size)
        self.stride = int(stride)
        self.pad_type = "reflect"
        self.pad_off = int(pad_off)
        self.channels = None if channels is None else int(channels)
        size = max(self.filt_size, 1)
        self.pad_before = (size - 1) // 2 + self.pad_off
        self.pad_after = size // 2 + self.pad_off  # = ceil((f - 1) / 2) + pad_off

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.channels is None:
            self.channels = int(channels)
        elif channels is not None and int(channels) != self.channels:
            raise ValueError(f"BlurPool {self.name}: built for {self.channels} channels, got {channels}")
        if self.filt_size >= 2:
            kernel = binomial_filter(self.filt_size)[:, :, None, None]
            self._kernel = np.repeat(kernel, self.channels, axis=2)  # (f, f, C, 1) depthwise
        self.built = True

    def _pad(self, inputs):
        if self.pad_before == 0 and self.pad_after == 0:
            return inputs
        height, width = inputs.shape[1], inputs.shape[2]
        pads = [[0, 0], [self.pad_before, self.pad_after], [self.pad_before, self.pad_after], [0, 0]]
        if height is None or width is None:
            return ops.pad(inputs, pads, mode="reflect")
        largest = max(self.pad_before, self.pad_after)
        if PAD_MODE == "pad" and largest < min(int(height), int(width)):
            # The backend's mirror pad: its gradient is a cheap fold, where two gathers' is a scatter.
            return ops.pad(inputs, pads, mode="reflect")
        # Padding as large as the axis (tiny maps) reflects again, as np.pad does: index gathers.
        rows = reflect_indices(int(height), self.pad_before, self.pad_after)
        cols = reflect_indices(int(width), self.pad_before, self.pad_after)
        return ops.take(ops.take(inputs, rows, axis=1), cols, axis=2)

    def call(self, inputs):
        if self.stride == 1:
            return inputs
        padded = self._pad(inputs)
        if self.filt_size <= 1:
            return padded[:, :: self.stride, :: self.stride, :]
        kernel = ops.cast(ops.convert_to_tensor(self._kernel), inputs.dtype)
        return ops.depthwise_conv(padded, kernel, strides=self.stride, padding="valid")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        if self.stride == 1:
            return tuple(input_shape)

        def out(n):
            if n is None:
                return None
            n = n + self.pad_before + self.pad_after
            return (n - max(self.filt_size, 1)) // self.stride + 1

        return (batch, out(height), out(width), channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            filt_size=self.filt_size,
            stride=self.stride,
            pad_type=self.pad_type,
            pad_off=self.pad_off,
            channels=self.channels,
        )
        return config


# --------------------------------------------------------------------------------------------
# Placement helpers (BENCHMARK.md §4.2): lpf 0 keeps the strided layer; lpf >= 1 uses stride 1 and then a
# stride-2 BlurPool(lpf) right after it (before BN and ReLU). lpf 1 is stride 1 + subsampling.

LPF_CHOICES = (0, 1, 2, 3, 5, 7)


def check_lpf(lpf) -> int:
    """Validate ``lpf`` (0, 1, 2, 3, 5 or 7; 4 and 6 are accepted by the layer as well)."""
    if lpf not in FILTER_SIZES:
        raise ValueError(f"lpf: expected one of {LPF_CHOICES}, got {lpf!r}")
    return int(lpf)


# A 1x1 convolution with a linear activation commutes with BlurPool (both are linear; the conv mixes
# channels per pixel, the blur filters every channel alike with weights summing to 1, so a bias
# passes through). With REORDER_1X1 set, ``strided`` blurs *before* such a conv and runs the conv on
# the quarter-size map: the same values up to float rounding (tests/test_blurpool.py), a quarter
# of the conv's work (SENet's stride-2 1x1 reduce/projection convs). Off by default: BENCHMARK.md
# §4.2 places the blur right after the conv, and the model graph (and its saved config) follows
# that placement literally. bench/bench_blurpool.py times both (docs/SCALE.md §4).
REORDER_1X1 = False


def _commutes_with_blur(layer) -> bool:
    """A 1x1, undilated, ungrouped Conv2D with a linear activation."""
    if type(layer) is not layers.Conv2D:
        return False
    return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and getattr(layer, "groups", 1) == 1 and layer.activation in (keras.activations.linear, None))


def strided(layer_factory, x, lpf: int, name: str, stride: int = 2):
    """Apply ``layer_factory(strides)`` with ``stride`` (lpf 0) or stride 1 + BlurPool(lpf).

    ``layer_factory`` takes the stride and returns a layer; the BlurPool is named
    ``<name>_blurpool``. For a 1x1 linear conv the BlurPool goes first (see ``REORDER_1X1``).
    """
    if lpf == 0 or stride == 1:
        return layer_factory(stride)(x)
    layer = layer_factory(1)
    blur = BlurPool(filt_size=lpf, stride=stride, name=f"{name}_blurpool")
    if REORDER_1X1 and _commutes_with_blur(layer):
        return layer(blur(x))
    return blur(layer(x))
