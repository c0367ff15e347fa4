"""Offline augmentation with albumentations: presets, saved pipelines, oversampling.

Only the training images are augmented; validation and test images are linked or copied
unchanged, so evaluation never sees synthetic data.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvprep.batch import FileResult
from cvprep.errors import ImageError
from cvprep.files import class_of, iter_files
from cvprep.io import atomic_write_bytes, copy_atomic, encode_image, read_image

PRESETS = ("light", "medium", "heavy")


def preset(name: str) -> Any:
    """An albumentations ``Compose`` for a named preset (geometric + photometric)."""
    import albumentations as A

    light = [
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]
    medium = [
        *light,
        A.Affine(
            scale=(0.9, 1.1),
            translate_percent=(-0.05, 0.05),
            rotate=(-15, 15),
            border_mode=4,
            p=0.7,
        ),  # border_mode 4 = cv2.BORDER_REFLECT_101
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), p=0.15),
    ]
    heavy = [
        *medium,
        A.Perspective(scale=(0.02, 0.06), p=0.3),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
        A.CoarseDropout(
            num_holes_range=(1, 4),
            hole_height_range=(0.05, 0.15),
            hole_width_range=(0.05, 0.15),
            p=0.3,
        ),
    ]
    transforms = {"light": light, "medium": medium, "heavy": heavy}
    if name not in transforms:
        raise ValueError(
            f"`preset` should be one of {', '.join(PRESETS)} or a YAML/JSON file. "
            f"Received: preset={name!r}"
        )
    return A.Compose(transforms[name])


def load_transform(preset_or_file: str) -> Any:
    """A preset name, or an albumentations pipeline saved with ``A.save`` (YAML or JSON)."""
    import albumentations as A

    if preset_or_file in PRESETS:
        return preset(preset_or_file)
    path = Path(preset_or_file)
    if not path.is_file():
        raise ValueError(
            f"`preset` should be one of {', '.join(PRESETS)} or an existing "
            f"YAML/JSON file. Received: preset={preset_or_file!r}"
        )
    data_format = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    try:
        return A.load(str(path), data_format=data_format)
    except Exception as exc:  # albumentations raises many types for a malformed file
        raise ValueError(f"cannot load albumentations pipeline {path}: {exc}") from exc


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


_TRANSFORMS: dict[str, Any] = {}


def _transform(serialised: str) -> Any:
    import albumentations as A

    if serialised not in _TRANSFORMS:
        _TRANSFORMS[serialised] = A.from_dict(json.loads(serialised))
    return _TRANSFORMS[serialised]


def augmented_name(relative: str, copy: int) -> str:
    path = Path(relative)
    return str(path.with_name(f"{path.stem}_aug{copy:03d}{path.suffix or '.png'}"))


def augment_one(task: AugmentTask) -> FileResult:
    try:
        image = read_image(Path(task.source_root) / task.relative)
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


def files_by_class(train: Path) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for relative in iter_files(train):
        cls = class_of(relative)
        if cls is not None:
            grouped.setdefault(cls, []).append(str(relative))
    return grouped


def pass_through(source: Path, target: Path) -> int:
    """Hard-link (or copy atomically, across file systems) a split folder unchanged."""
    count = 0
    for relative in iter_files(source):
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
