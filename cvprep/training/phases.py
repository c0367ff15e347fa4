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
from cvprep.training.data import CachedImages, Inputs, make_dataset
from cvprep.training.features import FrozenBackbone, Trainee
from cvprep.training.models import build_training_model, for_saving, unfreeze_top
from cvprep.training.plan import TrainPlan
from cvprep.training.report import read_history
from cvprep.training.run import BACKUP_FOLDER, CHECKPOINT_FILE, HISTORY_FILE

PHASE1_WEIGHTS = "phase1-done.weights.h5"
PHASE1_RECORD = "phase1-done.json"  # how many epochs phase 1 ran (early stopping may end it)


class TrainingDivergedError(CvprepError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Phase:
    name: str  # as the log lines call it
    folder: str  # of its backup, under backup/
    epochs: int
    learning_rate: float
    first_epoch: int  # epochs run before this phase


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
    first = _phase_one(core, plan, _phase_one_trainee(core, frozen, inputs), verbose, log)
    if base is not None and config.fine_tune_epochs > 0:
        with strategy.scope():
            unfreeze_top(base, config.unfreeze)
            cached_trainee = frozen.fine_tuning_trainee() if frozen else None
            trainee = cached_trainee or Trainee(core, inputs)
            rate, epochs = config.fine_tune_learning_rate, config.fine_tune_epochs
            _compile(trainee.model, plan, rate, epochs * trainee.inputs.steps)
        phase = Phase("fine-tuning", "phase2", epochs, rate, first)
        _fit(trainee.model, plan, trainee.inputs, phase, verbose, log)
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
    core: Any, frozen: FrozenBackbone | None, inputs: Inputs
) -> Callable[[], Trainee]:
    """What phase 1 fits, and on what (made only when phase 1 runs): a frozen backbone's
    head on cached features, else the whole network on images."""
    if frozen is None:
        return lambda: Trainee(core, inputs)

    def on_features() -> Trainee:
        trainee, plan = frozen.head_trainee(), frozen.plan
        with _strategy(plan.config.distribute).scope():
            steps = plan.config.epochs * trainee.inputs.steps
            _compile(trainee.model, plan, plan.config.learning_rate, steps)
        return trainee

    return on_features


def _phase_one(
    core: Any,
    plan: TrainPlan,
    trainee: Callable[[], Trainee],
    verbose: int,
    log: Callable[[str], None],
) -> int:
    """Phase 1, unless a whole record of its end is on disk; returns its epoch count."""
    from cvprep.training.backup import load_weights, save_weights

    backup = plan.out / BACKUP_FOLDER
    done, record = backup / PHASE1_WEIGHTS, backup / PHASE1_RECORD
    if done.exists():
        problem = load_weights(core, done)
        if problem is None:
            return _phase_one_epochs(record, plan)
        log(f"warning: {done} is damaged ({problem}) and was removed: phase 1 runs again")
        done.unlink()
        record.unlink(missing_ok=True)
    config = plan.config
    fitted = trainee()
    _fit(
        fitted.model,
        plan,
        fitted.inputs,
        Phase("phase 1", "phase1", config.epochs, config.learning_rate, 0),
        verbose,
        log,
    )
    epochs = len(read_history(plan.out / HISTORY_FILE).get("loss", [])) or config.epochs
    save_weights(core, done)
    atomic_write_bytes(record, json.dumps({"epochs": epochs}).encode())
    return epochs


def _phase_one_epochs(record: Path, plan: TrainPlan) -> int:
    try:
        return int(json.loads(record.read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):  # a run interrupted by cvprep 0.2
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
    inputs: Inputs,
    phase: Phase,
    verbose: int,
    log: Callable[[str], None],
) -> None:
    """One phase, resumed from its newest whole backup; the backup goes when it is done."""
    from cvprep.training.backup import restore, trim_history

    folder = plan.out / BACKUP_FOLDER / phase.folder
    start = max(phase.first_epoch, restore(model, folder, phase.name, log))
    trim_history(plan.out / HISTORY_FILE, start)  # epochs after the restored state run again
    callbacks = _callbacks(plan, phase, folder)
    with warnings.catch_warnings():
        # Keras cannot know the length of a tf.data pipeline and warns at every epoch's end.
        warnings.filterwarnings("ignore", message=".*ran out of data")
        model.fit(
            inputs.train,
            validation_data=inputs.val,
            epochs=phase.first_epoch + phase.epochs,
            initial_epoch=start,
            callbacks=callbacks,
            # Training batches only: the validation loss (early stopping) stays unweighted.
            class_weight=plan.weighting.keras(),
            verbose=verbose,
            shuffle=False,  # tf.data already reshuffles every epoch
        )
    _check_converged(next(c for c in callbacks if hasattr(c, "diverged_at")), plan, phase)
    shutil.rmtree(folder, ignore_errors=True)


def _callbacks(plan: TrainPlan, phase: Phase, folder: Path) -> list[Any]:
    """History first and the backup last: a kill between them leaves a history row whose
    epoch is run again (and its row replaced), never a state without its row."""
    import keras

    from cvprep.training.backup import BestCheckpoint, EpochBackup

    return [
        keras.callbacks.CSVLogger(str(plan.out / HISTORY_FILE), append=True),
        # Not in the first half: a scheduled learning rate is still high there, and the
        # validation loss of a small set swings.
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=plan.config.patience,
            restore_best_weights=True,
            start_from_epoch=phase.first_epoch + phase.epochs // 2,
        ),
        BestCheckpoint(plan.out / CHECKPOINT_FILE),
        _stop_on_nan(),
        EpochBackup(folder),
    ]


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
