"""--center-loss (docs/BENCHMARK.md §9.7, §9.9): the centre term and update against numpy, a run that
pulls the embeddings towards their class centres, plain-Keras loading, resume, MirroredStrategy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import center_loss
import rafdb_dataset
import train_fer
import training

REPO = Path(__file__).resolve().parents[1]
TINY = ["--net", "smallcnn", "--input-size", "64", "--lpf", "0", "--batch", "16", "--lr", "0.02:0.5:40",
        "--momentum", "--augmentation", "no", "--seed", "4"]


def small_model():
    import keras

    import models

    keras.utils.set_random_seed(0)
    model = models.build_model("smallcnn", 64, lpf=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    return model


def test_feature_is_the_classifier_input_before_dropout():
    model = small_model()
    assert center_loss.feature_tensor(model) is model.get_layer("fc").output


def test_penalty_and_centre_update_match_numpy():
    model = small_model()
    loss = center_loss.CenterLoss(model, 7, weight=0.5, alpha=0.75)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 128)).astype("float32")
    loss.centers.assign(centers)
    features = rng.normal(size=(6, 128)).astype("float32")
    labels = np.array([2, 2, 0, 5, 2, 0], dtype="int32")
    expected = 0.5 * np.mean([(features[i] - centers[labels[i]]) ** 2 for i in range(6)])
    assert float(loss.penalty(features, labels)) == pytest.approx(expected, rel=1e-5)
    loss.update_centers(features, labels)
    new = centers.copy()
    for j in (0, 2, 5):  # classes in the batch move 25 % of the way to their batch mean
        batch_mean = features[labels == j].mean(axis=0)
        new[j] = centers[j] - 0.25 * (centers[j] - batch_mean)
    np.testing.assert_allclose(loss.centers.numpy(), new, rtol=1e-5, atol=1e-6)


def embedding_spread(run_dir, tree):
    """Mean squared distance of the training embeddings (layer 'fc', read independently) to their class means."""
    import cv2
    import keras

    import models  # noqa: F401

    checkpoint = sorted(run_dir.glob("checkpoint.*.hdf5"))[-1]
    model = keras.models.load_model(checkpoint, compile=False)  # plain Keras: no custom objects, no custom loss
    assert model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape == (1, 7)
    embed = keras.Model(model.input, model.get_layer("fc").output)
    train = rafdb_dataset.load_labels(tree, "train", "soft")
    images = np.asarray([cv2.resize(cv2.imread(str(rafdb_dataset.aligned_path(tree, n)))[:, :, ::-1], (64, 64))
                         for n in train.names], "float32")
    features = embed.predict(images, verbose=0).astype(np.float64)
    total = 0.0
    for j in np.unique(train.classes):
        members = features[train.classes == j]
        total += ((members - members.mean(axis=0)) ** 2).sum()
    return total / features.size


@pytest.fixture(scope="module")
def two_runs(sample_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("center")
    # weight 0.5 instead of 0.01: over 3 short epochs (12 steps) the default's pull is too small to measure
    for name, extra in (("plain", []), ("center", ["--center-loss", "--center-loss-weight", "0.5"])):
        assert train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "3", "--dir", str(root / name),
                               *extra]) == 0
    return root


def test_center_loss_pulls_embeddings_to_their_class_centres(two_runs, sample_tree):
    plain = embedding_spread(two_runs / "plain", sample_tree)
    center = embedding_spread(two_runs / "center", sample_tree)
    assert center < plain
    config = json.loads((two_runs / "center" / "run.json").read_text())
    assert config["center_loss"] == {"weight": 0.5, "alpha": 0.9}
    saved = np.load(two_runs / "center" / center_loss.CENTERS_FILE)
    assert saved.shape == (7, 128) and np.abs(saved).sum() > 0  # the update ran (the original's never did)
    assert not (two_runs / "plain" / center_loss.CENTERS_FILE).exists()


def test_center_loss_run_resumes_with_its_centres(two_runs, sample_tree, caplog):
    run_dir = two_runs / "center"
    before = np.load(run_dir / center_loss.CENTERS_FILE)
    with caplog.at_level("INFO", logger="fer.train"):
        assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "4"]) == 0
    assert "centres restored" in caplog.text
    after = np.load(run_dir / center_loss.CENTERS_FILE)
    assert not np.array_equal(before, after)
    assert json.loads((run_dir / training.STATE_FILE).read_text())["completed_epochs"] == 4


def test_center_loss_alias_and_bad_values(sample_tree, tmp_path):
    args = train_fer.parse_args(["--rafdb", str(sample_tree), "--center_loss"])
    assert args.center_loss and args.center_loss_weight == 0.01 and args.center_loss_alpha == 0.9
    from cli_common import UserError

    with pytest.raises(UserError, match="--center-loss-alpha 1.5"):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(tmp_path / "r"),
                        "--center-loss", "--center-loss-alpha", "1.5"])


@pytest.mark.slow
def test_center_loss_under_mirrored_strategy(sample_tree, tmp_path):
    command = [sys.executable, str(REPO / "train_fer.py"), "--rafdb", str(sample_tree), *TINY, "--epochs", "1",
               "--center-loss", "--distribute", "mirrored", "--cpu-devices", "2", "--dir", str(tmp_path / "m")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 replicas" in result.stderr
    assert np.abs(np.load(tmp_path / "m" / center_loss.CENTERS_FILE)).sum() > 0


def test_loading_transposed_centres_is_refused(tmp_path):
    """The saved centres are (classes, dim) = (7, 128) for this model; a (128, 7) file (same size) is a UserError
    naming its shape, not a reshape or a backend error."""
    from cli_common import UserError

    loss = center_loss.CenterLoss(small_model(), 7)
    np.save(tmp_path / center_loss.CENTERS_FILE, np.zeros((128, 7), np.float32))
    with pytest.raises(UserError, match=r"\(128, 7\)"):
        loss.load(tmp_path)
    np.save(tmp_path / center_loss.CENTERS_FILE, np.ones((7, 128), np.float32))
    assert loss.load(tmp_path) and float(loss.centers.numpy().sum()) == 7 * 128


@pytest.mark.parametrize("content, message", [
    ("garbage", "not a readable array"),
    ("objects", "not a readable array"),  # an object array: loading it would unpickle
    ("truncated", "not a readable array"),
    ("text", "expected a numeric array"),
    ("nan", "NaN or infinite"),
])
def test_unreadable_centres_file_is_a_user_error(tmp_path, content, message):
    """A resumed run that falls back to center_loss_centers.npy: a corrupt file there is one line
    naming it (a ValueError traceback before), and nothing is unpickled."""
    from cli_common import UserError

    path = tmp_path / center_loss.CENTERS_FILE
    if content == "garbage":
        path.write_bytes(b"garbage")
    elif content == "objects":
        np.save(path, np.array([{"a": 1}] * 7, dtype=object), allow_pickle=True)
    elif content == "truncated":
        np.save(path, np.ones((7, 128), np.float32))
        path.write_bytes(path.read_bytes()[:300])
    elif content == "text":
        np.save(path, np.array([["x"] * 128] * 7))
    else:
        np.save(path, np.full((7, 128), np.nan, np.float32))
    loss = center_loss.CenterLoss(small_model(), 7)
    with pytest.raises(UserError, match=message) as error:
        loss.load(tmp_path)
    assert str(path) in str(error.value)
