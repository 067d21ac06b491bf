"""The dataset interface: registry, shared options, RAF-DB through it, class mapping by name."""

import argparse

import numpy as np
import pytest

import datasets
import rafdb_dataset as rd
from cli_common import UserError
from datasets.classes import FER2013_CLASSES, FERPLUS_CLASSES, RAFDB_CLASSES


def _parse(argv):
    parser = argparse.ArgumentParser()
    datasets.add_dataset_args(parser)
    return parser.parse_args(argv)


def test_rafdb_through_the_interface_equals_rafdb_dataset(sample_tree):
    data = datasets.open_dataset(_parse(["--rafdb", str(sample_tree)]))
    assert data.name == "rafdb" and data.class_names == rd.CLASS_NAMES and data.protocol == "soft"
    for split in ("train", "test"):
        direct = rd.load_labels(sample_tree, split, "soft")
        through = data.labels(split)
        assert through.names == direct.names
        np.testing.assert_array_equal(through.labels, direct.labels)
        assert (through.n_total, through.n_dropped) == (direct.n_total, direct.n_dropped)
    name = data.labels("test").names[0]
    np.testing.assert_array_equal(data.read_image(name), rd.read_image(rd.aligned_path(sample_tree, name)))
    assert data.image_path(name) == sample_tree / "basic/Image/aligned" / f"{name}_aligned.jpg"
    hard = datasets.open_dataset(_parse(["--data", str(sample_tree), "--labels", "hard"]))
    assert len(hard.labels("test")) == len(rd.load_labels(sample_tree, "test", "hard"))


def test_rafdb_has_no_validation_split_and_holds_out_train(sample_tree):
    data = datasets.get("rafdb", sample_tree)
    with pytest.raises(UserError, match="no validation split"):
        data.labels("validation")
    train, val = data.train_validation(0.2, seed=4)
    expected_train, expected_val = rd.holdout_split(rd.load_labels(sample_tree, "train", "soft"), 0.2, seed=4)
    assert train.names == expected_train.names and val.names == expected_val.names
    assert not set(train.names) & set(val.names)


def test_defaults_and_option_conflicts(tmp_path):
    args = _parse([])
    assert (args.dataset, args.data, args.labels, args.test_split, args.ferplus_norm) == (
        "rafdb", None, None, "PublicTest", "fix")
    with pytest.raises(UserError, match="--rafdb names a RAF-DB root"):
        datasets.open_dataset(_parse(["--dataset", "ferplus", "--rafdb", str(tmp_path)]))
    with pytest.raises(UserError, match="disagree"):
        datasets.open_dataset(_parse(["--rafdb", str(tmp_path), "--data", str(tmp_path / "x")]))
    with pytest.raises(UserError, match="--ferplus-norm applies to --dataset ferplus only"):
        datasets.open_dataset(_parse(["--ferplus-norm", "legacy"]))
    with pytest.raises(UserError, match="needs --data DIR"):
        datasets.open_dataset(_parse(["--dataset", "folder"]))
    with pytest.raises(UserError, match="offers hard"):
        datasets.open_dataset(_parse(["--dataset", "fer2013", "--data", str(tmp_path), "--labels", "soft"]))
    with pytest.raises(SystemExit):
        _parse(["--dataset", "affectnet"])


def test_registry_names_and_one_class_per_entry():
    assert tuple(datasets.REGISTRY) == ("rafdb", "ferplus", "fer2013", "folder")
    for name in datasets.REGISTRY:
        cls = datasets.dataset_class(name)
        assert cls.name == name and issubclass(cls, datasets.Dataset)


def test_a_fifth_dataset_is_one_registered_module(tmp_path, monkeypatch):
    module = tmp_path / "tinyset.py"
    module.write_text(
        "import numpy as np\n"
        "from datasets.base import Dataset, LabelSet\n"
        "class Tiny(Dataset):\n"
        "    name, title, class_names, protocols, default_root = 'tiny', 'Tiny', ('joy', 'sad'), ('hard',), '.'\n"
        "    def labels(self, split):\n"
        "        return LabelSet(['a', 'b'], np.eye(2, dtype=np.float32), 'hard', split)\n"
        "    def read_image(self, image_id):\n"
        "        return np.full((4, 4, 1), ord(image_id), np.uint8)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(datasets.REGISTRY, "tiny", "tinyset:Tiny")
    parser = argparse.ArgumentParser()
    datasets.add_dataset_args(parser)
    data = datasets.open_dataset(parser.parse_args(["--dataset", "tiny"]))
    assert data.labels("test").names == ["a", "b"] and data.read_image("b")[0, 0, 0] == 98


# docs/BENCHMARK.md §9.9: matching by name with synonyms, written out by hand.
def test_map_fer2013_model_on_ferplus():
    mapping = datasets.map_classes(FER2013_CLASSES, FERPLUS_CLASSES)
    # FER+ order: neutral happiness surprise sadness anger disgust fear contempt
    # FER2013 order: angry(0) disgust(1) fear(2) happy(3) sad(4) surprise(5) neutral(6)
    assert mapping.dataset_to_model.tolist() == [6, 3, 5, 4, 0, 1, 2, -1]
    assert mapping.model_to_dataset.tolist() == [4, 5, 6, 1, 3, 2, 0]
    assert mapping.missing == ("contempt",) and mapping.extra == ()
    assert mapping.evaluable(np.array([7, 0, 3])).tolist() == [False, True, True]
    assert not mapping.identity


def test_map_rafdb_model_on_fer2013_and_folder_names():
    mapping = datasets.map_classes(RAFDB_CLASSES, FER2013_CLASSES)
    # RAF-DB order: surprise fear disgust happiness sadness anger neutral
    assert mapping.dataset_to_model.tolist() == [5, 2, 1, 3, 4, 0, 6]
    assert mapping.missing == () and mapping.identity is False
    folder = datasets.map_classes(RAFDB_CLASSES, ("Happy", "JOY-less", "Surprised"))
    assert folder.dataset_to_model.tolist() == [3, -1, 0] and folder.missing == ("JOY-less",)
    assert datasets.map_classes(RAFDB_CLASSES, RAFDB_CLASSES).identity
    with pytest.raises(ValueError, match="'happy' and 'Happiness' are the same emotion"):
        datasets.map_classes(("happy", "Happiness"), RAFDB_CLASSES)


def test_the_evaluations_count_line_names_the_vote_filter_only_where_one_ran():
    """A soft label set reports its filter (3 kept of 5: 2 dropped); a hard or folder label set
    has none to report (it printed '0 of N dropped by the vote filter')."""
    from datasets.base import LabelSet

    soft = LabelSet(["a", "b", "c"], np.eye(3, dtype=np.float32), "soft", "test", n_total=5, n_dropped=2)
    hard = LabelSet(["a", "b"], np.eye(2, dtype=np.float32), "hard", "test", n_total=2)
    assert soft.count_line() == "3 test images under the soft label protocol (2 of 5 dropped by the vote filter)"
    assert hard.count_line("sequences") == "2 test sequences under the hard label protocol"


def test_holdout_names_the_classes_too_small_to_give_an_image(caplog):
    """round(0.1 x 4) = 0: a class of 4 images gives no validation image (warned, named); when no
    class gives one the error says what to do instead."""
    from datasets.base import LabelSet, holdout_split

    classes = [0] * 10 + [1] * 4 + [2] * 15  # 0.1 x: 1, 0 (0.4), 2 (1.5 -> 2)
    labels = LabelSet(names=[f"i{n}" for n in range(29)], labels=np.eye(3, dtype=np.float32)[classes],
                      protocol="hard", split="train")
    kept, held = holdout_split(labels, 0.1, seed=0, class_names=("calm", "smirk", "joy"))
    assert sorted(np.bincount(held.classes, minlength=3).tolist()) == [0, 1, 2]
    assert np.bincount(held.classes, minlength=3).tolist() == [1, 0, 2] and len(kept) == 26
    assert "takes no image of smirk (4): the validation split lacks these classes" in caplog.text
    few = LabelSet(names=[f"i{n}" for n in range(8)], labels=np.eye(2, dtype=np.float32)[[0] * 4 + [1] * 4],
                   protocol="hard", split="train")
    with pytest.raises(UserError, match=r"cannot hold out 10% of 8 training images \(each class holds out "
                                        r"round\(0.1 x its images\); none of class 0 \(4\), class 1 \(4\)\): "
                                        r"pass a larger --val-fraction, .*--val-split test"):
        holdout_split(few, 0.1)
    with pytest.raises(UserError, match=r"cannot hold out 99% of 8 training images \(each class holds out "
                                        r"round\(0.99 x its images\)\): pass a smaller --val-fraction \(none would "
                                        r"be left to train on\)"):
        holdout_split(few, 0.99)
    # A caller without a test-set flag (lbp_svm_train.py) is not told to use one.
    with pytest.raises(UserError) as error:
        holdout_split(few, 0.99, test_flag=None)
    assert str(error.value).endswith("or give the dataset a validation split (a folder dataset: a val/ folder)")


def test_percentages_print_no_negative_zero():
    """A mean of differences that is -1e-17 in floating point is printed 0.00 (it read '-0.00')."""
    import report
    import robustness

    assert robustness._pct(-1e-17) == "0.00" and robustness._pct(-0.0052) == "-0.52" and robustness._pct(0.125) == "12.50"
    assert report._fmt(-1e-17) == "0.00" and report._fmt(-0.0) == "0.00" and report._fmt(-0.0052) == "-0.52"
    assert report._fmt(-2e-4, percent=False) == "0.000" and report._fmt(-0.25, percent=False) == "-0.250"
