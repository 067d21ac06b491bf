"""--predictions FILE.csv (docs/BENCHMARK.md §11.4): parsing, line-numbered errors, and the same
per-folder results as a direct evaluation of a model that makes the same predictions."""

import argparse

import numpy as np
import pytest

import checkpoints
from cli_common import UserError
from predictions_file import PredictionsClassifier, read_predictions
from test_model_files import B, W, mean_linear_onnx, write_images

RAF = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


@pytest.fixture()
def tree(tmp_path):
    """tree/rafdb.test.contrast.{1,2}/img_i.png and clean/img_i.png, 4 images each."""
    root = tmp_path / "tree"
    clean_paths, _ = write_images(tmp_path / "clean", count=4, seed=1)
    folders = {}
    for severity in (1, 2):
        name = f"rafdb.test.contrast.{severity}"
        folders[name], _ = write_images(root / name, count=4, seed=10 + severity)
    return root, tmp_path / "clean", clean_paths, folders


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_class_names_indices_synonyms(tree, tmp_path):
    root, clean, clean_paths, folders = tree
    csv_path = write(tmp_path / "p.csv", "path,class\n"
                     "clean/img_0.png,happy\n"
                     "# a comment\n"
                     "clean/img_1.png,3\n"
                     "./clean/img_2.png, Angry \n"
                     "rafdb.test.contrast.1/img_0.png,0\n\n")
    predictor = PredictionsClassifier(csv_path, root, clean)
    scores = predictor.predict_paths(clean_paths[:3])
    expected = np.zeros((3, 7), np.float32)
    expected[0, 3] = expected[1, 3] = expected[2, 5] = 1.0
    np.testing.assert_array_equal(scores, expected)
    assert predictor.unused() == ["rafdb.test.contrast.1/img_0.png"]
    with pytest.raises(UserError, match=r"no line for clean/img_3.png"):
        predictor.predict_paths(clean_paths[3:])


@pytest.mark.parametrize("body,line,words", [
    ("path,class\nclean/img_0.png,3\nclean/img_0.png,4\n", 3, "duplicate path clean/img_0.png"),
    ("path,class\nclean/img_0.png,3\nclean/nope.png,4\n", 3, "unknown path clean/nope.png"),
    ("path,class\nrafdb.test.contrast.9/img_0.png,1\n", 2, "unknown path"),
    ("path,class\nclean/img_0.png,contempt\n", 2, "unknown class 'contempt'"),
    ("path,class\nclean/img_0.png,7\n", 2, "out of range 0..6"),
    ("path,class\nclean/img_0.png,\u0663\n", 2, "unknown class '\u0663'"),  # an Arabic-Indic 3 is no index
    ("path,class\nclean/img_0.png\n", 2, "expected 2 fields"),
    ("path,p0,p1,p2,p3,p4,p5,p6\nclean/img_0.png,0,0,0,1,0,0\n", 2, "expected 8 fields"),
    ("path,p0,p1,p2,p3,p4,p5,p6\nclean/img_0.png,0,0,0,1,0,0,nan\n", 2, "finite"),
    ("path,p0,p1,p2,p3,p4,p5,p6\nclean/img_0.png,0,0,0,inf,0,0,0\n", 2, "finite"),
    ("path,p0,p1,p2,p3,p4,p5,p6\nclean/img_0.png,0,0,0,1,0,0,-inf\n", 2, "finite"),
    # '..' leaves the tree: refused although tree/../clean/img_0.png is an existing image
    ("path,class\n../clean/img_0.png,3\n", 2, "unknown path ../clean/img_0.png"),
    ("path,class\nrafdb.test.contrast.1/../../clean/img_1.png,3\n", 2, "unknown path"),
    ("path,p0,p1,p2,p3,p4,p5,p6\nclean/img_0.png,0,0,x,1,0,0,0\n", 2, "numbers"),
    ("# only a comment\nfile,label\n", 2, "expected the header"),
])
def test_errors_name_the_line(tree, tmp_path, body, line, words):
    root, clean, _, _ = tree
    csv_path = write(tmp_path / "bad.csv", body)
    with pytest.raises(UserError) as error:
        PredictionsClassifier(csv_path, root, clean)
    assert f"{csv_path}:{line}:" in str(error.value) and words in str(error.value)


def test_header_is_matched_without_regard_to_case(tree, tmp_path):
    root, clean, clean_paths, _ = tree
    csv_path = write(tmp_path / "p.csv", "Path,Class\nclean/img_0.png,3\n")
    scores = PredictionsClassifier(csv_path, root, clean).predict_paths(clean_paths[:1])
    np.testing.assert_array_equal(scores, [[0, 0, 0, 1, 0, 0, 0]])  # index 3, one-hot
    csv_path = write(tmp_path / "q.csv", "PATH,P0,P1,P2,P3,P4,P5,P6\n"
                                        "clean/img_0.png,0.1,0,0.2,0,0.7,0,0\n")
    scores = PredictionsClassifier(csv_path, root, clean).predict_paths(clean_paths[:1])
    np.testing.assert_allclose(scores, [[0.1, 0, 0.2, 0, 0.7, 0, 0]])


def test_byte_order_mark_and_logits(tree, tmp_path):
    """A UTF-8 byte-order mark before the header (Excel's "CSV UTF-8") is dropped; rows that are not
    probabilities (negative, or not summing to 1) are logits: each row becomes exp(s) / sum(exp(s)),
    computed here with numpy, while rows that are probabilities are kept as they are."""
    root, clean, clean_paths, _ = tree
    csv_path = tmp_path / "p.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfpath,class\nclean/img_0.png,happy\n")
    predictor = PredictionsClassifier(csv_path, root, clean)
    np.testing.assert_array_equal(predictor.predict_paths(clean_paths[:1]), [[0, 0, 0, 1, 0, 0, 0]])
    assert not predictor.scores_are_confidences
    logits = [[2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 1.0], [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    lines = ["path," + ",".join(f"p{k}" for k in range(7))] + [
        f"clean/img_{i}.png," + ",".join(map(str, row)) for i, row in enumerate(logits)]
    predictor = PredictionsClassifier(write(tmp_path / "l.csv", "\n".join(lines) + "\n"), root, clean)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predictor.predict_paths(clean_paths[:2]), expected, rtol=1e-6)
    assert predictor.predictions.output_kind == "logits" and predictor.scores_are_confidences
    assert predictor.describe()["output_kind"] == "logits"
    # probabilities printed with 2 decimals (this row sums to 0.99) are kept as they are
    rounded = [0.33, 0.33, 0.33, 0.0, 0.0, 0.0, 0.0]
    lines = lines[:1] + ["clean/img_0.png," + ",".join(map(str, rounded))]
    predictor = PredictionsClassifier(write(tmp_path / "r.csv", "\n".join(lines) + "\n"), root, clean)
    np.testing.assert_allclose(predictor.predict_paths(clean_paths[:1]), [rounded], rtol=1e-6)
    assert predictor.predictions.output_kind == "probabilities"
    # one stray row (all zeros, a failed image) among probabilities: an error naming it, not a softmax of
    # every row (which flattened 0.9 to 0.287)
    lines += ["clean/img_1.png," + ",".join(["0"] * 7)]
    with pytest.raises(UserError, match=r"r2\.csv:3: scores summing to 0 \(smallest 0\), not probabilities, while "
                                        r"those of line 2 are"):
        PredictionsClassifier(write(tmp_path / "r2.csv", "\n".join(lines) + "\n"), root, clean)


def test_percentages_are_refused_not_taken_for_logits(tree, tmp_path):
    """Rows summing to 100 (a spreadsheet's percentages) were softmax'ed as logits: the accuracy stayed,
    ECE/NLL/Brier changed with no word. Logits that happen to be non-negative with other sums stay logits."""
    root, clean, _, _ = tree
    header = "path," + ",".join(f"p{k}" for k in range(7))
    percent = [[70, 10, 5, 5, 5, 5, 0], [12.5, 12.5, 25, 25, 25, 0, 0], [33, 33, 33, 0, 0, 0, 0]]  # whole: 99
    lines = [header] + [f"clean/img_{i}.png," + ",".join(map(str, row)) for i, row in enumerate(percent)]
    with pytest.raises(UserError, match=r"pct\.csv: every score row is non-negative and sums to 100 \(line 2: 100\): "
                                        r"percentages, not probabilities or logits; divide the scores by 100"):
        PredictionsClassifier(write(tmp_path / "pct.csv", "\n".join(lines) + "\n"), root, clean)
    logits = [[70, 10, 5, 5, 5, 5, 0], [3, 1, 0, 0, 0, 0, 0]]  # one row sums to 100, the other does not
    lines = [header] + [f"clean/img_{i}.png," + ",".join(map(str, row)) for i, row in enumerate(logits)]
    predictor = PredictionsClassifier(write(tmp_path / "logits.csv", "\n".join(lines) + "\n"), root, clean)
    assert predictor.predictions.output_kind == "logits"


@pytest.mark.parametrize("flag", [["--class-order", "fer2013"], ["--preprocessing", "scale01"], ["--crop", "legacy99"],
                                  ["--input-size", "32"], ["--unsafe"], ["--restrict-to-dataset-classes"],
                                  ["--eval-preprocessing", "legacy-vggface2"]])
def test_model_flags_are_refused_with_a_predictions_file(tmp_path, flag):
    """A model file's flags change nothing for scores already made (they were accepted and ignored:
    --class-order fer2013 left the columns read in RAF-DB order): exit 2 from both evaluations,
    naming the flag, before any file is read."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for script in ("eval_corrupted_rafdb.py", "eval_perturbed_rafdb.py"):
        result = subprocess.run([sys.executable, str(repo / script), "--predictions", str(tmp_path / "absent.csv"),
                                 *flag], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {flag[0]}: not with --predictions (")


def test_empty_file(tmp_path):
    with pytest.raises(UserError, match="empty predictions file"):
        read_predictions(write(tmp_path / "e.csv", "\n\n"), RAF)


def test_same_scores_as_the_model(tree, tmp_path):
    """A model's predictions written as probabilities (and as classes) are read back exactly: the
    scores (probabilities) and the arg-max (classes) equal the model's own on every image. (The
    whole report from a predictions file against a direct evaluation: tests/test_eval_sets.py.)"""
    root, clean_dir, clean_paths, folders = tree
    model_path = mean_linear_onnx(tmp_path / "m.onnx", "NCHW", W, B)
    options = argparse.Namespace(preprocessing="none", eval_preprocessing="auto",
                                 class_order=None, unsafe=False, crop=None, batch=3,
                                 input_size=None)
    model = checkpoints.classifier_from_args(model_path, options)
    probs_csv, class_csv = ["path," + ",".join(f"p{k}" for k in range(7))], ["path,class"]
    expected = {}
    for prefix, paths in [("clean", clean_paths)] + [(name, folders[name]) for name in folders]:
        scores = model.predict_paths(paths)
        expected[prefix] = (paths, scores)
        for path, row in zip(paths, scores):
            key = f"{prefix}/{path.name}"
            probs_csv.append(key + "," + ",".join("%.9g" % value for value in row))
            class_csv.append(f"{key},{RAF[int(row.argmax())]}")
    for lines, exact in ((probs_csv, True), (class_csv, False)):
        predictor = PredictionsClassifier(write(tmp_path / "pred.csv", "\n".join(lines) + "\n"),
                                          root, clean_dir)
        for prefix, (paths, scores) in expected.items():
            got = predictor.predict_paths(paths)
            if exact:  # %.9g round-trips float32 exactly
                np.testing.assert_array_equal(got, scores)
            else:
                np.testing.assert_array_equal(got.argmax(1), scores.argmax(1))
        assert predictor.unused() == []


def test_settings_stated_for_the_perturbation_metadata(tree, tmp_path):
    """What eval_perturbed_rafdb.py writes into each block's metadata (stability.classifier_settings)
    equals what report.py reads from the checkpoint description eval_corrupted_rafdb.py records
    (report.robustness_settings): a model states its preprocessing (one token: the computation's
    canonical setting, checkpoints.preprocessing_setting), input size and class order; a predictions file its class order only (the dataset's)."""
    import report
    import stability

    root, clean_dir, clean_paths, _ = tree
    model_path = mean_linear_onnx(tmp_path / "m.onnx", "NCHW", W, B)
    options = argparse.Namespace(preprocessing=None, eval_preprocessing="legacy-vggface2",
                                 class_order="happy,surprise,fear,disgust,sad,angry,neutral",
                                 unsafe=False, crop=None, batch=3, input_size=None)
    model = checkpoints.classifier_from_args(model_path, options)
    model.use_classes(RAF)
    written = stability.classifier_settings(model)
    height, width = model.image_size
    # the computation's canonical setting: the vggface2 means in the original's swapped order,
    # handed over in BGR order (the display label stays "legacy-vggface2 (BGR, swapped means)")
    assert model.preprocessing_label == "legacy-vggface2 (BGR, swapped means)"
    assert written == {"preprocessing": "vggface2+mean_order=legacy-swapped+bgr",
                       "input": f"{height}x{width}x3",
                       "class_order": "happiness,surprise,fear,disgust,sadness,anger,neutral"}
    assert report.robustness_settings({"checkpoint": model.describe()}) == written
    line = stability.settings_text(written)
    assert stability.block_settings(stability.parse_meta("labels=soft N=1" + line)) == {**written, "adapted": "none"}
    csv_path = write(tmp_path / "p.csv", "path,class\n" + "".join(f"clean/{p.name},happy\n" for p in clean_paths))
    predictor = PredictionsClassifier(csv_path, root, clean_dir)
    predictor.use_classes(RAF)
    assert stability.classifier_settings(predictor) == {"class_order": ",".join(RAF)}
    assert report.robustness_settings({"checkpoint": predictor.describe()}) == {"class_order": ",".join(RAF)}
