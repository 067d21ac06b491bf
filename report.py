#!/usr/bin/env python3
"""Compare models from their robustness and stability results (docs/BENCHMARK.md §11.5).

Reads any number of result files, or folders holding them (run folders: every ``*.json`` in the
folder and its sub-folders that is one of the two kinds below; others are skipped):

- robustness: ``eval_corrupted_rafdb.py --json`` (``"format": "rafdb-c-results"``), one entry per
  evaluated model with its per-folder accuracies;
- stability: ``eval_perturbed_rafdb2.py --json`` (``"methods"``), flip probabilities and top-k
  distances per method and perturbation.

The two kinds join on the model file, which both record: its SHA-256 (robustness:
``checkpoint.checkpoint_sha256``; stability: each method's ``checkpoint_sha256``, from the
``model_sha256=`` of the predictions file's metadata), so the folder each evaluation ran from does not
matter; results written before the hash was recorded join on the file's path (``checkpoint``).
Rows of the same file are one model, two different files never merge; the same file evaluated under
two label protocols (or N), by its robustness or its stability results, is two rows, named with the
protocol and N; of a model's stability results on different sequences (RAF-DB-P's landmark
alignment and ``--source aligned``, trees of another seed, ...), the landmark one joins the
robustness row and each other is a row of its own, named ``[P source aligned]``, ``[P seed 1]``.
Of a model's robustness results on other corrupted images (RAF-DB-C trees of another export ``--seed``,
format, ..., or images made on the fly), the one on the images most other models were evaluated on
joins the stability row and each other is a row of its own, named ``[C seed 1]``.
A stability method without a recorded path (a JSON of an
older eval_perturbed_rafdb2.py) joins the one robustness model of its name, if there is exactly one.

Evaluation settings (docs/BENCHMARK.md §5.4, §11.5): the same file evaluated with a different
preprocessing, input size, class order, restriction to the dataset's classes or test-time adaptation
is a different row, never one row mixing the numbers of both: robustness results record them in
``checkpoint`` (``Classifier.describe()``) and ``runtime``, stability methods in ``settings`` (from
the predictions file's metadata). The preprocessing is compared as its canonical setting
(``checkpoints.preprocessing_setting``: the computation, not the displayed label; an older file's
label is read as the setting it describes), class order names as their canonical emotion names.
Only a setting both sides record is compared (older predictions files state none: they join as
before; older robustness JSONs record a label, read as its setting). Rows kept apart are named with the differing values (``run_a
[preprocessing z_normalization]``); a stability method kept apart from the robustness results of its
own file gives one warning in the report naming both result files, both model paths and both values.
The same file evaluated twice on the same images with exactly the same recorded settings (also a copy
at another path) is one row: the later result is used, with a warning in the report naming both paths
and both result files; a
robustness result recording a setting the other does not is a row of its own (``[preprocessing not
recorded]``), with a warning, never a repeat whose numbers replace those of known settings.
Means over part of the benchmark sets (fewer than the 18 corruptions, the 5 severities or the 10
perturbations) get a note under the table naming the model and the counts.
A model's name is its checkpoint's run-folder name, as the stability reader names its methods
(``<run>/<file>`` when different checkpoints share a run folder, the whole path if that is shared too);
a file directly in ``out_training_fer/`` (the LBP+SVM baseline's default place) is named by its file.

Writes into ``--out`` (default ``report/``; checked to be a writable folder, or one that can be
created, before anything is read): ``report.html`` (self-contained: tables and PNG figures
embedded as base64), ``report.md`` (with the figures as PNG files beside it, ``report_<figure>.png``;
one of an earlier run into the folder that this report does not draw is removed), ``report.csv`` (one
row per model), all or none: each is written to a temporary file first and renamed into place once all
are written, so a failure (a folder named like one of them, a full disk) leaves the earlier report as it
was. Per model: clean error, mean corruption error, mCE and relative mCE, mean ECE where the
results have it, mFP, mFR, T2D and T3D. Figures: a models x corruptions heatmap of CE (of the mean
error without a baseline), accuracy against severity for every corruption (one line per model), mCE
(mean corruption error) against clean error, and FP per perturbation.

Normalisation (docs/BENCHMARK.md §5.2, §5.6): ``--baseline NAME`` names one of the models read (a
row named by its model file also by the file's name without its extension: ``lbp_svm`` for
``lbp_svm.skops``), or ``--baseline FILE.json`` a robustness or stability file of one model; CE,
relative CE, FR are then recomputed here from the errors and flip probabilities in the files, over the corruptions /
perturbations that both the model and the baseline have (a baseline that could normalise nothing,
having no results of a kind the models have or, given as a file, no model evaluated on its images,
labels and sequences, is an error). Without ``--baseline``, the normalised numbers the files carry are
shown with the baseline each was computed against.

Comparability: models evaluated with a different dataset, split, label protocol, N, image source,
or export format (or robustness results over different corruption sets or severities; stability
results over sequences of another length or at another difficulty) are never ranked
together: the report shows a warning naming the difference and ranks each comparable group on its
own.
A model evaluated for robustness only (or stability only) is ranked with the models of both kinds
whose keys it shares when they form one group (a missing evaluation differs in nothing); otherwise
it is ranked apart, named in a warning.

Example::

    python3 report.py runs/ results/senet.json results/fp.json --baseline _netsenet50_lpf0_20220409_101500 \\
        --out report
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

import cli_common
import stability
from cli_common import UserError
from metrics import relative_sum

LOG = logging.getLogger("fer.report")

ROBUSTNESS_FORMAT = "rafdb-c-results"  # eval_corrupted_rafdb.py's RESULTS_FORMAT
CSV_COLUMNS = ("model", "group", "rank", "ranked_by", "checkpoint", "dataset", "split", "protocol", "n", "source",
               "format", "clean_error", "mean_corruption_error", "mce", "relative_mce",
               "ce_baseline", "mean_ece", "stability_n", "stability_source", "mfp", "mfr",
               "fr_baseline", "t2d", "t3d", "corruptions", "perturbations", "severities")


# --------------------------------------------------------------------------------------------
# Reading


# A RAF-DB-P block header's folder ends in p_<name> (stability.read_predictions' header rule)
_PERTURBATION_NAME = re.compile(r"p_[A-Za-z0-9_]+")


def looks_like_predictions(path: Path) -> bool:
    """Whether ``path`` is a RAF-DB-P predictions text (eval_perturbed_rafdb.py's output, read by
    eval_perturbed_rafdb2.py), judged by its first 64 KiB: its first line that is neither blank nor
    a plain ``#`` comment is a block header ``<checkpoint>,<...p_<name>>`` (or a one-field external
    header), or before it comes the writer's metadata comment (``# labels=soft N=285 ...``), a
    ``#topk`` line or an end line ``# end blocks=N``."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(1 << 16)
    except OSError:
        return False
    for line in head.decode("utf-8-sig", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith(stability.TOPK_PREFIX) or stability.END_LINE.fullmatch(line) or \
                    stability.parse_meta(line[1:]) is not None:
                return True
            continue
        fields = [field.strip() for field in line.split(",")]
        return len(fields) <= 2 and bool(_PERTURBATION_NAME.fullmatch(stability.perturbation_name(fields[-1])))
    return False


def _read_json(path: Path):
    import model_files

    model_files.refuse_pickle(path)  # never opened: unpickling runs code
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        if not isinstance(error, OSError) and looks_like_predictions(path):
            raise UserError(f"{path}: a RAF-DB-P predictions file (eval_perturbed_rafdb.py's output), not a "
                            f"result JSON; turn it into one first: eval_perturbed_rafdb2.py {shlex.quote(str(path))} "
                            f"--json results.json, and give report.py that results.json") from None
        raise UserError(f"{path}: not a readable JSON file ({error})") from None


def _checked(path: Path, kind: str, data: dict) -> None:
    """UserError naming the file and field when a result file lacks what the report reads."""
    import result_files

    if kind == "robustness":
        problem, writer = result_files.robustness_problem(data), "eval_corrupted_rafdb.py --json"
    else:
        problem, writer = result_files.stability_problem(data), "eval_perturbed_rafdb2.py --json"
    if problem:
        raise UserError(result_files.damaged(path, problem, writer))


def _kind(data) -> str | None:
    if isinstance(data, dict) and data.get("format") == ROBUSTNESS_FORMAT and \
            isinstance(data.get("results"), list):
        return "robustness"
    if isinstance(data, dict) and isinstance(data.get("methods"), dict) and \
            "canonical_perturbations" in data:
        return "stability"
    return None


def warn_unfinished(path: Path, kind: str, data: dict) -> None:
    """A warning for a robustness JSON of an evaluation that stopped before its last model."""
    if kind == "robustness" and data.get("complete") is False:
        LOG.warning("%s: written by an evaluation that did not finish (%d of %s model(s)); the models it "
                    "did not reach are missing from the report", path, len(data["results"]),
                    data.get("models_planned", "?"))


def warn_empty(path: Path, kind: str, data: dict) -> None:
    """A warning for a result file that holds no model (an empty ``results`` list or ``methods``
    object): nothing of it is in the report (an unfinished evaluation has its own warning)."""
    if kind == "robustness" and not data["results"] and data.get("complete") is not False:
        LOG.warning("%s: holds no model (its \"results\" list is empty); nothing of it is in the report", path)
    if kind == "stability" and not data["methods"]:
        LOG.warning("%s: holds no model (its \"methods\" are empty); nothing of it is in the report", path)


def collect_files(inputs: Sequence[str | Path]) -> list[tuple[Path, str, dict]]:
    """(path, kind, data) for every result file the inputs name, in a stable order."""
    found: list[tuple[Path, str, dict]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            candidates = sorted(item.rglob("*.json"))
            before = len(found)
            for path in candidates:
                try:
                    data = _read_json(path) if path.stat().st_size < 200_000_000 else None
                except UserError as error:  # a scratch file of another tool in the folder, not a result
                    LOG.warning("%s; skipped (found in the folder %s)", error, item)
                    continue
                kind = _kind(data)
                if kind is None:
                    LOG.debug("%s: not a robustness or stability result, skipped", path)
                    continue
                _checked(path, kind, data)
                warn_unfinished(path, kind, data)
                warn_empty(path, kind, data)
                found.append((path, kind, data))
            if len(found) == before:
                raise UserError(f"{item}: no robustness (eval_corrupted_rafdb.py --json) or "
                                f"stability (eval_perturbed_rafdb2.py --json) result in it")
        elif item.is_file():
            data = _read_json(item)
            kind = _kind(data)
            if kind is None:
                raise UserError(f"{item}: expected a robustness JSON (eval_corrupted_rafdb.py "
                                f"--json, \"format\": \"{ROBUSTNESS_FORMAT}\") or a stability JSON "
                                f"(eval_perturbed_rafdb2.py --json, with \"methods\")")
            _checked(item, kind, data)
            warn_unfinished(item, kind, data)
            warn_empty(item, kind, data)
            found.append((item, kind, data))
        else:
            raise UserError(f"{item}: no such result file or folder")
    return found


def _num(value) -> float:
    return math.nan if value is None else float(value)


def model_name(checkpoint: str) -> str:
    """The run-folder name of a checkpoint path (the stability reader's method name)."""
    path = Path(checkpoint)
    return path.parent.name or path.name


RUNS_ROOT = "out_training_fer"  # train_fer.py's --out-root: its files are not in a run folder


def shown_name(checkpoint: str) -> str:
    """The report's name of a model: :func:`model_name`, except for a file directly in the folder of
    run folders (``out_training_fer/lbp_svm.skops``), which is named by its file, not 'out_training_fer'."""
    path = Path(checkpoint)
    return path.name if path.parent.name == RUNS_ROOT else model_name(checkpoint)


class Model:
    """Everything the report knows about one model."""

    def __init__(self, name: str):
        self.name = name
        self.robustness: dict | None = None  # one result entry of a robustness file
        self.robustness_file: Path | None = None
        self.stability: dict | None = None  # one method of a stability file
        self.stability_info: dict = {}
        self.stability_file: Path | None = None
        self.stability_method: str | None = None
        self.group = ""
        self.warnings: list[str] = []  # for the report: how its rows were joined (load_models)

    # -- robustness ----------------------------------------------------------------------
    def errors(self) -> tuple[float, dict[str, dict[int, float]]]:
        """(clean error, {corruption: {severity: error}})."""
        rows = self.robustness["folders"]
        clean = next(row for row in rows if row.get("corruption") is None)
        table: dict[str, dict[int, float]] = {}
        for row in rows:
            if row.get("corruption"):
                table.setdefault(row["corruption"], {})[int(row["severity"])] = float(row["error"])
        return float(clean["error"]), table

    def identity(self) -> dict:
        result = self.robustness or {}
        checkpoint = result.get("checkpoint") or {}
        return {"dataset": result.get("dataset") or ("rafdb" if "rafdb" in result else None),
                "split": result.get("split") or ("test" if result else None),
                "protocol": result.get("protocol"), "n": result.get("n"),
                "source": _source_label(result) if result else None,
                "format": result.get("format"), "crop": checkpoint.get("crop"),
                "checkpoint": checkpoint.get("checkpoint"),
                # FER+ soft labels under --ferplus-norm fix or legacy: other NLL and Brier scores (a
                # result written before the setting was recorded was evaluated with the fix labels)
                "ferplus_norm": (result.get("ferplus_norm") or "fix")
                if result.get("dataset") == "ferplus" and result.get("protocol") != "hard" else None}


def _source_label(result: dict) -> str:
    """The corrupted images a result was measured on: an export is known by its manifest's SHA-256
    where recorded (the same tree reached by another path, from another folder, is the same
    source), else by its path."""
    source = result.get("source") or {}
    # The ImageNet-C extras' lengths (--param-set, docs/BENCHMARK.md §2.9) make other images: another
    # source where the headline numbers are over extras (no corruption of the 18 evaluated); beside the
    # 18 the headline stays theirs, and only the extras' CE is withheld (corruption_metrics).
    import corruptions

    names = sorted({row.get("corruption") for row in result.get("folders") or [] if row.get("corruption")})
    headline_extras = not set(names) & set(corruptions.CORRUPTION_NAMES) and corruptions.needs_param_set(names)
    params = f", param set {source['param_set']}" if headline_extras and source.get("param_set") else ""
    if source.get("on_the_fly"):
        return f"on the fly (seed {source.get('seed')}{params})"
    digest = (result.get("manifest") or {}).get("sha256")
    label = f"export with manifest {digest[:12]}" if digest else f"export {result.get('corrupted', '?')}"
    return f"{label} ({params[2:]})" if params else label


def _file_identity(info: dict, checkpoint: str) -> str:
    """A model file's identity: ``sha256:<its SHA-256>`` where the result records it, else the
    :func:`model_key` of its path ``checkpoint``."""
    digest = info.get("checkpoint_sha256")
    return f"sha256:{digest}" if digest else model_key(checkpoint)


def model_key(checkpoint: str) -> str:
    """A model's identity: its checkpoint / model file path, normalised (``./a/b`` = ``a/b``; a
    relative path is taken from the current folder, where the evaluations are usually run)."""
    return os.path.abspath(os.path.normpath(checkpoint))


def _display_names(paths: dict[str, str], settings_suffix: dict[str, str] | None = None) -> dict[str, str]:
    """key -> name for models known by path: the run-folder name, as the stability reader names
    methods; where different models share it, ``<run>/<file>``, and the whole path if that too is
    shared. A key split by label protocol (:func:`_split_by_labels`) adds ``[<protocol> labels,
    N=<n>]``, one split by the source of its sequences (:func:`_split_by_sequence_source`) ``[P
    source <source>]``, one split by evaluation settings (:func:`_assign_variants`) its ``settings_suffix``."""
    def identity(key: str) -> str:  # one model evaluated under several protocols or settings: one identity
        return key.split(SETTINGS_SEP, 1)[0].split(SOURCE_SEP, 1)[0].split(LABEL_SEP, 1)[0]

    first = {}  # identity -> its checkpoint path (the first recorded)
    for key, checkpoint in paths.items():
        first.setdefault(identity(key), checkpoint)
    by_name: dict[str, list[str]] = {}
    for ident, checkpoint in first.items():
        by_name.setdefault(shown_name(checkpoint), []).append(ident)
    base = {}
    for name, idents in by_name.items():
        if len(idents) == 1:
            base[idents[0]] = name
            continue
        longer = {ident: f"{name}/{Path(first[ident]).name}" for ident in idents}
        if len(set(longer.values())) < len(idents):
            longer = {ident: first[ident] for ident in idents}
        if len(set(longer.values())) < len(idents):  # one path, two file contents (a file overwritten)
            longer = {ident: f"{first[ident]} [{ident.removeprefix('sha256:')[:8]}]" for ident in idents}
        LOG.info("models %s share the name %r; naming them %s", ", ".join(first[i] for i in idents),
                 name, ", ".join(longer[i] for i in idents))
        base.update(longer)
    names = {}
    for key in paths:
        names[key] = base[identity(key)]
        labelled, _, source = key.split(SETTINGS_SEP, 1)[0].partition(SOURCE_SEP)
        if LABEL_SEP in labelled:  # e.g. "run_a [hard labels, N=3068]"
            _, protocol, n = labelled.split(LABEL_SEP)
            names[key] += f" [{protocol} labels, N={n}]"
        if source:  # e.g. "run_a [P source aligned]", "run_a [P test set faces2.test 0a1b2c3d]"
            names[key] += "".join(f" [{part}]" for part in source.split(SOURCE_SEP))
        names[key] += (settings_suffix or {}).get(key, "")  # e.g. "run_a [preprocessing z_normalization]"
    return names


def robustness_settings(result: dict) -> dict[str, str]:
    """The evaluation settings a robustness result records (``stability.SETTING_KEYS``, as the
    predictions file's metadata writes them): from its ``checkpoint`` (``Classifier.describe()``:
    preprocessing_setting (the computation's canonical token; in a JSON written before it was
    recorded, the display label ``preprocessing`` read as the setting it describes), input_shape, output_classes, restrict_to_dataset_classes where the model has
    outputs that are no dataset class) and its ``runtime`` (test-time adaptation, and the batch of an
    adapted run). What it does not
    record (an older JSON, a predictions file's preprocessing) is left out: unknown."""
    info = result.get("checkpoint") or {}
    runtime = result.get("runtime")
    adapted = stability.adapted_label(runtime.get("adapt"), runtime.get("adapt_prior")) \
        if isinstance(runtime, dict) and "adapt" in runtime else None
    return stability.evaluation_settings(
        preprocessing=info.get("preprocessing_setting") or info.get("preprocessing"),
        input_shape=info.get("input_shape"),
        class_order=info.get("output_classes"),
        restrict=info.get("restrict_to_dataset_classes") if info.get("outputs_not_in_dataset") else None,
        adapted=adapted,
        adapt_batch=runtime.get("adapt_batch") if adapted not in (None, "none") else None)


def _canonical_setting(key: str, value):
    """``stability.canonical_setting`` of a recorded value; a list (blocks that disagreed when
    written) whose values are all one setting today is that setting."""
    if isinstance(value, list):
        values = list(dict.fromkeys(stability.canonical_setting(key, item) for item in value))
        return values[0] if len(values) == 1 else values
    return stability.canonical_setting(key, value)


def stability_settings(summary: dict) -> dict[str, str]:
    """A stability method's recorded settings (``settings`` of eval_perturbed_rafdb2.py's JSON; a
    list where its blocks disagree), canonicalised (:func:`_canonical_setting`); {} in a JSON
    written before they were recorded."""
    settings = summary.get("settings")
    return {key: _canonical_setting(key, value) for key, value in settings.items() if value is not None} \
        if isinstance(settings, dict) else {}


def settings_differences(mine: dict, theirs: dict) -> list[str]:
    """The settings stated on both sides with different values (a key one side leaves out is
    unknown there, never a difference)."""
    return [key for key in stability.SETTING_KEYS if key in mine and key in theirs and mine[key] != theirs[key]]


SETTINGS_SEP = "\1"  # joins a (label-split) key and its settings variant; no path or SHA-256 holds it


class _Variant:
    """The rows of one model file (and label protocol) evaluated with one set of settings."""

    def __init__(self, key: str, index: int):
        self.key, self.index = key, index
        self.settings: dict = {}  # what its rows state, together
        self.robust_settings: dict | None = None  # what its robustness results state (all the same)
        self.robust: list = []  # (checkpoint, result file)
        self.stable: list = []  # (checkpoint, result file, method)
        self.stable_settings: dict | None = None  # what its stability method states
        self.final = key

    def add(self, settings: dict) -> None:
        for key, value in settings.items():
            self.settings.setdefault(key, value)

    def fits(self, settings: dict) -> bool:
        return not settings_differences(self.settings, settings)

    def where(self) -> str:
        """Its result files and checkpoints, for messages."""
        parts = [f"robustness {file} ({checkpoint})" for checkpoint, file in self.robust]
        parts += [f"stability {file} ({checkpoint or method})" for checkpoint, file, method in self.stable]
        return ", ".join(parts)


def _assign_variants(robust: list, stable: list) -> tuple[list, list, dict, list]:
    """Split each model (a key of :func:`_split_by_labels`) by its evaluation settings
    (docs/BENCHMARK.md §11.5).

    Robustness rows first: one joins the earlier variant of its key that records exactly the same
    settings (a repeat: the later one is used, and the row's settings are its own), else starts its
    own. One that records fewer (or other) settings than an earlier result it does not contradict
    could have been evaluated with other settings: it is never taken for a repeat (its numbers
    would replace numbers of known settings, under a name claiming settings it never stated), but
    is a row of its own, named with what it does not record, with a warning. Then each stability
    method with a key, those stating more settings first: the one variant it fits, and whose stability
    (if any) states exactly its settings, joins it (the latter a repeat: the later one is used); of
    several, the one variant that states more of the method's settings than any other (a row of
    unknown settings is never preferred);
    none (a setting stated on both sides differs) or several (it
    states too little to tell which) make a variant of its own, with a warning. A key with one
    variant stays as it is; with several, each is ``<key> SOH <index>`` (:data:`SETTINGS_SEP`) and
    its name says the settings that differ (or, where none differs, those one of them does not
    record).

    Returns (robust rows with their final keys, stable rows likewise, {final key: name suffix},
    conflicts: (kind, the variant warned about, the variants of its key it did not join, whether it
    fitted several of them): kind "stability" for a stability method kept apart where a
    robustness result of its key exists, "robustness" for a robustness result kept apart from
    results it does not contradict).
    """
    variants: dict[str, list[_Variant]] = {}

    def new_variant(key: str) -> _Variant:
        group = variants.setdefault(key, [])
        group.append(_Variant(key, len(group)))
        return group[-1]

    placed_robust = []
    conflicts = []  # (kind, variant, the variants it would have joined but for its settings, ambiguous)
    for key, checkpoint, path, result in robust:
        settings = robustness_settings(result)
        group = variants.setdefault(key, [])
        variant = next((v for v in group if v.robust and v.settings == settings), None)
        if variant is None:
            compatible = [v for v in group if v.robust and v.fits(settings)]
            variant = new_variant(key)
            if compatible:
                conflicts.append(("robustness", variant, compatible, False))
        variant.add(settings)
        variant.robust_settings = settings
        variant.robust.append((checkpoint, path))
        placed_robust.append((variant, checkpoint, path, result))
    placed_stable = []
    # methods stating more settings first: which variant an unknown setting could be does not
    # depend on the order of the files and methods
    for key, checkpoint, path, method, summary, data in sorted(
            stable, key=lambda row: -len(stability_settings(row[4]))):
        if key is None:  # no recorded path: joined later by name (_unrecorded_key)
            placed_stable.append((None, checkpoint, path, method, summary, data))
            continue
        settings = stability_settings(summary)
        group = variants.setdefault(key, [])
        # a variant with the stability of other stated settings is taken: these numbers would replace it
        fitting = [v for v in group if v.fits(settings) and v.stable_settings in (None, settings)]
        if len(fitting) > 1 and settings:  # the one confirming most of what the method states
            confirmed = {id(v): sum(k in v.settings for k in settings) for v in fitting}
            best = max(confirmed.values())
            if best and sum(count == best for count in confirmed.values()) == 1:
                fitting = [v for v in fitting if confirmed[id(v)] == best]
        if len(fitting) == 1:
            variant = fitting[0]
        else:
            others = list(group)
            variant = new_variant(key)
            if others and any(v.robust for v in others):
                conflicts.append(("stability", variant, others, len(fitting) > 1))
        variant.add(settings)
        variant.stable.append((checkpoint, path, method))
        variant.stable_settings = settings
        placed_stable.append((variant, checkpoint, path, method, summary, data))
    suffixes = {}
    for key, group in variants.items():
        if len(group) < 2:
            continue
        differing = [setting for setting in stability.SETTING_KEYS  # stated differently by two of them
                     if len({repr(v.settings[setting]) for v in group if setting in v.settings}) > 1]
        if not differing:  # none differs: what some of their robustness results (else rows) do not record
            stated = [v.robust_settings for v in group if v.robust_settings is not None]
            stated = stated if len(stated) > 1 else [v.settings for v in group]
            differing = [setting for setting in stability.SETTING_KEYS
                         if 0 < sum(setting in settings for settings in stated) < len(stated)]
        for variant in group:
            variant.final = f"{key}{SETTINGS_SEP}{variant.index}"
            text = ", ".join(stability.setting_text(setting, variant.settings.get(setting)) for setting in differing)
            suffixes[variant.final] = f" [{text or f'evaluation {variant.index + 1}'}]"
    return ([(v.final, checkpoint, path, result) for v, checkpoint, path, result in placed_robust],
            [(v.final if v is not None else None, *rest) for v, *rest in placed_stable],
            suffixes, conflicts)


def _robust_conflict_warning(variant: _Variant, others: list, names: dict) -> str:
    """One line naming the files, checkpoints and settings of a robustness result kept apart from
    earlier robustness results of the same model file that record other settings (none differing)."""
    checkpoint, file = variant.robust[0]
    mine = variant.robust_settings or {}
    keys = [k for k in stability.SETTING_LABELS if any((k in mine) != (k in (o.robust_settings or {})) for o in others)]
    missing = [k for k in keys if k not in mine]

    def stated(v: _Variant) -> str:
        known = [stability.setting_text(k, v.robust_settings[k]) for k in keys if k in (v.robust_settings or {})]
        return ("with " + ", ".join(known)) if known else \
            f"recording no {', '.join(stability.SETTING_LABELS[k] for k in keys)}"

    text = (f"recording no {', '.join(stability.SETTING_LABELS[k] for k in missing)}"
            if missing and len(missing) == len(keys) else stated(variant))
    rows = [names[variant.final]] + [names[other.final] for other in others]
    return (f"same model file, evaluation settings recorded by one robustness result and not the other, so "
            f"not taken for a repeat (its numbers may be of other settings): robustness {file} ({checkpoint}) "
            f"{text}; " + "; ".join(f"{other.where()} {stated(other)}" for other in others)
            + f" (rows {', '.join(repr(row) for row in rows)})")


def _conflict_warning(variant: _Variant, others: list, ambiguous: bool, names: dict) -> str:
    """One line naming the files, checkpoints and differing setting values of a stability method
    kept apart from the robustness results of the same model file."""
    checkpoint, file, method = variant.stable[0]
    if ambiguous:
        keys = sorted({k for v in others for w in others for k in settings_differences(v.settings, w.settings)},
                      key=list(stability.SETTING_LABELS).index)
        return (f"{file}: the stability of {checkpoint or method} records no "
                f"{', '.join(stability.SETTING_LABELS[k] for k in keys if k not in variant.settings) or 'settings'}, "
                f"and the same model file was evaluated with several: "
                + "; ".join(f"{v.where()} with {', '.join(stability.setting_text(k, v.settings.get(k)) for k in keys)}"
                            for v in others)
                + f"; not merged with any: shown as {names[variant.final]!r}")
    keys = list(dict.fromkeys(key for other in others for key in settings_differences(variant.settings, other.settings)))
    mine = f"stability {file} ({checkpoint or method}) with " + \
        ", ".join(stability.setting_text(key, variant.settings[key]) for key in keys)
    theirs = [f"{other.where()} with " + ", ".join(stability.setting_text(key, other.settings[key])
                                                  for key in keys if key in other.settings)
              for other in others if settings_differences(variant.settings, other.settings)]
    rows = [names[variant.final]] + [names[other.final] for other in others]
    return (f"same model file, different evaluation settings, so not merged into one row: {mine}; "
            + "; ".join(theirs) + f" (rows {', '.join(repr(row) for row in rows)})")


def load_models(files: list[tuple[Path, str, dict]]) -> list[Model]:
    """One Model per model of the inputs; its robustness and stability rows join by its identity.

    A robustness result records its model file (``checkpoint.checkpoint_sha256``, else the path
    ``checkpoint.checkpoint``) and a stability method its own (``checkpoint_sha256``, else
    ``checkpoint``, written by eval_perturbed_rafdb2.py): rows of the same file are one model,
    different files never merge, whatever their names. A stability method without a recorded path
    (an older JSON, or an external one-field header) joins the single robustness model of its name,
    if there is exactly one; otherwise it stays a model of its own.

    The same file is several rows when it was evaluated under several label protocols or N
    (:func:`_split_by_labels`) or with different evaluation settings (preprocessing, input size,
    class order, restriction to the dataset's classes, test-time adaptation: a setting that both
    sides record and that differs, :func:`_assign_variants`). Such rows are named with what differs
    (``run_a [preprocessing z_normalization]``), and a stability method kept apart from the
    robustness results of its own file gives one warning naming both files and the setting values
    (``Model.warnings``, shown in the report). A setting one side does not record (an older file)
    is unknown and never keeps rows apart. The same file evaluated twice with the same settings
    (the same path, or a copy at another path) is one row: the later result is used, with a warning
    naming both result files and both model paths.
    """
    robust = []  # (key, checkpoint path, file, result)
    aliases = {}  # a model's path key -> its identity key (the file's SHA-256 where recorded)
    for path, kind, data in files:
        if kind == "robustness":
            for result in data["results"]:
                info = result.get("checkpoint") or {}
                checkpoint = info.get("checkpoint") or str(path)
                key = _file_identity(info, checkpoint)
                aliases.setdefault(model_key(checkpoint), key)
                robust.append((key, checkpoint, path, result))
    robust_keys = {key for key, *_ in robust}
    stable = []  # (key or None, checkpoint path or None, file, method, summary, file's data)
    for path, kind, data in files:
        if kind == "stability":
            for method, summary in data["methods"].items():
                summary = summary if isinstance(summary, dict) else {}
                checkpoint, digest = summary.get("checkpoint"), summary.get("checkpoint_sha256")
                hashed = f"sha256:{digest}" if digest else None
                by_path = aliases.get(model_key(checkpoint), model_key(checkpoint)) if checkpoint else None
                if hashed is not None and hashed in robust_keys:
                    key = hashed  # a robustness row of the same file content
                elif by_path is not None and by_path in robust_keys and not by_path.startswith("sha256:"):
                    key = by_path  # a robustness JSON from before the hash: the path, as then
                else:  # no robustness row of this model: its content, else its path
                    key = hashed or by_path
                stable.append((key, checkpoint, path, method, summary, data))
    robust, stable = _split_by_labels(robust, stable)
    robust = _split_by_corrupted_source(robust, stable)
    stable = _split_by_test_set(robust, stable)
    stable = _split_by_sequence_source(stable)
    robust, stable, suffixes, conflicts = _assign_variants(robust, stable)
    paths = {key: checkpoint for key, checkpoint, *_ in robust}
    for key, checkpoint, *_ in stable:
        if key is not None:
            paths.setdefault(key, checkpoint)
    names = _display_names(paths, suffixes)
    models: dict[str, Model] = {}

    def model_for(key: str, name: str) -> Model:
        if key not in models:
            models[key] = Model(name)
        return models[key]

    for key, checkpoint, path, result in robust:
        model = model_for(key, names[key])
        if model.robustness is not None:
            before = (model.robustness.get("checkpoint") or {}).get("checkpoint") or str(model.robustness_file)
            # in the report too (make_report logs it): it shows one of the two results only
            if model_key(before) == model_key(checkpoint):
                model.warnings.append(f"{path}: the robustness of {checkpoint} appears again (also in "
                                      f"{model.robustness_file}); the later one ({path}) is used")
            else:
                model.warnings.append(f"{path}: the robustness of {checkpoint} appears again, also in "
                                      f"{model.robustness_file} as {before} (the same file content, evaluated "
                                      f"with the same recorded settings); the later one ({checkpoint} in {path}) "
                                      f"is used")
        model.robustness, model.robustness_file = result, path
    taken = set(names.values())
    for key, checkpoint, path, method, summary, data in stable:
        if key is None:
            key = _unrecorded_key(path, method, robust, paths, names, taken)
        if key not in names:  # a model known by its stability method's name only
            names[key] = key.split(":", 1)[1]
            taken.add(names[key])
        model = model_for(key, names[key])
        if model.stability is not None:  # in the report too (make_report logs it)
            model.warnings.append(f"{path}: the stability of {model.name} appears again (also in "
                                  f"{model.stability_file}, method {model.stability_method}); the later one "
                                  f"({method} in {path}) is used")
        model.stability, model.stability_file, model.stability_method = summary, path, method
        model.stability_info = {"difficulty": data.get("difficulty"),
                                "baseline": data.get("baseline"),
                                "canonical": data.get("canonical_perturbations") or []}
    for kind, variant, others, ambiguous in conflicts:
        models[variant.final].warnings.append(
            _robust_conflict_warning(variant, others, names) if kind == "robustness"
            else _conflict_warning(variant, others, ambiguous, names))
    return list(models.values())


LABEL_SEP = "\0"  # joins a model's key, protocol and N; no path or SHA-256 holds it


def _labels(entry: dict) -> tuple[str, str]:
    """The label protocol and N a result records, as the parts of a split key."""
    return str(entry.get("protocol")), str(entry.get("n"))


def _recorded_protocol(entry: dict) -> bool:
    """Whether a result states its label protocol: not an older JSON's missing one, nor the stability
    reader's ``unknown`` for blocks without ``labels=`` (older or external predictions files)."""
    protocol = entry.get("protocol")
    return protocol is not None and "unknown" not in str(protocol).split(",")


def _split_by_labels(robust: list, stable: list) -> tuple[list, list]:
    """The same model evaluated under several label protocols or N (e.g. soft and hard labels), by
    its robustness results or its stability results, is one row per (protocol, N), keyed ``<model>
    NUL <protocol> NUL <N>`` (:data:`LABEL_SEP`), so that none replaces the other and no row joins
    the robustness of one protocol to the stability of another; its name then carries the protocol
    (see :func:`_display_names`). A stability method that records no protocol (an older JSON, a
    predictions file without metadata) keeps the plain key, as do all results of a model whose
    robustness results record none."""
    variants: dict[str, set] = {}
    unlabelled = set()  # models with a robustness result recording no protocol (older JSONs)
    for key, _checkpoint, _path, result in robust:
        variants.setdefault(key, set()).add(_labels(result))
        if not _recorded_protocol(result):
            unlabelled.add(key)
    for key, _checkpoint, _path, _method, summary, _data in stable:
        if key is not None and key not in unlabelled and _recorded_protocol(summary):
            variants.setdefault(key, set()).add(_labels(summary))

    def split(key: str | None, entry: dict, recorded: bool) -> str | None:
        if key is None or not recorded or len(variants.get(key, ())) < 2:
            return key
        return LABEL_SEP.join((key, *_labels(entry)))

    return ([(split(key, result, True), *rest, result) for key, *rest, result in robust],
            [(split(key, summary, key not in unlabelled and _recorded_protocol(summary)),
              checkpoint, path, method, summary, data)
             for key, checkpoint, path, method, summary, data in stable])


def _per_perturbation(summary: dict, value_of) -> str | None:
    """The value ``value_of(entry)`` every perturbation entry of a stability method gives, the values
    joined by commas where they differ; None where none states one (or states ``unknown``)."""
    values = (value_of(entry) for entry in (summary.get("perturbations") or {}).values() if isinstance(entry, dict))
    return ",".join(sorted({str(value) for value in values if value not in (None, "", "unknown")})) or None


def _meta_values(summary: dict, key: str) -> str | None:
    """What the blocks of a stability method state for metadata ``key`` (``seed``, ``test_set``, ...)."""
    return _per_perturbation(summary, lambda entry: (entry.get("meta") or {}).get(key))


def stability_test_set(summary: dict) -> str | None:
    """The test set a stability method's sequences are of: the ``test_set=`` its blocks state (the
    first hex digits of the digest a robustness result records as ``test_set_sha256``), if they
    state one and the same; else None (an older predictions file: unknown)."""
    value = _meta_values(summary, "test_set")
    return value[:stability.TEST_SET_DIGITS] if value and "," not in value else None


def stability_dataset(summary: dict) -> str | None:
    """``<dataset>.<split>`` of a stability method's perturbation folders (``rafdb.test``), where its
    blocks name one; several are joined by commas; None where none is recorded."""
    return _per_perturbation(summary, lambda entry: entry.get("dataset"))


def _split_by_test_set(robust: list, stable: list) -> list:
    """A stability method measured on another test set than the robustness results of its key (both
    state it: ``test_set=`` against ``test_set_sha256``, compared on the digits the metadata keeps;
    e.g. another folder dataset of the same N) is a row of its own, keyed ``<key> STX P test set
    <dataset> <digest>`` and named so. Of several stability methods of one key on different test
    sets where no robustness result states one, the one on the robustness result's own dataset and
    split (``rafdb.test``) joins it, else the first in digest order."""
    robust_sets: dict[str, set] = {}
    robust_datasets: dict[str, set] = {}
    for key, _checkpoint, _path, result in robust:
        if result.get("test_set_sha256"):
            robust_sets.setdefault(key, set()).add(str(result["test_set_sha256"])[:stability.TEST_SET_DIGITS])
        robust_datasets.setdefault(key, set()).add(f"{result.get('dataset') or 'rafdb'}.{result.get('split') or 'test'}")
    sets = [stability_test_set(summary) if key is not None else None for key, *_rest, summary, _data in stable]
    stable_sets: dict[str, dict[str, str | None]] = {}
    for (key, *_rest, summary, _data), mine in zip(stable, sets):
        if mine is not None:
            stable_sets.setdefault(key, {})[mine] = stability_dataset(summary)
    kept: dict[str, set] = {}
    for key, found in stable_sets.items():
        if robust_sets.get(key):
            kept[key] = robust_sets[key]
            continue
        own = [digest for digest, dataset in found.items() if dataset in robust_datasets.get(key, ())]
        kept[key] = {own[0]} if len(own) == 1 else {min(found)}
    out = []
    for (key, checkpoint, path, method, summary, data), mine in zip(stable, sets):
        if mine is not None and mine not in kept[key]:
            key = f"{key}{SOURCE_SEP}P test set {stability_dataset(summary) or '?'} {mine[:8]}"
        out.append((key, checkpoint, path, method, summary, data))
    return out


SOURCE_SEP = "\2"  # joins a stability row's key and what sets its sequences apart; no path or SHA-256 holds it
OWN_SOURCE = "landmarks"  # RAF-DB-P's own sequences (docs/BENCHMARK.md §3.6)
# What else sets a stability method's sequences apart: the perturbed tree's metadata (the reader keeps
# blocks that differ in one apart as methods of their own, stability.SEQUENCE_KEYS, which names them).
SEQUENCE_META = ("seed", "format", "fallback_pad", "frames")


def _sequences_of(summary: dict) -> tuple:
    """(source, seed, format, fallback pad, frames) of a stability method; None where unstated."""
    source = summary.get("source")
    source = None if source in (None, "", "unknown") else str(source)
    return (source, *(_meta_values(summary, key) for key in SEQUENCE_META))


def _split_by_sequence_source(stable: list) -> list:
    """Stability methods of one model (and protocol, N, test set) measured on different sequences are
    not the same numbers: RAF-DB-P's landmark alignment against ``--source aligned``, or trees of
    another seed, format, fallback pad or frame count (e.g. shards of two trees, which the reader
    names ``a [seed 0]`` and ``a [seed 1]``). Where a model has several, one keeps the key, and with
    it any robustness result of the model: the benchmark's own source (``landmarks``; else one
    that states none; else the first in name order), of those the first in value order; each other
    is a row of its own, keyed ``<key> STX P source ...`` (:data:`SOURCE_SEP`) and named with what
    differs (``[P source aligned]``, ``[P seed 1]``). A value a method does not state is not compared."""
    found: dict[str, list[tuple]] = {}
    for key, *_rest, summary, _data in stable:
        if key is not None:
            found.setdefault(key, []).append(_sequences_of(summary))

    def rank(sequences: tuple) -> tuple:
        source = sequences[0]
        return (0 if source == OWN_SOURCE else 1 if source is None else 2, [str(v) for v in sequences])

    kept = {key: min(values, key=rank) for key, values in found.items()}
    labels = [stability.SEQUENCE_KEYS[key] for key in ("source", *SEQUENCE_META)]
    out = []
    for key, checkpoint, path, method, summary, data in stable:
        if key is not None:
            mine, theirs = _sequences_of(summary), kept[key]
            differing = [index for index in range(len(labels))
                         if mine[index] is not None and theirs[index] is not None and mine[index] != theirs[index]]
            if differing:
                key = f"{key}{SOURCE_SEP}P " + ", ".join(f"{labels[i]} {mine[i]}" for i in differing)
        out.append((key, checkpoint, path, method, summary, data))
    return out


# What of a robustness result's ``source`` sets its corrupted images apart (another tree: another export
# --seed, format, colour, ... or the images made on the fly), in the order a row's name states it.
CORRUPTED_SOURCE_KEYS = ("on_the_fly", "seed", "format", "colour", "motion_backend", "param_set")


def _split_by_corrupted_source(robust: list, stable: list = ()) -> list:
    """Robustness results of one model (and protocol, N) measured on different corrupted images
    (:func:`_source_label`: RAF-DB-C trees exported with another ``--seed``, format, ..., or the
    images made on the fly) are not the same numbers, and never one row: the later no longer replaces
    the earlier. As :func:`_split_by_sequence_source` does for stability, one keeps the key (and with
    it the model's stability results): the images that the most other models of the inputs were
    evaluated on (those it is compared with), else the first in label order; but before both, the
    images of the test set the model's stability results were measured on (``stable``), so that a
    model evaluated on two datasets keeps its C and P results of one dataset in one row. Each other
    is a row of its own, keyed ``<key> STX C ...`` (:data:`SOURCE_SEP`) and named with what differs:
    the dataset and split (``[C dataset fer2013.PublicTest]``), else the test set (``[C test set
    0a1b2c3d]``), else the recorded source (``[C seed 1]``), else its images' label (``[C export
    with manifest 0a1b2c3d4e5f]``)."""
    sources = [_source_label(result) for *_, result in robust]
    labels: dict[str, list[str]] = {}
    users: dict[str, set] = {}
    for (key, *_), label in zip(robust, sources):
        labels.setdefault(key, [])
        if label not in labels[key]:
            labels[key].append(label)
        users.setdefault(label, set()).add(key)
    stable_sets: dict[str, set] = {}  # the test sets of each model's stability results
    for key, *_rest, summary, _data in stable:
        digest = stability_test_set(summary) if key is not None else None
        if digest is not None:
            stable_sets.setdefault(key, set()).add(digest)
    joins: set = set()  # (key, label) whose images are of a test set of the model's stability results
    for (key, *_, result), label in zip(robust, sources):
        if str(result.get("test_set_sha256") or "")[:stability.TEST_SET_DIGITS] in stable_sets.get(key, ()):
            joins.add((key, label))
    kept = {key: min(found, key=lambda label: ((key, label) not in joins, -len(users[label]), label))
            for key, found in labels.items()}
    kept_result = {}
    for (key, *_, result), label in zip(robust, sources):
        if label == kept[key]:
            kept_result.setdefault(key, result)
    out = []
    for (key, checkpoint, path, result), label in zip(robust, sources):
        if label != kept[key]:
            mine, theirs = result.get("source") or {}, kept_result[key].get("source") or {}
            parts = []
            dataset = f"{result.get('dataset') or 'rafdb'}.{result.get('split') or 'test'}"
            digest = str(result.get("test_set_sha256") or "")[:8]
            if dataset != f"{kept_result[key].get('dataset') or 'rafdb'}.{kept_result[key].get('split') or 'test'}":
                parts.append(f"dataset {dataset}")
            elif digest and str(kept_result[key].get("test_set_sha256") or "")[:8] not in ("", digest):
                parts.append(f"test set {digest}")
            for name in CORRUPTED_SOURCE_KEYS:  # after the dataset: two exports of it stay two rows
                if name in mine and name in theirs and mine[name] != theirs[name]:
                    parts.append(("on the fly" if mine[name] else "export") if name == "on_the_fly"
                                 else f"{name.replace('_', ' ')} {mine[name]}")
            key = f"{key}{SOURCE_SEP}C {', '.join(parts) or label}"
        out.append((key, checkpoint, path, result))
    return out


def _unrecorded_key(path: Path, method: str, robust: list, paths: dict, names: dict,
                    taken: set) -> str:
    """The model of a stability method whose JSON records no checkpoint path: the one robustness
    model of that name if there is exactly one, else a model of its own (``name:<name>``, the
    file name added when the name is already shown), so that it never replaces another."""
    if method:
        same = {key for key, *_ in robust if method in (model_name(paths[key]), names[key])}
        plain = {key for key in same if SOURCE_SEP not in key}  # not the rows of other corrupted images
        if len(plain) == 1 and len(same) > 1:
            same = plain
        if len(same) == 1:
            return same.pop()
        if same:
            LOG.warning("%s: stability method %r records no checkpoint path and %d models have its "
                        "name; shown on its own (eval_perturbed_rafdb2.py --json records the path)",
                        path, method, len(same))
        name = method
    else:
        name = f"(external) {path.stem}"
    if name in taken:
        name = f"{name} ({path.name})"
    return f"name:{name}"


# --------------------------------------------------------------------------------------------
# Metrics (docs/BENCHMARK.md §5.2, §5.6, §5.7), recomputed from the files


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _mean_all(values) -> float:
    """The mean, NaN when any value is undefined (an mCE or mFR over a ratio whose baseline
    denominator is <= 0 is undefined, as the evaluations report it), or when there is none."""
    values = [math.nan if v is None else float(v) for v in values]
    return float(np.mean(values)) if values else math.nan


def headline_corruptions(names) -> list[str]:
    """The corruptions of the headline numbers: the 18 of RAF-DB-C among ``names`` when any is
    there (the held-out sets never change the mCE, docs/BENCHMARK.md §2.9), else all of ``names``."""
    import corruptions

    names = list(names)
    return [name for name in names if name in corruptions.CORRUPTION_NAMES] or names


def _param_set(model: Model) -> str | None:
    """The --param-set the ImageNet-C extras of ``model``'s robustness result were rendered with."""
    return ((model.robustness or {}).get("source") or {}).get("param_set")


def _needs_param_set(corruption: str) -> bool:
    import corruptions

    return corruptions.needs_param_set([corruption])


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


# What must match for a baseline's errors to normalise a model's: the same test images and labels.
BASELINE_KEYS = ("dataset", "split", "protocol", "n")


def baseline_mismatch(model: Model, baseline: Model | None) -> str:
    """'' when ``baseline`` can normalise ``model``'s CE (or there is none), else what differs."""
    if baseline is None or baseline.robustness is None or model is baseline:
        return ""
    mine, theirs = model.identity(), baseline.identity()
    differences = [f"{key} {mine[key]} vs {theirs[key]}" for key in BASELINE_KEYS if mine[key] != theirs[key]]
    # The corrupted images: another export seed, colour mode or motion backend renders other images
    # (where both results record the setting; an older file that does not is not compared).
    import robustness

    source, base_source = model.robustness.get("source") or {}, baseline.robustness.get("source") or {}
    keys = robustness.image_keys_that_matter(*({row.get("corruption") for row in result.get("folders") or []}
                                               for result in (model.robustness, baseline.robustness)))
    differences += [f"corrupted images' {key} {source[key]} vs {base_source[key]}"
                    for key in keys
                    if source.get(key) is not None and base_source.get(key) is not None
                    and source[key] != base_source[key]]
    return ", ".join(differences)


def _recorded_baseline_name(info: dict, names: dict) -> str:
    """The name of a baseline recorded in a result file (``info``: its ``baseline`` record): the input
    model of that checkpoint, and of those of its rows (one model evaluated adapted and not, say) the
    one with the recorded test-time settings; else its run folder's name, or its whole path where an
    input model already has that name. ``names``: {checkpoint path: [(runtime, report name)]}."""
    checkpoint = info["checkpoint"]
    rows = names.get(checkpoint) or []
    if "runtime" in info:  # recorded: only a row of those settings is the baseline
        rows = [row for row in rows if row[0] == info["runtime"]]
    if len(rows) == 1:
        return rows[0][1]
    name = shown_name(checkpoint)
    if rows:  # several rows, and the file does not say which
        return f"{name} [settings not recorded: one of {', '.join(row[1] for row in rows)}]"
    taken = {row[1] for entries in names.values() for row in entries}
    return checkpoint if name in taken else name


def corruption_metrics(model: Model, baseline: Model | None, baseline_names: dict | None = None) -> dict:
    """Clean error, mean error per corruption, CE / relative CE against ``baseline``; the mean
    corruption error, mean ECE, mCE and relative mCE over :func:`headline_corruptions`.
    ``baseline_names``: {checkpoint path: [(runtime, report name)]} for a baseline recorded in the
    result file (:func:`_recorded_baseline_name`)."""
    clean, table = model.errors()
    # Only corruptions evaluated at every severity of the run (a partial one has no mean error or CE).
    severities = set((model.robustness.get("summary") or {}).get("severities") or
                     set().union(*(e.keys() for e in table.values())))
    complete = {c: e for c, e in table.items() if e and severities <= set(e)}
    out = {"clean_error": clean, "severities": sorted(severities),
           "mean_error": {c: _mean(e.values()) for c, e in complete.items()},
           "accuracy": {c: {s: 1.0 - v for s, v in sorted(e.items())} for c, e in complete.items()}}
    # Headline numbers over the 18 when they were evaluated, as the evaluation's own summary.
    headline = out["headline"] = headline_corruptions(complete)
    out["mean_corruption_error"] = _mean([v for c in headline for v in complete[c].values()])
    rows = model.robustness["folders"]
    eces = [row.get("ece") for row in rows if row.get("corruption") in headline]
    out["mean_ece"] = _mean(eces) if eces and all(v is not None for v in eces) else math.nan
    out["ce"], out["relative_ce"] = {}, {}
    mismatch = baseline_mismatch(model, baseline)
    if mismatch:  # errors on other images are no denominator (as eval_corrupted_rafdb.py refuses)
        out["mce"] = out["relative_mce"] = math.nan
        out["ce_baseline"] = ""
        out["baseline_mismatch"] = mismatch
    elif baseline is not None and baseline.robustness is not None:
        base_clean, base_table = baseline.errors()
        # both recorded and different (a side that records none is not compared, as in the evaluation)
        other_params = None not in (_param_set(model), _param_set(baseline)) and _param_set(model) != _param_set(baseline)
        for corruption, errors in complete.items():
            base = base_table.get(corruption, {})
            severities = sorted(errors)
            if not all(s in base for s in severities):
                if base:  # evaluated at other severities only (e.g. --severities 1-3): no CE either
                    out.setdefault("baseline_severities", {})[corruption] = sorted(base)
                continue
            if other_params and _needs_param_set(corruption):
                out.setdefault("param_set_apart", []).append(corruption)
                continue  # an ImageNet-C extra rendered with other lengths (§2.9): no ratio
            out["ce"][corruption] = _ratio(sum(errors[s] for s in severities),
                                           sum(base[s] for s in severities))
            out["relative_ce"][corruption] = _ratio(  # sums of differences as the evaluations round them
                relative_sum([errors[s] for s in severities], clean),
                relative_sum([base[s] for s in severities], base_clean))
        normalised = out["mce_over"] = [c for c in headline if c in out["ce"]]
        out["mce"] = _mean_all(out["ce"][c] for c in normalised) if normalised else math.nan
        out["relative_mce"] = _mean_all(out["relative_ce"][c] for c in normalised) if normalised else math.nan
        out["undefined"] = [c for c in normalised if math.isnan(out["relative_ce"][c])
                            or math.isnan(out["ce"][c])]
        out["ce_baseline"] = baseline.name
    else:
        summary = model.robustness.get("summary") or {}
        out["ce"] = dict(summary.get("ce") or {})
        out["relative_ce"] = dict(summary.get("relative_ce") or {})
        out["mce"], out["relative_mce"] = _num(summary.get("mce")), _num(summary.get("relative_mce"))
        info = model.robustness.get("baseline") or {}
        out["ce_baseline"] = _recorded_baseline_name(info, baseline_names or {}) \
            if info.get("checkpoint") and "mce" in summary else ""
    return out


def stability_metrics(model: Model, baseline: Model | None) -> dict:
    """mFP, FP per perturbation, mFR (against ``baseline``), T2D and T3D."""
    summary = model.stability
    perturbations = summary.get("perturbations") or {}
    over = summary.get("mean_over") or list(perturbations)
    fp = {name: _num(entry.get("fp")) for name, entry in perturbations.items()}
    tkd = summary.get("mtkd") or {}
    frames = sorted({entry.get("n_frames") for entry in perturbations.values() if entry.get("n_frames")})
    out = {"fp": fp, "mfp": _mean([fp[name] for name in over if name in fp]),
           "t2d": _num(tkd.get("2")), "t3d": _num(tkd.get("3")),
           "n": summary.get("n"), "source": summary.get("source"),
           "dataset": stability_dataset(summary),  # <dataset>.<split> of its perturbation folders
           "protocol": summary.get("protocol"), "perturbations": over,
           # frames per sequence (an FP over 10 frames of a 30-frame sweep is another number)
           "frames": ",".join(map(str, frames)) or None,
           "difficulty": model.stability_info.get("difficulty")}
    against = baseline is not None and baseline.stability is not None and baseline is not model
    mismatch = stability.baseline_mismatch(summary, baseline.stability) if against else ""
    # flip probabilities at another difficulty (frames d apart, docs/BENCHMARK.md §5.5) are other numbers:
    # eval_perturbed_rafdb2.py --baseline warns, the report withholds the mFR as for other sequences
    # (a file that records none was computed at difficulty 1, as the evaluation reads it)
    levels = (out["difficulty"] or 1, baseline.stability_info.get("difficulty") or 1) if against else (1, 1)
    if mismatch or levels[0] != levels[1]:  # flip probabilities of other sequences are no denominator
        out["mfr"] = math.nan  # (as eval_perturbed_rafdb2.py refuses)
        out["fr_baseline"] = ""
        out["baseline_mismatch"] = "; ".join(filter(None, [mismatch, f"difficulty {levels[0]} vs {levels[1]}"
                                                           if levels[0] != levels[1] else ""]))
        out["sequence_mismatch"] = mismatch
        if levels[0] != levels[1]:
            out["difficulty_mismatch"] = levels
    elif baseline is not None and baseline.stability is not None:
        base = {name: _num(entry.get("fp")) for name, entry in
                (baseline.stability.get("perturbations") or {}).items()}
        rates = {name: _ratio(fp[name], base[name]) for name in over if name in fp and name in base}
        out["mfr_over"] = list(rates)
        out["mfr"] = _mean_all(rates.values()) if rates else math.nan
        out["undefined"] = [name for name, rate in rates.items() if math.isnan(rate)]
        out["fr_baseline"] = baseline.name
    else:
        out["mfr"] = _num(summary.get("mfr"))
        label = model.stability_info.get("baseline") or ""
        out["fr_baseline"] = label if not math.isnan(out["mfr"]) else ""
    return out


# --------------------------------------------------------------------------------------------
# Comparability


ROBUSTNESS_KEYS = ("dataset", "split", "protocol", "n", "source", "format", "ferplus_norm")
STABILITY_KEYS = ("dataset", "protocol", "n", "source", "frames", "difficulty")


def comparability(models: list[Model], metrics: dict) -> tuple[list[str], dict[str, str]]:
    """(warnings, group label per model). Models in one group share every key and corruption set.

    A model without stability results joins the one group of models with both whose robustness
    keys it shares (it is ranked with them by mCE, or the mean corruption error), and, where no such
    model joined that group, a model without robustness results the one group whose stability keys
    it shares (the group is then ranked by mFP): a missing evaluation contradicts nothing."""
    warnings: list[str] = []
    keys_of = {}
    # a stability result that names no dataset (an older JSON, an external header) differs from none:
    # where the others name one and the same, it is taken as that one
    named = {metrics[m.name]["s"]["dataset"] for m in models if m.stability is not None} - {None}
    for model in models:
        if model.stability is not None and metrics[model.name]["s"]["dataset"] is None and len(named) == 1:
            metrics[model.name]["s"]["dataset"] = next(iter(named))
    for model in models:
        robust = stable = None
        if model.robustness is not None:
            ident = model.identity()
            robust = tuple([f"{key}={ident[key]}" for key in ROBUSTNESS_KEYS]
                           + ["corruptions=" + ",".join(sorted(metrics[model.name]["c"]["headline"])),
                              # a mean over severities 1-3 is not one over 1-5 (--severities)
                              "severities=" + ",".join(map(str, metrics[model.name]["c"]["severities"]))])
        if model.stability is not None:
            s = metrics[model.name]["s"]
            stable = tuple(f"P:{key}={s[key]}" for key in STABILITY_KEYS)
        keys_of[model.name] = (robust, stable)
    both = [key for key in dict.fromkeys(keys_of.values()) if None not in key]
    robust_joined = set()
    for name, (robust, stable) in keys_of.items():
        if stable is None and robust is not None:
            targets = [key for key in both if key[0] == robust]
            if len(targets) == 1:
                keys_of[name] = targets[0]
                robust_joined.add(targets[0])
    for name, (robust, stable) in keys_of.items():
        if robust is None and stable is not None:
            targets = [key for key in both if key[1] == stable]
            if len(targets) == 1 and targets[0] not in robust_joined:
                keys_of[name] = targets[0]
    groups: dict[tuple, list[str]] = {}
    for name, key in keys_of.items():
        groups.setdefault(key, []).append(name)
    labels = {}
    for index, (key, names) in enumerate(groups.items()):
        for name in names:
            labels[name] = chr(ord("A") + index) if len(groups) > 1 else "A"
    if len(groups) > 1:
        for aspect, getter in (
                ("robustness", lambda m: m.identity() if m.robustness is not None else None),
                ("stability", lambda m: {k: metrics[m.name]["s"][k] for k in STABILITY_KEYS}
                 if m.stability is not None else None)):
            keys = ROBUSTNESS_KEYS if aspect == "robustness" else STABILITY_KEYS
            for key in keys:
                values = {}
                for model in models:
                    ident = getter(model)
                    if ident is not None:
                        values.setdefault(str(ident[key]), []).append(model.name)
                if len(values) > 1:
                    warnings.append(f"{aspect} results differ in {key}: " + "; ".join(
                        f"{value} ({', '.join(names)})" for value, names in values.items()))
        sets = {}
        for model in models:
            if model.robustness is not None:
                sets.setdefault(",".join(sorted(metrics[model.name]["c"]["mean_error"])),
                                []).append(model.name)
        if len(sets) > 1:
            warnings.append("robustness results cover different corruption sets: " + "; ".join(
                f"{value or '(none)'} ({', '.join(names)})" for value, names in sets.items()))
        levels = {}
        for model in models:
            if model.robustness is not None:
                levels.setdefault(", ".join(map(str, metrics[model.name]["c"]["severities"])),
                                  []).append(model.name)
        if len(levels) > 1:
            warnings.append("robustness results cover different severities: " + "; ".join(
                f"{value or '(none)'} ({', '.join(names)})" for value, names in levels.items()))
        apart = [f"{name} ({'robustness' if stable is None else 'stability'} only)"
                 for name, (robust, stable) in keys_of.items() if (robust is None) != (stable is None)]
        # left in a group of their own kind: no other model could be ranked with them by one measure (said
        # only where some model has both kinds, or some the other kind: results all of one kind are kept
        # apart by another difference, named above)
        if apart and (both or len({text.rsplit("(", 1)[1] for text in apart}) > 1):
            warnings.append("results of one kind only, ranked apart from models with other results: "
                            + ", ".join(apart))
        warnings.append("models are therefore ranked only within their group (A, B, ...), "
                        "never together")
    return warnings, labels


# --------------------------------------------------------------------------------------------
# Building the report


def coverage_notes(models: list[Model], metrics: dict) -> list[str]:
    """A line per model (models with the same note share one) whose mean corruption error (mCE)
    covers fewer than the 18 RAF-DB-C corruptions (its headline corruptions,
    :func:`headline_corruptions`) or whose mFP (mFR) covers fewer than the 10 RAF-DB-P perturbations,
    naming the model and the counts: such means are over other sets than a complete evaluation's
    (report.csv's corruptions / perturbations columns count what was evaluated). Shown with the
    notes under the tables (report.md, report.html, the printed table)."""
    canonical = stability.canonical_perturbations()
    return group_model_notes([(model.name, note) for model in models
                              for note in _model_coverage_notes(model, metrics[model.name], canonical)])


def _model_coverage_notes(model: Model, metrics: dict, canonical) -> list[str]:
    """:func:`coverage_notes` of one model (``metrics``: its entry)."""
    import corruptions
    out = []
    c_metrics, s_metrics = metrics["c"], metrics["s"]
    if c_metrics:
        used = [name for name in c_metrics["headline"] if name in corruptions.CORRUPTION_NAMES]
        if len(used) < len(corruptions.CORRUPTION_NAMES):
            over = f"{len(used)} of the {len(corruptions.CORRUPTION_NAMES)} RAF-DB-C corruptions" + \
                (f" ({', '.join(used)})" if used else
                 f"; it is over {', '.join(c_metrics['headline']) or 'no corruption'} instead")
            out.append(f"{model.name}: the mean corruption error and mCE are over {over}, "
                       f"not comparable with those of a model evaluated on all of them")
        levels = c_metrics.get("severities") or []
        if levels and levels != list(corruptions.SEVERITIES):
            out.append(f"{model.name}: the mean corruption error and mCE are over severities "
                       f"{', '.join(map(str, levels))} only ({len(levels)} of the {len(corruptions.SEVERITIES)}), "
                       f"not comparable with those of a model evaluated at all of them")
        normalised = c_metrics.get("mce_over")
        if normalised is not None and len(normalised) < len(c_metrics["headline"]):
            short = {c: s for c, s in (c_metrics.get("baseline_severities") or {}).items()
                     if c in c_metrics["headline"]}
            missing = [c for c in c_metrics["headline"] if c not in normalised]
            base_levels = ", ".join(map(str, sorted({level for value in short.values() for level in value})))
            mine = ", ".join(map(str, levels))
            if short and len(short) == len(missing):
                # the baseline has every one of them, at fewer severities than the model's errors
                if normalised:
                    head = (f"the mCE and relative mCE are over {len(normalised)} of the "
                            f"{len(c_metrics['headline'])} corruptions of its mean corruption error")
                    what = f"{', '.join(missing)}"
                else:
                    head = "no mCE and relative mCE"
                    what = f"the {len(missing)} corruptions of its mean corruption error"
                note = (f"{model.name}: {head}: the baseline {c_metrics['ce_baseline']} has {what} at severities "
                        f"{base_levels} only, {model.name}'s errors are at {mine} (a CE needs the baseline's "
                        f"errors at every severity of the model's)")
            else:
                note = _baseline_coverage_note(model.name, "mCE and relative mCE", "corruptions",
                                               "mean corruption error", "CE", normalised,
                                               c_metrics["headline"], c_metrics["ce_baseline"])
                if short:
                    note += (f" ({', '.join(short)} only at severities {base_levels} there, {model.name}'s "
                             f"errors at {mine})")
            out.append(note)
    if s_metrics:
        normalised = s_metrics.get("mfr_over")
        if normalised is not None and len(normalised) < len(s_metrics["perturbations"]):
            out.append(_baseline_coverage_note(model.name, "mFR", "perturbations", "mFP", "FR",
                                               normalised, s_metrics["perturbations"], s_metrics["fr_baseline"]))
        used = [name for name in s_metrics["perturbations"] if name in canonical and name in s_metrics["fp"]]
        if len(used) < len(canonical):
            out.append(f"{model.name}: the mFP and mFR are over {len(used)} of the {len(canonical)} RAF-DB-P "
                       f"perturbations" + (f" ({', '.join(used)})" if used else "")
                       + ", not comparable with those of a model evaluated on all of them")
    return out


def group_model_notes(notes: list[tuple[str, str]]) -> list[str]:
    """Notes ``"<model>: <text>"`` with equal texts as one line naming every model (13 models evaluated
    on one subset gave 13 equal lines per side), in the order of their first note."""
    groups: dict[str, list[str]] = {}
    lines: list[tuple[str, str]] = []  # ("note", a note as it is) or ("text", a text shared by models)
    for name, note in notes:
        text = note[len(name) + 2:] if note.startswith(f"{name}: ") else None
        if text is None or name in text:  # (a note that names its model again stays as it is)
            lines.append(("note", note))
            continue
        if text not in groups:
            groups[text] = []
            lines.append(("text", text))
        groups[text].append(name)
    return [line if kind == "note" else f"{', '.join(groups[line])}: {line}" for kind, line in lines]


def _baseline_coverage_note(model: str, what: str, kind: str, mean: str, ratio: str, normalised: list,
                            over: list, baseline: str) -> str:
    """A model's mCE (mFR) against the report's baseline over fewer corruptions (perturbations) than
    its mean corruption error (mFP): the baseline has no result for the others. ``ratio``: CE or FR."""
    if not normalised:
        return (f"{model}: no {what}: the baseline {baseline or ''} gives a {ratio} for none of the {len(over)} "
                f"{kind} of its {mean}").replace("  ", " ")
    missing = [name for name in over if name not in normalised]
    return (f"{model}: the {what} {'are' if ' and ' in what else 'is'} over {len(normalised)} of the {len(over)} "
            f"{kind} of its {mean}; {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no {ratio} "
            f"against the baseline {baseline}")


def build(models: list[Model], baseline: Model | None) -> dict:
    metrics = {}
    # A baseline recorded in a result file is named as the input model of that checkpoint, if any.
    names: dict[str, list[tuple]] = {}
    for m in models:
        if m.robustness is not None:
            names.setdefault((m.robustness.get("checkpoint") or {}).get("checkpoint"), []).append(
                (m.robustness.get("runtime"), m.name))
    for model in models:
        metrics[model.name] = {
            "c": corruption_metrics(model, baseline, names) if model.robustness is not None else None,
            "s": stability_metrics(model, baseline) if model.stability is not None else None}
    warnings, groups = comparability(models, metrics)
    warnings[:0] = [warning for model in models for warning in model.warnings]  # how rows were joined
    for model in models:
        c_metrics, s_metrics = metrics[model.name]["c"] or {}, metrics[model.name]["s"] or {}
        undefined = c_metrics.get("undefined") or []
        # (what, the corruptions or perturbations where it is undefined, the mean not shown)
        cases = [(what, [c for c in undefined if math.isnan(c_metrics[key][c])], mean)
                 for what, key, mean in (("relative CE", "relative_ce", "relative mCE"), ("CE", "ce", "mCE"))]
        cases.append(("flip rate (FR)", s_metrics.get("undefined") or [], "mFR"))
        for what, names, mean in cases:
            if names:
                warnings.append(f"{model.name}: the {what} of {', '.join(names)} is undefined (the baseline "
                                f"{baseline.name}'s denominator is <= 0, docs/BENCHMARK.md §5.2, §5.6), so "
                                f"the {mean} is not shown")
    for model in models:
        mismatch = (metrics[model.name]["c"] or {}).get("baseline_mismatch")
        if mismatch:
            warnings.append(f"{model.name}: no mCE against the baseline {baseline.name}, evaluated on "
                            f"other images or labels ({mismatch})")
        apart = (metrics[model.name]["c"] or {}).get("param_set_apart")
        if apart:
            warnings.append(f"{model.name}: no CE for {', '.join(apart)} against the baseline {baseline.name}: "
                            f"rendered with --param-set {_param_set(model)}, the baseline's with "
                            f"{_param_set(baseline)} (other images, docs/BENCHMARK.md §2.9)")
        mismatch = (metrics[model.name]["s"] or {}).get("sequence_mismatch")
        if mismatch:
            warnings.append(f"{model.name}: no mFR against the baseline {baseline.name}, evaluated on "
                            f"other sequences ({mismatch})")
        levels = (metrics[model.name]["s"] or {}).get("difficulty_mismatch")
        if levels:
            warnings.append(f"{model.name}: no mFR against the baseline {baseline.name}: these flip probabilities "
                            f"were computed at difficulty {levels[0]}, the baseline's at {levels[1]} (frames "
                            f"{levels[0]} and {levels[1]} apart, docs/BENCHMARK.md §5.5)")
    baselines = {metrics[m.name]["c"]["ce_baseline"] for m in models
                 if metrics[m.name]["c"] and not math.isnan(metrics[m.name]["c"]["mce"])}
    if len(baselines) > 1:
        warnings.append("the mCE values were normalised by different baselines (" +
                        ", ".join(sorted(baselines)) + "); name one with --baseline")
    rows = []
    for model in models:
        c, s = metrics[model.name]["c"], metrics[model.name]["s"]
        ident = model.identity() if model.robustness is not None else {}
        rows.append({
            "model": model.name, "group": groups[model.name],
            "checkpoint": ident.get("checkpoint") or "",
            "dataset": ident.get("dataset") or "", "split": ident.get("split") or "",
            "protocol": ident.get("protocol") or (s or {}).get("protocol") or "",
            "n": ident.get("n") if ident.get("n") is not None else "",
            "source": ident.get("source") or "", "format": ident.get("format") or "",
            "clean_error": c["clean_error"] if c else math.nan,
            "mean_corruption_error": c["mean_corruption_error"] if c else math.nan,
            "mce": c["mce"] if c else math.nan,
            "relative_mce": c["relative_mce"] if c else math.nan,
            "ce_baseline": c["ce_baseline"] if c else "",
            "mean_ece": c["mean_ece"] if c else math.nan,
            "stability_n": s["n"] if s else "", "stability_source": s["source"] if s else "",
            "mfp": s["mfp"] if s else math.nan, "mfr": s["mfr"] if s else math.nan,
            "fr_baseline": s["fr_baseline"] if s else "",
            "t2d": s["t2d"] if s else math.nan, "t3d": s["t3d"] if s else math.nan,
            "corruptions": len(c["mean_error"]) if c else 0,
            "severities": ",".join(map(str, c["severities"])) if c else "",
            "perturbations": len(s["perturbations"]) if s else 0})

    # Rank within each comparable group: by mCE when every model of the group has one, else by
    # the mean corruption error, else by mFP.
    for group in sorted({row["group"] for row in rows}):
        members = [row for row in rows if row["group"] == group]
        for key in ("mce", "mean_corruption_error", "mfp"):
            if all(not math.isnan(row[key]) for row in members):
                break
        def value(row):
            return math.inf if math.isnan(row[key]) else row[key]

        members.sort(key=lambda row: (value(row), row["model"]))
        # competition ranking: equal values share a rank (1, 1, 3), listed by name; a name decided none
        for position, row in enumerate(members, start=1):
            tied = position > 1 and value(row) == value(members[position - 2])
            row["rank"], row["ranked_by"] = members[position - 2]["rank"] if tied else position, key
    rows.sort(key=lambda row: (row["group"], row["rank"], row["model"]))
    return {"rows": rows, "metrics": metrics, "warnings": warnings, "coverage": coverage_notes(models, metrics),
            "baseline": baseline.name if baseline is not None else None}


# --------------------------------------------------------------------------------------------
# Figures


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


FIGURE_KEYS = ("heatmap", "severity", "scatter", "fp")  # report_<key>.png: every figure figures() makes


def figures(report: dict) -> dict[str, tuple[str, bytes]]:
    """{key: (caption, PNG bytes)} for the figures the data allows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    rows, metrics = report["rows"], report["metrics"]
    # models with a corruption evaluated at every severity (a partial evaluation, --allow-missing or
    # a severity subset, may have none: its clean error alone has no figure)
    robust = [row["model"] for row in rows if metrics[row["model"]]["c"] and metrics[row["model"]]["c"]["mean_error"]]
    stable = [row["model"] for row in rows if metrics[row["model"]]["s"]]
    if robust:
        corruptions = list(dict.fromkeys(c for name in robust
                                         for c in metrics[name]["c"]["mean_error"]))
        normalised = all(metrics[name]["c"]["ce"] for name in robust)
        values = np.array([[(metrics[name]["c"]["ce"] if normalised else
                             metrics[name]["c"]["mean_error"]).get(c, math.nan) * 100
                            for c in corruptions] for name in robust])
        fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(corruptions) + 3),
                                        max(2.5, 0.45 * len(robust) + 1.5)))
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(corruptions)), corruptions, rotation=60, ha="right")
        ax.set_yticks(range(len(robust)), robust)
        for i in range(len(robust)):
            for j in range(len(corruptions)):
                if not math.isnan(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if values[i, j] < np.nanmean(values) else "black")
        label = "CE (% of baseline)" if normalised else "mean error over severities (%)"
        fig.colorbar(image, ax=ax, label=label)
        ax.set_title(f"{label} per corruption")
        out["heatmap"] = (f"Models x corruptions: {label}.", _png(fig))

        columns = 4
        lines = math.ceil(len(corruptions) / columns)
        fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines),
                                 squeeze=False, sharey=True)
        for index, corruption in enumerate(corruptions):
            ax = axes[index // columns][index % columns]
            for name in robust:
                acc = metrics[name]["c"]["accuracy"].get(corruption)
                if acc:
                    clean_acc = 1 - metrics[name]["c"]["clean_error"]
                    ax.plot([0] + list(acc), [clean_acc * 100] + [v * 100 for v in acc.values()],
                            marker="o", markersize=3, label=name)
            ax.set_title(corruption, fontsize=9)
            ax.set_xticks(range(0, 6))
            ax.grid(alpha=0.3)
        for index in range(len(corruptions), lines * columns):
            axes[index // columns][index % columns].axis("off")
        axes[0][0].set_ylabel("accuracy (%)")
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(robust)),
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(robust) / 4)))
        fig.suptitle("Accuracy against severity (0 = clean)")
        fig.tight_layout()
        out["severity"] = ("Accuracy against severity for every corruption, one line per model "
                           "(severity 0 is the clean set).", _png(fig))

        fig, ax = plt.subplots(figsize=(5.5, 4))
        use_mce = all(not math.isnan(metrics[name]["c"]["mce"]) for name in robust)
        for name in robust:
            c = metrics[name]["c"]
            y = c["mce"] if use_mce else c["mean_corruption_error"]
            ax.scatter(c["clean_error"] * 100, y * 100, s=30)
            ax.annotate(name, (c["clean_error"] * 100, y * 100), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("clean error (%)")
        ax.set_ylabel("mCE (%)" if use_mce else "mean corruption error (%)")
        ax.grid(alpha=0.3)
        ax.set_title("Corruption error against clean error")
        out["scatter"] = ("mCE (or the mean corruption error without a baseline) against clean "
                          "error, one point per model.", _png(fig))
    if stable:
        names = list(dict.fromkeys(p for name in stable for p in metrics[name]["s"]["fp"]))
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names) + 2), 3.8))
        width = 0.8 / len(stable)
        for index, name in enumerate(stable):
            fp = metrics[name]["s"]["fp"]
            ax.bar(np.arange(len(names)) + index * width - 0.4 + width / 2,
                   [fp.get(p, math.nan) * 100 for p in names], width, label=name)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel("flip probability (%)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title("Flip probability per perturbation")
        out["fp"] = ("Flip probability (FP) per perturbation, one bar per model.", _png(fig))
    return out


# --------------------------------------------------------------------------------------------
# Writing


def _fmt(value, percent=True) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        text = f"{value * 100:.2f}" if percent else f"{value:.3f}"
        return cli_common.unsigned_zero(text)
    return str(value)


TABLE = (("group", "group", False), ("rank", "rank", False), ("model", "model", False), ("N", "n", False),
         ("protocol", "protocol", False), ("clean err %", "clean_error", True),
         ("mean corr. err %", "mean_corruption_error", True), ("mCE %", "mce", True),
         ("rel. mCE %", "relative_mce", True), ("mean ECE %", "mean_ece", True),
         ("mFP %", "mfp", True), ("mFR %", "mfr", True), ("T2D", "t2d", False),
         ("T3D", "t3d", False))


def _cell(row, key, percent) -> str:
    value = row[key]
    if key in ("t2d", "t3d"):
        return _fmt(value, percent=False)
    return _fmt(value, percent) if isinstance(value, float) else _fmt(value)


def _notes(report: dict) -> list[str]:
    notes = []
    for what, key, count, missing in (
            ("CE / relative CE", "ce_baseline", "corruptions", "no baseline, so no mCE (name one with --baseline)"),
            ("FR", "fr_baseline", "perturbations", "no baseline, so no mFR (name one with --baseline)")):
        evaluated = [row for row in report["rows"] if row[count]]
        named = [row for row in evaluated if row[key]]
        if not evaluated:
            continue
        if not named:
            notes.append(f"{what}: {missing}.")
            continue
        others = ("the others have none against it: see the warnings and notes" if report.get("baseline")
                  else "the others' files name no baseline")
        part = f" ({len(named)} of the {len(evaluated)} rows; {others})" if len(named) < len(evaluated) else ""
        notes.append(f"{what} normalised to {', '.join(sorted({row[key] for row in named}))}{part}.")
    notes.append("Errors, mCE, mFP and mFR in %; T2D / T3D are mean top-k distances "
                 "(docs/BENCHMARK.md §5.2, §5.5-§5.7).")
    notes += [f"Partial evaluation: {note}." for note in report.get("coverage") or []]
    return notes


def _md_cell(text: str) -> str:
    """A Markdown table cell's text: a '|' (which would end the cell) as '\\|', a '<' (which would start
    an HTML tag, hiding the rest) as '&lt;'; e.g. a model named by a run folder holding them."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def write_markdown(report: dict, figs: dict, path: Path) -> str:
    lines = ["# Robustness comparison", ""]
    for warning in report["warnings"]:
        lines.append(f"> **WARNING:** {warning}")
    if report["warnings"]:
        lines.append("")
    lines.append("| " + " | ".join(title for title, _, _ in TABLE) + " |")
    lines.append("|" + "---|" * len(TABLE))
    for row in report["rows"]:
        lines.append("| " + " | ".join(_md_cell(_cell(row, key, pct)) for _, key, pct in TABLE) + " |")
    lines.append("")
    lines += [f"- {note}" for note in _notes(report)]
    lines.append("")
    for key, (caption, _) in figs.items():
        lines += [f"![{caption}]({path.stem}_{key}.png)", "", f"*{caption}*", ""]
    return "\n".join(lines)


def write_html(report: dict, figs: dict) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Robustness comparison</title><style>",
             "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}th,td{border:1px solid #999;padding:4px 8px;text-align:right}"
             "th{background:#e8eef7}td.t{text-align:left}.warning{background:#ffe2a8;border:2px "
             "solid #d08000;padding:0.6em 1em;margin:0.5em 0;font-weight:bold}"
             "figure{margin:1.5em 0}img{max-width:100%}</style></head><body>",
             "<h1>Robustness comparison</h1>"]
    for warning in report["warnings"]:
        parts.append(f"<div class='warning'>WARNING: {esc(warning)}</div>")
    parts.append("<table id='summary'><thead><tr>" +
                 "".join(f"<th>{esc(title)}</th>" for title, _, _ in TABLE) + "</tr></thead><tbody>")
    for row in report["rows"]:
        parts.append("<tr>" + "".join(
            f"<td class='{'t' if key in ('model', 'protocol', 'group') else 'n'}'>"
            f"{esc(_cell(row, key, pct))}</td>" for _, key, pct in TABLE) + "</tr>")
    parts.append("</tbody></table><ul>" + "".join(f"<li>{esc(n)}</li>" for n in _notes(report))
                 + "</ul>")
    for key, (caption, png) in figs.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure id='fig-{key}'><img alt='{esc(caption)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{esc(caption)}"
                     f"</figcaption></figure>")
    # Records on <body> how many figures the browser really decoded (read by the browser test).
    parts.append("<script>addEventListener('load',function(){var i=Array.prototype.slice.call("
                 "document.images);document.body.setAttribute('data-figures-shown',i.filter("
                 "function(x){return x.complete&&x.naturalWidth>0}).length+'/'+i.length)});"
                 "</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_csv(report: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({key: ("" if isinstance(row[key], float) and math.isnan(row[key])
                               else repr(row[key]) if isinstance(row[key], float) else row[key])
                         for key in CSV_COLUMNS})
    return buffer.getvalue()


def _checkpoint_identity(model: Model) -> str:
    """A robustness model's file (:func:`_file_identity` of its recorded checkpoint)."""
    info = model.robustness.get("checkpoint") or {}
    return _file_identity(info, info.get("checkpoint") or "")


def find_baseline(spec: str | None, models: list[Model]) -> Model | None:
    if spec is None:
        return None
    for model in models:
        if model.name == spec:
            return model
    path = Path(spec)
    if path.is_file():
        files = collect_files([path])
        loaded = load_models(files)
        if len(loaded) != 1:
            raise UserError(f"--baseline {spec}: expected one model in the file, found "
                            f"{len(loaded)} ({', '.join(m.name for m in loaded)}); read the file as an "
                            f"input and name its model's row with --baseline NAME")
        base = loaded[0]
        # The same model among the inputs (the same file content, else the same path, the same test
        # images and no other recorded evaluation settings) goes by its name there; another one never
        # shares an input model's name.
        wanted = robustness_settings(base.robustness) if base.robustness is not None else None
        same = [(model, robustness_settings(model.robustness)) for model in models
                if model.robustness is not None and wanted is not None
                and _checkpoint_identity(model) == _checkpoint_identity(base) and model.identity() == base.identity()]
        same = [(model, settings) for model, settings in same if not settings_differences(settings, wanted)]
        # the row recording exactly the baseline's settings first: a row recording more is another
        # evaluation (see _assign_variants), one recording fewer would not have been kept apart
        exact = [model for model, settings in same if settings == wanted]
        if exact or same:
            return (exact or [model for model, _ in same])[0]
        if any(model.name == base.name for model in models) and base.robustness is not None:
            base.name = (base.robustness.get("checkpoint") or {}).get("checkpoint") or str(path)
        return base
    # a model file's row is named by the file (``lbp_svm.skops``): its name without the extension too
    by_stem = [model for model in models if os.path.splitext(model.name)[1]
               and os.path.splitext(model.name)[0] == spec]
    if len(by_stem) == 1:
        return by_stem[0]
    if by_stem:
        raise UserError(f"--baseline {spec}: names several models of the inputs "
                        f"({', '.join(m.name for m in by_stem)}); give one of these names")
    raise UserError(f"--baseline {spec}: neither a model of the inputs ("
                    f"{', '.join(m.name for m in models)}) nor a result file")


def refuse_useless_baseline(spec: str | None, base: Model | None, models: list[Model]) -> None:
    """UserError when the --baseline model normalises nothing: CE needs robustness results on both
    sides, FR stability results on both sides (a stability JSON as the baseline of robustness-only
    inputs was dropped without a word, and the report then asked for a --baseline)."""
    if base is None:
        return
    # a model of the inputs normalises at least itself (100 %)
    ce = base.robustness is not None and any(m.robustness is not None for m in models)
    fr = base.stability is not None and any(m.stability is not None for m in models)
    if not (ce or fr):
        kinds = [kind for kind, result in (("robustness", base.robustness), ("stability", base.stability))
                 if result is not None]
        held = " and ".join(kinds) + (" results only" if len(kinds) == 1 else " results")
        raise UserError(f"--baseline {spec}: holds {held}, and no model read has {' or '.join(kinds)} "
                        f"results, so it would normalise nothing (CE needs robustness results on both "
                        f"sides, FR stability results)")


def refuse_unmatched_baseline(spec: str | None, base: Model | None, models: list[Model], metrics: dict) -> None:
    """UserError when a --baseline file (not a model of the inputs, which normalises itself at least)
    could normalise no model: every one was evaluated on other images, labels or sequences (each
    had a warning, and the report no normalised number at all)."""
    if base is None or any(model is base for model in models):
        return
    # a side the baseline has no results of shows the name a result file recorded, not a normalisation
    normalised = [model.name for model in models
                  if any(part and held is not None and part.get(key) == base.name and not part.get("baseline_mismatch")
                         for part, key, held in ((metrics[model.name]["c"], "ce_baseline", base.robustness),
                                                 (metrics[model.name]["s"], "fr_baseline", base.stability)))]
    if not normalised:
        differences = "; ".join(dict.fromkeys(
            part["baseline_mismatch"] for model in models for part in (metrics[model.name]["c"],
                                                                        metrics[model.name]["s"])
            if part and part.get("baseline_mismatch")))
        raise UserError(f"--baseline {spec}: normalises none of the models read (evaluated on other images, labels "
                        f"or sequences: {differences or 'no common results'}); give a baseline evaluated as they were")


REPORT_FILES = ("report.md", "report.html", "report.csv")  # written by every report, beside its figures


def _not_a_file(path: Path) -> str | None:
    """Why the report cannot put its file at ``path`` (a folder, a pipe or device there; a link is
    followed, as the atomic writers follow it), or None."""
    target, special = cli_common.write_target(path)
    if os.path.isdir(target):
        return "is a folder"
    if special:
        return "is not a regular file (a pipe or device)"
    return None


def check_report_files(out_dir: Path, names: Sequence[str]) -> None:
    """UserError naming the first of ``names`` in ``out_dir`` that cannot be replaced by a file."""
    for name in names:
        problem = _not_a_file(out_dir / name)
        if problem:
            raise UserError(f"--out {out_dir}: {out_dir / name} {problem}; expected the report's file {name} "
                            f"there (or nothing): remove or rename it; the report in {out_dir} was left as it was")


def _output_error(error: OSError, path: Path) -> cli_common.OutputError:
    if isinstance(error, cli_common.OutputError):
        return error
    return cli_common.OutputError(error.errno, error.strerror or str(error), os.fspath(path))


def write_report_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write every file of ``files`` (name in ``out_dir`` -> content), or none of them.

    Every file is first written to a temporary ``.<name>.<random>.tmp`` beside the file it replaces
    (a link is followed: its target gets the content); only when all are written are they renamed
    into place, one by one. A failure (a folder where a file should be, a full disk, ...) removes
    the temporaries, puts back the files already replaced (from a hard link, or a copy, of each
    earlier file, kept until the end) and raises: the earlier report stays as it was, never its old
    table beside new figures. A file-system failure is an OutputError naming the file."""
    check_report_files(out_dir, list(files))
    targets = {name: Path(cli_common.write_target(out_dir / name)[0]) for name in files}
    temps: dict[str, Path] = {}
    backups: dict[str, Path] = {}  # an earlier file's content, for the rollback
    created: list[str] = []  # replaced or new files, in order
    try:
        for name, data in files.items():
            target = targets[name]
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{cli_common.temp_stem(target.name)}.", suffix=".tmp",
                                           dir=target.parent)
                temps[name] = Path(tmp)
                with os.fdopen(fd, "wb") as stream:
                    os.fchmod(stream.fileno(), cli_common.FILE_MODE)
                    stream.write(data)
            except OSError as error:
                raise _output_error(error, out_dir / name) from error
        for name in files:
            target = targets[name]
            try:
                if os.path.lexists(target):
                    backups[name] = backup = target.with_name(
                        f".{cli_common.temp_stem(target.name)}.{secrets.token_hex(4)}.old")
                    try:
                        os.link(target, backup)
                    except OSError:  # a file system without hard links
                        shutil.copy2(target, backup)
                os.replace(temps[name], target)
            except OSError as error:
                raise _output_error(error, out_dir / name) from error
            del temps[name]
            created.append(name)
    except BaseException:
        for name in reversed(created):  # best effort: the error being raised is what matters
            try:
                if name in backups:
                    os.replace(backups[name], targets[name])
                    del backups[name]
                else:
                    targets[name].unlink()
            except OSError as error:
                kept = f"; it is kept as {backups.pop(name)}" if name in backups else ""
                LOG.warning("%s: could not put the earlier file back (%s)%s", out_dir / name,
                            error.strerror or error, kept)
        for path in [*temps.values(), *backups.values()]:
            path.unlink(missing_ok=True)
        raise
    for backup in backups.values():
        try:
            backup.unlink()
        except OSError as error:
            LOG.warning("%s: could not remove this copy of the earlier file (%s)", backup, error.strerror or error)


def make_report(inputs: Sequence[str | Path], out_dir: str | Path,
                baseline: str | None = None) -> dict:
    """Read the inputs and write report.html, report.md, report.csv and the PNGs, all or none
    (:func:`write_report_files`)."""
    out_dir = cli_common.check_output_path(out_dir, "--out", folder=True)  # before any work
    check_report_files(out_dir, REPORT_FILES)
    files = collect_files(inputs)
    models = load_models(files)
    if not models:
        read = ", ".join(str(path) for path, _, _ in files)
        raise UserError(f"no model found in the inputs: the result file(s) read ({read}) hold none (an empty "
                        f"\"results\" list or \"methods\")")
    base = find_baseline(baseline, models)
    refuse_useless_baseline(baseline, base, models)
    report = build(models, base)
    refuse_unmatched_baseline(baseline, base, models, report["metrics"])
    for warning in report["warnings"]:
        LOG.warning("%s", warning)
    figs = figures(report)
    outputs = {f"report_{key}.png": png for key, (_, png) in figs.items()}
    outputs["report.csv"] = write_csv(report).encode("utf-8")
    outputs["report.md"] = write_markdown(report, figs, out_dir / "report.md").encode("utf-8")
    outputs["report.html"] = write_html(report, figs).encode("utf-8")
    created = not out_dir.exists()
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _output_error(error, out_dir) from error
        write_report_files(out_dir, outputs)
    except BaseException:
        if created:  # the folder made for this report, left empty
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    for key in FIGURE_KEYS:  # a figure of an earlier run into this folder that this report has not
        stale = out_dir / f"report_{key}.png"  # drawn: removed once the new report is in place
        if key not in figs and (stale.is_symlink() or stale.is_file()):
            try:
                stale.unlink()
            except OSError as error:
                LOG.warning("%s: a figure of an earlier report, not of this one; could not remove it (%s)",
                            stale, error.strerror or error)
    report["figures"] = list(figs)
    return report


def parse_args(argv: Sequence[str] | None = None):
    parser = cli_common.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="RESULT",
                        help="robustness / stability JSON files, or folders holding them")
    parser.add_argument("--baseline", default=None, metavar="NAME|FILE",
                        help="normalise CE and FR to this model (a name shown in the report; a row "
                             "named by a model file also without the extension) or "
                             "to a robustness or stability JSON file of one model (CE needs robustness "
                             "results, FR stability results)")
    parser.add_argument("--out", type=Path, default=Path("report"),
                        help="output folder for report.html, report.md, report.csv")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging(args.verbose)
    report = make_report(args.inputs, args.out, args.baseline)
    sys.stdout.write(write_markdown(report, {}, args.out / "report.md") + "\n")
    LOG.info("wrote %s (open it in a browser), report.md and report.csv",
             (args.out / "report.html").resolve())
    return 0


if __name__ == "__main__":
    cli_common.run_main(main)
