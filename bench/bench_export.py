"""Export time as a multiple of the floor (bare encode-and-write), both measured in the same run.

For each repeat this runs, as separate processes and one after another:
``bench/bench_floor.py --kind c``, the same files written through ``dataset_writer.export``
(``bench_floor.py --via-writer``: journal, SHA-256 and manifest, no corruption work; the cost of the
export machinery alone), ``rafdb_aug_dataset.py export`` (all corruptions, severities
1-5), ``bench/bench_floor.py --kind p`` and ``rafdb_perturb_dataset.py export`` (all perturbations).
All use the same sample tree and --workers, and each writes into a fresh folder. It reports the wall
time of every run, including process start-up, and the export/floor ratio of each repeat. It also
reports the peak resident memory of each export: the largest single process, and the sum over the
process tree (the sum counts pages shared by forked workers more than once). Memory is sampled
every 20 ms from /proc. The machine may be shared, so look at the ratios and their spread, not at
the seconds; the CPU-time ratio (user + system seconds of the whole process tree) is the figure least
disturbed by other load. It is also split into user and system time: the system time is mostly the
file system's cost of creating, writing and renaming each file, which differs from one disk to the
next and weighs on both sides alike (``--work-dir /dev/shm`` runs everything on a RAM disk).
Targets: RAF-DB-C <= 1.5x the floor, RAF-DB-P <= 1.3x, peak <= 1 GB.

Example::

    .venv/bin/python bench/bench_export.py --images 100 --workers 2 --repeats 3 --csv export.csv
    # the issue's size: the whole test split (276,120 C files), C only, no machinery-alone run
    .venv/bin/python bench/bench_export.py --images 3068 --kinds c --workers 2 --repeats 1 --skip-writer
    # the same on a RAM disk, without the disk's cost per file
    .venv/bin/python bench/bench_export.py --images 3068 --kinds c --workers 2 --repeats 1 --skip-writer --work-dir /dev/shm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree_rss(pid: int) -> tuple[int, int]:
    """(largest single RSS, summed RSS) in bytes over ``pid`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    stack, seen = [pid], []
    while stack:
        current = stack.pop()
        seen.append(rss.get(current, 0))
        stack.extend(children.get(current, []))
    return max(seen), sum(seen)


def timed(argv: list[str], cwd: Path = ROOT) -> dict:
    """Run ``argv`` in ``cwd``; return its wall time, peak RSS figures and stdout (error on failure)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            single, total = _tree_rss(process.pid)
            peak[0], peak[1] = max(peak[0], single), max(peak[1], total)
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{stderr}")
    return {"seconds": seconds, "cpu_seconds": user + system, "user_seconds": user, "system_seconds": system,
            "peak_rss_mb": peak[0] / 2**20, "peak_tree_rss_mb": peak[1] / 2**20,
            "stdout": stdout, "stderr": stderr}


def _layout(kind: str) -> list[str]:
    """Output patterns of one source image, as the exports name them (see bench/bench_floor.py)."""
    import corruptions
    import perturbations

    if kind == "c":
        return [f"rafdb.test.{name}.{severity}/{{name}}" for name in corruptions.CORRUPTION_NAMES
                for severity in range(1, 6)]
    return [f"rafdb.test.{name}/{{stem}}_{index:02d}.jpg" for name in perturbations.PERTURBATIONS
            for index in range(perturbations.NUM_FRAMES)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="test images in the synthetic sample tree")
    parser.add_argument("--rafdb", default=None, help="use this RAF-DB tree instead of a synthetic sample")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="floor/export pairs per kind")
    parser.add_argument("--kinds", default="c,p", help="c, p or c,p")
    parser.add_argument("--csv", default=None, help="also write one row per run to this CSV file")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="another checkout of this project (e.g. made with `git worktree add DIR main`): "
                             "its export is timed too, in every repeat right after this one's, so that old "
                             "and new code are compared in the same run")
    parser.add_argument("--skip-writer", action="store_true",
                        help="leave out the floor-through-dataset_writer run (saves a third of the time at the "
                             "full size, --images 3068)")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="where the sample tree and the outputs are written (default: the system's temporary "
                             "folder); the floor includes the file system's cost per file, so a RAM disk such as "
                             "/dev/shm shows the ratios without the disk")
    args = parser.parse_args(argv)
    if args.work_dir is not None and not os.path.isdir(args.work_dir):
        parser.error(f"--work-dir {args.work_dir}: no such folder")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_export_", dir=args.work_dir) as tmp:
        rafdb = args.rafdb
        if rafdb is None:
            rafdb = os.path.join(tmp, "RAF-DB")
            subprocess.run([python, "rafdb_dataset.py", "sample", "--out", rafdb, "--train", "1",
                            "--test", str(args.images)], cwd=ROOT, check=True, capture_output=True)
        scripts = {"c": "rafdb_aug_dataset.py", "p": "rafdb_perturb_dataset.py"}
        sys.path.insert(0, str(ROOT))
        layouts = {}
        for kind in args.kinds.split(","):
            layouts[kind] = os.path.join(tmp, f"layout_{kind}.json")
            with open(layouts[kind], "w", encoding="utf-8") as handle:
                json.dump(_layout(kind), handle)
        rows, ratios, cpu_ratios, writer_ratios, baseline_ratios = [], {}, {}, {}, {}
        for repeat in range(args.repeats):
            for kind in args.kinds.split(","):
                out = os.path.join(tmp, f"out_{kind}")
                floor = timed([python, "bench/bench_floor.py", "--rafdb", rafdb, "--out", out, "--kind", kind,
                               "--workers", str(args.workers), "--layout", layouts[kind], "--json"])
                files = json.loads(floor["stdout"])["files"]
                shutil.rmtree(out, ignore_errors=True)
                if args.skip_writer:
                    writer = None
                else:
                    writer = timed([python, "bench/bench_floor.py", "--rafdb", rafdb, "--out", out, "--kind",
                                    kind, "--workers", str(args.workers), "--layout", layouts[kind], "--json",
                                    "--via-writer"])
                    shutil.rmtree(out, ignore_errors=True)
                export = timed([python, scripts[kind], "export", "--rafdb", rafdb, "--out", out,
                                "--workers", str(args.workers), "--quiet"])
                exported = sum(len(names) for _dir, _sub, names in os.walk(out)) - 1  # minus manifest.json
                shutil.rmtree(out, ignore_errors=True)
                runs = (("floor", floor), ("export", export)) if args.skip_writer else \
                    (("floor", floor), ("floor_via_writer", writer), ("export", export))
                baseline = None
                if args.baseline:
                    baseline = timed([python, scripts[kind], "export", "--rafdb", os.path.abspath(rafdb), "--out",
                                      out, "--workers", str(args.workers), "--quiet"], cwd=Path(args.baseline))
                    shutil.rmtree(out, ignore_errors=True)
                    baseline_ratios.setdefault(kind, []).append(
                        (baseline["seconds"] / floor["seconds"], baseline["cpu_seconds"] / floor["cpu_seconds"]))
                    runs = runs + (("baseline_export", baseline),)
                if exported != files:
                    print(f"warning: the floor wrote {files} files, the export {exported}", file=sys.stderr)
                ratio = export["seconds"] / floor["seconds"]
                cpu_ratio = export["cpu_seconds"] / floor["cpu_seconds"]
                ratios.setdefault(kind, []).append(ratio)
                cpu_ratios.setdefault(kind, []).append(cpu_ratio)
                if writer is not None:
                    writer_ratios.setdefault(kind, []).append(writer["cpu_seconds"] / floor["cpu_seconds"])
                for label, run in runs:
                    rows.append({"repeat": repeat, "kind": kind, "run": label, "files": files,
                                 "workers": args.workers, "seconds": round(run["seconds"], 3),
                                 "files_per_s": round(files / run["seconds"], 1),
                                 "cpu_seconds": round(run["cpu_seconds"], 3),
                                 "user_seconds": round(run["user_seconds"], 3),
                                 "system_seconds": round(run["system_seconds"], 3),
                                 "peak_rss_mb": round(run["peak_rss_mb"], 1),
                                 "peak_tree_rss_mb": round(run["peak_tree_rss_mb"], 1),
                                 "ratio_to_floor": round(run["seconds"] / floor["seconds"], 3),
                                 "cpu_ratio_to_floor": round(run["cpu_seconds"] / floor["cpu_seconds"], 3)})
                if baseline is not None:
                    print(f"[{repeat}] RAF-DB-{kind.upper()} baseline ({args.baseline}): export "
                          f"{baseline['seconds']:.2f} s = {baseline['seconds'] / floor['seconds']:.2f}x floor, CPU "
                          f"{baseline['cpu_seconds']:.1f} s = {baseline['cpu_seconds'] / floor['cpu_seconds']:.2f}x",
                          flush=True)
                via_writer = ("" if writer is None else f"floor through dataset_writer {writer['seconds']:.2f} s, "
                              f"CPU {writer['cpu_seconds'] / floor['cpu_seconds']:.2f}x; ")
                print(f"[{repeat}] RAF-DB-{kind.upper()}: floor {floor['seconds']:.2f} s, export "
                      f"{export['seconds']:.2f} s = {ratio:.2f}x floor (CPU {floor['cpu_seconds']:.1f} vs "
                      f"{export['cpu_seconds']:.1f} s = {cpu_ratio:.2f}x; user + system: floor "
                      f"{floor['user_seconds']:.1f} + {floor['system_seconds']:.1f} s, export "
                      f"{export['user_seconds']:.1f} + {export['system_seconds']:.1f} s; "
                      f"{via_writer}{files} files, {args.workers} workers; "
                      f"export peak RSS {export['peak_rss_mb']:.0f} MB per process, "
                      f"{export['peak_tree_rss_mb']:.0f} MB summed)", flush=True)
    targets = {"c": 1.5, "p": 1.3}

    def machinery(kind: str) -> str:
        values = writer_ratios.get(kind)
        return f"{statistics.median(values):.2f}x" if values else "- (--skip-writer)"

    print("\nexport / floor          wall: median  min    max   | CPU: median | machinery alone (CPU) | target")
    for kind, values in ratios.items():
        print(f"RAF-DB-{kind.upper():<17} {statistics.median(values):>11.2f}x {min(values):.2f}x {max(values):.2f}x | "
              f"{statistics.median(cpu_ratios[kind]):>10.2f}x | {machinery(kind):>21} | "
              f"<= {targets[kind]}x")
    for kind, values in baseline_ratios.items():
        print(f"RAF-DB-{kind.upper()} baseline export   {statistics.median(v[0] for v in values):>6.2f}x "
              f"{min(v[0] for v in values):.2f}x {max(v[0] for v in values):.2f}x | "
              f"{statistics.median(v[1] for v in values):>10.2f}x |")
    if args.csv:
        import cli_common  # ROOT is on sys.path (above)

        cli_common.write_rows_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
