"""Training library behind ``train_fer.py`` (docs/BENCHMARK.md §4): fit loop, resume, checkpoints.

Everything here is importable without side effects; ``train_fer.py`` only parses the command line
and calls :func:`train` or :func:`test_mode` with the parsed namespace.

- run directory, naming, ``run.json`` (§4.7), checkpoints (``checkpoint.EE.hdf5``, 1-based,
  written on strict improvement), ``checkpoint_last.hdf5`` + ``train_state.json`` for resume;
- optimizer-state restoration from legacy HDF5 (Keras 3.15 drops SGD slots on load);
- the learning-rate schedule (§4.6), per-epoch pipeline and dropout seeds, precise BatchNorm;
- distribution (mirrored, multi-worker) and the clean test evaluation.

Dataset access goes through :func:`open_data` (``datasets.open_dataset``): RAF-DB, FER+/FER2013 and
folder datasets (docs/DATASETS.md) train and test the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import sys
from pathlib import Path

# docs/BENCHMARK.md §4.9: training a 1x1 stride-2 conv over 8 channels crashes oneDNN on some CPUs; AVX2 avoids
# it (10-20 % slower on CPU). Must be set before TensorFlow is imported; the user may override it.
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import augmentations  # noqa: E402
import datasets  # noqa: E402
import rafdb_dataset  # noqa: E402
from cli_common import (RunFailed, SignalExit, UserError, atomic_write_text, check_output_path,  # noqa: E402
                        check_seed, quiet_tensorflow_info, refuse_outputs_over_inputs, seed64)

LOG = logging.getLogger("fer.train")

LPF_CHOICES = (0, 1, 2, 3, 5, 7)
DEFAULT_LR = "0.002:0.5:40"
VAL_FRACTION_DEFAULT = 0.1  # --val-fraction: the hold-out of train that selects checkpoints
CHECKPOINT_PATTERN = "checkpoint.{epoch:02d}.hdf5"
CHECKPOINT_RE = re.compile(r"^checkpoint\.([0-9]+)\.hdf5$")
LAST_CHECKPOINT = "checkpoint_last.hdf5"
STATE_FILE = "train_state.json"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
LOG_FILE = "training_log.csv"
VALIDATION_NAMES = "validation_names.txt"
MONITOR = "val_categorical_accuracy"


# --------------------------------------------------------------------------------------------
# Pure helpers (no TensorFlow)


def parse_lr(text: str) -> tuple[float, float, int]:
    """``init[:factor[:every]]`` -> (init, factor, every); missing parts default to 0.5 and 40."""
    parts = str(text).split(":")
    expected = f"--lr {text!r}: expected init[:factor[:every]] such as {DEFAULT_LR} " \
               "(init > 0, factor > 0, every a positive integer of epochs)"
    if not 1 <= len(parts) <= 3:
        raise UserError(expected)
    try:
        init = float(parts[0])
        factor = float(parts[1]) if len(parts) > 1 else 0.5
        every = int(parts[2]) if len(parts) > 2 else 40
    except ValueError:
        raise UserError(expected) from None
    if not (math.isfinite(init) and init > 0 and math.isfinite(factor) and factor > 0 and every > 0):
        raise UserError(expected)
    return init, factor, every


def learning_rate(epoch: int, init: float, factor: float, every: int) -> float:
    """lr(e) = init · factor^floor(e / every), e the 0-based epoch (docs/BENCHMARK.md §4.6)."""
    return init * factor ** (int(epoch) // int(every))


def argstring(argv: list[str]) -> str:
    """The original's run name: the CLI arguments concatenated, ``--``→``_``, ``=`` removed, ``:``→``_``.

    Path separators become ``_`` too, so a path argument cannot create sub-folders.
    """
    text = "".join(argv).replace("--", "_").replace("=", "").replace(":", "_")
    return text.replace("/", "_").replace(os.sep, "_")


ARGSTRING_BYTES = 200  # a file name holds at most 255 bytes; the timestamp and _cutout take 23


def without_out_root(argv: list[str]) -> list[str]:
    """``argv`` without ``--out-root DIR`` / ``--out-root=DIR``: the folder that receives the run is
    not repeated inside its name."""
    kept, skip = [], False
    for arg in argv:
        flag, equals, _ = arg.partition("=")
        # argparse takes any unambiguous prefix: --ou, --out, --out-r, ... (no other flag starts with --ou)
        named = arg.startswith("--ou") and "--out-root".startswith(flag)
        if skip:
            skip = False
        elif named and not equals:
            skip = True
        elif not named:
            kept.append(arg)
    return kept


def run_dir_name(argv: list[str], now: datetime.datetime, cutout: bool = False) -> str:
    """``<argstring>_<YYYYmmdd_HHMMSS>`` plus ``_cutout`` when random erasing is on (docs/BENCHMARK.md §4.7),
    ``--out-root`` left out of the argstring (:func:`without_out_root`).

    An argstring over ``ARGSTRING_BYTES`` bytes (UTF-8; long paths and many flags) keeps its first
    191 bytes and ends in ``_`` and the first 8 hex digits of its SHA-256, so the name stays a valid
    file name and different commands still get different names."""
    import hashlib

    text = argstring(without_out_root(argv))
    encoded = text.encode("utf-8")
    if len(encoded) > ARGSTRING_BYTES:
        head = encoded[:ARGSTRING_BYTES - 9].decode("utf-8", errors="ignore")
        text = f"{head}_{hashlib.sha256(encoded).hexdigest()[:8]}"
    name = f"{text}_{now.strftime('%Y%m%d_%H%M%S')}"
    return name + "_cutout" if cutout else name


def numbered_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every ``checkpoint.EE.hdf5`` in ``run_dir``, sorted by epoch."""
    found = []
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            match = CHECKPOINT_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found)


def best_checkpoint(run_dir: Path) -> Path | None:
    """The highest-numbered checkpoint (the best one, since they are written on improvement)."""
    found = numbered_checkpoints(run_dir)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------------------------
# Command line


def _models():
    import models  # imports Keras; deferred so that `--help` and argument errors stay fast

    return models


# Flags that do not define the run: they may differ on --resume (--epochs may be raised to train on).
OPERATIONAL_FLAGS = frozenset({"workers", "verbose", "dir", "resume", "mode", "checkpoint", "epoch", "out_root",
                               "epochs", "collective_timeout", "deterministic"})


def run_args(args) -> dict:
    """The settings that define a run (saved in run.json as ``args``; reloaded by --resume)."""
    skip = (OPERATIONAL_FLAGS - {"epochs"}) | {"argv", "explicit", "lr_schedule", "data_source"}
    saved = {key: value for key, value in vars(args).items() if key not in skip}
    saved["rafdb"] = None  # the root is saved once, as --data (either spelling resumes it)
    saved["data"] = str(open_data(args).root.resolve())
    return saved


def _same(key: str, given, saved) -> bool:
    if key in ("rafdb", "data"):
        return given is None or saved is None or Path(given).resolve() == Path(saved).resolve()
    return given == saved


def open_data(args):
    """The dataset of ``--dataset``/``--data`` (``datasets.base.Dataset``), opened once per namespace.

    Sets ``args.labels`` to the protocol in use (the dataset's default when not given).
    """
    data = getattr(args, "data_source", None)
    if data is None:
        data = datasets.open_dataset(args)
        args.data_source = data
        args.labels = data.protocol
    return data


def read_run_json(path: Path) -> dict:
    """A run folder's run.json as a dict; UserError naming the file when it is not readable JSON of
    an object (a damaged or hand-edited file)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path}: not a readable run.json ({error}); restore it, or delete it to "
                        f"use the flags of this command line") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of run settings, found {type(data).__name__}; "
                        f"restore it, or delete it to use the flags of this command line")
    if not isinstance(data.get("args") or {}, dict):
        raise UserError(f"{path}: \"args\" is not an object of flags; restore the file, or delete it")
    return data


def apply_run_args(args, run_dir: Path, parse_argv=None) -> None:
    """--resume: replace the run-defining settings by the run's own (run.json); conflicting flags -> UserError.

    The run's settings come from ``args`` in run.json, or, for older run directories, from its saved
    command line ``argv``, parsed with ``parse_argv`` (argv -> namespace; the script's parser).
    Only --epochs (e.g. raised to train on) and operational flags may differ.
    """
    path = run_dir / RUN_FILE
    if not path.is_file():  # the command line's defaults would not be the saved model's settings
        raise UserError(f"{path}: missing; --resume takes the run's settings (network, input size, learning-rate "
                        f"schedule, momentum, data) from it and cannot continue without it (restore the file, "
                        f"or start a new run with --pretraining {run_dir / LAST_CHECKPOINT})")
    previous = read_run_json(path)
    try:
        saved = previous.get("args")
        if saved is None:
            if parse_argv is None:
                raise KeyError("args")
            saved = vars(parse_argv(list(previous["argv"])))
    except (ValueError, KeyError, TypeError, SystemExit) as error:
        raise UserError(f"{path}: unreadable run settings ({error})") from None
    for key, value in saved.items():
        if key in OPERATIONAL_FLAGS or key in ("argv", "explicit", "lr_schedule", "data_source") \
                or not hasattr(args, key):
            continue
        if isinstance(getattr(args, key), Path) and value is not None:
            value = Path(value)
        if key in ("rafdb", "data") and key in args.explicit and value is None:
            continue
        if key == "val_fraction" and key in args.explicit and value is None:
            args.run_without_holdout = True  # check_args refuses the flag, naming the run's validation split
            continue
        if key in ("rafdb", "data") and key in args.explicit and not Path(value).is_dir():
            LOG.warning("the run's --%s %s is gone; using --%s %s", key, value, key, getattr(args, key))
            continue
        shown = str(value) if isinstance(value, Path) else repr(value)
        if key in args.explicit and not _same(key, getattr(args, key), value):
            raise UserError(f"--{key.replace('_', '-')} {getattr(args, key)}: conflicts with the run being "
                            f"resumed ({path} has {shown}); leave the flag out to keep the run's value")
        other = {"rafdb": "data", "data": "rafdb"}.get(key)
        if (other and value is not None and other in args.explicit and key not in args.explicit
                and getattr(args, other) is not None and not _same(key, Path(getattr(args, other)), value)):
            # --rafdb and --data name one dataset folder: the run's, given under the other spelling
            raise UserError(f"--{other} {getattr(args, other)}: conflicts with the run being resumed ({path} "
                            f"has --{key} {value}); leave the flag out to keep the run's dataset")
        setattr(args, key, value)
    if "epochs" not in args.explicit and "epochs" in saved:
        args.epochs = int(saved["epochs"])
    args.lr_schedule = parse_lr(args.lr)


def apply_run_dataset(args, run_dir: Path) -> None:
    """--mode test: the dataset flags left out (--dataset, --data, --rafdb, --labels) take the run's
    own values from its run.json, so a run trained on FER+ is tested on FER+ without repeating them;
    a --dataset other than the run's (``--rafdb DIR`` alone: RAF-DB) takes nothing from it. A
    recorded data folder that is gone is left out with a warning."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return  # no run.json (a bare checkpoint folder): the flags as given
    saved = read_run_json(path).get("args") or {}
    if "rafdb" in args.explicit and "dataset" not in args.explicit:
        args.dataset = "rafdb"  # --rafdb DIR names RAF-DB, whatever the run was trained on
    chosen = {"dataset", "rafdb"} & set(args.explicit)
    if chosen and args.dataset != saved.get("dataset", args.dataset):
        return  # another dataset than the run's: its own flags and defaults, nothing of the run's
    folder_given = bool({"data", "rafdb"} & set(args.explicit))  # two names of one flag for RAF-DB
    for key in ("dataset", "data", "rafdb", "labels"):
        if key in args.explicit or saved.get(key) is None or not hasattr(args, key):
            continue
        if key in ("data", "rafdb") and folder_given:
            continue  # the folder on the command line, not the run's
        value = saved[key]
        if key in ("data", "rafdb"):  # folders (the parser's type is Path)
            value = Path(value)
            if not value.is_dir():
                LOG.warning("%s: the run's --%s %s is gone; give --%s", path, key, value, key)
                continue
        setattr(args, key, value)
    LOG.info("--mode test on %s's dataset: --dataset %s%s", run_dir, args.dataset,
             f" --data {args.data}" if getattr(args, "data", None) else "")


def check_args(args) -> None:
    """Turn bad combinations into one-line user errors before any heavy work."""
    args.lr_schedule = parse_lr(args.lr)
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch", args.batch, 1),
                             ("--bn-recalibrate", args.bn_recalibrate, 0)):
        if value < low:
            raise UserError(f"{flag} {value}: expected an integer >= {low}")
    check_seed(args.seed)
    from checkpoints import MAX_INPUT_SIDE

    if args.input_size is not None and not 1 <= args.input_size <= MAX_INPUT_SIDE:
        raise UserError(f"--input-size {args.input_size}: expected a side from 1 to {MAX_INPUT_SIDE} px "
                        f"(as the evaluations' --input-size)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected a positive integer")
    if args.mode == "test" and args.checkpoint is None and args.dir is None:
        raise UserError("--mode test needs --checkpoint FILE or --dir RUN_DIR")
    for flag, value in (("--epoch", getattr(args, "epoch", None)), ("--checkpoint", args.checkpoint)):
        if args.mode == "train" and value is not None:
            raise UserError(f"{flag} {value}: only used with --mode test (training starts from --pretraining, "
                            "or continues a run with --resume --dir RUN)")
    if args.cpu_devices and args.distribute != "mirrored":
        raise UserError(f"--cpu-devices {args.cpu_devices}: only used with --distribute mirrored (it splits the CPU "
                        f"into logical devices for MirroredStrategy); got --distribute {args.distribute}")
    if args.mode == "train":  # the run directory, before any data is read or model built
        if args.dir is not None:
            check_output_path(args.dir, "--dir", folder=True)
        elif getattr(args, "out_root", None) is not None:
            check_output_path(args.out_root, "--out-root", folder=True)
    if args.pretraining not in (None, "imagenet"):
        import model_files

        model_files.refuse_pickle(args.pretraining)  # before anything opens it
    if not args.resume and args.pretraining in ("vggface", "vggface2") and not Path(args.pretraining).is_file():
        raise UserError(pretraining_name_error(args))
    if (not args.resume and args.pretraining not in (None, "imagenet")
            and not Path(args.pretraining).is_file()):
        raise UserError(f"--pretraining {args.pretraining}: no such weights file "
                        f"(accepted: {PRETRAINING_ACCEPTED})")
    data = open_data(args)
    if not data.root.is_dir():
        flag = "--rafdb" if getattr(args, "rafdb", None) is not None else "--data"
        layout = f"\n{rafdb_dataset.EXPECTED_LAYOUT}" if data.name == "rafdb" else " (docs/DATASETS.md)"
        raise UserError(f"{flag} {data.root}: no such folder for --dataset {data.name}{layout}")
    if args.mode == "train":
        check_val_fraction(args, data)
    elif "val_fraction" in getattr(args, "explicit", set()):
        raise UserError(f"--val-fraction {args.val_fraction:g} with --mode test: the test takes no hold-out of its own "
                        f"(its validation images are those the run held out, listed in its validation_names.txt, "
                        f"else the dataset's own validation split, else the test split); leave out --val-fraction")
    if args.mode == "train":  # checkpoints written among the faces would be read back as (broken) images
        refuse_outputs_over_inputs([("--dir", args.dir), ("--out-root", None if args.dir else getattr(args, "out_root", None))],
                                   trees=[("the dataset", data.root)])
    if args.cpu_devices < 0:
        raise UserError(f"--cpu-devices {args.cpu_devices}: expected >= 0")
    if args.mode == "train" and args.distribute == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
    if args.mode == "train" and args.distribute == "multiworker" and args.dir is None:
        raise UserError("--distribute multiworker needs --dir (the timestamped run name differs per worker)")
    if getattr(args, "center_loss", False) and not (args.center_loss_weight >= 0 and 0 <= args.center_loss_alpha <= 1):
        raise UserError(f"--center-loss-weight {args.center_loss_weight} / --center-loss-alpha "
                        f"{args.center_loss_alpha}: expected a weight >= 0 and alpha in 0..1")
    if args.bn_recalibrate and args.distribute != "none":
        raise UserError(f"--bn-recalibrate {args.bn_recalibrate}: not supported with --distribute "
                        f"{args.distribute} (the recalibration runs eagerly on one device)")
    if getattr(args, "jsd", False) and getattr(args, "center_loss", False):
        raise UserError("--jsd and --center-loss: each replaces the training step; use one of them")
    if args.cutout and args.augmentation != "default" and not args.resume:  # (a run resumed keeps its own)
        raise UserError(f"--cutout with --augmentation {args.augmentation}: random erasing replaces the "
                        f"augmentation, so {args.augmentation} would not be applied (yet recorded in run.json and "
                        f"the run name); leave out --augmentation, or --cutout")
    if getattr(args, "jsd", False) and (args.augmentation != "augmix" or args.cutout):
        raise UserError("--jsd needs --augmentation augmix (without --cutout): the consistency loss compares "
                        "a clean view with two AugMix views")
    explicit = getattr(args, "explicit", set())  # the flags the command line gives (cli_common.explicit_flags)
    given = [f"--{name.replace('_', '-')}" for name in ("augmix_width", "augmix_depth", "augmix_severity")
             if name in explicit]
    if given and args.augmentation != "augmix" and not args.resume:  # (a run resumed keeps its own)
        raise UserError(f"{'/'.join(given)} with --augmentation {args.augmentation}: AugMix's settings apply to "
                        f"--augmentation augmix only, so they would have no effect")
    given = [f"--{name.replace('_', '-')}" for name in ("center_loss_weight", "center_loss_alpha") if name in explicit]
    if given and not getattr(args, "center_loss", False) and not args.resume:
        raise UserError(f"{'/'.join(given)} without --center-loss: the centre term's settings apply to a "
                        f"--center-loss run only, so they would have no effect (plain cross-entropy)")
    if ("mean_order" in explicit and args.mean_order != "correct" and args.preprocessing != "vggface2"
            and args.mode == "train" and not args.resume):
        raise UserError(f"--mean-order {args.mean_order} with --preprocessing {args.preprocessing}: the order of "
                        f"the means applies to --preprocessing vggface2 only, so it would have no effect")
    colour_read = args.preprocessing == "z_normalization" or (
        args.augmentation in ("autoaugment-rafdb", "randaugment") and not args.cutout)
    if "colour" in explicit and args.colour != "rgb" and not colour_read and args.mode == "train" and not args.resume:
        raise UserError(f"--colour {args.colour} with --preprocessing {args.preprocessing} and --augmentation "
                        f"{'cutout' if args.cutout else args.augmentation}: the channel order applies to "
                        f"--preprocessing z_normalization and the policies of --augmentation autoaugment-rafdb "
                        f"and randaugment only, so it would have no effect")
    if "honour_policy_prob" in explicit and args.augmentation != "autoaugment-rafdb" and not args.resume:
        raise UserError(f"--honour-policy-prob with --augmentation {args.augmentation}: it applies to the "
                        f"AutoAugment policies (--augmentation autoaugment-rafdb) only, so it would have no effect")
    try:
        augmentations.check_augmix_params(*augmix_params(args))
    except ValueError as error:  # "AugMix depth 0: ..." names the flag at fault
        flag = next((f"--augmix-{word}" for word in ("width", "depth", "severity")
                     if str(error).startswith(f"AugMix {word} ")), "--augmix-width/--augmix-depth/--augmix-severity")
        raise UserError(f"{flag}: {error}") from None


def check_val_fraction(args, data) -> None:
    """--val-fraction sizes the hold-out of train that selects checkpoints. With another validation
    split (--val-split test, or a dataset with its own validation split) it has no effect: given on
    the command line it is refused; left out, it is set to None (run.json records null, not 0.1)."""
    if args.val_split == "holdout" and not data.has_validation:
        # a run that had no hold-out (run.json: null), resumed on a copy of its dataset without the
        # validation split: its best checkpoint was chosen on that split, and a hold-out now would
        # change both its training images and what "best" compares
        if args.val_fraction is None or getattr(args, "run_without_holdout", False):
            raise UserError(f"{data.root}: this run selected its checkpoints on the dataset's own validation "
                            f"split (run.json records no hold-out, val_fraction null), and this copy of the "
                            f"dataset has none: resume with the dataset that has it, or start a new run")
        return
    if "val_fraction" in getattr(args, "explicit", set()):
        if args.val_split == "test":
            raise UserError(f"--val-fraction {args.val_fraction:g} with --val-split test: checkpoints are "
                            f"selected on the test set, so nothing is held out and --val-fraction would have no "
                            f"effect; leave out --val-fraction, or select on a held-out part of train with "
                            f"--val-split holdout (the default)")
        raise UserError(f"--val-fraction {args.val_fraction:g} with --val-split holdout on --dataset {data.name}: "
                        f"the dataset has its own validation split ({data.split_name('validation')}), which "
                        f"selects the checkpoints instead of a hold-out, so --val-fraction would have no "
                        f"effect; leave out --val-fraction")
    args.val_fraction = None


def augmix_params(args) -> tuple:
    """(width, depth, severity) of --augmentation augmix (defaults for older run.json files)."""
    return (getattr(args, "augmix_width", 3), getattr(args, "augmix_depth", -1),
            getattr(args, "augmix_severity", 3.0))


PRETRAINING_ACCEPTED = ("the path of a local Keras model or weights file (.h5, .hdf5, .keras, .weights.h5), "
                        "matched by layer name, or 'imagenet' when Keras's cache already holds the file")


def pretraining_name_error(args) -> str:
    """The message for ``--pretraining vggface|vggface2``: names, not files; nothing is downloaded."""
    from models.pretrained import FACE_WEIGHTS

    try:
        net, _ = _models().resolve_net(args.net, args.input_size)
    except ValueError:
        net = args.net
    expected = FACE_WEIGHTS.get(net)
    hint = (f"for --net {args.net} that is {expected}" if expected
            else f"no face-pretrained weights are known for --net {args.net}")
    return (f"--pretraining {args.pretraining}: nothing is downloaded (docs/BENCHMARK.md §4.1 FIX); pass the "
            f"local weights file instead, --pretraining PATH ({hint}). Accepted: {PRETRAINING_ACCEPTED}")


def check_resume(args) -> None:
    if args.dir is None:
        raise UserError("--resume needs --dir, the run directory to continue")
    if not args.dir.is_dir():
        raise UserError(f"--dir {args.dir}: no such run directory to resume")


# --------------------------------------------------------------------------------------------
# TensorFlow parts


def enable_determinism() -> None:
    """``--deterministic``: TensorFlow's op determinism (same results run to run, on GPU too).

    Without it a resumed run equals an uninterrupted one only on CPU, where the kernels are
    deterministic already; GPU kernels (cuDNN convolutions, atomics in reductions) are not. Costs
    speed on GPUs; ops without a deterministic kernel then raise an error instead of running.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def check_tf_config(text: str | None) -> None:
    """UserError unless ``TF_CONFIG`` describes this worker of a cluster: JSON with a non-empty
    ``cluster.worker`` (or chief) list and a ``task`` whose type is one of the cluster's and whose
    index is in range (TensorFlow raises a traceback for each of these)."""
    expected = ('expected e.g. {"cluster": {"worker": ["host-a:12345", "host-b:12345"]}, '
                '"task": {"type": "worker", "index": 0}} (docs/TRAINING.md)')
    if not text:
        raise UserError(f"--distribute multiworker: the environment variable TF_CONFIG is not set; {expected}")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise UserError(f"TF_CONFIG: not valid JSON ({error}); {expected}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(cluster.get(kind), list) and cluster.get(kind)
                                                for kind in ("worker", "chief")):
        raise UserError(f"TF_CONFIG: no non-empty cluster.worker list; {expected}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise UserError(f"TF_CONFIG: task {task!r} must name a type of the cluster "
                        f"({', '.join(cluster)}) and an integer index; {expected}")
    members = cluster[task["type"]]
    if not isinstance(members, list) or not 0 <= task["index"] < len(members):
        raise UserError(f"TF_CONFIG: task index {task['index']} is outside the {len(members) if isinstance(members, list) else 0} "
                        f"{task['type']} address(es) of the cluster; {expected}")


DEFAULT_COLLECTIVE_TIMEOUT = 300.0  # seconds a worker waits in one collective before it gives up

# argv: the worker's pid, the timeout in seconds, the message; ends the worker unless killed first.
WATCHDOG = """
import os, signal, sys, time
pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    time.sleep(0.2)
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(0)
sys.stderr.write(message + chr(10))
sys.stderr.flush()
os.kill(pid, signal.SIGKILL)
"""


def multiworker_strategy(timeout: float = DEFAULT_COLLECTIVE_TIMEOUT):
    """MultiWorkerMirroredStrategy from TF_CONFIG whose collectives give up after ``timeout`` seconds.

    Without the timeout a worker whose peer died waits in the next all-reduce forever. A worker
    whose peer never joins waits in the strategy's construction; a watchdog process ends it with
    SIGKILL after ``timeout`` seconds (message on stderr). SIGTERM gets its default action back
    afterwards (TensorFlow's runtime may have installed a Python handler, which never runs while the
    main thread is blocked inside a collective), so ``kill`` ends a worker once the cluster formed.
    """
    import tensorflow as tf

    # The strategy's construction waits for every worker of TF_CONFIG to be up, inside TensorFlow's
    # C++ runtime, holding the interpreter: no Python thread, timer or SIGTERM handler runs meanwhile
    # (measured: SIGTERM is ignored there). A separate watchdog process ends this one with SIGKILL if
    # the cluster has not formed within the timeout, so a worker whose peer never starts cannot hang.
    watchdog = None
    if timeout:
        import subprocess

        message = (f"error: --distribute multiworker: not every worker of TF_CONFIG joined within "
                   f"--collective-timeout {timeout:g} s (a peer that never started, or a wrong host or port); "
                   f"TF_CONFIG={os.environ.get('TF_CONFIG', '')}")
        watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(float(timeout)), message],
                                    stdin=subprocess.DEVNULL)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(timeout) or None)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # TensorFlow's runtime may have installed its own
    quiet_tensorflow_info()  # one INFO line per collective otherwise
    return strategy


def patch_for_multiworker(model, strategy) -> None:
    """Work around two Keras 3.15 defects under MultiWorkerMirroredStrategy with >= 2 workers.

    1. Before the first step Keras reduces the first (x, y) batch across workers with one
       ``strategy.reduce`` over the whole tuple, which fails ("Attempt to convert a value
       (PerReplica...) ... to a Tensor"). The build only needs shapes, so the replacement takes
       each worker's local values of the batch and builds metrics and optimizer in the scope.
    2. Each step's logs are reduced with ``strategy.reduce("MEAN", value, axis=0)``, which fails on
       the scalar loss and metrics ("Invalid reduction dimension 0"). The train and test steps
       therefore return them as shape (1,): the reduction over axis 0 of the replicas' values is
       their mean, a scalar again.

    Both are set on the model instance (nothing is saved with the model).
    """
    import tensorflow as tf

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def rank1(step):
        def wrapped(data):
            logs = step(data)
            return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)

        return wrapped

    model._maybe_symbolic_build = build
    model.train_step = rank1(model.train_step)
    model.test_step = rank1(model.test_step)


def configure_devices(args):
    """Create the distribution strategy; logical CPU devices must be set before TF touches devices."""
    import tensorflow as tf

    if args.distribute == "none":
        return None
    if args.distribute == "multiworker":
        return multiworker_strategy(getattr(args, "collective_timeout", DEFAULT_COLLECTIVE_TIMEOUT))
    gpus = tf.config.list_physical_devices("GPU")
    if gpus or args.cpu_devices <= 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args.cpu_devices)])
        except RuntimeError as error:
            raise UserError(f"--cpu-devices: TensorFlow devices are already initialised ({error})") from None
        strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in
                                                           tf.config.list_logical_devices("CPU")])
    quiet_tensorflow_info()
    return strategy


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files (Keras's rule: the chief, else worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def model_scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def pipeline_errors():
    """input_pipeline's context manager: a missing/corrupt image inside tf.data becomes a UserError (exit 2)."""
    from input_pipeline import user_errors_from_pipeline

    return user_errors_from_pipeline()


# TensorFlow's errors when a worker of a multi-worker cluster stops or cannot be reached mid-run.
PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")


@contextlib.contextmanager
def peer_errors(distribute: str):
    """With ``--distribute multiworker``: a collective that failed because a peer worker stopped (its
    process killed, its machine gone) is a one-line RunFailed (exit 1) instead of TensorFlow's
    traceback; the run is to be restarted on every worker with --resume."""
    try:
        yield
    except Exception as error:
        if distribute != "multiworker" or type(error).__name__ not in PEER_ERRORS:
            raise
        first = (str(getattr(error, "message", "")) or str(error)).strip().splitlines()
        raise RunFailed(f"--distribute multiworker: a peer worker stopped or cannot be reached "
                        f"({type(error).__name__}: {first[0][:200] if first else 'no detail'}); this worker stops "
                        f"too: start every worker of TF_CONFIG again with --resume") from None


def _unbuilt_metrics_line(record) -> bool:
    """absl filter: Keras's legacy HDF5 loader logs "Compiled the loaded model, but the compiled metrics
    have yet to be built" on every load of a compiled checkpoint (each --resume); the next fit builds
    them, so the line says nothing. Every other line passes."""
    return "compiled metrics have yet to be built" not in record.getMessage()


def load_checkpoint(path: Path, compile: bool = True):
    """keras.models.load_model with the project's custom layers; with ``compile`` the full optimizer state.

    Keras 3.15's legacy-HDF5 loader builds the optimizer on the functional model's own (empty)
    variable list, so it restores only ``iteration`` and ``learning_rate`` and silently drops
    slot variables such as SGD momentum (measured). We therefore recompile with the saved
    optimizer's configuration, build it on the trainable variables and assign every saved value.
    """
    import keras

    models = _models()
    if not Path(path).is_file():
        raise UserError(f"{path}: no such checkpoint")
    absl = logging.getLogger("absl")
    if _unbuilt_metrics_line not in absl.filters:
        absl.addFilter(_unbuilt_metrics_line)
    try:
        model = keras.models.load_model(path, custom_objects=models.custom_objects(), compile=compile)
    except (OSError, ValueError) as error:
        from checkpoints import _is_unsafe_error

        if _is_unsafe_error(error):  # Keras's text tells a Python caller of its API what to do
            raise UserError(f"{path}: the checkpoint contains a Lambda layer (arbitrary Python code), which "
                            f"train_fer.py never loads (training, resuming and testing use the project's own "
                            f"layers); evaluate a model you trust with eval_corrupted_rafdb.py --unsafe") from None
        raise UserError(f"{path}: cannot load the model ({error})") from None
    if compile and getattr(model, "optimizer", None) is not None:
        restore_optimizer(model, Path(path))
    return model


def restore_optimizer(model, path: Path) -> None:
    """Recompile ``model`` with a fresh copy of its optimizer holding every value saved in ``path``.

    Values are assigned variable by variable, matched by the saved variable path (e.g.
    ``loss_scale_optimizer/sgd/fc_kernel_momentum``), else by position with equal shapes:
    ``optimizer.set_weights`` on a mixed-precision LossScaleOptimizer does not reach the inner
    SGD's iteration and momentum variables.
    """
    import h5py

    with h5py.File(path, "r") as handle:
        if "optimizer_weights" not in handle:
            LOG.warning("%s: no optimizer state saved; the optimizer starts fresh", path)
            return
        group = handle["optimizer_weights"]
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
        values = [np.asarray(group[name]) for name in names]
    old = model.optimizer
    optimizer = type(old).from_config(old.get_config())
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["categorical_accuracy"])
    optimizer.build(model.trainable_variables)
    variables = list(optimizer.variables)
    if len(variables) != len(values):
        raise UserError(f"{path}: {len(values)} saved optimizer values, but the model's optimizer has "
                        f"{len(variables)} variables")
    pairs = _match_saved(variables, names, values)
    for variable, value in pairs:
        if tuple(variable.shape) != tuple(value.shape):
            raise UserError(f"{path}: saved optimizer value of shape {value.shape} does not fit "
                            f"{variable.path} {tuple(variable.shape)}")
        variable.assign(value)


def _match_saved(variables, names: list[str], values: list) -> list:
    """(variable, value) pairs: by saved path, equal or ending in ``/<variable path>`` (a reloaded
    LossScaleOptimizer names its inner slots ``sgd/...`` where the file has ``loss_scale_optimizer/sgd/...``);
    by position when a name is missing or ambiguous."""
    pairs, used = [], set()
    for variable in variables:
        hits = [i for i, name in enumerate(names)
                if i not in used and (name == variable.path or name.endswith("/" + variable.path))]
        exact = [i for i in hits if names[i] == variable.path]
        hits = exact or hits
        if len(hits) != 1:
            LOG.debug("optimizer values matched by position (%s: %d candidates)", variable.path, len(hits))
            return list(zip(variables, values))
        used.add(hits[0])
        pairs.append((variable, values[hits[0]]))
    return pairs


TMP_CHECKPOINT_RE = re.compile(r"^\.(checkpoint\.[0-9]+|checkpoint_last)\.([0-9]+)\.tmp\.hdf5$")


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


# A non-chief worker's scratch folder: <tmp>/train_fer_worker_<host hash>_<pid>_<random>.
WORKER_SCRATCH_RE = re.compile(r"train_fer_worker_([0-9a-f]{8})_(\d+)_")


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def worker_scratch():
    """The temporary folder a non-chief worker writes its checkpoints and logs to (only the chief
    writes the run directory). It is removed when the worker ends; SIGTERM or SIGKILL skip that, so
    a worker first removes the scratch folders of this machine's workers that are gone."""
    import tempfile

    remove_stale_worker_scratch(tempfile.gettempdir())
    return tempfile.TemporaryDirectory(prefix=f"train_fer_worker_{_host_tag()}_{os.getpid()}_")


def remove_stale_worker_scratch(folder: str | Path) -> list[str]:
    """Remove the worker scratch folders in ``folder`` left by workers of this host (name tag) and
    user that no longer run; a shared temporary folder's other hosts, users and live workers are
    left alone. Returns the names removed."""
    removed = []
    host = _host_tag()
    for path in sorted(Path(folder).glob("train_fer_worker_*")):
        match = WORKER_SCRATCH_RE.match(path.name)
        if (not match or match.group(1) != host or path.is_symlink() or not path.is_dir()
                or path.stat().st_uid != os.getuid() or not _process_gone(int(match.group(2)))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    if removed:
        LOG.info("removed %d scratch folder(s) of earlier workers that were killed: %s", len(removed),
                 ", ".join(removed))
    return removed


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Remove the ``.checkpoint*.<pid>.tmp.hdf5`` files of :func:`save_model_atomically` that a killed
    run left in ``run_dir`` (those of a process still running are kept); returns their names."""
    removed = []
    if not Path(run_dir).is_dir():
        return removed
    for path in sorted(Path(run_dir).iterdir()):
        match = TMP_CHECKPOINT_RE.match(path.name)
        if not match:
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and not _process_gone(pid):
            continue  # a live process (another run writing here?): not ours to remove
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    if removed:
        LOG.warning("%s: removed %d temporary checkpoint(s) of a run that was killed: %s", run_dir, len(removed),
                    ", ".join(removed))
    return removed


STATE_ATTR = "train_state"  # checkpoint_last.hdf5: the training state of the epoch it holds (JSON)
CENTERS_DATASET = "center_loss_centers"  # checkpoint_last.hdf5 with --center-loss: the centres of that epoch


def save_model_atomically(model, path: Path, state: dict | None = None, centers=None) -> None:
    """model.save to a temporary .hdf5 beside ``path``, then rename (never a half-written file).

    ``state`` (JSON) and ``centers`` (an array) are written into the same file before the rename, so
    a checkpoint_last.hdf5 always carries the training state of the epoch it holds (a kill between
    it and train_state.json cannot make --resume repeat or skip an epoch)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.hdf5")
    try:
        model.save(tmp)
        if state is not None or centers is not None:
            import h5py

            with h5py.File(tmp, "a") as handle:
                if state is not None:
                    handle.attrs[STATE_ATTR] = json.dumps(state)
                if centers is not None:
                    handle.create_dataset(CENTERS_DATASET, data=np.asarray(centers, dtype=np.float32))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def reseed_generators(model, seed: int, epoch: int) -> int:
    """Set every Keras SeedGenerator state of ``model`` (dropout) from (seed, epoch).

    The states are not saved in the .hdf5 checkpoints; re-deriving them at each epoch start makes
    a resumed run draw the same dropout masks as a continuous one. Returns the number set.
    """
    states = [v for v in model.variables if v.path.split("/")[-1] == "seed_generator_state"]
    for index, state in enumerate(states):
        value = seed64(seed, "dropout", int(epoch), index) % 2 ** 31
        state.assign(np.array([value, 0], dtype=state.dtype))
    return len(states)


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included, in order."""
    import keras

    found, stack = [], list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", []) or []))
    return found


def recalibrate_batchnorm(model, batches) -> int:
    """'Precise BN': set each BN layer's moving mean/variance to the equal-weight mean over ``batches``.

    Forward passes in training mode (batch statistics, no weight update) with momentum i/(i+1) for
    the i-th batch (0-based), so that after N batches moving = (1/N) Σ batch statistics. Runs eagerly
    (the momentum is read at call time); the layers' momenta are restored afterwards. Returns the
    number of batches used.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for index, batch in enumerate(batches):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = index / (index + 1)
            model(images, training=True)
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count


def _csv_value(value) -> str:
    """One CSV cell as Keras's CSVLogger writes it (plain ``str`` of a Python/numpy scalar)."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return str(value)


def append_log_row(path: Path, epoch: int, logs: dict) -> None:
    """Add one epoch's row to the CSV log by rewriting the whole file through a temporary name.

    Columns: ``epoch`` then the log keys in sorted order (Keras's CSVLogger layout); an existing
    header is kept, so a resumed run continues the same columns. A reader never sees a half row.
    """
    import csv
    import io

    keys = sorted(logs)
    text = path.read_text() if path.is_file() else ""
    if text:
        header = next(csv.reader([text.splitlines()[0]]))
        keys = [key for key in header if key != "epoch"]
        if not text.endswith("\n"):
            text += "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not text:
        writer.writerow(["epoch", *keys])
    writer.writerow([epoch, *(_csv_value(logs[key]) if key in logs else "NA" for key in keys)])
    atomic_write_text(path, text + buffer.getvalue())


def _atomic_csv_log_class():
    import keras

    class AtomicCSVLog(keras.callbacks.Callback):
        """``training_log.csv``: one row per epoch, the file replaced atomically (see append_log_row)."""

        def __init__(self, path: Path):
            super().__init__()
            self.path = Path(path)

        def on_epoch_end(self, epoch, logs=None):
            append_log_row(self.path, epoch, dict(logs or {}))

    return AtomicCSVLog


def make_callbacks(args, run_dir: Path, state: dict, train_ds=None, centers=None):
    """Callbacks of one epoch's ``fit`` call (the CSV log gets one row; the caller trims it on resume)."""
    import keras

    init, factor, every = args.lr_schedule
    AtomicCSVLog = _atomic_csv_log_class()

    class BestAndLastCheckpoint(keras.callbacks.Callback):
        """checkpoint.EE.hdf5 (1-based) on strict improvement of val_categorical_accuracy; last every epoch."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            value = logs.get(MONITOR)
            if value is None:
                raise RuntimeError(f"{MONITOR} missing from the epoch logs: {sorted(logs)}")
            value = float(value)
            if state["best"] is None or value > state["best"]:
                path = run_dir / CHECKPOINT_PATTERN.format(epoch=epoch + 1)
                LOG.info("epoch %d: %s improved from %s to %.5f, saving %s", epoch + 1, MONITOR,
                         "-" if state["best"] is None else f"{state['best']:.5f}", value, path.name)
                save_model_atomically(self.model, path)
                state["best"], state["best_epoch"] = value, epoch + 1
            state["completed_epochs"] = epoch + 1
            if centers is not None:  # training state of --center-loss (also inside checkpoint_last.hdf5)
                centers.save(run_dir)
            # checkpoint_last.hdf5 holds its own state and centres; --resume trusts it over train_state.json
            save_model_atomically(self.model, run_dir / LAST_CHECKPOINT, state=dict(state),
                                  centers=None if centers is None else centers.centers.numpy())
            atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1) + "\n")

    class PreciseBatchNorm(keras.callbacks.Callback):
        """--bn-recalibrate N: recompute the BN statistics before validation (fit calls on_test_begin there)."""

        def on_test_begin(self, logs=None):
            used = recalibrate_batchnorm(self.model, train_ds.take(args.bn_recalibrate))
            LOG.debug("BatchNorm statistics recomputed over %d training batches", used)

    class StopOnDivergence(keras.callbacks.Callback):
        """A training loss that is no longer finite (the run diverged, e.g. --lr too high) ends the run
        at the end of that epoch, before its checkpoint or log line is written: its accuracies are
        those of a network whose outputs are NaN (every image the first class), not a result."""

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise UserError(f"the training loss of epoch {epoch + 1} is {float(loss)}: the run diverged (no "
                                f"checkpoint of that epoch is written); train again with a lower --lr (this run: "
                                f"{args.lr}) or another --seed")

    callbacks = [
        StopOnDivergence(),
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(epoch, init, factor, every)),
        AtomicCSVLog(run_dir / LOG_FILE),
    ]
    if args.bn_recalibrate and train_ds is not None:
        callbacks.insert(0, PreciseBatchNorm())
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    return callbacks + [BestAndLastCheckpoint()]


def trim_to_replicas(labels, replicas: int, what: str):
    """Drop the last ``len % replicas`` images, so every batch splits evenly over the replicas.

    Under MirroredStrategy a batch whose size is not a multiple of the replica count fails in
    Keras 3.15 / TF 2.21 (AddN shape error, measured with 2 logical CPU devices).
    """
    extra = len(labels) % replicas
    if replicas <= 1 or not extra:
        return labels
    LOG.warning("%s: %d image(s) left out so that batches split evenly over %d replicas", what, extra, replicas)
    return labels.subset(range(len(labels) - extra))


def epoch_seed(seed: int, epoch: int) -> int:
    """The pipeline seed of 0-based ``epoch`` (shuffle order and augmentation), so a resumed run
    sees the same batches as a continuous one."""
    return seed64(seed, "train-epoch", int(epoch)) % 2 ** 31


def check_image_files(data, label_sets) -> None:
    """A UserError naming the first image of ``label_sets`` whose file no reader opens, before any
    training: its header is read (no pixels decoded; about 40 us a file), so a bad test image is
    found now rather than after the last epoch. Datasets whose images are no files (a FER CSV) have
    nothing to check; a file whose header reads but whose pixels are damaged is found when decoded."""
    from dataset_writer import image_file_size

    for labels in {id(labels): labels for labels in label_sets}.values():  # val is test with --val-split test
        for name in dict.fromkeys(labels.names):
            try:
                path = data.image_path(name)
            except UserError:
                return  # not file-backed
            image_file_size(path)


def build_datasets(args, image_size, channels, replicas: int = 1):
    """(train, val, test label sets, train_dataset(epoch) -> tf.data, validation dataset)."""
    import input_pipeline

    data = open_data(args)
    train = data.labels("train")
    test = data.labels("test")
    if args.val_split == "holdout":
        train, val = data.train_validation(args.val_fraction, args.seed)
        if data.has_validation:
            LOG.info("validation: the dataset's own split %s", data.split_name("validation"))
    else:
        LOG.warning("--val-split test: checkpoints are selected on the TEST set (the original's protocol)")
        val = test
    check_image_files(data, (test, val, train))  # before the first epoch, not after the last
    train = trim_to_replicas(train, replicas, "training set")
    val = trim_to_replicas(val, replicas, "validation set")
    if not len(train):
        raise UserError(f"{data.title}: no training image left (after the hold-out"
                        f"{' and the trim to a multiple of the replicas' if replicas > 1 else ''}); add images")
    warn_empty_classes(train, data.class_names, data.title)
    transform = None
    if args.augmentation != "no" or args.cutout:
        transform = augmentations.make_train_transform(
            args.augmentation, crop=args.crop, colour=args.colour, cutout=args.cutout,
            honour_policy_prob=args.honour_policy_prob, augmix_width=augmix_params(args)[0],
            augmix_depth=augmix_params(args)[1], augmix_severity=augmix_params(args)[2])
    common = dict(image_size=image_size, channels=channels, batch_size=args.batch, crop=args.crop)
    if args.workers:
        common["num_parallel_calls"] = args.workers
    common["read"] = data.read_image

    def train_dataset(epoch: int):
        if getattr(args, "jsd", False):  # (clean, augmix, augmix) views for the JSD step
            import robust_training

            width, depth, severity = augmix_params(args)
            views = augmentations.AugMixViews(crop=args.crop, width=width, depth=depth, severity=severity)
            return robust_training.make_views_dataset(
                train.names, train.labels, read=data.read_image, image_size=image_size, channels=channels, batch_size=args.batch,
                views=views, shuffle=True, seed=epoch_seed(args.seed, epoch),
                **({"num_parallel_calls": args.workers} if args.workers else {}))
        return input_pipeline.make_dataset(train.names, train.labels, shuffle=True,
                                           seed=epoch_seed(args.seed, epoch), augment=transform, **common)

    val_ds = input_pipeline.make_dataset(val.names, val.labels, **common)
    note = test.filter_note()
    LOG.info("%s: %d train, %d validation (%s), %d test; labels %s%s", data.title, len(train), len(val),
             validation_source(args, data), len(test), args.labels, f" (test rows: {note})" if note else "")
    return train, val, test, train_dataset, val_ds


def empty_classes(labels: np.ndarray, class_names) -> list[str]:
    """The classes that no training label gives any weight (a hard label's column of zeros, or a soft
    label's column that sums to 0)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    return [name for name, mass in zip(class_names, labels.sum(axis=0)) if not mass > 0]


def warn_empty_classes(train, class_names, title: str) -> None:
    """A warning naming the classes with no training image: the network is still built with their
    outputs (the class list is the dataset's), but it never sees an example of them."""
    missing = empty_classes(train.labels, class_names)
    if missing:
        LOG.warning("%s: no training image of class(es) %s: the model keeps their outputs but can never learn "
                    "them (check the dataset's class folders or labels; docs/DATASETS.md)", title,
                    ", ".join(missing))


def distribute_options(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def predict_classes(model, args, labels, image_size, channels) -> np.ndarray:
    """Argmax predictions of ``model`` on the images of ``labels`` (evaluation pipeline: no augmentation)."""
    import input_pipeline

    data = open_data(args)
    dataset = input_pipeline.make_dataset(labels.names, None, image_size=image_size, channels=channels,
                                          batch_size=args.batch, crop=args.crop, read=data.read_image)
    with contextlib.redirect_stdout(sys.stderr), pipeline_errors():
        probabilities = model.predict(dataset, verbose=0)
    return np.argmax(probabilities, axis=1)


def evaluate_test(model, args, test, image_size, channels, model_classes=None) -> dict:
    """Clean test accuracy (argmax; docs/BENCHMARK.md §5.1) with dataset, split, N and the label protocol.

    ``model_classes``: the model's output names when they may differ from the dataset's; classes
    are then matched by name (``datasets.map_classes``) and test images of classes the model cannot
    output are left out and counted (``n_unmapped``).
    """
    import input_pipeline

    data = open_data(args)
    names = tuple(model_classes) if model_classes is not None else tuple(data.class_names)
    try:
        mapping = datasets.map_classes(names, data.class_names)
    except ValueError as error:
        raise UserError(f"model classes {list(names)}: {error}") from None
    keep = np.flatnonzero(mapping.evaluable(test.classes))
    if not len(keep):
        raise UserError(f"the model's classes ({', '.join(names)}) cover none of the test images of "
                        f"{data.title} ({', '.join(data.class_names)})")
    evaluated = test.subset(keep)
    dataset = input_pipeline.make_dataset(evaluated.names, None, image_size=image_size, channels=channels,
                                          batch_size=args.batch, crop=args.crop, read=data.read_image)
    with contextlib.redirect_stdout(sys.stderr), pipeline_errors():
        probabilities = model.predict(dataset, verbose=0)
    predicted = np.argmax(probabilities, axis=1)
    correct = int(np.sum(predicted == mapping.to_model(evaluated.classes)))
    return {"accuracy": correct / len(evaluated), "correct": correct, "n": len(evaluated), "labels": args.labels,
            "dataset": data.name, "split": data.split_name("test"), "n_unmapped": int(len(test) - len(evaluated)),
            "unmapped_classes": list(mapping.missing),
            "n_dropped_by_vote_filter": int(test.n_dropped), "crop": args.crop}


def code_version() -> str:
    """``git describe --always --dirty`` of this file's repository, or "unknown"."""
    import subprocess

    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "code": code_version()}


def train_epochs(args, model, trainer, strategy, train_dataset, val_ds, write_dir: Path, state, centers,
                 initial_epoch: int, verbose: int) -> None:
    """Epochs ``initial_epoch`` .. ``args.epochs - 1``: one fit call per epoch with the epoch's own
    pipeline seed, so a resumed run sees the same shuffle order and augmentation draws as a
    continuous one."""
    import keras

    for epoch in range(initial_epoch, args.epochs):
        with signals_at_step_boundaries(args.distribute != "multiworker") as pending:
            train_ds = train_dataset(epoch)
            reseed_generators(model, args.seed, epoch)
            if strategy is not None:
                train_ds = distribute_options(train_ds)
            with contextlib.redirect_stdout(sys.stderr), pipeline_errors(), peer_errors(args.distribute):
                # (Keras prints progress on stdout)
                callbacks = keras.callbacks.CallbackList(  # so that progress reads "Epoch e/<epochs>"
                    make_callbacks(args, write_dir, state, train_ds, centers) + [pending_signal_callback(pending)],
                    add_history=True, add_progbar=True, verbose=verbose, epochs=args.epochs, steps=None,
                    model=trainer)
                trainer.fit(train_ds, validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch,
                            callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles


@contextlib.contextmanager
def signals_at_step_boundaries(enabled: bool = True):
    """While active (one epoch's pipeline and ``fit``), Ctrl-C and SIGTERM are recorded in the list
    it yields and raised (KeyboardInterrupt, :class:`Terminated`) by :func:`raise_pending_signal`: by
    the callback of :func:`pending_signal_callback` before the next step, after the epoch's checkpoint,
    and here at the end. Raised at once, a signal could land inside TensorFlow's tracing of the first
    step or of a ``Dataset.map`` function, which then ended the run with a SystemError traceback
    (about 1 in 10 Ctrl-C in the first step) instead of "interrupted". A second Ctrl-C stops at once;
    a second SIGTERM ends the process (its default action). Not under multiworker (see
    :func:`sigterm_raises`), and only in the main thread."""
    import threading

    pending: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def record(signum, frame):
        if signum == signal.SIGINT and pending:
            raise KeyboardInterrupt
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        pending.append(signum)
        with contextlib.suppress(OSError):  # print() could re-enter a write the signal interrupted
            os.write(2, b"\n" + STOP_NOTICE[signum].encode() + b"\n")

    previous = {signum: signal.signal(signum, record) for signum in STOP_NOTICE}
    try:
        yield pending
    finally:
        for signum, handler in previous.items():
            if not (signum == signal.SIGTERM and signum in pending):  # a second SIGTERM: its default
                signal.signal(signum, handler)
    raise_pending_signal(pending)


STOP_NOTICE = {signal.SIGINT: "Ctrl-C: stopping before the next training step (Ctrl-C again stops at once)",
               signal.SIGTERM: "SIGTERM: stopping before the next training step"}


def raise_pending_signal(pending: list[int]) -> None:
    """Raise what a signal recorded by :func:`signals_at_step_boundaries` asks for."""
    if signal.SIGTERM in pending:
        LOG.warning("SIGTERM: stopping the run")
        raise Terminated()
    if pending:
        raise KeyboardInterrupt


def pending_signal_callback(pending: list[int]):
    """A callback that raises a recorded signal before each training or validation step and at the end
    of the epoch, after the checkpoint callbacks (it comes last)."""
    import keras

    class RaisePendingSignal(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise_pending_signal(pending)

        on_test_batch_begin = on_train_batch_begin
        on_epoch_end = on_train_batch_begin

    return RaisePendingSignal()


def validation_source(args, data) -> str:
    """Where checkpoints are selected, in words: the test split (--val-split test), the dataset's own
    validation split, or a held-out part of train."""
    if args.val_split == "test":
        return "test"
    if data.has_validation:
        return f"{data.split_name('validation')} (the dataset's own validation split)"
    return f"holdout ({args.val_fraction:g} of train)"


def run_config(args, net: str, input_shape, model) -> dict:
    models = _models()
    channel_order = models.CHANNEL_ORDER.get(net, "RGB")  # at the backbone, after the preprocessing layers
    return {
        "net": net, "input_shape": [int(v) for v in input_shape], "channel_order": channel_order,
        "preprocessing": args.preprocessing, "preprocessing_in_model": True, "mean_order": args.mean_order,
        "colour": args.colour, "labels": args.labels, "class_names": list(open_data(args).class_names),
        "dataset": open_data(args).describe(),
        "crop": args.crop, "lpf": args.lpf, "augmentation": args.augmentation, "cutout": bool(args.cutout),
        "effective_augmentation": "cutout" if args.cutout else args.augmentation,  # --cutout replaces the kind
        "honour_policy_prob": bool(args.honour_policy_prob), "jsd": bool(getattr(args, "jsd", False)),
        # AugMix's parameters only for an AugMix run (they shape nothing else)
        "augmix": (dict(zip(("width", "depth", "severity"), augmix_params(args)))
                   if args.augmentation == "augmix" else None), "seed": args.seed, "val_split": args.val_split,
        "validation": validation_source(args, open_data(args)), "val_fraction": args.val_fraction, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
        # the schedule in use: --lr as typed may leave out the factor and the interval (their defaults)
        "lr_schedule": dict(zip(("init", "factor", "every"), parse_lr(args.lr))),
        "lr_effective": "{:g}:{:g}:{:d}".format(*parse_lr(args.lr)),
        "momentum": 0.9 if args.momentum else 0.0, "weight_decay": args.weight_decay,
        "bn_recalibrate": args.bn_recalibrate, "pretraining": args.pretraining, "distribute": args.distribute,
        "center_loss": ({"weight": args.center_loss_weight, "alpha": args.center_loss_alpha}
                        if getattr(args, "center_loss", False) else None),
        "mixed_precision": bool(args.mixed_precision), "deterministic": bool(getattr(args, "deterministic", False)),
        "params": int(model.count_params()),
        "versions": versions(), "argv": args.argv, "args": run_args(args),
    }


def best_from_log(run_dir: Path, epochs: int) -> tuple[float, int] | None:
    """(best val_categorical_accuracy, its 1-based epoch) over the first ``epochs`` rows of the CSV log."""
    import csv

    path = run_dir / LOG_FILE
    if not path.is_file():
        return None
    best = None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                epoch, value = int(row["epoch"]), float(row[MONITOR])
            except (KeyError, TypeError, ValueError):
                continue
            if epoch < epochs and (best is None or value > best[0]):
                best = (value, epoch + 1)
    return best


def checkpoint_state(path: Path) -> tuple[dict | None, np.ndarray | None]:
    """(training state, center-loss centres) written into ``path`` by :func:`save_model_atomically`;
    None for what it does not hold (a checkpoint of an older version, a numbered checkpoint)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(STATE_ATTR)
            centers = np.asarray(handle[CENTERS_DATASET]) if CENTERS_DATASET in handle else None
    except OSError as error:
        raise UserError(f"{path}: cannot read the checkpoint ({error})") from None
    if text is None:
        return None, centers
    try:
        state = json.loads(text.decode("utf-8") if isinstance(text, bytes) else str(text))
        int(state["completed_epochs"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: unreadable training state in the checkpoint ({error})") from None
    return state, centers


def resume_point(run_dir: Path) -> tuple[Path, int, dict]:
    """(checkpoint to load, epochs already done, state) for --resume; state["best"] None = unknown yet.

    checkpoint_last.hdf5 carries the state of the epoch it holds; train_state.json (written after it)
    is only read for checkpoints of older versions. When the two disagree (the run was killed
    between the two writes), the checkpoint's state is the right one."""
    state_path = run_dir / STATE_FILE
    last = run_dir / LAST_CHECKPOINT
    if last.is_file():
        embedded, _ = checkpoint_state(last)
        if embedded is not None:
            if state_path.is_file():
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    written = int(json.loads(state_path.read_text())["completed_epochs"])
                    if written != int(embedded["completed_epochs"]):
                        LOG.warning("%s says %d completed epochs, %s holds epoch %d (the run stopped between "
                                    "the two writes): resuming after epoch %d", state_path, written, last.name,
                                    int(embedded["completed_epochs"]), int(embedded["completed_epochs"]))
            return last, int(embedded["completed_epochs"]), embedded
    if state_path.is_file() and last.is_file():
        try:
            state = json.loads(state_path.read_text())
            return last, int(state["completed_epochs"]), state
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{state_path}: unreadable training state ({error})") from None
    found = numbered_checkpoints(run_dir)
    if not found:
        raise UserError(f"--dir {run_dir}: nothing to resume (no {LAST_CHECKPOINT} or checkpoint.EE.hdf5)")
    epoch, path = found[-1]
    best = best_from_log(run_dir, epoch)
    LOG.warning("%s missing: resuming from %s at epoch %d (best %s so far: %s)", STATE_FILE, path.name, epoch,
                MONITOR, "from the validation set" if best is None else f"{best[0]:.5f}, from {LOG_FILE}")
    state = {"best": None if best is None else best[0], "best_epoch": epoch, "completed_epochs": epoch}
    return path, epoch, state


def network_signature(model) -> tuple:
    """What identifies a network's architecture: its input shape, the class of every layer (nested
    models included, in order) and the shape of every weight. Names are left out (Keras numbers them
    per process)."""
    classes = []

    def walk(layer):
        for inner in getattr(layer, "layers", ()):
            classes.append(type(inner).__name__)
            walk(inner)

    walk(model)
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    return shape, tuple(classes), tuple(tuple(weight.shape) for weight in model.weights)


def build_run_model(args, net: str, input_size, channels: int):
    """The untrained network of a run's settings (ValueError where they do not build)."""
    return _models().build_model(net, input_size, channels=channels, num_classes=open_data(args).num_classes,
                                 lpf=args.lpf, preprocessing=args.preprocessing, mean_order=args.mean_order,
                                 colour=args.colour, weight_decay=args.weight_decay)


def check_resumed_network(model, checkpoint: Path, net: str, input_size, channels: int, args) -> None:
    """UserError when ``model`` (the checkpoint --resume loads) is not the network run.json
    describes (--net, input size, --lpf, preprocessing, ...): built anew here and compared by
    :func:`network_signature`."""
    try:
        expected = build_run_model(args, net, input_size, channels)
    except ValueError:
        return  # the run's own settings no longer build: the checkpoint is the only description left
    mine, theirs = network_signature(model), network_signature(expected)
    if mine == theirs:
        return
    what = ("input shape " + "x".join(str(v) for v in mine[0]) + f", run.json's {'x'.join(str(v) for v in theirs[0])}"
            if mine[0] != theirs[0] else
            f"{len(mine[1])} layers and {len(mine[2])} weights, run.json's network (--net {args.net}, --lpf "
            f"{args.lpf}, --preprocessing {args.preprocessing}) {len(theirs[1])} layers and {len(theirs[2])} weights"
            if (len(mine[1]), len(mine[2])) != (len(theirs[1]), len(theirs[2])) else
            f"other layers or weight shapes than run.json's network (--net {args.net}, --lpf {args.lpf})")
    raise UserError(f"{checkpoint}: not a checkpoint of this run's network ({what}): copied from another run? "
                    f"Nothing was changed; put back the run's own {checkpoint.name}, or train a new run")


def start_log(run_dir: Path, completed_epochs: int) -> None:
    """Keep the CSV rows of the epochs already done (none for a new run); later epochs are appended."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if completed_epochs == 0 or not lines:
        path.unlink()
        return
    import csv

    keep = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line]), None)
        with contextlib.suppress(ValueError, IndexError, TypeError):
            if int(row[0]) < completed_epochs:
                keep.append(line)
    atomic_write_text(path, "".join(keep))


def train(args) -> int:
    import keras

    models = _models()
    strategy = configure_devices(args)
    if strategy is not None:
        LOG.info("distribution: %s with %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(args.seed)
    if getattr(args, "deterministic", False):
        enable_determinism()
    if args.mixed_precision:
        import inference

        inference.check_mixed_precision()  # a clear error where oneDNN would abort on the CPU
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net, input_size = models.resolve_net(args.net, args.input_size)
    except ValueError as error:
        raise UserError(f"--net {args.net}: {error}") from None
    channels = 3
    image_size = (input_size, input_size)

    created = False
    if args.resume:
        run_dir = args.dir
    else:
        run_dir = args.dir or args.out_root / run_dir_name(args.argv, datetime.datetime.now(), args.cutout)
        if run_dir.exists() and any(run_dir.glob("checkpoint*.hdf5")):
            raise UserError(f"--dir {run_dir}: already holds checkpoints; pass --resume to continue it "
                            "or choose another --dir")
        if chief:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        remove_stale_temporaries(run_dir)
    # Only the chief writes the run directory; other workers write to a temporary folder (as Keras's callbacks do)
    scratch = None if chief else worker_scratch()
    write_dir = run_dir if chief else Path(scratch.name)
    LOG.info("run directory: %s%s", run_dir, "" if chief else f" (this worker writes to {write_dir})")
    try:
        with sigterm_raises(args.distribute != "multiworker"):
            return _train(args, strategy, net, input_size, channels, image_size, run_dir, write_dir, chief)
    except UserError:
        # A run this call created that stopped on a user error before its first checkpoint: leave no
        # empty or half-begun run folder behind (a later run would find it in --out-root).
        if created and not any(run_dir.glob("checkpoint*.hdf5")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            scratch.cleanup()


class Terminated(SignalExit):
    """SIGTERM during training: run.json says "terminated" and the process exits 143 (128 + 15)."""

    def __init__(self):
        super().__init__(143)


@contextlib.contextmanager
def sigterm_raises(enabled: bool = True):
    """While active, SIGTERM raises :class:`Terminated` in the main thread (the run's status is
    written on the way out); the previous handler is restored afterwards. Not under multiworker,
    where SIGTERM keeps its default action (a worker blocked in a collective never runs Python)."""
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise_pending_signal([signal.SIGTERM])

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def center_loss_file() -> str:
    from center_loss import CENTERS_FILE

    return CENTERS_FILE


def attach_center_loss(args, model):
    """--center-loss: install the centre term's train step on ``model`` (in the strategy's scope); or None."""
    if not getattr(args, "center_loss", False):
        return None
    from center_loss import CenterLoss

    centers = CenterLoss(model, open_data(args).num_classes, weight=args.center_loss_weight, alpha=args.center_loss_alpha)
    LOG.info("center loss: weight %g, alpha %g, %d-d embedding", centers.weight, centers.alpha, centers.dim)
    return centers


def _train(args, strategy, net, input_size, channels, image_size, run_dir: Path, write_dir: Path,
           chief: bool) -> int:
    import keras

    models = _models()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if args.batch % replicas:
        raise UserError(f"--batch {args.batch}: must be a multiple of the {replicas} replicas")
    train_set, val_set, test_set, train_dataset, val_ds = build_datasets(args, image_size, channels, replicas)
    if strategy is not None:
        val_ds = distribute_options(val_ds)

    init, _, _ = args.lr_schedule
    pretraining_report = None
    with model_scope(strategy):
        if args.resume:
            checkpoint, initial_epoch, state = resume_point(run_dir)
            if args.epochs < initial_epoch:
                raise UserError(f"--epochs {args.epochs}: {run_dir} has already trained {initial_epoch} epochs; "
                                f"--resume continues up to --epochs (give at least {initial_epoch}), it "
                                f"does not go back (train_fer.py --mode test --epoch E tests an earlier one)")
            if initial_epoch < args.epochs:  # a finished run: finish_training says so, with no range
                LOG.info("resuming from %s after epoch %d", checkpoint.name, initial_epoch)
            model = load_checkpoint(checkpoint)
            # Before anything is removed: the checkpoint must hold the network run.json describes (a
            # checkpoint_last.hdf5 copied from another run was trained on, or crashed, after the
            # run's own later checkpoints had been deleted as unfinished).
            check_resumed_network(model, checkpoint, net, input_size, channels, args)
            for epoch, path in numbered_checkpoints(run_dir):
                if epoch > initial_epoch and chief:  # of an epoch that did not finish: it is trained again
                    LOG.warning("%s: of epoch %d, which did not finish (the run stopped); removed", path, epoch)
                    path.unlink()
            centers = attach_center_loss(args, model)
            saved_centers = checkpoint_state(checkpoint)[1] if centers is not None else None
            if saved_centers is not None:  # the centres of the epoch the checkpoint holds
                if tuple(saved_centers.shape) != tuple(centers.centers.shape):
                    raise UserError(f"{checkpoint}: saved centres of shape {saved_centers.shape}, the model "
                                    f"needs {tuple(centers.centers.shape)}")
                centers.centers.assign(saved_centers)
                LOG.info("center loss: centres restored from %s", checkpoint.name)
            elif centers is not None:
                if centers.load(run_dir):
                    LOG.info("center loss: centres restored from %s", run_dir / center_loss_file())
                else:
                    LOG.warning("center loss: no saved centres in %s; they restart at 0", run_dir)
            if state.get("best") is None and initial_epoch > 0:
                with contextlib.redirect_stdout(sys.stderr), pipeline_errors():
                    logs = model.evaluate(val_ds, verbose=0, return_dict=True)
                state["best"] = float(logs["categorical_accuracy"])
                LOG.info("%s of %s: %.5f", MONITOR, checkpoint.name, state["best"])
        else:
            initial_epoch, state = 0, {"best": None, "best_epoch": None, "completed_epochs": 0}
            try:
                model = build_run_model(args, net, input_size, channels)
            except ValueError as error:
                raise UserError(f"--net {args.net}: {error}") from None
            if args.pretraining:
                try:
                    report = models.load_pretrained(model, args.pretraining)
                except (OSError, ValueError) as error:
                    raise UserError(f"--pretraining {args.pretraining}: {error}") from None
                LOG.info("pretraining: %d layers matched, %d mismatched, %d missing", len(report["matched"]),
                         len(report["mismatched"]), len(report["missing"]))
                if not report.get("matched") and not report.get("matched_by_order"):
                    # Nothing loaded: the run would start from random weights while recording a pretraining.
                    unused = report.get("unused") or []
                    shown = ", ".join(map(str, unused[:5])) + (
                        f" and {len(unused) - 5} more" if len(unused) > 5 else "")
                    raise UserError(f"--pretraining {args.pretraining}: no layer of the file matches a layer of "
                                    f"--net {args.net} by name and shape ({len(report.get('mismatched', []))} of "
                                    f"the same name with other shapes; the file's layers: {shown or 'none'}), so "
                                    f"nothing would be loaded; give weights saved from this network")
                pretraining_report = {
                    "file": report.get("file"), "matched": len(report.get("matched", [])),
                    "mismatched": report.get("mismatched", []), "missing": report.get("missing", []),
                    "unused": report.get("unused", []),
                    "matched_by_order": len(report.get("matched_by_order", []))}
            model.compile(
                optimizer=keras.optimizers.SGD(learning_rate=init, momentum=0.9 if args.momentum else 0.0),
                loss="categorical_crossentropy", metrics=["categorical_accuracy"])
            centers = attach_center_loss(args, model)
        trainer = model  # what fit runs; checkpoints always hold the functional ``model``
        if getattr(args, "jsd", False):
            import robust_training

            trainer = robust_training.wrap_for_jsd(model)
    if args.distribute == "multiworker" and strategy.num_replicas_in_sync > 1:
        # one replica: Keras reduces nothing, and the rank-1 logs would reach TensorBoard as they are
        patch_for_multiworker(trainer, strategy)
    if args.val_split == "holdout":  # only once the model exists: a bad --pretraining leaves no file
        atomic_write_text(write_dir / VALIDATION_NAMES, name_lines(val_set.names))
    config = run_config(args, net, model.input_shape[1:], model)
    config["run_dir"] = str(run_dir)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type:
        config["task"] = {"type": resolver.task_type, "index": int(resolver.task_id or 0)}
    if args.resume:  # apply_run_args refused a run folder without run.json
        previous = read_run_json(run_dir / RUN_FILE)
        config["resumed"] = previous.get("resumed", []) + [{"argv": args.argv, "from_epoch": initial_epoch,
                                                            "code": config["versions"]["code"]}]
        config["argv"] = previous.get("argv", args.argv)
        pretraining_report = previous.get("pretraining_report", pretraining_report)
    config["pretraining_report"] = pretraining_report
    config["status"] = "training"
    atomic_write_text(write_dir / RUN_FILE, json.dumps(config, indent=1) + "\n")
    LOG.info("%s at %dx%d, %d parameters, lr %s, momentum %s%s",
             net, input_size, input_size, model.count_params(), args.lr, 0.9 if args.momentum else 0,
             f", epochs {initial_epoch + 1} to {args.epochs}" if initial_epoch < args.epochs else "")
    if importlib.util.find_spec("tensorboard") is None:  # tf.summary needs it; the tensorflow wheel lacks it
        LOG.warning("TensorBoard logs skipped: the 'tensorboard' package is not installed")

    try:
        return finish_training(args, model, trainer, strategy, train_dataset, val_ds, write_dir, run_dir, state,
                               centers, initial_epoch, chief, config, test_set, image_size, channels)
    except BaseException as error:  # Ctrl-C, a failure: run.json says so, not "training" for good
        config["status"] = ("interrupted" if isinstance(error, KeyboardInterrupt)
                            else "terminated" if isinstance(error, Terminated) else "failed")
        with contextlib.suppress(OSError):
            atomic_write_text(write_dir / RUN_FILE, json.dumps(config, indent=1) + "\n")
        raise


def finish_training(args, model, trainer, strategy, train_dataset, val_ds, write_dir: Path, run_dir: Path, state,
                    centers, initial_epoch: int, chief: bool, config: dict, test_set, image_size, channels) -> int:
    """The epochs left, then (the chief) the test accuracy of the best checkpoint: results.json and
    run.json with status "done"."""
    if initial_epoch < args.epochs:
        start_log(write_dir, initial_epoch)
        verbose = 1 if sys.stderr.isatty() else 2
        train_epochs(args, model, trainer, strategy, train_dataset, val_ds, write_dir, state, centers,
                     initial_epoch, verbose)
    else:
        LOG.info("%s: finished, all %d epochs already trained; nothing to train (a larger --epochs trains "
                 "on); testing its best checkpoint", run_dir, args.epochs)

    if not chief:  # the chief evaluates and reports; a worker's files go to its scratch folder
        return 0
    best = best_checkpoint(write_dir) or best_checkpoint(run_dir)
    if best is None:
        raise UserError(f"{run_dir}: no checkpoint was written")
    best_model = load_checkpoint(best, compile=False)
    result = evaluate_test(best_model, args, test_set, image_size, channels)
    result.update(checkpoint=best.name, best_validation_accuracy=state.get("best"), val_split=args.val_split,
                  validation=validation_source(args, open_data(args)))
    print(f"test accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}, "
          f"{open_data(args).title} {result['split']}, labels {args.labels}, "
          f"checkpoint {best.name}, selected on {result['validation']})")
    atomic_write_text(write_dir / RESULTS_FILE, json.dumps(result, indent=1) + "\n")
    config.update(status="done", test=result)
    atomic_write_text(write_dir / RUN_FILE, json.dumps(config, indent=1) + "\n")
    return 0


TEST_MODE_PARTS = ("test", "val", "train")  # the original's order


def name_lines(names) -> str:
    """``validation_names.txt``: one image id per line, as it is (spaces and any Unicode kept); an id
    that holds a line break or starts with a double quote is written as a JSON string instead."""
    lines = [json.dumps(name, ensure_ascii=False) if ("\n" in name or "\r" in name or name.startswith('"'))
             else name for name in names]
    return "".join(line + "\n" for line in lines)


def read_name_lines(path: Path) -> list[str]:
    """The ids of a :func:`name_lines` file (UTF-8; blank lines ignored)."""
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        line = line.removesuffix("\r")
        if not line:
            continue
        if line.startswith('"'):
            try:
                line = json.loads(line)
            except ValueError:
                raise UserError(f"{path}, line {number}: a quoted name that is not a JSON string") from None
        names.append(line)
    return names


def test_mode_sets(args, run_dir: Path | None) -> dict:
    """{part: LabelSet} for --mode test: the test split, the validation images and the rest of train.

    A dataset with its own validation split (FER: PrivateTest) uses it. Otherwise the validation
    images are the run's ``validation_names.txt`` (the hold-out); without it (a run selected on the
    test set, or a bare checkpoint) validation is the test split, as in the original.
    """
    data = open_data(args)
    test = data.labels("test")
    if data.has_validation:
        train, val = data.train_validation(args.val_fraction, args.seed)
        return {"test": test, "val": val, "train": train}
    train = data.labels("train")
    names_file = run_dir / VALIDATION_NAMES if run_dir is not None else None
    if names_file is not None and names_file.is_file():
        held = set(read_name_lines(names_file))
        val = train.subset([i for i, name in enumerate(train.names) if name in held])
        train = train.subset([i for i, name in enumerate(train.names) if name not in held])
        if len(val) != len(held):
            LOG.warning("%s: %d of its %d names are not training images of %s", names_file,
                        len(held) - len(val), len(held), data.title)
    else:
        LOG.warning("no %s in the run's folder%s: 'val' is the test split (the original's protocol)",
                    VALIDATION_NAMES, f" {run_dir}" if run_dir is not None else "")
        val = test
    return {"test": test, "val": val, "train": train}


def checkpoint_tag(checkpoint: Path) -> str | None:
    """None for the run's own (best) checkpoint; else ``epochEE`` for checkpoint.EE.hdf5, or the file's
    stem (``checkpoint_last``, any other file)."""
    checkpoint = Path(checkpoint)
    best = best_checkpoint(checkpoint.parent)
    if best is not None and best.resolve() == checkpoint.resolve():
        return None
    match = CHECKPOINT_RE.match(checkpoint.name)
    if match:
        return f"epoch{int(match.group(1)):02d}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", checkpoint.stem)


def confusion_stem(dataset: str | None, labels: str | None, checkpoint: str | None) -> str:
    """``confusion_[<dataset>_][<labels>_][<checkpoint>_]``: each part only when it is not the run's own
    (another dataset; another label protocol on the run's dataset; a checkpoint other than the best),
    so testing it does not replace the run's own confusion_<part>.* files."""
    return "confusion_" + "".join(f"{part}_" for part in (dataset, labels, checkpoint) if part)


def test_run_folder(args, checkpoint: Path) -> Path:
    """The run a --mode test checkpoint belongs to: the checkpoint's folder when it holds a run.json,
    else --dir when given (a checkpoint copied out of the run), else the checkpoint's folder."""
    checkpoint = Path(checkpoint)
    if (checkpoint.parent / RUN_FILE).is_file() or args.dir is None:
        return checkpoint.parent
    return Path(args.dir)


def test_mode(args) -> int:
    """--mode test: accuracy and confusion matrix of test, validation and train (docs/BENCHMARK.md §9.5).

    Prints the clean test accuracy line, then per part the original's layout (confusion.format_report);
    writes ``confusion_<part>.csv`` and ``confusion_<part>.png`` beside the checkpoint, with the dataset,
    the label protocol and the checkpoint in the name when they are not the run's own (:func:`confusion_stem`).
    """
    import confusion

    epoch = getattr(args, "epoch", None)
    if epoch is not None:
        if args.dir is None or args.checkpoint is not None:
            raise UserError("--epoch E needs --dir RUN (and no --checkpoint)")
        checkpoint = args.dir / CHECKPOINT_PATTERN.format(epoch=epoch)
        if not checkpoint.is_file():
            found = ", ".join(str(e) for e, _ in numbered_checkpoints(args.dir)) or "none"
            raise UserError(f"--epoch {epoch}: no {checkpoint} (epochs with a checkpoint: {found})")
    else:
        checkpoint = args.checkpoint or (best_checkpoint(args.dir) if args.dir else None)
    if checkpoint is None:
        if not args.dir.is_dir():
            raise UserError(f"--dir {args.dir}: no such run directory")
        raise UserError(f"--dir {args.dir}: no checkpoint.EE.hdf5 in it")
    checkpoint = Path(checkpoint)
    # The run whose settings and held-out images apply (test_run_folder; apply_run_dataset read the same).
    run_folder = test_run_folder(args, checkpoint)
    sidecar = run_folder / RUN_FILE
    model_classes = None
    run_dataset = None
    run_labels = None
    if sidecar.is_file():
        config = read_run_json(sidecar)
        model_classes = config.get("class_names")
        saved = config.get("args") or {}
        if saved:  # (dataset, data folder) of the run; older run.json files without "args" say nothing
            folder = saved.get("data") or saved.get("rafdb")
            run_dataset = (saved.get("dataset", "rafdb"), Path(folder).resolve() if folder else None)
        args.crop = config.get("crop", args.crop)
        run_labels = config.get("labels")
    import checkpoints

    model = checkpoints.float32_on_cpu(load_checkpoint(checkpoint, compile=False), checkpoint,
                                       _models().custom_objects())
    _, height, width, channels = model.input_shape
    data = open_data(args)
    n_outputs = int(model.output_shape[-1])
    if model_classes is None:
        if n_outputs != data.num_classes:
            raise UserError(f"{checkpoint}: {n_outputs} outputs and no run.json naming them; {data.title} has "
                            f"{data.num_classes} classes")
        model_classes = data.class_names
    elif len(model_classes) != n_outputs:
        raise UserError(f"{sidecar}: {len(model_classes)} class_names for a model with {n_outputs} outputs")
    names = list(model_classes)
    try:
        mapping = datasets.map_classes(tuple(names), data.class_names)
    except ValueError as error:
        raise UserError(f"model classes {names}: {error}") from None
    sets = test_mode_sets(args, run_folder)
    # The run's own dataset keeps the plain names; another dataset (or another folder of the same kind)
    # gets its name, so testing a FER+ run on FER2013 does not replace the FER+ files.
    other = run_dataset is not None and (run_dataset[0] != args.dataset or (
        run_dataset[1] is not None and run_dataset[1] != Path(data.root).resolve()))
    if run_labels and run_labels != args.labels and (run_dataset is None or run_dataset[0] == args.dataset):
        # (another dataset has its own protocols: FER2013's only one is hard, whatever the run's was)
        LOG.warning("the model was trained with --labels %s; evaluating with --labels %s", run_labels, args.labels)
    tag = getattr(data, "dataset_name", None) if args.dataset == "folder" else args.dataset
    # a hard- and a soft-label test of another RAF-DB folder keep their own files (datasets.result_tags)
    stem = confusion_stem(*datasets.result_tags(other, tag or args.dataset, args.labels, run_labels,
                                                data.protocols[0]), checkpoint_tag(checkpoint))
    for part in TEST_MODE_PARTS:
        labels = sets[part]
        keep = np.flatnonzero(mapping.evaluable(labels.classes))
        left_out = len(labels) - len(keep)
        if not len(labels):  # e.g. the run's validation names match no image of this dataset
            why = f" (the run's {VALIDATION_NAMES} names none of its training images)" if part == "val" else ""
            LOG.warning("%s: no image in %s%s; skipped", part, data.title, why)
            continue
        labels = labels.subset(keep)
        if not len(labels):
            if part == "test":  # nothing to score at all: an error, as in the evaluations
                raise UserError(f"none of the {left_out} test images of {data.title} has a class the model "
                                f"outputs (model classes {', '.join(names)}; dataset classes "
                                f"{', '.join(data.class_names)})")
            LOG.warning("%s: no image of a class the model can output; skipped", part)
            continue
        predicted = predict_classes(model, args, labels, (height, width), channels)
        # rows: true class, columns: predicted class, both in the model's class order
        matrix = confusion.confusion_matrix(mapping.to_model(labels.classes), predicted, len(names))
        if part == "test":
            correct = int(np.trace(matrix))
            unmapped = (f", {left_out} images of {','.join(mapping.missing)} left out" if left_out else "")
            print(f"test accuracy {correct / len(labels):.4f} ({correct}/{len(labels)}, {data.title} "
                  f"{data.split_name('test')}, labels {args.labels}{unmapped}, checkpoint {checkpoint})")
        print(confusion.format_report(part, matrix, names), end="", flush=True)
        confusion.write_csv(checkpoint.parent / f"{stem}{part}.csv", matrix, names)
        accuracy = np.trace(matrix) / max(1, matrix.sum())
        confusion.write_png(checkpoint.parent / f"{stem}{part}.png", matrix, names,
                            f"{part}: accuracy {100 * accuracy:.1f} % (N = {int(matrix.sum())}), {checkpoint.name}")
    return 0


def run(args, parse_argv=None) -> int:
    """Everything after argument parsing: resume settings, checks, then training or test mode.

    ``parse_argv`` (argv list -> namespace) reads the command line saved by an older run.json.
    """
    # .hdf5 full-model checkpoints are the original's format (docs/BENCHMARK.md §4.7), chosen on purpose:
    # Keras's "HDF5 is legacy" warning on every save would only bury the training log.
    logging.getLogger("absl").addFilter(
        lambda record: "saving your model as an HDF5 file" not in record.getMessage())
    if args.mode == "train" and args.resume:
        check_resume(args)
        apply_run_args(args, args.dir, parse_argv)
    if args.mode == "test" and (args.dir is not None or args.checkpoint is not None):
        apply_run_dataset(args, test_run_folder(args, args.checkpoint) if args.checkpoint is not None else args.dir)
    check_args(args)
    if args.mode == "test":
        return test_mode(args)
    if args.distribute == "multiworker":
        return exit_hard_on_failure(train, args)
    return train(args)


def exit_hard_on_failure(function, *args) -> int:
    """Run ``function(*args)``; on any error report it and end the process at once (os._exit).

    A multi-worker process that fails may otherwise hang at interpreter exit, with TensorFlow's
    threads waiting on peers' collectives. A UserError prints its message only and exits with its
    code (2, or 1 for a run stopped by its environment, e.g. a peer that died: ``RunFailed``, which
    a scheduler retries); anything else exits 1 with the traceback.
    """
    import traceback

    try:
        return function(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except BaseException:  # noqa: BLE001 - every failure must end the process
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
