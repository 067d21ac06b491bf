"""Training-step cost of BlurPool (``--lpf 1/3/5``) against ``--lpf 0``, next to the FLOP ratio.

For every network and lpf this builds the model (random weights) and times ``train_on_batch``
(Adam, categorical cross-entropy, random inputs) over --steps steps after --warmup untimed ones.
The lpf values are measured in turns, and each takes the best of --repeats passes, so a burst of
background load hits every variant alike. Each time is reported as a ratio to lpf 0 next to the
forward-pass FLOP ratio from TensorFlow's graph profiler. BlurPool's reflect padding is timed in
both implementations: ``pad`` (the backend's mirror pad, the default) and ``gather`` (two index
gathers, the former code, whose gradient is a scatter); ``--modes ...,reorder`` also times the
blur placed before 1x1 convs (same values; models.blurpool.REORDER_1X1). See docs/SCALE.md §4.

Example::

    .venv/bin/python bench/bench_blurpool.py --nets smallcnn:100,senet50:64 --batch 32 --steps 10
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")  # docs/BENCHMARK.md §4.9

import numpy as np  # noqa: E402

import cli_common  # noqa: E402


def forward_flops(model) -> float:
    """Floating-point operations of one forward pass at batch 1 (TensorFlow's graph profiler)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    return float(model_analyzer.profile(graph, options=options).total_float_ops)


def time_steps(model, batch: int, steps: int, warmup: int, rng) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (all threads of this process) per step; on a
    shared machine the CPU time is the steadier of the two."""
    x = rng.uniform(0, 255, (batch, *model.input_shape[1:])).astype("float32")
    y = np.eye(model.output_shape[-1], dtype="float32")[rng.integers(0, model.output_shape[-1], batch)]
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(times)), float(np.median(cpu))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="smallcnn:100,senet50:64",
                        help="comma-separated net:input-size pairs (small inputs for big nets on a CPU)")
    parser.add_argument("--lpfs", default="0,1,3,5", help="lpf values; the first is the reference")
    parser.add_argument("--modes", default="pad,gather",
                        help="BlurPool variants to time: pad (the default code), gather (the former "
                             "padding), reorder (pad, plus blur before 1x1 convs: models.blurpool.REORDER_1X1)")
    parser.add_argument("--batch", type=int, default=32, help="images per timed training step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pass (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first pass")
    parser.add_argument("--repeats", type=int, default=2, help="passes over all variants; best pass kept")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)

    import keras

    import models
    import models.blurpool as blurpool

    rng = np.random.default_rng(0)
    rows = []
    for item in args.nets.split(","):
        net, _, size = item.partition(":")
        size = int(size or 100)
        modes = args.modes.split(",")
        variants = [(0, "-")] + [(lpf, mode) for lpf in map(int, args.lpfs.split(",")) if lpf
                                 for mode in (modes if lpf >= 2 else ["-"] + [m for m in modes if m == "reorder"])]
        built = {}
        for lpf, mode in variants:
            blurpool.PAD_MODE = "gather" if mode == "gather" else "pad"
            blurpool.REORDER_1X1 = mode == "reorder"
            keras.utils.set_random_seed(0)
            model = models.build_model(net, size, lpf=lpf)
            blurpool.REORDER_1X1 = False
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
            built[(lpf, mode)] = [model, forward_flops(model), float("inf"), args.warmup, float("inf")]
        for _repeat in range(args.repeats):
            for key, entry in built.items():
                blurpool.PAD_MODE = "gather" if key[1] == "gather" else "pad"
                wall, cpu = time_steps(entry[0], args.batch, args.steps, entry[3], rng)
                entry[2], entry[4] = min(entry[2], wall), min(entry[4], cpu)
                entry[3] = 0
        base_seconds, base_flops, base_cpu = built[(0, "-")][2], built[(0, "-")][1], built[(0, "-")][4]
        for (lpf, mode), (_model, flops, seconds, _w, cpu) in built.items():
            rows.append({"net": net, "input_size": size, "lpf": lpf, "pad": mode, "batch": args.batch,
                         "s_per_step": round(seconds, 4), "time_ratio": round(seconds / base_seconds, 3),
                         "cpu_s_per_step": round(cpu, 4), "cpu_ratio": round(cpu / base_cpu, 3),
                         "gflops_forward": round(flops / 1e9, 4), "flop_ratio": round(flops / base_flops, 3)})
        keras.backend.clear_session()
    header = (f"{'net':<9}{'px':>4}{'lpf':>4} {'pad':<7}{'s/step':>8}{'time/lpf0':>11}{'CPU/lpf0':>10}"
              f"{'FLOP/lpf0':>11}{'GFLOP fwd':>11}")
    print(header)
    for row in rows:
        print(f"{row['net']:<9}{row['input_size']:>4}{row['lpf']:>4} {row['pad']:<7}{row['s_per_step']:>8.4f}"
              f"{row['time_ratio']:>10.2f}x{row['cpu_ratio']:>9.2f}x{row['flop_ratio']:>10.3f}x"
              f"{row['gflops_forward']:>11.3f}")
    if args.csv:
        cli_common.write_rows_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
