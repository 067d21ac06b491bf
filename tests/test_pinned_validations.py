"""Checks a mutation audit found unpinned: input that must be refused (a one-line UserError or
ValueError naming the problem) rather than accepted or let through to a traceback.

Covered: --severities ranges, shard merging (fields that differ, a folder in two shards), a
baseline missing folders, distribute_basic.csv rows (sum, sign, count) and landmarks, stability
options and baselines, metrics arguments, --adapt-prior, the input pipeline's arguments, the
LBP+SVM .skops loader (allow-list, version, classes, features) and scores, perturbation
arguments, output-kind detection, softmax, the digest cache, pickle refusal by name, and
predictions-file paths.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skops.io

import eval_corrupted_rafdb
import inference
import input_pipeline
import lbp
import lbp_svm
import metrics
import model_files
import perturbations
import rafdb_dataset as rd
import robustness
import stability
from cli_common import UserError
from predictions_file import PredictionsClassifier


# --------------------------------------------------------------------------------------------
# eval_corrupted_rafdb.py: --severities, --merge, --baseline


@pytest.mark.parametrize("text", ["5-1", "1,5-3", "3-2"])
def test_reversed_severity_ranges_are_refused(text):
    # "5-1" is no severity at all and "1,5-3" would silently drop 3..5: both are typing errors.
    with pytest.raises(UserError, match="--severities: severities are 1..5"):
        robustness.parse_severities(text)


@pytest.fixture(scope="module")
def shards(sample_tree, tmp_path_factory):
    """Shards 0/2 and 1/2 of one evaluation (clean + contrast.1: one folder each), as JSON texts."""
    from test_pinned_numbers import contrast_workspace

    root = contrast_workspace(sample_tree, tmp_path_factory.mktemp("pinned_shards"), "corrupted_raf_dataset")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for index in range(2):
            assert eval_corrupted_rafdb.main(["probe.hdf5", "--corruptions", "contrast", "--severities", "1",
                                              "--shard", f"{index}/2", "--json", f"part{index}.json"]) == 0
    finally:
        os.chdir(cwd)
    return [json.loads((root / f"part{index}.json").read_text()) for index in range(2)]


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_shards_that_differ_in_a_field_are_not_merged(shards, tmp_path):
    first, second = shards
    paths = [_write(tmp_path / "a.json", first), _write(tmp_path / "b.json", second)]
    (merged,) = robustness.merge_results(paths)  # as written, they merge
    assert sorted(row["corruption"] or "clean" for row in merged["folders"]) == ["clean", "contrast"]
    other = json.loads(json.dumps(second))
    other["results"][0]["protocol"] = "hard"  # as if run with --labels hard
    paths[1] = _write(tmp_path / "b.json", other)
    with pytest.raises(UserError, match="differ in 'protocol'"):
        robustness.merge_results(paths)


def test_a_folder_in_two_shards_is_refused(shards, tmp_path):
    first, second = shards
    other = json.loads(json.dumps(second))
    rows = first["results"][0]["folders"] + second["results"][0]["folders"]
    (contrast,) = [row for row in rows if row["corruption"] == "contrast"]
    for data in (first, other):
        data = data["results"][0]
        if not any(row["corruption"] == "contrast" for row in data["folders"]):
            data["folders"].append(contrast)
    paths = [_write(tmp_path / "a.json", first), _write(tmp_path / "b.json", other)]
    with pytest.raises(UserError, match=r"folder contrast\.1 is in two shards"):
        robustness.merge_results(paths)


def test_a_baseline_missing_a_folder_is_named(tmp_path):
    baseline = {"clean": {"error": 0.2},
                "folders": [{"corruption": None, "severity": 0, "error": 0.2},
                            {"corruption": "contrast", "severity": 1, "error": 0.4}]}
    path = tmp_path / "base.json"
    table = {"contrast": [0.5, 0.6]}
    with pytest.raises(UserError, match=r"--baseline .*base\.json: no result for contrast\.2$"):
        robustness.baseline_table(baseline, path, table, [1, 2])
    # with both severities it gives the rows
    baseline["folders"].append({"corruption": "contrast", "severity": 2, "error": 0.5})
    assert robustness.baseline_table(baseline, path, table, [1, 2]) == (0.2, {"contrast": [0.4, 0.5]})


def test_read_results_refuses_a_pickle_unopened(tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "read_text", refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    for name in ("r.pkl", "r.PKL", "r.pickle"):
        with pytest.raises(UserError, match="pickle files are refused"):
            robustness.read_results(tmp_path / name)


# --------------------------------------------------------------------------------------------
# RAF-DB files: distribute_basic.csv and landmarks


@pytest.fixture
def tree(sample_tree, tmp_path):
    root = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, root)
    return root


def _set_csv_row(root, index, text):
    path = root / rd.CSV_FILE
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def test_csv_row_sum_is_checked_within_1e_3(tree):
    _set_csv_row(tree, 2, "0.5,0.45,0,0,0,0,0")  # sums to 0.95
    with pytest.raises(UserError, match=r"distribute_basic\.csv:3: values sum to 0\.950000"):
        rd.load_labels(tree, "test", "soft")
    _set_csv_row(tree, 2, "0.5,0.4995,0,0,0,0,0")  # 0.9995: within 1e-3
    rd.load_labels(tree, "test", "soft")


def test_csv_negative_value_is_refused(tree):
    _set_csv_row(tree, 4, "1.1,-0.1,0,0,0,0,0")  # sums to 1
    with pytest.raises(UserError, match=r"distribute_basic\.csv:5: values must be finite and non-negative"):
        rd.load_labels(tree, "test", "soft")


def test_csv_with_an_extra_row_is_refused(tree):
    path = tree / rd.CSV_FILE
    lines = path.read_text().splitlines()
    n = len([line for line in lines if line.strip()])
    path.write_text("\n".join(lines + ["0,0,0,1,0,0,0"]) + "\n")
    with pytest.raises(UserError, match=rf"distribute_basic\.csv: {n + 1} rows, expected {n} .*as .*"
                                        rf"list_patition_label\.txt lists them: one of the two files"):
        rd.load_labels(tree, "test", "soft")


@pytest.mark.parametrize("damage", ["missing", "folder"])
def test_a_missing_partition_list_is_named_not_the_csv_alone(tree, damage):
    """Without list_patition_label.txt a sample's CSV was reported as having the wrong row count
    (real RAF-DB's 15,339 expected), with no word of the missing file the counts come from."""
    partition = tree / rd.PARTITION_FILE
    partition.unlink()
    if damage == "folder":
        partition.mkdir()
    state = "is missing" if damage == "missing" else "is not a file"
    with pytest.raises(UserError, match=rf"rows, expected 15339 \(12271 train \+ 3068 test, one per basic image; "
                                        rf"real RAF-DB's counts, as .*list_patition_label\.txt {state}"):
        rd.load_labels(tree, "test", "soft")


def test_non_finite_landmark_is_refused(tmp_path):
    path = tmp_path / "test_0001_manu_attri.txt"
    path.write_text("30 40\nnan 3\n50 58\n35 75\n65 75\n")
    with pytest.raises(UserError, match=r"test_0001_manu_attri\.txt:2: landmark is not finite"):
        rd.read_landmarks(path)
    path.write_text("30 40\n60 inf\n50 58\n35 75\n65 75\n")
    with pytest.raises(UserError, match=r":2: landmark is not finite"):
        rd.read_landmarks(path)


# --------------------------------------------------------------------------------------------
# eval_perturbed_rafdb2.py: --difficulty, baselines


def _results(tmp_path, text, **options):
    path = tmp_path / "predictions.txt"
    path.write_text(text)
    return stability.compute(stability.group_blocks(stability.read_predictions(path)), **options)


def test_difficulty_beyond_the_sequence_is_a_user_error(tmp_path):
    text = "runs/m/c.keras,P/rafdb.test.p_rotate\n" + ",".join(["3"] * 30) + "\n"
    with pytest.raises(UserError, match=r"--difficulty 30: must be in 1\.\.29 for sequences of 30 frames"):
        _results(tmp_path, text, difficulty=30)


def test_mean_tkd_rate_is_left_out_when_a_baseline_lacks_rankings(tmp_path):
    # the model has #topk for p_rotate and p_scale, the baseline for p_rotate only: mT3D-rate needs
    # every perturbation's rate, so it is omitted (not a KeyError); FR and mFR still come.
    topk = "0,1,1\n#topk 0:1:2,1:0:2,1:0:2\n"
    text = ("runs/m/c.keras,P/rafdb.test.p_rotate\n" + topk + "runs/m/c.keras,P/rafdb.test.p_scale\n" + topk
            + "runs/base/c.keras,P/rafdb.test.p_rotate\n" + topk + "runs/base/c.keras,P/rafdb.test.p_scale\n0,1,1\n")
    results = _results(tmp_path, text, ks=(3,))
    label, baseline = stability.load_baseline("base", results)
    stability.normalise(results, label, baseline)
    method = results["methods"]["m"]
    assert method["perturbations"]["p_rotate"]["tkd_rate"] == {"3": pytest.approx(1.0)}
    assert method["perturbations"]["p_scale"]["tkd_rate"] == {}
    assert "3" not in method["mtkd_rate"]
    assert method["mfr"] == pytest.approx(1.0)  # FP 0.5 / 0.5 for both


def test_baseline_of_another_difficulty_warns(tmp_path, caplog):
    text = "runs/base/c.keras,P/rafdb.test.p_rotate\n0,1,1,0\n"
    at_two = _results(tmp_path, text, difficulty=2)
    path = tmp_path / "base.json"
    path.write_text(json.dumps(stability.nan_to_none(at_two)))
    at_one = _results(tmp_path, text)
    with caplog.at_level(logging.WARNING):
        stability.load_baseline(str(path), at_one)
    assert "computed at difficulty 2, these results at 1" in caplog.text


# --------------------------------------------------------------------------------------------
# metrics.py arguments


def test_corruption_summary_with_a_baseline_table_needs_its_clean_error():
    with pytest.raises(ValueError, match="needs the baseline's clean error"):
        metrics.corruption_summary({"contrast": [0.3]}, 0.1, {"contrast": [0.4]}, None)


def test_accuracy_takes_class_indices_not_one_hot_rows():
    with pytest.raises(ValueError, match="not 1-D"):
        metrics.accuracy(np.array([[0, 1], [1, 0]]), np.array([[0, 1], [0, 1]]))


def test_empty_error_rows_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        metrics.mean_errors({"contrast": []})
    with pytest.raises(ValueError, match="non-empty"):
        metrics.overall_mean_error({"contrast": []})


@pytest.mark.parametrize("ranking", [np.array([0]), np.array([0, 1])])
def test_topk_distance_with_k_beyond_the_ranking(ranking):
    with pytest.raises(ValueError, match=r"k must be in 1\.\.\d"):
        metrics.topk_distance(ranking, ranking, 3)


# --------------------------------------------------------------------------------------------
# --adapt-prior and the input pipeline


def test_negative_adapt_prior_is_refused():
    args = argparse.Namespace(adapt_prior=-0.5, adapt="bn", distribute="none", mixed_precision=False, jit=False)
    with pytest.raises(UserError, match=r"--adapt-prior: expected a number >= 0, got -0\.5"):
        inference.runner_from_args(None, args)


def _png(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def test_make_dataset_refuses_more_labels_than_images(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", np.zeros((4, 4, 3), np.uint8)) for i in range(3)]
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        input_pipeline.make_dataset(paths, np.zeros((4, 7), np.float32), image_size=(4, 4))


def test_two_channel_models_are_refused():
    with pytest.raises(ValueError, match="2 input channels are not supported"):
        input_pipeline.load_for_model(np.zeros((8, 8, 3), np.uint8), (8, 8), channels=2)


def test_an_augmented_image_is_not_cut_again(tmp_path):
    # legacy99 cuts the evaluation image; an augmentation performs its own cut, so its output is
    # only resized to the input (bilinear, OpenCV), not cut a second time (99 -> 98).
    y, x = np.mgrid[0:100, 0:100]
    ramp = np.repeat((x + y).astype(np.uint8)[..., None], 3, axis=2)  # grey: RGB order does not matter
    path = _png(tmp_path / "ramp.png", ramp)
    dataset = input_pipeline.make_dataset([path], None, image_size=(100, 100), crop="legacy99",
                                          augment=lambda image, rng: image[:-1, :-1])
    (batch,) = list(dataset)
    expected = cv2.resize(ramp[:-1, :-1], (100, 100), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(batch)[0], expected)


# --------------------------------------------------------------------------------------------
# The LBP+SVM baseline: its .skops loader and its scores


N_FEATURES = lbp.LbpSettings().n_features  # 2478 (BENCHMARK.md §9.6)
NAMES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]


def _svc(classes, n_features=N_FEATURES, per_class=6):
    rng = np.random.default_rng(0)
    labels = np.repeat(classes, per_class)
    features = rng.normal(0, 1, (len(labels), n_features)) + labels[:, None]
    return lbp_svm.make_svc(C=1.0, gamma=1.0 / n_features).fit(features, labels)


def _payload(**changes):
    payload = {"format": lbp_svm.FORMAT, "version": lbp_svm.VERSION, "svc": _svc([0, 1, 2]),
               "lbp": lbp.LbpSettings().to_dict(), "class_names": NAMES, "image_size": [100, 100],
               "channels": 1, "probabilities": lbp_svm.PROBABILITIES, "info": {}}
    payload.update(changes)
    return payload


def _load(tmp_path, payload, name="m.skops"):
    path = tmp_path / name
    path.write_bytes(skops.io.dumps(payload))
    return lbp_svm.load_skops(path)


def test_skops_payload_checks(tmp_path):
    model = _load(tmp_path, _payload())  # the well-formed payload loads
    assert model.class_names == tuple(NAMES) and model.image_size == (100, 100)
    with pytest.raises(UserError, match=r"format version 2, this code reads version 1"):
        _load(tmp_path, _payload(version=2))
    # plain integers (under numpy 2 a list of the array's items printed "np.int64(9)")
    with pytest.raises(UserError, match=r"SVC classes \[0, 1, 9\] outside 0\.\.6"):
        _load(tmp_path, _payload(svc=_svc([0, 1, 9])))
    with pytest.raises(UserError, match=rf"the SVC takes 5 features, the descriptor gives {N_FEATURES}"):
        _load(tmp_path, _payload(svc=_svc([0, 1, 2], n_features=5)))


def test_skops_allow_list_refuses_builtins_eval(tmp_path):
    path = tmp_path / "evil.skops"
    path.write_bytes(skops.io.dumps({"format": lbp_svm.FORMAT, "svc": eval}))
    with pytest.raises(UserError, match=r"refusing to load types outside the LBP\+SVM allow-list: builtins\.eval"):
        lbp_svm.load_skops(path)
    assert not {"builtins.eval", "builtins.exec", "posix.system", "nt.system"} & lbp_svm.ALLOWED_TYPES


def test_svc_settings_are_the_shipped_ones_and_must_be_positive():
    svc = lbp_svm.make_svc()
    assert (svc.C, svc.gamma) == (4.0, 3e-6)  # BENCHMARK.md §9.6/§9.8: evaluation loads C = 4, γ = 3e-6
    for C, gamma in ((0.0, 1e-5), (1.0, 0.0), (-1.0, 1e-5)):
        with pytest.raises(UserError, match="--C and --gamma must be > 0"):
            lbp_svm.make_svc(C=C, gamma=gamma)


def test_classes_the_svc_never_saw_get_no_probability():
    svc = _svc([0, 1, 2], n_features=4)
    model = lbp_svm.LbpSvmModel(svc, lbp.DEFAULT, tuple(NAMES), (1, 1))
    features = np.random.default_rng(1).normal(0, 3, (20, 4))
    scores = model.scores(features)
    assert np.all(scores[:, 3:] == -np.inf)
    probabilities = model.probabilities(features)
    assert np.all(probabilities[:, 3:] == 0.0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    # the softmax of the three seen scores, by hand
    seen = scores[:, :3]
    expected = np.exp(seen - seen.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities[:, :3], expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)


def test_lbp_svm_refuses_pickles_by_name_whatever_the_case():
    for name in ("m.PKL", "m.Pickle", "m.pkl"):
        with pytest.raises(UserError, match="pickle files are refused"):
            lbp_svm.refuse_pickle(name)


# --------------------------------------------------------------------------------------------
# Perturbation arguments


def test_perturb_refuses_an_integer_seed_as_rng():
    face = np.zeros((perturbations.FACE_SIZE, perturbations.FACE_SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator or None, got int"):
        perturbations.perturb(face, "p_rotate", rng=0, frames=1)


def test_aligned_source_face_refuses_an_unknown_pad():
    with pytest.raises(ValueError, match="pad must be one of reflect101, constant, got 'reflect'"):
        perturbations.aligned_source_face(np.zeros((100, 100, 3), np.uint8), pad="reflect")


# --------------------------------------------------------------------------------------------
# model_files: output kind, softmax, digests, open_runner, pickles


def test_logits_that_sum_to_one_are_not_probabilities():
    assert model_files.looks_like_probabilities(np.array([[2.0, -1.0, 0.0]])) is False  # sums to 1
    assert model_files.looks_like_probabilities(np.array([[0.5, 0.5, 0.0]])) is True


def test_softmax_of_large_logits_is_finite():
    # e^1000 overflows; shifted by the row maximum: e^0 / (e^0 + e^-1000) = 1, e^-1000 / ... = 0
    np.testing.assert_array_equal(model_files.softmax(np.array([[1000.0, 0.0]])), [[1.0, 0.0]])


def test_output_kind_is_decided_once_by_the_first_batch():
    runner = model_files.Runner()
    runner.path = "model"
    first = runner.to_probabilities(np.array([[3.0, 1.0, 0.0]], np.float32))  # logits
    assert runner.output_kind == "logits"
    np.testing.assert_allclose(first.sum(), 1.0, rtol=1e-6)
    # a later batch that happens to sum to 1 is still softmaxed: e^.5 = 1.64872, sum 4.29744
    second = runner.to_probabilities(np.array([[0.5, 0.5, 0.0]], np.float32))
    np.testing.assert_allclose(second, [[0.38365, 0.38365, 0.23270]], atol=1e-5)


def test_digest_follows_a_rewrite_of_the_same_size(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"a" * 16)
    assert model_files.model_sha256(path) == hashlib.sha256(b"a" * 16).hexdigest()
    mtime = os.stat(path).st_mtime_ns
    path.write_bytes(b"b" * 16)
    os.utime(path, ns=(mtime + 10 ** 9, mtime + 10 ** 9))
    assert model_files.model_sha256(path) == hashlib.sha256(b"b" * 16).hexdigest()


def test_open_runner_names_a_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.onnx: model file not found"):
        model_files.open_runner(tmp_path / "missing.onnx")


def test_model_files_refuses_pickles_by_name_whatever_the_case():
    for name in ("m.PKL", "m.Pickle"):
        with pytest.raises(UserError, match="pickle files are refused"):
            model_files.refuse_pickle(name)


# --------------------------------------------------------------------------------------------
# Predictions files: clean/ keys name a file of the clean folder itself


def test_clean_key_with_a_sub_path_is_an_unknown_path(tmp_path):
    (tmp_path / "clean").mkdir()
    (tmp_path / "tree").mkdir()
    (tmp_path / "other").mkdir()
    _png(tmp_path / "other" / "x.png", np.zeros((4, 4, 3), np.uint8))
    path = tmp_path / "pred.csv"
    path.write_text("path,class\nclean/../other/x.png,3\n")
    with pytest.raises(UserError, match=r"pred\.csv:2: unknown path clean/\.\./other/x\.png"):
        PredictionsClassifier(path, tmp_path / "tree", tmp_path / "clean")
