"""Stability of a classifier on RAF-DB-P: the predictions file (writer and reader), flip
probability, flip rate and top-k distance tables (docs/BENCHMARK.md §5.4-§5.7, §11.2, §11.6).

``eval_perturbed_rafdb.py`` (writer) and ``eval_perturbed_rafdb2.py`` (reader) parse their command
lines and call this module.

Writer: :func:`perturbation_folders`, :func:`frame_paths`, :func:`metadata_line`,
:func:`format_block`, :func:`predict_folders`. The file holds, per checkpoint and perturbation
folder, a header ``<checkpoint>,<folder>``, a ``#`` metadata comment, one line of comma-separated
class indices per sequence (and optional ``#`` annotation / ``#topk`` lines). It ends with the last
sequence line's newline: no trailing blank lines, so the original reader (which divides by zero on
an empty block at the end of the file) accepts it, and files made by shards (``--shard i/N``, one
share of the perturbation folders each) or by several checkpoints merge by plain concatenation.

Reader: :func:`read_predictions`, :func:`group_blocks`, :func:`compute`, :func:`load_baseline`,
:func:`normalise`, and the outputs :func:`format_tsv`, :func:`format_text`, :func:`format_summary`,
:func:`format_csv`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

import metrics
from cli_common import UserError

LOG = logging.getLogger("fer.stability")

NUM_CLASSES = 7  # docs/BENCHMARK.md §1.2: classes 0..6
FOLDER_PREFIX = "rafdb.test."  # docs/BENCHMARK.md §3.5: perturbed_raf_dataset/rafdb.test.p_<name>
TOPK_PREFIX = "#topk"
DEFAULT_TOPK = (2, 3, 5)  # docs/BENCHMARK.md §5.7: d_2, d_3 headline, d_5 for parity
JSON_FORMAT = "eval_perturbed_rafdb2/1"


def canonical_perturbations() -> list[str]:
    """The 10 RAF-DB-P perturbations in docs/BENCHMARK.md §3.3 order (from the perturbations registry)."""
    import perturbations

    return list(perturbations.PERTURBATIONS)


def registry_perturbations() -> list[str]:
    """The 10 then the ImageNet-P extras (p_zoom_blur, p_snow, p_tilt, p_speckle_noise), in registry
    order (docs/BENCHMARK.md §3.3, §3.7): the order of folders and rows."""
    import perturbations

    return list(perturbations.perturbation_names("all"))


# --------------------------------------------------------------------------------------------
# Writing predictions

FRAME_SUFFIXES = (".jpg", ".png")  # docs/BENCHMARK.md §3.5 JPEG; EXTEND --format png


def _folder_name(name: str) -> str:
    """``p_rotate`` or ``rafdb.test.p_rotate`` -> ``rafdb.test.p_rotate``."""
    return name if name.startswith("rafdb.") else FOLDER_PREFIX + name


def set_folders(perturbed: Path, perturbation_set: str) -> list[str]:
    """``--perturbation-set``: the names of the set whose folders exist under ``perturbed``, in
    registry order (missing ones are warned about; none present is an error)."""
    import perturbations

    if perturbation_set not in perturbations.PERTURBATION_SETS:
        raise UserError(f"--perturbation-set: expected one of {', '.join(perturbations.PERTURBATION_SETS)}, "
                        f"got {perturbation_set!r}")
    names = list(perturbations.perturbation_names(perturbation_set))
    present = [name for name in names if (perturbed / _folder_name(name)).is_dir()]
    missing = [name for name in names if name not in present]
    if not present:
        raise UserError(f"--perturbation-set {perturbation_set}: none of its folders under {perturbed} "
                        f"(expected e.g. {perturbed / _folder_name(names[0])}; export them with "
                        f"rafdb_perturb_dataset.py export --perturbation-set {perturbation_set})")
    if missing:
        LOG.warning("%s: %d folder(s) of --perturbation-set %s missing: %s", perturbed, len(missing),
                    perturbation_set, ", ".join(missing))
    return present


def perturbation_folders(perturbed: Path, selected: Sequence[str] | None = None,
                         perturbation_set: str | None = None) -> list[Path]:
    """The folders to evaluate: ``selected`` (each must exist), those of ``perturbation_set``
    present, or the canonical 10 then the ImageNet-P extras present (registry order), then any
    other folder present (by name)."""
    if not perturbed.is_dir():
        raise UserError(f"--perturbed {perturbed}: no such folder (expected "
                        f"{perturbed}/rafdb.test.p_<name>/test_XXXX_NN.jpg, as written by "
                        f"rafdb_perturb_dataset.py)")
    if not selected and perturbation_set is not None:
        selected = set_folders(perturbed, perturbation_set)
    if selected:
        folders = [perturbed / _folder_name(name) for name in selected]
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"--perturbations: {folder}: no such folder")
        return folders
    canonical = [_folder_name(name) for name in canonical_perturbations()]
    present = {child.name for child in perturbed.iterdir()
               if child.is_dir() and child.name.startswith("rafdb.")}
    folders = [perturbed / name for name in canonical if name in present]
    missing = [name for name in canonical if name not in present]
    if not present:
        raise UserError(f"--perturbed {perturbed}: no rafdb.* folders in it (expected "
                        f"{perturbed}/rafdb.test.p_<name>/test_XXXX_NN.jpg)")
    if missing:
        LOG.warning("%s: %d of the 10 perturbation folders are missing: %s", perturbed, len(missing),
                    ", ".join(missing))
    # the extras in registry order (as --perturbation-set all lists them), other folders by name
    known = [_folder_name(name) for name in registry_perturbations()]
    extras = ([name for name in known if name in present and name not in canonical]
              + sorted(present - set(canonical) - set(known)))
    if extras:
        LOG.info("%s: extra folders (reported separately, never in mFP): %s", perturbed,
                 ", ".join(extras))
    return folders + [perturbed / name for name in extras]


def _missing_frame_message(folder: Path, entries: set, name: str, frame: int, n_frames: int) -> str:
    """The error for a missing frame, with the suffix the sequence's other frames have, and saying
    so when the sequence is simply shorter than the frames asked for (--frames)."""
    prefix = f"{name}_"
    suffix = next((s for s in FRAME_SUFFIXES if any(entry.startswith(prefix) and entry.endswith(s)
                                                     for entry in entries)), FRAME_SUFFIXES[0])
    indices = [entry[len(prefix):-len(suffix)] for entry in entries
               if entry.startswith(prefix) and entry.endswith(suffix)]
    present = 1 + max((int(index) for index in indices if index.isdigit()), default=-1)
    where = folder / f"{name}_{frame:02d}{suffix}"
    if present and frame == present:  # nothing after it: the sequence is shorter than asked for
        return (f"{where}: frame not found: sequence {name} has {present} frames "
                f"(00..{present - 1:02d}), {n_frames} are asked for (--frames {n_frames})")
    return (f"{where}: frame not found (sequence {name} needs frames 00..{n_frames - 1:02d}; "
            f"re-run rafdb_perturb_dataset.py)")


def frame_paths(folder: Path, names: Sequence[str], n_frames: int) -> list[str]:
    """``folder/<name>_NN.jpg`` (or ``.png``) for every name and frame; UserError on the first missing."""
    entries = set(os.listdir(folder))
    paths = []
    for name in names:
        for frame in range(n_frames):
            stem = f"{name}_{frame:02d}"
            for suffix in FRAME_SUFFIXES:
                if stem + suffix in entries:
                    paths.append(str(folder / (stem + suffix)))
                    break
            else:
                raise UserError(_missing_frame_message(folder, entries, name, frame, n_frames))
    return paths


WRITTEN_META_KEYS = ("labels", "N", "source", "frames", "seed", "format", "fallback_pad", "classes", "test_set")
TEST_SET_DIGITS = 16  # test_set=: the first hex digits of the test set's SHA-256 (robustness.test_set_digest)


def _meta_value(value) -> str:
    text = "unknown" if value is None or value == "" else str(value)
    return "_".join(text.split())  # one token: the line is split on whitespace


def metadata_line(protocol: str, n_sequences: int, frames: int, manifest: dict | None,
                  n_classes: int = NUM_CLASSES, test_set: str | None = None) -> str:
    """``# labels=<protocol> N=<n> source=<...> frames=<n> seed=... format=...`` (one line, no newline).

    ``source``, ``seed``, ``format`` and ``fallback_pad`` come from the perturbed tree's manifest
    parameters; ``unknown`` without a manifest (``fallback_pad`` only for ``source=aligned``).
    ``test_set``: the SHA-256 of the dataset's test images and labels, as a robustness result records
    it (``test_set_sha256``), written as its first :data:`TEST_SET_DIGITS` hex digits: report.py
    joins the two results of a model only when they were measured on the same test set.
    """
    params = (manifest or {}).get("params") or {}
    values = {"labels": protocol, "N": n_sequences, "source": params.get("source"), "frames": frames,
              "seed": params.get("seed"), "format": params.get("format")}
    if params.get("source") == "aligned":
        values["fallback_pad"] = params.get("fallback_pad")
    if n_classes != NUM_CLASSES:  # indices 0..K-1 in the evaluated dataset's class order
        values["classes"] = n_classes
    if test_set:
        values["test_set"] = test_set[:TEST_SET_DIGITS]
    return "# " + " ".join(f"{key}={_meta_value(values[key])}" for key in WRITTEN_META_KEYS if key in values)


# Evaluation settings that change a model's predictions (docs/BENCHMARK.md §5.4, §11.5): written by
# eval_perturbed_rafdb.py into each block's metadata, carried by eval_perturbed_rafdb2.py into its
# JSON (``methods[m]["settings"]``) and compared by report.py with the robustness result of the same
# model file (``checkpoint`` of eval_corrupted_rafdb.py's JSON, ``checkpoints.Classifier.describe()``).
# A key a file does not state is unknown and never compared. The crop is none of them: RAF-DB-P frames
# are resized whole whatever ``--crop`` says (§4.3).
SETTING_KEYS = ("preprocessing", "input", "class_order", "restrict", "adapted", "adapt_batch")


def adapted_label(adapt: str | None, prior=None) -> str:
    """``none``, ``bn`` or ``bn_prior8``: test-time adaptation as the metadata writes it."""
    if not adapt or adapt == "none":
        return "none"
    return f"{adapt}" + (f"_prior{float(prior):g}" if prior else "")


def class_token(name) -> str:
    """One class name as the metadata writes it: its canonical emotion name, else lower-cased, with
    whitespace and commas as ``_`` (a class order is one comma-separated token: a folder dataset's
    class "Happy, very" is ``happy__very``, not the two names ``happy`` and ``_very``)."""
    from datasets.classes import canonical_name

    return _meta_value(canonical_name(str(name)) or str(name).strip().lower()).replace(",", "_")


def canonical_setting(key: str, value):
    """A recorded setting value as a writer of today would write it, so that files written by older
    versions compare equal to newer ones: ``class_order`` with each comma-separated name as its
    canonical emotion name (:func:`class_token`, whose spelling table may have grown since),
    ``preprocessing`` an older display label as the setting it describes
    (``checkpoints.preprocessing_setting_from_label``); other values as they are."""
    if value is None:
        return None
    if key == "class_order":
        return ",".join(class_token(name) for name in str(value).split(","))
    if key == "preprocessing":
        import checkpoints

        return checkpoints.preprocessing_setting_from_label(str(value)) or str(value)
    return value


def evaluation_settings(*, preprocessing=None, input_shape=None, class_order=None, restrict=None,
                        adapted=None, adapt_batch=None) -> dict[str, str]:
    """The settings as metadata values (one whitespace-free token each), for the known ones only.

    ``preprocessing``: the classifier's canonical preprocessing setting
    (``checkpoints.preprocessing_setting``: the same token for every route that computes the same
    input; an older display label is read as the setting it describes,
    ``checkpoints.preprocessing_setting_from_label``; ``n/a ...`` for a predictions file: not
    stated); ``input_shape``: (height, width, channels) -> ``HxWxC``; ``class_order``: the model's
    output class names in output order (--class-order), each written as its canonical emotion name;
    ``restrict``: --restrict-to-dataset-classes, to be given only when the model has outputs that are
    no class of the dataset (otherwise it changes nothing); ``adapted``: :func:`adapted_label`;
    ``adapt_batch``: the ``--batch`` of an adapted run (the deeper BatchNorm layers' adapted
    statistics depend on it), given only with an adaptation.
    """
    out = {}
    if preprocessing and not str(preprocessing).startswith("n/a"):
        out["preprocessing"] = _meta_value(canonical_setting("preprocessing", preprocessing))
    if input_shape and all(input_shape):
        out["input"] = "x".join(str(int(value)) for value in input_shape)
    if class_order:
        out["class_order"] = ",".join(class_token(name) for name in class_order)
    if restrict is not None:
        out["restrict"] = "1" if restrict else "0"
    if adapted is not None:
        out["adapted"] = str(adapted)
    if adapt_batch:
        out["adapt_batch"] = str(int(adapt_batch))
    return out


def classifier_settings(classifier) -> dict[str, str]:
    """What the writer can state of a ``checkpoints.Classifier`` (after ``use_classes``) or a
    ``predictions_file.PredictionsClassifier`` (its class order only: the dataset's classes, as its
    rows are written; preprocessing and input size are the other framework's). Test-time adaptation
    is written by the caller (``adapted=``)."""
    image_size, channels = getattr(classifier, "image_size", None), getattr(classifier, "channels", None)
    mapping = getattr(classifier, "mapping", None)
    return evaluation_settings(
        preprocessing=getattr(classifier, "preprocessing_setting", None)
        or getattr(classifier, "preprocessing_label", None),
        input_shape=(*image_size, channels) if image_size and channels else None,
        class_order=getattr(classifier, "output_names", None) or classifier.class_names,
        restrict=bool(classifier.restrict) if mapping is not None and mapping.extra else None)


def settings_text(settings: dict[str, str]) -> str:
    """`` preprocessing=... input=... class_order=...`` (leading space) for a metadata line."""
    return "".join(f" {key}={settings[key]}" for key in SETTING_KEYS if key in settings and key != "adapted")


def block_settings(meta: dict) -> dict[str, str]:
    """The evaluation settings a block's metadata states (:data:`SETTING_KEYS`; none in files written
    before they were recorded). A writer that states them always writes ``class_order=``, and
    ``adapted=`` only for an adapted run: there, no ``adapted`` means ``none``."""
    out = {key: meta[key] for key in SETTING_KEYS if meta.get(key)}
    if "class_order" in out and "adapted" not in out:
        out["adapted"] = "none"
    return out


SETTING_LABELS = {"preprocessing": "preprocessing", "input": "input", "class_order": "class order",
                  "restrict": "restriction to the dataset's classes", "adapted": "adaptation",
                  "adapt_batch": "adaptation batch"}


def setting_text(key: str, value) -> str:
    """``preprocessing z_normalization``; ``class order not recorded``; a list: the values joined."""
    if value is None:
        return f"{SETTING_LABELS[key]} not recorded"
    if isinstance(value, list):
        value = " + ".join(map(str, value))
    if key == "restrict":
        return "restricted to the dataset's classes" if value == "1" else "all outputs" if value == "0" \
            else f"restrict {value}"
    return f"{SETTING_LABELS[key]} {value}"


# The metadata that say which sequences a block holds (the perturbed tree, the test set, the label
# protocol): blocks of one method that differ in one are of other sequences, kept apart as settings are.
SEQUENCE_KEYS = {"labels": "labels", "source": "source", "seed": "seed", "format": "format",
                 "fallback_pad": "fallback pad", "frames": "frames", "test_set": "test set"}


def split_methods_by_settings(blocks: Sequence[Block], source: str = "") -> None:
    """Keep the evaluations of one method under different settings, or of different sequences, apart
    (in place).

    Blocks of one method whose metadata state a setting (:data:`SETTING_KEYS`, compared as
    :func:`canonical_setting`) with different values -- runs with another ``--preprocessing``,
    input size, class order, ... appended to one file -- are different methods, each named
    ``<method> [<the settings that differ>]`` (``a [preprocessing none]``; ``not recorded`` for a
    block of an older writer that states none), with a warning: one mFP never mixes them, and a
    repeated perturbation of another setting never replaces the first (docs/BENCHMARK.md §5.4).
    So are blocks that state different sequences (:data:`SEQUENCE_KEYS`: the perturbed tree's seed,
    source, format, the test set, the label protocol; e.g. shards of two trees concatenated):
    ``a [seed 1]``; a value a block does not state is not compared."""
    by_method: dict[str, list[tuple[Block, dict]]] = {}
    for block in blocks:
        settings = {key: canonical_setting(key, value) for key, value in block_settings(block.meta or {}).items()}
        settings.update({key: str(value) for key, value in (block.meta or {}).items()
                         if key in SEQUENCE_KEYS and value not in (None, "", "unknown")})
        by_method.setdefault(block.method, []).append((block, settings))
    labels = {**SETTING_LABELS, **SEQUENCE_KEYS}
    for method, found in by_method.items():
        differing = [key for key in (*SETTING_KEYS, *SEQUENCE_KEYS)
                     if len({settings[key] for _, settings in found if key in settings}) > 1]
        if not differing:
            continue
        names: dict[str, list[str]] = {}
        for block, settings in found:
            text = ", ".join(setting_text(key, settings.get(key)) if key in SETTING_KEYS
                             else f"{labels[key]} {settings.get(key, 'not recorded')}" for key in differing)
            block.method = f"{method} [{text}]" if method else f"[{text}]"
            names.setdefault(block.method, []).append(block.perturbation)
        LOG.warning("%s: %s was evaluated with different %s; kept apart as %s", source, method or '""',
                    " and ".join(labels[key] for key in differing),
                    "; ".join(f"{name!r} ({', '.join(dict.fromkeys(perturbations))})"
                              for name, perturbations in names.items()))


def warn_method_collisions(checkpoints_: Sequence[str | Path], earlier: Sequence[str] = ()) -> list[str]:
    """Warn when different checkpoints share a method name; return the colliding names.

    ``earlier`` are checkpoint paths already in the output (``--append``).
    """
    by_name: dict[str, list[str]] = {}
    for path in list(earlier) + [str(path) for path in checkpoints_]:
        paths = by_name.setdefault(method_name(path), [])
        if path not in paths:
            paths.append(path)
    colliding = [name for name, paths in by_name.items() if len(paths) > 1]
    for name in colliding:
        names = colliding_method_names(by_name[name])
        LOG.warning("checkpoints %s share the method name %r (their run directory): "
                    "eval_perturbed_rafdb2.py will name them %s", ", ".join(by_name[name]), name,
                    ", ".join(names[path] for path in by_name[name]))
    return colliding


def headers_in(text: str) -> list[str]:
    """The checkpoint fields of the two-field headers of a predictions text."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            fields = line.split(",")
            if len(fields) == 2 and fields[0].strip() not in found:
                found.append(fields[0].strip())
    return found


def format_block(header: str, names: Sequence[str], classes: np.ndarray, rankings: np.ndarray | None,
                 annotate: bool, meta: str | None = None) -> str:
    """One folder's block: header, (metadata comment,) then per sequence its (annotation,) class line
    (and #topk line)."""
    lines = [header] if meta is None else [header, meta]
    for index, name in enumerate(names):
        if annotate:  # a file name may hold a line break: escaped, so the comment stays one line
            lines.append("# " + "".join(char if char.isprintable() or char == " " else repr(char)[1:-1]
                                        for char in name.replace("\\", "\\\\")))
        lines.append(",".join(str(int(value)) for value in classes[index]))
        if rankings is not None:
            lines.append(TOPK_PREFIX + " " + ",".join(":".join(str(int(c)) for c in frame)
                                                for frame in rankings[index]))
    return "\n".join(lines) + "\n"


def shard_folders(folders: Sequence, shard: tuple[int, int] | None) -> list:
    """Shard i/N's share of the perturbation folders: folders i, i+N, ... of the ordered list.

    The shards' outputs concatenated in shard order hold every block once; the reader's results do
    not depend on the block order (docs/BENCHMARK.md §11.6).
    """
    if shard is None:
        return list(folders)
    index, count = shard
    return list(folders)[index::count]


SHARD_KEYS = ("shard", "planned")  # metadata of a --shard run: "shard=i/N planned=K"
_SHARD_VALUE = re.compile(r"([0-9]+)/([0-9]+)")


def shard_text(shard: tuple[int, int], planned: int) -> str:
    """`` shard=i/N planned=K``: a block of shard i of N of a run over K perturbation folders."""
    return f" shard={shard[0]}/{shard[1]} planned={planned}"


def _shard_of(meta: dict | None) -> tuple[int, int] | None:
    """(i, N) of a block's ``shard=i/N`` metadata, or None (none, or not of that form)."""
    found = _SHARD_VALUE.fullmatch((meta or {}).get("shard", ""))
    return (int(found[1]), int(found[2])) if found else None


def _planned_of(meta: dict | None) -> int | None:
    """K of a block's ``planned=K`` metadata (ASCII digits), or None."""
    planned = str((meta or {}).get("planned", ""))
    return int(planned) if re.fullmatch(r"[0-9]+", planned) else None


def check_shards(table: dict[str, dict[str, Block]], source: str = "") -> None:
    """UserError when a method's blocks come from a run split into shards (``shard=i/N planned=K``)
    and fewer than its K perturbation folders are there: a shard's output was left out of the
    concatenation, and the mFP would be the mean over the others only (docs/BENCHMARK.md §11.6)."""
    for method, per_method in table.items():
        runs: dict[tuple[int, int], set[int]] = {}
        for block in per_method.values():
            meta = block.meta or {}
            if "shard" not in meta and "planned" not in meta:
                continue
            shard, planned = _shard_of(meta), _planned_of(meta)
            if shard is None or planned is None or not shard[0] < shard[1]:
                raise UserError(f"{source}:{block.line}: metadata shard={meta.get('shard')!r} "
                                f"planned={meta.get('planned')!r}: expected shard=i/N with 0 <= i < N and "
                                f"planned=<number of perturbation folders>")
            runs.setdefault((shard[1], planned), set()).add(shard[0])
        for (count, planned), seen in runs.items():
            if len(per_method) >= planned:
                continue
            missing = [index for index in range(min(count, planned)) if index not in seen]
            name = method or '""'
            elsewhere = _shards_under_other_methods(table, method, per_method, count, missing)
            raise UserError(
                f"{source}: {name}: {len(per_method)} of the {planned} perturbation folders of a run split "
                f"into {count} shards"
                + (f"; no block of shard(s) {', '.join(f'{i}/{count}' for i in missing)}" if missing else "")
                + (f" under this name: {elsewhere}; every shard of one run needs the same flags"
                   if elsewhere else f": concatenate the files of all {count} shards (cat p0.txt p1.txt ... > "
                                     f"predictions.txt) and read that file"))


def _shards_under_other_methods(table: dict, method: str, per_method: dict, count: int,
                                missing: list[int]) -> str:
    """Where the missing shards of a method's model file are, when the file holds them under another
    method name (the same model_sha256 and shard count: other settings, which :func:`merge_shard_methods`
    does not join), or ""."""
    shas = {(block.meta or {}).get("model_sha256") for block in per_method.values()} - {None}
    found = {}
    for other, blocks in table.items():
        for block in blocks.values():
            shard = _shard_of(block.meta)
            if (other != method and (block.meta or {}).get("model_sha256") in shas and shard is not None
                    and shard[1] == count and shard[0] in missing):
                found.setdefault(other, set()).add(shard[0])
    return "; ".join(f"shard(s) {', '.join(f'{i}/{count}' for i in sorted(indices))} of the same model file "
                     f"are read as {other!r} (evaluated with other settings, or a repeated run)"
                     for other, indices in found.items())


def merge_shard_methods(blocks: Sequence[Block], source: str = "") -> None:
    """Give the shards of one run one method name (in place): shards that name the same model file
    (``model_sha256``) by different paths -- run from other folders or nodes, as an array job does --
    are read under different names, and each would be half a method. Blocks are taken together when
    they share the model file, shard count and folder count, state the same settings and sequences,
    and no single name already holds every shard."""
    groups: dict[tuple, list[Block]] = {}
    for block in blocks:
        meta, shard = block.meta or {}, _shard_of(block.meta)
        if shard is not None and meta.get("model_sha256"):
            groups.setdefault((meta["model_sha256"], shard[1], _planned_of(meta)), []).append(block)
    for (sha, count, planned), members in groups.items():
        methods = list(dict.fromkeys(block.method for block in members))
        if len(methods) < 2:
            continue
        identities = {tuple(sorted({**{key: canonical_setting(key, value) for key, value
                                       in block_settings(block.meta).items()},
                                    **{key: str(value) for key, value in block.meta.items()
                                       if key in SEQUENCE_KEYS}}.items())) for block in members}
        indices = {method: {_shard_of(block.meta)[0] for block in members if block.method == method}
                   for method in methods}
        wanted = set(range(min(count, planned))) if planned is not None else set()
        if len(identities) != 1 or any(wanted <= seen for seen in indices.values()):
            continue
        # one method, named and located as the first shard's path alone would be (the two paths collided
        # into longer names): the name an unsharded run gets, unless another method has it
        checkpoint = next((block.checkpoint for block in members if block.checkpoint), "")
        name = method_name(checkpoint) if checkpoint and not methods[0].endswith("]") else methods[0]
        if any(block.method == name for block in blocks if block not in members):
            name = methods[0]
        for block in members:
            block.method = name
            block.checkpoint = checkpoint or block.checkpoint
        LOG.warning("%s: the shards of one run name the model file (SHA-256 %s) by different paths (%s): read as "
                    "one method, %r (%s)", source, sha[:12], ", ".join(repr(method) for method in methods), name,
                    checkpoint)


def predict_folders(runner, checkpoint: Path, names: Sequence[str],
                    folders: Sequence[tuple[Path, list[str]]], out: TextIO, *, frames: int,
                    topk: int | None = None, annotate: bool = False, meta: str | None = None,
                    probabilities: list | None = None, labels: np.ndarray | None = None,
                    calibration_rows: list | None = None) -> None:
    """Predict every folder's sequences with one checkpoint and write its blocks to ``out``.

    ``runner`` is an ``inference.Runner`` over the checkpoint's classifier; with ``--adapt bn`` it
    re-estimates the BatchNorm statistics on each folder first (one extra pass). Frames are resized
    whole (no 99 px cut, docs/BENCHMARK.md §4.3); each batch holds whole sequences. When
    ``probabilities`` is a list, (folder name, frame ids, rows) is appended to it per folder. When
    ``calibration_rows`` is a list, one row per folder is appended: accuracy, ECE, NLL, Brier,
    recall and confusion over all frames, each frame labelled with its sequence's label row from
    ``labels`` (docs/BENCHMARK.md §11.3).
    """

    classifier = runner.classifier
    text = str(checkpoint)
    if "," in text or "\n" in text:
        raise UserError(f"{checkpoint}: the checkpoint path contains a comma or newline, which the "
                        f"predictions format cannot hold; rename or link it")
    if classifier.crop not in ("exact", "unknown"):  # (a predictions file's crop is unknown: nothing to say)
        LOG.info("%s: crop %s applies to clean/C evaluation only; P frames are resized whole "
                 "(docs/BENCHMARK.md §4.3)", checkpoint, classifier.crop)
    batch = max(1, classifier.batch_size // frames) * frames
    try:
        for folder, paths in folders:
            started = time.perf_counter()

            def dataset(paths=paths):
                if classifier.image_size is None:  # a predictions file: looked up by path, not read
                    return classifier.make_dataset(paths)
                return classifier.make_dataset(paths, batch_size=batch, crop="exact")

            if runner.adapted:
                runner.adapt_to(dataset())
            scores = runner.predict(dataset())
            elapsed = time.perf_counter() - started
            if len(scores) != len(paths):
                raise RuntimeError(f"{folder}: {len(scores)} predictions for {len(paths)} frames")
            scores = scores.reshape(len(names), frames, scores.shape[-1])
            classes = np.argmax(scores, axis=-1)  # ties to the lower index, like the rankings
            rankings = metrics.rankings_from_scores(scores)[..., :topk] if topk else None
            out.write(format_block(f"{checkpoint},{folder}", names, classes, rankings, annotate, meta))
            out.flush()
            if calibration_rows is not None:
                import calibration

                flat = scores.reshape(-1, scores.shape[-1])
                frame_labels = np.repeat(np.asarray(labels), frames, axis=0)
                row = {"checkpoint": str(checkpoint), "folder": Path(folder).name,
                       "n_sequences": len(names), "n_frames": int(len(flat)),
                       "accuracy": float(np.mean(np.argmax(flat, axis=1)
                                                 == calibration.targets_of(frame_labels)))}
                row.update(calibration.folder_metrics(flat, frame_labels,
                                                      getattr(classifier, "scores_are_confidences", True)))
                calibration_rows.append(row)
            if probabilities is not None:
                ids = [f"{name}_{frame:02d}" for name in names for frame in range(frames)]
                probabilities.append((str(checkpoint), Path(folder).name, ids,
                                      scores.reshape(-1, scores.shape[-1]).astype(np.float32)))
            LOG.info("%s on %s: %d sequences x %d frames in %.1f s (%.0f images/s)", checkpoint.name,
                     Path(folder).name, len(names), frames, elapsed, len(paths) / max(elapsed, 1e-9))
    finally:
        if runner.adapted:
            runner.reset()
    # No trailing blank lines (the original writer's two made its own reader divide by zero).


def write_calibration(path: Path, rows: list, *, protocol: str, adapted: bool,
                      checkpoints: dict | None = None) -> None:
    """The P writer's ``--json``: calibration per checkpoint and folder (NaN written as null), and
    each model's identity and adaptation (``Classifier.describe()``: format, SHA-256, input shape,
    crop, preprocessing and its setting, class order) under ``checkpoints``."""
    import cli_common

    data = {"format": "rafdb-p-calibration", "version": 1, "protocol": protocol,
            "adapted": bool(adapted), "checkpoints": nan_to_none(checkpoints or {}),
            "folders": nan_to_none(rows)}
    cli_common.atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def write_probabilities(path: Path, rows: list) -> None:
    """``--save-probabilities FILE.npz`` of the P writer: checkpoint, folder, image (``test_XXXX_NN``)
    and the float32 probability row of every frame (the evaluation order of the robustness file's
    ``--save-probabilities``: the dataset's classes, then the model's extra ones; narrower models'
    rows end in NaN), written atomically."""
    import cli_common

    checkpoint, folder, image, parts = [], [], [], []
    for name, folder_name, ids, scores in rows:
        checkpoint += [name] * len(ids)
        folder += [folder_name] * len(ids)
        image += list(ids)
        parts.append(scores)
    probabilities = cli_common.stack_rows(parts, NUM_CLASSES)
    buffer = io.BytesIO()
    np.savez(buffer, checkpoint=np.array(checkpoint, dtype=str), folder=np.array(folder, dtype=str),
             image=np.array(image, dtype=str), probabilities=probabilities)
    cli_common.atomic_write_bytes(path, buffer.getvalue())




# --------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass
class Block:
    """The sequences of one method on one perturbation, as read from the file."""

    method: str
    perturbation: str
    line: int  # line number of the header
    checkpoint: str = ""  # the header's checkpoint field ("" for a one-field header)
    folder: str = ""  # the header's perturbation folder field, as written
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


def method_name(checkpoint: str | Path) -> str:
    """The name the reader gives a checkpoint: its run directory (docs/BENCHMARK.md §5.4); the file name
    when there is no directory."""
    checkpoint_field = str(checkpoint)
    directory = os.path.dirname(checkpoint_field)
    return os.path.basename(directory) if directory else os.path.basename(checkpoint_field)


def colliding_method_names(checkpoints_: Sequence[str]) -> dict[str, str]:
    """The names the reader gives different checkpoint paths that share a method name: each
    ``<run dir>/<checkpoint file name>``, or, when two of those coincide too (``a/export/model.onnx``,
    ``b/export/model.onnx``), every one its whole checkpoint path."""
    names = {path: (f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
                    if os.path.dirname(path) else path) for path in checkpoints_}
    if len(set(names.values())) < len(names):
        names = {path: path for path in checkpoints_}
    return names


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
        names = colliding_method_names(checkpoints)
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


# The writer's last line: "# end blocks=N", N the blocks of its run that carry ``ends=1`` in their
# metadata. A run stopped early (Ctrl-C, a killed job, a full disk under ``> predictions.txt``)
# leaves its blocks without it, and the reader refuses them instead of scoring a partial file.
END_LINE = re.compile(r"#\s*end\s+blocks=(\d+)\s*")
_END_WORD = re.compile(r"#\s*end(\s|=|$)")  # a line that means to be one, damaged or not


def end_line(blocks: int) -> str:
    return f"# end blocks={blocks}\n"


# What a header's perturbation must be called (p_rotate, p_zoom_blur, ...): a line of one or two
# fields that is not a header is a damaged sequence line, never a new block.
_HEADER_NAME = re.compile(r"p_[A-Za-z0-9_]+")


def perturbation_name(folder_field: str) -> str:
    """The folder name without ``rafdb.test.`` (docs/BENCHMARK.md §5.4)."""
    name = os.path.basename(folder_field.rstrip("/"))
    if name.startswith(FOLDER_PREFIX):
        return name[len(FOLDER_PREFIX):]
    last = name.rsplit(".", 1)[-1]  # <dataset>.<split>.p_<name> (FER and folder exports, docs/DATASETS.md)
    return last if "." in name and last.startswith("p_") else name


def folder_dataset(folder_field: str) -> str:
    """The ``<dataset>.<split>`` part of a perturbation folder's name (``rafdb.test`` of
    ``perturbed_raf_dataset/rafdb.test.p_rotate``, ``fer2013.PublicTest``, a folder dataset's
    ``faces.test``); "" for a folder named otherwise."""
    name = os.path.basename(folder_field.rstrip("/"))
    head, _, last = name.rpartition(".")
    return head if head and last.startswith("p_") else ""


def warn_mixed_datasets(blocks: Sequence[Block], source: str = "") -> list[str]:
    """Warn (and return the datasets) when the blocks come from the perturbation folders of more than
    one dataset or split: one table would then put flip probabilities of different images side by
    side under the same perturbation names."""
    methods: dict[str, list[str]] = {}
    for block in blocks:
        dataset = folder_dataset(block.folder)
        if dataset:
            names = methods.setdefault(dataset, [])
            if (block.method or '""') not in names:
                names.append(block.method or '""')
    if len(methods) > 1:
        LOG.warning("%s: the blocks come from the perturbation folders of %d datasets (%s); their flip "
                    "probabilities are of different images and are not comparable across them", source,
                    len(methods), "; ".join(f"{dataset}: {', '.join(names)}" for dataset, names in methods.items()))
    return list(methods) if len(methods) > 1 else []


def block_classes(block) -> int:
    """How many classes a block's indices may name: its metadata's ``classes=K`` (a model scored in
    a dataset's own classes, e.g. FER+'s 8), else RAF-DB's 7."""
    meta = getattr(block, "meta", None) or {}
    value = meta.get("classes", "")
    return int(value) if value.isdigit() and int(value) > 0 else NUM_CLASSES


def _parse_classes(fields: list[str], where: str, n_classes: int = NUM_CLASSES) -> list[int]:
    values = []
    for position, field in enumerate(fields, 1):
        text = field.strip()
        # ASCII digits only: int() also takes '٣', '０' or '1_0', which no writer writes
        if not (text.isascii() and text.isdigit()):
            raise UserError(f"{where}: field {position} is {text!r}, expected a class index "
                            f"0..{n_classes - 1}")
        value = int(text)
        if not 0 <= value < n_classes:
            raise UserError(f"{where}: field {position} is {value}, outside the class indices "
                            f"0..{n_classes - 1}")
        values.append(value)
    return values


def _parse_topk(text: str, where: str, classes: list[int], n_classes: int = NUM_CLASSES) -> list[list[int]]:
    fields = text.split(",")
    if len(fields) != len(classes):
        raise UserError(f"{where}: #topk line has {len(fields)} frames, its sequence {len(classes)}")
    rankings = []
    length = None
    for frame, field in enumerate(fields):
        ranking = _parse_classes(field.split(":"), f"{where}: frame {frame}", n_classes)
        if length is None:
            length = len(ranking)
        if len(set(ranking)) != len(ranking):
            raise UserError(f"{where}: frame {frame} ranks {field!r}: a class twice (expected distinct "
                            f"classes joined by ':')")
        if len(ranking) != length:
            raise UserError(f"{where}: frame {frame} ranks {len(ranking)} classes ({field!r}), frame 0 "
                            f"{length}: every frame ranks the same number of classes")
        if ranking[0] != classes[frame]:
            raise UserError(f"{where}: frame {frame} ranks class {ranking[0]} first but its sequence "
                            f"line predicts {classes[frame]}")
        rankings.append(ranking)
    return rankings


def read_text_once(path: str | Path) -> str:
    """The whole text of a predictions file, read in one pass: ``-`` is standard input, and a pipe
    (``/dev/stdin``, ``<(...)``) is read once, so nothing reads it twice and finds it shortened."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as stream:
                data = stream.read()
        # A byte-order mark (a file saved by an editor that writes one, or such files concatenated)
        # is no part of a checkpoint path: left in, it made its block another model's.
        return data.decode("utf-8-sig").replace("\n\ufeff", "\n")
    except FileNotFoundError:
        raise UserError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read as text ({error})") from None


def read_predictions(path: str | Path, frames: int | None = None, text: str | None = None) -> list[Block]:
    """Every non-empty block of a predictions file, in file order (UserError "<file>:<line>: ...").
    ``text``: the file's content, already read (a pipe can be read once only)."""
    path = Path(path)
    if text is None:
        text = read_text_once(path)
    blocks: list[Block] = []
    current: Block | None = None
    length: int | None = None  # sequence length of the current block
    length_line = 0
    topk_pending = False  # the previous content line was a sequence line
    open_blocks: list[Block] = []  # blocks since the last end line (see END_LINE)
    pending_meta: tuple[dict, int] | None = None  # metadata before a header: for that header
    lines = text.splitlines()
    # a writer ends every line: a last line without its end is where a copy or a disk stopped
    cut_at = len(lines) if text and not text.endswith(("\n", "\r")) else 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"{path}:{number}" + (" (the last line, with no line end: the file looks cut short)"
                                      if number == cut_at else "")
        if not line:
            continue
        if line.startswith(TOPK_PREFIX):
            if current is None or not topk_pending:
                raise UserError(f"{where}: a #topk line must directly follow a sequence line")
            current.rankings[-1] = _parse_topk(line[len(TOPK_PREFIX):].strip(), where, current.sequences[-1],
                                               block_classes(current))
            topk_pending = False
            continue
        end = END_LINE.fullmatch(line)
        if end:
            closing = [block for block in open_blocks if block.meta.get("ends") == "1"]
            if len(closing) != int(end.group(1)):
                raise UserError(f"{where}: the end line of a run that wrote {end.group(1)} block(s) follows "
                                f"{len(closing)} block(s) written since the previous end line (from line "
                                f"{closing[0].line if closing else number}): the others come from a run that "
                                f"stopped before its end (interrupted?); rerun it, or remove its blocks")
            open_blocks = []
            continue
        if _END_WORD.match(line):
            raise UserError(f"{where}: {line.strip()[:40]!r} is not an end line '# end blocks=N' (N: a count of "
                            f"blocks): a damaged line; the writer ends its run with one")
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
            if not _HEADER_NAME.fullmatch(perturbation_name(fields[-1])):
                raise UserError(f"{where}: {line[:80]!r} is neither a header '<checkpoint>,<perturbation "
                                f"folder>' (the folder ends in p_<name>, e.g. rafdb.test.p_rotate) nor a "
                                f"sequence of one class per frame (a damaged or cut line?)")
            current = Block(method="" if len(fields) == 1 else method_name(fields[0]),
                            perturbation=perturbation_name(fields[-1]), line=number,
                            checkpoint="" if len(fields) == 1 else fields[0], folder=fields[-1])
            if pending_meta is not None:
                current.meta, current.meta_line = pending_meta
                pending_meta = None
            blocks.append(current)
            open_blocks.append(current)
            length = None
            continue
        if current is None:
            raise UserError(f"{where}: a sequence line before any header (expected "
                            f"'<checkpoint>,<perturbation folder>' first)")
        classes = _parse_classes(fields, where, block_classes(current))
        if frames is not None and len(classes) != frames:
            raise UserError(f"{where}: {len(classes)} classes, expected --frames {frames}")
        stated = current.meta.get("frames", "")
        if stated.isdigit() and len(classes) != int(stated):  # the writer's own metadata
            raise UserError(f"{where}: {len(classes)} classes, expected {stated} (frames={stated} in the "
                            f"metadata of line {current.meta_line})")
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
    unclosed = [block for block in open_blocks if block.meta.get("ends") == "1"]
    if unclosed:
        raise UserError(f"{path}:{unclosed[0].line}: the run that wrote the last {len(unclosed)} block(s), "
                        f"from this line on, did not finish (its '# end blocks=N' line is missing: "
                        f"interrupted, or the file was cut); rerun eval_perturbed_rafdb.py for them, or "
                        f"remove them")
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
    split_methods_by_settings(kept, str(path))
    return kept


def group_blocks(blocks: Sequence[Block], source: str = "") -> dict[str, dict[str, Block]]:
    """method -> perturbation -> block; a repeated pair warns and the later block wins (docs/BENCHMARK.md §5.4)."""
    merge_shard_methods(blocks, source)
    table: dict[str, dict[str, Block]] = {}
    for block in blocks:
        per_method = table.setdefault(block.method, {})
        if block.perturbation in per_method:
            LOG.warning("%s:%d: %s / %s already read at line %d; the later block wins", source,
                        block.line, block.method or '""', block.perturbation,
                        per_method[block.perturbation].line)
        per_method[block.perturbation] = block
    check_shards(table, source)
    return table


# --------------------------------------------------------------------------------------------
# Computing


def ordered_perturbations(names, canonical: Sequence[str]) -> list[str]:
    """Canonical perturbations first, in docs/BENCHMARK.md §3.3 order, then the ImageNet-P extras in
    registry order (§3.7), then any others by name: one order whatever the order read (one run's
    predictions or concatenated shards)."""
    names = list(dict.fromkeys(names))
    others = [name for name in names if name not in canonical]
    known = [name for name in registry_perturbations() if name in others]
    return ([name for name in canonical if name in names] + known
            + sorted(name for name in others if name not in known))


def compute(table: dict[str, dict[str, Block]], *, difficulty: int = 1,
            ks: Sequence[int] = DEFAULT_TOPK, canonical: Sequence[str] | None = None) -> dict:
    """Per method and perturbation FP (and T-k-D), and per method mFP (and mean T-k-D) (docs/BENCHMARK.md §5.5-§5.7)."""
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
                "dataset": folder_dataset(block.folder) or None,  # <dataset>.<split> of the folder's name
                # a shard's blocks are those of one run over every folder: the same results
                "meta": {key: value for key, value in block.meta.items() if key not in SHARD_KEYS},
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
            LOG.warning("%s: %d of the %d benchmark perturbations (docs/BENCHMARK.md §3.3) present; mFP "
                        "averages those only", method or '""', len(in_mean), len(canonical))
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
        summary["sets"] = set_summaries(results, ks)
        methods[method] = summary
    return {"methods": methods, "difficulty": difficulty, "topk": [int(k) for k in ks],
            "canonical_perturbations": canonical}


def set_summaries(results: dict, ks: Sequence[int]) -> dict:
    """Per perturbation set present (docs/BENCHMARK.md §3.3, §3.7): its perturbations, mFP and mean
    T-k-D over them. The rafdb set's mFP is the headline mFP; an extra never enters it."""
    import perturbations

    out = {}
    for name in ("rafdb", "imagenet-extra"):
        members = [p for p in perturbations.perturbation_names(name) if p in results]
        if not members:
            continue
        entry = {"perturbations": members,
                 "mfp": metrics.mean_flip_probability({p: results[p]["fp"] for p in members}),
                 "mtkd": {}}
        for k in ks:
            key = str(k)
            if all(key in results[p]["tkd"] for p in members):
                entry["mtkd"][key] = float(np.mean([results[p]["tkd"][key] for p in members]))
        out[name] = entry
    return out


def _joined(values) -> str:
    """The distinct values in first-seen order, comma-joined ("soft", or "soft,unknown")."""
    return ",".join(dict.fromkeys(values))


def load_baseline(spec: str, results: dict, baseline_method: str | None = None) -> tuple[str, dict]:
    """The baseline's per-method results: a method of ``results`` or a JSON file this script wrote."""
    if spec in results["methods"] and not (spec.endswith(".json") and Path(spec).is_file()):
        return f"{spec} (this file)", results["methods"][spec]
    path = Path(spec)
    import model_files

    model_files.refuse_pickle(path)  # never opened: unpickling runs code
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
    import result_files

    problem = result_files.stability_problem(data)
    if problem:
        raise UserError("--baseline " + result_files.damaged(path, problem, "eval_perturbed_rafdb2.py --json"))
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


def baseline_mismatch(summary: dict, baseline: dict) -> str:
    """'' when ``baseline`` (a method's results) can normalise ``summary``'s (docs/BENCHMARK.md §5.6:
    the baseline as in §5.2, the same test sequences), else what differs: the dataset and split of
    the perturbation folders, the source of the sequences, and, per perturbation both have, the
    number of sequences and of frames. The label protocol is not compared: a flip probability reads
    no label, and a protocol that keeps other sequences shows in N. A value either side does not
    record (an older JSON, a predictions file without metadata) is not compared."""
    def known(entry: dict, key: str):
        value = entry.get(key)
        return None if value in (None, "", "unknown") else value

    differences = []
    mine, theirs = summary.get("perturbations") or {}, baseline.get("perturbations") or {}
    common = [name for name in mine if name in theirs]
    for key, label in (("dataset", "dataset"), ("source", "source")):
        a = {known(mine[name], key) for name in common} - {None}
        b = {known(theirs[name], key) for name in common} - {None}
        if a and b and a != b:
            differences.append(f"{label} {','.join(sorted(a))} vs {','.join(sorted(b))}")
    for key, label in (("n_sequences", "N"), ("n_frames", "frames")):
        a = {name: mine[name].get(key) for name in common}
        b = {name: theirs[name].get(key) for name in common}
        differing = [name for name in common if a[name] is not None and b[name] is not None and a[name] != b[name]]
        if differing:
            name = differing[0]
            differences.append(f"{label} {a[name]} vs {b[name]} ({name}"
                               + (f" and {len(differing) - 1} more" if len(differing) > 1 else "") + ")")
    return "; ".join(differences)


def check_baseline(results: dict, baseline_label: str, baseline: dict, mismatch_ok: bool = False) -> None:
    """UserError (a warning with ``mismatch_ok``) naming every method the baseline cannot normalise
    (:func:`baseline_mismatch`): an FR over other sequences or sequence lengths is no ratio."""
    problems = [f"{method or chr(34) * 2}: {mismatch}" for method, summary in results["methods"].items()
                if summary is not baseline and (mismatch := baseline_mismatch(summary, baseline))]
    if not problems:
        return
    message = (f"--baseline {baseline_label}: not the same test sequences as {'; '.join(problems)} (this "
               f"result vs the baseline); docs/BENCHMARK.md §5.6 normalises by a baseline of the same sequences "
               f"and frames")
    if not mismatch_ok:
        raise UserError(message + " (pass --baseline-mismatch-ok to normalise anyway)")
    LOG.warning("%s; normalising anyway (--baseline-mismatch-ok)", message)


def normalise(results: dict, baseline_label: str, baseline: dict) -> None:
    """Add FR, mFR and the normalised T-k-D (mT-k-D) to every method (docs/BENCHMARK.md §5.6, §5.7)."""
    base = baseline["perturbations"]
    results["baseline"] = baseline_label
    for method, summary in results["methods"].items():
        label = method or chr(34) * 2
        for name, entry in summary["perturbations"].items():
            if name in base:  # an undefined ratio's warning names the method and the perturbation
                entry["fr"] = metrics.flip_rate(entry["fp"], base[name]["fp"], f"flip rate of {label} on {name}")
                entry["tkd_rate"] = {
                    k: metrics.topk_distance_rate(value, base[name]["tkd"][k], f"T{k}D rate of {label} on {name}")
                    for k, value in entry["tkd"].items() if k in base[name].get("tkd", {})}
        in_mean = [name for name in summary["mean_over"] if name in base]
        if summary is not baseline and len(in_mean) < len(summary["mean_over"]):
            missing = [name for name in summary["mean_over"] if name not in base]
            LOG.warning("%s: mFR and mT-k-D are over the %d perturbation(s) the baseline %s has, not the %d of its "
                        "mFP (the baseline has no %s); docs/BENCHMARK.md §5.6 averages over the same perturbations",
                        label, len(in_mean), baseline_label, len(summary["mean_over"]), ", ".join(missing))
        summary["mfr_over"] = in_mean
        summary["mfr"] = float(np.mean([summary["perturbations"][n]["fr"] for n in in_mean])) if in_mean else math.nan
        for entry in (summary.get("sets") or {}).values():
            members = [n for n in entry["perturbations"] if n in base]
            entry["mfr"] = (float(np.mean([summary["perturbations"][n]["fr"] for n in members]))
                            if members else math.nan)
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
             f"the P of the {len(results['canonical_perturbations'])} benchmark perturbations present "
             f"(unnormalised; FP as a fraction, not %)" + ("; mFR and mTkD are ratios to the baseline's (1 = "
                                                         "as stable as the baseline), not %" if normalised else ""),
             head, "-" * len(head)]

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
        sets = summary.get("sets") or {}
        if set(sets) - {"rafdb"}:
            for name, entry in sets.items():
                # T-k-D as in the table's columns: the unnormalised mean (mT-k-D names the normalised one)
                tkd = "".join(f"  T{k}D {entry['mtkd'][k]:.4f}" for k in ks if k in entry["mtkd"])
                mfr = f", mFR {number(entry.get('mfr', math.nan), 4, 0)}" if normalised else ""
                lines.append(f"{'':<{width}}  set {name}: mFP {entry['mfp']:.6f}{mfr} over "
                             f"{len(entry['perturbations'])} perturbation(s){tkd}")
        if summary["extras"]:
            extras = ", ".join(f"{name} {summary['perturbations'][name]['fp']:.6f}" for name in summary["extras"])
            lines.append(f"{'':<{width}}  extras (not in mFP): {extras}")
    aligned = [method for method, summary in results["methods"].items()
               if "aligned" in summary.get("source", "").split(",")]
    if aligned:
        lines.append(f"source: aligned (docs/BENCHMARK.md §3.6) for {', '.join(aligned) or chr(34) * 2}: sequences built "
                     f"from the padded official aligned faces, not the landmark-aligned originals")
    if normalised:
        lines.append(f"FR, mFR and mTkD normalised to the baseline {results['baseline']}")
        partial = [f"{method or chr(34) * 2} over {len(summary['mfr_over'])} of its {len(summary['mean_over'])}"
                   for method, summary in results["methods"].items()
                   if len(summary.get("mfr_over", summary["mean_over"])) < len(summary["mean_over"])]
        if partial:
            lines.append(f"mFR and mTkD only over the perturbations the baseline has: {'; '.join(partial)}")
    else:
        lines.append("no --baseline: FR/mFR not computed (T-k-D are unnormalised means)")
    return "\n".join(lines) + "\n"


def nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nan_to_none(item) for item in value]
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
        sets = summary.get("sets") or {}
        for name, entry in sets.items() if set(sets) - {"rafdb"} else ():
            writer.writerow([method, f"mean:{name}", "", n, "", _value(entry["mfp"]), _value(entry.get("mfr"))]
                            + [_value(entry["mtkd"].get(k)) for k in ks] + [""] * len(ks)
                            + [summary["protocol"], summary["source"]])
    return buffer.getvalue()


