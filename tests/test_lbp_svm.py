"""The LBP+SVM model file and lbp_svm_train.py: save/load, refusals, probabilities, train/search/eval."""

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import skops.io

import lbp
import lbp_svm
import lbp_svm_train
import rafdb_dataset
from cli_common import UserError


@pytest.fixture(scope="module")
def trained(sample_tree, tmp_path_factory):
    """A model trained once by the script on the sample tree (hold-out 10 %)."""
    out = tmp_path_factory.mktemp("lbp") / "model.skops"
    assert lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(out), "--quiet",
                               "--gamma", "1e-5"]) == 0
    return out


def _test_faces(root):
    labels = rafdb_dataset.load_labels(root, "test", "soft")
    images = np.stack([rafdb_dataset.read_image(path) for path in labels.aligned_paths(root)])
    return labels, images


def test_round_trip_interface_and_probabilities(trained, sample_tree):
    model = lbp_svm.load_skops(trained)
    assert model.class_names == rafdb_dataset.CLASS_NAMES and model.image_size == (100, 100)
    assert model.channels == 1 and model.settings == lbp.LbpSettings()
    _, rgb = _test_faces(sample_tree)
    # Grey by OpenCV's weights computed here in integer arithmetic (0.299, 0.587, 0.114 in Q14).
    weights = np.array([4899, 9617, 1868])
    grey = ((rgb.astype(np.int64) @ weights + (1 << 13)) >> 14).astype(np.uint8)[..., None]
    probabilities = model.predict_batch(grey)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(rgb), 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict_batch(grey.astype(np.float32)), probabilities)
    # Softmax of sklearn's own decision_function on the descriptor, written out here.
    features = lbp.describe(grey)
    decision = model.svc.decision_function(features)
    expected = np.zeros((len(rgb), 7))
    expected[:, model.svc.classes_] = np.exp(decision) / np.exp(decision).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), model.svc.predict(features))
    description = model.describe()
    assert description["svc"]["C"] == 4.0 and description["svc"]["gamma"] == 1e-5
    assert description["n_features"] == 2478 and description["info"]["protocol"] == "soft"


def test_same_seed_gives_identical_model_bytes(trained, sample_tree, tmp_path):
    again = tmp_path / "again.skops"
    lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(again), "--quiet", "--gamma", "1e-5"])
    assert again.read_bytes() == trained.read_bytes()


def test_a_model_file_inside_the_dataset_or_unwritable_is_refused_before_fitting(sample_tree, tmp_path, monkeypatch):
    """--out inside the dataset (a .skops among the faces breaks every later read of the tree) or
    under a file: refused before any face is read (the unwritable place was found after the fit)."""
    monkeypatch.setattr(lbp_svm_train, "_training_data", lambda args: pytest.fail("faces read before the check"))
    inside = sample_tree / "basic" / "Image" / "aligned" / "m.skops"
    with pytest.raises(UserError, match=rf"^--out {inside}: lies inside the dataset {sample_tree}"):
        lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(inside)])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match=r"^--out .*a_file/m\.skops: .*a_file is a file"):
        lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(tmp_path / "a_file" / "m.skops")])
    assert not inside.exists()


def test_pickle_is_refused_before_it_is_opened(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for suffix in (".pickle", ".pkl", ".joblib"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(pickle.dumps(Payload()))
        with pytest.raises(UserError, match=r"\.skops.*|pickle"):
            lbp_svm.load_skops(path)
        with pytest.raises(UserError, match="arbitrary code"):
            lbp_svm_train.main(["eval", "--model", str(path), "--rafdb", str(tmp_path)])
    assert not marker.exists()


def test_skops_with_unexpected_types_is_refused(tmp_path, trained):
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    path.write_bytes(skops.io.dumps({"format": lbp_svm.FORMAT, "svc": FunctionTransformer(func=os.system)}))
    with pytest.raises(UserError) as error:
        lbp_svm.load_skops(path)
    assert str(path) in str(error.value) and "system" in str(error.value)
    plain = tmp_path / "plain.skops"
    plain.write_bytes(skops.io.dumps({"format": "something else"}))
    with pytest.raises(UserError, match="not an LBP"):
        lbp_svm.load_skops(plain)
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        lbp_svm.load_skops(junk)


def _tampered(trained, path, change):
    """``trained``'s payload with ``change(svc)`` applied to a copy of its SVC, written to ``path``."""
    import copy

    data = trained.read_bytes()
    payload = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    payload["svc"] = copy.deepcopy(payload["svc"])
    change(payload["svc"])
    path.write_bytes(skops.io.dumps(payload))
    return path


@pytest.mark.parametrize("change, named", [
    (lambda svc: setattr(svc, "support_vectors_", svc.support_vectors_[:5]), "support_vectors_"),
    (lambda svc: setattr(svc, "support_vectors_", svc.support_vectors_[:, :100]), "support_vectors_"),
    (lambda svc: setattr(svc, "_intercept_", svc._intercept_[:2]), "_intercept_"),
    (lambda svc: setattr(svc, "_dual_coef_", svc._dual_coef_[:, :3]), "_dual_coef_"),
    (lambda svc: setattr(svc, "_n_support", svc._n_support * 2), "_n_support"),
    (lambda svc: setattr(svc, "kernel", "precomputed"), "kernel"),
    (lambda svc: setattr(svc, "_gamma", float("nan")), "gamma"),
    (lambda svc: svc._dual_coef_.__setitem__((0, 0), np.inf), "_dual_coef_"),
])
def test_skops_with_inconsistent_svc_arrays_is_refused(trained, tmp_path, change, named):
    """libsvm trusts the fitted arrays' shapes: a file whose arrays disagree gave tracebacks, or
    ran and reported made-up accuracies (reads past the arrays). Each is refused by name."""
    path = _tampered(trained, tmp_path / "tampered.skops", change)
    with pytest.raises(UserError, match="inconsistent") as error:
        lbp_svm.load_skops(path)
    assert str(path) in str(error.value) and named in str(error.value)
    with pytest.raises(UserError, match="inconsistent"):
        lbp_svm_train.main(["eval", "--model", str(path), "--rafdb", str(tmp_path)])


def test_a_hold_out_too_large_names_only_flags_lbp_svm_train_has(sample_tree, tmp_path):
    with pytest.raises(UserError, match="smaller --val-fraction") as error:
        lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(tmp_path / "m.skops"),
                            "--val-fraction", "0.99"])
    assert "--val-split" not in str(error.value)


def test_empty_skops_file_says_empty(tmp_path):
    path = tmp_path / "empty.skops"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        lbp_svm.load_skops(path)


def test_eval_confusion_recomputed(trained, sample_tree, tmp_path, capsys):
    assert lbp_svm_train.main(["eval", "--rafdb", str(sample_tree), "--model", str(trained),
                               "--out-dir", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "model.eval_test.json").read_text())
    # Independently: sklearn's predict on the descriptor of each face, counted here.
    labels, rgb = _test_faces(sample_tree)
    model = lbp_svm.load_skops(trained)
    predicted = model.svc.predict(np.concatenate([lbp.describe(face[None]) for face in rgb]))
    expected = np.zeros((7, 7), int)
    for true, guess in zip(labels.classes, predicted):
        expected[true, guess] += 1
    assert report["confusion"] == expected.tolist() and report["n"] == len(labels)
    assert report["accuracy"] == pytest.approx(np.trace(expected) / len(labels))
    with open(tmp_path / "model.confusion_test.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == list(rafdb_dataset.CLASS_NAMES)
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == expected.tolist()
    assert f"Accuracy: {np.trace(expected) / len(labels):.3f}" in printed


def test_eval_on_another_protocol_or_dataset_keeps_each_result(trained, sample_tree, tmp_path):
    """One model evaluated on its own RAF-DB soft labels, on the hard labels and on a folder dataset:
    all three wrote model.eval_test.json / model.confusion_test.csv, each replacing the one before."""
    import synthetic_faces

    faces = synthetic_faces.write_folder_sample(tmp_path / "faces", n_train=7, n_val=0, n_test=14, seed=3)
    copy = tmp_path / "RAF-DB-copy"
    shutil.copytree(sample_tree, copy)
    runs = {"model.eval_": ["--rafdb", str(sample_tree)],
            "model.eval_hard_": ["--rafdb", str(sample_tree), "--labels", "hard"],
            "model.eval_faces_": ["--dataset", "folder", "--data", str(faces)],  # a folder's only protocol: hard
            "model.eval_rafdb_": ["--rafdb", str(copy)]}  # RAF-DB elsewhere: its images may differ
    for prefix, flags in runs.items():
        assert lbp_svm_train.main(["eval", "--model", str(trained), "--out-dir", str(tmp_path), "--quiet",
                                   *flags]) == 0
    hard = rafdb_dataset.load_labels(sample_tree, "test", "hard")
    soft = rafdb_dataset.load_labels(sample_tree, "test", "soft")
    expected = {"model.eval_": ("soft", len(soft)), "model.eval_hard_": ("hard", len(hard)),
                "model.eval_faces_": ("hard", 14), "model.eval_rafdb_": ("soft", len(soft))}
    for prefix, (protocol, n) in expected.items():
        report = json.loads((tmp_path / f"{prefix}test.json").read_text())
        assert (report["protocol"], report["n"]) == (protocol, n), prefix
        confusion = prefix.replace(".eval_", ".confusion_")
        rows = list(csv.reader((tmp_path / f"{confusion}test.csv").read_text().splitlines()))[1:]
        assert sum(int(v) for row in rows for v in row[1:]) == n, prefix
    assert len(list(tmp_path.glob("*test.json"))) == 4


def test_search_chooses_on_holdout_and_never_opens_test(sample_tree, tmp_path, monkeypatch):
    root = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, root)
    for path in (root / rafdb_dataset.ALIGNED_DIR).glob("test_*"):
        path.write_bytes(b"poison: not an image")  # any read of a test face would fail
    opened = []
    real_read = rafdb_dataset.read_image
    monkeypatch.setattr(rafdb_dataset, "read_image", lambda path: opened.append(str(path)) or real_read(path))
    out = tmp_path / "best.skops"
    assert lbp_svm_train.main(["search", "--rafdb", str(root), "--out", str(out), "--quiet",
                               "--C-grid", "1", "4", "--gamma-grid", "3e-6", "1e-5"]) == 0
    assert opened and not [p for p in opened if "test_" in os.path.basename(p)]
    with open(tmp_path / "best.search.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(float(r["C"]), float(r["gamma"])) for r in rows] == [(1, 3e-6), (1, 1e-5), (4, 3e-6), (4, 1e-5)]
    accuracies = [float(r["val_accuracy"]) for r in rows]
    best = rows[int(np.argmax(accuracies))]  # first of the best, grid order
    model = lbp_svm.load_skops(out)
    assert (model.svc.C, model.svc.gamma) == (float(best["C"]), float(best["gamma"]))
    # Recompute the winner's hold-out accuracy from the held-out faces.
    val = lbp_svm.load_split(root, "val")
    faces = np.stack([real_read(path) for path in val.paths])
    assert np.mean(model.predict_classes(faces) == val.classes) == pytest.approx(max(accuracies))
    # The poison is real: evaluating on test does fail.
    with pytest.raises(UserError, match="not a readable image"):
        lbp_svm_train.main(["eval", "--rafdb", str(root), "--model", str(out), "--quiet"])


def test_legacy_flag_stored_in_model(sample_tree, tmp_path):
    out = tmp_path / "legacy.skops"
    lbp_svm_train.main(["train", "--rafdb", str(sample_tree), "--out", str(out), "--quiet", "--lbp-legacy",
                        "--no-holdout"])
    model = lbp_svm.load_skops(out)
    assert model.settings.legacy and model.info["validation"] is None
    assert model.svc.shape_fit_[0] == len(rafdb_dataset.load_labels(sample_tree, "train"))


def test_cli_exit_code_and_help(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    bad = subprocess.run([sys.executable, "lbp_svm_train.py", "eval", "--model", str(tmp_path / "m.pkl")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and ".skops" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(UserError, match="must end in .skops"):
        lbp_svm_train.main(["train", "--rafdb", str(tmp_path), "--out", str(tmp_path / "m.bin")])
    with pytest.raises(UserError, match="pickle files are refused"):  # joblib files are pickles
        lbp_svm_train.main(["train", "--rafdb", str(tmp_path), "--out", str(tmp_path / "m.joblib")])
    with pytest.raises(UserError, match=r"--seed -1: expected an integer from 0 to 4294967295"):
        lbp_svm_train.main(["train", "--rafdb", str(tmp_path), "--out", str(tmp_path / "m.skops"), "--seed", "-1"])
    assert not (tmp_path / "m.skops").exists()


def test_faces_of_several_sizes_are_named_with_their_size(tmp_path):
    import cv2

    import lbp_svm

    paths = []
    for index, (width, height) in enumerate([(40, 40), (40, 40), (64, 48), (80, 80)]):
        path = tmp_path / f"f{index}.png"
        cv2.imwrite(str(path), np.zeros((height, width, 3), np.uint8))
        paths.append(path)
    with pytest.raises(UserError) as error:
        lbp_svm.read_faces(paths)
    assert str(error.value) == (f"{paths[2]}: 64x48 px (width x height), but {paths[0]} is 40x40 (and 1 more "
                                "image(s) differ from it); faces of one size were expected here (resize them "
                                "first)")


@pytest.mark.parametrize("keep_ar", [False, True])
def test_faces_of_several_sizes_are_each_described_at_the_descriptors_size(tmp_path, keep_ar):
    """A folder of faces of mixed sizes (AffectNet's crops) was refused ("needs faces of one size"); the
    descriptor resizes every face anyway. Each face's descriptor equals lbp.describe of that face alone
    (grey, resize, codes, histograms), in one block or across blocks; the size recorded is the
    descriptor's."""
    import cv2

    rng = np.random.default_rng(3)
    paths = []
    for index, (width, height) in enumerate([(40, 40), (64, 48), (64, 48), (100, 100), (37, 90)]):
        path = tmp_path / f"f{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    settings = lbp.LbpSettings(keep_ar=keep_ar)
    alone = np.concatenate([lbp.describe(lbp_svm.read_faces([path]), settings) for path in paths])
    split = lbp_svm.FaceSplit("train", paths, np.zeros(len(paths), int), ("a",), "mixed")
    for block in (512, 2):  # one block of mixed sizes; blocks of one size and of two
        features, size = lbp_svm.split_features(split, settings, block=block, progress=False)
        np.testing.assert_array_equal(features, alone)
        assert size == (147, 108)
    same = lbp_svm.FaceSplit("train", paths[1:3], np.zeros(2, int), ("a",), "one size")
    assert lbp_svm.split_features(same, settings, progress=False)[1] == (48, 64)  # the faces' own


def test_svc_weights_classes_by_their_frequency():
    """docs/BASELINES.md: SVC(..., kernel="rbf", class_weight="balanced")."""
    svc = lbp_svm.make_svc()
    assert (svc.kernel, svc.class_weight) == ("rbf", "balanced")


def test_two_class_scores_rank_like_the_svc():
    """scikit-learn's two-class decision_function is one column, > 0 for classes_[1]; the model's two
    score columns must put the SVC's prediction first (two well-separated Gaussian blobs)."""
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(3, 1, (20, 5))])
    labels = np.repeat([0, 1], 20)
    svc = lbp_svm.make_svc(C=1.0, gamma=0.1).fit(features, labels)
    model = lbp_svm.LbpSvmModel(svc, lbp.DEFAULT, ("a", "b"), (1, 1))
    assert (svc.predict(features) == labels).mean() > 0.9  # the case separates the classes
    np.testing.assert_array_equal(model.scores(features).argmax(axis=1), svc.predict(features))


def test_train_and_eval_on_a_folder_of_faces_of_several_sizes(tmp_path, caplog):
    """lbp_svm_train.py on a labelled folder whose faces differ in size (it was refused): train and
    eval run, the model records the descriptor's size, and every test face is counted once in the
    confusion matrix (rows: the true classes' counts). An empty class folder is named in a warning."""
    import json

    import cv2

    rng = np.random.default_rng(5)
    counts = {"train": {"happy": 6, "sad": 5}, "test": {"happy": 3, "sad": 2}}
    for part, classes in counts.items():
        for name, n in classes.items():
            folder = tmp_path / "faces" / part / name
            folder.mkdir(parents=True)
            for index in range(n):
                side = int(rng.integers(30, 90))
                face = rng.integers(0, 256, (side, side + index, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{index}.png"), face)
    (tmp_path / "faces" / "train" / "fear").mkdir()
    data = ["--dataset", "folder", "--data", str(tmp_path / "faces")]
    model = tmp_path / "m.skops"
    assert lbp_svm_train.main(["train", *data, "--no-holdout", "--out", str(model), "--quiet"]) == 0
    assert "no training image of class(es) fear: the SVC can never predict them" in caplog.text
    assert lbp_svm.load_skops(model).image_size == (147, 108)
    assert lbp_svm_train.main(["eval", *data, "--model", str(model), "--quiet"]) == 0
    report = json.loads((tmp_path / "m.eval_test.json").read_text())
    rows = dict(zip(report["class_names"], np.array(report["confusion"]).sum(axis=1).tolist()))
    assert {name: rows.get(name) for name in ("happiness", "sadness")} == {"happiness": 3, "sadness": 2}
