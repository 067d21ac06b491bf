"""eval_perturbed_rafdb.py (writer) and eval_perturbed_rafdb2.py (reader): format, metrics, errors, pipe."""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eval_perturbed_rafdb as writer_script
import stability
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
WORKED = [3] * 5 + [0, 0] + [3] * 23  # BENCHMARK.md §5.8
CONSTANT = [3] * 30
NOISE_DIFFERS = [3] + [0] * 29  # noise rule 29/29, consecutive rule 1/29
ARABIC_THREE, FULL_WIDTH_ZERO = "\u0663", "\uff10"  # digits to int(), not to the predictions format


def line(values):
    return ",".join(str(v) for v in values)


def write(tmp_path, text, name="predictions.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run_reader(path, *extra, check=True):
    """The reader as a user runs it: stdout, stderr, return code."""
    result = subprocess.run([sys.executable, str(REPO / "eval_perturbed_rafdb2.py"), str(path), *extra],
                            capture_output=True, text=True, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def parse_tsv(text):
    rows = [row.split("\t") for row in text.rstrip("\n").split("\n")]
    assert rows[0][0] == "."
    methods = rows[0][1:]
    return {method: {row[0]: float(row[1 + i]) for row in rows[1:]} for i, method in enumerate(methods)}


# The original's exact bytes (BENCHMARK.md §5.4): one header per folder, 30-int lines, two trailing blank lines.
ORIGINAL = (
    "out_training_fer/_netsenet50_20220409_101500/checkpoint.87.hdf5,perturbed_raf_dataset/rafdb.test.p_gaussian_noise\n"
    f"{line(WORKED)}\n{line(NOISE_DIFFERS)}\n"
    "out_training_fer/_netsenet50_20220409_101500/checkpoint.87.hdf5,perturbed_raf_dataset/rafdb.test.p_rotate\n"
    f"{line(WORKED)}\n{line(CONSTANT)}\n"
    "\n\n"
)


def test_original_file_with_trailing_blank_lines(tmp_path):
    result = run_reader(write(tmp_path, ORIGINAL))
    table = parse_tsv(result.stdout)
    assert list(table) == ["_netsenet50_20220409_101500"]
    values = table["_netsenet50_20220409_101500"]
    # noise: (2/29 + 29/29) / 2; rotate: (2/29 + 0) / 2 = 0.034483 (BENCHMARK.md §5.8)
    assert values["p_gaussian_noise"] == pytest.approx((2 / 29 + 1) / 2)
    assert values["p_rotate"] == pytest.approx(0.034483, abs=1e-6)
    assert list(values) == ["p_gaussian_noise", "p_rotate"]
    assert result.stdout.split("\n")[0] == ".\t_netsenet50_20220409_101500"
    assert "mFP" in result.stderr  # the summary goes to stderr, stdout stays a TSV


def test_text_mode(tmp_path):
    result = run_reader(write(tmp_path, ORIGINAL), "t")
    lines = result.stdout.splitlines()
    assert lines[0] == "_netsenet50_20220409_101500"
    assert lines[1].split() == ["p_gaussian_noise", str((2 / 29 + 1) / 2)]
    assert lines[2].split()[0] == "p_rotate" and float(lines[2].split()[1]) == pytest.approx(1 / 29)
    assert lines[3] == "---------"


def test_noise_rule_against_consecutive_rule(tmp_path):
    text = (f"runs/m/ckpt.keras,P/rafdb.test.p_shot_noise\n{line(NOISE_DIFFERS)}\n"
            f"runs/m/ckpt.keras,P/rafdb.test.p_brightness\n{line(NOISE_DIFFERS)}\n")
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))))
    fp = {name: entry["fp"] for name, entry in results["methods"]["m"]["perturbations"].items()}
    assert fp == {"p_shot_noise": pytest.approx(29 / 29), "p_brightness": pytest.approx(1 / 29)}
    assert results["methods"]["m"]["mfp"] == pytest.approx((1 + 1 / 29) / 2)


def test_difficulty_two(tmp_path):
    text = f"runs/m/ckpt.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))), difficulty=2)
    assert results["methods"]["m"]["perturbations"]["p_rotate"]["fp"] == pytest.approx(4 / 28)


def test_external_header_comments_and_sequence_length_from_data(tmp_path):
    short = [1, 1, 2, 2, 2]  # 5 frames: 1 flip of 4
    text = f"# made by hand\nrafdb.test.p_scale\n\n{line(short)}\n# test_0002\n{line([0] * 5)}\n"
    blocks = stability.read_predictions(write(tmp_path, text))
    assert [(b.method, b.perturbation, len(b.sequences)) for b in blocks] == [("", "p_scale", 2)]
    results = stability.compute(stability.group_blocks(blocks))
    assert results["methods"][""]["perturbations"]["p_scale"]["fp"] == pytest.approx((1 / 4 + 0) / 2)
    with pytest.raises(UserError, match=r":4: 5 classes, expected --frames 30"):
        stability.read_predictions(tmp_path / "predictions.txt", frames=30)


def test_baseline_method_and_json(tmp_path):
    text = (f"runs/a/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line(CONSTANT)}\n"
            f"runs/base/c.keras,P/rafdb.test.p_rotate\n{line([0, 1, 0] + [0] * 27)}\n{line([5] * 27 + [6, 5, 5])}\n")
    # baseline FP = (2/29 + 2/29) / 2 = 0.068966; model FP = 0.034483; FR = 0.5
    path = write(tmp_path, text)
    result = run_reader(path, "--baseline", "base", "--json", str(tmp_path / "r.json"),
                        "--csv", str(tmp_path / "r.csv"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["methods"]["a"]["perturbations"]["p_rotate"]["fr"] == pytest.approx(0.5)
    assert data["methods"]["a"]["mfr"] == pytest.approx(0.5)
    assert data["methods"]["base"]["mfr"] == pytest.approx(1.0)
    assert "normalised to the baseline base" in result.stderr
    csv_rows = (tmp_path / "r.csv").read_text().splitlines()
    assert csv_rows[0].startswith("method,perturbation,rule,n_sequences,n_frames,fp,fr")
    assert csv_rows[1].startswith("a,p_rotate,consecutive,2,30,")
    # the JSON as a baseline for another file
    other = write(tmp_path, f"runs/c/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line(WORKED)}\n", "other.txt")
    result = run_reader(other, "--baseline", str(tmp_path / "r.json"), "--baseline-method", "a",
                        "--json", str(tmp_path / "c.json"))
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["methods"]["c"]["perturbations"]["p_rotate"]["fr"] == pytest.approx((2 / 29) / (1 / 29))


@pytest.mark.parametrize("folder, meta, shown", [
    ("P/fer2013.PublicTest.p_rotate", "", "dataset fer2013.PublicTest vs rafdb.test"),
    ("P/rafdb.test.p_rotate", "# labels=soft N=2 source=aligned frames=30\n", "source aligned vs landmarks"),
])
def test_a_baseline_of_other_sequences_is_refused(tmp_path, folder, meta, shown):
    """FR = FP / FP of the baseline over the same sequences (§5.6, as §5.2): a baseline of another
    dataset, source, N or frame count gave an FR (mFR 0.0000 for a FER2013 model against a RAF-DB
    baseline), silently. Refused, naming the difference; --baseline-mismatch-ok normalises anyway
    with a warning. Another label protocol over the same sequences is no difference (FP reads no label)."""
    base = (f"runs/base/c.keras,P/rafdb.test.p_rotate\n# labels=soft N=2 source=landmarks frames=30\n"
            f"{line(WORKED)}\n{line(WORKED)}\n")
    model = f"runs/m/c.keras,{folder}\n{meta}{line(WORKED)}\n{line(CONSTANT)}\n"
    path = write(tmp_path, base + model)
    result = run_reader(path, "--baseline", "base", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--baseline base (this file): not the same test sequences as m: {shown} (this result vs the baseline)" \
        in result.stderr and "--baseline-mismatch-ok" in result.stderr
    result = run_reader(path, "--baseline", "base", "--baseline-mismatch-ok", "--json", str(tmp_path / "r.json"))
    assert "normalising anyway" in result.stderr
    fr = json.loads((tmp_path / "r.json").read_text())["methods"]["m"]["perturbations"]["p_rotate"]["fr"]
    assert fr == pytest.approx((1 / 29) / (2 / 29))
    # the same sequences under another label protocol: normalised (FR 1/2)
    path = write(tmp_path, base + f"runs/m/c.keras,P/rafdb.test.p_rotate\n# labels=hard N=2 source=landmarks "
                 f"frames=30\n{line(WORKED)}\n{line(CONSTANT)}\n", "hard.txt")
    result = run_reader(path, "--baseline", "base", "--json", str(tmp_path / "h.json"))
    assert json.loads((tmp_path / "h.json").read_text())["methods"]["m"]["mfr"] == pytest.approx(0.5)
    # N and frames: another count of sequences (same file), or of frames per sequence (a JSON baseline)
    path = write(tmp_path, base + f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n", "other.txt")
    result = run_reader(path, "--baseline", "base", check=False)
    assert result.returncode == 2 and "m: N 1 vs 2 (p_rotate)" in result.stderr, result.stderr
    run_reader(write(tmp_path, base, "base.txt"), "--json", str(tmp_path / "base.json"))
    path = write(tmp_path, f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED[:20])}\n{line(WORKED[:20])}\n",
                 "short.txt")
    result = run_reader(path, "--frames", "20", "--baseline", str(tmp_path / "base.json"), check=False)
    assert result.returncode == 2 and "m: frames 20 vs 30 (p_rotate)" in result.stderr, result.stderr


def test_flip_rate_against_zero_baseline_is_nan(tmp_path, recwarn):
    text = (f"runs/a/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"runs/base/c.keras,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n")
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))))
    label, baseline = stability.load_baseline("base", results)
    with pytest.warns(RuntimeWarning, match="flip rate"):
        stability.normalise(results, label, baseline)
    assert np.isnan(results["methods"]["a"]["perturbations"]["p_rotate"]["fr"])


# Top-k rankings (BENCHMARK.md §5.8): frame a ranks 0..6; "zero last" ranks 1,2,3,4,5,6,0.
ORDER = "0:1:2:3:4:5:6"
ZERO_LAST = "1:2:3:4:5:6:0"


def test_topk_lines(tmp_path):
    classes = [0, 0] + [1] + [1] * 27  # flip at frame 2 only
    rankings = [ORDER, ORDER] + [ZERO_LAST] * 28
    text = (f"runs/m/c.keras,P/rafdb.test.p_rotate\n# test_0001\n{line(classes)}\n#topk {','.join(rankings)}\n"
            f"runs/m/c.keras,P/rafdb.test.p_gaussian_noise\n{line(classes)}\n#topk {','.join(rankings)}\n\n\n")
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))), ks=[1, 2, 5])
    rotate = results["methods"]["m"]["perturbations"]["p_rotate"]
    # consecutive: one pair (1,2) with d5 = 9, d2 = 3, d1 = 1, of 29 pairs
    assert rotate["tkd"] == {"1": pytest.approx(1 / 29), "2": pytest.approx(3 / 29), "5": pytest.approx(9 / 29)}
    assert rotate["tkd"]["1"] == pytest.approx(rotate["fp"])  # d1 = flip indicator
    noise = results["methods"]["m"]["perturbations"]["p_gaussian_noise"]
    # against frame 0: 28 of 29 pairs differ
    assert noise["tkd"]["5"] == pytest.approx(28 * 9 / 29)
    assert results["methods"]["m"]["mtkd"]["2"] == pytest.approx((3 / 29 + 28 * 3 / 29) / 2)


def test_an_explicit_topk_the_rankings_cannot_give_is_warned_about(tmp_path, caplog):
    """Rankings of 3 classes (ORDER cut to its first three): an explicit --topk 2,5 computes T2D and
    warns that T5D cannot be; a file without #topk lines warns for every k asked; the default --topk
    warns about nothing."""
    import eval_perturbed_rafdb2

    ranked = ",".join(":".join(order.split(":")[:3]) for order in [ORDER] * 30)
    with_three = write(tmp_path, f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([0] * 30)}\n#topk {ranked}\n")
    json_path = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        assert eval_perturbed_rafdb2.main([str(with_three), "--topk", "2,5", "--json", str(json_path), "--quiet"]) == 0
    assert json.loads(json_path.read_text())["methods"]["m"]["perturbations"]["p_rotate"]["tkd"] == {"2": 0.0}
    assert ("--topk 5: T5D of m not computed for every perturbation: its blocks hold #topk lines ranking 3 "
            "classes; rerun eval_perturbed_rafdb.py with --topk 5") in caplog.messages
    assert "--topk 2" not in caplog.text
    caplog.clear()
    bare = tmp_path / "bare.txt"
    bare.write_text(f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([0] * 30)}\n")
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        assert eval_perturbed_rafdb2.main([str(bare), "--quiet"]) == 0
        assert "--topk" not in caplog.text
        assert eval_perturbed_rafdb2.main([str(bare), "--topk", "3", "--quiet"]) == 0
    assert "--topk 3: T3D of m not computed for every perturbation: its blocks hold no #topk lines" in caplog.text


def test_an_undefined_flip_rate_is_one_plain_warning_line(tmp_path):
    """FR against a baseline method whose FP is 0 is undefined: one 'WARNING ...' line like the other
    log lines (it was Python's 'stability.py:887: RuntimeWarning: ...' followed by a source line)."""
    text = (f"runs/base/c.keras,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n"
            f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n")
    result = run_reader(write(tmp_path, text), "--baseline", "base", "--quiet")
    lines = result.stderr.splitlines()
    assert "WARNING flip rate of m on p_rotate: denominator 0 is not positive; value undefined (NaN)" in lines, \
        result.stderr
    assert "RuntimeWarning" not in result.stderr and ".py:" not in result.stderr


def test_each_undefined_flip_rate_is_named(tmp_path):
    """Two methods against a baseline whose FP is 0 on p_rotate: one warning per method naming it and
    the perturbation (there was one warning, naming neither, however many rates were undefined)."""
    text = (f"runs/base/c.keras,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n"
            f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"runs/n/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n")
    result = run_reader(write(tmp_path, text), "--baseline", "base", "--quiet")
    for method in ("m", "n"):
        assert f"WARNING flip rate of {method} on p_rotate: denominator 0" in result.stderr, result.stderr


def test_mfr_over_fewer_perturbations_than_the_mfp_is_said(tmp_path):
    """The baseline has p_rotate only; method a has p_rotate and p_scale: a's mFR is its one FR
    (0.5: FP 1/29 against the baseline's 2/29), and a warning and the table's last lines say that
    it is over 1 of its 2 perturbations (the mFR over fewer was printed with no word)."""
    text = (f"runs/a/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line(CONSTANT)}\n"
            f"runs/a/c.keras,P/rafdb.test.p_scale\n{line(WORKED)}\n{line(WORKED)}\n"
            f"runs/base/c.keras,P/rafdb.test.p_rotate\n{line([0, 1, 0] + [0] * 27)}\n{line([5] * 27 + [6, 5, 5])}\n")
    result = run_reader(write(tmp_path, text), "--baseline", "base", "--json", str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())["methods"]["a"]
    assert data["mfr"] == pytest.approx(0.5) and data["mfr_over"] == ["p_rotate"]
    assert re.search(r"WARNING a: mFR and mT-k-D are over the 1 perturbation\(s\) the baseline base( \(this file\))? "
                     r"has, not the 2 of its mFP \(the baseline has no p_scale\)", result.stderr), result.stderr
    assert "mFR and mTkD only over the perturbations the baseline has: a over 1 of its 2" in result.stderr
    assert "mFR and mTkD are ratios to the baseline's" in result.stderr


def test_other_libraries_warnings_keep_their_form(monkeypatch, caplog):
    """Only the project's own modules' warnings become plain log lines; a library's (numpy's, in the
    virtual environment inside the project folder) goes to Python's own display, naming its file."""
    import cli_common

    shown = []
    monkeypatch.setattr(cli_common, "_default_showwarning", lambda *args: shown.append(args[2:4]))
    library = os.path.join(os.path.dirname(cli_common.__file__), ".venv", "lib", "python3.11", "site-packages",
                           "numpy", "core.py")
    own = os.path.join(os.path.dirname(cli_common.__file__), "metrics.py")
    with caplog.at_level(logging.WARNING, logger="fer"):
        cli_common._show_warning(UserWarning("from a library"), UserWarning, library, 7)
        cli_common._show_warning(RuntimeWarning("ours"), RuntimeWarning, own, 9)
    assert shown == [(library, 7)]
    assert caplog.messages == ["ours"]


def test_an_annotated_name_with_a_line_break_stays_one_comment(tmp_path):
    """--annotate on a folder image named 'new<LF>line.png' (legal on Linux): the comment is
    '# happy/new\\nline', so the reader reads the block (the second half of the name was a line it
    refused); a backslash is doubled, so the escaped form is unambiguous."""
    block = stability.format_block("runs/m/c.keras,P/faces.test.p_rotate", ["happy/new\nline", "sad/a\\b"],
                                   np.zeros((2, 30), int), None, True)
    assert block.splitlines()[1:4:2] == ["# happy/new\\nline", "# sad/a\\\\b"]
    (blocks,) = stability.read_predictions(write(tmp_path, block))
    assert blocks.sequences == [[0] * 30, [0] * 30]


def test_the_reader_reads_a_pipe(tmp_path):
    """Predictions piped in, as '-' or as /dev/stdin on a pipe: the same table as from the file (a pipe
    was read twice, its first lines lost: 'a sequence line before any header'; '-' was 'not found')."""
    text = (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"runs/m/c.keras,P/rafdb.test.p_gaussian_noise\n{line(NOISE_DIFFERS)}\n")
    expected = run_reader(write(tmp_path, text), "--quiet").stdout
    for name in ("-", "/dev/stdin"):
        result = subprocess.run([sys.executable, str(REPO / "eval_perturbed_rafdb2.py"), name, "--quiet"],
                                input=text, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected


SWAP_TOP_TWO = "1:0:2:3:4:5:6"


def _one_flip_block(perturbation, later_ranking):
    """One 30-frame sequence: frames 0-1 rank ORDER (class 0), frames 2-29 ``later_ranking``."""
    classes = [0, 0] + [int(later_ranking[0])] * 28
    rankings = [ORDER, ORDER] + [later_ranking] * 28
    return f"runs/m/c.keras,P/rafdb.test.{perturbation}\n{line(classes)}\n#topk {','.join(rankings)}\n"


def test_default_topk_is_2_3_5(tmp_path):
    # BENCHMARK.md §5.7/§5.8: ORDER -> ZERO_LAST gives d_2 = 3, d_3 = 5, d_5 = 9 at the one changing
    # pair (1, 2) of 29 consecutive pairs; without ks the reader reports k = 2, 3 and 5
    text = _one_flip_block("p_rotate", ZERO_LAST)
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))))
    assert results["topk"] == [2, 3, 5]
    rotate = results["methods"]["m"]["perturbations"]["p_rotate"]
    assert rotate["tkd"] == {"2": pytest.approx(3 / 29), "3": pytest.approx(5 / 29), "5": pytest.approx(9 / 29)}


def test_mean_topk_distance_is_over_the_canonical_perturbations_only(tmp_path):
    # p_rotate (canonical): ORDER -> ZERO_LAST, d_2/d_3/d_5 = 3/5/9 at one pair of 29;
    # p_extra (not one of the 10): ORDER -> SWAP_TOP_TWO, d_2 = d_3 = d_5 = 2 (BENCHMARK.md §5.8).
    # The mean T-k-D is p_rotate's alone (over both it would be 2.5/29, 3.5/29, 5.5/29).
    text = _one_flip_block("p_rotate", ZERO_LAST) + _one_flip_block("p_extra", SWAP_TOP_TWO)
    results = stability.compute(stability.group_blocks(stability.read_predictions(write(tmp_path, text))))
    method = results["methods"]["m"]
    assert method["perturbations"]["p_extra"]["tkd"] == {"2": pytest.approx(2 / 29), "3": pytest.approx(2 / 29),
                                                         "5": pytest.approx(2 / 29)}
    assert method["mean_over"] == ["p_rotate"] and method["extras"] == ["p_extra"]
    assert method["mtkd"] == {"2": pytest.approx(3 / 29), "3": pytest.approx(5 / 29), "5": pytest.approx(9 / 29)}


@pytest.mark.parametrize("text, match", [
    ("", r"predictions.txt: no header line"),
    ("\n\n# only comments\n", r"no header line"),
    ("runs/m/c.keras,P/rafdb.test.p_rotate\n\n\n", r"predictions.txt:1: header with no sequences"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n3,3,x" + ",3" * 27 + "\n",
     r"predictions.txt:3: field 3 is 'x'"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line([3] * 29 + [7])}\n",
     r"predictions.txt:3: field 30 is 7, outside the class indices 0..6"),
    # digits of other scripts, full-width digits and underscores are no class index (int() took them)
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line([3] * 29 + [ARABIC_THREE])}\n",
     r"predictions.txt:3: field 30 is '\u0663', expected a class index 0..6"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line([FULL_WIDTH_ZERO] + [3] * 29)}\n",
     r"predictions.txt:3: field 1 is '\uff10', expected a class index 0..6"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line([3, '0_1'] + [3] * 28)}\n",
     r"predictions.txt:3: field 2 is '0_1', expected a class index 0..6"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line([3] * 29)}\n",
     r"predictions.txt:3: 29 classes, expected 30 like the block's first sequence \(line 2\)"),
    # the writer's metadata states the length: the first short sequence is the one named
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n# labels=soft N=2 frames=30\n{line([3] * 29)}\n{line(WORKED)}\n",
     r"predictions.txt:3: 29 classes, expected 30 \(frames=30 in the metadata of line 2\)"),
    (f"{line(WORKED)}\n", r"predictions.txt:1: a sequence line before any header"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n#topk {ORDER}\n", r"predictions.txt:2: a #topk line must"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([1] * 30)}\n#topk {','.join([ORDER] * 30)}\n",
     r"predictions.txt:3: frame 0 ranks class 0 first but its sequence line predicts 1"),
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([0] * 30)}\n#topk {','.join([ORDER] * 30)}\n{line([0] * 30)}\n",
     r"predictions.txt:4: sequence without a #topk line"),
    # a ranking must name distinct classes: class 1 twice (and 2 missing) is refused
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([0] * 3)}\n#topk 0:1:1:3:4:5:6,{ORDER},{ORDER}\n",
     r"predictions.txt:3: frame 0 ranks '0:1:1:3:4:5:6': a class twice"),
    # frame 0 ranks 2 classes, frame 1 three: frame 1 is named as differing from frame 0
    (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line([0] * 3)}\n#topk 0:1,0:1:2,0:1:2\n",
     r"predictions.txt:3: frame 1 ranks 3 classes \('0:1:2'\), frame 0 2: every frame ranks the same number"),
])
def test_bad_input_names_the_line(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        stability.read_predictions(write(tmp_path, text))


def test_bad_input_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n3,3,9\n")
    result = run_reader(path, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "predictions.txt:3:" in result.stderr and "Traceback" not in result.stderr


def test_a_results_json_is_refused_in_one_line(tmp_path):
    """A robustness JSON given instead of a predictions file: one error naming it, no warnings."""
    robustness_json = REPO / "tests" / "data" / "report" / "tinycnn.json"
    result = run_reader(robustness_json, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: {robustness_json}: a robustness JSON (eval_corrupted_rafdb.py "
                             "--json), not predictions; expected a predictions file written by "
                             "eval_perturbed_rafdb.py: a header '<checkpoint>,<perturbation folder>' "
                             "followed by lines of comma-separated class indices\n")


def test_a_file_of_headers_only_gives_its_one_error(tmp_path):
    """Lines read as headers without sequences: the error alone, not first a warning per line."""
    path = write(tmp_path, "".join(f"name {i}, value {i}\n" for i in range(50)))
    result = run_reader(path, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {path}:1: 'name 0, value 0' is neither a header "
                                          "'<checkpoint>,<perturbation folder>' (the folder ends in p_<name>, "
                                          "e.g. rafdb.test.p_rotate) nor a sequence of one class per frame "
                                          "(a damaged or cut line?)"]


@pytest.mark.parametrize("edit", ["cut", "garbage"])
def test_a_damaged_line_is_not_taken_for_a_header(tmp_path, edit):
    """A sequence line cut to '2,3', or a header replaced by text, used to open a new block (method
    '2', perturbation '3'), dropping a perturbation from the mFP with exit 0; now the line is named."""
    lines = [f"models/a.onnx,P/rafdb.test.p_rotate", line(WORKED), line(CONSTANT)]
    lines[1 if edit == "cut" else 0] = "2,3" if edit == "cut" else "garbage header"
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = run_reader(path, check=False)
    assert result.returncode == 2
    number = 2 if edit == "cut" else 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}:{number}: ")
    assert "is neither a header" in result.stderr and "Traceback" not in result.stderr


def test_json_records_each_methods_checkpoint(tmp_path):
    text = (f"models/a.onnx,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"models/b.onnx,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n"
            f"P/rafdb.test.p_rotate\n{line(CONSTANT)}\n")
    out = tmp_path / "fp.json"
    run_reader(write(tmp_path, text), "--json", out)
    methods = json.loads(out.read_text())["methods"]
    assert {name: m["checkpoint"] for name, m in methods.items()} == \
        {"models/a.onnx": "models/a.onnx", "models/b.onnx": "models/b.onnx", "": None}


def test_empty_block_and_duplicate_warn(tmp_path, caplog):
    text = (f"runs/m/c.keras,P/rafdb.test.p_rotate\n"  # empty block: warning
            f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n")  # duplicate: the later wins
    with caplog.at_level(logging.WARNING):
        table = stability.group_blocks(stability.read_predictions(write(tmp_path, text)), "predictions.txt")
    assert "predictions.txt:1: header m / p_rotate has no sequences" in caplog.text
    assert "predictions.txt:4: m / p_rotate already read at line 2; the later block wins" in caplog.text
    assert table["m"]["p_rotate"].sequences == [CONSTANT]


# --------------------------------------------------------------------------------------------
# The writer and the full pipe on a tiny perturbed tree with tiny Keras models

FRAMES = 30
RAFDB_ORDER = "surprise,fear,disgust,happiness,sadness,anger,neutral"  # docs/BENCHMARK.md §1.2
FOLDERS = ("rafdb.test.p_rotate", "rafdb.test.p_gaussian_noise", "rafdb.test.p_zzz_extra")


@pytest.fixture(scope="module")
def perturbed_tree(tmp_path_factory):
    """A sample RAF-DB tree plus a tiny RAF-DB-P tree (3 folders x its test names x 30 frames)."""
    import cv2
    import rafdb_dataset
    import synthetic_faces

    base = tmp_path_factory.mktemp("p")
    root = base / "RAF-DB"
    synthetic_faces.write_sample_tree(root, n_train=14, n_test=6, seed=0)
    names = rafdb_dataset.load_labels(root, "test", "soft").names
    every_name = rafdb_dataset.load_labels(root, "test", "hard").names  # a superset: no filter
    perturbed = base / "perturbed"
    rng = np.random.default_rng(0)
    for folder in FOLDERS:
        (perturbed / folder).mkdir(parents=True)
        for name in every_name:
            for frame in range(FRAMES):
                image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                image[..., rng.integers(0, 3)] = 255  # strong colour casts: varied predictions
                cv2.imwrite(str(perturbed / folder / f"{name}_{frame:02d}.jpg"), image)
    (perturbed / "not_a_perturbation").mkdir()
    return base, root, perturbed, names


def _tiny_model(path, seed):
    """Flatten -> Dense(7) softmax with fixed random weights: every pixel position matters."""
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 1.0, (16 * 16 * 3, 7)).astype("float32"), np.zeros(7, "float32")])
    path.parent.mkdir(parents=True)
    model.save(path)
    return path


def model_scores_by_hand(checkpoint, folder, names):
    """(n_sequences, 30, 7) probabilities: frames read with cv2 (BGR -> RGB), resized to 16x16
    bilinear, then the model's own predict (independent of the writer's input pipeline)."""
    import cv2
    import keras

    model = keras.saving.load_model(checkpoint, compile=False)
    frames = []
    for name in names:
        for frame in range(FRAMES):
            image = cv2.cvtColor(cv2.imread(str(folder / f"{name}_{frame:02d}.jpg")), cv2.COLOR_BGR2RGB)
            frames.append(cv2.resize(image, (16, 16), interpolation=cv2.INTER_LINEAR).astype(np.float32))
    scores = model.predict(np.stack(frames), verbose=0)
    return scores.reshape(len(names), FRAMES, 7)


def original_reader(text):
    """A faithful re-implementation of the original reader's parsing (docs/BENCHMARK.md §5.4):
    '#' lines skipped, 2 fields = header, 1 field (a blank line too) = external header, other lines
    exactly 30 ints; a header closes the previous block only if it had sequences; at the end of the
    file the last block is closed unconditionally (sum / count: ZeroDivisionError when empty)."""
    results = {}
    method = perturbation = None
    total, count = 0.0, 0

    def close():
        results.setdefault(method, {})[perturbation] = total / count

    for raw in text.splitlines(keepends=True):  # as `for line in open(file)`
        line = raw.strip()
        if line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) in (1, 2):
            if count > 0:
                close()
            total, count = 0.0, 0
            if len(fields) == 2:
                method = os.path.basename(os.path.dirname(fields[0]))
                perturbation = os.path.basename(fields[1])
            else:
                method, perturbation = "", os.path.basename(fields[0])
            continue
        assert len(fields) == 30
        values = [int(field) for field in fields]
        noise = "_noise" in perturbation
        flips = sum(values[j] != (values[0] if noise else values[j - 1]) for j in range(1, 30))
        total += flips / 29
        count += 1
    close()
    return results


def test_original_reader_reimplementation_crashes_on_the_original_trailing_blank_lines():
    with pytest.raises(ZeroDivisionError):
        original_reader(ORIGINAL)
    fixed = original_reader(ORIGINAL.rstrip("\n") + "\n")
    assert fixed["_netsenet50_20220409_101500"]["rafdb.test.p_rotate"] == pytest.approx(1 / 29)


@pytest.fixture(scope="module")
def tiny_checkpoints(perturbed_tree):
    base = perturbed_tree[0]
    return (_tiny_model(base / "runs" / "run_a" / "checkpoint.01.keras", 1),
            _tiny_model(base / "runs" / "run_b" / "checkpoint.01.hdf5", 2))  # legacy HDF5, like the original


def run_writer(checkpoint, root, perturbed, *extra, stdout):
    return subprocess.run([sys.executable, str(REPO / "eval_perturbed_rafdb.py"), str(checkpoint),
                           "--rafdb", str(root), "--perturbed", str(perturbed), *extra],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO)


def expected_test_set(root) -> str:
    """The test_set= the writer states: the first 16 hex digits of SHA-256 over the soft-label test
    images' names (joined by newlines) and then their label rows as float64 rounded to 1e-9, the
    digest a robustness result records as test_set_sha256 (docs/BENCHMARK.md §5.2)."""
    import rafdb_dataset

    labels = rafdb_dataset.load_labels(root, "test", "soft")
    digest = hashlib.sha256("\n".join(labels.names).encode("utf-8"))
    digest.update(np.round(np.asarray(labels.labels, np.float64), 9).tobytes())
    return digest.hexdigest()[:16]


def hand_fp(sequences, noise):
    """FP by the BENCHMARK.md §5.5 formula, written out with loops."""
    total = 0.0
    for seq in sequences:
        n = len(seq)
        flips = sum(seq[j] != (seq[0] if noise else seq[j - 1]) for j in range(1, n))
        total += flips / (n - 1)
    return total / len(sequences)


@pytest.mark.slow
def test_full_pipe(tmp_path, perturbed_tree, tiny_checkpoints):
    _, root, perturbed, names = perturbed_tree
    run_a, run_b = tiny_checkpoints
    predictions = tmp_path / "predictions.txt"
    with open(predictions, "w") as out:
        result = run_writer(run_a, root, perturbed, stdout=out)
    assert result.returncode == 0, result.stderr
    assert "INFO" in result.stderr  # logs on stderr
    text = predictions.read_text()
    # stdout holds exactly the format: header, metadata, one 30-int line per sequence; the file
    # ends with the last sequence's newline (no blank lines: the original reader accepts it)
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.split("\n")[:-1]
    expected_order = ["rafdb.test.p_gaussian_noise", "rafdb.test.p_rotate", "rafdb.test.p_zzz_extra"]
    blocks = {}
    stride = len(names) + 2  # header, metadata comment, one line per sequence
    for i, folder in enumerate(expected_order):
        header = lines[i * stride]
        assert header == f"{run_a},{perturbed / folder}"
        # no manifest.json in this tree: the source is unknown; N = the soft protocol's sequences
        # ... and the model file's SHA-256 (report.py joins results by it)
        assert lines[i * stride + 1] == \
            f"# labels=soft N={len(names)} source=unknown frames=30 seed=unknown format=unknown " \
            f"test_set={expected_test_set(root)} preprocessing=none input=16x16x3 class_order={RAFDB_ORDER} " \
            f"model_sha256={hashlib.sha256(Path(run_a).read_bytes()).hexdigest()} ends=1"
        sequences = [[int(v) for v in s.split(",")] for s in lines[i * stride + 2:(i + 1) * stride]]
        # the writer's classes are the model's own argmax on the frames read independently
        by_hand = model_scores_by_hand(run_a, perturbed / folder, names)
        assert np.array_equal(np.array(sequences), np.argmax(by_hand, axis=-1))
        blocks[folder.replace("rafdb.test.", "")] = sequences
    # ... and the run's end line closes its three blocks
    assert len(lines) == 3 * stride + 1 and lines[-1] == "# end blocks=3"
    assert len({tuple(s) for seqs in blocks.values() for s in seqs}) > 1  # the tiny model does vary

    original = original_reader(text)  # the original reader accepts the file
    for name, sequences in blocks.items():
        assert original["run_a"]["rafdb.test." + name] == pytest.approx(hand_fp(sequences, "noise" in name))

    result = run_reader(predictions)
    assert result.stdout.endswith("\n")
    table = parse_tsv(result.stdout)
    assert list(table) == ["run_a"]
    assert list(table["run_a"]) == ["p_gaussian_noise", "p_rotate", "p_zzz_extra"]
    for name, sequences in blocks.items():
        assert table["run_a"][name] == pytest.approx(hand_fp(sequences, "noise" in name), abs=1e-12)
    assert "extras (not in mFP): p_zzz_extra" in result.stderr

    # >> a second checkpoint, with rankings and annotations: two methods, one file
    with open(predictions, "a") as out:
        result = run_writer(run_b, root, perturbed, "--topk", "3", "--annotate",
                            "--perturbations", "p_rotate", stdout=out)
    assert result.returncode == 0, result.stderr
    appended = predictions.read_text()[len(text):].split("\n")
    assert appended[0] == f"{run_b},{perturbed / 'rafdb.test.p_rotate'}"
    assert appended[1].startswith(f"# labels=soft N={len(names)} ")
    appended = appended[1:]
    assert appended[1] == f"# {names[0]}"
    by_hand = model_scores_by_hand(run_b, perturbed / "rafdb.test.p_rotate", names)
    assert appended[2] == ",".join(str(c) for c in np.argmax(by_hand[0], axis=-1))
    # ranking by hand: descending score, ties to the lower index (stable sort of -score)
    top3 = np.argsort(-by_hand[0], axis=-1, kind="stable")[:, :3]
    assert appended[3] == "#topk " + ",".join(":".join(str(c) for c in frame) for frame in top3)
    assert original_reader(predictions.read_text())["run_b"]["rafdb.test.p_rotate"] == \
        pytest.approx(hand_fp([[int(v) for v in line.split(",")] for line in appended[2::3][:len(names)]],
                              False))
    result = run_reader(predictions, "--json", str(tmp_path / "r.json"), "--topk", "1,3")
    table = parse_tsv(result.stdout)
    assert list(table) == ["run_a", "run_b"]
    assert np.isnan(table["run_b"]["p_gaussian_noise"])
    data = json.loads((tmp_path / "r.json").read_text())
    rotate_b = data["methods"]["run_b"]["perturbations"]["p_rotate"]
    assert rotate_b["tkd"]["1"] == pytest.approx(rotate_b["fp"])  # d1 = flip indicator


@pytest.mark.slow
def test_writer_out_file_and_hard_labels(tmp_path, perturbed_tree, tiny_checkpoints):
    _, root, perturbed, names = perturbed_tree
    out = tmp_path / "preds.txt"
    # a directory of runs: every run's best checkpoint.NN.hdf5 (only run_b has one)
    result = run_writer(tiny_checkpoints[0].parents[1], root, perturbed, "--labels", "hard",
                        "--perturbations", "rafdb.test.p_rotate", "--out", str(out), stdout=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = out.read_text().split("\n")
    assert lines[0] == f"{tiny_checkpoints[1]},{perturbed / 'rafdb.test.p_rotate'}"
    import rafdb_dataset

    n_hard = len(rafdb_dataset.load_labels(root, "test", "hard"))
    assert lines[1].startswith(f"# labels=hard N={n_hard} source=unknown ")
    # header, metadata, the sequences, the end line, then the last line's newline: no blank lines
    assert len(lines) == 2 + n_hard + 2 and lines[-2:] == ["# end blocks=1", ""]


def _block(method, name, meta=" ends=1"):
    return f"runs/{method}/c.keras,P/rafdb.test.{name}\n# labels=soft N=1 frames=30{meta}\n{line(WORKED)}\n"


@pytest.mark.parametrize("text, number, words", [
    # a run stopped after its second block (Ctrl-C under "> predictions.txt"): no end line
    (_block("a", "p_rotate") + _block("a", "p_scale"), 1, "the run that wrote the last 2 block(s)"),
    # such a part, then a finished run's file concatenated after it
    (_block("a", "p_rotate") + _block("b", "p_rotate") + "# end blocks=1\n", 7, "follows 2 block(s)"),
    # a damaged end line (was taken for a comment: the run counted as finished when read with others)
    (_block("a", "p_rotate") + "# end blocks=abc\n", 4, "'# end blocks=abc' is not an end line"),
])
def test_a_run_that_did_not_finish_is_refused(tmp_path, text, number, words):
    """The writer closes its run with '# end blocks=N' (its blocks say ends=1); blocks of a run that
    stopped early were read as a whole file with only a warning, and scored."""
    path = write(tmp_path, text)
    result = run_reader(path, check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}:{number}: ") and words in last


def test_finished_runs_concatenated_and_files_without_end_lines_are_read(tmp_path):
    """Two finished runs (each with its end line) in one file, and blocks written by another tool
    or an older version (no ends=1): all read, with the flip probability of the worked example."""
    text = (_block("a", "p_rotate") + "# end blocks=1\n" + _block("b", "p_rotate") + _block("b", "p_scale")
            + "# end blocks=2\n" + _block("c", "p_rotate", meta=""))
    table = parse_tsv(run_reader(write(tmp_path, text)).stdout)
    assert set(table) == {"a", "b", "c"}
    assert table["c"]["p_rotate"] == pytest.approx(hand_fp([WORKED], False), abs=1e-12)


def test_missing_frame_is_an_error_naming_it(tmp_path, perturbed_tree, tiny_checkpoints):
    base, root, perturbed, names = perturbed_tree
    broken = tmp_path / "perturbed" / "rafdb.test.p_rotate"
    broken.mkdir(parents=True)
    for source in (perturbed / "rafdb.test.p_rotate").iterdir():
        os.link(source, broken / source.name)
    (broken / f"{names[1]}_17.jpg").unlink()
    with pytest.raises(UserError, match=rf"{names[1]}_17.jpg: frame not found"):
        writer_script.main([str(base / "runs"), "--rafdb", str(root), "--perturbed", str(tmp_path / "perturbed")])


def test_fewer_frames_than_an_export_holds_are_warned_about(tmp_path, perturbed_tree, tiny_checkpoints, caplog):
    """--frames 10 on an exported tree (its manifest: 30 frames per sequence) reads only a prefix of
    each sweep: a warning says so (it read silently); the default, 30, warns about nothing."""
    import rafdb_perturb_dataset

    _, root, _, _ = perturbed_tree
    exported = tmp_path / "P"
    assert rafdb_perturb_dataset.main(["export", "--rafdb", str(root), "--out", str(exported), "--perturbations",
                                       "p_rotate", "--workers", "1", "--quiet"]) == 0
    common = [str(tiny_checkpoints[0]), "--rafdb", str(root), "--perturbed", str(exported)]
    with caplog.at_level(logging.WARNING):
        assert writer_script.main(common + ["--out", str(tmp_path / "p30.txt")]) == 0
        assert "--frames" not in caplog.text
        assert writer_script.main(common + ["--frames", "10", "--out", str(tmp_path / "p10.txt")]) == 0
    assert (f"--frames 10: {exported} holds sequences of 30 frames; only the first 10 of each are read, so the "
            f"flip probabilities are not those of the benchmark's sequences") in caplog.text


def test_frames_beyond_the_sequence_name_their_suffix_and_count(tmp_path):
    """PNG sequences of 30 frames read with --frames 40: the message names test_0001_30.png and says
    the sequence has 30 frames; a gap inside a sequence keeps the plain message."""
    folder = tmp_path / "rafdb.test.p_rotate"
    folder.mkdir()
    for frame in range(30):
        (folder / f"test_0001_{frame:02d}.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"test_0001_30\.png: frame not found: sequence test_0001 has 30 "
                                        r"frames \(00\.\.29\), 40 are asked for \(--frames 40\)"):
        stability.frame_paths(folder, ["test_0001"], 40)
    (folder / "test_0001_12.png").unlink()
    with pytest.raises(UserError, match=r"test_0001_12\.png: frame not found \(sequence test_0001 needs frames 00\.\.29"):
        stability.frame_paths(folder, ["test_0001"], 30)


def test_writer_rejects_missing_folders(tmp_path, perturbed_tree):
    _, root, perturbed, _ = perturbed_tree
    with pytest.raises(UserError, match="x.keras: no such checkpoint"):  # model files are checked first
        writer_script.main([str(tmp_path / "x.keras"), "--rafdb", str(root), "--perturbed", str(perturbed)])
    model = tmp_path / "x.keras"
    model.write_bytes(b"")  # exists: the folders are checked before any model is loaded
    with pytest.raises(UserError, match="no such folder"):
        writer_script.main([str(model), "--rafdb", str(root), "--perturbed", str(tmp_path / "nothing")])
    with pytest.raises(UserError, match="rafdb.test.p_scale: no such folder"):
        writer_script.main([str(model), "--rafdb", str(root), "--perturbed", str(perturbed), "--perturbations",
                            "p_scale"])


def test_format_block_bytes():
    classes = np.array([WORKED, CONSTANT])
    text = stability.format_block("c.keras,P/rafdb.test.p_rotate", ["test_0001", "test_0002"], classes, None, False)
    assert text == f"c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n{line(CONSTANT)}\n"
    text = stability.format_block("h", ["test_0001"], classes[1:], np.tile([3, 6], (1, 30, 1)), True)
    assert text == f"h\n# test_0001\n{line(CONSTANT)}\n#topk {','.join(['3:6'] * 30)}\n"


# --------------------------------------------------------------------------------------------
# Metadata comments (N, protocol, source) and method-name collisions


def test_metadata_comment_gives_n_protocol_and_source(tmp_path):
    text = ("runs/a/c.keras,P/rafdb.test.p_rotate\n# labels=hard N=2 source=aligned frames=30 seed=0\n"
            f"{line(WORKED)}\n{line(CONSTANT)}\n"
            f"runs/b/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n")  # no metadata: unknown, N from data
    path = write(tmp_path, text)
    result = run_reader(path, "--json", str(tmp_path / "r.json"))
    assert parse_tsv(result.stdout)["a"]["p_rotate"] == pytest.approx((2 / 29 + 0) / 2)  # unchanged TSV; WORKED flips twice
    data = json.loads((tmp_path / "r.json").read_text())
    a, b = data["methods"]["a"], data["methods"]["b"]
    assert (a["n"], a["protocol"], a["source"]) == (2, "hard", "aligned")
    assert (b["n"], b["protocol"], b["source"]) == (1, "unknown", "unknown")
    assert a["perturbations"]["p_rotate"]["meta"]["seed"] == "0"
    rows = {row.split()[0]: row.split()[1:4] for row in result.stderr.splitlines() if row[:2] in ("a ", "b ")}
    assert rows == {"a": ["2", "hard", "aligned"], "b": ["1", "unknown", "unknown"]}
    assert "source: aligned (docs/BENCHMARK.md §3.6) for a" in result.stderr


def test_metadata_n_that_disagrees_with_the_block_names_the_line(tmp_path):
    text = f"runs/a/c.keras,P/rafdb.test.p_rotate\n# labels=soft N=3 source=landmarks\n{line(WORKED)}\n"
    with pytest.raises(UserError, match=r"predictions.txt:2: metadata says N=3 but .* has 1 sequences"):
        stability.read_predictions(write(tmp_path, text))
    with pytest.raises(UserError, match=r":2: metadata N='x'"):
        stability.read_predictions(write(tmp_path, text.replace("N=3", "N=x")))


def test_two_checkpoints_of_one_run_directory_stay_apart(tmp_path, caplog):
    text = (f"runs/r/checkpoint.01.hdf5,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
            f"runs/r/checkpoint.02.hdf5,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n"
            f"runs/s/checkpoint.05.hdf5,P/rafdb.test.p_rotate\n{line(NOISE_DIFFERS)}\n"
            f"runs/r/checkpoint.01.hdf5,P/rafdb.test.p_scale\n{line(CONSTANT)}\n")
    with caplog.at_level(logging.WARNING):
        table = stability.group_blocks(stability.read_predictions(write(tmp_path, text)))
    assert sorted(table) == ["r/checkpoint.01.hdf5", "r/checkpoint.02.hdf5", "s"]  # s keeps the original name
    assert sorted(table["r/checkpoint.01.hdf5"]) == ["p_rotate", "p_scale"]
    assert "share the method name 'r'" in caplog.text
    results = stability.compute(table)
    assert results["methods"]["r/checkpoint.01.hdf5"]["perturbations"]["p_rotate"]["fp"] == pytest.approx(2 / 29)
    assert results["methods"]["r/checkpoint.02.hdf5"]["perturbations"]["p_rotate"]["fp"] == 0.0
    # same run directory and file name under different parents: the whole paths
    text = (f"a/r/c.hdf5,P/rafdb.test.p_rotate\n{line(WORKED)}\nb/r/c.hdf5,P/rafdb.test.p_rotate\n{line(CONSTANT)}\n")
    table = stability.group_blocks(stability.read_predictions(write(tmp_path, text)))
    assert sorted(table) == ["a/r/c.hdf5", "b/r/c.hdf5"]


def test_writer_warns_on_method_name_collisions(caplog):
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        assert stability.warn_method_collisions(["runs/r/checkpoint.01.hdf5", "runs/s/checkpoint.01.hdf5"]) == []
        assert caplog.text == ""
        assert stability.warn_method_collisions(["runs/r/checkpoint.02.hdf5"],
                                             earlier=["runs/r/checkpoint.01.hdf5"]) == ["r"]
    assert "share the method name 'r'" in caplog.text
    assert "will name them r/checkpoint.01.hdf5, r/checkpoint.02.hdf5" in caplog.text
    # run directory and file name shared too: the reader names them by their whole paths
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        assert stability.warn_method_collisions(["a/export/model.onnx", "b/export/model.onnx"]) == ["export"]
    assert "will name them a/export/model.onnx, b/export/model.onnx" in caplog.text
    assert "<run dir>" not in caplog.text
    assert stability.headers_in(ORIGINAL) == ["out_training_fer/_netsenet50_20220409_101500/checkpoint.87.hdf5"]


def test_writer_metadata_from_an_aligned_source_manifest(tmp_path, perturbed_tree, tiny_checkpoints):
    _, root, perturbed, names = perturbed_tree
    tree = tmp_path / "perturbed"
    (tree / "rafdb.test.p_rotate").mkdir(parents=True)
    for source in (perturbed / "rafdb.test.p_rotate").iterdir():
        os.link(source, tree / "rafdb.test.p_rotate" / source.name)
    (tree / "manifest.json").write_text(json.dumps({
        "kind": "rafdb-p", "files": {}, "params": {"seed": 4, "format": "jpg", "source": "aligned",
                                                   "fallback_pad": "reflect101", "frames": 30}}))
    out = tmp_path / "preds.txt"
    assert writer_script.main([str(tiny_checkpoints[0]), "--rafdb", str(root), "--perturbed", str(tree),
                        "--out", str(out)]) == 0
    lines = out.read_text().split("\n")
    digest = hashlib.sha256(Path(tiny_checkpoints[0]).read_bytes()).hexdigest()
    # ... and the settings that change the predictions (report.py keeps other settings apart):
    # no run.json, no flag: raw pixels; the model's 16x16x3 input; RAF-DB's class order assumed
    assert lines[1] == (f"# labels=soft N={len(names)} source=aligned frames=30 seed=4 format=jpg "
                        f"fallback_pad=reflect101 test_set={expected_test_set(root)} preprocessing=none input=16x16x3 class_order={RAFDB_ORDER} "
                        f"model_sha256={digest} ends=1")
    result = run_reader(out, "--json", str(tmp_path / "r.json"))
    summary = json.loads((tmp_path / "r.json").read_text())["methods"]["run_a"]
    assert (summary["n"], summary["protocol"], summary["source"]) == (len(names), "soft", "aligned")
    assert summary["checkpoint_sha256"] == digest
    assert summary["settings"] == {"preprocessing": "none", "input": "16x16x3", "class_order": RAFDB_ORDER,
                                   "adapted": "none"}
    assert "source: aligned (docs/BENCHMARK.md §3.6) for run_a" in result.stderr


def test_corrupt_frame_is_a_user_error_naming_it(tmp_path, perturbed_tree, tiny_checkpoints):
    _, root, perturbed, names = perturbed_tree
    tree = tmp_path / "perturbed" / "rafdb.test.p_rotate"
    tree.mkdir(parents=True)
    for source in (perturbed / "rafdb.test.p_rotate").iterdir():
        os.link(source, tree / source.name)
    victim = tree / f"{names[1]}_04.jpg"
    victim.unlink()  # a new file, not the shared link
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    with pytest.raises(UserError, match=rf"{victim.name}: not a readable image"):
        writer_script.main([str(tiny_checkpoints[0]), "--rafdb", str(root), "--perturbed", str(tmp_path / "perturbed"),
                     "--out", str(tmp_path / "preds.txt")])
    assert not (tmp_path / "preds.txt").exists()  # nothing half-written


def test_reader_takes_the_class_count_of_the_block_metadata(tmp_path):
    """A block written in a dataset's own 8 classes (metadata classes=8) may name class 7; a block
    without it keeps RAF-DB's 0..6. Flip probability (difficulty 1, noise-free folder: consecutive
    frames) of the sequence 7,7,3,3 is 1 flip in 3 transitions."""
    path = tmp_path / "p.txt"
    path.write_text("m.keras,fer2013.test.p_rotate\n# labels=soft N=1 source=image frames=4 classes=8\n"
                    "7,7,3,3\n")
    blocks = stability.read_predictions(path)
    assert blocks[0].sequences == [[7, 7, 3, 3]]
    result = stability.compute(stability.group_blocks(blocks))
    assert result["methods"]["m.keras"]["perturbations"]["p_rotate"]["fp"] == pytest.approx(1 / 3)
    path.write_text("m.keras,rafdb.test.p_rotate\n# labels=soft N=1 source=image frames=4\n7,7,3,3\n")
    with pytest.raises(UserError, match="outside the class indices 0..6"):
        stability.read_predictions(path)


def frame_rows(perturbed):
    """``path,class`` rows of every frame of the FOLDERS: p_rotate frame f gets class f // 10 (two
    flips in 29 transitions), the other folders class 4 throughout."""
    rows = []
    for folder in FOLDERS:
        for path in sorted((perturbed / folder).glob("*.jpg")):
            frame = int(path.stem.rsplit("_", 1)[1])
            rows.append(f"{folder}/{path.name},{frame // 10 if folder.endswith('p_rotate') else 4}")
    return rows


def test_predictions_file_of_any_framework_gives_the_sequences_it_names(tmp_path, perturbed_tree):
    """--predictions instead of CHECKPOINT: every frame's class comes from the CSV (paths relative
    to --perturbed). p_rotate frames get class (frame // 10) -> sequences 0x10, 1x10, 2x10: two
    flips in 29 transitions; the other folders class 4 throughout (no flips)."""
    _, root, perturbed, names = perturbed_tree
    lines = ["path,class"]
    lines += frame_rows(perturbed)
    csv_path = tmp_path / "frames.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.txt"
    assert writer_script.main(["--predictions", str(csv_path), "--rafdb", str(root), "--perturbed",
                               str(perturbed), "--out", str(out)]) == 0
    blocks = {block.perturbation: block
              for block in stability.read_predictions(out)}
    # the metadata states what a predictions file can: its class order (the dataset's, as its rows are
    # written), not the other framework's preprocessing or input size (unknown: report.py never compares them)
    meta = blocks["p_rotate"].meta
    assert meta["class_order"] == RAFDB_ORDER and "preprocessing" not in meta and "input" not in meta
    assert stability.block_settings(meta) == {"class_order": RAFDB_ORDER, "adapted": "none"}
    rotate = [0] * 10 + [1] * 10 + [2] * 10
    assert blocks["p_rotate"].sequences == [rotate] * len(names)
    assert blocks["p_gaussian_noise"].sequences == [[4] * 30] * len(names)
    result = stability.compute(stability.group_blocks(stability.read_predictions(out)))
    (method,) = result["methods"]
    assert result["methods"][method]["perturbations"]["p_rotate"]["fp"] == pytest.approx(2 / 29)
    # one class per frame ranks nothing else: --topk 2 is refused (it wrote the other classes in index
    # order, a made-up ranking that gave T2D unlike the model's); --topk 1 is the class itself
    with pytest.raises(UserError, match=rf"^--topk 2: {re.escape(str(csv_path))} holds one class per frame"):
        writer_script.main(["--predictions", str(csv_path), "--rafdb", str(root), "--perturbed",
                            str(perturbed), "--out", str(tmp_path / "k.txt"), "--topk", "2"])
    assert not (tmp_path / "k.txt").exists()
    # --append to a file whose last line end was lost: the new blocks start on their own line
    cut = tmp_path / "cut.txt"
    cut.write_text(out.read_text().rstrip("\n"))
    assert writer_script.main(["--predictions", str(csv_path), "--rafdb", str(root), "--perturbed",
                               str(perturbed), "--out", str(cut), "--append"]) == 0
    assert len(stability.read_predictions(cut)) == 2 * len(blocks)
    # a frame without a line is an error naming it
    csv_path.write_text("\n".join(line for line in lines if "_07.jpg" not in line) + "\n")
    with pytest.raises(UserError, match="_07.jpg"):
        writer_script.main(["--predictions", str(csv_path), "--rafdb", str(root), "--perturbed",
                            str(perturbed), "--out", str(tmp_path / "q.txt")])
    assert not (tmp_path / "q.txt").exists()
    with pytest.raises(SystemExit):
        writer_script.main(["--predictions", str(csv_path), "m.keras", "--rafdb", str(root)])


def test_one_predictions_file_for_both_evaluations_is_one_model_in_the_report(tmp_path, perturbed_tree):
    """A model scored through predictions (one that cannot be exported) had its RAF-DB-C and RAF-DB-P
    results in two CSVs, never joined by report.py (it joins by the file's SHA-256), and one CSV with
    both sets of rows was refused by each evaluation ('unknown path'). Each evaluation now skips the
    other export's rows, and the report shows one row with both results."""
    import eval_corrupted_rafdb
    import eval_perturbed_rafdb2
    import rafdb_aug_dataset
    import report

    _, root, perturbed, names = perturbed_tree
    corrupted = tmp_path / "C"
    assert rafdb_aug_dataset.main(["export", "--rafdb", str(root), "--out", str(corrupted), "--corruptions",
                                   "contrast", "--severities", "1", "--workers", "1", "--quiet"]) == 0
    lines = ["path,class"]
    for path in sorted((root / "basic/Image/aligned").glob("test_*_aligned.jpg")):
        lines.append(f"clean/{path.name},3")
    for path in sorted((corrupted / "rafdb.test.contrast.1").glob("*.jpg")):
        lines.append(f"rafdb.test.contrast.1/{path.name},3")
    lines += frame_rows(perturbed)
    both = tmp_path / "both.csv"
    both.write_text("\n".join(lines) + "\n")
    assert eval_corrupted_rafdb.main(["--predictions", str(both), "--rafdb", str(root), "--corrupted",
                                      str(corrupted), "--corruptions", "contrast", "--severities", "1",
                                      "--json", str(tmp_path / "c.json")]) == 0
    assert writer_script.main(["--predictions", str(both), "--rafdb", str(root), "--perturbed", str(perturbed),
                               "--out", str(tmp_path / "p.txt")]) == 0
    assert eval_perturbed_rafdb2.main([str(tmp_path / "p.txt"), "--json", str(tmp_path / "p.json"),
                                       "--quiet"]) == 0
    # a mistyped row of the evaluation's own export is still an error, in either evaluation
    for typo, own in (("rafdb.test.contrast.1/nope.jpg", "C"), ("rafdb.test.p_rotate/nope.jpg", "P")):
        bad = tmp_path / "bad.csv"
        bad.write_text("\n".join(lines + [f"{typo},3"]) + "\n")
        with pytest.raises(UserError, match=rf"bad\.csv:{len(lines) + 1}: unknown path {re.escape(typo)}"):
            if own == "C":
                eval_corrupted_rafdb.main(["--predictions", str(bad), "--rafdb", str(root), "--corrupted",
                                           str(corrupted), "--corruptions", "contrast", "--severities", "1"])
            else:
                writer_script.main(["--predictions", str(bad), "--rafdb", str(root), "--perturbed", str(perturbed),
                                    "--out", str(tmp_path / "bad.txt")])
    result = report.make_report([tmp_path / "c.json", tmp_path / "p.json"], tmp_path / "report")
    (row,) = result["rows"]
    labels = rafdb_dataset_labels(root)
    # by hand: every clean image predicted class 3 (index 3 of RAF-DB's order, happiness)
    assert row["clean_error"] == pytest.approx(1 - np.mean(labels.classes == 3))
    assert row["mfp"] == pytest.approx((2 / 29 + 0) / 2)  # p_rotate 2 flips of 29; p_gaussian_noise none


def rafdb_dataset_labels(root):
    import rafdb_dataset

    return rafdb_dataset.load_labels(root, "test", "soft")


def test_predictions_file_scores_a_folder_dataset_in_its_own_classes(tmp_path):
    """--predictions on a folder dataset (classes happy, sad): the CSV names each frame's class in the
    dataset's own classes, by name or by index in its order. happy0's p_rotate frames are scored sad
    from frame 20 on (one flip in 29 transitions), the rest happy throughout: FP (1/29 + 0) / 2
    over the two sequences."""
    import cv2

    import rafdb_perturb_dataset

    rng = np.random.default_rng(0)
    data = tmp_path / "faces"
    for name in ("happy", "sad"):
        (data / "test" / name).mkdir(parents=True)
        cv2.imwrite(str(data / "test" / name / f"{name}0.png"), rng.integers(0, 256, (40, 40, 3), np.uint8))
    perturbed = tmp_path / "faces-p"
    assert rafdb_perturb_dataset.main(["export", "--dataset", "folder", "--data", str(data), "--out", str(perturbed),
                                       "--perturbations", "p_rotate", "--workers", "1"]) == 0
    frames = sorted(path.relative_to(perturbed).as_posix() for path in perturbed.rglob("*.jpg"))
    assert len(frames) == 60
    for spelling in ("names", "indices"):
        lines = ["path,class"]
        for rel in frames:
            label = "sad" if "/happy/" in rel and int(rel.rsplit("_", 1)[1][:2]) >= 20 else "happy"
            lines.append(f"{rel},{label if spelling == 'names' else ('happy', 'sad').index(label)}")
        csv_path = tmp_path / f"{spelling}.csv"
        csv_path.write_text("\n".join(lines) + "\n")
        out = tmp_path / f"{spelling}.txt"
        assert writer_script.main(["--predictions", str(csv_path), "--dataset", "folder", "--data", str(data),
                                   "--perturbed", str(perturbed), "--out", str(out)]) == 0
        (block,) = stability.read_predictions(out)
        assert block.meta["class_order"] == "happiness,sadness"
        result = stability.compute(stability.group_blocks([block]))
        (method,) = result["methods"].values()
        assert method["perturbations"]["p_rotate"]["fp"] == pytest.approx((1 / 29 + 0) / 2)


def test_a_corrupted_tree_given_as_perturbed_is_named_as_such(tmp_path, perturbed_tree, tiny_checkpoints):
    _, root, _, _ = perturbed_tree
    tree = tmp_path / "C"
    tree.mkdir()
    (tree / "manifest.json").write_text(json.dumps({"kind": "rafdb-c", "files": {}, "complete": True}))
    with pytest.raises(UserError, match=rf"--perturbed {tree}: its manifest records a rafdb-c tree, a corrupted-image "
                                        r"export .*; expected a perturbation export"):
        writer_script.main([str(tiny_checkpoints[0]), "--rafdb", str(root), "--perturbed", str(tree),
                            "--out", str(tmp_path / "p.txt")])
    assert not (tmp_path / "p.txt").exists()


def test_a_model_missing_a_dataset_class_writes_the_n_of_its_own_sequences(tmp_path):
    """A folder dataset with a class the model cannot output (contempt, for a 7-class RAF-DB-order
    model): its sequences are left out of the block, and the metadata's N must count the block's own
    sequences (it counted all of them, and the reader refused the file: 'metadata says N=5 ...')."""
    import cv2
    import keras

    import rafdb_perturb_dataset

    rng = np.random.default_rng(0)
    data = tmp_path / "faces"
    for name, count in (("happy", 3), ("contempt", 2)):
        (data / "test" / name).mkdir(parents=True)
        for index in range(count):
            cv2.imwrite(str(data / "test" / name / f"{name}{index}.png"), rng.integers(0, 256, (40, 40, 3), np.uint8))
    perturbed = tmp_path / "faces-p"
    assert rafdb_perturb_dataset.main(["export", "--dataset", "folder", "--data", str(data), "--out", str(perturbed),
                                       "--perturbations", "p_rotate", "--workers", "1"]) == 0
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    model_path = tmp_path / "m.keras"
    keras.Model(inputs, outputs).save(model_path)
    out = tmp_path / "p.txt"
    assert writer_script.main([str(model_path), "--dataset", "folder", "--data", str(data), "--perturbed",
                               str(perturbed), "--preprocessing", "scale01", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    sequences = [line for line in lines[1:] if line and not line.startswith("#")]
    assert len(sequences) == 3  # the three happy faces; the two contempt faces are left out
    assert " N=3 " in lines[1]
    blocks = __import__("stability").read_predictions(out)
    assert [len(block.sequences) for block in blocks] == [3]


def test_a_folder_dataset_named_with_a_comma_is_refused_at_export(tmp_path):
    """Its name starts the perturbation folders' names, which the comma-separated predictions header
    holds: the export refuses it (the writer's file was unreadable, with exit 0 on the way)."""
    import cv2

    import rafdb_perturb_dataset
    from cli_common import UserError

    data = tmp_path / "my,faces"
    (data / "test" / "happy").mkdir(parents=True)
    cv2.imwrite(str(data / "test" / "happy" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(UserError, match=r"^--data .*my,faces: the dataset folder's name 'my,faces' contains a comma"):
        rafdb_perturb_dataset.main(["export", "--dataset", "folder", "--data", str(data), "--out",
                                    str(tmp_path / "p"), "--perturbations", "p_rotate", "--workers", "1"])
    assert not (tmp_path / "p").exists()


def test_a_folders_unreadable_images_are_refused_before_the_perturbation_export_writes(tmp_path):
    """A zero-byte file and a text file named .jpg in a folder dataset: the perturbation export named the
    first only when it reached it, with the images before it written (a partial tree); now both are
    named in one error and --out is not created, as the corruption export does. An 8 px image stays
    accepted (perturbations have no minimum size)."""
    import cv2

    import rafdb_perturb_dataset
    from cli_common import UserError

    data = tmp_path / "faces"
    (data / "test" / "happy").mkdir(parents=True)
    for name in ("a", "c", "e"):
        cv2.imwrite(str(data / "test" / "happy" / f"{name}.png"), np.full((40, 40, 3), 90, np.uint8))
    cv2.imwrite(str(data / "test" / "happy" / "small.png"), np.full((8, 8, 3), 90, np.uint8))
    (data / "test" / "happy" / "d.png").write_bytes(b"")
    (data / "test" / "happy" / "f.jpg").write_text("not a picture")
    argv = ["export", "--dataset", "folder", "--data", str(data), "--out", str(tmp_path / "p"),
            "--perturbations", "p_rotate", "--workers", "1", "--quiet"]
    with pytest.raises(UserError) as error:
        rafdb_perturb_dataset.main(argv)
    assert str(error.value).startswith(f"{data / 'test' / 'happy' / 'd.png'}: ")
    assert str(error.value).endswith(f"(and 1 more source image(s) that cannot be read: "
                                     f"{data / 'test' / 'happy' / 'f.jpg'})")
    assert not (tmp_path / "p").exists()
    (data / "test" / "happy" / "d.png").unlink()
    (data / "test" / "happy" / "f.jpg").unlink()
    assert rafdb_perturb_dataset.main(argv) == 0
    assert len(list((tmp_path / "p").rglob("small_*.jpg"))) == 30  # 30 frames of the 8 px image


def test_blocks_of_several_datasets_are_named_in_a_warning(tmp_path):
    """RAF-DB, a folder dataset and FER2013 perturbation folders in one file: one table would rank
    FP of different images under the same perturbation names; the reader says so (it did not)."""
    text = "".join(f"{run}/checkpoint.01.hdf5,{folder}\n{line(WORKED)}\n"
                   for run, folder in (("run_raf", "perturbed_raf_dataset/rafdb.test.p_rotate"),
                                       ("run_folder", "faces-p/faces.test.p_rotate"),
                                       ("run_fer", "fer-p/fer2013.PublicTest.p_rotate")))
    result = run_reader(write(tmp_path, text))
    assert ("the blocks come from the perturbation folders of 3 datasets (rafdb.test: run_raf; faces.test: "
            "run_folder; fer2013.PublicTest: run_fer)") in result.stderr
    same = run_reader(write(tmp_path, ORIGINAL, "one.txt"))
    assert "perturbation folders of" not in same.stderr
    assert stability.folder_dataset("p_rotate") == "" and stability.folder_dataset("x/rafdb.test.p_rotate/") == "rafdb.test"


# --------------------------------------------------------------------------------------------
# Evaluation settings in the metadata (report.py keeps results of other settings apart)


def _settings_block(name, meta, sequence):
    return f"runs/a/c.keras,P/rafdb.test.{name}\n# labels=soft N=1 frames=30{meta}\n{line(sequence)}\n"


def test_reader_carries_the_settings_of_the_metadata_into_the_method(tmp_path, caplog):
    """Blocks that agree give the method's settings; a key one block does not state is unknown (left
    out); values that differ between blocks are kept as a list, with a warning naming the blocks."""
    import eval_perturbed_rafdb2

    settings = f" preprocessing=z_normalization input=64x64x3 class_order={RAFDB_ORDER}"
    path = write(tmp_path, _settings_block("p_rotate", settings + " adapted=bn_prior8", WORKED)
                 + _settings_block("p_shear", settings + " adapted=bn_prior8", CONSTANT))
    table = stability.group_blocks(stability.read_predictions(path))
    assert eval_perturbed_rafdb2.method_settings(table) == {"a": {
        "preprocessing": "z_normalization", "input": "64x64x3", "class_order": RAFDB_ORDER, "adapted": "bn_prior8"}}
    # an older block (no settings) with a newer one: no setting is known for every block
    path = write(tmp_path, _settings_block("p_rotate", settings, WORKED) + _settings_block("p_shear", "", CONSTANT))
    table = stability.group_blocks(stability.read_predictions(path))
    assert eval_perturbed_rafdb2.method_settings(table) == {"a": {}}
    # two runs of different preprocessing concatenated: two methods, named by it, and a warning
    path = write(tmp_path, _settings_block("p_rotate", settings, WORKED)
                 + _settings_block("p_shear", settings.replace("z_normalization", "none"), CONSTANT))
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        table = stability.group_blocks(stability.read_predictions(path))
    assert eval_perturbed_rafdb2.method_settings(table) == {
        "a [preprocessing z_normalization]": {"preprocessing": "z_normalization", "input": "64x64x3",
                                              "class_order": RAFDB_ORDER, "adapted": "none"},
        "a [preprocessing none]": {"preprocessing": "none", "input": "64x64x3", "class_order": RAFDB_ORDER,
                                   "adapted": "none"}}
    assert ("a was evaluated with different preprocessing; kept apart as 'a [preprocessing z_normalization]' "
            "(p_rotate); 'a [preprocessing none]' (p_shear)") in caplog.text


def test_adapted_runs_at_two_batches_are_two_methods(tmp_path, caplog):
    """The deeper BatchNorm layers' adapted statistics depend on --batch: two adapted runs of one
    model at batches 64 and 30, appended to one file, are kept apart by the batch their metadata
    state, never averaged into one mFP."""
    import eval_perturbed_rafdb2

    settings = f" preprocessing=z_normalization input=64x64x3 class_order={RAFDB_ORDER} adapted=bn"
    path = write(tmp_path, _settings_block("p_rotate", settings + " adapt_batch=64", WORKED)
                 + _settings_block("p_rotate", settings + " adapt_batch=30", CONSTANT))
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        table = stability.group_blocks(stability.read_predictions(path))
    assert set(eval_perturbed_rafdb2.method_settings(table)) == {"a [adaptation batch 64]", "a [adaptation batch 30]"}
    assert eval_perturbed_rafdb2.method_settings(table)["a [adaptation batch 30]"]["adapt_batch"] == "30"
    assert "a was evaluated with different adaptation batch" in caplog.text
    # the same batch: one method, whose settings carry it
    path = write(tmp_path, _settings_block("p_rotate", settings + " adapt_batch=64", WORKED)
                 + _settings_block("p_shear", settings + " adapt_batch=64", CONSTANT))
    table = stability.group_blocks(stability.read_predictions(path))
    assert eval_perturbed_rafdb2.method_settings(table) == {"a": {
        "preprocessing": "z_normalization", "input": "64x64x3", "class_order": RAFDB_ORDER, "adapted": "bn",
        "adapt_batch": "64"}}


def test_one_perturbation_evaluated_with_two_settings_is_two_methods(tmp_path, caplog):
    """The same model and perturbation appended twice with different settings (a rerun with another
    --preprocessing and input size appended with >>): both evaluations are kept, as two methods with
    their own FP (worked out by hand: WORKED flips at 2 of its 29 consecutive pairs, CONSTANT at none),
    instead of the second replacing the first; a block stating no settings is a third."""
    import eval_perturbed_rafdb2

    first = " preprocessing=scale01 input=64x64x3 class_order=" + RAFDB_ORDER
    second = " preprocessing=none input=100x100x3 class_order=" + RAFDB_ORDER
    path = write(tmp_path, _settings_block("p_rotate", first, WORKED) + _settings_block("p_rotate", second, CONSTANT)
                 + _settings_block("p_rotate", "", CONSTANT))
    json_path = tmp_path / "s.json"
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        assert eval_perturbed_rafdb2.main([str(path), "--json", str(json_path), "--quiet"]) == 0
    methods = json.loads(json_path.read_text())["methods"]
    scale01 = "a [preprocessing scale01, input 64x64x3]"
    none = "a [preprocessing none, input 100x100x3]"
    unknown = "a [preprocessing not recorded, input not recorded]"
    assert sorted(methods) == sorted([scale01, none, unknown])
    assert methods[scale01]["perturbations"]["p_rotate"]["fp"] == pytest.approx(2 / 29)
    assert methods[none]["perturbations"]["p_rotate"]["fp"] == 0.0
    assert methods[scale01]["settings"]["input"] == "64x64x3" and methods[unknown]["settings"] == {}
    assert methods[none]["checkpoint"] == "runs/a/c.keras"
    assert "the later block wins" not in caplog.text
    assert "a was evaluated with different preprocessing and input" in caplog.text
    # the report: three rows, none replacing another, whatever the order of the methods
    import report

    for order in (1, -1):
        data = json.loads(json_path.read_text())
        data["methods"] = dict(list(data["methods"].items())[::order])
        ordered = tmp_path / f"s{order}.json"
        ordered.write_text(json.dumps(data))
        rows = report.make_report([ordered], tmp_path / f"rep{order}")["rows"]
        assert {row["model"]: row["mfp"] for row in rows} == {
            scale01: pytest.approx(2 / 29), none: 0.0, unknown: 0.0}


def test_blocks_stating_one_setting_in_two_spellings_agree(tmp_path, caplog):
    """Blocks appended by two versions of the writer: a display label and its setting token
    (full_normalization (inside the model) / full_normalization+in_model), a class order with a
    synonym (joy / happiness) are one setting each, without a warning; the report's reading of a
    list written before (["a", "b"] that are one setting today) is that one setting."""
    import eval_perturbed_rafdb2
    import report

    old = f" preprocessing=full_normalization_(inside_the_model) class_order={RAFDB_ORDER.replace('happiness', 'joy')}"
    new = f" preprocessing=full_normalization+in_model class_order={RAFDB_ORDER}"
    path = write(tmp_path, _settings_block("p_rotate", old, WORKED) + _settings_block("p_shear", new, CONSTANT))
    with caplog.at_level(logging.WARNING, logger="fer.stability"):
        table = stability.group_blocks(stability.read_predictions(path))
    found = eval_perturbed_rafdb2.method_settings(table)
    assert found == {"a": {"preprocessing": "full_normalization+in_model", "class_order": RAFDB_ORDER,
                           "adapted": "none"}}
    assert "evaluated with different" not in caplog.text
    assert report.stability_settings({"settings": {
        "preprocessing": ["full_normalization_(inside_the_model)", "full_normalization+in_model"]}}) == \
        {"preprocessing": "full_normalization+in_model"}


def test_settings_written_by_the_writer_keep_the_report_rows_apart(tmp_path, perturbed_tree, tiny_checkpoints):
    """End to end: the writer states --preprocessing and --class-order; the robustness row of the
    same file, with the checkpoint description eval_corrupted_rafdb.py records (other settings),
    stays a row of its own in report.py; predictions with its own settings join it."""
    import checkpoints
    import eval_perturbed_rafdb2
    import rafdb_dataset
    import report

    _, root, perturbed, _ = perturbed_tree
    model = tiny_checkpoints[0]
    order = "anger,disgust,fear,happiness,neutral,sadness,surprise"
    out = tmp_path / "z.txt"
    assert writer_script.main([str(model), "--rafdb", str(root), "--perturbed", str(perturbed),
                               "--perturbations", "p_rotate", "--preprocessing", "z_normalization",
                               "--class-order", "angry," + order.split(",", 1)[1], "--out", str(out)]) == 0
    meta = out.read_text().split("\n")[1]
    assert f" preprocessing=z_normalization input=16x16x3 class_order={order} model_sha256=" in meta
    stable = tmp_path / "z.json"
    assert eval_perturbed_rafdb2.main([str(out), "--json", str(stable), "--quiet"]) == 0
    # the robustness JSON of the same file evaluated with the defaults, as eval_corrupted_rafdb.py records it
    classifier = checkpoints.adapt(checkpoints.load_classifier(model), model)
    classifier.use_classes(rafdb_dataset.CLASS_NAMES)
    robust_data = json.loads((REPO / "tests" / "data" / "report" / "tinycnn.json").read_text())
    robust_data["results"][0]["checkpoint"] = classifier.describe()
    # measured on the same test faces (one row needs the same label protocol and N)
    method = next(iter(json.loads(stable.read_text())["methods"].values()))
    robust_data["results"][0]["protocol"], robust_data["results"][0]["n"] = method["protocol"], method["n"]
    robust = tmp_path / "r.json"
    robust.write_text(json.dumps(robust_data))
    report_out = report.make_report([robust, stable], tmp_path / "rep")
    names = sorted(row["model"] for row in report_out["rows"])
    assert names == [f"run_a [preprocessing none, class order {RAFDB_ORDER}]",
                     f"run_a [preprocessing z_normalization, class order {order}]"]
    assert any("different evaluation settings" in warning and str(robust) in warning and str(stable) in warning
               for warning in report_out["warnings"])
    # the writer with the robustness evaluation's settings: one row
    assert writer_script.main([str(model), "--rafdb", str(root), "--perturbed", str(perturbed),
                               "--perturbations", "p_rotate", "--out", str(out)]) == 0
    assert eval_perturbed_rafdb2.main([str(out), "--json", str(stable), "--quiet"]) == 0
    report_out = report.make_report([robust, stable], tmp_path / "rep2")
    assert [row["model"] for row in report_out["rows"]] == ["run_a"]
    assert not any("settings" in warning for warning in report_out["warnings"])


def test_a_run_json_and_the_flag_give_one_preprocessing_setting(tmp_path, perturbed_tree):
    """The preprocessing compared by report.py is the computation, not its label: an ONNX model with
    a run.json saying z_normalization (labelled "z_normalization (RGB input)"), predictions written by
    the real writer, and the robustness description of the same file evaluated with --preprocessing
    z_normalization state one setting, "z_normalization", and are one row. run.json's colour
    bgr-compat (reversed constants) or a swapped vggface2 mean order is another computation, for an
    ONNX model and a Keras checkpoint alike (their labels used to omit them)."""
    import argparse

    import checkpoints
    import eval_perturbed_rafdb2
    import report
    from test_model_files import B, W, mean_linear_onnx

    _, root, perturbed, _ = perturbed_tree
    folder = tmp_path / "export"
    folder.mkdir()
    onnx_model = mean_linear_onnx(folder / "model.onnx", "NHWC", W, B)
    run_json = folder / "run.json"
    run_json.write_text(json.dumps({"preprocessing": "z_normalization"}))

    def classifier(model, preprocessing=None):
        options = argparse.Namespace(preprocessing=preprocessing, eval_preprocessing=None, class_order=None,
                                     unsafe=False, crop=None, batch=4, input_size=None)
        built = checkpoints.classifier_from_args(model, options)
        built.use_classes(RAFDB_ORDER.split(","))
        return built

    out = tmp_path / "p.txt"
    assert writer_script.main([str(onnx_model), "--rafdb", str(root), "--perturbed", str(perturbed),
                               "--perturbations", "p_rotate", "--out", str(out)]) == 0
    meta = stability.parse_meta(out.read_text().split("\n")[1][1:])
    assert meta["preprocessing"] == "z_normalization"  # not the label "z_normalization (RGB input)"
    stable = tmp_path / "p.json"
    assert eval_perturbed_rafdb2.main([str(out), "--json", str(stable), "--quiet"]) == 0
    flagged = classifier(onnx_model, "z_normalization")  # the run.json is overridden by the flag
    assert flagged.preprocessing_label == "z_normalization"  # the labels stay as they were
    assert classifier(onnx_model).preprocessing_label == "z_normalization (RGB input)"
    described = flagged.describe()
    assert described["preprocessing_setting"] == "z_normalization"
    settings = json.loads(stable.read_text())["methods"]["export"]["settings"]
    assert settings["preprocessing"] == report.robustness_settings({"checkpoint": described})["preprocessing"]
    robust_data = json.loads((REPO / "tests" / "data" / "report" / "tinycnn.json").read_text())
    robust_data["results"][0]["checkpoint"] = described
    method = json.loads(stable.read_text())["methods"]["export"]  # the same test faces: protocol and N
    robust_data["results"][0]["protocol"], robust_data["results"][0]["n"] = method["protocol"], method["n"]
    robust = tmp_path / "r.json"
    robust.write_text(json.dumps(robust_data))
    result = report.make_report([robust, stable], tmp_path / "rep")
    assert [row["model"] for row in result["rows"]] == ["export"]
    assert not any("settings" in warning for warning in result["warnings"])

    # run.json's colour and mean order: other computations, for ONNX and Keras alike
    keras_model = _tiny_model(tmp_path / "keras" / "m.keras", 3)
    for model in (onnx_model, keras_model):
        for run_info, mode, expected in (
                ({"preprocessing": "z_normalization", "colour": "bgr-compat"}, "z_normalization",
                 "z_normalization+colour=bgr-compat"),
                ({"preprocessing": "vggface2", "mean_order": "legacy-swapped"}, "vggface2",
                 "vggface2+mean_order=legacy-swapped"),
                ({"preprocessing": "vggface2", "channel_order": "BGR"}, "vggface2", "vggface2+bgr"),
                ({"preprocessing": "scale01", "mean_order": "legacy-swapped"}, "scale01", "scale01"),
                ({"preprocessing": "vggface2"}, "vggface2", "vggface2")):
            (model.parent / "run.json").write_text(json.dumps(run_info))
            from_run_json = stability.classifier_settings(classifier(model))  # what the writer writes
            from_flag = report.robustness_settings({"checkpoint": classifier(model, mode).describe()})
            # the flag replaces the mode, colour and mean order, not the channel order (kept)
            flagged = f"{mode}+bgr" if run_info.get("channel_order") == "BGR" else mode
            assert (from_run_json["preprocessing"], from_flag["preprocessing"]) == (expected, flagged), (model, run_info)


def test_writer_json_records_each_model_and_its_adaptation(tmp_path, perturbed_tree, tiny_checkpoints):
    """The writer's --json names, beside the calibration rows, each model's identity and how it was
    fed (SHA-256 of the file, input shape, preprocessing setting), as the robustness JSON does."""
    import hashlib

    _, root, perturbed, _names = perturbed_tree
    run_a = tiny_checkpoints[0]
    json_path = tmp_path / "calibration.json"
    result = run_writer(run_a, root, perturbed, "--preprocessing", "none", "--bgr-input", "--json", json_path,
                        stdout=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    data = json.loads(json_path.read_text())
    assert data["format"] == "rafdb-p-calibration" and list(data["checkpoints"]) == [str(run_a)]
    model = data["checkpoints"][str(run_a)]
    assert model["checkpoint_sha256"] == hashlib.sha256(run_a.read_bytes()).hexdigest()
    assert model["input_shape"] == [16, 16, 3] and model["preprocessing_setting"] == "none+bgr"
    # described after its predictions, as the robustness JSON: the tiny models end in a softmax
    # (this was null: the model was described before its first batch showed what it outputs)
    assert model["runtime"]["output_kind"] == "probabilities"
    assert len(data["folders"]) == 3


def test_a_predictions_file_cut_mid_line_says_so(tmp_path):
    """A file whose last line has no line end (a copy or a disk that stopped mid-line) is named as
    cut short at that line; the same bad field on a whole line is reported without that guess."""
    import stability

    whole = "runs/a/m.keras,perturbed/rafdb.test.p_rotate\n" + ",".join(["3"] * 30) + "\n"
    cut = tmp_path / "cut.txt"
    cut.write_text(whole + "3,3,3,")
    with pytest.raises(UserError) as error:
        stability.read_predictions(cut)
    assert str(error.value).startswith(f"{cut}:3 (the last line, with no line end: the file looks cut short): "
                                       "field 4 is ''")
    damaged = tmp_path / "damaged.txt"
    damaged.write_text(whole + "3,3,3,\n")
    with pytest.raises(UserError) as error:
        stability.read_predictions(damaged)
    assert str(error.value).startswith(f"{damaged}:3: field 4 is ''")


def test_blocks_of_two_perturbed_trees_are_kept_apart(tmp_path, caplog):
    """Shards of one model run on two perturbed trees (seed 0 and 1) and concatenated: two methods,
    each with its own mFP, and a warning naming the seed; they were averaged into one silently."""
    import stability

    flips = ",".join(["3"] * 15 + ["0"] * 15)  # one flip in 29 consecutive pairs
    still = ",".join(["3"] * 30)
    text = ("runs/a/m.keras,P/rafdb.test.p_rotate\n# labels=soft N=1 source=landmarks frames=30 seed=0 format=jpg\n"
            f"{still}\n"
            "runs/a/m.keras,P/rafdb.test.p_scale\n# labels=soft N=1 source=landmarks frames=30 seed=1 format=jpg\n"
            f"{flips}\n")
    path = tmp_path / "mixed.txt"
    path.write_text(text)
    blocks = stability.read_predictions(path)
    assert [block.method for block in blocks] == ["a [seed 0]", "a [seed 1]"]
    assert "a was evaluated with different seed; kept apart as 'a [seed 0]' (p_rotate); 'a [seed 1]' (p_scale)" \
        in caplog.text
    out = tmp_path / "r.json"
    assert run_reader(path, "--json", str(out)).returncode == 0
    methods = json.loads(out.read_text())["methods"]
    assert methods["a [seed 0]"]["perturbations"]["p_rotate"]["fp"] == 0.0
    assert methods["a [seed 1]"]["perturbations"]["p_scale"]["fp"] == pytest.approx(1 / 29)


def test_a_byte_order_mark_does_not_make_another_model(tmp_path):
    """A file saved with a UTF-8 byte-order mark, and two such files concatenated: the mark is no
    part of the first header's checkpoint path, so one model's blocks stay one method (the mark made
    the first block's method another model, split from the rest with no error)."""
    one = (f"runs/m/c.keras,P/rafdb.test.p_rotate\n{line(WORKED)}\n"
           f"runs/m/c.keras,P/rafdb.test.p_scale\n{line(CONSTANT)}\n")
    other = f"runs/m/c.keras,P/rafdb.test.p_shear\n{line(CONSTANT)}\n"
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + one.encode() + b"\xef\xbb\xbf" + other.encode())
    blocks = stability.read_predictions(path)
    assert [(b.method, b.perturbation) for b in blocks] == [("m", "p_rotate"), ("m", "p_scale"), ("m", "p_shear")]
