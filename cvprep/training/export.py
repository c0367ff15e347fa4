"""Export a run's model to a SavedModel or TFLite, and prove it predicts like the original."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.dataset.preprocess import read_preprocessing_record
from cvprep.errors import (
    CvprepError,
    FileSystemError,
    ImageError,
    ParameterError,
    filesystem_errors,
)
from cvprep.files import check_can_write, list_tree
from cvprep.io import atomic_write_bytes, folder_written_atomically, read_image
from cvprep.training.run import Run, load_run

FORMATS = ("savedmodel", "tflite")
SAVED_MODEL_FILE = "saved_model.pb"  # what tells an earlier export from another folder
REAL_IMAGES = 8
# Generated check images of several shapes: the check never depends on finding the data.
GENERATED_SHAPES = ((96, 128), (200, 150), (64, 64))


@dataclass
class ExportResult:
    path: Path
    format: str
    checked: int  # images on which the export was compared with model.keras
    max_difference: float


@filesystem_errors
def export(
    run: str | os.PathLike[str],
    fmt: str = "savedmodel",
    *,
    quantize: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export a run's raw-image model and check that it predicts like ``model.keras``.

    The check runs on up to 8 of the run's own raw images (when they can still be found)
    plus generated images of three shapes, so it always compares something; a difference
    above the tolerance (1e-4, or 0.05 for quantised TFLite) raises ``CvprepError``. The
    export is compared before it takes its place: a failed check or an interrupted export
    leaves the previous one (or nothing) at the output, never a half-written or wrong model.

    Examples
    --------
    >>> from cvprep.training import export
    >>> result = export(trained_run, "tflite", output=tmp / "model.tflite")
    >>> result.path.name, result.checked >= 3, result.max_difference < 1e-4
    ('model.tflite', True, True)
    """
    if fmt not in FORMATS:
        raise ParameterError(f"`fmt` should be one of {', '.join(FORMATS)}. Received: fmt={fmt!r}")
    if quantize and fmt != "tflite":
        raise ParameterError("`quantize` applies to the tflite format only")
    loaded = load_run(run)
    if fmt == "savedmodel":
        name = "savedmodel"
    else:
        name = "model-quantized.tflite" if quantize else "model.tflite"
    path = Path(output) if output else loaded.folder / "export" / name
    _check_output(path, folder=fmt == "savedmodel")
    images = check_images(loaded)
    if fmt == "savedmodel":
        # Written and checked beside its place, then swapped in (see the docstring).
        with folder_written_atomically(path) as partial:
            loaded.model.export(str(partial), verbose=False)
            difference = compare_predictions(
                loaded.model, saved_model_predictor(partial), images, 1e-4
            )
    else:
        model = to_tflite(loaded.model, quantize=quantize)
        tolerance = 0.05 if quantize else 1e-4
        difference = compare_predictions(loaded.model, tflite_predictor(model), images, tolerance)
        atomic_write_bytes(path, model)
    return ExportResult(path, fmt, len(images), difference)


def _check_output(path: Path, *, folder: bool) -> None:
    """Before the (slow) conversion: the output can be written, and is of the right kind. A
    SavedModel replaces the whole folder, so only an empty one or an earlier SavedModel is
    accepted there (not, say, the run folder or a folder of runs)."""
    check_can_write(path)
    # The folder is swapped in beside the target: its parent must take new entries too.
    check_can_write(path.resolve().parent)
    if folder and path.exists() and not path.is_dir():
        raise FileSystemError(str(path), "is a file: a SavedModel is written as a folder")
    earlier_export = (path / SAVED_MODEL_FILE).is_file()
    if folder and path.is_dir() and any(path.iterdir()) and not earlier_export:
        raise FileSystemError(
            str(path),
            "is a folder with other files: a SavedModel replaces the whole folder, so give "
            "a new or empty folder, or an earlier export",
        )
    if not folder and path.is_dir():
        raise FileSystemError(str(path), "is a folder: a TFLite model is written as a file")


def to_tflite(model: Any, *, quantize: bool) -> bytes:
    import tensorflow as tf

    # The converter exports a SavedModel first and prints its signatures on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def saved_model_predictor(path: Path) -> Any:
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    return lambda image: np.asarray(served.serve(tf.constant(image[None], tf.float32)))


def tflite_predictor(model: str | os.PathLike[str] | bytes) -> Any:
    """A function image → output for a TFLite model (a file, or its bytes) with a dynamic
    image size."""
    import tensorflow as tf

    if isinstance(model, (str, os.PathLike)):
        interpreter = tf.lite.Interpreter(model_path=os.fspath(model))
    else:
        interpreter = tf.lite.Interpreter(model_content=bytes(model))
    input_index = interpreter.get_input_details()[0]["index"]

    def predict(image: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(input_index, (1, *image.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, image[None].astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return predict


def check_images(run: Run) -> list[np.ndarray]:
    """Raw images of the run (test, val, train of its raw data) and generated ones."""
    images: list[np.ndarray] = []
    data = run.data
    if data is not None and data.is_dir():
        raw = read_preprocessing_record(data).source or data
        images = _raw_images(raw)
    rng = np.random.default_rng(0)
    for height, width in GENERATED_SHAPES:
        smooth = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        images.append(np.ascontiguousarray(np.kron(smooth, np.ones((8, 8, 1), np.uint8))))
    return images


def _raw_images(raw: Path) -> list[np.ndarray]:
    """Up to ``REAL_IMAGES`` readable images of ``raw``'s splits (test first)."""
    images: list[np.ndarray] = []
    for name in ("test", "val", "train"):
        folder = raw / name
        if not folder.is_dir():
            continue
        for relative in list_tree(folder).files:
            try:
                images.append(read_image(folder / relative))
            except ImageError:
                continue
            if len(images) == REAL_IMAGES:
                return images
    return images


def compare_predictions(
    model: Any, predict: Any, images: list[np.ndarray], tolerance: float
) -> float:
    """The largest difference between the exported model and ``model``; raises above
    ``tolerance`` (the export is compared before it is written)."""
    if not images:
        raise CvprepError("no images to compare the export with model.keras")
    worst = 0.0
    for image in images:
        expected = np.asarray(model(image[None].astype(np.float32), training=False))
        got = predict(image)
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > tolerance:
        raise CvprepError(
            f"exported model differs from model.keras by {worst:.4f} (tolerance {tolerance}): "
            "nothing was written, a previous export is kept"
        )
    return worst
