"""Train a facial-expression classifier on RAF-DB with the original's recipe (docs/BENCHMARK.md §4), in Keras 3.

Plain SGD (``--momentum`` gives 0.9), learning rate 0.002 halved every 40 epochs, 220 epochs,
batch 64, categorical cross-entropy on the soft labels (one-hot with ``--labels hard``). The model
takes raw RGB 0..255 and preprocesses in its first layers, so its checkpoints are self-describing;
``run.json`` beside them records the rest.

The run directory (``out_training_fer/<argstring>_<YYYYmmdd_HHMMSS>``, or ``--dir``; checked before
any data is read: not a file, in a folder that exists or can be created, writable) receives:

- ``checkpoint.EE.hdf5``: full model + optimizer, written when ``val_categorical_accuracy``
  strictly improves (EE is the 1-based epoch, as the original); the highest number is the best;
- ``checkpoint_last.hdf5`` and ``train_state.json`` after every epoch: ``--resume --dir RUN``
  reloads ``checkpoint_last.hdf5`` (with its optimizer state) and continues at the epoch recorded
  in ``train_state.json`` (``completed_epochs``) with the run's own settings from ``run.json``
  (only ``--epochs``, ``--workers``, ``-v``, ``--deterministic`` and ``--collective-timeout`` may be
  given anew; a conflicting flag is an error; a run directory without ``run.json`` is refused);
  checkpoint_last.hdf5 carries its own epoch count, so a run killed between the two files resumes
  after the epoch it holds. A run directory without them (e.g. from an older run) resumes from the highest
  ``checkpoint.EE.hdf5`` at epoch EE, its best accuracy taken from ``training_log.csv``. Each epoch
  has its own pipeline and dropout seeds (from ``--seed`` and the epoch), so a resumed run trains
  on the same batches as a continuous one; its numbers equal the continuous run's on CPU, and on
  GPUs only with ``--deterministic`` (GPU kernels are not deterministic by default);
- ``training_log.csv`` (one row per epoch, the file rewritten through a temporary name; trimmed
  to the completed epochs on resume), ``tensorboard/``, ``run.json``,
  ``validation_names.txt`` (the held-out images) and, at the end, ``results.json`` with the clean
  test accuracy of the best checkpoint (reported once, with N and the label protocol).

Every file of the run directory is written under a temporary name and renamed (TensorBoard's
event files excepted: TensorBoard appends to them).

Model selection uses a held-out 10 % of the training images (docs/BENCHMARK.md §1.5 FIX); ``--val-split test``
selects on the test set, as the original did. ``--bn-recalibrate N`` (an extension, off by
default) recomputes the BatchNorm statistics over N training batches before each validation.
Under ``--distribute multiworker`` only the chief writes the run directory (``--dir`` required).

Example (the demo: small CNN on the synthetic sample tree, 2 CPU cores)::

    python3 train_fer.py --rafdb demo/RAF-DB --net smallcnn --input-size 64 --lpf 0 --epochs 12 \\
        --batch 32 --lr 0.02:0.5:6 --momentum --augmentation no --bn-recalibrate 8 --dir out_training_fer/demo

    python3 train_fer.py --mode test --dir out_training_fer/demo --rafdb demo/RAF-DB

Other datasets (docs/DATASETS.md): ``--dataset ferplus|fer2013 --data FERPlus`` (48 px grey, validated
on the split that is not the test split), ``--dataset folder --data faces/``; ``run.json`` records the
dataset and its class names, and ``--mode test`` maps the model's classes onto the dataset's by name::

    python3 train_fer.py --dataset ferplus --data demo/FERPlus --net smallcnn --input-size 64 \\
        --epochs 4 --lr 0.05 --augmentation no --dir out_training_fer/fer_demo
"""

from __future__ import annotations

import os
import sys

# docs/BENCHMARK.md §4.9: a oneDNN crash when training 1x1 stride-2 convs over 8 channels on some CPUs.
# Must be set before TensorFlow is imported (training.py sets the same defaults); the user may override it.
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import augmentations  # noqa: E402
import datasets  # noqa: E402
import training  # noqa: E402
from cli_common import ArgumentParser, explicit_flags, finite_float, run_main, seed_int, setup_logging  # noqa: E402
from cli_common import non_negative_float  # noqa: E402
from training import DEFAULT_LR, LPF_CHOICES, VAL_FRACTION_DEFAULT  # noqa: E402

# Flags whose choices live in models/ (imports Keras): validated after parsing, so --help stays fast.
MODEL_CHOICES = {"net": "NET_CHOICES", "preprocessing": "PREPROCESSING_MODES", "mean_order": "MEAN_ORDERS",
                 "colour": "COLOURS"}


def _models():
    import models  # imports Keras; deferred so that `--help` and argument errors stay fast

    return models


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    datasets.add_dataset_args(parser)
    data = parser.add_argument_group("validation and input")
    data.add_argument("--val-split", default="holdout", choices=("holdout", "test"),
                      help="select checkpoints on a held-out part of train (FIX; a dataset with its own validation "
                           "split, e.g. FER's PrivateTest, uses that) or on the test set (original)")
    data.add_argument("--val-fraction", type=finite_float, default=VAL_FRACTION_DEFAULT,
                      help="fraction of the (filtered) training images held out, stratified by class; only "
                           "with --val-split holdout on a dataset without its own validation split (elsewhere "
                           "it would have no effect and is refused)")
    data.add_argument("--crop", default="exact", choices=augmentations.CROP_RULES,
                      help="cut rule: 'exact' (FIX) or the original's off-by-one 'legacy99' (100 -> 99 px)")
    data.add_argument("--workers", type=int, default=None,
                      help="parallel decode/augment calls in the input pipeline (default: automatic)")

    model = parser.add_argument_group("model")
    model.add_argument("--net", default="senet50",
                       help="network: smallcnn, senet50, vgg16, densenet121bc, xception, mobilenetv2, resnet50, "
                            "or the original's names (senet50-100, mobilenet96, ...), which set --input-size")
    model.add_argument("--input-size", type=int, default=None,
                       help="input side in px (default: the alias's size, else the network's default)")
    model.add_argument("--lpf", type=int, default=1, choices=LPF_CHOICES,
                       help="BlurPool filter size (0 = original strided layers, 1 = stride 1 + subsampling)")
    model.add_argument("--preprocessing", default="full_normalization",
                       help="input preprocessing, built into the model's first layers: full_normalization, "
                            "vggface2, z_normalization, scale01, scale-1-1, or no (also spelled none, as in the "
                            "evaluations' --preprocessing)")
    model.add_argument("--mean-order", default="correct",
                       help="vggface2 means in RGB order ('correct', FIX) or in the original's swapped order "
                            "('legacy-swapped')")
    model.add_argument("--colour", default="rgb",
                       help="'rgb', or 'bgr-compat' to reproduce the original's channel-order defects "
                            "(z-norm, AutoAugment)")
    model.add_argument("--pretraining", default=None, metavar="PATH|imagenet",
                       help="initial weights: the path of a local Keras model or weights file (.h5, .hdf5, "
                            ".keras, .weights.h5; matched by layer name), or 'imagenet' (only when Keras's "
                            "cache already holds the file). Nothing is downloaded: 'vggface'/'vggface2' "
                            "are refused; give the path of the weights file (e.g. "
                            "rcmalli_vggface_tf_notop_senet50.h5). Default: random initialisation")
    model.add_argument("--weight-decay", type=finite_float, default=0.0,
                       help="L2 penalty on kernels, applied at build time (the original's flag was inert)")

    augment = parser.add_argument_group("augmentation")
    augment.add_argument("--augmentation", default="default", choices=augmentations.KINDS,
                         help="training augmentation (docs/BENCHMARK.md §4.5); 'randaugment' and 'augmix' "
                              "(§11.2) are extensions; docs/AUGMENTATIONS.md compares them with the corruptions")
    augment.add_argument("--cutout", action="store_true",
                         help="random erasing (p .5) instead of --augmentation, which must then be left at its default "
                              "(another --augmentation with --cutout is refused); the run name gets '_cutout'")
    augment.add_argument("--honour-policy-prob", action="store_true",
                         help="apply each AutoAugment op with its probability (the original ignores them)")
    augment.add_argument("--jsd", action="store_true",
                         help="with --augmentation augmix: train on (clean, augmix, augmix) views with "
                              "CE + 12 x Jensen-Shannon consistency loss (docs/BENCHMARK.md §11.2)")
    augment.add_argument("--augmix-width", type=int, default=3, help="AugMix: chains mixed per image")
    augment.add_argument("--augmix-depth", type=int, default=-1,
                         help="AugMix: operations per chain, 1..3, or -1 for a random depth 1..3 per chain")
    augment.add_argument("--augmix-severity", type=finite_float, default=3.0,
                         help="AugMix: operation levels are drawn from U(0.1, severity) on a 0..10 scale")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=220, help="number of epochs")
    optim.add_argument("--batch", type=int, default=64, help="global batch size")
    optim.add_argument("--lr", default=DEFAULT_LR, metavar="INIT[:FACTOR[:EVERY]]",
                       help="learning rate INIT multiplied by FACTOR every EVERY epochs (0-based)")
    optim.add_argument("--momentum", action="store_true", help="SGD momentum 0.9 instead of plain SGD")
    optim.add_argument("--center-loss", "--center_loss", dest="center_loss", action="store_true",
                       help="add the center loss (docs/BENCHMARK.md §9.7): CE + weight x mean squared distance "
                            "of the pooled embedding to its class centre; centres move towards the batch means")
    optim.add_argument("--center-loss-weight", type=finite_float, default=0.01, metavar="LAMBDA",
                       help="weight of the centre term")
    optim.add_argument("--center-loss-alpha", type=finite_float, default=0.9, metavar="ALPHA",
                       help="centre update: c <- c - (1 - ALPHA) (c - batch class mean), i.e. rate 1 - ALPHA")
    optim.add_argument("--bn-recalibrate", type=int, default=0, metavar="N",
                       help="EXTENSION: at the end of every epoch, before validation, set every BatchNorm "
                            "layer's moving mean/variance to the equal-weight average over N training batches "
                            "('precise BN'); 0 = off, the original's behaviour")
    optim.add_argument("--seed", type=seed_int, default=0,
                       help="seed of weights, shuffling, augmentation and the hold-out split")
    optim.add_argument("--mixed-precision", action="store_true",
                       help="mixed_float16 compute (float32 weights and softmax output); useful on GPUs")
    optim.add_argument("--deterministic", action="store_true",
                       help="TensorFlow op determinism (tf.config.experimental.enable_op_determinism): "
                            "identical results run to run and resumed == uninterrupted on GPUs too (on CPU "
                            "they already are); slower on GPUs")
    optim.add_argument("--distribute", default="none", choices=("none", "mirrored", "multiworker"),
                       help="tf.distribute: all local GPUs (mirrored) or several machines via TF_CONFIG "
                            "(multiworker needs --dir; only the chief writes)")
    optim.add_argument("--collective-timeout", type=non_negative_float, default=300.0, metavar="SECONDS",
                       help="--distribute multiworker: a worker stuck this long in one all-reduce (a peer died "
                            "or hangs) fails and exits non-zero instead of waiting forever; 0 = no limit")
    optim.add_argument("--cpu-devices", type=int, default=0,
                       help="with --distribute mirrored and no GPU: split the CPU into N logical devices "
                            "(for testing)")

    output = parser.add_argument_group("output")
    output.add_argument("--mode", default="train", choices=("train", "test"),
                        help="'test' evaluates a checkpoint (--checkpoint, --epoch E of --dir, or the best in --dir): the clean "
                             "test accuracy, then accuracy and confusion matrix of the test, validation and train "
                             "images, also written as confusion_<part>.csv/.png beside the checkpoint")
    output.add_argument("--out-root", default="out_training_fer", type=Path,
                        help="folder that receives the run directories")
    output.add_argument("--dir", default=None, type=Path,
                        help="run directory (overrides <out-root>/<argstring>_<timestamp>)")
    output.add_argument("--resume", action="store_true",
                        help="continue the run in --dir from its last epoch, with the optimizer state and the "
                             "run's own settings from run.json (only --epochs, --workers, -v, --deterministic and "
                             "--collective-timeout may change)")
    output.add_argument("--epoch", type=int, default=None, metavar="E",
                        help="--mode test: evaluate checkpoint.EE.hdf5 of --dir (default: the best, the highest EE)")
    output.add_argument("--checkpoint", default=None, type=Path,
                        help="--mode test: the .hdf5 to evaluate (default: the best in --dir)")
    output.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def parse_args(argv: list[str] | None = None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.explicit = explicit_flags(parser, argv)
    if args.preprocessing == "none":  # the evaluations' spelling of the original's "no"
        args.preprocessing = "no"
    models = _models()  # imports Keras: only after the cheap checks of argparse
    for dest, name in MODEL_CHOICES.items():
        choices = getattr(models, name)
        if getattr(args, dest) not in choices:
            parser.error(f"argument --{dest.replace('_', '-')}: invalid choice: {getattr(args, dest)!r} "
                         f"(choose from {', '.join(choices)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    return training.run(args, parse_argv=build_parser().parse_args)  # parser: for an older run.json


if __name__ == "__main__":
    run_main(main)
