"""``train``: a run as a short list of named steps over one frozen plan.

1. The config is resolved against DATA (:mod:`cvprep.training.plan`): the recipe's defaults,
   the classes, the preprocessing record, the parsed pipelines, the channels, and where
   validation comes from (``val/``, or a stratified, seeded share of ``train/``; ``test/`` is
   evaluated once, at the end, and nowhere else).
2. Every image is decoded once and cached (:mod:`cvprep.training.data`).
3. The network trains (backbones: frozen first, then fine-tuned) with early stopping on the
   validation loss, keeping the best weights; a killed run resumes where it stopped
   (:mod:`cvprep.training.phases`).
4. The raw-image model is saved and scored on the raw test images through the same code
   path as ``cvprep evaluate``; the run folder gets the report and the suspects list.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.errors import CvprepError, filesystem_errors
from cvprep.files import check_can_write
from cvprep.training import report
from cvprep.training.config import TrainConfig
from cvprep.training.data import CachedImages, Split, load_split, make_dataset
from cvprep.training.evaluate import (
    Evaluation,
    Predictor,
    class_probability,
    evaluate_folder,
    metrics_from_predictions,
)
from cvprep.training.explain import report_explainer
from cvprep.training.features import traced_inference
from cvprep.training.phases import fit_phases
from cvprep.training.plan import TrainPlan, resolve_plan
from cvprep.training.run import (
    BACKUP_FOLDER,
    CACHE_FOLDER,
    METRICS_FILE,
    MODEL_FILE,
    save_keras,
    write_json,
    write_run_files,
)

Log = Callable[[str], None]


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


@filesystem_errors
def train(
    data: str | Path,
    *,
    out: str | Path,
    verbose: int = 0,
    log: Log = lambda _: None,
    **options: Any,
) -> TrainResult:
    """Train a classifier on DATA (``train/``, optional ``val/`` and ``test/`` of class
    subfolders, as written by ``cvprep split`` or ``cvprep preprocess``).

    Keyword options mirror ``cvprep train``'s (see :class:`TrainConfig`): ``model`` ("cnn",
    "classic", "mobilenet", …), ``alpha``, ``weights``, ``img_size``, ``epochs``,
    ``fine_tune_epochs``, ``augment``, ``learning_rate``, ``label_smoothing``,
    ``class_weight`` ("auto", "balanced", "none"), ``val_fraction``, ``seed``, … Left out,
    each takes the model's measured default.

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


@filesystem_errors
def train_with_config(
    config: TrainConfig, *, verbose: int = 0, log: Log = lambda _: None
) -> TrainResult:
    """:func:`train` with a ready :class:`TrainConfig` (e.g. one read from a ``config.json``).

    Examples
    --------
    >>> import json
    >>> from dataclasses import replace
    >>> from cvprep.training import TrainConfig, train_with_config
    >>> config = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    >>> train_with_config(replace(config, out=str(tmp / "again"), epochs=1)).metrics["epochs_run"]
    1
    """
    started = time.perf_counter()
    plan = resolve_plan(config)
    devices = _start(plan)
    cached = _cache(plan, log)
    core, history = fit_phases(plan, cached, verbose, log)
    model = _save_model(plan, core)
    evaluation, metrics = _score(plan, model, core, cached, log)
    metrics.update(
        epochs_run=len(history.get("loss", [])),
        data_parallel_devices=devices,
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(plan.out / METRICS_FILE, metrics)
    _write_report(plan, model, core, cached, metrics, history, evaluation)
    shutil.rmtree(plan.out / CACHE_FOLDER, ignore_errors=True)
    log(
        f"accuracy on {metrics['evaluated_on']}: {metrics['accuracy']:.3f}, balanced "
        f"{metrics['balanced_accuracy']:.3f} (validation {metrics['validation_accuracy']:.3f}); "
        f"report: {plan.out / 'report.html'}"
    )
    seconds = time.perf_counter() - started
    return TrainResult(plan.out, metrics, history, plan.validation.to_dict(), seconds)


def _start(plan: TrainPlan) -> int:
    """Seed, join a multi-process job, and write the run's settings; returns the devices."""
    import keras

    check_can_write(plan.out)  # before any work: a read-only or misplaced OUT says so now
    keras.utils.set_random_seed(plan.config.seed)
    devices = _init_data_parallel(plan) if plan.config.num_processes > 1 else 1
    plan.out.mkdir(parents=True, exist_ok=True)
    write_run_files(plan)
    return devices


def _init_data_parallel(plan: TrainPlan) -> int:
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
    config = plan.config
    keras.distribution.initialize(
        job_addresses=config.coordinator,
        num_processes=config.num_processes,
        process_id=config.process_id,
    )
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def _cache(plan: TrainPlan, log: Log) -> dict[str, CachedImages]:
    """Decode every training and validation image once (``test/`` is scored at the end)."""
    for split in (plan.train, plan.val, plan.test):
        for path, reason in (split.describe_outside() if split else {}).items():
            log(f"warning: {path} is not used: {reason} (the classes are train/'s folders)")
    cached = {name: _load(plan, name, split, "auto", log) for name, split in _fitted_splits(plan)}
    if not len(cached["train"]):
        raise CvprepError(f"no readable training images under {plan.data / 'train'}")
    log(
        f"training {plan.config.model} on {len(cached['train'])} images, validating on "
        f"{len(cached['val'])} ({plan.validation.source}/), {plan.size}×{plan.size}, "
        f"augment {plan.config.augment}, class weights {plan.weighting.describe(plan.classes)}"
    )
    return cached


def _fitted_splits(plan: TrainPlan) -> list[tuple[str, Split]]:
    return [("train", plan.train), ("val", plan.val)]


def _load(plan: TrainPlan, name: str, split: Split, cache: str, log: Log) -> CachedImages:
    config = plan.config
    return load_split(
        split,
        pipeline=plan.preprocessing.ops,
        size=plan.size,
        resize=config.resize,
        channels=plan.preprocessing.channels,
        cache=config.cache if cache == "auto" else cache,
        cache_file=plan.out / CACHE_FOLDER / f"{name}.npy",
        workers=config.workers,
        stored_channels=plan.preprocessing.stored_channels,
        log=log,
    )


def _save_model(plan: TrainPlan, core: Any) -> Any:
    """The raw-image model: the plan's preprocessing layers around the trained network."""
    from cvprep.training.models import wrap_for_raw_images

    model = wrap_for_raw_images(core, plan)
    save_keras(model, plan.out / MODEL_FILE)
    shutil.rmtree(plan.out / BACKUP_FOLDER, ignore_errors=True)
    return model


# --------------------------------------------------------------------------- evaluation
def _score(
    plan: TrainPlan, model: Any, core: Any, cached: dict[str, CachedImages], log: Log
) -> tuple[Evaluation | None, dict[str, Any]]:
    """The test figures (or, without ``test/``, the validation ones, said to be optimistic)."""
    val_metrics = _cached_metrics(core, cached["val"], plan)
    evaluation = _final_test(plan, model, core, log)
    if evaluation is None:
        log(
            "warning: no test/ split: the figures below are on the validation images, which "
            "also chose the epoch (optimistic)"
        )
        metrics = {**val_metrics, "evaluated_on": "val"}
    else:
        metrics = evaluation.metrics
    metrics["validation_accuracy"] = val_metrics["accuracy"]
    metrics["validation_balanced_accuracy"] = val_metrics["balanced_accuracy"]
    return evaluation, metrics


def _predict_cached(core: Any, cached: CachedImages, plan: TrainPlan) -> np.ndarray:
    dataset = make_dataset(cached, batch_size=64, num_classes=plan.num_classes)
    forward = traced_inference(core)
    outputs = [np.asarray(forward(images)) for images, _ in dataset]
    return class_probability(np.concatenate(outputs), plan.num_classes)


def _cached_metrics(core: Any, cached: CachedImages, plan: TrainPlan) -> dict[str, Any]:
    predicted = _predict_cached(core, cached, plan).argmax(axis=1)
    return metrics_from_predictions(cached.labels, predicted, list(plan.classes))


def _final_test(plan: TrainPlan, model: Any, core: Any, log: Log) -> Evaluation | None:
    """Score the saved raw-image model once on the raw test images (the same code path as
    ``cvprep evaluate``); without the raw images, score the network on the preprocessed
    ones."""
    if plan.test is None:
        return None
    raw = plan.raw_test_folder
    if raw is not None and raw.is_dir():
        return evaluate_folder(Predictor(model, list(plan.classes)), raw, "test")
    test = plan.data / "test"
    log(f"warning: raw test images not found ({raw}): scoring the preprocessed {test}")
    cached = _load(plan, "test", plan.test, "memory", log)
    predicted = _predict_cached(core, cached, plan).argmax(axis=1)
    metrics = metrics_from_predictions(cached.labels, predicted, list(plan.classes))
    metrics.update(evaluated_on=str(test), split="test (preprocessed)")
    return Evaluation(metrics, [], [])


# --------------------------------------------------------------------------- the report
def _write_report(
    plan: TrainPlan,
    model: Any,
    core: Any,
    cached: dict[str, CachedImages],
    metrics: dict[str, Any],
    history: dict[str, list[float]],
    evaluation: Evaluation | None,
) -> None:
    suspects = report.write_suspects(plan.out, _suspects(core, cached["train"], plan))
    report.write_run_report(
        plan,
        metrics,
        history=history,
        mistakes=evaluation.mistakes() if evaluation else [],
        augmented=_augmented_batch(cached["train"], plan),
        suspects=suspects,
        explainer=report_explainer(model, list(plan.classes)),
    )


def _suspects(core: Any, cached: CachedImages, plan: TrainPlan) -> list[dict[str, Any]]:
    """Training images whose label the trained model contradicts, most confident first."""
    probabilities = _predict_cached(core, cached, plan)
    rows = []
    for path, label, row in zip(cached.files, cached.labels, probabilities, strict=True):
        predicted = int(row.argmax())
        if predicted != label:
            rows.append(
                {
                    "path": path,
                    "class": plan.classes[label],
                    "predicted": plan.classes[predicted],
                    "probability": round(float(row[predicted]), 4),
                    "probability_of_class": round(float(row[label]), 4),
                }
            )
    return sorted(rows, key=lambda r: r["probability_of_class"])


def _augmented_batch(cached: CachedImages, plan: TrainPlan) -> np.ndarray:
    """A few training images as the network sees them: after augmentation."""
    dataset = make_dataset(
        cached,
        batch_size=min(16, len(cached)),
        num_classes=plan.num_classes,
        training=True,
        augment=plan.config.augment,
        seed=plan.config.seed + 1,
    )
    images, _ = next(iter(dataset))
    return np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
