"""The LBP + SVM baseline as a model: descriptor settings, an RBF SVC and class names in one file.

The original's hand-crafted baseline (docs/BENCHMARK.md §9.6, decisions in §9.9) describes each
face with :mod:`lbp` and classifies it with scikit-learn's ``SVC(kernel='rbf',
class_weight='balanced')`` on the raw counts. Here the model is saved with skops (``.skops``),
never pickle: loading a pickle runs whatever code it names.

Probabilities. The original never produced any: it called ``SVC.predict`` and kept class indices.
:meth:`LbpSvmModel.predict_batch` returns the softmax of ``SVC.decision_function`` in its
one-vs-rest form (one-vs-one votes plus a confidence below 1/3), so the top class is the class
``SVC.predict`` returns when votes do not tie; the SVC is built with ``break_ties=True``, so on a
tie both pick the class with the larger confidence (the original's ``predict`` took the lowest
index). ``SVC(probability=True)`` (Platt scaling) is not used: it needs a 5-fold internal
cross-validation (about 5x the training time) and its argmax can disagree with ``predict``.

Data: :func:`load_split` is the one function that knows where faces come from (RAF-DB through
:mod:`rafdb_dataset` today); the training script calls nothing else to find its images.

Example::

    import lbp_svm
    model = lbp_svm.load_skops("out_training_fer/lbp_svm.skops")
    probabilities = model.predict_batch(grey_faces)   # (N, 100, 100, 1) uint8 -> (N, 7) float32
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import lbp
from cli_common import UserError, atomic_write_bytes

LOG = logging.getLogger("fer.lbp_svm")

FORMAT = "fer-lbp-svm"
VERSION = 1
PICKLE_SUFFIXES = (".pickle", ".pkl", ".joblib")  # joblib files are pickles too
PROBABILITIES = "softmax of the one-vs-rest decision_function (break_ties=True)"

# Types a .skops file of this model may hold beyond those skops trusts by default (scikit-learn
# estimators, builtins, numpy arrays). Anything else reported by skops.io.get_untrusted_types is
# refused, so loading never constructs an object we did not expect.
ALLOWED_TYPES = frozenset({
    "sklearn.svm._classes.SVC",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float64",
    "numpy.float32",
    "numpy.int64",
    "numpy.int32",
    "numpy.uint16",
    "numpy.uint8",
    "numpy.bool_",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
})

# BENCHMARK.md §9.6: the original's SVC (lbp_svm_train.py) and its shipped (C, gamma).
DEFAULT_C = 4.0
DEFAULT_GAMMA = 3e-6
# BENCHMARK.md §9.6: the original's search grid, gamma = 1 / (2478 * 512) and 1 / (2478 * 2048),
# plus the gamma it shipped (not in its own grid, §9.8 item 13).
DEFAULT_C_GRID = (1.0, 4.0)
DEFAULT_GAMMA_GRID = (1.0 / (2478 * 512), 1.0 / (2478 * 2048), 3e-6)


def make_svc(C: float = DEFAULT_C, gamma: float = DEFAULT_GAMMA, seed: int = 0):
    """The original's classifier: RBF SVC with balanced class weights, on unscaled counts."""
    from sklearn.svm import SVC

    if not C > 0 or not gamma > 0:
        raise UserError(f"--C and --gamma must be > 0, got C={C}, gamma={gamma}")
    # break_ties=True: predict == argmax(decision_function), so predict_batch agrees with predict.
    return SVC(C=C, kernel="rbf", gamma=gamma, class_weight="balanced", break_ties=True,
               decision_function_shape="ovr", random_state=seed)


@dataclasses.dataclass
class LbpSvmModel:
    """A fitted SVC with the descriptor settings and class names it was trained with."""

    svc: object  # sklearn.svm.SVC, fitted on lbp.describe(...) features
    settings: lbp.LbpSettings
    class_names: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W) of the faces it was trained on (RAF-DB aligned: 100 x 100)
    info: dict = dataclasses.field(default_factory=dict)  # training record (data, C, gamma, scores)

    channels = 1  # the original converted every face to grey before the descriptor

    def features(self, images: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """LBP descriptors of (N, H, W, 1|3) or (N, H, W) faces (uint8 or 0..255 floats)."""
        return lbp.describe(images, self.settings, progress=progress)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float64 one-vs-rest decision values; classes the SVC never saw get -inf."""
        features = np.asarray(features)
        out = np.full((len(features), len(self.class_names)), -np.inf)
        if len(features) == 0:
            return out
        decision = np.asarray(self.svc.decision_function(features), dtype=np.float64)
        seen = np.asarray(self.svc.classes_, dtype=np.int64)
        if decision.ndim == 1:  # two classes: positive means classes_[1]
            decision = np.stack([-decision, decision], axis=1)
        out[:, seen] = decision
        return out

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float32 softmax of :meth:`scores`; rows sum to 1."""
        scores = self.scores(features)
        if len(scores) == 0:
            return scores.astype(np.float32)
        scores = scores - scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 1) uint8 or float32 0..255 faces -> (N, K) float32 probabilities."""
        return self.probabilities(self.features(images))

    def predict_classes(self, images: np.ndarray) -> np.ndarray:
        """Class indices, as the original's ``LBPPredictor.predict``."""
        return np.argmax(self.scores(self.features(images)), axis=1)

    def describe(self) -> dict:
        """A JSON-ready summary: kind, classes, input, descriptor, SVC parameters, training record."""
        return {
            "kind": "lbp-svm",
            "class_names": list(self.class_names),
            "image_size": list(self.image_size),
            "channels": self.channels,
            "lbp": self.settings.to_dict(),
            "n_features": self.settings.n_features,
            "svc": {"C": float(self.svc.C), "gamma": float(self.svc.gamma), "kernel": self.svc.kernel,
                    "class_weight": self.svc.class_weight,
                    "n_support_vectors": int(np.sum(self.svc.n_support_))},
            "probabilities": PROBABILITIES,
            "info": dict(self.info),
        }


# --------------------------------------------------------------------------------------------
# Files


def refuse_pickle(path: str | Path) -> None:
    """A ``.pickle``/``.pkl`` model is refused before it is opened: unpickling runs code."""
    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(
            f"{path}: pickle files are refused (loading a pickle can run arbitrary code); "
            "use a .skops model written by lbp_svm_train.py (docs/BASELINES.md)"
        )


def save_skops(model: LbpSvmModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (``.skops``) atomically."""
    import skops.io

    path = Path(path)
    refuse_pickle(path)
    if path.suffix.lower() != ".skops":
        raise UserError(f"{path}: the model file name must end in .skops")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "svc": model.svc,
        "lbp": model.settings.to_dict(),
        "class_names": list(model.class_names),
        "image_size": [int(v) for v in model.image_size],
        "channels": model.channels,
        "probabilities": PROBABILITIES,
        "info": _plain(model.info),
    }
    atomic_write_bytes(path, _deterministic_skops(skops.io.dumps(payload)))
    return path


def _deterministic_skops(data: bytes) -> bytes:
    """The same skops archive with reproducible bytes: equal models give equal files (as §2.7 asks of the exports).

    skops names arrays and references objects by ``id()`` (memory addresses, different in every
    run) and stamps zip entries with the current time. Ids are renumbered 1, 2, ... in order of
    first appearance in ``schema.json`` (one map for ``__id__`` values and ``<id>.npy`` file names,
    so references stay consistent) and every entry is dated 1980-01-01.
    """
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read("schema.json"))
        blobs = {entry.filename: source.read(entry) for entry in source.infolist()}
    numbers: dict[str, int] = {}

    def number(old) -> int:
        return numbers.setdefault(str(old), len(numbers) + 1)

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    node[key] = number(value)
                elif key == "file" and isinstance(value, str) and value.endswith(".npy") and value in blobs:
                    node[key] = f"{number(value[:-4])}.npy"
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    renamed = {}
    walk(schema)
    for name, blob in blobs.items():
        if name.endswith(".npy"):
            if name[:-4] not in numbers:
                raise RuntimeError(f"skops archive entry {name} is not referenced by schema.json")
            renamed[f"{numbers[name[:-4]]}.npy"] = blob
        elif name != "schema.json":
            raise RuntimeError(f"unexpected skops archive entry {name}")
    renamed["schema.json"] = json.dumps(schema, indent=2, sort_keys=True).encode("utf-8")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(renamed):
            target.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), renamed[name],
                            compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _plain(value):
    """JSON-like copy (dict/list/str/int/float/bool/None) so the file holds no unexpected types."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def load_skops(path: str | Path) -> LbpSvmModel:
    """Load an LBP+SVM model; refuses pickles, unexpected types and malformed content (UserError)."""
    import skops.io

    path = Path(path)
    refuse_pickle(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read the model ({error.strerror})") from None
    if not data:
        raise UserError(f"{path}: empty file, not a .skops model")
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as error:  # noqa: BLE001 - any parse failure means "not a skops file"
        raise UserError(f"{path}: not a readable .skops file ({type(error).__name__}: {error})") from None
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise UserError(
            f"{path}: refusing to load types outside the LBP+SVM allow-list: {', '.join(refused)} "
            "(a .skops model of lbp_svm_train.py holds only a scikit-learn SVC, numpy arrays and "
            "plain values)"
        )
    try:
        payload = skops.io.loads(data, trusted=list(untrusted))
    except Exception as error:  # noqa: BLE001
        raise UserError(f"{path}: cannot load the .skops file ({type(error).__name__}: {error})") from None
    return _model_from_payload(payload, path)


def _model_from_payload(payload, path: Path) -> LbpSvmModel:
    from sklearn.svm import SVC

    def bad(reason: str) -> UserError:
        return UserError(f"{path}: not an LBP+SVM model of lbp_svm_train.py ({reason})")

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise bad(f"expected a dict with format {FORMAT!r}")
    if payload.get("version") != VERSION:
        raise bad(f"format version {payload.get('version')!r}, this code reads version {VERSION}")
    svc = payload.get("svc")
    if not isinstance(svc, SVC) or not hasattr(svc, "support_vectors_"):
        raise bad("no fitted sklearn.svm.SVC under 'svc'")
    try:
        settings = lbp.LbpSettings.from_dict(dict(payload.get("lbp") or {}))
    except (TypeError, ValueError) as error:
        raise bad(f"descriptor settings: {error}") from None
    class_names = payload.get("class_names")
    if not isinstance(class_names, list) or not class_names or not all(isinstance(n, str) for n in class_names):
        raise bad("class_names must be a non-empty list of strings")
    size = payload.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise bad("image_size must be [height, width]")
    if svc.n_features_in_ != settings.n_features:
        raise bad(f"the SVC takes {svc.n_features_in_} features, the descriptor gives {settings.n_features}")
    if np.any(np.asarray(svc.classes_) < 0) or np.any(np.asarray(svc.classes_) >= len(class_names)):
        raise bad(f"SVC classes {[int(c) for c in svc.classes_]} outside 0..{len(class_names) - 1}")
    problem = _svc_problem(svc, settings.n_features)
    if problem:
        raise bad(f"the SVC's fitted arrays are inconsistent: {problem}")
    return LbpSvmModel(svc=svc, settings=settings, class_names=tuple(class_names),
                       image_size=(size[0], size[1]), info=dict(payload.get("info") or {}))


def _svc_problem(svc, n_features: int) -> str | None:
    """What is wrong with the fitted arrays of an RBF SVC that lbp_svm_train.py would not write,
    or None. libsvm trusts these arrays' shapes (a file with too few support vectors or
    coefficients makes it read past them, giving tracebacks or made-up numbers), so a file is
    checked before it is used: the kernel, gamma, and that every array has the shape and the
    finite float values that the support vectors and the number of classes imply."""
    classes = np.asarray(svc.classes_)
    k = len(classes)
    if classes.ndim != 1 or k < 2 or len(np.unique(classes)) != k:
        return f"classes_ {classes.tolist()} (expected 2 or more distinct classes)"
    if svc.kernel != "rbf" or getattr(svc, "_sparse", False):
        return f"kernel {svc.kernel!r}{' on sparse input' if getattr(svc, '_sparse', False) else ''} (expected a dense 'rbf')"
    gamma = getattr(svc, "_gamma", None)
    if not isinstance(gamma, (int, float, np.floating)) or not np.isfinite(gamma) or gamma <= 0:
        return f"gamma {gamma!r} (expected a positive number)"
    vectors = np.asarray(svc.support_vectors_)
    n_vectors = vectors.shape[0] if vectors.ndim == 2 else -1
    expected = {
        "support_vectors_": (vectors, (n_vectors, n_features)),
        "_n_support": (np.asarray(getattr(svc, "_n_support", None)), (k,)),
        "support_": (np.asarray(getattr(svc, "support_", None)), (n_vectors,)),
        "_dual_coef_": (np.asarray(getattr(svc, "_dual_coef_", None)), (k - 1, n_vectors)),
        "_intercept_": (np.asarray(getattr(svc, "_intercept_", None)), (k * (k - 1) // 2,)),
    }
    for name, (array, shape) in expected.items():
        if array.shape != shape or n_vectors < 1:
            return f"{name} has shape {array.shape}, expected {shape}"
        if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
            return f"{name} holds non-numeric or non-finite values"
        if name == "_n_support" and (np.any(array < 0) or int(array.sum()) != n_vectors):
            return (f"_n_support {array.tolist()} (support vectors per class) does not add up to "
                    f"the {n_vectors} support_vectors_")
    return None


# --------------------------------------------------------------------------------------------
# Data (the one place that knows where faces come from; RAF-DB today)


@dataclasses.dataclass
class FaceSplit:
    """Image paths and target classes of one part of a dataset."""

    name: str  # "train", "val" (hold-out of train) or "test"
    paths: list[Path]
    classes: np.ndarray  # int (N,), argmax of the label (BENCHMARK.md §1.3)
    class_names: tuple[str, ...]
    description: str  # for reports: dataset, protocol, filtering
    read: Callable | None = None  # item -> RGB uint8 when ``paths`` are not files (FER2013 rows)

    def __len__(self) -> int:
        return len(self.paths)


def load_dataset_split(data, part: str, *, val_fraction: float = 0.1, seed: int = 0) -> FaceSplit:
    """Like :func:`load_split` for any ``datasets`` Dataset (docs/DATASETS.md).

    ``train``/``val``: the dataset's validation split when it has one (FER), else the seeded
    hold-out of its training images; ``all-train``: every training image; ``test``: the test split.
    Grey faces are read as three equal planes (the descriptor converts to grey again, exactly).
    """
    if part not in ("train", "val", "all-train", "test"):
        raise ValueError(f"unknown part {part!r}")
    if part in ("train", "val"):
        kept, held = data.train_validation(val_fraction, seed, test_flag=None)  # no --val-split here
        labels = kept if part == "train" else held
    else:
        labels = data.labels("test" if part == "test" else "train")
    note = f", {labels.filter_note()}" if labels.filter_note() else ""
    description = (f"{data.title} {part} ({data.split_name(labels.split)}, {labels.protocol} labels{note}): "
                   f"{len(labels)} images")
    if data.source_kind == "files":
        paths, read = [data.image_path(name) for name in labels.names], None
    else:
        def read(image_id):
            image = data.read_image(image_id)
            return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image

        paths = list(labels.names)
    return FaceSplit(part, paths, labels.classes.astype(np.int64), tuple(data.class_names), description, read)


def load_split(root: str | Path, part: str, protocol: str = "soft", *, val_fraction: float = 0.1,
               seed: int = 0, allow_missing: bool = False) -> FaceSplit:
    """RAF-DB ``part``: ``train`` minus the hold-out, ``val`` (the hold-out), ``all-train``, ``test``.

    The hold-out is rafdb_dataset.holdout_split (stratified, seeded; BENCHMARK.md §1.5). Only
    ``test`` reads test labels' images; the other parts never open a test image.
    """
    import rafdb_dataset

    if part not in ("train", "val", "all-train", "test"):
        raise ValueError(f"unknown part {part!r}")
    split = "test" if part == "test" else "train"
    labels = rafdb_dataset.load_labels(root, split, protocol, allow_missing=allow_missing)
    if part in ("train", "val"):
        kept, held = rafdb_dataset.holdout_split(labels, val_fraction, seed, test_flag=None)
        labels = kept if part == "train" else held
    note = f", {labels.filter_note()}" if labels.filter_note() else ""
    description = f"RAF-DB {part} ({protocol} labels{note}): {len(labels)} images"
    return FaceSplit(part, labels.aligned_paths(root), labels.classes.astype(np.int64),
                     tuple(rafdb_dataset.CLASS_NAMES), description)


def read_faces(paths: Sequence[Path], read: Callable | None = None,
               settings: lbp.LbpSettings | None = None) -> np.ndarray:
    """Read faces as one (N, H, W, 3) RGB uint8 array. Faces of different sizes need ``settings``:
    each is then made grey and resized to the descriptor's size (lbp.describe's own first steps,
    per face), giving an (N, height, width) grey array that the descriptor takes as it is."""
    return _read_block(paths, read, settings)[0]


def _read_block(paths, read, settings) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """:func:`read_faces` and the (height, width) sizes of the faces read."""
    import cv2

    import rafdb_dataset

    images = [(read or rafdb_dataset.read_image)(path) for path in paths]
    sizes = {image.shape[:2] for image in images}
    if len(sizes) > 1 and settings is not None:
        target = lbp.resize_target(settings)
        return np.stack([cv2.resize(lbp.to_grey(image[None])[0], target, interpolation=cv2.INTER_LINEAR)
                         for image in images]), sizes
    if len(sizes) > 1:
        first = images[0].shape
        odd = [(path, image.shape) for path, image in zip(paths, images) if image.shape[:2] != first[:2]]
        (path, shape), more = odd[0], len(odd) - 1
        raise UserError(f"{path}: {shape[1]}x{shape[0]} px (width x height), but {paths[0]} is {first[1]}x{first[0]}"
                        + (f" (and {more} more image(s) differ from it)" if more else "")
                        + "; faces of one size were expected here (resize them first)")
    return (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)), sizes


def split_features(split: FaceSplit, settings: lbp.LbpSettings, *, block: int = 512,
                   progress: bool | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Descriptors of every face of ``split`` (read and described in blocks) and the face size: the
    faces' own when they share one, else the descriptor's (height, width), at which a face of any
    size is described (resized after its grey conversion, as lbp.describe and the evaluations'
    pipeline for a .skops model do)."""
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    out = np.empty((len(split), settings.n_features), settings.dtype)
    sizes: set[tuple[int, int]] = set()
    with tqdm(total=len(split), unit="face", desc=f"LBP {split.name}", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for start in range(0, len(split), block):
            faces, block_sizes = _read_block(split.paths[start:start + block], split.read, settings)
            sizes |= block_sizes
            out[start:start + len(faces)] = lbp.describe(faces, settings, progress=bar.update)
    if len(sizes) > 1:
        LOG.info("%s: faces of %d sizes, each described at the descriptor's %dx%d (width x height)",
                 split.name, len(sizes), settings.width, settings.height)
        return out, (int(settings.height), int(settings.width))
    return out, next(iter(sizes), (0, 0))


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts; rows true class, columns predicted class."""
    return np.bincount(np.asarray(true) * k + np.asarray(predicted), minlength=k * k).reshape(k, k)
