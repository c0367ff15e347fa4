"""The run folder: what a training run writes, and loading it back."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import __version__
from cvprep.errors import CvprepError
from cvprep.io import atomic_write_bytes

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
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())


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


@dataclass
class Run:
    """A trained run folder: the raw-image model, the class names and the settings."""

    folder: Path
    model: Any
    classes: list[str]
    config: dict[str, Any]


def load_run(folder: str | Path) -> Run:
    """Load ``model.keras``, ``labels.json`` and ``config.json`` of a ``cvprep train`` run.

    Examples
    --------
    >>> from cvprep.training import load_run
    >>> run = load_run(trained_run)
    >>> run.classes, run.model.input_shape
    (['angular', 'round'], (None, None, None, 3))
    """
    import keras

    import cvprep.keras_layers  # noqa: F401  (registers cvprep's layers for loading)

    run = Path(folder)
    if not (run / MODEL_FILE).is_file():
        raise CvprepError(f"{run} has no {MODEL_FILE}: is it a `cvprep train` run folder?")
    model = keras.saving.load_model(run / MODEL_FILE)
    classes = json.loads((run / LABELS_FILE).read_text())
    config = json.loads((run / CONFIG_FILE).read_text())
    return Run(run, model, classes, config)
