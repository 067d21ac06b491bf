"""Helpers shared by every command-line script: user errors, atomic writes, per-item seeds.

Nothing here parses arguments at import time. Scripts wrap their ``main`` with :func:`run_main`
so that a :class:`UserError` prints one clear line on stderr and exits with code 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import logging
import math
import os
import secrets
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

EXIT_USER_ERROR = 2
LOG = logging.getLogger("fer")

# TensorFlow's C++ INFO and WARNING lines off unless the user asks (every script imports this module
# before TensorFlow): a corrupt image inside the input pipeline otherwise printed the pipeline's
# Python traceback twice, as C++ warnings, before our one-line error naming the file.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The process umask, read once: files written through atomic_path get the usual 0666 & ~umask
# permissions instead of mkstemp's private 0600.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK  # what mkdir gives a folder (mkdtemp gives 0700)


class UserError(Exception):
    """An error caused by the user's input (path, flag, file content), reported without traceback."""

    exit_code = EXIT_USER_ERROR


class RunFailed(UserError):
    """A run stopped by its environment, not by its command line (a worker process killed by the
    out-of-memory killer): the same one-line report, exit code 1, so that a scheduler's retry policy
    (which may treat 2 as a usage error, not worth retrying) reruns it."""

    exit_code = 1


class SignalExit(SystemExit):
    """A signal stopped the run after its state was saved (training's run.json says "terminated").
    :func:`run_main` exits with its code at once, past the interpreter's teardown, where TensorFlow's
    threads of the interrupted work may crash the process (seen: SIGSEGV instead of exit 143)."""


# errno values of a write that found no room: a full disk, a quota, a file-size limit.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputError(UserError, OSError):
    """An output file could not be written (read-only folder, a file where a folder should be, a
    full disk): raised by the atomic writers below in place of their own OSError.

    It is a UserError, so :func:`run_main` reports ``error: <path>: <reason>`` with exit code 2 and
    no traceback, and still an OSError (``errno``, ``strerror``, ``filename`` kept), so callers that
    catch OSError around a write keep working. Only the writers' own file-system calls are
    converted: an OSError anywhere else (a bug, an unreadable input) keeps its traceback.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


@contextlib.contextmanager
def _output_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError of the enclosed file-system calls into an OutputError naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(error.errno, error.strerror or str(error), os.fspath(path)) from error


def _exit_now(code: int, main: Callable) -> None:
    """Exit with ``code`` after an error. A script (``main`` is its ``__main__``'s)
    with TensorFlow loaded exits at once, past the interpreter's teardown: a tf.data pipeline stopped
    by the error (an unreadable training image raised inside it) can leave a prefetch thread that the
    teardown waits for, for ever (seen under load: the message printed, the process asleep; Ctrl-C
    then aborted it). Every ``with`` and ``finally`` of the run has already run; the streams and log
    handlers are flushed here. Called from other code (a test), a plain SystemExit."""
    script = getattr(sys.modules.get("__main__"), "main", None) is main
    if not script or "tensorflow" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn user errors into a one-line message on stderr and exit code 2."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        _exit_now(error.exit_code, main)
    except SignalExit as stop:
        _exit_now(stop.code, main)
    except KeyboardInterrupt:
        # the normal teardown: it flushes what a run keeps open (TensorBoard's event files); a run
        # stopped by Ctrl-C leaves its input pipeline at rest, unlike one stopped by an error in it
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # `script | head` closed stdout early; that is not an error of ours.
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        sys.exit(0)
    except OSError as error:
        # A full or failing disk under a redirected standard output (`script > out.txt`): the
        # writes of our own files say which file (OutputError); this is the only one left.
        if error.errno not in DISK_FULL | {errno.EIO}:
            _crash(main)
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        print(f"error: writing the output failed ({error.strerror or error}); standard output is "
              f"incomplete", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Exception:  # a bug: its traceback, and no hang in the teardown either
        _crash(main)
    sys.exit(code or 0)


def _crash(main: Callable) -> None:
    """Call inside an ``except`` block: re-raise the exception, or, in a script with TensorFlow loaded
    (:func:`_exit_now`), print its traceback and exit with code 1 at once."""
    if getattr(sys.modules.get("__main__"), "main", None) is not main or "tensorflow" not in sys.modules:
        raise  # noqa: PLE0704 (the exception being handled by the caller)
    import traceback

    traceback.print_exc()
    _exit_now(1, main)


_PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning raised in the project's own code (metrics.py's undefined ratios) is one plain
    ``WARNING <message>`` line like the other log lines; the default form (file, line number,
    category and the source line) looked like a crash. Other libraries' warnings keep it."""
    path = os.path.abspath(filename)
    if path.startswith(_PROJECT_DIR + os.sep) and "site-packages" not in path and file is None:
        logging.getLogger("fer").warning("%s", message)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, so that stdout stays free for machine-readable results (the project's own
    warnings included, as log lines: :func:`_show_warning`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # TensorFlow's Python logger through the root handler only: TensorFlow adds a handler of its own
    # when it is imported first, which printed each line twice
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    warnings.showwarning = _show_warning


def quiet_tensorflow_info() -> None:
    """After a distribution strategy is made (its INFO line, with the devices, is shown): TensorFlow's
    INFO lines off, unless --verbose (DEBUG) logging is on; a MirroredStrategy logs one per reduction."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("tensorflow").setLevel(logging.WARNING)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the module docstring's line breaks in ``--help``.

    A default of None is not shown: it stands for a value worked out later (a folder named after
    another flag, the model's own size, ...), which the option's help text states; "(default: None)"
    beside it contradicted that text."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit with code 2 and name the flag (argparse already does)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """Positionals may follow the options (``eval_corrupted_rafdb.py model.keras --json r.json
        results.txt``): argparse's intermixed parsing, except for a parser with sub-commands, which
        it does not support (their own options and positionals follow the command name anyway), and
        for a command line with ``--`` (positionals that begin with '-' follow it), which it mishandles."""
        argv = sys.argv[1:] if args is None else list(args)
        if self._subparsers is not None or "--" in argv:  # intermixed parsing drops what follows "--"
            return super().parse_args(argv, namespace)
        return self.parse_intermixed_args(argv, namespace)


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations the command line ``argv`` sets explicitly (parsed again with every default
    suppressed): a flag given with its default value counts as given. An optional positional left
    out is not given (argparse passes the suppressed default through its ``type``, e.g. to a Path)."""
    import copy

    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return {name for name, value in vars(quiet.parse_args(list(argv))).items()
            if not (isinstance(value, (str, os.PathLike)) and os.fspath(value) == argparse.SUPPRESS)}


def check_output_path(path: str | os.PathLike, flag: str, *, folder: bool = False) -> Path:
    """UserError naming ``flag`` and ``path`` unless ``path`` can be written; run it before any work.

    ``folder=False``: ``path`` is a file to write, so it must not be a directory. ``folder=True``:
    ``path`` is a folder to write into, so it must not be a file. Either way, the folder that will
    hold the output must exist or be creatable: its nearest existing ancestor must be a directory in
    which a file can be created (checked by creating and removing an empty temporary file there).
    Nothing is left behind: missing folders are not created here.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path}: is a file; expected a folder to write into")
        target = path
    else:
        if path.is_dir():
            raise UserError(f"{flag} {path}: is a folder; expected the name of a file to write")
        real, special = write_target(path)
        if os.path.exists(real) and not os.access(real, os.W_OK):
            raise UserError(f"{flag} {path}: the existing file is read-only; make it writable or "
                            f"choose another name")
        if special:  # a FIFO or device (/dev/stdout): written to directly, no file is created
            return path
        target = Path(real).parent
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; expected a path in a "
                        f"writable folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        if existing == target:
            raise UserError(f"{flag} {path}: cannot write in {existing} ({reason})") from None
        raise UserError(f"{flag} {path}: cannot create the folder {target}: {existing} is not "
                        f"writable ({reason})") from None
    return path


SEED_LIMIT = 2 ** 32  # the generators seeded directly (Keras, NumPy's legacy state, scikit-learn) take 0..2^32-1


def stack_rows(parts: list, width: int):
    """float32 rows of several models stacked into one array; rows narrower than the widest end in
    NaN (a 7-class and an 8-class model in one probabilities file). ``width``: the columns of an
    empty result."""
    import numpy as np

    if not parts:
        return np.zeros((0, width), np.float32)
    widest = max(part.shape[1] for part in parts)
    out = np.full((sum(len(part) for part in parts), widest), np.nan, np.float32)
    start = 0
    for part in parts:
        out[start:start + len(part), :part.shape[1]] = part
        start += len(part)
    return out


def seed_int(text: str) -> int:
    """argparse type of --seed: an integer from 0 to SEED_LIMIT - 1 (:func:`check_seed`), as every
    script takes it (the exports took -1 and 20-digit seeds that training refused)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {SEED_LIMIT - 1}, got {text!r}")
    return value


def check_seed(value: int, flag: str = "--seed") -> None:
    """UserError naming ``flag`` unless ``value`` is a seed every seeded library accepts."""
    if not 0 <= value < SEED_LIMIT:
        raise UserError(f"{flag} {value}: expected an integer from 0 to {SEED_LIMIT - 1}")


def check_output_flags(args: argparse.Namespace, *dests: str) -> None:
    """:func:`check_output_path` for every file flag ``--<dest>`` of ``args`` that is set."""
    for dest in dests:
        value = getattr(args, dest, None)
        if value is not None:
            check_output_path(value, "--" + dest.replace("_", "-"))


# What train_fer.py writes in a run folder (beside its run.json) and the evaluations read back from it
# (training.RUN_FILE, RESULTS_FILE, STATE_FILE, LOG_FILE; a test keeps the two lists in step)
RUN_FOLDER_FILES = frozenset({"run.json", "results.json", "train_state.json", "training_log.csv",
                              "confusion_test.csv"})


def refuse_run_file(flag: str, out) -> None:
    """UserError when ``out`` is one of a training run's own files (a folder holding a run.json: its
    run.json, checkpoints, training log, ...) or a new file named like a model there: an evaluation's
    output written there replaces what later steps read (``--json RUN/run.json`` left a run whose
    class order and preprocessing were gone, with every later command still exiting 0), or is taken
    for one of the run's models."""
    path = Path(out)
    if not (path.parent / "run.json").is_file():
        return
    from model_files import MODEL_SUFFIXES  # (model_files imports this module)

    model_named = path.suffix.lower() in MODEL_SUFFIXES
    if path.is_file() and (path.name in RUN_FOLDER_FILES or model_named):
        raise UserError(f"{flag} {out}: is a file of the training run {path.parent} (its run.json, "
                        f"checkpoints and logs are read by later steps); writing it would destroy it: "
                        f"choose another file name")
    if model_named:
        raise UserError(f"{flag} {out}: a file named like a model in the training run {path.parent} would be "
                        f"taken for one of its models by later steps; choose another name (e.g. .json)")


def refuse_outputs_over_inputs(outputs, files=(), trees=()) -> None:
    """UserError when an output would destroy an input: ``outputs``, ``files`` and ``trees`` are
    (flag or label, path or None) pairs. An output may not be the same file as any of ``files``
    (checked with the file system, so links and other spellings of a path count), nor lie inside
    one of the folders ``trees`` (datasets read as input: a file written there is read back as data,
    or breaks its manifest); nor may two outputs be one file (the later would replace the earlier:
    ``--json r.txt`` over a RESULTS_FILE r.txt that holds earlier evaluations). Run it before any work."""
    # a device or pipe (/dev/null, /dev/stdout) may take several outputs: nothing there is replaced
    named = [(flag, out) for flag, out in outputs if out is not None
             and not (os.path.exists(out) and not stat.S_ISREG(os.stat(out).st_mode))]
    for index, (flag, out) in enumerate(named):
        for other_flag, other in named[:index]:
            if os.path.realpath(out) == os.path.realpath(other) or (
                    os.path.exists(out) and os.path.exists(other) and os.path.samefile(out, other)):
                raise UserError(f"{other_flag} {other} and {flag} {out}: the same file; one output would "
                                f"replace the other: give each its own file name")
    for flag, out in outputs:
        if out is None:
            continue
        out_real = os.path.realpath(out)
        refuse_run_file(flag, out)
        if os.path.exists(out):
            for label, path in files:
                if path is not None and os.path.isfile(path) and os.path.samefile(out, path):
                    raise UserError(f"{flag} {out}: is the input {label} {path}; writing it would destroy "
                                    f"that input: choose another file name")
        for label, tree in trees:
            if tree is None or not os.path.isdir(tree):
                continue
            tree_real = os.path.realpath(tree)
            if out_real == tree_real or out_real.startswith(tree_real.rstrip(os.sep) + os.sep):
                raise UserError(f"{flag} {out}: lies inside {label} {tree}, which is read as input (a "
                                f"file written there would be read back as data or break its manifest); "
                                f"write it outside that folder")


FIGURE_SUFFIXES = {".png": "png", ".pdf": "pdf", ".svg": "svg"}  # matplotlib figures, by suffix


def suffix_format(path: str | os.PathLike, flag: str, formats: dict[str, str], what: str) -> str:
    """The file format named by ``path``'s suffix (``formats``: lower-case suffix -> format), or a
    UserError naming ``flag``: a PNG written under the name ``plot.txt`` or ``grid.jpg`` is a file
    that viewers and LaTeX refuse. ``what``: what is written, for the message."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise UserError(f"{flag} {path}: {what} is written as {', '.join(sorted(set(formats)))} (chosen by "
                        f"the file name's suffix); got {suffix or 'no suffix'}")
    return formats[suffix]


def read_text_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark, as Excel and Notepad write one, is not
    data; CRLF line ends are taken too). Bytes that are not UTF-8 (a file saved as Latin-1 or
    cp1252) are a UserError naming the file, line and byte, rather than names garbled into U+FFFD."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8")  # valid up to the bad byte
        line = len((before + "x").splitlines())  # the same line ends as splitlines (CR, LF, CRLF)
        raise UserError(f"{path}:{line}: the {what} is not valid UTF-8 (byte 0x{data[error.start]:02x}); "
                        f"save it as UTF-8") from None


def finite_float(text: str) -> float:
    """argparse type: a finite number (``float`` takes 'nan' and 'inf', which no flag of ours means:
    a NaN passed every range check written as ``if value < 0`` and changed the results silently)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (argparse names the flag in its error)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


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


def temp_stem(name: str) -> str:
    """``name`` as the middle of a temporary name ``.<stem>.<8 chars>.tmp``: cut to 200 characters
    when it is near the 255-byte limit of a file name (the temporary name adds 14)."""
    return name[:200] if len(name.encode()) > 240 else name


def write_target(path: str | os.PathLike) -> tuple[str, bool]:
    """(the file an output to ``path`` replaces, whether it is a special file). A symbolic link is
    followed, so the link stays and its target gets the new content. A special file (a FIFO, a
    terminal or another device: ``/dev/stdout``, a named pipe) cannot be replaced by a rename; it is
    written to directly (True)."""
    target = os.path.realpath(path) if os.path.islink(path) else os.fspath(path)
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return target, False
    return target, not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. A failure to
    create the temporary file or to rename it is an :class:`OutputError` naming ``path``, and so is a
    full disk or quota while the caller's block runs (it was writing the temporary file: no read
    fails that way); other errors raised by the caller's block pass through unchanged. A symbolic link is followed (its target is
    replaced); a special file (FIFO, device) gets the finished content written to it
    (:func:`write_target`).
    """
    target, special = write_target(path)
    if special:
        with tempfile.TemporaryDirectory(prefix="fer-output-") as folder:
            tmp = Path(folder) / Path(path).name
            yield tmp
            with _output_errors(Path(path)), open(tmp, "rb") as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
        return
    path = Path(target)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{temp_stem(path.name)}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as error:
            if isinstance(error, OutputError) or error.errno not in DISK_FULL:
                raise
            raise OutputError(error.errno, error.strerror or str(error), os.fspath(path)) from error
        with _output_errors(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.<name>.<8 hex>.tmp`` in the same folder and a rename.

    Missing folders are created; the file gets the usual 0666 & ~umask permissions. This is the
    hot path of the dataset exports (one call per output file), so it uses plain ``os`` calls. A
    file-system failure is an :class:`OutputError` naming ``path``.
    """
    shown = os.fspath(path)
    path, special = write_target(path)
    if special:
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except OSError as error:
            raise OutputError(error.errno, error.strerror or str(error), shown) from error
        return
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{temp_stem(name)}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:  # plain try/except, not _output_errors: no generator context per exported file
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
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(error.errno, error.strerror or str(error), path) from error


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


def unsigned_zero(text: str) -> str:
    """A formatted number without the sign of a negative zero: ``-0.00`` (a tiny negative float sum
    such as -1e-17, rounded) is ``0.00``; any other text is returned as it is."""
    return text[1:] if text.startswith("-") and "0" in text and not text.strip("-0.") else text
