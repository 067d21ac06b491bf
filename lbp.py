"""The LBP face descriptor of the original's hand-crafted baseline (docs/BENCHMARK.md §9.6).

For each face:

1. grey: RGB -> grey with OpenCV's weights (0.299 R + 0.587 G + 0.114 B, OpenCV's fixed-point
   rounding); grey images are used as they are;
2. resize to width 108 x height 147 with ``cv2.resize`` (bilinear, aspect ratio not kept); with
   ``keep_ar`` to 147 x 147 and keep columns 19..126, as the original's ``keep_ar=True``;
3. LBP codes with P = 8 neighbours on a circle of radius R = 2, ``nri_uniform`` mapping
   (scikit-image's ``local_binary_pattern``): 58 uniform patterns and one code for the rest,
   codes 0..58;
4. a grid of 6 columns x 7 rows of 18 x 21-pixel cells, visited column by column (x outer,
   y inner), one 59-bin histogram of raw code counts per cell;
5. the 42 histograms concatenated: 42 x 59 = 2478 values.

FIX (docs/BENCHMARK.md §9.8 item 12): the original cast the concatenated counts to uint8, and a
cell has 378 pixels, so a count above 255 wrapped around (300 became 44). Here counts are uint16
(exact); ``legacy=True`` (``--lbp-legacy``) restores the uint8 cast. Counts are not normalised,
as in the original: every cell has the same 378 pixels, so a per-cell L1 normalisation would only
divide every feature by 378, which for an RBF-SVM equals multiplying gamma by 378 ** 2.

Speed: :func:`lbp_codes` computes the codes for a whole batch with numpy, reproducing
scikit-image's arithmetic bit for bit (same neighbour positions rounded to 5 decimals, same
bilinear interpolation order, zeros outside the image, ``neighbour - centre >= 0``); the tests
check it against ``skimage.feature.local_binary_pattern`` image by image, which remains available
as ``backend="skimage"``. The cell histograms of the batch are one ``np.bincount`` over
``image * 2478 + cell * 59 + code``.

Example::

    import numpy as np, lbp
    faces = np.zeros((2, 100, 100, 3), np.uint8)          # RGB uint8 batch
    features = lbp.describe(faces)                        # (2, 2478) uint16
    lbp.describe(faces, lbp.LbpSettings(legacy=True))     # uint8, the original's wrap
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import cv2
import numpy as np

BACKENDS = ("numpy", "skimage")


@dataclasses.dataclass(frozen=True)
class LbpSettings:
    """Descriptor parameters; the defaults are the original's (docs/BENCHMARK.md §9.6)."""

    width: int = 108  # resize target, cv2.resize((width, height))
    height: int = 147
    keep_ar: bool = False  # resize to height x height and keep the centred `width` columns
    points: int = 8  # P
    radius: float = 2.0  # R
    grid_columns: int = 6  # cells of (width / grid_columns) x (height / grid_rows) pixels
    grid_rows: int = 7
    legacy: bool = False  # True: cast counts to uint8 as the original (wraps above 255)

    def __post_init__(self):
        if not 1 <= self.points <= 16:
            raise ValueError(f"LBP points must be 1..16, got {self.points}")
        if not self.radius > 0:
            raise ValueError(f"LBP radius must be > 0, got {self.radius}")
        for name in ("width", "height", "grid_columns", "grid_rows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LBP {name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.grid_columns or self.height % self.grid_rows:
            raise ValueError(f"a {self.width}x{self.height} image does not split into "
                             f"{self.grid_columns}x{self.grid_rows} equal cells")
        if self.keep_ar and self.width > self.height:
            raise ValueError("keep_ar needs width <= height")

    @property
    def n_bins(self) -> int:
        """nri_uniform codes: P (P - 1) uniform patterns with 1..P-1 ones, all-0, all-1, the rest."""
        return self.points * (self.points - 1) + 3

    @property
    def n_cells(self) -> int:
        return self.grid_columns * self.grid_rows

    @property
    def n_features(self) -> int:
        return self.n_cells * self.n_bins

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.legacy else np.dtype(np.uint16)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LbpSettings":
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown LBP settings: {', '.join(sorted(unknown))}")
        return cls(**values)


DEFAULT = LbpSettings()


# --------------------------------------------------------------------------------------------
# Step 1-2: grey, resize


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB or (N, H, W[, 1]) grey -> (N, H, W) uint8 grey.

    Floats are taken as 0..255 values, rounded and clipped to uint8 (the original's images were
    uint8). RGB -> grey is one ``cv2.cvtColor`` over the batch seen as one tall image, identical
    to the original's per-image BGR2GRAY on BGR input.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        pass
    elif images.ndim == 3:
        images = images[..., None]
    else:
        raise ValueError(f"expected images (N, H, W), (N, H, W, 1) or (N, H, W, 3), got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number):
            raise ValueError(f"expected numeric images, got dtype {images.dtype}")
        images = np.clip(np.rint(images.astype(np.float64)), 0, 255).astype(np.uint8)
    n, height, width, channels = images.shape
    if channels == 1:
        return np.ascontiguousarray(images[..., 0])
    if n == 0:
        return np.zeros((0, height, width), np.uint8)
    tall = np.ascontiguousarray(images).reshape(n * height, width, 3)
    return cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(n, height, width)


def resize_target(settings: LbpSettings = DEFAULT) -> tuple[int, int]:
    """(width, height) of the resize, before keep_ar's crop of the centred ``width`` columns."""
    return (settings.height, settings.height) if settings.keep_ar else (settings.width, settings.height)


def resize(grey: np.ndarray, settings: LbpSettings = DEFAULT) -> np.ndarray:
    """(N, H, W) uint8 -> (N, height, width) uint8 with bilinear ``cv2.resize`` per image.

    The batch goes through OpenCV as the channels of one image (at most 512 per call); OpenCV
    resizes channels independently, so this equals one call per image (tested).
    """
    n = grey.shape[0]
    size = resize_target(settings)
    out = np.empty((n, size[1], size[0]), np.uint8)
    if grey.shape[1:] == (size[1], size[0]):
        out[...] = grey
    else:
        for first in range(0, n, 512):
            block = np.ascontiguousarray(np.moveaxis(grey[first:first + 512], 0, -1))
            resized = cv2.resize(block, size, interpolation=cv2.INTER_LINEAR)
            out[first:first + 512] = np.moveaxis(resized.reshape(size[1], size[0], -1), -1, 0)
    if settings.keep_ar:
        # The original's keep_ar: columns 19..126 of a 147 x 147 resize (centred 108 columns).
        start = (settings.height - settings.width) // 2
        out = out[:, :, start:start + settings.width]
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------
# Step 3: LBP codes


@functools.lru_cache(maxsize=None)
def nri_uniform_table(points: int) -> np.ndarray:
    """Code of every P-bit pattern (bit i = neighbour i >= centre) under ``nri_uniform``.

    Patterns with at most two 0/1 changes along the circle are uniform. All zeros is code 0, all
    ones P (P - 1) + 1, non-uniform P (P - 1) + 2. A uniform pattern with k ones (1 <= k < P) is
    a run of ones starting at some neighbour; it gets 1 + (k - 1) P + shift, where the shift is
    P - (start of the run), taken modulo P, the numbering scikit-image uses (tested against it).
    """
    table = np.empty(1 << points, np.uint8)
    for pattern in range(1 << points):
        bits = [(pattern >> i) & 1 for i in range(points)]
        ones = sum(bits)
        changes = sum(bits[i] != bits[(i + 1) % points] for i in range(points))
        if ones == 0:
            code = 0
        elif ones == points:
            code = points * (points - 1) + 1
        elif changes > 2:
            code = points * (points - 1) + 2
        else:
            run_start = next(i for i in range(points) if bits[i] and not bits[i - 1])
            code = 1 + (ones - 1) * points + (points - run_start) % points
        table[pattern] = code
    return table


def _neighbour_offsets(settings: LbpSettings) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) offsets of the P neighbours, rounded to 5 decimals as scikit-image does."""
    angles = 2 * np.pi * np.arange(settings.points, dtype=np.float64) / settings.points
    rows = np.round(-settings.radius * np.sin(angles), 5)
    columns = np.round(settings.radius * np.cos(angles), 5)
    return rows, columns


def _axis_interpolation(length: int, offset: float, pad: int):
    """Per-axis sampling: (low index, high index) into the padded axis and the weight of high."""
    position = np.arange(length, dtype=np.float64) + offset
    low = np.floor(position)
    high = np.ceil(position)
    weight = position - low
    return low.astype(np.intp) + pad, high.astype(np.intp) + pad, weight


def _take(padded: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """padded[:, rows][:, :, columns] as slices when the indices are consecutive (always, in practice)."""
    if np.all(np.diff(rows) == 1) and np.all(np.diff(columns) == 1):
        return padded[:, rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    return padded[:, rows[:, None], columns[None, :]]


def _codes_numpy(grey: np.ndarray, settings: LbpSettings) -> np.ndarray:
    """Vectorised LBP codes of a (N, H, W) uint8 batch; bit-identical to scikit-image.

    scikit-image samples neighbour i at (r + dr_i, c + dc_i) bilinearly:
    value = (1 - wr) ((1 - wc) tl + wc tr) + wr ((1 - wc) bl + wc br), where the weights wr, wc
    depend only on the row, resp. the column. The inner (horizontal) interpolation therefore
    depends only on the column offset, and is computed once per distinct column offset over
    every padded row; each neighbour then costs one vertical interpolation and a comparison.
    """
    n, height, width = grey.shape
    pad = int(np.ceil(settings.radius)) + 1
    padded_u8 = np.pad(grey, ((0, 0), (pad, pad), (pad, pad)))  # zeros outside, scikit-image's cval
    padded = padded_u8.astype(np.float64)
    centre = padded[:, pad:pad + height, pad:pad + width]
    all_rows, all_columns = np.arange(height + 2 * pad), np.arange(width)
    pattern = np.zeros((n, height, width), np.uint8 if settings.points <= 8 else np.uint16)
    value, scratch = np.empty((n, height, width)), np.empty((n, height, width))
    horizontal: dict[float, np.ndarray] = {}
    for bit, (row_offset, column_offset) in enumerate(zip(*_neighbour_offsets(settings))):
        row_low, row_high, row_weight = _axis_interpolation(height, row_offset, pad)
        col_low, col_high, col_weight = _axis_interpolation(width, column_offset, pad)
        if not row_weight.any() and not col_weight.any():
            # Integer offset: scikit-image's interpolation returns the pixel itself, exactly.
            above = _take(padded_u8, row_low, col_low) >= padded_u8[:, pad:pad + height, pad:pad + width]
        else:
            if column_offset not in horizontal:  # (1 - wc) left + wc right, for every padded row
                dc = col_weight[None, None, :]
                inner = _take(padded, all_rows, col_low) * (1 - dc)
                inner += np.multiply(_take(padded, all_rows, col_high), dc,
                                     out=np.empty_like(inner))
                horizontal[column_offset] = inner
            inner = horizontal[column_offset]
            dr = row_weight[None, :, None]
            np.multiply(_take(inner, row_low, all_columns), 1 - dr, out=value)
            value += np.multiply(_take(inner, row_high, all_columns), dr, out=scratch)
            # neighbour - centre >= 0 is neighbour >= centre for finite IEEE doubles.
            above = np.greater_equal(value, centre)
        pattern |= above.view(np.uint8).astype(pattern.dtype, copy=False) << bit
    return nri_uniform_table(settings.points)[pattern]


def _codes_skimage(grey: np.ndarray, settings: LbpSettings) -> np.ndarray:
    """One ``skimage.feature.local_binary_pattern`` call per image (the reference)."""
    from skimage.feature import local_binary_pattern

    out = np.empty(grey.shape, np.uint8)
    for index, image in enumerate(grey):
        out[index] = local_binary_pattern(image, settings.points, settings.radius, method="nri_uniform")
    return out


_CODE_FUNCTIONS: dict[str, Callable[[np.ndarray, LbpSettings], np.ndarray]] = {
    "numpy": _codes_numpy,
    "skimage": _codes_skimage,
}


def lbp_codes(grey: np.ndarray, settings: LbpSettings = DEFAULT, backend: str = "numpy") -> np.ndarray:
    """``nri_uniform`` LBP codes (N, H, W) uint8 of a (N, H, W) uint8 grey batch."""
    if backend not in _CODE_FUNCTIONS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    grey = np.asarray(grey)
    if grey.ndim != 3 or grey.dtype != np.uint8:
        raise ValueError(f"expected a (N, H, W) uint8 batch, got {grey.dtype} {grey.shape}")
    return _CODE_FUNCTIONS[backend](grey, settings)


# --------------------------------------------------------------------------------------------
# Step 4-5: cell histograms


@functools.lru_cache(maxsize=8)
def cell_index_map(settings: LbpSettings = DEFAULT) -> np.ndarray:
    """(height, width) int: the cell of every pixel, cells numbered column by column (x outer)."""
    cell_height = settings.height // settings.grid_rows
    cell_width = settings.width // settings.grid_columns
    rows = np.arange(settings.height) // cell_height
    columns = np.arange(settings.width) // cell_width
    return columns[None, :] * settings.grid_rows + rows[:, None]


def cell_histograms(codes: np.ndarray, settings: LbpSettings = DEFAULT) -> np.ndarray:
    """(N, height, width) codes -> (N, cells * bins) counts (int64), one bincount for the batch."""
    n = codes.shape[0]
    if codes.shape[1:] != (settings.height, settings.width):
        raise ValueError(f"expected codes of shape (N, {settings.height}, {settings.width}), got {codes.shape}")
    per_image = settings.n_features
    offsets = cell_index_map(settings) * settings.n_bins
    flat = codes.astype(np.int64) + offsets[None]
    flat += (np.arange(n, dtype=np.int64) * per_image)[:, None, None]
    return np.bincount(flat.ravel(), minlength=n * per_image).reshape(n, per_image)


def _describe_chunk(images: np.ndarray, settings: LbpSettings, backend: str) -> np.ndarray:
    codes = lbp_codes(resize(to_grey(images), settings), settings, backend)
    counts = cell_histograms(codes, settings)
    # FIX (§9.8 item 12): uint16 holds every count (<= cell area); legacy wraps modulo 256.
    return counts.astype(settings.dtype)


def default_threads() -> int:
    """Threads for :func:`describe`: the CPUs this process may use (numpy releases the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def describe(
    images: np.ndarray,
    settings: LbpSettings = DEFAULT,
    *,
    backend: str = "numpy",
    chunk: int = 8,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """LBP descriptors (N, n_features) of a batch of faces (uint8 or 0..255 floats).

    ``images``: (N, H, W, 3) RGB, (N, H, W, 1) or (N, H, W) grey. Work is split into chunks of
    ``chunk`` images run on ``threads`` threads (default: the usable CPUs); the result does not
    depend on either. ``progress(k)`` is called with the number of images finished per chunk.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"expected a batch of images (N, H, W[, C]), got shape {images.shape}")
    n = images.shape[0]
    out = np.empty((n, settings.n_features), settings.dtype)
    chunk = max(1, int(chunk))  # the same step for the starts and the stops (chunk 0 wrote no row)
    starts = range(0, n, chunk)
    threads = default_threads() if threads is None else max(1, int(threads))

    def work(start: int) -> int:
        stop = min(n, start + chunk)
        out[start:stop] = _describe_chunk(images[start:stop], settings, backend)
        return stop - start

    if threads == 1 or len(starts) <= 1:
        done: Iterable[int] = map(work, starts)
        for count in done:
            if progress:
                progress(count)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for count in pool.map(work, starts):
                if progress:
                    progress(count)
    return out
