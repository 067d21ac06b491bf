"""Training augmentations of the original (BENCHMARK.md §4.3, §4.5), on RGB uint8 images, without TensorFlow.

Every augmentation follows the original's three hooks around the cut (BENCHMARK.md §4.3):

1. ``before_cut(frame, roi)`` on the full frame (rotation and skew, greyscale),
2. ``augment_roi(roi)`` on the region of interest, which starts as the full frame (0, 0, W, H),
3. :func:`cut` with the ``exact`` rule (FIX) or the original's ``legacy99`` rule,
4. ``after_cut(image)`` on the cut image (contrast/brightness, flip, AutoAugment, random erasing).

The input pipeline resizes the result to the network input afterwards. The public entry point is
:func:`make_train_transform`, which returns a small picklable callable
``transform(image_uint8_rgb, rng) -> uint8 image`` for ``input_pipeline.make_dataset(augment=...)``.
Every random draw comes from the ``numpy.random.Generator`` passed in, so the output depends only
on the image and that generator (never on the global RNG, worker count or order).

Kinds (``--augmentation``):

- ``default``: rotation, skew, ROI jitter, contrast/brightness, flip (FAITHFUL, exact parameters).
- ``vggface2``: greyscale p=.2, 0.3 px margin (sic, FAITHFUL), random 224/256 sub-ROI, flip.
- ``autoaugment-rafdb``: one of the 249 two-op RAF-DB policies in
  ``data/rafdb_autoaugment_policies.json``, both ops always applied (FAITHFUL; ``honour_policy_prob``
  uses the probabilities). Colour ops run on RGB (FIX); ``colour="bgr-compat"`` runs them on BGR
  data treated as RGB, as the original did.
- ``randaugment`` (EXTEND): two ops drawn uniformly from the same 15 operations, each always
  applied, with a level drawn uniformly in [0, 1] per op (the random-magnitude variant of
  RandAugment). It is implemented here rather than with ``keras.layers.RandAugment`` because that
  layer, run inside tf.data, gave different results for the same seed in two processes (measured,
  Keras 3.15), which breaks the project's determinism rule.
- ``augmix`` (EXTEND, BENCHMARK.md §11.2): horizontal flip (p = .5), then AugMix: ``width`` (3)
  chains of ``depth`` (1–3 at random, or fixed) operations among autocontrast, equalize, posterize,
  rotate, solarize, shear_x/y, translate_x/y at ``severity`` 3, mixed with Dirichlet(1) weights
  and blended with the image by m ~ Beta(1, 1). :class:`AugMixViews` gives the three views
  (clean, AugMix 1, AugMix 2) of the Jensen–Shannon consistency loss (``robust_training.py``).
- ``no``: only the cut.

``cutout=True`` (``--cutout``) overrides the kind, as in the original: only random erasing
(p=.5, area U(.02,.15)·H·W, aspect U(.3, 1/.3), one fill value) after the cut (FIX: it works).

Overlap with the test corruptions (BENCHMARK.md §2): the contrast/brightness jitter of ``default`` and the
AutoAugment Contrast/Brightness ops resemble the ``contrast``/``brightness_*`` corruptions; the
Cutout/random-erasing boxes resemble nothing in RAF-DB-C. No augmentation adds noise or blur.
docs/AUGMENTATIONS.md has the full table of operations against corruptions.

Example::

    import numpy as np, augmentations
    transform = augmentations.make_train_transform("default", crop="exact")
    out = transform(image_rgb_uint8, np.random.default_rng(0))
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KINDS = ("default", "vggface2", "autoaugment-rafdb", "randaugment", "augmix", "no")
CROP_RULES = ("exact", "legacy99")
COLOURS = ("rgb", "bgr-compat")

POLICY_FILE = Path(__file__).resolve().parent / "data" / "rafdb_autoaugment_policies.json"
NUM_RAFDB_POLICIES = 249  # BENCHMARK.md §4.5

Roi = tuple  # (x, y, w, h), numbers (int or float)


# --------------------------------------------------------------------------------------------
# Helpers shared by the augmentations


def clipped_normal(rng: np.random.Generator, mean: float, max_change: float, size: int | None = None):
    """Nc(mean, m) = clip(N(mean, m/2), mean - m, mean + m) (BENCHMARK.md §4.5)."""
    values = rng.normal(mean, max_change / 2.0, size)
    return np.clip(values, mean - max_change, mean + max_change)


def roi_center(roi: Roi) -> tuple:
    """(x + w//2, y + h//2), the original's rotation centre."""
    x, y, w, h = roi
    return (x + w // 2, y + h // 2)


def enclosing_square(roi: Roi) -> Roi:
    """Grow the shorter side to the longer one, shifting its origin by -(long - short)//2."""
    x, y, w, h = roi
    if w > h:
        return (x, y - (w - h) // 2, w, w)
    return (x - (h - w) // 2, y, h, h)


def add_margin(roi: Roi, amount: float) -> Roi:
    """(x - a, y - a, w + 2a, h + 2a): the margin is in pixels."""
    x, y, w, h = roi
    return (x - amount, y - amount, w + 2 * amount, h + 2 * amount)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def cut(image: np.ndarray, roi: Roi, rule: str = "exact") -> np.ndarray:
    """The part of ``image`` inside ``roi`` = (x, y, w, h); outside the frame it is zero-padded.

    ``exact`` (FIX, default): origin round(x), round(y) and size round(w) × round(h) (half up), so
    ROI (0, 0, W, H) gives the whole frame. ``legacy99`` (the original): corners (int(x), int(y))
    and (int(x+w-1), int(y+h-1)) with the second one excluded, so a 100 px frame gives 99×99; a ROI
    that crosses the border is pasted into a zero image of int(h) × int(w) (BENCHMARK.md §4.3).
    """
    if rule not in CROP_RULES:
        raise ValueError(f"crop rule {rule!r}: expected one of {', '.join(CROP_RULES)}")
    height, width = image.shape[:2]
    x, y, w, h = (float(v) for v in roi)
    if rule == "exact":
        x0, y0 = _round_half_up(x), _round_half_up(y)
        out_w, out_h = _round_half_up(w), _round_half_up(h)
        if out_w <= 0 or out_h <= 0:
            raise ValueError(f"ROI {roi}: width and height must be at least 1 pixel")
        if x0 >= 0 and y0 >= 0 and x0 + out_w <= width and y0 + out_h <= height:
            return image[y0:y0 + out_h, x0:x0 + out_w].copy()
        out = np.zeros((out_h, out_w) + image.shape[2:], dtype=image.dtype)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + out_w, width), min(y0 + out_h, height)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        return out
    # legacy99, as the original's dataset_tools.cut
    ax, ay = int(x), int(y)
    bx, by = int(x + w - 1), int(y + h - 1)
    data = image[max(ay, 0):max(by, 0), max(ax, 0):max(bx, 0)]
    if bx < width and by < height and ax >= 0 and ay >= 0:
        return data.copy()
    out = np.zeros((int(h), int(w)) + image.shape[2:], dtype=image.dtype)
    off_x = int(-x) if x < 0 else 0
    off_y = int(-y) if y < 0 else 0
    # The original's np.copyto assumes the data fits; clip it so odd ROIs cannot crash.
    fit_h = max(0, min(data.shape[0], out.shape[0] - off_y))
    fit_w = max(0, min(data.shape[1], out.shape[1] - off_x))
    out[off_y:off_y + fit_h, off_x:off_x + fit_w] = data[:fit_h, :fit_w]
    return out


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Same-size affine warp, bilinear, constant-0 border (the original's cv2 defaults)."""
    height, width = image.shape[:2]
    out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(image.shape)


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal flip with p = .5."""
    return image[:, ::-1].copy() if rng.random() < 0.5 else image


# --------------------------------------------------------------------------------------------
# default (BENCHMARK.md §4.5)


def random_rotate(image: np.ndarray, roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Rotate by Nc(0, 10) degrees about the ROI centre."""
    angle = float(clipped_normal(rng, 0.0, 10.0))
    matrix = cv2.getRotationMatrix2D(tuple(float(c) for c in roi_center(roi)), angle, 1.0)
    return _warp(image, matrix)


def random_skew(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Warp with [[1, s0, 1], [s1, 1, 1]], s = |Nc(0, 0.1)|: a shear plus a 1 px shift."""
    s0, s1 = np.abs(clipped_normal(rng, 0.0, 0.1, 2))
    return _warp(image, np.array([[1.0, s0, 1.0], [s1, 1.0, 1.0]]))


def random_change_roi(roi: Roi, rng: np.random.Generator, max_change_fraction: float = 0.045) -> Roi:
    """ROI jitter: σ = .045·h; dx, dy = int(Nc(-σ/5, σ)); dw, dh = int(Nc(σ/2, 2σ))."""
    x, y, w, h = roi
    sigma = h * max_change_fraction
    dx, dy = clipped_normal(rng, -sigma / 5.0, sigma, 2).astype(int)
    dw, dh = clipped_normal(rng, sigma / 2.0, 2.0 * sigma, 2).astype(int)
    return (x + int(dx), y + int(dy), w - int(dw), h - int(dh))


def random_contrast_brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """clip((img - 128)·a + 128 + b, 0, 255), a = Nc(1, .5), b = Nc(0, 48), truncated to uint8."""
    a = float(clipped_normal(rng, 1.0, 0.5))
    b = float(clipped_normal(rng, 0.0, 48.0))
    out = (image.astype(np.float64) - 128.0) * a + 128.0 + b
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# vggface2 (BENCHMARK.md §4.5)


def random_monochrome(image: np.ndarray, rng: np.random.Generator, probability: float = 0.2) -> np.ndarray:
    """Greyscale (ITU-R 601 luma), replicated to 3 channels, with p = .2."""
    if rng.random() < probability:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return image


def random_fixed_size_roi(roi: Roi, rng: np.random.Generator, original: int = 256, target: int = 224) -> Roi:
    """Sub-ROI of size (224/256)·(w, h) at offsets randint(0, 32) (inclusive) scaled by w/256, h/256."""
    x, y, w, h = roi
    off_x, off_y = rng.integers(0, original - target, size=2, endpoint=True)
    return (x + off_x * w / original, y + off_y * h / original, target * w / original, target * h / original)


# --------------------------------------------------------------------------------------------
# AutoAugment operations (BENCHMARK.md §4.5): PIL, NEAREST resampling, black fill.

# (low, high) of each operation's value; level in [0, 1] maps to level·(high - low) + low.
OP_RANGES = {
    "ShearX": (-0.3, 0.3),
    "ShearY": (-0.3, 0.3),
    "TranslateX": (-0.45, 0.45),  # × width, in px
    "TranslateY": (-0.45, 0.45),  # × height, in px
    "Rotate": (-30.0, 30.0),  # degrees
    "Solarize": (0.0, 256.0),
    "Posterize": (4.0, 8.0),  # bits, int
    "Contrast": (0.1, 1.9),
    "Color": (0.1, 1.9),
    "Brightness": (0.1, 1.9),
    "Sharpness": (0.1, 1.9),
    "Cutout": (0.0, 0.2),  # × width
    "AutoContrast": (0.0, 0.0),
    "Invert": (0.0, 0.0),
    "Equalize": (0.0, 0.0),
}
SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
CUTOUT_FILL = (125, 123, 114)


def op_value(op: str, level: float, width: int = 1, height: int = 1) -> float:
    """The value of ``op`` at ``level``: level·(high - low) + low, before any random sign flip."""
    if op not in OP_RANGES:
        raise ValueError(f"unknown AutoAugment operation {op!r}: expected one of {', '.join(OP_RANGES)}")
    low, high = OP_RANGES[op]
    value = level * (high - low) + low
    if op == "TranslateX" or op == "Cutout":
        value *= width
    elif op == "TranslateY":
        value *= height
    elif op == "Posterize":
        value = int(value)
    return value


def _affine(img: Image.Image, coefficients: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coefficients, resample=Image.NEAREST, fillcolor=(0, 0, 0))


def apply_op(image: np.ndarray, op: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Apply one AutoAugment operation to an RGB uint8 image (random sign for geometric ops)."""
    height, width = image.shape[:2]
    value = op_value(op, level, width, height)
    if op in SIGNED_OPS and rng.random() < 0.5:
        value = -value
    if op == "Cutout":
        return _cutout_square(image, value, rng)
    img = Image.fromarray(image)
    if op == "ShearX":
        img = _affine(img, (1, value, 0, 0, 1, 0))
    elif op == "ShearY":
        img = _affine(img, (1, 0, 0, value, 1, 0))
    elif op == "TranslateX":
        img = _affine(img, (1, 0, value, 0, 1, 0))
    elif op == "TranslateY":
        img = _affine(img, (1, 0, 0, 0, 1, value))
    elif op == "Rotate":
        img = img.rotate(value, resample=Image.NEAREST, fillcolor=(0, 0, 0))
    elif op == "Solarize":
        img = ImageOps.solarize(img, value)
    elif op == "Posterize":
        img = ImageOps.posterize(img, value)
    elif op == "Contrast":
        img = ImageEnhance.Contrast(img).enhance(value)
    elif op == "Color":
        img = ImageEnhance.Color(img).enhance(value)
    elif op == "Brightness":
        img = ImageEnhance.Brightness(img).enhance(value)
    elif op == "Sharpness":
        img = ImageEnhance.Sharpness(img).enhance(value)
    elif op == "AutoContrast":
        img = ImageOps.autocontrast(img)
    elif op == "Invert":
        img = ImageOps.invert(img)
    elif op == "Equalize":
        img = ImageOps.equalize(img)
    return np.asarray(img, dtype=np.uint8).copy()


def _cutout_square(image: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """A size×size square of (125,123,114) centred at a uniform random point, clipped to the image."""
    height, width = image.shape[:2]
    center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
    if size <= 0:
        return image
    x0, y0 = int(max(0.0, center_x - size / 2)), int(max(0.0, center_y - size / 2))
    x1, y1 = int(min(width, center_x + size / 2)), int(min(height, center_y + size / 2))
    out = image.copy()
    out[y0:y1, x0:x1] = CUTOUT_FILL
    return out


@functools.lru_cache(maxsize=1)
def load_policies(path: str | None = None) -> tuple:
    """The 249 RAF-DB AutoAugment policies: a tuple of ((op, probability, level), (op, p, level))."""
    source = Path(path) if path else POLICY_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{source}: cannot read the AutoAugment policies ({error})") from error
    policies = []
    for index, policy in enumerate(data["policies"]):
        ops = []
        for entry in policy:
            op, probability, level = entry
            if op not in OP_RANGES:
                raise ValueError(f"{source}: policy {index}: unknown operation {op!r}")
            ops.append((str(op), float(probability), float(level)))
        policies.append(tuple(ops))
    return tuple(policies)


def apply_policy(image: np.ndarray, policy: Sequence, rng: np.random.Generator, *,
                 honour_prob: bool = False, bgr_compat: bool = False) -> np.ndarray:
    """Apply every op of ``policy`` in order; with ``honour_prob`` each only with its probability.

    ``bgr_compat`` runs the ops on the channel-reversed image (the original's BGR data handed to
    PIL as RGB), so Color/Contrast use swapped luma weights and the Cutout fill is swapped.
    """
    out = image[:, :, ::-1].copy() if bgr_compat else image
    for op, probability, level in policy:
        if honour_prob and not rng.random() < probability:
            continue
        out = apply_op(out, op, level, rng)
    return out[:, :, ::-1].copy() if bgr_compat else out


# --------------------------------------------------------------------------------------------
# Random erasing (--cutout; BENCHMARK.md §4.5)


def random_erasing(image: np.ndarray, rng: np.random.Generator, probability: float = 0.5,
                   area_range: tuple = (0.02, 0.15), aspect_range: tuple = (0.3, 1 / 0.3)) -> np.ndarray:
    """With p = .5 erase one box (area U(.02,.15)·H·W, aspect U(.3,1/.3)) with a single value U(0,255)."""
    height, width = image.shape[:2]
    if rng.random() > probability:
        return image
    while True:
        area = rng.uniform(*area_range) * height * width
        aspect = rng.uniform(*aspect_range)
        box_w, box_h = int(math.sqrt(area / aspect)), int(math.sqrt(area * aspect))
        left, top = int(rng.integers(0, width)), int(rng.integers(0, height))
        if left + box_w <= width and top + box_h <= height:
            break
    out = image.copy()
    out[top:top + box_h, left:left + box_w] = np.uint8(int(rng.uniform(0, 255)))
    return out


# --------------------------------------------------------------------------------------------
# The transform handed to the input pipeline


class TrainTransform:
    """``transform(image_uint8_rgb_full_frame, rng) -> uint8 cut image``; picklable."""

    def __init__(self, kind: str = "default", *, crop: str = "exact", colour: str = "rgb",
                 cutout: bool = False, honour_policy_prob: bool = False, augmix_width: int = 3,
                 augmix_depth: int = -1, augmix_severity: float = 3):
        if kind not in KINDS:
            raise ValueError(f"augmentation {kind!r}: expected one of {', '.join(KINDS)}")
        if crop not in CROP_RULES:
            raise ValueError(f"crop rule {crop!r}: expected one of {', '.join(CROP_RULES)}")
        if colour not in COLOURS:
            raise ValueError(f"colour {colour!r}: expected one of {', '.join(COLOURS)}")
        self.kind = kind
        self.crop = crop
        self.colour = colour
        self.cutout = bool(cutout)
        self.honour_policy_prob = bool(honour_policy_prob)
        check_augmix_params(augmix_width, augmix_depth, augmix_severity)
        self.augmix_params = (int(augmix_width), int(augmix_depth), float(augmix_severity))
        if kind == "autoaugment-rafdb" and not cutout:
            load_policies()  # fail early on a missing or broken policy file

    def __repr__(self) -> str:
        return (f"TrainTransform({self.kind!r}, crop={self.crop!r}, colour={self.colour!r}, "
                f"cutout={self.cutout}, honour_policy_prob={self.honour_policy_prob}, "
                f"augmix_params={self.augmix_params})")

    @property
    def effective_kind(self) -> str:
        """``cutout`` when random erasing overrides the augmentation, else the kind."""
        return "cutout" if self.cutout else self.kind

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        kind = self.effective_kind
        height, width = image.shape[:2]
        roi: Roi = (0, 0, width, height)
        # (2) before_cut, (3) augment_roi
        if kind == "default":
            image = random_rotate(image, roi, rng)
            image = random_skew(image, rng)
            roi = enclosing_square(random_change_roi(roi, rng))
        elif kind == "vggface2":
            image = random_monochrome(image, rng)
            roi = random_fixed_size_roi(add_margin(roi, 0.3), rng)
        # (4) cut
        image = cut(image, roi, self.crop)
        # (5) after_cut
        if kind == "default":
            image = random_contrast_brightness(image, rng)
            image = random_flip(image, rng)
        elif kind == "vggface2":
            image = random_flip(image, rng)
        elif kind == "autoaugment-rafdb":
            policies = load_policies()
            policy = policies[int(rng.integers(0, len(policies)))]
            image = apply_policy(image, policy, rng, honour_prob=self.honour_policy_prob,
                                 bgr_compat=self.colour == "bgr-compat")
        elif kind == "randaugment":
            ops = list(OP_RANGES)
            policy = [(ops[int(rng.integers(0, len(ops)))], 1.0, float(rng.uniform(0.0, 1.0))) for _ in range(2)]
            image = apply_policy(image, policy, rng, bgr_compat=self.colour == "bgr-compat")
        elif kind == "augmix":
            image = augmix(random_flip(image, rng), rng, *self.augmix_params)
        elif kind == "cutout":
            image = random_erasing(image, rng)
        return np.ascontiguousarray(image, dtype=np.uint8)


def make_train_transform(kind: str = "default", *, crop: str = "exact", colour: str = "rgb",
                         cutout: bool = False, honour_policy_prob: bool = False, augmix_width: int = 3,
                         augmix_depth: int = -1, augmix_severity: float = 3) -> TrainTransform:
    """The training transform for ``--augmentation kind`` (see the module docstring)."""
    return TrainTransform(kind, crop=crop, colour=colour, cutout=cutout, honour_policy_prob=honour_policy_prob,
                          augmix_width=augmix_width, augmix_depth=augmix_depth, augmix_severity=augmix_severity)


# --------------------------------------------------------------------------------------------
# AugMix (EXTEND; BENCHMARK.md §11.2): OpenCV/numpy on uint8, every draw from the generator.
#
# Each operation is ``op(image, fraction, rng) -> image`` with ``fraction`` = level/10 in
# (0, severity/10]: the level of every application is drawn as U(0.1, severity) (the AugMix
# paper's convention, on a 0..10 scale). None of the operations is a benchmark corruption (no
# blur, noise, contrast/brightness change, pixelation or compression), see docs/AUGMENTATIONS.md.

AUGMIX_WIDTH = 3
AUGMIX_DEPTH = -1  # -1: each chain draws its depth uniformly from 1..3
AUGMIX_SEVERITY = 3
AUGMIX_MAX_DEPTH = 3


def _random_sign(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _warp_inverse(image: np.ndarray, matrix) -> np.ndarray:
    """Same-size affine warp where ``matrix`` maps output to input coordinates (PIL's convention):
    bilinear, black outside the frame."""
    height, width = image.shape[:2]
    out = cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (width, height),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(image.shape)


_IDENTITY = np.arange(256, dtype=np.float64)


def _apply_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Apply one 256-entry uint8 table per channel (``luts`` has shape (channels, 256)) with cv2.LUT."""
    table = np.ascontiguousarray(np.asarray(luts, dtype=np.uint8).T[None])  # (1, 256, channels)
    return cv2.LUT(np.ascontiguousarray(image), table).reshape(image.shape)


def autocontrast(image: np.ndarray, fraction: float = 0.0, rng=None) -> np.ndarray:
    """Stretch each channel linearly so that its darkest value becomes 0 and its brightest 255
    (truncated); a constant channel is left unchanged."""
    luts = np.empty((image.shape[2], 256), dtype=np.uint8)
    for c, channel in enumerate(cv2.split(np.ascontiguousarray(image))):
        lo, hi = cv2.minMaxLoc(channel)[:2]
        if hi <= lo:
            luts[c] = _IDENTITY.astype(np.uint8)
        else:
            luts[c] = np.clip((_IDENTITY - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)
    return _apply_luts(image, luts)


def equalize(image: np.ndarray, fraction: float = 0.0, rng=None) -> np.ndarray:
    """Histogram equalisation of each channel separately (``cv2.equalizeHist``)."""
    return cv2.merge([cv2.equalizeHist(channel) for channel in cv2.split(np.ascontiguousarray(image))])


def posterize(image: np.ndarray, fraction: float, rng=None) -> np.ndarray:
    """Keep the 4 - int(4·fraction) most significant bits of every value (at least 1)."""
    bits = max(1, 4 - int(4 * fraction))
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return np.bitwise_and(image, mask)


def solarize(image: np.ndarray, fraction: float, rng=None) -> np.ndarray:
    """Invert (255 - v) every value v >= 256 - int(256·fraction)."""
    threshold = 256 - int(256 * fraction)
    lut = np.where(_IDENTITY >= threshold, 255 - _IDENTITY, _IDENTITY)
    return _apply_luts(image, np.repeat(lut[None], image.shape[2], axis=0))


def rotate(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate by ±int(30·fraction) degrees (sign p = .5) about the image centre, counter-clockwise
    for positive angles; bilinear, black corners."""
    angle = _random_sign(float(int(30 * fraction)), rng)
    height, width = image.shape[:2]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)  # input -> output
    return _warp_inverse(image, cv2.invertAffineTransform(matrix))


def shear_x(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Output (x, y) takes input (x + s·y, y), s = ±0.3·fraction."""
    s = _random_sign(0.3 * fraction, rng)
    return _warp_inverse(image, [[1.0, s, 0.0], [0.0, 1.0, 0.0]])


def shear_y(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Output (x, y) takes input (x, y + s·x), s = ±0.3·fraction."""
    s = _random_sign(0.3 * fraction, rng)
    return _warp_inverse(image, [[1.0, 0.0, 0.0], [s, 1.0, 0.0]])


def translate_x(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Output (x, y) takes input (x + t, y), t = ±int(fraction·W/3) pixels; black fill."""
    t = _random_sign(float(int(fraction * image.shape[1] / 3)), rng)
    return _warp_inverse(image, [[1.0, 0.0, t], [0.0, 1.0, 0.0]])


def translate_y(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Output (x, y) takes input (x, y + t), t = ±int(fraction·H/3) pixels; black fill."""
    t = _random_sign(float(int(fraction * image.shape[0] / 3)), rng)
    return _warp_inverse(image, [[1.0, 0.0, 0.0], [0.0, 1.0, t]])


AUGMIX_OPS = {op.__name__: op for op in (autocontrast, equalize, posterize, rotate, solarize,
                                         shear_x, shear_y, translate_x, translate_y)}


def check_augmix_params(width: int, depth: int, severity: float) -> None:
    """ValueError unless width >= 1, depth is -1 or 1..3 and 0.1 < severity <= 10."""
    if int(width) != width or width < 1:
        raise ValueError(f"AugMix width {width}: expected an integer >= 1")
    if depth != -1 and not (1 <= depth <= AUGMIX_MAX_DEPTH and int(depth) == depth):
        raise ValueError(f"AugMix depth {depth}: expected -1 (random 1..{AUGMIX_MAX_DEPTH}) "
                         f"or 1..{AUGMIX_MAX_DEPTH}")
    if not 0.1 < severity <= 10:
        raise ValueError(f"AugMix severity {severity}: expected a number in (0.1, 10]")


def augmix_chain(image: np.ndarray, rng: np.random.Generator, depth: int = AUGMIX_DEPTH,
                 severity: float = AUGMIX_SEVERITY) -> np.ndarray:
    """One chain: ``depth`` (or U{1..3} when -1) operations drawn uniformly with replacement, each
    at a level U(0.1, severity) on the 0..10 scale."""
    names = tuple(AUGMIX_OPS)
    steps = int(rng.integers(1, AUGMIX_MAX_DEPTH, endpoint=True)) if depth == -1 else int(depth)
    out = image
    for _ in range(steps):
        op = AUGMIX_OPS[names[int(rng.integers(0, len(names)))]]
        fraction = float(rng.uniform(0.1, severity)) / 10.0
        out = op(out, fraction, rng)
    return out


def mix(image: np.ndarray, chains: Sequence[np.ndarray], weights, skip: float) -> np.ndarray:
    """(1 - skip)·image + skip·Σ_i weights_i·chains_i, rounded to uint8."""
    mixed = np.zeros(image.shape, dtype=np.float32)
    for weight, chain in zip(weights, chains):
        mixed += np.float32(weight) * chain.astype(np.float32)
    out = np.float32(1.0 - skip) * image.astype(np.float32) + np.float32(skip) * mixed
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augmix(image: np.ndarray, rng: np.random.Generator, width: int = AUGMIX_WIDTH, depth: int = AUGMIX_DEPTH,
           severity: float = AUGMIX_SEVERITY) -> np.ndarray:
    """AugMix of one RGB uint8 image: ``width`` chains mixed with Dirichlet(1, …, 1) weights, then
    blended with the original by m ~ Beta(1, 1) (BENCHMARK.md §11.2)."""
    weights = rng.dirichlet(np.ones(int(width)))
    skip = float(rng.beta(1.0, 1.0))
    chains = [augmix_chain(image, rng, depth, severity) for _ in range(int(width))]
    return mix(image, chains, weights, skip)


def _as_generator(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.Generator(np.random.PCG64(int(seed_or_rng) & 0xFFFFFFFFFFFFFFFF))


class AugMixViews:
    """``views(image_uint8_rgb_full_frame, rng) -> (clean, aug1, aug2)``, three uint8 images; picklable.

    The clean view is the cut image with a horizontal flip (p = .5); both AugMix views start from
    that same clean view, as in the AugMix paper. Used with ``--jsd``.
    """

    def __init__(self, *, crop: str = "exact", width: int = AUGMIX_WIDTH, depth: int = AUGMIX_DEPTH,
                 severity: float = AUGMIX_SEVERITY):
        if crop not in CROP_RULES:
            raise ValueError(f"crop rule {crop!r}: expected one of {', '.join(CROP_RULES)}")
        check_augmix_params(width, depth, severity)
        self.crop, self.width, self.depth, self.severity = crop, int(width), int(depth), float(severity)

    def __repr__(self) -> str:
        return (f"AugMixViews(crop={self.crop!r}, width={self.width}, depth={self.depth}, "
                f"severity={self.severity})")

    def clean(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        height, width = image.shape[:2]
        return np.ascontiguousarray(random_flip(cut(image, (0, 0, width, height), self.crop), rng))

    def __call__(self, image: np.ndarray, rng) -> tuple:
        rng = _as_generator(rng)
        clean = self.clean(image, rng)
        return (clean, augmix(clean, rng, self.width, self.depth, self.severity),
                augmix(clean, rng, self.width, self.depth, self.severity))


def augmix_views(image: np.ndarray, seed, *, crop: str = "exact", width: int = AUGMIX_WIDTH,
                 depth: int = AUGMIX_DEPTH, severity: float = AUGMIX_SEVERITY) -> tuple:
    """(clean, aug1, aug2) of one image from an integer seed or a ``numpy.random.Generator``."""
    return AugMixViews(crop=crop, width=width, depth=depth, severity=severity)(image, seed)


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 H×W×3 image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
