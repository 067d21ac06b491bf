"""train_fer's documented defaults and the per-epoch pipeline seed, checked without training."""

import hashlib

import pytest

import train_fer
import training


def test_optimisation_defaults_are_the_documented_ones():
    """docs/BENCHMARK.md §4.6: 220 epochs, batch 64, --lr 0.002:0.5:40; its hold-out section: --val-fraction 0.1."""
    args = train_fer.parse_args(["--rafdb", "x"])
    assert (args.epochs, args.batch, args.val_fraction, args.lr) == (220, 64, 0.1, "0.002:0.5:40")


def test_lpf_default_is_1():
    """docs/BENCHMARK.md §4.2: `--lpf {0,1,2,3,5,7}`, default 1."""
    assert train_fer.parse_args(["--rafdb", "x"]).lpf == 1


@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 1), (7, 219)])
def test_epoch_seed_is_seed64_of_train_epoch(seed, epoch):
    """seed64 (docs/BENCHMARK.md: first 8 bytes of SHA-256 of "{seed}|...", little-endian) of
    "{seed}|train-epoch|{epoch}", modulo 2**31."""
    text = f"{seed}|train-epoch|{epoch}".encode()
    want = int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % 2 ** 31
    assert training.epoch_seed(seed, epoch) == want


def test_preprocessing_none_is_the_no_of_the_original_and_help_lists_every_mode(capsys):
    """The evaluations spell "no preprocessing" none, training (as the original) no: both are
    accepted and stored as "no"; --help names every mode models/ builds."""
    import models

    assert train_fer.parse_args(["--rafdb", "x", "--preprocessing", "none"]).preprocessing == "no"
    assert train_fer.parse_args(["--rafdb", "x", "--preprocessing", "no"]).preprocessing == "no"
    with pytest.raises(SystemExit):
        train_fer.parse_args(["--rafdb", "x", "--preprocessing", "nothing"])
    assert "invalid choice: 'nothing'" in capsys.readouterr().err
    help_text = " ".join(train_fer.build_parser().format_help().split())
    for mode in models.PREPROCESSING_MODES:
        assert mode in help_text.rsplit("--preprocessing PREPROCESSING", 1)[1].split("--mean-order")[0], mode
