"""Benchmark: reading a full-size FER2013 pixel CSV, streamed, against the original's way.

Writes a synthetic ``fer2013.csv`` of --rows rows (default 35,887, ~300 MB, the real file's
size and number format: 2,304 integers 0..255 per row; 512 distinct rows repeated), then times,
each in a fresh process that reports its peak RSS:

  ours        datasets.fer2013.read_pixel_csv: the file streamed into a uint8 (N, 48, 48) array,
              every value checked (2,304 integers in 0..255 per row)
  reference   csv.reader + np.array(rows), the original's reader (docs/BENCHMARK.md §9.1, §9.8:
              a fixed-width unicode array, ~3.3 GB for the full file); then "+decode" adds the
              original's per-row conversion of the pixels field to a uint8 48x48 image.

The reference reads the first --reference-rows rows (default 5,000; 'all' for the whole file,
which needs ~5 GB of memory) and its time is scaled linearly to --rows; both numbers are printed.

Example::

    .venv/bin/python bench/bench_fer_read.py                 # ~1 min on 2 cores
    .venv/bin/python bench/bench_fer_read.py --csv fer_read.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

OURS = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from datasets.fer2013 import read_pixel_csv
start = time.perf_counter()
table = read_pixel_csv({path!r}, progress=False)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "rows": int(table.present.sum()), "checksum": int(table.pixels.sum(dtype="int64")),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

REFERENCE = """
import csv, json, resource, time, itertools
import numpy as np
start = time.perf_counter()
with open({path!r}, newline="") as handle:
    rows = list(itertools.islice(csv.reader(handle, delimiter=",", quotechar="|"), {limit}))
data = np.array(rows)
read = time.perf_counter() - start
checksum = 0
for row in data[1:]:
    image = np.array(row[1].split(" "), dtype=np.uint8).reshape(48, 48, 1)
    checksum += int(image.sum(dtype="int64"))
total = time.perf_counter() - start
print(json.dumps({{"seconds": read, "seconds_decode": total, "rows": len(data) - 1, "checksum": checksum,
                  "array_mb": data.nbytes / 2**20,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    usages = ("Training", "PublicTest", "PrivateTest")
    distinct = [" ".join(map(str, rng.integers(0, 256, 2304).tolist())) for _ in range(512)]
    with open(path, "w") as handle:
        handle.write("emotion,pixels,Usage\n")
        for row in range(rows):
            handle.write(f"{row % 7},{distinct[row % 512]},{usages[0 if row < 0.8 * rows else 1 + row % 2]}\n")


def run(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=35887, help="rows of the synthetic fer2013.csv")
    parser.add_argument("--reference-rows", default="5000", help="rows the reference reads, or 'all'")
    parser.add_argument("--repeats", type=int, default=2, help="runs of ours (the fastest is kept)")
    parser.add_argument("--csv", type=Path, help="also write the results as CSV here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        write_csv(path, args.rows)
        size_mb = os.path.getsize(path) / 2**20
        print(f"synthetic fer2013.csv: {args.rows} rows, {size_mb:.0f} MB")
        ours = min((run(OURS.format(root=str(ROOT), path=str(path))) for _ in range(args.repeats)),
                   key=lambda r: r["seconds"])
        limit = args.rows + 1 if args.reference_rows == "all" else int(args.reference_rows) + 1
        reference = run(REFERENCE.format(path=str(path), limit=limit))
    scale = args.rows / reference["rows"]
    ref_read = reference["seconds"] * scale
    ref_decode = reference["seconds_decode"] * scale
    lines = [
        ("ours: read_pixel_csv (streamed, validated, uint8)", ours["seconds"], ours["peak_rss_mb"], 1.0),
        (f"reference: csv.reader + np.array(rows) [{reference['rows']} rows, x{scale:.2f}]",
         ref_read, reference["peak_rss_mb"], ref_read / ours["seconds"]),
        ("reference + the original's per-row decode to uint8", ref_decode, reference["peak_rss_mb"],
         ref_decode / ours["seconds"]),
    ]
    print(f"{'method':<66} {'seconds':>8} {'peak RSS MB':>12} {'ours faster':>12}")
    for name, seconds, rss, ratio in lines:
        print(f"{name:<66} {seconds:8.2f} {rss:12.0f} {ratio:11.1f}x")
    print(f"reference array for {reference['rows']} rows: {reference['array_mb']:.0f} MB "
          f"(~{reference['array_mb'] * scale / 1024:.1f} GB for {args.rows}); ours holds {args.rows * 2304 / 2**20:.0f} MB")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "seconds", "peak_rss_mb", "ours_faster"])
            writer.writerows([(n, f"{s:.3f}", f"{r:.0f}", f"{q:.2f}") for n, s, r, q in lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
