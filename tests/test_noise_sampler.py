"""The closed-form samplers of the noisy corruptions (docs/BENCHMARK.md §2.7): Box-Muller normals and
the 32-bit-word Poisson inversion, each re-derived here from the generator's raw outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

import corruptions
import perturbations


def _words32(seed: int, count: int) -> list[int]:
    """The generator's raw 64-bit outputs split by hand: low 32 bits, then high 32 bits."""
    raw = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((count + 1) // 2)
    words = []
    for value in raw.tolist():
        words.append(value % 2**32)
        words.append(value // 2**32)
    return words[:count]


def _box_muller_by_hand(seed: int, n: int) -> list[float]:
    """The docstring's construction, pair by pair in double precision with the math module."""
    m = (n + 1) // 2
    words = _words32(seed, 2 * m)
    values = [0.0] * (2 * m)
    for j in range(m):
        u = 1.0 - (words[j] // 256) / 2.0**24
        t = (words[m + j] // 256) / 2.0**24 * 2.0 * math.pi
        r = math.sqrt(-2.0 * math.log(u))
        values[j], values[m + j] = r * math.cos(t), r * math.sin(t)
    return values[:n]


@pytest.mark.parametrize("seed,shape", [(0, (20, 2)), (123, (3, 5)), (7, 1), (99, (2, 4, 4, 3))])
def test_standard_normal_is_box_muller_of_the_raw_words(seed, shape):
    got = corruptions.standard_normal(np.random.default_rng(seed), shape)
    assert got.dtype == np.float32 and got.shape == (shape if isinstance(shape, tuple) else (shape,))
    expected = np.array(_box_muller_by_hand(seed, got.size))
    # float32 log, sqrt and sine/cosine: a few float32 ulps of the values (|z| < 6).
    np.testing.assert_allclose(got.ravel(), expected, rtol=0, atol=4e-6)


def test_standard_normal_consumes_half_a_raw_output_per_value():
    rng = np.random.default_rng(5)
    corruptions.standard_normal(rng, (7, 3))  # 21 values: 11 pairs, 11 raw outputs
    fresh = np.random.default_rng(5).bit_generator
    fresh.random_raw(11)
    assert rng.bit_generator.random_raw(4).tolist() == fresh.random_raw(4).tolist()


def test_standard_normal_smallest_uniform_has_the_stated_tail():
    # a = 2**24 - 1 (all ones) gives u = 2**-24, the largest radius sqrt(48 ln 2) = 5.77.
    assert math.sqrt(-2 * math.log(2.0**-24)) == pytest.approx(math.sqrt(48 * math.log(2)))
    assert abs(corruptions.standard_normal(np.random.default_rng(1), 10**6)).max() <= 5.7684


def test_standard_normal_distribution_on_a_million_draws():
    z = corruptions.standard_normal(np.random.default_rng(2026), 10**6).astype(np.float64)
    n = z.size
    # Standard errors at n = 1e6: mean 1e-3, std 7e-4, skewness 2.4e-3, excess kurtosis 4.9e-3.
    assert abs(z.mean()) < 5e-3
    assert abs(z.std() - 1.0) < 3.5e-3
    assert abs(scipy.stats.skew(z)) < 1.2e-2
    assert abs(scipy.stats.kurtosis(z)) < 2.5e-2
    # Kolmogorov-Smirnov distance to N(0, 1); the 1 % critical value at this n is 1.63 / sqrt(n) = 0.0016.
    assert scipy.stats.kstest(z, "norm").statistic < 1.63 / math.sqrt(n)
    # Both tails: P(|Z| > 3) = 0.0026998, i.e. 2700 +- 52 of a million.
    assert abs(np.count_nonzero(np.abs(z) > 3) - 2699.8) < 5 * 52
    # The cosine and sine halves are independent normals too: no correlation between them.
    half = n // 2
    assert abs(np.corrcoef(z[:half], z[half:])[0, 1]) < 5e-3


@pytest.mark.parametrize("severity,level", [(1, 128), (3, 17), (5, 240)])
def test_gaussian_noise_of_a_constant_image(severity, level):
    sigma = (0.08, 0.12, 0.18, 0.24, 0.30)[severity - 1]
    image = np.full((100, 100, 3), level, np.uint8)
    got = corruptions.corrupt(image, "gaussian_noise", severity, np.random.default_rng(severity))
    z = corruptions.standard_normal(np.random.default_rng(severity), image.shape).astype(np.float64)
    exact = np.clip(level / 255.0 + sigma * z, 0.0, 1.0) * 255.0
    expected = np.floor(exact)
    differs = got != expected
    # float32 arithmetic floors to the neighbouring integer only where the value is that close to one.
    assert differs.mean() < 1e-3
    assert np.all(np.abs(exact[differs] - np.rint(exact[differs])) < 1e-3)
    assert np.all(np.abs(got.astype(int) - expected) <= 1)
    assert got.min() < level < got.max()  # the noise is there


def test_p_gaussian_noise_frames_draw_one_after_the_other_and_round_half_even():
    face = np.random.default_rng(0).integers(0, 256, (130, 130, 3), dtype=np.uint8)
    frames = perturbations.perturb(face, "p_gaussian_noise", np.random.default_rng(4), frames=6)
    clean = face[15:115, 15:115].astype(np.float64)
    assert np.array_equal(frames[0], face[15:115, 15:115])
    rng = np.random.default_rng(4)
    for i in range(1, 6):
        z = corruptions.standard_normal(rng, clean.shape).astype(np.float64)
        exact = np.clip(clean + 255.0 * 0.12 * z, 0.0, 255.0)
        expected = np.rint(exact)  # half to even (BENCHMARK.md §3.5)
        differs = frames[i] != expected
        assert np.all(np.abs(exact[differs] - np.floor(exact[differs]) - 0.5) < 1e-3), i
        assert differs.mean() < 1e-3


# --------------------------------------------------------------------------------------------
# Shot noise: u = w / 2**32 from one 32-bit word per value


@pytest.mark.parametrize("lam,level", [(60, 200), (29, 77), (5, 255), (8, 3)])
def test_poisson_inverts_the_cdf_at_the_word_uniforms(lam, level):
    count = 301
    levels = np.full(count, level, np.uint8)
    got = corruptions.poisson_from_levels(levels, lam, np.random.default_rng(lam))
    mean = level / 255 * lam
    expected = []
    for w in _words32(lam, count):
        u, k = w / 2.0**32, 0
        while scipy.stats.poisson.cdf(k, mean) <= u:
            k += 1
        expected.append(k)
    assert got.tolist() == expected


def test_shot_noise_byte_guide_matches_the_search_everywhere():
    # Every level, many words: the guide-cell fast path gives the bytes the search gives.
    levels = np.tile(np.arange(256, dtype=np.uint8), 400)
    for lam, rounding in ((60, "floor"), (29, "rint"), (5, "floor")):
        got = corruptions.shot_noise_uint8(levels, lam, np.random.default_rng(3), rounding)
        counts = corruptions.poisson_from_levels(levels, lam, np.random.default_rng(3))
        scaled = np.clip(counts / lam, 0.0, 1.0) * 255.0
        expected = np.floor(scaled) if rounding == "floor" else np.rint(scaled)
        assert np.array_equal(got, expected.astype(np.uint8)), (lam, rounding)


def _edge_words(mean: float) -> list[int]:
    """Words where the inversion can go wrong for one mean: both ends of the 32-bit range, each
    bound limit(k) = ceil(2**32 CDF(k)) - 1 and the word above it, and the first and last word of
    the lowest and highest guide cells (the cells whose counts are found by the wide search)."""
    top = 2**32 - 1
    cell = 2 ** (32 - corruptions._POISSON_GUIDE_BITS)  # words per guide cell
    words = {0, top, cell - 1, cell, top - cell, top - cell + 1}
    for k in range(200):
        cdf = scipy.stats.poisson.cdf(k, mean)
        limit = math.ceil(cdf * 2.0**32) - 1
        if limit >= top:
            break
        words.update(w for w in (limit, limit + 1) if 0 <= w <= top)
    return sorted(words)


def _count_by_hand(word: int, mean: float) -> int:
    """The smallest k with w < 2**32 CDF(k), i.e. w / 2**32 < P(X <= k)."""
    k = 0
    while not word < 2.0**32 * scipy.stats.poisson.cdf(k, mean):
        k += 1
    return k


@pytest.mark.parametrize("lam", [60, 5])
@pytest.mark.parametrize("level", [0, 1, 37, 128, 255])
def test_poisson_search_at_the_bounds_of_every_count(monkeypatch, lam, level):
    # Chosen words instead of the generator's: each bound w = limit(k) must still give k (the
    # comparison is w <= limit(k), in the one-comparison cells and in the wide-cell search alike)
    # and w = limit(k) + 1 must give k + 1.
    mean = level / 255 * lam
    words = _edge_words(mean)
    expected = [_count_by_hand(w, mean) for w in words]
    if level == 255:
        assert max(expected) > lam + 3 * math.sqrt(lam)  # the upper tail is reached
    chosen = np.array(words, np.uint32)
    monkeypatch.setattr(corruptions, "raw_words32", lambda rng, count: chosen[:count].copy())
    levels = np.full(chosen.size, level, np.uint8)
    counts = corruptions.poisson_from_levels(levels, lam, np.random.default_rng(0))
    assert counts.tolist() == expected
    for rounding in ("floor", "rint"):
        got = corruptions.shot_noise_uint8(levels, lam, np.random.default_rng(0), rounding)
        scaled = [min(k / lam, 1.0) * 255.0 for k in expected]
        by_hand = [math.floor(s) if rounding == "floor" else round(s) for s in scaled]
        assert got.tolist() == by_hand, rounding
