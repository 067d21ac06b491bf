"""Grey images stay grey through the corruptions and perturbations (docs/BENCHMARK.md §9.3, §9.9).

Oracles: hand formulas (brightness, noise, the combinations), the RGB path on an R = G = B copy
where the definitions coincide (channel-wise corruptions, motion blur), PIL for the grey JPEG and
pixelate, and per-name digests of an RGB sweep first computed on the code before grey support existed.
"""

from __future__ import annotations

import hashlib
import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

import corruptions
import perturbations

SEED = 11


@pytest.fixture(scope="module")
def grey():
    """A 48x48x1 grey face (FER2013's size), from the project's synthetic face generator."""
    import synthetic_faces

    rgb = cv2.resize(synthetic_faces.sample_face(0, 3), (48, 48), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]


def run(image, name, severity, seed=SEED, **options):
    return corruptions.corrupt(image, name, severity, np.random.default_rng(seed), **options)


def floor255(y):
    """The final cast written out: floor(255 clip(y, 0, 1))."""
    return np.floor(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# All 18: shape, dtype, determinism, 2-D input


@pytest.mark.parametrize("name", corruptions.CORRUPTION_NAMES)
def test_every_corruption_keeps_grey_shape_and_is_deterministic(grey, name):
    before = grey.copy()
    for severity in (1, 2, 3, 4, 5):
        out = run(grey, name, severity)
        assert out.shape == (48, 48, 1) and out.dtype == np.uint8, (name, severity, out.shape)
        np.testing.assert_array_equal(out, run(grey, name, severity))  # same seed, same bytes
        np.testing.assert_array_equal(run(grey[:, :, 0], name, severity), out[:, :, 0])  # H x W in, H x W out
    np.testing.assert_array_equal(grey, before)  # input untouched
    if name not in corruptions.DETERMINISTIC:
        assert not np.array_equal(run(grey, name, 3, seed=1), run(grey, name, 3, seed=2))


# --------------------------------------------------------------------------------------------
# Brightness: +-c on the intensity, no HSV


@pytest.mark.parametrize("severity", (1, 2, 3, 4, 5))
def test_brightness_on_grey_is_clip_x_plus_minus_c(grey, severity):
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    x = grey.astype(np.float64) / 255.0
    np.testing.assert_array_equal(run(grey, "brightness_plus", severity), floor255(x + c))
    np.testing.assert_array_equal(run(grey, "brightness_minus", severity), floor255(x - c))


def test_brightness_grey_values_by_hand():
    image = np.array([0, 40, 100, 200, 250, 255] * 8, np.uint8).reshape(1, 48).repeat(48, axis=0)[:, :, None]
    # +0.2 adds 51 levels: 40 -> 91 exactly; 100/255 + .1 = .49216 -> 125.5 -> 125 (floor).
    assert run(image, "brightness_plus", 2)[0, :6, 0].tolist() == [51, 91, 151, 251, 255, 255]
    assert run(image, "brightness_plus", 1)[0, 2, 0] == 125
    # float64 as the original: 0.2 is stored slightly above 1/5, so 100/255 - 0.2 lands just below
    # 49/255 and floors to 48 (and 40/255 + 0.2 just above 91/255: 91).
    assert run(image, "brightness_minus", 2)[0, :6, 0].tolist() == [0, 0, 48, 148, 198, 204]


# --------------------------------------------------------------------------------------------
# Spatter: grey colours


def test_spatter_colour_greys_by_hand():
    # skimage rgb2gray weights 0.2125, 0.7154, 0.0721 on the RGB triples
    assert corruptions.grey_level((175, 238, 238)) * 255 == pytest.approx(0.2125 * 175 + 0.7875 * 238)
    assert corruptions.grey_level((175, 238, 238)) * 255 == pytest.approx(224.6125, abs=1e-4)
    assert corruptions.grey_level((63, 42, 20)) * 255 == pytest.approx(44.8763, abs=1e-4)


@pytest.mark.parametrize("severity", (1, 2, 3, 4, 5))
def test_spatter_on_grey_is_the_grey_of_the_rgb_spatter(grey, severity):
    """The liquid layer only depends on H x W, so the same rng gives the same mask m on RGB and on
    grey; the RGB result per channel is x + m col_c (water) or x (1 - m) + m col_c (mud), whose
    weighted grey (weights summing to 1) is the grey result. Kept below 1 so nothing clips."""
    dark = (grey // 3).astype(np.uint8)  # <= 85: water adds at most 0.6 * 238, no clipping
    function = corruptions.CORRUPTIONS["spatter"]
    grey_out = function(dark, severity, np.random.default_rng(SEED))
    rgb_out = function(np.repeat(dark, 3, axis=2), severity, np.random.default_rng(SEED))
    weights = np.array([0.2125, 0.7154, 0.0721])
    assert grey_out.shape == (48, 48, 1)
    np.testing.assert_allclose(grey_out[:, :, 0], rgb_out @ weights, atol=1e-5)
    out = run(dark, "spatter", severity)
    assert out.shape == (48, 48, 1) and not np.array_equal(out, dark)  # spattered, and grey
    # no channel order on grey: the original's swap (bgr-compat) changes nothing
    np.testing.assert_array_equal(run(dark, "spatter", severity, colour="bgr-compat"), out)


# --------------------------------------------------------------------------------------------
# Channel-wise corruptions and motion blur: the RGB path on R = G = B, first channel

CHANNELWISE = ("gaussian_blur", "defocus_blur", "zoom_blur", "motion_blur", "contrast_plus", "contrast",
               "pixelate")


@pytest.mark.parametrize("name", CHANNELWISE)
def test_channelwise_grey_equals_rgb_of_equal_channels(grey, name):
    rgb = np.repeat(grey, 3, axis=2)
    for severity in (1, 2, 3, 4, 5):
        np.testing.assert_array_equal(run(grey, name, severity), run(rgb, name, severity)[:, :, :1],
                                      err_msg=f"{name} s={severity}")


def test_motion_blur_grey_is_fixed_48x48(grey):
    """The original returned 48 x 3 for a 48 x 48 x 1 image; here the blur of the plane, 48 x 48 x 1."""
    for severity in (1, 3, 5):
        out = run(grey, "motion_blur", severity)
        assert out.shape == (48, 48, 1)
        assert not np.array_equal(out, grey)
    out = run(grey, "motion_blur_contrast_brightness_minus", 5)
    assert out.shape == (48, 48, 1)


def test_k_is_one_at_48_px():
    """k = H / 48 = 1: defocus takes the table itself, motion blur floor(table / 3)."""
    assert [corruptions.defocus_parameters(s, 48) for s in (1, 2, 3, 4, 5)] == [
        (1.5, 0.1), (2, 0.2), (2, 0.3), (2.5, 0.4), (3, 0.4)]
    assert [corruptions.motion_parameters(s, 48) for s in (1, 2, 3, 4, 5)] == [
        (3, 1), (5, 1), (5, 2), (5, 4), (6, 5)]


def test_defocus_grey_by_hand(grey):
    """Severity 1 at 48 px: disk of radius 1.5 on the -8..8 grid (the 9 points with X^2 + Y^2 <= 2.25
    are the 3 x 3 square), normalised, GaussianBlur 3 x 3 with sigma 0.1, reflect-101 filtering."""
    disk = np.zeros((17, 17), np.float32)
    disk[7:10, 7:10] = 1.0 / 9.0
    kernel = cv2.GaussianBlur(disk, (3, 3), sigmaX=0.1)[6:11, 6:11]  # its non-zero 5 x 5 support
    x = grey[:, :, 0].astype(np.float32) / np.float32(255.0)
    expected = floor255(cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
    np.testing.assert_array_equal(run(grey, "defocus_blur", 1)[:, :, 0], expected)


# --------------------------------------------------------------------------------------------
# Noise, JPEG, pixelate


def test_gaussian_noise_grey_one_draw_per_pixel(grey):
    z = corruptions.standard_normal(np.random.default_rng(SEED), (48, 48, 1)).astype(np.float64)
    exact = np.clip(grey + 255 * 0.12 * z, 0, 255)  # 255 clip(x + sigma z, 0, 1), in float64
    got = run(grey, "gaussian_noise", 2).astype(int)
    # The float32 arithmetic may floor to the other integer only where the exact value is that close to one.
    differs = got != np.floor(exact)
    assert np.all(np.abs(exact[differs] - np.rint(exact[differs])) < 1e-3) and differs.mean() < 1e-3
    assert np.all(np.abs(got - np.floor(exact)) <= 1)


@pytest.mark.parametrize("severity", (1, 3, 5))
def test_jpeg_grey_is_a_greyscale_jpeg(grey, severity):
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(grey[:, :, 0], mode="L").save(buffer, format="JPEG", quality=quality)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(run(grey, "jpeg_compression", severity)[:, :, 0], expected)


def test_pixelate_grey_by_hand():
    """Severity 5 at 48 px: int(48 * .25) = 12 px blocks of 4 x 4; an image constant on those blocks
    is unchanged, and a block mean is floor-free (PIL rounds; values chosen to be exact)."""
    blocks = (np.arange(144, dtype=np.uint8).reshape(12, 12) * 1).repeat(4, 0).repeat(4, 1)[:, :, None]
    np.testing.assert_array_equal(run(blocks, "pixelate", 5), blocks)
    assert 48 * 0.25 == 12 and math.floor(48 * 0.41) == 19


# --------------------------------------------------------------------------------------------
# Combinations: nested, no rounding between the parts


def _contrast(y, c):
    m = y.mean(dtype=np.float64)
    return np.clip((y - m) * c + m, 0.0, 1.0)


@pytest.mark.parametrize("severity", (1, 2, 3, 4, 5))
def test_contrast_brightness_combinations_by_hand(grey, severity):
    sb, sc = ((1, 1), (2, 1), (2, 2), (2, 3), (3, 4))[severity - 1]
    b, c = (0.1, 0.2, 0.3, 0.4, 0.5)[sb - 1], (0.4, 0.33, 0.24, 0.16, 0.10)[sc - 1]
    x = grey.astype(np.float64) / 255.0
    for name, sign in (("contrast_brightness_plus", 1), ("contrast_brightness_minus", -1)):
        expected = floor255(_contrast(np.clip(x + sign * b, 0, 1), c))
        assert np.abs(run(grey, name, severity).astype(int) - expected).max() == 0, name


def test_pixelate_combination_by_hand(grey):
    """pixelate(4) (uint8, PIL BOX down and up) -> brightness_minus(3) -> contrast(3), in float."""
    small = Image.fromarray(grey[:, :, 0]).resize((int(48 * 0.3), int(48 * 0.3)), Image.BOX)
    pixelated = np.asarray(small.resize((48, 48), Image.BOX)).astype(np.float64)[:, :, None] / 255.0
    expected = floor255(_contrast(np.clip(pixelated - 0.3, 0, 1), 0.24))
    np.testing.assert_array_equal(run(grey, "pixelate_contrast_brightness_minus", 5), expected)


def test_noise_combination_by_hand(grey):
    """gaussian_noise(3) -> brightness_minus(2) -> contrast(3) with no uint8 between the parts."""
    z = corruptions.standard_normal(np.random.default_rng(SEED), (48, 48, 1))
    noisy = np.clip(grey.astype(np.float32) / np.float32(255.0) + np.float32(0.18) * z, 0, 1)
    expected = floor255(_contrast(np.clip(noisy.astype(np.float64) - 0.2, 0, 1), 0.24))
    got = run(grey, "gaussian_noise_contrast_brightness_minus", 4)
    assert np.abs(got.astype(int) - expected).max() <= 1 and np.mean(got == expected) > 0.99


# --------------------------------------------------------------------------------------------
# The other sets on grey


def test_extra_sets_keep_grey_and_saturate_refuses(grey):
    names = [n for n in corruptions.corruption_names("all") if n not in corruptions.CORRUPTION_NAMES]
    for name in names:
        if name in corruptions.GREY_UNSUPPORTED:
            with pytest.raises(ValueError, match="grey"):
                run(grey, name, 3, param_set="scaled")
            continue
        out = run(grey, name, 3, param_set="scaled")
        assert out.shape == (48, 48, 1) and out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, run(grey, name, 3, param_set="scaled"))
    assert corruptions.GREY_UNSUPPORTED == {"saturate"}


def test_face_occlusion_uses_the_grey_of_its_colour(grey):
    """occlusion_eyes at severity 5 (opacity 1) paints its band with the band colour's grey."""
    import corruptions_face

    out = run(grey, "occlusion_eyes", 5)
    top, bottom = corruptions_face.eye_band_rows(5, 48)
    expected = floor255(np.float32(corruptions.grey_level(corruptions_face.EYE_BAND_RGB)))
    assert np.all(out[top + 1:bottom - 1, 20:28] == expected)


# --------------------------------------------------------------------------------------------
# Perturbations: grey in, grey out


@pytest.fixture(scope="module")
def grey_face():
    import synthetic_faces

    rgb = synthetic_faces.sample_face(1, 2)
    return perturbations.aligned_source_face(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None])


def test_every_perturbation_on_grey(grey_face):
    assert grey_face.shape == (130, 130, 1)
    for name in perturbations.perturbation_names("all"):
        out = perturbations.perturb(grey_face, name, np.random.default_rng(3), frames=3)
        assert out.shape == (3, 100, 100, 1) and out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, perturbations.perturb(grey_face, name, np.random.default_rng(3), frames=3))
        flat = perturbations.perturb(grey_face[:, :, 0], name, np.random.default_rng(3), frames=3)
        np.testing.assert_array_equal(flat, out[..., 0])


@pytest.mark.parametrize("name", ("p_motion_blur", "p_gaussian_blur", "p_rotate", "p_scale", "p_shear",
                                  "p_translate", "p_gaussian_noise", "p_shot_noise", "p_tilt", "p_zoom_blur"))
def test_channelwise_perturbations_equal_the_rgb_path(grey_face, name):
    """Per-channel perturbations (noise: the RGB path draws 3 values per pixel, so compare the
    distribution instead) give, on grey, the first channel of the R = G = B face's frames."""
    grey_frames = perturbations.perturb(grey_face, name, np.random.default_rng(5), frames=4)
    rgb_frames = perturbations.perturb(np.repeat(grey_face, 3, axis=2), name, np.random.default_rng(5), frames=4)
    if name in ("p_gaussian_noise", "p_shot_noise"):
        np.testing.assert_array_equal(grey_frames[0], rgb_frames[0, :, :, :1])  # frame 0 is clean
        assert abs(grey_frames[1:].astype(float).std() - rgb_frames[1:].astype(float).std()) < 1.0
    else:
        np.testing.assert_array_equal(grey_frames, rgb_frames[..., :1])


def test_p_brightness_grey_by_hand(grey_face):
    """HSV-free on grey: round-half-even of 255 clip(x / 255 + (i - 15) / 50)."""
    x = grey_face[15:115, 15:115].astype(np.float64) / 255.0
    frames = perturbations.perturb(grey_face, "p_brightness", frames=30)
    for i in (0, 14, 15, 29):
        expected = np.rint(np.clip(x + (i - 15) * 2 / 100, 0, 1) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(frames[i], expected)


def test_p_spatter_grey_frames_are_water_grey(grey_face):
    frames = perturbations.perturb(grey_face, "p_spatter", np.random.default_rng(0), frames=2)
    clean = grey_face[15:115, 15:115]
    assert frames.shape == (2, 100, 100, 1)
    assert np.all(frames.astype(int) >= clean.astype(int))  # water only adds (towards its grey)


# --------------------------------------------------------------------------------------------
# RGB unchanged: per-name digests of an RGB sweep, first computed on the code before grey support
# (same library pins); updated only where an output changed on purpose (the Box-Muller normals and
# 32-bit Poisson words; frost's texture bank).
#
# The sweep runs in a fresh interpreter with OpenCV's AVX-512 kernels and OpenBLAS's AVX-512
# kernels switched off (OPENCV_CPU_DISABLE, OPENBLAS_CORETYPE=Haswell): those float kernels sum in
# another order than the AVX2 ones, and a few outputs (the OpenCV blurs: gaussian_blur, defocus,
# glass_blur, frost, spatter) then differ by a level in a few pixels from one x86 machine to
# another. With both on their AVX2 paths, every x86-64 machine with AVX2 gives these digests.

SWEEP = """
import hashlib, json
import numpy as np
import corruptions, perturbations

def sweep_image(h, w):
    r = np.random.default_rng(123)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 5) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1)
    return np.clip(base + r.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)

digests = {}
image = sweep_image(40, 36)
for name in corruptions.corruption_names("all"):
    digest = hashlib.sha256()
    for severity in (1, 3, 5):
        for colour in ("rgb", "bgr-compat"):
            out = corruptions.corrupt(image, name, severity, np.random.default_rng(7), colour=colour,
                                      param_set="scaled")
            digest.update(out.tobytes())
    digests[name] = digest.hexdigest()[:16]
face = sweep_image(130, 130)
for name in perturbations.perturbation_names("all"):
    frames = perturbations.perturb(face, name, np.random.default_rng(3), frames=4)
    digests[name] = hashlib.sha256(frames.tobytes()).hexdigest()[:16]
print(json.dumps(digests))
"""

SWEEP_DIGESTS = {
    "gaussian_blur": "2a8ee3b10bfbea19",
    "defocus_blur": "33f4bb52308b705d",
    "zoom_blur": "bf44cc3352355b54",
    "motion_blur": "f24a3a86fb6e02e0",
    "gaussian_noise": "78f5fffa05d1babd",
    "shot_noise": "0a8b52864ccf3ecf",
    "contrast_plus": "30476139d928b7f5",
    "contrast": "784effd133f37818",
    "brightness_plus": "e461be3f72d6046d",
    "brightness_minus": "b2a4ab8adfc37dc6",
    "spatter": "d41da63258359d12",
    "pixelate": "5cd88f309a3d5d88",
    "jpeg_compression": "bd52beae8745afd6",
    "contrast_brightness_plus": "97d1ce7c7f547136",
    "contrast_brightness_minus": "a8bc7c1ff6e60d3e",
    "gaussian_noise_contrast_brightness_minus": "06c1a7878f9330b4",
    "motion_blur_contrast_brightness_minus": "189d67f19c4a1ccb",
    "pixelate_contrast_brightness_minus": "858b1fa7b0490edb",
    "impulse_noise": "d2c763d637215b9d",
    "speckle_noise": "c9f275261e29a0cd",
    "glass_blur": "3586387ad8c61cc8",
    "snow": "3d9b0ca9790e64fc",
    "frost": "3be0dd682d78b335",
    "fog": "b9728c5e39709756",
    "elastic_transform": "2e5c72d4f03e247c",
    "saturate": "33e3001a1b4b4c74",
    "occlusion_patch": "65d39aa9fea897c6",
    "occlusion_eyes": "92b09d108ffa9cf3",
    "occlusion_mouth": "9cc86f0154aa86fc",
    "low_resolution": "31d7f7c2d6e8dce1",
    "p_gaussian_noise": "ce202c737a63c38f",
    "p_shot_noise": "783c044224337470",
    "p_gaussian_blur": "2b889af50fec2192",
    "p_motion_blur": "ebf5ea73171df65b",
    "p_spatter": "36e66243d77aacb5",
    "p_brightness": "ffaa680e23fdd2cf",
    "p_translate": "f1b166d88f792428",
    "p_rotate": "6e02bb2a3e1a1af6",
    "p_scale": "076c8392e8d92e56",
    "p_shear": "438e2d661511b237",
    "p_zoom_blur": "30bab72c98250c9e",
    "p_snow": "9b1c0d468971985d",
    "p_tilt": "3aae241c62d95268",
    "p_speckle_noise": "e4c0809f18bf9989",
}


def test_rgb_outputs_are_byte_identical_to_before_grey_support():
    import json
    import os
    import platform
    import subprocess
    import sys
    from pathlib import Path

    features = [token.lstrip("*") for token in cv2.getCPUFeaturesLine().split()]  # "X?" = not on this CPU
    if platform.machine().lower() not in ("x86_64", "amd64") or "AVX2" not in features:
        pytest.skip("the pinned digests are those of the x86-64 AVX2 code paths; this CPU has none")
    # OpenCV's own AVX-512 kernels off, OpenBLAS's Haswell kernels, and Intel IPP's AVX2 code (IPP picks
    # its AVX-512 code for resizes by itself on an AVX-512 CPU: low_resolution's INTER_AREA/CUBIC)
    env = dict(os.environ, OPENCV_CPU_DISABLE="AVX512-SKX", OPENBLAS_CORETYPE="Haswell", OPENCV_IPP="avx2")
    result = subprocess.run([sys.executable, "-c", SWEEP], cwd=Path(__file__).resolve().parents[1], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    digests = json.loads(result.stdout)
    assert set(digests) == set(SWEEP_DIGESTS)
    changed = sorted(name for name in SWEEP_DIGESTS if digests[name] != SWEEP_DIGESTS[name])
    assert not changed, f"outputs changed: {changed}"


def test_fer_export_refuses_saturate_on_grey_up_front():
    import types

    import fer_export
    from cli_common import UserError

    grey_data = types.SimpleNamespace(name="ferplus", grey=True)
    with pytest.raises(UserError, match="saturate is not defined on grey"):
        fer_export.c_job(grey_data, [("contrast", 1), ("saturate", 2)])
    np.testing.assert_array_equal(  # grey goes through natively: no channel copy, shape kept
        fer_export.corrupt_image(np.full((48, 48, 1), 100, np.uint8), "brightness_plus", 1, np.random.default_rng(0)),
        np.full((48, 48, 1), 125, np.uint8))  # floor(255 (100 / 255 + .1)) = floor(125.5)
