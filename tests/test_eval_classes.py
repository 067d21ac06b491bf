"""Evaluation in the dataset's classes (docs/BENCHMARK.md §9.9, docs/MODELS.md "Class order on a dataset").

Expected values are worked out here: the FER+ vote filter and the accuracy are re-implemented
with plain loops, images read with csv/cv2, the model run with ``model.predict``.
"""

import csv
import json

import cv2
import numpy as np
import pytest

import checkpoints
from cli_common import UserError
from datasets.classes import FERPLUS_CLASSES, RAFDB_CLASSES, evaluation_columns


class _Runner:
    format = "test"


def _classifier(output_names, permutation=None):
    return checkpoints.Classifier(_Runner(), "m.keras", image_size=(8, 8), channels=1, crop="exact",
                                  batch_size=4, preprocess=None, preprocessing_label="none",
                                  preprocessing_source="default", output_names=tuple(output_names),
                                  class_source="flag", permutation=permutation, run_info=None)


def _contrast_evaluation(tmp_path, root, classes: int, class_order: str) -> list[str]:
    """The FER+ tree ``root`` exported (contrast, severity 1) and a dense model of ``classes``
    outputs: the common arguments of eval_corrupted_rafdb.py over them."""
    import ferplus_aug_dataset

    export = tmp_path / "C"
    assert ferplus_aug_dataset.main(["export", "--dataset", "ferplus", "--data", str(root), "--out", str(export),
                                     "--corruptions", "contrast", "--severities", "1", "--workers", "1"]) == 0
    _dense_model(tmp_path / "m.keras", 48, 1, classes, seed=2)
    return [str(tmp_path / "m.keras"), "--dataset", "ferplus", "--data", str(root), "--corrupted", str(export),
            "--corruptions", "contrast", "--severities", "1", "--preprocessing", "none", "--class-order", class_order]


def test_columns_of_an_8_class_model_on_rafdb_and_of_a_rafdb_model_on_ferplus():
    ferplus_model = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    names, columns, _ = evaluation_columns(ferplus_model, RAFDB_CLASSES)
    # RAF-DB order by hand: surprise=2 fear=6 disgust=5 happiness=1 sadness=3 anger=4 neutral=0, then contempt=7
    assert names == RAFDB_CLASSES + ("contempt",) and list(columns) == [2, 6, 5, 1, 3, 4, 0, 7]
    names, columns, _ = evaluation_columns(ferplus_model, RAFDB_CLASSES, restrict=True)
    assert names == RAFDB_CLASSES and list(columns) == [2, 6, 5, 1, 3, 4, 0]
    names, columns, mapping = evaluation_columns(RAFDB_CLASSES, FERPLUS_CLASSES)
    assert names == FERPLUS_CLASSES and list(columns) == [6, 3, 0, 4, 5, 2, 1, -1]
    assert mapping.missing == ("contempt",)
    # names outside the vocabulary: exact, case-insensitive
    names, columns, _ = evaluation_columns(("Other", "pos", "neg"), ("pos", "neg", "other"))
    assert list(columns) == [1, 2, 0]


def test_restrict_to_dataset_classes_changes_the_argmax():
    # outputs a, b, c, x; the dataset's classes b, c, a: dataset column j is model column
    # (1, 2, 0)[j] -- a 3-cycle, not its own inverse (that would read (2, 0, 1)) -- and x comes last
    classifier = _classifier(("a", "b", "c", "x"))
    scores = np.array([[0.05, 0.15, 0.20, 0.60],   # x wins over all outputs; c over the dataset's
                       [0.50, 0.10, 0.30, 0.10]],  # a wins either way
                      np.float32)
    classifier.use_classes(("b", "c", "a"))
    out = classifier.arrange(scores)
    # columns b, c, a, x by hand
    np.testing.assert_allclose(out, [[0.15, 0.20, 0.05, 0.60], [0.10, 0.30, 0.50, 0.10]])
    assert classifier.class_names == ("b", "c", "a", "x") and list(np.argmax(out, 1)) == [3, 2]
    classifier.use_classes(("b", "c", "a"), restrict=True)
    out = classifier.arrange(scores)
    # x left out, the rest renormalised: (0.15, 0.20, 0.05) / 0.40 and (0.10, 0.30, 0.50) / 0.90
    np.testing.assert_allclose(out, [[0.375, 0.5, 0.125], [1 / 9, 1 / 3, 5 / 9]], rtol=1e-6)
    assert classifier.class_names == ("b", "c", "a") and list(np.argmax(out, 1)) == [1, 2]


def test_a_rafdb_model_on_ferplus_leaves_contempt_out(tmp_path):
    import dataset_eval
    import datasets
    import synthetic_faces

    root = synthetic_faces.write_fer_sample(tmp_path / "F", n_train=4, n_public=16, n_private=4, seed=5)
    contempt_rows = _make_contempt(root, 3)
    data = datasets.get("ferplus", root)
    evaluated = dataset_eval.evaluation_labels(data, "test", RAFDB_CLASSES)
    kept = _ferplus_public_kept(root)
    assert evaluated.n_unmapped == 3 and evaluated.unmapped_classes == ("contempt",)
    assert sorted(int(n) for n in evaluated.labels.names) == sorted(set(kept) - set(contempt_rows))
    assert evaluated.class_names == FERPLUS_CLASSES
    assert np.all(evaluated.labels.labels[:, 7] == 0)
    classifier = _classifier(RAFDB_CLASSES, np.arange(7))
    classifier.use_classes(data.class_names)
    scores = np.eye(7, dtype=np.float32)  # one-hot on RAF-DB's surprise..neutral
    # FER+ columns: neutral happiness surprise sadness anger disgust fear, contempt zero
    assert list(np.argmax(classifier.arrange(scores), 1)) == [2, 6, 5, 1, 3, 4, 0]
    assert classifier.arrange(scores).shape == (7, 8) and not classifier.arrange(scores)[:, 7].any()


def _make_contempt(root, count):
    """Give the first ``count`` PublicTest rows a clear contempt majority; their row numbers."""
    path = root / "fer2013new.csv"
    lines = path.read_text().split("\n")
    changed = []
    for number, line in enumerate(lines[1:], start=0):
        fields = line.split(",")
        if len(changed) < count and fields[0] == "PublicTest" and fields[1]:
            lines[number + 1] = ",".join(fields[:2] + ["0"] * 7 + ["9", "1", "0"])
            changed.append(number)
    path.write_text("\n".join(lines))
    return changed


def _ferplus_public_kept(root):
    """{row: FER+ target index} of PublicTest rows the FER+ filter keeps, written out as loops."""
    with open(root / "fer2013new.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    kept = {}
    for number, row in enumerate(rows):
        if row[0] != "PublicTest" or not row[1]:
            continue
        votes = [int(v) if int(v) > 1 else 0 for v in row[2:12]]
        best = max(votes)
        ties = votes.count(best)
        first = votes.index(best)
        if first < 8 and ties <= 2 and ties * best > 0.5 * sum(votes):
            kept[number] = first
    return kept


def _dense_model(path, size, channels, outputs, seed):
    import keras

    rng = np.random.default_rng(seed)
    inputs = keras.Input((size, size, channels))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(outputs, 5, strides=3)(inputs))
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(path)
    return model


def test_a_7_class_model_on_ferplus_is_its_own_baseline(tmp_path):
    """A RAF-DB (7-class) model on FER+ leaves the contempt faces out: its N is the dataset's N minus
    those. Its own result as --baseline is accepted (mCE 100 %); the check compared the dataset's
    full N with the baseline's and refused it."""
    import eval_corrupted_rafdb
    import synthetic_faces

    root = synthetic_faces.write_fer_sample(tmp_path / "F", n_train=4, n_public=16, n_private=4, seed=5)
    _make_contempt(root, 3)
    common = _contrast_evaluation(tmp_path, root, 7, "rafdb")
    first = tmp_path / "r.json"
    assert eval_corrupted_rafdb.main(common + ["--json", str(first)]) == 0
    result = json.loads(first.read_text())["results"][0]
    assert result["n_unmapped"] == 3 and result["n"] == len(_ferplus_public_kept(root)) - 3
    again = tmp_path / "again.json"
    assert eval_corrupted_rafdb.main(common + ["--baseline", str(first), "--json", str(again)]) == 0
    assert json.loads(again.read_text())["results"][0]["summary"]["mce"] == pytest.approx(1.0)


def test_ferplus_model_on_ferplus_clean_accuracy_includes_contempt(tmp_path, capsys):
    import eval_corrupted_rafdb
    import ferplus_aug_dataset
    import synthetic_faces

    root = synthetic_faces.write_fer_sample(tmp_path / "F", n_train=4, n_public=24, n_private=4, seed=6)
    _make_contempt(root, 4)
    export = tmp_path / "C"
    assert ferplus_aug_dataset.main(["export", "--dataset", "ferplus", "--data", str(root), "--out", str(export),
                                     "--corruptions", "contrast", "--severities", "1", "--workers", "1"]) == 0
    model = _dense_model(tmp_path / "m.keras", 48, 1, 8, seed=1)
    # the contempt output gets a large bias so that some images are predicted contempt
    weights = model.get_weights()
    weights[1][7] += 0.02
    model.set_weights(weights)
    model.save(tmp_path / "m.keras")
    json_path = tmp_path / "r.json"
    assert eval_corrupted_rafdb.main([str(tmp_path / "m.keras"), "--dataset", "ferplus", "--data", str(root),
                                      "--corrupted", str(export), "--corruptions", "contrast", "--severities", "1",
                                      "--preprocessing", "none", "--class-order", ",".join(FERPLUS_CLASSES),
                                      "--json", str(json_path)]) == 0
    kept = _ferplus_public_kept(root)
    with open(root / "fer2013.csv", newline="") as handle:
        pixel_rows = list(csv.DictReader(handle))
    order = sorted(kept)
    images = np.array([[float(v) for v in pixel_rows[r]["pixels"].split()] for r in order],
                      np.float32).reshape(-1, 48, 48, 1)
    predicted = np.argmax(model.predict(images, verbose=0), axis=1)
    targets = np.array([kept[r] for r in order])
    assert 7 in targets  # contempt images are evaluated
    expected = float(np.mean(predicted == targets))
    result = json.loads(json_path.read_text())["results"][0]
    assert result["classes"] == list(FERPLUS_CLASSES) and result["n_unmapped"] == 0
    assert result["clean"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert len(result["clean"]["recall"]) == 8


def test_folder_dataset_with_its_own_class_names(tmp_path):
    import eval_corrupted_rafdb
    import ferplus_aug_dataset

    root = tmp_path / "D"
    rng = np.random.default_rng(0)
    files = []
    for split in ("train", "test"):
        for name in ("pos", "neg", "other"):
            (root / split / name).mkdir(parents=True)
            for index in range(3):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                path = root / split / name / f"{index}.png"
                cv2.imwrite(str(path), image)
                if split == "test":
                    files.append((path, name))
    (root / "classes.txt").write_text("pos\nneg\nother\n")
    export = tmp_path / "C"
    assert ferplus_aug_dataset.main(["export", "--dataset", "folder", "--data", str(root), "--out", str(export),
                                     "--corruptions", "contrast", "--severities", "1", "--workers", "1"]) == 0
    model = _dense_model(tmp_path / "m.keras", 40, 3, 3, seed=2)
    json_path = tmp_path / "r.json"
    assert eval_corrupted_rafdb.main([str(tmp_path / "m.keras"), "--dataset", "folder", "--data", str(root),
                                      "--corrupted", str(export), "--corruptions", "contrast", "--severities", "1",
                                      "--preprocessing", "none", "--class-order", "pos,neg,other",
                                      "--json", str(json_path)]) == 0
    images = np.array([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p, _ in files], np.float32)
    predicted = np.argmax(model.predict(images, verbose=0), axis=1)
    targets = np.array([("pos", "neg", "other").index(name) for _, name in files])
    result = json.loads(json_path.read_text())["results"][0]
    assert result["classes"] == ["pos", "neg", "other"]
    assert result["clean"]["accuracy"] == pytest.approx(float(np.mean(predicted == targets)), abs=1e-6)


def test_folder_export_unfinished_or_with_missing_files_is_refused_before_any_model(tmp_path, random_faces):
    """An unfinished export (a lone shard) and a deleted file are found before predicting, named, exit 2;
    --allow-missing evaluates the rest (N one less in that set)."""
    import subprocess
    import sys
    from pathlib import Path

    import eval_corrupted_rafdb
    import ferplus_aug_dataset
    from cli_common import UserError

    root = random_faces(tmp_path / "D", ("pos", "neg"), 3, seed=1)
    (root / "classes.txt").write_text("pos\nneg\n")
    _dense_model(tmp_path / "m.keras", 40, 3, 2, seed=3)
    export = ["export", "--dataset", "folder", "--data", str(root), "--corruptions", "contrast",
              "--severities", "1,2", "--workers", "1", "--quiet"]
    evaluate = [str(tmp_path / "m.keras"), "--dataset", "folder", "--data", str(root), "--corruptions", "contrast",
                "--severities", "1,2", "--preprocessing", "none", "--class-order", "pos,neg"]
    half = tmp_path / "half"
    assert ferplus_aug_dataset.main(export + ["--out", str(half), "--shard", "0/2"]) == 0
    command = [sys.executable, str(Path(eval_corrupted_rafdb.__file__)), *evaluate, "--corrupted", str(half)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{half}/manifest.json: the export that writes {half} has not finished" in result.stderr

    full = tmp_path / "full"
    assert ferplus_aug_dataset.main(export + ["--out", str(full)]) == 0
    gone = full / "D.test.contrast.2" / "neg" / "img 1.png"
    gone.unlink()
    with pytest.raises(UserError, match=rf"{gone}: image not found; rerun the export"):
        eval_corrupted_rafdb.main(evaluate + ["--corrupted", str(full)])
    json_path = tmp_path / "r.json"
    assert eval_corrupted_rafdb.main(evaluate + ["--corrupted", str(full), "--allow-missing",
                                                 "--json", str(json_path)]) == 0
    rows = {row["folder"].rsplit("/", 1)[-1]: row for row in json.loads(json_path.read_text())["results"][0]["folders"]}
    assert rows["D.test.contrast.1"]["n"] == 6 and rows["D.test.contrast.2"]["n"] == 5


def test_folder_image_changed_after_its_export_is_refused_before_any_model(tmp_path, random_faces):
    """A source photo edited after the export: its clean image and its corruptions would be of two
    different pictures, so the evaluation stops naming it (exit 2 from the script), and evaluates
    again once the export has been rerun. The export recorded sha256 over the file's sha256 hex."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    import eval_corrupted_rafdb
    import ferplus_aug_dataset

    root = random_faces(tmp_path / "D", ("pos", "neg"), 3, seed=4)
    (root / "classes.txt").write_text("pos\nneg\n")
    _dense_model(tmp_path / "m.keras", 40, 3, 2, seed=3)
    export = ["export", "--dataset", "folder", "--data", str(root), "--corruptions", "contrast",
              "--severities", "1", "--workers", "1", "--quiet", "--out", str(tmp_path / "C")]
    evaluate = [str(tmp_path / "m.keras"), "--dataset", "folder", "--data", str(root), "--corruptions", "contrast",
                "--severities", "1", "--preprocessing", "none", "--class-order", "pos,neg",
                "--corrupted", str(tmp_path / "C")]
    assert ferplus_aug_dataset.main(export) == 0
    edited = sorted((root / "test" / "neg").iterdir())[0]
    units = json.loads((tmp_path / "C" / "manifest.json").read_text())["units"]
    inner = hashlib.sha256(edited.read_bytes()).hexdigest()
    assert units[f"neg|{edited.name}"] == hashlib.sha256(inner.encode("ascii")).hexdigest()
    image = cv2.imread(str(edited))
    cv2.imwrite(str(edited), 255 - image)
    command = [sys.executable, str(Path(eval_corrupted_rafdb.__file__)), *evaluate]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"--corrupted {tmp_path / 'C'}: exported from other versions of 1 of the 6 source images "
            f"({edited}: changed since the export") in result.stderr
    assert ferplus_aug_dataset.main(export) == 0  # renders the edited photo again
    assert eval_corrupted_rafdb.main(evaluate) == 0


def test_fer_c_missing_file_and_unfinished_p_export_are_refused(tmp_path):
    import eval_corrupted_rafdb
    import eval_perturbed_rafdb
    import ferplus_aug_dataset
    import rafdb_perturb_dataset
    import synthetic_faces
    from cli_common import UserError

    root = synthetic_faces.write_fer_sample(tmp_path / "F", n_train=4, n_public=6, n_private=2, seed=7)
    _dense_model(tmp_path / "m.keras", 48, 1, 8, seed=4)
    export = tmp_path / "C"
    assert ferplus_aug_dataset.main(["export", "--dataset", "ferplus", "--data", str(root), "--out", str(export),
                                     "--format", "png", "--corruptions", "contrast", "--severities", "1",
                                     "--workers", "1", "--quiet"]) == 0
    gone = sorted((export / "fer2013.PublicTest.contrast.1").glob("*.png"))[2]
    gone.unlink()
    with pytest.raises(UserError, match=rf"{gone}: image not found"):
        eval_corrupted_rafdb.main([str(tmp_path / "m.keras"), "--dataset", "ferplus", "--data", str(root),
                                   "--corrupted", str(export), "--corruptions", "contrast", "--severities", "1"])
    perturbed = tmp_path / "P"
    assert rafdb_perturb_dataset.main(["export", "--dataset", "ferplus", "--data", str(root), "--out", str(perturbed),
                                       "--perturbations", "p_rotate", "--workers", "1", "--shard", "0/2"]) == 0
    with pytest.raises(UserError, match=rf"{perturbed}/manifest.json: the export that writes {perturbed} has not"):
        eval_perturbed_rafdb.main([str(tmp_path / "m.keras"), "--dataset", "ferplus", "--data", str(root),
                                   "--perturbed", str(perturbed), "--perturbations", "p_rotate",
                                   "--out", str(tmp_path / "p.txt")])
    assert not (tmp_path / "p.txt").exists()


def test_probability_rows_of_models_of_different_widths_stack_with_nan():
    from cli_common import stack_rows

    seven = np.full((2, 7), 0.125, np.float32)
    eight = np.arange(8, dtype=np.float32)[None, :] / 28
    stacked = stack_rows([seven, eight], 7)
    assert stacked.shape == (3, 8) and stacked.dtype == np.float32
    assert np.isnan(stacked[:2, 7]).all() and (stacked[:2, :7] == 0.125).all()
    np.testing.assert_array_equal(stacked[2], eight[0])
    assert stack_rows([], 7).shape == (0, 7)


def test_a_model_missing_a_rafdb_class_is_refused_without_a_contradicting_warning(caplog):
    """On RAF-DB every class must be an output: a 6-class model (no neutral) is refused, and no
    warning first says that the neutral images would be 'left out' (it did, before the refusal)."""
    from cli_common import UserError

    classifier = _classifier(("anger", "disgust", "fear", "happiness", "sadness", "surprise"))
    with caplog.at_level("WARNING"):
        with pytest.raises(UserError, match=r"cannot output neutral \(its outputs: .*\); each RAF-DB class must be "
                                            r"one of its outputs"):
            classifier.use_classes(RAFDB_CLASSES, require_all="RAF-DB")
    assert "left out" not in caplog.text


def _write_votes(root, votes):
    """A FER+ pair of PublicTest rows only, with the given 10 vote counts per row."""
    root.mkdir(parents=True)
    pixels = " ".join(["7"] * 2304)
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n"
                                      + "".join(f"0,{pixels},PublicTest\n" for _ in votes))
    (root / "fer2013new.csv").write_text(
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        + "".join(f"PublicTest,fer{r:07d}.png,{','.join(map(str, v))}\n" for r, v in enumerate(votes)))
    return root


def test_ferplus_legacy_labels_keep_their_sum_in_the_evaluation(tmp_path):
    """docs/BENCHMARK.md §9.2, §11.3: under --ferplus-norm legacy the label is the votes over all ten
    (unknown and NF included), summing to less than 1, and NLL/Brier use that label; only the mass of
    a class the model cannot output (contempt for a RAF-DB model) moves to the others."""
    import calibration
    import dataset_eval
    import datasets

    # row 0: 6 neutral, 2 unknown, 2 NF -> fix (1, 0, ...), legacy (.6, 0, ...)
    # row 1: 6 neutral, 2 contempt, 2 unknown -> fix (.75, ..., .25), legacy (.6, ..., .2)
    root = _write_votes(tmp_path / "F", [[6, 0, 0, 0, 0, 0, 0, 0, 2, 2], [6, 0, 0, 0, 0, 0, 0, 2, 2, 0]])
    expected = {"fix": [[1, 0, 0, 0, 0, 0, 0, 0], [.75, 0, 0, 0, 0, 0, 0, .25]],
                "legacy": [[.6, 0, 0, 0, 0, 0, 0, 0], [.6, 0, 0, 0, 0, 0, 0, .2]]}
    # a RAF-DB model: contempt's mass goes to the other classes, the row keeps its sum (1, or .8)
    expected_rafdb = {"fix": [[1, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]],
                      "legacy": [[.6, 0, 0, 0, 0, 0, 0, 0], [.8, 0, 0, 0, 0, 0, 0, 0]]}
    for norm in ("fix", "legacy"):
        data = datasets.get("ferplus", root, norm=norm)
        evaluated = dataset_eval.evaluation_labels(data, "test", FERPLUS_CLASSES)
        np.testing.assert_allclose(evaluated.labels.labels, expected[norm], atol=1e-7)
        rafdb = dataset_eval.evaluation_labels(data, "test", RAFDB_CLASSES)
        np.testing.assert_allclose(rafdb.labels.labels, expected_rafdb[norm], atol=1e-7)
    for norm in ("fix", "legacy"):  # recorded in the result JSON
        evaluated = dataset_eval.evaluation_labels(datasets.get("ferplus", root, norm=norm), "test", FERPLUS_CLASSES)
        assert evaluated.describe()["ferplus_norm"] == norm
    # NLL of row 0 for p(neutral) = 0.5: -1 * ln .5 (fix), -.6 * ln .5 (legacy)
    p = np.full((1, 8), .5 / 7, np.float32)
    p[0, 0] = .5
    for norm, weight in (("fix", 1.0), ("legacy", .6)):
        row = dataset_eval.evaluation_labels(datasets.get("ferplus", root, norm=norm), "test",
                                             FERPLUS_CLASSES).labels.labels[:1]
        assert calibration.nll(p, row) == pytest.approx(-weight * np.log(.5), rel=1e-6)
    assert "ferplus_norm" not in dataset_eval.evaluation_labels(datasets.get("fer2013", root), "test",
                                                                datasets.get("fer2013", root).class_names).describe()


def test_ferplus_norm_is_recorded_and_legacy_is_no_baseline_for_fix(tmp_path):
    """The result JSON records --ferplus-norm; soft labels of another normalisation are another test
    set (its digest), so a legacy result is refused as the baseline of a fix evaluation; --merge
    keeps the setting and refuses shards that differ in it."""
    import eval_corrupted_rafdb
    import robustness

    root = _write_votes(tmp_path / "F", [[6, 0, 0, 0, 0, 0, 0, 0, 2, 2], [0, 8, 0, 0, 0, 0, 0, 0, 0, 0]])
    common = _contrast_evaluation(tmp_path, root, 8, "ferplus")
    results = {}
    for norm in ("fix", "legacy"):
        assert eval_corrupted_rafdb.main(common + ["--ferplus-norm", norm, "--json", str(tmp_path / f"{norm}.json")]) == 0
        results[norm] = json.loads((tmp_path / f"{norm}.json").read_text())["results"][0]
        assert results[norm]["ferplus_norm"] == norm
    assert results["fix"]["test_set_sha256"] != results["legacy"]["test_set_sha256"]
    with pytest.raises(UserError, match=r"legacy.json: produced with test set \w+ \(this evaluation: test set \w+\); "
                                        r"ferplus_norm 'legacy' \(this evaluation: 'fix'\)"):
        eval_corrupted_rafdb.main(common + ["--ferplus-norm", "fix", "--baseline", str(tmp_path / "legacy.json")])
    # shards: merged, the setting kept; shards of different settings refused
    for index in (0, 1):
        assert eval_corrupted_rafdb.main(common + ["--ferplus-norm", "legacy", "--shard", f"{index}/2",
                                                   "--json", str(tmp_path / f"part{index}.json")]) == 0
    merged = robustness.merge_results([tmp_path / "part0.json", tmp_path / "part1.json"])
    assert merged[0]["ferplus_norm"] == "legacy"
    other = json.loads((tmp_path / "part1.json").read_text())
    other["results"][0]["ferplus_norm"] = "fix"
    (tmp_path / "other1.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=r"differ in 'ferplus_norm'"):
        robustness.merge_results([tmp_path / "part0.json", tmp_path / "other1.json"])
