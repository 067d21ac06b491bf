"""--resume after a run stopped at awkward moments: between the end-of-epoch writes, without run.json,
by SIGTERM; leftovers of a killed run (temporary checkpoints)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import train_fer
import training
from cli_common import UserError

TINY = ["--net", "smallcnn", "--input-size", "64", "--lpf", "0", "--batch", "8", "--momentum",
        "--augmentation", "no", "--val-split", "test", "--lr", "0.02:0.5:1"]


def iterations(path):
    return int(training.load_checkpoint(path).optimizer.iterations.numpy())


def test_a_kill_between_checkpoint_last_and_train_state_resumes_after_the_checkpoints_epoch(
        sample_tree, tmp_path, monkeypatch):
    """Stopped after checkpoint_last.hdf5 of epoch 2 was written but before train_state.json (still
    epoch 1): --resume trains epoch 3 only. Before, it trained epoch 2 again (4 epochs of steps)."""
    from conftest import SAMPLE_TRAIN

    run_dir = tmp_path / "run"
    real = training.atomic_write_text

    def write(path, text, *a, **k):
        if path.name == training.STATE_FILE and json.loads(text)["completed_epochs"] == 2:
            raise KeyboardInterrupt  # the kill, just before train_state.json says 2
        return real(path, text, *a, **k)

    monkeypatch.setattr(training, "atomic_write_text", write)
    with pytest.raises(KeyboardInterrupt):
        train_fer.main(["--rafdb", str(sample_tree), *TINY, "--center-loss", "--epochs", "3", "--dir", str(run_dir)])
    monkeypatch.setattr(training, "atomic_write_text", real)
    assert json.loads((run_dir / training.STATE_FILE).read_text())["completed_epochs"] == 1
    steps = math.ceil(SAMPLE_TRAIN / 8)  # every training image (--val-split test), batch 8
    assert iterations(run_dir / training.LAST_CHECKPOINT) == 2 * steps
    state, centers = training.checkpoint_state(run_dir / training.LAST_CHECKPOINT)
    assert state["completed_epochs"] == 2
    np.testing.assert_array_equal(centers, np.load(run_dir / "center_loss_centers.npy"))

    assert train_fer.main(["--resume", "--dir", str(run_dir)]) == 0
    assert iterations(run_dir / training.LAST_CHECKPOINT) == 3 * steps
    assert json.loads((run_dir / "run.json").read_text())["resumed"][0]["from_epoch"] == 2
    rows = (run_dir / training.LOG_FILE).read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1, 2]
    assert json.loads((run_dir / training.STATE_FILE).read_text())["completed_epochs"] == 3


def test_a_numbered_checkpoint_of_an_unfinished_epoch_is_removed_on_resume(sample_tree, tmp_path):
    run_dir = tmp_path / "run"
    assert train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(run_dir)]) == 0
    (run_dir / "checkpoint.02.hdf5").write_bytes((run_dir / "checkpoint.01.hdf5").read_bytes())
    assert training.resume_point(run_dir)[1] == 1
    assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "1"]) == 0
    assert not (run_dir / "checkpoint.02.hdf5").exists()


def test_resume_without_run_json_is_refused_naming_the_file(sample_tree, tmp_path, capsys):
    """Before: a warning, then the defaults (senet50 at 224 px against a 64 px smallcnn checkpoint: a
    traceback; or another lr schedule than the checkpoint's, recorded in a new run.json)."""
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    assert train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(run_dir)]) == 0
    (run_dir / "run.json").unlink()
    with pytest.raises(UserError, match=r"run\.json: missing; --resume takes the run's settings"):
        train_fer.main(["--resume", "--dir", str(run_dir), "--rafdb", str(sample_tree), "--epochs", "2"])
    result = subprocess.run([sys.executable, str(Path(train_fer.__file__)), "--resume", "--dir", str(run_dir),
                             "--rafdb", str(sample_tree), *TINY, "--epochs", "2"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {run_dir / 'run.json'}: missing")
    assert not (run_dir / "run.json").exists()  # nothing written
    assert json.loads((run_dir / training.STATE_FILE).read_text())["completed_epochs"] == 1


def test_sigterm_records_terminated_and_stale_temporaries_are_removed(sample_tree, tmp_path):
    """A killed run's .checkpoint_last.<pid>.tmp.hdf5 is removed when a run starts in the folder (it
    stayed for ever); SIGTERM during the epochs exits 143 with run.json "status": "terminated" (it
    said "training")."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [run_dir / f".checkpoint_last.{int(dead.stdout)}.tmp.hdf5", run_dir / ".checkpoint.03.99999999.tmp.hdf5"]
    for path in stale:
        path.write_bytes(b"half a model")
    keep = run_dir / f".checkpoint_last.{os.getpid()}.tmp.hdf5"  # a live process's: not touched
    keep.write_bytes(b"being written")
    process = subprocess.Popen([sys.executable, str(Path(train_fer.__file__)), "--rafdb", str(sample_tree), *TINY,
                                "--epochs", "500", "--dir", str(run_dir)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / training.STATE_FILE).is_file():  # in the epochs
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "terminated"
    assert not any(path.exists() for path in stale) and keep.exists()
    # the process exits past the interpreter's teardown: TensorBoard's files still hold the finished
    # epochs, flushed at each epoch's end (SIGTERM may land between the CSV log's row and TensorBoard's)
    epochs = len((run_dir / training.LOG_FILE).read_text().splitlines()) - 1  # a header line
    assert epochs >= 1 and len(epoch_losses(run_dir / "tensorboard" / "train")) in (epochs - 1, epochs)


def epoch_losses(folder):
    import tensorflow as tf

    return [value for event_file in sorted(folder.glob("events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(str(event_file))
            for value in event.summary.value if value.tag == "epoch_loss"]


def test_a_signal_exit_skips_the_interpreters_teardown(tmp_path):
    """SignalExit (training's SIGTERM) ends a script with TensorFlow loaded at once, with its code: the
    teardown, where the interrupted pipeline's threads once crashed a run with SIGSEGV, never runs.
    Here a thread that never ends stands for them: the teardown would wait for it for ever."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, sys, threading, types
        sys.path.insert(0, {str(Path(training.__file__).parent)!r})
        import cli_common
        sys.modules.setdefault("tensorflow", types.ModuleType("tensorflow"))  # as in a training run
        threading.Thread(target=threading.Event().wait).start()  # not a daemon: the teardown joins it
        atexit.register(print, "teardown ran")

        def main():
            print("saved", flush=True)
            raise cli_common.SignalExit(143)

        if __name__ == "__main__":
            cli_common.run_main(main)
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (143, "saved\n"), done.stderr


def test_a_killed_workers_scratch_folder_is_removed_by_the_next_worker(tmp_path):
    """A non-chief multiworker process writes its checkpoints to a scratch folder that SIGTERM/SIGKILL
    left behind (a model per epoch, for ever). The next worker on the same host removes those of
    processes that are gone; a live worker's, another host's and unrelated folders stay."""
    import os
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    host = training._host_tag()
    stale = tmp_path / f"train_fer_worker_{host}_{dead}_abc123"
    (stale / "nested").mkdir(parents=True)
    (stale / "nested" / "checkpoint.01.hdf5").write_bytes(b"a worker's model")
    live = tmp_path / f"train_fer_worker_{host}_{os.getpid()}_def456"
    other_host = tmp_path / f"train_fer_worker_{'0' * 8 if host != '0' * 8 else '1' * 8}_{dead}_ghi789"
    unrelated = tmp_path / "train_fer_worker_notes"
    for folder in (live, other_host, unrelated):
        folder.mkdir()
    assert training.remove_stale_worker_scratch(tmp_path) == [stale.name]
    assert not stale.exists() and live.is_dir() and other_host.is_dir() and unrelated.is_dir()
    scratch = training.worker_scratch()  # the folder a worker now uses carries its host tag and pid
    try:
        assert training.WORKER_SCRATCH_RE.match(Path(scratch.name).name).groups() == (host, str(os.getpid()))
    finally:
        scratch.cleanup()


@pytest.mark.parametrize("other, shown", [(["--input-size", "72"], "input shape 72x72x3, run.json's 64x64x3"),
                                          (["--lpf", "2"], "--lpf 0")])
def test_a_checkpoint_of_another_network_is_refused_before_anything_is_removed(sample_tree, tmp_path, other, shown):
    """checkpoint_last.hdf5 copied in from another run (another input size, or BlurPool): --resume
    deleted the run's later checkpoints as unfinished and then crashed (another input size) or
    trained the other network under this run.json (another --lpf). Now refused, nothing removed."""
    run_dir, other_dir = tmp_path / "run", tmp_path / "other"
    assert train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "2", "--dir", str(run_dir)]) == 0
    changed = [*TINY]
    for flag, value in zip(other[::2], other[1::2]):
        changed[changed.index(flag) + 1] = value
    assert train_fer.main(["--rafdb", str(sample_tree), *changed, "--epochs", "1", "--dir", str(other_dir)]) == 0
    (run_dir / training.LAST_CHECKPOINT).write_bytes((other_dir / training.LAST_CHECKPOINT).read_bytes())
    (run_dir / training.STATE_FILE).unlink()  # the copied checkpoint's own state says epoch 1
    before = sorted(path.name for path in run_dir.iterdir())
    with pytest.raises(UserError, match="not a checkpoint of this run's network") as error:
        train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "3"])
    assert shown in str(error.value)
    assert sorted(path.name for path in run_dir.iterdir()) == before


def test_a_diverged_run_stops_as_failed_with_no_checkpoint(sample_tree, tmp_path):
    """--lr 1e9: the loss is NaN after the first steps. The run used to save 'improved' checkpoints of a
    network whose outputs are NaN and report its test accuracy (every image the first class) as a
    result; now it stops at the end of the epoch, naming --lr, with status failed."""
    run_dir = tmp_path / "run"
    options = [*TINY]
    options[options.index("--lr") + 1] = "1e9"
    with pytest.raises(UserError, match=r"training loss of epoch 1 is nan: the run diverged.*lower --lr"):
        train_fer.main(["--rafdb", str(sample_tree), *options, "--epochs", "2", "--dir", str(run_dir)])
    assert not run_dir.exists()  # no checkpoint was written: no half-begun run folder is left
    # Diverging in epoch 2 (the rate multiplied by 1e12 after epoch 1): epoch 1's checkpoint stays.
    options[options.index("--lr") + 1] = "0.02:1e12:1"
    with pytest.raises(UserError, match=r"training loss of epoch 2 is nan: the run diverged"):
        train_fer.main(["--rafdb", str(sample_tree), *options, "--epochs", "3", "--dir", str(run_dir)])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert sorted(path.name for path in run_dir.glob("checkpoint*.hdf5")) == ["checkpoint.01.hdf5",
                                                                             "checkpoint_last.hdf5"]
    assert training.checkpoint_state(run_dir / training.LAST_CHECKPOINT)[0]["completed_epochs"] == 1
    assert not (run_dir / "results.json").exists()


def test_resume_with_another_dataset_under_either_spelling_names_the_conflict(sample_tree, tmp_path):
    """The run was started with --rafdb: --resume --rafdb OTHER said 'conflicts ... run.json has
    PosixPath(...)' and --data OTHER blamed a --data the user never gave."""
    run_dir, other = tmp_path / "run", tmp_path / "other"
    other.mkdir()
    assert train_fer.main(["--rafdb", str(sample_tree), *TINY, "--epochs", "1", "--dir", str(run_dir)]) == 0
    for flag in ("--rafdb", "--data"):
        with pytest.raises(UserError) as error:
            train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2", flag, str(other)])
        message = str(error.value)
        assert message.startswith(f"{flag} {other}: conflicts with the run being resumed")
        assert str(sample_tree) in message and "PosixPath" not in message and "disagree" not in message


def test_collective_timeout_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as error:
        train_fer.main(["--collective-timeout", "-5", "--rafdb", "x"])
    assert error.value.code == 2 and "expected a number >= 0" in capsys.readouterr().err


def tiny_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def tiny_fit(model, callbacks, steps=4):
    model.fit(np.zeros((steps, 3)), np.ones((steps, 2)), batch_size=1, epochs=1, verbose=0, callbacks=callbacks)


def test_ctrl_c_in_a_step_stops_the_fit_before_the_next_step():
    """Ctrl-C during a training step (here: just before step 0 runs) is raised before step 1, not at
    once, where it could land in TensorFlow's tracing of the step (a SystemError traceback, exit 1)."""
    import os
    import signal

    import keras

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        with training.signals_at_step_boundaries() as pending:
            # the check before each step comes first: the signal arrives after step 0's check
            tiny_fit(model, [training.pending_signal_callback(pending), CtrlC()])
    assert int(model.optimizer.iterations.numpy()) == 1  # step 0 ran to its end, step 1 never began
    assert signal.getsignal(signal.SIGINT) is handler


def test_sigterm_at_an_epochs_end_stops_after_its_checkpoint():
    """SIGTERM while the epoch's end is being written: the callbacks after it (the checkpoint) still run,
    then Terminated (exit 143) is raised; a second SIGTERM then has its default action (kills)."""
    import os
    import signal

    import keras

    ran = []

    class Term(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            os.kill(os.getpid(), signal.SIGTERM)
            ran.append("signal sent")

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ran.append("checkpoint")

    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(training.Terminated) as stop:
            with training.signals_at_step_boundaries() as pending:
                tiny_fit(tiny_model(), [Term(), Checkpoint(), training.pending_signal_callback(pending)])
        assert stop.value.code == 143 and ran == ["signal sent", "checkpoint"]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, handler)
