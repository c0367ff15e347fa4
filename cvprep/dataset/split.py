"""``split``: deterministic, stratified, duplicate-aware train/val/test splits and k folds.

How a split is decided:

1. Every file is hashed (local pool or Ray): SHA-256 of its bytes and a perceptual hash of its
   pixels (files that do not decode are listed as rejected and not split).
2. Files are grouped: identical bytes, perceptual hashes within ``near_threshold`` bits,
   and (optionally) the same ``group`` regex key. A group never straddles two splits (or folds).
3. Files listed in an earlier ``manifest.csv`` in the output keep their split, so adding
   images later never moves existing ones.
4. New groups are visited in an order fixed by the seed and the group's content (not its
   file names), and each goes to the split furthest below its per-class target. Targets come
   from ``ratios`` (rounded by largest remainder: every class lands within one image of its
   ratios, groups larger than one image can add to that), from ``fixed`` counts, or from
   ``kfold`` equal shares.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep.dataset.duplicates import (
    content_hash,
    group_labels,
    near_duplicate_pairs,
    perceptual_hash,
)
from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.output import output_lock, read_record, write_record
from cvprep.dataset.results import Progress, tracked
from cvprep.errors import ImageError, ParameterError
from cvprep.files import EmptyTreeError, TreeProblem, check_separate, class_of, list_tree
from cvprep.io import atomic_write_bytes, copy_atomic, read_image
from cvprep.params import DEFAULT_SEED

COMMAND = "split"
SPLIT_NAMES = ("train", "val", "test")
MODES = ("copy", "hardlink", "symlink")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["path", "class", "split", "sha256", "phash", "group", "reason"]


@dataclass
class Item:
    path: str  # relative to the input folder, "class/.../name"
    cls: str
    sha256: str = ""
    phash: int = 0
    rejected: str = ""  # reason, when the file does not decode
    excluded: str = ""  # reason, when an exclusion list names it
    split: str = ""
    group: int = -1
    reason: str = ""


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """How many images of each class go where: ratios, fixed counts or k folds."""

    names: tuple[str, ...]
    ratios: dict[str, float] | None = None
    fixed: dict[str, int] | None = None
    folds: int | None = None

    def targets(self, count: int, cls: str, min_per_split: int = 0) -> dict[str, int]:
        if self.fixed is not None:
            held_out = sum(self.fixed.values())
            if count <= held_out:
                raise ParameterError(
                    f"class {cls!r} has {count} images, too few for "
                    + " + ".join(f"{n} {name}" for name, n in self.fixed.items())
                    + " and at least 1 train (fixed)"
                )
            return {"train": count - held_out, **self.fixed}
        shares = self.ratios or {name: 1.0 / len(self.names) for name in self.names}
        return class_targets(count, shares, min_per_split, cls)

    def destinations(self, split: str) -> list[str]:
        """The folders under OUT a file of ``split`` is written to."""
        if self.folds is None:
            return [split]
        return [f"{name}/{'val' if name == split else 'train'}" for name in self.names]

    def settings(self) -> dict[str, Any]:
        return {"ratios": self.ratios, "fixed": self.fixed, "kfold": self.folds}


def parse_ratios(value: str | Sequence[float] | dict[str, float]) -> dict[str, float]:
    """``"0.8,0.1,0.1"`` → ``{"train": .8, "val": .1, "test": .1}`` (two values: no test)."""
    if isinstance(value, dict):
        value = [value.get(name, 0.0) for name in SPLIT_NAMES]
    try:
        values = (
            [float(part) for part in value.split(",")]
            if isinstance(value, str)
            else [float(v) for v in value]
        )
    except (TypeError, ValueError):
        raise ParameterError(
            f"`ratios` should be 2 or 3 comma-separated numbers. Received: ratios={value!r}"
        ) from None
    if len(values) not in (2, 3) or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ParameterError(
            "`ratios` should be 2 or 3 non-negative numbers summing to 1. "
            f"Received: ratios={value!r}"
        )
    if values[0] == 0:
        raise ParameterError(
            f"`ratios` should give the train split a share. Received: ratios={value!r}"
        )
    return dict(zip(SPLIT_NAMES, values, strict=False))


def parse_fixed(value: str | Sequence[int]) -> dict[str, int]:
    """``"100,100"`` → ``{"val": 100, "test": 100}`` images per class (one value: no test)."""
    try:
        values = (
            [int(part) for part in value.split(",")]
            if isinstance(value, str)
            else [int(v) for v in value]
        )
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 2) or any(v < 0 for v in values) or not any(values):
        raise ParameterError(
            "`fixed` should be VAL or VAL,TEST image counts per class (non-negative, not all 0). "
            f"Received: fixed={value!r}"
        )
    return dict(zip(("val", "test"), values, strict=False))


def make_plan(
    ratios: str | Sequence[float] | dict[str, float] | None,
    fixed: str | Sequence[int] | None,
    kfold: int | None,
) -> Plan:
    chosen = [
        name
        for name, v in (("ratios", ratios), ("fixed", fixed), ("kfold", kfold))
        if v is not None
    ]
    if len(chosen) > 1:
        raise ParameterError(
            f"give one of `ratios`, `fixed` or `kfold`. Received: {', '.join(chosen)}"
        )
    if kfold is not None:
        if isinstance(kfold, bool) or not isinstance(kfold, int) or kfold < 2:
            raise ParameterError(f"`kfold` should be an integer >= 2. Received: kfold={kfold!r}")
        return Plan(tuple(f"fold_{i}" for i in range(1, kfold + 1)), folds=kfold)
    if fixed is not None:
        counts = parse_fixed(fixed)
        return Plan(("train", *counts), fixed=counts)
    shares = parse_ratios(ratios if ratios is not None else "0.8,0.1,0.1")
    return Plan(tuple(shares), ratios=shares)


def class_targets(
    count: int, ratios: dict[str, float], min_per_split: int, cls: str
) -> dict[str, int]:
    """Integer per-split counts for one class (largest remainder), with a floor."""
    raw = {name: count * ratio for name, ratio in ratios.items()}
    targets = {name: int(value) for name, value in raw.items()}
    order = list(ratios)
    by_remainder = sorted(raw, key=lambda n: (-(raw[n] - targets[n]), order.index(n)))
    for name in by_remainder[: count - sum(targets.values())]:
        targets[name] += 1
    active = [name for name, ratio in ratios.items() if ratio > 0]
    if min_per_split:
        if count < min_per_split * len(active):
            raise ParameterError(
                f"class {cls!r} has {count} images, fewer than min_per_split "
                f"{min_per_split} × {len(active)} splits"
            )
        for name in active:
            while targets[name] < min_per_split:
                donor = max(active, key=lambda n: targets[n] - min_per_split)
                targets[donor] -= 1
                targets[name] += 1
    return targets


# --------------------------------------------------------------------------- hashing
@dataclass(frozen=True)
class HashTask:
    root: str
    relative: str

    @property
    def source(self) -> str:
        return os.path.join(self.root, self.relative)


def hash_one(task: HashTask, data: bytes | None = None) -> Item:
    item = Item(task.relative, class_of(Path(task.relative)) or "")
    try:
        if data is None:
            data = Path(task.source).read_bytes()
        item.sha256 = content_hash(data)
        # Half-size decoding is plenty for a 32×32 perceptual hash and much faster.
        item.phash = perceptual_hash(read_image(data, reduce=2))
    except ImageError as exc:
        item.rejected = f"{exc.kind}: {exc.reason}"
    except OSError as exc:
        item.rejected = f"unreadable: cannot read file ({exc.strerror})"
    return item


# --------------------------------------------------------------------------- grouping
def group_items(
    items: list[Item], *, near_threshold: int | None, group_regex: str | None
) -> dict[int, str]:
    """Set ``item.group`` for every item; returns why each joined item was joined."""
    pairs: list[np.ndarray] = []
    why: dict[tuple[int, int], str] = {}
    by_sha: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.sha256 in by_sha:
            first = by_sha[item.sha256]
            pairs.append(np.array([[first, index]]))
            why[(first, index)] = f"exact duplicate of {items[first].path}"
        else:
            by_sha[item.sha256] = index
    if near_threshold is not None:
        near = near_duplicate_pairs([it.phash for it in items], near_threshold)
        pairs.append(near)
        for i, j in near:
            distance = (items[i].phash ^ items[j].phash).bit_count()
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
                    (by_key[key], index), f"same group key {key!r} as {items[by_key[key]].path}"
                )
            else:
                by_key[key] = index
    edges = np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64)
    for item, label in zip(items, group_labels(len(items), edges), strict=True):
        item.group = int(label)
    reasons: dict[int, str] = {}
    for (_first, later), text in why.items():
        reasons.setdefault(later, text)
    return reasons


def cross_class_groups(items: list[Item]) -> list[list[str]]:
    """Groups whose files sit in more than one class: label conflicts, reported, never resolved."""
    classes: dict[int, set[str]] = defaultdict(set)
    members: dict[int, list[str]] = defaultdict(list)
    for item in items:
        classes[item.group].add(item.cls)
        members[item.group].append(item.path)
    return [sorted(members[g]) for g in sorted(classes) if len(classes[g]) > 1]


# --------------------------------------------------------------------------- assignment
def _order_key(seed: int, group_shas: list[str]) -> str:
    # Content, not names, decides the order: renaming files does not reshuffle them.
    return hashlib.sha256(f"{seed}:{min(group_shas)}".encode()).hexdigest()


def assign_splits(
    items: list[Item],
    plan: Plan,
    *,
    seed: int,
    previous: dict[str, tuple[str, str]],
    min_per_split: int = 0,
    join_reasons: dict[int, str] | None = None,
) -> None:
    """Set ``split`` and ``reason`` on every item (see the module docstring).

    ``previous`` maps a path to ``(split, sha256)`` from an earlier manifest.
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.group].append(index)
    class_sizes = Counter(item.cls for item in items)
    targets = {cls: plan.targets(n, cls, min_per_split) for cls, n in class_sizes.items()}
    current = {cls: dict.fromkeys(plan.names, 0) for cls in class_sizes}
    fresh = []
    for members in groups.values():
        kept = [
            previous[items[i].path][0]
            for i in members
            if items[i].path in previous
            and previous[items[i].path][1] == items[i].sha256
            and previous[items[i].path][0] in plan.names
        ]
        if kept:
            split = Counter(kept).most_common(1)[0][0]
            _place(items, members, split, current, "kept from the existing manifest")
        else:
            fresh.append(members)
    fresh.sort(key=lambda members: _order_key(seed, [items[i].sha256 for i in members]))
    reason = f"stratified by class (seed {seed})"
    for members in fresh:
        cls = Counter(items[i].cls for i in members).most_common(1)[0][0]
        split = max(
            plan.names, key=lambda s: (targets[cls][s] - current[cls][s], -plan.names.index(s))
        )
        _place(items, members, split, current, reason)
    for index, text in (join_reasons or {}).items():
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
        hashed = not item.rejected
        if item.rejected:
            why = f"rejected: {item.rejected}"
        elif item.excluded:
            why = f"excluded: {item.excluded}"
        else:
            why = item.reason
        writer.writerow(
            [
                item.path,
                item.cls,
                item.split,
                item.sha256,
                f"{item.phash:016x}" if hashed else "",
                item.group if hashed and item.group >= 0 else "",
                why,
            ]
        )
    atomic_write_bytes(output / MANIFEST, buffer.getvalue().encode())


def materialise(
    source: Path,
    output: Path,
    items: list[Item],
    plan: Plan,
    mode: str,
    previous: dict[str, tuple[str, str]],
) -> int:
    """Create ``output/<destination>/<class>/...`` for every assigned item; returns files
    written. Files already in place are left alone; a file whose split changed is removed from
    its old place, so nothing is in two splits."""
    written = 0
    for item in items:
        if not item.split:
            continue
        wanted = plan.destinations(item.split)
        old = previous.get(item.path)
        if old and old[0] != item.split and old[0] in plan.names:
            for stale in set(plan.destinations(old[0])) - set(wanted):
                stale_path = output / stale / item.path
                if stale_path.is_file() or stale_path.is_symlink():
                    stale_path.unlink()
        for destination in wanted:
            target = output / destination / item.path
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
            raise ParameterError(
                f"cannot hard-link {source} to {target} ({exc.strerror}); use mode copy or symlink"
            ) from exc
    elif mode == "symlink":
        os.symlink(source.resolve(), target)
    else:
        copy_atomic(source, target)


# --------------------------------------------------------------------------- exclusions
def read_exclusions(spec: str | os.PathLike[str]) -> dict[str, str]:
    """Paths to leave out, from a findings/report CSV with ``path`` and ``issue`` (or ``kind``)
    columns. ``"findings.csv:blurry,dark"`` keeps only rows of those issue kinds."""
    text = os.fspath(spec)
    kinds: set[str] | None = None
    if not Path(text).is_file() and ":" in text:
        text, _, wanted = text.rpartition(":")
        kinds = {k.strip() for k in wanted.split(",") if k.strip()}
    path = Path(text)
    if not path.is_file():
        raise ParameterError(
            f"`exclude` should name an existing CSV file. Received: exclude={spec!r}"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ParameterError(f"{path} has no `path` column")
        column = "issue" if "issue" in reader.fieldnames else "kind"
        excluded: dict[str, str] = {}
        for row in reader:
            kind = row.get(column) or "listed"
            if kinds is None or kind in kinds:
                excluded.setdefault(row["path"], f"{kind} (listed in {path.name})")
    return excluded


# --------------------------------------------------------------------------- the job
@dataclass
class SplitResult:
    """Per-class counts per split, what was written, and every file's fate."""

    source: Path
    output: Path
    names: tuple[str, ...]
    items: list[Item]
    written: int = 0
    dry_run: bool = False
    grouped: int = 0
    conflicts: list[list[str]] = field(default_factory=list)

    @property
    def rows(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for item in self.items:
            row = table.setdefault(
                item.cls, {**dict.fromkeys(self.names, 0), "rejected": 0, "excluded": 0}
            )
            key = "rejected" if item.rejected else "excluded" if item.excluded else item.split
            row[key] += 1
        return dict(sorted(table.items()))

    @property
    def rejected(self) -> dict[str, str]:
        return {item.path: item.rejected for item in self.items if item.rejected}

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": self.rows,
            "splits": list(self.names),
            "written": self.written,
            "dry_run": self.dry_run,
            "rejected": self.rejected,
            "excluded": {i.path: i.excluded for i in self.items if i.excluded},
            "grouped": self.grouped,
            "label_conflicts": self.conflicts,
            "manifest": str(self.output / MANIFEST),
        }


def split(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ratios: str | Sequence[float] | dict[str, float] | None = None,
    fixed: str | Sequence[int] | None = None,
    kfold: int | None = None,
    seed: int = DEFAULT_SEED,
    mode: str = "copy",
    group: str | None = None,
    near_threshold: int | None = 6,
    min_per_split: int = 0,
    exclude: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> SplitResult:
    """Split the class folders under ``source`` into ``output/train``, ``output/val`` and
    ``output/test`` (or ``output/fold_i/{train,val}``).

    Stratified per class, reproducible for a seed, and stable: images listed in an existing
    ``output/manifest.csv`` keep their split when new images are added. Exact and near
    duplicates (resized or re-encoded copies) always land in the same split or fold.

    Parameters
    ----------
    source, output : path
        A folder of class subfolders, and where to write the split.
    ratios : "TRAIN,VAL[,TEST]" or sequence, optional
        Shares summing to 1 (default ``0.8,0.1,0.1``).
    fixed : "VAL[,TEST]" or sequence, optional
        Fixed numbers of images per class for val (and test); the rest goes to train. A class
        too small for them is refused.
    kfold : int, optional
        ``K`` stratified folds: ``output/fold_i/val`` holds fold ``i``, ``output/fold_i/train``
        the other folds.
    seed : int
        Decides the assignment (with the files' content, not their names).
    mode : {"copy", "hardlink", "symlink"}
        How files get into ``output``.
    group : str, optional
        A regex: files whose names give the same match (group 1 if any) stay together.
    near_threshold : int or None
        Perceptual-hash distance (bits of 64, up to 11) for near duplicates; None groups exact
        duplicates only.
    min_per_split : int
        At least this many images of each class in each split (with ``ratios``).
    exclude : path, optional
        Leave out the files listed in a CSV with a ``path`` column (``cvprep inspect``'s
        findings); ``"findings.csv:blurry,dark"`` only those issue kinds.
    dry_run : bool
        Decide and count, but write nothing.

    Returns
    -------
    SplitResult
        Its ``conflicts`` lists groups of identical pictures filed under different classes:
        they are kept (in one split) and reported, never silently resolved.

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset, split
    >>> photos = make_shapes_dataset(tmp / "photos", per_class=10)
    >>> result = split(photos, tmp / "data", ratios="0.6,0.2,0.2", seed=1, workers=0)
    >>> result.rows["round"]
    {'train': 6, 'val': 2, 'test': 2, 'rejected': 0, 'excluded': 0}
    >>> folds = split(photos, tmp / "folds", kfold=5, workers=0)
    >>> len(list((tmp / "folds" / "fold_1" / "val" / "round").iterdir()))
    2
    """
    root, out = Path(source), Path(output)
    plan = make_plan(ratios, fixed, kfold)
    if mode not in MODES:
        raise ParameterError(f"`mode` should be one of {', '.join(MODES)}. Received: mode={mode!r}")
    if group:
        try:
            re.compile(group)
        except re.error as exc:
            raise ParameterError(
                f"`group` is not a valid regex ({exc}). Received: group={group!r}"
            ) from None
    if near_threshold is not None and not 0 <= near_threshold <= 11:
        raise ParameterError(
            "`near_threshold` should be between 0 and 11 or None. "
            f"Received: near_threshold={near_threshold}"
        )
    excluded = read_exclusions(exclude) if exclude is not None else {}
    check_separate(root, out)
    tree = list_tree(root)
    files = tree.in_classes()
    if not files:
        raise EmptyTreeError(root, "no image files in class subfolders")
    previous_record = read_record(out)
    if previous_record.get("command") == COMMAND and not dry_run:
        _check_same_layout(out, previous_record, plan)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    tasks = [HashTask(str(root), str(path)) for path in files if str(path) not in excluded]
    items = list(tracked(runner.map(hash_one, tasks), len(tasks), "hashing", progress))
    items += [
        Item(str(path), class_of(path) or "", excluded=excluded[str(path)])
        for path in files
        if str(path) in excluded
    ]
    items += [_problem_item(problem) for problem in tree.problems]
    items.sort(key=lambda item: item.path)  # the pool returns them in any order
    good = [item for item in items if not item.rejected and not item.excluded]
    reasons = group_items(good, near_threshold=near_threshold, group_regex=group)
    result = SplitResult(
        root,
        out,
        plan.names,
        items,
        dry_run=dry_run,
        grouped=len(reasons),
        conflicts=cross_class_groups(good),
    )
    if dry_run:
        assign_splits(
            good,
            plan,
            seed=seed,
            previous=read_manifest(out),
            min_per_split=min_per_split,
            join_reasons=reasons,
        )
        return result
    with output_lock(out, COMMAND):
        previous = read_manifest(out)
        assign_splits(
            good,
            plan,
            seed=seed,
            previous=previous,
            min_per_split=min_per_split,
            join_reasons=reasons,
        )
        settings = {
            **plan.settings(),
            "seed": seed,
            "mode": mode,
            "group": group,
            "near_threshold": near_threshold,
            "exclude": os.fspath(exclude) if exclude else None,
        }
        write_record(out, COMMAND, settings, status="in progress")
        result.written = materialise(root, out, good, plan, mode, previous)
        write_manifest(out, items)
        write_record(
            out,
            COMMAND,
            settings,
            status="finished",
            extra={"source": str(root.resolve()), "summary": result.rows},
        )
    return result


def _problem_item(problem: TreeProblem) -> Item:
    return Item(
        problem.path,
        class_of(Path(problem.path)) or "",
        rejected=f"{problem.kind}: {problem.reason}",
    )


def _check_same_layout(out: Path, record: dict[str, Any], plan: Plan) -> None:
    """Re-running into an earlier split's output adds images to it; it may not switch between
    train/val/test and k folds, or change the number of folds."""
    before = record.get("settings", {}).get("kfold")
    if before != plan.folds:
        layout = {None: "train/val/test"}
        raise ParameterError(
            f"{out} holds a {layout.get(before, f'{before}-fold')} split; this one would be "
            f"{layout.get(plan.folds, f'{plan.folds}-fold')}: use a new output folder"
        )
