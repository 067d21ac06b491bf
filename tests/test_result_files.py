"""Damaged result JSON files (a field removed or of another type, as a hand edit leaves them) are a
one-line UserError naming the file and the field, for every reader: report.py, --merge and
--baseline of eval_corrupted_rafdb.py, and --baseline of eval_perturbed_rafdb2.py. Before, each of
these cases ended in a KeyError, TypeError or StopIteration traceback."""

import copy
import json
from pathlib import Path

import pytest

import report
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
    (("methods", "base", "perturbations", "p_rotate", "fp"), "x", r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: a string, expected a number or null"),
    (("methods", "base", "perturbations", "p_rotate", "fp"), KeyError, r"methods\['base'\]\.perturbations\['p_rotate'\]\.fp: missing"),
    (("methods", "base", "mtkd"), "x", r"methods\['base'\]\.mtkd: a string, expected an object of numbers"),
    (("methods", "base"), [], r"methods\['base'\]: a list, expected an object"),
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


def test_the_files_the_evaluations_write_pass():
    import result_files

    for name in ("tinycnn", "base", "mobile"):
        assert result_files.robustness_problem(load(name)) is None
    assert result_files.stability_problem(load("stability")) is None
