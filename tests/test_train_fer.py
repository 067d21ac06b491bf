"""Tests of train_fer.py and training.py: schedule, run naming, checkpoints, resume, seeds, mirrored training, errors.

Tiny runs: the small CNN at 64 px on the session's synthetic sample tree, 1-2 epochs.
"""

import csv
import datetime
import json
import logging
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train_fer
import training
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--net", "smallcnn", "--input-size", "64", "--batch", "8", "--momentum", "--augmentation", "no"]


def read_log(run_dir):
    with open(run_dir / training.LOG_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def run_train(tree, run_dir, *extra):
    argv = ["--rafdb", str(tree), *TINY, "--dir", str(run_dir), *extra]
    assert train_fer.main(argv) == 0
    return run_dir


# --------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize("epoch,expected", [(0, 0.002), (39, 0.002), (40, 0.001), (80, 5e-4), (119, 5e-4),
                                            (120, 2.5e-4), (160, 1.25e-4), (200, 6.25e-5), (219, 6.25e-5)])
def test_lr_schedule_matches_spec_table(epoch, expected):
    assert training.learning_rate(epoch, *training.parse_lr(training.DEFAULT_LR)) == pytest.approx(expected)


@pytest.mark.parametrize("text,expected", [("0.002:0.5:40", (0.002, 0.5, 40)), ("0.1", (0.1, 0.5, 40)),
                                           ("1e-3:0.1", (0.001, 0.1, 40)), ("0.05:0.5:8", (0.05, 0.5, 8))])
def test_parse_lr(text, expected):
    assert training.parse_lr(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "fast", "0.1:x", "0.1:0.5:2.5", "-1", "0:0.5:40", "0.1:0.5:0", "1:2:3:4", "nan"])
def test_bad_lr_names_flag_and_form(text):
    with pytest.raises(UserError, match=r"--lr .*init\[:factor\[:every\]\]"):
        training.parse_lr(text)


def test_run_dir_name_from_argstring():
    now = datetime.datetime(2022, 4, 9, 10, 15, 0)
    assert training.run_dir_name(["--net", "senet50", "--lpf", "3"], now) == "_netsenet50_lpf3_20220409_101500"
    assert training.run_dir_name(["--lr=0.002:0.5:40", "--cutout"], now, cutout=True) == \
        "_lr0.002_0.5_40_cutout_20220409_101500_cutout"
    assert "/" not in training.run_dir_name(["--rafdb", "data/RAF-DB"], now)
    # --out-root names the folder that receives the run: not repeated in the run's name (it was)
    for argv in (["--net", "senet50", "--out-root", "/tmp/runs", "--lpf", "3"],
                 ["--out-root=runs", "--net", "senet50", "--lpf", "3"],
                 ["--net", "senet50", "--out-r", "/tmp/runs", "--lpf", "3"]):  # argparse's abbreviation
        # (without_out_root takes any --ou... prefix for --out-root: no other flag may start so)
        assert [o for a in train_fer.build_parser()._actions for o in a.option_strings if o.startswith("--ou")] \
            == ["--out-root"]
        assert training.run_dir_name(argv, now) == "_netsenet50_lpf3_20220409_101500"
    # a command longer than a file name allows: 191 bytes, "_", 8 hex digits of the SHA-256 of the whole
    argv = ["--rafdb", "/mnt/datasets/facial_expression_recognition/é" * 6, "--net", "senet50", "--center-loss"]
    whole = "".join(argv).replace("--", "_").replace("/", "_").encode("utf-8")
    import hashlib

    name = training.run_dir_name(argv, now, cutout=True)
    stem = name.removesuffix("_20220409_101500_cutout")
    assert stem.endswith("_" + hashlib.sha256(whole).hexdigest()[:8])
    assert whole.startswith(stem[:-9].encode("utf-8")) and 190 <= len(stem[:-9].encode("utf-8")) <= 191
    assert len(name.encode("utf-8")) <= 255


# --------------------------------------------------------------------------------------------
# Training runs (in-process)


@pytest.fixture(scope="module")
def two_epochs(sample_tree, tmp_path_factory):
    return run_train(sample_tree, tmp_path_factory.mktemp("runs") / "two", "--epochs", "2", "--lr", "0.02:0.5:1")


def test_training_lowers_loss_and_writes_run_dir(two_epochs, sample_tree, capsys):
    rows = read_log(two_epochs)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    # the schedule is set at each epoch start: 0.02 · 0.5^e
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([0.02, 0.01])
    config = json.loads((two_epochs / "run.json").read_text())
    for key in ("net", "input_shape", "channel_order", "preprocessing", "preprocessing_in_model", "mean_order",
                "labels", "class_names", "crop", "lpf", "augmentation", "cutout", "seed", "val_split",
                "val_fraction", "epochs", "batch", "lr", "momentum", "versions", "argv"):
        assert key in config, key
    assert config["input_shape"] == [64, 64, 3] and config["net"] == "smallcnn" and config["momentum"] == 0.9
    assert config["status"] == "done"
    # hold-out: round(10 %) of each class of the filtered training images
    import rafdb_dataset

    train = rafdb_dataset.load_labels(sample_tree, "train", "soft")
    expected = sum(round(0.1 * n) for n in np.bincount(train.classes, minlength=7))
    held = training.read_name_lines(two_epochs / training.VALIDATION_NAMES)
    assert len(held) == expected and set(held) <= set(train.names)
    test = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    result = json.loads((two_epochs / "results.json").read_text())
    assert result["n"] == len(test) and result["labels"] == "soft"
    best = training.load_checkpoint(two_epochs / result["checkpoint"], compile=False)
    correct = int(np.sum(independent_predictions(best, sample_tree, test.names) == test.classes))
    assert result["correct"] == correct and result["accuracy"] == pytest.approx(correct / len(test))
    assert config["test"]["accuracy"] == result["accuracy"]


def independent_predictions(model, tree, names, size=64):
    """Class predictions read with OpenCV directly (RGB, exact 100 px frame, bilinear resize)."""
    import cv2

    images = []
    for name in names:
        bgr = cv2.imread(str(Path(tree) / "basic" / "Image" / "aligned" / (Path(name).stem + "_aligned.jpg")))
        assert bgr is not None, name
        images.append(cv2.resize(bgr[:, :, ::-1], (size, size), interpolation=cv2.INTER_LINEAR))
    return np.argmax(model.predict(np.asarray(images, dtype="float32"), verbose=0), axis=1)


def test_checkpoint_selection_on_a_scripted_accuracy_sequence(tmp_path):
    """val accuracy 0.3, 0.5, 0.5, 0.4, 0.7 -> checkpoints of epochs 1, 2 and 5 (1-based, strict >)."""
    class Model:
        saved = []

        def save(self, path):
            import h5py

            h5py.File(path, "w").close()  # an HDF5 file: checkpoint_last.hdf5 gets the state written into it
            self.saved.append(Path(path).name)

    class Args:
        lr_schedule, bn_recalibrate = (0.1, 0.5, 40), 0

    state = {"best": None, "best_epoch": None, "completed_epochs": 0}
    checkpoint = training.make_callbacks(Args(), tmp_path, state)[-1]
    checkpoint.set_model(Model())
    for epoch, value in enumerate([0.3, 0.5, 0.5, 0.4, 0.7]):
        checkpoint.on_epoch_end(epoch, {"val_categorical_accuracy": value})
    assert sorted(p.name for p in tmp_path.glob("checkpoint.*.hdf5")) == [
        "checkpoint.01.hdf5", "checkpoint.02.hdf5", "checkpoint.05.hdf5"]
    assert (tmp_path / "checkpoint_last.hdf5").is_file() and not list(tmp_path.glob(".*tmp*"))
    assert state == {"best": 0.7, "best_epoch": 5, "completed_epochs": 5}
    assert json.loads((tmp_path / "train_state.json").read_text()) == state
    assert training.checkpoint_state(tmp_path / "checkpoint_last.hdf5") == (state, None)


def test_saved_checkpoints_hold_strictly_improving_validation_accuracy(two_epochs, sample_tree):
    """Each checkpoint.EE.hdf5, re-evaluated on the held-out images, beats the ones before it."""
    held = training.read_name_lines(two_epochs / training.VALIDATION_NAMES)
    import rafdb_dataset

    train = rafdb_dataset.load_labels(sample_tree, "train", "soft")
    truth = dict(zip(train.names, train.classes))
    expected = np.array([truth[name] for name in held])
    found = sorted(two_epochs.glob("checkpoint.*.hdf5"))
    assert found and found[0].name in ("checkpoint.01.hdf5", "checkpoint.02.hdf5")
    accuracies = []
    for path in found:
        model = training.load_checkpoint(path, compile=False)
        accuracies.append(np.mean(independent_predictions(model, sample_tree, held) == expected))
    assert all(b > a for a, b in zip(accuracies, accuracies[1:]))
    # a checkpoint is missing only for an epoch that did not improve on the best before it
    last = training.load_checkpoint(two_epochs / training.LAST_CHECKPOINT, compile=False)
    last_accuracy = np.mean(independent_predictions(last, sample_tree, held) == expected)
    if not (two_epochs / "checkpoint.02.hdf5").is_file():
        assert last_accuracy <= accuracies[-1]
    state = json.loads((two_epochs / training.STATE_FILE).read_text())
    assert state["completed_epochs"] == 2 and state["best"] == pytest.approx(accuracies[-1], abs=1e-6)


def test_csv_log_rows_are_written_through_a_rename(tmp_path):
    path = tmp_path / training.LOG_FILE
    training.append_log_row(path, 0, {"loss": 1.5, "val_loss": 2.0, "learning_rate": np.float32(0.02)})
    inode = path.stat().st_ino
    training.append_log_row(path, 1, {"val_loss": 1.0, "loss": 1.25, "learning_rate": 0.01})
    assert path.stat().st_ino != inode  # replaced, not appended in place
    assert path.read_text() == "epoch,learning_rate,loss,val_loss\n0,0.02,1.5,2.0\n1,0.01,1.25,1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == [training.LOG_FILE]


def test_mode_test_reports_results_accuracy(two_epochs, sample_tree, capsys):
    result = json.loads((two_epochs / "results.json").read_text())
    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(two_epochs), "--rafdb", str(sample_tree)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}" in out
    assert result["validation"] == "holdout (0.1 of train)"  # RAF-DB has no validation split of its own


def test_mode_test_refuses_a_lambda_layer_with_the_scripts_own_advice(sample_tree, tmp_path):
    """A .keras model with a Lambda layer is refused (its code never runs), and the message speaks of
    this command line, not of Keras's Python API (safe_mode=False, enable_unsafe_deserialization)."""
    import keras

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t * 1.0)(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lam.keras")
    with pytest.raises(UserError, match=r"lam\.keras: the checkpoint contains a Lambda layer \(arbitrary Python "
                                        r"code\), which train_fer\.py never loads .*eval_corrupted_rafdb\.py --unsafe$") \
            as error:
        train_fer.main(["--mode", "test", "--checkpoint", str(tmp_path / "lam.keras"), "--rafdb", str(sample_tree)])
    assert "safe_mode" not in str(error.value)


def test_mode_test_with_a_relative_rafdb_as_the_docs_write_it(two_epochs, sample_tree, capsys, monkeypatch):
    """--rafdb given in another spelling than the run's recorded --data (relative here): the folder
    on the command line is used, not refused as disagreeing with the run's."""
    result = json.loads((two_epochs / "results.json").read_text())
    monkeypatch.chdir(sample_tree.parent)
    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(two_epochs), "--rafdb", sample_tree.name]) == 0
    assert f"({result['correct']}/{result['n']}" in capsys.readouterr().out
    assert train_fer.main(["--mode", "test", "--dir", str(two_epochs), "--data", sample_tree.name]) == 0


def test_saved_hdf5_reloads_and_predicts_identically(tmp_path):
    import keras

    import models

    keras.utils.set_random_seed(1)
    model = models.build_model("smallcnn", 64)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    y = np.eye(7, dtype="float32")[rng.integers(0, 7, 8)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "checkpoint.01.hdf5"
    training.save_model_atomically(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.01.hdf5"]  # no temporary left behind
    loaded = training.load_checkpoint(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_continues_at_right_epoch_with_optimizer_state(two_epochs, sample_tree, tmp_path, caplog):
    run_dir = run_train(sample_tree, tmp_path / "resumed", "--epochs", "1", "--lr", "0.02:0.5:1")
    with caplog.at_level("WARNING"):
        first = training.load_checkpoint(run_dir / training.LAST_CHECKPOINT)
    # Keras's "compiled metrics have yet to be built" line, logged on every resume, is not shown
    assert "compiled metrics" not in caplog.text and logging.getLogger("absl").level != logging.ERROR
    absl = logging.getLogger("absl")  # only that line: another absl warning still shows
    with caplog.at_level("WARNING"):
        absl.warning("Compiled the loaded model, but the compiled metrics have yet to be built. x")
        absl.warning("optimizer state not loaded")
    assert "optimizer state not loaded" in caplog.text and "compiled metrics" not in caplog.text
    steps = int(first.optimizer.iterations.numpy())
    momentum = [np.asarray(v) for v in first.optimizer.variables if "momentum" in v.path]
    assert steps > 0 and momentum and any(np.abs(m).sum() > 0 for m in momentum)
    # same seed: the first epoch equals the continuous run's first epoch
    assert read_log(run_dir)[0]["loss"] == read_log(two_epochs)[0]["loss"]
    run_train(sample_tree, run_dir, "--epochs", "2", "--lr", "0.02:0.5:1", "--resume")
    rows = read_log(run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]  # appended, continued at epoch index 1
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01)  # the schedule continues
    # epoch 2 sees the same batches (the pipeline seed depends on the epoch, not on the process)
    continuous_rows = read_log(two_epochs)
    for key in ("loss", "val_loss", "val_categorical_accuracy"):
        assert float(rows[1][key]) == pytest.approx(float(continuous_rows[1][key]), rel=1e-4, abs=1e-6), key
    resumed = training.load_checkpoint(run_dir / training.LAST_CHECKPOINT)
    continuous = training.load_checkpoint(two_epochs / training.LAST_CHECKPOINT)
    assert int(resumed.optimizer.iterations.numpy()) == 2 * steps == int(continuous.optimizer.iterations.numpy())
    assert json.loads((run_dir / training.STATE_FILE).read_text())["completed_epochs"] == 2
    assert json.loads((run_dir / "run.json").read_text())["resumed"][0]["from_epoch"] == 1


# --------------------------------------------------------------------------------------------
# Errors


def test_bad_inputs_raise_clear_user_errors(sample_tree, tmp_path, capsys):
    base = ["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(tmp_path / "r")]
    with pytest.raises(UserError, match="--lr"):
        train_fer.main(base + ["--lr", "fast"])
    with pytest.raises(UserError, match=r"--pretraining .*missing\.h5"):
        train_fer.main(base + ["--pretraining", str(tmp_path / "missing.h5")])
    with pytest.raises(UserError, match=r"--pretraining vggface2: .*nothing is downloaded"):
        train_fer.main(base + ["--pretraining", "vggface2"])
    with pytest.raises(UserError, match=r"--pretraining vggface: .*rcmalli_vggface_tf_notop_senet50\.h5"):
        train_fer.main(base[:2] + ["--net", "senet50", "--epochs", "1", "--pretraining", "vggface"])
    # a weights file of another network: no layer matches, so nothing would be loaded (it trained from
    # random weights, exit 0, with one INFO line '0 layers matched' and run.json naming the file)
    import keras

    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Dense(3, name="elsewhere")(keras.layers.Flatten(name="flat")(inputs)))
    other.save(tmp_path / "other.keras")
    with pytest.raises(UserError, match=r"--pretraining \S+other\.keras: no layer of the file matches a layer of "
                                        r"--net smallcnn by name and shape \(0 of the same name with other shapes; "
                                        r"the file's layers: elsewhere\), so nothing would be loaded"):
        train_fer.main(base + ["--pretraining", str(tmp_path / "other.keras")])
    assert not any((tmp_path / "r").glob("checkpoint*"))
    with pytest.raises(UserError, match=r"--bn-recalibrate -1: expected an integer >= 0"):
        train_fer.main(base + ["--bn-recalibrate", "-1"])
    with pytest.raises(UserError, match=r"--bn-recalibrate 8: not supported with --distribute mirrored"):
        train_fer.main(base + ["--bn-recalibrate", "8", "--distribute", "mirrored"])
    with pytest.raises(UserError, match=r"--rafdb .*nowhere"):
        train_fer.main(["--rafdb", str(tmp_path / "nowhere"), *TINY, "--epochs", "1", "--dir", str(tmp_path / "r2")])
    with pytest.raises(UserError, match="--resume needs --dir"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--resume"])
    with pytest.raises(UserError, match=r"--epoch 3: only used with --mode test"):
        train_fer.main(base + ["--epoch", "3"])
    with pytest.raises(UserError, match=r"--checkpoint .*c\.hdf5: only used with --mode test"):
        train_fer.main(base + ["--checkpoint", str(tmp_path / "c.hdf5")])
    with pytest.raises(UserError, match=r"--cpu-devices 2: only used with --distribute mirrored.*none"):
        train_fer.main(base + ["--cpu-devices", "2"])
    for seed in ("-1", str(2 ** 32)):  # an argparse error (tests/test_numeric_flags.py)
        with pytest.raises(SystemExit):
            train_fer.main(base + [f"--seed={seed}"])
        assert f"--seed: expected an integer from 0 to 4294967295, got '{seed}'" in capsys.readouterr().err
    for size in ("-64", "100000"):  # 100000: OpenCV failed to allocate 30 GB inside tf.data, a traceback
        with pytest.raises(UserError, match=rf"--input-size {size}: expected a side from 1 to 4096 px"):
            train_fer.main(base + ["--input-size", size])
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
    with pytest.raises(SystemExit) as excinfo:
        train_fer.main(base + ["--net", "alexnet"])
    assert excinfo.value.code == 2 and "--net" in capsys.readouterr().err


def test_classes_without_training_images_are_named_in_a_warning(caplog):
    from datasets.base import LabelSet

    hard = np.eye(4, dtype=np.float32)[[0, 0, 2, 2, 0]]  # classes b and d never occur
    soft = np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0]], np.float32)  # c has no mass
    assert training.empty_classes(hard, "abcd") == ["b", "d"]
    assert training.empty_classes(soft, "abc") == ["c"]
    assert training.empty_classes(np.eye(3, dtype=np.float32), "abc") == []
    with caplog.at_level("WARNING", logger=training.LOG.name):
        training.warn_empty_classes(LabelSet(["x"] * 5, hard, "hard", "train"), "abcd", "folder dataset")
    assert "no training image of class(es) b, d" in caplog.text and "folder dataset" in caplog.text


def test_validation_names_keep_spaces_unicode_and_line_breaks(tmp_path):
    names = ["train/angry/img 012.jpg", "é ü.png", 'a"b.png', '"quoted.png', "two\nlines.png"]
    text = training.name_lines(names)
    assert text == ('train/angry/img 012.jpg\né ü.png\na"b.png\n"\\"quoted.png"\n"two\\nlines.png"\n')
    path = tmp_path / training.VALIDATION_NAMES
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")  # CRLF and a blank line
    assert training.read_name_lines(path) == names
    path.write_text('"unterminated\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"validation_names\.txt, line 1"):
        training.read_name_lines(path)


def test_mode_test_splits_off_held_out_names_with_spaces(tmp_path, random_faces):
    root = random_faces(tmp_path / "faces", ("happy", "sad"), 4, name="img {index} é.png")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    held = ["train/happy/img 1 é.png", "train/sad/img 3 é.png"]  # the folder dataset's ids
    (run_dir / training.VALIDATION_NAMES).write_text(training.name_lines(held), encoding="utf-8")
    args = train_fer.parse_args(["--mode", "test", "--dataset", "folder", "--data", str(root), "--dir", str(run_dir)])
    sets = training.test_mode_sets(args, run_dir)
    assert sorted(sets["val"].names) == held
    assert len(sets["train"]) == 6 and not set(held) & set(sets["train"].names)


@pytest.mark.parametrize("where, error, status", [("train_epochs", KeyboardInterrupt, "interrupted"),
                                                   ("train_epochs", MemoryError, "failed"),
                                                   ("evaluate_test", KeyboardInterrupt, "interrupted")])
def test_a_run_stopped_in_training_says_so_in_run_json(sample_tree, tmp_path, monkeypatch, where, error, status):
    """Stopped in the epochs, or in the final test evaluation after them."""
    def stop(*_args, **_kwargs):
        assert json.loads((run_dir / "run.json").read_text())["status"] == "training"
        raise error

    run_dir = tmp_path / "r"
    monkeypatch.setattr(training, where, stop)
    with pytest.raises(error):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1" if where == "evaluate_test" else "2",
                        "--dir", str(run_dir)])
    assert json.loads((run_dir / "run.json").read_text())["status"] == status


def test_mode_test_on_another_folder_dataset_keeps_the_runs_own_confusion_files(tmp_path, random_faces):
    mine = random_faces(tmp_path / "mine", ("happy", "sad"), 10, seed=1)
    theirs = random_faces(tmp_path / "theirs", ("happy", "sad"), 3, seed=2)
    run_dir = tmp_path / "run"
    base = ["--dataset", "folder", *TINY[:2], "--input-size", "64", "--batch", "4", "--augmentation", "no"]
    assert train_fer.main([*base, "--data", str(mine), "--epochs", "1", "--dir", str(run_dir)]) == 0
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir)]) == 0
    own = (run_dir / "confusion_test.csv").read_text()
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--dataset", "folder", "--data", str(theirs)]) == 0
    assert (run_dir / "confusion_test.csv").read_text() == own  # kept
    rows = (run_dir / "confusion_theirs_test.csv").read_text().splitlines()[1:]
    assert sum(int(row.split(",")[3]) for row in rows) == 6  # n: theirs has 6 test images


@pytest.mark.parametrize("config, words", [
    (None, "TF_CONFIG is not set"),
    ("{bad json", "TF_CONFIG: not valid JSON"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no non-empty cluster.worker list"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "must name a type of the cluster"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "task index 3 is outside the 1 worker address"),
])
def test_a_bad_tf_config_is_a_user_error(sample_tree, tmp_path, monkeypatch, config, words):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(UserError, match=words):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--distribute", "multiworker",
                        "--dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_an_unreadable_test_image_is_found_before_the_first_epoch(sample_tree, tmp_path):
    """A test image that no reader opens: the error names it before any epoch runs (no checkpoint is
    written); it was found only after the last epoch, when the test set was first read."""
    import shutil

    tree = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, tree)
    import rafdb_dataset

    name = rafdb_dataset.load_labels(tree, "test", "soft").names[2]  # a face the test set scores
    broken = rafdb_dataset.aligned_path(tree, name)
    broken.write_bytes(b"garbage, not a JPEG")
    with pytest.raises(UserError, match=rf"^{broken}: "):
        train_fer.main(["--rafdb", str(tree), *TINY, "--epochs", "1", "--dir", str(tmp_path / "run")])
    assert not list((tmp_path / "run").glob("checkpoint*.hdf5"))


def test_a_run_dir_inside_the_dataset_is_refused(sample_tree, tmp_path):
    """--dir (or --out-root) inside the dataset read: its checkpoints would sit among the faces and
    every later command on the tree would stop at them ("not an image file"); refused before any
    folder is made. Beside the dataset is fine (the check does not refuse everything)."""
    for flag, inside in (("--dir", sample_tree / "basic" / "Image" / "aligned" / "run"),
                         ("--out-root", sample_tree / "runs")):
        with pytest.raises(UserError) as error:
            train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", flag, str(inside)])
        assert str(error.value).startswith(f"{flag} {inside}: lies inside the dataset {sample_tree}")
        assert not inside.exists()


def test_unwritable_run_dir_is_refused_before_training(tmp_path, monkeypatch):
    """--dir naming a file, or under a file, and --out-root under a file: UserError before any data
    is read (the --rafdb given does not exist, so reading it would be another error)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setattr(training, "open_data", lambda args: pytest.fail("data read before the check"))
    base = ["--rafdb", str(tmp_path / "nowhere"), *TINY, "--epochs", "1"]
    with pytest.raises(UserError) as error:
        train_fer.main(base + ["--dir", str(a_file)])
    assert str(error.value) == f"--dir {a_file}: is a file; expected a folder to write into"
    with pytest.raises(UserError) as error:
        train_fer.main(base + ["--dir", str(a_file / "run")])
    assert str(error.value).startswith(f"--dir {a_file / 'run'}: {a_file} is a file, not a folder")
    with pytest.raises(UserError) as error:
        train_fer.main(base + ["--out-root", str(a_file / "runs")])
    assert str(error.value).startswith(f"--out-root {a_file / 'runs'}: {a_file} is a file")
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_user_error_exits_2_without_traceback(tmp_path):
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(tmp_path), *TINY, "--lr", "0.1:half"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: --lr '0.1:half': expected init[:factor[:every]]" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_training_image_exits_2_naming_the_file(sample_tree, tmp_path):
    import shutil

    tree = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, tree)
    import rafdb_dataset

    victim = Path(rafdb_dataset.load_labels(tree, "train", "soft").aligned_paths(tree)[0])
    victim.write_bytes(b"not an image")
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(tree), *TINY, "--epochs", "1",
               "--val-split", "test", "--dir", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and victim.name in result.stderr


# --------------------------------------------------------------------------------------------
# Mirrored training on 2 logical CPU devices (subprocess: devices are configured before TF starts)


@pytest.mark.slow
def test_mirrored_two_cpu_devices_matches_single_device(sample_tree, tmp_path):
    common = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(sample_tree), "--net", "smallcnn",
              "--input-size", "64", "--batch", "16", "--epochs", "1", "--lr", "0.01", "--augmentation", "no"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    logs = {}
    for name, extra in (("single", []), ("mirrored", ["--distribute", "mirrored", "--cpu-devices", "2"])):
        result = subprocess.run(common + ["--dir", str(tmp_path / name)] + extra, cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        logs[name] = read_log(tmp_path / name)[0]
    assert "MirroredStrategy with 2 replicas" in result.stderr
    # BatchNormalization uses per-replica statistics under MirroredStrategy, so the match is approximate
    assert float(logs["mirrored"]["loss"]) == pytest.approx(float(logs["single"]["loss"]), rel=0.05)
    assert float(logs["mirrored"]["val_loss"]) == pytest.approx(float(logs["single"]["val_loss"]), rel=0.05)


# --------------------------------------------------------------------------------------------
# Resume uses the run's own settings; best from the log; epoch seeds


def test_resume_with_only_dir_uses_the_runs_settings(sample_tree, tmp_path):
    run_dir = run_train(sample_tree, tmp_path / "run", "--epochs", "1", "--lr", "0.02:0.5:1", "--seed", "3")
    before = json.loads((run_dir / "run.json").read_text())
    # nothing but the directory and more epochs: net, size, data, schedule, seed... come from run.json
    assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2"]) == 0
    rows = read_log(run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01)  # 0.02 · 0.5^1, the run's schedule
    after = json.loads((run_dir / "run.json").read_text())
    assert after["input_shape"] == [64, 64, 3] and after["net"] == "smallcnn" and after["seed"] == 3
    assert after["argv"] == before["argv"] and after["batch"] == 8 and after["epochs"] == 2
    assert after["resumed"][0]["argv"] == ["--resume", "--dir", str(run_dir), "--epochs", "2"]
    # the run's data folder repeated as a relative --rafdb (the original command plus --resume): the
    # same folder; it was refused as "--rafdb demo/RAF-DB and --data /abs/.../RAF-DB disagree"
    cwd = os.getcwd()
    os.chdir(sample_tree.parent)
    try:
        assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "3", "--rafdb", sample_tree.name]) == 0
    finally:
        os.chdir(cwd)
    assert [int(row["epoch"]) for row in read_log(run_dir)] == [0, 1, 2]
    # a flag that contradicts the run is refused, naming the flag and the run's value
    with pytest.raises(UserError, match=r"--batch 16: conflicts .* has 8"):
        train_fer.main(["--resume", "--dir", str(run_dir), "--batch", "16"])
    with pytest.raises(UserError, match=r"--net mobilenetv2: conflicts .* has 'smallcnn'"):
        train_fer.main(["--resume", "--dir", str(run_dir), "--net", "mobilenetv2"])


def test_resume_settings_from_an_older_run_json_with_argv_only(tmp_path, sample_tree):
    (tmp_path / "run.json").write_text(json.dumps({"argv": ["--rafdb", str(sample_tree), "--net", "smallcnn",
                                                            "--input-size", "64", "--lr", "0.05:0.5:8",
                                                            "--epochs", "12", "--momentum"]}))
    args = train_fer.parse_args(["--resume", "--dir", str(tmp_path), "--workers", "1"])
    training.apply_run_args(args, tmp_path, train_fer.build_parser().parse_args)
    assert (args.net, args.input_size, args.lr, args.epochs, args.momentum) == ("smallcnn", 64, "0.05:0.5:8", 12, True)
    assert args.lr_schedule == (0.05, 0.5, 8) and args.workers == 1 and args.batch == 64
    args = train_fer.parse_args(["--resume", "--dir", str(tmp_path), "--epochs", "20", "--input-size", "64"])
    # same value as the run: no conflict; --epochs raised
    training.apply_run_args(args, tmp_path, train_fer.build_parser().parse_args)
    assert args.epochs == 20
    args = train_fer.parse_args(["--resume", "--dir", str(tmp_path), "--lr", "0.1"])
    with pytest.raises(UserError, match=r"--lr 0.1: conflicts .* has '0.05:0.5:8'"):
        training.apply_run_args(args, tmp_path, train_fer.build_parser().parse_args)


def test_best_from_log_is_the_maximum_up_to_the_epoch(tmp_path):
    (tmp_path / training.LOG_FILE).write_text(
        "epoch,categorical_accuracy,loss,val_categorical_accuracy\n"
        "0,0.2,1.9,0.30\n1,0.3,1.7,0.55\n2,0.4,1.5,0.50\n3,0.5,1.3,0.70\n")
    assert training.best_from_log(tmp_path, 3) == (pytest.approx(0.55), 2)
    assert training.best_from_log(tmp_path, 4) == (pytest.approx(0.70), 4)
    assert training.best_from_log(tmp_path / "none", 4) is None
    # a run directory with only checkpoint.02.hdf5 (no train_state.json) resumes with best 0.55, not None
    (tmp_path / "checkpoint.02.hdf5").write_bytes(b"")
    path, epoch, state = training.resume_point(tmp_path)
    assert path.name == "checkpoint.02.hdf5" and epoch == 2 and state["best"] == pytest.approx(0.55)


def test_epoch_seeds_differ_per_epoch_and_are_reproducible():
    seeds = [training.epoch_seed(0, epoch) for epoch in range(5)]
    assert len(set(seeds)) == 5 and seeds == [training.epoch_seed(0, epoch) for epoch in range(5)]
    assert training.epoch_seed(1, 0) != training.epoch_seed(0, 1)
    assert all(0 <= seed < 2 ** 31 for seed in seeds)


# --------------------------------------------------------------------------------------------
# Precise BatchNorm (--bn-recalibrate)


def _bn_inputs(model, images):
    """Each BN layer's input in training mode, computed through a sub-model (independent of the code)."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(model.input, [layer.input for layer in layers])
    return layers, [np.asarray(t, dtype=np.float64) for t in probe(images, training=True)]


def test_bn_recalibrate_sets_batch_statistics():
    import keras

    import models

    keras.utils.set_random_seed(0)
    model = models.build_model("smallcnn", 64)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (6, 64, 64, 3)).astype("float32")
    b = rng.uniform(0, 128, (6, 64, 64, 3)).astype("float32")
    layers, inputs_a = _bn_inputs(model, a)
    assert len(layers) == 3
    assert training.recalibrate_batchnorm(model, [a, a, a]) == 3
    for layer, x in zip(layers, inputs_a):
        np.testing.assert_allclose(np.asarray(layer.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
        assert layer.momentum == pytest.approx(0.99)  # restored
    # two different batches: the equal-weight average of their statistics
    _, inputs_b = _bn_inputs(model, b)
    training.recalibrate_batchnorm(model, [(a, None), (b, None)])
    for layer, xa, xb in zip(layers, inputs_a, inputs_b):
        np.testing.assert_allclose(np.asarray(layer.moving_mean),
                                   (xa.mean(axis=(0, 1, 2)) + xb.mean(axis=(0, 1, 2))) / 2, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(layer.moving_variance),
                                   (xa.var(axis=(0, 1, 2)) + xb.var(axis=(0, 1, 2))) / 2, rtol=1e-3, atol=1e-4)


def test_training_with_bn_recalibrate_validates_on_recalibrated_model(sample_tree, tmp_path):
    run_dir = run_train(sample_tree, tmp_path / "bn", "--epochs", "1", "--lr", "0.02", "--bn-recalibrate", "2")
    config = json.loads((run_dir / "run.json").read_text())
    assert config["bn_recalibrate"] == 2
    # the saved checkpoint carries the recalibrated statistics: re-evaluating it reproduces val accuracy
    import rafdb_dataset
    import input_pipeline

    held = set(training.read_name_lines(run_dir / training.VALIDATION_NAMES))
    train = rafdb_dataset.load_labels(sample_tree, "train", "soft")
    val = train.subset([i for i, name in enumerate(train.names) if name in held])
    model = training.load_checkpoint(run_dir / training.LAST_CHECKPOINT, compile=False)
    dataset = input_pipeline.make_dataset(val.aligned_paths(sample_tree), None, image_size=(64, 64), batch_size=8)
    accuracy = np.mean(np.argmax(model.predict(dataset, verbose=0), axis=1) == val.classes)
    assert accuracy == pytest.approx(float(read_log(run_dir)[0]["val_categorical_accuracy"]), abs=1e-6)


# --------------------------------------------------------------------------------------------
# Mixed precision


@pytest.fixture
def mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_checkpoint_restores_inner_sgd_state(mixed_precision, tmp_path):
    import keras

    import models

    keras.utils.set_random_seed(2)
    model = models.build_model("smallcnn", 64)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    y = np.eye(7, dtype="float32")[[0, 1, 2, 3]]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # one step
    path = tmp_path / "checkpoint.01.hdf5"
    training.save_model_atomically(model, path)
    loaded = training.load_checkpoint(path)
    assert type(loaded.optimizer).__name__ == "LossScaleOptimizer"
    inner = loaded.optimizer.inner_optimizer
    assert int(inner.iterations.numpy()) == 1 == int(model.optimizer.inner_optimizer.iterations.numpy())
    slots = [v for v in loaded.optimizer.variables if "momentum" in v.path]
    # conv, BN (gamma, beta), fc and classifier: 8 layers x 2 trainable variables
    assert len(slots) == 16 and all(np.abs(np.asarray(v)).sum() > 0 for v in slots)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for original, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        assert restored.path.endswith(original.path.split("/")[-1])
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original))


def test_mixed_precision_training_with_pretraining_report(mixed_precision, sample_tree, tmp_path):
    import keras

    import models

    keras.utils.set_random_seed(5)
    donor = models.build_model("smallcnn", 64)
    weights = tmp_path / "donor.weights.h5"
    donor.save_weights(weights)
    run_dir = run_train(sample_tree, tmp_path / "mp", "--epochs", "1", "--lr", "0.02", "--mixed-precision",
                        "--pretraining", str(weights))
    config = json.loads((run_dir / "run.json").read_text())
    assert config["mixed_precision"] is True and config["status"] == "done"
    report = config["pretraining_report"]
    # conv x3, bn x3, fc, classifier carry weights; the donor has the same architecture
    assert report["matched"] == 8 and report["mismatched"] == [] and report["missing"] == []
    assert config["versions"]["code"]  # git describe, or "unknown"
    loaded = training.load_checkpoint(run_dir / training.LAST_CHECKPOINT)
    assert int(loaded.optimizer.inner_optimizer.iterations.numpy()) > 0


# --------------------------------------------------------------------------------------------
# Fast --help, multiworker


def test_help_does_not_import_keras():
    code = ("import sys, contextlib, io\nimport train_fer\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    train_fer.parse_args(['--help'])\n"
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_a_peer_that_stops_is_a_one_line_failure_of_a_multiworker_run():
    """A worker whose peer died got TensorFlow's UnavailableError traceback (exit 1): now one line
    naming the cause and what to do, exit code 1 (RunFailed, which a scheduler retries); another run's
    errors pass through unchanged."""
    import tensorflow as tf

    from cli_common import RunFailed

    dead_peer = tf.errors.UnavailableError(None, None, "Socket closed\nAdditional GRPC error information ...")
    with pytest.raises(RunFailed, match=r"^--distribute multiworker: a peer worker stopped or cannot be reached "
                                        r"\(UnavailableError: Socket closed\); this worker stops too: start every "
                                        r"worker of TF_CONFIG again with --resume$") as failure:
        with training.peer_errors("multiworker"):
            raise dead_peer
    assert failure.value.exit_code == 1
    with pytest.raises(tf.errors.UnavailableError):
        with training.peer_errors("none"):
            raise dead_peer
    with pytest.raises(ValueError):
        with training.peer_errors("multiworker"):
            raise ValueError("a bug")


def test_multiworker_single_chief_trains_and_writes(sample_tree, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    tf_config = {"cluster": {"chief": [f"localhost:{port}"]}, "task": {"type": "chief", "index": 0}}
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CONFIG=json.dumps(tf_config))
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(sample_tree), *TINY, "--epochs", "1",
               "--lr", "0.02", "--distribute", "multiworker"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "multiworker needs --dir" in result.stderr
    result = subprocess.run(command + ["--dir", str(tmp_path / "mw")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MultiWorkerMirroredStrategy" in result.stderr
    # TensorFlow's own handler (its "INFO:tensorflow:" format) printed every such line a second time
    assert "INFO:tensorflow:" not in result.stderr and "WARNING:tensorflow:" not in result.stderr
    assert (tmp_path / "mw" / training.LAST_CHECKPOINT).is_file() and (tmp_path / "mw" / "results.json").is_file()
    assert "test accuracy" in result.stdout


def test_is_chief_rule():
    class Resolver:
        def __init__(self, task_type, task_id, cluster):
            self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

        def cluster_spec(self):
            class Spec:
                def as_dict(inner):
                    return self._cluster
            return Spec()

    class Strategy:
        def __init__(self, resolver):
            self.cluster_resolver = resolver

    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    without = {"worker": ["b:1", "c:1"]}
    assert training.is_chief(None)
    assert training.is_chief(Strategy(Resolver("chief", 0, with_chief)))
    assert not training.is_chief(Strategy(Resolver("worker", 0, with_chief)))
    assert training.is_chief(Strategy(Resolver("worker", 0, without)))
    assert not training.is_chief(Strategy(Resolver("worker", 1, without)))


def test_deterministic_flag_enables_op_determinism(sample_tree, tmp_path, monkeypatch):
    import tensorflow as tf

    calls = []  # recorded, not enabled: op determinism is process-wide and would outlive this test
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(True))
    run_dir = run_train(sample_tree, tmp_path / "det", "--epochs", "1", "--lr", "0.02", "--deterministic")
    assert calls == [True]
    assert json.loads((run_dir / "run.json").read_text())["deterministic"] is True


def test_mixed_precision_on_the_cpu_with_onednn_is_a_user_error(sample_tree, tmp_path, monkeypatch):
    """No GPU and oneDNN on: float16 would abort the process inside oneDNN; a clear error instead."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with pytest.raises(UserError, match="--mixed-precision.*TF_ENABLE_ONEDNN_OPTS=0"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--dir", str(tmp_path / "mp"), "--mixed-precision"])
    assert not (tmp_path / "mp").exists()


def test_resume_with_fewer_epochs_than_done_is_refused(two_epochs, tmp_path):
    """--resume --epochs 1 on a run of 2 done epochs: exit 2 (a user error), run.json untouched."""
    run_dir = tmp_path / "copy"
    shutil.copytree(two_epochs, run_dir)
    before = (run_dir / "run.json").read_bytes()
    with pytest.raises(UserError, match=r"--epochs 1: .* has already trained 2 epochs"):
        train_fer.main(["--dir", str(run_dir), "--resume", "--epochs", "1"])
    assert (run_dir / "run.json").read_bytes() == before


def test_a_new_run_that_fails_before_training_leaves_no_folder(sample_tree, tmp_path):
    """--input-size 16 is refused by the network only once the data is read: the run folder this
    call created is removed again (an existing --dir is never removed)."""
    run_dir = tmp_path / "runs" / "small"
    with pytest.raises(UserError, match="--net smallcnn: .*64x64"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--input-size", "16", "--dir", str(run_dir)])
    assert not run_dir.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(UserError):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--input-size", "16", "--dir", str(existing)])
    assert existing.is_dir()


@pytest.mark.parametrize("kind", ["randaugment", "augmix", "autoaugment-rafdb", "vggface2", "no"])
def test_cutout_with_another_augmentation_is_refused(sample_tree, tmp_path, kind):
    """--cutout replaces the augmentation: --augmentation X with it trained on random erasing alone while
    run.json and the run name said X."""
    with pytest.raises(UserError, match=rf"--cutout with --augmentation {kind}: random erasing replaces"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY[:-2], "--augmentation", kind, "--cutout", "--epochs", "1",
                        "--dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_cutout_run_records_the_effective_augmentation(sample_tree, tmp_path):
    run_dir = run_train(sample_tree, tmp_path / "r", "--epochs", "1", "--lpf", "0")
    assert json.loads((run_dir / "run.json").read_text())["effective_augmentation"] == "no"
    argv = ["--rafdb", str(sample_tree), *TINY[:-2], "--lpf", "0", "--cutout", "--epochs", "1", "--dir", str(tmp_path / "c")]
    assert train_fer.main(argv) == 0
    config = json.loads((tmp_path / "c" / "run.json").read_text())
    assert (config["augmentation"], config["cutout"], config["effective_augmentation"]) == ("default", True, "cutout")
    assert config["augmix"] is None  # AugMix's width/depth/severity are recorded for AugMix runs only


def test_help_names_the_flags_resume_accepts_anew_and_what_mode_test_does():
    """The description said only --epochs, --workers and -v, while --deterministic and
    --collective-timeout are accepted too; --mode said "on the clean test set" only."""
    import re

    text = " ".join(train_fer.build_parser().format_help().split())
    # the flags that may differ on --resume: the operational ones that are flags of training
    anew = {"epochs", "workers", "verbose", "deterministic", "collective_timeout"}
    assert anew == set(training.OPERATIONAL_FLAGS) - {"dir", "resume", "mode", "checkpoint", "epoch", "out_root"}
    described = re.search(r"only ``(.*?) may be given anew", text).group(1)
    named = {flag.strip("`").lstrip("-").replace("-", "_") for flag in re.findall(r"``-[-a-z]+``", "``" + described)}
    assert {"v" if f == "verbose" else f for f in anew} == named
    mode = re.search(r"--mode \{train,test\} (.*?) --out-root", text).group(1)
    assert "test, validation and train" in mode and "confusion_<part>.csv/.png" in mode


def test_run_json_records_the_learning_rate_schedule_in_use(sample_tree, tmp_path):
    """--lr 0.05 is 0.05 halved every 40 epochs; run.json said only "0.05"."""
    run_dir = run_train(sample_tree, tmp_path / "r", "--epochs", "1", "--lpf", "0", "--lr", "0.05")
    config = json.loads((run_dir / "run.json").read_text())
    assert config["lr"] == "0.05"
    assert config["lr_schedule"] == {"init": 0.05, "factor": 0.5, "every": 40}
    assert config["lr_effective"] == "0.05:0.5:40"
    assert float(read_log(run_dir)[0]["learning_rate"]) == pytest.approx(0.05)


# --------------------------------------------------------------------------------------------
# --val-fraction only where it sizes the hold-out; a finished run resumed


@pytest.mark.parametrize("fraction", ["0.2", "0.1"])  # 0.1, the default, given on the command line is given too
def test_val_fraction_with_val_split_test_is_refused(sample_tree, tmp_path, fraction):
    """--val-split test selects on the test set: --val-fraction was accepted, had no effect, and was
    recorded in run.json as if it sized a hold-out."""
    run_dir = tmp_path / "r"
    with pytest.raises(UserError) as error:
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--val-split", "test",
                        "--val-fraction", fraction, "--dir", str(run_dir)])
    message = str(error.value)
    assert message.startswith(f"--val-fraction {fraction} with --val-split test: ")
    assert "no effect" in message and "--val-split holdout" in message
    assert not run_dir.exists()  # refused before the run folder is made


def test_val_fraction_with_mode_test_is_refused(sample_tree, tmp_path):
    """--mode test takes no hold-out of its own (a run's validation images are listed in its
    validation_names.txt): --val-fraction was accepted and ignored."""
    with pytest.raises(UserError) as error:
        train_fer.main(["--mode", "test", "--dir", str(tmp_path / "no_run"), "--rafdb", str(sample_tree),
                        "--val-fraction", "0.3"])
    assert str(error.value).startswith("--val-fraction 0.3 with --mode test: the test takes no hold-out of its own")


def test_val_fraction_on_a_dataset_with_its_own_validation_split_is_refused(random_faces, tmp_path):
    """A folder dataset with a val/ folder validates on it: no hold-out for --val-fraction to size."""
    root = random_faces(tmp_path / "faces", ("happy", "sad"), 3, splits=("train", "val", "test"))
    run_dir = tmp_path / "r"
    with pytest.raises(UserError) as error:
        train_fer.main(["--dataset", "folder", "--data", str(root), *TINY, "--epochs", "1",
                        "--val-fraction", "0.3", "--dir", str(run_dir)])
    assert str(error.value).startswith("--val-fraction 0.3 with --val-split holdout on --dataset folder: the "
                                       "dataset has its own validation split (val)")
    assert not run_dir.exists()


def test_val_fraction_with_val_split_test_exits_2_without_traceback(tmp_path):
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(tmp_path), *TINY, "--epochs", "1",
               "--val-split", "test", "--val-fraction", "0.25", "--dir", str(tmp_path / "r")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --val-fraction 0.25 with --val-split test: ")


def test_val_fraction_in_run_json_and_on_resume_follows_the_validation_split(two_epochs, sample_tree, tmp_path,
                                                                             caplog):
    """A hold-out run records its --val-fraction and takes it again on --resume; a run selected on
    the test set records none (null), refuses the flag on --resume too, and still resumes, also from
    an older run.json that carries the default 0.1."""
    held_out = tmp_path / "held_out"
    shutil.copytree(two_epochs, held_out)
    assert json.loads((held_out / "run.json").read_text())["val_fraction"] == 0.1
    assert train_fer.main(["--resume", "--dir", str(held_out), "--val-fraction", "0.1"]) == 0  # finished: tests
    assert json.loads((held_out / "run.json").read_text())["val_fraction"] == 0.1
    with pytest.raises(UserError, match=r"--val-fraction 0.2: conflicts .* has 0.1"):
        train_fer.main(["--resume", "--dir", str(held_out), "--val-fraction", "0.2"])

    run_dir = run_train(sample_tree, tmp_path / "r", "--epochs", "1", "--lr", "0.02:0.5:1", "--val-split", "test")
    config = json.loads((run_dir / "run.json").read_text())
    assert (config["val_split"], config["validation"]) == ("test", "test")
    assert config["val_fraction"] is None and config["args"]["val_fraction"] is None
    assert not (run_dir / training.VALIDATION_NAMES).exists()
    # the flag given on resume is refused as on a new run (run.json's null is no conflict to report)
    with pytest.raises(UserError, match=r"^--val-fraction 0.2 with --val-split test: "):
        train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2", "--val-fraction", "0.2"])
    # an older run.json carries the parser's default 0.1 with --val-split test: it still resumes
    config["args"]["val_fraction"] = 0.1
    config["val_fraction"] = 0.1
    (run_dir / "run.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"^--val-fraction 0.1 with --val-split test: "):
        train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2", "--val-fraction", "0.1"])
    assert [int(row["epoch"]) for row in read_log(run_dir)] == [0]  # nothing trained by the refusals
    with caplog.at_level("INFO", logger=training.LOG.name):
        assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2"]) == 0
    assert [int(row["epoch"]) for row in read_log(run_dir)] == [0, 1]
    assert "epochs 2 to 2" in caplog.text  # the epochs left, as before
    after = json.loads((run_dir / "run.json").read_text())
    assert after["val_fraction"] is None and after["args"]["val_fraction"] is None and after["status"] == "done"
    assert after["resumed"][0]["from_epoch"] == 1


def test_resuming_a_finished_run_says_so_without_an_epoch_range(two_epochs, tmp_path, caplog, capsys):
    """--resume of a run that trained all its epochs logged "epochs 3 to 2" before "nothing to train"."""
    import re

    run_dir = tmp_path / "copy"
    shutil.copytree(two_epochs, run_dir)
    rows = read_log(run_dir)
    with caplog.at_level("INFO", logger=training.LOG.name):
        assert train_fer.main(["--resume", "--dir", str(run_dir)]) == 0
    assert f"{run_dir}: finished, all 2 epochs already trained; nothing to train" in caplog.text
    assert not re.search(r"epochs \d+ to \d+", caplog.text), caplog.text
    assert "resuming from" not in caplog.text and "after epoch" not in caplog.text
    assert read_log(run_dir) == rows  # nothing trained
    assert "test accuracy" in capsys.readouterr().out  # the best checkpoint is still tested


def test_a_run_without_hold_out_resumed_on_data_without_a_validation_split_is_refused():
    """run.json records val_fraction null for a run that selected on its dataset's own validation
    split; resumed on a copy of the dataset without that split it would need a hold-out, which changes
    its training images and what its best checkpoint was compared on: refused (it was a TypeError)."""
    import argparse
    import types

    import training

    args = argparse.Namespace(val_split="holdout", val_fraction=None, explicit=set())
    data = types.SimpleNamespace(has_validation=False, root="faces_copy", name="folder")
    with pytest.raises(UserError, match=r"faces_copy: this run selected its checkpoints on the dataset's own "
                                        r"validation split .* this copy of the dataset has none"):
        training.check_val_fraction(args, data)
    assert args.val_fraction is None
    # the same with --val-fraction given on the command line: refused too (a hold-out would start mid-run)
    args = argparse.Namespace(val_split="holdout", val_fraction=0.2, explicit={"val_fraction"}, run_without_holdout=True)
    with pytest.raises(UserError, match=r"this copy of the dataset has none"):
        training.check_val_fraction(args, data)


def test_channel_order_flags_that_would_change_nothing_are_refused(sample_tree, tmp_path):
    """--mean-order applies to vggface2's means, --colour to z-normalisation and the AutoAugment /
    RandAugment policies: given with anything else they were accepted, recorded in run.json, and
    changed nothing. Refused before the run folder is made; with a setting they apply to, accepted."""
    base = ["--rafdb", str(sample_tree), "--net", "smallcnn", "--input-size", "64", "--epochs", "1",
            "--dir", str(tmp_path / "r")]
    with pytest.raises(UserError, match=r"^--mean-order legacy-swapped with --preprocessing full_normalization: "
                                        r"the order of the means applies to --preprocessing vggface2 only"):
        train_fer.main(base + ["--mean-order", "legacy-swapped"])
    with pytest.raises(UserError, match=r"^--colour bgr-compat with --preprocessing scale01 and --augmentation "
                                        r"default: the channel order applies to"):
        train_fer.main(base + ["--colour", "bgr-compat", "--preprocessing", "scale01"])
    with pytest.raises(UserError, match=r"^--colour bgr-compat with --preprocessing vggface2 and --augmentation "
                                        r"cutout:"):  # random erasing replaces the policies
        train_fer.main(base + ["--colour", "bgr-compat", "--preprocessing", "vggface2", "--cutout"])
    assert not (tmp_path / "r").exists()
    for flags in (["--mean-order", "legacy-swapped", "--preprocessing", "vggface2"],
                  ["--colour", "bgr-compat", "--preprocessing", "z_normalization"],
                  ["--colour", "bgr-compat", "--augmentation", "randaugment"],
                  ["--colour", "bgr-compat", "--augmentation", "autoaugment-rafdb"],
                  ["--mean-order", "correct", "--colour", "rgb"]):  # the defaults, spelled out
        training.check_args(train_fer.parse_args(base + flags))
