"""Benchmark: corruptions.py against a reference, per corruption, then RAF-DB-C export throughput.

Section 1 times every corruption on a 100x100 face (single thread, the median of --repeats calls
per severity), ours beside the reference of the same algorithm, and sums the 90
(corruption, severity) calls into the implied single-core export time for 3,068 images.
The reference is always bench/reference_corruptions.py, written from BENCHMARK.md §2.3-2.6 with
RAF-DB-C's own parameter tables, the way the original did (scipy.ndimage.zoom per factor, skimage
gaussian, skimage HSV round trips, Wand/ImageMagick motion blur), so both columns time the same
algorithm with the same parameters. The imagecorruptions package is not used: it runs ImageNet-C's
tables (other sigmas, lambdas, contrast factors and zoom lists, BENCHMARK.md §2.3), so its timings would
not be comparable.

Section 2 runs ``rafdb_aug_dataset.py export`` (if the script exists) on a synthetic sample tree
of --images test images with 1 worker and with all cores: images/s, files/s, wall time, the
extrapolation to the full 276,120 files and the peak RSS of the export processes.

Example::

    .venv/bin/python bench/bench_corruptions.py --images 300 --repeats 5 --csv bench.csv
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import cli_common  # noqa: E402
import corruptions  # noqa: E402
import reference_corruptions  # noqa: E402

FULL_IMAGES = 3068
FULL_FILES = FULL_IMAGES * 18 * 5  # 276,120


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=FULL_IMAGES,
                        help="test images in the sample tree for the export section (default 3068)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per (corruption, severity); the median is reported (default 7)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the per-corruption table here")
    parser.add_argument("--skip-export", action="store_true", help="only the per-corruption section")
    parser.add_argument("--skip-reference", action="store_true",
                        help="time only ours (the reference columns are left empty); for before/after runs")
    return parser.parse_args()


def _test_image():
    try:
        import synthetic_faces

        return synthetic_faces.sample_face(0, 3), "synthetic face"
    except ImportError:
        rng = np.random.default_rng(0)
        return np.uint8(rng.random((100, 100, 3)) * 255), "random image"


def _median_ms(call, repeats):
    call()  # warm caches (zoom operators, Poisson tables) and imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def bench_corruptions(repeats, skip_reference=False):
    image, image_kind = _test_image()
    rows = []
    for name in corruptions.CORRUPTION_NAMES:
        ours, ref = [], []
        for severity in corruptions.SEVERITIES:
            rng = np.random.default_rng(0)
            ours.append(_median_ms(lambda: corruptions.corrupt(image, name, severity, rng), repeats))
            if skip_reference:
                ref.append(float("nan"))
                continue
            ref.append(_median_ms(
                lambda: reference_corruptions.reference_corrupt(image, name, severity, rng), repeats))
        if "motion_blur" in name:
            ref_name = "reference: " + reference_corruptions.MOTION_REFERENCE
        else:
            ref_name = "reference_corruptions.py"
        rows.append({"corruption": name, "ours_ms_mean": np.mean(ours), "ours_ms_s3": ours[2],
                     "ref_ms_mean": np.mean(ref), "ref_ms_s3": ref[2], "ours_ms_sum": sum(ours),
                     "ref_ms_sum": sum(ref), "reference": ref_name})
    return rows, image_kind


def _ms(value, width):
    """A column of milliseconds, or '-' where the reference was skipped."""
    return f"{'-':>{width}s}" if np.isnan(value) else f"{value:{width}.3f}"


def print_corruption_table(rows, image_kind, repeats):
    print(f"Section 1: ms per 100x100 image ({image_kind}), 1 thread, median of {repeats} calls")
    header = f"{'corruption':42s} {'ours s1-5':>9s} {'ours s3':>8s} {'ref s1-5':>9s} {'ref s3':>8s} {'ratio':>6s}  reference"
    print(header)
    print("-" * len(header))
    for row in rows:
        skipped = np.isnan(row["ref_ms_mean"])
        ratio = f"{'-':>6s}" if skipped else f"{row['ref_ms_mean'] / row['ours_ms_mean']:5.1f}x"
        print(f"{row['corruption']:42s} {row['ours_ms_mean']:9.3f} {row['ours_ms_s3']:8.3f} "
              f"{_ms(row['ref_ms_mean'], 9)} {_ms(row['ref_ms_s3'], 8)} {ratio}  "
              f"{'(skipped)' if skipped else row['reference']}")
    ours_total = sum(row["ours_ms_sum"] for row in rows)
    ref_total = sum(row["ref_ms_sum"] for row in rows)
    print("-" * len(header))
    if np.isnan(ref_total):
        print(f"{'sum over all 90 (corruption, severity) calls':42s} {ours_total:9.1f} ms (ours)")
        print(f"implied single-core corruption time for {FULL_IMAGES} images: "
              f"{ours_total * FULL_IMAGES / 1e3 / 60:.2f} min; JPEG encoding and writing not included")
    else:
        print(f"{'sum over all 90 (corruption, severity) calls':42s} {ours_total:9.1f} ms (ours) "
              f"{ref_total:9.1f} ms (reference)  {ref_total / ours_total:.1f}x")
        print(f"implied single-core corruption time for {FULL_IMAGES} images: "
              f"{ours_total * FULL_IMAGES / 1e3 / 60:.2f} min (ours), "
              f"{ref_total * FULL_IMAGES / 1e3 / 60:.2f} min (reference); JPEG encoding and writing not included")
    print()


def _peak_rss_of_tree(process, stop, peak):
    """Poll the process tree's summed RSS (psutil) until ``stop`` is set."""
    try:
        import psutil
    except ImportError:
        return
    try:
        parent = psutil.Process(process.pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            members = [parent, *parent.children(recursive=True)]
            total = sum(member.memory_info().rss for member in members)
            peak[0] = max(peak[0], total)
        except psutil.Error:
            pass
        stop.wait(0.2)


def bench_export(images):
    script = ROOT / "rafdb_aug_dataset.py"
    print(f"Section 2: export throughput ({script.name} export, {images} synthetic test images)")
    if not script.exists():
        print(f"  skipped: {script} does not exist yet")
        return
    import synthetic_faces

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench_rafdb_c_") as tmp:
        tree = Path(tmp) / "RAF-DB"
        start = time.perf_counter()
        synthetic_faces.write_sample_tree(tree, n_train=1, n_test=images, seed=0)
        print(f"  sample tree written in {time.perf_counter() - start:.1f} s")
        print(f"  {'workers':>7s} {'wall s':>8s} {'images/s':>9s} {'files/s':>9s} "
              f"{'276,120 files':>14s} {'peak RSS (tree)':>16s}")
        for workers in sorted({1, cores}):
            out = Path(tmp) / f"out_{workers}"
            command = [sys.executable, str(script), "export", "--rafdb", str(tree), "--out", str(out),
                       "--workers", str(workers), "--format", "jpg"]
            stop, peak = threading.Event(), [0]
            start = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            watcher = threading.Thread(target=_peak_rss_of_tree, args=(process, stop, peak), daemon=True)
            watcher.start()
            _, stderr = process.communicate()
            wall = time.perf_counter() - start
            stop.set()
            watcher.join()
            if process.returncode != 0:
                print(f"  {workers} worker(s): export failed (exit {process.returncode}): {stderr.strip()[-500:]}")
                continue
            files = images * 90
            rss = peak[0] / 2**20 if peak[0] else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"  {workers:7d} {wall:8.1f} {images / wall:9.1f} {files / wall:9.0f} "
                  f"{FULL_FILES / (files / wall) / 60:11.2f} min {rss:13.0f} MiB")
        print("  (peak RSS: summed over the export's process tree with psutil when installed, "
              "else the largest single child's ru_maxrss)")


def main():
    args = parse_args()
    rows, image_kind = bench_corruptions(args.repeats, args.skip_reference)
    print_corruption_table(rows, image_kind, args.repeats)
    if args.csv:
        cli_common.write_rows_csv(args.csv, rows)
    if not args.skip_export:
        bench_export(args.images)


if __name__ == "__main__":
    main()
