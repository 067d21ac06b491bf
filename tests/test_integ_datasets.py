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
    synthetic_faces.write_fer_sample(root, n_train=48, n_public=12, n_private=12, seed=3)
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
    # validation = PrivateTest (the dataset's own validation split), not a hold-out of Training rows
    validation = (ferplus_run / "validation_names.txt").read_text().split()
    assert validation and all(usage[int(name)] == "PrivateTest" for name in validation)
    import keras

    model = keras.models.load_model(sorted(ferplus_run.glob("checkpoint.*.hdf5"))[-1], compile=False)
    assert model.output_shape[-1] == 8
    result = json.loads((ferplus_run / "results.json").read_text())
    assert result["dataset"] == "ferplus" and result["split"] == "PublicTest"
    own = "PrivateTest (the dataset's own validation split)"
    assert result["validation"] == own and config["validation"] == own  # not "holdout of train"
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
    # another dataset than the run's: its own confusion files, the run's own names left alone
    matrix = (ferplus_run / "confusion_fer2013_test.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in matrix[1:]] == list(FERPLUS_ORDER)  # rows: the model's classes
    assert sum(int(row.split(",")[1 + i]) for i, row in enumerate(matrix[1:])) == correct  # the diagonal
    assert not (ferplus_run / "confusion_test.csv").exists()


def test_train_bad_dataset_inputs_exit_2(tmp_path, fer_pair):
    import subprocess

    import train_fer

    command = [sys.executable, str(REPO / "train_fer.py"), "--dataset", "folder", *TINY, "--epochs", "1",
               "--dir", str(tmp_path / "r")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--data" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(UserError, match="--rafdb .*--data"):
        train_fer.main(["--dataset", "ferplus", "--rafdb", str(fer_pair), *TINY, "--dir", str(tmp_path / "r")])
    with pytest.raises(UserError, match=f"{tmp_path / 'none'}: FER\\+ folder not found"):
        train_fer.main(["--dataset", "ferplus", "--data", str(tmp_path / "none"), *TINY, "--dir", str(tmp_path / "r")])


# --------------------------------------------------------------------------------------------
# 2. Evaluations


FOLDER_TO_FERPLUS = {"surprise": "surprise", "fear": "fear", "disgust": "disgust", "happy": "happiness",
                     "sad": "sadness", "angry": "anger", "neutral": "neutral"}


def best_checkpoint(run_dir):
    return sorted(run_dir.glob("checkpoint.*.hdf5"))[-1]


def predicted_ferplus_names(run_dir, batch):
    """The arg-max runs over all 8 outputs: a contempt prediction on a dataset without contempt is wrong."""
    import keras

    model = keras.models.load_model(best_checkpoint(run_dir), compile=False)
    probabilities = model.predict(batch, verbose=0)
    return [FERPLUS_ORDER[i] for i in np.argmax(probabilities, axis=1)]


def accuracy_line(out, label):
    lines = [line for line in out.splitlines() if line.startswith(label + " ")]
    assert len(lines) == 1, out
    return float(lines[0].split()[-1])


@pytest.fixture(scope="module")
def fer_png_export(fer_pair, tmp_path_factory):
    import ferplus_aug_dataset

    out = tmp_path_factory.mktemp("integ") / "fer-c"
    assert ferplus_aug_dataset.main(["export", "--dataset", "fer2013", "--data", str(fer_pair), "--out", str(out),
                                     "--corruptions", "gaussian_noise", "--severities", "2", "--workers", "1"]) == 0
    return out


def test_eval_corrupted_fer2013_clean_and_corrupted_equal_direct_computation(ferplus_run, fer_pair, fer_png_export,
                                                                             tmp_path, capsys):
    import eval_corrupted_rafdb

    json_path = tmp_path / "r.json"
    assert eval_corrupted_rafdb.main([str(best_checkpoint(ferplus_run)), "--dataset", "fer2013", "--data",
                                      str(fer_pair), "--corrupted", str(fer_png_export), "--corruptions",
                                      "gaussian_noise", "--severities", "2", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    pixels, usage, emotion, _, _ = fer_rows(fer_pair)
    rows = [i for i, u in enumerate(usage) if u == "PublicTest"]
    targets = [FER2013_ORDER[e] for e in emotion[rows]]
    canonical = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
    targets = [canonical.get(name, name) for name in targets]
    clean = predicted_ferplus_names(ferplus_run, as_model_input(pixels[rows], 64))
    expected_clean = np.mean([p == t for p, t in zip(clean, targets)])
    assert accuracy_line(out, str(fer_pair / "fer2013.csv")) == pytest.approx(expected_clean, abs=1e-6)
    assert "FER2013-C summary for " in out and "RAF-DB-C summary" not in out
    folder = fer_png_export / "fer2013.PublicTest.gaussian_noise.2"
    corrupted = np.array([cv2.imread(str(folder / f"{row:05d}.png"), cv2.IMREAD_GRAYSCALE) for row in rows])
    predicted = predicted_ferplus_names(ferplus_run, as_model_input(corrupted, 64))
    expected = np.mean([p == t for p, t in zip(predicted, targets)])
    assert accuracy_line(out, str(folder)) == pytest.approx(expected, abs=1e-6)
    result = json.loads(json_path.read_text())["results"][0]
    assert (result["dataset"], result["split"], result["n"], result["n_unmapped"]) == \
        ("fer2013", "PublicTest", len(rows), 0)


def test_eval_corrupted_fer_csv_export_and_folder_dataset(ferplus_run, fer_pair, faces, tmp_path, capsys):
    """--format fer-csv export read back line by line; a folder dataset's clean accuracy computed directly."""
    import eval_corrupted_rafdb
    import ferplus_aug_dataset

    out = tmp_path / "fer-csv"
    assert ferplus_aug_dataset.main(["export", "--dataset", "fer2013", "--data", str(fer_pair), "--out", str(out),
                                     "--format", "fer-csv", "--corruptions", "contrast", "--severities", "5",
                                     "--workers", "1"]) == 0
    assert eval_corrupted_rafdb.main([str(best_checkpoint(ferplus_run)), "--dataset", "fer2013", "--data",
                                      str(fer_pair), "--corrupted", str(out), "--corruptions", "contrast",
                                      "--severities", "5"]) == 0
    text = capsys.readouterr().out
    pixels, usage, emotion, _, _ = fer_rows(fer_pair)
    rows = [i for i, u in enumerate(usage) if u == "PublicTest"]
    lines = (out / "fer2013.PublicTest.contrast.5.csv").read_text().split("\n")
    corrupted = np.array([[int(v) for v in lines[row + 1].split(",")[1].split()] for row in rows],
                         np.uint8).reshape(-1, 48, 48)
    canonical = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
    targets = [canonical.get(FER2013_ORDER[e], FER2013_ORDER[e]) for e in emotion[rows]]
    predicted = predicted_ferplus_names(ferplus_run, as_model_input(corrupted, 64))
    assert accuracy_line(text, str(out / "fer2013.PublicTest.contrast.5.csv")) == \
        pytest.approx(np.mean([p == t for p, t in zip(predicted, targets)]), abs=1e-6)

    export = tmp_path / "faces-c"
    assert ferplus_aug_dataset.main(["export", "--dataset", "folder", "--data", str(faces), "--out", str(export),
                                     "--corruptions", "brightness_minus", "--severities", "1", "--workers", "1"]) == 0
    assert eval_corrupted_rafdb.main([str(best_checkpoint(ferplus_run)), "--dataset", "folder", "--data",
                                      str(faces), "--corrupted", str(export), "--corruptions", "brightness_minus",
                                      "--severities", "1"]) == 0
    text = capsys.readouterr().out
    files = sorted((faces / "test").glob("*/*"))
    images = [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files]
    targets = [FOLDER_TO_FERPLUS[f.parent.name] for f in files]
    predicted = predicted_ferplus_names(ferplus_run, as_model_input(images, 64))
    assert accuracy_line(text, str(faces / "test")) == \
        pytest.approx(np.mean([p == t for p, t in zip(predicted, targets)]), abs=1e-6)
    assert f"dataset folder dataset test: N={len(files)}" in text
    assert "corrupted folder dataset summary for " in text and "RAF-DB-C summary" not in text


def test_eval_corrupted_bad_inputs_exit_2(fer_pair, ferplus_run, tmp_path):
    import subprocess

    base = [sys.executable, str(REPO / "eval_corrupted_rafdb.py"), str(best_checkpoint(ferplus_run))]
    result = subprocess.run(base + ["--dataset", "ferplus", "--data", str(fer_pair), "--corrupted",
                                    str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and str(tmp_path / "none") in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(base + ["--dataset", "ferplus", "--data", str(fer_pair), "--on-the-fly"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--on-the-fly" in result.stderr


def test_eval_corrupted_fer2013_script_writes_the_original_report(ferplus_run, fer_pair, fer_png_export, tmp_path):
    import subprocess

    import eval_corrupted_fer2013

    assert eval_corrupted_fer2013.command(["m.hdf5"])[-2:] == ["--dataset", "ferplus"]
    assert eval_corrupted_fer2013.command(["m.hdf5", "--dataset", "fer2013"])[-2:] == ["--dataset", "fer2013"]
    results = tmp_path / "results.txt"
    run = subprocess.run([sys.executable, str(REPO / "eval_corrupted_fer2013.py"), str(best_checkpoint(ferplus_run)),
                          str(results), "--data", str(fer_pair), "--corrupted", str(fer_png_export),
                          "--corruptions", "gaussian_noise", "--severities", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = results.read_text().split("\n")
    assert lines[0] == f"Results for: {best_checkpoint(ferplus_run)}"
    assert lines[1].startswith(f"{fer_pair / 'fer2013.csv'} ")
    assert lines[2].startswith(f"{fer_png_export / 'fer2013.PublicTest.gaussian_noise.2'} ")
    assert lines[3:] == ["", "", ""]
    # FER+ labels through the vote filter, in FER+'s 8 classes (the model outputs contempt too)
    assert "dataset FER+ PublicTest: N=" in run.stdout


# --------------------------------------------------------------------------------------------
# 3. Exports through the RAF-DB scripts


def test_rafdb_aug_dataset_export_fer_equals_ferplus_export_and_stays_grey(fer_pair, fer_png_export, tmp_path):
    import rafdb_aug_dataset

    out = tmp_path / "c"
    assert rafdb_aug_dataset.main(["export", "--dataset", "fer2013", "--data", str(fer_pair), "--out", str(out),
                                   "--corruptions", "gaussian_noise", "--severities", "2", "--workers", "1"]) == 0
    name = "fer2013.PublicTest.gaussian_noise.2"
    files = sorted(p.name for p in (out / name).iterdir())
    _, usage, _, _, _ = fer_rows(fer_pair)
    assert files == sorted(p.name for p in (fer_png_export / name).iterdir()) == \
        sorted(f"{i:05d}.png" for i, u in enumerate(usage) if u == "PublicTest")
    for file in files:
        assert (out / name / file).read_bytes() == (fer_png_export / name / file).read_bytes()
    image = cv2.imread(str(out / name / files[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 48)


def test_rafdb_aug_dataset_export_grey_folder_dataset(fer_pair, tmp_path):
    import datasets
    import rafdb_aug_dataset
    from datasets.folder import write_folder_tree

    grey_faces = tmp_path / "grey"
    write_folder_tree(datasets.get("fer2013", fer_pair), grey_faces)
    out = tmp_path / "grey-c"
    assert rafdb_aug_dataset.main(["export", "--dataset", "folder", "--data", str(grey_faces), "--out", str(out),
                                   "--corruptions", "contrast", "--severities", "3", "--workers", "1"]) == 0
    written = sorted((out / "grey.test.contrast.3").rglob("*.png"))
    originals = sorted((grey_faces / "test").rglob("*.png"))
    assert [p.relative_to(out / "grey.test.contrast.3") for p in written] == \
        [p.relative_to(grey_faces / "test") for p in originals]
    image = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert image.ndim == 2 and image.shape == (48, 48)
    # contrast reduces the spread around the mean: the corrupted face's std is below the clean one's
    clean = cv2.imread(str(originals[0]), cv2.IMREAD_UNCHANGED)
    assert image.astype(float).std() < clean.astype(float).std()


@pytest.fixture(scope="module")
def fer_p_export(fer_pair, tmp_path_factory):
    import rafdb_perturb_dataset

    out = tmp_path_factory.mktemp("integ") / "fer-p"
    assert rafdb_perturb_dataset.main(["export", "--dataset", "fer2013", "--data", str(fer_pair), "--out", str(out),
                                       "--perturbations", "p_rotate", "--workers", "1"]) == 0
    return out


def test_rafdb_perturb_dataset_export_fer(fer_p_export, fer_pair):
    _, usage, _, _, _ = fer_rows(fer_pair)
    rows = [i for i, u in enumerate(usage) if u == "PublicTest"]
    folder = fer_p_export / "fer2013.PublicTest.p_rotate"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{r:05d}_{i:02d}.png" for r in rows for i in range(30))
    assert cv2.imread(str(folder / f"{rows[0]:05d}_07.png"), cv2.IMREAD_UNCHANGED).shape == (48, 48)


def test_eval_perturbed_fer2013_predictions_equal_direct_computation(ferplus_run, fer_pair, fer_p_export, tmp_path):
    import eval_perturbed_rafdb
    import stability

    out = tmp_path / "p.txt"
    assert eval_perturbed_rafdb.main([str(best_checkpoint(ferplus_run)), "--dataset", "fer2013", "--data",
                                      str(fer_pair), "--perturbed", str(fer_p_export), "--out", str(out)]) == 0
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    folder = fer_p_export / "fer2013.PublicTest.p_rotate"
    assert lines[0] == f"{best_checkpoint(ferplus_run)},{folder}"
    _, usage, _, _, _ = fer_rows(fer_pair)
    rows = [i for i, u in enumerate(usage) if u == "PublicTest"]
    assert len(lines) == 1 + len(rows)
    frames = np.array([cv2.imread(str(folder / f"{r:05d}_{i:02d}.png"), cv2.IMREAD_GRAYSCALE)
                       for r in rows for i in range(30)])
    names = predicted_ferplus_names(ferplus_run, as_model_input(frames, 64))
    rafdb_order = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    expected = [",".join(str(rafdb_order.index(n)) for n in names[k * 30:(k + 1) * 30]) for k in range(len(rows))]
    assert lines[1:] == expected
    assert stability.perturbation_name(str(folder)) == "p_rotate"


# --------------------------------------------------------------------------------------------
# 4. LBP + SVM


@pytest.fixture(scope="module")
def fer2013_lbp_model(fer_pair, tmp_path_factory):
    """An LBP+SVM model trained once on the FER2013 pair (each test evaluates a copy of it)."""
    import lbp_svm_train

    model = tmp_path_factory.mktemp("lbp_fer2013") / "lbp.skops"
    assert lbp_svm_train.main(["train", "--dataset", "fer2013", "--data", str(fer_pair), "--out", str(model),
                               "--quiet"]) == 0
    return model


def test_lbp_svm_train_and_eval_on_fer2013(fer_pair, fer2013_lbp_model, tmp_path, capsys):
    import shutil

    import lbp_svm_train

    model = Path(shutil.copy(fer2013_lbp_model, tmp_path / "lbp.skops"))
    assert lbp_svm_train.main(["eval", "--dataset", "fer2013", "--data", str(fer_pair), "--model", str(model),
                               "--quiet"]) == 0
    report = json.loads((tmp_path / "lbp.eval_test.json").read_text())
    _, usage, emotion, _, _ = fer_rows(fer_pair)
    test = [i for i, u in enumerate(usage) if u == "PublicTest"]
    assert report["n"] == len(test) and report["class_names"] == list(FER2013_ORDER)
    confusion = np.array(report["confusion"])
    assert confusion.sum(axis=1).tolist() == np.bincount(emotion[test], minlength=7).tolist()


# --------------------------------------------------------------------------------------------
# 5. Bad inputs


@pytest.mark.parametrize("argv,needle", [
    (["rafdb_aug_dataset.py", "export", "--dataset", "folder", "--corruptions", "contrast"], "--data"),
    (["rafdb_perturb_dataset.py", "export", "--dataset", "folder", "--data", "/nonexistent/faces"],
     "/nonexistent/faces"),
    (["lbp_svm_train.py", "train", "--dataset", "ferplus", "--data", "/nonexistent/FER"], "/nonexistent/FER"),
    (["rafdb_aug_dataset.py", "export", "--dataset", "fer2013", "--rafdb", "somewhere"], "--rafdb"),
])
def test_bad_dataset_inputs_exit_2(argv, needle, tmp_path):
    import subprocess

    run = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_lbp_svm_eval_matches_classes_by_name(fer_pair, fer2013_lbp_model, tmp_path):
    """A FER2013 LBP+SVM model (angry, disgust, ...) on FER+ (neutral, happiness, ..., contempt): the
    classes are matched by name, as in the other evaluations (it was refused, 'classes differ'). The
    report is in FER+'s order; each row of the confusion matrix sums to that class's test count
    (read from the CSV with csv, FER+ soft labels' majority), and no image is predicted contempt."""
    import shutil

    import datasets
    import lbp_svm_train

    model = Path(shutil.copy(fer2013_lbp_model, tmp_path / "lbp13.skops"))
    assert lbp_svm_train.main(["eval", "--dataset", "ferplus", "--data", str(fer_pair), "--model", str(model),
                               "--quiet"]) == 0
    # another dataset than the model was trained on: named in the file (docs/BASELINES.md)
    report = json.loads((tmp_path / "lbp13.eval_ferplus_test.json").read_text())
    assert report["class_names"] == list(FERPLUS_ORDER)
    labels = datasets.get("ferplus", fer_pair).labels("test")
    counts = np.bincount(np.argmax(labels.labels, axis=1), minlength=8)
    confusion = np.array(report["confusion"])
    assert confusion.sum(axis=1).tolist() == counts.tolist()
    assert confusion[:, FERPLUS_ORDER.index("contempt")].sum() == 0
    # the model cannot output contempt, which no test image of this sample is
    assert report["n"] == int(counts.sum()) and report["left_out"] == {"contempt": 0}
