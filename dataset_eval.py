"""The evaluations on any dataset (docs/DATASETS.md, docs/BENCHMARK.md §9.4, §9.9, §10): labels in the
evaluation's class order, and the clean and corrupted image sources of FER2013/FER+ and folder datasets.

The evaluation's class order is the dataset's (``datasets.classes.evaluation_columns``): its
classes in its own order, then the model's outputs that are no dataset class (unless
``--restrict-to-dataset-classes``), the order in which ``Classifier.use_classes`` makes a model
score. Images whose class the model cannot output (contempt for a 7-class model on FER+, a
folder's own class the model lacks) are left out and counted; a soft label row keeps its
distribution over the classes the model outputs, rescaled to the row's own sum (the mass of a class
the model cannot output goes to the others): 1, or under ``--ferplus-norm legacy`` the original's
sum, below 1 where unknown/NF votes count (docs/BENCHMARK.md §9.2), as the training uses it; the
trailing columns are all zero.

No TensorFlow and no argument parsing here; the scripts call :func:`open_for_eval`,
:func:`evaluation_labels` and :func:`corrupted_units`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

import corruptions

import datasets
from cli_common import UserError
from datasets.base import LabelSet
from datasets.classes import RAFDB_CLASSES, evaluation_columns

LOG = logging.getLogger("fer.eval")


@dataclasses.dataclass
class EvalLabels:
    """The evaluated images of one split: ``labels`` in the evaluation's class order."""

    labels: LabelSet
    dataset: str  # registry name
    title: str
    split: str  # the dataset's own name of the split (PublicTest, test, ...)
    n_unmapped: int  # images left out: their class is not one the evaluation outputs
    unmapped_classes: tuple[str, ...]
    class_names: tuple[str, ...] = RAFDB_CLASSES  # the columns of ``labels.labels`` and of the scores
    ferplus_norm: str | None = None  # FER+: the label divisor (--ferplus-norm), else None

    def describe(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "n": len(self.labels),
                "n_unmapped": self.n_unmapped, "unmapped_classes": list(self.unmapped_classes),
                "classes": list(self.class_names),
                **({"ferplus_norm": self.ferplus_norm} if self.ferplus_norm is not None else {})}

    def report_line(self) -> str:
        line = f"dataset {self.title} {self.split}: N={len(self.labels)}"
        if self.n_unmapped:
            line += (f"; {self.n_unmapped} image(s) of {', '.join(self.unmapped_classes)} left out "
                     "(classes the model's outputs do not cover)")
        return line


def resolve_rafdb_args(args) -> None:
    """For ``--dataset rafdb``: fill ``args.rafdb`` (from ``--data``, default RAF-DB) and ``args.labels``,
    the attributes the RAF-DB code path reads."""
    if getattr(args, "dataset", "rafdb") != "rafdb":
        return
    if args.rafdb is not None and args.data is not None and Path(args.rafdb).resolve() != Path(args.data).resolve():
        raise UserError(f"--rafdb {args.rafdb} and --data {args.data} disagree; give one of them")
    args.rafdb = Path(args.rafdb or args.data or "RAF-DB")
    args.labels = args.labels or "soft"


def open_for_eval(args):
    """The dataset of ``--dataset``/``--data`` (not RAF-DB), its root checked; sets ``args.labels``."""
    data = datasets.open_dataset(args)
    if not data.root.is_dir():
        raise UserError(f"--data {data.root}: no such folder for --dataset {data.name} (docs/DATASETS.md)")
    args.labels = data.protocol
    return data


def evaluation_labels(data, split: str = "test", output_names: Sequence[str] = RAFDB_CLASSES,
                      restrict: bool = False) -> EvalLabels:
    """``data``'s ``split`` with labels in the evaluation's class order for a model whose outputs
    are ``output_names`` (matched by class name, with synonyms; see the module docstring)."""
    labels = data.labels(split)
    try:
        names, _, mapping = evaluation_columns(output_names, data.class_names, restrict)
    except ValueError as error:
        raise UserError(f"{data.title} at {data.root}: {error}") from None
    keep = np.flatnonzero(mapping.evaluable(labels.classes))
    if not len(keep):
        raise UserError(f"{data.title} at {data.root}: none of the {len(labels)} {data.split_name(split)} "
                        f"images has a class the model outputs ({', '.join(output_names)})")
    kept = labels.subset(keep)
    mapped = np.zeros((len(kept), len(names)), np.float32)
    for j, i in enumerate(mapping.dataset_to_model):
        if i >= 0:
            mapped[:, j] = kept.labels[:, j]
    mapped /= mapped.sum(axis=1, keepdims=True)  # > 0: every kept row's argmax class is mapped
    norm = getattr(data, "norm", None)  # FER+ only (--ferplus-norm)
    if norm == "legacy":  # rows keep their own sum, < 1 where unknown/NF votes count (NLL and Brier see it)
        mapped *= kept.labels.sum(axis=1, keepdims=True)
    kept = dataclasses.replace(kept, labels=mapped)
    return EvalLabels(kept, data.name, data.title, data.split_name(split), len(labels) - len(keep),
                      tuple(mapping.missing), tuple(names), norm)


def clean_label(data) -> str:
    """The report name of the clean set: the pixel CSV (FER, as the original) or the test folder."""
    if data.source_kind == "csv":
        return str(getattr(data, "pixels_path", data.root / "fer2013.csv"))
    return str(data.root / "test")


def _cached_reader(corrupted_set):
    """``CorruptedSet.read`` with the line-aligned CSV parsed once per set (not once per image)."""
    if corrupted_set.path.suffix != ".csv":
        return corrupted_set.read

    @functools.lru_cache(maxsize=1)
    def table():
        from datasets.fer2013 import load_pixel_table

        return load_pixel_table(corrupted_set.path)

    def read(image_id: str) -> np.ndarray:
        pixels = table()
        row = int(image_id)
        if row >= len(pixels) or not pixels.present[row]:
            raise UserError(f"{corrupted_set.path}:{row + 2}: no image on this line (row {image_id})")
        return pixels.pixels[row][:, :, None]

    return read


def present_images(corrupted_set, names: Sequence[str], allow_missing: bool) -> tuple[list[str], np.ndarray]:
    """(the ids whose file exists in a folder set, bool mask over ``names``), checked before any model
    runs: a missing file is a UserError naming it (a warning with ``allow_missing``, and the image is
    left out of that set). A fer-csv set is one file; its rows are checked as they are read."""
    keep = np.ones(len(names), bool)
    if corrupted_set.file_name(names[0] if names else "0") is None:
        return list(names), keep
    root = corrupted_set.path
    present = {(Path(folder) / file).relative_to(root).as_posix()
               for folder, _, files in os.walk(root) for file in files}
    missing = [index for index, name in enumerate(names) if corrupted_set.file_name(name) not in present]
    if missing:
        keep[missing] = False
        message = (f"{root / corrupted_set.file_name(names[missing[0]])}: image not found"
                   + (f" (and {len(missing) - 1} more in {root})" if len(missing) > 1 else ""))
        if not allow_missing:
            raise UserError(message + "; rerun the export (it resumes) or pass --allow-missing to evaluate "
                                      "what exists")
        LOG.warning("%s; evaluating the %d present images", message, int(keep.sum()))
    return [name for name, kept in zip(names, keep) if kept], keep


def corrupted_units(data, labels: LabelSet, corrupted: Path, pairs: Sequence[tuple[str, int]],
                    allow_missing: bool):
    """(clean Folder, corrupted Folders in ``pairs`` order, format) of a FER or folder export.

    Each Folder's items are the dataset's image ids, read by the dataset (clean) or by the export's
    reader (``fer_export.corrupted_sets``: PNG/JPEG folders or ``--format fer-csv`` files).
    """
    import fer_export
    from robustness import Folder, folder_label

    all_present = np.ones(len(labels), bool)
    clean = Folder(None, 0, clean_label(data), list(labels.names), all_present, read=data.read_image)
    found = {(s.corruption, s.severity): s for s in fer_export.corrupted_sets(data, corrupted, "test")}
    missing = [pair for pair in pairs if pair not in found]
    if missing:
        listed = ", ".join(f"{c}.{s}" for c, s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        if not allow_missing:
            how = (f"rafdb_aug_dataset.py export --dataset folder --data {data.root}" if data.name == "folder"
                   else f"ferplus_aug_dataset.py export --dataset {data.name} --data {data.root}")
            how += f" --out {corrupted}" + ("" if labels.split == "test" else f" --split {labels.split}")
            families = sorted({corruptions.family(c) for c, _ in missing} - {"rafdb"})
            if families:  # a held-out set is exported on its own, with its parameter set
                how += (f" --corruption-set {families[0] if len(families) == 1 else 'all'} "
                        f"--param-set <the one the exported sets used>")
            raise UserError(f"{corrupted}: {len(missing)} corrupted set(s) missing ({listed}) (evaluate only what "
                            f"was exported with --corruptions/--severities, export the rest with {how}, or pass "
                            "--allow-missing to evaluate what exists)")
    folders = []
    for pair in pairs:
        if pair not in found:
            continue
        names, keep = present_images(found[pair], labels.names, allow_missing)
        if names:
            folders.append(Folder(*pair, folder_label(corrupted, found[pair].path.name), names, keep,
                                  read=_cached_reader(found[pair])))
    formats = {found[pair].fmt for pair in pairs if pair in found}
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return clean, folders, fmt


def perturbation_stem(data, image_id: str) -> str:
    """The frame stem of an image in a perturbation export (``fer_export.p_job``): the FER row, or
    the path below the split folder without its suffix."""
    if data.name == "folder":
        from datasets.folder import relative_id

        return Path(relative_id(image_id)).with_suffix("").as_posix()
    return image_id


def perturbed_work(data, labels: LabelSet, perturbed: Path, selected: Sequence[str] | None,
                   frames: int, fmt: str | None = None) -> tuple[list[str], list[tuple[Path, list[str]]]]:
    """(sequence stems, [(folder, frame files)]) of a FER or folder perturbation export.

    Folders ``<perturbed>/<prefix>.<split>.p_<name>`` (prefix ``fer2013`` or the folder dataset's
    name): ``selected`` in that order (each must exist), else the canonical perturbations present.
    Every frame ``<stem>_NN.<fmt>`` must exist (``fmt``: the export's format from its manifest; without
    one, that of the first frame found of the first sequence); the first missing one is a UserError
    naming it.
    """
    import fer_export
    import perturbations

    if data.name == "rafdb":
        raise UserError("RAF-DB perturbations: use the RAF-DB path of eval_perturbed_rafdb.py")
    if not perturbed.is_dir():
        raise UserError(f"--perturbed {perturbed}: no such folder (export it with "
                        f"rafdb_perturb_dataset.py export --dataset {data.name})")
    prefix = fer_export.FER_PREFIX if data.name in ("ferplus", "fer2013") else data.dataset_name
    split = data.split_name("test")

    def folder_of(name: str) -> Path:
        short = name.rsplit(".", 1)[-1] if "." in name else name
        short = short if short.startswith("p_") else "p_" + short
        return perturbed / fer_export.p_folder(prefix, split, short)

    if selected:
        folders = [folder_of(name) for name in selected]
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"--perturbations: {folder}: no such folder")
    else:
        folders = [folder_of(name) for name in perturbations.PERTURBATIONS if folder_of(name).is_dir()]
        if not folders:
            raise UserError(f"--perturbed {perturbed}: no {prefix}.{split}.p_<name> folders in it")
    stems = [perturbation_stem(data, image_id) for image_id in labels.names]
    work = []
    for folder in folders:
        # the folder's format (an export writes one): its manifest's, else that of a frame found
        first = [folder / f"{stems[0]}_{frame:02d}{suffix}" for frame in range(frames)
                 for suffix in (".jpg", ".png")] if stems else []
        suffix = f".{fmt}" if fmt in ("jpg", "png") else next((path.suffix for path in first if path.is_file()),
                                                               ".jpg")
        paths = []
        for stem in stems:
            for frame in range(frames):
                path = folder / f"{stem}_{frame:02d}{suffix}"
                if not path.is_file():
                    raise UserError(f"{path}: frame not found (sequence {stem} needs frames "
                                    f"00..{frames - 1:02d}{suffix}; re-run the perturbation export)")
                paths.append(str(path))
        work.append((folder, paths))
    return stems, work
