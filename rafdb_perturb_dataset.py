"""RAF-DB-P: write the 10 perturbation sequences of every RAF-DB test image (BENCHMARK.md §3).

Each test original is aligned once to MIVIA's 130 px face from its 5 manual landmarks, then every
selected perturbation writes 30 frames::

    perturbed_raf_dataset/rafdb.test.p_<name>/test_XXXX_NN.jpg      NN = 00..29

(10 x 3,068 x 30 = 920,400 frames for the real RAF-DB). Output is byte-identical for any worker
count: every sequence draws from its own generator, seeded from (seed, perturbation, file name).
A killed export resumes where it stopped; ``manifest.json`` records the parameters, the SHA-256 of
every file and of every unit's source files (original + landmarks, or the aligned image), and
``verify`` checks a tree against it. A rerun renders again the images whose source changed; a tree
made by another version of this toolkit or of its imaging packages is refused unless
``--force-rerender``.

Examples::

    python3 rafdb_perturb_dataset.py export --rafdb RAF-DB                   # the whole RAF-DB-P
    python3 rafdb_perturb_dataset.py export --rafdb demo/RAF-DB --out demo/perturbed_raf_dataset \\
        --perturbations p_rotate,p_shot_noise --workers 2
    python3 rafdb_perturb_dataset.py export --source aligned                 # no originals/landmarks
    python3 rafdb_perturb_dataset.py verify --out perturbed_raf_dataset
    python3 rafdb_perturb_dataset.py                                         # perturbations.gif

Without arguments the script renders ``perturbations.gif`` (one animated tile per perturbation),
from the first RAF-DB test original when ``RAF-DB`` holds one, else from a synthetic face.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import dataset_writer
import fer_export
import perturbations
import rafdb_dataset
from cli_common import (ArgumentParser, UserError, atomic_path, item_rng, run_main, seed_int, setup_logging,
                        suffix_format)

LOG = logging.getLogger("fer.rafdb_p")
KIND = "rafdb-p"
SPLIT = "test"
SOURCES = ("landmarks", "aligned")
# The parameter set recorded in the manifest: the table shape plus a digest of perturbations.py's
# parameter tables, so a tree exported with other values is refused (code changes are caught by the
# manifest's generator version).
PARAM_SET = (f"rafdb-p-{len(perturbations.PERTURBATIONS)}x{perturbations.NUM_FRAMES}-"
             f"{dataset_writer.parameter_tables_digest(perturbations)}")


# --------------------------------------------------------------------------------------------
# Layout and work units


def perturbed_folder(name: str, split: str = SPLIT) -> str:
    """``rafdb.test.<name>`` (BENCHMARK.md §3.5)."""
    return f"rafdb.{split}.{name}"


def frame_path(name: str, stem: str, index: int, fmt: str) -> str:
    """Relative path of frame ``index`` of image ``stem`` under perturbation ``name``."""
    return f"{perturbed_folder(name)}/{stem}_{index:02d}.{fmt}"


def parse_perturbations(text: str, perturbation_set: str = "rafdb") -> list[str]:
    """``all`` (the whole ``perturbation_set``) or a comma-separated list of its names, in registry
    order, without repeats."""
    valid = list(perturbations.perturbation_names(perturbation_set))
    if text.strip() == "all":
        return valid
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise UserError(
            f"--perturbations: unknown name(s) {', '.join(unknown) or '(none given)'} in --perturbation-set "
            f"{perturbation_set}; expected 'all' or a comma-separated list of: {', '.join(valid)}"
        )
    return [name for name in valid if name in names]


def list_test_names(root: Path, source: str) -> list[str]:
    """Every test image name: the aligned test images, plus (landmarks source) the originals."""
    aligned_dir = root / rafdb_dataset.ALIGNED_DIR
    original_dir = root / rafdb_dataset.ORIGINAL_DIR
    if source == "aligned":
        return [rafdb_dataset.aligned_name(path) for path in rafdb_dataset.list_aligned(root, SPLIT, complete=True)]
    names: set[str] = set()
    if aligned_dir.is_dir():
        names.update(rafdb_dataset.aligned_name(path)
                     for path in aligned_dir.glob(f"{SPLIT}_*{rafdb_dataset.ALIGNED_SUFFIX}"))
    if original_dir.is_dir() or not names:
        names.update(rafdb_dataset.list_originals(root, SPLIT))
    # A name with its aligned face but no original is reported by build_units (as is a tree without
    # originals at all, with the --source aligned hint); one with neither here.
    if original_dir.is_dir():
        rafdb_dataset.refuse_incomplete(root, SPLIT, names, rafdb_dataset.original_path)
    return sorted(names)


def refuse_unusable_landmarks(landmarks: np.ndarray, landmark_file: Path, image_path: Path) -> None:
    """UserError naming ``landmark_file`` when its points cannot align a face (the original warped
    them all the same, silently): the eyes and the mouth point (BENCHMARK.md §3.1) on one line or on
    one point, whose affine is singular (the "face" is one colour), or all three outside the photo
    (e.g. landmarks of another resolution: the face is black). A constant sequence never flips, so
    it would flatter the model's stability."""
    eye_l, eye_r = landmarks[0], landmarks[1]
    mouth = np.array(perturbations.mouth_point(landmarks))
    (ux, uy), (vx, vy) = eye_r - eye_l, mouth - eye_l
    area = abs(float(ux * vy - uy * vx)) / 2
    if area < 1.0:
        def point(xy) -> str:
            return f"({float(xy[0])}, {float(xy[1])})"  # not numpy's "np.float64(10.0)" reprs

        raise UserError(f"{landmark_file}: the eyes {point(eye_l)}, {point(eye_r)} and the mouth point "
                        f"{point(mouth)} lie on one line or point (triangle of {area:.2g} px^2): they "
                        f"cannot align {image_path.name}; expected the 5 points of docs/BENCHMARK.md §1.1")
    height, width = dataset_writer.image_file_size(image_path)

    def inside(point, w, h) -> bool:
        return 0 <= point[0] < w and 0 <= point[1] < h

    points = (eye_l, eye_r, mouth)
    # the upright size (as decoded); landmarks of the photo as stored fit it with its sides swapped
    if not any(inside(point, width, height) or inside(point, height, width) for point in points):
        raise UserError(f"{landmark_file}: the eyes and the mouth point all lie outside {image_path.name} "
                        f"({width}x{height} px): landmarks of another image or resolution?")


def build_units(root: Path, names: Sequence[str], selected: Sequence[str], *, fmt: str,
                source: str) -> list[dataset_writer.WorkUnit]:
    """One unit per test image; checks every input file first (UserError naming the first bad one).

    Under ``--source landmarks`` the original and its landmark file must exist, and the landmarks
    are parsed here (a malformed line is reported as ``file:line``), so the workers get them in the
    payload. Under ``--source aligned`` the aligned image must exist.
    """
    units = []
    for stem in names:
        if source == "landmarks":
            image_path = rafdb_dataset.original_path(root, stem)
            landmark_file = rafdb_dataset.landmarks_path(root, stem)
            if not image_path.is_file():
                raise UserError(
                    f"{image_path}: original image not found (RAF-DB-P needs every test original and "
                    f"its landmarks; --source aligned builds the sequences from the aligned images)"
                )
            if not landmark_file.is_file():
                near = sorted(landmark_file.parent.glob(f"{stem}_*.txt")) if landmark_file.parent.is_dir() else []
                found = f"; found {near[0].name}, RAF-DB names it {landmark_file.name}" if near else ""
                raise UserError(
                    f"{landmark_file}: landmark file not found (needed to align {image_path.name}{found}; "
                    f"--source aligned builds the sequences from the aligned images)"
                )
            landmarks = rafdb_dataset.read_landmarks(landmark_file)
            refuse_unusable_landmarks(landmarks, landmark_file, image_path)
        else:
            image_path = rafdb_dataset.aligned_path(root, stem)
            if not image_path.is_file():
                raise UserError(f"{image_path}: aligned image not found")
            height, width = dataset_writer.image_file_size(image_path)
            if (height, width) != (perturbations.FRAME_SIZE, perturbations.FRAME_SIZE):
                raise UserError(f"{image_path}: expected a {perturbations.FRAME_SIZE}x{perturbations.FRAME_SIZE} "
                                f"aligned image (--source aligned pads it to the 130 px face), got {width}x{height}")
            landmarks = None
        outputs = tuple(frame_path(name, stem, i, fmt) for name in selected
                        for i in range(perturbations.NUM_FRAMES))
        inputs = (str(image_path), str(landmark_file)) if source == "landmarks" else (str(image_path),)
        units.append(dataset_writer.WorkUnit(str(image_path), outputs, (stem, str(image_path), landmarks),
                                             inputs=inputs))
    return units


def load_face(image_path: str, landmarks: np.ndarray | None, fallback_pad: str) -> np.ndarray:
    """The 130 px face: aligned from the original (landmarks given) or the padded aligned image."""
    image = rafdb_dataset.read_image(image_path)
    if landmarks is not None:
        return perturbations.align_face(image, landmarks)
    if image.shape != (perturbations.FRAME_SIZE, perturbations.FRAME_SIZE, 3):
        raise UserError(f"{image_path}: expected a 100x100 aligned image, got {image.shape[1]}x{image.shape[0]}")
    return perturbations.aligned_source_face(image, fallback_pad)


def sequence_rng(seed: int, name: str, stem: str) -> np.random.Generator:
    """The generator of one sequence (BENCHMARK.md §3.5); the file name is the original's, test_XXXX.jpg,
    whatever the source, so both sources draw the same noise."""
    return item_rng(seed, KIND, name, 0, f"{stem}.jpg")


def render_unit(unit: dataset_writer.WorkUnit, *, selected: Sequence[str], seed: int, fmt: str,
                motion_backend: str, colour: str, fallback_pad: str) -> list[tuple[str, bytes]]:
    """All frames of all selected perturbations of one test image (runs in a worker)."""
    stem, image_path, landmarks = unit.payload
    face = load_face(image_path, landmarks, fallback_pad)
    encode = rafdb_dataset.encode_image
    outputs = []
    for name in selected:
        frames = perturbations.perturb(face, name, sequence_rng(seed, name, stem),
                                       motion_backend=motion_backend, colour=colour)
        for index, frame in enumerate(frames):
            outputs.append((frame_path(name, stem, index, fmt), encode(frame, fmt)))
    return outputs


def export_params(args: argparse.Namespace) -> dict:
    """The parameters that decide the bytes; a tree mixing different values is refused. The extras'
    table digest is recorded for every export (the set is not), so the ImageNet-P extras can be
    added to a tree of the 10 and the other way round."""
    import perturbations_extra

    extra = {"extra_tables": f"imagenet-p-{dataset_writer.parameter_tables_digest(perturbations_extra)}"}
    return {**extra, **{
        "seed": args.seed,
        "format": args.format,
        "motion_backend": args.motion_backend,
        "colour": args.colour,
        "source": args.source,
        "fallback_pad": args.fallback_pad if args.source == "aligned" else None,
        "frames": perturbations.NUM_FRAMES,
        "split": SPLIT,
        "param_set": PARAM_SET,
    }}


def require_wand() -> None:
    try:
        import wand.image  # noqa: F401  (needs the MagickWand shared library too)
    except ImportError as error:
        raise UserError(f"--motion-backend wand: Wand/ImageMagick is not usable ({error}); "
                        "install Wand and libmagickwand, or use --motion-backend numpy") from None


def cmd_export_other(args: argparse.Namespace, selected: list[str]) -> int:
    """``--dataset ferplus|fer2013|folder``: sequences built from the image itself (fer_export.p_job)."""
    if args.rafdb is not None:
        raise UserError(f"--rafdb names a RAF-DB root; with --dataset {args.dataset} use --data DIR")
    if args.source != "landmarks" or args.colour != "rgb":
        raise UserError(f"--dataset {args.dataset}: sequences are built from the image itself (no --source; "
                        "--colour rgb only; docs/DATASETS.md)")
    data = fer_export.open_export_dataset(args)
    job = fer_export.p_job(data, selected, split="test", fmt=args.format, seed=args.seed,
                           motion_backend=args.motion_backend, pad=args.fallback_pad)
    fer_export.run_job(job, data, args.out or fer_export.default_perturbed(data.name),
                       generator="rafdb_perturb_dataset.py",
                       workers=args.workers, quiet=args.quiet, force_rerender=args.force_rerender,
                       what="perturbed", shard=args.shard)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.dataset != "rafdb" and args.perturbation_set != "rafdb":
        raise UserError(f"--perturbation-set {args.perturbation_set}: RAF-DB only; --dataset {args.dataset} "
                        f"exports the 10 perturbations of RAF-DB-P (docs/DATASETS.md)")
    selected = parse_perturbations(args.perturbations, args.perturbation_set)
    if args.dataset != "rafdb":
        return cmd_export_other(args, selected)
    fer_export.refuse_fer_flags_for_rafdb(args)
    args.out = args.out or fer_export.default_perturbed("rafdb")
    args.format = args.format or "jpg"
    root = Path(rafdb_dataset.export_root(args.rafdb, args.data))
    params = export_params(args)
    if args.motion_backend == "wand" and ("p_motion_blur" in selected or "p_snow" in selected):
        require_wand()
    # List and check every input before --out is created: a wrong --rafdb leaves nothing behind.
    names = list_test_names(root, args.source)
    units = build_units(root, names, selected, fmt=args.format, source=args.source)
    dataset_writer.check_output_dir(args.out, kind=KIND, params=params, force_rerender=args.force_rerender,
                                    source_root=root)
    render = functools.partial(render_unit, selected=selected, seed=args.seed, fmt=args.format,
                               motion_backend=args.motion_backend, colour=args.colour,
                               fallback_pad=args.fallback_pad)
    if args.source == "aligned":
        LOG.warning("source: aligned (BENCHMARK.md §3.6): faces are the padded official aligned images, not "
                    "MIVIA's alignment of the originals; results are not comparable with RAF-DB-P")
    result = dataset_writer.export(
        units, render, args.out, generator="rafdb_perturb_dataset.py", kind=KIND, params=params,
        sources=[Path(unit.name).name for unit in units], source_root=str(root),
        workers=args.workers, progress=not args.quiet, force_rerender=args.force_rerender,
        shard=args.shard, warm_up=True,
    )
    stale = result.rerender_note  # why images were rendered again, if any (interrupted run, source changed)
    stale += result.shard_note  # "; shard i/N: the manifest is now complete" (or: completes later)
    print(f"RAF-DB-P export to {result.out_dir}: {result.units} image(s) x {len(selected)} perturbation(s) x "
          f"{perturbations.NUM_FRAMES} frames = {result.files} file(s); {result.files_written} written, "
          f"{result.files_skipped} skipped (already complete){stale}; {result.seconds:.1f} s wall with "
          f"{result.workers} worker(s); manifest {result.manifest_path} (check with: "
          f"rafdb_perturb_dataset.py verify --out {result.out_dir}).", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    return dataset_writer.verify_command(args.out, quiet=args.quiet, family="p", script="rafdb_perturb_dataset.py")


# --------------------------------------------------------------------------------------------
# The animated preview (the original README's perturbations.gif)


def preview_face(root: Path | None, seed: int = 0) -> tuple[np.ndarray, str]:
    """The 130 px face of the first RAF-DB test original with landmarks, else of a synthetic one.
    ``root`` None: ./RAF-DB when it holds one; a folder named on the command line must hold one
    (a mistyped path is an error, not a silent synthetic face)."""
    explicit = root is not None
    root = Path("RAF-DB") if root is None else Path(root)
    original_dir = root / rafdb_dataset.ORIGINAL_DIR
    if original_dir.is_dir():
        for image_path in sorted(original_dir.glob(f"{SPLIT}_*.jpg")):
            landmark_file = rafdb_dataset.landmarks_path(root, image_path.stem)
            if landmark_file.is_file():
                face = perturbations.align_face(rafdb_dataset.read_image(image_path),
                                                rafdb_dataset.read_landmarks(landmark_file))
                return face, str(image_path)
    if explicit:
        raise UserError(f"--rafdb {root}: no test original with its landmarks ({SPLIT}_*.jpg in {original_dir}); "
                        "leave --rafdb out to render the synthetic face")
    import synthetic_faces

    sample = synthetic_faces.make_sample(seed, SPLIT, 1, 3)
    return perturbations.align_face(sample.original, sample.landmarks), "a synthetic face"


def preview_frames(face: np.ndarray, *, seed: int = 0, columns: int = 5, label_height: int = 14,
                   margin: int = 2, motion_backend: str = "numpy", colour: str = "rgb",
                   names: Sequence[str] | None = None) -> list[np.ndarray]:
    """30 RGB canvases: one 100 px tile per perturbation (``names``, default the 10) with its name
    above (none when ``label_height`` is 0), ``columns`` per row."""
    import cv2

    names = list(perturbations.PERTURBATIONS if names is None else names)
    sequences = [perturbations.perturb(face, name, sequence_rng(seed, name, "preview"),
                                       motion_backend=motion_backend, colour=colour) for name in names]
    size = perturbations.FRAME_SIZE
    rows = -(-len(names) // columns)
    cell_w, cell_h = size + 2 * margin, size + label_height + 2 * margin
    background = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for k, name in enumerate(names if label_height else ()):
        x, y = (k % columns) * cell_w + margin, (k // columns) * cell_h + margin
        cv2.putText(background, name[2:], (x + 1, y + label_height - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.36, (0, 0, 0), 1, cv2.LINE_AA)
    canvases = []
    for i in range(perturbations.NUM_FRAMES):
        canvas = background.copy()
        for k, frames in enumerate(sequences):
            x, y = (k % columns) * cell_w + margin, (k // columns) * cell_h + margin + label_height
            canvas[y : y + size, x : x + size] = frames[i]
        canvases.append(canvas)
    return canvases


def write_gif(canvases: Sequence[np.ndarray], path: str | Path, frame_ms: int = 100) -> None:
    """An endlessly looping GIF (PIL), written atomically."""
    from PIL import Image

    # One palette for all frames (from every 6th frame), no dithering: no palette flicker, smaller file.
    palette = Image.fromarray(np.concatenate(list(canvases[::6]), axis=0)).quantize(
        colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(canvas).quantize(palette=palette, dither=Image.Dither.NONE) for canvas in canvases]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms,
                       loop=0, optimize=False)


def cmd_gif(args: argparse.Namespace) -> int:
    if args.frame_ms < 1:
        raise UserError(f"--frame-ms: expected a positive number of milliseconds, got {args.frame_ms}")
    if args.motion_backend == "wand":
        require_wand()
    out = dataset_writer.check_writable_file(args.out)  # before rendering 300 frames, not after
    suffix_format(args.out, "--out", {".gif": "gif"}, "the animation")
    face, origin = preview_face(args.rafdb, args.seed)
    names = perturbations.perturbation_names(args.perturbation_set)
    canvases = preview_frames(face, seed=args.seed, motion_backend=args.motion_backend, colour=args.colour,
                              label_height=0 if args.plain else 14, names=names)
    try:
        write_gif(canvases, out, args.frame_ms)
    except OSError as error:
        raise UserError(f"--out {out}: cannot write ({error.strerror or error})") from None
    LOG.info("wrote %s (%d perturbations x 30 frames, from %s)", args.out, len(names), origin)
    return 0


# --------------------------------------------------------------------------------------------
# Command line


def add_render_args(parser) -> None:
    """--perturbation-set, --motion-backend and --colour, shared by ``export`` and ``gif``."""
    parser.add_argument("--perturbation-set", choices=tuple(perturbations.PERTURBATION_SETS), default="rafdb",
                        help="which perturbations: " + "; ".join(f"{name}: {text}" for name, text in
                                                               perturbations.PERTURBATION_SETS.items()))
    parser.add_argument("--motion-backend", choices=perturbations.MOTION_BACKENDS, default="numpy",
                        help="motion blur: numpy port (<= 1 grey level from ImageMagick) or wand (ImageMagick)")
    parser.add_argument("--colour", choices=perturbations.COLOUR_MODES, default="rgb",
                        help="rgb (correct colours) or bgr-compat (the original's swapped spatter colours)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="{export,verify,gif}")

    export = commands.add_parser("export", help="write the RAF-DB-P tree", description=__doc__)
    data = export.add_argument_group("input")
    data.add_argument("--rafdb", default=None, help="RAF-DB root folder (the one holding basic/; default "
                      "RAF-DB, or --data)")
    fer_export.add_dataset_choice(data)
    data.add_argument("--source", choices=SOURCES, default="landmarks",
                      help="landmarks: align every test original from its manual landmarks (FAITHFUL); "
                           "aligned: pad the official 100 px aligned images by 15 px instead (BENCHMARK.md §3.6; "
                           "not comparable with RAF-DB-P)")
    data.add_argument("--fallback-pad", choices=perturbations.FALLBACK_PADS, default="reflect101",
                      help="padding of the aligned images under --source aligned")
    what = export.add_argument_group("output")
    what.add_argument("--out", default=None,
                      help="output root folder of the tree (created if needed; an existing one must hold "
                           "the manifest.json of an export with the same parameters, which is resumed); "
                           "default perturbed_raf_dataset (other --dataset: perturbed_dataset)")
    what.add_argument("--perturbations", default="all",
                      help=f"'all' (the whole --perturbation-set) or a comma-separated list of its names; the 10: "
                           f"{', '.join(perturbations.PERTURBATIONS)}; imagenet-extra: "
                           f"{', '.join(perturbations.perturbation_names('imagenet-extra'))}")
    what.add_argument("--format", choices=rafdb_dataset.FORMATS, default=None,
                      help="jpg: OpenCV JPEG quality 95 (FAITHFUL, the default); png: lossless (not comparable "
                           "with jpg); other --dataset: png for FER (default), jpg (default) or png for folders")
    what.add_argument("--seed", type=seed_int, default=0, help="seed of every per-sequence generator")
    add_render_args(what)
    dataset_writer.add_run_args(export.add_argument_group("execution"))

    verify = commands.add_parser("verify", help="check a tree against its manifest.json", description=__doc__)
    verify.add_argument("--out", default="perturbed_raf_dataset",
                        help="the exported tree to check (the folder holding manifest.json)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")

    gif = commands.add_parser("gif", help="render perturbations.gif (the default command)", description=__doc__)
    gif.add_argument("--rafdb", default=None, type=Path,
                     help="RAF-DB root whose first test original is shown (default: RAF-DB when it holds one, "
                          "else a synthetic face)")
    gif.add_argument("--out", default="perturbations.gif", help="the GIF image file to write (the animation)")
    gif.add_argument("--seed", type=seed_int, default=0, help="seed of the random perturbations")
    add_render_args(gif)
    gif.add_argument("--plain", action="store_true", help="tiles only, without the perturbation names above them")
    gif.add_argument("--frame-ms", type=int, default=100, help="duration of one frame in milliseconds")
    gif.add_argument("--quiet", action="store_true", help="no INFO log messages")

    return parser.parse_args(argv or ["gif"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    commands = {"export": cmd_export, "verify": cmd_verify, "gif": cmd_gif}
    fer_log = logging.getLogger("fer")  # the parent of this script's and dataset_writer's loggers
    previous_level = fer_log.level
    if getattr(args, "quiet", False):
        fer_log.setLevel(logging.WARNING)
    try:
        return commands[args.command](args)
    finally:  # main() is also called in-process (tests): leave the logger as it was
        fer_log.setLevel(previous_level)


if __name__ == "__main__":
    run_main(main)
