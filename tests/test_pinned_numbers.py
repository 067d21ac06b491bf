"""Numbers a mutation audit found unpinned: every value here is worked out by hand or from the
formula of docs/BENCHMARK.md, never read back from the code under test.

Pinned: each image keeps its own label when ``--allow-missing`` drops one (rafdb_dataset,
robustness), images and labels stay paired under shuffling (input_pipeline), FP_p is the mean
over sequences (metrics, §5.5), mFR is over the canonical perturbations only (§5.6), T-k-D from
rankings of exactly k classes (§5.7), BatchNorm adaptation (§11.2) runs without Dropout, the
float16 output resolution under --mixed-precision, and the grey of the mask occlusion.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import checkpoints
import corruptions_face
import eval_corrupted_rafdb
import inference
import input_pipeline
import metrics
import model_files
import rafdb_dataset as rd
import stability
from test_eval_corrupted import predicted_class, save_probe

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# --allow-missing: each kept image with its own label


def _partition(root):
    """name -> class index (label - 1), read straight from list_patition_label.txt."""
    pairs = [line.split() for line in (root / rd.PARTITION_FILE).read_text().splitlines() if line.strip()]
    return {name[:-4]: int(label) - 1 for name, label in pairs}


def _hand_vote_filter(row):
    """BENCHMARK.md §1.3 written out: d = 10 p, d <= 1 zeroed, dropped (None) when more than two
    classes tie for the maximum or (winners x max) <= total / 2; else d / total."""
    d = [10 * v if 10 * v > 1 else 0.0 for v in row]
    total, top = sum(d), max(d)
    winners = sum(v == top for v in d)
    if winners > 2 or winners * top <= 0.5 * total:
        return None
    return np.array(d) / total


def test_allow_missing_keeps_each_image_with_its_own_label(sample_tree, tmp_path):
    root = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, root)
    partition = _partition(root)
    train_count = sum(name.startswith("train_") for name in partition)
    rows = [list(map(float, line.split(","))) for line in (root / rd.CSV_FILE).read_text().splitlines()
            if line.strip()]
    soft = {f"test_{k:04d}": _hand_vote_filter(rows[train_count + k - 1])
            for k in range(1, len(partition) - train_count + 1)}
    kept_soft = [name for name in sorted(soft) if soft[name] is not None]
    # Delete the first test image of each protocol: every later one would take its predecessor's
    # label if the label list were cut instead of filtered.
    gone = {"test_0001", kept_soft[0]}
    for name in gone:
        rd.aligned_path(root, name).unlink()

    hard = rd.load_labels(root, "test", "hard", allow_missing=True)
    expected_names = [name for name in sorted(partition) if name.startswith("test_") and name not in gone]
    assert hard.names == expected_names and hard.n_missing == len(gone)
    assert [int(np.argmax(label)) for label in hard.labels] == [partition[name] for name in expected_names]
    # the fixture's labels vary from one image to the next, so a shift by one would show
    assert [partition[n] for n in expected_names[1:]] != [partition[n] for n in expected_names[:-1]]

    labels = rd.load_labels(root, "test", "soft", allow_missing=True)
    assert labels.names == [name for name in kept_soft if name not in gone]
    for name, label in zip(labels.names, labels.labels):
        np.testing.assert_allclose(label, soft[name], atol=1e-6)


def contrast_workspace(sample_tree, root, out="corrupted"):
    """``root`` holding RAF-DB (a link to the sample), a RAF-DB-C export of contrast at severity 1 in
    ``root/out`` and the probe model ``probe.hdf5``."""
    os.symlink(sample_tree, root / "RAF-DB")
    subprocess.run([sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB",
                    "--out", out, "--corruptions", "contrast", "--severities", "1",
                    "--workers", "1", "--quiet"], cwd=root, check=True, capture_output=True)
    save_probe(root / "probe.hdf5")
    return root


@pytest.fixture(scope="module")
def one_folder(sample_tree, tmp_path_factory):
    """RAF-DB (the sample), a RAF-DB-C export of contrast at severity 1 and the probe model."""
    return contrast_workspace(sample_tree, tmp_path_factory.mktemp("pinned_c"))


def test_a_folder_missing_an_image_is_scored_against_its_own_targets(one_folder, tmp_path, capsys):
    root = one_folder
    copy = tmp_path / "corrupted"
    shutil.copytree(root / "corrupted", copy)
    folder = copy / "rafdb.test.contrast.1"
    labels = rd.load_labels(root / "RAF-DB", "test", "soft")
    targets = np.argmax(labels.labels, axis=1)
    predictions = np.array([predicted_class(folder / f"{name}_aligned.jpg") for name in labels.names])
    # The image to delete: the first whose removal, were the labels cut to the first n - 1 instead
    # of masked, would change the accuracy (so the test tells the two apart).
    for victim in range(len(labels.names)):
        keep = np.arange(len(labels.names)) != victim
        right = float(np.mean(predictions[keep] == targets[keep]))
        if float(np.mean(predictions[keep] == targets[:-1])) != right:
            break
    else:
        pytest.fail("no deletion tells masked from cut labels on this fixture")
    (folder / f"{labels.names[victim]}_aligned.jpg").unlink()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = eval_corrupted_rafdb.main(["probe.hdf5", "--corrupted", str(copy), "--corruptions", "contrast",
                                          "--severities", "1", "--allow-missing", "--json",
                                          str(tmp_path / "r.json")])
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    assert code == 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"][0]["folders"]
    (row,) = [row for row in rows if row["corruption"] == "contrast"]
    assert row["n"] == len(labels.names) - 1
    assert row["accuracy"] == pytest.approx(right, abs=1e-12)


# --------------------------------------------------------------------------------------------
# The input pipeline: images and labels stay paired under shuffling


def test_shuffled_images_keep_their_labels(tmp_path):
    paths = []
    for i in range(12):
        path = tmp_path / f"img{i:02d}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), 10 * i, np.uint8))  # image i is the value 10 i
        paths.append(path)
    labels = np.arange(12, dtype=np.float32)[:, None]  # label i for image i
    dataset = input_pipeline.make_dataset(paths, labels, image_size=(8, 8), batch_size=4, shuffle=True,
                                          seed=0)
    orders = []
    for _ in range(2):  # two epochs: reshuffled, still paired
        order = []
        for images, batch_labels in dataset:
            images, batch_labels = np.asarray(images), np.asarray(batch_labels)
            assert images.shape == (len(batch_labels), 8, 8, 3)
            np.testing.assert_array_equal(images[:, 0, 0, 0], 10.0 * batch_labels[:, 0])
            order += batch_labels[:, 0].astype(int).tolist()
        assert sorted(order) == list(range(12))
        orders.append(order)
    assert orders[0] != list(range(12))  # it did shuffle


# --------------------------------------------------------------------------------------------
# Stability (BENCHMARK.md §5.5-§5.7)


def test_flip_probability_is_the_mean_over_sequences():
    # consecutive rule: sequences 1 and 2 never flip (0/3); sequence 3 flips at every pair (3/3).
    # FP_p = (0 + 0 + 1) / 3 = 1/3, each sequence weighted equally (the median would be 0).
    sequences = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    assert metrics.flip_probability(sequences, noise=False) == pytest.approx(1 / 3)


def _results(tmp_path, text, **options):
    path = tmp_path / "predictions.txt"
    path.write_text(text)
    return stability.compute(stability.group_blocks(stability.read_predictions(path)), **options)


def test_mfr_averages_the_canonical_perturbations_only(tmp_path):
    # model: p_rotate 0,0,1 -> 1 flip of 2 pairs, FP 0.5; p_zoom_blur (an ImageNet-P extra) 0,1,0
    # -> FP 1.0. baseline: 0,0,0,0,1 -> 1 flip of 4 pairs, FP 0.25 for both.
    # FR: rotate 0.5 / 0.25 = 2, zoom blur 1.0 / 0.25 = 4; mFR over the canonical 10 only = 2
    # (BENCHMARK.md §5.6: extras never enter mFR; over both it would be 3).
    text = ("runs/m/c.keras,P/rafdb.test.p_rotate\n0,0,1\n"
            "runs/m/c.keras,P/rafdb.test.p_zoom_blur\n0,1,0\n"
            "runs/base/c.keras,P/rafdb.test.p_rotate\n0,0,0,0,1\n"
            "runs/base/c.keras,P/rafdb.test.p_zoom_blur\n0,0,0,0,1\n")
    results = _results(tmp_path, text)
    label, baseline = stability.load_baseline("base", results)
    stability.normalise(results, label, baseline)
    method = results["methods"]["m"]
    assert method["perturbations"]["p_rotate"]["fr"] == pytest.approx(2.0)
    assert method["perturbations"]["p_zoom_blur"]["fr"] == pytest.approx(4.0)
    assert method["mfr"] == pytest.approx(2.0)


def test_tkd_from_rankings_of_exactly_k_classes(tmp_path):
    # One sequence of 3 frames (a line of two fields would read as a header); #topk holds 3
    # classes. Frame 0 ranks c = (0, 1, 2); in frame 1 their positions are (1, 0, 2): d_3 =
    # |0-1| + |1-0| + |2-2| = 2; frames 1 and 2 rank alike: d_3 = 0. T3D = (2 + 0) / 2 = 1 (§5.7).
    text = "runs/m/c.keras,P/rafdb.test.p_rotate\n0,1,1\n#topk 0:1:2,1:0:2,1:0:2\n"
    results = _results(tmp_path, text, ks=(3,))
    assert results["methods"]["m"]["perturbations"]["p_rotate"]["tkd"] == {"3": pytest.approx(1.0)}


# --------------------------------------------------------------------------------------------
# Inference: BatchNorm adaptation and --mixed-precision


def _classifier(model, tmp_path, name="m.keras"):
    path = tmp_path / name
    model.save(path)
    return checkpoints.adapt(checkpoints.load_classifier(path), path, batch_size=4)


def test_adaptation_statistics_are_taken_without_dropout(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    classifier = _classifier(model, tmp_path)
    images = np.random.default_rng(3).integers(0, 256, (12, 6, 6, 3), dtype=np.uint8)
    x = images.astype(np.float64) / 255.0
    # BENCHMARK.md §11.2: the folder's own statistics, per channel, population variance; Dropout is
    # an identity in the adaptation pass, so they are those of the rescaled pixels themselves.
    expected_mean, expected_variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    for _ in range(2):  # and the same every time
        runner = inference.Runner(classifier, adapt="bn")
        assert runner.adapt_to(classifier.make_array_dataset(images)) == 12
        (bn,) = inference.batchnorm_layers(runner.model)
        np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), expected_variance, rtol=1e-4)


def test_adaptation_reaches_frozen_batchnorm_layers(tmp_path):
    """A BatchNormalization layer with trainable=False (Keras' fine-tuning recipe, also set by
    freezing a whole sub-model) is adapted like any other: its statistics become the folder's (they
    stayed the source's, so --adapt bn changed nothing while the result said ADAPTED)."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    frozen = keras.layers.BatchNormalization()
    frozen.trainable = False
    x = keras.layers.Flatten()(frozen(x))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    classifier = _classifier(model, tmp_path)
    images = np.random.default_rng(4).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    x = images.astype(np.float64) / 255.0
    runner = inference.Runner(classifier, adapt="bn")
    assert runner.adapt_to(classifier.make_array_dataset(images)) == 10
    (bn,) = inference.batchnorm_layers(runner.model)
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-4)
    (source,) = inference.batchnorm_layers(classifier.model)  # the loaded model itself is untouched
    assert not source.trainable and np.all(source.moving_mean.numpy() == 0)
    # a whole frozen backbone (backbone.trainable = False), nested in the classifier: the same
    backbone_in = keras.Input((6, 6, 3))
    backbone = keras.Model(backbone_in, keras.layers.BatchNormalization()(keras.layers.Rescaling(1 / 255.0)(backbone_in)),
                           name="backbone")
    backbone.trainable = False
    inputs = keras.Input((6, 6, 3))
    nested = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(backbone(inputs))))
    classifier = _classifier(nested, tmp_path, "nested.keras")
    runner = inference.Runner(classifier, adapt="bn")
    assert runner.adapt_to(classifier.make_array_dataset(images)) == 10
    (bn,) = inference.batchnorm_layers(runner.model)
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-4)


def test_mixed_precision_widens_the_probability_tolerance(tmp_path):
    # float16 spacing in [0.5, 1) is 2^-1 x 2^-10 (10-bit mantissa)
    assert model_files.FLOAT16_STEP == 2.0 ** -11
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        pytest.skip("--mixed-precision on the CPU needs TF_ENABLE_ONEDNN_OPTS=0")
    # A model whose output is its bias: (0.973, 0.005 x 6), probabilities that sum to 1.003. In
    # float16, 0.973 -> 1993 / 2048 = 0.973145 and 0.005 -> 0.0050011: the row sums to 1.00315,
    # outside the float32 tolerance 1e-3 but inside K x 2^-11 = 7 / 2048 = 0.00342. So under
    # --mixed-precision it is taken as probabilities, unchanged; a second softmax would give the
    # top class e^.973 / (e^.973 + 6 e^.005) = 0.305.
    inputs = keras.Input((8, 8, 3))
    dense = keras.layers.Dense(7)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    bias = np.array([0.973] + [0.005] * 6, np.float32)
    dense.set_weights([np.zeros((8 * 8 * 3, 7), np.float32), bias])
    classifier = _classifier(model, tmp_path)
    runner = inference.Runner(classifier, mixed_precision=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    scores = runner.predict(classifier.make_array_dataset(images))
    assert scores.shape == (3, 7)
    np.testing.assert_allclose(scores, np.tile(bias, (3, 1)), atol=2e-4)


# --------------------------------------------------------------------------------------------
# Face corruptions: the grey of the mask on a grey image


def test_grey_mouth_occlusion_is_the_luma_of_the_mask_colour():
    # Severity 5: opacity 1.0; the mask's top edge at 97 - 0.9 x 39 = 61.9 px, the chin at 97 px,
    # 0.8 W wide above 82.96 px: pixel (y=80, x=50) is fully covered. On a grey image the colour is
    # the luma of (150, 200, 230): 0.2125 x 150 + 0.7154 x 200 + 0.0721 x 230 = 191.54 -> 191
    # (floored); the plain channel mean, 193.33, would give 193.
    out = corruptions_face.occlusion_mouth(np.zeros((100, 100, 1), np.uint8), 5, np.random.default_rng(0))
    assert out.shape == (100, 100, 1)
    assert int(out[80, 50, 0]) == 191
    assert int(out[20, 50, 0]) == 0  # above the mask: untouched
