"""Any labelled folder of faces (docs/BENCHMARK.md §10): ``ROOT/<split>/<class>/<any path>``.

Splits are ``train``, ``val`` (optional: else the stratified hold-out; ``valid`` and
``validation`` are read as ``val``) and ``test``; another folder beside them is ignored with a
warning. Class folder names are matched to the canonical emotions case-insensitively with synonyms
(:mod:`datasets.classes`); an unknown name is an error listing the accepted names (numbered
folders get a ready ``classes.txt`` for the usual numberings), unless ``ROOT/classes.txt`` lists
the class names in order (one per line, UTF-8 with or without a byte-order mark, LF or CRLF; then
any names are allowed and every folder must be listed). A line ``FOLDER = NAME`` names the class
of a folder whose name is not the class name (``1 = surprise``).
Without ``classes.txt`` the order is RAF-DB's restricted to the classes present, with contempt
last. Images may sit in sub-folders of a class folder; the
id of an image is its path below the split folder (``happy/session2/img7.png``). Hidden files
and folders (a leading dot), Windows' ``Thumbs.db`` and ``desktop.ini`` and macOS' ``Icon\\r`` are ignored; any other
file must be an image OpenCV decodes; a broken symbolic link is an error naming it, and so is a
link that makes an image count twice anywhere in the tree (:meth:`FolderDataset._scan_all`).
Ids are paths below ROOT (``test/happy/session2/img7.png``), so they are unique across splits;
:func:`relative_id` drops the split folder (the export's file name).
Images keep their own size; grey files are read as (H, W, 1), colour ones as RGB.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from cli_common import UserError, read_text_lines
from datasets.base import Dataset, LabelSet
from datasets.classes import CANONICAL, FER2013_CLASSES, RAFDB_CLASSES, accepted_names, canonical_name
from datasets.images import IMAGE_SUFFIXES, read_image

LOG = logging.getLogger("fer.datasets")

# The folder names read as each split (one of them per tree); the first is the one written.
SPLIT_SYNONYMS = {"train": ("train",), "validation": ("val", "valid", "validation"), "test": ("test",)}
SPLIT_FOLDERS = {split: spellings[0] for split, spellings in SPLIT_SYNONYMS.items()}
CLASSES_FILE = "classes.txt"

EXPECTED_LAYOUT = """expected layout (docs/DATASETS.md; `python3 rafdb_dataset.py sample --dataset folder --out DIR`
writes a synthetic one, `python3 folder_dataset.py from-fer2013 FERPlus/ OUT/` converts FER2013/FER+):
  <data>/{train,val,test}/<class>/<image>.{jpg,jpeg,png,bmp,webp,tif,tiff}   (val optional; also valid/ or validation/)
  <data>/classes.txt   optional: class names in order, one per line (or FOLDER = NAME)"""

# The class numbering of datasets that are often shared as numbered class folders: the name of
# the class in folder <number>. RAF-DB's labels (and its copies on Kaggle, DATASET/train/1..7),
# FER2013's emotion column, AffectNet's expression codes.
NUMBERINGS = {
    "RAF-DB": {str(number): name for number, name in enumerate(RAFDB_CLASSES, 1)},
    "FER2013": {str(number): name for number, name in enumerate(FER2013_CLASSES)},
    "AffectNet": {str(number): name for number, name in enumerate(
        ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"))},
}


# Files the operating system leaves in folders (Windows' thumbnail cache and folder settings, macOS'
# folder icon); ignored like hidden files (macOS' .DS_Store is one).
SYSTEM_FILES = ("thumbs.db", "desktop.ini", "icon\r")  # icon\r: macOS' custom folder icon, "Icon" + CR


def _shown(path) -> str:
    """A path for a message, its control characters escaped (``Icon\\r``): printed raw, a carriage
    return would send the terminal back to the start of the line, over the message."""
    text = str(path)
    if all(unicodedata.category(char)[0] != "C" for char in text):
        return text
    return "".join(char.encode("unicode_escape").decode("ascii") if unicodedata.category(char)[0] == "C" else char
                   for char in text)


def _folded(name: str) -> str:
    """A name as compared: NFC (macOS writes folder names decomposed, NFD: ``o`` + a combining
    diaeresis for ``ö``; a classes.txt typed elsewhere is composed) and case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def _visible(names) -> list[str]:
    return sorted(name for name in names if not name.startswith(".") and name.lower() not in SYSTEM_FILES)


def _split_dirs(root: Path) -> dict[str, Path]:
    """The split folders of ``root``: ``train``, ``test`` and one of ``val``/``valid``/``validation``
    (two of those is an error: which one validates would be a guess)."""
    found = {}
    for split, spellings in SPLIT_SYNONYMS.items():
        present = [root / name for name in spellings if (root / name).is_dir()]
        if len(present) > 1:
            raise UserError(f"{root}: both {present[0].name}/ and {present[1].name}/ would be the {split} split; "
                            f"keep one (or rename the other to a name that is not a split)")
        if present:
            found[split] = present[0]
    return found


def _refuse_broken_link(path: Path) -> None:
    """A symbolic link whose target is gone would drop a class folder or an image without a word."""
    if path.is_symlink() and not path.exists() and not path.name.startswith("."):
        raise UserError(f"{_shown(path)}: a broken symbolic link (to {_shown(os.readlink(path))}, which does not exist); "
                        "remove it or restore its target")


def _has_split_dirs(folder: Path) -> bool:
    """Whether ``folder`` holds split folders (two spellings of one split count: it still does)."""
    try:
        return bool(_split_dirs(folder))
    except UserError:
        return True


def _no_split_hint(root: Path) -> str:
    """Why a root without split folders may look as it does: split folders spelt in capitals, or
    class folders straight under the root (CK+ and similar ship so)."""
    names = [entry.name for entry in sorted(root.iterdir()) if entry.is_dir() and not entry.name.startswith(".")]
    capitals = [name for name in names if any(name.lower() in spellings for spellings in SPLIT_SYNONYMS.values())]
    if capitals:
        return f" (found {', '.join(f'{name}/' for name in capitals)}: split folder names are lower case)"
    if (root / "basic" / "Image").is_dir():
        return " (this looks like RAF-DB's own layout: use --dataset rafdb)"
    below = [root / name for name in names if _has_split_dirs(root / name)]
    if below:
        return f" (found split folders in {below[0]}: use --data {below[0]})"
    classes = [name for name in names if canonical_name(name) is not None or name.isdigit()]
    if classes:
        return (f"; {', '.join(f'{name}/' for name in classes[:4])}{', ...' if len(classes) > 4 else ''} look like "
                f"class folders: put them in {root / 'test'}/ (a dataset to evaluate on), or split them into "
                f"{root / 'train'}/ and {root / 'test'}/")
    return ""


def numbering_hint(folders: Sequence[str], classes_file: Path) -> str:
    """For class folders named by numbers (``1`` .. ``7``): the ``classes.txt`` of each usual
    numbering that has all of them, ready to copy, so that the classes get emotion names (which
    a model's classes are matched by). "" when a folder name is not a number or no numbering fits."""
    if not folders or not all(name.isdigit() for name in folders):
        return ""
    fitting = [dataset for dataset, names in NUMBERINGS.items() if all(f in names for f in folders)]
    if not fitting:
        return ""
    numbers = sorted(folders, key=int)
    lines = [f"numbered class folders ({', '.join(numbers)}): write {classes_file} to say which emotion each "
             f"number is, one `FOLDER = NAME` line per folder in class order; if they follow "
             f"{fitting[0]}'s numbering:"]
    lines += [f"  {number} = {NUMBERINGS[fitting[0]][number]}" for number in numbers]
    for other in fitting[1:]:
        lines.append(f"({other} numbers them " + ", ".join(f"{n} {NUMBERINGS[other][n]}" for n in numbers) + ")")
    return "\n".join(lines)


def read_classes_file(path: Path) -> list[tuple[str, str]]:
    """``(folder, class name)`` per line of ``classes.txt``, in order: a line ``NAME`` is a folder
    of that name, a line ``FOLDER = NAME`` a folder whose class is NAME. Blank lines are skipped."""
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(read_text_lines(path, "class list"), 1):
        if not line.strip():
            continue
        folder, equals, name = (part.strip() for part in line.partition("="))
        if not equals:
            name = folder
        if not folder or not name or "=" in name:
            raise UserError(f"{path}:{number}: {line.strip()!r}: expected a class name, or FOLDER = NAME")
        if "/" in folder or "\\" in folder or folder.startswith("."):
            raise UserError(f"{path}:{number}: {folder!r} is not a folder name")
        if _folded(folder) in (_folded(f) for f, _ in entries):
            raise UserError(f"{path}:{number}: folder {folder!r} is listed twice")
        if _folded(name) in (_folded(n) for _, n in entries):
            raise UserError(f"{path}:{number}: class {name!r} is listed twice")
        emotion = canonical_name(name)
        same = [n for _, n in entries if emotion is not None and canonical_name(n) == emotion]
        if same:  # a model's output of that emotion could not be matched to one of them
            raise UserError(f"{path}:{number}: class {name!r} is the emotion {emotion}, as {same[0]!r} is; "
                            f"models are matched to classes by emotion, so rename one (a name outside the "
                            f"emotion vocabulary, e.g. {name.strip().lower().replace(' ', '_')}_2, is matched "
                            f"exactly)")
        entries.append((folder, name))
    if not entries:
        raise UserError(f"{path}: no class names (one per line)")
    return entries


def relative_id(image_id: str) -> str:
    """The id without its split folder: ``test/happy/a.png`` -> ``happy/a.png``."""
    return image_id.split("/", 1)[1]


class FolderDataset(Dataset):
    """A class-folder tree (docs/BENCHMARK.md §10)."""

    name = "folder"
    title = "folder dataset"
    protocols = ("hard",)
    default_root = None
    grey = None  # per image
    native_size = None  # images keep their own size

    def __init__(self, root, *, protocol=None, allow_missing=False):
        super().__init__(root, protocol=protocol, allow_missing=allow_missing)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: folder dataset not found\n{EXPECTED_LAYOUT}")
        self.dataset_name = self.root.resolve().name
        self.splits = _split_dirs(self.root)
        if not self.splits:
            raise UserError(f"{self.root}: no train/, val/ or test/ folder{_no_split_hint(self.root)}\n{EXPECTED_LAYOUT}")
        # samefile: on a case-insensitive file system (macOS, Windows) root/train is Train/ itself
        ignored = [entry.name for entry in sorted(self.root.iterdir())
                   if entry.is_dir() and not entry.name.startswith(".")
                   and not any(os.path.samefile(entry, path) for path in self.splits.values())]
        if ignored:
            LOG.warning("%s: %s ignored (not a split folder: %s)", self.root,
                        ", ".join(f"{name}/" for name in ignored),
                        "train/, val/ (or valid/, validation/), test/; split folder names are lower case")
        loose = [entry.name for entry in sorted(self.root.iterdir())
                 if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")]
        if loose:  # images outside every split folder belong to no split: said, not silently left out
            LOG.warning("%s: %d image(s) at the root ignored (%s%s): images belong in <split>/<class>/",
                        self.root, len(loose), ", ".join(map(_shown, loose[:3])), f" and {len(loose) - 3} more" if len(loose) > 3 else "")
        self.has_validation = "validation" in self.splits
        folders = {split: _visible(p.name for p in path.iterdir() if p.is_dir())
                   for split, path in self.splits.items()}
        for split, path in self.splits.items():
            for entry in sorted(path.iterdir()):
                _refuse_broken_link(entry)
            loose = _visible(p.name for p in path.iterdir() if p.is_file())
            if loose:
                raise UserError(f"{_shown(path / loose[0])}: files must sit in a class folder "
                                f"({path}/<class>/...)\n{EXPECTED_LAYOUT}")
        all_folders = sorted({name for names in folders.values() for name in names})
        classes_file = self.root / CLASSES_FILE
        self.folder_class: dict[str, int] = {}
        if classes_file.is_file():
            entries = read_classes_file(classes_file)
            lookup = {_folded(folder): index for index, (folder, _) in enumerate(entries)}
            for folder in all_folders:
                if _folded(folder) not in lookup:
                    split = next(s for s, names in folders.items() if folder in names)
                    raise UserError(f"{_shown(self.splits[split] / folder)}: class folder not listed in {classes_file} "
                                    f"(it lists {', '.join(f for f, _ in entries)})")
                self.folder_class[folder] = lookup[_folded(folder)]
            unused = [entry for index, entry in enumerate(entries) if index not in self.folder_class.values()]
            if unused:
                folder, name = unused[0]
                raise UserError(f"{classes_file}: class {name!r} has no folder{'' if folder == name else f' {folder!r}'} "
                                f"in {', '.join(path.name + '/' for path in self.splits.values())}")
            self.class_names = tuple(name for _, name in entries)
        else:
            canonical: dict[str, str] = {}
            for folder in all_folders:
                name = canonical_name(folder)
                if name is None:
                    split = next(s for s, names in folders.items() if folder in names)
                    hint = numbering_hint(all_folders, classes_file)
                    raise UserError(f"{_shown(self.splits[split] / folder)}: unknown class folder name; accepted "
                                    f"(any case): {accepted_names()}; or list your class names in "
                                    f"{classes_file}" + (f"\n{hint}" if hint else ""))
                canonical[folder] = name
            self.class_names = tuple(name for name in CANONICAL if name in canonical.values())
            self.folder_class = {folder: self.class_names.index(name) for folder, name in canonical.items()}
        for split, names in folders.items():  # e.g. Happy/ and happiness/ side by side: one class, said once
            merged: dict[int, list[str]] = {}
            for folder in names:
                merged.setdefault(self.folder_class[folder], []).append(folder)
            for index, group in merged.items():
                if len(group) > 1:
                    LOG.warning("%s: folders %s are all the class %s; their images are merged", self.splits[split],
                                ", ".join(f"{folder}/" for folder in sorted(group)), self.class_names[index])
        self._labels: dict[str, LabelSet] = {}
        self._scanned: dict[str, tuple[list[str], list[int]] | str] | None = None  # _scan_all, once

    def split_name(self, split: str) -> str:
        return self.splits[split].name if split in self.splits else SPLIT_FOLDERS[split]

    def _scan(self, split: str) -> tuple[list[str], list[int]]:
        """The image ids of ``split`` (sorted) and their class indices, from :meth:`_scan_all`."""
        if self._scanned is None:
            self._scanned = self._scan_all()
        result = self._scanned[split]
        if isinstance(result, str):
            raise UserError(result)
        return result

    def _scan_all(self) -> dict[str, tuple[list[str], list[int]] | str]:
        """Every split's ``(ids, classes)``, or the error of its first unusable file, read in one walk
        of the whole tree whichever split is asked first: an image must be read once in the dataset.

        Linked sub-folders are followed like linked files and class folders. A link into another
        class folder (of this split or another: images under two classes, or test images in train),
        back into a folder already read (a loop, images twice), or to an image read elsewhere (a
        linked folder or file shared by two classes or splits, a second name for an image of its
        own folder) is an error naming both paths, raised for any split: the numbers of every split
        would be wrong. One real path per folder and one per linked file are kept (no file is
        opened or stat-ed unless it is a link)."""
        class_roots: dict[str, str] = {}
        for other in self.splits:
            for name in _visible(p.name for p in self.splits[other].iterdir() if p.is_dir()):
                real, label = os.path.realpath(self.splits[other] / name), f"{self.splits[other].name}/{name}"
                if real in class_roots:
                    raise UserError(f"{self.root / label} and {self.root / class_roots[real]}: the same folder "
                                    f"({real}) through a symbolic link; each class folder must hold its own images")
                class_roots[real] = label
        read_folders: dict[str, Path] = {}  # real folder -> the path it was read as, all splits
        linked_files: list[tuple[Path, str]] = []  # (link, its real target), all splits
        scanned: dict[str, tuple[list[str], list[int]] | str] = {}
        for split, base in self.splits.items():
            ids, classes, error = [], [], None
            for folder in _visible(p.name for p in base.iterdir() if p.is_dir()):
                own = os.path.realpath(base / folder)
                stack = [base / folder]
                while stack:  # depth first, sub-folders in name order (as os.walk)
                    directory = stack.pop()
                    real = os.path.realpath(directory)
                    owner = next((root for root in class_roots
                                  if real == root or real.startswith(root + os.sep)), None)
                    if owner is not None and owner != own:
                        raise UserError(f"{_shown(directory)}: a symbolic link into the class folder {class_roots[owner]} "
                                        f"({real}); its images would count under two classes or splits: remove "
                                        f"the link")
                    if real in read_folders:
                        raise UserError(f"{_shown(directory)}: the same folder as one already read ({_shown(read_folders[real])}; "
                                        f"both are {real}), through a symbolic link; remove the link (a loop, or "
                                        f"images counted twice, under two classes or in two splits)")
                    read_folders[real] = directory
                    try:
                        with os.scandir(directory) as listing:
                            entries = sorted((entry for entry in listing if _visible([entry.name])),
                                             key=lambda entry: entry.name)
                    except OSError as exc:  # this split's own error, as an unusable file
                        error = error or f"{_shown(directory)}: cannot read the folder ({exc.strerror})"
                        continue
                    subdirs = []
                    for entry in entries:
                        if entry.is_dir():  # a linked folder too
                            subdirs.append(directory / entry.name)
                            continue
                        path = directory / entry.name
                        try:  # the image ids go into manifests, predictions files and JSON: UTF-8 text
                            entry.name.encode("utf-8")
                        except UnicodeEncodeError:
                            error = error or (f"{os.fsencode(path)!r}: the file name is not valid UTF-8 (made on "
                                              f"a system with another encoding?); rename it")
                            continue
                        if entry.is_symlink():  # a linked file, as a linked folder: not into another class folder
                            try:
                                _refuse_broken_link(path)
                            except UserError as exc:
                                error = error or str(exc)
                                continue
                            target = os.path.realpath(path)
                            owner = next((root for root in class_roots if target.startswith(root + os.sep)), None)
                            if owner is not None and owner != own:
                                raise UserError(f"{_shown(path)}: a symbolic link to {_shown(target)}, an image of the class "
                                                f"folder {class_roots[owner]}; it would count under two classes "
                                                f"or splits: remove the link")
                            linked_files.append((path, target))
                        if not entry.is_file():  # a pipe, socket or device: reading it would block or never end
                            error = error or (f"{_shown(path)}: not a regular file (a named pipe, socket or device); "
                                              f"expected image files only: remove it")
                            continue
                        if path.suffix.lower() not in IMAGE_SUFFIXES:
                            error = error or (f"{_shown(path)}: not an image file (expected "
                                              f"{', '.join(IMAGE_SUFFIXES)}; hidden files are ignored)")
                            continue
                        ids.append(path.relative_to(self.root).as_posix())
                        classes.append(self.folder_class[folder])
                    stack.extend(reversed(subdirs))
            order = sorted(range(len(ids)), key=ids.__getitem__)
            scanned[split] = error or ([ids[i] for i in order], [classes[i] for i in order])
        # a linked file whose image is read in a folder of the tree, or through another link: twice
        first_name: dict[str, Path] = {}
        for link, target in linked_files:
            folder, name = os.path.split(target)
            first = first_name.get(target)
            if first is None and folder in read_folders and _visible([name]):
                first = read_folders[folder] / name
            if first is not None:
                raise UserError(f"{_shown(link)}: a symbolic link to {_shown(target)}, the image read as {_shown(first)}; it would count "
                                f"twice (under two classes, in two splits, or twice in one folder): remove the link")
            first_name[target] = link
        return scanned

    def labels(self, split: str) -> LabelSet:
        self.check_split(split)
        if split not in self.splits:
            wanted = SPLIT_FOLDERS[split]
            near = sorted(entry.name for entry in self.root.iterdir()
                          if entry.is_dir() and entry.name != wanted and entry.name.lower() == wanted.lower()) \
                if self.root.is_dir() else []
            hint = f" (found {near[0]!r}: split folder names are lower case)" if near else ""
            if split == "test" and "validation" in self.splits:
                hint = (f" (found {self.splits['validation'].name}/, a validation split; to evaluate on it, as "
                        f"AffectNet's validation set is used as its test set, rename it to test/)")
            raise UserError(f"{self.root / wanted}: split folder not found{hint}\n{EXPECTED_LAYOUT}")
        if split not in self._labels:
            ids, classes = self._scan(split)
            if not ids:
                raise UserError(f"{self.splits[split]}: the {split} split is empty (no images in its class folders)")
            labels = np.eye(self.num_classes, dtype=np.float32)[classes]
            self._labels[split] = LabelSet(names=ids, labels=labels, protocol="hard", split=split,
                                           n_total=len(ids))
        return self._labels[split]

    def image_path(self, image_id: str) -> Path:
        parts = image_id.split("/")
        split_names = {path.name for path in self.splits.values()}  # val/, valid/ or validation/
        if len(parts) < 3 or parts[0] not in split_names or ".." in parts or "" in parts:
            raise UserError(f"{image_id!r}: not an image id of {self.root} (expected <split>/<class>/<file>)")
        return self.root / image_id

    def read_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id), keep_grey=True)

    def describe(self) -> dict:
        return {**super().describe(), "name": self.dataset_name}


def write_folder_tree(source: Dataset, out: str | Path, *, fmt: str = "png",
                      progress: bool | None = None) -> dict[str, int]:
    """Write ``source``'s splits as a class-folder dataset at ``out`` (docs/BENCHMARK.md §10).

    ``out/{train,val,test}/<class>/<file>.<fmt>`` with the class of each image's label (argmax;
    for FER+ only the rows its vote filter keeps) and ``out/classes.txt`` with the source's class
    order, so the folder dataset has the same classes in the same order. Grey images stay grey.
    The tree is built in a temporary sibling folder and renamed onto ``out`` (which must not exist
    or be empty). Returns the number of images per split.
    """
    import contextlib
    import shutil
    import sys
    import tempfile

    from tqdm import tqdm

    from datasets.images import encode_image

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose a new output folder")
    splits = [split for split in SPLIT_FOLDERS if split != "validation" or source.has_validation]
    label_sets = {split: source.labels(split) for split in splits}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    if progress is None:
        progress = sys.stderr.isatty()
    counts = {}
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        (tmp / CLASSES_FILE).write_text("\n".join(source.class_names) + "\n")
        total = sum(len(labels) for labels in label_sets.values())
        with tqdm(total=total, unit="image", file=sys.stderr, disable=not progress,
                  desc=f"{source.name} -> {out}") as bar:
            for split, labels in label_sets.items():
                for folder in source.class_names:
                    (tmp / SPLIT_FOLDERS[split] / folder).mkdir(parents=True, exist_ok=True)
                for image_id, index in zip(labels.names, labels.classes):
                    target = tmp / SPLIT_FOLDERS[split] / source.class_names[index] / f"{Path(image_id).stem}.{fmt}"
                    if target.exists():
                        raise UserError(f"{image_id}: two images of {split} would both be written as {target.name}")
                    target.write_bytes(encode_image(source.read_image(image_id), fmt))
                    bar.update(1)
                counts[SPLIT_FOLDERS[split]] = len(labels)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return counts
