"""RAF-DB (docs/BENCHMARK.md §1): the layout, label protocols and vote filter of rafdb_dataset.py.

No validation split: training scripts hold out part of train (docs/BENCHMARK.md §1.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import rafdb_dataset
from datasets.base import Dataset, LabelSet


class RafDB(Dataset):
    name = "rafdb"
    title = "RAF-DB"
    class_names = rafdb_dataset.CLASS_NAMES
    protocols = rafdb_dataset.PROTOCOLS  # soft (the original's) first
    default_root = "RAF-DB"
    grey = False
    native_size = (100, 100)
    has_validation = False

    def labels(self, split: str) -> LabelSet:
        self.check_split(split)
        return rafdb_dataset.load_labels(self.root, split, self.protocol, allow_missing=self.allow_missing)

    def image_path(self, image_id: str) -> Path:
        return rafdb_dataset.aligned_path(self.root, image_id)

    def read_image(self, image_id: str) -> np.ndarray:
        return rafdb_dataset.read_image(self.image_path(image_id))
