"""cvprep.read_image / write_image on every awkward kind of file."""

from __future__ import annotations

import io
import os
import stat

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


# Every format this OpenCV build decodes (cv2.getBuildInformation: "Media I/O").
ENCODABLE = [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pam"]
ENCODABLE += [".pfm", ".hdr", ".ras", ".jp2", ".avif"]


def _encoded(extension: str, height: int = 40, width: int = 60) -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if extension in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255.0
    elif extension in (".pgm", ".pbm"):
        image = image[:, :, 0]
    ok, encoded = cv2.imencode(extension, image)
    assert ok, extension
    return encoded.tobytes()


@pytest.mark.parametrize("extension", ENCODABLE)
def test_every_readable_format_is_sized_before_decoding(extension):
    data = _encoded(extension)
    assert cvprep.read_image(data).shape == (40, 60, 3)
    with pytest.raises(ImageError) as info:
        cvprep.read_image(data, max_pixels=2399)
    assert info.value.kind == "too_large"
    assert "60×40 = 2,400 pixels" in info.value.reason


def test_a_huge_radiance_header_is_refused_without_decoding():
    # 10,500×10,500 declared, a few bytes of pixels: refused from the header alone.
    data = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10500 +X 10500\n" + b"\x02\x02" * 64
    with pytest.raises(ImageError) as info:
        cvprep.read_image(data)
    assert info.value.kind == "too_large" and "10500×10500" in info.value.reason


@pytest.mark.parametrize(
    "payload",
    [b"#?RADIANCE\n\nnot a size\n", b"PF\nwidth height\n-1.0\n", b"P7\nDEPTH 3\nENDHDR\n"],
)
def test_text_headers_without_a_size_are_rejected(payload):
    with pytest.raises(ImageError) as info:
        cvprep.read_image(payload)
    assert info.value.kind == "unreadable" and "header" in info.value.reason


def test_a_larger_limit_than_pillows_own_is_honoured():
    # Pillow refuses more than 2 × 89,478,485 pixels by itself; cvprep's limit decides.
    data = huge_png(15000, 15000)  # 225,000,000 pixels
    with pytest.raises(ImageError, match="max_pixels"):
        cvprep.read_image(data)  # the default limit, 100 MP
    header = cvprep.io._read_header("<bytes>", data, max_pixels=300_000_000)
    assert header.size == (15000, 15000)
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS == 89478485  # restored


@pytest.mark.parametrize("size", [(1, 7), (7, 1), (1, 1)])
def test_one_pixel_wide_images_decode_at_every_reduction(size):
    image = np.full((*size, 3), 77, np.uint8)
    for extension in (".png", ".jpg"):
        data = cvprep.io.encode_image(image, extension)
        for reduce in (1, 2, 8):
            assert cvprep.read_image(data, reduce=reduce).shape[2] == 3


def test_reduce_applies_to_jpegs_only(photo):
    png = cvprep.io.encode_image(photo, ".png")
    assert cvprep.read_image(png, reduce=2).shape == photo.shape


def test_written_files_follow_the_umask(tmp_path, photo):
    previous = os.umask(0o022)
    cvprep.io._umask.cache_clear()
    try:
        written = cvprep.write_image(tmp_path / "a.png", photo[:8, :8])
        source = tmp_path / "private.bin"
        source.write_bytes(b"x")
        source.chmod(0o600)
        cvprep.io.copy_atomic(source, tmp_path / "copy.bin")
    finally:
        os.umask(previous)
        cvprep.io._umask.cache_clear()
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "copy.bin").stat().st_mode) == 0o644


def test_a_write_error_names_the_target_not_its_temporary_file(tmp_path, photo):
    blocker = tmp_path / "afile.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OSError) as info:
        cvprep.write_image(blocker / "sub" / "out.png", photo[:8, :8])
    assert info.value.filename == str(blocker / "sub" / "out.png")


def test_a_folder_written_atomically_replaces_the_old_one_only_when_whole(tmp_path):
    target = tmp_path / "export" / "savedmodel"
    with cvprep.io.folder_written_atomically(target) as partial:
        (partial / "saved_model.pb").write_bytes(b"first")
        assert not target.exists()  # nothing at the target while it is written
    assert (target / "saved_model.pb").read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~cvprep.io._umask()

    with pytest.raises(RuntimeError), cvprep.io.folder_written_atomically(target) as partial:
        (partial / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["saved_model.pb"]
    assert (target / "saved_model.pb").read_bytes() == b"first"

    with cvprep.io.folder_written_atomically(target) as partial:
        (partial / "variables").mkdir()
    assert sorted(p.name for p in target.iterdir()) == ["variables"]  # no stale file kept
    assert sorted(p.name for p in target.parent.iterdir()) == ["savedmodel"]  # nothing left


def test_a_folder_swap_that_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "savedmodel"
    target.mkdir()
    (target / "old.pb").write_bytes(b"old")
    real_replace = os.replace

    def refuse_the_new_folder(source, destination):
        if str(source).endswith(".partial"):
            raise PermissionError(13, "Permission denied", str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(cvprep.io.os, "replace", refuse_the_new_folder)
    with (
        pytest.raises(PermissionError) as info,
        cvprep.io.folder_written_atomically(target) as partial,
    ):
        (partial / "new.pb").write_bytes(b"new")
    assert info.value.filename == str(target)
    assert [p.name for p in target.iterdir()] == ["old.pb"]
    assert [p.name for p in tmp_path.iterdir()] == ["savedmodel"]


def test_a_folder_write_follows_a_link_and_repairs_an_interrupted_swap(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.pb").write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with cvprep.io.folder_written_atomically(link) as partial:
        (partial / "new.pb").write_bytes(b"new")
    assert link.is_symlink() and [p.name for p in real.iterdir()] == ["new.pb"]

    # Killed between the renames: the old folder waits aside and nothing is at the target.
    target = tmp_path / "savedmodel"
    aside = tmp_path / ".savedmodel.abc123.old"
    aside.mkdir()
    (aside / "saved_model.pb").write_bytes(b"kept")
    with pytest.raises(RuntimeError), cvprep.io.folder_written_atomically(target):
        raise RuntimeError("this write fails too")
    assert (target / "saved_model.pb").read_bytes() == b"kept" and not aside.exists()
