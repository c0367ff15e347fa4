"""The frozen part of a backbone, run once per image and view instead of once per epoch.

While a layer is frozen (and kept in inference mode) its output for an image never changes,
so ``fit`` computes it once for a few fixed views of every training image (the image, its
mirror, then copies with the run's augmentation) and once for every validation image, and
trains what is above it on those arrays. Each epoch sees every training image once, in one
of its views drawn at random.

- Phase 1 (the head on the frozen backbone) trains on the backbone's pooled output.
- Fine-tuning that unfreezes only the top of the backbone (``--unfreeze N``) trains those
  layers and the head on the activations at the input of the lowest unfrozen layer (the
  *cut*). Then phase 1's pooled vectors come from those activations through the (still
  frozen) top, so the expensive lower layers run once per image and view for both phases.
  Fine-tuning every layer (``--unfreeze 0``), a backbone whose top cannot be cut at one
  tensor (a skip connection crosses it), or activations too large for memory: fine-tuning
  runs on images, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cvprep.training.data import (
    MEMORY_SHARE,
    CachedImages,
    Inputs,
    finish_pipeline,
    make_dataset,
    memory_bytes,
)
from cvprep.training.plan import TrainPlan

BATCH = 64  # inference only: larger batches than training's fill the cores better
# Activations are kept in float16: half the memory, and a backbone's activations (ReLU6 in
# the MobileNets) lose nothing a fine-tuning step would notice; the trainee reads float32.
ACTIVATION_DTYPE = np.float16


@dataclass(frozen=True)
class Features:
    """Frozen outputs: ``arrays`` views × images × (the output's shape); labels views ×
    images (× classes above two), as the image batches have them."""

    arrays: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Trainee:
    """A model and what it fits on."""

    model: Any
    inputs: Inputs


def split_at_pooling(core: Any) -> tuple[Any, Any]:
    """``core`` (image → backbone → pooling → dropout → prediction) as the feature extractor
    (image → pooled vector) and the head (vector → prediction); both share ``core``'s layers,
    so training the head trains ``core``."""
    import keras

    layers = core.layers
    pool = _index(layers, lambda layer: isinstance(layer, keras.layers.GlobalAveragePooling2D))
    extractor = keras.Model(core.input, layers[pool].output, name="features")
    return extractor, _chain(layers[pool + 1 :], layers[pool].output.shape[1:], "head")


@dataclass(frozen=True)
class Cut:
    """``core`` split inside its backbone where fine-tuning's unfrozen layers start:
    ``extractor`` (image → activations at the cut), ``pooled`` (activations → the pooled
    vector phase 1 trains on) and ``upper`` (activations → prediction: what fine-tuning
    trains). All share ``core``'s layers."""

    extractor: Any
    pooled: Any
    upper: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.extractor.output.shape[1:])


def cut_backbone(core: Any, base: Any, unfreeze: int) -> Cut | None:
    """``core`` cut below the top ``unfreeze`` layers of ``base``; None when every layer is
    unfrozen or a skip connection crosses the cut."""
    import keras

    if not 0 < unfreeze < len(base.layers):
        return None
    first = base.layers[len(base.layers) - unfreeze]
    cut = first.input
    if isinstance(cut, (list, tuple)):  # a merge layer: two tensors cross the cut
        return None
    try:
        top = keras.Model(cut, base.output, name="backbone_top")
    except ValueError:  # the top also reads a tensor from below the cut
        return None
    layers = core.layers
    at = _index(layers, lambda layer: layer is base)
    bottom = keras.Model(base.input, cut, name="backbone_bottom")
    activations = bottom(layers[at - 1].output, training=False)
    extractor = keras.Model(core.input, activations, name="activations")
    after = layers[at + 1 :]
    pool = _index(after, lambda layer: isinstance(layer, keras.layers.GlobalAveragePooling2D))
    shape = tuple(cut.shape[1:])
    return Cut(
        extractor,
        _chain([top, *after[: pool + 1]], shape, "pooled"),
        _chain([top, *after], shape, "upper"),
    )


def _index(layers: list[Any], test: Callable[[Any], bool]) -> int:
    return next(i for i, layer in enumerate(layers) if test(layer))


def _chain(layers: list[Any], shape: Any, name: str) -> Any:
    """A model applying ``layers`` one after the other to an input of ``shape``."""
    import keras

    inputs = keras.Input(tuple(shape), name=f"{name}_input")
    x = inputs
    for layer in layers:
        # A backbone part stays in inference mode (BatchNormalization), as in ``core``.
        x = layer(x, training=False) if isinstance(layer, keras.Model) else layer(x)
    return keras.Model(inputs, x, name=name)


def compute_features(
    extractor: Any,
    cached: CachedImages,
    plan: TrainPlan,
    views: int,
    seed: int,
    dtype: Any = np.float32,
) -> Features:
    """The extractor's output for ``views`` views of every image (1: the image itself)."""
    import tensorflow as tf

    classes = plan.num_classes
    plain = make_dataset(cached, batch_size=BATCH, num_classes=classes)
    sources = [plain, plain.map(lambda x, y: (tf.reverse(x, axis=[2]), y))][:views]
    for view in range(2, views):
        sources.append(
            make_dataset(
                cached,
                batch_size=BATCH,
                num_classes=classes,
                training=True,
                augment=plan.config.augment,
                seed=seed + view,
            )
        )
    forward = traced_inference(extractor)
    arrays, labels = [], []
    for source in sources:
        batches = [(np.asarray(forward(x), dtype), np.asarray(y)) for x, y in source]
        arrays.append(np.concatenate([a for a, _ in batches]))
        labels.append(np.concatenate([y for _, y in batches]))
    return Features(np.stack(arrays), np.stack(labels))


def traced_inference(model: Any) -> Callable[[Any], Any]:
    """``model`` in inference mode, as a traced function under TensorFlow (other backends,
    e.g. JAX for data parallelism, call it as it is)."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        return lambda x: model(x, training=False)
    # A traced function: 1.5-2x the images/s of calling the model eagerly (measured, README).
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def _through(model: Any, features: Features) -> Features:
    """``model`` applied to every array of ``features`` (in float32)."""
    forward = traced_inference(model)
    arrays = [
        np.concatenate(
            [
                np.asarray(forward(view[start : start + BATCH].astype(np.float32)), np.float32)
                for start in range(0, len(view), BATCH)
            ]
        )
        for view in features.arrays
    ]
    return Features(np.stack(arrays), features.labels)


class FrozenBackbone:
    """The cached frozen outputs of a backbone run, computed once, when first needed."""

    def __init__(
        self,
        core: Any,
        base: Any,
        plan: TrainPlan,
        cached: dict[str, CachedImages],
        log: Callable[[str], None],
    ) -> None:
        self.plan, self.cached, self.log = plan, cached, log
        self.extractor, self.head = split_at_pooling(core)
        unfreeze = plan.config.unfreeze
        self.cut = cut_backbone(core, base, unfreeze)
        if self.cut is None and 0 < unfreeze < len(base.layers):
            log(
                f"fine-tuning runs on images: a skip connection crosses the cut below the top "
                f"{unfreeze} layers of {base.name} (another --unfreeze can avoid it)"
            )
        if self.cut is not None and not self._activations_fit(self.cut):
            self.cut = None

    def head_trainee(self) -> Trainee:
        """Phase 1: the head, on pooled vectors."""
        if self.cut is None:
            train, val = self._computed(self.extractor, np.float32, "pooled backbone features")
        else:
            train, val = (_through(self.cut.pooled, f) for f in self._activations)
        return self._trainee(self.head, train, val)

    def fine_tuning_trainee(self) -> Trainee | None:
        """Fine-tuning: the unfrozen top and the head, on activations at the cut (None:
        fine-tuning runs on images)."""
        if self.cut is None:
            return None
        return self._trainee(self.cut.upper, *self._activations)

    @cached_property
    def _activations(self) -> tuple[Features, Features]:
        assert self.cut is not None
        return self._computed(
            self.cut.extractor, ACTIVATION_DTYPE, "activations below the unfrozen layers"
        )

    def _computed(self, extractor: Any, dtype: Any, what: str) -> tuple[Features, Features]:
        config, cached = self.plan.config, self.cached
        start = time.perf_counter()
        train = compute_features(
            extractor, cached["train"], self.plan, config.feature_views, config.seed, dtype
        )
        val = compute_features(extractor, cached["val"], self.plan, 1, config.seed, dtype)
        self.log(
            f"{what} of {len(cached['train'])} training images × {config.feature_views} "
            f"views and {len(cached['val'])} validation images computed once "
            f"({time.perf_counter() - start:.0f} s): the frozen layers do not run again"
        )
        return train, val

    def _activations_fit(self, cut: Cut) -> bool:
        config, cached = self.plan.config, self.cached
        images = config.feature_views * len(cached["train"]) + len(cached["val"])
        needed = images * int(np.prod(cut.shape)) * np.dtype(ACTIVATION_DTYPE).itemsize
        if needed <= MEMORY_SHARE * memory_bytes():
            return True
        self.log(
            f"fine-tuning runs on images: the activations below the unfrozen layers would "
            f"take {needed / 1024**3:.1f} GiB (lower --feature-views to cache them)"
        )
        return False

    def _trainee(self, model: Any, train: Features, val: Features) -> Trainee:
        batch = self.plan.batch_per_process
        steps = -(-train.labels.shape[1] // batch)
        inputs = Inputs(train_data(train, self.plan, batch), _val_data(val, batch), steps)
        return Trainee(model, inputs)


def train_data(features: Features, plan: TrainPlan, batch: int) -> Any:
    """Every image once an epoch, reshuffled, each in one of its views drawn at random."""
    import tensorflow as tf

    views, count = features.labels.shape[:2]
    arrays = tf.constant(features.arrays)
    labels = tf.constant(features.labels)
    seed = plan.config.seed
    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    drawn = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    pairs = tf.data.Dataset.zip(drawn.map(lambda r: r % views), indices)

    def gather(view: Any, index: Any) -> tuple[Any, Any]:
        where = tf.stack([view, index], axis=-1)
        return tf.cast(tf.gather_nd(arrays, where), tf.float32), tf.gather_nd(labels, where)

    return finish_pipeline(pairs.batch(batch).map(gather))


def _val_data(features: Features, batch: int) -> Any:
    import tensorflow as tf

    pairs = (features.arrays[0], features.labels[0])
    dataset = tf.data.Dataset.from_tensor_slices(pairs).batch(batch)
    return finish_pipeline(dataset.map(lambda x, y: (tf.cast(x, tf.float32), y)))
