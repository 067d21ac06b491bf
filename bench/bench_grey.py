"""Time the 18 corruptions on a 48x48 grey FER-size face: native grey (H x W x 1) against the old
stopgap (copy to three channels, corrupt as RGB, keep the first channel), in the same run.

    .venv/bin/python bench/bench_grey.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corruptions  # noqa: E402
import synthetic_faces  # noqa: E402


def _best(function, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats, the best is kept (default 5)")
    args = parser.parse_args(argv)
    rgb = cv2.resize(synthetic_faces.sample_face(0, 3), (48, 48), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    three = np.repeat(grey, 3, axis=2)
    total_native = total_stopgap = 0.0
    print(f"{'corruption':42s} {'grey ms':>8s} {'3ch ms':>8s} {'ratio':>6s}")
    for name in corruptions.CORRUPTION_NAMES:
        def native():
            for severity in corruptions.SEVERITIES:
                corruptions.corrupt(grey, name, severity, np.random.default_rng(0))

        def stopgap():
            for severity in corruptions.SEVERITIES:
                corruptions.corrupt(three, name, severity, np.random.default_rng(0))[:, :, :1]

        native_s, stopgap_s = _best(native, args.repeats) / 5, _best(stopgap, args.repeats) / 5
        total_native += native_s
        total_stopgap += stopgap_s
        print(f"{name:42s} {native_s * 1e3:8.3f} {stopgap_s * 1e3:8.3f} {stopgap_s / native_s:6.2f}")
    print(f"{'all 18 (mean per image and severity)':42s} {total_native / 18 * 1e3:8.3f} "
          f"{total_stopgap / 18 * 1e3:8.3f} {total_stopgap / total_native:6.2f}")


if __name__ == "__main__":
    main()
