"""Tests of AugMix (augmentations.py) and the JSD training step (robust_training.py), BENCHMARK.md §11.2.

Expected values are worked out here by hand or with plain numpy/scipy written independently of the
implementation (no OpenCV in the references).
"""

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import augmentations as aug

REPO = Path(__file__).resolve().parents[1]


def colourful(height=40, width=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 5) % 256, (yy * 7) % 256, (xx * 3 + yy * 2) % 256], axis=2)
    return ((image // 2) + rng.integers(0, 120, image.shape)).clip(0, 255).astype(np.uint8)


class NoFlip:
    """A stand-in generator whose sign draws never flip (random() = 0.9 >= .5)."""

    def random(self):
        return 0.9


class Flip:
    def random(self):
        return 0.1


def bilinear_sample(image, xs, ys):
    """Independent bilinear sampler: value at float coordinates, 0 outside the frame."""
    height, width = image.shape[:2]
    image = image.astype(np.float64)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    ax, ay = xs - x0, ys - y0
    out = np.zeros(xs.shape + (image.shape[2],))
    for dy, wy in ((0, 1 - ay), (1, ay)):
        for dx, wx in ((0, 1 - ax), (1, ax)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            value = np.zeros(xs.shape + (image.shape[2],))
            value[inside] = image[yi[inside], xi[inside]]
            out += (wx * wy)[..., None] * value
    return out


def assert_close_to_bilinear(actual, image, xs, ys, margin=2):
    expected = bilinear_sample(image, xs, ys)
    # compare away from the frame border (the zero fill is blended differently at the edge)
    inner = (xs >= 1) & (xs <= image.shape[1] - 2) & (ys >= 1) & (ys <= image.shape[0] - 2)
    inner[:margin] = inner[-margin:] = False
    inner[:, :margin] = inner[:, -margin:] = False
    diff = np.abs(actual.astype(np.float64) - expected)[inner]
    assert inner.sum() > 0.4 * inner.size
    assert diff.max() <= 4.0  # OpenCV samples at 1/32 px and interpolates in fixed point
    assert diff.mean() < 0.6


# --------------------------------------------------------------------------------------------
# The operations


def test_posterize_keeps_the_top_bits():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    # fraction .3: 4 - int(1.2) = 3 bits -> multiples of 32
    np.testing.assert_array_equal(aug.posterize(image, 0.3), (image // 32) * 32)
    # fraction .05: 4 bits -> multiples of 16
    np.testing.assert_array_equal(aug.posterize(image, 0.05), (image // 16) * 16)


def test_solarize_inverts_above_the_threshold():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = aug.solarize(image, 0.3)  # threshold 256 - int(76.8) = 180
    values = np.arange(256)
    expected = np.array([v if v < 180 else 255 - v for v in values]).reshape(16, 16)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


def test_solarize_at_one_half_inverts_from_128():
    """threshold 256 - int(256·0.5) = 128 (solarize's docstring): 127 is kept, 128 -> 127, 200 -> 55."""
    image = np.array([[[127, 128, 200]]], np.uint8)
    np.testing.assert_array_equal(aug.solarize(image, 0.5), [[[127, 127, 55]]])


def test_autocontrast_stretches_each_channel():
    image = np.zeros((2, 3, 3), np.uint8)
    image[:, :, 0] = [[50, 100, 150], [60, 70, 80]]  # min 50, max 150
    image[:, :, 1] = 77  # constant: unchanged
    image[:, :, 2] = [[0, 255, 128], [1, 2, 3]]  # already full range
    out = aug.autocontrast(image)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 127, 255], [25, 51, 76]])  # int((v-50)·2.55)
    np.testing.assert_array_equal(out[:, :, 1], image[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 2], image[:, :, 2])


def test_equalize_matches_the_cumulative_histogram():
    image = colourful()
    out = aug.equalize(image)
    for c in range(3):
        channel = image[:, :, c].ravel()
        counts = np.bincount(channel, minlength=256)
        cdf = np.cumsum(counts)
        first = cdf[counts > 0][0]
        lut = (cdf - first) * 255.0 / (channel.size - first)
        expected = lut[channel].reshape(image.shape[:2])
        assert np.abs(out[:, :, c] - expected).max() <= 0.5 + 1e-9


def test_translate_x_and_y_shift_with_black_fill():
    image = colourful(30, 30)
    # fraction .3 at 30 px: int(.3·30/3) = 3 px; output (x, y) takes input (x + 3, y)
    out = aug.translate_x(image, 0.3, NoFlip())
    np.testing.assert_array_equal(out[:, :-3], image[:, 3:])
    assert not out[:, -3:].any()
    out = aug.translate_y(image, 0.3, Flip())  # sign flipped: takes input (x, y - 3)
    np.testing.assert_array_equal(out[3:], image[:-3])
    assert not out[:3].any()


def test_shear_follows_the_inverse_mapping():
    image = colourful()
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    s = 0.3 * 0.5
    out = aug.shear_x(image, 0.5, NoFlip())
    assert_close_to_bilinear(out, image, xx + s * yy, yy)
    out = aug.shear_y(image, 0.5, Flip())
    assert_close_to_bilinear(out, image, xx, yy - s * xx)


def test_rotate_about_the_centre():
    image = colourful(41, 41)
    yy, xx = np.mgrid[0:41, 0:41].astype(np.float64)
    theta = np.deg2rad(15)  # fraction .5: int(15) degrees, counter-clockwise on screen
    cx = cy = 20.0
    dx, dy = xx - cx, yy - cy
    xs = cx + np.cos(theta) * dx - np.sin(theta) * dy
    ys = cy + np.sin(theta) * dx + np.cos(theta) * dy
    out = aug.rotate(image, 0.5, NoFlip())
    assert_close_to_bilinear(out, image, xs, ys)
    np.testing.assert_array_equal(out[20, 20], image[20, 20])  # the centre stays


def test_the_operations_are_the_nine_of_the_definition():
    assert set(aug.AUGMIX_OPS) == {"autocontrast", "equalize", "posterize", "rotate", "solarize",
                                   "shear_x", "shear_y", "translate_x", "translate_y"}
    # nothing that the benchmark corrupts with (BENCHMARK.md §2.3, §2.9, §11.1)
    import corruptions

    assert not set(aug.AUGMIX_OPS) & set(getattr(corruptions, "CORRUPTIONS", {}))


# --------------------------------------------------------------------------------------------
# Mixing


def test_mix_formula():
    image = np.full((2, 2, 3), 100, np.uint8)
    chains = [np.zeros_like(image), np.full_like(image, 200)]
    # 0.5·100 + 0.5·(0.25·0 + 0.75·200) = 50 + 75 = 125
    np.testing.assert_array_equal(aug.mix(image, chains, [0.25, 0.75], 0.5), np.full_like(image, 125))
    # 0.9·100 + 0.1·(0.5·0 + 0.5·200) = 100; rounding 0.3·100 + 0.7·(1/3·0 + 2/3·200)=123.33 -> 123
    np.testing.assert_array_equal(aug.mix(image, chains, [0.5, 0.5], 0.1), image)
    np.testing.assert_array_equal(aug.mix(image, chains, [1 / 3, 2 / 3], 0.7), np.full_like(image, 123))
    # rounded, not truncated (docs/AUGMENTATIONS.md: "then rounded to uint8"): .75·101 + .25·200 = 125.75 -> 126
    base = np.full((2, 2, 3), 101, np.uint8)
    np.testing.assert_array_equal(aug.mix(base, [np.full_like(base, 200)], [1.0], 0.25), np.full_like(base, 126))


def _spy_ops(monkeypatch):
    calls = []

    def wrap(name, op):
        def spy(image, fraction, rng):
            calls.append((name, fraction))
            return op(image, fraction, rng)
        return spy

    monkeypatch.setattr(aug, "AUGMIX_OPS", {name: wrap(name, op) for name, op in aug.AUGMIX_OPS.items()})
    return calls


def test_chain_depth_and_levels(monkeypatch):
    calls = _spy_ops(monkeypatch)
    image = colourful()
    for seed in range(20):
        aug.augmix(image, np.random.default_rng(seed), width=3, depth=2, severity=3)
    assert len(calls) == 20 * 3 * 2
    fractions = np.array([f for _, f in calls])
    assert fractions.min() >= 0.01 and fractions.max() <= 0.3  # level U(0.1, 3) on the 0..10 scale
    assert len({name for name, _ in calls}) == 9
    per_chain = []
    for seed in range(60):
        calls.clear()
        aug.augmix_chain(image, np.random.default_rng(seed), depth=-1)
        per_chain.append(len(calls))
    assert set(per_chain) == {1, 2, 3}


def test_augmix_blends_with_the_image():
    image = colourful()
    rng = np.random.default_rng(3)
    out = aug.augmix(image, rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 1  # changed ...
    # ... but every output pixel lies between the image and the chain mixture: with width 1 and a
    # chain made of posterize only, the result is between posterized and original values
    out = aug.mix(image, [aug.posterize(image, 0.3)], [1.0], 0.4)
    low = (image // 32) * 32
    assert np.all(out >= low) and np.all(out <= image)


def test_parameters_are_checked():
    for bad in (dict(width=0), dict(depth=0), dict(depth=4), dict(severity=0), dict(severity=11)):
        params = dict(width=3, depth=-1, severity=3)
        params.update(bad)
        with pytest.raises(ValueError, match="AugMix"):
            aug.check_augmix_params(**params)
    with pytest.raises(ValueError, match="AugMix depth 7"):
        aug.make_train_transform("augmix", augmix_depth=7)


# --------------------------------------------------------------------------------------------
# Views and determinism


VIEWS_CODE = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {repo!r})
import augmentations as aug
from tests.test_augmix import colourful
views = aug.augmix_views(colourful(100, 100), 1234)
print(hashlib.sha256(b"".join(v.tobytes() for v in views)).hexdigest())
"""


def views_digest(views):
    return hashlib.sha256(b"".join(v.tobytes() for v in views)).hexdigest()


def test_views_are_reproducible_in_another_process():
    image = colourful(100, 100)
    views = aug.augmix_views(image, 1234)
    result = subprocess.run([sys.executable, "-c", VIEWS_CODE.format(repo=str(REPO))], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == views_digest(views)
    # the same seed again, and as a Generator, gives the same views; another seed does not
    assert views_digest(aug.augmix_views(image, np.random.default_rng(np.random.PCG64(1234)))) == views_digest(views)
    assert views_digest(aug.augmix_views(image, 1235)) != views_digest(views)


def test_views_share_the_clean_base():
    image = colourful(100, 100)
    flipped = image[:, ::-1]
    seen = set()
    for seed in range(12):
        clean, aug1, aug2 = aug.augmix_views(image, seed)
        assert clean.shape == aug1.shape == aug2.shape == image.shape
        if np.array_equal(clean, image):
            seen.add("kept")
        else:
            np.testing.assert_array_equal(clean, flipped)
            seen.add("flipped")
        assert not np.array_equal(aug1, aug2)
    assert seen == {"kept", "flipped"}
    clean, _, _ = aug.augmix_views(image, 0, crop="legacy99")
    assert clean.shape == (99, 99, 3)


def test_train_transform_augmix_is_picklable_and_seeded():
    transform = aug.make_train_transform("augmix", augmix_depth=1)
    clone = pickle.loads(pickle.dumps(transform))
    image = colourful(100, 100)
    a = transform(image, np.random.default_rng(5))
    b = clone(image, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and not np.array_equal(a, image)
    views = pickle.loads(pickle.dumps(aug.AugMixViews(width=2)))
    assert views.width == 2


# --------------------------------------------------------------------------------------------
# The JSD loss and the training step (robust_training.py)

PROBS = np.array([
    [[0.7, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0]],
    [[0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0]],
    [[0.2, 0.2, 0.6, 0.0, 0.0, 0.0, 0.0], [0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]],
])  # (view, row, class)


def jsd_reference(p1, p2, p3):
    """Generalised Jensen–Shannon divergence as an entropy difference: H(M) - mean_i H(p_i)."""
    from scipy.stats import entropy

    rows = [entropy((a + b + c) / 3) - (entropy(a) + entropy(b) + entropy(c)) / 3 for a, b, c in zip(p1, p2, p3)]
    return float(np.mean(rows))


def test_jsd_loss_matches_the_entropy_form():
    import robust_training as rt

    value = float(rt.jsd_loss(*[p.astype(np.float32) for p in PROBS]))
    assert value == pytest.approx(jsd_reference(*PROBS), rel=1e-5)
    # by hand for the first row, natural logs: M = (.4667, .2333, .3, 0, ...)
    m = np.array([1.4, 0.7, 0.9]) / 3
    p = PROBS[:, 0, :3]
    by_hand = np.mean([np.sum(q[q > 0] * np.log(q[q > 0] / m[q > 0])) for q in p])
    assert float(rt.jsd_loss(*[q[None].astype(np.float32) for q in PROBS[:, 0]])) == pytest.approx(by_hand, rel=1e-5)
    same = PROBS[0].astype(np.float32)
    assert float(rt.jsd_loss(same, same, same)) == pytest.approx(0.0, abs=1e-7)


def tiny_model(seed=0, size=8):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def tiny_batch(n=16, size=8, seed=0):
    rng = np.random.default_rng(seed)
    views = rng.uniform(0, 255, (n, 3, size, size, 3)).astype(np.float32)
    labels = np.eye(7, dtype=np.float32)[rng.integers(0, 7, n)]
    return views, labels


def compiled(model, lr=0.05, momentum=0.9):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    return model


def test_train_step_loss_is_ce_plus_12_jsd_and_decreases():
    import robust_training as rt

    views, labels = tiny_batch()
    model = compiled(tiny_model())
    p = [model.predict(views[:, i], verbose=0).astype(np.float64) for i in range(3)]
    ce = float(np.mean(-np.sum(labels * np.log(p[0]), axis=1)))
    expected = ce + 12 * jsd_reference(*p)
    trainer = rt.wrap_for_jsd(model)
    history = trainer.fit(views, labels, batch_size=16, epochs=6, verbose=0, shuffle=False).history
    assert history["loss"][0] == pytest.approx(expected, rel=1e-4)  # loss of the first step, before the update
    assert history["loss"][0] == pytest.approx(history["ce"][0] + 12 * history["jsd"][0], rel=1e-5)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    logs = trainer.evaluate(views[:, 0], labels, verbose=0, return_dict=True)
    assert "jsd" not in logs and "ce" not in logs


def test_checkpoint_is_the_functional_model_with_the_optimizer(tmp_path):
    import h5py
    import keras

    import models  # noqa: F401  (registers the project's layers, as the evaluations do)
    import robust_training as rt

    views, labels = tiny_batch()
    model = compiled(tiny_model())
    trainer = rt.wrap_for_jsd(model)
    trainer.fit(views, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "checkpoint.01.hdf5"
    trainer.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert type(loaded).__name__ == "Functional"
    np.testing.assert_allclose(loaded.predict(views[:, 0], verbose=0), model.predict(views[:, 0], verbose=0),
                               atol=1e-6)
    # the momentum the wrapper trained is in the file (resume restores it from there)
    with h5py.File(path, "r") as handle:
        group = handle["optimizer_weights"]
        saved = {n.decode() if isinstance(n, bytes) else n: np.asarray(group[n]) for n in group.attrs["weight_names"]}
    momenta = [v for v in model.optimizer.variables if "momentum" in v.path]
    assert momenta and any(np.abs(v.numpy()).max() > 0 for v in momenta)
    for variable in momenta:
        matches = [value for name, value in saved.items() if name.endswith(variable.path)]
        assert len(matches) == 1
        np.testing.assert_array_equal(matches[0], variable.numpy())


def test_mixed_precision_step():
    import keras

    import robust_training as rt

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = compiled(tiny_model())
        trainer = rt.wrap_for_jsd(model)
        assert type(trainer.optimizer).__name__ == "LossScaleOptimizer"
        assert trainer.optimizer is model.optimizer
        views, labels = tiny_batch()
        history = trainer.fit(views, labels, batch_size=16, epochs=4, verbose=0, shuffle=False).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


MIRRORED_CODE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, {repo!r})
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import robust_training as rt
from tests.test_augmix import compiled, tiny_batch, tiny_model
views, labels = tiny_batch(16)
weights = []
for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
    scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    with scope:
        model = compiled(tiny_model(seed=1))
        trainer = rt.wrap_for_jsd(model)
    data = tf.data.Dataset.from_tensor_slices((views, labels)).batch(8)
    history = trainer.fit(data, epochs=2, verbose=0)
    weights.append(np.concatenate([w.ravel() for w in model.get_weights()]))
    print("loss", history.history["loss"][-1])
print("maxdiff", float(np.abs(weights[0] - weights[1]).max()), float(np.abs(weights[0]).max()))
"""


def test_mirrored_on_two_cpu_devices_matches_one_device():
    result = subprocess.run([sys.executable, "-c", MIRRORED_CODE.format(repo=str(REPO))], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("loss")]
    maxdiff, scale = [float(v) for v in result.stdout.split("maxdiff")[1].split()]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert maxdiff < 1e-5 * max(1.0, scale)  # same gradients: the per-replica loss is scaled by 1/2


def test_views_dataset_yields_three_seeded_views(tmp_path):
    import cv2

    import robust_training as rt

    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), colourful(20, 20, seed=i)[:, :, ::-1])
        paths.append(path)
    labels = np.eye(7, dtype=np.float32)[[0, 1, 2, 3, 4]]
    views = aug.AugMixViews()

    def run(parallel):
        ds = rt.make_views_dataset(paths, labels, image_size=(16, 16), views=views, batch_size=2, seed=7,
                                   num_parallel_calls=parallel)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    one, many = run(1), run(4)
    assert [x.shape for x, _ in one] == [(2, 3, 16, 16, 3), (2, 3, 16, 16, 3), (1, 3, 16, 16, 3)]
    for (xa, ya), (xb, yb) in zip(one, many):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # each element: the clean view is the resized (maybe flipped) image; the AugMix views differ from it
    x = np.concatenate([x for x, _ in one])
    y = np.concatenate([y for _, y in one])
    for row, label in zip(x, y):
        source = colourful(20, 20, seed=int(np.argmax(label)))
        resized = cv2.resize(source, (16, 16), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        assert np.array_equal(row[0], resized) or np.array_equal(row[0], resized[:, ::-1])
        assert not np.array_equal(row[1], row[0]) and not np.array_equal(row[1], row[2])


# --------------------------------------------------------------------------------------------
# train_fer.py --augmentation augmix [--jsd] end to end (small CNN at 64 px on the synthetic sample)

TINY_AUGMIX = ["--net", "smallcnn", "--input-size", "64", "--batch", "8", "--momentum", "--lr", "0.02:0.5:1",
               "--augmentation", "augmix"]


def test_train_fer_augmix_jsd_saves_loadable_checkpoints_and_resumes(sample_tree, tmp_path):
    import csv

    import keras

    import models  # noqa: F401
    import train_fer
    import training

    run_dir = tmp_path / "jsd"
    base = ["--rafdb", str(sample_tree), *TINY_AUGMIX, "--jsd", "--augmix-depth", "2", "--dir", str(run_dir)]
    assert train_fer.main(base + ["--epochs", "1"]) == 0
    with open(run_dir / training.LOG_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["ce"]) + 12 * float(rows[0]["jsd"]), rel=1e-3)
    assert float(rows[0]["jsd"]) > 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["jsd"] is True and run["augmix"] == {"width": 3, "depth": 2, "severity": 3.0}
    checkpoint = run_dir / training.LAST_CHECKPOINT
    plain = keras.models.load_model(checkpoint, compile=False)  # the functional model, no custom class
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    probabilities = plain.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    first = training.load_checkpoint(checkpoint)
    steps = int(first.optimizer.iterations.numpy())
    assert steps > 0 and any(np.abs(np.asarray(v)).sum() > 0 for v in first.optimizer.variables
                             if "momentum" in v.path)
    # resume: the settings (augmix, --jsd) come from run.json; the optimizer continues
    assert train_fer.main(["--resume", "--dir", str(run_dir), "--epochs", "2"]) == 0
    resumed = training.load_checkpoint(checkpoint)
    assert int(resumed.optimizer.iterations.numpy()) == 2 * steps
    with open(run_dir / training.LOG_FILE, newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1]


def test_jsd_needs_augmix(sample_tree, tmp_path):
    import train_fer
    from cli_common import UserError

    base = ["--rafdb", str(sample_tree), "--net", "smallcnn", "--input-size", "64", "--epochs", "1",
            "--dir", str(tmp_path / "r")]
    with pytest.raises(UserError, match="--jsd needs --augmentation augmix"):
        train_fer.main(base + ["--jsd"])
    # the one flag at fault is named (all three were)
    for flag, value, words in (("--augmix-depth", "5", "AugMix depth 5"), ("--augmix-width", "0", "AugMix width 0"),
                               ("--augmix-severity", "11", r"AugMix severity 11\.0")):
        with pytest.raises(UserError, match=rf"^{flag}: {words}: expected"):
            train_fer.main(base + ["--augmentation", "augmix", flag, value])
    # Settings of one augmentation given with another were accepted and had no effect.
    with pytest.raises(UserError, match=r"^--augmix-width/--augmix-severity with --augmentation default: AugMix's "
                                        r"settings apply to --augmentation augmix only"):
        train_fer.main(base + ["--augmix-width", "2", "--augmix-sev", "3"])  # an abbreviation counts too
    with pytest.raises(UserError, match=r"^--honour-policy-prob with --augmentation randaugment: it applies to "
                                        r"the AutoAugment policies"):
        train_fer.main(base + ["--augmentation", "randaugment", "--honour-policy-prob"])
    with pytest.raises(UserError, match=r"^--center-loss-weight/--center-loss-alpha without --center-loss: the "
                                        r"centre term's settings apply to a --center-loss run only"):
        train_fer.main(base + ["--center-loss-weight", "0.1", "--center-loss-alpha", "0.5"])
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_augmix_draws_the_dirichlet_weights_then_the_beta_skip(monkeypatch):
    """docs/AUGMENTATIONS.md: chains mixed with Dirichlet(1, 1, 1) weights, then m ~ Beta(1, 1), in that order."""
    seen = {}
    monkeypatch.setattr(aug, "mix", lambda image, chains, weights, skip: seen.update(w=weights, s=skip) or image)
    aug.augmix(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(7), width=3, depth=1)
    ref = np.random.default_rng(7)
    np.testing.assert_allclose(seen["w"], ref.dirichlet(np.ones(3)))
    assert seen["s"] == pytest.approx(ref.beta(1.0, 1.0))


def test_jsd_of_a_small_mixture_probability_is_not_floored_at_1e_3():
    """JS divergence by hand (entropy form) with a mixture entry of 1e-4, above the 1e-7 floor of the AugMix paper."""
    import robust_training

    a = np.array([[1.0, 0.0]], np.float32)
    c = np.array([1 - 3e-4, 3e-4])
    m = (2 * np.array([1.0, 0.0]) + c) / 3  # m[1] = 1e-4
    expected = (2 * (0 - np.log(m[0])) + (c * (np.log(c) - np.log(m))).sum()) / 3
    got = float(robust_training.jsd_loss(a, a, c[None].astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-2)
