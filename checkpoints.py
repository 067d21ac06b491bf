"""Load any image classifier safely and adapt it to RAF-DB evaluation (BENCHMARK.md §4.7, §5.3, §8.4, §11.4).

Keras checkpoints are handled here; ``.tflite``, ``.onnx`` and ``.skops`` files are opened by
``model_files.py`` as *runners* and adapted by :func:`adapt_runner`; ``classifier_from_args``
dispatches on the suffix, and a ``.pickle`` / ``.pkl`` is refused by its name before it is opened.
A :class:`Classifier` runs any runner (``.runner``; ``.model`` is the Keras model or None).

Shared by ``eval_corrupted_rafdb.py`` and ``eval_perturbed_rafdb.py`` (no script imports another).

Public API
----------
``find_checkpoints(path) -> list[Path]``
    ``path`` is a model file of a supported format (returned as is), a run directory (its best
    checkpoint) or a directory of run directories (every run's best, sorted by run name). A run's
    best checkpoint is its highest-numbered ``checkpoint.NN.hdf5`` (regex
    ``checkpoint.([0-9]+).hdf5``; BENCHMARK.md §4.7). ``UserError`` naming ``path`` when nothing is found.
``load_classifier(path, *, unsafe=False) -> keras.Model``
    ``keras.models.load_model(path, safe_mode=not unsafe, custom_objects=models.custom_objects(),
    compile=False)``. A checkpoint that needs arbitrary code (a ``Lambda`` layer) is refused with a
    ``UserError`` naming the file and ``--unsafe``; a missing or corrupt file is a ``UserError``
    naming it.
``adapt(model, checkpoint_path, *, preprocessing=None, class_order=None, eval_preprocessing=None,
        crop=None, batch_size=64, input_size=None) -> Classifier``
    Reads the input size and channel count from the model, the preprocessing, crop and class order
    from ``run.json`` beside the checkpoint (§4.7) when there is one, and otherwise from the
    arguments (which mirror the command-line flags below).
``Classifier``
    ``.image_size`` (h, w), ``.channels`` (1 or 3; the pipeline converts RGB to grey for 1),
    ``.crop``, ``.batch_size``, ``.describe()`` (a JSON-able dict for reports),
    ``.make_dataset(paths)`` / ``.make_array_dataset(images_uint8)`` (the shared input pipeline with
    this model's size, channels, crop and batch), ``.predict_dataset(dataset) -> float32 (N, K)``
    probabilities in ``.class_names`` order (RAF-DB's 7 unless ``.use_classes`` named a dataset's),
    ``.predict_paths(paths)`` = both in one.
``add_checkpoint_args(parser)``
    ``--preprocessing``, ``--eval-preprocessing``, ``--class-order``, ``--unsafe``, ``--crop``,
    ``--batch``, ``--input-size``.
``classifier_from_args(checkpoint_path, args) -> Classifier``
    ``load_classifier`` + ``adapt`` with the flags of ``add_checkpoint_args``.

Preprocessing precedence: ``--eval-preprocessing legacy-vggface2`` (the original's evaluation:
BGR input with the swapped VGGFace2 means, §4.4 / §6 row 12) > ``--preprocessing`` (warns when it
overrides ``run.json``; ``no`` is accepted for ``none``) > ``run.json`` (``preprocessing_in_model``
true: the model gets raw RGB 0..255) > the model's own preprocessing layers > raw pixels with a
warning. The channel order is not the preprocessing's: a run.json saying ``channel_order`` BGR
without ``preprocessing_in_model`` true has the input (``none`` and raw integer pixels included)
handed over in B, G, R order under ``--preprocessing`` too (:func:`run_json_bgr`). A flag never
runs on top of the model's own preprocessing: when ``run.json`` says ``preprocessing_in_model``
or the model starts with the project's preprocessing layers (FullNormalization, VGGFace2Mean,
ZNormalization, build_model's Rescaling), those layers are cut off (a new functional model from the
first layer after them, sharing the weights); for legacy-vggface2, which supplies BGR itself, the
RGB->BGR ``ChannelFlip`` after them goes too. A model whose layers cannot be cut off that way is
refused with a ``UserError``.

Class order: ``--class-order`` (comma list of the checkpoint's output names, or ``fer2013`` /
``rafdb``) > ``run.json``'s ``class_names`` > RAF-DB order (assumed, with a warning, for a 7-way
model without ``run.json``; any other output size needs ``--class-order``). Synonyms are accepted
(angry/anger, happy/happiness, sad/sadness, surprised/surprise, fearful/fear, disgusted/disgust).
Without a dataset the scores come out in RAF-DB order (each RAF-DB class must appear once; other
names such as FER+'s ``contempt`` are left out). The evaluations call
``Classifier.use_classes(dataset_class_names, restrict=...)`` first: the scores then come out in the
evaluation's class order (docs/BENCHMARK.md §9.9, docs/MODELS.md "Class order on a dataset"): the
dataset's classes in the dataset's order, matched by name with synonyms (names outside the emotion
vocabulary match exactly, case-insensitively), a column of zeros for a dataset class the model
cannot output (its images are left out by ``dataset_eval``), then the model's outputs that are not
dataset classes as trailing columns, so that the arg-max is over all the model's outputs. With
``restrict=True`` (``--restrict-to-dataset-classes``) the trailing columns are dropped and each row
is renormalised over the dataset's classes.

Example::

    python3 eval_corrupted_rafdb.py fer2013_mini_xception.hdf5 --preprocessing scale-1-1 \\
        --class-order fer2013
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from augmentations import CROP_RULES as CROP_CHOICES
import model_files
from datasets import classes as datasets_classes
from cli_common import UserError, positive_int
from rafdb_dataset import CLASS_NAMES as RAFDB_CLASS_NAMES  # BENCHMARK.md §1.2: index = RAF-DB label - 1

LOG = logging.getLogger("fer.checkpoints")

# BENCHMARK.md §1.2 / §8.4: FER2013's label order.
CLASS_ORDER_SHORTHANDS = {
    "fer2013": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    "ferplus": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    "rafdb": RAFDB_CLASS_NAMES,
}

CLASS_SYNONYMS = datasets_classes.SPELLINGS  # lower-case spelling -> canonical name

KERAS_SUFFIXES = model_files.KERAS_SUFFIXES
# Every model file an evaluation accepts (Keras, TFLite, ONNX, LBP+SVM; docs/BENCHMARK.md §11.4).
CHECKPOINT_SUFFIXES = model_files.MODEL_SUFFIXES
CHECKPOINT_PATTERN = re.compile(r"checkpoint.([0-9]+).hdf5")  # BENCHMARK.md §4.7, the original's regex

# Modes the user may name for a checkpoint that does not carry its preprocessing: those of
# models.preprocessing.PREPROCESSING_MODES, with "none" for its "no" (checked in the tests).
PREPROCESSING_CHOICES = ("none", "scale01", "scale-1-1", "vggface2", "z_normalization",
                         "full_normalization")
# train_fer.py and models spell "none" as "no"; both are accepted.
PREPROCESSING_ALIASES = {"no": "none"}
EVAL_PREPROCESSING_CHOICES = ("auto", "legacy-vggface2")
RUN_JSON = "run.json"


# --------------------------------------------------------------------------------------------
# Finding checkpoints


def _best_in_run(run_dir: Path) -> Path | None:
    """The highest-numbered checkpoint.NN.hdf5 in ``run_dir`` (None when there is none)."""
    best: tuple[int, Path] | None = None
    for child in run_dir.iterdir():
        match = CHECKPOINT_PATTERN.fullmatch(child.name)
        if match and child.is_file():
            epoch = int(match.group(1))
            if best is None or epoch > best[0]:
                best = (epoch, child)
    return None if best is None else best[1]


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint files that ``path`` names: a file, a run directory or a directory of runs."""
    path = Path(path)
    model_files.refuse_pickle(path)  # from the name alone, before anything opens the file
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file or directory")
    saved_model = model_files.saved_model_error(path)
    if saved_model is not None and (path.is_file() or _best_in_run(path) is None):
        raise saved_model
    if path.is_file():
        model_files.model_format(path)  # UserError for another suffix (a PyTorch file: how to export it)
        return [path]
    best = _best_in_run(path)
    if best is not None:
        return [best]
    found = []
    for run_dir in sorted(child for child in path.iterdir() if child.is_dir()):
        best = _best_in_run(run_dir)
        if best is not None:
            found.append(best)
    if not found:
        others = sorted(child.name for child in path.iterdir()
                        if child.is_file() and child.suffix.lower() in CHECKPOINT_SUFFIXES)
        if not others:  # a model zoo: one folder per model, each holding its file
            others = sorted(f"{child.parent.name}/{child.name}" for run_dir in path.iterdir()
                            if run_dir.is_dir() for child in run_dir.iterdir()
                            if child.is_file() and child.suffix.lower() in CHECKPOINT_SUFFIXES)
        hint = (f"; a folder is searched for training runs only: give other model files one by one "
                f"(it holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''})" if others else "")
        torch_files = sorted(child for child in path.iterdir()
                             if child.is_file() and child.suffix.lower() in model_files.PYTORCH_SUFFIXES)
        if not others and torch_files:
            hint = f"; it holds {torch_files[0].name}: {model_files.pytorch_file_message(torch_files[0]).split(': ', 1)[1]}"
        raise UserError(f"{path}: no checkpoint.NN.hdf5 found in it or in its run directories "
                        f"(expected <runs>/<run>/checkpoint.NN.hdf5){hint}")
    return found


# --------------------------------------------------------------------------------------------
# Loading


def _custom_objects() -> dict:
    """The project's serialisable layers (BlurPool, preprocessing layers) from ``models``.

    A third-party checkpoint needs none of them, so a missing or broken ``models`` package is a
    warning here; a checkpoint that does need them then fails to load naming the unknown layer.
    """
    try:
        import models

        return models.custom_objects()
    except (ImportError, AttributeError) as error:
        LOG.warning("the project's models package is unavailable (%s): loading without its "
                    "custom layers", error)
        return {}


def _is_unsafe_error(error: BaseException) -> bool:
    text = str(error)
    return "safe_mode" in text or "unsafe_deserialization" in text or "Lambda" in text and (
        "arbitrary code" in text or "lambda" in text)


def _keras2_sequential_copy(path: Path, scratch: Path) -> Path | None:
    """A copy of a Keras 2.0-2.3 HDF5 Sequential model that Keras 3 can build, or None.

    Those files put ``batch_input_shape`` (batch axis included) on the first layer instead of an
    InputLayer (Keras 2.0/2.1 also store the layers as a bare list); Keras 3's legacy loader turns it
    into ``input_shape`` with the batch axis kept, and the model gets one axis too many ("Kernel
    shape must have the same length as input"). The copy (in ``scratch``) gives that first layer
    ``input_shape`` = the shape without its batch axis, and the layer list its dict form; weights
    untouched. None when ``path`` is not such a file (tf.keras 2.4+ files start with an InputLayer
    and load as they are) or cannot be read here (Keras then names the problem)."""
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw) if raw is not None else None
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        return None
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        return None
    first = layers[0].get("config")
    if layers[0].get("class_name") == "InputLayer" or not isinstance(first, dict) or \
            not isinstance(first.get("batch_input_shape"), list):
        return None
    first["input_shape"] = first.pop("batch_input_shape")[1:]
    if not isinstance(inner, dict):  # Keras 2.0/2.1: the config is the layer list itself
        config["config"] = {"name": "sequential", "layers": layers}
    copy = scratch / path.name
    try:
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as handle:
            handle.attrs["model_config"] = json.dumps(config).encode("utf-8")
    except OSError as error:  # e.g. no room in the temporary folder: try the file as it is
        LOG.warning("%s: could not write a corrected copy for Keras 3 (%s); loading it as it is",
                    path, error)
        return None
    LOG.info("%s: a Keras 2 Sequential file (batch_input_shape on its first layer): read with the "
             "batch axis taken out of that shape", path)
    return copy


_BUILTIN_SERIALIZED = ("__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__typespec__",
                       "__lambda__", "__ellipsis__", "__slice__", "__tuple__")


def _model_config(path: Path):
    """The model config a Keras file stores: a ``.keras`` archive's config.json, an HDF5 file's
    ``model_config`` attribute; None when it cannot be read."""
    import zipfile

    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json").decode("utf-8"))
        if path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as handle:
                text = handle.attrs.get("model_config")
            if text is None:
                return None
            return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return None


def _keras_builtin(class_name: str) -> bool:
    """Whether a class name of a config without ``module`` (Keras 2 HDF5) is one of Keras's own."""
    import keras

    namespaces = (keras.layers, keras.models, keras.initializers, keras.regularizers, keras.constraints,
                  keras.activations, keras.optimizers, keras.losses, keras.metrics)
    return class_name in ("Functional", "Sequential", "Model") or any(hasattr(ns, class_name) for ns in namespaces)


def missing_custom_classes(path: Path, custom_objects: dict) -> list[str]:
    """The classes a Keras file's model config names (``.keras``: config.json; ``.h5``/``.hdf5``:
    the ``model_config`` attribute) that neither Keras nor ``custom_objects`` provides (registered
    name, e.g. 'mine>MyLayer'; class name when it has none), in order of appearance; [] when the
    config cannot be read."""
    import keras

    config = _model_config(path)
    if config is None:
        return []
    missing: list[str] = []

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        class_name, module = node.get("class_name"), node.get("module")
        if isinstance(class_name, str) and "config" in node and \
                class_name not in _BUILTIN_SERIALIZED and \
                not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
            registered = node.get("registered_name") or class_name
            known = (registered in custom_objects or class_name in custom_objects
                     or keras.saving.get_registered_object(registered) is not None
                     or (module is None and _keras_builtin(class_name)))
            if not known and registered not in missing:
                missing.append(registered)
        for value in node.values():
            visit(value)

    visit(config)
    return missing


def _float32_policies(node):
    """A model config with every mixed_float16 (or float16) dtype policy replaced by float32."""
    if isinstance(node, dict):
        config = node.get("config")
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config, dict) \
                and config.get("name") in ("mixed_float16", "float16"):
            return "float32"
        return {key: _float32_policies(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_policies(value) for value in node]
    return node


def float32_on_cpu(model, path: str | Path, custom_objects: dict | None = None, *, unsafe: bool = False):
    """``model`` itself, or, when it computes in float16 (trained with mixed precision) and no GPU
    is visible, a float32 copy with the same weights: oneDNN aborts the process on float16
    convolutions on CPUs without float16 instructions, and float16 is emulated (slow) on the others.
    Predictions agree to float16 rounding (the copy is the more precise one)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return model
    layers = [model]
    for layer in layers:  # nested models included
        layers.extend(getattr(layer, "layers", []))
    if not any(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32") == "float16"
               for layer in layers):
        return model
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(not unsafe):  # a Lambda layer the user allowed with --unsafe stays allowed
        copy = type(model).from_config(_float32_policies(model.get_config()),
                                       custom_objects=custom_objects if custom_objects is not None
                                       else _custom_objects())
    copy.set_weights(model.get_weights())
    LOG.info("%s: trained with mixed precision (float16); evaluated in float32 on the CPU", path)
    return copy


def load_classifier(path: str | Path, *, unsafe: bool = False):
    """Load a Keras model for inference only, refusing arbitrary code unless ``unsafe``."""
    import keras

    path = Path(path)
    model_files.refuse_pickle(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    custom_objects = _custom_objects()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fer-keras2-") as scratch:
        readable = _keras2_sequential_copy(path, Path(scratch)) or path
        try:
            model = keras.models.load_model(readable, custom_objects=custom_objects, compile=False,
                                            safe_mode=not unsafe)
        except UserError:
            raise
        except Exception as error:  # Keras raises ValueError/TypeError/OSError/KeyError here
            if not unsafe and _is_unsafe_error(error):
                raise UserError(f"{path}: the checkpoint contains a Lambda layer (arbitrary Python "
                                f"code); refusing to load it in safe mode. If you trust its source, "
                                f"pass --unsafe") from None
            missing = missing_custom_classes(path, custom_objects)
            if missing:
                names = ", ".join(repr(name) for name in missing)
                raise UserError(
                    f"{path}: cannot load as a Keras model: it uses custom class(es) {names} "
                    f"whose Python code is not available here (Keras rebuilds a {path.suffix} model from "
                    f"registered classes). Either register the class "
                    f"(@keras.saving.register_keras_serializable, in the project's models package, "
                    f"models.custom_objects()), or export the model where its code is defined to "
                    f"ONNX (tf2onnx) or TFLite (tf.lite.TFLiteConverter) and evaluate that "
                    f"file") from None
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            with open(path, "rb") as handle:
                zipped = handle.read(4) == b"PK\x03\x04"
            if zipped and path.suffix.lower() != ".keras":
                raise UserError(f"{path}: a .keras archive (a zip file, as model.save writes) under a "
                                f"{path.suffix} name, which Keras reads as HDF5; rename it to .keras") from None
            if "No model config found" in first_line:
                raise UserError(f"{path}: holds weights only (model.save_weights), not a model: save the "
                                f"whole model with model.save, or load the weights into the model's own "
                                f"code and save that") from None
            if zipped and ("File not found" in first_line or "not a zip file" in first_line.lower()):
                first_line = ("a damaged zip archive: it starts as one, but its table of contents, "
                              "at the end, cannot be read (the file looks cut short); copy or save it again")
            elif "File not found" in first_line or "not a zip file" in first_line.lower():
                first_line = (f"not a Keras archive: a {path.suffix} file is a zip archive written "
                              f"by model.save; .h5/.hdf5 are HDF5 files")
            raise UserError(f"{path}: cannot load as a Keras model ({type(error).__name__}: "
                            f"{first_line[:300]})") from None
    LOG.info("loaded %s (%d parameters) in %.1f s", path, model.count_params(),
             time.perf_counter() - started)
    return float32_on_cpu(model, path, custom_objects, unsafe=unsafe)


# --------------------------------------------------------------------------------------------
# Class order


def parse_class_order(text: str | Sequence[str]) -> tuple[str, ...]:
    """Canonical names of a checkpoint's outputs, from a comma list or a shorthand.

    Names outside RAF-DB's seven are kept as given (lower-case); they are dropped when mapping.
    """
    if isinstance(text, str):
        key = text.strip().lower()
        if key in CLASS_ORDER_SHORTHANDS:
            return CLASS_ORDER_SHORTHANDS[key]
        names = [name.strip().lower() for name in text.split(",")]
    else:
        names = [str(name).strip().lower() for name in text]
    if any(not name for name in names):
        raise ValueError(f"empty class name in {text!r}")
    return tuple(CLASS_SYNONYMS.get(name, name) for name in names)


def _example_order(n_outputs) -> str:
    """An example --class-order of ``n_outputs`` names (FER+'s eight, cut or extended)."""
    names = list(CLASS_ORDER_SHORTHANDS["ferplus"])
    count = n_outputs if isinstance(n_outputs, int) and n_outputs > 0 else len(names)
    return ",".join((names + [f"class{i}" for i in range(len(names), count)])[:count])


def refuse_misspelt_class_names(names: Sequence[str], where: str = "--class-order", warn: bool = False) -> None:
    """UserError for a --class-order name that is no emotion name but nearly one ('suprise'): a name
    unlike every emotion name is a class of the model's own (kept as an extra output), so a typo
    would silently leave the dataset's class out of the evaluation. ``warn``: a warning instead
    (a run.json's class_names, which may be a dataset's own spelling of its classes)."""
    import difflib

    vocabulary = sorted(CLASS_SYNONYMS)  # every spelling of every emotion name
    for name in names:
        if datasets_classes.canonical_name(name) is None:
            near = difflib.get_close_matches(name, vocabulary, n=1, cutoff=0.8)
            if near:
                message = (f"{where}: {name!r} is no emotion name; did you mean {near[0]!r}? "
                           f"(accepted: {datasets_classes.accepted_names()}; a name unlike all of "
                           f"them is kept as a class of the model's own)")
                if not warn:
                    raise UserError(message)
                LOG.warning("%s", message)


def class_permutation(output_names: Sequence[str]) -> np.ndarray:
    """Indices ``perm`` such that ``probs[:, perm]`` is in RAF-DB order.

    Raises ValueError when a RAF-DB class is missing or named twice.
    """
    output_names = [CLASS_SYNONYMS.get(name, name) for name in output_names]
    missing = [name for name in RAFDB_CLASS_NAMES if name not in output_names]
    duplicated = sorted({name for name in output_names
                         if name in RAFDB_CLASS_NAMES and output_names.count(name) > 1})
    if missing or duplicated:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if duplicated:
            parts.append(f"named twice: {', '.join(duplicated)}")
        raise ValueError(f"class order {','.join(output_names)}: {'; '.join(parts)} "
                         f"(each of {','.join(RAFDB_CLASS_NAMES)} must appear exactly once; "
                         f"synonyms such as angry/happy/sad are accepted)")
    return np.array([output_names.index(name) for name in RAFDB_CLASS_NAMES], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Preprocessing


_THREE_CHANNEL_MODES = ("vggface2", "z_normalization", "full_normalization")


def preprocessing_setting(mode: str | None, mean_order: str = "correct", colour: str = "rgb",
                          bgr_input: bool = False, *, in_model: bool = False) -> str:
    """The canonical identity of a preprocessing computation: one whitespace-free token, the same
    for every route that computes the same model input (docs/BENCHMARK.md §11.5). Written as the
    ``preprocessing=`` of the predictions metadata and as ``preprocessing_setting`` of
    ``Classifier.describe()``; report.py compares it (the display label is not compared).

    ``MODE`` (``none`` for no/none) alone when the mode is computed as ``--preprocessing MODE``
    computes it; otherwise what differs is added, ``+``-joined: ``mean_order=X`` (vggface2 only: no
    other mode reads it), ``colour=Y`` (z_normalization only), ``bgr`` (the result handed over in BGR
    order, none included: ``none+bgr`` is the raw pixels reversed, as a run.json's channel_order BGR or
    ``--bgr-input`` (:func:`setting_with_bgr`) feeds them). ``in_model``: the mode is applied
    by the model itself (``MODE+in_model``; ``none`` when that mode is none). A Keras model whose
    own leading layers were removed for the evaluation adds ``+without=<layer>,<layer>``
    (:func:`preprocessing_setting_with`): it then computes something else than the file's graph.

    ``preprocessing_setting("vggface2", "legacy-swapped", bgr_input=True)`` is
    ``vggface2+mean_order=legacy-swapped+bgr``, what ``--eval-preprocessing legacy-vggface2``
    computes; ``preprocessing_setting("z_normalization", colour="bgr-compat")`` is
    ``z_normalization+colour=bgr-compat``.
    """
    mode = "none" if mode in (None, "", "no") else str(mode)
    if in_model:
        parts = ["none" if mode == "none" else f"{mode}+in_model"]
    else:
        parts = [mode]
        if mode == "vggface2" and mean_order != "correct":
            parts.append(f"mean_order={mean_order}")
        if mode == "z_normalization" and colour != "rgb":
            parts.append(f"colour={colour}")
        if bgr_input:
            parts.append("bgr")
    return "_".join("+".join(parts).split())  # one token: the metadata line is split on whitespace


# The display labels written before preprocessing_setting existed (a robustness JSON's
# ``checkpoint.preprocessing``, a predictions file's ``preprocessing=``), matched in the metadata's
# one-token form (whitespace as '_').
_LABEL_FORMS = (
    ("run.json", re.compile(r"^(?P<mode>[A-Za-z0-9_-]+?)_\(mean_order_(?P<order>[^,]+),_(?P<channels>RGB|BGR)_input\)$")),
    ("run.json", re.compile(r"^(?P<mode>[A-Za-z0-9_-]+?)_\((?P<channels>RGB|BGR)_input\)$")),
    ("legacy", re.compile(r"^legacy-vggface2_\(BGR,_swapped_means\)$")),
    ("raw", re.compile(r"^none_\(raw_pixels.*\)$")),
    ("in_model", re.compile(r"^(?P<mode>.+?)_\(inside_the_model\)$")),
)


def preprocessing_setting_from_label(label: str | None) -> str | None:
    """The :func:`preprocessing_setting` an older display label describes (a result written before
    the setting was recorded; as the label or as the metadata wrote it, whitespace as '_'):
    ``MODE (mean order X, RGB input)`` and ``MODE (RGB input)`` (a run.json's mode),
    ``legacy-vggface2 (BGR, swapped means)``, ``none (raw pixels ...)``, ``X (inside the model)``;
    any other label as one token. Such labels never recorded run.json's ``colour``: a
    z_normalization read from one is taken as rgb. None for no label or ``n/a ...`` (a predictions
    file: not stated)."""
    if label is None or str(label) == "" or str(label).startswith("n/a"):
        return None
    text = "_".join(str(label).split())
    for kind, pattern in _LABEL_FORMS:
        match = pattern.match(text)
        if match is None:
            continue
        if kind == "run.json":
            mode = PREPROCESSING_ALIASES.get(match["mode"], match["mode"])
            if mode not in PREPROCESSING_CHOICES:
                continue
            return preprocessing_setting(mode, match.groupdict().get("order") or "correct",
                                         bgr_input=match["channels"] == "BGR")
        if kind == "legacy":
            return preprocessing_setting("vggface2", "legacy-swapped", bgr_input=True)
        if kind == "raw":
            return "none"
        return preprocessing_setting(match["mode"], in_model=True)
    return "none" if text == "no" else text


class _Preprocessor:
    """A picklable batch function float32 RGB (B, h, w, c) 0..255 -> model input."""

    def __init__(self, mode: str, mean_order: str = "correct", colour: str = "rgb",
                 bgr_input: bool = False):
        self.mode, self.mean_order, self.colour, self.bgr_input = mode, mean_order, colour, bgr_input

    @property
    def setting(self) -> str:
        """Its :func:`preprocessing_setting`."""
        return preprocessing_setting(self.mode, self.mean_order, self.colour, self.bgr_input)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from models import preprocessing  # the project's formulas (BENCHMARK.md §4.4), not a copy

        mode = "no" if self.mode == "none" else self.mode
        out = preprocessing.preprocess_numpy(np.asarray(images, dtype=np.float32), mode,
                                             self.mean_order, self.colour)
        if self.bgr_input:
            out = out[..., ::-1]
        return np.ascontiguousarray(out, dtype=np.float32)


class _BGRInput:
    """``inner`` (a preprocess function, or None for the pixels as read), its result handed over
    in B, G, R order: ``--bgr-input``, for a model trained on images read by OpenCV without
    conversion. Normalising in RGB with RGB-ordered constants and then reversing the channels is
    exactly normalising the BGR image with the constants in BGR order. Picklable, as _Preprocessor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.asarray(images, dtype=np.float32) if self.inner is None else self.inner(images)
        return np.ascontiguousarray(out[..., ::-1], dtype=np.float32)


def setting_with_bgr(setting: str) -> str:
    """``setting`` (:func:`preprocessing_setting`) with its result handed over in BGR order: ``+bgr``
    after the mode's own parts, before a ``+without=`` (so that ``--preprocessing z_normalization
    --bgr-input`` and a run.json saying z_normalization with channel_order BGR give one token)."""
    head, sep, without = setting.partition("+without=")
    return f"{head}+bgr{sep}{without}"


# The project's preprocessing layers (models/preprocessing.py), recognised by class name so that a
# checkpoint's own preprocessing can be found without importing the models package.
_PREPROCESSING_LAYER_CLASSES = ("FullNormalization", "VGGFace2Mean", "ZNormalization")
# build_model's names of its Rescaling layers (scale01, scale-1-1); any Rescaling counts when
# run.json says the preprocessing is inside the model.
_OUR_RESCALING_NAMES = ("scale01", "scale_minus1_1")
_FLIP_CLASS = "ChannelFlip"
# Leading layers of a third-party model that scale or normalise its input: kept under --preprocessing
# (they are not the project's), with a warning that both then apply.
_THIRD_PARTY_SCALING_CLASSES = ("Rescaling", "Normalization")


def _non_input_layers(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _leading_layers(model):
    """The model's layers from its input on, in order, nested models (a Sequential block such as
    the Keras tutorials' ``data_augmentation``) opened in place."""
    for layer in _non_input_layers(model):
        if getattr(layer, "layers", None) is not None and hasattr(layer, "outputs"):
            yield from _leading_layers(layer)
        else:
            yield layer


def _leading_scaling_layer(model):
    """The first layer of the model when it is a (third-party) Rescaling or Normalization, else
    None. Nested models are looked into, and random augmentation layers before it (RandomFlip,
    RandomRotation, ...: the identity at inference) are passed over."""
    for layer in _leading_layers(model):
        name = type(layer).__name__
        if name in _THIRD_PARTY_SCALING_CLASSES:
            return layer
        if not name.startswith("Random"):
            return None
    return None


def leading_preprocessing(model, *, trust_rescaling: bool = False) -> tuple[list, object | None]:
    """(preprocessing layers, BGR ChannelFlip or None) at the very start of ``model``.

    The preprocessing layers are the project's FullNormalization / VGGFace2Mean / ZNormalization
    (and its ``scale01`` / ``scale_minus1_1`` Rescaling; any Rescaling when ``trust_rescaling``)
    that come first, in order; the ChannelFlip is the one directly after them (build_model puts it
    there for BGR backbones).
    """
    layers = _non_input_layers(model)
    found = []
    for layer in layers:
        name = type(layer).__name__
        if name in _PREPROCESSING_LAYER_CLASSES or name == "Rescaling" and (
                trust_rescaling or layer.name in _OUR_RESCALING_NAMES):
            found.append(layer)
        else:
            break
    rest = layers[len(found):]
    flip = rest[0] if rest and type(rest[0]).__name__ == _FLIP_CLASS else None
    return found, flip


def strip_leading_layers(model, count: int, checkpoint_path: Path):
    """The model without its first ``count`` (non-input) layers, as a new functional model.

    It shares the remaining layers (and weights) with ``model``. UserError when the first layers do
    not form a plain chain that can be cut off (e.g. a preprocessing layer also feeds a branch).
    """
    import keras

    layers = _non_input_layers(model)
    if count <= 0:
        return model
    if count >= len(layers):
        raise UserError(f"{checkpoint_path}: nothing is left after its {count} preprocessing "
                        f"layer(s); cannot replace its preprocessing")
    first = layers[count]
    try:
        stripped = keras.Model(first.input, model.outputs, name=model.name)
    except Exception as error:  # Keras raises ValueError/AttributeError for non-chain graphs
        stripped, reason = None, f"{type(error).__name__}: {str(error).strip()[:200]}"
    else:
        reason = ""
        if len(_non_input_layers(stripped)) != len(layers) - count or \
                any(layer in _non_input_layers(stripped) for layer in layers[:count]):
            stripped, reason = None, "its preprocessing layers also feed other layers"
    if stripped is None:
        names = ", ".join(layer.name for layer in layers[:count])
        raise UserError(f"{checkpoint_path}: cannot remove its own preprocessing layers ({names}) "
                        f"to apply --preprocessing / --eval-preprocessing ({reason}); evaluate it "
                        f"without those flags")
    return stripped


def _legacy_vggface2(images: np.ndarray) -> np.ndarray:
    """The original's evaluation input (BENCHMARK.md §4.4, §6 row 12): BGR pixels minus the swapped means.

    The original read BGR with cv2 and subtracted (131.0912, 103.8827, 91.4953) from B, G, R; that
    is the project's vggface2 mode with ``mean_order='legacy-swapped'``, handed over in BGR order.
    """
    return _Preprocessor("vggface2", "legacy-swapped", "rgb", bgr_input=True)(images)


# What --eval-preprocessing legacy-vggface2 computes (_legacy_vggface2), as preprocessing_setting names it.
LEGACY_VGGFACE2_SETTING = preprocessing_setting("vggface2", "legacy-swapped", bgr_input=True)


def _flag_recomputes_own_layer(mode: str, in_model_mode: str | None, run_info: dict | None,
                               own_layers: Sequence) -> bool:
    """Whether ``--preprocessing mode`` recomputes the one preprocessing layer it removes from a
    model whose run.json says it applies ``mode`` itself, with the same parameters (the mean order
    and colour run.json records, where the mode reads them): then the model gets the same input as
    without the flag (up to float32 rounding)."""
    if in_model_mode is None or run_info is None or len(own_layers) != 1 or mode == "none":
        return False
    if PREPROCESSING_ALIASES.get(in_model_mode, in_model_mode) != mode:
        return False
    trained = preprocessing_setting(mode, run_info.get("mean_order") or "correct", run_info.get("colour") or "rgb")
    return trained == preprocessing_setting(mode)


def _in_model_setting(run_info: dict) -> str:
    """The setting of a model that applies run.json's preprocessing mode itself."""
    return preprocessing_setting(str(run_info.get("preprocessing", "?")), in_model=True)


def preprocessing_setting_with(setting: str, stripped: Sequence[str]) -> str:
    """``setting`` of a Keras model whose leading layers ``stripped`` were removed for the evaluation."""
    return f"{setting}+without={','.join('_'.join(str(name).split()) for name in stripped)}" if stripped else setting


# --------------------------------------------------------------------------------------------
# The adapted classifier


def read_run_json(checkpoint_path: str | Path, replaced: Sequence[str] = ()) -> dict | None:
    """The ``run.json`` beside a checkpoint, or None when there is none; ``replaced``: the keys whose
    values flags replace (not checked: the flag wins)."""
    path = Path(checkpoint_path).parent / RUN_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON run description ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    check_run_json(path, data, replaced)
    return data


def run_json_replaced(preprocessing, eval_preprocessing, class_order, crop) -> tuple[str, ...]:
    """The run.json keys the evaluation flags given replace (flag > run.json).

    ``--preprocessing`` replaces the mode and what only the mode reads (colour, mean_order), not the
    channel order the model takes (kept, :func:`run_json_bgr`); ``--eval-preprocessing
    legacy-vggface2`` hands over BGR itself and replaces channel_order too (``auto`` replaces nothing).
    """
    out = []
    legacy = eval_preprocessing not in (None, "auto")
    if preprocessing is not None or legacy:
        # (preprocessing_in_model stays checked: a flag's route reads it to strip the model's own layers)
        out += ["preprocessing", "colour", "mean_order"]
    if legacy:
        out.append("channel_order")
    if class_order is not None:
        out.append("class_names")
    if crop is not None:
        out.append("crop")
    return tuple(out)


def check_run_json(path: Path, data: dict, replaced: Sequence[str] = ()) -> None:
    """UserError naming ``path`` for a value of run.json that the evaluations read and cannot use
    (a misspelt channel order was RGB, the string "false" an in-model preprocessing, a bad colour a
    traceback from the input pipeline); a warning for a key spelt close to one of those keys (its
    value would be ignored)."""
    from models.preprocessing import COLOURS, MEAN_ORDERS

    def used(key):  # a value the evaluation reads (null counts as absent)
        return data.get(key) is not None and key not in replaced

    def refuse(key, expected):
        raise UserError(f"{path}: {key} {data[key]!r}: expected {expected}")

    if used("preprocessing_in_model") and not isinstance(data["preprocessing_in_model"], bool):
        refuse("preprocessing_in_model", "true or false (a JSON boolean)")
    if used("channel_order") and str(data["channel_order"]).upper() not in ("RGB", "BGR"):
        refuse("channel_order", "RGB or BGR")
    for key, choices in (("colour", COLOURS), ("mean_order", MEAN_ORDERS), ("crop", CROP_CHOICES)):
        if used(key) and data[key] not in choices:
            refuse(key, f"one of {', '.join(choices)}")
    if used("preprocessing") and not isinstance(data["preprocessing"], str):
        refuse("preprocessing", f"a string, one of {', '.join(PREPROCESSING_CHOICES)}")
    if used("class_names") and not isinstance(data["class_names"], (str, list)):
        refuse("class_names", "a list of names or a comma-separated string")
    import difflib

    for key in data:
        if key not in RUN_JSON_READ_KEYS:
            close = difflib.get_close_matches(key, RUN_JSON_READ_KEYS, n=1, cutoff=0.8)
            if close:
                LOG.warning("%s: key %r is not read (did you mean %r?); its value is ignored", path, key, close[0])


def run_json_bgr(run_info: dict | None, channels: int) -> bool:
    """Whether a run.json makes the evaluation hand the model its input in B, G, R order: it says
    ``channel_order`` BGR for a colour model and does not say ``preprocessing_in_model`` (the
    project's own models, whose run.json says it, reverse the channels inside, after their
    preprocessing layers: their channel_order describes the backbone). Whatever the preprocessing
    (``none`` and raw integer pixels included) and whether it comes from run.json or from
    ``--preprocessing``, which replaces the mode, not the order the model was trained on."""
    return run_info is not None and channels == 3 and not run_info.get("preprocessing_in_model") and \
        str(run_info.get("channel_order") or "RGB").upper() == "BGR"


def _warn_flag_overrides(preprocessing: str, run_json_path: Path, run_info: dict, bgr: bool) -> None:
    """The warning that ``--preprocessing`` replaces a run.json's preprocessing, naming what it keeps."""
    stated = run_info.get("preprocessing")
    if run_info.get("preprocessing_in_model"):
        stated = f"{stated} (inside the model)"
    kept = "; its channel_order BGR is kept (the input is handed over in B, G, R order)" if bgr else ""
    LOG.warning("--preprocessing %s overrides %s (preprocessing %s)%s", preprocessing, run_json_path,
                stated, kept)


# The keys of run.json the evaluations read (train_fer.py writes more; those are not checked).
RUN_JSON_READ_KEYS = ("preprocessing", "preprocessing_in_model", "channel_order", "colour", "mean_order", "crop",
                      "class_names", "input_shape", "net")


def _warn_unstated_preprocessing(path: Path, run_info: dict, own_layers) -> None:
    """Warnings where a run.json decides the model's input without saying enough: it names no
    preprocessing (raw pixels are fed), or it says the model preprocesses its input itself where that
    cannot be seen (a Keras model starting with no preprocessing layer; ``own_layers`` None: a file
    of another framework, whose graph is not inspected)."""
    if "preprocessing" not in run_info:
        LOG.warning("%s: names no preprocessing: the model is fed raw pixels 0..255 (add \"preprocessing\" to "
                    "it, or give --preprocessing)", path)
    mode = run_info.get("preprocessing") or "none"
    mode = PREPROCESSING_ALIASES.get(mode, mode)
    if run_info.get("preprocessing_in_model") and mode != "none":
        if own_layers is None:
            LOG.info("%s: says the model applies %s itself: raw pixels 0..255 are fed (which cannot be "
                     "checked in this file; if the model expects %s input, set preprocessing_in_model "
                     "to false)", path, mode, mode)
        elif not own_layers:
            LOG.warning("%s: says the model applies %s itself, but it starts with no preprocessing layer "
                        "this toolkit knows; raw pixels 0..255 are fed (if the model expects %s input, set "
                        "preprocessing_in_model to false)", path, mode, mode)


def pipeline_user_errors():
    """``input_pipeline.user_errors_from_pipeline()``: a TensorFlow error raised inside the input
    pipeline that carries our UserError (e.g. a corrupt image, named) comes out as that UserError.
    """
    from input_pipeline import user_errors_from_pipeline

    return user_errors_from_pipeline()


# The keys of a run.json recorded in the results (Classifier.describe's ``run_json``): the model's
# input and how it was trained (training.run_config writes them; a key the run.json lacks is left out).
RUN_JSON_RECORDED_KEYS = ("net", "input_shape", "preprocessing", "preprocessing_in_model", "mean_order",
                          "channel_order", "labels", "crop", "lpf", "augmentation", "cutout",
                          "effective_augmentation", "jsd", "center_loss", "seed")


def run_json_record(run_info: dict) -> dict:
    """The part of a run.json that the results record: :data:`RUN_JSON_RECORDED_KEYS` present in it,
    and ``augmix`` (width, depth, severity) only when AugMix is the augmentation in effect
    (``effective_augmentation``, else ``augmentation``): training writes its parameters for every run."""
    record = {key: run_info.get(key) for key in RUN_JSON_RECORDED_KEYS if key in run_info}
    if "augmix" in run_info and \
            run_info.get("effective_augmentation", run_info.get("augmentation")) == "augmix":
        record["augmix"] = run_info["augmix"]
    return record


class Classifier:
    """A loaded model plus everything needed to feed it RAF-DB images and read RAF-DB classes."""

    def __init__(self, runner, checkpoint_path: Path, *, image_size: tuple[int, int], channels: int,
                 crop: str, batch_size: int, preprocess, preprocessing_label: str,
                 preprocessing_source: str, output_names: tuple[str, ...], class_source: str,
                 permutation: np.ndarray, run_info: dict | None,
                 stripped_layers: Sequence[str] = (), preprocessing_setting: str | None = None):
        self.runner = runner  # a model_files.Runner
        self.model = getattr(runner, "model", None)  # the Keras model, for Keras checkpoints
        self.checkpoint_path = Path(checkpoint_path)
        self.image_size = image_size
        self.channels = channels
        # Grey before the resize (the LBP descriptor's order), for runners that ask for it.
        self.grey_first = bool(getattr(runner, "grey_before_resize", False))
        self.crop = crop
        self.batch_size = batch_size
        self.preprocess = preprocess  # None: feed the pipeline's float 0..255 as is
        self.preprocessing_label = preprocessing_label  # shown to people; may vary by route
        # The computation's canonical identity (module function preprocessing_setting), compared by
        # report.py; read from the label where the caller gives none.
        self.preprocessing_setting = preprocessing_setting if preprocessing_setting is not None \
            else preprocessing_setting_from_label(preprocessing_label)
        self.preprocessing_source = preprocessing_source
        self.output_names = output_names
        self.class_source = class_source
        self.permutation = permutation  # output per column, -1: zeros; None: use_classes first
        self.class_names = RAFDB_CLASS_NAMES if permutation is not None else None
        self.restrict = False
        self.mapping = None  # datasets.classes.ClassMapping once use_classes has run
        self.run_info = run_info
        self.stripped_layers = tuple(stripped_layers)  # the model's own preprocessing, removed

    # -- reports ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """Identity and adaptation of the checkpoint, for reports and result files."""
        stat = self.checkpoint_path.stat()
        return {
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_sha256": model_files.model_sha256(self.checkpoint_path),
            "checkpoint_size": model_files.model_size(self.checkpoint_path),
            "checkpoint_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stat.st_mtime)),
            "format": self.runner.format,
            "model_name": self.runner.name,
            "parameters": self.runner.parameters,
            "runtime": self.runner.describe(),
            "input_shape": [self.image_size[0], self.image_size[1], self.channels],
            "crop": self.crop,
            "preprocessing": self.preprocessing_label,
            "preprocessing_setting": self.preprocessing_setting,
            "preprocessing_source": self.preprocessing_source,
            "stripped_layers": list(self.stripped_layers),
            "output_classes": list(self.output_names),
            "class_order_source": self.class_source,
            **({} if self.mapping is None else {
                "evaluation_classes": list(self.class_names),
                "restrict_to_dataset_classes": self.restrict,
                "classes_not_output": list(self.mapping.missing),
                "outputs_not_in_dataset": list(self.mapping.extra)}),
            "run_json": None if self.run_info is None else run_json_record(self.run_info),
        }

    # -- class order -----------------------------------------------------------------------
    def use_classes(self, dataset_names: Sequence[str], restrict: bool = False, require_all: str | None = None):
        """Score in the evaluation's class order for a dataset with ``dataset_names``.

        See ``datasets.classes.evaluation_columns``; returns the ``ClassMapping``. A UserError when two of the
        model's (or the dataset's) names mean the same class, and, with ``require_all`` (the dataset's
        name, e.g. RAF-DB), when the model cannot output one of the dataset's classes.
        """
        try:
            names, columns, mapping = datasets_classes.evaluation_columns(self.output_names, dataset_names,
                                                                          restrict)
        except ValueError as error:
            raise UserError(f"--class-order / {self.checkpoint_path}: {error}") from None
        if not np.any(columns >= 0):
            raise UserError(f"{self.checkpoint_path}: none of the model's classes "
                            f"({', '.join(self.output_names)}) is a dataset class "
                            f"({', '.join(dataset_names)}); name them with --class-order")
        if require_all and mapping.missing:  # refused before any warning that they would be left out
            unknown = [name for name in self.output_names if datasets_classes.canonical_name(name) is None]
            raise UserError(f"{self.checkpoint_path}: the model cannot output {', '.join(mapping.missing)} "
                            f"(its outputs: {', '.join(self.output_names)}); each {require_all} class must be "
                            f"one of its outputs, so that N and the mCE are over every test face (other datasets "
                            f"leave such images out, docs/MODELS.md)"
                            + (f"; its outputs {', '.join(unknown)} are no emotion name" if unknown else "")
                            + "; if its outputs mean other classes, name them with --class-order")
        self.class_names, self.permutation, self.mapping, self.restrict = names, columns, mapping, restrict
        if mapping.missing:
            LOG.warning("%s: the model cannot output %s; test images of those classes, if any, are left out "
                        "(n_unmapped in the JSON counts them)", self.checkpoint_path, ", ".join(mapping.missing))
        if mapping.extra:
            LOG.warning("%s: outputs %s are not dataset classes: %s", self.checkpoint_path,
                        ",".join(mapping.extra),
                        "ignored (--restrict-to-dataset-classes)" if restrict
                        else "kept as candidates (a prediction of one counts as wrong)")
        return mapping

    def arrange(self, scores: np.ndarray) -> np.ndarray:
        """Model outputs (N, outputs) -> (N, K) in ``class_names`` order (float32, contiguous)."""
        if self.permutation is None:
            raise UserError(f"{self.checkpoint_path}: the outputs ({', '.join(self.output_names)}) "
                            f"are not RAF-DB's 7 classes; evaluate on a dataset with these classes")
        scores = np.asarray(scores)
        if np.all(self.permutation >= 0) and not self.restrict:
            return np.ascontiguousarray(scores[:, self.permutation])
        out = np.zeros((len(scores), len(self.permutation)), np.float32)
        present = self.permutation >= 0
        out[:, present] = scores[:, self.permutation[present]]
        if self.restrict and self.mapping is not None and self.mapping.extra:
            # The model's distribution over the dataset's classes (probabilities only).
            total = out.sum(axis=1, keepdims=True)
            if np.all(out >= 0) and np.all(total > 0):
                out /= total
        return out

    # -- input pipeline --------------------------------------------------------------------
    def make_dataset(self, paths: Sequence[str | Path], read=None, *, batch_size: int | None = None,
                     crop: str | None = None):
        """The shared tf.data pipeline over image files, sized for this model (images only).

        ``read(item) -> uint8 image`` reads items that are not files (a dataset's ids);
        ``batch_size`` and ``crop`` replace the classifier's own (RAF-DB-P: whole sequences per
        batch, frames resized whole)."""
        import input_pipeline

        return input_pipeline.make_dataset([str(path) for path in paths], None,
                                           image_size=self.image_size, channels=self.channels,
                                           batch_size=batch_size or self.batch_size, crop=crop or self.crop,
                                           read=read, grey_first=self.grey_first)

    def make_array_dataset(self, images_uint8: np.ndarray):
        """The shared pipeline over in-memory RGB uint8 images (same cut, resize and grey)."""
        import input_pipeline

        return input_pipeline.make_array_dataset(images_uint8, None, image_size=self.image_size,
                                                 channels=self.channels,
                                                 batch_size=self.batch_size, crop=self.crop,
                                                 grey_first=self.grey_first)

    # -- prediction ------------------------------------------------------------------------
    def with_preprocessing(self, dataset):
        import tensorflow as tf

        if isinstance(dataset.element_spec, tuple):  # (images, labels): keep the images
            dataset = dataset.map(lambda images, *rest: images,
                                  num_parallel_calls=tf.data.AUTOTUNE)
        if self.preprocess is not None:
            preprocess = self.preprocess

            def apply(images):
                out = tf.numpy_function(preprocess, [images], tf.float32, stateful=False)
                out.set_shape(images.shape)
                return out

            dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def predict_dataset(self, dataset, *, progress: str | None = None) -> np.ndarray:
        """Probabilities (N, K) float32 in ``class_names`` order for every image of a batched dataset."""
        chunks = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc=progress, unit="img", leave=False, dynamic_ncols=True)
        try:
            with pipeline_user_errors():
                for images in self.with_preprocessing(dataset):
                    outputs = self.runner.predict(images)
                    chunks.append(outputs)
                    if bar is not None:
                        bar.update(len(outputs))
        finally:
            if bar is not None:
                bar.close()
        if not chunks:
            return np.zeros((0, len(self.class_names or RAFDB_CLASS_NAMES)), np.float32)
        return self.arrange(np.concatenate(chunks).reshape(-1, chunks[0].shape[-1]))

    def predict_paths(self, paths: Sequence[str | Path], *, progress: str | None = None) -> np.ndarray:
        """Probabilities (N, K) in ``class_names`` order for image files (JPEG or PNG)."""
        return self.predict_dataset(self.make_dataset(paths), progress=progress)


def _model_input_shape(model, checkpoint_path: Path, input_size, run_info):
    inputs = model.inputs
    if inputs is None or len(inputs) != 1:
        raise UserError(f"{checkpoint_path}: expected a model with one image input, found "
                        f"{0 if inputs is None else len(inputs)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        hint = ""
        if len(shape) in (2, 3):  # (batch, 2304) or (batch, 48, 48): FER2013 models that reshape inside
            hint = ("; wrap it with an image input, e.g. keras.Sequential([keras.Input((48, 48, 1)), "
                    f"keras.layers.Reshape({tuple(shape[1:])}), model]) saved as .keras")
        raise UserError(f"{checkpoint_path}: expected an image input (batch, height, width, "
                        f"channels), found shape {shape}{hint}")
    _, height, width, channels = shape
    if channels not in (1, 3) and shape[1] in (1, 3):
        raise UserError(f"{checkpoint_path}: the input {shape} looks channel-first (batch, "
                        f"channels, height, width); Keras models are fed channel-last images "
                        f"(batch, height, width, channels): save it with a channel-last input "
                        f"(e.g. keras.Input((height, width, {shape[1]})) followed by "
                        f"keras.layers.Permute((3, 1, 2))), or export it to ONNX or TFLite, whose "
                        f"channel-first inputs are fed as such")
    if height is None or width is None:
        if input_size is None and run_info and run_info.get("input_shape"):
            input_size = tuple(run_info["input_shape"][:2])
        if input_size is None:
            raise UserError(f"{checkpoint_path}: the model accepts any image size; name one with "
                            f"--input-size")
        height, width = input_size
    elif input_size is not None and tuple(int(v) for v in input_size) != (height, width):
        LOG.warning("%s: the model takes %dx%d images; --input-size %dx%d is ignored",
                    checkpoint_path, height, width, *input_size)
    if channels not in (1, 3):
        raise UserError(f"{checkpoint_path}: expected 1 (grey) or 3 (RGB) input channels, found "
                        f"{channels}")
    return (int(height), int(width)), int(channels)


def resolve_class_order(n_outputs: int | None, class_order, run_info: dict | None,
                        checkpoint_path: Path, stored: Sequence[str] | None = None,
                        output_note: str = ""):
    """(output names, where they came from, permutation to RAF-DB order or None) for a model.

    Precedence: ``--class-order`` > names stored in the model file (``stored``) > run.json's
    ``class_names`` > RAF-DB order assumed for 7 outputs (with a warning); UserError otherwise.
    """
    run_json_path = checkpoint_path.parent / RUN_JSON
    if class_order is not None:
        try:
            names = parse_class_order(class_order)
        except ValueError as error:
            raise UserError(f"--class-order: {error}") from None
        refuse_misspelt_class_names(names)
        class_source = "flag"
        if run_info and run_info.get("class_names") and \
                tuple(parse_class_order(run_info["class_names"])) != names:
            LOG.warning("--class-order overrides the class_names of %s", run_json_path)
    elif stored:
        names = parse_class_order(stored)
        class_source = "model file"
    elif run_info and run_info.get("class_names"):
        try:
            names = parse_class_order(run_info["class_names"])
        except ValueError as error:
            raise UserError(f"{run_json_path}: class_names: {error}") from None
        refuse_misspelt_class_names(names, f"{run_json_path}: class_names", warn=True)
        class_source = "run.json"
    elif n_outputs == len(RAFDB_CLASS_NAMES):
        names = RAFDB_CLASS_NAMES
        class_source = "assumed"
        LOG.warning("%s: 7 outputs and %s: assuming RAF-DB class order (%s); name "
                    "another with --class-order (e.g. fer2013)", checkpoint_path,
                    "no run.json" if run_info is None else f"no class_names in {run_json_path}",
                    ",".join(RAFDB_CLASS_NAMES))
    elif n_outputs == 1:
        raise UserError(f"{checkpoint_path}: the model has 1 output (class scores{output_note}); a classifier "
                        f"gives one score per class")
    else:
        raise UserError(f"{checkpoint_path}: the model has {n_outputs} outputs (class scores"
                        f"{output_note}) and nothing names their classes (no --class-order, no names in the "
                        f"file, no class_names in a run.json beside it; only 7 outputs are taken as RAF-DB's "
                        f"order); name them "
                        f"with --class-order (comma-separated, {n_outputs} names in the order of its outputs, "
                        f"as the evaluated dataset spells its classes, e.g. {_example_order(n_outputs)}, or one "
                        f"of {', '.join(CLASS_ORDER_SHORTHANDS)})")
    if n_outputs != len(names):
        shorthand = (f" ({class_order!r} is not one of the shorthands "
                     f"{', '.join(CLASS_ORDER_SHORTHANDS)}; give a comma-separated list)"
                     if isinstance(class_order, str) and len(names) == 1 else "")
        where = {"flag": f"--class-order / {checkpoint_path}", "run.json": f"{run_json_path}: class_names"}.get(
            class_source, f"{checkpoint_path}: its stored class names")
        raise UserError(f"{where}: {len(names)} class name{'s' * (len(names) != 1)} for a "
                        f"model with {n_outputs} output{'s' * (n_outputs != 1)} (class scores{output_note}){shorthand}")
    try:
        permutation = class_permutation(names)
    except ValueError as error:
        # Not RAF-DB's classes: fine for a dataset with these classes (Classifier.use_classes).
        LOG.info("%s: its classes (%s) are not RAF-DB's seven; they are matched by name to the evaluated "
                 "dataset's classes", checkpoint_path, ",".join(names))
        LOG.debug("%s: %s", checkpoint_path, error)
        permutation = None

    return tuple(names), class_source, permutation


def adapt(model, checkpoint_path: str | Path, *, preprocessing: str | None = None,
          class_order: str | Sequence[str] | None = None, eval_preprocessing: str | None = None,
          crop: str | None = None, batch_size: int = 64,
          input_size: tuple[int, int] | None = None) -> Classifier:
    """Work out how to feed ``model`` RAF-DB images and map its outputs to RAF-DB's classes."""
    checkpoint_path = Path(checkpoint_path)
    run_info = read_run_json(checkpoint_path, run_json_replaced(preprocessing, eval_preprocessing, class_order, crop))
    run_json_path = checkpoint_path.parent / RUN_JSON
    image_size, channels = _model_input_shape(model, checkpoint_path, input_size, run_info)
    if run_info and run_info.get("input_shape"):
        recorded = [int(value) for value in run_info["input_shape"]]
        if recorded != [image_size[0], image_size[1], channels]:
            LOG.warning("%s records input_shape %s but the model takes %s; using the model's",
                        run_json_path, recorded, [image_size[0], image_size[1], channels])

    # Crop: flag > run.json > exact (BENCHMARK.md §4.3).
    if crop is None:
        crop = (run_info or {}).get("crop") or "exact"
    if crop not in CROP_CHOICES:
        raise UserError(f"--crop / {run_json_path}: expected one of {', '.join(CROP_CHOICES)}, "
                        f"got {crop!r}")

    # Preprocessing.
    if eval_preprocessing not in (None, "auto", "legacy-vggface2"):
        raise UserError(f"--eval-preprocessing: expected auto or legacy-vggface2, "
                        f"got {eval_preprocessing!r}")
    if preprocessing is not None:
        preprocessing = PREPROCESSING_ALIASES.get(preprocessing, preprocessing)
    if preprocessing is not None and preprocessing not in PREPROCESSING_CHOICES:
        raise UserError(f"--preprocessing: expected one of {', '.join(PREPROCESSING_CHOICES)}, "
                        f"got {preprocessing!r}")
    preprocess = None
    legacy = eval_preprocessing == "legacy-vggface2"
    in_model_mode = None  # run.json's mode when it says the preprocessing is inside the model
    if run_info is not None and run_info.get("preprocessing_in_model"):
        in_model_mode = str(run_info.get("preprocessing") or "no")
    own_layers, own_flip = leading_preprocessing(model, trust_rescaling=in_model_mode is not None)
    stripped_layers: list[str] = []
    # An integer input takes raw pixels only, as an ONNX/TFLite uint8 input (_runner_preprocessing).
    raw_dtype = model_files.keras_integer_input(model)
    if not raw_dtype and (legacy or preprocessing is not None):
        # The flag replaces the model's own preprocessing: cut it off so it does not run twice.
        flag = "--eval-preprocessing legacy-vggface2" if legacy else f"--preprocessing {preprocessing}"
        if in_model_mode not in (None, "no", "none") and not own_layers:
            raise UserError(f"{run_json_path}: says the model applies {in_model_mode} itself, but "
                            f"{checkpoint_path} starts with no preprocessing layer that could be "
                            f"removed for {flag}; evaluate it without {flag.split()[0]}")
        # legacy-vggface2 hands over BGR itself, so the model's RGB->BGR flip goes too.
        count = len(own_layers) + (1 if legacy and own_flip is not None else 0)
        if count:
            stripped_layers = [layer.name for layer in _non_input_layers(model)[:count]]
            model = strip_leading_layers(model, count, checkpoint_path)
            LOG.warning("%s: %s replaces the model's own preprocessing layers (%s), removed for "
                        "this evaluation", checkpoint_path, flag, ", ".join(stripped_layers))
        kept = _leading_scaling_layer(model)
        if kept is not None and (legacy or preprocessing != "none"):
            LOG.warning("%s: the model starts with its own %s layer %r, which is kept: %s is applied "
                        "before it, so both run; if the model scales its input itself, evaluate it "
                        "with --preprocessing none", checkpoint_path, type(kept).__name__,
                        kept.name, flag)
    setting = "none"  # preprocessing_setting: what the branch below computes
    stripped_equivalent = False  # the flag recomputes exactly the model's own (removed) layer
    if raw_dtype:
        preprocess, label, source, setting = _raw_pixel_preprocessing(raw_dtype, checkpoint_path, run_info,
                                                                      preprocessing, legacy, channels)
    elif legacy:
        if channels != 3:
            raise UserError(f"--eval-preprocessing legacy-vggface2 needs a 3-channel model; {checkpoint_path} "
                            f"takes {channels}")
        preprocess, label, source = _legacy_vggface2, "legacy-vggface2 (BGR, swapped means)", "flag"
        setting = LEGACY_VGGFACE2_SETTING
    elif preprocessing is not None:
        bgr = run_json_bgr(run_info, channels)  # the flag replaces the mode, not the channel order
        if run_info is not None:
            _warn_flag_overrides(preprocessing, run_json_path, run_info, bgr)
        if preprocessing in _THREE_CHANNEL_MODES and channels != 3:
            raise UserError(f"--preprocessing {preprocessing} needs a 3-channel model; {checkpoint_path} "
                            f"takes {channels} (use none, scale01 or scale-1-1)")
        preprocess, label, setting = _flag_preprocessing(preprocessing, bgr)
        source = "flag"
        if _flag_recomputes_own_layer(preprocessing, in_model_mode, run_info, own_layers):
            # The flag computes what the removed layer computed: the model's own input, as the
            # default route (run.json, in the model) gives it; one setting for both routes.
            setting, stripped_equivalent = preprocessing_setting(preprocessing, in_model=True), True
    elif run_info is not None:
        source = "run.json"
        _warn_unstated_preprocessing(run_json_path, run_info, own_layers)
        if run_info.get("preprocessing_in_model"):
            label = f"{run_info.get('preprocessing', '?')} (inside the model)"
            setting = _in_model_setting(run_info)
        else:
            mode = run_info.get("preprocessing") or "none"
            bgr = run_json_bgr(run_info, channels)
            if mode in ("no", "none"):
                label = "none (BGR input)" if bgr else "none"
                if bgr:
                    preprocess, setting = _BGRInput(None), preprocessing_setting("none", bgr_input=True)
            elif mode in PREPROCESSING_CHOICES:
                mean_order = run_info.get("mean_order") or "correct"
                colour = run_info.get("colour") or "rgb"
                preprocess = _Preprocessor(mode, mean_order, colour, bgr_input=bgr)
                label = f"{mode} (mean order {mean_order}, {'BGR' if bgr else 'RGB'} input)"
                setting = preprocess.setting
            else:
                raise UserError(f"{run_json_path}: unknown preprocessing {mode!r} (expected one "
                                f"of {', '.join(PREPROCESSING_CHOICES)})")
    elif own_layers:
        label = f"{', '.join(type(layer).__name__ for layer in own_layers)} (inside the model)"
        setting = preprocessing_setting(", ".join(type(layer).__name__ for layer in own_layers), in_model=True)
        source = "model layers"
        LOG.warning("%s: no run.json; the model starts with its own preprocessing layers (%s): "
                    "feeding raw RGB pixels 0..255 to them", checkpoint_path,
                    ", ".join(layer.name for layer in own_layers))
    else:
        label, source = "none", "default"
        first = _leading_scaling_layer(model)
        pixels = "RGB" if channels == 3 else "grey"
        if first is not None:
            LOG.warning("%s: no run.json and no --preprocessing: feeding raw %s pixels 0..255 to its "
                        "own leading %s layer %r, which probably expects them (a --preprocessing flag "
                        "would apply before it)", checkpoint_path, pixels, type(first).__name__, first.name)
        else:
            LOG.warning("%s: no run.json and no --preprocessing: feeding raw %s pixels 0..255 "
                        "(name one with --preprocessing, e.g. scale-1-1 for FER2013 models)",
                        checkpoint_path, pixels)

    # Class order.
    output_shape = tuple(model.outputs[0].shape) if model.outputs else ()
    n_outputs = output_shape[-1] if output_shape else None
    outputs = model_files.keras_output_descriptions(model)
    output_note = model_files.outputs_note(outputs) if len(outputs) > 1 else ""
    names, class_source, permutation = resolve_class_order(n_outputs, class_order, run_info,
                                                           checkpoint_path, output_note=output_note)

    if preprocess is not None:  # fail now, not inside the input pipeline
        try:
            preprocess(np.full((1, image_size[0], image_size[1], channels), 128.0, np.float32))
        except ValueError as error:
            raise UserError(f"{checkpoint_path}: preprocessing {label}: {error}") from None
    if batch_size < 1:
        raise UserError(f"--batch: expected a positive integer, got {batch_size}")
    classifier = Classifier(model_files.KerasRunner(model, checkpoint_path), checkpoint_path,
                            image_size=image_size, channels=channels,
                            crop=crop, batch_size=batch_size, preprocess=preprocess,
                            preprocessing_label=label, preprocessing_source=source,
                            output_names=tuple(names), class_source=class_source,
                            permutation=permutation, run_info=run_info,
                            stripped_layers=stripped_layers,
                            preprocessing_setting=setting if stripped_equivalent
                            else preprocessing_setting_with(setting, stripped_layers))
    LOG.info("%s: input %dx%dx%d, crop %s, preprocessing %s (%s), classes %s (%s)",
             checkpoint_path, image_size[0], image_size[1], channels, crop, label, source,
             ",".join(names), class_source)
    return classifier


def _flag_preprocessing(preprocessing: str, bgr: bool):
    """(preprocess function or None, label, :func:`preprocessing_setting`) of ``--preprocessing
    MODE``, handed over in BGR order when ``bgr`` (a run.json's channel_order, :func:`run_json_bgr`)."""
    setting = preprocessing_setting(preprocessing, bgr_input=bgr)
    if not bgr:
        return (None if preprocessing == "none" else _Preprocessor(preprocessing)), preprocessing, setting
    preprocess = _BGRInput(None) if preprocessing == "none" else _Preprocessor(preprocessing, bgr_input=True)
    return preprocess, f"{preprocessing} (BGR input: run.json channel_order)", setting


def _raw_pixel_preprocessing(raw_dtype: str, checkpoint_path: Path, run_info: dict | None,
                             preprocessing: str | None, legacy: bool, channels: int):
    """(None or the channel reversal, label, source, :func:`preprocessing_setting`) for a model whose
    input is integer pixels (``raw_dtype``, e.g. 'uint8'); UserError for any preprocessing but none
    (flag, --eval-preprocessing or run.json). The pixels are reversed to B, G, R when a run.json says
    channel_order BGR (:func:`run_json_bgr`)."""
    # Integer pixels in: a float preprocessing would be cut to whole numbers 0..255 (0/1 for
    # scale01), so only raw pixels can be fed; any scaling happens inside the model.
    why = (f"the model's input is {raw_dtype} (it takes raw pixels 0..255 and scales them "
           f"itself; preprocessed float values would be rounded into 0..255)")
    if legacy:
        raise UserError(f"--eval-preprocessing legacy-vggface2 / {checkpoint_path}: {why}: "
                        f"evaluate it without --eval-preprocessing")
    if preprocessing not in (None, "none"):
        raise UserError(f"--preprocessing {preprocessing} / {checkpoint_path}: {why}: use "
                        f"--preprocessing none")
    if preprocessing is None and run_info is not None and \
            not run_info.get("preprocessing_in_model") and \
            PREPROCESSING_ALIASES.get(run_info.get("preprocessing") or "none",
                                      run_info.get("preprocessing") or "none") != "none":
        raise UserError(f"{checkpoint_path.parent / RUN_JSON}: preprocessing "
                        f"{run_info.get('preprocessing')!r} for {checkpoint_path}, but {why}; "
                        f"it must say none, or be overridden with --preprocessing none")
    source = "flag" if preprocessing is not None else "model file"
    if run_json_bgr(run_info, channels):
        if preprocessing is not None:
            _warn_flag_overrides(preprocessing, checkpoint_path.parent / RUN_JSON, run_info, True)
        return (_BGRInput(None), f"none (raw pixels 0..255: {raw_dtype} input, BGR order: run.json)",
                source, preprocessing_setting("none", bgr_input=True))
    return (None, f"none (raw pixels 0..255: {raw_dtype} input)", source, preprocessing_setting("none"))


def _runner_preprocessing(runner, checkpoint_path: Path, run_info: dict | None,
                          preprocessing: str | None, eval_preprocessing: str | None,
                          channels: int):
    """(preprocess function or None, label, source, :func:`preprocessing_setting`) for a model that is
    not a Keras checkpoint."""
    if eval_preprocessing not in (None, "auto", "legacy-vggface2"):
        raise UserError(f"--eval-preprocessing: expected auto or legacy-vggface2, "
                        f"got {eval_preprocessing!r}")
    legacy = eval_preprocessing == "legacy-vggface2"
    if preprocessing is not None:
        preprocessing = PREPROCESSING_ALIASES.get(preprocessing, preprocessing)
        if preprocessing not in PREPROCESSING_CHOICES:
            raise UserError(f"--preprocessing: expected one of "
                            f"{', '.join(PREPROCESSING_CHOICES)}, got {preprocessing!r}")
    raw_dtype = getattr(runner, "raw_pixel_input", None)
    if raw_dtype:
        return _raw_pixel_preprocessing(raw_dtype, checkpoint_path, run_info, preprocessing,
                                        legacy, channels)
    if runner.preprocessing_inside:
        if legacy or preprocessing not in (None, "none"):
            raise UserError(f"{checkpoint_path}: a {runner.format} model takes raw pixels 0..255 "
                            f"and computes its own features; drop --preprocessing / "
                            f"--eval-preprocessing")
        return None, "none (raw pixels; the model computes its own features)", "model file", \
            preprocessing_setting("none")
    if legacy:
        if channels != 3:
            raise UserError("--eval-preprocessing legacy-vggface2 needs a 3-channel model")
        return _legacy_vggface2, "legacy-vggface2 (BGR, swapped means)", "flag", LEGACY_VGGFACE2_SETTING
    if preprocessing is not None:
        if preprocessing in _THREE_CHANNEL_MODES and channels != 3:
            raise UserError(f"--preprocessing {preprocessing} needs a 3-channel model; "
                            f"{checkpoint_path} takes {channels} (use none, scale01 or scale-1-1)")
        bgr = run_json_bgr(run_info, channels)  # the flag replaces the mode, not the channel order
        if run_info is not None:
            _warn_flag_overrides(preprocessing, checkpoint_path.parent / RUN_JSON, run_info, bgr)
        preprocess, label, setting = _flag_preprocessing(preprocessing, bgr)
        if preprocessing == "none" and run_info is not None and run_info.get("preprocessing_in_model"):
            # raw pixels into a graph that preprocesses them itself: what the default route feeds
            setting = _in_model_setting(run_info)
        return preprocess, label, "flag", setting
    if run_info is not None:
        _warn_unstated_preprocessing(checkpoint_path.parent / RUN_JSON, run_info, None)
    if run_info is not None and not run_info.get("preprocessing_in_model"):
        mode = run_info.get("preprocessing") or "none"
        mode = PREPROCESSING_ALIASES.get(mode, mode)
        bgr = run_json_bgr(run_info, channels)
        if mode == "none":
            if bgr:
                return _BGRInput(None), "none (BGR input)", "run.json", preprocessing_setting("none", bgr_input=True)
            return None, "none", "run.json", preprocessing_setting("none")
        if mode not in PREPROCESSING_CHOICES:
            raise UserError(f"{checkpoint_path.parent / RUN_JSON}: unknown preprocessing "
                            f"{mode!r} (expected one of {', '.join(PREPROCESSING_CHOICES)})")
        preprocess = _Preprocessor(mode, run_info.get("mean_order") or "correct",
                                   run_info.get("colour") or "rgb", bgr_input=bgr)
        return preprocess, f"{mode} ({'BGR' if bgr else 'RGB'} input)", "run.json", preprocess.setting
    if run_info is not None:
        return None, f"{run_info.get('preprocessing', '?')} (inside the model)", "run.json", \
            _in_model_setting(run_info)
    quantised = getattr(runner, "input_range", None)
    fits = model_files.preprocessing_for_range(*quantised) if quantised else None
    if fits == "none":  # the default is what its input holds
        LOG.info("%s: no --preprocessing: feeding raw %s pixels 0..255, the range its quantised input holds "
                 "([%.4g, %.4g])", checkpoint_path, "RGB" if channels == 3 else "grey", *quantised)
        return None, "none", "default", preprocessing_setting("none")
    if fits:
        hint = (f"its quantised input holds [{quantised[0]:.4g}, {quantised[1]:.4g}]: "
                f"--preprocessing {fits} probably")
    else:
        hint = "e.g. scale-1-1" + (" or z_normalization" if channels == 3 else "")
    LOG.warning("%s: no --preprocessing: feeding raw %s pixels 0..255 (name the model's "
                "preprocessing with --preprocessing; %s)", checkpoint_path,
                "RGB" if channels == 3 else "grey", hint)
    return None, "none", "default", preprocessing_setting("none")


def adapt_runner(runner, checkpoint_path: str | Path, *, preprocessing: str | None = None,
                 class_order: str | Sequence[str] | None = None,
                 eval_preprocessing: str | None = None, crop: str | None = None,
                 batch_size: int = 64, input_size: tuple[int, int] | None = None) -> Classifier:
    """``adapt`` for a TFLite, ONNX or LBP+SVM model (a ``model_files.Runner``).

    The input size and channels come from the model file (``--input-size`` where the file leaves
    them free); preprocessing from ``--preprocessing`` / ``--eval-preprocessing``, else a run.json
    beside the file, else raw pixels with a warning; class order as for Keras checkpoints, with the
    names a ``.skops`` file stores taking the place of run.json.
    """
    checkpoint_path = Path(checkpoint_path)
    run_info = read_run_json(checkpoint_path, run_json_replaced(preprocessing, eval_preprocessing, class_order, crop))
    height, width, channels = runner.input_hwc
    if height is None or width is None:
        if input_size is None and run_info and run_info.get("input_shape"):
            input_size = tuple(run_info["input_shape"][:2])
        if input_size is None:
            raise UserError(f"{checkpoint_path}: the model leaves its input size free "
                            f"({height or '?'}x{width or '?'}x{channels}); name one with "
                            f"--input-size")
        height, width = height or int(input_size[0]), width or int(input_size[1])
    elif input_size is not None and tuple(input_size) != (height, width):
        LOG.warning("%s: the model takes %dx%d images; --input-size %dx%d is ignored",
                    checkpoint_path, height, width, *input_size)
    if crop is None:
        crop = (run_info or {}).get("crop") or "exact"
    if crop not in CROP_CHOICES:
        raise UserError(f"--crop: expected one of {', '.join(CROP_CHOICES)}, got {crop!r}")
    if batch_size < 1:
        raise UserError(f"--batch: expected a positive integer, got {batch_size}")
    preprocess, label, source, setting = _runner_preprocessing(runner, checkpoint_path, run_info,
                                                               preprocessing, eval_preprocessing, channels)
    if runner.n_outputs is None:  # a class axis that is not static: run the model once
        runner.count_outputs(int(height), int(width))
    names, class_source, permutation = resolve_class_order(runner.n_outputs, class_order,
                                                           run_info, checkpoint_path,
                                                           stored=runner.class_names,
                                                           output_note=runner.output_note)
    classifier = Classifier(runner, checkpoint_path, image_size=(int(height), int(width)),
                            channels=int(channels), crop=crop, batch_size=batch_size,
                            preprocess=preprocess, preprocessing_label=label,
                            preprocessing_source=source, output_names=names,
                            class_source=class_source, permutation=permutation,
                            run_info=run_info, preprocessing_setting=setting)
    LOG.info("%s (%s): input %dx%dx%d, crop %s, preprocessing %s (%s), classes %s (%s)",
             checkpoint_path, runner.format, height, width, channels, crop, label, source,
             ",".join(names), class_source)
    return classifier


# --------------------------------------------------------------------------------------------
# Command line


def _input_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*([0-9]+)\s*(?:[xX,]\s*([0-9]+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if not (1 <= height <= MAX_INPUT_SIDE and 1 <= width <= MAX_INPUT_SIDE):
        raise argparse.ArgumentTypeError(f"expected sides from 1 to {MAX_INPUT_SIDE} px, got {text!r}")
    return height, width


# --input-size: a side beyond this is a typo, not a face model (one float32 RGB image at 4096 px
# is 200 MB; the evaluation's batches would not fit in memory).
MAX_INPUT_SIDE = 4096


def _preprocessing_choice(text: str) -> str:
    return PREPROCESSING_ALIASES.get(text, text)


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """Flags that adapt a checkpoint to RAF-DB (shared by both evaluation scripts)."""
    group = parser.add_argument_group("checkpoint adaptation")
    group.add_argument("--preprocessing", type=_preprocessing_choice,
                       choices=PREPROCESSING_CHOICES, default=None,
                       help="preprocessing for a checkpoint without run.json (overrides run.json "
                            "when given; the project's own preprocessing layers at the start of "
                            "the model are then removed, a third-party Rescaling is kept with a "
                            "warning). On RGB 0..255: scale01 = x/255; scale-1-1 = x/127.5-1 "
                            "(e.g. FER2013 models); z_normalization = (x/255 - ImageNet mean) / "
                            "ImageNet std, RGB (torchvision's Normalize, as most PyTorch models); "
                            "vggface2 = x - VGGFace2 RGB means; full_normalization = the "
                            "original's histogram equalisation + illumination plane + per-image "
                            "z-score; 'no' (train_fer.py's spelling) = none. Default: run.json's, "
                            "else raw pixels with a warning")
    group.add_argument("--eval-preprocessing", choices=EVAL_PREPROCESSING_CHOICES, default="auto",
                       help="legacy-vggface2 reproduces the original's evaluation input (BGR, "
                            "VGGFace2 means subtracted in swapped order) whatever run.json says; "
                            "the model's own preprocessing layers and RGB->BGR flip are removed")
    group.add_argument("--bgr-input", action="store_true",
                       help="the model takes its colour channels in B, G, R order (trained on "
                            "images read by OpenCV without conversion): the preprocessed input "
                            "is handed over reversed. RGB is assumed otherwise; colour models "
                            "only (docs/MODELS.md)")
    group.add_argument("--class-order", default=None, metavar="NAMES",
                       help="the checkpoint's output classes, comma-separated (synonyms "
                            "angry/happy/sad/surprised accepted; other names match the dataset's "
                            "exactly), or 'fer2013' / 'ferplus' / 'rafdb'; matched by name to the dataset's "
                            "classes. Default: run.json's, else RAF-DB order")
    group.add_argument("--restrict-to-dataset-classes", action="store_true",
                       help="take the arg-max over the dataset's classes only (default: over all "
                            "the model's outputs, so that predicting a class the dataset lacks, "
                            "e.g. contempt on RAF-DB, counts as wrong; docs/MODELS.md)")
    group.add_argument("--unsafe", action="store_true",
                       help="allow checkpoints with Lambda layers (runs code stored in the file)")
    group.add_argument("--crop", choices=CROP_CHOICES, default=None,
                       help="exact crop or the original's 99 px cut (BENCHMARK.md §4.3). Default: "
                            "run.json's, else exact")
    group.add_argument("--batch", type=positive_int, default=64, help="evaluation batch size")
    group.add_argument("--input-size", type=_input_size, default=None, metavar="HxW",
                       help="input size for models that accept any size (ignored otherwise)")


# The flags of add_checkpoint_args that change what a model file computes: with --predictions (the
# scores already computed, in the dataset's class order) they would be ignored, so they are refused.
_MODEL_ONLY_FLAGS = (("preprocessing", None), ("eval_preprocessing", "auto"), ("bgr_input", False),
                     ("class_order", None),
                     ("restrict_to_dataset_classes", False), ("unsafe", False), ("crop", None),
                     ("input_size", None))


def refuse_model_flags_with_predictions(args: argparse.Namespace) -> None:
    """UserError naming the first model-only flag given with ``--predictions``: a predictions file
    holds scores already computed, columns in the dataset's class order, so ``--class-order fer2013``
    there would silently change nothing (write the columns in the dataset's order instead)."""
    for dest, default in _MODEL_ONLY_FLAGS:
        if getattr(args, dest, default) != default:
            flag = "--" + dest.replace("_", "-")
            why = ("write the file's columns in the dataset's class order" if dest == "class_order" else
                   "it applies to a model file, and the predictions are already made")
            raise UserError(f"{flag}: not with --predictions ({why}; docs/MODELS.md)")


def classifier_from_args(checkpoint_path: str | Path, args: argparse.Namespace) -> Classifier:
    """Load and adapt one model file (any format of model_files) with the flags of
    :func:`add_checkpoint_args`."""
    kind = model_files.model_format(checkpoint_path)  # refuses a pickle by its name
    if kind != "keras":
        runner = model_files.open_runner(checkpoint_path, batch_size=args.batch)
        classifier = adapt_runner(runner, checkpoint_path, preprocessing=args.preprocessing,
                                  class_order=args.class_order,
                                  eval_preprocessing=args.eval_preprocessing, crop=args.crop,
                                  batch_size=args.batch, input_size=args.input_size)
    else:
        model = load_classifier(checkpoint_path, unsafe=args.unsafe)
        classifier = adapt(model, checkpoint_path, preprocessing=args.preprocessing,
                           class_order=args.class_order, eval_preprocessing=args.eval_preprocessing,
                           crop=args.crop, batch_size=args.batch, input_size=args.input_size)
    if getattr(args, "bgr_input", False):
        hand_over_bgr(classifier)
    return classifier


def hand_over_bgr(classifier: Classifier) -> None:
    """``--bgr-input``: ``classifier`` feeds its model the same input with the channels reversed.
    UserError for a model that is not RGB, or whose input is BGR already."""
    flag = "--bgr-input"
    if classifier.channels != 3:
        raise UserError(f"{flag}: {classifier.checkpoint_path} takes {classifier.channels} channel(s); "
                        f"the channel order applies to 3-channel (colour) models only")
    inner = classifier.preprocess
    why = None
    if inner is _legacy_vggface2:
        why = "--eval-preprocessing legacy-vggface2 hands over BGR itself"
    elif str((classifier.run_info or {}).get("channel_order") or "RGB").upper() == "BGR":
        # No flag but legacy-vggface2 (refused above) replaces channel_order: either the input is
        # handed over reversed already (run_json_bgr, with or without --preprocessing), or the model
        # reverses the channels itself (preprocessing_in_model), as ours do
        why = f"{classifier.checkpoint_path.parent / RUN_JSON} says channel_order BGR"
    elif classifier.model is not None and leading_preprocessing(classifier.model, trust_rescaling=True)[1] is not None:
        why = "the model starts with its own ChannelFlip layer"
    if why is not None:
        raise UserError(f"{flag}: the input of {classifier.checkpoint_path} is BGR already ({why}); "
                        f"drop {flag}")
    classifier.preprocess = _BGRInput(inner)
    classifier.preprocessing_label += " (BGR input: --bgr-input)"
    classifier.preprocessing_setting = setting_with_bgr(classifier.preprocessing_setting)
    LOG.info("%s: input handed over in BGR order (--bgr-input)", classifier.checkpoint_path)
