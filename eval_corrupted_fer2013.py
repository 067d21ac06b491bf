"""Robustness of a model on FER2013-C / FER+-C: the original's eval_corrupted_fer2013.py (docs/BENCHMARK.md §9.4).

    python3 eval_corrupted_fer2013.py CHECKPOINT [RESULTS_FILE] [options of eval_corrupted_rafdb.py]

is ``eval_corrupted_rafdb.py CHECKPOINT [RESULTS_FILE] --dataset ferplus`` with the original's inputs:
the clean set ``FERPlus/fer2013.csv`` and the corrupted sets under ``corrupted_dataset/``
(``fer2013.PublicTest.<corruption>.<severity>`` PNG folders or ``--format fer-csv`` files, written by
``ferplus_aug_dataset.py export``). The report block is the original's: ``Results for: <checkpoint>``,
one ``<set> <accuracy>`` line per set (clean first), two blank lines; then the CE/mCE summary and
the dataset line (dataset, split, N, images of classes the model cannot output). Every option of
``eval_corrupted_rafdb.py`` applies (``--dataset fer2013`` for FER2013's own labels, ``--data``,
``--corrupted``, ``--json``, ...); see ``eval_corrupted_rafdb.py --help``.

Deviations from the original (docs/BENCHMARK.md §9.8): RESULTS_FILE is optional (the original always
appended to results.txt); the sets come in docs/BENCHMARK.md §2.3 order, not glob order; the model's
own input size and preprocessing are used (the original forced 224 px and full normalisation).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def command(argv: list[str]) -> list[str]:
    """The eval_corrupted_rafdb.py command line this script stands for."""
    if any(arg in ("-h", "--help") for arg in argv):
        return [sys.executable, str(Path(__file__).with_name("eval_corrupted_rafdb.py")), "--help"]
    dataset = [] if any(arg == "--dataset" or arg.startswith("--dataset=") for arg in argv) else ["--dataset", "ferplus"]
    return [sys.executable, str(Path(__file__).with_name("eval_corrupted_rafdb.py")), *argv, *dataset]


if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        print("The options below are eval_corrupted_rafdb.py's (its usage line names it). Run as "
              "eval_corrupted_fer2013.py, --dataset defaults to ferplus (not rafdb), hence --data to FERPlus "
              "and --corrupted to corrupted_dataset.\n")
    args = command(sys.argv[1:])
    sys.stdout.flush()
    os.execv(args[0], args)
