"""Exactness of the fast paths of corruptions.py, checked pixel by pixel against the documented
formulas written out in plain Python floats (docs/BENCHMARK.md §2.2, §2.4): brightness (HSV value
shift, by table), the brightness -> contrast chains, and shift_value on float images with black
pixels. Each expected value is computed here without the module's tables, indexes or OpenCV."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

import corruptions

F32_255 = float(np.float32(255.0))


def _image(seed, shape):
    """Random RGB bytes with black, white, grey and single-channel-peak pixels mixed in."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[0, :5] = 0  # black: V = 0 becomes grey V'
    image[1, :5] = 255
    image[2, :5] = 128
    image[3, :3] = [[255, 0, 0], [0, 1, 0], [0, 0, 3]]
    return image


def _brightness_byte(x_c, v, delta):
    """floor(255 clip(x_c / 255 * V' / V)) in float64, V' = clip(V / 255 + delta), black -> V'."""
    value = v / 255.0
    new_value = min(max(value + delta, 0.0), 1.0)
    y = (x_c / 255.0) * (new_value / value) if v > 0 else new_value
    return math.floor(min(max(y, 0.0), 1.0) * F32_255)


@pytest.mark.parametrize("shape", [(100, 100, 3), (37, 53, 3)])
@pytest.mark.parametrize("name,sign", [("brightness_plus", 1), ("brightness_minus", -1)])
def test_brightness_bytes_are_the_formula_per_pixel(shape, name, sign):
    image = _image(1, shape)
    for severity, delta in zip((1, 2, 3, 4, 5), (0.1, 0.2, 0.3, 0.4, 0.5)):
        out = corruptions.corrupt(image, name, severity, np.random.default_rng(0))
        rows, columns = np.unravel_index(np.arange(0, shape[0] * shape[1], 7), shape[:2])
        for row, column in zip(rows.tolist() + [0, 1, 3, 3, 3], columns.tolist() + [0, 0, 0, 1, 2]):
            pixel = [int(c) for c in image[row, column]]
            expected = [_brightness_byte(c, max(pixel), sign * delta) for c in pixel]
            assert out[row, column].tolist() == expected, (severity, row, column, pixel)


def test_black_pixels_become_grey_and_input_is_untouched():
    image = np.zeros((40, 40, 3), np.uint8)
    before = image.copy()
    out = corruptions.corrupt(image, "brightness_plus", 3)  # V' = 0.3 -> floor(76.5) = 76
    assert np.array_equal(image, before)
    assert (out == 76).all()


@pytest.mark.parametrize("name,pairs", [
    ("contrast_brightness_plus", ((1, 1), (2, 1), (2, 2), (2, 3), (3, 4))),
    ("contrast_brightness_minus", ((1, 1), (2, 1), (2, 2), (2, 3), (3, 4))),
])
def test_brightness_contrast_chain_per_pixel(name, pairs):
    """float32 chain: y = brightness in float32, m = the exact mean of y per channel, then
    float32(y c) + float32(m (1 - c)), clipped, times 255, floored (docs/BENCHMARK.md §2.6)."""
    image = _image(2, (48, 64, 3))
    sign = 1 if name.endswith("plus") else -1
    deltas = (0.1, 0.2, 0.3, 0.4, 0.5)
    factors = (0.4, 0.33, 0.24, 0.16, 0.10)
    pixels = image.reshape(-1, 3).tolist()
    for severity, (sb, sc) in enumerate(pairs, start=1):
        delta, factor = sign * deltas[sb - 1], factors[sc - 1]
        y = []
        for pixel in pixels:
            v = max(pixel)
            value = v / 255.0
            new_value = min(max(value + delta, 0.0), 1.0)
            y.append([float(np.float32(min(max((c / 255.0) * (new_value / value) if v else new_value, 0.0), 1.0)))
                      for c in pixel])
        means = [math.fsum(row[c] for row in y) / len(y) for c in range(3)]
        offsets = [float(np.float32(m * (1.0 - factor))) for m in means]
        c32 = np.float32(factor)
        expected = np.array([[math.floor(min(max(float(np.float32(np.float32(yc) * c32) + np.float32(o)), 0.0), 1.0)
                                        * F32_255) for yc, o in zip(row, offsets)] for row in y])
        out = corruptions.corrupt(image, name, severity).reshape(-1, 3).astype(int)
        # Exact: OpenCV's mean of the float32 values sums them in float64 without rounding here.
        assert np.array_equal(out, expected), (severity, np.abs(out - expected).max())

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shift_value_float_with_black_and_out_of_range_pixels(dtype):
    """shift_value on a float RGB image: colorsys' HSV round trip per pixel; black -> V'."""
    rng = np.random.default_rng(3)
    x = (rng.random((30, 41, 3)) * 1.2 - 0.1).astype(dtype)
    x[0, :6] = 0
    x[1, :3] = -0.05  # negative V counts as black too
    tolerance = 2e-6 if dtype == np.float32 else 1e-12
    for delta in (-0.4, -0.1, 0.2, 0.5):
        out = corruptions.shift_value(x, delta)
        assert out.dtype == dtype and out.shape == x.shape
        for row, column in [(0, 0), (0, 5), (1, 2), *zip(rng.integers(2, 30, 60), rng.integers(0, 41, 60))]:
            r, g, b = (float(c) for c in x[row, column])
            v = max(r, g, b)
            new_value = min(max(v + delta, 0.0), 1.0)
            if v <= 0:
                expected = (new_value,) * 3
            else:
                h, s, _ = colorsys.rgb_to_hsv(r, g, b)
                expected = colorsys.hsv_to_rgb(h, s, new_value) if min(r, g, b) >= 0 else \
                    tuple(c * new_value / v for c in (r, g, b))  # outside the HSV cone: the scale
            expected = [min(max(c, 0.0), 1.0) for c in expected]
            assert np.allclose(out[row, column], expected, rtol=0, atol=tolerance), (row, column, delta)


def test_per_image_values_follow_an_image_changed_in_place():
    """Values shared between the calls on one face (brightness index, float image) are keyed by the
    image's bytes: an image edited in place between calls gets its own new result."""
    image = _image(4, (40, 40, 3))
    first = corruptions.corrupt(image, "brightness_plus", 2)
    blurred = corruptions.corrupt(image, "gaussian_blur", 1)
    image[10:20, 10:20] = [200, 10, 30]
    second = corruptions.corrupt(image, "brightness_plus", 2)
    assert not np.array_equal(first, second)
    for row, column in [(5, 5), (10, 10), (19, 19), (25, 30)]:
        pixel = [int(c) for c in image[row, column]]
        assert second[row, column].tolist() == [_brightness_byte(c, max(pixel), 0.2) for c in pixel]
    # gaussian_blur at s1 (sigma 1) of a flat patch's centre is the patch colour, floored.
    again = corruptions.corrupt(image, "gaussian_blur", 1)
    assert again[15, 15].tolist() == [199, 9, 29] or again[15, 15].tolist() == [200, 10, 30]
    assert not np.array_equal(blurred[15, 15], again[15, 15])
    second[:] = 0  # results are the caller's own, writable arrays: the next call is unaffected
    third = corruptions.corrupt(image, "brightness_plus", 2)
    pixel = [int(c) for c in image[12, 12]]
    assert third[12, 12].tolist() == [_brightness_byte(c, max(pixel), 0.2) for c in pixel] != [0, 0, 0]


def test_float_input_is_not_frozen():
    x = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    corruptions.gaussian_blur(x, 2, None)
    corruptions.defocus_blur(x, 2, None)
    assert x.flags.writeable


def test_pixelate_result_is_the_callers_copy():
    """pixelate keeps its result for the combination; the caller's copy may be changed freely."""
    from PIL import Image

    image = _image(5, (64, 64, 3))
    expected = np.asarray(Image.fromarray(image).resize((26, 26), Image.BOX).resize((64, 64), Image.BOX))
    first = corruptions.corrupt(image, "pixelate", 3)  # int(64 * 0.41) = 26
    assert np.array_equal(first, expected)
    first[:] = 0
    assert np.array_equal(corruptions.corrupt(image, "pixelate", 3), expected)


def test_per_image_store_keeps_small_faces_only():
    """A face's shared values are kept for its next calls; an image above 1 MB is never kept (its
    values would be several times its size), and clear_per_image_values() drops the entry."""
    rng = np.random.default_rng(3)
    face = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    corruptions.clear_per_image_values()
    corruptions.corrupt(face, "brightness_plus", 1)
    assert corruptions._LAST_IMAGE[0] is not None and corruptions._LAST_IMAGE[0][0][2] == face.tobytes()
    corruptions.clear_per_image_values()
    assert corruptions._LAST_IMAGE[0] is None
    big = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)  # 1.08 MB
    out = corruptions.corrupt(big, "brightness_plus", 1)
    assert corruptions._LAST_IMAGE[0] is None
    np.testing.assert_array_equal(out[:4, :4], corruptions.corrupt(big[:100, :100], "brightness_plus", 1)[:4, :4])
