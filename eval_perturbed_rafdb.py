"""Predict every RAF-DB-P sequence with one or more checkpoints; write the predictions file (docs/BENCHMARK.md §5.4).

For every checkpoint (a model file: ``.hdf5``/``.h5``/``.keras``, ``.tflite``, ``.onnx`` or ``.skops``
(docs/MODELS.md); a run directory or a directory of runs: every run's best checkpoint) and every perturbation folder under ``--perturbed`` (the 10 of docs/BENCHMARK.md
§3.3 in canonical order, then any other ``rafdb.*`` folder present, sorted), this writes the
original's text format to standard output (or ``--out FILE``)::

    <checkpoint_path>,<perturbed_dir>/rafdb.test.p_gaussian_noise
    3,3,3,3,3,0,0,3,...          one line per sequence: the class index (0..6, RAF-DB order) of
    ...                          each of its frames 00..29, comma-separated, no spaces
    <checkpoint_path>,<perturbed_dir>/rafdb.test.p_shot_noise
    ...                          (no blank lines at the end: see below)

The sequences are the RAF-DB test images of the label protocol, in its order (``--labels soft``:
the rows of ``distribute_basic.csv`` kept by the vote filter; ``hard``: every test image of
``list_patition_label.txt``). Frames are ``<folder>/test_XXXX_NN.jpg`` (or ``.png``); a missing
frame is an error naming it. Each frame is resized whole to the model's input (no 99 px cut: docs/BENCHMARK.md
§4.3), converted to grey for one-channel models, and preprocessed as ``checkpoints.py`` decides from
``run.json`` and the flags (the same adaptation as ``eval_corrupted_rafdb.py``).

Logs and progress bars go to standard error only, so ``> predictions.txt`` captures exactly the
predictions and ``>>`` appends further checkpoints to the same file. ``eval_perturbed_rafdb2.py``
reads the file.

Extensions the original reader ignores (every extra line starts with ``#``):

- Right after each header, a metadata comment with the label protocol, the number of sequences, the
  perturbed tree's source (docs/BENCHMARK.md §3.6: ``aligned`` must be visible in every report), frames,
  the evaluation settings that change the predictions and the model file's SHA-256 (one line)::

      # labels=soft N=285 source=landmarks frames=30 seed=0 format=jpg preprocessing=full_normalization+in_model
        input=100x100x3 class_order=surprise,fear,disgust,happiness,sadness,anger,neutral model_sha256=... ends=1

  ``source``, ``seed``, ``format`` (and ``fallback_pad`` for ``source=aligned``) come from the
  tree's ``manifest.json``; without one they are ``unknown``. ``eval_perturbed_rafdb2.py`` shows
  N, the protocol and the source in its summary and JSON, and checks N against the block. The
  settings (docs/BENCHMARK.md §5.4): ``preprocessing`` (the computation's canonical token, ``checkpoints.preprocessing_setting``;
  a project checkpoint trained with the defaults: ``full_normalization+in_model``), ``input``
  HxWxC, ``class_order`` (the model's outputs, canonical names), ``restrict`` (only for a model
  with outputs beyond the dataset's classes), ``adapted`` (only with ``--adapt``); with
  ``--predictions`` only ``class_order``. ``report.py`` keeps the results of other settings apart.
- ``--annotate`` writes ``# test_XXXX`` before each sequence line.
- ``--topk K`` writes, right after each sequence line, its frames' class rankings::

      #topk 3:6:0,3:6:0,3:0:6,...

  one comma-separated field per frame (frames 00..29), each the frame's top K classes from most to
  least probable joined by ``:`` (ties to the lower class index, docs/BENCHMARK.md §5.7). The first class of
  each field is the frame's predicted class. ``eval_perturbed_rafdb2.py`` computes the top-k
  distance from these lines (k <= K; use ``--topk 5`` or ``7`` to report d_2, d_3 and d_5).

Two checkpoints that share a method name (the reader names a method after the checkpoint's run
directory) are warned about; the reader then names each ``<run dir>/<checkpoint file name>``.

Deviations from the original (docs/BENCHMARK.md §5.4, §6 rows 13, 14, 15, 16): no two blank lines after
each checkpoint's blocks (the original's made its own reader divide by zero at the end of the file;
without them the original reader accepts this file, comments included, and files concatenate); predictions go to standard output or
``--out`` (the original appended to ``perturbed_predictions/<run dir>.txt`` and printed logs on
stdout); folders come in canonical order, not glob order; a missing frame is an error (the original
silently shortened the sequence); the input size and preprocessing come from the model and
``run.json`` (``--eval-preprocessing legacy-vggface2`` restores the original's input).

Perturbation sets (docs/BENCHMARK.md §3.7): ``--perturbation-set rafdb|imagenet-extra|all`` predicts
the folders of that set present under ``--perturbed`` (default: the 10, then any other folder);
``eval_perturbed_rafdb2.py`` keeps mFP over the 10 and adds one mFP (and mFR) line per set.

Scale and adaptation (docs/BENCHMARK.md §11.2, §11.6): ``--shard i/N`` predicts only the
perturbation folders i, i+N, ...; the N shard files concatenated (``cat p0.txt p1.txt ... >
all.txt``) give the reader the same results as one run. ``--distribute mirrored``,
``--mixed-precision``, ``--jit`` and ``--adapt bn [--adapt-prior N]`` work as in
``eval_corrupted_rafdb.py``; with ``--adapt bn`` the metadata comment says ``adapted=bn``.
``--save-probabilities FILE.npz`` keeps every frame's probability row (checkpoint, folder, frame id);
``--json FILE`` writes per checkpoint and folder the frame accuracy and calibration (ECE, NLL,
Brier, per-class recall, confusion; each frame carries its sequence's label).
``--out``, ``--json`` and ``--save-probabilities`` are checked before any model is loaded: not a
folder, in a folder that exists or can be created, writable.

Other datasets (docs/DATASETS.md): ``--dataset ferplus|fer2013|folder --data DIR`` with ``--perturbed``
holding the export of ``rafdb_perturb_dataset.py export --dataset ...``
(``<fer2013|name>.<split>.p_<name>/<stem>_NN.png``); the sequences are the test images whose class
the model outputs (matched by name), and the block header names the export's folder.

Example::

    python3 eval_perturbed_rafdb.py out_training_fer/ > predictions.txt
    python3 eval_perturbed_rafdb.py fer_run/ --dataset fer2013 --data FERPlus --perturbed fer-p/ > fer_p.txt
    python3 eval_perturbed_rafdb.py other_run/checkpoint.12.hdf5 --topk 5 >> predictions.txt
    python3 eval_perturbed_rafdb2.py predictions.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence


import checkpoints
import datasets
import inference
import rafdb_dataset
import stability_run
from cli_common import ArgumentParser, positive_int, run_main, setup_logging


def _topk(text: str) -> int:
    value = positive_int(text)
    if value > rafdb_dataset.NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected 1..{rafdb_dataset.NUM_CLASSES}, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="*", type=Path, metavar="CHECKPOINT",
                        help="a model file (.hdf5/.h5/.keras/.tflite/.onnx/.skops), a run directory (its "
                             "best checkpoint) or a directory of run directories (every run's best)")
    parser.add_argument("--predictions", type=Path, default=None, metavar="FILE.csv",
                        help="instead of CHECKPOINT: predictions made by any framework for every frame, "
                             "header path,class or path,p0,...; paths relative to --perturbed "
                             "(rafdb.test.p_rotate/test_0001_00.jpg; docs/BENCHMARK.md §11.4)")
    datasets.add_dataset_args(parser)
    group = parser.add_argument_group("perturbed data and output")
    group.add_argument("--perturbed", type=Path, default=None,
                       help="folder holding the rafdb.test.p_<name> folders (other datasets: "
                            "<fer2013|folder name>.<split>.p_<name>, docs/DATASETS.md); default where "
                            "rafdb_perturb_dataset.py export writes: perturbed_raf_dataset, or "
                            "perturbed_dataset with another --dataset")
    group.add_argument("--perturbations", default=None, metavar="NAMES",
                       help="comma-separated folders to evaluate (p_rotate or rafdb.test.p_rotate), "
                            "in this order. Default: the 10 of docs/BENCHMARK.md §3.3 present, then extras")
    group.add_argument("--perturbation-set", default=None,
                       choices=("rafdb", "imagenet-extra", "all"),
                       help="evaluate the folders of this set present under --perturbed: rafdb (the "
                            "10 of mFP), imagenet-extra (p_zoom_blur, p_snow, p_tilt, "
                            "p_speckle_noise; docs/BENCHMARK.md §3.7) or all. Default: the 10, then "
                            "any other folder present; --perturbations overrides it")
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
    group.add_argument("--shard", default=None, metavar="i/N",
                       help="predict only the perturbation folders i, i+N, ... (concatenate the N "
                            "shard files in any order to get the whole predictions file)")
    group.add_argument("--save-probabilities", type=Path, default=None, metavar="FILE.npz",
                       help="also write every frame's probability row (checkpoint, folder, frame "
                            "id, one probability per class in the evaluation order: the dataset's classes, "
                            "then any the model adds)")
    group.add_argument("--json", type=Path, default=None,
                       help="also write per checkpoint and folder the frame accuracy and calibration "
                            "(ECE, NLL, Brier, per-class recall, confusion; each frame labelled with "
                            "its sequence's label; docs/BENCHMARK.md §11.3)")
    inference.add_runner_args(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    checkpoints.add_checkpoint_args(parser)
    args = parser.parse_args(argv)
    if bool(args.checkpoints) == (args.predictions is not None):
        parser.error("give CHECKPOINT(s) or --predictions FILE.csv (one of the two)")
    if args.append and args.out is None:
        parser.error("--append needs --out (with standard output use >>)")
    if args.frames < 3:
        parser.error("--frames: at least 3 (a line of 1 or 2 fields is a header in the format)")
    if args.perturbed is None:  # the export's own default for the dataset
        import fer_export

        args.perturbed = fer_export.default_perturbed(args.dataset)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    return stability_run.run(args)


if __name__ == "__main__":
    run_main(main)
