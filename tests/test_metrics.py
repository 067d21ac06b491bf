"""metrics.py against numbers worked out by hand from BENCHMARK.md §5.2 and §5.8."""

import warnings

import numpy as np
import pytest

import metrics

# BENCHMARK.md §5.2 worked example.
MODEL = [0.20, 0.30, 0.40, 0.50, 0.60]  # sum 2.0
MODEL_CLEAN = 0.10
BASE = [0.25, 0.35, 0.45, 0.55, 0.65]  # sum 2.25
BASE_CLEAN = 0.15

# BENCHMARK.md §5.8: 3,3,3,3,3,0,0,3,...,3 (frames 5 and 6 are class 0).
WORKED = [3] * 5 + [0, 0] + [3] * 23


def test_accuracy_and_error():
    assert metrics.accuracy([0, 1, 2, 3], [0, 1, 0, 0]) == pytest.approx(0.5)
    assert metrics.error_rate([0, 1, 2, 3], [0, 1, 2, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        metrics.accuracy([], [])


def test_ce_worked_example():
    assert metrics.ce(MODEL, BASE) == pytest.approx(2.0 / 2.25)
    assert metrics.ce(MODEL, BASE) == pytest.approx(0.8889, abs=5e-5)


def test_relative_ce_worked_example():
    # (2.0 - 5 * 0.10) / (2.25 - 5 * 0.15) = 1.5 / 1.5
    assert metrics.relative_ce(MODEL, MODEL_CLEAN, BASE, BASE_CLEAN) == pytest.approx(1.0)


def test_relative_ce_zero_denominator_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="relative CE"):
        value = metrics.relative_ce(MODEL, MODEL_CLEAN, [0.15] * 5, BASE_CLEAN)
    assert np.isnan(value)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(metrics.relative_ce(MODEL, MODEL_CLEAN, [0.1] * 5, BASE_CLEAN))  # negative
    with pytest.warns(RuntimeWarning):
        assert np.isnan(metrics.ce(MODEL, [0.0] * 5))


def test_a_relative_sum_that_is_exactly_zero_stays_zero():
    """Errors 21, 22, 22, 20, 15 of 36 images against a clean 20 of 36: sum (E_s - E_clean) = 0 by
    hand, but in floating point it was +5.6e-17, so a relative CE with this baseline came out ~1e16
    instead of undefined, and a model's own sum printed as -0.00 for the mirror case."""
    row, clean = [k / 36 for k in (21, 22, 22, 20, 15)], 20 / 36
    assert float((np.asarray(row) - clean).sum()) != 0.0  # the floating-point residue this is about
    assert metrics.relative_sum(row, clean) == 0.0
    assert str(metrics.relative_sum([k / 36 for k in (19, 18, 18, 20, 25)], clean)) == "0.0"  # not -0.0
    with pytest.warns(RuntimeWarning, match="relative CE x: denominator 0 is not positive"):
        values = metrics.relative_corruption_errors({"x": MODEL}, MODEL_CLEAN, {"x": row}, clean)
    assert np.isnan(values["x"])
    with pytest.warns(RuntimeWarning, match="denominator 0 is not positive"):
        assert np.isnan(metrics.relative_ce(MODEL, MODEL_CLEAN, row, clean))


def test_tables_mce_and_relative_mce():
    model = {"a": MODEL, "b": [0.1, 0.1, 0.1, 0.1, 0.1], "extra": [0.9] * 5}
    base = {"a": BASE, "b": [0.2, 0.2, 0.2, 0.2, 0.2], "extra": [0.9] * 5}
    ces = metrics.corruption_errors(model, base, names=["a", "b"])
    assert list(ces) == ["a", "b"]
    assert ces["b"] == pytest.approx(0.5)
    assert metrics.mce(model, base, names=["a", "b"]) == pytest.approx((2.0 / 2.25 + 0.5) / 2)
    # b: sum(0.1 - 0.1) / sum(0.2 - 0.15) = 0 / 0.25 = 0
    assert metrics.relative_mce(model, MODEL_CLEAN, base, BASE_CLEAN, names=["a", "b"]) == pytest.approx(0.5)
    # default: every key of the model table
    assert metrics.mce(model, base) == pytest.approx((2.0 / 2.25 + 0.5 + 1.0) / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spurious warnings on defined ratios
        metrics.relative_corruption_errors(model, MODEL_CLEAN, base, BASE_CLEAN, names=["a"])


def test_relative_mce_nan_propagates():
    model = {"a": MODEL, "b": MODEL}
    base = {"a": BASE, "b": [BASE_CLEAN] * 5}
    with pytest.warns(RuntimeWarning, match="relative CE b"):
        assert np.isnan(metrics.relative_mce(model, MODEL_CLEAN, base, BASE_CLEAN))


def test_table_errors():
    with pytest.raises(ValueError, match="missing"):
        metrics.mce({"a": MODEL}, {"b": BASE})
    with pytest.raises(ValueError, match="severities"):
        metrics.ce(MODEL, BASE[:4])


def test_unnormalised_summaries():
    table = {"a": MODEL, "b": [0.1] * 5}
    assert metrics.mean_errors(table) == {"a": pytest.approx(0.4), "b": pytest.approx(0.1)}
    assert metrics.overall_mean_error(table) == pytest.approx((2.0 + 0.5) / 10)
    assert metrics.mean_corruption_accuracy(table) == pytest.approx(1 - 0.25)
    # a: mean(E - 0.1) = 0.3; b: 0
    assert metrics.unnormalised_relative_error(table, MODEL_CLEAN) == pytest.approx(0.15)


def test_corruption_summary_with_and_without_baseline():
    table = {"a": MODEL, "x": [0.5] * 5}
    plain = metrics.corruption_summary(table, MODEL_CLEAN, names=["a"])
    assert "mce" not in plain
    assert plain["overall_mean_error"] == pytest.approx(0.4)
    assert plain["mean_error"]["x"] == pytest.approx(0.5)  # extras reported, not averaged
    full = metrics.corruption_summary(table, MODEL_CLEAN, {"a": BASE}, BASE_CLEAN, names=["a"])
    assert full["mce"] == pytest.approx(0.888889, abs=1e-6)
    assert full["relative_mce"] == pytest.approx(1.0)
    assert set(full["ce"]) == {"a"}


def test_corruption_summary_means_only_the_named_corruptions_when_the_baseline_has_extras():
    # Both tables hold an extra corruption "x" outside names=["a"]: it is reported per corruption
    # but enters none of the means (BENCHMARK.md §5.2).
    table = {"a": MODEL, "x": [0.5] * 5}            # x: sum 2.5
    baseline = {"a": BASE, "x": [0.2] * 5}          # x: sum 1.0
    full = metrics.corruption_summary(table, MODEL_CLEAN, baseline, BASE_CLEAN, names=["a"])
    # x alone: CE = 2.5 / 1.0; relative CE = (2.5 - 5 * 0.10) / (1.0 - 5 * 0.15) = 2.0 / 0.25
    assert full["ce"]["x"] == pytest.approx(2.5)
    assert full["relative_ce"]["x"] == pytest.approx(8.0)
    # the means over "a" alone: CE 2.0 / 2.25, relative CE 1.5 / 1.5 (over a and x they would be
    # 1.694 and 4.5)
    assert full["mce"] == pytest.approx(2.0 / 2.25)
    assert full["relative_mce"] == pytest.approx(1.0)
    # unnormalised over "a" alone: mean error 0.4, accuracy 0.6 (0.55 with x), relative 0.3
    assert full["overall_mean_error"] == pytest.approx(0.4)
    assert full["mean_corruption_accuracy"] == pytest.approx(0.6)
    assert full["unnormalised_relative_error"] == pytest.approx(0.3)


@pytest.mark.parametrize("name, noise", [
    ("p_gaussian_noise", True), ("p_shot_noise", True), ("p_speckle_noise", True),
    ("rafdb.test.p_gaussian_noise", True), ("p_rotate", False), ("p_gaussian_blur", False),
    ("p_brightness", False),
])
def test_is_noise_perturbation(name, noise):
    assert metrics.is_noise_perturbation(name) is noise


@pytest.mark.parametrize("noise", [False, True])
def test_flip_probability_worked_example(noise):
    # both rules: 2 of 29 comparisons differ
    assert metrics.flip_probability(np.array([WORKED]), noise=noise) == pytest.approx(2 / 29)
    assert metrics.flip_probability(np.array([WORKED]), noise=noise) == pytest.approx(0.068966, abs=1e-6)


def test_noise_rule_differs_from_consecutive_rule():
    sequence = np.array([[3] + [0] * 29])
    assert metrics.flip_probability(sequence, noise=True) == pytest.approx(29 / 29)
    assert metrics.flip_probability(sequence, noise=False) == pytest.approx(1 / 29)


def test_difficulty_two():
    # even frames 3,3,3,0,3,...: 2 flips; odd frames 3,3,0,3,...: 2 flips; 28 comparisons
    assert metrics.flip_probability(np.array([WORKED]), noise=False, difficulty=2) == pytest.approx(4 / 28)
    # noise ignores the difficulty
    assert metrics.flip_probability(np.array([WORKED]), noise=True, difficulty=2) == pytest.approx(2 / 29)
    with pytest.raises(ValueError):
        metrics.flip_probability(np.array([WORKED]), noise=False, difficulty=30)


def test_two_sequences_and_flip_rate():
    sequences = np.array([WORKED, [3] * 30])
    np.testing.assert_allclose(metrics.sequence_flip_probabilities(sequences, noise=False), [2 / 29, 0])
    fp = metrics.flip_probability(sequences, noise=False)
    assert fp == pytest.approx(0.034483, abs=1e-6)
    assert metrics.flip_rate(fp, 0.10) == pytest.approx(0.3448, abs=5e-5)


def test_flip_rate_zero_base_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="flip rate"):
        assert np.isnan(metrics.flip_rate(0.1, 0.0))


def test_mean_flip_probability_and_rate():
    fp = {"p_a": 0.1, "p_b": 0.3, "p_extra": 0.9}
    base = {"p_a": 0.2, "p_b": 0.3, "p_extra": 0.1}
    assert metrics.mean_flip_probability(fp, ["p_a", "p_b"]) == pytest.approx(0.2)
    assert metrics.mean_flip_rate(fp, base, ["p_a", "p_b"]) == pytest.approx((0.5 + 1.0) / 2)


def test_flip_probability_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.flip_probability(np.zeros((0, 30), int), noise=False)
    with pytest.raises(ValueError):
        metrics.flip_probability(np.zeros((2, 1), int), noise=False)
    with pytest.raises(ValueError):
        metrics.flip_probability(np.zeros((2, 30)), noise=False)  # floats


def test_rankings_from_scores_ties_to_lower_index():
    scores = np.array([0.1, 0.3, 0.3, 0.2, 0.0, 0.0, 0.1])
    np.testing.assert_array_equal(metrics.rankings_from_scores(scores), [1, 2, 3, 0, 6, 4, 5])
    batch = np.array([[0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(metrics.rankings_from_scores(batch), [[1, 0], [0, 1]])


A_ORDER = np.arange(7)  # frame a ranks classes 0..6 in order
SWAP_TOP_TWO = np.array([1, 0, 2, 3, 4, 5, 6])  # sigma = (2, 1, 3, 4, ...)
ZERO_LAST = np.array([1, 2, 3, 4, 5, 6, 0])  # sigma = (7, 1, 2, 3, ...)


@pytest.mark.parametrize("order_b, k, expected", [
    (SWAP_TOP_TWO, 5, 2), (SWAP_TOP_TWO, 2, 2), (SWAP_TOP_TWO, 1, 1),
    (ZERO_LAST, 5, 9), (ZERO_LAST, 2, 3), (ZERO_LAST, 1, 1),
    (A_ORDER, 5, 0), (A_ORDER, 1, 0),
])
def test_topk_distance_worked_examples(order_b, k, expected):
    assert metrics.topk_distance(A_ORDER, order_b, k) == expected


def test_topk_distance_on_truncated_rankings():
    # top-3 prefixes give the same d_k (k <= 3) as the full rankings
    for order_b in (SWAP_TOP_TWO, ZERO_LAST):
        for k in (1, 2, 3):
            assert metrics.topk_distance(A_ORDER[:3], order_b[:3], k) == metrics.topk_distance(A_ORDER, order_b, k)
    assert metrics.topk_distance(A_ORDER[:3], ZERO_LAST[:3], 3) == 3 + 1 + 1  # |0-3| + |1-0| + |2-1|
    with pytest.raises(ValueError):
        metrics.topk_distance(A_ORDER[:3], ZERO_LAST[:3], 5)


def test_d1_equals_flip_indicator():
    rng = np.random.default_rng(0)
    rankings = metrics.rankings_from_scores(rng.random((4, 30, 7)))
    rankings[0, 10:] = rankings[0, 0]  # a sequence with repeated rankings
    classes = rankings[..., 0]
    for noise in (False, True):
        np.testing.assert_allclose(metrics.sequence_topk_distances(rankings, 1, noise),
                                   metrics.sequence_flip_probabilities(classes, noise))


def test_sequence_topk_distances_by_hand():
    # frames a, a, b(zero last), b: consecutive pairs d5 = 0, 9, 0 -> 3; noise pairs vs a: 0, 9, 9 -> 6
    rankings = np.array([[A_ORDER, A_ORDER, ZERO_LAST, ZERO_LAST]])
    assert metrics.topk_distance_perturbation(rankings, 5, noise=False) == pytest.approx(3.0)
    assert metrics.topk_distance_perturbation(rankings, 5, noise=True) == pytest.approx(6.0)
    # difficulty 2: pairs (0,2), (1,3) both 9
    assert metrics.topk_distance_perturbation(rankings, 5, noise=False, difficulty=2) == pytest.approx(9.0)
    assert metrics.topk_distance_rate(3.0, 6.0) == pytest.approx(0.5)
    assert metrics.mean_topk_distance_rate({"p": 3.0, "q": 1.0}, {"p": 6.0, "q": 4.0}) == pytest.approx(0.375)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(metrics.topk_distance_rate(1.0, 0.0))
