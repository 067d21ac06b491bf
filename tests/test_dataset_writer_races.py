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
