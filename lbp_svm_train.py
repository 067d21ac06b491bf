"""Train, select and evaluate the LBP + SVM baseline (docs/BENCHMARK.md §9.6, §9.9; docs/BASELINES.md).

Commands:

  train   fit SVC(C, gamma, RBF, balanced class weights) on LBP descriptors of the training
          faces minus the hold-out, report hold-out accuracy, save a .skops model
  search  fit every (C, gamma) of a grid on the same faces, choose on the hold-out (never on
          test), save the best model and a CSV of the grid
  eval    accuracy and confusion matrix (rows true, columns predicted) of a .skops model on the
          test split, printed as the original and written as JSON + CSV beside the model

Examples:

  python3 lbp_svm_train.py train --rafdb RAF-DB --out out_training_fer/lbp_svm.skops
  python3 lbp_svm_train.py search --rafdb RAF-DB --out out_training_fer/lbp_svm_best.skops
  python3 lbp_svm_train.py eval --rafdb RAF-DB --model out_training_fer/lbp_svm.skops
  python3 lbp_svm_train.py train --dataset ferplus --data FERPlus --out out_training_fer/lbp_svm_fer.skops
  python3 lbp_svm_train.py train --dataset folder --data faces/ --out out_training_fer/lbp_svm_faces.skops
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import datasets
import lbp
import lbp_svm
from cli_common import (ArgumentParser, HelpFormatter, UserError, atomic_write_text, check_output_path, check_seed,
                        finite_float, refuse_outputs_over_inputs, run_main, setup_logging)

LOG = logging.getLogger("fer.lbp_svm_train")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"train": "fit one (C, gamma)", "search": "choose (C, gamma) on the hold-out",
             "eval": "accuracy and confusion matrix on test"}
    sub = {name: commands.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
           for name, text in helps.items()}
    for name, command in sub.items():
        datasets.add_dataset_args(command)
        data = command.add_argument_group("data")
        data.add_argument("--allow-missing", action="store_true",
                          help="skip (and count) images named by the labels but absent from the tree")
        if name != "eval":
            data.add_argument("--val-fraction", type=finite_float, default=0.1,
                              help="fraction of each training class held out for validation (BENCHMARK.md §1.5)")
            data.add_argument("--seed", type=int, default=0, help="seed of the hold-out split and the SVC")
            descriptor = command.add_argument_group("descriptor (BENCHMARK.md §9.6)")
            descriptor.add_argument("--lbp-legacy", action="store_true",
                                    help="cast cell counts to uint8 as the original (counts above 255 wrap)")
            descriptor.add_argument("--lbp-keep-ar", action="store_true",
                                    help="resize to 147x147 and keep columns 19..126 (the original's keep_ar)")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    train = sub["train"].add_argument_group("classifier")
    train.add_argument("--C", dest="C", type=_positive_float, default=lbp_svm.DEFAULT_C, help="SVC C (the original's 4)")
    train.add_argument("--gamma", type=_positive_float, default=lbp_svm.DEFAULT_GAMMA,
                       help="RBF gamma on raw counts (the original's 3e-6)")
    train.add_argument("--no-holdout", action="store_true",
                       help="fit on every training image, as the original (no validation score)")
    search = sub["search"].add_argument_group("grid")
    search.add_argument("--C-grid", dest="C_grid", type=_positive_float, nargs="+", default=list(lbp_svm.DEFAULT_C_GRID),
                        help="values of C")
    search.add_argument("--gamma-grid", type=_positive_float, nargs="+", default=None,
                        help="values of gamma (default: the original's grid 1/(2478*512), 1/(2478*2048) "
                             "and its 3e-6, i.e. " + " ".join(f"{g:.3g}" for g in lbp_svm.DEFAULT_GAMMA_GRID) + ")")
    for name in ("train", "search"):
        sub[name].add_argument("--out", type=Path, default=Path("out_training_fer/lbp_svm.skops"),
                               help="model file to write (.skops); search also writes <stem>.search.csv beside it")
    sub["eval"].add_argument("--model", type=Path, default=Path("out_training_fer/lbp_svm.skops"),
                             help="a .skops model written by train or search")
    sub["eval"].add_argument("--out-dir", type=Path, default=None,
                             help="folder for <stem>.eval_test.json and <stem>.confusion_test.csv, with the dataset "
                                  "and protocol in the name when they are not the model's own (e.g. "
                                  "<stem>.eval_rafdb_test.json) (default: the model's folder)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> lbp.LbpSettings:
    return lbp.LbpSettings(legacy=args.lbp_legacy, keep_ar=args.lbp_keep_ar)


def _check_out(path: Path, args: argparse.Namespace) -> None:
    """Before any work: the model file's name, a writable place, and not inside the dataset read."""
    lbp_svm.refuse_pickle(path)
    if path.suffix.lower() != ".skops":
        raise UserError(f"--out {path}: the model file name must end in .skops")
    check_output_path(path, "--out")
    refuse_outputs_over_inputs([("--out", path)], trees=[("the dataset", datasets.open_dataset(args).root)])


def _load(args: argparse.Namespace, part: str) -> lbp_svm.FaceSplit:
    data = datasets.open_dataset(args)  # --dataset/--data (docs/DATASETS.md); RAF-DB by default
    if not data.root.is_dir():
        flag = "--rafdb" if args.rafdb is not None else "--data"
        raise UserError(f"{flag} {data.root}: no such folder for --dataset {data.name} (docs/DATASETS.md)")
    args.labels = data.protocol
    split = lbp_svm.load_dataset_split(data, part, val_fraction=getattr(args, "val_fraction", 0.1),
                                       seed=getattr(args, "seed", 0))
    LOG.info("%s", split.description)
    return split


def _features(args, split, settings):
    started = time.perf_counter()
    features, size = lbp_svm.split_features(split, settings, progress=None if not args.quiet else False)
    LOG.info("LBP descriptors of %d %s faces in %.1f s", len(split), split.name, time.perf_counter() - started)
    return features, size


def _fit(features, classes, C, gamma, seed):
    svc = lbp_svm.make_svc(C, gamma, seed)
    started = time.perf_counter()
    svc.fit(features, classes)
    return svc, time.perf_counter() - started


def _accuracy(model: lbp_svm.LbpSvmModel, features: np.ndarray, classes: np.ndarray) -> float:
    predicted = np.argmax(model.scores(features), axis=1)
    return float(np.mean(predicted == classes)) if len(classes) else float("nan")


def _training_data(args):
    settings = _settings(args)
    train = _load(args, "all-train" if getattr(args, "no_holdout", False) else "train")
    missing = [name for index, name in enumerate(train.class_names) if not np.any(train.classes == index)]
    if missing:  # as train_fer.py says
        LOG.warning("%s: no training image of class(es) %s: the SVC can never predict them (check the "
                    "dataset's class folders or labels; docs/DATASETS.md)", train.name, ", ".join(missing))
    train_x, size = _features(args, train, settings)
    val = val_x = None
    if not getattr(args, "no_holdout", False):
        val = _load(args, "val")
        val_x, _ = _features(args, val, settings)
    return settings, train, train_x, size, val, val_x


def _info(args, train, val, C, gamma, val_accuracy, selection):
    """The training record stored in the model (no timings: equal runs must give equal files)."""
    return {"dataset": args.dataset, "data": str(Path(datasets.open_dataset(args).root).resolve()),
            "protocol": args.labels, "train": train.description,
            "validation": val.description if val is not None else None,
            "val_fraction": None if val is None else args.val_fraction, "seed": args.seed,
            "C": C, "gamma": gamma,
            "val_accuracy": val_accuracy, "selection": selection}


def cmd_train(args: argparse.Namespace) -> int:
    _check_out(args.out, args)
    settings, train, train_x, size, val, val_x = _training_data(args)
    LOG.info("fitting SVC(C=%g, gamma=%g, rbf, balanced) on %d x %d", args.C, args.gamma, *train_x.shape)
    svc, seconds = _fit(train_x, train.classes, args.C, args.gamma, args.seed)
    model = lbp_svm.LbpSvmModel(svc, settings, train.class_names, size)
    val_accuracy = None if val is None else _accuracy(model, val_x, val.classes)
    model.info = _info(args, train, val, args.C, args.gamma, val_accuracy, "given (C, gamma)")
    lbp_svm.save_skops(model, args.out)
    score = "no hold-out" if val_accuracy is None else f"hold-out accuracy {val_accuracy:.4f} ({len(val)} faces)"
    print(f"C={args.C:g} gamma={args.gamma:g}: fit {seconds:.1f} s, {score}; saved {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    _check_out(args.out, args)
    settings, train, train_x, size, val, val_x = _training_data(args)
    gammas = lbp_svm.DEFAULT_GAMMA_GRID if args.gamma_grid is None else args.gamma_grid
    grid = [(C, gamma) for C in args.C_grid for gamma in gammas]
    rows = []
    best = None
    for C, gamma in tqdm(grid, desc="grid", unit="fit", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty()):
        svc, seconds = _fit(train_x, train.classes, C, gamma, args.seed)
        model = lbp_svm.LbpSvmModel(svc, settings, train.class_names, size)
        accuracy = _accuracy(model, val_x, val.classes)
        rows.append({"C": C, "gamma": gamma, "val_accuracy": accuracy, "fit_seconds": round(seconds, 3),
                     "n_support_vectors": int(np.sum(svc.n_support_))})
        LOG.info("C=%g gamma=%g: hold-out accuracy %.4f (%.1f s)", C, gamma, accuracy, seconds)
        if best is None or accuracy > best[0]:  # ties: the first in grid order
            best = (accuracy, model, C, gamma, seconds)
    accuracy, model, C, gamma, seconds = best
    model.info = _info(args, train, val, C, gamma, accuracy,
                       f"best hold-out accuracy over {len(grid)} (C, gamma)")
    table_path = args.out.with_name(args.out.stem + ".search.csv")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(table_path, buffer.getvalue())
    lbp_svm.save_skops(model, args.out)
    print(f"{'C':>8} {'gamma':>12} {'val_acc':>8} {'fit_s':>8}")
    for row in rows:
        mark = "  <- best" if (row["C"], row["gamma"]) == (C, gamma) else ""
        print(f"{row['C']:8g} {row['gamma']:12.4g} {row['val_accuracy']:8.4f} {row['fit_seconds']:8.1f}{mark}")
    print(f"chosen on the hold-out ({len(val)} faces): C={C:g} gamma={gamma:g}; saved {args.out}, table {table_path}")
    return 0


def default_protocol(args: argparse.Namespace) -> str:
    """The default label protocol of the dataset ``args`` name (the first it has)."""
    return datasets.dataset_class(args.dataset).protocols[0]


def _eval_tag(info: dict, dataset: str, name: str, root: str, labels: str, default_labels: str) -> str:
    """``[<dataset>_][<labels>_]`` for the names of an evaluation's files: the evaluated dataset's name
    (``name``: a folder dataset's own) when the model was trained on another dataset or folder
    (``root``, where its training record has one), the protocol when it is not the model's own (on
    its dataset) or not the dataset's default (on another), so evaluating one model on two datasets
    or protocols keeps both results (as ``train_fer.py --mode test`` names its confusion files). A
    model without a training record (``info``) gets the plain names."""
    trained_on = info.get("dataset")
    other = trained_on is not None and (trained_on != dataset or (info.get("data") or root) != root)
    parts = datasets.result_tags(other, name, labels, info.get("protocol"), default_labels)
    return "".join(f"{part}_" for part in parts if part)


def cmd_eval(args: argparse.Namespace) -> int:
    from cli_common import check_output_path
    from datasets.classes import evaluation_columns

    out_dir = args.out_dir or args.model.parent
    check_output_path(out_dir, "--out-dir", folder=True)  # before the descriptors, not after
    model = lbp_svm.load_skops(args.model)
    test = _load(args, "test")
    # Matched by class name, as the other evaluations: the dataset's classes in its order (those the
    # model cannot output are left out and counted), then the model's other outputs.
    try:
        names, columns, mapping = evaluation_columns(model.class_names, test.class_names)
    except ValueError as error:
        raise UserError(f"{args.model}: {error}") from None
    keep = mapping.evaluable(test.classes)
    if not keep.any():
        raise UserError(f"{args.model}: outputs none of the dataset's classes (model: {list(model.class_names)}, "
                        f"dataset: {list(test.class_names)})")
    left_out = {name: int(np.sum(np.asarray(test.classes)[~keep] == index))
                for index, name in enumerate(test.class_names) if name in mapping.missing}
    if sum(left_out.values()):
        LOG.warning("%s cannot output %s: %d test image(s) left out", args.model, ", ".join(left_out),
                    sum(left_out.values()))
    features, _ = _features(args, test, model.settings)
    scores = model.scores(features[keep])
    arranged = np.zeros((len(scores), len(names)), scores.dtype)
    for column, output in enumerate(columns):
        if output >= 0:
            arranged[:, column] = scores[:, output]
        else:  # a dataset class the model has no output for: never predicted
            arranged[:, column] = -np.inf
    predicted = np.argmax(arranged, axis=1)
    k = len(names)
    confusion = lbp_svm.confusion_matrix(np.asarray(test.classes)[keep], predicted, k)
    accuracy = float(np.trace(confusion) / max(1, confusion.sum()))
    # The original printed sklearn's confusion matrix and "Accuracy: %.3f".
    print(f"{test.description}")
    print("confusion matrix (rows: true class, columns: predicted class)")
    print(" " * 11 + "".join(f"{name[:9]:>10}" for name in names))
    for index, name in enumerate(names):
        print(f"{name[:10]:<11}" + "".join(f"{value:10d}" for value in confusion[index]))
    print("Accuracy: %.3f" % accuracy)
    data = datasets.open_dataset(args)
    tag = _eval_tag(model.info, args.dataset, getattr(data, "dataset_name", None) or args.dataset,
                    str(Path(data.root).resolve()), args.labels, default_protocol(args))
    stem = args.model.stem
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *names])
    for name, row in zip(names, confusion):
        writer.writerow([name, *row.tolist()])
    atomic_write_text(out_dir / f"{stem}.confusion_{tag}test.csv", buffer.getvalue())
    report = {"model": str(args.model), "split": "test", "protocol": args.labels, "n": int(confusion.sum()),
              "accuracy": accuracy, "class_names": list(names), "confusion": confusion.tolist(),
              "left_out": left_out, "data": test.description, "model_info": model.describe()}
    atomic_write_text(out_dir / f"{stem}.eval_{tag}test.json", json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed)
    return {"train": cmd_train, "search": cmd_search, "eval": cmd_eval}[args.command](args)


if __name__ == "__main__":
    run_main(main)
