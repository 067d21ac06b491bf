"""Face-specific corruptions (docs/BENCHMARK.md §11.1; set ``face``): occlusions and low resolution.

Placed from fixed relative landmark positions of an aligned face, the same for every dataset
(RAF-DB's manual landmarks belong to the original photos, not to the aligned images). Measured on
RAF-DB's 100 px aligned faces, fixed once here (fractions of width W and height H):

======================  ===============
left eye, right eye     (0.30, 0.40), (0.70, 0.40)
nose tip                (0.50, 0.58)
mouth centre            (0.50, 0.75)
chin                    (0.50, 0.97)
face box (patches)      x 0.15..0.85, y 0.15..0.95
======================  ===============

Each function is ``fn(image, severity, rng, **options)`` of an RGB uint8 image, returning the uint8
image after the final clip and floor of docs/BENCHMARK.md §2.2 (only the occluded region is
computed: elsewhere the result is the input byte). Only occlusion_patch draws from ``rng``; the
others are deterministic.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

import corruptions

LEFT_EYE, RIGHT_EYE = (0.30, 0.40), (0.70, 0.40)
NOSE_TIP, MOUTH_CENTRE, CHIN = (0.50, 0.58), (0.50, 0.75), (0.50, 0.97)
FACE_BOX = (0.15, 0.15, 0.85, 0.95)  # (left, top, right, bottom)

PATCH_SIDE = (0.15, 0.22, 0.30, 0.38, 0.46)  # fraction of W
EYE_BAND = ((0.10, 0.6), (0.14, 0.7), (0.18, 0.8), (0.22, 0.9), (0.26, 1.0))  # (height / H, opacity)
EYE_BAND_REACH = 0.17  # the band runs from the left eye - 0.17 W to the right eye + 0.17 W
EYE_BAND_RGB = (10, 10, 12)  # near-black lenses
MASK = ((0.5, 0.80), (0.6, 0.85), (0.7, 0.90), (0.8, 0.95), (0.9, 1.0))  # (share of nose-chin height, opacity)
MASK_RGB = (150, 200, 230)  # light blue surgical mask
MASK_WIDTH = (0.80, 0.50)  # width / W at the top edge and at the chin
LOW_RESOLUTION_FACTOR = (2, 3, 4, 6, 8)


@functools.lru_cache(maxsize=256)
def _blend_terms(name: str, severity: int, shape: tuple) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """(region, keep, tint) of occlusion ``name`` ("eyes" or "mouth") at ``severity`` on images of
    ``shape`` (H, W, C), on which alone they depend; cached, read-only.

    The blend is x (1 - a) + a colour with a = coverage x opacity, the coverage (H x W in [0, 1])
    zero outside ``region`` (a pair of slices; ``coverage`` is its part); on a grey image the
    colour is its grey (``corruptions.grey_level``). keep = 1 - a repeated into the C channels
    (x keep: the same float32 products as the broadcast x (1 - a), on equal shapes) and
    tint = a colour."""
    height, width, channels = shape
    region, coverage, rgb, opacity = (_eye_band if name == "eyes" else _mask)(severity, height, width)
    alpha = (coverage * opacity)[..., None]
    if channels == 1:
        colour = np.array([corruptions.grey_level(rgb)], np.float32)
    else:
        colour = np.array(rgb, np.float32) / np.float32(255.0)
    keep = np.repeat(1 - alpha, channels, axis=2)
    tint = alpha * colour
    for array in (keep, tint):
        array.setflags(write=False)
    return region, keep, tint


def _blend_region(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """The blend of :func:`_blend_terms` of uint8 ``image``, floored to uint8 (docs/BENCHMARK.md
    §2.2). Outside the region the blend gives x (1 - 0) + 0 = x, which floors back to the input
    byte, so only the region is computed; the bytes are those of the whole-image blend."""
    region, keep, tint = _blend_terms(name, severity, image.shape)
    out = image.copy()
    x = corruptions.to_float01(image[region]) * keep  # a new array, also for a float image
    x += tint  # x (1 - a) + a colour
    np.clip(x, 0.0, 1.0, out=x)
    x *= np.float32(255.0)
    out[region] = x.astype(np.uint8)
    return out


def patch_box(severity: int, shape_hw, rng) -> tuple[int, int, int]:
    """(left, top, side) of occlusion_patch: side = round(fraction x W); the patch centre is uniform
    in the face box, the patch then moved inside the image where it would cross its border."""
    height, width = shape_hw
    side = max(1, int(round(PATCH_SIDE[severity - 1] * width)))
    box_left, box_top, box_right, box_bottom = FACE_BOX
    cx = rng.uniform(box_left * width, box_right * width)
    cy = rng.uniform(box_top * height, box_bottom * height)
    left = min(max(round(cx - side / 2), 0), width - side)  # np.clip's maximum, then minimum
    top = min(max(round(cy - side / 2), 0), height - side)
    return left, top, side


def occlusion_patch(image, severity, rng, **_options):
    """One square of uniform grey noise (one U(0, 1) value per pixel, the same in R, G, B), side
    0.15..0.46 of W, centred uniformly in the face box. uint8 out: the rest of the image keeps its
    bytes (x / 255 floors back to x), the patch is the floored noise."""
    left, top, side = patch_box(severity, image.shape[:2], rng)
    noise = rng.random((side, side), dtype=np.float32)
    out = image.copy()
    out[top:top + side, left:left + side] = corruptions.to_uint8(noise)[..., None]
    return out


def eye_band_rows(severity: int, height: int) -> tuple[int, int]:
    """(top, bottom) rows of the sunglasses band: height fraction x H, centred on the eye line."""
    band = EYE_BAND[severity - 1][0] * height
    centre = LEFT_EYE[1] * height
    return int(round(centre - band / 2)), int(round(centre + band / 2))


def _eye_band(severity: int, height: int, width: int):
    """(region, coverage, colour, opacity) of the sunglasses band (:func:`_blend_terms`)."""
    top, bottom = eye_band_rows(severity, height)
    left = int(round((LEFT_EYE[0] - EYE_BAND_REACH) * width))
    right = int(round((RIGHT_EYE[0] + EYE_BAND_REACH) * width))
    rows, columns = slice(max(0, top), bottom), slice(max(0, left), right)
    coverage = np.ones((len(range(height)[rows]), len(range(width)[columns])), np.float32)
    return (rows, columns), coverage, EYE_BAND_RGB, EYE_BAND[severity - 1][1]


def occlusion_eyes(image, severity, rng, **_options):
    """A dark band over both eyes (sunglasses): height 0.10..0.26 of H centred on the eye line,
    from 0.17 W left of the left eye to 0.17 W right of the right eye, opacity 0.6..1.0."""
    return _blend_region(image, "eyes", severity)


def mask_polygon(severity: int, shape_hw) -> np.ndarray:
    """The mask outline (float x, y points): top edge at chin - share x (chin - nose tip), 0.80 W wide,
    narrowing to 0.50 W at the chin (a trapezoid with cut lower corners)."""
    height, width = shape_hw
    share = MASK[severity - 1][0]
    chin_y = CHIN[1] * height
    top_y = chin_y - share * (CHIN[1] - NOSE_TIP[1]) * height
    top_half, chin_half = MASK_WIDTH[0] * width / 2, MASK_WIDTH[1] * width / 2
    cx = MOUTH_CENTRE[0] * width
    side_y = top_y + 0.6 * (chin_y - top_y)
    return np.array([(cx - top_half, top_y), (cx + top_half, top_y), (cx + top_half, side_y),
                     (cx + chin_half, chin_y), (cx - chin_half, chin_y), (cx - top_half, side_y)])


def _mask(severity: int, height: int, width: int):
    """(region, coverage, colour, opacity) of the surgical mask (:func:`_blend_terms`): the polygon
    filled anti-aliased, its coverage within the bounding box of the nonzero pixels."""
    shift = 4
    points = np.round(mask_polygon(severity, (height, width)) * (1 << shift)).astype(np.int32)
    coverage = np.zeros((height, width), np.uint8)
    cv2.fillPoly(coverage, [points], 255, cv2.LINE_AA, shift)
    left, top, box_width, box_height = cv2.boundingRect(coverage)  # of the nonzero pixels
    region = (slice(top, top + box_height), slice(left, left + box_width))
    return region, coverage[region].astype(np.float32) / 255.0, MASK_RGB, MASK[severity - 1][1]


def occlusion_mouth(image, severity, rng, **_options):
    """A light-blue surgical mask from below the nose to the chin covering 50..90 % of the nose-chin
    height (from the chin up), opacity 0.8..1.0; polygon edges anti-aliased."""
    return _blend_region(image, "mouth", severity)


def low_resolution(image, severity, rng, **_options):
    """Area downsampling by 2, 3, 4, 6, 8 (to round(W / f) x round(H / f)), then bicubic upsampling
    to the original size (OpenCV); uint8."""
    height, width = image.shape[:2]
    factor = LOW_RESOLUTION_FACTOR[severity - 1]
    small = cv2.resize(image, (max(1, round(width / factor)), max(1, round(height / factor))),
                       interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return out if out.ndim == image.ndim else out.reshape(image.shape)  # OpenCV drops a channel axis of 1


CORRUPTIONS = {function.__name__: function for function in (
    occlusion_patch, occlusion_eyes, occlusion_mouth, low_resolution)}
