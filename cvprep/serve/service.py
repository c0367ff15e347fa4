"""What ``cvprep serve`` does for one upload, without the web framework: decode it with
cvprep's reader (the only decoder an upload ever meets), predict, and on request add the
heatmap and the image after each of the model's preprocessing layers.

The model is loaded, and every code path traced once, when the service is created, so that
requests only run it.
"""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

import numpy as np

from cvprep.errors import CvprepError, ImageError, ParameterError
from cvprep.io import DEFAULT_MAX_PIXELS, encode_image, read_image
from cvprep.ops import resize, to_uint8
from cvprep.pipeline import Pipeline
from cvprep.serve import DEFAULT_MAX_BYTES
from cvprep.training.evaluate import Prediction, Predictor, predictions_as_dicts
from cvprep.training.explain import Explainer, report_explainer
from cvprep.training.run import PIPELINE_FILE, load_run

DISPLAY_SIDE = 480  # longest side of the pictures sent back to the page
# An upload cvprep's reader refuses, by its reason: the HTTP status that says so.
STATUS = {"not_image": 415, "too_large": 413, "empty": 400, "truncated": 422, "unreadable": 422}


class UploadRejected(CvprepError):
    """An upload that gets no prediction: ``status`` (4xx) and ``body``, the ``predict
    --json`` object of the upload with its ``error``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        super().__init__(body["error"])


def rejection(name: str, kind: str, reason: str) -> UploadRejected:
    """The refusal of upload ``name`` for ``kind`` (a :class:`ImageError` kind)."""
    (body,) = predictions_as_dicts([Prediction(name, error=f"[{kind}] {reason}")])
    return UploadRejected(STATUS.get(kind, 422), body)


def data_url(image: np.ndarray, fmt: str = "png") -> str:
    """An RGB/gray ``uint8`` image as a ``data:`` URL the page can show without a request."""
    mime = "jpeg" if fmt == "jpg" else fmt
    encoded = base64.b64encode(encode_image(image, fmt, quality=90 if fmt == "jpg" else None))
    return f"data:image/{mime};base64,{encoded.decode()}"


def for_display(image: np.ndarray) -> np.ndarray:
    """``uint8``, the longer side at most :data:`DISPLAY_SIDE` (never enlarged)."""
    array = to_uint8(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    scale = DISPLAY_SIDE / max(array.shape[:2])
    if scale < 1:
        size = (max(1, round(array.shape[0] * scale)), max(1, round(array.shape[1] * scale)))
        array = resize(array, size)
    return array


def step_names(layers: list[Any], pipeline: Pipeline | None) -> list[str]:
    """A label per preprocessing layer: its pipeline step (``pipeline.json``), and the last
    Resize as the network's input size."""
    steps = [step.to_text() for step in pipeline] if pipeline is not None else []
    names = []
    for index, layer in enumerate(layers):
        if index == len(layers) - 1 and hasattr(layer, "size"):
            height, width = layer.size
            names.append(f"network input: {height}×{width} ({layer.fit})")
        elif index < len(steps) and len(steps) == len(layers) - 1:
            names.append(steps[index])
        else:
            names.append(type(layer).__name__)
    return names


class PredictionService:
    """A run's model, loaded once, answering one upload at a time.

    Parameters
    ----------
    run : run folder
    max_bytes : int
        Larger uploads are refused (HTTP 413) — the web layer stops reading at this size.
    max_pixels : int
        Larger images are refused (HTTP 413) from their header, before decoding.
    tta : bool
        Average each upload's probabilities with its mirror's.
    """

    def __init__(
        self,
        run: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tta: bool = False,
    ) -> None:
        for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"`{name}` should be a positive integer. Received: {value!r}")
        loaded = load_run(run)
        self.run, self.classes = loaded.folder, loaded.classes
        self.max_bytes, self.max_pixels, self.tta = max_bytes, max_pixels, tta
        self.predictor = Predictor(loaded.model, loaded.classes, tta=tta)
        self.explainer: Explainer | None = report_explainer(loaded.model, loaded.classes)
        pipeline_file = loaded.folder / PIPELINE_FILE
        pipeline = (
            Pipeline.from_json(pipeline_file.read_text()) if pipeline_file.is_file() else None
        )
        self.step_names = step_names(self.predictor.preprocessing, pipeline)
        # Keras layers and tf.functions are not meant for concurrent calls; 2 cores gain
        # nothing from them anyway.
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """Trace every path once, so that the first request is as fast as the others."""
        image = np.zeros((48, 64, 3), np.uint8)
        self._answer(image, "warm-up", explain=True, steps=True)

    def info(self) -> dict[str, Any]:
        """What the page shows before the first upload."""
        return {
            "run": self.run.name,
            "classes": self.classes,
            "steps": self.step_names,
            "input_size": list(self.predictor.network.input_shape[1:3]),
            "max_bytes": self.max_bytes,
            "max_pixels": self.max_pixels,
            "tta": self.tta,
            "explain": self.explainer is not None,
        }

    def predict(
        self, data: bytes, name: str = "upload", *, explain: bool = False, steps: bool = False
    ) -> dict[str, Any]:
        """The ``predict --json`` object of an upload, plus ``heatmap`` (a data URL of the
        overlay) with ``explain`` and ``image``/``steps`` with ``steps``.

        Raises
        ------
        UploadRejected
            Too many bytes or pixels, not an image, corrupt: the status and the body to send.
        """
        if len(data) > self.max_bytes:
            raise rejection(
                name,
                "too_large",
                f"upload of {len(data)} bytes is over the limit of {self.max_bytes} bytes",
            )
        try:
            image = read_image(data, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise rejection(name, exc.kind, exc.reason) from None
        return self._answer(image, name, explain=explain, steps=steps)

    def _answer(
        self, image: np.ndarray, name: str, *, explain: bool, steps: bool
    ) -> dict[str, Any]:
        with self._lock:
            (prediction,) = self.predictor.predict_files([image])
            prediction.path = name
            (body,) = predictions_as_dicts([prediction])
            if explain and self.explainer is not None:
                result = self.explainer.explain(image, target=prediction.label)
                body["heatmap"] = data_url(for_display(result.overlay(image)), "jpg")
            if steps:
                body["image"] = data_url(for_display(image), "jpg")
                body["steps"] = self._steps(image)
        return body

    def _steps(self, image: np.ndarray) -> list[dict[str, str]]:
        """The image after each of the model's preprocessing layers, run one by one."""
        shown = []
        current: Any = np.asarray(image, np.float32)[None]
        for name, layer in zip(self.step_names, self.predictor.preprocessing, strict=True):
            current = layer(current)
            shown.append({"name": name, "image": data_url(for_display(np.asarray(current)[0]))})
        return shown
