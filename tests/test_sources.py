"""Sources: every dataset job reads class folders, split folders, a flat folder labelled by
file names, a label table, an archive of any of these, or an .npz of arrays — and gives the
same result on the same images whatever the source. Bad input is listed with its reason."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cvprep
from cvprep import dataset
from cvprep.cli import cli
from cvprep.dataset.arrays import encode_png
from cvprep.dataset.output import SettingsMismatchError
from cvprep.dataset.sources import open_source
from cvprep.errors import CvprepError, ParameterError
from tests.test_dataset_cli import smooth_image

PER_CLASS = 6


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def png(seed: int, size: tuple[int, int] = (24, 32)) -> bytes:
    return encode_png(smooth_image(seed, size))


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """cat.0.png … dog.5.png: distinct small pictures."""
    return {
        f"{cls}.{i}.png": png(offset + i)
        for cls, offset in (("cat", 0), ("dog", 500))
        for i in range(PER_CLASS)
    }


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def zipped(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def tarred(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return path


def make_source(kind: str, root: Path, pictures: dict[str, bytes]) -> tuple[Path, dict]:
    """The same pictures as one kind of source: (source, keyword arguments)."""
    classes = {f"{n.split('.')[0]}/{n}": data for n, data in pictures.items()}
    flat = {f"train/{n}": data for n, data in pictures.items()}
    table = "id,label\n" + "".join(f"{n[:-4]},{n.split('.')[0]}\n" for n in pictures)
    if kind == "folders":
        return write(root / "classes", classes), {}
    if kind == "flat":
        return write(root / "flat", pictures), {"labels": "name"}
    if kind == "table":  # ids without their extension, the table outside the folder
        (root / "labels.csv").write_text(table)
        return write(root / "flat", pictures), {"labels": str(root / "labels.csv")}
    if kind == "table in archive":  # Kaggle's layout: labels.csv beside train/
        files = {**flat, "labels.csv": table.encode()}
        return zipped(root / "dogs.zip", files), {"labels": "labels.csv", "images": "train"}
    if kind == "zip":
        return zipped(root / "train.zip", flat), {"labels": "name"}
    if kind == "stored zip":
        return zipped(root / "train.zip", flat, zipfile.ZIP_STORED), {"labels": "name"}
    if kind == "tar":
        return tarred(root / "train.tar", flat, "w"), {"labels": "name"}
    if kind == "tar.gz":
        return tarred(root / "train.tar.gz", flat), {"labels": "name"}
    if kind == "zipped folders":
        return zipped(root / "photos.zip", {f"photos/{n}": d for n, d in classes.items()}), {}
    raise AssertionError(kind)


KINDS = ["flat", "table", "table in archive", "zip", "stored zip", "tar", "tar.gz"]
KINDS += ["zipped folders"]


def tree(root: Path) -> dict[str, str]:
    """Every output file (not the run record or manifest) with the digest of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("cvprep.json", "manifest.csv", ".cvprep.lock")
    }


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


# ------------------------------------------------------------------ the same result
@pytest.fixture(scope="module")
def reference(tmp_path_factory, pictures) -> dict[str, object]:
    """Every job on the pictures in class folders."""
    root = tmp_path_factory.mktemp("reference")
    source, _ = make_source("folders", root, pictures)
    return run_jobs(source, {}, root)


def run_jobs(source: Path, options: dict, root: Path, workers: int = 0) -> dict[str, object]:
    names = {f.name: f.relative for f in open_source(source, **options).files}
    verified = dataset.verify(source, **options, workers=workers)
    audit = dataset.inspect(source, **options, workers=workers)
    split = dataset.split(source, root / "data", **options, seed=5, workers=workers)
    dataset.preprocess(
        source, root / "prep", "resize=16x16,gaussian_blur=3", **options, workers=workers
    )
    augmented = dataset.augment(
        source, root / "aug", **options, preset="light", per_image=1, workers=workers
    )
    return {
        "verify": sorted(
            (names[r.path], r.status, r.width, r.height, r.cls) for r in verified.results
        ),
        "inspect": sorted((names[f.path], f.issue, round(f.score, 6)) for f in audit.findings),
        "split": {names[i.path]: i.split for i in split.items},
        "rows": split.rows,
        "data": tree(root / "data"),
        "prep": tree(root / "prep"),
        "aug": tree(root / "aug"),
        "counts": augmented.per_class,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_job_gives_the_same_result_whatever_the_source(kind, pictures, reference, tmp_path):
    source, options = make_source(kind, tmp_path, pictures)
    before = snapshot(source)
    assert run_jobs(source, options, tmp_path) == reference
    assert snapshot(source) == before  # archives included: never modified, not even touched


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_worker_processes_read_archives_the_same(kind, pictures, reference, tmp_path):
    source, options = make_source(kind, tmp_path, pictures)
    assert run_jobs(source, options, tmp_path, workers=2) == reference


def test_the_split_is_the_same_for_every_seed_and_source(pictures, tmp_path):
    flat, _ = make_source("flat", tmp_path, pictures)
    archive, _ = make_source("tar.gz", tmp_path, pictures)
    for seed in (1, 2):
        a = dataset.split(flat, tmp_path / f"a{seed}", labels="name", seed=seed, workers=0)
        b = dataset.split(archive, tmp_path / f"b{seed}", labels="name", seed=seed, workers=0)
        assert [i.split for i in a.items] == [i.split for i in b.items]
        assert tree(tmp_path / f"a{seed}") == tree(tmp_path / f"b{seed}")
        assert {p.split("/")[0] for p in tree(tmp_path / f"a{seed}")} == {"train", "val"}


def test_names_say_where_a_file_is_in_the_source(pictures, tmp_path):
    source, options = make_source("table in archive", tmp_path, pictures)
    result = dataset.split(source, tmp_path / "data", **options, workers=0)
    manifest = (tmp_path / "data" / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,class,split,sha256,phash,group,reason,file"
    assert any(line.startswith("dogs.zip:train/cat.0.png,cat,") for line in manifest)
    assert {i.path for i in result.items} == {f"dogs.zip:train/{n}" for n in pictures}
    assert {"train", "val"} <= {p.name for p in (tmp_path / "data").iterdir()}
    assert (tmp_path / "data" / "train" / "cat").is_dir()


# ------------------------------------------------------------------ labels from names
@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("cat.0.jpg", "cat"),
        ("dog_12.png", "dog"),
        ("Abyssinian_3.jpg", "Abyssinian"),
        ("great_pyrenees_12.jpg", "great_pyrenees"),
        ("cat.12", "cat"),
        ("red panda 7.webp", "red panda"),
        ("1.jpg", None),
        ("cat.jpg", None),
        ("_12.jpg", None),
    ],
)
def test_the_class_is_the_name_up_to_the_separator_before_a_trailing_number(name, cls, tmp_path):
    write(tmp_path / "in", {name: b"", "zzz_1.png": b""})
    source = open_source(tmp_path / "in", labels="name")
    found = {f.name: f.cls for f in source.files}
    problems = {p.name: p.kind for p in source.problems}
    assert found.get(name) == cls
    assert (name in problems) == (cls is None) and problems.get(name, "no_label") == "no_label"


def test_a_regular_expression_takes_its_first_group(tmp_path):
    write(tmp_path / "in", {"img-cat-001.png": png(1), "img-dog-002.png": png(2), "x.png": b""})
    source = open_source(tmp_path / "in", labels=r"name:^img-([a-z]+)-")
    assert [(f.cls, f.relative) for f in source.files] == [
        ("cat", "cat/img-cat-001.png"),
        ("dog", "dog/img-dog-002.png"),
    ]
    assert [(p.name, p.kind) for p in source.problems] == [("x.png", "no_label")]


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ("name:^img", "with a group"),
        ("name:([", "valid regex"),
        ("name:^(zebra)_", "matches none of the 2 file names"),
        ("missing.csv", "existing CSV/TSV label table"),
        ("labels.csv:id,id", "two columns"),
    ],
)
def test_bad_labels_are_usage_errors(labels, words, tmp_path):
    write(tmp_path / "in", {"cat.1.png": png(1), "dog.2.png": png(2)})
    with pytest.raises(ParameterError, match="`labels`"):
        open_source(tmp_path / "in", labels=labels)
    result = invoke("verify", tmp_path / "in", "--labels", labels)
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output


def test_a_flat_folder_without_labels_says_how_to_split_it(pictures, tmp_path):
    source, _ = make_source("flat", tmp_path, pictures)
    result = invoke("split", source, tmp_path / "data")
    assert result.exit_code == 1 and "--labels name" in result.output


# ------------------------------------------------------------------ label tables
@pytest.mark.parametrize(
    ("table", "spec"),
    [
        ("id,breed\n{stem},{label}\n", "labels.csv"),  # ids without extension
        ("ID,Label\n{name},{label}\n", "labels.csv"),  # with it, case-insensitive header
        ("image_id\tcategory\n{stem}\t{label}\n", "labels.tsv"),  # TSV
        ("id,has_cactus\n{name},{label}\n", "labels.csv"),  # two columns, one known
        ("n,picture,kind\n1,{name},{label}\n", "labels.csv:picture,kind"),  # columns named
        ('"filename";"class"\n"{name}";"{label}"\n', "labels.csv"),  # quoted, semicolons
    ],
)
def test_label_tables_in_their_common_forms(table, spec, tmp_path):
    files = {f"{label}{i}.png": png(i + 10 * (label == "b")) for label in "ab" for i in range(3)}
    rows = [table.split("\n", 1)[0]] + [
        table.split("\n", 1)[1].rstrip("\n").format(name=n, stem=n[:-4], label=n[0]) for n in files
    ]
    name = spec.split(":")[0]
    write(tmp_path / "in", {**files, name: ("\n".join(rows) + "\n").encode()})
    source = open_source(tmp_path / "in", labels=spec)
    assert not source.problems, source.problems
    assert sorted((f.name, f.cls) for f in source.files) == sorted((n, n[0]) for n in files)


def test_every_bad_row_and_unnamed_image_is_listed_with_its_reason(tmp_path):
    files = {f"img/{n}.jpg": png(i) for i, n in enumerate("abcdefgh")}
    files["img/h.png"] = png(99)  # "h" could be h.jpg or h.png
    table = (
        "id,label\n"  # line 1
        "a,cat\n"  # 2: fine
        "b,cat\n"  # 3: fine
        "b.jpg,cat\n"  # 4: the same file again, same label
        "c,cat\n"  # 5: the same file labelled twice, differently ...
        "c,dog\n"  # 6: ... so neither row is used
        "zebra,dog\n"  # 7: no such file
        "d,\n"  # 8: empty label
        "e,a/b\n"  # 9: a label that cannot be a folder name
        "../secret,dog\n"  # 10: outside the images folder
        "h,dog\n"  # 11: ambiguous
        "f,dog\n"  # 12: fine
    )  # g.jpg: named by no row
    write(tmp_path / "in", {**files, "labels.csv": table.encode()})
    source = open_source(tmp_path / "in", labels="labels.csv", images="img")
    assert sorted((f.name, f.cls) for f in source.files) == [
        ("img/a.jpg", "cat"),
        ("img/b.jpg", "cat"),
        ("img/f.jpg", "dog"),
    ]
    problems = {p.name: p.kind for p in source.problems}
    assert problems == {
        "labels.csv:4": "duplicate_row",
        "labels.csv:5": "label_conflict",
        "labels.csv:6": "label_conflict",
        "labels.csv:7": "missing_file",
        "labels.csv:8": "no_label",
        "labels.csv:9": "bad_label",
        "labels.csv:10": "unsafe_path",
        "labels.csv:11": "ambiguous_file",
        "img/g.jpg": "unlabelled",
        "img/h.jpg": "unlabelled",
        "img/h.png": "unlabelled",
    }
    result = invoke("verify", tmp_path / "in", "--labels", "labels.csv", "--images", "img")
    assert result.exit_code == 1
    assert "labels.csv:6: [label_conflict] img/c.jpg is labelled 'dog' here and 'cat'" in (
        result.output
    )
    assert "labels.csv:7: [missing_file] no file 'zebra'" in result.output


def test_a_table_naming_no_file_is_a_usage_error(tmp_path):
    write(tmp_path / "in", {"train/a.png": png(1), "labels.csv": b"id,label\na,cat\n"})
    with pytest.raises(ParameterError, match="--images DIR"):
        open_source(tmp_path / "in", labels="labels.csv")
    assert open_source(tmp_path / "in", labels="labels.csv", images="train").files
    with pytest.raises(ParameterError, match="cannot tell the file and label columns"):
        write(tmp_path / "in", {"t.csv": b"a,b,c\n1,2,3\n"})
        open_source(tmp_path / "in", labels="t.csv")
    with pytest.raises(ParameterError, match="`images`"):
        open_source(tmp_path / "in", labels="name", images="train")


# ------------------------------------------------------------------ archives
def test_two_members_with_one_output_name_are_a_collision_naming_both(tmp_path):
    archive = zipped(tmp_path / "x.zip", {"a/cat.1.png": png(1), "b/cat.1.png": png(2)})
    source = open_source(archive, labels="name")
    assert [f.name for f in source.files] == ["x.zip:a/cat.1.png"]
    (problem,) = source.problems
    assert (problem.name, problem.kind) == ("x.zip:b/cat.1.png", "name_collision")
    assert "x.zip:a/cat.1.png" in problem.reason


def test_members_outside_the_archive_are_never_read_or_written(tmp_path):
    files = {f"cat.{i}.png": png(i) for i in range(3)} | {
        f"dog.{i}.png": png(9 + i) for i in range(3)
    }
    files |= {"../cat.9.png": png(50), "/tmp/dog.9.png": png(51), "a/../../dog.8.png": png(52)}
    for archive in (zipped(tmp_path / "evil.zip", files), tarred(tmp_path / "evil.tar", files)):
        out = tmp_path / f"out-{archive.suffix}"
        result = dataset.split(archive, out, labels="name", workers=0)
        assert sorted(result.rejected) == sorted(
            f"{archive.name}:{n}" for n in ("../cat.9.png", "/tmp/dog.9.png", "a/../../dog.8.png")
        )
        assert all(reason.startswith("unsafe_path") for reason in result.rejected.values())
        written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
        assert len(written) == 6 and not any(".." in p or "9" in p for p in written)
    assert not (tmp_path.parent / "cat.9.png").exists() and not Path("/tmp/dog.9.png").exists()


def test_a_corrupt_member_is_rejected_and_the_rest_processed(pictures, tmp_path):
    archive, options = make_source("stored zip", tmp_path, pictures)
    data = bytearray(archive.read_bytes())
    start = data.index(pictures["dog.3.png"])  # stored: the member's bytes are in the file
    data[start + 200] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = dataset.verify(archive, **options, workers=0)
    assert [(r.path, r.kind) for r in result.rejected] == [
        ("train.zip:train/dog.3.png", "unreadable")
    ]
    assert "corrupt archive member" in result.rejected[0].reason
    assert result.summary.total["ok"] == 2 * PER_CLASS - 1


@pytest.mark.parametrize("damage", ["truncated zip", "truncated tar.gz", "not an archive"])
def test_a_damaged_archive_is_one_clear_error(damage, pictures, tmp_path):
    kind = "tar.gz" if "tar" in damage else "zip"
    archive, options = make_source(kind, tmp_path, pictures)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if "truncated" in damage else b"hello" * 100)
    with pytest.raises(CvprepError, match=archive.name):
        open_source(archive, **options)
    result = invoke("verify", archive, "--labels", "name")
    assert (
        result.exit_code == 1
        and result.output.startswith("Error: ")
        and "Traceback" not in (result.output)
    )
    assert len(result.output.strip().splitlines()) == 1


def test_links_and_moves_need_files_of_their_own(pictures, tmp_path):
    archive, _ = make_source("zip", tmp_path, pictures)
    for mode in ("hardlink", "symlink"):
        result = invoke("split", archive, tmp_path / "data", "--labels", "name", "--mode", mode)
        assert result.exit_code == 2 and "use mode copy" in result.output
    result = invoke("verify", archive, "--labels", "name", "--quarantine", tmp_path / "q")
    assert result.exit_code == 2 and "`quarantine`" in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "q").exists()
    flat, _ = make_source("flat", tmp_path, pictures)  # a flat folder's files can be linked
    dataset.split(flat, tmp_path / "links", labels="name", mode="hardlink", workers=0)
    linked = next((tmp_path / "links" / "train" / "cat").iterdir())
    assert linked.stat().st_ino == (flat / linked.name).stat().st_ino


def test_an_archive_member_changed_later_is_processed_again(pictures, tmp_path):
    archive, options = make_source("zip", tmp_path, pictures)
    first = dataset.preprocess(archive, tmp_path / "prep", "grayscale", **options, workers=0)
    assert first.summary.total["ok"] == 2 * PER_CLASS
    again = dataset.preprocess(archive, tmp_path / "prep", "grayscale", **options, workers=0)
    assert again.summary.total == {"ok": 0, "skipped": 2 * PER_CLASS, "rejected": 0}
    changed = dict(pictures, **{"cat.2.png": png(777)})
    make_source("zip", tmp_path, changed)  # rewritten in the same second
    third = dataset.preprocess(archive, tmp_path / "prep", "grayscale", **options, workers=0)
    assert third.summary.total == {"ok": 1, "skipped": 2 * PER_CLASS - 1, "rejected": 0}


def test_another_choice_of_labels_never_mixes_into_an_output(pictures, tmp_path):
    source, _ = make_source("flat", tmp_path, pictures)
    dataset.split(source, tmp_path / "data", labels="name", workers=0)
    with pytest.raises(SettingsMismatchError, match="labels"):
        dataset.split(source, tmp_path / "data", labels=r"name:^(\w+)\.", workers=0)
    dataset.preprocess(source, tmp_path / "prep", "grayscale", labels="name", workers=0)
    with pytest.raises(SettingsMismatchError, match="labels"):
        dataset.preprocess(source, tmp_path / "prep", "grayscale", labels="name:^(c)", workers=0)


def test_an_inspect_report_shows_archive_members(pictures, tmp_path):
    files = dict(pictures, **{"cat.99.png": pictures["dog.1.png"]})  # a mislabeled copy
    archive = zipped(tmp_path / "train.zip", {f"train/{n}": d for n, d in files.items()})
    result = dataset.inspect(archive, labels="name", html=tmp_path / "audit.html", workers=0)
    assert ("train.zip:train/cat.99.png", "label_conflict") in {
        (f.path, f.issue) for f in result.findings
    }
    page = (tmp_path / "audit.html").read_text()
    assert "train.zip:train/cat.99.png" in page and "missing" not in page.split("<h2")[1]
    assert len(list((tmp_path / "audit_files").glob("*.jpg"))) >= 2


# ------------------------------------------------------------------ split folders
def test_split_folders_keep_their_held_out_splits(pictures, tmp_path):
    files = {}
    for name, data in pictures.items():
        index = int(name.split(".")[1])
        folder = "Validation" if index == 0 else "testing" if index == 1 else "train"
        files[f"{folder}/{name.split('.')[0]}/{name}"] = data
    source = write(tmp_path / "in", files)
    verified = dataset.verify(source, workers=0)
    assert set(verified.summary.per_class) == {"cat", "dog"}  # not train/val/test
    result = dataset.split(source, tmp_path / "data", seed=2, workers=0)
    assert result.names == ("train", "val", "test")
    for item in result.items:
        index = int(item.path.rsplit(".", 2)[1])
        assert item.split == {0: "val", 1: "test"}.get(index, "train"), item
    # Only test/ given: val is carved out of train (ratios 0.8:0.1 rescaled).
    source = write(
        tmp_path / "in2", {k.replace("Validation", "train"): v for k, v in files.items()}
    )
    result = dataset.split(source, tmp_path / "data2", ratios="0.6,0.2,0.2", seed=2, workers=0)
    for cls in ("cat", "dog"):
        assert result.rows[cls] == {"train": 4, "val": 1, "test": 1, "rejected": 0, "excluded": 0}
    assert sorted(p.name for p in (tmp_path / "data2" / "test" / "cat").iterdir()) == ["cat.1.png"]


def test_a_copy_of_a_held_out_picture_is_left_out_of_train(pictures, tmp_path):
    files = {f"train/{n.split('.')[0]}/{n}": d for n, d in pictures.items()}
    files["test/cat/copy.png"] = pictures["cat.4.png"]
    result = dataset.split(write(tmp_path / "in", files), tmp_path / "data", workers=0)
    excluded = result.to_dict()["excluded"]
    assert list(excluded) == ["train/cat/cat.4.png"] and "test/" in excluded["train/cat/cat.4.png"]
    assert not (tmp_path / "data" / "train" / "cat" / "cat.4.png").exists()
    assert (tmp_path / "data" / "test" / "cat" / "copy.png").exists()


# ------------------------------------------------------------------ arrays
def test_from_arrays_writes_lossless_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 7, 6), dtype=np.uint8)
    result = dataset.from_arrays(x, [2, 0, 2, 1, 0], tmp_path / "out", class_names=["a", "b", "c"])
    assert result.counts == {"a": {"images": 2}, "b": {"images": 1}, "c": {"images": 2}}
    for index, cls in enumerate("cacba"):
        np.testing.assert_array_equal(
            cvprep.read_image(tmp_path / "out" / cls / f"{index}.png", mode="grayscale"), x[index]
        )
    again = dataset.from_arrays(x, [2, 0, 2, 1, 0], tmp_path / "out", class_names=["a", "b", "c"])
    assert (again.written, again.skipped) == (0, 5)
    with pytest.raises(SettingsMismatchError):
        dataset.from_arrays(x[:4], [2, 0, 2, 1], tmp_path / "out", class_names=["a", "b", "c"])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SettingsMismatchError, match="no cvprep run record"):
        dataset.from_arrays(x, [0] * 5, tmp_path / "foreign")


def test_from_arrays_takes_what_load_data_returns(tmp_path):
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, (12, 1)))
    test = (rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), np.array([[3], [3], [9]]))
    dataset.from_arrays(train, test, tmp_path / "cifar")  # CIFAR-10's shapes: labels N×1
    written = sorted(
        p.relative_to(tmp_path / "cifar").as_posix() for p in (tmp_path / "cifar").rglob("*.png")
    )
    assert len(written) == 15 and "test/9/2.png" in written
    image = cvprep.read_image(tmp_path / "cifar" / "test" / "9" / "2.png")
    np.testing.assert_array_equal(image, test[0][2])


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (np.zeros((2, 3, 8, 8), np.uint8), [0, 1], "channels-first"),
        (np.zeros((2, 8), np.uint8), [0, 1], "N×H×W"),
        (np.zeros((2, 8, 8), np.uint8), [0], "one label per image"),
        (np.zeros((2, 8, 8), np.uint8), [[1, 0], [0, 1]], "one-hot"),
        (np.zeros((2, 8, 8), np.uint8), [0.0, 1.0], "integer class numbers"),
        (np.zeros((2, 8, 8), np.uint8), [0, -1], "negative"),
        (np.full((2, 8, 8), 0.5), [0, 1], "black images"),
        (np.full((2, 8, 8), 300.0), [0, 1], "[0, 255]"),
        (np.full((2, 8, 8), np.nan), [0, 1], "NaN"),
        (np.full((2, 8, 8), 999, np.int32), [0, 1], "8 bits"),
        (np.zeros((2, 8, 8), bool), [0, 1], "`x`"),
    ],
)
def test_from_arrays_refuses_what_it_cannot_write_faithfully(x, y, words, tmp_path):
    with pytest.raises(ParameterError, match=words.replace("[", r"\[")):
        dataset.from_arrays(x, y, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_from_arrays_class_names_and_value_rules(tmp_path):
    x = np.full((3, 4, 4), 127.6)
    result = dataset.from_arrays(x, ["zebra", "ant", "ant"], tmp_path / "out")
    assert result.counts == {"ant": {"images": 2}, "zebra": {"images": 1}}
    assert cvprep.read_image(tmp_path / "out" / "ant" / "1.png", mode="grayscale")[0, 0] == 128
    with pytest.raises(ParameterError, match="labels go up to 2"):
        dataset.from_arrays(
            np.zeros((3, 4, 4), np.uint8), [0, 1, 2], tmp_path / "o", class_names=["a", "b"]
        )
    with pytest.raises(ParameterError, match="names a class twice"):
        dataset.from_arrays(
            np.zeros((2, 4, 4), np.uint8), [0, 1], tmp_path / "o", class_names=["a", "a"]
        )
    with pytest.raises(ParameterError, match="folder name"):
        dataset.from_arrays(
            np.zeros((2, 4, 4), np.uint8), [0, 1], tmp_path / "o", class_names=["a", "../b"]
        )


def test_an_npz_splits_like_the_folders_from_arrays_writes(tmp_path):
    rng = np.random.default_rng(2)
    x = np.stack([cvprep.ops.resize(smooth_image(i), (20, 20)) for i in range(40)])
    y = np.arange(40) % 2
    names = np.array(["cat", "dog"])
    np.savez(
        tmp_path / "pets.npz",
        x_train=x[:32],
        y_train=y[:32],
        x_test=x[32:],
        y_test=y[32:],
        class_names=names,
    )
    dataset.from_arrays(
        (x[:32], y[:32]), (x[32:], y[32:]), tmp_path / "folders", class_names=["cat", "dog"]
    )
    a = dataset.split(tmp_path / "pets.npz", tmp_path / "a", seed=4, workers=0)
    b = dataset.split(tmp_path / "folders", tmp_path / "b", seed=4, workers=0)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert (
        a.rows
        == b.rows
        == {
            cls: {"train": 14, "val": 2, "test": 4, "rejected": 0, "excluded": 0}
            for cls in ("cat", "dog")
        }
    )
    assert "pets.npz:x_test[3]" in {i.path for i in a.items if i.split == "test"}
    del rng


def test_an_npz_in_another_layout_is_a_usage_error(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4), np.uint8))
    result = invoke("verify", tmp_path / "bad.npz")
    assert result.exit_code == 2 and "keras.datasets' layout" in result.output
    with pytest.raises(ParameterError, match="`labels`"):
        open_source(tmp_path / "bad.npz", labels="name")


# ------------------------------------------------------------------ the whole workflow
@pytest.mark.parametrize("kind", ["zip", "table"])
def test_a_split_is_the_layout_training_reads(kind, pictures, tmp_path):
    # Training itself never sees the source (tests/test_training.py trains on split output);
    # the README reports a real run of split then train on a zip of the dev photos.
    from cvprep.training.data import discover

    source, options = make_source(kind, tmp_path, pictures)
    labels = ["--labels", options["labels"]]
    result = invoke("split", source, tmp_path / "data", *labels, "--ratios", "0.5,0.25,0.25")
    assert result.exit_code == 0, result.output
    classes, splits = discover(tmp_path / "data")
    assert classes == ["cat", "dog"]
    assert {name: len(split) for name, split in splits.items()} == {"train": 6, "val": 4, "test": 2}


# ------------------------------------------------------------------ found in review
def test_quarantine_moves_only_files_that_do_not_decode(pictures, tmp_path):
    source = write(tmp_path / "flat", pictures)
    (source / "cat.99.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = sorted(p.name for p in source.iterdir())
    result = dataset.verify(source, labels=r"name:^(cat)\.", quarantine=tmp_path / "q", workers=0)
    assert {r.kind for r in result.results if r.status == "rejected"} >= {"no_label"}
    assert [p.name for p in result.quarantined] == ["cat.99.png"]  # the dogs stay
    assert sorted(p.name for p in source.iterdir()) == sorted(set(before) - {"cat.99.png"})


def test_a_tar_whose_last_member_is_a_zip_is_read_as_a_tar(pictures, tmp_path):
    inner = zipped(tmp_path / "extras.zip", {"cat/x.png": png(900)}).read_bytes()
    files = {f"{n.split('.')[0]}/{n}": data for n, data in pictures.items()}
    source = open_source(tarred(tmp_path / "photos.tar", {**files, "zz.zip": inner}, "w"))
    assert source.kind == "tar"
    expected = sorted(f"photos.tar:{n}" for n in [*files, "zz.zip"])  # zz.zip: not an image
    assert sorted(f.name for f in source.files) == expected


def test_a_zip_of_one_class_folder_keeps_its_class(pictures, tmp_path):
    cats = {f"cat/{n}": data for n, data in pictures.items() if n.startswith("cat")}
    zipped_files = open_source(zipped(tmp_path / "cats.zip", cats)).files
    on_disk = open_source(write(tmp_path / "cats", cats)).files
    assert [(f.cls, f.relative) for f in zipped_files] == [(f.cls, f.relative) for f in on_disk]
    assert {f.cls for f in zipped_files} == {"cat"}


def test_table_ids_and_images_may_name_the_archives_one_folder(pictures, tmp_path):
    archive = zipped(tmp_path / "t.zip", {f"train/{n}": d for n, d in pictures.items()})
    table = tmp_path / "labels.csv"
    table.write_text("id,label\n" + "".join(f"train/{n},{n[:3]}\n" for n in pictures))
    for options in ({"labels": str(table)}, {"labels": str(table), "images": "train"}):
        source = open_source(archive, **options)
        assert not source.problems, source.problems
        assert len(source.files) == len(pictures)


def test_unnamed_images_in_other_folders_are_counted_per_folder(pictures, tmp_path):
    root = write(tmp_path / "set", pictures)
    write(root / "more", {"a.png": png(901), "b.png": png(902)})
    (root / "labels.csv").write_text("id,label\n" + "".join(f"{n},{n[:3]}\n" for n in pictures))
    source = open_source(root, labels="labels.csv")
    assert [(p.name, p.kind) for p in source.problems] == [("more/", "unlabelled")]
    assert "2 image(s)" in source.problems[0].reason
    result = invoke("verify", root, "--labels", "labels.csv")
    assert result.exit_code == 1 and "more/" in result.output


@pytest.mark.parametrize(
    "table, words",
    [
        ('id,label\na.png,cat\nb.png,"dog\nc.png,cat\n', "line 3"),
        ('id,label\na.png,cat\nb.png,"dog\n' + "x.png,cat\n" * 20000, "field larger"),
    ],
)
def test_a_quote_left_open_in_a_table_is_a_usage_error(table, words, tmp_path):
    root = write(tmp_path / "set", {"a.png": png(1), "b.png": png(2), "c.png": png(3)})
    (root / "labels.csv").write_text(table)
    result = invoke("verify", root, "--labels", "labels.csv")
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output


def test_npz_labels_of_two_kinds_or_stray_numbers_are_usage_errors(tmp_path):
    x = np.zeros((4, 8, 8), np.uint8)
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, x_train=x, y_train=[0, 1, 0, 1], x_test=x[:2], y_test=["cat", "dog"])
    with pytest.raises(ParameterError, match="both be class numbers or both be class names"):
        open_source(mixed)
    stray = tmp_path / "stray.npz"
    np.savez(stray, x_train=x, y_train=[0, 1, 0, 5_000_000])
    with pytest.raises(ParameterError, match="class numbers go up to 5000000"):
        open_source(stray)


def test_a_job_leaves_no_archive_open(pictures, tmp_path):
    archive = zipped(tmp_path / "train.zip", {f"train/{n}": d for n, d in pictures.items()})
    dataset.verify(archive, labels="name", workers=0)
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd here")
    opened = {os.path.realpath(fd) for fd in fds.iterdir() if os.path.exists(fd)}
    assert str(archive.resolve()) not in opened


def test_tiny_pictures_are_grouped_only_when_identical(tmp_path):
    from cvprep.dataset.duplicates import perceptual_hash

    rng = np.random.default_rng(0)
    files = {}
    for cls in "ab":
        base = rng.integers(0, 256, (8, 8), np.uint8)
        tiles = [
            np.clip(base + rng.normal(0, 12, (8, 8)), 0, 255).astype(np.uint8) for _ in range(8)
        ]
        hashes = [perceptual_hash(tile) for tile in tiles]
        assert min((hashes[0] ^ h).bit_count() for h in hashes[1:]) <= 6  # the hash joins them
        files.update({f"{cls}/{cls}_{i}.png": encode_png(tile) for i, tile in enumerate(tiles)})
    files["a/copy.png"] = files["a/a_0.png"]
    dataset.split(write(tmp_path / "tiny", files), tmp_path / "data", seed=1, workers=0)
    with (tmp_path / "data" / "manifest.csv").open() as handle:
        groups = {row["path"]: (row["class"], row["group"]) for row in csv.DictReader(handle)}
    assert groups["a/copy.png"] == groups["a/a_0.png"]  # exact copies still share a split
    assert len(set(groups.values())) == len(files) - 1
