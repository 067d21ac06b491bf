"""Shared export machinery for RAF-DB-C and RAF-DB-P: parallel workers, atomic writes, resume,
manifest and verification (BENCHMARK.md §2.7, §2.8, §3.5). No TensorFlow; the only argument-parsing code
is :func:`add_run_args`, the execution flags both export scripts share.

Generic API (used by ``rafdb_aug_dataset.py`` and ``rafdb_perturb_dataset.py``)
-------------------------------------------------------------------------------
``WorkUnit(name, outputs, payload=None, inputs=())``
    One unit of work, normally one source image. ``name`` identifies it in error messages (use the
    source path); its base name (``unit.key``) identifies it in the manifest and must be unique
    within an export. ``outputs`` is the tuple of relative POSIX paths (under the output root) that
    the unit produces, known before rendering. ``payload`` is any picklable value the render
    function needs (e.g. the source path as a string). ``inputs`` are the paths of the source files
    whose bytes decide the outputs (the image; for RAF-DB-P also the landmark file): their SHA-256
    is recorded per unit, so a unit whose source changed is rendered again on resume.

``render(unit) -> iterable of (relative_path, file_bytes)``
    A module-level function (picklable; bind options with ``functools.partial``) that renders one
    unit and returns exactly the paths listed in ``unit.outputs`` (any order). It runs in a worker
    process: it must not import TensorFlow. Raise ``cli_common.UserError`` (or any exception) for a
    bad source; the export stops with a ``UserError`` naming the unit.

``export(units, render, out_dir, *, generator, kind, params, sources, source_root=None,
         workers=None, progress=True, chunksize=None, force_rerender=False, shard=None) -> ExportResult``
    Renders every unit with a ``multiprocessing`` pool ("fork"; ``workers=1`` runs in-process,
    ``None`` means ``os.cpu_count()``), streaming results with ``imap_unordered``. Each worker writes
    its files atomically (temporary name in the same folder, then ``os.replace``; folders are created
    as needed) and returns only SHA-256 digests to the parent, so the parent never holds image data.

    Resume: a unit is skipped (not rendered, not rewritten, not re-hashed) when all its outputs
    exist *and* it is recorded as finished with the same SHA-256 of its inputs as they have now.
    The record is an append-only journal per process, ``.journal-<host>-<pid>-<random>.jsonl`` at
    ``out_dir``: one JSON line ``[unit key, inputs digest, [[path, sha256], ...]]`` per finished
    unit, written (one unbuffered ``write``) after its files are in place and ``fsync``-ed at most
    once a second. At the end the journal is folded into ``manifest.json`` and deleted. A journal
    left by a killed run (SIGKILL, disk full, power loss) is folded by the next run before it starts,
    so a rerun after a kill at 44 % renders only the remaining 56 %; a torn last line is ignored (that
    unit is rendered again). Any other unit is rendered again and all its outputs rewritten, and the
    summary says why (``ExportResult.reasons``): "finished" (partly written by an interrupted run),
    "changed" (its source changed, e.g. ``rafdb_dataset.py sample --force`` with another seed),
    "unrecorded" (its files exist but no record says they are finished), "missing" (recorded as
    finished, but a file is gone) or "forced" (``force_rerender=True`` renders every unit); with
    another export running into the tree (``ExportResult.concurrent``) the texts of "finished" and
    "unrecorded" say the files may be that export's. Stray temporary files (``.<name>.XXXXXXXX.tmp``)
    left by a killed run are removed first, under the tree lock, unless another export is running
    into the tree (a journal is locked): they may be its live files, and the last run to finish
    removes them instead. A write error of an output is reported naming the output file (a temporary
    file deleted under the writer: another export writing the folder), never the source image. A
    killed run rerun therefore ends byte-identical to an
    uninterrupted run. Skipped files keep their recorded hashes, so ``verify`` still finds a file
    altered after it was written.

    Shards: ``shard=(i, N)`` renders every N-th unit in key order, starting at the i-th
    (:func:`shard_units`). Shards may run one after another or at the same time, on several
    machines sharing the folder: every read-modify-write of the manifest happens under an exclusive
    ``flock`` of ``out_dir`` (``.export.lock`` where folders cannot be locked), each process appends
    only to its own journal (``flock``-ed while it runs, so nobody folds a live journal), and a
    finishing shard folds its journal (and any dead one) into the manifest. The manifest is marked
    ``complete`` by whichever shard finds every unit of the whole list recorded, i.e. the last to
    finish; the result equals one unsharded export byte for byte.

    Durability: files are written with :func:`atomic_write_bytes` (rename over the final
    name) but deliberately *without* ``fsync``. The requirement is safety against a killed process
    (SIGKILL, Ctrl-C): the rename guarantees that a file under its final name is complete. An fsync
    per file would cost far too much for 276,120 (C) or 920,400 (P) small files; after a power
    loss, ``verify`` names any file the file system lost or truncated, and a rerun of the export
    with the same flags does not repair those (it trusts existing files), so delete them first.

    ``manifest.json`` at ``out_dir`` (written atomically; an "incomplete" one before the workers start,
    the final one at the end) records generator name/version (``git describe`` or "unknown"),
    ``kind`` ("rafdb-c" / "rafdb-p"), ``params`` (seed, format, motion backend, colour mode, parameter
    set, ...), the source root and list, per-folder file counts, package versions and the SHA-256 of
    every file, and the SHA-256 of every unit's inputs (``units``). It holds no timestamps, so equal
    exports give equal manifests. If ``out_dir`` already has a manifest whose ``kind`` or any
    ``params`` value differs, the export is refused with a ``UserError`` naming the manifest and the
    parameter; with equal parameters the new folders and files are merged into it. A manifest made
    by another generator version or other package versions (``versions``) is refused too, naming
    the differing item, unless ``force_rerender`` is set: then every unit is rendered again, and the
    run is still refused if the tree holds files of the old version that this run would not rewrite
    (another ``--corruptions`` / ``--severities`` / ``--perturbations`` selection). A non-empty
    ``out_dir`` without a manifest is refused too.

Workers write every file with :func:`atomic_write_bytes` (temporary name ``.<name>.<pid>.tmp`` in
the same folder, ``os.replace``, missing folders created, permissions 0666 minus the umask).

``check_output_dir(out_dir, *, kind, params, force_rerender=False)``
    The checks ``export`` does before starting workers (writable folder, compatible manifest and
    versions), for scripts that want to fail before any expensive set-up.

``check_writable_file(path, flag="--out")``
    UserError unless a file can be written at ``path`` (for the preview image/GIF, checked before
    rendering).

``add_run_args(parser)``
    Adds ``--workers`` (0 = all cores, the default; 1 = in-process), ``--quiet`` (no progress bar,
    no INFO logs; the final summary is still printed), ``--force-rerender`` and ``--shard i/N`` to an
    export parser.

``verify(out_dir) -> VerifyReport``
    Re-hashes every file listed in the manifest: ``missing``, ``altered`` (hash mismatch) and
    ``unexpected`` (present but not listed; the lock file and journals are not counted) relative paths; ``ok`` is True when all three are empty
    and the manifest is complete. ``print_verify_report(report, stream)`` writes one line per problem.

RAF-DB-C helpers (shared by the export and by on-the-fly evaluation)
---------------------------------------------------------------------
``corrupted_bytes(image_rgb, file_name, name, severity, *, seed=0, fmt="jpg",
                  motion_backend="numpy", colour="rgb") -> bytes``
    The exact bytes of one RAF-DB-C file: ``encode_image(corrupt(image, name, severity,
    item_rng(seed, "rafdb-c", name, severity, file_name), ...), fmt)`` with ``file_name`` the *input*
    file name (e.g. ``test_0001_aligned.jpg``) whatever the format.
``corrupted_folder(name, severity, split="test")`` -> ``"rafdb.test.<name>.<severity>"``;
``output_file_name(file_name, fmt)`` -> the input name, with ``.png`` for ``fmt="png"``;
``rafdb_c_units(image_paths, pairs, *, fmt, split)`` and ``render_rafdb_c(unit, *, pairs, seed, fmt,
motion_backend, colour)`` build the RAF-DB-C work list (one unit per source image, one output per
(corruption, severity) pair).

Example::

    units = rafdb_c_units(paths, [("gaussian_noise", 1)], fmt="jpg", split="test")
    render = functools.partial(render_rafdb_c, pairs=[("gaussian_noise", 1)], seed=0, fmt="jpg",
                               motion_backend="numpy", colour="rgb")
    export(units, render, "corrupted_raf_dataset", generator="rafdb_aug_dataset.py",
           kind="rafdb-c", params={"seed": 0, ...}, sources=[p.name for p in paths])
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import functools
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cli_common import DISK_FULL, LOG, RunFailed, UserError, atomic_path, item_rng, refuse_outputs_over_inputs, temp_stem

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# Temporary files made by cli_common.atomic_write_bytes and cli_common.atomic_path: ".<final name>.<8 chars>.tmp".
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Write probes of check_output_dir (one per process; concurrent shards may see each other's).
_PROBE_RE = re.compile(r"^\.write-test-\d+\.tmp$")
# Bookkeeping at the root of a tree: the lock taken around manifest updates, and one journal per
# running (or killed) export process, ".journal-<host>-<pid>-<random>.jsonl".
LOCK_NAME = ".export.lock"
_JOURNAL_RE = re.compile(r"^\.journal-.+\.jsonl$")
# Distribution names whose versions go into the manifest (first found of each group).
_PACKAGES = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
               "opencv-contrib-python-headless"),
    "scikit-image": ("scikit-image",),
    "scipy": ("scipy",),
    "pillow": ("pillow", "Pillow"),
    "wand": ("Wand",),
}


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """One unit of work (normally one source image) and the files it produces."""

    name: str
    outputs: tuple[str, ...]
    payload: Any = None
    inputs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The unit's name in the manifest's ``units`` table: the base name of ``name``."""
        return os.path.basename(self.name)


@dataclasses.dataclass
class ExportResult:
    """What an export did."""

    out_dir: Path
    manifest_path: Path
    units: int = 0
    units_rendered: int = 0
    units_skipped: int = 0
    units_stale: int = 0  # rendered again although every output existed (source changed or unknown)
    files_written: int = 0
    files_skipped: int = 0
    seconds: float = 0.0
    workers: int = 1
    shard: tuple[int, int] | None = None
    complete: bool = False  # the manifest is complete (every shard has finished)
    # Folders an earlier run that did not finish writes and this run does not (another selection).
    pending_elsewhere: list[str] = dataclasses.field(default_factory=list)
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # why units were rendered
    unfinished_shards: list[int] = dataclasses.field(default_factory=list)  # a shard run: those not finished
    stale_removed: list[str] = dataclasses.field(default_factory=list)  # files of other selections, removed
    stale_folders: list[str] = dataclasses.field(default_factory=list)  # their folders
    concurrent: int = 0  # other exports that were running into the tree when this one started
    running_at_end: int = 0  # other exports still running into the tree when this one finished
    completed_by_another: bool = False  # a concurrent shard had completed the manifest when this one ended

    @property
    def rerender_note(self) -> str:
        """``", 3 image(s) finished that an interrupted run had partly written, ..."`` or ``""``. With
        another export running into the tree at the same time, its unrecorded files are said to be
        possibly that export's."""
        texts = {**_REASONS, **_CONCURRENT_REASONS} if self.concurrent else _REASONS
        return "".join(f", {self.reasons[reason]} {text}" for reason, text in texts.items()
                       if self.reasons.get(reason))

    @property
    def shard_note(self) -> str:
        """For a shard run: whether it completed the manifest or other shards are still missing; for
        any run, that an earlier unfinished run of another selection keeps the manifest incomplete."""
        notes = []
        if self.stale_folders:
            folders = self.stale_folders
            notes.append(f"{len(folders)} folder(s) of other selections lost their files of changed source "
                         f"images ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}): rerun the "
                         f"export(s) that write them")
        if self.pending_elsewhere:
            folders = self.pending_elsewhere
            running = ("another export still running into this folder may be writing them, or "
                       if self.running_at_end else "")
            notes.append(f"an earlier run also writes {len(folders)} folder(s) this run does not, not finished "
                         f"({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}: {running}that run did not "
                         f"finish, or their files of changed source images were removed); rerun that export's command "
                         f"(its selection) to complete them{' if it is not running' if running else ''}")
        if notes:
            return "; the manifest stays incomplete: " + "; ".join(notes)
        if self.shard is None:
            return ""
        unfinished = [f"{index}/{self.shard[1]}" for index in self.unfinished_shards]
        state = ("the manifest was already complete (another run completed it)"
                 if self.completed_by_another and self.complete
                 else "the manifest is now complete" if self.complete else
                 f"the manifest completes when shard(s) {', '.join(unfinished[:8])}"
                 f"{' and %d more' % (len(unfinished) - 8) if len(unfinished) > 8 else ''} finish (still "
                 f"running, or ended without recording every image: failed, or a source image changed since; "
                 f"rerun such a shard)" if unfinished else
                 "the manifest completes when the last shard finishes")
        return f"; shard {self.shard[0]}/{self.shard[1]}: {state}"

    @property
    def files(self) -> int:
        return self.files_written + self.files_skipped


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`verify`: relative paths of every problem file."""

    out_dir: Path
    checked: int = 0
    complete: bool = True
    kind: str = ""  # the manifest's kind (rafdb-c, rafdb-p, fer-c, ...): said in the summary line
    journaled: int = 0  # files of an unfinished export known from its journals, not its manifest
    missing: list[str] = dataclasses.field(default_factory=list)
    altered: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    # an unfinished export only: files in its output folders that no record lists yet (written just
    # before the run stopped, or a temporary file of one being written); the rerun writes them again
    unrecorded: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not (self.missing or self.altered or self.unexpected)


# --------------------------------------------------------------------------------------------
# Small helpers


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def inputs_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the SHA-256 hex digests of the files ``paths``, in order (UserError if one is
    missing or unreadable). The last call is cached (consecutive units with the same inputs);
    :func:`export` clears it when it starts."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(sha256_file(path).encode("ascii"))
        except FileNotFoundError:
            raise UserError(f"{path}: source file not found") from None
        except OSError as error:
            raise UserError(f"{path}: cannot read the source file ({error.strerror or error})") from None
    return digest.hexdigest()


def _table_value(value: Any) -> Any:
    """A plain, repr-stable form of a parameter constant, or None if it is not data (e.g. functions)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_table_value(item) for item in value]
        return None if any(item is None for item in items) else tuple(items)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return (str(getattr(value, "dtype", "")), _table_value(value.tolist()))
    return None


def parameter_tables_digest(module) -> str:
    """First 12 hex digits of the SHA-256 of a module's parameter tables: every public upper-case
    constant that is data (numbers, strings, tuples, numpy arrays), as ``NAME=repr`` lines sorted by
    name; help texts (``*_HELP``) and registries of functions are left out. A changed table value
    changes the digest, so an export tree made with other tables is refused (``param_set``)."""
    lines = []
    for name in sorted(vars(module)):
        if not name.isupper() or name.startswith("_") or name.endswith("_HELP"):
            continue
        value = _table_value(getattr(module, name))
        if value is not None:
            lines.append(f"{name}={value!r}")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:12]


def generator_version() -> str:
    """``git describe --always --dirty --tags`` of this checkout, or "unknown"."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the imaging packages that determine the output bytes (those installed)."""
    versions = {"python": platform.python_version()}
    for label, distributions in _PACKAGES.items():
        for distribution in distributions:
            try:
                versions[label] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def workers_type(text: str) -> int:
    """argparse type of ``--workers``: an integer >= 0 (0 = all cores)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of processes or 0 (all cores), got {text!r}")
    return value


def add_run_args(parser) -> None:
    """The execution flags shared by ``rafdb_aug_dataset.py export`` and ``rafdb_perturb_dataset.py
    export``: ``--workers``, ``--quiet``, ``--force-rerender``, ``--shard`` (same names, defaults and
    meaning)."""
    parser.add_argument("--workers", type=workers_type, default=0, metavar="N",
                        help="worker processes: 0 = all cores (the default); 1 = render in this "
                             "process, without a pool; N = N processes. The output bytes do not "
                             "depend on it")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no INFO log messages; warnings, errors and the "
                             "final summary are still printed (stderr)")
    parser.add_argument("--force-rerender", action="store_true",
                        help="render every file again, even those already present (needed to "
                             "resume a tree made by another version of this toolkit or of its "
                             "imaging packages)")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="i/N",
                        help="render only shard i of N (i = 0..N-1): every N-th source image in "
                             "file-name order. N shard runs into the same --out, one after another or "
                             "at the same time (a cluster array job), give the same tree and manifest "
                             "as one run; the last shard to finish completes the manifest "
                             "(docs/SCALE.md)")


def _probe_writable(folder: Path, probe_name: str, message: str) -> None:
    """Create and remove an empty file in ``folder``; a failure is a UserError ``message (reason)``."""
    probe = folder / probe_name
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{message} ({error.strerror or error})") from None


def check_writable_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """UserError naming ``flag`` unless a file can be created at ``path`` (checked before rendering)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; expected the name of the file to write")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot create the folder {folder} "
                        f"({error.strerror or error})") from None
    _probe_writable(folder, f".{path.name}.write-test-{os.getpid()}.tmp",
                    f"{flag} {path}: cannot write in {folder}")
    return path


def resolve_workers(workers: int | None) -> int:
    """``None`` or 0 -> all cores; otherwise at least 1."""
    if workers is None or workers == 0:
        return os.cpu_count() or 1
    if workers < 0:
        raise UserError(f"--workers: expected a positive number, got {workers}")
    return workers


def _folder_of(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else "."


def folder_counts(files: Mapping[str, str]) -> dict[str, int]:
    """Number of files per top-level folder (``.`` for files directly in the root)."""
    counts: dict[str, int] = {}
    for rel in files:
        folder = _folder_of(rel)
        counts[folder] = counts.get(folder, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# Manifest


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest of ``out_dir`` or None if there is none (UserError if it is unreadable)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON manifest ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{path}: not a dataset manifest (no 'files' table)")
    outside = next((rel for rel in manifest["files"] if not is_tree_path(rel)), None)
    if outside is not None:  # a rerun deletes and rewrites the files it lists: never outside the tree
        raise UserError(f"{path}: the 'files' table names {outside!r}, which is not a path inside the tree "
                        f"(expected a relative path such as 'folder/image.jpg', without '..'); the manifest "
                        f"was edited or damaged: restore it, or export the tree again into a new folder")
    return manifest


TREE_KINDS = {"c": "corrupted-image export (rafdb_aug_dataset.py / ferplus_aug_dataset.py export)",
              "p": "perturbation export (rafdb_perturb_dataset.py export)"}


# The dataset part of an export's kind ("<dataset>-c" / "<dataset>-p"), per --dataset.
KIND_DATASETS = {"rafdb": "rafdb", "ferplus": "fer", "fer2013": "fer", "folder": "folder"}
KIND_DATASET_NAMES = {"rafdb": "RAF-DB", "fer": "FER2013/FER+", "folder": "a folder dataset"}


def read_finished_manifest(out_dir: str | os.PathLike, expect: str | None = None,
                           flag: str = "", dataset: str | None = None) -> dict | None:
    """:func:`read_manifest` of a tree an evaluation reads: UserError if its export has not finished
    (the manifest says ``complete: false``: killed, failed, or shards still running), or, with
    ``expect`` "c" or "p", if it records the other kind of export (kinds end in -c or -p), or, with
    ``dataset`` (a --dataset name), an export of another dataset (a FER-C tree given to a RAF-DB
    evaluation: its folders were all "missing")."""
    manifest = read_manifest(out_dir)
    kind = str((manifest or {}).get("kind", ""))
    if expect is not None and kind and not kind.endswith(f"-{expect}"):
        other = "p" if expect == "c" else "c"
        raise UserError(f"{flag} {out_dir}: its manifest records a {kind} tree, a {TREE_KINDS[other]}; "
                        f"expected a {TREE_KINDS[expect]}".lstrip())
    wanted = KIND_DATASETS.get(dataset or "")
    exported = kind.rpartition("-")[0]
    if wanted and exported in KIND_DATASET_NAMES and exported != wanted:
        raise UserError(f"{flag} {out_dir}: its manifest records a {kind} tree, an export of "
                        f"{KIND_DATASET_NAMES[exported]}; this evaluation reads {KIND_DATASET_NAMES[wanted]} "
                        f"(--dataset {dataset}): give that dataset's export, or the --dataset/--data of this "
                        f"one".lstrip())
    if manifest is not None and not manifest.get("complete", True):
        raise UserError(f"{Path(out_dir) / MANIFEST_NAME}: the export that writes {out_dir} has not finished "
                        f"(killed, failed, or shards still running); rerun the same export command to complete "
                        f"it (it resumes), then evaluate")
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> Path:
    """Stream the manifest to disk (no second copy of the hash table as one big string)."""
    path = out_dir / MANIFEST_NAME
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return path


def version_differences(manifest: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(item, recorded, current) for the generator version and every package version that differ."""
    differences = []
    old_generator = (manifest.get("generator") or {}).get("version")
    if old_generator != generator_version():
        differences.append(("generator version (git describe)", old_generator, generator_version()))
    old_versions = manifest.get("versions") or {}
    new_versions = package_versions()
    for name in sorted(set(old_versions) | set(new_versions)):
        if old_versions.get(name) != new_versions.get(name):
            differences.append((f"{name} version", old_versions.get(name), new_versions.get(name)))
    return differences


# What a manifest parameter that is not a flag of its own comes from, for the refusal message.
_PARAM_HINTS = {"param_set": "the parameter tables of this version differ",
                "extra_tables": "the held-out sets' parameter tables of this version differ",
                "extra_param_set": "--param-set",
                "corruption_set": "a tree of the 18 alone, of held-out sets, or of --corruption-set all (the "
                                  "18 and the held-out sets together) is not mixed with the others",
                "source_sha256": "the source CSV changed since: its rows cannot be matched to the "
                                 "files already written, so a changed CSV needs a new tree",
                "fallback_pad": "follows --source (aligned faces are padded) or --fallback-pad"}
# Parameters a tree records as None until a run needs them: a held-out tree of face corruptions only
# has no --param-set (they use none); the first ImageNet-C extra exported into it records its own.
_ADOPTED = frozenset({"extra_param_set"})
# Test splits of FER2013/FER+ (the CSV's Usage), chosen with --test-split.
_FER_SPLITS = ("PublicTest", "PrivateTest")


def _param_hint(key: str, old: Any, new: Any) -> str:
    """What the user changed for a differing manifest parameter (a flag, or why it differs)."""
    if key == "split" and (old in _FER_SPLITS or new in _FER_SPLITS):
        return "--test-split"
    return _PARAM_HINTS.get(key, "--" + key.replace("_", "-"))


def _check_compatible(manifest: dict, path: Path, kind: str, params: Mapping[str, Any],
                      force_rerender: bool = False) -> None:
    old_kind = manifest.get("kind")
    if old_kind != kind:
        raise UserError(
            f"{path}: this tree holds a {old_kind!r} export, not {kind!r}; choose a new --out"
        )
    old_params = manifest.get("params", {})
    # Every differing parameter at once: one flag can change two (--source also sets fallback_pad).
    differing = [key for key in sorted(set(old_params) | set(params)) if old_params.get(key) != params.get(key)
                 and not (key in _ADOPTED and old_params.get(key) is None)]
    if "corruption_set" in differing:  # the rest follow from it (a held-out tree's tables, say)
        differing = ["corruption_set"]
    if differing:
        hints = list(dict.fromkeys(_param_hint(key, old_params.get(key), params.get(key)) for key in differing))

        def shown(key, value):  # the 18's manifest has no corruption_set (it is as it always was)
            return "the 18 (--corruption-set rafdb)" if key == "corruption_set" and value is None else f"{key}={value!r}"
        raise UserError(
            f"{path}: the existing export used {', '.join(shown(key, old_params.get(key)) for key in differing)} "
            f"but this run asks for {', '.join(shown(key, params.get(key)) for key in differing)} "
            f"({'; '.join(hints)}); export into a new --out folder instead of mixing them"
        )
    differences = version_differences(manifest)
    if differences and not force_rerender:
        item, old, new = differences[0]
        more = f" (and {len(differences) - 1} more difference(s))" if len(differences) > 1 else ""
        raise UserError(
            f"{path}: the existing export was made with {item} {old!r}, this run has {new!r}{more}; "
            f"its files may differ from what this version renders. Export into a new --out folder, "
            f"or pass --force-rerender to render every file again"
        )


def _is_bookkeeping(name: str) -> bool:
    """Entries at the root of a tree that belong to the exporter's bookkeeping, never to the data:
    the lock file, the journal folder, write probes and temporary files."""
    return (name == LOCK_NAME or bool(_JOURNAL_RE.match(name)) or bool(_PROBE_RE.match(name))
            or bool(_TEMP_RE.match(name)))


def check_output_dir(out_dir: str | os.PathLike, *, kind: str, params: Mapping[str, Any],
                     force_rerender: bool = False, source_root: str | os.PathLike | None = None) -> dict | None:
    """Fail early (UserError) unless ``out_dir`` can take this export; return its manifest, if any.

    An ``out_dir`` inside ``source_root`` (the dataset read) is refused first, before anything is
    created there. Creates ``out_dir`` if needed and checks that a file can be created in it.
    """
    out_dir = Path(out_dir)
    if source_root is not None:  # a tree written into its own source dataset would be read back as data
        refuse_outputs_over_inputs([("--out", out_dir)], trees=[("the source dataset", source_root)])
    if out_dir.is_symlink() and not out_dir.exists():
        raise UserError(f"{out_dir}: is a broken symbolic link (to {os.readlink(out_dir)}, which does not "
                        f"exist); expected a folder to write into: create its target, or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: is a file; expected a folder to write into (a new one, or an earlier "
                        f"export's): choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot create the output folder ({error.strerror or error})") from None
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: not a folder")
    _probe_writable(out_dir, f".write-test-{os.getpid()}.tmp",
                    f"{out_dir}: output folder is not writable")
    manifest = read_manifest(out_dir)
    if manifest is None:
        content = [entry.name for entry in os.scandir(out_dir) if not _is_bookkeeping(entry.name)]
        if content:
            # A concurrent shard may have renamed its manifest in (before any of its files) between
            # the read and the listing: read again before taking the folder for someone else's.
            manifest = read_manifest(out_dir)
        if content and manifest is None:
            raise UserError(
                f"{out_dir}: folder is not empty and has no {MANIFEST_NAME} (it was not written by "
                f"this tool, e.g. it holds {sorted(content)[0]!r}); choose a new --out"
            )
    if manifest is None:
        return None
    _check_compatible(manifest, out_dir / MANIFEST_NAME, kind, params, force_rerender)
    return manifest


def _final_name(temp_name: str) -> str:
    """``.<final name>.<8 chars>.tmp`` -> ``<final name>``."""
    return temp_name[1:-13]


def remove_stray_temporaries(out_dir: str | os.PathLike, only: set[str] | None = None) -> int:
    """Delete temporary files left by a killed run anywhere under ``out_dir``; return how many.

    With ``only`` (relative POSIX paths of final files), only the temporaries of those files go:
    a shard must not delete the files that a concurrent shard is writing.
    """
    removed = 0
    out_dir = os.fspath(out_dir)
    for folder, _dirs, names in os.walk(out_dir):
        rel_folder = os.path.relpath(folder, out_dir).replace(os.sep, "/")
        for name in names:
            if not _TEMP_RE.match(name) or _PROBE_RE.match(name):
                continue
            if only is not None:
                final = _final_name(name) if rel_folder == "." else f"{rel_folder}/{_final_name(name)}"
                if final not in only:
                    continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# Shards (BENCHMARK.md §11.6)


def parse_shard(text: str) -> tuple[int, int]:
    """argparse type of ``--shard``: ``i/N`` with 0 <= i < N (N >= 1) -> ``(i, N)``."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected i/N such as 0/4 (shard i of N, counted from 0), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise argparse.ArgumentTypeError(
            f"expected i/N with N >= 1 and 0 <= i < N (shards are counted from 0), got {text!r}")
    return index, count


def plan_digest(units: Sequence[WorkUnit]) -> str:
    """SHA-256 of a whole export's work list (every unit's key and outputs, in key order): the shards
    of one export must share it, or one of them would mark the manifest complete over a list the
    others do not render."""
    digest = hashlib.sha256()
    for unit in sorted(units, key=lambda unit: unit.key):
        digest.update(f"{unit.key}\t{chr(31).join(unit.outputs)}\n".encode("utf-8"))
    return digest.hexdigest()


def shard_units(units: Sequence[WorkUnit], shard: tuple[int, int] | None) -> list[WorkUnit]:
    """The units of shard ``(i, N)``: every N-th unit, starting at the i-th, in the order of their
    keys (so the split depends only on the set of source file names, not on listing order)."""
    if shard is None or shard == (0, 1):
        return list(units)
    index, count = shard
    if not 0 <= index < count:
        raise UserError(f"--shard {index}/{count}: expected 0 <= i < N")
    return sorted(units, key=lambda unit: unit.key)[index::count]


# --------------------------------------------------------------------------------------------
# Lock and journal: the record of finished units that survives the process


@contextlib.contextmanager
def _tree_lock(out_dir: Path):
    """Exclusive lock of a tree around every read-modify-write of its manifest and journals: ``flock``
    on the folder itself (nothing is left in the tree), or on ``.export.lock`` where the file system
    cannot lock a folder (e.g. some NFS clients). The kernel releases it if the process dies."""
    import fcntl

    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        try:
            fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise UserError(f"{out_dir / LOCK_NAME}: cannot create the lock file "
                            f"({error.strerror or error})") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


class _Journal:
    """This process's append-only journal ``<out>/.journal-<host>-<pid>-<random>.jsonl``.

    One line per finished unit, ``[key, inputs digest, [[relative path, sha256], ...]]``, written
    with one unbuffered ``write`` after the unit's files are renamed into place (so it survives
    SIGKILL) and ``fsync``-ed at most once a second and at the end. The file is ``flock``-ed for the
    writer's life: a journal nobody holds belongs to a finished or dead run and may be folded.
    """

    SYNC_SECONDS = 1.0

    def __init__(self, out_dir: Path):
        import fcntl
        import secrets
        import socket

        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40]
        self.path = out_dir / f".journal-{host}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.synced = time.monotonic()
        self.records = 0
        self.size = 0  # bytes of whole records in the file

    def add(self, key: str, inputs: str, hashes: Sequence[tuple[str, str]]) -> None:
        """Append one record. A short write (a nearly full disk) is continued until the whole line is
        written; if that fails, the part written is cut off again (a torn line would also swallow the
        next record) and the error says what is kept."""
        line = (json.dumps([key, inputs, hashes], separators=(",", ":")) + "\n").encode("utf-8")
        try:
            view = memoryview(line)
            while view:
                written = os.write(self.fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            now = time.monotonic()
            if now - self.synced >= self.SYNC_SECONDS:
                os.fsync(self.fd)
                self.synced = now
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise UserError(f"{self.path}: cannot record finished work ({error.strerror or error}); the "
                            f"{self.records} image(s) recorded so far are kept: free space and rerun the "
                            f"same command to render the rest") from None
        self.size += len(line)
        self.records += 1

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


def journal_files(out_dir: str | os.PathLike) -> list[Path]:
    """The journals at the root of ``out_dir``, oldest first (later records override earlier ones)."""
    paths = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(out_dir):
            if _JOURNAL_RE.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    paths.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    return [path for _mtime, _name, path in sorted(paths)]


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def is_tree_path(rel: object) -> bool:
    """Whether ``rel`` is a relative POSIX path that stays inside the tree (``f1/a.jpg``): not
    absolute, no empty, ``.`` or ``..`` part. A manifest or journal entry that is not one would make
    a rerun delete or overwrite a file outside the tree."""
    return (isinstance(rel, str) and bool(rel) and not rel.startswith("/") and "\0" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def read_journal(path: str | os.PathLike) -> list[tuple[str, str, list]]:
    """The records of one journal; a torn last line (a write cut by a crash) and any line that is not
    a well-formed record (one naming a path outside the tree or a malformed SHA-256 included) are
    ignored (those units are simply rendered again)."""
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    records = []
    for line in lines[:-1]:  # the text after the last newline is empty or torn
        try:
            key, inputs, hashes = json.loads(line)
            if isinstance(key, str) and isinstance(inputs, str) and isinstance(hashes, list):
                pairs = [(rel, sha) for rel, sha in hashes]
                if all(is_tree_path(rel) and isinstance(sha, str) and _SHA256_RE.fullmatch(sha)
                       for rel, sha in pairs):
                    records.append((key, inputs, pairs))
        except (ValueError, TypeError):
            continue
    return records


def _journal_is_live(path: Path) -> bool | None:
    """Whether a running export holds the journal ``path`` (its ``flock``); None if it is gone."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except PermissionError:  # another user's journal in a shared folder: taken for a live one
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def live_exports(out_dir: str | os.PathLike, own: _Journal | None = None) -> list[Path]:
    """The journals of the exports running into ``out_dir`` now (this process's own left out): while
    there is one, the temporary files in the tree may be files it is writing."""
    return [path for path in journal_files(out_dir)
            if (own is None or path != own.path) and _journal_is_live(path)]


def _fold_journals(out_dir: Path, files: dict, unit_digests: dict, own: _Journal | None = None) -> list[Path]:
    """Fold into ``files``/``unit_digests`` this process's journal and every journal no live process
    holds; return their paths (delete them once the manifest that holds them is written). Call with
    the tree lock held."""
    folded = []
    for path in journal_files(out_dir):
        if own is None or path != own.path:
            if _journal_is_live(path) is not False:
                continue  # gone, or a live writer (another shard): it folds its own journal when it finishes
        for key, inputs, hashes in read_journal(path):
            files.update(hashes)
            unit_digests[key] = inputs
        folded.append(path)
    return folded


def _remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------------------------
# Workers

_WORKER: dict[str, Any] = {}
# Why a unit was rendered (ExportResult.reasons) and how the summary says it.
_REASONS = {
    "finished": "image(s) finished that an interrupted run had partly written",
    "missing": "image(s) rendered again because some of their files recorded as finished were missing",
    "widened": "image(s) rendered in full to add folders to the files an earlier run of another selection wrote",
    "changed": "image(s) rendered again because their source changed",
    "unrecorded": ("image(s) rendered again because their files existed but were never recorded as finished "
                   "(a run stopped between writing and recording them)"),
    "forced": "image(s) rendered again (--force-rerender)",
}
# The same, while another export was running into the tree: the files it had written but not yet
# recorded look like those of an interrupted run.
_CONCURRENT_REASONS = {
    "finished": ("image(s) finished that an interrupted run, or another export writing this folder at the same "
                 "time, had partly written"),
    "unrecorded": ("image(s) rendered again because their files existed but were not recorded as finished (written "
                   "by another export running into this folder at the same time, or by a run that stopped "
                   "between writing and recording them)"),
}


def _init_worker(render: Callable, out_dir: str, known: Mapping[str, str], force: bool,
                 fresh: bool = False, siblings: Sequence[str] = (), partial: Mapping[str, str] | None = None,
                 pooled: bool = True) -> None:
    _WORKER["render"] = render
    _WORKER["out_dir"] = out_dir
    _WORKER["known"] = known  # unit key -> inputs digest of a unit recorded as finished
    _WORKER["force"] = force
    _WORKER["fresh"] = fresh  # the tree had no manifest: no output can exist yet, skip the checks
    _WORKER["siblings"] = siblings  # the tree's folders that this run's selection does not write
    _WORKER["partial"] = partial or {}  # unit key -> digest of a unit recorded without all of this run's outputs
    if pooled and "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)  # one process per core already; no thread oversubscription
    if pooled:
        _follow_parent()


_POOL_PARENT: int | None = None  # the exporting process's pid, seen by its forked workers


def _follow_parent() -> None:
    """In a pool worker: end with the exporting process. Its Ctrl-C is its own (the parent stops the
    workers), and if it dies without stopping them (SIGKILL), the kernel sends this worker SIGKILL
    (Linux ``PR_SET_PDEATHSIG``): a worker blocked on the pool's pipes would otherwise wait forever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):  # not Linux, or no C library: the parent's own cleanup only
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    if _POOL_PARENT is not None and os.getppid() != _POOL_PARENT:  # died before the call above
        os._exit(1)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.<name>.<pid, 8 hex digits>.tmp`` and a rename.

    The export's hot path (one call per output file): plain ``os`` calls, no random name (a process
    writes one file at a time, and concurrent shards never write the same file), folders created
    when missing. A temporary file left by a killed process is overwritten or removed by the next
    run. Not ``fsync``-ed (see the module docstring).
    """
    folder, name = os.path.split(path)
    tmp = f"{folder}/.{temp_stem(name)}.{os.getpid() & 0xFFFFFFFF:08x}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = -1
    # Every step inside the try, the open too: a signal handler that raises (SIGTERM or Ctrl-C with
    # --workers 1) runs as soon as a call returns, e.g. right after the temporary file was created.
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        closing, fd = fd, -1
        os.close(closing)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):  # not created (the open failed), or already renamed
            os.unlink(tmp)
        raise


def _describe(error: BaseException) -> str:
    if isinstance(error, UserError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _process_unit(unit: WorkUnit) -> tuple:
    """Skip or render one unit.

    Returns ("skipped", n outputs), ("written", key, inputs digest, [(rel, sha256)], reason, complete)
    (and the stale files of other selections removed: :func:`_remove_stale_siblings`)
    with reason "new" or a key of ``_REASONS``, ("error", name, message) for a fault of the unit
    (its source, its rendering), or ("error", None, message, remedy) when an output could not be
    written (:func:`_output_error`: the message names the output, not the source).
    """
    out_dir = _WORKER["out_dir"]
    try:
        digest = inputs_digest(unit.inputs)
        exists = ([False] * len(unit.outputs) if _WORKER["fresh"] else
                  [os.path.isfile(os.path.join(out_dir, rel)) for rel in unit.outputs])
        complete = all(exists)
        recorded = _WORKER["known"].get(unit.key)
        partial = _WORKER["partial"].get(unit.key)  # recorded by a run of another selection
        changed = (recorded or partial) is not None and (recorded or partial) != digest
        if _WORKER["force"]:
            reason = "forced" if complete else "new"
        elif recorded == digest and complete:
            return ("skipped", len(unit.outputs))
        elif changed:
            reason = "changed"
        elif complete:
            reason = "unrecorded"
        elif partial is not None and any(exists):
            reason = "widened"
        elif recorded is not None:  # recorded as finished (same source), but a file is gone since
            reason = "missing"
        else:
            reason = "finished" if any(exists) else "new"
        # A changed source makes the unit's files in the folders of other selections stale (the unit's
        # record takes the new digest, --force-rerender or not): removed now, for the exports of those
        # selections to render again. Until this unit is recorded, a rerun finds it changed again and
        # reports the same paths, so a run that failed or was killed after the removal loses nothing.
        removed = _remove_stale_siblings(out_dir, unit) if changed and _WORKER["siblings"] else []
        items = list(_WORKER["render"](unit))
        produced = [rel for rel, _data in items]
        if sorted(produced) != sorted(unit.outputs):
            raise RuntimeError(
                f"render returned {sorted(produced)[:3]}... but the unit lists "
                f"{sorted(unit.outputs)[:3]}... ({len(produced)} vs {len(unit.outputs)} files)"
            )
        hashes = []
        sha256 = hashlib.sha256
        for rel, data in items:
            try:
                atomic_write_bytes(f"{out_dir}/{rel}", data)
            except OSError as error:  # the output side, not a fault of the unit's source file
                return _output_error(out_dir, rel, unit, error)
            hashes.append((rel, sha256(data).hexdigest()))
        return ("written", unit.key, digest, hashes, reason, complete, removed)
    except Exception as error:  # reported by the parent as a UserError naming the unit
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            # the output folder's disk is full, not a fault of the unit's source file: name the folder
            return ("error", None, f"{out_dir}: {error.strerror or error} (while writing the outputs of "
                                   f"{unit.name})", "free space on that disk")
        message = _describe(error)
        # a message that already names the unit's source file is not prefixed with the unit name
        name = next((path for path in unit.inputs if message.startswith(str(path))), unit.name)
        return ("error", name, message)


def _output_error(out_dir: str, rel: str, unit: WorkUnit, error: OSError) -> tuple:
    """The ("error", None, message, remedy) of an output file that :func:`atomic_write_bytes` could
    not write: a full disk names the output folder; a temporary file deleted before its rename
    (``os.replace`` found no source) means another process, normally another export started into
    the same folder, removed it; anything else (a read-only folder, no permission) names the file."""
    reason = error.strerror or str(error)
    while_writing = f"(while writing the outputs of {unit.name})"
    if error.errno in DISK_FULL:
        return ("error", None, f"{out_dir}: {reason} {while_writing}", "free space on that disk")
    if isinstance(error, FileNotFoundError) and error.filename2 is not None and os.path.isdir(
            os.path.dirname(f"{out_dir}/{rel}")):
        return ("error", None,
                f"{out_dir}/{rel}: its temporary file {os.path.basename(error.filename)} was deleted before it "
                f"was renamed into place {while_writing}: another export (or another process) is writing "
                f"{out_dir} at the same time",
                "let the other export finish, or stop it")
    return ("error", None, f"{out_dir}/{rel}: cannot write this output file ({reason}) {while_writing}",
            "make that folder writable")


def _remove_stale_siblings(out_dir: str, unit: WorkUnit) -> list[str]:
    """Delete the files of ``unit`` in the tree's folders of other selections (the same path below
    each such folder as one of the unit's outputs below its own); the relative paths of all of them,
    those already gone included (the parent drops those the manifest lists)."""
    rests = {rel.split("/", 1)[1] for rel in unit.outputs if "/" in rel}
    removed = []
    for folder in _WORKER["siblings"]:
        for rest in sorted(rests):
            rel = f"{folder}/{rest}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{out_dir}/{rel}")
            removed.append(rel)
    return removed


def _warm_up(render: Callable, units: Sequence[WorkUnit], known: Mapping[str, str], force: bool) -> None:
    """Render, and discard, the first unit the workers will render (see ``export(warm_up=...)``).
    A failure is left to the worker that renders the unit, which reports it properly."""
    unit = next((unit for unit in units if force or unit.key not in known), None)
    if unit is not None:
        with contextlib.suppress(Exception):
            render(unit)


_QUIET_POOL_THREADS = []  # set once: threading.excepthook then ignores the race below


def _quiet_pool_thread_races() -> None:
    """Once the workers are terminated, the pool's management thread sets BrokenProcessPool on the
    futures still pending; on Python 3.11 one that ``map`` has just cancelled raises
    InvalidStateError there, printed as a thread traceback after the export's own one-line message
    (SIGTERM, a dead worker). That race is harmless, so threading.excepthook ignores exactly it."""
    import threading
    from concurrent.futures import InvalidStateError

    if _QUIET_POOL_THREADS:
        return
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, InvalidStateError) and "cancelled" in str(args.exc_value).lower():
            return
        previous(args)

    threading.excepthook = hook
    _QUIET_POOL_THREADS.append(hook)


WORKER_STOP_SECONDS = 3.0  # how long stopped pool workers get to end after SIGTERM before SIGKILL


def _terminated_line(done: int, total: int) -> str:
    return (f"terminated (SIGTERM): {done} of {total} image(s) are recorded as finished and kept; rerun the same "
            f"command to render the rest")


@contextlib.contextmanager
def _in_process_sigterm(done: Callable[[], int], total: int) -> Iterator[None]:
    """Rendering in this process (``workers=1``): SIGTERM says what is kept and exits with 143, as
    with a pool (:func:`_pooled`); the file being written leaves no temporary file behind."""
    import signal

    def terminated(_signum, _frame):
        print(_terminated_line(done(), total), file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: no handler, the default action
        previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _pooled(units: Sequence[WorkUnit], workers: int, chunksize: int, initargs: tuple,
            done: Callable[[], int], total: int) -> Iterator[tuple]:
    """The outcomes of ``_process_unit`` over ``units`` in ``workers`` forked processes, in order.

    A ProcessPoolExecutor, not a multiprocessing.Pool: a worker that dies (SIGKILL from the
    out-of-memory killer, a crash in native code) breaks the pool at once, where a Pool silently
    replaces the worker and waits forever for the units it held. That is a UserError saying how much
    is kept; on any exit the workers are stopped (SIGTERM, then SIGKILL for one still alive after
    WORKER_STOP_SECONDS).
    """
    import signal
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _POOL_PARENT
    _POOL_PARENT = os.getpid()

    def terminated(_signum, _frame):
        if os.getpid() != _POOL_PARENT:
            # A worker forked before its initializer reset SIGTERM inherits this handler: it ends at once.
            os._exit(128 + signal.SIGTERM)
        # SIGTERM (scancel, a pod stopped): stop the workers (finally below) and exit quietly.
        print(_terminated_line(done(), total), file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: no handler, the default action
        previous = signal.signal(signal.SIGTERM, terminated)
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=initargs)
    try:
        yield from executor.map(_process_unit, units, chunksize=chunksize)
    except BrokenProcessPool:
        codes = sorted({process.exitcode for process in (getattr(executor, "_processes", None) or {}).values()
                        if process.exitcode not in (None, 0)})
        # The pool itself stops the other workers with SIGTERM once one has died: not the cause.
        codes = [code for code in codes if code != -signal.SIGTERM]
        how = f" (exit code {', '.join(map(str, codes))})" if codes else ""
        raise RunFailed(
            f"a worker process of the export ended abruptly{how}: killed by a signal (e.g. the system's "
            f"out-of-memory killer) or crashed; {done()} of {total} image(s) are recorded as finished and kept: "
            f"rerun the same command, which renders only the rest (with fewer --workers if memory ran out)"
        ) from None
    finally:
        processes = list((getattr(executor, "_processes", None) or {}).values())  # shutdown drops them
        _quiet_pool_thread_races()
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        # A worker that survives SIGTERM (blocked for good on a queue lock that a sibling held when it
        # was stopped, or ignoring the signal) would keep this process from exiting, which joins its
        # children: after a grace period it is killed.
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join(1.0)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _single_threaded_blas():
    """Limit BLAS to one thread while rendering (undone by ``.restore_original_limits()``); forked
    workers inherit the limit. The export already runs one process per core, and the corruptions'
    matrix products are small (100 x 100): extra BLAS threads only spin. Measured: an ImageNet-C
    extra-set export on 300 faces took 17.1 s of CPU with two OpenBLAS threads against 7.6 s with one,
    and more wall time too."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _default_chunksize(n_units: int, workers: int) -> int:
    return max(1, min(8, n_units // (workers * 16)))


def _is_complete(units: Sequence[WorkUnit], files: Mapping[str, str], unit_digests: Mapping[str, str]) -> bool:
    """Whether every unit is recorded with the digest its inputs have now and all its outputs."""
    cache: dict[tuple, str] = {}
    for unit in units:
        recorded = unit_digests.get(unit.key)
        if recorded is None or any(rel not in files for rel in unit.outputs):
            return False
        if unit.inputs not in cache:
            cache[unit.inputs] = inputs_digest(unit.inputs)
        if cache[unit.inputs] != recorded:
            return False
    return True


def _unfinished_shards(units: Sequence[WorkUnit], files: Mapping[str, str], unit_digests: Mapping[str, str],
                       count: int) -> list[int]:
    """The shards i of N = ``count`` whose units are not all recorded as finished (still running,
    failed, or a source changed since they ran)."""
    return [index for index in range(count)
            if not _is_complete(shard_units(units, (index, count)), files, unit_digests)]


def refuse_duplicate_keys(units: Sequence[WorkUnit]) -> None:
    """UserError naming both units when two share a key (the base name of their names): their
    records in the manifest, and usually their files, would overwrite each other. The unit lists
    come from the source files, so this names the two sources (callers check earlier, with a
    message of their own, where a clash can come from the files' names)."""
    first_of: dict[str, WorkUnit] = {}
    for unit in units:
        first = first_of.setdefault(unit.key, unit)
        if first is not unit:
            raise UserError(f"{first.name} and {unit.name}: two source images with the same name {unit.key!r} in "
                            "the export (each image's record needs its own name); rename one of them")


def _pending_folders(manifest: Mapping[str, Any] | None) -> set[str]:
    """The folders an unfinished export recorded as being written (none for a finished one)."""
    if not manifest or manifest.get("complete", True):
        return set()
    return set(manifest.get("pending_folders") or [])


def _is_manifest_temporary(name: str) -> bool:
    """Whether a name at the root of a tree is ``.manifest.json.<8 chars>.tmp``."""
    return name.startswith(f".{MANIFEST_NAME}.") and bool(_TEMP_RE.match(name))


def _remove_manifest_temporaries(out_dir: Path) -> None:
    """Delete ``.manifest.json.<8 chars>.tmp`` files at the root (call it holding the tree lock): the
    manifest is only written under that lock, so any such file is left by a run killed while writing."""
    for entry in os.scandir(out_dir):
        if _is_manifest_temporary(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _warn_gone_sources(out_dir: Path, unit_digests: Mapping[str, str], units: Sequence[WorkUnit]) -> None:
    """Warn when the tree records images that are no longer among the sources (deleted or renamed
    since): their files stay in the tree and in the manifest, and an evaluation that lists them
    (e.g. by the dataset's label file) still reads them."""
    gone = sorted(set(unit_digests) - {unit.key for unit in units})
    if gone:
        LOG.warning("%s: %d image(s) recorded in %s are no longer among the source images (%s%s); their "
                    "files stay in the tree and in the manifest: delete them by hand, or export into a new "
                    "--out folder for a tree of the current sources only", out_dir, len(gone), MANIFEST_NAME,
                    ", ".join(gone[:3]), ", ..." if len(gone) > 3 else "")


def export(
    units: Sequence[WorkUnit],
    render: Callable[[WorkUnit], Iterable[tuple[str, bytes]]],
    out_dir: str | os.PathLike,
    *,
    generator: str,
    kind: str,
    params: Mapping[str, Any],
    sources: Sequence[str],
    source_root: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    chunksize: int | None = None,
    force_rerender: bool = False,
    shard: tuple[int, int] | None = None,
    warm_up: bool = False,
) -> ExportResult:
    """Render ``units`` (or shard ``(i, N)`` of them) into ``out_dir`` (see the module docstring).

    ``warm_up``: with a pool, first render one unit in this process and discard it, so that the
    per-size tables ``render`` builds on first use (zoom operators, byte tables) are built once here
    and shared copy-on-write by the forked workers, instead of once per worker. ``render`` must then
    be a pure function of its unit (the outputs do not depend on what was rendered before).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    # The last digest is cached for the units that share their inputs (RAF-DB-P: ten per face); a
    # source rewritten since an earlier export in this process must be hashed again.
    inputs_digest.cache_clear()
    out_dir = Path(out_dir)
    workers = resolve_workers(workers)
    refuse_duplicate_keys(units)
    mine = shard_units(units, shard)
    check_output_dir(out_dir, kind=kind, params=params, force_rerender=force_rerender, source_root=source_root)

    with _tree_lock(out_dir):
        # Read again under the lock: a concurrent shard may have written the manifest meanwhile.
        old = check_output_dir(out_dir, kind=kind, params=params, force_rerender=force_rerender)
        fresh = old is None and not journal_files(out_dir)
        files: dict[str, str] = dict(old["files"]) if old else {}
        unit_digests: dict[str, str] = dict(old.get("units") or {}) if old else {}
        folded = _fold_journals(out_dir, files, unit_digests)
        _remove_manifest_temporaries(out_dir)
        _warn_gone_sources(out_dir, unit_digests, units)
        if old and version_differences(old):
            # force_rerender (else check_output_dir refused): the tree must not keep files of the old
            # version that this run would not rewrite, since the manifest will name the new version.
            produced = {rel for unit in units for rel in unit.outputs}
            leftover = sorted(rel for rel in files if rel not in produced)
            if leftover:
                item, was, now = version_differences(old)[0]
                raise UserError(
                    f"{out_dir / MANIFEST_NAME}: the tree holds {len(leftover)} file(s) made with {item} "
                    f"{was!r} that this run does not produce (e.g. {leftover[0]}), and this run has {now!r}; "
                    f"rerun with the selection that made them, or export into a new --out folder"
                )
            unit_digests = {}
        plan = None if shard is None else {"shards": shard[1], "digest": plan_digest(units)}
        running = (old or {}).get("shard_plan") if old and not old.get("complete", True) else None
        if plan is not None and running is not None and running != plan:
            raise UserError(
                f"--shard {shard[0]}/{shard[1]}: {out_dir} holds an unfinished export split into "
                f"{running.get('shards')} shard(s) whose work list differs from this one's (other "
                f"--corruptions, --severities, --perturbations, shard count or source images); every shard "
                f"of one export needs the same flags and N. Finish those shards with their own flags, run "
                f"the export once without --shard (it renders what is missing and completes the manifest), "
                f"or export into a new --out folder")
        manifest = _new_manifest(old, generator, kind, params, sources, source_root, files, unit_digests)
        if plan is not None:
            manifest["shard_plan"] = plan
        # The folders this run writes, for verify while it is unfinished (dropped when complete).
        my_folders = {_folder_of(rel) for unit in mine for rel in unit.outputs}
        manifest["pending_folders"] = sorted(_pending_folders(old) | my_folders)
        # Written before any worker starts: a killed run leaves a manifest that guards the parameters.
        manifest_path = _write_manifest(out_dir, manifest)
        _remove_files(folded)
        journal = _Journal(out_dir)
        # Temporary files left by a killed run are removed, under the lock (no export starts meanwhile),
        # unless another export is running into the tree: they may be the files it is writing now.
        # Then the cleanup waits for the end of the run (the last one to finish does it).
        only = None if shard is None else {rel for unit in mine for rel in unit.outputs}
        concurrent = len(live_exports(out_dir, own=journal))
        removed = 0 if concurrent else remove_stray_temporaries(out_dir, only)
    # Units recorded as finished, with every output listed: the workers skip them if their files exist.
    known = {unit.key: unit_digests[unit.key] for unit in mine
             if unit.key in unit_digests and all(rel in files for rel in unit.outputs)}
    partial = {unit.key: unit_digests[unit.key] for unit in mine if unit.key in unit_digests and unit.key not in known}
    # Folders of the tree that this run's selection (all its shards) does not write.
    siblings = tuple(sorted(set(folder_counts(files)) - {_folder_of(rel) for unit in units for rel in unit.outputs}
                            - {"."}))
    del files, unit_digests, manifest, old  # the parent keeps no per-file tables while rendering

    if removed:
        LOG.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out_dir)
    if concurrent:
        LOG.info("%d other export(s) are writing into %s at the same time: the temporary files there are "
                 "left alone", concurrent, out_dir)

    result = ExportResult(out_dir=out_dir, manifest_path=manifest_path, units=len(mine), workers=workers,
                          shard=shard, concurrent=concurrent)
    n_files = sum(len(unit.outputs) for unit in mine)
    label = f"{kind} shard {shard[0]}/{shard[1]}" if shard else kind
    bar = tqdm(total=n_files, unit="file", disable=None if progress else True, file=sys.stderr, smoothing=0.05,
               desc=f"{label} -> {out_dir}")

    def consume(outcome: tuple) -> None:
        status = outcome[0]
        if status == "skipped":
            result.units_skipped += 1
            result.files_skipped += outcome[1]
            bar.update(outcome[1])
            return
        if status == "error":
            _status, name, message, *output_remedy = outcome
            if name is None:  # an output could not be written (_process_unit): the message names it
                text, remedy = message, output_remedy[0]
            else:
                text = message if message.startswith(str(name)) else f"{name}: {message}"
                remedy = "fix this (or leave the file out of the dataset)"
            done = result.units_skipped + result.units_rendered
            raise UserError(f"{text}; {done} of {result.units} image(s) are recorded as finished and kept: "
                            f"{remedy}, then rerun the same command, which renders only the rest")
        _status, key, inputs, hashes, reason, complete, removed = outcome
        result.stale_removed.extend(removed)
        journal.add(key, inputs, hashes)
        result.units_rendered += 1
        result.files_written += len(hashes)
        result.units_stale += bool(complete)
        if reason != "new":
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
        bar.update(len(hashes))

    blas = _single_threaded_blas()
    try:
        if workers == 1 or len(mine) <= 1:
            result.workers = 1
            saved = dict(_WORKER)
            _init_worker(render, str(out_dir), known, force_rerender, fresh, siblings, partial, pooled=False)
            try:
                with _in_process_sigterm(lambda: result.units_skipped + result.units_rendered, len(mine)):
                    for unit in mine:
                        consume(_process_unit(unit))
            finally:
                _WORKER.clear()
                _WORKER.update(saved)
        else:
            workers = result.workers = min(workers, len(mine))  # no process without a unit to render
            if warm_up:
                _warm_up(render, mine, known, force_rerender)
            size = chunksize or _default_chunksize(len(mine), workers)
            for outcome in _pooled(mine, workers, size,
                                   (render, str(out_dir), known, force_rerender, fresh, siblings, partial),
                                   lambda: result.units_skipped + result.units_rendered, len(mine)):
                consume(outcome)
    except KeyboardInterrupt:  # Ctrl-C, with one worker or many: what is kept, as for SIGTERM
        print(f"interrupted (Ctrl-C): {result.units_skipped + result.units_rendered} of {len(mine)} image(s) are "
              f"recorded as finished and kept; rerun the same command to render the rest", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        blas.restore_original_limits()
        bar.close()
        journal.close()  # on failure the journal stays: the next run (or shard) folds it

    if result.units_stale:
        LOG.info("%d image(s) rendered again although their files existed%s", result.units_stale,
                 result.rerender_note)
    with _tree_lock(out_dir):
        current = read_manifest(out_dir) or {}
        # (this run wrote complete False at its start: only a concurrent run can have completed it)
        result.completed_by_another = current.get("complete") is True
        files = dict(current.get("files") or {})
        unit_digests = dict(current.get("units") or {})
        folded = _fold_journals(out_dir, files, unit_digests, own=journal)
        # stale files of other selections, deleted by the workers: those the manifest lists
        result.stale_removed = [rel for rel in result.stale_removed if files.pop(rel, None) is not None]
        manifest = _new_manifest(current, generator, kind, params, sources, source_root, files, unit_digests)
        # Folders an earlier unfinished run of another selection writes stay pending: this run's
        # units being complete does not finish them; nor do the folders whose stale files were removed.
        all_folders = {_folder_of(rel) for unit in units for rel in unit.outputs}
        stale_folders = {_folder_of(rel) for rel in result.stale_removed}
        result.stale_folders = sorted(stale_folders)
        if stale_folders:
            LOG.warning("%d file(s) of %d image(s) whose source changed were removed from %d folder(s) that "
                        "this run does not write (%s%s): rerun the export(s) that write them",
                        len(result.stale_removed), result.reasons.get("changed", 0), len(stale_folders),
                        ", ".join(sorted(stale_folders)[:3]), ", ..." if len(stale_folders) > 3 else "")
        result.pending_elsewhere = sorted(_pending_folders(current) - all_folders - stale_folders)
        if shard is not None and shard[1] > 1:
            result.unfinished_shards = _unfinished_shards(units, files, unit_digests, shard[1])
            finished = not result.unfinished_shards
        else:
            finished = _is_complete(units, files, unit_digests)
        manifest["complete"] = result.complete = finished and not result.pending_elsewhere and not stale_folders
        if not result.complete:  # a finished tree equals an unsharded export's: no shard or pending record
            if plan is not None:
                manifest["shard_plan"] = plan
            # this run's folders stay pending while its own work list is unfinished (other shards);
            # once it is finished they are done, whatever an earlier run of another selection left
            pending = _pending_folders(current)
            pending = pending - all_folders if finished else pending | my_folders
            manifest["pending_folders"] = sorted(pending | stale_folders)
        _write_manifest(out_dir, manifest)
        _remove_files(folded)
        result.running_at_end = len(live_exports(out_dir))
        # Skipped at the start, or another export ran meanwhile and was killed (its journal, folded
        # here, was no live one): with no other export running now, its temporaries are strays.
        others_folded = any(path != journal.path for path in folded)
        if (concurrent or others_folded) and not result.running_at_end:
            removed = remove_stray_temporaries(out_dir, only)
            if removed:
                LOG.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out_dir)
    result.seconds = time.perf_counter() - start
    return result


def _new_manifest(old: Mapping[str, Any] | None, generator: str, kind: str, params: Mapping[str, Any],
                  sources: Sequence[str], source_root: str | None, files: dict, unit_digests: dict) -> dict:
    """The manifest of this run (complete False), merged with what ``old`` records (its source root
    is kept: informational, the per-image digests are what reruns compare)."""
    old = old or {}
    old_source = old.get("source") or {}
    return {
        "format_version": MANIFEST_FORMAT,
        "generator": {"name": generator, "version": generator_version()},
        "kind": kind,
        # a value a concurrent run recorded in the meantime (a face-only run ends after an ImageNet-C
        # export set --param-set) is kept: this run, which needs none, would write None over it
        "params": {**params, **{key: (old.get("params") or {}).get(key) for key in _ADOPTED
                                if params.get(key) is None and (old.get("params") or {}).get(key) is not None}},
        "source": {
            # as the first run gave it: a rerun or a shard that spells the folder otherwise (a link,
            # a relative path, another machine's mount) does not change the manifest's bytes
            "root": old_source.get("root") or source_root,
            "files": sorted(set(old_source.get("files") or []) | set(sources)),
        },
        "versions": package_versions(),
        "complete": False,
        "folders": folder_counts(files),
        "files": files,
        "units": unit_digests,
    }


# --------------------------------------------------------------------------------------------
# Verification


def verify(out_dir: str | os.PathLike, *, progress: bool = False) -> VerifyReport:
    """Check ``out_dir`` against its manifest: missing, altered and unexpected files. For an export
    that did not finish, the files its journals record are checked against their journaled digests
    (not reported as unexpected); the tree is still not ``ok`` until the export completes."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        what = "is a file, not an exported folder" if out_dir.exists() else "no such folder"
        raise UserError(f"{out_dir}: {what} (nothing to verify)")
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UserError(f"{out_dir / MANIFEST_NAME}: missing; {out_dir} was not written by an export")
    report = VerifyReport(out_dir=out_dir, complete=bool(manifest.get("complete", False)),
                          kind=str(manifest.get("kind") or ""))
    listed: dict[str, str] = dict(manifest["files"])
    if not report.complete:  # an interrupted export: its journals record the units finished since
        for path in journal_files(out_dir):
            for _key, _inputs, hashes in read_journal(path):
                report.journaled += sum(rel not in listed for rel, _digest in hashes)
                listed.update(hashes)
    for rel, digest in tqdm(sorted(listed.items()), unit="file", disable=None if progress else True, file=sys.stderr):
        path = out_dir / rel
        if not path.is_file():
            report.missing.append(rel)
            continue
        report.checked += 1
        if sha256_file(path) != digest:
            report.altered.append(rel)
    output_folders = {_folder_of(rel) for rel in listed} | set(manifest.get("pending_folders") or [])
    for folder, dirs, names in os.walk(out_dir):
        if Path(folder) == out_dir:
            # Bookkeeping of the exporter: the lock, journals, write probes (a process killed
            # between creating and deleting its probe leaves it; it holds no data) and the manifest's
            # own temporary file (a run killed while writing it; the next run removes it).
            names = [name for name in names if name != LOCK_NAME and not _JOURNAL_RE.match(name)
                     and not _PROBE_RE.match(name) and not _is_manifest_temporary(name)]
        for name in names:
            rel = Path(folder, name).relative_to(out_dir).as_posix()
            if rel == MANIFEST_NAME or rel in listed or is_os_metadata(name):
                continue
            if not report.complete and (_folder_of(rel) in output_folders or _TEMP_RE.match(name)):
                report.unrecorded.append(rel)
            else:
                report.unexpected.append(rel)
    report.unexpected.sort()
    report.unrecorded.sort()
    return report


def print_verify_report(report: VerifyReport, stream=None) -> None:
    """One line per problem file, then a summary line."""
    stream = stream or sys.stdout
    if not report.complete:
        unrecorded = (f"; {len(report.unrecorded)} file(s) in its output folders are not recorded yet (written "
                      "as it stopped, or temporary) and are written again by the rerun" if report.unrecorded else "")
        print(f"incomplete: {report.out_dir / MANIFEST_NAME} records an export that did not finish "
              f"({report.journaled} file(s) finished since are known from its journal and checked "
              f"against it{unrecorded}); rerun the export to complete it", file=stream)
    for label, paths in (("missing", report.missing), ("altered", report.altered),
                         ("unexpected", report.unexpected)):
        for rel in paths:
            print(f"{label}: {report.out_dir / rel}", file=stream)
    verdict = "OK" if report.ok else "FAILED" + ("" if report.complete else " (the export has not finished)")
    kind = f" (a {report.kind} tree)" if report.kind else ""
    print(f"{verdict}: {report.checked} file(s) checked in {report.out_dir}{kind}; {len(report.missing)} missing, "
          f"{len(report.altered)} altered, {len(report.unexpected)} unexpected", file=stream)


def verify_command(out_dir: str | os.PathLike, *, quiet: bool, family: str, script: str) -> int:
    """A script's ``verify``: check ``out_dir``, print the report, warn when the tree is of the other
    family (``family`` "c": corruption trees, "p": perturbation trees; any tree is checked all the
    same); the exit code, 0 when the tree is whole."""
    report = verify(out_dir, progress=not quiet)
    print_verify_report(report)
    if report.kind and not report.kind.endswith(f"-{family}"):
        what = {"c": "corruption", "p": "perturbation"}
        other, other_script = ("p", "rafdb_perturb_dataset.py") if family == "c" else ("c", "rafdb_aug_dataset.py")
        LOG.warning("%s holds a %s tree (%s), not the %s trees %s writes: it was checked all the same "
                    "against its manifest; `%s verify` is its own command", out_dir, what[other],
                    report.kind, what[family], script, other_script)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------------------------
# RAF-DB-C (BENCHMARK.md §2.1, §2.7, §2.8)

RAFDB_C_KIND = "rafdb-c"


def output_file_name(file_name: str, fmt: str = "jpg") -> str:
    """The output name of an input file: the same name, with the ``.png`` suffix for PNG output."""
    if fmt == "jpg":
        return file_name
    if fmt == "png":
        return str(Path(file_name).with_suffix(".png"))
    raise ValueError(f"format: expected 'jpg' or 'png', got {fmt!r}")


def corrupted_folder(name: str, severity: int, split: str = "test") -> str:
    """``rafdb.<split>.<name>.<severity>`` (BENCHMARK.md §2.1)."""
    return f"rafdb.{split}.{name}.{severity}"


class _NoDraws:
    """Stands in for the generator of a corruption that draws nothing (``corruptions.DETERMINISTIC``):
    creating a real one (SHA-256 + PCG64 seeding, about 15 us) for each of 60 of the 90 files of a
    RAF-DB-C image is skipped. Any use raises, so a corruption wrongly listed as deterministic fails
    loudly instead of changing bytes."""

    __slots__ = ()

    def __getattr__(self, attribute: str):
        raise RuntimeError(f"a corruption listed in corruptions.DETERMINISTIC used its generator "
                           f"(.{attribute}); remove it from that list")

    def __repr__(self) -> str:
        return "NO_DRAWS"


NO_DRAWS = _NoDraws()


def corrupted_bytes(image_rgb, file_name: str, name: str, severity: int, *, seed: int = 0,
                    fmt: str = "jpg", motion_backend: str = "numpy", colour: str = "rgb",
                    param_set: str | None = None) -> bytes:
    """The exact bytes of one RAF-DB-C file (``file_name`` = the input file name)."""
    import corruptions
    import rafdb_dataset

    # A corruption that draws nothing gets no generator: its output cannot depend on one, and every
    # other item's generator is derived from that item alone, so no byte changes (the stand-in
    # raises if a corruption listed as deterministic ever draws).
    rng = (NO_DRAWS if name in corruptions.DETERMINISTIC
           else item_rng(seed, RAFDB_C_KIND, name, severity, file_name))
    corrupted = corruptions.corrupt(image_rgb, name, severity, rng,
                                    motion_backend=motion_backend, colour=colour, param_set=param_set)
    return rafdb_dataset.encode_image(corrupted, fmt)


def rafdb_c_units(image_paths: Sequence[str | os.PathLike], pairs: Sequence[tuple[str, int]], *,
                  fmt: str = "jpg", split: str = "test") -> list[WorkUnit]:
    """One unit per source image; its outputs are one file per (corruption, severity) pair."""
    folders = [corrupted_folder(name, severity, split) for name, severity in pairs]
    units = []
    for path in image_paths:
        path = Path(path)
        out_name = output_file_name(path.name, fmt)
        units.append(WorkUnit(str(path), tuple(f"{folder}/{out_name}" for folder in folders), str(path),
                              inputs=(str(path),)))
    return units


def too_small_to_corrupt(height: int, width: int) -> bool:
    """True when an image of this size is below the corruptions' minimum (``corruptions.MIN_SIDE``)."""
    import corruptions

    return min(height, width) < corruptions.MIN_SIDE


def small_image_message(path, height: int, width: int) -> str:
    """The refusal of a too-small source image, naming its file (both exports use it)."""
    import corruptions

    return (f"{path}: the image is {width}x{height} px (width x height); the corruptions need a width and "
            f"height of at least {corruptions.MIN_SIDE} px (docs/DATASETS.md); enlarge the image or leave it out")


def require_corruptible_size(shape: Sequence[int], path) -> None:
    """UserError naming ``path`` when an image of ``shape`` (H, W[, C]) is too small to corrupt."""
    if too_small_to_corrupt(int(shape[0]), int(shape[1])):
        raise UserError(small_image_message(path, int(shape[0]), int(shape[1])))


class _NotReadable(Exception):
    """A file Pillow opens but the export's reader refuses: that reader's own error is given."""


def image_file_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a source image as it is decoded, upright: from its header when Pillow can
    read it (no pixels decoded), else by decoding it as the export will (``datasets.images.read_image``),
    whose UserError names a file that no reader can open. An EXIF orientation of 5 to 8 (turned a
    quarter) swaps the header's sides, as decoding applies it (docs/DATASETS.md)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if image.format == "TIFF":  # Pillow's TIFF reader reports the upright size: the stored one
                    width, height = image.tag_v2.get(256, width), image.tag_v2.get(257, height)
                    # only unsigned samples of up to 16 bits are read (SampleFormat 1; 2 is signed, 3 float)
                    formats, bits = image.tag_v2.get(339, 1), image.tag_v2.get(258, 8)
                    formats = formats if isinstance(formats, tuple) else (formats,)
                    bits = bits if isinstance(bits, tuple) else (bits,)
                    if any(value != 1 for value in formats) or any(value > 16 for value in bits):
                        raise _NotReadable
                if image.getexif().get(0x0112) in (5, 6, 7, 8):
                    width, height = height, width
        return int(height), int(width)
    except Exception:  # noqa: BLE001 - any Pillow failure, or a TIFF of refused samples: the reader decides
        from datasets.images import read_image

        return tuple(read_image(path, keep_grey=True).shape[:2])


def refuse_changed_sources(manifest: Mapping[str, Any] | None, sources: Sequence[tuple[str, str]],
                           where: str) -> None:
    """UserError when an exported tree was made from other versions of the images evaluated with it.

    ``sources``: (unit key, source path) of every clean image the evaluation reads; the manifest's
    ``units`` table records, per unit, the digest of the source it was rendered from
    (:func:`inputs_digest`). A source that changed after the export (a re-sampled synthetic tree,
    an edited photo) would have its clean error measured on one image and its corruptions on
    another. Units the manifest does not record (an older manifest, images added since) are not
    compared here."""
    recorded = (manifest or {}).get("units") or {}
    if not recorded:
        return
    changed = [path for key, path in sources if key in recorded and recorded[key] != inputs_digest((path,))]
    if changed:
        examples = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise UserError(f"{where}: exported from other versions of {len(changed)} of the {len(sources)} "
                        f"source images ({examples}: changed since the export, their digests differ from "
                        f"{MANIFEST_NAME}'s); export into it again (only the changed images are rendered "
                        f"again), or evaluate with the images it was exported from")


# Files a file manager writes into any folder it shows (macOS Finder, Windows Explorer, KDE's
# Dolphin); no reader of an export opens them.
OS_METADATA = frozenset({".ds_store", "thumbs.db", "desktop.ini", "icon\r", ".directory"})


def is_os_metadata(name: str) -> bool:
    """True for a file manager's file (``.DS_Store``, macOS' ``._*`` companions, ``Thumbs.db``, ...)."""
    return name.lower() in OS_METADATA or name.startswith("._")


def refuse_unusable_sources(paths: Sequence[str | os.PathLike], *, corrupted: bool = True) -> None:
    """Before anything is written: a UserError naming the first source image that cannot be read
    (no reader opens it; the others are listed) or, for a corruption export (``corrupted``), is
    smaller than ``corruptions.MIN_SIDE`` (and how many more are).
    A file whose header reads but whose pixels are damaged (a truncated JPEG) is found when it is
    decoded; the images finished before it are kept."""
    small = []
    unreadable: list[tuple[str | os.PathLike, str]] = []  # all of them in one message, not one per rerun
    heights = {}  # image height -> the first source of that height
    for path in paths:
        try:
            height, width = image_file_size(path)
        except UserError as error:
            unreadable.append((path, str(error)))
            continue
        heights.setdefault(height, path)
        if corrupted and too_small_to_corrupt(height, width):
            small.append((path, (height, width)))
    if unreadable:
        others = [str(path) for path, _ in unreadable[1:]]
        raise UserError(unreadable[0][1] + (
            f" (and {len(others)} more source image(s) that cannot be read: {', '.join(others[:5])}"
            f"{', ...' if len(others) > 5 else ''})" if others else ""))
    if small:
        (path, (height, width)), more = small[0], len(small) - 1
        raise UserError(small_image_message(path, height, width)
                        + (f" (and {more} more image(s) of the split are smaller than that)" if more else ""))
    if corrupted and heights and max(heights) > 1.5 * min(heights):
        LOG.warning("the images range from %d px (%s) to %d px high (%s): the corruptions work in pixels at each "
                    "image's own size, so most are milder on the larger images (docs/DATASETS.md); resize "
                    "the faces to one size first for errors comparable across images",
                    min(heights), heights[min(heights)], max(heights), heights[max(heights)])


def render_rafdb_c(unit: WorkUnit, *, pairs: Sequence[tuple[str, int]], seed: int, fmt: str,
                   motion_backend: str, colour: str, split: str = "test",
                   param_set: str | None = None) -> list[tuple[str, bytes]]:
    """Render every (corruption, severity) output of one source image (a ``WorkUnit`` from
    :func:`rafdb_c_units`)."""
    import rafdb_dataset

    source = Path(unit.payload)
    image = rafdb_dataset.read_image(source)
    require_corruptible_size(image.shape, source)
    out_name = output_file_name(source.name, fmt)
    outputs = []
    for name, severity in pairs:
        data = corrupted_bytes(image, source.name, name, severity, seed=seed, fmt=fmt,
                               motion_backend=motion_backend, colour=colour, param_set=param_set)
        outputs.append((f"{corrupted_folder(name, severity, split)}/{out_name}", data))
    return outputs
