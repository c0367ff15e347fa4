"""What every cvprep layer shares: backend switching, batching, border index maps.

The layers build on Keras' ``DataLayer`` (private: reached through :mod:`.compat` only): it
makes ``self.backend`` the TensorFlow backend while tracing inside ``tf.data`` and the
configured backend (TensorFlow or JAX) elsewhere. ``call`` must use ``self.backend`` ops only.
"""

from __future__ import annotations

import functools
from typing import Any

import keras

from cvprep.keras_layers.compat import DataLayer, seed_generator

PACKAGE = "cvprep"


def register(cls: type) -> type:
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


class ImageLayer(DataLayer):
    """Base layer: takes ``H×W×C`` or ``B×H×W×C`` images (uint8 or float in [0, 255]).

    Subclasses implement ``transform(images)`` on a float32 ``B×H×W×C`` batch. Output is float32
    in [0, 255], with the batch axis only when the input had one.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Integer inputs are accepted and cast in call(); Keras must not reject them first.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def call(self, inputs: Any) -> Any:
        return self._per_batch(inputs, self.transform)

    def _per_batch(self, inputs: Any, function: Any) -> Any:
        """``function`` on ``inputs`` as a float32 ``B×H×W×C`` batch; the batch axis is
        removed again when ``inputs`` had none."""
        images, unbatched = self._as_batch(inputs)
        outputs = function(images)
        return self.backend.numpy.squeeze(outputs, 0) if unbatched else outputs

    def _as_batch(self, inputs: Any) -> tuple[Any, bool]:
        """``inputs`` as a float32 batch, and whether they had no batch axis."""
        b = self.backend
        tensor = b.convert_to_tensor(inputs)
        # uint8 input needs no rounding or clipping before integer-exact arithmetic.
        self._whole_input = "int" in keras.backend.standardize_dtype(tensor.dtype)
        images = b.cast(tensor, "float32")
        unbatched = len(images.shape) == 3
        return (b.numpy.expand_dims(images, 0) if unbatched else images), unbatched

    def transform(self, images: Any) -> Any:
        raise NotImplementedError

    def compiled(self, method: str, *tensors: Any) -> Any:
        """``getattr(self, method)(*tensors)``, as one XLA cluster on the TensorFlow backend.

        For steps made of many small element-wise operations, which XLA fuses into a few
        loops: 1.5-4x faster on CPU (benchmarks/layers.py), same values within each layer's
        stated tolerance; SavedModel and TFLite export keep plain ops. Only inside a graph
        (``tf.function``, ``tf.data``, ``predict``/``fit``, export) and only when every height
        and width is known while tracing: XLA compiles once per new size, which eager calls
        on photos of many sizes, or a ``tf.data`` map over them (unknown sizes), would pay
        again and again; those run the plain ops. One step per cluster, not a whole layer:
        XLA copies a cheap producer into each consumer, and a luma computed once feeds a
        histogram and four table lookups.
        """
        if (
            self.backend.name == "tensorflow"
            and all(_static_size(t) for t in tensors)
            and not _executing_eagerly()
        ):
            return _compiled_method()(self, method, self._whole_input, *tensors)
        return getattr(self, method)(*tensors)

    def pixels(self, images: Any) -> Any:
        """``images`` as whole values in [0, 255], as OpenCV sees uint8 input."""
        if getattr(self, "_whole_input", False):
            return images
        return round_half_even(self.backend, images)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        height, width, channels = self.output_hwc(*input_shape[-3:])
        return (*input_shape[:-3], height, width, channels)

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        return height, width, channels

    def get_config(self) -> dict[str, Any]:
        return super().get_config()


class RandomImageLayer(ImageLayer):
    """Base of the random layers: they act only when called with ``training=True``.

    ``training=None`` counts as inference, because ``model.export()`` and ``predict`` call the
    model without ``training=False``: exported models must pass images through unchanged.

    As in Keras' own random layers, drawing the random parameters of a batch is separate from
    applying them: :meth:`get_random_transformation` returns a dict of tensors with one value
    per image, and :meth:`transform_images` applies such a dict, so a draw can be inspected,
    replayed on other images, or written by hand. Subclasses implement ``_draw(images, seed)``
    and ``_apply(images, transformation)`` on float32 ``B×H×W×C`` batches.
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = make_seed_generator(seed)  # DataLayer's seed lookup expects both

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training:
            return self.backend.cast(self.backend.convert_to_tensor(inputs), "float32")
        return super().call(inputs)

    def transform(self, images: Any) -> Any:
        return self._apply(images, self._draw(images, seed_generator(self)))

    def get_random_transformation(
        self, data: Any, training: bool = True, seed: int | None = None
    ) -> dict[str, Any] | None:
        """The random parameters for the images ``data`` (``H×W×C`` or ``B×H×W×C``): one
        value per image under each key; ``None`` when not ``training``.

        ``seed``: ``None`` draws from the layer's own generator (the next draw, as a call
        would); a number gives the draw of a generator seeded with it.
        """
        if not training:
            return None
        generator = seed_generator(self) if seed is None else make_seed_generator(seed)
        return self._draw(self._as_batch(data)[0], generator)

    def transform_images(
        self, images: Any, transformation: dict[str, Any] | None, training: bool = True
    ) -> Any:
        """``images`` (``H×W×C`` or ``B×H×W×C``) with ``transformation`` applied, as float32;
        unchanged when not ``training`` or without a transformation."""
        if not training or transformation is None:
            return self.backend.cast(self.backend.convert_to_tensor(images), "float32")
        return self._per_batch(images, lambda batch: self._apply(batch, transformation))

    def _draw(self, images: Any, seed: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(self, images: Any, transformation: dict[str, Any]) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


def _static_size(images: Any) -> bool:
    return len(images.shape) == 4 and None not in tuple(images.shape[1:3])


def _executing_eagerly() -> bool:
    import tensorflow as tf  # only reached on the TensorFlow backend

    return tf.executing_eagerly()


def _call_method(layer: ImageLayer, method: str, whole_input: bool, *tensors: Any) -> Any:
    layer._whole_input = whole_input  # read by pixels() while tracing
    return getattr(layer, method)(*tensors)


@functools.cache
def _compiled_method() -> Any:
    """One XLA-compiled ``tf.function`` for every layer: the layer, the method name and the
    input kind are Python arguments, so each combination and shape gets its own trace (a
    stable key: eager calls reuse it). Built on first use, so that TensorFlow is imported on
    that backend only."""
    import tensorflow as tf

    return tf.function(_call_method, jit_compile=True)


# --------------------------------------------------------------------------- backend helpers
def dims(b: Any, images: Any) -> tuple[Any, Any]:
    """Height and width: Python ints when static, scalar tensors when not."""
    static = images.shape
    dynamic = b.shape(images)
    height = static[1] if static[1] is not None else dynamic[1]
    width = static[2] if static[2] is not None else dynamic[2]
    return height, width


def border_index(b: Any, index: Any, size: Any, mode: str) -> Any:
    """Map (possibly out-of-range) int32 indices into ``[0, size)`` like OpenCV's border modes.

    ``"constant"`` clamps; the caller masks those positions with the fill value.
    """
    size = b.cast(size, "int32")
    if mode in ("replicate", "constant"):
        return b.numpy.clip(index, 0, size - 1)
    if mode == "wrap":
        return b.numpy.mod(index, size)
    if mode == "reflect":  # fedcba|abcdefgh|hgfedcb
        period = 2 * size
        folded = b.numpy.mod(index, period)
        return b.numpy.where(folded >= size, period - 1 - folded, folded)
    # reflect101: gfedcb|abcdefgh|gfedcba; a single row or column reflects onto itself.
    period = b.numpy.maximum(2 * size - 2, 1)
    folded = b.numpy.mod(index, period)
    return b.numpy.where(folded >= size, period - folded, folded)


def pad_index(b: Any, size: Any, before: Any = 0, after: Any = 0, mode: str = "reflect101") -> Any:
    """Gather indices that pad an axis of ``size`` by ``before``/``after`` (dynamic sizes too)."""
    index = b.numpy.arange(-before, size + after, dtype="int32")
    return border_index(b, index, size, mode)


def pad_axis(b: Any, images: Any, before: int, after: int, axis: int, mode: str) -> Any:
    """Pad one spatial axis of a ``B×H×W×C`` batch by gathering with :func:`border_index`."""
    if before == 0 and after == 0:
        return images
    size = b.shape(images)[axis] if images.shape[axis] is None else images.shape[axis]
    return b.numpy.take(images, pad_index(b, size, before, after, mode), axis=axis)


def correlate_axis(b: Any, padded: Any, weights: Any, axis: int) -> Any:
    """Correlate along ``axis`` with a 1-D kernel; ``padded`` already has the kernel's border.

    ``weights`` is a list of floats, or a ``B×K`` tensor for one kernel per batch element.
    """
    taps = len(weights) if isinstance(weights, list | tuple) else weights.shape[1]
    total = None
    for tap in range(taps):
        stop = tap - (taps - 1)
        window = padded[:, tap : stop or None] if axis == 1 else padded[:, :, tap : stop or None]
        if isinstance(weights, list | tuple):
            if weights[tap] == 0:
                continue
            term = window * weights[tap]
        else:
            term = window * b.numpy.reshape(weights[:, tap], (-1, 1, 1, 1))
        total = term if total is None else total + term
    return total


def round_half_even(b: Any, values: Any) -> Any:
    """OpenCV's saturate_cast to uint8: round half to even, clip to [0, 255]."""
    return b.numpy.clip(b.numpy.round(values), 0, 255)


def luma_fixed_point(b: Any, images: Any) -> Any:
    """OpenCV's 8-bit RGB→gray, (9798 R + 19235 G + 3735 B + 2^14) >> 15, exact in float32.

    These are the coefficients OpenCV 4.9+/5 use (checked against cv2 on all 2^24 colours).
    One matrix product: every partial sum stays below 2^24, so float32 holds it exactly in
    any summation order.
    """
    weights = b.convert_to_tensor([[9798.0], [19235.0], [3735.0]], "float32")
    return b.numpy.floor((mix_channels(b, images[..., :3], weights) + 16384.0) * (1.0 / 32768.0))


def mix_channels(b: Any, images: Any, matrix: Any) -> Any:
    """``images @ matrix`` over the channel axis (C×K), as one matrix product of all pixels.

    (A 4-D ``matmul`` would broadcast into one small product per image row: far slower.)
    """
    shape = b.shape(images)
    flat = b.numpy.matmul(b.numpy.reshape(images, (-1, images.shape[-1])), matrix)
    return b.numpy.reshape(flat, (shape[0], shape[1], shape[2], matrix.shape[-1]))


# --------------------------------------------------------------------------- random layers
def make_seed_generator(seed: int | None) -> Any:
    return keras.random.SeedGenerator(seed)


def check_range(
    name: str,
    value: Any,
    *,
    around: float = 0.0,
    minimum: float | None = None,
    one_sided: bool = False,
) -> tuple[float, float]:
    """A ``(low, high)`` pair, or one number ``v`` meaning ``around ± |v|`` (Keras' ``factor``
    convention: ``RandomRotation(10)`` and ``RandomRotation(-10)`` are both ±10°), or
    ``(minimum, v)`` when ``one_sided``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if one_sided:
            value = (minimum if minimum is not None else 0.0, value)
        else:
            value = (around - abs(value), around + abs(value))
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"`{name}` should be a number or a (low, high) pair. Received: {name}={value!r}"
        )
    low, high = (float(v) for v in value)
    if low > high or (minimum is not None and low < minimum):
        bound = f"{minimum} <= " if minimum is not None else ""
        raise ValueError(f"`{name}` should satisfy {bound}low <= high. Received: {name}={value!r}")
    return low, high


def check_probability(probability: Any) -> float:
    if (
        isinstance(probability, bool)
        or not isinstance(probability, int | float)
        or not (0 <= probability <= 1)
    ):
        raise ValueError(
            f"`probability` should be between 0 and 1. Received: probability={probability!r}"
        )
    return float(probability)
