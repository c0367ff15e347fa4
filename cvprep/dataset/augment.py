"""``augment``: offline augmentation with albumentations, and oversampling of small classes.

Only the training images are augmented; validation and test images are linked or copied
unchanged, so evaluation never sees synthetic data. The presets mean the same transforms as
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
from cvprep.dataset.output import (
    check_record,
    has_content,
    output_lock,
    read_record,
    remove_stale,
    write_record,
)
from cvprep.dataset.results import FileResult, Progress, SummarisedResult, Summary, tracked
from cvprep.errors import ImageError, ParameterError, filesystem_errors
from cvprep.files import (
    EmptyTreeError,
    check_can_write,
    check_separate,
    class_of,
    list_tree,
    require_folder,
)
from cvprep.io import atomic_write_bytes, copy_atomic, encode_image, read_image, writable_name
from cvprep.params import DEFAULT_SEED

COMMAND = "augment"
MAX_PER_IMAGE = 1000
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
    source_root: str
    output_root: str
    relative: str
    copies: Numbered  # (copy number, output name relative to the root)
    transform: str  # albumentations serialised dict (JSON), portable to worker processes
    seed: int
    quality: int | None

    @property
    def source(self) -> str:
        return os.path.join(self.source_root, self.relative)


@functools.lru_cache(maxsize=8)
def _transform(serialised: str) -> Any:
    """The pipeline, rebuilt once per worker process, not once per image."""
    import albumentations as A

    return A.from_dict(json.loads(serialised))


def augment_one(task: AugmentTask, data: bytes | None = None) -> FileResult:
    """Copy one training image to the output with its augmented copies, or reject it (and
    remove what an earlier run wrote for it). Outputs carry the input's modification time:
    those of an input changed since are made again."""
    source, root = Path(task.source), Path(task.output_root)
    outputs = [root / task.relative, *(root / name for _, name in task.copies)]
    stamp = source.stat().st_mtime_ns
    try:
        image = read_image(data if data is not None else source)
        todo = [(n, root / name) for n, name in task.copies if _stamp(root / name) != stamp]
        augmented = [(target, _augmented(task, image, number)) for number, target in todo]
    except ImageError as exc:
        _remove(outputs)
        return FileResult(task.relative, "rejected", exc.kind, exc.reason)
    except Exception as exc:  # a saved pipeline can fail on one image (a crop too large)
        _remove(outputs)
        reason = f"augmentation failed: {type(exc).__name__}: {exc}"
        return FileResult(task.relative, "rejected", "unprocessable", reason)
    placed = mirror_file(source, root / task.relative)
    for target, pixels in augmented:
        atomic_write_bytes(target, encode_image(pixels, target.suffix, quality=task.quality))
        os.utime(target, ns=(stamp, stamp))
    return FileResult(
        task.relative,
        "ok" if augmented or placed else "skipped",
        width=image.shape[1],
        height=image.shape[0],
    )


def _augmented(task: AugmentTask, image: np.ndarray, number: int) -> np.ndarray:
    transform = _transform(task.transform)
    transform.set_random_seed(derived_seed(task.seed, task.relative, number))
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


def mirror_file(source: Path, target: Path) -> bool:
    """Make ``target`` a hard link to ``source`` (a copy across file systems) unless it
    already is one, or a copy with the same size and modification time. Replaces an outdated
    ``target`` atomically; returns whether it wrote anything."""
    try:
        there = target.stat()
    except FileNotFoundError:
        there = None
    here = source.stat()
    if there is not None and (
        (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)
        or (there.st_size, there.st_mtime_ns) == (here.st_size, here.st_mtime_ns)
    ):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        copy_atomic(source, target)
    return True


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


def training_root(root: Path) -> tuple[Path, list[Path]]:
    """The folder to augment and the sibling split folders to pass through unchanged."""
    if (root / "train").is_dir():
        others = [
            p
            for p in sorted(root.iterdir())
            if p.is_dir() and p.name != "train" and not p.name.startswith(".")
        ]
        return root / "train", others
    return root, []


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
def augment(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
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
    unchanged) or a folder of class subfolders (all augmented). Deterministic for a seed,
    whatever the number of workers. A training image that cannot be read or augmented is
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
    root, out = require_folder(source), Path(output)
    per_image = params.check_int("per_image", per_image, minimum=0, maximum=MAX_PER_IMAGE)
    params.check_bool("balance", balance)
    params.check_seed(seed)
    params.check_optional_int("quality", quality, minimum=1, maximum=100)
    params.check_bool("overwrite", overwrite)
    transform = load_transform(preset)
    check_separate(root, out)
    check_can_write(out)
    train, others = training_root(root)
    tree = list_tree(train)
    grouped: dict[str, list[str]] = {}
    for relative in tree.in_classes():
        grouped.setdefault(class_of(relative) or "", []).append(str(relative))
    if not grouped:
        raise EmptyTreeError(train, "no image files in class subfolders")
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
    }
    train_out = out / train.relative_to(root)
    copies = plan_copies(grouped, per_image=per_image, balance=balance, seed=seed)
    names = augmented_names([f for files in grouped.values() for f in files], copies)
    with output_lock(out, COMMAND):
        owned = read_record(out).get("command") == COMMAND or not has_content(out)
        if not overwrite:
            check_record(out, COMMAND, settings)
        write_record(out, COMMAND, settings, status="in progress")
        wanted = _wanted(out, train_out, names, others)
        removed = remove_stale(out, wanted) if owned else []
        for other in others:
            pass_through(other, out / other.name)
        if overwrite:  # copies made with other settings are made again
            _remove([train_out / name for numbered in names.values() for _, name in numbered])
        tasks = [
            AugmentTask(str(train), str(train_out), name, numbered, serialised, seed, quality)
            for name, numbered in sorted(names.items())
        ]
        summary = _run(runner, tasks, progress)
        for relative in tree.files:
            if class_of(relative) is None:
                summary.add(FileResult(str(relative), "rejected", "not_in_class", OUTSIDE_CLASSES))
        for problem in tree.problems:
            summary.add(FileResult.from_problem(problem))
        counts = _counts(summary, names)
        write_record(out, COMMAND, settings, status="finished", extra={"summary": counts})
    return AugmentResult(
        root, out, counts, [p.name for p in others], summary, settings["transform"], removed
    )


def _wanted(out: Path, train_out: Path, names: dict[str, Numbered], others: list[Path]) -> set[str]:
    """Every file this run puts in OUT, relative to it."""
    wanted = set()
    for relative, numbered in names.items():
        wanted.add((train_out / relative).relative_to(out).as_posix())
        wanted.update((train_out / name).relative_to(out).as_posix() for _, name in numbered)
    for other in others:
        wanted.update(f"{other.name}/{path.as_posix()}" for path in list_tree(other).files)
    return wanted


def _run(runner: Engine, tasks: list[AugmentTask], progress: Progress | None) -> Summary:
    summary = Summary()
    start = time.perf_counter()
    for result in tracked(runner.map(augment_one, tasks), len(tasks), "augmenting", progress):
        summary.add(result)
    summary.seconds = time.perf_counter() - start
    return summary


def _counts(summary: Summary, names: dict[str, Numbered]) -> dict[str, dict[str, int]]:
    """Originals and augmented copies per class, as they are in OUT (rejects not counted)."""
    rejected = {result.path for result in summary.rejected}
    counts: dict[str, dict[str, int]] = {}
    for relative, numbered in sorted(names.items()):
        row = counts.setdefault(class_of(Path(relative)) or "", {"originals": 0, "augmented": 0})
        if relative not in rejected:
            row["originals"] += 1
            row["augmented"] += len(numbered)
    return counts


def pass_through(source: Path, target: Path) -> int:
    """Mirror a split folder unchanged (hard links, or atomic copies across file systems);
    returns the files written."""
    return sum(
        mirror_file(source / relative, target / relative) for relative in list_tree(source).files
    )
