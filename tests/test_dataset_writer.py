"""Generic export machinery: atomic writes, resume, manifest, verify, worker errors (BENCHMARK.md §2.7, §2.8)."""

import errno
import functools
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dataset_writer
import cli_common
from cli_common import UserError
from dataset_writer import WorkUnit

PARAMS = {"seed": 3, "format": "bin", "motion_backend": "numpy", "colour": "rgb", "param_set": "toy"}


def toy_bytes(folder: str, name: str, seed: int) -> bytes:
    """The content the toy render must produce, computed independently of the exporter."""
    return f"{seed}|{folder}|{name}".encode() * 50


def toy_render(unit: WorkUnit, *, seed: int, fail_on: str | None = None):
    if unit.name == fail_on:
        raise ValueError("cannot decode this toy image")
    return [(rel, toy_bytes(rel.split("/")[0], unit.payload, seed)) for rel in unit.outputs]


def toy_units(names=("a", "b", "c", "d", "e"), folders=("f1", "f2")):
    return [WorkUnit(f"src/{name}.jpg", tuple(f"{folder}/{name}.bin" for folder in folders), name)
            for name in names]


def run_export(out, units=None, workers=1, params=PARAMS, fail_on=None):
    render = functools.partial(toy_render, seed=params["seed"], fail_on=fail_on)
    return dataset_writer.export(units or toy_units(), render, out, generator="test", kind="toy",
                                 params=params, sources=["a.jpg"], source_root="src",
                                 workers=workers, progress=False)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_writes_files_and_manifest(tmp_path):
    result = run_export(tmp_path / "out")
    out = tmp_path / "out"
    assert (result.files_written, result.files_skipped, result.units_rendered) == (10, 0, 5)
    assert (out / "f2" / "c.bin").read_bytes() == toy_bytes("f2", "c", 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "toy" and manifest["params"] == PARAMS and manifest["complete"] is True
    assert manifest["folders"] == {"f1": 5, "f2": 5}
    assert manifest["source"] == {"root": "src", "files": ["a.jpg"]}
    assert {"numpy", "python", "opencv", "scipy", "pillow", "scikit-image"} <= set(manifest["versions"])
    expected = {f"{f}/{n}.bin": hashlib.sha256(toy_bytes(f, n, 3)).hexdigest()
                for f in ("f1", "f2") for n in "abcde"}
    assert manifest["files"] == expected
    assert not list(out.rglob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}


def test_one_and_two_workers_identical(tmp_path):
    run_export(tmp_path / "one", workers=1)
    run_export(tmp_path / "two", workers=2)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


def test_rerun_skips_without_rewriting(tmp_path):
    out = tmp_path / "out"
    run_export(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    result = run_export(out, workers=2)
    assert (result.files_written, result.files_skipped, result.units_skipped) == (0, 10, 5)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == mtimes


def test_resume_rerenders_incomplete_units_and_removes_temporaries(tmp_path):
    run_export(tmp_path / "ref")
    out = tmp_path / "out"
    run_export(out)
    (out / "f2" / "b.bin").unlink()
    (out / "f1" / "c.bin").write_bytes(b"half-written")  # rewritten because its unit is incomplete...
    (out / "f2" / "c.bin").unlink()
    stray = out / "f1" / ".d.bin.abcd_123.tmp"
    stray.write_bytes(b"partial")
    result = run_export(out)
    assert (result.units_rendered, result.files_written) == (2, 4)
    assert not stray.exists()
    assert tree(out) == tree(tmp_path / "ref")


def test_different_parameters_refused_equal_parameters_merged(tmp_path):
    out = tmp_path / "out"
    run_export(out, units=toy_units(folders=("f1",)))
    with pytest.raises(UserError, match=r"manifest\.json.*seed=3.*seed=4.*--seed.*new --out"):
        run_export(out, params={**PARAMS, "seed": 4})
    with pytest.raises(UserError, match=r"manifest\.json.*colour='rgb'.*'bgr-compat'"):
        run_export(out, params={**PARAMS, "colour": "bgr-compat"})
    run_export(out, units=toy_units(folders=("f2",)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["folders"] == {"f1": 5, "f2": 5} and len(manifest["files"]) == 10
    assert dataset_writer.verify(out).ok


def test_non_empty_folder_without_manifest_refused(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="holiday.jpg.*new --out"):
        run_export(tmp_path)


def test_unwritable_output_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    with pytest.raises(UserError, match=r"file[/\\]out.*cannot create"):
        run_export(blocker / "out")


@pytest.mark.parametrize("workers", [1, 2])
def test_render_error_names_the_unit(tmp_path, workers):
    with pytest.raises(UserError, match=r"src/c\.jpg: ValueError: cannot decode this toy image"):
        run_export(tmp_path / "out", workers=workers, fail_on="src/c.jpg")


def test_verify_names_missing_altered_unexpected(tmp_path):
    out = tmp_path / "out"
    run_export(out)
    report = dataset_writer.verify(out)
    assert report.ok and report.checked == 10
    (out / "f1" / "a.bin").unlink()
    (out / "f2" / "e.bin").write_bytes(b"tampered")
    (out / "f2" / "extra.bin").write_bytes(b"?")
    report = dataset_writer.verify(out)
    assert not report.ok
    assert (report.missing, report.altered, report.unexpected) == (["f1/a.bin"], ["f2/e.bin"], ["f2/extra.bin"])
    lines = []
    dataset_writer.print_verify_report(report, stream=type("S", (), {"write": lambda s, t: lines.append(t)})())
    text = "".join(lines)
    assert f"missing: {out / 'f1' / 'a.bin'}" in text and f"altered: {out / 'f2' / 'e.bin'}" in text


def test_verify_passes_a_tree_a_file_manager_has_shown(tmp_path):
    """Finder's .DS_Store and ._ companions, Explorer's Thumbs.db and desktop.ini: written by merely
    opening the folders, they failed verify as unexpected; a file of another name still does."""
    out = tmp_path / "out"
    run_export(out)
    for rel in (".DS_Store", "f1/.DS_Store", "f1/._a.bin", "f2/Thumbs.db", "f2/desktop.ini"):
        (out / rel).write_bytes(b"\0file manager")
    assert dataset_writer.verify(out).ok
    (out / "f2" / "DS_Store").write_bytes(b"?")
    assert dataset_writer.verify(out).unexpected == ["f2/DS_Store"]


def test_verify_without_manifest_is_user_error(tmp_path):
    with pytest.raises(UserError, match="manifest.json: missing"):
        dataset_writer.verify(tmp_path)


def test_output_names_and_folders():
    assert dataset_writer.output_file_name("test_0001_aligned.jpg", "jpg") == "test_0001_aligned.jpg"
    assert dataset_writer.output_file_name("test_0001_aligned.jpg", "png") == "test_0001_aligned.png"
    assert dataset_writer.corrupted_folder("contrast_plus", 3) == "rafdb.test.contrast_plus.3"


def test_export_modules_do_not_import_tensorflow():
    code = ("import sys, dataset_writer, cli_common\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


# --------------------------------------------------------------------------------------------
# Resume against changed sources and versions


def source_render(unit: WorkUnit):
    """Each output is its folder name, '|', then the bytes of the unit's source file."""
    data = Path(unit.payload).read_bytes()
    return [(rel, rel.split("/")[0].encode() + b"|" + data) for rel in unit.outputs]


def source_units(src: Path, names=("a", "b", "c")):
    return [WorkUnit(str(src / f"{name}.jpg"), (f"f1/{name}.bin", f"f2/{name}.bin"), str(src / f"{name}.jpg"),
                     inputs=(str(src / f"{name}.jpg"),)) for name in names]


def write_sources(src: Path, tag: bytes, names=("a", "b", "c")):
    src.mkdir(exist_ok=True)
    for name in names:
        (src / f"{name}.jpg").write_bytes(tag + name.encode())


def source_export(out, src, workers=1, force_rerender=False):
    return dataset_writer.export(source_units(src), source_render, out, generator="test", kind="toy",
                                 params=PARAMS, sources=["a.jpg", "b.jpg", "c.jpg"], workers=workers,
                                 progress=False, force_rerender=force_rerender)


def test_manifest_records_source_digests(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    manifest = json.loads((out / "manifest.json").read_text())
    # Per unit: SHA-256 over the hex SHA-256 of its one input file.
    expected = {f"{n}.jpg": hashlib.sha256(hashlib.sha256(b"v1-" + n.encode()).hexdigest().encode()).hexdigest()
                for n in "abc"}
    assert manifest["units"] == expected
    assert (out / "f2" / "b.bin").read_bytes() == b"f2|v1-b"


@pytest.mark.parametrize("workers", [1, 3])
def test_changed_source_is_rendered_again_unchanged_skipped(tmp_path, workers):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    result = source_export(out, src, workers=workers)  # nothing changed: all skipped, nothing rewritten
    assert (result.units_skipped, result.units_rendered, result.units_stale) == (3, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == mtimes

    (src / "b.jpg").write_bytes(b"v2-b")  # e.g. the sample tree regenerated with another seed
    result = source_export(out, src, workers=workers)
    assert (result.units_skipped, result.units_rendered, result.units_stale) == (2, 1, 1)
    assert (out / "f1" / "b.bin").read_bytes() == b"f1|v2-b" and (out / "f2" / "b.bin").read_bytes() == b"f2|v2-b"
    assert (out / "f1" / "a.bin").stat().st_mtime_ns == mtimes[out / "f1" / "a.bin"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["f1/b.bin"] == hashlib.sha256(b"f1|v2-b").hexdigest()
    assert manifest["units"]["b.jpg"] == hashlib.sha256(hashlib.sha256(b"v2-b").hexdigest().encode()).hexdigest()
    assert dataset_writer.verify(out).ok


def test_manifest_without_unit_digests_renders_everything(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["units"]  # as written before the per-unit digests existed
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = source_export(out, src)
    assert (result.units_rendered, result.units_stale) == (3, 3)


@pytest.mark.parametrize("field, value, item", [
    (("versions", "numpy"), "0.0.1", "numpy version"),
    (("generator", "version"), "v0-old", r"generator version \(git describe\)"),
])
def test_other_versions_refused_unless_force_rerender(tmp_path, field, value, item):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest[field[0]][field[1]] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "f1" / "a.bin").write_bytes(b"made by the old version")
    with pytest.raises(UserError, match=rf"manifest\.json: .*{item} '{value}'.*new --out.*--force-rerender"):
        source_export(out, src)
    result = source_export(out, src, force_rerender=True)
    assert (result.units_rendered, result.units_skipped) == (3, 0)
    assert (out / "f1" / "a.bin").read_bytes() == b"f1|v1-a"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[field[0]][field[1]] != value and dataset_writer.verify(out).ok
    assert source_export(out, src).units_skipped == 3  # same versions now


def test_force_rerender_refuses_to_keep_old_version_files_it_would_not_rewrite(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["versions"]["numpy"] = "0.0.1"
    (out / "manifest.json").write_text(json.dumps(manifest))
    smaller = source_units(src, names=("a", "b"))
    with pytest.raises(UserError, match=r"2 file\(s\) made with numpy version '0\.0\.1'.*f1/c\.bin.*new --out"):
        dataset_writer.export(smaller, source_render, out, generator="test", kind="toy", params=PARAMS,
                              sources=["a.jpg"], workers=1, progress=False, force_rerender=True)


def test_run_args_shared_by_both_exports():
    import argparse

    parser = argparse.ArgumentParser()
    dataset_writer.add_run_args(parser)
    args = parser.parse_args([])
    assert (args.workers, args.quiet, args.force_rerender) == (0, False, False)
    assert parser.parse_args(["--workers", "3", "--quiet", "--force-rerender"]).workers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "-1"])


def test_check_writable_file(tmp_path):
    assert dataset_writer.check_writable_file(tmp_path / "new" / "x.gif") == tmp_path / "new" / "x.gif"
    with pytest.raises(UserError, match=r"--out .*: is a folder"):
        dataset_writer.check_writable_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--out .*file[/\\]x\.gif: cannot create the folder"):
        dataset_writer.check_writable_file(tmp_path / "file" / "x.gif")


def test_parameter_tables_digest_follows_the_tables():
    import types

    import numpy as np

    def module(**constants):
        return types.SimpleNamespace(**constants)

    base = module(SIGMA=(0.08, 0.12), MODE="water", TARGETS=np.array([[1.0, 2.0]]), X_HELP="text",
                  REGISTRY={"f": print}, _PRIVATE=1, lower=2)
    lines = ["MODE='water'", "SIGMA=(0.08, 0.12)", "TARGETS=('float64', ((1.0, 2.0),))"]
    assert dataset_writer.parameter_tables_digest(base) == hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    same = module(SIGMA=(0.08, 0.12), MODE="water", TARGETS=np.array([[1.0, 2.0]]), X_HELP="other text")
    assert dataset_writer.parameter_tables_digest(same) == dataset_writer.parameter_tables_digest(base)
    changed = module(SIGMA=(0.08, 0.13), MODE="water", TARGETS=np.array([[1.0, 2.0]]))
    assert dataset_writer.parameter_tables_digest(changed) != dataset_writer.parameter_tables_digest(base)


# --------------------------------------------------------------------------------------------
# Resume from the journal: a killed or disk-full run keeps the work it finished

RENDERED: list[str] = []


def counting_render(unit: WorkUnit, *, seed: int):
    RENDERED.append(unit.payload)
    return toy_render(unit, seed=seed)


def many_units(n=25):
    return toy_units(names=tuple(f"u{i:02d}" for i in range(n)), folders=("f1", "f2", "f3"))


def count_export(out, units, workers=1):
    RENDERED.clear()
    return dataset_writer.export(units, functools.partial(counting_render, seed=3), out, generator="test",
                                 kind="toy", params=PARAMS, sources=["a.jpg"], source_root="src",
                                 workers=workers, progress=False)


KILL_SCRIPT = """
import functools, os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
import dataset_writer, test_dataset_writer as t

def render(unit, *, seed):
    if unit.payload == {victim!r}:
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` would, in the middle of the export
    return t.toy_render(unit, seed=seed)

dataset_writer.export(t.many_units(), functools.partial(render, seed=3), {out!r}, generator="test",
                      kind="toy", params=t.PARAMS, sources=["a.jpg"], source_root="src", workers=1,
                      progress=False)
"""


def test_rerun_after_sigkill_at_44_percent_renders_only_the_remaining_56_percent(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    code = KILL_SCRIPT.format(root=str(root), tests=str(root / "tests"), victim="u11", out=str(out))
    process = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True)
    assert process.returncode == -9
    # 11 of 25 units (44 %) finished; the manifest on disk does not know them yet, the journal does.
    assert not json.loads((out / "manifest.json").read_text())["units"]
    assert len(dataset_writer.journal_files(out)) == 1
    # verify: incomplete, but the 33 journaled files (11 units x 3) are checked, not "unexpected"
    report = dataset_writer.verify(out)
    assert not report.complete and not report.ok and report.journaled == 33 and report.checked == 33
    assert (report.missing, report.altered, report.unexpected, report.unrecorded) == ([], [], [], [])
    # a file written just before the kill (no record yet) and a temporary one: "not recorded yet", not
    # failures to delete; a file outside the export's folders stays unexpected
    (out / "f1" / "u11.bin").write_bytes(b"written, not recorded")
    (out / "f2" / ".u11.bin.0000abcd.tmp").write_bytes(b"half")
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("a user's file")
    report = dataset_writer.verify(out)
    assert report.unrecorded == ["f1/u11.bin", "f2/.u11.bin.0000abcd.tmp"]
    assert report.unexpected == ["notes/mine.txt"] and not report.missing and not report.altered
    printed = io.StringIO()
    dataset_writer.print_verify_report(report, printed)
    assert "2 file(s) in its output folders are not recorded yet" in printed.getvalue()
    assert "unexpected: " + str(out / "notes" / "mine.txt") in printed.getvalue()
    assert "f1/u11.bin" not in printed.getvalue()
    # the verdict says why it fails when nothing is missing or altered (a bare "FAILED: ... 0 missing,
    # 0 altered" puzzled)
    assert f"FAILED (the export has not finished): 33 file(s) checked in {out}" in printed.getvalue()
    for path in (out / "f1" / "u11.bin", out / "f2" / ".u11.bin.0000abcd.tmp", out / "notes" / "mine.txt"):
        path.unlink()
    (out / "notes").rmdir()
    first = sorted(p for p in out.rglob("*.bin"))[0]
    original = first.read_bytes()
    first.write_bytes(b"tampered")
    assert dataset_writer.verify(out).altered == [first.relative_to(out).as_posix()]
    first.write_bytes(original)
    result = count_export(out, many_units())
    assert sorted(RENDERED) == [f"u{i:02d}" for i in range(11, 25)]  # 14 of 25 = 56 %
    assert (result.units_skipped, result.units_rendered, result.files_written) == (11, 14, 42)
    assert result.units_stale == 0 and result.rerender_note == ""  # no "source changed"
    count_export(tmp_path / "ref", many_units())
    assert tree(out) == tree(tmp_path / "ref")  # manifests included
    assert dataset_writer.verify(out).ok and not dataset_writer.journal_files(out)


def test_verify_of_an_export_killed_before_its_first_record_names_nothing_unexpected(tmp_path):
    """Killed while rendering its first unit: no file is recorded yet, but the manifest lists the
    folders the run writes, so a file it had put there is "not recorded yet", not unexpected."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    code = KILL_SCRIPT.format(root=str(root), tests=str(root / "tests"), victim="u00", out=str(out))
    assert subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True).returncode == -9
    assert json.loads((out / "manifest.json").read_text())["pending_folders"] == ["f1", "f2", "f3"]
    (out / "f1").mkdir(exist_ok=True)
    (out / "f1" / "u00.bin").write_bytes(b"written as it was killed")
    report = dataset_writer.verify(out)
    assert report.unrecorded == ["f1/u00.bin"] and report.unexpected == [] and not report.ok
    count_export(out, many_units())
    assert "pending_folders" not in json.loads((out / "manifest.json").read_text())
    assert dataset_writer.verify(out).ok


def test_disk_full_keeps_finished_units(tmp_path, monkeypatch):
    out = tmp_path / "out"
    writes = []
    real_write = dataset_writer.atomic_write_bytes

    def write_until_full(path, data):
        if len(writes) == 3 * 9 + 2:  # units 0..8 complete, the 10th unit fails on its third file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        writes.append(path)
        real_write(path, data)

    monkeypatch.setattr(dataset_writer, "atomic_write_bytes", write_until_full)
    # the output folder is named (its disk is full), not the innocent source file, and the remedy fits
    with pytest.raises(UserError, match=rf"^{out}: No space left on device \(while writing the outputs of [^)]*u09[^)]*\); "
                                        r"9 of 25 image\(s\) are recorded as finished and kept: free space on that "
                                        r"disk, then rerun the same command, which renders only the rest$"):
        count_export(out, many_units())
    monkeypatch.setattr(dataset_writer, "atomic_write_bytes", real_write)
    result = count_export(out, many_units())
    assert sorted(RENDERED) == [f"u{i:02d}" for i in range(9, 25)]
    assert result.reasons == {"finished": 1}  # u09: two of its three files had been written
    assert "1 image(s) finished that an interrupted run had partly written" in result.rerender_note
    count_export(tmp_path / "ref", many_units())
    assert tree(out) == tree(tmp_path / "ref") and dataset_writer.verify(out).ok


def test_torn_last_journal_line_is_ignored(tmp_path):
    out = tmp_path / "out"
    count_export(out, many_units(4))
    manifest = json.loads((out / "manifest.json").read_text())
    # A dead run's journal: two whole records (u00 and u01) and a record torn by the crash (u02).
    lines = [json.dumps([f"u0{i}.jpg", manifest["units"][f"u0{i}.jpg"],
                         [[f"{f}/u0{i}.bin", manifest["files"][f"{f}/u0{i}.bin"]] for f in ("f1", "f2", "f3")]])
             for i in range(3)]
    del manifest["units"]["u00.jpg"], manifest["units"]["u01.jpg"], manifest["units"]["u02.jpg"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    dead = out / ".journal-host-1-abcd1234.jsonl"
    dead.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    assert [r[0] for r in dataset_writer.read_journal(dead)] == ["u00.jpg", "u01.jpg"]
    result = count_export(out, many_units(4))
    assert RENDERED == ["u02"] and result.reasons == {"unrecorded": 1}
    assert "were never recorded as finished" in result.rerender_note and dataset_writer.verify(out).ok


def test_journal_records_and_manifest_entries_outside_the_tree_are_not_taken(tmp_path):
    out = tmp_path / "out"
    count_export(out, many_units(3))
    manifest = json.loads((out / "manifest.json").read_text())
    sha = manifest["files"]["f1/u00.bin"]
    dead = out / ".journal-host-1-abcd1234.jsonl"
    records = [["u00.jpg", "d0", [["f1/u00.bin", sha]]],          # well formed
               ["u01.jpg", "d1", [["../victim.txt", sha]]],       # leaves the tree
               ["u02.jpg", "d2", [["/etc/victim", sha]]],         # absolute
               ["u03.jpg", "d3", [["f1/./u03.bin", sha]]],        # a '.' part
               ["u04.jpg", "d4", [["f1/u04.bin", "not-a-sha"]]]]  # no SHA-256
    dead.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert [record[0] for record in dataset_writer.read_journal(dead)] == ["u00.jpg"]
    # a manifest naming a file outside the tree is refused by name before anything is done
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    manifest["files"]["../victim.txt"] = sha
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"manifest\.json: the 'files' table names '\.\./victim\.txt', which is not "
                                        r"a path inside the tree"):
        count_export(out, many_units(3))
    assert victim.read_text() == "keep me"
    assert [dataset_writer.is_tree_path(p) for p in ("a/b.jpg", "a", "a//b", "", "a/..", "/a", "a/b/")] == \
        [True, True, False, False, False, False, False]


# --------------------------------------------------------------------------------------------
# Shards (BENCHMARK.md §11.6): N concurrent shard exports = one export


def test_parse_shard_and_split():
    assert dataset_writer.parse_shard("2/3") == (2, 3) and dataset_writer.parse_shard("0/1") == (0, 1)
    for bad in ("3/3", "1/0", "-1/2", "a/b", "1", "1/\uff13"):  # the last: a full-width 3, not ASCII
        with pytest.raises(Exception, match="i/N"):
            dataset_writer.parse_shard(bad)
    units = toy_units(names=("e", "a", "d", "b", "c", "f", "g"))  # listing order must not matter
    split = [[unit.payload for unit in dataset_writer.shard_units(units, (i, 3))] for i in range(3)]
    assert split == [["a", "d", "g"], ["b", "e"], ["c", "f"]]  # round robin over the sorted keys


def test_shards_one_after_another_complete_the_manifest(tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    units = many_units(7)
    results = []
    for index in (2, 0, 1):
        RENDERED.clear()
        results.append(dataset_writer.export(units, functools.partial(counting_render, seed=3), out,
                                             generator="test", kind="toy", params=PARAMS, sources=["a.jpg"],
                                             source_root="src", workers=1, progress=False, shard=(index, 3)))
        assert json.loads((out / "manifest.json").read_text())["complete"] is (index == 1)
        assert not dataset_writer.verify(out).ok or index == 1
    assert [r.units for r in results] == [2, 3, 2] and [r.complete for r in results] == [False, False, True]
    assert "; shard 1/3: the manifest is now complete" == results[-1].shard_note
    count_export(ref, units)
    assert tree(out) == tree(ref)


def _shard_export(out, units, index, count):
    return dataset_writer.export(units, functools.partial(counting_render, seed=3), out, generator="test",
                                 kind="toy", params=PARAMS, sources=["a.jpg"], source_root="src", workers=1,
                                 progress=False, shard=(index, count))


def test_a_shard_that_finds_the_manifest_completed_by_another_says_so(tmp_path, monkeypatch):
    # Two shards ending together: shard 0 closes its journal, shard 1 takes the tree lock first and
    # folds both journals (complete); shard 0 then finds the manifest complete. Only one may claim it.
    out = tmp_path / "out"
    units = many_units(6)
    close = dataset_writer._Journal.close
    other, started = [], []

    def close_then_run_the_other_shard(journal):
        close(journal)
        if not started:
            started.append(True)
            other.append(_shard_export(out, units, 1, 2))

    monkeypatch.setattr(dataset_writer._Journal, "close", close_then_run_the_other_shard)
    first = _shard_export(out, units, 0, 2)
    assert other[0].complete and other[0].shard_note == "; shard 1/2: the manifest is now complete"
    assert first.complete
    assert first.shard_note == "; shard 0/2: the manifest was already complete (another run completed it)"
    assert dataset_writer.verify(out).ok


def test_a_manifest_renamed_in_between_the_read_and_the_listing_is_not_taken_for_foreign_files(
        tmp_path, monkeypatch):
    # A shard starting into a new folder reads no manifest; a concurrent shard renames its manifest in
    # before the listing. The folder is that export's, not foreign data.
    out = tmp_path / "out"
    run_export(out)
    read = dataset_writer.read_manifest
    calls = []

    def first_read_before_the_rename(folder):
        calls.append(folder)
        return None if len(calls) == 1 else read(folder)

    monkeypatch.setattr(dataset_writer, "read_manifest", first_read_before_the_rename)
    manifest = dataset_writer.check_output_dir(out, kind="toy", params=PARAMS)
    assert manifest is not None and manifest["kind"] == "toy" and len(calls) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not empty and has no manifest.json.*holiday.jpg"):
        dataset_writer.check_output_dir(tmp_path / "foreign", kind="toy", params=PARAMS)


def test_a_shard_names_the_shards_whose_images_are_not_all_recorded(tmp_path):
    """Shard 1 of 2 finishes after shard 0, but a source image of shard 0 changed in between: the
    manifest stays incomplete and shard 1's summary names shard 0 (it said the manifest completes
    when the last shard finishes, which had happened); rerunning shard 0 completes it."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    units = []
    for name in ("a", "b", "c", "d"):
        (src / f"{name}.jpg").write_bytes(name.encode())
        units.append(WorkUnit(f"src/{name}.jpg", (f"f1/{name}.bin",), name, (str(src / f"{name}.jpg"),)))

    def shard_run(index):
        return dataset_writer.export(units, functools.partial(toy_render, seed=3), out, generator="test", kind="toy",
                                     params=PARAMS, sources=[], source_root=str(src), workers=1, progress=False,
                                     shard=(index, 2))

    assert shard_run(0).shard_note.endswith("the manifest completes when shard(s) 1/2 finish (still running, or "
                                            "ended without recording every image: failed, or a source image "
                                            "changed since; rerun such a shard)")
    (src / "a.jpg").write_bytes(b"changed")  # a and c are shard 0's (every 2nd key from the first)
    second = shard_run(1)
    assert not second.complete and "the manifest completes when shard(s) 0/2 finish" in second.shard_note
    assert shard_run(0).shard_note == "; shard 0/2: the manifest is now complete"


def test_a_changed_source_leaves_no_stale_file_in_the_folders_of_another_selection(tmp_path):
    """A tree filled by two selections (folder f1, then f2: say imagenet-extra, then face). Source a
    changes; the f1 export renders a again and records a's new digest, so the f2 export skipped a and
    kept f2/a.bin made from the old picture (verify and the evaluations passed it). The f1 run now
    removes f2/a.bin, leaves the manifest incomplete naming f2, and the f2 export renders a again:
    the tree equals a fresh one of the new sources."""
    def make_units(src, folder):
        return [WorkUnit(f"src/{name}.jpg", (f"{folder}/{name}.bin",), name, (str(src / f"{name}.jpg"),))
                for name in ("a", "b", "c")]

    def render(unit):  # the output depends on the source bytes
        return [(rel, Path(unit.inputs[0]).read_bytes() + rel.encode()) for rel in unit.outputs]

    def run(out, src, folder):
        return dataset_writer.export(make_units(src, folder), render, out, generator="test", kind="toy",
                                     params=PARAMS, sources=[], source_root=str(src), workers=1, progress=False)

    src, out, fresh = tmp_path / "src", tmp_path / "out", tmp_path / "fresh"
    src.mkdir()
    for name in "abc":
        (src / f"{name}.jpg").write_bytes(name.encode())
    run(out, src, "f1")
    run(out, src, "f2")
    (src / "a.jpg").write_bytes(b"new a")
    first = run(out, src, "f1")
    assert (first.units_rendered, first.stale_removed, first.complete) == (1, ["f2/a.bin"], False)
    assert not (out / "f2/a.bin").exists() and (first.stale_folders, first.pending_elsewhere) == (["f2"], [])
    assert first.shard_note == ("; the manifest stays incomplete: 1 folder(s) of other selections lost their files "
                                "of changed source images (f2): rerun the export(s) that write them")
    assert not dataset_writer.verify(out).ok
    second = run(out, src, "f2")
    assert second.units_rendered == 1 and second.complete
    assert (out / "f2/a.bin").read_bytes() == b"new af2/a.bin"
    run(fresh, src, "f1")
    run(fresh, src, "f2")
    assert tree(out) == tree(fresh) and dataset_writer.verify(out).ok


def test_shards_and_reruns_that_spell_the_source_folder_otherwise_keep_the_manifest_bytes(tmp_path):
    """The manifest's source root is the first run's spelling: a shard that reaches the source by
    another path (a link, another mount) and a no-op rerun spelled otherwise leave it as it was, so
    the sharded tree equals the single export byte for byte."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    units = many_units(6)
    for index, root in ((0, "src"), (1, "/mnt/node7/src")):
        dataset_writer.export(units, functools.partial(counting_render, seed=3), out, generator="test", kind="toy",
                              params=PARAMS, sources=["a.jpg"], source_root=root, workers=1, progress=False,
                              shard=(index, 2))
    count_export(ref, units)
    assert tree(out) == tree(ref)
    before = (out / "manifest.json").read_bytes()
    dataset_writer.export(units, functools.partial(counting_render, seed=3), out, generator="test", kind="toy",
                          params=PARAMS, sources=["a.jpg"], source_root="./src", workers=1, progress=False)
    assert (out / "manifest.json").read_bytes() == before
    assert json.loads(before)["source"]["root"] == "src"


def test_a_shard_with_another_work_list_is_refused_while_the_export_is_unfinished(tmp_path):
    """Shards must share the whole list: one with fewer units (other --severities, say) or another N
    would mark the manifest complete over work the others do not do."""
    out = tmp_path / "out"

    def shard_run(units, shard):
        return dataset_writer.export(units, functools.partial(counting_render, seed=3), out, generator="test",
                                     kind="toy", params=PARAMS, sources=["a.jpg"], source_root="src",
                                     workers=1, progress=False, shard=shard)

    shard_run(many_units(6), (0, 2))
    for units, shard in ((many_units(4), (1, 2)), (many_units(6), (1, 3))):
        with pytest.raises(UserError, match=r"--shard 1/\d: .* unfinished export split into 2 shard\(s\) whose work list "
                                            r"differs"):
            shard_run(units, shard)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    assert shard_run(many_units(6), (1, 2)).complete  # the same list: accepted, and it completes
    assert "shard_plan" not in json.loads((out / "manifest.json").read_text())


def shard_cli(script, sample_tree, out, extra, shard=None):
    argv = [sys.executable, str(Path(__file__).resolve().parents[1] / script), "export", "--rafdb", str(sample_tree),
            "--out", str(out), "--workers", "1", "--quiet", *extra]
    return argv + (["--shard", shard] if shard else [])


@pytest.mark.parametrize("script, extra", [
    ("rafdb_aug_dataset.py", ["--corruptions", "gaussian_noise,contrast", "--severities", "1,4"]),
    ("rafdb_perturb_dataset.py", ["--perturbations", "p_gaussian_noise"]),
])
def test_three_concurrent_shard_processes_equal_one_export(sample_tree, tmp_path, script, extra):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = [subprocess.Popen(shard_cli(script, sample_tree, tmp_path / "shards", extra, f"{i}/3"), cwd=root,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(3)]
    single = subprocess.run(shard_cli(script, sample_tree, tmp_path / "single", extra), cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    assert sum("the manifest is now complete" in err for err in errors) >= 1
    shards, one = tree(tmp_path / "shards"), tree(tmp_path / "single")
    assert len(one) > 80 and shards.keys() == one.keys()
    assert shards == one  # every file, and the manifest, byte for byte
    assert json.loads(one["manifest.json"])["complete"] is True
    verify = subprocess.run([sys.executable, str(root / script), "verify", "--out", str(tmp_path / "shards"),
                             "--quiet"], cwd=root, env=env, capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout


# --------------------------------------------------------------------------------------------
# Speed without byte changes (docs/SCALE.md §3): no generator for corruptions that draw nothing,
# per-size tables built once in the parent before the pool forks.


def _face(grey: bool):
    import numpy as np

    face = np.random.default_rng(11).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    face[20:80, 30:70] //= 3  # some structure, so the blurs and contrast have edges to act on
    return face[:, :, 0].copy() if grey else face


@pytest.mark.parametrize("grey", [False, True])
def test_deterministic_corruptions_draw_nothing_so_no_generator_changes_no_byte(grey):
    import corruptions
    from cli_common import item_rng

    face = _face(grey)
    for name in corruptions.DETERMINISTIC:
        for severity in corruptions.SEVERITIES:
            rng = item_rng(0, dataset_writer.RAFDB_C_KIND, name, severity, "test_0001_aligned.jpg")
            before = rng.bit_generator.state
            reference = corruptions.corrupt(face, name, severity, rng)
            # The real generator was not advanced: the corruption draws nothing from it ...
            assert rng.bit_generator.state == before, (name, severity)
            # ... and the stand-in, which raises on any use, gives the same array.
            assert corruptions.corrupt(face, name, severity, dataset_writer.NO_DRAWS).tobytes() == \
                reference.tobytes(), (name, severity)


def test_no_draws_stand_in_raises_for_a_corruption_that_draws():
    import corruptions

    assert "gaussian_noise" not in corruptions.DETERMINISTIC
    with pytest.raises(RuntimeError, match="DETERMINISTIC"):
        corruptions.corrupt(_face(False), "gaussian_noise", 3, dataset_writer.NO_DRAWS)


@pytest.mark.parametrize("name", ["zoom_blur", "contrast", "gaussian_noise", "spatter"])
def test_corrupted_bytes_equal_the_encoded_corruption_with_the_item_generator(name):
    import corruptions
    import rafdb_dataset
    from cli_common import item_rng

    face = _face(False)
    for severity in (1, 5):
        rng = item_rng(7, "rafdb-c", name, severity, "test_0002_aligned.jpg")
        expected = rafdb_dataset.encode_image(corruptions.corrupt(face, name, severity, rng), "jpg")
        assert dataset_writer.corrupted_bytes(face, "test_0002_aligned.jpg", name, severity, seed=7) == expected


def pid_render(unit: WorkUnit, *, log: str):
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()} {unit.key}\n")
    return [(rel, toy_bytes(rel.split("/")[0], unit.payload, 3)) for rel in unit.outputs]


@pytest.mark.parametrize("warm_up", [False, True])
def test_warm_up_renders_one_unit_in_the_parent_and_changes_no_file(tmp_path, warm_up):
    log = tmp_path / "calls.log"
    dataset_writer.export(toy_units(), functools.partial(pid_render, log=str(log)), tmp_path / "out",
                          generator="test", kind="toy", params=PARAMS, sources=["a.jpg"], workers=2,
                          progress=False, warm_up=warm_up)
    calls = [line.split() for line in log.read_text().splitlines()]
    in_parent = [key for pid, key in calls if int(pid) == os.getpid()]
    assert in_parent == (["a.jpg"] if warm_up else [])  # the first unit, once, then discarded
    assert len(calls) == 5 + warm_up
    run_export(tmp_path / "one")
    assert tree(tmp_path / "out").keys() == tree(tmp_path / "one").keys()
    assert {rel: data for rel, data in tree(tmp_path / "out").items() if rel != "manifest.json"} == \
        {rel: data for rel, data in tree(tmp_path / "one").items() if rel != "manifest.json"}


def test_source_rewritten_since_an_earlier_export_in_this_process_is_hashed_again(tmp_path):
    """The last source digest is cached (units sharing their inputs); a later export in the same
    process must hash a rewritten source again instead of taking it for unchanged."""
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-", names=("a",))
    units = source_units(src, names=("a",))

    def run():
        return dataset_writer.export(units, source_render, out, generator="test", kind="toy", params=PARAMS,
                                     sources=["a.jpg"], workers=1, progress=False)

    run()
    write_sources(src, b"v2-", names=("a",))  # a's v1 digest is the cached one
    result = run()
    assert result.files_written == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units"]["a.jpg"] == hashlib.sha256(hashlib.sha256(b"v2-a").hexdigest().encode()).hexdigest()
    assert (out / "f1" / "a.bin").read_bytes() == b"f1|v2-a"


def _blas_threads_render(unit: WorkUnit):
    """Each output records how many threads the BLAS library would use while rendering."""
    from threadpoolctl import threadpool_info

    threads = max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
    return [(rel, str(threads).encode()) for rel in unit.outputs]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS runs one thread anyway on a one-core machine")
@pytest.mark.parametrize("workers", [1, 2])
def test_rendering_runs_one_blas_thread_per_process(tmp_path, workers):
    """The export runs one process per core: BLAS threads inside each would only spin (the small
    matrix products of the corruptions). Outside the export the caller's BLAS setting is kept."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")

    before = blas_threads()
    if before < 2:
        pytest.skip("BLAS is limited to one thread in this environment (e.g. OPENBLAS_NUM_THREADS=1)")
    out = tmp_path / "out"
    dataset_writer.export(toy_units(), _blas_threads_render, out, generator="test", kind="toy", params=PARAMS,
                          sources=["a.jpg"], source_root="src", workers=workers, progress=False)
    assert {path.read_bytes() for path in out.rglob("*.bin")} == {b"1"}
    assert blas_threads() == before


def test_units_with_one_key_are_a_user_error_before_anything_is_written(tmp_path):
    """Two units whose names share a base name would share one record in the manifest (and here
    write the same files): refused as a UserError naming both, and --out is not even created."""
    units = [WorkUnit("src/happy/x.jpg", ("f1/happy/x.bin",), "a"), WorkUnit("src/sad/x.jpg", ("f1/sad/x.bin",), "b")]
    out = tmp_path / "out"
    with pytest.raises(UserError) as error:
        run_export(out, units=units)
    assert str(error.value).startswith("src/happy/x.jpg and src/sad/x.jpg: ")
    assert "'x.jpg'" in str(error.value) and "rename one" in str(error.value)
    assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_render_error_that_names_the_source_file_is_not_prefixed(tmp_path, workers):
    """A render error whose message starts with one of the unit's input files is reported as it
    is (the unit's name is not put in front of it)."""
    source = tmp_path / "photos" / "c.png"
    source.parent.mkdir()
    source.write_bytes(b"c")

    units = [WorkUnit(f"happy|{name}.png", (f"f1/{name}.bin",), name,
                      inputs=(str(tmp_path / "photos" / f"{name}.png"),)) for name in ("a", "b", "c")]
    for name in ("a", "b"):
        (tmp_path / "photos" / f"{name}.png").write_bytes(name.encode())
    render = functools.partial(_render_failing_on_c, path=str(source))
    with pytest.raises(UserError) as error:
        dataset_writer.export(units, render, tmp_path / "out", generator="test", kind="toy", params=PARAMS,
                              sources=["a", "b", "c"], workers=workers, progress=False)
    assert str(error.value).startswith(f"{source}: too small to corrupt; ")
    assert "happy|" not in str(error.value)


def _render_stuck_or_failing(unit):
    if unit.payload == "stuck":  # a worker that SIGTERM does not end (blocked for good, or ignoring it)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    time.sleep(0.5)  # (the other worker takes "stuck" meanwhile)
    raise UserError("fails")


def test_a_worker_that_survives_sigterm_is_killed(tmp_path):
    """A render error stops the export; a worker that SIGTERM did not end stayed alive (seen in CI: one
    blocked for good on the result queue's lock after its sibling was stopped), and the process
    running the export, which joins its children when it exits, never exited."""
    import multiprocessing

    before = {child.pid for child in multiprocessing.active_children()}
    units = [WorkUnit(f"u{i}", (f"f1/u{i}.bin",), payload) for i, payload in enumerate(("fails", "stuck"))]
    started = time.monotonic()
    with pytest.raises(UserError, match="fails"):
        dataset_writer.export(units, _render_stuck_or_failing, tmp_path / "out", generator="test", kind="toy",
                              params=PARAMS, sources=[], workers=2, progress=False, chunksize=1)
    def running(child) -> bool:  # by the kernel's word (a child reaped elsewhere can look alive to multiprocessing)
        try:
            with open(f"/proc/{child.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
        except OSError:
            return child.is_alive()

    deadline = time.monotonic() + 15  # (the stuck worker would sleep 60 s: still alive then without the fix)
    while (alive := [child for child in multiprocessing.active_children()
                     if child.pid not in before and running(child)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [] and time.monotonic() - started < 30


def _render_failing_on_c(unit, *, path):
    if unit.payload == "c":
        raise UserError(f"{path}: too small to corrupt")
    return [(rel, b"x") for rel in unit.outputs]


def test_rerun_after_a_source_was_deleted_warns_and_keeps_its_files(tmp_path, caplog):
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, b"v1-")
    source_export(out, src)
    (src / "b.jpg").unlink()
    with caplog.at_level("WARNING"):
        result = dataset_writer.export(source_units(src, names=("a", "c")), source_render, out, generator="test",
                                       kind="toy", params=PARAMS, sources=["a.jpg", "c.jpg"], workers=1,
                                       progress=False)
    assert (result.units_skipped, result.units_rendered) == (2, 0)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "1 image(s) recorded in manifest.json are no longer among the source images (b.jpg)" in warnings[0]
    # The tree still holds b's files, as its manifest says.
    assert (out / "f1" / "b.bin").read_bytes() == b"f1|v1-b"
    assert dataset_writer.verify(out).ok


def test_a_narrower_rerun_does_not_complete_an_unfinished_export(tmp_path):
    """A run over folders f1 and f2 stops at image c (a, b finished); a later run of f1 only finishes
    its own images, but f2 still lacks c, d and e: the manifest stays incomplete (verify says so)
    and the summary says which folders the earlier run writes; rerunning f1 + f2 completes it."""
    out = tmp_path / "out"
    with pytest.raises(UserError, match="src/c.jpg"):
        run_export(out, fail_on="src/c.jpg")
    result = run_export(out, units=toy_units(folders=("f1",)))
    assert (result.units_rendered, result.complete) == (3, False)
    assert result.pending_elsewhere == ["f2"]
    assert "an earlier run also writes 1 folder(s) this run does not, not finished (f2: that run did not finish" \
        in result.shard_note
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and "f2" in manifest["pending_folders"]
    assert not dataset_writer.verify(out).ok
    result = run_export(out)
    assert (result.units_rendered, result.units_skipped, result.complete) == (3, 2, True)
    assert dataset_writer.verify(out).ok and "pending_folders" not in json.loads((out / "manifest.json").read_text())


def test_a_wider_selection_says_why_it_renders_what_an_earlier_one_wrote(tmp_path):
    """f1 exported, then f1 + f2: every image is rendered in full (f1's files again), and the summary
    says an earlier run of another selection wrote part of them (it said an interrupted run had)."""
    out = tmp_path / "out"
    run_export(out, units=toy_units(folders=("f1",)))
    result = run_export(out, units=toy_units(folders=("f1", "f2")))
    assert (result.units_rendered, result.reasons, result.complete) == (5, {"widened": 5}, True)
    assert result.rerender_note == (", 5 image(s) rendered in full to add folders to the files an earlier run of "
                                    "another selection wrote")


def test_a_changed_source_in_a_wider_selection_also_removes_the_stale_files(tmp_path):
    """f1, then f2 exported; source a changes; then f1 + f3 (recorded for a, but f3 not listed): a is
    rendered again as changed, and its f2 file, from the old picture, is removed."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in "abc":
        (src / f"{name}.jpg").write_bytes(name.encode())

    def run(folders):
        units = [WorkUnit(f"src/{name}.jpg", tuple(f"{folder}/{name}.bin" for folder in folders), name,
                          (str(src / f"{name}.jpg"),)) for name in "abc"]
        return dataset_writer.export(units, functools.partial(toy_render, seed=3), out, generator="test", kind="toy",
                                     params=PARAMS, sources=[], source_root=str(src), workers=1, progress=False)

    run(("f1",))
    run(("f2",))
    (src / "a.jpg").write_bytes(b"new a")
    result = run(("f1", "f3"))
    assert result.reasons == {"changed": 1, "widened": 2} and result.stale_removed == ["f2/a.bin"]
    assert not (out / "f2/a.bin").exists() and result.stale_folders == ["f2"] and not result.complete


def _two_selections(tmp_path):
    """A tree of f1 and f2 from sources a, b, c; then a changes. Returns (run(folders, **options), out)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir(exist_ok=True)
    for name in "abc":
        (src / f"{name}.jpg").write_bytes(name.encode())

    def run(folders, fail_on=None, force=False):
        units = [WorkUnit(f"src/{name}.jpg", tuple(f"{folder}/{name}.bin" for folder in folders), name,
                          (str(src / f"{name}.jpg"),)) for name in "abc"]
        render = functools.partial(toy_render, seed=3, fail_on=fail_on)
        return dataset_writer.export(units, render, out, generator="test", kind="toy", params=PARAMS, sources=[],
                                     source_root=str(src), workers=1, progress=False, force_rerender=force)

    run(("f1",))
    run(("f2",))
    (src / "a.jpg").write_bytes(b"new a")
    return run, out


def test_stale_files_removed_by_a_run_that_then_failed_are_dropped_by_the_rerun(tmp_path):
    """The f1 run removes f2/a.bin, then fails on a (its render): the manifest still lists f2/a.bin.
    The rerun finds a changed again and drops the record: the tree stays incomplete (f2 to rerun),
    never 'complete' with a listed file missing."""
    run, out = _two_selections(tmp_path)
    with pytest.raises(UserError, match="cannot decode"):
        run(("f1",), fail_on="src/a.jpg")
    assert not (out / "f2/a.bin").exists()
    again = run(("f1",))
    assert (again.stale_removed, again.stale_folders, again.complete) == (["f2/a.bin"], ["f2"], False)
    assert "f2/a.bin" not in json.loads((out / "manifest.json").read_text())["files"]
    run(("f2",))
    assert dataset_writer.verify(out).ok and json.loads((out / "manifest.json").read_text())["complete"]


def test_a_forced_rerender_of_a_changed_source_removes_the_stale_files_too(tmp_path):
    """--force-rerender of f1 after a changed: a is recorded with its new digest, so f2/a.bin (old
    picture) must go as well; the f2 export then renders it from the new source."""
    run, out = _two_selections(tmp_path)
    forced = run(("f1",), force=True)
    assert (forced.stale_removed, forced.complete) == (["f2/a.bin"], False)
    assert run(("f2",)).units_rendered == 1
    assert (out / "f2/a.bin").read_bytes() == toy_bytes("f2", "a", 3) and dataset_writer.verify(out).ok


def test_a_run_that_needs_no_param_set_keeps_the_one_a_concurrent_run_recorded(tmp_path):
    """A face-only export (extra_param_set None) that finishes after an ImageNet-C export recorded
    'scaled' in the same tree wrote None over it; a later export with another parameter set was then
    accepted over files rendered with 'scaled'."""
    out = tmp_path / "out"
    face, extra = {**PARAMS, "extra_param_set": None}, {**PARAMS, "extra_param_set": "scaled"}
    inner = []

    def face_render(unit):
        if not inner:  # the other export runs while this one renders
            inner.append(dataset_writer.export(toy_units(folders=("fog",)), functools.partial(toy_render, seed=3), out,
                                               generator="test", kind="toy", params=extra, sources=[],
                                               workers=1, progress=False))
        return toy_render(unit, seed=3)

    dataset_writer.export(toy_units(folders=("eyes",)), face_render, out, generator="test", kind="toy", params=face,
                          sources=[], workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["params"]["extra_param_set"] == "scaled"
    with pytest.raises(UserError, match=r"extra_param_set='scaled' but this run asks for extra_param_set='other'"):
        dataset_writer.export(toy_units(folders=("fog",)), functools.partial(toy_render, seed=3), out,
                              generator="test", kind="toy", params={**PARAMS, "extra_param_set": "other"},
                              sources=[], workers=1, progress=False)


def test_rerunning_an_unfinished_selection_completes_after_another_selection_finished(tmp_path):
    """Disjoint selections: f1 stops at image c; f2 then finishes (the manifest stays incomplete,
    f1 pending); rerunning f1 completes it. The f2 run had recorded its own finished folder as
    pending too, so each rerun left the other pending, for ever."""
    out = tmp_path / "out"
    with pytest.raises(UserError, match="src/c.jpg"):
        run_export(out, units=toy_units(folders=("f1",)), fail_on="src/c.jpg")
    second = run_export(out, units=toy_units(folders=("f2",)))
    assert (second.complete, second.pending_elsewhere) == (False, ["f1"])
    third = run_export(out, units=toy_units(folders=("f1",)))
    assert (third.units_rendered, third.units_skipped, third.complete, third.pending_elsewhere) == (3, 2, True, [])
    assert dataset_writer.verify(out).ok


def test_stale_manifest_temporary_is_removed_and_probes_are_not_data(tmp_path):
    """A run killed while writing the manifest leaves .manifest.json.<8>.tmp at the root; a killed
    folder probe leaves .write-test-<pid>.tmp. The next run (a shard, which removes only its own
    outputs' temporaries) deletes the first; verify counts neither as unexpected data."""
    out = tmp_path / "out"
    run_export(out)
    (out / ".manifest.json.k3j9x0qa.tmp").write_text('{"form')
    (out / ".write-test-99999.tmp").write_bytes(b"")
    dataset_writer.export(toy_units(), functools.partial(toy_render, seed=3), out, generator="test", kind="toy",
                          params=PARAMS, sources=[], workers=1, progress=False, shard=(0, 2))
    assert not (out / ".manifest.json.k3j9x0qa.tmp").exists()
    report = dataset_writer.verify(out)
    assert report.ok and report.unexpected == []


@pytest.mark.parametrize("changes, message", [
    # --source aligned also sets fallback_pad: both named, --source first among the flags
    ({"source": "aligned", "fallback_pad": "reflect101"},
     r"used fallback_pad=None, source='landmarks' but this run asks for fallback_pad='reflect101', "
     r"source='aligned' \(follows --source .*; --source\)"),
    # FER test split: the flag is --test-split (there is no --split for it)
    ({"split": "PrivateTest"}, r"split='PublicTest' but this run asks for split='PrivateTest' \(--test-split\)"),
    # a changed CSV: no flag to name
    ({"source_sha256": "b" * 64}, r"\(the source CSV changed since: .*\); export into a new --out"),
])
def test_a_refusal_names_every_differing_parameter_and_its_flag(tmp_path, changes, message):
    params = {**PARAMS, "source": "landmarks", "fallback_pad": None, "split": "PublicTest", "source_sha256": "a" * 64}
    run_export(tmp_path / "out", params=params)
    with pytest.raises(UserError, match=message) as error:
        run_export(tmp_path / "out", params={**params, **changes})
    assert "--source-sha256" not in str(error.value) and "--fallback-pad)" not in str(error.value)


def _render_or_die(unit: WorkUnit):
    """The toy render, except that the worker rendering unit c is killed (as by the OOM killer)."""
    if unit.name == "src/c.jpg":
        os.kill(os.getpid(), signal.SIGKILL)
    return toy_render(unit, seed=3)


def test_a_killed_worker_fails_the_export_instead_of_hanging(tmp_path):
    """With a multiprocessing.Pool the export waited forever for the dead worker's units; it must
    end with a UserError within seconds, keep what finished, and a rerun completes the tree."""
    out = tmp_path / "out"
    start = time.monotonic()
    with pytest.raises(UserError, match=r"worker process of the export ended abruptly( \(exit code -9\))?: .*rerun the same") \
            as failure:
        dataset_writer.export(toy_units(), _render_or_die, out, generator="test", kind="toy", params=PARAMS,
                              sources=[], workers=2, progress=False, chunksize=1)
    assert time.monotonic() - start < 60
    # not a usage error: exit code 1, which a scheduler's retry policy reruns (2 reads as a bad command line)
    with pytest.raises(SystemExit) as stop:
        cli_common.run_main(lambda: (_ for _ in ()).throw(failure.value))
    assert stop.value.code == 1
    result = run_export(out, workers=2)
    assert result.complete and result.units_rendered + result.units_skipped == 5
    fresh = tree(run_export(tmp_path / "fresh").out_dir)
    assert {rel: data for rel, data in tree(out).items() if rel != "manifest.json"} == \
        {rel: data for rel, data in fresh.items() if rel != "manifest.json"}


def test_no_more_workers_than_images(tmp_path, monkeypatch):
    """--workers 40 for 5 images starts 5 processes (it forked 40, most with nothing to do), and the
    summary says so; the tree is the one-worker tree."""
    import concurrent.futures

    started = []
    real = concurrent.futures.ProcessPoolExecutor

    def counting(workers, **kwargs):
        started.append(workers)
        return real(workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", counting)
    result = run_export(tmp_path / "many", workers=40)
    assert started == [5] and result.workers == 5
    one = run_export(tmp_path / "one").out_dir
    assert {rel: data for rel, data in tree(tmp_path / "many").items() if rel != "manifest.json"} == \
        {rel: data for rel, data in tree(one).items() if rel != "manifest.json"}


def test_an_export_into_its_own_source_dataset_is_refused(tmp_path):
    src = tmp_path / "src"
    write_sources(src, b"v1-")
    with pytest.raises(UserError, match=r"^--out .*src/test/zz: lies inside the source dataset .*src, which is read"):
        dataset_writer.export(source_units(src), source_render, src / "test" / "zz", generator="test", kind="toy",
                              params=PARAMS, sources=[], source_root=str(src), workers=1, progress=False)
    assert not (src / "test").exists()


_SLOW_EXPORT = """
import sys, time
sys.path.insert(0, {repo!r})
import dataset_writer
from dataset_writer import WorkUnit

def render(unit):
    time.sleep(0.05)
    return [(rel, rel.encode()) for rel in unit.outputs]

units = [WorkUnit(f"src/{{i:04d}}.jpg", (f"f1/{{i:04d}}.bin",), i) for i in range(400)]
dataset_writer.export(units, render, {out!r}, generator="test", kind="toy", params={{}}, sources=[],
                      workers={workers}, progress=False, chunksize=1)
"""


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if text.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 2), (signal.SIGKILL, 2), (signal.SIGINT, 2),
                                          (signal.SIGINT, 1), (signal.SIGTERM, 1)])
def test_a_stopped_export_leaves_no_worker_behind(tmp_path, sig, workers):
    """SIGTERM (scancel, a stopped pod), SIGKILL or SIGINT (Ctrl-C) of the exporting process: its
    pool workers end too (they used to wait forever on the pool's pipes), and SIGTERM and Ctrl-C say
    what is kept, in one line (Ctrl-C said only "interrupted"; SIGTERM with one worker, rendering in the
    process itself, said nothing)."""
    out = tmp_path / "out-for-this-test"
    code = _SLOW_EXPORT.format(repo=str(Path(dataset_writer.__file__).parent), out=str(out), workers=workers)
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("f1/*.bin")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == -sig if sig == signal.SIGKILL else process.returncode == 128 + sig
    if sig == signal.SIGTERM:
        assert err.strip().startswith("terminated (SIGTERM): ") and "Traceback" not in err
        assert "of 400 image(s) are recorded as finished and kept; rerun the same command" in err
    if sig == signal.SIGINT:
        assert err.strip().startswith("interrupted (Ctrl-C): ") and "Traceback" not in err
        assert "image(s) are recorded as finished and kept; rerun the same command" in err
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(out)) == []
