"""Class-folder datasets (docs/BENCHMARK.md §10): layout, synonyms, classes.txt, hidden files, errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest

import datasets
import synthetic_faces
from cli_common import UserError


def _image(path, value, grey=False, size=(6, 5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if grey else size + (3,)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_synonyms_order_ids_subfolders_hidden(tmp_path):
    root = tmp_path / "faces"
    _image(root / "test/Happy/b.png", 10)
    _image(root / "test/Happy/session2/a.png", 20, grey=True)
    _image(root / "test/ANGRY/c.jpg", 30)
    _image(root / "test/contempt/d.png", 40)
    _image(root / "train/joy/e.png", 50)
    _image(root / "train/angry/f.png", 60)
    (root / "test/Happy/.DS_Store").write_bytes(b"\0junk")
    _image(root / "test/.hidden/g.png", 70)
    data = datasets.get("folder", root)
    # RAF-DB order restricted to the classes present, contempt last
    assert data.class_names == ("happiness", "anger", "contempt")
    test = data.labels("test")
    assert test.names == ["test/ANGRY/c.jpg", "test/Happy/b.png", "test/Happy/session2/a.png", "test/contempt/d.png"]
    assert test.classes.tolist() == [1, 0, 0, 2]
    assert data.labels("train").classes.tolist() == [1, 0]  # angry/f.png, joy/e.png
    grey = data.read_image("test/Happy/session2/a.png")
    colour = data.read_image("test/Happy/b.png")
    assert grey.shape == (6, 5, 1) and grey.max() == 20 and colour.shape == (6, 5, 3)
    assert not data.has_validation
    assert datasets.folder.relative_id("test/Happy/session2/a.png") == "Happy/session2/a.png"


def test_linked_sub_folders_are_read_and_a_link_loop_is_named(tmp_path):
    elsewhere = tmp_path / "session2"
    _image(elsewhere / "x.png", 10)
    _image(elsewhere / "y.png", 20)
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 30)
    _image(root / "test/sad/b.png", 40)
    (root / "test/happy/linked").symlink_to(elsewhere, target_is_directory=True)
    test = datasets.get("folder", root).labels("test")
    assert test.names == ["test/happy/a.png", "test/happy/linked/x.png", "test/happy/linked/y.png", "test/sad/b.png"]
    assert test.classes.tolist() == [0, 0, 0, 1]  # RAF-DB order: happiness before sadness
    (root / "test/sad/loop").symlink_to(root / "test/sad", target_is_directory=True)
    with pytest.raises(UserError, match=r"test/sad/loop: the same folder as one already read"):
        datasets.get("folder", root).labels("test")
    (root / "test/sad/loop").unlink()
    # links into another class folder, of this split or another: refused, naming the link and the folder
    _image(root / "train/happy/t.png", 50)
    _image(root / "train/sad/u.png", 60)
    for link, target, named in (("train/happy/leak", "test/happy", "test/happy"),
                                ("train/happy/other", "train/sad", "train/sad")):
        (root / link).symlink_to(root / target, target_is_directory=True)
        with pytest.raises(UserError, match=rf"{link}: a symbolic link into the class folder {named} "):
            datasets.get("folder", root).labels("train")
        (root / link).unlink()
    assert datasets.get("folder", root).labels("train").names == ["train/happy/t.png", "train/sad/u.png"]
    # so are linked files: an image of another class, or a training image linked into test (both
    # were counted with no word); a file linked from outside every class folder is read
    for link, target, split in (("test/happy/dupe.png", "test/sad/b.png", "test"),
                                ("test/happy/leak.png", "train/happy/t.png", "test")):
        (root / link).symlink_to(root / target)
        with pytest.raises(UserError, match=rf"{link}: a symbolic link to .*{target}, an image of the class folder "
                                            rf"{Path(target).parent.as_posix()}; it would count under two classes"):
            datasets.get("folder", root).labels(split)
        (root / link).unlink()
    _image(tmp_path / "loose/z.png", 70)
    (root / "test/happy/outside.png").symlink_to(tmp_path / "loose/z.png")
    assert "test/happy/outside.png" in datasets.get("folder", root).labels("test").names
    (root / "test/happy/outside.png").unlink()  # an image of the linked folder session2/, linked again
    (root / "test/happy/outside.png").symlink_to(elsewhere / "x.png")
    with pytest.raises(UserError, match=r"outside.png: a symbolic link to .*session2/x.png, the image read as "
                                        r".*test/happy/linked/x.png; it would count twice"):
        datasets.get("folder", root).labels("test")
    (root / "test/happy/outside.png").unlink()
    (root / "test/happy/again.png").symlink_to(root / "test/happy/a.png")  # a second name in its own folder
    with pytest.raises(UserError, match=r"test/happy/again.png: a symbolic link to .*test/happy/a.png, the image "
                                        r"read as .*test/happy/a.png; it would count twice"):
        datasets.get("folder", root).labels("test")


@pytest.mark.parametrize("asked", ["train", "test"])
def test_a_folder_or_file_outside_linked_twice_is_refused_whichever_split_is_asked(tmp_path, asked):
    """docs/DATASETS.md: a link to images already read is an error naming it. One outside folder (or
    file) linked into train/happy and test/sad put its image in both splits under two classes (train
    and test each counted it, exit 0): the check covered one class folder of one split at a time."""
    pool = tmp_path / "ext/pool"
    _image(pool / "y.png", 10)
    root = tmp_path / "faces"
    for name in ("train/happy/a.png", "train/sad/b.png", "test/happy/c.png", "test/sad/d.png"):
        _image(root / name, 20)
    (root / "train/happy/sub").symlink_to(pool, target_is_directory=True)
    assert datasets.get("folder", root).labels(asked).n_total == (3 if asked == "train" else 2)  # once: read
    (root / "test/sad/sub").symlink_to(pool, target_is_directory=True)
    with pytest.raises(UserError) as error:
        datasets.get("folder", root).labels(asked)
    assert str(error.value) == (f"{root / 'test/sad/sub'}: the same folder as one already read "
                                f"({root / 'train/happy/sub'}; both are {pool}), through a symbolic link; remove "
                                f"the link (a loop, or images counted twice, under two classes or in two splits)")
    for link in ("train/happy/sub", "test/sad/sub"):
        (root / link).unlink()
    (root / "train/happy/x.png").symlink_to(pool / "y.png")
    (root / "test/sad/x.png").symlink_to(pool / "y.png")
    with pytest.raises(UserError) as error:
        datasets.get("folder", root).labels(asked)
    assert str(error.value) == (f"{root / 'test/sad/x.png'}: a symbolic link to {pool / 'y.png'}, the image read as "
                                f"{root / 'train/happy/x.png'}; it would count twice (under two classes, in two "
                                f"splits, or twice in one folder): remove the link")
    (root / "test/sad/x.png").unlink()
    (root / "test/sad/sub").symlink_to(pool, target_is_directory=True)  # the folder of a linked image
    with pytest.raises(UserError, match=r"train/happy/x.png: a symbolic link to .*y.png, the image read as "
                                        r".*test/sad/sub/y.png"):
        datasets.get("folder", root).labels(asked)


def test_an_unusable_file_of_one_split_does_not_stop_another(tmp_path):
    """The walk covers every split, but a split's own errors (a file that is no image) are raised
    only when that split is read, as before."""
    root = tmp_path / "faces"
    _image(root / "train/happy/a.png", 1)
    (root / "train/happy/notes.txt").write_text("x")
    _image(root / "test/happy/b.png", 2)
    data = datasets.get("folder", root)
    assert data.labels("test").names == ["test/happy/b.png"]
    with pytest.raises(UserError, match=r"train/happy/notes.txt: not an image file"):
        data.labels("train")


def test_an_unreadable_folder_of_one_split_does_not_stop_another(tmp_path, monkeypatch):
    """A folder that cannot be listed (no permission) is an error of its split only."""
    import os
    root = tmp_path / "faces"
    _image(root / "train/happy/a.png", 1)
    _image(root / "train/happy/locked/c.png", 3)
    _image(root / "test/happy/b.png", 2)
    scandir = os.scandir

    def refusing(path):  # the tests run as root, where chmod 000 does not stop a listing
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    data = datasets.get("folder", root)
    assert data.labels("test").names == ["test/happy/b.png"]
    with pytest.raises(UserError, match=r"train/happy/locked: cannot read the folder \(Permission denied\)"):
        data.labels("train")


def test_a_named_pipe_named_like_an_image_is_refused_not_read(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the export or training hung."""
    import os
    root = tmp_path / "faces"
    _image(root / "train/happy/a.png", 1)
    _image(root / "test/happy/b.png", 2)
    os.mkfifo(root / "test/happy/pipe.png")
    data = datasets.get("folder", root)
    assert data.labels("train").names == ["train/happy/a.png"]
    with pytest.raises(UserError, match=r"test/happy/pipe\.png: not a regular file \(a named pipe, socket or device\)"):
        data.labels("test")


def test_two_folders_of_one_class_are_merged_with_a_warning(tmp_path, caplog):
    root = tmp_path / "faces"
    _image(root / "test/Happy/a.png", 10)
    _image(root / "test/happiness/b.png", 20)
    _image(root / "test/sad/c.png", 30)
    _image(root / "train/happy/d.png", 40)  # another split's spelling: no warning for it
    with caplog.at_level("WARNING"):
        test = datasets.get("folder", root).labels("test")
    assert test.classes.tolist() == [0, 0, 1]  # test/Happy/a, test/happiness/b, test/sad/c
    assert "folders Happy/, happiness/ are all the class happiness" in caplog.text
    assert caplog.text.count("are all the class") == 1


def test_classes_txt_gives_order_and_free_names(tmp_path):
    root = tmp_path / "kdef"
    (root).mkdir()
    (root / "classes.txt").write_text("Calm\nhappy\n\nScared\n")
    for name, value in (("calm", 1), ("happy", 2), ("Scared", 3)):
        _image(root / "test" / name / "x.png", value)
    data = datasets.get("folder", root)
    assert data.class_names == ("Calm", "happy", "Scared")
    test = data.labels("test")  # ids sorted as strings: upper case first
    assert test.names == ["test/Scared/x.png", "test/calm/x.png", "test/happy/x.png"]
    assert test.classes.tolist() == [2, 0, 1]
    (root / "classes.txt").write_text("Calm\nhappy\nScared\nBored\n")
    with pytest.raises(UserError, match=r"classes.txt: class 'Bored' has no folder"):
        datasets.get("folder", root)
    (root / "classes.txt").write_text("Calm\nhappy\n")
    with pytest.raises(UserError, match=r"test/Scared: class folder not listed in .*classes.txt \(it lists Calm, happy\)"):
        datasets.get("folder", root)


def test_errors_name_the_path(tmp_path):
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 1)
    _image(root / "test/smirk/b.png", 1)
    with pytest.raises(UserError, match=r"test/smirk: unknown class folder name; accepted .*happiness \(happy, joy\)"):
        datasets.get("folder", root)
    (root / "test/smirk/b.png").unlink()
    (root / "test/smirk").rmdir()
    (root / "test/happy/broken.jpg").write_bytes(b"not a jpeg")
    data = datasets.get("folder", root)
    with pytest.raises(UserError, match=r"test/happy/broken.jpg: not a readable image"):
        data.read_image("test/happy/broken.jpg")
    (root / "test/happy/notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"test/happy/notes.txt: not an image file"):
        datasets.get("folder", root).labels("test")
    (root / "test/happy/notes.txt").unlink()
    (root / "val/happy").mkdir(parents=True)
    with pytest.raises(UserError, match=r"val: the validation split is empty"):
        datasets.get("folder", root).labels("validation")
    with pytest.raises(UserError, match=r"train: split folder not found\n"):
        datasets.get("folder", root).labels("train")
    (root / "Train").mkdir()  # a capitalised split folder is named in the error
    with pytest.raises(UserError, match=r"train: split folder not found \(found 'Train': split folder names "
                                        r"are lower case\)"):
        datasets.get("folder", root).labels("train")
    (root / "Train").rmdir()
    _image(root / "test/sad.png", 1)
    with pytest.raises(UserError, match=r"test/sad.png: files must sit in a class folder"):
        datasets.get("folder", root)
    with pytest.raises(UserError, match=r"no train/, val/ or test/ folder"):
        datasets.get("folder", tmp_path / "faces" / "test")


def test_synthetic_folder_sample(tmp_path):
    root = synthetic_faces.write_folder_sample(tmp_path / "faces", n_train=28, n_val=7, n_test=14, seed=2)
    data = datasets.get("folder", root)
    assert data.class_names == datasets.classes.RAFDB_CLASSES and data.has_validation
    test = data.labels("test")
    assert len(test) == 14 and len(data.labels("validation")) == 7
    folders = [name.split("/")[1] for name in test.names]
    expected = [datasets.classes.RAFDB_CLASSES.index(datasets.canonical_name(f)) for f in folders]
    assert test.classes.tolist() == expected
    assert set(folders) <= set(synthetic_faces.FOLDER_NAMES)
    assert data.read_image(test.names[0]).shape == (64, 64, 3)
    train, val = data.train_validation()
    assert len(train) == 28 and val.names == data.labels("validation").names


def test_from_fer2013_conversion_round_trip(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    fer = synthetic_faces.write_fer_sample(tmp_path / "FERPlus", 24, 10, 8, seed=5)
    out = tmp_path / "fer-folders"
    result = subprocess.run([sys.executable, str(repo / "folder_dataset.py"), "from-fer2013", str(fer), str(out)],
                            capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert (out / "classes.txt").read_text().split() == list(datasets.classes.FERPLUS_CLASSES)
    source = datasets.get("ferplus", fer)
    folders = datasets.get("folder", out)
    assert folders.class_names == source.class_names
    for split, folder in (("test", "test"), ("validation", "val"), ("train", "train")):
        expected = source.labels(split)
        got = folders.labels(split)
        # ids: <folder>/<class of the FER+ argmax>/<row>.png, written out by hand
        wanted = sorted(f"{folder}/{source.class_names[c]}/{name}.png" for name, c in zip(expected.names, expected.classes))
        assert got.names == wanted
    name = expected.names[0]
    path = out / "train" / source.class_names[expected.classes[0]] / f"{name}.png"
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.shape == (48, 48)  # grey stays grey
    np.testing.assert_array_equal(written, source.read_image(name)[:, :, 0])
    again = subprocess.run([sys.executable, str(repo / "folder_dataset.py"), "from-fer2013", str(fer), str(out)],
                           capture_output=True, text=True, cwd=repo)
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr
    by_emotion = tmp_path / "by-emotion"
    subprocess.run([sys.executable, str(repo / "folder_dataset.py"), "from-fer2013", str(fer), str(by_emotion),
                    "--classes", "fer2013", "--test-split", "PrivateTest"], check=True, cwd=repo, capture_output=True)
    assert len(datasets.get("folder", by_emotion).labels("test")) == 8


def test_classes_txt_with_bom_and_crlf(tmp_path):
    """Notepad's and Excel's "UTF-8" start with a byte-order mark and end lines with CRLF: the
    first name is 'positive', not '\\ufeffpositive'."""
    root = tmp_path / "valence"
    root.mkdir()
    (root / "classes.txt").write_bytes(b"\xef\xbb\xbfpositive\r\nnegative\r\n")
    _image(root / "test" / "negative" / "a.png", 1)
    _image(root / "test" / "positive" / "b.png", 2)
    data = datasets.get("folder", root)
    assert data.class_names == ("positive", "negative")
    test = data.labels("test")
    assert test.names == ["test/negative/a.png", "test/positive/b.png"] and test.classes.tolist() == [1, 0]


def test_classes_txt_not_in_utf8_is_named_with_its_line(tmp_path):
    """A classes.txt saved as Latin-1 ('heureux' with an e-acute byte 0xe9 on line 2) is an error
    naming the file and line as not UTF-8; it was decoded with U+FFFD in place of the letter, and
    the folder 'h\u00e9ureux' was then reported as 'not listed'."""
    root = tmp_path / "faces"
    root.mkdir()
    (root / "classes.txt").write_bytes("triste\nh\u00e9ureux\n".encode("latin-1"))
    _image(root / "test" / "triste" / "a.png", 1)
    _image(root / "test" / "h\u00e9ureux" / "b.png", 2)
    with pytest.raises(UserError) as error:
        datasets.get("folder", root)
    assert str(error.value).startswith(f"{root / 'classes.txt'}:2: the class list is not valid UTF-8 (byte 0xe9)")
    # counted from the file's start with a byte-order mark too, and with CR or CRLF line ends
    for start, end in ((b"\xef\xbb\xbf", b"\n"), (b"\xef\xbb\xbf", b"\r\n"), (b"", b"\r")):
        (root / "classes.txt").write_bytes(start + end.join([b"triste", b"", "h\u00e9ureux".encode("latin-1")]) + end)
        with pytest.raises(UserError, match=r"classes.txt:3: the class list is not valid UTF-8 \(byte 0xe9\)"):
            datasets.get("folder", root)
    # the same names in UTF-8 are read
    (root / "classes.txt").write_text("triste\nh\u00e9ureux\n", encoding="utf-8")
    assert datasets.get("folder", root).class_names == ("triste", "h\u00e9ureux")


def test_rafdb_label_lists_not_in_utf8_are_named_with_their_line(tmp_path):
    """The same for RAF-DB's hard-label list and soft-label CSV (line 3 holds a cp1252 byte)."""
    import rafdb_dataset

    partition = tmp_path / rafdb_dataset.PARTITION_FILE
    partition.parent.mkdir(parents=True)
    partition.write_bytes(b"test_0001.jpg 1\ntest_0002.jpg 2\ntest_0003.jpg \x96 3\n")
    with pytest.raises(UserError, match=rf"^{partition}:3: the hard-label list is not valid UTF-8 \(byte 0x96\)"):
        rafdb_dataset.read_partition(tmp_path)
    (tmp_path / rafdb_dataset.CSV_FILE).write_bytes(b"1,0,0,0,0,0,0\n" * 2 + b"1,0,0,0,0,0,0\xa0\n")
    with pytest.raises(UserError, match=r"distribute_basic.csv:3: the soft-label CSV is not valid UTF-8 \(byte 0xa0\)"):
        rafdb_dataset.read_distribution_csv(tmp_path)


@pytest.mark.parametrize("name", ["broken.jpg", "broken.bmp", "broken.webp"])
def test_undecodable_file_message_lists_the_accepted_formats(tmp_path, name):
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 1)
    (root / "test/happy" / name).write_bytes(b"neither of the accepted formats")
    data = datasets.get("folder", root)
    with pytest.raises(UserError) as error:
        data.read_image(f"test/happy/{name}")
    assert str(error.value) == (f"{root / 'test/happy' / name}: not a readable image "
                                "(corrupt, or not a JPEG, PNG, BMP, WebP or TIFF file)")


def test_float_tiff_is_refused_by_its_sample_type(tmp_path, capfd):
    """A valid TIFF of 32-bit float samples (which the 8-bit readers cannot take) is named as such,
    with what to save instead, not called corrupt; a 16-bit one is read, reduced to 8 bits."""
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 1)
    ok, data = cv2.imencode(".tiff", np.full((8, 9, 3), 0.5, np.float32))
    assert ok
    (root / "test/happy/float.tiff").write_bytes(data.tobytes())
    sixteen = np.zeros((8, 9, 3), np.uint16)
    sixteen[:4] = 65535  # full scale reads as 255, 0 as 0 (whichever rounding the reduction uses)
    ok, data = cv2.imencode(".tiff", sixteen)
    (root / "test/happy/sixteen.tiff").write_bytes(data.tobytes())
    dataset = datasets.get("folder", root)
    with pytest.raises(UserError) as error:
        dataset.read_image("test/happy/float.tiff")
    assert str(error.value) == (f"{root / 'test/happy/float.tiff'}: an image of float32 samples (3 channel(s)); "
                                f"images are read as 8-bit (16-bit integers reduced to 8): save it with unsigned "
                                f"8- or 16-bit integer samples")
    assert "WARN" not in capfd.readouterr().err  # OpenCV's own line before the error ("Sorry, can not handle")
    image = dataset.read_image("test/happy/sixteen.tiff")
    assert image.dtype == np.uint8 and image.shape == (8, 9, 3)
    assert (image[:4] == 255).all() and (image[4:] == 0).all()


@pytest.mark.parametrize("keep_grey", [False, True])
def test_sixteen_bit_tiff_and_png_keep_the_high_byte_alike(tmp_path, keep_grey):
    """One 16-bit picture saved as PNG and as TIFF reads as the same 8-bit pixels, v >> 8 (OpenCV's
    TIFF reader rounded v / 257 for colour files: values 1 level apart on about half the samples)."""
    from datasets import images

    rng = np.random.default_rng(7)
    colour = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)  # BGR, as OpenCV writes it
    grey = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    for pixels, expected in ((colour, (colour >> 8).astype(np.uint8)[:, :, ::-1]),
                             (grey, (grey >> 8).astype(np.uint8)[:, :, None])):
        if pixels.ndim == 2 and not keep_grey:
            expected = np.repeat(expected, 3, axis=2)
        for suffix in (".png", ".tiff"):
            ok, data = cv2.imencode(suffix, pixels)
            assert ok
            image = images.decode_image(data.tobytes(), f"x{suffix}", keep_grey=keep_grey)
            assert image.dtype == np.uint8 and image.shape == expected.shape
            assert np.array_equal(image, expected), suffix
    # a BigTIFF (its own signature, II+): the same rule; tifffile writes the planes in RGB order
    import io

    import tifffile

    stream = io.BytesIO()
    tifffile.imwrite(stream, colour[:, :, ::-1], bigtiff=True, photometric="rgb")
    assert stream.getvalue()[:4] == b"II+\x00"
    image = images.decode_image(stream.getvalue(), "x.tif", keep_grey=keep_grey)
    assert np.array_equal(image, (colour >> 8).astype(np.uint8)[:, :, ::-1])


def test_grey_png_with_alpha_stays_grey():
    """A grey + alpha PNG (colour type 4, written here with PIL's mode LA) reads as H x W x 1 with
    its grey values, alpha dropped; an RGBA PNG stays RGB."""
    import io

    from PIL import Image

    from datasets import images

    grey = np.arange(48 * 40, dtype=np.uint8).reshape(48, 40)
    alpha = np.full_like(grey, 128)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey, alpha], axis=-1), mode="LA").save(buffer, format="PNG")
    data = buffer.getvalue()
    assert data[25] == 4  # the IHDR colour type: grey with alpha
    decoded = images.decode_image(data, "la.png", keep_grey=True)
    assert decoded.shape == (48, 40, 1) and np.array_equal(decoded[..., 0], grey)
    assert images.decode_image(data, "la.png").shape == (48, 40, 3)  # without keep_grey: RGB as before
    rgba = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), mode="RGBA").save(rgba, format="PNG")
    assert images.decode_image(rgba.getvalue(), "rgba.png", keep_grey=True).shape == (8, 8, 3)


def test_ids_are_sorted_whatever_the_walk_order(tmp_path):
    """Ids are the paths below the root (docs/DATASETS.md), listed in sorted order: sub/alpha before zeta."""
    for name in ("happy/zeta.png", "happy/sub/alpha.png", "happy/beta.png"):
        _image(tmp_path / "test" / name, 10)
    assert list(datasets.folder.FolderDataset(tmp_path).labels("test").names) == [
        "test/happy/beta.png", "test/happy/sub/alpha.png", "test/happy/zeta.png"]


def test_classes_txt_names_numbered_folders(tmp_path):
    """``FOLDER = NAME`` lines: the class order is the file's, the names are the given ones (so a
    model's classes match them); a folder or name twice, an empty side, or an unlisted folder is
    an error naming the line or folder."""
    root = tmp_path / "DATASET"
    for folder, value in (("1", 1), ("4", 4), ("7", 7)):
        _image(root / "train" / folder / f"train_{folder}.jpg", value)
        _image(root / "test" / folder / f"test_{folder}.jpg", value)
    (root / "classes.txt").write_text("4 = happiness\n1=surprise\n\n  7 =  neutral \n")
    data = datasets.get("folder", root)
    assert data.class_names == ("happiness", "surprise", "neutral")
    test = data.labels("test")
    assert test.names == ["test/1/test_1.jpg", "test/4/test_4.jpg", "test/7/test_7.jpg"]
    assert test.classes.tolist() == [1, 0, 2]
    mapping = datasets.map_classes(("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
                                   data.class_names)
    assert mapping.dataset_to_model.tolist() == [3, 0, 6]
    for text, message in (("1 = surprise\n4 = surprise\n7 = neutral\n", r"classes.txt:2: class 'surprise' is listed twice"),
                          ("1 = surprise\n1 = fear\n", r"classes.txt:2: folder '1' is listed twice"),
                          # two names of one emotion (it was refused only at evaluation, as "model classes")
                          ("1 = happy\n4 = joy\n7 = neutral\n",
                           r"classes.txt:2: class 'joy' is the emotion happiness, as 'happy' is; models are matched "
                           r"to classes by emotion, so rename one \(a name outside the emotion vocabulary, e\.g\. "
                           r"joy_2, is matched exactly\)"),
                          ("1 = surprise\n4 =\n", r"classes.txt:2: '4 =': expected a class name, or FOLDER = NAME"),
                          ("1 = a = b\n", r"classes.txt:1: '1 = a = b': expected a class name"),
                          ("1 = surprise\n4 = happiness\n", r"train/7: class folder not listed in .*\(it lists 1, 4\)"),
                          ("1 = surprise\n4 = happiness\n7 = neutral\n2 = fear\n",
                           r"classes.txt: class 'fear' has no folder '2' in train/, test/")):
        (root / "classes.txt").write_text(text)
        with pytest.raises(UserError, match=message):
            datasets.get("folder", root)


@pytest.mark.parametrize("folders, numbering, first_line, other", [
    (("1", "2", "7"), "RAF-DB", "  1 = surprise", "AffectNet numbers them 1 happy, 2 sad, 7 contempt"),
    (("0", "3", "6"), "FER2013", "  0 = angry", "AffectNet numbers them 0 neutral, 3 surprise, 6 anger"),
    (("0", "7"), "AffectNet", "  0 = neutral", None),
])
def test_numbered_folders_get_a_ready_classes_txt(tmp_path, folders, numbering, first_line, other):
    root = tmp_path / "faces"
    for folder in folders:
        _image(root / "test" / folder / "a.png", 1)
    with pytest.raises(UserError) as error:
        datasets.get("folder", root)
    lines = str(error.value).splitlines()
    assert lines[0].endswith(f"or list your class names in {root / 'classes.txt'}")
    assert f"if they follow {numbering}'s numbering:" in lines[1]
    assert lines[2] == first_line and len([line for line in lines if line.startswith("  ")]) == len(folders)
    assert (other in str(error.value)) if other else "numbers them" not in str(error.value)
    # the printed lines, written as classes.txt, make the tree readable
    (root / "classes.txt").write_text("\n".join(line for line in lines if line.startswith("  ")) + "\n")
    assert datasets.get("folder", root).class_names[0] == first_line.split("= ")[1]


def test_numbered_folders_outside_every_numbering_get_no_guess(tmp_path):
    root = tmp_path / "faces"
    for folder in ("1", "9"):
        _image(root / "test" / folder / "a.png", 1)
    with pytest.raises(UserError) as error:
        datasets.get("folder", root)
    assert "numbering" not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spelling", ["valid", "validation"])
def test_validation_folder_spellings(tmp_path, spelling, caplog):
    root = tmp_path / "faces"
    _image(root / "train/happy/a.png", 1)
    _image(root / f"{spelling}/happy/b.png", 2)
    _image(root / "test/happy/c.png", 3)
    _image(root / "images/happy/d.png", 4)  # not a split: ignored, with a warning naming it
    (root / "test/happy/Thumbs.db").write_bytes(b"\0thumbnails")
    (root / "train/desktop.ini").write_text("[.ShellClassInfo]\n")
    data = datasets.get("folder", root)
    assert data.has_validation and data.split_name("validation") == spelling
    assert data.labels("validation").names == [f"{spelling}/happy/b.png"]
    # the image is read from the folder it lies in (pixel value 2, written above)
    assert (data.read_image(f"{spelling}/happy/b.png") == 2).all()
    assert data.labels("test").names == ["test/happy/c.png"]
    assert f"{root}: images/ ignored (not a split folder" in caplog.text
    assert f"{spelling}/ ignored" not in caplog.text and "train/ ignored" not in caplog.text
    _image(root / "val/happy/e.png", 5)
    with pytest.raises(UserError, match=rf"both val/ and {spelling}/ would be the validation split"):
        datasets.get("folder", root)


def test_a_nested_tree_with_two_validation_spellings_is_pointed_to(tmp_path):
    """The hint for a tree one level down looks into it: two validation spellings there are that
    tree's problem, reported when it is read, not in place of the hint about the parent."""
    root = tmp_path / "download"
    for split in ("train", "val", "valid", "test"):
        _image(root / f"faces/{split}/happy/a.png", 1)
    with pytest.raises(UserError, match=rf"found split folders in {root / 'faces'}: use --data {root / 'faces'}"):
        datasets.get("folder", root)


def test_class_folders_without_split_folders_are_told_where_to_go(tmp_path):
    root = tmp_path / "ck"
    _image(root / "anger/a.png", 1)
    _image(root / "Happy/b.png", 2)
    with pytest.raises(UserError, match=r"no train/, val/ or test/ folder; Happy/, anger/ look like class folders: "
                                        rf"put them in {root / 'test'}/"):
        datasets.get("folder", root)
    (root / "Test").mkdir()
    with pytest.raises(UserError, match=r"no train/, val/ or test/ folder \(found Test/: split folder names are lower"):
        datasets.get("folder", root)


def test_tiff_images_are_read(tmp_path):
    root = tmp_path / "jaffe"
    _image(root / "test/happy/KA.HA1.29.tiff", 90, grey=True, size=(40, 30))
    _image(root / "test/sad/KA.SA1.33.tif", 40, size=(40, 30))
    data = datasets.get("folder", root)
    test = data.labels("test")
    assert test.names == ["test/happy/KA.HA1.29.tiff", "test/sad/KA.SA1.33.tif"]
    grey, colour = (data.read_image(name) for name in test.names)
    assert grey.shape == (40, 30, 1) and (grey == 90).all() and colour.shape == (40, 30, 3) and (colour == 40).all()


def test_one_synonym_table_for_folders_and_class_order(tmp_path):
    """A folder called ``scared`` and a model's ``--class-order ...,scared,...`` both mean fear (the
    two used different tables: 'scared' and 'neutrality' were known to --class-order only)."""
    import checkpoints

    root = tmp_path / "faces"
    _image(root / "test/Scared/a.png", 1)
    _image(root / "test/neutrality/b.png", 2)
    data = datasets.get("folder", root)
    assert data.class_names == ("fear", "neutral")
    model = checkpoints.parse_class_order("neutrality,afraid")
    assert model == ("neutral", "fear")
    assert datasets.map_classes(model, data.class_names).dataset_to_model.tolist() == [1, 0]


@pytest.mark.parametrize("dataset", ["folder", "fer2013"])
def test_missing_corrupted_sets_say_which_export_makes_them(tmp_path, dataset):
    import dataset_eval

    if dataset == "folder":
        root = tmp_path / "faces"
        _image(root / "test/happy/a.png", 1)
        how = f"rafdb_aug_dataset.py export --dataset folder --data {root}"
    else:
        root = synthetic_faces.write_fer_sample(tmp_path / "FERPlus", n_train=7, n_public=7, n_private=7, seed=0)
        how = f"ferplus_aug_dataset.py export --dataset fer2013 --data {root}"
    # fog is a held-out ImageNet-C corruption: exported with its set and parameter set
    how += f" --out {tmp_path / 'out'} --corruption-set imagenet-extra --param-set <the one the exported sets used>"
    data = datasets.get(dataset, root)
    prefix = "faces.test" if dataset == "folder" else "fer2013.PublicTest"
    (tmp_path / "out" / f"{prefix}.gaussian_noise.1").mkdir(parents=True)  # one set exported, not the two asked
    with pytest.raises(UserError) as error:
        dataset_eval.corrupted_units(data, data.labels("test"), tmp_path / "out", [("contrast", 1), ("fog", 2)], False)
    assert str(error.value) == (f"{tmp_path / 'out'}: 2 corrupted set(s) missing (contrast.1, fog.2) (evaluate only "
                                f"what was exported with --corruptions/--severities, export the rest with {how}, "
                                "or pass --allow-missing to evaluate what exists)")


def test_layout_hints_for_a_tree_one_level_up_rafdb_and_a_val_without_test(tmp_path):
    root = tmp_path / "kaggle"
    _image(root / "DATASET/train/happy/a.png", 1)
    with pytest.raises(UserError, match=rf"no train/, val/ or test/ folder \(found split folders in "
                                        rf"{root / 'DATASET'}: use --data {root / 'DATASET'}\)"):
        datasets.get("folder", root)
    rafdb = tmp_path / "RAF-DB"
    (rafdb / "basic/Image/aligned").mkdir(parents=True)
    with pytest.raises(UserError, match=r"this looks like RAF-DB's own layout: use --dataset rafdb"):
        datasets.get("folder", rafdb)
    affectnet = tmp_path / "affectnet"
    _image(affectnet / "train/happy/a.png", 1)
    _image(affectnet / "val/happy/b.png", 2)
    with pytest.raises(UserError, match=r"test: split folder not found \(found val/, a validation split; to "
                                        r"evaluate on it, .* rename it to test/\)"):
        datasets.get("folder", affectnet).labels("test")


def test_broken_links_are_named(tmp_path):
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 1)
    (root / "test/sad").symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(UserError, match=rf"test/sad: a broken symbolic link \(to {tmp_path / 'gone'}, which does not exist\)"):
        datasets.get("folder", root)
    (root / "test/sad").unlink()
    (root / "test/happy/b.png").symlink_to(tmp_path / "b.png")
    data = datasets.get("folder", root)
    with pytest.raises(UserError, match=r"test/happy/b.png: a broken symbolic link"):
        data.labels("test")


def test_export_precheck_warns_about_mixed_image_sizes(tmp_path, caplog):
    import dataset_writer

    _image(tmp_path / "a.png", 1, size=(48, 48))
    _image(tmp_path / "b.png", 1, size=(72, 60))  # 1.5 x 48: not yet
    dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "b.png"])
    assert "the images range" not in caplog.text
    _image(tmp_path / "c.png", 1, size=(224, 224))
    dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"])
    assert (f"the images range from 48 px ({tmp_path / 'a.png'}) to 224 px high ({tmp_path / 'c.png'})"
            in caplog.text)


def test_export_precheck_names_every_unreadable_source_at_once(tmp_path):
    """A zero-byte file and a text file named .jpg among good images: both are named in one error
    (the first run named only the first, the rerun the next)."""
    import dataset_writer

    _image(tmp_path / "a.png", 1, size=(48, 48))
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "c.jpg").write_text("not a picture")
    _image(tmp_path / "d.png", 1, size=(48, 48))
    paths = [tmp_path / name for name in ("a.png", "b.jpg", "c.jpg", "d.png")]
    with pytest.raises(UserError) as error:
        dataset_writer.refuse_unusable_sources(paths)
    assert str(error.value).startswith(f"{tmp_path / 'b.jpg'}: ")
    assert str(error.value).endswith(f" (and 1 more source image(s) that cannot be read: {tmp_path / 'c.jpg'})")


def test_export_precheck_refuses_a_grey_float_tiff_before_anything_is_written(tmp_path):
    """Pillow reads a one-channel float32 TIFF's header (mode F), so the first check passed it and the
    export stopped at its render; the colour one was caught by the check already."""
    import dataset_writer

    _image(tmp_path / "a.png", 1, size=(48, 48))
    ok, data = cv2.imencode(".tiff", np.full((40, 40), 0.5, np.float32))
    assert ok
    (tmp_path / "grey_float.tiff").write_bytes(data.tobytes())
    with pytest.raises(UserError, match=r"grey_float\.tiff: an image of float32 samples \(1 channel\(s\)\)"):
        dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "grey_float.tiff"])
    # signed 16-bit samples (Pillow reads the header as I;16S): the same, named by their type
    ok, data = cv2.imencode(".tiff", np.full((40, 40), -5, np.int16))
    assert ok
    (tmp_path / "signed.tiff").write_bytes(data.tobytes())
    with pytest.raises(UserError, match=r"signed\.tiff: an image of int16 samples \(1 channel\(s\)\).*unsigned"):
        dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "signed.tiff"])
    # unsigned 16-bit passes the check (read as its high byte)
    ok, data = cv2.imencode(".tiff", np.full((40, 40), 600, np.uint16))
    (tmp_path / "unsigned.tiff").write_bytes(data.tobytes())
    dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "unsigned.tiff"])


def test_export_precheck_sizes_are_upright_for_exif_turned_photos(tmp_path, caplog):
    """A JPEG stored 100 wide x 48 high with EXIF orientation 6 (shown turned a quarter) is decoded
    100 high x 48 wide: the size check read the stored header, so it missed the height warning and
    swapped the sides of the too-small message."""
    from PIL import Image

    import dataset_writer

    def turned(path, width, height):
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path, exif=exif.tobytes())

    _image(tmp_path / "a.png", 1, size=(48, 48))
    turned(tmp_path / "b.jpg", 100, 48)
    assert dataset_writer.image_file_size(tmp_path / "b.jpg") == (100, 48)  # (height, width)
    dataset_writer.refuse_unusable_sources([tmp_path / "a.png", tmp_path / "b.jpg"])
    assert (f"the images range from 48 px ({tmp_path / 'a.png'}) to 100 px high ({tmp_path / 'b.jpg'})"
            in caplog.text)
    turned(tmp_path / "c.jpg", 100, 20)  # shown 20 wide, 100 high
    with pytest.raises(UserError, match=r"c.jpg: the image is 20x100 px \(width x height\)"):
        dataset_writer.refuse_unusable_sources([tmp_path / "c.jpg"])


def test_a_missing_perturbation_frame_is_named_in_the_tree_format(tmp_path, random_faces):
    """A folder dataset's RAF-DB-P export of .jpg frames with one frame deleted: the error names that
    .jpg file (it named a .png that never existed); a .png export is read as .png."""
    import dataset_eval
    import fer_export

    root = random_faces(tmp_path / "faces", ("happy", "sad"), 2)
    data = datasets.get("folder", root)
    labels = data.labels("test")
    for suffix in (".jpg", ".png"):
        perturbed = tmp_path / f"P{suffix}"
        folder = perturbed / fer_export.p_folder(data.dataset_name, "test", "p_rotate")
        for image_id in labels.names:
            stem = dataset_eval.perturbation_stem(data, image_id)
            for frame in range(3):
                path = folder / f"{stem}_{frame:02d}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
        stems, work = dataset_eval.perturbed_work(data, labels, perturbed, None, 3)
        assert [Path(path).suffix for path in work[0][1]] == [suffix] * 12
        gone = folder / f"{stems[1]}_01{suffix}"
        gone.unlink()
        with pytest.raises(UserError) as error:
            dataset_eval.perturbed_work(data, labels, perturbed, None, 3)
        assert str(error.value) == (f"{gone}: frame not found (sequence {stems[1]} needs frames 00..02{suffix}; "
                                    f"re-run the perturbation export)")
        # the very first frame missing: the format comes from the sequence's other frames, or the manifest's
        first = folder / f"{stems[0]}_00{suffix}"
        first.unlink()
        for fmt in (None, suffix[1:]):
            with pytest.raises(UserError, match=f"{first}: frame not found"):
                dataset_eval.perturbed_work(data, labels, perturbed, None, 3, fmt)


def test_images_at_the_root_are_ignored_with_a_warning(tmp_path, caplog):
    """An image beside the split folders belongs to no split: left out, now with a warning naming
    it (it was ignored silently, while one loose in a split folder is an error)."""
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 10)
    _image(root / "stray.jpg", 20)
    with caplog.at_level("WARNING"):
        data = datasets.get("folder", root)
    assert data.labels("test").names == ["test/happy/a.png"]
    assert f"{root}: 1 image(s) at the root ignored (stray.jpg): images belong in <split>/<class>/" in caplog.messages


def test_tiff_with_alpha_keeps_the_colour_under_it():
    """docs/DATASETS.md: an alpha channel is dropped, the colour under it kept. OpenCV's TIFF reader
    multiplied the colour by the alpha (a half-transparent red 200 read as 100; PNG and WebP read
    200); a grey + alpha TIFF stays grey, and the TIFF's orientation is still applied."""
    import io

    from PIL import Image

    from datasets import images

    def tiff(array, mode, orientation=None):
        buffer, extra = io.BytesIO(), {}
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            extra["exif"] = exif.tobytes()
        Image.fromarray(array, mode).save(buffer, format="TIFF", **extra)
        return buffer.getvalue()

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[...] = (200, 10, 30, 128)
    for keep_grey in (False, True):
        decoded = images.decode_image(tiff(rgba, "RGBA"), "a.tif", keep_grey=keep_grey)
        assert decoded.shape == (40, 60, 3) and (decoded == (200, 10, 30)).all()
    la = np.zeros((40, 60, 2), np.uint8)
    la[...] = (90, 128)
    assert (images.decode_image(tiff(la, "LA"), "la.tif", keep_grey=True) == np.full((40, 60, 1), 90)).all()
    assert (images.decode_image(tiff(la, "LA"), "la.tif") == np.full((40, 60, 3), 90)).all()
    # orientation 6 (shown turned 90 degrees clockwise): the stored top half is the shown right half
    rgba[20:, :, :3] = 0
    upright = images.decode_image(tiff(rgba, "RGBA", orientation=6), "turned.tif")
    assert upright.shape == (60, 40, 3)
    assert (upright[:, 20:] == (200, 10, 30)).all() and (upright[:, :20] == 0).all()


def test_class_folders_from_macos_nfd_match_an_nfc_classes_txt(tmp_path):
    """macOS names folders decomposed (NFD: o + U+0308 for ö); a classes.txt typed elsewhere is
    composed (NFC). The folder was refused as not listed, in a message that showed the same name."""
    import unicodedata

    composed, decomposed = "Fr\u00f6hlich", "Fro\u0308hlich"
    assert unicodedata.normalize("NFD", composed) == decomposed
    root = tmp_path / "faces"
    _image(root / "test" / decomposed / "a.png", 1)
    _image(root / "test/Traurig/b.png", 2)
    (root / "classes.txt").write_text(f"Traurig\n{composed}\n", encoding="utf-8")
    data = datasets.get("folder", root)
    assert data.class_names == ("Traurig", composed)
    assert data.labels("test").classes.tolist() == [1, 0]  # Fro..hlich/a.png, Traurig/b.png
    (root / "classes.txt").write_text(f"{composed}\nTraurig\n{decomposed.upper()}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"classes.txt:3: folder .* is listed twice"):
        datasets.get("folder", root)


def test_macos_icon_file_is_ignored_and_control_characters_are_escaped(tmp_path):
    """macOS' custom folder icon is a file named "Icon" + carriage return: it was refused as not an
    image, in a message whose raw CR sent the terminal back over it. Now it is ignored like
    Thumbs.db, and another name with a control character is shown escaped."""
    root = tmp_path / "faces"
    _image(root / "test/happy/a.png", 1)
    (root / "test/happy/Icon\r").write_bytes(b"\0icns")
    (root / "test/Icon\r").write_bytes(b"\0icns")  # beside the class folders too
    assert datasets.get("folder", root).labels("test").names == ["test/happy/a.png"]
    (root / "test/happy/notes\r.txt").write_text("x")
    with pytest.raises(UserError) as error:
        datasets.get("folder", root).labels("test")
    assert str(error.value).startswith(f"{root}/test/happy/notes\\r.txt: not an image file")
    assert "\r" not in str(error.value)
