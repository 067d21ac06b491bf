"""Predict every RAF-DB-P sequence with one or more checkpoints; write the predictions file (BENCHMARK.md §5.4).

For every checkpoint (a ``.hdf5``/``.h5``/``.keras`` file, a run directory or a directory of runs:
every run's best checkpoint) and every perturbation folder under ``--perturbed`` (the 10 of BENCHMARK.md
§3.3 in canonical order, then any other ``rafdb.*`` folder present, sorted), this writes the
original's text format to standard output (or ``--out FILE``)::

    <checkpoint_path>,<perturbed_dir>/rafdb.test.p_gaussian_noise
    3,3,3,3,3,0,0,3,...          one line per sequence: the class index (0..6, RAF-DB order) of
    ...                          each of its frames 00..29, comma-separated, no spaces
    <checkpoint_path>,<perturbed_dir>/rafdb.test.p_shot_noise
    ...
    (two blank lines after the last folder of each checkpoint)

The sequences are the RAF-DB test images of the label protocol, in its order (``--labels soft``:
the rows of ``distribute_basic.csv`` kept by the vote filter; ``hard``: every test image of
``list_patition_label.txt``). Frames are ``<folder>/test_XXXX_NN.jpg`` (or ``.png``); a missing
frame is an error naming it. Each frame is resized whole to the model's input (no 99 px cut: BENCHMARK.md
§4.3), converted to grey for one-channel models, and preprocessed as ``checkpoints.py`` decides from
``run.json`` and the flags (the same adaptation as ``eval_corrupted_rafdb.py``).

Logs and progress bars go to standard error only, so ``> predictions.txt`` captures exactly the
predictions and ``>>`` appends further checkpoints to the same file. ``eval_perturbed_rafdb2.py``
reads the file.

Extensions the original reader ignores (every extra line starts with ``#``):

- Right after each header, a metadata comment with the label protocol, the number of sequences, the
  perturbed tree's source (BENCHMARK.md §3.6: ``aligned`` must be visible in every report) and frames::

      # labels=soft N=285 source=landmarks frames=30 seed=0 format=jpg

  ``source``, ``seed``, ``format`` (and ``fallback_pad`` for ``source=aligned``) come from the
  tree's ``manifest.json``; without one they are ``unknown``. ``eval_perturbed_rafdb2.py`` shows
  N, the protocol and the source in its summary and JSON, and checks N against the block.
- ``--annotate`` writes ``# test_XXXX`` before each sequence line.
- ``--topk K`` writes, right after each sequence line, its frames' class rankings::

      #topk 3:6:0,3:6:0,3:0:6,...

  one comma-separated field per frame (frames 00..29), each the frame's top K classes from most to
  least probable joined by ``:`` (ties to the lower class index, BENCHMARK.md §5.7). The first class of
  each field is the frame's predicted class. ``eval_perturbed_rafdb2.py`` computes the top-k
  distance from these lines (k <= K; use ``--topk 5`` or ``7`` to report d_2, d_3 and d_5).

Two checkpoints that share a method name (the reader names a method after the checkpoint's run
directory) are warned about; the reader then names each ``<run dir>/<checkpoint file name>``.

Deviations from the original (BENCHMARK.md §5.4, §6 rows 18, 19, 21): predictions go to standard output or
``--out`` (the original appended to ``perturbed_predictions/<run dir>.txt`` and printed logs on
stdout); folders come in canonical order, not glob order; a missing frame is an error (the original
silently shortened the sequence); the input size and preprocessing come from the model and
``run.json`` (``--eval-preprocessing legacy-vggface2`` restores the original's input).

Example::

    python3 eval_perturbed_rafdb.py out_training_fer/ > predictions.txt
    python3 eval_perturbed_rafdb.py other_run/checkpoint.12.hdf5 --topk 5 >> predictions.txt
    python3 eval_perturbed_rafdb2.py predictions.txt
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

import checkpoints
import rafdb_dataset
from cli_common import ArgumentParser, UserError, atomic_path, positive_int, run_main, setup_logging

LOG = logging.getLogger("fer.eval_perturbed")

FOLDER_PREFIX = "rafdb.test."  # BENCHMARK.md §3.5: perturbed_raf_dataset/rafdb.test.p_<name>
FRAME_SUFFIXES = (".jpg", ".png")  # BENCHMARK.md §3.5 JPEG; EXTEND --format png
TOPK_PREFIX = "#topk "


def canonical_perturbations() -> list[str]:
    """The 10 RAF-DB-P perturbations in BENCHMARK.md §3.3 order (from the perturbations registry)."""
    import perturbations

    return list(perturbations.PERTURBATIONS)


def _folder_name(name: str) -> str:
    """``p_rotate`` or ``rafdb.test.p_rotate`` -> ``rafdb.test.p_rotate``."""
    return name if name.startswith("rafdb.") else FOLDER_PREFIX + name


def perturbation_folders(perturbed: Path, selected: Sequence[str] | None = None) -> list[Path]:
    """The folders to evaluate: ``selected`` (each must exist) or the canonical 10 then extras."""
    if not perturbed.is_dir():
        raise UserError(f"--perturbed {perturbed}: no such folder (expected "
                        f"{perturbed}/rafdb.test.p_<name>/test_XXXX_NN.jpg, as written by "
                        f"rafdb_perturb_dataset.py)")
    if selected:
        folders = [perturbed / _folder_name(name) for name in selected]
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"--perturbations: {folder}: no such folder")
        return folders
    canonical = [_folder_name(name) for name in canonical_perturbations()]
    present = {child.name for child in perturbed.iterdir()
               if child.is_dir() and child.name.startswith("rafdb.")}
    folders = [perturbed / name for name in canonical if name in present]
    missing = [name for name in canonical if name not in present]
    if not present:
        raise UserError(f"--perturbed {perturbed}: no rafdb.* folders in it (expected "
                        f"{perturbed}/rafdb.test.p_<name>/test_XXXX_NN.jpg)")
    if missing:
        LOG.warning("%s: %d of the 10 perturbation folders are missing: %s", perturbed, len(missing),
                    ", ".join(missing))
    extras = sorted(present - set(canonical))
    if extras:
        LOG.info("%s: extra folders (reported separately, never in mFP): %s", perturbed,
                 ", ".join(extras))
    return folders + [perturbed / name for name in extras]


def frame_paths(folder: Path, names: Sequence[str], n_frames: int) -> list[str]:
    """``folder/<name>_NN.jpg`` (or ``.png``) for every name and frame; UserError on the first missing."""
    entries = set(os.listdir(folder))
    paths = []
    for name in names:
        for frame in range(n_frames):
            stem = f"{name}_{frame:02d}"
            for suffix in FRAME_SUFFIXES:
                if stem + suffix in entries:
                    paths.append(str(folder / (stem + suffix)))
                    break
            else:
                raise UserError(f"{folder / (stem + '.jpg')}: frame not found (sequence {name} needs "
                                f"frames 00..{n_frames - 1:02d}; re-run rafdb_perturb_dataset.py)")
    return paths


META_KEYS = ("labels", "N", "source", "frames", "seed", "format", "fallback_pad")


def _meta_value(value) -> str:
    text = "unknown" if value is None or value == "" else str(value)
    return "_".join(text.split())  # one token: the line is split on whitespace


def metadata_line(protocol: str, n_sequences: int, frames: int, manifest: dict | None) -> str:
    """``# labels=<protocol> N=<n> source=<...> frames=<n> seed=... format=...`` (one line, no newline).

    ``source``, ``seed``, ``format`` and ``fallback_pad`` come from the perturbed tree's manifest
    parameters; ``unknown`` without a manifest (``fallback_pad`` only for ``source=aligned``).
    """
    params = (manifest or {}).get("params") or {}
    values = {"labels": protocol, "N": n_sequences, "source": params.get("source"), "frames": frames,
              "seed": params.get("seed"), "format": params.get("format")}
    if params.get("source") == "aligned":
        values["fallback_pad"] = params.get("fallback_pad")
    return "# " + " ".join(f"{key}={_meta_value(values[key])}" for key in META_KEYS if key in values)


def method_name(checkpoint: str | Path) -> str:
    """The name eval_perturbed_rafdb2.py gives a checkpoint: its run directory (else its file name)."""
    text = str(checkpoint)
    directory = os.path.dirname(text)
    return os.path.basename(directory) if directory else os.path.basename(text)


def warn_method_collisions(checkpoints_: Sequence[str | Path], earlier: Sequence[str] = ()) -> list[str]:
    """Warn when different checkpoints share a method name; return the colliding names.

    ``earlier`` are checkpoint paths already in the output (``--append``).
    """
    by_name: dict[str, list[str]] = {}
    for path in list(earlier) + [str(path) for path in checkpoints_]:
        paths = by_name.setdefault(method_name(path), [])
        if path not in paths:
            paths.append(path)
    colliding = [name for name, paths in by_name.items() if len(paths) > 1]
    for name in colliding:
        LOG.warning("checkpoints %s share the method name %r (their run directory): "
                    "eval_perturbed_rafdb2.py will name them <run dir>/<checkpoint file name>",
                    ", ".join(by_name[name]), name)
    return colliding


def headers_in(text: str) -> list[str]:
    """The checkpoint fields of the two-field headers of a predictions text."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            fields = line.split(",")
            if len(fields) == 2 and fields[0].strip() not in found:
                found.append(fields[0].strip())
    return found


def format_block(header: str, names: Sequence[str], classes: np.ndarray, rankings: np.ndarray | None,
                 annotate: bool, meta: str | None = None) -> str:
    """One folder's block: header, (metadata comment,) then per sequence its (annotation,) class line
    (and #topk line)."""
    lines = [header] if meta is None else [header, meta]
    for index, name in enumerate(names):
        if annotate:
            lines.append(f"# {name}")
        lines.append(",".join(str(int(value)) for value in classes[index]))
        if rankings is not None:
            lines.append(TOPK_PREFIX + ",".join(":".join(str(int(c)) for c in frame)
                                                for frame in rankings[index]))
    return "\n".join(lines) + "\n"


def evaluate_checkpoint(checkpoint: Path, args: argparse.Namespace, names: Sequence[str],
                        folders: Sequence[tuple[Path, list[str]]], out: TextIO,
                        meta: str | None = None) -> None:
    """Predict every folder's sequences with one checkpoint and write its blocks to ``out``."""
    import metrics
    import input_pipeline

    text = str(checkpoint)
    if "," in text or "\n" in text:
        raise UserError(f"{checkpoint}: the checkpoint path contains a comma or newline, which the "
                        f"predictions format cannot hold; rename or link it")
    classifier = checkpoints.classifier_from_args(checkpoint, args)
    if classifier.crop != "exact":
        LOG.info("%s: crop %s applies to clean/C evaluation only; P frames are resized whole "
                 "(BENCHMARK.md §4.3)", checkpoint, classifier.crop)
    # Batch whole sequences, as the original predicted each sequence's frames as one batch.
    batch = max(1, classifier.batch_size // args.frames) * args.frames
    for folder, paths in folders:
        started = time.perf_counter()
        dataset = input_pipeline.make_dataset(paths, None, image_size=classifier.image_size,
                                              channels=classifier.channels, batch_size=batch,
                                              crop="exact")
        scores = classifier.predict_dataset(dataset, progress=folder.name)
        elapsed = time.perf_counter() - started
        if len(scores) != len(paths):
            raise RuntimeError(f"{folder}: {len(scores)} predictions for {len(paths)} frames")
        scores = scores.reshape(len(names), args.frames, scores.shape[-1])
        classes = np.argmax(scores, axis=-1)  # ties to the lower index, like the rankings
        rankings = metrics.rankings_from_scores(scores)[..., :args.topk] if args.topk else None
        out.write(format_block(f"{checkpoint},{folder}", names, classes, rankings, args.annotate, meta))
        out.flush()
        LOG.info("%s on %s: %d sequences x %d frames in %.1f s (%.0f images/s)", checkpoint.name,
                 folder.name, len(names), args.frames, elapsed, len(paths) / max(elapsed, 1e-9))
    out.write("\n\n")  # the original's two trailing blank lines (BENCHMARK.md §5.4)
    out.flush()


def _topk(text: str) -> int:
    value = positive_int(text)
    if value > rafdb_dataset.NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected 1..{rafdb_dataset.NUM_CLASSES}, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT",
                        help="a .hdf5/.h5/.keras file, a run directory (its best checkpoint) or a "
                             "directory of run directories (every run's best)")
    rafdb_dataset.add_dataset_args(parser)
    group = parser.add_argument_group("perturbed data and output")
    group.add_argument("--perturbed", type=Path, default=Path("perturbed_raf_dataset"),
                       help="folder holding the rafdb.test.p_<name> folders")
    group.add_argument("--perturbations", default=None, metavar="NAMES",
                       help="comma-separated folders to evaluate (p_rotate or rafdb.test.p_rotate), "
                            "in this order. Default: the 10 of BENCHMARK.md §3.3 present, then extras")
    group.add_argument("--frames", type=positive_int, default=30,
                       help="frames per sequence (test_XXXX_00 .. test_XXXX_<frames-1>)")
    group.add_argument("--annotate", action="store_true",
                       help="write '# test_XXXX' before each sequence line")
    group.add_argument("--topk", type=_topk, default=None, metavar="K",
                       help="also write each frame's top-K class ranking on a '#topk' line after "
                            "each sequence (for the top-k distance)")
    group.add_argument("--out", type=Path, default=None,
                       help="write to this file (atomically) instead of standard output")
    group.add_argument("--append", action="store_true",
                       help="with --out: append to the file's current content (still atomic)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    checkpoints.add_checkpoint_args(parser)
    args = parser.parse_args(argv)
    if args.append and args.out is None:
        parser.error("--append needs --out (with standard output use >>)")
    if args.frames < 3:
        parser.error("--frames: at least 3 (a line of 1 or 2 fields is a header in the format)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    labels = rafdb_dataset.load_labels(args.rafdb, "test", args.labels)
    LOG.info("%d test sequences under the %s label protocol (%d of %d dropped by the vote filter)",
             len(labels), labels.protocol, labels.n_dropped, labels.n_total)
    selected = [name.strip() for name in args.perturbations.split(",") if name.strip()] \
        if args.perturbations else None
    folders = perturbation_folders(args.perturbed, selected)
    if "," in str(args.perturbed) or "\n" in str(args.perturbed):
        raise UserError(f"--perturbed {args.perturbed}: the path contains a comma or newline, "
                        f"which the predictions format cannot hold")
    # Check every frame before loading any model: a missing one is an error naming it.
    work = [(folder, frame_paths(folder, labels.names, args.frames)) for folder in folders]
    targets = [path for checkpoint in args.checkpoints for path in checkpoints.find_checkpoints(checkpoint)]
    import dataset_writer

    manifest = dataset_writer.read_manifest(args.perturbed)
    if manifest is None:
        LOG.warning("%s: no manifest.json; the source of the sequences is written as unknown",
                    args.perturbed)
    elif (manifest.get("params") or {}).get("source") == "aligned":
        LOG.warning("%s: source: aligned (BENCHMARK.md §3.6): padded official aligned faces, not the "
                    "landmark-aligned originals", args.perturbed)
    meta = metadata_line(labels.protocol, len(labels), args.frames, manifest)
    earlier = headers_in(args.out.read_text(encoding="utf-8")) \
        if args.append and args.out is not None and args.out.is_file() else []
    warn_method_collisions(targets, earlier)
    LOG.info("%d checkpoint(s) x %d folder(s) x %d sequences x %d frames", len(targets), len(work),
             len(labels), args.frames)
    if args.out is None:
        for checkpoint in targets:
            evaluate_checkpoint(checkpoint, args, labels.names, work, sys.stdout, meta)
        return 0
    with atomic_path(args.out) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            if args.append and args.out.is_file():
                out.write(args.out.read_text(encoding="utf-8"))
            for checkpoint in targets:
                evaluate_checkpoint(checkpoint, args, labels.names, work, out, meta)
    LOG.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
