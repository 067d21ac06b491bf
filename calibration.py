"""Calibration and per-class metrics of a classifier's probabilities (docs/BENCHMARK.md §11.3).

Pure numpy functions over ``probabilities`` (n, K), rows summing to 1, and ``labels`` (n, K), the
protocol's label distributions (soft labels under ``--labels soft``, one-hot under ``hard``). The
target class of an image is ``argmax labels`` (ties to the lower index, as the accuracy of §5.1).

- **ECE** (expected calibration error, top-1, B = 15 equal-width bins): the confidence of an image
  is its largest probability c = max_k p_k and it is correct when argmax_k p_k is its target. Bin b
  (b = 1..B) holds the images with (b-1)/B < c <= b/B (c = 0 goes to bin 1). Then
  ECE = sum_b (n_b / n) |acc_b - conf_b|, with acc_b and conf_b the mean correctness and mean
  confidence in bin b (empty bins count 0).
- **NLL** = -(1/n) sum_i sum_k y_ik log max(p_ik, 1e-12) (the cross-entropy against the label
  distribution; every probability below 1e-12, 0 included, counts as 1e-12, so one certain mistake
  gives a large finite number, at most 27.63).
- **Brier** = (1/n) sum_i sum_k (p_ik - y_ik)^2 (sum over classes, mean over images).
- **Per-class recall**: for each class k, the fraction of images whose target is k that are
  predicted k (NaN for a class with no image).
- **Confusion matrix** C[t, p]: number of images of target t predicted p.

Worked example (used in the tests): two images, K = 2, p = (0.9, 0.1) and (0.6, 0.4), targets 0
and 1 (one-hot). Confidences 0.9 (correct) and 0.6 (wrong) fall in different bins:
ECE = 1/2 |1 - 0.9| + 1/2 |0 - 0.6| = 0.35. NLL = -(log 0.9 + log 0.4) / 2 = 0.5108.
Brier = ((0.1^2 + 0.1^2) + (0.6^2 + 0.6^2)) / 2 = 0.37.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
LOG_FLOOR = 1e-12


def _checked(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"expected probabilities and labels of the same shape (n, K), got "
                         f"{p.shape} and {y.shape}")
    return p, y


def targets_of(labels) -> np.ndarray:
    """The target class of each label row: argmax, ties to the lower index."""
    return np.argmax(np.asarray(labels), axis=1)


def ece(probabilities, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error, top-1, ``bins`` equal-width confidence bins (upper edge inclusive)."""
    p, y = _checked(probabilities, labels)
    if len(p) == 0:
        return float("nan")
    confidence = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == targets_of(y)).astype(np.float64)
    # bin b (0-based) holds (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            total += count / len(p) * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def nll(probabilities, labels) -> float:
    """Mean cross-entropy -sum_k y_k log p_k against the label distribution."""
    p, y = _checked(probabilities, labels)
    if len(p) == 0:
        return float("nan")
    return float(-(y * np.log(np.maximum(p, LOG_FLOOR))).sum(axis=1).mean())


def brier(probabilities, labels) -> float:
    """Mean over images of sum_k (p_k - y_k)^2."""
    p, y = _checked(probabilities, labels)
    if len(p) == 0:
        return float("nan")
    return float(((p - y) ** 2).sum(axis=1).mean())


def confusion_matrix(predicted, targets, num_classes: int) -> np.ndarray:
    """C[t, p] = number of images with target t predicted as p (int64, K x K)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(targets, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Diagonal over row sums of a confusion matrix; NaN for a class without images."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / np.where(support > 0, support, 1), np.nan)


def folder_metrics(probabilities, labels, confidences: bool = True) -> dict:
    """ECE, NLL, Brier, per-class recall and confusion matrix of one evaluated folder (JSON-ready).
    ``confidences`` False: the rows are one-hot predicted classes, not a model's probabilities, so
    ECE, NLL and Brier are NaN (undefined) rather than numbers of a confidence nobody stated."""
    p, y = _checked(probabilities, labels)
    confusion = confusion_matrix(np.argmax(p, axis=1), targets_of(y), p.shape[1])
    scored = ({"ece": ece(p, y), "nll": nll(p, y), "brier": brier(p, y)} if confidences
              else dict.fromkeys(("ece", "nll", "brier"), math.nan))
    return {**scored, "recall": [float(value) for value in per_class_recall(confusion)],
            "confusion": confusion.tolist()}
