"""Damaged result JSON files (a field removed or of another type, as a hand edit leaves them) are a
one-line UserError naming the file and the field, for every reader: report.py, --merge and
--baseline of eval_corrupted_rafdb.py, and --baseline of eval_perturbed_rafdb2.py. Before, each of
these cases ended in a KeyError, TypeError or StopIteration traceback."""

import copy
import json
from pathlib import Path

import pytest

import report
import result_files
import robustness
import stability
from cli_common import UserError

DATA = Path(__file__).resolve().parent / "data" / "report"


def load(name):
    return json.loads((DATA / f"{name}.json").read_text())


def _set(data, path, value):
    *parents, last = path
    for key in parents:
        data = data[key]
    if value is KeyError:
        del data[last]
    else:
        data[last] = value


ROBUSTNESS_DAMAGE = [
    (("results", 0, "folders", 3, "error"), KeyError, r"results\[0\]\.folders\[3\]\.error: missing, expected a number"),
    (("results", 0, "folders"), KeyError, r"results\[0\]\.folders: missing"),
    (("results", 0, "folders"), [], r"results\[0\]\.folders: no clean folder"),
    (("results", 0, "checkpoint"), "x", r"results\[0\]\.checkpoint\.checkpoint: a string, expected the model"),
    (("results", 0, "n"), [36], r"results\[0\]\.n: a list, expected an integer"),
    (("results", 0, "protocol"), ["soft"], r"results\[0\]\.protocol: a list, expected a string"),
    (("results", 0, "summary"), "x", r"results\[0\]\.summary: a string, expected an object"),
    (("results", 0, "folders", 2, "severity"), "2", r"results\[0\]\.folders\[2\]\.severity: a string, expected an integer"),
    (("results", 0), "x", r"results\[0\]: a string, expected an object"),
    # values no evaluation writes: an error is a fraction 0..1 (7.0 is 700 %), NaN is written as null
    (("results", 0, "folders", 3, "error"), 7.0, r"results\[0\]\.folders\[3\]\.error: 7\.0, expected a number in 0\.\.1;"),
    (("results", 0, "folders", 3, "error"), -0.25, r"results\[0\]\.folders\[3\]\.error: -0\.25, expected a number in 0\.\.1;"),
    (("results", 0, "folders", 3, "error"), float("nan"), r"results\[0\]\.folders\[3\]\.error: nan, expected a number in 0\.\.1;"),
    (("results", 0, "folders", 0, "accuracy"), 22.2, r"results\[0\]\.folders\[0\]\.accuracy: 22\.2, expected a number in 0\.\.1;"),
    (("results", 0, "folders", 2, "ece"), 1.5, r"results\[0\]\.folders\[2\]\.ece: 1\.5, expected a number in 0\.\.1 or null;"),
    (("results", 0, "folders", 2, "brier"), 2.5, r"results\[0\]\.folders\[2\]\.brier: 2\.5, expected a number in 0\.\.2 or null;"),
    (("results", 0, "folders", 2, "nll"), float("inf"), r"results\[0\]\.folders\[2\]\.nll: inf, expected a number >= 0 or null;"),
    (("results", 0, "clean", "error"), 1.2, r"results\[0\]\.clean\.error: 1\.2, expected a number in 0\.\.1;"),
]


@pytest.mark.parametrize("where, value, message", ROBUSTNESS_DAMAGE)
def test_damaged_robustness_results_are_refused_by_every_reader(tmp_path, where, value, message):
    data = load("tinycnn")
    _set(data, where, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"^" + str(path).replace(".", r"\.") + ": " + message):
        report.make_report([path], tmp_path / "out")
    for flag in ("--merge", "--baseline"):
        with pytest.raises(UserError, match=f"^{flag} " + str(path).replace(".", r"\.") + ": " + message):
            robustness.read_results(path, flag)
    assert not (tmp_path / "out").exists()


STABILITY_DAMAGE = [
    (("methods", "base", "perturbations"), "x", r"methods\['base'\]\.perturbations: a string, expected an object"),
    (("methods", "base", "perturbations", "p_rotate", "fp"), "x", r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: a string, expected a number in 0\.\.1 or null"),
    (("methods", "base", "perturbations", "p_rotate", "fp"), KeyError, r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: missing"),
    (("methods", "base", "mtkd"), "x", r"methods\['base'\]\.mtkd: a string, expected an object of numbers"),
    (("methods", "base"), [], r"methods\['base'\]: a list, expected an object"),
    # a flip probability is a fraction 0..1; NaN is written as null
    (("methods", "base", "perturbations", "p_rotate", "fp"), 4.0, r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: 4\.0, expected a number in 0\.\.1 or null;"),
    (("methods", "base", "perturbations", "p_rotate", "fp"), float("nan"), r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: nan, expected a number in 0\.\.1 or null;"),
    (("methods", "base", "perturbations", "p_rotate", "tkd", "2"), -1.0, r"methods\['base'\]\.perturbations\['p_rotate'\]\.tkd\['2'\]: -1\.0, expected a number >= 0 or null;"),
    (("methods", "base", "mfp"), 3.0, r"methods\['base'\]\.mfp: 3\.0, expected a number in 0\.\.1 or null;"),
]


@pytest.mark.parametrize("where, value, message", STABILITY_DAMAGE)
def test_damaged_stability_results_are_refused_by_every_reader(tmp_path, where, value, message):
    data = load("stability")
    _set(data, where, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"^" + str(path).replace(".", r"\.") + ": " + message):
        report.make_report([path], tmp_path / "out")
    results = {"methods": copy.deepcopy(load("stability")["methods"]), "difficulty": 1}
    with pytest.raises(UserError, match=r"^--baseline " + str(path).replace(".", r"\.") + ": " + message):
        stability.load_baseline(str(path), results, "base")


def test_a_folder_row_given_twice_is_refused(tmp_path):
    """folders[3] (gaussian_blur severity 3) pasted again at the end: the report's mean ECE counted
    it twice and its mean error once; now every reader refuses the file, naming both rows."""
    data = load("tinycnn")
    folders = data["results"][0]["folders"]
    assert (folders[3]["corruption"], folders[3]["severity"]) == ("gaussian_blur", 3)
    folders.append(copy.deepcopy(folders[3]))
    last = len(folders) - 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    message = (rf"results\[0\]\.folders\[{last}\]: gaussian_blur severity 3 again \(also "
               rf"results\[0\]\.folders\[3\]\), expected each folder once")
    with pytest.raises(UserError, match=r"^" + str(path).replace(".", r"\.") + ": " + message):
        report.make_report([path], tmp_path / "out")
    for flag in ("--merge", "--baseline"):
        with pytest.raises(UserError, match=f"^{flag} " + str(path).replace(".", r"\.") + ": " + message):
            robustness.read_results(path, flag)
    data = load("tinycnn")
    data["results"][0]["folders"].append(copy.deepcopy(data["results"][0]["folders"][0]))
    assert "the clean folder again" in result_files.robustness_problem(data)


def test_the_files_the_evaluations_write_pass():
    import result_files

    for name in ("tinycnn", "base", "mobile"):
        assert result_files.robustness_problem(load(name)) is None
    assert result_files.stability_problem(load("stability")) is None


def test_ece_and_brier_just_above_their_bound_are_accepted():
    """A probability row summing to 1 within a float16 output's resolution (taken as it is) can give
    an ECE a little above 1 on an all-wrong folder: not refused; a value far above still is."""
    import result_files

    assert result_files._in_range("ece", 1.004) and result_files._in_range("brier", 2.007)
    assert not result_files._in_range("ece", 1.5) and not result_files._in_range("brier", 2.5)
    assert not result_files._in_range("error", 1.004)  # a count's fraction has no such room
