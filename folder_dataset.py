"""Convert a dataset to the plain class-folder layout of ``--dataset folder`` (docs/BENCHMARK.md §10).

    python3 folder_dataset.py from-fer2013 FERPlus/ OUT/                     # FER+ labels (8 classes)
    python3 folder_dataset.py from-fer2013 FERPlus/ OUT/ --classes fer2013   # FER2013's emotion column

writes ``OUT/{train,val,test}/<class>/<row:05d>.png`` (48x48 grey PNG; train = Training,
val/test = PrivateTest/PublicTest as chosen with --test-split) and ``OUT/classes.txt`` (the
source's class order). With FER+ labels, rows the FER+ vote filter drops are not written. Every
command then reads it with ``--dataset folder --data OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from cli_common import ArgumentParser, run_main, setup_logging


def parse_args(argv: Sequence[str] | None = None):
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fer = commands.add_parser("from-fer2013", help="FER2013/FER+ CSV pair -> class folders",
                              formatter_class=parser.formatter_class)
    fer.add_argument("source", type=Path, help="folder holding fer2013.csv (and fer2013new.csv for FER+ labels)")
    fer.add_argument("out", type=Path, help="folder to create")
    fer.add_argument("--classes", default="ferplus", choices=("ferplus", "fer2013"),
                     help="which labels name the class folders: FER+ votes through the vote filter "
                          "(8 classes) or FER2013's emotion column (7 classes)")
    fer.add_argument("--test-split", default="PublicTest", choices=("PublicTest", "PrivateTest"),
                     help="which Usage becomes test/ (the other becomes val/)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import datasets
    from datasets.folder import write_folder_tree

    setup_logging()
    args = parse_args(argv)
    source = datasets.get(args.classes, args.source, test_split=args.test_split)
    counts = write_folder_tree(source, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{split} {count}" for split, count in counts.items())
          + f" images in {len(source.class_names)} class folders ({source.title} labels)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
