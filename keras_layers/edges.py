"""Canny edges as a Keras layer, following OpenCV's steps.

Sobel derivatives (OpenCV's kernels, replicated borders) → gradient magnitude (L1, or squared
L2 against squared thresholds, as OpenCV does) → non-maximum suppression with OpenCV's
22.5°/67.5° sectors and tie rules → double threshold → hysteresis as 3×3 dilations of the strong
edges inside the weak ones, repeated in a ``while_loop`` until nothing changes.
"""

from __future__ import annotations

from typing import Any

import cv2

from cvprep import ops
from cvprep.keras_layers.base import (
    ImageLayer,
    correlate_axis,
    luma_fixed_point,
    pad_axis,
    register,
)

_TAN_22_5 = 0.4142135623730950488  # tan(22.5°)
_DILATIONS_PER_LOOP = 8  # several cheap dilations per loop test


@register
class CannyEdges(ImageLayer):
    """Canny edge map (``B×H×W×1``, 255 on edges), like ``cv2.Canny`` on the luma of the input.

    Agreement with OpenCV is measured as F1 of the edge maps (≥ 0.95 on real photos).
    """

    def __init__(
        self,
        low: float = 100.0,
        high: float = 200.0,
        aperture: int = 3,
        l2_gradient: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        params = ops.check_canny(low, high, aperture=aperture, l2_gradient=l2_gradient)
        self.low, self.high = params["low"], params["high"]
        self.aperture, self.l2_gradient = params["aperture"], params["l2_gradient"]
        derivative, smoothing = cv2.getDerivKernels(1, 0, self.aperture)
        self._derivative = [float(v) for v in derivative.ravel()]
        self._smoothing = [float(v) for v in smoothing.ravel()]

    def transform(self, images: Any) -> Any:
        b = self.backend
        pixels = b.numpy.clip(b.numpy.round(images), 0, 255)
        gray = pixels if images.shape[-1] == 1 else luma_fixed_point(b, pixels)
        dx, dy = self._sobel(gray)
        magnitude, low, high = self._magnitude(dx, dy)
        candidates = self._non_max_suppression(magnitude, dx, dy) & (magnitude > low)
        strong = candidates & (magnitude > high)
        edges = self._hysteresis(b.cast(strong, "float32"), b.cast(candidates, "float32"))
        return edges * 255.0

    def _sobel(self, gray: Any) -> tuple[Any, Any]:
        b, radius = self.backend, self.aperture // 2
        rows = pad_axis(b, gray, radius, radius, 1, "replicate")
        padded = pad_axis(b, rows, radius, radius, 2, "replicate")
        dx = correlate_axis(b, correlate_axis(b, padded, self._smoothing, 1), self._derivative, 2)
        dy = correlate_axis(b, correlate_axis(b, padded, self._derivative, 1), self._smoothing, 2)
        return dx, dy

    def _magnitude(self, dx: Any, dy: Any) -> tuple[Any, float, float]:
        b = self.backend
        if self.l2_gradient:
            # OpenCV compares squared magnitudes with floored squared thresholds.
            low, high = min(self.low, 32767.0), min(self.high, 32767.0)
            return dx * dx + dy * dy, float(int(low * low)), float(int(high * high))
        return b.numpy.abs(dx) + b.numpy.abs(dy), float(int(self.low)), float(int(self.high))

    def _non_max_suppression(self, magnitude: Any, dx: Any, dy: Any) -> Any:
        b = self.backend
        padded = b.numpy.pad(magnitude, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros outside

        def neighbour(oy: int, ox: int) -> Any:
            rows = padded[:, 1 + oy : (oy - 1) or None]
            return rows[:, :, 1 + ox : (ox - 1) or None]

        ax, ay = b.numpy.abs(dx), b.numpy.abs(dy)
        horizontal = ay < ax * _TAN_22_5
        vertical = ay > ax * (_TAN_22_5 + 2.0)
        same_sign = (dx * dy) >= 0
        keep_h = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
        keep_v = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
        keep_d = b.numpy.where(
            same_sign,
            (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)),
            (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)),
        )
        return b.numpy.where(horizontal, keep_h, b.numpy.where(vertical, keep_v, keep_d))

    def _hysteresis(self, strong: Any, weak: Any) -> Any:
        b = self.backend

        def grow(edges: Any) -> Any:
            for _ in range(_DILATIONS_PER_LOOP):
                edges = b.nn.max_pool(edges, 3, strides=1, padding="same") * weak
            return edges

        def body(edges: Any, previous_count: Any) -> tuple[Any, Any]:
            grown = grow(edges)
            return grown, b.numpy.sum(edges)

        def unstable(edges: Any, previous_count: Any) -> Any:
            return b.numpy.sum(edges) != previous_count

        edges, _ = b.core.while_loop(unstable, body, (strong, b.numpy.sum(strong) - 1.0))
        return edges

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        return height, width, 1

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "low": self.low,
            "high": self.high,
            "aperture": self.aperture,
            "l2_gradient": self.l2_gradient,
        }
