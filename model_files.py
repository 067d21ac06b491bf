"""Run classifiers stored in any supported file format behind one interface (docs/BENCHMARK.md §11.4).

A *runner* takes a float32 batch in NHWC layout (the pixel values the caller's preprocessing made)
and returns float32 class probabilities (B, K) in the model's own output order. ``checkpoints.py``
wraps a runner into its ``Classifier`` (input size, preprocessing, class order); nothing here
knows about RAF-DB.

Formats
-------
``.keras`` / ``.h5`` / ``.hdf5``
    :class:`KerasRunner` around a model loaded by ``checkpoints.load_classifier`` (safe mode).
``.tflite``
    :class:`LiteRTRunner`: the LiteRT interpreter of the ``ai-edge-litert`` package
    (``tf.lite.Interpreter`` is deprecated for deletion). Float and integer-quantised inputs and
    outputs: scale and zero point are read from the model. The batch dimension is resized to the
    evaluation batch where the model allows it; otherwise images go one at a time. NHWC, or NCHW
    when axis 1 is the one of size 1 or 3 (ai-edge-torch); a free height/width is allocated at
    the first batch's size.
``.onnx``
    :class:`OnnxRunner`: onnxruntime on the CPU. One image input; NCHW or NHWC detected from its
    shape (the dimension that is 1 or 3 is the channel axis); float32, float16 or uint8 input.
``.skops``
    :class:`LbpSvmRunner`: the LBP+SVM baseline (docs/BENCHMARK.md §9.6, §9.9) loaded by
    ``lbp_svm.load_skops``; it takes grey raw pixels 0..255.
``.pickle`` / ``.pkl``
    Always refused, before the file is opened: unpickling runs code stored in the file.

Output scores: a TFLite or ONNX runner returns probabilities. When the first batch it predicts has a row that is
negative or does not sum to 1 (within 1e-3), the model is taken to output logits and a softmax is
applied to every batch from then on (``output_kind`` says which). A Keras model is treated the same
way (the project's networks end in a softmax, so their outputs are used as they are). For an integer
(quantised) or float16 output the tolerance widens to K x its resolution; so it does for a float
output that is a dequantised softmax of a quantised graph (TFLite: a DEQUANTIZE of a quantised
SOFTMAX; ONNX: a DequantizeLinear of a quantised Softmax), at the scale of that quantisation (e.g.
1/256), and its values are then used as they are, like an integer output's. A model with several
outputs is read at its first output (a warning names them all).

Raw-pixel inputs: an ONNX model with a uint8 input, and a TFLite model with a uint8 input that
carries no quantisation parameters, take raw pixels 0..255 (``raw_pixel_input`` names the dtype;
``checkpoints`` refuses a preprocessing for them). A TFLite integer input *with* quantisation
parameters takes the preprocessed float values, quantised with them.

Class count: an ONNX output whose class axis is symbolic leaves ``n_outputs`` None until
:meth:`Runner.count_outputs` has run the model once on a zero image.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cli_common import UserError

LOG = logging.getLogger("fer.model_files")

KERAS_SUFFIXES = (".hdf5", ".h5", ".keras")
TFLITE_SUFFIXES = (".tflite",)
ONNX_SUFFIXES = (".onnx",)
SKOPS_SUFFIXES = (".skops",)
MODEL_SUFFIXES = KERAS_SUFFIXES + TFLITE_SUFFIXES + ONNX_SUFFIXES + SKOPS_SUFFIXES
PICKLE_SUFFIXES = (".pickle", ".pkl", ".joblib")  # joblib files are pickles too
# PyTorch checkpoints and weight files: refused with how to export the model (see model_format).
PYTORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pt2", ".safetensors")

# A row of a probability output sums to 1 within this; otherwise the output is taken for logits.
PROBABILITY_TOLERANCE = 1e-3


def refuse_pickle(path: str | Path) -> None:
    """UserError for a pickle file, raised from its name alone (the file is never opened)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{path}: pickle files are refused because unpickling runs code stored in "
                        f"the file; save the model with skops as a .skops file instead (the "
                        f"LBP+SVM baseline does; docs/BENCHMARK.md §9.9)")


def model_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a model: the model's identity in result files (report.py joins a model's
    robustness and stability results by it, whatever folder each evaluation ran from).

    A single-file model is the SHA-256 of its bytes. An ONNX model whose weights lie in external
    data files (``model.onnx.data`` beside it, as ``torch.onnx.export`` writes by default) is the
    SHA-256 of the .onnx bytes followed, for each data file in name order, by NUL, its name
    relative to the model, NUL and its bytes: two exports of one graph with different weights are
    two models. Kept per (path, size, modification time) of every file, so several describe()
    calls hash the files once."""
    files = model_data_files(path)
    folder = Path(path).parent
    stats = tuple((os.path.abspath(f), f.relative_to(folder).as_posix() if index else "", *_size_mtime(f))
                  for index, f in enumerate(files))
    return _sha256_of(stats)


def _size_mtime(path: str | Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def model_size(path: str | Path) -> int:
    """Bytes of the model file plus its external data files (see :func:`model_data_files`)."""
    return sum(os.stat(f).st_size for f in model_data_files(path))


def model_data_files(path: str | Path) -> list[Path]:
    """The model file, then the external data files an ONNX model names (sorted, each once).

    UserError when a named data file is missing or lies outside the model's folder, before
    onnxruntime would fail on it with a message that does not say which file to put where."""
    path = Path(path)
    if path.suffix.lower() not in ONNX_SUFFIXES:
        return [path]
    files = [path]
    for location, _ in _onnx_external_locations(os.path.abspath(path), *_size_mtime(path)):
        if Path(location).is_absolute() or ".." in Path(location).parts:
            raise UserError(f"{path}: names the external data file {location!r} outside its own "
                            f"folder; ONNX external data must lie beside the .onnx file")
        target = path.parent / location
        if target.is_dir():
            raise UserError(f"{path}: its weights are stored in the external data file {location!r}, but "
                            f"{target} is a folder, not that file")
        if not target.is_file():
            renamed = path.parent / (path.name + ".data")
            hint = (f"; {renamed.name} is there, but the data file's name is recorded inside the .onnx "
                    f"file: give it back the name {location!r} (or rename both files together with "
                    f"onnx.save_model(..., location=...))"
                    if renamed.is_file() and renamed.name != location else
                    ": keep the data file beside the .onnx file when copying the model "
                    "(torch.onnx.export writes both)")
            raise UserError(f"{path}: its weights are stored in the external data file "
                            f"{location!r}, which is not in {path.parent}/{hint}")
        files.append(target)
    return files


@functools.lru_cache(maxsize=64)
def _onnx_external_locations(path: str, _size: int, _mtime_ns: int) -> tuple[tuple[str, int], ...]:
    """Sorted external data locations named by an ONNX model's tensors (initializers, constants,
    subgraphs), each with the bytes its tensors need (the largest offset + length recorded; 0 where
    no length is); () when the onnx package is missing or cannot parse the file (onnxruntime then
    reports the file)."""
    try:
        import onnx
    except ImportError:
        return ()
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not parseable: loading it reports the problem
        return ()
    locations: dict[str, int] = {}

    def visit_nodes(nodes, tensors: list) -> None:
        for node in nodes:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                tensors.extend(attribute.tensors)
                for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    tensors.extend(graph.initializer)
                    tensors.extend(sparse.values for sparse in graph.sparse_initializer)
                    visit_nodes(graph.node, tensors)

    tensors = list(model.graph.initializer) + [sparse.values for sparse in model.graph.sparse_initializer]
    visit_nodes(model.graph.node, tensors)
    for function in model.functions:
        visit_nodes(function.node, tensors)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            location = entries.get("location")
            if location:
                try:
                    end = int(entries.get("offset") or 0) + int(entries.get("length") or 0) \
                        if entries.get("length") else 0
                except ValueError:
                    end = 0
                locations[location] = max(locations.get(location, 0), end)
    return tuple(sorted(locations.items()))


def _external_data_note(path: Path, data_files: list[Path]) -> str:
    """What to say of an ONNX model's external data files when onnxruntime cannot load the model:
    a file shorter than its tensors' recorded offsets and lengths is named as cut short; otherwise
    the files are only named (their size is what the model records: the cause lies elsewhere)."""
    needed: dict[str, int] = {}  # normalised location ('./w.data' and 'w.data' are one file) -> bytes
    for location, end in _onnx_external_locations(os.path.abspath(path), *_size_mtime(path)):
        key = os.path.normpath(location)
        needed[key] = max(needed.get(key, 0), end)
    short, checked = [], True
    for data in data_files:
        want = needed.get(os.path.normpath(os.path.relpath(data, path.parent)), 0)
        size = data.stat().st_size if data.is_file() else 0
        checked = checked and bool(want)
        if want and size < want:
            short.append(f"{data} is {size:,} bytes, and the model's tensors need {want:,}")
    names = ", ".join(str(f) for f in data_files)
    if short:
        return (f"; its weights are read from {names}: {'; '.join(short)} (copied short, or from another "
                f"export): copy it again from the export")
    # the size is vouched for only where the model records one for every file
    return f"; its weights are read from {names}" + (", of the size the model records" if checked else "")


@functools.lru_cache(maxsize=64)
def _sha256_of(files: tuple[tuple[str, str, int, int], ...]) -> str:
    """SHA-256 of (absolute path, name, size, mtime) files: the first one's bytes, then for each
    further one (an external data file) NUL, its name relative to the model, NUL and its bytes."""
    import hashlib

    digest = hashlib.sha256()
    for index, (path, name, _size, _mtime_ns) in enumerate(files):
        if index:
            digest.update(b"\0" + name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, at most 300 characters."""
    text = str(error).strip()
    return (text.splitlines() or [""])[0][:300]


def pytorch_file_message(path: str | Path) -> str:
    """Why a PyTorch file is not evaluated, and how to export it to ONNX (docs/MODELS.md)."""
    path = Path(path)
    suffix = path.suffix.lower()
    note = ""
    if suffix == ".safetensors":
        what = "holds weights only, without the network's code"
        load = "load the weights into the network where its code is defined"
    elif suffix == ".pt2":
        what = "is a torch.export program, which needs PyTorch to run"
        load = f"load it with torch.export.load('{path.name}').module()"
        note = (" (a program exported without dynamic_shapes has a fixed batch: export it then with an input of "
                "that batch size and without dynamic_axes)")
    else:
        what = ("is a pickle (loading it runs code stored in the file) holding weights or a module "
                "that needs the network's code, or a TorchScript module that needs PyTorch")
        load = ("load it where the network's code is defined (torch.jit.load for TorchScript, whose "
                "export needs dynamo=False)")
    return (f"{path}: a PyTorch {suffix} file cannot be evaluated here: it {what}. Export the model to "
            f"ONNX instead: {load}, then torch.onnx.export(model.eval(), torch.zeros(1, 3, H, W), "
            f"'model.onnx', input_names=['image'], dynamic_axes={{'image': {{0: 'batch'}}}}){note}, and pass "
            f"the .onnx file (with its model.onnx.data, if written) with --preprocessing and --class-order; or "
            f"pass the model's predictions as a CSV with --predictions (docs/MODELS.md, 'PyTorch models')")


# ONNX files have no magic number: a ModelProto starts with field 1 (ir_version, tag 0x08, a small
# varint), then one of fields 2-8 (producer name/version, domain, model version, doc string, graph,
# opset imports), in field order as protobuf writers emit them.
_ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def sniff_model_file(path: str | Path) -> tuple[str, str] | None:
    """What the first bytes of a model file say it is, whatever its name: (format, description)
    for a TFLite flatbuffer ('TFL3' at byte 4), an HDF5 file (Keras .h5), a zip archive (a .keras
    or .skops model) or an ONNX protobuf; None when it is none of them or cannot be read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    if head[4:8] == b"TFL3":
        return "tflite", "a TFLite flatbuffer (identifier TFL3)"
    if head == b"\x89HDF\r\n\x1a\n":
        return "keras", "an HDF5 file (a Keras .h5 model)"
    if head[:4] == b"PK\x03\x04":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return "zip", "a zip archive"
        if "schema.json" in names:
            return "skops", "a skops archive"
        return ("keras", "a .keras archive") if "config.json" in names else ("zip", "a zip archive")
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in _ONNX_SECOND_TAGS:
        return "onnx", "an ONNX model (protobuf)"
    return None


_FORMAT_SUFFIX = {"tflite": ".tflite", "keras": ".keras", "onnx": ".onnx", "skops": ".skops"}


def model_format(path: str | Path) -> str:
    """'keras', 'tflite', 'onnx' or 'skops' from the file name (UserError otherwise, or when the
    file's first bytes say it is another of them: a TFLite file named .onnx failed deep inside the
    other runtime's parser)."""
    path = Path(path)
    refuse_pickle(path)
    error = saved_model_error(path)
    if error is not None:
        raise error
    suffix = path.suffix.lower()
    for name, suffixes in (("keras", KERAS_SUFFIXES), ("tflite", TFLITE_SUFFIXES),
                           ("onnx", ONNX_SUFFIXES), ("skops", SKOPS_SUFFIXES)):
        if suffix in suffixes:
            found = sniff_model_file(path) if path.is_file() else None
            # a zip under an .h5 name has its own message (Keras); a zip of unknown content is left to the loader
            if found is not None and found[0] not in (name, "zip"):
                good = ".h5" if found[1].startswith("an HDF5") else _FORMAT_SUFFIX[found[0]]
                raise UserError(f"{path}: the file is {found[1]}, not the {name} model its {path.suffix} name "
                                f"says: rename it to {good}")
            return name
    if suffix in PYTORCH_SUFFIXES:
        raise UserError(pytorch_file_message(path))
    raise UserError(f"{path}: unknown model format {suffix or '(no suffix)'}; expected one of "
                    f"{', '.join(MODEL_SUFFIXES)}")


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def probability_rows(scores: np.ndarray, step: float = 0.0) -> np.ndarray:
    """Per row (bool): non-negative and summing to 1 within PROBABILITY_TOLERANCE, widened to
    K x ``step`` for outputs of coarse resolution (``step``: the quantisation scale of an integer
    output, the float16 spacing below 1, or the last printed decimal): K values each rounded to a
    multiple of ``step`` may sum to 1 +- K step / 2."""
    scores = np.asarray(scores, dtype=np.float64)
    tolerance = max(PROBABILITY_TOLERANCE, scores.shape[-1] * float(step))
    return (scores.min(axis=1, initial=0.0) >= 0) & (np.abs(scores.sum(axis=1) - 1.0) <= tolerance)


def looks_like_probabilities(scores: np.ndarray, step: float = 0.0) -> bool:
    """True when every row is a probability row (:func:`probability_rows`)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores.size == 0 or bool(probability_rows(scores, step).all())


FLOAT16_STEP = 2.0 ** -11  # float16 spacing in [0.5, 1): the coarsest below 1

SAVED_MODEL_FILE = "saved_model.pb"


def saved_model_error(path: str | Path) -> UserError | None:
    """The UserError for a TensorFlow SavedModel (a folder holding saved_model.pb, or that file
    itself), which is not read directly; None for anything else."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (path.is_dir() and (path / SAVED_MODEL_FILE).is_file()) and \
            path.name != SAVED_MODEL_FILE:
        return None
    return UserError(
        f"{path}: a TensorFlow SavedModel ({SAVED_MODEL_FILE}), which is not read directly; the "
        f"accepted model files are {', '.join(MODEL_SUFFIXES)}. Convert it, e.g. to TFLite: "
        f"tf.lite.TFLiteConverter.from_saved_model('{folder}').convert() written to a .tflite "
        f"file, or to ONNX: python -m tf2onnx.convert --saved-model {folder} --output model.onnx")


def outputs_note(descriptions: Sequence[str]) -> str:
    """For messages about the number of class scores of a model with several outputs (heads),
    put after 'N outputs (class scores': ``; read from the first of its N output heads: <first>;
    the others: <each other output>``."""
    return (f"; read from the first of its {len(descriptions)} output heads: {descriptions[0]}; "
            f"the others: {', '.join(descriptions[1:])}")


class Runner:
    """Common part: output-kind detection. Subclasses set the attributes and ``_raw``."""

    format = "?"
    path: Path
    # (height or None, width or None, channels) the runner takes, in NHWC terms.
    input_hwc: tuple[int | None, int | None, int]
    n_outputs: int | None = None
    name = "?"
    parameters: int | None = None
    preprocessing_inside = False  # True: the model wants raw pixels 0..255 (LBP+SVM)
    grey_before_resize = False  # True: an RGB face is made grey before it is resized (LBP+SVM)
    class_names: tuple[str, ...] | None = None  # stored in the file, when it says
    output_kind: str | None = None  # 'probabilities' or 'logits', known after the first batch
    output_scores = ""  # a note on outputs taken for logits that look like sigmoids ("" otherwise)
    output_step = 0.0  # resolution of an output value (looks_like_probabilities)
    output_note = ""  # which of several outputs is used, for messages about the output size
    # The input dtype when the model takes raw pixels 0..255 as integers (e.g. 'uint8'), else None.
    raw_pixel_input: str | None = None
    # (low, high): the float values a quantised input can represent, else None.
    input_range: tuple[float, float] | None = None

    def _raw(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def count_outputs(self, height: int, width: int) -> int:
        """``n_outputs`` for a model whose class axis is not static: the model is run once on one
        zero image of ``height`` x ``width`` (UserError naming the file when that fails)."""
        if self.n_outputs is None:
            zeros = np.zeros((1, height, width, self.input_hwc[2]), np.float32)
            try:
                scores = np.asarray(self._raw(zeros))
            except UserError:
                raise
            except Exception as error:  # the runtime's own exception classes
                raise UserError(f"{self.path}: the number of classes is not fixed in the model, "
                                f"and running it once on a {height}x{width} zero image to find it "
                                f"failed ({type(error).__name__}: "
                                f"{str(error).strip()[:300]})") from None
            self.n_outputs = int(scores.reshape(scores.shape[0], -1).shape[1])
            LOG.info("%s: the class axis of the output is not fixed in the model; one run on a "
                     "zero image gives %d outputs", self.path, self.n_outputs)
        return self.n_outputs

    def predict(self, images) -> np.ndarray:
        """Probabilities (B, K) float32 for a float32 NHWC batch (numpy or tensor)."""
        images = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        if images.shape[0] == 0:
            return np.zeros((0, self.n_outputs or 0), np.float32)
        scores = np.asarray(self._raw(images), dtype=np.float32)
        scores = scores.reshape(scores.shape[0], -1)
        return self.to_probabilities(scores)

    def _note_outputs(self, descriptions: Sequence[str]) -> None:
        """For a model with several outputs (``descriptions``: name and shape of each), set
        ``output_note`` and warn that the first is used."""
        if len(descriptions) > 1:
            self.output_note = outputs_note(descriptions)
            LOG.warning("%s: the model has %d outputs (heads); the first is read for the "
                        "class scores: %s", self.path, len(descriptions), ", ".join(descriptions))

    def to_probabilities(self, scores: np.ndarray, step: float | None = None) -> np.ndarray:
        """The model's output rows (B, K) as probabilities: as they are, or their softmax once the
        first non-empty batch has shown logits (``output_kind``). ``step``: the outputs'
        resolution when they were computed otherwise than the file says (float16 under
        --mixed-precision); default ``output_step``."""
        self._refuse_non_finite(scores)
        if self.output_kind is None and len(scores):
            self._detect_output_kind(scores, self.output_step if step is None else step)
        return softmax(scores) if self.output_kind == "logits" else scores

    def _refuse_non_finite(self, scores: np.ndarray) -> None:
        """UserError when a row holds NaN or +inf, or nothing but -inf: its softmax would be NaN
        and its arg-max class 0. -inf next to a finite maximum is a log-probability of 0 (its
        softmax is 0) and passes."""
        scores = np.asarray(scores)
        if not len(scores) or np.isfinite(scores).all():
            return
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isfinite(scores.max(axis=1)))
        if not len(bad):
            return
        row = np.array2string(np.asarray(scores[bad[0]], np.float64), precision=4,
                              threshold=12, max_line_width=10 ** 6)
        raise UserError(f"{self.path}: the model output non-finite scores (NaN or +inf) in "
                        f"{len(bad)} of the {len(scores)} rows of a batch, e.g. row {bad[0]}: "
                        f"{row}; they cannot be scored. Typical causes: float16 values that "
                        f"overflow (beyond +-65504), or a broken conversion of the model; check "
                        f"it in its own runtime, or re-export it in float32")

    def _detect_output_kind(self, scores: np.ndarray, step: float) -> None:
        """Set ``output_kind`` from a non-empty batch of outputs."""
        self.output_kind = ("probabilities" if looks_like_probabilities(scores, step)
                            else "logits")
        if self.output_kind == "logits" and np.asarray(scores).min() >= 0 and \
                np.asarray(scores).max() <= 1:
            self.output_scores = "sigmoid-like scores in [0, 1], taken for logits (softmax applied)"
            sums = np.asarray(scores, np.float64).sum(axis=1)
            LOG.warning("%s: every output is in [0, 1] but the rows do not sum to 1 (sums "
                        "%.3g..%.3g): they look like independent per-class probabilities "
                        "(sigmoids). A softmax is applied to them, so the scores, ECE, NLL and "
                        "Brier describe that softmax, not the model's own scores", self.path,
                        sums.min(), sums.max())
        elif self.output_kind == "logits":
            LOG.info("%s: the outputs are not probabilities (a row is negative or does not sum "
                     "to 1): taken for logits, a softmax is applied", self.path)
        else:
            LOG.info("%s: outputs probabilities", self.path)

    def describe(self) -> dict:
        described = {"format": self.format, "model_name": self.name, "parameters": self.parameters,
                     "output_kind": self.output_kind}
        if self.output_scores:  # what the JSON reader should know about an assumed output kind
            described["output_scores"] = self.output_scores
        return described


def _check_channels(path: Path, shape, channels) -> None:
    if channels not in (1, 3):
        raise UserError(f"{path}: expects input {list(shape)} with {channels} channels; only 1 "
                        f"(grey) or 3 (RGB) channels can be fed")


# --------------------------------------------------------------------------------------------
# Keras


def keras_output_descriptions(model) -> list[str]:
    """Name and shape of each output of a Keras model, in ``model.outputs`` order: the name of
    the layer that makes it (not the symbolic tensor's 'keras_tensor_5'), with its key for a dict
    of outputs (Keras orders those by sorted key)."""
    outputs = list(model.outputs or ())
    struct = getattr(model, "_outputs_struct", None)
    keys = sorted(struct) if isinstance(struct, dict) and len(struct) == len(outputs) else None
    descriptions = []
    for index, output in enumerate(outputs):
        history = getattr(output, "_keras_history", None)
        layer = getattr(getattr(history, "operation", None), "name", None) or \
            getattr(output, "name", None) or str(index)
        name = repr(layer)
        if keys is not None and str(keys[index]) != layer:
            name = f"{str(keys[index])!r} (layer {layer!r})"
        descriptions.append(f"{name} {tuple(output.shape)}")
    return descriptions


def keras_integer_input(model) -> str | None:
    """The dtype name of a Keras model's first input when it is an integer type (e.g. 'uint8': the
    model takes raw pixels 0..255), else None."""
    inputs = getattr(model, "inputs", None) or ()
    if not inputs:
        return None
    dtype = getattr(inputs[0], "dtype", None)
    try:
        dtype = np.dtype(getattr(dtype, "name", None) or str(dtype))
    except TypeError:
        return None
    return dtype.name if np.issubdtype(dtype, np.integer) else None


def first_output(outputs):
    """The first of a Keras model's outputs (a tensor, list, tuple or dict of them) in
    ``model.outputs`` order: Keras flattens a dict of outputs by sorted key, as keras.tree does."""
    import keras

    return keras.tree.flatten(outputs)[0]


def integer_pixels(batch, dtype: str):
    """A float image tensor as integer pixels of ``dtype``: rounded, clipped to its range."""
    import tensorflow as tf

    info = np.iinfo(np.dtype(dtype))
    batch = tf.clip_by_value(tf.round(tf.cast(batch, tf.float32)), float(info.min), float(info.max))
    return tf.cast(batch, dtype)


class KerasRunner(Runner):
    """A Keras model run through one traced ``tf.function`` (batches of any size)."""

    format = "keras"

    def __init__(self, model, path: str | Path):
        self.model = model
        self.path = Path(path)
        self.name = model.name
        self.parameters = int(model.count_params())
        shape = tuple(model.inputs[0].shape) if model.inputs else ()
        self.input_hwc = tuple(shape[1:4]) if len(shape) == 4 else (None, None, 0)
        out = tuple(model.outputs[0].shape) if model.outputs else ()
        self.n_outputs = out[-1] if out else None
        if model.outputs and "float16" in str(getattr(model.outputs[0], "dtype", "")):
            self.output_step = FLOAT16_STEP
        self._note_outputs(keras_output_descriptions(model))
        self.raw_pixel_input = keras_integer_input(model)
        self._step = None

    def _raw(self, images):
        if self._step is None:
            import tensorflow as tf

            model = self.model
            raw = self.raw_pixel_input

            @tf.function(reduce_retracing=True)
            def step(batch):
                if raw:  # integer pixels: rounded (a cast alone would truncate), as ONNX's are
                    batch = integer_pixels(batch, raw)
                return first_output(model(batch, training=False))

            self._step = step
        return np.asarray(self._step(images), dtype=np.float32)

    def predict(self, images) -> np.ndarray:
        """Probabilities (B, K): the model's outputs as they are when they are probabilities (the
        project's classifiers end in a softmax), else a softmax of them (a third-party model that
        ends in logits), decided on the first batch as for the other formats. Tensors are fed as
        they are (no copy to numpy first)."""
        if isinstance(images, np.ndarray):
            images = np.ascontiguousarray(images, dtype=np.float32)
        scores = self._raw(images)
        return self.to_probabilities(scores.reshape(scores.shape[0], -1))


# --------------------------------------------------------------------------------------------
# TensorFlow Lite (LiteRT)


def preprocessing_for_range(low: float, high: float) -> str | None:
    """The --preprocessing whose values fill [low, high] (a quantised input's range, within 5 %):
    scale01 for [0, 1], scale-1-1 for [-1, 1], none for [0, 255]; None for any other range."""
    for mode, (a, b) in (("scale01", (0.0, 1.0)), ("scale-1-1", (-1.0, 1.0)), ("none", (0.0, 255.0))):
        tolerance = 0.05 * (b - a)
        if abs(low - a) <= tolerance and abs(high - b) <= tolerance:
            return mode
    return None


def tflite_layout(signature) -> str:
    """'NCHW' or 'NHWC' for a TFLite input shape signature (-1: free). TFLite models are
    channel-last; an input whose axis 1 is 1 or 3 while axis 3 is not (as ai-edge-torch converts
    a PyTorch model) is channel-first. Ambiguous shapes are taken for NHWC."""
    try:
        return onnx_layout([int(dim) for dim in signature])
    except ValueError:
        return "NHWC"


class LiteRTRunner(Runner):
    """A ``.tflite`` model in the LiteRT interpreter, float or integer-quantised."""

    format = "tflite"

    def __init__(self, path: str | Path, *, batch_size: int = 64, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise UserError(f"{path}: .tflite models need the ai-edge-litert package "
                            f"(pip install -r requirements.txt): {error}") from None
        self.path = Path(path)
        try:
            self.interpreter = Interpreter(model_path=str(self.path),
                                           num_threads=num_threads or os.cpu_count() or 1)
            inputs = self.interpreter.get_input_details()
            signature = [int(v) for v in inputs[0].get("shape_signature", inputs[0]["shape"])] \
                if len(inputs) == 1 else []
            # A free height or width: the file's default shape (often 1x1) may not even allocate
            # (XNNPack cannot reshape its convolutions to it); allocation waits for the first real
            # image size (_raw).
            layout = tflite_layout(signature) if len(signature) == 4 else "NHWC"
            spatial = signature[2:4] if layout == "NCHW" else signature[1:3]
            deferred = len(signature) == 4 and min(spatial) < 0
            if not deferred:
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise UserError(f"{self.path}: cannot load as a TFLite model ({error})") from None
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise UserError(f"{self.path}: expected one image input, found {len(inputs)} "
                            f"({', '.join(str(d['shape'].tolist()) for d in inputs)})")
        self._input, self._output = inputs[0], outputs[0]
        shape = [int(v) for v in self._input["shape"]]
        signature = [int(v) for v in self._input.get("shape_signature", self._input["shape"])]
        if len(shape) != 4:
            raise UserError(f"{self.path}: expects input of shape {signature} (dtype "
                            f"{np.dtype(self._input['dtype']).name}); only image batches "
                            f"(batch, height, width, channels) or (batch, channels, height, "
                            f"width) can be fed")
        self.layout = layout
        h_axis, w_axis, c_axis = (2, 3, 1) if layout == "NCHW" else (1, 2, 3)
        _check_channels(self.path, signature, shape[c_axis])
        self.input_hwc = (None if signature[h_axis] < 0 else shape[h_axis],
                          None if signature[w_axis] < 0 else shape[w_axis], shape[c_axis])
        self.n_outputs = int(self._output["shape"][-1])
        self.name = self.path.stem
        self.in_dtype = np.dtype(self._input["dtype"])
        self.in_scale, self.in_zero = self._input["quantization"]
        self.out_scale, self.out_zero = self._output["quantization"]
        if np.issubdtype(np.dtype(self._output["dtype"]), np.integer):
            self.output_step = float(self.out_scale) or 1.0
        elif np.dtype(self._output["dtype"]) == np.float16:
            self.output_step = FLOAT16_STEP
        else:
            self.output_step = self._dequantized_softmax_step()
        self._note_outputs([f"{d['name']} {d['shape'].tolist()}" for d in outputs])
        if self.in_dtype not in (np.float32, np.int8, np.uint8):
            raise UserError(f"{self.path}: input dtype {self.in_dtype.name} not supported "
                            f"(float32, int8 or uint8)")
        if self.in_dtype == np.uint8 and not self.in_scale:
            self.raw_pixel_input = "uint8"  # no quantisation parameters: the pixels themselves
        elif self.in_dtype != np.float32:
            info = np.iinfo(self.in_dtype)
            self.input_range = ((info.min - self.in_zero) * float(self.in_scale),
                                (info.max - self.in_zero) * float(self.in_scale))
        self._range_checked = False
        self.batch = shape[0]
        self.batch_resizable = True
        self._wanted_batch = batch_size
        self._allocated_hw = None if deferred else (shape[h_axis], shape[w_axis])
        if batch_size != self.batch and not deferred:
            self.batch_resizable = self._resize(batch_size, shape[h_axis], shape[w_axis])
        LOG.info("%s: TFLite input %s %s (%s; scale %g, zero point %d), batch %d%s", self.path,
                 signature, self.in_dtype.name, layout, self.in_scale, self.in_zero, self.batch,
                 "" if self.batch_resizable else " (fixed by the model)")

    _range_checked = True  # set False by __init__ for a quantised input: the first batch is checked

    @property
    def quantized(self) -> bool:
        return self.in_dtype != np.float32

    # Ops that only move or re-quantise values, walked through back to the SOFTMAX.
    _TFLITE_PASS_OPS = ("RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE")

    def _dequantized_softmax_step(self) -> float:
        """The quantisation scale of a float output that is a DEQUANTIZE of a quantised SOFTMAX
        (full-integer model with float input/output), else 0."""
        try:
            ops = self.interpreter._get_ops_details()  # the only view of the graph LiteRT gives
            tensors = {int(d["index"]): d for d in self.interpreter.get_tensor_details()}
        except Exception:  # an interpreter without it: no widening, as before
            return 0.0
        producers = {}
        for op in ops:
            if op.get("op_name") == "DELEGATE":  # a delegate's node repeats the ops it runs
                continue
            for index in op.get("outputs", ()):
                producers[int(index)] = op
        op = producers.get(int(self._output["index"]))
        if op is None or op.get("op_name") != "DEQUANTIZE" or not len(op["inputs"]):
            return 0.0
        source = int(op["inputs"][0])
        scale = float(tensors.get(source, {}).get("quantization", (0.0, 0))[0])
        op = producers.get(source)
        while op is not None and op.get("op_name") in self._TFLITE_PASS_OPS and len(op["inputs"]):
            op = producers.get(int(op["inputs"][0]))
        if scale <= 0 or op is None or op.get("op_name") != "SOFTMAX":
            return 0.0
        LOG.info("%s: the output is a dequantised softmax (scale %g): read as probabilities "
                 "within %d x %g", self.path, scale, self.n_outputs, scale)
        return scale

    def _input_shape(self, batch: int, height: int, width: int) -> list[int]:
        """The input tensor's shape for ``batch`` images of ``height`` x ``width``, in its layout."""
        channels = self.input_hwc[2]
        return ([batch, channels, height, width] if self.layout == "NCHW"
                else [batch, height, width, channels])

    def _resize(self, batch: int, height: int, width: int) -> bool:
        """Allocate for ``batch`` images of ``height`` x ``width``; False when the model refuses:
        it is then allocated again at its previous batch and size, or, before any allocation (a
        free height/width), at its own batch and this size (UserError when even that fails)."""
        try:
            self.interpreter.resize_tensor_input(self._input["index"],
                                                 self._input_shape(batch, height, width))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            LOG.info("%s: batch cannot be resized (%s); one image at a time", self.path, error)
            fallback = self._allocated_hw or (height, width)
            try:
                self.interpreter.resize_tensor_input(self._input["index"],
                                                     self._input_shape(self.batch, *fallback))
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as again:
                raise UserError(f"{self.path}: the model cannot run on {fallback[0]}x"
                                f"{fallback[1]} images ({str(again).strip()[:300]})") from None
            self._allocated_hw = fallback
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]
            return False
        self.batch, self._allocated_hw = batch, (height, width)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        return True

    def _quantize(self, images: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return images
        info = np.iinfo(self.in_dtype)
        if self.in_scale:
            values = np.round(images / self.in_scale + self.in_zero)
        else:  # integer input without quantisation parameters: raw pixels
            values = np.round(images)
        clipped = np.clip(values, info.min, info.max)
        if not self._range_checked and self.input_range is not None and values.size:
            self._range_checked = True  # the first batch tells: the preprocessing does not fit the model
            # beyond one step: a range's end point may round one step past it (1 / (2/255) = 127.5 -> 128)
            outside = float(np.mean((values < info.min - 1) | (values > info.max + 1)))
            # too narrow: scale01's [0, 1] fed to an input quantised for [0, 255] is 2 steps (a photo
            # spans most of the steps; 1/16 of them is far below any face batch)
            spread = float(np.max(images) - np.min(images)) / self.in_scale if self.in_scale else 0.0
            steps = float(clipped.max() - clipped.min())
            narrow = 0 < spread < (int(info.max) - int(info.min)) / 16  # (a constant batch tells nothing)
            if outside > 0.01 or narrow:
                low, high = self.input_range
                fits = preprocessing_for_range(low, high)
                what = (f"{100 * outside:.0f} % of the preprocessed input values fall outside the model's "
                        f"quantised input range [{low:.4g}, {high:.4g}] (scale {self.in_scale:g}, zero point "
                        f"{self.in_zero}) and are clipped" if outside > 0.01 else
                        f"the preprocessed input values span only {steps:.0f} of the "
                        f"{int(info.max) - int(info.min) + 1} steps of the model's quantised input range "
                        f"[{low:.4g}, {high:.4g}] (scale {self.in_scale:g}, zero point {self.in_zero}): the "
                        f"images reach it at a coarse resolution")
                LOG.warning("%s: %s%s", self.path, what, f": that range is --preprocessing {fits}'s" if fits else
                            "; check --preprocessing (docs/MODELS.md)")
        return clipped.astype(self.in_dtype)

    def _raw(self, images: np.ndarray) -> np.ndarray:
        count, height, width = images.shape[:3]
        if self._allocated_hw is None:  # a free height/width: the first real size is known now
            self.batch_resizable = self._resize(self._wanted_batch, height, width)
        elif (height, width) != self._allocated_hw:
            if not self._resize(self.batch, height, width):
                raise UserError(f"{self.path}: expects {self._allocated_hw[0]}x"
                                f"{self._allocated_hw[1]} images, got {height}x{width}")
        images = self._quantize(images)
        if self.layout == "NCHW":  # the pipeline's NHWC batch in the model's channel-first layout
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        chunks = []
        for start in range(0, count, self.batch):
            chunk = images[start:start + self.batch]
            if len(chunk) < self.batch:  # pad the last batch; padded rows are dropped
                pad = np.zeros((self.batch - len(chunk),) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            self.interpreter.set_tensor(self._input["index"], chunk)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self._output["index"])
            chunks.append(out.reshape(out.shape[0], -1)[:min(self.batch, count - start)].copy())
        scores = np.concatenate(chunks)
        if np.issubdtype(scores.dtype, np.integer):
            scale = self.out_scale or 1.0
            scores = (scores.astype(np.float32) - self.out_zero) * scale
        return scores.astype(np.float32)

    def describe(self) -> dict:
        return {**super().describe(), "layout": self.layout, "input_dtype": self.in_dtype.name,
                "input_quantization": [float(self.in_scale), int(self.in_zero)],
                "output_quantization": [float(self.out_scale), int(self.out_zero)],
                "batch_resizable": self.batch_resizable}


# --------------------------------------------------------------------------------------------
# ONNX


_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(uint8)": np.uint8}
_DOUBLE_HINT = ("; a PyTorch model exported in double precision: export it after model.float() with "
                "a float32 example input")


def _onnx_double_inputs(path: Path) -> list[str]:
    """Names of an ONNX model's float64 graph inputs (not initializers); [] when the onnx package
    is missing or cannot parse the file."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # ImportError, or a file onnx cannot parse: nothing to add
        return []
    weights = {tensor.name for tensor in graph.initializer}
    return [value.name for value in graph.input if value.name not in weights
            and value.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]


# Outputs of these types are class indices (an ArgMax), never scores.
_ONNX_INDEX_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(bool)")
# Ops that only move or re-quantise values, walked through between an output and its Softmax.
_ONNX_PASS_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
_ONNX_SOFTMAX_OPS = ("Softmax", "QLinearSoftmax")


def _onnx_constant(graph, producers: dict, name: str):
    """The value of an initializer or Constant node called ``name`` (numpy), or None."""
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
    return None


def onnx_dequantized_softmax_step(path: str | Path, output_name: str) -> float:
    """The scale of the DequantizeLinear that makes output ``output_name`` from a quantised
    Softmax (a QDQ-quantised model), else 0 (also when the onnx package is missing)."""
    try:
        import onnx
    except ImportError:
        return 0.0
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # onnxruntime read it; anything onnx cannot parse: no widening
        return 0.0
    producers = {output: node for node in graph.node for output in node.output}
    node = producers.get(output_name)
    while node is not None and node.op_type in _ONNX_PASS_OPS:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 2:
        return 0.0
    scale = _onnx_constant(graph, producers, node.input[1])
    if scale is None or np.size(scale) != 1 or not float(np.ravel(scale)[0]) > 0:
        return 0.0
    source = producers.get(node.input[0])
    while source is not None and source.op_type in _ONNX_PASS_OPS + ("QuantizeLinear",
                                                                     "DequantizeLinear"):
        source = producers.get(source.input[0])
    if source is None or source.op_type not in _ONNX_SOFTMAX_OPS:
        return 0.0
    return float(np.ravel(scale)[0])


def onnx_layout(shape) -> str:
    """'NCHW' or 'NHWC' from an ONNX input shape (ints, or str/None for free dimensions).

    The channel axis is the one of axes 1 and 3 whose size is 1 or 3 when the other's is not
    (a free dimension is a spatial one). ValueError when the shape does not say.
    """
    if len(shape) != 4:
        raise ValueError(f"not an image batch (rank {len(shape)})")
    fixed = [dim if isinstance(dim, int) and dim > 0 else None for dim in shape]
    first, last = fixed[1] in (1, 3), fixed[3] in (1, 3)
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    raise ValueError("cannot tell the channel axis (expected 1 or 3 channels on axis 1 or 3)")


class OnnxRunner(Runner):
    """An ONNX model in onnxruntime (CPU), NCHW or NHWC."""

    format = "onnx"

    def __init__(self, path: str | Path, *, batch_size: int = 64, num_threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise UserError(f"{path}: .onnx models need the onnxruntime package "
                            f"(pip install -r requirements.txt): {error}") from None
        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # fatal only: errors reach the user as exceptions, named
        # No busy-waiting between runs: the spinning intra-op threads would take the cores from the
        # input pipeline's decoding threads, which feed this session from the same CPUs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            options.intra_op_num_threads = num_threads
        data_files = model_data_files(self.path)[1:]  # a missing external data file, named, before onnxruntime fails
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception classes
            double = _onnx_double_inputs(self.path)
            if double:  # onnxruntime's CPU build has no float64 Conv: it fails before the check below
                raise UserError(f"{self.path}: input {double[0]!r} has type tensor(double)"
                                f"{_DOUBLE_HINT}; onnxruntime cannot load it ({type(error).__name__}: "
                                f"{_first_line(error)})") from None
            text = str(error).strip()
            shown = text if len(text) <= 300 else text[:300] + " ..."
            data = _external_data_note(self.path, data_files) if data_files else ""
            raise UserError(f"{self.path}: cannot load as an ONNX model "
                            f"({type(error).__name__}: {shown}){data}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{self.path}: expected one image input, found {len(inputs)} ("
                            + ", ".join(f"{i.name} {i.shape}" for i in inputs) + ")")
        self._input = inputs[0]
        outputs = self.session.get_outputs()
        self._output_name = outputs[0].name
        if outputs[0].type in _ONNX_INDEX_TYPES:
            others = [o.name for o in outputs[1:] if o.type not in _ONNX_INDEX_TYPES]
            raise UserError(f"{self.path}: the first output {outputs[0].name!r} {outputs[0].shape} is "
                            f"{outputs[0].type}, class indices (an argmax), not class scores: the "
                            f"benchmark needs the scores (probabilities or logits) of every class; "
                            + (f"the model's output {others[0]!r} may hold them: re-export the model "
                               f"with the scores as its first output" if others else
                               "export the model without its final argmax"))
        if outputs[0].type == "tensor(float16)":
            self.output_step = FLOAT16_STEP
        elif outputs[0].type == "tensor(float)":
            self.output_step = onnx_dequantized_softmax_step(self.path, self._output_name)
            if self.output_step:
                LOG.info("%s: output %r is a dequantised softmax (scale %g): read as "
                         "probabilities within K x %g", self.path, self._output_name,
                         self.output_step, self.output_step)
        self._note_outputs([f"{o.name!r} {o.shape}" for o in outputs])
        shape = list(self._input.shape)
        try:
            self.layout = onnx_layout(shape)
        except ValueError as error:
            symbolic = len(shape) == 4 and not isinstance(shape[1], int) and not isinstance(shape[3], int)
            raise UserError(f"{self.path}: input {self._input.name!r} has shape {shape} "
                            f"({self._input.type}): {error}; only image batches NCHW or NHWC "
                            f"with 1 or 3 channels can be fed"
                            + ("; the channel axis is not fixed in the file: export the model again with a "
                               "fixed channel dimension (e.g. torch.onnx.export with dynamic_axes naming only "
                               "the batch, height and width), or set it with onnx's "
                               "onnx.tools.update_model_dims.update_inputs_outputs_dims"
                               if symbolic else "")) from None
        if self._input.type not in _ONNX_DTYPES:
            hint = _DOUBLE_HINT if self._input.type == "tensor(double)" else ""
            raise UserError(f"{self.path}: input {self._input.name!r} has type {self._input.type}"
                            f"; expected float, float16 or uint8{hint}")
        self.in_dtype = np.dtype(_ONNX_DTYPES[self._input.type])
        if self.in_dtype == np.uint8:
            self.raw_pixel_input = "uint8"  # integers 0..255: the pixels themselves

        def fixed(dim):
            return dim if isinstance(dim, int) and dim > 0 else None

        if self.layout == "NCHW":
            channels, height, width = shape[1], fixed(shape[2]), fixed(shape[3])
        else:
            height, width, channels = fixed(shape[1]), fixed(shape[2]), shape[3]
        self.input_hwc = (height, width, int(channels))
        self.fixed_batch = fixed(shape[0])
        self._batched = False  # a batch of several images has run (see _run)
        # Classes: the output's size after the batch axis when it is static; else None until
        # count_outputs runs the model once (a symbolic class axis, e.g. a torch.cat head).
        out_shape = list(self.session.get_outputs()[0].shape or ())
        static = [dim for dim in out_shape[1:] if isinstance(dim, int) and dim > 0]
        self.n_outputs = (int(np.prod(static)) if len(out_shape) > 1
                          and len(static) == len(out_shape) - 1 else None)
        if self.fixed_batch == 1 and len(out_shape) == 1:
            # A batch-1 model with a rank-1 output (e.g. PyTorch's logits.squeeze()): one row of K.
            dim = out_shape[0]
            self.n_outputs = int(dim) if isinstance(dim, int) and dim > 0 else None
            LOG.info("%s: output %r has shape %s without a batch axis; the model takes one image "
                     "at a time, so it is read as that image's scores", self.path,
                     self._output_name, out_shape)
        self.name = self.path.stem
        LOG.info("%s: ONNX input %s %s (%s)%s", self.path, shape, self._input.type, self.layout,
                 f", batch fixed at {self.fixed_batch}" if self.fixed_batch else "")

    def _feed(self, images: np.ndarray) -> np.ndarray:
        if self.layout == "NCHW":
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        if self.in_dtype == np.uint8:
            images = np.clip(np.round(images), 0, 255)
        return images.astype(self.in_dtype, copy=False)

    def _raw(self, images: np.ndarray) -> np.ndarray:
        height, width, _ = self.input_hwc
        if (height and images.shape[1] != height) or (width and images.shape[2] != width):
            raise UserError(f"{self.path}: expects {height}x{width} images, got "
                            f"{images.shape[1]}x{images.shape[2]}")
        step = self.fixed_batch or len(images)
        chunks = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            real = len(chunk)
            if real < step:
                chunk = np.concatenate([chunk, np.zeros((step - real,) + chunk.shape[1:],
                                                        chunk.dtype)])
            chunks.append(self._run(chunk)[:real])
            step = self.fixed_batch or step  # one image at a time once _run found the batch fixed
        scores = np.concatenate(chunks).astype(np.float32)
        if self.n_outputs is None:
            self.n_outputs = scores.shape[1]
        return scores

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """Scores (B, K) of one batch. A model that declares a free batch axis but fails on its
        first batch of several images, or returns another number of rows, while one image works
        (a PyTorch graph exported with ``x.view(1, -1)`` or another batch-1 reshape), is run one
        image at a time from then on, with a warning; any other failure is an error naming the file."""
        try:
            out = self._session_rows(chunk)
        except Exception as error:  # onnxruntime raises its own exception classes
            out, failure = None, f"{type(error).__name__}: {_first_line(error)}"
        else:
            if out.shape[0] == len(chunk):
                self._batched = self._batched or len(chunk) > 1
                return out
            failure = f"it returned {out.shape[0]} rows of scores for {len(chunk)} images"
        if len(chunk) == 1 or self._batched:
            raise UserError(f"{self.path}: the model failed on a batch of {len(chunk)} image(s) "
                            f"of shape {list(chunk.shape[1:])} ({failure})")
        try:
            rows = [self._session_rows(chunk[i:i + 1]) for i in range(len(chunk))]
        except Exception as error:
            raise UserError(f"{self.path}: the model failed on a batch of {len(chunk)} images "
                            f"({failure}) and on a single image ({type(error).__name__}: "
                            f"{_first_line(error)})") from None
        if any(row.shape[0] != 1 for row in rows):
            raise UserError(f"{self.path}: the model returned {rows[0].shape[0]} rows of scores for "
                            f"one image; expected one row per image")
        LOG.warning("%s: the input's batch axis is declared free (%r), but the model fails on a "
                    "batch of %d images (%s) and works on one: it is run one image at a time "
                    "(slower). The graph probably fixes the batch inside, e.g. PyTorch's "
                    "x.view(1, -1) (x.flatten(1) exports a free batch)",
                    self.path, self._input.shape[0], len(chunk), failure)
        self.fixed_batch = 1
        return np.concatenate(rows)

    def _session_rows(self, chunk: np.ndarray) -> np.ndarray:
        """The first output for ``chunk`` as (rows, values); an output of a single image without
        a batch axis (rank 1, e.g. PyTorch's ``logits.squeeze()``) is that image's row."""
        out = np.asarray(self.session.run([self._output_name], {self._input.name: self._feed(chunk)})[0])
        if len(chunk) == 1 and (out.ndim <= 1 or out.shape[0] != 1):
            return out.reshape(1, -1)
        return out.reshape(out.shape[0], -1)

    def describe(self) -> dict:
        return {**super().describe(), "layout": self.layout, "input_dtype": self.in_dtype.name,
                "fixed_batch": self.fixed_batch}


# --------------------------------------------------------------------------------------------
# LBP + SVM (.skops)


class LbpSvmRunner(Runner):
    """The LBP+SVM baseline: grey raw pixels 0..255 in, probabilities out."""

    format = "skops"
    preprocessing_inside = True
    grey_before_resize = True  # lbp.describe's order: grey, then resize

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            import lbp_svm  # another part of the project; imported only when a .skops is given
        except ImportError as error:
            raise UserError(f"{self.path}: .skops models need the project's lbp_svm module, "
                            f"which this checkout lacks ({error})") from None
        self.model = lbp_svm.load_skops(self.path)
        # The input is the size the descriptor resizes every face to (width x height; height x
        # height with keep_ar), not the training faces' size: the pipeline makes the face grey and
        # resizes it once, as lbp.describe does, so the descriptor's own resize changes nothing and
        # a face of any size gets the pixels lbp_svm_train.py gives it. (At the training size the
        # pipeline resized first, then the descriptor again: other pixels for faces of another size.)
        settings = self.model.settings
        self.input_hwc = (int(settings.height), int(settings.height if settings.keep_ar else settings.width),
                          int(getattr(self.model, "channels", 1)))
        self.class_names = tuple(self.model.class_names)
        self.n_outputs = len(self.class_names)
        self.name = f"LBP+SVM ({self.path.stem})"
        self.output_kind = "probabilities"

    def _raw(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_batch(images), dtype=np.float32)


def open_runner(path: str | Path, *, batch_size: int = 64, unsafe: bool = False) -> Runner:
    """The runner for a model file of any supported format (UserError for a missing file)."""
    path = Path(path)
    kind = model_format(path)  # refuses a pickle before anything touches the file
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    if kind == "keras":
        import checkpoints

        return KerasRunner(checkpoints.load_classifier(path, unsafe=unsafe), path)
    if kind == "tflite":
        return LiteRTRunner(path, batch_size=batch_size)
    if kind == "onnx":
        return OnnxRunner(path, batch_size=batch_size)
    return LbpSvmRunner(path)
