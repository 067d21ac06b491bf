"""The four ImageNet-P extras of docs/BENCHMARK.md §3.7 (set ``imagenet-extra``), never in the mFP/mFR of the 10.

Same interface as :mod:`perturbations`: ``fn(face130, rng, frames=30, **options) -> (frames, 100,
100, 3) uint8``; each acts on the whole 130 px aligned face, then frame i is the default ROI
(15, 15, 100, 100). Values as in the table of §3.7, in pixels of the 130 px face. Float frames are
converted like C (clip, times 255, floor), except p_speckle_noise, converted like the other P noises
(round half to even, docs/BENCHMARK.md §3.5).

- p_zoom_blur: frame 0 clean; frame i = (x + sum_{j=1..i} Z(1 + 0.004 j)) / (i + 1), Z a bilinear
  centre zoom cropped back to 130 px (the per-axis operators of :func:`corruptions_imagenet.zoom_operator`).
- p_snow: one layer N(0.05, 0.3), clipped zoom x3, values < 0.5 -> 0 (as uint8); frame i
  motion-blurs it with radius 14, sigma 4, angle 4 i - 150 degrees, and adds it as snow does.
- p_tilt: perspective view of the face plane turned by pitch = yaw = (i - 15) degrees
  (:func:`tilt_homography`).
- p_speckle_noise: frame 0 clean; frames i >= 1 independent clip(x + x N(0, 0.05)).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

import corruptions
import corruptions_imagenet
from perturbations import DEFAULT_ROI, FACE_SIZE, FRAME_SIZE, NUM_FRAMES, _crop, _round_to_uint8

NOISE_SAMPLERS = corruptions.NOISE_SAMPLERS  # in this module's parameter digest (docs/BENCHMARK.md §2.7)

ZOOM_STEP = 0.004  # p_zoom_blur: factor 1 + 0.004 j
SNOW_LAYER = (0.05, 0.3, 3, 0.5)  # (loc, scale, zoom, threshold)
SNOW_MOTION = (14, 4)  # (radius, sigma)
SNOW_BLEND = 0.85
MULTIPLICATIVE_NOISE_SIGMA = 0.05  # ImageNet-P difficulty 1 (difficulties 2/3: 0.10 / 0.15)


def zoom_factor(j: int) -> float:
    """p_zoom_blur's j-th zoom factor: 1 + 0.004 j."""
    return 1.0 + ZOOM_STEP * j


def snow_angle(i: int) -> float:
    """p_snow's motion angle in degrees for frame i: 4 i - 150."""
    return 4.0 * i - 150.0


def tilt_angle(i: int) -> float:
    """p_tilt's pitch and yaw in degrees for frame i: i - 15."""
    return float(i - 15)


def _floor_to_uint8(x01: np.ndarray) -> np.ndarray:
    return (np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _zoom_image(x: np.ndarray, zoom: float) -> np.ndarray:
    """Clipped zoom of a channels-first (C, H, W) image: all channels in one batched product with
    the cached per-axis operators of :func:`corruptions_imagenet.zoom_operator`."""
    rows = corruptions_imagenet.zoom_operator(x.shape[1], float(zoom))
    columns = corruptions_imagenet.zoom_operator(x.shape[2], float(zoom))
    return rows @ x @ columns.T


def _roi_slices() -> tuple[slice, slice]:
    x, y, w, h = DEFAULT_ROI
    return slice(y, y + h), slice(x, x + w)


def p_zoom_blur(face, rng, frames=NUM_FRAMES, **_options):
    """Frame i: mean of the clean face and its zooms by 1.004, ..., 1 + 0.004 i.

    The running sum and the conversion are kept on the frame's region; the zooms themselves are
    whole products (a product of the operators' ROI rows only is not always the same to the last
    bit: BLAS treats the block edges differently, and flat regions then floor one level apart)."""
    rows, columns = _roi_slices()
    x = face.transpose(2, 0, 1).astype(np.float64) / 255.0  # channels first for the batched zoom
    total = x[:, rows, columns].copy()
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    out[0] = _crop(face)
    for i in range(1, frames):
        total += _zoom_image(x, zoom_factor(i))[:, rows, columns]
        out[i] = _floor_to_uint8(total / (i + 1)).transpose(1, 2, 0)
    return out


def p_snow(face, rng, frames=NUM_FRAMES, motion_backend="numpy", **_options):
    """One snow layer (one draw), motion-blurred at angle 4 i - 150 for frame i. The numpy motion
    blur acts on the single grey plane (the same values as on its three equal channels), and only
    on the frame's rows; the snow is added on the frame's region only (its 180-degree turn is the
    turn of the region: the ROI is centred), the same values as on the whole face cropped."""
    loc, scale, zoom, threshold = SNOW_LAYER
    layer = corruptions_imagenet.snow_layer((FACE_SIZE, FACE_SIZE), loc, scale, zoom, threshold, rng)
    x = face.astype(np.float32) / np.float32(255.0)
    radius, sigma = SNOW_MOTION
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    rows, columns = _roi_slices()
    if motion_backend != "numpy" or not _roi_is_centred(face):  # the whole face, then the frame
        plane = layer if motion_backend == "numpy" else np.repeat(layer[..., None], 3, axis=2)
        for i in range(frames):
            flakes = corruptions.motion_blur_op(plane, radius, sigma, snow_angle(i), backend=motion_backend)
            flakes = flakes if flakes.ndim == 2 else flakes[..., 0]
            out[i] = _crop(_floor_to_uint8(corruptions_imagenet.add_snow(x, flakes / np.float32(255.0), SNOW_BLEND)))
        return out
    region = np.ascontiguousarray(x[rows, columns])
    for i in range(frames):
        flakes = corruptions.motion_blur_rows(layer, radius, sigma, snow_angle(i), rows.start, rows.stop)
        flakes = np.ascontiguousarray(flakes[:, columns])
        out[i] = _floor_to_uint8(corruptions_imagenet.add_snow(region, flakes / np.float32(255.0), SNOW_BLEND))
    return out


def _roi_is_centred(face) -> bool:
    """Whether the default ROI is centred in ``face`` with no resize (true for the 130 px face)."""
    x, y, w, h = DEFAULT_ROI
    return face.shape[0] == y + h + y and face.shape[1] == x + w + x and (w, h) == (FRAME_SIZE, FRAME_SIZE)


def tilt_homography(degrees: float, width: int = FACE_SIZE, height: int = FACE_SIZE) -> np.ndarray:
    """3x3 homography of p_tilt: the image plane centred at the origin, rotated about the y axis
    (yaw) then the x axis (pitch) by ``degrees``, moved f = sqrt(w^2 + h^2) along z and projected
    with focal length f and principal point (w / 2, h / 2). At 0 degrees it is the identity."""
    theta = math.radians(degrees)
    focal = math.hypot(width, height)
    cos, sin = math.cos(theta), math.sin(theta)
    rotate_y = np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])
    rotate_x = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    rotation = rotate_x @ rotate_y
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 0], [0, 0, 1]], np.float64)
    extrinsic = np.hstack([rotation, [[0], [0], [focal]]])
    intrinsic = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    homography = intrinsic @ extrinsic @ centre
    return homography / homography[2, 2]


def p_tilt(face, rng, frames=NUM_FRAMES, **_options):
    """Perspective warp (bilinear, black border) by tilt_homography(i - 15), then the default ROI.

    Only the output up to the ROI's far corner (115 x 115) is warped: OpenCV computes every output
    pixel from its own coordinates, so these pixels are those of the whole 130 px warp (tested)."""
    x, y, w, h = DEFAULT_ROI
    return np.ascontiguousarray(np.stack([
        _crop(cv2.warpPerspective(face, tilt_homography(tilt_angle(i)), (x + w, y + h),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)))
        for i in range(frames)]))


def p_speckle_noise(face, rng, frames=NUM_FRAMES, **_options):
    """Frame 0 clean; frames i >= 1 independent speckle noise x + x N(0, 0.05), rounded (docs/BENCHMARK.md §3.5)."""
    clean = _crop(face)
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    out[0] = clean
    if frames > 1:
        x = clean.astype(np.float64) / 255.0
        # float32 Box-Muller normals (docs/BENCHMARK.md §2.7), one block per frame in frame order (so
        # that the first k frames are the same whatever ``frames``), the arithmetic in float64
        noise = np.stack([corruptions.standard_normal(rng, clean.shape) for _ in range(frames - 1)]
                         ).astype(np.float64)
        # x + (x sigma) n, in place on the draws (no frame-stack temporaries; the same products and sums)
        noise *= x * MULTIPLICATIVE_NOISE_SIGMA
        noise += x
        out[1:] = _round_to_uint8(np.clip(noise, 0.0, 1.0, out=noise))
    return out


PERTURBATIONS = {function.__name__: function for function in (p_zoom_blur, p_snow, p_tilt, p_speckle_noise)}
RANDOM_PERTURBATIONS = ("p_snow", "p_speckle_noise")
