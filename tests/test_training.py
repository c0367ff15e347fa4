"""cvprep.training on tiny generated datasets: train, evaluate, predict, export, the cache,
no leakage, the report, quiet output (marked slow: they train)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import cvprep  # noqa: E402
from cvprep.cli import cli  # noqa: E402
from cvprep.keras_layers import InputScaling  # noqa: E402
from cvprep.pipeline import Pipeline  # noqa: E402
from cvprep.training import (  # noqa: E402
    TrainConfig,
    evaluate,
    export,
    load_run,
    predict,
    resolve_plan,
    train,
)
from cvprep.training.data import (  # noqa: E402
    Split,
    discover,
    load_split,
    make_dataset,
    prepare_image,
)
from cvprep.training.models import build_training_model, unfreeze_top  # noqa: E402
from tests.conftest import ROOT, SHARED_WEIGHTS  # noqa: E402

pytestmark = pytest.mark.slow
ARTEFACTS = [
    "model.keras",
    "labels.json",
    "pipeline.json",
    "config.json",
    "history.csv",
    "metrics.json",
    "suspects.csv",
    "report.html",
    "checkpoint.keras",
    "figures/curves.png",
    "figures/confusion_matrix.png",
    "figures/augmented.png",
]
# TensorFlow's start-up and absl lines, as they look without cvprep's quieting.
TF_NOISE = re.compile(r"^(I|W|E)0000 |oneDNN|cuda|absl::|WARNING:absl|WARNING:tensorflow", re.M)


def striped(rng: np.random.Generator, vertical: bool, size: int = 48) -> np.ndarray:
    """Stripes of random phase and colour: the class is the stripe direction (and brightness)."""
    period = rng.integers(4, 8)
    ramp = (np.arange(size) + rng.integers(0, period)) % period < period // 2
    pattern = np.tile(ramp, (size, 1)) if vertical else np.tile(ramp[:, None], (1, size))
    base = rng.integers(150, 230) if vertical else rng.integers(30, 110)
    image = np.where(pattern[..., None], base, base - 25) + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_stripes(
    root: Path, counts: dict[str, int], seed: int = 0, swap: tuple[str, ...] = ()
) -> Path:
    """train/val/test of striped images; splits in ``swap`` get each other's labels."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for cls in ("horizontal", "vertical"):
            folder = (
                cls
                if split not in swap
                else {"horizontal": "vertical", "vertical": "horizontal"}[cls]
            )
            for index in range(count):
                cvprep.write_image(
                    root / split / folder / f"{cls}_{index:03d}.png",
                    striped(rng, cls == "vertical"),
                )
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_stripes(tmp_path_factory.mktemp("stripes"), {"train": 40, "val": 12, "test": 12})


@pytest.fixture(scope="module")
def cnn_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "cnn"
    train(
        dataset,
        out=out,
        model="cnn",
        img_size=48,
        epochs=6,
        batch_size=8,
        ops="gaussian_blur=3",
        seed=3,
        workers=0,
    )
    return out


def test_cnn_learns_and_writes_every_artefact(cnn_run):
    for name in ARTEFACTS:
        assert (cnn_run / name).is_file(), name
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["accuracy"] >= 0.85
    assert set(metrics["per_class"]) == {"horizontal", "vertical"}
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["seed"] == 3 and "tensorflow" in config["versions"]
    assert config["validation"] == {"source": "val", "images": 24}
    assert config["epochs"] == 6 and config["augment"] == "medium"  # the cnn default recipe
    assert json.loads((cnn_run / "labels.json").read_text()) == ["horizontal", "vertical"]
    pipeline = cvprep.Pipeline.from_json((cnn_run / "pipeline.json").read_text())
    assert pipeline.to_text() == "gaussian_blur=3"


def test_report_shows_every_figure_and_the_mistakes(cnn_run, tmp_path):
    page = (cnn_run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"figures/curves.png", "figures/confusion_matrix.png", "figures/augmented.png"} <= set(
        images
    )
    for image in images:  # offline: every picture is a file of the run folder
        assert (cnn_run / image).is_file(), image
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    wrong = metrics["count"] - round(metrics["accuracy"] * metrics["count"])
    photos = [i for i in images if re.fullmatch(r"figures/mistakes/\d+\.jpg", i)]
    assert len(photos) == min(wrong, 24)
    assert len([i for i in images if i.endswith("_heatmap.jpg")]) == len(photos)
    assert "Suspect training labels" in page and "Misclassified test images" in page
    augmented = cvprep.read_image(cnn_run / "figures" / "augmented.png")
    assert augmented.shape[1] == 8 * (128 + 4)  # a grid of 8 columns of 128-pixel tiles
    with (cnn_run / "suspects.csv").open() as handle:
        assert csv.DictReader(handle).fieldnames == [
            "path",
            "class",
            "predicted",
            "probability",
            "probability_of_class",
        ]


def test_suspects_list_mislabeled_training_images(tmp_path):
    data = make_stripes(tmp_path / "data", {"train": 40, "val": 10}, seed=4)
    planted = []
    for index in range(3):  # three vertical-stripe images filed as horizontal
        source = data / "train" / "vertical" / f"vertical_{index:03d}.png"
        target = data / "train" / "horizontal" / f"planted_{index}.png"
        source.rename(target)
        planted.append(str(target))
    result = train(
        data,
        out=tmp_path / "run",
        img_size=48,
        epochs=8,
        batch_size=8,
        seed=1,
        augment="light",
        workers=0,
    )
    with (tmp_path / "run" / "suspects.csv").open() as handle:
        suspects = [row["path"] for row in csv.DictReader(handle)]
    assert set(planted) <= set(suspects[:5])
    assert result.metrics["evaluated_on"] == "val"  # no test/: the figure says so


def test_training_test_figure_equals_evaluate(cnn_run, dataset):
    trained = json.loads((cnn_run / "metrics.json").read_text())
    result = CliRunner().invoke(cli, ["evaluate", str(cnn_run), str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["accuracy"] == trained["accuracy"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]


def test_trained_on_a_preprocessed_copy_scores_the_raw_test_images_like_evaluate(dataset, tmp_path):
    from cvprep.dataset import preprocess

    prepped = tmp_path / "prepped"
    preprocess(dataset, prepped, ops="resize=32x40:fit=pad,equalize", workers=0)
    run = tmp_path / "run"
    train(prepped, out=run, model="cnn", img_size=32, epochs=3, batch_size=8, seed=1, workers=0)
    trained = json.loads((run / "metrics.json").read_text())
    # The test figure of training came from the raw test images, through the recorded spec.
    assert Path(trained["evaluated_on"]) == dataset / "test"
    evaluated = evaluate(run, dataset, write=False).metrics
    assert evaluated["accuracy"] == trained["accuracy"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]


def test_no_val_folder_carves_validation_from_train_and_never_touches_test(tmp_path):
    # test/ has every label swapped: if it drove early stopping or the checkpoint, validation
    # would be near 0; it must only be scored at the end (and score near 0 there).
    data = make_stripes(tmp_path / "data", {"train": 40, "test": 10}, seed=2, swap=("test",))
    result = train(
        data,
        out=tmp_path / "run",
        img_size=48,
        epochs=6,
        batch_size=8,
        seed=5,
        augment="light",
        workers=0,
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["validation"] == {"source": "train", "images": 8, "fraction": 0.1, "seed": 5}
    history = result.history
    assert max(history["val_accuracy"]) >= 0.8
    assert result.metrics["split"] == "test" and result.metrics["accuracy"] <= 0.2
    assert result.metrics["validation_accuracy"] >= 0.8


def test_cache_holds_what_the_uncached_inputs_are(dataset, tmp_path):
    _, splits = discover(dataset)
    pipeline = Pipeline.parse("gaussian_blur=3")
    options = {"pipeline": pipeline, "size": 40, "resize": "pad", "channels": 3, "workers": 2}
    memory = load_split(splits["val"], cache="memory", **options)
    disk = load_split(splits["val"], cache="disk", cache_file=tmp_path / "val.npy", **options)
    assert isinstance(disk.images, np.memmap) and (tmp_path / "val.npy").is_file()
    direct = np.stack(
        [prepare_image(cvprep.read_image(f), pipeline, 40, "pad") for f in splits["val"].files]
    )
    np.testing.assert_array_equal(memory.images, direct)
    np.testing.assert_array_equal(disk.images, direct)
    epoch = make_dataset(disk, batch_size=5, num_classes=2)  # an evaluation epoch, in order
    images = np.concatenate([np.asarray(batch) for batch, _ in epoch])
    np.testing.assert_array_equal(images, direct.astype(np.float32))
    shuffled = make_dataset(memory, batch_size=5, num_classes=2, training=True, augment="none")
    seen = np.concatenate([np.asarray(batch) for batch, _ in shuffled])
    assert sorted(map(bytes, seen.astype(np.uint8))) == sorted(map(bytes, direct))


def test_unreadable_training_file_is_named_and_skipped(dataset, tmp_path):
    _, splits = discover(dataset)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    val = Split((*splits["val"].files, str(broken)), (*splits["val"].labels, 0))
    messages = []
    cached = load_split(
        val,
        pipeline=Pipeline(),
        size=32,
        resize="stretch",
        channels=3,
        log=messages.append,
    )
    assert len(cached) == 24 and str(broken) in cached.skipped
    assert any("broken.jpg" in m for m in messages)


def test_classic_is_the_course_network(dataset):
    plan = resolve_plan(TrainConfig(data=str(dataset), out="unused", model="classic"))
    model, base = build_training_model(plan)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "valid" for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 4
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 1] and dense[-1].activation.__name__ == "sigmoid"
    assert any(
        isinstance(layer, keras.layers.Dropout) and layer.rate == 0.5 for layer in model.layers
    )
    assert model.input_shape == (None, 150, 150, 3) and base is None


def test_reloaded_model_predicts_identically_in_a_fresh_process(cnn_run, dataset):
    images = sorted((dataset / "test").rglob("*.png"))[:6]
    here = [p.probabilities for p in predict(cnn_run, images)]
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
    assert not TF_NOISE.search(fresh.stderr), fresh.stderr  # quiet without --verbose


@pytest.mark.parametrize(
    ("fmt", "quantize"), [("savedmodel", False), ("tflite", False), ("tflite", True)]
)
def test_export_predicts_like_the_model(cnn_run, dataset, fmt, quantize):
    args = ["export", str(cnn_run), "--format", fmt] + (["--quantize"] if quantize else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "checked on 11 images" in result.output  # 8 of the run's own + 3 generated
    from cvprep.training.export import tflite_predictor

    model = load_run(cnn_run).model
    image = cvprep.read_image(sorted((dataset / "test").rglob("*.png"))[0])
    expected = np.asarray(model(image[None].astype(np.float32)))
    if fmt == "savedmodel":
        served = tf.saved_model.load(str(cnn_run / "export" / "savedmodel"))
        got = np.asarray(served.serve(tf.constant(image[None], tf.float32)))
    else:
        name = "model-quantized.tflite" if quantize else "model.tflite"
        got = tflite_predictor(cnn_run / "export" / name)(image)
    assert np.abs(got - expected).max() <= (0.05 if quantize else 1e-4)


def test_export_compares_even_when_the_data_is_gone(cnn_run, tmp_path, monkeypatch):
    config = json.loads((cnn_run / "config.json").read_text())
    moved = tmp_path / "run"
    moved.mkdir()
    for name in ("model.keras", "labels.json"):
        (moved / name).write_bytes((cnn_run / name).read_bytes())
    (moved / "config.json").write_text(json.dumps({**config, "data": "no/such/relative/folder"}))
    result = export(moved, "tflite")
    assert result.checked == 3  # the generated images
    saved = export(moved, "savedmodel").path

    def files() -> dict[Path, tuple[bytes, int]]:  # contents and modification times
        written = [result.path, *(p for p in saved.rglob("*") if p.is_file())]
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in written}

    before = files()
    wrong = lambda model: lambda image: np.zeros((1, 1), np.float32) + 0.5  # noqa: E731
    module = sys.modules["cvprep.training.export"]
    monkeypatch.setattr(module, "tflite_predictor", wrong)
    monkeypatch.setattr(module, "saved_model_predictor", wrong)
    for fmt in ("tflite", "savedmodel"):
        with pytest.raises(cvprep.CvprepError, match=r"differs from model\.keras.*nothing was"):
            export(moved, fmt)
    # The exports that passed their check are still there, untouched; nothing written beside.
    assert files() == before
    assert sorted(p.name for p in (moved / "export").iterdir()) == ["model.tflite", "savedmodel"]


def test_a_savedmodel_export_never_replaces_a_folder_of_other_files(cnn_run, tmp_path):
    mine = tmp_path / "models"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for output in (cnn_run, mine, cnn_run.parent):
        with pytest.raises(cvprep.CvprepError, match="folder with other files"):
            export(cnn_run, "savedmodel", output=output)
    assert (mine / "notes.txt").read_text() == "mine"
    assert (cnn_run / "model.keras").is_file()


def test_evaluate_and_predict_report_bad_files(cnn_run, dataset, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    good = sorted((dataset / "test" / "vertical").glob("*.png"))[0]
    result = CliRunner().invoke(cli, ["predict", str(cnn_run), str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{good}: vertical" in result.stdout and "broken.jpg: rejected" in result.stderr
    assert evaluate(cnn_run, dataset, write=False).metrics["count"] == 24


def test_transfer_learning_freezes_then_fine_tunes(dataset, tmp_path):
    config = TrainConfig(
        data=str(dataset),
        out=str(tmp_path / "mobile"),
        model="mobilenet",
        alpha=0.25,
        weights="none",
        img_size=32,
    )
    model, base = build_training_model(resolve_plan(config))
    frozen_before = [w.copy() for w in base.get_weights()]
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1] * 4, np.float32)
    model.fit(x, y, epochs=2, verbose=0)
    for before, after in zip(frozen_before, base.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # phase one: the backbone is frozen
    unfreeze_top(base, 0)  # the default: everything but BatchNormalization
    batch_norms = [
        layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    stats_before = [layer.moving_mean.numpy().copy() for layer in batch_norms]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    assert not any(layer.trainable for layer in batch_norms)
    for layer, before in zip(batch_norms, stats_before, strict=True):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before)  # inference mode
    convolutions = [
        layer
        for layer in base.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert all(layer.trainable for layer in convolutions)
    unfreeze_top(base, 6)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(
        base.layers.index(layer) >= len(base.layers) - 6 for layer in trainable
    )
    # Both phases run end to end with the backbone defaults (frozen, then fine-tuning).
    result = train(
        dataset,
        out=tmp_path / "mobile",
        model="mobilenet",
        alpha=0.25,
        weights="none",
        img_size=32,
        epochs=2,
        fine_tune_epochs=2,
        batch_size=16,
        workers=0,
    )
    assert result.metrics["epochs_run"] == 4


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="../shared/weights is not present")
def test_mobilenet_loads_the_real_imagenet_weights(dataset, tmp_path):
    import h5py

    result = train(
        dataset,
        out=tmp_path / "imagenet",
        model="mobilenet",
        alpha=0.25,
        weights=str(SHARED_WEIGHTS),
        img_size=96,
        epochs=4,
        fine_tune_epochs=2,
        batch_size=16,
        seed=1,
        workers=0,
    )
    classifier = load_run(tmp_path / "imagenet").model.layers[-1]
    backbone = classifier.get_layer("mobilenet_0.25_96")
    conv = backbone.get_layer("conv1")
    with h5py.File(SHARED_WEIGHTS, "r") as weights:
        stored = weights["conv1"]["conv1"]["kernel:0"][()]
    # Fine-tuning moved the weights a little, from the ImageNet ones (not from random ones).
    assert np.abs(conv.get_weights()[0] - stored).max() < 0.05
    assert result.accuracy >= 0.75


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


def test_commands_print_no_tensorflow_noise(cnn_run, dataset, tmp_path):
    for args in (
        ["evaluate", str(cnn_run), str(dataset)],
        ["export", str(cnn_run), "-o", str(tmp_path / "m")],
    ):
        quiet = subprocess.run(
            [sys.executable, "-m", "cvprep", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert not TF_NOISE.search(quiet.stdout + quiet.stderr), quiet.stdout + quiet.stderr
    loud = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvprep",
            "export",
            str(cnn_run),
            "-o",
            str(tmp_path / "m2"),
            "--verbose",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 0 and TF_NOISE.search(loud.stderr)  # the flag lets it through


# --------------------------------------------------------------------------- robustness
def test_evaluate_lists_what_it_cannot_score_and_refuses_to_score_nothing(
    cnn_run, dataset, tmp_path
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset / "test", data / "test")
    shutil.copy(next((dataset / "test" / "vertical").iterdir()), data / "test" / "loose.png")
    (data / "test" / "bird").mkdir()
    shutil.copy(next((dataset / "test" / "vertical").iterdir()), data / "test" / "bird" / "b.png")
    metrics = evaluate(cnn_run, data, write=False).metrics
    assert metrics["count"] == 24 and metrics["unknown_classes"] == {"bird": 1}
    rejected = metrics["rejected"]
    assert "not one of the model's classes" in rejected[str(data / "test" / "bird" / "b.png")]
    assert rejected[str(data / "test" / "loose.png")] == "not in a class folder"
    result = CliRunner().invoke(cli, ["evaluate", str(cnn_run), str(data)])
    assert result.exit_code == 1 and "bird/ (1)" in result.stderr
    assert "loose.png: not in a class folder" in result.stderr
    # Nothing readable in the model's classes: a clear refusal, not sklearn's empty array.
    broken = tmp_path / "broken" / "test"
    for name in ("horizontal", "vertical"):
        (broken / name).mkdir(parents=True)
        (broken / name / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    result = CliRunner().invoke(cli, ["evaluate", str(cnn_run), str(broken.parent)])
    assert result.exit_code == 1 and "nothing to score" in result.output, result.output
    assert result.output.count("x.jpg") == 2 and "empty input" not in result.output


def test_predict_json_stays_valid_when_the_model_outputs_nan(cnn_run, dataset, tmp_path):
    import shutil

    from tests.test_run_folder import strict_json

    run = tmp_path / "nan-run"
    shutil.copytree(cnn_run, run, ignore=shutil.ignore_patterns("export", "figures"))
    model = load_run(run).model
    dense = model.layers[-1].get_layer("prediction")
    dense.set_weights([np.full_like(w, np.nan) for w in dense.get_weights()])
    model.save(run / "model.keras")
    image = sorted((dataset / "test").rglob("*.png"))[0]
    result = CliRunner().invoke(cli, ["predict", str(run), str(image), "--json"])
    assert result.exit_code == 0, result.output
    (prediction,) = strict_json(result.stdout)
    assert prediction["probability"] is None


def test_run_files_are_readable_under_the_umask(cnn_run):
    umask = os.umask(0)
    os.umask(umask)
    for path in [*cnn_run.glob("*"), *(cnn_run / "figures").rglob("*")]:
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_export_below_a_file_is_one_line_naming_it(cnn_run, tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("in the way")
    for args in ([], ["--format", "tflite"]):
        result = CliRunner().invoke(cli, ["export", str(cnn_run), "-o", str(afile / "x"), *args])
        assert result.exit_code == 1, result.output
        assert str(afile) in result.output and "Not a directory" in result.output
        assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["export", str(cnn_run), "-o", str(afile)])
    assert result.exit_code == 1 and "a SavedModel is written as a folder" in result.output
    assert afile.read_text() == "in the way"


@pytest.mark.skipif(
    not (os.geteuid() == 0 and shutil.which("setpriv")),
    reason="needs root and setpriv to run as a user without write permission",
)
def test_train_into_a_folder_the_user_cannot_write(dataset):
    from tests.test_faults import assert_one_line_error, run, shared_folder

    with shared_folder() as shared:
        data = shared / "data"
        shutil.copytree(dataset, data)
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        command = [sys.executable, "-m", "cvprep.cli", "train", str(data), "--epochs", "1"]
        result = run([*command, "--out", str(locked / "run"), "--quiet"], as_nobody=True)
        assert_one_line_error(result, str(locked), "Permission denied")
        assert not any(locked.iterdir())


def test_a_diverging_run_stops_and_says_so(dataset, tmp_path, capfd):
    from cvprep.training.phases import TrainingDivergedError

    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"diverged.*NaN.*lower --learning-rate"):
        train(dataset, out=out, img_size=32, epochs=3, batch_size=8, learning_rate=1e30,
              workers=0)  # fmt: skip
    assert not (out / "model.keras").exists() and not (out / "backup").exists()
    assert capfd.readouterr().out == ""  # nothing on stdout: --json and --quiet stay clean


class Killed(Exception):
    """Stands for a kill at a chosen point of a run."""


def interrupted_train(monkeypatch, data, out, *, epoch=None, after_fit=False, **options):
    """Train, stopped by ``Killed`` when ``epoch`` (0-based) begins or once fitting ends."""
    import cvprep.training.fit as fit_module
    import cvprep.training.phases as phases

    callbacks = phases._callbacks
    with monkeypatch.context() as patch:
        if epoch is not None:

            class Stop(keras.callbacks.Callback):
                def on_epoch_begin(self, index, logs=None):
                    if index == epoch:
                        raise Killed

            patch.setattr(phases, "_callbacks", lambda *a, **k: [*callbacks(*a, **k), Stop()])
        if after_fit:

            def kill(*args):
                raise Killed

            patch.setattr(fit_module, "_save_model", kill)
        with pytest.raises(Killed):
            train(data, out=out, **options)


def history_epochs(out: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]


def test_damaged_backups_resume_from_the_last_whole_state_or_start_again(
    dataset, tmp_path, monkeypatch
):
    options = {"img_size": 32, "epochs": 4, "batch_size": 8, "seed": 1, "workers": 0}
    out, log = tmp_path / "run", []
    folder = out / "backup" / "phase1"
    # Killed as epoch 4 begins; the newest state is then cut short: the rerun resumes from
    # the one before (and is killed once phase 1 is done).
    interrupted_train(monkeypatch, dataset, out, epoch=3, **options)
    states = sorted(p.name for p in folder.glob("epoch-*"))
    assert states == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]
    newest = folder / states[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    interrupted_train(monkeypatch, dataset, out, after_fit=True, log=log.append, **options)
    assert any("epoch-0003.weights.h5 is damaged" in m and "resumes after epoch 2" in m
               for m in log), log  # fmt: skip
    assert history_epochs(out) == [0, 1, 2, 3]
    # The saved end of phase 1 is damaged: phase 1 runs again (killed as its epoch 3 begins).
    done = out / "backup" / "phase1-done.weights.h5"
    done.write_bytes(done.read_bytes()[:1000])
    log.clear()
    interrupted_train(monkeypatch, dataset, out, epoch=2, log=log.append, **options)
    assert any("phase1-done.weights.h5 is damaged" in m and "phase 1 runs again" in m
               for m in log), log  # fmt: skip
    # Every state damaged, and a damaged backup of cvprep 0.2 (Keras' BackupAndRestore):
    # the phase starts again, with a warning, instead of failing on every rerun.
    for path in folder.iterdir():
        path.write_bytes(b"garbage")
    (folder / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (folder / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    log.clear()
    train(dataset, out=out, log=log.append, **options)
    assert any("no whole backup left, phase 1 starts again" in m for m in log), log
    assert history_epochs(out) == [0, 1, 2, 3] and (out / "model.keras").is_file()


def test_backups_made_with_other_settings_are_not_resumed(dataset, tmp_path, monkeypatch):
    options = {"model": "mobilenet", "alpha": 0.25, "weights": "none", "img_size": 32,
               "epochs": 2, "fine_tune_epochs": 3, "batch_size": 8, "workers": 0}  # fmt: skip
    out, log = tmp_path / "run", []
    # Killed as fine-tuning's second epoch begins: phase 1 is done, fine-tuning has a state.
    interrupted_train(monkeypatch, dataset, out, epoch=3, unfreeze=10, **options)
    assert (out / "backup" / "phase2" / "epoch-0003.weights.h5").is_file()
    train(dataset, out=out, unfreeze=20, log=log.append, **options)
    changed = [m for m in log if "made with other settings (unfreeze 10, now 20)" in m]
    assert len(changed) == 1 and "fine-tuning starts again" in changed[0], log
    assert not any("damaged" in m for m in log), log
    assert history_epochs(out) == [0, 1, 2, 3, 4]  # phase 1 kept, fine-tuning run again
    # Other --ops: phase 1's saved end does not fit the new input either.
    log.clear()
    other = tmp_path / "other"
    interrupted_train(monkeypatch, dataset, other, epoch=3, **options)
    interrupted_train(monkeypatch, dataset, other, epoch=1, ops="grayscale",
                      log=log.append, **options)  # fmt: skip
    assert any("phase1-done.weights.h5 was made with other settings (ops none, now grayscale)"
               in m and "phase 1 runs again" in m for m in log), log  # fmt: skip


def test_the_demo_predicts_on_classes_of_any_format(tmp_path):
    from cvprep.dataset import make_shapes_dataset
    from cvprep.demo import run_demo

    source = make_shapes_dataset(tmp_path / "png", per_class=20, size=48)  # PNG only
    lines: list[str] = []
    run_demo(tmp_path / "demo", source, 1, lines.append)
    predictions = [line for line in lines if re.search(r"\.png: (angular|round) \(", line)]
    assert len(predictions) == 4, lines


def test_cnn_backups_record_the_networks_layout(dataset, tmp_path):
    """Weights saved by an older layout of cnn have the same shapes but another meaning: the
    layout is one of the settings a resumed run must match."""
    from cvprep.training.backup import changed_settings
    from cvprep.training.models import NETWORK_VERSIONS
    from cvprep.training.phases import state_settings
    from cvprep.training.plan import resolve_plan

    settings = state_settings(resolve_plan(TrainConfig(str(dataset), str(tmp_path))), False)
    assert settings["network"] == NETWORK_VERSIONS["cnn"]
    older = {key: value for key, value in settings.items() if key != "network"}
    assert changed_settings(older, settings) == f"network none, now {NETWORK_VERSIONS['cnn']}"
