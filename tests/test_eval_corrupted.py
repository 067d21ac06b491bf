"""eval_corrupted_rafdb.py end to end on a tiny exported RAF-DB-C tree (docs/BENCHMARK.md §5.1-§5.3).

The model is a probe (Flatten -> Dense with fixed random weights chosen here), so its prediction is
a known function of every pixel position of each image: the test recomputes every accuracy by hand
from the image files (cv2 decode, bilinear resize, numpy matrix product) and compares it with the
printed block. A model that saw only channel means could not tell an on-the-fly rendering from
the exported tree if the two differed in where the corruption lands; this one can.
"""

import json
import logging
import os
import re
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
import robustness
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("gaussian_noise", 1), ("gaussian_noise", 2), ("contrast", 1), ("contrast", 2)]
SIZE = 32
RNG = np.random.default_rng(1)
KERNEL = RNG.normal(scale=0.02, size=(SIZE * SIZE * 3, 7)).astype(np.float32)  # logits = pixels @ KERNEL
BIAS = RNG.normal(scale=1.0, size=7).astype(np.float32)


def save_probe(path, outputs=7, lam=False):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t + 0.0)(inputs) if lam else inputs
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(outputs)
    model = keras.Model(inputs, dense(x))
    kernel = KERNEL if outputs == 7 else np.zeros((SIZE * SIZE * 3, outputs), np.float32)
    dense.set_weights([kernel, BIAS if outputs == 7 else np.zeros(outputs, np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def probe_logits(path):
    """The probe's logits for one image file, by hand: cv2 decode, bilinear resize, flatten, matmul."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return resized.reshape(-1) @ KERNEL.astype(np.float64) + BIAS


def predicted_class(path):
    return int(np.argmax(probe_logits(path)))


@pytest.fixture(scope="module")
def workspace(sample_tree, tmp_path_factory):
    """A working directory with RAF-DB (the sample tree), a 2x2 RAF-DB-C export and a probe model."""
    root = tmp_path_factory.mktemp("evalc")
    os.symlink(sample_tree, root / "RAF-DB")
    command = [sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB",
               "--out", "corrupted_raf_dataset", "--corruptions", "gaussian_noise,contrast",
               "--severities", "1-2", "--workers", "1", "--quiet"]
    subprocess.run(command, cwd=root, check=True, capture_output=True)
    save_probe(root / "runs" / "run_a" / "checkpoint.03.hdf5")
    (root / "runs" / "run_a" / "checkpoint.01.hdf5").write_bytes(b"an older, unreadable one")
    return root


def expected_accuracies(root, protocol="soft"):
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", protocol)
    targets = labels.classes
    folders = ["RAF-DB/basic/Image/aligned"] + [
        f"corrupted_raf_dataset/rafdb.test.{c}.{s}" for c, s in PAIRS]
    result = {}
    for folder in folders:
        predictions = [predicted_class(root / folder / f"{name}_aligned.jpg") for name in labels.names]
        result[folder] = float(np.mean(np.array(predictions) == targets))
    return result, len(labels)


def run_script(root, *args):
    env = dict(os.environ, DNNL_MAX_CPU_ISA="AVX2", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "eval_corrupted_rafdb.py"), *map(str, args)],
                          cwd=root, env=env, capture_output=True, text=True)


def run_main(root, capsys, *args):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = eval_corrupted_rafdb.main([str(arg) for arg in args])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr()


def block_of(stdout):
    return stdout[: stdout.index("\n\n\n") + 3]


@pytest.mark.slow
def test_end_to_end_block_files_on_the_fly_and_baseline(workspace):
    root = workspace
    expected, n = expected_accuracies(root)
    checkpoint = "runs/run_a/checkpoint.03.hdf5"
    block = f"Results for: {checkpoint}\n" + "".join(
        "%s %f\n" % (folder, accuracy) for folder, accuracy in expected.items()) + "\n\n"

    first = run_script(root, "runs", "results.txt", "--corruptions", "gaussian_noise,contrast",
                       "--severities", "1-2", "--json", "r.json", "--csv", "r.csv", "--plot", "r.png")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(block)  # the directory of runs evaluates the best checkpoint
    assert (root / "results.txt").read_text() == block
    assert "Traceback" not in first.stderr and "images/s" in first.stdout
    assert f"N = {n} test images (soft labels" in first.stdout
    assert "UNNORMALISED" in first.stdout

    data = json.loads((root / "r.json").read_text())
    (result,) = data["results"]
    assert result["n"] == n and result["protocol"] == "soft" and result["format"] == "jpg"
    assert result["manifest"]["params"]["seed"] == 0
    assert "files" not in result["manifest"]  # the digest and parameters, not the file table
    exported = sum(1 for _ in (root / "corrupted_raf_dataset").glob("rafdb.test.*/*"))
    assert result["manifest"]["n_files"] == exported
    errors = {(row["corruption"], row["severity"]): row["error"] for row in result["folders"]}
    for (corruption, severity), folder in zip(PAIRS, list(expected)[1:]):
        assert errors[(corruption, severity)] == pytest.approx(1.0 - expected[folder])
    # Unnormalised sums (no baseline): sum_s E_s for gaussian_noise.
    noise_sum = 2.0 - expected["corrupted_raf_dataset/rafdb.test.gaussian_noise.1"] \
        - expected["corrupted_raf_dataset/rafdb.test.gaussian_noise.2"]
    assert result["summary"]["error_sum"]["gaussian_noise"] == pytest.approx(noise_sum)
    # ... and sum_s (E_s - E_clean), the relative CE's numerator: two severities, so 2 E_clean off
    clean_error = 1.0 - expected["RAF-DB/basic/Image/aligned"]
    assert clean_error > 0  # else the two sums could not differ
    assert result["summary"]["relative_error_sum"]["gaussian_noise"] == pytest.approx(
        noise_sum - 2 * clean_error)
    assert len((root / "r.csv").read_text().splitlines()) == 1 + 5 + 1  # header, 5 folders, summary
    assert (root / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A hand-made baseline: every corrupted error 0.5, clean error 0.25 (BENCHMARK.md §5.2 by hand).
    baseline = {"format": "rafdb-c-results", "version": 1, "results": [{
        "checkpoint": {"checkpoint": "reference.hdf5", "crop": "exact"}, "protocol": "soft",
        "n": n, "format": "jpg", "clean": {"error": 0.25},
        "folders": [{"corruption": None, "severity": 0, "error": 0.25, "accuracy": 0.75}]
        + [{"corruption": c, "severity": s, "error": 0.5, "accuracy": 0.5} for c, s in PAIRS]}]}
    (root / "base.json").write_text(json.dumps(baseline))

    second = run_script(root, checkpoint, "results.txt", "--corruptions", "gaussian_noise,contrast",
                        "--severities", "1-2", "--on-the-fly", "--workers", "2",
                        "--baseline", "base.json", "--json", "r2.json")
    assert second.returncode == 0, second.stderr
    assert block_of(second.stdout) == block  # on the fly == exported tree, exactly
    assert (root / "results.txt").read_text() == block + block  # appended twice: two blocks
    summary = json.loads((root / "r2.json").read_text())["results"][0]["summary"]
    assert summary["ce"]["gaussian_noise"] == pytest.approx(noise_sum / 1.0)
    assert summary["relative_ce"]["gaussian_noise"] == pytest.approx(
        (noise_sum - 2 * clean_error) / (1.0 - 0.5))
    contrast_sum = 2.0 - expected["corrupted_raf_dataset/rafdb.test.contrast.1"] \
        - expected["corrupted_raf_dataset/rafdb.test.contrast.2"]
    assert summary["mce"] == pytest.approx((noise_sum + contrast_sum) / 2)
    assert "reference.hdf5" in second.stdout


def test_hard_protocol_in_process(workspace, capsys):
    expected, n = expected_accuracies(workspace, "hard")
    code, out = run_main(workspace, capsys, "runs/run_a/checkpoint.03.hdf5", "--labels", "hard",
                         "--corruptions", "contrast", "--severities", "2")
    assert code == 0
    lines = block_of(out.out).splitlines()
    assert lines[1] == "RAF-DB/basic/Image/aligned %f" % expected["RAF-DB/basic/Image/aligned"]
    assert lines[2] == "corrupted_raf_dataset/rafdb.test.contrast.2 %f" % \
        expected["corrupted_raf_dataset/rafdb.test.contrast.2"]
    assert f"N = {n} test images (hard labels)" in out.out


def test_missing_folders_are_all_named(workspace, capsys, caplog):
    with pytest.raises(UserError) as error:
        run_main(workspace, capsys, "runs", "--corruptions", "gaussian_noise,contrast",
                 "--severities", "2-3")
    message = str(error.value)
    assert "rafdb.test.gaussian_noise.3" in message and "rafdb.test.contrast.3" in message
    assert "rafdb.test.contrast.2" not in message and "--allow-missing" in message
    # the whole 90 of a tree holding 4 (2 corruptions x 2 severities): a count and the first three, not 86 paths
    with pytest.raises(UserError) as error:
        run_main(workspace, capsys, "runs")
    message = str(error.value)
    assert ": 86 corrupted folder(s) missing: rafdb.test.gaussian_blur.1, rafdb.test.gaussian_blur.2, " \
           "rafdb.test.gaussian_blur.3 and 83 more (evaluate only what was exported with " \
           "--corruptions/--severities" in message and len(message) < 400

    code, out = run_main(workspace, capsys, "runs", "--corruptions", "gaussian_noise,contrast",
                         "--severities", "2-3", "--allow-missing")
    assert code == 0
    # the warning of --allow-missing is as short: a count and the first five (it listed all 86 paths)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _ = run_main(workspace, capsys, "runs", "--allow-missing", "--severities", "1")
    assert code == 0
    (warning,) = [line for line in caplog.messages if "missing corrupted folder" in line]
    assert warning == ("skipping 16 missing corrupted folder(s) under corrupted_raf_dataset: "
                            "rafdb.test.gaussian_blur.1, rafdb.test.defocus_blur.1, rafdb.test.zoom_blur.1, "
                            "rafdb.test.motion_blur.1, rafdb.test.shot_noise.1 and 11 more"), warning
    folders = [line.split()[0] for line in block_of(out.out).splitlines()[1:] if line]
    assert folders == ["RAF-DB/basic/Image/aligned",
                       "corrupted_raf_dataset/rafdb.test.gaussian_noise.2",
                       "corrupted_raf_dataset/rafdb.test.contrast.2"]


def test_missing_image_is_named(workspace, capsys, tmp_path):
    copy = tmp_path / "corrupted"
    shutil.copytree(workspace / "corrupted_raf_dataset", copy)
    victim = copy / "rafdb.test.contrast.1" / "test_0002_aligned.jpg"
    victim.unlink()
    with pytest.raises(UserError, match="test_0002_aligned.jpg: image not found"):
        run_main(workspace, capsys, "runs", "--corrupted", copy, "--corruptions", "contrast",
                 "--severities", "1")


def test_non_seven_outputs_need_class_order(workspace, capsys, tmp_path):
    path = save_probe(tmp_path / "eight.hdf5", outputs=8)
    with pytest.raises(UserError, match=r"8 outputs.*--class-order"):
        run_main(workspace, capsys, path, "--corruptions", "contrast", "--severities", "1")


@pytest.mark.parametrize("case", ["missing_checkpoint", "lambda"])
def test_bad_checkpoints_exit_2_without_traceback(workspace, tmp_path, case):
    if case == "missing_checkpoint":
        path, pattern = tmp_path / "nothing.hdf5", "nothing.hdf5: no such checkpoint"
    else:
        path, pattern = save_probe(tmp_path / "lam.hdf5", lam=True), "--unsafe"
    completed = run_script(workspace, path, "--corruptions", "contrast", "--severities", "1")
    assert completed.returncode == 2
    assert pattern in completed.stderr and str(path) in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""


@pytest.mark.parametrize("text, expected", [("1-5", [1, 2, 3, 4, 5]), ("3,1", [1, 3]), ("2", [2])])
def test_parse_severities(text, expected):
    assert robustness.parse_severities(text) == expected


@pytest.mark.parametrize("text", ["0", "1-6", "a"])
def test_parse_bad_severities(text):
    with pytest.raises(UserError, match="--severities"):
        robustness.parse_severities(text)


def test_positionals_may_follow_the_options():
    """RESULTS_FILE after the options (it was 'unrecognized arguments'), the reader's mode after its
    --json, checkpoints on both sides of an option."""
    import eval_perturbed_rafdb
    import eval_perturbed_rafdb2

    args = eval_corrupted_rafdb.parse_args(["m.keras", "--corrupted", "C", "results.txt"])
    assert (args.checkpoint, args.results_file, args.corrupted) == (Path("m.keras"), Path("results.txt"), Path("C"))
    args = eval_perturbed_rafdb2.parse_args(["p.txt", "--json", "fp.json", "t"])
    assert (args.predictions, args.mode, args.json) == (Path("p.txt"), "t", Path("fp.json"))
    args = eval_perturbed_rafdb.parse_args(["a.keras", "--rafdb", "R", "b.keras"])
    assert args.checkpoints == [Path("a.keras"), Path("b.keras")]
    # after "--", positionals that begin with '-' (intermixed parsing lost them)
    args = eval_perturbed_rafdb2.parse_args(["--json", "fp.json", "--", "-p.txt", "t"])
    assert (args.predictions, args.mode) == (Path("-p.txt"), "t")
    import report

    assert report.parse_args(["--out", "o", "--", "-a.json"]).inputs == [Path("-a.json")]


def test_the_plot_is_written_in_the_format_its_name_says(tmp_path):
    """--plot r.pdf is a PDF and r.svg an SVG (both were PNG bytes); r.txt is refused, naming the
    formats."""
    import robustness

    result = {"checkpoint": {"checkpoint": "runs/a/m.keras"},
              "folders": [{"corruption": None, "severity": 0, "accuracy": .9},
                          {"corruption": "contrast", "severity": 1, "accuracy": .8}]}
    robustness.write_plot(tmp_path / "r.pdf", [result])
    robustness.write_plot(tmp_path / "r.svg", [result])
    robustness.write_plot(tmp_path / "r.png", [result])
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()[:1000]
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(UserError, match=r"^--plot .*r\.txt: the plot is written as \.pdf, \.png, \.svg \(chosen by "
                                        r"the file name's suffix\); got \.txt$"):
        eval_corrupted_rafdb.main(["m.keras", "--plot", str(tmp_path / "r.txt")])


def test_parse_corruptions_canonical_order():
    import corruptions

    assert robustness.parse_corruptions("contrast,gaussian_blur") == ["gaussian_blur", "contrast"]
    assert robustness.parse_corruptions("all") == list(corruptions.CORRUPTION_NAMES)
    with pytest.raises(UserError, match="frost"):
        robustness.parse_corruptions("frost")


# --------------------------------------------------------------------------------------------
# RESULTS_FILE, --baseline checks, strict JSON, per-run outputs, corrupt images


@pytest.mark.parametrize("second", ["runs/run_a", "runs/run_a/checkpoint.03.hdf5", "other.keras"])
def test_results_file_that_is_a_run_or_checkpoint_is_refused(workspace, capsys, second):
    checkpoint = workspace / "runs" / "run_a" / "checkpoint.03.hdf5"
    before = checkpoint.read_bytes()
    with pytest.raises(UserError, match="directory of runs") as error:
        run_main(workspace, capsys, "runs/run_a", second, "--corruptions", "contrast", "--severities", "1")
    assert second in str(error.value) and "RESULTS_FILE" in str(error.value)
    assert checkpoint.read_bytes() == before and not (workspace / "other.keras").exists()
    assert capsys.readouterr().out == ""  # refused before evaluating anything


def test_results_file_in_a_missing_directory_is_refused_up_front(workspace, capsys):
    with pytest.raises(UserError, match="does not exist"):
        run_main(workspace, capsys, "runs/run_a", "no/such/dir/results.txt", "--corruptions", "contrast",
                 "--severities", "1")


def _baseline(n, *, protocol="soft", crop="exact", fmt="jpg", name="ref/reference.hdf5", clean=0.25,
              corrupted=0.5, source=None):
    return {"checkpoint": {"checkpoint": name, "crop": crop}, "protocol": protocol, "n": n, "format": fmt,
            **({"source": source} if source is not None else {}),
            "clean": {"error": clean},
            "folders": [{"corruption": None, "severity": 0, "error": clean, "accuracy": 1.0 - clean}]
            + [{"corruption": c, "severity": s, "error": corrupted, "accuracy": 1.0 - corrupted}
               for c, s in PAIRS]}


def _write_baseline(path, *results):
    path.write_text(json.dumps({"format": "rafdb-c-results", "version": 1, "results": list(results)}))
    return path


@pytest.mark.parametrize("field, value, shown", [("protocol", "hard", "protocol 'hard'"),
                                                 ("n", 999, "N 999"), ("crop", "legacy99", "crop 'legacy99'"),
                                                 ("fmt", "png", "format 'png'")])
def test_baseline_with_another_protocol_n_crop_or_format_is_an_error(workspace, capsys, tmp_path, field,
                                                                      value, shown):
    _, n = expected_accuracies(workspace)
    options = {"n": n, field: value}
    path = _write_baseline(tmp_path / "base.json", _baseline(**options))
    common = ["runs/run_a", "--corruptions", "contrast", "--severities", "1", "--baseline", path]
    with pytest.raises(UserError, match="--baseline-mismatch-ok") as error:
        run_main(workspace, capsys, *common)
    assert shown in str(error.value) and str(path) in str(error.value)
    code, out = run_main(workspace, capsys, *common, "--baseline-mismatch-ok")
    assert code == 0 and "mCE" in out.out


@pytest.mark.parametrize("source, shown", [({"seed": 7}, "seed 7 (this evaluation: 0)"),
                                           ({"colour": "bgr-compat"}, "colour 'bgr-compat' (this evaluation: 'rgb')"),
                                           ({"seed": 7, "colour": "rgb"}, "seed 7")])
def test_a_baseline_of_other_corrupted_images_is_an_error(workspace, capsys, tmp_path, source, shown):
    """A baseline evaluated on an export of another seed or colour mode saw other corrupted images:
    refused (its CE normalised other images), unless --baseline-mismatch-ok; the same settings, or a
    baseline that records none, pass."""
    _, n = expected_accuracies(workspace)
    common = ["runs/run_a", "--corruptions", "gaussian_noise", "--severities", "1", "--baseline"]  # draws
    path = _write_baseline(tmp_path / "other.json", _baseline(n, source=dict(source, on_the_fly=False)))
    with pytest.raises(UserError, match="--baseline-mismatch-ok") as error:
        run_main(workspace, capsys, *common, path)
    assert shown in str(error.value) and "export seed, colour, motion backend" in str(error.value)
    for same in ({"seed": 0, "colour": "rgb", "motion_backend": "numpy"}, {},
                 {"seed": 0, "colour": "rgb", "motion_backend": "wand"}):  # no motion blur evaluated
        path = _write_baseline(tmp_path / "same.json", _baseline(n, source=same))
        code, out = run_main(workspace, capsys, *common, path)
        assert code == 0 and "mCE" in out.out


def test_a_baseline_of_another_seed_is_taken_for_corruptions_that_draw_nothing(workspace, capsys, tmp_path):
    """contrast draws no random numbers: its images are the same whatever the export seed, so a
    baseline of another seed normalises it (only a corruption that draws makes the seed matter)."""
    _, n = expected_accuracies(workspace)
    path = _write_baseline(tmp_path / "seed7.json", _baseline(n, source={"seed": 7, "colour": "rgb"}))
    code, out = run_main(workspace, capsys, "runs/run_a", "--corruptions", "contrast", "--severities", "1",
                         "--baseline", path)
    assert code == 0 and "mCE" in out.out


def test_a_baseline_without_an_evaluated_folder_is_refused_before_any_model(workspace, capsys, tmp_path,
                                                                            monkeypatch):
    """A baseline lacking a folder the evaluation normalises was refused only after every model had
    been evaluated, and nothing was written; now before a model is loaded."""
    _, n = expected_accuracies(workspace)
    partial = _baseline(n)
    partial["folders"] = [row for row in partial["folders"] if row["corruption"] != "gaussian_noise"]
    path = _write_baseline(tmp_path / "partial.json", partial)
    import checkpoints

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the baseline was checked")

    monkeypatch.setattr(checkpoints, "classifier_from_args", no_model)
    with pytest.raises(UserError, match=rf"^--baseline {re.escape(str(path))}: no result for gaussian_noise\.1, "
                                        r"gaussian_noise\.2$"):
        run_main(workspace, capsys, "runs/run_a", "--corruptions", "gaussian_noise,contrast", "--severities", "1-2",
                 "--baseline", path, "--json", tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()
    monkeypatch.undo()
    code, out = run_main(workspace, capsys, "runs/run_a", "--corruptions", "contrast", "--severities", "1-2",
                         "--baseline", path)
    assert code == 0 and "mCE" in out.out  # the folders it has are enough for contrast alone
    # a corruption asked for but not exported, with --allow-missing, is not required of the baseline
    code, out = run_main(workspace, capsys, "runs/run_a", "--corruptions", "contrast,pixelate", "--severities", "1-2",
                         "--allow-missing", "--baseline", path)
    assert code == 0 and "mCE" in out.out


def test_a_baseline_of_other_test_images_is_an_error(workspace, capsys, tmp_path):
    """Results record the SHA-256 of their test set (image names in order, then the label rows as
    float64 rounded to 1e-9: recomputed here). A baseline of another dataset with the same protocol,
    N, crop and format (it was accepted, and mCE normalised by other images' errors) is refused,
    naming the digests; one recording no test set (an older file) is still compared on the rest;
    another dataset name is named as such."""
    import hashlib

    out = tmp_path / "r.json"
    code, _ = run_main(workspace, capsys, "runs/run_a", "--corruptions", "contrast", "--severities", "1",
                       "--json", out)
    assert code == 0
    result = json.loads(out.read_text())["results"][0]
    labels = rafdb_dataset.load_labels(workspace / "RAF-DB", "test", "soft")
    digest = hashlib.sha256("\n".join(labels.names).encode("utf-8"))
    digest.update(np.round(np.asarray(labels.labels, np.float64), 9).tobytes())
    assert result["test_set_sha256"] == digest.hexdigest()
    common = ["runs/run_a", "--corruptions", "contrast", "--severities", "1", "--baseline"]
    other = dict(_baseline(result["n"]), test_set_sha256="ab" * 32, dataset="rafdb")
    path = _write_baseline(tmp_path / "other.json", other)
    with pytest.raises(UserError) as error:
        run_main(workspace, capsys, *common, path)
    assert (f"--baseline {path}: produced with test set abababababab (this evaluation: test set "
            f"{digest.hexdigest()[:12]}); docs/BENCHMARK.md §5.2 needs the same test images") in str(error.value)
    older = _write_baseline(tmp_path / "older.json", _baseline(result["n"]))
    assert run_main(workspace, capsys, *common, older)[0] == 0
    folder = _write_baseline(tmp_path / "folder.json", dict(_baseline(result["n"]), dataset="folder"))
    with pytest.raises(UserError, match=r"produced with dataset 'folder' \(this evaluation: 'rafdb'\)"):
        run_main(workspace, capsys, *common, folder)


def test_a_shard_json_is_refused_as_baseline_even_with_a_clean_row(tmp_path):
    # One shard's result (it has "shard") may hold the clean folder and still miss corrupted ones:
    # a baseline must be the merged run (robustness.load_baseline).
    shard = dict(_baseline(12), shard={"index": 0, "count": 2})
    assert shard["clean"] == {"error": 0.25}
    path = _write_baseline(tmp_path / "base.json", shard)
    with pytest.raises(UserError, match="merge the shards") as error:
        robustness.load_baseline(path)
    assert "shard 0/2" in str(error.value) and str(path) in str(error.value)
    # the same result without "shard" is a usable baseline
    whole = _write_baseline(tmp_path / "whole.json", _baseline(12))
    assert robustness.load_baseline(whole)["clean"] == {"error": 0.25}


def test_baseline_method_picks_one_model_of_several(workspace, capsys, tmp_path):
    expected, n = expected_accuracies(workspace)
    path = _write_baseline(tmp_path / "base.json", _baseline(n, name="runs/first/checkpoint.02.hdf5", corrupted=0.5),
                           _baseline(n, name="runs/second/checkpoint.07.hdf5", corrupted=0.8))
    common = ["runs/run_a", "--corruptions", "contrast", "--severities", "1", "--baseline", path,
              "--json", tmp_path / "r.json"]
    with pytest.raises(UserError, match="holds 2 models.*--baseline-method"):
        run_main(workspace, capsys, *common)
    with pytest.raises(UserError, match="'third': not found"):
        run_main(workspace, capsys, *common, "--baseline-method", "third")
    code, _ = run_main(workspace, capsys, *common, "--baseline-method", "second")
    assert code == 0
    summary = json.loads((tmp_path / "r.json").read_text())["results"][0]["summary"]
    error_1 = 1.0 - expected["corrupted_raf_dataset/rafdb.test.contrast.1"]
    assert summary["ce"]["contrast"] == pytest.approx(error_1 / 0.8)  # BENCHMARK.md §5.2 with one severity


def test_json_writes_nan_as_null(workspace, capsys, tmp_path):
    _, n = expected_accuracies(workspace)
    # Baseline corrupted error == its clean error: relative CE's denominator is 0 -> NaN (BENCHMARK.md §5.2).
    path = _write_baseline(tmp_path / "base.json", _baseline(n, clean=0.5, corrupted=0.5))
    code, _ = run_main(workspace, capsys, "runs/run_a", "--corruptions", "contrast", "--severities", "1",
                       "--baseline", path, "--json", tmp_path / "r.json")
    assert code == 0
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text

    def refuse(token):
        raise AssertionError(f"invalid JSON token {token}")

    data = json.loads(text, parse_constant=refuse)
    summary = data["results"][0]["summary"]
    assert summary["relative_ce"]["contrast"] is None and summary["relative_mce"] is None


def test_outputs_are_written_after_each_run(workspace, capsys, tmp_path):
    runs = tmp_path / "runs"
    (runs / "run_a").mkdir(parents=True)
    shutil.copy(workspace / "runs" / "run_a" / "checkpoint.03.hdf5", runs / "run_a" / "checkpoint.03.hdf5")
    (runs / "run_b").mkdir()
    (runs / "run_b" / "checkpoint.01.hdf5").write_bytes(b"not a model")  # evaluated second, fails
    with pytest.raises(UserError, match="run_b"):
        run_main(workspace, capsys, runs, "--corruptions", "contrast", "--severities", "1",
                 "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv")
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert result["checkpoint"]["checkpoint"] == str(runs / "run_a" / "checkpoint.03.hdf5")
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 2 + 1  # header, clean, contrast.1, summary


def test_unfinished_export_is_named_before_evaluating(workspace, tmp_path):
    """A tree whose manifest says the export did not finish: exit 2 saying so (not a missing image)."""
    copy = tmp_path / "corrupted"
    shutil.copytree(workspace / "corrupted_raf_dataset" / "rafdb.test.contrast.1", copy / "rafdb.test.contrast.1")
    manifest = json.loads((workspace / "corrupted_raf_dataset" / "manifest.json").read_text())
    manifest["complete"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    sorted((copy / "rafdb.test.contrast.1").iterdir())[0].unlink()  # a file not written yet
    completed = run_script(workspace, "runs/run_a", "--corrupted", copy, "--corruptions", "contrast",
                           "--severities", "1")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "manifest.json: the export that writes" in completed.stderr and "has not finished" in completed.stderr


def test_a_format_other_than_the_trees_is_named_before_evaluating(workspace):
    """--format png on the workspace's JPEG tree (its manifest says jpg): exit 2 naming both (it was
    'image not found ... pass --allow-missing', which then gave a clean-only report labelled png)."""
    completed = run_script(workspace, "runs/run_a", "--format", "png", "--corruptions", "contrast", "--severities", "1")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: --format png: --corrupted corrupted_raf_dataset was exported as jpg (its manifest.json); leave "
        "--format out to read the tree's own")


def test_corrupt_image_exits_2_naming_the_file(workspace, tmp_path):
    copy = tmp_path / "corrupted"
    (copy / "rafdb.test.contrast.1").mkdir(parents=True)
    for image in (workspace / "corrupted_raf_dataset" / "rafdb.test.contrast.1").iterdir():
        shutil.copy(image, copy / "rafdb.test.contrast.1" / image.name)
    victim = sorted((copy / "rafdb.test.contrast.1").iterdir())[1]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG any more")
    completed = run_script(workspace, "runs/run_a", "--corrupted", copy, "--corruptions", "contrast",
                           "--severities", "1")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert victim.name in completed.stderr and "Traceback" not in completed.stderr


def test_a_tree_exported_from_other_source_images_is_refused(workspace, tmp_path):
    """The manifest records, per source face, sha256 over the sha256 hex of the file it was rendered
    from (checked here on one face); a face whose digest differs (as after re-sampling RAF-DB/ with
    another seed) stops the evaluation before any model, naming the face, exit 2."""
    import hashlib

    manifest = json.loads((workspace / "corrupted_raf_dataset" / "manifest.json").read_text())
    face = sorted(manifest["units"])[1]
    source = workspace / "RAF-DB" / "basic" / "Image" / "aligned" / face
    inner = hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["units"][face] == hashlib.sha256(inner.encode("ascii")).hexdigest()
    copy = tmp_path / "corrupted"
    copy.mkdir()
    os.symlink(workspace / "corrupted_raf_dataset" / "rafdb.test.contrast.1", copy / "rafdb.test.contrast.1")
    manifest["units"][face] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    completed = run_script(workspace, "runs/run_a", "--corrupted", copy, "--corruptions", "contrast",
                           "--severities", "1")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert (f"--corrupted {copy}: exported from other versions of 1 of the " in completed.stderr
            and f"RAF-DB/basic/Image/aligned/{face}: changed since the export" in completed.stderr)


# --------------------------------------------------------------------------------------------
# What a report keeps of the manifest; results.txt written atomically

MANIFEST_BYTES = (b'{"files": {"rafdb.test.contrast.1/test_0001_aligned.jpg": "ab"}, "params": {"seed": 3, '
                  b'"format": "jpg"}, "kind": "rafdb-c", "folders": {"rafdb.test.contrast.1": 1}, '
                  b'"source": {"root": "RAF-DB", "files": ["a.jpg", "b.jpg"]}}\n')
# sha256sum of exactly these bytes, computed once with coreutils' sha256sum
MANIFEST_SHA256 = "110a35bee0db97d5252d4083b9f457cabec539f49d128b8182c65caddbc895e9"


def test_manifest_summary_keeps_digest_and_parameters_not_the_file_table(tmp_path):
    (tmp_path / "manifest.json").write_bytes(MANIFEST_BYTES)
    kept = robustness.manifest_summary(tmp_path, json.loads(MANIFEST_BYTES))
    assert kept["sha256"] == MANIFEST_SHA256
    assert kept["params"] == {"seed": 3, "format": "jpg"} and kept["kind"] == "rafdb-c"
    assert kept["n_files"] == 1 and kept["folders"] == {"rafdb.test.contrast.1": 1}
    assert kept["source"] == {"root": "RAF-DB", "n_files": 2}
    assert "files" not in kept and "test_0001_aligned.jpg" not in json.dumps(kept)
    assert robustness.manifest_summary(tmp_path, None) is None


def test_results_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("Results for: first\n\n\n")
    before = os.stat(path).st_ino
    robustness.append_atomically(path, "Results for: second\n\n\n")
    assert path.read_text() == "Results for: first\n\n\nResults for: second\n\n\n"
    assert os.stat(path).st_ino != before  # a new file renamed into place, not appended in place
    assert [p.name for p in tmp_path.iterdir()] == ["results.txt"]  # no temporary left


# --------------------------------------------------------------------------------------------
# --on-the-fly on a tree whose aligned images differ in size


@pytest.mark.slow
def test_on_the_fly_with_mixed_image_sizes_equals_the_exported_tree(sample_tree, tmp_path, capsys):
    """Real RAF-DB trees can hold aligned images of several sizes: the exported path resizes each
    file to the model input, and --on-the-fly must do the same and give the same scores."""
    import rafdb_aug_dataset

    root = tmp_path
    shutil.copytree(sample_tree, root / "RAF-DB")
    aligned = sorted((root / "RAF-DB" / rafdb_dataset.ALIGNED_DIR).glob("test_*_aligned.jpg"))
    sizes = {}
    for index, path in enumerate(aligned[::3]):
        width, height = 90 + 13 * index, 120 - 7 * index  # none square, none 100 x 100
        image = cv2.resize(cv2.imread(str(path)), (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        sizes[path.name] = (height, width)
    assert len(set(sizes.values())) == len(sizes) > 2
    save_probe(root / "probe.keras")
    pairs = [("gaussian_noise", 1), ("contrast", 1)]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert rafdb_aug_dataset.main(["export", "--rafdb", "RAF-DB", "--out", "exported", "--corruptions",
                                       "gaussian_noise,contrast", "--severities", "1", "--workers", "1",
                                       "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    for path in aligned[::3]:  # the export keeps each image's own size
        written = cv2.imread(str(root / "exported" / "rafdb.test.contrast.1" / path.name))
        assert written.shape[:2] == sizes[path.name]
    common = ["--corruptions", "gaussian_noise,contrast", "--severities", "1", "--workers", "1"]
    code, exported = run_main(root, capsys, "probe.keras", "--corrupted", "exported", *common,
                              "--save-probabilities", "exported.npz", "--json", "exported.json")
    assert code == 0, exported.err
    code, on_the_fly = run_main(root, capsys, "probe.keras", "--on-the-fly", *common,
                                "--save-probabilities", "fly.npz", "--json", "fly.json")
    assert code == 0, on_the_fly.err

    # accuracies worked out by hand from the files (cv2 decode, bilinear resize to 32 px, matmul)
    labels = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft")
    folders = {None: root / "RAF-DB" / rafdb_dataset.ALIGNED_DIR}
    folders.update({pair: root / "exported" / f"rafdb.test.{pair[0]}.{pair[1]}" for pair in pairs})
    for name in ("exported", "fly"):
        (result,) = json.loads((root / f"{name}.json").read_text())["results"]
        assert result["n"] == len(labels.names)
        rows = {row["corruption"] and (row["corruption"], row["severity"]): row["accuracy"]
                for row in result["folders"]}
        assert set(rows) == set(folders)
        for pair, folder in folders.items():
            hand = np.mean(np.array([predicted_class(folder / f"{n}_aligned.jpg") for n in labels.names])
                           == labels.classes)
            assert rows[pair] == pytest.approx(float(hand))
    a, b = np.load(root / "exported.npz"), np.load(root / "fly.npz")
    assert list(a["folder"]) == list(b["folder"]) and list(a["image"]) == list(b["image"])
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=0, atol=1e-6)
    # each row's arg-max is the hand-computed class of the exported file
    for folder, image, row in zip(b["folder"], b["image"], b["probabilities"]):
        source = folders[None] if folder == "clean" else root / "exported" / f"rafdb.test.{folder}"
        assert int(np.argmax(row)) == predicted_class(source / f"{image}_aligned.jpg")


def test_an_evaluation_stopped_before_its_last_model_marks_its_json_unfinished(workspace, capsys, tmp_path, caplog):
    """Two runs, the second's checkpoint unreadable: the JSON holds the first model and says 1 of 2
    (complete false); report.py warns that the file is from an evaluation that did not finish."""
    import report

    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "checkpoint.03.hdf5").symlink_to(workspace / "runs" / "run_a" / "checkpoint.03.hdf5")
    (runs / "b").mkdir()
    (runs / "b" / "checkpoint.02.hdf5").write_bytes(b"not a model")
    json_path = tmp_path / "r.json"
    with pytest.raises(UserError, match="checkpoint.02.hdf5"):
        run_main(workspace, capsys, runs, "--corruptions", "contrast", "--severities", "1", "--json", json_path)
    data = json.loads(json_path.read_text())
    assert (data["complete"], data["models_planned"], len(data["results"])) == (False, 2, 1)
    with caplog.at_level("WARNING"):
        report.collect_files([json_path])
    assert f"{json_path}: written by an evaluation that did not finish (1 of 2 model(s))" in caplog.text
    code, _ = run_main(workspace, capsys, runs / "a", "--corruptions", "contrast", "--severities", "1",
                       "--json", json_path)
    data = json.loads(json_path.read_text())
    assert code == 0 and (data["complete"], data["models_planned"], len(data["results"])) == (True, 1, 1)


def test_a_perturbation_tree_given_as_corrupted_is_named_as_such(workspace, capsys, tmp_path):
    tree = tmp_path / "P"
    tree.mkdir()
    (tree / "manifest.json").write_text(json.dumps({"kind": "rafdb-p", "files": {}, "complete": True}))
    with pytest.raises(UserError, match=rf"--corrupted {tree}: its manifest records a rafdb-p tree, a perturbation "
                                        r"export .*; expected a corrupted-image export"):
        run_main(workspace, capsys, "runs/run_a", "--corrupted", tree, "--corruptions", "contrast",
                 "--severities", "1")


def test_an_export_of_another_dataset_given_as_corrupted_is_named_as_such(workspace, capsys, tmp_path):
    """A FER2013-C tree given to a RAF-DB evaluation: every folder was 'missing', and the advice
    (--allow-missing) gave a clean-only report. Its manifest's kind names the dataset; and the other
    way round, a RAF-DB-C tree given to a FER evaluation."""
    tree = tmp_path / "FER-C"
    tree.mkdir()
    (tree / "manifest.json").write_text(json.dumps({"kind": "fer-c", "files": {}, "complete": True}))
    for extra in ([], ["--allow-missing"]):
        with pytest.raises(UserError, match=rf"^--corrupted {tree}: its manifest records a fer-c tree, an export of "
                                            r"FER2013/FER\+; this evaluation reads RAF-DB \(--dataset rafdb\)"):
            run_main(workspace, capsys, "runs/run_a", "--corrupted", tree, "--corruptions", "contrast",
                     "--severities", "1", *extra)
    import synthetic_faces

    fer = synthetic_faces.write_fer_sample(tmp_path / "FER", n_train=7, n_public=7, n_private=7, seed=1)
    with pytest.raises(UserError, match=r"its manifest records a rafdb-c tree, an export of RAF-DB; this "
                                        r"evaluation reads FER2013/FER\+ \(--dataset ferplus\)"):
        run_main(workspace, capsys, "runs/run_a", "--dataset", "ferplus", "--data", fer, "--corrupted",
                 workspace / "corrupted_raf_dataset", "--class-order", "rafdb")


def test_rendering_flags_against_an_exported_tree(workspace, capsys):
    """--seed, --motion-backend and --colour choose what --on-the-fly renders; with an exported tree
    they were ignored without a word. A value the tree's manifest records otherwise is refused; its
    own value is accepted."""
    common = ["runs/run_a", "--corruptions", "contrast", "--severities", "1"]
    manifest = json.loads((workspace / "corrupted_raf_dataset" / "manifest.json").read_text())
    assert (manifest["params"]["seed"], manifest["params"]["colour"]) == (0, "rgb")
    for flag, value, recorded in (("--seed", "3", "seed 0"), ("--colour", "bgr-compat", "colour rgb")):
        with pytest.raises(UserError, match=rf"^{flag} {value}: --corrupted corrupted_raf_dataset was exported "
                                            rf"with {recorded} \(its manifest\.json\)"):
            run_main(workspace, capsys, *common, flag, value)
    # the motion backend only matters where a motion blur is evaluated
    code, _ = run_main(workspace, capsys, *common, "--seed", "0", "--colour", "rgb", "--motion-backend", "wand")
    assert code == 0
    with pytest.raises(UserError, match=r"^--motion-backend wand: --corrupted corrupted_raf_dataset was exported "
                                        r"with motion_backend numpy"):
        run_main(workspace, capsys, "runs/run_a", "--corruptions", "motion_blur,contrast", "--severities", "1",
                 "--allow-missing", "--motion-backend", "wand")


def test_a_corrupt_image_in_the_tree_is_one_error_line(sample_tree, tmp_path):
    """A damaged file inside an exported tree: the evaluation ends with one line naming it. The
    input pipeline's Python traceback used to be printed twice first, as TensorFlow C++ warnings."""
    import rafdb_aug_dataset

    out = tmp_path / "c"
    assert rafdb_aug_dataset.main(["export", "--rafdb", str(sample_tree), "--out", str(out), "--corruptions",
                                   "contrast", "--severities", "1", "--workers", "1", "--quiet"]) == 0
    victim = sorted((out / "rafdb.test.contrast.1").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "m.keras")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # the user's shell
    result = subprocess.run([sys.executable, str(Path(rafdb_aug_dataset.__file__).parent / "eval_corrupted_rafdb.py"),
                             str(tmp_path / "m.keras"), "--rafdb", str(sample_tree), "--corrupted", str(out),
                             "--corruptions", "contrast", "--severities", "1", "--preprocessing", "scale01"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: {victim}: not a readable image (corrupt, or not a "
                                                      f"JPEG, PNG, BMP, WebP or TIFF file)")
    assert "Traceback" not in result.stderr


def test_the_n_line_names_rows_without_an_image_apart_from_the_vote_filter():
    """FER+ rows without a file name are not removed by the vote filter: the line said "vote-filtered
    from 40" for 19 kept of 40 where 2 of the 21 removed had no image."""
    import robustness

    result = {"n": 19, "n_total": 40, "n_dropped": 19, "n_missing": 2, "protocol": "soft"}
    assert robustness.images_text(result) == ("N = 19 test images (soft labels, of 40: 19 dropped by the vote "
                                              "filter, 2 without an image")
    result.update(n_dropped=21, n_missing=0)
    assert robustness.images_text(result) == "N = 19 test images (soft labels, vote-filtered from 40"
    assert robustness.images_text({"n": 40, "protocol": "hard"}) == "N = 40 test images (hard labels"
    assert robustness.images_text({"n": 38, "protocol": "hard", "n_missing": 2}) == \
        "N = 38 test images (hard labels, 2 label row(s) without an image left out"
