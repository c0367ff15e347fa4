"""Shared fixtures: real photos from sample_images/ and generated problem files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
PHOTOS = sorted((SAMPLES / "photos").glob("*.jpg"))
SHAPES = SAMPLES / "shapes"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def load_photo(name: str = "chelsea") -> np.ndarray:
    """An RGB uint8 photo, decoded with plain OpenCV (independent of cvprep's reader)."""
    return cv2.cvtColor(cv2.imread(str(SAMPLES / "photos" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    return [load_photo(p.stem) for p in PHOTOS]


def jpeg_bytes(rgb: np.ndarray, **save_kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=92, **save_kwargs)
    return buffer.getvalue()


def exif_rotated_jpeg(rgb: np.ndarray, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(rgb, exif=exif.tobytes())


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, "PNG") if mode else Image.fromarray(array).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def sixteen_bit_png(gray16: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", gray16)
    assert ok
    return encoded.tobytes()


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def huge_png(width: int = 12000, height: int = 10000) -> bytes:
    """A valid, tiny (compressed) PNG whose header declares width×height pixels."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


GOOD_KINDS = ("plain", "exif_rotated", "cmyk", "sixteen_bit", "rgba", "grayscale")
BAD_KINDS = {
    "corrupt": "unreadable",
    "empty": "empty",
    "truncated": "truncated",
    "text": "not_image",
    "huge": "too_large",
}


def make_messy_folder(root: Path, classes: tuple[str, ...] = ("cats", "dogs")) -> dict[str, str]:
    """Write one file of every good and bad kind per class. Returns {relative path: kind}."""
    photo = load_photo("chelsea")[:120, :160]
    payloads = {
        "plain.jpg": jpeg_bytes(photo),
        "exif_rotated.jpg": exif_rotated_jpeg(photo),
        "cmyk.jpg": cmyk_jpeg(photo),
        "sixteen_bit.png": sixteen_bit_png(
            cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        ),
        "rgba.png": png_bytes(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])),
        "grayscale.png": png_bytes(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)),
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + b"garbage" * 50,
        "empty.jpg": b"",
        "truncated.jpg": jpeg_bytes(photo)[:1500],
        "text.png": b"this is not an image\n" * 10,
        "huge.png": huge_png(),
    }
    kinds = {}
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, data in payloads.items():
            (root / cls / name).write_bytes(data)
            kinds[f"{cls}/{name}"] = name.rsplit(".", 1)[0]
        (root / cls / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / cls / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return kinds


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes, to prove an input folder was not modified."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
