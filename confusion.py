"""Confusion matrices of ``train_fer.py --mode test`` (docs/BENCHMARK.md §9.5, §9.9): counting,
the original's text layout, CSV and a labelled PNG. Pure functions; matplotlib only for the PNG.

The matrix has one row per true class and one column per predicted class:
``cm[i, j] = #{n : y_true[n] = i and y_pred[n] = j}``; the per-class accuracy of row i is the
recall ``cm[i, i] / sum_j cm[i, j]`` (undefined for a class without images: nan, written as an
empty CSV cell and printed as ``-``, as the evaluation JSONs give null).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from cli_common import atomic_path, atomic_write_text


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 (num_classes, num_classes): rows true class, columns predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    k = int(num_classes)
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= k):
        raise ValueError(f"class indices must lie in 0..{k - 1}")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def recalls(matrix: np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall) in 0..1: the diagonal over the row sums; nan for an empty row (a
    class without images has no recall; 0 would read as a class never recognised)."""
    rows = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), rows, out=np.full(len(rows), np.nan), where=rows > 0)


def format_report(part: str, matrix: np.ndarray, class_names) -> str:
    """The original's printout: ``<part> accuracy: %f``, a header of the class names cut to 7
    characters (``%7s``, one per column, then ``: predicted``), and one row per true class of
    ``%7d `` counts followed by ``%7s, acc:%.1f`` (its name and recall in %; ``acc:-`` for a class
    without images)."""
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix)) / total if total else 0.0
    names = [str(name)[:7] for name in class_names]
    if len(names) != matrix.shape[0]:
        raise ValueError(f"{len(names)} class names for a {matrix.shape[0]}-class matrix")
    lines = [f"{part} accuracy: {accuracy:f}", " ".join(f"{name:>7s}" for name in names) + ": predicted"]
    for name, row, recall in zip(names, matrix, recalls(matrix)):
        shown = "-" if np.isnan(recall) else f"{100 * recall:.1f}"
        lines.append("".join(f"{int(count):7d} " for count in row) + f"{name:>7s}, acc:{shown}")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, matrix: np.ndarray, class_names) -> None:
    """``true\\predicted,<class>...,n,recall`` then one row per true class (atomic write); the recall
    of a class without images is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *class_names, "n", "recall"])
    for name, row, recall in zip(class_names, matrix, recalls(matrix)):
        writer.writerow([name, *(int(v) for v in row), int(row.sum()), "" if np.isnan(recall) else f"{recall:.6f}"])
    atomic_write_text(path, buffer.getvalue())


def write_png(path: Path, matrix: np.ndarray, class_names, title: str) -> None:
    """Heat map of the row-normalised percentages; each cell shows its count and percentage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(axis=1, keepdims=True)
    percent = np.divide(100.0 * matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    k = matrix.shape[0]
    figure, axes = plt.subplots(figsize=(1.0 * k + 2.5, 0.9 * k + 2))
    image = axes.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            shown = f"{percent[i, j]:.1f}%" if rows[i, 0] > 0 else "-"  # no image of the class: no share
            axes.text(j, i, f"{int(matrix[i, j])}\n{shown}", ha="center", va="center", fontsize=8,
                      color="white" if percent[i, j] > 60 else "black")
    axes.set_xticks(range(k), class_names, rotation=45, ha="right")
    axes.set_yticks(range(k), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="% of the true class")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
