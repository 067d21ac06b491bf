"""FER2013 and FER+ (docs/BENCHMARK.md §9): one CSV of 48x48 grey pixels, one CSV of FER+ votes.

Files under the root (default ``FERPlus/``, the original's)::

    fer2013.csv      emotion,pixels,Usage          35,887 rows; pixels = 2,304 integers 0..255
    fer2013new.csv   Usage,Image name,neutral,...,contempt,unknown,NF   (FER+ votes, same row order)

Row n of one file is row n of the other. Ids are the 0-based data row, five digits (``00042``).
Splits (docs/BENCHMARK.md §9.9, FAITHFUL): train = Training, validation = PrivateTest, test =
PublicTest; ``test_split="PrivateTest"`` swaps the last two (the usual FER+ convention).

``ferplus``: the votes through the FER+ filter (:func:`ferplus_filter`), 8 classes in FER+ order;
labels divided by the 8 emotion votes (FIX) or by all 10 (``norm="legacy"``, the original).
``fer2013``: the ``emotion`` column as one-hot labels, 7 classes in FER2013 order.

The pixel CSV is streamed (docs/BENCHMARK.md §9.9 FIX: the original built a ~4 GB array): lines
are read one at a time and blocks of rows are decoded in C++ (OpenCV's plain-text PGM reader, in
threads) into a preallocated uint8 array (82 MB for the full file). Files written by ``--format fer-csv`` (no header, ``-1,<pixels>`` rows, empty lines
for rows not exported) are read the same way, with the same row numbers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import logging
import os
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cli_common import UserError
from datasets.base import Dataset, LabelSet
from datasets.classes import FER2013_CLASSES, FERPLUS_CLASSES

LOG = logging.getLogger("fer.fer2013")

SIZE = 48
PIXELS = SIZE * SIZE  # 2,304
PIXELS_FILE = "fer2013.csv"
VOTES_FILE = "fer2013new.csv"
USAGES = ("Training", "PublicTest", "PrivateTest")


def _usage_error(path, number: int, value: str) -> str:
    return (f"{path}:{number}: Usage {value!r}: expected one of {', '.join(USAGES)} (spelt exactly so; "
            f"a row with another value would belong to no split)")
VOTE_COLUMNS = FERPLUS_CLASSES + ("unknown", "NF")
NORMS = ("fix", "legacy")
_BLOCK = 256  # rows decoded together

EXPECTED_LAYOUT = f"""expected layout (docs/DATASETS.md; or run
`python3 rafdb_dataset.py sample --dataset ferplus --out DIR` for a synthetic pair):
  <data>/{PIXELS_FILE}      header 'emotion,pixels,Usage'; pixels = {PIXELS} space-separated integers 0..255
  <data>/{VOTES_FILE}   header 'Usage,Image name,{",".join(VOTE_COLUMNS)}' (ferplus only)"""


def row_id(row: int) -> str:
    """The id of 0-based data row ``row``: five digits, as the export names its files."""
    return f"{row:05d}"


def row_of(image_id: str) -> int:
    try:
        return int(image_id)
    except ValueError:
        raise UserError(f"{image_id!r}: not a FER2013 row id (expected digits such as '00042')") from None


# --------------------------------------------------------------------------------------------
# The pixel CSV


@dataclasses.dataclass
class PixelTable:
    """The rows of a FER2013-style pixel CSV; row n is data line n (header or its empty line skipped)."""

    path: Path
    pixels: np.ndarray  # uint8 (N, 48, 48); zeros where absent
    present: np.ndarray  # bool (N,): False for an empty line (rows a fer-csv export left out)
    emotion: np.ndarray  # int16 (N,); -1 where absent, -2 where not an integer
    usage: list[str]  # per row; "" where absent
    has_header: bool

    def __len__(self) -> int:
        return len(self.present)

    def line(self, row: int) -> int:
        """1-based line number of data row ``row`` in the file."""
        return row + 2

    @functools.cached_property
    def constant(self) -> np.ndarray:
        """bool (N,): rows whose pixels are all equal (kept with a warning, docs/BENCHMARK.md §1.6)."""
        flat = self.pixels.reshape(len(self.pixels), -1)
        return flat.min(axis=1) == flat.max(axis=1)


UTF8_BOM = b"\xef\xbb\xbf"
_QUOTE_CHARS = 80  # the most of a line an error message quotes (a pixels line is ~9 KB)


def _quote(text: bytes) -> str:
    """``repr`` of the start of a line for an error message, at most ~80 characters of it."""
    decoded = text.decode("utf-8", errors="replace")
    if len(decoded) <= _QUOTE_CHARS:
        return repr(decoded)
    return f"{decoded[:_QUOTE_CHARS]!r}... ({len(text):,} bytes)"


def _count_lines(path: Path) -> int:
    count = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _split_csv_line(text: bytes, path: Path, number: int) -> list[bytes]:
    """Fields of one line; plain comma splitting unless the line uses quotes ('"' or the original's '|')."""
    if b'"' not in text and b"|" not in text:
        return text.split(b",")
    quote = '"' if b'"' in text else "|"
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}:{number}: not UTF-8 text") from None
    return [field.encode() for field in next(csv.reader([decoded], delimiter=",", quotechar=quote))]


def _pixel_error(path: Path, number: int, field: bytes) -> UserError:
    values = field.split()
    detail = f"{len(values)} values"
    if len(values) == PIXELS:
        bad = next((v for v in values if not v.isdigit() or int(v) > 255), values[0])
        detail = f"a value {bad.decode(errors='replace')!r} that is not an integer 0..255"
    else:
        bad = next((v for v in values if not v.isdigit()), None)
        if bad is not None:
            detail += f", including {bad.decode(errors='replace')!r}"
    return UserError(f"{path}:{number}: the pixels field must hold {PIXELS} space-separated integers "
                     f"0..255 (a {SIZE}x{SIZE} grey image), found {detail}")


_SENTINEL = 999  # ends every row of a block: a row with a wrong number of values shifts it
_NOT_DIGITS = b"0123456789 \n"


def _parse_rows_exact(fields: list[bytes], path: Path, first_line: int) -> np.ndarray:
    """The pixels fields of consecutive rows -> int32 (n, 2304), one row at a time, exact errors."""
    values = np.empty((len(fields), PIXELS), dtype=np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # NumPy's "could not be read to its end"
        for k, field in enumerate(fields):
            try:
                row = np.fromstring(field, dtype=np.int32, sep=" ")
            except (ValueError, DeprecationWarning):
                raise _pixel_error(path, first_line + k, field) from None
            if row.size != PIXELS or row.min() < 0 or row.max() > 255:
                raise _pixel_error(path, first_line + k, field)
            values[k] = row
    return values


def _parse_block(fields: list[bytes], path: Path, first_line: int) -> np.ndarray:
    """The pixels fields of consecutive rows -> uint8 (n, 2304).

    Fast path: the rows, each followed by a sentinel value, are one plain-text PGM image that
    OpenCV decodes in C++ (with the GIL released, so blocks decode in parallel). It is taken only
    when the block holds nothing but digits and whitespace, decodes to exactly n x 2305 values,
    every row ends with the sentinel and no value exceeds 255; anything else is parsed row by row
    (:func:`_parse_rows_exact`), which names the first bad line.
    """
    body = b" 999\n".join(fields) + b" 999\n"
    if not body.translate(None, _NOT_DIGITS):
        header = b"P2 %d %d 65535\n" % (PIXELS + 1, len(fields))
        decoded = cv2.imdecode(np.frombuffer(header + body, np.uint8), cv2.IMREAD_UNCHANGED)
        if (decoded is not None and decoded.shape == (len(fields), PIXELS + 1)
                and np.all(decoded[:, PIXELS] == _SENTINEL) and decoded[:, :PIXELS].max() <= 255):
            return decoded[:, :PIXELS].astype(np.uint8)
    return _parse_rows_exact(fields, path, first_line).astype(np.uint8)


def read_pixel_csv(path: str | Path, progress: bool | None = None, workers: int | None = None) -> PixelTable:
    """Stream a FER2013 pixel CSV (or a ``--format fer-csv`` export of one) into a PixelTable.

    Columns are found from the header (``emotion``, ``pixels``, ``Usage``; a UTF-8 byte-order
    mark before it is ignored); a file without a header (an export) has ``emotion,pixels`` and
    may leave rows out as empty lines, a file with one may not. Every pixels field must hold 2,304
    integers in 0..255; errors name the file and line (the first bad line in file order). Blocks of rows are
    decoded by ``workers`` threads (default: up to 4, one per core); the result does not depend on it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pixel CSV not found\n{EXPECTED_LAYOUT}")
    total = _count_lines(path)
    if total == 0:
        raise UserError(f"{path}: empty file\n{EXPECTED_LAYOUT}")
    rows = total - 1  # the first line is the header, or the empty line an export writes in its place
    pixels = np.zeros((max(rows, 0), SIZE, SIZE), dtype=np.uint8)
    flat = pixels.reshape(len(pixels), PIXELS)
    present = np.zeros(len(pixels), dtype=bool)
    emotion = np.full(len(pixels), -1, dtype=np.int16)
    usage = [""] * len(pixels)
    if workers is None:
        workers = max(1, min(4, os.cpu_count() or 1))
    pending: collections.deque = collections.deque()
    block_start = 0
    block_fields: list[bytes] = []

    def collect(limit: int) -> None:
        while len(pending) > limit:
            start, future = pending.popleft()
            values = future.result()  # raises the block's UserError, in file order
            flat[start:start + len(values)] = values

    def submit() -> None:
        if block_fields:
            pending.append((block_start, pool.submit(_parse_block, list(block_fields), path, block_start + 2)))
            block_fields.clear()
            collect(2 * workers)

    if progress is None:
        progress = sys.stderr.isatty()
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a failed fast path is not an error
    try:
        with open(path, "rb") as handle, concurrent.futures.ThreadPoolExecutor(workers) as pool, \
                tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, file=sys.stderr,
                     disable=not progress, desc=f"reading {path.name}") as bar:
            first = handle.readline()
            header = first.removeprefix(UTF8_BOM).strip().lower()  # Excel's "CSV UTF-8" starts with a BOM
            has_header = bool(header)
            if has_header:
                names = [name.strip(b' "|') for name in header.split(b",")]
                if b"pixels" not in names:
                    raise UserError(f"{path}:1: header {_quote(first.removeprefix(UTF8_BOM).strip())} has no "
                                    f"'pixels' column (a file without its header line?)\n{EXPECTED_LAYOUT}")
                pixel_col = names.index(b"pixels")
                emotion_col = names.index(b"emotion") if b"emotion" in names else None
                usage_col = names.index(b"usage") if b"usage" in names else None
                n_fields = len(names)
            else:
                pixel_col, emotion_col, usage_col, n_fields = 1, 0, None, 2
            done = len(first)
            blank = 0  # the first empty line after the header, while only empty lines follow it
            for row in range(rows):
                line = handle.readline()
                done += len(line)
                if row % 512 == 0:
                    bar.update(done - bar.n)
                text = line.rstrip(b"\r\n")
                number = row + 2
                if not text.strip():
                    if has_header:  # only a --format fer-csv export (no header) leaves rows out
                        blank = blank or number  # an error only if an image row follows (below)
                        continue
                    submit()
                    continue
                if blank:
                    raise UserError(f"{path}:{blank}: empty line; every line after the header is one "
                                    f"image row (emotion,pixels,Usage): delete the line, or restore "
                                    f"the row it replaced\n{EXPECTED_LAYOUT}")
                fields = _split_csv_line(text, path, number)
                if len(fields) != n_fields:
                    raise UserError(f"{path}:{number}: expected {n_fields} comma-separated fields, got {len(fields)}")
                if not block_fields:
                    block_start = row
                block_fields.append(fields[pixel_col].strip(b' "|'))
                if len(block_fields) == _BLOCK:
                    submit()
                present[row] = True
                if emotion_col is not None:
                    try:
                        value = int(fields[emotion_col])
                    except ValueError:
                        value = -2
                    emotion[row] = value if -1 <= value <= 6 else -2
                if usage_col is not None:
                    usage[row] = fields[usage_col].strip().decode("utf-8", errors="replace")
                    if usage[row] not in USAGES:  # a misspelt one would drop the row from every split
                        raise UserError(_usage_error(path, number, usage[row]))
            submit()
            collect(0)
            bar.update(done - bar.n)
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    if blank:  # only empty lines after line ``blank``: the file's rows end before it
        keep = blank - 2
        pixels, present, emotion, usage = pixels[:keep], present[:keep], emotion[:keep], usage[:keep]
    return PixelTable(path, pixels, present, emotion, usage, has_header)


# --------------------------------------------------------------------------------------------
# FER+ votes


@dataclasses.dataclass
class VoteTable:
    path: Path
    usage: list[str]
    names: list[str]  # "Image name"; "" for rows FER+ discarded
    votes: np.ndarray  # int64 (N, 10) in VOTE_COLUMNS order


def read_vote_csv(path: str | Path) -> VoteTable:
    """``fer2013new.csv``: Usage, Image name and 10 integer vote counts per row (docs/BENCHMARK.md §9.2)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FER+ vote CSV not found\n{EXPECTED_LAYOUT}")
    usage, names, votes = [], [], []
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first header name
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        # Votes are read by position: a header naming other columns (or the same in another order)
        # would put images in the wrong class, so every name is checked (case and spaces aside).
        expected = ("Usage", "Image name") + VOTE_COLUMNS
        if [name.strip().lower() for name in header or []] != [name.lower() for name in expected]:
            raise UserError(f"{path}:1: expected the header '{','.join(expected)}' (these columns in this "
                            f"order; the votes are read by position), got {','.join(header or [])!r}")
        blank = 0  # the first empty line, while only empty lines follow it (the end of the file)
        for number, fields in enumerate(reader, start=2):
            if not any(field.strip() for field in fields):
                blank = blank or number
                continue
            if blank:
                raise UserError(f"{path}:{blank}: empty line (every row of {PIXELS_FILE} needs one here)")
            if len(fields) != 12:
                raise UserError(f"{path}:{number}: expected 12 comma-separated fields, got {len(fields)}")
            try:
                counts = [int(field) for field in fields[2:]]
            except ValueError:
                raise UserError(f"{path}:{number}: votes must be integers, got {','.join(fields[2:])!r}") from None
            if min(counts) < 0:
                raise UserError(f"{path}:{number}: votes must be non-negative, got {','.join(fields[2:])!r}")
            if fields[0].strip() not in USAGES:  # a misspelt one would drop the row from every split
                raise UserError(_usage_error(path, number, fields[0].strip()))
            usage.append(fields[0].strip())
            names.append(fields[1].strip())
            votes.append(counts)
    return VoteTable(path, usage, names, np.asarray(votes, dtype=np.int64).reshape(-1, 10))


def ferplus_filter(votes: np.ndarray, norm: str = "fix") -> tuple[np.ndarray, np.ndarray]:
    """The FER+ vote filter on (N, 10) counts (docs/BENCHMARK.md §9.2); returns (keep, labels (N, 8)).

    Counts <= 1 become 0; drop when the first maximum is unknown or NF, when more than two
    entries tie for the maximum, or when (ties x maximum) <= half the total. Labels are the 8
    emotion counts over their own sum (``fix``) or over the total with unknown/NF (``legacy``).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    v = np.where(np.asarray(votes) <= 1, 0, votes).astype(np.float64)
    total = v.sum(axis=1)
    top = v.max(axis=1)
    winners = (v == top[:, None]).sum(axis=1)
    keep = (np.argmax(v, axis=1) < 8) & (winners <= 2) & (winners * top > 0.5 * total)
    divisor = total if norm == "legacy" else v[:, :8].sum(axis=1)
    labels = np.zeros((len(v), 8), dtype=np.float64)
    labels[keep] = v[keep, :8] / divisor[keep, None]
    return keep, labels


# --------------------------------------------------------------------------------------------
# The datasets

_TABLES: dict[tuple, PixelTable] = {}


def load_pixel_table(path: Path) -> PixelTable:
    """:func:`read_pixel_csv`, remembered per (path, size, mtime) for the life of the process."""
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns) if stat else None
    if key is None or key not in _TABLES:
        table = read_pixel_csv(path)
        if key is None:
            return table
        if len(_TABLES) >= 2:  # keep at most two tables (82 MB each): an export and its original
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = table
    return _TABLES[key]


class _Fer(Dataset):
    grey = True
    native_size = (SIZE, SIZE)
    has_validation = True
    default_root = "FERPlus"
    source_kind = "csv"

    def __init__(self, root, *, protocol=None, allow_missing=False, test_split="PublicTest",
                 pixels: str | Path | None = None):
        super().__init__(root, protocol=protocol, allow_missing=allow_missing)
        if test_split not in ("PublicTest", "PrivateTest"):
            raise UserError(f"--test-split must be PublicTest or PrivateTest, got {test_split!r}")
        self.test_split = test_split
        if not self.root.is_dir():
            raise UserError(f"{self.root}: {self.title} folder not found\n{EXPECTED_LAYOUT}")
        self.pixels_path = Path(pixels) if pixels is not None else self.root / PIXELS_FILE
        self._table: PixelTable | None = None

    @property
    def table(self) -> PixelTable:
        if self._table is None:
            self._table = load_pixel_table(self.pixels_path)
        return self._table

    def split_name(self, split: str) -> str:
        other = "PrivateTest" if self.test_split == "PublicTest" else "PublicTest"
        return {"train": "Training", "validation": other, "test": self.test_split}[split]

    def read_image(self, image_id: str) -> np.ndarray:
        row = row_of(image_id)
        table = self.table
        if not 0 <= row < len(table) or not table.present[row]:
            raise UserError(f"{self.pixels_path}:{row + 2}: no image on this line (row {image_id})")
        return table.pixels[row][:, :, None]

    def images(self, labels: LabelSet) -> np.ndarray:
        """The images of a label set, stacked: uint8 (N, 48, 48, 1)."""
        rows = np.asarray([row_of(name) for name in labels.names], dtype=np.int64)
        return self.table.pixels[rows][:, :, :, None]

    def _rows_with_images(self, rows: np.ndarray, split: str) -> tuple[np.ndarray, int]:
        table = self.table
        absent = rows[~table.present[rows]]
        if len(absent) and not self.allow_missing:
            raise UserError(f"{self.pixels_path}:{table.line(int(absent[0]))}: empty line, but the row belongs "
                            f"to the {self.split_name(split)} split"
                            + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
        constant = rows[table.present[rows] & table.constant[rows]]
        if len(constant):
            LOG.warning("%s: %d constant image(s) in %s kept (first on line %d; docs/BENCHMARK.md §1.6)",
                        self.pixels_path, len(constant), self.split_name(split), table.line(int(constant[0])))
        return rows[table.present[rows]], len(absent)

    def empty_split_error(self, split: str, where: Path) -> UserError:
        if where == self.pixels_path and not any(self.table.usage):  # no Usage column at all
            header = "the header names none" if self.table.has_header else "no header"
            return UserError(f"{where}: no Usage column ({header}), so no row is in the {split} split "
                             f"({self.split_name(split)}); expected the header 'emotion,pixels,Usage'")
        return UserError(f"{where}: no rows with Usage {self.split_name(split)} (the {split} split is empty)")


class FerPlus(_Fer):
    """FER2013 pixels with FER+ votes, 8 classes (docs/BENCHMARK.md §9.1, §9.2, §9.9)."""

    name = "ferplus"
    title = "FER+"
    class_names = FERPLUS_CLASSES
    protocols = ("soft", "hard")

    def __init__(self, root, *, norm: str = "fix", **options):
        super().__init__(root, **options)
        if norm not in NORMS:
            raise UserError(f"--ferplus-norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.norm = norm
        self.votes_path = self.root / VOTES_FILE
        self._votes: VoteTable | None = None

    @property
    def votes(self) -> VoteTable:
        if self._votes is None:
            votes = read_vote_csv(self.votes_path)
            if len(votes.usage) != len(self.table):
                raise UserError(f"{self.pixels_path} has {len(self.table)} data rows but {self.votes_path} has "
                                f"{len(votes.usage)}; row n of one must be row n of the other")
            # The splits come from the vote file's Usage: a row whose Usage differs in the image file is
            # the sign of two files out of step (the image would change split with --dataset).
            differing = [row for row, (mine, theirs) in enumerate(zip(self.table.usage, votes.usage))
                         if mine and mine != theirs]
            if differing:
                row = differing[0]
                raise UserError(f"{self.votes_path}:{row + 2}: Usage {votes.usage[row]!r}, but "
                                f"{self.pixels_path}:{row + 1 + int(self.table.has_header)} says "
                                f"{self.table.usage[row]!r} ({len(differing)} row(s) differ); row n of one must be "
                                f"row n of the other, with the same Usage")
            self._votes = votes
        return self._votes

    def labels(self, split: str) -> LabelSet:
        self.check_split(split)
        votes = self.votes
        usage = np.asarray(votes.usage)
        in_split = usage == self.split_name(split)
        if not in_split.any():
            raise self.empty_split_error(split, self.votes_path)
        named = np.asarray([bool(name) for name in votes.names])
        keep, soft = ferplus_filter(votes.votes, self.norm)
        rows = np.flatnonzero(in_split & named & keep)
        rows, n_missing = self._rows_with_images(rows, split)
        if not len(rows):
            raise UserError(f"{self.votes_path}: every {self.split_name(split)} row was dropped by the FER+ filter")
        labels = soft[rows]
        if self.protocol == "hard":
            labels = np.eye(8)[np.argmax(labels, axis=1)]
        return LabelSet(names=[row_id(int(r)) for r in rows], labels=labels.astype(np.float32),
                        protocol=self.protocol, split=split, n_total=int(in_split.sum()),
                        n_dropped=int((in_split & named & ~keep).sum()), n_missing=n_missing,
                        n_unnamed=int((in_split & ~named).sum()))

    def describe(self) -> dict:
        return {**super().describe(), "ferplus_norm": self.norm, "pixels": str(self.pixels_path),
                "votes": str(self.votes_path)}


def check_emotions(table: PixelTable, rows: np.ndarray) -> None:
    """UserError naming the file and line of the first of ``rows`` (with an image) whose ``emotion``
    is not an integer 0..6: FER2013's labels (``fer2013`` reads them; its export checks them too)."""
    rows = np.asarray(rows, dtype=np.int64)
    bad = rows[(table.emotion[rows] < 0) | (table.emotion[rows] > 6)]
    bad = bad[table.present[bad]]
    if len(bad):
        raise UserError(f"{table.path}:{table.line(int(bad[0]))}: emotion must be an integer 0..6 "
                        f"({', '.join(FER2013_CLASSES)})"
                        + (f" (and {len(bad) - 1} more row(s) of the split)" if len(bad) > 1 else ""))


class Fer2013(_Fer):
    """FER2013 with its own ``emotion`` labels, 7 classes (docs/BENCHMARK.md §9.9)."""

    name = "fer2013"
    title = "FER2013"
    class_names = FER2013_CLASSES
    protocols = ("hard",)

    def labels(self, split: str) -> LabelSet:
        self.check_split(split)
        table = self.table
        if not table.has_header:  # an export: labels and splits come from the original file
            meta_path = self.root / PIXELS_FILE
            export = ("a headerless export (--format fer-csv: pixels only, no emotion or Usage column, so "
                      "no labels and no splits)")
            original = f"--dataset fer2013 needs the original {PIXELS_FILE} (header 'emotion,pixels,Usage')"
            if self.pixels_path.resolve() == meta_path.resolve():
                raise UserError(f"{meta_path}: {export}; {original} in --data {self.root}")
            table = load_pixel_table(meta_path)
            if not table.has_header:
                raise UserError(f"{self.pixels_path} is {export}; its labels come from {meta_path}, but that "
                                f"is a headerless export too; {original} there")
            if len(table) != len(self.table):
                raise UserError(f"{self.pixels_path} is {export} of {len(self.table)} rows; its labels come "
                                f"from {meta_path}, which has {len(table)} data rows: row n of one must be "
                                f"row n of the other")
        usage = np.asarray(table.usage)
        rows = np.flatnonzero(usage == self.split_name(split))
        if not len(rows):
            raise self.empty_split_error(split, self.pixels_path)
        check_emotions(table, rows)
        emotion = table.emotion
        rows, n_missing = self._rows_with_images(rows, split)
        return LabelSet(names=[row_id(int(r)) for r in rows],
                        labels=np.eye(7, dtype=np.float32)[emotion[rows]],
                        protocol="hard", split=split, n_total=len(rows) + n_missing, n_missing=n_missing)
