"""Emotion class names: each dataset's order, the synonym table, and model <-> dataset mapping.

Canonical names are RAF-DB's spellings (surprise, fear, disgust, happiness, sadness, anger,
neutral) plus contempt. Other spellings map onto them case-insensitively (docs/BENCHMARK.md §9.9
and §10): angry/anger, happy/happiness/joy, sad/sadness, surprise/surprised, fear/fearful,
disgust/disgusted. A name outside the table is kept as written (lower case), so that datasets
with their own ``classes.txt`` names still match a model that uses the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# docs/BENCHMARK.md §1.2: index = RAF-DB label - 1.
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
# docs/BENCHMARK.md §9.9: FER2013's `emotion` column 0..6.
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# docs/BENCHMARK.md §9.2: the 8 emotion columns of fer2013new.csv, in file order.
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")

CANONICAL = RAFDB_CLASSES + ("contempt",)
SYNONYMS = {
    "surprise": ("surprise", "surprised"),
    "fear": ("fear", "fearful", "afraid", "scared"),
    "disgust": ("disgust", "disgusted"),
    "happiness": ("happiness", "happy", "joy"),
    "sadness": ("sadness", "sad"),
    "anger": ("anger", "angry"),
    "neutral": ("neutral", "neutrality"),
    "contempt": ("contempt",),
}
# spelling -> canonical name, the one table that datasets, --class-order and predictions files use
SPELLINGS = {spelling: canonical for canonical, spellings in SYNONYMS.items() for spelling in spellings}


def canonical_name(name: str) -> str | None:
    """The canonical emotion name of ``name`` (any case, any synonym), or None when unknown."""
    return SPELLINGS.get(name.strip().lower())


def accepted_names() -> str:
    """Every accepted spelling, for error messages: ``anger (angry), ...``."""
    parts = []
    for canonical, spellings in SYNONYMS.items():
        others = [s for s in spellings if s != canonical]
        parts.append(canonical + (f" ({', '.join(others)})" if others else ""))
    return ", ".join(parts)


def _key(name: str) -> str:
    return canonical_name(name) or name.strip().lower()


@dataclasses.dataclass(frozen=True)
class ClassMapping:
    """How a model's outputs line up with a dataset's classes (matched by name with synonyms).

    ``dataset_to_model[j]`` is the model output of dataset class j, or -1 when the model cannot
    output it (``missing`` lists those names). ``model_to_dataset[i]`` is the dataset class of
    model output i, or -1 when the dataset has no such class (``extra``).
    """

    model_names: tuple[str, ...]
    dataset_names: tuple[str, ...]
    dataset_to_model: np.ndarray
    model_to_dataset: np.ndarray
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def identity(self) -> bool:
        """True when the model's outputs are exactly the dataset's classes in the same order."""
        return (len(self.model_names) == len(self.dataset_names)
                and np.array_equal(self.dataset_to_model, np.arange(len(self.dataset_names))))

    def evaluable(self, classes: np.ndarray) -> np.ndarray:
        """Boolean mask of target classes (dataset indices) that the model can output."""
        return self.dataset_to_model[np.asarray(classes, dtype=np.int64)] >= 0

    def to_model(self, classes: np.ndarray) -> np.ndarray:
        """Dataset class indices -> model output indices (-1 where the model has no such class)."""
        return self.dataset_to_model[np.asarray(classes, dtype=np.int64)]


def map_classes(model_names: Sequence[str], dataset_names: Sequence[str]) -> ClassMapping:
    """Match a model's class names to a dataset's by canonical name (docs/BENCHMARK.md §9.9).

    Example: a 7-class FER2013 model (angry, disgust, ...) on FER+ (neutral, happiness, ...,
    contempt) maps every FER+ class except contempt, which is reported in ``missing``.
    Raises ValueError when two names of one side mean the same class.
    """
    for side, names in (("model", model_names), ("dataset", dataset_names)):
        keys = [_key(name) for name in names]
        for index, key in enumerate(keys):
            if key in keys[:index]:
                first = keys.index(key)
                raise ValueError(f"{side} classes {names[first]!r} and {names[index]!r} are the same emotion")
    model_index = {_key(name): i for i, name in enumerate(model_names)}
    dataset_index = {_key(name): j for j, name in enumerate(dataset_names)}
    to_model = np.array([model_index.get(_key(name), -1) for name in dataset_names], dtype=np.int64)
    to_dataset = np.array([dataset_index.get(_key(name), -1) for name in model_names], dtype=np.int64)
    return ClassMapping(
        model_names=tuple(model_names),
        dataset_names=tuple(dataset_names),
        dataset_to_model=to_model,
        model_to_dataset=to_dataset,
        missing=tuple(name for name, i in zip(dataset_names, to_model) if i < 0),
        extra=tuple(name for name, j in zip(model_names, to_dataset) if j < 0),
    )


def evaluation_columns(model_names: Sequence[str], dataset_names: Sequence[str], restrict: bool = False):
    """(column names, model output per column (-1: a column of zeros), mapping) of an evaluation.

    The evaluation's class order (docs/BENCHMARK.md §9.9): the dataset's classes in the dataset's
    order (a class the model cannot output keeps its place as a column of zeros; its images are
    left out), then, unless ``restrict``, the model's outputs that are no dataset class, in the
    model's order, so that the arg-max runs over every output. Example: a FER+ model (8 outputs,
    contempt last) on RAF-DB gives RAF-DB's 7 columns plus ``contempt``; a RAF-DB model on FER+
    gives FER+'s 8 columns, contempt a column of zeros. ValueError as :func:`map_classes`.
    """
    mapping = map_classes(model_names, dataset_names)
    columns = list(mapping.dataset_to_model)
    names = list(mapping.dataset_names)
    if not restrict:
        for index, target in enumerate(mapping.model_to_dataset):
            if target < 0:
                columns.append(index)
                names.append(mapping.model_names[index])
    return tuple(names), np.array(columns, dtype=np.int64), mapping
