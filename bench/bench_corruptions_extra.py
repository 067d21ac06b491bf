"""Benchmark: the ImageNet-C extras and the face set against their Hendrycks-way references.

Times every extra corruption on a 100x100 sample face (median of --repeats calls per severity,
single thread), ours beside bench/reference_corruptions.py (skimage random_noise and HSV round
trips, glass_blur's per-pixel Python loop, scipy zoom, ...), and compares the implied single-core
export time per file of the extra set with that of the 18.

Example::

    .venv/bin/python bench/bench_corruptions_extra.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import corruptions  # noqa: E402
import reference_corruptions  # noqa: E402


def _median_ms(function, repeats):
    times = []
    for k in range(repeats):
        start = time.perf_counter()
        function(k)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per (corruption, severity)")
    args = parser.parse_args()
    import synthetic_faces

    image = synthetic_faces.sample_face(0, 3)
    print(f"{'corruption':<20} {'ours ms':>8} {'ref ms':>8} {'ref/ours':>9}   (mean over severities 1..5, 100 px, imagenet224)")
    extra_total = 0.0
    for name in corruptions.corruption_names("imagenet-extra") + corruptions.corruption_names("face"):
        ours = np.mean([_median_ms(lambda k: corruptions.corrupt(image, name, s, np.random.default_rng(k),
                                                                 param_set="imagenet224"), args.repeats)
                        for s in range(1, 6)])
        extra_total += ours
        reference = reference_corruptions.EXTRA_REFERENCE.get(name)
        if reference is None:
            print(f"{name:<20} {ours:8.2f} {'-':>8} {'-':>9}")
            continue
        ref = np.mean([_median_ms(lambda k: reference(image, s, np.random.default_rng(k)), 1) for s in range(1, 6)])
        print(f"{name:<20} {ours:8.2f} {ref:8.2f} {ref / ours:8.1f}x")
    rafdb_total = sum(np.mean([_median_ms(lambda k: corruptions.corrupt(image, name, s, np.random.default_rng(k)),
                                          args.repeats) for s in range(1, 6)])
                      for name in corruptions.CORRUPTION_NAMES)
    n_extra = len(corruptions.corruption_names("imagenet-extra") + corruptions.corruption_names("face"))
    print(f"per file (corruption work only): extra+face set {extra_total / n_extra:.2f} ms, "
          f"the 18 {rafdb_total / 18:.2f} ms, ratio {extra_total / n_extra / (rafdb_total / 18):.2f}")


if __name__ == "__main__":
    main()
