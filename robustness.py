"""Robustness of a classifier on RAF-DB-C: evaluate it over a corrupted tree or on the fly; the
report block, the summary table, JSON/CSV/plot, baselines, shards and their merge
(docs/BENCHMARK.md §5.1-§5.3, §11.2, §11.3, §11.6).

``eval_corrupted_rafdb.py`` parses the command line and calls this module. The pieces:

- :func:`parse_corruptions`, :func:`parse_severities`: the folders asked for.
- :class:`Folder`, :func:`find_exported_folders`, :class:`OnTheFly`: where each evaluated folder's
  images come from (an exported tree, or corrupted in memory exactly as the export writes them).
- :func:`work_units`, :func:`parse_shard`: the evaluated folders (clean first, then
  docs/BENCHMARK.md §2.3 order x severities) and the deterministic shard ``i/N`` (units i, i+N, ...).
- :func:`evaluate`: predictions per folder (through ``inference.Runner``), accuracy and the
  calibration metrics of ``calibration.py`` per folder, optional probability rows.
- :func:`report_block`, :func:`summarise`, :func:`summary_table`, :func:`write_json`,
  :func:`write_csv`, :func:`write_plot`, :func:`write_probabilities`: the outputs.
- :func:`merge_results`: shard JSONs -> the result of one run over all units.
- :func:`manifest_summary`: what a report keeps of the export's manifest (its digest and
  parameters; not the table of every file).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import checkpoints
import cli_common
import rafdb_dataset
from cli_common import UserError

LOG = logging.getLogger("fer.robustness")

RESULTS_FORMAT = "rafdb-c-results"
RESULTS_VERSION = 1
SEVERITIES = (1, 2, 3, 4, 5)
MOTION_BACKENDS = ("numpy", "wand")
COLOURS = ("rgb", "bgr-compat")


# --------------------------------------------------------------------------------------------
# Arguments


CORRUPTION_SET_ORDER = ("rafdb", "imagenet-extra", "face")  # the sets a result is summarised by


def corruption_names(corruption_set: str = "rafdb") -> list[str]:
    """The corruptions of ``corruption_set`` (rafdb, imagenet-extra, face or all) in registry order
    (the 18 of RAF-DB-C in docs/BENCHMARK.md §2.3 order first)."""
    import corruptions

    if corruption_set not in corruptions.CORRUPTION_SETS:
        raise UserError(f"--corruption-set: expected one of {', '.join(corruptions.CORRUPTION_SETS)}, "
                        f"got {corruption_set!r}")
    return list(corruptions.corruption_names(corruption_set))


def parse_corruptions(text: str, corruption_set: str = "rafdb") -> list[str]:
    """``all`` (the whole ``corruption_set``) or a comma-separated list of its names, in canonical order."""
    valid = corruption_names(corruption_set)
    if text.strip() == "all":
        return valid
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in valid]
    if not names:
        raise UserError(f"--corruptions: expected 'all' or a comma-separated list of: {', '.join(valid)}")
    if unknown:
        raise UserError(f"--corruptions: unknown corruption {unknown[0]!r} in --corruption-set "
                        f"{corruption_set}; valid names: {', '.join(valid)}")
    return [name for name in valid if name in names]


def set_of(name: str) -> str:
    """The set (``family``) of one corruption: rafdb, imagenet-extra or face."""
    import corruptions

    return corruptions.family(name)


def group_by_set(names) -> dict[str, list[str]]:
    """{set: its names among ``names``} for the sets present, in CORRUPTION_SET_ORDER."""
    groups: dict[str, list[str]] = {name: [] for name in CORRUPTION_SET_ORDER}
    for name in names:
        groups[set_of(name)].append(name)
    return {key: value for key, value in groups.items() if value}


def parse_severities(text: str) -> list[int]:
    """``1-5``, ``2`` or ``1,3,5`` -> sorted severities in 1..5."""
    severities: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if not match:
            raise UserError(f"--severities: expected e.g. 1-5 or 1,3,5, got {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 1 <= low <= high <= 5:
            raise UserError(f"--severities: severities are 1..5, got {part.strip()!r}")
        severities.update(range(low, high + 1))
    return sorted(severities)


# --------------------------------------------------------------------------------------------
# The evaluated folders


class Folder:
    """One evaluated folder: its report name and the image source for each evaluated test name."""

    def __init__(self, corruption: str | None, severity: int, label: str, paths: list[Path] | None,
                 keep: np.ndarray, read=None):
        self.corruption, self.severity, self.label = corruption, severity, label
        self.paths = paths  # None on the fly
        self.read = read  # item -> uint8 image when ``paths`` are dataset ids (FER, folders; dataset_eval)
        self.keep = keep  # bool mask over the label set: images present in this folder

    @property
    def key(self) -> str:
        return "clean" if self.corruption is None else f"{self.corruption}.{self.severity}"


def folder_label(root: Path, folder: str) -> str:
    """The report name of a folder: ``<root>/<folder>`` as given."""
    return os.path.join(str(root), folder)


def find_exported_folders(corrupted: Path, names: list[str], pairs: list[tuple[str, int]],
                          fmt: str | None, allow_missing: bool, flag: str = "--corrupted") -> list[Folder]:
    """Locate every (corruption, severity) folder and its image for each evaluated name (``flag``:
    the option that names ``corrupted``, for the message when it is missing)."""
    if not corrupted.is_dir():
        raise UserError(f"{flag} {corrupted}: RAF-DB-C tree not found (export it with "
                        f"rafdb_aug_dataset.py export, point {flag} at it, or use --on-the-fly)")
    suffixes = (".jpg", ".png") if fmt is None else (f".{fmt}",)
    folders, missing_folders = [], []
    for corruption, severity in pairs:
        folder_name = f"rafdb.test.{corruption}.{severity}"
        directory = corrupted / folder_name
        if not directory.is_dir():
            missing_folders.append(directory)
            continue
        present = set(os.listdir(directory))
        paths, keep, missing = [], np.ones(len(names), bool), []
        for index, name in enumerate(names):
            for suffix in suffixes:
                file_name = f"{name}_aligned{suffix}"
                if file_name in present:
                    paths.append(directory / file_name)
                    break
            else:
                keep[index] = False
                missing.append(directory / f"{name}_aligned{suffixes[0]}")
        if missing:
            message = (f"{missing[0]}: image not found"
                       + (f" (and {len(missing) - 1} more in {directory})" if len(missing) > 1 else ""))
            if not allow_missing:
                raise UserError(message + "; pass --allow-missing to evaluate what exists")
            LOG.warning("%s; evaluating the %d present images", message, len(paths))
            if not paths:
                missing_folders.append(directory)
                continue
        folders.append(Folder(corruption, severity, folder_label(corrupted, folder_name), paths,
                              keep))
    if missing_folders:
        if not allow_missing:
            shown = ", ".join(path.name for path in missing_folders[:3])
            more = f" and {len(missing_folders) - 3} more" if len(missing_folders) > 3 else ""
            raise UserError(f"{corrupted}: {len(missing_folders)} corrupted folder(s) missing: {shown}{more} "
                            f"(evaluate only what was exported with --corruptions/--severities, export "
                            f"the rest with rafdb_aug_dataset.py, pass --allow-missing to evaluate what "
                            f"exists, or use --on-the-fly)")
        LOG.warning("skipping %d missing corrupted folder(s) under %s: %s", len(missing_folders), corrupted,
                    ", ".join(path.name for path in missing_folders[:5])
                    + (f" and {len(missing_folders) - 5} more" if len(missing_folders) > 5 else ""))
    return folders


# --------------------------------------------------------------------------------------------
# On-the-fly corruption (worker processes, forked before TensorFlow is imported)

_CLEAN_IMAGES: list[np.ndarray] = []
_CLEAN_FILES: list[str] = []


def _corrupt_one(task: tuple) -> np.ndarray:
    """Corrupt one clean image exactly as the export writes it, then decode the bytes back."""
    import dataset_writer

    index, corruption, severity, seed, fmt, motion_backend, colour, param_set = task
    extra = {"param_set": param_set} if param_set is not None and set_of(corruption) == "imagenet-extra" else {}
    data = dataset_writer.corrupted_bytes(_CLEAN_IMAGES[index], _CLEAN_FILES[index], corruption,
                                          severity, seed=seed, fmt=fmt,
                                          motion_backend=motion_backend, colour=colour, **extra)
    return rafdb_dataset.decode_image(data, f"{corruption}.{severity}/{_CLEAN_FILES[index]}")


class OnTheFly:
    """Corrupted images of each folder, rendered by a process pool one folder ahead."""

    def __init__(self, clean_paths: list[Path], *, seed: int = 0, fmt: str = "jpg",
                 motion_backend: str = "numpy", colour: str = "rgb", workers: int | None = None,
                 param_set: str | None = None):
        global _CLEAN_IMAGES, _CLEAN_FILES
        _CLEAN_IMAGES = [rafdb_dataset.read_image(path) for path in clean_paths]
        _CLEAN_FILES = [path.name for path in clean_paths]
        self.options = (seed, fmt, motion_backend, colour, param_set)
        workers = workers or os.cpu_count() or 1
        if workers < 1:
            raise UserError(f"--workers: expected a positive integer, got {workers}")
        self.chunksize = max(1, len(_CLEAN_IMAGES) // (4 * workers))
        # Fork before TensorFlow starts its threads; the workers inherit the clean images.
        self.pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None

    def submit(self, corruption: str, severity: int):
        tasks = [(index, corruption, severity, *self.options) for index in range(len(_CLEAN_IMAGES))]
        if self.pool is None:
            return [_corrupt_one(task) for task in tasks]
        return self.pool.map_async(_corrupt_one, tasks, chunksize=self.chunksize)

    @staticmethod
    def collect(pending) -> list[np.ndarray]:
        try:
            return pending if isinstance(pending, list) else pending.get()
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"on-the-fly corruption failed: {type(error).__name__}: {error}") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# --------------------------------------------------------------------------------------------
# Evaluation


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/N`` (0 <= i < N) -> (i, N), as the exports read it (``dataset_writer.parse_shard``);
    None for no sharding."""
    import argparse

    import dataset_writer

    if text is None:
        return None
    try:
        return dataset_writer.parse_shard(text)
    except argparse.ArgumentTypeError as error:
        raise UserError(f"--shard: {error}") from None


def work_units(clean: Folder, folders: list[Folder], shard: tuple[int, int] | None) -> list[Folder]:
    """The folders this run evaluates: clean then the corrupted ones, or shard i/N's units i::N.

    The split is over the canonical list, so it is the same on every machine; the union of the N
    shards is every unit exactly once (docs/BENCHMARK.md §11.6).
    """
    units = [clean] + list(folders)
    if shard is None:
        return units
    index, count = shard
    return units[index::count]


class Evaluation:
    """What :func:`evaluate` returns: one row per folder, timing, and optional probability rows."""

    def __init__(self):
        self.rows: list[dict] = []
        self.seconds = 0.0
        self.images = 0
        self.adapt_images = 0
        self.probabilities: list[tuple[str, list[str], np.ndarray]] = []  # (folder key, ids, rows)


def folder_row(folder: Folder, scores: np.ndarray, labels: np.ndarray, confidences: bool = True) -> dict:
    """One evaluated folder: accuracy and error (§5.1) and the calibration metrics (§11.3);
    ``confidences`` False (one-hot predicted classes, no scores): ECE, NLL and Brier are NaN."""
    import calibration
    import metrics

    targets = calibration.targets_of(labels)
    accuracy = metrics.accuracy(np.argmax(scores, axis=1), targets)
    row = {"corruption": folder.corruption, "severity": folder.severity, "folder": folder.label,
           "n": int(len(scores)), "accuracy": accuracy, "error": 1.0 - accuracy}
    row.update(calibration.folder_metrics(scores, labels, confidences))
    return row


def evaluate(runner, units: list[Folder], labels: np.ndarray, names: list[str],
             on_the_fly: OnTheFly | None, *, keep_probabilities: bool = False) -> Evaluation:
    """Predict every unit with ``runner`` (an ``inference.Runner``); rows in unit order.

    ``labels`` (n, 7) are the protocol's label rows of the evaluated images ``names``; a folder
    that lacks some images (``--allow-missing``) is scored on those it has. With BatchNorm
    adaptation the runner first makes one pass over the folder (docs/BENCHMARK.md §11.2).
    """
    from tqdm import tqdm

    classifier = runner.classifier
    result = Evaluation()
    started = time.perf_counter()
    pending = None
    if on_the_fly is not None:
        upcoming = [unit for unit in units if unit.paths is None]
        if upcoming:
            pending = on_the_fly.submit(upcoming[0].corruption, upcoming[0].severity)
    bar = tqdm(total=len(units), desc=classifier.checkpoint_path.name, unit="folder",
               file=sys.stderr, leave=False, disable=None)
    try:
        for position, folder in enumerate(units):
            if folder.paths is not None:
                make = lambda folder=folder: classifier.make_dataset(  # noqa: E731
                    folder.paths, **({"read": folder.read} if folder.read is not None else {}))
            else:
                # A list, not one stacked array: the aligned images of a tree may differ in size, and
                # the pipeline resizes each one to the model input, as it does for exported files.
                images = list(on_the_fly.collect(pending))
                following = [unit for unit in units[position + 1:] if unit.paths is None]
                if following:
                    pending = on_the_fly.submit(following[0].corruption, following[0].severity)
                make = lambda images=images: classifier.make_array_dataset(images)  # noqa: E731
            if runner.adapted:
                result.adapt_images += runner.adapt_to(make())
            scores = runner.predict(make())
            folder_labels = labels[folder.keep]
            if len(scores) != len(folder_labels):
                raise UserError(f"{folder.label}: {len(scores)} predictions for "
                                f"{len(folder_labels)} images")
            result.images += len(scores)
            result.rows.append(folder_row(folder, scores, folder_labels,
                                          getattr(classifier, "scores_are_confidences", True)))
            if keep_probabilities:
                ids = [name for name, kept in zip(names, folder.keep) if kept]
                result.probabilities.append((folder.key, ids, scores.astype(np.float32)))
            bar.update(1)
    finally:
        bar.close()
        if runner.adapted:
            runner.reset()
    result.seconds = time.perf_counter() - started
    return result


def write_probabilities(path: Path, evaluations: list[tuple[str, Evaluation]]) -> None:
    """``--save-probabilities FILE.npz``: one row per (checkpoint, folder, image), atomically.

    Arrays: ``checkpoint`` (str), ``folder`` (str: ``clean`` or ``<corruption>.<severity>``),
    ``image`` (str: test id, e.g. test_0001), ``probabilities`` (float32, one column per class in the
    evaluation order: the dataset's classes, RAF-DB's 7 on RAF-DB, then any class the model outputs
    beyond them; the JSON's ``classes``). Models of different widths in one file: the narrower rows
    end in NaN.
    """
    checkpoint_column, folder_column, image_column, rows = [], [], [], []
    for checkpoint, evaluation in evaluations:
        for key, ids, scores in evaluation.probabilities:
            checkpoint_column += [checkpoint] * len(ids)
            folder_column += [key] * len(ids)
            image_column += list(ids)
            rows.append(scores)
    probabilities = cli_common.stack_rows(rows, rafdb_dataset.NUM_CLASSES)
    buffer = io.BytesIO()
    np.savez(buffer, checkpoint=np.array(checkpoint_column, dtype=str),
             folder=np.array(folder_column, dtype=str), image=np.array(image_column, dtype=str),
             probabilities=probabilities.astype(np.float32))
    cli_common.atomic_write_bytes(path, buffer.getvalue())


def manifest_summary(corrupted: Path, manifest: dict | None) -> dict | None:
    """What a report keeps of the export's manifest: SHA-256 of manifest.json, its parameters and
    identity, per-folder counts and the number of files; not the per-file table (docs/BENCHMARK.md
    §2.8)."""
    if manifest is None:
        return None
    path = Path(corrupted) / "manifest.json"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    source = manifest.get("source") or {}
    return {"sha256": digest, "format_version": manifest.get("format_version"),
            "kind": manifest.get("kind"), "generator": manifest.get("generator"),
            "params": manifest.get("params"), "versions": manifest.get("versions"),
            "complete": manifest.get("complete"), "folders": manifest.get("folders"),
            "n_files": len(manifest.get("files") or {}),
            "source": {"root": source.get("root"), "n_files": len(source.get("files") or [])}}

def report_block(checkpoint: str, rows: list[dict]) -> str:
    """The original's block: header, one '<dir> <accuracy %f>' line per folder, two blank lines."""
    lines = [f"Results for: {checkpoint}"]
    lines += ["%s %f" % (row["folder"], row["accuracy"]) for row in rows]
    return "\n".join(lines) + "\n\n\n"


# --------------------------------------------------------------------------------------------
# Metrics, baseline


def error_table(rows: list[dict], severities: list[int]) -> tuple[float, dict[str, list[float]]]:
    """Clean error and {corruption: [E_s for s in severities]} for corruptions with every severity."""
    clean = next(row for row in rows if row["corruption"] is None)
    by_key = {(row["corruption"], row["severity"]): row["error"] for row in rows
              if row["corruption"] is not None}
    table = {}
    for corruption in dict.fromkeys(row["corruption"] for row in rows if row["corruption"]):
        if all((corruption, s) in by_key for s in severities):
            table[corruption] = [by_key[(corruption, s)] for s in severities]
    return clean["error"], table


def _baseline_names(result: dict) -> tuple[str, ...]:
    """The names a --baseline-method may give for one result: path, run directory, file name."""
    checkpoint = str((result.get("checkpoint") or {}).get("checkpoint", ""))
    path = Path(checkpoint)
    return tuple(dict.fromkeys(name for name in (checkpoint, path.parent.name, path.name) if name))


def load_baseline(path: Path, method: str | None = None) -> dict:
    """One model's results from a --json file: its only one, or the one ``method`` names."""
    results = read_results(path, "--baseline")
    if method is not None:
        chosen = [result for result in results if method in _baseline_names(result)]
        if len(chosen) != 1:
            listed = "; ".join(" | ".join(_baseline_names(result)) for result in results)
            raise UserError(f"--baseline-method {method!r}: "
                            f"{'names ' + str(len(chosen)) + ' models' if chosen else 'not found'} "
                            f"in {path} (its models: {listed or 'none'})")
        return _whole_run(chosen[0], path)
    if len(results) != 1:
        names = ", ".join(_baseline_names(result)[0] for result in results)
        raise UserError(f"--baseline {path}: holds {len(results)} models ({names}); choose one "
                        f"with --baseline-method")
    return _whole_run(results[0], path)


def _whole_run(result: dict, path: Path) -> dict:
    """A baseline must cover every folder: a shard's JSON is refused (merge the shards first)."""
    if result.get("shard") or result.get("clean") is None:
        shard = result.get("shard") or {}
        raise UserError(f"--baseline {path}: the result of shard {shard.get('index', '?')}/"
                        f"{shard.get('count', '?')} (no clean folder or summary); merge the shards "
                        f"with --merge and use the merged JSON")
    return result


def test_set_digest(names: Sequence[str], labels: np.ndarray) -> str:
    """SHA-256 of a dataset's evaluated test set: its image names in order and their label rows
    (rounded to 1e-9). Two evaluations of the same images under the same protocol share it, from
    any folder; another dataset or split of the same N does not."""
    digest = hashlib.sha256("\n".join(names).encode("utf-8"))
    digest.update(np.round(np.asarray(labels, np.float64), 9).tobytes())
    return digest.hexdigest()


CORRUPTED_IMAGE_KEYS = ("seed", "colour", "motion_backend")  # a result's ``source`` settings that make its images


def image_keys_that_matter(names, other_names) -> tuple[str, ...]:
    """Of :data:`CORRUPTED_IMAGE_KEYS`, those that change the images of a corruption both results
    evaluated (``names``, ``other_names``): the seed only for a corruption that draws random numbers,
    the motion backend only for a motion blur; the colour mode always. (A baseline of another seed is
    no reason to refuse an evaluation of contrast alone: its images are the same.)"""
    import corruptions

    both = {name for name in set(names) & set(other_names) if name}  # (a clean row names none)
    return tuple(key for key in CORRUPTED_IMAGE_KEYS
                 if key == "colour" and both
                 or key == "seed" and any(name not in corruptions.DETERMINISTIC for name in both)
                 or key == "motion_backend" and any("motion_blur" in name for name in both))


def check_baseline(baseline: dict, path: Path, mine: dict, mismatch_ok: bool) -> None:
    """docs/BENCHMARK.md §5.2: the baseline must come from the same test images (dataset and test set
    digest, where the baseline records it), protocol, N, crop and format.

    ``mine`` maps dataset / test_set / protocol / N / crop / format / param_set (given when the
    ImageNet-C extras are evaluated) / ferplus_norm (FER+ soft labels) / seed, colour, motion_backend
    (:data:`CORRUPTED_IMAGE_KEYS`, of the evaluation's ``source``) to this evaluation's values (the keys present are checked; a
    test set or parameter set the baseline does not record is not compared). A
    difference is a UserError naming both values, or a warning with ``mismatch_ok``.
    """
    theirs = {"dataset": baseline.get("dataset") or "rafdb", "test_set": baseline.get("test_set_sha256"),
              "protocol": baseline.get("protocol"), "N": baseline.get("n"),
              "crop": (baseline.get("checkpoint") or {}).get("crop"),
              "format": baseline.get("format"), "param_set": (baseline.get("source") or {}).get("param_set"),
              "ferplus_norm": baseline.get("ferplus_norm"),
              # the corrupted images: an export (or on-the-fly rendering) of another seed, colour
              # mode or motion backend holds other images of every folder that draws or blurs
              **{key: (baseline.get("source") or {}).get(key) for key in CORRUPTED_IMAGE_KEYS}}
    shown = {"test_set": lambda value: f"test set {str(value)[:12]}"}  # names and labels: not the pixels
    differences = [f"{shown[key](theirs[key]) if key in shown else f'{key} {theirs[key]!r}'} (this evaluation: "
                   f"{shown[key](value) if key in shown else repr(value)})"
                   for key, value in mine.items()
                   if theirs[key] != value
                   and not (key in ("test_set", "param_set", "ferplus_norm") and theirs[key] is None)
                   and not (key in CORRUPTED_IMAGE_KEYS and (theirs[key] is None or value is None))]
    if not differences:
        return
    message = (f"--baseline {path}: produced with {'; '.join(differences)}; docs/BENCHMARK.md §5.2 needs the "
               f"same test images (and corrupted images: export seed, colour, motion backend), protocol, crop "
               f"and format (and §2.9 the same --param-set for the ImageNet-C extras)")
    if not mismatch_ok:
        raise UserError(message + " (pass --baseline-mismatch-ok to normalise anyway)")
    LOG.warning("%s; normalising anyway (--baseline-mismatch-ok)", message)


def baseline_table(baseline: dict, path: Path, table: dict[str, list[float]],
                   severities: list[int], required=None) -> tuple[float, dict[str, list[float]]]:
    """The baseline's clean error and error rows for the corruptions of ``table``.

    With ``required`` (names), only those must be in the baseline (an error otherwise); the other
    corruptions of ``table`` are returned where the baseline has every severity of them.
    """
    by_key = {(row["corruption"], int(row["severity"])): float(row["error"])
              for row in baseline["folders"]}
    required = list(table) if required is None else list(required)
    missing = [f"{c}.{s}" for c in required for s in severities if (c, s) not in by_key]
    if missing:
        raise UserError(f"--baseline {path}: no result for {', '.join(missing[:10])}"
                        + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""))
    return float(baseline["clean"]["error"]), {
        c: [by_key[(c, s)] for s in severities] for c in table
        if all((c, s) in by_key for s in severities)}


def summarise(rows: list[dict], severities: list[int], baseline: dict | None,
              baseline_path: Path | None) -> dict:
    """docs/BENCHMARK.md §5.2 numbers (metrics.py) plus the unnormalised sums shown without a baseline.

    The top-level mCE, mean errors and sums are over the 18 RAF-DB-C corruptions whenever any of
    them was evaluated (``mce_set`` "rafdb"), so extra sets never change them; otherwise over the
    evaluated set(s). ``sets`` holds the same numbers per corruption set (docs/BENCHMARK.md §2.9,
    §11.1): one mCE per set.
    """
    import metrics

    clean_error, table = error_table(rows, severities)
    summary: dict = {"severities": severities, "complete_corruptions": list(table)}
    if not table:
        summary.update({"clean_error": clean_error})
        summary.update(calibration_summary(rows))
        return summary
    groups = group_by_set(table)
    primary = groups.get("rafdb") or list(table)
    base_clean, base_table = (None, None)
    if baseline is not None:
        base_clean, base_table = baseline_table(baseline, baseline_path, table, severities, primary)
    summary["mce_set"] = "rafdb" if "rafdb" in groups else "+".join(groups)
    summary.update(_set_numbers(metrics, table, clean_error, base_table, base_clean, primary))
    # Without a baseline, CE_c's numerator and relative CE_c's numerator (docs/BENCHMARK.md §5.2), unnormalised.
    summary["error_sum"] = {c: float(np.sum(errors)) for c, errors in table.items()}
    summary["relative_error_sum"] = {c: metrics.relative_sum(errors, clean_error) for c, errors in table.items()}
    summary["sets"] = {}
    for name, members in groups.items():
        covered = base_table is not None and all(member in base_table for member in members)
        numbers = _set_numbers(metrics, {c: table[c] for c in members}, clean_error,
                               base_table if covered else None, base_clean, members)
        summary["sets"][name] = {
            "corruptions": members, "normalised": "mce" in numbers,
            **{key: numbers[key] for key in ("overall_mean_error", "mean_corruption_accuracy",
                                             "unnormalised_relative_error", "mean_error_sum",
                                             "mean_relative_error_sum", "mce", "relative_mce")
               if key in numbers},
            **{key: value for key, value in calibration_summary(rows, members).items()
               if key.startswith("mean_")}}
    summary.update(calibration_summary(rows, primary))  # like the mCE: over the 18 when they were evaluated
    return summary


def _set_numbers(metrics, table: dict, clean_error: float, base_table: dict | None,
                 base_clean: float | None, names: list[str]) -> dict:
    """metrics.corruption_summary over ``names`` plus the unnormalised means of the sums."""
    numbers = metrics.corruption_summary(table, clean_error, base_table, base_clean, names=names)
    numbers["mean_error_sum"] = float(np.mean([np.sum(table[c]) for c in names]))
    numbers["mean_relative_error_sum"] = float(np.mean([metrics.relative_sum(table[c], clean_error)
                                                        for c in names]))
    return numbers


def calibration_summary(rows: list[dict], corruptions: list[str] | None = None) -> dict:
    """Clean ECE/NLL/Brier and their means over the corrupted folders (docs/BENCHMARK.md §11.3), those
    of ``corruptions`` only when given (the headline: the 18, as the mCE; a set's own)."""
    def value(row: dict, key: str) -> float:  # null in a JSON read back (--merge): undefined, NaN
        return math.nan if row[key] is None else float(row[key])

    clean = next((row for row in rows if row["corruption"] is None), None)
    corrupted = [row for row in rows if row["corruption"] is not None and "ece" in row
                 and (corruptions is None or row["corruption"] in corruptions)]
    out = {}
    if clean is not None and "ece" in clean:
        out.update(clean_ece=value(clean, "ece"), clean_nll=value(clean, "nll"), clean_brier=value(clean, "brier"))
    if corrupted:
        out.update({f"mean_{key}": float(np.mean([value(row, key) for row in corrupted]))
                    for key in ("ece", "nll", "brier")})
    return out


def _percent(value: float | None, width: int = 7) -> str:
    if value is None:
        return " " * (width - 1) + "-"
    if isinstance(value, float) and math.isnan(value):
        return f"{'nan':>{width}}"
    return f"{100.0 * value:{width}.2f}"


def corrupted_title(dataset: str) -> str:
    """The corrupted test set's name in reports: RAF-DB-C, FER+-C, FER2013-C, or a corrupted folder
    dataset (the dataset's own title, docs/DATASETS.md)."""
    import datasets

    try:
        title = datasets.dataset_class(dataset).title
    except UserError:  # a result file from elsewhere: say what it records
        return f"{dataset} (corrupted)"
    return f"corrupted {title}" if dataset == "folder" else f"{title}-C"


def images_text(result: dict) -> str:
    """``N = 19 test images (soft labels, vote-filtered from 40`` (the table's line, unclosed): with
    label rows that have no image (FER+ rows without a file name), how many each cause removed."""
    missing = int(result.get("n_missing") or 0)
    if result["protocol"] == "soft":
        filtered = (f", vote-filtered from {result['n_total']}" if not missing else
                    f", of {result['n_total']}: {result.get('n_dropped')} dropped by the vote filter, {missing} "
                    f"without an image")
    else:
        filtered = f", {missing} label row(s) without an image left out" if missing else ""
    return f"N = {result['n']} test images ({result['protocol']} labels{filtered}"


def summary_table(result: dict) -> str:
    """The fixed-width console table for one model."""
    summary, rows = result["summary"], result["folders"]
    severities = summary["severities"]
    normalised = "ce" in summary
    out = io.StringIO()
    checkpoint = result["checkpoint"]
    out.write(f"{corrupted_title(result.get('dataset', 'rafdb'))} summary for {checkpoint['checkpoint']}\n")
    out.write(f"{images_text(result)}"
              + f"), crop {checkpoint['crop']}, input {'x'.join(map(str, checkpoint.get('input_shape') or ['n/a']))}"
              f", preprocessing {checkpoint['preprocessing']}, format {result['format']}"
              f"{' (on the fly)' if result['on_the_fly'] else ''}\n")
    runtime = result.get("runtime") or {}
    if runtime.get("adapted"):
        out.write(f"ADAPTED: BatchNorm statistics re-estimated on each folder before predicting it "
                  f"(--adapt bn, prior {runtime.get('adapt_prior', 0):g}; docs/BENCHMARK.md §11.2)\n")
    if normalised:
        out.write(f"errors in %; CE and relative CE in % of the baseline "
                  f"{result['baseline']['checkpoint']} (docs/BENCHMARK.md §5.2)\n")
    else:
        out.write("errors in %; no --baseline: CE and relative CE are UNNORMALISED sums over "
                  "severities, sum E_s and sum (E_s - E_clean), in %\n")
    ce_head, rel_head = ("CE", "rel.CE") if normalised else ("sumE", "sum(E-Ec)")
    header = (f"{'corruption':<41}" + "".join(f"{'s=' + str(s):>7}" for s in severities)
              + f"{'mean':>8}{ce_head:>10}{rel_head:>11}")
    out.write(header + "\n" + "-" * len(header) + "\n")
    out.write(f"{'clean':<41}{_percent(summary['clean_error'])}\n")
    by_key = {(row["corruption"], row["severity"]): row["error"] for row in rows}
    for corruption in dict.fromkeys(row["corruption"] for row in rows if row["corruption"]):
        cells = "".join(_percent(by_key.get((corruption, s))) for s in severities)
        complete = corruption in summary.get("mean_error", {})
        mean = summary["mean_error"][corruption] if complete else None
        if normalised:
            ce = summary["ce"].get(corruption) if complete else None
            rel = summary["relative_ce"].get(corruption) if complete else None
        else:
            ce = summary["error_sum"].get(corruption) if complete else None
            rel = summary["relative_error_sum"].get(corruption) if complete else None
        out.write(f"{corruption:<41}{cells}{_percent(mean, 8)}{_percent(ce, 10)}"
                  f"{_percent(rel, 11)}\n")
    out.write("-" * len(header) + "\n")
    count = len(summary["complete_corruptions"])
    headline = (summary.get("sets") or {}).get(summary.get("mce_set"))
    if count and headline:  # the headline is over the 18 whenever they were evaluated
        count = len(headline["corruptions"])
    if count:
        if normalised:
            out.write(f"mCE {_pct(summary['mce'])}   relative mCE "
                      f"{_pct(summary['relative_mce'])}   (over {count} corruptions, "
                      f"baseline {result['baseline']['checkpoint']})\n")
        else:
            out.write(f"unnormalised mCE (mean sumE) {_pct(summary['mean_error_sum'])}   "
                      f"unnormalised relative mCE (mean sum(E-Ec)) "
                      f"{_pct(summary['mean_relative_error_sum'])}   (over {count} "
                      f"corruptions; pass --baseline to normalise)\n")
        sets = summary.get("sets") or {}
        if set(sets) - {"rafdb"}:  # one line per set; the lines above are over summary["mce_set"]
            out.write(set_lines(summary, result))
        out.write(f"clean error {_pct(summary['clean_error'])}   mean corruption error "
                  f"{_pct(summary['overall_mean_error'])}   mean corruption accuracy "
                  f"{_pct(summary['mean_corruption_accuracy'])}   unnormalised relative error "
                  f"{_pct(summary['unnormalised_relative_error'])}\n")
    calibrated = [summary[key] for key in ("clean_ece", "mean_ece") if key in summary]
    if calibrated and all(math.isnan(value) for value in calibrated):
        out.write("ECE, NLL and Brier not computed: predicted classes, not probabilities (docs/BENCHMARK.md §11.3)\n")
    elif calibrated:
        parts = []
        if "clean_ece" in summary:
            parts.append(f"clean ECE {_pct(summary['clean_ece'])}")
        if "mean_ece" in summary:
            over = "the 18's corrupted folders" if summary.get("mce_set") == "rafdb" and \
                len(summary.get("sets") or {}) > 1 else "corrupted folders"
            parts.append(f"mean ECE over {over} {_pct(summary['mean_ece'])}   "
                         f"mean NLL {summary['mean_nll']:.4f}   mean Brier {summary['mean_brier']:.4f}")
        out.write("   ".join(parts) + "   (ECE in %, 15 bins, top-1; docs/BENCHMARK.md §11.3)\n")
    out.write(f"{result['images']} images in {result['seconds']:.1f} s: "
              f"{result['images_per_second']:.1f} images/s\n")
    return out.getvalue()


def _pct(value: float) -> str:
    """``value`` in percent with two decimals; a tiny negative (-1e-17, a float sum) is 0.00, not -0.00."""
    return cli_common.unsigned_zero(f"{100 * value:.2f}")


def set_lines(summary: dict, result: dict) -> str:
    """One line per corruption set: its mCE and relative mCE (or the unnormalised means)."""
    lines = []
    for name, numbers in summary["sets"].items():
        count = len(numbers["corruptions"])
        head = f"set {name:<15} ({count:>2} corruption{'s' if count != 1 else ''}): "
        if numbers["normalised"]:
            lines.append(head + f"mCE {_pct(numbers['mce'])}   relative mCE "
                         f"{_pct(numbers['relative_mce'])}   mean error "
                         f"{_pct(numbers['overall_mean_error'])}")
        else:
            note = "" if result.get("baseline") is None else "   (not in the baseline)"
            lines.append(head + f"unnormalised mCE {_pct(numbers['mean_error_sum'])}   "
                         f"unnormalised relative mCE {_pct(numbers['mean_relative_error_sum'])}   "
                         f"mean error {_pct(numbers['overall_mean_error'])}{note}")
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------------------------
# Output files


def write_csv(path: Path, results: list[dict]) -> None:
    """One row per evaluated folder, then per model a ``summary`` row: mean corruption accuracy and
    error, mean ECE/NLL/Brier over the corrupted folders, mCE and relative mCE (normalised with a
    baseline; without one the unnormalised means of sum E_s and sum (E_s - E_clean), and
    ``normalised`` 0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["checkpoint", "corruption", "severity", "folder", "n", "accuracy", "error",
                     "ece", "nll", "brier", "protocol", "crop", "format", "adapted", "adapt_prior",
                     "adapt_batch", "mce", "relative_mce", "normalised"])
    for result in results:
        runtime = result.get("runtime") or {}
        adapted = int(bool(runtime.get("adapted")))  # with its prior and batch: each gives other numbers
        common = [result["protocol"], result["checkpoint"]["crop"], result["format"], adapted,
                  f"{float(runtime.get('adapt_prior') or 0):g}" if adapted else "",
                  runtime.get("adapt_batch", "") if adapted else ""]
        for row in result["folders"]:
            writer.writerow([result["checkpoint"]["checkpoint"], row["corruption"] or "clean",
                             row["severity"], row["folder"], row["n"], f"{row['accuracy']:.6f}",
                             f"{row['error']:.6f}", _csv_number(row.get("ece")),
                             _csv_number(row.get("nll")), _csv_number(row.get("brier"))]
                            + common + ["", "", ""])
        summary = result.get("summary") or {}
        if summary.get("complete_corruptions"):
            normalised = "mce" in summary
            writer.writerow([result["checkpoint"]["checkpoint"], "summary", "", "mean", result["n"],
                             _csv_number(summary.get("mean_corruption_accuracy")),
                             _csv_number(summary.get("overall_mean_error")),
                             _csv_number(summary.get("mean_ece")), _csv_number(summary.get("mean_nll")),
                             _csv_number(summary.get("mean_brier"))] + common
                            + [_csv_number(summary["mce"] if normalised else summary["mean_error_sum"]),
                               _csv_number(summary["relative_mce"] if normalised
                                           else summary["mean_relative_error_sum"]),
                               int(normalised)])
            sets = summary.get("sets") or {}
            for name, numbers in sets.items() if set(sets) - {"rafdb"} else ():
                normalised = numbers["normalised"]
                writer.writerow([result["checkpoint"]["checkpoint"], f"summary:{name}", "", "mean",
                                 result["n"], _csv_number(numbers["mean_corruption_accuracy"]),
                                 _csv_number(numbers["overall_mean_error"]), _csv_number(numbers.get("mean_ece")),
                                 _csv_number(numbers.get("mean_nll")), _csv_number(numbers.get("mean_brier"))]
                                + common
                                + [_csv_number(numbers["mce"] if normalised else numbers["mean_error_sum"]),
                                   _csv_number(numbers["relative_mce"] if normalised
                                               else numbers["mean_relative_error_sum"]),
                                   int(normalised)])
    cli_common.atomic_write_text(path, buffer.getvalue())


def _csv_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6f}"


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _nan_to_none(value):
    """NaN or infinity (e.g. a relative CE over a baseline with no degradation) -> null."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value


def write_json(path: Path, results: list[dict], planned: int | None = None) -> None:
    """All results so far, NaN written as null (strict JSON, as the perturbation reader's).

    ``planned``: how many models the evaluation was asked for; ``complete`` is false while fewer
    are written (an evaluation stopped by Ctrl-C or a failing model leaves such a file, and
    report.py says so)."""
    planned = len(results) if planned is None else planned
    data = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "complete": len(results) >= planned,
            "models_planned": planned, "results": _nan_to_none(results)}
    text = json.dumps(data, indent=1, default=_json_default, allow_nan=False)
    cli_common.atomic_write_text(path, text + "\n")


def write_plot(path: Path, results: list[dict]) -> None:
    """Accuracy against severity, one panel per corruption, the clean accuracy as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = list(dict.fromkeys(row["corruption"] for result in results
                                     for row in result["folders"] if row["corruption"]))
    columns = min(6, max(1, len(corruptions)))
    rows_count = max(1, math.ceil(len(corruptions) / columns))
    figure, axes = plt.subplots(rows_count, columns, figsize=(2.6 * columns, 2.2 * rows_count),
                                sharex=True, sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, axis in enumerate(axes.flat):
        if index >= len(corruptions):
            axis.set_visible(False)
            continue
        corruption = corruptions[index]
        for number, result in enumerate(results):
            colour = colours[number % len(colours)]
            points = sorted((row["severity"], row["accuracy"]) for row in result["folders"]
                            if row["corruption"] == corruption)
            clean = next(row["accuracy"] for row in result["folders"] if row["corruption"] is None)
            label = Path(result["checkpoint"]["checkpoint"]).parent.name + "/" + \
                Path(result["checkpoint"]["checkpoint"]).name
            axis.axhline(clean, color=colour, linestyle="--", linewidth=0.8)
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, color=colour, label=label)
        axis.set_title(corruption, fontsize=7)
        axis.set_xticks(SEVERITIES)
        axis.set_ylim(0, 1)
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3)
    figure.supxlabel("severity (dashed: clean accuracy)", fontsize=8)
    figure.supylabel("accuracy", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles and len(results) > 1:
        figure.legend(handles, labels, loc="lower center", fontsize=6, ncol=min(4, len(results)))
    figure.tight_layout()
    with cli_common.atomic_path(path) as tmp:
        figure.savefig(tmp, format=cli_common.suffix_format(path, "--plot", cli_common.FIGURE_SUFFIXES, "the plot"),
                       dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------------------------
# Main


def check_results_file(path: Path) -> None:
    """Refuse a RESULTS_FILE that is a directory or a checkpoint, or that cannot be appended to.

    ``eval_corrupted_rafdb.py run1 run2`` would otherwise append the text report into run2.
    """
    hint = ("RESULTS_FILE is the text file the report is appended to; to evaluate several "
            "checkpoints, put their run directories in one directory (a directory of runs) and "
            "give that as CHECKPOINT; for model files of other frameworks, run once per file (the "
            "JSON results join in report.py)")
    if path.is_dir():
        raise UserError(f"{path}: RESULTS_FILE is a directory. {hint}")
    if path.suffix.lower() in checkpoints.CHECKPOINT_SUFFIXES:
        raise UserError(f"{path}: RESULTS_FILE looks like a checkpoint ({path.suffix}). {hint}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"{path}: RESULTS_FILE is not writable")
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{path}: RESULTS_FILE's directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot create RESULTS_FILE in {parent} (not writable)")




# --------------------------------------------------------------------------------------------
# One model's result, shards and their merge

TIMING_KEYS = ("seconds", "images", "images_per_second", "adapt_images")


def make_result(*, checkpoint: dict, labels, rafdb: Path, corrupted: Path, fmt: str,
                on_the_fly: bool, source: dict, manifest: dict | None, corruptions: list[str],
                severities: list[int], rows: list[dict], baseline: dict | None,
                baseline_path: Path | None, baseline_method: str | None, mismatch_ok: bool,
                runtime: dict, shard: tuple[int, int] | None, seconds: float, images: int,
                adapt_images: int = 0, corruption_set: str = "rafdb",
                corrupted_extra: Path | None = None) -> dict:
    """The JSON record of one model (a shard's when ``shard`` is set: no summary then)."""
    result = {
        "checkpoint": checkpoint,
        "protocol": labels["protocol"],
        "n": labels["n"], "n_total": labels["n_total"], "n_dropped": labels["n_dropped"],
        "n_missing": labels["n_missing"],
        "rafdb": str(rafdb), "corrupted": str(corrupted),
        "corruption_set": corruption_set,
        "corrupted_extra": None if corrupted_extra is None else str(corrupted_extra),
        "format": fmt, "on_the_fly": bool(on_the_fly), "source": source,
        "manifest": manifest,
        "corruptions": list(corruptions), "severities": list(severities),
        "runtime": runtime,
        "shard": None if shard is None else {"index": shard[0], "count": shard[1]},
        "clean": next((row for row in rows if row["corruption"] is None), None),
        "folders": rows,
        "baseline": None if baseline is None else {
            "file": str(baseline_path), "checkpoint": baseline["checkpoint"]["checkpoint"],
            "protocol": baseline.get("protocol"), "n": baseline.get("n"),
            "crop": baseline["checkpoint"].get("crop"), "format": baseline.get("format"),
            "method": baseline_method, "mismatch_ok": bool(mismatch_ok),
            # its test-time settings: which row of a model evaluated twice (adapted or not) it is
            "runtime": baseline.get("runtime")},
        "seconds": seconds, "images": images,
        "images_per_second": images / seconds if seconds > 0 else float("nan"),
        "adapt_images": adapt_images,
    }
    has_clean = result["clean"] is not None
    result["summary"] = summarise(rows, severities, baseline, baseline_path) \
        if shard is None and has_clean else None
    return result


def read_results(path: Path, flag: str = "--merge") -> list[dict]:
    """The results list of a ``--json`` file (UserError naming ``flag`` and the file otherwise);
    a pickle is refused unopened."""
    import model_files

    model_files.refuse_pickle(path)  # never opened: unpickling runs code
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{flag} {path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise UserError(f"{flag} {path}: expected a results file written by "
                        f"eval_corrupted_rafdb.py --json (format {RESULTS_FORMAT!r})")
    import result_files

    problem = result_files.robustness_problem(data)
    if problem:
        raise UserError(f"{flag} " + result_files.damaged(path, problem, "eval_corrupted_rafdb.py --json"))
    return data.get("results") or []


# Fields that must agree between the shards of one model.
# (on_the_fly before the paths: a tree shard records no paths beside its manifest, an on-the-fly one
# records its --rafdb; the paths would be named as the difference)
SAME_IN_SHARDS = ("checkpoint", "protocol", "n", "n_total", "n_dropped", "n_missing", "on_the_fly", "rafdb",
                  "corrupted", "format", "source", "manifest", "corruptions",
                  "severities", "runtime", "corruption_set", "corrupted_extra", "test_set_sha256", "ferplus_norm")


def _other_models_shards(per_model: dict, parts: list, missing: list[int], count: int) -> str:
    """Where a missing shard is: a file given that holds that shard of another model (another
    checkpoint file: overwritten between the shard runs, or another path without a recorded SHA-256)."""
    found = [f"{path} holds shard {(result.get('shard') or {}).get('index', 0)}/{count} of another model, "
             f"{result['checkpoint']['checkpoint']}"
             + (f" (SHA-256 {result['checkpoint']['checkpoint_sha256'][:12]})"
                if result["checkpoint"].get("checkpoint_sha256") else "")
             for others in per_model.values() if others is not parts for path, result in others
             if (result.get("shard") or {}).get("count", 1) == count
             and (result.get("shard") or {}).get("index", 0) in missing]
    return f" ({'; '.join(found)})" if found else ""


def _shard_set_problem(per_model: dict, parts: list) -> str:
    """What is wrong with one model's shards (other counts N, a shard missing or given twice), or ""."""
    checkpoint = parts[0][1]["checkpoint"]["checkpoint"]
    counts = {(part["shard"] or {}).get("count", 1) for _, part in parts}
    if len(counts) != 1:
        return f"{checkpoint}: shards of different counts N ({sorted(counts)})"
    count = counts.pop()
    indices = sorted((part["shard"] or {}).get("index", 0) for _, part in parts)
    if indices == list(range(count)):
        return ""
    missing = sorted(set(range(count)) - set(indices))
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    return (f"{checkpoint}: expected shards 0..{count - 1} once each; "
            + (f"missing {', '.join(f'{i}/{count}' for i in missing)}" if missing else "")
            + ("; " if missing and repeated else "")
            + (f"repeated {', '.join(f'{i}/{count}' for i in repeated)}" if repeated else "")
            + _other_models_shards(per_model, parts, missing, count))


def _unit_key(row: dict) -> str:
    return "clean" if row["corruption"] is None else f"{row['corruption']}.{row['severity']}"


_ABSENT = "(not recorded)"


def _differing_fields(a, b, name: str) -> list[tuple[str, object, object]]:
    """The dotted names of the leaves where two recorded values differ, with both values
    (``checkpoint.preprocessing``, not the whole ``checkpoint`` record)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [field for key in sorted(set(a) | set(b), key=str)
                for field in _differing_fields(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{name}.{key}")]
    return [] if a == b else [(name, a, b)]


def _shard_value(result: dict, key: str):
    """What shards of one evaluation must share under ``key``. Left out: what legitimately differs
    between shards of one command run on other nodes or folders: the model file's path and time when
    its SHA-256 is recorded, the export's paths when its manifest (with its SHA-256) is, whether
    the outputs were found to be logits (unknown in a shard that predicted nothing), and the
    runner's ``fixed_batch`` (an ONNX runner falls back to one image at a time when a run finds the
    batch fixed: an observation of that run, the same computation per image)."""
    value = result.get(key)
    if key in ("checkpoint", "runtime") and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in ("output_kind", "output_scores", "checkpoint_mtime")
                 and not (k == "checkpoint" and value.get("checkpoint_sha256"))}
        if isinstance(value.get("runtime"), dict):  # the runner's describe(): fixed_batch is what
            # a run observed (an ONNX model found to take one image at a time), not an option
            value["runtime"] = {k: v for k, v in value["runtime"].items()
                                if k not in ("output_kind", "output_scores", "fixed_batch")}
    if key in ("rafdb", "corrupted", "corrupted_extra") and result.get("manifest"):
        return None
    return value


def merge_results(paths: list[Path], baseline: dict | None = None, baseline_path: Path | None = None,
                  baseline_method: str | None = None, mismatch_ok: bool = False) -> list[dict]:
    """Shard JSONs (``--shard i/N`` runs) -> the results one run over every unit gives.

    Per model (checkpoint path), every shard 0..N-1 must be present once, with the same protocol,
    N, data, export, requested folders and runtime options; the rows are put back in canonical
    order and the summary is recomputed (with ``baseline`` if given). Timing fields are summed.
    """
    import corruptions

    per_model: dict[str, list[tuple[Path, dict]]] = {}
    for path in paths:
        for result in read_results(path):
            info = result["checkpoint"]  # one model: its file's content where recorded, else its path
            key = f"sha256:{info['checkpoint_sha256']}" if info.get("checkpoint_sha256") else info["checkpoint"]
            per_model.setdefault(key, []).append((path, result))
    if not per_model:
        raise UserError(f"--merge: no results in {', '.join(map(str, paths))}")
    # every model's incomplete shard set in one message (the inputs may mix the shards of several models)
    problems = [problem for problem in (_shard_set_problem(per_model, parts) for parts in per_model.values())
                if problem]
    if problems:
        raise UserError("--merge: " + "; and ".join(problems))
    merged = []
    for parts in per_model.values():
        first_path, first = parts[0]
        checkpoint = first["checkpoint"]["checkpoint"]
        for path, part in parts[1:]:
            for key in SAME_IN_SHARDS:
                value, first_value = _shard_value(part, key), _shard_value(first, key)
                if value != first_value:
                    fields = _differing_fields(value, first_value, key)
                    detail = "; ".join(f"{name}: {a!r} in {path}, {b!r} in {first_path}"
                                       for name, a, b in fields[:4]) + ("; ..." if len(fields) > 4 else "")
                    raise UserError(f"--merge: {checkpoint}: {path} and {first_path} differ in "
                                    f"{key!r} ({detail}); shards must come from one command line with "
                                    f"different --shard only")
        rows_by_key: dict[str, dict] = {}
        for path, part in parts:
            for row in part["folders"]:
                key = _unit_key(row)
                if key in rows_by_key:
                    raise UserError(f"--merge: {checkpoint}: folder {key} is in two shards ({path})")
                rows_by_key[key] = row
        order = ["clean"] + [f"{c}.{s}" for c in first["corruptions"] for s in first["severities"]]
        rows = [rows_by_key[key] for key in order if key in rows_by_key]
        rows += [row for key, row in rows_by_key.items() if key not in order]
        if "clean" not in rows_by_key:
            raise UserError(f"--merge: {checkpoint}: no shard holds the clean folder")
        labels = {key: first[key] for key in ("protocol", "n", "n_total", "n_dropped", "n_missing")}
        if baseline is not None:
            check_baseline(baseline, baseline_path, {"dataset": first.get("dataset") or "rafdb",
                                                     "protocol": first["protocol"], "N": first["n"],
                                                     "format": first["format"],
                                                     "crop": first["checkpoint"].get("crop"),
                                                     **({"test_set": first["test_set_sha256"]}
                                                        if first.get("test_set_sha256") else {}),
                                                     **({"param_set": (first.get("source") or {}).get("param_set")}
                                                        if corruptions.needs_param_set(first["corruptions"]) else {})},
                           mismatch_ok)
        seconds = float(sum(part.get("seconds") or 0.0 for _, part in parts))
        merged.append(make_result(
            checkpoint=first["checkpoint"], labels=labels, rafdb=first["rafdb"],
            corrupted=first["corrupted"], fmt=first["format"], on_the_fly=first["on_the_fly"],
            source=first["source"], manifest=first["manifest"], corruptions=first["corruptions"],
            severities=first["severities"], rows=rows, baseline=baseline,
            baseline_path=baseline_path, baseline_method=baseline_method, mismatch_ok=mismatch_ok,
            runtime=first["runtime"], shard=None, seconds=seconds,
            images=int(sum(part.get("images") or 0 for _, part in parts)),
            adapt_images=int(sum(part.get("adapt_images") or 0 for _, part in parts)),
            corruption_set=first.get("corruption_set", "rafdb"),
            corrupted_extra=first.get("corrupted_extra")))
        # the evaluated dataset (eval_corrupted_rafdb.py --dataset, docs/DATASETS.md), kept as the shards have it
        merged[-1].update({key: first[key] for key in ("dataset", "split", "n_unmapped", "unmapped_classes", "classes",
                                                       "test_set_sha256", "ferplus_norm")
                           if key in first})
    return merged


def append_atomically(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` as the original did, but by writing the old content plus the
    new under a temporary name and renaming: a crash leaves the old file or the new one."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    cli_common.atomic_write_text(path, old + text)
