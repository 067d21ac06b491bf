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


class NormalFrom:
    """A Generator stand-in whose ``normal(loc, scale, size)`` is loc + scale * ``standard_normal(rng,
    size)`` in float64; every other method is the wrapped generator's. The references draw their
    normals with ``rng.normal``; wrapping the generator with the toolkit's sampler
    (``corruptions.standard_normal``) makes them draw the same normals, so that the rest of the
    algorithm can be compared value for value."""

    def __init__(self, rng, standard_normal):
        self._rng = rng
        self._standard_normal = standard_normal

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self._standard_normal(self._rng, size).astype(np.float64)

    def __getattr__(self, name):
        return getattr(self._rng, name)


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
        if np.max(m) == 0:  # the FIX of BENCHMARK.md §6 row 27 (the original divided by zero here)
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


# --------------------------------------------------------------------------------------------
# The ImageNet-C extras (BENCHMARK.md §2.9) and the face set (§11.1), written the Hendrycks way:
# skimage random_noise and HSV round trips, per-pixel Python loops for glass_blur, scipy zoom per
# call, an explicit per-pixel polygon test. The tables are transcribed again here on purpose.
# Functions take (image_uint8, severity, rng, param_set) and return uint8 (final clip + floor).


def _final01(x):
    """clip(x, 0, 1) * 255, truncated to uint8 (the final conversion of a float image in [0, 1])."""
    return np.uint8(np.clip(x, 0, 1) * 255)

_EXTRA_224 = {
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
    "elastic_transform": [(244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)],
}


def ref_impulse_noise(x, severity, rng, param_set="imagenet224"):
    import skimage.util

    amount = _EXTRA_224["impulse_noise"][severity - 1]
    return _final01(skimage.util.random_noise(np.array(x) / 255.0, mode="s&p", amount=amount, rng=rng))


def ref_speckle_noise(x, severity, rng, param_set="imagenet224"):
    x = np.array(x) / 255.0
    return _final01(x + x * rng.normal(size=x.shape, scale=_EXTRA_224["speckle_noise"][severity - 1]))


def glass_loop(x, delta, offsets):
    """Hendrycks' loop, with the offsets drawn beforehand ((rows, cols, 2) of (dx, dy) in visiting
    order), the real H x W instead of 224. ``x`` uint8, changed in place and returned."""
    height, width = x.shape[:2]
    for i, h in enumerate(range(height - delta, delta, -1)):
        for j, w in enumerate(range(width - delta, delta, -1)):
            dx, dy = offsets[i, j]
            h_prime, w_prime = h + dy, w + dx
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


def ref_glass_blur(x, severity, rng, param_set="imagenet224"):
    sigma, delta, iterations = _EXTRA_224["glass_blur"][severity - 1]
    x = np.uint8(skimage.filters.gaussian(np.array(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    for _ in range(iterations):
        offsets = rng.integers(-delta, delta, size=(max(0, height - 2 * delta), max(0, width - 2 * delta), 2))
        x = glass_loop(x, delta, offsets)
    return _final01(skimage.filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1))


def ref_plasma_fractal(mapsize, wibbledecay, rng):
    """ImageNet-C's plasma_fractal with nested functions, drawing from ``rng``."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def ref_fog(x, severity, rng, param_set="imagenet224"):
    strength, decay = _EXTRA_224["fog"][severity - 1]
    x = np.array(x) / 255.0
    max_val = x.max()
    side = 1 << int(max(x.shape[:2]) - 1).bit_length()
    x += strength * ref_plasma_fractal(side, decay, rng)[: x.shape[0], : x.shape[1]][..., np.newaxis]
    return _final01(x * max_val / (max_val + strength))


def ref_saturate(x, severity, rng, param_set="imagenet224"):
    factor, offset = _EXTRA_224["saturate"][severity - 1]
    hsv = skimage.color.rgb2hsv(np.array(x) / 255.0)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * factor + offset, 0, 1)
    return _final01(skimage.color.hsv2rgb(hsv))


def ref_elastic_transform(x, severity, rng, param_set="imagenet224"):
    alpha, sigma, affine = _EXTRA_224["elastic_transform"][severity - 1]
    image = np.array(x, dtype=np.float32) / 255.0
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, matrix, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (skimage.filters.gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3)
          * alpha).astype(np.float32)
    dy = (skimage.filters.gaussian(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3)
          * alpha).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
    out = scipy.ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
    return _final01(out)


def ref_snow(x, severity, rng, param_set="imagenet224"):
    """ImageNet-C's snow with scipy zoom and the numpy-loop (or Wand) motion blur."""
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., np.newaxis], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    angle = rng.uniform(-135, -45)
    blurred = _motion_numpy_loop(np.repeat(layer8[..., None], 3, axis=2), radius, sigma, angle)[..., 0] / 255.0
    blurred = blurred[..., np.newaxis]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return _final01(x + blurred + np.rot90(blurred, k=2))


def ref_low_resolution(x, severity, rng, param_set=None):
    factor = [2, 3, 4, 6, 8][severity - 1]
    height, width = x.shape[:2]
    small = cv2.resize(x, (max(1, round(width / factor)), max(1, round(height / factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


EXTRA_REFERENCE = {name[4:]: function for name, function in list(globals().items())
                   if name.startswith("ref_") and name[4:] in (
                       "impulse_noise", "speckle_noise", "glass_blur", "fog", "saturate",
                       "elastic_transform", "snow", "low_resolution")}


# --------------------------------------------------------------------------------------------
# ImageNet-P extras written the ImageNet-P way (make_imagenet_p*.py): per frame, scipy zoom of the
# float image for p_zoom_blur (the running sum of zooms), the shifted-copies motion blur of the
# snow layer for p_snow; 130 px face in, (frames, 100, 100, 3) uint8 out (ROI 15..115).


def ref_p_zoom_blur(face, frames=30):
    x = np.array(face) / 255.0
    total = x.copy()
    out = [face[15:115, 15:115]]
    for i in range(1, frames):
        total += clipped_zoom(x, 1 + 0.004 * i)
        out.append(np.uint8(np.clip(total / (i + 1), 0, 1) * 255)[15:115, 15:115])
    return np.stack(out)


def ref_p_snow(face, rng, frames=30):
    x = np.array(face, dtype=np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=0.05, scale=0.3)
    layer = clipped_zoom(layer[..., np.newaxis], 3)[..., 0]
    layer[layer < 0.5] = 0
    layer8 = np.repeat((np.clip(layer, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    base = 0.85 * x + 0.15 * np.maximum(x, grey * 1.5 + 0.5)
    out = []
    for i in range(frames):
        flakes = _motion_numpy_loop(layer8, 14, 4, 4 * i - 150)[..., :1] / 255.0
        out.append(_final01(base + flakes + np.rot90(flakes, k=2))[15:115, 15:115])
    return np.stack(out)


if __name__ == "__main__":
    import sys

    print("error: bench/reference_corruptions.py is a module (the reference that bench/bench_corruptions.py "
          "times, and a test oracle), not a script: run bench/bench_corruptions.py", file=sys.stderr)
    sys.exit(2)
