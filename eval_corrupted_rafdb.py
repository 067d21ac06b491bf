"""Robustness of a Keras classifier on RAF-DB-C: accuracy per corrupted folder, CE, mCE (BENCHMARK.md §5.1-§5.3).

Prints the original's report block on stdout (and appends it to RESULTS_FILE when given):

    Results for: <checkpoint>
    RAF-DB/basic/Image/aligned <accuracy>
    corrupted_raf_dataset/rafdb.test.<corruption>.<severity> <accuracy>     (clean, then BENCHMARK.md §2.3
    ...                                                                      order x severities 1..5)
    <two blank lines>

then a fixed-width summary table: the clean error, per corruption the error at each severity, the
mean over severities, CE and relative CE, mCE and relative mCE (normalised by ``--baseline``, the
``--json`` of another model; without it the unnormalised sums, labelled so), N, the label protocol
and the speed in images/s. Logs and progress go to stderr.

RESULTS_FILE must not be a directory or a checkpoint (``eval_corrupted_rafdb.py run1 run2`` is
refused: give a directory of runs instead) and must be writable; both are checked before any
evaluation. ``--baseline`` must have been produced with the same label protocol, N, crop and format
(BENCHMARK.md §5.2); a difference is an error unless ``--baseline-mismatch-ok``. A baseline JSON holding
several models needs ``--baseline-method`` (checkpoint path, run directory name or file name).
``--json`` (strict JSON: NaN is written as null), ``--csv`` and ``--plot`` are rewritten atomically
after each evaluated checkpoint, so a failing run in a directory of runs loses none before it.

CHECKPOINT is a .hdf5/.h5/.keras file, a run directory or a directory of runs (every run's best
checkpoint is evaluated). Input size and channels come from the model; preprocessing, crop and class
order from run.json beside the checkpoint or from the checkpoint flags (see checkpoints.py).

The evaluated list is the test split under the label protocol: ``--labels soft`` (default) keeps the
vote-filtered subset, ``--labels hard`` all test images. The file of image test_0001 in a corrupted
folder is test_0001_aligned.jpg (or .png for a PNG export). ``--on-the-fly`` needs no exported tree:
the aligned test images are corrupted in memory with the export's per-image seeds and, by default,
its JPEG round trip, so the accuracies equal those of an exported tree with the same parameters.

Examples:

    python3 eval_corrupted_rafdb.py out_training_fer/run/checkpoint.12.hdf5 results.txt --json r.json
    python3 eval_corrupted_rafdb.py other.hdf5 --baseline r.json --plot other.png
    python3 eval_corrupted_rafdb.py fer2013_model.hdf5 --preprocessing scale-1-1 --class-order fer2013
    python3 eval_corrupted_rafdb.py model.keras --on-the-fly --corruptions gaussian_noise --severities 1-2
"""

from __future__ import annotations

import argparse
import csv
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
from cli_common import LOG, UserError

RESULTS_FORMAT = "rafdb-c-results"
RESULTS_VERSION = 1
SEVERITIES = (1, 2, 3, 4, 5)
MOTION_BACKENDS = ("numpy", "wand")
COLOURS = ("rgb", "bgr-compat")


# --------------------------------------------------------------------------------------------
# Arguments


def corruption_names() -> list[str]:
    """The RAF-DB-C corruptions in canonical (BENCHMARK.md §2.3) order."""
    import corruptions

    return list(corruptions.CORRUPTION_NAMES)


def parse_corruptions(text: str) -> list[str]:
    """``all`` or a comma-separated list of corruption names, returned in canonical order."""
    valid = corruption_names()
    if text.strip() == "all":
        return valid
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in valid]
    if not names:
        raise UserError(f"--corruptions: expected 'all' or a comma-separated list of: {', '.join(valid)}")
    if unknown:
        raise UserError(f"--corruptions: unknown corruption {unknown[0]!r}; valid names: "
                        f"{', '.join(valid)}")
    return [name for name in valid if name in names]


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path,
                        help="a .hdf5/.h5/.keras checkpoint, a run directory or a directory of runs")
    parser.add_argument("results_file", nargs="?", type=Path, default=None,
                        help="text file to which the report block is appended (as the original); "
                             "not a checkpoint or a directory: to evaluate several checkpoints, "
                             "give a directory of runs as CHECKPOINT")
    rafdb_dataset.add_dataset_args(parser)
    group = parser.add_argument_group("RAF-DB-C")
    group.add_argument("--corrupted", type=Path, default=Path("corrupted_raf_dataset"),
                       help="root of the exported RAF-DB-C tree")
    group.add_argument("--corruptions", default="all",
                       help="'all' or a comma-separated list of corruption names")
    group.add_argument("--severities", default="1-5", help="severities to evaluate, e.g. 1-5 or 1,3")
    group.add_argument("--allow-missing", action="store_true",
                       help="evaluate the folders and images that exist instead of stopping at "
                            "missing ones (they are listed on stderr)")
    group = parser.add_argument_group("on-the-fly corruption (no exported tree)")
    group.add_argument("--on-the-fly", action="store_true",
                       help="corrupt the aligned test images in memory, exactly as the export does")
    group.add_argument("--format", choices=rafdb_dataset.FORMATS, default=None,
                       help="file format: the export's JPEG q95 round trip (jpg) or lossless png. "
                            "Default: jpg on the fly; for a tree, the manifest's (else detected)")
    group.add_argument("--seed", type=int, default=0, help="export seed (on the fly)")
    group.add_argument("--motion-backend", choices=MOTION_BACKENDS, default="numpy",
                       help="motion blur backend (on the fly), as the export's")
    group.add_argument("--colour", choices=COLOURS, default="rgb",
                       help="colour mode (on the fly), as the export's")
    group.add_argument("--workers", type=int, default=None,
                       help="processes corrupting images on the fly (default: all cores)")
    group = parser.add_argument_group("results")
    group.add_argument("--baseline", type=Path, default=None,
                       help="results JSON (from --json) of the reference model normalising CE/mCE; "
                            "it must have this evaluation's protocol, N, crop and format")
    group.add_argument("--baseline-method", default=None, metavar="NAME",
                       help="the model to use in a --baseline JSON holding several: its checkpoint "
                            "path, run directory name or checkpoint file name")
    group.add_argument("--baseline-mismatch-ok", action="store_true",
                       help="accept a --baseline with a different protocol, N, crop or format "
                            "(a warning instead of an error; BENCHMARK.md §5.2 asks for the same)")
    group.add_argument("--json", type=Path, default=None,
                       help="write all results as JSON (rewritten atomically after each run)")
    group.add_argument("--csv", type=Path, default=None,
                       help="write one row per evaluated folder as CSV")
    group.add_argument("--plot", type=Path, default=None,
                       help="write a PNG of accuracy against severity per corruption")
    checkpoints.add_checkpoint_args(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# The evaluated folders


class Folder:
    """One evaluated folder: its report name and the image source for each evaluated test name."""

    def __init__(self, corruption: str | None, severity: int, label: str, paths: list[Path] | None,
                 keep: np.ndarray):
        self.corruption, self.severity, self.label = corruption, severity, label
        self.paths = paths  # None on the fly
        self.keep = keep  # bool mask over the label set: images present in this folder

    @property
    def key(self) -> str:
        return "clean" if self.corruption is None else f"{self.corruption}.{self.severity}"


def _folder_label(root: Path, folder: str) -> str:
    return os.path.join(str(root), folder)


def find_exported_folders(corrupted: Path, names: list[str], pairs: list[tuple[str, int]],
                          fmt: str | None, allow_missing: bool) -> list[Folder]:
    """Locate every (corruption, severity) folder and its image for each evaluated name."""
    if not corrupted.is_dir():
        raise UserError(f"{corrupted}: RAF-DB-C tree not found (export it with "
                        f"rafdb_aug_dataset.py export, point --corrupted at it, or use --on-the-fly)")
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
        folders.append(Folder(corruption, severity, _folder_label(corrupted, folder_name), paths,
                              keep))
    if missing_folders:
        listed = ", ".join(str(path) for path in missing_folders)
        if not allow_missing:
            raise UserError(f"{len(missing_folders)} corrupted folder(s) missing: {listed} "
                            f"(export them with rafdb_aug_dataset.py, pass --allow-missing to "
                            f"evaluate what exists, or use --on-the-fly)")
        LOG.warning("skipping %d missing corrupted folder(s): %s", len(missing_folders), listed)
    return folders


# --------------------------------------------------------------------------------------------
# On-the-fly corruption (worker processes, forked before TensorFlow is imported)

_CLEAN_IMAGES: list[np.ndarray] = []
_CLEAN_FILES: list[str] = []


def _corrupt_one(task: tuple) -> np.ndarray:
    """Corrupt one clean image exactly as the export writes it, then decode the bytes back."""
    import dataset_writer

    index, corruption, severity, seed, fmt, motion_backend, colour = task
    data = dataset_writer.corrupted_bytes(_CLEAN_IMAGES[index], _CLEAN_FILES[index], corruption,
                                          severity, seed=seed, fmt=fmt,
                                          motion_backend=motion_backend, colour=colour)
    return rafdb_dataset.decode_image(data, f"{corruption}.{severity}/{_CLEAN_FILES[index]}")


class OnTheFly:
    """Corrupted images of each folder, rendered by a process pool one folder ahead."""

    def __init__(self, clean_paths: list[Path], args: argparse.Namespace):
        global _CLEAN_IMAGES, _CLEAN_FILES
        _CLEAN_IMAGES = [rafdb_dataset.read_image(path) for path in clean_paths]
        _CLEAN_FILES = [path.name for path in clean_paths]
        self.options = (args.seed, args.format or "jpg", args.motion_backend, args.colour)
        workers = args.workers or os.cpu_count() or 1
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


def _accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    import metrics

    return metrics.accuracy(np.argmax(scores, axis=1), targets)


def evaluate(classifier: checkpoints.Classifier, clean: Folder, folders: list[Folder],
             targets: np.ndarray, on_the_fly: OnTheFly | None) -> tuple[list[dict], float, int]:
    """Accuracy on the clean folder and every corrupted folder; returns (rows, seconds, images)."""
    from tqdm import tqdm

    rows, images_done = [], 0
    started = time.perf_counter()
    evaluated = [clean] + folders
    pending = None
    if on_the_fly is not None and folders:
        pending = on_the_fly.submit(folders[0].corruption, folders[0].severity)
    bar = tqdm(total=len(evaluated), desc=classifier.checkpoint_path.name, unit="folder",
               file=sys.stderr, leave=False, disable=None)
    try:
        for position, folder in enumerate(evaluated):
            if folder.paths is not None:
                dataset = classifier.make_dataset(folder.paths)
            else:
                images = on_the_fly.collect(pending)
                if position + 1 < len(evaluated):
                    following = evaluated[position + 1]
                    pending = on_the_fly.submit(following.corruption, following.severity)
                dataset = classifier.make_array_dataset(np.stack(images))
            scores = classifier.predict_dataset(dataset)
            folder_targets = targets[folder.keep]
            if len(scores) != len(folder_targets):
                raise UserError(f"{folder.label}: {len(scores)} predictions for "
                                f"{len(folder_targets)} images")
            accuracy = _accuracy(scores, folder_targets)
            images_done += len(scores)
            rows.append({"corruption": folder.corruption, "severity": folder.severity,
                         "folder": folder.label, "n": int(len(scores)),
                         "accuracy": accuracy, "error": 1.0 - accuracy})
            bar.update(1)
    finally:
        bar.close()
    return rows, time.perf_counter() - started, images_done


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--baseline {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"--baseline {path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise UserError(f"--baseline {path}: expected a results file written by "
                        f"eval_corrupted_rafdb.py --json (format {RESULTS_FORMAT!r})")
    results = data.get("results") or []
    if method is not None:
        chosen = [result for result in results if method in _baseline_names(result)]
        if len(chosen) != 1:
            listed = "; ".join(" | ".join(_baseline_names(result)) for result in results)
            raise UserError(f"--baseline-method {method!r}: "
                            f"{'names ' + str(len(chosen)) + ' models' if chosen else 'not found'} "
                            f"in {path} (its models: {listed or 'none'})")
        return chosen[0]
    if len(results) != 1:
        names = ", ".join(_baseline_names(result)[0] for result in results)
        raise UserError(f"--baseline {path}: holds {len(results)} models ({names}); choose one "
                        f"with --baseline-method")
    return results[0]


def check_baseline(baseline: dict, path: Path, mine: dict, mismatch_ok: bool) -> None:
    """BENCHMARK.md §5.2: the baseline must come from the same protocol, N, crop and format.

    ``mine`` maps protocol / N / crop / format to this evaluation's values (the keys present are
    checked). A difference is a UserError naming both values, or a warning with ``mismatch_ok``.
    """
    theirs = {"protocol": baseline.get("protocol"), "N": baseline.get("n"),
              "crop": (baseline.get("checkpoint") or {}).get("crop"),
              "format": baseline.get("format")}
    differences = [f"{key} {theirs[key]!r} (this evaluation: {value!r})"
                   for key, value in mine.items() if theirs[key] != value]
    if not differences:
        return
    message = (f"--baseline {path}: produced with {'; '.join(differences)}; BENCHMARK.md §5.2 needs the "
               f"same protocol, crop and format")
    if not mismatch_ok:
        raise UserError(message + " (pass --baseline-mismatch-ok to normalise anyway)")
    LOG.warning("%s; normalising anyway (--baseline-mismatch-ok)", message)


def baseline_table(baseline: dict, path: Path, table: dict[str, list[float]],
                   severities: list[int]) -> tuple[float, dict[str, list[float]]]:
    """The baseline's clean error and error rows for the corruptions of ``table``."""
    by_key = {(row["corruption"], int(row["severity"])): float(row["error"])
              for row in baseline["folders"]}
    missing = [f"{c}.{s}" for c in table for s in severities if (c, s) not in by_key]
    if missing:
        raise UserError(f"--baseline {path}: no result for {', '.join(missing[:10])}"
                        + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""))
    return float(baseline["clean"]["error"]), {
        c: [by_key[(c, s)] for s in severities] for c in table}


def summarise(rows: list[dict], severities: list[int], baseline: dict | None,
              baseline_path: Path | None) -> dict:
    """BENCHMARK.md §5.2 numbers (metrics.py) plus the unnormalised sums shown without a baseline."""
    import metrics

    clean_error, table = error_table(rows, severities)
    summary: dict = {"severities": severities, "complete_corruptions": list(table)}
    if not table:
        summary.update({"clean_error": clean_error})
        return summary
    base_clean, base_table = (None, None)
    if baseline is not None:
        base_clean, base_table = baseline_table(baseline, baseline_path, table, severities)
    summary.update(metrics.corruption_summary(table, clean_error, base_table, base_clean))
    # Without a baseline, CE_c's numerator and relative CE_c's numerator (BENCHMARK.md §5.2), unnormalised.
    summary["error_sum"] = {c: float(np.sum(errors)) for c, errors in table.items()}
    summary["relative_error_sum"] = {c: float(np.sum(np.asarray(errors) - clean_error))
                                     for c, errors in table.items()}
    summary["mean_error_sum"] = float(np.mean(list(summary["error_sum"].values())))
    summary["mean_relative_error_sum"] = float(np.mean(list(summary["relative_error_sum"].values())))
    return summary


def _percent(value: float | None, width: int = 7) -> str:
    if value is None:
        return " " * (width - 1) + "-"
    if isinstance(value, float) and math.isnan(value):
        return f"{'nan':>{width}}"
    return f"{100.0 * value:{width}.2f}"


def summary_table(result: dict) -> str:
    """The fixed-width console table for one model."""
    summary, rows = result["summary"], result["folders"]
    severities = summary["severities"]
    normalised = "ce" in summary
    out = io.StringIO()
    checkpoint = result["checkpoint"]
    out.write(f"RAF-DB-C summary for {checkpoint['checkpoint']}\n")
    out.write(f"N = {result['n']} test images ({result['protocol']} labels"
              + (f", vote-filtered from {result['n_total']}" if result["protocol"] == "soft" else "")
              + f"), crop {checkpoint['crop']}, input {'x'.join(map(str, checkpoint['input_shape']))}"
              f", preprocessing {checkpoint['preprocessing']}, format {result['format']}"
              f"{' (on the fly)' if result['on_the_fly'] else ''}\n")
    if normalised:
        out.write(f"errors in %; CE and relative CE in % of the baseline "
                  f"{result['baseline']['checkpoint']} (BENCHMARK.md §5.2)\n")
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
    if count:
        if normalised:
            out.write(f"mCE {100 * summary['mce']:.2f}   relative mCE "
                      f"{100 * summary['relative_mce']:.2f}   (over {count} corruptions, "
                      f"baseline {result['baseline']['checkpoint']})\n")
        else:
            out.write(f"unnormalised mCE (mean sumE) {100 * summary['mean_error_sum']:.2f}   "
                      f"unnormalised relative mCE (mean sum(E-Ec)) "
                      f"{100 * summary['mean_relative_error_sum']:.2f}   (over {count} "
                      f"corruptions; pass --baseline to normalise)\n")
        out.write(f"clean error {100 * summary['clean_error']:.2f}   mean corruption error "
                  f"{100 * summary['overall_mean_error']:.2f}   mean corruption accuracy "
                  f"{100 * summary['mean_corruption_accuracy']:.2f}   unnormalised relative error "
                  f"{100 * summary['unnormalised_relative_error']:.2f}\n")
    out.write(f"{result['images']} images in {result['seconds']:.1f} s: "
              f"{result['images_per_second']:.1f} images/s\n")
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Output files


def write_csv(path: Path, results: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["checkpoint", "corruption", "severity", "folder", "n", "accuracy", "error",
                     "protocol", "crop", "format"])
    for result in results:
        for row in result["folders"]:
            writer.writerow([result["checkpoint"]["checkpoint"], row["corruption"] or "clean",
                             row["severity"], row["folder"], row["n"], f"{row['accuracy']:.6f}",
                             f"{row['error']:.6f}", result["protocol"],
                             result["checkpoint"]["crop"], result["format"]])
    cli_common.atomic_write_text(path, buffer.getvalue())


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


def write_json(path: Path, results: list[dict]) -> None:
    """All results so far, NaN written as null (strict JSON, as the perturbation reader's)."""
    data = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "results": _nan_to_none(results)}
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
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------------------------
# Main


def check_results_file(path: Path) -> None:
    """Refuse a RESULTS_FILE that is a directory or a checkpoint, or that cannot be appended to.

    ``eval_corrupted_rafdb.py run1 run2`` would otherwise append the text report into run2.
    """
    hint = ("RESULTS_FILE is the text file the report is appended to; to evaluate several "
            "checkpoints, put their run directories in one directory (a directory of runs) and "
            "give that as CHECKPOINT")
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


def write_outputs(args: argparse.Namespace, results: list[dict]) -> None:
    """--json, --csv and --plot for every run so far (each written atomically)."""
    if args.json:
        write_json(args.json, results)
        LOG.info("wrote %s", args.json)
    if args.csv:
        write_csv(args.csv, results)
        LOG.info("wrote %s", args.csv)
    if args.plot:
        write_plot(args.plot, results)
        LOG.info("wrote %s", args.plot)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging(args.verbose)
    logging.captureWarnings(True)  # metrics.py warns (NaN ratios) through the warnings module
    names_c = parse_corruptions(args.corruptions)
    severities = parse_severities(args.severities)
    pairs = [(corruption, severity) for corruption in names_c for severity in severities]
    checkpoint_files = checkpoints.find_checkpoints(args.checkpoint)
    if args.results_file is not None:
        check_results_file(args.results_file)
    if args.baseline_method is not None and args.baseline is None:
        raise UserError("--baseline-method needs --baseline")
    baseline = load_baseline(args.baseline, args.baseline_method) if args.baseline else None

    labels = rafdb_dataset.load_labels(args.rafdb, "test", args.labels,
                                       allow_missing=args.allow_missing)
    targets = labels.classes
    clean_paths = labels.aligned_paths(args.rafdb)
    LOG.info("%d test images under the %s label protocol (%d of %d dropped by the vote filter)",
             len(labels), labels.protocol, labels.n_dropped, labels.n_total)
    all_present = np.ones(len(labels), bool)
    clean = Folder(None, 0, _folder_label(args.rafdb, rafdb_dataset.ALIGNED_DIR), clean_paths,
                   all_present)

    manifest, on_the_fly = None, None
    if args.on_the_fly:
        fmt = args.format or "jpg"
        folders = [Folder(c, s, _folder_label(args.corrupted, f"rafdb.test.{c}.{s}"), None,
                          all_present) for c, s in pairs]
        source = {"on_the_fly": True, "seed": args.seed, "format": fmt,
                  "motion_backend": args.motion_backend, "colour": args.colour}
        if args.motion_backend == "wand" and any("motion" in c for c in names_c):
            import corruptions

            check = getattr(corruptions, "check_wand", None)
            if check is not None:
                check()
    else:
        import dataset_writer

        manifest = dataset_writer.read_manifest(args.corrupted) if args.corrupted.is_dir() else None
        fmt = args.format or ((manifest or {}).get("params", {}).get("format"))
        folders = find_exported_folders(args.corrupted, labels.names, pairs, fmt,
                                        args.allow_missing)
        if fmt is None:
            suffixes = {folder.paths[0].suffix for folder in folders if folder.paths}
            fmt = "png" if suffixes == {".png"} else "jpg" if suffixes <= {".jpg"} else "mixed"
        source = {"on_the_fly": False, "format": fmt,
                  **{key: (manifest or {}).get("params", {}).get(key)
                     for key in ("seed", "motion_backend", "colour")}}
        if manifest is None:
            LOG.warning("%s: no manifest.json; the export's parameters are unknown", args.corrupted)
    if baseline is not None:  # everything but the crop is known before loading a model
        check_baseline(baseline, args.baseline, {"protocol": labels.protocol, "N": len(labels),
                                                 "format": fmt}, args.baseline_mismatch_ok)
    if args.on_the_fly:
        on_the_fly = OnTheFly(clean_paths, args)  # forks before TensorFlow is imported

    results = []
    try:
        for checkpoint_file in checkpoint_files:
            classifier = checkpoints.classifier_from_args(checkpoint_file, args)
            if baseline is not None:
                check_baseline(baseline, args.baseline, {"crop": classifier.crop},
                               args.baseline_mismatch_ok)
            rows, seconds, images = evaluate(classifier, clean, folders, targets, on_the_fly)
            block = report_block(str(checkpoint_file), rows)
            sys.stdout.write(block)
            sys.stdout.flush()
            if args.results_file is not None:
                with open(args.results_file, "a", encoding="utf-8") as stream:
                    stream.write(block)
            result = {
                "checkpoint": classifier.describe(),
                "protocol": labels.protocol,
                "n": len(labels), "n_total": labels.n_total, "n_dropped": labels.n_dropped,
                "n_missing": labels.n_missing,
                "rafdb": str(args.rafdb), "corrupted": str(args.corrupted),
                "format": fmt, "on_the_fly": bool(args.on_the_fly), "source": source,
                "manifest": manifest,
                "clean": rows[0], "folders": rows,
                "baseline": None if baseline is None else {
                    "file": str(args.baseline), "checkpoint": baseline["checkpoint"]["checkpoint"],
                    "protocol": baseline.get("protocol"), "n": baseline.get("n"),
                    "crop": baseline["checkpoint"].get("crop"), "format": baseline.get("format"),
                    "method": args.baseline_method,
                    "mismatch_ok": bool(args.baseline_mismatch_ok)},
                "seconds": seconds, "images": images,
                "images_per_second": images / seconds if seconds > 0 else float("nan"),
            }
            result["summary"] = summarise(rows, severities, baseline, args.baseline)
            sys.stdout.write(summary_table(result) + "\n")
            sys.stdout.flush()
            results.append(result)
            write_outputs(args, results)  # after each run: a later bad run loses nothing
    finally:
        if on_the_fly is not None:
            on_the_fly.close()
    return 0


if __name__ == "__main__":
    cli_common.run_main(main)
