"""The LBP descriptor (docs/BENCHMARK.md §9.6): hand-computed codes and histograms, scikit-image
agreement, the uint8 wrap of the original (legacy) and its fix."""

import cv2
import numpy as np
import pytest
from skimage.feature import local_binary_pattern

import lbp

# 4 x 4 images, P = 4 neighbours at radius 1 (right, up, left, down = bits 0..3), 2 x 2 cells.
TINY = lbp.LbpSettings(width=4, height=4, points=4, radius=1, grid_columns=2, grid_rows=2)


def test_defaults_are_the_original_descriptor():
    settings = lbp.DEFAULT
    assert (settings.width, settings.height, settings.points, settings.radius) == (108, 147, 8, 2.0)
    assert settings.n_bins == 59 and settings.n_cells == 42 and settings.n_features == 2478


def test_hand_computed_codes_and_histograms_on_a_ramp():
    # image[r, c] = c + 1. Bits: right >= centre unless c = 3 (outside is 0); up equal unless r = 0;
    # left is smaller; down equal unless r = 3. P = 4 nri_uniform codes: 0 all-zero, 13 all-one,
    # 14 non-uniform, else 1 + (ones - 1) * 4 + (4 - run start) % 4:
    #   interior c < 3: bits 1101 (b0..b3) -> 3 ones, run starts at b3 -> 1 + 8 + 1 = 10
    #   r = 0, c < 3:   1001 -> 2 ones from b3 -> 1 + 4 + 1 = 6
    #   r = 3, c < 3:   1100 -> 2 ones from b0 -> 1 + 4 + 0 = 5
    #   c = 3 interior: 0101 -> 4 changes -> 14;  (0, 3): 0001 -> 1 + 0 + 1 = 2;  (3, 3): 0100 -> 1 + 0 + 3 = 4
    image = np.tile(np.arange(1, 5, dtype=np.uint8), (4, 1))
    expected_codes = np.array([[6, 6, 6, 2], [10, 10, 10, 14], [10, 10, 10, 14], [5, 5, 5, 4]])
    for backend in lbp.BACKENDS:
        np.testing.assert_array_equal(lbp.lbp_codes(image[None], TINY, backend)[0], expected_codes)
    # Cells column by column: (cols 0-1, rows 0-1), (cols 0-1, rows 2-3), (cols 2-3, rows 0-1), ...
    expected = np.zeros((4, 15), int)
    for cell, codes in enumerate([(6, 6, 10, 10), (10, 10, 5, 5), (6, 2, 10, 14), (10, 14, 5, 4)]):
        for code in codes:
            expected[cell, code] += 1
    features = lbp.describe(image[None, :, :, None], TINY)
    assert features.dtype == np.uint16
    np.testing.assert_array_equal(features[0], expected.ravel())


def test_codes_match_scikit_image_bit_for_bit():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (6, 147, 108), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise.reshape(-1, 108), (7, 7), 0).reshape(noise.shape)
    flat = (noise // 85) * 85  # four grey levels: many exact ties between neighbour and centre
    batch = np.concatenate([noise, smooth, flat])
    ours = lbp.lbp_codes(batch)
    for image, codes in zip(batch, ours):
        reference = local_binary_pattern(image, 8, 2, method="nri_uniform").astype(np.uint8)
        np.testing.assert_array_equal(codes, reference)
    assert set(np.unique(ours)) == set(range(59))  # every code reached, so the table is covered


def test_nri_uniform_table_counts():
    table = lbp.nri_uniform_table(8)
    assert table[0] == 0 and table[255] == 57 and table[0b01010101] == 58
    # 2 constant + 8 * 7 uniform patterns with distinct codes; the other 198 share code 58.
    assert len(set(table[table != 58])) == 58 and np.count_nonzero(table == 58) == 256 - 58


def test_grey_and_resize_equal_the_originals_per_image_opencv_calls():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 100, 100, 3), dtype=np.uint8)
    grey = lbp.resize(lbp.to_grey(rgb))
    for image, ours in zip(rgb, grey):
        bgr = np.ascontiguousarray(image[..., ::-1])  # the original read BGR with cv2.imread
        reference = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (108, 147))
        np.testing.assert_array_equal(ours, reference)
    keep = lbp.resize(lbp.to_grey(rgb), lbp.LbpSettings(keep_ar=True))
    reference = cv2.resize(cv2.cvtColor(np.ascontiguousarray(rgb[0, ..., ::-1]), cv2.COLOR_BGR2GRAY), (147, 147))
    np.testing.assert_array_equal(keep[0], reference[:, 19:127])  # the original's columns 19..126


def test_float_input_is_rounded_to_uint8():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (2, 100, 100, 1), dtype=np.uint8)
    jittered = grey.astype(np.float32) + rng.uniform(-0.4, 0.4, grey.shape).astype(np.float32)
    np.testing.assert_array_equal(lbp.describe(jittered), lbp.describe(grey))


def test_constant_face_legacy_wrap_and_fix():
    # A constant image: inside the face every neighbour equals the centre -> all ones -> code 57;
    # a cell away from the border has all of its 18 x 21 = 378 pixels on code 57.
    face = np.full((1, 100, 100, 1), 7, np.uint8)
    fixed = lbp.describe(face).reshape(42, 59)
    legacy = lbp.describe(face, lbp.LbpSettings(legacy=True)).reshape(42, 59)
    inner_cell = 1 * 7 + 1  # column 1, row 1 (column-major)
    assert fixed[inner_cell, 57] == 378 and fixed[inner_cell].sum() == 378
    assert legacy.dtype == np.uint8 and legacy[inner_cell, 57] == 378 - 256  # wrapped, as the original
    np.testing.assert_array_equal(legacy, (fixed.astype(np.int64) % 256).astype(np.uint8))
    assert fixed.sum() == 108 * 147


def test_result_independent_of_chunks_and_threads():
    rng = np.random.default_rng(4)
    faces = rng.integers(0, 256, (11, 100, 100, 3), dtype=np.uint8)
    one = lbp.describe(faces, chunk=11, threads=1)
    many = lbp.describe(faces, chunk=3, threads=2)
    np.testing.assert_array_equal(one, many)
    seen = []
    lbp.describe(faces, chunk=4, threads=2, progress=seen.append)
    assert sorted(seen) == [3, 4, 4]
    # chunk 0 means one image at a time (its rows were left uninitialised)
    np.testing.assert_array_equal(lbp.describe(faces, chunk=0, threads=1), one)


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="shape"):
        lbp.describe(np.zeros((2, 3, 4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match="equal cells"):
        lbp.LbpSettings(width=100)
    with pytest.raises(ValueError, match="backend"):
        lbp.lbp_codes(np.zeros((1, 4, 4), np.uint8), backend="opencl")
