"""The robustness evaluation once its arguments are parsed (``eval_corrupted_rafdb.py``'s ``main``):
dataset and folders, the classifier of every checkpoint, the report, JSON, CSV, plot and
probabilities. The library pieces are in robustness.py; the metrics in metrics.py and
calibration.py.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

import checkpoints
import cli_common
import dataset_eval
import dataset_writer
import inference
import rafdb_dataset
import robustness
from cli_common import LOG, UserError, check_output_flags, refuse_outputs_over_inputs
from robustness import Folder


# What --on-the-fly renders with (an export's own parameters); None on the command line: not given.
RENDER_DEFAULTS = {"seed": 0, "motion_backend": "numpy", "colour": "rgb"}


def check_render_flags(given: dict, trees) -> None:
    """``--seed``/``--motion-backend``/``--colour`` choose what ``--on-the-fly`` renders; an exported
    tree is read as it was written (they were ignored without a word). A value its manifest records
    otherwise is an error naming both; given for a tree without a manifest, a warning."""
    if not given:
        return
    recorded_any = False
    for flag, root, manifest in trees:
        params = (manifest or {}).get("params") or {}
        for key, value in given.items():
            recorded = params.get(key)
            if recorded is None:
                continue
            recorded_any = True
            if recorded != value:
                raise UserError(f"--{key.replace('_', '-')} {value}: {flag} {root} was exported with {key} "
                                f"{recorded} (its {dataset_writer.MANIFEST_NAME}), and an exported tree is read as "
                                f"it was written; the flag chooses what --on-the-fly renders: leave it out, or "
                                f"export again with it")
    if not recorded_any:
        flags = ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in given.items())
        LOG.warning("%s: the images are read from the exported tree as written; the flag(s) only choose what "
                    "--on-the-fly renders", flags)


# Export parameters that decide what an image of either tree is: one evaluation of both reports one value.
TREES_AGREE_ON = ("format", "seed", "colour")


def check_trees_agree(args, manifest: dict | None, manifest_extra: dict | None, folders) -> bool:
    """Whether the evaluation reads folders of both --corrupted (the 18) and --corrupted-extra (the
    held-out sets) and both record their export; a UserError when their format, seed or colour mode
    differ (the result reports one source: a held-out set of a PNG, seed-5 tree was reported as the
    18's JPEG, seed-0 export)."""
    if manifest is None or manifest_extra is None:
        return False
    if {robustness.set_of(folder.corruption) == "rafdb" for folder in folders} != {True, False}:
        return False
    ours, theirs = manifest.get("params") or {}, manifest_extra.get("params") or {}
    differing = [f"{key} {ours[key]} vs {theirs[key]}" for key in TREES_AGREE_ON
                 if ours.get(key) is not None and theirs.get(key) is not None and ours[key] != theirs[key]]
    if differing:
        raise UserError(f"--corrupted {args.corrupted} and --corrupted-extra {args.corrupted_extra} were exported "
                        f"with other parameters ({', '.join(differing)}; their {dataset_writer.MANIFEST_NAME}), "
                        f"and one evaluation of both reports one source: export the held-out sets with the "
                        f"18's --seed/--format/--colour, or evaluate them on their own "
                        f"(--corruption-set imagenet-extra or face)")
    return True


def find_set_folders(args, labels, pairs, fmt):
    """The exported folders of ``pairs``: the 18 under --corrupted, the others under
    --corrupted-extra; returns (folders, manifest of --corrupted, manifest of --corrupted-extra)."""
    manifests, folders = {}, {}
    for key, root in (("rafdb", args.corrupted), ("extra", args.corrupted_extra)):
        wanted = [pair for pair in pairs if (robustness.set_of(pair[0]) == "rafdb") == (key == "rafdb")]
        flag = "--corrupted" if key == "rafdb" else "--corrupted-extra"
        manifests[key] = (dataset_writer.read_finished_manifest(root, "c", flag, "rafdb")
                          if wanted and root.is_dir() else None)
        recorded = ((manifests[key] or {}).get("params") or {}).get("format")
        if fmt and recorded and fmt != recorded:  # every file would be "not found" under the other suffix
            raise UserError(f"--format {fmt}: {flag} {root} was exported as {recorded} (its "
                            f"{dataset_writer.MANIFEST_NAME}); leave --format out to read the tree's own")
        if wanted:
            folders[key] = robustness.find_exported_folders(
                root, labels.names, wanted, fmt or (manifests[key] or {}).get("params", {}).get("format"),
                args.allow_missing, flag)
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
                                                  batch_size=args.batch, other_export="p")


def load_baseline(args):
    if args.baseline_method is not None and args.baseline is None:
        raise UserError("--baseline-method needs --baseline")
    return robustness.load_baseline(args.baseline, args.baseline_method) if args.baseline else None


def write_outputs(args, results: list[dict], planned: int | None = None) -> None:
    """--json, --csv and --plot for every run so far (each written atomically); the JSON records
    whether all ``planned`` models are in it."""
    for path, write in ((args.json, functools.partial(robustness.write_json, planned=planned)),
                        (args.csv, robustness.write_csv), (args.plot, robustness.write_plot)):
        if path is not None:
            write(path, results)
            LOG.info("wrote %s", path)


def merge(args) -> int:
    import json

    baseline = load_baseline(args)
    results = robustness.merge_results(args.merge, baseline, args.baseline, args.baseline_method,
                                       args.baseline_mismatch_ok)
    for result in results:
        sys.stdout.write(robustness.report_block(result["checkpoint"]["checkpoint"], result["folders"]))
        sys.stdout.write(robustness.summary_table(result) + "\n")
    # The merge is as complete as its parts: shards that stopped before their last model say so.
    planned = [json.loads(Path(path).read_text(encoding="utf-8")).get("models_planned") for path in args.merge]
    write_outputs(args, results, max([len(results)] + [count for count in planned if isinstance(count, int)]))
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
    classifier.use_classes(rafdb_dataset.CLASS_NAMES, args.restrict_to_dataset_classes, require_all="RAF-DB")
    width = len(classifier.class_names)
    if width == labels.labels.shape[1]:
        return labels.labels
    rows = np.zeros((len(labels), width), labels.labels.dtype)
    rows[:, :labels.labels.shape[1]] = labels.labels
    return rows


def run(args) -> int:
    """Everything after argument parsing (the script's ``main``)."""
    if args.dataset != "rafdb" and args.corruption_set != "rafdb":  # before any file or model is read
        raise UserError(f"--corruption-set {args.corruption_set}: RAF-DB only; --dataset {args.dataset} "
                        f"is evaluated on the 18 corruptions of RAF-DB-C (docs/DATASETS.md)")
    if args.predictions is not None and args.dataset != "rafdb":
        # FER2013/FER+ and folder exports name their images by dataset ids (a fer-csv export has no files)
        raise UserError(f"--predictions: a predictions file scores RAF-DB-C trees only, not --dataset "
                        f"{args.dataset}; evaluate the model itself (a Keras, TFLite or ONNX file, "
                        f"docs/MODELS.md); for the perturbed frames of any dataset: eval_perturbed_rafdb.py "
                        f"--predictions")
    if args.predictions is not None:
        checkpoints.refuse_model_flags_with_predictions(args)
    inference.check_runner_args(args)  # contradicting flags before any tree or model is looked for
    # Every output first: an unwritable path is an error now, not after the evaluation.
    check_output_flags(args, "json", "csv", "plot", "save_probabilities")
    if args.plot is not None:
        cli_common.suffix_format(args.plot, "--plot", cli_common.FIGURE_SUFFIXES, "the plot")
    outputs = [("--" + dest.replace("_", "-"), getattr(args, dest, None))
               for dest in ("json", "csv", "plot", "save_probabilities")] + [("RESULTS_FILE", args.results_file)]
    refuse_outputs_over_inputs(outputs)  # two outputs on one file: before anything is read
    if args.merge is not None:
        refuse_outputs_over_inputs(outputs, [("--merge", path) for path in args.merge] + [("--baseline", args.baseline)])
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
    # No output may overwrite a model, the baseline, a predictions file, or sit inside a dataset read.
    refuse_outputs_over_inputs(
        outputs, [("model", path) for path in checkpoint_files] + [("--baseline", args.baseline)],
        [(flag, getattr(args, dest, None)) for flag, dest in (("--corrupted", "corrupted"),
                                                             ("--corrupted-extra", "corrupted_extra"),
                                                             ("--rafdb", "rafdb"), ("--data", "data"))])
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
    LOG.info("%s", labels.count_line("images"))
    if evaluated is not None:
        LOG.info("%s", evaluated.report_line())

    manifest, manifest_extra, on_the_fly = None, None, None
    rendering = {key: getattr(args, key) for key in RENDER_DEFAULTS if getattr(args, key, None) is not None}
    for key, default in RENDER_DEFAULTS.items():  # the flags as given; their defaults for --on-the-fly
        if getattr(args, key, None) is None:
            setattr(args, key, default)
    roots = {name: args.corrupted if name == "rafdb" else args.corrupted_extra
             for name in robustness.CORRUPTION_SET_ORDER}
    if evaluated is not None:
        manifest = dataset_writer.read_manifest(args.corrupted)  # checked by fer_export.corrupted_sets
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
        for root, found, flag in ((args.corrupted, manifest, "--corrupted"),
                                  (args.corrupted_extra, manifest_extra, "--corrupted-extra")):
            dataset_writer.refuse_changed_sources(found, [(path.name, str(path)) for path in clean_paths],
                                                  f"{flag} {root}")
        fmt = args.format or ((manifest or manifest_extra or {}).get("params", {}).get("format"))
        if fmt is None:
            suffixes = {folder.paths[0].suffix for folder in folders if folder.paths}
            fmt = "png" if suffixes == {".png"} else "jpg" if suffixes <= {".jpg"} else "mixed"
        source = {"on_the_fly": False, "format": fmt,
                  **{key: (manifest or manifest_extra or {}).get("params", {}).get(key)
                     for key in ("seed", "motion_backend", "colour")}}
        if manifest_extra is not None and manifest_extra.get("params", {}).get("extra_param_set"):
            source["param_set"] = manifest_extra["params"]["extra_param_set"]
        if check_trees_agree(args, manifest, manifest_extra, folders):
            # the held-out sets' export, beside the 18's (the result's "manifest")
            source["manifest_extra"] = robustness.manifest_summary(args.corrupted_extra, manifest_extra)
        for root, found, of_18 in ((args.corrupted, manifest, True), (args.corrupted_extra, manifest_extra, False)):
            # The 18 are read from --corrupted, the other sets from --corrupted-extra (one may
            # be a prefix of the other's path: corrupted_raf_dataset and corrupted_raf_dataset_extra).
            used = any((robustness.set_of(folder.corruption) == "rafdb") == of_18 for folder in folders)
            if found is None and used:
                LOG.warning("%s: no manifest.json; the export's parameters are unknown", root)
    if not any("motion" in name for name in names_c):
        rendering.pop("motion_backend", None)  # draws no motion blur: nothing to disagree with
    if not args.on_the_fly:
        check_render_flags(rendering, [("--corrupted", args.corrupted, manifest),
                                       ("--corrupted-extra", args.corrupted_extra, manifest_extra)])
    units = robustness.work_units(clean, folders, shard)
    if shard is not None:
        LOG.info("shard %d/%d: %d of %d folder(s)", shard[0], shard[1], len(units), 1 + len(folders))
    # the dataset's test images and labels (before a model's classes leave any out): a baseline's must match
    test_set = robustness.test_set_digest(labels.names, labels.labels)
    dataset_name = args.dataset if evaluated is None else evaluated.describe()["dataset"]
    if baseline is not None:  # everything but the crop is known before loading a model
        # N of a FER/folder dataset is known per model (a model's classes may leave images out): below
        robustness.check_baseline(baseline, args.baseline,
                                  {"dataset": dataset_name, "test_set": test_set, "protocol": labels.protocol,
                                   "format": fmt, **({"N": len(labels)} if evaluated is None else {}),
                                   **({"param_set": source.get("param_set")} if needs_param_set else {}),
                                   **{key: source.get(key) for key in robustness.image_keys_that_matter(
                                       names_c, {row.get("corruption") for row in baseline.get("folders") or []})},
                                   # FER+ soft labels: fix and legacy are other label distributions
                                   **({"ferplus_norm": evaluated.ferplus_norm}
                                      if evaluated is not None and evaluated.ferplus_norm is not None
                                      and labels.protocol != "hard" else {})},
                                  args.baseline_mismatch_ok)
        # and the folders it normalises (of the corruptions found at every severity: the 18 when evaluated,
        # else all, as robustness.summarise): refused now, not after every model
        found = {(folder.corruption, folder.severity) for folder in folders}
        complete = [c for c in names_c if all((c, s) in found for s in severities)]
        groups = robustness.group_by_set(complete)
        robustness.baseline_table(baseline, args.baseline, {c: [] for c in complete}, severities,
                                  groups.get("rafdb") or complete)
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
                if baseline is not None:  # the images this model is scored on
                    robustness.check_baseline(baseline, args.baseline, {"N": len(labels)},
                                              args.baseline_mismatch_ok)
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
            result["test_set_sha256"] = test_set
            if result["summary"] is not None:
                sys.stdout.write(robustness.summary_table(result) + "\n")
                if evaluated is not None:
                    sys.stdout.write(evaluated.report_line() + "\n")
            else:
                sys.stdout.write(f"shard {shard[0]}/{shard[1]}: {evaluation.images} images in "
                                 f"{evaluation.seconds:.1f} s; merge the shards' --json with --merge\n")
            sys.stdout.flush()
            results.append(result)
            write_outputs(args, results, len(checkpoint_files))  # after each run: a later bad run loses nothing
            if args.save_probabilities is not None:
                probabilities.append((str(checkpoint_file), evaluation))
                robustness.write_probabilities(args.save_probabilities, probabilities)
                LOG.info("wrote %s", args.save_probabilities)
    finally:
        if on_the_fly is not None:
            on_the_fly.close()
    return 0

