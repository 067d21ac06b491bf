"""Helpers shared by every command-line script: user errors, atomic writes, per-item seeds.

Nothing here parses arguments at import time. Scripts wrap their ``main`` with :func:`run_main`
so that a :class:`UserError` prints one clear line on stderr and exits with code 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

EXIT_USER_ERROR = 2
LOG = logging.getLogger("fer")

# The process umask, read once: files written through atomic_path get the usual 0666 & ~umask
# permissions instead of mkstemp's private 0600.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


class UserError(Exception):
    """An error caused by the user's input (path, flag, file content), reported without traceback."""


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn user errors into a one-line message on stderr and exit code 2."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # `script | head` closed stdout early; that is not an error of ours.
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        sys.exit(0)
    sys.exit(code or 0)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, so that stdout stays free for machine-readable results."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the module docstring's line breaks in ``--help``."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit with code 2 and name the flag (argparse already does)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# Atomic writes: a reader never sees a half-written file under its final name.


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.<name>.<8 hex>.tmp`` in the same folder and a rename.

    Missing folders are created; the file gets the usual 0666 & ~umask permissions. This is the
    hot path of the dataset exports (one call per output file), so it uses plain ``os`` calls.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder or ".", exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_rows_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """A list of same-keyed dicts as CSV (a header from the first row's keys), written atomically."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# Per-item seeds (BENCHMARK.md §2.7): independent of worker count and processing order.


def seed64(*parts: object) -> int:
    """First 8 bytes, little-endian, of SHA-256 over ``"|".join(parts)`` (UTF-8)."""
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def item_rng(seed: int, kind: str, name: str, severity: int, file_name: str) -> np.random.Generator:
    """The generator for one item: SHA-256 of ``"{seed}|{kind}|{name}|{severity}|{file_name}"``.

    ``kind`` is ``rafdb-c`` for RAF-DB-C and ``rafdb-p`` for RAF-DB-P (severity 0 there).
    """
    return np.random.Generator(np.random.PCG64(seed64(seed, kind, name, severity, file_name)))
