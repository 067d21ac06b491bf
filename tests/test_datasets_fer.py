"""FER2013 / FER+ (docs/BENCHMARK.md §9): the streamed pixel reader, the vote filter, splits, errors."""

import csv

import numpy as np
import pytest

import datasets
import synthetic_faces
from cli_common import UserError
from datasets import fer2013 as fer

HEADER_VOTES = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def _pixels(value_of_row):
    return " ".join(str((value_of_row + k) % 256) for k in range(2304))


def _write_pair(root, rows, votes=None, pixel_header="emotion,pixels,Usage"):
    """rows: (emotion, usage) per row; pixel k of row r is (r + k) % 256."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [pixel_header] + [f"{emotion},{_pixels(r)},{usage}" for r, (emotion, usage) in enumerate(rows)]
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    if votes is not None:
        vote_lines = [HEADER_VOTES] + [f"{usage},fer{r:07d}.png,{','.join(map(str, v))}"
                                       for r, ((_, usage), v) in enumerate(zip(rows, votes))]
        (root / "fer2013new.csv").write_text("\n".join(vote_lines) + "\n")
    return root


# docs/BENCHMARK.md §9.2, outcomes worked out by hand.
@pytest.mark.parametrize("votes, legacy, fixed", [
    ([5, 3, 2, 0, 0, 0, 0, 0, 0, 0], None, None),  # T = 10, one winner of 5 <= 5: dropped
    ([4, 4, 1, 1, 0, 0, 0, 0, 0, 0], [.5, .5, 0, 0, 0, 0, 0, 0], [.5, .5, 0, 0, 0, 0, 0, 0]),  # 1s zeroed, T = 8
    ([4, 0, 0, 0, 0, 0, 0, 0, 4, 2], [.4, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]),  # tie with unknown: first wins
    ([4, 0, 0, 0, 0, 0, 0, 0, 0, 6], None, None),  # NF wins
    ([0, 3, 3, 3, 0, 0, 0, 0, 1, 0], None, None),  # three winners
    ([0, 0, 0, 0, 0, 0, 6, 3, 1, 0], [0, 0, 0, 0, 0, 0, 6 / 9, 3 / 9], [0, 0, 0, 0, 0, 0, 6 / 9, 3 / 9]),  # 1 zeroed
    ([0, 0, 0, 0, 0, 0, 6, 2, 2, 0], [0, 0, 0, 0, 0, 0, .6, .2], [0, 0, 0, 0, 0, 0, .75, .25]),
])
def test_ferplus_filter_by_hand(votes, legacy, fixed):
    for norm, expected in (("legacy", legacy), ("fix", fixed)):
        keep, labels = fer.ferplus_filter(np.array([votes]), norm)
        assert keep.tolist() == [expected is not None]
        if expected is not None:
            np.testing.assert_allclose(labels[0], expected, atol=1e-12)


def test_reader_rows_pixels_emotion_usage(tmp_path):
    rows = [(3, "Training"), (0, "PublicTest"), (6, "PrivateTest"), (2, "Training")]
    _write_pair(tmp_path, rows)
    table = fer.read_pixel_csv(tmp_path / "fer2013.csv")
    assert table.pixels.shape == (4, 48, 48) and table.pixels.dtype == np.uint8
    for r in range(4):
        expected = np.array([(r + k) % 256 for k in range(2304)], np.uint8).reshape(48, 48)  # row-major
        np.testing.assert_array_equal(table.pixels[r], expected)
    assert table.emotion.tolist() == [3, 0, 6, 2] and table.usage == [u for _, u in rows]
    assert table.present.all() and table.has_header


def test_fer2013_splits_faithful_and_swapped(tmp_path):
    rows = [(3, "Training"), (0, "PublicTest"), (6, "PrivateTest"), (2, "Training"), (5, "PublicTest")]
    _write_pair(tmp_path, rows)
    data = datasets.get("fer2013", tmp_path)
    assert data.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert data.grey and data.native_size == (48, 48)
    test = data.labels("test")
    assert test.names == ["00001", "00004"] and test.classes.tolist() == [0, 5]
    assert data.labels("validation").names == ["00002"] and data.labels("train").names == ["00000", "00003"]
    image = data.read_image("00004")
    assert image.shape == (48, 48, 1) and image[0, :3, 0].tolist() == [4, 5, 6]
    swapped = datasets.get("fer2013", tmp_path, test_split="PrivateTest")
    assert swapped.labels("test").names == ["00002"] and swapped.labels("validation").names == ["00001", "00004"]
    assert swapped.split_name("test") == "PrivateTest" and swapped.split_name("validation") == "PublicTest"


def test_ferplus_labels_counts_and_norms(tmp_path):
    rows = [(0, "PublicTest")] * 4 + [(0, "Training"), (0, "PrivateTest")]
    votes = [[4, 4, 1, 1, 0, 0, 0, 0, 0, 0],  # kept [.5 .5]
             [5, 3, 2, 0, 0, 0, 0, 0, 0, 0],  # dropped
             [0, 0, 0, 0, 0, 0, 6, 0, 2, 2],  # kept: legacy [.. .6 ..], fix [.. 1 ..]
             [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # NF: dropped
             [10, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]]
    _write_pair(tmp_path, rows, votes)
    fixed = datasets.get("ferplus", tmp_path).labels("test")
    assert fixed.names == ["00000", "00002"] and (fixed.n_total, fixed.n_dropped) == (4, 2)
    np.testing.assert_allclose(fixed.labels, [[.5, .5, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]])
    legacy = datasets.get("ferplus", tmp_path, norm="legacy").labels("test")
    np.testing.assert_allclose(legacy.labels, [[.5, .5, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, .6, 0]], atol=1e-7)
    hard = datasets.get("ferplus", tmp_path, protocol="hard").labels("test")
    np.testing.assert_array_equal(hard.labels, [[1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]])


def test_rows_without_an_image_name_are_counted_apart_from_the_vote_filter(tmp_path):
    """FER+ leaves "Image name" empty for the images it discarded (not faces): they are reported as
    such, not as "dropped by the vote filter" (which they were counted as). Test rows: one kept,
    one the filter drops (5 of 10 votes: not more than half), one unnamed with clear votes."""
    rows = [(0, "PublicTest")] * 3 + [(0, "Training")]
    votes = [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0], [5, 3, 2, 0, 0, 0, 0, 0, 0, 0],
             [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    root = _write_pair(tmp_path, rows, votes)
    lines = (root / "fer2013new.csv").read_text().splitlines()
    lines[3] = lines[3].replace("fer0000002.png", "")
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    test = datasets.get("ferplus", root).labels("test")
    assert test.names == ["00000"]
    assert (test.n_total, test.n_dropped, test.n_unnamed) == (3, 1, 1)
    assert test.count_line() == ("1 test images under the soft label protocol "
                                 "(1 of 3 dropped by the vote filter; 1 without an image name)")


def test_synthetic_pair_matches_an_independent_reading(tmp_path):
    root = synthetic_faces.write_fer_sample(tmp_path / "FERPlus", 30, 12, 10, seed=1)
    with open(root / "fer2013.csv", newline="") as handle:
        pixel_rows = list(csv.reader(handle))[1:]
    with open(root / "fer2013new.csv", newline="") as handle:
        vote_rows = list(csv.reader(handle))[1:]
    assert len(pixel_rows) == len(vote_rows) == 52
    expected_names, expected_labels = [], []
    for r, row in enumerate(vote_rows):  # the filter of docs/BENCHMARK.md §9.2, as plain Python
        if row[0] != "PublicTest" or not row[1]:
            continue
        v = [int(x) if int(x) > 1 else 0 for x in row[2:]]
        top = max(v)
        winners = v.count(top)
        if v.index(top) >= 8 or winners > 2 or winners * top <= 0.5 * sum(v):
            continue
        expected_names.append(f"{r:05d}")
        expected_labels.append([x / sum(v[:8]) for x in v[:8]])
    data = datasets.get("ferplus", root)
    test = data.labels("test")
    assert test.names == expected_names and len(test) >= 6
    np.testing.assert_allclose(test.labels, expected_labels, atol=1e-6)
    for name in test.names[:3]:
        values = [int(x) for x in pixel_rows[int(name)][1].split()]
        np.testing.assert_array_equal(data.read_image(name)[:, :, 0], np.array(values).reshape(48, 48))
    images = data.images(test)
    assert images.shape == (len(test), 48, 48, 1) and images.std() > 10  # faces, not a constant
    again = synthetic_faces.write_fer_sample(tmp_path / "again", 30, 12, 10, seed=1)
    assert (again / "fer2013.csv").read_bytes() == (root / "fer2013.csv").read_bytes()
    assert (again / "fer2013new.csv").read_bytes() == (root / "fer2013new.csv").read_bytes()


def test_fer_csv_export_layout_is_read_line_aligned(tmp_path):
    rows = [(3, "Training"), (0, "PublicTest"), (6, "PrivateTest"), (2, "PublicTest")]
    votes = [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 4
    _write_pair(tmp_path, rows, votes)
    # docs/BENCHMARK.md §9.3: no header (an empty first line), empty lines for other splits, "-1,<pixels>"
    export = tmp_path / "fer2013.PublicTest.x.1.csv"
    export.write_text("\n\n" + "-1," + " ".join(["7"] * 2304) + "\n\n" + "-1," + " ".join(["9"] * 2304) + "\n")
    data = datasets.get("ferplus", tmp_path, pixels=export)
    test = data.labels("test")
    assert test.names == ["00001", "00003"]
    assert data.read_image("00001").max() == 7 and data.read_image("00003").min() == 9
    with pytest.raises(UserError, match=r"fer2013.PublicTest.x.1.csv:2: no image on this line"):
        data.read_image("00000")
    by_emotion = datasets.get("fer2013", tmp_path, pixels=export).labels("test")
    assert by_emotion.names == ["00001", "00003"] and by_emotion.classes.tolist() == [0, 2]


@pytest.mark.parametrize("field, message", [
    (" ".join(["1"] * 2303), "found 2303 values"),
    (" ".join(["1"] * 2303 + ["256"]), "a value '256' that is not an integer 0..255"),
    (" ".join(["1"] * 2303 + ["-3"]), "'-3'"),
    (" ".join(["1"] * 2303 + ["2.5"]), "'2.5'"),
    (" ".join(["1"] * 2300 + ["x"] * 3), "found 2303 values, including 'x'"),
])
def test_bad_pixels_field_names_file_and_line(tmp_path, field, message):
    _write_pair(tmp_path, [(0, "Training")] * 3)
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    lines[3] = f"0,{field},Training"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"fer2013.csv:4: the pixels field must hold 2304 .*{message}"):
        fer.read_pixel_csv(path)


def test_input_errors(tmp_path):
    rows = [(0, "Training"), (1, "PublicTest")]
    votes = [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 2
    _write_pair(tmp_path, rows, votes)
    new = tmp_path / "fer2013new.csv"
    new.write_text(new.read_text() + "Training,fer9.png,1,2,3,4,5,6,7,8,9,10\n")
    with pytest.raises(UserError, match=r"fer2013.csv has 2 data rows but .*fer2013new.csv has 3"):
        datasets.get("ferplus", tmp_path).labels("test")
    new.write_text(f"{HEADER_VOTES}\nTraining,a.png,10,0,0,0,0,0,0,0,0,0\nPublicTest,b.png,9.5,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(UserError, match=r"fer2013new.csv:3: votes must be integers"):
        datasets.get("ferplus", tmp_path).labels("test")
    # the vote file's Usage (which makes the splits) differs from the image file's: files out of step
    new.write_text(f"{HEADER_VOTES}\nTraining,a.png,10,0,0,0,0,0,0,0,0,0\nTraining,b.png,9,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(UserError, match=r"fer2013new.csv:3: Usage 'Training', but .*fer2013.csv:3 says 'PublicTest' "
                                        r"\(1 row\(s\) differ\)"):
        datasets.get("ferplus", tmp_path).labels("test")
    _write_pair(tmp_path, [(0, "Training"), (1, "Training")], votes)
    with pytest.raises(UserError, match=r"no rows with Usage PublicTest \(the test split is empty\)"):
        datasets.get("ferplus", tmp_path).labels("test")
    pixels = tmp_path / "fer2013.csv"  # a header without Usage: every split empty, for that reason
    pixels.write_text("".join(",".join(line.split(",")[:2]) + "\n" for line in pixels.read_text().splitlines()))
    with pytest.raises(UserError, match=r"fer2013.csv: no Usage column \(the header names none\), so no row is in "
                                        r"the train split \(Training\); expected the header 'emotion,pixels,Usage'"):
        datasets.get("fer2013", tmp_path).labels("train")
    import fer_export  # the exports said only "no PublicTest rows to export (the test split is empty)"

    with pytest.raises(UserError, match=r"fer2013.csv: no Usage column \(the header names none\), so no row is in "
                                        r"the test split \(PublicTest\)"):
        fer_export.fer_split_rows(datasets.get("fer2013", tmp_path), "test")
    _write_pair(tmp_path, [(9, "Training"), (1, "PublicTest")])
    with pytest.raises(UserError, match=r"fer2013.csv:2: emotion must be an integer 0..6"):
        datasets.get("fer2013", tmp_path).labels("train")
    (tmp_path / "fer2013.csv").write_text("emotion,image,Usage\n0,1 2,Training\n")
    with pytest.raises(UserError, match=r"fer2013.csv:1: header .* has no 'pixels' column"):
        datasets.get("fer2013", tmp_path).labels("train")
    with pytest.raises(UserError, match=r"FER2013 folder not found"):
        datasets.get("fer2013", tmp_path / "absent")


def test_compensating_bad_rows_in_one_block_are_caught(tmp_path):
    """Row 2 has 2,303 values and row 3 has 2,305: the block's total is right, the rows are not."""
    _write_pair(tmp_path, [(0, "Training")] * 4)
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    lines[2] = "0," + " ".join(["5"] * 2303) + ",Training"
    lines[3] = "0," + " ".join(["5"] * 2305) + ",Training"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"fer2013.csv:3: .*found 2303 values"):
        fer.read_pixel_csv(path)


def test_odd_whitespace_is_accepted_and_workers_do_not_change_the_result(tmp_path):
    rows = [(r % 7, "Training") for r in range(600)]  # more than two blocks
    _write_pair(tmp_path, rows)
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    head, tail = lines[5].split(",", 1)[1].rsplit(",", 1)[0].split(" ", 1)
    lines[5] = f"{rows[4][0]},  {head}  {tail} ,Training"  # leading, double and trailing spaces
    path.write_text("\n".join(lines) + "\n")
    one = fer.read_pixel_csv(path, workers=1)
    three = fer.read_pixel_csv(path, workers=3)
    expected = np.array([[(r + k) % 256 for k in range(2304)] for r in range(600)], np.uint8)
    np.testing.assert_array_equal(one.pixels.reshape(600, 2304), expected)
    np.testing.assert_array_equal(three.pixels, one.pixels)


def test_constant_images_are_kept_with_a_warning(tmp_path, caplog):
    rows = [(0, "PublicTest"), (1, "PublicTest")]
    _write_pair(tmp_path, rows)
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    lines[2] = "1," + " ".join(["77"] * 2304) + ",PublicTest"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        test = datasets.get("fer2013", tmp_path).labels("test")
    assert test.names == ["00000", "00001"]
    assert "1 constant image(s) in PublicTest kept (first on line 3" in caplog.text


# --------------------------------------------------------------------------------------------
# Byte-order marks, CRLF, blank lines and long first lines


def _bom_crlf(path):
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))


def test_utf8_bom_and_crlf_files_read_as_without(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark (and ends lines with CRLF): the first
    header name is still 'emotion' (fer2013.csv) and 'Usage' (fer2013new.csv)."""
    rows = [(4, "Training"), (6, "PublicTest"), (1, "PublicTest"), (3, "PrivateTest")]
    votes = [[0, 0, 0, 9, 1, 0, 0, 0, 0, 0], [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
             [0, 0, 0, 0, 0, 8, 2, 0, 0, 0], [0, 7, 0, 0, 0, 0, 0, 0, 3, 0]]
    _write_pair(tmp_path, rows, votes)
    _bom_crlf(tmp_path / "fer2013.csv")
    _bom_crlf(tmp_path / "fer2013new.csv")
    assert (tmp_path / "fer2013.csv").read_bytes()[:11] == b"\xef\xbb\xbfemotion,"
    test = datasets.get("fer2013", tmp_path).labels("test")
    assert test.names == ["00001", "00002"] and test.classes.tolist() == [6, 1]  # the emotion column
    table = fer.read_pixel_csv(tmp_path / "fer2013.csv")
    assert table.emotion.tolist() == [4, 6, 1, 3] and table.usage == [u for _, u in rows]
    np.testing.assert_array_equal(table.pixels[2].reshape(-1), [(2 + k) % 256 for k in range(2304)])
    ferplus = datasets.get("ferplus", tmp_path).labels("test")
    # row 1: 10 neutral votes -> neutral (0); row 2: 8 disgust, 2 fear -> 0.8 / 0.2 (FER+ order)
    assert ferplus.names == ["00001", "00002"]
    np.testing.assert_allclose(ferplus.labels, [[1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, .8, .2, 0]])


def test_fer2013_from_a_headerless_export_says_so(tmp_path):
    """--dataset fer2013 takes its labels from the root's fer2013.csv; a headerless export there (or
    as the pixels with one there) is named once, as an export without labels."""
    export_text = "\n" + "-1," + " ".join(["7"] * 2304) + "\n"  # one row, no header (docs/BENCHMARK.md §9.3)
    (tmp_path / "fer2013.csv").write_text(export_text)
    with pytest.raises(UserError) as error:
        datasets.get("fer2013", tmp_path).labels("test")
    message = str(error.value)
    assert message.count("fer2013.csv") == 2  # the file once, and the original it should be
    assert message.startswith(f"{tmp_path / 'fer2013.csv'}: a headerless export (--format fer-csv: pixels only, "
                              "no emotion or Usage column, so no labels and no splits); --dataset fer2013 needs "
                              f"the original fer2013.csv (header 'emotion,pixels,Usage') in --data {tmp_path}")
    other = tmp_path / "x.csv"
    other.write_text(export_text)
    with pytest.raises(UserError, match=r"x.csv is a headerless export .*; its labels come from .*fer2013.csv, "
                                        r"but that is a headerless export too"):
        datasets.get("fer2013", tmp_path, pixels=other).labels("test")
    _write_pair(tmp_path, [(0, "PublicTest"), (1, "PublicTest")])
    with pytest.raises(UserError, match=r"x.csv is a headerless export .* of 1 rows; its labels come from "
                                        r".*fer2013.csv, which has 2 data rows"):
        datasets.get("fer2013", tmp_path, pixels=other).labels("test")


@pytest.mark.parametrize("header", [
    "Usage,Image name,happiness,neutral,surprise,sadness,anger,disgust,fear,contempt,unknown,NF",  # two swapped
    "Usage,Image name,a,b,c,d,e,f,g,h,i,j",  # 12 columns of other names
    "Usage,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF",
])
def test_vote_header_with_other_columns_is_refused(tmp_path, header):
    """docs/DATASETS.md: the votes are read by position, so every column name of the header must be
    the FER+ one in its place (a reordered header would put images in the wrong class)."""
    _write_pair(tmp_path, [(0, "Training"), (1, "PublicTest")], [[0, 10, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
    new = tmp_path / "fer2013new.csv"
    new.write_text(new.read_text().replace(HEADER_VOTES, header))
    with pytest.raises(UserError, match=rf"fer2013new.csv:1: expected the header '{HEADER_VOTES}' .*got "
                                        rf"'{header}'"):
        datasets.get("ferplus", tmp_path).labels("test")


def test_vote_header_case_and_spaces_do_not_matter(tmp_path):
    _write_pair(tmp_path, [(0, "Training"), (1, "PublicTest")], [[0, 10, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
    new = tmp_path / "fer2013new.csv"
    new.write_text(new.read_text().replace(HEADER_VOTES, "usage, IMAGE NAME ," + HEADER_VOTES.split(",", 2)[2].upper()))
    test = datasets.get("ferplus", tmp_path).labels("test")
    np.testing.assert_array_equal(test.labels, [[0, 1, 0, 0, 0, 0, 0, 0]])  # 10 happiness votes


def test_blank_line_in_fer2013_csv_is_an_error_naming_it(tmp_path):
    _write_pair(tmp_path, [(0, "Training"), (1, "PublicTest"), (2, "PublicTest")])
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["  "] + lines[2:]) + "\n")  # line 3 holds only spaces
    with pytest.raises(UserError, match=r"fer2013\.csv:3: empty line; every line after the header is one image row"):
        datasets.get("fer2013", tmp_path).labels("test")


def test_trailing_blank_lines_in_fer2013_csv_are_accepted(tmp_path):
    """Blank lines at the end of the file (an editor's habit) hold no row: the same labels as without."""
    votes = [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 8, 2, 0, 0, 0], [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]]
    _write_pair(tmp_path, [(0, "Training"), (1, "PublicTest"), (2, "PublicTest")], votes)
    expected = datasets.get("fer2013", tmp_path).labels("test")
    for name in ("fer2013.csv", "fer2013new.csv"):
        path = tmp_path / name
        path.write_text(path.read_text() + "\n  \n")
    got = datasets.get("fer2013", tmp_path).labels("test")
    assert got.names == expected.names and np.array_equal(got.labels, expected.labels)
    assert len(fer.read_pixel_csv(tmp_path / "fer2013.csv").present) == 3
    ferplus = datasets.get("ferplus", tmp_path).labels("test")  # 3 rows on both sides: they align
    assert ferplus.names == ["00001", "00002"]
    np.testing.assert_allclose(ferplus.labels, [[0, 0, 0, 0, 0, .8, .2, 0], [0, 1, 0, 0, 0, 0, 0, 0]])


def test_missing_header_quotes_only_the_start_of_the_first_line(tmp_path):
    _write_pair(tmp_path, [(0, "Training"), (1, "PublicTest")])
    path = tmp_path / "fer2013.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")  # the header deleted: line 1 is an 8 KB data row
    first = lines[1]
    assert len(first) > 8000
    with pytest.raises(UserError) as error:
        datasets.get("fer2013", tmp_path).labels("test")
    message = str(error.value).splitlines()[0]
    assert message.startswith(f"{path}:1: header {first[:80]!r}... ({len(first):,} bytes) has no 'pixels' column")
    assert len(message) < len(str(path)) + 250


def test_ferplus_drops_a_face_whose_top_vote_is_unknown():
    """docs/BENCHMARK.md §9.2 step 2: argmax 8 (unknown) drops the face, though 6 > 0.5·10 passes step 4."""
    keep, _ = fer.ferplus_filter(np.array([[4, 0, 0, 0, 0, 0, 0, 0, 6, 0]]), "fix")
    assert keep.tolist() == [False]


def test_emotion_7_is_refused_with_its_line(tmp_path):
    """FER2013 labels are 0..6; row 1 of a file with a header is line 3."""
    table = fer.PixelTable(tmp_path / "f.csv", np.zeros((2, 48, 48), np.uint8), np.array([True, True]),
                           np.array([3, 7], np.int16), ["Training", "Training"], True)
    with pytest.raises(UserError, match=r"f\.csv:3: emotion must be an integer 0\.\.6"):
        fer.check_emotions(table, np.array([0, 1]))
