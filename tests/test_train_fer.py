"""Tests of train_fer.py: schedule, run naming, checkpoints, resume, seeds, mirrored training, errors.

Tiny runs: the small CNN at 64 px on the session's synthetic sample tree, 1-2 epochs.
"""

import csv
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train_fer
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--net", "smallcnn", "--input-size", "64", "--batch", "8", "--momentum", "--augmentation", "no"]


def read_log(run_dir):
    with open(run_dir / train_fer.LOG_FILE, newline="") as handle:
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
    assert train_fer.learning_rate(epoch, *train_fer.parse_lr(train_fer.DEFAULT_LR)) == pytest.approx(expected)


@pytest.mark.parametrize("text,expected", [("0.002:0.5:40", (0.002, 0.5, 40)), ("0.1", (0.1, 0.5, 40)),
                                           ("1e-3:0.1", (0.001, 0.1, 40)), ("0.05:0.5:8", (0.05, 0.5, 8))])
def test_parse_lr(text, expected):
    assert train_fer.parse_lr(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "fast", "0.1:x", "0.1:0.5:2.5", "-1", "0:0.5:40", "0.1:0.5:0", "1:2:3:4", "nan"])
def test_bad_lr_names_flag_and_form(text):
    with pytest.raises(UserError, match=r"--lr .*init\[:factor\[:every\]\]"):
        train_fer.parse_lr(text)


def test_run_dir_name_from_argstring():
    now = datetime.datetime(2022, 4, 9, 10, 15, 0)
    assert train_fer.run_dir_name(["--net", "senet50", "--lpf", "3"], now) == "_netsenet50_lpf3_20220409_101500"
    assert train_fer.run_dir_name(["--lr=0.002:0.5:40", "--cutout"], now, cutout=True) == \
        "_lr0.002_0.5_40_cutout_20220409_101500_cutout"
    assert "/" not in train_fer.run_dir_name(["--rafdb", "data/RAF-DB"], now)


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
    held = (two_epochs / train_fer.VALIDATION_NAMES).read_text().split()
    assert len(held) == expected and set(held) <= set(train.names)
    test = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    result = json.loads((two_epochs / "results.json").read_text())
    assert result["n"] == len(test) and result["labels"] == "soft" and 0 <= result["accuracy"] <= 1
    assert config["test"]["accuracy"] == result["accuracy"]


def test_checkpoints_one_based_on_strict_improvement(two_epochs):
    rows = read_log(two_epochs)
    expected, best = [], -1.0
    for row in rows:
        value = float(row["val_categorical_accuracy"])
        if value > best:
            expected.append(f"checkpoint.{int(row['epoch']) + 1:02d}.hdf5")
            best = value
    found = sorted(path.name for path in two_epochs.glob("checkpoint.*.hdf5"))
    assert found == expected
    assert (two_epochs / train_fer.LAST_CHECKPOINT).is_file()
    state = json.loads((two_epochs / train_fer.STATE_FILE).read_text())
    assert state["completed_epochs"] == 2 and state["best"] == pytest.approx(best)


def test_mode_test_reports_results_accuracy(two_epochs, sample_tree, capsys):
    result = json.loads((two_epochs / "results.json").read_text())
    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(two_epochs), "--rafdb", str(sample_tree)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}" in out


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
    train_fer.save_model_atomically(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.01.hdf5"]  # no temporary left behind
    loaded = train_fer.load_checkpoint(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_continues_at_right_epoch_with_optimizer_state(two_epochs, sample_tree, tmp_path):
    run_dir = run_train(sample_tree, tmp_path / "resumed", "--epochs", "1", "--lr", "0.02:0.5:1")
    first = train_fer.load_checkpoint(run_dir / train_fer.LAST_CHECKPOINT)
    steps = int(first.optimizer.iterations.numpy())
    momentum = [np.asarray(v) for v in first.optimizer.variables if "momentum" in v.path]
    assert steps > 0 and momentum and any(np.abs(m).sum() > 0 for m in momentum)
    # same seed: the first epoch equals the continuous run's first epoch
    assert read_log(run_dir)[0]["loss"] == read_log(two_epochs)[0]["loss"]
    run_train(sample_tree, run_dir, "--epochs", "2", "--lr", "0.02:0.5:1", "--resume")
    rows = read_log(run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]  # appended, continued at epoch index 1
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01)  # the schedule continues
    resumed = train_fer.load_checkpoint(run_dir / train_fer.LAST_CHECKPOINT)
    continuous = train_fer.load_checkpoint(two_epochs / train_fer.LAST_CHECKPOINT)
    assert int(resumed.optimizer.iterations.numpy()) == 2 * steps == int(continuous.optimizer.iterations.numpy())
    assert json.loads((run_dir / train_fer.STATE_FILE).read_text())["completed_epochs"] == 2
    assert json.loads((run_dir / "run.json").read_text())["resumed"][0]["from_epoch"] == 1


# --------------------------------------------------------------------------------------------
# Errors


def test_bad_inputs_raise_clear_user_errors(sample_tree, tmp_path, capsys):
    base = ["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(tmp_path / "r")]
    with pytest.raises(UserError, match="--lr"):
        train_fer.main(base + ["--lr", "fast"])
    with pytest.raises(UserError, match=r"--pretraining .*missing\.h5"):
        train_fer.main(base + ["--pretraining", str(tmp_path / "missing.h5")])
    with pytest.raises(UserError, match=r"--rafdb .*nowhere"):
        train_fer.main(["--rafdb", str(tmp_path / "nowhere"), *TINY, "--epochs", "1", "--dir", str(tmp_path / "r2")])
    with pytest.raises(UserError, match="--resume needs --dir"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--resume"])
    with pytest.raises(SystemExit) as excinfo:
        train_fer.main(base + ["--net", "alexnet"])
    assert excinfo.value.code == 2 and "--net" in capsys.readouterr().err


def test_cli_user_error_exits_2_without_traceback(tmp_path):
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(tmp_path), *TINY, "--lr", "0.1:half"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: --lr '0.1:half': expected init[:factor[:every]]" in result.stderr
    assert "Traceback" not in result.stderr


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
