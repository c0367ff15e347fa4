"""The run folder: what a training run writes, and loading it back."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvprep import __version__
from cvprep.errors import CvprepError, filesystem_errors
from cvprep.io import atomic_write_bytes
from cvprep.json_text import dumps

if TYPE_CHECKING:
    from cvprep.training.plan import TrainPlan

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
PIPELINE_FILE = "pipeline.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SUSPECTS_FILE = "suspects.csv"
REPORT_FILE = "report.html"
CHECKPOINT_FILE = "checkpoint.keras"
BACKUP_FOLDER = "backup"
CACHE_FOLDER = "cache"
FIGURES_FOLDER = "figures"


def write_json(path: Path, data: Any) -> None:
    """Valid JSON (NaN and infinities as ``null``), written atomically."""
    atomic_write_bytes(path, dumps(data).encode())


def library_versions() -> dict[str, str]:
    import cv2
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "cvprep": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "backend": keras.backend.backend(),
    }


def run_settings(plan: TrainPlan) -> dict[str, Any]:
    """``config.json``: every setting, the validation source and the library versions."""
    return {**plan.settings(), "versions": library_versions()}


def write_run_files(plan: TrainPlan) -> None:
    """``config.json``, ``labels.json`` and ``pipeline.json``, before training starts."""
    write_json(plan.out / CONFIG_FILE, run_settings(plan))
    write_json(plan.out / LABELS_FILE, list(plan.classes))
    atomic_write_bytes(plan.out / PIPELINE_FILE, plan.preprocessing.full_json.encode())


def save_keras(model: Any, path: Path) -> None:
    """``model.save`` made atomic: a run killed while saving leaves the previous file whole."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # Keras wants the suffix
    try:
        model.save(partial)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


@dataclass
class Run:
    """A trained run folder: the raw-image model, the class names and the settings."""

    folder: Path
    model: Any
    classes: list[str]
    config: dict[str, Any]  # config.json as written (older runs' too)

    @property
    def data(self) -> Path | None:
        """The DATA folder the run was trained on (it may have moved since)."""
        return Path(self.config["data"]) if self.config.get("data") else None

    @property
    def data_spec(self) -> str:
        """The preprocessing recorded in DATA, which the model applies first."""
        return self.config.get("data_spec") or ""


@filesystem_errors
def load_run(folder: str | os.PathLike[str]) -> Run:
    """Load ``model.keras``, ``labels.json`` and ``config.json`` of a ``cvprep train`` run.

    A missing or damaged file is a ``CvprepError`` naming it and what is wrong.

    Examples
    --------
    >>> from cvprep.training import load_run
    >>> run = load_run(trained_run)
    >>> run.classes, run.model.input_shape
    (['angular', 'round'], (None, None, None, 3))
    """
    run = Path(folder)
    if not (run / MODEL_FILE).is_file():
        raise CvprepError(f"{run} has no {MODEL_FILE}: is it a `cvprep train` run folder?")
    config = _read_json(run / CONFIG_FILE, dict, "an object of settings")
    classes = _read_json(run / LABELS_FILE, list, "a list of class names")
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise CvprepError(f"{run / LABELS_FILE} should list two or more class names")
    model = _load_model(run / MODEL_FILE)
    outputs = model.output_shape[-1]
    if outputs != (1 if len(classes) == 2 else len(classes)):
        raise CvprepError(
            f"{run / LABELS_FILE} names {len(classes)} classes, but {run / MODEL_FILE} has "
            f"{outputs} output(s): the files come from different runs"
        )
    return Run(run, model, classes, config)


def _read_json(path: Path, kind: type, what: str) -> Any:
    if not path.is_file():
        raise CvprepError(f"{path} is missing: the run folder is incomplete")
    try:
        value = json.loads(path.read_bytes())
    except ValueError as exc:
        raise CvprepError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise CvprepError(f"{path} should hold {what}")
    return value


def _load_model(path: Path) -> Any:
    import keras

    import cvprep.keras_layers  # noqa: F401  (registers cvprep's layers for loading)

    with path.open("rb") as handle:  # an unreadable file is a file-system error, not this
        if not zipfile.is_zipfile(handle):
            raise CvprepError(f"{path} is not a Keras model file (a .keras file is a zip archive)")
    try:
        return keras.saving.load_model(path)
    except Exception as exc:  # any damage inside the archive: say which file it is
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CvprepError(f"{path} cannot be loaded as a Keras model: {message}") from None
