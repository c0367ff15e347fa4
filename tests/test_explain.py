"""Heatmaps (cvprep.training.explain), test-time augmentation and predict --explain.

A hand-built "red detector" knows where its evidence is, so the heatmap can be checked
against it through every geometry the saved model may apply (stretch, pad, crop, rotation);
each model family is checked with random weights; the CLI and the report use the session's
tiny trained run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import cvprep  # noqa: E402
from cvprep.cli import cli  # noqa: E402
from cvprep.errors import ParameterError  # noqa: E402
from cvprep.keras_layers import GaussianBlur, Resize, Rotate  # noqa: E402
from cvprep.training import Run, TrainConfig, evaluate, explain, load_run, predict  # noqa: E402
from cvprep.training.evaluate import Prediction  # noqa: E402
from cvprep.training.explain import (  # noqa: E402
    Explainer,
    _feature_layer,
    hide,
    overlay_name,
    top_fraction,
)
from cvprep.training.models import build_training_model, wrap_for_raw_images  # noqa: E402
from cvprep.training.plan import resolve_plan  # noqa: E402
from cvprep.training.report import MISTAKE_SIDE, _mistakes_html  # noqa: E402

SIZE = 32
SQUARE = (slice(30, 50), slice(100, 120))  # rows, columns of the red square in a 90×150 photo


def red_detector(tmp_path: Path, preprocessing: list) -> Run:
    """A raw-image model (input → preprocessing → Resize → network) whose only evidence for
    "red" is red pixels: 1×1 convolution (red minus the other channels), 4×4 average pooling
    (the 8×8 feature map), global pooling, one sigmoid unit."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(1, 1, use_bias=False, activation="relu")(inputs)
    x = keras.layers.AveragePooling2D(4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    core = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    core.layers[1].set_weights([np.array([1.0, -0.5, -0.5]).reshape(1, 1, 3, 1) / 255])
    core.layers[-1].set_weights([np.array([[400.0]]), np.array([-2.0])])
    raw = keras.Input((None, None, 3))
    y = raw
    for layer in preprocessing:
        y = layer(y)
    return Run(tmp_path, keras.Model(raw, core(y)), ["plain", "red"], {})


def red_square_photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gray = rng.integers(60, 200, (90, 150, 1)).astype(np.uint8)  # textured, but no red in it
    photo = np.repeat(gray, 3, axis=2)
    photo[SQUARE] = (220, 30, 30)
    return photo


def far_from_square(shape: tuple[int, int], margin: int) -> np.ndarray:
    far = np.ones(shape, bool)
    rows, cols = SQUARE
    far[rows.start - margin : rows.stop + margin, cols.start - margin : cols.stop + margin] = False
    return far


@pytest.mark.parametrize(
    "preprocessing",
    [
        [Resize((SIZE, SIZE))],
        [Resize((SIZE, SIZE), fit="pad")],
        [Resize((SIZE, SIZE), fit="crop")],
        [GaussianBlur(3), Rotate(90, expand=True), Resize((SIZE, SIZE))],
        [Resize((60, 100), fit="pad"), Rotate(20), Resize((SIZE, SIZE), fit="crop")],
    ],
    ids=["stretch", "pad", "crop", "rotate90", "pad-rotate20-crop"],
)
def test_heatmap_lands_on_the_evidence_in_the_raw_image(tmp_path, preprocessing):
    check_red_square(explain(red_detector(tmp_path, preprocessing), red_square_photo()))


@pytest.mark.parametrize("method", ["gradcam++", "layercam"])
def test_every_method_finds_the_evidence(tmp_path, method):
    run = red_detector(tmp_path, [Resize((SIZE, SIZE), fit="pad")])
    check_red_square(explain(run, red_square_photo(), method=method))


def check_red_square(result) -> None:
    heatmap = result.heatmap
    assert heatmap.shape == (90, 150) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() == 1
    assert result.label == result.target == "red"
    assert heatmap[SQUARE].mean() > 0.5
    # One feature cell (4 network pixels) is up to ~17 raw pixels here: beyond that, cold.
    assert heatmap[far_from_square(heatmap.shape, 20)].max() < 0.1


def test_hiding_the_hottest_pixels_hurts_more_than_hiding_random_ones(tmp_path):
    run = red_detector(tmp_path, [Resize((SIZE, SIZE), fit="pad")])
    explainer = Explainer(run.model, run.classes)
    rng = np.random.default_rng(0)
    drops = {"heatmap": [], "random": []}
    for seed in range(4):
        photo = red_square_photo(seed)
        before = explainer.explain(photo).probability
        top = top_fraction(explainer.explain(photo).heatmap, 0.2, rng)
        random = rng.uniform(size=photo.shape[:2]) < 0.2
        for name, mask in (("heatmap", top), ("random", random)):
            after = explainer.explain(hide(photo, mask), target="red").probabilities["red"]
            drops[name].append(before - after)
    assert np.mean(drops["heatmap"]) > 0.3 > 3 * np.mean(drops["random"])


def test_explain_checks_its_arguments(tmp_path):
    run = red_detector(tmp_path, [Resize((SIZE, SIZE))])
    with pytest.raises(ParameterError, match="`method` should be one of"):
        explain(run, red_square_photo(), method="saliency")
    with pytest.raises(ParameterError, match="`target` should be one of the run's classes"):
        explain(run, red_square_photo(), target="blue")
    with pytest.raises(ParameterError, match="RGB uint8 array"):
        explain(run, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(cvprep.ImageError, match=r"missing\.jpg"):
        explain(run, tmp_path / "missing.jpg")


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("cnn", 48),
        ("classic", 48),
        pytest.param("mobilenet", 64, marks=pytest.mark.slow),
        pytest.param("mobilenet_v2", 64, marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", 64, marks=pytest.mark.slow),
    ],
)
def test_every_model_family_gets_a_heatmap_of_the_image_size(tmp_path, model, size):
    for cls in ("a", "b", "c"):
        for index in range(2):
            cvprep.write_image(
                tmp_path / "data" / "train" / cls / f"{index}.png", red_square_photo()
            )
    config = TrainConfig(
        data=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        model=model,
        alpha=0.25 if model.startswith("mobilenet") else 1.0,
        weights="none",
        img_size=size,
        resize="pad",
    )
    plan = resolve_plan(config)
    core, base = build_training_model(plan)
    feature = _feature_layer(core)
    if base is not None:  # a backbone: its whole nested model is the last 4-D output
        assert feature is base and isinstance(feature, keras.Model)
    else:
        assert len(feature.output.shape) == 4
    run = Run(tmp_path, wrap_for_raw_images(core, plan), list(plan.classes), {})
    photo = red_square_photo()
    result = explain(run, photo)
    assert result.heatmap.shape == photo.shape[:2]
    assert np.isfinite(result.heatmap).all()
    assert 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    assert sorted(result.probabilities) == ["a", "b", "c"]


def test_predict_explain_writes_one_overlay_per_input_without_name_clashes(tiny_run, tmp_path):
    run, data = tiny_run
    photo = sorted((data / "test" / "round").iterdir())[0]
    for folder in ("first", "second"):  # the same file name in two folders
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.png").write_bytes(photo.read_bytes())
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "overlays"
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(run),
            str(tmp_path / "first" / "photo.png"),
            str(tmp_path / "second"),
            str(tmp_path / "bad.png"),
            "--explain",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    overlays = [Path(row["overlay"]) for row in rows[:2]]
    assert len(set(overlays)) == 2 and sorted(out.iterdir()) == sorted(overlays)
    assert "overlay" not in rows[2] and rows[2]["error"].startswith("[not_image]")
    image = cvprep.read_image(photo)
    for path in overlays:
        written = cvprep.read_image(path)
        assert written.shape == image.shape
        assert np.abs(written.astype(int) - image).mean() > 5  # the heatmap is blended in
    plain = CliRunner().invoke(cli, ["predict", str(run), str(photo), "--json"])
    assert "overlay" not in json.loads(plain.stdout)[0]  # only with --explain
    assert overlay_name(tmp_path / "a" / "x.jpg", 0) == overlay_name(tmp_path / "a" / "x.jpg", 5)


def test_tta_averages_the_image_and_its_mirror(tiny_run):
    run, data = tiny_run
    loaded = load_run(run)
    photo = cvprep.read_image(sorted((data / "test" / "angular").iterdir())[0])
    photo = np.ascontiguousarray(photo[:, 5:])  # not symmetric
    plain, mirrored = predict(loaded, [photo, np.ascontiguousarray(photo[:, ::-1])])
    (both,) = predict(loaded, [photo], tta=True)
    for name, p in both.probabilities.items():
        expected = (plain.probabilities[name] + mirrored.probabilities[name]) / 2
        assert p == pytest.approx(expected, abs=1e-4)
    result = CliRunner().invoke(cli, ["evaluate", str(run), str(data), "--tta", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["tta"] is True and metrics["count"] == 8
    assert evaluate(run, data, write=False).metrics["tta"] is False


def test_predict_takes_arrays_and_names_them(tiny_run):
    run, data = tiny_run
    photo = sorted((data / "test" / "round").iterdir())[0]
    image = cvprep.read_image(photo)
    from_file, from_array, from_gray = predict(run, [photo, image, image[:, :, 1]])
    assert (from_array.path, from_gray.path) == ("<array 1>", "<array 2>")
    assert from_array.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    with pytest.raises(ParameterError, match=r"<array 0>.*RGB uint8"):
        predict(run, [np.zeros((4, 4, 4), np.uint8)])


def test_report_shows_each_mistake_beside_its_heatmap(tiny_run, tmp_path):
    run, data = tiny_run
    loaded = load_run(run)
    photos = sorted((data / "test" / "round").iterdir())[:2]
    mistakes = [(Prediction(str(p), label="angular", probability=0.9), "round") for p in photos]
    page = _mistakes_html(tmp_path, mistakes, Explainer(loaded.model, loaded.classes))
    figures = re.findall(r'<figure class="mistake">(.*?)</figure>', page)
    assert len(figures) == 2
    for index, figure in enumerate(figures):
        sources = re.findall(r'<img src="([^"]+)"', figure)
        assert sources == [
            f"figures/mistakes/{index:03d}.jpg",
            f"figures/mistakes/{index:03d}_heatmap.jpg",
        ]
        photo, heatmap = (cvprep.read_image(tmp_path / s) for s in sources)
        assert photo.shape == heatmap.shape
        assert "heatmap of angular" in figure
    assert max(cvprep.read_image(photos[0]).shape[:2]) <= MISTAKE_SIDE  # small photos: as is
    without = _mistakes_html(tmp_path / "plain", mistakes)
    assert "_heatmap" not in without and without.count("<img") == 2
