"""RAF-DB-C: export the corrupted RAF-DB test set, verify an exported tree, or preview the corruptions.

Commands (BENCHMARK.md §2.1, §2.7, §2.8):

  export   writes <out>/rafdb.<split>.<corruption>.<severity>/<input file name> for every aligned
           image of the split (18 corruptions x 5 severities x 3,068 test images = 276,120 files),
           JPEG quality 95 as the original, or lossless with --format png. Deterministic per image
           (seed, file name, corruption, severity), resumable (rerun to finish an interrupted export),
           with a manifest.json holding the parameters and the SHA-256 of every file.
           A rerun renders again the images whose source file changed (SHA-256 per image in the
           manifest); a tree made by another version of this toolkit or of its imaging packages is
           refused unless --force-rerender.
  verify   checks a tree against its manifest and names every missing, altered or unexpected file
           (exit 1 if anything is wrong).
  preview  (also: no arguments) renders corruptions.png, 18 rows (one per corruption) x 6 columns
           (clean, severities 1..5) of 102 px cells, from the first RAF-DB aligned test face if
           RAF-DB is present, else a synthetic sample face.

Examples:

  python3 rafdb_aug_dataset.py export --rafdb RAF-DB --out corrupted_raf_dataset
  python3 rafdb_aug_dataset.py export --corruptions gaussian_noise,contrast --severities 1-3 --format png
  python3 rafdb_aug_dataset.py verify --out corrupted_raf_dataset
  python3 rafdb_aug_dataset.py            # writes corruptions.png
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import numpy as np

import cli_common
import corruptions
import dataset_writer
import rafdb_dataset
from cli_common import LOG, UserError

PREVIEW_CELL = 100  # px, the face
PREVIEW_MARGIN = 2  # px of white right of and below every face
# The parameter set recorded in the manifest: the table shape plus a digest of corruptions.py's
# parameter tables, so a tree exported with other table values is refused (code changes are caught
# by the manifest's generator version).
PARAM_SET = (f"rafdb-c-{len(corruptions.CORRUPTION_NAMES)}x{len(corruptions.SEVERITIES)}-"
             f"{dataset_writer.parameter_tables_digest(corruptions)}")
SEVERITY_RANGE = (1, 5)


# --------------------------------------------------------------------------------------------
# Argument parsing


def parse_corruptions(text: str) -> list[str]:
    """``all`` or a comma-separated list of registry names, returned in registry order."""
    valid = list(corruptions.CORRUPTION_NAMES)
    if text.strip() == "all":
        return valid
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("--corruptions: expected 'all' or a comma-separated list of names")
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(f"--corruptions: unknown corruption {unknown[0]!r}; valid names: {', '.join(valid)}")
    return [name for name in valid if name in names]


def parse_severities(text: str) -> list[int]:
    """``1,2,3``, ``1-5`` or a mix such as ``1-2,5``; every value in 1..5. Sorted, no duplicates."""
    low, high = SEVERITY_RANGE
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        span = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part)
        if span:
            chosen = list(range(int(span.group(1)), int(span.group(2)) + 1))
            if not chosen:
                raise UserError(f"--severities: empty range {part!r} (write low-high, e.g. 1-5)")
        elif re.fullmatch(r"-?\d+", part):
            chosen = [int(part)]
        else:
            raise UserError(f"--severities: expected integers or ranges like 1,2,3 or 1-5, got {text!r}")
        for value in chosen:
            if not low <= value <= high:
                raise UserError(
                    f"--severities: {value} is outside {low}..{high} (severity 0 is the clean test set, "
                    "which is not exported)"
                )
        values.update(chosen)
    return sorted(values)


def add_render_args(parser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; each image's randomness derives from (seed, file name, corruption, severity)")
    parser.add_argument("--motion-backend", choices=corruptions.MOTION_BACKENDS, default="numpy",
                        help="motion blur implementation: numpy (fast, within 1 grey level) or wand "
                             "(ImageMagick, exactly the original's)")
    parser.add_argument("--colour", choices=corruptions.COLOUR_MODES, default="rgb",
                        help="rgb (correct colours) or bgr-compat (the original's swapped spatter colours and "
                             "BGR-as-RGB jpeg_compression, BENCHMARK.md §2.2)")


def parse_args(argv=None):
    parser = cli_common.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="{export,verify,preview}")

    export = commands.add_parser("export", help="write the RAF-DB-C tree", description=__doc__,
                                 formatter_class=cli_common.HelpFormatter)
    data = export.add_argument_group("input and output")
    data.add_argument("--rafdb", default="RAF-DB", help="RAF-DB root (holds basic/Image/aligned)")
    data.add_argument("--split", default="test", choices=rafdb_dataset.SPLITS, help="which aligned images to corrupt (test_* or train_*)")
    data.add_argument("--out", default="corrupted_raf_dataset",
                      help="output root folder of the tree (created if needed; an existing one must hold "
                           "the manifest.json of an export with the same parameters, which is resumed)")
    data.add_argument("--format", choices=rafdb_dataset.FORMATS, default="jpg",
                      help="jpg: OpenCV JPEG quality 95 as the original; png: lossless (results not "
                           "comparable with jpg)")
    what = export.add_argument_group("corruptions")
    what.add_argument("--corruptions", default="all",
                      help="'all' or a comma-separated list of: " + ", ".join(corruptions.CORRUPTION_NAMES))
    what.add_argument("--severities", default="1-5", help="severities to write, e.g. 1,2,3 or 1-5 (each in 1..5)")
    add_render_args(what)
    dataset_writer.add_run_args(export.add_argument_group("execution"))

    verify = commands.add_parser("verify", help="check an exported tree against its manifest",
                                 formatter_class=cli_common.HelpFormatter)
    verify.add_argument("--out", default="corrupted_raf_dataset",
                        help="the exported tree to check (the folder holding manifest.json)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")

    preview = commands.add_parser("preview", help="render the corruptions.png grid (the default command)",
                                  formatter_class=cli_common.HelpFormatter)
    preview.add_argument("--rafdb", default="RAF-DB",
                         help="RAF-DB root; its first aligned test face is used when present")
    preview.add_argument("--out", default="corruptions.png", help="the PNG image file to write (the preview grid)")
    add_render_args(preview)
    preview.add_argument("--quiet", action="store_true", help="no INFO log messages")

    args = parser.parse_args(argv)
    if args.command is None:  # no arguments: the original's behaviour, the preview grid
        args = parser.parse_args(["preview", *(argv or [])])
    return args


# --------------------------------------------------------------------------------------------
# Commands


def require_wand() -> None:
    try:
        import wand.image  # noqa: F401  (needs the MagickWand system library)
    except ImportError as error:
        raise UserError(
            f"--motion-backend wand: the Wand package or the ImageMagick MagickWand library is not "
            f"available ({error}); install them or use --motion-backend numpy"
        ) from None


def run_export(args) -> int:
    names = parse_corruptions(args.corruptions)
    severities = parse_severities(args.severities)
    if args.motion_backend == "wand" and any("motion" in name for name in names):
        require_wand()
    paths = rafdb_dataset.list_aligned(args.rafdb, args.split)
    pairs = [(name, severity) for name in names for severity in severities]
    params = {"seed": args.seed, "format": args.format, "motion_backend": args.motion_backend,
              "colour": args.colour, "param_set": PARAM_SET, "split": args.split}
    # Fail on an unwritable folder or a conflicting manifest before listing work or starting workers.
    dataset_writer.check_output_dir(args.out, kind=dataset_writer.RAFDB_C_KIND, params=params,
                                    force_rerender=args.force_rerender)
    units = dataset_writer.rafdb_c_units(paths, pairs, fmt=args.format, split=args.split)
    render = functools.partial(dataset_writer.render_rafdb_c, pairs=pairs, seed=args.seed, fmt=args.format,
                               motion_backend=args.motion_backend, colour=args.colour, split=args.split)
    LOG.info("%d image(s) x %d corruption(s) x %d severit%s = %d files -> %s", len(paths), len(names),
             len(severities), "y" if len(severities) == 1 else "ies", len(paths) * len(pairs), args.out)
    result = dataset_writer.export(
        units, render, args.out, generator="rafdb_aug_dataset.py", kind=dataset_writer.RAFDB_C_KIND,
        params=params, sources=[path.name for path in paths], source_root=str(args.rafdb),
        workers=args.workers, progress=not args.quiet, force_rerender=args.force_rerender,
        shard=args.shard,
    )
    seconds = max(result.seconds, 1e-9)
    stale = result.rerender_note  # why images were rendered again, if any (interrupted run, source changed)
    stale += result.shard_note  # "; shard i/N: the manifest is now complete" (or: completes later)
    print(
        f"RAF-DB-C export to {result.out_dir}: {result.units} image(s) x {len(pairs)} corruption/severity "
        f"pair(s) = {result.files} file(s); {result.files_written} written, {result.files_skipped} skipped "
        f"(already complete){stale}; {result.seconds:.1f} s wall with {result.workers} worker(s), "
        f"{result.units / seconds:.1f} images/s, {result.files / seconds:.0f} files/s; manifest "
        f"{result.manifest_path} (check with: rafdb_aug_dataset.py verify --out {result.out_dir}).",
        file=sys.stderr,
    )
    return 0


def run_verify(args) -> int:
    report = dataset_writer.verify(args.out, progress=not args.quiet)
    dataset_writer.print_verify_report(report)
    return 0 if report.ok else 1


def preview_face(rafdb: str | Path) -> tuple[np.ndarray, str]:
    """The first aligned RAF-DB test face (RGB) and its file name, else the synthetic sample face."""
    try:
        paths = rafdb_dataset.list_aligned(rafdb, "test")
    except UserError:
        paths = []
    if paths:
        return rafdb_dataset.read_image(paths[0]), paths[0].name
    try:
        import synthetic_faces
    except ImportError as error:
        raise UserError(
            f"{rafdb}: no aligned RAF-DB test face, and the synthetic sample face is unavailable "
            f"(synthetic_faces.py could not be imported: {error})"
        ) from None
    LOG.info("%s has no aligned test faces; using the synthetic sample face", rafdb)
    return np.asarray(synthetic_faces.sample_face(), dtype=np.uint8), "sample_face.jpg"


def preview_grid(face: np.ndarray, file_name: str, *, seed: int = 0, motion_backend: str = "numpy",
                 colour: str = "rgb") -> np.ndarray:
    """18 rows x 6 columns (clean, severities 1..5) of 100 px faces, each followed by a 2 px white margin."""
    import cv2

    if face.shape[:2] != (PREVIEW_CELL, PREVIEW_CELL):
        face = cv2.resize(face, (PREVIEW_CELL, PREVIEW_CELL), interpolation=cv2.INTER_AREA)
    step = PREVIEW_CELL + PREVIEW_MARGIN
    names = list(corruptions.CORRUPTION_NAMES)
    columns = 1 + len(corruptions.SEVERITIES)
    grid = np.full((len(names) * step, columns * step, 3), 255, dtype=np.uint8)
    for row, name in enumerate(names):
        cells = [face] + [
            corruptions.corrupt(face, name, severity,
                                cli_common.item_rng(seed, dataset_writer.RAFDB_C_KIND, name, severity, file_name),
                                motion_backend=motion_backend, colour=colour)
            for severity in corruptions.SEVERITIES
        ]
        for column, cell in enumerate(cells):
            grid[row * step:row * step + PREVIEW_CELL, column * step:column * step + PREVIEW_CELL] = cell
    return grid


def run_preview(args) -> int:
    if args.motion_backend == "wand":
        require_wand()
    out = dataset_writer.check_writable_file(args.out)  # before the rendering, not after
    face, file_name = preview_face(args.rafdb)
    grid = preview_grid(face, file_name, seed=args.seed, motion_backend=args.motion_backend, colour=args.colour)
    try:
        cli_common.atomic_write_bytes(out, rafdb_dataset.encode_image(grid, "png"))
    except OSError as error:
        raise UserError(f"--out {out}: cannot write ({error.strerror or error})") from None
    LOG.info("wrote %s (%dx%d px; rows: %s)", out, grid.shape[1], grid.shape[0],
             ", ".join(corruptions.CORRUPTION_NAMES))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cli_common.setup_logging()
    commands = {"export": run_export, "verify": run_verify, "preview": run_preview}
    previous_level = LOG.level
    if getattr(args, "quiet", False):
        LOG.setLevel("WARNING")
    try:
        return commands[args.command](args)
    finally:  # main() is also called in-process (tests): leave the logger as it was
        LOG.setLevel(previous_level)


if __name__ == "__main__":
    cli_common.run_main(main)
