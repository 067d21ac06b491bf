"""Every dataset behind one small interface (docs/BENCHMARK.md §1, §9, §10).

Scripts do::

    import datasets
    datasets.add_dataset_args(parser)           # --dataset, --data/--rafdb, --labels, --test-split, ...
    args = parser.parse_args()
    data = datasets.open_dataset(args)          # a datasets.base.Dataset
    test = data.labels("test")                  # LabelSet: ids, label vectors, filter counts
    image = data.read_image(test.names[0])      # uint8 RGB (H, W, 3) or grey (H, W, 1)
    mapping = datasets.map_classes(model_class_names, data.class_names)

Adding a dataset: write one module with a :class:`~datasets.base.Dataset` subclass and add one
line to :data:`REGISTRY`. Modules are imported on first use, so importing this package is cheap
and never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from cli_common import UserError
from datasets.base import SPLITS, Dataset, LabelSet, holdout_split  # noqa: F401 (public API)
from datasets.classes import ClassMapping, canonical_name, map_classes  # noqa: F401 (public API)

# name -> "module:Class"; the first entry is the default.
REGISTRY = {
    "rafdb": "datasets.rafdb:RafDB",
    "ferplus": "datasets.fer2013:FerPlus",
    "fer2013": "datasets.fer2013:Fer2013",
    "folder": "datasets.folder:FolderDataset",
}
DEFAULT_DATASET = "rafdb"
FER_TEST_SPLITS = ("PublicTest", "PrivateTest")
FERPLUS_NORMS = ("fix", "legacy")


def dataset_class(name: str) -> type[Dataset]:
    """The Dataset subclass registered as ``name``."""
    if name not in REGISTRY:
        raise UserError(f"--dataset {name}: unknown dataset (choose from {', '.join(REGISTRY)})")
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get(name: str, root: str | Path | None = None, **options) -> Dataset:
    """Open dataset ``name`` at ``root`` (its default root when None) with its options."""
    cls = dataset_class(name)
    if root is None:
        if cls.default_root is None:
            raise UserError(f"--dataset {name} needs --data DIR (the dataset's root folder)")
        root = cls.default_root
    return cls(root, **options)


def add_dataset_args(parser: argparse.ArgumentParser, *, protocols: bool = True) -> None:
    """Add the dataset options every script that reads a dataset shares."""
    group = parser.add_argument_group("dataset (docs/DATASETS.md)")
    group.add_argument("--dataset", default=DEFAULT_DATASET, choices=tuple(REGISTRY),
                       help="which dataset: RAF-DB, FER2013 with FER+ votes, FER2013's own labels, "
                            "or a folder of class sub-folders")
    group.add_argument("--data", type=Path, default=None, metavar="DIR",
                       help="dataset root; default RAF-DB for rafdb, FERPlus for ferplus/fer2013 "
                            "(holding fer2013.csv and fer2013new.csv); required for folder")
    group.add_argument("--rafdb", type=Path, default=None, metavar="DIR",
                       help="RAF-DB root (the RAF-DB spelling of --data)")
    if protocols:
        group.add_argument("--labels", default=None, choices=("soft", "hard"),
                           help="label protocol; default soft for rafdb/ferplus (vote filter), "
                                "hard for fer2013 and folder (the only one they have)")
    group.add_argument("--test-split", default="PublicTest", choices=FER_TEST_SPLITS,
                       help="FER2013/FER+: which Usage is the test split (the other validates); "
                            "PublicTest as the original, PrivateTest as the usual FER+ convention")
    group.add_argument("--ferplus-norm", default="fix", choices=FERPLUS_NORMS,
                       help="FER+ label divisor: 'fix' = sum of the 8 emotion votes (labels sum to 1); "
                            "'legacy' = the original's total including unknown/NF votes")


def result_tags(other: bool, name: str, labels: str, own_labels: str | None,
                default_labels: str) -> tuple[str | None, str | None]:
    """(dataset tag, protocol tag) of an evaluation's file names, each None when not needed: the
    evaluated dataset's ``name`` when it is not the model's own (``other``); the protocol ``labels``
    when it is not the model's own (``own_labels``, on its dataset; None: unknown, no tag) or not the
    evaluated dataset's default (on another). So testing one model on two datasets, folders or
    protocols keeps each result's files (train_fer.py --mode test, lbp_svm_train.py eval)."""
    reference = default_labels if other else own_labels
    return (name if other else None, labels if reference is not None and labels != reference else None)


def open_dataset(args: argparse.Namespace) -> Dataset:
    """The Dataset named by the options of :func:`add_dataset_args`."""
    name = getattr(args, "dataset", DEFAULT_DATASET)
    data = getattr(args, "data", None)
    rafdb = getattr(args, "rafdb", None)
    if rafdb is not None:
        if name != "rafdb":
            raise UserError(f"--rafdb names a RAF-DB root; with --dataset {name} use --data DIR")
        if data is not None and Path(data).resolve() != Path(rafdb).resolve():  # (one folder, two spellings: fine)
            raise UserError(f"--rafdb {rafdb} and --data {data} disagree; give one of them")
        data = rafdb
    options = {"protocol": getattr(args, "labels", None),
               "allow_missing": bool(getattr(args, "allow_missing", False))}
    cls = dataset_class(name)
    if name in ("ferplus", "fer2013"):
        options["test_split"] = getattr(args, "test_split", "PublicTest")
    if name == "ferplus":
        options["norm"] = getattr(args, "ferplus_norm", "fix")
    elif getattr(args, "ferplus_norm", "fix") != "fix":
        raise UserError(f"--ferplus-norm applies to --dataset ferplus only (got --dataset {name})")
    if name not in ("ferplus", "fer2013") and getattr(args, "test_split", "PublicTest") != "PublicTest":
        raise UserError(f"--test-split applies to --dataset ferplus/fer2013 only (got --dataset {name})")
    del cls
    return get(name, data, **options)
