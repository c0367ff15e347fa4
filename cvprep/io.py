"""Image reading and writing: the only place where cvprep meets BGR and file formats.

Every public function here speaks RGB. Decoding is done by OpenCV (one decoder everywhere);
Pillow only reads headers (size, mode, EXIF orientation) so that oversized images are refused
before a single pixel is decoded.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from cvprep import params
from cvprep.errors import ImageError

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused (decompression-bomb guard)."""

WRITE_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}

_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# cv2.rotate/flip steps that undo each EXIF orientation value (tag 0x0112).
_EXIF_TRANSPOSE = {
    2: (None, 1),
    3: (cv2.ROTATE_180, None),
    4: (None, 0),
    5: (cv2.ROTATE_90_CLOCKWISE, 1),
    6: (cv2.ROTATE_90_CLOCKWISE, None),
    7: (cv2.ROTATE_90_COUNTERCLOCKWISE, 1),
    8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}

ImageArray = npt.NDArray[np.uint8]
REDUCE_FACTORS = (1, 2, 4, 8)


def check_max_pixels(max_pixels: object) -> int | None:
    """The pixel limit: a positive integer, or ``None`` for none."""
    return params.check_optional_int("max_pixels", max_pixels, minimum=1)


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    mode: Literal["rgb", "grayscale"] = "rgb",
    alpha: Literal["drop", "composite"] = "composite",
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reduce: Literal[1, 2, 4, 8] = 1,
) -> ImageArray:
    """Decode an image file or byte string into an RGB (or grayscale) ``uint8`` array.

    Parameters
    ----------
    source : path or bytes
        A file path, or the encoded bytes of an image.
    mode : {"rgb", "grayscale"}
        ``"rgb"`` returns ``H×W×3``; ``"grayscale"`` returns ``H×W`` (ITU-R BT.601 luma).
    alpha : {"drop", "composite"}
        What to do with an alpha channel: ignore it, or blend the image over ``background``.
    background : (r, g, b)
        Background colour used by ``alpha="composite"``.
    max_pixels : int or None
        Refuse images with more pixels (read from the header, before decoding). ``None`` = no limit.
    reduce : {1, 2, 4, 8}
        Decode JPEGs at 1/``reduce`` of the size: much faster for large photos, but not
        bit-exact compared to decoding fully and resizing. Other formats are decoded at full
        size.

    Returns
    -------
    numpy.ndarray
        ``uint8``, EXIF orientation applied. 16-bit images are scaled to 8 bits; CMYK is
        converted to RGB.

    Raises
    ------
    ImageError
        When the file is empty, truncated, not an image, larger than ``max_pixels`` or
        otherwise undecodable. The message names the file.
    ValueError
        For invalid arguments.
    """
    params.check_choice("mode", mode, ("rgb", "grayscale"))
    params.check_choice("alpha", alpha, ("drop", "composite"))
    params.check_choice("reduce", reduce, REDUCE_FACTORS)
    check_max_pixels(max_pixels)
    name, data = _load_bytes(source)
    header = _read_header(name, data, max_pixels)
    image, is_rgb = _decode(name, data, header, reduce=reduce)
    if not is_rgb:
        image = _to_rgb(image, header, alpha=alpha, background=background)
    if mode == "grayscale":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image


def _load_bytes(source: str | os.PathLike[str] | bytes) -> tuple[str, bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        try:
            data = Path(name).read_bytes()
        except IsADirectoryError:
            raise ImageError(name, "unreadable", "is a directory, not an image file") from None
        except OSError as exc:
            raise ImageError(name, "unreadable", f"cannot read file ({exc.strerror})") from exc
    if not data:
        raise ImageError(name, "empty", "file is empty (0 bytes)")
    return name, data


class _Header:
    """What is known of an image before its pixels are decoded."""

    def __init__(
        self,
        fmt: str,
        size: tuple[int, int] | None,
        orientation: int = 1,
        has_alpha: bool = False,
    ) -> None:
        self.format = fmt  # the OpenCV decoder that will read it (see _sniff)
        self.size = size  # (width, height); None only when no pixel limit applies
        self.orientation = orientation
        self.has_alpha = has_alpha


# The decoders of OpenCV 5 and the signatures they recognise (their checkSignature), in the
# order imdecode tries them: what _sniff names here is what OpenCV will decode, so the size
# checked against the pixel limit is that of the image that will be decoded. A file no
# entry matches is not decoded at all (OpenCV would refuse it too).
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("bmp", r"BM"),
    ("jpeg", r"\xff\xd8\xff"),
    ("png", r"\x89PNG\r\n\x1a\n"),
    ("tiff", r"II\*\x00|MM\x00\*|II\+\x00|MM\x00\+"),
    ("webp", r"RIFF....WEBP"),
    ("avif", r"....ftyp(avif|avis)"),
    ("jpeg2000", r"\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51"),
    ("gif", r"GIF8[79]a"),
    ("hdr", r"#\?(RGBE|RADIANCE)"),
    ("sunraster", r"\x59\xa6\x6a\x95"),
    ("pnm", r"P[1-6]\s"),
    ("pam", r"P7\s"),
    ("pfm", r"P[Ff]\s"),
    ("exr", r"\x76\x2f\x31\x01"),
)
_SIGNATURE = re.compile(
    b"|".join(b"(?P<%s>%s)" % (name.encode(), pattern.encode()) for name, pattern in _SIGNATURES),
    re.DOTALL,
)
# Formats whose header Pillow reads (restricted to that one plugin: a file is never sized as
# one format and decoded as another). HDR, PAM and PFM headers are read here; EXR is refused
# when a pixel limit applies (cvprep cannot size it, and OpenCV is usually built without it).
_PILLOW_FORMATS = {
    "bmp": "BMP",
    "jpeg": "JPEG",
    "png": "PNG",
    "tiff": "TIFF",
    "webp": "WEBP",
    "avif": "AVIF",
    "jpeg2000": "JPEG2000",
    "gif": "GIF",
    "sunraster": "SUN",
    "pnm": "PPM",
}
_PILLOW_UNLIMITED = threading.Lock()


def _sniff(data: bytes) -> str | None:
    match = _SIGNATURE.match(data[:16])
    return match.lastgroup if match else None


def _read_header(name: str, data: bytes, max_pixels: int | None) -> _Header:
    """The format and size of an image; refuses it before decoding when it is too large
    (every format OpenCV decodes is sized first) or visibly truncated."""
    fmt = _sniff(data)
    if fmt is None:
        raise ImageError(name, "not_image", "not an image (unknown or unsupported format)")
    if fmt == "jpeg" and _jpeg_is_truncated(data):
        raise ImageError(name, "truncated", "JPEG data is truncated (no end-of-image marker)")
    if fmt == "png" and b"IEND" not in data[-64:]:
        raise ImageError(name, "truncated", "PNG data is truncated (no IEND chunk)")
    header = _header_of(name, data, fmt, max_pixels)
    if header.size is not None and max_pixels is not None:
        width, height = header.size
        if width * height > max_pixels:
            raise ImageError(
                name,
                "too_large",
                f"{width}×{height} = {width * height:,} pixels exceeds the limit "
                f"of {max_pixels:,} (max_pixels)",
            )
    return header


def _header_of(name: str, data: bytes, fmt: str, max_pixels: int | None) -> _Header:
    if fmt == "jpeg":
        size = _jpeg_size(data)
        if size is not None:
            # A JPEG has no alpha and OpenCV applies its EXIF orientation: the size (for the
            # pixel limit) is all that is needed, and reading it here is cheaper than Pillow.
            return _Header(fmt, size)
    if fmt in _TEXT_HEADERS:
        size = _TEXT_HEADERS[fmt](data)
        if size is None:
            raise ImageError(name, "unreadable", f"{fmt.upper()} header is corrupt (no size)")
        return _Header(fmt, size)
    if fmt in _PILLOW_FORMATS:
        return _pillow_header(name, data, fmt, max_pixels)
    if max_pixels is not None:
        raise ImageError(
            name,
            "not_image",
            f"{fmt.upper()} images are not supported (their size cannot be checked against "
            "max_pixels before decoding)",
        )
    return _Header(fmt, None)


def _pillow_header(name: str, data: bytes, fmt: str, max_pixels: int | None) -> _Header:
    try:
        try:
            pil = _pillow_open(data, _PILLOW_FORMATS[fmt])
        except Image.DecompressionBombError:
            # Pillow refuses more than 2 × Image.MAX_IMAGE_PIXELS by itself: that proves
            # "too large" only for a stricter cvprep limit; a larger one must be honoured.
            pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            if max_pixels is not None and max_pixels <= pillow_limit:
                raise ImageError(
                    name,
                    "too_large",
                    f"more than {pillow_limit:,} pixels exceeds the limit of {max_pixels:,} "
                    "(max_pixels)",
                ) from None
            with _PILLOW_UNLIMITED:
                limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    pil = _pillow_open(data, _PILLOW_FORMATS[fmt])
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
        orientation = int(pil.getexif().get(0x0112, 1) or 1)
        has_alpha = "A" in pil.getbands() or "transparency" in pil.info
        return _Header(fmt, pil.size, orientation, has_alpha)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, "too_large", f"image is far too large to decode ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            name, "unreadable", f"{fmt.upper()} header is corrupt ({exc or type(exc).__name__})"
        ) from exc


def _pillow_open(data: bytes, pillow_format: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[pillow_format])


def _text_fields(data: bytes, count: int) -> list[bytes]:
    """The first ``count`` whitespace-separated fields of a text header (PNM-style comments
    skipped)."""
    head = re.sub(rb"#[^\n]*", b" ", data[:4096])
    return head.split(maxsplit=count)[:count]


def _pfm_size(data: bytes) -> tuple[int, int] | None:
    fields = _text_fields(data, 3)  # "PF", width, height
    return _positive(fields[1:3]) if len(fields) == 3 else None


def _pam_size(data: bytes) -> tuple[int, int] | None:
    head = re.sub(rb"#[^\n]*", b"", data[: data.find(b"ENDHDR") if b"ENDHDR" in data else 4096])
    width, height = re.search(rb"WIDTH\s+(\d+)", head), re.search(rb"HEIGHT\s+(\d+)", head)
    return _positive([width.group(1), height.group(1)]) if width and height else None


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    # Radiance: text lines, an empty line, then e.g. "-Y 480 +X 640" (any axis order).
    match = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)", data[:65536])
    if match is None or match.group(2) == match.group(5):
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return _positive([second, first] if match.group(2) == b"Y" else [first, second])


def _positive(values: list[Any]) -> tuple[int, int] | None:
    try:
        width, height = (int(v) for v in values)
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


_TEXT_HEADERS = {"hdr": _hdr_size, "pfm": _pfm_size, "pam": _pam_size}


# Start-of-frame markers (baseline, progressive, lossless, ...), not DHT/JPG/DAC (C4, C8, CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, or None when the markers are not
    the plain sequence expected (the caller then asks Pillow)."""
    offset, end = 2, min(len(data), 1 << 20)
    while offset + 9 <= end:
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_SOF:
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            width = int.from_bytes(data[offset + 7 : offset + 9], "big")
            return (width, height) if width and height else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header: not a plain JPEG
            return None
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return None


def _jpeg_is_truncated(data: bytes) -> bool:
    # Entropy-coded data never contains FF D9, so a complete file has the end-of-image
    # marker after its last start-of-scan; trailing bytes after EOI are tolerated. Nearly
    # every file ends with that marker: look at its last bytes before scanning it all.
    tail = data[-64:]
    end = tail.rfind(b"\xff\xd9")
    if end >= 0 and tail.find(b"\xff\xda", end) < 0:
        return False
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) < 0


def _decode(name: str, data: bytes, header: _Header, *, reduce: int) -> tuple[np.ndarray, bool]:
    """The decoded pixels, and whether OpenCV already delivered them as 8-bit RGB."""
    buffer = np.frombuffer(data, np.uint8)
    keep_alpha = header.has_alpha
    # Only libjpeg decodes at a reduced scale; OpenCV's reduced flags would shrink other
    # formats after a full decode (and fail on 1-pixel images): they are read at full size.
    reduce = reduce if header.format == "jpeg" else 1
    # A JPEG is 8-bit without alpha: the decoder can write RGB itself (gray and CMYK
    # converted, EXIF orientation applied), which saves a full-size conversion pass.
    direct_rgb = header.format == "jpeg" and reduce == 1
    if direct_rgb:
        flags = cv2.IMREAD_COLOR_RGB
    elif reduce > 1:
        flags = _REDUCED_FLAGS[reduce]
    elif keep_alpha:
        flags = cv2.IMREAD_UNCHANGED  # keeps alpha; EXIF orientation is applied below
    else:
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH  # applies EXIF orientation
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ImageError(name, "unreadable", f"decoder failed: {exc.err or exc}") from exc
    if image is None or image.size == 0:
        raise ImageError(
            name, "unreadable", f"{header.format.upper()} data is corrupt (the decoder rejected it)"
        )
    if keep_alpha:
        image = _apply_orientation(image, header.orientation)
    return image, direct_rgb


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    rotation, flip = _EXIF_TRANSPOSE.get(orientation, (None, None))
    if flip is not None:
        image = cv2.flip(image, flip)
    if rotation is not None:
        image = cv2.rotate(image, rotation)
    return image


def _to_rgb(
    image: np.ndarray, header: _Header, *, alpha: str, background: tuple[int, int, int]
) -> ImageArray:
    if image.dtype != np.uint8:
        image = _rescale_depth(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        if alpha == "drop":
            return rgb
        weight = image[:, :, 3:4].astype(np.float32) / 255.0
        blended = rgb * weight + np.asarray(background, np.float32) * (1.0 - weight)
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _rescale_depth(image: np.ndarray) -> ImageArray:
    """A decoded image of another bit depth, rescaled to 8 bits by its format's full range.

    (Not :func:`cvprep.ops.to_uint8`, which takes float values already in [0, 255].)
    """
    if image.dtype == np.uint16:
        # 65535 -> 255 with rounding: the same scale as dividing by 257.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        # Float images (EXR, float TIFF) are taken to hold values in [0, 1].
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    info = np.iinfo(image.dtype)
    scaled = (image.astype(np.float64) - info.min) / (info.max - info.min) * 255.0
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def writable_name(path: Path) -> Path:
    """``path`` when cvprep writes its format (by extension), else the same name as PNG
    (lossless): a GIF, PPM or ``.jfif`` input gets a ``.png`` output."""
    return path if path.suffix.lower() in WRITE_FORMATS else path.with_suffix(".png")


def encode_image(image: npt.ArrayLike, extension: str, *, quality: int | None = None) -> bytes:
    """Encode an RGB/grayscale ``uint8`` image to bytes in the format named by ``extension``.

    ``quality`` is 1–100 for JPEG/WebP and ignored for lossless formats.
    """
    ext = extension.lower() if extension.startswith(".") else f".{extension.lower()}"
    if ext not in WRITE_FORMATS:
        raise ValueError(
            f"`extension` should be one of {sorted(WRITE_FORMATS)}. Received: {extension!r}"
        )
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"`quality` should be between 1 and 100. Received: quality={quality}")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"`image` should be uint8 to be written. Received dtype={array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1)):
        raise ValueError(
            f"`image` should be H×W, H×W×1, H×W×3 or H×W×4. Received shape={array.shape}"
        )
    params: list[int] = []
    if quality is not None and WRITE_FORMATS[ext] == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif quality is not None and WRITE_FORMATS[ext] == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(ext, array, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} image as {ext}")
    return encoded.tobytes()


def write_image(
    path: str | os.PathLike[str], image: npt.ArrayLike, *, quality: int | None = None
) -> Path:
    """Write an RGB (or grayscale) ``uint8`` image atomically; the format follows the extension.

    The bytes go to a temporary file in the destination folder that is then renamed over
    ``path``, so a reader (or an interrupted run) never sees a half-written image.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    target = Path(path)
    data = encode_image(image, target.suffix, quality=quality)
    atomic_write_bytes(target, data)
    return target


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in ``target``'s folder, creating the folder only when missing
    (not one ``mkdir`` call per file written), with the permissions of a normal new file."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    # mkstemp makes the file private (0600); a file written normally gets 0666 minus the
    # umask, so that other users or a serving process can read what cvprep wrote.
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


@functools.cache
def _umask() -> int:
    """The process's umask (read once: setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _named_after(target: Path) -> Iterator[None]:
    """An ``OSError`` of a write names the file being written, not its temporary file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(target):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(target)) from exc


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a temporary file and ``os.replace``.

    A reader (or an interrupted run) never sees a half-written file; the file gets the
    permissions of a normal new file (0666 minus the umask). An ``OSError`` names ``target``.
    """
    with _named_after(target):
        fd, tmp = _temporary_beside(target)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def folder_written_atomically(target: Path) -> Iterator[Path]:
    """A new folder beside ``target`` to write into: when the ``with`` block ends normally
    it takes ``target``'s place (a folder already there is moved aside first, then removed);
    when the block raises, it goes and ``target`` is untouched. A reader or an interrupted
    run never finds a half-written folder at ``target``: killed while writing, it leaves a
    hidden ``.NAME.*.partial`` folder beside it; killed in the instant between the two
    renames, the old folder waits beside it as ``.NAME.*.old`` and the next call puts it
    back first. A link at ``target`` is followed (the folder it points to is replaced). An
    ``OSError`` names ``target``."""
    if target.is_symlink():
        target = target.resolve()  # from here on not a link: the swaps rename real entries
    with _named_after(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        _restore_interrupted_swap(target)
        partial = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
        # mkdtemp makes the folder private (0700); a folder made normally is 0777 minus the umask.
        with contextlib.suppress(OSError):
            os.chmod(partial, 0o777 & ~_umask())
    try:
        yield partial
        with _named_after(target):
            _swap_in(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already unless something failed


def _restore_interrupted_swap(target: Path) -> None:
    """An old folder moved aside by a swap that was killed before the new one took its
    place goes back to ``target``."""
    if target.exists():
        return
    aside = list(target.parent.glob(f".{glob.escape(target.name)}.*.old"))
    if aside:
        os.replace(max(aside, key=lambda path: path.stat().st_mtime), target)


def _swap_in(partial: Path, target: Path) -> None:
    """``partial`` renamed to ``target``, whose old content (if any) goes only after that."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        old.rmdir()  # a unique free name, whether ``target`` is a folder or a file
        os.replace(target, old)
    try:
        os.replace(partial, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # put the old one back
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file via a temporary file and ``os.replace``, keeping its modification time
    (``inspect`` takes the older of two copies for the original); the copy gets the
    permissions of a normal new file, as :func:`atomic_write_bytes`."""
    with _named_after(target):
        fd, tmp = _temporary_beside(target)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            info = os.stat(source)
            os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
