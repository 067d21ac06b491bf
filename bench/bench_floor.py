"""The floor of a dataset export: encode and write the same files with no corruption work at all.

For every aligned test image of --rafdb, this writes the same number of files, in the same folder
layout, as ``rafdb_aug_dataset.py export`` (--kind c: one file per corruption x severity) or
``rafdb_perturb_dataset.py export`` (--kind p: 30 frames per perturbation). Each output is the
source image (decoded once per source image) encoded as OpenCV JPEG q95 (100x100), written under a
temporary name and renamed. The work is spread over the same number of processes (a fork pool,
``imap_unordered``). Nothing is hashed and there is no manifest. No export can be faster than
this, so bench/bench_export.py prints each export's time as a multiple of this floor, measured in
the same run (docs/SCALE.md §3).

Example::

    .venv/bin/python bench/bench_floor.py --rafdb sample/RAF-DB --out /tmp/floor --kind c --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402

cv2.setNumThreads(1)


def layout(kind: str) -> list[str]:
    """The outputs of one source image, as patterns with a ``{name}`` (input file name) or ``{stem}``
    (``test_0001``) placeholder. The registries are imported here only; bench/bench_export.py passes
    the layout in a file (--layout) so that the timed floor process imports nothing heavy."""
    import corruptions
    import perturbations

    if kind == "c":
        return [f"rafdb.test.{name}.{severity}/{{name}}" for name in corruptions.CORRUPTION_NAMES
                for severity in range(1, 6)]
    return [f"rafdb.test.{name}/{{stem}}_{index:02d}.jpg" for name in perturbations.PERTURBATIONS
            for index in range(perturbations.NUM_FRAMES)]


_JOB: dict = {}


def _init(out_dir: str, patterns: list[str]) -> None:
    _JOB.update(out_dir=out_dir, patterns=patterns, made=set())


def write_one(path: str) -> int:
    """Decode one source image, then encode and write it once per output; return the file count."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    name = os.path.basename(path)
    stem = name.split("_aligned")[0]
    for pattern in _JOB["patterns"]:
        rel = pattern.format(name=name, stem=stem)
        target = os.path.join(_JOB["out_dir"], rel)
        folder = os.path.dirname(target)
        if folder not in _JOB["made"]:
            os.makedirs(folder, exist_ok=True)
            _JOB["made"].add(folder)
        data = cv2.imencode(".jpg", image)[1].tobytes()
        tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, target)
    return len(_JOB["patterns"])


def run_floor(rafdb: str, out_dir: str, kind: str, workers: int, patterns: list[str]) -> dict:
    """Write the floor tree into the empty or missing ``out_dir``; return files and seconds."""
    start = time.perf_counter()
    folder = os.path.join(rafdb, "basic", "Image", "aligned")
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                   if name.startswith("test_") and name.endswith("_aligned.jpg"))
    os.makedirs(out_dir, exist_ok=True)
    files = 0
    if workers == 1:
        _init(out_dir, patterns)
        files = sum(write_one(path) for path in paths)
    else:
        chunksize = max(1, min(8, len(paths) // (workers * 16)))
        with multiprocessing.get_context("fork").Pool(workers, _init, (out_dir, patterns)) as pool:
            files = sum(pool.imap_unordered(write_one, paths, chunksize=chunksize))
    seconds = time.perf_counter() - start
    return {"kind": kind, "images": len(paths), "files": files, "workers": workers,
            "seconds": seconds, "files_per_s": files / seconds}


def render_plain(unit, *, patterns: list[str]) -> list[tuple[str, bytes]]:
    """The floor's work as a dataset_writer render function: decode once, encode once per output."""
    image = cv2.imread(unit.payload, cv2.IMREAD_COLOR)
    data = [cv2.imencode(".jpg", image)[1].tobytes() for _pattern in patterns]
    return list(zip(unit.outputs, data))


def run_via_writer(rafdb: str, out_dir: str, kind: str, workers: int, patterns: list[str]) -> dict:
    """The floor's files written through dataset_writer.export (journal, hashes, manifest): the
    cost of the export machinery alone, without any corruption work."""
    import functools

    import dataset_writer

    start = time.perf_counter()
    folder = os.path.join(rafdb, "basic", "Image", "aligned")
    names = sorted(name for name in os.listdir(folder) if name.startswith("test_") and name.endswith("_aligned.jpg"))
    units = [dataset_writer.WorkUnit(os.path.join(folder, name),
                                     tuple(p.format(name=name, stem=name.split("_aligned")[0]) for p in patterns),
                                     os.path.join(folder, name), inputs=(os.path.join(folder, name),))
             for name in names]
    result = dataset_writer.export(units, functools.partial(render_plain, patterns=patterns), out_dir,
                                   generator="bench_floor.py", kind=f"floor-{kind}", params={},
                                   sources=names, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return {"kind": kind, "images": len(units), "files": result.files_written, "workers": workers,
            "seconds": seconds, "files_per_s": result.files_written / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rafdb", required=True, help="RAF-DB root (e.g. a rafdb_dataset.py sample tree)")
    parser.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--kind", choices=("c", "p"), default="c",
                        help="c: the RAF-DB-C layout (90 files per image); p: RAF-DB-P (300 per image)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--layout", default=None,
                        help="JSON file with the list of output patterns (default: from the registries)")
    parser.add_argument("--via-writer", action="store_true",
                        help="write the same files through dataset_writer.export (journal, SHA-256, "
                             "manifest) to measure the export machinery alone")
    parser.add_argument("--keep", action="store_true", help="keep the written tree")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    if args.layout:
        with open(args.layout, encoding="utf-8") as handle:
            patterns = json.load(handle)
    else:
        patterns = layout(args.kind)
    run = run_via_writer if args.via_writer else run_floor
    result = run(args.rafdb, args.out, args.kind, args.workers, patterns)
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"floor ({args.kind}): {result['files']} files from {result['images']} images in "
              f"{result['seconds']:.2f} s with {args.workers} process(es), {result['files_per_s']:.0f} files/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
