"""Exports that share a folder, output-side write errors, the journal on a nearly full disk and the
messages around them (dataset_writer; docs/SCALE.md §1-2)."""

import errno
import fcntl
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dataset_writer
from cli_common import UserError
from dataset_writer import WorkUnit

PARAMS = {"seed": 3}


def toy_bytes(rel: str) -> bytes:
    """The content of each output, worked out without the exporter: its own relative path, repeated."""
    return rel.encode() * 40


def toy_render(unit: WorkUnit, *, hook=None):
    if hook is not None:
        hook(unit)
    return [(rel, toy_bytes(rel)) for rel in unit.outputs]


def toy_units(names=("a", "b", "c", "d", "e"), folders=("f1", "f2")):
    return [WorkUnit(f"src/{name}.jpg", tuple(f"{folder}/{name}.bin" for folder in folders), name)
            for name in names]


def run_export(out, units=None, hook=None, workers=1, shard=None):
    return dataset_writer.export(units or toy_units(), functools.partial(toy_render, hook=hook), out,
                                 generator="test", kind="toy", params=PARAMS, sources=[], workers=workers,
                                 progress=False, shard=shard)


def hold_journal(out: Path, name: str = ".journal-otherhost-4242-abcd0123.jsonl") -> int:
    """A journal that a live export holds, as the exporter itself holds its own (flock)."""
    fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# --------------------------------------------------------------------------------------------
# A second export into the same folder leaves a live export's temporary files alone


def test_an_export_leaves_the_temporaries_of_a_live_export_alone(tmp_path):
    out = tmp_path / "out"
    run_export(out, units=toy_units(("a",)))
    live_tmp = out / "f1" / ".c.bin.0000beef.tmp"  # what a running export's worker is writing now
    live_tmp.write_bytes(b"half of c")
    fd = hold_journal(out)
    try:
        result = run_export(out)  # no --shard: it used to delete every temporary file in the tree
        assert live_tmp.read_bytes() == b"half of c"
        assert result.concurrent == 1
    finally:
        os.close(fd)  # that export has ended (killed: its journal stays, empty, and nobody holds it)
    result = run_export(out)  # nobody else runs: the leftovers of the dead export go
    assert not live_tmp.exists() and result.concurrent == 0
    assert not list(out.rglob("*.tmp")) and not dataset_writer.journal_files(out)
    assert dataset_writer.verify(out).ok


def test_a_shard_leaves_the_temporaries_of_a_live_unsharded_export_alone(tmp_path):
    out = tmp_path / "out"
    run_export(out, units=toy_units(("a",)))
    live_tmp = out / "f2" / ".a.bin.0000beef.tmp"  # a.jpg is shard 0/2's: it used to delete this one
    live_tmp.write_bytes(b"half of a")
    fd = hold_journal(out)
    try:
        run_export(out, shard=(0, 2))
        assert live_tmp.read_bytes() == b"half of a"
    finally:
        os.close(fd)


def test_the_last_export_to_finish_removes_the_leftovers_it_left_alone_at_its_start(tmp_path):
    out = tmp_path / "out"
    run_export(out, units=toy_units(("a",)))
    stray = out / "f1" / ".c.bin.0000beef.tmp"
    stray.write_bytes(b"left by a killed run")
    held = [hold_journal(out)]

    def other_export_ends(unit):  # the other export finishes while this one renders
        if held:
            os.close(held.pop())

    result = run_export(out, hook=other_export_ends)
    assert result.concurrent == 1 and not held
    assert not stray.exists() and not list(out.rglob("*.tmp"))
    assert dataset_writer.verify(out).ok


def test_an_export_killed_beside_a_lone_one_leaves_no_temporary_once_the_lone_one_ends(tmp_path):
    """This export starts alone (nothing to leave alone); another starts beside it, writes a
    temporary file and is killed (its journal stays, unlocked). The export that finishes last folds
    that journal and removes the temporary: verify passes (an unexpected .tmp was left before)."""
    out = tmp_path / "out"
    run_export(out, units=toy_units(("a",)))
    stray = out / "f1" / ".c.bin.0000beef.tmp"
    started = []

    def another_export_killed(unit):
        if not started:
            started.append(hold_journal(out))
            stray.write_bytes(b"half an output of the killed export")
            os.close(started[0])  # killed: the lock is gone, the journal and its temporary stay

    result = run_export(out, hook=another_export_killed)
    assert result.concurrent == 0 and started
    assert not stray.exists() and not list(out.rglob("*.tmp"))
    assert dataset_writer.verify(out).ok


_SLOW_RENAMES = """
import functools, os, sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import dataset_writer, test_dataset_writer_races as t

real_replace = os.replace

def slow_replace(src, dst):
    if os.path.basename(dst).endswith(".bin"):
        time.sleep(0.03)  # an output's temporary file lives long, as on a slow or busy disk
    real_replace(src, dst)

os.replace = slow_replace
t.run_export({out!r}, units=t.toy_units(tuple(f"u{{i:03d}}" for i in range(80))))
print("done")
"""


def test_two_unsharded_exports_into_one_folder_both_finish(tmp_path):
    """The black-box report: a second export started without --shard while another runs deleted
    the running export's temporary files, which then failed (FileNotFoundError, blamed on a source
    image). Now both finish, and the tree is the one a single export writes."""
    repo = Path(dataset_writer.__file__).resolve().parent
    out = tmp_path / "out"
    script = _SLOW_RENAMES.format(repo=str(repo), tests=str(repo / "tests"), out=str(out))
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("f*/.*.tmp")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert list(out.glob("f*/.*.tmp")), "the first export never had a temporary file"
    units = toy_units(tuple(f"u{i:03d}" for i in range(80)))
    second = run_export(out, units=units)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0 and stdout.strip() == "done", stderr
    assert second.concurrent == 1
    run_export(tmp_path / "ref", units=units)
    ref = {p.relative_to(tmp_path / "ref").as_posix(): p.read_bytes() for p in (tmp_path / "ref").rglob("*")
           if p.is_file()}
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == ref and dataset_writer.verify(out).ok


def test_a_temporary_deleted_under_a_writer_is_blamed_on_the_concurrent_export(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_replace = os.replace

    def replace_after_another_process_deleted_it(src, dst):
        if os.path.basename(str(dst)) == "c.bin":
            os.unlink(src)  # as an export of an older version, started meanwhile, did
        return real_replace(src, dst)

    monkeypatch.setattr(dataset_writer.os, "replace", replace_after_another_process_deleted_it)
    with pytest.raises(UserError) as caught:
        run_export(out)
    temporary = f".c.bin.{os.getpid() & 0xFFFFFFFF:08x}.tmp"
    assert str(caught.value) == (
        f"{out}/f1/c.bin: its temporary file {temporary} was deleted before it was renamed into place (while "
        f"writing the outputs of src/c.jpg): another export (or another process) is writing {out} at the same "
        f"time; 2 of 5 image(s) are recorded as finished and kept: let the other export finish, or stop it, "
        f"then rerun the same command, which renders only the rest")


def test_an_unfinished_image_of_a_live_export_is_not_called_interrupted(tmp_path):
    out = tmp_path / "out"
    run_export(out, units=toy_units(("a",)))
    for folder in ("f1", "f2"):  # b: both written by the live export, not recorded yet; c: one of two
        (out / folder).mkdir(exist_ok=True)
        (out / folder / "b.bin").write_bytes(toy_bytes(f"{folder}/b.bin"))
    (out / "f1" / "c.bin").write_bytes(toy_bytes("f1/c.bin"))
    fd = hold_journal(out)
    try:
        result = run_export(out)
    finally:
        os.close(fd)
    assert result.reasons == {"unrecorded": 1, "finished": 1}
    assert result.rerender_note == (
        ", 1 image(s) finished that an interrupted run, or another export writing this folder at the same time, "
        "had partly written, 1 image(s) rendered again because their files existed but were not recorded as "
        "finished (written by another export running into this folder at the same time, or by a run that "
        "stopped between writing and recording them)")


def test_a_narrower_run_beside_a_live_export_does_not_call_its_folders_abandoned(tmp_path):
    out = tmp_path / "out"

    def fail_on_c(unit):
        if unit.payload == "c":
            raise ValueError("cannot decode this toy image")

    with pytest.raises(UserError):  # an unfinished export of f1, f2, f3 (as if it were still running)
        run_export(out, units=toy_units(folders=("f1", "f2", "f3")), hook=fail_on_c)
    fd = hold_journal(out)
    try:
        result = run_export(out, units=toy_units(folders=("f1",)))
    finally:
        os.close(fd)
    assert result.pending_elsewhere == ["f2", "f3"] and result.running_at_end == 1
    assert result.shard_note == (
        "; the manifest stays incomplete: an earlier run also writes 2 folder(s) this run does not, not finished "
        "(f2, f3: another export still running into this folder may be writing them, or that run did not finish, "
        "or their files of changed source images were removed); rerun that export's command (its selection) to "
        "complete them if it is not running")


# --------------------------------------------------------------------------------------------
# Output-side write errors name the output, not the source image


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_an_output_that_cannot_be_written_is_named_not_the_source(tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    real_write = dataset_writer.atomic_write_bytes

    def refuse_c(path, data):
        if path.endswith("/c.bin"):
            folder, name = os.path.split(path)
            raise OSError(code, os.strerror(code), f"{folder}/.{name}.0000beef.tmp")
        real_write(path, data)

    monkeypatch.setattr(dataset_writer, "atomic_write_bytes", refuse_c)
    with pytest.raises(UserError) as caught:
        run_export(out)
    assert str(caught.value) == (
        f"{out}/f1/c.bin: cannot write this output file ({os.strerror(code)}) (while writing the outputs of "
        f"src/c.jpg); 2 of 5 image(s) are recorded as finished and kept: make that folder writable, then rerun "
        f"the same command, which renders only the rest")


# --------------------------------------------------------------------------------------------
# The journal on a nearly full disk


def _record(key: str) -> bytes:
    return (json.dumps([key, "d" * 64, [[f"f1/{key}", "e" * 64]]], separators=(",", ":")) + "\n").encode()


def test_a_short_journal_write_is_completed(tmp_path, monkeypatch):
    journal = dataset_writer._Journal(tmp_path)
    journal.add("a", "d" * 64, [("f1/a", "e" * 64)])
    real_write = os.write
    calls = []

    def short_first(fd, data):
        if fd == journal.fd and not calls:
            calls.append(len(data))
            return real_write(fd, bytes(data[:10]))  # the kernel took only ten bytes
        return real_write(fd, data)

    monkeypatch.setattr(dataset_writer.os, "write", short_first)
    journal.add("b", "d" * 64, [("f1/b", "e" * 64)])
    monkeypatch.undo()
    journal.add("c", "d" * 64, [("f1/c", "e" * 64)])
    journal.close()
    assert journal.path.read_bytes() == _record("a") + _record("b") + _record("c")
    assert [record[0] for record in dataset_writer.read_journal(journal.path)] == ["a", "b", "c"]
    assert journal.records == 3


def test_a_journal_write_cut_by_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
    journal = dataset_writer._Journal(tmp_path)
    journal.add("a", "d" * 64, [("f1/a", "e" * 64)])
    real_write = os.write

    def part_then_full(fd, data):
        if fd != journal.fd:
            return real_write(fd, data)
        if len(data) == len(_record("b")):
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dataset_writer.os, "write", part_then_full)
    with pytest.raises(UserError, match=r"cannot record finished work \(No space left on device\); the 1 image\(s\) "
                                        r"recorded so far are kept"):
        journal.add("b", "d" * 64, [("f1/b", "e" * 64)])
    monkeypatch.undo()
    assert journal.path.read_bytes() == _record("a") and journal.records == 1
    journal.add("c", "d" * 64, [("f1/c", "e" * 64)])  # space freed: the next record is whole
    journal.close()
    assert [record[0] for record in dataset_writer.read_journal(journal.path)] == ["a", "c"]


# --------------------------------------------------------------------------------------------
# Messages


def test_verify_does_not_count_the_manifests_temporary_as_an_output(tmp_path):
    out = tmp_path / "out"
    run_export(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False  # killed while the final manifest was written
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / ".manifest.json.k3j9x0qa.tmp").write_text('{"form')
    report = dataset_writer.verify(out)
    assert (report.unrecorded, report.unexpected, report.missing) == ([], [], [])


def test_an_out_that_is_a_file_or_a_broken_link_says_so(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError) as caught:
        run_export(afile)
    assert str(caught.value) == (f"{afile}: is a file; expected a folder to write into (a new one, or an "
                                 f"earlier export's): choose another --out")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(UserError) as caught:
        run_export(link)
    assert str(caught.value) == (f"{link}: is a broken symbolic link (to {tmp_path / 'gone'}, which does not "
                                 f"exist); expected a folder to write into: create its target, or choose another --out")
    assert not (tmp_path / "gone").exists()


def test_a_file_deleted_after_the_export_is_called_missing_not_interrupted(tmp_path):
    out = tmp_path / "out"
    run_export(out)
    (out / "f2" / "b.bin").unlink()
    result = run_export(out)
    assert (result.units_rendered, result.reasons) == (1, {"missing": 1})
    assert result.rerender_note == ", 1 image(s) rendered again because some of their files recorded as finished " \
                                   "were missing"
    assert dataset_writer.verify(out).ok


# --------------------------------------------------------------------------------------------
# A signal while an output is written (SIGTERM or Ctrl-C with --workers 1)



def test_a_signal_right_after_the_temporary_was_created_leaves_no_temporary(tmp_path, monkeypatch):
    """SIGTERM with --workers 1 (its handler raises SystemExit in the exporting process) as the
    temporary file has just been opened: it left an empty ``.<name>.<pid>.tmp`` three times in four."""
    real_open = os.open

    def open_then_signal(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if str(path).endswith(".tmp"):
            raise SystemExit(143)  # what the handler raises when the call returns
        return fd

    monkeypatch.setattr(dataset_writer.os, "open", open_then_signal)
    with pytest.raises(SystemExit):
        dataset_writer.atomic_write_bytes(str(tmp_path / "sub" / "x.bin"), b"data")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]
