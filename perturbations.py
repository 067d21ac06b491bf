"""RAF-DB-P: MIVIA's 130 px face alignment and the 10 perturbation sequences (BENCHMARK.md §3).

Every perturbation is a plain function ``(face130, rng, **options) -> (frames, 100, 100, 3) uint8``
registered, in the original's order, in :data:`PERTURBATIONS` under its own ``__name__``.
:func:`perturb` is the checked public entry point; the functions themselves stay lean.

Frame extraction (BENCHMARK.md §3.2): each perturbation acts on the whole 130 px image, then frame ``i`` is
the region of interest (ROI) ``image[y:y+h, x:x+w]``, resized to 100x100 with ``cv2.resize``
(bilinear) only when the ROI is not 100x100. The default ROI is ``(15, 15, 100, 100)``.
Per-pixel operations (noise, brightness) are applied to the ROI only; this is the same as applying
them to the whole image and cropping afterwards (for the noises: the same distribution; the draws
are ours anyway, the original has no seeds).

Quantisation (BENCHMARK.md §3.5, FAITHFUL): float frames (every p_brightness frame, p_gaussian_noise and
p_shot_noise for i >= 1) reached OpenCV's JPEG writer unconverted in the original, which rounds
half to even and saturates; here they are converted the same way (``np.rint`` + clip).
p_gaussian_blur and p_spatter truncate; geometric perturbations stay uint8 throughout.

The low-level operations (noise, HSV value shift, motion blur, gaussian blur, the spatter liquid
layer and water rendering) come from :mod:`corruptions`: one implementation each in the project.

Example::

    import numpy as np, perturbations
    face = perturbations.align_face(image_rgb, landmarks)          # (130, 130, 3) uint8
    frames = perturbations.perturb(face, "p_rotate")              # (30, 100, 100, 3) uint8
    frames = perturbations.perturb(face, "p_shot_noise", np.random.default_rng(0))
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

import corruptions

NOISE_SAMPLERS = corruptions.NOISE_SAMPLERS  # in this module's parameter digest (docs/BENCHMARK.md §2.7)

FACE_SIZE = 130  # side of the aligned face every perturbation starts from (BENCHMARK.md §3.1)
FRAME_SIZE = 100  # side of every output frame
NUM_FRAMES = 30  # frames i = 0..29 per sequence
DEFAULT_ROI = (15, 15, 100, 100)  # (x, y, w, h): centred, offset 15 (BENCHMARK.md §3.2)

# BENCHMARK.md §3.1: MIVIA's target points (left eye, right eye, mouth point) as fractions of 130 px.
ALIGN_TARGETS = np.float32(np.array([[0.286, 0.4], [0.714, 0.4], [0.5, 0.714]]) * FACE_SIZE)

# One definition each, in corruptions.py (re-exported here for the CLI's choices).
MOTION_BACKENDS = corruptions.MOTION_BACKENDS
COLOUR_MODES = corruptions.COLOUR_MODES
FALLBACK_PADS = ("reflect101", "constant")


# --------------------------------------------------------------------------------------------
# Alignment (BENCHMARK.md §3.1) and the fallback source (BENCHMARK.md §3.6)


def mouth_point(landmarks: np.ndarray) -> tuple[float, float]:
    """The floored mean of the two mouth corners, with Python float floor division (BENCHMARK.md §3.1)."""
    (x3, y3), (x4, y4) = (float(v) for v in landmarks[3]), (float(v) for v in landmarks[4])
    return (x3 + x4) // 2, (y3 + y4) // 2


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 affine taking left eye, right eye and the floored mouth point onto ALIGN_TARGETS."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.all(np.isfinite(landmarks)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {landmarks.shape}")
    source = np.float32([landmarks[0], landmarks[1], mouth_point(landmarks)])
    return cv2.getAffineTransform(source, ALIGN_TARGETS)


def align_face(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Align an original photo to MIVIA's 130x130 face from its 5 manual landmarks (BENCHMARK.md §3.1).

    The original zero-pads small images at the bottom/right up to 130 px, warps at the padded
    size (bilinear, constant-0 border) and keeps the top-left 130x130; warping straight onto a
    130x130 canvas with a constant-0 border gives the same pixels, which is what is done here.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f"image must be an HxWx3 uint8 array, got {image_rgb.dtype} {image_rgb.shape}"
        )
    matrix = alignment_matrix(landmarks)
    return cv2.warpAffine(
        image_rgb,
        matrix,
        (FACE_SIZE, FACE_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def aligned_source_face(aligned100_rgb: np.ndarray, pad: str = "reflect101") -> np.ndarray:
    """``--source aligned`` (BENCHMARK.md §3.6): pad an official 100x100 aligned face by 15 px per side.

    ``pad`` is ``reflect101`` (cv2.BORDER_REFLECT_101, the default) or ``constant`` (zeros). The
    default frame of the result is exactly the aligned image. A grey face (100x100x1) gives a grey
    130x130x1 face.
    """
    aligned100_rgb = np.asarray(aligned100_rgb)
    if aligned100_rgb.dtype != np.uint8 or aligned100_rgb.shape not in ((FRAME_SIZE, FRAME_SIZE, 3),
                                                                        (FRAME_SIZE, FRAME_SIZE, 1)):
        raise ValueError(
            f"aligned face must be a 100x100x3 (or grey 100x100x1) uint8 array, got {aligned100_rgb.dtype} "
            f"{aligned100_rgb.shape}"
        )
    if pad not in FALLBACK_PADS:
        raise ValueError(f"pad must be one of {', '.join(FALLBACK_PADS)}, got {pad!r}")
    border = cv2.BORDER_REFLECT_101 if pad == "reflect101" else cv2.BORDER_CONSTANT
    margin = (FACE_SIZE - FRAME_SIZE) // 2
    padded = cv2.copyMakeBorder(aligned100_rgb, margin, margin, margin, margin, border, value=0)
    return padded.reshape(FACE_SIZE, FACE_SIZE, aligned100_rgb.shape[2])  # OpenCV drops a lone channel axis


# --------------------------------------------------------------------------------------------
# Helpers


def _crop(image: np.ndarray, roi: tuple[int, int, int, int] = DEFAULT_ROI) -> np.ndarray:
    """Frame extraction (BENCHMARK.md §3.2): ``image[y:y+h, x:x+w]``, resized to 100x100 if needed.

    Faces are H x W x C inside this module; a 2-D ``image`` is a grey plane that OpenCV returned
    without its channel axis (warpAffine, resize of H x W x 1), so the frame gets it back."""
    x, y, w, h = roi
    region = image[y : y + h, x : x + w]
    if (w, h) != (FRAME_SIZE, FRAME_SIZE):
        region = cv2.resize(region, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_LINEAR)
    return region if region.ndim == 3 else region[:, :, None]


def _round_to_uint8(frames01: np.ndarray) -> np.ndarray:
    """A float frame in [0, 1] times 255, as OpenCV converts it to 8 bits at the JPEG writer:
    round half to even, then saturate (``frames01`` may be overwritten)."""
    if not frames01.flags.writeable or frames01.dtype.kind != "f":
        frames01 = np.array(frames01, dtype=np.float64)
    np.multiply(frames01, 255.0, out=frames01)
    np.rint(frames01, out=frames01)
    np.clip(frames01, 0, 255, out=frames01)
    return frames01.astype(np.uint8)


def _truncate_to_uint8(frames_0_255: np.ndarray) -> np.ndarray:
    """The C/P truncating cast: clip to [0, 255], then floor."""
    return np.clip(frames_0_255, 0, 255).astype(np.uint8)


def _clean_roi_float(face: np.ndarray) -> np.ndarray:
    """The default ROI as a float image in [0, 1]."""
    return _crop(face).astype(np.float64) / 255.0


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(frames, axis=0))


def _warp_frames(face: np.ndarray, matrices) -> np.ndarray:
    """One frame per 2x3 matrix: warpAffine to 115x115 (bilinear, constant 0), then the default ROI
    (BENCHMARK.md §3.3), written straight into the frame array through one reused canvas (no list of
    cropped views to stack: one copy and 30 allocations less)."""
    side = DEFAULT_ROI[0] + DEFAULT_ROI[2]  # 115
    x0, y0, _w, _h = DEFAULT_ROI
    out = np.empty((len(matrices), FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    canvas = np.empty((side, side, face.shape[2]), np.uint8)
    for i, matrix in enumerate(matrices):
        warped = cv2.warpAffine(face, matrix, (side, side), dst=canvas, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        out[i] = warped.reshape(canvas.shape)[y0:, x0:]
    return out


def scale_roi(i: int) -> tuple[int, int, int, int]:
    """p_scale's ROI for frame i: side int(130 - 1.7*30*(i/30)), offset (130 - side)//2."""
    side = int(FACE_SIZE - 1.7 * NUM_FRAMES * (i / NUM_FRAMES))
    offset = (FACE_SIZE - side) // 2
    return (offset, offset, side, side)


def brightness_delta(i: int) -> float:
    """p_brightness's HSV V offset for frame i: (i - 15) * 2 / 100."""
    return (i - 15) * 2 / 100


def shear_factor(i: int) -> float:
    """p_shear's factor t for frame i: 0.01 * (i - 15.0)."""
    return 0.01 * (i - 15.0)


def rotation_angle(i: int) -> int:
    """p_rotate's angle in degrees (counter-clockwise positive) for frame i: i - 15."""
    return i - 15


def motion_angle(i: int) -> int:
    """p_motion_blur's angle in degrees for frame i: (i - 30) * 4."""
    return (i - 30) * 4


def blur_sigma(i: int) -> float:
    """p_gaussian_blur's sigma for frame i: 0.25 + 0.035 * i."""
    return 0.25 + 0.035 * i


# Noise severity 2 of RAF-DB-C (BENCHMARK.md §2.3), used for frames i >= 1: sigma 0.12, lambda 29.
GAUSSIAN_NOISE_SIGMA = corruptions.GAUSSIAN_NOISE_SIGMA[2 - 1]
SHOT_NOISE_LAMBDA = corruptions.SHOT_NOISE_LAMBDA[2 - 1]
# p_motion_blur's kernel (BENCHMARK.md §3.3): radius 10, sigma 3, unscaled.
MOTION_RADIUS, MOTION_SIGMA = 10, 3
# p_gaussian_blur (BENCHMARK.md §3.3): skimage gaussian with truncate 6.0.
BLUR_TRUNCATE = 6.0
BLUR_MARGIN = int(BLUR_TRUNCATE * (0.25 + 0.035 * (NUM_FRAMES - 1)) + 0.5)  # 8: largest kernel radius
# p_spatter (BENCHMARK.md §3.4): liquid layer (loc, scale, sigma, threshold), water intensity, shift kernel.
SPATTER_LAYER = (0.65, 0.27, 3.7, 0.69)
SPATTER_INTENSITY = 0.6
SPATTER_SHIFT = (0.05, 0.10, 0.15, 0.70)


def spatter_layer(rng: np.random.Generator) -> np.ndarray:
    """p_spatter's liquid layer (BENCHMARK.md §3.4 step 1), float64 130x130: ``rng.normal(0.65, 0.27)``,
    skimage-equivalent gaussian (sigma 3.7), values below 0.69 set to 0. Its only draw from ``rng``.
    """
    loc, scale, sigma, threshold = SPATTER_LAYER
    return corruptions.make_liquid_layer((FACE_SIZE, FACE_SIZE), loc, scale, sigma, threshold, rng)


def shift_liquid_down(liquid: np.ndarray) -> np.ndarray:
    """One spatter step: new[r] = .05 L[r+1] + .10 L[r] + .15 L[r-1] + .70 L[r-2], 0 outside.

    This is numpy ``convolve(column, [0.05, 0.1, 0.15, 0.7], mode='same')`` on every column.
    """
    k0, k1, k2, k3 = SPATTER_SHIFT
    out = k1 * liquid
    out[:-1] += k0 * liquid[1:]
    out[1:] += k2 * liquid[:-1]
    out[2:] += k3 * liquid[:-2]
    return out


# --------------------------------------------------------------------------------------------
# The 10 perturbations (BENCHMARK.md §3.3), in the original's order


def p_gaussian_noise(face, rng, frames=NUM_FRAMES, **_options):
    """Frame 0 clean; frames i >= 1 independent gaussian noise, sigma 0.12 (C severity 2).

    Frame i >= 1 is round-half-even(clip(v + 255 sigma z_i, 0, 255)) (§3.5) with v the clean
    crop's bytes and z_i = :func:`corruptions.standard_normal` (rng, crop shape), drawn frame after
    frame; OpenCV's ``addWeighted`` does the scale, the sum, the rounding and the saturation in one
    pass (float32, like the draws). This is clip(x + N(0, sigma), 0, 1) on [0, 1], times 255."""
    clean = _crop(face)
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    out[0] = clean
    base = clean.astype(np.float32)
    scale = 255.0 * GAUSSIAN_NOISE_SIGMA
    for i in range(1, frames):
        noise = corruptions.standard_normal(rng, clean.shape)
        cv2.addWeighted(noise, scale, base, 1.0, 0.0, dst=out[i], dtype=cv2.CV_8U)
    return out


def p_shot_noise(face, rng, frames=NUM_FRAMES, **_options):
    """Frame 0 clean; frames i >= 1 independent shot (Poisson) noise, lambda 29 (C severity 2).

    The clean crop is uint8, so the noise and the round-half-even conversion of §3.5 go straight
    from the levels to bytes by table (:func:`corruptions.shot_noise_uint8`): the same draws and
    bytes as ``_round_to_uint8(add_shot_noise(crop / 255))``, without the float passes."""
    clean = _crop(face)
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    out[0] = clean
    # Frame after frame (one 32-bit word per value, in order: the same words as one block of
    # frames - 1), so that the work stays in cache.
    for i in range(1, frames):
        out[i] = corruptions.shot_noise_uint8(clean, SHOT_NOISE_LAMBDA, rng, "rint")
    return out


def p_gaussian_blur(face, rng, frames=NUM_FRAMES, **_options):
    """skimage gaussian, sigma 0.25 + 0.035 i, truncate 6, mode nearest; truncated to uint8."""
    # A kernel of radius r (2 ... 8 px) makes the ROI read only pixels within r px of it, never the
    # border of the 130 px image: blurring the window of the ROI widened by r and taking its inner
    # 100x100 gives exactly the whole-image result, with less work. Each window is filtered as
    # corruptions.gaussian_blur_op filters (its kernel, OpenCV's separable filter, edge replication),
    # but as a view into one float copy of the face: OpenCV reads a strided view without a copy.
    margin = DEFAULT_ROI[0] - BLUR_MARGIN
    x = face[margin : FACE_SIZE - margin, margin : FACE_SIZE - margin].astype(np.float64) / 255.0
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    scaled = np.empty((FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.float64)
    for i in range(frames):
        kernel = corruptions._gaussian_kernel1d(blur_sigma(i), BLUR_TRUNCATE, np.float64)
        radius = len(kernel) // 2
        window = x[BLUR_MARGIN - radius : BLUR_MARGIN + FRAME_SIZE + radius,
                   BLUR_MARGIN - radius : BLUR_MARGIN + FRAME_SIZE + radius]
        blurred = cv2.sepFilter2D(window, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
        roi = blurred[radius : radius + FRAME_SIZE, radius : radius + FRAME_SIZE]
        # A blur of values in [0, 1] by positive weights summing to 1 stays in [0, 1] (to rounding),
        # so the truncating cast needs no clip: floor(y * 255), as _truncate_to_uint8.
        np.multiply(roi.reshape(scaled.shape), 255.0, out=scaled)
        np.copyto(out[i], scaled, casting="unsafe")
    return out


def p_motion_blur(face, rng, frames=NUM_FRAMES, motion_backend="numpy", **_options):
    """Motion blur radius 10, sigma 3, angle (i - 30) * 4 degrees, on the whole 130 px image.

    With the numpy backend only the ROI is blurred, the face padded and converted once for all
    frames (:func:`corruptions.motion_blur_region`: the same bytes as blurring it all and cropping)."""
    if motion_backend == "numpy":
        x0, y0, w, h = DEFAULT_ROI
        angles = [motion_angle(i) for i in range(frames)]
        return corruptions.motion_blur_region(face, MOTION_RADIUS, MOTION_SIGMA, angles, (y0, y0 + h), (x0, x0 + w))
    return _stack(
        [
            _crop(
                corruptions.motion_blur_op(
                    face, MOTION_RADIUS, MOTION_SIGMA, motion_angle(i), backend=motion_backend
                )
            )
            for i in range(frames)
        ]
    )


def p_spatter(face, rng, frames=NUM_FRAMES, colour="rgb", **_options):
    """ImageNet-P's spatter sequence (BENCHMARK.md §3.4): one liquid layer, moved down every frame."""
    liquid = spatter_layer(rng)  # float64 throughout, as the original's layer and np.convolve
    # The droplet mask needs the whole layer (edges, distances), but the blend with the face is per
    # pixel: it is done on the default ROI only, which gives the same bytes as blending the whole
    # face and cropping.
    # Where the ROI's mask is 0 the frame is the clean crop's truncated bytes (computed once); the
    # droplets' pixels are blended alone (corruptions.blend_water_pixels: the same bytes).
    x0, y0, w, h = DEFAULT_ROI
    x = _crop(face).astype(np.float64) / 255.0
    clean = _truncate_to_uint8(x * 255.0)
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    for i in range(frames):
        levels = corruptions.water_mask_levels(liquid)
        peak = int(levels.max())
        out[i] = clean
        if peak > 0:  # else no droplets: the clean frame (corruptions.water_mask gives None)
            index, values = corruptions.blend_water_pixels(x, levels, colour, SPATTER_INTENSITY / peak, (y0, x0))
            values *= 255.0  # in [0, 255] (the blend is clipped to [0, 1]): astype floors, as _truncate_to_uint8
            out[i].reshape(-1, face.shape[2])[index] = values.astype(np.uint8)
        if i + 1 < frames:
            liquid = shift_liquid_down(liquid)
    return out


_BRIGHTNESS_FRAME_TABLES: dict[float, np.ndarray] = {}


def _brightness_frame_table(delta: float) -> np.ndarray:
    """uint8 (65536,) table: entry 256 V + x is channel value x's output byte in a pixel of HSV value V.

    On a uint8 RGB pixel, ``shift_value`` gives each channel from (V, that channel) alone. The table
    is made by the real code: the pixels (x, V, 0), x <= V (whose V is V), through
    :func:`corruptions.shift_value` and :func:`_round_to_uint8` in float64, exactly as a frame goes,
    so a frame by lookup has the same bytes (entries with x > V never occur and stay 0)."""
    table = _BRIGHTNESS_FRAME_TABLES.get(delta)
    if table is None:
        value, level = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
        valid = level <= value
        pixels = np.stack([np.where(valid, level, 0), value, np.zeros_like(value)], axis=-1)
        shifted = _round_to_uint8(corruptions.shift_value(pixels.astype(np.float64) / 255.0, delta))
        table = np.where(valid, shifted[..., 0], 0).astype(np.uint8).ravel()
        _BRIGHTNESS_FRAME_TABLES[delta] = table
    return table


def p_brightness(face, rng, frames=NUM_FRAMES, **_options):
    """HSV V + (i - 15) * 2 / 100 (-0.30 ... +0.28); float frames rounded half to even.

    RGB faces go by table (:func:`_brightness_frame_table`, the same bytes as the float64 path);
    grey faces take the float path (clip(x + delta), docs/BENCHMARK.md §9.3)."""
    if face.shape[2] == 1:
        x = _clean_roi_float(face)
        return _stack(
            [_round_to_uint8(corruptions.shift_value(x, brightness_delta(i))) for i in range(frames)]
        )
    clean = _crop(face)
    index = (corruptions._hsv_value(clean).astype(np.intp) << 8)[..., None] + clean
    out = np.empty((frames, *clean.shape), np.uint8)
    for i in range(frames):
        _brightness_frame_table(brightness_delta(i)).take(index, out=out[i])
    return out


def p_translate(face, rng, frames=NUM_FRAMES, **_options):
    """Image unchanged; ROI (i, 15, 100, 100): the x offset runs 0 ... 29."""
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    for i in range(frames):
        out[i] = _crop(face, (i, DEFAULT_ROI[1], FRAME_SIZE, FRAME_SIZE))
    return out


def p_rotate(face, rng, frames=NUM_FRAMES, **_options):
    """Rotation about (65, 65) by i - 15 degrees (counter-clockwise positive), 115 px canvas."""
    centre = (FACE_SIZE / 2, FACE_SIZE / 2)
    return _warp_frames(face, [cv2.getRotationMatrix2D(centre, rotation_angle(i), 1.0) for i in range(frames)])


def p_scale(face, rng, frames=NUM_FRAMES, **_options):
    """Square ROI of side int(130 - 1.7 * 30 * (i / 30)), centred, resized to 100 (zoom in)."""
    out = np.empty((frames, FRAME_SIZE, FRAME_SIZE, face.shape[2]), np.uint8)
    for i in range(frames):
        out[i] = _crop(face, scale_roi(i))
    return out


def p_shear(face, rng, frames=NUM_FRAMES, **_options):
    """Shear [[1, t, 0], [t, 1, 0]], t = 0.01 (i - 15), about the origin (FAITHFUL), 115 px canvas."""
    return _warp_frames(face, [np.array([[1.0, t, 0.0], [t, 1.0, 0.0]]) for t in map(shear_factor, range(frames))])


_ORDER = [
    p_gaussian_noise,
    p_shot_noise,
    p_gaussian_blur,
    p_motion_blur,
    p_spatter,
    p_brightness,
    p_translate,
    p_rotate,
    p_scale,
    p_shear,
]
PERTURBATIONS: dict[str, Callable[..., np.ndarray]] = {fn.__name__: fn for fn in _ORDER}
RANDOM_PERTURBATIONS = ("p_gaussian_noise", "p_shot_noise", "p_spatter")
GEOMETRIC_PERTURBATIONS = ("p_translate", "p_rotate", "p_scale", "p_shear")
# The perturbation sets (a dict, so that this module's parameter digest does not change with it).
PERTURBATION_SETS = {
    "rafdb": "the 10 perturbations of RAF-DB-P (docs/BENCHMARK.md §3.3); the only ones in mFP/mFR",
    "imagenet-extra": "p_zoom_blur, p_snow, p_tilt, p_speckle_noise (docs/BENCHMARK.md §3.7)",
    "all": "both sets",
}


def all_perturbations() -> dict[str, Callable[..., np.ndarray]]:
    """The 10 and the ImageNet-P extras (perturbations_extra.py, imported on first use), in order."""
    import perturbations_extra

    return {**PERTURBATIONS, **perturbations_extra.PERTURBATIONS}


def perturbation_names(perturbation_set: str = "rafdb") -> tuple[str, ...]:
    """The names of a set (``rafdb``, ``imagenet-extra`` or ``all``), in registry order."""
    if perturbation_set not in PERTURBATION_SETS:
        raise ValueError(f"perturbation set {perturbation_set!r}: expected one of {', '.join(PERTURBATION_SETS)}")
    if perturbation_set == "rafdb":
        return tuple(PERTURBATIONS)
    names = tuple(all_perturbations())
    return names if perturbation_set == "all" else names[len(PERTURBATIONS):]


def perturb(
    face: np.ndarray,
    name: str,
    rng: np.random.Generator | None = None,
    *,
    motion_backend: str = "numpy",
    colour: str = "rgb",
    frames: int = NUM_FRAMES,
) -> np.ndarray:
    """The checked entry point: the first ``frames`` frames of perturbation ``name`` of ``face``.

    ``face`` is an aligned 130x130x3 uint8 RGB image (:func:`align_face`), or a grey one
    (130x130x1 or 130x130, as FER faces padded like ``--source aligned``): grey in, grey out, with
    the grey paths of the corruptions (docs/BENCHMARK.md §9.9: brightness on the intensity, the
    water's grey for p_spatter, the blur of the plane). Returns ``(frames, 100, 100, C)`` uint8
    (``(frames, 100, 100)`` for a 2-D face). ``name`` may also be an ImageNet-P extra (docs/BENCHMARK.md §3.7,
    :func:`perturbation_names`). ``rng`` feeds the random perturbations (p_gaussian_noise,
    p_shot_noise, p_spatter, p_snow, p_speckle_noise); None means a fresh, unseeded generator. A shorter sequence is the
    prefix of the full one for the same generator state. Raises ValueError on bad arguments.
    """
    if not isinstance(face, np.ndarray):
        raise ValueError(f"face must be a numpy array, got {type(face).__name__}")
    if face.dtype != np.uint8:
        raise ValueError(f"face must be uint8, got {face.dtype}")
    if face.shape not in ((FACE_SIZE, FACE_SIZE, 3), (FACE_SIZE, FACE_SIZE, 1), (FACE_SIZE, FACE_SIZE)):
        raise ValueError(
            f"face must be {FACE_SIZE}x{FACE_SIZE}x3 (an aligned face, see align_face), or grey "
            f"{FACE_SIZE}x{FACE_SIZE}x1 or {FACE_SIZE}x{FACE_SIZE}, got shape {face.shape}"
        )
    function = PERTURBATIONS.get(name) or all_perturbations().get(name)
    if function is None:
        raise ValueError(f"unknown perturbation {name!r}; valid: {', '.join(all_perturbations())}")
    if motion_backend not in MOTION_BACKENDS:
        raise ValueError(f"motion_backend must be one of {', '.join(MOTION_BACKENDS)}, got {motion_backend!r}")
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_MODES)}, got {colour!r}")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not 1 <= frames <= NUM_FRAMES:
        raise ValueError(f"frames must be an integer in 1..{NUM_FRAMES}, got {frames!r}")
    if rng is None:
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    source = np.ascontiguousarray(face if face.ndim == 3 else face[:, :, None])
    out = function(source, rng, frames=int(frames), motion_backend=motion_backend, colour=colour)
    if out.shape != (int(frames), FRAME_SIZE, FRAME_SIZE, source.shape[2]):  # never expected
        raise AssertionError(f"{name} returned shape {out.shape} for a face of shape {source.shape}")
    return out if face.ndim == 3 else out[..., 0]
