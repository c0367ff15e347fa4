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
from cvprep.training.config import TrainConfig
from cvprep.training.data import Split, carve_validation, discover, process_shard


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
    (('angular', 'round'), 60, 1)
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
    if config.num_processes > 1:
        train = process_shard(train, config.seed, config.num_processes, config.process_id)
    return TrainPlan(
        config, tuple(classes), record, preprocessing, train, val, splits.get("test"), validation
    )


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
