"""Perturbation sets in the RAF-DB-P evaluation (docs/BENCHMARK.md §3.3, §3.7): folder selection by
--perturbation-set and one mFP per set, the 10's mFP never moved by the extras."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import stability
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]


def line(values):
    return ",".join(str(v) for v in values)


def block(method, name, *sequences):
    return f"runs/{method}/c.keras,P/rafdb.test.{name}\n" + "".join(line(s) + "\n" for s in sequences)


def test_one_mfp_per_set_and_the_10_unchanged(tmp_path):
    one_flip = [1] * 15 + [2] * 15  # consecutive rule: 1 of 29 pairs differ
    two_flips = [1] * 10 + [2] * 10 + [1] * 10  # 2 of 29
    noisy = [4] + [5] * 29  # noise rule (vs frame 0): 29 of 29
    steady = [3] * 30
    base = block("m", "p_rotate", one_flip, steady) + block("m", "p_gaussian_noise", noisy, steady)
    extra = block("m", "p_tilt", two_flips, two_flips) + block("m", "p_speckle_noise", noisy, noisy)
    (tmp_path / "ten.txt").write_text(base)
    (tmp_path / "all.txt").write_text(base + extra)
    results = {}
    for name in ("ten", "all"):
        run = subprocess.run([sys.executable, str(REPO / "eval_perturbed_rafdb2.py"), str(tmp_path / f"{name}.txt"),
                              "--json", str(tmp_path / f"{name}.json"), "--csv", str(tmp_path / f"{name}.csv")],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        results[name] = (json.loads((tmp_path / f"{name}.json").read_text())["methods"]["m"], run.stderr)
    ten, both = results["ten"][0], results["all"][0]
    # By hand: p_rotate FP = (1/29 + 0) / 2; p_gaussian_noise FP = (29/29 + 0) / 2.
    fp_10 = ((1 / 29) / 2 + 1.0 / 2) / 2
    # p_tilt FP = 2/29; p_speckle_noise FP = 1.0 (every frame differs from frame 0).
    fp_extra = (2 / 29 + 1.0) / 2
    assert ten["mfp"] == both["mfp"] == pytest.approx(fp_10)
    assert both["sets"]["rafdb"]["mfp"] == pytest.approx(fp_10)
    assert both["sets"]["imagenet-extra"]["mfp"] == pytest.approx(fp_extra)
    assert both["sets"]["imagenet-extra"]["perturbations"] == ["p_tilt", "p_speckle_noise"]
    assert "set imagenet-extra: mFP %.6f over 2" % fp_extra in results["all"][1]
    assert "set imagenet-extra" not in results["ten"][1]
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert float(next(r for r in rows if r["perturbation"] == "mean:imagenet-extra")["fp"]) == pytest.approx(fp_extra)
    assert float(next(r for r in rows if r["perturbation"] == "mean")["fp"]) == pytest.approx(fp_10)


def test_a_sets_top_k_distance_is_labelled_as_the_unnormalised_mean(tmp_path):
    """The per-set line printed 'mT2D' for the unnormalised mean over the set, the name the table and
    docs/BENCHMARK.md §5.7 give the mean normalised to a baseline; it reads T2D like the table's column."""
    ordered, zero_last = "0:1:2:3:4:5:6", "1:2:3:4:5:6:0"
    one_flip = [0] * 15 + [1] * 15
    rankings = [ordered] * 15 + [zero_last] * 15  # one consecutive pair with d2 = 3 (by hand, §5.7)
    text = "".join(f"runs/m/c.keras,P/rafdb.test.{name}\n{line(one_flip)}\n#topk {','.join(rankings)}\n"
                   for name in ("p_rotate", "p_tilt"))
    (tmp_path / "p.txt").write_text(text)
    results = stability.compute(stability.group_blocks(stability.read_predictions(tmp_path / "p.txt")), ks=[2])
    summary = stability.format_summary(results)
    assert results["methods"]["m"]["sets"]["imagenet-extra"]["mtkd"]["2"] == pytest.approx(3 / 29)
    assert f"set imagenet-extra: mFP {1 / 29:.6f} over 1 perturbation(s)  T2D {3 / 29:.4f}" in summary
    assert "mT2D" not in summary  # no baseline: nothing normalised


def test_a_sets_line_shows_its_mfr_against_a_baseline(tmp_path):
    """With a baseline the per-set line gives the set's mFR (the JSON and CSV had it, the table not):
    by hand, m flips once in p_tilt and twice in p_snow, base twice in each (one sequence of 30
    frames each): FR = (1/29)/(2/29) = 0.5 and 1.0, mFR 0.75 over the two extras."""
    def flips(k):
        return [0] * (30 - k) + [1, 0] * (k // 2) + [1] * (k % 2)

    text = (block("m", "p_rotate", flips(1)) + block("m", "p_tilt", flips(1)) + block("m", "p_snow", flips(2))
            + block("base", "p_rotate", flips(1)) + block("base", "p_tilt", flips(2))
            + block("base", "p_snow", flips(2)))
    (tmp_path / "p.txt").write_text(text)
    results = stability.compute(stability.group_blocks(stability.read_predictions(tmp_path / "p.txt")), ks=[])
    fp = results["methods"]["m"]["perturbations"]
    assert (fp["p_tilt"]["fp"], fp["p_snow"]["fp"]) == (pytest.approx(1 / 29), pytest.approx(2 / 29))
    label, baseline = stability.load_baseline("base", results)
    stability.normalise(results, label, baseline)
    summary = stability.format_summary(results)
    assert f"set imagenet-extra: mFP {1.5 / 29:.6f}, mFR 0.7500 over 2 perturbation(s)" in summary


def test_perturbation_set_selects_the_folders_present(tmp_path):
    for name in ("p_rotate", "p_gaussian_noise", "p_tilt", "p_snow"):
        (tmp_path / f"rafdb.test.{name}").mkdir()
    names = lambda folders: [folder.name[len("rafdb.test."):] for folder in folders]  # noqa: E731
    assert names(stability.perturbation_folders(tmp_path, None, "imagenet-extra")) == ["p_snow", "p_tilt"]
    assert names(stability.perturbation_folders(tmp_path, None, "rafdb")) == ["p_gaussian_noise", "p_rotate"]
    assert names(stability.perturbation_folders(tmp_path, None, "all")) == [
        "p_gaussian_noise", "p_rotate", "p_snow", "p_tilt"]
    # The default is today's: the 10 present, then any other folder.
    assert names(stability.perturbation_folders(tmp_path)) == ["p_gaussian_noise", "p_rotate", "p_snow", "p_tilt"]
    for name in ("p_tilt", "p_snow"):
        (tmp_path / f"rafdb.test.{name}").rmdir()
    with pytest.raises(UserError, match="--perturbation-set imagenet-extra: none of its folders"):
        stability.perturbation_folders(tmp_path, None, "imagenet-extra")


# docs/BENCHMARK.md §3.3 then §3.7: the 10's order, then p_zoom_blur, p_snow, p_tilt, p_speckle_noise
# (not alphabetical: that would be p_snow, p_speckle_noise, p_tilt, p_zoom_blur), then others by name.
DOCUMENTED = ["p_rotate", "p_zoom_blur", "p_snow", "p_tilt", "p_speckle_noise", "p_a", "p_b"]


def test_extra_folders_come_in_registry_order_then_others_by_name(tmp_path):
    for name in ("p_b", "p_speckle_noise", "p_tilt", "p_a", "p_snow", "p_zoom_blur", "p_rotate"):
        (tmp_path / f"rafdb.test.{name}").mkdir()
    names = [folder.name[len("rafdb.test."):] for folder in stability.perturbation_folders(tmp_path)]
    assert names == DOCUMENTED


def test_one_run_and_concatenated_shards_give_one_row_order(tmp_path):
    """One run's predictions (folders in its order) and shards concatenated (folders i, i+N, ...)
    give the same TSV rows and JSON order: the documented one."""
    one_flip = [1] * 15 + [2] * 15
    one_run = "".join(block("m", name, one_flip) for name in DOCUMENTED)
    shards = "".join(block("m", name, one_flip) for name in DOCUMENTED[0::2] + DOCUMENTED[1::2])
    tables = []
    for name, text in (("one.txt", one_run), ("shards.txt", shards)):
        (tmp_path / name).write_text(text)
        results = stability.compute(stability.group_blocks(stability.read_predictions(tmp_path / name)), ks=[])
        assert list(results["methods"]["m"]["perturbations"]) == DOCUMENTED
        tables.append(stability.format_tsv(results))
    assert tables[0] == tables[1]
    assert [row.split("\t")[0] for row in tables[0].splitlines()[1:]] == DOCUMENTED
