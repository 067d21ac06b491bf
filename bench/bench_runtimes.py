"""Benchmark: one small network through the three runtimes (Keras, LiteRT, onnxruntime).

The network (conv 3x3 16 -> ReLU -> max-pool 2 -> conv 3x3 32 -> ReLU -> max-pool 2 -> conv 3x3
64 -> ReLU -> GAP -> dense 7 softmax, 64x64x3 input, valid padding, random init) is built in Keras,
converted to a float .tflite with the TFLite converter and written as an .onnx (NCHW) with
onnx.helper from the same weights. Each file is loaded the way the evaluations load it
(``checkpoints.classifier_from_args``), and for each runtime, in one run:

- files: ``Classifier.predict_paths`` over --images 100x100 JPEGs (decode -> resize -> batches ->
  runtime), against
- memory: ``Classifier.predict_dataset(make_array_dataset(images))`` on the same images already
  decoded (the same pipeline and runtime without the file reads);

ratio = memory time / files time (target >= 90 %). The img/s of the three runtimes on the files
are printed together, with the largest probability difference from Keras. Timings are the best of
--repeats after a warm-up.

Example::

    DNNL_MAX_CPU_ISA=AVX2 .venv/bin/python bench/bench_runtimes.py --images 512 --csv runtimes.csv
"""

from __future__ import annotations

import argparse
import csv
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
SIZE = 64


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512, help="100x100 JPEG images")
    parser.add_argument("--batch", type=int, default=64, help="evaluation batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best)")
    parser.add_argument("--input-size", type=int, default=SIZE,
                        help="the network's input side (64 is the worst case for this ratio: the "
                             "smaller the network's work, the larger the JPEG decoding's share)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    return parser.parse_args(argv)


def best_time(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def build_keras():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters, pool in ((16, True), (32, True), (64, False)):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        if pool:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def write_onnx(model, path: Path) -> None:
    """The same network as ONNX (NCHW), weights copied from the Keras layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = "x"
    nodes.append(helper.make_node("Mul", [current, "inv255"], ["scaled"]))
    inits.append(numpy_helper.from_array(np.array(1 / 255.0, np.float32), "inv255"))
    current = "scaled"
    for index, layer in enumerate(model.layers):
        kind = type(layer).__name__
        if kind == "Conv2D":
            kernel, bias = layer.get_weights()
            inits += [numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), f"w{index}"),
                      numpy_helper.from_array(bias, f"b{index}")]
            nodes += [helper.make_node("Conv", [current, f"w{index}", f"b{index}"], [f"c{index}"]),
                      helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
            current = f"r{index}"
        elif kind == "MaxPooling2D":
            nodes.append(helper.make_node("MaxPool", [current], [f"p{index}"], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            current = f"p{index}"
        elif kind == "GlobalAveragePooling2D":
            nodes += [helper.make_node("GlobalAveragePool", [current], [f"g{index}"]),
                      helper.make_node("Flatten", [f"g{index}"], [f"f{index}"])]
            current = f"f{index}"
        elif kind == "Dense":
            kernel, bias = layer.get_weights()
            inits += [numpy_helper.from_array(kernel, "wd"), numpy_helper.from_array(bias, "bd")]
            nodes += [helper.make_node("Gemm", [current, "wd", "bd"], ["logits"]),
                      helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])], initializer=inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


def main(argv=None) -> int:
    args = parse_args(argv)
    global SIZE
    SIZE = args.input_size
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import cv2
    import tensorflow as tf

    import checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_keras()
        model.save(tmp / "small.keras")
        (tmp / "small.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        write_onnx(model, tmp / "small.onnx")
        rng = np.random.default_rng(0)
        paths, images = [], []
        (tmp / "img").mkdir()
        for index in range(args.images):
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            image = cv2.resize(small, (100, 100), interpolation=cv2.INTER_CUBIC)
            path = tmp / "img" / f"{index:05d}.jpg"
            cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            paths.append(path)
        images = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in paths])
        options = argparse.Namespace(preprocessing="none", eval_preprocessing="auto",
                                     class_order="rafdb", unsafe=False, crop=None,
                                     batch=args.batch, input_size=None)
        rows, reference = [], None
        for name in ("small.keras", "small.tflite", "small.onnx"):
            classifier = checkpoints.classifier_from_args(tmp / name, options)
            files_s = best_time(lambda: classifier.predict_paths(paths), args.repeats)
            memory_s = best_time(lambda: classifier.predict_dataset(
                classifier.make_array_dataset(images)), args.repeats)
            probs = classifier.predict_paths(paths)
            reference = probs if reference is None else reference
            rows.append({"runtime": classifier.runner.format, "images": len(paths),
                         "files_img_per_s": len(paths) / files_s,
                         "memory_img_per_s": len(paths) / memory_s,
                         "ratio": memory_s / files_s,
                         "max_abs_diff_vs_keras": float(np.abs(probs - reference).max()),
                         "same_class_as_keras": float(np.mean(probs.argmax(1) ==
                                                              reference.argmax(1)))})
    print(f"small CNN {SIZE}x{SIZE}x3, {args.images} JPEGs 100x100, batch {args.batch}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats}")
    print(f"{'runtime':<8}{'files img/s':>13}{'memory img/s':>14}{'files/memory':>14}"
          f"{'max|dp| vs keras':>18}{'same class':>12}")
    for row in rows:
        flag = "" if row["ratio"] >= TARGET else "  (below the 90 % target)"
        print(f"{row['runtime']:<8}{row['files_img_per_s']:>13.0f}{row['memory_img_per_s']:>14.0f}"
              f"{row['ratio']:>13.1%} {row['max_abs_diff_vs_keras']:>17.2e}"
              f"{row['same_class_as_keras']:>12.1%}{flag}")
    if args.csv:
        with cli_common.atomic_path(args.csv) as path, open(path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    cli_common.run_main(main)
