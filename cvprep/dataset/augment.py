"""``augment``: offline augmentation with albumentations, and oversampling of small classes.

Only the training images are augmented; validation and test images (the ``val/`` and
``test/`` of a split source) are linked or copied unchanged, so evaluation never sees
synthetic data. The presets mean the same transforms as
``cvprep train --augment`` (see :mod:`cvprep.augmentation`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import params
from cvprep.augmentation import PRESETS, get_preset, to_albumentations
from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.labels import LabelSpec
from cvprep.dataset.output import (
    check_record,
    has_content,
    output_lock,
    read_record,
    remove_stale,
    write_record,
)
from cvprep.dataset.results import FileResult, Progress, SummarisedResult, Summary, tracked
from cvprep.dataset.sources import (
    ReadFailure,
    Source,
    SourceFile,
    fetch,
    is_placed,
    mapped,
    open_source,
    place,
    releases_readers,
)
from cvprep.errors import ImageError, ParameterError, filesystem_errors
from cvprep.files import EmptyTreeError, check_can_write, check_separate
from cvprep.io import atomic_write_bytes, encode_image, read_image, writable_name
from cvprep.params import DEFAULT_SEED

COMMAND = "augment"
MAX_PER_IMAGE = 1000
PASSED_THROUGH = ("val", "test")
OUTSIDE_CLASSES = "a file outside the class folders (its class is unknown)"
Numbered = tuple[tuple[int, str], ...]  # (copy number, output name) of an image's copies


def load_transform(preset_or_file: str | os.PathLike[str]) -> Any:
    """A preset name, or an albumentations pipeline saved with ``A.save`` (YAML or JSON).

    A saved pipeline must output images (uint8): one with ``A.Normalize``, ``A.ToFloat`` or
    ``A.ToTensorV2`` is refused here, not on every image."""
    import albumentations as A

    name = os.fspath(preset_or_file)
    if name in PRESETS:
        return to_albumentations(get_preset(name))
    path = Path(name)
    if not path.is_file():
        raise ParameterError(
            f"`preset` should be one of {', '.join(PRESETS)} or an existing YAML/JSON file. "
            f"Received: preset={name!r}"
        )
    data_format = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    try:
        transform = A.load(str(path), data_format=data_format)
    except Exception as exc:  # albumentations raises many types for a malformed file
        raise ParameterError(f"cannot load albumentations pipeline {path}: {exc}") from exc
    _check_outputs_images(transform, path)
    return transform


def _check_outputs_images(transform: Any, path: Path) -> None:
    probe = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    try:
        output = transform(image=probe)["image"]
    except Exception:  # e.g. a crop larger than the probe: judged image by image instead
        return
    if not (isinstance(output, np.ndarray) and output.dtype == np.uint8 and output.ndim in (2, 3)):
        kind = getattr(output, "dtype", type(output).__name__)
        raise ParameterError(
            f"the albumentations pipeline {path} outputs {kind} arrays, not uint8 images: "
            "augment writes image files, so leave out Normalize, ToFloat and ToTensorV2 "
            "(apply them when training)"
        )


def derived_seed(seed: int, *parts: object) -> int:
    """A per-image seed: results do not depend on processing order or worker count."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class AugmentTask:
    file: SourceFile
    output_root: str
    copies: Numbered  # (copy number, output name relative to the root)
    transform: str  # albumentations serialised dict (JSON), portable to worker processes
    seed: int
    quality: int | None


@functools.lru_cache(maxsize=8)
def _transform(serialised: str) -> Any:
    """The pipeline, rebuilt once per worker process, not once per image."""
    import albumentations as A

    return A.from_dict(json.loads(serialised))


def augment_one(task: AugmentTask, data: bytes | ReadFailure | None = None) -> FileResult:
    """Copy one training image to the output with its augmented copies, or reject it (and
    remove what an earlier run wrote for it). Outputs carry the input's modification time:
    those of an input changed since are made again."""
    file, root = task.file, Path(task.output_root)
    original = root / file.output
    outputs = [original, *(root / name for _, name in task.copies)]
    try:
        raw = fetch(file, data)
        image = read_image(raw)
        todo = [(n, root / name) for n, name in task.copies if _stamp(root / name) != file.stamp]
        augmented = [(target, _augmented(task, image, number)) for number, target in todo]
    except ImageError as exc:
        _remove(outputs)
        return FileResult.of(file, "rejected", kind=exc.kind, reason=exc.reason)
    except Exception as exc:  # a saved pipeline can fail on one image (a crop too large)
        _remove(outputs)
        reason = f"augmentation failed: {type(exc).__name__}: {exc}"
        return FileResult.of(file, "rejected", kind="unprocessable", reason=reason)
    placed = not is_placed(file, original)
    if placed:
        place(file, original, link=True, data=raw)
    for target, pixels in augmented:
        atomic_write_bytes(target, encode_image(pixels, target.suffix, quality=task.quality))
        os.utime(target, ns=(file.stamp, file.stamp))
    return FileResult.of(
        file,
        "ok" if augmented or placed else "skipped",
        width=image.shape[1],
        height=image.shape[0],
    )


def _augmented(task: AugmentTask, image: np.ndarray, number: int) -> np.ndarray:
    transform = _transform(task.transform)
    # Seeded by the path inside the split (class/name): the same copies whatever the source.
    transform.set_random_seed(derived_seed(task.seed, task.file.relative, number))
    result = transform(image=image)["image"]
    if not (isinstance(result, np.ndarray) and result.dtype == np.uint8):
        raise ValueError(f"the pipeline output {getattr(result, 'dtype', type(result))}, not uint8")
    return result


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def augmented_names(
    relatives: list[str], copies: dict[str, tuple[int, ...]]
) -> dict[str, Numbered]:
    """The output name of every augmented copy: ``name_aug001.ext`` (PNG for formats cvprep
    does not write), never the name of an input (augmenting an augmented folder) or of
    another copy, also where case does not count."""
    taken = {name.lower() for name in relatives}
    names: dict[str, Numbered] = {}
    for relative in sorted(relatives):
        path = writable_name(Path(relative))
        chosen = []
        for number in copies.get(relative, ()):
            for attempt in itertools.count(1):
                tag = f"_aug{number:03d}" + (f"-{attempt}" if attempt > 1 else "")
                candidate = str(path.with_name(f"{path.stem}{tag}{path.suffix}"))
                if candidate.lower() not in taken:
                    break
            taken.add(candidate.lower())
            chosen.append((number, candidate))
        names[relative] = tuple(chosen)
    return names


def plan_copies(
    files_by_class: dict[str, list[str]], *, per_image: int, balance: bool, seed: int
) -> dict[str, tuple[int, ...]]:
    """How many augmented copies each training image gets.

    ``per_image``: that many of every image. ``balance``: minority classes get extra copies,
    spread evenly (the seed decides which images get one more), up to the largest class.
    """
    copies: dict[str, list[int]] = {
        f: list(range(1, per_image + 1)) for files in files_by_class.values() for f in files
    }
    if balance:
        largest = max(len(files) * (1 + per_image) for files in files_by_class.values())
        for files in files_by_class.values():
            missing = largest - len(files) * (1 + per_image)
            ordered = sorted(files, key=lambda f: derived_seed(seed, "balance", f))
            for n in range(missing):
                name = ordered[n % len(ordered)]
                copies[name].append(per_image + 1 + n // len(ordered))
    return {name: tuple(numbers) for name, numbers in copies.items()}


@dataclass
class AugmentResult(SummarisedResult):
    """Originals and augmented copies per class, the folders passed through, the rejects."""

    source: Path
    output: Path
    per_class: dict[str, dict[str, int]]
    passed_through: list[str]
    summary: Summary
    transform: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # outputs whose input is gone

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": self.per_class,
            "passed_through": self.passed_through,
            "rejected": [r.path for r in self.rejected],
            "removed": self.removed,
            "output": str(self.output),
        }


@filesystem_errors
@releases_readers
def augment(
    source: str | os.PathLike[str] | Source,
    output: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
    preset: str | os.PathLike[str] = "medium",
    per_image: int = 1,
    balance: bool = False,
    seed: int = DEFAULT_SEED,
    quality: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> AugmentResult:
    """Write ``output`` with the images of ``source`` plus augmented copies of the training
    images.

    ``source`` is a split folder (``train/`` augmented; ``val/`` and ``test/`` passed through
    unchanged), a folder of class subfolders (all augmented), or any other source of
    :mod:`cvprep.dataset.sources` (``labels``, ``images``: as for
    :func:`cvprep.dataset.verify`). Deterministic for a seed, whatever the number of
    workers or the kind of source. A training image that cannot be read or augmented is
    rejected (listed, and not copied); the counts are of what ``output`` holds. Running it
    again finishes an interrupted run, redoes the images changed since and removes the
    outputs of deleted ones (``removed``).

    Parameters
    ----------
    preset : {"light", "medium", "heavy"} or path
        A preset (the same transforms as ``cvprep train --augment``) or an albumentations
        pipeline saved with ``A.save`` as YAML/JSON (it must output uint8 images).
    per_image : int
        Augmented copies of every training image (0–1000).
    balance : bool
        Oversample minority classes (extra augmented copies) up to the largest.
    overwrite : bool
        Write into an output made with other settings.

    Examples
    --------
    >>> from cvprep.dataset import augment, make_shapes_dataset
    >>> photos = make_shapes_dataset(tmp / "photos", per_class=4)
    >>> result = augment(photos, tmp / "augmented", preset="light", per_image=2, workers=0)
    >>> result.per_class["round"]
    {'originals': 4, 'augmented': 8}
    """
    data = open_source(source, labels=labels, images=images)
    root, out = data.location, Path(output)
    per_image = params.check_int("per_image", per_image, minimum=0, maximum=MAX_PER_IMAGE)
    params.check_bool("balance", balance)
    params.check_seed(seed)
    params.check_optional_int("quality", quality, minimum=1, maximum=100)
    params.check_bool("overwrite", overwrite)
    transform = load_transform(preset)
    check_separate(root, out)
    check_can_write(out)
    training = [f for f in data.files if f.cls and f.split not in PASSED_THROUGH]
    if not training:
        raise EmptyTreeError(root, "no image files in class subfolders")
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    from albumentations import to_dict

    serialised = json.dumps(to_dict(transform))
    settings = {
        "preset": os.fspath(preset),
        "per_image": per_image,
        "balance": balance,
        "seed": seed,
        "quality": quality,
        "transform": json.loads(serialised),
        **data.settings(),
    }
    tasks = _tasks(training, out, per_image, balance, seed, serialised, quality)
    passed = [f for f in data.files if f.split in PASSED_THROUGH]
    with output_lock(out, COMMAND):
        owned = read_record(out).get("command") == COMMAND or not has_content(out)
        if not overwrite:
            check_record(out, COMMAND, settings)
        write_record(out, COMMAND, settings, status="in progress")
        removed = remove_stale(out, _wanted(tasks, passed)) if owned else []
        failed = pass_through(data, passed, out)
        if overwrite:  # copies made with other settings are made again
            _remove([out / name for task in tasks for _, name in task.copies])
        summary = _run(runner, tasks, data, progress)
        for file in data.files:
            if not file.cls and file.split not in PASSED_THROUGH:
                summary.add(
                    FileResult.of(file, "rejected", kind="not_in_class", reason=OUTSIDE_CLASSES)
                )
        for extra in [*failed, *map(FileResult.from_problem, data.problems)]:
            summary.add(extra)
        counts = _counts(summary, tasks)
        write_record(out, COMMAND, settings, status="finished", extra={"summary": counts})
    through = sorted({file.split for file in passed})
    return AugmentResult(root, out, counts, through, summary, settings["transform"], removed)


def _tasks(
    training: list[SourceFile],
    out: Path,
    per_image: int,
    balance: bool,
    seed: int,
    serialised: str,
    quality: int | None,
) -> list[AugmentTask]:
    """One task per training image, with the names of its copies (keyed by the path inside
    the split, ``class/name``, so that every kind of source gives the same copies)."""
    grouped: dict[str, list[str]] = {}
    for file in training:
        grouped.setdefault(file.cls, []).append(file.relative)
    copies = plan_copies(grouped, per_image=per_image, balance=balance, seed=seed)
    names = augmented_names([file.relative for file in training], copies)
    return [
        AugmentTask(
            file,
            str(out),
            tuple(
                (n, (f"{file.split}/" if file.split else "") + name)
                for n, name in names[file.relative]
            ),
            serialised,
            seed,
            quality,
        )
        for file in sorted(training, key=lambda f: f.relative)
    ]


def _wanted(tasks: list[AugmentTask], passed: list[SourceFile]) -> set[str]:
    """Every file this run puts in OUT, relative to it."""
    wanted = {file.output for file in passed}
    for task in tasks:
        wanted.add(task.file.output)
        wanted.update(name for _, name in task.copies)
    return wanted


def _run(
    runner: Engine, tasks: list[AugmentTask], source: Source, progress: Progress | None
) -> Summary:
    summary = Summary()
    start = time.perf_counter()
    mapping = mapped(runner, augment_one, tasks, source)
    for result in tracked(mapping, len(tasks), "augmenting", progress):
        summary.add(result)
    summary.seconds = time.perf_counter() - start
    return summary


def _counts(summary: Summary, tasks: list[AugmentTask]) -> dict[str, dict[str, int]]:
    """Originals and augmented copies per class, as they are in OUT (rejects not counted)."""
    rejected = {result.path for result in summary.rejected}
    counts: dict[str, dict[str, int]] = {}
    for task in sorted(tasks, key=lambda t: (t.file.cls, t.file.relative)):
        row = counts.setdefault(task.file.cls, {"originals": 0, "augmented": 0})
        if task.file.name not in rejected:
            row["originals"] += 1
            row["augmented"] += len(task.copies)
    return dict(sorted(counts.items()))


def pass_through(source: Source, files: list[SourceFile], out: Path) -> list[FileResult]:
    """Mirror the held-out splits unchanged, without decoding them (hard links, or atomic
    copies across file systems and out of archives); an archive member whose bytes cannot
    be read is rejected."""
    stale = [file for file in files if not is_placed(file, out / file.output)]
    for file in stale:
        if file.path is not None:
            place(file, out / file.output, link=True)
    rejects = []
    for file, data in source.read_all(f for f in stale if f.path is None):
        if isinstance(data, ReadFailure):
            (out / file.output).unlink(missing_ok=True)
            rejects.append(FileResult.of(file, "rejected", kind=data.kind, reason=data.reason))
        else:
            place(file, out / file.output, data=data)
    return rejects
