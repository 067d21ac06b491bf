"""End-to-end training recipes of train_fer.py: each flag combination trains for a few steps on the
synthetic sample tree, saves a checkpoint that plain Keras loads (after ``import models``), and the
loaded model predicts one probability row of 7 classes per image.

One epoch of the session's sample tree (63 training images after the 10 % hold-out) at batch 16 is
4 steps; 64 px (the smallest input the networks accept) keeps each run to a few seconds on 2 cores.
"""

import json

import numpy as np
import pytest

import train_fer

SIZE = 64
BASE = ["--net", "smallcnn", "--input-size", str(SIZE), "--batch", "16", "--epochs", "1", "--lr", "0.01",
        "--lpf", "0"]  # lpf 0: the plain strided layers, ~3x cheaper on CPU; the lpf-3 recipe overrides it

RECIPES = {
    "default-augmentation": [],  # --augmentation default is the parser's default
    "autoaugment-rafdb": ["--augmentation", "autoaugment-rafdb"],
    "vggface2-augmentation": ["--augmentation", "vggface2"],
    "randaugment": ["--augmentation", "randaugment"],
    "cutout": ["--cutout"],
    "labels-hard": ["--labels", "hard", "--augmentation", "no"],
    "crop-legacy99": ["--crop", "legacy99"],
    "lpf-3": ["--lpf", "3", "--augmentation", "no"],
    "weight-decay": ["--weight-decay", "5e-4", "--augmentation", "no"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("recipes")


def load_plain(path):
    """The checkpoint through plain Keras: no custom_objects, the project's layers registered by `import models`."""
    import keras

    import models  # noqa: F401  (registers BlurPool and the preprocessing layers)

    return keras.models.load_model(path, compile=False)


def check_checkpoint(run_dir, n_images=5):
    found = sorted(run_dir.glob("checkpoint.*.hdf5"))
    assert found, f"no checkpoint in {run_dir}"
    model = load_plain(found[-1])
    assert tuple(model.input_shape) == (None, SIZE, SIZE, 3)
    images = np.random.default_rng(0).uniform(0, 255, (n_images, SIZE, SIZE, 3)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (n_images, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    return model


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_saves_a_loadable_checkpoint(name, runs, sample_tree):
    run_dir = runs / name
    assert train_fer.main(["--rafdb", str(sample_tree), *BASE, *RECIPES[name], "--dir", str(run_dir)]) == 0
    model = check_checkpoint(run_dir)
    config = json.loads((run_dir / "run.json").read_text())
    assert config["status"] == "done"
    if name == "cutout":
        assert config["cutout"] is True
    elif name == "lpf-3":
        assert config["lpf"] == 3 and any(type(layer).__name__ == "BlurPool" for layer in model.layers)
    elif name == "weight-decay":
        regularised = [layer for layer in model.layers if getattr(layer, "kernel_regularizer", None) is not None]
        assert regularised and all(layer.kernel_regularizer.get_config()["l2"] == pytest.approx(5e-4)
                                   for layer in regularised)
    elif name == "labels-hard":
        assert json.loads((run_dir / "results.json").read_text())["labels"] == "hard"
    elif name == "crop-legacy99":
        assert config["crop"] == "legacy99"
    elif RECIPES[name]:
        assert config["augmentation"] == RECIPES[name][1]
    else:
        assert config["augmentation"] == "default"


def test_mode_test_on_a_recipe_run(runs, sample_tree, capsys):
    run_dir = runs / "default-augmentation"
    if not run_dir.is_dir():
        assert train_fer.main(["--rafdb", str(sample_tree), *BASE, "--dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert train_fer.main(["--mode", "test", "--dir", str(run_dir), "--rafdb", str(sample_tree)]) == 0
    assert "test accuracy" in capsys.readouterr().out
