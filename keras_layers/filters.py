"""Gaussian and median blur layers with OpenCV's borders (reflect-101 and replicate)."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import cv2
import numpy as np

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
    """Per-image kernels (``weights`` B×K): shifted multiply-adds along each axis."""
    padded = pad_axis(b, images, radius, radius, 1, border)
    blurred = correlate_axis(b, padded, weights, axis=1)
    padded = pad_axis(b, blurred, radius, radius, 2, border)
    return correlate_axis(b, padded, weights, axis=2)


def pad_reflect101(b: Any, images: Any, radius: int) -> Any:
    """Pad height and width by ``radius`` with OpenCV's default border (reflect-101).

    The backend's ``reflect`` padding is reflect-101 (TF's MirrorPad REFLECT, NumPy's
    reflect) but needs a border smaller than the image: smaller or unknown sizes gather.
    """
    height, width = images.shape[1], images.shape[2]
    if isinstance(height, int) and isinstance(width, int) and radius < min(height, width):
        return b.numpy.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), "reflect")
    rows = pad_axis(b, images, radius, radius, 1, "reflect101")
    return pad_axis(b, rows, radius, radius, 2, "reflect101")


def separable_conv(b: Any, padded: Any, weights: list[float]) -> Any:
    """Correlate an already padded batch with a fixed 1-D kernel along both axes: two
    depthwise convolutions (one kernel for every channel)."""
    channels, taps = padded.shape[-1], len(weights)
    kernel = b.convert_to_tensor(weights, "float32")
    column = b.numpy.tile(b.numpy.reshape(kernel, (taps, 1, 1, 1)), (1, 1, channels, 1))
    row = b.numpy.tile(b.numpy.reshape(kernel, (1, taps, 1, 1)), (1, 1, channels, 1))
    blurred = b.nn.depthwise_conv(padded, column, strides=1, padding="valid")
    return b.nn.depthwise_conv(blurred, row, strides=1, padding="valid")


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
        b = self.backend
        return separable_conv(b, pad_reflect101(b, images, len(self._weights) // 2), self._weights)

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

    def _draw(self, images: Any, seed: Any) -> dict[str, Any]:
        """``sigma`` (float) and ``apply`` (bool): one of each per image."""
        b = self.backend
        batch = b.shape(images)[0]
        low, high = self.sigma_range
        sigma = b.random.uniform((batch, 1), minval=max(low, 1e-3), maxval=high, seed=seed)
        apply = b.random.uniform((batch, 1, 1, 1), seed=seed) < self.probability
        return {"sigma": b.numpy.reshape(sigma, (-1,)), "apply": b.numpy.reshape(apply, (-1,))}

    def _apply(self, images: Any, transformation: dict[str, Any]) -> Any:
        b = self.backend
        sigma = b.numpy.reshape(b.cast(transformation["sigma"], "float32"), (-1, 1))
        apply = b.numpy.reshape(transformation["apply"], (-1, 1, 1, 1))
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


# An optimal sorting network for 5 values (Knuth, TAOCP 5.3.4).
_SORT_NETWORKS = {5: [(0, 3), (1, 4), (0, 2), (1, 3), (0, 1), (2, 4), (1, 2), (3, 4), (2, 3)]}
Comparator = tuple[int, int, bool, bool]  # wires (low, high); whether min / max is needed


@functools.cache
def sorted_window_median_network(k: int) -> tuple[list[Comparator], int]:
    """A min/max network that finds the median of a k×k window whose columns are sorted.

    Wire ``j·k + i`` holds the i-th smallest value of column j. The network sorts each rank
    across the columns (the window is then sorted both ways), so the median can only sit
    where at most (k²-1)/2 values are known to be below and above it; a Batcher network
    selects it among those candidates. Comparators that never swap on any column-sorted 0-1
    input are dropped, then those that do not reach the median: by the 0-1 principle (a
    comparator network commutes with every threshold, which keeps columns sorted) the result
    is exact for all inputs, which is checked here on every 0-1 input. Returns the
    comparators and the output wire.
    """
    n, middle = k * k, (k * k) // 2
    columns = [np.array([0] * (k - ones) + [1] * ones, np.int8) for ones in range(k + 1)]
    inputs = np.array([np.concatenate(c) for c in itertools.product(columns, repeat=k)])
    candidates = [
        j * k + i
        for j in range(k)
        for i in range(k)
        if (i + 1) * (j + 1) <= middle + 1 and (k - i) * (k - j) <= middle + 1
    ]
    below = sum((k - i) * (k - j) > middle + 1 for i in range(k) for j in range(k))
    size = 1 << (len(candidates) - 1).bit_length()
    wires = candidates + list(range(n, n + size - len(candidates)))  # extra wires hold +inf
    network = [(j * k + i, m * k + i) for i in range(k) for j, m in _SORT_NETWORKS[k]]
    network += [(wires[a], wires[c]) for a, c in _batcher_pairs(size)]
    state = np.concatenate([inputs, np.ones((len(inputs), size - len(candidates)), np.int8)], 1)
    useful = []
    for low, high in network:
        if (state[:, low] > state[:, high]).any():
            useful.append((low, high))
            state[:, [low, high]] = np.sort(state[:, [low, high]], axis=1)
    output = wires[middle - below]
    if not (state[:, output] == (inputs.sum(1) > middle)).all():
        raise AssertionError(f"the {k}×{k} median network is wrong")  # never on a valid build
    needed, comparators = {output}, []
    for low, high in reversed(useful):
        if low in needed or high in needed:
            comparators.append((low, high, low in needed, high in needed))
            needed |= {low, high}
    return comparators[::-1], output


def _median_sorted_columns(b: Any, padded: Any, k: int) -> Any:
    """Median of each k×k window: sort every vertical run of k values once (shared by the k
    windows that contain it), then run the pruned network on shifted views."""
    ranks = [padded[:, dy : (dy - (k - 1)) or None] for dy in range(k)]
    for low, high in _SORT_NETWORKS[k]:
        ranks[low], ranks[high] = (
            b.numpy.minimum(ranks[low], ranks[high]),
            b.numpy.maximum(ranks[low], ranks[high]),
        )
    wires: dict[int, Any] = {
        j * k + i: ranks[i][:, :, j : (j - (k - 1)) or None] for j in range(k) for i in range(k)
    }
    comparators, output = sorted_window_median_network(k)
    for low, high, want_min, want_max in comparators:
        a, c = wires.get(low), wires.get(high)  # a missing wire holds +inf
        if c is None:
            continue
        if a is None:
            wires[low], wires[high] = c, None
            continue
        if want_min:
            wires[low] = b.numpy.minimum(a, c)
        if want_max:
            wires[high] = b.numpy.maximum(a, c)
    return wires[output]


def _median3(b: Any, first: Any, second: Any, third: Any) -> Any:
    low, high = b.numpy.minimum(first, second), b.numpy.maximum(first, second)
    return b.numpy.maximum(low, b.numpy.minimum(high, third))


def _median_3x3(b: Any, padded: Any) -> Any:
    """3×3 median of a 1-pixel-padded batch: sort each vertical triple (low, middle, high);
    the median is the median of the largest low, the median middle and the smallest high of
    the three columns (Paeth). Largest and smallest are 1×3 poolings: no shifted copies."""
    top, centre, bottom = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    low, high = b.numpy.minimum(top, centre), b.numpy.maximum(top, centre)
    low, middle, high = (
        b.numpy.minimum(low, bottom),
        b.numpy.minimum(high, b.numpy.maximum(low, bottom)),
        b.numpy.maximum(high, bottom),
    )
    largest_low = b.nn.max_pool(low, (1, 3), strides=1, padding="valid")
    smallest_high = -b.nn.max_pool(-high, (1, 3), strides=1, padding="valid")
    middle = _median3(b, middle[:, :, :-2], middle[:, :, 1:-1], middle[:, :, 2:])
    return _median3(b, largest_low, middle, smallest_high)


@register
class MedianBlur(ImageLayer):
    """``cv2.medianBlur``: median of each ``ksize×ksize`` window, borders replicated (exact).

    The median comes from min/max operations on shifted images, after sorting each vertical
    run of ksize values once (shared by ksize windows): for 3×3 Paeth's three medians, for
    5×5 a network pruned for such windows, for larger kernels a full sorting network (graph
    compilers drop the comparators that do not reach the middle element).
    """

    def __init__(self, ksize: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ksize = ops.check_median_blur(ksize)["ksize"]

    def transform(self, images: Any) -> Any:
        return images if self.ksize == 1 else self.compiled("_median_blur", images)

    def _median_blur(self, images: Any) -> Any:
        b, k = self.backend, self.ksize
        radius = k // 2
        if radius == 1:  # one pixel of replicate padding is the backend's symmetric padding
            padded = b.numpy.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), "symmetric")
        else:
            rows = pad_axis(b, images, radius, radius, 1, "replicate")
            padded = pad_axis(b, rows, radius, radius, 2, "replicate")
        if k == 3:
            return _median_3x3(b, padded)
        if k in _SORT_NETWORKS:
            return _median_sorted_columns(b, padded, k)
        windows = []
        for dy in range(k):
            rows = padded[:, dy : (dy - (k - 1)) or None]
            windows.extend(rows[:, :, dx : (dx - (k - 1)) or None] for dx in range(k))
        return _median(b, windows)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ksize": self.ksize}
