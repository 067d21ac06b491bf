"""AugMix's Jensen–Shannon consistency training (EXTEND; docs/BENCHMARK.md §11.2).

``--augmentation augmix --jsd`` trains on three views of every image, (clean, AugMix 1, AugMix 2)
from :class:`augmentations.AugMixViews`, with

    loss = CE(label, p_clean) + 12 · JSD(p_clean, p_aug1, p_aug2) (+ any L2 regularisation),

    JSD = (KL(p_clean ‖ M) + KL(p_aug1 ‖ M) + KL(p_aug2 ‖ M)) / 3,  M = (p_clean + p_aug1 + p_aug2) / 3,

averaged over the batch; M is clipped to [1e-7, 1] before its logarithm, as in the AugMix paper.
The three views go through the network as one batch of 3B images (BatchNorm sees all of them).

Pieces:

- :func:`jsd_loss` — the consistency term on probability tensors (keras.ops).
- :class:`JSDModel` — a ``keras.Model`` around the project's functional model whose ``train_step``
  computes the loss above; validation, prediction and metrics see the clean model. ``save`` writes
  the *inner* functional model (with the shared optimizer), so a checkpoint loads with plain
  ``keras.models.load_model(path, compile=False)`` after ``import models``, and a resumed run
  restores the optimizer state from it. Works with mixed precision (loss scaling through the
  optimizer) and ``tf.distribute`` (per-replica loss scaled by 1/replicas, like Keras's own step).
- :func:`wrap_for_jsd` — wrap a compiled model; :func:`make_views_dataset` — the tf.data pipeline
  that yields ``(views[B, 3, H, W, C], labels)`` with the same per-element seeding as
  ``input_pipeline.make_dataset`` (a seed per element and epoch, independent of worker count).

Example::

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    trainer = robust_training.wrap_for_jsd(model)
    views = augmentations.AugMixViews()
    train_ds = robust_training.make_views_dataset(paths, labels, image_size=(100, 100), views=views)
    trainer.fit(train_ds, validation_data=val_ds)   # val_ds: ordinary (images, labels) batches
    trainer.save("checkpoint.01.hdf5")               # the functional model + optimizer
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

JSD_WEIGHT = 12.0
MIXTURE_FLOOR = 1e-7  # M is clipped to [1e-7, 1] before the logarithm (AugMix paper)


def _kl_to_mixture(p, log_m):
    """Σ_k p_k (log p_k - log M_k) per row, with 0·log 0 = 0."""
    safe = ops.where(p > 0, p, ops.ones_like(p))
    return ops.sum(ops.where(p > 0, p * (ops.log(safe) - log_m), ops.zeros_like(p)), axis=-1)


def jsd_loss(p_clean, p_aug1, p_aug2):
    """Jensen–Shannon divergence of three probability tensors (..., classes), averaged over rows.

    mean over rows of (KL(p_clean‖M) + KL(p_aug1‖M) + KL(p_aug2‖M)) / 3 with M their mean,
    clipped to [1e-7, 1] before the logarithm. Computed in float32.
    """
    p_clean, p_aug1, p_aug2 = (ops.cast(p, "float32") for p in (p_clean, p_aug1, p_aug2))
    mixture = ops.clip((p_clean + p_aug1 + p_aug2) / 3.0, MIXTURE_FLOOR, 1.0)
    log_m = ops.log(mixture)
    total = _kl_to_mixture(p_clean, log_m) + _kl_to_mixture(p_aug1, log_m) + _kl_to_mixture(p_aug2, log_m)
    return ops.mean(total / 3.0)


class JSDModel(keras.Model):
    """Train ``inner`` (a functional classifier with softmax output) with CE + weight·JSD.

    Training batches are ``(views, labels)`` with views of shape (B, 3, H, W, C): clean, AugMix 1,
    AugMix 2. Calling the model (validation, prediction) runs ``inner`` on ordinary (B, H, W, C)
    images; a 5-D input is reduced to its clean view. Extra logged metrics: ``ce`` and ``jsd``.
    """

    def __init__(self, inner: keras.Model, jsd_weight: float = JSD_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.jsd_weight = float(jsd_weight)
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.jsd_tracker = keras.metrics.Mean(name="jsd")

    def call(self, inputs, training=None):
        if len(inputs.shape) == 5:
            inputs = inputs[:, 0]
        return self.inner(inputs, training=training)

    def train_step(self, data):
        views, labels = data[0], data[1]
        shape = tf.shape(views)
        batch = shape[0]
        # (B, 3, H, W, C) -> (3B, H, W, C) ordered clean..., aug1..., aug2...
        stacked = tf.reshape(tf.transpose(views, [1, 0, 2, 3, 4]),
                             tf.concat([[3 * batch], shape[2:]], axis=0))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            probabilities = ops.cast(self.inner(stacked, training=True), "float32")
            p_clean, p_aug1, p_aug2 = ops.split(probabilities, 3, axis=0)
            ce = ops.mean(keras.losses.categorical_crossentropy(ops.cast(labels, "float32"), p_clean))
            jsd = jsd_loss(p_clean, p_aug1, p_aug2)
            loss = ce + self.jsd_weight * jsd
            if self.losses:
                loss = loss + ops.cast(ops.sum(self.losses), "float32")
            # gradients are summed over replicas: scale the per-replica mean like Keras's own step
            scaled = loss / ops.cast(replicas, "float32") if replicas > 1 else loss
            scaled = self.optimizer.scale_loss(scaled)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._loss_tracker.update_state(loss, sample_weight=batch)
        self.ce_tracker.update_state(ce, sample_weight=batch)
        self.jsd_tracker.update_state(jsd, sample_weight=batch)
        return self.compute_metrics(views, labels, p_clean)

    def test_step(self, data):
        logs = super().test_step(data)
        return {name: value for name, value in logs.items() if name not in ("ce", "jsd")}  # training only

    def save(self, filepath, *args, **kwargs):
        """Save the inner functional model (and the shared optimizer), not this wrapper."""
        return self.inner.save(filepath, *args, **kwargs)

    def save_weights(self, filepath, *args, **kwargs):
        return self.inner.save_weights(filepath, *args, **kwargs)


def wrap_for_jsd(model: keras.Model, jsd_weight: float = JSD_WEIGHT) -> JSDModel:
    """A :class:`JSDModel` around the compiled ``model``, compiled with the *same* optimizer object
    (so ``model.save`` stores the optimizer state the wrapper trains) and the same loss/metrics.

    Create it inside the distribution strategy's scope when there is one.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("wrap_for_jsd: compile the model first (its optimizer is shared)")
    trainer = JSDModel(model, jsd_weight=jsd_weight, name=f"jsd_{model.name}")
    trainer.compile(optimizer=model.optimizer, loss="categorical_crossentropy",
                    metrics=["categorical_accuracy"])
    return trainer


def make_views_dataset(
    paths: Sequence[str | os.PathLike],
    labels: np.ndarray,
    *,
    image_size: Sequence[int],
    views: Callable,
    channels: int = 3,
    batch_size: int = 64,
    shuffle: bool = True,
    seed: int = 0,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    read: Callable | None = None,
) -> tf.data.Dataset:
    """Batches of ``(views[B, 3, H, W, C] float32 0..255, labels)`` for :class:`JSDModel`.

    ``views(image_uint8_full_frame, rng) -> (clean, aug1, aug2)`` (e.g. ``augmentations.AugMixViews``);
    ``read(item) -> uint8 image`` replaces the file reader (``paths`` are then a dataset's ids);
    each view is resized like every other image (``input_pipeline.load_for_model``). Shuffling and
    the per-element generators follow ``input_pipeline.make_dataset``: element seeds come from
    ``tf.data.Dataset.random(seed)``, re-drawn every epoch, so the result does not depend on
    thread scheduling. Image errors surface as ``UserError`` inside
    ``input_pipeline.user_errors_from_pipeline()``.
    """
    import input_pipeline
    import rafdb_dataset
    from cli_common import UserError

    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError("no images to load")
    if len(labels) != len(paths):
        raise ValueError(f"{len(paths)} images but {len(labels)} labels")
    height, width = int(image_size[0]), int(image_size[1])

    def load(index, element_seed):
        try:
            image = (rafdb_dataset.read_image if read is None else read)(paths[int(index)])
            image = input_pipeline.rgb_for_augmentation(image)  # grey datasets: the plane x 3
            rng = np.random.Generator(np.random.PCG64(int(element_seed) & 0xFFFFFFFFFFFFFFFF))
            return np.stack([input_pipeline.load_for_model(view, (height, width), channels, "exact")
                             for view in views(image, rng)])
        except UserError as error:  # recovered by input_pipeline.user_errors_from_pipeline()
            raise UserError(f"{input_pipeline._MARK_START}{error}{input_pipeline._MARK_END}") from None

    def tf_load(index, element_seed):
        stacked = tf.numpy_function(load, [index, element_seed], tf.float32, stateful=False)
        stacked.set_shape((3, height, width, channels))
        return stacked

    label_table = tf.constant(np.asarray(labels, dtype=np.float32))
    indices = tf.data.Dataset.range(len(paths))
    if shuffle:
        indices = indices.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip((indices, seeds)).map(
        lambda index, element_seed: (tf_load(index, element_seed), tf.gather(label_table, index)),
        num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
