"""``train``: the fit loop and everything a run writes.

1. DATA's splits are found; without ``val/`` a stratified, seeded share of ``train/`` becomes
   the validation set. ``test/`` is evaluated once, at the end, and nowhere else.
2. Every image is decoded once and cached (:mod:`cvprep.training.data`).
3. The network trains (backbones: frozen first, then fine-tuned) with early stopping on the
   validation loss, keeping the best weights. A killed run resumes where it stopped.
4. The raw-image model is saved and scored on the raw test images through the same code
   path as ``cvprep evaluate``; the run folder gets the report and the suspects list.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.dataset.preprocess import preprocessing_record
from cvprep.errors import CvprepError
from cvprep.pipeline import Pipeline
from cvprep.training import report
from cvprep.training.config import TrainConfig
from cvprep.training.data import (
    CachedImages,
    Split,
    carve_validation,
    discover,
    load_split,
    make_dataset,
    process_shard,
)
from cvprep.training.evaluate import (
    Evaluation,
    Predictor,
    class_probability,
    evaluate_folder,
    metrics_from_predictions,
)
from cvprep.training.explain import report_explainer
from cvprep.training.models import (
    build_training_model,
    full_pipeline,
    output_channels,
    unfreeze_top,
    wrap_for_raw_images,
)
from cvprep.training.run import (
    BACKUP_FOLDER,
    CACHE_FOLDER,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PIPELINE_FILE,
    library_versions,
    write_json,
)

PHASE1_WEIGHTS = "phase1-done.weights.h5"


@dataclass
class TrainResult:
    """What a run produced: its folder, the test (or validation) metrics, the history."""

    run: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])


def train(
    data: str | Path,
    *,
    out: str | Path,
    verbose: int = 0,
    log: Callable[[str], None] = lambda _: None,
    **options: Any,
) -> TrainResult:
    """Train a classifier on DATA (``train/``, optional ``val/`` and ``test/`` of class
    subfolders, as written by ``cvprep split`` or ``cvprep preprocess``).

    Keyword options mirror ``cvprep train``'s (see :class:`TrainConfig`): ``model`` ("cnn",
    "classic", "mobilenet", …), ``alpha``, ``weights``, ``img_size``, ``epochs``,
    ``fine_tune_epochs``, ``augment``, ``learning_rate``, ``label_smoothing``,
    ``val_fraction``, ``seed``, … Left out, each takes the model's measured default.

    The run folder ``out`` gets ``model.keras`` (raw RGB images of any size in, probabilities
    out: the preprocessing is inside), ``labels.json``, ``pipeline.json``, ``config.json``,
    ``history.csv``, ``metrics.json``, ``suspects.csv``, figures and ``report.html``.

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset, split
    >>> from cvprep.training import train
    >>> _ = split(make_shapes_dataset(tmp / "shapes", per_class=16, size=48), tmp / "data",
    ...           ratios="0.5,0.25,0.25", workers=0)
    >>> result = train(tmp / "data", out=tmp / "run", img_size=48, epochs=2, batch_size=8,
    ...                workers=0)
    >>> result.metrics["evaluated_on"].endswith("test"), result.metrics["count"]
    (True, 8)
    >>> sorted(p.name for p in (tmp / "run").glob("*.json"))
    ['config.json', 'labels.json', 'metrics.json', 'pipeline.json']
    """
    config = TrainConfig(data=str(Path(data).resolve()), out=str(out), **options)
    return train_with_config(config, verbose=verbose, log=log)


def train_with_config(
    config: TrainConfig, *, verbose: int = 0, log: Callable[[str], None] = lambda _: None
) -> TrainResult:
    """:func:`train` with a ready :class:`TrainConfig` (e.g. one read from a ``config.json``).

    Examples
    --------
    >>> import json
    >>> from cvprep.training import TrainConfig, train_with_config
    >>> config = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    >>> config.out, config.epochs = str(tmp / "again"), 1
    >>> train_with_config(config).metrics["epochs_run"]
    1
    """
    import keras

    started = time.perf_counter()
    config.validate()
    data, out = Path(config.data), Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    record = preprocessing_record(data)
    config.data_spec = record.get("settings", {}).get("spec", "")
    config.classes, splits = discover(data)
    config = config.resolved()
    keras.utils.set_random_seed(config.seed)
    test = splits.pop("test", None)
    validation = _validation(splits, config)
    devices = 1
    if config.num_processes > 1:
        devices = _init_data_parallel(config)
        splits["train"] = process_shard(
            splits["train"], config.seed, config.num_processes, config.process_id
        )
    channels = output_channels(full_pipeline(config))
    stored = output_channels(Pipeline.parse(config.data_spec))  # what DATA's files hold
    write_json(
        out / CONFIG_FILE,
        {
            **asdict(config),
            "image_size": config.size,
            "validation": validation,
            "versions": library_versions(),
        },
    )
    write_json(out / LABELS_FILE, config.classes)
    (out / PIPELINE_FILE).write_text(full_pipeline(config).to_json(indent=2))
    cached = {
        name: load_split(
            split,
            pipeline=Pipeline.parse(config.ops),
            size=config.size,
            resize=config.resize,
            channels=channels,
            cache=config.cache,
            cache_file=out / CACHE_FOLDER / f"{name}.npy",
            workers=config.workers,
            stored_channels=stored,
            log=log,
        )
        for name, split in splits.items()
    }
    if not len(cached["train"]):
        raise CvprepError(f"no readable training images under {data / 'train'}")
    log(
        f"training {config.model} on {len(cached['train'])} images, validating on "
        f"{len(cached['val'])} ({validation['source']}/), {config.size}×{config.size}, "
        f"augment {config.augment}"
    )
    core, history = _fit_phases(config, cached, out, verbose)
    model = wrap_for_raw_images(core, config)
    model.save(out / MODEL_FILE)
    with contextlib.suppress(OSError):
        shutil.rmtree(out / BACKUP_FOLDER)
    val_metrics = _cached_metrics(core, cached["val"], config)
    evaluation = _final_test(model, core, config, test, record, data, channels, stored, log)
    metrics = evaluation.metrics if evaluation else {**val_metrics, "evaluated_on": "val"}
    if evaluation is None:
        log(
            "warning: no test/ split: the figures below are on the validation images, which "
            "also chose the epoch (optimistic)"
        )
    metrics.update(
        epochs_run=len(history.get("loss", [])),
        data_parallel_devices=devices,
        validation_accuracy=val_metrics["accuracy"],
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(out / METRICS_FILE, metrics)
    suspects = report.write_suspects(out, _suspects(core, cached["train"], config))
    report.write_run_report(
        out,
        config,
        metrics,
        history=history,
        mistakes=evaluation.mistakes() if evaluation else [],
        augmented=_augmented_batch(cached["train"], config),
        suspects=suspects,
        explainer=report_explainer(model, config.classes),
    )
    shutil.rmtree(out / CACHE_FOLDER, ignore_errors=True)
    log(
        f"accuracy on {metrics['evaluated_on']}: {metrics['accuracy']:.3f} "
        f"(validation {val_metrics['accuracy']:.3f}); report: {out / 'report.html'}"
    )
    return TrainResult(out, metrics, history, validation, time.perf_counter() - started)


def _validation(splits: dict[str, Split], config: TrainConfig) -> dict[str, Any]:
    """Use ``val/``, or carve a stratified share of ``train/`` (never ``test/``)."""
    if "val" in splits and len(splits["val"]):
        return {"source": "val", "images": len(splits["val"])}
    splits["train"], splits["val"] = carve_validation(
        splits["train"], config.val_fraction, config.seed
    )
    return {
        "source": "train",
        "images": len(splits["val"]),
        "fraction": config.val_fraction,
        "seed": config.seed,
    }


def _init_data_parallel(config: TrainConfig) -> int:
    """Join a multi-process JAX job and replicate the model over all its devices.

    Every process runs the same command with its own ``process_id``; process 0 listens on
    ``coordinator``. Gradients are averaged across processes by Keras' ``DataParallel``.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise CvprepError("multi-process training needs the JAX backend: set KERAS_BACKEND=jax")
    import jax

    # CPU hosts need a collectives implementation; GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(
        job_addresses=config.coordinator,
        num_processes=config.num_processes,
        process_id=config.process_id,
    )
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


# --------------------------------------------------------------------------- fitting
def _fit_phases(
    config: TrainConfig, cached: dict[str, CachedImages], out: Path, verbose: int
) -> tuple[Any, dict[str, list[float]]]:
    """Phase 1 (everything, or the head on a frozen backbone), then fine-tuning."""
    num_classes = len(config.classes)
    per_process = config.batch_size // config.num_processes
    train = make_dataset(
        cached["train"],
        batch_size=per_process,
        num_classes=num_classes,
        training=True,
        augment=config.augment,
        seed=config.seed,
        drop_remainder=config.num_processes > 1,
    )
    # Several processes need full batches, also to validate (up to a batch of it is left out).
    val = make_dataset(
        cached["val"],
        batch_size=per_process,
        num_classes=num_classes,
        drop_remainder=config.num_processes > 1,
    )
    steps = (
        len(cached["train"]) // per_process
        if config.num_processes > 1
        else -(-len(cached["train"]) // per_process)
    )
    backup = out / BACKUP_FOLDER
    if not any(backup.glob("*")):  # a fresh run, not a resumed one
        (out / HISTORY_FILE).unlink(missing_ok=True)
    strategy = _strategy(config.distribute)
    with strategy.scope():
        core, base = build_training_model(config, cached["train"].images.shape[-1])
        _compile(core, config, config.learning_rate, config.epochs * steps)
    done = backup / PHASE1_WEIGHTS
    if done.exists():  # phase 1 finished before the run was interrupted
        core.load_weights(done)
    else:
        _fit(core, train, val, config.epochs, 0, backup / "phase1", out, config, verbose)
        core.save_weights(done)
    if base is not None and config.fine_tune_epochs > 0:
        start = len(report.read_history(out / HISTORY_FILE).get("loss", [])) or config.epochs
        with strategy.scope():
            unfreeze_top(base, config.unfreeze)
            _compile(core, config, config.fine_tune_learning_rate, config.fine_tune_epochs * steps)
        _fit(
            core,
            train,
            val,
            config.fine_tune_epochs,
            start,
            backup / "phase2",
            out,
            config,
            verbose,
        )
    return core, report.read_history(out / HISTORY_FILE)


def _strategy(distribute: bool) -> Any:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if distribute and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _schedule(config: TrainConfig, learning_rate: float, total_steps: int) -> Any:
    """Warm-up over the first 5 % of the steps, then cosine decay to zero; or constant."""
    import keras

    if config.schedule == "constant":
        return learning_rate
    warmup = max(1, total_steps // 20)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )


def _compile(model: Any, config: TrainConfig, learning_rate: float, total_steps: int) -> None:
    import keras

    rate = _schedule(config, learning_rate, total_steps)
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(rate)
    smoothing = config.label_smoothing or 0.0
    if len(config.classes) == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _fit(
    model: Any,
    train: Any,
    val: Any,
    epochs: int,
    initial_epoch: int,
    backup: Path,
    out: Path,
    config: TrainConfig,
    verbose: int,
) -> None:
    import keras

    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),  # resume after a kill
        # Not in the first half: a scheduled learning rate is still high there, and the
        # validation loss of a small set swings.
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=config.patience,
            restore_best_weights=True,
            start_from_epoch=initial_epoch + epochs // 2,
        ),
        keras.callbacks.ModelCheckpoint(
            str(out / CHECKPOINT_FILE), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(out / HISTORY_FILE), append=True),
    ]
    with warnings.catch_warnings():
        # Keras cannot know the length of a tf.data pipeline and warns at every epoch's end.
        warnings.filterwarnings("ignore", message=".*ran out of data")
        model.fit(
            train,
            validation_data=val,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # tf.data already reshuffles every epoch
        )


# --------------------------------------------------------------------------- evaluation
def _predict_cached(core: Any, cached: CachedImages, config: TrainConfig) -> np.ndarray:
    dataset = make_dataset(cached, batch_size=64, num_classes=len(config.classes))
    outputs = [np.asarray(core(images, training=False)) for images, _ in dataset]
    return class_probability(np.concatenate(outputs), len(config.classes))


def _cached_metrics(core: Any, cached: CachedImages, config: TrainConfig) -> dict[str, Any]:
    predicted = _predict_cached(core, cached, config).argmax(axis=1)
    return metrics_from_predictions(cached.labels, predicted, config.classes)


def _final_test(
    model: Any,
    core: Any,
    config: TrainConfig,
    test: Split | None,
    record: dict[str, Any],
    data: Path,
    channels: int,
    stored: int,
    log: Callable[[str], None],
) -> Evaluation | None:
    """Score the saved raw-image model once on the raw test images (the same code path as
    ``cvprep evaluate``); without the raw images, score the network on the preprocessed
    ones."""
    if test is None:
        return None
    raw = Path(record["source"]) / "test" if record.get("source") else None
    if not config.data_spec:
        raw = data / "test"
    predictor = Predictor(model, config.classes)
    if raw is not None and raw.is_dir():
        return evaluate_folder(predictor, raw, "test")
    log(f"warning: raw test images not found ({raw}): scoring the preprocessed {data / 'test'}")
    cached = load_split(
        test,
        pipeline=Pipeline.parse(config.ops),
        size=config.size,
        resize=config.resize,
        channels=channels,
        cache="memory",
        workers=config.workers,
        stored_channels=stored,
        log=log,
    )
    probabilities = _predict_cached(core, cached, config)
    predicted = probabilities.argmax(axis=1)
    metrics = metrics_from_predictions(cached.labels, predicted, config.classes)
    metrics.update(evaluated_on=str(data / "test"), split="test (preprocessed)")
    return Evaluation(metrics, [], [])


def _suspects(core: Any, cached: CachedImages, config: TrainConfig) -> list[dict[str, Any]]:
    """Training images whose label the trained model contradicts, most confident first."""
    probabilities = _predict_cached(core, cached, config)
    rows = []
    for path, label, row in zip(cached.files, cached.labels, probabilities, strict=True):
        predicted = int(row.argmax())
        if predicted != label:
            rows.append(
                {
                    "path": path,
                    "class": config.classes[label],
                    "predicted": config.classes[predicted],
                    "probability": round(float(row[predicted]), 4),
                    "probability_of_class": round(float(row[label]), 4),
                }
            )
    return sorted(rows, key=lambda r: r["probability_of_class"])


def _augmented_batch(cached: CachedImages, config: TrainConfig) -> np.ndarray:
    """A few training images as the network sees them: after augmentation."""
    dataset = make_dataset(
        cached,
        batch_size=min(16, len(cached)),
        num_classes=len(config.classes),
        training=True,
        augment=config.augment,
        seed=config.seed + 1,
    )
    images, _ = next(iter(dataset))
    return np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
