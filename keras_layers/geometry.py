"""Resize and rotation layers that reproduce OpenCV's sampling.

Resizing is two matrix products with per-axis weight matrices built in the graph from the
(possibly dynamic) input size, so every interpolation and fit mode shares one mechanism.
Rotation reproduces ``cv2.warpAffine`` (OpenCV 5 samples at float source coordinates).
"""

from __future__ import annotations

import math
from typing import Any

from cvprep import ops
from cvprep.keras_layers.base import (
    ImageLayer,
    RandomImageLayer,
    border_index,
    check_range,
    dims,
    pad_index,
    register,
)

_CUBIC_A = -0.75  # OpenCV's bicubic coefficient (Keras/TF use -0.5)


def _as_float(b: Any, value: Any) -> Any:
    return b.cast(value, "float32")


def _linear_taps(b: Any, source: Any, size: Any) -> list[tuple[Any, Any]]:
    """Two taps (index, weight) per output; OpenCV clamps at the borders with weight 0."""
    first = b.numpy.floor(source)
    fraction = source - first
    last = _as_float(b, size) - 1.0
    fraction = b.numpy.where((first < 0) | (first >= last), 0.0, fraction)
    first = b.numpy.clip(first, 0.0, last)
    return [(first, 1.0 - fraction), (b.numpy.minimum(first + 1.0, last), fraction)]


def _cubic_taps(b: Any, source: Any, size: Any) -> list[tuple[Any, Any]]:
    first = b.numpy.floor(source)
    x = source - first
    a = _CUBIC_A
    c0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    c1 = ((a + 2) * x - (a + 3)) * x * x + 1
    c2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    c3 = 1.0 - c0 - c1 - c2
    last = _as_float(b, size) - 1.0
    return [
        (b.numpy.clip(first + offset, 0.0, last), weight)
        for offset, weight in zip((-1.0, 0.0, 1.0, 2.0), (c0, c1, c2, c3), strict=True)
    ]


def _taps_to_matrix(b: Any, taps: list[tuple[Any, Any]], size: Any) -> Any:
    columns = _as_float(b, b.numpy.arange(size))[None, :]
    matrix = None
    for index, weight in taps:
        term = b.cast(columns == index[:, None], "float32") * weight[:, None]
        matrix = term if matrix is None else matrix + term
    return matrix


def _area_taps(b: Any, rows: Any, scale: float, size: int) -> list[tuple[Any, Any]]:
    """Area averaging as ``ceil(scale) + 1`` taps per output (sizes known when tracing):
    output ``o`` averages source ``[o·scale, (o+1)·scale)``, partial pixels weighted."""
    start = rows * scale
    first = b.numpy.floor(start)
    taps = []
    for offset in range(math.ceil(scale) + 1):
        index = first + offset
        overlap = b.numpy.minimum(start + scale, index + 1.0) - b.numpy.maximum(start, index)
        weight = b.numpy.where(index < size, b.numpy.maximum(overlap, 0.0) / scale, 0.0)
        taps.append((b.numpy.minimum(index, size - 1.0), weight))
    return taps


def _area_upscale_taps(b: Any, rows: Any, scale: Any, size: Any) -> list[tuple[Any, Any]]:
    """OpenCV's INTER_AREA when not shrinking both axes: its own bilinear variant."""
    first = b.numpy.floor(rows * scale)
    fraction = (rows + 1.0) - (first + 1.0) / scale
    fraction = b.numpy.where(fraction <= 0, 0.0, fraction - b.numpy.floor(fraction))
    last = _as_float(b, size) - 1.0
    fraction = b.numpy.where(first >= last, 0.0, fraction)
    first = b.numpy.minimum(first, last)
    return [(first, 1.0 - fraction), (b.numpy.minimum(first + 1.0, last), fraction)]


def _axis_taps(
    b: Any, rows: Any, content: Any, size: Any, interpolation: str, shrinking_both: Any
) -> list[tuple[Any, Any]] | None:
    """(source index, weight) pairs per output position ``rows`` (in content coordinates)
    that resize an axis of ``size`` to ``content`` pixels; None when their number is not
    known when tracing (area shrinking of a dynamic size)."""
    scale = _as_float(b, size) / _as_float(b, content)
    if interpolation == "nearest":
        index = b.numpy.minimum(b.numpy.floor(rows * scale), _as_float(b, size) - 1.0)
        return [(index, b.numpy.ones_like(rows))]
    if interpolation == "cubic":
        return _cubic_taps(b, (rows + 0.5) * scale - 0.5, size)
    if interpolation == "linear":
        return _linear_taps(b, (rows + 0.5) * scale - 0.5, size)
    static = all(isinstance(v, int | bool) for v in (content, size, shrinking_both))
    if not static:
        return None
    if shrinking_both:
        return _area_taps(b, rows, size / content, size)
    return _area_upscale_taps(b, rows, scale, size)


def _area_matrix(b: Any, rows: Any, content: Any, size: Any, shrinking_both: Any) -> Any:
    """INTER_AREA weights (len(rows) × size) for dynamic sizes: true area averaging when both
    axes shrink, else OpenCV's area-mode bilinear."""
    scale = _as_float(b, size) / _as_float(b, content)
    start, columns = rows * scale, _as_float(b, b.numpy.arange(size))[None, :]
    overlap = b.numpy.minimum(start[:, None] + scale, columns + 1.0) - b.numpy.maximum(
        start[:, None], columns
    )
    area = b.numpy.maximum(overlap, 0.0) / scale
    upscale = _taps_to_matrix(b, _area_upscale_taps(b, rows, scale, size), size)
    return b.numpy.where(shrinking_both, area, upscale)


def _resize_rows(b: Any, matrix: Any, images: Any) -> Any:
    """``out[b, o] = Σ_h matrix[o, h] · images[b, h]`` as one broadcast matmul.

    (An einsum does the same, but TFLite cannot run it with a dynamic batch size.)
    """
    shape = b.shape(images)
    rows = b.numpy.reshape(images, (shape[0], shape[1], -1))
    out = b.numpy.matmul(matrix[None], rows)
    return b.numpy.reshape(out, (shape[0], b.shape(matrix)[0], shape[2], images.shape[-1]))


def _resize_axis(b: Any, images: Any, taps: Any, matrix: Any, axis: int) -> Any:
    """Resize axis 1 or 2 of a ``B×H×W×C`` batch with ``taps`` (gathers) or ``matrix``."""
    if axis == 2:  # gathers of whole rows are fast: put the axis first
        images = b.numpy.transpose(images, (0, 2, 1, 3))
    if taps is not None:
        out = None
        for index, weight in taps:
            term = (
                b.numpy.take(images, b.cast(index, "int32"), axis=1) * weight[None, :, None, None]
            )
            out = term if out is None else out + term
    else:
        out = _resize_rows(b, matrix, images)
    return b.numpy.transpose(out, (0, 2, 1, 3)) if axis == 2 else out


@register
class Resize(ImageLayer):
    """``cvprep.ops.resize`` in the graph: ``size=(height, width)``, interpolation
    area/linear/cubic/nearest and fit stretch/pad/crop, like ``cv2.resize``.

    Within 1 level of OpenCV on uint8 (OpenCV rounds its fixed-point weights).
    """

    def __init__(
        self,
        size: Any,
        interpolation: str = "area",
        fit: str = "stretch",
        fill: Any = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        params = ops.check_resize(size, interpolation=interpolation, fit=fit, fill=fill)
        self.size, self.interpolation = params["size"], params["interpolation"]
        self.fit, self.fill = params["fit"], params["fill"]

    def transform(self, images: Any) -> Any:
        return self.compiled("_resize", images)

    def _resize(self, images: Any) -> Any:
        b = self.backend
        height, width = dims(b, images)
        target_h, target_w = self.size
        content_h, content_w = self._content_size(height, width)
        # Same offsets as ops.resize: padding puts the extra pixel after, cropping drops it after.
        if self.fit == "crop":
            offset_h, offset_w = -((content_h - target_h) // 2), -((content_w - target_w) // 2)
        else:
            offset_h, offset_w = (target_h - content_h) // 2, (target_w - content_w) // 2
        rows = _as_float(b, b.numpy.arange(target_h) - offset_h)
        cols = _as_float(b, b.numpy.arange(target_w) - offset_w)
        shrinking = (content_h <= height) & (content_w <= width)
        out = images
        for axis, positions, content, size in (
            (1, rows, content_h, height),
            (2, cols, content_w, width),
        ):
            taps = _axis_taps(b, positions, content, size, self.interpolation, shrinking)
            matrix = None if taps else _area_matrix(b, positions, content, size, shrinking)
            out = _resize_axis(b, out, taps, matrix, axis)
        if self.interpolation == "cubic":
            out = b.numpy.clip(out, 0.0, 255.0)  # OpenCV saturates the cubic overshoot
        if self.fit != "pad":
            return out
        inside_rows = b.cast((rows >= 0) & (rows < _as_float(b, content_h)), "float32")
        inside_cols = b.cast((cols >= 0) & (cols < _as_float(b, content_w)), "float32")
        inside = (inside_rows[:, None] * inside_cols[None, :])[None, :, :, None]
        fill = b.convert_to_tensor(ops.fill_for_channels(self.fill, images.shape[-1]), "float32")
        return out * inside + fill * (1.0 - inside)

    def _content_size(self, height: Any, width: Any) -> tuple[Any, Any]:
        static = isinstance(height, int) and isinstance(width, int)
        return ops.fitted_size(
            height, width, self.size, self.fit, xp=None if static else self.backend.numpy
        )

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        return self.size[0], self.size[1], channels

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "size": list(self.size),
            "interpolation": self.interpolation,
            "fit": self.fit,
            "fill": list(self.fill),
        }


def _source_taps(b: Any, src_x: Any, src_y: Any, interpolation: str) -> list[tuple[Any, Any, Any]]:
    """(row, column, weight) of the source pixels each output pixel reads (weight None: 1)."""
    if interpolation == "nearest":
        return [(b.numpy.floor(src_y + 0.5), b.numpy.floor(src_x + 0.5), None)]
    # OpenCV 5 samples at float coordinates (4.x rounded them to 1/32 pixel).
    x0, y0 = b.numpy.floor(src_x), b.numpy.floor(src_y)
    fx, fy = src_x - x0, src_y - y0
    return [
        (y0, x0, (1 - fy) * (1 - fx)),
        (y0, x0 + 1, (1 - fy) * fx),
        (y0 + 1, x0, fy * (1 - fx)),
        (y0 + 1, x0 + 1, fy * fx),
    ]


def _warp(
    b: Any,
    images: Any,
    inverse: Any,
    out_h: Any,
    out_w: Any,
    *,
    interpolation: str,
    border: str,
    fill: list[float],
) -> Any:
    """``cv2.warpAffine`` with one inverse map per image (``inverse`` B×6: a, b, c, d, e, f)."""
    height, width = dims(b, images)
    ys = _as_float(b, b.numpy.arange(out_h))[None, :, None]
    xs = _as_float(b, b.numpy.arange(out_w))[None, None, :]
    coef = [b.numpy.reshape(inverse[:, i], (-1, 1, 1)) for i in range(6)]
    src_x = coef[0] * xs + coef[1] * ys + coef[2]
    src_y = coef[3] * xs + coef[4] * ys + coef[5]
    batch = b.shape(images)[0]
    flat = b.numpy.reshape(images, (batch, -1, images.shape[-1]))
    fill_value = b.convert_to_tensor(fill, "float32")
    result = None
    for ty, tx, weight in _source_taps(b, src_x, src_y, interpolation):
        yi, xi = b.cast(ty, "int32"), b.cast(tx, "int32")
        row = border_index(b, yi, height, border)
        col = border_index(b, xi, width, border)
        index = b.numpy.reshape(row * width + col, (batch, -1, 1))
        value = b.numpy.take_along_axis(flat, index, axis=1)
        value = b.numpy.reshape(value, (batch, out_h, out_w, images.shape[-1]))
        if border == "constant":
            inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            value = b.numpy.where(inside[..., None], value, fill_value)
        term = value if weight is None else value * weight[..., None]
        result = term if result is None else result + term
    return result


def _warp_shared(
    b: Any,
    images: Any,
    inverse: Any,
    out_h: Any,
    out_w: Any,
    *,
    interpolation: str,
    border: str,
    fill: list[float],
) -> Any:
    """``cv2.warpAffine`` of every image with the same inverse map (``inverse``: 6 numbers).

    The source positions are computed once, and the batch is laid out as a table of pixels
    (H·W rows of B·C values), so that each tap is one gather of whole rows.
    """
    height, width = dims(b, images)
    ys = _as_float(b, b.numpy.arange(out_h))[:, None]
    xs = _as_float(b, b.numpy.arange(out_w))[None, :]
    src_x = inverse[0] * xs + inverse[1] * ys + inverse[2]
    src_y = inverse[3] * xs + inverse[4] * ys + inverse[5]
    batch, channels = b.shape(images)[0], images.shape[-1]
    table = b.numpy.reshape(b.numpy.transpose(images, (1, 2, 0, 3)), (-1, batch * channels))
    result, outside = None, 0.0
    for ty, tx, weight in _source_taps(b, src_x, src_y, interpolation):
        yi, xi = b.cast(ty, "int32"), b.cast(tx, "int32")
        weight = b.numpy.ones_like(src_x) if weight is None else weight
        if border == "constant":  # outside taps read nothing; their weight goes to the fill
            inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            outside = outside + b.numpy.where(inside, 0.0, weight)
            weight = b.numpy.where(inside, weight, 0.0)
        index = border_index(b, yi, height, border) * width + border_index(b, xi, width, border)
        term = b.numpy.take(table, b.numpy.reshape(index, (-1,)), axis=0)
        term = term * b.numpy.reshape(weight, (-1, 1))
        result = term if result is None else result + term
    result = b.numpy.reshape(result, (out_h, out_w, batch, channels))
    result = b.numpy.transpose(result, (2, 0, 1, 3))
    if border == "constant" and any(fill):
        fill_value = b.convert_to_tensor(fill, "float32")
        result = result + outside[None, :, :, None] * fill_value
    return result


def rotation_inverse(
    b: Any, angle_degrees: Any, height: Any, width: Any, out_h: Any, out_w: Any
) -> Any:
    """B×6 inverse affine maps of ``cv2.getRotationMatrix2D`` rotations (one angle per image),
    re-centred on an ``out_h×out_w`` canvas."""
    radians = angle_degrees * (math.pi / 180.0)
    cos, sin = b.numpy.cos(radians), b.numpy.sin(radians)
    cx, cy = (_as_float(b, width) - 1) / 2, (_as_float(b, height) - 1) / 2
    ox, oy = (_as_float(b, out_w) - 1) / 2, (_as_float(b, out_h) - 1) / 2
    # Forward: x' = cos x + sin y + tx, y' = -sin x + cos y + ty, mapping (cx, cy) to (ox, oy).
    # Inverse of a rotation is its transpose.
    tx = ox - (cos * cx + sin * cy)
    ty = oy - (-sin * cx + cos * cy)
    return b.numpy.stack(
        [cos, -sin, -(cos * tx - sin * ty), sin, cos, -(sin * tx + cos * ty)], axis=1
    )


def _expanded_size(b: Any, height: Any, width: Any, angle: float) -> tuple[Any, Any]:
    if isinstance(height, int) and isinstance(width, int):
        return ops.expanded_size(height, width, angle)
    new_h, new_w = ops.expanded_size(_as_float(b, height), _as_float(b, width), angle, xp=b.numpy)
    return b.cast(new_h, "int32"), b.cast(new_w, "int32")


@register
class Rotate(ImageLayer):
    """``cvprep.ops.rotate`` in the graph (counter-clockwise degrees, like OpenCV)."""

    def __init__(
        self,
        angle: float,
        expand: bool = False,
        interpolation: str = "linear",
        border: str = "constant",
        fill: Any = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        params = ops.check_rotate(
            angle, expand=expand, interpolation=interpolation, border=border, fill=fill
        )
        self.angle, self.expand = params["angle"], params["expand"]
        self.interpolation, self.border, self.fill = (
            params["interpolation"],
            params["border"],
            params["fill"],
        )

    def transform(self, images: Any) -> Any:
        b = self.backend
        height, width = dims(b, images)
        out_h, out_w = (
            _expanded_size(b, height, width, self.angle) if self.expand else (height, width)
        )
        angle = b.numpy.full((1,), self.angle, dtype="float32")
        inverse = rotation_inverse(b, angle, height, width, out_h, out_w)[0]
        fill = ops.fill_for_channels(self.fill, images.shape[-1])
        return _warp_shared(
            b,
            images,
            inverse,
            out_h,
            out_w,
            interpolation=self.interpolation,
            border=self.border,
            fill=list(fill),
        )

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        if not self.expand:
            return height, width, channels
        if height is None or width is None:
            return None, None, channels
        return (*ops.expanded_size(height, width, self.angle), channels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "angle": self.angle,
            "expand": self.expand,
            "interpolation": self.interpolation,
            "border": self.border,
            "fill": list(self.fill),
        }


def affine_inverse(
    b: Any, angle: Any, scale: Any, shift_x: Any, shift_y: Any, height: Any, width: Any
) -> Any:
    """B×6 inverse maps of ``cv2.getRotationMatrix2D(centre, angle, scale)`` followed by a shift
    of ``(shift_x, shift_y)`` pixels (one value of each per image), output → source."""
    radians = angle * (math.pi / 180.0)
    cos, sin = b.numpy.cos(radians) / scale, b.numpy.sin(radians) / scale
    cx, cy = (_as_float(b, width) - 1) / 2, (_as_float(b, height) - 1) / 2
    # source = R⁻¹ (output - centre - shift) / scale + centre
    tx, ty = cx + shift_x, cy + shift_y
    return b.numpy.stack(
        [cos, -sin, cx - cos * tx + sin * ty, sin, cos, cy - sin * tx - cos * ty], axis=1
    )


# Border modes the TensorFlow kernel implements exactly as OpenCV (checked in the tests).
_TF_FILL_MODES = {"constant": "CONSTANT", "replicate": "NEAREST", "reflect": "REFLECT"}


def sample_affine(
    b: Any,
    images: Any,
    inverse: Any,
    *,
    interpolation: str,
    border: str,
    fill: list[float],
    opencv: bool = False,
) -> Any:
    """``cv2.warpAffine`` of each image with its inverse map (B×6), output size = input size.

    On TensorFlow (also inside ``tf.data``) this is one ``ImageProjectiveTransformV3`` call,
    the kernel behind Keras' ``RandomRotation``; borders it lacks (reflect101, wrap) are padded
    first with OpenCV's rule. Other backends use the exact gather implementation. ``opencv``
    (TensorFlow, at most 4 channels; more fall back to the kernel): OpenCV itself through
    ``tf.numpy_function``, for input pipelines (``tf.data``) only: XLA cannot compile it, and
    a layer's ``warp_with_opencv`` is not saved with it.
    """
    height, width = dims(b, images)
    if b.name != "tensorflow":
        return _warp(
            b, images, inverse, height, width, interpolation=interpolation, border=border, fill=fill
        )
    import tensorflow as tf

    if opencv and images.shape[-1] is not None and images.shape[-1] <= 4:

        def warp(batch: Any, maps: Any) -> Any:
            return ops.warp_affine_batch(
                batch, maps, interpolation=interpolation, border=border, fill=tuple(fill)
            )

        warped = tf.numpy_function(warp, [images, tf.cast(inverse, tf.float32)], images.dtype)
        warped.set_shape(images.shape)
        return warped

    mode = _TF_FILL_MODES.get(border)
    if mode is None:
        images, inverse = _pad_for(b, images, inverse, height, width, border)
        mode = "CONSTANT"
    fill_value = tf.constant(fill, tf.float32)
    constant = mode == "CONSTANT" and any(fill)
    # The kernel takes one fill value: sampling (image - fill) with 0 outside, then adding
    # fill back, gives OpenCV's per-channel constant border exactly (interpolation is linear).
    source = images - fill_value if constant else images
    transforms = tf.concat([tf.cast(inverse, tf.float32), tf.zeros_like(inverse[:, :2])], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=source,
        transforms=transforms,
        output_shape=tf.stack([height, width]),
        fill_value=0.0,
        interpolation="NEAREST" if interpolation == "nearest" else "BILINEAR",
        fill_mode=mode,
    )
    return out + fill_value if constant else out


def _pad_for(b: Any, images: Any, inverse: Any, height: Any, width: Any, border: str) -> Any:
    """Pad every image by the farthest any output pixel reaches outside it (plus one for
    interpolation), following ``border``; shift the maps to the padded images."""
    h, w = _as_float(b, height) - 1.0, _as_float(b, width) - 1.0
    corners_x = b.numpy.stack([b.numpy.zeros_like(h), w, b.numpy.zeros_like(h), w])
    corners_y = b.numpy.stack([b.numpy.zeros_like(h), b.numpy.zeros_like(h), h, h])
    src_x = inverse[:, 0:1] * corners_x + inverse[:, 1:2] * corners_y + inverse[:, 2:3]
    src_y = inverse[:, 3:4] * corners_x + inverse[:, 4:5] * corners_y + inverse[:, 5:6]
    reach_x = b.numpy.maximum(-b.numpy.min(src_x), b.numpy.max(src_x) - w)
    reach_y = b.numpy.maximum(-b.numpy.min(src_y), b.numpy.max(src_y) - h)
    pad_x = b.cast(b.numpy.ceil(b.numpy.maximum(reach_x, 0.0)), "int32") + 1
    pad_y = b.cast(b.numpy.ceil(b.numpy.maximum(reach_y, 0.0)), "int32") + 1
    padded = b.numpy.take(images, pad_index(b, height, pad_y, pad_y, border), axis=1)
    padded = b.numpy.take(padded, pad_index(b, width, pad_x, pad_x, border), axis=2)
    shift = b.numpy.stack([0.0, 0.0, _as_float(b, pad_x), 0.0, 0.0, _as_float(b, pad_y)])
    return padded, inverse + shift[None, :]


class _RandomWarp(RandomImageLayer):
    """Shared by the random geometric layers: sampling settings and the warp itself."""

    def __init__(
        self,
        interpolation: str = "linear",
        border: str = "reflect",
        fill: Any = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        # Set by cvprep's input pipeline (not saved): warp with OpenCV, which took 0.29× the
        # CPU time of TensorFlow's kernel, CPU that a training step on the same cores lacks.
        self.warp_with_opencv = False
        params = ops.check_rotate(0.0, interpolation=interpolation, border=border, fill=fill)
        self.interpolation, self.border, self.fill = (
            params["interpolation"],
            params["border"],
            params["fill"],
        )

    def _uniform(self, batch: Any, low: float, high: float, seed: Any) -> Any:
        b = self.backend
        if low == high:
            return b.numpy.full((batch,), low, dtype="float32")
        return b.random.uniform((batch,), minval=low, maxval=high, seed=seed)

    def _sample(self, images: Any, inverse: Any) -> Any:
        fill = ops.fill_for_channels(self.fill, images.shape[-1])
        return sample_affine(
            self.backend,
            images,
            inverse,
            interpolation=self.interpolation,
            border=self.border,
            fill=list(fill),
            opencv=self.warp_with_opencv,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "border": self.border,
            "fill": list(self.fill),
        }


@register
class RandomRotation(_RandomWarp):
    """Rotate each image by a random angle (degrees, counter-clockwise) about its centre,
    size kept, like ``cvprep.ops.rotate`` at that angle.

    ``angle_range`` is ``(low, high)``, or one number ``a`` for ``(-|a|, |a|)`` as Keras'
    ``RandomRotation(factor)``. Borders reflect by default (Keras' default too). Active only
    when called with ``training=True``: inference, ``predict`` and exported models pass images
    through unchanged.
    """

    def __init__(
        self,
        angle_range: Any = (-15.0, 15.0),
        interpolation: str = "linear",
        border: str = "reflect",
        fill: Any = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(interpolation, border, fill, seed, **kwargs)
        self.angle_range = check_range("angle_range", angle_range)

    def _draw(self, images: Any, seed: Any) -> dict[str, Any]:
        """``angle``: degrees, counter-clockwise, one per image."""
        return {"angle": self._uniform(self.backend.shape(images)[0], *self.angle_range, seed)}

    def _apply(self, images: Any, transformation: dict[str, Any]) -> Any:
        b = self.backend
        height, width = dims(b, images)
        angles = b.cast(transformation["angle"], "float32")
        ones = b.numpy.ones_like(angles)
        zeros = b.numpy.zeros_like(angles)
        return self._sample(images, affine_inverse(b, angles, ones, zeros, zeros, height, width))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "angle_range": list(self.angle_range)}


@register
class RandomAffine(_RandomWarp):
    """A random rotation, zoom, shift (and optionally a horizontal flip) per image in one
    warp (one sampling pass instead of several), like ``cv2.warpAffine`` with
    ``cv2.getRotationMatrix2D(centre, angle, scale)`` plus a shift.

    ``rotation``: degrees, one number ``r`` for ``±r`` or ``(low, high)``. ``zoom``: scale
    factor, ``z`` for ``[1 - z, 1 + z]`` or ``(low, high)``. ``shift``: fraction of the width and
    height, ``s`` for ``±s`` or ``(low, high)``. ``flip``: mirror half of the images left to
    right (part of the same warp, so it costs nothing). Active only with ``training=True``.
    """

    def __init__(
        self,
        rotation: Any = 15.0,
        zoom: Any = 0.1,
        shift: Any = 0.1,
        flip: bool = False,
        interpolation: str = "linear",
        border: str = "reflect",
        fill: Any = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(interpolation, border, fill, seed, **kwargs)
        self.rotation = check_range("rotation", rotation)
        self.zoom = check_range("zoom", zoom, around=1.0, minimum=1e-3)
        self.shift = check_range("shift", shift)
        if not isinstance(flip, bool):
            raise ValueError(f"`flip` should be True or False. Received: flip={flip!r}")
        self.flip = flip

    def _draw(self, images: Any, seed: Any) -> dict[str, Any]:
        """One value per image: ``angle`` (degrees), ``scale``, ``shift_x`` and ``shift_y``
        (fractions of the width and height), and ``flip`` (bool) when the layer flips."""
        batch = self.backend.shape(images)[0]
        transformation = {
            "angle": self._uniform(batch, *self.rotation, seed),
            "scale": self._uniform(batch, *self.zoom, seed),
            "shift_x": self._uniform(batch, *self.shift, seed),
            "shift_y": self._uniform(batch, *self.shift, seed),
        }
        if self.flip:
            transformation["flip"] = self._uniform(batch, 0.0, 1.0, seed) < 0.5
        return transformation

    def _apply(self, images: Any, transformation: dict[str, Any]) -> Any:
        b = self.backend
        height, width = dims(b, images)
        angles, scales, shift_x, shift_y = (
            b.cast(transformation[key], "float32")
            for key in ("angle", "scale", "shift_x", "shift_y")
        )
        shift_x, shift_y = shift_x * _as_float(b, width), shift_y * _as_float(b, height)
        inverse = affine_inverse(b, angles, scales, shift_x, shift_y, height, width)
        mirrored = transformation.get("flip")
        if mirrored is not None:  # sample x' = W - 1 - x: the source row, negated and moved
            right = _as_float(b, width) - 1.0
            flipped = b.numpy.stack([-inverse[:, 0], -inverse[:, 1], right - inverse[:, 2]], axis=1)
            inverse = b.numpy.concatenate(
                [b.numpy.where(mirrored[:, None], flipped, inverse[:, :3]), inverse[:, 3:]],
                axis=1,
            )
        return self._sample(images, inverse)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rotation": list(self.rotation),
            "zoom": list(self.zoom),
            "shift": list(self.shift),
            "flip": self.flip,
        }
