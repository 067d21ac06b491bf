"""The corruption sets beyond the 18 (docs/BENCHMARK.md §2.9, §11.1) and the ImageNet-P extras (§3.7).

Every new corruption x severity on a sample face and on a real photograph shipped with scikit-image
(the astronaut's face); parameters checked independently; the Hendrycks-way references of
bench/reference_corruptions.py as oracles; the P extras' frame formulas checked on frames.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage
import skimage.data

import corruptions
import corruptions_face
import corruptions_imagenet
import perturbations
import perturbations_extra

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import reference_corruptions  # noqa: E402

EXTRA = ("impulse_noise", "speckle_noise", "glass_blur", "snow", "frost", "fog", "elastic_transform", "saturate")
FACE = ("occlusion_patch", "occlusion_eyes", "occlusion_mouth", "low_resolution")
RANDOM = {"impulse_noise", "speckle_noise", "glass_blur", "snow", "frost", "fog", "elastic_transform",
          "occlusion_patch"}


@pytest.fixture(scope="module")
def images():
    import synthetic_faces

    astronaut = skimage.data.astronaut()[20:220, 140:340]  # her face, 200 x 200
    return {"sample": synthetic_faces.sample_face(0, 3),
            "astronaut": cv2.resize(astronaut, (100, 100), interpolation=cv2.INTER_AREA)}


def corrupt(image, name, severity, seed=0, param_set="scaled"):
    return corruptions.corrupt(image, name, severity, np.random.default_rng(seed), param_set=param_set)


def test_registry_sets_and_families():
    assert corruptions.corruption_names("rafdb") == corruptions.CORRUPTION_NAMES and len(corruptions.CORRUPTION_NAMES) == 18
    assert corruptions.corruption_names("imagenet-extra") == EXTRA
    assert corruptions.corruption_names("face") == FACE
    assert corruptions.corruption_names("all") == corruptions.CORRUPTION_NAMES + EXTRA + FACE
    assert {corruptions.family(n) for n in EXTRA} == {"imagenet-extra"} and corruptions.family("fog") == "imagenet-extra"
    assert corruptions.family("occlusion_eyes") == "face" and corruptions.family("contrast") == "rafdb"
    with pytest.raises(ValueError, match="corruption set"):
        corruptions.corruption_names("imagenet")
    assert perturbations.perturbation_names("imagenet-extra") == ("p_zoom_blur", "p_snow", "p_tilt", "p_speckle_noise")
    assert len(perturbations.perturbation_names("all")) == 14 and len(perturbations.PERTURBATIONS) == 10


def test_rafdb_manifest_parameter_sets_unchanged():
    """Adding the sets changes nothing of the 18 / the 10: the manifests' parameter digests are pinned.
    They changed once on purpose, with the noise samplers (NOISE_SAMPLERS, docs/BENCHMARK.md §2.7:
    trees written with the old samplers differ in their noisy folders and must not be resumed)."""
    import rafdb_aug_dataset
    import rafdb_perturb_dataset

    assert rafdb_aug_dataset.PARAM_SET == "rafdb-c-18x5-3acbfd399c58"
    assert rafdb_perturb_dataset.PARAM_SET == "rafdb-p-10x30-4e1dbdd1d4dc"


def test_param_set_is_required_and_checked(images):
    image = images["sample"]
    with pytest.raises(ValueError, match="param_set must be one of"):
        corruptions.corrupt(image, "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no values for it"):
        corruptions.corrupt(image, "snow", 1, np.random.default_rng(0), param_set="imagenet64")
    corruptions.corrupt(image, "occlusion_eyes", 1, param_set=None)  # the face set ignores it


@pytest.mark.parametrize("name", EXTRA + FACE)
def test_every_severity_dtype_shape_untouched_seeds(images, name):
    for label, image in images.items():
        before = image.copy()
        for severity in (1, 2, 3, 4, 5):
            out = corrupt(image, name, severity, seed=1)
            assert out.dtype == np.uint8 and out.shape == image.shape, (label, severity)
            np.testing.assert_array_equal(image, before)
            np.testing.assert_array_equal(out, corrupt(image, name, severity, seed=1))  # same seed
            if name in RANDOM:
                assert not np.array_equal(out, corrupt(image, name, severity, seed=2)), (label, severity)
            else:
                np.testing.assert_array_equal(out, corrupt(image, name, severity, seed=2))


def _mean_abs_diff(clean, out):
    return np.abs(clean.astype(float) - out).mean() / 255


def _damage(clean, out):
    """1 - Pearson correlation of the grey images: structure lost (a uniform brightening, as frost's
    weight 1 on the image at s = 1, costs nothing)."""
    a = cv2.cvtColor(clean, cv2.COLOR_RGB2GRAY).astype(float).ravel()
    b = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(float).ravel()
    correlation = np.corrcoef(a, b)[0, 1] if b.std() > 0 else 0.0
    return 1 - correlation


# Exceptions, measured and kept (FAITHFUL to the tables): elastic_transform's severities 1-2 are large
# smooth warps, 3-5 small rough ones (ImageNet-C's own non-monotone table); glass_blur's iterations run
# 2, 1, 3, 2, 2, so s2 and s4 can fall below s1 and s3; snow's s3 layer (threshold .9) is sparser than s2.
NOT_MONOTONE = {"elastic_transform", "glass_blur", "snow"}


# saturate lowers the saturation at s = 1-2 and raises it at 3-5: measured by the colour change
# (mean |diff|), not by the grey structure, which oversaturation at s 3-5 changes little. fog's s3
# and s4 share the strength 2.5 (only the plasma's roughness differs): the structure lost is equal
# (measured 1 - r = .817 and .815 on the sample face), the veil (mean |diff|) still grows.
DAMAGE = {"saturate": _mean_abs_diff, "fog": _mean_abs_diff}


@pytest.mark.parametrize("name", sorted(set(EXTRA + FACE) - NOT_MONOTONE))
def test_damage_rises_with_severity(images, name):
    measure = DAMAGE.get(name, _damage)
    for label, image in images.items():
        damage = [np.mean([measure(image, corrupt(image, name, s, seed=k)) for k in range(2)]) for s in range(1, 6)]
        assert all(b > a for a, b in zip(damage, damage[1:])), (label, np.round(damage, 3))


@pytest.mark.parametrize("name", sorted(NOT_MONOTONE))
def test_non_monotone_ones_still_damage(images, name):
    for image in images.values():
        assert min(_damage(image, corrupt(image, name, s)) for s in range(1, 6)) > 0.01


# --------------------------------------------------------------------------------------------
# Parameter spot checks, computed independently


def test_glass_vectorised_equals_hendrycks_loop(images):
    x = images["astronaut"]
    for delta in (1, 2, 4):
        offsets = np.random.default_rng(delta).integers(-delta, delta, size=(100 - 2 * delta, 100 - 2 * delta, 2))
        expected = reference_corruptions.glass_loop(x.copy(), delta, offsets)
        np.testing.assert_array_equal(corruptions_imagenet.glass_shuffle(x, delta, offsets), expected)


@pytest.mark.parametrize("delta", [1, 2, 3, 4, 8, 64, 65])
def test_glass_offsets_equal_numpy_integers(delta):
    """glass_offsets reads power-of-two spans straight from PCG64's raw words: the same values as
    rng.integers and the same generator state afterwards (also from a generator holding a buffered
    32-bit half, and for spans that fall back to rng.integers)."""
    shape = (100, 100) if delta < 40 else (200, 150)
    size = (2, shape[0] - 2 * delta, shape[1] - 2 * delta, 2)
    for seed in range(4):
        expected_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed)
        if seed % 2:  # an int32 draw leaves the high half of a 64-bit output buffered
            expected_rng.integers(0, 5, dtype=np.int32), rng.integers(0, 5, dtype=np.int32)
        expected = expected_rng.integers(-delta, delta, size=size)
        np.testing.assert_array_equal(corruptions_imagenet.glass_offsets(shape, delta, 2, rng), expected)
        assert rng.integers(0, 9, 5, dtype=np.int32).tolist() == expected_rng.integers(0, 9, 5, dtype=np.int32).tolist()
        assert rng.random(3).tolist() == expected_rng.random(3).tolist()


@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_glass_sources_equal_offsets(delta):
    """glass_sources (the flat source index of every visit, straight from PCG64's raw words) gives
    visited + dy W + dx of glass_offsets' offsets and leaves the generator in the same state; also
    on the fallback paths (an odd span, a buffered 32-bit half, another bit generator)."""
    shape = (100, 90)
    visited = corruptions_imagenet._glass_geometry(*shape, delta)[0]
    for seed in range(3):
        def make():
            if seed == 2:
                return np.random.Generator(np.random.MT19937(seed))
            rng = np.random.default_rng(seed)
            if seed == 1:
                rng.integers(0, 5, dtype=np.int32)
            return rng
        expected_rng, rng = make(), make()
        offsets = corruptions_imagenet.glass_offsets(shape, delta, 3, expected_rng).astype(np.intp)
        expected = (offsets[..., 1] * shape[1] + offsets[..., 0]).reshape(3, -1) + visited
        np.testing.assert_array_equal(corruptions_imagenet.glass_sources(shape, delta, 3, rng), expected)
        assert rng.random(3).tolist() == expected_rng.random(3).tolist()


def test_glass_scaled_parameters():
    # scaled at 100 px: sigma x 100/224, delta rounded (at least 1), iterations unchanged
    assert corruptions_imagenet.glass_parameters(5, "scaled", 100) == pytest.approx((1.5 * 100 / 224, 2, 2))
    assert corruptions_imagenet.glass_parameters(1, "scaled", 100)[1] == 1
    assert corruptions_imagenet.glass_parameters(2, "imagenet64", 100) == (0.5, 1, 1)
    assert corruptions_imagenet.elastic_parameters(3, "imagenet224", 100) == pytest.approx((12.2, 2.44, 4.88))


@pytest.mark.parametrize("name", ["fog", "elastic_transform", "saturate", "glass_blur", "snow"])
def test_against_hendrycks_reference(images, name):
    """Same draws (same rng calls) as the reference: fog and elastic exact; saturate's closed form,
    glass_blur's float32 blur and snow's OpenCV steps within 2 grey levels."""
    tolerance = 0 if name in ("fog", "elastic_transform") else 2
    for image in images.values():
        for severity in (1, 3, 5):
            ours = corrupt(image, name, severity, seed=4, param_set="imagenet224")
            rng = np.random.default_rng(4)
            if name == "snow":  # its layer's normals: the toolkit's Box-Muller sampler (docs/BENCHMARK.md §2.7)
                rng = reference_corruptions.NormalFrom(rng, corruptions.standard_normal)
            ref = reference_corruptions.EXTRA_REFERENCE[name](image, severity, rng)
            assert np.abs(ours.astype(int) - ref).max() <= tolerance, (name, severity)


def test_impulse_noise_fraction_and_values():
    flat = np.full((100, 100, 3), 128, np.uint8)
    for severity, amount in enumerate((0.03, 0.06, 0.09, 0.17, 0.27), start=1):
        out = corrupt(flat, "impulse_noise", severity, param_set="imagenet224")
        changed = out != 128
        assert set(np.unique(out[changed])) <= {0, 255}
        assert abs(changed.mean() - amount) < 4 * math.sqrt(amount * (1 - amount) / out.size) + 1e-4
        assert abs((out == 255).mean() - (out == 0).mean()) < 0.01
    out64 = corrupt(flat, "impulse_noise", 1, param_set="imagenet64")
    assert abs((out64 != 128).mean() - 0.01) < 0.003


def test_speckle_sigma():
    flat = np.full((200, 200, 3), 100, np.uint8)
    for severity, sigma in enumerate((0.15, 0.2, 0.35, 0.45, 0.6), start=1):
        out = corrupt(flat, "speckle_noise", severity).astype(float)
        # x (1 + N(0, sigma)) at x = 100/255, floored: std of the relative change is sigma (no clipping
        # below 1 / x = 2.55, i.e. > 2.5 sigma above for the largest sigma; lower tail clips at 0).
        relative = (out + 0.5) / 100 - 1
        if sigma <= 0.35:
            assert abs(relative.std() - sigma) < 0.02 * sigma + 0.004, (severity, relative.std())


def test_saturate_formula_on_pixels():
    pixel = np.zeros((40, 40, 3), np.uint8)
    pixel[:] = (200, 100, 50)  # V = .784, min = .196, S = .75
    out = corrupt(pixel, "saturate", 1)  # S' = .3 * .75 = .225
    v, s_new = 200 / 255, 0.225
    expected = [v - s_new * v * (v - c / 255) / (v - 50 / 255) for c in (200, 100, 50)]
    np.testing.assert_array_equal(out[0, 0], np.floor(np.array(expected) * 255 + 1e-9).astype(np.uint8))
    grey = np.full((40, 40, 3), 120, np.uint8)  # S = 0, hue 0: red stays V, green and blue V (1 - .2)
    out = corrupt(grey, "saturate", 5)
    np.testing.assert_array_equal(out[0, 0], [120, math.floor(120 * 0.8 + 1e-9), math.floor(120 * 0.8 + 1e-9)])


def test_fog_plasma_size_and_range():
    plasma = corruptions_imagenet.plasma_fractal(128, 2.0, np.random.default_rng(0))
    assert plasma.shape == (128, 128) and plasma.min() == 0 and plasma.max() == 1
    assert corruptions_imagenet.next_power_of_two(100) == 128 and corruptions_imagenet.next_power_of_two(224) == 256
    # fog on a constant image: x + c * plasma, times max / (max + c): brightest value max(x) exactly
    flat = np.full((100, 130, 3), 102, np.uint8)
    out = corrupt(flat, "fog", 1).astype(float)
    assert out.max() <= 102 and out.min() >= math.floor(102 * 0.4 / 1.9) - 1


def test_frost_weights_and_texture():
    """frost on a black image is frost_weight x the tinted window of a bank texture that the image's
    generator picks (index, then top row, then left column, as ImageNet-C picks photo and crop)."""
    black = np.zeros((100, 100, 3), np.uint8)
    bank = corruptions_imagenet.frost_bank((100, 100), 100 / 224)
    assert len(bank) == 6 and all(t.shape == (200, 200) and t.dtype == np.float32 for t in bank)
    assert not bank[0].flags.writeable and len({t.tobytes() for t in bank}) == 6
    tint = np.float32([0.86, 0.94, 1.0])
    tinted = bank[0][..., None] * tint
    assert 0.3 < tinted.mean() < 0.5 and tinted[..., 2].mean() > tinted[..., 0].mean()  # blue-white
    windows = set()
    for seed in range(4):
        for severity, (_, frost_weight) in enumerate(corruptions_imagenet.FROST, start=1):
            draws = np.random.default_rng(seed)
            index, top, left = int(draws.integers(6)), int(draws.integers(101)), int(draws.integers(101))
            windows.add((index, top, left))
            window = bank[index][top:top + 100, left:left + 100, None] * tint
            expected = np.floor(np.clip(frost_weight * window, 0, 1) * 255 + 1e-6)
            out = corrupt(black, "frost", severity, seed=seed)
            assert np.abs(out - expected).max() <= 1, (seed, severity)
    assert len(windows) == 4  # the seed moves the window


def test_frost_bank_is_the_same_in_every_process():
    """The bank comes from its own fixed seed: a fresh interpreter draws the same textures."""
    import hashlib
    import subprocess

    code = ("import hashlib, corruptions_imagenet as c; h = hashlib.sha256()\n"
            "for t in c.frost_bank((64, 48), 0.5): h.update(t.tobytes())\nprint(h.hexdigest())")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    digest = hashlib.sha256()
    for texture in corruptions_imagenet.frost_bank((64, 48), 0.5):
        assert texture.shape == (128, 96)
        digest.update(texture.tobytes())
    assert result.stdout.strip() == digest.hexdigest()


def test_face_geometry():
    grey = np.full((100, 100, 3), 200, np.uint8)
    band = corrupt(grey, "occlusion_eyes", 5)  # height 26 px centred on row 40, columns 13..87, opaque
    dark = np.argwhere(band[..., 0] < 100)
    assert dark[:, 0].min() == 27 and dark[:, 0].max() == 52 and dark[:, 1].min() == 13 and dark[:, 1].max() == 86
    for severity, share in enumerate((0.5, 0.6, 0.7, 0.8, 0.9), start=1):
        mask = corrupt(grey, "occlusion_mouth", severity)
        covered = np.argwhere(np.abs(mask.astype(int) - 200).sum(axis=2) > 60)
        top = 97 - share * (97 - 58)  # chin 0.97 H, nose tip 0.58 H
        assert abs(covered[:, 0].min() - top) <= 1 and covered[:, 0].max() >= 95, severity
    for severity, side in enumerate((15, 22, 30, 38, 46), start=1):
        left, top, got = corruptions_face.patch_box(severity, (100, 100), np.random.default_rng(severity))
        assert got == side and 0 <= left <= 100 - side and 0 <= top <= 100 - side


def test_low_resolution_is_area_then_bicubic(images):
    image = images["astronaut"]
    for severity, factor in enumerate((2, 3, 4, 6, 8), start=1):
        out = corrupt(image, "low_resolution", severity)
        if 100 % factor == 0:  # area downsampling by an integer factor is the block mean (numpy here)
            size = 100 // factor
            small = np.rint(image.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))).astype(np.uint8)
            expected = cv2.resize(small, (100, 100), interpolation=cv2.INTER_CUBIC)
            # OpenCV rounds the block means in fixed point: 1 level there, up to 2 after the bicubic gain
            assert np.abs(out.astype(int) - expected).max() <= 2, severity
        else:
            assert cv2.resize(out, (33, 33), interpolation=cv2.INTER_AREA).std() > 0


# --------------------------------------------------------------------------------------------
# ImageNet-P extras: the frame formulas on frames


@pytest.fixture(scope="module")
def face130(images):
    return cv2.resize(skimage.data.astronaut()[0:260, 110:370], (130, 130), interpolation=cv2.INTER_AREA)


def test_p_extras_shape_and_seeds(face130):
    for name in perturbations.perturbation_names("imagenet-extra"):
        frames = perturbations.perturb(face130, name, np.random.default_rng(0))
        assert frames.shape == (30, 100, 100, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, perturbations.perturb(face130, name, np.random.default_rng(0)))
        differs = not np.array_equal(frames, perturbations.perturb(face130, name, np.random.default_rng(1)))
        assert differs == (name in perturbations_extra.RANDOM_PERTURBATIONS), name


def test_p_zoom_blur_frames(face130):
    """Frame i = mean of the clean face and scipy.ndimage.zoom centre zooms by 1 + 0.004 j, j = 1..i."""
    frames = perturbations.perturb(face130, "p_zoom_blur", frames=6)
    x = face130 / 255.0
    np.testing.assert_array_equal(frames[0], face130[15:115, 15:115])
    total = x.copy()
    for i in range(1, 6):
        zoom = 1 + 0.004 * i
        crop = int(math.ceil(130 / zoom))
        top = (130 - crop) // 2
        zoomed = scipy.ndimage.zoom(x[top:top + crop, top:top + crop], (zoom, zoom, 1), order=1)
        trim = (zoomed.shape[0] - 130) // 2
        total += zoomed[trim:trim + 130, trim:trim + 130]
        expected = np.floor(np.clip(total / (i + 1), 0, 1) * 255)[15:115, 15:115]
        assert np.abs(frames[i] - expected).max() <= 1, i


def test_p_tilt_angles_on_frames():
    """A bright dot at (x, y) lands where the pinhole projection of the plane turned by pitch = yaw =
    (i - 15) degrees puts it (computed here with explicit rotation matrices)."""
    face = np.zeros((130, 130, 3), np.uint8)
    face[40:43, 90:93] = 255  # dot centred at (91, 41)
    frames = perturbations.perturb(face, "p_tilt")
    focal = math.hypot(130, 130)
    for i in (0, 7, 15, 22, 29):
        t = math.radians(i - 15)
        ry = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
        rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
        point = rx @ ry @ np.array([91 - 65, 41 - 65, 0.0]) + [0, 0, focal]
        expected = (focal * point[0] / point[2] + 65 - 15, focal * point[1] / point[2] + 65 - 15)
        weights = frames[i][..., 0].astype(float)
        yy, xx = np.mgrid[0:100, 0:100]
        found = ((weights * xx).sum() / weights.sum(), (weights * yy).sum() / weights.sum())
        assert np.hypot(found[0] - expected[0], found[1] - expected[1]) < 0.6, (i, found, expected)
    np.testing.assert_array_equal(frames[15], face[15:115, 15:115])  # 0 degrees: the clean frame


def test_p_speckle_sigma_on_frames():
    face = np.full((130, 130, 3), 120, np.uint8)
    frames = perturbations.perturb(face, "p_speckle_noise", np.random.default_rng(0)).astype(float)
    assert (frames[0] == 120).all()
    relative = frames[1:] / 120 - 1  # rounding adds variance (1/12) / 120^2, negligible
    assert abs(relative.std() - 0.05) < 0.001 and abs(relative.mean()) < 0.001


def test_p_snow_angles_on_frames(face130):
    """Frame i is the snow of the fixed layer motion-blurred at 4 i - 150 degrees (radius 14, sigma 4)."""
    rng = np.random.default_rng(5)
    frames = perturbations.perturb(face130, "p_snow", rng, frames=4)
    layer = corruptions_imagenet.snow_layer((130, 130), 0.05, 0.3, 3, 0.5, np.random.default_rng(5))
    for i in range(4):
        flakes = corruptions.motion_blur_op(np.repeat(layer[..., None], 3, 2), 14, 4, 4 * i - 150)[..., 0] / 255.0
        x = face130 / np.float32(255)
        grey = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]
        snowy = 0.85 * x + 0.15 * np.maximum(x, grey * 1.5 + 0.5) + flakes[..., None] + flakes[::-1, ::-1, None]
        expected = np.floor(np.clip(snowy, 0, 1) * 255)[15:115, 15:115]
        assert np.abs(frames[i] - expected).max() <= 1, i


# --------------------------------------------------------------------------------------------
# The speed-ups keep the definitions (docs/CORRUPTIONS.md, "Speed")


@pytest.mark.parametrize("shape,sigma", [((100, 100), 170.8), ((100, 100), 19.52), ((100, 100), 2.44),
                                         ((37, 53), 9.0), ((130, 130), 0.7)])
def test_smooth_reflect_equals_scipy_gaussian(shape, sigma):
    """The cached-matrix gaussian equals scipy's reflect gaussian_filter (truncate 3) to 1e-12,
    including sigmas far larger than the image (elastic s = 1: 171 px on 100 px)."""
    field = np.random.default_rng(1).uniform(-1, 1, size=shape)
    expected = scipy.ndimage.gaussian_filter(field, sigma, mode="reflect", truncate=3.0)
    assert np.abs(corruptions_imagenet.smooth_reflect(field, sigma) - expected).max() < 1e-12
    operator = corruptions_imagenet.reflect_gaussian_operator(shape[0], sigma)
    assert not operator.flags.writeable
    # An impulse at row 0 spreads as the kernel folded at the half-sample mirror: for a small
    # sigma, weight at distance d is exp(-d^2 / 2 sigma^2) (+ its mirror image at distance d + 1).
    if sigma < 1:
        weights = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
        weights /= weights.sum()
        assert operator[0, 0] == pytest.approx(weights[2] + weights[1])  # itself + mirror of row 0
        assert operator[1, 0] == pytest.approx(weights[3] + weights[0])


def test_to_float01_is_division_by_255():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = corruptions.to_float01(values)
    assert out.dtype == np.float32
    assert np.array_equal(out, np.array([np.float32(v / 255.0) for v in range(256)], np.float32).reshape(16, 16))


def test_zoom_operator_equals_sparse_and_scipy_zoom():
    plane = np.random.default_rng(2).random((100, 100))
    for zoom in (2, 2.5, 3, 4.5):
        dense = corruptions_imagenet.zoom_operator(100, float(zoom))
        assert np.array_equal(dense, corruptions.zoom_axis_matrix(100, zoom).toarray())
        expected = reference_corruptions.clipped_zoom(plane[..., None], zoom)[..., 0]
        assert np.abs(corruptions_imagenet.clipped_zoom(plane, zoom) - expected).max() < 1e-9


def test_saturate_grey_and_black_pixels():
    """Grey (S = 0) pixels: (V, V (1 - S'), V (1 - S')) with S' = clip(0 * a + b); black stays black."""
    pixels = np.array([[[100, 100, 100], [0, 0, 0], [255, 255, 255]]], np.uint8)
    # a = 20, b = 0.2: S' = 0.2 for every grey pixel (the function itself: the image is 1 x 3 px)
    out = corruptions_imagenet.saturate(pixels, 5, np.random.default_rng(0), param_set="scaled")
    expected = np.array([[[100, 80, 80], [0, 0, 0], [255, 204, 204]]], np.uint8)  # 100 x 0.8, 255 x 0.8
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape,spread", [((100, 100, 3), 0.6), ((100, 100, 3), 4.0), ((37, 53, 3), 40.0),
                                          ((64, 48, 1), 300.0), ((100, 100, 3), 5000.0)])
def test_bilinear_reflect_is_bit_identical_to_map_coordinates(shape, spread):
    """elastic_transform's sampler gives scipy's map_coordinates(order=1, mode='reflect') float32
    bits exactly: displacements from sub-pixel to many periods of the mirror, points exactly on the
    folds (-1, -0.5, n - 0.5, n) and integer coordinates."""
    rng = np.random.default_rng(int(spread))
    height, width = shape[:2]
    image = rng.random(shape, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    dy = (rng.standard_normal((height, width)) * spread).astype(np.float32)
    dx = (rng.standard_normal((height, width)) * spread).astype(np.float32)
    dy[0, :4] = (-1, -0.5, 0, -2 * height)
    dx[0, :4] = (width - 0.5, width, 0.25 - xx[0, 2], 2 * width)
    dy[1] = np.round(dy[1])
    rows, columns = yy + dy, xx + dx
    expected = np.stack([scipy.ndimage.map_coordinates(image[..., c], np.stack([rows, columns]), order=1,
                                                       mode="reflect") for c in range(shape[2])], axis=-1)
    out = corruptions_imagenet.bilinear_reflect(image, rows.copy(), columns.copy())
    assert out.dtype == np.float32 and out.shape == shape
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_p_extras_frame_region_shortcuts_equal_whole_face(face130):
    """p_tilt warps only up to the ROI's far corner and p_snow blurs and blends only the frame's
    region: the bytes equal the whole-130-px computation cropped, written out here."""
    frames = perturbations.perturb(face130, "p_tilt", frames=30)
    for i in (0, 4, 15, 23, 29):
        whole = cv2.warpPerspective(face130, perturbations_extra.tilt_homography(i - 15), (130, 130),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        np.testing.assert_array_equal(frames[i], whole[15:115, 15:115])
    frames = perturbations.perturb(face130, "p_snow", np.random.default_rng(3), frames=30)
    layer = corruptions_imagenet.snow_layer((130, 130), 0.05, 0.3, 3, 0.5, np.random.default_rng(3))
    x = face130.astype(np.float32) / np.float32(255.0)
    for i in (0, 9, 29):
        flakes = corruptions.motion_blur_op(np.repeat(layer[..., None], 3, 2), 14, 4, 4 * i - 150)[..., 0]
        whole = corruptions_imagenet.add_snow(x, flakes / np.float32(255.0), 0.85)
        np.testing.assert_array_equal(frames[i], (np.clip(whole, 0, 1) * 255.0).astype(np.uint8)[15:115, 15:115])


def test_snow_layer_threshold_keeps_exactly_the_values_at_or_above_it(monkeypatch):
    """snow_layer's cv2.threshold (to zero at or below the next float64 under the threshold) equals
    numpy's layer[layer < threshold] = 0, then clip, x 255, floor -- also for values on the threshold."""
    for threshold in (0.5, 0.85, 0.9):
        values = np.array([threshold, np.nextafter(threshold, 0), np.nextafter(threshold, 2), -0.3, 0.0, 1.7,
                           np.nextafter(np.nextafter(threshold, 0), 0), 0.95])
        layer = np.resize(values, (8, 16))
        monkeypatch.setattr(corruptions_imagenet, "clipped_zoom", lambda plane, zoom, layer=layer: layer.copy())
        expected = layer.copy()
        expected[expected < threshold] = 0
        expected = (np.clip(expected, 0, 1) * 255).astype(np.uint8)
        got = corruptions_imagenet.snow_layer((8, 16), 0.1, 0.3, 2, threshold, np.random.default_rng(0))
        np.testing.assert_array_equal(got, expected)


def test_add_snow_is_the_written_out_float32_formula(images):
    """add_snow's equal-shape path gives exactly the float32 formula with numpy broadcasts."""
    x = images["astronaut"].astype(np.float32) / np.float32(255.0)
    flakes = np.random.default_rng(4).random((100, 100), dtype=np.float32) * np.float32(0.6)
    for blend in (0.8, 0.55):
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
        expected = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
        expected = np.clip(expected + flakes[..., None] + flakes[::-1, ::-1, None], 0.0, 1.0)
        assert expected.dtype == np.float32
        np.testing.assert_array_equal(corruptions_imagenet.add_snow(x, flakes, blend), expected)


def test_glass_blur_packed_pixels_equal_the_loop(images):
    """glass_blur moves RGB pixels as 32-bit words: the bytes equal blur -> uint8 -> Hendrycks'
    per-pixel loop on the three-byte pixels (same offsets) -> blur -> floor, written out here."""
    image = images["astronaut"]
    for severity, param_set in ((2, "imagenet224"), (5, "scaled")):
        sigma, delta, iterations = corruptions_imagenet.glass_parameters(severity, param_set, 100)
        rng = np.random.default_rng(severity)
        x = (corruptions.gaussian_blur_op(image / np.float32(255.0), sigma) * np.float32(255.0)).astype(np.uint8)
        offsets = rng.integers(-delta, delta, size=(iterations, 100 - 2 * delta, 100 - 2 * delta, 2))
        for iteration in range(iterations):
            x = reference_corruptions.glass_loop(x.copy(), delta, offsets[iteration])
        expected = corruptions.to_uint8(corruptions.gaussian_blur_op(x / np.float32(255.0), sigma))
        out = corrupt(image, "glass_blur", severity, seed=severity, param_set=param_set)
        np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------------------------
# Every severity of the documented tables (a row of a table may differ from its neighbours)


def test_glass_parameters_imagenet224_severity_4():
    """(σ, δ, iterations) at s = 4 from the ImageNet-C column of docs/BENCHMARK.md: (1.1, 3, 2)."""
    assert corruptions_imagenet.glass_parameters(4, "imagenet224", 224) == (1.1, 3, 2)


@pytest.mark.parametrize("name", ["glass_blur", "snow", "saturate", "fog"])
def test_against_hendrycks_reference_at_severities_2_and_4(name):
    """Hendrycks' code (bench/reference_corruptions.py) with the documented ImageNet-C rows at s = 2, 4."""
    image = cv2.resize(skimage.data.astronaut()[0:300, 100:400], (100, 100), interpolation=cv2.INTER_AREA)
    tolerance = 0 if name == "fog" else 2
    for severity in (2, 4):
        ours = corrupt(image, name, severity, seed=4, param_set="imagenet224")
        rng = np.random.default_rng(4)
        if name == "snow":
            rng = reference_corruptions.NormalFrom(rng, corruptions.standard_normal)
        ref = reference_corruptions.EXTRA_REFERENCE[name](image, severity, rng)
        assert np.abs(ours.astype(int) - ref).max() <= tolerance, (name, severity)


def test_elastic_on_a_non_square_image_matches_the_reference():
    """Hendrycks' elastic_transform centres its affine triangle at (H // 2, W // 2): checked at H 100, W 80."""
    image = cv2.resize(skimage.data.astronaut()[0:300, 100:400], (80, 100), interpolation=cv2.INTER_AREA)
    ours = corrupt(image, "elastic_transform", 3, seed=4, param_set="imagenet224")
    ref = reference_corruptions.EXTRA_REFERENCE["elastic_transform"](image, 3, np.random.default_rng(4))
    assert np.abs(ours.astype(int) - ref).max() == 0


def test_speckle_every_severity_by_hand():
    """speckle_noise is x + x·N(0, σ) with σ .15, .2, .35, .45, .6 (docs/BENCHMARK.md), floored to uint8."""
    image = np.full((50, 50, 3), 100, np.uint8)
    for severity, sigma in enumerate((0.15, 0.2, 0.35, 0.45, 0.6), start=1):
        out = corrupt(image, "speckle_noise", severity, seed=severity)
        n = corruptions.standard_normal(np.random.default_rng(severity), image.shape).astype(np.float64)
        expected = np.floor(np.clip(100 / 255 * (1 + sigma * n), 0, 1) * 255)
        assert np.abs(out - expected).max() <= 1, severity


# --------------------------------------------------------------------------------------------
# Face corruptions: the documented table of docs/BENCHMARK.md, every severity


def test_low_resolution_every_factor_by_hand():
    """Factors 2, 3, 4, 6, 8 (docs/BENCHMARK.md face table): area mean over factor² blocks, then bicubic."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8), (5, 5), 2)
    for severity, factor in enumerate((2, 3, 4, 6, 8), start=1):
        out = corrupt(image, "low_resolution", severity)
        size = 120 // factor
        small = np.rint(image.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))).astype(np.uint8)
        expected = cv2.resize(small, (120, 120), interpolation=cv2.INTER_CUBIC)
        assert np.abs(out.astype(int) - expected).max() <= 2, severity


def test_eye_band_and_mask_opacity_every_severity():
    """Opacities .6–1.0 (eye band, colour 10) and .80–1.0 (mask, red 150) from docs/BENCHMARK.md's face table."""
    grey = np.full((100, 100, 3), 200, np.uint8)
    for severity, opacity in enumerate((0.6, 0.7, 0.8, 0.9, 1.0), start=1):
        out = corrupt(grey, "occlusion_eyes", severity)
        value = 200 / 255 * (1 - opacity) + opacity * 10 / 255
        assert abs(int(out[40, 50, 0]) - math.floor(value * 255)) <= 1, severity
    for severity, opacity in enumerate((0.80, 0.85, 0.90, 0.95, 1.0), start=1):
        out = corrupt(grey, "occlusion_mouth", severity)
        value = 200 / 255 * (1 - opacity) + opacity * 150 / 255  # red channel of (150, 200, 230)
        assert abs(int(out[90, 50, 0]) - math.floor(value * 255)) <= 1, severity


class _FixedUniform:
    """An rng whose uniform() returns the given values in turn."""

    def __init__(self, values):
        self.values = list(values)

    def uniform(self, low, high):
        return self.values.pop(0)


def test_patch_is_clamped_to_the_right_and_bottom_edges():
    """s = 5: side int(.46·100) = 46; a centre at (85, 95) puts the square flush with the edges: 100 − 46 = 54."""
    left, top, side = corruptions_face.patch_box(5, (100, 100), _FixedUniform([85.0, 95.0]))
    assert (left, top, side) == (54, 54, 46)


def test_patch_on_a_wide_image_reaches_the_top_row():
    """On a 100 (H) × 300 (W) image the vertical centre is drawn over the face's rows (×H), so top 0 occurs."""
    tops = [corruptions_face.patch_box(1, (100, 300), np.random.default_rng(s))[1] for s in range(200)]
    assert min(tops) == 0


@pytest.mark.parametrize("severity, strength, decay", [(1, 0.4, 3), (2, 0.7, 3), (3, 1.0, 2.5), (4, 1.5, 2),
                                                       (5, 2.0, 1.75)])
def test_fog_imagenet64_rows(severity, strength, decay):
    """(strength, wibble decay) of the 64 px column of docs/BENCHMARK.md's fog row, applied by hand."""
    image = np.full((64, 64, 3), 100, np.uint8)
    out = corrupt(image, "fog", severity, seed=3, param_set="imagenet64")
    plasma = corruptions_imagenet.plasma_fractal(64, decay, np.random.default_rng(3))[:64, :64]
    x = 100 / 255
    expected = np.floor(np.clip((x + strength * plasma) * x / (x + strength), 0, 1) * 255)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1
