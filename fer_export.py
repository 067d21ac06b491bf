"""Corrupted exports of FER2013/FER+ and of folder datasets: work units and renderers for
``dataset_writer.export`` (docs/BENCHMARK.md §9.3, §9.9, §10). No TensorFlow, no argument parsing.

Layouts
-------
``png`` (FER default): one folder per corruption and severity, one lossless PNG per row::

    <out>/fer2013.<split>.<corruption>.<severity>/<row:05d>.png      48x48 grey

``fer-csv``: the original's line-aligned text files, one per corruption and severity::

    <out>/fer2013.<split>.<corruption>.<severity>.csv

with exactly one line per line of ``fer2013.csv``: the header and the rows of other splits are
empty lines, the split's rows are ``-1,<2304 space-separated values>``. ``datasets.fer2013``
reads it as the pixel CSV of the same root (``FerPlus(root, pixels=<file>)``).

Folder datasets: ``<out>/<name>.<split>.<corruption>.<severity>/<path below the split folder>``
in JPEG (quality 95) or PNG; by default each file keeps its format family (``.jpg``/``.jpeg``
-> JPEG, anything else -> PNG). Two sources that would get one output name (``a.bmp`` and
``a.webp``) are refused while the units are built (:func:`refuse_name_clashes`), and so are
images smaller than ``corruptions.MIN_SIDE`` and unreadable files (``dataset_writer.refuse_unusable_sources``).

Every split row is exported (FER+ filtering happens when the labels are read, as in the
original). Each item's generator is ``cli_common.item_rng(seed, kind, corruption, severity,
<row id or relative path>)``, so the bytes do not depend on the worker count. Grey images stay
grey (:func:`corrupt_image`); the tables scale with k = H/48 inside ``corruptions`` (k = 1 for FER).

How a script uses it (``ferplus_aug_dataset.py export``, ``rafdb_aug_dataset.py export
--dataset ferplus|folder``)::

    data = datasets.open_dataset(args)
    job = fer_export.c_job(data, pairs, split="test", fmt=args.format, seed=args.seed)
    dataset_writer.export(job.units, job.render, args.out, generator=..., kind=job.kind,
                          params=job.params, sources=job.sources, source_root=str(data.root), ...)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cli_common import UserError, item_rng
from dataset_writer import WorkUnit, refuse_changed_sources, refuse_unusable_sources, require_corruptible_size
from datasets.images import encode_image, read_image

FER_C_KIND = "fer-c"
FOLDER_C_KIND = "folder-c"
FER_FORMATS = ("png", "fer-csv")
FOLDER_FORMATS = ("auto", "jpg", "png")
FER_PREFIX = "fer2013"  # the original's file prefix: the pixels come from fer2013.csv


def corrupt_image(image: np.ndarray, name: str, severity: int, rng: np.random.Generator, *,
                  motion_backend: str = "numpy") -> np.ndarray:
    """``corruptions.corrupt`` for RGB (H, W, 3) or grey (H, W, 1) uint8; the shape is kept.

    Grey images are corrupted natively, with the grey paths of docs/BENCHMARK.md §9.3 and §9.9
    (brightness on the intensity, the greys of the spatter colours, motion blur of the plane).
    """
    import corruptions

    return corruptions.corrupt(image, name, severity, rng, motion_backend=motion_backend)


def c_folder(dataset: str, split: str, name: str, severity: int) -> str:
    """``<dataset>.<split>.<corruption>.<severity>``, e.g. ``fer2013.PublicTest.spatter.3``."""
    return f"{dataset}.{split}.{name}.{severity}"


@dataclasses.dataclass
class Job:
    """Everything ``dataset_writer.export`` needs for one corrupted export."""

    units: list[WorkUnit]
    render: Callable
    kind: str
    params: dict
    sources: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# FER2013 / FER+


def fer_split_rows(data, split: str) -> np.ndarray:
    """Every row of ``split`` (by Usage, before any FER+ filtering) that has an image."""
    if getattr(data, "votes_path", None) is not None:  # ferplus: the votes file's Usage, as the original
        usage = np.asarray(data.votes.usage)
    else:
        usage = np.asarray(data.table.usage)
    rows = np.flatnonzero((usage == data.split_name(split)) & data.table.present)
    if not len(rows):  # the readers' message: it names a missing Usage column
        raise data.empty_split_error(split, getattr(data, "votes_path", None) or data.pixels_path)
    if data.name == "fer2013":  # its labels are the emotion column: the evaluation reads them
        from datasets.fer2013 import check_emotions

        check_emotions(data.table, rows)
    return rows


def _fer_image(pixels_path: str, row: int) -> np.ndarray:
    from datasets.fer2013 import load_pixel_table

    return load_pixel_table(Path(pixels_path)).pixels[row][:, :, None]


def render_fer_png(unit: WorkUnit, *, pairs, seed: int, split: str, motion_backend: str) -> list[tuple[str, bytes]]:
    """All (corruption, severity) PNGs of one FER row (a unit of :func:`c_job` with ``png``)."""
    pixels_path, row = unit.payload
    image = _fer_image(pixels_path, row)
    item = f"{row:05d}"
    return [(f"{c_folder(FER_PREFIX, split, name, severity)}/{item}.png",
             encode_image(corrupt_image(image, name, severity, item_rng(seed, FER_C_KIND, name, severity, item),
                                        motion_backend=motion_backend), "png"))
            for name, severity in pairs]


def fer_csv_line(image: np.ndarray) -> str:
    """``-1,<2304 values>``: one exported row of the line-aligned CSV (docs/BENCHMARK.md §9.3)."""
    return "-1," + " ".join(map(str, image.reshape(-1).tolist()))


def render_fer_csv(unit: WorkUnit, *, seed: int, split: str, rows: Sequence[int], n_lines: int,
                   motion_backend: str) -> list[tuple[str, bytes]]:
    """One line-aligned CSV for one (corruption, severity) (a unit of :func:`c_job` with ``fer-csv``)."""
    pixels_path, name, severity = unit.payload
    lines = [""] * n_lines
    for row in rows:
        item = f"{row:05d}"
        image = corrupt_image(_fer_image(pixels_path, row), name, severity,
                              item_rng(seed, FER_C_KIND, name, severity, item), motion_backend=motion_backend)
        lines[row + 1] = fer_csv_line(image)
    return [(unit.outputs[0], ("\n".join(lines) + "\n").encode("ascii"))]


def _fer_job(data, pairs, split: str, fmt: str, seed: int, motion_backend: str) -> Job:
    if fmt not in FER_FORMATS:
        raise UserError(f"--format {fmt}: FER exports are {' or '.join(FER_FORMATS)}")
    rows = fer_split_rows(data, split)
    split_name = data.split_name(split)
    pixels_path = str(data.pixels_path)
    params = {"seed": seed, "format": fmt, "motion_backend": motion_backend, "split": split_name,
              "dataset": data.name, "source_sha256": _sha256(data.pixels_path)}
    if fmt == "png":
        units = [WorkUnit(f"{row:05d}", tuple(f"{c_folder(FER_PREFIX, split_name, n, s)}/{row:05d}.png"
                                              for n, s in pairs), (pixels_path, int(row)))
                 for row in rows]
        render = functools.partial(render_fer_png, pairs=list(pairs), seed=seed, split=split_name,
                                   motion_backend=motion_backend)
    else:
        units = [WorkUnit(f"{c_folder(FER_PREFIX, split_name, n, s)}.csv",
                          (f"{c_folder(FER_PREFIX, split_name, n, s)}.csv",), (pixels_path, n, s))
                 for n, s in pairs]
        render = functools.partial(render_fer_csv, seed=seed, split=split_name, rows=[int(r) for r in rows],
                                   n_lines=len(data.table) + 1, motion_backend=motion_backend)
    return Job(units, render, FER_C_KIND, params, [f"{row:05d}" for row in rows])


# --------------------------------------------------------------------------------------------
# Folder datasets


def unit_key(relative: str) -> str:
    """The work unit name (and manifest key) of a folder image: its path below the split folder
    with ``|`` for ``/`` (``happy|session2|img7.png``), a base name as ``WorkUnit.key`` needs."""
    return relative.replace("/", "|")


def refuse_name_clashes(targets: Sequence[tuple[str, str, str]], clash: Callable[[str], str]) -> None:
    """UserError naming both source files when two (target, unit key, source path) triples share a
    target (an output name, or a frame stem) or a unit key; ``clash(target)`` says why they clash.

    Checked while the units are built, before anything is written: without it the second image
    would overwrite the first one's files (and the manifest would count it once).
    """
    seen: dict[str, str] = {}
    keys: dict[str, str] = {}
    for target, key, path in targets:
        first = seen.setdefault(target, path)
        if first != path:
            raise UserError(f"{first} and {path}: two source images {clash(target)}; rename one of them "
                            "(or move it to another folder)")
        other = keys.setdefault(key, path)
        if other != path:
            raise UserError(f"{other} and {path}: two source images with the same record name {key!r} in "
                            "the export's manifest (the '/' of a path is written as '|', and a file or "
                            "folder name holds a '|'); rename one of them")


def folder_output_name(relative: str, fmt: str) -> tuple[str, str]:
    """(output path, format) of a source path below the split folder: the format's suffix."""
    suffix = Path(relative).suffix.lower()
    if fmt == "auto":
        fmt = "jpg" if suffix in (".jpg", ".jpeg") else "png"
    return str(Path(relative).with_suffix("." + fmt).as_posix()), fmt


def render_folder(unit: WorkUnit, *, pairs, seed: int, dataset: str, split: str, fmt: str,
                  motion_backend: str) -> list[tuple[str, bytes]]:
    """All (corruption, severity) files of one image of a folder dataset."""
    path, relative = unit.payload
    image = read_image(path, keep_grey=True)
    require_corruptible_size(image.shape, path)
    out_name, out_fmt = folder_output_name(relative, fmt)
    if image.shape[2] == 1:
        import corruptions

        refused = sorted({name for name, _ in pairs} & corruptions.GREY_UNSUPPORTED)
        if refused:
            raise UserError(f"{path}: a grey image, and {', '.join(refused)} is not defined on grey images "
                            "(no colour saturation to change); leave it out or convert the file to RGB")
    return [(f"{c_folder(dataset, split, name, severity)}/{out_name}",
             encode_image(corrupt_image(image, name, severity, item_rng(seed, FOLDER_C_KIND, name, severity, relative),
                                        motion_backend=motion_backend), out_fmt))
            for name, severity in pairs]


def _folder_job(data, pairs, split: str, fmt: str, seed: int, motion_backend: str) -> Job:
    from datasets.folder import relative_id

    if fmt not in FOLDER_FORMATS:
        raise UserError(f"--format {fmt}: folder exports are {', '.join(FOLDER_FORMATS)}")
    labels = data.labels(split)
    split_name = data.split_name(split)
    units, targets = [], []
    for image_id in labels.names:
        relative = relative_id(image_id)
        out_name, _ = folder_output_name(relative, fmt)
        path = str(data.image_path(image_id))
        targets.append((out_name, unit_key(relative), path))
        # the unit key is the base name, which must be unique: use the relative path itself
        units.append(WorkUnit(unit_key(relative), tuple(
            f"{c_folder(data.dataset_name, split_name, n, s)}/{out_name}" for n, s in pairs),
            (path, relative), inputs=(path,)))
    how = (f"the suffix .{fmt} of --format {fmt}" if fmt != "auto" else
           "the suffix of its format family: .jpg for a .jpg/.jpeg source, .png for any other")
    refuse_name_clashes(targets, lambda name: f"would both be exported as {name} (an exported file keeps "
                                              f"its path below the split folder, with {how})")
    refuse_unusable_sources([path for _, _, path in targets])
    params = {"seed": seed, "format": fmt, "motion_backend": motion_backend, "split": split_name,
              "dataset": data.name, "name": data.dataset_name}
    render = functools.partial(render_folder, pairs=list(pairs), seed=seed, dataset=data.dataset_name,
                               split=split_name, fmt=fmt, motion_backend=motion_backend)
    return Job(units, render, FOLDER_C_KIND, params, [relative_id(i) for i in labels.names])


def c_job(data, pairs: Sequence[tuple[str, int]], *, split: str = "test", fmt: str | None = None,
          seed: int = 0, motion_backend: str = "numpy") -> Job:
    """The work of a corrupted export of ``data`` (a ``datasets`` Dataset: ferplus, fer2013 or folder).

    ``fmt``: FER ``png`` (default) or ``fer-csv``; folder ``auto`` (default), ``jpg`` or ``png``.
    A corruption not defined on grey (``corruptions.GREY_UNSUPPORTED``: saturate) is refused up
    front for an all-grey dataset, and per file (naming it) for a folder with grey images.
    """
    import corruptions

    refused = sorted({name for name, _ in pairs} & corruptions.GREY_UNSUPPORTED)
    if refused and data.grey:
        raise UserError(f"--corruptions: {', '.join(refused)} is not defined on grey images ({data.name} is "
                        "grey: no colour saturation to change); leave it out")
    if data.name in ("ferplus", "fer2013"):
        return _fer_job(data, pairs, split, fmt or "png", seed, motion_backend)
    if data.name == "folder":
        return _folder_job(data, pairs, split, fmt or "auto", seed, motion_backend)
    raise UserError(f"--dataset {data.name}: RAF-DB-C is exported by rafdb_aug_dataset.py export "
                    f"(this export is for ferplus, fer2013 and folder datasets)")


def parse_pairs(corruption_text: str = "all", severity_text: str = "1-5") -> list[tuple[str, int]]:
    """(corruption, severity) pairs from ``--corruptions all|a,b`` and ``--severities 1-5|1,3``, in
    registry order (the order of docs/BENCHMARK.md §2.3)."""
    import corruptions

    valid = list(corruptions.CORRUPTION_NAMES)
    if corruption_text.strip() == "all":
        names = valid
    else:
        wanted = [part.strip() for part in corruption_text.split(",") if part.strip()]
        unknown = [name for name in wanted if name not in valid]
        if not wanted or unknown:
            raise UserError(f"--corruptions: unknown corruption {(unknown or [''])[0]!r}; valid: {', '.join(valid)}")
        names = [name for name in valid if name in wanted]
    severities: set[int] = set()
    for part in severity_text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            chosen = range(int(low), int(high or low) + 1)
        except ValueError:
            raise UserError(f"--severities: expected integers or ranges like 1,2,3 or 1-5, got {severity_text!r}") from None
        if not chosen or min(chosen) < 1 or max(chosen) > 5:
            raise UserError(f"--severities: {part.strip()!r} is not within 1..5")
        severities.update(chosen)
    return [(name, severity) for name in names for severity in sorted(severities)]


# --------------------------------------------------------------------------------------------
# Perturbation sequences from the image itself (docs/BENCHMARK.md §9.9; no landmarks, as §3.6)

FER_P_KIND = "fer-p"
FOLDER_P_KIND = "folder-p"
P_SOURCE = "image"  # recorded in the manifest: sequences built from the dataset image, not from landmarks


def image_face(image: np.ndarray, pad: str = "reflect101") -> np.ndarray:
    """The 130 px face of the perturbations from any image: resized to 100x100 (bilinear) if it is
    not, padded by 15 px as ``--source aligned`` does (docs/BENCHMARK.md §3.6); grey stays grey
    (130 x 130 x 1), the perturbations take it natively."""
    import cv2

    import perturbations

    if image.shape[:2] != (perturbations.FRAME_SIZE, perturbations.FRAME_SIZE):
        size = perturbations.FRAME_SIZE
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, -1)
    return perturbations.aligned_source_face(np.ascontiguousarray(image), pad)


def image_sequence(image: np.ndarray, name: str, rng: np.random.Generator, *, motion_backend: str = "numpy",
                   pad: str = "reflect101") -> np.ndarray:
    """The 30 frames of perturbation ``name`` of ``image``, at the image's own size and channels.

    Frames are made at 100 px (the perturbations' pixel parameters) and resized back to H x W
    (bilinear); a grey image gives grey frames (H x W x 1).
    """
    import cv2

    import perturbations

    frames = perturbations.perturb(image_face(image, pad), name, rng, motion_backend=motion_backend)
    height, width = image.shape[:2]
    if (height, width) != frames.shape[1:3]:
        frames = np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
                           for frame in frames])
    return frames


def p_folder(dataset: str, split: str, name: str) -> str:
    """``<dataset>.<split>.<perturbation>``, e.g. ``fer2013.PublicTest.p_rotate``."""
    return f"{dataset}.{split}.{name}"


def _p_outputs(folder_of, stem: str, names, fmt: str) -> tuple[str, ...]:
    import perturbations

    return tuple(f"{folder_of(name)}/{stem}_{i:02d}.{fmt}" for name in names for i in range(perturbations.NUM_FRAMES))


def render_p(unit: WorkUnit, *, names, seed: int, kind: str, dataset: str, split: str, fmt: str,
             motion_backend: str, pad: str) -> list[tuple[str, bytes]]:
    """Every frame of every selected perturbation of one image (FER row or folder file)."""
    source, stem = unit.payload
    image = _fer_image(*source) if isinstance(source, tuple) else read_image(source, keep_grey=True)
    outputs = []
    for name in names:
        frames = image_sequence(image, name, item_rng(seed, kind, name, 0, stem), motion_backend=motion_backend,
                                pad=pad)
        for index, frame in enumerate(frames):
            outputs.append((f"{p_folder(dataset, split, name)}/{stem}_{index:02d}.{fmt}", encode_image(frame, fmt)))
    return outputs


def p_job(data, names: Sequence[str], *, split: str = "test", fmt: str | None = None, seed: int = 0,
          motion_backend: str = "numpy", pad: str = "reflect101") -> Job:
    """The work of a perturbation export of ``data`` (ferplus, fer2013 or folder): 30 frames per
    image and perturbation in ``<out>/<dataset>.<split>.<perturbation>/<stem>_<ii>.<fmt>``, where
    ``stem`` is the FER row (``00042``) or the path below the split folder without its suffix.
    ``fmt``: ``png`` for FER (default), ``jpg`` (default) or ``png`` for folder datasets."""
    import perturbations

    unknown = [name for name in names if name not in perturbations.PERTURBATIONS]
    if unknown or not names:
        raise UserError(f"--perturbations: unknown perturbation {(unknown or [''])[0]!r}; valid: "
                        f"{', '.join(perturbations.PERTURBATIONS)}")
    split_name = data.split_name(split)
    if data.name in ("ferplus", "fer2013"):
        fmt, kind, dataset = fmt or "png", FER_P_KIND, FER_PREFIX
        rows = fer_split_rows(data, split)
        items = [((str(data.pixels_path), int(row)), f"{row:05d}", ()) for row in rows]
        extra = {"source_sha256": _sha256(data.pixels_path)}
    elif data.name == "folder":
        from datasets.folder import relative_id

        fmt, kind, dataset = fmt or "jpg", FOLDER_P_KIND, data.dataset_name
        items = []
        for image_id in data.labels(split).names:
            path = str(data.image_path(image_id))
            items.append((path, str(Path(relative_id(image_id)).with_suffix("").as_posix()), (path,)))
        refuse_name_clashes([(stem, unit_key(stem), path) for path, stem, _ in items],
                            lambda stem: f"would both give the frames {stem}_00 .. {stem}_29 (frames are named "
                                         "by the path below the split folder without its suffix)")
        extra = {"name": data.dataset_name}
        if "," in data.dataset_name or "\n" in data.dataset_name:
            raise UserError(f"--data {data.root}: the dataset folder's name {data.dataset_name!r} contains a comma "
                            f"or newline; it starts the names of the perturbation folders, which the "
                            f"predictions format (comma-separated) cannot hold: rename the folder")
        refuse_unusable_sources([path for path, _, _ in items], corrupted=False)  # before anything is written
    else:
        raise UserError(f"--dataset {data.name}: use rafdb_perturb_dataset.py (landmark-aligned sequences)")
    if fmt not in ("jpg", "png"):
        raise UserError(f"--format {fmt}: perturbation frames are jpg or png")
    units = [WorkUnit(unit_key(stem), _p_outputs(lambda n: p_folder(dataset, split_name, n), stem, names, fmt),
                      (source, stem), inputs=inputs) for source, stem, inputs in items]
    params = {"seed": seed, "format": fmt, "motion_backend": motion_backend, "split": split_name,
              "dataset": data.name, "source": P_SOURCE, "fallback_pad": pad, **extra}
    render = functools.partial(render_p, names=list(names), seed=seed, kind=kind, dataset=dataset, split=split_name,
                               fmt=fmt, motion_backend=motion_backend, pad=pad)
    return Job(units, render, kind, params, [stem for _, stem, _ in items])


# --------------------------------------------------------------------------------------------
# Reading an export back (the evaluations)


@dataclasses.dataclass
class CorruptedSet:
    """One corruption and severity of an export, readable by the ids of the clean dataset."""

    corruption: str
    severity: int
    path: Path  # the folder, or the fer-csv file
    data: object  # the clean dataset (a datasets Dataset)
    fmt: str = "auto"

    @property
    def name(self) -> str:
        """``<corruption>.<severity>``: the original's report name of the set."""
        return f"{self.corruption}.{self.severity}"

    def file_name(self, image_id: str) -> str | None:
        """The file of ``image_id`` below the set's folder (None for a fer-csv set: one file)."""
        if self.path.suffix == ".csv":
            return None
        if self.data.name == "folder":
            from datasets.folder import relative_id

            return folder_output_name(relative_id(image_id), self.fmt)[0]
        return f"{image_id}.png"

    def read(self, image_id: str) -> np.ndarray:
        """The corrupted image of ``image_id`` (uint8, grey or RGB as exported)."""
        if self.path.suffix == ".csv":
            from datasets.fer2013 import load_pixel_table

            table = load_pixel_table(self.path)
            row = int(image_id)
            if row >= len(table) or not table.present[row]:
                raise UserError(f"{self.path}:{row + 2}: no image on this line (row {image_id})")
            return table.pixels[row][:, :, None]
        return read_image(self.path / self.file_name(image_id), keep_grey=True)


def refuse_other_source(data, manifest: dict | None, where: str) -> None:
    """UserError when ``manifest`` (a FER export's) records the SHA-256 of another CSV than
    ``data``'s: its images would be matched by row to labels (and clean images) of another file."""
    recorded = ((manifest or {}).get("params") or {}).get("source_sha256")
    if recorded and data.name in ("ferplus", "fer2013") and _sha256(data.pixels_path) != recorded:
        raise UserError(f"{where}: exported from another {data.pixels_path.name} than "
                        f"{data.pixels_path} (SHA-256 {recorded[:12]}... in its manifest); evaluate with the "
                        f"--data folder it was exported from, or export again from this one")


def corrupted_sets(data, corrupted: str | Path, split: str = "test") -> list[CorruptedSet]:
    """Every (corruption, severity) set of ``data``'s ``split`` under ``corrupted``, in the order
    of docs/BENCHMARK.md §2.3: PNG/JPEG folders or the line-aligned ``.csv`` files of ``--format fer-csv``."""
    import corruptions

    from dataset_writer import read_finished_manifest

    corrupted = Path(corrupted)
    if not corrupted.is_dir():
        raise UserError(f"{corrupted}: corrupted export folder not found")
    # an unfinished export, or a tree of the other kind: one message, before any file is looked for
    manifest = read_finished_manifest(corrupted, "c", "--corrupted", data.name) or {}
    fmt = manifest.get("params", {}).get("format", "auto")
    # The clean images would come from this CSV and the corrupted ones from another: no CE.
    refuse_other_source(data, manifest, f"--corrupted {corrupted}")
    if data.name == "folder":
        from datasets.folder import relative_id

        refuse_changed_sources(manifest, [(unit_key(relative_id(image_id)), str(data.image_path(image_id)))
                                          for image_id in data.labels(split).names], f"--corrupted {corrupted}")
    prefix = FER_PREFIX if data.name in ("ferplus", "fer2013") else getattr(data, "dataset_name", data.name)
    split_name = data.split_name(split)
    sets = []
    for name in corruptions.CORRUPTION_NAMES:
        for severity in corruptions.SEVERITIES:
            base = corrupted / c_folder(prefix, split_name, name, severity)
            csv_file = base.with_name(base.name + ".csv")
            if base.is_dir():
                sets.append(CorruptedSet(name, severity, base, data, fmt))
            elif csv_file.is_file() and data.name in ("ferplus", "fer2013"):
                sets.append(CorruptedSet(name, severity, csv_file, data, "fer-csv"))
    if not sets:
        raise UserError(f"{corrupted}: no {prefix}.{split_name}.<corruption>.<severity> folders or .csv files")
    return sets


# --------------------------------------------------------------------------------------------
# Running an export (shared by ferplus_aug_dataset.py and the RAF-DB scripts' --dataset option)


# Where rafdb_aug_dataset.py export writes every corruption set but the 18 without --out, and so where
# the evaluations look without --corrupted-extra (docs/BENCHMARK.md §2.9).
DEFAULT_CORRUPTED_EXTRA = "corrupted_raf_dataset_extra"


def default_corrupted(dataset: str, data_root: str | Path | None) -> Path:
    """Where a RAF-DB-C export of ``dataset`` is written without --out, and so where the evaluations
    look without --corrupted: corrupted_raf_dataset (RAF-DB), corrupted_dataset (FER2013/FER+, as the
    original), ``<the folder's name>-c`` (a folder dataset at ``data_root``)."""
    if dataset in ("ferplus", "fer2013"):
        return Path("corrupted_dataset")
    if dataset == "folder" and data_root is not None:
        return Path(f"{Path(data_root).resolve().name}-c")
    return Path("corrupted_raf_dataset")


def default_perturbed(dataset: str) -> Path:
    """Where a RAF-DB-P export of ``dataset`` is written without --out, and so where the evaluation
    looks without --perturbed."""
    return Path("perturbed_raf_dataset" if dataset == "rafdb" else "perturbed_dataset")


def add_dataset_choice(group) -> None:
    """``--dataset`` and ``--data`` for the RAF-DB export scripts (their ``--rafdb`` stays as it is)."""
    import datasets

    group.add_argument("--dataset", default="rafdb", choices=tuple(datasets.REGISTRY),
                       help="rafdb (this script's own export), or ferplus/fer2013/folder: the export of "
                            "docs/DATASETS.md through fer_export (grey stays grey)")
    group.add_argument("--data", default=None, type=Path, metavar="DIR",
                       help="dataset root: for rafdb the RAF-DB root (as --rafdb), default FERPlus for "
                            "ferplus/fer2013, required for folder")
    group.add_argument("--test-split", default="PublicTest", choices=datasets.FER_TEST_SPLITS,
                       help="ferplus/fer2013: which Usage is exported as the test split (PublicTest as the "
                            "original, PrivateTest as the usual FER+ convention); the evaluations take the same flag")
    group.add_argument("--labels", default=None, choices=("soft", "hard"),
                       help="accepted so that the evaluations' dataset flags can be repeated here; it changes nothing: an "
                            "export writes every image of the split under either protocol (the FER+ vote filter "
                            "drops images when an evaluation reads the labels)")


def refuse_fer_flags_for_rafdb(args) -> None:
    """--test-split and --labels choose FER images; a RAF-DB export writes every aligned image of its
    --split, so they are refused there rather than ignored."""
    for flag, value, default in (("--test-split", getattr(args, "test_split", "PublicTest"), "PublicTest"),
                                 ("--labels", getattr(args, "labels", None), None)):
        if value != default:
            raise UserError(f"{flag} {value}: only for --dataset ferplus/fer2013 (a RAF-DB export writes every "
                            "aligned image of --split)")


def open_export_dataset(args):
    """The (non-RAF-DB) dataset of ``--dataset``/``--data``; its root must be a folder."""
    import datasets

    data = datasets.open_dataset(args)  # --test-split and --labels as every script that reads a dataset
    if not data.root.is_dir():
        raise UserError(f"--data {data.root}: no such folder for --dataset {data.name} (docs/DATASETS.md)")
    return data


def run_job(job: Job, data, out: str | Path, *, generator: str, workers: int = 0, quiet: bool = False,
            force_rerender: bool = False, what: str = "corrupted", shard: tuple[int, int] | None = None):
    """Write ``job`` to ``out`` with ``dataset_writer.export`` (manifest, resume, atomic files)."""
    import sys

    import dataset_writer

    dataset_writer.check_output_dir(Path(out), kind=job.kind, params=job.params, force_rerender=force_rerender,
                                    source_root=data.root)
    result = dataset_writer.export(job.units, job.render, Path(out), generator=generator, kind=job.kind,
                                   params=job.params, sources=job.sources, source_root=str(data.root),
                                   workers=workers, progress=not quiet and sys.stderr.isatty(),
                                   force_rerender=force_rerender, shard=shard)
    if job.params.get("format") == "fer-csv":  # one unit per (corruption, severity) file, not per image
        images = f"{len(job.sources)} image(s) in {result.units} set file(s)"
    else:
        images = f"{result.units} image(s)"
    print(f"{data.title} {job.params.get('split')} {what} export to {result.out_dir}: {images}"
          f"{'' if result.shard is None else ' of this shard'}, {result.files} file(s) ({result.files_written} "
          f"written, {result.files_skipped} already complete{result.rerender_note}) in {result.seconds:.1f} s with "
          f"{result.workers} worker(s); manifest {result.manifest_path}{result.shard_note}", file=sys.stderr)
    return result
