"""Benchmark: the FER PublicTest corrupted export against the bare encode-and-write of as many PNGs.

A synthetic FER2013/FER+ pair with --rows PublicTest rows (48x48 grey faces) is exported with
``ferplus_aug_dataset.py``'s machinery (``fer_export.c_job`` + ``dataset_writer.export``: 18
corruptions x 5 severities = 90 PNG files per row, manifest, atomic writes) and compared, in the
same run, with the floor of any such export: encoding the clean 48x48 image as PNG and writing it
atomically, as many times as the export writes files. Both with --workers processes (the floor is
single-process: it is I/O and encoding only, measured per file and scaled). The full PublicTest
(3,589 rows x 90 = 323,010 files) is extrapolated from files/s.

Example::

    .venv/bin/python bench/bench_fer_export.py --rows 60 --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("OMP_NUM_THREADS", "1")

FULL_FILES = 3589 * 90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60, help="PublicTest rows of the synthetic pair")
    parser.add_argument("--workers", type=int, default=0, help="export processes (0 = all cores)")
    args = parser.parse_args()

    import cli_common
    import dataset_writer
    import datasets
    import fer_export
    import synthetic_faces
    from datasets.images import encode_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synthetic_faces.write_fer_sample(tmp / "FERPlus", 1, args.rows, 1, seed=0)
        data = datasets.get("ferplus", root)
        pairs = fer_export.parse_pairs("all", "1-5")
        job = fer_export.c_job(data, pairs, split="test", seed=0)
        start = time.perf_counter()
        result = dataset_writer.export(job.units, job.render, tmp / "out", generator="bench", kind=job.kind,
                                       params=job.params, sources=job.sources, workers=args.workers or None,
                                       progress=False)
        export_seconds = time.perf_counter() - start
        files = result.files
        images = [data.read_image(f"{row:05d}") for row in fer_export.fer_split_rows(data, "test")]
        start = time.perf_counter()
        for index in range(files):
            image = images[index % len(images)]
            cli_common.atomic_write_bytes(tmp / "floor" / f"{index // 1000:03d}" / f"{index:06d}.png",
                                          encode_image(image, "png"))
        floor_seconds = time.perf_counter() - start
    workers = result.workers
    print(f"{args.rows} PublicTest rows x 90 = {files} PNG files of 48x48; export with {workers} worker(s)")
    print(f"{'method':<58} {'seconds':>8} {'files/s':>9} {'full 323,010 files':>19}")
    rows = [("ours: fer_export + dataset_writer.export", export_seconds),
            ("floor: clean PNG encode + atomic write (1 process)", floor_seconds),
            (f"floor scaled to {workers} worker(s)", floor_seconds / workers)]
    for name, seconds in rows:
        rate = files / seconds
        print(f"{name:<58} {seconds:8.2f} {rate:9.0f} {FULL_FILES / rate / 60:15.1f} min")
    print(f"ours / floor (same worker count): {export_seconds / (floor_seconds / workers):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
