"""cvprep.ops: parity with direct cv2 calls on real photos, edge cases and validation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cvprep import ops
from tests.conftest import load_photo


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def rgb(bgr_image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr_image, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------ parity with direct cv2 calls
# OpenCV code written the way a user would, on BGR data as cv2.imread returns it.
@pytest.mark.parametrize("interpolation", ["area", "linear", "cubic", "nearest"])
def test_resize_equals_cv2(photos, interpolation):
    flag = ops.INTERPOLATIONS[interpolation]
    for photo in photos:
        expected = rgb(cv2.resize(bgr(photo), (150, 120), interpolation=flag))
        np.testing.assert_array_equal(
            ops.resize(photo, (120, 150), interpolation=interpolation), expected
        )


def test_resize_pad_letterboxes_with_fill():
    photo = load_photo("chelsea")  # 300×451, wider than tall
    out = ops.resize(photo, (200, 200), fit="pad", fill=(255, 0, 0))
    new_h = round(300 * 200 / 451)
    top = (200 - new_h) // 2
    assert out.shape == (200, 200, 3)
    assert (out[0] == [255, 0, 0]).all() and (out[-1] == [255, 0, 0]).all()
    expected = rgb(cv2.resize(bgr(photo), (200, new_h), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(out[top : top + new_h], expected)


def test_resize_crop_takes_the_centre():
    photo = load_photo("chelsea")
    out = ops.resize(photo, (100, 100), fit="crop")
    new_w = round(451 * 100 / 300)
    left = (new_w - 100) // 2
    full = rgb(cv2.resize(bgr(photo), (new_w, 100), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(out, full[:, left : left + 100])


def test_grayscale_equals_cv2(photos):
    for photo in photos:
        np.testing.assert_array_equal(
            ops.to_grayscale(photo), cv2.cvtColor(bgr(photo), cv2.COLOR_BGR2GRAY)
        )
        three = ops.to_grayscale(photo, keep_channels=True)
        assert three.shape == photo.shape and (three[..., 0] == three[..., 2]).all()


def test_equalize_gray_equals_cv2(photos):
    for photo in photos:
        gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(ops.equalize_hist(gray), cv2.equalizeHist(gray))


def test_equalize_colour_equalises_luminance_only(photos):
    for photo in photos:
        ycrcb = cv2.cvtColor(bgr(photo), cv2.COLOR_BGR2YCrCb)
        ycrcb[..., 0] = cv2.equalizeHist(ycrcb[..., 0])
        expected = rgb(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR))
        np.testing.assert_array_equal(ops.equalize_hist(photo), expected)


def test_equalized_cdf_is_nearly_linear():
    gray = cv2.cvtColor(load_photo("coffee"), cv2.COLOR_RGB2GRAY) // 3  # low contrast
    cdf = np.cumsum(np.bincount(ops.equalize_hist(gray).ravel(), minlength=256)) / gray.size
    assert np.abs(cdf - np.linspace(0, 1, 256)).max() < 0.05


def test_clahe_equals_cv2(photos):
    engine = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 6))  # cv2 Size is (cols, rows)
    for photo in photos:
        gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(ops.clahe(gray, 3.0, tile_grid=(6, 4)), engine.apply(gray))


@pytest.mark.parametrize(("ksize", "sigma"), [(5, 0.0), (3, 0.0), (9, 2.5), (0, 1.5)])
def test_gaussian_blur_equals_cv2(photos, ksize, sigma):
    for photo in photos:
        expected = rgb(cv2.GaussianBlur(bgr(photo), (ksize, ksize), sigma))
        np.testing.assert_array_equal(ops.gaussian_blur(photo, ksize, sigma=sigma), expected)


def test_gaussian_blur_lowers_variance(photos):
    for photo in photos:
        assert ops.gaussian_blur(photo, 7).astype(float).var() < photo.astype(float).var()


@pytest.mark.parametrize("ksize", [3, 5, 7])
def test_median_blur_equals_cv2(photos, ksize):
    for photo in photos:
        np.testing.assert_array_equal(
            ops.median_blur(photo, ksize), rgb(cv2.medianBlur(bgr(photo), ksize))
        )


@pytest.mark.parametrize(("aperture", "l2"), [(3, False), (3, True), (5, False)])
def test_canny_equals_cv2(photos, aperture, l2):
    for photo in photos:
        gray = cv2.cvtColor(bgr(photo), cv2.COLOR_BGR2GRAY)
        expected = cv2.Canny(gray, 80, 160, apertureSize=aperture, L2gradient=l2)
        np.testing.assert_array_equal(
            ops.canny(photo, 80, 160, aperture=aperture, l2_gradient=l2), expected
        )


def test_canny_edges_lie_on_the_outline():
    image = np.zeros((64, 64), np.uint8)
    cv2.rectangle(image, (16, 16), (47, 47), 255, -1)
    edges = ops.canny(image, 50, 150)
    ys, xs = np.nonzero(edges)
    assert len(ys) > 0
    distance = np.minimum.reduce(
        [np.abs(ys - 16), np.abs(ys - 47), np.abs(xs - 16), np.abs(xs - 47)]
    )
    assert distance.max() <= 1


@pytest.mark.parametrize("angle", [15.0, -30.0, 90.0])
def test_rotate_equals_cv2(photos, angle):
    for photo in photos:
        h, w = photo.shape[:2]
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        expected = rgb(cv2.warpAffine(bgr(photo), matrix, (w, h)))
        np.testing.assert_array_equal(ops.rotate(photo, angle), expected)


def test_rotate_expand_keeps_every_pixel():
    image = np.full((40, 80), 255, np.uint8)
    out = ops.rotate(image, 90, expand=True)
    assert out.shape == (80, 40)
    assert out.sum() == image.sum()  # nothing cut off, nothing added
    out45 = ops.rotate(image, 45, expand=True)
    assert out45.shape == (85, 85)
    assert abs(int(out45.sum()) - int(image.sum())) / image.sum() < 0.02


def test_rotate_border_modes_fill_corners():
    image = np.full((50, 50, 3), 100, np.uint8)
    assert (ops.rotate(image, 45, fill=(255, 0, 0))[0, 0] == [255, 0, 0]).all()
    assert (ops.rotate(image, 45, border="replicate")[0, 0] == 100).all()


# ------------------------------------------------------------------ edge cases
ALL_OPS = {
    "resize": lambda im: ops.resize(im, (5, 7)),
    "resize_pad": lambda im: ops.resize(im, (5, 7), fit="pad"),
    "resize_crop": lambda im: ops.resize(im, (5, 7), fit="crop"),
    "grayscale": ops.to_grayscale,
    "equalize": ops.equalize_hist,
    "clahe": ops.clahe,
    "gaussian": ops.gaussian_blur,
    "median": ops.median_blur,
    "canny": ops.canny,
    "rotate": lambda im: ops.rotate(im, 30),
    "rotate_expand": lambda im: ops.rotate(im, 30, expand=True),
}


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (7, 13, 3), (13, 7, 1), (9, 11)])
def test_odd_and_tiny_shapes(name, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = ALL_OPS[name](image)
    assert out.dtype == np.uint8
    if name == "canny":
        assert out.shape == shape[:2]
    elif name == "grayscale":
        assert out.shape == (shape[:2] if len(shape) == 2 or shape[2] == 3 else shape)
    else:
        assert out.ndim == len(shape) and (len(shape) == 2 or out.shape[2] == shape[2])


@pytest.mark.parametrize("name", ["resize", "grayscale", "gaussian", "median", "rotate"])
def test_float_input_stays_float(name):
    image = np.random.default_rng(1).uniform(0, 255, (16, 20, 3)).astype(np.float32)
    out = ALL_OPS[name](image)
    assert out.dtype == np.float32
    reference = ALL_OPS[name](np.rint(image).astype(np.uint8)).astype(np.float32)
    assert np.abs(out - reference).mean() < 2.0


@pytest.mark.parametrize("name", ["equalize", "clahe", "canny"])
def test_eight_bit_ops_round_float_input(name):
    image = np.random.default_rng(2).uniform(0, 255, (16, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        ALL_OPS[name](image), ALL_OPS[name](np.rint(image).astype(np.uint8))
    )


# ------------------------------------------------------------------ invalid parameters
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda im: ops.resize(im, (0, 5)), "size"),
        (lambda im: ops.resize(im, (5, 5), interpolation="bogus"), "interpolation"),
        (lambda im: ops.resize(im, (5, 5), fit="zoom"), "fit"),
        (lambda im: ops.resize(im, (5, 5), fill=300), "fill"),
        (lambda im: ops.to_grayscale(im, keep_channels="yes"), "keep_channels"),
        (lambda im: ops.clahe(im, 0), "clip_limit"),
        (lambda im: ops.clahe(im, tile_grid=(0, 8)), "tile_grid"),
        (lambda im: ops.gaussian_blur(im, 4), "ksize"),
        (lambda im: ops.gaussian_blur(im, 0), "sigma"),
        (lambda im: ops.gaussian_blur(im, 5, sigma=-1), "sigma"),
        (lambda im: ops.median_blur(im, 2), "ksize"),
        (lambda im: ops.median_blur(im.astype(np.float32), 7), "ksize"),
        (lambda im: ops.canny(im, 200, 100), "low"),
        (lambda im: ops.canny(im, aperture=4), "aperture"),
        (lambda im: ops.rotate(im, float("inf")), "angle"),
        (lambda im: ops.rotate(im, 10, border="mirror"), "border"),
        (lambda im: ops.resize(np.zeros((0, 5, 3), np.uint8), 4), "image"),
        (lambda im: ops.resize(np.zeros((4, 5, 2), np.uint8), 4), "image"),
        (lambda im: ops.resize(np.zeros((4, 5, 3), np.int64), 4), "image"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=rf"`{match}`.*Received"):
        call(np.zeros((8, 8, 3), np.uint8))


# ------------------------------------------------------------------ properties
images = hnp.arrays(
    np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3]))
)


@settings(max_examples=40, deadline=None)
@given(
    image=images,
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    fit=st.sampled_from(ops.FIT_MODES),
    interpolation=st.sampled_from(list(ops.INTERPOLATIONS)),
)
def test_resize_property_shape_and_range(image, height, width, fit, interpolation):
    out = ops.resize(image, (height, width), fit=fit, interpolation=interpolation)
    assert out.shape == (height, width, image.shape[2]) and out.dtype == np.uint8
    if fit != "pad" and interpolation in ("area", "linear", "nearest"):
        assert out.min() >= image.min() and out.max() <= image.max()


@settings(max_examples=40, deadline=None)
@given(image=images, ksize=st.sampled_from([1, 3, 5, 7]))
def test_blur_properties_stay_within_input_range(image, ksize):
    for out in (ops.gaussian_blur(image, ksize), ops.median_blur(image, ksize)):
        assert out.shape == image.shape and out.dtype == np.uint8
        assert image.min() <= out.min() and out.max() <= image.max()


@settings(max_examples=40, deadline=None)
@given(image=images, angle=st.floats(-360, 360), expand=st.booleans())
def test_rotate_property_shape(image, angle, expand):
    out = ops.rotate(image, angle, expand=expand)
    assert out.dtype == np.uint8 and out.shape[2:] == image.shape[2:]
    if not expand:
        assert out.shape == image.shape


@settings(max_examples=40, deadline=None)
@given(image=images)
def test_equalize_canny_properties(image):
    eq = ops.equalize_hist(image)
    assert eq.shape == image.shape and eq.dtype == np.uint8
    edges = ops.canny(image)
    assert edges.shape == image.shape[:2] and set(np.unique(edges)) <= {0, 255}
    assert ops.clahe(image).shape == image.shape
