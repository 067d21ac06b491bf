"""Corruption sets in the RAF-DB-C evaluation (docs/BENCHMARK.md §2.9, §11.1) and predictions files
(docs/BENCHMARK.md §11.4) wired into eval_corrupted_rafdb.py.

The model is a linear probe with fixed weights, so every accuracy is recomputed here from the image
files by hand (cv2 decode, bilinear resize, numpy product), independently of the evaluation code.
"""

import csv
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

import eval_corrupted_rafdb
import rafdb_dataset
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
RNG = np.random.default_rng(7)
KERNEL = RNG.normal(scale=0.02, size=(SIZE * SIZE * 3, 7)).astype(np.float32)
BIAS = RNG.normal(scale=1.0, size=7).astype(np.float32)
RAFDB_C = ("gaussian_noise", "contrast")
FACE = ("occlusion_patch", "low_resolution")


def save_probe(path):
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(7)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([KERNEL, BIAS])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def predicted(path):
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return int(np.argmax(resized.reshape(-1) @ KERNEL.astype(np.float64) + BIAS))


def export(root, out, corruption_set, names):
    command = [sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB",
               "--out", out, "--corruption-set", corruption_set, "--corruptions", ",".join(names),
               "--severities", "1-2", "--workers", "1", "--quiet"]
    subprocess.run(command, cwd=root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def workspace(sample_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsets")
    os.symlink(sample_tree, root / "RAF-DB")
    export(root, "corrupted_raf_dataset", "rafdb", RAFDB_C)
    export(root, "corrupted_raf_dataset_extra", "face", FACE)
    save_probe(root / "probe.keras")
    return root


def run_main(root, capsys, *args):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = eval_corrupted_rafdb.main([str(arg) for arg in args])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr()


def hand_errors(root):
    """{folder key: error} recomputed from the files, for the clean folder and every exported one."""
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft")
    folders = {"clean": root / "RAF-DB/basic/Image/aligned"}
    for names, tree in ((RAFDB_C, "corrupted_raf_dataset"), (FACE, "corrupted_raf_dataset_extra")):
        for name in names:
            for severity in (1, 2):
                folders[(name, severity)] = root / tree / f"rafdb.test.{name}.{severity}"
    return {key: 1.0 - float(np.mean([predicted(folder / f"{n}_aligned.jpg") for n in labels.names]
                                     == labels.classes))
            for key, folder in folders.items()}


def test_one_mce_line_per_set_and_the_18_unchanged_by_extras(workspace, capsys):
    root = workspace
    errors = hand_errors(root)
    clean = errors["clean"]
    code, only = run_main(root, capsys, "probe.keras", "--corruptions", ",".join(RAFDB_C),
                          "--severities", "1-2", "--json", "only.json", "--workers", "1")
    assert code == 0, only.err
    code, both = run_main(root, capsys, "probe.keras", "--corruption-set", "all", "--corruptions",
                          ",".join(RAFDB_C + FACE), "--severities", "1-2", "--json", "all.json",
                          "--csv", "all.csv", "--workers", "1")
    assert code == 0, both.err
    first = json.loads((root / "only.json").read_text())["results"][0]["summary"]
    second = json.loads((root / "all.json").read_text())["results"][0]
    summary = second["summary"]
    # The 18-set numbers do not move when extra folders are evaluated too.
    for key in ("mean_error_sum", "mean_relative_error_sum", "overall_mean_error",
                "mean_corruption_accuracy", "unnormalised_relative_error", "clean_error"):
        assert summary[key] == first[key], key
    assert summary["mce_set"] == first["mce_set"] == "rafdb"
    assert summary["sets"]["rafdb"] == first["sets"]["rafdb"]
    # so do the headline calibration means: over the 18's folders, each set's over its own
    for key in ("mean_ece", "mean_nll", "mean_brier"):
        assert summary[key] == first[key], key
        metric = key.removeprefix("mean_")
        for set_name, names in (("rafdb", RAFDB_C), ("face", FACE)):
            rows = [row[metric] for row in second["folders"] if row["corruption"] in names]
            assert len(rows) == 2 * len(names)
            assert summary["sets"][set_name][key] == pytest.approx(np.mean(rows)), (key, set_name)
        assert summary[key] == pytest.approx(summary["sets"]["rafdb"][key])
    # By hand: mean over the set's corruptions of sum_s E_s (unnormalised mCE, no baseline).
    for set_name, names in (("rafdb", RAFDB_C), ("face", FACE)):
        sums = [errors[(n, 1)] + errors[(n, 2)] for n in names]
        numbers = summary["sets"][set_name]
        assert numbers["corruptions"] == list(names)
        assert numbers["mean_error_sum"] == pytest.approx(np.mean(sums))
        assert numbers["mean_relative_error_sum"] == pytest.approx(np.mean(sums) - 2 * clean)
        assert numbers["overall_mean_error"] == pytest.approx(np.mean(sums) / 2)
    assert summary["mean_error_sum"] == pytest.approx(
        np.mean([errors[(n, 1)] + errors[(n, 2)] for n in RAFDB_C]))
    face_row = f"corrupted_raf_dataset_extra{os.sep}rafdb.test.occlusion_patch.2"
    assert any(row["folder"] == face_row for row in second["folders"])
    # One line per set in the table, one summary row per set in the CSV.
    face_mce = 100 * np.mean([errors[(n, 1)] + errors[(n, 2)] for n in FACE])
    assert f"set face            ( 2 corruptions): unnormalised mCE {face_mce:.2f}" in both.out
    assert "set rafdb" in both.out and "set face" not in only.out
    # the headline line is the 18's and says so: over len(RAFDB_C) corruptions, not the 2 face ones too
    assert f"(over {len(RAFDB_C)} corruptions; pass --baseline" in both.out
    assert f"(over {len(RAFDB_C) + len(FACE)} corruptions" not in both.out
    rows = list(csv.DictReader((root / "all.csv").open()))
    face = next(row for row in rows if row["corruption"] == "summary:face")
    assert float(face["mce"]) == pytest.approx(np.mean([errors[(n, 1)] + errors[(n, 2)] for n in FACE]))
    assert {row["corruption"] for row in rows if row["corruption"].startswith("summary")} == {
        "summary", "summary:rafdb", "summary:face"}


def test_extras_on_the_fly_equal_the_exported_tree(workspace, capsys, caplog):
    root = workspace
    with caplog.at_level("WARNING"):
        code, tree = run_main(root, capsys, "probe.keras", "--corruption-set", "face", "--corruptions",
                              "occlusion_patch", "--severities", "1-2", "--json", "t.json")
    assert code == 0, tree.err
    # Both trees hold a manifest; the extra tree's path begins with the other's, which is not read.
    assert "no manifest.json" not in caplog.text
    code, fly = run_main(root, capsys, "probe.keras", "--corruption-set", "face", "--corruptions",
                         "occlusion_patch", "--severities", "1-2", "--on-the-fly", "--workers", "1",
                         "--json", "f.json")
    assert code == 0, fly.err
    rows = [json.loads((root / name).read_text())["results"][0]["folders"] for name in ("t.json", "f.json")]
    assert [row["accuracy"] for row in rows[0]] == [row["accuracy"] for row in rows[1]]
    errors = hand_errors(root)
    assert rows[0][2]["error"] == pytest.approx(errors[("occlusion_patch", 2)])


def test_a_missing_tree_names_its_flag(workspace, capsys):
    """The held-out sets' tree missing: the message names --corrupted-extra, the flag to fix."""
    with pytest.raises(UserError, match=r"^--corrupted-extra nowhere: RAF-DB-C tree not found .*point "
                                        r"--corrupted-extra at it"):
        run_main(workspace, capsys, "probe.keras", "--corruption-set", "all", "--corruptions",
                 ",".join(RAFDB_C + FACE), "--severities", "1-2", "--corrupted-extra", "nowhere")
    with pytest.raises(UserError, match=r"^--corrupted nowhere: RAF-DB-C tree not found"):
        run_main(workspace, capsys, "probe.keras", "--corrupted", "nowhere")


def test_set_flags_are_checked(workspace, capsys):
    with pytest.raises(UserError, match="unknown corruption 'frost' in --corruption-set face"):
        run_main(workspace, capsys, "probe.keras", "--corruption-set", "face", "--corruptions", "frost")
    with pytest.raises(UserError, match="--param-set: required"):
        run_main(workspace, capsys, "probe.keras", "--corruption-set", "imagenet-extra",
                 "--corruptions", "fog", "--on-the-fly")


def test_both_trees_are_recorded_and_must_share_the_export_parameters(workspace, capsys):
    """--corruption-set all reads the 18 from --corrupted and the held-out sets from --corrupted-extra:
    the result records both manifests (SHA-256 of each file), and a held-out tree exported with
    another seed or format than the 18's (one reported source) is refused, naming both values."""
    import hashlib

    root = workspace
    code, out = run_main(root, capsys, "probe.keras", "--corruption-set", "all", "--corruptions",
                         ",".join(RAFDB_C + FACE), "--severities", "1-2", "--json", "both.json")
    assert code == 0, out.err
    result = json.loads((root / "both.json").read_text())["results"][0]
    digest = {tree: hashlib.sha256((root / tree / "manifest.json").read_bytes()).hexdigest()
              for tree in ("corrupted_raf_dataset", "corrupted_raf_dataset_extra")}
    assert result["manifest"]["sha256"] == digest["corrupted_raf_dataset"]
    assert result["source"]["manifest_extra"]["sha256"] == digest["corrupted_raf_dataset_extra"]
    subprocess.run([sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB", "--out",
                    "face_seed5", "--corruption-set", "face", "--corruptions", ",".join(FACE), "--severities",
                    "1-2", "--seed", "5", "--workers", "1", "--quiet"], cwd=root, check=True, capture_output=True)
    with pytest.raises(UserError, match=r"--corrupted corrupted_raf_dataset and --corrupted-extra face_seed5 were "
                                        r"exported with other parameters \(seed 0 vs 5;"):
        run_main(root, capsys, "probe.keras", "--corruption-set", "all", "--corruptions", ",".join(RAFDB_C + FACE),
                 "--severities", "1-2", "--corrupted-extra", "face_seed5")
    # on its own, the seed-5 tree is its own source
    code, out = run_main(root, capsys, "probe.keras", "--corruption-set", "face", "--corruptions", ",".join(FACE),
                         "--severities", "1-2", "--corrupted-extra", "face_seed5", "--json", "seed5.json")
    assert code == 0, out.err
    assert json.loads((root / "seed5.json").read_text())["results"][0]["source"]["seed"] == 5


def test_a_baseline_of_another_param_set_is_refused_for_the_imagenet_extras(workspace, capsys):
    """The ImageNet-C extras' damage depends on --param-set (docs/BENCHMARK.md §2.9): a baseline whose
    extras were rendered with other lengths normalises nothing (refused, as another format is)."""
    root = workspace
    fog = ("probe.keras", "--corruption-set", "imagenet-extra", "--corruptions", "fog", "--severities", "1",
           "--on-the-fly", "--workers", "1")
    code, out = run_main(root, capsys, *fog, "--param-set", "imagenet224", "--json", "fog224.json")
    assert code == 0, out.err
    with pytest.raises(UserError, match=r"--baseline fog224\.json: produced with param_set 'imagenet224' "
                                        r"\(this evaluation: 'scaled'\)"):
        run_main(root, capsys, *fog, "--param-set", "scaled", "--baseline", "fog224.json")
    code, out = run_main(root, capsys, *fog, "--param-set", "imagenet224", "--baseline", "fog224.json")
    assert code == 0, out.err


# --------------------------------------------------------------------------------------------
# --predictions FILE.csv (docs/BENCHMARK.md §11.4)


def test_predictions_file_gives_the_direct_evaluations_report(workspace, capsys):
    root = workspace
    common = ["--corruptions", ",".join(RAFDB_C), "--severities", "1-2"]
    code, direct = run_main(root, capsys, "probe.keras", *common, "--json", "direct.json",
                            "--save-probabilities", "p.npz")
    assert code == 0, direct.err
    saved = np.load(root / "p.npz")
    lines = ["path," + ",".join(f"p{i}" for i in range(7))]
    for folder, image, row in zip(saved["folder"], saved["image"], saved["probabilities"]):
        prefix = "clean" if folder == "clean" else f"rafdb.test.{folder}"
        lines.append(f"{prefix}/{image}_aligned.jpg," + ",".join(repr(float(v)) for v in row))
    (root / "preds.csv").write_text("\n".join(lines) + "\n")
    # the one positional is the RESULTS_FILE (it was taken for a CHECKPOINT and refused)
    code, scored = run_main(root, capsys, *common, "--predictions", "preds.csv", "--json", "pred.json",
                            "results.txt")
    assert code == 0, scored.err
    # The block below "Results for:" and every per-folder number are identical.
    assert direct.out.split("\n", 1)[1].split("\n\n\n")[0] == scored.out.split("\n", 1)[1].split("\n\n\n")[0]
    assert (root / "results.txt").read_text() == scored.out.split("\n\n\n")[0] + "\n\n\n"
    with pytest.raises(SystemExit):  # a model file beside --predictions is still refused
        run_main(root, capsys, *common, "--predictions", "preds.csv", "probe.keras")
    assert "probe.keras is a model file, a folder or a data file, not a text RESULTS_FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor is another data file appended to
        run_main(root, capsys, *common, "--predictions", "preds.csv", "other.csv")
    assert "other.csv is a model file, a folder or a data file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main(root, capsys, *common, "--predictions", "preds.csv", "a.txt", "b.txt")
    assert "give at most one positional, a text RESULTS_FILE (got a.txt and b.txt)" in capsys.readouterr().err
    mine, theirs = (json.loads((root / name).read_text())["results"][0]
                    for name in ("pred.json", "direct.json"))
    assert mine["folders"] == theirs["folders"]
    assert mine["summary"] == theirs["summary"]
    assert mine["checkpoint"]["format"] == "predictions"
    # Class names instead of scores: accuracies are the argmax of the hand-computed probe.
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft")
    names = rafdb_dataset.CLASS_NAMES
    aligned = root / "RAF-DB/basic/Image/aligned"
    classes = ["path,class"] + [f"clean/{n}_aligned.jpg,{names[predicted(aligned / f'{n}_aligned.jpg')]}"
                                for n in labels.names]
    for name in RAFDB_C:
        for severity in (1, 2):
            folder = root / "corrupted_raf_dataset" / f"rafdb.test.{name}.{severity}"
            classes += [f"rafdb.test.{name}.{severity}/{n}_aligned.jpg,"
                        f"{names[predicted(folder / f'{n}_aligned.jpg')]}" for n in labels.names]
    (root / "classes.csv").write_text("\n".join(classes) + "\n")
    code, _ = run_main(root, capsys, *common, "--predictions", "classes.csv", "--json", "cls.json")
    assert code == 0
    result = json.loads((root / "cls.json").read_text())["results"][0]
    rows = result["folders"]
    assert [row["accuracy"] for row in rows] == [row["accuracy"] for row in theirs["folders"]]
    # Predicted classes carry no confidence: no ECE, NLL or Brier (they were those of one-hot rows).
    assert {(row["ece"], row["nll"], row["brier"]) for row in rows} == {(None, None, None)}
    assert [row["recall"] for row in rows] == [row["recall"] for row in theirs["folders"]]
    # ... also through shards and --merge (the null calibration rows crashed the merge)
    for index in (0, 1):
        code, _ = run_main(root, capsys, *common, "--predictions", "classes.csv", "--shard", f"{index}/2",
                           "--json", f"cls{index}.json")
        assert code == 0
    code, _ = run_main(root, capsys, "--merge", "cls0.json", "cls1.json", "--json", "cls_merged.json")
    assert code == 0
    merged = json.loads((root / "cls_merged.json").read_text())["results"][0]
    assert merged["folders"] == rows and merged["summary"] == result["summary"]
    # The same probabilities as log-probabilities (logits up to a constant): softmax gives them back,
    # so every folder's ECE is the direct evaluation's (it was 100 times the error of the rows).
    logits = [lines[0]] + [line.split(",", 1)[0] + "," + ",".join(
        repr(float(np.log(max(float(value), 1e-30)))) for value in line.split(",")[1:]) for line in lines[1:]]
    (root / "logits.csv").write_text("\n".join(logits) + "\n")
    code, _ = run_main(root, capsys, *common, "--predictions", "logits.csv", "--json", "logits.json")
    assert code == 0
    rows = json.loads((root / "logits.json").read_text())["results"][0]["folders"]
    assert [row["ece"] for row in rows] == pytest.approx([row["ece"] for row in theirs["folders"]], abs=1e-6)
    assert [row["accuracy"] for row in rows] == [row["accuracy"] for row in theirs["folders"]]
    # A needed image without a line is an error naming it.
    (root / "short.csv").write_text("\n".join(classes[:-1]) + "\n")
    missing = classes[-1].split(",")[0]
    with pytest.raises(UserError, match=f"no line for {missing}"):
        run_main(root, capsys, *common, "--predictions", "short.csv")
    with pytest.raises(UserError, match="--on-the-fly"):
        run_main(root, capsys, *common, "--predictions", "classes.csv", "--on-the-fly")
    # FER2013/FER+ and folder exports name their images by dataset ids: refused up front, naming the
    # flag and the route that works (it crashed with a TypeError after reading the dataset).
    with pytest.raises(UserError, match=r"--predictions: a predictions file scores RAF-DB-C trees only, not "
                                        r"--dataset folder; evaluate the model itself"):
        run_main(root, capsys, "--predictions", "classes.csv", "--dataset", "folder", "--data", "nowhere",
                 "--corrupted", "nowhere-c")


def test_shards_differing_only_in_the_runners_fixed_batch_fallback_merge():
    """An ONNX runner that fell back to one image at a time in one shard (model_files.OnnxRunner sets
    fixed_batch = 1 at run time) describes fixed_batch 1 there and null in the others: a run-time
    observation, not an option, so the shards still agree; another runtime option still differs."""
    import robustness

    def shard(fixed_batch, providers="CPUExecutionProvider"):
        return {"checkpoint": {"checkpoint": "m.onnx", "checkpoint_sha256": "ab" * 32,
                               "runtime": {"providers": [providers], "fixed_batch": fixed_batch,
                                           "output_kind": "logits"}}}

    assert robustness._shard_value(shard(1), "checkpoint") == robustness._shard_value(shard(None), "checkpoint")
    assert robustness._shard_value(shard(1), "checkpoint") != \
        robustness._shard_value(shard(1, "CUDAExecutionProvider"), "checkpoint")


def test_an_export_of_all_sets_is_read_for_both_trees(workspace, capsys, tmp_path):
    """rafdb_aug_dataset.py export --corruption-set all writes the 18 and the held-out sets into one
    tree (by default corrupted_raf_dataset_extra): --corruption-set all reads it for both, given as
    --corrupted, as --corrupted-extra, or found at the export's default place (the evaluation looked
    for the 18 under corrupted_raf_dataset and stopped: "RAF-DB-C tree not found"). The errors are
    those of the files, recomputed here."""
    here = tmp_path / "all"
    here.mkdir()
    os.symlink(workspace / "RAF-DB", here / "RAF-DB")
    save_probe(here / "probe.keras")
    export(here, "corrupted_raf_dataset_extra", "all", RAFDB_C + FACE)
    labels = rafdb_dataset.load_labels(here / "RAF-DB", "test", "soft")
    tree = here / "corrupted_raf_dataset_extra"
    expected = {f"{name}.{severity}": 1.0 - float(np.mean(
        [predicted(tree / f"rafdb.test.{name}.{severity}" / f"{n}_aligned.jpg") for n in labels.names]
        == labels.classes)) for name in RAFDB_C + FACE for severity in (1, 2)}
    for given in ((), ("--corrupted", "corrupted_raf_dataset_extra"), ("--corrupted-extra", "corrupted_raf_dataset_extra")):
        code, out = run_main(here, capsys, "probe.keras", "--corruption-set", "all", "--corruptions",
                             ",".join(RAFDB_C + FACE), "--severities", "1-2", "--json", "r.json", "--workers", "1",
                             *given)
        assert code == 0, (given, out.err)
        rows = json.loads((here / "r.json").read_text())["results"][0]["folders"]
        got = {f"{row['corruption']}.{row['severity']}": row["error"] for row in rows if row["corruption"]}
        assert got == pytest.approx(expected, abs=1e-12), given
    # with a tree of the 18 at its own default place, given neither flag, the 18 come from that tree
    export(here, "corrupted_raf_dataset", "rafdb", RAFDB_C)
    code, out = run_main(here, capsys, "probe.keras", "--corruption-set", "all", "--corruptions",
                         ",".join(RAFDB_C + FACE), "--severities", "1-2", "--json", "r.json", "--workers", "1")
    assert code == 0, out.err
    result = json.loads((here / "r.json").read_text())["results"][0]
    import hashlib

    assert result["manifest"]["sha256"] == hashlib.sha256(
        (here / "corrupted_raf_dataset" / "manifest.json").read_bytes()).hexdigest()
    shutil.rmtree(here / "corrupted_raf_dataset")
    # the 18 alone still default to their own tree, which this folder does not have
    with pytest.raises(UserError, match="corrupted_raf_dataset: RAF-DB-C tree not found"):
        run_main(here, capsys, "probe.keras", "--corruptions", ",".join(RAFDB_C), "--severities", "1-2")
