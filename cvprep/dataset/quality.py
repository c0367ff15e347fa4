"""Per-image measurements for ``inspect``: sharpness, exposure, information, colour, size.

Everything is measured on one copy of the image, converted to gray and shrunk so that its
longer side is at most :data:`MEASURE_SIDE` pixels (never enlarged), so that big and small
photos are measured at comparable scales and a 24-megapixel photo costs what a web image
does. The numbers are raw measurements; :mod:`cvprep.dataset.inspect` decides what is unusual
relative to the rest of the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

MEASURE_SIDE = 512
THUMB_SIDE = 16  # the normalised thumbnail that confirms near duplicates


@dataclass
class ImageStats:
    width: int
    height: int
    sharpness: float  # Laplacian std / gradient std: lower is blurrier, about content-free
    luma_low: float  # 5th percentile of the gray levels
    luma_median: float
    luma_high: float  # 95th percentile
    spread: float  # standard deviation of the gray levels
    detail: float  # root-mean-square gradient (3×3 Sobel): how much the picture changes
    entropy: float  # bits per pixel of the gray-level histogram
    colour: float  # mean largest difference between the R, G and B of a pixel
    thumb: bytes  # THUMB_SIDE² gray levels, normalised (zero mean, unit spread) to 0..255


def measure(image: npt.NDArray[np.uint8]) -> ImageStats:
    """Measure an RGB ``uint8`` image (``H×W×3``)."""
    height, width = image.shape[:2]
    scale = min(1.0, MEASURE_SIDE / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    histogram = np.bincount(gray.ravel(), minlength=256) / gray.size
    # Gray-level percentiles from the histogram: the first level reaching each share.
    low, median, high = np.searchsorted(np.cumsum(histogram), (0.05, 0.5, 0.95))
    nonzero = histogram[histogram > 0]
    red, green, blue = cv2.split(small)
    colour = cv2.max(
        cv2.max(cv2.absdiff(red, green), cv2.absdiff(green, blue)), cv2.absdiff(red, blue)
    )
    colour = float(colour.mean())
    return ImageStats(
        width=width,
        height=height,
        **dict(zip(("sharpness", "detail"), sharpness_and_detail(gray), strict=True)),
        luma_low=float(low),
        luma_median=float(median),
        luma_high=float(high),
        spread=float(gray.std()),
        entropy=float(-(nonzero * np.log2(nonzero)).sum()),
        colour=float(colour),
        thumb=thumbnail_signature(gray),
    )


def sharpness_and_detail(gray: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """Sharpness: second-derivative energy relative to first-derivative energy; detail: the
    first-derivative energy itself.

    A blur removes fine detail (the Laplacian) faster than it softens edges (the gradient),
    while both scale alike with contrast: the ratio tells a blurred photo from a merely
    low-contrast or plain one, which the raw variance of the Laplacian does not.
    """
    if min(gray.shape) < 3:
        return 0.0, 0.0
    image = gray.astype(np.float32)
    laplacian = cv2.Laplacian(image, cv2.CV_32F, ksize=1)
    dx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    gradient = float(np.sqrt((dx * dx + dy * dy).mean()))
    return float(np.sqrt((laplacian * laplacian).mean()) / (gradient + 1.0)), gradient


def thumbnail_signature(gray: npt.NDArray[np.uint8]) -> bytes:
    """A tiny gray copy with its brightness and contrast normalised away."""
    tiny = cv2.resize(gray, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    values = tiny.astype(np.float32)
    values = (values - values.mean()) / (values.std() + 1.0)
    return np.clip(values * 40.0 + 128.0, 0, 255).astype(np.uint8).tobytes()


def thumbnail_distance(first: bytes, second: bytes) -> float:
    """How different two signatures are where they differ most: the 90th percentile of
    the absolute differences (a re-encoded or resized copy differs a little everywhere, a
    different picture on the same background differs a lot somewhere)."""
    a = np.frombuffer(first, np.uint8).astype(np.int16)
    b = np.frombuffer(second, np.uint8).astype(np.int16)
    return float(np.percentile(np.abs(a - b), 90))
