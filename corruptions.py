"""RAF-DB-C: the 18 corruptions of the original, with its names and parameter tables (BENCHMARK.md §2).

Every corruption is a plain function ``fn(image, severity, rng, **options)`` of an RGB uint8 image
(H x W x 3, any size from 32 px up; or grey, H x W x 1, which keeps its shape and follows the
original's grey paths, docs/CORRUPTIONS.md "Grey images"), a severity 1..5 and a ``numpy.random.Generator``. It returns
either a uint8 image (the steps that quantise by themselves: pixelate, jpeg_compression,
motion_blur; shot_noise and gaussian_noise, which apply the final conversion themselves; and the
uint8 paths of contrast and brightness, which apply it by table with the same bytes) or a float image in [0, 1]. They are registered, in the original's order
(BENCHMARK.md §2.3), in :data:`CORRUPTIONS` under their own ``__name__``. :func:`corrupt` is the checked
public entry point: it validates its arguments and makes the single final conversion of BENCHMARK.md §2.2
(clip to [0, 1], times 255, floor to uint8).

Options (keyword arguments of :func:`corrupt`, passed on to every function):

- ``motion_backend``: ``"numpy"`` (default; imagecorruptions' port of ImageMagick's motion blur,
  BENCHMARK.md §2.5, whose final step converts as ImageMagick Q16 does, floor(round(257 acc) / 257),
  rather than the port's plain floor: identical to Wand on all but ~0.002 % of pixels, which differ
  by 1) or ``"wand"`` (ImageMagick through Wand, the original's; Wand is imported only then).
  :data:`MOTION_BACKEND_HELP` is the CLIs' wording of this.
- ``colour``: ``"rgb"`` (default, FIX) or ``"bgr-compat"``, which reproduces the original's
  channel-order defects (BENCHMARK.md §2.2): swapped spatter colours, and JPEG encoding of BGR as RGB.

The low-level operations that RAF-DB-P (:mod:`perturbations`) reuses live here too, so that the
project has one implementation of each: :func:`add_gaussian_noise`, :func:`add_shot_noise`,
:func:`shift_value`, :func:`motion_blur_op`, :func:`gaussian_blur_op`, :func:`make_liquid_layer`
and :func:`render_water`.

Speed: per-size constants (zoom operators, defocus kernels, Poisson and byte tables) are cached in
module dictionaries; the hot spots use closed forms or OpenCV, each checked against a straightforward
reference written the way the original did (``bench/reference_corruptions.py``; the tests compare
them and ``bench/bench_corruptions.py`` times them). A few values that the calls on one face share
(the brightness index, float images, pixelate's results) are kept for the last image, keyed by its
bytes (:func:`_per_image`; docs/CORRUPTIONS.md "Speed of the 18 corruptions").

Example::

    import numpy as np, corruptions
    rng = np.random.default_rng(0)
    out = corruptions.corrupt(image_rgb, "zoom_blur", 3, rng)     # uint8, same shape
    for name in corruptions.CORRUPTION_NAMES: ...
"""

from __future__ import annotations

import functools
import io
import math
from typing import Callable, NamedTuple

import cv2
import numpy as np
import scipy.sparse
import scipy.special
from PIL import Image

SEVERITIES = (1, 2, 3, 4, 5)
MOTION_BACKENDS = ("numpy", "wand")
# Help text for the CLIs' --motion-backend (one wording for RAF-DB-C and RAF-DB-P).
MOTION_BACKEND_HELP = (
    "motion blur implementation: numpy (default; imagecorruptions' port of ImageMagick's motion "
    "blur, fast; matches ImageMagick Q16 rounding, so it equals Wand on ~99.999%% of pixels and "
    "is within 1 grey level everywhere) or wand (ImageMagick through Wand, exactly the original's; "
    "needs libmagickwand)"
)
COLOUR_MODES = ("rgb", "bgr-compat")
MIN_SIDE = 32  # smallest image side accepted by corrupt()
REFERENCE_HEIGHT = 48  # the tables of defocus and motion blur were tuned for 48 px FER2013 faces

# Spatter colours (BENCHMARK.md §2.4), RGB, 0..255. The original handed BGR arrays to this RGB code, so
# its water came out pale yellow and its mud dark blue; "bgr-compat" reproduces that (BENCHMARK.md §2.2).
WATER_RGB = (175, 238, 238)  # pale turquoise
MUD_RGB = (63, 42, 20)  # brown
# The grey of a colour on grey images: skimage ``rgb2gray`` weights (Rec. 709 luma) applied to the
# RGB triple, as the original's grey spatter path does (docs/BENCHMARK.md §9.3): water 224.61 / 255,
# mud 44.88 / 255. The colour mode does not matter on grey (the original's grey path never swapped).
# Private (as GREY_UNSUPPORTED is a frozenset) so that the parameter digest of the RGB tables, which
# RGB export trees record, stays what it was before grey support; :func:`grey_weights` reads it.
_GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def grey_weights() -> tuple[float, float, float]:
    """The (R, G, B) weights that give the grey of a colour on grey images (skimage ``rgb2gray``)."""
    return _GREY_WEIGHTS

# OpenCV runs single-threaded: the export parallelises over processes, and threads only add
# overhead on 100 px images.
cv2.setNumThreads(1)

_UNIT_LUT = np.arange(256, dtype=np.float32) / np.float32(255.0)  # uint8 -> float32 in [0, 1]


# --------------------------------------------------------------------------------------------
# Small helpers


def to_float01(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (x / 255); float input is returned as it is.

    The float32 division gives exactly ``_UNIT_LUT``'s 256 values (tested) and is several times
    faster than indexing the table."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return image


def to_uint8(result: np.ndarray) -> np.ndarray:
    """The single final conversion of BENCHMARK.md §2.2: clip(y, 0, 1) * 255, floor to uint8.

    uint8 results (steps that quantise by themselves) pass through unchanged.
    """
    if result.dtype == np.uint8:
        return result
    # clip to [0, 1] then * 255 stays in [0, 255]; astype truncates, i.e. floors non-negatives.
    return (np.clip(result, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def grey_level(rgb: tuple[int, int, int]) -> float:
    """The grey value in [0, 1] of an RGB colour given in 0..255: sum(_GREY_WEIGHTS * rgb) / 255."""
    return float(sum(weight * value for weight, value in zip(_GREY_WEIGHTS, rgb))) / 255.0


def is_grey(image: np.ndarray) -> bool:
    """Whether ``image`` is a one-channel (H x W x 1) image; the corruptions keep that shape."""
    return image.ndim == 3 and image.shape[2] == 1


def _colour_triple(rgb: tuple[int, int, int], colour: str, channels: int = 3) -> np.ndarray:
    """An RGB colour as float32 / 255; reversed under "bgr-compat" (the original's swap).

    ``channels=1`` gives the colour's grey (:func:`grey_level`, whatever the colour mode) as (1,).
    """
    if channels == 1:
        return np.array([grey_level(rgb)], np.float32)
    triple = rgb[::-1] if colour == "bgr-compat" else rgb
    return np.array(triple, np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------------------------
# Low-level operations (also used by perturbations.py)


# How the noises draw from an item's generator (docs/BENCHMARK.md §2.7). Part of the exports'
# parameter digest (dataset_writer.parameter_tables_digest), so that a tree written with other
# samplers (numpy's standard_normal / random before this version) is never resumed or extended.
NOISE_SAMPLERS = ("normal: Box-Muller, float32, 24-bit uniforms from PCG64 raw words (standard_normal); "
                  "poisson: inverse CDF at 32-bit words")
_U24 = np.float32(2.0**-24)  # one step of a 24-bit uniform
_ANGLE24 = np.float32(2.0 * np.pi) * _U24  # fl32(2 pi) / 2**24: an exact power-of-two scaling


def raw_words32(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` 32-bit words (uint32) from ``ceil(count / 2)`` raw 64-bit outputs of ``rng``'s bit
    generator, in order, each split into its low 32 bits and then its high 32 bits.

    The same on any byte order; advances ``rng`` by ``ceil(count / 2)`` raw outputs."""
    raw = rng.bit_generator.random_raw((count + 1) // 2)
    return raw.astype("<u8", copy=False).view("<u4")[:count]


def standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """N(0, 1) draws as a float32 array of ``shape``, by a Box-Muller transform of ``rng``'s raw words.

    The construction (docs/BENCHMARK.md §2.7), for n = prod(shape) values and m = ceil(n / 2) pairs:

    1. w_0 .. w_{2m-1} = :func:`raw_words32` (``rng``, 2m): m raw 64-bit PCG64 outputs, each giving
       its low then its high 32 bits;
    2. a_j = w_j >> 8 and b_j = w_{m+j} >> 8 (the top 24 bits of each word), j = 0 .. m-1;
    3. u_j = 1 - a_j * 2**-24, exact in float32, in [2**-24, 1] (so the logarithm never sees 0);
       t_j = b_j * fl32(2 pi) * 2**-24 in float32, in [0, 2 pi);
    4. r_j = sqrt(-2 ln u_j) in float32 (``cv2.log``, then numpy's correctly rounded sqrt);
    5. value j = r_j cos t_j and value m + j = r_j sin t_j (``cv2.polarToCart``, float32); the
       first n of these 2m values, in C order, fill ``shape``.

    The radius is at most sqrt(48 ln 2) = 5.77, so |z| never exceeds 5.77 (the mass beyond is
    8e-9); u and t have 24-bit resolution. OpenCV's float32 log and sine/cosine are within
    ~1e-6 of the exact values (tested against math.log/math.cos); the same numpy/OpenCV build
    gives the same bytes on every run. About 4x faster than ``rng.standard_normal(float32)``.
    """
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(side) for side in shape)
    n = math.prod(shape)
    m = (n + 1) // 2
    if m == 0:
        return np.zeros(shape, np.float32)
    words = raw_words32(rng, 2 * m)
    top = np.right_shift(words, np.uint32(8))  # 24-bit integers, exact in float32
    work = np.empty((2, m), np.float32)
    radius, angle = work[0], work[1]
    np.multiply(top[:m], -_U24, out=radius, dtype=np.float32, casting="unsafe")
    radius += np.float32(1.0)  # u = 1 - a 2**-24 in [2**-24, 1]
    cv2.log(radius, radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    np.multiply(top[m:], _ANGLE24, out=angle, dtype=np.float32, casting="unsafe")
    out = np.empty((2, m), np.float32)
    cv2.polarToCart(radius, angle, out[0], out[1])  # row 0: r cos t, row 1: r sin t
    return out.reshape(-1)[:n].reshape(shape)


def add_gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """clip(x + N(0, sigma), 0, 1) per pixel and channel; ``x`` is a float image in [0, 1].

    The draws are ``sigma * standard_normal(rng, x.shape)`` (:func:`standard_normal`, float32),
    scaled, added and clipped in place. float32 for float32 ``x``, else float64.
    """
    noisy = standard_normal(rng, x.shape)
    noisy *= np.float32(sigma)
    noisy = noisy + x if x.dtype != np.float32 else noisy.__iadd__(x)
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def gaussian_noise_uint8(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of a uint8 image with the final conversion of BENCHMARK.md §2.2 fused in.

    floor(clip(v + fl32(255 sigma) z, 0, 255)) with z = :func:`standard_normal` (rng, shape) and v
    the byte, all in float32: the value 255 clip(v / 255 + sigma z, 0, 1) floors to, computed on
    the 0..255 scale (three float passes instead of seven)."""
    noisy = standard_normal(rng, image.shape)
    noisy *= np.float32(255.0 * sigma)
    noisy += image
    np.clip(noisy, 0.0, 255.0, out=noisy)
    return noisy.astype(np.uint8)  # truncation = floor on [0, 255]


# Poisson sampling by table lookup. Shot noise draws Poisson(x * lam) with x = v / 255 for a uint8
# value v, so there are only 256 different means per lam. For each (lam, v) we tabulate the exact
# Poisson CDF (scipy.special.pdtr, the regularised incomplete gamma function) and draw by
# inversion: X = min{k : CDF(k) > u} with u = w / 2**32 for a 32-bit word w of the item's
# generator (:func:`raw_words32`), so u has 2**-32 resolution. On the integers this is
# X = min{k : w <= limit(k)} with limit(k) = ceil(2**32 CDF(k)) - 1, a uint32 table, and the
# sampler compares words with limits, no float. A guide table (Chen & Asau's indexed search) gives,
# for each of _POISSON_GUIDE cells of w (its top bits), the smallest k that any w of the cell can
# take (and the largest): mostly one comparison decides. The support is cut where the tail mass is below 1e-18
# (the upper tail then lands in the last entry), far below the 2**-32 resolution of u.
# This is ~10x faster than Generator.poisson on array means, with the same distribution.
_POISSON_GUIDE_BITS = 11
_POISSON_GUIDE = 1 << _POISSON_GUIDE_BITS
_POISSON_CELL_SHIFT = np.uint32(32 - _POISSON_GUIDE_BITS)  # cell of w = w >> this
_POISSON_TABLES: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
_POISSON_KEYS: dict[float, np.ndarray] = {}


def _poisson_tables(lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(limit (256*K,) uint32, first (256*G,) int32, last (256*G,) int32, K) for means v/255*lam,
    v = 0..255; first/last are the flat indices v*K + k of the smallest and largest count that
    the words of a guide cell give. Cached per lam."""
    tables = _POISSON_TABLES.get(lam)
    if tables is None:
        means = np.arange(256, dtype=np.float64) / 255.0 * lam
        size = int(math.ceil(lam + 14.0 * math.sqrt(lam) + 30.0))
        k = np.arange(size, dtype=np.float64)
        cdf = scipy.special.pdtr(k[None, :], means[:, None])  # P(X <= k), shape (256, K)
        cdf[:, -1] = 2.0  # sentinel above any u: the search always stops by the last entry
        # 2**32 CDF is exact (a power-of-two scaling), so its ceiling is the exact integer bound:
        # w / 2**32 < CDF(k)  <=>  w < ceil(2**32 CDF(k))  <=>  w <= limit(k).
        limit = np.clip(np.ceil(cdf * 2.0**32) - 1.0, 0.0, 2.0**32 - 1.0).astype(np.uint32)
        cells = np.arange(_POISSON_GUIDE, dtype=np.int64) << int(_POISSON_CELL_SHIFT)
        # first[v, g] = smallest k with limit_v(k) >= g * 2**shift, the count of the cell's smallest
        # word; last[v, g] the count of its largest word, (g + 1) * 2**shift - 1.
        rows = limit.astype(np.int64)
        first = np.stack([np.searchsorted(row, cells, side="left") for row in rows])
        last = np.stack([np.searchsorted(row, cells + ((1 << int(_POISSON_CELL_SHIFT)) - 1), side="left")
                         for row in rows])
        base = (np.arange(256) * size)[:, None]
        tables = (np.ascontiguousarray(limit.ravel()), (first + base).astype(np.int32).ravel(),
                  (last + base).astype(np.int32).ravel(), size)
        # v * 2**32 + limit_v(k), increasing over the flat table: a search key for the wide cells.
        _POISSON_KEYS[lam] = (np.arange(256, dtype=np.uint64)[:, None] << np.uint64(32)).ravel().repeat(size) \
            + tables[0].astype(np.uint64)
        _POISSON_TABLES[lam] = tables
    return tables


def _poisson_cells(levels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(flat int32 guide cell v*G + (w >> shift), flat uint32 words w): one word per element of
    uint8 ``levels`` (a broadcast view is fine: a stack of identical frames, as RAF-DB-P's noise
    frames, converts one frame and adds it to all of them)."""
    words = raw_words32(rng, levels.size)
    cell = np.right_shift(words, _POISSON_CELL_SHIFT).view(np.int32).reshape(levels.shape)
    frame = levels
    while frame.ndim > 0 and frame.strides[0] == 0 and frame.shape[0] > 0:
        frame = frame[0]
    rows = frame.astype(np.int32)
    rows <<= _POISSON_GUIDE_BITS
    cell += rows  # + v * G, the row of level v in the guide
    return cell.reshape(-1), words


def _poisson_search(cell: np.ndarray, words: np.ndarray, lam: float) -> np.ndarray:
    """Flat index v*K + X, X = min{k : w <= limit(k)}, for flat ``cell`` and ``words``.

    Cells spanning at most two counts (nearly all) need one comparison; the few wide ones (the
    lowest and highest cells hold the tails) are found by one ``searchsorted`` on the keys
    v * 2**32 + limit_v(k)."""
    limit, first, last, _ = _poisson_tables(float(lam))
    index, span = first.take(cell), last.take(cell)
    span -= index
    index += limit.take(index) < words  # exact where the cell holds one or two counts
    wide = np.flatnonzero(span > 1)
    if wide.size:
        query = (cell[wide] >> _POISSON_GUIDE_BITS).astype(np.uint64) << np.uint64(32)
        query += words[wide]
        index[wide] = np.searchsorted(_POISSON_KEYS[float(lam)], query, side="left")
    return index


def _poisson_flat_index(levels: np.ndarray, lam: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(flat index v*K + k into the CDF table, K) of one Poisson draw per element of uint8 ``levels``.

    One 32-bit word per element (:func:`raw_words32`; u = w / 2**32) inverts the exact Poisson
    CDF. ``levels`` may be a broadcast view (only read); the index is a flat int32 array.
    """
    size = _poisson_tables(float(lam))[3]
    cell, words = _poisson_cells(levels, rng)
    return _poisson_search(cell, words, lam), size


def poisson_from_levels(levels: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(levels / 255 * lam) for uint8 ``levels``; int array of the same shape.

    One 32-bit word of ``rng`` per element (u = w / 2**32, resolution 2**-32) inverts the exact
    Poisson CDF.
    """
    index, size = _poisson_flat_index(levels, lam, rng)
    return (index - levels.astype(np.int32).ravel() * size).reshape(levels.shape)


# The final conversions of shot noise depend only on the count k: a table over the flat index
# v*K + k of the Poisson sampler gives the output byte in one gather. Each table applies, to every
# k, exactly the float64 operations the noise and its conversion would apply to that k, so the
# bytes are the same (the tests compare them with the arithmetic written out).
_SHOT_OUTPUT_TABLES: dict[tuple[float, str], np.ndarray] = {}


def _shot_output_table(lam: float, rounding: str) -> np.ndarray:
    """uint8 (256*K,) table: ``floor`` = to_uint8(clip(k / lam, 0, 1)) (RAF-DB-C, §2.2) or
    ``rint`` = OpenCV's round-half-even conversion of clip(k / lam, 0, 1) * 255 (RAF-DB-P, §3.5)."""
    key = (float(lam), rounding)
    table = _SHOT_OUTPUT_TABLES.get(key)
    if table is None:
        size = _poisson_tables(float(lam))[3]
        noisy = np.clip(np.arange(size, dtype=np.int64) / float(lam), 0.0, 1.0)
        if rounding == "floor":
            per_count = to_uint8(noisy)
        else:
            per_count = np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)
        table = np.tile(per_count, 256)  # the same k -> byte map under every level v
        _SHOT_OUTPUT_TABLES[key] = table
    return table


# Most guide cells hold a single count: every w of the cell gives the same k (the cell lies between
# two consecutive limits). For those the output byte is known from the cell alone; the byte guide
# holds it, and a marker byte (one no count produces) for the few cells that need the search.
_SHOT_BYTE_GUIDES: dict[tuple[float, str], tuple[np.ndarray, int]] = {}


def _shot_byte_guide(lam: float, rounding: str) -> tuple[np.ndarray, int]:
    """(uint8 (256*G,) output byte per guide cell, or ``marker`` where the cell spans counts; marker)."""
    key = (float(lam), rounding)
    entry = _SHOT_BYTE_GUIDES.get(key)
    if entry is None:
        _, first, last, _ = _poisson_tables(float(lam))
        output = _shot_output_table(lam, rounding)
        unused = np.setdiff1d(np.arange(256), output)
        if unused.size == 0:  # every byte is some count's output (lam >= 255): no fast path
            entry = (np.zeros(first.size, np.uint8), -1)
        else:
            marker = int(unused[0])
            entry = (np.where(first == last, output.take(first), marker).astype(np.uint8), marker)
        _SHOT_BYTE_GUIDES[key] = entry
    return entry


def shot_noise_uint8(levels: np.ndarray, lam: float, rng: np.random.Generator, rounding: str = "floor") -> np.ndarray:
    """Shot noise of uint8 ``levels`` straight to uint8: Poisson(v / 255 * lam) / lam, clipped,
    converted by ``rounding`` (:func:`_shot_output_table`). Same draws and bytes as
    :func:`add_shot_noise` followed by that conversion; ``levels`` may be a broadcast view.

    The byte comes from the guide cell of the word when the cell holds one count
    (:func:`_shot_byte_guide`), otherwise from the search of :func:`_poisson_flat_index`."""
    cell, words = _poisson_cells(levels, rng)
    byte_guide, marker = _shot_byte_guide(lam, rounding)
    if marker < 0:
        index = _poisson_search(cell, words, lam)
        return _shot_output_table(lam, rounding).take(index).reshape(levels.shape)
    out = byte_guide.take(cell)
    unsure = np.flatnonzero(out == marker)
    if unsure.size:
        index = _poisson_search(cell[unsure], words[unsure], lam)
        out[unsure] = _shot_output_table(lam, rounding).take(index)
    return out.reshape(levels.shape)


def add_shot_noise(x: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """clip(Poisson(x * lam) / lam, 0, 1); ``x`` is a float image in [0, 1] (any shape).

    When every value of ``x`` is a multiple of 1/255 (an image that came from uint8, as always in
    RAF-DB-C/P), the fast exact table sampler :func:`poisson_from_levels` is used; otherwise
    ``rng.poisson``. Float64 result.
    """
    levels = np.rint(np.asarray(x, np.float64) * 255.0)
    if np.all(np.abs(levels / 255.0 - x) < 1e-6) and levels.min() >= 0 and levels.max() <= 255:
        counts = poisson_from_levels(levels.astype(np.uint8), lam, rng)
    else:
        counts = rng.poisson(np.asarray(x, np.float64) * lam)
    return np.clip(counts / float(lam), 0.0, 1.0)


def shift_value(x: np.ndarray, delta: float) -> np.ndarray:
    """HSV value V + delta, clipped to [0, 1], with hue and saturation kept (last axis = RGB).

    Closed form of skimage ``hsv2rgb(rgb2hsv(x))`` with V changed (BENCHMARK.md §2.4): V = max(R, G, B)
    and RGB = V * f(H, S), so every pixel is scaled by V' / V; black pixels (V = 0, hence H = S = 0)
    become grey V'. The tests check it against skimage within 1 grey level. Same dtype as ``x``
    for float input.

    One-channel input (last axis 1) is a grey intensity: clip(x + delta, 0, 1), no HSV, as the
    original's grey path (docs/BENCHMARK.md §9.3); float64 as the original computed it.
    """
    if x.shape[-1] == 1:
        return np.clip(np.asarray(x, np.float64) + delta, 0.0, 1.0)
    if x.dtype in (np.float32, np.float64) and x.ndim == 3 and x.shape[2] == 3 and x.flags.c_contiguous:
        # The same arithmetic as the general lines below, without numpy's broadcasts of an
        # (H, W, 1) operand (they loop over 3 values at a time): the per-pixel scale is repeated
        # per channel by cv2.merge, and black pixels get V' by one masked assignment.
        value = _hsv_value(x)
        new_value = np.clip(value + delta, 0.0, 1.0).astype(value.dtype)
        black = np.flatnonzero(value <= 0)  # usually none or a few
        divisor = value
        if black.size:
            divisor = value.copy()
            divisor.ravel()[black] = 1
        scale = new_value / divisor
        out = np.multiply(x, cv2.merge([scale, scale, scale]))
        if black.size:
            out.reshape(-1, 3)[black] = new_value.ravel()[black][:, None]
        return np.clip(out, 0.0, 1.0, out=out)
    value = _hsv_value(x)[..., None]
    new_value = np.clip(value + delta, 0.0, 1.0).astype(value.dtype)
    black = value <= 0
    scale = new_value / np.where(black, 1, value)
    return np.clip(np.where(black, new_value, x * scale), 0.0, 1.0)


def _hsv_value(x: np.ndarray) -> np.ndarray:
    """HSV value V = max(R, G, B) over the last axis (faster than ``x.max(axis=-1)``)."""
    return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])


def _channel_means(x: np.ndarray) -> np.ndarray:
    """The spatial mean of each channel of an H x W x 3 image, float64 (3,)."""
    if x.ndim == 3 and x.shape[2] == 3 and x.dtype in (np.uint8, np.float32, np.float64):
        return np.array(cv2.mean(x)[:3])  # much faster than np.mean over axes (0, 1)
    return x.mean(axis=(0, 1), dtype=np.float64)


# Brightness on uint8 images by table lookup. For a uint8 pixel, the output channel value depends
# only on (V, x_c): y_c = x_c / 255 * V' / V with V' = clip(V / 255 + delta, 0, 1), and black
# pixels (V = 0) become V'. A 256 x 256 table per delta holds y in float32 (to chain in float)
# and floor(y * 255) as uint8 (the final cast of a standalone brightness); one gather applies it.
_BRIGHTNESS_TABLES: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def _brightness_tables(delta: float) -> tuple[np.ndarray, np.ndarray]:
    tables = _BRIGHTNESS_TABLES.get(delta)
    if tables is None:
        levels = np.arange(256, dtype=np.float64) / 255.0
        value = levels[:, None]  # V along axis 0, x_c along axis 1 (x_c <= V where it matters)
        new_value = np.clip(value + delta, 0.0, 1.0)
        scale = new_value / np.where(value > 0, value, 1.0)
        table = np.where(value > 0, levels[None, :] * scale, new_value)
        table = np.clip(table, 0.0, 1.0)
        tables = (table.astype(np.float32).ravel(), to_uint8(table).ravel())
        _BRIGHTNESS_TABLES[delta] = tables
    return tables


def _brightness_uint8(image: np.ndarray, delta: float, as_float: bool, shared: bool = True) -> np.ndarray:
    """shift_value(image / 255, delta) of a uint8 image: float32 in [0, 1] or final uint8.

    ``shared``: keep the table index with the image (:func:`_per_image`); False for intermediate
    images (a combination's first step), which would only displace the face's own values."""
    float_table, uint8_table = _brightness_tables(delta)
    index = _brightness_index_of(image) if shared else _brightness_index(image)
    return (float_table if as_float else uint8_table).take(index)


# Per-image values that several corruptions of the same face share (an export asks for all 90
# (corruption, severity) pairs of a face in a row): the brightness table index (20 calls per face),
# the float image of the blurs (10), zoom_blur's float planes (5), contrast's channel means (10),
# pixelate's blocks (10) and the chains' brightened image per delta. Only the last image is kept,
# keyed by its shape, dtype and bytes (one 30 KB comparison, ~2 us), so a changed or different
# image never reuses a value; the values are read-only, and the entry is replaced whole. Images
# above 1 MB are not kept; :func:`clear_per_image_values` drops the entry.
_LAST_IMAGE: list = [None]


def clear_per_image_values() -> None:
    """Forget the values kept for the last image (:func:`_per_image`), e.g. to free their memory."""
    _LAST_IMAGE[0] = None


_PER_IMAGE_MAX_BYTES = 1 << 20  # a 100 px face is 30 KB; far larger images are not kept (memory)


def _per_image(image: np.ndarray, what: str, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    # float input may come back as itself (to_float01): not ours to freeze; large images: each kept
    # value would be several times their size
    if image.dtype != np.uint8 or image.nbytes > _PER_IMAGE_MAX_BYTES:
        return compute(image)
    key = (image.shape, image.dtype.str, image.tobytes())
    last = _LAST_IMAGE[0]
    if last is None or last[0] != key:
        last = (key, {})
        _LAST_IMAGE[0] = last
    value = last[1].get(what)
    if value is None:
        value = compute(image)
        value.flags.writeable = False
        last[1][what] = value
    return value


def _brightness_index_of(image: np.ndarray) -> np.ndarray:
    return _per_image(image, "brightness_index", _brightness_index)


def _brightness_index(image: np.ndarray) -> np.ndarray:
    """The table index (V << 8) | x_c of every pixel and channel of a uint8 H x W x 3 image, uint16.

    Built from bytes: cv2.merge interleaves each channel byte (low) with its pixel's V (high), and
    the pairs are read as little-endian uint16; several times faster than widening to intp.
    """
    height, width, channels = image.shape
    value = _hsv_value(image)
    values = cv2.merge([value] * channels).reshape(height, width * channels)
    pairs = cv2.merge([np.ascontiguousarray(image).reshape(height, width * channels), values])
    return pairs.view("<u2").reshape(image.shape)


def gaussian_blur_op(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """skimage ``filters.gaussian(x, sigma, channel_axis=-1, truncate=truncate)`` (mode nearest).

    ``x`` is a float H x W or H x W x C image; each channel is filtered on its own with scipy's
    kernel (radius int(truncate * sigma + 0.5), weights exp(-t^2 / (2 sigma^2)) normalised),
    applied separably by OpenCV with edge replication (= scipy's mode "nearest").
    Keeps float32/float64.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    kernel = _gaussian_kernel1d(float(sigma), float(truncate), x.dtype)
    if x.ndim == 3 and x.shape[2] > 4:  # OpenCV handles at most 4 channels in one call
        return np.stack([gaussian_blur_op(x[..., c], sigma, truncate) for c in range(x.shape[2])], -1)
    out = cv2.sepFilter2D(np.ascontiguousarray(x), -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(x.shape)


_GAUSS_KERNELS: dict[tuple, np.ndarray] = {}


def _gaussian_kernel1d(sigma: float, truncate: float, dtype) -> np.ndarray:
    key = (sigma, truncate, np.dtype(dtype).str)
    kernel = _GAUSS_KERNELS.get(key)
    if kernel is None:
        radius = int(truncate * sigma + 0.5)
        t = np.arange(-radius, radius + 1, dtype=np.float64)
        weights = np.exp(-0.5 / (sigma * sigma) * t * t)
        kernel = (weights / weights.sum()).astype(dtype)
        _GAUSS_KERNELS[key] = kernel
    return kernel


def motion_blur_op(image: np.ndarray, radius: int, sigma: float, angle_degrees: float,
                   backend: str = "numpy") -> np.ndarray:
    """ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` on an RGB uint8 image (BENCHMARK.md §2.5).

    ``backend="numpy"``: imagecorruptions' port: width w = 2 radius + 1, weights
    exp(-j^2 / (2 sigma^2)) for j = 0..w-1 normalised, offsets ox = ceil(j cos - 0.5),
    oy = ceil(j sin - 0.5) (y pointing down), edge pixels replicated (also beyond the image: the port
    stopped at the first offset that left it; ImageMagick does not). The last step matches
    ImageMagick Q16 rounding: the result is floor(round(257 acc) / 257)
    (:func:`_imagemagick_q16_to_uint8`, BENCHMARK.md §2.5 step 5), not the port's plain floor(acc):
    it equals Wand/ImageMagick on ~99.998 % of pixels (the plain floor differs on 0.15-0.25 % at
    100 px), within the benchmark's bound of one grey level on fewer than 0.01 % of pixels pooled
    and 0.05 % of any one image, which the tests assert. ``backend="wand"``: the original's
    PNG -> Wand ``motion_blur`` -> PNG round trip (needs the MagickWand library).
    A sigma of 0 (possible on small images after the original's floor) means no blur, as in
    ImageMagick, which replaces it with its epsilon. A grey image (H x W or H x W x 1) is
    blurred as one plane and keeps its shape.
    """
    if backend == "wand":
        return _motion_blur_wand(image, radius, sigma, angle_degrees)
    if backend != "numpy":
        raise ValueError(f"motion backend {backend!r}: expected one of {', '.join(MOTION_BACKENDS)}")
    return motion_blur_rows(image, radius, sigma, angle_degrees, 0, image.shape[0])


def motion_blur_rows(image: np.ndarray, radius: int, sigma: float, angle_degrees: float,
                     row_start: int, row_stop: int) -> np.ndarray:
    """Rows ``row_start:row_stop`` of ``motion_blur_op(image, ...)`` (numpy backend), computed alone.

    The blur of a row reads the whole (edge-replicated) image but is computed by itself: every
    output row is the same sequence of full-width ``cv2.scaleAdd`` steps whether or not the other
    rows are computed, so the rows come out with the same bytes as in the whole blurred image
    (RAF-DB-P crops its frames; the tests compare)."""
    return motion_blur_region(image, radius, sigma, (angle_degrees,), (row_start, row_stop))[0]


def motion_blur_region(image: np.ndarray, radius: int, sigma: float, angles, rows: tuple[int, int],
                       columns: tuple[int, int] | None = None) -> np.ndarray:
    """``motion_blur_op(image, radius, sigma, angle)[r0:r1, c0:c1]`` (numpy backend) for every angle
    in ``angles``, stacked: (len(angles), r1 - r0, c1 - c0, C) uint8 (no channel axis for a 2-D image).

    The window plus the reach of every angle's offsets is edge-replicated and converted to float32
    once for all angles (replication gives the same values however far it reaches), and only the
    requested window is accumulated: every output pixel is the same sequence of float32
    ``acc += weight * window`` steps as in the whole blur, so the bytes are those of blurring
    everything and cropping (tested)."""
    if is_grey(image):  # H x W x 1: blur the plane, keep the shape (FIX: the original gave H x 3)
        return motion_blur_region(image[:, :, 0], radius, sigma, angles, rows, columns)[..., None]
    height, width = image.shape[:2]
    row_start, row_stop = rows
    col_start, col_stop = (0, width) if columns is None else columns
    kernels = [_motion_kernel(int(radius), float(sigma), float(angle)) for angle in angles]
    reach = np.concatenate([offsets for _weights, offsets in kernels])
    (min_x, min_y), (max_x, max_y) = reach.min(axis=0).tolist(), reach.max(axis=0).tolist()
    # The source rectangle every window reads: [row_start + min_y, row_stop + max_y) x [col_start +
    # min_x, col_stop + max_x), cut to the image, whose outside is the replicated border.
    src_top, src_bottom = max(0, row_start + min_y), min(height, row_stop + max_y)
    src_left, src_right = max(0, col_start + min_x), min(width, col_stop + max_x)
    pad_top, pad_left = src_top - (row_start + min_y), src_left - (col_start + min_x)
    padded = cv2.copyMakeBorder(image[src_top:src_bottom, src_left:src_right], pad_top,
                                row_stop + max_y - src_bottom, pad_left, col_stop + max_x - src_right,
                                cv2.BORDER_REPLICATE)
    padded = padded.astype(np.float32)
    shape = (row_stop - row_start, col_stop - col_start, *image.shape[2:])
    out = np.empty((len(angles), *shape), np.uint8)
    accumulated = np.empty(shape, np.float32)
    for k, (weights, offsets) in enumerate(kernels):
        accumulated.fill(0.0)
        for weight, (ox, oy) in zip(weights.tolist(), offsets.tolist()):
            top, left = oy - min_y, ox - min_x
            window = padded[top : top + shape[0], left : left + shape[1]]
            cv2.scaleAdd(window, weight, accumulated, dst=accumulated)  # acc += weight * window
        out[k] = _imagemagick_q16_to_uint8(accumulated)
    return out


def _imagemagick_q16_to_uint8(accumulated: np.ndarray) -> np.ndarray:
    """The floor to uint8 as ImageMagick Q16 does it: round to 16 bits, then truncate to 8.

    ImageMagick reads 8-bit values v as 257 v, rounds the blurred sum to a 16-bit quantum, and
    its PNG writer gives quantum // 257. So the result is floor(round(257 acc) / 257): the floor
    of imagecorruptions' port, except that sums within 0.5 / 257 below an integer (e.g. a flat
    region whose weights sum to 1 - 1e-16) round up, as in ImageMagick. Measured: identical to
    Wand/ImageMagick 6.9.11 on all but ~0.002 % of the pixels of the test faces (BENCHMARK.md §2.5),
    where the plain floor differs on 0.15-0.25 % of pixels at 100 px, by 1.
    """
    quantum = accumulated * np.float32(257.0)
    quantum += np.float32(0.5)
    np.clip(quantum, 0, 65535, out=quantum)
    quantum = quantum.astype(np.uint16)  # astype truncates: floor(257 acc + .5)
    # quantum // 257, by numpy's vectorised integer division (several times faster than a table).
    return np.floor_divide(quantum, np.uint16(257), out=quantum).astype(np.uint8)


_MOTION_KERNELS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _motion_kernel(radius, sigma, angle):
    key = (radius, sigma, angle)
    cached = _MOTION_KERNELS.get(key)
    if cached is not None:
        return cached
    size = 2 * radius + 1
    j = np.arange(size, dtype=np.float64)
    sigma = max(sigma, 1.0e-12)  # ImageMagick's MagickEpsilon guard
    weights = np.exp(-(j * j) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    # As ImageMagick computes them: point = size * (sin, cos), offsets over hypot(point).
    theta = math.pi * angle / 180.0
    point_x, point_y = size * math.sin(theta), size * math.cos(theta)
    hypot = math.hypot(point_x, point_y)
    # Every step, also one whose offset lies beyond the image: ImageMagick reads the replicated edge
    # there. (imagecorruptions' port stopped at the first such step, which drops weight and darkens
    # images narrower than the blur, e.g. 40 x 1000; on RAF-DB's 100 px faces no step gets there.)
    offsets = [(math.ceil(i * point_y / hypot - 0.5), math.ceil(i * point_x / hypot - 0.5)) for i in range(size)]
    cached = (weights, np.array(offsets, dtype=np.int64).reshape(-1, 2))
    if len(_MOTION_KERNELS) > 4096:
        _MOTION_KERNELS.clear()
    _MOTION_KERNELS[key] = cached
    return cached


def _motion_blur_wand(image, radius, sigma, angle):
    try:
        from wand.image import Image as WandImage
    except ImportError as error:  # Wand missing, or the MagickWand shared library missing
        raise RuntimeError(
            "motion backend 'wand' needs the Wand package and ImageMagick's MagickWand library "
            "(Debian: apt-get install libmagickwand-6.q16-6); use motion_backend='numpy' instead. "
            f"Import failed with: {error}"
        ) from error
    grey = image.ndim == 2 or is_grey(image)
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if is_grey(image) else image).save(buffer, format="PNG")  # 8-bit PNG written by PIL, as the original
    with WandImage(blob=buffer.getvalue()) as wand_image:
        wand_image.motion_blur(radius=radius, sigma=sigma, angle=angle)
        blob = wand_image.make_blob("png")
    decoded = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded.dtype != np.uint8:  # a 16-bit PNG: scale back to 8 bits
        decoded = np.rint(decoded / 257.0).astype(np.uint8)
    if grey:  # a grey PNG in, a grey PNG out: keep the caller's shape
        plane = decoded if decoded.ndim == 2 else decoded[:, :, 0]
        return plane[:, :, None] if image.ndim == 3 else plane
    if decoded.ndim == 2:  # ImageMagick writes grey PNGs for grey images
        return np.repeat(decoded[:, :, None], 3, axis=2)
    return np.ascontiguousarray(decoded[:, :, 2::-1])  # BGR(A) -> RGB


def make_liquid_layer(shape_hw: tuple[int, int], loc: float, scale: float, sigma: float,
                      threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Spatter's liquid layer (BENCHMARK.md §2.4): N(loc, scale) of size H x W, smoothed with skimage's
    gaussian (sigma), values below ``threshold`` set to 0. float64 (H, W).

    Draws loc + scale * z with z = :func:`standard_normal` (rng, (H, W)) (float32 normals, the
    product and sum in float64), and stays float64 like the original's layer, so the truncation to
    L8 in :func:`render_water` sees the values it would in the original's arithmetic.
    """
    liquid = np.multiply(standard_normal(rng, tuple(shape_hw)), scale, dtype=np.float64)
    liquid += loc
    liquid = gaussian_blur_op(liquid, sigma)
    liquid[liquid < threshold] = 0
    return liquid


_WATER_KERNEL = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)


def render_water(x: np.ndarray, liquid: np.ndarray, intensity: float, colour: str = "rgb") -> np.ndarray:
    """Water spatter (BENCHMARK.md §2.4 steps 1-6) of float image ``x`` (H x W x 3, [0, 1]) with ``liquid``.

    Returns clip(x + m * water colour, 0, 1). On a grey ``x`` (H x W x 1) the colour is the water's
    grey (:func:`grey_level`), as the original's grey path (docs/BENCHMARK.md §9.3). FIX (BENCHMARK.md §6 row 27): when the layer has no
    droplets (max of L8 * D is 0) ``x`` is returned unchanged; the original divided by zero.
    """
    # x is in [0, 1] (to_float01), so the pixels the mask leaves at 0 are x itself: only the
    # droplets (about a tenth of the pixels) are blended: step (6), clip(x + mask * water colour, 0, 1).
    result = np.array(x, copy=True)
    mask = water_mask(liquid, intensity)
    if mask is not None:
        index, values = blend_water_pixels(x, mask, colour)
        result.reshape(-1, x.shape[-1])[index] = values
    return result


def blend_water_pixels(x: np.ndarray, mask: np.ndarray, colour: str = "rgb", scale: float | None = None,
                       origin: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step (6) of the water, clip(x + mask * water colour, 0, 1) (float32 product and sum per
    element), on the pixels where ``mask`` is not 0 only: (their flat indices, their (n, C) blended
    values). Elsewhere the blend of an ``x`` in [0, 1] is ``x`` itself, so writing the values into
    a copy of ``x`` gives the whole-image blend's bytes with a tenth of the work on a typical
    spatter mask.

    With ``scale``, ``mask`` holds :func:`water_mask_levels` and the mask is
    ``levels * float32(scale)``. With ``origin`` (row, column), ``mask`` is a larger mask and ``x`` covers ``mask[row : row + H, column : column + W]`` (RAF-DB-P's ROI);
    the indices are ``x``'s."""
    channels = x.shape[-1]
    if origin is not None:
        mask = mask[origin[0] : origin[0] + x.shape[0], origin[1] : origin[1] + x.shape[1]]
    flat = mask.ravel()  # a copy only for a window
    index = np.flatnonzero(flat != 0)  # much faster on booleans than on the mask itself
    weights = flat.take(index)
    if scale is not None:
        weights = weights.astype(np.float32) * np.float32(scale)
    tinted = weights[:, None] * _colour_triple(WATER_RGB, colour, channels)  # float32, as the whole-image blend
    values = x.reshape(-1, channels).take(index, axis=0) + tinted
    np.maximum(values, 0.0, out=values)  # = np.clip(values, 0, 1), cheaper on small arrays
    np.minimum(values, 1.0, out=values)
    return index, values


def water_mask(liquid: np.ndarray, intensity: float) -> np.ndarray | None:
    """Steps (1)-(5) of the water: the float32 (H, W) mask scaled to peak ``intensity``; None when
    the layer has no droplets (the mask's maximum is 0)."""
    levels = water_mask_levels(liquid)
    peak = int(levels.max())
    if peak <= 0:
        return None
    mask = levels.astype(np.float32)  # exact: the levels are integers below 2 ** 16
    mask *= np.float32(intensity / peak)
    return mask


def water_mask_levels(liquid: np.ndarray) -> np.ndarray:
    """The water mask before its scaling (steps 1-5): L8 * D as uint16 (H, W), both factors uint8,
    so the float32 product of the original is this integer exactly; :func:`water_mask` is
    ``levels * float32(intensity / levels.max())``."""
    # (1) The layer as uint8, truncated. Values stay below 1 in practice (a smoothed N(.65, .3));
    # the clip only guards the undefined float -> uint8 cast of the original above 255.
    # liquid * 255 in the layer's own precision (float64 from make_liquid_layer, as the original).
    l8 = np.clip(liquid * 255.0, 0, 255).astype(np.uint8)
    # (2)-(4) distance to the droplet edges, truncated at 20, blurred, equalised, embossed.
    dist = 255 - cv2.Canny(l8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, _WATER_KERNEL)
    dist = cv2.blur(dist, (3, 3))
    # (5) the mask before its normalisation by its maximum (water_mask).
    return np.multiply(l8, dist, dtype=np.uint16)


# --------------------------------------------------------------------------------------------
# Zoom blur operators (BENCHMARK.md §2.4)
#
# Zc(x, z) is linear in x and separable: along each axis, output index i reads input coordinate
# top + (i + trim) * (ch - 1) / (out - 1), interpolated linearly (scipy.ndimage.zoom, order 1,
# grid_mode False). We build, once per (height, width, severity), the whole zoom blur
# (x + sum_z Zc(x, z)) / (n + 1) as one sparse matrix over the flattened pixels and apply it with a
# single sparse product, instead of one ndimage.zoom per factor. The tests check it against
# scipy.ndimage.zoom within 1 grey level.
#
# Non-square images: the original crops a square ch x ch window with the row offset on both axes,
# which only works for square images. We generalise per axis (ch, top, trim computed from the
# height for rows and from the width for columns); for square images this is exactly the documented rule.

_ZOOM_OPERATORS: dict[tuple[int, int, int], scipy.sparse.csr_matrix] = {}
# The combined operator has about 4 (n + 1) entries per pixel (n: the severity's zoom factors, up
# to 18): ~40 MB at 256 x 256, but 0.6 GB at 1200 x 1200 and 7 s to build. Images of more pixels
# than this (large photos of a folder dataset) are zoomed factor by factor instead
# (:func:`_zoom_blur_by_factor`), in memory proportional to the image; the cache keeps operators up
# to _ZOOM_CACHE_BYTES in all.
_ZOOM_OPERATOR_MAX_PIXELS = 256 * 256
_ZOOM_CACHE_BYTES = 256 * 2**20


try:  # the kernel behind ``csr_matrix @ vector``, without scipy's per-call checks
    from scipy.sparse._sparsetools import csr_matvec as _scipy_csr_matvec
except Exception:  # pragma: no cover - a scipy without the private module, or one failing to load it
    _scipy_csr_matvec = None
# kernel -> whether it passed _csr_matvec_self_check (checked once, at its first use).
_CSR_MATVEC_CHECKED: dict = {}


def _csr_matvec_self_check(kernel) -> bool:
    """Whether ``kernel`` (the private csr_matvec, a scipy internal that may change or vanish)
    adds a 3 x 3 float32 csr matrix times a vector into ``out`` exactly as ``operator @ vector``."""
    try:
        operator = scipy.sparse.csr_matrix(np.array([[1.5, 0.0, -2.0], [0.0, 0.0, 0.25], [3.0, 0.5, 4.0]],
                                                    np.float32))
        vector = np.array([1.0, -2.0, 0.5], np.float32)
        out = np.array([1.0, 2.0, -1.0], np.float32)
        kernel(3, 3, operator.indptr, operator.indices, operator.data, vector, out)
        return out.dtype == np.float32 and np.array_equal(out, np.array([1.0, 2.0, -1.0], np.float32)
                                                          + operator @ vector)
    except Exception:  # any failure of the private kernel: use the public product instead
        return False


def _csr_matvec(operator: scipy.sparse.csr_matrix, vector: np.ndarray, out: np.ndarray) -> None:
    """out += operator @ vector (float32, C-contiguous ``vector`` and zeroed ``out``): scipy's
    private kernel when present and its self-check passed, else the public product (same bytes)."""
    kernel = _scipy_csr_matvec
    if kernel is not None:
        usable = _CSR_MATVEC_CHECKED.get(kernel)
        if usable is None:
            usable = _CSR_MATVEC_CHECKED[kernel] = _csr_matvec_self_check(kernel)
        if usable:
            rows, columns = operator.shape
            kernel(rows, columns, operator.indptr, operator.indices, operator.data, vector, out)
            return
    out += operator @ vector


def zoom_axis_matrix(size: int, zoom: float) -> scipy.sparse.csr_matrix:
    """The (size x size) linear operator of one axis of Zc(., zoom): crop, zoom, trim."""
    crop = int(math.ceil(size / float(zoom)))
    top = (size - crop) // 2
    out = int(round(crop * zoom))  # scipy.ndimage.zoom's output length
    trim = (out - size) // 2
    step = (crop - 1) / (out - 1) if out > 1 else 0.0  # scipy's (in - 1) / (out - 1)
    coord = np.arange(trim, trim + size, dtype=np.float64) * step  # in crop coordinates
    low = np.floor(coord).astype(np.int64)
    frac = coord - low
    low = np.minimum(low, crop - 1)
    high = np.minimum(low + 1, crop - 1)
    rows = np.repeat(np.arange(size), 2)
    cols = np.stack([low, high], axis=1).ravel() + top
    vals = np.stack([1.0 - frac, frac], axis=1).ravel()
    return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(size, size))


ZOOM_BLUR_FACTORS = (  # np.arange(1, end, step) with the original's float arguments (BENCHMARK.md §2.3)
    (1.0, 1.11, 0.01),
    (1.0, 1.18, 0.01),
    (1.0, 1.26, 0.02),
    (1.0, 1.32, 0.02),
    (1.0, 1.40, 0.03),
)


def zoom_factors(severity: int) -> np.ndarray:
    """The zoom factors of zoom_blur at ``severity``, exactly as the original's np.arange."""
    return np.arange(*ZOOM_BLUR_FACTORS[severity - 1])


def _zoom_operator(height: int, width: int, severity: int) -> scipy.sparse.csr_matrix:
    key = (height, width, severity)
    operator = _ZOOM_OPERATORS.get(key)
    if operator is None:
        factors = zoom_factors(severity)
        total = scipy.sparse.identity(height * width, format="csr")  # the clean image itself
        for zoom in factors:
            total = total + scipy.sparse.kron(
                zoom_axis_matrix(height, zoom), zoom_axis_matrix(width, zoom), format="csr"
            )
        operator = (total / (len(factors) + 1)).astype(np.float32).tocsr()
        operator.sum_duplicates()
        if len(_ZOOM_OPERATORS) > 64 or _sparse_bytes(operator) + sum(
                _sparse_bytes(cached) for cached in _ZOOM_OPERATORS.values()) > _ZOOM_CACHE_BYTES:
            _ZOOM_OPERATORS.clear()
        _ZOOM_OPERATORS[key] = operator
    return operator


def _sparse_bytes(matrix: scipy.sparse.csr_matrix) -> int:
    return matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes


def _zoom_blur_by_factor(image: np.ndarray, severity: int) -> np.ndarray:
    """zoom_blur for images of more than _ZOOM_OPERATOR_MAX_PIXELS pixels: the documented sum
    computed as the original does, one zoom per factor, (x + sum_z Zc(x, z)) / (n + 1) in float32,
    each Zc in float64 (as scipy's zoom of a float32 image) cast to float32. Zc of a channel plane
    is R_z @ plane @ C_z^T with the per-axis crop-zoom-trim matrices (:func:`zoom_axis_matrix`):
    the same bilinear weights as scipy's zoom, 2 entries per row, so memory stays a few planes."""
    height, width, channels = image.shape
    x = to_float01(image).astype(np.float32, copy=False)
    out = np.zeros_like(x)
    for zoom in zoom_factors(severity):
        rows, columns = zoom_axis_matrix(height, zoom), zoom_axis_matrix(width, zoom)
        for channel in range(channels):
            plane = x[..., channel].astype(np.float64)
            # (R @ plane) @ C^T, computed as (C @ (R @ plane)^T)^T: sparse @ dense products only
            zoomed = (columns @ (rows @ plane).T).T
            out[..., channel] += zoomed.astype(np.float32)
    out += x
    out /= np.float32(len(zoom_factors(severity)) + 1)
    return to_uint8(out)


# --------------------------------------------------------------------------------------------
# Defocus kernel (BENCHMARK.md §2.4)

_DISK_KERNELS: dict[tuple[float, float], np.ndarray] = {}


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Hendrycks' aliased disk: the float32 disk X^2 + Y^2 <= r^2, normalised, Gaussian-blurred.

    Grid -8..8 with a 3x3 blur if r <= 8, else arange(-r, r + 1) with a 5x5 blur (BENCHMARK.md §2.4).
    """
    key = (radius, alias_blur)
    kernel = _DISK_KERNELS.get(key)
    if kernel is None:
        if radius <= 8:
            grid, ksize = np.arange(-8, 8 + 1), (3, 3)
        else:
            grid, ksize = np.arange(-radius, radius + 1), (5, 5)
        xx, yy = np.meshgrid(grid, grid)
        disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
        disk /= np.sum(disk)
        kernel = cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)
        _DISK_KERNELS[key] = kernel
    return kernel


def _cropped_disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """disk_kernel without its all-zero outer rings: the same filter, fewer taps to compute."""
    key = ("cropped", radius, alias_blur)
    kernel = _DISK_KERNELS.get(key)
    if kernel is None:
        full = disk_kernel(radius, alias_blur)
        centre = full.shape[0] // 2
        support = np.argwhere(full != 0)
        reach = int(np.max(np.abs(support - centre))) if support.size else 0
        kernel = np.ascontiguousarray(full[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1])
        _DISK_KERNELS[key] = kernel
    return kernel


# --------------------------------------------------------------------------------------------
# Parameter tables (BENCHMARK.md §2.3), indexed by severity - 1

GAUSSIAN_BLUR_SIGMA = (1.0, 1.8, 2.6, 3.4, 4.0)
DEFOCUS_BASE = ((1.5, 0.1), (2, 0.2), (2, 0.3), (2.5, 0.4), (3, 0.4))  # (radius, alias sigma) x k
MOTION_BASE = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma): floor(base*k/3)
GAUSSIAN_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.24, 0.30)
SHOT_NOISE_LAMBDA = (60, 29, 15, 8, 5)
CONTRAST_PLUS = (1.5, 1.9, 2.6, 3.3, 5.0)
CONTRAST = (0.4, 0.33, 0.24, 0.16, 0.10)
BRIGHTNESS_DELTA = (0.1, 0.2, 0.3, 0.4, 0.5)  # +delta (brightness_plus) or -delta (_minus)
SPATTER = (  # (loc, scale, sigma, threshold, intensity, mode)
    (0.65, 0.3, 4, 0.69, 0.6, "water"),
    (0.65, 0.3, 3, 0.68, 0.6, "water"),
    (0.65, 0.3, 2, 0.68, 0.5, "water"),
    (0.65, 0.3, 1, 0.65, 1.5, "mud"),
    (0.67, 0.4, 1, 0.65, 1.5, "mud"),
)
PIXELATE_SCALE = (0.6, 0.5, 0.41, 0.3, 0.25)
JPEG_QUALITY = (25, 18, 15, 10, 7)

# Combinations (BENCHMARK.md §2.6): component severities for s = 1..5.
CONTRAST_BRIGHTNESS = ((1, 1), (2, 1), (2, 2), (2, 3), (3, 4))  # (brightness, contrast)
NOISE_CONTRAST_BRIGHTNESS = ((1, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 3), (3, 2, 4))  # (g, b, c)
MOTION_CONTRAST_BRIGHTNESS = ((2, 1, 1), (3, 1, 1), (4, 2, 2), (5, 2, 1), (5, 2, 3))  # (m, b, c)
PIXELATE_CONTRAST_BRIGHTNESS = ((1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 1), (4, 3, 3))  # (p, b, c)


def defocus_parameters(severity: int, height: int) -> tuple[float, float]:
    """(radius, alias sigma) = table value x k, k = H / 48 (at 100 px: s=1 gives (3.125, .2083))."""
    radius, alias = DEFOCUS_BASE[severity - 1]
    k = height / REFERENCE_HEIGHT
    return radius * k, alias * k


def motion_parameters(severity: int, height: int) -> tuple[int, int]:
    """(radius, sigma) = floor(table value x k / 3), k = H / 48 (at 100 px: s=1 gives (6, 2))."""
    radius, sigma = MOTION_BASE[severity - 1]
    k = height / REFERENCE_HEIGHT
    return int(math.floor(radius * k / 3)), int(math.floor(sigma * k / 3))


# --------------------------------------------------------------------------------------------
# The 13 single corruptions (BENCHMARK.md §2.4)


def gaussian_blur(image, severity, rng, **_options):
    """skimage gaussian blur, sigma from the table (unscaled), mode nearest."""
    sigma = GAUSSIAN_BLUR_SIGMA[severity - 1]
    return gaussian_blur_op(_per_image(image, "float01", to_float01), sigma)


def defocus_blur(image, severity, rng, **_options):
    """Aliased disk kernel of radius (table x k), cv2.filter2D per channel (border reflect 101)."""
    radius, alias = defocus_parameters(severity, image.shape[0])
    # Zero taps change nothing (also at the border, reflect 101), so the cropped kernel gives the
    # same filter as the full 17 x 17 one, with fewer multiplications.
    return cv2.filter2D(_per_image(image, "float01", to_float01), -1,
                        _cropped_disk_kernel(radius, alias)).reshape(image.shape)


def zoom_blur(image, severity, rng, **_options):
    """Mean of the image and its centre zooms by every factor of the table (scipy zoom, order 1)."""
    height, width, channels = image.shape
    if height * width > _ZOOM_OPERATOR_MAX_PIXELS:
        return _zoom_blur_by_factor(image, severity)
    operator = _zoom_operator(height, width, severity)
    # One sparse matrix-vector product per channel plane is faster than one product with the
    # (H*W, 3) matrix (scipy's inner loop over 3 columns vectorises poorly). The products run
    # scipy's csr_matvec kernel straight into one output array (each row summed in column order
    # in float32, the same arithmetic as ``operator @ plane``); the final conversion is made on
    # the planes, and the uint8 planes are interleaved again by cv2.merge.
    planes = _per_image(image, "float01_planes", _float_planes)
    out = np.zeros_like(planes)
    for plane, result in zip(planes, out):
        _csr_matvec(operator, plane, result)
    out = to_uint8(out).reshape(channels, height, width)
    return cv2.merge(list(out)).reshape(image.shape) if channels > 1 else out.reshape(image.shape)


def _float_planes(image):
    """The channel planes of ``image`` as float32 in [0, 1], C x (H * W), contiguous."""
    planes = to_float01(image.transpose(2, 0, 1).reshape(image.shape[2], -1))
    return np.ascontiguousarray(planes, dtype=np.float32)


def motion_blur(image, severity, rng, motion_backend="numpy", **_options):
    """Motion blur, (radius, sigma) = floor(table x k / 3), angle ~ U(-45, 45) degrees from rng."""
    radius, sigma = motion_parameters(severity, image.shape[0])
    angle = rng.uniform(-45, 45)
    return motion_blur_op(image, radius, sigma, angle, backend=motion_backend)


def gaussian_noise(image, severity, rng, **_options):
    """x + N(0, sigma) per pixel and channel, clipped; a uint8 image gets the final uint8 straight
    away (:func:`gaussian_noise_uint8`), a float image a float one (:func:`add_gaussian_noise`)."""
    sigma = GAUSSIAN_NOISE_SIGMA[severity - 1]
    if image.dtype == np.uint8:
        return gaussian_noise_uint8(image, sigma, rng)
    return add_gaussian_noise(image, sigma, rng)


def shot_noise(image, severity, rng, **_options):
    """Poisson(x * lambda) / lambda, clipped; returned as the final uint8.

    The conversion of a count k is the original's: k / lambda in float64, clipped, then the final
    cast of BENCHMARK.md §2.2, which gives exactly floor(255 min(k / lambda, 1)) for every k
    (multiplying by a float32 1 / lambda instead would give 254 for k = lambda = 29). It is applied
    by a per-lambda table over the sampler's index (:func:`shot_noise_uint8`), same bytes.
    """
    lam = SHOT_NOISE_LAMBDA[severity - 1]
    return shot_noise_uint8(image, lam, rng, "floor")  # = to_uint8(clip(k / lam, 0, 1)), by table


def _change_contrast(x, factor, *, in_place=False, means=None):
    """clip((x - m) * c + m), m = the spatial mean of each channel; ``x`` float in [0, 1].

    Computed as x * c + m (1 - c), in place when ``in_place`` (for arrays we own). ``means``:
    :func:`_channel_means` of ``x`` when the caller already has it.
    """
    if means is None:
        means = _channel_means(x)
    out = x if in_place else np.array(x, copy=True)
    out *= out.dtype.type(factor)
    offsets = (means * (1.0 - factor)).astype(out.dtype)
    if out.ndim == 3 and out.flags.c_contiguous:
        # The same float additions over rows of W * C values: numpy's broadcast of a (C,) vector
        # loops over only C values at a time (~15x slower on 100 x 100 x 3).
        height, width, channels = out.shape
        rows = out.reshape(height, width * channels)
        rows += np.tile(offsets, width)
    else:
        out += offsets
    return np.clip(out, 0.0, 1.0, out=out)


_LEVELS01 = np.arange(256, dtype=np.float64)[:, None] / 255.0  # the 256 uint8 levels / 255, float64


def _change_contrast_uint8(image, factor):
    """Contrast change of a uint8 image with the final cast, as one lookup table per channel.

    Each output channel value is a function of that channel's uint8 value only (given the mean),
    so the documented formula is evaluated on the 256 levels in float64 and applied with cv2.LUT.
    """
    means = _per_image(image, "means01", lambda face: _channel_means(face) / 255.0)  # 10 calls per face
    table = np.clip((_LEVELS01 - means[None, :]) * factor + means[None, :], 0.0, 1.0)
    table = (table * np.float32(255.0)).astype(np.uint8)  # to_uint8 without its clip (done above)
    if is_grey(image):
        return table[:, 0].take(image)
    return cv2.LUT(image, table.reshape(1, 256, 3))


def _contrast(image, factor):
    if image.dtype == np.uint8:
        return _change_contrast_uint8(image, factor)
    return _change_contrast(image, factor)


def contrast_plus(image, severity, rng, **_options):
    """Contrast increase by c (table), around each channel's mean."""
    return _contrast(image, CONTRAST_PLUS[severity - 1])


def contrast(image, severity, rng, **_options):
    """Contrast decrease by c (table), around each channel's mean."""
    return _contrast(image, CONTRAST[severity - 1])


def _grey_unit(image):
    """A grey image in [0, 1] as the original's grey path computes it: uint8 / 255. in float64."""
    return image / 255.0 if image.dtype == np.uint8 else image


def _brightness(image, delta):
    if is_grey(image):
        return shift_value(_grey_unit(image), delta)  # float64 clip(x + delta), docs/BENCHMARK.md §9.3
    if image.dtype == np.uint8:
        return _brightness_uint8(image, delta, as_float=False)
    return shift_value(image, delta)


def brightness_plus(image, severity, rng, **_options):
    """HSV V + delta (table), clipped."""
    return _brightness(image, BRIGHTNESS_DELTA[severity - 1])


def brightness_minus(image, severity, rng, **_options):
    """HSV V - delta (table), clipped."""
    return _brightness(image, -BRIGHTNESS_DELTA[severity - 1])


def _brightness_then_contrast(image, delta, factor, shared=True):
    """brightness (delta) -> contrast (factor), chained in float32; ``image`` uint8 or float.

    Returns the final uint8 (:func:`to_uint8` of the chain, made in place). ``shared``: ``image``
    is the face itself, whose brightness result and its means are kept for the next severities
    (contrast_brightness_plus/minus repeat deltas); False for a combination's intermediate image."""
    means = None
    if is_grey(image):
        x = shift_value(_grey_unit(image), delta)  # float64 clip(x + delta), a fresh array
    elif image.dtype == np.uint8 and shared:
        brightened = _per_image(image, f"brightness{delta!r}", lambda face: _brightness_uint8(face, delta, True))
        means = _per_image(image, f"brightness_means{delta!r}", lambda _face: _channel_means(brightened))
        x = np.array(brightened)  # our own copy: changed in place below
    elif image.dtype == np.uint8:
        x = _brightness_uint8(image, delta, as_float=True, shared=False)  # a fresh array
    else:
        x = shift_value(image, delta)
    x = _change_contrast(x, factor, in_place=True, means=means)  # clipped to [0, 1]: to_uint8's clip would change nothing
    x *= np.float32(255.0)  # the final conversion (BENCHMARK.md §2.2) on the array owned here
    return x.astype(np.uint8)


def spatter(image, severity, rng, colour="rgb", **_options):
    """Water (s = 1-3) or mud (s = 4-5) spatter from a random liquid layer (BENCHMARK.md §2.4).

    On a grey image the colours are their greys (:func:`grey_weights`; docs/BENCHMARK.md §9.3)."""
    loc, scale, sigma, threshold, intensity, mode = SPATTER[severity - 1]
    x = to_float01(image)
    liquid = make_liquid_layer(image.shape[:2], loc, scale, sigma, threshold, rng)
    if mode == "water":
        return render_water(x, liquid, intensity, colour=colour)
    # Mud: smooth the droplet mask (sigma = intensity), keep it where >= 0.8, blend to brown.
    mask = gaussian_blur_op((liquid > threshold).astype(np.float32), intensity)
    mask[mask < 0.8] = 0
    # clip(x (1 - m) + m mud, 0, 1) is x itself where m = 0 (x in [0, 1]): only the mud's pixels
    # are computed, with the same float32 operations per element.
    result = x if x is not image else x.copy()
    index = np.flatnonzero(mask.reshape(-1) != 0)
    weights = mask.reshape(-1).take(index)[:, None]
    flat = result.reshape(-1, x.shape[-1])
    values = flat.take(index, axis=0) * (1 - weights) + weights * _colour_triple(MUD_RGB, colour, x.shape[-1])
    flat[index] = np.clip(values, 0.0, 1.0)
    return result


_BOX_UPSAMPLE_INDEX: dict[tuple[int, int], np.ndarray | None] = {}


def _box_upsample_index(small_length: int, length: int) -> np.ndarray | None:
    """Source index of each output pixel of PIL's BOX upscale, or None if it blends pixels.

    A BOX upscale copies one source pixel per output pixel; PIL is asked once per size (on a
    float ramp) which one, so the upscale becomes a numpy gather with identical output.
    """
    key = (small_length, length)
    if key not in _BOX_UPSAMPLE_INDEX:
        ramp = Image.fromarray(np.arange(small_length, dtype=np.float32)[None, :], mode="F")
        values = np.asarray(ramp.resize((length, 1), Image.BOX), dtype=np.float64)[0]
        index = np.rint(values).astype(np.intp)
        _BOX_UPSAMPLE_INDEX[key] = index if np.array_equal(values, index) else None
    return _BOX_UPSAMPLE_INDEX[key]


def pixelate(image, severity, rng, **_options):
    """PIL BOX resize to (int(W c), int(H c)) and back to (W, H); uint8."""
    if is_grey(image):  # PIL takes a grey plane as 2-D (mode L)
        plane = np.ascontiguousarray(image[:, :, 0])
        return _box_upsample(_box_downsample(plane, severity), plane.shape)[:, :, None]
    return _box_upsample(_pixel_blocks(image, severity), image.shape)


def _box_downsample(image, severity):
    """pixelate's first step: PIL BOX resize to (int(W c), int(H c)); uint8 (read-only)."""
    scale = PIXELATE_SCALE[severity - 1]
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((int(width * scale), int(height * scale)), Image.BOX))


def _pixel_blocks(image, severity):
    """:func:`_box_downsample` of the face, kept with it: pixelate and
    pixelate_contrast_brightness_minus (from pixelate at severities 1, 2, 3, 4, 4) share it."""
    return _per_image(image, f"pixel_blocks{severity}", lambda face: _box_downsample(face, severity))


def _box_upsample(small, shape):
    """pixelate's second step: PIL BOX resize of ``small`` back to ``shape[:2]``; a fresh array."""
    height, width = shape[:2]
    upsample_map = _box_upsample_map(small.shape[0], small.shape[1], height, width)
    if upsample_map is None:
        return np.array(Image.fromarray(small).resize((width, height), Image.BOX))
    # The gather by source index, as one OpenCV nearest-neighbour remap over integer coordinates.
    return cv2.remap(small, upsample_map, None, cv2.INTER_NEAREST)


_BOX_UPSAMPLE_MAPS: dict[tuple[int, int, int, int], np.ndarray | None] = {}


def _box_upsample_map(small_height: int, small_width: int, height: int, width: int) -> np.ndarray | None:
    """The (height x width x 2) int16 (column, row) source map of a BOX upscale, for cv2.remap;
    None where :func:`_box_upsample_index` finds that the upscale blends pixels."""
    key = (small_height, small_width, height, width)
    if key not in _BOX_UPSAMPLE_MAPS:
        rows = _box_upsample_index(small_height, height)
        columns = _box_upsample_index(small_width, width)
        if rows is None or columns is None:
            _BOX_UPSAMPLE_MAPS[key] = None
        else:
            grid = np.empty((height, width, 2), np.int16)
            grid[..., 0] = columns[None, :]
            grid[..., 1] = rows[:, None]
            _BOX_UPSAMPLE_MAPS[key] = grid
    return _BOX_UPSAMPLE_MAPS[key]


def jpeg_compression(image, severity, rng, colour="rgb", **_options):
    """JPEG at the table's quality (other settings default), decoded again; uint8.

    The original used PIL; OpenCV's encoder (same libjpeg quality tables, 4:2:0 chroma
    subsampling, islow DCT) gives the same bytes and pixels here at a third of the time, which a
    test checks against PIL at every severity. A grey image is encoded as a greyscale JPEG (PIL's
    mode L). "bgr-compat" hands the channels to the encoder in
    the wrong order, as the original handed its BGR arrays to PIL as RGB.
    """
    quality = JPEG_QUALITY[severity - 1]
    if is_grey(image):  # a one-component (greyscale) JPEG; the colour mode does not apply
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, 0]),
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"OpenCV could not JPEG-encode a {image.shape} image")
        return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)[:, :, None]
    # OpenCV encodes BGR: the correct order for our RGB image is the reversed one (cv2.cvtColor
    # swaps the channels far faster than a numpy copy of the reversed view).
    source = np.ascontiguousarray(image) if colour == "bgr-compat" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a {image.shape} image")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return decoded if colour == "bgr-compat" else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# The 5 combinations (BENCHMARK.md §2.6): chained in float, only pixelate and motion_blur quantise.
# "contrast" is the contrast decrease (#8). Each component draws from the same rng, in order.


def contrast_brightness_plus(image, severity, rng, **options):
    """brightness_plus(sb) -> contrast(sc)."""
    sb, sc = CONTRAST_BRIGHTNESS[severity - 1]
    return _brightness_then_contrast(image, BRIGHTNESS_DELTA[sb - 1], CONTRAST[sc - 1])


def contrast_brightness_minus(image, severity, rng, **options):
    """brightness_minus(sb) -> contrast(sc)."""
    sb, sc = CONTRAST_BRIGHTNESS[severity - 1]
    return _brightness_then_contrast(image, -BRIGHTNESS_DELTA[sb - 1], CONTRAST[sc - 1])


def gaussian_noise_contrast_brightness_minus(image, severity, rng, **options):
    """gaussian_noise(sg) -> brightness_minus(sb) -> contrast(sc)."""
    sg, sb, sc = NOISE_CONTRAST_BRIGHTNESS[severity - 1]
    x = add_gaussian_noise(to_float01(image), GAUSSIAN_NOISE_SIGMA[sg - 1], rng)  # float between steps (§2.6)
    return _brightness_then_contrast(x, -BRIGHTNESS_DELTA[sb - 1], CONTRAST[sc - 1])


def motion_blur_contrast_brightness_minus(image, severity, rng, **options):
    """motion_blur(sm) (uint8) -> brightness_minus(sb) -> contrast(sc)."""
    sm, sb, sc = MOTION_CONTRAST_BRIGHTNESS[severity - 1]
    x = motion_blur(image, sm, rng, **options)
    return _brightness_then_contrast(x, -BRIGHTNESS_DELTA[sb - 1], CONTRAST[sc - 1], shared=False)


def pixelate_contrast_brightness_minus(image, severity, rng, **options):
    """pixelate(sp) (uint8) -> brightness_minus(sb) -> contrast(sc)."""
    sp, sb, sc = PIXELATE_CONTRAST_BRIGHTNESS[severity - 1]
    delta, factor = -BRIGHTNESS_DELTA[sb - 1], CONTRAST[sc - 1]
    if not is_grey(image):
        small = _pixel_blocks(image, sp)
        upsample_map = _box_upsample_map(small.shape[0], small.shape[1], *image.shape[:2])
        if upsample_map is not None:
            return _brightness_then_contrast_of_blocks(small, upsample_map, delta, factor)
    return _brightness_then_contrast(pixelate(image, sp, rng), delta, factor, shared=False)


def _brightness_then_contrast_of_blocks(small, upsample_map, delta, factor):
    """_brightness_then_contrast(remap(small)) with the same bytes, computed on the small image.

    Brightness, contrast and the final conversion act pixel by pixel, so they commute with the
    nearest-neighbour upscale; only contrast's channel means are taken over the whole image: over
    the upscaled brightness result (the same float values, gathered by the same remap), as before.
    """
    y = _brightness_uint8(np.ascontiguousarray(small), delta, as_float=True, shared=False)
    means = _channel_means(cv2.remap(y, upsample_map, None, cv2.INTER_NEAREST))
    y = _change_contrast(y, factor, in_place=True, means=means)  # clipped to [0, 1]
    y *= np.float32(255.0)  # the final conversion, as in _brightness_then_contrast
    return cv2.remap(y.astype(np.uint8), upsample_map, None, cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------
# Registry and the checked entry point

CORRUPTIONS: dict[str, Callable] = {
    function.__name__: function
    for function in (
        gaussian_blur,
        defocus_blur,
        zoom_blur,
        motion_blur,
        gaussian_noise,
        shot_noise,
        contrast_plus,
        contrast,
        brightness_plus,
        brightness_minus,
        spatter,
        pixelate,
        jpeg_compression,
        contrast_brightness_plus,
        contrast_brightness_minus,
        gaussian_noise_contrast_brightness_minus,
        motion_blur_contrast_brightness_minus,
        pixelate_contrast_brightness_minus,
    )
}
CORRUPTION_NAMES = tuple(CORRUPTIONS)
# Corruptions not defined on grey images (corrupt() raises ValueError): saturation needs colour.
GREY_UNSUPPORTED = frozenset({"saturate"})
# Corruptions whose output does not depend on the rng.
DETERMINISTIC = ("gaussian_blur", "defocus_blur", "zoom_blur", "contrast_plus", "contrast",
                 "brightness_plus", "brightness_minus", "pixelate", "jpeg_compression",
                 "contrast_brightness_plus", "contrast_brightness_minus",
                 "pixelate_contrast_brightness_minus")


# The corruption sets (docs/BENCHMARK.md §2.9, §11.1). A dict, so that the parameter digest of this
# module (the manifest's param_set of the 18) does not change with it.
CORRUPTION_SETS = {
    "rafdb": "the 18 corruptions of RAF-DB-C (docs/BENCHMARK.md §2.3); the only ones in the mCE",
    "imagenet-extra": "the 8 further ImageNet-C corruptions at face size (docs/BENCHMARK.md §2.9)",
    "face": "occlusions and low resolution placed on aligned faces (docs/BENCHMARK.md §11.1)",
    "all": "every corruption of the three sets above",
}


class Corruption(NamedTuple):
    """One registry entry: the function and the set (``family``) it belongs to."""

    name: str
    function: Callable
    family: str  # "rafdb", "imagenet-extra" or "face"


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, Corruption]:
    """Every corruption, in set order (the 18, the ImageNet-C extras, the face set), with its family.

    The extras live in corruptions_imagenet.py and corruptions_face.py, which import this module;
    they are imported here on first use, so importing either module first works too.
    """
    import corruptions_face
    import corruptions_imagenet

    entries = [Corruption(name, function, "rafdb") for name, function in CORRUPTIONS.items()]
    entries += [Corruption(name, function, "imagenet-extra") for name, function in corruptions_imagenet.CORRUPTIONS.items()]
    entries += [Corruption(name, function, "face") for name, function in corruptions_face.CORRUPTIONS.items()]
    return {entry.name: entry for entry in entries}


def corruption_names(corruption_set: str = "rafdb") -> tuple[str, ...]:
    """The names of a set (``rafdb``, ``imagenet-extra``, ``face`` or ``all``), in registry order."""
    if corruption_set not in CORRUPTION_SETS:
        raise ValueError(f"corruption set {corruption_set!r}: expected one of {', '.join(CORRUPTION_SETS)}")
    if corruption_set == "rafdb":
        return CORRUPTION_NAMES
    return tuple(name for name, entry in registry().items()
                 if corruption_set == "all" or entry.family == corruption_set)


def family(name: str) -> str:
    """The set a corruption belongs to (ValueError for an unknown name)."""
    entry = registry().get(name)
    if entry is None:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(registry())}")
    return entry.family


def needs_param_set(names) -> bool:
    """Whether any of ``names`` is an ImageNet-C extra (which needs an explicit ``param_set``)."""
    return any(family(name) == "imagenet-extra" for name in names)


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator | None = None, *,
            motion_backend: str = "numpy", colour: str = "rgb", param_set: str | None = None) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to a uint8 image; uint8, same shape.

    ``image``: RGB (H x W x 3), or grey (H x W x 1, or H x W), which stays grey and follows the
    original's grey paths (docs/BENCHMARK.md §9.3, §9.9): brightness adds +-c to the intensity (no
    HSV), spatter uses the greys of its colours, motion blur blurs the plane (FIX: the original
    returned H x 3), JPEG is a greyscale JPEG. ``saturate`` refuses grey (ValueError: a grey image
    has no saturation); :data:`GREY_UNSUPPORTED` lists it.

    ``rng``: the generator every random draw comes from (the export passes one per item,
    BENCHMARK.md §2.7). ``None`` means a fresh, non-deterministic ``np.random.default_rng()``.
    The input is never modified. Raises ValueError for a wrong type, dtype, shape (H x W x 3,
    H x W x 1 or H x W with H, W >= 32), name, severity (an int 1..5; 0 is the clean image, not 5), backend or colour.
    ``name`` may be any corruption of :func:`registry` (every set); the ImageNet-C extras need
    ``param_set`` (imagenet224, imagenet64 or scaled; docs/BENCHMARK.md §2.9), which the others ignore.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image: expected shape (H, W, 3) (RGB), (H, W, 1) or (H, W) (grey), got {image.shape}")
    if image.shape[0] < MIN_SIDE or image.shape[1] < MIN_SIDE:
        raise ValueError(f"image: the corruptions need height and width >= {MIN_SIDE} px, got "
                         f"{image.shape[0]} x {image.shape[1]} px (height x width)")
    function = CORRUPTIONS.get(name)
    if function is None:
        entry = registry().get(name)
        if entry is None:
            raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(registry())}")
        function = entry.function
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)):
        raise ValueError(f"severity: expected an int 1..5, got {severity!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity: expected 1..5 (0 is the clean image), got {severity}")
    if motion_backend not in MOTION_BACKENDS:
        raise ValueError(f"motion_backend {motion_backend!r}: expected one of {', '.join(MOTION_BACKENDS)}")
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour {colour!r}: expected one of {', '.join(COLOUR_MODES)}")
    if image.ndim != 3 or image.shape[2] != 3:
        if name in GREY_UNSUPPORTED:
            raise ValueError(f"{name}: not defined on grey images (shape {image.shape}): a grey image has "
                             f"no colour saturation to change; use an RGB image or leave {name} out "
                             "(docs/CORRUPTIONS.md, grey images)")
    if rng is None:
        rng = np.random.default_rng()
    source = np.ascontiguousarray(image if image.ndim == 3 else image[:, :, None])
    options = {"motion_backend": motion_backend, "colour": colour}
    if function is not CORRUPTIONS.get(name):
        options["param_set"] = param_set
    result = to_uint8(function(source, int(severity), rng, **options))
    if result.shape != source.shape:  # never expected: every corruption keeps the shape
        raise AssertionError(f"{name} returned shape {result.shape} for an image of shape {source.shape}")
    return result if image.ndim == 3 else result[:, :, 0]
