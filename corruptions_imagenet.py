"""The eight further ImageNet-C corruptions at face size (docs/BENCHMARK.md §2.9; set ``imagenet-extra``).

impulse_noise, speckle_noise, glass_blur, snow, frost, fog, elastic_transform and saturate, written
after Hendrycks' ImageNet-C definitions with three changes: no image size is hard-coded (every 224
became the real H x W), every random draw comes from the ``rng`` argument, and the resolution
scaling is explicit. Each function is ``fn(image, severity, rng, param_set=..., **options)`` of an
RGB uint8 image and returns a float image in [0, 1] (the caller, :func:`corruptions.corrupt`, makes
the single final clip-and-floor of docs/BENCHMARK.md §2.2) or, where it is cheaper, the uint8 image
after that same clip-and-floor (all but frost on grey images: the same bytes).

``param_set`` (required; no default, recorded in the export manifest):

- ``imagenet224``: ImageNet-C's absolute values (pixels as at 224 px), whatever the image size;
- ``imagenet64``: the Tiny-ImageNet-C (64 px) values, only for the corruptions that have them
  (impulse_noise, glass_blur, fog); the others raise ValueError;
- ``scaled``: the 224 px values with every length in pixels multiplied by H / 224: blur sigmas,
  glass_blur's displacement (rounded, at least 1 px), snow's motion-blur radius and sigma,
  elastic_transform's three lengths and the frost texture's feature size.

Frost: ImageNet-C blends a random crop of one of its frost photographs. The project ships no
photographs and downloads nothing; :func:`frost_bank` draws six frost textures instead (a fractal
haze plus branching ice needles, blue-white; mean about 0.4), twice the image's size, from a fixed
seed, and :func:`frost_crop` picks a random window of one of them with the image's ``rng``,
blended with ImageNet-C's weights. Documented in docs/CORRUPTIONS.md, shown by ``rafdb_aug_dataset.py preview
--corruption-set imagenet-extra``. Results are therefore not comparable with ImageNet-C's frost.

glass_blur is vectorised: Hendrycks' per-pixel loop (a one-way copy A <- B at random offsets, run
bottom-right to top-left, each step seeing the copies made before it) is computed for the whole
image at once by following the copy chains (:func:`glass_pass`, on the flat source indices of
:func:`glass_sources`); identical to the loop for the same offsets (tested against
``bench/reference_corruptions.py``).
"""

from __future__ import annotations

import functools
import math
import threading

import cv2
import numpy as np
import scipy.ndimage

import corruptions

NOISE_SAMPLERS = corruptions.NOISE_SAMPLERS  # in this module's parameter digest (docs/BENCHMARK.md §2.7)

PARAM_SETS = ("imagenet224", "imagenet64", "scaled")
BASE_SIZE = 224  # ImageNet-C's image side: the "scaled" set multiplies lengths by H / BASE_SIZE

# ImageNet-C (224 px) tables, s = 1..5 (docs/BENCHMARK.md §2.9).
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)  # salt-and-pepper fraction of values replaced
MULTIPLICATIVE_NOISE_SIGMA = (0.15, 0.2, 0.35, 0.45, 0.6)  # x + x * N(0, sigma)
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, delta, iterations)
SNOW = (  # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (strength, wibble decay)
# (alpha, sigma, affine) in px at 224; "244" is ImageNet-C's own typo for 224, kept (FAITHFUL).
ELASTIC = tuple((244 * a, 244 * s, 244 * f) for a, s, f in
                ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)))
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV S * a + b

# Tiny-ImageNet-C (64 px) values, where known (docs/BENCHMARK.md §2.9).
IMPULSE_AMOUNT_64 = (0.01, 0.02, 0.05, 0.08, 0.14)
GLASS_64 = ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2))
FOG_64 = ((0.4, 3), (0.7, 3), (1.0, 2.5), (1.5, 2), (2.0, 1.75))
HAS_64_VALUES = ("impulse_noise", "glass_blur", "fog")

SNOW_ANGLE_RANGE = (-135.0, -45.0)  # degrees, uniform
# Procedural frost (documented in docs/CORRUPTIONS.md): feature sizes in px at 224.
FROST_NEEDLES_PER_KPX = 5.0  # needles per 1000 pixels of image area
FROST_NEEDLE_LENGTH = (4.0, 24.0)  # px at 224, uniform
FROST_TINT = (0.86, 0.94, 1.0)  # RGB: blue-white ice
# ImageNet-C blends a random crop of one of its frost photographs; here the "photographs" are a bank
# of procedural textures, FROST_BANK_SIZE per (image shape, scale), each FROST_BANK_SPAN times the
# image's height and width, drawn once per process from the bank's own fixed seed.
FROST_BANK_SIZE = 6
FROST_BANK_SPAN = 2
FROST_BANK_SEED = 20221


def _check_param_set(param_set, name):
    if param_set not in PARAM_SETS:
        raise ValueError(f"{name}: param_set must be one of {', '.join(PARAM_SETS)} (no default; "
                         f"docs/BENCHMARK.md §2.9), got {param_set!r}")
    if param_set == "imagenet64" and name not in HAS_64_VALUES:
        raise ValueError(f"{name}: param_set 'imagenet64' has no values for it (known only for "
                         f"{', '.join(HAS_64_VALUES)}); use imagenet224 or scaled")


def _floor_in_place(x: np.ndarray) -> np.ndarray:
    """``corruptions.to_uint8`` (clip to [0, 1], times 255, floor) of a float array this module
    owns, without its two temporaries: the same bytes."""
    np.clip(x, 0.0, 1.0, out=x)
    x *= np.float32(255.0)
    return x.astype(np.uint8)


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A work array kept per thread and reused between calls (contents undefined). Fresh arrays of
    a few hundred kB are mapped and unmapped by malloc on every call and their page faults cost
    about as much as the arithmetic at 100 px; reused ones stay mapped and in cache."""
    store = _SCRATCH.__dict__
    key = (name, shape, np.dtype(dtype).str)
    array = store.get(key)
    if array is None:
        if len(store) > 64:  # many image sizes: start afresh rather than grow without bound
            store.clear()
        array = store[key] = np.empty(shape, dtype)
    return array


def _image_scratch(image: np.ndarray, name: str, shape: tuple, dtype, fill) -> np.ndarray:
    """The work array ``name`` (:func:`_scratch`) holding ``fill(image, array)``, filled only when it
    does not already hold that image's values (same shape and bytes). For values that the five
    severities of one image share: an export makes them in a row, so four of five calls find them
    ready, and no fresh array is mapped per image. Read it only: the next image overwrites it."""
    store = _SCRATCH.__dict__
    array = _scratch(name, shape, dtype)
    owner = (image.shape, image.dtype.str, image.tobytes())
    filled = store.get(("filled", name))
    if filled is None or filled[1] is not array or filled[0] != owner:
        fill(image, array)
        store[("filled", name)] = (owner, array)
    return array


def length_scale(param_set: str, height: int) -> float:
    """The factor of pixel lengths: H / 224 under ``scaled``, else 1."""
    return height / BASE_SIZE if param_set == "scaled" else 1.0


# --------------------------------------------------------------------------------------------
# Noises


def impulse_noise(image, severity, rng, param_set=None, **_options):
    """Salt and pepper on every value independently: with probability ``amount`` a value becomes
    0 or 1 (equally likely), as skimage ``random_noise(mode='s&p')``; one uniform draw per value.
    uint8 out: an untouched value floors back to its byte, salt is 255, pepper 0."""
    _check_param_set(param_set, "impulse_noise")
    amount = (IMPULSE_AMOUNT_64 if param_set == "imagenet64" else IMPULSE_AMOUNT)[severity - 1]
    u = rng.random(image.shape, dtype=np.float32)
    # Byte masks instead of boolean indexing (~10x faster): every value hit (u < amount) is set to
    # 255, then the pepper ones (u < amount / 2, a subset) cleared: salt where amount / 2 <= u < amount.
    hit = (u < amount).view(np.uint8)  # 0 / 1
    out = np.bitwise_or(image, np.multiply(hit, 255, out=hit))
    pepper = (u < amount / 2).view(np.uint8)
    out &= np.subtract(pepper, 1, out=pepper)  # 0 -> 255 (keep), 1 -> 0 (clear)
    return out


def speckle_noise(image, severity, rng, param_set=None, **_options):
    """clip(x + x * N(0, sigma)), sigma from the table (the same for every parameter set), computed
    as x (1 + sigma n) in float32 and returned floored to uint8 (docs/BENCHMARK.md §2.2)."""
    _check_param_set(param_set, "speckle_noise")
    noise = corruptions.standard_normal(rng, image.shape)  # Box-Muller, docs/BENCHMARK.md §2.7
    noise *= np.float32(MULTIPLICATIVE_NOISE_SIGMA[severity - 1])
    noise += 1.0
    noise *= corruptions.to_float01(image)  # (1 + sigma n) x: the product x (1 + sigma n)
    np.clip(noise, 0.0, 1.0, out=noise)
    noise *= np.float32(255.0)
    return noise.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# glass_blur


def glass_parameters(severity: int, param_set: str, height: int) -> tuple[float, int, int]:
    """(sigma, delta, iterations) for the parameter set; ``scaled`` rounds delta, at least 1 px."""
    if param_set == "imagenet64":
        return GLASS_64[severity - 1]
    sigma, delta, iterations = GLASS[severity - 1]
    k = length_scale(param_set, height)
    return sigma * k, max(1, int(round(delta * k))), iterations


def glass_offsets(shape_hw, delta, iterations, rng):
    """The random offsets of glass_blur: (iterations, rows, columns, 2) ints in [-delta, delta),
    (dx, dy) for every visited pixel, rows H-delta..delta+1 and columns W-delta..delta+1 in visiting
    order (bottom-right first), as ImageNet-C's ``randint(-delta, delta, size=2)`` per pixel.

    Equal to ``rng.integers(-delta, delta, size=...)`` and leaving ``rng`` in the same state (tested).
    numpy draws each value by Lemire's method from a 32-bit word (PCG64: the low, then the high half
    of each 64-bit output): the high 32 bits of word x 2 delta. For a power-of-two span 2 delta no
    word is ever rejected and the value is the word's top log2(2 delta) bits, which are read here
    straight from the raw outputs as int8 (4x faster than int64 draws). Other spans and generators,
    or a PCG64 holding a buffered 32-bit half, use ``rng.integers`` itself."""
    height, width = shape_hw
    rows, columns = max(0, height - 2 * delta), max(0, width - 2 * delta)
    shape = (iterations, rows, columns, 2)
    span = 2 * delta
    if (span & (span - 1) or span > 128 or type(rng.bit_generator) is not np.random.PCG64
            or rng.bit_generator.state["has_uint32"]):
        return rng.integers(-delta, delta, size=shape)
    words = corruptions.raw_words32(rng, math.prod(shape))  # an even count: no half left buffered
    top_bytes = words.view(np.uint8)[3::4]  # little-endian words: byte 3 is the top one
    offsets = np.right_shift(top_bytes, np.uint8(9 - span.bit_length())).view(np.int8)
    offsets -= np.int8(delta)
    return offsets.reshape(shape)


@functools.lru_cache(maxsize=64)
def _glass_geometry(height: int, width: int, delta: int):
    """(visited flat indices in visiting order, visiting rank of every flat index -- n, past the
    last rank, for pixels never visited -- and the ranks 0..n-1), read-only, cached per size."""
    rows = np.arange(height - delta, delta, -1)  # visiting order: bottom-right first
    columns = np.arange(width - delta, delta, -1)
    visited = (rows[:, None] * width + columns[None, :]).ravel()
    ranks = np.arange(visited.size)
    rank_of = np.full(height * width, visited.size, np.intp)
    rank_of[visited] = ranks
    for array in (visited, ranks, rank_of):
        array.setflags(write=False)
    return visited, rank_of, ranks


def glass_sources(shape_hw, delta, iterations, rng) -> np.ndarray:
    """The flat source index ``visited + dy W + dx`` of every visit of every pass: (iterations,
    visits) intp in visiting order, for the offsets (dx, dy) of :func:`glass_offsets` -- the same
    draws, leaving ``rng`` in the same state.

    On glass_offsets' fast path (PCG64, a power-of-two span 2 delta, no buffered half) the pair
    (dx, dy) of a visit is the low and the high 32-bit half of one raw 64-bit output, each value
    being its half's top log2(2 delta) bits minus delta. Both are shifted straight out of the
    64-bit words and combined into the flat index in int64 arithmetic, exact for any image this
    size; one pass over the words instead of byte views, an int8 array and a widening per pass."""
    height, width = shape_hw
    visited = _glass_geometry(height, width, delta)[0]
    span = 2 * delta
    if (span & (span - 1) or span > 128 or type(rng.bit_generator) is not np.random.PCG64
            or rng.bit_generator.state["has_uint32"]):
        offsets = glass_offsets(shape_hw, delta, iterations, rng)
        sources = np.multiply(offsets[..., 1], width, dtype=np.intp)
        sources += offsets[..., 0]
        sources = sources.reshape(iterations, visited.size)
    else:
        words = rng.bit_generator.random_raw(iterations * visited.size)  # = raw_words32's draw
        bits = span.bit_length() - 1  # the value's bits at the top of each 32-bit half
        sources = np.right_shift(words, np.uint64(64 - bits)).view(np.int64)  # dy + delta
        sources *= width
        words >>= np.uint64(32 - bits)
        words &= np.uint64(span - 1)  # dx + delta
        sources += words.view(np.int64)
        sources -= delta * (width + 1)  # (dy W + dx), each less delta
        sources = sources.reshape(iterations, visited.size)
    sources += visited
    return sources


def glass_shuffle(x: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """One pass of ImageNet-C's pixel loop, vectorised. ``x``: H x W (x C); ``offsets`` (rows, cols, 2)
    (one pass of :func:`glass_offsets`); the work is :func:`glass_pass`."""
    height, width = x.shape[:2]
    if offsets.shape[0] == 0 or offsets.shape[1] == 0:
        return x.copy()
    source = np.multiply(offsets[..., 1], width, dtype=np.intp)  # offsets may be int8
    source += offsets[..., 0]
    source = source.reshape(-1)
    source += _glass_geometry(height, width, delta)[0]
    return glass_pass(x, delta, source)


def glass_pass(x: np.ndarray, delta: int, source: np.ndarray) -> np.ndarray:
    """One pass of ImageNet-C's pixel loop for the flat source index of every visit (visiting order;
    one row of :func:`glass_sources`, overwritten).

    The loop visits (h, w) for h = H-delta..delta+1 and w = W-delta..delta+1 (descending) and sets
    x[h, w] = x[h + dy, w + dx] (the "swap" is a one-way copy). The source value is the original
    one unless the source pixel was visited earlier, in which case it is what that visit copied:
    following each pixel's chain of earlier-visited sources to its end gives the loop's result.
    Chains are followed by pointer doubling (log2 of the longest chain steps), on the visits whose
    source was visited earlier only: every other pointer is its own end and never moves.
    For delta = 1 there are none: dx, dy lie in {-1, 0}, so a source is the visit itself or a pixel
    above or left of it, visited later (or never). The visited pixels form the rectangle
    delta+1..H-delta x delta+1..W-delta, written as one slice.
    """
    height, width = x.shape[:2]
    rows, columns = height - 2 * delta, width - 2 * delta
    if rows <= 0 or columns <= 0:
        return x.copy()
    if delta > 1:
        _, rank_of, ranks = _glass_geometry(height, width, delta)
        # Step to the source's visit if it came earlier (a smaller rank); else the chain ends here.
        # A never-visited source has rank n, larger than every own rank, so the step is a minimum.
        pointer = np.minimum(rank_of.take(source), ranks)
        moved = np.flatnonzero(pointer != ranks)  # visits whose chain goes on
        if moved.size:
            targets = pointer.take(moved)
            # Every pointer is at most its own rank, so a jump never raises one: the pointers are
            # all final when a jump leaves their sum unchanged (one reduction, not a comparison).
            total = targets.sum()
            while True:
                jumped = pointer.take(targets)
                jumped_total = jumped.sum()
                if jumped_total == total:
                    break
                pointer[moved] = jumped
                targets, total = jumped, jumped_total
            # The chain's end reads its source's original value (an end is not among ``moved``).
            source[moved] = source.take(targets)
    flat = x.reshape(height * width, *x.shape[2:])
    values = flat.take(source, axis=0).reshape(rows, columns, *x.shape[2:])
    out = x.copy()
    out[delta + 1:height - delta + 1, delta + 1:width - delta + 1] = values[::-1, ::-1]
    return out


def glass_blur(image, severity, rng, param_set=None, **_options):
    """Gaussian blur, ``iterations`` passes of local pixel copies (offsets in [-delta, delta)),
    gaussian blur again; the intermediate image is uint8 (truncated), as in ImageNet-C. An RGB
    pixel is moved as one 32-bit word (its three bytes and an alpha byte, packed and unpacked by
    ``cv2.cvtColor``) during the passes."""
    _check_param_set(param_set, "glass_blur")
    sigma, delta, iterations = glass_parameters(severity, param_set, image.shape[0])
    blurred = corruptions.gaussian_blur_op(corruptions.to_float01(image), sigma)
    sources = glass_sources(image.shape[:2], delta, iterations, rng)
    blurred *= np.float32(255.0)
    x = blurred.astype(np.uint8)  # truncation
    rgb = x.shape[2] == 3
    if rgb:
        x = cv2.cvtColor(x, cv2.COLOR_RGB2RGBA).view(np.uint32)[..., 0]
    for source in sources:
        x = glass_pass(x, delta, source)
    if rgb:
        x = cv2.cvtColor(x[..., None].view(np.uint8), cv2.COLOR_RGBA2RGB)
    return _floor_in_place(corruptions.gaussian_blur_op(corruptions.to_float01(x), sigma))


# --------------------------------------------------------------------------------------------
# snow, fog, frost


@functools.lru_cache(maxsize=64)
def zoom_operator(size: int, zoom: float) -> np.ndarray:
    """Dense, cached, read-only copy of :func:`corruptions.zoom_axis_matrix` (one axis of the
    clipped zoom): built once per (size, zoom) instead of once per call."""
    operator = corruptions.zoom_axis_matrix(size, zoom).toarray()
    operator.setflags(write=False)
    return operator


def clipped_zoom(plane: np.ndarray, zoom: float) -> np.ndarray:
    """Centre zoom by ``zoom`` of a 2-D plane, cropped back to its size (ImageNet-C's clipped_zoom,
    bilinear; per-axis operators of :func:`corruptions.zoom_axis_matrix`)."""
    return zoom_operator(plane.shape[0], float(zoom)) @ plane @ zoom_operator(plane.shape[1], float(zoom)).T


def snow_layer(shape_hw, loc, scale, zoom, threshold, rng) -> np.ndarray:
    """The snow layer before its motion blur: N(loc, scale), clipped zoom, values < threshold -> 0,
    as uint8 (clip to [0, 1], times 255, truncated). Draws loc + scale z once, z from
    :func:`corruptions.standard_normal` (float32 normals; the product and sum in float64). The
    threshold is ``cv2.threshold``'s to-zero below the next float64 under it (keeps exactly the
    values >= threshold); it zeroes the negative values too, so only the upper clip is left."""
    layer = np.multiply(corruptions.standard_normal(rng, tuple(shape_hw)), scale, dtype=np.float64)
    layer += loc
    layer = clipped_zoom(layer, zoom)
    cv2.threshold(layer, np.nextafter(threshold, -np.inf), 0.0, cv2.THRESH_TOZERO, dst=layer)
    np.minimum(layer, 1.0, out=layer)
    layer *= 255
    return layer.astype(np.uint8)


def _channels(plane: np.ndarray, channels: int) -> np.ndarray:
    """An H x W plane repeated into ``channels`` channels (H x W x C; OpenCV's merge for C > 1)."""
    return plane[..., None] if channels == 1 else cv2.merge([plane] * channels)


def snow_base(x: np.ndarray) -> np.ndarray:
    """max(x, 1.5 grey(x) + 0.5) of a float32 H x W x C image, float32 (grey(x) is x itself when C = 1)."""
    if corruptions.is_grey(x):
        return np.maximum(x, x * np.float32(1.5) + np.float32(0.5))
    bright = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
    bright *= np.float32(1.5)
    bright += np.float32(0.5)
    return np.maximum(x, _channels(bright, x.shape[2]))


def _blend_snow(x: np.ndarray, base: np.ndarray, flakes: np.ndarray, blend: float) -> np.ndarray:
    """blend x + (1 - blend) base + L + rot180(L), unclipped, on float32 arrays: ``base`` is
    :func:`snow_base` of ``x``, ``flakes`` L an H x W plane, repeated into x's channels by OpenCV
    (numpy runs equal-shaped arrays several times faster than broadcasts over a last axis of 3)."""
    channels = x.shape[2]
    out = base * np.float32(1 - blend)
    out += x * np.float32(blend)  # (1 - b) m + b x: the same sum as b x + (1 - b) m
    out += _channels(flakes, channels)
    out += _channels(cv2.flip(flakes, -1), channels)  # rotated by 180 degrees
    return out


def add_snow(x: np.ndarray, flakes: np.ndarray, blend: float) -> np.ndarray:
    """clip(blend x + (1 - blend) max(x, 1.5 grey(x) + 0.5) + L + rot180(L)); ``flakes`` L in [0, 1].

    On a grey ``x`` (H x W x 1) grey(x) is x itself. float32 ``x`` and ``flakes`` take
    :func:`_blend_snow`'s float32 operations, the same per value as the broadcasts written out."""
    if x.dtype != np.float32 or flakes.dtype != np.float32:
        grey = x if corruptions.is_grey(x) else cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]
        out = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
        flakes = flakes[..., None]
        return np.clip(out + flakes + flakes[::-1, ::-1], 0.0, 1.0)
    return np.clip(_blend_snow(x, snow_base(x), flakes, blend), 0.0, 1.0)


def _fill_snow_base(image: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` (2, H, W, C) float32 with x = the image / 255 and :func:`snow_base` of x."""
    np.copyto(out[0], corruptions.to_float01(image))
    np.copyto(out[1], snow_base(out[0]))


def snow(image, severity, rng, param_set=None, motion_backend="numpy", **_options):
    """Snowflakes: a thresholded, zoomed noise layer, motion-blurred at an angle ~ U(-135, -45)
    degrees (radius and sigma scaled under ``scaled``), added twice (as drawn and rotated 180).
    The numpy motion blur acts on the single grey plane (the same values as on three equal channels).
    For a uint8 image, x / 255 and :func:`snow_base` are kept for the next severity of the same
    image (:func:`_image_scratch`)."""
    _check_param_set(param_set, "snow")
    loc, scale, zoom, threshold, radius, sigma, blend = SNOW[severity - 1]
    k = length_scale(param_set, image.shape[0])
    layer = snow_layer(image.shape[:2], loc, scale, zoom, threshold, rng)
    angle = rng.uniform(*SNOW_ANGLE_RANGE)
    plane = layer[..., None] if motion_backend == "numpy" else np.repeat(layer[..., None], 3, axis=2)
    blurred = corruptions.motion_blur_op(plane, max(1, int(round(radius * k))), sigma * k, angle,
                                         backend=motion_backend)[..., 0]
    flakes = blurred / np.float32(255.0)
    if image.dtype != np.uint8:  # a float image is blended in its own precision (add_snow)
        return _floor_in_place(add_snow(corruptions.to_float01(image), flakes, blend))
    x, base = _image_scratch(image, "snow_base", (2, *image.shape), np.float32, _fill_snow_base)
    return _floor_in_place(_blend_snow(x, base, flakes, blend))


@functools.lru_cache(maxsize=16)
def _plasma_wibbles(levels: int, wibble_decay: float) -> tuple[np.ndarray, np.ndarray]:
    """Per draw of :func:`plasma_fractal` (3 n^2 per scale), the scale's 2 wibble and wibble: the
    same floats as the per-scale loop makes (100, then divided by ``wibble_decay`` per scale), so
    that all draws are transformed at once. Read-only, cached."""
    counts = [3 * 4 ** level for level in range(levels)]
    wibbles, wibble = [], 100.0
    for _ in range(levels):
        wibbles.append(wibble)
        wibble /= wibble_decay
    twice = np.repeat([w - -w for w in wibbles], counts)  # (wibble - -wibble), as rng.uniform's span
    once = np.repeat(wibbles, counts)
    for array in (twice, once):
        array.setflags(write=False)
    return twice, once


_PLASMA_SCALAR_LEVELS = 2


def _plasma_start(noise: list, levels: int) -> list:
    """The first ``levels`` scales of :func:`_plasma_map` in Python floats: the (2^levels + 1)-square
    grid (corners plus a wrapped last row and column) from the transformed draws ``noise``.
    Python's float + and * are the IEEE double operations of numpy's float64 ufuncs, and every sum
    is made in the array code's order: centre ((C00 + C10) + (C01 + C11)) / 4 + u, "left" edge
    (((M + M_up) + C00) + C01) / 4 + u, "top" edge (((M + M_left) + C00) + C10) / 4 + u."""
    padded = [[0.0, 0.0], [0.0, 0.0]]
    used = 0
    for level in range(levels):
        n = 1 << level
        size = n * n
        centres = [[((padded[i][j] + padded[i + 1][j]) + (padded[i][j + 1] + padded[i + 1][j + 1])) * 0.25
                    + noise[used + i * n + j] for j in range(n)] for i in range(n)]
        left = [[(((centres[i][j] + centres[i - 1][j]) + padded[i][j]) + padded[i][j + 1]) * 0.25
                 + noise[used + size + i * n + j] for j in range(n)] for i in range(n)]
        top = [[(((centres[i][j] + centres[i][j - 1]) + padded[i][j]) + padded[i + 1][j]) * 0.25
                + noise[used + 2 * size + i * n + j] for j in range(n)] for i in range(n)]
        used += 3 * size
        grown = []
        for i in range(n):
            grown.append([value for j in range(n) for value in (padded[i][j], left[i][j])])
            grown.append([value for j in range(n) for value in (top[i][j], centres[i][j])])
        grown.append(list(grown[0]))  # wrapped row, then column
        for row in grown:
            row.append(row[0])
        padded = grown
    return padded


def _plasma_map(map_size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`plasma_fractal` before its normalisation to [0, 1] (a fresh float64 array)."""
    if map_size & (map_size - 1):
        raise ValueError(f"plasma map size must be a power of 2, got {map_size}")
    levels = map_size.bit_length() - 1
    noise = rng.random(4 ** levels - 1)  # 3 n^2 per scale for n = 1, 2, 4, ..., map_size / 2
    # rng.uniform(-w, w) * w for every draw: (-w + (2w) u) * w, in numpy's order, scale by scale's w.
    twice, once = _plasma_wibbles(levels, float(wibble_decay))
    noise *= twice
    noise -= once  # + (-w): the same rounding
    noise *= once
    # The first scales (n = 1, 2: 15 values) in Python floats, each numpy call costing more than
    # the arithmetic there; the same IEEE double operations in the same order (_plasma_start).
    start = min(levels, _PLASMA_SCALAR_LEVELS)
    used = 4 ** start - 1
    padded = np.array(_plasma_start(noise[:used].tolist(), start))
    if start == levels:  # the last scale carries no wrapped row and column (map size 1: none ran)
        return padded[:map_size, :map_size].copy() if levels else padded
    for level in range(start, levels):
        n = 1 << level
        size = n * n
        corners = padded[:n, :n]
        pair = padded[:n] + padded[1:]  # C[i, j] + C[i + 1, j], wrapped column included
        centres = pair[:, :-1] + pair[:, 1:]  # ... + (C[i, j + 1] + C[i + 1, j + 1])
        centres *= 0.25  # / 4: a power of two, so the same correctly rounded value, and faster
        centres += noise[used:used + size].reshape(n, n)
        shifted = np.empty((n + 1, n + 1))  # the centres with a wrapped row and column in front
        shifted[1:, 1:] = centres
        shifted[0, 1:] = centres[-1]
        shifted[1:, 0] = centres[:, -1]
        edges = np.empty((2, n, n))  # [0]: even rows, odd columns ("left"); [1]: odd rows, even columns
        np.add(centres, shifted[:-1, 1:], out=edges[0])  # M[i, j] + M[i - 1, j]
        np.add(centres, shifted[1:, :-1], out=edges[1])  # M[i, j] + M[i, j - 1]
        edges += corners
        edges[0] += padded[:n, 1:]  # + C[i, j + 1]
        edges[1] += padded[1:, :n]  # + C[i + 1, j]
        edges *= 0.25
        edges += noise[used + size:used + 3 * size].reshape(2, n, n)
        used += 3 * size
        last = level == levels - 1  # the final map needs no wrapped row and column
        side = 2 * n
        grown = np.empty((side, side) if last else (side + 1, side + 1))
        grown[0:side:2, 0:side:2] = corners
        grown[1:side:2, 1:side:2] = centres
        grown[0:side:2, 1:side:2] = edges[0]
        grown[1:side:2, 0:side:2] = edges[1]
        if not last:
            grown[side, :side] = grown[0, :side]
            grown[:, side] = grown[:, 0]
        padded = grown
    return padded


def plasma_fractal(map_size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma on a ``map_size`` x ``map_size`` grid (a power of 2), in [0, 1].

    ImageNet-C's ``plasma_fractal``: start at 0, at each scale fill square centres then diamond
    points with the mean of their neighbours (wrapping) plus U(-wibble, wibble) * wibble, wibble
    starting at 100 and divided by ``wibble_decay`` per scale. Draws from ``rng`` only.

    Computed scale by scale on contiguous arrays (:func:`_plasma_map`): the corners carry one
    wrapped row and column, so the wrapping neighbours are slices, and all uniforms come from one
    ``rng.random`` call (the same stream as the per-scale ``rng.uniform`` calls), transformed at
    once as numpy does, (-w + 2w u) * w, with each scale's w (:func:`_plasma_wibbles`). The same
    float64 sums in the same order, so the same values (tested against the grid version).
    """
    plasma = _plasma_map(map_size, wibble_decay, rng)
    plasma -= plasma.min()
    plasma /= plasma.max()
    return plasma


def next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def fog(image, severity, rng, param_set=None, **_options):
    """x + strength * plasma (map of the next power of 2 of the larger side, cropped to H x W),
    rescaled by max(x) / (max(x) + strength). Float64 on the whole image (the haze repeated per
    channel by ``cv2.merge``), returned as uint8 (the final floor of docs/BENCHMARK.md §2.2).

    No clip is needed: 0 <= plasma <= 1, so 0 <= h = fl(strength plasma) <= strength, and
    0 <= x <= peak = max(x); rounding is monotone, so fl(x + h) <= fl(peak + strength) = d, then
    fl(fl(x + h) peak) <= fl(d peak) <= d (peak <= 1) and the quotient by d is at most fl(d / d) = 1."""
    _check_param_set(param_set, "fog")
    strength, decay = (FOG_64 if param_set == "imagenet64" else FOG)[severity - 1]
    height, width = image.shape[:2]
    peak = _UNIT64_LUT[image.max()]  # max(x): the table is increasing
    haze = strength * plasma_fractal(next_power_of_two(max(height, width)), decay, rng)[:height, :width]
    channels = image.shape[2] if image.ndim == 3 else 1
    if channels > 1:
        haze = cv2.merge([haze] * channels)
    x = cv2.LUT(image, _UNIT64_LUT).reshape(haze.shape)  # float64 levels; faster than numpy's take
    x += haze
    x *= peak
    x /= peak + strength  # (x + strength plasma) * peak / (peak + strength), in that order
    x *= 255.0
    return x.astype(np.uint8).reshape(image.shape)


def frost_plane(shape_hw, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A procedural frost texture before its tint, float32 H x W (docs/CORRUPTIONS.md, "frost").

    (1) haze: 0.2 + 0.3 x a plasma fractal (decay 1.6); (2) ice needles: round(5 per 1000 px of
    area) straight needles from uniform points at uniform angles, length U(4, 24) px x ``scale``,
    each with two side branches at +-60 degrees from a uniform point along it, half its length,
    drawn anti-aliased with brightness U(0.45, 0.9), kept where brighter than the haze; (3) a
    gaussian blur of 0.6 px x ``scale``. :func:`frost` tints it (0.86, 0.94, 1.0); the tinted
    mean is about 0.4 (ImageNet-C's frost photographs are of that order)."""
    height, width = shape_hw
    haze = 0.2 + 0.3 * plasma_fractal(next_power_of_two(max(height, width)), 1.6, rng)[:height, :width]
    needles = np.zeros((height, width), np.float32)
    count = int(round(FROST_NEEDLES_PER_KPX * height * width / 1000.0))
    # rng.uniform((0, 0), (W, H), size=(count, 2)) is 0 + (W, H) u: the same draws and products
    starts = rng.random((count, 2)) * (width, height)
    angles = rng.uniform(0, 2 * math.pi, size=count)
    lengths = rng.uniform(*FROST_NEEDLE_LENGTH, size=count) * scale
    brightness = rng.uniform(0.45, 0.9, size=count)
    branch_at = rng.uniform(0.2, 0.8, size=count)
    shift = 4  # sub-pixel precision of cv2.line: coordinates in 1/16 px
    unit = 1 << shift
    # Segments (trunk, branch +60, branch -60) per needle, end points computed for all at once.
    branch_x = starts[:, 0] + branch_at * lengths * np.cos(angles)
    branch_y = starts[:, 1] + branch_at * lengths * np.sin(angles)
    x0 = np.stack([starts[:, 0], branch_x, branch_x], axis=1)
    y0 = np.stack([starts[:, 1], branch_y, branch_y], axis=1)
    turned = angles[:, None] + np.array([0.0, math.pi / 3, -math.pi / 3])
    reach = lengths[:, None] * np.array([1.0, 0.5, 0.5])
    x1, y1 = x0 + reach * np.cos(turned), y0 + reach * np.sin(turned)
    segments = np.stack([x0, y0, x1, y1], axis=-1) * unit
    segments = segments.astype(np.int32).reshape(count, 3, 2, 2)  # truncation as int(), as before
    # One polylines call per needle: its three 2-point lines, drawn as three cv2.line calls would be.
    for needle, value in zip(segments, brightness.tolist()):
        cv2.polylines(needles, needle, False, value, 1, cv2.LINE_AA, shift)  # (3, 2, 2): three lines
    texture = np.maximum(haze.astype(np.float32), needles)
    return cv2.GaussianBlur(texture, (0, 0), 0.6 * scale)


# Bank textures made in this process, oldest first: (H, W, scale, index) -> read-only texture. The
# cache only saves time (a texture is the same whenever it is made), so its bound changes no byte.
_FROST_TEXTURES: dict[tuple, np.ndarray] = {}
_FROST_CACHE_BYTES = 64 << 20


def frost_bank_texture(shape_hw: tuple[int, int], scale: float, index: int) -> np.ndarray:
    """Texture ``index`` (0 .. FROST_BANK_SIZE - 1) of the frost "photographs" for images of
    ``shape_hw``: an untinted :func:`frost_plane` (float32, read-only) of FROST_BANK_SPAN x H by
    FROST_BANK_SPAN x W, drawn from ``default_rng(SeedSequence((FROST_BANK_SEED, index)))``. It depends
    on nothing but the shape, ``scale`` and ``index``, so every process makes the same one. Made on
    first use (~4 ms at 100 px) and kept, up to 64 MB of textures per process: a tree of one image
    size pays it six times in all, a tree whose images all differ in size once per image."""
    height, width = int(shape_hw[0]), int(shape_hw[1])
    key = (height, width, float(scale), int(index))
    texture = _FROST_TEXTURES.get(key)
    if texture is None:
        rng = np.random.default_rng(np.random.SeedSequence((FROST_BANK_SEED, int(index))))
        texture = frost_plane((FROST_BANK_SPAN * height, FROST_BANK_SPAN * width), rng, scale)
        texture.setflags(write=False)
        kept = sum(value.nbytes for value in _FROST_TEXTURES.values())
        while _FROST_TEXTURES and kept + texture.nbytes > _FROST_CACHE_BYTES:
            kept -= _FROST_TEXTURES.pop(next(iter(_FROST_TEXTURES))).nbytes
        _FROST_TEXTURES[key] = texture
    return texture


def frost_bank(shape_hw: tuple[int, int], scale: float) -> tuple[np.ndarray, ...]:
    """All FROST_BANK_SIZE textures for images of ``shape_hw`` (:func:`frost_bank_texture`)."""
    return tuple(frost_bank_texture(shape_hw, scale, index) for index in range(FROST_BANK_SIZE))


def frost_crop(shape_hw, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """An H x W window of one bank texture (:func:`frost_bank`), as ImageNet-C crops one of its
    photographs: the texture index ``rng.integers(FROST_BANK_SIZE)``, then the top row
    ``rng.integers(span H - H + 1)`` and the left column ``rng.integers(span W - W + 1)``, in that
    order. A read-only float32 view (untinted)."""
    height, width = shape_hw
    texture = frost_bank_texture((height, width), scale, int(rng.integers(FROST_BANK_SIZE)))
    top = int(rng.integers(texture.shape[0] - height + 1))
    left = int(rng.integers(texture.shape[1] - width + 1))
    return texture[top:top + height, left:left + width]


def frost(image, severity, rng, param_set=None, **_options):
    """clip(a x + b frost), (a, b) from ImageNet-C's table, where frost is a random window of one of
    six procedural textures (:func:`frost_crop`), tinted.

    On a grey image the tinted texture is made grey (``corruptions.grey_weights()``). An RGB image is
    computed per channel plane (tint, clip and blend as float32) and returned as uint8 (the final
    clip and floor of docs/BENCHMARK.md §2.2)."""
    _check_param_set(param_set, "frost")
    image_weight, frost_weight = FROST[severity - 1]
    scale = length_scale(param_set, image.shape[0])
    plane = frost_crop(image.shape[:2], rng, scale)
    if corruptions.is_grey(image):
        texture = np.clip(plane[..., None] * np.array(FROST_TINT, np.float32), 0.0, 1.0)
        texture = texture @ np.array(corruptions.grey_weights(), np.float32)[:, None]
        return np.clip(image_weight * corruptions.to_float01(image) + frost_weight * texture, 0.0, 1.0)
    # float32(v / 255) * a for every level v: the image term of every pixel by one gather.
    weighted = (np.arange(256, dtype=np.float32) / np.float32(255.0)) * np.float32(image_weight)
    planes = []
    for tint, channel in zip(FROST_TINT, cv2.split(image)):
        # The tinted texture's clip to [0, 1] is the identity here: the blurred texture lies in
        # [0, 0.9] (haze 0.2..0.5, needles at most 0.9; the blur averages) and the tint is <= 1.
        texture = plane * np.float32(tint)
        texture *= np.float32(frost_weight)
        x = cv2.LUT(channel, weighted)
        x += texture  # a x + b t: the same float32 sum as b t + a x
        np.clip(x, 0.0, 1.0, out=x)
        x *= np.float32(255.0)
        planes.append(x.astype(np.uint8))
    return cv2.merge(planes)


# --------------------------------------------------------------------------------------------
# elastic_transform, saturate


def elastic_parameters(severity: int, param_set: str, height: int) -> tuple[float, float, float]:
    """(alpha, sigma, affine) in px: ImageNet-C's values, times H / 224 under ``scaled``."""
    k = length_scale(param_set, height)
    return tuple(value * k for value in ELASTIC[severity - 1])


@functools.lru_cache(maxsize=64)
def reflect_gaussian_operator(size: int, sigma: float) -> np.ndarray:
    """The (size x size) matrix G of scipy's ``gaussian_filter1d(., sigma, mode='reflect',
    truncate=3)`` along one axis: G @ u filters the columns of u. Built once per (size, sigma) by
    filtering the identity (read-only, cached). A large-sigma filter (elastic s = 1: sigma = 171 px,
    a 1,025-tap kernel on a 100 px side) then costs two small matrix products instead of a long
    correlation per row; equal to scipy's filter to ~1e-15 (tested)."""
    operator = scipy.ndimage.gaussian_filter1d(np.eye(size), sigma, axis=0, mode="reflect", truncate=3.0)
    operator.setflags(write=False)
    return operator


def smooth_reflect(field: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(field, sigma, mode='reflect', truncate=3)`` of a 2-D field,
    as G_rows @ field @ G_columns^T (:func:`reflect_gaussian_operator`)."""
    rows = reflect_gaussian_operator(field.shape[0], float(sigma))
    columns = reflect_gaussian_operator(field.shape[1], float(sigma))
    return rows @ field @ columns.T


def _axis_weights(c: np.ndarray, n: int, index: np.ndarray, weights: np.ndarray) -> None:
    """Fill ``index`` (2, N) and ``weights`` (2, N) with the indices and weights of order-1
    interpolation along one axis of length ``n`` at the float64 coordinates ``c`` (overwritten),
    computed as scipy's map_coordinates does for mode 'reflect': a coordinate below 0 or above
    n - 1 is first folded back (period 2n, half-sample symmetric) with scipy's own float64
    operations, then w0 = 1 - (c - floor c), w1 = 1 - w0 (not c - floor c: the roundings differ),
    on the indices floor c and floor c + 1 -- after folding c lies in (-1, n), so reflecting those
    indices into 0..n-1 is a clip."""
    period = 2 * n
    low = np.flatnonzero(c < 0)
    if low.size:
        v = c[low]
        far = v < -period
        if far.any():
            v[far] = period * np.trunc(-v[far] / period) + v[far]
        c[low] = np.where(v < -n, v + period, -v - 1)
    high = np.flatnonzero(c > n - 1)
    if high.size:
        v = c[high]
        v -= period * np.trunc(v / period)
        c[high] = np.where(v >= n, period - v - 1, v)
    floor = np.floor(c, out=weights[1])
    index[0] = floor
    np.add(index[0], 1, out=index[1])
    np.maximum(index[0], 0, out=index[0])
    np.minimum(index[1], n - 1, out=index[1])
    np.subtract(c, floor, out=c)
    np.subtract(1.0, c, out=weights[0])
    np.subtract(1.0, weights[0], out=weights[1])


def bilinear_reflect(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.map_coordinates(image[..., c], (rows, columns), order=1, mode='reflect')`` for
    every channel c at once; float32 H x W x C in, float32 out (the shape of ``rows``).

    Bit-identical to scipy (tested): the same coordinate folding and weights (:func:`_axis_weights`)
    and the float64 sum in scipy's order, ((v00 wy0) wx0 + (v01 wy0) wx1) + (v10 wy1) wx0 +
    (v11 wy1) wx1, cast to float32; but one gather of the four corners of every point per channel
    instead of scipy's per-point loop (~3x faster at 100 px). ``rows`` and ``columns``: float64,
    overwritten."""
    height, width, channels = image.shape
    shape = rows.shape
    count = rows.size
    row_index, row_weights = _scratch("ri", (2, count), np.intp), _scratch("rw", (2, count), np.float64)
    column_index, column_weights = _scratch("ci", (2, count), np.intp), _scratch("cw", (2, count), np.float64)
    _axis_weights(rows.reshape(-1), height, row_index, row_weights)
    _axis_weights(columns.reshape(-1), width, column_index, column_weights)
    row_index *= width
    corners = _scratch("corners", (2, 2, count), np.intp)  # [row corner, column corner, point]
    np.add(row_index[:, None, :], column_index[None, :, :], out=corners)
    planes = _scratch("planes", (channels, height * width), np.float64)  # channel-first, float64
    np.copyto(planes, image.reshape(height * width, channels).T)
    terms = _scratch("terms", (2, 2, count), np.float64)
    total = _scratch("total", (channels, count), np.float64)
    row_weights = row_weights[:, None, :]
    for channel in range(channels):
        planes[channel].take(corners, out=terms, mode="clip")  # in range: "clip" writes directly
        terms *= row_weights  # v * wy
        terms *= column_weights  # (v * wy) * wx
        np.add(terms[0, 0], terms[0, 1], out=total[channel])
        total[channel] += terms[1, 0]
        total[channel] += terms[1, 1]
    return total.T.astype(np.float32).reshape(*shape, channels)


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column numbers (int64, H x 1 and 1 x W), broadcast like ``np.mgrid``'s planes."""
    rows, columns = np.arange(height)[:, None], np.arange(width)[None, :]
    rows.setflags(write=False)
    columns.setflags(write=False)
    return rows, columns


def elastic_transform(image, severity, rng, param_set=None, **_options):
    """ImageNet-C's elastic transform: a random affine (the three points centre +- side / 3 each moved
    by U(-affine, affine), warpAffine with reflect-101 border), then a displacement field
    alpha * gaussian(U(-1, 1), sigma, mode reflect, truncate 3) per axis, sampled bilinearly
    (scipy map_coordinates, mode reflect). Its severities are not monotone in damage (FAITHFUL).
    The gaussian is applied as two cached matrices (:func:`smooth_reflect`), same values as scipy's;
    the sampling is :func:`bilinear_reflect`, bit-identical to map_coordinates."""
    _check_param_set(param_set, "elastic_transform")
    alpha, sigma, affine = elastic_parameters(severity, param_set, image.shape[0])
    x = corruptions.to_float01(image).astype(np.float32, copy=False)
    height, width = x.shape[:2]
    centre = np.float32((height, width)) // 2
    side = min(height, width) // 3
    points = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    moved = points + rng.uniform(-affine, affine, size=points.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(points, moved)
    x = cv2.warpAffine(x, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101).reshape(image.shape)
    dx = smooth_reflect(rng.uniform(-1, 1, size=(height, width)), sigma) * alpha
    dy = smooth_reflect(rng.uniform(-1, 1, size=(height, width)), sigma) * alpha
    yy, xx = _pixel_grid(height, width)
    # int64 grid + float32 displacement: float64 coordinates, as np.mgrid + dy.astype(float32) gave.
    out = bilinear_reflect(x, yy + dy.astype(np.float32), xx + dx.astype(np.float32))
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(255.0)
    return out.astype(np.uint8)  # the final floor of docs/BENCHMARK.md §2.2


# uint8 level v -> float64(float32(v) / 255): to_float01 followed by astype(float64), as one gather.
_UNIT64_LUT = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float64)


def _fill_hsv_parts(image: np.ndarray, parts: np.ndarray) -> None:
    """Fill ``parts`` (6, H, W) float64 with the severity-free part of :func:`saturate` for an RGB
    uint8 image: V, chroma V - min, saturation chroma / V (0 where V = 0), and V - c for the
    channels c = R, G, B."""
    value, chroma, saturation, differences = parts[0], parts[1], parts[2], parts[3:]
    for level, plane in zip(differences, cv2.split(image)):
        cv2.LUT(plane, _UNIT64_LUT, dst=level)  # levels c, twice as fast as numpy's take
    red, green, blue = differences
    np.maximum(np.maximum(red, green), blue, out=value)
    np.minimum(np.minimum(red, green), blue, out=chroma)
    np.subtract(value, chroma, out=chroma)
    saturation.fill(0.0)
    np.divide(chroma, value, out=saturation, where=value > 0)
    np.subtract(value, differences, out=differences)


def saturate(image, severity, rng, param_set=None, **_options):
    """HSV saturation S * a + b, clipped, hue and value kept (closed form of skimage's
    rgb2hsv -> hsv2rgb): channel c becomes V - S' V (V - c) / (V - min); grey pixels (S = 0, hue 0
    in skimage) become (V, V (1 - S'), V (1 - S')). RGB only: ``corruptions.corrupt`` refuses grey
    images (a grey image has no saturation; ``corruptions.GREY_UNSUPPORTED``).

    Computed in float64 on channel planes (the same operations per pixel as on the interleaved
    image) and returned as uint8 (the final clip and floor of docs/BENCHMARK.md §2.2). The part
    that does not depend on the severity (:func:`_fill_hsv_parts`) is kept for the next severity
    of the same image (:func:`_image_scratch`)."""
    _check_param_set(param_set, "saturate")
    factor, offset = SATURATE[severity - 1]
    parts = _image_scratch(image, "saturate_parts", (6, *image.shape[:2]), np.float64, _fill_hsv_parts)
    value, chroma, saturation, differences = parts[0], parts[1], parts[2], parts[3:]
    new_value_chroma = np.clip(saturation * factor + offset, 0.0, 1.0) * value  # S' V
    coloured = chroma > 0
    scale = np.divide(new_value_chroma, chroma, out=np.zeros_like(value), where=coloured)
    out = np.multiply(differences, scale, out=_scratch("saturate", differences.shape, np.float64))  # scale (V - c)
    np.subtract(value, out, out=out)  # V - scale (V - c); grey pixels: scale 0, so V so far
    out[1:] -= np.where(coloured, 0.0, new_value_chroma)  # grey: (V, V - S' V, V - S' V)
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(255.0)
    return cv2.merge(list(out.astype(np.uint8)))


CORRUPTIONS = {function.__name__: function for function in (
    impulse_noise, speckle_noise, glass_blur, snow, frost, fog, elastic_transform, saturate)}
