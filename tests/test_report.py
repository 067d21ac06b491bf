"""report.py (docs/BENCHMARK.md §11.5): numbers recomputed by hand from the input JSONs,
comparability warnings, inputs, and the HTML rendered in a real browser (chromium, when present).

tests/data/report/*.json are real outputs: eval_corrupted_rafdb.py --json (three tiny models on
the synthetic sample, 4 corruptions x 5 severities, on the fly; tinycnn and mobile with --baseline
base.json) and eval_perturbed_rafdb2.py --json over a predictions file of the three methods with
#topk rankings. Some tests overwrite the per-folder errors with values chosen here.
"""

import base64
import csv
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import report
from cli_common import UserError

DATA = Path(__file__).resolve().parent / "data" / "report"


def load(name):
    return json.loads((DATA / f"{name}.json").read_text())


def set_errors(data, clean, errors):
    """Overwrite one robustness result's rows: errors[corruption] = [E_1..E_5]."""
    result = data["results"][0]
    for row in result["folders"]:
        if row["corruption"] is None:
            row["error"], row["accuracy"] = clean, 1 - clean
        else:
            row["error"] = errors[row["corruption"]][row["severity"] - 1]
            row["accuracy"] = 1 - row["error"]
    result["clean"] = result["folders"][0]
    return data


def load_designed(folder, name):
    return json.loads((folder / f"{name}.json").read_text())


def write(folder, name, data):
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def read_csv(path):
    with open(path, newline="") as stream:
        return {row["model"]: row for row in csv.DictReader(stream)}


CORRUPTIONS = ("gaussian_blur", "gaussian_noise", "contrast", "pixelate")


@pytest.fixture()
def designed(tmp_path):
    """Model tinycnn = docs/BENCHMARK.md §5.2's worked example on every corruption but contrast
    (higher errors there); base = the example's baseline; mobile worse than base (CE 2.5/2.25)."""
    model = {c: [.20, .30, .40, .50, .60] for c in CORRUPTIONS}
    model["contrast"] = [.40, .50, .60, .70, .80]
    base = {c: [.25, .35, .45, .55, .65] for c in CORRUPTIONS}
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder, "tinycnn", set_errors(load("tinycnn"), .10, model))
    write(folder, "base", set_errors(load("base"), .15, base))
    write(folder, "mobile", set_errors(load("mobile"), .20,
                                       {c: [.30, .40, .50, .60, .70] for c in CORRUPTIONS}))
    shutil.copy(DATA / "stability.json", folder / "stability.json")
    (folder / "run.json").write_text('{"net": "not a result"}')
    return folder


def test_numbers_recomputed_from_the_jsons(designed, tmp_path):
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"tinycnn", "base", "mobile"}
    tiny = rows["tinycnn"]
    # CE: 2.0/2.25 = 0.888889 on three corruptions, (0.4+...+0.8)/2.25 = 3.0/2.25 on contrast
    ce = [2.0 / 2.25] * 3 + [3.0 / 2.25]
    assert float(tiny["mce"]) == pytest.approx(np.mean(ce), abs=1e-12)
    # relative CE: (2.0 - 0.5)/(2.25 - 0.75) = 1 and (3.0 - 0.5)/1.5
    assert float(tiny["relative_mce"]) == pytest.approx(np.mean([1.0] * 3 + [2.5 / 1.5]), abs=1e-12)
    assert float(tiny["clean_error"]) == pytest.approx(0.10)
    assert float(tiny["mean_corruption_error"]) == pytest.approx((2.0 * 3 + 3.0) / 20)
    assert float(rows["base"]["mce"]) == pytest.approx(1.0)
    assert float(rows["mobile"]["mce"]) == pytest.approx(2.5 / 2.25)
    assert [rows[m]["rank"] for m in ("tinycnn", "base", "mobile")] == ["1", "2", "3"]
    assert tiny["ce_baseline"] == "base" and {r["group"] for r in rows.values()} == {"A"}
    # stability: mFP is the mean of the 10 FPs; mFR the mean of FP / FP_base; T2D the mean tkd[2]
    stability = json.loads((DATA / "stability.json").read_text())["methods"]
    fp = {m: [p["fp"] for p in stability[m]["perturbations"].values()] for m in stability}
    assert float(tiny["mfp"]) == pytest.approx(sum(fp["tinycnn"]) / 10, abs=1e-12)
    assert float(tiny["mfr"]) == pytest.approx(
        sum(a / b for a, b in zip(fp["tinycnn"], fp["base"])) / 10, abs=1e-12)
    t2d = [p["tkd"]["2"] for p in stability["tinycnn"]["perturbations"].values()]
    assert float(tiny["t2d"]) == pytest.approx(sum(t2d) / 10, abs=1e-12)
    md = (out / "report.md").read_text()
    assert "| A | 1 | tinycnn | 36 | soft | 10.00 | 45.00 | 100.00 | 116.67 |" in md
    assert "WARNING" not in md


def test_without_baseline_the_files_own_mce_is_shown(tmp_path):
    out = tmp_path / "out"
    report.make_report([DATA / "tinycnn.json", DATA / "mobile.json"], out)
    rows = read_csv(out / "report.csv")
    for name in ("tinycnn", "mobile"):
        summary = load(name)["results"][0]["summary"]
        assert float(rows[name]["mce"]) == pytest.approx(summary["mce"])
        assert rows[name]["ce_baseline"] == "base"
    assert rows["tinycnn"]["mfp"] == ""  # no stability file given


def test_different_protocols_are_never_ranked_together(designed, tmp_path):
    other = load("mobile")
    other["results"][0]["protocol"], other["results"][0]["n"] = "hard", 40
    write(designed, "mobile", other)
    out = tmp_path / "out"
    result = report.make_report([designed], out, baseline="base")
    assert any("protocol" in w and "hard (mobile)" in w for w in result["warnings"])
    rows = read_csv(out / "report.csv")
    assert rows["mobile"]["group"] != rows["tinycnn"]["group"]
    assert rows["mobile"]["rank"] == "1"  # alone in its group
    assert [rows[m]["rank"] for m in ("tinycnn", "base")] == ["1", "2"]
    html_text = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "class='warning'>WARNING: robustness results differ in protocol" in html_text
    assert "> **WARNING:** robustness results differ in n" in md


def test_baseline_of_other_images_normalises_nothing(designed, tmp_path):
    """mobile evaluated under the hard protocol on 40 images: base's errors (soft, its own N) are
    no denominator for it, so it gets no mCE and a warning saying why; tinycnn keeps its mCE."""
    other = load("mobile")
    other["results"][0]["protocol"], other["results"][0]["n"] = "hard", 40
    write(designed, "mobile", other)
    out = tmp_path / "out"
    result = report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert rows["mobile"]["mce"] in ("", "nan") and rows["tinycnn"]["mce"] not in ("", "nan")
    assert any(w.startswith("mobile: no mCE against the baseline base") and "protocol hard vs" in w
               for w in result["warnings"])


def test_a_baseline_file_that_normalises_no_model_is_refused(designed, tmp_path):
    """--baseline FILE (not one of the inputs) evaluated under the hard protocol on 40 images, the
    models under soft: it normalises none of them (each had a warning, the report no mCE, exit 0);
    as --help says, an error, and nothing is written. Under the models' protocol it is taken."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hard = json.loads((designed / "base.json").read_text())
    hard["results"][0]["protocol"], hard["results"][0]["n"] = "hard", 40
    path = write(elsewhere, "base_hard", hard)
    inputs = [designed / "tinycnn.json", designed / "mobile.json"]
    with pytest.raises(UserError, match=r"--baseline .*base_hard\.json: normalises none of the models read "
                                        r"\(evaluated on other images, labels or sequences: protocol soft vs hard"):
        report.make_report(inputs, tmp_path / "out", baseline=str(path))
    assert not (tmp_path / "out").exists()
    shutil.copy(designed / "base.json", elsewhere / "base_soft.json")
    report.make_report(inputs, tmp_path / "ok", baseline=str(elsewhere / "base_soft.json"))
    assert read_csv(tmp_path / "ok" / "report.csv")["tinycnn"]["ce_baseline"] == "base"


def test_a_stability_baseline_file_that_normalises_no_model_is_refused(designed, tmp_path):
    """A stability-only --baseline file of other sequences (N 1): no model's mFR; the CE column shows
    the name tinycnn's file recorded for its own baseline, also 'base', which is no normalisation by
    this file (it was counted as one, and the report went ahead)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = stability_json(elsewhere, "base_s", "runs/base/checkpoint.01.hdf5", [TWO_FLIPS])
    inputs = [designed / "tinycnn.json", designed / "stability.json"]
    with pytest.raises(UserError, match=r"--baseline .*base_s\.json: normalises none of the models read"):
        report.make_report(inputs, tmp_path / "out", baseline=str(base))


def test_different_corruption_sets_warn(designed, tmp_path):
    data = load("mobile")
    data["results"][0]["folders"] = [row for row in data["results"][0]["folders"]
                                     if row["corruption"] != "contrast"]
    write(designed, "mobile", data)
    result = report.make_report([designed], tmp_path / "out", baseline="base")
    assert any("different corruption sets" in w for w in result["warnings"])


def test_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no robustness"):
        report.make_report([tmp_path / "empty"], tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(UserError, match=str(bad)):
        report.make_report([bad], tmp_path / "out")
    with pytest.raises(UserError, match="no such result"):
        report.make_report([tmp_path / "missing.json"], tmp_path / "out")
    with pytest.raises(UserError, match="--baseline nope"):
        report.make_report([DATA], tmp_path / "out", baseline="nope")


def test_html_is_self_contained(designed, tmp_path):
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    text = (out / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == 4  # heatmap, severity lines, scatter, FP bars
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in text and "<link" not in text


def _chromium():
    for name in ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium installed (.ci/run installs "
                                                 "Debian's chromium package)")
def test_rendered_in_a_real_browser(designed, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    url = (out / "report.html").resolve().as_uri()
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(browser + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-figures-shown="4/4"' in dom  # every figure decoded by the browser
    assert "<td class='t'>tinycnn</td>".replace("'", '"') in dom
    assert ">45.00<" in dom and ">116.67<" in dom  # tinycnn: mean corr. error, rel. mCE
    shot = tmp_path / "shot.png"
    subprocess.run(browser + ["--window-size=1200,2600", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2600, 1200)
    assert pixels.std() > 20  # not blank
    # The heatmap's viridis colours (strongly coloured pixels) are on screen below the table.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation[300:] > 100).sum() > 5000


# --------------------------------------------------------------------------------------------
# Joining robustness and stability rows by the model file (two models in one folder)


def stability_json(folder, name, checkpoint, sequences, meta="", labels="soft", source="landmarks",
                   perturbed="perturbed/rafdb.test"):
    """The stability JSON eval_perturbed_rafdb2.py --json writes for one model's predictions file
    (one p_rotate block of ``sequences``, header ``<checkpoint>,perturbed/rafdb.test.p_rotate``;
    ``meta``: more metadata, e.g. " preprocessing=none model_sha256=...")."""
    import eval_perturbed_rafdb2

    text = (f"{checkpoint},{perturbed}.p_rotate\n"
            f"# labels={labels} N={len(sequences)} source={source} frames=30{meta}\n"
            + "".join(",".join(map(str, seq)) + "\n" for seq in sequences))
    predictions = folder / f"{name}.txt"
    predictions.write_text(text)
    out = folder / f"{name}.json"
    assert eval_perturbed_rafdb2.main([str(predictions), "--json", str(out), "--quiet"]) == 0
    return out


def robustness_json(folder, name, checkpoint, clean, n=1):
    """A robustness JSON of ``checkpoint`` with clean error ``clean``, measured on ``n`` test images
    (soft labels): the N of the stability JSON it should join (one sequence per image)."""
    data = set_errors(load("tinycnn"), clean, {c: [clean + .1 * s for s in range(1, 6)]
                                               for c in CORRUPTIONS})
    data["results"][0]["checkpoint"]["checkpoint"] = checkpoint
    assert data["results"][0]["protocol"] == "soft"
    data["results"][0]["n"] = n
    return write(folder, name, data)


CONSTANT = [3] * 30                  # no flip: FP 0
TWO_FLIPS = [3] * 5 + [0, 0] + [3] * 23  # 2 of the 29 consecutive pairs differ: FP 2/29


def test_models_of_one_folder_join_by_their_file(tmp_path, capsys):
    """Two ONNX models in models/: each JSON pair joins into one row, named by folder and file."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "o_fer2013", "models/o_fer2013.onnx", .10, n=2),
              robustness_json(folder, "o_dyn", "models/o_dyn.onnx", .30, n=2),
              stability_json(folder, "stab", "models/o_fer2013.onnx", [TWO_FLIPS, TWO_FLIPS]),
              stability_json(folder, "stab_dyn", "./models/o_dyn.onnx", [CONSTANT, TWO_FLIPS])]
    stab = json.loads(inputs[2].read_text())
    assert stab["methods"]["models"]["checkpoint"] == "models/o_fer2013.onnx"
    out = tmp_path / "out"
    report.make_report(inputs, out)
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"models/o_fer2013.onnx", "models/o_dyn.onnx"}
    fer, dyn = rows["models/o_fer2013.onnx"], rows["models/o_dyn.onnx"]
    assert float(fer["clean_error"]) == pytest.approx(.10)
    assert float(fer["mean_corruption_error"]) == pytest.approx(.10 + .3)  # mean of +.1 .. +.5
    assert float(fer["mfp"]) == pytest.approx(2 / 29)
    assert float(dyn["clean_error"]) == pytest.approx(.30)
    assert float(dyn["mfp"]) == pytest.approx((0 + 2 / 29) / 2)
    assert fer["stability_n"] == dyn["stability_n"] == "2"
    assert "appears again" not in capsys.readouterr().err


def test_a_file_directly_in_the_runs_folder_is_named_by_its_file(tmp_path):
    """The LBP+SVM baseline at its default out_training_fer/lbp_svm.skops was the row 'out_training_fer'
    (its folder's name, which names no model); a run's checkpoint keeps its run folder's name, and the
    stability result of the same file (the reader names it 'out_training_fer') joins the row."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "lbp", "out_training_fer/lbp_svm.skops", .20),
              robustness_json(folder, "run", "out_training_fer/run_a/checkpoint.03.hdf5", .10),
              stability_json(folder, "stab", "out_training_fer/lbp_svm.skops", [TWO_FLIPS])]
    out = tmp_path / "out"
    report.make_report(inputs, out)
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"lbp_svm.skops", "run_a"}
    assert float(rows["lbp_svm.skops"]["clean_error"]) == pytest.approx(.20)
    assert float(rows["lbp_svm.skops"]["mfp"]) == pytest.approx(2 / 29)


def test_no_mfr_against_a_baseline_of_other_sequences(tmp_path):
    """A FER2013 model's stability normalised by a RAF-DB baseline's flip probabilities showed mFR 0.00;
    such a model has no mFR, with a warning naming the difference, and a model of the same
    sequences keeps its mFR (by hand: FP 1/29 against the baseline's 2/29)."""
    import eval_perturbed_rafdb2

    folder = tmp_path / "in"
    folder.mkdir()
    inputs = []
    for name, perturbed, sequences in (("base", "P/rafdb.test", [TWO_FLIPS, TWO_FLIPS]),
                                       ("same", "P/rafdb.test", [TWO_FLIPS, CONSTANT]),
                                       ("fer", "P/fer2013.PublicTest", [TWO_FLIPS, CONSTANT])):
        text = (f"runs/{name}/m.keras,{perturbed}.p_rotate\n# labels=soft N=2 source=landmarks frames=30\n"
                + "".join(",".join(map(str, seq)) + "\n" for seq in sequences))
        (folder / f"{name}.txt").write_text(text)
        assert eval_perturbed_rafdb2.main([str(folder / f"{name}.txt"), "--json", str(folder / f"{name}.json"),
                                           "--quiet"]) == 0
        inputs.append(folder / f"{name}.json")
    result = report.make_report(inputs, tmp_path / "out", baseline="base")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert float(rows["same"]["mfr"]) == pytest.approx((1 / 29) / (2 / 29))
    assert rows["fer"]["mfr"] in ("", "nan")
    assert any(w.startswith("fer: no mFR against the baseline base, evaluated on other sequences (dataset "
                            "fer2013.PublicTest vs rafdb.test)") for w in result["warnings"]), result["warnings"]


def test_a_model_missing_one_evaluation_is_ranked_with_the_others(tmp_path):
    """Three models of one dataset and protocol: m1 evaluated for robustness and stability, m2 and m3
    for robustness only. They share every comparability key where they have results, so they are one
    group (they were two: m1, and m2 + m3), ranked together by the mCE their files carry (the same
    for the three: they share rank 1, listed by name). A fourth, evaluated for stability only, cannot be ranked by mCE with
    them: a group of its own, named in a warning."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "r1", "runs/m1/c.keras", .10),
              stability_json(folder, "s1", "runs/m1/c.keras", [TWO_FLIPS]),
              robustness_json(folder, "r2", "runs/m2/c.keras", .05),
              robustness_json(folder, "r3", "runs/m3/c.keras", .08)]
    result = report.make_report(inputs, tmp_path / "out")
    assert [(row["group"], row["rank"], row["model"], row["ranked_by"]) for row in result["rows"]] == [
        ("A", 1, "m1", "mce"), ("A", 1, "m2", "mce"), ("A", 1, "m3", "mce")]
    assert not any("group" in warning for warning in result["warnings"])
    inputs.append(stability_json(folder, "s4", "runs/m4/c.keras", [CONSTANT]))
    result = report.make_report(inputs, tmp_path / "out2")
    assert [(row["group"], row["model"]) for row in result["rows"]] == [
        ("A", "m1"), ("A", "m2"), ("A", "m3"), ("B", "m4")]
    assert "results of one kind only, ranked apart from models with other results: m4 (stability only)" \
        in result["warnings"]
    # one model of each kind: two groups, and the warning says why (it said nothing)
    result = report.make_report([inputs[2], inputs[4]], tmp_path / "out3")
    assert sorted(row["group"] for row in result["rows"]) == ["A", "B"]
    assert ("results of one kind only, ranked apart from models with other results: m2 (robustness only), "
            "m4 (stability only)") in result["warnings"]


def test_a_baseline_that_normalises_nothing_is_refused(tmp_path):
    """A stability result as the baseline of robustness results only (it was dropped silently and the
    report asked for a --baseline): exit 2 naming the file and what each side holds; the same file
    with stability inputs normalises FR."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r1", "runs/m1/c.keras", .10)
    stable = stability_json(folder, "s2", "runs/m2/c.keras", [TWO_FLIPS])
    with pytest.raises(UserError) as error:
        report.make_report([robust], tmp_path / "out", baseline=str(stable))
    assert str(error.value) == (f"--baseline {stable}: holds stability results only, and no model read "
                                f"has stability results, so it would normalise nothing (CE needs robustness "
                                f"results on both sides, FR stability results)")
    # a model of the inputs, alone, is its own baseline (100 %), as before
    alone = report.make_report([robust], tmp_path / "alone", baseline="m1")
    assert [(row["model"], row["mce"]) for row in alone["rows"]] == [("m1", pytest.approx(1.0))]
    other = stability_json(folder, "s3", "runs/m3/c.keras", [TWO_FLIPS])
    result = report.make_report([robust, other], tmp_path / "out2", baseline=str(stable))
    assert {row["model"]: row["mfr"] for row in result["rows"]}["m3"] == pytest.approx(1.0)


def test_the_notes_speak_of_what_the_report_holds(tmp_path):
    """Stability results only, no --baseline: one note says there is no mFR and how to get one, and
    none speaks of CE (the notes said "CE / relative CE normalised to no baseline" and "FR normalised
    to no baseline" whatever the inputs); with a baseline named, FR is normalised to it."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [stability_json(folder, "s1", "runs/m1/c.keras", [TWO_FLIPS]),
              stability_json(folder, "s2", "runs/m2/c.keras", [CONSTANT])]
    report.make_report(inputs, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "FR: no baseline, so no mFR (name one with --baseline)." in text
    assert "CE / relative CE" not in text and "normalised to no baseline" not in text
    report.make_report(inputs, tmp_path / "out2", baseline="m1")
    assert "FR normalised to m1." in (tmp_path / "out2" / "report.md").read_text()


def test_an_unreadable_json_found_in_a_folder_is_skipped_with_a_warning(tmp_path, caplog):
    """A folder holding results and another tool's broken scratch JSON: the report is made from the
    results and the file is named in a warning (the whole report stopped on it); named on the command
    line, the same file is an error."""
    folder = tmp_path / "in"
    folder.mkdir()
    robustness_json(folder, "r1", "runs/m1/c.keras", .10)
    broken = folder / "broken.json"
    broken.write_text('{"a":1')
    with caplog.at_level(logging.WARNING):
        result = report.make_report([folder], tmp_path / "out")
    assert [row["model"] for row in result["rows"]] == ["m1"]
    assert f"{broken}: not a readable JSON file" in caplog.text and "skipped" in caplog.text
    with pytest.raises(UserError, match="broken.json: not a readable JSON file"):
        report.make_report([broken], tmp_path / "out2")


def test_stability_of_other_sequence_lengths_or_difficulty_is_never_ranked_together(tmp_path):
    """FP over 10-frame sequences (--frames 10 on a 30-frame tree) and FP over 30 frames are other
    numbers: two groups and a warning naming the lengths (they were ranked together silently); the
    same for results computed at --difficulty 5, whose warning now names the difficulty."""
    import eval_perturbed_rafdb2

    folder = tmp_path / "in"
    folder.mkdir()
    thirty = stability_json(folder, "s30", "runs/m30/c.keras", [TWO_FLIPS])
    ten = folder / "s10.txt"
    ten.write_text("runs/m10/c.keras,perturbed/rafdb.test.p_rotate\n" + ",".join(["3"] * 10) + "\n")
    assert eval_perturbed_rafdb2.main([str(ten), "--json", str(folder / "s10.json"), "--quiet"]) == 0
    result = report.make_report([thirty, folder / "s10.json"], tmp_path / "out")
    assert sorted((row["group"], row["model"]) for row in result["rows"]) == [("A", "m30"), ("B", "m10")]
    assert "stability results differ in frames: 30 (m30); 10 (m10)" in result["warnings"]
    hard = folder / "s5.txt"
    hard.write_text((folder / "s30.txt").read_text().replace("runs/m30", "runs/m5"))
    assert eval_perturbed_rafdb2.main([str(hard), "--difficulty", "5", "--json", str(folder / "s5.json"),
                                       "--quiet"]) == 0
    result = report.make_report([thirty, folder / "s5.json"], tmp_path / "out2")
    assert "stability results differ in difficulty: 1 (m30); 5 (m5)" in result["warnings"]


def test_same_named_models_of_different_folders_never_merge(tmp_path):
    """a/models/m.onnx and b/models/m.onnx share folder and file name: whole paths name them."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "ra", "a/models/m.onnx", .10),
              robustness_json(folder, "rb", "b/models/m.onnx", .20),
              stability_json(folder, "sa", "a/models/m.onnx", [CONSTANT]),
              stability_json(folder, "sb", "b/models/m.onnx", [TWO_FLIPS])]
    out = tmp_path / "out"
    report.make_report(inputs, out)
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"a/models/m.onnx", "b/models/m.onnx"}
    assert (float(rows["a/models/m.onnx"]["clean_error"]), float(rows["a/models/m.onnx"]["mfp"])) == \
        pytest.approx((.10, 0.0))
    assert (float(rows["b/models/m.onnx"]["clean_error"]), float(rows["b/models/m.onnx"]["mfp"])) == \
        pytest.approx((.20, 2 / 29))


def test_stability_without_a_recorded_path_never_replaces_another(tmp_path):
    """Two older stability JSONs (no ``checkpoint``) both naming their method "models": two rows."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [stability_json(folder, "s1", "models/x.onnx", [CONSTANT]),
              stability_json(folder, "s2", "models/y.onnx", [TWO_FLIPS])]
    for path in inputs:
        data = json.loads(path.read_text())
        del data["methods"]["models"]["checkpoint"]
        path.write_text(json.dumps(data))
    out = tmp_path / "out"
    report.make_report(inputs, out)
    rows = read_csv(out / "report.csv")
    assert {name: float(row["mfp"]) for name, row in rows.items()} == \
        pytest.approx({"models": 0.0, "models (s2.json)": 2 / 29})


def test_a_model_evaluated_from_two_folders_joins_by_its_file_hash(tmp_path):
    """Robustness recorded "m.keras" (run from the model's folder), stability "../models/m.keras"
    (run from elsewhere): the same file, known by its SHA-256, is one row."""
    folder = tmp_path / "in"
    folder.mkdir()
    digest = "ab" * 32
    robust = robustness_json(folder, "r", "m.keras", .10)
    data = json.loads(robust.read_text())
    data["results"][0]["checkpoint"]["checkpoint_sha256"] = digest
    robust.write_text(json.dumps(data))
    stable = stability_json(folder, "s", "../models/m.keras", [TWO_FLIPS])
    text = (folder / "s.txt").read_text().replace("frames=30\n", f"frames=30 model_sha256={digest}\n", 1)
    (folder / "s.txt").write_text(text)
    import eval_perturbed_rafdb2

    assert eval_perturbed_rafdb2.main([str(folder / "s.txt"), "--json", str(stable), "--quiet"]) == 0
    assert json.loads(stable.read_text())["methods"]["models"]["checkpoint_sha256"] == digest
    out = tmp_path / "out"
    report.make_report([robust, stable], out)
    rows = read_csv(out / "report.csv")
    assert len(rows) == 1
    (row,) = rows.values()
    assert (float(row["clean_error"]), float(row["mfp"])) == pytest.approx((.10, 2 / 29))


def test_one_model_under_two_label_protocols_is_two_rows(tmp_path, capsys):
    """The same file evaluated with soft and with hard labels: neither replaces the other."""
    folder = tmp_path / "in"
    folder.mkdir()
    soft = robustness_json(folder, "soft", "runs/a/m.hdf5", .10)
    hard = robustness_json(folder, "hard", "runs/a/m.hdf5", .20)
    data = json.loads(hard.read_text())
    data["results"][0].update(protocol="hard", n=3068)
    hard.write_text(json.dumps(data))
    soft_n = json.loads(soft.read_text())["results"][0]["n"]
    out = tmp_path / "out"
    report.make_report([soft, hard], out)
    rows = read_csv(out / "report.csv")
    assert set(rows) == {f"a [soft labels, N={soft_n}]", "a [hard labels, N=3068]"}
    assert float(rows["a [hard labels, N=3068]"]["clean_error"]) == pytest.approx(.20)
    assert float(rows[f"a [soft labels, N={soft_n}]"]["clean_error"]) == pytest.approx(.10)
    assert "appears again" not in capsys.readouterr().err


def test_an_older_robustness_json_joins_a_hashed_stability_json_by_path(tmp_path):
    """Robustness written before the hash was recorded (path only) and a stability JSON with the
    hash: one model, joined on the path as before; the same path with two different hashes (the file
    overwritten between evaluations) is two rows, told apart by the hash."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS])
    data = json.loads(stable.read_text())
    data["methods"]["a"]["checkpoint_sha256"] = "cd" * 32
    stable.write_text(json.dumps(data))
    out = tmp_path / "out"
    report.make_report([robust, stable], out)
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"a"} and float(rows["a"]["mfp"]) == pytest.approx(2 / 29)
    data = json.loads(robust.read_text())
    data["results"][0]["checkpoint"]["checkpoint_sha256"] = "ab" * 32
    robust.write_text(json.dumps(data))
    report.make_report([robust, stable], tmp_path / "out2")
    rows = read_csv(tmp_path / "out2" / "report.csv")
    assert set(rows) == {"runs/a/m.keras [abababab]", "runs/a/m.keras [cdcdcdcd]"}


def test_one_export_reached_by_two_paths_is_one_source(tmp_path):
    """Two models evaluated on the same export (same manifest SHA-256) from different folders
    ("ref_c" and "../ref_c"): one comparable group, ranked together."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, corrupted, clean in (("a", "ref_c", .10), ("b", "../ref_c", .20)):
        path = robustness_json(folder, name, f"runs/{name}/m.keras", clean)
        data = json.loads(path.read_text())
        data["results"][0]["corrupted"] = corrupted
        data["results"][0]["source"] = {"on_the_fly": False, "format": "jpg"}
        data["results"][0]["manifest"] = {**(data["results"][0].get("manifest") or {}), "sha256": "ee" * 32}
        path.write_text(json.dumps(data))
        paths.append(path)
    out = tmp_path / "out"
    report.make_report(paths, out)
    rows = read_csv(out / "report.csv")
    assert {row["group"] for row in rows.values()} == {"A"}
    assert (rows["a"]["rank"], rows["b"]["rank"]) == ("1", "1")  # the mCE both files carry: a tie
    assert rows["a"]["source"] == "export with manifest eeeeeeeeeeee"


def test_equal_values_share_a_rank(tmp_path):
    """Two models with the same errors everywhere tie: competition ranking 1, 1, 3 (the names gave 1, 2)."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, clean in (("b_first", .10), ("a_second", .10), ("c", .30), ("d", .05)):
        path = robustness_json(folder, name, f"runs/{name}/m.keras", clean)
        data = json.loads(path.read_text())  # no baseline: ranked by the mean corruption error set here
        data["results"][0]["baseline"] = None
        for key in ("mce", "relative_mce", "ce", "relative_ce"):
            data["results"][0]["summary"].pop(key, None)
        paths.append(write(folder, name, data))
    report.make_report(paths, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert {rows[name]["ranked_by"] for name in rows} == {"mean_corruption_error"}
    assert {name: rows[name]["rank"] for name in rows} == {"d": "1", "a_second": "2", "b_first": "2", "c": "4"}
    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8") as stream:
        assert [row["model"] for row in csv.DictReader(stream)] == ["d", "a_second", "b_first", "c"]


def test_a_baseline_sum_of_exactly_zero_is_undefined_not_huge(designed, tmp_path):
    """base's contrast errors 21, 22, 22, 20, 15 of 36 against a clean 20 of 36: Σ_s(E_s - E_clean) = 0
    by hand, +5.6e-17 in floating point, and report.py's recomputed relative mCE was 1.75e16 (the
    other corruptions' errors are above that clean error: their relative CE is defined)."""
    base = {c: [.60, .65, .70, .75, .80] for c in CORRUPTIONS}
    base["contrast"] = [k / 36 for k in (21, 22, 22, 20, 15)]
    write(designed, "base", set_errors(load("base"), 20 / 36, base))
    result = report.make_report([designed], tmp_path / "out", baseline="base")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["tinycnn"]["relative_mce"] == ""
    assert any(w.startswith("tinycnn: the relative CE of contrast is undefined") for w in result["warnings"])


def test_an_undefined_ratio_hides_the_mean_and_names_it(designed, tmp_path):
    """base's contrast errors sit below its clean error: Σ_s(E_s - E_clean) = 5 (.10 - .15) < 0, so
    every model's relative CE on contrast is undefined and so is the relative mCE (the evaluation
    prints nan); the mCE is still defined: (3 x 2.0/2.25 + 3.0/0.5) / 4. base's p_rotate FP set
    to 0: the FR and so the mFR are undefined."""
    base = {c: [.25, .35, .45, .55, .65] for c in CORRUPTIONS}
    base["contrast"] = [.10] * 5
    write(designed, "base", set_errors(load("base"), .15, base))
    stability = json.loads((designed / "stability.json").read_text())
    stability["methods"]["base"]["perturbations"]["p_rotate"]["fp"] = 0.0
    (designed / "stability.json").write_text(json.dumps(stability))
    out = tmp_path / "out"
    result = report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert rows["tinycnn"]["relative_mce"] == "" and rows["tinycnn"]["mfr"] == ""
    assert float(rows["tinycnn"]["mce"]) == pytest.approx((3 * 2.0 / 2.25 + 3.0 / 0.5) / 4, abs=1e-12)
    warned = [w for w in result["warnings"] if w.startswith("tinycnn: ")]
    assert any(w.startswith("tinycnn: the relative CE of contrast is undefined") and
               w.endswith("so the relative mCE is not shown") for w in warned)
    assert not any(w.startswith("tinycnn: the CE of") for w in warned)  # the mCE is shown
    assert any(w.startswith("tinycnn: the flip rate (FR) of p_rotate is undefined") for w in result["warnings"])


def test_held_out_sets_leave_the_headline_numbers_alone(designed, tmp_path):
    """Rows of a face-set corruption (error .90 at every severity) added to tinycnn and base: the
    mean corruption error, mean ECE and mCE stay those of the four corruptions of the 18
    (test_numbers_recomputed_from_the_jsons: 0.45 and (3 x 2.0/2.25 + 3.0/2.25) / 4 = 1.0), and
    the models stay comparable with mobile, which has no extra rows."""
    out = tmp_path / "plain"
    report.make_report([designed], out, baseline="base")
    plain = read_csv(out / "report.csv")
    for name in ("tinycnn", "base"):
        data = json.loads((designed / f"{name}.json").read_text())
        folders = data["results"][0]["folders"]
        for severity in range(1, 6):
            folders.append(dict(folders[1], corruption="occlusion_eyes", severity=severity, error=.9,
                                accuracy=.1, ece=.5))
        write(designed, name, data)
    out = tmp_path / "extra"
    result = report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    tiny = rows["tinycnn"]
    assert float(tiny["mean_corruption_error"]) == pytest.approx(0.45, abs=1e-12)
    assert float(tiny["mce"]) == pytest.approx(1.0, abs=1e-12)
    assert tiny["mean_ece"] == plain["tinycnn"]["mean_ece"] and tiny["relative_mce"] == plain["tinycnn"]["relative_mce"]
    assert {row["group"] for row in rows.values()} == {"A"}
    assert not any("corruption" in w for w in result["warnings"])
    assert result["metrics"]["tinycnn"]["c"]["mean_error"]["occlusion_eyes"] == pytest.approx(.9)


@pytest.mark.parametrize("base_param_set, fog_ce", [("scaled", 0.9 * 5 / (0.6 * 5)), ("imagenet224", None),
                                                    (None, 0.9 * 5 / (0.6 * 5))])  # None: not recorded, not compared
def test_an_imagenet_extra_has_no_ce_against_a_baseline_of_another_param_set(designed, tmp_path, base_param_set,
                                                                          fog_ce):
    """fog rows (tinycnn .90, base .60 at every severity), tinycnn's rendered with --param-set scaled:
    CE = 4.5 / 3.0 against a base of the same parameter set; none against one of imagenet224 (its
    fog is another corruption, docs/BENCHMARK.md §2.9), while the 18's CE stay."""
    for name, error, param_set in (("tinycnn", .9, "scaled"), ("base", .6, base_param_set)):
        data = json.loads((designed / f"{name}.json").read_text())
        result = data["results"][0]
        for severity in range(1, 6):
            result["folders"].append(dict(result["folders"][1], corruption="fog", severity=severity, error=error,
                                          accuracy=1 - error))
        result["source"] = dict(result.get("source") or {}, param_set=param_set)
        write(designed, name, data)
    result = report.make_report([designed], tmp_path / "out", baseline="base")
    metrics = result["metrics"]["tinycnn"]["c"]
    assert metrics["ce"].get("fog") == (None if fog_ce is None else pytest.approx(fog_ce, abs=1e-12))
    assert metrics["ce"]["gaussian_noise"] == pytest.approx(2.0 / 2.25, abs=1e-12)
    assert metrics["mce"] == pytest.approx(1.0, abs=1e-12)
    # beside the 18 the headline numbers are the 18's: one group whatever the extras' lengths, and a
    # CE withheld for them is a warning giving the reason (it had none)
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["tinycnn"]["group"] == rows["base"]["group"] and "param set" not in rows["base"]["source"]
    no_ce = [w for w in result["warnings"] if w.startswith("tinycnn: no CE for fog against the baseline base")]
    assert no_ce == ([] if fog_ce is not None else
                     ["tinycnn: no CE for fog against the baseline base: rendered with --param-set scaled, the "
                      "baseline's with imagenet224 (other images, docs/BENCHMARK.md §2.9)"])


def test_results_over_imagenet_extras_alone_of_other_param_sets_are_ranked_apart(designed, tmp_path):
    """Two models evaluated on fog alone (their headline numbers are over it), rendered with
    --param-set scaled and imagenet224: other images, so two groups, each source naming its set (they
    were ranked together in one group with no warning); the same set: one group. A model evaluated on
    the 18 beside one evaluated on the 18 plus fog stays in their group (the headline is the 18's)."""
    def fog_only(name, error, param_set):
        data = json.loads((designed / f"{name}.json").read_text())
        result = data["results"][0]
        clean = next(row for row in result["folders"] if row["corruption"] is None)
        result["folders"] = [clean] + [dict(result["folders"][1], corruption="fog", severity=s, error=error,
                                            accuracy=1 - error) for s in range(1, 6)]
        result["source"] = dict(result.get("source") or {}, param_set=param_set)
        return write(tmp_path, f"{name}_{param_set}", data)

    for other, apart in (("imagenet224", True), ("scaled", False)):
        out = tmp_path / f"out_{other}"
        result = report.make_report([fog_only("tinycnn", .9, "scaled"), fog_only("base", .6, other)], out)
        rows = read_csv(out / "report.csv")
        assert rows["tinycnn"]["source"].endswith(", param set scaled)")
        assert rows["base"]["source"].endswith(f", param set {other})")
        assert (rows["tinycnn"]["group"] != rows["base"]["group"]) == apart
        assert any(w.startswith("robustness results differ in source") for w in result["warnings"]) == apart
    data = json.loads((designed / "tinycnn.json").read_text())
    for severity in range(1, 6):
        data["results"][0]["folders"].append(dict(data["results"][0]["folders"][1], corruption="fog",
                                                  severity=severity, error=.9, accuracy=.1))
    data["results"][0]["source"] = dict(data["results"][0].get("source") or {}, param_set="scaled")
    write(designed, "tinycnn", data)
    rows = read_csv(report.make_report([designed], tmp_path / "mixed") and tmp_path / "mixed" / "report.csv")
    assert rows["tinycnn"]["group"] == rows["base"]["group"] == rows["mobile"]["group"]


def test_a_corruption_missing_a_severity_is_left_out(designed, tmp_path):
    """contrast at severities 1-4 only (its .80 row removed): the mean corruption error is over the
    three complete corruptions, (2.0 x 3) / 15 = 0.40, not 0.45."""
    data = json.loads((designed / "tinycnn.json").read_text())
    folders = data["results"][0]["folders"]
    data["results"][0]["folders"] = [row for row in folders
                                     if not (row["corruption"] == "contrast" and row["severity"] == 5)]
    write(designed, "tinycnn", data)
    out = tmp_path / "out"
    result = report.make_report([designed], out)
    assert float(read_csv(out / "report.csv")["tinycnn"]["mean_corruption_error"]) == pytest.approx(0.40)
    assert "contrast" not in result["metrics"]["tinycnn"]["c"]["mean_error"]


def test_baseline_file_of_an_input_model_goes_by_that_models_name(designed, tmp_path):
    """Two checkpoints of one run folder ('runs/same/...'): the report names them by file; --baseline
    given as the base's JSON file is that input model (its row is the 100.00 % one, the note names
    it 'same/checkpoint.01.hdf5', not the bare folder 'same' that both models share)."""
    for name, epoch in (("tinycnn", 2), ("base", 1)):
        data = json.loads((designed / f"{name}.json").read_text())
        data["results"][0]["checkpoint"]["checkpoint"] = f"runs/same/checkpoint.0{epoch}.hdf5"
        write(designed, name, data)
    (designed / "stability.json").unlink()
    out = tmp_path / "out"
    report.make_report([designed / "tinycnn.json", designed / "base.json"], out, baseline=str(designed / "base.json"))
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"same/checkpoint.01.hdf5", "same/checkpoint.02.hdf5"}
    assert float(rows["same/checkpoint.01.hdf5"]["mce"]) == pytest.approx(1.0)
    assert {row["ce_baseline"] for row in rows.values()} == {"same/checkpoint.01.hdf5"}
    assert "CE / relative CE normalised to same/checkpoint.01.hdf5." in (out / "report.md").read_text()


def test_ranked_by_mce_even_where_the_mean_error_orders_otherwise(designed, tmp_path):
    """Every model has an mCE, so the ranking is by mCE (ranked_by 'mce'), not by the mean corruption
    error. mobile's errors: 0.40 on three corruptions (sum 2.0, CE 2.0/2.25) and 0.30 on contrast
    (sum 1.5, CE 1.5/2.25, against base's 2.25): mCE (3 x 0.8889 + 0.6667)/4 = 0.8333, below
    tinycnn's and base's 1.0, so mobile ranks first."""
    write(designed, "mobile", set_errors(load("mobile"), .20, {c: ([.40] * 5 if c != "contrast" else [.30] * 5)
                                                               for c in CORRUPTIONS}))
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert float(rows["mobile"]["mce"]) == pytest.approx((3 * 2.0 / 2.25 + 1.5 / 2.25) / 4, abs=1e-12)
    assert {row["ranked_by"] for row in rows.values()} == {"mce"}
    assert rows["mobile"]["rank"] == "1"


def test_mfp_is_over_the_files_mean_over_list_only(designed, tmp_path):
    """mFP averages the perturbations the stability file lists in mean_over (the 10), not an extra
    block it also holds: p_zoom_blur with FP 0.9 added to tinycnn leaves its mFP the mean of the 10."""
    stability = json.loads((designed / "stability.json").read_text())
    method = stability["methods"]["tinycnn"]
    ten = [entry["fp"] for name, entry in method["perturbations"].items()]
    method.setdefault("mean_over", list(method["perturbations"]))
    method["perturbations"]["p_zoom_blur"] = dict(next(iter(method["perturbations"].values())), fp=0.9)
    (designed / "stability.json").write_text(json.dumps(stability))
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    assert float(read_csv(out / "report.csv")["tinycnn"]["mfp"]) == pytest.approx(sum(ten) / len(ten), abs=1e-12)


@pytest.mark.parametrize("key, value", [("n", 40), ("split", "validation"), ("dataset", "ferplus")])
def test_each_baseline_key_alone_stops_the_normalisation(designed, tmp_path, key, value):
    """A baseline evaluated on other images: N alone, the split alone or the dataset alone differing
    is enough for mobile to get no mCE, with the difference named."""
    other = load("mobile")
    other["results"][0][key] = value
    write(designed, "mobile", other)
    result = report.make_report([designed], tmp_path / "out", baseline="base")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["mobile"]["mce"] in ("", "nan")
    assert any(w.startswith("mobile: no mCE against the baseline base") and f"{key} {value} vs" in w
               for w in result["warnings"])


# --------------------------------------------------------------------------------------------
# The same model file evaluated with different settings (preprocessing, input size, class order,
# restriction to the dataset's classes, adaptation): never one row of incomparable numbers

RAFDB_ORDER = "surprise,fear,disgust,happiness,sadness,anger,neutral"
DIGEST = "ab" * 32


def described(folder, name, checkpoint, clean, **info):
    """A robustness JSON of ``checkpoint`` (SHA-256 DIGEST) whose ``checkpoint`` description
    (Classifier.describe()) has ``info`` on top of the fixture's (preprocessing none, 32x32x3, the
    RAF-DB order, no runtime recorded)."""
    path = robustness_json(folder, name, checkpoint, clean)
    data = json.loads(path.read_text())
    data["results"][0]["checkpoint"].update(checkpoint_sha256=DIGEST, **info)
    path.write_text(json.dumps(data))
    return path


def test_other_settings_on_the_two_sides_are_two_rows_and_one_warning(tmp_path, caplog):
    """RAF-DB-C with --preprocessing none, RAF-DB-P with z_normalization, the same file: two rows named
    by their preprocessing, each with its own numbers only, and one warning naming both result
    files and both values."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = described(folder, "r", "runs/a/m.keras", .10)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS],
                            f" preprocessing=z_normalization input=32x32x3 class_order={RAFDB_ORDER} "
                            f"model_sha256={DIGEST}")
    with caplog.at_level("WARNING", logger="fer.report"):
        result = report.make_report([robust, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a [preprocessing none]", "a [preprocessing z_normalization]"}
    c_row, p_row = rows["a [preprocessing none]"], rows["a [preprocessing z_normalization]"]
    assert float(c_row["clean_error"]) == pytest.approx(.10) and c_row["mfp"] == ""
    assert float(p_row["mfp"]) == pytest.approx(2 / 29) and p_row["clean_error"] == ""
    (warning,) = [w for w in result["warnings"] if "different evaluation settings" in w]
    assert warning == (
        f"same model file, different evaluation settings, so not merged into one row: stability {stable} "
        f"(runs/a/m.keras) with preprocessing z_normalization; robustness {robust} (runs/a/m.keras) with "
        f"preprocessing none (rows 'a [preprocessing z_normalization]', 'a [preprocessing none]')")
    assert caplog.text.count("different evaluation settings") == 1  # logged once
    assert "> **WARNING:** same model file, different evaluation settings" in \
        (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("robust_info, stable_meta, suffixes", [
    # input size
    ({}, " input=64x64x3", ("input 32x32x3", "input 64x64x3")),
    # preprocessing: a run.json's mode with the default mean order and RGB input is the flag's mode;
    # the swapped mean order of the original's checkpoints is another computation for vggface2 (the
    # one mode that reads it), the same one for full_normalization
    ({"preprocessing": "full_normalization (mean order correct, RGB input)"},
     " preprocessing=full_normalization", None),
    ({"preprocessing": "full_normalization (mean order legacy-swapped, RGB input)"},
     " preprocessing=full_normalization", None),
    ({"preprocessing": "vggface2 (mean order legacy-swapped, RGB input)"},
     " preprocessing=vggface2",
     ("preprocessing vggface2+mean_order=legacy-swapped", "preprocessing vggface2")),
    # an older ONNX/TFLite robustness JSON: a run.json's mode labelled "MODE (RGB input)"
    ({"preprocessing": "z_normalization (RGB input)"}, " preprocessing=z_normalization", None),
    ({"preprocessing": "z_normalization (BGR input)"}, " preprocessing=z_normalization",
     ("preprocessing z_normalization+bgr", "preprocessing z_normalization")),
    # an older predictions file: the label written with '_' for its spaces
    ({"preprocessing": "z_normalization"}, " preprocessing=z_normalization_(mean_order_correct,_RGB_input)", None),
    ({"preprocessing": "z_normalization"}, " preprocessing=z_normalization_(RGB_input)", None),
    # the recorded setting is compared, not the label: run.json's colour bgr-compat reverses the
    # z_normalization constants, which the label does not say
    ({"preprocessing": "z_normalization (mean order correct, RGB input)",
      "preprocessing_setting": "z_normalization+colour=bgr-compat"}, " preprocessing=z_normalization",
     ("preprocessing z_normalization+colour=bgr-compat", "preprocessing z_normalization")),
    ({"preprocessing": "z_normalization (RGB input)", "preprocessing_setting": "z_normalization"},
     " preprocessing=z_normalization", None),
    # class order: a synonym is the same class; another order is another evaluation
    ({"output_classes": ["surprise", "scared", "disgust", "happy", "sad", "angry", "neutral"]},
     f" class_order={RAFDB_ORDER}", None),
    ({}, " class_order=anger,disgust,fear,happiness,neutral,sadness,surprise",
     (f"class order {RAFDB_ORDER}", "class order anger,disgust,fear,happiness,neutral,sadness,surprise")),
    # restriction to the dataset's classes: compared only where the model has outputs beyond them
    ({"output_classes": RAFDB_ORDER.split(",") + ["contempt"], "outputs_not_in_dataset": ["contempt"],
      "restrict_to_dataset_classes": False}, f" class_order={RAFDB_ORDER},contempt restrict=1",
     ("all outputs", "restricted to the dataset's classes")),
    ({"restrict_to_dataset_classes": True, "outputs_not_in_dataset": []}, " restrict=0", None),
    # test-time adaptation (the robustness runtime; the predictions file's adapted=)
    ({}, " adapted=bn", None),  # the fixture records no runtime: unknown
])
def test_each_recorded_setting_keeps_the_rows_apart(tmp_path, robust_info, stable_meta, suffixes):
    folder = tmp_path / "in"
    folder.mkdir()
    robust = described(folder, "r", "runs/a/m.keras", .10, **robust_info)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], f"{stable_meta} model_sha256={DIGEST}")
    report.make_report([robust, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    if suffixes is None:  # nothing stated on both sides differs: one row, as before
        assert set(rows) == {"a"}
        assert (float(rows["a"]["clean_error"]), float(rows["a"]["mfp"])) == pytest.approx((.10, 2 / 29))
    else:
        assert set(rows) == {f"a [{suffixes[0]}]", f"a [{suffixes[1]}]"}
        assert float(rows[f"a [{suffixes[0]}]"]["clean_error"]) == pytest.approx(.10)
        assert float(rows[f"a [{suffixes[1]}]"]["mfp"]) == pytest.approx(2 / 29)


def test_adaptation_recorded_on_both_sides(tmp_path):
    """eval_corrupted_rafdb.py --adapt bn --adapt-prior 8 (runtime) and a predictions file written
    without adaptation (its settings stated, no adapted=): two rows; with adapted=bn_prior8, one."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = described(folder, "r", "runs/a/m.keras", .10)
    data = json.loads(robust.read_text())
    data["results"][0]["runtime"] = {"distribute": "none", "adapt": "bn", "adapt_prior": 8.0, "adapted": True}
    robust.write_text(json.dumps(data))
    meta = f" preprocessing=none input=32x32x3 class_order={RAFDB_ORDER}"
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], f"{meta} model_sha256={DIGEST}")
    report.make_report([robust, stable], tmp_path / "out")
    assert set(read_csv(tmp_path / "out" / "report.csv")) == {"a [adaptation bn_prior8]", "a [adaptation none]"}
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], f"{meta} adapted=bn_prior8 model_sha256={DIGEST}")
    report.make_report([robust, stable], tmp_path / "out2")
    assert set(read_csv(tmp_path / "out2" / "report.csv")) == {"a"}


def test_adaptation_batch_compared_on_both_sides(tmp_path):
    """An adapted robustness result at --batch 32 (runtime.adapt_batch) and a predictions file adapted
    at 64: the deeper BatchNorm statistics differ, two rows named by the batch; at 32 on both, one.
    A predictions file of an older writer (no adapt_batch=) is unknown there: one row."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = described(folder, "r", "runs/a/m.keras", .10)
    data = json.loads(robust.read_text())
    data["results"][0]["runtime"] = {"distribute": "none", "adapt": "bn", "adapt_prior": 0.0, "adapted": True,
                                     "adapt_batch": 32}
    robust.write_text(json.dumps(data))
    meta = f" preprocessing=none input=32x32x3 class_order={RAFDB_ORDER} adapted=bn"
    for batch, rows in (("64", {"a [adaptation batch 32]", "a [adaptation batch 64]"}), ("32", {"a"}),
                        (None, {"a"})):
        stated = f" adapt_batch={batch}" if batch else ""
        stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], f"{meta}{stated} model_sha256={DIGEST}")
        out = tmp_path / f"out{batch}"
        report.make_report([robust, stable], out)
        assert set(read_csv(out / "report.csv")) == rows


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
def test_a_recorded_baseline_is_the_row_of_its_settings(tmp_path, order):
    """One model evaluated without and with --adapt bn is two rows; another model's file normalised
    against the one without names that row, in any input order (the last row of that file won)."""
    folder = tmp_path / "in"
    folder.mkdir()
    none = {"distribute": "none", "adapt": "none", "adapt_prior": 0.0, "adapted": False}
    bn = {"distribute": "none", "adapt": "bn", "adapt_prior": 0.0, "adapted": True}
    paths = []
    for name, runtime in (("plain_none", none), ("plain_bn", bn)):
        path = described(folder, name, "runs/plain/m.keras", .10)
        data = json.loads(path.read_text())
        data["results"][0]["runtime"] = runtime
        path.write_text(json.dumps(data))
        paths.append(path)
    other = robustness_json(folder, "other", "runs/other/m.keras", .20)
    data = json.loads(other.read_text())
    assert data["results"][0]["summary"].get("mce") is not None  # normalised when written
    data["results"][0]["baseline"].update(file="plain_none.json", checkpoint="runs/plain/m.keras", runtime=none)
    other.write_text(json.dumps(data))
    paths.append(other)
    report.make_report([paths[i] for i in order], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"plain [adaptation none]", "plain [adaptation bn]", "other"}
    assert rows["other"]["ce_baseline"] == "plain [adaptation none]"
    # with only the adapted row among the inputs, that row is not the baseline: the model's path names it
    report.make_report([paths[1], paths[2]], tmp_path / "out2")
    rows = read_csv(tmp_path / "out2" / "report.csv")
    assert set(rows) == {"plain", "other"} and rows["other"]["ce_baseline"] == "runs/plain/m.keras"


def test_a_copied_model_file_evaluated_twice(tmp_path, caplog):
    """Two robustness results of the same content at two paths: with other settings two rows (and
    the stability of one setting joins its row); with the same settings one row, the later used,
    with a warning naming both model paths and both result files."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = described(folder, "first", "runs/a/m.keras", .10)
    copy = described(folder, "copy", "copies/b/m.keras", .20, input_shape=[64, 64, 3])
    stable = stability_json(folder, "s", "copies/b/m.keras", [TWO_FLIPS], f" input=64x64x3 model_sha256={DIGEST}")
    with caplog.at_level("WARNING", logger="fer.report"):
        result = report.make_report([first, copy, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a [input 32x32x3]", "a [input 64x64x3]"}
    assert float(rows["a [input 32x32x3]"]["clean_error"]) == pytest.approx(.10)
    assert rows["a [input 32x32x3]"]["mfp"] == ""
    assert (float(rows["a [input 64x64x3]"]["clean_error"]), float(rows["a [input 64x64x3]"]["mfp"])) == \
        pytest.approx((.20, 2 / 29))
    assert rows["a [input 64x64x3]"]["checkpoint"] == "copies/b/m.keras"
    assert "appears again" not in caplog.text
    assert not any("settings" in warning for warning in result["warnings"])  # P joined the row of its settings
    # the same settings: one row, the later result, both paths and both files named
    data = json.loads(copy.read_text())
    data["results"][0]["checkpoint"]["input_shape"] = [32, 32, 3]
    copy.write_text(json.dumps(data))
    caplog.clear()
    with caplog.at_level("WARNING", logger="fer.report"):
        report.make_report([first, copy], tmp_path / "out2")
    rows = read_csv(tmp_path / "out2" / "report.csv")
    assert set(rows) == {"b"} and float(rows["b"]["clean_error"]) == pytest.approx(.20)  # named as the one used
    assert rows["b"]["checkpoint"] == "copies/b/m.keras"
    assert (f"{copy}: the robustness of copies/b/m.keras appears again, also in {first} as runs/a/m.keras "
            f"(the same file content, evaluated with the same recorded settings); the later one "
            f"(copies/b/m.keras in {copy}) is used") in caplog.text


def test_stability_recording_no_settings_joins_as_before_unless_it_cannot_tell(tmp_path, caplog):
    """An older predictions file (no settings in its metadata) joins the robustness row of its file
    as before; when that file was evaluated with two preprocessings it cannot tell which, and is
    shown on its own, with a warning."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = described(folder, "first", "runs/a/m.keras", .10)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], f" model_sha256={DIGEST}")
    assert json.loads(stable.read_text())["methods"]["a"]["settings"] == {}
    report.make_report([first, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a"} and float(rows["a"]["mfp"]) == pytest.approx(2 / 29)
    second = described(folder, "second", "runs/a/m.keras", .30, preprocessing="z_normalization")
    result = report.make_report([first, second, stable], tmp_path / "out2")
    rows = read_csv(tmp_path / "out2" / "report.csv")
    assert set(rows) == {"a [preprocessing none]", "a [preprocessing z_normalization]",
                         "a [preprocessing not recorded]"}
    assert float(rows["a [preprocessing not recorded]"]["mfp"]) == pytest.approx(2 / 29)
    assert float(rows["a [preprocessing z_normalization]"]["clean_error"]) == pytest.approx(.30)
    (warning,) = [w for w in result["warnings"] if "records no" in w]
    assert warning == (f"{stable}: the stability of runs/a/m.keras records no preprocessing, and the same "
                       f"model file was evaluated with several: robustness {first} (runs/a/m.keras) with "
                       f"preprocessing none; robustness {second} (runs/a/m.keras) with preprocessing "
                       f"z_normalization; not merged with any: shown as 'a [preprocessing not recorded]'")


def test_stability_of_fewer_settings_never_replaces_a_stated_one(tmp_path, caplog):
    """Two stability results of one model file, the first stating its preprocessing and input size,
    the second (an older writer's) its preprocessing only: the second could be of another input size,
    so it is a row of its own (FP 0 and 2/29 side by side), never a repeat replacing the first, in
    either order of the files."""
    folder = tmp_path / "in"
    folder.mkdir()
    stated = stability_json(folder, "s1", "runs/a/m.keras", [CONSTANT],
                            f" preprocessing=none input=64x64x3 class_order={RAFDB_ORDER} model_sha256={DIGEST}")
    fewer = stability_json(folder, "s2", "runs/a/m.keras", [TWO_FLIPS], f" preprocessing=none model_sha256={DIGEST}")
    for order, files in enumerate(([stated, fewer], [fewer, stated])):
        with caplog.at_level(logging.WARNING):
            report.make_report(files, tmp_path / f"out{order}")
        rows = read_csv(tmp_path / f"out{order}" / "report.csv")
        assert {name: float(row["mfp"]) for name, row in rows.items()} == {
            f"a [input 64x64x3, class order {RAFDB_ORDER}, adaptation none]": 0.0,
            "a [input not recorded, class order not recorded, adaptation not recorded]": pytest.approx(2 / 29)}
    assert "appears again" not in caplog.text


def test_a_baseline_file_is_the_input_row_of_its_own_settings(tmp_path):
    """--baseline r_z.json among inputs holding the same file with preprocessing none (errors
    .2 .. .6 per corruption) and z_normalization (.4 .. .8): the baseline is the z_normalization row,
    so the other row's CE is 2.0 / 3.0 on every corruption."""
    folder = tmp_path / "in"
    folder.mkdir()
    plain = described(folder, "r_none", "runs/a/m.keras", .10)
    other = described(folder, "r_z", "runs/a/m.keras", .30, preprocessing="z_normalization")
    result = report.make_report([plain, other], tmp_path / "out", baseline=str(other))
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["a [preprocessing none]"]["ce_baseline"] == "a [preprocessing z_normalization]"
    assert float(rows["a [preprocessing none]"]["mce"]) == pytest.approx(2.0 / 3.0)
    assert float(rows["a [preprocessing z_normalization]"]["mce"]) == pytest.approx(1.0)
    assert result["baseline"] == "a [preprocessing z_normalization]"


def test_a_baseline_file_recording_fewer_settings_is_its_own_row(tmp_path):
    """--baseline r_old.json (no preprocessing recorded, errors .4 .. .8) among inputs holding it and
    the same file with preprocessing none (.2 .. .6): the two are two rows, and the baseline is the
    row of r_old itself, not the one whose settings merely do not contradict it."""
    folder = tmp_path / "in"
    folder.mkdir()
    full = described(folder, "r_full", "runs/a/m.keras", .10)
    old = described(folder, "r_old", "runs/a/m.keras", .30)
    data = json.loads(old.read_text())
    for key in ("preprocessing", "preprocessing_setting"):
        data["results"][0]["checkpoint"].pop(key, None)
    old.write_text(json.dumps(data))
    result = report.make_report([full, old], tmp_path / "out", baseline=str(old))
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert result["baseline"] == "a [preprocessing not recorded]"
    assert float(rows["a [preprocessing not recorded]"]["mce"]) == pytest.approx(1.0)
    assert float(rows["a [preprocessing none]"]["mce"]) == pytest.approx(2.0 / 3.0)


def test_a_class_name_with_a_comma_joins_its_two_sides(tmp_path):
    """A folder dataset's classes.txt may name a class "Happy, very": the class order written into
    the predictions metadata is comma-separated, so the name's comma must not split it there into
    "Happy" (read back as happiness) and "very". The same model's RAF-DB-C and RAF-DB-P results,
    each written with that class order, are one row; the metadata token is happy__very."""
    import stability

    names = ["surprise", "fear", "disgust", "Happy, very", "sadness", "anger", "neutral"]
    settings = stability.evaluation_settings(preprocessing="none", input_shape=(32, 32, 3), class_order=names)
    assert settings["class_order"] == "surprise,fear,disgust,happy__very,sadness,anger,neutral"
    folder = tmp_path / "in"
    folder.mkdir()
    robust = described(folder, "r", "runs/a/m.keras", .10, output_classes=names)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS],
                            stability.settings_text(settings) + f" model_sha256={DIGEST}")
    result = report.make_report([robust, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert list(rows) == ["a"]
    assert float(rows["a"]["clean_error"]) == pytest.approx(.10) and float(rows["a"]["mfp"]) == pytest.approx(2 / 29)
    assert not [w for w in result["warnings"] if "different evaluation settings" in w]


def test_stability_settings_are_canonicalised_at_report_time(monkeypatch):
    """A predictions file written before a spelling was in the table states the name as it was
    written ('joy'); once the table knows it, the report reads it as the canonical name, so the file
    joins a newer robustness result (class order happiness) instead of splitting from it. An older
    label-form preprocessing is read as the setting it describes."""
    import datasets.classes as classes

    summary = {"settings": {"class_order": "surprise,fear,disgust,joy,sadness,anger,neutral",
                            "preprocessing": ["z_normalization_(RGB_input)", "vggface2_(BGR_input)"],
                            "adapted": "none", "input": None}}
    known = classes.canonical_name
    monkeypatch.setattr(classes, "canonical_name", lambda name: "happiness" if name == "joy" else known(name))
    assert report.stability_settings(summary) == {"class_order": RAFDB_ORDER, "adapted": "none",
                                                  "preprocessing": ["z_normalization", "vggface2+bgr"]}
    assert not report.settings_differences(report.stability_settings(summary),
                                           {"class_order": RAFDB_ORDER, "adapted": "none"})


def test_a_robustness_result_recording_fewer_settings_is_never_taken_for_a_repeat(tmp_path, caplog):
    """The same file: r_full records preprocessing none (clean error .10), r_old (written later,
    clean error .30) records no preprocessing. r_old may have been evaluated with another
    preprocessing, so its numbers never replace r_full's under a name claiming 'preprocessing none':
    two rows, the second named 'preprocessing not recorded', and one warning naming both. A
    stability method stating preprocessing none joins the row that states it."""
    folder = tmp_path / "in"
    folder.mkdir()
    full = described(folder, "r_full", "runs/a/m.keras", .10)
    old = described(folder, "r_old", "runs/a/m.keras", .30)
    data = json.loads(old.read_text())
    del data["results"][0]["checkpoint"]["preprocessing"]
    old.write_text(json.dumps(data))
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS],
                            f" preprocessing=none input=32x32x3 class_order={RAFDB_ORDER} model_sha256={DIGEST}")
    with caplog.at_level("WARNING", logger="fer.report"):
        result = report.make_report([full, old, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a [preprocessing none]", "a [preprocessing not recorded]"}
    assert (float(rows["a [preprocessing none]"]["clean_error"]), float(rows["a [preprocessing none]"]["mfp"])) \
        == pytest.approx((.10, 2 / 29))
    assert float(rows["a [preprocessing not recorded]"]["clean_error"]) == pytest.approx(.30)
    assert rows["a [preprocessing not recorded]"]["mfp"] == ""
    assert "appears again" not in caplog.text
    (warning,) = [w for w in result["warnings"] if "settings" in w]
    assert warning == (
        f"same model file, evaluation settings recorded by one robustness result and not the other, so not "
        f"taken for a repeat (its numbers may be of other settings): robustness {old} (runs/a/m.keras) "
        f"recording no preprocessing; robustness {full} (runs/a/m.keras), stability {stable} (runs/a/m.keras) "
        f"with preprocessing none (rows 'a [preprocessing not recorded]', 'a [preprocessing none]')")
    # in the other order: the same two rows, the warning on the result recording less
    result = report.make_report([old, full], tmp_path / "out2")
    assert {row["model"]: row["clean_error"] for row in result["rows"]} == \
        pytest.approx({"a [preprocessing not recorded]": .30, "a [preprocessing none]": .10})
    (warning,) = [w for w in result["warnings"] if "settings" in w]
    assert warning.startswith(f"same model file, evaluation settings recorded by one robustness result and not "
                              f"the other, so not taken for a repeat (its numbers may be of other settings): "
                              f"robustness {full} (runs/a/m.keras) with preprocessing none; robustness {old} "
                              f"(runs/a/m.keras) recording no preprocessing")


def test_means_over_part_of_the_benchmark_sets_are_noted(tmp_path):
    """tinycnn holds 4 of the 18 RAF-DB-C corruptions, the stability method 1 of the 10 RAF-DB-P
    perturbations (p_rotate): report.md, report.html and the printed table note both counts by
    model; a model with all 18 and all 10 would have none."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS])
    out = tmp_path / "out"
    result = report.make_report([robust, stable], out)
    corruption_note = ("Partial evaluation: a: the mean corruption error and mCE are over 4 of the 18 RAF-DB-C "
                       f"corruptions ({', '.join(CORRUPTIONS)}), not comparable with those of a model "
                       "evaluated on all of them.")
    perturbation_note = ("Partial evaluation: a: the mFP and mFR are over 1 of the 10 RAF-DB-P perturbations "
                         "(p_rotate), not comparable with those of a model evaluated on all of them.")
    markdown = (out / "report.md").read_text()
    assert f"- {corruption_note}" in markdown and f"- {perturbation_note}" in markdown
    page = (out / "report.html").read_text()
    assert f"<li>{corruption_note}</li>" in page and f"<li>{perturbation_note}</li>" in page
    assert corruption_note in report.write_markdown(result, {}, out / "report.md")  # what main prints
    rows = read_csv(out / "report.csv")
    assert (rows["a"]["corruptions"], rows["a"]["perturbations"]) == ("4", "1")


def test_complete_evaluations_get_no_coverage_note():
    """All 18 corruptions and all 10 perturbations: no note; one corruption or perturbation fewer: one
    note each, with the counts 17 of 18 and 9 of 10."""
    import corruptions
    import stability

    eighteen, ten = list(corruptions.CORRUPTION_NAMES), list(stability.canonical_perturbations())
    assert (len(eighteen), len(ten)) == (18, 10)

    def metrics(corruption_names, perturbations):
        return {"m": {"c": {"headline": corruption_names},
                      "s": {"perturbations": perturbations, "fp": {p: .1 for p in perturbations}}}}

    models = [report.Model("m")]
    assert report.coverage_notes(models, metrics(eighteen, ten)) == []
    notes = report.coverage_notes(models, metrics(eighteen[1:], ten[:-1]))
    assert len(notes) == 2
    assert "over 17 of the 18 RAF-DB-C corruptions" in notes[0] and "over 9 of the 10 RAF-DB-P" in notes[1]
    # three models on one subset, one on another: one line per subset, naming its models (was one per model)
    subsets = {"m1": eighteen[:2], "m2": eighteen[:2], "m3": eighteen[:3], "m4": eighteen[:2]}
    grouped = report.coverage_notes([report.Model(name) for name in subsets],
                                    {name: {"c": {"headline": used}, "s": {}} for name, used in subsets.items()})
    tail = "RAF-DB-C corruptions ({}), not comparable with those of a model evaluated on all of them"
    assert grouped == [f"m1, m2, m4: the mean corruption error and mCE are over 2 of the 18 "
                       + tail.format(", ".join(eighteen[:2])),
                       f"m3: the mean corruption error and mCE are over 3 of the 18 " + tail.format(", ".join(eighteen[:3]))]


def test_robustness_and_stability_of_other_label_protocols_are_two_rows(tmp_path, caplog):
    """One model file, robustness with soft labels, stability with hard labels: two rows, each with
    its own numbers (joining them showed a hard-label mFP on the soft-label row); a second stability
    result of the soft protocol joins the robustness row and replaces neither."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10, n=1)
    hard = stability_json(folder, "sh", "runs/a/m.keras", [TWO_FLIPS], labels="hard")
    report.make_report([robust, hard], tmp_path / "one")
    rows = read_csv(tmp_path / "one" / "report.csv")
    assert set(rows) == {"a [soft labels, N=1]", "a [hard labels, N=1]"}
    assert float(rows["a [soft labels, N=1]"]["clean_error"]) == pytest.approx(.10)
    assert rows["a [soft labels, N=1]"]["mfp"] == "" and rows["a [hard labels, N=1]"]["clean_error"] == ""
    assert float(rows["a [hard labels, N=1]"]["mfp"]) == pytest.approx(2 / 29)
    soft = stability_json(folder, "ss", "runs/a/m.keras", [CONSTANT])
    report.make_report([robust, soft, hard], tmp_path / "two")
    rows = read_csv(tmp_path / "two" / "report.csv")
    assert set(rows) == {"a [soft labels, N=1]", "a [hard labels, N=1]"}
    assert float(rows["a [soft labels, N=1]"]["mfp"]) == 0.0  # the soft sequence never flips
    assert float(rows["a [soft labels, N=1]"]["clean_error"]) == pytest.approx(.10)
    assert float(rows["a [hard labels, N=1]"]["mfp"]) == pytest.approx(2 / 29)
    assert "appears again" not in caplog.text


def test_robustness_and_stability_of_another_n_are_two_rows(tmp_path):
    """The same protocol but another N (a stability run on 2 sequences, robustness on 1 image):
    not one row."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "r", "runs/a/m.keras", .10, n=1),
              stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS, CONSTANT])]
    report.make_report(inputs, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a [soft labels, N=1]", "a [soft labels, N=2]"}
    assert float(rows["a [soft labels, N=2]"]["mfp"]) == pytest.approx(1 / 29)  # (2/29 + 0) / 2


def test_stability_of_another_sequence_source_is_a_row_of_its_own(tmp_path, caplog):
    """Stability of one model on RAF-DB-P's own landmark sequences and on --source aligned ones: the
    landmark result joins the robustness row whatever the order of the files; the other is a row
    named with its source, in another comparability group (it replaced the landmark result)."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10, n=1)
    aligned = stability_json(folder, "sa", "runs/a/m.keras", [TWO_FLIPS], source="aligned")
    landmarks = stability_json(folder, "sl", "runs/a/m.keras", [CONSTANT])
    for order, inputs in enumerate(([robust, aligned, landmarks], [landmarks, aligned, robust])):
        out = tmp_path / f"out{order}"
        report.make_report(inputs, out)
        rows = read_csv(out / "report.csv")
        assert set(rows) == {"a", "a [P source aligned]"}
        assert float(rows["a"]["mfp"]) == 0.0 and float(rows["a"]["clean_error"]) == pytest.approx(.10)
        assert rows["a"]["stability_source"] == "landmarks"
        assert float(rows["a [P source aligned]"]["mfp"]) == pytest.approx(2 / 29)
        assert rows["a [P source aligned]"]["stability_source"] == "aligned"
        assert rows["a"]["group"] != rows["a [P source aligned]"]["group"]
    assert "appears again" not in caplog.text


def test_stability_on_another_test_set_is_not_joined_or_ranked_with_it(tmp_path):
    """Robustness on one folder dataset, stability on another of the same N (both state their test
    set: test_set_sha256 / test_set=): two rows; the stability of another dataset is ranked in a
    group of its own, under a warning naming the datasets. The same test set joins."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10, n=1)
    data = json.loads(robust.read_text())
    data["results"][0]["test_set_sha256"] = "aa" * 32
    robust.write_text(json.dumps(data))
    other = stability_json(folder, "s2", "runs/a/m.keras", [TWO_FLIPS], meta=f" test_set={'bb' * 8}",
                           perturbed="faces-p/faces2.test")
    result = report.make_report([robust, other], tmp_path / "two")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"a", "a [P test set faces2.test bbbbbbbb]"}
    csv_rows = read_csv(tmp_path / "two" / "report.csv")
    assert csv_rows["a"]["mfp"] == "" and float(csv_rows["a [P test set faces2.test bbbbbbbb]"]["mfp"]) == \
        pytest.approx(2 / 29)
    same = stability_json(folder, "s1", "runs/a/m.keras", [CONSTANT], meta=f" test_set={'aa' * 8}")
    result = report.make_report([robust, same], tmp_path / "one")
    assert [row["model"] for row in result["rows"]] == ["a"]
    # two models, stability on two datasets: ranked apart, with a warning
    b_robust = robustness_json(folder, "rb", "runs/b/m.keras", .20, n=1)
    b_stable = stability_json(folder, "sb", "runs/b/m.keras", [CONSTANT])
    a_stable = stability_json(folder, "sa", "runs/a/m.keras", [TWO_FLIPS], perturbed="faces-p/faces2.test")
    result = report.make_report([robustness_json(folder, "ra", "runs/a/m.keras", .10, n=1), a_stable,
                                 b_robust, b_stable], tmp_path / "groups")
    groups = {row["model"]: row["group"] for row in result["rows"]}
    assert groups["a"] != groups["b"]
    assert any("stability results differ in dataset: faces2.test (a); rafdb.test (b)" in warning
               for warning in result["warnings"])


def test_a_model_on_two_datasets_keeps_the_c_and_p_of_one_dataset_in_one_row(tmp_path):
    """One model evaluated for robustness on a folder dataset and on FER2013, for stability on the
    folder dataset only: the folder's C and P results are one row, the FER2013 result a row named by
    its dataset. The FER2013 images were kept before, because their manifest's digest sorts first:
    the folder's C and P results came apart, and the rows were named by the export format."""
    folder = tmp_path / "in"
    folder.mkdir()
    results = []
    for name, clean, dataset, split, test_set, manifest in (("faces", .10, "folder", "test", "aa", "ff"),
                                                           ("fer", .20, "fer2013", "PublicTest", "cc", "00")):
        path = robustness_json(folder, name, "runs/a/m.keras", clean, n=1)
        data = json.loads(path.read_text())
        data["results"][0].update(dataset=dataset, split=split, test_set_sha256=test_set * 32,
                                  manifest={"sha256": manifest * 32})
        data["results"][0]["source"] = {"on_the_fly": False, "format": "png" if name == "fer" else "auto",
                                        "seed": 0, "motion_backend": "numpy"}
        path.write_text(json.dumps(data))
        results.append(path)
    stable = stability_json(folder, "s", "runs/a/m.keras", [TWO_FLIPS], meta=f" test_set={'aa' * 8}",
                            perturbed="faces-p/folder.test")
    for order in (results + [stable], [stable] + results[::-1]):
        report.make_report(order, tmp_path / "out")
        rows = read_csv(tmp_path / "out" / "report.csv")
        assert set(rows) == {"a", "a [C dataset fer2013.PublicTest, format png]"}
        assert float(rows["a"]["clean_error"]) == pytest.approx(.10)
        assert float(rows["a"]["mfp"]) == pytest.approx(2 / 29)
        fer = rows["a [C dataset fer2013.PublicTest, format png]"]
        assert float(fer["clean_error"]) == pytest.approx(.20) and fer["mfp"] == ""
    # a second export of FER2013 (JPEG this time) is a third row, not folded into the PNG one
    path = robustness_json(folder, "fer_jpg", "runs/a/m.keras", .30, n=1)
    data = json.loads(path.read_text())
    data["results"][0].update(dataset="fer2013", split="PublicTest", test_set_sha256="cc" * 32,
                              manifest={"sha256": "11" * 32})
    data["results"][0]["source"] = {"on_the_fly": False, "format": "jpg", "seed": 0, "motion_backend": "numpy"}
    path.write_text(json.dumps(data))
    report.make_report(results + [path, stable], tmp_path / "three")
    rows = read_csv(tmp_path / "three" / "report.csv")
    assert set(rows) == {"a", "a [C dataset fer2013.PublicTest, format png]",
                         "a [C dataset fer2013.PublicTest, format jpg]"}
    assert float(rows["a [C dataset fer2013.PublicTest, format jpg]"]["clean_error"]) == pytest.approx(.30)


def stability_from_text(folder, name, text):
    """The stability JSON of a predictions file with exactly ``text`` (e.g. an older file's metadata)."""
    import eval_perturbed_rafdb2

    predictions = folder / f"{name}.txt"
    predictions.write_text(text)
    out = folder / f"{name}.json"
    assert eval_perturbed_rafdb2.main([str(predictions), "--json", str(out), "--quiet"]) == 0
    return out


def test_a_stability_result_stating_no_protocol_joins_its_robustness_row(tmp_path):
    """An older predictions file without labels= (the reader records protocol 'unknown') is not another
    protocol: one row, as before."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10, n=1)
    old = stability_from_text(folder, "s", "runs/a/m.keras,perturbed/rafdb.test.p_rotate\n"
                                           + ",".join(map(str, TWO_FLIPS)) + "\n")
    assert json.loads(old.read_text())["methods"]["a"]["protocol"] == "unknown"
    result = report.make_report([robust, old], tmp_path / "out")
    assert [row["model"] for row in result["rows"]] == ["a"]
    row = read_csv(tmp_path / "out" / "report.csv")["a"]
    assert float(row["clean_error"]) == pytest.approx(.10) and float(row["mfp"]) == pytest.approx(2 / 29)


def test_stability_of_two_trees_of_one_model_is_two_rows(tmp_path, caplog):
    """Shards of two perturbed trees (seed 0 and 1) in one predictions file: the reader names them
    'a [seed 0]' and 'a [seed 1]'; the report keeps both (the later replaced the first as 'a repeat'),
    the seed-0 tree joining the robustness row."""
    folder = tmp_path / "in"
    folder.mkdir()
    robust = robustness_json(folder, "r", "runs/a/m.keras", .10, n=1)
    text = "".join(f"runs/a/m.keras,perturbed/rafdb.test.{name}\n# labels=soft N=1 source=landmarks frames=30 "
                   f"seed={seed} format=jpg\n{','.join(map(str, seq))}\n"
                   for name, seed, seq in (("p_rotate", 0, CONSTANT), ("p_scale", 1, TWO_FLIPS)))
    stable = stability_from_text(folder, "s", text)
    result = report.make_report([robust, stable], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert set(rows) == {"a", "a [P seed 1]"}
    assert float(rows["a"]["mfp"]) == 0.0 and float(rows["a"]["clean_error"]) == pytest.approx(.10)
    assert float(rows["a [P seed 1]"]["mfp"]) == pytest.approx(2 / 29)
    assert "appears again" not in caplog.text


def test_a_stability_result_naming_no_dataset_is_ranked_with_the_others(tmp_path):
    """An external header (folder named p_rotate alone: no dataset) beside a rafdb.test one: one group,
    no 'differ in dataset' warning (an unrecorded value differs from nothing)."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "ra", "runs/a/m.keras", .10, n=1),
              stability_json(folder, "sa", "runs/a/m.keras", [TWO_FLIPS]),
              robustness_json(folder, "rb", "runs/b/m.keras", .20, n=1),
              stability_from_text(folder, "sb", "runs/b/m.keras,frames/p_rotate\n# labels=soft N=1 "
                                  "source=landmarks frames=30\n" + ",".join(map(str, CONSTANT)) + "\n")]
    assert json.loads(inputs[3].read_text())["methods"]["b"]["perturbations"]["p_rotate"]["dataset"] is None
    result = report.make_report(inputs, tmp_path / "out")
    groups = {row["model"]: row["group"] for row in result["rows"]}
    assert groups["a"] == groups["b"]
    assert not any("differ in dataset" in warning for warning in result["warnings"])


def test_a_baseline_of_fewer_corruptions_and_perturbations_is_noted_per_model(designed, tmp_path):
    """The baseline base has 2 of the 4 corruptions (no contrast, no pixelate) and 7 of the 10
    perturbations: tinycnn's mCE is then the mean CE over gaussian_blur and gaussian_noise alone,
    2.0 / 2.25 (the worked example; contrast's 3.0 / 2.25 is left out), and its mFR the mean FR over
    the 7; each such mean gets a note naming what the baseline lacks (the report printed these means
    with no note, and the CSV's counts said 4 and 10)."""
    base = load("base")
    set_errors(base, .15, {c: [.25, .35, .45, .55, .65] for c in CORRUPTIONS})
    base["results"][0]["folders"] = [row for row in base["results"][0]["folders"]
                                     if row["corruption"] not in ("contrast", "pixelate")]
    write(designed, "base", base)
    stability = json.loads((DATA / "stability.json").read_text())
    dropped = ("p_spatter", "p_rotate", "p_shear")
    for name in dropped:
        del stability["methods"]["base"]["perturbations"][name]
    stability["methods"]["base"]["mean_over"] = [n for n in stability["methods"]["base"]["mean_over"]
                                                 if n not in dropped]
    (designed / "stability.json").write_text(json.dumps(stability))
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert float(rows["tinycnn"]["mce"]) == pytest.approx(2.0 / 2.25, abs=1e-12)
    fp = {m: stability["methods"][m]["perturbations"] for m in ("tinycnn", "base")}
    kept = [name for name in fp["base"]]
    assert len(kept) == 7
    assert float(rows["tinycnn"]["mfr"]) == pytest.approx(
        sum(fp["tinycnn"][n]["fp"] / fp["base"][n]["fp"] for n in kept) / 7, abs=1e-12)
    markdown = (out / "report.md").read_text()
    # one line for the two models whose CE the baseline covers alike
    assert ("- Partial evaluation: mobile, tinycnn: the mCE and relative mCE are over 2 of the 4 corruptions of "
            "its mean corruption error; contrast, pixelate have no CE against the baseline base.") in markdown
    assert ("- Partial evaluation: mobile, tinycnn: the mFR is over 7 of the 10 perturbations of its mFP; "
            "p_spatter, p_rotate, p_shear have no FR against the baseline base.") in markdown
    assert "base: the mCE" not in markdown and "base: the mFR" not in markdown  # its own means: all it has


def test_rows_without_ce_against_a_named_baseline_are_not_said_to_name_none(designed, tmp_path):
    """With --baseline, a row with no mCE (here: evaluated under another protocol) is not one whose
    file "names no baseline", as the note said."""
    other = load("mobile")
    other["results"][0]["protocol"], other["results"][0]["n"] = "hard", 40
    write(designed, "mobile", other)
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    markdown = (out / "report.md").read_text()
    assert ("CE / relative CE normalised to base (2 of the 3 rows; the others have none against it: see the "
            "warnings and notes).") in markdown
    assert "name no baseline" not in markdown


def test_a_result_with_no_complete_corruption_gets_a_report(designed, tmp_path):
    """tinycnn without its severity-5 rows (an --allow-missing evaluation of a tree missing them):
    no corruption was evaluated at every severity, so it has a clean error and no mean; the report
    is written, alone and beside a complete result (figures() called plt.subplots with 0 rows and
    the report died with a traceback)."""
    data = json.loads((designed / "tinycnn.json").read_text())
    data["results"][0]["folders"] = [row for row in data["results"][0]["folders"] if row["severity"] != 5]
    partial = write(tmp_path, "partial", data)
    alone = report.make_report([partial], tmp_path / "alone")
    (row,) = read_csv(tmp_path / "alone" / "report.csv").values()
    assert float(row["clean_error"]) == pytest.approx(0.10)
    assert row["mean_corruption_error"] == "" and row["corruptions"] == "0"
    assert len(alone["rows"]) == 1 and not list((tmp_path / "alone").glob("*severity*.png"))
    report.make_report([partial, designed / "base.json"], tmp_path / "both")
    assert len(list((tmp_path / "both").glob("*severity*.png"))) == 1


def only_severities(data, levels):
    """A robustness result as eval_corrupted_rafdb.py --severities writes it: rows of ``levels`` only."""
    result = data["results"][0]
    result["folders"] = [row for row in result["folders"] if row["corruption"] is None or row["severity"] in levels]
    result["summary"]["severities"] = list(levels)
    return data


def test_a_result_at_fewer_severities_is_ranked_apart(designed, tmp_path):
    """mobile evaluated at severities 1-3 only: its errors (.30, .40, .50) are lower than over 1-5, so
    its mean corruption error (0.40) and CE are not those of the others (over 1-5). It was ranked in
    one group with them, with no word; now it is a group of its own, with a warning and a note."""
    write(designed, "mobile", only_severities(load_designed(designed, "mobile"), (1, 2, 3)))
    out = tmp_path / "out"
    result = report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert rows["mobile"]["group"] != rows["tinycnn"]["group"] == rows["base"]["group"]
    assert rows["mobile"]["rank"] == "1" and [rows[m]["rank"] for m in ("tinycnn", "base")] == ["1", "2"]
    # CE over severities 1-3 against the baseline's 1-3: (.3 + .4 + .5) / (.25 + .35 + .45)
    assert float(rows["mobile"]["mce"]) == pytest.approx(1.2 / 1.05, abs=1e-12)
    assert float(rows["mobile"]["mean_corruption_error"]) == pytest.approx(0.40, abs=1e-12)
    assert rows["mobile"]["severities"] == "1,2,3" and rows["tinycnn"]["severities"] == "1,2,3,4,5"
    assert "robustness results cover different severities: 1, 2, 3, 4, 5 (base, tinycnn); 1, 2, 3 (mobile)" \
        in result["warnings"]
    markdown = (out / "report.md").read_text()
    assert ("- Partial evaluation: mobile: the mean corruption error and mCE are over severities 1, 2, 3 only "
            "(3 of the 5), not comparable with those of a model evaluated at all of them.") in markdown


def test_a_baseline_at_fewer_severities_is_named_as_such(designed, tmp_path):
    """base evaluated at severities 1-3 only: it has every corruption, but no error at 4 and 5, so the
    others get no mCE; the note said it gave a CE "for none of the 4 corruptions" as if it had none."""
    write(designed, "base", only_severities(load_designed(designed, "base"), (1, 2, 3)))
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert rows["tinycnn"]["mce"] == "" and float(rows["base"]["mce"]) == pytest.approx(1.0)
    markdown = (out / "report.md").read_text()
    assert ("- Partial evaluation: tinycnn: no mCE and relative mCE: the baseline base has the 4 corruptions "
            "of its mean corruption error at severities 1, 2, 3 only, tinycnn's errors are at 1, 2, 3, 4, 5 "
            "(a CE needs the baseline's errors at every severity of the model's).") in markdown
    assert "gives a CE for none" not in markdown


def test_one_model_on_two_corrupted_trees_is_two_rows(designed, tmp_path):
    """tinycnn evaluated again on images made with another seed (another RAF-DB-C tree): the later
    result replaced the earlier (file-name order chose which), with a line on stderr only. Now each
    is a row: the one on the images the other models were evaluated on keeps the name and the
    stability result, the other is named with its seed, whichever order the files are read in."""
    again = set_errors(load("tinycnn"), .30, {c: [.50, .50, .50, .50, .50] for c in CORRUPTIONS})
    again["results"][0]["source"]["seed"] = 1
    for name in ("0_tinycnn_seed1", "z_tinycnn_seed1"):  # read before, then after tinycnn.json
        for old in designed.glob("*_tinycnn_seed1.json"):
            old.unlink()
        write(designed, name, again)
        out = tmp_path / name
        result = report.make_report([designed], out, baseline="base")
        rows = read_csv(out / "report.csv")
        assert set(rows) == {"tinycnn", "tinycnn [C seed 1]", "base", "mobile"}
        assert float(rows["tinycnn"]["clean_error"]) == pytest.approx(.10)
        assert float(rows["tinycnn [C seed 1]"]["clean_error"]) == pytest.approx(.30)
        assert float(rows["tinycnn [C seed 1]"]["mean_corruption_error"]) == pytest.approx(.50)
        assert rows["tinycnn"]["mfp"] != "" and rows["tinycnn [C seed 1]"]["mfp"] == ""
        assert rows["tinycnn [C seed 1]"]["group"] != rows["tinycnn"]["group"]  # other images: ranked apart
        assert not any("appears again" in warning for warning in result["warnings"])


def test_a_repeated_result_is_named_in_the_report(designed, tmp_path):
    """The same model on the same images twice: one row, the later result; the report itself (not only
    stderr) says which result file was set aside."""
    again = set_errors(load("tinycnn"), .30, {c: [.50, .50, .50, .50, .50] for c in CORRUPTIONS})
    path = write(designed, "z_again", again)
    out = tmp_path / "out"
    report.make_report([designed], out, baseline="base")
    rows = read_csv(out / "report.csv")
    assert float(rows["tinycnn"]["clean_error"]) == pytest.approx(.30)
    warning = (f"{path}: the robustness of runs/tinycnn/checkpoint.01.hdf5 appears again (also in "
               f"{designed / 'tinycnn.json'}); the later one ({path}) is used")
    assert f"> **WARNING:** {warning}" in (out / "report.md").read_text()


def test_a_rerun_into_the_same_folder_leaves_no_figure_of_the_earlier_run(designed, tmp_path):
    """A report with stability results writes report_fp.png; a second one into the same --out without
    them left it there, beside a report.md that no longer shows it. Files not of the report's own
    naming (report_<figure>.png) are left alone."""
    out = tmp_path / "out"
    first = report.make_report([designed], out, baseline="base")
    assert set(first["figures"]) == {"heatmap", "severity", "scatter", "fp"}
    assert (out / "report_fp.png").is_file()
    (out / "report_notes.png").write_bytes(b"mine")
    second = report.make_report([designed / "tinycnn.json", designed / "base.json"], out, baseline="base")
    assert set(second["figures"]) == {"heatmap", "severity", "scatter"}
    assert sorted(path.name for path in out.glob("report_*.png")) == [
        "report_heatmap.png", "report_notes.png", "report_scatter.png", "report_severity.png"]
    assert "report_fp.png" not in (out / "report.md").read_text()



def _contents(folder):
    """Every entry of ``folder`` (hidden ones too): name -> its bytes, or "folder"."""
    return {path.name: "folder" if path.is_dir() else path.read_bytes() for path in folder.iterdir()}


def test_a_report_that_cannot_be_written_leaves_the_earlier_one_as_it_was(designed, tmp_path):
    """A report of 2 models in out/, then one of all the models (with stability: report_fp.png too)
    into the same folder, where report_fp.png is a folder: the figures heatmap, severity and scatter
    were replaced before the write of report_fp.png failed, beside the old report.md. Now nothing is
    replaced: the command line says which path is in the way, exits 2 without a traceback (its
    'error:' line, as every script's), and no temporary file is left."""
    out = tmp_path / "out"
    report.make_report([designed / "tinycnn.json", designed / "base.json"], out, baseline="base")
    assert sorted(_contents(out)) == ["report.csv", "report.html", "report.md", "report_heatmap.png",
                                      "report_scatter.png", "report_severity.png"]
    (out / "report_fp.png").mkdir()
    before = _contents(out)
    result = subprocess.run([sys.executable, str(Path(report.__file__)), str(designed), "--baseline", "base",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert _contents(out) == before
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --out {out}: {out / 'report_fp.png'} is a folder; expected the report's file report_fp.png "
        f"there (or nothing): remove or rename it; the report in {out} was left as it was")
    # report.md in the way: refused before any input is read
    (out / "report_fp.png").rmdir()
    other = tmp_path / "other"
    (other / "report.md").mkdir(parents=True)
    with pytest.raises(UserError, match=re.escape(f"{other / 'report.md'} is a folder; expected the report's file")):
        report.make_report([tmp_path / "no such input"], other)
    assert _contents(other) == {"report.md": "folder"}


@pytest.mark.parametrize("failure", ["rename", "render"])
def test_a_failure_partway_leaves_every_earlier_file_as_it_was(designed, tmp_path, monkeypatch, failure):
    """The second report (all models, four figures) fails partway: at the rename of its fifth file
    (report.csv, after the four figures, report_fp.png a new one), or while rendering report.html
    (written last, after the figures, report.csv and report.md were replaced). The earlier report's
    files keep their bytes, the new figure is gone, no temporary or copy is left."""
    out = tmp_path / "out"
    report.make_report([designed / "tinycnn.json", designed / "base.json"], out, baseline="base")
    (out / "notes.txt").write_text("mine")
    before = _contents(out)
    if failure == "rename":
        calls = []
        replace = os.replace

        def failing_replace(source, target):
            if Path(target).parent != out:  # another library's own file
                return replace(source, target)
            calls.append(target)
            if len(calls) == 5:
                raise OSError(errno.EIO, "Input/output error")
            return replace(source, target)

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(UserError, match=re.escape(f"{out / 'report.csv'}: Input/output error")):
            report.make_report([designed], out, baseline="base")
        assert [Path(target).name for target in calls[:5]] == [
            "report_heatmap.png", "report_severity.png", "report_scatter.png", "report_fp.png", "report.csv"]
    else:
        def failing_html(*args):
            raise RuntimeError("rendering failed")

        monkeypatch.setattr(report, "write_html", failing_html)
        with pytest.raises(RuntimeError, match="rendering failed"):
            report.make_report([designed], out, baseline="base")
    assert _contents(out) == before
    monkeypatch.undo()
    report.make_report([designed], out, baseline="base")  # and the folder takes the new report
    assert sorted(_contents(out)) == ["notes.txt", "report.csv", "report.html", "report.md", "report_fp.png",
                                      "report_heatmap.png", "report_scatter.png", "report_severity.png"]
    assert set(read_csv(out / "report.csv")) == {"tinycnn", "base", "mobile"}


def test_a_result_file_holding_no_model_is_named(designed, tmp_path, caplog):
    """A robustness JSON complete but for an empty "results" list (and a stability JSON with no
    methods) was dropped without a word; with no other input, "no model found in the inputs" named
    no file. Now a warning names each, and the error the files read."""
    empty = load("tinycnn")
    empty["results"] = []
    empty_path = write(designed, "empty", empty)
    no_methods = json.loads((designed / "stability.json").read_text())
    no_methods["methods"] = {}
    no_methods_path = write(tmp_path, "no_methods", no_methods)
    with caplog.at_level(logging.WARNING, logger="fer"):
        result = report.make_report([designed, no_methods_path], tmp_path / "out", baseline="base")
    assert {row["model"] for row in result["rows"]} == {"tinycnn", "base", "mobile"}
    assert (f"{empty_path}: holds no model (its \"results\" list is empty); nothing of it is in the report"
            in caplog.messages)
    assert (f"{no_methods_path}: holds no model (its \"methods\" are empty); nothing of it is in the report"
            in caplog.messages)
    with pytest.raises(UserError, match=re.escape(
            f"no model found in the inputs: the result file(s) read ({empty_path}, {no_methods_path}) hold none")):
        report.make_report([empty_path, no_methods_path], tmp_path / "out2")


def test_a_predictions_file_given_as_a_result_says_how_to_turn_it_into_one(designed, tmp_path, caplog):
    """eval_perturbed_rafdb.py's predictions text given to report.py: "not a readable JSON file
    (Expecting value: line 1 column 1)". Now the error names the file and the command that makes
    the JSON report.py reads; in a folder (a *.json named so), the warning says as much. A file
    that is no predictions file keeps the plain message."""
    folder = tmp_path / "p"
    folder.mkdir()
    stability_json(folder, "preds", "runs/m/checkpoint.01.hdf5", [TWO_FLIPS])
    predictions = folder / "preds.txt"
    assert predictions.read_text().startswith("runs/m/checkpoint.01.hdf5,perturbed/rafdb.test.p_rotate\n# labels=")
    hint = (f"{predictions}: a RAF-DB-P predictions file (eval_perturbed_rafdb.py's output), not a result JSON; "
            f"turn it into one first: eval_perturbed_rafdb2.py {predictions} --json results.json, and give "
            f"report.py that results.json")
    with pytest.raises(UserError) as error:
        report.make_report([predictions], tmp_path / "out")
    assert str(error.value) == hint
    # a one-field (external) header after a comment; metadata first; and a *.json of a run folder
    for name, text in (("ext.txt", "# made by hand\nperturbed/rafdb.test.p_zoom_blur\n3,3,3\n"),
                       ("meta.txt", "# labels=soft N=1 source=landmarks frames=3\nm.keras,x/fer2013.PublicTest.p_rotate\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=re.escape(f"{tmp_path / name}: a RAF-DB-P predictions file")):
            report.make_report([tmp_path / name], tmp_path / "out")
    shutil.copy(predictions, designed / "preds.json")
    with caplog.at_level(logging.WARNING, logger="fer"):
        report.make_report([designed], tmp_path / "out", baseline="base")
    assert any(message.startswith(f"{designed / 'preds.json'}: a RAF-DB-P predictions file") and
               "eval_perturbed_rafdb2.py" in message for message in caplog.messages)
    for name, text in (("table.csv", "path,class\nclean/a.jpg,3\n"), ("two.txt", "runs/m.keras,rafdb.test\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=re.escape(f"{tmp_path / name}: not a readable JSON file")):
            report.make_report([tmp_path / name], tmp_path / "out")

def test_results_all_of_one_kind_are_not_said_to_be_apart_by_kind(designed, tmp_path):
    """Robustness results only, mobile's under another protocol: two groups because of the protocol.
    The report also said "results of one kind only, ranked apart from models with other results"
    naming all three, though no model has other results."""
    other = load("mobile")
    other["results"][0]["protocol"], other["results"][0]["n"] = "hard", 40
    write(designed, "mobile", other)
    (designed / "stability.json").unlink()
    result = report.make_report([designed], tmp_path / "out", baseline="base")
    assert len({row["group"] for row in result["rows"]}) == 2
    assert any(warning.startswith("robustness results differ in protocol") for warning in result["warnings"])
    assert not any("one kind only" in warning for warning in result["warnings"])


def test_markdown_cells_escape_the_characters_of_a_model_name(designed, tmp_path):
    """A run folder named 'mo|bi<le': its '|' ended the Markdown cell (the row had one cell too many)
    and its '<' opened an HTML tag; in report.md and the printed table they are '\\|' and '&lt;'.
    The HTML report escapes them as HTML; report.csv keeps the name."""
    data = load_designed(designed, "mobile")
    data["results"][0]["checkpoint"]["checkpoint"] = "runs/mo|bi<le/checkpoint.01.hdf5"
    write(designed, "mobile", data)
    out = tmp_path / "out"
    result = report.make_report([designed], out, baseline="base")
    assert "mo|bi<le" in read_csv(out / "report.csv")
    for text in ((out / "report.md").read_text(), report.write_markdown(result, {}, out / "report.md")):
        table = [line for line in text.splitlines() if line.startswith("|")]
        (row,) = [line for line in table if "bi" in line and "mobile" not in line]
        assert "| mo\\|bi&lt;le |" in row
        # every row has the header's 14 cells: 15 '|' that are not escaped
        assert {len(re.findall(r"(?<!\\)\|", line)) for line in table} == {15}
    assert "mo|bi&lt;le" in (out / "report.html").read_text()


def test_no_mfr_against_a_baseline_of_another_difficulty(tmp_path):
    """m5's flip probabilities at --difficulty 5 (frames 5 apart) normalised by m30's at difficulty 1:
    the report showed that mFR, with only the group banner; eval_perturbed_rafdb2.py --baseline warns
    of it. Now it is withheld, with a warning naming both difficulties, as for other sequences."""
    import eval_perturbed_rafdb2

    folder = tmp_path / "in"
    folder.mkdir()
    thirty = stability_json(folder, "s30", "runs/m30/c.keras", [TWO_FLIPS])
    hard = folder / "s5.txt"
    hard.write_text((folder / "s30.txt").read_text().replace("runs/m30", "runs/m5"))
    assert eval_perturbed_rafdb2.main([str(hard), "--difficulty", "5", "--json", str(folder / "s5.json"),
                                       "--quiet"]) == 0
    out = tmp_path / "out"
    result = report.make_report([thirty, folder / "s5.json"], out, baseline="m30")
    rows = read_csv(out / "report.csv")
    # pairs 5 frames apart of 30: (0,5), (1,6), (5,10), (6,11) differ of 25
    assert float(rows["m5"]["mfp"]) == pytest.approx(4 / 25)
    assert rows["m5"]["mfr"] == "" and rows["m5"]["fr_baseline"] == ""
    assert float(rows["m30"]["mfr"]) == pytest.approx(1.0)
    assert ("m5: no mFR against the baseline m30: these flip probabilities were computed at difficulty 5, the "
            "baseline's at 1 (frames 5 and 1 apart, docs/BENCHMARK.md §5.5)") in result["warnings"]


def test_ferplus_results_of_other_label_normalisations_are_ranked_apart(tmp_path):
    """FER+ soft labels under --ferplus-norm fix and legacy give other NLL and Brier scores: two
    models evaluated under different ones are in different groups, with a warning naming the key;
    hard labels (equal under both) stay together, and a result recording none (written before the
    setting was recorded: fix labels) joins the fix results."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, norm, protocol in (("fix_a", "fix", "soft"), ("legacy_b", "legacy", "soft"),
                                 ("hard_c", "fix", "hard"), ("hard_d", "legacy", "hard"),
                                 ("older_e", None, "soft")):
        path = robustness_json(folder, name, f"runs/{name}/m.keras", .10)
        data = json.loads(path.read_text())
        data["results"][0].update(dataset="ferplus", protocol=protocol,
                                  **({"ferplus_norm": norm} if norm else {}))
        path.write_text(json.dumps(data))
        paths.append(path)
    result = report.make_report(paths, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["fix_a"]["group"] != rows["legacy_b"]["group"]
    assert rows["hard_c"]["group"] == rows["hard_d"]["group"]
    # a result written before the setting was recorded had the fix labels: ranked with fix_a
    assert rows["older_e"]["group"] == rows["fix_a"]["group"]
    assert any("ferplus_norm" in warning for warning in result["warnings"])


def test_no_ce_against_a_baseline_of_other_corrupted_images(tmp_path):
    """A baseline evaluated on an export of another seed saw other corrupted images: the report gives
    the model no CE against it (as eval_corrupted_rafdb.py refuses such a --baseline) and says why;
    the same seed, or a result recording none, keeps the CE."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, seed, clean in (("base", 0, .20), ("same", 0, .10), ("other", 3, .10), ("unknown", None, .10)):
        path = robustness_json(folder, name, f"runs/{name}/m.keras", clean)
        data = json.loads(path.read_text())
        data["results"][0]["source"] = {"on_the_fly": False, "format": "jpg", "colour": "rgb",
                                        **({"seed": seed} if seed is not None else {})}
        path.write_text(json.dumps(data))
        paths.append(path)
    report.make_report(paths, tmp_path / "out", baseline="base")
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert rows["same"]["mce"] and rows["unknown"]["mce"]
    assert rows["other"]["mce"] == ""
    assert "corrupted images' seed 3 vs 0" in (tmp_path / "out" / "report.md").read_text()


def test_another_seed_matters_only_for_corruptions_that_draw(tmp_path):
    """Results over deterministic corruptions only (blurs, contrast, pixelate): the seed does not
    change their images, so a baseline of another seed gives a CE."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, seed, clean in (("base", 0, .20), ("other", 3, .10)):
        path = robustness_json(folder, name, f"runs/{name}/m.keras", clean)
        data = json.loads(path.read_text())
        result = data["results"][0]
        result["folders"] = [row for row in result["folders"] if row.get("corruption") != "gaussian_noise"]
        result["source"] = {"on_the_fly": False, "format": "jpg", "colour": "rgb", "seed": seed}
        path.write_text(json.dumps(data))
        paths.append(path)
    report.make_report(paths, tmp_path / "out", baseline="base")
    assert read_csv(tmp_path / "out" / "report.csv")["other"]["mce"]


def test_a_baseline_named_by_its_model_file_is_found_without_the_extension(tmp_path):
    """--baseline lbp_svm finds the row lbp_svm.skops (a model file's row is named by the file; only the
    exact name worked); a stem shared by two rows is an error naming both."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [robustness_json(folder, "lbp", "out_training_fer/lbp_svm.skops", .20),
              robustness_json(folder, "run", "out_training_fer/run_a/checkpoint.03.hdf5", .10)]
    out = tmp_path / "out"
    report.make_report(inputs, out, baseline="lbp_svm")
    rows = read_csv(out / "report.csv")
    # CE = sum of the model's errors / the baseline's: (0.1 + 0.1 s) against (0.2 + 0.1 s), s = 1..5
    assert float(rows["run_a"]["mce"]) == pytest.approx(sum(.1 + .1 * s for s in range(1, 6))
                                                        / sum(.2 + .1 * s for s in range(1, 6)))
    assert rows["run_a"]["ce_baseline"] == "lbp_svm.skops" and float(rows["lbp_svm.skops"]["mce"]) == 1.0
    twin = tmp_path / "twin"
    twin.mkdir()
    both = [robustness_json(twin, "a", "out_training_fer/lbp_svm.skops", .20),
            robustness_json(twin, "b", "out_training_fer/lbp_svm.onnx", .30)]
    with pytest.raises(UserError, match=r"lbp_svm: names several models .*lbp_svm\.skops.*lbp_svm\.onnx|"
                                        r"lbp_svm: names several models .*lbp_svm\.onnx.*lbp_svm\.skops"):
        report.make_report(both, tmp_path / "out2", baseline="lbp_svm")
