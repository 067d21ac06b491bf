"""Tests for perturbations.py: alignment, the frame formulas of BENCHMARK.md §3.3, registry properties."""

import cv2
import numpy as np
import pytest
import skimage.color
import skimage.filters

import perturbations
from perturbations import PERTURBATIONS, perturb

NAMES = list(PERTURBATIONS)
RANDOM = ["p_gaussian_noise", "p_shot_noise", "p_spatter"]


def smooth_face(seed=0, size=130):
    """A smooth, colourful 130x130 uint8 test image (low-frequency noise plus gradients)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 215, size=(9, 9, 3)).astype(np.float32)
    image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-20, 20, size, dtype=np.float32)
    image += ramp[None, :, None] + ramp[:, None, None] * 0.5
    return np.clip(image, 0, 255).astype(np.uint8)


def blob_image(shape_hw, points, sigma=2.0):
    """Black image with one gaussian blob per point, in channel 0, 1, 2 respectively."""
    h, w = shape_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.zeros((h, w, 3), np.float64)
    for channel, (x, y) in enumerate(points):
        image[..., channel] = 250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.rint(image).astype(np.uint8)


def centroid(channel):
    """Intensity-weighted centroid (x, y) of a 2-D array."""
    weights = channel.astype(np.float64)
    yy, xx = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]]
    total = weights.sum()
    return (weights * xx).sum() / total, (weights * yy).sum() / total


@pytest.fixture(scope="module")
def face():
    return smooth_face()


# ---------------------------------------------------------------------------------------------
# Alignment (BENCHMARK.md §3.1)

# Left eye, right eye, nose, left and right mouth corner. The mouth corners average to
# (85.47, 96.945); Python float floor division gives the mouth point (85.0, 96.0).
LANDMARKS = np.array(
    [[70.0, 60.0], [100.0, 60.0], [86.0, 80.0], [72.95, 95.99], [97.99, 97.9]], dtype=np.float64
)
MOUTH = (85.0, 96.0)
# 0.286*130, 0.4*130 etc., worked out by hand.
TARGETS = [(37.18, 52.0), (92.82, 52.0), (65.0, 92.82)]


def test_mouth_point_is_floored():
    assert perturbations.mouth_point(LANDMARKS) == MOUTH


@pytest.mark.parametrize("shape_hw", [(160, 200), (110, 104)])  # large, and smaller than 130 (padded)
def test_alignment_maps_reference_points_to_targets(shape_hw):
    image = blob_image(shape_hw, [LANDMARKS[0], LANDMARKS[1], MOUTH])
    aligned = perturbations.align_face(image, LANDMARKS)
    assert aligned.shape == (130, 130, 3) and aligned.dtype == np.uint8
    for channel, (tx, ty) in enumerate(TARGETS):
        cx, cy = centroid(aligned[..., channel])
        assert abs(cx - tx) <= 1.0 and abs(cy - ty) <= 1.0, (channel, cx, cy, tx, ty)


def test_alignment_of_sample_faces_from_their_landmark_files(tmp_path):
    # The whole path of RAF-DB-P's source: original photo + *_manu_attri.txt of the synthetic
    # sample tree -> rafdb_dataset.read_landmarks -> align_face (BENCHMARK.md §3.1).
    import rafdb_dataset
    import synthetic_faces

    root = synthetic_faces.write_sample_tree(tmp_path / "RAF-DB", n_train=1, n_test=6, seed=3)
    for index in range(1, 7):
        name = f"test_{index:04d}"
        original = rafdb_dataset.read_image(root / "basic/Image/original" / f"{name}.jpg")
        points = rafdb_dataset.read_landmarks(root / "basic/Annotation/manual" / f"{name}_manu_attri.txt")
        aligned = perturbations.align_face(original, points)
        # The three reference points, worked out here: the eyes and the floored mouth mean.
        mouth = ((points[3, 0] + points[4, 0]) // 2, (points[3, 1] + points[4, 1]) // 2)
        source = np.float32([points[0], points[1], mouth])
        matrix = cv2.getAffineTransform(source, np.float32(TARGETS))
        mapped = np.hstack([source, np.ones((3, 1))]) @ matrix.T
        np.testing.assert_allclose(mapped, TARGETS, atol=1.0)
        # align_face warped the photo with that affine (bilinear, constant-0 border, 130 px).
        expected = cv2.warpAffine(original, matrix, (130, 130), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        np.testing.assert_array_equal(aligned, expected)
        # The aligned image has the pupils there: darker than the cheeks below them.
        luma = aligned.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        corners = np.hstack([points[3:5], np.ones((2, 1))]) @ matrix.T
        cheeks = [mapped[0] + 0.6 * (corners[0] - mapped[0]), mapped[1] + 0.6 * (corners[1] - mapped[1])]
        skin = np.mean([luma[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].mean()
                        for x, y in cheeks])
        for x, y in TARGETS[:2]:
            pupil = luma[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2]
            assert pupil.min() < skin - 10, (name, (x, y), pupil.min(), skin)


def test_alignment_pads_small_originals_with_zeros():
    # A white 40x40 original, smaller than 130: every output pixel that the inverse affine maps
    # beyond the original (into the zero padding, or past it) must be black, every one well
    # inside must be white.
    image = np.full((40, 40, 3), 255, np.uint8)
    landmarks = np.array([[20, 25], [32, 25], [26, 30], [22, 36], [30, 36]], np.float64)
    aligned = perturbations.align_face(image, landmarks)
    inverse = cv2.invertAffineTransform(perturbations.alignment_matrix(landmarks))
    yy, xx = np.mgrid[0:130, 0:130]
    src_x = inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]
    src_y = inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]
    outside = (src_x > 40) | (src_y > 40) | (src_x < -1) | (src_y < -1)
    inside = (src_x > 0.5) & (src_y > 0.5) & (src_x < 38.5) & (src_y < 38.5)
    assert outside.sum() > 1000 and inside.sum() > 1000
    assert not aligned[outside].any()
    assert np.all(aligned[inside] == 255)


def test_aligned_source_face_default_frame_is_the_aligned_image():
    aligned = smooth_face(3, 100)
    for pad in ("reflect101", "constant"):
        face130 = perturbations.aligned_source_face(aligned, pad)
        assert face130.shape == (130, 130, 3)
        np.testing.assert_array_equal(face130[15:115, 15:115], aligned)
    reflect = perturbations.aligned_source_face(aligned, "reflect101")
    # BORDER_REFLECT_101: row 15 - k mirrors row 15 + k (edge not repeated).
    np.testing.assert_array_equal(reflect[14, 15:115], aligned[1])
    np.testing.assert_array_equal(reflect[0, 15:115], aligned[15])
    constant = perturbations.aligned_source_face(aligned, "constant")
    assert not constant[:15].any() and not constant[:, 115:].any()


# ---------------------------------------------------------------------------------------------
# Per-frame formulas (BENCHMARK.md §3.3)


def test_translate_offsets(face):
    frames = perturb(face, "p_translate")
    for i in range(30):
        np.testing.assert_array_equal(frames[i], face[15:115, i : i + 100])


def test_rotate_matches_opencv_rotation(face):
    frames = perturb(face, "p_rotate")
    for i in (0, 7, 15, 29):
        matrix = cv2.getRotationMatrix2D((65, 65), i - 15, 1)
        expected = cv2.warpAffine(face, matrix, (115, 115), flags=cv2.INTER_LINEAR)[15:115, 15:115]
        np.testing.assert_array_equal(frames[i], expected)
    np.testing.assert_array_equal(frames[15], face[15:115, 15:115])  # angle 0


@pytest.mark.parametrize("i", [0, 29])
def test_rotate_angle_and_direction(i):
    # A blob 40 px right of the centre (65, 65); rotating by a degrees counter-clockwise (y down)
    # moves it to (65 + 40 cos a, 65 - 40 sin a); the frame is offset by 15.
    angle = np.deg2rad(i - 15)
    image = blob_image((130, 130), [(105, 65), (-100, -100), (-100, -100)])
    frame = perturb(image, "p_rotate")[i]
    cx, cy = centroid(frame[..., 0])
    assert abs(cx - (65 + 40 * np.cos(angle) - 15)) < 0.3
    assert abs(cy - (65 - 40 * np.sin(angle) - 15)) < 0.3


SCALE_SIDES = [130, 128, 126, 124, 123, 121, 119, 118, 116, 114, 113, 111, 109, 107, 106,
               104, 102, 101, 99, 97, 96, 94, 92, 90, 89, 87, 85, 84, 82, 80]  # fmt: skip
SCALE_OFFSETS = [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13, 14, 14, 15, 16, 17, 18,
                 19, 20, 20, 21, 22, 23, 24, 25]  # fmt: skip


def test_scale_roi_table(face):
    frames = perturb(face, "p_scale")
    for i, (side, offset) in enumerate(zip(SCALE_SIDES, SCALE_OFFSETS)):
        assert perturbations.scale_roi(i) == (offset, offset, side, side)
        region = face[offset : offset + side, offset : offset + side]
        expected = cv2.resize(region, (100, 100), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(frames[i], expected)


@pytest.mark.parametrize("i", [0, 15, 29])
def test_shear_factor_about_origin(i):
    t = 0.01 * (i - 15)
    x, y = 70.0, 60.0
    image = blob_image((130, 130), [(x, y), (-100, -100), (-100, -100)])
    frame = perturb(image, "p_shear")[i]
    cx, cy = centroid(frame[..., 0])
    # [[1, t, 0], [t, 1, 0]] about the origin, then the ROI offset of 15.
    assert abs(cx - (x + t * y - 15)) < 0.3
    assert abs(cy - (t * x + y - 15)) < 0.3


def test_shear_matches_warp(face):
    frames = perturb(face, "p_shear")
    matrix = np.array([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0]])  # i = 25
    expected = cv2.warpAffine(face, matrix, (115, 115), flags=cv2.INTER_LINEAR)[15:115, 15:115]
    np.testing.assert_array_equal(frames[25], expected)


def test_brightness_offset_per_frame():
    # Flat grey images: V = g/255, and the HSV V shift adds (i - 15) * 0.02 to every channel.
    for grey in (40, 128, 230):
        face = np.full((130, 130, 3), grey, np.uint8)
        frames = perturb(face, "p_brightness")
        for i in range(30):
            expected = np.rint(np.clip(grey / 255 + (i - 15) * 0.02, 0, 1) * 255)
            assert np.all(np.abs(frames[i].astype(int) - expected) <= 1), (grey, i)
            if abs((i - 15) * 5.1 % 1 - 0.5) > 0.05:  # not a rounding tie: exact
                assert np.all(frames[i] == expected), (grey, i, frames[i][0, 0], expected)


def test_brightness_colour_matches_skimage_hsv(face):
    frames = perturb(face, "p_brightness")
    roi = face[15:115, 15:115] / 255.0
    for i in (0, 10, 29):
        hsv = skimage.color.rgb2hsv(roi)
        hsv[..., 2] = np.clip(hsv[..., 2] + (i - 15) * 0.02, 0, 1)
        expected = np.rint(np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255)
        assert np.abs(frames[i].astype(int) - expected).max() <= 1


def test_gaussian_blur_sigma_per_frame(face):
    frames = perturb(face, "p_gaussian_blur")
    for i in (0, 14, 29):
        blurred = skimage.filters.gaussian(
            face / 255.0, sigma=0.25 + 0.035 * i, truncate=6.0, channel_axis=-1, mode="nearest"
        )
        expected = (np.clip(blurred, 0, 1) * 255).astype(np.uint8)[15:115, 15:115]  # truncation
        assert np.abs(frames[i].astype(int) - expected).max() <= 1
        assert np.mean(frames[i] == expected) > 0.99


def test_motion_blur_angle_per_frame(face):
    import corruptions

    frames = perturb(face, "p_motion_blur", frames=3)
    for i in range(3):
        expected = corruptions.motion_blur_op(face, 10, 3, (i - 30) * 4, backend="numpy")
        np.testing.assert_array_equal(frames[i], expected[15:115, 15:115])


def test_motion_blur_wand_backend_within_one_grey_level(face, magickwand):
    # Measured over 4 aligned sample faces x 30 frames: 0.003 % of the values differ, all by 1.
    frames = {backend: perturb(face, "p_motion_blur", motion_backend=backend).astype(int)
              for backend in ("numpy", "wand")}
    difference = np.abs(frames["numpy"] - frames["wand"])
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-4


def test_spatter_shift_is_numpy_convolve():
    layer = np.random.default_rng(1).uniform(size=(12, 7))
    shifted = perturbations.shift_liquid_down(layer.copy())
    for column in range(7):
        expected = np.convolve(layer[:, column], [0.05, 0.1, 0.15, 0.7], mode="same")
        np.testing.assert_allclose(shifted[:, column], expected, rtol=0, atol=1e-12)


def _spec_spatter_frames(face, rng, wanted):
    """BENCHMARK.md §3.4 written out independently: frames ``wanted`` of the spatter sequence."""
    import corruptions  # render_water (BENCHMARK.md §2.4 water steps) is tested in test_corruptions.py

    layer = 0.65 + 0.27 * corruptions.standard_normal(rng, (130, 130)).astype(np.float64)  # §2.7 normals
    layer = skimage.filters.gaussian(layer, sigma=3.7)  # defaults: mode nearest, truncate 4
    layer[layer < 0.69] = 0
    x = face / 255.0
    frames = {}
    for i in range(max(wanted) + 1):
        if i in wanted:
            water = corruptions.render_water(x, layer, 0.6)
            frames[i] = (np.clip(water, 0, 1) * 255).astype(np.uint8)[15:115, 15:115]  # truncated
        kernel = [0.05, 0.1, 0.15, 0.7]
        layer = np.stack([np.convolve(layer[:, c], kernel, mode="same") for c in range(130)], axis=1)
    return frames


@pytest.mark.parametrize("seed", [0, 21])
def test_spatter_frames_follow_spec_parameters(face, seed):
    # The generator is seeded the same way for both; the layer is the perturbation's only draw.
    expected = _spec_spatter_frames(face, np.random.default_rng(seed), (0, 3))
    frames = perturb(face, "p_spatter", np.random.default_rng(seed), frames=4)
    clean = face[15:115, 15:115].astype(int)
    for i in (0, 3):
        assert np.mean(np.any(expected[i] != clean, axis=-1)) > 0.02  # a visible amount of water
        difference = np.abs(frames[i].astype(int) - expected[i])
        assert difference.max() <= 1, (i, difference.max())
    assert np.any(expected[0] != expected[3])


def test_spatter_first_frame_is_already_spattered(face):
    frames = perturb(face, "p_spatter", np.random.default_rng(0))
    differs = [np.any(frame != face[15:115, 15:115]) for frame in frames]
    assert differs[0]
    # The layer moves down: consecutive frames differ.
    assert all(np.any(frames[i] != frames[i + 1]) for i in range(29))


@pytest.mark.parametrize("name", ["p_gaussian_noise", "p_shot_noise"])
def test_noise_frame_zero_is_clean_and_frames_independent(name):
    face = np.full((130, 130, 3), 128, np.uint8)
    frames = perturb(face, name, np.random.default_rng(5))
    np.testing.assert_array_equal(frames[0], face[15:115, 15:115])
    residual = frames[1:].astype(np.float64) - 128
    flat = residual.reshape(29, -1)
    correlation = np.corrcoef(flat)
    off_diagonal = correlation[~np.eye(29, dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.05  # independent draws per frame
    if name == "p_gaussian_noise":
        expected_std = 0.12 * 255
    else:  # Poisson(x * 29) / 29: variance x / 29, x = 128/255
        expected_std = np.sqrt((128 / 255) / 29) * 255
    assert abs(residual.std() - expected_std) / expected_std < 0.03
    assert abs(residual.mean()) < 0.5


def test_noise_frames_are_rounded_not_truncated():
    # Mean residual of rounding is ~0; truncation would bias it by about -0.5 grey levels.
    face = np.full((130, 130, 3), 100, np.uint8)
    frames = perturb(face, "p_gaussian_noise", np.random.default_rng(2))
    assert abs(frames[1:].astype(np.float64).mean() - 100) < 0.1


# ---------------------------------------------------------------------------------------------
# Registry properties, for every perturbation


def test_registry_names_and_order():
    assert NAMES == [
        "p_gaussian_noise", "p_shot_noise", "p_gaussian_blur", "p_motion_blur", "p_spatter",
        "p_brightness", "p_translate", "p_rotate", "p_scale", "p_shear",
    ]  # fmt: skip
    assert all(fn.__name__ == name for name, fn in PERTURBATIONS.items())


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_input_untouched_and_seeding(name, face):
    before = face.copy()
    first = perturb(face, name, np.random.default_rng(11))
    np.testing.assert_array_equal(face, before)
    assert first.shape == (30, 100, 100, 3) and first.dtype == np.uint8
    again = perturb(face, name, np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    other = perturb(face, name, np.random.default_rng(12))
    if name in RANDOM:
        assert np.any(first != other)
    else:
        np.testing.assert_array_equal(first, other)
    prefix = perturb(face, name, np.random.default_rng(11), frames=4)
    np.testing.assert_array_equal(prefix, first[:4])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(face=np.zeros((130, 130, 3), np.float32), name="p_rotate"), "uint8"),
        (dict(face=np.zeros((100, 100, 3), np.uint8), name="p_rotate"), "130x130x3"),
        (dict(face=np.zeros((130, 130, 2), np.uint8), name="p_rotate"), "130x130x3"),  # grey is x1 or 2-D
        (dict(face=[[0]], name="p_rotate"), "numpy array"),
        (dict(face=np.zeros((130, 130, 3), np.uint8), name="p_nope"), "p_gaussian_noise, p_shot_noise"),
        (dict(face=np.zeros((130, 130, 3), np.uint8), name="p_rotate", frames=31), "frames"),
        (dict(face=np.zeros((130, 130, 3), np.uint8), name="p_rotate", colour="bgr"), "colour"),
        (dict(face=np.zeros((130, 130, 3), np.uint8), name="p_rotate", motion_backend="x"), "motion_backend"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        perturb(**kwargs)


def test_bgr_compat_swaps_spatter_colour(face):
    rgb = perturb(face, "p_spatter", np.random.default_rng(3), frames=1)[0].astype(int)
    bgr = perturb(face, "p_spatter", np.random.default_rng(3), frames=1, colour="bgr-compat")[0].astype(int)
    clean = face[15:115, 15:115].astype(int)
    # Water adds (175, 238, 238) in RGB, the swapped (238, 238, 175) in bgr-compat mode.
    wet = np.any(rgb != clean, axis=-1)
    assert wet.any()
    added_rgb = (rgb - clean)[wet].sum(axis=0)
    added_bgr = (bgr - clean)[wet].sum(axis=0)
    assert added_rgb[0] < added_rgb[2] and added_bgr[0] > added_bgr[2]


# --------------------------------------------------------------------------------------------
# Perturbation sets (docs/BENCHMARK.md §3.7): the 10 stay the default, the extras are separate


TEN = ("p_gaussian_noise", "p_shot_noise", "p_gaussian_blur", "p_motion_blur", "p_spatter", "p_brightness",
       "p_translate", "p_rotate", "p_scale", "p_shear")  # docs/BENCHMARK.md §3.3, in its order
P_EXTRAS = ("p_zoom_blur", "p_snow", "p_tilt", "p_speckle_noise")


def test_perturbation_names_per_set():
    rafdb = perturbations.perturbation_names("rafdb")
    assert rafdb == perturbations.perturbation_names() == tuple(PERTURBATIONS)
    assert rafdb == TEN
    assert perturbations.perturbation_names("imagenet-extra") == P_EXTRAS
    assert perturbations.perturbation_names("all") == rafdb + P_EXTRAS
    assert not set(rafdb) & set(P_EXTRAS)
    for bad in ("", "face", "RAFDB", "imagenet"):
        with pytest.raises(ValueError, match="perturbation set"):
            perturbations.perturbation_names(bad)


def test_p_extras_in_registry_through_perturb(face):
    """Each extra is reachable by name through perturb(): 30 frames of 100 px, frames= gives a
    prefix; the random ones are seeded; the 10-entry PERTURBATIONS dict is not extended."""
    registry = perturbations.all_perturbations()
    assert tuple(registry) == perturbations.perturbation_names("all")
    assert len(PERTURBATIONS) == 10 and not set(P_EXTRAS) & set(PERTURBATIONS)
    for name in P_EXTRAS:
        full = perturb(face, name, np.random.default_rng(5))
        assert full.shape == (30, 100, 100, 3) and full.dtype == np.uint8
        assert np.array_equal(perturb(face, name, np.random.default_rng(5), frames=4), full[:4])
        assert np.array_equal(perturb(face, name, np.random.default_rng(5)), full)
        assert not np.array_equal(full[29], full[0]) or name == "p_tilt"  # the sequence changes
    # p_tilt's frame 15 is the untilted face (angle 0): the default ROI of the face itself.
    assert np.array_equal(perturb(face, "p_tilt", frames=30)[15], face[15:115, 15:115])
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(face, "p_frost")


def test_brightness_by_table_equals_the_hsv_formula_on_every_level():
    # A face whose ROI holds black pixels, greys, saturated colours and random ones: every frame
    # must equal OpenCV's round-half-even of 255 * (the HSV value shift written out per pixel:
    # each channel times V' / V with V' = clip(V + delta, 0, 1); black pixels become grey V').
    rng = np.random.default_rng(5)
    face = rng.integers(0, 256, (130, 130, 3), dtype=np.uint8)
    face[20:30, 20:30] = 0
    face[30:40, 20:40] = np.arange(200, dtype=np.uint8).reshape(10, 20)[..., None]
    face[40:50, 20:30] = (255, 0, 0)
    frames = perturb(face, "p_brightness")
    x = face[15:115, 15:115].astype(np.float64) / 255.0
    value = x.max(axis=-1, keepdims=True)
    for i in range(30):
        delta = (i - 15) * 2 / 100
        new_value = np.clip(value + delta, 0.0, 1.0)
        shifted = np.where(value > 0, x * (new_value / np.where(value > 0, value, 1.0)), new_value)
        expected = np.clip(np.rint(np.clip(shifted, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
        assert np.array_equal(frames[i], expected), i


@pytest.mark.parametrize("grey", [False, True])
def test_spatter_and_blurs_have_the_bytes_of_the_whole_image_computation(face, grey):
    # The frames are computed on the ROI only (droplet pixels only for the spatter, the ROI's rows
    # and columns for the motion blur); written out here on the whole 130 px image, then cropped,
    # with the dense formulas, they must give the same bytes.
    import corruptions

    if grey:
        face = face[:, :, :1].copy()
    x = face / 255.0
    if grey:
        water = np.array([corruptions.grey_level((175, 238, 238))], np.float32)
    else:
        water = np.array((175, 238, 238), np.float32) / np.float32(255)
    layer = perturbations.spatter_layer(np.random.default_rng(9))
    frames = perturb(face, "p_spatter", np.random.default_rng(9))
    wet = 0
    for i in range(30):
        mask = corruptions.water_mask(layer, 0.6)
        blended = x if mask is None else np.clip(x + mask[:, :, None] * water, 0.0, 1.0)
        expected = np.clip(blended * 255.0, 0, 255).astype(np.uint8)[15:115, 15:115]
        assert np.array_equal(frames[i], expected), ("spatter", i)
        wet += np.count_nonzero(expected != face[15:115, 15:115])
        layer = perturbations.shift_liquid_down(layer)
    assert wet > 30 * 100  # droplets on the ROI in every frame, on average
    frames = perturb(face, "p_gaussian_blur")
    for i in range(30):
        blurred = corruptions.gaussian_blur_op(x, 0.25 + 0.035 * i, 6.0).reshape(x.shape)
        expected = np.clip(blurred * 255.0, 0, 255).astype(np.uint8)[15:115, 15:115]
        assert np.array_equal(frames[i], expected), ("gaussian blur", i)
    frames = perturb(face, "p_motion_blur")
    for i in range(0, 30, 7):
        expected = corruptions.motion_blur_op(face, 10, 3, (i - 30) * 4)
        assert np.array_equal(frames[i], expected[15:115, 15:115]), ("motion blur", i)
