"""Robustness of a Keras classifier on RAF-DB-C: accuracy per corrupted folder, CE, mCE (docs/BENCHMARK.md §5.1-§5.3).

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
evaluation. ``--baseline`` must have been produced with the same label protocol, N, crop and format
(docs/BENCHMARK.md §5.2); a difference is an error unless ``--baseline-mismatch-ok``. A baseline JSON holding
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

import numpy as np

import checkpoints
import cli_common
import dataset_eval
import datasets
import inference
import rafdb_dataset
import robustness
from cli_common import LOG, UserError
from robustness import COLOURS, MOTION_BACKENDS, Folder


def parse_args(argv: Sequence[str] | None = None):
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None,
                        help="a .hdf5/.h5/.keras checkpoint, a run directory or a directory of runs "
                             "(not with --merge)")
    parser.add_argument("results_file", nargs="?", type=Path, default=None,
                        help="text file to which the report block is appended (as the original, "
                             "but atomically); not a checkpoint or a directory: to evaluate several "
                             "checkpoints, give a directory of runs as CHECKPOINT")
    datasets.add_dataset_args(parser)
    group = parser.add_argument_group("RAF-DB-C")
    group.add_argument("--corrupted", type=Path, default=None,
                       help="root of the exported corrupted sets (default corrupted_raf_dataset; "
                            "corrupted_dataset for --dataset ferplus/fer2013, as the original)")
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
                            "(a warning instead of an error; docs/BENCHMARK.md §5.2 asks for the same)")
    group.add_argument("--json", type=Path, default=None,
                       help="write all results as JSON (rewritten atomically after each run)")
    group.add_argument("--csv", type=Path, default=None,
                       help="write one row per evaluated folder (and a summary row per model) as CSV")
    group.add_argument("--plot", type=Path, default=None,
                       help="write a PNG of accuracy against severity per corruption")
    group.add_argument("--save-probabilities", type=Path, default=None, metavar="FILE.npz",
                       help="write every image's probability row (checkpoint, folder, image id, "
                            "7 probabilities in RAF-DB order) as a .npz")
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
    args = parser.parse_args(argv)
    if args.merge is not None and (args.checkpoint is not None or args.shard is not None):
        parser.error("--merge takes shard JSON files instead of a CHECKPOINT (and no --shard)")
    if args.predictions is not None and (args.checkpoint is not None or args.merge is not None):
        parser.error("--predictions FILE.csv replaces CHECKPOINT (and is not used with --merge)")
    if args.merge is None and args.checkpoint is None and args.predictions is None:
        parser.error("the following arguments are required: checkpoint (or --merge JSON ..., "
                     "or --predictions FILE.csv)")
    if args.corrupted is None:
        args.corrupted = Path("corrupted_dataset" if args.dataset in ("ferplus", "fer2013")
                              else "corrupted_raf_dataset")
    return args


def add_set_args(group) -> None:
    """--corruption-set, --corrupted-extra and --param-set (docs/BENCHMARK.md §2.9, §11.1)."""
    import corruptions
    import corruptions_imagenet

    group.add_argument("--corruption-set", choices=tuple(corruptions.CORRUPTION_SETS), default="rafdb",
                       help="which corruptions (default rafdb, the 18 of the mCE): "
                            + "; ".join(f"{name}: {text}" for name, text in
                                        corruptions.CORRUPTION_SETS.items())
                            + ". The report gives one mCE line per set; the 18's never change")
    group.add_argument("--corrupted-extra", type=Path, default=Path("corrupted_raf_dataset_extra"),
                       help="root of the exported tree of the imagenet-extra and face sets "
                            "(rafdb_aug_dataset.py export --corruption-set ...)")
    group.add_argument("--param-set", choices=corruptions_imagenet.PARAM_SETS, default=None,
                       help="on the fly, with ImageNet-C extras: their parameter set, as the "
                            "export's --param-set (no default; docs/BENCHMARK.md §2.9). A tree's "
                            "comes from its manifest")


def find_set_folders(args, labels, pairs, fmt):
    """The exported folders of ``pairs``: the 18 under --corrupted, the others under
    --corrupted-extra; returns (folders, manifest of --corrupted, manifest of --corrupted-extra)."""
    import dataset_writer

    manifests, folders = {}, {}
    for key, root in (("rafdb", args.corrupted), ("extra", args.corrupted_extra)):
        wanted = [pair for pair in pairs if (robustness.set_of(pair[0]) == "rafdb") == (key == "rafdb")]
        manifests[key] = dataset_writer.read_manifest(root) if wanted and root.is_dir() else None
        if wanted:
            folders[key] = robustness.find_exported_folders(
                root, labels.names, wanted, fmt or (manifests[key] or {}).get("params", {}).get("format"),
                args.allow_missing)
    ordered = {(folder.corruption, folder.severity): folder for group in folders.values()
               for folder in group}
    return ([ordered[pair] for pair in pairs if pair in ordered], manifests["rafdb"],
            manifests["extra"])


def predictions_classifier(args, clean_paths):
    """The PredictionsClassifier of --predictions: paths relative to the evaluated tree (the 18's
    --corrupted, or --corrupted-extra for another set), clean images under clean/."""
    import predictions_file

    if args.on_the_fly:
        raise UserError("--predictions: predictions files score an exported tree; not with --on-the-fly")
    if args.corruption_set == "all":
        raise UserError("--predictions: choose one --corruption-set (rafdb, imagenet-extra or face): "
                        "the paths of a predictions file are relative to one tree")
    root = args.corrupted if args.corruption_set == "rafdb" else args.corrupted_extra
    return predictions_file.PredictionsClassifier(args.predictions, root, clean_paths[0].parent,
                                                  batch_size=args.batch)


def load_baseline(args):
    if args.baseline_method is not None and args.baseline is None:
        raise UserError("--baseline-method needs --baseline")
    return robustness.load_baseline(args.baseline, args.baseline_method) if args.baseline else None


def write_outputs(args, results: list[dict]) -> None:
    """--json, --csv and --plot for every run so far (each written atomically)."""
    for path, write in ((args.json, robustness.write_json), (args.csv, robustness.write_csv),
                        (args.plot, robustness.write_plot)):
        if path is not None:
            write(path, results)
            LOG.info("wrote %s", path)


def merge(args) -> int:
    baseline = load_baseline(args)
    results = robustness.merge_results(args.merge, baseline, args.baseline, args.baseline_method,
                                       args.baseline_mismatch_ok)
    for result in results:
        sys.stdout.write(robustness.report_block(result["checkpoint"]["checkpoint"], result["folders"]))
        sys.stdout.write(robustness.summary_table(result) + "\n")
    write_outputs(args, results)
    return 0


def read_dataset(args):
    """The evaluated test images and their labels (the one place this script reads RAF-DB)."""
    return rafdb_dataset.load_labels(args.rafdb, "test", args.labels, allow_missing=args.allow_missing)


def other_dataset(args, pairs):
    """FER2013/FER+ or a folder dataset (docs/DATASETS.md): (labels, clean, folders, format, info)."""
    if args.on_the_fly:
        raise UserError(f"--on-the-fly: RAF-DB only; export --dataset {args.dataset} with "
                        "ferplus_aug_dataset.py export and give --corrupted")
    data = dataset_eval.open_for_eval(args)
    args.data = data.root  # recorded in the JSON (``rafdb`` key: the evaluated dataset's root)
    # Every image, before a model's classes are known (each model's are applied in model_units).
    evaluated = dataset_eval.evaluation_labels(data, "test", data.class_names)
    clean, folders, fmt = dataset_eval.corrupted_units(data, evaluated.labels, args.corrupted, pairs,
                                                       args.allow_missing)
    return evaluated.labels, clean, folders, fmt, evaluated, data


def model_units(args, data, classifier, pairs, shard):
    """A model's evaluated images on a FER/folder dataset (its classes decide which are left out):
    (EvalLabels, work units)."""
    evaluated = dataset_eval.evaluation_labels(data, "test", classifier.output_names,
                                               args.restrict_to_dataset_classes)
    clean, folders, _ = dataset_eval.corrupted_units(data, evaluated.labels, args.corrupted, pairs,
                                                     args.allow_missing)
    return evaluated, robustness.work_units(clean, folders, shard)


def rafdb_label_rows(args, classifier, labels) -> np.ndarray:
    """RAF-DB's label rows in the classifier's evaluation order (zero columns for its extra outputs)."""
    mapping = classifier.use_classes(rafdb_dataset.CLASS_NAMES, args.restrict_to_dataset_classes)
    if mapping.missing:
        raise UserError(f"--class-order / {classifier.checkpoint_path}: the model cannot output "
                        f"{', '.join(mapping.missing)}; each RAF-DB class must be one of its outputs")
    width = len(classifier.class_names)
    if width == labels.labels.shape[1]:
        return labels.labels
    rows = np.zeros((len(labels), width), labels.labels.dtype)
    rows[:, :labels.labels.shape[1]] = labels.labels
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging(args.verbose)
    logging.captureWarnings(True)  # metrics.py warns (NaN ratios) through the warnings module
    if args.merge is not None:
        return merge(args)
    names_c = robustness.parse_corruptions(args.corruptions, args.corruption_set)
    import corruptions

    needs_param_set = corruptions.needs_param_set(names_c)
    if args.param_set is not None and not (args.on_the_fly and needs_param_set):
        raise UserError("--param-set: only for ImageNet-C extras evaluated --on-the-fly (a tree's "
                        "parameter set comes from its manifest)")
    if args.on_the_fly and needs_param_set and args.param_set is None:
        raise UserError("--param-set: required with --on-the-fly when ImageNet-C extras are "
                        "evaluated (imagenet224, imagenet64 or scaled; docs/BENCHMARK.md §2.9)")
    severities = robustness.parse_severities(args.severities)
    shard = robustness.parse_shard(args.shard)
    pairs = [(corruption, severity) for corruption in names_c for severity in severities]
    checkpoint_files = ([args.predictions] if args.predictions is not None
                        else checkpoints.find_checkpoints(args.checkpoint))
    if args.results_file is not None:
        robustness.check_results_file(args.results_file)
    baseline = load_baseline(args)

    dataset_eval.resolve_rafdb_args(args)
    evaluated = None
    if args.dataset != "rafdb":
        labels, clean, folders, fmt, evaluated, data = other_dataset(args, pairs)
        clean_paths = None
    else:
        labels = read_dataset(args)
        clean_paths = labels.aligned_paths(args.rafdb)
        all_present = np.ones(len(labels), bool)
        clean = Folder(None, 0, robustness.folder_label(args.rafdb, rafdb_dataset.ALIGNED_DIR),
                       clean_paths, all_present)
    LOG.info("%d test images under the %s label protocol (%d of %d dropped by the vote filter)",
             len(labels), labels.protocol, labels.n_dropped, labels.n_total)
    if evaluated is not None:
        LOG.info("%s", evaluated.report_line())

    manifest, manifest_extra, on_the_fly = None, None, None
    roots = {name: args.corrupted if name == "rafdb" else args.corrupted_extra
             for name in robustness.CORRUPTION_SET_ORDER}
    if evaluated is not None:
        import dataset_writer

        manifest = dataset_writer.read_manifest(args.corrupted)
        source = {"on_the_fly": False, "format": fmt,
                  **{key: (manifest or {}).get("params", {}).get(key) for key in ("seed", "motion_backend")}}
    elif args.on_the_fly:
        fmt = args.format or "jpg"
        folders = [Folder(c, s, robustness.folder_label(roots[robustness.set_of(c)],
                                                        f"rafdb.test.{c}.{s}"),
                          None, all_present) for c, s in pairs]
        source = {"on_the_fly": True, "seed": args.seed, "format": fmt,
                  "motion_backend": args.motion_backend, "colour": args.colour,
                  **({"param_set": args.param_set} if args.param_set else {})}
        if args.motion_backend == "wand" and any("motion" in c for c in names_c):
            import corruptions

            check = getattr(corruptions, "check_wand", None)
            if check is not None:
                check()
    else:
        folders, manifest, manifest_extra = find_set_folders(args, labels, pairs, args.format)
        fmt = args.format or ((manifest or manifest_extra or {}).get("params", {}).get("format"))
        if fmt is None:
            suffixes = {folder.paths[0].suffix for folder in folders if folder.paths}
            fmt = "png" if suffixes == {".png"} else "jpg" if suffixes <= {".jpg"} else "mixed"
        source = {"on_the_fly": False, "format": fmt,
                  **{key: (manifest or manifest_extra or {}).get("params", {}).get(key)
                     for key in ("seed", "motion_backend", "colour")}}
        if manifest_extra is not None and manifest_extra.get("params", {}).get("extra_param_set"):
            source["param_set"] = manifest_extra["params"]["extra_param_set"]
        for root, found in ((args.corrupted, manifest), (args.corrupted_extra, manifest_extra)):
            used = any(str(folder.label).startswith(str(root)) for folder in folders)
            if found is None and used:
                LOG.warning("%s: no manifest.json; the export's parameters are unknown", root)
    units = robustness.work_units(clean, folders, shard)
    if shard is not None:
        LOG.info("shard %d/%d: %d of %d folder(s)", shard[0], shard[1], len(units), 1 + len(folders))
    if baseline is not None:  # everything but the crop is known before loading a model
        robustness.check_baseline(baseline, args.baseline,
                                  {"protocol": labels.protocol, "N": len(labels), "format": fmt},
                                  args.baseline_mismatch_ok)
    if args.on_the_fly and any(unit.paths is None for unit in units):
        on_the_fly = robustness.OnTheFly(clean_paths, seed=args.seed, fmt=fmt,
                                         motion_backend=args.motion_backend, colour=args.colour,
                                         workers=args.workers,
                                         param_set=args.param_set)  # forks before TensorFlow starts
    label_counts = {"protocol": labels.protocol, "n": len(labels), "n_total": labels.n_total,
                    "n_dropped": labels.n_dropped, "n_missing": labels.n_missing}
    manifest_kept = (robustness.manifest_summary(args.corrupted, manifest) if manifest is not None
                     or manifest_extra is None
                     else robustness.manifest_summary(args.corrupted_extra, manifest_extra))

    results, probabilities = [], []
    try:
        for checkpoint_file in checkpoint_files:
            classifier = (predictions_classifier(args, clean_paths) if args.predictions is not None
                          else checkpoints.classifier_from_args(checkpoint_file, args))
            if baseline is not None:
                robustness.check_baseline(baseline, args.baseline, {"crop": classifier.crop},
                                          args.baseline_mismatch_ok)
            if evaluated is not None:
                classifier.use_classes(data.class_names, args.restrict_to_dataset_classes)
                evaluated, units = model_units(args, data, classifier, pairs, shard)
                labels = evaluated.labels
                label_counts = {"protocol": labels.protocol, "n": len(labels), "n_total": labels.n_total,
                                "n_dropped": labels.n_dropped, "n_missing": labels.n_missing}
                label_rows = labels.labels
            else:
                label_rows = rafdb_label_rows(args, classifier, labels)
            runner = inference.runner_from_args(classifier, args)
            evaluation = robustness.evaluate(runner, units, label_rows, labels.names, on_the_fly,
                                             keep_probabilities=args.save_probabilities is not None)
            if args.predictions is not None and classifier.unused():
                unused = classifier.unused()
                LOG.warning("%s: %d line(s) not used by this evaluation, e.g. %s", args.predictions,
                            len(unused), unused[0])
            block = robustness.report_block(str(checkpoint_file), evaluation.rows)
            sys.stdout.write(block)
            sys.stdout.flush()
            if args.results_file is not None:
                robustness.append_atomically(args.results_file, block)
            result = robustness.make_result(
                checkpoint=classifier.describe(), labels=label_counts,
                rafdb=args.rafdb if evaluated is None else args.data,
                corrupted=args.corrupted, fmt=fmt, on_the_fly=args.on_the_fly, source=source,
                manifest=manifest_kept, corruptions=names_c, severities=severities,
                rows=evaluation.rows, baseline=baseline, baseline_path=args.baseline,
                baseline_method=args.baseline_method, mismatch_ok=args.baseline_mismatch_ok,
                runtime=runner.describe(), shard=shard, seconds=evaluation.seconds,
                images=evaluation.images, adapt_images=evaluation.adapt_images,
                corruption_set=args.corruption_set,
                corrupted_extra=args.corrupted_extra if args.corruption_set != "rafdb" else None)
            result.update(evaluated.describe() if evaluated is not None
                          else {"dataset": "rafdb", "split": "test", "n_unmapped": 0, "unmapped_classes": [],
                                "classes": list(classifier.class_names)})
            if result["summary"] is not None:
                sys.stdout.write(robustness.summary_table(result) + "\n")
                if evaluated is not None:
                    sys.stdout.write(evaluated.report_line() + "\n")
            else:
                sys.stdout.write(f"shard {shard[0]}/{shard[1]}: {evaluation.images} images in "
                                 f"{evaluation.seconds:.1f} s; merge the shards' --json with --merge\n")
            sys.stdout.flush()
            results.append(result)
            write_outputs(args, results)  # after each run: a later bad run loses nothing
            if args.save_probabilities is not None:
                probabilities.append((str(checkpoint_file), evaluation))
                robustness.write_probabilities(args.save_probabilities, probabilities)
                LOG.info("wrote %s", args.save_probabilities)
    finally:
        if on_the_fly is not None:
            on_the_fly.close()
    return 0


if __name__ == "__main__":
    cli_common.run_main(main)
