"""Prediction and evaluation on raw image files, through the saved raw-image model.

One code path serves ``cvprep evaluate``, ``cvprep predict`` and training's own final test
figure, so the three agree exactly. Each image is decoded with cvprep's reader and run through
the model's preprocessing layers on its own (images differ in size); the network then runs on
batches.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.dataset.preprocess import read_preprocessing_record
from cvprep.errors import CvprepError, ImageError, ParameterError, filesystem_errors
from cvprep.files import EmptyTreeError, list_tree
from cvprep.io import read_image
from cvprep.training.data import list_split
from cvprep.training.run import Run, load_run, write_json

BATCH_SIZE = 32
LISTED = 10  # rejected files named in an error message; the result lists them all


@dataclass
class Prediction:
    path: str
    label: str = ""
    probability: float = 0.0
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str = ""
    overlay: str = ""


def class_probability(outputs: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class probabilities (N×classes), also for the single sigmoid output."""
    if num_classes == 2:
        positive = outputs.reshape(-1)
        return np.stack([1 - positive, positive], axis=1)
    return outputs


def metrics_from_predictions(
    truth: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class recall and the rest of scikit-learn's report.

    ``balanced_accuracy`` is the mean recall over the classes that have images (scikit-learn's
    ``balanced_accuracy_score``): on a 4:1 test set, a model that always answers the larger
    class has accuracy 0.8 but balanced accuracy 0.5.

    Examples
    --------
    >>> m = metrics_from_predictions(np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0]),
    ...                              ["cat", "dog"])
    >>> m["accuracy"], m["balanced_accuracy"], m["per_class_recall"]
    (0.8, 0.5, {'cat': 1.0, 'dog': 0.0})
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(range(len(classes)))
    per_class = classification_report(
        truth, predicted, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(truth, predicted)) if len(truth) else 0.0,
        "balanced_accuracy": balanced_accuracy(truth, predicted),
        "per_class_recall": {c: float(per_class[c]["recall"]) for c in classes},
        "count": len(truth),
        "per_class": {c: {k: float(v) for k, v in per_class[c].items()} for c in classes},
        "macro_avg": {k: float(v) for k, v in per_class["macro avg"].items()},
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "classes": classes,
    }


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The mean per-class recall over the classes present in ``truth`` (0.0 without images)."""
    from sklearn.metrics import balanced_accuracy_score

    if not len(truth):
        return 0.0
    with warnings.catch_warnings():
        # A predicted class with no true image: scikit-learn warns and leaves it out, as meant.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(truth, predicted))


Source = str | os.PathLike[str] | np.ndarray
"""An image to predict: a file path, or an RGB ``uint8`` array (``H×W×3``, or ``H×W`` gray)."""


class Predictor:
    """Runs a raw-image model (``wrap_for_raw_images``) on image files or RGB arrays.

    ``tta=True`` averages the class probabilities of each image and its horizontal mirror
    (test-time augmentation); the mirror is taken of the network's input, after the model's
    preprocessing layers, so it costs one more pass of the network only.
    """

    def __init__(self, model: Any, classes: list[str], *, tta: bool = False) -> None:
        import keras

        self.classes = classes
        self.tta = tta
        # The saved model is a chain: input, preprocessing layers, Resize, trained network.
        self.preprocessing = model.layers[1:-1]
        self.network = model.layers[-1]
        self._prepare, self._classify = self._prepare_eager, self._classify_eager
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            channels = model.input_shape[-1]
            self._prepare = tf.function(
                self._prepare_eager,
                input_signature=[tf.TensorSpec((1, None, None, channels), tf.float32)],
            )
            self._classify = tf.function(
                self._classify_eager,
                input_signature=[tf.TensorSpec((None, *self.network.input_shape[1:]), tf.float32)],
            )

    def _prepare_eager(self, image: Any) -> Any:
        for layer in self.preprocessing:
            image = layer(image)
        return image

    def _classify_eager(self, batch: Any) -> Any:
        return self.network(batch, training=False)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The network's input for one RGB image: the model's preprocessing layers applied."""
        return np.asarray(self._prepare(np.asarray(image, np.float32)[None]))[0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N×classes) of prepared network inputs; with ``tta``, the mean
        over each input and its horizontal mirror."""
        outputs = np.asarray(self._classify(batch))
        if self.tta:
            mirrored = np.asarray(self._classify(np.ascontiguousarray(batch[:, :, ::-1])))
            outputs = (outputs + mirrored) / 2
        return class_probability(outputs, len(self.classes))

    def predict_files(self, sources: Iterable[Source]) -> list[Prediction]:
        """One prediction per file or array, in order; unreadable files get an ``error``."""
        results: list[Prediction] = []
        pending: list[tuple[int, np.ndarray]] = []
        for name, image in _decoded(sources):
            if isinstance(image, ImageError):
                results.append(Prediction(name, error=f"[{image.kind}] {image.reason}"))
                continue
            results.append(Prediction(name))
            pending.append((len(results) - 1, self.prepare(image)))
            if len(pending) == BATCH_SIZE:
                self._flush(pending, results)
        self._flush(pending, results)
        return results

    def _flush(self, pending: list[tuple[int, np.ndarray]], results: list[Prediction]) -> None:
        if not pending:
            return
        probabilities = self.probabilities(np.stack([image for _, image in pending]))
        for (index, _), row in zip(pending, probabilities, strict=True):
            best = int(row.argmax())
            results[index].label = self.classes[best]
            results[index].probability = float(row[best])
            results[index].probabilities = {
                c: float(p) for c, p in zip(self.classes, row, strict=True)
            }
        pending.clear()


def source_name(source: Source, index: int) -> str:
    """How a prediction names its image: the path as given, or ``<array N>``."""
    return f"<array {index}>" if isinstance(source, np.ndarray) else str(source)


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An RGB ``uint8`` array as the model takes it (``H×W`` gray is repeated to three
    channels); anything else is a :class:`ParameterError` naming ``name``."""
    array = np.asarray(image)
    if (
        array.dtype != np.uint8
        or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3))
        or 0 in array.shape
    ):
        raise ParameterError(
            f"`{name}` should be an RGB uint8 array (H×W×3, or H×W gray). "
            f"Received: shape={array.shape}, dtype={array.dtype}"
        )
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def _decoded(sources: Iterable[Source]) -> Iterator[tuple[str, Any]]:
    """Decode in two threads (OpenCV releases the GIL) while the model works; arrays pass
    through."""

    def load(item: tuple[int, Source]) -> tuple[str, Any]:
        index, source = item
        name = source_name(source, index)
        if isinstance(source, np.ndarray):
            return name, as_rgb(source, name)
        try:
            return name, read_image(source)
        except ImageError as exc:
            return name, exc

    with ThreadPoolExecutor(2) as pool:
        yield from pool.map(load, enumerate(sources))


@dataclass
class Evaluation:
    """Metrics of a model on a folder of class subfolders, and every prediction."""

    metrics: dict[str, Any]
    predictions: list[Prediction]
    truth: list[str]

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def mistakes(self) -> list[tuple[Prediction, str]]:
        """Misclassified images, most confident mistakes first."""
        wrong = [
            (p, t)
            for p, t in zip(self.predictions, self.truth, strict=True)
            if not p.error and p.label != t
        ]
        return sorted(wrong, key=lambda pair: -pair[0].probability)


def evaluate_folder(predictor: Predictor, folder: Path, split_name: str = "") -> Evaluation:
    """Predict every image of ``folder``'s class subfolders and score it.

    Images the model cannot score are never dropped silently: those in class folders the
    model does not know, or at the top level of ``folder``, are listed in
    ``metrics["rejected"]`` with the reason (and the unknown classes in
    ``metrics["unknown_classes"]``), like unreadable ones; ``cvprep evaluate`` prints them
    and exits 1. The known classes are still scored: their figures stay meaningful, and the
    exit status and the listing say that something was left out (refusing would only force
    the user to copy the folder without it).
    """
    classes = predictor.classes
    split = list_split(folder, classes)
    outside = split.describe_outside()
    if not split.files and outside:
        raise CvprepError(
            f"{folder}: no images of the model's classes {', '.join(classes)}, only "
            f"{len(outside)} other file(s): {_some(outside)}"
        )
    if not split.files:
        raise EmptyTreeError(folder, f"no images of classes {classes}")
    predictions = predictor.predict_files(split.files)
    unreadable = {p.path: p.error for p in predictions if p.error}
    if len(unreadable) == len(predictions):
        raise CvprepError(
            f"nothing to score in {folder}: all {len(predictions)} images of the model's "
            f"classes were rejected: {_some(unreadable)}"
        )
    good = [(p, label) for p, label in zip(predictions, split.labels, strict=True) if not p.error]
    truth = np.array([label for _, label in good], int)
    predicted = np.array([classes.index(p.label) for p, _ in good], int)
    metrics = metrics_from_predictions(truth, predicted, classes)
    metrics["evaluated_on"] = str(folder)
    metrics["split"] = split_name or folder.name
    metrics["rejected"] = {**unreadable, **outside}
    metrics["unknown_classes"] = _count_classes(split.outside)
    return Evaluation(metrics, predictions, [classes[label] for label in split.labels])


def _some(reasons: dict[str, str]) -> str:
    """The first few ``file (reason)`` pairs, for one-line messages."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in list(reasons.items())[:LISTED])
    more = len(reasons) - LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _count_classes(outside: tuple[tuple[str, str | None], ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, cls in outside:
        if cls is not None:
            counts[cls] = counts.get(cls, 0) + 1
    return counts


def evaluation_folder(data: Path) -> tuple[Path, str]:
    """DATA/test, else DATA/val, else DATA itself (a folder of class subfolders)."""
    for name in ("test", "val"):
        if (data / name).is_dir():
            return data / name, name
    return data, data.name


@filesystem_errors
def evaluate(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    write: bool = True,
    tta: bool = False,
) -> Evaluation:
    """Evaluate a run's raw-image model on DATA/test (or DATA/val, or DATA's class folders).

    DATA holds raw images (the split, not the preprocessed copy: the model applies the
    preprocessing itself). Writes ``RUN/evaluation/metrics.json`` and
    ``confusion_matrix.png`` unless ``write=False``. ``tta=True`` averages each image's
    probabilities with its mirror's (see :class:`Predictor`); ``metrics["tta"]`` records it.

    Examples
    --------
    >>> from cvprep.training import evaluate
    >>> result = evaluate(trained_run, raw_data)
    >>> result.metrics["split"], result.metrics["count"]
    ('test', 8)
    >>> 0.0 <= result.accuracy <= 1.0
    True
    """
    from cvprep.training import report

    loaded = load_run(run)
    data = Path(data)
    recorded = read_preprocessing_record(data).spec
    if recorded and recorded == loaded.data_spec:
        raise CvprepError(
            f"{data} was preprocessed with {recorded!r}, which the model already applies to raw "
            "images: evaluate on the raw (split) folder instead"
        )
    folder, split_name = evaluation_folder(data)
    result = evaluate_folder(Predictor(loaded.model, loaded.classes, tta=tta), folder, split_name)
    result.metrics["tta"] = tta
    if write:
        out = loaded.folder / "evaluation"
        out.mkdir(exist_ok=True)
        write_json(out / "metrics.json", result.metrics)
        report.plot_confusion(
            result.metrics["confusion_matrix"],
            loaded.classes,
            out / "confusion_matrix.png",
            f"confusion matrix ({split_name})",
        )
    return result


def image_paths(sources: Iterable[Source]) -> list[Path | np.ndarray]:
    """Files as given, every candidate file of the folders (links followed), and arrays
    (checked: RGB ``uint8``)."""
    paths: list[Path | np.ndarray] = []
    for index, given in enumerate(sources):
        if isinstance(given, np.ndarray):
            paths.append(as_rgb(given, source_name(given, index)))
            continue
        source = Path(given)
        if source.is_dir():
            tree = list_tree(source)
            if not tree.files:
                raise EmptyTreeError(source)
            paths.extend(source / p for p in tree.files)
        else:
            paths.append(source)
    return paths


@filesystem_errors
def predict(
    run: str | os.PathLike[str] | Run,
    images: Iterable[Source],
    *,
    tta: bool = False,
    explain: str | os.PathLike[str] | None = None,
) -> list[Prediction]:
    """Predict the class of raw images with a run's model.

    Parameters
    ----------
    run : run folder or :class:`Run`
    images : iterable of paths or arrays
        Image files, folders (every image in them) and RGB ``uint8`` arrays (``H×W×3``, or
        ``H×W`` gray), named ``<array N>`` in the results.
    tta : bool
        Average each image's probabilities with its horizontal mirror's.
    explain : folder, optional
        Write a heatmap overlay per image there (see :func:`cvprep.training.explain`); its
        path is the prediction's ``overlay``.

    Examples
    --------
    >>> from cvprep.training import predict
    >>> photo = sorted((raw_data / "test" / "round").iterdir())[0]
    >>> (prediction,) = predict(trained_run, [photo])
    >>> prediction.label in ("angular", "round"), sorted(prediction.probabilities)
    (True, ['angular', 'round'])
    >>> (from_array,) = predict(trained_run, [cvprep.read_image(photo)])
    >>> from_array.path, from_array.label == prediction.label
    ('<array 0>', True)
    >>> predict(trained_run, [tmp])  # an empty folder
    Traceback (most recent call last):
    cvprep.files.EmptyTreeError: ...: no image files found
    """
    loaded = run if isinstance(run, Run) else load_run(run)
    sources = image_paths(images)
    predictions = Predictor(loaded.model, loaded.classes, tta=tta).predict_files(sources)
    if explain is not None:
        from cvprep.training.explain import write_overlays

        write_overlays(loaded, sources, predictions, Path(explain))
    return predictions


def predictions_as_dicts(predictions: list[Prediction]) -> list[dict[str, Any]]:
    """What ``predict --json`` prints: one object per image (``overlay`` only with
    ``--explain``)."""
    rows = [asdict(p) for p in predictions]
    for row in rows:
        if not row["overlay"]:
            del row["overlay"]
    return rows
