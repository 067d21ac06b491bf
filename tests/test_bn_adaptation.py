"""Test-time BatchNorm adaptation (--adapt bn, docs/BENCHMARK.md §11.2): statistics re-estimated
on a copy, weights untouched, the prior's mixing weight, and accuracy on a brightness-shifted
folder moving back towards the clean accuracy."""

import json
import os
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import checkpoints
import eval_corrupted_rafdb
import inference
import rafdb_dataset

SIZE = 16


def bn_model(mean, variance, kernel=None, seed=0):
    """Rescaling(1/255) -> BatchNorm (given moving stats) -> Flatten -> Dropout -> Dense(7) softmax."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    x = bn(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    dense = keras.layers.Dense(7, activation="softmax")
    model = keras.Model(inputs, dense(x))
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 1.5, 3).astype("float32"), rng.normal(0, 0.1, 3).astype("float32"),
                    np.asarray(mean, "float32"), np.asarray(variance, "float32")])
    if kernel is None:
        kernel = rng.normal(0, 0.1, (SIZE * SIZE * 3, 7)).astype("float32")
    dense.set_weights([kernel.astype("float32"), np.zeros(7, "float32")])
    return model


def classifier_for(model, tmp_path, name="m.keras"):
    path = tmp_path / name
    model.save(path)
    return checkpoints.adapt(checkpoints.load_classifier(path), path, batch_size=4), path


def test_statistics_change_weights_do_not(tmp_path):
    classifier, path = classifier_for(bn_model([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]), tmp_path)
    before = path.read_bytes()
    images = np.random.default_rng(1).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    runner = inference.Runner(classifier, adapt="bn")
    seen = runner.adapt_to(classifier.make_array_dataset(images))  # batches of 4, 4, 2
    assert seen == 10
    (bn,) = inference.batchnorm_layers(runner.model)
    x = images.astype(np.float64) / 255.0
    expected_mean = x.mean(axis=(0, 1, 2))
    expected_variance = x.var(axis=(0, 1, 2))  # population variance over all 10 images
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_variance, rtol=1e-4)
    # the loaded model keeps its statistics; every weight but the moving statistics is identical
    (source_bn,) = inference.batchnorm_layers(classifier.model)
    np.testing.assert_array_equal(source_bn.moving_mean.numpy(), np.float32([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(bn.gamma.numpy(), source_bn.gamma.numpy())
    np.testing.assert_array_equal(bn.beta.numpy(), source_bn.beta.numpy())
    dense_copy = [l for l in runner.model.layers if isinstance(l, keras.layers.Dense)][0]
    dense_source = [l for l in classifier.model.layers if isinstance(l, keras.layers.Dense)][0]
    np.testing.assert_array_equal(dense_copy.kernel.numpy(), dense_source.kernel.numpy())
    assert path.read_bytes() == before  # the file is never modified
    # predictions use the adapted statistics: normalised by hand
    scale = bn.gamma.numpy() / np.sqrt(expected_variance + 1e-3)
    features = ((x - expected_mean) * scale + bn.beta.numpy()).reshape(10, -1)
    logits = features @ dense_source.kernel.numpy().astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(runner.predict(classifier.make_array_dataset(images)), expected, atol=1e-4)
    runner.reset()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.float32([0.1, 0.2, 0.3]))


def test_each_mode_is_traced_once_for_every_folder(tmp_path, monkeypatch):
    """The adaptation pass and the prediction pass are compiled once each, not once per folder:
    tracing the model anew for every folder made --adapt bn 7-10x slower than plain prediction on
    small folders (and recompiled it with --jit)."""
    import model_files

    classifier, _ = classifier_for(bn_model([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]), tmp_path)
    traced = []
    first_output = model_files.first_output

    def counting(outputs):  # runs when the step's Python body is traced, never on a compiled call
        traced.append(1)
        return first_output(outputs)

    monkeypatch.setattr(model_files, "first_output", counting)
    runner = inference.Runner(classifier, adapt="bn")
    rng = np.random.default_rng(4)
    for _ in range(4):  # four folders of 8 images: two batches of 4 each
        images = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
        assert runner.adapt_to(classifier.make_array_dataset(images)) == 8
        assert runner.predict(classifier.make_array_dataset(images)).shape == (8, 7)
    assert len(traced) == 2  # one training-mode step, one inference step


def test_prior_mixes_source_statistics(tmp_path):
    classifier, _ = classifier_for(bn_model([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]), tmp_path)
    images = np.random.default_rng(2).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    runner = inference.Runner(classifier, adapt="bn", adapt_prior=18)
    runner.adapt_to(classifier.make_array_dataset(images))
    (bn,) = inference.batchnorm_layers(runner.model)
    x = images.astype(np.float64) / 255.0
    weight = 18 / (18 + 6)  # the source's share, N / (N + n)
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               weight * np.array([0.1, 0.2, 0.3]) + (1 - weight) * x.mean(axis=(0, 1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), weight * 0.5 + (1 - weight) * x.var(axis=(0, 1, 2)),
                               rtol=1e-4)


def test_model_without_batchnorm_is_refused(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.Flatten()(inputs)))
    classifier, _ = classifier_for(model, tmp_path)
    with pytest.raises(Exception, match="no BatchNormalization"):
        inference.Runner(classifier, adapt="bn")


@pytest.fixture(scope="module")
def shifted_workspace(sample_tree, tmp_path_factory):
    """A model fitted (ridge) on the clean sample after a BN with clean statistics, and a
    brightness-shifted copy of the clean test images as rafdb.test.brightness_plus.5."""
    root = tmp_path_factory.mktemp("bnadapt")
    labels = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    clean = np.stack([cv2.resize(rafdb_dataset.read_image(path), (SIZE, SIZE),
                                 interpolation=cv2.INTER_LINEAR) for path in labels.aligned_paths(sample_tree)])
    x = clean.astype(np.float64) / 255.0
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    features = ((x - mean) / np.sqrt(variance + 1e-3)).reshape(len(x), -1)
    targets = np.eye(7)[labels.classes] * 10.0 - 5.0
    kernel = np.linalg.solve(features.T @ features + 1.0 * np.eye(features.shape[1]), features.T @ targets)
    model = bn_model(mean, variance, kernel)
    (bn,) = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    bn.set_weights([np.ones(3, "float32"), np.zeros(3, "float32"), mean.astype("float32"),
                    variance.astype("float32")])
    model.save(root / "model.keras")
    folder = root / "corrupted" / "rafdb.test.brightness_plus.5"
    folder.mkdir(parents=True)
    for path in labels.aligned_paths(sample_tree):
        image = rafdb_dataset.read_image(path).astype(np.int16) + 110
        shifted = np.clip(image, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / path.name), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    return root, sample_tree


def accuracies(root, sample_tree, *extra):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert eval_corrupted_rafdb.main(["model.keras", "--rafdb", str(sample_tree), "--corrupted", "corrupted",
                                          "--corruptions", "brightness_plus", "--severities", "5",
                                          "--json", "r.json", *extra]) == 0
    finally:
        os.chdir(cwd)
    result = json.loads((Path(root) / "r.json").read_text())["results"][0]
    return {row["corruption"] or "clean": row["accuracy"] for row in result["folders"]}, result


def test_adaptation_moves_shifted_accuracy_towards_clean(shifted_workspace, capsys):
    root, sample_tree = shifted_workspace
    plain, result = accuracies(root, sample_tree)
    assert result["runtime"]["adapted"] is False
    adapted, result = accuracies(root, sample_tree, "--adapt", "bn")
    out = capsys.readouterr().out
    assert result["runtime"]["adapted"] is True and result["runtime"]["adapt"] == "bn"
    assert "ADAPTED" in out
    assert plain["clean"] >= 0.9  # fitted on these images
    # measured here: clean 1.0, shifted 0.79 (15/19) unadapted, 1.0 adapted
    assert plain["brightness_plus"] <= plain["clean"] - 0.15  # the shift hurts the unadapted model
    assert adapted["brightness_plus"] >= plain["brightness_plus"] + 0.15  # adaptation recovers
    assert abs(adapted["brightness_plus"] - plain["clean"]) < abs(plain["brightness_plus"] - plain["clean"])
    assert result["adapt_images"] == 2 * result["n"]  # one extra pass per folder (clean + 1)


def test_results_record_the_adaptation_prior_and_batch(shifted_workspace):
    """Adapted statistics of all but the first BatchNorm layer depend on the batch size, and the prior
    changes every number: the JSON records both, and the CSV gives them columns (its 'adapted' was 1
    for any prior)."""
    import csv

    root, sample_tree = shifted_workspace
    _, result = accuracies(root, sample_tree, "--adapt", "bn", "--adapt-prior", "20", "--batch", "8",
                           "--csv", "r.csv")
    assert result["runtime"]["adapt_prior"] == 20.0 and result["runtime"]["adapt_batch"] == 8
    with open(Path(root) / "r.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows and {(row["adapted"], row["adapt_prior"], row["adapt_batch"]) for row in rows} == {("1", "20", "8")}
    _, plain = accuracies(root, sample_tree, "--csv", "r.csv")
    assert "adapt_batch" not in plain["runtime"]
    with open(Path(root) / "r.csv", newline="") as stream:
        assert {(row["adapted"], row["adapt_prior"], row["adapt_batch"]) for row in csv.DictReader(stream)} == \
            {("0", "", "")}
