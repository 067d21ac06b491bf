"""A slow, straightforward reference of the 18 RAF-DB-C corruptions, written from BENCHMARK.md §2.3-2.6
"the way the original did": scipy.ndimage.zoom per zoom factor, skimage gaussian, skimage
rgb2hsv/hsv2rgb round trips, cv2.filter2D per channel, ImageMagick through Wand for motion blur
(or, when MagickWand is missing, imagecorruptions' per-offset numpy loop), float64 throughout,
and every step returning clip(y, 0, 1) * 255 as the original's functions did.

It exists to time :mod:`corruptions` against (bench/bench_corruptions.py) and to serve as a test
oracle (tests/test_corruptions.py). Not used at run time.

Every function is ``fn(image_uint8, severity, rng, colour="rgb") -> uint8``, with the final
clip + truncation of BENCHMARK.md §2.2. Random draws use the same calls as corruptions.py where the
stream is shared (motion angle, gaussian noise, the spatter liquid layer), so those outputs can be
compared directly; shot noise uses ``rng.poisson`` (the same distribution, another stream).

Example::

    .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import reference_corruptions as r; print(r.REFERENCE_NAMES)"
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import scipy.ndimage
import skimage.color
import skimage.filters
from PIL import Image

# BENCHMARK.md §2.3 tables, written out again on purpose (an independent transcription).
_TABLES = {
    "gaussian_blur": [1, 1.8, 2.6, 3.4, 4.0],
    "defocus_blur": [(1.5, 0.1), (2, 0.2), (2, 0.3), (2.5, 0.4), (3, 0.4)],
    "zoom_blur": [(1, 1.11, 0.01), (1, 1.18, 0.01), (1, 1.26, 0.02), (1, 1.32, 0.02), (1, 1.40, 0.03)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "gaussian_noise": [0.08, 0.12, 0.18, 0.24, 0.30],
    "shot_noise": [60, 29, 15, 8, 5],
    "contrast_plus": [1.5, 1.9, 2.6, 3.3, 5.0],
    "contrast": [0.4, 0.33, 0.24, 0.16, 0.10],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "pixelate": [0.6, 0.5, 0.41, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
}


def wand_available() -> bool:
    """True when ``import wand.image`` works (Wand and the MagickWand library are installed)."""
    try:
        import wand.image  # noqa: F401
    except ImportError:
        return False
    return True


MOTION_REFERENCE = "Wand/ImageMagick" if wand_available() else "numpy loop (imagecorruptions port)"


def _final(x):
    """The original's final conversion: clip to [0, 255], truncate to uint8."""
    return np.uint8(np.clip(x, 0, 255))


def ref_gaussian_blur(x, severity, rng, colour="rgb"):
    c = _TABLES["gaussian_blur"][severity - 1]
    x = skimage.filters.gaussian(np.array(x) / 255.0, sigma=c, channel_axis=-1)
    return np.clip(x, 0, 1) * 255


def _disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        grid = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=dtype)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


def ref_defocus_blur(x, severity, rng, colour="rgb"):
    k = x.shape[0] / 48
    radius, alias = _TABLES["defocus_blur"][severity - 1]
    x = np.array(x) / 255.0
    kernel = _disk(radius=radius * k, alias_blur=alias * k)
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255


def clipped_zoom(img, zoom_factor):
    """BENCHMARK.md §2.4 Zc, square images: square crop with the row offset, scipy zoom, trim."""
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scipy.ndimage.zoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


def ref_zoom_blur(x, severity, rng, colour="rgb"):
    c = np.arange(*_TABLES["zoom_blur"][severity - 1])
    x = (np.array(x) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)
    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


def _motion_wand(x, radius, sigma, angle):
    from wand.image import Image as WandImage

    output = io.BytesIO()
    Image.fromarray(x).save(output, format="PNG")
    with WandImage(blob=output.getvalue()) as image:
        image.motion_blur(radius=radius, sigma=sigma, angle=angle)
        blob = image.make_blob()
    decoded = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded.ndim == 2:
        return np.stack([decoded] * 3, axis=-1)
    return decoded[..., [2, 1, 0]]


def _motion_numpy_loop(x, radius, sigma, angle):
    """imagecorruptions' _motion_blur: shifted copies with edge replication, float64."""
    width = 2 * radius + 1
    j = np.arange(width)
    kernel = np.exp(-(j**2) / (2 * max(sigma, 1e-12) ** 2))
    kernel = kernel / kernel.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        rows = np.clip(np.arange(x.shape[0]) - dy, 0, x.shape[0] - 1)
        cols = np.clip(np.arange(x.shape[1]) - dx, 0, x.shape[1] - 1)
        blurred = blurred + kernel[i] * x[rows][:, cols]
    return np.uint8(np.clip(blurred, 0, 255))


def ref_motion_blur(x, severity, rng, colour="rgb"):
    k = x.shape[0] / 48
    radius, sigma = _TABLES["motion_blur"][severity - 1]
    radius, sigma = int(radius * k / 3), int(sigma * k / 3)
    angle = rng.uniform(-45, 45)
    if wand_available():
        return _motion_wand(x, radius, sigma, angle)
    return _motion_numpy_loop(x, radius, sigma, angle)


def ref_gaussian_noise(x, severity, rng, colour="rgb"):
    c = _TABLES["gaussian_noise"][severity - 1]
    x = np.array(x) / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def ref_shot_noise(x, severity, rng, colour="rgb"):
    c = _TABLES["shot_noise"][severity - 1]
    x = np.array(x) / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def _contrast(x, c):
    x = np.array(x) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def ref_contrast_plus(x, severity, rng, colour="rgb"):
    return _contrast(x, _TABLES["contrast_plus"][severity - 1])


def ref_contrast(x, severity, rng, colour="rgb"):
    return _contrast(x, _TABLES["contrast"][severity - 1])


def _brightness(x, delta):
    x = np.array(x) / 255.0
    x = skimage.color.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + delta, 0, 1)
    x = skimage.color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def ref_brightness_plus(x, severity, rng, colour="rgb"):
    return _brightness(x, _TABLES["brightness"][severity - 1])


def ref_brightness_minus(x, severity, rng, colour="rgb"):
    return _brightness(x, -_TABLES["brightness"][severity - 1])


def ref_spatter(x, severity, rng, colour="rgb"):
    c = _TABLES["spatter"][severity - 1]
    water = (175, 238, 238) if colour == "rgb" else (238, 238, 175)
    mud = (63, 42, 20) if colour == "rgb" else (20, 42, 63)
    x = np.array(x, dtype=np.float32) / 255.0
    liquid_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    liquid_layer = skimage.filters.gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        liquid_layer = (liquid_layer * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid_layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = liquid_layer * dist
        if np.max(m) == 0:  # the FIX of BENCHMARK.md §6 row 37 (the original divided by zero here)
            return x * 255
        m = m / np.max(m) * c[4]
        color = np.array(water, np.float32) / 255.0
        return np.clip(x + m[..., None] * color, 0, 1) * 255
    m = np.where(liquid_layer > c[3], 1, 0)
    m = skimage.filters.gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.array(mud, np.float32) / 255.0 * m[..., None]
    x = x * (1 - m[..., None])
    return np.clip(x + color, 0, 1) * 255


def ref_pixelate(x, severity, rng, colour="rgb"):
    c = _TABLES["pixelate"][severity - 1]
    h, w = x.shape[:2]
    image = Image.fromarray(x)
    image = image.resize((int(w * c), int(h * c)), Image.BOX)
    image = image.resize((w, h), Image.BOX)
    return np.array(image)


def ref_jpeg_compression(x, severity, rng, colour="rgb"):
    c = _TABLES["jpeg_compression"][severity - 1]
    if colour == "bgr-compat":
        x = np.ascontiguousarray(x[..., ::-1])
    output = io.BytesIO()
    Image.fromarray(x).save(output, "JPEG", quality=c)
    y = np.array(Image.open(output))
    return y[..., ::-1] if colour == "bgr-compat" else y


def _float_chain(x, steps, rng):
    """Run (fn, severity) steps, each on the previous 0..255 result (float or uint8)."""
    for fn, s in steps:
        x = fn(x if x.dtype == np.uint8 else x, s, rng)
        if x.dtype != np.uint8:
            x = np.clip(x, 0, 255)  # every step clips; the next step divides by 255 again
    return x


def _chain_fn(steps_table, names):
    functions = [globals()["ref_" + name] for name in names]

    def chained(x, severity, rng, colour="rgb"):
        return _float_chain(x, list(zip(functions, steps_table[severity - 1])), rng)

    return chained


ref_contrast_brightness_plus = _chain_fn(
    [(1, 1), (2, 1), (2, 2), (2, 3), (3, 4)], ["brightness_plus", "contrast"])
ref_contrast_brightness_minus = _chain_fn(
    [(1, 1), (2, 1), (2, 2), (2, 3), (3, 4)], ["brightness_minus", "contrast"])
ref_gaussian_noise_contrast_brightness_minus = _chain_fn(
    [(1, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 3), (3, 2, 4)], ["gaussian_noise", "brightness_minus", "contrast"])
ref_motion_blur_contrast_brightness_minus = _chain_fn(
    [(2, 1, 1), (3, 1, 1), (4, 2, 2), (5, 2, 1), (5, 2, 3)], ["motion_blur", "brightness_minus", "contrast"])
ref_pixelate_contrast_brightness_minus = _chain_fn(
    [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 1), (4, 3, 3)], ["pixelate", "brightness_minus", "contrast"])

REFERENCE_NAMES = (
    "gaussian_blur", "defocus_blur", "zoom_blur", "motion_blur", "gaussian_noise", "shot_noise",
    "contrast_plus", "contrast", "brightness_plus", "brightness_minus", "spatter", "pixelate",
    "jpeg_compression", "contrast_brightness_plus", "contrast_brightness_minus",
    "gaussian_noise_contrast_brightness_minus", "motion_blur_contrast_brightness_minus",
    "pixelate_contrast_brightness_minus",
)
REFERENCE = {name: globals()["ref_" + name] for name in REFERENCE_NAMES}


def reference_corrupt(image, name, severity, rng, colour="rgb"):
    """The reference output of ``name`` at ``severity``, uint8 (final clip + truncation)."""
    return _final(REFERENCE[name](image, severity, rng, colour=colour))
