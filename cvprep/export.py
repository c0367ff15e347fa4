"""Export a run's model to a SavedModel or TFLite, and check it predicts like the original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cvprep.errors import CvprepError
from cvprep.io import read_image

CHECK_IMAGES = 8


def export_run(run: Path, fmt: str, *, quantize: bool = False, output: Path | None = None) -> Path:
    """Write the export and verify it on up to 8 of the run's validation/test images."""
    from cvprep.train import load_run

    model, _, config = load_run(run)
    if fmt == "savedmodel":
        path = output or run / "export" / "savedmodel"
        model.export(str(path), verbose=False)
        predict = _saved_model_predictor(path)
        tolerance = 1e-4
    elif fmt == "tflite":
        path = output or run / "export" / ("model-quantized.tflite" if quantize else "model.tflite")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_tflite(model, quantize=quantize))
        predict = tflite_predictor(path)
        tolerance = 0.05 if quantize else 1e-4
    else:
        raise CvprepError(f"unknown export format {fmt!r}")
    _check_same_predictions(model, predict, _sample_images(Path(config["data"])), tolerance)
    return path


def to_tflite(model: Any, *, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _saved_model_predictor(path: Path) -> Any:
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    return lambda image: np.asarray(served.serve(tf.constant(image[None], tf.float32)))


def tflite_predictor(path: Path) -> Any:
    """A function image → output for a TFLite model with a dynamic image size."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]

    def predict(image: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(input_index, (1, *image.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, image[None].astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return predict


def _sample_images(data: Path) -> list[np.ndarray]:
    from cvprep.files import iter_files

    images = []
    for name in ("test", "val", "train"):
        folder = data / name
        if folder.is_dir():
            for relative in iter_files(folder):
                try:
                    images.append(read_image(folder / relative))
                except Exception:
                    continue
                if len(images) == CHECK_IMAGES:
                    return images
    return images


def _check_same_predictions(
    model: Any, predict: Any, images: list[np.ndarray], tolerance: float
) -> None:
    for image in images:
        expected = np.asarray(model(image[None].astype(np.float32), training=False))
        got = predict(image)
        if np.abs(got - expected).max() > tolerance:
            raise CvprepError(
                f"exported model differs from model.keras by "
                f"{np.abs(got - expected).max():.4f} (tolerance {tolerance})"
            )
