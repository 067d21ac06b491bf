"""train_fer.py --mode test: accuracy and confusion matrices of test, validation and train in the
original's layout, confusion_<part>.csv and .png (docs/BENCHMARK.md §9.5, §9.9)."""

import csv
from pathlib import Path

import numpy as np
import pytest

import confusion
import rafdb_dataset
import train_fer
from cli_common import UserError

NAMES = list(rafdb_dataset.CLASS_NAMES)


def training_best(run):
    import training

    return training.best_checkpoint(run)


def test_format_report_by_hand():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 4]])
    text = confusion.format_report("val", matrix, ["neutral", "happiness", "surprise"])
    assert text == ("val accuracy: 0.700000\n"
                    "neutral happine surpris: predicted\n"
                    "      3       1       0 neutral, acc:75.0\n"
                    "      0       0       0 happine, acc:-\n"
                    "      2       0       4 surpris, acc:66.7\n")


def test_confusion_matrix_counts_pairs():
    matrix = confusion.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="0..2"):
        confusion.confusion_matrix([0, 3], [0, 0], 3)


@pytest.fixture(scope="module")
def run_dir(sample_tree, tmp_path_factory):
    run = tmp_path_factory.mktemp("testmode") / "run"
    assert train_fer.main(["--rafdb", str(sample_tree), "--net", "smallcnn", "--input-size", "64", "--lpf", "0",
                           "--batch", "16", "--epochs", "1", "--lr", "0.02", "--augmentation", "no",
                           "--dir", str(run)]) == 0
    return run


def parse_reports(text):
    """{part: (accuracy, matrix, recalls)} from the printed blocks."""
    lines = text.splitlines()
    reports = {}
    for index, line in enumerate(lines):
        if " accuracy: " in line and not line.startswith("test accuracy "):
            part, value = line.split(" accuracy: ")
            header = lines[index + 1]
            assert header.endswith(": predicted")
            columns = [header[:-len(": predicted")][i:i + 7].strip() for i in range(0, len(header) - 11, 8)]
            assert columns == [name[:7] for name in NAMES]
            rows, recalls = [], []
            for row in lines[index + 2:index + 2 + len(NAMES)]:
                counts, rest = row[:8 * len(NAMES)], row[8 * len(NAMES):]
                rows.append([int(counts[i:i + 8]) for i in range(0, len(counts), 8)])
                shown = rest.split("acc:")[1]
                recalls.append(float("nan") if shown == "-" else float(shown))
            reports[part] = (float(value), np.array(rows), recalls)
    return reports


def predict_with_opencv(model, tree, names):
    import cv2

    images = [cv2.resize(cv2.imread(str(rafdb_dataset.aligned_path(tree, name)))[:, :, ::-1], (64, 64),
                         interpolation=cv2.INTER_LINEAR) for name in names]
    return np.argmax(model.predict(np.asarray(images, "float32"), verbose=0), axis=1)


def test_mode_test_prints_and_writes_recomputable_confusion_matrices(run_dir, sample_tree, capsys):
    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--rafdb", str(sample_tree)]) == 0
    reports = parse_reports(capsys.readouterr().out)
    assert list(reports) == ["test", "val", "train"]

    import keras

    import models  # noqa: F401

    checkpoint = sorted(run_dir.glob("checkpoint.*.hdf5"))[-1]
    model = keras.models.load_model(checkpoint, compile=False)
    held = set((run_dir / "validation_names.txt").read_text().split())
    train = rafdb_dataset.load_labels(sample_tree, "train", "soft")
    test = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    parts = {"test": (test.names, test.classes),
             "val": ([n for n in train.names if n in held],
                     [c for n, c in zip(train.names, train.classes) if n in held]),
             "train": ([n for n in train.names if n not in held],
                       [c for n, c in zip(train.names, train.classes) if n not in held])}
    for part, (names, truth) in parts.items():
        predicted = predict_with_opencv(model, sample_tree, names)
        expected = np.zeros((7, 7), int)
        for t, p in zip(truth, predicted):
            expected[t, p] += 1
        accuracy, matrix, recalls = reports[part]
        np.testing.assert_array_equal(matrix, expected)
        assert accuracy == pytest.approx(np.mean(np.asarray(truth) == predicted), abs=1e-6)
        for i in range(7):
            row = expected[i].sum()
            if row:
                assert recalls[i] == pytest.approx(round(100 * expected[i, i] / row, 1), abs=0.051)
            else:
                assert np.isnan(recalls[i])
        with open(checkpoint.parent / f"confusion_{part}.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["true\\predicted", *NAMES, "n", "recall"]
        assert [[int(v) for v in row[1:8]] for row in rows[1:]] == expected.tolist()
        png = Path(checkpoint.parent / f"confusion_{part}.png")
        import cv2

        picture = cv2.imread(str(png))
        assert picture is not None and picture.shape[0] > 300 and picture.std() > 10


def test_mode_test_epoch_selects_that_checkpoint(run_dir, sample_tree, capsys):
    from cli_common import UserError

    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--epoch", "1", "--rafdb", str(sample_tree)]) == 0
    assert "checkpoint.01.hdf5" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"--epoch 7: no .*checkpoint\.07\.hdf5 \(epochs with a checkpoint: 1\)"):
        train_fer.main(["--mode", "test", "--dir", str(run_dir), "--epoch", "7", "--rafdb", str(sample_tree)])


def test_mode_test_takes_the_runs_dataset(run_dir, sample_tree, tmp_path, monkeypatch, capsys):
    """Run from another folder (no ./RAF-DB there) without --rafdb: the run's recorded RAF-DB root is
    used, and the test split's size is the one printed with it."""
    monkeypatch.chdir(tmp_path)
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir)]) == 0
    with_flag = capsys.readouterr().out
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--rafdb", str(sample_tree)]) == 0
    assert capsys.readouterr().out == with_flag


def test_mode_test_with_rafdb_on_a_run_of_another_dataset_tests_on_rafdb(run_dir, sample_tree, tmp_path, capsys):
    """--rafdb DIR alone on a run whose run.json records a folder dataset: RAF-DB is tested (it was
    the error "--rafdb names a RAF-DB root; with --dataset folder use --data DIR", naming a flag the
    user never gave); the same numbers as for the RAF-DB run itself."""
    import json
    import shutil

    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--rafdb", str(sample_tree)]) == 0
    expected = capsys.readouterr().out
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    info = json.loads((run / "run.json").read_text())
    info["args"].update(dataset="folder", data=str(tmp_path), rafdb=None)
    (run / "run.json").write_text(json.dumps(info))
    assert train_fer.main(["--mode", "test", "--dir", str(run), "--rafdb", str(sample_tree)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and out == expected.replace(str(run_dir), str(run))


@pytest.mark.parametrize("content, words", [('{"net": ', "not a readable run.json"),
                                            ("[]", "expected a JSON object of run settings, found list"),
                                            ('{"args": "x"}', '"args" is not an object')])
@pytest.mark.parametrize("flags", [["--mode", "test"], ["--resume", "--epochs", "2"]])
def test_a_damaged_run_json_is_one_error_line(tmp_path, content, words, flags, capsys):
    """--mode test and --resume on a run folder whose run.json is damaged: exit 2, the file named
    (a JSONDecodeError / AttributeError traceback before), nothing else read."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.01.hdf5").write_bytes(b"not read")
    (run / "run.json").write_text(content)
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(Path(train_fer.__file__)), *flags, "--dir", str(run)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {run / 'run.json'}: ") and words in last
    assert "Traceback" not in result.stderr


def test_mode_test_with_other_labels_or_epoch_keeps_the_runs_own_files(run_dir, sample_tree, tmp_path, capsys):
    """--labels hard on a soft-label run, and --epoch 1 when checkpoint.02 is the best, wrote over the
    run's confusion_<part>.* before; now their names carry 'hard' and 'epoch01'."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for stale in run.glob("confusion_*"):
        stale.unlink()
    assert train_fer.main(["--mode", "test", "--dir", str(run)]) == 0
    own = (run / "confusion_test.csv").read_text()
    assert train_fer.main(["--mode", "test", "--dir", str(run), "--labels", "hard"]) == 0
    assert (run / "confusion_test.csv").read_text() == own
    hard = rafdb_dataset.load_labels(sample_tree, "test", "hard")
    rows = list(csv.reader((run / "confusion_hard_test.csv").read_text().splitlines()))[1:]
    assert sum(int(row[8]) for row in rows) == len(hard.names)  # n column: the hard protocol's test images
    assert (run / "confusion_hard_val.png").is_file()
    shutil.copy(run / "checkpoint.01.hdf5", run / "checkpoint.02.hdf5")  # 02 is now the best
    assert train_fer.main(["--mode", "test", "--dir", str(run), "--epoch", "1"]) == 0
    assert (run / "confusion_epoch01_test.csv").read_text() == own  # same weights as the best before
    assert (run / "confusion_test.csv").read_text() == own
    assert train_fer.main(["--mode", "test", "--checkpoint", str(run / "checkpoint_last.hdf5")]) == 0
    assert (run / "confusion_checkpoint_last_train.csv").is_file()
    assert sorted(p.name for p in run.glob("confusion_*test.csv")) == [
        "confusion_checkpoint_last_test.csv", "confusion_epoch01_test.csv", "confusion_hard_test.csv",
        "confusion_test.csv"]


def test_mode_test_on_another_folder_names_a_non_default_protocol(run_dir, sample_tree, tmp_path):
    """A RAF-DB run tested on a RAF-DB copy elsewhere with --labels hard and then with the default soft
    labels: both wrote confusion_rafdb_<part>.*, the second silently replacing the first."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for stale in run.glob("confusion_*"):
        stale.unlink()
    copy = tmp_path / "RAF-DB-copy"
    shutil.copytree(sample_tree, copy)
    common = ["--mode", "test", "--dir", str(run), "--rafdb", str(copy)]
    assert train_fer.main([*common, "--labels", "hard"]) == 0
    assert train_fer.main(common) == 0
    hard = rafdb_dataset.load_labels(sample_tree, "test", "hard")
    soft = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    assert len(hard.names) != len(soft.names)  # the sample's protocols differ in their test images
    for name, n in (("confusion_rafdb_hard_test.csv", len(hard.names)), ("confusion_rafdb_test.csv", len(soft.names))):
        rows = list(csv.reader((run / name).read_text().splitlines()))[1:]
        assert sum(int(row[8]) for row in rows) == n, name
    assert sorted(p.name for p in run.glob("confusion_*test.csv")) == ["confusion_rafdb_hard_test.csv",
                                                                       "confusion_rafdb_test.csv"]


def test_mode_test_warns_about_another_protocol_only_on_the_runs_dataset(run_dir, tmp_path, caplog):
    """A soft-label RAF-DB run tested on FER2013 (whose one protocol is hard) warned 'trained with
    --labels soft; evaluating with --labels hard', as if the user had chosen another protocol; a
    missing --dir was reported as a folder without checkpoints."""
    import shutil

    import synthetic_faces

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    fer = synthetic_faces.write_fer_sample(tmp_path / "FER", n_train=14, n_public=14, n_private=14, seed=2)
    warning = "the model was trained with --labels soft; evaluating with --labels hard"
    with caplog.at_level("WARNING"):
        assert train_fer.main(["--mode", "test", "--dir", str(run), "--dataset", "fer2013", "--data", str(fer)]) == 0
    assert warning not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert train_fer.main(["--mode", "test", "--dir", str(run), "--labels", "hard"]) == 0
    assert warning in caplog.text
    with pytest.raises(UserError, match=r"^--dir \S+/gone: no such run directory$"):
        train_fer.main(["--mode", "test", "--dir", str(tmp_path / "gone")])


def test_a_checkpoint_copied_elsewhere_is_tested_with_its_runs_held_out_images(run_dir, tmp_path, caplog):
    """--dir RUN --checkpoint FILE outside RUN: the held-out list was looked for beside FILE, so 'val'
    silently became the test split; it is the run's validation_names.txt."""
    import shutil

    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(training_best(run_dir), other / "best.hdf5")
    held = [line for line in (run_dir / "validation_names.txt").read_text().splitlines() if line]
    with caplog.at_level("WARNING"):
        assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--checkpoint", str(other / "best.hdf5")]) == 0
    assert "'val' is the test split" not in caplog.text
    rows = list(csv.reader((other / "confusion_best_val.csv").read_text().splitlines()))[1:]
    assert sum(int(row[8]) for row in rows) == len(held) > 0


def test_a_class_without_images_has_no_recall_in_csv_and_report(tmp_path):
    """Before: recall 0 (confusion_test.csv 0.000000, console acc:0.0) for a class with no test image,
    where the evaluation JSONs give null."""
    matrix = np.array([[2, 1, 0], [0, 0, 0], [1, 0, 3]])
    recalls = confusion.recalls(matrix)
    assert recalls[0] == pytest.approx(2 / 3) and np.isnan(recalls[1]) and recalls[2] == pytest.approx(3 / 4)
    confusion.write_csv(tmp_path / "c.csv", matrix, ["a", "b", "c"])
    assert (tmp_path / "c.csv").read_text().splitlines() == [
        "true\\predicted,a,b,c,n,recall", "a,2,1,0,3,0.666667", "b,0,0,0,0,", "c,1,0,3,4,0.750000"]
    report = confusion.format_report("test", matrix, ["a", "b", "c"])
    assert report.splitlines()[3].endswith("      b, acc:-")
    confusion.write_png(tmp_path / "c.png", matrix, ["a", "b", "c"], "t")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_mode_test_on_a_folder_dataset_says_why_val_is_empty(run_dir, tmp_path, capsys, caplog):
    """A RAF-DB run tested on a folder dataset without a val/ folder: the run's validation names are
    RAF-DB's, so 'val' is empty. The warning said "no image of a class the model can output"."""
    import shutil

    import synthetic_faces

    data = synthetic_faces.write_folder_sample(tmp_path / "faces", n_train=14, n_val=0, n_test=14, seed=1)
    if (data / "val").exists():
        shutil.rmtree(data / "val")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with caplog.at_level("WARNING"):
        assert train_fer.main(["--mode", "test", "--dir", str(run), "--dataset", "folder", "--data", str(data)]) == 0
    assert "val: no image in" in caplog.text and "validation_names.txt names none of its training images" in caplog.text
    assert "val: no image of a class the model can output" not in caplog.text


def test_mode_test_with_no_test_image_of_a_model_class_is_an_error(run_dir, tmp_path, capsys):
    """A folder dataset whose classes the RAF-DB model cannot output (bored, tired): nothing to score,
    an error as in the evaluations (it warned "skipped" three times and exited 0)."""
    import shutil

    import cv2

    import cli_common

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("bored", "tired"):
            (tmp_path / "faces" / split / name).mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(tmp_path / "faces" / split / name / f"{i}.png"),
                            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "faces" / "classes.txt").write_text("bored\ntired\n")  # names that are no emotion
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with pytest.raises(SystemExit) as exit_info:
        cli_common.run_main(lambda: train_fer.main(["--mode", "test", "--dir", str(run), "--dataset", "folder",
                                                    "--data", str(tmp_path / "faces")]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "none of the 4 test images of" in err and "has a class the model outputs" in err
