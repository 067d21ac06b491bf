"""FER and folder corrupted exports (fer_export.py through dataset_writer.export, docs/BENCHMARK.md §9.3, §10)."""

import csv

import cv2
import numpy as np
import pytest

import dataset_writer
import datasets
import fer_export
import synthetic_faces

PAIRS = [("gaussian_noise", 2), ("brightness_plus", 3)]


@pytest.fixture(scope="module")
def fer_root(tmp_path_factory):
    return synthetic_faces.write_fer_sample(tmp_path_factory.mktemp("fer") / "FERPlus", 12, 6, 5, seed=7)


def _export(job, out, workers=1):
    return dataset_writer.export(job.units, job.render, out, generator="test", kind=job.kind, params=job.params,
                                 sources=job.sources, workers=workers, progress=False)


def test_fer_png_layout_grey_and_worker_independent(fer_root, tmp_path):
    data = datasets.get("ferplus", fer_root)
    job = fer_export.c_job(data, PAIRS, split="test", seed=1)
    one = _export(job, tmp_path / "one", workers=1)
    _export(fer_export.c_job(data, PAIRS, split="test", seed=1), tmp_path / "two", workers=2)
    public = [r for r, line in enumerate((fer_root / "fer2013new.csv").read_text().splitlines()[1:])
              if line.startswith("PublicTest,")]
    assert len(public) == 6 and one.files == 12  # every PublicTest row, before the FER+ filter
    folder = tmp_path / "one" / "fer2013.PublicTest.gaussian_noise.2"
    assert sorted(p.name for p in folder.iterdir()) == [f"{r:05d}.png" for r in public]
    written = cv2.imread(str(folder / f"{public[0]:05d}.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (48, 48) and written.dtype == np.uint8  # grey stays grey
    clean = data.read_image(f"{public[0]:05d}")[:, :, 0]
    assert np.abs(written.astype(int) - clean).mean() > 2  # corrupted
    for path in (tmp_path / "one").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()


def test_fer_csv_is_line_aligned_and_read_back(fer_root, tmp_path):
    data = datasets.get("ferplus", fer_root)
    _export(fer_export.c_job(data, PAIRS, split="test", fmt="fer-csv", seed=1), tmp_path / "csv")
    _export(fer_export.c_job(data, PAIRS, split="test", seed=1), tmp_path / "png")
    source_lines = (fer_root / "fer2013.csv").read_text().splitlines()
    csv_file = tmp_path / "csv" / "fer2013.PublicTest.gaussian_noise.2.csv"
    lines = csv_file.read_text().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(source_lines)  # one line per source line
    for source, line in zip(source_lines, lines):
        if source.endswith(",PublicTest"):
            emotion, pixels = line.split(",")
            assert emotion == "-1" and len(pixels.split(" ")) == 2304
        else:
            assert line == ""  # the header and the other splits
    again = datasets.get("ferplus", fer_root, pixels=csv_file)
    test = again.labels("test")
    assert test.names == data.labels("test").names
    for name in test.names:  # the two layouts hold the same pixels
        png = cv2.imread(str(tmp_path / "png" / "fer2013.PublicTest.gaussian_noise.2" / f"{name}.png"),
                         cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(again.read_image(name)[:, :, 0], png)


def test_folder_export_keeps_paths_formats_and_grey(tmp_path):
    root = tmp_path / "faces"
    for path, grey in (("test/happy/a.jpg", False), ("test/sad/sub/b.png", True)):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        face = synthetic_faces.sample_face(seed=3, expression=3)
        cv2.imwrite(str(target), cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if grey else face[:, :, ::-1])
    data = datasets.get("folder", root)
    result = _export(fer_export.c_job(data, PAIRS, split="test", seed=0), tmp_path / "out")
    assert result.files == 4
    out = tmp_path / "out" / "faces.test.brightness_plus.3"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["happy/a.jpg", "sad/sub/b.png"]
    assert cv2.imread(str(out / "sad/sub/b.png"), cv2.IMREAD_UNCHANGED).shape == (100, 100)
    assert cv2.imread(str(out / "happy/a.jpg"), cv2.IMREAD_UNCHANGED).shape == (100, 100, 3)
    manifest = dataset_writer.read_manifest(tmp_path / "out")
    assert manifest["kind"] == "folder-c" and manifest["params"]["name"] == "faces"


def test_grey_corrupt_image_is_native():
    """Grey is corrupted natively (docs/BENCHMARK.md §9.3): brightness adds c to the intensity in
    float64, floor(255 clip(x / 255 + c)); the HSV route of an R = G = B copy is within 1 level."""
    plane = np.tile(np.arange(40, 200, 2.5).astype(np.uint8), (64, 1))[:, :, None]
    grey = fer_export.corrupt_image(plane, "brightness_plus", 2, np.random.default_rng(0))
    assert grey.shape == plane.shape
    expected = np.floor(np.minimum(plane.astype(np.float64) / 255.0 + 0.2, 1.0) * 255.0)
    np.testing.assert_array_equal(grey, expected.astype(np.uint8))
    assert grey[0, 0, 0] == 91  # 40 + 0.2 * 255 = 91
    import corruptions
    rgb = corruptions.corrupt(np.repeat(plane, 3, axis=2), "brightness_plus", 2, np.random.default_rng(0))
    assert np.abs(rgb[:, :, :1].astype(int) - grey).max() <= 1


def test_ferplus_aug_dataset_cli(fer_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def run(*args):
        return subprocess.run([sys.executable, str(repo / "ferplus_aug_dataset.py"), *map(str, args)],
                              capture_output=True, text=True, cwd=repo)

    out = tmp_path / "corrupted_dataset"
    result = run("export", "--data", fer_root, "--out", out, "--corruptions", "motion_blur", "--severities", "5",
                 "--format", "fer-csv", "--workers", "1")
    assert result.returncode == 0, result.stderr
    with open(fer_root / "fer2013.csv", newline="") as handle:  # every row of the split is in the one file
        public = sum(row["Usage"] == "PublicTest" for row in csv.DictReader(handle))
    assert f": {public} image(s) in 1 set file(s), 1 file(s)" in result.stderr
    exported = datasets.get("ferplus", fer_root, pixels=out / "fer2013.PublicTest.motion_blur.5.csv")
    image = exported.read_image(exported.labels("test").names[0])
    assert image.shape == (48, 48, 1)  # motion blur on grey stays 48x48 (the original returned 48x3)
    assert run("verify", "--out", out).returncode == 0
    bad = run("export", "--data", fer_root, "--out", tmp_path / "x", "--corruptions", "fog")
    assert bad.returncode == 2 and "unknown corruption 'fog'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("export", "--data", tmp_path / "nowhere", "--out", tmp_path / "y")
    assert bad.returncode == 2 and "folder not found" in bad.stderr


def test_p_sequences_from_the_image_itself(fer_root, tmp_path):
    data = datasets.get("ferplus", fer_root)
    job = fer_export.p_job(data, ["p_translate", "p_gaussian_noise"], seed=2)
    result = _export(job, tmp_path / "p")
    rows = fer_export.fer_split_rows(data, "test")
    assert result.files == len(rows) * 2 * 30
    manifest = dataset_writer.read_manifest(tmp_path / "p")
    assert manifest["params"]["source"] == "image" and manifest["kind"] == "fer-p"
    stem = f"{rows[0]:05d}"
    folder = tmp_path / "p" / "fer2013.PublicTest.p_translate"
    frame0 = cv2.imread(str(folder / f"{stem}_15.png"), cv2.IMREAD_UNCHANGED)
    assert frame0.shape == (48, 48)  # native size, grey
    # frame 15 of p_translate has the default ROI (x offset 15 of the 15 px padding): the image itself,
    # 48 -> 100 -> 48 px (bilinear both ways), within rounding
    clean = data.read_image(stem)[:, :, 0]
    round_trip = cv2.resize(cv2.resize(clean, (100, 100), interpolation=cv2.INTER_LINEAR), (48, 48),
                            interpolation=cv2.INTER_LINEAR)
    assert np.abs(frame0.astype(int) - round_trip).max() <= 1
    later = cv2.imread(str(folder / f"{stem}_00.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(later.astype(int) - frame0).mean() > 1  # the sequence moves


def test_corrupted_sets_read_both_fer_layouts_by_id(fer_root, tmp_path):
    data = datasets.get("ferplus", fer_root)
    _export(fer_export.c_job(data, PAIRS, seed=4), tmp_path / "png")
    _export(fer_export.c_job(data, PAIRS, fmt="fer-csv", seed=4), tmp_path / "csv")
    png_sets = fer_export.corrupted_sets(data, tmp_path / "png")
    csv_sets = fer_export.corrupted_sets(data, tmp_path / "csv")
    # registry order of docs/BENCHMARK.md §2.3: gaussian_noise comes before brightness_plus
    assert [s.name for s in png_sets] == [s.name for s in csv_sets] == ["gaussian_noise.2", "brightness_plus.3"]
    assert csv_sets[0].path.name == "fer2013.PublicTest.gaussian_noise.2.csv"
    for name in data.labels("test").names:
        png = cv2.imread(str(tmp_path / "png" / "fer2013.PublicTest.brightness_plus.3" / f"{name}.png"),
                         cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png_sets[1].read(name)[:, :, 0], png)
        np.testing.assert_array_equal(csv_sets[1].read(name)[:, :, 0], png)
    with pytest.raises(Exception, match="no fer2013.PublicTest"):
        fer_export.corrupted_sets(data, tmp_path)


@pytest.mark.parametrize("script,extra", [
    ("ferplus_aug_dataset.py", ["--corruptions", "gaussian_noise,contrast", "--severities", "2"]),
    ("rafdb_perturb_dataset.py", ["--dataset", "fer2013", "--perturbations", "p_rotate"]),
])
def test_fer_shards_build_the_single_export(fer_root, tmp_path, script, extra):
    """Two shards into one folder write each image once between them and give the single export's
    tree, manifest included (a shard that ignored --shard would write every file twice over)."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def export(out, *more):
        result = subprocess.run([sys.executable, str(repo / script), "export", "--data", str(fer_root),
                                 "--out", str(out), "--workers", "1", "--quiet", *extra, *more],
                                capture_output=True, text=True, cwd=repo)
        assert result.returncode == 0, result.stderr
        return result.stderr

    def tree(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    export(tmp_path / "one")
    first = export(tmp_path / "sharded", "--shard", "0/2")
    assert "shard 0/2: the manifest completes when shard(s) 1/2 finish" in first
    half = [name for name in tree(tmp_path / "sharded") if name != "manifest.json" and not name.startswith(".")]
    whole = [name for name in tree(tmp_path / "one") if name != "manifest.json"]
    assert 0 < len(half) < len(whole)
    assert "shard 1/2: the manifest is now complete" in export(tmp_path / "sharded", "--shard", "1/2")
    assert tree(tmp_path / "sharded") == tree(tmp_path / "one")


# --------------------------------------------------------------------------------------------
# Folder sources whose export names clash, and images too small to corrupt


def _face_file(path, size=None, grey=False):
    """A synthetic face written with OpenCV (any suffix it can write), optionally resized."""
    path.parent.mkdir(parents=True, exist_ok=True)
    face = synthetic_faces.sample_face(seed=5, expression=2)[:, :, ::-1]
    if size is not None:
        face = cv2.resize(face, size, interpolation=cv2.INTER_AREA)
    assert cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) if grey else face)
    return path


def _cli(script, *args):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(repo / script), *map(str, args)], capture_output=True, text=True,
                          cwd=repo)


@pytest.mark.parametrize("first,second,fmt,clash", [
    ("sad/coffee.bmp", "sad/coffee.webp", None, "sad/coffee.png"),  # both non-JPEG: PNG
    ("happy/a.jpg", "happy/a.png", "png", "happy/a.png"),  # --format png
    ("happy/x.JPG", "happy/x.jpg", None, "happy/x.jpg"),  # the suffix's case
])
def test_folder_c_export_refuses_two_sources_with_one_output_name(tmp_path, first, second, fmt, clash):
    root = tmp_path / "faces"
    _face_file(root / "test" / "happy" / "other.png")
    for relative in (first, second):
        _face_file(root / "test" / relative)
    data = datasets.get("folder", root)
    with pytest.raises(dataset_writer.UserError) as error:
        fer_export.c_job(data, PAIRS, split="test", fmt=fmt)
    message = str(error.value)
    assert message.startswith(f"{root / 'test' / first} and {root / 'test' / second}: ")
    assert f"would both be exported as {clash}" in message and "rename one of them" in message


def test_folder_p_export_refuses_two_sources_with_one_stem(tmp_path):
    root = tmp_path / "faces"
    first = _face_file(root / "test" / "sad" / "coffee.bmp")
    second = _face_file(root / "test" / "sad" / "coffee.webp")
    _face_file(root / "test" / "sad" / "tea.png")
    data = datasets.get("folder", root)
    with pytest.raises(dataset_writer.UserError) as error:
        fer_export.p_job(data, ["p_rotate"], fmt="png")
    message = str(error.value)
    assert message.startswith(f"{first} and {second}: ")
    assert "sad/coffee_00" in message and "rename one of them" in message


def test_folder_name_clash_cli_exits_2_before_writing(tmp_path):
    """Before the check, the C export wrote 13 files for 14 images (one overwritten) and the P
    export stopped with a traceback; now both exit 2 up front and --out is not created."""
    root = tmp_path / "faces"
    for name in ("coffee.bmp", "coffee.webp", "tea.jpg"):
        _face_file(root / "test" / "sad" / name)
    runs = [("rafdb_aug_dataset.py", tmp_path / "c", "--corruptions", "gaussian_noise", "--severities", "1"),
            ("rafdb_perturb_dataset.py", tmp_path / "p", "--perturbations", "p_rotate")]
    for script, out, *extra in runs:
        result = _cli(script, "export", "--dataset", "folder", "--data", root, "--out", out, "--workers", "1", *extra)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert f"{root / 'test/sad/coffee.bmp'} and {root / 'test/sad/coffee.webp'}: two source images" in result.stderr
        assert not out.exists()


def test_an_export_into_its_own_source_dataset_leaves_nothing_there(tmp_path):
    """--out inside the folder dataset it reads is refused (exit 2) before the folder is created:
    an empty export/ left there would be warned about by every later read of the dataset, and one
    inside a class folder would sit among its images."""
    root = tmp_path / "faces"
    for name in ("a.png", "b.png"):
        _face_file(root / "test" / "sad" / name)
    runs = [("rafdb_aug_dataset.py", root / "export", "--corruptions", "gaussian_noise", "--severities", "1"),
            ("rafdb_perturb_dataset.py", root / "test" / "sad" / "p", "--perturbations", "p_rotate")]
    for script, out, *extra in runs:
        result = _cli(script, "export", "--dataset", "folder", "--data", root, "--out", out, "--workers", "1", *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"error: --out {out}: lies inside the source dataset {root}, which is read" in result.stderr
        assert not out.exists()
    assert sorted(path.name for path in root.rglob("*")) == ["a.png", "b.png", "sad", "test"]


def test_held_out_sets_on_other_datasets_are_refused_up_front(tmp_path):
    """The held-out corruption and perturbation sets are RAF-DB only: the exports and both evaluations
    of a folder dataset refuse them before reading anything, naming the set flag (an evaluation
    advised an export that is refused, and the P commands blamed --perturbations, never given)."""
    root = tmp_path / "faces"
    _face_file(root / "test" / "sad" / "a.png")
    common = ["--dataset", "folder", "--data", root]
    runs = [
        (["rafdb_aug_dataset.py", "export", *common, "--out", tmp_path / "c", "--corruption-set", "face"],
         "error: --dataset folder: the 18 corruptions (--corruption-set rafdb), --colour rgb and no --param-set "
         "only; the held-out sets are RAF-DB only"),
        (["rafdb_perturb_dataset.py", "export", *common, "--out", tmp_path / "p", "--perturbation-set", "all"],
         "error: --perturbation-set all: RAF-DB only; --dataset folder exports the 10 perturbations of RAF-DB-P"),
        (["eval_corrupted_rafdb.py", "m.keras", *common, "--corrupted", tmp_path / "c", "--corruption-set", "face"],
         "error: --corruption-set face: RAF-DB only; --dataset folder is evaluated on the 18 corruptions of RAF-DB-C"),
        (["eval_perturbed_rafdb.py", "m.keras", *common, "--perturbed", tmp_path / "p",
          "--perturbation-set", "imagenet-extra"],
         "error: --perturbation-set imagenet-extra: RAF-DB only; --dataset folder is evaluated on the 10 "
         "perturbations of RAF-DB-P"),
    ]
    for (script, *args), message in runs:
        result = _cli(script, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "p").exists()


def test_the_evaluations_look_where_the_exports_write_by_default(tmp_path):
    """Without --out, --corrupted or --perturbed: a folder dataset's exports write <name>-c and
    perturbed_dataset (run here from tmp_path), and the evaluations' defaults are those folders (they
    were corrupted_raf_dataset and perturbed_raf_dataset, and the error's advice looped back)."""
    import subprocess
    import sys
    from pathlib import Path

    import eval_corrupted_rafdb
    import eval_perturbed_rafdb

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "faces"
    _face_file(root / "test" / "sad" / "a.png")
    for script, extra in (("rafdb_aug_dataset.py", ["--corruptions", "contrast", "--severities", "1"]),
                          ("rafdb_perturb_dataset.py", ["--perturbations", "p_rotate"])):
        result = subprocess.run([sys.executable, str(repo / script), "export", "--dataset", "folder", "--data",
                                 str(root), "--workers", "1", "--quiet", *extra],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "faces-c" / "manifest.json").is_file()
    assert (tmp_path / "perturbed_dataset" / "manifest.json").is_file()
    # ferplus_aug_dataset.py writes the same folder export to the same place (it wrote corrupted_dataset)
    other = tmp_path / "other"
    other.mkdir()
    result = subprocess.run([sys.executable, str(repo / "ferplus_aug_dataset.py"), "export", "--dataset", "folder",
                             "--data", str(root), "--workers", "1", "--quiet", "--corruptions", "contrast",
                             "--severities", "1"], capture_output=True, text=True, cwd=other)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in other.iterdir()) == ["faces-c"]
    def files(tree):
        return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and p.name != "manifest.json")

    assert files(other / "faces-c") == files(tmp_path / "faces-c") and len(files(other / "faces-c")) == 1
    folder = ["--dataset", "folder", "--data", str(root)]
    assert eval_corrupted_rafdb.parse_args(["m.keras", *folder]).corrupted == Path("faces-c")
    assert eval_perturbed_rafdb.parse_args(["m.keras", *folder]).perturbed == Path("perturbed_dataset")
    assert eval_corrupted_rafdb.parse_args(["m.keras"]).corrupted == Path("corrupted_raf_dataset")
    assert eval_perturbed_rafdb.parse_args(["m.keras"]).perturbed == Path("perturbed_raf_dataset")


def test_too_small_folder_images_are_refused_before_writing(tmp_path):
    """corruptions.MIN_SIDE is 32: a 1x1 and a 40x20 (width x height) image are named up front
    (the first by path, then how many more), before --out exists; 32x32 is accepted."""
    root = tmp_path / "faces"
    _face_file(root / "test" / "happy" / "big.jpg")
    _face_file(root / "test" / "happy" / "edge.png", size=(32, 32))
    tiny = _face_file(root / "test" / "happy" / "tiny1x1.png", size=(1, 1))
    _face_file(root / "test" / "sad" / "small.webp", size=(40, 20))
    data = datasets.get("folder", root)
    with pytest.raises(dataset_writer.UserError) as error:
        fer_export.c_job(data, PAIRS, split="test")
    message = str(error.value)
    assert message.startswith(f"{tiny}: the image is 1x1 px (width x height); the corruptions need")
    assert "at least 32 px" in message and "(and 1 more image(s)" in message
    assert "ValueError" not in message and "happy|" not in message
    out = tmp_path / "out"
    result = _cli("rafdb_aug_dataset.py", "export", "--dataset", "folder", "--data", root, "--out", out,
                  "--corruptions", "gaussian_noise", "--severities", "1", "--workers", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {tiny}: the image is 1x1 px" in result.stderr and not out.exists()
    tiny.unlink()
    (root / "test" / "sad" / "small.webp").unlink()
    empty = root / "test" / "sad" / "img 3.png"
    empty.write_bytes(b"")  # no reader opens it: named before anything is written
    result = _cli("rafdb_aug_dataset.py", "export", "--dataset", "folder", "--data", root, "--out", out,
                  "--corruptions", "gaussian_noise", "--severities", "1", "--workers", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr and not out.exists()
    assert f"error: {empty}: " in result.stderr
    empty.unlink()
    assert _export(fer_export.c_job(datasets.get("folder", root), PAIRS, split="test"), out).files == 4


def test_image_shrunk_after_listing_is_named_by_its_path(tmp_path):
    """A file that passes the listing check but is too small when rendered (rewritten meanwhile,
    or unreadable to Pillow) still stops the export with its path, not its unit key or ValueError."""
    root = tmp_path / "faces"
    _face_file(root / "test" / "happy" / "a.png")
    later = _face_file(root / "test" / "happy" / "b.png")
    job = fer_export.c_job(datasets.get("folder", root), PAIRS, split="test")
    _face_file(later, size=(8, 8))
    with pytest.raises(dataset_writer.UserError) as error:
        _export(job, tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{later}: the image is 8x8 px (width x height)")
    assert "ValueError" not in message and "happy|b.png" not in message


def test_perturbation_export_takes_images_below_32_px(tmp_path):
    """The perturbations resize every image to 100x100 first: a 20x20 and a 7x3 image give 30
    frames each at their own size."""
    root = tmp_path / "faces"
    _face_file(root / "test" / "happy" / "a.png", size=(20, 20))
    _face_file(root / "test" / "sad" / "b.png", size=(7, 3), grey=True)
    result = _export(fer_export.p_job(datasets.get("folder", root), ["p_rotate"], fmt="png"), tmp_path / "p")
    assert result.files == 60
    folder = tmp_path / "p" / "faces.test.p_rotate"
    assert cv2.imread(str(folder / "happy" / "a_29.png"), cv2.IMREAD_UNCHANGED).shape == (20, 20, 3)
    assert cv2.imread(str(folder / "sad" / "b_00.png"), cv2.IMREAD_UNCHANGED).shape == (3, 7)


# --------------------------------------------------------------------------------------------
# FER2013 export: the labels of the exported split are checked


def test_fer2013_export_refuses_an_emotion_outside_0_6(tmp_path):
    root = tmp_path / "FERPlus"
    root.mkdir()
    pixels = " ".join(["7"] * 2304)
    lines = ["emotion,pixels,Usage", f"3,{pixels},Training", f"2,{pixels},PublicTest", f"9,{pixels},PublicTest"]
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    data = datasets.get("fer2013", root)
    for make in (lambda: fer_export.c_job(data, PAIRS), lambda: fer_export.p_job(data, ["p_rotate"])):
        with pytest.raises(dataset_writer.UserError, match=r"fer2013\.csv:4: emotion must be an integer 0\.\.6"):
            make()
    out = tmp_path / "out"
    result = _cli("ferplus_aug_dataset.py", "export", "--dataset", "fer2013", "--data", root, "--out", out,
                  "--corruptions", "contrast", "--severities", "1", "--workers", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fer2013.csv:4: emotion must be an integer 0..6" in result.stderr and not out.exists()
    (root / "fer2013.csv").write_text("\n".join(lines[:3] + [f"6,{pixels},PublicTest", f"9,{pixels},Training"]) + "\n")
    job = fer_export.c_job(datasets.get("fer2013", root), PAIRS)  # a Training row is not exported
    assert [unit.key for unit in job.units] == ["00001", "00002"]


def test_folder_export_summary_counts_the_shard_and_says_why_images_were_rendered_again(tmp_path):
    """5 images in shards 0/2 and 1/2: units 0, 2, 4 and 1, 3 in key order; a changed source is named
    as the reason in the one-line summary (printed with --quiet too), by both export scripts."""
    root = tmp_path / "faces"
    for index in range(5):
        _face_file(root / "test" / ("happy" if index % 2 else "sad") / f"img {index}.png")
    out = tmp_path / "out"
    base = ["export", "--dataset", "folder", "--data", root, "--out", out, "--corruptions", "contrast",
            "--severities", "1,2", "--workers", "1", "--quiet"]
    first = _cli("ferplus_aug_dataset.py", *base, "--shard", "0/2")
    assert first.returncode == 0, first.stderr
    assert ": 3 image(s) of this shard, 6 file(s) (6 written, 0 already complete)" in first.stderr
    second = _cli("rafdb_aug_dataset.py", *base, "--shard", "1/2")
    assert ": 2 image(s) of this shard, 4 file(s) (4 written, 0 already complete)" in second.stderr
    assert "the manifest is now complete" in second.stderr
    _face_file(root / "test" / "happy" / "img 1.png", size=(90, 90))  # the source changes
    third = _cli("ferplus_aug_dataset.py", *base)
    assert third.returncode == 0, third.stderr
    assert (": 5 image(s), 10 file(s) (2 written, 8 already complete, 1 image(s) rendered again because their "
            "source changed)") in third.stderr


def test_rafdb_scripts_export_the_fer_private_test_split(fer_root, tmp_path):
    """--test-split PrivateTest --labels hard: every PrivateTest row of fer2013.csv (counted here with
    csv), in folders named by that split, for both export scripts; refused for a RAF-DB export."""
    import csv

    with open(fer_root / "fer2013.csv", newline="") as handle:
        private = [index for index, row in enumerate(csv.DictReader(handle)) if row["Usage"] == "PrivateTest"]
    common = ["--dataset", "ferplus", "--data", fer_root, "--test-split", "PrivateTest", "--labels", "hard",
              "--workers", "1", "--quiet"]
    p = _cli("rafdb_perturb_dataset.py", "export", *common, "--out", tmp_path / "p", "--perturbations", "p_rotate",
             "--format", "png")
    assert p.returncode == 0, p.stderr
    frames = sorted(path.name for path in (tmp_path / "p" / "fer2013.PrivateTest.p_rotate").iterdir())
    assert frames == [f"{row:05d}_{frame:02d}.png" for row in private for frame in range(30)]
    c = _cli("rafdb_aug_dataset.py", "export", *common, "--out", tmp_path / "c", "--corruptions", "contrast",
             "--severities", "1", "--format", "png")
    assert c.returncode == 0, c.stderr
    files = sorted(path.name for path in (tmp_path / "c" / "fer2013.PrivateTest.contrast.1").iterdir())
    assert files == [f"{row:05d}.png" for row in private]
    refused = _cli("rafdb_aug_dataset.py", "export", "--test-split", "PrivateTest", "--out", tmp_path / "r")
    assert refused.returncode == 2 and "--test-split PrivateTest: only for --dataset ferplus/fer2013" in refused.stderr
