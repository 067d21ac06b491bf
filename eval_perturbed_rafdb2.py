"""Flip probability (and top-k distance) per model and perturbation from a predictions file (docs/BENCHMARK.md §5.4-§5.7).

Reads the text written by ``eval_perturbed_rafdb.py`` (or by the original): blocks made of a header
``<checkpoint_path>,<perturbation_dir>`` (method = the checkpoint's run directory name,
perturbation = the folder name without ``rafdb.test.``) or a one-field "external" header
``<perturbation_dir>`` (method ""), followed by one line per sequence of comma-separated class
indices (0..6 on RAF-DB; 0..K-1 of the evaluated classes, e.g. FER+'s 8). Other datasets' folders
are ``<dataset>.<split>.p_<perturbation>`` (``fer2013.PublicTest.``, a folder dataset's
``faces.test.``): the perturbation is their last part. Blank lines and ``#`` comments are
skipped; ``#topk`` lines (written with ``eval_perturbed_rafdb.py --topk K``: per frame the top K
classes joined by ``:``) give each sequence's rankings, from which the top-k distance is computed.
The sequence length is read from the data (all sequences of a block must have the same length;
``--frames`` checks it). A line with one or two fields is a header, so sequences need at least 3
frames.

Per model and perturbation (docs/BENCHMARK.md §5.5-§5.7):

- FP, the flip probability: perturbations whose name contains ``noise`` compare every frame with
  frame 0; the others compare consecutive frames (``--difficulty d``: frames j and j+d), the mean
  over sequences. This is the number the original printed (it called it "flip rate").
- mFP, the mean FP over the 10 perturbations of docs/BENCHMARK.md §3.3 (extras are reported, never averaged).
- T-k-D, the top-k distance over the same frame pairs, where rankings are present (``--topk``).
- With ``--baseline`` (a method of the same file, or a ``--json`` file this script wrote): FR = FP /
  FP of the baseline and mFR, the mean FR over the 10; likewise the normalised mT-k-D.

Output: the original's TSV on standard output (first row ``.`` then the methods, sorted by name;
one row per perturbation with the FP of every method; ``nan`` where a method lacks it), or with a
second argument starting with ``t`` the original's text lists (per method its ``perturbation
value`` lines, then ``---------``). A fixed-width summary (mFP, mFR, T-k-D) follows on standard
error. ``--json`` and ``--csv`` write everything for machines (both paths are checked before the
file is read). Each method of the JSON records its ``checkpoint``, the checkpoint path of its
headers (null for a one-field header), its ``checkpoint_sha256`` (the metadata's ``model_sha256=``)
and its ``settings``: the evaluation settings its metadata states (``preprocessing``, ``input``
HxWxC, ``class_order``, ``restrict``, ``adapted``; those a file does not state are left out).
``report.py`` joins a method to the same model's robustness results by the file, and keeps them
apart when a setting stated on both sides differs.

Metadata and method names: a comment ``# labels=soft N=285 source=landmarks frames=30 ...`` (all
tokens ``key=value``; written by ``eval_perturbed_rafdb.py`` right after each header) belongs to its
block: the summary, the JSON and the CSV show each method's N, label protocol and source
(``unknown`` without it; docs/BENCHMARK.md §3.6's ``source: aligned`` is flagged under the summary), and a block
whose sequence count differs from its N is an error naming the line. A method is the checkpoint's
run directory name, as in the original; when two different checkpoint paths share it, both are
named ``<run dir>/<checkpoint file name>`` (the whole path if that still collides), with a warning.

Deviations from the original
----------------------------
(The original: ``compute_fr`` / ``print_xls`` / ``print_text`` of MiviaLab's script; docs/BENCHMARK.md §5.4,
§6 row 15.)

TSV (default output):

- Rows: the original printed the perturbations of the *last* method (by sorted name), in the order
  its blocks were read (the original writer's glob order). Here: the union over all methods, in
  docs/BENCHMARK.md §3.3 canonical order, then extras in first-seen order. Both strip ``rafdb.test.``.
- Columns: the original kept only methods with at least as many perturbations as that last method
  (and crashed with KeyError when a kept one lacked a row). Here every method has a column, with
  ``nan`` where it lacks a perturbation. Methods are sorted by name in both.
- Bytes: the original ended every line, the ``.`` header line included, with a tab before the
  newline; here there is no trailing tab.
- Values: both print the shortest repr of a float. The original's FP is a running sum of per-sequence
  FPs divided by the count; here it is ``np.mean`` (pairwise summation), which can differ in the last
  digit.
- Method names: two different checkpoints with the same run directory name are kept apart
  (``<run dir>/<file name>``; the original merged them, the later block winning); a checkpoint
  field without a directory is named by its file name (the original gave ""). Blocks of one method
  evaluated with different settings (their metadata's preprocessing, input size, class order, ...)
  are methods of their own, ``<method> [<the differing settings>]`` (the original merged them).

Text output (second argument ``t...``): methods sorted by name (the original: file order);
perturbations in canonical order with ``rafdb.test.`` stripped (the original: file order, prefix
kept); values formatted as in the TSV. A second argument not starting with ``t`` is an error (the
original printed the TSV).

Reading: blank lines are skipped (the original's own trailing blank lines made it divide by zero); a
``#`` line may be indented; ``# key=value`` comments are read as metadata and ``#topk`` lines as
rankings (the original skipped both); any malformed line is an error naming its line number instead
of an assertion or a crash; class indices must be 0..6 (the original accepted any integer); the
sequence length is read from the data, at least 3 and equal within a block (``--frames`` pins it;
the original asserted 30); a header without sequences is warned about. The noise rule tests
``noise`` in the name (the original: ``_noise``; the same for the three RAF-DB-P noise
perturbations). A summary goes to standard error; ``--json`` and ``--csv`` are new.

Example::

    python3 eval_perturbed_rafdb2.py predictions.txt
    python3 eval_perturbed_rafdb2.py predictions.txt t
    python3 eval_perturbed_rafdb2.py predictions.txt --baseline _netresnet50_20220409 --json fp.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import stability
from cli_common import (ArgumentParser, UserError, atomic_write_text, check_output_flags, positive_int,
                        refuse_outputs_over_inputs, run_main, setup_logging)
from stability import LOG


# --------------------------------------------------------------------------------------------
# Command line


def _ks(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2,3,5, got {text!r}") from None
    if not values or values[0] < 1 or values[-1] > stability.NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected values in 1..{stability.NUM_CLASSES}, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("predictions", type=Path,
                        help="predictions file of eval_perturbed_rafdb.py ('-': standard input, e.g. "
                             "eval_perturbed_rafdb.py ... | eval_perturbed_rafdb2.py -)")
    parser.add_argument("mode", nargs="?", default="",
                        help="'t' (any word starting with t) prints text lists instead of the TSV")
    group = parser.add_argument_group("metrics")
    group.add_argument("--difficulty", type=positive_int, default=1,
                       help="compare frames j and j+d for non-noise perturbations (docs/BENCHMARK.md §5.5)")
    group.add_argument("--topk", type=_ks, default=None, metavar="K[,K...]",
                       help="top-k distances to report where #topk rankings are present (default "
                            f"{','.join(map(str, stability.DEFAULT_TOPK))}; given explicitly, a k that a "
                            "method's rankings cannot give is warned about)")
    group.add_argument("--frames", type=positive_int, default=None,
                       help="require this many frames per sequence (default: read from the data)")
    group.add_argument("--baseline", default=None, metavar="NAME|JSON",
                       help="normalise FR/mFR/mTkD to this method of the file, or to a --json "
                            "results file of this script")
    group.add_argument("--baseline-method", default=None, metavar="NAME",
                       help="the method to use in a --baseline JSON holding several")
    group.add_argument("--baseline-mismatch-ok", action="store_true",
                       help="normalise even by a baseline of other sequences (another dataset or split, "
                            "source, N or frame count), with a warning instead of an error")
    group = parser.add_argument_group("output")
    group.add_argument("--json", type=Path, default=None, help="write all results as JSON (atomically)")
    group.add_argument("--csv", type=Path, default=None, help="write per-perturbation results as CSV")
    group.add_argument("--quiet", action="store_true", help="no summary on standard error")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.mode and not args.mode.startswith("t"):
        parser.error(f"second argument {args.mode!r}: only 't' (text lists) is known")
    return args


EXPECTED = ("expected a predictions file written by eval_perturbed_rafdb.py: a header "
            "'<checkpoint>,<perturbation folder>' followed by lines of comma-separated class indices")


def refuse_json(path: Path, text: str) -> None:
    """UserError when ``text`` (the content of ``path``) is JSON (a results file given by mistake)
    instead of predictions."""
    if not text.lstrip().startswith(("{", "[")):
        return
    try:
        data = json.loads(text)
    except ValueError:
        return  # not JSON after all: read_predictions names the bad line
    kind = "a JSON file"
    if isinstance(data, dict) and data.get("format") == "rafdb-c-results":
        kind = "a robustness JSON (eval_corrupted_rafdb.py --json)"
    elif isinstance(data, dict) and isinstance(data.get("methods"), dict):
        kind = "a stability JSON (eval_perturbed_rafdb2.py --json)"
    elif isinstance(data, dict) and data.get("format") == "rafdb-p-calibration":
        kind = "a calibration JSON (eval_perturbed_rafdb.py --json)"
    raise UserError(f"{path}: {kind}, not predictions; {EXPECTED}")


class _Held(logging.Filter):
    """Holds back the records of a logger (see :func:`held_warnings`)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def held_warnings(logger: logging.Logger):
    """Log ``logger``'s records only if the block succeeds: a file that turns out not to be a
    predictions file gives its one error, not first a warning per line it could not use."""
    held = _Held()
    logger.addFilter(held)
    try:
        yield
    finally:
        logger.removeFilter(held)
    for record in held.records:
        logger.handle(record)


def read_predictions(path: Path, frames: int | None):
    """The blocks of the predictions file; one UserError for a file that is not one."""
    text = stability.read_text_once(path)  # once: a pipe cannot be read again
    refuse_json(path, text)
    with held_warnings(LOG):
        return stability.read_predictions(path, frames, text)


def method_checkpoints(table: dict) -> dict:
    """method -> the checkpoint path of its headers (None for one-field headers), as in the file."""
    out = {}
    for method, blocks in table.items():
        paths = list(dict.fromkeys(block.checkpoint for block in blocks.values() if block.checkpoint))
        out[method] = paths[0] if len(paths) == 1 else None
    return out


def method_digests(table: dict) -> dict:
    """method -> the SHA-256 of its model file from its blocks' metadata (``model_sha256=``), or None
    when the blocks record none or disagree."""
    out = {}
    for method, blocks in table.items():
        digests = {(block.meta or {}).get("model_sha256") for block in blocks.values()}
        out[method] = digests.pop() if len(digests) == 1 else None
    return out


def method_settings(table: dict) -> dict:
    """method -> the evaluation settings its blocks' metadata state (``stability.SETTING_KEYS``:
    preprocessing, input, class order, ...): a key every block states is its value (the reader has
    already kept blocks stating different values apart as methods of their own,
    ``stability.split_methods_by_settings``); a key some block leaves out (a file written before the
    settings were recorded) is left out (unknown)."""
    out = {}
    for method, blocks in table.items():
        per_block = [{key: stability.canonical_setting(key, value) for key, value in
                      stability.block_settings(block.meta or {}).items()} for block in blocks.values()]
        out[method] = {key: per_block[0][key] for key in stability.SETTING_KEYS
                       if all(key in found for found in per_block)}
    return out


def warn_missing_topk(table: dict, results: dict, ks: Sequence[int]) -> None:
    """A warning per method and k of an explicit ``--topk`` that its blocks cannot give: T-k-D needs
    ``#topk`` rankings of at least k classes after every sequence."""
    for method, summary in results["methods"].items():
        rankings = [block.ranking_array() for block in table[method].values()]
        lengths = {0 if ranking is None else ranking.shape[2] for ranking in rankings}
        for k in ks:
            if any(str(k) not in entry["tkd"] for entry in summary["perturbations"].values()):
                have = ("no #topk lines" if lengths == {0} else
                        f"#topk lines ranking {'/'.join(map(str, sorted(lengths)))} classes")
                LOG.warning("--topk %d: T%dD of %s not computed for every perturbation: its blocks hold %s; "
                            "rerun eval_perturbed_rafdb.py with --topk %d", k, k, method or '""', have, k)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    check_output_flags(args, "json", "csv")  # before reading: no work lost to a bad output path
    refuse_outputs_over_inputs([("--json", args.json), ("--csv", args.csv)],
                               [("PREDICTIONS", args.predictions), ("--baseline", args.baseline)])
    blocks = read_predictions(args.predictions, args.frames)
    stability.warn_mixed_datasets(blocks, str(args.predictions))
    table = stability.group_blocks(blocks, str(args.predictions))
    asked = args.topk is not None
    args.topk = args.topk or list(stability.DEFAULT_TOPK)
    results = stability.compute(table, difficulty=args.difficulty, ks=args.topk)
    if asked:
        warn_missing_topk(table, results, args.topk)
    for method, checkpoint in method_checkpoints(table).items():
        results["methods"][method]["checkpoint"] = checkpoint
    for method, digest in method_digests(table).items():
        results["methods"][method]["checkpoint_sha256"] = digest
    for method, settings in method_settings(table).items():
        results["methods"][method]["settings"] = settings
    results["source"] = str(args.predictions)
    results["format"] = stability.JSON_FORMAT
    if args.baseline is not None:
        label, baseline = stability.load_baseline(args.baseline, results, args.baseline_method)
        stability.check_baseline(results, label, baseline, args.baseline_mismatch_ok)
        stability.normalise(results, label, baseline)
    sys.stdout.write(stability.format_text(results) if args.mode else stability.format_tsv(results))
    sys.stdout.flush()
    if not args.quiet:
        sys.stderr.write(stability.format_summary(results))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(stability.nan_to_none(results), indent=1) + "\n")
        LOG.info("wrote %s", args.json)
    if args.csv is not None:
        atomic_write_text(args.csv, stability.format_csv(results))
        LOG.info("wrote %s", args.csv)
    return 0


if __name__ == "__main__":
    run_main(main)
