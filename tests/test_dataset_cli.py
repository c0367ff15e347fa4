"""verify, preprocess, split and augment through the CLI, on messy generated folders."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import cvprep
from cvprep.cli import cli
from tests.conftest import BAD_KINDS, GOOD_KINDS, ROOT, make_messy_folder, tree_snapshot


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def smooth_image(seed: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A distinct, photo-like (smooth) RGB image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def make_classes(root: Path, counts: dict[str, int], start: int = 0) -> None:
    for offset, (cls, count) in enumerate(counts.items()):
        for index in range(start, start + count):
            cvprep.write_image(
                root / cls / f"{cls}_{index:04d}.png", smooth_image(offset * 100_000 + index)
            )


@pytest.fixture
def messy(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "messy"
    return root, make_messy_folder(root)


# ------------------------------------------------------------------ verify
def test_verify_rejects_exactly_the_bad_files(messy, tmp_path):
    root, kinds = messy
    before = tree_snapshot(root)
    report = tmp_path / "report.csv"
    result = invoke("verify", root, "--report", report, "--workers", "2", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    rejected = {r["path"]: r["kind"] for r in summary["rejected"]}
    expected = {path: BAD_KINDS[kind] for path, kind in kinds.items() if kind in BAD_KINDS}
    assert rejected == expected
    assert summary["total"] == {"ok": 12, "skipped": 0, "rejected": 10}
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 22 and not any(
        "DS_Store" in r["path"] or "Thumbs" in r["path"] for r in rows
    )
    assert tree_snapshot(root) == before  # no byte of the input changed


def test_verify_table_and_quarantine(messy, tmp_path):
    root, kinds = messy
    quarantine = tmp_path / "rejects"
    result = invoke("verify", root, "--quarantine", quarantine, "--workers", "0")
    assert result.exit_code == 1
    assert "total" in result.stdout and "cats" in result.stdout
    assert "cats/truncated.jpg: [truncated]" in result.stderr
    moved = {str(p.relative_to(quarantine)) for p in quarantine.rglob("*") if p.is_file()}
    assert moved == {path for path, kind in kinds.items() if kind in BAD_KINDS}
    assert invoke("verify", root, "-q").exit_code == 0  # only good files are left


def test_verify_clean_folder_exits_zero():
    result = invoke("verify", ROOT / "sample_images" / "shapes", "--workers", "0")
    assert result.exit_code == 0 and "400" in result.stdout


# ------------------------------------------------------------------ preprocess
def test_preprocess_processes_good_and_reports_bad(messy, tmp_path):
    root, kinds = messy
    before = tree_snapshot(root)
    out = tmp_path / "out"
    result = invoke(
        "preprocess",
        root,
        out,
        "--ops",
        "resize=32x40:fit=pad,equalize",
        "--format",
        "png",
        "--workers",
        "2",
        "--json",
    )
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["total"] == {"ok": 12, "skipped": 0, "rejected": 10}
    for path, kind in kinds.items():
        target = out / Path(path).with_suffix(".png")
        if kind in GOOD_KINDS:
            image = cvprep.read_image(target)
            assert image.shape == (32, 40, 3)
        else:
            assert not target.exists()
    rejected = {row["path"] for row in csv.DictReader((out / "rejected.csv").open())}
    assert rejected == {p for p, k in kinds.items() if k in BAD_KINDS}
    record = json.loads((out / "cvprep.json").read_text())
    assert record["settings"]["spec"] == "resize=32x40:fit=pad,equalize"
    assert tree_snapshot(root) == before
    assert not list(out.rglob("*.part"))


def test_preprocess_output_equals_the_pipeline(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 3})
    out = tmp_path / "out"
    spec = "resize=24x24,grayscale,gaussian_blur=3"
    assert invoke("preprocess", source, out, "--ops", spec, "-w", "0", "-q").exit_code == 0
    for path in (source / "a").iterdir():
        expected = cvprep.Pipeline.parse(spec).apply(cvprep.read_image(path))
        got = cvprep.read_image(out / "a" / path.name, mode="grayscale")
        np.testing.assert_array_equal(got, expected)


def test_preprocess_resumes_and_refuses_changed_settings(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"a": 4})
    assert (
        invoke("preprocess", source, out, "--ops", "resize=16x16", "-w", "0", "-q").exit_code == 0
    )
    (out / "a" / "a_0001.png").unlink()
    result = invoke("preprocess", source, out, "--ops", "resize=16x16", "-w", "0", "--json")
    assert json.loads(result.stdout)["total"] == {"ok": 1, "skipped": 3, "rejected": 0}
    result = invoke("preprocess", source, out, "--ops", "resize=20x20", "-w", "0")
    assert result.exit_code == 2 and "different settings" in result.output
    result = invoke(
        "preprocess", source, out, "--ops", "resize=20x20", "-w", "0", "--overwrite", "-q"
    )
    assert result.exit_code == 0
    assert cvprep.read_image(out / "a" / "a_0002.png").shape == (20, 20, 3)


def test_preprocess_refuses_output_inside_input(tmp_path):
    make_classes(tmp_path / "in", {"a": 1})
    result = invoke("preprocess", tmp_path / "in", tmp_path / "in" / "out", "--ops", "grayscale")
    assert result.exit_code == 2 and "inside the input" in result.output


def test_preprocess_name_collision_is_reported_not_lost(tmp_path):
    source = tmp_path / "in"
    cvprep.write_image(source / "a" / "x.png", smooth_image(1))
    cvprep.write_image(source / "a" / "x.bmp", smooth_image(2))
    result = invoke(
        "preprocess",
        source,
        tmp_path / "out",
        "--ops",
        "grayscale",
        "--format",
        "jpg",
        "-w",
        "0",
        "--json",
    )
    assert result.exit_code == 1
    (rejected,) = json.loads(result.stdout)["rejected"]
    assert rejected["kind"] == "name_collision" and rejected["path"] == "a/x.png"


@pytest.mark.slow
def test_killed_preprocess_resumes_to_a_complete_output(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    for index in range(120):
        cvprep.write_image(source / "a" / f"{index:03d}.jpg", smooth_image(index, (400, 500)))
    command = [
        sys.executable,
        "-m",
        "cvprep.cli",
        "preprocess",
        str(source),
        str(out),
        "--ops",
        "resize=300x300,gaussian_blur=7,median_blur=5",
        "--workers",
        "2",
        "--quiet",
        "--format",
        "png",
    ]
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("*.png"))) < 20:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the whole pool, mid-write
    child.wait()
    written = len(list(out.rglob("*.png")))
    assert 0 < written < 120, "the run should have been interrupted midway"
    assert subprocess.run(command, cwd=ROOT).returncode == 0
    outputs = sorted(out.rglob("*.png"))
    assert len(outputs) == 120 and not list(out.rglob("*.part"))
    for path in outputs:
        assert cvprep.read_image(path).shape == (300, 300, 3)


# ------------------------------------------------------------------ split
def read_manifest(out: Path) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in csv.DictReader((out / "manifest.csv").open())}


def test_split_is_stratified_reproducible_and_loadable(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cats": 37, "dogs": 23, "birds": 11})
    before = tree_snapshot(source)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    result = invoke(
        "split", source, out1, "--ratios", "0.7,0.2,0.1", "--seed", "3", "--json", "-w", "2"
    )
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["per_class"]
    for cls, total in {"cats": 37, "dogs": 23, "birds": 11}.items():
        for split, ratio in {"train": 0.7, "val": 0.2, "test": 0.1}.items():
            assert abs(table[cls][split] - total * ratio) <= 1, (cls, split)
            on_disk = len(list((out1 / split / cls).glob("*.png")))
            assert on_disk == table[cls][split]
    assert (
        invoke(
            "split", source, out2, "--ratios", "0.7,0.2,0.1", "--seed", "3", "-q", "-w", "0"
        ).exit_code
        == 0
    )
    first, second = read_manifest(out1), read_manifest(out2)
    assert {p: r["split"] for p, r in first.items()} == {p: r["split"] for p, r in second.items()}
    other = tmp_path / "out3"
    invoke("split", source, other, "--ratios", "0.7,0.2,0.1", "--seed", "4", "-q")
    assert {p: r["split"] for p, r in read_manifest(other).items()} != {
        p: r["split"] for p, r in first.items()
    }
    assert tree_snapshot(source) == before
    keras = pytest.importorskip("keras")
    dataset = keras.utils.image_dataset_from_directory(
        out1 / "train", image_size=(48, 64), batch_size=8, verbose=False
    )
    assert sorted(dataset.class_names) == ["birds", "cats", "dogs"]


def test_split_is_stable_when_images_are_added(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"a": 30, "b": 20})
    invoke("split", source, out, "--seed", "1", "-q")
    before = {p: r["split"] for p, r in read_manifest(out).items()}
    make_classes(source, {"a": 10, "b": 5}, start=1000)
    result = invoke("split", source, out, "--seed", "1", "--json")
    after = read_manifest(out)
    assert all(after[p]["split"] == split for p, split in before.items())
    assert len(after) == 65
    table = json.loads(result.stdout)["per_class"]
    for cls, total in {"a": 40, "b": 25}.items():
        for split, ratio in {"train": 0.8, "val": 0.1, "test": 0.1}.items():
            assert abs(table[cls][split] - total * ratio) <= 1


def test_duplicates_never_cross_splits(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"a": 40, "b": 40})
    originals = sorted((source / "a").glob("*.png"))[:12]
    for index, path in enumerate(originals):
        image = cvprep.read_image(path)
        if index % 3 == 0:  # exact copy under another name, even in the other class
            (source / "b" / f"copy_{index}.png").write_bytes(path.read_bytes())
        elif index % 3 == 1:  # resized and re-encoded as JPEG
            smaller = cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA)
            cvprep.write_image(source / "a" / f"small_{index}.jpg", smaller, quality=70)
        else:  # slightly brighter JPEG
            brighter = np.clip(image.astype(int) + 6, 0, 255).astype(np.uint8)
            cvprep.write_image(source / "a" / f"bright_{index}.jpg", brighter, quality=85)
    result = invoke("split", source, out, "--ratios", "0.5,0.25,0.25", "--seed", "2", "-w", "2")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    for index, path in enumerate(originals):
        copy = {0: f"b/copy_{index}.png", 1: f"a/small_{index}.jpg", 2: f"a/bright_{index}.jpg"}[
            index % 3
        ]
        original = f"a/{path.name}"
        assert manifest[copy]["split"] == manifest[original]["split"], copy
        assert manifest[copy]["group"] == manifest[original]["group"]
        assert "duplicate" in manifest[copy]["reason"]
    for split in ("train", "val", "test"):  # a group lives in one split only
        groups = {r["group"] for r in manifest.values() if r["split"] == split}
        others = {r["group"] for r in manifest.values() if r["split"] not in ("", split)}
        assert not groups & others


def test_split_group_regex_dry_run_and_rejects(tmp_path, messy):
    root, _ = messy
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"a": 20})
    for index in range(3):  # a burst of three different shots of one scene
        cvprep.write_image(source / "a" / f"burst42_{index}.png", smooth_image(900 + index))
    result = invoke("split", source, out, "--group", r"^(burst\d+)_", "--dry-run", "--json")
    assert result.exit_code == 0 and not out.exists()
    invoke("split", source, out, "--group", r"^(burst\d+)_", "-q")
    manifest = read_manifest(out)
    assert len({manifest[f"a/burst42_{i}.png"]["split"] for i in range(3)}) == 1
    result = invoke("split", root, tmp_path / "messy-split", "--json", "-w", "0")
    assert result.exit_code == 1
    assert len(json.loads(result.stdout)["rejected"]) == 10
    assert invoke("split", source, out, "--ratios", "0.5,0.6").exit_code == 2
    assert invoke("split", source, out, "--group", "(").exit_code == 2
    result = invoke("split", source, tmp_path / "x", "--min-per-split", "10")
    assert result.exit_code == 2 and "class 'a'" in result.output


def test_split_min_per_split_and_links(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"big": 40, "small": 6})
    result = invoke("split", source, out, "--min-per-split", "2", "--mode", "hardlink", "--json")
    table = json.loads(result.stdout)["per_class"]
    assert all(table["small"][s] >= 2 for s in ("train", "val", "test"))
    linked = next((out / "train" / "big").iterdir())
    assert linked.stat().st_nlink == 2
    invoke("split", source, tmp_path / "sym", "--mode", "symlink", "-q")
    assert next((tmp_path / "sym" / "train" / "big").iterdir()).is_symlink()


# ------------------------------------------------------------------ augment
def test_augment_only_touches_train(tmp_path):
    source, split, out = tmp_path / "in", tmp_path / "split", tmp_path / "aug"
    make_classes(source, {"a": 30, "b": 10})
    invoke("split", source, split, "--seed", "1", "-q")
    val_before = tree_snapshot(split / "val")
    test_before = tree_snapshot(split / "test")
    result = invoke(
        "augment",
        split,
        out,
        "--preset",
        "heavy",
        "--per-image",
        "2",
        "--seed",
        "5",
        "--json",
        "-w",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert tree_snapshot(out / "val") == val_before and tree_snapshot(out / "test") == test_before
    train_a = list((out / "train" / "a").iterdir())
    originals = [p for p in train_a if "_aug" not in p.name]
    assert len(train_a) == 3 * len(originals) == 3 * 24


def test_augment_balance_and_determinism(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 12, "b": 5})
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert (
        invoke(
            "augment", source, out1, "--balance", "--per-image", "0", "--seed", "9", "-w", "0", "-q"
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "augment", source, out2, "--balance", "--per-image", "0", "--seed", "9", "-w", "2", "-q"
        ).exit_code
        == 0
    )
    assert len(list((out1 / "a").iterdir())) == len(list((out1 / "b").iterdir())) == 12
    assert tree_snapshot(out1 / "b") == tree_snapshot(out2 / "b")


def test_augment_from_saved_pipeline_file(tmp_path):
    import albumentations as A

    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"a": 3})
    path = tmp_path / "flip.yaml"
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(path), data_format="yaml")
    assert invoke("augment", source, out, "--preset", path, "-w", "0", "-q").exit_code == 0
    original = cvprep.read_image(source / "a" / "a_0000.png")
    np.testing.assert_array_equal(
        cvprep.read_image(out / "a" / "a_0000_aug001.png"), original[:, ::-1]
    )
    result = invoke("augment", source, tmp_path / "o2", "--preset", "extreme")
    assert result.exit_code == 2 and "preset" in result.output
