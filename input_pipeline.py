"""The tf.data input pipeline shared by training and both evaluations.

Every image goes through one function, :func:`load_for_model` (BENCHMARK.md §4.3 evaluation order: read,
cut, ``cv2.resize`` bilinear to the network input, optional grey conversion), so that files on
disk and in-memory arrays (on-the-fly evaluation) give the same pixels. Decoding and resizing run
one batch per Python call, in parallel order-keeping ``tf.data`` map calls (OpenCV releases the
GIL); batches are prefetched. The model
receives RGB float32 in 0..255: preprocessing lives inside the model (``models/``) or is applied by
``checkpoints.py`` for third-party classifiers.

Errors inside the pipeline
--------------------------
Images are read inside ``tf.numpy_function``, so a missing or corrupt file (a ``UserError`` from
``datasets.images.read_image``) reaches the caller as a TensorFlow ``OpError`` (``UnknownError``)
with a long traceback in its message, raised wherever the dataset is consumed: ``for batch in
dataset``, ``model.fit``, ``model.evaluate``, ``model.predict``. Wrap every such consumer::

    from input_pipeline import user_errors_from_pipeline

    with user_errors_from_pipeline():
        model.fit(train_ds, validation_data=val_ds, ...)

(also usable as a decorator, ``@user_errors_from_pipeline()``). Inside it, an ``OpError`` that
carries one of our ``UserError`` messages is re-raised as ``UserError(<that message>)``, e.g.
``"RAF-DB/basic/Image/aligned/test_0002_aligned.jpg: not a readable image (corrupt, or not a
JPEG, PNG, BMP, WebP or TIFF file)"``, so ``cli_common.run_main`` prints one line and exits with code 2. Every other
exception passes through unchanged. :func:`pipeline_user_error` returns that message (or None)
for callers that catch ``tf.errors.OpError`` themselves.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, Sequence

import cv2
import numpy as np
import tensorflow as tf

from augmentations import CROP_RULES as CROPS
from cli_common import UserError
from datasets.images import read_image as read_file

AUTOTUNE = tf.data.AUTOTUNE
_ALIGN = 64  # bytes: TensorFlow's CPU tensor alignment (lets it adopt a numpy batch uncopied)
# A UserError raised inside the pipeline carries its message between these markers, so that the
# message can be recovered from the OpError TensorFlow builds around it (with a traceback).
_MARK_START = "<<fer-user-error>>"
_MARK_END = "<</fer-user-error>>"
_MARK_RE = re.compile(re.escape(_MARK_START) + r"(.*?)" + re.escape(_MARK_END), re.DOTALL)


def pipeline_user_error(error: BaseException) -> str | None:
    """The UserError message carried by a TensorFlow error from the pipeline, or None."""
    match = _MARK_RE.search(str(error))
    return match.group(1) if match else None


@contextlib.contextmanager
def user_errors_from_pipeline():
    """Turn a ``tf.errors.OpError`` caused by a UserError inside the pipeline (missing or corrupt
    image) back into that ``UserError``; see the module docstring."""
    try:
        yield
    except tf.errors.OpError as error:
        message = pipeline_user_error(error)
        if message is None:
            raise
        raise UserError(message) from None


def full_frame_cut(image: np.ndarray, crop: str = "exact") -> np.ndarray:
    """The cut of the full-frame ROI (0, 0, W, H) used in evaluation (BENCHMARK.md §4.3).

    ``exact`` keeps the image; ``legacy99`` reproduces the original's off-by-one cut, which
    drops the last row and column (100 -> 99x99).
    """
    if crop == "exact":
        return image
    if crop == "legacy99":
        return image[:-1, :-1]
    raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")


def load_for_model(
    image: np.ndarray, image_size: Sequence[int], channels: int = 3, crop: str = "exact",
    grey_first: bool = False,
) -> np.ndarray:
    """uint8 image -> float32 (h, w, channels) in 0..255, ready for the model.

    ``image`` is RGB (H, W, 3) or grey (H, W, 1) (FER2013, grey folder images). A grey image
    keeps its single plane for a 1-channel model and has it copied to 3 channels otherwise
    (docs/BENCHMARK.md §9.9); an RGB image is reduced to OpenCV's luma for a 1-channel model.
    ``crop`` applies to every size: ``legacy99`` cuts 48 -> 47 on FER as 100 -> 99 on RAF-DB.
    ``grey_first`` (1-channel models only) converts an RGB image to grey before the resize instead
    of after it: the order of the LBP descriptor (``lbp.describe``: grey, then resize), so that an
    LBP+SVM model sees the same pixels in every command.
    """
    return _prepare(image, image_size, channels, crop, grey_first).astype(np.float32)


def _prepare(image: np.ndarray, image_size: Sequence[int], channels: int, crop: str,
             grey_first: bool = False) -> np.ndarray:
    """:func:`load_for_model` without the final float32 conversion (the image keeps its dtype):
    the batch loader converts a whole stacked batch at once, which gives the same floats for a
    fraction of the per-image cost (one pass over one array instead of one new array per image)."""
    if channels not in (1, 3):
        raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
    image = full_frame_cut(image, crop)
    grey = image.ndim == 2 or image.shape[2] == 1
    if grey_first and channels == 1 and not grey:
        image, grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), True
    height, width = int(image_size[0]), int(image_size[1])
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if grey:
        plane = image.reshape(height, width)
        image = plane[:, :, None] if channels == 1 else np.repeat(plane[:, :, None], 3, axis=2)
    elif channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return image


def rgb_for_augmentation(image: np.ndarray) -> np.ndarray:
    """The image the training augmentations take: RGB uint8 H x W x 3. A grey image (FER2013, a
    folder of grey faces) gets its plane copied to three channels first, as the network input
    gets it; the augmentations keep R = G = B, so a 1-channel model still sees the same grey."""
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return image


def _stack_float32(images: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(images).astype(np.float32)`` in one pass, into a 64-byte aligned array.

    The images keep their own dtype (uint8) until here, so no float32 array is made per image;
    the floats are those of :func:`load_for_model`. TensorFlow takes an aligned array returned by
    ``tf.numpy_function`` without copying it (an unaligned one is copied: ~8 us per 100 px image).
    """
    shape = (len(images),) + tuple(images[0].shape)
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    out = raw[start:start + size].view(np.float32).reshape(shape)
    return np.stack(images, out=out, casting="unsafe")


def _finish(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def make_dataset(
    paths: Sequence[str | os.PathLike],
    labels: np.ndarray | None = None,
    *,
    image_size: Sequence[int],
    channels: int = 3,
    batch_size: int = 64,
    crop: str = "exact",
    shuffle: bool = False,
    seed: int = 0,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    num_parallel_calls: int = AUTOTUNE,
    read: Callable[[str], np.ndarray] | None = None,
    grey_first: bool = False,
) -> tf.data.Dataset:
    """A batched dataset of (images, labels), or images alone when ``labels`` is None.

    Files (JPEG or PNG) are decoded with OpenCV in parallel map calls; the order is preserved.
    ``read(item) -> uint8 image`` replaces the file reader: ``paths`` are then any items it
    accepts, e.g. a dataset's ids with ``read=dataset.read_image`` (see :func:`make_dataset_for`).
    ``augment(image_uint8_full_frame, rng) -> uint8`` replaces the evaluation cut (it performs its
    own); each element gets a generator seeded from ``seed`` and its position in the epoch's
    stream, re-drawn every epoch, so results do not depend on thread scheduling.
    """
    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError("no images to load")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(paths)} images but {len(labels)} labels")
    height, width = int(image_size[0]), int(image_size[1])
    full_frame_cut(np.zeros((2, 2, 3), np.uint8), crop)  # validate early

    def load_one(index, element_seed):
        path = paths[int(index)]
        image = read_file(path) if read is None else read(path)
        if augment is not None:
            rng = np.random.Generator(np.random.PCG64(int(element_seed) & 0xFFFFFFFFFFFFFFFF))
            image = augment(rgb_for_augmentation(image), rng)
            return _prepare(image, (height, width), channels, "exact", grey_first)
        return _prepare(image, (height, width), channels, crop, grey_first)

    def load_batch(indices, element_seeds):
        try:
            images = [load_one(index, element_seed)
                      for index, element_seed in zip(indices, element_seeds)]
        except UserError as error:  # recovered by user_errors_from_pipeline()
            raise UserError(f"{_MARK_START}{error}{_MARK_END}") from None
        return _stack_float32(images)

    label_table = None if labels is None else tf.constant(np.asarray(labels, dtype=np.float32))

    def tf_load_batch(indices, element_seeds):
        images = tf.numpy_function(load_batch, [indices, element_seeds], tf.float32, stateful=False)
        images.set_shape((None, height, width, channels))
        if label_table is None:
            return images
        return images, tf.gather(label_table, indices)

    # One Python call per batch, not per image: the per-element numpy_function, its tensors and
    # the batching copy cost several percent of a small model's time on a 2-core machine. The
    # (index, seed) pairs are batched exactly as the images were, so every image, its seed and
    # every batch's composition are unchanged; batches are loaded in parallel and in order.
    indices = tf.data.Dataset.range(len(paths))
    if shuffle:
        indices = indices.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    batches = tf.data.Dataset.zip((indices, seeds)).batch(batch_size)
    # Labels are gathered in the same map call: a second map would cost another function trace
    # (~6 ms of CPU per dataset, and the P evaluation builds one dataset per folder).
    return batches.map(tf_load_batch, num_parallel_calls=num_parallel_calls,
                       deterministic=True).prefetch(AUTOTUNE)


def make_array_dataset(
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | None = None,
    *,
    image_size: Sequence[int],
    channels: int = 3,
    batch_size: int = 64,
    crop: str = "exact",
    grey_first: bool = False,
) -> tf.data.Dataset:
    """Like :func:`make_dataset`, from in-memory RGB uint8 images (same :func:`load_for_model`)."""
    prepared = np.stack([_prepare(image, image_size, channels, crop, grey_first)
                         for image in images]).astype(np.float32, copy=False)
    if labels is None:
        return _finish(tf.data.Dataset.from_tensor_slices(prepared), batch_size)
    labels = np.asarray(labels, dtype=np.float32)
    return _finish(tf.data.Dataset.from_tensor_slices((prepared, labels)), batch_size)


def make_dataset_for(dataset, labels, *, with_labels: bool = True, **options) -> tf.data.Dataset:
    """:func:`make_dataset` over the images of a ``datasets`` LabelSet, read by ``dataset.read_image``.

    Works for every dataset (files or FER2013's in-memory rows); ``options`` are those of
    :func:`make_dataset` (image_size, channels, batch_size, crop, shuffle, seed, augment).
    """
    return make_dataset(labels.names, labels.labels if with_labels else None, read=dataset.read_image, **options)
