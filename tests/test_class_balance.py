"""Imbalanced classes and small images: class weights resolved, recorded and really applied
by Keras; balanced accuracy and per-class recall in the metrics; the CNN on 8–32 px inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cvprep.cli import cli
from cvprep.dataset import from_arrays
from cvprep.errors import ParameterError
from cvprep.training import TrainConfig, resolve_plan, train
from cvprep.training.data import CachedImages, make_dataset
from cvprep.training.evaluate import metrics_from_predictions
from cvprep.training.models import build_cnn
from cvprep.training.plan import resolve_weighting


def tiny_images(root: Path, counts: dict[str, int], size: int = 8, seed: int = 0) -> Path:
    """train/ and test/ of ``size``-pixel gray images, ``counts`` per class in train/ (test/
    has 4 of each): "top" is bright in the upper half, "bottom" in the lower one."""
    rng = np.random.default_rng(seed)

    def images(per_class: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        x, y = [], []
        for label, (cls, count) in enumerate(per_class.items()):
            for _ in range(count):
                image = rng.integers(0, 60, (size, size)).astype(np.uint8)
                rows = slice(0, size // 2) if cls == "top" else slice(size // 2, size)
                image[rows] += 180
                x.append(image)
                y.append(label)
        return np.stack(x), np.array(y)

    x, y = images(counts)
    x_test, y_test = images(dict.fromkeys(counts, 4))
    from_arrays(x, y, root, class_names=list(counts), x_test=x_test, y_test=y_test)
    return root


# --------------------------------------------------------------------------- metrics
def test_balanced_accuracy_and_recall_are_the_hand_computed_ones():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 2])
    m = metrics_from_predictions(truth, predicted, ["a", "b", "c"])
    # recalls: a 2/3, b 1/2, c 1/1; accuracy 4/6
    assert m["per_class_recall"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_balanced_accuracy_leaves_out_classes_without_images():
    # c has no true image (its recall is undefined, reported as 0): the mean is over a, b.
    m = metrics_from_predictions(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), ["a", "b", "c"])
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.0}


# --------------------------------------------------------------------------- resolving
@pytest.mark.parametrize(
    ("asked", "labels", "mode", "weights"),
    [
        ("auto", [0] * 8 + [1] * 2, "balanced", (0.625, 2.5)),  # 4:1: 10 / (2 × count)
        ("auto", [0] * 3 + [1] * 2, "balanced", (5 / 6, 1.25)),  # 1.5:1, the threshold
        ("auto", [0] * 4 + [1] * 3, "none", (1.0, 1.0)),  # 4:3
        ("none", [0] * 8 + [1] * 2, "none", (1.0, 1.0)),
        ("balanced", [0] * 2 + [1] * 2, "balanced", (1.0, 1.0)),
        ("balanced", [0] * 6 + [1] * 2 + [2] * 4, "balanced", (2 / 3, 2.0, 1.0)),
    ],
)
def test_class_weights_resolve_to_sklearn_balanced(asked, labels, mode, weights):
    weighting = resolve_weighting(asked, labels, len(weights))
    assert weighting.mode == mode and weighting.weights == pytest.approx(weights)
    assert (weighting.keras() is None) == (mode == "none")


def test_a_class_without_training_images_weighs_one():
    weighting = resolve_weighting("auto", [0, 0, 1, 1], 3)
    assert weighting.ratio == float("inf") and weighting.mode == "balanced"
    assert weighting.weights == (1.0, 1.0, 1.0)


def test_class_weight_is_checked_like_every_setting(tmp_path):
    with pytest.raises(ParameterError, match="`class_weight` should be one of"):
        TrainConfig(str(tmp_path), str(tmp_path / "run"), class_weight="inverse")
    result = CliRunner().invoke(
        cli, ["train", str(tmp_path), "--out", str(tmp_path / "r"), "--class-weight", "x"]
    )
    assert result.exit_code == 2 and "--class-weight" in result.output


def test_plan_resolves_and_records_weights_on_the_training_split(tmp_path):
    data = tiny_images(tmp_path / "data", {"bottom": 40, "top": 10})
    plan = resolve_plan(TrainConfig(str(data), str(tmp_path / "run")))
    # 10 % of each class is carved out for validation first: 36 and 9 images are weighed.
    assert plan.weighting.counts == (36, 9) and plan.weighting.mode == "balanced"
    recorded = plan.settings()["class_weights"]
    assert recorded["images"] == {"bottom": 36, "top": 9}
    assert recorded["weights"] == pytest.approx({"bottom": 45 / 72, "top": 45 / 18})
    assert plan.settings()["class_weight"] == "auto"
    assert "balanced (auto: 4.0:1 imbalance)" in plan.weighting.describe(plan.classes)
    plan = resolve_plan(TrainConfig(str(data), str(tmp_path / "run"), class_weight="none"))
    assert plan.weighting.keras() is None


# --------------------------------------------------------------------------- Keras uses it
@pytest.mark.slow
@pytest.mark.parametrize("num_classes", [2, 3])
def test_keras_applies_the_weights_to_our_datasets(num_classes):
    """On blank images only the output bias can learn: it converges to the class shares,
    or, weighted, to equal probabilities. Binary (float labels) and one-hot alike, with
    label smoothing, through cvprep's own tf.data pipeline."""
    import keras

    labels = np.array([0] * 24 + [1] * 6 + [2] * 6 * (num_classes - 2))
    cached = CachedImages(np.zeros((len(labels), 2, 2, 1), np.uint8), labels, [""] * len(labels))
    dataset = make_dataset(cached, batch_size=len(labels), num_classes=num_classes)
    weights = resolve_weighting("balanced", labels, num_classes)
    shares = {}
    for weighting in (None, weights.keras()):
        keras.utils.set_random_seed(0)
        units, activation = (1, "sigmoid") if num_classes == 2 else (num_classes, "softmax")
        model = keras.Sequential(
            [keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(units, activation)]
        )
        loss = (
            keras.losses.BinaryCrossentropy(label_smoothing=0.1)
            if num_classes == 2
            else keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
        )
        model.compile(keras.optimizers.SGD(1.0), loss)
        # One epoch of many steps: Keras' per-epoch overhead is what costs here.
        model.fit(
            dataset.repeat(), steps_per_epoch=150, class_weight=weighting, shuffle=False, verbose=0
        )
        output = np.asarray(model(np.zeros((1, 2, 2, 1))))[0]
        shares[weighting is None] = output[0] if num_classes == 2 else 1 - output[0]
    # The probability of the minority classes: their share of the images, smoothed, without
    # weights (0.23 and 0.37); what equal classes give with them (1/2 and 2/3).
    uniform = (num_classes - 1) / num_classes
    assert shares[True] == pytest.approx(0.9 * np.mean(labels > 0) + 0.1 * uniform, abs=0.02)
    assert shares[False] == pytest.approx(uniform, abs=0.02)


# --------------------------------------------------------------------------- small images
@pytest.mark.parametrize("size", [8, 16, 32])
def test_cnn_builds_for_small_inputs_without_pooling_them_away(size):
    model = build_cnn(size, 1, 10)
    assert model.output_shape == (None, 10)
    pooled = [layer for layer in model.layers if "max_pooling" in layer.name]
    smallest = min(layer.output.shape[1] for layer in pooled)
    assert smallest >= 2


def test_small_images_train_at_their_own_size_from_32(tmp_path):
    data = tiny_images(tmp_path / "data", {"bottom": 5, "top": 5}, size=8)
    assert resolve_plan(TrainConfig(str(data), "r")).size == 32
    assert resolve_plan(TrainConfig(str(data), "r", img_size=16)).size == 16
    assert resolve_plan(TrainConfig(str(data), "r", model="classic")).size == 150
    assert resolve_plan(TrainConfig(str(data), "r", model="mobilenet")).size == 288
    wider = tiny_images(tmp_path / "wider", {"bottom": 5, "top": 5}, size=48)
    assert resolve_plan(TrainConfig(str(wider), "r")).size == 48
    larger = tiny_images(tmp_path / "larger", {"bottom": 5, "top": 5}, size=80)
    assert resolve_plan(TrainConfig(str(larger), "r")).size == 150


@pytest.mark.slow
def test_tiny_imbalanced_run_weighs_records_and_reports(tmp_path, monkeypatch):
    import keras

    data = tiny_images(tmp_path / "data", {"bottom": 24, "top": 6})
    seen = []
    fit = keras.Model.fit

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("class_weight"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    lines: list[str] = []
    result = train(data, out=tmp_path / "run", img_size=8, epochs=2, batch_size=8, workers=0,
                   log=lines.append)  # fmt: skip
    assert seen == [pytest.approx({0: 27 / 44, 1: 27 / 10})]  # 22 and 5 after validation
    assert any("class weights balanced (auto: 4.4:1 imbalance)" in line for line in lines)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_weights"]["mode"] == "balanced" and config["image_size"] == 8
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["per_class_recall"]) == {"bottom", "top"}
    assert metrics["balanced_accuracy"] == pytest.approx(
        sum(metrics["per_class_recall"].values()) / 2
    )
    assert result.metrics["count"] == 8
    assert "balanced accuracy" in (tmp_path / "run" / "report.html").read_text()
    shown = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), str(data), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["balanced_accuracy"] == metrics["balanced_accuracy"]
    text = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), str(data)]).output
    assert "balanced accuracy" in text and "recall" in text
