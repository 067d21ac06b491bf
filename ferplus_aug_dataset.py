"""FER2013-C: the 18 corruptions x 5 severities of the FER test split (docs/BENCHMARK.md §9.3, §9.9).

    python3 ferplus_aug_dataset.py export                       # FERPlus/ -> corrupted_dataset/ (PNG folders)
    python3 ferplus_aug_dataset.py export --format fer-csv      # the original's line-aligned CSV files
    python3 ferplus_aug_dataset.py export --dataset folder --data faces/ --out faces-c/
    python3 ferplus_aug_dataset.py verify --out corrupted_dataset

PNG layout: ``<out>/fer2013.<split>.<corruption>.<severity>/<row:05d>.png`` (48x48 grey,
lossless); ``--format fer-csv``: ``<out>/fer2013.<split>.<corruption>.<severity>.csv`` with one line
per line of fer2013.csv (other rows empty), as the original wrote them. Every row of the split is
exported; the FER+ vote filter applies when an evaluation reads the labels. Outputs are written
atomically with a manifest; a rerun resumes, and the bytes do not depend on --workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import dataset_writer
import datasets
import fer_export
from cli_common import ArgumentParser, run_main, seed_int, setup_logging


def parse_args(argv: Sequence[str] | None = None):
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser("export", help="write the corrupted test split", formatter_class=parser.formatter_class)
    datasets.add_dataset_args(export)
    export.set_defaults(dataset="ferplus")
    export.add_argument("--out", type=Path, default=None,
                        help="output folder (default corrupted_dataset; <its folder name>-c for --dataset "
                             "folder, corrupted_raf_dataset for rafdb: where the evaluations look without "
                             "--corrupted)")
    export.add_argument("--format", default=None, choices=("png", "fer-csv", "auto", "jpg"),
                        help="FER: png (default) or fer-csv; folder datasets: auto (each file's own "
                             "format family, the default), jpg or png")
    export.add_argument("--split", default="test", choices=("test", "validation", "train"),
                        help="which split to corrupt (the original: test = PublicTest)")
    export.add_argument("--corruptions", default="all", help="'all' or a comma-separated list of names")
    export.add_argument("--severities", default="1-5", help="e.g. 1-5 or 1,3,5")
    export.add_argument("--seed", type=seed_int, default=0, help="base seed of every image's randomness")
    export.add_argument("--motion-backend", default="numpy", choices=("numpy", "wand"),
                        help="motion blur implementation (see rafdb_aug_dataset.py --help)")
    dataset_writer.add_run_args(export)
    verify = commands.add_parser("verify", help="re-hash every file against the manifest",
                                 formatter_class=parser.formatter_class)
    verify.add_argument("--out", type=Path, default=Path("corrupted_dataset"), help="exported folder")
    verify.add_argument("--quiet", action="store_true", help="no progress bar (as rafdb_aug_dataset.py verify)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    if args.command == "verify":
        return dataset_writer.verify_command(args.out, quiet=args.quiet, family="c", script="ferplus_aug_dataset.py")
    data = datasets.open_dataset(args)
    pairs = fer_export.parse_pairs(args.corruptions, args.severities)
    job = fer_export.c_job(data, pairs, split=args.split, fmt=args.format, seed=args.seed,
                           motion_backend=args.motion_backend)
    out = args.out or fer_export.default_corrupted(data.name, data.root)
    fer_export.run_job(job, data, out, generator="ferplus_aug_dataset.py", workers=args.workers,
                       quiet=args.quiet, force_rerender=args.force_rerender, shard=args.shard)
    return 0


if __name__ == "__main__":
    run_main(main)
