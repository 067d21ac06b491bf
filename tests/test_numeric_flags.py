"""Number-valued flags refuse NaN and infinity (``float`` accepts 'nan', 'inf'): a NaN passed every
range check written as ``value < 0``, and changed results without a word (--adapt-prior nan gave
other accuracies than any valid prior; --weight-decay nan trained without decay and wrote NaN,
not JSON, into run.json)."""

import pytest

import eval_corrupted_rafdb
import eval_perturbed_rafdb
import lbp_svm_train
import train_fer

CASES = [
    (train_fer.parse_args, ["--weight-decay"]),
    (train_fer.parse_args, ["--val-fraction"]),
    (train_fer.parse_args, ["--center-loss", "--center-loss-weight"]),
    (train_fer.parse_args, ["--center-loss", "--center-loss-alpha"]),
    (train_fer.parse_args, ["--augmentation", "augmix", "--augmix-severity"]),
    (train_fer.parse_args, ["--collective-timeout"]),
    (eval_corrupted_rafdb.parse_args, ["m.keras", "--adapt", "bn", "--adapt-prior"]),
    (eval_perturbed_rafdb.main, ["m.keras", "--adapt", "bn", "--adapt-prior"]),
    (lbp_svm_train.main, ["train", "--val-fraction"]),
]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
@pytest.mark.parametrize("parse, flags", CASES, ids=lambda case: getattr(case, "__module__", None) or " ".join(case))
def test_a_non_finite_number_is_a_usage_error_naming_the_flag(parse, flags, value, capsys):
    with pytest.raises(SystemExit) as stop:
        parse([*flags[:-1], f"{flags[-1]}={value}"])  # "=" form: argparse reads a bare "-inf" as a flag
    assert stop.value.code == 2
    assert f"argument {flags[-1]}: expected a finite number, got '{value}'" in capsys.readouterr().err


SEEDED = [
    (["rafdb_aug_dataset.py", "export"]), (["rafdb_perturb_dataset.py", "export"]), (["rafdb_perturb_dataset.py", "gif"]),
    (["rafdb_dataset.py", "sample", "--out", "x"]), (["ferplus_aug_dataset.py", "export"]),
    (["eval_corrupted_rafdb.py", "m.keras", "--on-the-fly"]), (["train_fer.py"]),
]


@pytest.mark.parametrize("value", ["-1", str(2 ** 32), "99999999999999999999"])
@pytest.mark.parametrize("command", SEEDED, ids=" ".join)
def test_every_seed_flag_takes_the_same_range(command, value, capsys, tmp_path, monkeypatch):
    """--seed is an integer from 0 to 2^32 - 1 everywhere (training refused -1, the exports, the
    sample and the on-the-fly evaluation took it, and 20-digit seeds)."""
    import importlib

    monkeypatch.chdir(tmp_path)  # a command that took the seed would write here (the sample's x/)

    module = importlib.import_module(command[0].removesuffix(".py"))
    with pytest.raises(SystemExit) as stop:
        module.main([*command[1:], f"--seed={value}"])
    assert stop.value.code == 2
    assert f"--seed: expected an integer from 0 to 4294967295, got '{value}'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
