"""Shared fixtures. Environment variables that TensorFlow reads at import are set here, first."""

import os

# BENCHMARK.md §4.9: training a 1x1 stride-2 Conv2D over an 8-channel map crashes oneDNN on some CPUs.
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
# float16 convolutions through oneDNN abort on CPUs without float16 instructions, and under the
# AVX2 cap above on every CPU: the tests run TensorFlow's own CPU kernels, the same on any CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SAMPLE_TRAIN = 70
SAMPLE_TEST = 21


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory):
    """A small synthetic RAF-DB tree (``.../RAF-DB``), built once per test session. Read-only."""
    import synthetic_faces

    root = tmp_path_factory.mktemp("sample") / "RAF-DB"
    synthetic_faces.write_sample_tree(root, n_train=SAMPLE_TRAIN, n_test=SAMPLE_TEST, seed=0)
    return root


# --------------------------------------------------------------------------------------------
# Optional system libraries: a test that needs one skips with a reason that names it, and the
# end of the run says which optional parts were skipped and how to enable them.

# (word in a skip reason, the optional part, how to enable it)
OPTIONAL_PARTS = (
    ("MagickWand", "MagickWand (ImageMagick; motion blur --motion-backend wand)",
     "apt-get install libmagickwand-6.q16-6"),
    ("chromium", "chromium (headless browser tests of the HTML report)", "apt-get install chromium"),
)


@pytest.fixture
def random_faces():
    """A writer of small class-folder datasets of random images: ``random_faces(root, classes,
    per_class, name="img {index}.png", seed=0, size=40, splits=("train", "test"))`` writes
    ``root/<split>/<class>/<name>`` for every split, class and index, and returns ``root``."""
    import cv2
    import numpy as np

    def write(root, classes, per_class, name="img {index}.png", seed=0, size=40, splits=("train", "test")):
        rng = np.random.default_rng(seed)
        for split in splits:
            for label in classes:
                (root / split / label).mkdir(parents=True, exist_ok=True)
                for index in range(per_class):
                    cv2.imwrite(str(root / split / label / name.format(index=index)),
                                rng.integers(0, 256, (size, size, 3), np.uint8))
        return root

    return write


@pytest.fixture
def magickwand():
    """Skips the test unless Wand and the MagickWand shared library are importable.

    A missing library raises OSError on the first import and ImportError afterwards: both skip.
    """
    try:
        import wand.image  # noqa: F401
    except (ImportError, OSError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        pytest.skip(f"MagickWand library not available ({first_line}); enable with: apt-get install "
                    "libmagickwand-6.q16-6")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """List the optional parts whose tests were skipped, with the command that enables each."""
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reasons.append(str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr))
    lines = []
    for word, part, hint in OPTIONAL_PARTS:
        count = sum(word.lower() in reason.lower() for reason in reasons)
        if count:
            lines.append(f"{part}: {count} test(s) skipped; enable with: {hint}")
    if lines:
        terminalreporter.section("optional parts skipped")
        for line in lines:
            terminalreporter.write_line(line)
