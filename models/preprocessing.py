"""The original's preprocessing modes (BENCHMARK.md §4.4), as Keras layers and as a numpy/OpenCV function.

The layers are a model's first layers, so a checkpoint is self-describing: the model takes raw RGB
floats in 0..255. :func:`preprocess_numpy` computes the same modes with numpy and OpenCV, for
third-party checkpoints that have no preprocessing inside; the tests check that both agree.

Modes (``PREPROCESSING_MODES``):

- ``full_normalization`` (FAITHFUL): (1) luma histogram equalisation on uint8 YUV; (2) illumination
  flattening: a least-squares plane fitted to the 16x16 bilinear-resized float Y, centred and
  subtracted from Y; (3) per-image per-channel z-score, std floored at 0.001, skipped when
  max - min < 1.
- ``vggface2``: subtract VGGFace2's channel means, R 131.0912, G 103.8827, B 91.4953 (FIX;
  ``mean_order="legacy-swapped"`` subtracts them from B, G, R as the original did).
- ``z_normalization``: ImageNet mean/std x 255, RGB (FIX; ``colour="bgr-compat"`` applies the RGB
  constants to the channels in reverse order, as the original did on BGR images).
- ``no``: raw pixels. ``scale01``: x / 255. ``scale-1-1``: x / 127.5 - 1 (e.g. FER2013 models).
"""

from __future__ import annotations

import logging

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers

LOG = logging.getLogger("fer")

PREPROCESSING_MODES = ("full_normalization", "vggface2", "z_normalization", "no", "scale01", "scale-1-1")
MEAN_ORDERS = ("correct", "legacy-swapped")
COLOURS = ("rgb", "bgr-compat")

# VGGFace2 training-set means of R, G, B (keras-vggface v2 preprocessing; BENCHMARK.md §4.4).
VGGFACE2_MEAN_RGB = (131.0912, 103.8827, 91.4953)
# ImageNet statistics of R, G, B in [0, 1] (torchvision / BENCHMARK.md §4.4), scaled by 255 when used.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# full_normalization constants (BENCHMARK.md §4.4).
PLANE_GRID = 16  # Y is resized to 16x16 for the plane fit
STD_FLOOR = 0.001
MIN_RANGE = 1.0  # max - min below this: the z-score step is skipped

# OpenCV's RGB<->YUV coefficients (imgproc color_yuv): Y = .299R + .587G + .114B,
# U = .492 (B - Y) + delta, V = .877 (R - Y) + delta; back: R = Y + 1.140 (V - delta),
# G = Y - .395 (U - delta) - .581 (V - delta), B = Y + 2.032 (U - delta).
# delta is 128 for uint8 and 0.5 for float32. uint8 uses 14-bit fixed point with rounding.
_R2Y, _G2Y, _B2Y, _B2U, _R2V = 0.299, 0.587, 0.114, 0.492, 0.877
_U2B, _U2G, _V2G, _V2R = 2.032, -0.395, -0.581, 1.140
_SHIFT = 14
_FIXED = {name: int(round(value * (1 << _SHIFT))) for name, value in dict(
    R2Y=_R2Y, G2Y=_G2Y, B2Y=_B2Y, B2U=_B2U, R2V=_R2V, U2B=_U2B, U2G=_U2G, V2G=_V2G, V2R=_V2R).items()}


def check_mode(mode: str, mean_order: str = "correct", colour: str = "rgb") -> None:
    """Raise ValueError naming the valid choices when a preprocessing argument is unknown."""
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing: expected one of {', '.join(PREPROCESSING_MODES)}, got {mode!r}")
    if mean_order not in MEAN_ORDERS:
        raise ValueError(f"mean_order: expected one of {', '.join(MEAN_ORDERS)}, got {mean_order!r}")
    if colour not in COLOURS:
        raise ValueError(f"colour: expected one of {', '.join(COLOURS)}, got {colour!r}")


def vggface2_means(mean_order: str = "correct") -> np.ndarray:
    """Per-channel means to subtract from an RGB image (legacy-swapped: the original's B,G,R use)."""
    means = np.array(VGGFACE2_MEAN_RGB, dtype=np.float32)
    return means if mean_order == "correct" else means[::-1].copy()


def znorm_constants(colour: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) x 255 per channel of an RGB image (bgr-compat: the original's reversed use)."""
    mean = np.array(IMAGENET_MEAN_RGB, dtype=np.float32) * 255.0
    std = np.array(IMAGENET_STD_RGB, dtype=np.float32) * 255.0
    if colour == "bgr-compat":
        return mean[::-1].copy(), std[::-1].copy()
    return mean, std


def plane_pseudo_inverse(grid: int = PLANE_GRID) -> np.ndarray:
    """(3, grid*grid) pseudo-inverse of the design matrix [v, u, 1] (v rows, u columns in [0,1])."""
    v, u = np.meshgrid(np.linspace(0.0, 1.0, grid), np.linspace(0.0, 1.0, grid), indexing="ij")
    design = np.stack([v.ravel(), u.ravel(), np.ones(grid * grid)], axis=1)
    return np.linalg.pinv(design)


# --------------------------------------------------------------------------------------------
# Keras layers (TensorFlow ops). Input: float RGB 0..255, NHWC.


@keras.saving.register_keras_serializable(package="fer")
class FullNormalization(layers.Layer):
    """The original's full_normalization: luma equalisation, plane flattening, per-channel z-score."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pinv = plane_pseudo_inverse().astype(np.float32)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    @staticmethod
    def _equalize(luma):
        """cv2.equalizeHist on int32 [B, H, W] values 0..255."""
        batch = tf.shape(luma)[0]
        flat = tf.reshape(luma, [batch, -1])
        total = tf.cast(tf.shape(flat)[1], tf.float32)
        hist = tf.math.bincount(flat, minlength=256, maxlength=256, axis=-1)
        cdf = tf.cumsum(hist, axis=-1)
        # the count of the first non-empty bin (cdf is non-decreasing: its smallest positive value)
        first = tf.reduce_min(tf.where(cdf > 0, cdf, tf.int32.max), axis=-1, keepdims=True)
        first_f = tf.cast(first, tf.float32)
        denominator = tf.maximum(total - first_f, 1.0)
        scale = tf.constant(255.0, tf.float32) / denominator
        lut = tf.clip_by_value(tf.round(tf.cast(cdf - first, tf.float32) * scale), 0.0, 255.0)
        # constant image: OpenCV maps everything to the single level present
        level = tf.argmax(tf.cast(hist > 0, tf.int32), axis=-1, output_type=tf.int32)[:, None]
        constant = tf.equal(first_f, total)
        lut = tf.where(constant, tf.cast(tf.broadcast_to(level, tf.shape(lut)), tf.float32), lut)
        lut = tf.cast(lut, tf.int32)
        return tf.reshape(tf.gather(lut, flat, batch_dims=1), tf.shape(luma))

    def _equalize_luma(self, images):
        """Step 1 on RGB (or grey) values rounded into uint8; returns float32 RGB 0..255."""
        pixels = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.int32)
        if pixels.shape[-1] == 1:
            return tf.cast(self._equalize(pixels[..., 0])[..., None], tf.float32)
        half = 1 << (_SHIFT - 1)
        c = _FIXED
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        luma = tf.bitwise.right_shift(red * c["R2Y"] + green * c["G2Y"] + blue * c["B2Y"] + half, _SHIFT)
        chroma_u = tf.clip_by_value(
            tf.bitwise.right_shift((blue - luma) * c["B2U"] + (128 << _SHIFT) + half, _SHIFT), 0, 255) - 128
        chroma_v = tf.clip_by_value(
            tf.bitwise.right_shift((red - luma) * c["R2V"] + (128 << _SHIFT) + half, _SHIFT), 0, 255) - 128
        luma = self._equalize(luma)
        red = luma + tf.bitwise.right_shift(chroma_v * c["V2R"] + half, _SHIFT)
        green = luma + tf.bitwise.right_shift(chroma_u * c["U2G"] + chroma_v * c["V2G"] + half, _SHIFT)
        blue = luma + tf.bitwise.right_shift(chroma_u * c["U2B"] + half, _SHIFT)
        rgb = tf.clip_by_value(tf.stack([red, green, blue], axis=-1), 0, 255)
        return tf.cast(rgb, tf.float32)

    def _flatten_illumination(self, images):
        """Step 2 on float32 RGB (or grey), through OpenCV's float YUV codes (delta 0.5)."""
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        if images.shape[-1] == 1:
            luma = images[..., 0]
        else:
            red, green, blue = images[..., 0], images[..., 1], images[..., 2]
            luma = _R2Y * red + _G2Y * green + _B2Y * blue
            chroma_u = (blue - luma) * _B2U  # minus delta already: (U - 0.5)
            chroma_v = (red - luma) * _R2V
        small = tf.image.resize(luma[..., None], (PLANE_GRID, PLANE_GRID), method="bilinear", antialias=False)
        small = tf.reshape(small, [-1, PLANE_GRID * PLANE_GRID])
        coefficients = tf.matmul(small, tf.constant(self._pinv.T))  # [B, 3]: a (rows), b (columns), c
        rows = tf.cast(tf.range(height), tf.float32) / tf.cast(height, tf.float32)
        cols = tf.cast(tf.range(width), tf.float32) / tf.cast(width, tf.float32)
        a, b = coefficients[:, 0, None, None], coefficients[:, 1, None, None]
        plane = a * rows[None, :, None] + b * cols[None, None, :]  # the constant c cancels out
        plane = plane - tf.reduce_mean(plane, axis=[1, 2], keepdims=True)
        luma = luma - plane
        if images.shape[-1] == 1:
            return luma[..., None]
        red = luma + _V2R * chroma_v
        green = luma + _U2G * chroma_u + _V2G * chroma_v
        blue = luma + _U2B * chroma_u
        return tf.stack([red, green, blue], axis=-1)

    @staticmethod
    def _zscore(images):
        """Step 3: per-image per-channel z-score (std >= 0.001), skipped when max - min < 1."""
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        std = tf.maximum(tf.math.reduce_std(images, axis=[1, 2], keepdims=True), STD_FLOOR)
        spread = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True) - tf.reduce_min(
            images, axis=[1, 2, 3], keepdims=True)
        return tf.where(spread < MIN_RANGE, images, (images - mean) / std)

    def call(self, inputs):
        images = tf.cast(inputs, tf.float32)
        images = self._equalize_luma(images)
        images = self._flatten_illumination(images)
        return tf.cast(self._zscore(images), self.compute_dtype)


@keras.saving.register_keras_serializable(package="fer")
class VGGFace2Mean(layers.Layer):
    """Subtract VGGFace2's channel means from RGB input (mean_order 'correct' or 'legacy-swapped')."""

    def __init__(self, mean_order="correct", **kwargs):
        super().__init__(**kwargs)
        check_mode("vggface2", mean_order=mean_order)
        self.mean_order = mean_order

    def call(self, inputs):
        return inputs - keras.ops.cast(vggface2_means(self.mean_order), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mean_order": self.mean_order}


@keras.saving.register_keras_serializable(package="fer")
class ZNormalization(layers.Layer):
    """(x - 255 * ImageNet mean) / (255 * ImageNet std), RGB ('rgb') or the original's 'bgr-compat'."""

    def __init__(self, colour="rgb", **kwargs):
        super().__init__(**kwargs)
        check_mode("z_normalization", colour=colour)
        self.colour = colour

    def call(self, inputs):
        mean, std = znorm_constants(self.colour)
        return (inputs - keras.ops.cast(mean, inputs.dtype)) / keras.ops.cast(std, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "colour": self.colour}


@keras.saving.register_keras_serializable(package="fer")
class ChannelFlip(layers.Layer):
    """Reverse the channel axis (RGB -> BGR), for backbones whose weights expect BGR."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def preprocessing_layers(mode: str, channels: int = 3, mean_order: str = "correct", colour: str = "rgb"):
    """The Keras layers (possibly none) that implement ``mode`` on raw RGB floats 0..255."""
    check_mode(mode, mean_order, colour)
    if mode in ("vggface2", "z_normalization") and channels != 3:
        raise ValueError(f"preprocessing {mode!r} needs 3 channels, got {channels}")
    if mode == "full_normalization":
        return [FullNormalization(name="full_normalization")]
    if mode == "vggface2":
        return [VGGFace2Mean(mean_order=mean_order, name="vggface2_mean")]
    if mode == "z_normalization":
        return [ZNormalization(colour=colour, name="z_normalization")]
    if mode == "scale01":
        return [layers.Rescaling(1.0 / 255.0, name="scale01")]
    if mode == "scale-1-1":
        return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_minus1_1")]
    return []


# --------------------------------------------------------------------------------------------
# numpy / OpenCV implementation of the same modes.


def _full_normalization_one(image: np.ndarray) -> np.ndarray:
    """full_normalization of one float RGB (or grey) image 0..255 with OpenCV, as the original."""
    grey = image.shape[-1] == 1
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if grey:
        equalised = cv2.equalizeHist(pixels[..., 0])[..., None]
    else:
        yuv = cv2.cvtColor(pixels, cv2.COLOR_RGB2YUV)
        yuv[..., 0] = cv2.equalizeHist(yuv[..., 0])
        equalised = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
    values = equalised.astype(np.float32)
    yuv = values.copy() if grey else cv2.cvtColor(values, cv2.COLOR_RGB2YUV)
    height, width = yuv.shape[:2]
    small = cv2.resize(np.ascontiguousarray(yuv[..., 0]), (PLANE_GRID, PLANE_GRID), interpolation=cv2.INTER_LINEAR)
    a, b, c = plane_pseudo_inverse() @ small.astype(np.float64).ravel()
    rows = np.arange(height)[:, None] / height
    cols = np.arange(width)[None, :] / width
    plane = a * rows + b * cols + c
    yuv[..., 0] = yuv[..., 0] - plane + plane.mean()
    values = yuv if grey else cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)
    spread = float(values.max() - values.min())
    if spread < MIN_RANGE:
        LOG.warning("full_normalization: image range %.3g < %g, z-score skipped", spread, MIN_RANGE)
        return values.astype(np.float32)
    mean = values.mean(axis=(0, 1), keepdims=True)
    std = np.maximum(values.std(axis=(0, 1), keepdims=True), STD_FLOOR)
    return ((values - mean) / std).astype(np.float32)


def preprocess_numpy(images_float_rgb, mode: str, mean_order: str = "correct", colour: str = "rgb") -> np.ndarray:
    """Apply preprocessing ``mode`` to float RGB images 0..255, (H, W, C) or (N, H, W, C)."""
    check_mode(mode, mean_order, colour)
    images = np.asarray(images_float_rgb, dtype=np.float32)
    if images.ndim not in (3, 4) or images.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected (H, W, C) or (N, H, W, C) with C 1 or 3, got shape {images.shape}")
    channels = images.shape[-1]
    if mode in ("vggface2", "z_normalization") and channels != 3:
        raise ValueError(f"preprocessing {mode!r} needs 3 channels, got {channels}")
    if mode == "full_normalization":
        if images.ndim == 3:
            return _full_normalization_one(images)
        return np.stack([_full_normalization_one(image) for image in images]) if len(images) else images.copy()
    if mode == "vggface2":
        return images - vggface2_means(mean_order)
    if mode == "z_normalization":
        mean, std = znorm_constants(colour)
        return (images - mean) / std
    if mode == "scale01":
        return images / np.float32(255.0)
    if mode == "scale-1-1":
        return images / np.float32(127.5) - np.float32(1.0)
    return images.copy()
