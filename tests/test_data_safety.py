"""The data-safety defects of issue 15 found by probing the commands as a demanding user
would; each test here fails on the code before the fix. Faults (kills, read-only and full
disks) are in test_faults.py, property-based checks of every parameter in test_parameters.py.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cvprep
from cvprep import dataset
from cvprep.cli import cli
from cvprep.dataset.output import SettingsMismatchError
from cvprep.dataset.results import FileResult, Summary
from cvprep.errors import FileSystemError, ParameterError
from cvprep.files import TreeProblem
from tests.conftest import tree_snapshot
from tests.test_dataset_cli import make_classes, smooth_image


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def split_files(out: Path) -> dict[str, list[str]]:
    """Each input path (class/name) → the split folders holding a copy of it."""
    where: dict[str, list[str]] = {}
    for name in ("train", "val", "test"):
        for path in (out / name).rglob("*") if (out / name).is_dir() else []:
            if path.is_file():
                where.setdefault(str(path.relative_to(out / name)), []).append(name)
    return where


def assert_split_matches_input(source: Path, out: Path) -> None:
    """Every readable input once, in one split, with its current bytes; nothing else."""
    where = split_files(out)
    inputs = {str(p.relative_to(source)) for p in source.rglob("*.png")}
    assert set(where) == inputs
    assert all(len(splits) == 1 for splits in where.values()), where
    for path, (name,) in where.items():
        assert (out / name / path).read_bytes() == (source / path).read_bytes(), path
    assert not list(out.rglob("*.part"))


# ------------------------------------------------------------------ loss and leakage
def test_quarantine_never_overwrites_an_earlier_file(tmp_path):
    photos, quarantine = tmp_path / "in", tmp_path / "q"
    make_classes(photos, {"a": 2})
    (photos / "a" / "bad.jpg").write_bytes(b"first broken file")
    assert invoke("verify", photos, "--quarantine", quarantine, "-w", "0").exit_code == 1
    (photos / "a" / "bad.jpg").write_bytes(b"second broken file")
    result = invoke("verify", photos, "--quarantine", quarantine, "-w", "0")
    assert result.exit_code == 1
    assert (quarantine / "a" / "bad.jpg").read_bytes() == b"first broken file"
    assert (quarantine / "a" / "bad (1).jpg").read_bytes() == b"second broken file"
    assert "bad (1).jpg" in result.output and not (photos / "a" / "bad.jpg").exists()
    again = dataset.verify(photos, quarantine=quarantine, workers=0)
    assert again.ok and not again.quarantined


def test_reseeding_an_interrupted_split_is_refused_then_overwrite_never_leaks(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"cat": 30, "dog": 30})
    first = dataset.split(source, out, seed=3, workers=0)
    # What a run killed midway leaves: its record "in progress" and some copies only.
    record = json.loads((out / "cvprep.json").read_text())
    record["status"] = "in progress"
    (out / "cvprep.json").write_text(json.dumps(record))
    for item in first.items[::2]:
        (out / item.split / item.path).unlink()
    (out / "manifest.csv").unlink()
    with pytest.raises(SettingsMismatchError, match=r"seed=3.*seed=4.*--overwrite"):
        dataset.split(source, out, seed=4, workers=0)
    refused = invoke("split", source, out, "--seed", "4", "-w", "0")
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    with pytest.raises(SettingsMismatchError, match="ratios"):
        dataset.split(source, out, seed=3, ratios="0.6,0.2,0.2", workers=0)
    dataset.split(source, out, seed=4, overwrite=True, workers=0)
    assert_split_matches_input(source, out)
    resumed = dataset.split(source, out, seed=4, workers=0)  # same settings: nothing to do
    assert resumed.written == 0 and not resumed.removed and not resumed.replaced


def test_a_rerun_brings_the_split_in_line_with_changed_and_deleted_inputs(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"cat": 10, "dog": 10})
    first = dataset.split(source, out, seed=1, workers=0)
    changed, deleted = first.items[0], first.items[5]
    cvprep.write_image(source / changed.path, smooth_image(999))
    (source / deleted.path).unlink()
    result = invoke("split", source, out, "--seed", "1", "-w", "0")
    assert result.exit_code == 0, result.output
    assert_split_matches_input(source, out)
    deleted_copy = f"{deleted.split}/{deleted.path}"
    assert "its input was deleted" in result.output and deleted_copy in result.output
    assert changed.path in result.output
    manifest = {row["path"]: row for row in csv.DictReader((out / "manifest.csv").open())}
    assert deleted.path not in manifest


def test_excluding_files_later_removes_their_copies(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_classes(source, {"cat": 8, "dog": 8})
    first = dataset.split(source, out, seed=1, workers=0)
    victim = first.items[3]
    findings = tmp_path / "findings.csv"
    findings.write_text(f"path,issue\n{victim.path},blurry\n")
    again = dataset.split(source, out, seed=1, exclude=findings, workers=0)
    assert again.removed == {
        f"{victim.split}/{victim.path}": "excluded: blurry (listed in findings.csv)"
    }
    assert victim.path not in split_files(out)


def test_impossible_folds_and_ratios_are_refused(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cat": 10, "dog": 12})
    with pytest.raises(ParameterError, match="class 'cat' has 10 images, fewer than kfold=25"):
        dataset.split(source, tmp_path / "k", kfold=25, workers=0)
    assert not (tmp_path / "k").exists()
    with pytest.raises(ParameterError, match="no training image"):
        dataset.split(source, tmp_path / "r", ratios="1e-9,0.999999999,0", workers=0)
    for ratios in ("nan,0.5,0.5", "inf,0,0", "0.5,0.5,nan"):
        result = invoke("split", source, tmp_path / "n", "--ratios", ratios)
        assert (
            result.exit_code == 2 and "ratios" in result.output and "Traceback" not in result.output
        )


def test_split_lists_files_outside_class_folders(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cat": 4, "dog": 4})
    cvprep.write_image(source / "stray.png", smooth_image(5))
    result = dataset.split(source, tmp_path / "out", workers=0)
    assert (
        "stray.png" in result.rejected
        and "outside the class folders" in result.rejected["stray.png"]
    )
    assert not result.ok


def test_augment_lists_files_outside_class_folders(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cat": 3})
    cvprep.write_image(source / "stray.png", smooth_image(5))
    result = dataset.augment(source, tmp_path / "out", preset="light", workers=0)
    assert [r.path for r in result.rejected] == ["stray.png"]


# ------------------------------------------------------------------ guards
def test_a_huge_resize_is_a_usage_error_not_an_allocation(tmp_path):
    photo = tmp_path / "p.png"
    cvprep.write_image(photo, smooth_image(1))
    result = invoke("preview", photo, "--ops", "resize=100000x100000", "-o", tmp_path / "s.png")
    assert result.exit_code == 2 and "at most 100,000,000 pixels" in result.output


def test_nan_thresholds_are_refused(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cat": 3})
    result = invoke("inspect", source, "--threshold", "blurry=nan", "-w", "0")
    assert result.exit_code == 2 and "`blurry` should be a finite number" in result.output
    with pytest.raises(ParameterError, match="blurry"):
        dataset.inspect(source, thresholds={"blurry": float("inf")}, workers=0)


# ------------------------------------------------------------------ augment
@pytest.mark.parametrize("extension", [".gif", ".jfif", ".jpe", ".ppm"])
def test_augment_writes_formats_it_cannot_write_as_png(tmp_path, extension):
    import cv2

    source = tmp_path / "in"
    (source / "a").mkdir(parents=True)
    image = smooth_image(3)
    ok, encoded = cv2.imencode(".jpg" if extension in (".jfif", ".jpe") else extension, image)
    assert ok
    (source / "a" / f"x{extension}").write_bytes(encoded.tobytes())
    result = dataset.augment(source, tmp_path / "out", preset="light", workers=0)
    assert result.ok and (tmp_path / "out" / "a" / "x_aug001.png").is_file()
    assert (tmp_path / "out" / "a" / f"x{extension}").read_bytes() == encoded.tobytes()


def test_a_saved_pipeline_failing_on_one_image_rejects_only_that_image(tmp_path):
    import albumentations as A

    source = tmp_path / "in"
    cvprep.write_image(source / "a" / "big.png", smooth_image(1, (96, 96)))
    cvprep.write_image(source / "a" / "small.png", smooth_image(2, (40, 40)))
    crop = tmp_path / "crop.yaml"
    A.save(A.Compose([A.RandomCrop(64, 64)]), str(crop), data_format="yaml")
    result = dataset.augment(source, tmp_path / "out", preset=crop, workers=0)
    assert [(r.path, r.kind) for r in result.rejected] == [("a/small.png", "unprocessable")]
    assert result.per_class == {"a": {"originals": 1, "augmented": 1}}
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == [
        "big.png",
        "big_aug001.png",
    ]


def test_a_pipeline_that_does_not_output_images_is_refused(tmp_path):
    import albumentations as A

    source = tmp_path / "in"
    make_classes(source, {"a": 2})
    normalize = tmp_path / "normalize.json"
    A.save(A.Compose([A.Normalize()]), str(normalize))
    result = invoke("augment", source, tmp_path / "out", "--preset", normalize, "-w", "0")
    assert result.exit_code == 2 and "Normalize" in result.output
    assert not (tmp_path / "out").exists()


def test_augment_counts_what_the_output_holds(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 5})
    for index in range(3):
        (source / "a" / f"broken{index}.png").write_bytes(b"not an image")
    result = invoke("augment", source, tmp_path / "out", "--preset", "light", "-w", "0", "--json")
    counts = json.loads(result.output)["per_class"]["a"]
    files = sorted(p.name for p in (tmp_path / "out" / "a").iterdir())
    assert counts == {"originals": 5, "augmented": 5}
    assert len(files) == 10 and not any("broken" in name for name in files)


def test_augmenting_an_augmented_folder_never_collides(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 3})
    once = dataset.augment(source, tmp_path / "once", preset="light", workers=0)
    twice = dataset.augment(tmp_path / "once", tmp_path / "twice", preset="light", workers=0)
    files = list((tmp_path / "twice" / "a").iterdir())
    assert once.per_class["a"] == {"originals": 3, "augmented": 3}
    assert twice.per_class["a"] == {"originals": 6, "augmented": 6} and len(files) == 12
    for original in (tmp_path / "once" / "a").iterdir():  # every input copied unchanged
        assert (tmp_path / "twice" / "a" / original.name).read_bytes() == original.read_bytes()


def test_augment_and_preprocess_follow_changed_and_deleted_inputs(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 4})
    dataset.augment(source, tmp_path / "aug", preset="light", workers=0)
    dataset.preprocess(source, tmp_path / "prep", "resize=16x16", workers=0)
    cvprep.write_image(source / "a" / "a_0000.png", smooth_image(77))
    (source / "a" / "a_0001.png").unlink()
    augmented = dataset.augment(source, tmp_path / "aug", preset="light", workers=0)
    prepped = dataset.preprocess(source, tmp_path / "prep", "resize=16x16", workers=0)
    assert augmented.removed == ["a/a_0001.png", "a/a_0001_aug001.png"]
    assert prepped.removed == ["a/a_0001.png"]
    assert prepped.summary.total == {"ok": 1, "skipped": 2, "rejected": 0}
    assert (tmp_path / "aug" / "a" / "a_0000.png").read_bytes() == (
        source / "a" / "a_0000.png"
    ).read_bytes()
    expected = cvprep.ops.resize(cvprep.read_image(source / "a" / "a_0000.png"), (16, 16))
    np.testing.assert_array_equal(
        cvprep.read_image(tmp_path / "prep" / "a" / "a_0000.png"), expected
    )


def test_preprocess_refuses_an_output_of_another_source(tmp_path):
    make_classes(tmp_path / "one", {"a": 2})
    make_classes(tmp_path / "two", {"b": 2})
    dataset.preprocess(tmp_path / "one", tmp_path / "out", "resize=16x16", workers=0)
    with pytest.raises(SettingsMismatchError, match="preprocessed images of"):
        dataset.preprocess(tmp_path / "two", tmp_path / "out", "resize=16x16", workers=0)


# ------------------------------------------------------------------ silently wrong
@pytest.mark.parametrize("shape", [(1, 9), (9, 1)])
def test_one_pixel_wide_pngs_are_split_and_fast_decoded(tmp_path, shape):
    source = tmp_path / "in"
    for index in range(4):
        cvprep.write_image(
            source / "a" / f"{index}.png", np.full((*shape, 3), index * 40, np.uint8)
        )
    assert dataset.verify(source, workers=0).ok
    assert dataset.split(source, tmp_path / "out", ratios="0.5,0.5", workers=0).ok
    prepped = dataset.preprocess(source, tmp_path / "p", "grayscale", fast_decode=2, workers=0)
    assert prepped.ok and prepped.summary.total["ok"] == 4


def test_written_files_are_readable_by_others_under_the_usual_umask(tmp_path):
    previous = os.umask(0o022)
    cvprep.io._umask.cache_clear()
    try:
        source = tmp_path / "in"
        make_classes(source, {"a": 2, "b": 2})
        dataset.split(source, tmp_path / "split", workers=0)
        dataset.preprocess(source, tmp_path / "prep", "resize=16x16", workers=0)
        dataset.augment(source, tmp_path / "aug", preset="light", workers=0)
    finally:
        os.umask(previous)
        cvprep.io._umask.cache_clear()
    for folder in ("split", "prep", "aug"):
        for path in (tmp_path / folder).rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_an_unreadable_folder_is_counted_under_its_class():
    summary = Summary()
    summary.add(FileResult.from_problem(TreeProblem("cat", "unreadable", "cannot list folder")))
    summary.add(FileResult("dog/x.png", "ok"))
    summary.add(FileResult("top.png", "rejected", "empty", "file is empty"))
    assert set(summary.per_class) == {"cat", "dog", "."}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_folder_in_verify_is_listed_under_its_class(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"cat": 2, "dog": 2})
    (source / "cat").chmod(0)
    try:
        result = dataset.verify(source, quarantine=tmp_path / "q", workers=0)
    finally:
        (source / "cat").chmod(0o755)
    assert result.summary.per_class["cat"]["rejected"] == 1 and not result.not_moved


def test_the_python_api_refuses_missing_folders_and_bad_arguments(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 2, "b": 2})
    with pytest.raises(ParameterError, match="no such folder"):
        dataset.verify("/nonexistent")
    with pytest.raises(ParameterError, match="no such folder"):
        dataset.preprocess("/nonexistent", tmp_path / "out", "grayscale")
    assert not (tmp_path / "out").exists()
    bad = [
        (dataset.verify, {"workers": "2"}, "workers"),
        (dataset.verify, {"workers": 2.5}, "workers"),
        (dataset.verify, {"max_pixels": 0}, "max_pixels"),
        (dataset.inspect, {"workers": -1}, "workers"),
        (dataset.preprocess, {"ops": "grayscale", "quality": "90"}, "quality"),
        (dataset.preprocess, {"ops": "grayscale", "fast_decode": 3}, "fast_decode"),
        (dataset.split, {"seed": "abc"}, "seed"),
        (dataset.split, {"seed": -1}, "seed"),
        (dataset.split, {"min_per_split": -1}, "min_per_split"),
        (dataset.split, {"near_threshold": 12}, "near_threshold"),
        (dataset.split, {"kfold": 2.0}, "kfold"),
        (dataset.augment, {"per_image": True}, "per_image"),
        (dataset.augment, {"seed": 2**32}, "seed"),
    ]
    for function, options, name in bad:
        needs_output = function in (dataset.preprocess, dataset.split, dataset.augment)
        args = (source, tmp_path / "never") if needs_output else (source,)
        with pytest.raises(ParameterError, match=f"`{name}`"):
            function(*args, **options)
    assert not (tmp_path / "never").exists()


def test_filesystem_errors_name_the_path_in_one_line(tmp_path):
    source = tmp_path / "in"
    make_classes(source, {"a": 2})
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    before = tree_snapshot(source)
    with pytest.raises(FileSystemError, match=str(afile)):
        dataset.preprocess(source, afile / "sub", "grayscale", workers=0)
    for args in (
        ("preprocess", source, afile / "sub", "--ops", "grayscale"),
        ("verify", source, "--report", afile / "r.csv"),
        ("split", source, afile / "out"),
        ("augment", source, afile / "out"),
        ("inspect", source, "--report", afile / "f.csv"),
    ):
        result = invoke(*args, "-w", "0", "-q")
        assert result.exit_code == 1, (args, result.output)
        assert result.output.count("\n") == 1 and str(afile) in result.output, result.output
        assert "Not a directory" in result.output
    assert tree_snapshot(source) == before
