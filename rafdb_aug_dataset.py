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
import corruptions_face
import corruptions_imagenet
import dataset_writer
import fer_export
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
# The tables of the extra sets, recorded in the manifest of a non-rafdb export.
EXTRA_TABLES = (f"imagenet-{dataset_writer.parameter_tables_digest(corruptions_imagenet)}-"
                f"face-{dataset_writer.parameter_tables_digest(corruptions_face)}")


# --------------------------------------------------------------------------------------------
# Argument parsing


def parse_corruptions(text: str, corruption_set: str = "rafdb") -> list[str]:
    """``all`` (every corruption of ``corruption_set``) or a comma-separated list of names of that
    set, returned in registry order."""
    valid = list(corruptions.corruption_names(corruption_set))
    if text.strip() == "all":
        return valid
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("--corruptions: expected 'all' or a comma-separated list of names")
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(f"--corruptions: unknown corruption {unknown[0]!r} in --corruption-set {corruption_set}; "
                        f"valid names: {', '.join(valid)}")
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


EXTRA_OUT = fer_export.DEFAULT_CORRUPTED_EXTRA  # default root of every set but rafdb (docs/BENCHMARK.md §2.9)


def add_set_args(parser) -> None:
    """--corruption-set and --param-set, shared by export and preview."""
    parser.add_argument("--corruption-set", choices=tuple(corruptions.CORRUPTION_SETS), default="rafdb",
                        help="which corruptions: " + "; ".join(f"{name}: {text}" for name, text in
                                                             corruptions.CORRUPTION_SETS.items()))
    parser.add_argument("--param-set", choices=corruptions_imagenet.PARAM_SETS, default=None,
                        help="required when ImageNet-C extras are selected, no default (docs/BENCHMARK.md §2.9): "
                             "imagenet224 (absolute 224 px values), imagenet64 (Tiny-ImageNet-C values; only "
                             "impulse_noise, glass_blur, fog), scaled (pixel lengths x H/224)")


def check_param_set(names, param_set) -> None:
    """UserError unless --param-set is given exactly when an ImageNet-C extra is selected, and has
    values for every selected extra."""
    if not corruptions.needs_param_set(names):
        if param_set is not None:
            raise UserError("--param-set: only the ImageNet-C extras use it (--corruption-set imagenet-extra "
                            "or all); none is selected")
        return
    if param_set is None:
        raise UserError("--param-set: required when ImageNet-C extras are selected (no default, docs/BENCHMARK.md "
                        "§2.9): imagenet224, imagenet64 or scaled")
    if param_set == "imagenet64":
        missing = [name for name in names if corruptions.family(name) == "imagenet-extra"
                   and name not in corruptions_imagenet.HAS_64_VALUES]
        if missing:
            raise UserError(f"--param-set imagenet64: no 64 px values for {', '.join(missing)}; choose "
                            f"--corruptions among {', '.join(corruptions_imagenet.HAS_64_VALUES)} or another set")


def add_render_args(parser) -> None:
    parser.add_argument("--seed", type=cli_common.seed_int, default=0,
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
    data.add_argument("--rafdb", default=None, help="RAF-DB root (holds basic/Image/aligned; default RAF-DB, "
                      "or --data)")
    fer_export.add_dataset_choice(data)
    data.add_argument("--split", default="test", choices=rafdb_dataset.SPLITS, help="which aligned images to corrupt (test_* or train_*)")
    data.add_argument("--out", default=None,
                      help="output root folder of the tree (created if needed; an existing one must hold "
                           "the manifest.json of an export with the same parameters, which is resumed); "
                           f"default corrupted_raf_dataset for --corruption-set rafdb, else {EXTRA_OUT}")
    data.add_argument("--format", choices=rafdb_dataset.FORMATS + ("fer-csv", "auto"), default=None,
                      help="jpg (default): OpenCV JPEG quality 95 as the original; png: lossless (results not "
                           "comparable with jpg). Other --dataset: png (FER default) or fer-csv; folders: auto "
                           "(each file's own format family, the default), jpg or png")
    what = export.add_argument_group("corruptions")
    add_set_args(what)
    what.add_argument("--corruptions", default="all",
                      help="'all' (the whole --corruption-set) or a comma-separated list of its names; the "
                           "18: " + ", ".join(corruptions.CORRUPTION_NAMES) + "; imagenet-extra: "
                           + ", ".join(corruptions.corruption_names("imagenet-extra")) + "; face: "
                           + ", ".join(corruptions.corruption_names("face")))
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
    preview.add_argument("--rafdb", default=None,
                         help="RAF-DB root whose first aligned test face is shown (default: RAF-DB when it "
                              "holds one, else a synthetic face)")
    preview.add_argument("--out", default="corruptions.png",
                         help="the image file to write (the preview grid): .png, or .jpg (JPEG quality 95)")
    add_set_args(preview)
    add_render_args(preview)
    preview.add_argument("--plain", action="store_true",
                         help="the original's unlabelled grid (no corruption names, no column titles)")
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


def run_other_dataset(args, names: list[str]) -> int:
    """``--dataset ferplus|fer2013|folder``: the export of docs/DATASETS.md (fer_export), grey kept grey."""
    if args.corruption_set != "rafdb" or args.colour != "rgb" or args.param_set is not None:
        raise UserError(f"--dataset {args.dataset}: the 18 corruptions (--corruption-set rafdb), --colour rgb "
                        "and no --param-set only; the held-out sets are RAF-DB only (docs/DATASETS.md)")
    if args.rafdb is not None:
        raise UserError(f"--rafdb names a RAF-DB root; with --dataset {args.dataset} use --data DIR")
    data = fer_export.open_export_dataset(args)
    pairs = [(name, severity) for name in names for severity in parse_severities(args.severities)]
    job = fer_export.c_job(data, pairs, split=args.split, fmt=args.format, seed=args.seed,
                           motion_backend=args.motion_backend)
    fer_export.run_job(job, data, args.out or fer_export.default_corrupted(data.name, data.root),
                       generator="rafdb_aug_dataset.py", workers=args.workers, quiet=args.quiet,
                       force_rerender=args.force_rerender, shard=args.shard)
    return 0


def held_out_params(args, names: list[str]) -> dict:
    """Manifest parameters of a held-out export. imagenet-extra and face share one tree (the set is
    recorded as "held-out", so the README's two exports go into one --out); the face corruptions
    ignore --param-set, so a face-only run into an existing tree takes the tree's recorded one."""
    param_set = args.param_set
    if not any(corruptions.family(name) == "imagenet-extra" for name in names) and param_set is None:
        existing = dataset_writer.read_manifest(args.out) if Path(args.out).is_dir() else None
        param_set = ((existing or {}).get("params") or {}).get("extra_param_set")
    return {"corruption_set": "all" if args.corruption_set == "all" else "held-out",
            "extra_param_set": param_set, "extra_tables": EXTRA_TABLES}


def run_export(args) -> int:
    names = parse_corruptions(args.corruptions, args.corruption_set)
    if args.dataset != "rafdb":
        return run_other_dataset(args, names)
    fer_export.refuse_fer_flags_for_rafdb(args)
    if args.format not in (None, *rafdb_dataset.FORMATS):
        raise UserError(f"--format {args.format}: RAF-DB-C is jpg or png")
    args.format = args.format or "jpg"
    check_param_set(names, args.param_set)
    if args.out is None:
        args.out = "corrupted_raf_dataset" if args.corruption_set == "rafdb" else EXTRA_OUT
    severities = parse_severities(args.severities)
    if args.motion_backend == "wand" and any("motion" in name or name == "snow" for name in names):
        require_wand()
    args.rafdb = rafdb_dataset.export_root(args.rafdb, args.data)
    paths = rafdb_dataset.list_aligned(args.rafdb, args.split, complete=True)
    pairs = [(name, severity) for name in names for severity in severities]
    params = {"seed": args.seed, "format": args.format, "motion_backend": args.motion_backend,
              "colour": args.colour, "param_set": PARAM_SET, "split": args.split}
    if args.corruption_set != "rafdb":  # the 18's manifest stays exactly as it was
        params.update(held_out_params(args, names))
    # An unreadable or too small source first (before --out is created: no empty folder is left),
    # then an unwritable folder or a conflicting manifest, before listing work or starting workers.
    dataset_writer.refuse_unusable_sources(paths)
    dataset_writer.check_output_dir(args.out, kind=dataset_writer.RAFDB_C_KIND, params=params,
                                    force_rerender=args.force_rerender, source_root=args.rafdb)
    units = dataset_writer.rafdb_c_units(paths, pairs, fmt=args.format, split=args.split)
    render = functools.partial(dataset_writer.render_rafdb_c, pairs=pairs, seed=args.seed, fmt=args.format,
                               motion_backend=args.motion_backend, colour=args.colour, split=args.split,
                               **({"param_set": args.param_set} if args.param_set else {}))
    LOG.info("%d image(s) x %d corruption(s) x %d severit%s = %d files -> %s", len(paths), len(names),
             len(severities), "y" if len(severities) == 1 else "ies", len(paths) * len(pairs), args.out)
    result = dataset_writer.export(
        units, render, args.out, generator="rafdb_aug_dataset.py", kind=dataset_writer.RAFDB_C_KIND,
        params=params, sources=[path.name for path in paths], source_root=str(args.rafdb),
        workers=args.workers, progress=not args.quiet, force_rerender=args.force_rerender,
        shard=args.shard, warm_up=True,
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
    return dataset_writer.verify_command(args.out, quiet=args.quiet, family="c", script="rafdb_aug_dataset.py")


def preview_face(rafdb: str | Path | None) -> tuple[np.ndarray, str]:
    """The first aligned RAF-DB test face (RGB) and its file name, else the synthetic sample face.
    ``rafdb`` None: ./RAF-DB when it holds a face; a folder named on the command line must hold one
    (a mistyped path is an error, not a silent synthetic face)."""
    explicit, rafdb = rafdb is not None, "RAF-DB" if rafdb is None else rafdb
    try:  # raises, naming the folder, when it holds no aligned test face
        paths = rafdb_dataset.list_aligned(rafdb, "test")
    except UserError:
        if explicit:
            raise
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


LABEL_FONT_SCALE = 0.42  # OpenCV Hershey simplex
HEADER_HEIGHT = 18  # px of the column-label row of the labelled preview
COLUMN_LABELS = ("clean", "1", "2", "3", "4", "5")


def _put_label(canvas: np.ndarray, text: str, left: int, baseline: int) -> None:
    import cv2

    cv2.putText(canvas, text, (left, baseline), cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, (0, 0, 0), 1,
                cv2.LINE_AA)


def label_width(names) -> int:
    """Width in px of the name column: the widest name plus 4 px either side."""
    import cv2

    return 8 + max(cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, 1)[0][0] for name in names)


def preview_grid(face: np.ndarray, file_name: str, *, names=None, seed: int = 0,
                 motion_backend: str = "numpy", colour: str = "rgb", labels: bool = True,
                 **options) -> np.ndarray:
    """One row per corruption (``names``, default the 18) x 6 columns (clean, severities 1..5) of
    100 px faces, each followed by a 2 px white margin. ``labels`` adds a left column with the
    corruption names and a top row with the column titles; without it the grid is the original's
    unlabelled ``corruptions.png``. ``options`` go to :func:`corruptions.corrupt` (``param_set``)."""
    import cv2

    if face.shape[:2] != (PREVIEW_CELL, PREVIEW_CELL):
        face = cv2.resize(face, (PREVIEW_CELL, PREVIEW_CELL), interpolation=cv2.INTER_AREA)
    step = PREVIEW_CELL + PREVIEW_MARGIN
    names = list(corruptions.CORRUPTION_NAMES if names is None else names)
    columns = 1 + len(corruptions.SEVERITIES)
    top, left = (HEADER_HEIGHT, label_width(names)) if labels else (0, 0)
    grid = np.full((top + len(names) * step, left + columns * step, 3), 255, dtype=np.uint8)
    for row, name in enumerate(names):
        cells = [face] + [
            corruptions.corrupt(face, name, severity,
                                cli_common.item_rng(seed, dataset_writer.RAFDB_C_KIND, name, severity, file_name),
                                motion_backend=motion_backend, colour=colour, **options)
            for severity in corruptions.SEVERITIES
        ]
        y = top + row * step
        for column, cell in enumerate(cells):
            x = left + column * step
            grid[y:y + PREVIEW_CELL, x:x + PREVIEW_CELL] = cell
        if labels:
            _put_label(grid, name, 4, y + PREVIEW_CELL // 2 + 5)
    if labels:
        for column, title in enumerate(COLUMN_LABELS):
            _put_label(grid, title, left + column * step + 4, HEADER_HEIGHT - 5)
    return grid


def run_preview(args) -> int:
    names = corruptions.corruption_names(args.corruption_set)
    if args.param_set == "imagenet64":  # the preview takes no --corruptions: it shows those that have 64 px values
        skipped = [name for name in names if corruptions.family(name) == "imagenet-extra"
                   and name not in corruptions_imagenet.HAS_64_VALUES]
        names = [name for name in names if name not in skipped]
        if skipped:
            LOG.info("--param-set imagenet64: no 64 px values for %s; not shown", ", ".join(skipped))
    check_param_set(names, args.param_set)
    if args.motion_backend == "wand":
        require_wand()
    out = dataset_writer.check_writable_file(args.out)  # before the rendering, not after
    fmt = cli_common.suffix_format(args.out, "--out", {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"},
                                   "the preview grid")
    face, file_name = preview_face(args.rafdb)
    grid = preview_grid(face, file_name, names=names, seed=args.seed, motion_backend=args.motion_backend,
                        colour=args.colour, labels=not args.plain,
                        **({"param_set": args.param_set} if args.param_set else {}))
    try:
        cli_common.atomic_write_bytes(out, rafdb_dataset.encode_image(grid, fmt))
    except OSError as error:
        raise UserError(f"--out {out}: cannot write ({error.strerror or error})") from None
    LOG.info("wrote %s (%dx%d px; rows: %s)", out, grid.shape[1], grid.shape[0], ", ".join(names))
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
