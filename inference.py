"""How both evaluations run a Keras classifier: plain, on several devices, in mixed precision, with
XLA, and with test-time BatchNorm adaptation (docs/BENCHMARK.md §11.2, §11.6).

:class:`Runner` wraps a ``checkpoints.Classifier``. Without options it calls the classifier's own
``predict_dataset`` (any model format). Any option works on an *evaluation copy* of the Keras model
(``keras.models.clone_model`` plus the same weights); the loaded model and its file are never
modified:

- ``distribute="mirrored"``: the copy is built under ``tf.distribute.MirroredStrategy`` (every
  visible GPU, else the logical CPU devices); each batch is split over the replicas and the rows
  come back in input order.
- ``mixed_precision=True``: every layer of the copy computes in float16 (``mixed_float16``
  policy; variables stay float32), outputs are cast back to float32.
- ``jit=True``: the prediction step is compiled with XLA (``jit_compile=True``).
- ``adapt="bn"``: before a folder is predicted, :meth:`Runner.adapt_to` re-estimates the moving
  mean and variance of every BatchNormalization layer of the copy on that folder, in ONE pass
  (docs/BENCHMARK.md §11.2; Schneider et al. 2020). Each BatchNorm layer normalises each batch with
  its own batch statistics during the pass (training mode), and the folder's statistics are the
  exact pooled mean and (population) variance over all its batches:
  mean = sum_b n_b m_b / n, var = sum_b n_b (v_b + (m_b - mean)^2) / n.
  The first BatchNorm layer's statistics are thus exactly the folder's; a deeper layer's are pooled
  from activations that earlier layers normalised with each batch's own statistics, so they depend
  on the batch size and on how the folder falls into batches (results record ``adapt_batch``).
  With ``adapt_prior=N`` the source statistics are mixed in after the pass: stat = (N s + n t) / (N + n),
  i.e. the source has weight N/(N+n). This is a variant of Schneider et al.'s prior: they mix each
  layer's statistics while the network runs, so that a layer sees earlier layers normalised with the
  mixed statistics; here every layer's statistics are measured without the prior, then mixed.
  Stochastic layers (Dropout, GaussianNoise,
  random augmentation layers) are replaced by identities in the copy, so the training-mode pass
  changes nothing but the BatchNorm statistics; kernels, gamma and beta are never touched.
  Statistics are reset to the source ones before each folder.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from cli_common import UserError, finite_float, quiet_tensorflow_info

LOG = logging.getLogger("fer.inference")

DISTRIBUTE_CHOICES = ("none", "mirrored")
ADAPT_CHOICES = ("none", "bn")
# Layers whose training-mode call draws random numbers: identities in the evaluation copy.
STOCHASTIC_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                     "GaussianDropout", "GaussianNoise", "AlphaDropout", "RandomFlip",
                     "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
                     "RandomBrightness", "RandomCrop")


def add_runner_args(parser) -> None:
    """Flags shared by both evaluations (scale and adaptation)."""
    group = parser.add_argument_group("devices, precision, adaptation")
    group.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, default="none",
                       help="mirrored: split every batch over all visible GPUs (MirroredStrategy; "
                            "with no GPU, the logical CPU devices); not with --jit or --adapt")
    group.add_argument("--mixed-precision", action="store_true",
                       help="compute in float16 (mixed_float16 policy; variables stay float32). "
                            "Useful on GPUs with tensor cores; slower on most CPUs")
    group.add_argument("--jit", action="store_true",
                       help="compile the prediction step with XLA (see bench/bench_eval.py for when "
                            "it helps)")
    group.add_argument("--adapt", choices=ADAPT_CHOICES, default="none",
                       help="bn: re-estimate BatchNorm statistics on each evaluated folder before "
                            "predicting it (one extra pass per folder, on a copy of the model; "
                            "docs/BENCHMARK.md §11.2). Results are labelled 'adapted'")
    group.add_argument("--adapt-prior", type=finite_float, default=0.0, metavar="N",
                       help="with --adapt bn: weight of the source statistics as N images, i.e. "
                            "mixed with weight N/(N+n) for a folder of n images (0: full adaptation)")


def check_runner_args(args) -> None:
    """The flags of add_runner_args that contradict each other, refused before any file is read."""
    if args.adapt_prior < 0:
        raise UserError(f"--adapt-prior: expected a number >= 0, got {args.adapt_prior}")
    if args.adapt_prior and args.adapt != "bn":
        raise UserError("--adapt-prior needs --adapt bn")


def runner_from_args(classifier, args) -> "Runner":
    check_runner_args(args)
    return Runner(classifier, distribute=None if args.distribute == "none" else args.distribute,
                  mixed_precision=args.mixed_precision, jit=args.jit,
                  adapt=None if args.adapt == "none" else args.adapt, adapt_prior=args.adapt_prior)


def make_strategy(kind: str | None):
    import tensorflow as tf

    if kind is None:
        return None
    if kind != "mirrored":
        raise UserError(f"--distribute: unknown strategy {kind!r}; expected one of {DISTRIBUTE_CHOICES}")
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in gpus] or [device.name for device in
                                                   tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    quiet_tensorflow_info()
    return strategy


def check_mixed_precision() -> None:
    """float16 needs a GPU, or a CPU run with oneDNN off: oneDNN aborts the process (no Python
    error) on CPUs without float16 matrix instructions, e.g. under DNNL_MAX_CPU_ISA=AVX2."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        raise UserError("--mixed-precision: no GPU is visible; float16 on the CPU needs the "
                        "environment variable TF_ENABLE_ONEDNN_OPTS=0 (oneDNN aborts on CPUs "
                        "without float16 instructions) and is rarely faster than float32 there")


def _flat_layers(model) -> list:
    """Every layer of a model, nested models included (depth first)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_flat_layers(layer))
    return found


def batchnorm_layers(model) -> list:
    import keras

    return [layer for layer in _flat_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def evaluation_copy(model, *, mixed_precision: bool = False, strip_stochastic: bool = True):
    """A clone of ``model`` with its weights; float16 compute if asked; stochastic layers -> identity."""
    import keras

    import checkpoints

    policy = "mixed_float16" if mixed_precision else None

    def clone_layer(layer):
        if strip_stochastic and type(layer).__name__ in STOCHASTIC_LAYERS:
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if policy is not None and "dtype" in config:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    try:
        with keras.saving.custom_object_scope(checkpoints._custom_objects()):
            copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except Exception as error:  # a model keras cannot rebuild from its config
        raise UserError(f"cannot make an evaluation copy of model {model.name!r} "
                        f"({type(error).__name__}: {error}); --distribute/--mixed-precision/--adapt "
                        f"need a model Keras can clone") from None
    copy.set_weights(model.get_weights())
    return copy


class Runner:
    """Predicts the batches of a classifier's dataset, with the options of the module docstring."""

    def __init__(self, classifier, *, distribute: str | None = None, mixed_precision: bool = False,
                 jit: bool = False, adapt: str | None = None, adapt_prior: float = 0.0):
        self.classifier = classifier
        self.distribute, self.mixed_precision, self.jit = distribute, mixed_precision, jit
        self.adapt, self.adapt_prior = adapt, float(adapt_prior)
        self.model = None
        self.strategy = None
        self._steps: dict = {}  # training flag -> its compiled step, traced once for every folder
        if not (distribute or mixed_precision or jit or adapt):
            return
        if distribute and jit:  # TensorFlow's XLA cannot reach a replica's variables on another device
            raise UserError(f"--jit with --distribute {distribute}: XLA cannot compile a step whose "
                            f"replicas' variables live on other devices; use one of the two flags")
        if distribute and adapt:
            raise UserError(f"--adapt {adapt} with --distribute {distribute}: the adaptation pools the "
                            f"BatchNorm statistics of whole batches, which the replicas would each see "
                            f"only in part; adapt without --distribute")
        import keras

        if not isinstance(getattr(classifier, "model", None), keras.Model):
            raise UserError(f"{classifier.checkpoint_path}: --distribute, --mixed-precision, --jit "
                            f"and --adapt need a Keras model")
        if mixed_precision:
            check_mixed_precision()
        self.strategy = make_strategy(distribute)
        if self.strategy is not None:
            with self.strategy.scope():
                self.model = evaluation_copy(classifier.model, mixed_precision=mixed_precision)
        else:
            self.model = evaluation_copy(classifier.model, mixed_precision=mixed_precision)
        self.bn = batchnorm_layers(self.model) if adapt else []
        if adapt and not self.bn:
            raise UserError(f"{classifier.checkpoint_path}: --adapt bn: the model has no "
                            f"BatchNormalization layer")
        for layer in self.bn:
            layer.momentum = 0.0  # a training-mode call leaves exactly the batch statistics
            # A frozen layer (trainable False, the usual Keras fine-tuning recipe) keeps its moving
            # statistics even in a training-mode call: unfrozen in the copy, it takes the folder's.
            layer.trainable = True
        self.source = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in self.bn]

    # -- description ----------------------------------------------------------------------
    @property
    def adapted(self) -> bool:
        return self.adapt is not None

    def describe(self) -> dict:
        return {"distribute": self.distribute or "none",
                "replicas": 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync),
                "mixed_precision": bool(self.mixed_precision), "jit": bool(self.jit),
                "adapt": self.adapt or "none", "adapt_prior": self.adapt_prior,
                "adapted": self.adapted,
                # the adapted statistics of all but the first BatchNorm layer depend on it (adapt_to)
                **({"adapt_batch": int(getattr(self.classifier, "batch_size", 0) or 0)} if self.adapted else {})}

    # -- data -----------------------------------------------------------------------------
    def _images(self, dataset):
        """The classifier's batches, preprocessed as its own predict_dataset does."""
        return self.classifier.with_preprocessing(dataset)

    def _call(self, training: bool):
        """The compiled step of one mode, built once: a new tf.function per folder would trace (and
        with --jit compile) the model again for every folder and every adaptation pass."""
        if training not in self._steps:
            self._steps[training] = self._build_step(training)
        return self._steps[training]

    def _build_step(self, training: bool):
        import tensorflow as tf

        import model_files

        model = self.model
        raw = model_files.keras_integer_input(model)

        def forward(images):
            if raw:  # integer pixels, rounded as the classifier's own runner rounds them
                images = model_files.integer_pixels(images, raw)
            outputs = model_files.first_output(model(images, training=training))
            return tf.cast(outputs, tf.float32)

        inner = tf.function(forward, jit_compile=bool(self.jit and not training),
                            reduce_retracing=True)
        if self.strategy is None:
            return inner
        strategy = self.strategy

        @tf.function(reduce_retracing=True)
        def step(images):
            return strategy.run(inner, args=(images,))

        return step

    def _run(self, dataset, training: bool):
        """Yield the float32 output rows of each batch (input order)."""
        import tensorflow as tf

        import checkpoints

        step = self._call(training)
        images = self._images(dataset)
        if self.strategy is not None:
            # A batch is split over the replicas; one of fewer images than replicas (a test set's
            # last batch) would leave a replica an empty batch, which the model cannot take. Each
            # batch is padded to a multiple of the replica count by repeating its last image, and
            # a mask keeps the real rows.
            replicas = int(self.strategy.num_replicas_in_sync)

            def pad(batch):
                count = tf.shape(batch)[0]
                extra = (replicas - count % replicas) % replicas
                padded = tf.concat([batch, tf.repeat(batch[-1:], extra, axis=0)], axis=0)
                return padded, tf.range(count + extra) < count

            images = self.strategy.experimental_distribute_dataset(images.map(pad))
        with checkpoints.pipeline_user_errors():
            for batch in images:
                keep = None
                if self.strategy is not None:
                    batch, keep = batch
                try:
                    outputs = step(batch)
                except tf.errors.InvalidArgumentError as error:
                    if not self.jit or "XLA" not in str(error):
                        raise
                    raise UserError(f"{self.classifier.checkpoint_path}: --jit: XLA cannot compile "
                                    f"this model ({str(error).splitlines()[0]}); run without --jit "
                                    f"(e.g. the full_normalization layer's histogram is not "
                                    f"XLA-compilable)") from None
                if self.strategy is not None:
                    parts = self.strategy.experimental_local_results(outputs)
                    rows = np.concatenate([np.asarray(part, np.float32) for part in parts])
                    mask = np.concatenate([np.asarray(part, bool) for part in
                                           self.strategy.experimental_local_results(keep)])
                    yield rows[mask]
                else:
                    yield np.asarray(outputs, np.float32)

    # -- prediction -----------------------------------------------------------------------
    def predict(self, dataset) -> np.ndarray:
        """Probabilities (N, K) in the classifier's ``class_names`` order for a batched dataset."""
        if self.model is None:
            return self.classifier.predict_dataset(dataset)
        chunks = list(self._run(dataset, training=False))
        if not chunks:
            return np.zeros((0, len(self.classifier.class_names or ())), np.float32)
        scores = np.concatenate(chunks).reshape(-1, chunks[0].shape[-1])
        runner = getattr(self.classifier, "runner", None)
        if runner is not None:  # probabilities, or the softmax of a model that ends in logits
            import model_files

            scores = runner.to_probabilities(scores, model_files.FLOAT16_STEP if self.mixed_precision
                                             else None)
        return self.classifier.arrange(scores)

    # -- BatchNorm adaptation -------------------------------------------------------------
    def reset(self) -> None:
        """Put the source statistics back into every BatchNorm layer of the copy."""
        for layer, (mean, variance) in zip(self.bn, self.source):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)

    def adapt_to(self, dataset) -> int:
        """One pass over ``dataset``: its pooled BatchNorm statistics (mixed with the prior) replace
        the copy's. Returns the number of images seen."""
        if not self.adapted:
            return 0
        self.reset()
        count = 0
        sums = [None] * len(self.bn)
        for rows in self._run(dataset, training=True):
            n = len(rows)
            if n == 0:
                continue
            for index, layer in enumerate(self.bn):
                mean = layer.moving_mean.numpy().astype(np.float64)
                variance = layer.moving_variance.numpy().astype(np.float64)
                moments = (n * mean, n * (variance + mean ** 2))  # sums of x and x^2
                sums[index] = moments if sums[index] is None else (sums[index][0] + moments[0],
                                                                   sums[index][1] + moments[1])
            count += n
        if count == 0:
            self.reset()
            return 0
        weight = self.adapt_prior / (self.adapt_prior + count)
        for layer, (source_mean, source_variance), (sum_x, sum_x2) in zip(self.bn, self.source, sums):
            mean = sum_x / count
            variance = np.maximum(sum_x2 / count - mean ** 2, 0.0)
            layer.moving_mean.assign((weight * source_mean + (1 - weight) * mean).astype(np.float32))
            layer.moving_variance.assign(
                (weight * source_variance + (1 - weight) * variance).astype(np.float32))
        return count
