"""Why a run's model says what it says: class-activation heatmaps on the raw image.

The heatmap is computed on the saved raw-image model (raw image → the model's own
preprocessing layers → Resize → trained network). The feature map explained is the output of
the network's last layer with a 4-D output before its head: the last convolution block of
``cnn`` and ``classic``, and the whole nested ``keras.applications`` model of a backbone
(``include_top=False``, so its output *is* its last convolutional feature map). No layer
names are hard-coded. The map, at the network's input size, is then carried back through
the geometry of the preprocessing layers (``Resize`` stretch/pad/crop, ``Rotate``) onto the
raw image: a pixel the model never saw (cropped away, rotated out) gets 0.

Methods (``method=``): ``"gradcam"`` (Selvaraju et al. 2017: channel weights are the mean
gradient), ``"gradcam++"`` (Chattopadhay et al. 2018) and ``"layercam"`` (Jiang et al. 2021:
each position weighted by its own positive gradient). The default is the one that did best
on the deletion test of ``benchmarks/explain_deletion.py`` (README).

The class score differentiated is the head's logit (before the sigmoid or softmax; for one
sigmoid unit, ``-logit`` for class 0), so that a confident prediction does not saturate the
gradient to zero.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from cvprep import ops
from cvprep.errors import CvprepError, ImageError, ParameterError
from cvprep.io import read_image, write_image
from cvprep.training.evaluate import Prediction, Predictor, Source, as_rgb
from cvprep.training.run import Run, load_run

Method = Literal["gradcam", "gradcam++", "layercam"]
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "layercam")
DEFAULT_METHOD: Method = "gradcam"
OVERLAY_ALPHA = 0.45


@dataclass
class Explanation:
    """A heatmap on the raw image and the prediction it explains.

    Attributes
    ----------
    heatmap : numpy.ndarray
        ``float32`` ``H×W`` in [0, 1], the raw image's size: how much each pixel speaks for
        ``target`` (1 = the strongest evidence in this image; all 0 when nothing does).
    target : str
        The class explained (the predicted one unless another was asked for).
    label, probability, probabilities
        The model's prediction for the image, as :func:`cvprep.training.predict` gives it.
    """

    heatmap: np.ndarray
    target: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def overlay(self, image: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
        """``image`` with the heatmap blended over it (see :func:`overlay`)."""
        return overlay(image, self.heatmap, alpha=alpha)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend a [0, 1] heatmap, coloured with the *jet* map (blue = none, red = most), over an
    RGB ``uint8`` image of the same size; returns RGB ``uint8``.

    Examples
    --------
    >>> out = overlay(np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), np.float32))
    >>> out.shape, out.dtype, out[0, 0].tolist()  # jet's dark red (128, 0, 0), 45 % opaque
    ((4, 6, 3), dtype('uint8'), [58, 0, 0])
    """
    rgb = as_rgb(image)
    if heatmap.shape != rgb.shape[:2]:
        raise ParameterError(
            f"`heatmap` should have the image's size {rgb.shape[:2]}. Received: {heatmap.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"`alpha` should be between 0 and 1. Received: alpha={alpha}")
    levels = np.clip(np.rint(heatmap * 255), 0, 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)


# --------------------------------------------------------------------------- geometry
def _layer_affine(layer: Any, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The 3×3 map of pixel coordinates (x, y, 1) from a layer's input to its output, and the
    output ``(height, width)``; ``cvprep.ops`` holds the geometry the layers follow."""
    from cvprep.keras_layers import Resize, Rotate

    if isinstance(layer, Resize):
        target_h, target_w = layer.size
        content_h, content_w = ops.fitted_size(height, width, layer.size, layer.fit)
        if layer.fit == "crop":
            top, left = -((content_h - target_h) // 2), -((content_w - target_w) // 2)
        else:  # stretch: no offset; pad: the letterbox's top/left border
            top, left = (target_h - content_h) // 2, (target_w - content_w) // 2
        sx, sy = content_w / width, content_h / height
        # Pixel centres: x_out + 0.5 = (x_in + 0.5) * scale, as cv2.resize samples.
        matrix = [[sx, 0, 0.5 * sx - 0.5 + left], [0, sy, 0.5 * sy - 0.5 + top]]
        return np.vstack([matrix, [0, 0, 1]]), (target_h, target_w)
    if isinstance(layer, Rotate):
        matrix, size = ops.rotation_matrix(height, width, layer.angle, expand=layer.expand)
        return np.vstack([matrix, [0, 0, 1]]), size
    shape = layer.compute_output_shape((1, height, width, 3))
    if tuple(shape[1:3]) != (height, width):
        raise CvprepError(
            f"cannot map a heatmap back through layer {layer.name!r} "
            f"({type(layer).__name__}), which changes the image's size"
        )
    return np.eye(3), (height, width)


def input_affine(layers: Sequence[Any], height: int, width: int) -> np.ndarray:
    """The 2×3 affine map from raw-image pixel coordinates to the network's input, through
    the preprocessing ``layers`` (a ``height×width`` raw image).

    Examples
    --------
    >>> from cvprep.keras_layers import Resize
    >>> input_affine([Resize((50, 100), fit="pad")], 100, 100)  # scaled by 1/2, then centred
    array([[ 0.5 ,  0.  , 24.75],
           [ 0.  ,  0.5 , -0.25]])
    """
    matrix = np.eye(3)
    for layer in layers:
        step, (height, width) = _layer_affine(layer, height, width)
        matrix = step @ matrix
    return matrix[:2]


def to_raw_image(
    cam: np.ndarray, input_size: tuple[int, int], affine: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """A feature-map heatmap upsampled to the network's ``input_size``, then carried back onto
    a raw image of ``shape`` through ``affine`` (raw → network input), scaled to a maximum of
    1; 0 where the network's input did not come from."""
    size = (input_size[1], input_size[0])
    network = cv2.resize(cam.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    raw = cv2.warpAffine(
        network,
        affine,
        (shape[1], shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    # Interpolation shaves the peak: the strongest visible evidence is 1 again.
    return normalised(np.clip(raw, 0.0, None)[None])[0]


# --------------------------------------------------------------------------- the maps
def _feature_layer(network: Any) -> Any:
    """The network's last top-level layer with a 4-D (``B×h×w×C``) output."""
    for layer in reversed(network.layers):
        if len(layer.output.shape) == 4:
            return layer
    raise CvprepError(f"model {network.name!r} has no layer with a 4-D (image-like) output")


def _gradient_model(network: Any) -> tuple[Any, Any]:
    """A model that gives (feature map, head input, probabilities) in one pass, sharing the
    network's layers and weights, and the head (the last layer, when it is a Dense)."""
    import keras

    features, head = _feature_layer(network), network.layers[-1]
    found: dict[str, Any] = {}

    # Re-running the graph with the same layers gives tensors of *this* graph: a nested
    # backbone's own ``.output`` belongs to its inner graph and cannot be an output here.
    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer is features:
            found["features"] = out
        if layer is head:
            found["head_input"] = args[0]
        return out

    clone = keras.models.clone_model(
        network, clone_function=lambda layer: layer, call_function=call
    )
    outputs = [found["features"], found["head_input"], clone.outputs[0]]
    dense = head if isinstance(head, keras.layers.Dense) else None
    return keras.Model(clone.inputs, outputs, name="explain"), dense


def _scores(head_input: Any, probabilities: Any, dense: Any, target: Any, classes: int) -> Any:
    """The logit of ``target`` per image (-logit for class 0 of one sigmoid unit); the log
    probability when the head is not a Dense layer."""
    import tensorflow as tf

    if dense is None:
        chosen = tf.gather(_class_probability_tf(probabilities, classes), target, batch_dims=1)
        return tf.math.log(tf.maximum(chosen, 1e-12))
    logits = tf.matmul(head_input, dense.kernel) + dense.bias
    if classes == 2:
        return tf.where(target == 1, logits[:, 0], -logits[:, 0])
    return tf.gather(logits, target, batch_dims=1)


def _class_probability_tf(outputs: Any, classes: int) -> Any:
    """:func:`~cvprep.training.evaluate.class_probability` on tensors, inside the gradient
    function."""
    import tensorflow as tf

    return tf.concat([1 - outputs, outputs], axis=1) if classes == 2 else outputs


def _combine(features: Any, gradients: Any, method: str) -> Any:
    """B×h×w maps from feature maps and the gradients of the class score."""
    import tensorflow as tf

    if method == "layercam":
        weighted = tf.nn.relu(gradients) * features
    elif method == "gradcam++":
        # Second and third derivatives of exp(score) in closed form (Chattopadhay et al.).
        squared, cubed = gradients**2, gradients**3
        total = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
        denominator = 2 * squared + total * cubed
        alphas = squared / tf.where(denominator != 0, denominator, tf.ones_like(denominator))
        weights = tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=(1, 2), keepdims=True)
        weighted = weights * features
    else:
        weighted = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True) * features
    return tf.nn.relu(tf.reduce_sum(weighted, axis=-1))


def normalised(cams: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (all-zero maps stay zero); non-finite values are 0."""
    cams = np.nan_to_num(np.asarray(cams, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peaks = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peaks > 0, cams / np.where(peaks > 0, peaks, 1), 0.0).astype(np.float32)


class Explainer:
    """Heatmaps of a raw-image model, one gradient pass per batch (TensorFlow backend).

    Holds a :class:`~cvprep.training.evaluate.Predictor` (the same preprocessing as
    ``predict``) and a gradient model built once.
    """

    def __init__(self, model: Any, classes: list[str], *, method: Method = DEFAULT_METHOD) -> None:
        import keras
        import tensorflow as tf

        if method not in METHODS:
            raise ParameterError(f"`method` should be one of {METHODS}. Received: {method!r}")
        if keras.backend.backend() != "tensorflow":
            raise CvprepError(
                "explanations need the TensorFlow backend (gradients through the model); "
                f"KERAS_BACKEND is {keras.backend.backend()!r}"
            )
        self.classes, self.method = classes, method
        self.predictor = Predictor(model, classes)
        self.input_size = tuple(self.predictor.network.input_shape[1:3])
        grad_model, dense = _gradient_model(self.predictor.network)
        count = len(classes)

        def maps(batch: Any, target: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                features, head_input, probabilities = grad_model(batch, training=False)
                scores = _scores(head_input, probabilities, dense, target, count)
            gradients = tape.gradient(scores, features)
            return _combine(features, gradients, method), _class_probability_tf(
                probabilities, count
            )

        spec = tf.TensorSpec((None, *self.predictor.network.input_shape[1:]), tf.float32)
        self._maps = tf.function(
            maps, input_signature=[spec, tf.TensorSpec((None,), tf.int32)], reduce_retracing=True
        )

    def network_maps(
        self, batch: np.ndarray, targets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised maps at the feature map's resolution, and the class probabilities, for a
        batch of prepared network inputs; ``targets`` default to the predicted classes."""
        batch = np.asarray(batch, np.float32)
        if targets is None:
            targets = self.predictor.probabilities(batch).argmax(axis=1)
        cams, probabilities = self._maps(batch, np.asarray(targets, np.int32))
        return normalised(np.asarray(cams)), np.asarray(probabilities)

    def to_raw_image(self, cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A network map carried back onto a raw image of ``shape`` (``(height, width)``)."""
        affine = input_affine(self.predictor.preprocessing, shape[0], shape[1])
        return to_raw_image(cam, self.input_size, affine, shape)

    def explain(self, image: np.ndarray, *, target: str | None = None) -> Explanation:
        """The heatmap of one RGB ``uint8`` image, for ``target`` (default: the prediction)."""
        rgb = as_rgb(image)
        prepared = self.predictor.prepare(rgb)[None]
        index = None if target is None else [self._class_index(target)]
        cams, probabilities = self.network_maps(prepared, index)
        row = probabilities[0]
        best = int(row.argmax())
        return Explanation(
            heatmap=self.to_raw_image(cams[0], rgb.shape[:2]),
            target=target or self.classes[best],
            label=self.classes[best],
            probability=float(row[best]),
            probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
        )

    def _class_index(self, target: str) -> int:
        if target not in self.classes:
            raise ParameterError(
                f"`target` should be one of the run's classes {self.classes}. Received: {target!r}"
            )
        return self.classes.index(target)


def explain(
    run: str | os.PathLike[str] | Run,
    image: Source,
    *,
    target: str | None = None,
    method: Method = DEFAULT_METHOD,
) -> Explanation:
    """Where in ``image`` a run's model finds the evidence for its prediction.

    Parameters
    ----------
    run : run folder or :class:`~cvprep.training.Run`
    image : path or array
        An image file (decoded with :func:`cvprep.read_image`) or an RGB ``uint8`` array.
    target : str, optional
        The class to explain; default: the predicted one.
    method : {"gradcam", "gradcam++", "layercam"}

    Returns
    -------
    Explanation
        ``heatmap`` (``float32`` ``H×W`` in [0, 1], the image's size) and the prediction.

    Raises
    ------
    ImageError
        When the file cannot be read.

    Examples
    --------
    >>> from cvprep.training import explain
    >>> photo = sorted((raw_data / "test" / "round").iterdir())[0]
    >>> result = explain(trained_run, photo)
    >>> result.heatmap.shape == cvprep.read_image(photo).shape[:2], result.heatmap.dtype
    (True, dtype('float32'))
    >>> bool(0 <= result.heatmap.min() <= result.heatmap.max() <= 1), result.target == result.label
    (True, True)
    """
    loaded = run if isinstance(run, Run) else load_run(run)
    picture = image if isinstance(image, np.ndarray) else read_image(image)
    return Explainer(loaded.model, loaded.classes, method=method).explain(picture, target=target)


# --------------------------------------------------------------------------- deletion test
def top_fraction(scores: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the ``fraction`` of pixels with the highest ``scores`` (ties, such
    as a flat zero region, broken at random rather than by position).

    Examples
    --------
    >>> scores = np.arange(10, dtype=np.float32).reshape(2, 5)
    >>> top_fraction(scores, 0.2, np.random.default_rng(0)).nonzero()
    (array([1, 1]), array([3, 4]))
    """
    if not 0 < fraction < 1:
        raise ParameterError(f"`fraction` should be in (0, 1). Received: fraction={fraction}")
    count = max(1, round(fraction * scores.size))
    jitter = rng.uniform(0, 1e-6, scores.shape)
    order = np.argpartition(-(scores + jitter).ravel(), count - 1)[:count]
    mask = np.zeros(scores.size, bool)
    mask[order] = True
    return mask.reshape(scores.shape)


def hide(image: np.ndarray, mask: np.ndarray, fill: Literal["mean", "blur"] = "mean") -> np.ndarray:
    """``image`` with the ``mask`` pixels replaced by the image's mean colour, or by a strong
    Gaussian blur of it (sigma: 1/20 of the longer side) — what the deletion test hides.

    Examples
    --------
    >>> image = np.array([[[0, 0, 0], [200, 100, 50]]], np.uint8)
    >>> hide(image, np.array([[True, False]]))[0, 0].tolist()
    [100, 50, 25]
    """
    rgb = as_rgb(image)
    if fill == "blur":
        replacement = cv2.GaussianBlur(rgb, (0, 0), max(rgb.shape[:2]) / 20)
    elif fill == "mean":
        replacement = np.broadcast_to(rgb.reshape(-1, 3).mean(axis=0).round(), rgb.shape)
    else:
        raise ParameterError(f"`fill` should be 'mean' or 'blur'. Received: fill={fill!r}")
    return np.where(mask[..., None], replacement, rgb).astype(np.uint8)


# --------------------------------------------------------------------------- overlay files
def overlay_name(source: Source, index: int) -> str:
    """A file name for the overlay of one input: its stem and a hash of its absolute path
    (inputs named alike in different folders get different names; a re-run the same ones).

    Examples
    --------
    >>> overlay_name("a/cat.jpg", 0) != overlay_name("b/cat.jpg", 1)
    True
    >>> overlay_name(np.zeros((2, 2, 3), np.uint8), 3)
    'array-0003.jpg'
    """
    if isinstance(source, np.ndarray):
        return f"array-{index:04d}.jpg"
    path = Path(source)
    digest = hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:12]
    return f"{path.stem}-{digest}.jpg"


def write_overlays(
    run: Run,
    sources: Sequence[Source],
    predictions: list[Prediction],
    folder: Path,
    *,
    method: Method = DEFAULT_METHOD,
) -> None:
    """For each prediction without an error, the photo with the heatmap of its predicted
    class blended over it, written atomically as ``folder/overlay_name(...)``; the path goes
    into the prediction's ``overlay``."""
    folder.mkdir(parents=True, exist_ok=True)
    explainer = Explainer(run.model, run.classes, method=method)
    for index, (source, prediction) in enumerate(zip(sources, predictions, strict=True)):
        if prediction.error:
            continue
        try:
            image = source if isinstance(source, np.ndarray) else read_image(source)
        except ImageError as exc:  # changed since it was predicted
            prediction.error = f"[{exc.kind}] {exc.reason}"
            continue
        result = explainer.explain(image, target=prediction.label)
        target = folder / overlay_name(source, index)
        write_image(target, result.overlay(image), quality=90)
        prediction.overlay = str(target)


def report_explainer(model: Any, classes: list[str]) -> Explainer | None:
    """An explainer for the training report's mistakes, or None where heatmaps cannot be
    computed (another Keras backend than TensorFlow)."""
    import keras

    return Explainer(model, classes) if keras.backend.backend() == "tensorflow" else None


def write_overlay_thumbnail(
    explainer: Explainer, source: Source, target: str, path: Path, side: int
) -> bool:
    """The heatmap of class ``target`` over ``source``, its longer side at most ``side``
    pixels, written atomically; False, and nothing written, when the image cannot be read."""
    try:
        image = source if isinstance(source, np.ndarray) else read_image(source)
    except ImageError:
        return False
    picture = explainer.explain(image, target=target).overlay(image)
    scale = side / max(picture.shape[:2])
    if scale < 1:
        size = (max(1, round(picture.shape[0] * scale)), max(1, round(picture.shape[1] * scale)))
        picture = ops.resize(picture, size)
    write_image(path, picture, quality=85)
    return True
