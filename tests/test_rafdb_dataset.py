"""The data layer: vote filter, both label protocols, the hold-out split, errors (BENCHMARK.md §1)."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import rafdb_dataset as rd
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]


# BENCHMARK.md §1.3 test vectors, outcomes worked out by hand there.
@pytest.mark.parametrize(
    "p, expected",
    [
        ([.05, .1, .05, .6, .1, .05, .05], [0, 0, 0, 1, 0, 0, 0]),
        ([.4, .4, .2, 0, 0, 0, 0], [.4, .4, .2, 0, 0, 0, 0]),
        ([0, 0, 0, .5, 0, 0, .5], [0, 0, 0, .5, 0, 0, .5]),
        ([.3, .3, .3, .1, 0, 0, 0], None),  # three winners
        ([.35, .25, .2, .2, 0, 0, 0], None),  # 3.5 <= 0.5 * 10
        ([.1, .2, .25, .45, 0, 0, 0], None),  # boundary: T = 9, 4.5 <= 4.5
    ],
)
def test_vote_filter_spec_vectors(p, expected):
    result = rd.vote_filter(p)
    if expected is None:
        assert result is None
    else:
        np.testing.assert_allclose(result, expected, atol=1e-12)


def test_vote_filter_renormalises_after_zeroing_small_votes():
    # d = (6, 2, 1, 1, 0, 0, 0): the two votes of 1 (p = .1) are zeroed, T = 8, M = 6, 6 > 4.
    np.testing.assert_allclose(rd.vote_filter([.6, .2, .1, .1, 0, 0, 0]), [.75, .25, 0, 0, 0, 0, 0])


def test_two_way_tie_goes_to_lower_index():
    labels = rd.LabelSet(names=["test_0001"], labels=np.array([[0, 0, 0, .5, 0, 0, .5]], np.float32),
                         protocol="soft", split="test")
    assert labels.classes.tolist() == [3]


def test_name_from_row_matches_the_original():
    assert rd.name_from_row(0) == "train_00001"
    assert rd.name_from_row(12270) == "train_12271"
    assert rd.name_from_row(12271) == "test_0001"
    assert rd.name_from_row(15338) == "test_3068"


def test_class_order_is_the_original():
    assert rd.CLASS_NAMES == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def test_both_protocols_on_the_sample_tree(sample_tree):
    hard_test = rd.load_labels(sample_tree, "test", "hard")
    soft_test = rd.load_labels(sample_tree, "test", "soft")
    hard_train = rd.load_labels(sample_tree, "train", "hard")
    test_count = len(rd.list_aligned(sample_tree, "test"))
    train_count = len(rd.list_aligned(sample_tree, "train"))
    assert len(hard_test) == hard_test.n_total == test_count
    assert len(hard_train) == train_count
    assert soft_test.n_total == test_count
    assert len(soft_test) + soft_test.n_dropped == test_count
    assert np.allclose(hard_test.labels.sum(axis=1), 1) and set(np.unique(hard_test.labels)) <= {0.0, 1.0}
    assert np.allclose(soft_test.labels.sum(axis=1), 1, atol=1e-6)
    # Soft labels are exactly the filtered CSV rows: recompute row by row from the file.
    rows = [list(map(float, line.split(","))) for line in
            (sample_tree / rd.CSV_FILE).read_text().splitlines() if line.strip()]
    for name, label in zip(soft_test.names, soft_test.labels):
        row = rows[train_count + int(name.split("_")[1]) - 1]
        d = [10 * v if 10 * v > 1 else 0.0 for v in row]
        np.testing.assert_allclose(label, np.array(d) / sum(d), atol=1e-6)


def test_holdout_split_is_disjoint_stratified_and_seeded(sample_tree):
    train = rd.load_labels(sample_tree, "train", "hard")
    fit_a, val_a = rd.holdout_split(train, 0.2, seed=1)
    fit_b, val_b = rd.holdout_split(train, 0.2, seed=1)
    _, val_c = rd.holdout_split(train, 0.2, seed=2)
    assert not set(fit_a.names) & set(val_a.names)
    assert sorted(fit_a.names + val_a.names) == sorted(train.names)
    assert val_a.names == val_b.names
    assert val_a.names != val_c.names
    per_class = rd.class_counts(train)
    assert rd.class_counts(val_a).tolist() == [int(round(0.2 * n)) for n in per_class]


def _copy_tree(sample_tree, tmp_path):
    root = tmp_path / "RAF-DB"
    shutil.copytree(sample_tree, root)
    return root


def test_malformed_csv_row_names_file_and_line(sample_tree, tmp_path):
    root = _copy_tree(sample_tree, tmp_path)
    csv = root / rd.CSV_FILE
    lines = csv.read_text().splitlines()
    lines[2] = "0.5,0.5,abc,0,0,0,0"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"distribute_basic\.csv:3: a value is not a number"):
        rd.load_labels(root, "test", "soft")
    lines[2] = "0.5,0.6,0,0,0,0,0"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"distribute_basic\.csv:3: values sum to 1\.1"):
        rd.load_labels(root, "test", "soft")


def test_malformed_partition_line_and_escaping_path(sample_tree, tmp_path):
    root = _copy_tree(sample_tree, tmp_path)
    part = root / rd.PARTITION_FILE
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:4] + ["test_0001.jpg 9"] + lines[5:]) + "\n")
    with pytest.raises(UserError, match=r"list_patition_label\.txt:5: label must be an integer 1\.\.7"):
        rd.load_labels(root, "test", "hard")
    part.write_text("\n".join(["../../etc/passwd.jpg 1"] + lines[1:]) + "\n")
    with pytest.raises(UserError, match=r"list_patition_label\.txt:1: .* outside the dataset root"):
        rd.load_labels(root, "test", "hard")


def test_missing_tree_and_missing_image(sample_tree, tmp_path):
    with pytest.raises(UserError, match="expected layout"):
        rd.load_labels(tmp_path / "nowhere", "test", "hard")
    root = _copy_tree(sample_tree, tmp_path)
    victim = rd.aligned_path(root, "test_0002")
    victim.unlink()
    with pytest.raises(UserError, match=r"test_0002_aligned\.jpg: image not found; the hard label list names "
                                        r"it but the tree .* is incomplete .*scripts that offer --allow-missing"):
        rd.load_labels(root, "test", "hard")
    labels = rd.load_labels(root, "test", "hard", allow_missing=True)
    assert labels.n_missing == 1 and "test_0002" not in labels.names


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "test_0001_aligned.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"test_0001_aligned\.jpg: not a readable image"):
        rd.read_image(bad)


def test_read_image_is_rgb(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), image[..., ::-1])  # OpenCV writes BGR
    assert rd.read_image(path)[0, 0].tolist() == [200, 0, 0]
    assert rd.decode_image(rd.encode_image(image, "png"), "x").tolist() == image.tolist()


def test_landmarks_parse_tabs_and_spaces_and_report_lines(tmp_path):
    path = tmp_path / "test_0001_manu_attri.txt"
    path.write_text("10.5\t20\n30 40.25\n1\t2\n3 4\n5\t6\n0\n1\n2\n")
    np.testing.assert_allclose(rd.read_landmarks(path), [[10.5, 20], [30, 40.25], [1, 2], [3, 4], [5, 6]])
    path.write_text("10.5\t20\n30 forty\n1\t2\n3 4\n5\t6\n")
    with pytest.raises(UserError, match=r"manu_attri\.txt:2: expected two numbers"):
        rd.read_landmarks(path)
    with pytest.raises(UserError, match="landmark file not found"):
        rd.read_landmarks(tmp_path / "missing.txt")


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "rafdb_dataset.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_summary_and_user_error_exit_code(sample_tree, tmp_path):
    result = _run("summary", "--rafdb", sample_tree, "--all-protocols")
    assert result.returncode == 0, result.stderr
    assert "surprise" in result.stdout and "test/hard" in result.stdout
    result = _run("summary", "--rafdb", tmp_path / "missing")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "missing" in result.stderr
    assert result.stdout == ""  # no "RAF-DB tree: ..." header and class list for a tree that is not there


def test_cli_sample_refuses_non_empty_folder(tmp_path):
    target = tmp_path / "tree"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    result = _run("sample", "--out", target, "--train", 3, "--test", 2)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # Not a sample this command wrote: --force would be refused too, so it is not what the error suggests.
    assert (f"{target}: already exists and is not empty; choose another --out (it is not a sample this "
            f"command wrote, so --force would not replace it either)") in result.stderr
    assert (target / "keep.txt").exists()


def test_cli_sample_force_touches_no_other_folder(tmp_path):
    """Replacing a sample builds the new tree under fresh hidden names: folders named like the
    sample plus .new / .old (a user's backup) were deleted. The replaced folder has the usual mode."""
    sample = tmp_path / "faces"
    for sibling in ("faces.new", "faces.old"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "mine.txt").write_text(sibling)
    assert _run("sample", "--out", sample, "--train", 2, "--test", 1).returncode == 0
    result = _run("sample", "--out", sample, "--train", 2, "--test", 1)
    assert result.returncode == 2
    assert f"{sample}: already exists and is not empty; pass --force to replace it" in result.stderr
    # what a killed --force leaves (hidden names only this command makes) is removed by the next one
    for stale in (".faces.new-abcd1234", ".faces.old-wxyz_987"):
        (tmp_path / stale / "basic").mkdir(parents=True)
    result = _run("sample", "--out", sample, "--train", 2, "--test", 1, "--force", "--seed", 5)
    assert result.returncode == 0, result.stderr
    assert "--seed 5:" in (sample / ".synthetic-sample").read_text()
    for sibling in ("faces.new", "faces.old"):
        assert (tmp_path / sibling / "mine.txt").read_text() == sibling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "faces.new", "faces.old"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(sample.stat().st_mode) == 0o777 & ~umask


def test_cli_sample_force_replaces_only_a_sample_folder(tmp_path):
    """--force on a folder the command did not write (a real dataset under the same name, a thesis):
    refused, nothing deleted (it was deleted); on a sample folder it writes, replaced; '--out .' is
    named plainly (it was "PosixPath('.') has an empty name")."""
    precious = tmp_path / "RAF-DB"
    (precious / "basic").mkdir(parents=True)
    (precious / "distribute_basic.csv").write_text("a real copy's labels")
    result = _run("sample", "--out", precious, "--train", 2, "--test", 1, "--force")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{precious}: --force replaces only a sample folder this command wrote" in result.stderr
    assert (precious / "distribute_basic.csv").read_text() == "a real copy's labels"
    sample = tmp_path / "sample"
    for seed in (1, 2):
        result = _run("sample", "--out", sample, "--train", 2, "--test", 1, "--force", "--seed", seed)
        assert result.returncode == 0, result.stderr
        assert (sample / ".synthetic-sample").read_text().startswith(f"written by rafdb_dataset.py sample "
                                                                   f"--dataset rafdb --seed {seed}:")
    assert (sample / "basic/Image/aligned/test_0001_aligned.jpg").is_file()
    result = subprocess.run([sys.executable, str(REPO / "rafdb_dataset.py"), "sample", "--out", ".", "--force"],
                            capture_output=True, text=True, cwd=sample)
    assert result.returncode == 2 and "error: --out .: name a folder for the sample (not the current folder)" \
        in result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--test", 10000, "--test: expected 1..9999 images (RAF-DB's 4-digit ids), got 10000"),
    ("--train", 100000, "--train: expected 1..99999 images (RAF-DB's 5-digit ids), got 100000"),
    ("--test", 0, "--test: expected 1..9999 images"),
])
def test_cli_sample_counts_out_of_range_exit_2(tmp_path, flag, value, message):
    result = _run("sample", "--out", tmp_path / "tree", flag, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "tree").exists()


def test_cli_sample_library_value_error_is_user_error(tmp_path, monkeypatch):
    import synthetic_faces

    def refuse(root, **kwargs):
        raise ValueError(f"{root}: exists and is not an empty folder; choose a new --out")

    monkeypatch.setattr(synthetic_faces, "write_sample_tree", refuse)
    with pytest.raises(UserError, match=r"tree: exists and is not an empty folder"):
        rd.main(["sample", "--out", str(tmp_path / "tree"), "--train", "2", "--test", "2"])


def test_cli_sample_and_summary_for_the_other_layouts(tmp_path):
    fer = tmp_path / "FERPlus"
    result = _run("sample", "--dataset", "ferplus", "--out", fer, "--train", 40, "--test", 12, "--val", 9)
    assert result.returncode == 0, result.stderr
    pixel_lines = (fer / "fer2013.csv").read_text().splitlines()
    assert pixel_lines[0] == "emotion,pixels,Usage" and len(pixel_lines) == 1 + 40 + 12 + 9
    assert [line.rsplit(",", 1)[1] for line in pixel_lines[1:]] == ["Training"] * 40 + ["PublicTest"] * 12 + ["PrivateTest"] * 9
    assert all(len(line.split(",")[1].split()) == 2304 for line in pixel_lines[1:])
    result = _run("summary", "--dataset", "fer2013", "--data", fer, "--test-split", "PrivateTest")
    assert result.returncode == 0, result.stderr
    assert "test/hard (PrivateTest) N=    9" in result.stdout and "validation/hard (PublicTest) N=   12" in result.stdout
    result = _run("check-labels", "--dataset", "ferplus", "--data", fer)
    assert result.returncode == 0 and "FER2013 emotion vs FER+ label" in result.stdout
    faces = tmp_path / "faces"
    result = _run("sample", "--dataset", "folder", "--out", faces, "--train", 14, "--test", 7, "--val", 0)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in faces.iterdir()) == [".synthetic-sample", "test", "train"]  # --force's marker
    assert sum(1 for _ in (faces / "test").rglob("*.jpg")) == 7
    result = _run("summary", "--dataset", "folder", "--data", faces)
    assert result.returncode == 0 and "test/hard    N=    7" in result.stdout
    assert "validation   none: training holds out a seeded, stratified part of train" in result.stdout
    (faces / "test").rename(faces / "val")  # a tree without test/ says so
    result = _run("summary", "--dataset", "folder", "--data", faces)
    assert result.returncode == 0 and "validation/hard (val) N=    7" in result.stdout
    assert "test         none (no test/ folder)" in result.stdout
    result = _run("summary", "--dataset", "folder")
    assert result.returncode == 2 and "needs --data DIR" in result.stderr


def test_partition_labels_1_to_7_become_classes_0_to_6(tmp_path):
    """docs/BENCHMARK.md: list_patition_label.txt labels are 1..7, class index = label − 1 (7 -> 6, not 0)."""
    (tmp_path / "basic/EmoLabel").mkdir(parents=True)
    (tmp_path / rd.PARTITION_FILE).write_text("test_0001.jpg 1\ntest_0002.jpg 7\ntrain_00001.jpg 4\n")
    assert rd.read_partition(tmp_path) == [("test_0001", 0), ("test_0002", 6), ("train_00001", 3)]


def test_missing_soft_label_csv_points_to_the_hard_protocol(sample_tree, tmp_path):
    root = _copy_tree(sample_tree, tmp_path)
    (root / rd.CSV_FILE).unlink()
    with pytest.raises(UserError, match=r"distribute_basic\.csv: soft-label CSV \(.*--labels hard reads "
                                        r"basic/EmoLabel/list_patition_label\.txt only\) not found"):
        rd.load_labels(root, "test", "soft")
    assert len(rd.load_labels(root, "test", "hard")) > 0


def test_an_image_listed_twice_in_the_partition_list_is_an_error(tmp_path):
    """test_0004 on lines 2 and 4 (test_0005's line edited): it would be scored twice with two
    labels and test_0005 never, with no word; the error names both lines."""
    (tmp_path / "basic/EmoLabel").mkdir(parents=True)
    (tmp_path / rd.PARTITION_FILE).write_text("test_0003.jpg 1\ntest_0004.jpg 2\ntest_0006.jpg 3\ntest_0004.jpg 5\n")
    with pytest.raises(UserError) as error:
        rd.read_partition(tmp_path)
    assert str(error.value) == (f"{tmp_path / rd.PARTITION_FILE}:4: test_0004.jpg is listed again (first on "
                                f"line 2); each image has one line")


@pytest.mark.parametrize("dataset", ["rafdb", "ferplus", "folder"])
def test_cli_sample_into_an_unwritable_place_is_one_line(tmp_path, dataset):
    """--out under a regular file (as under a read-only folder): exit 2 and one line naming --out
    (it was a FileExistsError / PermissionError traceback)."""
    (tmp_path / "f").write_text("x")
    result = _run("sample", "--dataset", dataset, "--out", str(tmp_path / "f" / "R"), "--train", "3", "--test", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (f"error: --out {tmp_path / 'f' / 'R'}: {tmp_path / 'f'} is a file, not a "
                                     f"folder; expected a path in a writable folder")


@pytest.mark.parametrize("dataset", ["rafdb", "folder"])
def test_cli_sample_stopped_by_sigterm_leaves_nothing(tmp_path, dataset):
    """SIGTERM (a scheduler stopping the job) while the sample is written: exit 143, a line saying
    so, and neither the sample nor its hidden temporary folder left (the folder stayed behind, and
    no later run removed it)."""
    import signal
    import time

    out = tmp_path / "R"
    process = subprocess.Popen([sys.executable, str(REPO / "rafdb_dataset.py"), "sample", "--dataset", dataset,
                                "--out", str(out), "--train", "20000", "--test", "500"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".R.*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".R.*")), "the writer never started"
    time.sleep(0.3)  # some files written
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert f"terminated (SIGTERM) before {out} was finished" in err and "Traceback" not in err
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_summary_of_a_folder_dataset_shows_which_folder_became_which_class(tmp_path):
    """Folders named in another language, mapped by classes.txt: summary names each folder's class
    (it printed the canonical names only, so the mapping could not be checked)."""
    root = tmp_path / "faces"
    for split, folder, count in (("train", "Traurig", 2), ("train", "Froh", 3), ("test", "Traurig", 1),
                                 ("test", "Froh", 1)):
        for index in range(count):
            path = root / split / folder / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((40, 40, 3), 30 * index, np.uint8))
    (root / "classes.txt").write_text("Froh = happiness\nTraurig = sadness\n")
    result = _run("summary", "--dataset", "folder", "--data", root)
    assert result.returncode == 0, result.stderr
    assert "class folders: Froh/ -> happiness, Traurig/ -> sadness" in result.stdout.splitlines()
