"""The RAF-DB-P predictions writer once its arguments are parsed (``eval_perturbed_rafdb.py``'s
``main``): sequences and folders, every checkpoint's predictions in the original's text format,
calibration JSON and probabilities. The library pieces are in stability.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import checkpoints
import dataset_eval
import inference
import perturbations
import rafdb_dataset
import robustness
import stability
from cli_common import UserError, atomic_path, check_output_flags, refuse_outputs_over_inputs
from stability import LOG


def read_dataset(args):
    """The test sequences and their labels (the one place this script reads the dataset)."""
    return rafdb_dataset.load_labels(args.rafdb, "test", args.labels)


def rafdb_label_rows(args, classifier, labels) -> np.ndarray:
    """RAF-DB's label rows in the classifier's evaluation order (zero columns for its extra outputs)."""
    classifier.use_classes(rafdb_dataset.CLASS_NAMES, args.restrict_to_dataset_classes, require_all="RAF-DB")
    rows = np.zeros((len(labels), len(classifier.class_names)), labels.labels.dtype)
    rows[:, :labels.labels.shape[1]] = labels.labels
    return rows


def run(args) -> int:
    """Everything after argument parsing (the script's ``main``)."""
    if args.dataset != "rafdb" and args.perturbation_set not in (None, "rafdb"):  # before anything is read
        raise UserError(f"--perturbation-set {args.perturbation_set}: RAF-DB only; --dataset {args.dataset} "
                        f"is evaluated on the 10 perturbations of RAF-DB-P (docs/DATASETS.md)")
    if args.predictions is not None:
        checkpoints.refuse_model_flags_with_predictions(args)
    inference.check_runner_args(args)  # contradicting flags before any tree or model is looked for
    # Every output first: an unwritable path is an error now, not after the predictions.
    check_output_flags(args, "out", "json", "save_probabilities")
    outputs = [("--" + dest.replace("_", "-"), getattr(args, dest, None))
               for dest in ("out", "json", "save_probabilities")]
    refuse_outputs_over_inputs(outputs)  # two outputs on one file: before anything is read
    # every model file first: a pickle or a missing file is refused before any data is read
    if args.predictions is not None:
        import model_files

        model_files.refuse_pickle(args.predictions)
        if not args.predictions.is_file():
            raise UserError(f"--predictions {args.predictions}: file not found")
        targets = [args.predictions]
    else:
        targets = [path for checkpoint in args.checkpoints for path in checkpoints.find_checkpoints(checkpoint)]
    shard = robustness.parse_shard(args.shard)
    refuse_outputs_over_inputs(
        outputs,
        [("model" if args.predictions is None else "--predictions", path) for path in targets],
        [(flag, getattr(args, dest, None)) for flag, dest in (("--perturbed", "perturbed"), ("--rafdb", "rafdb"),
                                                             ("--data", "data"))])
    dataset_eval.resolve_rafdb_args(args)
    evaluated = None
    if args.dataset != "rafdb":  # FER2013/FER+ or a folder dataset (docs/DATASETS.md)
        data = dataset_eval.open_for_eval(args)
        # Every sequence here; each model's classes decide which are left out (predict_all).
        evaluated = dataset_eval.evaluation_labels(data, "test", data.class_names)
        labels = evaluated.labels
        LOG.info("%s", evaluated.report_line())
    else:
        labels = read_dataset(args)
    LOG.info("%s", labels.count_line("sequences"))
    selected = [name.strip() for name in args.perturbations.split(",") if name.strip()] \
        if args.perturbations else None
    if "," in str(args.perturbed) or "\n" in str(args.perturbed):
        raise UserError(f"--perturbed {args.perturbed}: the path contains a comma or newline, "
                        f"which the predictions format cannot hold")
    sequence_names = labels.names
    import dataset_writer

    # An unfinished export first: its missing frames would otherwise be reported one by one.
    manifest = (dataset_writer.read_finished_manifest(args.perturbed, "p", "--perturbed", args.dataset)
                if args.perturbed.is_dir() else None)
    if manifest is not None and args.frames < perturbations.NUM_FRAMES:  # an export writes 30 per sequence
        LOG.warning("--frames %d: %s holds sequences of %d frames; only the first %d of each are read, so the "
                    "flip probabilities are not those of the benchmark's sequences", args.frames, args.perturbed,
                    perturbations.NUM_FRAMES, args.frames)
    if evaluated is not None:
        import fer_export

        # Frames matched by row to the labels of another CSV would be scored against wrong labels.
        fer_export.refuse_other_source(data, manifest, f"--perturbed {args.perturbed}")
        sequence_names, work = dataset_eval.perturbed_work(data, labels, args.perturbed, selected, args.frames,
                                                           ((manifest or {}).get("params") or {}).get("format"))
        planned = len(work)
        work = stability.shard_folders(work, shard)
    else:
        folders = stability.perturbation_folders(args.perturbed, selected, args.perturbation_set)
        planned = len(folders)
        folders = stability.shard_folders(folders, shard)
        # Check every frame before loading any model: a missing one is an error naming it.
        work = [(folder, stability.frame_paths(folder, labels.names, args.frames)) for folder in folders]
    for folder, _ in work:  # a folder dataset's name is part of its folders' names
        if "," in folder.name or "\n" in folder.name:
            raise UserError(f"--perturbed {args.perturbed}: the folder {folder.name!r} contains a comma or "
                            f"newline, which the predictions format cannot hold; rename the dataset folder "
                            f"(its name starts the exported folders' names) and export again")
    if shard is not None:
        LOG.info("shard %d/%d: %d perturbation folder(s): %s", shard[0], shard[1], len(work),
                 ", ".join(folder.name for folder, _ in work) or "none")
    if manifest is None:
        LOG.warning("%s: no manifest.json; the source of the sequences is written as unknown",
                    args.perturbed)
    elif (manifest.get("params") or {}).get("source") == "aligned":
        LOG.warning("%s: source: aligned (docs/BENCHMARK.md §3.6): padded official aligned faces, "
                    "not the landmark-aligned originals", args.perturbed)
    # with the --batch it ran at: the deeper BatchNorm layers' adapted statistics depend on it (the
    # requested batch, as a robustness result records it; RAF-DB-P rounds it to whole sequences)
    adapted = "".join(f" {key}={value}" for key, value in stability.evaluation_settings(
        adapted=stability.adapted_label(args.adapt, args.adapt_prior), adapt_batch=args.batch).items()) \
        if args.adapt != "none" else ""

    # the test set as the robustness evaluation records it (before a model's classes leave any out)
    test_set = robustness.test_set_digest(labels.names, labels.labels)

    def metadata(n_sequences: int) -> str:
        """A block's metadata; N is the sequences of that block (a model that cannot output a
        class of the dataset leaves that class's sequences out)."""
        return stability.metadata_line(labels.protocol, n_sequences, args.frames, manifest,
                                       test_set=test_set) + adapted

    earlier = stability.headers_in(args.out.read_text(encoding="utf-8")) \
        if args.append and args.out is not None and args.out.is_file() else []
    stability.warn_method_collisions(targets, earlier)
    LOG.info("%d checkpoint(s) x %d folder(s) x %d sequences x %d frames", len(targets), len(work),
             len(labels), args.frames)
    probabilities = [] if args.save_probabilities is not None else None
    calibration_rows = [] if args.json is not None else None
    described: dict = {}  # checkpoint -> Classifier.describe(), for --json (its adaptation recorded)

    written = [0]  # blocks written by this run, for its end line

    def predict_all(out):
        for checkpoint in targets:
            if args.predictions is not None:  # any framework's predictions, frame by frame
                import predictions_file

                # scored in the evaluated dataset's classes (RAF-DB's by default)
                classifier = predictions_file.PredictionsClassifier(
                    args.predictions, args.perturbed, batch_size=args.batch,
                    class_names=data.class_names if evaluated is not None else None, other_export="c")
                if args.topk is not None and args.topk >= 2 and classifier.predictions.kind == "class":
                    # one class per frame ranks nothing beyond it: the rest would be index order, made up
                    raise UserError(f"--topk {args.topk}: {args.predictions} holds one class per frame "
                                    f"(path,class), no scores to rank the other classes by; give a file of "
                                    f"probabilities (path,p0,...) for the top-k distance, or leave --topk out")
            else:
                classifier = checkpoints.classifier_from_args(checkpoint, args)
            names, folders, rows = sequence_names, work, labels.labels
            if evaluated is not None:  # the model's classes: its evaluation order, its sequences
                classifier.use_classes(data.class_names, args.restrict_to_dataset_classes)
                mine = dataset_eval.evaluation_labels(data, "test", classifier.output_names,
                                                      args.restrict_to_dataset_classes)
                if mine.n_unmapped:
                    LOG.info("%s: %s", checkpoint, mine.report_line())
                keep = set(mine.labels.names)
                picked = [i for i, name in enumerate(labels.names) if name in keep]
                names = [sequence_names[i] for i in picked]
                folders = [(folder, [paths[i * args.frames + f] for i in picked for f in range(args.frames)])
                           for folder, paths in work]
                rows = mine.labels.labels
            else:
                rows = rafdb_label_rows(args, classifier, labels)
            runner = inference.runner_from_args(classifier, args)
            block_meta = metadata(len(names))
            n_columns = rows.shape[1] if getattr(rows, "ndim", 0) == 2 else stability.NUM_CLASSES
            if n_columns != stability.NUM_CLASSES:  # indices in the dataset's own K classes
                block_meta = f"{block_meta} classes={n_columns}"
            # the settings that change the predictions (report.py keeps results of other settings apart)
            block_meta += stability.settings_text(stability.classifier_settings(classifier))
            if Path(checkpoint).is_file():  # the model's identity for report.py, whatever the folder
                import model_files

                block_meta = f"{block_meta} model_sha256={model_files.model_sha256(checkpoint)}"
            if shard is not None:  # the reader checks that every shard's blocks are there
                block_meta += stability.shard_text(shard, planned)
            block_meta += " ends=1"  # this run closes its blocks with an end line (stability.END_LINE)
            written[0] += len(folders)
            stability.predict_folders(runner, checkpoint, names, folders, out, frames=args.frames,
                                      topk=args.topk, annotate=args.annotate, meta=block_meta,
                                      probabilities=probabilities, labels=rows,
                                      calibration_rows=calibration_rows)
            if calibration_rows is not None:  # described after its predictions (which show logits or not)
                described[str(checkpoint)] = classifier.describe()
        out.write(stability.end_line(written[0]))  # only a run that got here: see stability.END_LINE
        out.flush()

    if args.out is None:
        predict_all(sys.stdout)
    else:
        with atomic_path(args.out) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as out:
                if args.append and args.out.is_file():
                    before = args.out.read_text(encoding="utf-8")
                    # a file edited by hand may lack its last line end: the next header starts a line
                    out.write(before if not before or before.endswith("\n") else before + "\n")
                predict_all(out)
        LOG.info("wrote %s", args.out)
    if calibration_rows is not None:
        stability.write_calibration(args.json, calibration_rows, protocol=labels.protocol,
                                    adapted=args.adapt != "none", checkpoints=described)
        LOG.info("wrote %s", args.json)
    if probabilities is not None:
        stability.write_probabilities(args.save_probabilities, probabilities)
        LOG.info("wrote %s", args.save_probabilities)
    return 0

