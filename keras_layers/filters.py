"""Gaussian and median blur layers with OpenCV's borders (reflect-101 and replicate)."""

from __future__ import annotations

from typing import Any

import cv2

from cvprep import ops
from cvprep.keras_layers.base import (
    ImageLayer,
    RandomImageLayer,
    check_probability,
    check_range,
    correlate_axis,
    pad_axis,
    register,
)


def _separable(b: Any, images: Any, weights: Any, radius: int, border: str) -> Any:
    padded = pad_axis(b, images, radius, radius, 1, border)
    blurred = correlate_axis(b, padded, weights, axis=1)
    padded = pad_axis(b, blurred, radius, radius, 2, border)
    return correlate_axis(b, padded, weights, axis=2)


@register
class GaussianBlur(ImageLayer):
    """``cv2.GaussianBlur`` with the same kernel and ``BORDER_REFLECT_101`` borders.

    ``ksize`` 0 derives the size from ``sigma``; ``sigma`` 0 derives it from ``ksize``.
    """

    def __init__(self, ksize: int = 5, sigma: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        params = ops.check_gaussian_blur(ksize, sigma=sigma)
        self.ksize, self.sigma = params["ksize"], params["sigma"]
        size = self.ksize or ops.gaussian_ksize_for_sigma(self.sigma)
        # The kernel comes from OpenCV itself, so both paths share one definition.
        self._weights = [float(w) for w in cv2.getGaussianKernel(size, self.sigma).ravel()]

    def transform(self, images: Any) -> Any:
        return _separable(
            self.backend, images, self._weights, len(self._weights) // 2, "reflect101"
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ksize": self.ksize, "sigma": self.sigma}


@register
class RandomGaussianBlur(RandomImageLayer):
    """Gaussian blur with a random ``sigma`` in ``sigma_range`` per image, applied with
    ``probability``. Active only when called with ``training=True``: inference, ``predict``
    and exported models pass images through unchanged.
    """

    def __init__(
        self,
        sigma_range: Any = (0.1, 2.0),
        probability: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        low, high = check_range("sigma_range", sigma_range, minimum=0.0, one_sided=True)
        if high <= 0:
            raise ValueError(
                f"`sigma_range` should have a positive upper bound. "
                f"Received: sigma_range={sigma_range!r}"
            )
        self.sigma_range = (low, high)
        self.probability = check_probability(probability)
        self._radius = ops.gaussian_ksize_for_sigma(high) // 2

    def transform(self, images: Any) -> Any:
        b = self.backend
        batch = b.shape(images)[0]
        seed = self._get_seed_generator(b._backend)
        low, high = self.sigma_range
        sigma = b.random.uniform((batch, 1), minval=max(low, 1e-3), maxval=high, seed=seed)
        apply = b.random.uniform((batch, 1, 1, 1), seed=seed) < self.probability
        offsets = b.cast(b.numpy.arange(-self._radius, self._radius + 1), "float32")[None, :]
        kernels = b.numpy.exp(-(offsets**2) / (2.0 * sigma**2))
        kernels = kernels / b.numpy.sum(kernels, axis=1, keepdims=True)
        blurred = _separable(b, images, kernels, self._radius, "reflect101")
        return b.numpy.where(apply, blurred, images)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "sigma_range": list(self.sigma_range),
            "probability": self.probability,
        }


def _batcher_pairs(size: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``size`` (a power of two) wires."""
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _median(b: Any, values: list[Any]) -> Any:
    """Elementwise median of an odd number of same-shaped tensors (exact, min/max only)."""
    size = 1 << (len(values) - 1).bit_length()
    wires: list[Any] = list(values) + [None] * (size - len(values))  # None stands for +inf
    for low, high in _batcher_pairs(size):
        if wires[high] is None:
            continue
        if wires[low] is None:
            wires[low], wires[high] = wires[high], None
            continue
        wires[low], wires[high] = (
            b.numpy.minimum(wires[low], wires[high]),
            b.numpy.maximum(wires[low], wires[high]),
        )
    return wires[len(values) // 2]


@register
class MedianBlur(ImageLayer):
    """``cv2.medianBlur``: median of each ``ksize×ksize`` window, borders replicated (exact).

    The median comes from a min/max sorting network over the ``ksize²`` shifted images
    (graph compilers drop the comparators that do not reach the middle element).
    """

    def __init__(self, ksize: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ksize = ops.check_median_blur(ksize)["ksize"]

    def transform(self, images: Any) -> Any:
        b, k = self.backend, self.ksize
        if k == 1:
            return images
        radius = k // 2
        padded = pad_axis(
            b, pad_axis(b, images, radius, radius, 1, "replicate"), radius, radius, 2, "replicate"
        )
        windows = []
        for dy in range(k):
            rows = padded[:, dy : (dy - (k - 1)) or None]
            windows.extend(rows[:, :, dx : (dx - (k - 1)) or None] for dx in range(k))
        return _median(b, windows)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ksize": self.ksize}
