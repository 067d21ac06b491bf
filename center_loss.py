"""Center loss for ``train_fer.py --center-loss`` (docs/BENCHMARK.md §9.7, §9.9).

Loss = CE(y, ŷ) + λ · mean_{i,d} (f_{i,d} − c_{j_i,d})², with f the pooled embedding (the input of
the classifier layer, before any dropout), j_i = argmax(y_i) and c the class centres. After each
step the centres of the classes present in the global batch move towards their batch means:

    c_j ← c_j − (1 − α) · (c_j − m_j),   m_j = mean of the batch features of class j

(α = 0.9: rate 0.1; FIX: the original's update never ran, so its centres stayed 0). Sums and
counts are all-reduced over replicas, so every replica applies the same update.

The model itself stays a plain functional model: the step is replaced on the model instance and
the centres live outside it (saved beside ``checkpoint_last.hdf5`` as ``center_loss_centers.npy``
for ``--resume``). A checkpoint therefore loads with ``keras.models.load_model(path,
compile=False)`` after ``import models`` and predicts like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cli_common import UserError, atomic_path

CENTERS_FILE = "center_loss_centers.npy"


def feature_tensor(model):
    """The pooled embedding of ``model``: the input of its last (classifier) layer, before dropout."""
    import keras

    tensor = model.layers[-1].input
    while True:
        operation = tensor._keras_history.operation
        if not isinstance(operation, keras.layers.Dropout):
            return tensor
        tensor = operation.input


class CenterLoss:
    """Holds the centres and installs the custom ``train_step`` on a compiled model."""

    def __init__(self, model, num_classes: int, weight: float = 0.01, alpha: float = 0.9):
        import keras
        import tensorflow as tf

        self.model, self.weight, self.alpha = model, float(weight), float(alpha)
        features = feature_tensor(model)
        self.dim = int(features.shape[-1])
        self.num_classes = int(num_classes)
        # model outputs and features in one forward pass (the same layers, so BN updates happen once)
        self.dual = keras.Model(model.inputs, [features, model.outputs[0]], name=f"{model.name}_with_features")
        self.centers = tf.Variable(tf.zeros((self.num_classes, self.dim), tf.float32), trainable=False,
                                   name="center_loss_centers", synchronization=tf.VariableSynchronization.ON_WRITE,
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        model.train_step = self.train_step

    def penalty(self, features, labels):
        """λ · mean over batch and feature dims of (f − c_label)² (float32); labels are class indices."""
        import tensorflow as tf

        features = tf.cast(tf.reshape(features, (tf.shape(features)[0], self.dim)), tf.float32)
        centers = tf.gather(self.centers, labels)
        return self.weight * tf.reduce_mean(tf.square(features - centers))

    def update_centers(self, features, labels) -> None:
        """Move the centres of the classes in the (global) batch towards their batch means."""
        import tensorflow as tf

        features = tf.cast(tf.reshape(features, (tf.shape(features)[0], self.dim)), tf.float32)
        sums = tf.math.unsorted_segment_sum(features, labels, self.num_classes)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), labels, self.num_classes)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            sums, counts = context.all_reduce("SUM", [sums, counts])
        present = counts[:, None] > 0
        means = tf.math.divide_no_nan(sums, counts[:, None])
        step = (1.0 - self.alpha) * (self.centers - means)
        self.centers.assign(self.centers - tf.where(present, step, tf.zeros_like(step)))

    def train_step(self, data):
        """Keras's TF train step with the centre term added to the loss and the centre update after it."""
        import tensorflow as tf
        from keras.src.losses import loss as loss_module
        from keras.src.trainers.data_adapters import data_adapter_utils

        model = self.model
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        labels = tf.argmax(y, axis=-1, output_type=tf.int32)
        with tf.GradientTape() as tape:
            features, y_pred = self.dual(x, training=True)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            loss = loss + loss_module.scale_loss_for_distribution(self.penalty(features, labels))
            model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                             sample_weight=tf.shape(x)[0])
            scaled = model.optimizer.scale_loss(loss)
        weights = model.trainable_weights
        gradients = tape.gradient(scaled, weights)
        model.optimizer.apply_gradients(zip(gradients, weights))
        self.update_centers(features, labels)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ----------------------------------------------------------------------------------------
    # Persistence (training state, not part of the model)

    def save(self, folder: Path) -> None:
        with atomic_path(Path(folder) / CENTERS_FILE) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(self.centers.numpy(), dtype=np.float32))

    def load(self, folder: Path) -> bool:
        """Restore the centres saved in ``folder``; False (centres stay 0) when there is no file."""
        path = Path(folder) / CENTERS_FILE
        if not path.is_file():
            return False
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:  # not .npy, truncated, or an object array
            raise UserError(f"{path}: not a readable array of class centres ({error}); delete it to "
                            f"start the centres from 0, or restore the file the run saved") from None
        if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
            raise UserError(f"{path}: expected a numeric array of class centres, got "
                            f"{getattr(values, 'dtype', type(values).__name__)}")
        if values.shape != (self.num_classes, self.dim):
            raise UserError(f"{path}: centres of shape {values.shape}, the model needs "
                            f"({self.num_classes}, {self.dim})")
        if not np.all(np.isfinite(values)):
            raise UserError(f"{path}: the class centres hold NaN or infinite values")
        self.centers.assign(values.astype(np.float32))
        return True


def mean_center_distance(features: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """mean_{i,d} (f_{i,d} − c_{label_i,d})²: the centre term before λ (for reports and tests)."""
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return float(np.mean((features - np.asarray(centers, dtype=np.float64)[np.asarray(labels)]) ** 2))
