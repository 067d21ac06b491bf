"""The repository explains itself: every section that code, tests and docs cite exists in docs/BENCHMARK.md.

Three checks, all on the files git tracks (or, outside a git checkout, on the source tree):

- docs/BENCHMARK.md has the fixed section numbering (0, 1.1-1.6, 2.1-2.9, 3.1-3.7, 4.1-4.9, 5.1-5.8,
  6, 7, 8.1-8.4, 9.1-9.9, 10, 11.1-11.6), each numbered heading right after its HTML anchor;
- every citation "BENCHMARK.md §N" / "§N.M" (including chains such as "§4.7, §5.3" or "§5.5-§5.7"),
  every "BENCHMARK.md#sN-M" link, every "§N.M" in Python code and every "#sN-M" link inside the
  document names an anchor that exists;
- no tracked file names a design document that is not in the repository, or a path outside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "docs" / "BENCHMARK.md"

# The numbered sections and their sub-sections, as code and README cite them.
EXPECTED_SECTIONS = {0: 0, 1: 6, 2: 9, 3: 7, 4: 9, 5: 8, 6: 0, 7: 0, 8: 4, 9: 9, 10: 0, 11: 6}

SECTION = r"§(\d+)(?:\.(\d+))?"
# "BENCHMARK.md" followed by a chain of section numbers joined by commas, dashes, slashes or words.
CITATION_CHAIN = re.compile(r"BENCHMARK\.md\s*((?:§\d+(?:\.\d+)?(?:\s*(?:,|-|–|/|and|or|to)\s*)?)+)")
LINK = re.compile(r"BENCHMARK\.md#(s[0-9][0-9-]*)")
ANCHOR = re.compile(r'<a id="(s[0-9][0-9-]*)"></a>')
HEADING = re.compile(r"^#{2,3} (\d+)(?:\.(\d+))?\.? ", re.MULTILINE)

TEXT_SUFFIXES = {".py", ".md", ".txt", ".cfg", ".ini", ".toml", ".json", ".yml", ".yaml", ".sh", ""}
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "demo", "out_training_fer"}


def anchor_id(section: str, sub: str | None) -> str:
    return f"s{section}" if sub is None else f"s{section}-{sub}"


def tracked_files() -> list[Path]:
    """Files git tracks; outside a git checkout, the tree minus virtual env, caches and outputs."""
    if (ROOT / ".git").exists():
        try:
            out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
            return [ROOT / name for name in out.stdout.decode().split("\0") if name]
        except (OSError, subprocess.CalledProcessError):
            pass
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files.extend(Path(folder) / name for name in names)
    return files


def text_files() -> dict[Path, str]:
    texts = {}
    for path in tracked_files():
        if path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


@pytest.fixture(scope="module")
def anchors() -> set[str]:
    return set(ANCHOR.findall(BENCHMARK.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return text_files()


def test_sections_are_numbered_as_cited_and_each_heading_has_its_anchor():
    text = BENCHMARK.read_text(encoding="utf-8")
    headings = [(int(m.group(1)), m.group(2)) for m in HEADING.finditer(text)]
    expected = []
    for section, subs in EXPECTED_SECTIONS.items():
        expected.append((section, None))
        expected.extend((section, str(sub)) for sub in range(1, subs + 1))
    assert headings == expected
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = HEADING.match(line + " ") if line.startswith("#") else None
        if match:
            wanted = f'<a id="{anchor_id(match.group(1), match.group(2))}"></a>'
            assert lines[number - 1] == wanted, f"line {number + 1}: {line!r} lacks {wanted} just above it"


def test_every_cited_section_has_an_anchor(anchors, texts):
    missing = []
    for path, text in texts.items():
        rel = path.relative_to(ROOT)
        cited = [m for chain in CITATION_CHAIN.finditer(text) for m in re.finditer(SECTION, chain.group(1))]
        if path.suffix == ".py":  # code cites sections of docs/BENCHMARK.md only, also after the first one
            cited += list(re.finditer(SECTION, text))
        for match in cited:
            if anchor_id(match.group(1), match.group(2)) not in anchors:
                missing.append(f"{rel}: {match.group(0)}")
        for link in LINK.findall(text):
            if link not in anchors:
                missing.append(f"{rel}: BENCHMARK.md#{link}")
    assert not missing, "sections cited but absent from docs/BENCHMARK.md:\n" + "\n".join(sorted(set(missing)))


def test_links_inside_the_document_resolve(anchors):
    text = BENCHMARK.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the table of contents links to the sections"
    assert links <= anchors, sorted(links - anchors)
    assert anchors <= links, f"sections missing from the table of contents: {sorted(anchors - links)}"


def test_citation_patterns_catch_what_they_must():
    """The patterns above find chained citations and reject a section that does not exist."""
    sample = "see BENCHMARK.md §4.7, §5.3 and §8.4; BENCHMARK.md §5.5-§5.7 and BENCHMARK.md#s2-3"
    chains = [c.group(1) for c in CITATION_CHAIN.finditer(sample)]
    cited = [anchor_id(m.group(1), m.group(2)) for chain in chains for m in re.finditer(SECTION, chain)]
    assert cited == ["s4-7", "s5-3", "s8-4", "s5-5", "s5-7"]
    assert LINK.findall(sample) == ["s2-3"]
    assert anchor_id("12", "1") not in set(ANCHOR.findall(BENCHMARK.read_text(encoding="utf-8")))


def test_no_file_points_outside_the_repository():
    # A reader has only this repository: no file may send them to an upper-case design document by
    # a name the repository does not hold, or to a folder beside it. Built by concatenation so that
    # this file does not contain the strings it forbids.
    brief_name = "SP" + "EC"
    outside = ".." + "/shared"
    word = re.compile(rb"\b" + brief_name.encode() + rb"\b")
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if word.search(data) or outside.encode() in data:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"files naming a document or a path outside the repository: {offenders}"


def test_help_shows_concrete_defaults_and_not_none():
    """--help adds "(default: X)" for a concrete default; a None default stands for a value the help
    text itself states (e.g. "default corrupted_raf_dataset"), so no "(default: None)" contradicts it."""
    from cli_common import ArgumentParser

    parser = ArgumentParser(prog="x")
    parser.add_argument("--out", default=None, help="output folder (default corrupted_raf_dataset)")
    parser.add_argument("--workers", type=int, default=3, help="processes")
    text = " ".join(parser.format_help().split())
    assert "output folder (default corrupted_raf_dataset)" in text and "default: None" not in text
    assert "processes (default: 3)" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed (apt-get install make)")
@pytest.mark.parametrize("value", ["", "  ", "/"])
def test_make_demo_refuses_an_empty_demo_folder(value):
    """The demo deletes and rewrites folders under $(DEMO): `make demo DEMO=` would have run
    `rm -rf /corrupted_raf_dataset ...` at the root. make stops before any command (dry run here)."""
    run = subprocess.run(["make", "-n", "demo", f"DEMO={value}"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "DEMO is empty or /" in run.stderr
    assert "rm -rf" not in run.stdout
    other = subprocess.run(["make", "-n", "help", f"DEMO={value}"], cwd=ROOT, capture_output=True, text=True)
    assert other.returncode == 0  # a target that does not use it
    plain = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert plain.returncode == 0 and "rm -rf demo/corrupted_raf_dataset demo/perturbed_raf_dataset" in plain.stdout
