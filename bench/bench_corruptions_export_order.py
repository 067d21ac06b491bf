"""Benchmark: the corruption arithmetic of RAF-DB-C in the export's own order, old against new.

bench_corruptions.py section 1 repeats one (corruption, severity) call on one image, so values
that corruptions.py keeps per face (docs/CORRUPTIONS.md, "Speed of the 18 corruptions") look free there. This benchmark
calls the 90 (corruption, severity) pairs on each of --images different synthetic faces in the
order an export renders them (face -> corruption -> severity), times every call with the thread's
CPU clock (steady on a loaded machine) and prints ms per face per corruption (the sum over its 5
severities). With --baseline FILE.py (another corruptions.py, e.g. from ``git show
main:corruptions.py``) both modules run face by face, interleaved, and the table has both columns.

Example::

    git show main:corruptions.py > /tmp/corruptions_main.py
    .venv/bin/python bench/bench_corruptions_export_order.py --images 100 --baseline /tmp/corruptions_main.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import corruptions  # noqa: E402
import synthetic_faces  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="synthetic faces to corrupt (default 100)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another corruptions.py to time beside this one (imported under another name)")
    return parser.parse_args()


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("corruptions_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_face(module, face, index, totals):
    clock = time.thread_time
    for name in corruptions.CORRUPTION_NAMES:
        for severity in corruptions.SEVERITIES:
            rng = np.random.default_rng(index * 100 + severity)
            start = clock()
            module.corrupt(face, name, severity, rng)
            totals[name] += clock() - start


def main():
    args = parse_args()
    modules = {"new": corruptions}
    if args.baseline is not None:
        modules = {"baseline": _load(args.baseline), "new": corruptions}
    faces = [synthetic_faces.sample_face(i, i % 7) for i in range(args.images + 1)]
    totals = {label: dict.fromkeys(corruptions.CORRUPTION_NAMES, 0.0) for label in modules}
    for label, module in modules.items():  # warm-up: operators, tables, imports
        _one_face(module, faces[-1], 0, dict.fromkeys(corruptions.CORRUPTION_NAMES, 0.0))
    for index, face in enumerate(faces[:-1]):
        for label, module in modules.items():
            _one_face(module, face, index, totals[label])
    scale = 1e3 / args.images
    labels = list(modules)
    print(f"ms of thread CPU time per face (5 severities), {args.images} synthetic 100x100 faces, export order")
    print(f"{'corruption':42s} " + " ".join(f"{label:>9s}" for label in labels) + ("   ratio" if len(labels) > 1 else ""))
    for name in corruptions.CORRUPTION_NAMES:
        values = [totals[label][name] * scale for label in labels]
        ratio = f"  {values[0] / values[-1]:5.2f}x" if len(values) > 1 else ""
        print(f"{name:42s} " + " ".join(f"{value:9.3f}" for value in values) + ratio)
    sums = [sum(totals[label].values()) * scale for label in labels]
    ratio = f"  {sums[0] / sums[-1]:5.2f}x" if len(sums) > 1 else ""
    print(f"{'all 90 calls':42s} " + " ".join(f"{value:9.2f}" for value in sums) + ratio)


if __name__ == "__main__":
    main()
