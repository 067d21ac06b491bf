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
         workers=None, progress=True, chunksize=None, force_rerender=False) -> ExportResult``
    Renders every unit with a ``multiprocessing`` pool ("fork"; ``workers=1`` runs in-process,
    ``None`` means ``os.cpu_count()``), streaming results with ``imap_unordered``. Each worker writes
    its files atomically (temporary name in the same folder, then ``os.replace``; folders are created
    as needed) and returns only SHA-256 digests to the parent, so the parent never holds image data.

    Resume: a unit is skipped (its files are hashed, not re-rendered, not rewritten) when all its
    outputs exist *and* the manifest records the same SHA-256 of its inputs as they have now (the
    ``units`` table, one digest per unit key). Any other unit is rendered again and all its outputs
    rewritten: an incomplete one (same bytes, since every unit is deterministic), one whose source
    changed (e.g. ``rafdb_dataset.py sample --force`` with another seed), or one the manifest does
    not know. ``force_rerender=True`` renders every unit. Stray temporary files
    (``.<name>.XXXXXXXX.tmp``) left by a killed run are removed first. A run killed with SIGKILL and
    rerun therefore ends byte-identical to an uninterrupted run.

    Durability: files are written with ``cli_common.atomic_write_bytes`` (rename over the final
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

Workers write every file with ``cli_common.atomic_write_bytes`` (temporary name in the same
folder, ``os.replace``, missing folders created, permissions 0666 minus the umask).

``check_output_dir(out_dir, *, kind, params, force_rerender=False)``
    The checks ``export`` does before starting workers (writable folder, compatible manifest and
    versions), for scripts that want to fail before any expensive set-up.

``check_writable_file(path, flag="--out")``
    UserError unless a file can be written at ``path`` (for the preview image/GIF, checked before
    rendering).

``add_run_args(parser)``
    Adds ``--workers`` (0 = all cores, the default; 1 = in-process), ``--quiet`` (no progress bar,
    no INFO logs; the final summary is still printed) and ``--force-rerender`` to an export parser.

``verify(out_dir) -> VerifyReport``
    Re-hashes every file listed in the manifest: ``missing``, ``altered`` (hash mismatch) and
    ``unexpected`` (present but not listed) relative paths; ``ok`` is True when all three are empty
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
from typing import Any, Callable, Iterable, Mapping, Sequence

from cli_common import LOG, UserError, atomic_path, atomic_write_bytes, item_rng

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# Temporary files made by cli_common.atomic_write_bytes and cli_common.atomic_path: ".<final name>.<8 chars>.tmp".
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
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

    @property
    def files(self) -> int:
        return self.files_written + self.files_skipped


@dataclasses.dataclass
class VerifyReport:
    """The result of :func:`verify`: relative paths of every problem file."""

    out_dir: Path
    checked: int = 0
    complete: bool = True
    missing: list[str] = dataclasses.field(default_factory=list)
    altered: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)

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
    missing or unreadable)."""
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
    export``: ``--workers``, ``--quiet``, ``--force-rerender`` (same names, defaults and meaning)."""
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


def _check_compatible(manifest: dict, path: Path, kind: str, params: Mapping[str, Any],
                      force_rerender: bool = False) -> None:
    old_kind = manifest.get("kind")
    if old_kind != kind:
        raise UserError(
            f"{path}: this tree holds a {old_kind!r} export, not {kind!r}; choose a new --out"
        )
    old_params = manifest.get("params", {})
    for key in sorted(set(old_params) | set(params)):
        old, new = old_params.get(key), params.get(key)
        if old != new:
            hint = ("the parameter tables of this version differ" if key == "param_set"
                    else "--" + key.replace("_", "-"))
            raise UserError(
                f"{path}: the existing export used {key}={old!r} but this run asks for "
                f"{key}={new!r} ({hint}); export into a new --out folder instead of mixing them"
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


def check_output_dir(out_dir: str | os.PathLike, *, kind: str, params: Mapping[str, Any],
                     force_rerender: bool = False) -> dict | None:
    """Fail early (UserError) unless ``out_dir`` can take this export; return its manifest, if any.

    Creates ``out_dir`` if needed and checks that a file can be created in it.
    """
    out_dir = Path(out_dir)
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
        content = [entry.name for entry in os.scandir(out_dir) if not _TEMP_RE.match(entry.name)]
        if content:
            raise UserError(
                f"{out_dir}: folder is not empty and has no {MANIFEST_NAME} (it was not written by "
                f"this tool, e.g. it holds {sorted(content)[0]!r}); choose a new --out"
            )
        return None
    _check_compatible(manifest, out_dir / MANIFEST_NAME, kind, params, force_rerender)
    return manifest


def remove_stray_temporaries(out_dir: str | os.PathLike) -> int:
    """Delete temporary files left by a killed run anywhere under ``out_dir``; return how many."""
    removed = 0
    for folder, _dirs, names in os.walk(out_dir):
        for name in names:
            if _TEMP_RE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# Workers

_WORKER: dict[str, Any] = {}


def _init_worker(render: Callable, out_dir: str, known: Mapping[str, str], force: bool) -> None:
    _WORKER["render"] = render
    _WORKER["out_dir"] = out_dir
    _WORKER["known"] = known  # unit key -> inputs digest recorded in the existing manifest
    _WORKER["force"] = force


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def _process_unit(unit: WorkUnit) -> tuple:
    """Skip or render one unit.

    Returns ("skipped"|"written", [(rel, sha256)], key, inputs digest, stale) or ("error", name, msg);
    ``stale`` is True for a unit rendered again although all its outputs existed.
    """
    out_dir = _WORKER["out_dir"]
    try:
        digest = inputs_digest(unit.inputs)
        complete = all(os.path.isfile(os.path.join(out_dir, rel)) for rel in unit.outputs)
        if complete and not _WORKER["force"] and _WORKER["known"].get(unit.key) == digest:
            return ("skipped", [(rel, sha256_file(os.path.join(out_dir, rel))) for rel in unit.outputs],
                    unit.key, digest, False)
        items = list(_WORKER["render"](unit))
        produced = [rel for rel, _data in items]
        if sorted(produced) != sorted(unit.outputs):
            raise RuntimeError(
                f"render returned {sorted(produced)[:3]}... but the unit lists "
                f"{sorted(unit.outputs)[:3]}... ({len(produced)} vs {len(unit.outputs)} files)"
            )
        hashes = []
        for rel, data in items:
            atomic_write_bytes(os.path.join(out_dir, rel), data)
            hashes.append((rel, hashlib.sha256(data).hexdigest()))
        return ("written", hashes, unit.key, digest, complete)
    except Exception as error:  # reported by the parent as a UserError naming the unit
        return ("error", unit.name, _describe(error))


def _default_chunksize(n_units: int, workers: int) -> int:
    return max(1, min(8, n_units // (workers * 16)))


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
) -> ExportResult:
    """Render ``units`` into ``out_dir`` (see the module docstring); return counts and timings."""
    from tqdm import tqdm

    start = time.perf_counter()
    out_dir = Path(out_dir)
    workers = resolve_workers(workers)
    old = check_output_dir(out_dir, kind=kind, params=params, force_rerender=force_rerender)
    keys = [unit.key for unit in units]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"two work units share the key {duplicate!r} (unit names must have distinct base names)")
    old_units: dict[str, str] = dict(old.get("units") or {}) if old else {}
    if old and version_differences(old):
        # force_rerender (else check_output_dir refused): the tree must not keep files of the old
        # version that this run would not rewrite, since the manifest will name the new version.
        produced = {rel for unit in units for rel in unit.outputs}
        leftover = sorted(rel for rel in old["files"] if rel not in produced)
        if leftover:
            item, was, now = version_differences(old)[0]
            raise UserError(
                f"{out_dir / MANIFEST_NAME}: the tree holds {len(leftover)} file(s) made with {item} "
                f"{was!r} that this run does not produce (e.g. {leftover[0]}), and this run has {now!r}; "
                f"rerun with the selection that made them, or export into a new --out folder"
            )
        old_units = {}
    removed = remove_stray_temporaries(out_dir)
    if removed:
        LOG.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out_dir)

    files: dict[str, str] = dict(old["files"]) if old else {}
    unit_digests: dict[str, str] = dict(old_units)
    old_sources = old.get("source", {}).get("files", []) if old else []
    manifest = {
        "format_version": MANIFEST_FORMAT,
        "generator": {"name": generator, "version": generator_version()},
        "kind": kind,
        "params": dict(params),
        "source": {
            "root": source_root if source_root is not None else (old or {}).get("source", {}).get("root"),
            "files": sorted(set(old_sources) | set(sources)),
        },
        "versions": package_versions(),
        "complete": False,
        "folders": folder_counts(files),
        "files": files,
        "units": unit_digests,
    }
    # Written before any worker starts: a killed run leaves a manifest that guards the parameters.
    manifest_path = _write_manifest(out_dir, manifest)

    result = ExportResult(out_dir=out_dir, manifest_path=manifest_path, units=len(units), workers=workers)
    n_files = sum(len(unit.outputs) for unit in units)
    bar = tqdm(total=n_files, unit="file", disable=not progress, file=sys.stderr, smoothing=0.05,
               desc=f"{kind} -> {out_dir}")

    def consume(outcome: tuple) -> None:
        if outcome[0] == "error":
            raise UserError(outcome[2] if outcome[2].startswith(str(outcome[1])) else f"{outcome[1]}: {outcome[2]}")
        status, hashes, key, inputs, stale = outcome
        for rel, digest in hashes:
            files[rel] = digest
        unit_digests[key] = inputs
        result.units_stale += bool(stale)
        if status == "skipped":
            result.units_skipped += 1
            result.files_skipped += len(hashes)
        else:
            result.units_rendered += 1
            result.files_written += len(hashes)
        bar.update(len(hashes))

    try:
        if workers == 1 or len(units) <= 1:
            result.workers = 1
            saved = dict(_WORKER)
            _init_worker(render, str(out_dir), old_units, force_rerender)
            try:
                for unit in units:
                    consume(_process_unit(unit))
            finally:
                _WORKER.clear()
                _WORKER.update(saved)
        else:
            context = multiprocessing.get_context("fork")
            size = chunksize or _default_chunksize(len(units), workers)
            with context.Pool(workers, initializer=_init_worker, initargs=(render, str(out_dir), old_units, force_rerender)) as pool:
                for outcome in pool.imap_unordered(_process_unit, units, chunksize=size):
                    consume(outcome)
    finally:
        bar.close()

    if result.units_stale:
        LOG.info("%d image(s) rendered again although their files existed: the source changed, the "
                 "manifest did not record it, or --force-rerender", result.units_stale)
    manifest["complete"] = True
    manifest["folders"] = folder_counts(files)
    _write_manifest(out_dir, manifest)
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------
# Verification


def verify(out_dir: str | os.PathLike, *, progress: bool = False) -> VerifyReport:
    """Check ``out_dir`` against its manifest: missing, altered and unexpected files."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: no such folder (nothing to verify)")
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UserError(f"{out_dir / MANIFEST_NAME}: missing; {out_dir} was not written by an export")
    report = VerifyReport(out_dir=out_dir, complete=bool(manifest.get("complete", False)))
    listed: dict[str, str] = manifest["files"]
    for rel, digest in tqdm(sorted(listed.items()), unit="file", disable=not progress, file=sys.stderr):
        path = out_dir / rel
        if not path.is_file():
            report.missing.append(rel)
            continue
        report.checked += 1
        if sha256_file(path) != digest:
            report.altered.append(rel)
    for folder, _dirs, names in os.walk(out_dir):
        for name in names:
            rel = Path(folder, name).relative_to(out_dir).as_posix()
            if rel != MANIFEST_NAME and rel not in listed:
                report.unexpected.append(rel)
    report.unexpected.sort()
    return report


def print_verify_report(report: VerifyReport, stream=None) -> None:
    """One line per problem file, then a summary line."""
    stream = stream or sys.stdout
    if not report.complete:
        print(f"incomplete: {report.out_dir / MANIFEST_NAME} records an export that did not finish; "
              "rerun the export to complete it", file=stream)
    for label, paths in (("missing", report.missing), ("altered", report.altered),
                         ("unexpected", report.unexpected)):
        for rel in paths:
            print(f"{label}: {report.out_dir / rel}", file=stream)
    verdict = "OK" if report.ok else "FAILED"
    print(f"{verdict}: {report.checked} file(s) checked in {report.out_dir}; {len(report.missing)} missing, "
          f"{len(report.altered)} altered, {len(report.unexpected)} unexpected", file=stream)


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


def corrupted_bytes(image_rgb, file_name: str, name: str, severity: int, *, seed: int = 0,
                    fmt: str = "jpg", motion_backend: str = "numpy", colour: str = "rgb",
                    param_set: str | None = None) -> bytes:
    """The exact bytes of one RAF-DB-C file (``file_name`` = the input file name)."""
    import corruptions
    import rafdb_dataset

    rng = item_rng(seed, RAFDB_C_KIND, name, severity, file_name)
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


def render_rafdb_c(unit: WorkUnit, *, pairs: Sequence[tuple[str, int]], seed: int, fmt: str,
                   motion_backend: str, colour: str, split: str = "test",
                   param_set: str | None = None) -> list[tuple[str, bytes]]:
    """Render every (corruption, severity) output of one source image (a ``WorkUnit`` from
    :func:`rafdb_c_units`)."""
    import rafdb_dataset

    source = Path(unit.payload)
    image = rafdb_dataset.read_image(source)
    out_name = output_file_name(source.name, fmt)
    outputs = []
    for name, severity in pairs:
        data = corrupted_bytes(image, source.name, name, severity, seed=seed, fmt=fmt,
                               motion_backend=motion_backend, colour=colour, param_set=param_set)
        outputs.append((f"{corrupted_folder(name, severity, split)}/{out_name}", data))
    return outputs
