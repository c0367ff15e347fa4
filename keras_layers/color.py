"""Grayscale, histogram equalisation and CLAHE as Keras layers, bit-matching OpenCV on uint8."""

from __future__ import annotations

from typing import Any

from cvprep import ops
from cvprep.keras_layers.base import (
    ImageLayer,
    RandomImageLayer,
    check_range,
    dims,
    luma_fixed_point,
    pad_index,
    register,
)

_BINS = 256


def _to_gray(b: Any, pixels: Any) -> Any:
    """Integer-valued luma, ``B×H×W×1``, of whole-valued pixels (single channel: as is)."""
    return pixels if pixels.shape[-1] == 1 else luma_fixed_point(b, pixels)


def _descale(b: Any, values: Any) -> Any:
    # CV_DESCALE(x, 14) = (x + 2^13) >> 14, an arithmetic shift (floor) for negative x.
    return b.numpy.floor((values + 8192.0) * (1.0 / 16384.0))


def _luma_and_chroma(b: Any, rgb: Any) -> tuple[Any, Any]:
    """OpenCV's 8-bit RGB → YCrCb as ``(Y, what Cr and Cb add to R, G, B)``.

    Equalisation changes Y only, so the way back to RGB is ``Y' + chroma``: the chroma term is
    computed once, with OpenCV's fixed-point constants. Cr and Cb are kept centred on 0:
    descale(x + 128·2^14) - 128 = descale(x) exactly, which saves two passes each.
    (Element-wise on channel slices: measured faster here than channel matrix products.)
    """
    red, green, blue = rgb[..., 0:1], rgb[..., 1:2], rgb[..., 2:3]
    luma = _descale(b, red * 4899.0 + green * 9617.0 + blue * 1868.0)
    cr = b.numpy.clip(_descale(b, (red - luma) * 11682.0), -128.0, 127.0)
    cb = b.numpy.clip(_descale(b, (blue - luma) * 9241.0), -128.0, 127.0)
    chroma = b.numpy.concatenate(
        [
            _descale(b, cr * 22987.0),
            _descale(b, cb * -5636.0 + cr * -11698.0),
            _descale(b, cb * 29049.0),
        ],
        axis=-1,
    )
    return luma, chroma


class _LumaLayer(ImageLayer):
    """Equalises luma like ``ops._map_luma``: one channel as is, colour through OpenCV's
    YCrCb (alpha kept). Subclasses implement ``equalise`` on ``B×H×W×1`` integer-valued luma.
    """

    def equalise(self, luma: Any) -> Any:
        raise NotImplementedError

    def transform(self, images: Any) -> Any:
        if images.shape[-1] == 1:
            return self.equalise(self.pixels(images))
        luma, chroma = self.compiled("_split_luma", images)
        return self.compiled("_merge_luma", self.equalise(luma), chroma, images)

    def _split_luma(self, images: Any) -> tuple[Any, Any]:
        return _luma_and_chroma(self.backend, self.pixels(images[..., :3]))

    def _merge_luma(self, luma: Any, chroma: Any, images: Any) -> Any:
        rgb = self.backend.numpy.clip(luma + chroma, 0, 255)
        if images.shape[-1] == 4:
            rgb = self.backend.numpy.concatenate([rgb, self.pixels(images[..., 3:])], axis=-1)
        return rgb


def _histograms(b: Any, rows: Any) -> Any:
    """Per-row 256-bin histograms of an ``N×P`` tensor of integer values 0..255.

    An unsorted segment sum rather than ``bincount``: TFLite has it as a built-in op.
    """
    shape = b.shape(rows)
    segments = b.cast(rows, "int32") + _BINS * b.numpy.arange(shape[0], dtype="int32")[:, None]
    ones = b.numpy.reshape(b.numpy.ones_like(rows, dtype="float32"), (-1,))
    counts = b.math.segment_sum(
        ones, b.numpy.reshape(segments, (-1,)), num_segments=shape[0] * _BINS
    )
    return b.numpy.reshape(counts, (shape[0], _BINS))


def _batch_offsets(b: Any, batch: Any, stride: Any) -> Any:
    """``stride · i`` for each batch element ``i``, shaped to broadcast over B×H×W(×1)."""
    return b.numpy.reshape(b.numpy.arange(batch, dtype="int32") * stride, (-1, 1, 1, 1))


def _apply_lut(b: Any, luts: Any, images: Any) -> Any:
    """``luts`` is ``B×256``; ``images`` is ``B×H×W×1`` integer-valued. One gather from the
    flattened tables (faster than a per-row ``take_along_axis``)."""
    shape = b.shape(images)
    index = b.cast(images, "int32") + _batch_offsets(b, shape[0], _BINS)
    return b.numpy.take(b.numpy.reshape(luts, (-1,)), index)


def _equalise_luma(b: Any, luma: Any) -> Any:
    """cv2.equalizeHist per batch element, exactly (same float32 arithmetic and rounding)."""
    shape = b.shape(luma)
    hist = _histograms(b, b.numpy.reshape(luma, (shape[0], -1)))
    total = b.numpy.sum(hist, axis=1, keepdims=True)
    first = b.numpy.argmax(hist > 0, axis=1)
    first_count = b.numpy.take_along_axis(hist, b.numpy.expand_dims(first, 1), axis=1)
    remaining = total - first_count
    scale = 255.0 / b.numpy.maximum(remaining, 1.0)
    lut = b.numpy.clip(b.numpy.round((b.numpy.cumsum(hist, axis=1) - first_count) * scale), 0, 255)
    # A constant image maps every pixel to its own value, as OpenCV does.
    constant = b.cast(b.numpy.expand_dims(first, 1), "float32") * b.numpy.ones_like(lut)
    lut = b.numpy.where(remaining > 0, lut, constant)
    return _apply_lut(b, lut, luma)


@register
class Grayscale(ImageLayer):
    """RGB → luma like ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` on uint8 (exact).

    Output has 1 channel, or 3 identical ones with ``keep_channels=True``.
    """

    def __init__(self, keep_channels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_channels = ops.check_grayscale(keep_channels=keep_channels)["keep_channels"]

    def transform(self, images: Any) -> Any:
        return self.compiled("_grayscale", images)

    def _grayscale(self, images: Any) -> Any:
        gray = _to_gray(self.backend, self.pixels(images))
        return self.backend.numpy.repeat(gray, 3, axis=-1) if self.keep_channels else gray

    def output_hwc(self, height: Any, width: Any, channels: Any) -> tuple[Any, Any, Any]:
        return height, width, 3 if self.keep_channels else 1

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keep_channels": self.keep_channels}


@register
class HistogramEqualization(_LumaLayer):
    """``cv2.equalizeHist`` per image (never pooled over the batch); colour equalises luma only.

    Matches :func:`cvprep.ops.equalize_hist` exactly on uint8 input.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ops.check_equalize()

    def equalise(self, luma: Any) -> Any:
        return self.compiled("_equalise", luma)

    def _equalise(self, luma: Any) -> Any:
        return _equalise_luma(self.backend, luma)


@register
class CLAHE(_LumaLayer):
    """Contrast-limited adaptive histogram equalisation, OpenCV's algorithm, per image.

    ``tile_grid`` is ``(rows, columns)``. Colour input equalises luma only, like
    :func:`cvprep.ops.clahe`.
    """

    def __init__(self, clip_limit: float = 2.0, tile_grid: Any = (8, 8), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        params = ops.check_clahe(clip_limit, tile_grid=tile_grid)
        self.clip_limit = params["clip_limit"]
        self.tile_grid = params["tile_grid"]

    def equalise(self, luma: Any) -> Any:
        # The blend stays out of XLA: XLA's CPU code may fuse its multiply-adds (FMA), which
        # moves a few values off OpenCV's float32 rounding by 1. The table lookups go in.
        b = self.backend
        top_left, top_right, bottom_left, bottom_right, xa, ya = self.compiled(
            "_corner_lookups", luma
        )
        ya, xa = ya[None, :, None], xa[None, None, :]
        top = top_left * (1.0 - xa) + top_right * xa
        bottom = bottom_left * (1.0 - xa) + bottom_right * xa
        # A blend of table values in [0, 255] with weights summing to 1 rounds into [0, 255]:
        # no clipping pass.
        return b.numpy.expand_dims(b.numpy.round(top * (1.0 - ya) + bottom * ya), -1)

    def _corner_lookups(self, luma: Any) -> tuple[Any, ...]:
        """Each pixel's value in the tables of its four nearest tiles (top left, top right,
        bottom left, bottom right; ``B×H×W`` each) and the horizontal and vertical weights."""
        b = self.backend
        tiles_y, tiles_x = self.tile_grid
        height, width = dims(b, luma)
        padded = self._pad_to_tiles(luma, height, width)
        tile_h, tile_w = b.shape(padded)[1] // tiles_y, b.shape(padded)[2] // tiles_x
        luts = self._tile_luts(padded, tile_h, tile_w)  # B×tilesY×tilesX×256
        ty1, ty2, ya = _tile_coords(b, height, tile_h, tiles_y)
        tx1, tx2, xa = _tile_coords(b, width, tile_w, tiles_x)
        flat_luts = b.numpy.reshape(luts, (-1,))
        # Each pixel's value in its image's block of tiles_y · tiles_x tables of 256 entries.
        values = (
            b.cast(luma[..., 0], "int32")
            + _batch_offsets(b, b.shape(luma)[0], tiles_y * tiles_x * _BINS)[..., 0]
        )

        def lookup(ty: Any, tx: Any) -> Any:
            index = (ty[:, None] * tiles_x + tx[None, :]) * _BINS  # H×W
            return b.numpy.take(flat_luts, index[None] + values)

        return lookup(ty1, tx1), lookup(ty1, tx2), lookup(ty2, tx1), lookup(ty2, tx2), xa, ya

    def _pad_to_tiles(self, luma: Any, height: Any, width: Any) -> Any:
        # OpenCV pads both axes (reflect-101) whenever either is not divisible by its tile
        # count, by a whole tile where that axis was divisible.
        b = self.backend
        tiles_y, tiles_x = self.tile_grid
        if isinstance(height, int) and isinstance(width, int):
            divisible = height % tiles_y == 0 and width % tiles_x == 0
            if divisible:
                return luma
            extra_y, extra_x = tiles_y - height % tiles_y, tiles_x - width % tiles_x
        else:
            divisible = b.numpy.logical_and(height % tiles_y == 0, width % tiles_x == 0)
            extra_y = b.numpy.where(divisible, 0, tiles_y - height % tiles_y)
            extra_x = b.numpy.where(divisible, 0, tiles_x - width % tiles_x)
        luma = b.numpy.take(luma, pad_index(b, height, 0, extra_y), axis=1)
        return b.numpy.take(luma, pad_index(b, width, 0, extra_x), axis=2)

    def _tile_luts(self, padded: Any, tile_h: Any, tile_w: Any) -> Any:
        b = self.backend
        tiles_y, tiles_x = self.tile_grid
        batch = b.shape(padded)[0]
        blocks = b.numpy.reshape(padded, (batch, tiles_y, tile_h, tiles_x, tile_w))
        blocks = b.numpy.transpose(blocks, (0, 1, 3, 2, 4))
        hist = _histograms(b, b.numpy.reshape(blocks, (batch * tiles_y * tiles_x, -1)))
        area = b.cast(tile_h * tile_w, "float32")
        limit = b.numpy.maximum(b.numpy.floor(self.clip_limit * area / _BINS), 1.0)
        clipped = b.numpy.sum(b.numpy.maximum(hist - limit, 0.0), axis=1, keepdims=True)
        hist = b.numpy.minimum(hist, limit)
        batch_add = b.numpy.floor(clipped / _BINS)
        residual = clipped - batch_add * _BINS
        step = b.numpy.maximum(b.numpy.floor(_BINS / b.numpy.maximum(residual, 1.0)), 1.0)
        bins = b.cast(b.numpy.arange(_BINS), "float32")[None, :]
        gets_one = b.numpy.logical_and(
            b.numpy.mod(bins, step) == 0, b.numpy.floor(bins / step) < residual
        )
        hist = hist + batch_add + b.cast(gets_one, "float32")
        scale = 255.0 / area
        luts = b.numpy.clip(b.numpy.round(b.numpy.cumsum(hist, axis=1) * scale), 0, 255)
        return b.numpy.reshape(luts, (batch, tiles_y, tiles_x, _BINS))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "clip_limit": self.clip_limit,
            "tile_grid": list(self.tile_grid),
        }


def _tile_coords(b: Any, size: Any, tile: Any, tiles: int) -> tuple[Any, Any, Any]:
    """OpenCV's CLAHE interpolation: neighbouring tile indices and weight per pixel."""
    inv = 1.0 / b.cast(tile, "float32")
    position = b.cast(b.numpy.arange(size), "float32") * inv - 0.5
    first = b.numpy.floor(position)
    weight = position - first
    first = b.cast(first, "int32")
    return (b.numpy.maximum(first, 0), b.numpy.minimum(first + 1, tiles - 1), weight)


@register
class RandomBrightnessContrast(RandomImageLayer):
    """Random brightness and contrast per image, with torchvision's ``ColorJitter`` rules (as
    albumentations' ``ColorJitter``, used by ``cvprep augment``): pixels × a brightness factor,
    then a blend with the image's mean gray by a contrast factor, clipped to [0, 255]. Always in
    that order; ColorJitter draws a random order per image, which changes the result slightly.

    ``brightness`` and ``contrast``: ``f`` for factors in ``[1 - f, 1 + f]``, or ``(low, high)``.
    Active only with ``training=True``.
    """

    def __init__(
        self, brightness: Any = 0.2, contrast: Any = 0.2, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.brightness = check_range("brightness", brightness, around=1.0, minimum=0.0)
        self.contrast = check_range("contrast", contrast, around=1.0, minimum=0.0)

    def _draw(self, images: Any, seed: Any) -> dict[str, Any]:
        """``brightness`` and ``contrast`` factors, one of each per image."""
        b = self.backend
        shape = (b.shape(images)[0], 1, 1, 1)
        brightness = b.random.uniform(shape, *self.brightness, seed=seed)
        contrast = b.random.uniform(shape, *self.contrast, seed=seed)
        return {
            "brightness": b.numpy.reshape(brightness, (-1,)),
            "contrast": b.numpy.reshape(contrast, (-1,)),
        }

    def _apply(self, images: Any, transformation: dict[str, Any]) -> Any:
        b = self.backend
        brightness = b.numpy.reshape(b.cast(transformation["brightness"], "float32"), (-1, 1, 1, 1))
        contrast = b.numpy.reshape(b.cast(transformation["contrast"], "float32"), (-1, 1, 1, 1))
        images = b.numpy.clip(images * brightness, 0.0, 255.0)
        gray = images if images.shape[-1] == 1 else luma_fixed_point(b, images[..., :3])
        mean = b.numpy.mean(gray, axis=(1, 2, 3), keepdims=True)
        # (x - mean) · contrast + mean, as one multiply-add per pixel.
        return b.numpy.clip(images * contrast + mean * (1.0 - contrast), 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "brightness": list(self.brightness),
            "contrast": list(self.contrast),
        }
