"""Deterministic, stratified, duplicate-aware train/val/test splits of class folders.

How a split is decided:

1. Every file is hashed in a process pool: SHA-256 of its bytes and a perceptual hash of its
   pixels (files that do not decode are listed as rejected and not split).
2. Files are grouped: identical bytes, perceptual hashes within ``near_threshold`` bits,
   and (optionally) the same ``--group`` regex key. A group never straddles two splits.
3. Files listed in an earlier ``manifest.csv`` in the output keep their split, so adding
   images later never moves existing ones.
4. New groups are visited in an order fixed by the seed and the group's content (not its
   file names), and each goes to the split furthest below its per-class target. Targets are
   the class's size times the ratios, rounded by largest remainder, so every class lands
   within one image of its ratios (groups larger than one image can add to that).

scikit-learn's splitters give stratification but neither stability under additions nor
duplicate groups, which is why this is done here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvprep.batch import run_in_pool
from cvprep.duplicates import content_hash, group_labels, near_duplicate_pairs, perceptual_hash
from cvprep.errors import ImageError
from cvprep.files import class_of, iter_files
from cvprep.io import atomic_write_bytes, copy_atomic, read_image

SPLIT_NAMES = ("train", "val", "test")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["path", "class", "split", "sha256", "phash", "group", "reason"]


@dataclass
class Item:
    path: str  # relative to the input folder, "class/.../name"
    cls: str
    sha256: str = ""
    phash: int = 0
    rejected: str = ""  # reason, when the file does not decode
    split: str = ""
    group: int = -1
    reason: str = ""


def parse_ratios(text: str) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` → ``{"train": .8, "val": .1, "test": .1}`` (two values: no test)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"`ratios` should be 2 or 3 comma-separated numbers. Received: ratios={text!r}"
        ) from None
    if len(values) not in (2, 3) or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(
            f"`ratios` should be 2 or 3 non-negative numbers summing to 1. "
            f"Received: ratios={text!r}"
        )
    if values[0] == 0:
        raise ValueError(f"`ratios` should give the train split a share. Received: ratios={text!r}")
    return dict(zip(SPLIT_NAMES, values, strict=False))


# --------------------------------------------------------------------------- hashing
@dataclass(frozen=True)
class HashTask:
    root: str
    relative: str


def _hash_one(task: HashTask) -> Item:
    path = Path(task.root) / task.relative
    item = Item(task.relative, class_of(Path(task.relative)) or "")
    try:
        data = path.read_bytes()
        item.sha256 = content_hash(data)
        # Half-size decoding is plenty for a 32×32 perceptual hash and much faster.
        item.phash = perceptual_hash(read_image(data, reduce=2))
    except ImageError as exc:
        item.rejected = f"{exc.kind}: {exc.reason}"
    except OSError as exc:
        item.rejected = f"unreadable: {exc.strerror}"
    return item


def scan_and_hash(root: Path, *, workers: int) -> tuple[int, Iterator[Item]]:
    """Files in class subfolders of ``root`` (top-level files are not in any class)."""
    files = [str(p) for p in iter_files(root) if class_of(p) is not None]
    return len(files), run_in_pool(_hash_one, (HashTask(str(root), f) for f in files), workers)


# --------------------------------------------------------------------------- grouping
def group_items(
    items: list[Item], *, near_threshold: int | None, group_regex: str | None
) -> dict[int, str]:
    """Set ``item.group`` for every item; returns why each multi-item group was joined."""
    pairs: list[np.ndarray] = []
    why: dict[tuple[int, int], str] = {}
    by_sha: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.sha256 in by_sha:
            pairs.append(np.array([[by_sha[item.sha256], index]]))
            why[(by_sha[item.sha256], index)] = (
                f"exact duplicate of {items[by_sha[item.sha256]].path}"
            )
        else:
            by_sha[item.sha256] = index
    if near_threshold is not None:
        near = near_duplicate_pairs([it.phash for it in items], near_threshold)
        pairs.append(near)
        for i, j in near:
            distance = bin(items[i].phash ^ items[j].phash).count("1")
            why.setdefault(
                (int(i), int(j)),
                f"near duplicate of {items[i].path} (perceptual distance {distance})",
            )
    if group_regex:
        pattern = re.compile(group_regex)
        by_key: dict[str, int] = {}
        for index, item in enumerate(items):
            match = pattern.search(Path(item.path).name)
            if not match:
                continue
            key = match.group(1) if match.groups() else match.group(0)
            if key in by_key:
                pairs.append(np.array([[by_key[key], index]]))
                why.setdefault(
                    (by_key[key], index), f"same --group key {key!r} as {items[by_key[key]].path}"
                )
            else:
                by_key[key] = index
    edges = np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64)
    labels = group_labels(len(items), edges)
    for item, label in zip(items, labels, strict=True):
        item.group = int(label)
    reasons = {}
    for (_first, later), text in why.items():
        reasons.setdefault(later, text)
    return reasons


# --------------------------------------------------------------------------- assignment
def class_targets(
    count: int, ratios: dict[str, float], min_per_split: int, cls: str
) -> dict[str, int]:
    """Integer per-split counts for one class (largest remainder), with a floor."""
    raw = {name: count * ratio for name, ratio in ratios.items()}
    targets = {name: int(value) for name, value in raw.items()}
    by_remainder = sorted(raw, key=lambda n: (-(raw[n] - targets[n]), SPLIT_NAMES.index(n)))
    for name in by_remainder[: count - sum(targets.values())]:
        targets[name] += 1
    active = [name for name, ratio in ratios.items() if ratio > 0]
    if min_per_split:
        if count < min_per_split * len(active):
            raise ValueError(
                f"class {cls!r} has {count} images, fewer than --min-per-split "
                f"{min_per_split} × {len(active)} splits"
            )
        for name in active:
            while targets[name] < min_per_split:
                donor = max(active, key=lambda n: targets[n] - min_per_split)
                targets[donor] -= 1
                targets[name] += 1
    return targets


def _order_key(seed: int, group_shas: list[str]) -> str:
    # Content, not names, decides the order: renaming files does not reshuffle them.
    return hashlib.sha256(f"{seed}:{min(group_shas)}".encode()).hexdigest()


def assign_splits(
    items: list[Item],
    ratios: dict[str, float],
    *,
    seed: int,
    previous: dict[str, tuple[str, str]],
    min_per_split: int = 0,
    join_reasons: dict[int, str] | None = None,
) -> None:
    """Set ``split`` and ``reason`` on every non-rejected item (see the module docstring).

    ``previous`` maps a path to ``(split, sha256)`` from an earlier manifest.
    """
    join_reasons = join_reasons or {}
    groups: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.group].append(index)
    class_sizes = Counter(item.cls for item in items)
    targets = {cls: class_targets(n, ratios, min_per_split, cls) for cls, n in class_sizes.items()}
    current = {cls: dict.fromkeys(ratios, 0) for cls in class_sizes}
    fresh = []
    for members in groups.values():
        kept = [
            previous[items[i].path][0]
            for i in members
            if items[i].path in previous
            and previous[items[i].path][1] == items[i].sha256
            and previous[items[i].path][0] in ratios
        ]
        if kept:
            split = Counter(kept).most_common(1)[0][0]
            _place(items, members, split, current, "kept from the existing manifest")
        else:
            fresh.append(members)
    fresh.sort(key=lambda members: _order_key(seed, [items[i].sha256 for i in members]))
    for members in fresh:
        cls = Counter(items[i].cls for i in members).most_common(1)[0][0]
        split = max(
            ratios, key=lambda s: (targets[cls][s] - current[cls][s], -SPLIT_NAMES.index(s))
        )
        _place(items, members, split, current, f"stratified by class (seed {seed})")
    for index, text in join_reasons.items():
        items[index].reason = f"{text}: kept in the same split"


def _place(
    items: list[Item],
    members: list[int],
    split: str,
    current: dict[str, dict[str, int]],
    reason: str,
) -> None:
    for index in members:
        items[index].split = split
        items[index].reason = reason
        current[items[index].cls][split] += 1


# --------------------------------------------------------------------------- manifest & files
def read_manifest(output: Path) -> dict[str, tuple[str, str]]:
    path = output / MANIFEST
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {row["path"]: (row["split"], row["sha256"]) for row in csv.DictReader(handle)}


def write_manifest(output: Path, items: list[Item]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    for item in sorted(items, key=lambda it: it.path):
        writer.writerow(
            [
                item.path,
                item.cls,
                item.split,
                item.sha256,
                f"{item.phash:016x}" if not item.rejected else "",
                item.group if not item.rejected else "",
                f"rejected: {item.rejected}" if item.rejected else item.reason,
            ]
        )
    atomic_write_bytes(output / MANIFEST, buffer.getvalue().encode())


def materialise(
    source: Path, output: Path, items: list[Item], mode: str, previous: dict[str, tuple[str, str]]
) -> int:
    """Create ``output/<split>/<class>/...`` for every assigned item; returns files written.

    Files already in place are left alone; a file whose split changed is removed from its old
    split, so nothing is in two splits.
    """
    written = 0
    for item in items:
        if not item.split:
            continue
        old = previous.get(item.path)
        if old and old[0] != item.split:
            stale = output / old[0] / item.path
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
        target = output / item.split / item.path
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source / item.path, target, mode)
        written += 1
    return written


def _link_or_copy(source: Path, target: Path, mode: str) -> None:
    if mode == "hardlink":
        try:
            os.link(source, target)
        except OSError as exc:
            raise ValueError(
                f"cannot hard-link {source} to {target} ({exc.strerror}); "
                "use --mode copy or symlink"
            ) from exc
    elif mode == "symlink":
        os.symlink(source.resolve(), target)
    else:
        copy_atomic(source, target)


@dataclass
class SplitTable:
    """Per-class counts per split, for the printed table and --json."""

    ratios: dict[str, float]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: list[Item], ratios: dict[str, float]) -> SplitTable:
        table = cls(ratios)
        for item in items:
            row = table.rows.setdefault(item.cls, {**dict.fromkeys(ratios, 0), "rejected": 0})
            row[item.split or "rejected"] += 1
        return table
