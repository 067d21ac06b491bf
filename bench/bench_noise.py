"""Benchmark: the noise samplers of RAF-DB-C/P against numpy's own samplers, timed interleaved.

Rows (one 100x100x3 image = 30,000 values, one thread, the minimum over --repeats interleaved
rounds, so that a loaded machine slows both columns alike):

- normals: ``corruptions.standard_normal`` (Box-Muller from raw PCG64 words, docs/BENCHMARK.md
  §2.7) against ``rng.standard_normal(dtype=float32)`` (numpy's ziggurat, the previous sampler);
- gaussian noise to bytes: ``gaussian_noise_uint8`` against the previous float path
  (standard_normal float32, scale, add, clip, then the final clip * 255 and floor);
- Poisson counts: ``poisson_from_levels`` (32-bit words, integer limits) and ``shot_noise_uint8``
  (byte guide) against ``rng.poisson`` of the same means plus the float conversion.

Example::

    .venv/bin/python bench/bench_noise.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import corruptions  # noqa: E402


def _previous_gaussian(image, sigma, rng):
    noisy = rng.standard_normal(image.shape, dtype=np.float32)
    noisy *= np.float32(sigma)
    noisy += image.astype(np.float32) / np.float32(255.0)
    np.clip(noisy, 0.0, 1.0, out=noisy)
    return corruptions.to_uint8(noisy)


def _numpy_shot(image, lam, rng):
    counts = rng.poisson(image.astype(np.float64) / 255.0 * lam)
    return corruptions.to_uint8(np.clip(counts / float(lam), 0.0, 1.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="interleaved rounds; the minimum is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    pairs = {
        "normals (30,000 float32)": (lambda: corruptions.standard_normal(rng, image.shape),
                                     lambda: rng.standard_normal(image.shape, dtype=np.float32)),
        "gaussian noise to uint8 (sigma 0.18)": (lambda: corruptions.gaussian_noise_uint8(image, 0.18, rng),
                                                 lambda: _previous_gaussian(image, 0.18, rng)),
        "Poisson counts (lambda 29)": (lambda: corruptions.poisson_from_levels(image, 29, rng),
                                       lambda: rng.poisson(image.astype(np.float64) / 255.0 * 29)),
        "shot noise to uint8 (lambda 60)": (lambda: corruptions.shot_noise_uint8(image, 60, rng, "floor"),
                                            lambda: _numpy_shot(image, 60, rng)),
    }
    for ours, reference in pairs.values():  # warm the tables and caches
        ours(), reference()
    best = {name: [np.inf, np.inf] for name in pairs}
    for _ in range(args.repeats):
        for name, calls in pairs.items():
            for column, call in enumerate(calls):
                start = time.perf_counter()
                call()
                best[name][column] = min(best[name][column], time.perf_counter() - start)
    print(f"{'per 100x100x3 image, us':40s} {'ours':>8s} {'numpy':>8s} {'numpy/ours':>11s}")
    for name, (ours, reference) in best.items():
        print(f"{name:40s} {ours * 1e6:8.1f} {reference * 1e6:8.1f} {reference / ours:10.2f}x")


if __name__ == "__main__":
    main()
