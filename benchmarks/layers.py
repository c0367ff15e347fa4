"""Layer throughput against OpenCV and against TensorFlow/Keras built-ins, same run.

    python benchmarks/layers.py [--batch 32] [--repeats 7] [--size 224] [--random-only]

A batch of RGB photos (the dev photos in ../shared/data when present, else the bundled ones)
resized to SIZE×SIZE. Every rate is images/s, best of ``--repeats``:

  layer      the cvprep layer in a ``tf.function`` (TensorFlow backend, CPU);
  layer XLA  the same with ``jit_compile=True``;
  built-in   what TensorFlow/Keras offers for the same job, in a ``tf.function``;
  OpenCV     the ``cvprep.ops`` function in a Python loop over the same images.

Random layers run with ``training=True`` against Keras' own random layers at the same size.
Then ``RandomAffine`` as ``cvprep train``'s input pipeline runs it (a ``tf.data`` map):
TensorFlow's kernel against ``warp_with_opencv`` (OpenCV's ``warpAffine``), in images/s and
CPU milliseconds per image: the CPU the warp takes from a training step on the same cores.
Also runs against an older cvprep checkout, alternated with this one in one session (layers
that do not exist there are skipped)::

    mkdir -p /tmp/bench/old && git archive OLD_COMMIT | tar -x -C /tmp/bench/old
    ln -s ../keras_layers /tmp/bench/old/cvprep/keras_layers
    ln -s ../cli /tmp/bench/old/cvprep/cli
    ln -s "$(realpath ../shared)" /tmp/bench/shared  # the same photos for both
    cp benchmarks/layers.py /tmp/bench/old/benchmarks/  # this version's options
    PYTHONPATH=/tmp/bench/old python /tmp/bench/old/benchmarks/layers.py --random-only
    python benchmarks/layers.py --random-only  # and again, alternating
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import keras
import numpy as np
import tensorflow as tf

from cvprep import Pipeline
from cvprep import keras_layers as kl

tf.get_logger().setLevel("ERROR")  # one tf.function per case retraces by design

ROOT = Path(__file__).resolve().parents[1]
DEV_PHOTOS = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"


def photos(count: int, size: int) -> np.ndarray:
    files = sorted(DEV_PHOTOS.rglob("*.jpg"))[::37] or sorted(
        (ROOT / "sample_images" / "photos").glob("*.jpg")
    )
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    return np.stack(
        [
            cv2.resize(images[i % len(images)], (size, size), interpolation=cv2.INTER_AREA)
            for i in range(count)
        ]
    )


def best_rate(function: Callable[[], Any], count: int, repeats: int) -> float:
    function()  # warm-up: tracing, compilation, allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return count / best


def graph_rate(call: Callable[[Any], Any], tensor: Any, repeats: int, jit: bool = False) -> float:
    compiled = tf.function(call, jit_compile=jit)
    return best_rate(lambda: _materialise(compiled(tensor)), tensor.shape[0], repeats)


def _materialise(result: Any) -> None:
    for item in result if isinstance(result, list | tuple) else [result]:
        item.numpy()


def separable_depthwise(ksize: int, sigma: float) -> Callable[[Any], Any]:
    kernel = cv2.getGaussianKernel(ksize, sigma).astype(np.float32).ravel()
    column = tf.constant(np.tile(kernel.reshape(ksize, 1, 1, 1), (1, 1, 3, 1)))
    row = tf.constant(np.tile(kernel.reshape(1, ksize, 1, 1), (1, 1, 3, 1)))

    def blur(x: Any) -> Any:
        x = tf.nn.depthwise_conv2d(x, column, [1, 1, 1, 1], "SAME")
        return tf.nn.depthwise_conv2d(x, row, [1, 1, 1, 1], "SAME")

    return blur


def keras_rotation(degrees: float, seed: int = 1) -> Callable[[Any], Any]:
    layer = keras.layers.RandomRotation(degrees / 360.0, fill_mode="reflect", seed=seed)
    return lambda x: layer(x, training=True)


# spec → (name of the built-in, the built-in), for ops TensorFlow has an equivalent of.
BUILT_INS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "resize=150x150": ("tf.image.resize area", lambda x: tf.image.resize(x, (150, 150), "area")),
    "resize=150x150:interpolation=linear": (
        "tf.image.resize bilinear",
        lambda x: tf.image.resize(x, (150, 150), "bilinear"),
    ),
    "grayscale": ("tf.image.rgb_to_grayscale", tf.image.rgb_to_grayscale),
    "gaussian_blur=5": ("separable depthwise conv", separable_depthwise(5, 0.0)),
    "rotate=15": ("Keras RandomRotation (±15°)", keras_rotation(15)),
}
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


def random_cases() -> list[tuple[str, Callable[[], Any], str, Callable[[Any], Any]]]:
    """(cvprep layer, its factory, Keras counterpart, the counterpart's call)."""
    flip_zoom_shift = [
        keras.layers.RandomRotation(15 / 360, fill_mode="reflect", seed=1),
        keras.layers.RandomZoom(0.15, fill_mode="reflect", seed=1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=1),
    ]

    def keras_chain(x: Any) -> Any:
        for layer in flip_zoom_shift:
            x = layer(x, training=True)
        return x

    colour = [
        keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=1),
        keras.layers.RandomContrast(0.2, seed=1),
    ]

    def keras_colour(x: Any) -> Any:
        for layer in colour:
            x = layer(x, training=True)
        return x

    blur = keras.layers.RandomGaussianBlur(
        1.0, kernel_size=5, sigma=(0.1, 1.5), value_range=(0, 255), seed=1
    )
    cases = [
        (
            "RandomRotation(15)",
            lambda: kl.RandomRotation(15, seed=1),
            "Keras RandomRotation",
            keras_rotation(15),
        ),
        (
            "RandomAffine(15, 0.15, 0.1)",
            lambda: kl.RandomAffine(15, 0.15, 0.1, seed=1),
            "Keras Rotation+Zoom+Translation",
            keras_chain,
        ),
        (
            "RandomBrightnessContrast(0.1, 0.2)",
            lambda: kl.RandomBrightnessContrast(0.1, 0.2, seed=1),
            "Keras Brightness+Contrast",
            keras_colour,
        ),
        (
            "RandomGaussianBlur((0.1, 1.5), 1.0)",
            lambda: kl.RandomGaussianBlur((0.1, 1.5), probability=1.0, seed=1),
            "Keras RandomGaussianBlur",
            lambda x: blur(x, training=True),
        ),
    ]
    return [case for case in cases if _exists(case[1])]


def _exists(factory: Callable[[], Any]) -> bool:
    try:
        factory()
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-xla", action="store_true")
    parser.add_argument("--random-only", action="store_true", help="only the random layers")
    args = parser.parse_args()
    batch = photos(args.batch, args.size)
    tensor = tf.constant(batch.astype(np.float32))
    print(
        f"batch of {args.batch} {args.size}x{args.size} RGB photos, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, {os.cpu_count()} CPUs; images/s"
    )
    columns = f"{'layer':>7s} {'XLA':>7s} {'OpenCV':>7s} {'l/CV':>5s}"
    print(f"{'spec':38s} {columns}  {'built-in':28s} {'img/s':>7s} {'l/b':>5s}")
    for spec in [] if args.random_only else CASES:
        step, layer = Pipeline.parse(spec).steps[0], Pipeline.parse(spec).layers()[0]
        rate = graph_rate(lambda x, layer=layer: layer(x), tensor, args.repeats)
        xla = (
            0.0
            if args.no_xla
            else graph_rate(lambda x, layer=layer: layer(x), tensor, args.repeats, jit=True)
        )
        cv_rate = best_rate(
            lambda step=step: [step.apply(image) for image in batch], args.batch, args.repeats
        )
        line = f"{spec:38s} {rate:7.0f} {xla:7.0f} {cv_rate:7.0f} {rate / cv_rate:5.2f}"
        if spec in BUILT_INS:
            name, built_in = BUILT_INS[spec]
            built_rate = graph_rate(built_in, tensor, args.repeats)
            line += f"  {name:28s} {built_rate:7.0f} {rate / built_rate:5.2f}"
        print(line, flush=True)
    print(f"\nrandom layers, training=True, {args.size}x{args.size}")
    for name, factory, keras_name, keras_call in random_cases():
        layer = factory()
        rate = graph_rate(lambda x, layer=layer: layer(x, training=True), tensor, args.repeats)
        keras_rate = graph_rate(keras_call, tensor, args.repeats)
        print(
            f"{name:38s} {rate:7.0f}  {keras_name:32s} {keras_rate:7.0f} {rate / keras_rate:5.2f}",
            flush=True,
        )
    pipeline_warp(batch, args.repeats)


def pipeline_warp(batch: np.ndarray, repeats: int) -> None:
    """``RandomAffine`` in a ``tf.data`` map, TensorFlow's kernel against OpenCV's: wall and
    CPU time of 20 batches, best of ``repeats``."""
    tensor = tf.constant(batch.astype(np.float32))
    print(f"\nRandomAffine(15, 0.15, 0.1) in tf.data, batches of {len(batch)}:")
    results = {}
    for kernel in ("TensorFlow", "OpenCV"):
        layer = kl.RandomAffine(15, 0.15, 0.1, flip=True, border="reflect", seed=1)
        layer.warp_with_opencv = kernel == "OpenCV"
        dataset = (
            tf.data.Dataset.from_tensors(tensor)
            .repeat(20)
            .map(
                lambda x, layer=layer: layer(x, training=True), num_parallel_calls=tf.data.AUTOTUNE
            )
        )
        best_wall = best_cpu = float("inf")
        for _ in range(repeats + 1):  # the first pass warms up
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in dataset:
                pass
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        images = 20 * len(batch)
        rate, cpu_ms = images / best_wall, 1e3 * best_cpu / images
        results[kernel] = (rate, cpu_ms)
        print(f"  {kernel:10s} {rate:7.0f} images/s  {cpu_ms:6.3f} CPU ms/image")
    (tf_rate, tf_cpu), (cv_rate, cv_cpu) = results["TensorFlow"], results["OpenCV"]
    print(
        f"  OpenCV / TensorFlow: {cv_rate / tf_rate:.2f}× the images/s, "
        f"{cv_cpu / tf_cpu:.2f}× the CPU time"
    )


if __name__ == "__main__":
    main()
