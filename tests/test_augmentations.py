"""Tests of augmentations.py against the numbers of BENCHMARK.md §4.3 and §4.5 (worked out by hand here)."""

import pickle

import numpy as np
import pytest

import augmentations as aug


def face_like(height=100, width=100, seed=0):
    """A colourful RGB uint8 test image with structure (no two neighbours equal on the diagonal)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    return (image // 2 + rng.integers(0, 100, image.shape, dtype=np.uint8)).astype(np.uint8)


def test_clipped_normal_stays_in_range():
    rng = np.random.default_rng(1)
    values = aug.clipped_normal(rng, 3.0, 2.0, 20000)
    assert values.min() >= 1.0 and values.max() <= 5.0
    # N(3, 1) clipped at ±2σ: about 4.6 % of draws land on the bounds, the rest inside.
    at_bounds = np.mean((values == 1.0) | (values == 5.0))
    assert 0.03 < at_bounds < 0.065
    assert abs(values.mean() - 3.0) < 0.03


def test_rotation_angle_range(monkeypatch):
    angles = []
    original = aug.cv2.getRotationMatrix2D

    def spy(center, angle, scale):
        angles.append((center, angle, scale))
        return original(center, angle, scale)

    monkeypatch.setattr(aug.cv2, "getRotationMatrix2D", spy)
    image = face_like()
    for seed in range(400):
        aug.random_rotate(image, (0, 0, 100, 100), np.random.default_rng(seed))
    values = np.array([a for _, a, _ in angles])
    assert np.all(np.abs(values) <= 10.0)  # Nc(0, 10)
    assert np.abs(values).max() > 9.0 and 4.0 < values.std() < 5.0  # σ = 5 before clipping
    assert all(center == (50.0, 50.0) and scale == 1.0 for center, _, scale in angles)


@pytest.mark.parametrize("level,seed", [(100, 0), (30, 5), (240, 11)])
def test_contrast_brightness_on_constant_image(level, seed):
    image = np.full((20, 20, 3), level, np.uint8)
    out = aug.random_contrast_brightness(image, np.random.default_rng(seed))
    # By hand: a = clip(N(1, .25), .5, 1.5), b = clip(N(0, 24), -48, 48), drawn in this order.
    draws = np.random.default_rng(seed)
    a = min(max(draws.normal(1.0, 0.25), 0.5), 1.5)
    b = min(max(draws.normal(0.0, 24.0), -48.0), 48.0)
    expected = int(min(max((level - 128.0) * a + 128.0 + b, 0.0), 255.0))  # truncation
    assert out.dtype == np.uint8 and np.all(out == expected)


def test_flip_probability_is_half():
    image = face_like(10, 10)
    rng = np.random.default_rng(3)
    flips = sum(not np.array_equal(aug.random_flip(image, rng), image) for _ in range(4000))
    assert abs(flips / 4000 - 0.5) < 0.03
    flipped = image[:, ::-1]
    for _ in range(20):
        out = aug.random_flip(image, rng)
        assert np.array_equal(out, image) or np.array_equal(out, flipped)


def test_roi_jitter_and_enclosing_square_by_hand():
    assert aug.enclosing_square((10, 20, 30, 50)) == (0, 20, 50, 50)
    assert aug.enclosing_square((10, 20, 50, 30)) == (10, 10, 50, 50)
    assert aug.enclosing_square((5, 5, 40, 40)) == (5, 5, 40, 40)
    rng = np.random.default_rng(7)
    roi = aug.random_change_roi((0, 0, 100, 100), rng)
    draws = np.random.default_rng(7)
    sigma = 4.5  # 0.045 × 100
    dx, dy = np.clip(draws.normal(-0.9, sigma / 2, 2), -0.9 - sigma, -0.9 + sigma)
    dw, dh = np.clip(draws.normal(2.25, sigma, 2), 2.25 - 9.0, 2.25 + 9.0)
    assert roi == (int(dx), int(dy), 100 - int(dw), 100 - int(dh))


def test_vggface2_margin_and_sub_roi():
    assert aug.add_margin((0, 0, 100, 100), 0.3) == pytest.approx((-0.3, -0.3, 100.6, 100.6))
    offsets = set()
    for seed in range(300):
        x, y, w, h = aug.random_fixed_size_roi(aug.add_margin((0, 0, 100, 100), 0.3), np.random.default_rng(seed))
        assert w == pytest.approx(224 / 256 * 100.6) and h == pytest.approx(224 / 256 * 100.6)
        for origin in (x, y):
            steps = (origin + 0.3) / (100.6 / 256)  # randint(0, 32) inclusive, scaled by w/256
            assert steps == pytest.approx(round(steps)) and 0 <= round(steps) <= 32
            offsets.add(round(steps))
    assert offsets == set(range(33))
    out = aug.make_train_transform("vggface2")(face_like(), np.random.default_rng(0))
    assert out.shape == (88, 88, 3)  # round(88.025)


def test_cut_rules_by_hand():
    image = face_like()
    assert aug.cut(image, (0, 0, 100, 100), "exact").shape == (100, 100, 3)
    assert np.array_equal(aug.cut(image, (0, 0, 100, 100), "legacy99"), image[:99, :99])
    out = aug.cut(image, (-10, -5, 50, 40), "exact")
    assert out.shape == (40, 50, 3)
    assert not out[:5].any() and not out[:, :10].any()
    assert np.array_equal(out[5:, 10:], image[0:35, 0:40])
    # legacy: corners (-10,-5) and (39,34) excluded -> data image[0:34, 0:39] pasted at (10, 5)
    legacy = aug.cut(image, (-10, -5, 50, 40), "legacy99")
    assert legacy.shape == (40, 50, 3)
    assert np.array_equal(legacy[5:39, 10:49], image[0:34, 0:39]) and not legacy[39:].any()
    with pytest.raises(ValueError, match="crop rule"):
        aug.cut(image, (0, 0, 10, 10), "nearest")


def test_autoaugment_policies_loaded():
    policies = aug.load_policies()
    assert len(policies) == 249
    assert policies[0] == (("TranslateY", 0.2649150726381924, 0.0021530797272952262),
                           ("Equalize", 0.8252073871498431, 0.3470289149739504))
    counts = {}
    for policy in policies:
        assert len(policy) == 2
        for op, _, _ in policy:
            counts[op] = counts.get(op, 0) + 1
    assert counts["Equalize"] == 59 and counts["Cutout"] == 22 and sum(counts.values()) == 498


@pytest.mark.parametrize("op,level,expected", [
    ("Rotate", 0.75, 15.0),  # .75·60 − 30
    ("TranslateX", 1.0, 45.0),  # .45 × width 100
    ("TranslateY", 0.0, -27.0),  # −.45 × height 60
    ("ShearX", 0.25, -0.15),
    ("Solarize", 0.5, 128.0),
    ("Posterize", 0.6, 6),  # int(.6·4 + 4)
    ("Contrast", 0.5, 1.0),
    ("Cutout", 0.5, 10.0),  # .1 × width 100
])
def test_autoaugment_value_mapping(op, level, expected):
    assert aug.op_value(op, level, width=100, height=60) == pytest.approx(expected)


def test_autoaugment_probabilities_ignored_by_default_and_honoured_with_flag():
    image = face_like(30, 30)
    policy = [("Invert", 0.0, 0.3), ("Posterize", 0.0, 0.0)]  # Posterize level 0 = 4 bits
    expected = (255 - image) & 0xF0
    assert np.array_equal(aug.apply_policy(image, policy, np.random.default_rng(0)), expected)
    honoured = aug.apply_policy(image, policy, np.random.default_rng(0), honour_prob=True)
    assert np.array_equal(honoured, image)
    always = [("Invert", 1.0, 0.3), ("Posterize", 1.0, 0.0)]
    assert np.array_equal(aug.apply_policy(image, always, np.random.default_rng(0), honour_prob=True), expected)


def test_autoaugment_rotate_sign_flips():
    image = np.zeros((21, 21, 3), np.uint8)
    image[9:12, 14:17] = 255  # a blob right of the centre
    rows = set()
    for seed in range(30):
        out = aug.apply_op(image, "Rotate", 1.0, np.random.default_rng(seed))  # ±30°
        ys, xs = np.nonzero(out[:, :, 0])
        rows.add(int(np.sign(ys.mean() - 10)))
    assert rows == {-1, 1}


def test_autoaugment_bgr_compat_swaps_colour_ops_only():
    image = face_like(20, 20)
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    color = [("Color", 0.0, 0.0), ("Contrast", 0.0, 0.9)]
    assert not np.array_equal(aug.apply_policy(image, color, rng()), aug.apply_policy(image, color, rng(), bgr_compat=True))
    invert = [("Invert", 0.0, 0.0), ("Solarize", 0.0, 0.5)]
    assert np.array_equal(aug.apply_policy(image, invert, rng()), aug.apply_policy(image, invert, rng(), bgr_compat=True))


def test_random_erasing_box():
    height, width = 60, 80
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (np.arange(width) % 2 * 255).astype(np.uint8)[None, :, None]  # stripes 0/255
    image[..., 1] = 128
    erased = 0
    for seed in range(200):
        out = aug.random_erasing(image, np.random.default_rng(seed))
        changed = np.any(out != image, axis=2)
        if not changed.any():
            continue
        erased += 1
        ys, xs = np.nonzero(changed)
        box = out[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert np.unique(box).size == 1  # a single fill value on all channels
        box_h, box_w = box.shape[:2]
        # w = int(√(a/r)), h = int(√(a·r)) with a ∈ [.02, .15]·H·W: w·h ≤ a < (w+1)(h+1)
        assert box_w * box_h <= 0.15 * height * width
        assert (box_w + 1) * (box_h + 1) > 0.02 * height * width
    assert 70 < erased < 130  # p = .5


@pytest.mark.parametrize("kind", aug.KINDS)
@pytest.mark.parametrize("crop", aug.CROP_RULES)
def test_transform_dtype_shape_determinism(kind, crop):
    image = face_like()
    before = image.copy()
    transform = aug.make_train_transform(kind, crop=crop)
    out_a = transform(image, np.random.default_rng(42))
    out_b = transform(image, np.random.default_rng(42))
    assert np.array_equal(image, before)  # the input is left untouched
    assert out_a.dtype == np.uint8 and out_a.ndim == 3 and out_a.shape[2] == 3
    assert np.array_equal(out_a, out_b)
    if kind in ("no", "autoaugment-rafdb", "randaugment"):
        assert out_a.shape == ((100, 100, 3) if crop == "exact" else (99, 99, 3))
    if kind == "default":
        assert out_a.shape[0] == out_a.shape[1]  # the ROI is made square
    if kind != "no":
        outputs = {transform(image, np.random.default_rng(seed)).tobytes() for seed in range(6)}
        assert len(outputs) > 1
    else:
        assert np.array_equal(out_a, image if crop == "exact" else image[:99, :99])


def test_cutout_overrides_augmentation_and_transform_pickles():
    transform = aug.make_train_transform("default", cutout=True)
    assert transform.effective_kind == "cutout"
    clone = pickle.loads(pickle.dumps(transform))
    image = face_like()
    for seed in range(5):
        out = clone(image, np.random.default_rng(seed))
        assert out.shape == (100, 100, 3)
        assert np.array_equal(out, transform(image, np.random.default_rng(seed)))
    with pytest.raises(ValueError, match="augmentation"):
        aug.make_train_transform("mixup")
    with pytest.raises(ValueError, match="RGB uint8"):
        transform(image.astype(np.float32), np.random.default_rng(0))


def test_skew_moves_a_point_by_the_spec_matrix():
    """BENCHMARK.md §4.5 (2): M = [[1, s0, 1], [s1, 1, 1]] with s0, s1 = |Nc(0, 0.1)| maps (x, y) to
    (x + s0 y + 1, s1 x + y + 1); the draws are reproduced here from the same seed."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[28:33, 18:23] = 255  # a 5x5 block centred on (x, y) = (20, 30)
    draws = np.abs(np.clip(np.random.default_rng(8).normal(0.0, 0.05, 2), -0.1, 0.1))
    s0, s1 = draws
    out = aug.random_skew(image, np.random.default_rng(8)).astype(np.float64)[..., 0]
    rows, cols = np.mgrid[0:100, 0:100]
    centre_x = (out * cols).sum() / out.sum()
    centre_y = (out * rows).sum() / out.sum()
    assert s0 > 0.05 and s1 > 0.05  # the seed gives a visible skew
    assert centre_x == pytest.approx(20 + s0 * 30 + 1, abs=0.3)
    assert centre_y == pytest.approx(s1 * 20 + 30 + 1, abs=0.3)


# --------------------------------------------------------------------------------------------
# Values from the docstrings/docs table (docs/AUGMENTATIONS.md), checked on cases that separate them


def test_exact_cut_rounds_a_fractional_size_half_up():
    """An 'exact' cut of a 10.5 × 9.6 box is 11 wide and 10 high (sizes rounded half up, not truncated)."""
    image = np.arange(20 * 20, dtype=np.uint8).reshape(20, 20)
    assert aug.cut(image, (0, 0, 10.5, 9.6), "exact").shape == (10, 11)


def test_cutout_square_fill_and_extent():
    """docs/AUGMENTATIONS.md: Cutout fills (125, 123, 114); the square is size × size centred on U(0, W), U(0, H)."""
    image = np.zeros((100, 100, 3), np.uint8)
    draws = np.random.default_rng(0)
    cx, cy = draws.uniform(0, 100), draws.uniform(0, 100)
    out = aug._cutout_square(image, 20.0, np.random.default_rng(0))
    expected = np.zeros_like(image)
    expected[int(max(0, cy - 10)):int(min(100, cy + 10)), int(max(0, cx - 10)):int(min(100, cx + 10))] = (125, 123, 114)
    np.testing.assert_array_equal(out, expected)


def test_randaugment_applies_two_operations(monkeypatch):
    """RandAugment applies two operations per image (the augmentations module docstring, ``randaugment``)."""
    seen = []
    monkeypatch.setattr(aug, "apply_policy", lambda image, policy, rng, **k: seen.append(len(policy)) or image)
    aug.make_train_transform("randaugment")(np.zeros((20, 20, 3), np.uint8), np.random.default_rng(0))
    assert seen == [2]


def test_roi_jitter_scales_with_the_height():
    """σ = .045·h (the docstring of random_change_roi): a 400 × 100 box moves by int(Nc(−.9, 4.5)), never 18-ish."""
    moves = [aug.random_change_roi((0, 0, 400, 100), np.random.default_rng(s)) for s in range(300)]
    assert max(abs(m[0]) for m in moves) <= 5 and max(abs(m[1]) for m in moves) <= 5


def test_augmix_severity_0_1_is_refused():
    """The AugMix severity lies in (0.1, 10] (docs/AUGMENTATIONS.md: levels U(0.1, severity)); 0.1 is refused."""
    with pytest.raises(ValueError):
        aug.check_augmix_params(3, -1, 0.1)
    aug.check_augmix_params(3, -1, 0.11)


def test_random_erasing_with_probability_one_always_erases():
    """probability = 1: every image gets its box (an erased copy, never the input itself)."""
    image = np.zeros((40, 40, 3), np.uint8)
    assert all(aug.random_erasing(image, np.random.default_rng(s), probability=1.0) is not image for s in range(10))
