"""Keras layers: parity with cvprep.ops (OpenCV), shapes, config, random layers, tf.data."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cvprep import Pipeline, ops  # noqa: E402
from cvprep import keras_layers as kl  # noqa: E402
from cvprep.errors import ParameterError  # noqa: E402
from tests.conftest import load_photo  # noqa: E402

# spec → tolerance on round(layer output) vs the op's uint8 output, or "f1" for Canny.
# The last step is the one under test; earlier steps prepare its input with cvprep.ops.
PARITY_CASES: dict[str, float | str] = {
    "resize=150x150": 1,
    "resize=120x200:interpolation=linear": 1,
    "resize=224x224:fit=pad:fill=114": 1,
    "resize=100x100:fit=crop:interpolation=linear": 1,
    "resize=700x900:interpolation=linear": 1,
    "resize=700x900": 1,
    "resize=150x150:interpolation=cubic": 1,
    "resize=150x150:interpolation=nearest": 0,
    "grayscale": 0,
    "grayscale=keep_channels=true": 0,
    "equalize": 0,
    "grayscale,equalize": 0,
    "clahe": 1,
    "grayscale,clahe=3:tile_grid=5x7": 1,
    "gaussian_blur=5": 1,
    "gaussian_blur=0:sigma=2": 1,
    "gaussian_blur=9:sigma=1.2": 1,
    "median_blur=3": 0,
    "median_blur=5": 0,
    "canny=100:200": "f1",
    "canny=50:150:l2_gradient=true": "f1",
    "canny=100:250:aperture=5": "f1",
    "rotate=15": "interior",
    "rotate=-30:expand=true:border=reflect101": "interior",
    "rotate=90:expand=true": "interior",
}
PHOTO_NAMES = ["chelsea", "coffee", "astronaut", "rocket", "china"]


def edge_f1(found: np.ndarray, expected: np.ndarray) -> float:
    found, expected = found > 0, expected > 0
    return 2 * (found & expected).sum() / max(found.sum() + expected.sum(), 1)


def run_layer(layer, image: np.ndarray, graph: bool = False) -> np.ndarray:
    """The layer on one image, called eagerly, or in a ``tf.function`` with the image's size
    known while tracing (where layers may run steps through XLA)."""
    batch = image[None] if image.ndim == 3 else image[None, :, :, None]
    if graph:
        return tf.function(layer)(tf.constant(batch)).numpy()[0]
    return np.asarray(layer(batch))[0]


def assert_parity(spec: str, image: np.ndarray, graph: bool = False) -> None:
    pipeline = Pipeline.parse(spec)
    prepared = Pipeline(pipeline.steps[:-1]).apply(image)
    expected = pipeline.steps[-1].apply(prepared).astype(np.float32)
    expected = expected[..., None] if expected.ndim == 2 else expected
    got = run_layer(pipeline.layers()[-1], prepared, graph=graph)
    assert got.shape == expected.shape
    tolerance = PARITY_CASES[spec]
    if tolerance == "f1":
        assert edge_f1(got, expected) >= 0.95, spec
    elif tolerance == "interior":  # within 1 level away from the borders
        assert np.abs(np.rint(got) - expected)[2:-2, 2:-2].max() <= 1, spec
    else:
        assert np.abs(np.rint(got) - expected).max() <= tolerance, spec


@pytest.mark.parametrize("spec", PARITY_CASES)
def test_parity_on_real_photos(spec):
    for name in PHOTO_NAMES:
        assert_parity(spec, load_photo(name))
    assert_parity(spec, load_photo(PHOTO_NAMES[0]), graph=True)


@pytest.mark.parametrize("spec", PARITY_CASES)
def test_parity_on_random_arrays(spec):
    rng = np.random.default_rng(7)
    for shape in [(37, 53, 3), (64, 48, 3), (23, 31)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        if "canny" in spec:  # pure noise has no edges worth comparing: smooth it first
            image = ops.gaussian_blur(image, 5)
        assert_parity(spec, image)
        assert_parity(spec, image, graph=True)


def test_ycrcb_colour_equalisation_is_exact_on_every_colour():
    values = np.arange(256)
    cube = np.stack(np.meshgrid(values, values, values, indexing="ij"), -1).astype(np.uint8)
    image = cube.reshape(-1, 4096, 3)[:256]  # 256×4096: a quarter of all colours
    got = np.asarray(kl.HistogramEqualization()(image))
    np.testing.assert_array_equal(got, ops.equalize_hist(image))


def test_equalisation_is_per_image_in_a_mixed_batch():
    photos = [ops.resize(load_photo(n), (96, 128)) for n in PHOTO_NAMES]
    photos[1] = photos[1] // 4  # one dark, low-contrast image among normal ones
    batch = np.stack(photos)
    for layer, op in [(kl.HistogramEqualization(), ops.equalize_hist), (kl.CLAHE(), ops.clahe)]:
        got = np.asarray(layer(batch))
        for index, photo in enumerate(photos):
            assert np.abs(np.rint(got[index]) - op(photo)).max() <= (
                0 if op is ops.equalize_hist else 1
            )


ALL_LAYERS = {
    "Resize": lambda: kl.Resize((20, 30), fit="pad"),
    "Grayscale": lambda: kl.Grayscale(),
    "HistogramEqualization": lambda: kl.HistogramEqualization(),
    "CLAHE": lambda: kl.CLAHE(2.0, (4, 4)),
    "GaussianBlur": lambda: kl.GaussianBlur(5),
    "MedianBlur": lambda: kl.MedianBlur(3),
    "CannyEdges": lambda: kl.CannyEdges(50, 150),
    "Rotate": lambda: kl.Rotate(30, expand=True),
    "RandomGaussianBlur": lambda: kl.RandomGaussianBlur((0.5, 1.5), seed=1),
    "RandomRotation": lambda: kl.RandomRotation((-20, 20), seed=1),
    "RandomAffine": lambda: kl.RandomAffine(20, 0.2, 0.1, border="reflect101", seed=1),
    "RandomBrightnessContrast": lambda: kl.RandomBrightnessContrast(0.3, 0.3, seed=1),
}
RANDOM_LAYERS = [name for name in ALL_LAYERS if name.startswith("Random")]


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_single_image_batch_and_dtypes(name):
    layer = ALL_LAYERS[name]()
    image = np.random.default_rng(3).integers(0, 256, (33, 41, 3), dtype=np.uint8)
    single = np.asarray(layer(image))
    batched = np.asarray(layer(np.stack([image, image])))
    from_float = np.asarray(layer(image.astype(np.float32)))
    assert single.dtype == np.float32 and batched.shape == (2, *single.shape)
    np.testing.assert_allclose(batched[0], single, atol=1e-3)
    np.testing.assert_allclose(from_float, single, atol=1e-3)
    assert tuple(layer.compute_output_shape((2, 33, 41, 3))) == batched.shape
    assert tuple(layer.compute_output_shape((33, 41, 3))) == single.shape
    assert single.min() >= 0 and single.max() <= 255


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_config_round_trip_gives_identical_output(name):
    layer = ALL_LAYERS[name]()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    image = np.random.default_rng(4).integers(0, 256, (2, 24, 28, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(clone(image)), np.asarray(layer(image)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    if name in RANDOM_LAYERS:  # the same seed gives the same random draws in training
        fresh, clone = ALL_LAYERS[name](), type(layer).from_config(layer.get_config())
        image = image.astype(np.float32)
        first, second = (
            np.asarray(fresh(image, training=True)),
            np.asarray(clone(image, training=True)),
        )
        assert not np.allclose(first, image)
        np.testing.assert_allclose(first, second, atol=1e-4)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: kl.Resize((0, 3)), "size"),
        (lambda: kl.GaussianBlur(4), "ksize"),
        (lambda: kl.MedianBlur(0), "ksize"),
        (lambda: kl.CannyEdges(200, 100), "low"),
        (lambda: kl.CLAHE(-1), "clip_limit"),
        (lambda: kl.Rotate(10, border="mirror"), "border"),
        (lambda: kl.RandomRotation((20, -20)), "angle_range"),
        (lambda: kl.RandomGaussianBlur(probability=2), "probability"),
    ],
)
def test_layers_reuse_the_op_validators(factory, match):
    with pytest.raises(ValueError, match=rf"`{match}`"):
        factory()


@pytest.mark.parametrize("name", RANDOM_LAYERS)
def test_random_layers_only_act_in_training(name):
    layer = ALL_LAYERS[name]()
    image = load_photo("chelsea")[:64, :64].astype(np.float32)
    batch = np.stack([image] * 4)
    for training in (None, False):
        np.testing.assert_array_equal(np.asarray(layer(batch, training=training)), batch)
    changed = np.asarray(layer(batch, training=True))
    assert changed.shape == batch.shape and not np.allclose(changed, batch)
    differ = [not np.allclose(changed[0], changed[i]) for i in range(1, 4)]
    assert any(differ), "each image should get its own random draw"


def test_canny_hysteresis_follows_weak_chains():
    image = np.zeros((40, 120), np.uint8)
    image[:, 60:] = 60  # weak edge...
    image[:20, 60:] = 255  # ...strong only on the top half
    expected = ops.canny(image, 100, 200)
    got = run_layer(kl.CannyEdges(100, 200), image)[..., 0]
    np.testing.assert_array_equal(got, expected)
    assert expected[30:, 55:65].any()  # the weak lower half is kept through the chain


def test_pipeline_to_keras_model_matches_apply():
    spec = "resize=96x96:fit=pad,equalize,gaussian_blur=3,rotate=10"
    pipeline = Pipeline.parse(spec)
    model = pipeline.to_keras()
    photos = [load_photo(n) for n in ("chelsea", "coffee")]
    for photo in photos:
        got = model.predict(photo[None], verbose=0)[0]
        assert np.abs(np.rint(got) - pipeline.apply(photo)).max() <= 2


def test_layers_inside_tf_data_map():
    pipeline = Pipeline.parse("resize=64x64,grayscale,equalize,median_blur=3,canny=50:150")
    layers = pipeline.layers()
    photos = [ops.resize(load_photo(n), (80, 100)) for n in ("chelsea", "coffee", "rocket")]

    def preprocess(image):
        for layer in layers:
            image = layer(image)
        return image

    dataset = tf.data.Dataset.from_tensor_slices(np.stack(photos)).map(preprocess).batch(3)
    (result,) = list(dataset.as_numpy_iterator())
    assert result.shape == (3, 64, 64, 1)
    for got, photo in zip(result, photos, strict=True):
        assert edge_f1(got[..., 0], pipeline.apply(photo)) >= 0.95


def test_dynamic_shapes_in_tf_function():
    layers = [
        kl.Resize((32, 32), fit="crop"),
        kl.CLAHE(tile_grid=(3, 3)),
        kl.Rotate(20, expand=True),
    ]
    photo = load_photo("coffee")[:50, :70]

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    def run_all(images):
        return [layer(images) for layer in layers]

    outputs = run_all(tf.constant(photo[None], tf.float32))
    eager = [np.asarray(layer(photo[None])) for layer in layers]
    for graph, direct in zip(outputs, eager, strict=True):
        np.testing.assert_allclose(graph.numpy(), direct, atol=1e-3)


@pytest.mark.parametrize(
    "spec", ["equalize", "clahe=2:tile_grid=4x5", "median_blur=3", "median_blur=5"]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_compiled_and_plain_paths_are_both_exact(spec, channels):
    # Known sizes in a graph run through XLA on TensorFlow, unknown sizes the plain ops; XLA
    # is free to contract multiply-adds, so both are held to OpenCV's exact output on sizes
    # that need CLAHE's padding and fractional interpolation weights.
    pipeline = Pipeline.parse(spec)
    (layer,) = pipeline.layers()
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 256, (2, 37, 53, channels), dtype=np.uint8)
    want = np.stack([pipeline.apply(image).reshape(37, 53, channels) for image in images])
    compiled = tf.function(layer)(tf.constant(images)).numpy()
    unknown_size = tf.TensorSpec((None, None, None, channels), tf.float32)
    plain = tf.function(layer, input_signature=[unknown_size])(images.astype(np.float32))
    np.testing.assert_array_equal(compiled, want)
    np.testing.assert_array_equal(plain.numpy(), want)


def test_layers_compile_only_known_sizes_on_tensorflow(monkeypatch):
    from cvprep.keras_layers import base

    compiled_shapes = []
    xla = base._compiled_method()

    def spy(layer, method, whole_input, *tensors):
        compiled_shapes.append(tuple(tensors[0].shape))
        return xla(layer, method, whole_input, *tensors)

    monkeypatch.setattr(base, "_compiled_method", lambda: spy)
    layer = kl.MedianBlur(5)
    tf.function(layer)(tf.zeros((1, 8, 9, 3), tf.uint8))
    unknown_size = tf.TensorSpec((None, None, None, 3), tf.float32)
    tf.function(layer, input_signature=[unknown_size]).get_concrete_function()
    layer(np.zeros((1, 8, 9, 3), np.uint8))  # eager: no compilation per new size
    assert compiled_shapes == [(1, 8, 9, 3)]


def test_data_layer_base_is_available():
    """We build on Keras' private DataLayer; fail loudly if a Keras upgrade moves it."""
    from keras.src.layers.preprocessing.data_layer import DataLayer

    image_layers = [name for name in kl.__all__ if name != "InputScaling"]
    assert all(issubclass(getattr(kl, name), DataLayer) for name in image_layers)


def test_every_private_keras_name_exists_and_only_compat_uses_them():
    import importlib
    import re
    import tomllib
    from pathlib import Path

    from cvprep.keras_layers import compat

    for module, path in compat.PRIVATE_NAMES:
        value = importlib.import_module(module)
        for part in path.split("."):
            value = getattr(value, part)  # AttributeError names what moved
    # The version range beside them is the one pyproject.toml pins.
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (pin,) = [d for d in project["project"]["dependencies"] if d.startswith("keras")]
    (low_major, low_minor), (high_major, high_minor) = compat.KERAS_VERSIONS
    assert pin.replace(" ", "") == f"keras>={low_major}.{low_minor},<{high_major}.{high_minor}"
    assert compat.tested_keras()
    # Nothing else reaches into keras.src or the private seed lookup.
    root = Path(__file__).parents[1]
    for source in [*root.glob("keras_layers/*.py"), *root.glob("cvprep/**/*.py")]:
        if source.name != "compat.py":
            text = source.read_text()
            assert not re.search(r"keras\.src|_get_seed_generator|\b_backend\b", text), source


@pytest.mark.parametrize(
    "factory",
    [
        lambda: kl.RandomRotation(20, seed=1),
        lambda: kl.RandomAffine(20, 0.2, 0.1, flip=True, seed=1),
        lambda: kl.RandomBrightnessContrast(0.3, 0.3, seed=1),
        lambda: kl.RandomGaussianBlur((0.5, 2.0), probability=0.5, seed=1),
    ],
)
def test_a_random_draw_can_be_inspected_and_replayed(factory):
    """get_random_transformation draws, transform_images applies: a draw replays exactly,
    a call equals a draw from the same seed applied, and a seeded draw is reproducible."""
    images = np.random.default_rng(2).integers(0, 256, (5, 24, 32, 3)).astype(np.float32)
    layer = factory()
    draw = layer.get_random_transformation(images)
    assert all(np.asarray(value).shape == (5,) for value in draw.values())
    once = np.asarray(layer.transform_images(images, draw))
    np.testing.assert_array_equal(once, np.asarray(layer.transform_images(images, draw)))
    assert not np.array_equal(once, images)  # the draw changes the images
    # Single images: the first value of each parameter.
    first = {key: np.asarray(value)[:1] for key, value in draw.items()}
    np.testing.assert_array_equal(np.asarray(layer.transform_images(images[0], first)), once[0])
    # A call draws from the same generator as get_random_transformation would.
    twin = factory()
    np.testing.assert_array_equal(
        np.asarray(twin(images, training=True)),
        np.asarray(factory().transform_images(images, factory().get_random_transformation(images))),
    )
    seeded = [np.asarray(v) for v in layer.get_random_transformation(images, seed=7).values()]
    again = [np.asarray(v) for v in layer.get_random_transformation(images, seed=7).values()]
    assert all(np.array_equal(a, b) for a, b in zip(seeded, again, strict=True))
    assert layer.get_random_transformation(images, training=False) is None
    np.testing.assert_array_equal(layer.transform_images(images, draw, training=False), images)


def test_a_hand_made_draw_is_the_deterministic_operation():
    image = ops.resize(load_photo("china"), (60, 80))
    batch = image[None].astype(np.float32)
    rotation = kl.RandomRotation(30)
    got = np.asarray(rotation.transform_images(batch, {"angle": np.array([12.0], np.float32)}))
    want = ops.rotate(image, 12.0, border="reflect")
    assert np.abs(np.rint(got[0]) - want)[2:-2, 2:-2].max() <= 1
    affine = kl.RandomAffine(30, 0.2, 0.1, flip=True)
    keep = {
        "angle": np.array([0.0], np.float32),
        "scale": np.array([1.0], np.float32),
        "shift_x": np.array([0.0], np.float32),
        "shift_y": np.array([0.0], np.float32),
    }
    np.testing.assert_allclose(np.asarray(affine.transform_images(batch, keep)), batch, atol=1e-3)
    mirrored = np.asarray(affine.transform_images(batch, {**keep, "flip": np.array([True])}))
    np.testing.assert_allclose(mirrored[0], image[:, ::-1].astype(np.float32), atol=1e-3)
    colour = kl.RandomBrightnessContrast(0.5, 0.5)
    same = {"brightness": np.array([1.0], np.float32), "contrast": np.array([1.0], np.float32)}
    np.testing.assert_allclose(np.asarray(colour.transform_images(batch, same)), batch, atol=1e-4)
    blur = kl.RandomGaussianBlur((0.1, 3.0))
    applied = {"sigma": np.array([1.5], np.float32), "apply": np.array([True])}
    want = ops.gaussian_blur(image, 0, sigma=1.5)
    got = np.asarray(blur.transform_images(batch, applied))[0]
    assert got.shape == want.shape  # the layer's kernel is wider than OpenCV's for sigma 1.5
    assert np.abs(np.rint(got) - want).mean() < 0.5


def test_one_number_ranges_follow_keras():
    assert kl.RandomRotation(10).angle_range == kl.RandomRotation(-10).angle_range == (-10, 10)
    assert kl.RandomAffine(rotation=5, zoom=0.2, shift=-0.1).zoom == (0.8, 1.2)
    assert kl.RandomAffine(rotation=5, zoom=0.2, shift=-0.1).shift == (-0.1, 0.1)
    assert kl.RandomGaussianBlur(2.0).sigma_range == (0.0, 2.0)  # a sigma is never negative
    assert kl.RandomBrightnessContrast(0.25, 0.5).contrast == (0.5, 1.5)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_pad_fill_per_channel_agrees_with_the_op(channels):
    image = np.random.default_rng(5).integers(0, 256, (30, 50, channels), dtype=np.uint8)
    for fill in [(255, 0, 0), 114, (10, 20, 30, 40)]:
        if isinstance(fill, tuple) and len(fill) == 4 and channels != 4:
            with pytest.raises(ValueError, match="fill"):
                ops.resize(image, (40, 40), fit="pad", fill=fill)
            continue
        layer = kl.Resize((40, 40), fit="pad", fill=fill)
        got = np.asarray(layer(image[None]))[0]
        assert got.shape == tuple(layer.compute_output_shape((1, 30, 50, channels)))[1:]
        expected = ops.resize(image, (40, 40), fit="pad", fill=fill)
        expected = expected[..., None] if expected.ndim == 2 else expected
        assert got.shape == expected.shape == (40, 40, channels)
        assert np.abs(np.rint(got) - expected).max() <= 1
        corner = ops.fill_for_channels(ops.check_fill(fill), channels)
        np.testing.assert_array_equal(expected[0, 0], corner)  # the padding itself
    rgb_on_gray = ops.fill_for_channels((255.0, 0.0, 0.0), 1)
    assert rgb_on_gray == (76.0,)  # the luma of pure red, as to_grayscale computes it
    assert ops.fill_for_channels((1.0, 2.0, 3.0), 4) == (1.0, 2.0, 3.0, 255.0)  # opaque


@pytest.mark.parametrize("border", ["constant", "replicate", "reflect", "reflect101", "wrap"])
def test_random_affine_is_opencvs_warp(border):
    """The fast path (TensorFlow's projective-transform kernel) and the exact gather path
    both give cv2.warpAffine with getRotationMatrix2D(centre, angle, scale) plus a shift."""
    import cv2

    from cvprep.keras_layers.geometry import _warp, affine_inverse

    image = ops.resize(load_photo("china"), (70, 90))
    layer = kl.RandomAffine((12, 12), (0.85, 0.85), (0.1, 0.1), border=border, fill=(9, 99, 199))
    got = np.asarray(layer(image[None].astype(np.float32), training=True))[0]
    matrix = cv2.getRotationMatrix2D(((90 - 1) / 2, (70 - 1) / 2), 12, 0.85)
    matrix[:, 2] += (9.0, 7.0)
    want = cv2.warpAffine(
        image, matrix, (90, 70), borderMode=ops.BORDERS[border], borderValue=(9, 99, 199)
    )
    assert np.abs(np.rint(got) - want).max() <= 1
    b = layer.backend
    inverse = affine_inverse(
        b, tf.constant([12.0]), tf.constant([0.85]), tf.constant([9.0]), tf.constant([7.0]), 70, 90
    )
    exact = _warp(
        b,
        tf.constant(image[None], tf.float32),
        inverse,
        70,
        90,
        interpolation="linear",
        border=border,
        fill=[9.0, 99.0, 199.0],
    )
    np.testing.assert_allclose(np.asarray(exact)[0], got, atol=0.01)


@pytest.mark.parametrize("border", ["constant", "reflect", "wrap"])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_input_pipelines_opencv_warp_is_the_layers_warp(border, channels, monkeypatch):
    """cvprep train's pipeline warps with OpenCV (warp_with_opencv, inside tf.data): the
    same draw gives the images the TensorFlow kernel gives."""
    image = ops.resize(load_photo("china"), (70, 90))
    images = np.stack([image, image[::-1]]).astype(np.float32)
    images = images[..., :1] if channels == 1 else images
    layer = kl.RandomAffine(20, 0.2, 0.1, flip=True, border=border, fill=(9, 99, 199), seed=3)
    draw = layer.get_random_transformation(images)
    want = np.asarray(layer.transform_images(images, draw))
    warped = []
    opencv_warp = ops.warp_affine_batch
    monkeypatch.setattr(
        ops, "warp_affine_batch", lambda *a, **k: warped.append(1) or opencv_warp(*a, **k)
    )
    layer.warp_with_opencv = True
    dataset = tf.data.Dataset.from_tensors(images).map(lambda x: layer.transform_images(x, draw))
    got = next(iter(dataset)).numpy()
    assert warped  # OpenCV did the warp
    with pytest.raises(ParameterError, match="inverse"):
        opencv_warp(images, np.zeros((1, 6)))
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1.5  # OpenCV rounds sub-pixel positions to 1/32


def test_random_brightness_contrast_is_albumentations_colour_jitter():
    import albumentations as A

    image = ops.resize(load_photo("coffee"), (60, 80))
    layer = kl.RandomBrightnessContrast((1.2, 1.2), (0.7, 0.7))
    got = np.asarray(layer(image[None].astype(np.float32), training=True))[0]
    jitter = A.ColorJitter(
        brightness=(1.2, 1.2), contrast=(0.7, 0.7), saturation=(1, 1), hue=(0, 0), p=1.0
    )
    # ColorJitter shuffles the order of its steps per image; the layer's order is brightness, then
    # contrast (albumentations' order [0, 1, 2, 3]), so that is the one compared.
    colour = {"brightness": 1.2, "contrast": 0.7, "saturation": 1.0, "hue": 0.0}
    want = jitter.apply(image, **colour, order=[0, 1, 2, 3]).astype(np.float32)
    # albumentations rounds to uint8 after each step; the layer keeps floats until the end.
    difference = np.abs(np.rint(got) - want)
    assert difference.mean() < 1.0 and difference.max() <= 3


def test_median_network_is_exact_on_every_0_1_window():
    from cvprep.keras_layers.filters import sorted_window_median_network

    comparators, output = sorted_window_median_network(5)  # checks itself when built
    assert 0 <= output < 25 and len(comparators) < 100  # Batcher's full network needs 191
    rng = np.random.default_rng(11)
    for _ in range(3):  # plateaus and ties, where order-statistic bugs hide
        image = rng.integers(0, 4, (21, 33, 3), dtype=np.uint8) * 60
        for k in (3, 5):
            got = np.asarray(kl.MedianBlur(k)(image[None]))[0]
            np.testing.assert_array_equal(got, ops.median_blur(image, k))


def test_canny_hysteresis_follows_a_long_winding_chain():
    # A serpentine weak ridge of ~2,000 pixels with one strong spot at its far end: every
    # pixel of it is an edge only if the whole chain is followed.
    image = np.zeros((96, 96), np.uint8)
    for row in range(4, 92, 8):
        image[row : row + 2, 4:92] = 40
        column = 90 if (row // 8) % 2 == 0 else 4
        image[row : row + 10, column : column + 2] = 40
    image[84:86, 60:62] = 255
    expected = ops.canny(image, 60, 200)
    got = run_layer(kl.CannyEdges(60, 200), image)[..., 0]
    np.testing.assert_array_equal(got, expected)
    assert (expected > 0).sum() > 1000
