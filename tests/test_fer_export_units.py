"""fer_export's small helpers, each on a case worked out by hand."""

from types import SimpleNamespace

import numpy as np
import pytest

import fer_export
from cli_common import UserError
from datasets import fer2013 as fer


@pytest.mark.parametrize("relative, expected", [("a/b.jpeg", ("a/b.jpg", "jpg")), ("a/b.JPG", ("a/b.jpg", "jpg")),
                                                ("a/b.bmp", ("a/b.png", "png")), ("a/b.webp", ("a/b.png", "png"))])
def test_auto_format_keeps_jpeg_sources_as_jpg(relative, expected):
    """docs/DATASETS.md: the suffix follows the format, `.jpg` for `.jpg`/`.jpeg` sources, `.png` otherwise."""
    assert fer_export.folder_output_name(relative, "auto") == expected


@pytest.mark.parametrize("severities", ["0-5", "0", "1,6"])
def test_severities_outside_1_to_5_are_refused(severities):
    """docs/BENCHMARK.md: severities must lie in 1..5; 0 (the clean images) and 6 are errors."""
    with pytest.raises(UserError):
        fer_export.parse_pairs("all", severities)


def _split_data(tmp_path, votes_usage=None):
    """Three pixel rows; row 1 is an empty line (absent, left out by an earlier fer-csv export)."""
    table = fer.PixelTable(tmp_path / "f.csv", np.zeros((3, 48, 48), np.uint8), np.array([True, False, True]),
                           np.array([0, -1, 1], np.int16), ["PublicTest", "", "PublicTest"], False)
    return SimpleNamespace(votes_path=None if votes_usage is None else tmp_path / "v.csv",
                           votes=SimpleNamespace(usage=votes_usage), table=table,
                           split_name=lambda split: "PublicTest", name="fer2013", root=tmp_path)


@pytest.mark.parametrize("votes_usage", [None, ["PublicTest"] * 3])
def test_split_rows_leave_out_rows_without_an_image(tmp_path, votes_usage):
    """Rows 0 and 2 have images; row 1 is empty, even where the votes file's Usage names it (FER+)."""
    assert fer_export.fer_split_rows(_split_data(tmp_path, votes_usage), "test").tolist() == [0, 2]
