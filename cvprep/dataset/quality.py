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

from cvprep.dataset.duplicates import perceptual_hash

MEASURE_SIDE = 512
THUMB_SIDE = 16  # the normalised thumbnail that confirms near duplicates
DARK_LEVEL, LIGHT_LEVEL = 40, 215


@dataclass
class ImageStats:
    width: int
    height: int
    sharpness: float  # Laplacian std / gradient std: lower is blurrier, about content-free
    luma_low: float  # 5th percentile of the gray levels
    luma_median: float
    luma_high: float  # 95th percentile
    dark_share: float  # share of pixels darker than DARK_LEVEL
    light_share: float  # share of pixels lighter than LIGHT_LEVEL
    spread: float  # standard deviation of the gray levels
    detail: float  # root-mean-square gradient (3×3 Sobel): how much the picture changes
    entropy: float  # bits per pixel of the gray-level histogram
    colour: float  # mean largest difference between the R, G and B of a pixel
    thumb: bytes  # THUMB_SIDE² gray levels, normalised (zero mean, unit spread) to 0..255
    phash: int  # the 64-bit perceptual hash (duplicates.perceptual_hash) of the gray copy


def measure(image: npt.NDArray[np.uint8]) -> ImageStats:
    """Measure an RGB ``uint8`` image (``H×W×3``)."""
    height, width = image.shape[:2]
    small = shrunk(image)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    histogram = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel() / gray.size
    # Gray-level percentiles from the histogram: the first level reaching each share.
    low, median, high = np.searchsorted(np.cumsum(histogram), (0.05, 0.5, 0.95))
    nonzero = histogram[histogram > 0]
    red, green, blue = cv2.split(small)
    colour = cv2.max(cv2.absdiff(red, green), cv2.absdiff(green, blue))
    colour = cv2.max(colour, cv2.absdiff(red, blue))
    sharp, detail = sharpness_and_detail(gray)
    tiny = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)  # for hash and signature
    return ImageStats(
        width=width,
        height=height,
        sharpness=sharp,
        luma_low=float(low),
        luma_median=float(median),
        luma_high=float(high),
        dark_share=float(histogram[:DARK_LEVEL].sum()),
        light_share=float(histogram[LIGHT_LEVEL + 1 :].sum()),
        spread=float(cv2.meanStdDev(gray)[1][0, 0]),
        detail=detail,
        entropy=float(-(nonzero * np.log2(nonzero)).sum()),
        colour=float(cv2.mean(colour)[0]),
        thumb=thumbnail_signature(tiny),
        phash=perceptual_hash(tiny),
    )


def shrunk(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``image`` with its longer side at most :data:`MEASURE_SIDE` (never enlarged)."""
    height, width = image.shape[:2]
    scale = MEASURE_SIDE / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sharpness_and_detail(gray: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """Sharpness: second-derivative energy relative to first-derivative energy; detail: the
    first-derivative energy itself (root-mean-square 3×3 Sobel gradient).

    A blur removes fine detail (the Laplacian) faster than it softens edges (the gradient),
    while both scale alike with contrast: the ratio tells a blurred photo from a merely
    low-contrast or plain one, which the raw variance of the Laplacian does not. (16-bit
    derivatives: exact for 8-bit input, and several times faster than floating point.)
    """
    if min(gray.shape) < 3:
        return 0.0, 0.0
    count = gray.size
    laplacian = cv2.norm(cv2.Laplacian(gray, cv2.CV_16S, ksize=1)) / np.sqrt(count)
    dx = cv2.norm(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3))
    dy = cv2.norm(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3))
    gradient = float(np.sqrt((dx * dx + dy * dy) / count))
    return float(laplacian / (gradient + 1.0)), gradient


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
