"""cvprep.dataset called directly, and the data-safety defects of issue 11 (each test here
fails on the code before the fix): symlinks, empty trees, run records, locks, dependencies,
parameter binding, one meaning per name."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cvprep
from cvprep import dataset
from cvprep.cli import cli
from cvprep.dataset.output import LOCK_FILE, OutputBusyError, SettingsMismatchError, output_lock
from cvprep.files import EmptyTreeError, list_tree
from cvprep.pipeline import Pipeline, SpecError, make_step
from tests.conftest import ROOT, tree_snapshot


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def shapes(tmp_path) -> Path:
    return dataset.make_shapes_dataset(tmp_path / "shapes", per_class=12, size=40)


# ------------------------------------------------------------------ the API itself
def test_every_dataset_function_called_directly(shapes, tmp_path):
    before = tree_snapshot(shapes)
    verified = dataset.verify(shapes, workers=0)
    assert verified.ok and verified.summary.total["ok"] == 24
    assert isinstance(verified.to_dict()["total"], dict)

    splitted = dataset.split(shapes, tmp_path / "data", ratios=(0.5, 0.25, 0.25), seed=3, workers=0)
    assert splitted.rows["round"] == {"train": 6, "val": 3, "test": 3, "rejected": 0, "excluded": 0}
    assert (tmp_path / "data" / "manifest.csv").is_file()

    prepped = dataset.preprocess(tmp_path / "data", tmp_path / "prep", "resize=24x24", workers=0)
    assert prepped.summary.total == {"ok": 24, "skipped": 0, "rejected": 0}
    assert (
        prepped.record["status"] == "finished"
        and prepped.record["settings"]["spec"] == "resize=24x24"
    )

    augmented = dataset.augment(tmp_path / "data", tmp_path / "aug", preset="light", workers=0)
    assert augmented.per_class == {
        "angular": {"originals": 6, "augmented": 6},
        "round": {"originals": 6, "augmented": 6},
    }
    assert augmented.passed_through == ["test", "val"]
    assert tree_snapshot(shapes) == before


def test_importing_the_api_does_not_import_click():
    for module in ("cvprep.dataset", "cvprep.training"):
        code = f"import {module}, sys; assert 'click' not in sys.modules, sorted(sys.modules)"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_split_fixed_counts_and_small_classes(shapes, tmp_path):
    result = dataset.split(shapes, tmp_path / "fixed", fixed="3,2", workers=0)
    for cls in ("round", "angular"):
        assert result.rows[cls] == {"train": 7, "val": 3, "test": 2, "rejected": 0, "excluded": 0}
    with pytest.raises(ValueError, match="class 'angular' has 12 images, too few"):
        dataset.split(shapes, tmp_path / "small", fixed="6,6", workers=0)
    with pytest.raises(ValueError, match="one of `ratios`, `fixed` or `kfold`"):
        dataset.split(shapes, tmp_path / "both", ratios="0.5,0.5", fixed="2", workers=0)
    result = invoke("split", shapes, tmp_path / "cli", "--fixed", "6,6")
    assert result.exit_code == 2 and "too few" in result.output


def test_kfold_keeps_duplicates_in_one_fold(shapes, tmp_path):
    copies = sorted((shapes / "round").iterdir())[:4]
    for index, path in enumerate(copies):  # exact copies under other names
        (shapes / "round" / f"copy_{index}.png").write_bytes(path.read_bytes())
    out = tmp_path / "folds"
    result = dataset.split(shapes, out, kfold=4, seed=2, workers=0)
    assert result.names == ("fold_1", "fold_2", "fold_3", "fold_4")
    manifest = {row["path"]: row for row in csv.DictReader((out / "manifest.csv").open())}
    for index, path in enumerate(copies):
        assert (
            manifest[f"round/copy_{index}.png"]["split"] == manifest[f"round/{path.name}"]["split"]
        )
    for fold in result.names:
        val = {p.relative_to(out / fold / "val") for p in (out / fold / "val").rglob("*.png")}
        train = {p.relative_to(out / fold / "train") for p in (out / fold / "train").rglob("*.png")}
        assert val and train and not val & train  # every file in exactly one side
        assert len(val) + len(train) == 28
        expected_val = {Path(p) for p, row in manifest.items() if row["split"] == fold}
        assert val == expected_val
    # Every file is in val exactly once over the folds; classes stay balanced.
    assert sum(result.rows["angular"][f] for f in result.names) == 12
    assert (
        max(result.rows["angular"][f] for f in result.names)
        - min(result.rows["angular"][f] for f in result.names)
        <= 1
    )
    with pytest.raises(ValueError, match="4-fold"):
        dataset.split(shapes, out, seed=2, workers=0)  # a train/val/test split into a k-fold OUT


def test_split_exclude_leaves_listed_files_out(shapes, tmp_path):
    findings = tmp_path / "findings.csv"
    findings.write_text(
        "path,class,issue,score,detail\n"
        "round/round_000.png,round,blurry,3.0,\n"
        "round/round_001.png,round,dark,2.0,\n"
        "angular/angular_000.png,angular,label_conflict,1.0,round/round_005.png\n"
        "round/round_005.png,round,label_conflict,1.0,angular/angular_000.png\n"
    )
    result = dataset.split(shapes, tmp_path / "a", exclude=f"{findings}:blurry", workers=0)
    assert result.to_dict()["excluded"] == {
        "round/round_000.png": "blurry (listed in findings.csv)"
    }
    assert not list((tmp_path / "a").rglob("round_000.png"))
    result = invoke("split", shapes, tmp_path / "b", "--exclude", findings, "--json")
    excluded = json.loads(result.stdout)["excluded"]
    # A label conflict lists both pictures: excluding it drops both, no class wins silently.
    assert set(excluded) == {
        "round/round_000.png",
        "round/round_001.png",
        "angular/angular_000.png",
        "round/round_005.png",
    }
    manifest = {
        row["path"]: row for row in csv.DictReader((tmp_path / "b" / "manifest.csv").open())
    }
    assert manifest["round/round_001.png"]["reason"].startswith("excluded: dark")


def test_split_reports_label_conflicts_instead_of_resolving_them(shapes, tmp_path):
    picture = sorted((shapes / "round").iterdir())[0]
    (shapes / "angular" / "mislabeled.png").write_bytes(picture.read_bytes())
    result = dataset.split(shapes, tmp_path / "out", workers=0)
    assert ["angular/mislabeled.png", f"round/{picture.name}"] in result.conflicts
    cli_result = invoke("split", shapes, tmp_path / "out2")
    assert "filed under more than one class" in cli_result.stderr


# ------------------------------------------------------------------ symlinks and empty trees
def test_symlinked_dataset_is_followed(tmp_path):
    photos = dataset.make_shapes_dataset(tmp_path / "elsewhere", per_class=3, size=32)
    linked = tmp_path / "data"
    linked.mkdir()
    (linked / "cat").symlink_to(photos / "round", target_is_directory=True)
    (linked / "dog").symlink_to(photos / "angular", target_is_directory=True)
    result = invoke(
        "preprocess", linked, tmp_path / "out", "--ops", "grayscale", "-w", "0", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"]["ok"] == 6
    assert len(list((tmp_path / "out" / "cat").iterdir())) == 3
    assert dataset.verify(linked, workers=0).summary.total["ok"] == 6
    assert dataset.split(linked, tmp_path / "split", workers=0).rows["dog"]["train"] >= 2


def test_symlink_loop_is_reported_not_followed(tmp_path):
    photos = dataset.make_shapes_dataset(tmp_path / "photos", per_class=2, size=32)
    (photos / "round" / "again").symlink_to(photos, target_is_directory=True)
    tree = list_tree(photos)
    assert [(p.path, p.kind) for p in tree.problems] == [("round/again", "symlink_loop")]
    assert len(tree.files) == 4
    result = invoke("verify", photos, "--json", "-w", "0")
    assert result.exit_code == 1
    (reject,) = json.loads(result.stdout)["rejected"]
    assert reject["path"] == "round/again" and reject["kind"] == "symlink_loop"


@pytest.mark.parametrize(
    "command",
    [
        ["verify", "{empty}"],
        ["preprocess", "{empty}", "{out}", "--ops", "grayscale"],
        ["split", "{empty}", "{out}"],
        ["augment", "{empty}", "{out}"],
    ],
)
def test_empty_folder_is_an_error_naming_it(tmp_path, command):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / ".DS_Store").write_bytes(b"x")  # clutter is not an image
    args = [a.format(empty=empty, out=tmp_path / "out") for a in command]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert str(empty) in result.output and "no image files" in result.output


def test_empty_folders_for_training_commands(tmp_path):
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "train" / "b").mkdir(parents=True)
    result = invoke("train", tmp_path / "data", "--out", tmp_path / "run")
    assert result.exit_code == 1 and "no image files" in result.output
    with pytest.raises(EmptyTreeError):
        dataset.verify(tmp_path / "data")


# ------------------------------------------------------------------ run records and locks
def test_preprocess_writes_its_record_before_the_first_output(shapes, tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = []

    def spy(task, data=None):
        seen.append(json.loads((out / "cvprep.json").read_text())["status"])
        return real(task, data)

    module = importlib.import_module("cvprep.dataset.preprocess")  # the module, not the function
    real = module.preprocess_one
    monkeypatch.setattr(module, "preprocess_one", spy)
    dataset.preprocess(shapes, out, "resize=16x16", workers=0)
    assert seen and set(seen) == {"in progress"}
    assert json.loads((out / "cvprep.json").read_text())["status"] == "finished"


def test_unfinished_run_with_other_settings_is_refused(shapes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # What a killed run leaves: its record says "in progress", some outputs exist.
    from cvprep.dataset.output import write_record

    settings = {
        "spec": "resize=16x16",
        "format": None,
        "quality": None,
        "fast_decode": 1,
        "max_pixels": cvprep.io.DEFAULT_MAX_PIXELS,
    }
    write_record(out, "preprocess", settings, status="in progress")
    finished = cvprep.write_image(out / "round" / "round_000.png", np.zeros((16, 16, 3), np.uint8))
    source_time = (shapes / "round" / "round_000.png").stat().st_mtime_ns
    os.utime(finished, ns=(source_time, source_time))  # as preprocess stamps what it wrote
    with pytest.raises(SettingsMismatchError, match="unfinished run with different settings"):
        dataset.preprocess(shapes, out, "resize=20x20", workers=0)
    result = invoke("preprocess", shapes, out, "--ops", "resize=20x20", "-w", "0")
    assert result.exit_code == 2 and "unfinished run" in result.output
    done = dataset.preprocess(shapes, out, "resize=16x16", workers=0)  # same settings: resumes
    assert done.summary.total == {"ok": 23, "skipped": 1, "rejected": 0}


def test_foreign_folder_and_other_command_are_refused(shapes, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SettingsMismatchError, match="no cvprep run record"):
        dataset.preprocess(shapes, foreign, "grayscale", workers=0)
    dataset.split(shapes, tmp_path / "split", workers=0)
    with pytest.raises(SettingsMismatchError, match="made by `cvprep split`"):
        dataset.preprocess(shapes, tmp_path / "split", "grayscale", workers=0)
    assert dataset.preprocess(shapes, foreign, "grayscale", workers=0, overwrite=True).ok


def test_lock_refuses_a_second_job_and_names_the_first(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, "preprocess"):
        info = json.loads((out / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "preprocess"
        busy = pytest.raises(OutputBusyError, match=rf"`cvprep preprocess` \(pid {os.getpid()}")
        with busy, output_lock(out, "split"):
            pass
    assert not (out / LOCK_FILE).exists()
    with output_lock(out, "split"):  # free again
        pass


def test_stale_lock_of_a_killed_job_does_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from cvprep.dataset.output import "
            "output_lock\nwith output_lock(Path(sys.argv[1]), 'preprocess'):\n"
            "    print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"), output_lock(out, "preprocess"):
        pass
    holder.kill()  # SIGKILL: no cleanup, the lock file stays behind
    holder.wait()
    assert (out / LOCK_FILE).exists()
    with output_lock(out, "preprocess"):
        pass


@pytest.mark.slow
def test_concurrent_preprocess_runs_do_not_mix(tmp_path):
    source = dataset.make_shapes_dataset(tmp_path / "in", per_class=150, size=300, extension=".jpg")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "cvprep.cli",
        "preprocess",
        str(source),
        str(out),
        "-q",
        "-w",
        "1",
        "--ops",
        "resize=100x100,gaussian_blur=9,median_blur=7",
    ]
    first = subprocess.Popen(command, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / LOCK_FILE).exists():
        time.sleep(0.02)
    second = subprocess.run(
        [*command[:-1], "resize=120x120"], cwd=ROOT, capture_output=True, text=True
    )
    assert first.wait(timeout=300) == 0
    assert second.returncode == 1
    assert "in use by `cvprep preprocess`" in second.stderr and str(first.pid) in second.stderr
    sizes = {cvprep.read_image(p).shape for p in out.rglob("*.jpg")}
    assert sizes == {(100, 100, 3)} and len(list(out.rglob("*.jpg"))) == 300


@pytest.mark.slow
def test_killed_preprocess_refuses_another_spec_then_resumes(tmp_path):
    source = dataset.make_shapes_dataset(tmp_path / "in", per_class=60, size=400, extension=".jpg")
    out = tmp_path / "out"
    base = [
        sys.executable,
        "-m",
        "cvprep.cli",
        "preprocess",
        str(source),
        str(out),
        "-q",
        "-w",
        "2",
    ]
    command = [*base, "--ops", "resize=300x300,gaussian_blur=7,median_blur=5"]
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("*.jpg"))) < 10:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the whole pool, mid-write
    child.wait()
    written = len(list(out.rglob("*.jpg")))
    assert 0 < written < 120, "the run should have been interrupted midway"
    other = subprocess.run(
        [*base, "--ops", "resize=100x100"], cwd=ROOT, capture_output=True, text=True
    )
    assert other.returncode == 2 and "unfinished run with different settings" in other.stderr
    assert subprocess.run(command, cwd=ROOT).returncode == 0
    outputs = sorted(out.rglob("*.jpg"))
    assert len(outputs) == 120 and not list(out.rglob("*.part"))
    assert {cvprep.read_image(p).shape for p in outputs} == {(300, 300, 3)}


# ------------------------------------------------------------------ dependencies
def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module → files importing it, over cvprep's own source."""
    found: dict[str, set[str]] = {}
    for folder in ("cvprep", "cli", "keras_layers"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "cvprep":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        spec.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for spec in [
            *project["dependencies"],
            *project["optional-dependencies"]["ray"],
            *project["optional-dependencies"]["jax"],
            *project["optional-dependencies"]["serve"],
        ]
    }
    distributions = packages_distributions()
    missing = {}
    for module, files in _third_party_imports().items():
        names = {d.lower() for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    numpy_floor = next(d for d in project["dependencies"] if d.startswith("numpy"))
    assert ">=2" in numpy_floor  # np.bitwise_count is NumPy 2


# ------------------------------------------------------------------ names and parameters
def test_make_step_binds_parameters_by_name():
    assert make_step("canny", high=150).params["low"] == 100.0
    assert Pipeline.parse("canny=high=150").to_text() == "canny=100:150"
    with pytest.raises(SpecError, match="missing size"):
        make_step("resize")
    with pytest.raises(SpecError, match="no parameter 'hgh'"):
        make_step("canny", hgh=3)


def test_internal_errors_are_not_relabelled(monkeypatch):
    from cvprep import pipeline

    def broken(*args, **kwargs):
        raise TypeError("an internal bug")

    operation = pipeline.OPERATIONS["grayscale"]
    monkeypatch.setitem(
        pipeline.OPERATIONS, "grayscale", type(operation)(**{**operation.__dict__, "check": broken})
    )
    with pytest.raises(TypeError, match="an internal bug"):
        make_step("grayscale")


def test_augment_presets_mean_the_same_offline_and_in_training():
    pytest.importorskip("keras")
    from cvprep.augmentation import get_preset, to_albumentations, to_keras_layers
    from cvprep.keras_layers import RandomAffine, RandomBrightnessContrast

    for name in ("light", "medium", "heavy"):
        preset = get_preset(name)
        offline = {type(t).__name__: t for t in to_albumentations(preset).transforms}
        online = {type(layer).__name__: layer for layer in to_keras_layers(preset, seed=1)}
        flips_online = "RandomFlip" in online or getattr(online.get("RandomAffine"), "flip", False)
        assert ("HorizontalFlip" in offline) == flips_online == preset.flip
        if "Affine" in offline:
            affine = online["RandomAffine"]
            assert isinstance(affine, RandomAffine) and affine.warp_with_opencv
            assert affine.rotation == tuple(offline["Affine"].rotate)
            assert affine.zoom == (offline["Affine"].scale["x"][0], offline["Affine"].scale["x"][1])
        if "ColorJitter" in offline:
            colour = online["RandomBrightnessContrast"]
            assert isinstance(colour, RandomBrightnessContrast)
            assert colour.brightness == tuple(offline["ColorJitter"].brightness)
            assert colour.contrast == tuple(offline["ColorJitter"].contrast)
        if "GaussNoise" in offline:
            assert online["_PixelNoise"].stddev == offline["GaussNoise"].std_range[1]
            assert offline["GaussNoise"].std_range[0] == offline["GaussNoise"].std_range[1]


def test_float_conversions_have_one_meaning_per_name():
    from cvprep import io, ops

    assert not hasattr(io, "_to_uint8")  # the reader's bit-depth rescaling has its own name
    np.testing.assert_array_equal(ops.to_uint8(np.array([0.4, 254.6, 300.0])), [0, 255, 255])
