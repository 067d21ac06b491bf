"""Output paths of the evaluation, report and training scripts: checked before any work, and a
failing atomic write is one clean line with exit code 2 (cli_common.check_output_path,
cli_common.OutputError).

The tests run as root, where file permissions do not stop a write, so an unwritable place is made
from a regular file used as a folder (``FILE/out.json``), an existing folder used as a file, or
/proc (no new files can be created in it, even by root).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cli_common
from cli_common import OutputError, UserError

REPO = Path(__file__).resolve().parents[1]
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self").is_dir(), reason="no /proc file system")


@pytest.fixture()
def places(tmp_path):
    """(a regular file, an existing folder) under tmp_path."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    return a_file, a_folder


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# --------------------------------------------------------------------------------------------
# cli_common.check_output_path


def test_a_folder_given_as_the_output_file(places):
    _, a_folder = places
    with pytest.raises(UserError) as error:
        cli_common.check_output_path(a_folder, "--json")
    assert str(error.value) == f"--json {a_folder}: is a folder; expected the name of a file to write"


def test_a_file_given_as_the_output_folder(places):
    a_file, _ = places
    with pytest.raises(UserError) as error:
        cli_common.check_output_path(a_file, "--out", folder=True)
    assert str(error.value) == f"--out {a_file}: is a file; expected a folder to write into"


@pytest.mark.parametrize("folder", [False, True])
def test_a_file_on_the_way_to_the_output(places, folder):
    a_file, _ = places
    target = a_file / "deeper" / "out.csv"
    with pytest.raises(UserError) as error:
        cli_common.check_output_path(target, "--csv", folder=folder)
    assert str(error.value).startswith(f"--csv {target}: {a_file} is a file, not a folder")


@needs_proc
def test_a_folder_where_no_file_can_be_created():
    with pytest.raises(UserError) as error:
        cli_common.check_output_path(PROC / "out.json", "--json")
    assert str(error.value).startswith(f"--json {PROC / 'out.json'}: cannot write in {PROC} (")
    with pytest.raises(UserError) as error:
        cli_common.check_output_path(PROC / "new" / "rep", "--out", folder=True)
    assert str(error.value).startswith(f"--out {PROC / 'new' / 'rep'}: cannot create the folder "
                                       f"{PROC / 'new' / 'rep'}: {PROC} is not writable (")


def test_writable_paths_pass_and_nothing_is_left_behind(places, tmp_path):
    _, a_folder = places
    before = listing(tmp_path)
    for path, folder in ((a_folder / "r.json", False), (tmp_path / "new" / "sub" / "r.json", False),
                         (tmp_path / "new" / "report", True), (a_folder, True),
                         (a_folder / "exists.json", False)):
        assert cli_common.check_output_path(path, "--x", folder=folder) == path
    assert listing(tmp_path) == before  # no probe file, no created folder


# --------------------------------------------------------------------------------------------
# The last line of defence: OutputError from the atomic writers, reported by run_main


def test_atomic_writers_raise_output_error_naming_the_path(places):
    a_file, a_folder = places
    with pytest.raises(OutputError) as error:
        cli_common.atomic_write_text(a_folder, "x")
    assert isinstance(error.value, OSError) and isinstance(error.value, UserError)
    assert str(error.value) == f"{a_folder}: {os.strerror(error.value.errno)}"
    with pytest.raises(OutputError) as error:
        with cli_common.atomic_path(a_file / "x.npz") as tmp:
            tmp.write_bytes(b"never")
    assert error.value.filename == str(a_file / "x.npz")
    assert listing(a_folder) == [] and a_file.read_text() == "not a folder\n"


def test_an_error_inside_the_atomic_block_is_not_converted(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        with cli_common.atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing" / "input.txt")
    assert not isinstance(error.value, UserError)
    assert listing(tmp_path) == []


def test_run_main_reports_an_output_error_in_one_line(places, capsys):
    _, a_folder = places

    def main():
        cli_common.atomic_write_text(a_folder, "x")

    with pytest.raises(SystemExit) as exit_:
        cli_common.run_main(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {a_folder}: {os.strerror(21)}\n"  # EISDIR


def test_run_main_keeps_the_traceback_of_other_os_errors(tmp_path):
    def main():
        open(tmp_path / "missing.txt")

    with pytest.raises(FileNotFoundError):
        cli_common.run_main(main)


# --------------------------------------------------------------------------------------------
# The scripts check every output flag before any work


def forbid(monkeypatch, module, name):
    """Make ``module.name`` fail the test if it is called (the work the check must come before)."""
    def called(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} called before the output check")

    monkeypatch.setattr(module, name, called)


def assert_refused_first(main, leading, flag, places, leaf="out"):
    """``main([*leading, flag, BAD])`` raises the output check's UserError for a folder given as a
    file and for a path below a regular file (the work after the check is forbidden by the caller)."""
    a_file, a_folder = places
    for bad, words in ((a_folder, "is a folder"), (a_file / leaf, f"{a_file} is a file")):
        with pytest.raises(UserError, match="^" + re.escape(f"{flag} {bad}: {words}")):
            main([*leading, flag, str(bad)])


@pytest.mark.parametrize("flag", ["--json", "--csv", "--plot", "--save-probabilities"])
def test_eval_corrupted_checks_outputs_first(places, monkeypatch, flag):
    import checkpoints
    import eval_corrupted_rafdb

    forbid(monkeypatch, checkpoints, "find_checkpoints")
    assert_refused_first(eval_corrupted_rafdb.main, ["model.keras"], flag, places)
    with pytest.raises(UserError, match="^" + re.escape(f"--json {places[1]}: is a folder")):
        eval_corrupted_rafdb.main(["--merge", "part0.json", "--json", str(places[1])])


@pytest.mark.parametrize("flag", ["--out", "--json", "--save-probabilities"])
def test_eval_perturbed_writer_checks_outputs_first(places, monkeypatch, flag):
    import checkpoints
    import eval_perturbed_rafdb

    forbid(monkeypatch, checkpoints, "find_checkpoints")
    assert_refused_first(eval_perturbed_rafdb.main, ["model.keras"], flag, places)


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_eval_perturbed_reader_checks_outputs_before_reading(places, monkeypatch, flag):
    import eval_perturbed_rafdb2
    import stability

    forbid(monkeypatch, stability, "read_predictions")
    assert_refused_first(eval_perturbed_rafdb2.main, ["predictions.txt"], flag, places, leaf="s.json")


def test_report_checks_out_before_reading(places, monkeypatch):
    import report

    a_file, _ = places
    forbid(monkeypatch, report, "collect_files")
    with pytest.raises(UserError, match="^" + re.escape(f"--out {a_file}: is a file; expected a folder")):
        report.main(["a.json", "--out", str(a_file)])
    with pytest.raises(UserError, match="^" + re.escape(f"--out {a_file / 'rep'}: {a_file} is a file")):
        report.main(["a.json", "--out", str(a_file / "rep")])


def test_cli_exit_2_without_traceback_and_nothing_written(places, tmp_path):
    """The real command line: one error line naming the flag, exit 2, no output file."""
    a_file, a_folder = places
    before = listing(tmp_path)
    for command in (["eval_perturbed_rafdb2.py", "p.txt", "--json", str(a_file / "s.json")],
                    ["report.py", "a.json", "--out", str(a_file)]):
        result = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {command[2]} ")
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------------------------
# No output over an input; links and special files


def test_an_output_that_is_an_input_or_inside_a_dataset_is_refused(tmp_path):
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    (tmp_path / "alias.keras").symlink_to(model)
    tree = tmp_path / "corrupted"
    tree.mkdir()
    for out in (model, tmp_path / "run" / ".." / "run" / "model.keras", tmp_path / "alias.keras"):
        with pytest.raises(UserError, match=r"^--json .*: is the input model .*model\.keras; writing it would destroy"):
            cli_common.refuse_outputs_over_inputs([("--json", out)], [("model", model)])
    with pytest.raises(UserError, match=r"^--csv .*/corrupted/r\.csv: lies inside --corrupted .*corrupted, which is read"):
        cli_common.refuse_outputs_over_inputs([("--csv", tree / "r.csv")], trees=[("--corrupted", tree)])
    # beside them is fine, and so is a folder whose name merely begins like the tree's
    cli_common.refuse_outputs_over_inputs([("--json", tmp_path / "run" / "r.json"), ("--csv", tmp_path / "corrupted_x.csv"),
                                           ("--plot", tmp_path / "corrupted2" / "p.png")],
                                          [("model", model)], [("--corrupted", tree)])
    assert model.read_bytes() == b"weights"


def test_an_output_over_a_training_runs_own_file_is_refused(tmp_path):
    """A run folder (it holds a run.json): an output may not replace its run.json, checkpoints,
    training log or results (an evaluation's --json RUN/run.json left a run every later step read
    with its class order and preprocessing gone, exit 0); a new file there, and the same names in a
    folder that is no run, are fine. The real command line exits 2 and leaves run.json as it was."""
    run = tmp_path / "run"
    run.mkdir()
    victims = {"run.json": b'{"net": "smallcnn"}', "checkpoint.03.hdf5": b"w", "checkpoint_last.hdf5": b"w",
               "training_log.csv": b"epoch\n", "results.json": b"{}", "m.KERAS": b"w"}
    for name, data in victims.items():
        (run / name).write_bytes(data)
    for name in victims:
        with pytest.raises(UserError, match=rf"^--json .*/run/{re.escape(name)}: is a file of the training run .*run "
                                            r"\(its run\.json, checkpoints and logs are read by later steps\)"):
            cli_common.refuse_outputs_over_inputs([("--json", run / name)])
    with pytest.raises(UserError, match=r"^--json .*/run/checkpoint\.99\.hdf5: a file named like a model in the "
                                        r"training run .*run would be taken for one of its models"):
        cli_common.refuse_outputs_over_inputs([("--json", run / "checkpoint.99.hdf5")])  # a new file
    import training  # the run's own file names, as train_fer.py writes them

    assert {training.RUN_FILE, training.RESULTS_FILE, training.STATE_FILE, training.LOG_FILE} <= \
        cli_common.RUN_FOLDER_FILES and training.LAST_CHECKPOINT.endswith(".hdf5")
    other = tmp_path / "plain"
    other.mkdir()
    (other / "results.json").write_text("{}")
    cli_common.refuse_outputs_over_inputs([("--json", run / "robustness.json"), ("--csv", other / "results.json")])
    predictions = tmp_path / "p.txt"
    predictions.write_text("model,p_rotate\n")
    result = subprocess.run([sys.executable, str(REPO / "eval_perturbed_rafdb2.py"), str(predictions), "--json",
                             str(run / "run.json")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --json {run / 'run.json'}: is a file of the")
    assert (run / "run.json").read_bytes() == victims["run.json"]


def test_the_scripts_refuse_to_overwrite_their_inputs(tmp_path):
    """The real command lines (exit 2, one line, the input untouched): the predictions file as the
    reader's --json, a shard as the --merge output, and an export written into its own dataset."""
    predictions = tmp_path / "p.txt"
    predictions.write_text("model,p_rotate\n")
    shard = tmp_path / "s0.json"
    shard.write_text("{}")
    commands = ((["eval_perturbed_rafdb2.py", str(predictions), "--json", str(predictions)], "--json", predictions),
                (["eval_corrupted_rafdb.py", "--merge", str(shard), "--json", str(shard)], "--json", shard))
    for command, flag, victim in commands:
        before = victim.read_bytes()
        result = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path,
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {flag} {victim}: is the input")
        assert "Traceback" not in result.stderr and victim.read_bytes() == before


def test_two_outputs_naming_one_file_are_refused(tmp_path):
    """Two output flags on one file (also through a link, or spelled another way): the later write
    would replace the earlier, e.g. the --json of an evaluation over the RESULTS_FILE that keeps
    the blocks of earlier ones. Exit 2 naming both, before any work; the file untouched."""
    results = tmp_path / "results.txt"
    results.write_text("Results for: an earlier model\n")
    (tmp_path / "alias.txt").symlink_to(results)
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match=r"^--json .*/a\.out and --csv .*/sub/\.\./a\.out: the same file; one "
                                        r"output would replace the other"):
        cli_common.refuse_outputs_over_inputs([("--json", tmp_path / "a.out"),
                                               ("--csv", tmp_path / "sub" / ".." / "a.out")])
    # a device takes several outputs: nothing is replaced there
    cli_common.refuse_outputs_over_inputs([("--json", "/dev/null"), ("--csv", "/dev/null")])
    shard = tmp_path / "s0.json"
    shard.write_text("{}")
    commands = ((["eval_corrupted_rafdb.py", "m.keras", "--json", str(tmp_path / "alias.txt"), str(results)],
                 f"--json {tmp_path / 'alias.txt'} and RESULTS_FILE {results}"),
                (["eval_perturbed_rafdb.py", "m.keras", "--out", str(results), "--json", str(results)],
                 f"--out {results} and --json {results}"),
                (["eval_perturbed_rafdb2.py", str(shard), "--json", str(results), "--csv", str(results)],
                 f"--json {results} and --csv {results}"))
    for command, named in commands:
        result = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path,
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {named}: the same file")
        assert "Traceback" not in result.stderr
        assert results.read_text() == "Results for: an earlier model\n"


def test_a_link_is_followed_and_a_fifo_is_written_to(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    cli_common.atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    with cli_common.atomic_path(link) as tmp:
        tmp.write_text("newer")
    assert link.is_symlink() and real.read_text() == "newer"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    import threading

    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    cli_common.atomic_write_text(fifo, "through the pipe")
    reader.join(10)
    assert received == ["through the pipe"] and fifo.is_fifo()


def test_a_full_device_is_an_output_error_and_stays_a_device():
    full = Path("/dev/full")
    if not full.is_char_device():
        pytest.skip("no /dev/full character device")
    with pytest.raises(OutputError, match="/dev/full"):
        cli_common.atomic_write_text(full, "x" * 10)
    with pytest.raises(OutputError):
        with cli_common.atomic_path(full) as tmp:
            tmp.write_text("y")
    assert full.is_char_device()
    assert cli_common.check_output_path(full, "--json") == full


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EFBIG"])
def test_a_full_disk_while_streaming_into_atomic_path_names_the_file(tmp_path, code):
    """A disk that fills while the caller writes the temporary file (a streamed JSON manifest) is an
    OutputError naming the final path; the old file stays and no temporary file is left. Other
    errors of the caller's block pass through unchanged."""
    import errno

    path = tmp_path / "manifest.json"
    path.write_text("old")
    with pytest.raises(OutputError, match=rf"^{tmp_path}/manifest\.json: full$"):
        with cli_common.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError(getattr(errno, code), "full")
    with pytest.raises(OSError) as caught:
        with cli_common.atomic_path(path):
            raise OSError(errno.ENOENT, "an input is missing")
    assert not isinstance(caught.value, OutputError)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


HANGING_TEARDOWN = """
import atexit, sys, threading
sys.path.insert(0, {repo!r})
import tensorflow  # noqa: F401
import cli_common

atexit.register(threading.Event().wait)  # a teardown that never ends, as a stuck tf.data thread's

def main():
    print("partial result", flush=False)
    raise {error}("{message}")

cli_common.run_main(main)
"""


@pytest.mark.parametrize("error, message, code, last", [
    ("cli_common.UserError", "bad.jpg: not a readable image", 2, "error: bad.jpg: not a readable image"),
    ("cli_common.RunFailed", "a worker ended abruptly", 1, "error: a worker ended abruptly"),
    ("RuntimeError", "a bug", 1, "RuntimeError: a bug"),  # a crash: its traceback, then the exit
])
def test_a_script_with_tensorflow_exits_after_an_error_even_if_its_teardown_would_hang(tmp_path, error, message,
                                                                                        code, last):
    """A user error in a script that loaded TensorFlow: one line, its exit code, at once; the
    interpreter's teardown (which a stopped tf.data pipeline can block for ever) is not waited for,
    and what the script printed is flushed."""
    script = tmp_path / "script.py"
    script.write_text(HANGING_TEARDOWN.format(repo=str(Path(__file__).resolve().parents[1]), error=error,
                                              message=message))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == code
    assert run.stderr.strip().splitlines()[-1] == last
    assert run.stdout == "partial result\n"


def test_run_main_turns_a_full_standard_output_into_one_line(capsys):
    import errno

    def main():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as exit_:
        cli_common.run_main(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: writing the output failed (No space left on device); standard output is incomplete\n"


def test_a_name_near_the_length_limit_is_written(tmp_path):
    """A 250-character file name is legal (255 bytes); the writers' temporary names add 14 characters
    and failed with 'File name too long'."""
    import dataset_writer

    name = "a" * 246 + ".jpg"
    cli_common.atomic_write_text(tmp_path / name, "x")
    with cli_common.atomic_path(tmp_path / ("b" * 246 + ".txt")) as tmp:
        tmp.write_text("y")
    dataset_writer.atomic_write_bytes(str(tmp_path / "sub" / name), b"z")
    assert (tmp_path / name).read_text() == "x" and (tmp_path / ("b" * 246 + ".txt")).read_text() == "y"
    assert (tmp_path / "sub" / name).read_bytes() == b"z"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []
