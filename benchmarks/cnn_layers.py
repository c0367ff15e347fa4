"""Where a ``cnn`` training step spends its time: each layer's forward and backward pass alone.

    python benchmarks/cnn_layers.py [--size 150] [--batch 32] [--repeats 20]

Builds ``cnn`` as ``cvprep train`` does, then times, for each layer on a random batch of its
own input shape, a traced forward + backward pass (the gradient of the input and of the
layer's weights, as training computes them), and the whole network's training step (forward,
backward and the AdamW update) on one batch. Prints, per layer: its milliseconds, its share
of the sum, its FLOPs (convolutions: 3× forward, as
:func:`cvprep.training.compute.training_flops` counts) and achieved GFLOP/s against the CPU's
FP32 peak; then the sum against the whole step (the difference is the optimizer's update and
the framework's overhead between layers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

from cvprep.training.compute import cpu_peak, forward_flops
from cvprep.training.models import build_cnn


def timed(function, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def layer_step(layer, shape: tuple[int, ...]):
    """A traced forward + backward pass of ``layer`` alone on a random batch of ``shape``."""
    inputs = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(outputs)
        return tape.gradient(loss, [inputs, *layer.trainable_variables])

    return lambda: [g.numpy() for g in step() if g is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    peak = cpu_peak()
    model = build_cnn(args.size, 3, 2)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy")
    flops = forward_flops(model)
    print(f"cnn at {args.size} px, batch {args.batch}; peak {peak.describe()}")
    rows = []
    for layer in model.layers[1:]:
        shape = (args.batch, *layer.input.shape[1:])
        seconds = timed(layer_step(layer, shape), args.repeats)
        training = 3 * flops.get(layer.name, 0) * args.batch
        rows.append((layer.name, type(layer).__name__, seconds, training))
    images = np.random.default_rng(1).uniform(0, 255, (args.batch, args.size, args.size, 3))
    labels = np.random.default_rng(2).integers(0, 2, (args.batch, 1)).astype(np.float32)
    batch = (tf.constant(images.astype(np.float32)), tf.constant(labels))
    model.train_on_batch(*batch)
    whole = timed(lambda: model.train_on_batch(*batch), args.repeats)
    total = sum(r[2] for r in rows)
    header = ("layer", "kind", "ms", "share", "GFLOP", "GFLOP/s", "of peak")
    print("{:<28} {:<20} {:>7} {:>6} {:>7} {:>8} {:>8}".format(*header))
    for name, kind, seconds, training in rows:
        rate = training / seconds / 1e9 if training else 0.0
        speed = f"{rate:8.1f} {100 * rate / peak.gflops:7.1f} %" if training else ""
        print(
            f"{name:<28} {kind:<20} {1e3 * seconds:7.2f} {100 * seconds / total:5.1f} % "
            f"{training / 1e9:7.2f} {speed}"
        )
    conv = sum(r[2] for r in rows if r[3])
    all_flops = sum(r[3] for r in rows)
    print(
        f"sum of layers {1e3 * total:.1f} ms (convolutions and dense {100 * conv / total:.0f} %, "
        f"the rest: normalisation, activations, pooling); whole training step "
        f"{1e3 * whole:.1f} ms, {all_flops / whole / 1e9:.1f} GFLOP/s = "
        f"{100 * all_flops / whole / 1e9 / peak.gflops:.1f} % of peak; convolutions alone "
        f"{all_flops / conv / 1e9:.1f} GFLOP/s = {100 * all_flops / conv / 1e9 / peak.gflops:.1f} %"
    )


if __name__ == "__main__":
    main()
