"""Benchmark: evaluation throughput through the real input pipeline vs model.predict in memory.

For the project's small CNN (``models.build_model("smallcnn", 100)``, random init, saved to a
temporary .hdf5 and loaded back with ``checkpoints.py`` as the evaluation scripts do), in one run:

1. RAF-DB-C path: ``Classifier.predict_paths`` over the aligned test JPEGs of a synthetic sample
   tree (files -> parallel decode -> cut/resize -> batches -> predictions), against
   ``model.predict`` on the same images already decoded and resized in memory (batch 64).
2. RAF-DB-P path (only if ``eval_perturbed_rafdb.py`` exists): the prediction path that script
   uses (``input_pipeline.make_dataset`` with whole 30-frame sequences per batch, crop exact,
   then ``Classifier.predict_dataset``) on a tiny perturbed tree of --sequences x 30 frames,
   against ``model.predict`` on the same frames in memory with the same batch size.

3. Runner variants (``inference.Runner``, what ``--jit``, ``--adapt bn`` and ``--mixed-precision``
   select) on the RAF-DB-C path, each as a ratio to the plain pipeline measured in the same run:
   XLA (``--jit``; smallcnn with scale01 preprocessing, since XLA cannot compile the
   full_normalization layer), BatchNorm adaptation (one extra training-mode pass per folder, so about 2x the
   time is expected), and float16 (only when a GPU is visible or TF_ENABLE_ONEDNN_OPTS=0).

Each timing is the best of --repeats runs after one warm-up run (tracing). The target is a ratio
pipeline / in-memory of at least 90 %.

Example::

    DNNL_MAX_CPU_ISA=AVX2 .venv/bin/python bench/bench_eval.py --images 640 --sequences 20 --csv bench_eval.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import cli_common  # noqa: E402

TARGET = 0.90
FRAMES = 30


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=640, help="synthetic aligned test images")
    parser.add_argument("--sequences", type=int, default=20,
                        help="perturbed sequences (x 30 frames) for the RAF-DB-P section")
    parser.add_argument("--batch", type=int, default=64, help="evaluation batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    return parser.parse_args(argv)


def best_time(function, repeats: int) -> float:
    function()  # warm-up: tracing, thread pools, file cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging()
    logging.getLogger("fer").setLevel(logging.WARNING)
    import tensorflow as tf

    import checkpoints
    import input_pipeline
    import models
    import rafdb_dataset
    import synthetic_faces

    rows, variants = [], []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmp = Path(tmp)
        root = synthetic_faces.write_sample_tree(tmp / "RAF-DB", n_train=7, n_test=args.images,
                                                 seed=0)
        run_dir = tmp / "run"
        run_dir.mkdir()
        model = models.build_model("smallcnn", 100)
        model_path = run_dir / "checkpoint.01.hdf5"
        model.save(model_path)
        (run_dir / "run.json").write_text(json.dumps({
            "net": "smallcnn", "input_shape": [100, 100, 3], "preprocessing": "full_normalization",
            "preprocessing_in_model": True, "crop": "exact",
            "class_names": list(rafdb_dataset.CLASS_NAMES)}))
        classifier = checkpoints.adapt(checkpoints.load_classifier(model_path), model_path,
                                       batch_size=args.batch)
        loaded = classifier.model
        paths = rafdb_dataset.list_aligned(root, "test")
        n = len(paths)

        # --- Section 1: clean / RAF-DB-C evaluation path --------------------------------------
        in_memory = np.stack([input_pipeline.load_for_model(rafdb_dataset.read_image(path),
                                                            (100, 100)) for path in paths])
        tensor = tf.constant(in_memory)
        pipeline_s = best_time(lambda: classifier.predict_paths(paths), args.repeats)
        memory_s = best_time(lambda: loaded.predict(tensor, batch_size=args.batch, verbose=0),
                             args.repeats)
        same = np.array_equal(np.argmax(classifier.predict_paths(paths), 1),
                              np.argmax(loaded.predict(tensor, batch_size=args.batch, verbose=0), 1))
        rows.append(("RAF-DB-C eval (files -> predictions)", n, args.batch, n / pipeline_s,
                     n / memory_s, same))

        # --- Section 2: RAF-DB-P prediction path ----------------------------------------------
        if (ROOT / "eval_perturbed_rafdb.py").is_file():
            folder = tmp / "perturbed" / "rafdb.test.p_translate"
            folder.mkdir(parents=True)
            frame_paths, frames = [], []
            sources = paths[: args.sequences] if args.sequences <= n else paths
            for path in sources:
                image = rafdb_dataset.read_image(path)
                name = path.name.replace("_aligned.jpg", "")
                for frame in range(FRAMES):
                    shifted = np.roll(image, frame - FRAMES // 2, axis=1)
                    target = folder / f"{name}_{frame:02d}.jpg"
                    target.write_bytes(rafdb_dataset.encode_image(shifted, "jpg"))
                    frame_paths.append(str(target))
                    frames.append(input_pipeline.load_for_model(
                        rafdb_dataset.decode_image(target.read_bytes(), str(target)), (100, 100)))
            batch = max(1, args.batch // FRAMES) * FRAMES  # as eval_perturbed_rafdb.py batches

            def perturbed_pipeline():
                dataset = input_pipeline.make_dataset(frame_paths, None, image_size=(100, 100),
                                                      channels=3, batch_size=batch, crop="exact")
                return classifier.predict_dataset(dataset)

            frames_tensor = tf.constant(np.stack(frames))
            pipeline_p = best_time(perturbed_pipeline, args.repeats)
            memory_p = best_time(lambda: loaded.predict(frames_tensor, batch_size=batch, verbose=0),
                                 args.repeats)
            same_p = np.array_equal(np.argmax(perturbed_pipeline(), 1),
                                    np.argmax(loaded.predict(frames_tensor, batch_size=batch,
                                                             verbose=0), 1))
            rows.append(("RAF-DB-P eval (frames -> predictions)", len(frame_paths), batch,
                         len(frame_paths) / pipeline_p, len(frame_paths) / memory_p, same_p))
        else:
            print("RAF-DB-P section skipped: eval_perturbed_rafdb.py does not exist", file=sys.stderr)

        # --- Section 3: runner variants on the RAF-DB-C path ------------------------------------
        import inference

        # full_normalization's histogram equalisation cannot be compiled by XLA: the variants use
        # the same network with scale01 preprocessing in the model.
        variant_path = run_dir / "scale01.keras"
        models.build_model("smallcnn", 100, preprocessing="scale01").save(variant_path)
        classifier = checkpoints.adapt(checkpoints.load_classifier(variant_path), variant_path,
                                       batch_size=args.batch)
        plain_runner = inference.Runner(classifier)
        plain_s = best_time(lambda: plain_runner.predict(classifier.make_dataset(paths)), args.repeats)
        variants.append(("plain pipeline (reference)", n / plain_s, 1.0))
        jit_runner = inference.Runner(classifier, jit=True)
        jit_s = best_time(lambda: jit_runner.predict(classifier.make_dataset(paths)), args.repeats)
        variants.append(("--jit (XLA)", n / jit_s, plain_s / jit_s))
        adapt_runner = inference.Runner(classifier, adapt="bn")

        def adapted():
            adapt_runner.adapt_to(classifier.make_dataset(paths))
            return adapt_runner.predict(classifier.make_dataset(paths))

        adapt_s = best_time(adapted, args.repeats)
        variants.append(("--adapt bn (pass + predict)", n / adapt_s, plain_s / adapt_s))
        if tf.config.list_logical_devices("GPU") or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
            half_runner = inference.Runner(classifier, mixed_precision=True)
            half_s = best_time(lambda: half_runner.predict(classifier.make_dataset(paths)), args.repeats)
            variants.append(("--mixed-precision (float16)", n / half_s, plain_s / half_s))

    header = f"{'path':<40}{'images':>8}{'batch':>7}{'pipeline img/s':>16}{'predict img/s':>15}" \
             f"{'ratio':>8}{'target':>8}{'same argmax':>13}"
    print(f"smallcnn 100 px, random init, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
          f"DNNL_MAX_CPU_ISA={os.environ.get('DNNL_MAX_CPU_ISA', 'unset')}")
    print(header)
    print("-" * len(header))
    for name, count, batch, pipeline_rate, memory_rate, same in rows:
        ratio = pipeline_rate / memory_rate
        print(f"{name:<40}{count:>8}{batch:>7}{pipeline_rate:>16.1f}{memory_rate:>15.1f}"
              f"{ratio:>7.0%} {'ok' if ratio >= TARGET else 'MISS':>7}{str(same):>13}")
    print()
    print(f"{'runner variant (RAF-DB-C path)':<40}{'img/s':>10}{'speed vs plain':>16}")
    for name, rate, ratio in variants:
        print(f"{name:<40}{rate:>10.1f}{ratio:>15.2f}x")
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "images", "batch", "pipeline_images_per_s",
                         "predict_images_per_s", "ratio", "same_argmax"])
        for name, count, batch, pipeline_rate, memory_rate, same in rows:
            writer.writerow([name, count, batch, f"{pipeline_rate:.1f}", f"{memory_rate:.1f}",
                             f"{pipeline_rate / memory_rate:.3f}", same])
        for name, rate, ratio in variants:
            writer.writerow([name, n, args.batch, f"{rate:.1f}", "", f"{ratio:.3f}", ""])
        cli_common.atomic_write_text(args.csv, buffer.getvalue())
    return 0


if __name__ == "__main__":
    cli_common.run_main(main)
