"""AugMix + JSD training throughput (docs/BENCHMARK.md §11.2) against the default augmentation.

Per network, same model, batch and steps (after ``--warmup`` untimed steps for tracing;
``--repeats`` interleaved runs per side, the best of each reported), in training images per second
(one image = one label; with JSD it goes through the network three times):

1. ``default``: the ordinary step on ``input_pipeline.make_dataset`` with the default augmentation;
2. ``jsd pipeline``: ``robust_training.JSDModel`` on ``robust_training.make_views_dataset`` (decode,
   flip, two AugMix mixtures, three resizes per image);
3. ``jsd in-memory``: the same JSD step on the same kind of three-view batches already held in
   memory, so no augmentation work at all.

Reported ratios: ``jsd/default`` (what AugMix + JSD costs in training speed; the three forward and
backward passes alone make it about 1/3 when the model dominates) and ``pipeline/in-memory`` of the
JSD step (whether the AugMix pipeline starves the model; target >= 90 %). The augmentation work
alone is also timed on one thread: ms per image for the default transform and for the three AugMix
views. Without ``--rafdb`` a synthetic tree of ``--images`` training images is written first.

Example::

    python3 bench/bench_augmix.py --nets smallcnn --input-size 64 --steps 20 --csv bench_augmix.csv
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")  # docs/BENCHMARK.md §4.9, before TensorFlow is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cli_common import ArgumentParser, UserError, run_main, setup_logging  # noqa: E402

FIELDS = ("net", "input_size", "batch", "steps", "default_img_s", "jsd_pipeline_img_s", "jsd_in_memory_img_s",
          "jsd_vs_default", "pipeline_vs_in_memory", "default_aug_ms", "augmix_views_ms", "device", "threads")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--nets", default="smallcnn", help="comma-separated network names")
    parser.add_argument("--input-size", type=int, default=64, help="input side in px")
    parser.add_argument("--batch", type=int, default=32, help="batch size (images; x3 views with JSD)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved timed runs per side; the best of each is reported")
    parser.add_argument("--rafdb", type=Path, default=None,
                        help="RAF-DB tree to read (default: a temporary synthetic tree)")
    parser.add_argument("--images", type=int, default=256, help="training images of the synthetic tree")
    parser.add_argument("--workers", type=int, default=None, help="parallel map calls (default: automatic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling and augmentation")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    for flag in ("batch", "steps", "images", "input_size", "repeats"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: expected a positive integer")
    return args


def time_fit(model, dataset, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` training steps, after ``warmup`` untimed ones."""
    if warmup:
        model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start


def augmentation_ms(paths, count: int = 100) -> tuple[float, float]:
    """Milliseconds per image of the default transform and of the three AugMix views (one thread)."""
    import augmentations
    import rafdb_dataset

    images = [rafdb_dataset.read_image(path) for path in paths[:count]]
    default = augmentations.make_train_transform("default")
    views = augmentations.AugMixViews()
    result = []
    for transform in (default, views):
        start = time.perf_counter()
        for index, image in enumerate(images):
            transform(image, np.random.default_rng(index))
        result.append(1000 * (time.perf_counter() - start) / len(images))
    return result[0], result[1]


def bench_net(net: str, args, paths, labels) -> dict:
    import keras
    import tensorflow as tf

    import augmentations
    import input_pipeline
    import models
    import rafdb_dataset
    import robust_training

    size = args.input_size
    kwargs = {"num_parallel_calls": args.workers} if args.workers else {}

    def compiled():
        keras.utils.set_random_seed(args.seed)
        model = models.build_model(net, size)
        model.compile(optimizer=keras.optimizers.SGD(0.002), loss="categorical_crossentropy",
                      metrics=["categorical_accuracy"])
        return model

    plain = compiled()
    jsd = robust_training.wrap_for_jsd(compiled())
    default_ds = input_pipeline.make_dataset(
        paths, labels, image_size=(size, size), batch_size=args.batch, shuffle=True, seed=args.seed,
        augment=augmentations.make_train_transform("default"), **kwargs).repeat()
    views = augmentations.AugMixViews()
    views_ds = robust_training.make_views_dataset(paths, labels, image_size=(size, size), views=views,
                                                  batch_size=args.batch, seed=args.seed, **kwargs).repeat()
    count = min(len(paths), args.batch * 4)
    stacked = np.stack([
        np.stack([input_pipeline.load_for_model(view, (size, size)) for view in
                  views(rafdb_dataset.read_image(path), np.random.default_rng(index))])
        for index, path in enumerate(paths[:count])])
    in_memory = (tf.data.Dataset.from_tensor_slices((stacked, labels[:count])).batch(args.batch)
                 .repeat().prefetch(tf.data.AUTOTUNE))
    best = {"default": float("inf"), "pipeline": float("inf"), "memory": float("inf")}
    for repeat in range(args.repeats):  # interleaved: a background burst hits every side alike
        warmup = args.warmup if repeat == 0 else 0
        best["memory"] = min(best["memory"], time_fit(jsd, in_memory, args.steps, warmup))
        best["pipeline"] = min(best["pipeline"], time_fit(jsd, views_ds, args.steps, warmup))
        best["default"] = min(best["default"], time_fit(plain, default_ds, args.steps, warmup))
    processed = args.steps * args.batch
    default_ms, views_ms = augmentation_ms(paths)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    return {"net": net, "input_size": size, "batch": args.batch, "steps": args.steps,
            "default_img_s": processed / best["default"], "jsd_pipeline_img_s": processed / best["pipeline"],
            "jsd_in_memory_img_s": processed / best["memory"],
            "jsd_vs_default": best["default"] / best["pipeline"],
            "pipeline_vs_in_memory": best["memory"] / best["pipeline"],
            "default_aug_ms": default_ms, "augmix_views_ms": views_ms, "device": device,
            "threads": os.cpu_count()}


def format_table(rows) -> str:
    lines = [f"{'net':<12}{'size':>5}{'batch':>6}{'default img/s':>15}{'jsd img/s':>11}{'jsd mem img/s':>15}"
             f"{'jsd/def':>9}{'pipe/mem':>10}{'aug ms def/augmix':>19}  device"]
    for row in rows:
        lines.append(f"{row['net']:<12}{row['input_size']:>5}{row['batch']:>6}{row['default_img_s']:>15.1f}"
                     f"{row['jsd_pipeline_img_s']:>11.1f}{row['jsd_in_memory_img_s']:>15.1f}"
                     f"{row['jsd_vs_default']:>8.0%}{row['pipeline_vs_in_memory']:>9.0%}"
                     f"{row['default_aug_ms']:>10.2f}/{row['augmix_views_ms']:<8.2f}"
                     f"  {row['device']} ({row['threads']} cores)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from sample_for_bench import parse_nets, training_images

    nets = parse_nets(args.nets)
    with tempfile.TemporaryDirectory(prefix="bench_augmix_") as tmp:
        paths, labels = training_images(args.rafdb, tmp, args.images, args.seed)
        rows = [bench_net(net, args, paths, labels) for net in nets]
    print(format_table(rows))
    if args.csv:
        from cli_common import atomic_path

        with atomic_path(args.csv) as tmp_csv, open(tmp_csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    run_main(main)
