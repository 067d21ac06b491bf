"""Dataset inputs that every later step reads back, refused with one error naming them.

- FER2013 / FER+ Usage: a value other than Training, PublicTest or PrivateTest (a typo such as
  'Publictest') belonged to no split, silently.
- A FER export (corrupted or perturbed) evaluated against another fer2013.csv than the one it was
  exported from.
- A folder image whose file name is not valid UTF-8.
"""

import pytest

import datasets
from cli_common import UserError

PIXELS = " ".join(["128"] * 2304)
HEADER_VOTES = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def _write(root, usages, vote_usages=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(f"0,{PIXELS},{u}\n" for u in usages))
    vote_usages = usages if vote_usages is None else vote_usages
    (root / "fer2013new.csv").write_text(HEADER_VOTES + "\n" + "".join(
        f"{u},fer{i:07d}.png,10,0,0,0,0,0,0,0,0,0\n" for i, u in enumerate(vote_usages)))


def test_a_misspelt_usage_in_fer2013_csv_names_its_line(tmp_path):
    _write(tmp_path, ["Training", "PublicTest", "Publictest", "PrivateTest"])
    with pytest.raises(UserError, match=r"fer2013\.csv:4: Usage 'Publictest': expected one of Training, PublicTest, "
                                        r"PrivateTest"):
        datasets.get("fer2013", tmp_path).labels("test")


def test_a_misspelt_usage_in_fer2013new_csv_names_its_line(tmp_path):
    _write(tmp_path, ["Training", "PublicTest", "PublicTest"], ["Training", "PublicTest", "Public Test"])
    with pytest.raises(UserError, match=r"fer2013new\.csv:4: Usage 'Public Test': expected one of"):
        datasets.get("ferplus", tmp_path).labels("test")


def test_the_three_usages_are_read(tmp_path):
    _write(tmp_path, ["Training", "PublicTest", "PrivateTest", "PublicTest"])
    data = datasets.get("ferplus", tmp_path)
    assert [len(data.labels(split).names) for split in ("train", "test")] == [1, 2]


def test_a_corrupted_export_of_another_csv_is_refused_by_the_evaluation(tmp_path):
    """The manifest records the SHA-256 of the fer2013.csv exported; evaluating it against another
    CSV (clean images from one file, corrupted from another) is refused before any model runs."""
    import fer_export
    import rafdb_aug_dataset

    data = tmp_path / "FER"
    _write(data, ["Training", "PublicTest", "PublicTest"])
    out = tmp_path / "fer-c"
    assert rafdb_aug_dataset.main(["export", "--dataset", "fer2013", "--data", str(data), "--out", str(out),
                                   "--corruptions", "contrast", "--severities", "1", "--workers", "1"]) == 0
    assert len(fer_export.corrupted_sets(datasets.get("fer2013", data), out)) == 1
    text = (data / "fer2013.csv").read_text()
    (data / "fer2013.csv").write_text(text.replace(f"0,{PIXELS},PublicTest", f"1,{PIXELS},PublicTest", 1))
    with pytest.raises(UserError, match=r"^--corrupted .*fer-c: exported from another fer2013\.csv than"):
        fer_export.corrupted_sets(datasets.get("fer2013", data), out)


def test_a_perturbed_export_of_another_csv_is_refused_by_the_evaluation(tmp_path):
    """The same for the sequences: frames of one CSV's rows scored against another CSV's labels
    (here the first test row's emotion changed after the export) is refused before any model runs."""
    import eval_perturbed_rafdb
    import rafdb_perturb_dataset

    data = tmp_path / "FER"
    _write(data, ["Training", "PublicTest", "PublicTest"])
    out = tmp_path / "fer-p"
    assert rafdb_perturb_dataset.main(["export", "--dataset", "fer2013", "--data", str(data), "--out", str(out),
                                       "--perturbations", "p_rotate", "--workers", "1"]) == 0
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the refusal comes first")
    text = (data / "fer2013.csv").read_text()
    (data / "fer2013.csv").write_text(text.replace(f"0,{PIXELS},PublicTest", f"1,{PIXELS},PublicTest", 1))
    with pytest.raises(UserError, match=r"^--perturbed .*fer-p: exported from another fer2013\.csv than"):
        eval_perturbed_rafdb.main([str(model), "--dataset", "fer2013", "--data", str(data), "--perturbed", str(out)])


def test_a_folder_image_whose_name_is_not_utf8_is_named_before_any_work(tmp_path):
    """A file name of Latin-1 bytes: one error naming it (the export stopped with a raw
    UnicodeEncodeError: 'surrogates not allowed')."""
    import os

    root = tmp_path / "faces"
    folder = root / "test" / "happy"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(b"")
    name = os.fsdecode(b"caf\xe9.png")
    (folder / name).write_bytes(b"")
    with pytest.raises(UserError, match=r"caf\\xe9\.png'?: the file name is not valid UTF-8"):
        datasets.get("folder", root).labels("test")
