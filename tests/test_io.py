"""cvprep.read_image / write_image on every awkward kind of file."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

import cvprep
from cvprep import ImageError
from tests.conftest import (
    BAD_KINDS,
    GOOD_KINDS,
    cmyk_jpeg,
    exif_rotated_jpeg,
    huge_png,
    jpeg_bytes,
    load_photo,
    make_messy_folder,
    png_bytes,
    sixteen_bit_png,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_photo("chelsea")[:120, :160]


def test_reads_rgb_like_opencv(tmp_path):
    path = tmp_path / "a.png"
    photo = load_photo("coffee")
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(cvprep.read_image(path), photo)
    np.testing.assert_array_equal(cvprep.read_image(path.read_bytes()), photo)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(photo, orientation):
    plain = cvprep.read_image(jpeg_bytes(photo))
    rotated = cvprep.read_image(exif_rotated_jpeg(photo, orientation))
    expected = {
        3: cv2.rotate(plain, cv2.ROTATE_180),
        6: cv2.rotate(plain, cv2.ROTATE_90_CLOCKWISE),
        8: cv2.rotate(plain, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }[orientation]
    assert rotated.shape == expected.shape
    assert np.abs(rotated.astype(int) - expected).mean() < 1.0


def test_grayscale_file_becomes_rgb(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    out = cvprep.read_image(png_bytes(gray))
    assert out.shape == (*gray.shape, 3) and (out[..., 0] == gray).all()
    np.testing.assert_array_equal(cvprep.read_image(png_bytes(gray), mode="grayscale"), gray)


def test_rgba_composited_or_dropped(photo):
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])  # fully transparent
    rgba[:10, :, 3] = 255
    data = png_bytes(rgba)
    composite = cvprep.read_image(data)
    assert (composite[20:] == 255).all()  # transparent over white
    np.testing.assert_array_equal(composite[:10], photo[:10])
    np.testing.assert_array_equal(cvprep.read_image(data, alpha="drop"), photo)


def test_sixteen_bit_is_scaled_to_eight(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    out = cvprep.read_image(sixteen_bit_png(gray.astype(np.uint16) * 257), mode="grayscale")
    np.testing.assert_array_equal(out, gray)


def test_cmyk_jpeg_is_converted(photo):
    out = cvprep.read_image(cmyk_jpeg(photo))
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - photo).mean() < 6


def test_reduced_decode_is_smaller_and_close(photo):
    data = jpeg_bytes(load_photo("astronaut"))
    full = cvprep.read_image(data)
    half = cvprep.read_image(data, reduce=2)
    assert half.shape == (256, 256, 3)
    reference = cv2.resize(full, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - reference).mean() < 3


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not_image"),
        (b"\xff\xd8\xff\xe0" + b"garbage" * 40, "unreadable"),
        (huge_png(), "too_large"),
    ],
)
def test_bad_bytes_raise_image_error(payload, kind):
    with pytest.raises(ImageError) as info:
        cvprep.read_image(payload)
    assert info.value.kind == kind and info.value.source == "<bytes>"


def test_truncated_jpeg_and_png(tmp_path, photo):
    for name, data in [("t.jpg", jpeg_bytes(photo)), ("t.png", png_bytes(photo))]:
        path = tmp_path / name
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(ImageError, match=str(path)) as info:
            cvprep.read_image(path)
        assert info.value.kind == "truncated"


def test_pixel_limit_is_configurable(photo):
    data = jpeg_bytes(photo)
    with pytest.raises(ImageError, match="max_pixels"):
        cvprep.read_image(data, max_pixels=1000)
    assert cvprep.read_image(data, max_pixels=None).shape == photo.shape


def test_messy_folder_kinds(tmp_path):
    kinds = make_messy_folder(tmp_path, classes=("a",))
    for relative, kind in kinds.items():
        path = tmp_path / relative
        if kind in GOOD_KINDS:
            image = cvprep.read_image(path)
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        else:
            with pytest.raises(ImageError) as info:
                cvprep.read_image(path)
            assert info.value.kind == BAD_KINDS[kind], relative
            assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        cvprep.read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        cvprep.read_image(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp"])
def test_write_round_trip(tmp_path, photo, ext):
    path = cvprep.write_image(tmp_path / f"sub/out{ext}", photo, quality=95)
    back = cvprep.read_image(path)
    tolerance = 0 if ext in (".png", ".bmp") else 6
    assert np.abs(back.astype(int) - photo).mean() <= tolerance
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_write_quality_changes_size(tmp_path, photo):
    low = cvprep.write_image(tmp_path / "low.jpg", photo, quality=10).stat().st_size
    high = cvprep.write_image(tmp_path / "high.jpg", photo, quality=95).stat().st_size
    assert low < high


def test_write_rejects_bad_arguments(tmp_path, photo):
    with pytest.raises(ValueError, match="extension"):
        cvprep.write_image(tmp_path / "x.xyz", photo)
    with pytest.raises(ValueError, match="quality"):
        cvprep.write_image(tmp_path / "x.jpg", photo, quality=0)
    with pytest.raises(ValueError, match="uint8"):
        cvprep.write_image(tmp_path / "x.png", photo.astype(np.float32))


def test_failed_write_leaves_old_file_intact(tmp_path, photo, monkeypatch):
    path = cvprep.write_image(tmp_path / "keep.png", photo)
    before = path.read_bytes()

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr("cvprep.io.os.replace", broken_replace)
    with pytest.raises(OSError):
        cvprep.write_image(path, photo[:10])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_jpeg_size_from_the_header_agrees_with_pillow():
    from cvprep.io import _jpeg_size

    photo = load_photo("coffee")[:150, :210]
    variants = {
        "plain": jpeg_bytes(photo),
        "progressive": jpeg_bytes(photo, progressive=True),
        "exif": exif_rotated_jpeg(photo, 6),
        "cmyk": cmyk_jpeg(photo),
        "gray": jpeg_bytes(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)),
    }
    for name, data in variants.items():
        assert _jpeg_size(data) == Image.open(io.BytesIO(data)).size == (210, 150), name
    assert _jpeg_size(b"\xff\xd8\xff\xda" + b"\x00" * 20) is None  # not plain: Pillow decides
    assert _jpeg_size(b"\xff\xd8" + b"\x00" * 20) is None
