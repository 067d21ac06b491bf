"""Structure checks of the result JSON files that other steps read back.

``eval_corrupted_rafdb.py --json`` (robustness: read by ``--merge``, ``--baseline`` and
``report.py``) and ``eval_perturbed_rafdb2.py --json`` (stability: read by its ``--baseline`` and
``report.py``). A file edited by hand or written by another tool may hold the right top-level
marker and still lack a field or hold one of another type; reading it would then fail deep inside
the arithmetic with a traceback. Each function here returns the first problem as a short phrase
naming the field (``results[0].folders[3].error: missing``), or None when the file has every field
the readers use, of the right type and range: the writers never write NaN or infinity (they write
null), errors, accuracies, ECE, flip probabilities are fractions in 0..1, a Brier score is in 0..2,
NLL, top-k distances and flip rates are >= 0, and a (corruption, severity) folder appears once; a
value outside these (an error of 7 for 0.7, a NaN typed in, a row pasted twice) would otherwise be
averaged into the report's numbers, or blamed on the baseline.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _number(value: Any) -> bool:
    """A finite JSON number (an int or float, not a bool); the writers write NaN and infinity as
    null, so neither (nor None) is one."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _optional_number(value: Any) -> bool:
    return value is None or _number(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # a number out of range, NaN
        return repr(float(value))
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string",
                                         bool: "a boolean"}.get(type(value), type(value).__name__)


def _problem(where: str, value: Any, expected: str) -> str:
    return f"{where}: {'missing' if value is _MISSING else _type_name(value)}, expected {expected}"


_MISSING = object()

# (low, high) of the values that are fractions or bounded scores; None: no bound on that side.
FRACTION = (0.0, 1.0)
RANGES = {"error": FRACTION, "accuracy": FRACTION, "ece": FRACTION, "brier": (0.0, 2.0), "nll": (0.0, None),
          "fp": FRACTION, "mfp": FRACTION, "mfr": (0.0, None), "tkd": (0.0, None)}


def _expected(key: str, nullable: bool = False) -> str:
    """'a number in 0..1' (or 'or null') for a field of :data:`RANGES`."""
    low, high = RANGES[key]
    bound = f" in {low:g}..{high:g}" if high is not None else f" >= {low:g}"
    return f"a number{bound}" + (" or null" if nullable else "")


def _in_range(key: str, value: Any, nullable: bool = False) -> bool:
    """Whether ``value`` is a finite number within :data:`RANGES` [key] (or null where allowed)."""
    if value is None and nullable:
        return True
    if not _number(value):
        return False
    low, high = RANGES[key]
    return (low is None or value >= low) and (high is None or value <= high + _ROOM_ABOVE.get(key, 0.0))


# ECE and Brier may pass their bound by a little: a model's probability rows are taken as they are
# when they sum to 1 within the output's resolution (float16, quantised outputs), so a confidence
# can exceed 1 by about that much, and a small all-wrong folder then scores just above 1 (2).
_ROOM_ABOVE = {"ece": 0.05, "brier": 0.1}


def robustness_problem(data: Any) -> str | None:
    """The first structural problem of a robustness results file (already known to be a dict with
    the results format marker), or None."""
    results = data.get("results", _MISSING)
    if not isinstance(results, list):
        return _problem("results", results, "a list of models")
    for index, result in enumerate(results):
        where = f"results[{index}]"
        if not isinstance(result, dict):
            return _problem(where, result, "an object")
        checkpoint = result.get("checkpoint", _MISSING)
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("checkpoint"), str):
            return _problem(f"{where}.checkpoint.checkpoint",
                            checkpoint.get("checkpoint", _MISSING) if isinstance(checkpoint, dict) else checkpoint,
                            "the model file's path (a string)")
        folders = result.get("folders", _MISSING)
        if not isinstance(folders, list):
            return _problem(f"{where}.folders", folders, "a list of evaluated folders")
        seen: dict[tuple, int] = {}  # (corruption, severity) -> its first row
        for number, row in enumerate(folders):
            at = f"{where}.folders[{number}]"
            if not isinstance(row, dict):
                return _problem(at, row, "an object")
            corruption = row.get("corruption", _MISSING)
            if corruption is not None and not isinstance(corruption, str):
                return _problem(f"{at}.corruption", corruption, "a corruption name or null (the clean folder)")
            if corruption is not None and not _integer(row.get("severity", _MISSING)):
                return _problem(f"{at}.severity", row.get("severity", _MISSING), "an integer 1..5")
            for key in ("error", "accuracy"):
                if not _in_range(key, row.get(key, _MISSING)):
                    return _problem(f"{at}.{key}", row.get(key, _MISSING), _expected(key))
            for key in ("ece", "nll", "brier"):
                if not _in_range(key, row.get(key), nullable=True):
                    return _problem(f"{at}.{key}", row.get(key), _expected(key, nullable=True))
            place = (corruption, row.get("severity") if corruption is not None else None)
            if place in seen:
                return (f"{at}: {'the clean folder' if corruption is None else f'{corruption} severity {place[1]}'} "
                        f"again (also {where}.folders[{seen[place]}]), expected each folder once")
            seen[place] = number
        if not result.get("shard") and not any(isinstance(row, dict) and row.get("corruption") is None
                                                          for row in folders):
            return f"{where}.folders: no clean folder (corruption null)"
        for key, check, expected in (("n", _integer, "an integer"), ("protocol", lambda v: isinstance(v, str), "a string"),
                                     ("summary", lambda v: isinstance(v, dict), "an object"),
                                     ("baseline", lambda v: isinstance(v, dict), "an object"),
                                     ("shard", lambda v: isinstance(v, dict), "an object"),
                                     ("clean", lambda v: isinstance(v, dict), "an object")):
            value = result.get(key)
            if value is not None and not check(value):
                return _problem(f"{where}.{key}", value, expected)
        clean = result.get("clean")
        if clean and not _in_range("error", clean.get("error", _MISSING)):
            return _problem(f"{where}.clean.error", clean.get("error", _MISSING), _expected("error"))
        shard = result.get("shard")
        if shard and not (_integer(shard.get("index")) and _integer(shard.get("count"))):
            return f"{where}.shard: expected integer index and count"
        summary = result.get("summary") or {}
        for key in ("ce", "relative_ce"):
            value = summary.get(key)
            if value is not None and not (isinstance(value, dict) and all(map(_optional_number, value.values()))):
                return _problem(f"{where}.summary.{key}", value, "an object of numbers")
        for key in ("mce", "relative_mce"):
            if not _optional_number(summary.get(key)):
                return _problem(f"{where}.summary.{key}", summary.get(key), "a number or null")
        severities = summary.get("severities")
        if severities is not None and not (isinstance(severities, list) and all(map(_integer, severities))):
            return _problem(f"{where}.summary.severities", severities, "a list of integers")
    return None


def stability_problem(data: Any) -> str | None:
    """The first structural problem of a stability results file (a dict with ``methods``), or None."""
    methods = data.get("methods", _MISSING)
    if not isinstance(methods, dict):
        return _problem("methods", methods, "an object of methods")
    for method, summary in methods.items():
        where = f"methods[{method!r}]"
        if not isinstance(summary, dict):
            return _problem(where, summary, "an object")
        perturbations = summary.get("perturbations", _MISSING)
        if not isinstance(perturbations, dict):
            return _problem(f"{where}.perturbations", perturbations, "an object of perturbations")
        for name, entry in perturbations.items():
            at = f"{where}.perturbations[{name!r}]"
            if not isinstance(entry, dict):
                return _problem(at, entry, "an object")
            if not _in_range("fp", entry.get("fp", _MISSING), nullable=True):
                return _problem(f"{at}.fp", entry.get("fp", _MISSING), _expected("fp", nullable=True))
            tkd = entry.get("tkd")
            if tkd is not None and not (isinstance(tkd, dict) and all(map(_optional_number, tkd.values()))):
                return _problem(f"{at}.tkd", tkd, "an object of numbers")
            for k, value in (tkd or {}).items():
                if not _in_range("tkd", value, nullable=True):
                    return _problem(f"{at}.tkd[{k!r}]", value, _expected("tkd", nullable=True))
        mtkd = summary.get("mtkd")
        if mtkd is not None and not (isinstance(mtkd, dict) and all(map(_optional_number, mtkd.values()))):
            return _problem(f"{where}.mtkd", mtkd, "an object of numbers")
        for k, value in (mtkd or {}).items():
            if not _in_range("tkd", value, nullable=True):
                return _problem(f"{where}.mtkd[{k!r}]", value, _expected("tkd", nullable=True))
        over = summary.get("mean_over")
        if over is not None and not (isinstance(over, list) and all(isinstance(name, str) for name in over)):
            return _problem(f"{where}.mean_over", over, "a list of perturbation names")
        for key in ("mfp", "mfr"):
            if not _in_range(key, summary.get(key), nullable=True):
                return _problem(f"{where}.{key}", summary.get(key), _expected(key, nullable=True))
        for key, check, expected in (("n", _integer, "an integer"), ("checkpoint", lambda v: isinstance(v, str), "a string"),
                                     ("protocol", lambda v: isinstance(v, str), "a string")):
            value = summary.get(key)
            if value is not None and not check(value):
                return _problem(f"{where}.{key}", value, expected)
    return None


def damaged(path, problem: str, writer: str) -> str:
    """The refusal message for a result file with a structural problem."""
    return (f"{path}: {problem}; not a result file as {writer} writes it (edited by hand, or written by "
            f"another tool or version?)")
