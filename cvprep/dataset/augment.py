"""``augment``: offline augmentation with albumentations, and oversampling of small classes.

Only the training images are augmented; validation and test images are linked or copied
unchanged, so evaluation never sees synthetic data. The presets mean the same transforms as
``cvprep train --augment`` (see :mod:`cvprep.augmentation`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvprep.augmentation import PRESETS, get_preset, to_albumentations
from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.output import check_record, output_lock, write_record
from cvprep.dataset.results import FileResult, Progress, SummarisedResult, Summary, tracked
from cvprep.errors import ImageError, ParameterError
from cvprep.files import EmptyTreeError, check_separate, class_of, list_tree
from cvprep.io import atomic_write_bytes, copy_atomic, encode_image, read_image
from cvprep.params import DEFAULT_SEED

COMMAND = "augment"


def load_transform(preset_or_file: str | os.PathLike[str]) -> Any:
    """A preset name, or an albumentations pipeline saved with ``A.save`` (YAML or JSON)."""
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
        return A.load(str(path), data_format=data_format)
    except Exception as exc:  # albumentations raises many types for a malformed file
        raise ParameterError(f"cannot load albumentations pipeline {path}: {exc}") from exc


def derived_seed(seed: int, *parts: object) -> int:
    """A per-image seed: results do not depend on processing order or worker count."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class AugmentTask:
    source_root: str
    output_root: str
    relative: str
    copies: tuple[int, ...]  # which augmented copy numbers to make of this image
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


def augmented_name(relative: str, copy: int) -> str:
    path = Path(relative)
    return str(path.with_name(f"{path.stem}_aug{copy:03d}{path.suffix or '.png'}"))


def augment_one(task: AugmentTask, data: bytes | None = None) -> FileResult:
    try:
        image = read_image(data if data is not None else task.source)
    except ImageError as exc:
        return FileResult(task.relative, "rejected", exc.kind, exc.reason)
    transform = _transform(task.transform)
    written = 0
    for copy in task.copies:
        target = Path(task.output_root) / augmented_name(task.relative, copy)
        if target.exists():
            continue
        transform.set_random_seed(derived_seed(task.seed, task.relative, copy))
        augmented = transform(image=image)["image"]
        atomic_write_bytes(target, encode_image(augmented, target.suffix, quality=task.quality))
        written += 1
    return FileResult(
        task.relative,
        "ok" if written or not task.copies else "skipped",
        width=image.shape[1],
        height=image.shape[0],
    )


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


def pass_through(source: Path, target: Path) -> int:
    """Hard-link (or copy atomically, across file systems) a split folder unchanged."""
    count = 0
    for relative in list_tree(source).files:
        destination = target / relative
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / relative, destination)
        except OSError:
            copy_atomic(source / relative, destination)
        count += 1
    return count


@dataclass
class AugmentResult(SummarisedResult):
    """Originals and augmented copies per class, the folders passed through, the rejects."""

    source: Path
    output: Path
    per_class: dict[str, dict[str, int]]
    passed_through: list[str]
    summary: Summary
    transform: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": self.per_class,
            "passed_through": self.passed_through,
            "rejected": [r.path for r in self.rejected],
            "output": str(self.output),
        }


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
    whatever the number of workers.

    Parameters
    ----------
    preset : {"light", "medium", "heavy"} or path
        A preset (the same transforms as ``cvprep train --augment``) or an albumentations
        pipeline saved with ``A.save`` as YAML/JSON.
    per_image : int
        Augmented copies of every training image.
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
    root, out = Path(source), Path(output)
    if per_image < 0:
        raise ParameterError(f"`per_image` should be >= 0. Received: per_image={per_image}")
    transform = load_transform(preset)
    check_separate(root, out)
    train, others = training_root(root)
    grouped: dict[str, list[str]] = {}
    for relative in list_tree(train).in_classes():
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
    with output_lock(out, COMMAND):
        if not overwrite:
            check_record(out, COMMAND, settings)
        write_record(out, COMMAND, settings, status="in progress")
        for other in others:
            pass_through(other, out / other.name)
        pass_through(train, train_out)
        if overwrite:  # copies made with other settings are made again
            for name, numbers in copies.items():
                for number in numbers:
                    (train_out / augmented_name(name, number)).unlink(missing_ok=True)
        tasks = [
            AugmentTask(str(train), str(train_out), name, numbers, serialised, seed, quality)
            for name, numbers in sorted(copies.items())
        ]
        summary = Summary()
        start = time.perf_counter()
        for result in tracked(runner.map(augment_one, tasks), len(tasks), "augmenting", progress):
            summary.add(result)
        summary.seconds = time.perf_counter() - start
        counts = {
            cls: {"originals": len(files), "augmented": sum(len(copies[f]) for f in files)}
            for cls, files in sorted(grouped.items())
        }
        write_record(out, COMMAND, settings, status="finished", extra={"summary": counts})
    return AugmentResult(
        root, out, counts, [p.name for p in others], summary, settings["transform"]
    )
