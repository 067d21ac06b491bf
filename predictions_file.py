"""Score predictions made by any framework over an exported tree (docs/BENCHMARK.md §11.4).

File format (``--predictions FILE.csv``), UTF-8 CSV with a header line:

``path,class``
    one predicted class per image: a class name of the dataset (synonyms such as angry/happy/sad
    accepted) or its index in the dataset's class order (RAF-DB: 0 surprise ... 6 neutral);
``path,p0,p1,...,pK-1``
    one score row per image, K = the dataset's number of classes, columns in the dataset's class
    order; the evaluation takes the argmax (first maximum on ties), exactly as for a model. Scores
    are taken as a model's outputs are: probabilities when every row is non-negative and sums to 1
    (``model_files.looks_like_probabilities``, within what printing with 2 decimals can add up to),
    logits when no row does (a softmax is applied to every row, so that ECE, NLL and Brier describe
    probabilities); a file with rows of both kinds is an error naming one of each, and so is a file
    of percentages (every row non-negative and summing to 100, within what whole percents add up to).

``path`` is relative to the exported tree's root with ``/`` separators
(``rafdb.test.contrast.3/test_0001_aligned.jpg``); the clean images are ``clean/<file name>``.
Blank lines and lines starting with ``#`` are ignored, and so is a UTF-8 byte-order mark (Excel's
"CSV UTF-8"). A line with the wrong number of fields, an
unknown class, a non-finite score, a duplicated path or a path that names no image of the tree is
an error naming the file and line; an image the evaluation needs that has no line is an error
naming the image.

:class:`PredictionsClassifier` stands in for ``checkpoints.Classifier`` in the evaluations:
``make_dataset(paths)`` + ``predict_dataset(...)`` return, for the same image paths, the (N, K)
scores a model would have returned (one-hot rows for ``path,class``), so every number the
evaluation derives from them (accuracy, error, CE, flip rates) is computed by the same code. One-hot
rows are not a model's confidence: with ``path,class`` the calibration metrics (ECE, NLL, Brier)
are not computed (``scores_are_confidences`` False; the results hold null).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from cli_common import UserError

LOG = logging.getLogger("fer.predictions")

CLEAN_PREFIX = "clean/"
PRINTED_STEP = 0.01  # a score row's values as printed: at least 2 decimals (looks_like_probabilities)


class Predictions:
    """The rows of a predictions file: ``rows[key] = (line number, scores float32 (K,))``; ``kind``
    "class" or "probabilities" (the header), ``output_kind`` what the scores were taken for
    ("classes", "probabilities", or "logits": softmax applied to the rows)."""

    def __init__(self, path: Path, kind: str, class_names: tuple[str, ...],
                 rows: dict[str, tuple[int, np.ndarray]], output_kind: str | None = None):
        self.path, self.kind, self.class_names, self.rows = path, kind, class_names, rows
        self.output_kind = output_kind or ("classes" if kind == "class" else "probabilities")

    def __len__(self) -> int:
        return len(self.rows)


def _canonical(name: str) -> str:
    from checkpoints import CLASS_SYNONYMS

    name = name.strip().lower()
    return CLASS_SYNONYMS.get(name, name)


def normalise_key(text: str) -> str:
    """A predictions-file path as a lookup key: '/' separators, no leading './'."""
    key = text.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def read_predictions(path: str | Path, class_names: Sequence[str]) -> Predictions:
    """Parse and check a predictions file against the dataset's class names (in order)."""
    path = Path(path)
    class_names = tuple(class_names)
    canonical = [_canonical(name) for name in class_names]
    n_classes = len(class_names)
    try:
        stream = open(path, encoding="utf-8-sig", newline="")  # a leading byte-order mark is dropped
    except OSError as error:
        raise UserError(f"{path}: cannot read the predictions file ({error.strerror})") from None
    rows: dict[str, tuple[int, np.ndarray]] = {}
    kind = None
    with stream:
        try:
            for number, fields in enumerate(csv.reader(stream), start=1):
                if not fields or (len(fields) == 1 and not fields[0].strip()) or \
                        fields[0].lstrip().startswith("#"):
                    continue
                fields = [field.strip() for field in fields]
                where = f"{path}:{number}"
                if kind is None:
                    kind = _header(fields, n_classes, where)
                    continue
                width = 2 if kind == "class" else n_classes + 1
                if len(fields) != width:
                    raise UserError(f"{where}: expected {width} fields "
                                    f"({'path,class' if kind == 'class' else f'path,p0..p{n_classes - 1}'}),"
                                    f" found {len(fields)}")
                key = normalise_key(fields[0])
                if not key:
                    raise UserError(f"{where}: empty path")
                if key in rows:
                    raise UserError(f"{where}: duplicate path {key} (first on line "
                                    f"{rows[key][0]})")
                if kind == "class":
                    scores = np.zeros(n_classes, np.float32)
                    scores[_class_index(fields[1], canonical, class_names, where)] = 1.0
                else:
                    scores = _scores(fields[1:], where)
                rows[key] = (number, scores)
        except UnicodeDecodeError as error:
            raise UserError(f"{path}: not UTF-8 text ({error.reason})") from None
        except csv.Error as error:
            raise UserError(f"{path}: not a CSV file ({error})") from None
    if kind is None:
        raise UserError(f"{path}: empty predictions file; expected a header path,class or "
                        f"path,p0..p{n_classes - 1}")
    output_kind = None
    if kind == "probabilities" and rows:
        import model_files

        keys = list(rows)
        scores = np.stack([rows[key][1] for key in keys])
        # probabilities written with 2 decimals (each off by up to 0.005) still count as probabilities
        each = model_files.probability_rows(scores, step=PRINTED_STEP)
        if each.any() and not each.all():  # one decision for the file: a stray row would flip every row
            odd, fine = int(np.argmin(each)), int(np.argmax(each))
            row = scores[odd].astype(np.float64)
            raise UserError(f"{path}:{rows[keys[odd]][0]}: scores summing to {row.sum():.4g} (smallest "
                            f"{row.min():.4g}), not probabilities, while those of line {rows[keys[fine]][0]} "
                            f"are: write every row as probabilities (non-negative, summing to 1) or every "
                            f"row as logits")
        # rows of percentages (non-negative, each summing to 100): softmax'ed as logits they give other
        # calibration numbers (ECE, NLL, Brier) with the right accuracy and no word
        percent = model_files.probability_rows(scores / 100.0, step=0.01)  # printed as whole percents too
        if not each.any() and percent.all():
            raise UserError(f"{path}: every score row is non-negative and sums to 100 (line {rows[keys[0]][0]}: "
                            f"{scores[0].astype(np.float64).sum():.4g}): percentages, not probabilities or logits; "
                            f"divide the scores by 100 (probabilities sum to 1; a row that does not is taken "
                            f"for logits)")
        if not each.all():
            output_kind = "logits"
            LOG.info("%s: the scores are not probabilities (a row is negative or does not sum to 1): "
                     "taken for logits, a softmax is applied to every row", path)
            for key, row in zip(keys, model_files.softmax(scores)):
                rows[key] = (rows[key][0], row)
    return Predictions(path, kind, class_names, rows, output_kind)


def _header(fields: list[str], n_classes: int, where: str) -> str:
    lowered = [field.lower() for field in fields]
    if lowered == ["path", "class"]:
        return "class"
    if lowered == ["path"] + [f"p{index}" for index in range(n_classes)]:
        return "probabilities"
    raise UserError(f"{where}: expected the header path,class or path,p0,...,p{n_classes - 1} "
                    f"({n_classes} classes), found {','.join(fields)}")


def _class_index(text: str, canonical: list[str], class_names: tuple[str, ...],
                 where: str) -> int:
    if text.isascii() and text.lstrip("-").isdigit():  # int() also takes other scripts' digits
        index = int(text)
        if not 0 <= index < len(class_names):
            raise UserError(f"{where}: class index {index} out of range 0..{len(class_names) - 1}")
        return index
    name = _canonical(text)
    if name in canonical:
        return canonical.index(name)
    raise UserError(f"{where}: unknown class {text!r}; expected an index 0..{len(class_names) - 1} "
                    f"or one of {', '.join(class_names)}")


def _scores(fields: list[str], where: str) -> np.ndarray:
    try:
        values = [float(field) for field in fields]
    except ValueError:
        raise UserError(f"{where}: scores must be numbers, found {','.join(fields)}") from None
    if not all(math.isfinite(value) for value in values):
        raise UserError(f"{where}: scores must be finite, found {','.join(fields)}")
    return np.array(values, np.float32)


class PredictionsClassifier:
    """Stands in for ``checkpoints.Classifier``: predictions come from a file, not a model.

    ``tree_root`` is the exported tree the paths are relative to; ``clean_dir`` holds the clean
    images (``clean/<file name>``). Every line must name an existing image of one or the other.
    ``class_names`` are the dataset's (RAF-DB's by default); the scores come back in that order.
    """

    def __init__(self, predictions_path: str | Path, tree_root: str | Path,
                 clean_dir: str | Path | None = None, class_names: Sequence[str] | None = None,
                 *, crop: str = "unknown", batch_size: int = 64, check_paths: bool = True,
                 other_export: str | None = None):
        if class_names is None:
            from rafdb_dataset import CLASS_NAMES as class_names
        self.checkpoint_path = Path(predictions_path)
        self.tree_root = Path(tree_root)
        self.clean_dir = None if clean_dir is None else Path(clean_dir)
        self.predictions = read_predictions(self.checkpoint_path, class_names)
        self.crop, self.batch_size = crop, batch_size
        self.image_size, self.channels = None, None
        self.used: set[str] = set()
        # "p" (this evaluation reads a RAF-DB-C tree) or "c" (a RAF-DB-P tree): rows of that other
        # export are skipped, so one file can hold both evaluations' predictions (and both results
        # then carry its SHA-256, which report.py joins by)
        self.other_export = other_export
        self._folder_exists: dict[str, bool] = {}  # top folder -> in the tree (asked once per folder)
        if check_paths:
            self._check_known()

    def of_other_export(self, key: str) -> bool:
        """Whether ``key`` is a row of the other export (see ``other_export``): a perturbation folder's
        frame (``<dataset>.<split>.p_<name>/...``) for a corruption evaluation; a clean image or a
        corruption folder's (``<dataset>.<split>.<corruption>.<severity>/...``) for a perturbation one."""
        if self.other_export not in ("p", "c"):
            return False
        if self.other_export == "c" and key.startswith(CLEAN_PREFIX):
            return True
        top = key.split("/", 1)[0]
        last = top.rpartition(".")[2]
        if "/" not in key or not (last.startswith("p_") if self.other_export == "p" else last.isdigit()):
            return False
        if top not in self._folder_exists:
            self._folder_exists[top] = (self.tree_root / top).exists()
        return not self._folder_exists[top]

    def _check_known(self) -> None:
        for key, (number, _) in self.predictions.rows.items():
            if self.of_other_export(key):
                continue
            file = self._file_for(key)
            if file is None or not file.is_file():
                where = (f"the clean folder {self.clean_dir}" if key.startswith(CLEAN_PREFIX)
                         else f"the tree {self.tree_root}")
                raise UserError(f"{self.checkpoint_path}:{number}: unknown path {key}: no such "
                                f"image in {where}")

    def _file_for(self, key: str) -> Path | None:
        if key.startswith(CLEAN_PREFIX):
            name = key[len(CLEAN_PREFIX):]
            if self.clean_dir is None or not name or "/" in name:
                return None
            return self.clean_dir / name
        if ".." in key.split("/") or key.startswith("/"):
            return None
        return self.tree_root / key

    def key_for(self, path: str | Path) -> str:
        """The predictions-file path of an image file of the tree or of the clean folder."""
        path = Path(path)
        if self.clean_dir is not None and path.parent == self.clean_dir:
            return CLEAN_PREFIX + path.name
        try:
            return path.relative_to(self.tree_root).as_posix()
        except ValueError:
            raise UserError(f"{path}: neither in the tree {self.tree_root} nor in the clean "
                            f"folder {self.clean_dir}") from None

    # -- the Classifier interface the evaluations use ----------------------------------------
    @property
    def scores_are_confidences(self) -> bool:
        """False for ``path,class`` files: their one-hot rows carry no confidence to calibrate."""
        return self.predictions.kind != "class"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.predictions.class_names

    @property
    def output_names(self) -> tuple[str, ...]:
        """The classes of the scores (a model's outputs): the dataset's."""
        return self.predictions.class_names

    def use_classes(self, dataset_names: Sequence[str], restrict: bool = False, require_all: str | None = None):
        """A predictions file is written in the dataset's classes: check that they are these (so every
        class is there, whatever ``require_all`` asks)."""
        from datasets.classes import map_classes

        mapping = map_classes(self.predictions.class_names, dataset_names)
        if not mapping.identity:
            raise UserError(f"{self.checkpoint_path}: scored in {', '.join(self.predictions.class_names)}, "
                            f"not in the dataset's classes {', '.join(dataset_names)}")
        return mapping

    def make_dataset(self, paths: Sequence[str | Path]) -> list[str]:
        return [self.key_for(path) for path in paths]

    def make_array_dataset(self, images_uint8) -> list[str]:
        raise UserError(f"{self.checkpoint_path}: predictions files score exported images; they "
                        f"cannot be combined with --on-the-fly")

    def predict_dataset(self, keys: Sequence[str], *, progress: str | None = None) -> np.ndarray:
        """Scores (N, K) float32 in the dataset's class order for the given keys."""
        n_classes = len(self.predictions.class_names)
        out = np.empty((len(keys), n_classes), np.float32)
        rows = self.predictions.rows
        for index, key in enumerate(keys):
            row = rows.get(key)
            if row is None:
                raise UserError(f"{self.checkpoint_path}: no line for {key} (every evaluated "
                                f"image needs one)")
            out[index] = row[1]
            self.used.add(key)
        return out

    def predict_paths(self, paths: Sequence[str | Path], *, progress: str | None = None):
        return self.predict_dataset(self.make_dataset(paths), progress=progress)

    def unused(self) -> list[str]:
        """Lines not needed by anything predicted so far (reported, not an error); the other export's
        rows of a combined file are not counted."""
        return [key for key in self.predictions.rows if key not in self.used and not self.of_other_export(key)]

    def describe(self) -> dict:
        stat = self.checkpoint_path.stat()
        import model_files

        return {"checkpoint": str(self.checkpoint_path), "checkpoint_size": stat.st_size,
                "checkpoint_sha256": model_files.model_sha256(self.checkpoint_path),
                "format": "predictions", "predictions_kind": self.predictions.kind,
                "output_kind": self.predictions.output_kind,
                "model_name": self.checkpoint_path.stem, "parameters": None,
                "crop": self.crop, "preprocessing": "n/a (predictions file)",
                "output_classes": list(self.predictions.class_names),
                "class_order_source": "dataset", "lines": len(self.predictions)}
