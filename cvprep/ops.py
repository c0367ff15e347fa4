"""The OpenCV operations: plain functions on NumPy images.

Conventions (shared by the Keras layers and the CLI):

- Colour images are RGB, ``H×W×3``; single-channel images are ``H×W`` or ``H×W×1`` and keep
  their shape.
- ``uint8`` in gives ``uint8`` out. ``resize``, ``to_grayscale``, ``gaussian_blur``,
  ``median_blur`` (kernel 3 or 5) and ``rotate`` also take ``float32`` and return ``float32``.
  ``equalize_hist``, ``clahe`` and ``canny`` are defined on 8-bit images: float input holding
  values in [0, 255] is rounded to ``uint8`` first.
- Sizes are ``(height, width)``.
- Every parameter is checked by a ``check_*`` function that the Keras layers and the pipeline
  spec reuse; a bad value raises ``ValueError`` naming the parameter and the value received.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from cvprep import params
from cvprep.params import fail as _fail

Interpolation = Literal["nearest", "linear", "area", "cubic"]
FitMode = Literal["stretch", "pad", "crop"]
BorderMode = Literal["constant", "replicate", "reflect", "reflect101", "wrap"]

INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
}
FIT_MODES = ("stretch", "pad", "crop")
BORDERS: dict[str, int] = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "reflect101": cv2.BORDER_REFLECT_101,
    "wrap": cv2.BORDER_WRAP,
}

Image = npt.NDArray[Any]


# --------------------------------------------------------------------------- validation
MAX_OUTPUT_PIXELS = 100_000_000
"""The largest image an operation may produce (the reader's default pixel limit): a
``resize=100000x100000`` step is refused when parsed, not after allocating 30 GB."""


def _check_choice(name: str, value: object, choices: Any) -> str:
    return str(params.check_choice(name, value, choices))


def _check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    exclusive: bool = False,
    integer: bool = False,
) -> Any:
    if integer:
        return params.check_int(name, value, minimum=None if minimum is None else int(minimum))
    return params.check_number(name, value, minimum=minimum, min_open=exclusive)


def check_size(size: object, name: str = "size") -> tuple[int, int]:
    """Normalise ``size`` (an int for a square, or ``(height, width)``) to two positive ints."""
    if isinstance(size, int | np.integer) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in size
        )
    ):
        raise _fail(name, "a positive int or a (height, width) pair of positive ints", size)
    return int(size[0]), int(size[1])


def check_fill(fill: object) -> tuple[float, ...]:
    """Normalise a fill value (one number, or 3 or 4 per channel: RGB, RGBA) to floats."""
    values = fill if isinstance(fill, tuple | list) else (fill,)
    if len(values) not in (1, 3, 4) or not all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) and 0 <= v <= 255
        for v in values
    ):
        raise _fail("fill", "a number in [0, 255], or 3 (RGB) or 4 (RGBA) of them", fill)
    return tuple(float(v) for v in values)


def fill_for_channels(fill: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """The fill value of each channel of an image with ``channels`` channels.

    One number fills every channel. An RGB colour fills a single-channel image with its gray
    value (the same luma as :func:`to_grayscale`) and an RGBA image opaquely. Shared by the
    operations and the Keras layers, so both pad with the same values.
    """
    if len(fill) == 1:
        return fill * channels
    if len(fill) == channels:
        return fill
    if len(fill) == 3 and channels == 1:
        red, green, blue = fill
        return (float(round(0.299 * red + 0.587 * green + 0.114 * blue)),)
    if len(fill) == 3 and channels == 4:
        return (*fill, 255.0)
    raise ValueError(
        f"`fill` should have 1 or {channels} values for a {channels}-channel image. "
        f"Received: fill={fill}"
    )


def check_resize(
    size: object, *, interpolation: str = "area", fit: str = "stretch", fill: object = 0
) -> dict[str, Any]:
    height, width = check_size(size)
    if height * width > MAX_OUTPUT_PIXELS:
        raise _fail(
            "size",
            f"at most {MAX_OUTPUT_PIXELS:,} pixels (height × width)",
            f"{height}x{width}",
        )
    return {
        "size": (height, width),
        "interpolation": _check_choice("interpolation", interpolation, INTERPOLATIONS),
        "fit": _check_choice("fit", fit, FIT_MODES),
        "fill": check_fill(fill),
    }


def check_grayscale(*, keep_channels: bool = False) -> dict[str, Any]:
    if not isinstance(keep_channels, bool):
        raise _fail("keep_channels", "True or False", keep_channels)
    return {"keep_channels": keep_channels}


def check_equalize() -> dict[str, Any]:
    return {}


def check_clahe(clip_limit: float = 2.0, *, tile_grid: object = (8, 8)) -> dict[str, Any]:
    return {
        "clip_limit": _check_number("clip_limit", clip_limit, minimum=0, exclusive=True),
        "tile_grid": check_size(tile_grid, "tile_grid"),
    }


def gaussian_ksize_for_sigma(sigma: float) -> int:
    """The kernel size OpenCV derives from ``sigma`` for 8-bit images (``ksize=0``)."""
    return round(sigma * 3 * 2 + 1) | 1


def check_gaussian_blur(ksize: int = 5, *, sigma: float = 0.0) -> dict[str, Any]:
    ksize = _check_number("ksize", ksize, minimum=0, integer=True)
    sigma = _check_number("sigma", sigma, minimum=0)
    if ksize and ksize % 2 == 0:
        raise _fail("ksize", "odd (or 0 to derive it from sigma)", ksize)
    if ksize == 0 and sigma == 0:
        raise ValueError("`ksize` and `sigma` cannot both be 0. Received: ksize=0, sigma=0.0")
    return {"ksize": ksize, "sigma": sigma}


def check_median_blur(ksize: int = 3) -> dict[str, Any]:
    ksize = _check_number("ksize", ksize, minimum=1, integer=True)
    if ksize % 2 == 0:
        raise _fail("ksize", "odd and >= 1", ksize)
    return {"ksize": ksize}


def check_canny(
    low: float = 100.0, high: float = 200.0, *, aperture: int = 3, l2_gradient: bool = False
) -> dict[str, Any]:
    low = _check_number("low", low, minimum=0)
    high = _check_number("high", high, minimum=0)
    if low > high:
        raise ValueError(f"`low` should be <= `high`. Received: low={low}, high={high}")
    if aperture not in (3, 5, 7) or isinstance(aperture, bool):
        raise _fail("aperture", "3, 5 or 7", aperture)
    if not isinstance(l2_gradient, bool):
        raise _fail("l2_gradient", "True or False", l2_gradient)
    return {"low": low, "high": high, "aperture": int(aperture), "l2_gradient": l2_gradient}


def check_rotate(
    angle: float,
    *,
    expand: bool = False,
    interpolation: str = "linear",
    border: str = "constant",
    fill: object = 0,
) -> dict[str, Any]:
    if not isinstance(expand, bool):
        raise _fail("expand", "True or False", expand)
    if interpolation not in ("nearest", "linear"):
        raise _fail("interpolation", "'nearest' or 'linear'", interpolation)
    return {
        "angle": _check_number("angle", angle),
        "expand": expand,
        "interpolation": interpolation,
        "border": _check_choice("border", border, BORDERS),
        "fill": check_fill(fill),
    }


def check_image(image: npt.ArrayLike, name: str = "image") -> np.ndarray:
    """Return ``image`` as an array after checking its shape and dtype."""
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise _fail(
            name, "an H×W or H×W×C array with C in (1, 3, 4)", f"array of shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise _fail(name, "non-empty", f"array of shape {array.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        raise _fail(name, "uint8, uint16 or float32", f"array of dtype {array.dtype}")
    return array


def to_uint8(image: npt.ArrayLike) -> np.ndarray:
    """``uint8`` as is; float values in [0, 255] rounded (half to even) and clipped."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    raise ValueError(f"`image` should be uint8 or float in [0, 255]. Received dtype={array.dtype}")


def _as_uint8(image: np.ndarray, op: str) -> np.ndarray:
    try:
        return to_uint8(image)
    except ValueError:
        raise ValueError(
            f"`{op}` needs uint8 (or float in [0, 255]) input. Received dtype={image.dtype}"
        ) from None


def _like(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of size 1; put it back."""
    if reference.ndim == 3 and result.ndim == 2:
        return result[:, :, np.newaxis]
    return result


def _is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[2] >= 3


# --------------------------------------------------------------------------- operations
def fitted_size(
    height: Any, width: Any, size: tuple[int, int], fit: str, *, xp: Any = None
) -> tuple[Any, Any]:
    """Size the image is scaled to before padding (``fit="pad"``) or cropping (``"crop"``).

    Integer arithmetic, so that the Keras layer, which calls this with tensors and its
    backend's array namespace ``xp`` (``keras.ops``-like: ``where``, ``maximum``,
    ``logical_not``) for dynamic shapes, always agrees with :func:`resize`.
    """
    target_h, target_w = size
    if fit == "stretch":
        return target_h, target_w
    height_binds = target_h * width <= target_w * height  # target_h/height <= target_w/width
    fitted_w = (2 * width * target_h + height) // (2 * height)
    fitted_h = (2 * height * target_w + width) // (2 * width)
    if xp is None:
        if fit == "crop":
            height_binds = not height_binds
        return (target_h, max(1, fitted_w)) if height_binds else (max(1, fitted_h), target_w)
    if fit == "crop":
        height_binds = xp.logical_not(height_binds)
    return (
        xp.where(height_binds, target_h, xp.maximum(1, fitted_h)),
        xp.where(height_binds, xp.maximum(1, fitted_w), target_w),
    )


def resize(
    image: npt.ArrayLike,
    size: int | tuple[int, int],
    *,
    interpolation: Interpolation = "area",
    fit: FitMode = "stretch",
    fill: float | tuple[float, ...] = 0,
) -> Image:
    """Resize to ``size = (height, width)``.

    Parameters
    ----------
    image : array
        RGB ``H×W×3`` or single-channel, ``uint8``/``uint16``/``float32``.
    size : int or (height, width)
    interpolation : {"area", "linear", "cubic", "nearest"}
        ``"area"`` (default) is best for shrinking.
    fit : {"stretch", "pad", "crop"}
        ``"stretch"`` ignores the aspect ratio; ``"pad"`` scales to fit inside and letterboxes
        with ``fill``; ``"crop"`` scales to cover and takes the centre.
    fill : number or per-channel tuple
        Padding value for ``fit="pad"``.

    Returns
    -------
    array of the input dtype, ``size[0]×size[1]`` (×C).

    Examples
    --------
    >>> resize(np.zeros((375, 500, 3), np.uint8), (224, 224), fit="pad").shape
    (224, 224, 3)
    """
    p = check_resize(size, interpolation=interpolation, fit=fit, fill=fill)
    array = check_image(image)
    (target_h, target_w), flag = p["size"], INTERPOLATIONS[p["interpolation"]]
    new_h, new_w = fitted_size(array.shape[0], array.shape[1], p["size"], p["fit"])
    scaled = _like(cv2.resize(array, (new_w, new_h), interpolation=flag), array)
    if p["fit"] == "pad":
        top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
        channels = 1 if array.ndim == 2 else array.shape[2]
        scaled = _like(
            cv2.copyMakeBorder(
                scaled,
                top,
                target_h - new_h - top,
                left,
                target_w - new_w - left,
                cv2.BORDER_CONSTANT,
                value=fill_for_channels(p["fill"], channels),
            ),
            array,
        )
    elif p["fit"] == "crop":
        top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
        scaled = scaled[top : top + target_h, left : left + target_w]
    return np.ascontiguousarray(scaled)


def to_grayscale(image: npt.ArrayLike, *, keep_channels: bool = False) -> Image:
    """Convert RGB to luma (0.299 R + 0.587 G + 0.114 B, rounded for ``uint8``).

    Returns ``H×W`` (or ``H×W×1`` for ``H×W×1`` input), or ``H×W×3`` with ``keep_channels=True``
    so that models expecting three channels still work. Single-channel input is returned as is.
    """
    p = check_grayscale(keep_channels=keep_channels)
    array = check_image(image)
    if _is_colour(array):
        code = cv2.COLOR_RGBA2GRAY if array.shape[2] == 4 else cv2.COLOR_RGB2GRAY
        gray = cv2.cvtColor(array, code)
    else:
        gray = array if array.ndim == 2 else array[:, :, 0]
    if p["keep_channels"]:
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return _like(gray, array) if array.ndim == 3 and not _is_colour(array) else gray.copy()


def equalize_hist(image: npt.ArrayLike) -> Image:
    """Histogram equalisation of one image (``uint8`` out).

    Grayscale images are equalised directly (``cv2.equalizeHist``). Colour images equalise
    their luminance only: RGB → YCrCb, equalise Y, → RGB, so hues are not shifted.
    """
    check_equalize()
    array = _as_uint8(check_image(image), "equalize_hist")
    return _map_luma(array, cv2.equalizeHist)


def clahe(
    image: npt.ArrayLike, clip_limit: float = 2.0, *, tile_grid: int | tuple[int, int] = (8, 8)
) -> Image:
    """Contrast-limited adaptive histogram equalisation (luminance only for colour).

    ``tile_grid`` is ``(rows, columns)`` of tiles; ``clip_limit`` is OpenCV's relative limit.
    """
    p = check_clahe(clip_limit, tile_grid=tile_grid)
    array = _as_uint8(check_image(image), "clahe")
    rows, cols = p["tile_grid"]
    engine = cv2.createCLAHE(clipLimit=p["clip_limit"], tileGridSize=(cols, rows))
    return _map_luma(array, engine.apply)


def _map_luma(array: np.ndarray, function: Any) -> np.ndarray:
    if not _is_colour(array):
        return _like(function(np.ascontiguousarray(array.reshape(array.shape[:2]))), array)
    ycrcb = cv2.cvtColor(np.ascontiguousarray(array[:, :, :3]), cv2.COLOR_RGB2YCrCb)
    ycrcb[:, :, 0] = function(np.ascontiguousarray(ycrcb[:, :, 0]))
    rgb = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    return np.dstack([rgb, array[:, :, 3]]) if array.shape[2] == 4 else rgb


def gaussian_blur(image: npt.ArrayLike, ksize: int = 5, *, sigma: float = 0.0) -> Image:
    """Gaussian blur with OpenCV's default border (``BORDER_REFLECT_101``).

    ``ksize`` is the odd kernel size; 0 derives it from ``sigma`` (as OpenCV does for 8-bit
    images). ``sigma`` 0 derives it from ``ksize``.
    """
    p = check_gaussian_blur(ksize, sigma=sigma)
    array = check_image(image)
    k = p["ksize"] or gaussian_ksize_for_sigma(p["sigma"])
    return _like(
        cv2.GaussianBlur(
            array, (k, k), sigmaX=p["sigma"], sigmaY=p["sigma"], borderType=cv2.BORDER_REFLECT_101
        ),
        array,
    )


def median_blur(image: npt.ArrayLike, ksize: int = 3) -> Image:
    """Median filter over a ``ksize×ksize`` window (borders replicate, as in OpenCV).

    ``float32`` input is supported for ``ksize`` 3 and 5 only (an OpenCV limit).
    """
    p = check_median_blur(ksize)
    array = check_image(image)
    if array.dtype != np.uint8 and p["ksize"] > 5:
        raise ValueError(
            f"`ksize` > 5 needs uint8 input (OpenCV limit). Received: "
            f"ksize={p['ksize']} with dtype={array.dtype}"
        )
    if p["ksize"] == 1:
        return array.copy()
    return _like(cv2.medianBlur(np.ascontiguousarray(array), p["ksize"]), array)


def canny(
    image: npt.ArrayLike,
    low: float = 100.0,
    high: float = 200.0,
    *,
    aperture: int = 3,
    l2_gradient: bool = False,
) -> Image:
    """Canny edge map: ``uint8`` ``H×W`` with 255 on edges and 0 elsewhere.

    Colour input is converted to grayscale first. ``low``/``high`` are the hysteresis
    thresholds on the gradient magnitude, ``aperture`` the Sobel size (3, 5 or 7).
    """
    p = check_canny(low, high, aperture=aperture, l2_gradient=l2_gradient)
    gray = to_grayscale(_as_uint8(check_image(image), "canny"))
    gray = np.ascontiguousarray(gray.reshape(gray.shape[:2]))
    return cv2.Canny(
        gray, p["low"], p["high"], apertureSize=p["aperture"], L2gradient=p["l2_gradient"]
    )


def expanded_size(height: Any, width: Any, angle: float, *, xp: Any = None) -> tuple[Any, Any]:
    """Canvas ``(height, width)`` that holds an image rotated by ``angle`` (``expand=True``).

    Python ints for ints; with an array namespace ``xp`` (the Keras layer, dynamic shapes),
    float tensors holding whole numbers for float tensors.
    """
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    floor = math.floor if xp is None else xp.floor
    return floor(height * cos + width * sin + 0.5), floor(height * sin + width * cos + 0.5)


def rotation_matrix(
    height: int, width: int, angle: float, *, expand: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2×3 affine matrix and output ``(height, width)`` of :func:`rotate`."""
    center = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
    if not expand:
        return matrix, (height, width)
    new_h, new_w = expanded_size(height, width, angle)
    matrix[0, 2] += (new_w - 1) / 2.0 - center[0]
    matrix[1, 2] += (new_h - 1) / 2.0 - center[1]
    return matrix, (new_h, new_w)


def rotate(
    image: npt.ArrayLike,
    angle: float,
    *,
    expand: bool = False,
    interpolation: Literal["nearest", "linear"] = "linear",
    border: BorderMode = "constant",
    fill: float | tuple[float, ...] = 0,
) -> Image:
    """Rotate by ``angle`` degrees counter-clockwise about the centre.

    ``expand=False`` keeps the size (corners are cut); ``expand=True`` grows the canvas to hold
    the whole rotated image. Uncovered pixels follow ``border`` (``fill`` for ``"constant"``).
    """
    p = check_rotate(angle, expand=expand, interpolation=interpolation, border=border, fill=fill)
    array = check_image(image)
    matrix, (out_h, out_w) = rotation_matrix(
        array.shape[0], array.shape[1], p["angle"], expand=p["expand"]
    )
    channels = 1 if array.ndim == 2 else array.shape[2]
    return _like(
        cv2.warpAffine(
            array,
            matrix,
            (out_w, out_h),
            flags=INTERPOLATIONS[p["interpolation"]],
            borderMode=BORDERS[p["border"]],
            borderValue=fill_for_channels(p["fill"], channels),
        ),
        array,
    )


def warp_affine_batch(
    images: np.ndarray,
    inverse: np.ndarray,
    *,
    interpolation: Literal["nearest", "linear"] = "linear",
    border: BorderMode = "constant",
    fill: tuple[float, ...] = (0.0,),
) -> np.ndarray:
    """``cv2.warpAffine`` of each image of an N×H×W×C batch (C ≤ 4) by its own map, size
    kept: row ``i`` of ``inverse`` (N×6) maps output pixel (x, y) to the source pixel
    ``(m0·x + m1·y + m2, m3·x + m4·y + m5)``, as the random warps of
    :mod:`cvprep.keras_layers` describe their draws. Those layers use it in ``cvprep train``'s
    input pipeline, where it took 0.29× the CPU time of TensorFlow's projective-transform
    kernel (``benchmarks/layers.py``).
    """
    if images.ndim != 4 or not 1 <= images.shape[-1] <= 4:
        raise _fail("images", "a batch of N×H×W×C images with 1 to 4 channels", images.shape)
    count, height, width, channels = images.shape
    if np.shape(inverse) != (count, 6):
        raise _fail("inverse", f"one 6-number map per image ({count}×6)", np.shape(inverse))
    flags = INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
    border_value = fill_for_channels(tuple(fill), channels)
    out = np.empty_like(images)
    for index in range(count):
        warped = cv2.warpAffine(
            images[index],
            np.asarray(inverse[index], np.float64).reshape(2, 3),
            (width, height),
            flags=flags,
            borderMode=BORDERS[border],
            borderValue=border_value,
        )
        out[index] = _like(warped, images[index])
    return out
