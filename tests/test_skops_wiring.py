"""A .skops LBP+SVM model (docs/BENCHMARK.md §9.6) through both RAF-DB evaluations end to end.

The expected accuracies and frame predictions come from lbp_svm's own ``predict_classes`` on the
same images read with cv2, a path that shares nothing with the evaluations' input pipeline.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import eval_corrupted_rafdb
import eval_perturbed_rafdb
import lbp_svm
import lbp_svm_train
import rafdb_dataset

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("gaussian_noise", 3), ("contrast", 3)]
FRAMES = 5


def cv2_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def workspace(sample_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("skops")
    os.symlink(sample_tree, root / "RAF-DB")
    assert lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(root / "lbp.skops"),
                               "--quiet", "--gamma", "1e-5"]) == 0
    subprocess.run([sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB",
                    "--out", "tree", "--corruptions", ",".join(c for c, _ in PAIRS), "--severities", "3",
                    "--workers", "1", "--quiet"], cwd=root, check=True, capture_output=True)
    return root


def hand_accuracy(model, paths, classes):
    predicted = model.predict_classes(np.stack([cv2_rgb(path) for path in paths]))
    return float(np.mean(predicted == classes))


def test_skops_on_the_fly_matches_lbp_svm_on_cv2_images(workspace, capsys):
    root = workspace
    model = lbp_svm.load_skops(root / "lbp.skops")
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft")
    expected = [hand_accuracy(model, labels.aligned_paths(root / "RAF-DB"), labels.classes)]
    for corruption, severity in PAIRS:
        folder = root / "tree" / f"rafdb.test.{corruption}.{severity}"
        expected.append(hand_accuracy(model, [folder / f"{n}_aligned.jpg" for n in labels.names],
                                      labels.classes))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert eval_corrupted_rafdb.main(["lbp.skops", "--on-the-fly", "--corruptions",
                                          ",".join(c for c, _ in PAIRS), "--severities", "3",
                                          "--workers", "1", "--json", "r.json"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    result = json.loads((root / "r.json").read_text())["results"][0]
    assert result["checkpoint"]["format"] == "skops"
    assert [row["accuracy"] for row in result["folders"]] == pytest.approx(expected, abs=1e-12)


def test_skops_in_the_perturbed_evaluation(workspace, capsys):
    root = workspace
    model = lbp_svm.load_skops(root / "lbp.skops")
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft")
    folder = root / "perturbed" / "rafdb.test.p_brightness"
    folder.mkdir(parents=True)
    for name, path in zip(labels.names, labels.aligned_paths(root / "RAF-DB")):
        face = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.int16)
        for frame in range(FRAMES):
            cv2.imwrite(str(folder / f"{name}_{frame:02d}.jpg"),
                        np.clip(face + 25 * frame - 50, 0, 255).astype(np.uint8))
    out = root / "p.txt"
    assert eval_perturbed_rafdb.main([str(root / "lbp.skops"), "--rafdb", str(root / "RAF-DB"),
                                      "--perturbed", str(root / "perturbed"), "--frames", str(FRAMES),
                                      "--out", str(out)]) == 0
    capsys.readouterr()
    lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0].endswith("rafdb.test.p_brightness")
    sequences = [[int(v) for v in line.split(",")] for line in lines[1:]]
    assert len(sequences) == len(labels.names)
    for name, sequence in zip(labels.names, sequences):
        frames = np.stack([cv2_rgb(folder / f"{name}_{frame:02d}.jpg") for frame in range(FRAMES)])
        assert sequence == model.predict_classes(frames).tolist(), name


@pytest.mark.parametrize("size", [48, 64, 160])
def test_faces_of_another_size_get_the_descriptors_pixels(workspace, tmp_path, size):
    """An LBP+SVM model trained on 100 px faces, evaluated on faces of another size: the evaluation
    pipeline gives the model the pixels lbp.describe makes of the face itself (grey, then one
    bilinear resize to the descriptor's 108 x 147), so its probabilities equal predict_batch on the
    faces as read. (Resizing to the training size first and then again in the descriptor gave
    other probabilities and other classes.)"""
    import argparse

    import checkpoints

    model = lbp_svm.load_skops(workspace / "lbp.skops")
    labels = rafdb_dataset.load_labels(workspace / "RAF-DB", "test", "soft")
    paths, faces = [], []
    for k, source in enumerate(labels.aligned_paths(workspace / "RAF-DB")[:12]):
        face = cv2.resize(cv2_rgb(source), (size, size), interpolation=cv2.INTER_AREA)
        path = tmp_path / f"face_{k}.png"
        cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
        paths.append(path)
        faces.append(face)
    args = argparse.Namespace(preprocessing=None, eval_preprocessing="auto", class_order=None,
                              unsafe=False, crop=None, batch=4, input_size=None)
    classifier = checkpoints.classifier_from_args(workspace / "lbp.skops", args)
    expected = model.predict_batch(np.stack(faces))
    assert np.ptp(expected, axis=0).max() > 0.01  # the faces get different probabilities
    np.testing.assert_allclose(classifier.predict_paths(paths), expected, rtol=0, atol=1e-6)
    in_memory = classifier.predict_dataset(classifier.make_array_dataset(np.stack(faces)))
    np.testing.assert_allclose(in_memory, expected, rtol=0, atol=1e-6)
