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


def _axis_matrix(
    b: Any, rows: Any, content: Any, size: Any, interpolation: str, shrinking_both: Any
) -> Any:
    """Weights (len(rows) × size) that resize an axis of ``size`` to ``content`` pixels,
    evaluated at output positions ``rows`` (float, in content coordinates)."""
    scale = _as_float(b, size) / _as_float(b, content)
    if interpolation == "nearest":
        index = b.numpy.minimum(b.numpy.floor(rows * scale), _as_float(b, size) - 1.0)
        return _taps_to_matrix(b, [(index, b.numpy.ones_like(rows))], size)
    if interpolation == "cubic":
        return _taps_to_matrix(b, _cubic_taps(b, (rows + 0.5) * scale - 0.5, size), size)
    if interpolation == "linear":
        return _taps_to_matrix(b, _linear_taps(b, (rows + 0.5) * scale - 0.5, size), size)
    # "area": true area averaging when both axes shrink, else OpenCV's area-mode bilinear.
    start, columns = rows * scale, _as_float(b, b.numpy.arange(size))[None, :]
    overlap = b.numpy.minimum(start[:, None] + scale, columns + 1.0) - b.numpy.maximum(
        start[:, None], columns
    )
    area = b.numpy.maximum(overlap, 0.0) / scale
    first = b.numpy.floor(start)
    fraction = (rows + 1.0) - (first + 1.0) / scale
    fraction = b.numpy.where(fraction <= 0, 0.0, fraction - b.numpy.floor(fraction))
    last = _as_float(b, size) - 1.0
    fraction = b.numpy.where(first >= last, 0.0, fraction)
    first = b.numpy.minimum(first, last)
    upscale = _taps_to_matrix(
        b, [(first, 1.0 - fraction), (b.numpy.minimum(first + 1.0, last), fraction)], size
    )
    return b.numpy.where(shrinking_both, area, upscale)


def _resize_rows(b: Any, matrix: Any, images: Any) -> Any:
    """``out[b, o] = Σ_h matrix[o, h] · images[b, h]`` as one broadcast matmul.

    (An einsum does the same, but TFLite cannot run it with a dynamic batch size.)
    """
    shape = b.shape(images)
    rows = b.numpy.reshape(images, (shape[0], shape[1], -1))
    out = b.numpy.matmul(matrix[None], rows)
    return b.numpy.reshape(out, (shape[0], b.shape(matrix)[0], shape[2], images.shape[-1]))


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
        row_matrix = _axis_matrix(b, rows, content_h, height, self.interpolation, shrinking)
        col_matrix = _axis_matrix(b, cols, content_w, width, self.interpolation, shrinking)
        out = _resize_rows(b, row_matrix, images)
        out = b.numpy.transpose(
            _resize_rows(b, col_matrix, b.numpy.transpose(out, (0, 2, 1, 3))), (0, 2, 1, 3)
        )
        if self.interpolation == "cubic":
            out = b.numpy.clip(out, 0.0, 255.0)  # OpenCV saturates the cubic overshoot
        if self.fit != "pad":
            return out
        inside_rows = b.cast((rows >= 0) & (rows < _as_float(b, content_h)), "float32")
        inside_cols = b.cast((cols >= 0) & (cols < _as_float(b, content_w)), "float32")
        inside = (inside_rows[:, None] * inside_cols[None, :])[None, :, :, None]
        fill = b.convert_to_tensor(_fill_list(self.fill, images.shape[-1]), "float32")
        return out * inside + fill * (1.0 - inside)

    def _content_size(self, height: Any, width: Any) -> tuple[Any, Any]:
        """:func:`cvprep.ops.fitted_size` with backend integer ops for dynamic sizes."""
        if isinstance(height, int) and isinstance(width, int):
            return ops.fitted_size(height, width, self.size, self.fit)
        b = self.backend
        target_h, target_w = self.size
        if self.fit == "stretch":
            return target_h, target_w
        height_binds = target_h * width <= target_w * height
        if self.fit == "crop":
            height_binds = b.numpy.logical_not(height_binds)
        fitted_w = b.numpy.maximum(1, (2 * width * target_h + height) // (2 * height))
        fitted_h = b.numpy.maximum(1, (2 * height * target_w + width) // (2 * width))
        return (
            b.numpy.where(height_binds, target_h, fitted_h),
            b.numpy.where(height_binds, fitted_w, target_w),
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
    """``cv2.warpAffine`` with an inverse map ``inverse`` (B×6: a, b, c, d, e, f)."""
    height, width = dims(b, images)
    ys = _as_float(b, b.numpy.arange(out_h))[None, :, None]
    xs = _as_float(b, b.numpy.arange(out_w))[None, None, :]
    coef = [b.numpy.reshape(inverse[:, i], (-1, 1, 1)) for i in range(6)]
    src_x = coef[0] * xs + coef[1] * ys + coef[2]
    src_y = coef[3] * xs + coef[4] * ys + coef[5]
    if interpolation == "nearest":
        taps = [(b.numpy.floor(src_y + 0.5), b.numpy.floor(src_x + 0.5), None)]
    else:
        # OpenCV 5 samples at float coordinates (4.x rounded them to 1/32 pixel).
        x0, y0 = b.numpy.floor(src_x), b.numpy.floor(src_y)
        fx, fy = src_x - x0, src_y - y0
        taps = [
            (y0, x0, (1 - fy) * (1 - fx)),
            (y0, x0 + 1, (1 - fy) * fx),
            (y0 + 1, x0, fy * (1 - fx)),
            (y0 + 1, x0 + 1, fy * fx),
        ]
    batch = b.shape(images)[0]
    flat = b.numpy.reshape(images, (batch, -1, images.shape[-1]))
    fill_value = b.convert_to_tensor(fill, "float32")
    result = None
    for ty, tx, weight in taps:
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
        return ops.rotation_matrix(height, width, angle, expand=True)[1]
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    h, w = _as_float(b, height), _as_float(b, width)
    return (
        b.cast(b.numpy.floor(h * cos + w * sin + 0.5), "int32"),
        b.cast(b.numpy.floor(h * sin + w * cos + 0.5), "int32"),
    )


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
        angles = b.numpy.full((b.shape(images)[0],), self.angle, dtype="float32")
        return _rotate(b, images, angles, out_h, out_w, self)

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        if not self.expand:
            return height, width, channels
        if height is None or width is None:
            return None, None, channels
        return (*ops.rotation_matrix(height, width, self.angle, expand=True)[1], channels)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "angle": self.angle,
            "expand": self.expand,
            "interpolation": self.interpolation,
            "border": self.border,
            "fill": list(self.fill),
        }


@register
class RandomRotation(RandomImageLayer):
    """Rotate each image by a random angle in ``angle_range`` degrees (size kept).

    Active only when called with ``training=True``: inference, ``predict`` and exported
    models pass images through unchanged.
    """

    def __init__(
        self,
        angle_range: Any = (-15.0, 15.0),
        interpolation: str = "linear",
        border: str = "reflect101",
        fill: Any = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.angle_range = check_range("angle_range", angle_range)
        params = ops.check_rotate(0.0, interpolation=interpolation, border=border, fill=fill)
        self.interpolation, self.border, self.fill = (
            params["interpolation"],
            params["border"],
            params["fill"],
        )

    def transform(self, images: Any) -> Any:
        b = self.backend
        height, width = dims(b, images)
        low, high = self.angle_range
        angles = b.random.uniform(
            (b.shape(images)[0],),
            minval=low,
            maxval=high,
            seed=self._get_seed_generator(b._backend),
        )
        return _rotate(b, images, angles, height, width, self)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "angle_range": list(self.angle_range),
            "interpolation": self.interpolation,
            "border": self.border,
            "fill": list(self.fill),
        }


def _rotate(b: Any, images: Any, angles: Any, out_h: Any, out_w: Any, layer: Any) -> Any:
    """Rotate each image by its angle onto an ``out_h×out_w`` canvas with ``layer``'s
    interpolation, border and fill."""
    height, width = dims(b, images)
    inverse = rotation_inverse(b, angles, height, width, out_h, out_w)
    return _warp(
        b,
        images,
        inverse,
        out_h,
        out_w,
        interpolation=layer.interpolation,
        border=layer.border,
        fill=_fill_list(layer.fill, images.shape[-1]),
    )


def _fill_list(fill: tuple[float, ...], channels: int) -> list[float]:
    return list(fill) * channels if len(fill) == 1 else list(fill)
