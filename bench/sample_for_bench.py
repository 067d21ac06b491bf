"""What the training benchmarks share: the --nets list and the training images they read. A module
they import (bench_train.py, bench_augmix.py, ...), not a script."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    print("error: bench/sample_for_bench.py is a module of the training benchmarks, not a script: run "
          "bench/bench_train.py or bench/bench_augmix.py", file=sys.stderr)
    sys.exit(2)

from cli_common import UserError  # noqa: E402


def parse_nets(text: str) -> list[str]:
    """``--nets a,b`` -> names of the models registry (UserError naming the unknown one)."""
    import models

    nets = [name.strip() for name in text.split(",") if name.strip()]
    for name in nets:
        if name not in models.NETS:
            raise UserError(f"--nets: unknown network {name!r}; expected names from {', '.join(models.NETS)}")
    return nets


def training_images(root: str | Path | None, tmp: str | Path, n_images: int, seed: int):
    """(image paths, soft label rows) of a RAF-DB tree's train split; without ``root``, a synthetic
    sample of ``n_images`` faces written under ``tmp``."""
    import rafdb_dataset

    if root is None:
        import synthetic_faces

        root = synthetic_faces.write_sample_tree(Path(tmp) / "RAF-DB", n_train=n_images, n_test=7, seed=seed)
    train = rafdb_dataset.load_labels(root, "train", "soft")
    return [str(path) for path in train.aligned_paths(root)], train.labels
