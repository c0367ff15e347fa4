"""The training plan: a :class:`~cvprep.training.config.TrainConfig` resolved once against DATA.

:func:`resolve_plan` reads DATA once (its splits and class folders, and the preprocessing record
through the one reader, :func:`cvprep.dataset.preprocess.read_preprocessing_record`), applies
the model's recipe, parses ``--ops`` and builds the full pipeline in one visit to
:mod:`cvprep.pipeline`, counts channels, and decides where validation comes from. The result
is frozen; every step of a run (caching, the network, fitting, the final test, the run folder
and its report) reads it, and nothing re-parses a spec or re-reads DATA's record. Resolving
writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.dataset.preprocess import PreprocessingRecord, read_preprocessing_record
from cvprep.errors import CvprepError, ParameterError
from cvprep.files import require_folder
from cvprep.params import fail
from cvprep.pipeline import Pipeline, SpecError
from cvprep.training.compute import resolve_precision
from cvprep.training.config import IMBALANCE_RATIO, Stage, TrainConfig, resize_stages
from cvprep.training.data import Split, carve_validation, discover, process_shard

SMALL_IMAGE = 64  # cnn: images no larger than this train at their own size
SIZE_SAMPLE = 64  # training files whose headers decide it


@dataclass(frozen=True)
class Preprocessing:
    """The run's pipelines, parsed once, and what they do to the number of channels."""

    recorded: Pipeline  # DATA's record: already applied to its files
    ops: Pipeline  # --ops: applied while caching, and inside the saved model
    full: Pipeline  # recorded, then --ops: what the saved model applies to raw images
    ops_text: str  # --ops in canonical form (config.json)
    full_text: str  # the full pipeline in canonical form (the report)
    full_json: str  # pipeline.json
    stored_channels: int  # channels of DATA's files (1 after grayscale or edges)
    channels: int  # channels after --ops: the network's input


@dataclass(frozen=True)
class Validation:
    """Where the validation images come from: ``val/``, or a seeded share of ``train/``."""

    source: str  # "val" or "train"
    images: int
    fraction: float | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Weighting:
    """How the training loss weighs each class: ``class_weight`` resolved against the
    training split (``auto``: balanced when the classes are imbalanced, see
    :data:`~cvprep.training.config.IMBALANCE_RATIO`)."""

    mode: str  # "balanced" or "none"
    asked: str  # the setting: "auto", "balanced" or "none"
    counts: tuple[int, ...]  # training images per class (validation carved out)
    weights: tuple[float, ...]  # per class, 1.0 each for "none"

    @property
    def ratio(self) -> float:
        """Images of the largest class over those of the smallest (inf: a class has none)."""
        smallest = min(self.counts)
        return max(self.counts) / smallest if smallest else float("inf")

    def keras(self) -> dict[int, float] | None:
        """``class_weight`` for ``model.fit``; None when every weight is 1."""
        return dict(enumerate(self.weights)) if self.mode == "balanced" else None

    def describe(self, classes: Sequence[str]) -> str:
        """For the log: ``balanced (auto: 4.0:1 imbalance): cat 0.625, dog 2.5``."""
        why = f"{self.asked}: {self.ratio:.1f}:1 imbalance" if self.asked == "auto" else "asked"
        if self.mode == "none":
            return f"none ({why})"
        pairs = ", ".join(f"{c} {w:.3g}" for c, w in zip(classes, self.weights, strict=True))
        return f"balanced ({why}): {pairs}"

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "images": dict(zip(classes, self.counts, strict=True)),
            "weights": dict(zip(classes, self.weights, strict=True)),
        }


def resolve_weighting(asked: str, labels: Sequence[int], num_classes: int) -> Weighting:
    """``class_weight`` against the training labels: scikit-learn's ``"balanced"`` weights,
    ``n_images / (n_classes × images_of_class)``, so that every class weighs the same in the
    loss (a class without images gets 1.0: it never occurs).

    Examples
    --------
    >>> w = resolve_weighting("auto", [0, 0, 0, 0, 1], 2)
    >>> w.mode, w.weights, w.keras()
    ('balanced', (0.625, 2.5), {0: 0.625, 1: 2.5})
    >>> resolve_weighting("auto", [0, 0, 0, 1, 1, 1, 1], 2).mode  # 4:3
    'none'
    """
    from sklearn.utils.class_weight import compute_class_weight

    counts = tuple(int(n) for n in np.bincount(np.asarray(labels, int), minlength=num_classes))
    weighting = Weighting("none", asked, counts, (1.0,) * num_classes)
    balanced = asked == "balanced" or (asked == "auto" and weighting.ratio >= IMBALANCE_RATIO)
    if not balanced:
        return weighting
    present = np.flatnonzero(counts)
    values = compute_class_weight("balanced", classes=present, y=np.asarray(labels, int))
    weights = np.ones(num_classes)
    weights[present] = values
    return Weighting("balanced", asked, counts, tuple(round(float(w), 6) for w in weights))


@dataclass(frozen=True)
class TrainPlan:
    """Everything a run needs to know, decided before it starts."""

    config: TrainConfig  # every setting, the recipe's defaults filled in
    classes: tuple[str, ...]
    record: PreprocessingRecord
    preprocessing: Preprocessing
    train: Split  # this process's share, without the images carved out for validation
    val: Split
    test: Split | None  # scored once, at the end
    validation: Validation
    weighting: Weighting

    @property
    def data(self) -> Path:
        return Path(self.config.data)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Phase 1's input sizes (progressive resizing: smaller ones first)."""
        config = self.config
        return resize_stages(config.epochs, config.size, bool(config.progressive))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def batch_per_process(self) -> int:
        return self.config.batch_size // self.config.num_processes

    @property
    def raw_test_folder(self) -> Path | None:
        """The raw test images the saved model is scored on: DATA/test, or, for a
        preprocessed DATA, the test folder of the raw images it was made from."""
        if not self.record.spec:
            return self.data / "test"
        return self.record.source / "test" if self.record.source else None

    def settings(self) -> dict[str, Any]:
        """What ``config.json`` records (its keys are those of every cvprep 0.2 run)."""
        return {
            **asdict(self.config),
            "ops": self.preprocessing.ops_text,
            "data_spec": self.record.spec,
            "classes": list(self.classes),
            "image_size": self.size,
            "validation": self.validation.to_dict(),
            "class_weights": self.weighting.to_dict(self.classes),
        }


def resolve_plan(config: TrainConfig) -> TrainPlan:
    """Resolve ``config`` against its DATA folder into a frozen :class:`TrainPlan`.

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset, split
    >>> from cvprep.training import TrainConfig
    >>> from cvprep.training.plan import resolve_plan
    >>> _ = split(make_shapes_dataset(tmp / "shapes", per_class=10, size=48), tmp / "data",
    ...           ratios="0.8,0,0.2", workers=0)
    >>> plan = resolve_plan(TrainConfig(str(tmp / "data"), str(tmp / "run"), ops="grayscale"))
    >>> plan.classes, plan.config.epochs, plan.preprocessing.channels
    (('angular', 'round'), 46, 1)
    >>> plan.validation
    Validation(source='train', images=2, fraction=0.1, seed=1337)
    """
    config = replace(config.resolved(), precision=resolve_precision(config.precision))
    _check_weights(config)
    data = require_folder(config.data, "data")
    record = read_preprocessing_record(data)
    classes, splits = discover(data)
    preprocessing = _preprocessing(record, config.ops)
    train, val, validation = _validation(splits, config)
    # From every process's training images, so that all processes weigh alike.
    weighting = resolve_weighting(config.class_weight, train.labels, len(classes))
    if config.num_processes > 1:
        train = process_shard(train, config.seed, config.num_processes, config.process_id)
    config = _small_images(config, train)
    return TrainPlan(
        config,
        tuple(classes),
        record,
        preprocessing,
        train,
        val,
        splits.get("test"),
        validation,
        weighting,
    )


def _small_images(config: TrainConfig, train: Split) -> TrainConfig:
    """``cnn`` without ``img_size``: small images (digits, MNIST, CIFAR-10) train at their
    own size, at least 32, not upscaled to 150 pixels. (``classic`` is the course's network,
    150 pixels and all.)"""
    if config.img_size or config.model != "cnn":
        return config
    largest = largest_side(train.files[:: max(1, len(train) // SIZE_SAMPLE)])
    if largest is None or largest > SMALL_IMAGE:
        return config
    return replace(config, img_size=max(32, largest))


def largest_side(files: Sequence[str]) -> int | None:
    """The largest height or width among ``files``, read from their headers (None when no
    header can be read: the decoder reports those files later)."""
    from PIL import Image

    sides = []
    for path in files:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return max(sides) if sides else None


def _check_weights(config: TrainConfig) -> None:
    if config.weights not in ("imagenet", "none") and not Path(config.weights).is_file():
        raise fail("weights", "imagenet, none or a weights file", config.weights)


def _preprocessing(record: PreprocessingRecord, ops: str | Pipeline) -> Preprocessing:
    """The one visit to :mod:`cvprep.pipeline`: both specs parsed, the full pipeline, its
    texts, and the channels after each part (run once on a tiny image)."""
    try:
        parsed = ops if isinstance(ops, Pipeline) else Pipeline.parse(ops)
    except SpecError as exc:
        raise ParameterError(f"`ops`: {exc}") from None
    try:
        recorded = Pipeline.parse(record.spec)
    except SpecError as exc:  # a damaged record: not the caller's argument
        raise CvprepError(f"the preprocessing record of DATA cannot be read: {exc}") from None
    full = Pipeline([*recorded.steps, *parsed.steps])
    stored = recorded.apply(np.zeros((8, 8, 3), np.uint8))
    final = parsed.apply(stored)
    return Preprocessing(
        recorded,
        parsed,
        full,
        parsed.to_text(),
        full.to_text(),
        full.to_json(indent=2),
        _channels(stored),
        _channels(final),
    )


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def _validation(splits: dict[str, Split], config: TrainConfig) -> tuple[Split, Split, Validation]:
    """``val/``, or a stratified, seeded share of ``train/`` (never ``test/``)."""
    if "val" in splits and len(splits["val"]):
        return splits["train"], splits["val"], Validation("val", len(splits["val"]))
    train, val = carve_validation(splits["train"], config.val_fraction, config.seed)
    return train, val, Validation("train", len(val), config.val_fraction, config.seed)
