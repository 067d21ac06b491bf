"""Shared fixtures. Environment variables that TensorFlow reads at import are set here, first."""

import os

# BENCHMARK.md §4.9: training a 1x1 stride-2 Conv2D over an 8-channel map crashes oneDNN on some CPUs.
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
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
