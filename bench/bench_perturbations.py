"""Speed of RAF-DB-P: frames per second per perturbation, and of the whole export (target: under 5 minutes
for the real RAF-DB-P on 2 cores).

Part 1 times every perturbation in-process (and the ImageNet-P extras p_zoom_blur and p_snow against
references written the ImageNet-P way, bench/reference_corruptions.py) on ``--faces`` aligned synthetic faces: the perturbation
alone, and with the JPEG encoding of its frames. Part 2 runs ``rafdb_perturb_dataset.py export``
as a subprocess on a synthetic sample tree of ``--images`` test images, with 1 worker and with
all cores, and extrapolates to the full RAF-DB-P (3,068 x 10 x 30 = 920,400 frames). Peak memory
is the largest resident set of any process of a run (``getrusage(RUSAGE_CHILDREN).ru_maxrss``,
measured in a fresh wrapper process per run).

Example::

    .venv/bin/python bench/bench_perturbations.py --faces 8 --images 200 --csv bench_p.csv
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import numpy as np  # noqa: E402

import perturbations  # noqa: E402
import rafdb_dataset  # noqa: E402
import synthetic_faces  # noqa: E402
from cli_common import ArgumentParser, item_rng  # noqa: E402

FULL_FRAMES = 3068 * 10 * 30  # the real RAF-DB-P
TARGET_SECONDS = 300  # the target: under 5 minutes on 2 cores

# Runs the command given as arguments and prints the peak RSS (KiB) of its process tree on stderr.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def sample_faces(count: int) -> list[np.ndarray]:
    faces = []
    for index in range(1, count + 1):
        sample = synthetic_faces.make_sample(0, "test", index, index % 7)
        faces.append(perturbations.align_face(sample.original, sample.landmarks))
    return faces


def time_perturbations(faces: list[np.ndarray], repeats: int) -> list[dict]:
    rows = []
    for name in perturbations.PERTURBATIONS:
        perturbations.perturb(faces[0], name, item_rng(0, "bench", name, 0, "warm-up"))  # caches
        compute = encode = 0.0
        for _ in range(repeats):
            for k, face in enumerate(faces):
                rng = item_rng(0, "bench", name, 0, str(k))
                start = time.perf_counter()
                frames = perturbations.perturb(face, name, rng)
                middle = time.perf_counter()
                for frame in frames:
                    rafdb_dataset.encode_image(frame, "jpg")
                compute += middle - start
                encode += time.perf_counter() - middle
        n = repeats * len(faces) * perturbations.NUM_FRAMES
        rows.append({"perturbation": name, "frames": n, "ms_per_frame": 1e3 * compute / n,
                     "frames_per_s": n / compute, "with_jpeg_frames_per_s": n / (compute + encode)})
    return rows


def run_export(tree: Path, out: Path, workers: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-c", _RSS_WRAPPER, sys.executable, str(REPO / "rafdb_perturb_dataset.py"),
               "export", "--rafdb", str(tree), "--out", str(out), "--workers", str(workers), "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"export failed:\n{result.stderr}")
    rss_kib = int(next(line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK_RSS_KIB")))
    frames = sum(1 for _ in out.rglob("*.jpg"))
    return {"workers": workers, "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds,
            "full_minutes": FULL_FRAMES / (frames / seconds) / 60, "peak_rss_mib": rss_kib / 1024}


def time_p_extras(faces: list[np.ndarray]) -> list[dict]:
    """The ImageNet-P extras with a reference written the ImageNet-P way
    (bench/reference_corruptions.py: scipy zoom per frame, the shifted-copies motion blur loop):
    ms per 30-frame sequence (fastest of the faces) and the largest difference in grey levels."""
    import perturbations_extra
    import reference_corruptions

    references = {"p_zoom_blur": lambda face, seed: reference_corruptions.ref_p_zoom_blur(face),
                  "p_snow": lambda face, seed: reference_corruptions.ref_p_snow(face, np.random.default_rng(seed))}
    rows = []
    for name, reference in references.items():
        function = perturbations_extra.PERTURBATIONS[name]
        function(faces[0], np.random.default_rng(0))  # warm-up: per-size operators are cached per process
        ours_ms, ref_ms, diff = [], [], 0
        for seed, face in enumerate(faces):
            start = time.perf_counter()
            ours = function(face, np.random.default_rng(seed))
            ours_ms.append(1e3 * (time.perf_counter() - start))
            start = time.perf_counter()
            ref = reference(face, seed)
            ref_ms.append(1e3 * (time.perf_counter() - start))
            diff = max(diff, int(np.abs(ours.astype(int) - ref).max()))
        rows.append({"perturbation": name, "ours_ms": min(ours_ms), "ref_ms": min(ref_ms), "max_diff": diff})
    return rows


def main() -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=8, help="faces timed in-process per perturbation")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the faces in part 1")
    parser.add_argument("--images", type=int, default=200,
                        help="test images of the sample tree for the export runs (the full 3,068 writes "
                             "920,400 files, about 4.6 GB, twice; the default is extrapolated)")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated worker counts for the export runs")
    parser.add_argument("--skip-export", action="store_true", help="only part 1 (and the P extras)")
    parser.add_argument("--workdir", default=None, help="folder for the sample tree and outputs (default: a temporary one)")
    parser.add_argument("--csv", default=None, help="also write both tables to this CSV file")
    args = parser.parse_args()

    cpu = os.cpu_count() or 1
    print(f"RAF-DB-P benchmark: {cpu} CPU core(s), numpy {np.__version__}, python {sys.version.split()[0]}")
    rows = time_perturbations(sample_faces(args.faces), args.repeats)
    print(f"\nin-process, {args.faces} aligned synthetic faces x {args.repeats} pass(es), 1 core:")
    print(f"{'perturbation':<18} {'ms/frame':>9} {'frames/s':>9} {'+JPEG f/s':>10}")
    for row in rows:
        print(f"{row['perturbation']:<18} {row['ms_per_frame']:>9.3f} {row['frames_per_s']:>9.0f} "
              f"{row['with_jpeg_frames_per_s']:>10.0f}")
    mean_ms = float(np.mean([1e3 / row["with_jpeg_frames_per_s"] for row in rows]))
    print(f"{'mean (10 equal)':<18} {'':>9} {'':>9} {1e3 / mean_ms:>10.0f}  ({mean_ms:.3f} ms/frame with JPEG)")

    extras = time_p_extras(sample_faces(min(args.faces, 3)))
    print(f"\nImageNet-P extras, ms per {perturbations.NUM_FRAMES}-frame sequence, 1 core, against a reference "
          f"written the ImageNet-P way:")
    print(f"{'perturbation':<18} {'ours ms':>8} {'ref ms':>8} {'ref/ours':>9} {'max |diff|':>11}")
    for row in extras:
        print(f"{row['perturbation']:<18} {row['ours_ms']:>8.1f} {row['ref_ms']:>8.1f} "
              f"{row['ref_ms'] / row['ours_ms']:>8.1f}x {row['max_diff']:>11d}")

    exports = []
    if not args.skip_export:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_p."))
        tree = workdir / "RAF-DB"
        if not (tree / rafdb_dataset.ORIGINAL_DIR).is_dir():
            start = time.perf_counter()
            synthetic_faces.write_sample_tree(tree, n_train=1, n_test=args.images, seed=0)
            print(f"\nsample tree of {args.images} test images built in {time.perf_counter() - start:.1f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            exports.append(run_export(tree, workdir / f"out_w{workers}", workers))
        print(f"\nwhole export (subprocess, {args.images} images x 10 x 30 frames, JPEG written), "
              f"extrapolated to {FULL_FRAMES:,} frames:")
        print(f"{'workers':>7} {'frames':>8} {'seconds':>8} {'frames/s':>9} {'full RAF-DB-P':>14} {'peak RSS':>9}")
        for row in exports:
            print(f"{row['workers']:>7} {row['frames']:>8} {row['seconds']:>8.1f} {row['frames_per_s']:>9.0f} "
                  f"{row['full_minutes']:>10.1f} min {row['peak_rss_mib']:>5.0f} MiB")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        best = min(row["full_minutes"] for row in exports)
        print(f"target: full RAF-DB-P under {TARGET_SECONDS / 60:.0f} min on 2 cores -> "
              f"{'met' if best * 60 < TARGET_SECONDS else 'NOT met'} ({best:.1f} min best)")

    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["table", "key", "frames", "ms_per_frame", "frames_per_s", "with_jpeg_frames_per_s",
                             "seconds", "full_minutes", "peak_rss_mib"])
            for row in rows:
                writer.writerow(["perturbation", row["perturbation"], row["frames"], f"{row['ms_per_frame']:.4f}",
                                 f"{row['frames_per_s']:.1f}", f"{row['with_jpeg_frames_per_s']:.1f}", "", "", ""])
            for row in extras:
                writer.writerow(["p_extra", row["perturbation"], perturbations.NUM_FRAMES,
                                 f"{row['ours_ms'] / perturbations.NUM_FRAMES:.4f}", "", "", "", "", ""])
            for row in exports:
                writer.writerow(["export", f"workers={row['workers']}", row["frames"],
                                 f"{1e3 / row['frames_per_s']:.4f}", f"{row['frames_per_s']:.1f}", "",
                                 f"{row['seconds']:.2f}", f"{row['full_minutes']:.2f}", f"{row['peak_rss_mib']:.1f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
