"""End-to-end tests of rafdb_perturb_dataset.py on (a part of) the synthetic sample tree."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rafdb_dataset
import rafdb_perturb_dataset
from cli_common import UserError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "rafdb_perturb_dataset.py")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def mini_tree(sample_tree, dest, count):
    """A RAF-DB tree holding the first ``count`` test images of the sample tree."""
    root = Path(dest) / "RAF-DB"
    for sub in (rafdb_dataset.ALIGNED_DIR, rafdb_dataset.ORIGINAL_DIR, rafdb_dataset.ANNOTATION_DIR):
        (root / sub).mkdir(parents=True)
    for index in range(1, count + 1):
        stem = f"test_{index:04d}"
        for path in (rafdb_dataset.aligned_path(sample_tree, stem), rafdb_dataset.original_path(sample_tree, stem),
                     rafdb_dataset.landmarks_path(sample_tree, stem)):
            shutil.copy(path, root / path.relative_to(sample_tree))
    return root


def tree_bytes(out):
    """{relative path: bytes} of every file except the manifest."""
    out = Path(out)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def tree4(sample_tree, tmp_path_factory):
    return mini_tree(sample_tree, tmp_path_factory.mktemp("tree4"), 4)


@pytest.fixture(scope="module")
def reference_export(tree4, tmp_path_factory):
    """An uninterrupted 1-worker export of the 4-image tree, all perturbations."""
    out = tmp_path_factory.mktemp("ref") / "out"
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--workers", 1, "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_layout_and_manifest(reference_export):
    folders = sorted(p.name for p in reference_export.iterdir() if p.is_dir())
    assert folders == sorted(f"rafdb.test.{name}" for name in rafdb_perturb_dataset.perturbations.PERTURBATIONS)
    for folder in folders:
        names = sorted(p.name for p in (reference_export / folder).iterdir())
        assert names == [f"test_{k:04d}_{i:02d}.jpg" for k in range(1, 5) for i in range(30)]
    manifest = json.loads((reference_export / "manifest.json").read_text())
    assert manifest["kind"] == "rafdb-p" and manifest["complete"]
    assert manifest["params"]["source"] == "landmarks" and manifest["params"]["seed"] == 0
    assert len(manifest["files"]) == 4 * 10 * 30
    assert run_cli("verify", "--out", reference_export, "--quiet").returncode == 0


def test_translate_frames_are_the_aligned_crop(reference_export, tree4):
    # Frame i of p_translate is the aligned 130 px face's [15:115, i:i+100], JPEG q95.
    import perturbations

    image = rafdb_dataset.read_image(rafdb_dataset.original_path(tree4, "test_0002"))
    landmarks = rafdb_dataset.read_landmarks(rafdb_dataset.landmarks_path(tree4, "test_0002"))
    face = perturbations.align_face(image, landmarks)
    for i in (0, 29):
        expected = rafdb_dataset.encode_image(np.ascontiguousarray(face[15:115, i : i + 100]))
        assert (reference_export / f"rafdb.test.p_translate/test_0002_{i:02d}.jpg").read_bytes() == expected


def test_deterministic_across_worker_counts(reference_export, tree4, tmp_path):
    out = tmp_path / "out2"
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--workers", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    assert tree_bytes(out) == tree_bytes(reference_export)
    manifest = json.loads((out / "manifest.json").read_text())
    reference = json.loads((reference_export / "manifest.json").read_text())
    assert manifest["files"] == reference["files"]


def test_seed_changes_random_sequences_only(reference_export, tree4, tmp_path):
    out = tmp_path / "seed1"
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--workers", 1, "--quiet", "--seed", 1,
                     "--perturbations", "p_shot_noise,p_rotate")
    assert result.returncode == 0, result.stderr
    for rel in ("rafdb.test.p_rotate/test_0001_03.jpg", "rafdb.test.p_shot_noise/test_0001_00.jpg"):
        assert (out / rel).read_bytes() == (reference_export / rel).read_bytes()
    rel = "rafdb.test.p_shot_noise/test_0001_05.jpg"
    assert (out / rel).read_bytes() != (reference_export / rel).read_bytes()


def test_resume_after_kill(tree4, reference_export, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, SCRIPT, "export", "--rafdb", str(tree4), "--out", str(out),
                                "--workers", "1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        # Units run image by image, each writing all 10 folders; p_shear is the last one written.
        last = out / "rafdb.test.p_shear"
        if last.is_dir() and len(os.listdir(last)) >= 30:  # the first of 4 images is done
            break
        time.sleep(0.005)
    assert process.poll() is None, "the export finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    partial = sum(1 for _ in out.rglob("*.jpg"))
    assert 0 < partial < 1200
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--workers", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    assert tree_bytes(out) == tree_bytes(reference_export)
    assert json.loads((out / "manifest.json").read_text())["files"] == json.loads(
        (reference_export / "manifest.json").read_text())["files"]


def test_source_aligned(tree4, tmp_path):
    out = tmp_path / "aligned"
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--source", "aligned", "--quiet",
                     "--perturbations", "p_translate,p_rotate", "--workers", 1)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["source"] == "aligned" and manifest["params"]["fallback_pad"] == "reflect101"
    # The default frame (translate frame 15, rotate frame 15 at angle 0) is the aligned image itself.
    aligned = rafdb_dataset.read_image(rafdb_dataset.aligned_path(tree4, "test_0003"))
    expected = rafdb_dataset.encode_image(aligned)
    assert (out / "rafdb.test.p_translate/test_0003_15.jpg").read_bytes() == expected
    assert (out / "rafdb.test.p_rotate/test_0003_15.jpg").read_bytes() == expected
    # Mixing sources in one tree is refused.
    again = run_cli("export", "--rafdb", tree4, "--out", out, "--quiet", "--perturbations", "p_translate")
    assert again.returncode == 2 and "source" in again.stderr and "Traceback" not in again.stderr


def test_png_is_lossless(tree4, tmp_path):
    out = tmp_path / "png"
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--source", "aligned", "--format", "png",
                     "--perturbations", "p_translate", "--quiet", "--workers", 1)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "rafdb.test.p_translate").iterdir())[:2] == [
        "test_0001_00.png", "test_0001_01.png"]
    aligned = rafdb_dataset.read_image(rafdb_dataset.aligned_path(tree4, "test_0001"))
    frame = rafdb_dataset.read_image(out / "rafdb.test.p_translate/test_0001_15.png")
    np.testing.assert_array_equal(frame, aligned)
    # Frame 0 shows x offset 0: 15 columns of reflected padding, then the aligned image.
    frame0 = rafdb_dataset.read_image(out / "rafdb.test.p_translate/test_0001_00.png")
    np.testing.assert_array_equal(frame0[:, 15:], aligned[:, :85])
    np.testing.assert_array_equal(frame0[:, 14], aligned[:, 1])


@pytest.mark.parametrize("damage", ["missing_original", "empty_original", "missing_landmarks", "malformed_landmarks",
                                    "collinear_landmarks", "coincident_eyes", "landmarks_outside",
                                    "aligned_not_100"])
def test_bad_input(damage, sample_tree, tmp_path):
    """Each bad input is one error naming its file, before any frame is written. The landmark cases
    would align a constant face (singular affine: one colour; all points outside the photo: black),
    whose sequence never flips; the original exported them silently."""
    tree = mini_tree(sample_tree, tmp_path, 3)
    original = rafdb_dataset.original_path(tree, "test_0002")
    landmarks = rafdb_dataset.landmarks_path(tree, "test_0002")
    lines = landmarks.read_text().splitlines()
    source = []
    if damage == "missing_original":
        original.unlink()
        expected = [str(original), "not found"]
    elif damage == "empty_original":  # its header is read with the landmarks, before --out is made
        original.write_bytes(b"")
        expected = [str(original), "not a readable image"]
    elif damage == "missing_landmarks":
        landmarks.unlink()
        expected = [str(landmarks), "not found"]
    elif damage == "malformed_landmarks":
        lines[2] = "41.5\tnose"
        expected = [f"{landmarks}:3:"]
    elif damage in ("collinear_landmarks", "coincident_eyes"):
        # eyes (40, 50), (60, 50); mouth corners (30, 50), (70, 50) -> mouth point (50, 50): one line
        points = ["40 50", "60 50", "50 60", "30 50", "70 50"] if damage == "collinear_landmarks" else \
            ["50 50", "50 50", "50 60", "45 80", "55 80"]
        lines[:5] = points
        expected = [str(landmarks), "lie on one line or point"]
        # plain coordinates, not numpy reprs ("np.float64(40.0)")
        expected += ["(40.0, 50.0), (60.0, 50.0) and the mouth point (50.0, 50.0)"] \
            if damage == "collinear_landmarks" else ["(50.0, 50.0), (50.0, 50.0)"]
    elif damage == "landmarks_outside":
        lines[:5] = [" ".join(str(float(v) + 5000) for v in line.split()) for line in lines[:5]]
        expected = [str(landmarks), "all lie outside test_0002.jpg", "another image or resolution"]
    else:
        import cv2

        aligned = rafdb_dataset.aligned_path(tree, "test_0002")
        cv2.imwrite(str(aligned), cv2.resize(cv2.imread(str(aligned)), (224, 224)))
        source = ["--source", "aligned"]
        expected = [str(aligned), "expected a 100x100 aligned image", "got 224x224"]
    if damage != "missing_landmarks":
        landmarks.write_text("\n".join(lines) + "\n")
    result = run_cli("export", "--rafdb", tree, "--out", tmp_path / "out", "--quiet", "--workers", 1, *source)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not any(path.is_file() and path.suffix == ".jpg" for path in (tmp_path / "out").rglob("*"))


def test_rafdb_text_files_with_a_byte_order_mark_read_as_without(sample_tree, tmp_path):
    """A UTF-8 BOM (Windows editors) at the start of a landmark file, list_patition_label.txt or
    distribute_basic.csv is not data: the same landmarks and labels as without it (it was read as
    part of the first number or name and refused)."""
    tree = Path(shutil.copytree(sample_tree, tmp_path / "RAF-DB"))
    landmarks = rafdb_dataset.landmarks_path(tree, "test_0002")
    expected = rafdb_dataset.read_landmarks(landmarks)
    soft, hard = (rafdb_dataset.load_labels(tree, "test", protocol) for protocol in ("soft", "hard"))
    for path in (landmarks, tree / rafdb_dataset.PARTITION_FILE, tree / rafdb_dataset.CSV_FILE):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    np.testing.assert_array_equal(rafdb_dataset.read_landmarks(landmarks), expected)
    for protocol, before in (("soft", soft), ("hard", hard)):
        after = rafdb_dataset.load_labels(tree, "test", protocol)
        assert after.names == before.names
        np.testing.assert_array_equal(after.labels, before.labels)


def test_bad_flags(tree4, tmp_path):
    result = run_cli("export", "--rafdb", tree4, "--out", tmp_path / "o", "--perturbations", "p_rotate,p_zoom")
    assert result.returncode == 2 and "p_zoom" in result.stderr and "p_shear" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("export", "--rafdb", tmp_path / "nowhere", "--out", tmp_path / "o2")
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o2").exists()  # the dataset is listed before --out is created
    # --data is the RAF-DB root too (not ignored in favour of ./RAF-DB)
    result = run_cli("export", "--data", tmp_path / "elsewhere", "--out", tmp_path / "o3", cwd=tree4.parent)
    assert result.returncode == 2 and "elsewhere" in result.stderr and "Traceback" not in result.stderr


def test_verify_detects_altered_file(tree4, tmp_path):
    out = tmp_path / "v"
    assert run_cli("export", "--rafdb", tree4, "--out", out, "--quiet", "--perturbations", "p_scale").returncode == 0
    target = out / "rafdb.test.p_scale/test_0004_07.jpg"
    target.write_bytes(target.read_bytes()[:-10])
    result = run_cli("verify", "--out", out, "--quiet")
    assert result.returncode == 1 and "altered" in result.stdout and "test_0004_07.jpg" in result.stdout


def test_gif_without_arguments(tmp_path):
    result = run_cli(cwd=tmp_path)  # no RAF-DB here: a synthetic face
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(tmp_path / "perturbations.gif") as gif:
        assert gif.n_frames == 30 and gif.info.get("loop") == 0
        width, height = gif.size
    assert width == 5 * 104 and height == 2 * 118  # 2 rows x 5 tiles of 100 px + label + margins
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_source_rendered_again_unchanged_skipped(sample_tree, tmp_path, capsys, caplog):
    """A unit's landmark file changes: only its 30 frames are rendered again; the rest is skipped."""
    tree = mini_tree(sample_tree, tmp_path, 2)
    out = tmp_path / "out"
    argv = ["export", "--rafdb", str(tree), "--out", str(out), "--perturbations", "p_translate",
            "--workers", "1", "--quiet"]
    assert rafdb_perturb_dataset.main(argv) == 0
    before = tree_bytes(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    capsys.readouterr()
    assert rafdb_perturb_dataset.main(argv) == 0
    err = capsys.readouterr().err
    assert "60 file(s); 0 written, 60 skipped" in err and "rendered again" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == mtimes

    landmarks = rafdb_dataset.landmarks_path(tree, "test_0002")
    points = rafdb_dataset.read_landmarks(landmarks) + 3.0  # the face moves by 3 px
    landmarks.write_text("".join(f"{x:.2f}\t{y:.2f}\n" for x, y in points))
    assert rafdb_perturb_dataset.main(argv) == 0
    err = capsys.readouterr().err
    assert "30 written, 30 skipped" in err and "1 image(s) rendered again" in err
    after = tree_bytes(out)
    assert {rel for rel in after if after[rel] != before[rel]} == {
        f"rafdb.test.p_translate/test_0002_{i:02d}.jpg" for i in range(30)}
    manifest = json.loads((out / "manifest.json").read_text())
    import hashlib

    image = rafdb_dataset.original_path(tree, "test_0002").read_bytes()
    expected = hashlib.sha256((hashlib.sha256(image).hexdigest()
                               + hashlib.sha256(landmarks.read_bytes()).hexdigest()).encode()).hexdigest()
    assert manifest["units"]["test_0002.jpg"] == expected
    assert manifest["params"]["param_set"].startswith("rafdb-p-10x30-")


def test_gif_plain_drops_the_labels():
    """--plain: the same tiles without the 14 px name strip above each row of tiles."""
    face = np.full((130, 130, 3), 128, np.uint8)
    labelled = rafdb_perturb_dataset.preview_frames(face)
    plain = rafdb_perturb_dataset.preview_frames(face, label_height=0)
    assert labelled[0].shape == (2 * (100 + 14 + 4), 5 * 104, 3) and plain[0].shape == (2 * 104, 5 * 104, 3)
    strip = labelled[0][2:16, 2:102]  # above the first tile: the name "gaussian_noise" in black
    assert (strip < 100).any() and not (plain[0][:2] < 255).any()
    np.testing.assert_array_equal(plain[7][2:102, 2:102], labelled[7][16:116, 2:102])


def test_gif_unwritable_out_fails_before_rendering(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(rafdb_perturb_dataset, "preview_frames", lambda *a, **k: pytest.fail("rendered first"))
    with pytest.raises(rafdb_perturb_dataset.UserError, match=r"--out .*a_file[/\\]x\.gif: cannot create"):
        rafdb_perturb_dataset.main(["gif", "--rafdb", str(tmp_path), "--out", str(blocker / "x.gif")])
    with pytest.raises(rafdb_perturb_dataset.UserError, match=r"--out .*: is a folder"):
        rafdb_perturb_dataset.main(["gif", "--rafdb", str(tmp_path), "--out", str(tmp_path)])
    # GIF bytes under another name were written as they are: refused, naming the format
    with pytest.raises(rafdb_perturb_dataset.UserError, match=r"--out .*p\.png: the animation is written as \.gif "):
        rafdb_perturb_dataset.main(["gif", "--rafdb", str(tmp_path), "--out", str(tmp_path / "p.png")])
    assert not (tmp_path / "p.png").exists()


def test_gif_with_a_mistyped_rafdb_is_an_error_not_a_synthetic_face(tmp_path):
    result = run_cli("gif", "--rafdb", tmp_path / "RAF-DBB", "--out", tmp_path / "p.gif")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--rafdb {tmp_path / 'RAF-DBB'}: no test original with its landmarks" in result.stderr
    assert not (tmp_path / "p.gif").exists()


def test_flags_match_the_rafdb_c_script(capsys):
    args = rafdb_perturb_dataset.parse_args(["gif", "--motion-backend", "wand", "--colour", "bgr-compat", "--quiet"])
    assert (args.motion_backend, args.colour, args.quiet) == ("wand", "bgr-compat", True)
    args = rafdb_perturb_dataset.parse_args(["export"])
    assert (args.workers, args.quiet, args.force_rerender) == (0, False, False)
    for command, words in (("export", "output root folder"), ("verify", "the exported tree to check"),
                           ("gif", "the GIF image file to write")):
        with pytest.raises(SystemExit):
            rafdb_perturb_dataset.parse_args([command, "--help"])
        assert words in " ".join(capsys.readouterr().out.split()), command
    with pytest.raises(SystemExit) as error:
        rafdb_perturb_dataset.parse_args(["export", "--workers", "-2"])
    assert error.value.code == 2 and "--workers: expected a positive number" in capsys.readouterr().err


def test_extras_are_added_to_a_tree_of_the_10(tree4, tmp_path):
    """The README's order: the 10 first, then --perturbation-set imagenet-extra into the same --out
    (both record the extras' table digest, neither the set); verify then sees both folders."""
    out = tmp_path / "p"
    assert run_cli("export", "--rafdb", tree4, "--out", out, "--quiet", "--perturbations", "p_scale").returncode == 0
    result = run_cli("export", "--rafdb", tree4, "--out", out, "--quiet", "--perturbation-set", "imagenet-extra",
                     "--perturbations", "p_tilt")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["rafdb.test.p_scale", "rafdb.test.p_tilt"]
    assert run_cli("verify", "--out", out).returncode == 0


def test_a_landmark_file_under_another_name_is_named(sample_tree, tmp_path):
    root = mini_tree(sample_tree, tmp_path, 2)
    landmarks = rafdb_dataset.landmarks_path(root, "test_0002")
    landmarks.rename(landmarks.with_name("test_0002_manual_attri.txt"))
    with pytest.raises(UserError, match=r"test_0002_manu_attri.txt: landmark file not found \(needed to align "
                                        r"test_0002.jpg; found test_0002_manual_attri.txt, RAF-DB names it "
                                        r"test_0002_manu_attri.txt; --source aligned"):
        rafdb_perturb_dataset.build_units(root, ["test_0001", "test_0002"], ["translate"], fmt="jpg",
                                          source="landmarks")


@pytest.mark.parametrize("source", ["landmarks", "aligned"])
def test_incomplete_tree_refused_with_the_missing_path(sample_tree, tmp_path, source):
    """A test face the label list names but the tree lacks is an error naming its path: the
    sequences of the rest were exported with exit 0 and `verify` passed. Under --source landmarks
    a face with neither its original nor its aligned image is named by its original."""
    tree = mini_tree(sample_tree, tmp_path, 3)
    listing = tree / rafdb_dataset.PARTITION_FILE
    listing.parent.mkdir(parents=True)
    listing.write_text("test_0001.jpg 4\ntest_0002.jpg 1\ntest_0003.jpg 7\n")
    for path in (rafdb_dataset.aligned_path(tree, "test_0003"), rafdb_dataset.original_path(tree, "test_0003")):
        path.unlink()
    missing = (rafdb_dataset.original_path if source == "landmarks" else rafdb_dataset.aligned_path)(tree, "test_0003")
    result = run_cli("export", "--rafdb", tree, "--out", tmp_path / "out", "--quiet", "--workers", 1,
                     "--source", source)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{missing}: image not found" in result.stderr and f"{listing} names it" in result.stderr
    assert not any(path.is_file() and path.suffix == ".jpg" for path in (tmp_path / "out").rglob("*"))
