"""Flip probability (and top-k distance) per model and perturbation from a predictions file (BENCHMARK.md §5.4-§5.7).

Reads the text written by ``eval_perturbed_rafdb.py`` (or by the original): blocks made of a header
``<checkpoint_path>,<perturbation_dir>`` (method = the checkpoint's run directory name,
perturbation = the folder name without ``rafdb.test.``) or a one-field "external" header
``<perturbation_dir>`` (method ""), followed by one line per sequence of comma-separated class
indices 0..6. Blank lines and ``#`` comments are skipped; ``#topk`` lines (written with
``eval_perturbed_rafdb.py --topk K``: per frame the top K classes joined by ``:``) give each
sequence's rankings, from which the top-k distance is computed. The sequence length is read from
the data (all sequences of a block must have the same length; ``--frames`` checks it). A line with
one or two fields is a header, so sequences need at least 3 frames.

Per model and perturbation (BENCHMARK.md §5.5-§5.7):

- FP, the flip probability: perturbations whose name contains ``noise`` compare every frame with
  frame 0; the others compare consecutive frames (``--difficulty d``: frames j and j+d), the mean
  over sequences. This is the number the original printed (it called it "flip rate").
- mFP, the mean FP over the 10 perturbations of BENCHMARK.md §3.3 (extras are reported, never averaged).
- T-k-D, the top-k distance over the same frame pairs, where rankings are present (``--topk``).
- With ``--baseline`` (a method of the same file, or a ``--json`` file this script wrote): FR = FP /
  FP of the baseline and mFR, the mean FR over the 10; likewise the normalised mT-k-D.

Output: the original's TSV on standard output (first row ``.`` then the methods, sorted by name;
one row per perturbation with the FP of every method; ``nan`` where a method lacks it), or with a
second argument starting with ``t`` the original's text lists (per method its ``perturbation
value`` lines, then ``---------``). A fixed-width summary (mFP, mFR, T-k-D) follows on standard
error. ``--json`` and ``--csv`` write everything for machines.

Metadata and method names: a comment ``# labels=soft N=285 source=landmarks frames=30 ...`` (all
tokens ``key=value``; written by ``eval_perturbed_rafdb.py`` right after each header) belongs to its
block: the summary, the JSON and the CSV show each method's N, label protocol and source
(``unknown`` without it; BENCHMARK.md §3.6's ``source: aligned`` is flagged under the summary), and a block
whose sequence count differs from its N is an error naming the line. A method is the checkpoint's
run directory name, as in the original; when two different checkpoint paths share it, both are
named ``<run dir>/<checkpoint file name>`` (the whole path if that still collides), with a warning.

Deviations from the original
----------------------------
(The original: ``compute_fr`` / ``print_xls`` / ``print_text`` of MiviaLab's script; BENCHMARK.md §5.4,
§6 row 20.)

TSV (default output):

- Rows: the original printed the perturbations of the *last* method (by sorted name), in the order
  its blocks were read (the original writer's glob order). Here: the union over all methods, in
  BENCHMARK.md §3.3 canonical order, then extras in first-seen order. Both strip ``rafdb.test.``.
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
  field without a directory is named by its file name (the original gave "").

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
import csv
import dataclasses
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import metrics
from cli_common import (ArgumentParser, UserError, atomic_write_text, positive_int, run_main,
                        setup_logging)

LOG = logging.getLogger("fer.eval_perturbed2")

NUM_CLASSES = 7  # BENCHMARK.md §1.2: classes 0..6
FOLDER_PREFIX = "rafdb.test."
TOPK_PREFIX = "#topk"
DEFAULT_TOPK = (2, 3, 5)  # BENCHMARK.md §5.7: d_2, d_3 headline, d_5 for parity
JSON_FORMAT = "eval_perturbed_rafdb2/1"


def canonical_perturbations() -> list[str]:
    """The 10 RAF-DB-P perturbations in BENCHMARK.md §3.3 order (from the perturbations registry)."""
    import perturbations

    return list(perturbations.PERTURBATIONS)


# --------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass
class Block:
    """The sequences of one method on one perturbation, as read from the file."""

    method: str
    perturbation: str
    line: int  # line number of the header
    checkpoint: str = ""  # the header's checkpoint field ("" for a one-field header)
    meta: dict = dataclasses.field(default_factory=dict)  # '# labels=.. N=.. source=..' comment
    meta_line: int = 0
    sequences: list[list[int]] = dataclasses.field(default_factory=list)
    sequence_lines: list[int] = dataclasses.field(default_factory=list)
    rankings: list[list[list[int]] | None] = dataclasses.field(default_factory=list)

    def classes(self) -> np.ndarray:
        return np.asarray(self.sequences, dtype=np.int64)

    def ranking_array(self) -> np.ndarray | None:
        """(n_sequences, n_frames, K) class orders, or None unless every sequence has a #topk line."""
        if not self.rankings or any(ranking is None for ranking in self.rankings):
            return None
        return np.asarray(self.rankings, dtype=np.int64)


def method_name(checkpoint_field: str) -> str:
    """The run directory of a checkpoint path (BENCHMARK.md §5.4); the file name when there is no directory."""
    directory = os.path.dirname(checkpoint_field)
    return os.path.basename(directory) if directory else os.path.basename(checkpoint_field)


def disambiguate_methods(blocks: Sequence[Block]) -> None:
    """Keep different checkpoints that share a run directory name apart (in place).

    The original names a method after the checkpoint's run directory; when two different checkpoint
    paths give the same name, each becomes ``<run dir>/<checkpoint file name>`` (or, if that still
    collides, the whole checkpoint path). Names without a collision are the original's.
    """
    paths: dict[str, list[str]] = {}
    for block in blocks:
        if block.checkpoint:
            found = paths.setdefault(block.method, [])
            if block.checkpoint not in found:
                found.append(block.checkpoint)
    renamed: dict[str, str] = {}
    for method, checkpoints in paths.items():
        if len(checkpoints) < 2:
            continue
        names = {path: (f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
                        if os.path.dirname(path) else path) for path in checkpoints}
        if len(set(names.values())) < len(names):
            names = {path: path for path in checkpoints}
        LOG.warning("checkpoints %s share the method name %r; naming them %s", ", ".join(checkpoints),
                    method, ", ".join(names[path] for path in checkpoints))
        renamed.update(names)
    for block in blocks:
        if block.checkpoint in renamed:
            block.method = renamed[block.checkpoint]


META_KEYS = ("labels", "N", "source")  # a '#' comment with key=value tokens naming one is metadata


def parse_meta(comment: str) -> dict | None:
    """``labels=soft N=285 source=landmarks ...`` (the text after '#') -> dict, or None if not metadata."""
    tokens = comment.split()
    if not tokens or not all("=" in token and not token.startswith("=") for token in tokens):
        return None
    meta = dict(token.split("=", 1) for token in tokens)
    return meta if any(key in meta for key in META_KEYS) else None


def perturbation_name(folder_field: str) -> str:
    """The folder name without ``rafdb.test.`` (BENCHMARK.md §5.4)."""
    name = os.path.basename(folder_field.rstrip("/"))
    return name[len(FOLDER_PREFIX):] if name.startswith(FOLDER_PREFIX) else name


def _parse_classes(fields: list[str], where: str) -> list[int]:
    values = []
    for position, field in enumerate(fields, 1):
        try:
            value = int(field)
        except ValueError:
            raise UserError(f"{where}: field {position} is {field.strip()!r}, expected a class index "
                            f"0..{NUM_CLASSES - 1}") from None
        if not 0 <= value < NUM_CLASSES:
            raise UserError(f"{where}: field {position} is {value}, outside the class indices "
                            f"0..{NUM_CLASSES - 1}")
        values.append(value)
    return values


def _parse_topk(text: str, where: str, classes: list[int]) -> list[list[int]]:
    fields = text.split(",")
    if len(fields) != len(classes):
        raise UserError(f"{where}: #topk line has {len(fields)} frames, its sequence {len(classes)}")
    rankings = []
    length = None
    for frame, field in enumerate(fields):
        ranking = _parse_classes(field.split(":"), f"{where}: frame {frame}")
        if length is None:
            length = len(ranking)
        if len(ranking) != length or len(set(ranking)) != len(ranking):
            raise UserError(f"{where}: frame {frame} ranks {field!r}, expected {length} distinct classes "
                            f"joined by ':'")
        if ranking[0] != classes[frame]:
            raise UserError(f"{where}: frame {frame} ranks class {ranking[0]} first but its sequence "
                            f"line predicts {classes[frame]}")
        rankings.append(ranking)
    return rankings


def read_predictions(path: str | Path, frames: int | None = None) -> list[Block]:
    """Every non-empty block of a predictions file, in file order (UserError "<file>:<line>: ...")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read as text ({error})") from None
    blocks: list[Block] = []
    current: Block | None = None
    length: int | None = None  # sequence length of the current block
    length_line = 0
    topk_pending = False  # the previous content line was a sequence line
    pending_meta: tuple[dict, int] | None = None  # metadata before a header: for that header
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line:
            continue
        if line.startswith(TOPK_PREFIX):
            if current is None or not topk_pending:
                raise UserError(f"{where}: a #topk line must directly follow a sequence line")
            current.rankings[-1] = _parse_topk(line[len(TOPK_PREFIX):].strip(), where, current.sequences[-1])
            topk_pending = False
            continue
        if line.startswith("#"):
            meta = parse_meta(line[1:])
            if meta is not None:
                if "N" in meta and not meta["N"].isdigit():
                    raise UserError(f"{where}: metadata N={meta['N']!r} is not a sequence count")
                if current is not None and not current.sequences and not current.meta:
                    current.meta, current.meta_line = meta, number
                else:
                    pending_meta = (meta, number)
            continue
        fields = [field.strip() for field in line.split(",")]
        topk_pending = False
        if len(fields) <= 2:
            current = Block(method="" if len(fields) == 1 else method_name(fields[0]),
                            perturbation=perturbation_name(fields[-1]), line=number,
                            checkpoint="" if len(fields) == 1 else fields[0])
            if pending_meta is not None:
                current.meta, current.meta_line = pending_meta
                pending_meta = None
            blocks.append(current)
            length = None
            continue
        if current is None:
            raise UserError(f"{where}: a sequence line before any header (expected "
                            f"'<checkpoint>,<perturbation folder>' first)")
        classes = _parse_classes(fields, where)
        if frames is not None and len(classes) != frames:
            raise UserError(f"{where}: {len(classes)} classes, expected --frames {frames}")
        if length is None:
            length, length_line = len(classes), number
        elif len(classes) != length:
            raise UserError(f"{where}: {len(classes)} classes, expected {length} like the block's "
                            f"first sequence (line {length_line})")
        current.sequences.append(classes)
        current.sequence_lines.append(number)
        current.rankings.append(None)
        topk_pending = True
    if not blocks:
        raise UserError(f"{path}: no header line (empty file?); expected '<checkpoint>,<perturbation "
                        f"folder>' followed by sequence lines")
    kept = []
    for block in blocks:
        if not block.sequences:
            LOG.warning("%s:%d: header %s / %s has no sequences; ignored", path, block.line,
                        block.method or '""', block.perturbation)
            continue
        with_rankings = sum(ranking is not None for ranking in block.rankings)
        if 0 < with_rankings < len(block.rankings):
            missing = block.sequence_lines[block.rankings.index(None)]
            raise UserError(f"{path}:{missing}: sequence without a #topk line in a block whose other "
                            f"sequences have one")
        if with_rankings and len({len(r[0]) for r in block.rankings}) != 1:
            raise UserError(f"{path}:{block.line}: #topk lines of different lengths in one block")
        if "N" in block.meta and int(block.meta["N"]) != len(block.sequences):
            raise UserError(f"{path}:{block.meta_line}: metadata says N={block.meta['N']} but the block "
                            f"of line {block.line} has {len(block.sequences)} sequences (truncated file?)")
        kept.append(block)
    if not kept:
        raise UserError(f"{path}:{blocks[0].line}: header with no sequences after it; the file holds "
                        f"no predictions")
    disambiguate_methods(kept)
    return kept


def group_blocks(blocks: Sequence[Block], source: str = "") -> dict[str, dict[str, Block]]:
    """method -> perturbation -> block; a repeated pair warns and the later block wins (BENCHMARK.md §5.4)."""
    table: dict[str, dict[str, Block]] = {}
    for block in blocks:
        per_method = table.setdefault(block.method, {})
        if block.perturbation in per_method:
            LOG.warning("%s:%d: %s / %s already read at line %d; the later block wins", source,
                        block.line, block.method or '""', block.perturbation,
                        per_method[block.perturbation].line)
        per_method[block.perturbation] = block
    return table


# --------------------------------------------------------------------------------------------
# Computing


def ordered_perturbations(names, canonical: Sequence[str]) -> list[str]:
    """Canonical perturbations first, in BENCHMARK.md §3.3 order, then the others in first-seen order."""
    names = list(dict.fromkeys(names))
    return [name for name in canonical if name in names] + [name for name in names if name not in canonical]


def compute(table: dict[str, dict[str, Block]], *, difficulty: int = 1,
            ks: Sequence[int] = DEFAULT_TOPK, canonical: Sequence[str] | None = None) -> dict:
    """Per method and perturbation FP (and T-k-D), and per method mFP (and mean T-k-D) (BENCHMARK.md §5.5-§5.7)."""
    canonical = list(canonical_perturbations() if canonical is None else canonical)
    methods = {}
    for method in sorted(table):
        results = {}
        for perturbation in ordered_perturbations(table[method], canonical):
            block = table[method][perturbation]
            classes = block.classes()
            noise = metrics.is_noise_perturbation(perturbation)
            if not noise and not 1 <= difficulty < classes.shape[1]:
                raise UserError(f"--difficulty {difficulty}: must be in 1..{classes.shape[1] - 1} for "
                                f"sequences of {classes.shape[1]} frames (block at line {block.line})")
            entry = {
                "fp": metrics.flip_probability(classes, noise, difficulty),
                "rule": "noise" if noise else "consecutive",
                "n_sequences": int(classes.shape[0]),
                "n_frames": int(classes.shape[1]),
                "line": block.line,
                "protocol": block.meta.get("labels", "unknown"),
                "source": block.meta.get("source", "unknown"),
                "meta": dict(block.meta),
                "tkd": {},
            }
            rankings = block.ranking_array()
            if rankings is not None:
                entry["ranking_length"] = int(rankings.shape[2])
                for k in ks:
                    if k <= rankings.shape[2]:
                        entry["tkd"][str(k)] = metrics.topk_distance_perturbation(rankings, k, noise, difficulty)
            results[perturbation] = entry
        in_mean = [name for name in canonical if name in results]
        if len(in_mean) < len(canonical):
            LOG.warning("%s: %d of the %d RAF-DB-P perturbations present; mFP averages those only",
                        method or '""', len(in_mean), len(canonical))
        counts = sorted({entry["n_sequences"] for entry in results.values()})
        summary = {
            "n": counts[0] if len(counts) == 1 else counts,  # N, the sequences per perturbation
            "protocol": _joined(entry["protocol"] for entry in results.values()),
            "source": _joined(entry["source"] for entry in results.values()),
            "perturbations": results,
            "mean_over": in_mean,
            "extras": [name for name in results if name not in canonical],
            "mfp": metrics.mean_flip_probability({n: results[n]["fp"] for n in in_mean}) if in_mean else math.nan,
            "mtkd": {},
        }
        for k in ks:
            key = str(k)
            if in_mean and all(key in results[name]["tkd"] for name in in_mean):
                summary["mtkd"][key] = float(np.mean([results[name]["tkd"][key] for name in in_mean]))
        methods[method] = summary
    return {"methods": methods, "difficulty": difficulty, "topk": [int(k) for k in ks],
            "canonical_perturbations": canonical}


def _joined(values) -> str:
    """The distinct values in first-seen order, comma-joined ("soft", or "soft,unknown")."""
    return ",".join(dict.fromkeys(values))


def load_baseline(spec: str, results: dict, baseline_method: str | None = None) -> tuple[str, dict]:
    """The baseline's per-method results: a method of ``results`` or a JSON file this script wrote."""
    if spec in results["methods"] and not (spec.endswith(".json") and Path(spec).is_file()):
        return f"{spec} (this file)", results["methods"][spec]
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(repr(name) for name in results["methods"])
        raise UserError(f"--baseline {spec}: neither a method of the predictions file ({names}) nor a "
                        f"results JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        methods = data["methods"]
        if not isinstance(methods, dict):
            raise TypeError("'methods' is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"--baseline {path}: not a results JSON written by eval_perturbed_rafdb2.py "
                        f"--json ({error})") from None
    if baseline_method is None:
        if len(methods) != 1:
            raise UserError(f"--baseline {path}: holds {len(methods)} methods "
                            f"({', '.join(map(repr, methods))}); choose one with --baseline-method")
        baseline_method = next(iter(methods))
    if baseline_method not in methods:
        raise UserError(f"--baseline-method {baseline_method!r}: not in {path} "
                        f"({', '.join(map(repr, methods))})")
    if data.get("difficulty", 1) != results["difficulty"]:
        LOG.warning("--baseline %s: computed at difficulty %s, these results at %s", path,
                    data.get("difficulty"), results["difficulty"])
    return f"{baseline_method} ({path})", _nan_from_json(methods[baseline_method])


def normalise(results: dict, baseline_label: str, baseline: dict) -> None:
    """Add FR, mFR and the normalised T-k-D (mT-k-D) to every method (BENCHMARK.md §5.6, §5.7)."""
    base = baseline["perturbations"]
    results["baseline"] = baseline_label
    for summary in results["methods"].values():
        for name, entry in summary["perturbations"].items():
            if name in base:
                entry["fr"] = metrics.flip_rate(entry["fp"], base[name]["fp"])
                entry["tkd_rate"] = {k: metrics.topk_distance_rate(value, base[name]["tkd"][k])
                                     for k, value in entry["tkd"].items() if k in base[name].get("tkd", {})}
        in_mean = [name for name in summary["mean_over"] if name in base]
        summary["mfr_over"] = in_mean
        summary["mfr"] = float(np.mean([summary["perturbations"][n]["fr"] for n in in_mean])) if in_mean else math.nan
        summary["mtkd_rate"] = {}
        for k in results["topk"]:
            key = str(k)
            if in_mean and all(key in summary["perturbations"][n].get("tkd_rate", {}) for n in in_mean):
                summary["mtkd_rate"][key] = float(np.mean([summary["perturbations"][n]["tkd_rate"][key]
                                                           for n in in_mean]))


# --------------------------------------------------------------------------------------------
# Writing


def _value(value: float) -> str:
    """A float as the original printed it (Python's shortest repr); ``nan`` when missing."""
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else str(float(value))


def format_tsv(results: dict) -> str:
    """The original's table: '.' then the methods; one row per perturbation (no rafdb.test.) of FPs."""
    methods = list(results["methods"])
    rows = ordered_perturbations([name for m in methods for name in results["methods"][m]["perturbations"]],
                                 results["canonical_perturbations"])
    lines = ["\t".join(["."] + methods)]
    for name in rows:
        cells = [name]
        for method in methods:
            entry = results["methods"][method]["perturbations"].get(name)
            cells.append(_value(entry["fp"] if entry else None))
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def format_text(results: dict) -> str:
    """The original's ``t`` output: per method its name, ``perturbation value`` lines, ``---------``."""
    lines = []
    for method, summary in results["methods"].items():
        lines.append(method)
        lines.extend(f"{name} {_value(entry['fp'])}" for name, entry in summary["perturbations"].items())
        lines.append("---------")
    return "\n".join(lines) + "\n"


def format_summary(results: dict) -> str:
    """A fixed-width summary: per method mFP (and mFR), mean T-k-D, extras."""
    normalised = "baseline" in results
    ks = [str(k) for k in results["topk"]]
    width = max([len("method")] + [len(m) for m in results["methods"]])

    def count(summary):
        n = summary.get("n")
        return str(n) if isinstance(n, int) else "/".join(map(str, n or [])) or "?"

    n_width = max([1] + [len(count(summary)) for summary in results["methods"].values()])
    label_width = max([6] + [len(summary.get("protocol", "unknown")) for summary in results["methods"].values()])
    source_width = max([6] + [len(summary.get("source", "unknown")) for summary in results["methods"].values()])
    head = (f"{'method':<{width}}  {'N':>{n_width}}  {'labels':<{label_width}}  {'source':<{source_width}}"
            f"  {'P':>2}  {'mFP':>8}")
    if normalised:
        head += f"  {'mFR':>8}"
    head += "".join(f"  {'T' + k + 'D':>6}" for k in ks)
    if normalised:
        head += "".join(f"  {'mT' + k + 'D':>6}" for k in ks)
    lines = [f"difficulty {results['difficulty']}; N = sequences per perturbation; mFP = mean FP over "
             f"the P of the {len(results['canonical_perturbations'])} RAF-DB-P perturbations present "
             f"(unnormalised)", head, "-" * len(head)]

    def number(value, digits, size):
        return f"{'-':>{size}}" if value is None or math.isnan(value) else f"{value:>{size}.{digits}f}"

    for method, summary in results["methods"].items():
        line = (f"{method:<{width}}  {count(summary):>{n_width}}  {summary.get('protocol', 'unknown'):<{label_width}}"
                f"  {summary.get('source', 'unknown'):<{source_width}}  {len(summary['mean_over']):>2}"
                f"  {number(summary['mfp'], 6, 8)}")
        if normalised:
            line += f"  {number(summary.get('mfr', math.nan), 4, 8)}"
        line += "".join(f"  {number(summary['mtkd'].get(k), 4, 6)}" for k in ks)
        if normalised:
            line += "".join(f"  {number(summary.get('mtkd_rate', {}).get(k), 4, 6)}" for k in ks)
        lines.append(line)
        if summary["extras"]:
            extras = ", ".join(f"{name} {summary['perturbations'][name]['fp']:.6f}" for name in summary["extras"])
            lines.append(f"{'':<{width}}  extras (not in mFP): {extras}")
    aligned = [method for method, summary in results["methods"].items()
               if "aligned" in summary.get("source", "").split(",")]
    if aligned:
        lines.append(f"source: aligned (BENCHMARK.md §3.6) for {', '.join(aligned) or chr(34) * 2}: sequences built "
                     f"from the padded official aligned faces, not the landmark-aligned originals")
    if normalised:
        lines.append(f"FR, mFR and mTkD normalised to the baseline {results['baseline']}")
    else:
        lines.append("no --baseline: FR/mFR not computed (T-k-D are unnormalised means)")
    return "\n".join(lines) + "\n"


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value


def _nan_from_json(value):
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {key: _nan_from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_from_json(item) for item in value]
    return value


def format_csv(results: dict) -> str:
    """One row per method and perturbation, plus a ``mean`` row per method (mFP, mFR, mT-k-D)."""
    ks = [str(k) for k in results["topk"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "perturbation", "rule", "n_sequences", "n_frames", "fp", "fr"]
                    + [f"t{k}d" for k in ks] + [f"t{k}d_rate" for k in ks] + ["protocol", "source"])
    for method, summary in results["methods"].items():
        for name, entry in summary["perturbations"].items():
            writer.writerow([method, name, entry["rule"], entry["n_sequences"], entry["n_frames"],
                             _value(entry["fp"]), _value(entry.get("fr"))]
                            + [_value(entry["tkd"].get(k)) for k in ks]
                            + [_value(entry.get("tkd_rate", {}).get(k)) for k in ks]
                            + [entry["protocol"], entry["source"]])
        n = summary["n"] if isinstance(summary["n"], int) else ""
        writer.writerow([method, "mean", "", n, "", _value(summary["mfp"]), _value(summary.get("mfr"))]
                        + [_value(summary["mtkd"].get(k)) for k in ks]
                        + [_value(summary.get("mtkd_rate", {}).get(k)) for k in ks]
                        + [summary["protocol"], summary["source"]])
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Command line


def _ks(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2,3,5, got {text!r}") from None
    if not values or values[0] < 1 or values[-1] > NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected values in 1..{NUM_CLASSES}, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("predictions", type=Path, help="predictions file of eval_perturbed_rafdb.py")
    parser.add_argument("mode", nargs="?", default="",
                        help="'t' (any word starting with t) prints text lists instead of the TSV")
    group = parser.add_argument_group("metrics")
    group.add_argument("--difficulty", type=positive_int, default=1,
                       help="compare frames j and j+d for non-noise perturbations (BENCHMARK.md §5.5)")
    group.add_argument("--topk", type=_ks, default=list(DEFAULT_TOPK), metavar="K[,K...]",
                       help="top-k distances to report where #topk rankings are present")
    group.add_argument("--frames", type=positive_int, default=None,
                       help="require this many frames per sequence (default: read from the data)")
    group.add_argument("--baseline", default=None, metavar="NAME|JSON",
                       help="normalise FR/mFR/mTkD to this method of the file, or to a --json "
                            "results file of this script")
    group.add_argument("--baseline-method", default=None, metavar="NAME",
                       help="the method to use in a --baseline JSON holding several")
    group = parser.add_argument_group("output")
    group.add_argument("--json", type=Path, default=None, help="write all results as JSON (atomically)")
    group.add_argument("--csv", type=Path, default=None, help="write per-perturbation results as CSV")
    group.add_argument("--quiet", action="store_true", help="no summary on standard error")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.mode and not args.mode.startswith("t"):
        parser.error(f"second argument {args.mode!r}: only 't' (text lists) is known")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    blocks = read_predictions(args.predictions, args.frames)
    table = group_blocks(blocks, str(args.predictions))
    results = compute(table, difficulty=args.difficulty, ks=args.topk)
    results["source"] = str(args.predictions)
    results["format"] = JSON_FORMAT
    if args.baseline is not None:
        label, baseline = load_baseline(args.baseline, results, args.baseline_method)
        normalise(results, label, baseline)
    sys.stdout.write(format_text(results) if args.mode else format_tsv(results))
    sys.stdout.flush()
    if not args.quiet:
        sys.stderr.write(format_summary(results))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(_nan_to_none(results), indent=1) + "\n")
        LOG.info("wrote %s", args.json)
    if args.csv is not None:
        atomic_write_text(args.csv, format_csv(results))
        LOG.info("wrote %s", args.csv)
    return 0


if __name__ == "__main__":
    run_main(main)
