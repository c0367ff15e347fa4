"""Training input: cvprep's pipeline against ImageDataGenerator and image_dataset_from_directory.

    python benchmarks/train_input.py [--data PREP] [--batches 40] [--epochs 4]

DATA is a split folder preprocessed to 150×150 (default: the dev photos, preprocessed here
with ``resize=150x150:fit=pad``). Same run, same photos, batches of 32:

1. Input pipeline alone, images/s over ``--batches`` batches after a warm-up, with the
   ``medium`` augmentation or its nearest equivalent:
   - cvprep: decoded once into the cache (its one-off cost printed apart), then shuffled
     and augmented in tf.data (flip, one affine warp, brightness/contrast);
   - the course's ImageDataGenerator(rotation 40, shifts 0.2, shear 0.2, zoom 0.2, flip),
     ``flow_from_directory``;
   - ``image_dataset_from_directory`` + Keras' RandomFlip, RandomRotation, RandomZoom,
     RandomTranslation, RandomContrast.
2. Seconds per epoch of the classic CNN (``--model classic``), fastest of epochs 2 to
   ``--epochs``: cvprep's training input with ``--augment medium``; the course's
   ImageDataGenerator recipe; the same model on in-memory tensors without augmentation
   (pure compute). Ratios against pure compute and against ImageDataGenerator.
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

import keras
import numpy as np
import tensorflow as tf

from cvprep import dataset
from cvprep.pipeline import Pipeline
from cvprep.training.data import discover, load_split, make_dataset
from cvprep.training.models import build_classic

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"
SIZE, BATCH = 150, 32
tf.get_logger().setLevel("ERROR")


def image_data_generator(train: Path) -> object:
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=40,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=0.2,
        zoom_range=0.2,
        horizontal_flip=True,
    )  # no rescale: the classic model scales its [0, 255] input itself
    return generator.flow_from_directory(
        str(train), target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="binary", seed=1
    )


def keras_pipeline(train: Path) -> tf.data.Dataset:
    layers = [
        keras.layers.RandomFlip("horizontal", seed=1),
        keras.layers.RandomRotation(15 / 360, fill_mode="reflect", seed=1),
        keras.layers.RandomZoom(0.15, fill_mode="reflect", seed=1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=1),
        keras.layers.RandomContrast(0.2, seed=1),
    ]

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for layer in layers:
            images = layer(images, training=True)
        return images, labels

    data = keras.utils.image_dataset_from_directory(
        str(train), image_size=(SIZE, SIZE), batch_size=BATCH, seed=1, verbose=False
    )
    return data.map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def rate(batches: object, count: int) -> float:
    iterator = iter(batches)
    next(iterator)  # warm-up
    start, images = time.perf_counter(), 0
    for _ in range(count):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            batch = next(iterator)
        images += len(batch[0])
    return images / (time.perf_counter() - start)


class EpochTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        self.times.append(time.perf_counter() - self.start)


def epoch_seconds(data: object, epochs: int) -> float:
    keras.utils.set_random_seed(1)
    model = build_classic(SIZE, 3, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    timer = EpochTimes()
    model.fit(data, epochs=epochs, verbose=0, callbacks=[timer])
    return min(timer.times[1:])  # the first epoch traces and compiles


def prepare(scratch: Path) -> Path:
    prepped = scratch / "prep150"
    dataset.preprocess(DEV, prepped, "resize=150x150:fit=pad")
    return prepped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or prepare(Path(tmp))
        run(data, args.batches, args.epochs)


def run(data: Path, batches: int, epochs: int) -> None:
    _, splits = discover(data)
    start = time.perf_counter()
    cached = load_split(
        splits["train"],
        pipeline=Pipeline(),
        size=SIZE,
        resize="stretch",
        channels=3,
        log=lambda _: None,
    )
    decode = time.perf_counter() - start
    ours = make_dataset(cached, batch_size=BATCH, num_classes=2, training=True, augment="medium")
    print(
        f"{len(cached)} training photos of {SIZE}x{SIZE}, batches of {BATCH}, "
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}"
    )
    speed = len(cached) / decode
    print(f"cvprep decodes them once into its cache: {decode:.1f} s ({speed:.0f} images/s)")
    print("\ninput pipeline alone, medium augmentation, images/s:")
    rates = {
        "cvprep (cache + tf.data)": rate(ours, batches),
        "ImageDataGenerator (course)": rate(image_data_generator(data / "train"), batches),
        "image_dataset_from_directory + Keras": rate(keras_pipeline(data / "train"), batches),
    }
    baseline = rates["ImageDataGenerator (course)"]
    for name, value in rates.items():
        print(f"  {name:38s} {value:7.0f}  {value / baseline:5.2f} x ImageDataGenerator")
    print(f"\nseconds per epoch, classic CNN, fastest of epochs 2-{epochs}:")
    # In-memory tensors, batched by tf.data (Keras' NumPy adapter adds its own overhead).
    tensors = (np.asarray(cached.images, np.float32), cached.labels.astype(np.float32))
    in_memory = tf.data.Dataset.from_tensor_slices(tensors).batch(BATCH).prefetch(2)
    seconds = {
        "pure compute (in-memory, no augmentation)": epoch_seconds(in_memory, epochs),
        "ImageDataGenerator recipe (course)": epoch_seconds(
            image_data_generator(data / "train"), epochs
        ),
        "cvprep --model classic --augment medium": epoch_seconds(ours, epochs),
    }
    pure = seconds["pure compute (in-memory, no augmentation)"]
    generator = seconds["ImageDataGenerator recipe (course)"]
    for name, value in seconds.items():
        ratios = f"{value / pure:5.2f} x pure  {value / generator:5.2f} x IDG"
        print(f"  {name:44s} {value:6.1f} s  {ratios}")


if __name__ == "__main__":
    main()
