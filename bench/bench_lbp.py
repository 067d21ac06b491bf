"""Benchmark: LBP descriptors for a test split's worth of faces, and SVC training time on RAF-DB train.

Section 1 describes --faces synthetic 100 x 100 faces (the sample tree's face renderer,
synthetic_faces.draw_face, the faces `rafdb_dataset.py sample` writes; or the aligned faces of an
existing tree with --rafdb) three ways, in the same run:

  reference   a per-image loop written the original's way (docs/BENCHMARK.md §9.6): BGR -> grey,
              cv2.resize to 108 x 147, skimage local_binary_pattern, 42 np.histogram calls, uint8
  ours x1     lbp.describe on one thread (batch LBP in numpy, one bincount for all histograms)
  ours xN     lbp.describe on all usable CPUs

and checks that ours (legacy=True) gives the reference's bytes.

Section 2 fits the original's SVC (C 4, gamma 3e-6, RBF, balanced) on n = --fit-sizes descriptors
and fits t = a * n ** b through the measured times (least squares in log-log), then extrapolates
to RAF-DB's full training split, 12,271 x 2,478 (BENCHMARK.md §1.1). Synthetic faces are easier
than real ones (fewer support vectors), so treat the estimate as a lower bound.

Example::

    .venv/bin/python bench/bench_lbp.py --faces 3068 --fit-sizes 1000 2000 4000 --json bench_lbp.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage.feature import local_binary_pattern  # noqa: E402

import lbp  # noqa: E402
import lbp_svm  # noqa: E402

FULL_TRAIN = 12271  # RAF-DB train images (BENCHMARK.md §1.1)


def reference_descriptor(bgr: np.ndarray) -> np.ndarray:
    """One face the original's way (BENCHMARK.md §9.6): per-image calls, 42 histograms, uint8."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 and bgr.shape[2] > 1 else bgr
    grey = cv2.resize(grey, (108, 147))
    codes = local_binary_pattern(grey, P=8, R=2, method="nri_uniform").astype(np.uint8)
    feature = []
    for x in range(6):
        for y in range(7):
            counts, _ = np.histogram(codes[y * 21:(y + 1) * 21, x * 18:(x + 1) * 18], bins=range(60))
            feature.extend(counts)
    return np.array(feature).astype(np.uint8)


def make_faces(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` synthetic 100 x 100 RGB faces and their classes (cycling 0..6)."""
    import synthetic_faces

    faces = np.empty((count, 100, 100, 3), np.uint8)
    classes = np.arange(count) % 7
    for index in range(count):
        rng = np.random.Generator(np.random.PCG64([seed, index]))
        faces[index] = synthetic_faces.draw_face(rng, int(classes[index]), 100)[0]
    return faces, classes


def tree_faces(root: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` aligned test faces (then train faces) of a RAF-DB-shaped tree, hard labels."""
    import rafdb_dataset

    entries = [e for e in rafdb_dataset.read_partition(root) if e[0].startswith("test_")]
    entries += [e for e in rafdb_dataset.read_partition(root) if e[0].startswith("train_")]
    entries = entries[:count]
    faces = np.stack([rafdb_dataset.read_image(rafdb_dataset.aligned_path(root, name)) for name, _ in entries])
    return faces, np.array([label for _, label in entries])


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=3068, help="faces to describe (RAF-DB test: 3068)")
    parser.add_argument("--rafdb", type=Path, default=None, help="use this tree's aligned faces instead")
    parser.add_argument("--fit-sizes", type=int, nargs="*", default=[1000, 2000, 4000],
                        help="training-set sizes timed for the SVC (none: skip section 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per method (best is kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic faces")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    needed = max([args.faces, *args.fit_sizes])
    faces, classes = (tree_faces(args.rafdb, needed) if args.rafdb else make_faces(needed, args.seed))
    describe_faces = faces[:args.faces]
    n = len(describe_faces)
    threads = lbp.default_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"section 1: LBP descriptors of {n} faces of {faces.shape[1]}x{faces.shape[2]} "
          f"({os.cpu_count()} CPUs, {threads} usable, load average {load:.1f}; best of {args.repeats})")

    bgr = np.ascontiguousarray(describe_faces[..., ::-1])  # the original read BGR
    legacy = lbp.LbpSettings(legacy=True)
    methods = {
        "reference": lambda: np.stack([reference_descriptor(face) for face in bgr]),
        "one": lambda: lbp.describe(describe_faces, legacy, threads=1),
        "all": lambda: lbp.describe(describe_faces, legacy, threads=threads),
        "fixed": lambda: lbp.describe(describe_faces, threads=threads),
    }
    # Interleaved repeats, best time of each: the machine is shared and noisy.
    best = {name: float("inf") for name in methods}
    outputs = {}
    for _ in range(args.repeats):
        for name, method in methods.items():
            outputs[name], seconds = timed(method)
            best[name] = min(best[name], seconds)
    reference, ours_one, ours_all, fixed = (outputs[name] for name in methods)
    reference_s, one_s, all_s, fixed_s = (best[name] for name in methods)
    identical = bool(np.array_equal(reference, ours_one) and np.array_equal(reference, ours_all))
    rows = [("reference (per image, original's way)", reference_s), ("ours, 1 thread", one_s),
            (f"ours, {threads} threads", all_s), (f"ours, {threads} threads, uint16 (default)", fixed_s)]
    print(f"{'method':<44} {'total s':>8} {'ms/face':>8} {'speed-up':>9}")
    for name, seconds in rows:
        print(f"{name:<44} {seconds:8.2f} {1000 * seconds / n:8.3f} {reference_s / seconds:8.1f}x")
    print(f"ours (legacy) == reference, byte for byte: {identical}")
    wrapped = int(np.count_nonzero(fixed > 255))
    print(f"cell counts above 255 (wrapped by the original's uint8 cast): {wrapped} in {n} faces")
    results = {"faces": n, "threads": threads, "reference_s": reference_s, "ours_1_thread_s": one_s,
               "ours_all_threads_s": all_s, "ours_uint16_s": fixed_s, "identical_to_reference": identical,
               "speedup_1_thread": reference_s / one_s, "speedup_all_threads": reference_s / all_s,
               "counts_above_255": wrapped}

    if args.fit_sizes:
        print(f"\nsection 2: SVC(C=4, gamma=3e-6, rbf, balanced) fit time on n x 2478 descriptors")
        features = lbp.describe(faces, threads=threads)
        fits = []
        print(f"{'n':>6} {'fit s':>8} {'support vectors':>16}")
        for size in args.fit_sizes:
            svc = lbp_svm.make_svc()
            _, seconds = timed(svc.fit, features[:size], classes[:size])
            fits.append((size, seconds))
            print(f"{size:6d} {seconds:8.2f} {int(np.sum(svc.n_support_)):16d}")
        results["fits"] = [{"n": size, "seconds": seconds} for size, seconds in fits]
        if len(fits) >= 2:
            exponent, log_scale = np.polyfit(np.log([s for s, _ in fits]), np.log([t for _, t in fits]), 1)
            estimate = float(np.exp(log_scale) * FULL_TRAIN ** exponent)
            print(f"power law t = a n^b: b = {exponent:.2f}; estimated fit on the full train split "
                  f"({FULL_TRAIN} x 2478): {estimate:.0f} s ({estimate / 60:.1f} min)")
            results.update(power_law_exponent=float(exponent), estimated_full_train_fit_s=estimate)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
