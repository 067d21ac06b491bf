"""Robustness of a classifier (Keras, ONNX, TFLite, LBP+SVM, or a predictions file) on RAF-DB-C: accuracy per corrupted folder, CE, mCE (docs/BENCHMARK.md §5.1-§5.3).

Prints the original's report block on stdout (and appends it, atomically, to RESULTS_FILE when given):

    Results for: <checkpoint>
    RAF-DB/basic/Image/aligned <accuracy>
    corrupted_raf_dataset/rafdb.test.<corruption>.<severity> <accuracy>     (clean, then docs/BENCHMARK.md §2.3
    ...                                                                      order x severities 1..5)
    <two blank lines>

then a fixed-width summary table: the clean error, per corruption the error at each severity, the
mean over severities, CE and relative CE, mCE and relative mCE (normalised by ``--baseline``, the
``--json`` of another model; without it the unnormalised sums, labelled so), N, the label protocol
and the speed in images/s. Logs and progress go to stderr.

RESULTS_FILE must not be a directory or a checkpoint (``eval_corrupted_rafdb.py run1 run2`` is
refused: give a directory of runs instead) and must be writable; both are checked before any
evaluation, as are ``--json``, ``--csv``, ``--plot`` and ``--save-probabilities`` (not a folder, in a
folder that exists or can be created, writable). ``--baseline`` must have been produced with the same label protocol, N, crop and format
(docs/BENCHMARK.md §5.2); a difference is an error unless ``--baseline-mismatch-ok``. A baseline JSON holding
several models needs ``--baseline-method`` (checkpoint path, run directory name or file name).
``--json`` (strict JSON: NaN is written as null), ``--csv`` and ``--plot`` are rewritten atomically
after each evaluated checkpoint, so a failing run in a directory of runs loses none before it.

CHECKPOINT is a model file (.hdf5/.h5/.keras, .onnx, .tflite, .skops; docs/MODELS.md), a run
directory or a directory of runs (every run's best checkpoint is evaluated). Input size and channels come from the model; preprocessing, crop and class
order from run.json beside the checkpoint or from the checkpoint flags (see checkpoints.py).

The evaluated list is the test split under the label protocol: ``--labels soft`` (default) keeps the
vote-filtered subset, ``--labels hard`` all test images. The file of image test_0001 in a corrupted
folder is test_0001_aligned.jpg (or .png for a PNG export). ``--on-the-fly`` needs no exported tree:
the aligned test images are corrupted in memory with the export's per-image seeds and, by default,
its JPEG round trip, so the accuracies equal those of an exported tree with the same parameters.

Scale (docs/BENCHMARK.md §11.6): ``--shard i/N`` evaluates the work units i, i+N, ... of the list
(clean, then every corruption x severity in canonical order), so N array-job tasks share one
evaluation; each writes its own ``--json``, and ``--merge a.json b.json ... --json all.json [--csv
all.csv] [--plot all.png] [--baseline ...]`` gives the report one run over every unit gives (rows
in canonical order, summary recomputed, timing summed). ``--distribute mirrored`` splits each batch
over the visible GPUs, ``--mixed-precision`` computes in float16, ``--jit`` compiles with XLA.

Calibration (docs/BENCHMARK.md §11.3): per folder the JSON holds ECE (15 bins, top-1), NLL and
Brier against the protocol's labels (soft under --labels soft), per-class recall and the confusion
matrix; the summary shows the mean ECE over the corrupted folders next to mCE.
``--save-probabilities FILE.npz`` keeps every image's probability row with its folder and id.

Adaptation (docs/BENCHMARK.md §11.2): ``--adapt bn`` re-estimates the BatchNorm statistics on each
folder (one extra pass, on a copy of the model; ``--adapt-prior N`` mixes in the source statistics);
the report says ADAPTED and the JSON/CSV carry ``adapted``.

Other datasets (docs/DATASETS.md): ``--dataset ferplus|fer2013|folder --data DIR --corrupted EXPORT``
reads the export of ``ferplus_aug_dataset.py``/``rafdb_aug_dataset.py export --dataset ...`` (PNG/JPEG
folders or ``--format fer-csv`` files); the model's classes are matched to the dataset's by name and
test images of classes it cannot output are left out, counted in the report and the JSON (``dataset``,
``split``, ``n_unmapped``). ``eval_corrupted_fer2013.py`` is this with ``--dataset ferplus``.
Corruption sets (docs/BENCHMARK.md §2.9, §11.1): ``--corruption-set rafdb`` (default: the 18),
``imagenet-extra``, ``face`` or ``all``; ``--corruptions all`` means the whole set. The extra sets'
folders are read under ``--corrupted-extra`` (default corrupted_raf_dataset_extra, where
``rafdb_aug_dataset.py export --corruption-set ...`` writes them); on the fly, ImageNet-C extras need
``--param-set`` as the export did. The headline mCE stays over the 18 whenever they are evaluated,
so extras never change it; the table, JSON (``summary.sets``) and CSV (``summary:<set>`` rows) add
one mCE line per set.

Predictions files (docs/BENCHMARK.md §11.4): ``--predictions FILE.csv`` instead of CHECKPOINT scores
predictions made by any framework over the exported tree (format in predictions_file.py and
docs/MODELS.md); the report is the one a model making those predictions gets.

Examples:

    python3 eval_corrupted_rafdb.py out_training_fer/run/checkpoint.12.hdf5 results.txt --json r.json
    python3 eval_corrupted_rafdb.py fer_run/ --dataset fer2013 --data FERPlus --corrupted corrupted_dataset
    python3 eval_corrupted_rafdb.py other.hdf5 --baseline r.json --plot other.png
    python3 eval_corrupted_rafdb.py fer2013_model.hdf5 --preprocessing scale-1-1 --class-order fer2013
    python3 eval_corrupted_rafdb.py model.keras --on-the-fly --corruptions gaussian_noise --severities 1-2
    python3 eval_corrupted_rafdb.py model.keras --shard 0/4 --json part0.json   # ... 3/4
    python3 eval_corrupted_rafdb.py --merge part0.json part1.json part2.json part3.json --json all.json
    python3 eval_corrupted_rafdb.py model.keras --adapt bn --save-probabilities p.npz --json r.json
    python3 eval_corrupted_rafdb.py model.keras --corruption-set all --json r.json   # 18 + extras
    python3 eval_corrupted_rafdb.py --predictions torch_model.csv --json r.json
    python3 eval_corrupted_rafdb.py lbp_svm.skops --on-the-fly --corruptions contrast --severities 3
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence


import checkpoints
import cli_common
import dataset_writer
import datasets
import fer_export
import inference
import rafdb_dataset
import robustness_run
from cli_common import UserError
from robustness import COLOURS, MOTION_BACKENDS

LOG = logging.getLogger("fer.eval_corrupted")


def _results_file_like(path: Path) -> bool:
    """Whether a positional given with --predictions can be a RESULTS_FILE: not a folder and not named
    like a model file (those would be a CHECKPOINT, which --predictions replaces)."""
    import model_files

    suffix = path.suffix.lower()
    return not path.is_dir() and suffix not in (model_files.MODEL_SUFFIXES + model_files.PICKLE_SUFFIXES
                                                + model_files.PYTORCH_SUFFIXES + DATA_SUFFIXES)


# The flags that act on a --merge; any other one given with it is refused (it would be ignored).
MERGE_FLAGS = frozenset({"merge", "json", "csv", "plot", "baseline", "baseline_method", "baseline_mismatch_ok",
                         "verbose"})


# A positional with one of these suffixes is not taken for a RESULTS_FILE beside --predictions: the
# report block would be appended to a data file (another predictions CSV, a results JSON).
DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".npz", ".npy", ".tsv")


def parse_args(argv: Sequence[str] | None = None):
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None,
                        help="a model file (.hdf5/.h5/.keras/.onnx/.tflite/.skops), a run directory or a "
                             "directory of runs (not with --merge)")
    parser.add_argument("results_file", nargs="?", type=Path, default=None,
                        help="text file to which the report block is appended (as the original, "
                             "but atomically); not a checkpoint or a directory: to evaluate several "
                             "checkpoints, give a directory of runs as CHECKPOINT")
    datasets.add_dataset_args(parser)
    group = parser.add_argument_group("RAF-DB-C")
    group.add_argument("--corrupted", type=Path, default=None,
                       help="root of the exported corrupted sets (default where rafdb_aug_dataset.py "
                            "export writes: corrupted_raf_dataset; corrupted_dataset for --dataset "
                            "ferplus/fer2013, as the original; <name of --data>-c for --dataset folder)")
    group.add_argument("--corruptions", default="all",
                       help="'all' (the whole --corruption-set) or a comma-separated list of its "
                            "corruption names")
    add_set_args(group)
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
    # None: not given (the defaults below apply on the fly; an exported tree is checked against them)
    group.add_argument("--seed", type=cli_common.seed_int, default=None, help="export seed (on the fly; default 0)")
    group.add_argument("--motion-backend", choices=MOTION_BACKENDS, default=None,
                       help="motion blur backend (on the fly), as the export's (default numpy)")
    group.add_argument("--colour", choices=COLOURS, default=None,
                       help="colour mode (on the fly), as the export's (default rgb)")
    group.add_argument("--workers", type=dataset_writer.workers_type, default=None,
                       help="processes corrupting images on the fly (default or 0: all cores; 1: "
                            "in this process), as for the exports")
    group = parser.add_argument_group("results")
    group.add_argument("--baseline", type=Path, default=None,
                       help="results JSON (from --json) of the reference model normalising CE/mCE; "
                            "it must have this evaluation's protocol, N, crop and format")
    group.add_argument("--baseline-method", default=None, metavar="NAME",
                       help="the model to use in a --baseline JSON holding several: its checkpoint "
                            "path, run directory name or checkpoint file name")
    group.add_argument("--baseline-mismatch-ok", action="store_true",
                       help="accept a --baseline with a different protocol, N, crop or format "
                            "(a warning instead of an error; docs/BENCHMARK.md §5.2 asks for the same)")
    group.add_argument("--json", type=Path, default=None,
                       help="write all results as JSON (rewritten atomically after each run)")
    group.add_argument("--csv", type=Path, default=None,
                       help="write one row per evaluated folder (and a summary row per model) as CSV")
    group.add_argument("--plot", type=Path, default=None,
                       help="write a figure of accuracy against severity per corruption: PNG, PDF or "
                            "SVG by the file name's suffix (.png, .pdf, .svg)")
    group.add_argument("--save-probabilities", type=Path, default=None, metavar="FILE.npz",
                       help="write every image's probability row (checkpoint, folder, image id, one "
                            "probability per class in the evaluation order: the dataset's classes, then any "
                            "the model adds; the JSON's 'classes') as a .npz")
    group = parser.add_argument_group("predictions files (docs/BENCHMARK.md §11.4)")
    group.add_argument("--predictions", type=Path, default=None, metavar="FILE.csv",
                       help="score predictions made by any framework over the exported tree "
                            "instead of a CHECKPOINT: a CSV 'path,class' or 'path,p0,...,p6' with "
                            "paths relative to the tree (clean images as clean/<file>; see "
                            "docs/MODELS.md); not with --on-the-fly")
    group = parser.add_argument_group("sharding (cluster array jobs)")
    group.add_argument("--shard", default=None, metavar="i/N",
                       help="evaluate only work units i, i+N, ... (units: clean, then each "
                            "corruption x severity); merge the shards' --json with --merge")
    group.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                       help="merge the --json files of the N shards into one report (no "
                            "CHECKPOINT; --json/--csv/--plot/--baseline apply to the merge)")
    inference.add_runner_args(parser)
    checkpoints.add_checkpoint_args(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.merge is not None and (args.checkpoint is not None or args.shard is not None):
        parser.error("--merge takes shard JSON files instead of a CHECKPOINT (and no --shard)")
    if args.merge is not None and (ignored := cli_common.explicit_flags(parser, argv) - MERGE_FLAGS):
        names = ", ".join(sorted("--" + name.replace("_", "-") for name in ignored))
        probabilities = ": each shard writes its own --save-probabilities .npz" if "save_probabilities" in ignored else ""
        parser.error(f"{names}: not used by --merge, which combines finished shard results (give "
                     f"{'it' if len(ignored) == 1 else 'them'} to the shard runs{probabilities}). --merge takes "
                     f"{', '.join(sorted('--' + name.replace('_', '-') for name in MERGE_FLAGS - {'merge'}))}")
    if args.predictions is not None and args.checkpoint is not None and args.results_file is None \
            and args.merge is None and _results_file_like(args.checkpoint):
        # With --predictions there is no CHECKPOINT: the one positional is the RESULTS_FILE.
        args.results_file, args.checkpoint = args.checkpoint, None
    if args.predictions is not None and (args.checkpoint is not None or args.merge is not None):
        if args.checkpoint is not None and args.results_file is not None:
            given = (f": give at most one positional, a text RESULTS_FILE (got {args.checkpoint} and "
                     f"{args.results_file})")
        elif args.checkpoint is not None:
            given = (f": {args.checkpoint} is a model file, a folder or a data file, not a text RESULTS_FILE; "
                     f"leave it out")
        else:
            given = ""
        parser.error(f"--predictions FILE.csv replaces CHECKPOINT (and is not used with --merge){given}")
    if args.merge is None and args.checkpoint is None and args.predictions is None:
        parser.error("the following arguments are required: checkpoint (or --merge JSON ..., "
                     "or --predictions FILE.csv)")
    resolve_trees(args)
    return args


def _exports_all(root: Path) -> bool:
    """Whether ``root`` holds an export of ``--corruption-set all`` (the 18 and the held-out sets in
    one tree, as ``rafdb_aug_dataset.py export --corruption-set all`` writes them)."""
    try:
        manifest = dataset_writer.read_manifest(root) if root.is_dir() else None
    except UserError:
        return False  # read again, and reported, where the tree is used
    return ((manifest or {}).get("params") or {}).get("corruption_set") == "all"


def resolve_trees(args) -> None:
    """--corrupted (the 18) and --corrupted-extra (the held-out sets) where not given: the exports'
    own defaults, except that an export of --corruption-set all holds both: with --corruption-set all,
    such a tree given as one of the two is also the other; given neither, it is read for the 18 too
    when no tree of the 18 is at that one's default place."""
    given, given_extra = args.corrupted is not None, args.corrupted_extra is not None
    if not given:  # the export's own default for the dataset
        args.corrupted = fer_export.default_corrupted(args.dataset, args.data)
    if not given_extra:
        args.corrupted_extra = Path(fer_export.DEFAULT_CORRUPTED_EXTRA)
    if args.corruption_set != "all" or args.dataset != "rafdb" or (given and given_extra):
        return
    if given and _exports_all(args.corrupted):
        args.corrupted_extra = args.corrupted
    elif given_extra and _exports_all(args.corrupted_extra):
        args.corrupted = args.corrupted_extra
    elif not given and not args.corrupted.is_dir() and _exports_all(args.corrupted_extra):
        # neither given and no tree of the 18 at its default place: the export's default for all
        args.corrupted = args.corrupted_extra
    else:
        return
    LOG.info("--corruption-set all: %s holds an export of every set; the 18 and the held-out sets are read "
             "from it", args.corrupted)


def add_set_args(group) -> None:
    """--corruption-set, --corrupted-extra and --param-set (docs/BENCHMARK.md §2.9, §11.1)."""
    import corruptions
    import corruptions_imagenet

    group.add_argument("--corruption-set", choices=tuple(corruptions.CORRUPTION_SETS), default="rafdb",
                       help="which corruptions (default rafdb, the 18 of the mCE): "
                            + "; ".join(f"{name}: {text}" for name, text in
                                        corruptions.CORRUPTION_SETS.items())
                            + ". The report gives one mCE line per set; the 18's never change")
    group.add_argument("--corrupted-extra", type=Path, default=None,
                       help=f"root of the exported tree of the imagenet-extra and face sets "
                            f"(rafdb_aug_dataset.py export --corruption-set ...; default "
                            f"{fer_export.DEFAULT_CORRUPTED_EXTRA}). "
                            f"With --corruption-set all, a tree exported with --corruption-set all holds "
                            f"the 18 too: it is read for both when it is the one tree given (or found)")
    group.add_argument("--param-set", choices=corruptions_imagenet.PARAM_SETS, default=None,
                       help="on the fly, with ImageNet-C extras: their parameter set, as the "
                            "export's --param-set (no default; docs/BENCHMARK.md §2.9). A tree's "
                            "comes from its manifest")



def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging(args.verbose)  # metrics.py's warnings (NaN ratios) become log lines
    return robustness_run.run(args)


if __name__ == "__main__":
    cli_common.run_main(main)
