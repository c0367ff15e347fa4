"""A frozen backbone's phase on cached features: the backbone runs once per image and view,
not once per image and epoch.

While the backbone is frozen (and kept in inference mode) its pooled output for an image
never changes, so ``fit`` computes it once for a few fixed views of every training image
(the image, its mirror, then copies with the run's augmentation) and once for every
validation image, and trains the head on those vectors. Each epoch sees every training image
once, in one of its views drawn at random. Fine-tuning then runs on images, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvprep.training.data import CachedImages, make_dataset
from cvprep.training.plan import TrainPlan

BATCH = 64  # inference only: larger batches than training's fill the cores better


@dataclass(frozen=True)
class Features:
    """Pooled backbone outputs: ``vectors`` views × images × channels, float32."""

    vectors: np.ndarray
    labels: np.ndarray  # views × images (× classes above two), as the image batches have them


def split_at_pooling(core: Any) -> tuple[Any, Any]:
    """``core`` (image → backbone → pooling → dropout → prediction) as the feature extractor
    (image → pooled vector) and the head (vector → prediction); both share ``core``'s layers,
    so training the head trains ``core``."""
    import keras

    layers = core.layers
    pool = next(
        i
        for i, layer in enumerate(layers)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    )
    extractor = keras.Model(core.input, layers[pool].output, name="features")
    vector = keras.Input(layers[pool].output.shape[1:], name="feature_vector")
    x = vector
    for layer in layers[pool + 1 :]:
        x = layer(x)
    return extractor, keras.Model(vector, x, name="head")


def compute_features(
    extractor: Any, cached: CachedImages, plan: TrainPlan, views: int, seed: int
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
    # A traced function: 1.5-2x the images/s of calling the model eagerly (measured, README).
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    vectors, labels = [], []
    for source in sources:
        batches = [(np.asarray(forward(x), np.float32), np.asarray(y)) for x, y in source]
        vectors.append(np.concatenate([v for v, _ in batches]))
        labels.append(np.concatenate([y for _, y in batches]))
    return Features(np.stack(vectors), np.stack(labels))


def feature_datasets(
    core: Any,
    plan: TrainPlan,
    cached: dict[str, CachedImages],
    log: Callable[[str], None],
) -> tuple[Any, Any, Any, int]:
    """The head, and its training and validation data: (head, train, val, steps)."""
    import time

    config = plan.config
    extractor, head = split_at_pooling(core)
    start = time.perf_counter()
    train = compute_features(extractor, cached["train"], plan, config.feature_views, config.seed)
    val = compute_features(extractor, cached["val"], plan, 1, config.seed)
    log(
        f"backbone features of {len(cached['train'])} training images × {config.feature_views} "
        f"views and {len(cached['val'])} validation images computed once "
        f"({time.perf_counter() - start:.0f} s): the frozen phase trains the head on them"
    )
    batch = plan.batch_per_process
    steps = -(-len(cached["train"]) // batch)
    return head, _train_data(train, plan, batch), _val_data(val, batch), steps


def _train_data(features: Features, plan: TrainPlan, batch: int) -> Any:
    """Every image once an epoch, reshuffled, each in one of its views drawn at random."""
    import tensorflow as tf

    views, count = features.labels.shape[:2]
    vectors = tf.constant(features.vectors)
    labels = tf.constant(features.labels)
    seed = plan.config.seed
    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    drawn = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    pairs = tf.data.Dataset.zip(drawn.map(lambda r: r % views), indices)

    def gather(view: Any, index: Any) -> tuple[Any, Any]:
        where = tf.stack([view, index], axis=-1)
        return tf.gather_nd(vectors, where), tf.gather_nd(labels, where)

    return pairs.batch(batch).map(gather).prefetch(tf.data.AUTOTUNE)


def _val_data(features: Features, batch: int) -> Any:
    import tensorflow as tf

    pairs = (features.vectors[0], features.labels[0])
    return tf.data.Dataset.from_tensor_slices(pairs).batch(batch)
