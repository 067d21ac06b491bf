"""Calibration and per-class metrics (docs/BENCHMARK.md §11.3): hand-worked examples, then the
values an evaluation reports recomputed from its --save-probabilities file."""

import csv
import json
import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import calibration
import eval_corrupted_rafdb
import rafdb_dataset

REPO = Path(__file__).resolve().parents[1]


def test_worked_example_from_the_docstring():
    p = [[0.9, 0.1], [0.6, 0.4]]
    y = [[1.0, 0.0], [0.0, 1.0]]
    # confidences 0.9 (correct) and 0.6 (wrong), different bins: 1/2 * 0.1 + 1/2 * 0.6
    assert calibration.ece(p, y) == pytest.approx(0.35)
    assert calibration.nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.4)) / 2)
    assert calibration.brier(p, y) == pytest.approx(((0.01 + 0.01) + (0.36 + 0.36)) / 2)


def test_ece_pools_images_of_one_bin():
    # three images with confidence 0.70, 0.72, 0.74 (bin (0.667, 0.733] holds the first two, the
    # third is in (0.733, 0.8]); correctness 1, 0, 1
    p = [[0.70, 0.30], [0.28, 0.72], [0.74, 0.26]]
    y = [[1, 0], [1, 0], [1, 0]]
    expected = 2 / 3 * abs(0.5 - 0.71) + 1 / 3 * abs(1.0 - 0.74)
    assert calibration.ece(p, y) == pytest.approx(expected)
    # perfectly calibrated by construction: 10 images at confidence 0.8, 8 of them correct
    p = [[0.8, 0.2]] * 10
    y = [[1, 0]] * 8 + [[0, 1]] * 2
    assert calibration.ece(p, y) == pytest.approx(0.0, abs=1e-12)


def test_soft_labels_in_nll_and_brier():
    p = [[0.5, 0.25, 0.25]]
    y = [[0.5, 0.5, 0.0]]  # a soft label: two classes share the votes
    assert calibration.nll(p, y) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert calibration.brier(p, y) == pytest.approx(0.0 + 0.0625 + 0.0625)
    # target = argmax with ties to the lower index -> class 0, predicted 0: correct, ECE |1 - 0.5|
    assert calibration.ece(p, y) == pytest.approx(0.5)


def test_ece_bin_upper_edge_is_inclusive():
    # bins=4: bin (0.5, 0.75] holds 0.75 (on its upper edge, exactly 3/4) and 0.70; 0.75 is right,
    # 0.70 wrong: one bin, accuracy 0.5, mean confidence 0.725, ECE |0.5 - 0.725| = 0.225.
    # (Were 0.75 put in (0.75, 1]: 1/2 |1 - 0.75| + 1/2 |0 - 0.7| = 0.475.)
    p = [[0.75, 0.25], [0.70, 0.30]]
    y = [[1, 0], [0, 1]]
    assert calibration.ece(p, y, bins=4) == pytest.approx(0.225)
    # the default 15 bins: 0.6 = 9/15 is the upper edge of (0.533, 0.6], which also holds 0.55;
    # 0.6 wrong, 0.55 right: accuracy 0.5, confidence 0.575, ECE 0.075 (split: (0.4 + 0.45) / 2)
    p = [[0.6, 0.4], [0.55, 0.45]]
    y = [[0, 1], [1, 0]]
    assert calibration.ece(p, y) == pytest.approx(0.075)


def test_ece_example_of_the_benchmark_doc():
    # BENCHMARK.md §11.3: confidences 0.95, 0.90, 0.78, 0.75, 0.55, 0.42, the 1st, 2nd, 4th and 6th
    # right: ECE = (0.05 + 0.10 + 2 * 0.265 + 0.55 + 0.58) / 6 = 1.81 / 6
    confidences = [0.95, 0.90, 0.78, 0.75, 0.55, 0.42]
    right = [True, True, False, True, False, True]
    p = [[c, 1 - c] for c in confidences]
    y = [[1, 0] if ok else [0, 1] for ok in right]
    assert calibration.ece(p, y) == pytest.approx(1.81 / 6)
    assert calibration.ece(p, y) == pytest.approx(0.3017, abs=5e-5)


def test_soft_label_tie_targets_the_lower_class():
    # label (.5, .5, 0): classes 0 and 1 tie, the target is class 0 (the lower index). The model
    # predicts class 1 with confidence 0.6: wrong, so ECE = |0 - 0.6| = 0.6 (0.4 if the tie went to 1)
    p = [[0.4, 0.6, 0.0]]
    y = [[0.5, 0.5, 0.0]]
    assert calibration.targets_of(y).tolist() == [0]
    assert calibration.ece(p, y) == pytest.approx(0.6)
    metrics = calibration.folder_metrics(p, y)
    assert metrics["confusion"] == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert metrics["recall"][0] == 0.0 and math.isnan(metrics["recall"][1])
    # NLL against the distribution: -(0.5 ln 0.4 + 0.5 ln 0.6); log 0 never multiplied by a non-zero y
    assert metrics["nll"] == pytest.approx(-(0.5 * math.log(0.4) + 0.5 * math.log(0.6)))


def test_nll_of_a_certain_mistake_uses_the_1e_minus_12_floor():
    # p = (1, 0) against the label (0, 1): -log(max(0, 1e-12)) = 12 ln 10 = 27.631
    assert calibration.nll([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(12 * math.log(10))
    assert calibration.nll([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(27.6310, abs=1e-4)
    # a probability above the floor is used as it is: -ln 1e-9 = 9 ln 10
    assert calibration.nll([[1 - 1e-9, 1e-9]], [[0.0, 1.0]]) == pytest.approx(9 * math.log(10))


def test_confusion_and_recall():
    predicted = [0, 0, 1, 2, 2, 2]
    targets = [0, 1, 1, 2, 2, 0]
    matrix = calibration.confusion_matrix(predicted, targets, 4)
    assert matrix.tolist() == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    recall = calibration.per_class_recall(matrix)
    assert recall[:3].tolist() == [0.5, 0.5, 1.0] and math.isnan(recall[3])


def hand_ece(p, targets, bins=15):
    """ECE with explicit loops: image i goes to the first bin b with conf <= (b+1)/bins."""
    members = [[] for _ in range(bins)]
    for row, target in zip(p, targets):
        confidence = max(row)
        b = 0
        while confidence > (b + 1) / bins and b < bins - 1:
            b += 1
        members[b].append((confidence, float(int(np.argmax(row)) == target)))
    total = 0.0
    for items in members:
        if items:
            total += len(items) / len(p) * abs(sum(c for _, c in items) / len(items)
                                               - sum(c for c, _ in items) / len(items))
    return total


@pytest.fixture(scope="module")
def evaluated(sample_tree, tmp_path_factory):
    """An on-the-fly evaluation (2 folders) of a softmax probe, with --save-probabilities."""
    root = tmp_path_factory.mktemp("calib")
    inputs = keras.Input((20, 20, 3))
    x = keras.layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.random.default_rng(2).normal(0, 0.1, (1200, 7)).astype("float32"),
                                  np.zeros(7, "float32")])
    model.save(root / "probe.keras")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert eval_corrupted_rafdb.main([
            "probe.keras", "--rafdb", str(sample_tree), "--on-the-fly", "--workers", "1",
            "--corruptions", "contrast,gaussian_noise", "--severities", "3",
            "--json", "r.json", "--csv", "r.csv", "--save-probabilities", "p.npz"]) == 0
    finally:
        os.chdir(cwd)
    return root, sample_tree


def test_reported_calibration_recomputed_from_saved_probabilities(evaluated):
    root, sample_tree = evaluated
    labels = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    saved = np.load(root / "p.npz")
    result = json.loads((root / "r.json").read_text())["results"][0]
    assert sorted(set(saved["folder"])) == ["clean", "contrast.3", "gaussian_noise.3"]
    label_of = dict(zip(labels.names, labels.labels))
    by_hand = {}  # folder key -> (ece, nll, brier) worked out here from the saved probabilities
    for row in result["folders"]:
        key = "clean" if row["corruption"] is None else f"{row['corruption']}.{row['severity']}"
        chosen = saved["folder"] == key
        p = saved["probabilities"][chosen].astype(np.float64)
        y = np.stack([label_of[name] for name in saved["image"][chosen]]).astype(np.float64)
        assert list(saved["image"][chosen]) == labels.names
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
        targets = [int(np.argmax(t)) for t in y]
        assert row["ece"] == pytest.approx(hand_ece(p, targets), abs=1e-9)
        nll = -sum(sum(t * math.log(max(q, 1e-12)) for t, q in zip(yr, pr)) for yr, pr in zip(y, p)) / len(p)
        assert row["nll"] == pytest.approx(nll, rel=1e-9)
        brier = sum(sum((q - t) ** 2 for t, q in zip(yr, pr)) for yr, pr in zip(y, p)) / len(p)
        assert row["brier"] == pytest.approx(brier, rel=1e-9)
        by_hand[key] = (hand_ece(p, targets), nll, brier)
        matrix = np.zeros((7, 7), int)
        for t, pr in zip(targets, p):
            matrix[t, int(np.argmax(pr))] += 1
        assert row["confusion"] == matrix.tolist()
        assert row["accuracy"] == pytest.approx(np.trace(matrix) / len(p))
    summary = result["summary"]
    corrupted = [row["ece"] for row in result["folders"] if row["corruption"]]
    assert summary["mean_ece"] == pytest.approx(sum(corrupted) / 2)
    # the summary's clean and mean values, each from the hand values of its own metric
    assert (summary["clean_ece"], summary["clean_nll"], summary["clean_brier"]) == \
        pytest.approx(by_hand["clean"], rel=1e-9)
    mean_of = [sum(by_hand[k][i] for k in ("contrast.3", "gaussian_noise.3")) / 2 for i in range(3)]
    assert (summary["mean_ece"], summary["mean_nll"], summary["mean_brier"]) == \
        pytest.approx(mean_of, rel=1e-9)
    # the NLL and the Brier score of one folder are different numbers, so a swap shows
    assert abs(by_hand["clean"][1] - by_hand["clean"][2]) > 0.1
    with open(root / "r.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[-1]["corruption"] == "summary"
    assert float(rows[-1]["ece"]) == pytest.approx(summary["mean_ece"], abs=1e-6)
    assert float(rows[-1]["mce"]) == pytest.approx(summary["mean_error_sum"], abs=1e-6)
