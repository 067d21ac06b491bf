"""Training throughput: the real input pipeline versus in-memory tensors, same model and batch.

For each network, timed ``model.fit`` runs of ``--steps`` steps (after ``--warmup`` untimed steps
for tracing; ``--repeats`` interleaved runs per side, the best of each reported): (1) ``input_pipeline.make_dataset`` from the JPEG files with the default
augmentation (decode, rotate/skew/jitter, cut, contrast/brightness, flip, resize) and shuffling;
(2) the same model on already-resized float32 tensors held in memory (``tf.data`` from tensors,
no augmentation). The ratio pipeline / in-memory shows whether the pipeline starves the model
(target: >= 97 %). "ratio" compares the best wall times; "CPU" compares the best CPU times of this
process (in-memory / pipeline), which a machine shared with other jobs disturbs far less; "CPU
ms/img" gives both CPU times per image (pipeline/in-memory). Without ``--rafdb`` a synthetic tree of ``--images`` training images is written
to a temporary folder first.

Example::

    python3 bench/bench_train.py --nets smallcnn,mobilenetv2 --input-size 100 --steps 40 --csv bench_train.csv
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")  # BENCHMARK.md §4.9, before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cli_common import ArgumentParser, UserError, run_main, setup_logging  # noqa: E402

FIELDS = ("net", "input_size", "batch", "steps", "pipeline_img_s", "in_memory_img_s", "ratio", "cpu_ratio",
          "pipeline_cpu_ms", "in_memory_cpu_ms", "device", "threads")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--nets", default="smallcnn,mobilenetv2", help="comma-separated network names")
    parser.add_argument("--input-size", type=int, default=100, help="input side in px")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved timed runs per side; the best of each is reported")
    parser.add_argument("--rafdb", type=Path, default=None,
                        help="RAF-DB tree to read (default: a temporary synthetic tree)")
    parser.add_argument("--images", type=int, default=512, help="training images of the synthetic tree")
    parser.add_argument("--workers", type=int, default=None, help="parallel map calls (default: automatic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling and augmentation")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    for flag in ("batch", "steps", "images", "input_size", "repeats"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: expected a positive integer")
    return args


def time_fit(model, dataset, steps: int, warmup: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``steps`` training steps, after ``warmup``
    untimed ones. CPU time is the robust measure on a machine shared with other jobs."""
    if warmup:
        model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start, time.process_time() - cpu


def bench_net(net: str, args, paths, labels) -> dict:
    import keras
    import tensorflow as tf

    import augmentations
    import input_pipeline
    import models
    import rafdb_dataset

    size = args.input_size
    keras.utils.set_random_seed(args.seed)
    model = models.build_model(net, size)
    model.compile(optimizer=keras.optimizers.SGD(0.002), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    kwargs = {"num_parallel_calls": args.workers} if args.workers else {}
    pipeline = input_pipeline.make_dataset(
        paths, labels, image_size=(size, size), batch_size=args.batch, shuffle=True, seed=args.seed,
        augment=augmentations.make_train_transform("default"), **kwargs).repeat()
    count = min(len(paths), args.batch * 4)
    images = np.stack([input_pipeline.load_for_model(rafdb_dataset.read_image(path), (size, size))
                       for path in paths[:count]])
    in_memory = (tf.data.Dataset.from_tensor_slices((images, labels[:count])).batch(args.batch)
                 .repeat().prefetch(tf.data.AUTOTUNE))
    # Interleaved repeats, best of each: a background burst then hits both sides alike.
    memory, piped = [], []
    for repeat in range(args.repeats):
        warmup = args.warmup if repeat == 0 else 0
        memory.append(time_fit(model, in_memory, args.steps, warmup))
        piped.append(time_fit(model, pipeline, args.steps, warmup))
    seconds_memory, seconds_pipeline = min(m[0] for m in memory), min(p[0] for p in piped)
    cpu_memory, cpu_pipeline = min(m[1] for m in memory), min(p[1] for p in piped)
    processed = args.steps * args.batch
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return {"net": net, "input_size": size, "batch": args.batch, "steps": args.steps,
            "pipeline_img_s": processed / seconds_pipeline, "in_memory_img_s": processed / seconds_memory,
            "ratio": seconds_memory / seconds_pipeline, "cpu_ratio": cpu_memory / cpu_pipeline,
            "pipeline_cpu_ms": 1000 * cpu_pipeline / processed, "in_memory_cpu_ms": 1000 * cpu_memory / processed,
            "device": device, "threads": os.cpu_count()}


def format_table(rows) -> str:
    lines = [f"{'net':<14}{'size':>5}{'batch':>6}{'steps':>6}{'pipeline img/s':>16}{'in-memory img/s':>17}"
             f"{'ratio':>8}{'CPU':>6}{'CPU ms/img':>13}  device"]
    for row in rows:
        cpu_ms = f"{row['pipeline_cpu_ms']:.1f}/{row['in_memory_cpu_ms']:.1f}"
        lines.append(f"{row['net']:<14}{row['input_size']:>5}{row['batch']:>6}{row['steps']:>6}"
                     f"{row['pipeline_img_s']:>16.1f}{row['in_memory_img_s']:>17.1f}{row['ratio']:>7.0%}"
                     f"{row['cpu_ratio']:>6.0%}{cpu_ms:>13}  {row['device']} ({row['threads']} cores)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from sample_for_bench import parse_nets, training_images

    nets = parse_nets(args.nets)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        paths, labels = training_images(args.rafdb, tmp, args.images, args.seed)
        rows = [bench_net(net, args, paths, labels) for net in nets]
    table = format_table(rows)
    print(table)
    if args.csv:
        from cli_common import atomic_path

        with atomic_path(args.csv) as tmp_csv, open(tmp_csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    run_main(main)
