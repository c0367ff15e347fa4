"""Progressive resizing (``cnn``): the stages, the resized caches, a run, and a killed run
resumed in its second stage (the runs are marked slow)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from cvprep.cli import cli
from cvprep.errors import ParameterError
from cvprep.training import TrainConfig, predict, train
from cvprep.training.config import PROGRESSIVE_MIN_SIZE, RESIZE_STAGES, resize_stages
from cvprep.training.data import CachedImages, resized
from cvprep.training.models import cnn_downsampling
from tests.conftest import ROOT
from tests.test_training import make_stripes

SIZE = 150  # the default: stages at 64 and 96 pixels


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 7, 26, 60, 100])
@pytest.mark.parametrize("size", [32, 64, 99, 100, 150, 224])
def test_stages_add_up_grow_and_end_at_the_full_size(epochs, size):
    stages = resize_stages(epochs, size, progressive=True)
    assert sum(s.epochs for s in stages) == epochs
    assert all(s.epochs >= 1 for s in stages)
    sizes = [s.size for s in stages]
    assert sizes == sorted(set(sizes)) and sizes[-1] == size
    assert all(s >= PROGRESSIVE_MIN_SIZE for s in sizes[:-1])
    # The smaller sizes run the same network: the downsampling decided by `size` fits them.
    assert all(cnn_downsampling(s) == cnn_downsampling(size) for s in sizes)
    # The full size keeps at least its share of the epochs: the network settles at it.
    final_share = 1 - sum(share for share, _ in RESIZE_STAGES)
    assert stages[-1].epochs >= int(final_share * epochs)
    assert resize_stages(epochs, size, progressive=False) == (stages[-1].__class__(epochs, size),)


def test_stages_of_the_default_run():
    assert [(s.epochs, s.size) for s in resize_stages(46, 150, True)] == [
        (20, 64),
        (16, 96),
        (10, 150),
    ]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("on_disk", [False, True])
def test_resized_cache_keeps_labels_files_and_where_it_lives(tmp_path, channels, on_disk):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 40, 40, channels), dtype=np.uint8)
    if on_disk:
        path = tmp_path / "full.npy"
        images = np.lib.format.open_memmap(path, "w+", np.uint8, pixels.shape)
        images[:] = pixels
    else:
        images = pixels
    cached = CachedImages(images, np.arange(5), [f"f{i}.png" for i in range(5)])
    small = resized(cached, 20, tmp_path / "cache" / "train-20.npy")
    assert small.images.shape == (5, 20, 20, channels)
    assert small.files == cached.files and np.array_equal(small.labels, cached.labels)
    assert isinstance(small.images, np.memmap) == on_disk
    assert (tmp_path / "cache" / "train-20.npy").exists() == on_disk
    # Area interpolation by 2: each pixel is the mean of a 2×2 block.
    block = pixels[2, :2, :2].astype(float).mean(axis=(0, 1))
    assert np.allclose(small.images[2, 0, 0], block, atol=1)


def test_progressive_applies_to_cnn_only():
    with pytest.raises(ParameterError, match=r"progressive.*mobilenet"):
        TrainConfig("d", "o", model="mobilenet", progressive=True)
    with pytest.raises(ParameterError, match="progressive"):
        TrainConfig("d", "o", progressive="yes")
    result = CliRunner().invoke(
        cli, ["train", ".", "--model", "classic", "--progressive", "--out", "o"]
    )
    assert result.exit_code != 0 and "progressive" in result.output


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    return make_stripes(tmp_path_factory.mktemp("stripes"), {"train": 16, "val": 6, "test": 6})


def _history(run):
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _train(stripes, tmp_path, **settings):
    """A tiny run at SIZE px on the stripes, in ``tmp_path/run``."""
    return train(stripes, out=tmp_path / "run", img_size=SIZE, batch_size=8, workers=0, **settings)


@pytest.mark.slow
def test_a_progressive_run_trains_small_first_and_saves_a_full_size_model(stripes, tmp_path):
    lines = []
    result = _train(stripes, tmp_path, epochs=4, progressive=True, log=lines.append)
    rows = _history(result.run)
    assert [int(r["img_size"]) for r in rows] == [64, 96, 150, 150]
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert "progressive resizing: epochs 1 at 64 px, 2 at 96 px, 3-4 at 150 px" in lines
    config = json.loads((result.run / "config.json").read_text())
    assert config["progressive"] is True and config["image_size"] == SIZE
    # The saved network takes the full size (the raw-image model resizes to it), not any size.
    import keras

    model = keras.saving.load_model(result.run / "model.keras")
    core = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert tuple(core.input_shape[1:3]) == (SIZE, SIZE)
    images = sorted((stripes / "test").rglob("*.png"))[:2]
    assert len(predict(result.run, images)) == 2
    assert not (result.run / "cache").exists()  # the resized copies go with the cache


@pytest.mark.slow
def test_no_progressive_trains_every_epoch_at_full_size(stripes, tmp_path):
    result = _train(stripes, tmp_path, epochs=3, progressive=False)
    assert [int(r["img_size"]) for r in _history(result.run)] == [SIZE] * 3


@pytest.mark.slow
def test_a_run_killed_in_its_second_stage_resumes_there(stripes, tmp_path):
    out = tmp_path / "resume"
    command = [
        sys.executable, "-m", "cvprep", "train", str(stripes), "--img-size", str(SIZE),
        "--epochs", "20", "--patience", "20", "--batch-size", "8", "--progressive",
        "--seed", "2", "--out", str(out), "--quiet",
    ]  # fmt: skip
    stages = resize_stages(20, SIZE, progressive=True)
    sizes = [stage.size for stage in stages for _ in range(stage.epochs)]
    assert len(stages) == 3 and sizes[-1] == SIZE
    kill_after = stages[0].epochs + 2  # epochs done when it is killed: in the second stage
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) > kill_after:
            break
        time.sleep(0.05)
    assert child.poll() is None, "training finished before it could be interrupted"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    subprocess.run(command, cwd=ROOT, check=True, stderr=subprocess.DEVNULL, timeout=600)
    rows = _history(out)
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(20)), "each epoch once, in order, none run twice"
    assert [int(r["img_size"]) for r in rows] == sizes
    assert (out / "model.keras").is_file()
