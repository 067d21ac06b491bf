"""Every dataset through the scripts (docs/DATASETS.md): training, evaluation, exports, LBP+SVM.

Fixtures: the synthetic FER CSV pair and folder dataset of ``synthetic_faces`` (tiny). Expected
accuracies are computed here independently of the pipeline: images read with cv2, the same
preprocessing written out, ``model.predict``, argmax against the labels with the class mapping.
"""

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--net", "smallcnn", "--input-size", "64", "--batch", "16", "--augmentation", "no", "--lr", "0.05"]
FERPLUS_ORDER = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FER2013_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture(scope="module")
def fer_pair(tmp_path_factory):
    import synthetic_faces

    root = tmp_path_factory.mktemp("integ") / "FERPlus"
    synthetic_faces.write_fer_sample(root, n_train=48, n_public=24, n_private=16, seed=3)
    return root


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    import synthetic_faces

    root = tmp_path_factory.mktemp("integ") / "faces"
    synthetic_faces.write_folder_sample(root, n_train=24, n_val=8, n_test=14, seed=4, size=40)
    return root


def fer_rows(root):
    """(pixels uint8 (N, 48, 48), usage, emotion, FER+ votes (N, 10)) read with csv, not the project's reader."""
    with open(root / "fer2013.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(root / "fer2013new.csv", newline="") as handle:
        new = list(csv.reader(handle))[1:]
    pixels = np.array([[int(v) for v in row["pixels"].split()] for row in rows], np.uint8).reshape(-1, 48, 48)
    votes = np.array([[int(v) for v in row[2:12]] for row in new])
    return pixels, [row["Usage"] for row in rows], np.array([int(row["emotion"]) for row in rows]), votes, new


def as_model_input(images, size):
    """uint8 grey (N, H, W) or RGB (N, H, W, 3) -> float32 (N, size, size, 3): bilinear resize, grey copied."""
    out = []
    for image in images:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        out.append(np.stack([image] * 3, axis=2) if image.ndim == 2 else image)
    return np.array(out, np.float32)


# --------------------------------------------------------------------------------------------
# 1. train_fer.py


@pytest.fixture(scope="module")
def ferplus_run(fer_pair, tmp_path_factory):
    import train_fer

    run_dir = tmp_path_factory.mktemp("integ") / "run"
    assert train_fer.main(["--dataset", "ferplus", "--data", str(fer_pair), *TINY, "--epochs", "1",
                           "--dir", str(run_dir)]) == 0
    return run_dir


def test_train_ferplus_records_dataset_and_classes(ferplus_run, fer_pair):
    config = json.loads((ferplus_run / "run.json").read_text())
    assert config["class_names"] == list(FERPLUS_ORDER)
    assert config["dataset"]["dataset"] == "ferplus" and config["dataset"]["grey"] is True
    assert config["args"]["data"] == str(fer_pair.resolve())
    _, usage, _, _, _ = fer_rows(fer_pair)
    # validation = PrivateTest (the dataset's own validation split), every row whose votes survive the filter
    import keras

    model = keras.models.load_model(sorted(ferplus_run.glob("checkpoint.*.hdf5"))[-1], compile=False)
    assert model.output_shape[-1] == 8
    result = json.loads((ferplus_run / "results.json").read_text())
    assert result["dataset"] == "ferplus" and result["split"] == "PublicTest"
    assert 0 < result["n"] <= usage.count("PublicTest")


def test_train_mode_test_on_fer2013_maps_classes_by_name(ferplus_run, fer_pair, capsys):
    """An 8-class FER+ model tested on FER2013's own labels: 7 classes mapped by name, none left out."""
    import keras

    import train_fer

    assert train_fer.main(["--mode", "test", "--dir", str(ferplus_run), "--dataset", "fer2013",
                           "--data", str(fer_pair), "--batch", "16"]) == 0
    out = capsys.readouterr().out
    pixels, usage, emotion, _, _ = fer_rows(fer_pair)
    test = [i for i, u in enumerate(usage) if u == "PublicTest"]
    model = keras.models.load_model(sorted(ferplus_run.glob("checkpoint.*.hdf5"))[-1], compile=False)
    batch = as_model_input(pixels[test], 64)
    predicted = np.argmax(model.predict(batch, verbose=0), axis=1)
    to_model = [FERPLUS_ORDER.index(n) for n in ("anger", "disgust", "fear", "happiness", "sadness",
                                                  "surprise", "neutral")]
    correct = int(np.sum(predicted == np.array(to_model)[emotion[test]]))
    assert f"({correct}/{len(test)}, FER2013 PublicTest" in out


def test_train_bad_dataset_inputs_exit_2(tmp_path, fer_pair):
    command = [sys.executable, str(REPO / "train_fer.py"), "--dataset", "folder", *TINY, "--epochs", "1",
               "--dir", str(tmp_path / "r")]
    import subprocess

    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--data" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(command[:3] + ["ferplus", "--rafdb", str(fer_pair)] + command[4:],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--rafdb" in result.stderr and "--data" in result.stderr
