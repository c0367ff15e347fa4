"""Trainer, evaluate, predict and export on tiny generated datasets (marked slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import cvprep  # noqa: E402
from cvprep.cli import cli  # noqa: E402
from cvprep.keras_layers import InputScaling  # noqa: E402
from cvprep.train import TrainConfig, build_training_model, train, unfreeze_top  # noqa: E402
from tests.conftest import ROOT, SHARED_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.slow
ARTEFACTS = [
    "model.keras",
    "labels.json",
    "pipeline.json",
    "config.json",
    "history.csv",
    "curves.png",
    "confusion_matrix.png",
    "metrics.json",
    "report.html",
    "checkpoint.keras",
]


def striped(rng: np.random.Generator, vertical: bool, size: int = 48) -> np.ndarray:
    """Stripes of random phase and colour: the class is the stripe direction (and brightness)."""
    period = rng.integers(4, 8)
    ramp = (np.arange(size) + rng.integers(0, period)) % period < period // 2
    pattern = np.tile(ramp, (size, 1)) if vertical else np.tile(ramp[:, None], (1, size))
    base = rng.integers(150, 230) if vertical else rng.integers(30, 110)
    image = np.where(pattern[..., None], base, base - 25) + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("val", 12), ("test", 12)):
        for cls in ("horizontal", "vertical"):
            for index in range(count):
                cvprep.write_image(
                    root / split / cls / f"{index:03d}.png", striped(rng, cls == "vertical")
                )
    return root


@pytest.fixture(scope="module")
def cnn_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "cnn"
    config = TrainConfig(
        data=str(dataset),
        out=str(out),
        model="cnn",
        img_size=48,
        epochs=6,
        batch_size=8,
        ops="gaussian_blur=3",
        seed=3,
        patience=6,
    )
    train(config, verbose=0, log=lambda _: None)
    return out


def test_cnn_learns_and_writes_every_artefact(cnn_run):
    for name in ARTEFACTS:
        assert (cnn_run / name).is_file(), name
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "test" and metrics["accuracy"] >= 0.85
    assert set(metrics["per_class"]) == {"horizontal", "vertical"}
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["seed"] == 3 and "tensorflow" in config["versions"]
    assert json.loads((cnn_run / "labels.json").read_text()) == ["horizontal", "vertical"]
    assert (
        cvprep.Pipeline.from_json((cnn_run / "pipeline.json").read_text()).to_text()
        == "gaussian_blur=3"
    )
    assert '<img src="curves.png"' in (cnn_run / "report.html").read_text()


def test_cnn_architecture_is_the_classic_one(dataset):
    config = TrainConfig(data=str(dataset), out="unused", img_size=150, classes=["a", "b"])
    model, base = build_training_model(config, channels=3)
    cnn = model.get_layer("cnn")
    convs = [layer for layer in cnn.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in cnn.layers) == 4
    dense = [layer for layer in cnn.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 1] and dense[-1].activation.__name__ == "sigmoid"
    assert any(
        isinstance(layer, keras.layers.Dropout) and layer.rate == 0.5 for layer in cnn.layers
    )
    assert base is None


def test_reloaded_model_predicts_identically_in_a_fresh_process(cnn_run, dataset, tmp_path):
    images = sorted((dataset / "test").rglob("*.png"))[:6]
    result = CliRunner().invoke(cli, ["predict", str(cnn_run), *map(str, images), "--json"])
    assert result.exit_code == 0, result.output
    here = [p["probabilities"] for p in json.loads(result.stdout)]
    fresh = subprocess.run(
        [sys.executable, "-m", "cvprep", "predict", str(cnn_run), *map(str, images), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    there = [p["probabilities"] for p in json.loads(fresh.stdout)]
    for a, b in zip(here, there, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.parametrize(
    ("fmt", "quantize"), [("savedmodel", False), ("tflite", False), ("tflite", True)]
)
def test_export_predicts_like_the_model(cnn_run, dataset, fmt, quantize):
    args = ["export", str(cnn_run), "--format", fmt] + (["--quantize"] if quantize else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output  # export_run itself compares predictions
    from cvprep.export import tflite_predictor
    from cvprep.train import load_run

    model, _, _ = load_run(cnn_run)
    image = cvprep.read_image(sorted((dataset / "test").rglob("*.png"))[0])
    expected = np.asarray(model(image[None].astype(np.float32)))
    if fmt == "savedmodel":
        served = tf.saved_model.load(str(cnn_run / "export" / "savedmodel"))
        got = np.asarray(served.serve(tf.constant(image[None], tf.float32)))
    else:
        name = "model-quantized.tflite" if quantize else "model.tflite"
        got = tflite_predictor(cnn_run / "export" / name)(image)
    assert np.abs(got - expected).max() <= (0.05 if quantize else 1e-4)


def test_evaluate_and_predict_report_bad_files(cnn_run, dataset, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(cnn_run), str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.85
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    good = sorted((dataset / "test" / "vertical").glob("*.png"))[0]
    result = CliRunner().invoke(cli, ["predict", str(cnn_run), str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{good}: vertical" in result.stdout and "broken.jpg: rejected" in result.stderr


def test_transfer_learning_freezes_then_fine_tunes(dataset, tmp_path):
    config = TrainConfig(
        data=str(dataset),
        out=str(tmp_path / "mobile"),
        model="mobilenet",
        alpha=0.25,
        weights="none",
        img_size=32,
        epochs=3,
        fine_tune_epochs=2,
        unfreeze=6,
        batch_size=16,
        seed=1,
        patience=5,
        learning_rate=3e-3,
    )
    config.classes = ["horizontal", "vertical"]
    model, base = build_training_model(config, channels=3)
    frozen_before = [w.copy() for w in base.get_weights()]
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1] * 4, np.float32)
    model.fit(x, y, epochs=2, verbose=0)
    for before, after in zip(frozen_before, base.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # phase one: the backbone is frozen
    unfreeze_top(base, 6)
    batch_norms = [
        layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    stats_before = [layer.moving_mean.numpy().copy() for layer in batch_norms]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    assert not any(layer.trainable for layer in batch_norms)
    for layer, before in zip(batch_norms, stats_before, strict=True):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before)  # inference mode
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(
        base.layers.index(layer) >= len(base.layers) - 6 for layer in trainable
    )
    # Both phases run end to end; frozen *random* features cannot be expected to learn, so
    # learning itself is checked with the real ImageNet weights below.
    metrics = train(config, verbose=0, log=lambda _: None)
    assert metrics["epochs_run"] == 5


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="../shared/weights is not present")
def test_mobilenet_loads_the_real_imagenet_weights(dataset, tmp_path):
    import h5py

    config = TrainConfig(
        data=str(dataset),
        out=str(tmp_path / "imagenet"),
        model="mobilenet",
        alpha=0.25,
        weights=str(SHARED_WEIGHTS),
        img_size=96,
        epochs=8,
        learning_rate=3e-3,
        batch_size=16,
        seed=1,
    )
    metrics = train(config, verbose=0, log=lambda _: None)
    from cvprep.train import load_run

    model, _, _ = load_run(tmp_path / "imagenet")
    conv = next(
        layer
        for layer in model.get_layer("classifier").get_layer("mobilenet_0.25_96").layers
        if layer.name == "conv1"
    )
    with h5py.File(SHARED_WEIGHTS, "r") as weights:
        stored = weights["conv1"]["conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(conv.get_weights()[0], stored)
    assert metrics["accuracy"] >= 0.75


@pytest.mark.parametrize(
    ("mode", "application"), [("tf", "mobilenet"), ("caffe", "resnet50"), ("torch", "densenet")]
)
def test_input_scaling_matches_keras_applications(mode, application):
    image = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, application).preprocess_input(image.copy())
    np.testing.assert_allclose(
        np.asarray(InputScaling(mode)(image)), expected, rtol=1e-5, atol=1e-4
    )


def test_train_rejects_bad_arguments(dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(dataset), "--alpha", "0.5", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "alpha" in result.output
    result = runner.invoke(
        cli,
        [
            "train",
            str(dataset),
            "--weights",
            "missing.h5",
            "--model",
            "mobilenet",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "weights" in result.output
    result = runner.invoke(cli, ["train", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "train/" in result.output


def test_killed_training_resumes_where_it_stopped(dataset, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "resume"
    command = [
        sys.executable,
        "-m",
        "cvprep",
        "train",
        str(dataset),
        "--img-size",
        "48",
        "--epochs",
        "30",
        "--patience",
        "30",
        "--batch-size",
        "8",
        "--seed",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 4:  # 3 epochs done
            break
        time.sleep(0.05)
    assert child.poll() is None, "training finished before it could be interrupted"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert not (out / "model.keras").exists()
    assert any((out / "backup").glob("*/*")), "BackupAndRestore left no state to resume from"
    subprocess.run(command, cwd=ROOT, check=True, stderr=subprocess.DEVNULL, timeout=600)
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert epochs.count(0) == 1, "the second run must not start again from epoch 0"
    assert epochs[-1] == 29 and epochs == sorted(epochs)
    assert (out / "model.keras").is_file()
