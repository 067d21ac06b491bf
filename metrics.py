"""Robustness metrics as pure numpy functions: accuracy, CE/mCE, flip probability, top-k distance.

Nothing here reads files, parses arguments or imports TensorFlow. Every formula carries a comment
naming where it comes from: ``docs/BENCHMARK.md`` sections (§5.1-§5.8) and Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019
(ImageNet-C/P; reference code hendrycks/robustness).

Conventions:

- Errors and accuracies are fractions in [0, 1]; CE, relative CE, FR are plain ratios (multiply by
  100 for Hendrycks-style percentages when printing).
- An *error table* is a mapping ``corruption name -> sequence of errors, one per severity``
  (5 for RAF-DB-C); a *clean error* is one float. The baseline has the same shape.
- A ratio whose denominator is not positive is undefined: NaN plus a ``RuntimeWarning`` naming it.
- A *prediction sequence* array is ``(n_sequences, n_frames)`` of class indices.
- A *ranking* is a class order: ``ranking[0]`` is the top class, ``ranking[1]`` the second, ... It
  may be a prefix (the top K classes only); :func:`topk_distance` needs K >= k.

Example::

    import numpy as np, metrics
    metrics.ce([.2, .3, .4, .5, .6], [.25, .35, .45, .55, .65])            # 0.8889
    metrics.flip_probability(np.array([[3] * 5 + [0, 0] + [3] * 23]), noise=False)  # 2/29
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

ErrorTable = Mapping[str, Sequence[float]]


# --------------------------------------------------------------------------------------------
# Helpers


def _ratio(numerator: float, denominator: float, what: str) -> float:
    """numerator / denominator, or NaN plus a RuntimeWarning when the denominator is <= 0 or NaN."""
    numerator, denominator = float(numerator), float(denominator)
    if not denominator > 0:
        warnings.warn(f"{what}: denominator {denominator:g} is not positive; value undefined (NaN)",
                      RuntimeWarning, stacklevel=3)
        return float("nan")
    return numerator / denominator


# Sums of error differences are rounded to this many decimals: errors are fractions k / N, so a sum
# such as (30 + 31 + 32 + 31 + 31) / 36 - 5 * 31 / 36 is exactly 0, but in floating point it came out
# as -1.1e-16 or +1.1e-16, and a relative CE divided by the latter was ~1e15 instead of undefined.
RELATIVE_SUM_DECIMALS = 12


def relative_sum(errors: Sequence[float], clean_error: float) -> float:
    """sum_s (E_s - E_clean), rounded to RELATIVE_SUM_DECIMALS (a zero is 0.0, never -0.0 or 1e-16)."""
    return round(float(np.sum(np.asarray(errors, dtype=np.float64) - float(clean_error))),
                 RELATIVE_SUM_DECIMALS) + 0.0


def _row(values: Sequence[float], what: str) -> np.ndarray:
    """A non-empty 1-D float64 array of errors (one per severity)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D sequence of errors, got shape {array.shape}")
    return array


def _names(table: Mapping[str, object], names: Iterable[str] | None, what: str) -> list[str]:
    """The names to average over: ``names`` (each must be in ``table``) or every key of ``table``."""
    selected = list(table) if names is None else list(names)
    if not selected:
        raise ValueError(f"{what}: nothing to average over (no names)")
    missing = [name for name in selected if name not in table]
    if missing:
        raise ValueError(f"{what}: missing entries for {', '.join(missing)}")
    return selected


def _mean_ratio(table: Mapping[str, float], base_table: Mapping[str, float], names: Iterable[str] | None,
                what: str, ratio: str) -> float:
    """The mean over ``names`` of table[name] / base_table[name]; NaN if any ratio is undefined."""
    selected = _names(table, names, what)
    _names(base_table, selected, f"{what} baseline")
    return float(np.mean([_ratio(table[name], base_table[name], f"{ratio} {name}") for name in selected]))


def _pair_rows(model: Sequence[float], baseline: Sequence[float], what: str):
    """Model and baseline error rows as arrays of equal length."""
    model_row, base_row = _row(model, what), _row(baseline, f"{what} (baseline)")
    if model_row.shape != base_row.shape:
        raise ValueError(f"{what}: model has {model_row.size} severities, baseline {base_row.size}")
    return model_row, base_row


# --------------------------------------------------------------------------------------------
# Accuracy and error per folder (BENCHMARK.md §5.1)


def accuracy(pred_classes: Sequence[int], targets: Sequence[int]) -> float:
    """Fraction of predictions equal to their targets (BENCHMARK.md §5.1: Acc = mean 1[argmax f = argmax y])."""
    pred, true = np.asarray(pred_classes), np.asarray(targets)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"accuracy: predictions {pred.shape} and targets {true.shape} differ or are not 1-D")
    if pred.size == 0:
        raise ValueError("accuracy: no predictions")
    return float(np.mean(pred == true))


def error_rate(pred_classes: Sequence[int], targets: Sequence[int]) -> float:
    """1 - accuracy (BENCHMARK.md §5.1: E = 1 - Acc)."""
    return 1.0 - accuracy(pred_classes, targets)


# --------------------------------------------------------------------------------------------
# Corruption metrics on error tables (BENCHMARK.md §5.2; Hendrycks & Dietterich 2019, §4 "ImageNet-C")


def ce(model_errors: Sequence[float], baseline_errors: Sequence[float]) -> float:
    """Corruption error of one corruption: sum_s E_s / sum_s E_s^base (BENCHMARK.md §5.2; H&D 2019 CE_c^f)."""
    model_row, base_row = _pair_rows(model_errors, baseline_errors, "CE")
    return _ratio(model_row.sum(), base_row.sum(), "CE")


def relative_ce(model_errors: Sequence[float], model_clean: float,
                baseline_errors: Sequence[float], baseline_clean: float) -> float:
    """Relative CE: sum_s (E_s - E_clean) / sum_s (E_s^base - E_clean^base) (BENCHMARK.md §5.2; H&D 2019)."""
    model_row, base_row = _pair_rows(model_errors, baseline_errors, "relative CE")
    return _ratio(relative_sum(model_row, model_clean), relative_sum(base_row, baseline_clean), "relative CE")


def corruption_errors(model_table: ErrorTable, baseline_table: ErrorTable,
                      names: Iterable[str] | None = None) -> dict[str, float]:
    """CE per corruption, in the order of ``names`` (default: the model table's keys) (BENCHMARK.md §5.2)."""
    selected = _names(model_table, names, "CE")
    _names(baseline_table, selected, "CE baseline")
    return {name: _ratio_ce(name, model_table[name], baseline_table[name]) for name in selected}


def _ratio_ce(name: str, model: Sequence[float], baseline: Sequence[float]) -> float:
    model_row, base_row = _pair_rows(model, baseline, f"CE {name}")
    return _ratio(model_row.sum(), base_row.sum(), f"CE {name}")


def relative_corruption_errors(model_table: ErrorTable, model_clean: float,
                               baseline_table: ErrorTable, baseline_clean: float,
                               names: Iterable[str] | None = None) -> dict[str, float]:
    """Relative CE per corruption (BENCHMARK.md §5.2), NaN (with a warning) where the baseline's is undefined."""
    selected = _names(model_table, names, "relative CE")
    _names(baseline_table, selected, "relative CE baseline")
    result = {}
    for name in selected:
        model_row, base_row = _pair_rows(model_table[name], baseline_table[name], f"relative CE {name}")
        result[name] = _ratio(relative_sum(model_row, model_clean), relative_sum(base_row, baseline_clean),
                              f"relative CE {name}")
    return result


def mce(model_table: ErrorTable, baseline_table: ErrorTable, names: Iterable[str] | None = None) -> float:
    """Mean CE over the corruptions ``names`` (BENCHMARK.md §5.2: mean of CE_c over the 18; H&D 2019 mCE)."""
    return float(np.mean(list(corruption_errors(model_table, baseline_table, names).values())))


def relative_mce(model_table: ErrorTable, model_clean: float, baseline_table: ErrorTable,
                 baseline_clean: float, names: Iterable[str] | None = None) -> float:
    """Mean relative CE over ``names`` (BENCHMARK.md §5.2; H&D 2019 "Relative mCE"); NaN if any is NaN."""
    values = relative_corruption_errors(model_table, model_clean, baseline_table, baseline_clean, names)
    return float(np.mean(list(values.values())))


def mean_errors(table: ErrorTable, names: Iterable[str] | None = None) -> dict[str, float]:
    """Per-corruption mean error over severities, (1/5) sum_s E_{s,c} (BENCHMARK.md §5.2, unnormalised)."""
    return {name: float(_row(table[name], name).mean()) for name in _names(table, names, "mean error")}


def overall_mean_error(table: ErrorTable, names: Iterable[str] | None = None) -> float:
    """Mean over every corruption and severity, (1/90) sum_{c,s} E_{s,c} (BENCHMARK.md §5.2, unnormalised)."""
    rows = [_row(table[name], name) for name in _names(table, names, "overall mean error")]
    return float(np.concatenate(rows).mean())


def mean_corruption_accuracy(table: ErrorTable, names: Iterable[str] | None = None) -> float:
    """1 - overall mean error (BENCHMARK.md §5.2, unnormalised)."""
    return 1.0 - overall_mean_error(table, names)


def unnormalised_relative_error(table: ErrorTable, clean_error: float,
                                names: Iterable[str] | None = None) -> float:
    """mean_c (1/5) sum_s (E_{s,c} - E_clean) (BENCHMARK.md §5.2, unnormalised relative error)."""
    selected = _names(table, names, "unnormalised relative error")
    return float(np.mean([(_row(table[name], name) - float(clean_error)).mean() for name in selected]))


def corruption_summary(table: ErrorTable, clean_error: float, baseline_table: ErrorTable | None = None,
                       baseline_clean: float | None = None,
                       names: Iterable[str] | None = None) -> dict[str, object]:
    """Every BENCHMARK.md §5.2 number for one model: unnormalised always, CE/mCE/relative when a baseline is given.

    ``names`` selects the corruptions that enter the means (the 18 of RAF-DB-C; extras are still
    reported per corruption). Keys: clean_error, mean_error (per corruption), overall_mean_error,
    mean_corruption_accuracy, unnormalised_relative_error, and with a baseline: ce, relative_ce
    (per corruption, over every corruption present in both tables), mce, relative_mce.
    """
    selected = _names(table, names, "corruption summary")
    summary: dict[str, object] = {
        "clean_error": float(clean_error),
        "mean_error": mean_errors(table),
        "overall_mean_error": overall_mean_error(table, selected),
        "mean_corruption_accuracy": mean_corruption_accuracy(table, selected),
        "unnormalised_relative_error": unnormalised_relative_error(table, clean_error, selected),
    }
    if baseline_table is not None:
        if baseline_clean is None:
            raise ValueError("corruption summary: a baseline table needs the baseline's clean error")
        common = [name for name in table if name in baseline_table]
        summary["ce"] = corruption_errors(table, baseline_table, common)
        summary["relative_ce"] = relative_corruption_errors(table, clean_error, baseline_table,
                                                            baseline_clean, common)
        _names(baseline_table, selected, "corruption summary baseline")
        summary["mce"] = float(np.mean([summary["ce"][name] for name in selected]))
        summary["relative_mce"] = float(np.mean([summary["relative_ce"][name] for name in selected]))
    return summary


# --------------------------------------------------------------------------------------------
# Stability on perturbation sequences (BENCHMARK.md §5.5-§5.7; Hendrycks & Dietterich 2019, §4 "ImageNet-P")


def is_noise_perturbation(name: str) -> bool:
    """True for noise sequences, compared with the clean frame 0 (BENCHMARK.md §5.5: the name contains "noise")."""
    return "noise" in name


def frame_pairs(n_frames: int, noise: bool, difficulty: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices (a, b) of the compared frames: noise (0, j) for j >= 1; otherwise (j, j + d) (BENCHMARK.md §5.5).

    Comparing consecutive elements of the d interleaved sub-sequences p_r, p_{r+d}, ... and pooling
    the counts is the same as comparing every pair (j, j + d): N - d pairs. Noise ignores d.
    """
    if n_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {n_frames}")
    if noise:
        # BENCHMARK.md §5.5 / ImageNet-P test.py: every frame against the clean frame 0; N - 1 pairs.
        later = np.arange(1, n_frames)
        return np.zeros_like(later), later
    if not 1 <= difficulty < n_frames:
        raise ValueError(f"difficulty must be in 1..{n_frames - 1} for {n_frames} frames, got {difficulty}")
    first = np.arange(0, n_frames - difficulty)
    return first, first + difficulty


def _sequences(sequences: np.ndarray) -> np.ndarray:
    array = np.asarray(sequences)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"expected predictions of shape (n_sequences >= 1, n_frames), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected integer class indices, got dtype {array.dtype}")
    return array


def sequence_flip_probabilities(sequences: np.ndarray, noise: bool, difficulty: int = 1) -> np.ndarray:
    """FP of each sequence: the fraction of compared frame pairs whose classes differ (BENCHMARK.md §5.5)."""
    array = _sequences(sequences)
    first, second = frame_pairs(array.shape[1], noise, difficulty)
    # BENCHMARK.md §5.5: FP_seq = (1/(N-1)) sum_j 1[p_j != p_ref]; difficulty d: flips / (N - d).
    return np.mean(array[:, first] != array[:, second], axis=1)


def flip_probability(sequences: np.ndarray, noise: bool, difficulty: int = 1) -> float:
    """FP_p: the mean of the sequences' FP, equal weight per sequence (BENCHMARK.md §5.5; ImageNet-P flip_prob)."""
    return float(np.mean(sequence_flip_probabilities(sequences, noise, difficulty)))


def mean_flip_probability(fp_by_perturbation: Mapping[str, float], names: Iterable[str] | None = None) -> float:
    """mFP: the mean of FP_p over ``names`` (the 10 of RAF-DB-P; extras excluded) (BENCHMARK.md §5.6)."""
    selected = _names(fp_by_perturbation, names, "mFP")
    return float(np.mean([float(fp_by_perturbation[name]) for name in selected]))


def flip_rate(fp: float, fp_base: float, what: str = "flip rate") -> float:
    """FR_p = FP_p / FP_p^base; NaN plus a warning when FP^base is 0 (BENCHMARK.md §5.6; H&D 2019 FR).
    ``what`` names the value in the warning (e.g. the method and the perturbation)."""
    return _ratio(fp, fp_base, what)


def mean_flip_rate(fp_by_perturbation: Mapping[str, float], base_by_perturbation: Mapping[str, float],
                   names: Iterable[str] | None = None) -> float:
    """mFR: the mean of FR_p over ``names`` (BENCHMARK.md §5.6; H&D 2019 mFR); NaN if any FR is undefined."""
    return _mean_ratio(fp_by_perturbation, base_by_perturbation, names, "mFR", "flip rate")


def rankings_from_scores(scores: np.ndarray) -> np.ndarray:
    """Class order by descending score, ties to the lower class index (BENCHMARK.md §5.7 ordinal ranking of -score)."""
    array = np.asarray(scores)
    if array.ndim < 1 or array.shape[-1] < 2:
        raise ValueError(f"expected scores of shape (..., n_classes >= 2), got {array.shape}")
    # A stable sort of -score keeps equal scores in class-index order.
    return np.argsort(-array, axis=-1, kind="stable")


def topk_distance(rank_a: np.ndarray, rank_b: np.ndarray, k: int) -> np.ndarray | int:
    """d_k(a, b) = sum_{i=1..k} |(i-1) - min(sigma(i)-1, k)| (BENCHMARK.md §5.7; H&D 2019 top-5 distance).

    ``rank_a`` and ``rank_b`` are class orders (top class first) of the same shape (..., K), K >= k,
    possibly truncated to the top K: a class of a's top k absent from b's prefix has rank >= K >= k,
    which ``min(., k)`` treats exactly as its true rank. Broadcasts over leading axes.
    """
    a, b = np.asarray(rank_a), np.asarray(rank_b)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"top-k distance: rankings of shapes {a.shape} and {b.shape} differ")
    if not 1 <= k <= a.shape[-1]:
        raise ValueError(f"top-k distance: k must be in 1..{a.shape[-1]} (the ranking length), got {k}")
    top = a[..., :k]  # c_1..c_k
    # sigma(i) - 1 = position of c_i in b; absent from b's prefix means >= K >= k.
    matches = b[..., None, :] == top[..., :, None]  # (..., k, K)
    position = np.where(matches.any(axis=-1), matches.argmax(axis=-1), k)
    distance = np.abs(np.arange(k) - np.minimum(position, k)).sum(axis=-1)
    return int(distance) if np.ndim(distance) == 0 else distance


def _rankings(rankings: np.ndarray, k: int) -> np.ndarray:
    array = np.asarray(rankings)
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"expected rankings of shape (n_sequences >= 1, n_frames, K), got {array.shape}")
    if array.shape[2] < k:
        raise ValueError(f"top-{k} distance needs rankings of at least {k} classes, got {array.shape[2]}")
    return array


def sequence_topk_distances(rankings: np.ndarray, k: int, noise: bool, difficulty: int = 1) -> np.ndarray:
    """T-k-D of each sequence: the mean d_k over frame pairs chosen as for FP (BENCHMARK.md §5.7)."""
    array = _rankings(rankings, k)
    first, second = frame_pairs(array.shape[1], noise, difficulty)
    return topk_distance(array[:, first], array[:, second], k).mean(axis=1)


def topk_distance_perturbation(rankings: np.ndarray, k: int, noise: bool, difficulty: int = 1) -> float:
    """T-k-D_p: the mean of the sequences' T-k-D, equal weight per sequence (BENCHMARK.md §5.7)."""
    return float(np.mean(sequence_topk_distances(rankings, k, noise, difficulty)))


def topk_distance_rate(tkd: float, tkd_base: float, what: str = "top-k distance rate") -> float:
    """T-k-D_p / T-k-D_p^base; NaN plus a warning when the baseline's is 0 (BENCHMARK.md §5.7)."""
    return _ratio(tkd, tkd_base, what)


def mean_topk_distance_rate(tkd_by_perturbation: Mapping[str, float], base_by_perturbation: Mapping[str, float],
                            names: Iterable[str] | None = None) -> float:
    """mT-k-D = mean_p T-k-D_p^f / T-k-D_p^base over ``names`` (BENCHMARK.md §5.7; H&D 2019 mT5D)."""
    return _mean_ratio(tkd_by_perturbation, base_by_perturbation, names, "mT-k-D", "top-k distance rate")
