"""Pretrained weights from local files only (BENCHMARK.md §4.1 "Weights", §6 rows 20-22): nothing is ever
downloaded.

``load_pretrained(model, spec)``: ``spec`` is a local file (a full Keras model or a weights file:
``.h5``/``.hdf5`` in the legacy Keras 2/3 layout, ``.weights.h5`` or ``.keras`` in the Keras 3
layout). Weights are matched by layer name; legacy names with ``/`` (rcmalli keras-vggface,
Keras 2 DenseNet) are compared with ``/`` replaced by ``_``. ``spec == "imagenet"`` takes Keras's
own notop file from its cache (``$KERAS_HOME/models`` or ``~/.keras/models``) when it is already
there, and otherwise raises ValueError naming the file to supply. For ImageNet files the layers
whose names differ (Keras's unnamed residual convs, Keras's VGG16 block names) are paired by
order when their shapes agree.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import keras
import numpy as np

LOG = logging.getLogger("fer")

# Keras's notop ImageNet files per network (keras.applications names); mobilenetv2 depends on size.
IMAGENET_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet121bc": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
MOBILENET_ROWS = (96, 128, 160, 192, 224)
# Files the original downloaded for its face pretraining (BENCHMARK.md §4.1); here they must be given by path.
FACE_WEIGHTS = {
    "senet50": "rcmalli_vggface_tf_notop_senet50.h5",
    "vgg16": "rcmalli_vggface_tf_notop_vgg16.h5",
    "densenet121bc": "densenet121bc_vggface_full.hdf5",
    "xception": "xception_vggface_full.hdf5",
}


def normalise_name(name: str) -> str:
    """Layer names are compared with '/' mapped to '_' (Keras 3 forbids '/' in layer names)."""
    return name.replace("/", "_")


def _keras_cache_dirs() -> list[Path]:
    """Where Keras's get_file keeps cached models: $KERAS_HOME (or ~/.keras), or /tmp/.keras."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home) / "models", Path("/tmp/.keras/models")]


def imagenet_file_name(net: str, input_size: int) -> str:
    """Name of Keras's notop ImageNet weight file for ``net`` at ``input_size`` (ValueError if none)."""
    if net == "mobilenetv2":
        alpha = 0.75 if input_size <= 96 else 1.0
        rows = input_size if input_size in MOBILENET_ROWS else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    if net in IMAGENET_FILES:
        return IMAGENET_FILES[net]
    raise ValueError(f"pretraining 'imagenet': no ImageNet weights exist for net {net!r}; "
                     f"available for {', '.join(sorted(list(IMAGENET_FILES) + ['mobilenetv2']))}")


def _imagenet_path(model: keras.Model) -> Path:
    net = model.name
    size = int(model.inputs[0].shape[1])
    file_name = imagenet_file_name(net, size)
    for folder in _keras_cache_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    raise ValueError(
        f"pretraining 'imagenet': {file_name} is not in Keras's cache and nothing is downloaded; "
        f"copy it to {_keras_cache_dirs()[0] / file_name} (it is published with keras.applications) "
        f"or pass its path with --pretraining PATH")


# --------------------------------------------------------------------------------------------
# Reading weight files into {layer name: [arrays]} (file order kept).


def _read_legacy_group(group: h5py.Group) -> "OrderedDict[str, list[np.ndarray]]":
    out: OrderedDict[str, list[np.ndarray]] = OrderedDict()
    names = [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in group.attrs.get("layer_names", [])]
    for layer_name in names:
        layer_group = group[layer_name]
        weight_names = [n.decode("utf8") if isinstance(n, bytes) else str(n)
                        for n in layer_group.attrs.get("weight_names", [])]
        if not weight_names:
            continue
        prefix = layer_name + "/"
        for weight_name in weight_names:
            if all(w.startswith(prefix) for w in weight_names):
                owner = layer_name  # a plain layer (possibly with '/' in its own name)
            else:
                owner = weight_name.rsplit("/", 1)[0]  # a nested model: one sub-layer per prefix
            out.setdefault(owner, []).append(np.asarray(layer_group[weight_name]))
    return out


def _read_keras3_group(group: h5py.Group) -> "OrderedDict[str, list[np.ndarray]]":
    out: OrderedDict[str, list[np.ndarray]] = OrderedDict()

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars" and len(obj.keys()):
            keys = sorted(obj.keys(), key=int)
            owner = obj.attrs.get("name", name.split("/")[-2])
            owner = owner.decode("utf8") if isinstance(owner, bytes) else str(owner)
            out[owner] = [np.asarray(obj[key]) for key in keys]

    group.visititems(visit)
    return out


def read_weight_file(path) -> "OrderedDict[str, list[np.ndarray]]":
    """{layer name: [arrays]} from a Keras model or weights file (legacy HDF5, .weights.h5, .keras)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretraining: file not found: {path}")
    try:
        if zipfile.is_zipfile(path):  # .keras archive
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" not in archive.namelist():
                    raise ValueError(f"pretraining: {path}: a zip without model.weights.h5 is not a .keras model")
                data = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(data, "r") as handle:
                return _read_keras3_group(handle)
        with h5py.File(path, "r") as handle:
            if "model_weights" in handle:
                return _read_legacy_group(handle["model_weights"])
            if "layer_names" in handle.attrs:
                return _read_legacy_group(handle)
            return _read_keras3_group(handle)
    except OSError as error:
        raise ValueError(f"pretraining: {path}: not a readable HDF5/Keras file ({error})") from None


# --------------------------------------------------------------------------------------------


def _weighted_layers(model: keras.Model) -> list:
    """Layers that own weights, nested models flattened, in model order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _shapes(arrays) -> list[tuple]:
    return [tuple(int(d) for d in np.shape(a)) for a in arrays]


def load_pretrained(model: keras.Model, spec: str) -> dict:
    """Load weights by layer name from a local file, or Keras's cached ImageNet file; return a report.

    The report has ``file``, ``matched`` (layer names), ``mismatched`` (``{layer, expected, found}``
    with weight shapes), ``missing`` (model layers with weights that the file lacks), ``unused``
    (file layers that the model lacks) and ``matched_by_order`` (ImageNet only: ``[model layer,
    file layer]`` pairs).
    """
    spec = str(spec)
    by_order = False
    if spec == "imagenet":
        path = _imagenet_path(model)
        by_order = True
    elif spec in ("vggface", "vggface2"):
        expected = FACE_WEIGHTS.get(model.name)
        hint = f"the file {expected}" if expected else "a weights file"
        raise ValueError(f"pretraining {spec!r}: nothing is downloaded; pass the path of {hint} "
                         f"with --pretraining PATH")
    else:
        path = Path(spec)
    file_layers = read_weight_file(path)
    by_key = OrderedDict((normalise_name(name), arrays) for name, arrays in file_layers.items())
    report = {"file": str(path), "matched": [], "mismatched": [], "missing": [], "unused": [],
              "matched_by_order": []}
    used = set()
    unmatched_model = []
    for layer in _weighted_layers(model):
        key = normalise_name(layer.name)
        expected = _shapes(layer.get_weights())
        if key not in by_key:
            unmatched_model.append(layer)
            continue
        used.add(key)
        arrays = by_key[key]
        if _shapes(arrays) != expected:
            report["mismatched"].append({"layer": layer.name, "expected": expected, "found": _shapes(arrays)})
            continue
        layer.set_weights(arrays)
        report["matched"].append(layer.name)
    leftovers = [key for key in by_key if key not in used]
    if by_order:
        remaining = list(leftovers)
        for layer in list(unmatched_model):
            expected = _shapes(layer.get_weights())
            if remaining and _shapes(by_key[remaining[0]]) == expected:
                key = remaining.pop(0)
                layer.set_weights(by_key[key])
                report["matched_by_order"].append([layer.name, key])
                unmatched_model.remove(layer)
        leftovers = remaining
    report["missing"] = [layer.name for layer in unmatched_model]
    report["unused"] = leftovers
    LOG.info("pretraining %s: %d layers matched by name, %d by order, %d shape mismatches, %d missing, %d unused",
             path, len(report["matched"]), len(report["matched_by_order"]), len(report["mismatched"]),
             len(report["missing"]), len(report["unused"]))
    for entry in report["mismatched"]:
        LOG.warning("pretraining: %s not loaded: shapes %s in the model, %s in the file",
                    entry["layer"], entry["expected"], entry["found"])
    return report
