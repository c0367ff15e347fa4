"""Training data: find the splits, decode every image once, cache it, feed it to Keras.

Every image is decoded once with cvprep's reader (EXIF, CMYK, 16-bit; a bad file is named and
skipped), run through ``--ops`` and resized to the model's input size, in parallel. The
uint8 results are cached in memory when they fit, else in a file in the run folder. Each epoch
then only shuffles, augments (batched Keras layers inside ``tf.data``) and prefetches, so an
epoch costs about what the model's own compute costs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import ops
from cvprep.augmentation import get_preset, to_keras_layers
from cvprep.dataset.engines import default_workers
from cvprep.errors import CvprepError, ImageError, ParameterError
from cvprep.files import EmptyTreeError, class_of, list_tree
from cvprep.io import read_image
from cvprep.pipeline import Pipeline

SPLITS = ("train", "val", "test")
MEMORY_SHARE = 0.25  # cache in memory up to this share of the machine's RAM


@dataclass(frozen=True)
class Split:
    """The image files of one split folder that are in a known class, with their labels."""

    files: tuple[str, ...]  # absolute paths
    labels: tuple[int, ...]
    # Files of the folder outside every known class folder: (path, its folder's class name,
    # or None for a file at the top level).
    outside: tuple[tuple[str, str | None], ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    def describe_outside(self) -> dict[str, str]:
        """Each file outside the known classes, with why it is not used."""
        return {
            path: "not in a class folder"
            if cls is None
            else f"class folder {cls!r} is not one of the model's classes"
            for path, cls in self.outside
        }


def list_split(folder: Path, classes: Sequence[str]) -> Split:
    files, labels, outside = [], [], []
    for relative in list_tree(folder).files:
        cls = class_of(relative)
        if cls in classes:
            files.append(str(folder / relative))
            labels.append(classes.index(cls))
        else:
            outside.append((str(folder / relative), cls))
    return Split(tuple(files), tuple(labels), tuple(outside))


def discover(data: Path) -> tuple[list[str], dict[str, Split]]:
    """Class names (from train/) and the files of each split folder present."""
    train = data / "train"
    if not train.is_dir():
        raise CvprepError(f"{data} has no train/ folder: make one with `cvprep split`")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise CvprepError(f"{train} needs at least two class folders, found {classes}")
    splits = {name: list_split(data / name, classes) for name in SPLITS if (data / name).is_dir()}
    if not splits["train"].files:
        raise EmptyTreeError(train, "no image files in class subfolders")
    return classes, splits


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A stratified, seeded share of the training files as validation (``test`` stays
    untouched: it is evaluated once, at the end)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(train.labels)
    held = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held[rng.choice(members, count, replace=False)] = True
    kept = replace(_subset(train, np.flatnonzero(~held)), outside=train.outside)
    return kept, _subset(train, np.flatnonzero(held))


def _subset(split: Split, indices: Any) -> Split:
    return Split(tuple(split.files[i] for i in indices), tuple(split.labels[i] for i in indices))


def process_shard(split: Split, seed: int, num_processes: int, process_id: int) -> Split:
    """This process's equal share of the training files (same shuffle in every process)."""
    order = np.random.default_rng(seed).permutation(len(split.files))
    per_process = len(order) // num_processes
    share = _subset(split, order[process_id * per_process : (process_id + 1) * per_process])
    return replace(share, outside=split.outside)


# --------------------------------------------------------------------------- decode once
@dataclass(frozen=True)
class LoadTask:
    index: int
    path: str
    pipeline: Pipeline  # --ops (threads share the parsed pipeline: nothing is re-parsed)
    size: int
    resize: str
    gray: bool  # files hold one channel (preprocessed to grayscale or edges)

    @property
    def source(self) -> str:
        return self.path


def prepare_image(image: np.ndarray, pipeline: Pipeline, size: int, resize: str) -> np.ndarray:
    """``--ops`` then the resize to the model's input, as the saved model does (uint8 H×W×C)."""
    result = ops.to_uint8(pipeline.apply(image))
    result = ops.resize(result, (size, size), interpolation="area", fit=resize)
    return result[:, :, None] if result.ndim == 2 else result


def load_one(task: LoadTask, data: bytes | None = None) -> tuple[int, np.ndarray | None, str]:
    """Decode and prepare one file; ``(index, image or None, error)``."""
    try:
        image = read_image(
            data if data is not None else task.path, mode="grayscale" if task.gray else "rgb"
        )
    except ImageError as exc:
        return task.index, None, f"[{exc.kind}] {exc.reason}"
    return task.index, prepare_image(image, task.pipeline, task.size, task.resize), ""


@dataclass
class CachedImages:
    """Decoded, prepared uint8 images of one split (in memory or a memory-mapped file)."""

    images: np.ndarray  # N×size×size×C uint8
    labels: np.ndarray  # N int
    files: list[str]  # the files kept, in order
    skipped: dict[str, str] = field(default_factory=dict)  # file → why it was skipped

    def __len__(self) -> int:
        return len(self.files)


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def load_split(
    split: Split,
    *,
    pipeline: Pipeline,
    size: int,
    resize: str,
    channels: int,
    cache: str = "auto",
    cache_file: Path | None = None,
    workers: int | None = None,
    stored_channels: int = 3,
    log: Callable[[str], None] = print,
) -> CachedImages:
    """Decode every file of ``split`` once (a thread per core) into a uint8 cache.

    ``cache``: ``"memory"``, ``"disk"`` (``cache_file``, memory-mapped) or ``"auto"`` (memory
    when the images take at most a quarter of the RAM). ``stored_channels``: 1 when the files
    were preprocessed to one channel (read as such, not as RGB copies).
    """
    shape = (len(split), size, size, channels)
    needed = int(np.prod(shape))
    on_disk = cache == "disk" or (cache == "auto" and needed > MEMORY_SHARE * memory_bytes())
    if on_disk:
        if cache_file is None:
            raise ParameterError("a cache file is needed to cache on disk")
        images = _disk_cache(cache_file, shape)
        log(f"caching {len(split)} images on disk ({needed / 1024**2:.0f} MiB): {cache_file}")
    else:
        images = np.empty(shape, np.uint8)
    gray = stored_channels == 1
    tasks = [LoadTask(i, f, pipeline, size, resize, gray) for i, f in enumerate(split.files)]
    ok = np.zeros(len(split), bool)
    skipped = {}
    # Threads, not processes: OpenCV releases the GIL while decoding and resizing, and the
    # pixels need not be pickled back (nor a script's __main__ re-imported by workers).
    with ThreadPoolExecutor(max(1, default_workers() if workers is None else workers)) as pool:
        results = list(pool.map(load_one, tasks))
    for index, image, error in results:
        if image is None:
            skipped[split.files[index]] = error
            log(f"cvprep: skipping {split.files[index]}: {error}")
        elif image.shape != shape[1:]:
            skipped[split.files[index]] = (
                f"has {image.shape[-1]} channels after --ops, not {channels}"
            )
        else:
            images[index] = image
            ok[index] = True
    kept = np.flatnonzero(ok)
    for row, index in enumerate(kept):  # close the gaps of skipped files, in place
        if row != index:
            images[row] = images[index]
    labels = np.asarray(split.labels, np.int64)[kept]
    return CachedImages(images[: len(kept)], labels, [split.files[i] for i in kept], skipped)


def _disk_cache(cache_file: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A new memory-mapped uint8 cache of ``shape`` in ``cache_file``."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.uint8, shape=shape)


def resized(cached: CachedImages, size: int, cache_file: Path | None = None) -> CachedImages:
    """``cached`` at ``size`` × ``size`` (area interpolation, as the saved model resizes), for
    the smaller stages of progressive resizing; in memory, or in ``cache_file`` when
    ``cached`` is on disk."""
    shape = (len(cached), size, size, cached.images.shape[-1])
    on_disk = isinstance(cached.images, np.memmap) and cache_file is not None
    images = _disk_cache(cache_file, shape) if on_disk else np.empty(shape, np.uint8)
    for index, image in enumerate(cached.images):
        images[index] = ops.resize(image, size)
    return replace(cached, images=images)


# --------------------------------------------------------------------------- tf.data
@dataclass(frozen=True)
class Inputs:
    """What one phase fits on: tf.data training batches (reshuffled each epoch) and
    validation batches, ``steps`` training batches an epoch."""

    train: Any
    val: Any
    steps: int


def encode_labels(labels: Any, num_classes: int) -> Any:
    import tensorflow as tf

    if num_classes > 2:
        return tf.one_hot(labels, num_classes)
    return tf.cast(labels, tf.float32)


def make_dataset(
    cached: CachedImages,
    *,
    batch_size: int,
    num_classes: int,
    training: bool = False,
    augment: str = "none",
    seed: int = 0,
    drop_remainder: bool = False,
) -> Any:
    """Batches of ``(float32 images in [0, 255], labels)`` read from the cache.

    ``training``: reshuffled every epoch and augmented on the fly (whole batches at once).
    """
    import tensorflow as tf

    images, labels = cached.images, cached.labels.astype(np.int32)
    exact = drop_remainder  # every batch full: a static batch size (JAX data parallelism)
    shape = (batch_size if exact else None, *images.shape[1:])

    def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(indices)  # sequential reads from a memory-mapped cache
        return np.asarray(images[order]), labels[order]

    def read(indices: Any) -> tuple[Any, Any]:
        batch, batch_labels = tf.numpy_function(gather, [indices], (tf.uint8, tf.int32))
        batch.set_shape(shape)
        batch_labels.set_shape(shape[:1])
        return tf.cast(batch, tf.float32), encode_labels(batch_labels, num_classes)

    dataset = tf.data.Dataset.range(len(cached))
    if training:
        dataset = dataset.shuffle(len(cached), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=exact)
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    layers = to_keras_layers(get_preset(augment), seed) if training else []
    if layers:

        def augment_batch(batch: Any, batch_labels: Any) -> tuple[Any, Any]:
            for layer in layers:
                batch = layer(batch, training=True)
            return batch, batch_labels

        dataset = dataset.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return finish_pipeline(dataset, deterministic=not training)


def finish_pipeline(dataset: Any, *, deterministic: bool = True) -> Any:
    """``dataset`` prefetched, with tf.data's autotuning thread off.

    That thread sleeps in doubling periods (10 ms, 20 ms, ... up to a minute), and an
    iterator's teardown waits for its next wake-up: an epoch, a validation pass or a whole
    ``fit`` then ends when it wakes, not when the data does (measured: validation passes of
    3.8-4.1 s returned at 5.1 s, a 16 s fit at 22.6 s). Without it, ``AUTOTUNE`` still runs
    one call per core and prefetching still grows its own buffer.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
