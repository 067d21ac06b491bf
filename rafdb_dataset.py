"""RAF-DB: the one module every script uses to read the dataset (layout, images, labels, splits).

The layout is the one RAF-DB ships (BENCHMARK.md §1.1), under a folder given with ``--rafdb``::

    RAF-DB/
      distribute_basic.csv                      soft labels, one row of 7 floats per image
      basic/EmoLabel/list_patition_label.txt    hard labels, "<split>_<id>.jpg <1..7>" per line
      basic/Image/aligned/<split>_<id>_aligned.jpg     100x100 aligned faces
      basic/Image/original/<split>_<id>.jpg            original photos (RAF-DB-P only)
      basic/Annotation/manual/<split>_<id>_manu_attri.txt   5 landmarks (RAF-DB-P only)

Images are returned as RGB uint8 arrays; the conversion from OpenCV's BGR happens here, at I/O.
This module never imports TensorFlow.

Command line (``--dataset ferplus|fer2013|folder`` for the other datasets, docs/DATASETS.md)::

    python3 rafdb_dataset.py sample --out demo/RAF-DB --train 1200 --test 300   # synthetic tree
    python3 rafdb_dataset.py summary --rafdb demo/RAF-DB                         # counts per class
    python3 rafdb_dataset.py check-labels --rafdb RAF-DB                         # CSV vs list agreement
    python3 rafdb_dataset.py sample --dataset ferplus --out demo/FERPlus         # synthetic FER CSV pair
    python3 rafdb_dataset.py summary --dataset ferplus --data demo/FERPlus
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from cli_common import (DIR_MODE, ArgumentParser, UserError, check_output_path, read_text_lines, run_main, seed_int,
                        setup_logging)
from datasets import base
from datasets.classes import RAFDB_CLASSES as CLASS_NAMES
from datasets.images import FORMATS, decode_image, encode_image, read_image  # noqa: F401 (re-exported)

LOG = logging.getLogger("fer.rafdb")

# BENCHMARK.md §1.2: CLASS_NAMES (datasets.classes) index = RAF-DB label - 1, also the CSV column order.
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "test")
PROTOCOLS = ("soft", "hard")

ALIGNED_DIR = "basic/Image/aligned"
ORIGINAL_DIR = "basic/Image/original"
ANNOTATION_DIR = "basic/Annotation/manual"
PARTITION_FILE = "basic/EmoLabel/list_patition_label.txt"  # spelled as shipped
CSV_FILE = "distribute_basic.csv"

# BENCHMARK.md §1.1: real RAF-DB has 12,271 train and 3,068 test images; CSV rows are train then test.
RAFDB_TRAIN_COUNT = 12271
RAFDB_TEST_COUNT = 3068
ID_DIGITS = {"train": 5, "test": 4}

EXPECTED_LAYOUT = """expected layout of the RAF-DB root named by --rafdb or --data (default ./RAF-DB; see
RAF-DB/README.md; get RAF-DB from its authors, or run `python3 rafdb_dataset.py sample --out DIR`
for a synthetic tree):
  <rafdb>/distribute_basic.csv
  <rafdb>/basic/EmoLabel/list_patition_label.txt
  <rafdb>/basic/Image/aligned/{train_00001,test_0001,...}_aligned.jpg
  <rafdb>/basic/Image/original/{train_00001,test_0001,...}.jpg          (RAF-DB-P only)
  <rafdb>/basic/Annotation/manual/{train_00001,...}_manu_attri.txt      (RAF-DB-P only)"""

_NAME_RE = re.compile(r"^(train|test)_(\d+)$")


# --------------------------------------------------------------------------------------------
# Paths


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"not a RAF-DB image name: {name!r} (expected e.g. 'test_0001')")
    return name


ALIGNED_SUFFIX = "_aligned.jpg"


def aligned_path(root: str | Path, name: str) -> Path:
    """``<root>/basic/Image/aligned/<name>_aligned.jpg`` for a name like ``test_0001``."""
    return Path(root) / ALIGNED_DIR / f"{_check_name(name)}{ALIGNED_SUFFIX}"


def aligned_name(path: str | Path) -> str:
    """The image name (``test_0001``) of an aligned file ``.../test_0001_aligned.jpg``."""
    return Path(path).name[: -len(ALIGNED_SUFFIX)]


def original_path(root: str | Path, name: str) -> Path:
    """``<root>/basic/Image/original/<name>.jpg``."""
    return Path(root) / ORIGINAL_DIR / f"{_check_name(name)}.jpg"


def landmarks_path(root: str | Path, name: str) -> Path:
    """``<root>/basic/Annotation/manual/<name>_manu_attri.txt``."""
    return Path(root) / ANNOTATION_DIR / f"{_check_name(name)}_manu_attri.txt"


def name_from_row(row: int, train_count: int = RAFDB_TRAIN_COUNT) -> str:
    """The image name of CSV row ``row`` (0-based), as the original builds it (BENCHMARK.md §1.1)."""
    if row < train_count:
        return f"train_{row + 1:05d}"
    return f"test_{row + 1 - train_count:04d}"


def require_dir(path: Path, what: str) -> Path:
    """Raise a UserError naming ``path`` and showing the expected layout when it is missing."""
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found\n{EXPECTED_LAYOUT}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found\n{EXPECTED_LAYOUT}")
    return path


def _list_dir(folder: Path, split: str, suffix: str) -> list[Path]:
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    files = sorted(folder.glob(f"{split}_*{suffix}"))
    if not files:
        raise UserError(f"{folder}: no {split}_*{suffix} files\n{EXPECTED_LAYOUT}")
    return files


def export_root(rafdb: str | Path | None, data: str | Path | None, default: str = "RAF-DB") -> str:
    """The RAF-DB root an export reads: ``--rafdb`` or ``--data`` (the name every script shares),
    ``default`` when neither is given. UserError when both are given and name different folders."""
    if rafdb is not None and data is not None and Path(rafdb).resolve() != Path(data).resolve():
        raise UserError(f"--rafdb {rafdb} and --data {data} name two different RAF-DB roots; give one")
    chosen = rafdb if rafdb is not None else data
    return str(chosen if chosen is not None else default)


def list_aligned(root: str | Path, split: str = "test", *, complete: bool = False) -> list[Path]:
    """Every ``basic/Image/aligned/<split>_*_aligned.jpg``, sorted by name.

    ``complete``: a UserError when the tree's label list names a ``split`` image that is not
    there (:func:`refuse_incomplete`); the exports use it, so that a dataset built from a tree
    with faces missing (or renamed, e.g. ``.JPG``) is not taken for the benchmark's."""
    folder = require_dir(Path(root) / ALIGNED_DIR, "aligned images")
    files = _list_dir(folder, split, ALIGNED_SUFFIX)
    if complete:
        refuse_incomplete(root, split, {aligned_name(path) for path in files}, aligned_path)
    return files


def listed_names(root: str | Path, split: str) -> tuple[list[str], Path] | None:
    """The ``split`` image names the tree's label lists give, and the file that gives them: the
    hard-label list when present, else the soft-label CSV (one row per basic image, real RAF-DB's
    train count first); None when the tree has neither (a folder of faces alone)."""
    root = Path(root)
    if (root / PARTITION_FILE).is_file():
        return [name for name, _ in read_partition(root) if name.startswith(split + "_")], root / PARTITION_FILE
    if (root / CSV_FILE).is_file():
        rows = len(read_distribution_csv(root))
        if rows != RAFDB_TRAIN_COUNT + RAFDB_TEST_COUNT:
            # Rows are named by position after real RAF-DB's training rows: another count cannot be
            # named without the hard-label list (the evaluations refuse such a CSV).
            return None
        names = (name_from_row(row) for row in range(rows))
        return [name for name in names if name.startswith(split + "_")], root / CSV_FILE
    return None


def refuse_incomplete(root: str | Path, split: str, found: set[str], path_of) -> None:
    """UserError naming the first image the label list names that is not in ``found`` (its path is
    ``path_of(root, name)``), with how many more are missing and the expected layout."""
    listed = listed_names(root, split)
    if listed is None:
        _warn_unchecked(Path(root))
        return
    names, list_file = listed
    missing = [name for name in names if name not in found]
    if missing:
        path = path_of(root, missing[0])
        more = f" (and {len(missing) - 1} more {split} image(s))" if len(missing) > 1 else ""
        near = [other.name for other in path.parent.iterdir() if other.name.lower() == path.name.lower()] \
            if path.parent.is_dir() else []
        found_as = f"; found {near[0]}, RAF-DB names it {path.name}" if near else ""
        raise UserError(
            f"{path}: image not found{found_as}{more}; {list_file} names it, so the tree {root} "
            f"is incomplete (restore the missing images: a dataset built without them is not the "
            f"benchmark's)\n{EXPECTED_LAYOUT}"
        )


def _warn_unchecked(root: Path) -> None:
    """The warning of an export whose tree has no label list it can check the images against."""
    csv_file = root / CSV_FILE
    if csv_file.is_file():
        why = (f"{csv_file} has {len(read_distribution_csv(root))} rows, not real RAF-DB's "
               f"{RAFDB_TRAIN_COUNT + RAFDB_TEST_COUNT}, so its rows cannot be named, and there is no {root / PARTITION_FILE}")
    else:
        why = f"neither {PARTITION_FILE} nor {CSV_FILE} is in {root}"
    LOG.warning("%s: the export cannot check that no face of the tree is missing; every image found is "
                "exported (the evaluations need a label list: docs/DATASETS.md)", why)


def list_originals(root: str | Path, split: str = "test") -> list[str]:
    """Names (``test_0001``, ...) of every ``basic/Image/original/<split>_*.jpg``, sorted."""
    folder = require_dir(Path(root) / ORIGINAL_DIR, "original images")
    return [path.stem for path in _list_dir(folder, split, ".jpg") if _NAME_RE.match(path.stem)]


# --------------------------------------------------------------------------------------------
# Images and landmarks


def read_landmarks(path: str | Path) -> np.ndarray:
    """The 5 manual landmarks (x, y) of a ``*_manu_attri.txt`` file, float64 (5, 2).

    Lines 1-5 hold ``x y`` separated by tabs or spaces, in the order left eye, right eye, nose,
    left mouth corner, right mouth corner (BENCHMARK.md §1.1). Later lines are ignored.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()  # a BOM is not data
    except FileNotFoundError:
        raise UserError(f"{path}: landmark file not found") from None
    if len(lines) < 5:
        raise UserError(f"{path}: expected 5 landmark lines 'x y', found {len(lines)} lines")
    points = np.empty((5, 2), dtype=np.float64)
    for index, line in enumerate(lines[:5]):
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            points[index] = [float(fields[0]), float(fields[1])]
        except ValueError:
            raise UserError(
                f"{path}:{index + 1}: expected two numbers 'x y' (tab or space separated), got {line!r}"
            ) from None
        if not np.all(np.isfinite(points[index])):
            raise UserError(f"{path}:{index + 1}: landmark is not finite: {line!r}")
    return points


# --------------------------------------------------------------------------------------------
# Labels


def vote_filter(p: Sequence[float]) -> np.ndarray | None:
    """The original's FER+-style vote filter (``cntk_filtering``, BENCHMARK.md §1.3); None = drop.

    Votes d = 10 p; d_k <= 1 are zeroed; drop when more than two classes tie for the maximum or
    when (winners x max) <= half the total; otherwise return d / total (float64).
    """
    votes = 10.0 * np.asarray(p, dtype=np.float64)
    votes[votes <= 1.0] = 0.0
    total = votes.sum()
    top = votes.max()
    winners = int(np.count_nonzero(votes == top))
    if winners > 2 or winners * top <= 0.5 * total:
        return None
    return votes / total


@dataclasses.dataclass
class LabelSet(base.LabelSet):
    """Image names of one split with their 7-class label vectors (RAF-DB class order)."""

    def aligned_paths(self, root: str | Path) -> list[Path]:
        return [aligned_path(root, name) for name in self.names]


def read_partition(root: str | Path) -> list[tuple[str, int]]:
    """``list_patition_label.txt`` as (name, class index) pairs, in file order."""
    path = require_file(Path(root) / PARTITION_FILE, "hard-label list")
    entries: list[tuple[str, int]] = []
    seen: dict[str, int] = {}  # image name -> its line
    for number, line in enumerate(read_text_lines(path, "hard-label list"), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{path}:{number}: expected '<split>_<id>.jpg <label 1..7>', got {line!r}")
        file_name, label = fields
        if "/" in file_name or "\\" in file_name or ".." in file_name:
            raise UserError(
                f"{path}:{number}: image name {file_name!r} points outside the dataset root; "
                "expected a bare name like 'test_0001.jpg'"
            )
        stem = file_name[:-4] if file_name.endswith(".jpg") else None
        if stem is None or not _NAME_RE.match(stem):
            raise UserError(f"{path}:{number}: expected an image name like 'test_0001.jpg', got {file_name!r}")
        if label not in {str(k) for k in range(1, NUM_CLASSES + 1)}:
            raise UserError(f"{path}:{number}: label must be an integer 1..7, got {label!r}")
        if stem in seen:  # the image would be scored (or trained on) twice, and another never
            raise UserError(f"{path}:{number}: {file_name} is listed again (first on line {seen[stem]}); "
                            f"each image has one line")
        seen[stem] = number
        entries.append((stem, int(label) - 1))
    if not entries:
        raise UserError(f"{path}: no label lines")
    return entries


def read_distribution_csv(root: str | Path) -> np.ndarray:
    """``distribute_basic.csv`` as float64 (rows, 7); each row must sum to 1 within 1e-3."""
    path = require_file(Path(root) / CSV_FILE, "soft-label CSV (the vote distributions of the soft protocol; "
                                                "--labels hard reads basic/EmoLabel/list_patition_label.txt only)")
    rows = []
    for number, line in enumerate(read_text_lines(path, "soft-label CSV"), 1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        try:
            if len(fields) != NUM_CLASSES:
                raise ValueError(f"expected {NUM_CLASSES} comma-separated values, got {len(fields)}")
            values = [float(field) for field in fields]  # Python float, as the original (BENCHMARK.md §1.3)
            if not all(np.isfinite(values)) or min(values) < 0:
                raise ValueError("values must be finite and non-negative")
            if abs(sum(values) - 1.0) > 1e-3:
                raise ValueError(f"values sum to {sum(values):.6f}, expected 1 within 1e-3")
        except ValueError as error:
            reason = str(error) if "could not convert" not in str(error) else "a value is not a number"
            raise UserError(f"{path}:{number}: {reason}: {line.strip()!r}") from None
        rows.append(values)
    if not rows:
        raise UserError(f"{path}: no rows")
    return np.asarray(rows, dtype=np.float64)


def _split_counts(root: Path) -> tuple[int, int]:
    """(train, test) counts: from the partition list when present, else real RAF-DB's."""
    if (root / PARTITION_FILE).is_file():
        entries = read_partition(root)
        return (sum(name.startswith("train_") for name, _ in entries),
                sum(name.startswith("test_") for name, _ in entries))
    return RAFDB_TRAIN_COUNT, RAFDB_TEST_COUNT


def load_labels(
    root: str | Path, split: str = "test", protocol: str = "soft", *, allow_missing: bool = False
) -> LabelSet:
    """Names and label vectors of one split under a label protocol (BENCHMARK.md §1.3, §1.4).

    ``soft``: rows of ``distribute_basic.csv`` through :func:`vote_filter` (the original's
    default). ``hard``: one-hot labels from ``list_patition_label.txt`` with no filter. Every
    kept image must exist in ``basic/Image/aligned``; ``allow_missing`` skips and counts absent ones.
    """
    root = Path(root)
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if protocol not in PROTOCOLS:
        raise UserError(f"--labels must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    require_dir(root, "RAF-DB")
    require_dir(root / ALIGNED_DIR, "aligned images")
    names: list[str] = []
    labels: list[np.ndarray] = []
    n_total = n_dropped = 0
    if protocol == "soft":
        table = read_distribution_csv(root)
        train_count, test_count = _split_counts(root)
        if len(table) != train_count + test_count:
            partition = root / PARTITION_FILE
            if partition.is_file():
                source = f"as {partition} lists them: one of the two files has lines missing or repeated"
            else:
                source = (f"real RAF-DB's counts, as {partition} "
                          f"{'is not a file' if partition.exists() else 'is missing'}: it gives the counts "
                          f"of another tree, such as a sample")
            raise UserError(
                f"{root / CSV_FILE}: {len(table)} rows, expected {train_count + test_count} "
                f"({train_count} train + {test_count} test, one per basic image; {source})"
            )
        for row, distribution in enumerate(table):
            name = name_from_row(row, train_count)
            if not name.startswith(split + "_"):
                continue
            n_total += 1
            label = vote_filter(distribution)
            if label is None:
                n_dropped += 1
                continue
            names.append(name)
            labels.append(label)
    else:
        for name, index in read_partition(root):
            if not name.startswith(split + "_"):
                continue
            n_total += 1
            names.append(name)
            labels.append(np.eye(NUM_CLASSES)[index])
    if not names:
        raise UserError(f"{root}: no {split} images under the {protocol} label protocol")
    present = [aligned_path(root, name).is_file() for name in names]
    n_missing = present.count(False)
    if n_missing:
        missing = [name for name, ok in zip(names, present) if not ok]
        if not allow_missing:
            raise UserError(
                f"{aligned_path(root, missing[0])}: image not found"
                + (f" (and {n_missing - 1} more {split} image(s))" if n_missing > 1 else "")
                + f"; the {protocol} label list names it but the tree {root} is incomplete (restore the "
                "missing images; scripts that offer --allow-missing can skip them instead)"
            )
        LOG.warning("skipping %d missing %s images (first: %s)", n_missing, split, missing[0])
        names = [name for name, ok in zip(names, present) if ok]
        labels = [label for label, ok in zip(labels, present) if ok]
    return LabelSet(
        names=names,
        labels=np.asarray(labels, dtype=np.float32),
        protocol=protocol,
        split=split,
        n_total=n_total,
        n_dropped=n_dropped,
        n_missing=n_missing,
    )


def holdout_split(labels: LabelSet, fraction: float = 0.1, seed: int = 0,
                  test_flag: str | None = "--val-split test") -> tuple[LabelSet, LabelSet]:
    """Hold out ``fraction`` of each class (by argmax), seeded; returns (train, validation).

    BENCHMARK.md §1.5 FIX: the original selected checkpoints on the test set. The rule is
    :func:`datasets.base.holdout_split`, shared by every dataset.
    """
    return base.holdout_split(labels, fraction, seed, test_flag=test_flag)


def class_counts(labels: LabelSet) -> np.ndarray:
    """Images per class (argmax), int (7,)."""
    return np.bincount(labels.classes, minlength=NUM_CLASSES)


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--rafdb`` and ``--labels`` (shared by every script)."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--rafdb", default="RAF-DB", type=Path,
                       help="RAF-DB folder (contains basic/ and distribute_basic.csv)")
    group.add_argument("--labels", default="soft", choices=PROTOCOLS,
                       help="label protocol: 'soft' = distribute_basic.csv with the original's vote "
                            "filter (filtered test subset); 'hard' = list_patition_label.txt, all images")


# --------------------------------------------------------------------------------------------
# Command line


def _format_counts(title: str, labels: base.LabelSet, class_names: Sequence[str] = CLASS_NAMES) -> str:
    counts = np.bincount(labels.classes, minlength=len(class_names))
    cells = "  ".join(f"{name[:9]:>9} {count:5d}" for name, count in zip(class_names, counts))
    extra = f" (of {labels.n_total}; {labels.filter_note()})" if labels.filter_note() else ""
    return f"{title:<12} N={len(labels):5d}{extra}\n    {cells}"


def _cmd_summary(args: argparse.Namespace) -> int:
    import datasets

    data = datasets.open_dataset(args)
    protocols = data.protocols if args.all_protocols else (data.protocol,)
    # Printed once everything is read: a missing or broken tree is the only output, not a header first.
    lines = [f"{data.title} tree: {data.root}",
             "classes (index: name): " + ", ".join(f"{i}: {n}" for i, n in enumerate(data.class_names))]
    folders = getattr(data, "folder_class", None)
    if folders:  # a folder dataset: which class folder became which class (classes.txt, synonyms)
        lines.append("class folders: " + ", ".join(f"{folder}/ -> {data.class_names[index]}"
                                                   for folder, index in sorted(folders.items(),
                                                                               key=lambda item: (item[1], item[0]))))
    for protocol in protocols:
        opened = data if protocol == data.protocol else datasets.open_dataset(
            argparse.Namespace(**{**vars(args), "labels": protocol}))
        for split in base.SPLITS:
            if split == "validation" and not opened.has_validation:
                lines.append(f"{'validation':<12} none: training holds out a seeded, stratified part of train "
                             f"(--val-fraction)")
                continue
            if getattr(opened, "splits", None) is not None and split not in opened.splits:
                lines.append(f"{split:<12} none (no {opened.split_name(split)}/ folder)")  # a folder dataset without it
                continue
            labels = opened.labels(split)
            native = opened.split_name(split)
            title = f"{split}/{protocol}" + (f" ({native})" if native != split else "")
            lines.append(_format_counts(title, labels, opened.class_names))
    print("\n".join(lines))
    return 0


def _cmd_check_labels(args: argparse.Namespace) -> int:
    """RAF-DB: CSV argmax vs list_patition_label.txt (BENCHMARK.md §1.2 EXTEND); FER: emotion vs FER+.

    Only reports, never fails.
    """
    import datasets

    name = getattr(args, "dataset", "rafdb")
    if name in ("ferplus", "fer2013"):
        return _check_fer_labels(datasets.get("ferplus", args.data))
    if name != "rafdb":
        raise UserError(f"check-labels: --dataset {name} has one label source only (nothing to compare)")
    root = datasets.open_dataset(args).root
    table = read_distribution_csv(root)
    train_count, _ = _split_counts(root)
    hard = dict(read_partition(root))
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for row, distribution in enumerate(table):
        name = name_from_row(row, train_count)
        if name in hard:
            confusion[hard[name], int(np.argmax(distribution))] += 1
    _print_agreement("CSV argmax vs list_patition_label.txt", "hard label", "CSV argmax",
                     confusion, CLASS_NAMES, CLASS_NAMES)
    return 0


def _print_agreement(title, rows_are, columns_are, confusion, row_names, column_names, agree=None) -> None:
    total = confusion.sum()
    agree = np.trace(confusion) if agree is None else agree
    print(f"{title}: {agree}/{total} agree ({100.0 * agree / max(total, 1):.2f}%)")
    print(f"rows: {rows_are}; columns: {columns_are}")
    print(" " * 10 + "".join(f"{name[:8]:>9}" for name in column_names))
    for index, name in enumerate(row_names):
        print(f"{name[:9]:<10}" + "".join(f"{value:9d}" for value in confusion[index]))


def _check_fer_labels(data) -> int:
    """FER2013's emotion column vs the FER+ label (argmax after the vote filter), every split."""
    import datasets
    from datasets.fer2013 import FER2013_CLASSES, ferplus_filter

    table = data.table
    keep, soft = ferplus_filter(data.votes.votes, data.norm)
    keep &= np.asarray([bool(n) for n in data.votes.names]) & (table.emotion >= 0)
    mapping = datasets.map_classes(data.class_names, FER2013_CLASSES)  # FER2013 class -> FER+ index
    confusion = np.zeros((7, len(data.class_names)), dtype=np.int64)
    np.add.at(confusion, (table.emotion[keep].astype(np.int64), np.argmax(soft[keep], axis=1)), 1)
    agree = int(sum(confusion[i, mapping.dataset_to_model[i]] for i in range(7)))
    _print_agreement("FER2013 emotion vs FER+ label (by class name)", "FER2013 emotion", "FER+ argmax",
                     confusion, FER2013_CLASSES, data.class_names, agree)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import synthetic_faces

    out = Path(args.out)
    val = args.test if args.val is None else args.val
    if args.dataset == "rafdb":
        for flag, count, most in (("--train", args.train, 99999), ("--test", args.test, 9999)):
            if not 1 <= count <= most:
                raise UserError(f"{flag}: expected 1..{most} images (RAF-DB's {len(str(most))}-digit ids), got {count}")

        def write(target):
            synthetic_faces.write_sample_tree(target, n_train=args.train, n_test=args.test, seed=args.seed)
        what = f"RAF-DB-shaped sample tree ({args.train} train + {args.test} test images"
    elif args.dataset in ("ferplus", "fer2013"):
        def write(target):
            synthetic_faces.write_fer_sample(target, args.train, args.test, val, seed=args.seed)
        what = (f"FER2013/FER+ CSV pair (fer2013.csv + fer2013new.csv; {args.train} Training, "
                f"{args.test} PublicTest, {val} PrivateTest rows")
    else:
        def write(target):
            synthetic_faces.write_folder_sample(target, args.train, val, args.test, seed=args.seed)
        what = f"class-folder dataset ({args.train} train, {val} val, {args.test} test images"
    import signal

    def terminated(signum, frame):  # SIGTERM (a job stopped): the writers' cleanup runs, as on Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"terminated (SIGTERM) before {out} was finished; its temporary files are removed: run the "
              f"command again", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        _write_sample(args, out, write)
    except ValueError as error:  # the library validates its arguments with ValueError
        raise UserError(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"wrote a SYNTHETIC {what}, seed {args.seed}) to {out}", file=sys.stderr)
    return 0


# Written last into every sample folder: --force replaces a folder only if it holds this file, so it
# never deletes a real dataset (or anything else) that happens to be named as --out.
SAMPLE_MARKER = ".synthetic-sample"


def _write_sample(args: argparse.Namespace, out: Path, write) -> None:
    if not out.name or out.resolve() == Path.cwd().resolve():
        raise UserError(f"--out {args.out}: name a folder for the sample (not the current folder)")
    check_output_path(out, "--out", folder=True)  # a read-only or missing place: one line, before any work
    if out.is_dir():  # the writers build the tree in a hidden folder beside it, then rename it
        check_output_path(out.parent, "--out", folder=True)
    non_empty = (out.is_dir() and any(out.iterdir())) or (out.exists() and not out.is_dir())
    marker = (f"written by rafdb_dataset.py sample --dataset {args.dataset} --seed {args.seed}: SYNTHETIC, "
              f"not real data\n")
    if non_empty:
        ours = (out / SAMPLE_MARKER).is_file()
        if not args.force:
            hint = ("pass --force to replace it (a sample this command wrote)" if ours else
                    "choose another --out (it is not a sample this command wrote, so --force would not "
                    "replace it either)")
            raise UserError(f"{out}: already exists and is not empty; {hint}")
        if not ours:
            raise UserError(f"{out}: --force replaces only a sample folder this command wrote (it holds "
                            f"{SAMPLE_MARKER}); this one does not, and may be a real dataset or anything "
                            f"else: delete it yourself if it is yours to delete, or choose another --out")
        # Build the new tree beside the old one first, so an interrupted run loses nothing; both
        # temporary folders get fresh hidden names, so no folder of the user's is ever touched. Those a
        # killed run left (the names only this command makes) go first.
        for stale in out.parent.glob(f".{glob.escape(out.name)}.[no][el][wd]-*"):
            if stale.is_dir() and not stale.is_symlink() and re.fullmatch(
                    rf"\.{re.escape(out.name)}\.(new|old)-[A-Za-z0-9_]{{8}}", stale.name):
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
        staging.chmod(DIR_MODE)
        try:
            write(staging)
            (staging / SAMPLE_MARKER).write_text(marker)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) / out.name
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old.parent, ignore_errors=True)
    else:
        write(out)
        (out / SAMPLE_MARKER).write_text(marker)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    import datasets

    sample = commands.add_parser("sample", help="write a synthetic sample dataset (RAF-DB tree, FER CSV pair "
                                 "or class folders)", formatter_class=parser.formatter_class)
    sample.add_argument("--dataset", default="rafdb", choices=tuple(datasets.REGISTRY),
                        help="layout to write: RAF-DB tree, FER2013/FER+ CSV pair (ferplus and fer2013 "
                             "share it), or class folders train/val/test/<class>/")
    sample.add_argument("--out", required=True, type=Path, help="folder to create (the dataset root)")
    sample.add_argument("--train", type=int, default=1200, help="number of training images")
    sample.add_argument("--test", type=int, default=300, help="number of test images (FER: PublicTest rows)")
    sample.add_argument("--val", type=int, default=None,
                        help="FER: PrivateTest rows; folder: val images (default: as --test; RAF-DB has none)")
    sample.add_argument("--seed", type=seed_int, default=0, help="seed; the same seed gives the same bytes")
    sample.add_argument("--force", action="store_true",
                        help=f"replace an existing sample folder (one holding {SAMPLE_MARKER}, which this command "
                             f"writes; any other non-empty folder is refused)")
    sample.set_defaults(func=_cmd_sample)

    summary = commands.add_parser("summary", help="print images per class and split",
                                  formatter_class=parser.formatter_class)
    datasets.add_dataset_args(summary)
    summary.add_argument("--all-protocols", action="store_true", help="show every label protocol")
    summary.set_defaults(func=_cmd_summary)

    check = commands.add_parser("check-labels", help="agreement of two label sources (RAF-DB: CSV argmax vs "
                                "the hard labels; FER: FER2013 emotion vs FER+)",
                                formatter_class=parser.formatter_class)
    datasets.add_dataset_args(check, protocols=False)
    check.set_defaults(func=_cmd_check_labels)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run_main(main)
