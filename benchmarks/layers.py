"""Per-layer throughput against the OpenCV function looped over the same batch, same run.

    python benchmarks/layers.py [--batch 32] [--repeats 5]

Prints images/s for the Keras layer (compiled with tf.function, TensorFlow backend, CPU) and for
the cvprep.ops function (OpenCV) in a Python loop over the same 224×224 RGB images, and the ratio
layer/OpenCV. Higher is better for the layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

from cvprep import Pipeline, ops

CASES = [
    "resize=150x150",
    "resize=150x150:interpolation=linear",
    "grayscale",
    "equalize",
    "clahe",
    "gaussian_blur=5",
    "median_blur=3",
    "median_blur=5",
    "canny=100:200",
    "rotate=15",
]


def photos(count: int) -> np.ndarray:
    import cv2

    folder = Path(__file__).resolve().parents[1] / "sample_images" / "photos"
    sources = [
        cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("*.jpg"))
    ]
    return np.stack([ops.resize(sources[i % len(sources)], (224, 224)) for i in range(count)])


def best_rate(function, batch_size: int, repeats: int) -> float:
    function()  # warm-up (tracing, allocation)
    best = min(_timed(function) for _ in range(repeats))
    return batch_size / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batch = photos(args.batch)
    tensor = tf.constant(batch.astype(np.float32))
    print(
        f"batch of {args.batch} 224x224 RGB images, TensorFlow {tf.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'spec':38s} {'layer img/s':>12s} {'OpenCV img/s':>13s} {'ratio':>7s}")
    for spec in CASES:
        step = Pipeline.parse(spec).steps[0]
        layer = Pipeline.parse(spec).layers()[0]
        compiled = tf.function(lambda x, layer=layer: layer(x), jit_compile=False)
        layer_rate = best_rate(
            lambda compiled=compiled: compiled(tensor).numpy(), args.batch, args.repeats
        )
        cv_rate = best_rate(
            lambda step=step: [step.apply(image) for image in batch], args.batch, args.repeats
        )
        print(f"{spec:38s} {layer_rate:12.0f} {cv_rate:13.0f} {layer_rate / cv_rate:7.2f}")


if __name__ == "__main__":
    main()
