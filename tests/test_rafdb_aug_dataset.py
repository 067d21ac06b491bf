"""RAF-DB-C export, verify and preview (BENCHMARK.md §2.1, §2.7, §2.8), on the synthetic sample tree."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import cli_common
import corruptions
import rafdb_aug_dataset

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("gaussian_noise", 1), ("gaussian_noise", 3), ("contrast", 1), ("contrast", 3),
         ("spatter", 1), ("spatter", 3)]
SMALL = ["--corruptions", "spatter,gaussian_noise,contrast", "--severities", "1,3"]


def cli(argv, capsys):
    """Run the CLI in-process as `python3 rafdb_aug_dataset.py ARGV`; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli_common.run_main(lambda: rafdb_aug_dataset.main(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def export(rafdb, out, capsys, *extra, workers="2"):
    code, _out, err = cli(["export", "--rafdb", str(rafdb), "--out", str(out), "--workers", workers,
                           "--quiet", *SMALL, *extra], capsys)
    assert code == 0, err
    return err


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def manifest_without_generator(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("generator")
    return manifest


def spec_rng(seed, name, severity, file_name):
    """BENCHMARK.md §2.7 written out: PCG64 seeded with SHA-256("{seed}|rafdb-c|{name}|{s}|{file}")[:8], LE."""
    digest = hashlib.sha256(f"{seed}|rafdb-c|{name}|{severity}|{file_name}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))


def decode_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_cli_help_and_parsing():
    assert rafdb_aug_dataset.parse_severities("1-5") == [1, 2, 3, 4, 5]
    assert rafdb_aug_dataset.parse_severities("3, 1,1-2") == [1, 2, 3]
    assert rafdb_aug_dataset.parse_corruptions("contrast,gaussian_blur") == ["gaussian_blur", "contrast"]
    assert rafdb_aug_dataset.parse_corruptions("all") == list(corruptions.CORRUPTION_NAMES)
    assert rafdb_aug_dataset.parse_args([]).command == "preview"


@pytest.fixture(scope="module")
def reference(sample_tree, tmp_path_factory):
    """One uninterrupted 3-worker export of the sample tree (6 folders), shared by several tests."""
    out = tmp_path_factory.mktemp("ref") / "c"
    argv = ["export", "--rafdb", str(sample_tree), "--out", str(out), "--workers", "3", "--quiet", *SMALL]
    assert rafdb_aug_dataset.main(argv) == 0
    return out


def test_export_layout_content_and_verify(sample_tree, reference, capsys):
    sources = sorted(p.name for p in (sample_tree / "basic/Image/aligned").glob("test_*_aligned.jpg"))
    assert len(sources) == 21
    folders = sorted(p.name for p in reference.iterdir() if p.is_dir())
    assert folders == sorted(f"rafdb.test.{name}.{s}" for name, s in PAIRS)
    for folder in folders:
        assert sorted(p.name for p in (reference / folder).iterdir()) == sources
    # One file re-derived from docs/BENCHMARK.md: corrupt with the documented seed, OpenCV JPEG q95 of BGR.
    name, severity, file_name = "gaussian_noise", 3, sources[4]
    clean = decode_rgb(sample_tree / "basic/Image/aligned" / file_name)
    expected = corruptions.corrupt(clean, name, severity, spec_rng(0, name, severity, file_name))
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(expected, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert (reference / f"rafdb.test.{name}.{severity}" / file_name).read_bytes() == jpeg.tobytes()
    code, out, _err = cli(["verify", "--out", str(reference), "--quiet"], capsys)
    assert code == 0 and f"OK: 126 file(s) checked in {reference} (a rafdb-c tree); 0 missing" in out
    # a file given as the tree is named as a file, not as a missing folder
    code, _out, err = cli(["verify", "--out", str(reference / "manifest.json"), "--quiet"], capsys)
    assert code == 2 and f"{reference / 'manifest.json'}: is a file, not an exported folder (nothing to verify)" in err


def test_manifest_content(sample_tree, reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["kind"] == "rafdb-c" and manifest["complete"] is True
    params = manifest["params"]
    assert (params["seed"], params["format"], params["motion_backend"], params["colour"]) == (0, "jpg", "numpy", "rgb")
    # The table shape and the digest of corruptions.py's parameter tables, re-derived here.
    lines = [f"{name}={getattr(corruptions, name)!r}" for name in sorted(vars(corruptions))
             if name.isupper() and not name.startswith("_") and not name.endswith("_HELP")
             and isinstance(getattr(corruptions, name), (int, float, str, tuple))]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    assert params["param_set"] == f"rafdb-c-18x5-{digest}"
    sources = sorted((sample_tree / "basic/Image/aligned").glob("test_*_aligned.jpg"))
    assert manifest["units"] == {
        path.name: hashlib.sha256(hashlib.sha256(path.read_bytes()).hexdigest().encode()).hexdigest()
        for path in sources}
    assert manifest["generator"]["name"] == "rafdb_aug_dataset.py" and manifest["generator"]["version"]
    assert manifest["folders"] == {f"rafdb.test.{name}.{s}": 21 for name, s in PAIRS}
    assert manifest["source"]["files"] == [f"test_{i:04d}_aligned.jpg" for i in range(1, 22)]
    assert {"numpy", "opencv", "scikit-image", "scipy", "pillow"} <= set(manifest["versions"])
    on_disk = {p.relative_to(reference).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in reference.rglob("*.jpg")}
    assert len(on_disk) == 126 and manifest["files"] == on_disk


def test_one_worker_equals_three_workers(sample_tree, reference, tmp_path, capsys):
    """BENCHMARK.md §2.7: byte-identical output for 1 and 3 workers (the reference uses 3)."""
    export(sample_tree, tmp_path / "one", capsys, workers="1")
    assert tree(tmp_path / "one") == tree(reference)
    assert manifest_without_generator(tmp_path / "one") == manifest_without_generator(reference)


def test_rerun_skips_everything(sample_tree, tmp_path, capsys):
    out = tmp_path / "c"
    export(sample_tree, out, capsys, "--corruptions", "contrast", "--severities", "2")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    err = export(sample_tree, out, capsys, "--corruptions", "contrast", "--severities", "2")
    assert "0 written, 21 skipped" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "manifest.json"} == {
        p: t for p, t in mtimes.items() if p.name != "manifest.json"}


def test_verify_names_altered_and_missing(sample_tree, tmp_path, capsys):
    out = tmp_path / "c"
    export(sample_tree, out, capsys, "--corruptions", "contrast", "--severities", "1")
    altered = out / "rafdb.test.contrast.1" / "test_0002_aligned.jpg"
    missing = out / "rafdb.test.contrast.1" / "test_0007_aligned.jpg"
    altered.write_bytes(altered.read_bytes()[:-10])
    missing.unlink()
    code, stdout, _err = cli(["verify", "--out", str(out), "--quiet"], capsys)
    assert code == 1
    assert f"altered: {altered}" in stdout and f"missing: {missing}" in stdout
    assert "1 missing, 1 altered, 0 unexpected" in stdout
    code, _out, err = cli(["verify", "--out", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "nothing" in err


def test_png_format_is_lossless(sample_tree, tmp_path, capsys):
    out = tmp_path / "png"
    export(sample_tree, out, capsys, "--format", "png", "--corruptions", "spatter", "--severities", "2")
    files = sorted((out / "rafdb.test.spatter.2").iterdir())
    assert len(files) == 21 and all(p.suffix == ".png" for p in files)
    assert files[0].name == "test_0001_aligned.png"
    clean = decode_rgb(sample_tree / "basic/Image/aligned/test_0001_aligned.jpg")
    expected = corruptions.corrupt(clean, "spatter", 2, spec_rng(0, "spatter", 2, "test_0001_aligned.jpg"))
    np.testing.assert_array_equal(decode_rgb(files[0]), expected)
    assert json.loads((out / "manifest.json").read_text())["params"]["format"] == "png"


def test_colour_and_motion_backend_options(small_tree, tmp_path, capsys, request):
    """--colour bgr-compat swaps the spatter colours; --motion-backend wand stays within 2 grey levels."""
    file_name = "test_0001_aligned.jpg"
    clean = decode_rgb(small_tree / "basic/Image/aligned" / file_name)
    export(small_tree, tmp_path / "bgr", capsys, "--corruptions", "spatter", "--severities", "1",
           "--colour", "bgr-compat")
    compat = corruptions.corrupt(clean, "spatter", 1, spec_rng(0, "spatter", 1, file_name), colour="bgr-compat")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(compat, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert (tmp_path / "bgr/rafdb.test.spatter.1" / file_name).read_bytes() == jpeg.tobytes()
    assert json.loads((tmp_path / "bgr/manifest.json").read_text())["params"]["colour"] == "bgr-compat"
    request.getfixturevalue("magickwand")  # the rest needs MagickWand: skips here without it
    for backend in ("numpy", "wand"):
        export(small_tree, tmp_path / backend, capsys, "--corruptions", "motion_blur", "--severities", "3",
               "--motion-backend", backend)
    numpy_out = decode_rgb(tmp_path / "numpy/rafdb.test.motion_blur.3" / file_name).astype(int)
    wand_out = decode_rgb(tmp_path / "wand/rafdb.test.motion_blur.3" / file_name).astype(int)
    assert np.abs(numpy_out - wand_out).mean() <= 2
    assert json.loads((tmp_path / "wand/manifest.json").read_text())["params"]["motion_backend"] == "wand"


def test_different_seed_into_same_tree_refused(sample_tree, tmp_path, capsys):
    out = tmp_path / "c"
    export(sample_tree, out, capsys, "--corruptions", "contrast", "--severities", "1")
    code, _out, err = cli(["export", "--rafdb", str(sample_tree), "--out", str(out), "--seed", "1",
                           "--corruptions", "contrast", "--severities", "1"], capsys)
    assert code == 2 and "manifest.json" in err and "seed=0" in err and "seed=1" in err and "--out" in err
    # Same parameters, another folder: merged into the manifest.
    export(sample_tree, out, capsys, "--corruptions", "contrast", "--severities", "2")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["folders"] == {"rafdb.test.contrast.1": 21, "rafdb.test.contrast.2": 21}


@pytest.mark.slow
def test_sigkill_then_rerun_is_byte_identical(sample_tree, tmp_path, capsys):
    """Kill an export with SIGKILL once its first output file appears, rerun, compare every file."""
    out = tmp_path / "killed"
    argv = [sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", str(sample_tree),
            "--out", str(out), "--workers", "1", "--quiet", "--corruptions", "zoom_blur,motion_blur",
            "--severities", "1-5"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(not f.name.startswith(".") for d in out.iterdir() if d.is_dir() for f in d.iterdir()):
            break  # the first output file is in place
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    _out, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, err.decode()
    written = list(out.rglob("*_aligned.jpg"))
    assert 0 < len(written) < 21 * 10, "the export was not interrupted mid-run"
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    code, stdout, _err = cli(["verify", "--out", str(out), "--quiet"], capsys)
    assert code == 1 and "incomplete" in stdout

    rerun = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "written" in rerun.stderr and "skipped" in rerun.stderr
    assert not list(out.rglob("*.tmp"))

    ref = tmp_path / "uninterrupted"
    export(sample_tree, ref, capsys, "--corruptions", "zoom_blur,motion_blur", "--severities", "1-5")
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in tree(out).items()}
    assert len(hashes) == 210
    assert hashes == {rel: hashlib.sha256(data).hexdigest() for rel, data in tree(ref).items()}
    assert manifest_without_generator(out) == manifest_without_generator(ref)
    code, _out, _err = cli(["verify", "--out", str(out), "--quiet"], capsys)
    assert code == 0


@pytest.fixture
def small_tree(sample_tree, tmp_path):
    """Three aligned test images copied from the sample tree (writable, unlike the shared tree)."""
    aligned = tmp_path / "RAF-DB" / "basic" / "Image" / "aligned"
    aligned.mkdir(parents=True)
    for i in (1, 2, 3):
        name = f"test_{i:04d}_aligned.jpg"
        shutil.copy(sample_tree / "basic/Image/aligned" / name, aligned / name)
    return tmp_path / "RAF-DB"


@pytest.mark.parametrize("argv, message", [
    (["--corruptions", "fog"], r"--corruptions: unknown corruption 'fog' in --corruption-set rafdb; valid names: gaussian_blur, .*"
                               r"pixelate_contrast_brightness_minus"),
    (["--severities", "0"], r"--severities: 0 is outside 1\.\.5"),
    (["--severities", "6"], r"--severities: 6 is outside 1\.\.5"),
    (["--severities", "2-6"], r"--severities: 6 is outside 1\.\.5"),
    (["--severities", "x"], r"--severities: expected integers"),
    (["--workers", "-1"], r"--workers: expected a positive number"),
])
def test_bad_flags_exit_2(small_tree, tmp_path, capsys, argv, message):
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(tmp_path / "o"), *argv], capsys)
    assert code == 2 and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def test_data_names_the_rafdb_root(small_tree, tmp_path, capsys, monkeypatch):
    """--data is the RAF-DB root as in every other script: the export reads it, not ./RAF-DB, even
    when the working folder holds another RAF-DB tree; --rafdb and --data naming two roots: exit 2."""
    decoy = tmp_path / "cwd" / "RAF-DB" / "basic" / "Image" / "aligned"
    decoy.mkdir(parents=True)
    shutil.copy(small_tree / "basic/Image/aligned/test_0001_aligned.jpg", decoy / "test_0009_aligned.jpg")
    monkeypatch.chdir(tmp_path / "cwd")
    code, _out, err = cli(["export", "--data", str(small_tree), "--out", str(tmp_path / "o"), "--quiet",
                           "--corruptions", "contrast", "--severities", "1"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o" / "rafdb.test.contrast.1").iterdir()) == [
        "test_0001_aligned.jpg", "test_0002_aligned.jpg", "test_0003_aligned.jpg"]
    code, _out, err = cli(["export", "--data", str(small_tree), "--rafdb", "RAF-DB", "--out",
                           str(tmp_path / "o2"), "--corruptions", "contrast", "--severities", "1"], capsys)
    assert code == 2 and "name two different RAF-DB roots" in err and not (tmp_path / "o2").exists()


def test_missing_dataset_exit_2(tmp_path, capsys):
    code, _out, err = cli(["export", "--rafdb", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert str(tmp_path / "nowhere" / "basic" / "Image" / "aligned") in err and "expected layout" in err


def test_unreadable_image_named(small_tree, tmp_path, capsys):
    bad = small_tree / "basic/Image/aligned/test_0002_aligned.jpg"
    bad.write_bytes(b"this is not a JPEG")
    for workers in ("1", "2"):
        code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(tmp_path / f"o{workers}"),
                               "--workers", workers, "--quiet", *SMALL], capsys)
        assert code == 2 and "Traceback" not in err
        assert f"{bad}: not a readable image" in err
        # refused before --out is made: no folder (not even an empty one) for a later run to trip on
        assert not (tmp_path / f"o{workers}").exists()


def test_unwritable_output_exit_2(small_tree, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(blocker / "out"), *SMALL], capsys)
    assert code == 2 and str(blocker / "out") in err and "cannot create the output folder" in err
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(locked), *SMALL], capsys)
        assert code == 2 and f"{locked}: output folder is not writable" in err


def test_script_exit_code_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb",
                             str(tmp_path / "missing")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "missing" in result.stderr


@pytest.mark.parametrize("use_real", [True, False])
def test_preview_grid_geometry(sample_tree, tmp_path, capsys, monkeypatch, use_real):
    out = tmp_path / "corruptions.png"
    monkeypatch.chdir(tmp_path)  # no ./RAF-DB here: without --rafdb, the synthetic face
    code, _out, err = cli(["preview", "--plain", *(["--rafdb", str(sample_tree)] if use_real else []),
                           "--out", str(out)], capsys)
    assert code == 0, err
    grid = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert grid.shape == (18 * 102, 6 * 102, 3)
    assert (grid[100:102, :] == 255).all() and (grid[:, 100:102] == 255).all()  # 2 px white margins
    assert (grid[-2:, :] == 255).all() and (grid[:, -2:] == 255).all()
    if use_real:  # column 0 of every row is the clean first test face (PNG is lossless)
        clean = cv2.imread(str(sample_tree / "basic/Image/aligned/test_0001_aligned.jpg"), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(grid[102 * 5:102 * 5 + 100, :100], clean)
    # severity 5 of contrast (row 8) is visibly flatter than the clean face
    row = list(corruptions.CORRUPTION_NAMES).index("contrast")
    assert grid[row * 102:row * 102 + 100, 5 * 102:5 * 102 + 100].std() < grid[row * 102:row * 102 + 100, :100].std()


def test_preview_labelled_by_default(sample_tree, tmp_path, capsys):
    """Default preview: the --plain grid shifted by an 18 px title row and a name column (about
    290 px for the longest name), with dark text beside every row and above every column."""
    plain, labelled = tmp_path / "plain.png", tmp_path / "labelled.png"
    assert cli(["preview", "--plain", "--rafdb", str(sample_tree), "--out", str(plain)], capsys)[0] == 0
    assert cli(["preview", "--rafdb", str(sample_tree), "--out", str(labelled)], capsys)[0] == 0
    plain_grid, grid = cv2.imread(str(plain)), cv2.imread(str(labelled))
    left = grid.shape[1] - 6 * 102
    assert grid.shape[0] == 18 + 18 * 102 and 250 < left < 330
    np.testing.assert_array_equal(grid[18:, left:], plain_grid)  # no label runs into a face
    for row in range(18):  # some text left of every row
        assert (grid[18 + row * 102:18 + row * 102 + 100, :left] < 128).any(), row
    for column in range(6):  # a title above every column
        assert (grid[:18, left + column * 102:left + column * 102 + 100] < 128).any(), column
    assert (grid[:18, :left] == 255).all()  # the corner stays empty


def test_regenerated_source_tree_is_rendered_again(tmp_path, capsys):
    """`rafdb_dataset.py sample --force` with another seed, then the same export: every image changed,
    so every file is rendered again and the manifest follows; an unchanged tree is skipped."""
    import synthetic_faces

    rafdb, out = tmp_path / "RAF-DB", tmp_path / "c"
    synthetic_faces.write_sample_tree(rafdb, n_train=1, n_test=3, seed=0)
    few = ["--corruptions", "contrast", "--severities", "1"]
    export(rafdb, out, capsys, *few)
    before = tree(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    err = export(rafdb, out, capsys, *few)
    assert "0 written, 3 skipped" in err and "rendered again" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == mtimes

    shutil.rmtree(rafdb)
    synthetic_faces.write_sample_tree(rafdb, n_train=1, n_test=3, seed=7)
    err = export(rafdb, out, capsys, *few)
    assert "3 written, 0 skipped" in err and "3 image(s) rendered again" in err
    after = tree(out)
    assert after.keys() == before.keys() and all(after[rel] != before[rel] for rel in after)
    # Each file is the corruption of the new source, and the manifest records the new hashes.
    name = "test_0002_aligned.jpg"
    clean = decode_rgb(rafdb / "basic/Image/aligned" / name)
    expected = corruptions.corrupt(clean, "contrast", 1, spec_rng(0, "contrast", 1, name))
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(expected, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert after[f"rafdb.test.contrast.1/{name}"] == jpeg.tobytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"][f"rafdb.test.contrast.1/{name}"] == hashlib.sha256(jpeg.tobytes()).hexdigest()
    source = (rafdb / "basic/Image/aligned" / name).read_bytes()
    assert manifest["units"][name] == hashlib.sha256(hashlib.sha256(source).hexdigest().encode()).hexdigest()
    code, stdout, _err = cli(["verify", "--out", str(out), "--quiet"], capsys)
    assert code == 0, stdout


def test_other_package_version_refused_then_force_rerender(small_tree, tmp_path, capsys):
    out = tmp_path / "c"
    few = ["--corruptions", "contrast", "--severities", "1"]
    export(small_tree, out, capsys, *few)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["versions"]["opencv"] = "3.0.0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(out), *few], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{out / 'manifest.json'}: the existing export was made with opencv version '3.0.0'" in err
    assert "--force-rerender" in err and "new --out" in err
    err = export(small_tree, out, capsys, *few, "--force-rerender")
    assert "3 written, 0 skipped" in err
    assert json.loads((out / "manifest.json").read_text())["versions"]["opencv"] != "3.0.0"


def test_quiet_keeps_the_summary_only(small_tree, tmp_path, capsys, caplog):
    """--quiet: no progress bar, no INFO logs; the final summary is still printed."""
    caplog.set_level("INFO", logger="fer")
    argv = ["export", "--rafdb", str(small_tree), "--out", str(tmp_path / "c"), "--workers", "1",
            "--corruptions", "contrast", "--severities", "1"]
    code, _out, err = cli([*argv, "--quiet"], capsys)
    assert code == 0 and "RAF-DB-C export to" in err and "file/s]" not in err
    assert not [r for r in caplog.records if r.levelname == "INFO"]
    code, _out, err = cli([*argv[:4], str(tmp_path / "d"), *argv[5:]], capsys)
    assert code == 0 and "RAF-DB-C export to" in err
    assert "3 image(s) x 1 corruption(s) x 1 severity = 3 files" in caplog.text


def test_help_texts_say_what_out_is(capsys):
    for command, words in (("export", "output root folder"), ("verify", "the exported tree to check"),
                           ("preview", "the image file to write (the preview grid): .png, or .jpg")):
        with pytest.raises(SystemExit):
            rafdb_aug_dataset.parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert words in text, command
    with pytest.raises(SystemExit):
        rafdb_aug_dataset.parse_args(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 = all cores (the default); 1 = render in this process" in text and "--force-rerender" in text


def test_preview_unwritable_out_fails_before_rendering(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(rafdb_aug_dataset, "preview_grid", lambda *a, **k: pytest.fail("rendered first"))
    code, _out, err = cli(["preview", "--rafdb", str(tmp_path), "--out", str(blocker / "grid.png")], capsys)
    assert code == 2 and "Traceback" not in err and f"--out {blocker / 'grid.png'}: cannot create" in err


def test_preview_is_written_in_the_format_its_name_says(sample_tree, tmp_path, capsys, monkeypatch):
    """--out grid.jpg gets JPEG bytes (it got PNG bytes under a .jpg name), grid.png PNG bytes; any
    other suffix is refused before rendering, naming the flag and the formats."""
    for name, magic in (("grid.jpg", b"\xff\xd8\xff"), ("grid.PNG", b"\x89PNG\r\n\x1a\n")):
        code, _out, err = cli(["preview", "--plain", "--rafdb", str(sample_tree), "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        assert (tmp_path / name).read_bytes().startswith(magic)
    monkeypatch.setattr(rafdb_aug_dataset, "preview_grid", lambda *a, **k: pytest.fail("rendered first"))
    code, _out, err = cli(["preview", "--out", str(tmp_path / "grid.txt")], capsys)
    assert code == 2 and "Traceback" not in err
    assert (f"--out {tmp_path / 'grid.txt'}: the preview grid is written as .jpeg, .jpg, .png (chosen by the "
            f"file name's suffix); got .txt") in err


def test_preview_of_the_64_px_values_shows_the_extras_that_have_them(tmp_path, capsys, caplog):
    """The 64 px table has values for impulse_noise, glass_blur and fog only: the preview (which takes
    no --corruptions) shows those three rows and says which it leaves out (it was an error pointing
    to --corruptions, a flag preview does not have)."""
    out = tmp_path / "g.png"
    with caplog.at_level("INFO"):
        code, _out, err = cli(["preview", "--plain", "--corruption-set", "imagenet-extra", "--param-set", "imagenet64",
                               "--out", str(out)], capsys)
    assert code == 0, err
    assert ("--param-set imagenet64: no 64 px values for speckle_noise, snow, frost, elastic_transform, saturate; "
            "not shown") in caplog.text
    assert "rows: impulse_noise, glass_blur, fog)" in caplog.text and out.is_file()


def test_preview_with_a_mistyped_rafdb_is_an_error_not_a_synthetic_face(tmp_path, capsys):
    missing = tmp_path / "RAF-DBB"
    code, _out, err = cli(["preview", "--rafdb", str(missing), "--out", str(tmp_path / "p.png")], capsys)
    assert code == 2 and "Traceback" not in err and str(missing / "basic/Image/aligned") in err
    empty = tmp_path / "empty"
    (empty / "basic/Image/aligned").mkdir(parents=True)
    code, _out, err = cli(["preview", "--rafdb", str(empty), "--out", str(tmp_path / "p.png")], capsys)
    assert code == 2 and f"{empty / 'basic/Image/aligned'}: no test_*_aligned.jpg" in err
    assert not (tmp_path / "p.png").exists()


def test_extra_sets_export_deterministic_with_manifest(small_tree, tmp_path, capsys):
    """--corruption-set all: byte-identical for 1 and 2 workers, the set and --param-set recorded,
    verify passes; a missing --param-set is a usage error naming the flag."""
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(tmp_path / "x"),
                           "--corruption-set", "imagenet-extra", "--quiet"], capsys)
    assert code == 2 and "--param-set: required" in err and not (tmp_path / "x").exists()
    trees = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(out), "--corruption-set", "all",
                               "--param-set", "scaled", "--severities", "2", "--workers", workers, "--quiet"], capsys)
        assert code == 0, err
        trees.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*.jpg")})
    assert trees[0] == trees[1] and len({p.parts[0] for p in trees[0]}) == 30
    params = json.loads((tmp_path / "w1/manifest.json").read_text())["params"]
    assert params["corruption_set"] == "all" and params["extra_param_set"] == "scaled"
    assert cli(["verify", "--out", str(tmp_path / "w1"), "--quiet"], capsys)[0] == 0


def test_imagenet_extra_then_face_share_one_tree(small_tree, tmp_path, capsys):
    """The README's two held-out exports into the default extras folder: the face run (no
    --param-set) takes the tree's; both sets' folders are then in one verified tree."""
    out = tmp_path / "extra"
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(out), "--corruption-set",
                           "imagenet-extra", "--param-set", "scaled", "--corruptions", "fog", "--severities", "1",
                           "--quiet"], capsys)
    assert code == 0, err
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(out), "--corruption-set", "face",
                           "--corruptions", "occlusion_eyes", "--severities", "1", "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["rafdb.test.fog.1", "rafdb.test.occlusion_eyes.1"]
    params = json.loads((out / "manifest.json").read_text())["params"]
    assert params["corruption_set"] == "held-out" and params["extra_param_set"] == "scaled"
    assert cli(["verify", "--out", str(out), "--quiet"], capsys)[0] == 0
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(out), "--corruption-set",
                           "imagenet-extra", "--param-set", "imagenet224", "--corruptions", "fog", "--quiet"], capsys)
    assert code == 2 and "extra_param_set='scaled'" in err and "(--param-set)" in err


def test_face_then_imagenet_extra_share_one_tree(small_tree, tmp_path, capsys):
    """The other order: a face-only tree records no parameter set (its corruptions use none); the
    first ImageNet-C extra exported into it records its own, and a later one must agree. The 18 into
    a held-out tree are refused for that reason alone (not for tables or --param-set)."""
    out = tmp_path / "extra"
    base = ["export", "--rafdb", str(small_tree), "--out", str(out), "--severities", "1", "--quiet"]
    code, _out, err = cli(base + ["--corruption-set", "face", "--corruptions", "occlusion_eyes"], capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["params"]["extra_param_set"] is None
    code, _out, err = cli(base + ["--corruption-set", "imagenet-extra", "--param-set", "scaled",
                                  "--corruptions", "fog"], capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["params"]["extra_param_set"] == "scaled"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["rafdb.test.fog.1", "rafdb.test.occlusion_eyes.1"]
    assert cli(["verify", "--out", str(out), "--quiet"], capsys)[0] == 0
    code, _out, err = cli(base + ["--corruption-set", "imagenet-extra", "--param-set", "imagenet64",
                                  "--corruptions", "fog"], capsys)
    assert code == 2 and "extra_param_set='scaled'" in err
    code, _out, err = cli(base + ["--corruptions", "contrast"], capsys)
    assert code == 2 and ("the existing export used corruption_set='held-out' but this run asks for the 18 "
                          "(--corruption-set rafdb) (a tree of the 18 alone, of held-out sets, or of --corruption-set "
                          "all (the 18 and the held-out sets together) is not mixed with the others)") in err


@pytest.mark.parametrize("damage", ["deleted", "renamed_upper_case", "listed_in_csv_only"])
def test_incomplete_tree_refused_with_the_missing_path(small_tree, tmp_path, capsys, damage):
    """A face the label list names but the aligned folder lacks (deleted, or renamed to .JPG) is an
    error naming its path, before --out is made: exporting the rest gave a smaller RAF-DB-C that
    `verify` passed. The soft-label CSV names the images when the hard-label list is absent."""
    aligned = small_tree / "basic/Image/aligned"
    found_as = ""
    if damage == "listed_in_csv_only":
        # real RAF-DB's rows, 12,271 train then 3,068 test: test_0004 is the first one not here
        rows = ["0,0,0,1,0,0,0"] * (12271 + 3068)
        (small_tree / "distribute_basic.csv").write_text("\n".join(rows) + "\n")
        missing = aligned / "test_0004_aligned.jpg"
        listing = small_tree / "distribute_basic.csv"
    else:
        listing = small_tree / "basic/EmoLabel/list_patition_label.txt"
        listing.parent.mkdir(parents=True)
        listing.write_text("train_00001.jpg 4\ntest_0001.jpg 4\ntest_0002.jpg 1\ntest_0003.jpg 7\n")
        missing = aligned / "test_0002_aligned.jpg"
        if damage == "deleted":
            missing.unlink()
        else:
            missing.rename(aligned / "test_0002_aligned.JPG")
            found_as = "; found test_0002_aligned.JPG, RAF-DB names it test_0002_aligned.jpg"
    code, _out, err = cli(["export", "--rafdb", str(small_tree), "--out", str(tmp_path / "o"), "--quiet",
                           *SMALL], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{missing}: image not found{found_as}" in err and f"{listing} names it" in err and "incomplete" in err
    if damage == "listed_in_csv_only":
        assert "(and 3064 more test image(s))" in err
    assert not (tmp_path / "o").exists()


def test_a_soft_label_csv_of_another_row_count_names_no_images(small_tree, tmp_path, capsys, caplog):
    """A CSV without the hard-label list names its rows by position after real RAF-DB's 12,271
    training rows; with another row count (a small tree's CSV) that naming is wrong, so the export
    does not check against it (it refused a complete tree's --split train, naming test rows)."""
    aligned = small_tree / "basic/Image/aligned"
    for i in (1, 2, 3):  # a complete tree of 3 train + 3 test faces, and its 6-row CSV
        shutil.copy(aligned / f"test_{i:04d}_aligned.jpg", aligned / f"train_{i:05d}_aligned.jpg")
    (small_tree / "distribute_basic.csv").write_text("0,0,0,1,0,0,0\n" * 6)
    export(small_tree, tmp_path / "o", capsys, "--split", "train")
    # ... and says so, with the reason: a face missing from such a tree would go unnoticed
    assert (f"{small_tree / 'distribute_basic.csv'} has 6 rows, not real RAF-DB's 15339, so its rows cannot be "
            f"named, and there is no {small_tree / 'basic/EmoLabel/list_patition_label.txt'}: the export cannot "
            "check that no face of the tree is missing") in caplog.text
    assert sorted(p.name for p in (tmp_path / "o").rglob("*.jpg"))[:3] == \
        [f"train_{i:05d}_aligned.jpg" for i in (1, 1, 1)]
    assert len(list((tmp_path / "o").rglob("*.jpg"))) == 3 * len(PAIRS)


def test_a_tree_without_label_lists_is_exported_with_a_warning(small_tree, tmp_path, capsys, caplog):
    """Aligned faces alone (no hard-label list, no CSV): exported as they are, with a warning that
    nothing could be checked; with a list, no such warning."""
    export(small_tree, tmp_path / "o", capsys)
    assert (f"neither basic/EmoLabel/list_patition_label.txt nor distribute_basic.csv is in {small_tree}: "
            "the export cannot check that no face of the tree is missing") in caplog.text
    assert len(list((tmp_path / "o").rglob("*.jpg"))) == 3 * len(PAIRS)
    listing = small_tree / "basic/EmoLabel/list_patition_label.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("test_0001.jpg 4\ntest_0002.jpg 1\ntest_0003.jpg 7\n")
    caplog.clear()
    export(small_tree, tmp_path / "o2", capsys)
    assert "cannot check" not in caplog.text


def test_complete_tree_with_a_label_list_exports(small_tree, tmp_path, capsys):
    """The check reads the label list: a tree whose list names only images that are there exports
    (training images listed but absent are another split's business)."""
    listing = small_tree / "basic/EmoLabel/list_patition_label.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("train_00001.jpg 4\ntest_0001.jpg 4\ntest_0002.jpg 1\ntest_0003.jpg 7\n")
    export(small_tree, tmp_path / "o", capsys)
    assert len(list((tmp_path / "o").rglob("*.jpg"))) == 3 * len(PAIRS)


def test_verify_with_the_other_script_warns_and_still_checks(small_tree, tmp_path, capsys, caplog):
    """`rafdb_perturb_dataset.py verify` given a RAF-DB-C tree checks it (an altered file still
    fails) but warns that the tree is a corruption tree; this script's own verify does not warn."""
    import rafdb_perturb_dataset

    out = tmp_path / "o"
    export(small_tree, out, capsys)
    assert cli(["verify", "--out", str(out), "--quiet"], capsys)[0] == 0
    assert "holds a" not in caplog.text
    with pytest.raises(SystemExit) as exit_info:
        cli_common.run_main(lambda: rafdb_perturb_dataset.main(["verify", "--out", str(out), "--quiet"]))
    assert exit_info.value.code == 0
    assert (f"{out} holds a corruption tree (rafdb-c), not the perturbation trees rafdb_perturb_dataset.py "
            "writes: it was checked all the same") in caplog.text
    victim = next(out.rglob("*.jpg"))
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(SystemExit) as exit_info:
        cli_common.run_main(lambda: rafdb_perturb_dataset.main(["verify", "--out", str(out), "--quiet"]))
    assert exit_info.value.code == 1 and f"altered: {victim}" in capsys.readouterr().out
