"""Fitting a plan: phase 1 (the whole network, or the head on a frozen backbone), then, for
backbones, fine-tuning. Early stopping on the validation loss keeps the best weights; a
killed run resumes where it stopped (:mod:`cvprep.training.backup`); a loss that turns NaN
stops the run with a message that says so.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvprep.errors import CvprepError
from cvprep.io import atomic_write_bytes
from cvprep.training.data import CachedImages, Inputs, make_dataset, resized
from cvprep.training.features import FrozenBackbone, Trainee
from cvprep.training.models import (
    NETWORK_VERSIONS,
    build_training_model,
    for_saving,
    unfreeze_top,
)
from cvprep.training.plan import TrainPlan
from cvprep.training.report import read_history
from cvprep.training.run import BACKUP_FOLDER, CACHE_FOLDER, CHECKPOINT_FILE, HISTORY_FILE

PHASE1_WEIGHTS = "phase1-done.weights.h5"
PHASE1_RECORD = "phase1-done.json"  # how many epochs phase 1 ran (early stopping may end it)


class TrainingDivergedError(CvprepError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Leg:
    """Epochs of a phase on one input size (progressive resizing: smaller sizes first)."""

    epochs: int
    size: int
    inputs: Inputs


@dataclass(frozen=True)
class Phase:
    name: str  # as the log lines call it
    folder: str  # of its backup, under backup/
    legs: tuple[Leg, ...]  # in order; the last at the plan's input size
    learning_rate: float
    first_epoch: int  # epochs run before this phase
    settings: dict[str, Any]  # what its saved states depend on (state_settings)

    @property
    def epochs(self) -> int:
        return sum(leg.epochs for leg in self.legs)


def fit_phases(
    plan: TrainPlan, cached: dict[str, CachedImages], verbose: int, log: Callable[[str], None]
) -> tuple[Any, dict[str, list[float]]]:
    """Train the plan's network on the cached images; returns it and the history."""
    config, backup = plan.config, plan.out / BACKUP_FOLDER
    inputs = _inputs(plan, cached)
    if not any(backup.glob("*")):  # a fresh run, not a resumed one
        (plan.out / HISTORY_FILE).unlink(missing_ok=True)
    strategy = _strategy(config.distribute)
    with strategy.scope():
        core, base = build_training_model(plan)
        _compile(core, plan, config.learning_rate, config.epochs * inputs.steps)
    frozen = _frozen_backbone(core, base, plan, cached, log)
    trainee = _phase_one_trainee(core, frozen, plan, cached, inputs)
    first = _phase_one(core, plan, trainee, verbose, log)
    if base is not None and config.fine_tune_epochs > 0:
        with strategy.scope():
            unfreeze_top(base, config.unfreeze)
            cached_trainee = frozen.fine_tuning_trainee() if frozen else None
            trainee = cached_trainee or Trainee(core, inputs)
            rate, epochs = config.fine_tune_learning_rate, config.fine_tune_epochs
            _compile(trainee.model, plan, rate, epochs * trainee.inputs.steps)
        legs = (Leg(epochs, plan.size, trainee.inputs),)
        phase = Phase("fine-tuning", "phase2", legs, rate, first, state_settings(plan, True))
        _fit(trainee.model, plan, phase, verbose, log)
    return for_saving(core, plan), read_history(plan.out / HISTORY_FILE)


def _inputs(plan: TrainPlan, cached: dict[str, CachedImages]) -> Inputs:
    config, per_process = plan.config, plan.batch_per_process
    several = config.num_processes > 1  # full batches everywhere, also to validate
    train = make_dataset(
        cached["train"],
        batch_size=per_process,
        num_classes=plan.num_classes,
        training=True,
        augment=config.augment,
        seed=config.seed,
        drop_remainder=several,
    )
    val = make_dataset(
        cached["val"], batch_size=per_process, num_classes=plan.num_classes, drop_remainder=several
    )
    count = len(cached["train"])
    return Inputs(train, val, count // per_process if several else -(-count // per_process))


def _image_legs(
    plan: TrainPlan, cached: dict[str, CachedImages], inputs: Inputs, log: Callable[[str], None]
) -> tuple[Leg, ...]:
    """Phase 1 on images: one leg per input size of the plan; the smaller sizes train and
    validate on resized copies of the cached images (made here, once)."""
    legs = []
    for stage in plan.stages:
        if stage.size != plan.size:
            folder = plan.out / CACHE_FOLDER
            smaller = {
                name: resized(images, stage.size, folder / f"{name}-{stage.size}.npy")
                for name, images in cached.items()
            }
            legs.append(Leg(stage.epochs, stage.size, _inputs(plan, smaller)))
        else:
            legs.append(Leg(stage.epochs, stage.size, inputs))
    if len(legs) > 1:
        parts, end = [], 0
        for leg in legs:
            begin, end = end + 1, end + leg.epochs
            parts.append(
                f"{begin}-{end} at {leg.size} px" if end > begin else f"{end} at {leg.size} px"
            )
        log(f"progressive resizing: epochs {', '.join(parts)}")
    return tuple(legs)


def _frozen_backbone(
    core: Any,
    base: Any,
    plan: TrainPlan,
    cached: dict[str, CachedImages],
    log: Callable[[str], None],
) -> FrozenBackbone | None:
    """The backbone's frozen part cached once per image and view (``--feature-views``);
    None: every phase runs on images (no backbone, no views, or several processes)."""
    if base is None or not plan.config.feature_views or plan.config.num_processes > 1:
        return None
    return FrozenBackbone(core, base, plan, cached, log)


def _phase_one_trainee(
    core: Any,
    frozen: FrozenBackbone | None,
    plan: TrainPlan,
    cached: dict[str, CachedImages],
    inputs: Inputs,
) -> Callable[[Callable[[str], None]], tuple[Any, tuple[Leg, ...]]]:
    """What phase 1 fits, and on what (made only when phase 1 runs): a frozen backbone's
    head on cached features, else the whole network on images (progressive resizing:
    smaller images first)."""
    if frozen is None:
        return lambda log: (core, _image_legs(plan, cached, inputs, log))

    def on_features(log: Callable[[str], None]) -> tuple[Any, tuple[Leg, ...]]:
        trainee = frozen.head_trainee()
        with _strategy(plan.config.distribute).scope():
            steps = plan.config.epochs * trainee.inputs.steps
            _compile(trainee.model, plan, plan.config.learning_rate, steps)
        return trainee.model, (Leg(plan.config.epochs, plan.size, trainee.inputs),)

    return on_features


def _phase_one(
    core: Any,
    plan: TrainPlan,
    trainee: Callable[[Callable[[str], None]], tuple[Any, tuple[Leg, ...]]],
    verbose: int,
    log: Callable[[str], None],
) -> int:
    """Phase 1, unless a whole record of its end is on disk; returns its epoch count."""
    from cvprep.training.backup import changed_settings, load_weights, save_weights

    backup, settings = plan.out / BACKUP_FOLDER, state_settings(plan, False)
    done, record = backup / PHASE1_WEIGHTS, backup / PHASE1_RECORD
    if done.exists():
        changed = changed_settings(_read_record(record).get("settings"), settings)
        problem = None if changed else load_weights(core, done)
        if changed is None and problem is None:
            return _phase_one_epochs(record, plan)
        why = f"was made with other settings ({changed})" if changed else f"is damaged ({problem})"
        log(f"warning: {done} {why} and was removed: phase 1 runs again")
        done.unlink()
        record.unlink(missing_ok=True)
    config = plan.config
    model, legs = trainee(log)
    phase = Phase("phase 1", "phase1", legs, config.learning_rate, 0, settings)
    _fit(model, plan, phase, verbose, log)
    epochs = len(read_history(plan.out / HISTORY_FILE).get("loss", [])) or config.epochs
    save_weights(core, done)
    atomic_write_bytes(record, json.dumps({"epochs": epochs, "settings": settings}).encode())
    return epochs


def state_settings(plan: TrainPlan, fine_tuning: bool) -> dict[str, Any]:
    """The settings a phase's saved states depend on: a rerun that changes one of them
    cannot continue those states (:func:`cvprep.training.backup.discard_other_settings`)."""
    config = plan.config
    settings = {
        "data": config.data,
        "ops": plan.preprocessing.ops_text,
        "model": config.model,
        "network": NETWORK_VERSIONS.get(config.model),
        "alpha": config.alpha,
        "weights": config.weights,
        "img_size": plan.size,
        "progressive": bool(config.progressive),
        "feature_views": config.feature_views,
        "precision": config.precision,
    }
    return {**settings, "unfreeze": config.unfreeze} if fine_tuning else settings


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _phase_one_epochs(record: Path, plan: TrainPlan) -> int:
    try:
        return int(_read_record(record)["epochs"])
    except (KeyError, ValueError, TypeError):  # a run interrupted by cvprep 0.2
        return len(read_history(plan.out / HISTORY_FILE).get("loss", [])) or plan.config.epochs


def _strategy(distribute: bool) -> Any:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if distribute and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _schedule(plan: TrainPlan, learning_rate: float, total_steps: int) -> Any:
    """Warm-up over the first 5 % of the steps, then cosine decay to zero; or constant."""
    import keras

    if plan.config.schedule == "constant":
        return learning_rate
    warmup = max(1, total_steps // 20)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )


def _compile(model: Any, plan: TrainPlan, learning_rate: float, total_steps: int) -> None:
    import keras

    rate = _schedule(plan, learning_rate, total_steps)
    if plan.config.weight_decay:
        optimizer = keras.optimizers.AdamW(rate, weight_decay=plan.config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(rate)
    smoothing = plan.config.label_smoothing or 0.0
    if plan.num_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _fit(
    model: Any,
    plan: TrainPlan,
    phase: Phase,
    verbose: int,
    log: Callable[[str], None],
) -> None:
    """One phase, leg after leg, resumed from its newest whole backup; the backup goes when
    the phase is done."""
    from cvprep.training.backup import discard_other_settings, restore, trim_history

    folder = plan.out / BACKUP_FOLDER / phase.folder
    discard_other_settings(folder, phase.settings, phase.name, log)
    start = max(phase.first_epoch, restore(model, folder, phase.name, log))
    trim_history(plan.out / HISTORY_FILE, start)  # epochs after the restored state run again
    end = phase.first_epoch
    for leg in phase.legs:
        begin, end = end, end + leg.epochs
        if start >= end:
            continue  # a resumed run is past this leg
        callbacks = _callbacks(plan, phase, folder, leg, last=leg is phase.legs[-1], first=begin)
        with warnings.catch_warnings():
            # Keras cannot know the length of a tf.data pipeline and warns at every epoch's end.
            warnings.filterwarnings("ignore", message=".*ran out of data")
            model.fit(
                leg.inputs.train,
                validation_data=leg.inputs.val,
                epochs=end,
                initial_epoch=max(start, begin),
                callbacks=callbacks,
                # Training batches only: the validation loss (early stopping) stays unweighted.
                class_weight=plan.weighting.keras(),
                verbose=verbose,
                shuffle=False,  # tf.data already reshuffles every epoch
            )
        _check_converged(next(c for c in callbacks if hasattr(c, "diverged_at")), plan, phase)
        if model.stop_training:  # early stopping (only in the last leg)
            break
    shutil.rmtree(folder, ignore_errors=True)


def _callbacks(
    plan: TrainPlan, phase: Phase, folder: Path, leg: Leg, *, last: bool, first: int
) -> list[Any]:
    """History first and the backup last: a kill between them leaves a history row whose
    epoch is run again (and its row replaced), never a state without its row. Early
    stopping and the best checkpoint watch the last leg only: the validation loss of
    smaller images is not comparable with that of full-size ones."""
    import keras

    from cvprep.training.backup import BestCheckpoint, EpochBackup

    watchers = []
    if last:
        watchers = [
            # Not in the first half: a scheduled learning rate is still high there, and the
            # validation loss of a small set swings.
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=plan.config.patience,
                restore_best_weights=True,
                start_from_epoch=max(first, phase.first_epoch + phase.epochs // 2),
            ),
            BestCheckpoint(plan.out / CHECKPOINT_FILE),
        ]
    return [
        _history_logger(leg.size, plan.out / HISTORY_FILE),
        *watchers,
        _stop_on_nan(),
        EpochBackup(folder),
    ]


RECORD_COLUMNS = ("img_size", "seconds")


def _history_logger(size: int, history: Path) -> Any:
    """Keras' CSVLogger appending to ``history.csv``, with each epoch's input size and its
    seconds (training and validation) added to the row (not to the logs: the progress line
    stays as Keras prints it). Not when resuming a run whose history was started without
    these columns: its rows would no longer match its header."""
    import time

    import keras

    class HistoryLogger(keras.callbacks.CSVLogger):
        def __init__(self) -> None:
            super().__init__(str(history), append=True)
            self.started = time.perf_counter()
            header = _history_header(history)
            self.record = header is None or set(RECORD_COLUMNS) <= set(header)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            row = dict(logs or {})
            if self.record:
                row.update(img_size=size, seconds=round(time.perf_counter() - self.started, 2))
            super().on_epoch_end(epoch, row)

    return HistoryLogger()


def _history_header(path: Path) -> list[str] | None:
    """The column names of ``history.csv``; None when it has none yet."""
    try:
        with path.open() as handle:
            line = handle.readline().strip()
    except FileNotFoundError:
        return None
    return line.split(",") if line else None


def _stop_on_nan() -> Any:
    """Keras' TerminateOnNaN without its message on stdout (``--quiet`` and ``--json`` keep
    stdout clean; the run ends with :class:`TrainingDivergedError` instead)."""
    import keras

    class StopOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.model.stop_training = True

    return StopOnNaN()


def _check_converged(backup: Any, plan: TrainPlan, phase: Phase) -> None:
    """A NaN or infinite loss ends the run with a message, not with a NaN model; the backup
    goes too, so that the next run (with a lower learning rate) starts afresh."""
    if backup.diverged_at is None:
        return
    shutil.rmtree(plan.out / BACKUP_FOLDER, ignore_errors=True)
    option = "--learning-rate" if phase.first_epoch == 0 else "--fine-tune-learning-rate"
    raise TrainingDivergedError(
        f"training diverged: the loss became NaN or infinite in epoch {backup.diverged_at} "
        f"({phase.name}, peak learning rate {phase.learning_rate:g}); nothing was saved as "
        f"a model: run again with a lower {option}"
    )
