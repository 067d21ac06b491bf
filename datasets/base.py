"""What every dataset provides (:class:`Dataset`), its label rows (:class:`LabelSet`), the hold-out.

A dataset is a root folder plus options; it names its classes in its own order, lists the ids
and label vectors of a split, and reads one image by id as uint8: RGB ``(H, W, 3)`` or grey
``(H, W, 1)``. The three split names are the same for every dataset: ``train``, ``validation``
and ``test``; a dataset without a validation split gets a seeded, stratified hold-out of its
training rows instead (docs/BENCHMARK.md §1.5).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import numpy as np

from cli_common import UserError, seed64

LOG = logging.getLogger("fer.datasets")

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class LabelSet:
    """Image ids of one split with their label vectors, in the dataset's class order.

    ``names`` are the dataset's ids (``test_0001`` for RAF-DB, ``00042`` for a FER2013 row,
    ``happy/img7.png`` for a folder dataset). ``labels`` are float32 (N, classes): soft
    distributions or one-hot.
    """

    names: list[str]
    labels: np.ndarray
    protocol: str
    split: str
    n_total: int = 0  # rows of this split before filtering
    n_dropped: int = 0  # rows removed by a vote filter
    n_missing: int = 0  # rows skipped with allow_missing because the image is absent
    n_unnamed: int = 0  # FER+ rows without an image name (faces FER+ discarded), not counted in n_dropped

    def __len__(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> np.ndarray:
        """Target class per image: argmax, two-way ties to the lower index (docs/BENCHMARK.md §1.3)."""
        return np.argmax(self.labels, axis=1)

    def filter_note(self) -> str:
        """``d of n dropped by the vote filter`` where one ran (the soft protocols, or any rows
        dropped), plus FER+'s rows without an image name; "" when there is nothing to report."""
        parts = []
        if self.protocol == "soft" or self.n_dropped:
            parts.append(f"{self.n_dropped} of {self.n_total} dropped by the vote filter")
        if self.n_unnamed:
            parts.append(f"{self.n_unnamed} without an image name")
        return "; ".join(parts)

    def count_line(self, unit: str = "images") -> str:
        """``N test <unit> under the <protocol> label protocol``, with :meth:`filter_note` in
        brackets when it says anything (a hard or folder label set has no filter to report)."""
        note = self.filter_note()
        line = f"{len(self)} {self.split} {unit} under the {self.protocol} label protocol"
        return line + (f" ({note})" if note else "")

    def subset(self, indices: Iterable[int]) -> "LabelSet":
        indices = list(indices)
        return dataclasses.replace(
            self, names=[self.names[i] for i in indices], labels=self.labels[indices]
        )


def holdout_split(labels: LabelSet, fraction: float = 0.1, seed: int = 0,
                  class_names: Sequence[str] | None = None,
                  test_flag: str | None = "--val-split test") -> tuple[LabelSet, LabelSet]:
    """Hold out ``fraction`` of each class (by argmax), seeded; returns (train, validation).
    ``class_names`` name the classes in the messages (a class too small to give an image);
    ``test_flag`` is the caller's flag that selects on the test set instead (None: it has none).

    docs/BENCHMARK.md §1.5 FIX: the original selected checkpoints on the test set.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {fraction}")
    rng = np.random.Generator(np.random.PCG64(seed64(seed, "holdout", labels.split, labels.protocol)))
    classes = labels.classes
    held: list[int] = []
    too_few = []  # (class index, its image count) of classes with images but none held out
    for index in range(labels.labels.shape[1]):
        members = np.flatnonzero(classes == index)
        count = int(round(fraction * len(members)))
        held.extend(rng.permutation(members)[:count].tolist())
        if len(members) and not count:
            too_few.append((index, len(members)))
    held_set = set(held)
    keep = [i for i in range(len(labels)) if i not in held_set]
    few = ", ".join(f"{class_names[i] if class_names else f'class {i}'} ({n})" for i, n in too_few)
    if not keep or not held:
        # nothing held out: the fraction is too small; nothing kept for training: too large
        change = "a larger --val-fraction" if not held else "a smaller --val-fraction (none would be left to train on)"
        raise UserError(f"cannot hold out {fraction:.0%} of {len(labels)} training images (each class holds out "
                        f"round({fraction:g} x its images){'; none of ' + few if few and not held else ''}): pass "
                        f"{change}{',' if test_flag else ' or'} give the dataset a validation split (a "
                        f"folder dataset: a val/ folder)"
                        + (f", or select on the test set with {test_flag}" if test_flag else ""))
    if too_few:
        LOG.warning("the hold-out (--val-fraction %g) takes no image of %s: the validation split lacks "
                    "these classes", fraction, few)
    return labels.subset(keep), labels.subset(sorted(held))


class Dataset:
    """The interface every script uses; one subclass per dataset module.

    Class attributes describe the dataset; an instance is one root folder with its options.
    Subclasses implement :meth:`labels` and :meth:`read_image`, and :meth:`image_path` when the
    images are files.
    """

    name: ClassVar[str]  # registry key, used in output names (`<name>.<split>.<corruption>.<sev>`)
    title: ClassVar[str]  # for reports, e.g. "FER+"
    class_names: tuple[str, ...]  # in the dataset's label order
    protocols: ClassVar[tuple[str, ...]]  # label protocols; the first is the default
    default_root: ClassVar[str | None]  # `--data` default, None = required
    grey: bool | None = False  # True: every image is (H, W, 1); None: per image (folder datasets)
    native_size: tuple[int, int] | None = None  # (H, W) when every image has it
    has_validation: bool = False  # False: train_validation() holds out training rows
    source_kind: ClassVar[str] = "files"  # "files" (image_path works) or "csv" (pixels in a table)

    def __init__(self, root: str | Path, *, protocol: str | None = None, allow_missing: bool = False):
        self.root = Path(root)
        self.protocol = protocol or self.protocols[0]
        if self.protocol not in self.protocols:
            raise UserError(f"--labels {self.protocol}: {self.title} offers {', '.join(self.protocols)}")
        self.allow_missing = allow_missing

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_name(self, split: str) -> str:
        """The dataset's own name of a split (``PublicTest`` for FER's test), for reports."""
        return split

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "validation" and not self.has_validation:
            raise UserError(f"--split validation: {self.title} at {self.root} has no validation split "
                            f"(a folder dataset has one when it holds a val/ folder); export --split test "
                            f"or train (training holds out part of train itself, docs/BENCHMARK.md §1.5)")

    def labels(self, split: str) -> LabelSet:
        """Ids and label vectors of ``split`` under the chosen protocol (empty split: UserError)."""
        raise NotImplementedError

    def read_image(self, image_id: str) -> np.ndarray:
        """One image as uint8: RGB (H, W, 3) or grey (H, W, 1)."""
        raise NotImplementedError

    def image_path(self, image_id: str) -> Path:
        """The file of an image (file-backed datasets only)."""
        raise UserError(f"{self.title} images are not files; read them with read_image()")

    def train_validation(self, fraction: float = 0.1, seed: int = 0,
                         test_flag: str | None = "--val-split test") -> tuple[LabelSet, LabelSet]:
        """(train, validation): the dataset's validation split, else a stratified hold-out
        (``test_flag``: as in :func:`holdout_split`)."""
        if self.has_validation:
            return self.labels("train"), self.labels("validation")
        return holdout_split(self.labels("train"), fraction, seed, self.class_names, test_flag)

    def describe(self) -> dict:
        """What a manifest or run.json records about the data."""
        return {
            "dataset": self.name,
            "root": str(self.root),
            "protocol": self.protocol,
            "classes": list(self.class_names),
            "splits": {split: self.split_name(split) for split in SPLITS
                       if split != "validation" or self.has_validation},
            "grey": self.grey,
            "native_size": list(self.native_size) if self.native_size else None,
        }
