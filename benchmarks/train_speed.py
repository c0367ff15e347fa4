"""Training speed against the CPU's peak: achieved GFLOP/s of cvprep's networks.

    python benchmarks/train_speed.py [--models cnn,mobilenet,mobilenet-frozen] [--steps 12]
        [--warmup 3] [--images 384] [--weights FILE] [--peak-gflops N]
        [--precision float32,bfloat16]

For each model, on the dev photos (``train/``; a share of ``--images`` photos decoded once
into cvprep's cache, as ``cvprep train`` does):

- its training FLOPs per image, counted from the model's own Conv/DepthwiseConv/Dense
  shapes (:func:`cvprep.training.compute.training_flops`: 3× forward for trainable layers,
  1× for a frozen backbone below them);
- the seconds of ``--steps`` training steps (``model.fit``, batches of 32) after ``--warmup``
  steps, with the real input (cache + shuffle + ``medium`` augmentation in ``tf.data``) and
  with one in-memory batch repeated (the model's compute alone);
- achieved GFLOP/s and the fraction of the CPU's FP32 peak (cores from the affinity mask,
  clock from ``/proc/cpuinfo``, FLOP/cycle from its flags; ``--peak-gflops`` overrides),
  and, on a virtual machine, the share of the CPUs' time its hypervisor gave to other guests
  meanwhile ("stolen", ``/proc/stat``): a measurement slowed down by neighbours says so.

Models: ``cnn`` (150×150, phase 1 of ``--model cnn``), ``mobilenet-frozen`` (α 0.25,
288×288, phase 1 on images: the head on the frozen backbone, what ``--feature-views 0``
runs), ``mobilenet`` (fine-tuning every layer on images: ``--unfreeze 0
--feature-views 0``) and ``mobilenet-top`` (the default fine-tuning: the top
``--unfreeze`` layers and the head on activations cached below them; "real input" reads
the cached activations of two views, as ``cvprep train`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

from cvprep.training import TrainConfig
from cvprep.training.compute import cpu_peak, cpu_ticks, forward_flops, training_flops
from cvprep.training.data import (
    CachedImages,
    Split,
    discover,
    finish_pipeline,
    load_split,
    make_dataset,
)
from cvprep.training.features import (
    ACTIVATION_DTYPE,
    compute_features,
    cut_backbone,
    train_data,
)
from cvprep.training.models import build_training_model, unfreeze_top
from cvprep.training.phases import _compile
from cvprep.training.plan import resolve_plan

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
BATCH = 32
tf.get_logger().setLevel("ERROR")


def subset(split: Split, count: int) -> Split:
    """``count`` files drawn at random (seeded): both classes, as in training."""
    order = np.random.default_rng(1).permutation(len(split))[:count]
    return Split(tuple(split.files[i] for i in order), tuple(split.labels[i] for i in order))


def build(name: str, weights: Path, precision: str, scratch: Path) -> tuple[object, object]:
    """The model of ``name`` compiled as ``cvprep train`` compiles it, and its plan."""
    model = "cnn" if name == "cnn" else "mobilenet"
    options = {"alpha": 0.25, "weights": str(weights)} if model == "mobilenet" else {}
    if precision != "float32":
        options["precision"] = precision
    plan = resolve_plan(TrainConfig(str(DEV), str(scratch / name), model=model, **options))
    core, base = build_training_model(plan, fixed=True)
    if name == "mobilenet":
        unfreeze_top(base, 0)
    elif name == "mobilenet-top":
        unfreeze_top(base, plan.config.unfreeze)
    tuning = name in ("mobilenet", "mobilenet-top")
    rate = plan.config.fine_tune_learning_rate if tuning else plan.config.learning_rate
    _compile(core, plan, rate, 1000)
    return core, base, plan


def on_activations(
    core: object, base: object, plan: object, cached: CachedImages
) -> tuple[object, tf.data.Dataset, tuple[tf.Tensor, tf.Tensor]]:
    """The default fine-tuning as ``cvprep train`` runs it: the model above the cut, its
    cached activations of two views, and one batch of them."""
    cut = cut_backbone(core, base, plan.config.unfreeze)
    activations = compute_features(
        cut.extractor, cached, plan, views=2, seed=0, dtype=ACTIVATION_DTYPE
    )
    _compile(cut.upper, plan, plan.config.fine_tune_learning_rate, 1000)
    batch = (
        tf.constant(activations.arrays[0][:BATCH], tf.float32),
        tf.constant(activations.labels[0][:BATCH], tf.float32),
    )
    return cut.upper, train_data(activations, plan, BATCH), batch


def timed_fit(
    model: object, data: tf.data.Dataset, warmup: int, steps: int
) -> tuple[float, float | None]:
    """Seconds of ``steps`` training steps after ``warmup`` steps (tracing, caches), and the
    share of the CPUs' time stolen meanwhile (None where ``/proc/stat`` cannot say)."""
    data = data.repeat()
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    before, start = cpu_ticks(), time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds, after = time.perf_counter() - start, cpu_ticks()
    stolen = after.stolen_share_since(before) if before and after else None
    return seconds, stolen


def measure(name: str, args: argparse.Namespace, precision: str, scratch: Path) -> None:
    model, base, plan = build(name, args.weights, precision, scratch)
    _, splits = discover(DEV)
    cached: CachedImages = load_split(
        subset(splits["train"], args.images),
        pipeline=plan.preprocessing.ops,
        size=plan.size,
        resize=plan.config.resize,
        channels=3,
        log=lambda _: None,
    )
    real = make_dataset(
        cached, batch_size=BATCH, num_classes=2, training=True, augment=plan.config.augment
    )
    batch = (
        tf.constant(cached.images[:BATCH], tf.float32),
        tf.constant(cached.labels[:BATCH], tf.float32),
    )
    if name == "mobilenet-top":
        model, real, batch = on_activations(model, base, plan, cached)
    tensors = finish_pipeline(tf.data.Dataset.from_tensors(batch))  # as cvprep's pipelines
    flops = training_flops(model)
    forward = sum(forward_flops(model).values())
    print(
        f"\n{name} ({plan.size}×{plan.size}, {precision}): forward {forward / 1e9:.3f} GFLOP, "
        f"training {flops / 1e9:.3f} GFLOP per image"
    )
    for label, data in (("real input", real), ("in-memory", tensors)):
        seconds, stolen = timed_fit(model, data, args.warmup, args.steps)
        images = args.steps * BATCH
        achieved = flops * images / seconds / 1e9
        print(
            f"  {label:11s} {images / seconds:7.1f} images/s  {seconds / args.steps:6.3f} s/step  "
            f"{achieved:6.1f} GFLOP/s  {achieved / args.peak:5.1%} of peak"
            + ("" if stolen is None else f"  ({stolen:.0%} of the CPUs' time stolen)")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,mobilenet-frozen,mobilenet,mobilenet-top")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--peak-gflops", type=float)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()
    peak = cpu_peak()
    args.peak = args.peak_gflops or peak.gflops
    source = "--peak-gflops" if args.peak_gflops else peak.describe()
    print(f"TensorFlow {tf.__version__}; CPU peak (FP32): {args.peak:.0f} GFLOP/s from {source}")
    print(f"batches of {BATCH}, {args.steps} steps timed after {args.warmup} warm-up steps")
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision.split(","):
            for name in args.models.split(","):
                measure(name, args, precision, Path(tmp))


if __name__ == "__main__":
    main()
