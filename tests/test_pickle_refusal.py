"""A .pickle/.pkl given to any script is refused before it is opened (docs/BENCHMARK.md §9.9).

Each file here would, if unpickled, create a marker file: the marker must never appear, and each
command must exit 2 with one line naming the file and .skops, without a traceback.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


class _Trap:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture
def trap(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Trap(marker)))
    pickle.loads(path.read_bytes())  # control: loading it really would create the marker
    assert marker.is_dir()
    marker.rmdir()
    return path, marker


@pytest.mark.parametrize("argv", [
    ["eval_perturbed_rafdb.py", "{pkl}", "--rafdb", "{tmp}/no-tree", "--perturbed", "{tmp}/no-p"],
    ["train_fer.py", "--rafdb", "{tmp}/no-tree", "--pretraining", "{pkl}", "--dir", "{tmp}/run"],
    ["report.py", "{pkl}", "--out", "{tmp}/report"],
    ["eval_perturbed_rafdb2.py", "{tmp}/p.txt", "--baseline", "{pkl}"],
])
def test_scripts_refuse_a_pickle_unopened(trap, tmp_path, argv):
    path, marker = trap
    (tmp_path / "p.txt").write_text("m.keras,rafdb.test.p_rotate\n0,0,1\n")
    argv = [part.format(pkl=path, tmp=tmp_path) for part in argv]
    result = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], capture_output=True,
                            text=True, cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and ".skops" in result.stderr and "unpickling runs code" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()
