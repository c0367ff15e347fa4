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
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import params
from cvprep.dataset.duplicates import (
    content_hash,
    group_labels,
    near_duplicate_pairs,
    perceptual_hash,
)
from cvprep.dataset.engines import Engine, LocalEngine, make_engine
from cvprep.dataset.labels import LabelSpec
from cvprep.dataset.output import (
    SettingsMismatchError,
    has_content,
    output_lock,
    read_record,
    remove_stale,
    write_record,
)
from cvprep.dataset.results import Progress, tracked
from cvprep.dataset.sources import (
    Problem,
    ReadFailure,
    Source,
    SourceFile,
    fetch,
    mapped,
    open_source,
    place,
    releases_readers,
)
from cvprep.errors import CvprepError, ImageError, ParameterError, filesystem_errors
from cvprep.files import EmptyTreeError, check_can_write, check_separate
from cvprep.io import atomic_write_bytes, read_image
from cvprep.params import DEFAULT_SEED

COMMAND = "split"
SPLIT_NAMES = ("train", "val", "test")
MODES = ("copy", "hardlink", "symlink")
MANIFEST = "manifest.csv"
# Images with fewer pixels than the perceptual hash's 32×32 grid take no part in
# near-duplicate grouping: the hash upsamples them, and distinct small pictures (8×8 digits:
# 45 different sixes in one group) then collide. Exact copies are still grouped. A resized
# copy such as 40×30 has enough pixels and is still found.
NEAR_MIN_PIXELS = 32 * 32
MANIFEST_COLUMNS = ["path", "class", "split", "sha256", "phash", "group", "reason", "file"]
HELD_OUT = ("val", "test")  # splits a source may already have that a split keeps
MAX_FOLDS = 100
MAX_NEAR_THRESHOLD = 11
# Settings that decide where files go: a re-run into an OUT made with others is refused
# (or, with ``overwrite``, re-splits it). Values for records written before a key existed.
BINDING_SETTINGS = {
    "ratios": None,
    "fixed": None,
    "kfold": None,
    "seed": None,
    "mode": "copy",
    "group": None,
    "near_threshold": 6,
    "min_per_split": 0,
    "labels": None,
    "images": None,
}


@dataclass
class Item:
    path: str  # its name in the source ("class/.../name" in a folder)
    cls: str
    relative: str = ""  # its path inside a split folder of OUT
    given: str = ""  # the split the source puts it in ("" when none)
    file: SourceFile | None = None
    sha256: str = ""
    phash: int = 0
    tiny: bool = False  # too small for the perceptual hash: exact duplicates only
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
        if self.folds is not None and count < self.folds:
            raise ParameterError(
                f"`kfold` is too large: class {cls!r} has {count} images, fewer than "
                f"kfold={self.folds}: every fold needs a validation image of each class; use "
                "fewer folds"
            )
        shares = self.ratios or {name: 1.0 / len(self.names) for name in self.names}
        targets = class_targets(count, shares, min_per_split, cls)
        if self.ratios is not None and targets["train"] == 0:
            raise ParameterError(
                f"`ratios` give class {cls!r} ({count} images) no training image. "
                f"Received: ratios={','.join(f'{v:g}' for v in self.ratios.values())}"
            )
        return targets

    def destinations(self, split: str) -> list[str]:
        """The folders under OUT a file of ``split`` is written to."""
        if self.folds is None or split not in self.names:  # a split the source holds out
            return [split]
        return [f"{name}/{'val' if name == split else 'train'}" for name in self.names]

    def without(self, held: set[str]) -> Plan:
        """The plan for the files a source does not hold out, when it already holds ``held``
        (val and/or test): those splits are kept as they are, the rest is divided among the
        other splits, the ratios rescaled (fixed counts of held splits dropped)."""
        if not held or self.folds is not None:
            if self.folds is not None and "val" in held:
                raise ParameterError(
                    "`kfold`: the source already has a val/ split; k folds are made from "
                    "the images of a source without one (a test/ split is kept as it is)"
                )
            return self
        if self.fixed is not None:
            fixed = {name: n for name, n in self.fixed.items() if name not in held}
            return Plan(("train", *fixed), fixed=fixed)
        assert self.ratios is not None
        kept = {name: share for name, share in self.ratios.items() if name not in held}
        total = sum(kept.values())
        return Plan(tuple(kept), ratios={name: share / total for name, share in kept.items()})

    def output_names(self, held: set[str]) -> tuple[str, ...]:
        """Every split folder of OUT: the plan's and those the source holds out."""
        extra = tuple(name for name in HELD_OUT if name in held and name not in self.names)
        return self.names + extra

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
    if (
        len(values) not in (2, 3)
        or not all(math.isfinite(v) and v >= 0 for v in values)
        or abs(sum(values) - 1) > 1e-6
    ):
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
        kfold = params.check_int("kfold", kfold, minimum=2, maximum=MAX_FOLDS)
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
                f"class {cls!r} has {count} images, fewer than `min_per_split`={min_per_split} "
                f"× {len(active)} splits"
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
    file: SourceFile


def hash_one(task: HashTask, data: bytes | ReadFailure | None = None) -> Item:
    item = _item(task.file)
    try:
        raw = fetch(task.file, data)
        item.sha256 = content_hash(raw)
        # Half-size decoding is plenty for a 32×32 perceptual hash and much faster.
        image = read_image(raw, reduce=2)
        if _pixels(image) < NEAR_MIN_PIXELS:  # small, or a small JPEG halved
            image = read_image(raw)
        item.phash = perceptual_hash(image)
        item.tiny = _pixels(image) < NEAR_MIN_PIXELS
    except ImageError as exc:
        item.rejected = f"{exc.kind}: {exc.reason}"
    return item


def _pixels(image: np.ndarray) -> int:
    return image.shape[0] * image.shape[1]


def _item(file: SourceFile, **details: Any) -> Item:
    return Item(file.name, file.cls, file.relative, file.split, file, **details)


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
        hashed = np.array([index for index, it in enumerate(items) if not it.tiny], np.int64)
        near = hashed[near_duplicate_pairs([items[i].phash for i in hashed], near_threshold)]
        pairs.append(near.reshape(-1, 2))
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
            match = pattern.search(Path(item.relative or item.path).name)
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

    ``previous`` maps a path to ``(split, sha256, ...)`` from an earlier manifest. Items the
    source already holds out (``given`` val or test) keep that split, and so does their
    whole group: a copy given another split is excluded (never in two splits).
    """
    groups: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.group].append(index)
    free = []
    for members in groups.values():
        if any(items[i].given in HELD_OUT for i in members):
            _keep_given(items, members)
        else:
            free.append(members)
    class_sizes = Counter(items[i].cls for members in free for i in members)
    targets = {cls: plan.targets(n, cls, min_per_split) for cls, n in class_sizes.items()}
    current = {cls: dict.fromkeys(plan.names, 0) for cls in class_sizes}
    fresh = []
    for members in free:
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
        if not items[index].excluded:
            items[index].reason = f"{text}: kept in the same split"


def _keep_given(items: list[Item], members: list[int]) -> None:
    """A group holding files the source puts in val or test: it stays there (test first);
    its other files are copies that would leak, and are left out."""
    given = {items[i].given for i in members}
    split = "test" if "test" in given else "val"
    anchor = next(items[i] for i in members if items[i].given == split)
    for index in members:
        item = items[index]
        if item.given == split:
            item.split, item.reason = split, f"kept in {split}/, as the source has it"
        else:
            item.excluded = (
                f"a copy of {anchor.path}, which the source puts in {split}/: left out so "
                "that no picture is in two splits"
            )


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
def read_manifest(output: Path) -> dict[str, tuple[str, str, str]]:
    """An earlier run's manifest: each name's ``(split, sha256, file)``."""
    path = output / MANIFEST
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        # A damaged manifest only costs its promises (kept splits, vouched copies): every
        # copy it no longer vouches for is checked against its input.
        return {
            row["path"]: (
                row.get("split") or "",
                row.get("sha256") or "",
                row.get("file") or row["path"],  # manifests before sources: the path
            )
            for row in csv.DictReader(handle)
            if row.get("path")
        }


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
                item.relative,
            ]
        )
    atomic_write_bytes(output / MANIFEST, buffer.getvalue().encode())


SPLIT_FOLDER = re.compile(r"^(train|val|test|fold_\d+)$")


@dataclass
class Changes:
    """What a run changed in OUT besides new files."""

    written: int = 0
    replaced: list[str] = field(default_factory=list)  # in OUT: a copy that was not its input
    removed: list[str] = field(default_factory=list)  # in OUT: files no split should hold


def materialise(
    source: Source,
    output: Path,
    items: list[Item],
    plan: Plan,
    mode: str,
    manifest: dict[str, tuple[str, str, str]],
    runner: Engine | None = None,
) -> Changes:
    """Make OUT's split folders hold exactly the assigned items, each a copy (or link) of its
    input as it is now.

    Everything else in those folders goes first — files of deleted or excluded inputs, files
    whose split changed, leftovers of an interrupted run or of another layout — so that no
    file is ever in two splits, even when this run is killed midway. Then every missing or
    outdated file is written. ``manifest`` (the previous run's) only saves re-reading copies
    that it vouches for."""
    wanted = {
        f"{destination}/{item.relative}": item
        for item in items
        if item.split
        for destination in plan.destinations(item.split)
    }
    roots = [p.name for p in output.iterdir() if p.is_dir() and SPLIT_FOLDER.match(p.name)]
    changes = Changes(removed=remove_stale(output, set(wanted), roots))
    pending: dict[SourceFile, list[Path]] = defaultdict(list)
    for relative, item in sorted(wanted.items()):
        target = output / relative
        if not (target.exists() or target.is_symlink()):
            changes.written += 1
        elif _is_copy_of(item, target, mode, manifest):
            continue
        else:
            changes.replaced.append(relative)
        assert item.file is not None
        pending[item.file].append(target)
    _write(source, pending, mode, runner)
    return changes


def _write(
    source: Source, pending: dict[SourceFile, list[Path]], mode: str, runner: Engine | None
) -> None:
    """Write every target: files of their own are copied or linked where they are; the
    bytes of archive members and array images are read once each (one pass over a
    compressed tar)."""
    for file, targets in pending.items():
        if file.path is not None:
            for target in targets:
                _link_or_copy(file, target, mode)
    unread = [file for file in pending if file.path is None]
    if isinstance(runner, LocalEngine) and runner.workers and not source.sequential:
        # Members of a zip (or images of an .npz) are inflated and written by the pool,
        # each worker from its own open archive: a folder's copies are cheap kernel copies,
        # these are not. Local workers only: they write to this machine's OUT.
        tasks = [(file, tuple(pending[file])) for file in unread]
        for failure in runner.map(_place_member, tasks):
            if failure:
                raise CvprepError(failure)
        return
    for file, data in source.read_all(unread):
        if isinstance(data, ReadFailure):  # it was read when hashed: changed since
            raise CvprepError(f"{file.name}: {data.reason} (it changed during the split)")
        for target in pending[file]:
            place(file, target, data=data)


def _place_member(task: tuple[SourceFile, tuple[Path, ...]]) -> str:
    """Write one archive member to its targets (in a worker); why not, if it cannot be read."""
    file, targets = task
    try:
        data = file.read()
    except ImageError as exc:  # it was read when hashed: changed since
        return f"{file.name}: {exc.reason} (it changed during the split)"
    for target in targets:
        place(file, target, data=data)
    return ""


def _is_copy_of(
    item: Item, target: Path, mode: str, manifest: dict[str, tuple[str, str, str]]
) -> bool:
    """Whether ``target`` already is what this run would write for ``item``."""
    assert item.file is not None
    if mode == "symlink":
        assert item.file.path is not None
        return target.is_symlink() and os.readlink(target) == str(Path(item.file.path).resolve())
    if target.is_symlink():
        return False
    if mode == "hardlink":
        assert item.file.path is not None
        return os.path.samefile(item.file.path, target)
    vouched = manifest.get(item.path, ("", ""))[1] == item.sha256
    if vouched and target.stat().st_size == item.file.size:
        return True
    return content_hash(target.read_bytes()) == item.sha256


def _link_or_copy(file: SourceFile, target: Path, mode: str) -> None:
    """Create or replace ``target`` atomically: a reader never sees a partial file."""
    if mode == "copy":
        place(file, target)
        return
    assert file.path is not None
    source = Path(file.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    temporary.unlink(missing_ok=True)
    if mode == "hardlink":
        try:
            os.link(source, temporary)
        except OSError as exc:
            raise ParameterError(
                f"cannot hard-link {source} to {target} ({exc.strerror}); use mode copy or symlink"
            ) from exc
    else:
        os.symlink(source.resolve(), temporary)
    os.replace(temporary, target)


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
    replaced: list[str] = field(default_factory=list)  # OUT files rewritten from their input
    removed: dict[str, str] = field(default_factory=dict)  # OUT file → why it had to go

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
            "replaced": self.replaced,
            "removed": self.removed,
            "dry_run": self.dry_run,
            "rejected": self.rejected,
            "excluded": {i.path: i.excluded for i in self.items if i.excluded},
            "grouped": self.grouped,
            "label_conflicts": self.conflicts,
            "manifest": str(self.output / MANIFEST),
        }


@filesystem_errors
@releases_readers
def split(
    source: str | os.PathLike[str] | Source,
    output: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
    ratios: str | Sequence[float] | dict[str, float] | None = None,
    fixed: str | Sequence[int] | None = None,
    kfold: int | None = None,
    seed: int = DEFAULT_SEED,
    mode: str = "copy",
    group: str | None = None,
    near_threshold: int | None = 6,
    min_per_split: int = 0,
    exclude: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
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

    A re-run brings ``output`` in line with ``source``: new images are added, changed ones
    are copied again (``replaced``), the copies of deleted or excluded ones are removed
    (``removed``, with the reason), and what an interrupted run left is tidied up — the
    removals first, so no file is ever in two splits. A re-run with other settings (seed,
    ratios, fixed, kfold, mode, group, near_threshold, min_per_split) is refused unless
    ``overwrite``, which re-splits the folder.

    Parameters
    ----------
    source, output : path
        A folder of class subfolders, and where to write the split.
    ratios : "TRAIN,VAL[,TEST]" or sequence, optional
        Shares summing to 1 (default ``0.8,0.1,0.1``); every class must get a training image.
    fixed : "VAL[,TEST]" or sequence, optional
        Fixed numbers of images per class for val (and test); the rest goes to train. A class
        too small for them is refused.
    kfold : int, optional
        ``K`` stratified folds: ``output/fold_i/val`` holds fold ``i``, ``output/fold_i/train``
        the other folds. Every class needs at least ``K`` images.
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
    overwrite : bool
        Re-split an ``output`` made with other settings (files move between splits).
    dry_run : bool
        Decide and count, but write nothing.

    Returns
    -------
    SplitResult
        Its ``conflicts`` lists groups of identical pictures filed under different classes:
        they are kept (in one split) and reported, never silently resolved. Files outside
        class folders are listed as rejected.

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
    data = open_source(source, labels=labels, images=images)
    root, out = data.location, Path(output)
    plan = make_plan(ratios, fixed, kfold)
    settings = _settings(plan, seed, mode, group, near_threshold, min_per_split, exclude)
    settings.update({"labels": None, "images": None, **data.settings()})
    params.check_bool("overwrite", overwrite)
    params.check_bool("dry_run", dry_run)
    if mode != "copy" and not data.on_disk:
        raise ParameterError(
            f"`mode` {mode} links files, and the images of {root.name} are not files of their "
            "own (archive members or arrays): use mode copy"
        )
    excluded = read_exclusions(exclude) if exclude is not None else {}
    check_separate(root, out)
    if not dry_run:
        check_can_write(out)
    files = [file for file in data.files if file.cls]
    if not files:
        hint = "for classes in the file names use --labels name" if data.files else ""
        raise EmptyTreeError(root, "no image files in class subfolders", hint)
    held = {file.split for file in files if file.split in HELD_OUT}
    assigned = plan.without(held)
    _check_class_sizes(files, excluded, assigned)
    _check_previous_run(out, settings, overwrite)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    items = _hashed_items(runner, data, files, excluded, progress)
    good = [item for item in items if not item.rejected and not item.excluded]
    reasons = group_items(good, near_threshold=near_threshold, group_regex=group)
    result = SplitResult(
        root,
        out,
        assigned.output_names(held),
        items,
        dry_run=dry_run,
        grouped=len(reasons),
        conflicts=cross_class_groups(good),
    )
    if dry_run:
        previous = {} if overwrite else read_manifest(out)
        _assign(good, assigned, settings, previous, reasons)
        return result
    with output_lock(out, COMMAND):
        _check_previous_run(out, settings, overwrite)  # again: another job may have finished
        manifest = read_manifest(out)
        _assign(good, assigned, settings, {} if overwrite else manifest, reasons)
        write_record(out, COMMAND, settings, status="in progress")
        changes = materialise(data, out, good, assigned, mode, manifest, runner)
        result.written, result.replaced = changes.written, changes.replaced
        result.removed = _removal_reasons(changes.removed, items, manifest)
        write_manifest(out, items)
        write_record(
            out,
            COMMAND,
            settings,
            status="finished",
            extra={"source": str(root.resolve()), "summary": result.rows},
        )
    return result


def _settings(
    plan: Plan,
    seed: object,
    mode: object,
    group: str | None,
    near_threshold: object,
    min_per_split: object,
    exclude: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """The run's settings, each checked (the record compares them with a previous run's)."""
    if group is not None:
        if not isinstance(group, str):
            raise params.fail("group", "a regular expression (text)", group)
        try:
            re.compile(group)
        except re.error as exc:
            raise ParameterError(
                f"`group` is not a valid regex ({exc}). Received: group={group!r}"
            ) from None
    return {
        **plan.settings(),
        "seed": params.check_seed(seed),
        "mode": params.check_choice("mode", mode, MODES),
        "group": group or None,
        "near_threshold": params.check_optional_int(
            "near_threshold", near_threshold, minimum=0, maximum=MAX_NEAR_THRESHOLD
        ),
        "min_per_split": params.check_int("min_per_split", min_per_split, minimum=0),
        "exclude": os.fspath(exclude) if exclude else None,
    }


def _check_class_sizes(files: list[SourceFile], excluded: dict[str, str], plan: Plan) -> None:
    """Refuse impossible targets (too few images for the folds or the fixed counts, no
    training image) before hashing every file; the assignment checks again what remains
    after rejects. Files the source holds out are not split, so not counted."""
    counts = Counter(
        file.cls for file in files if file.name not in excluded and file.split not in HELD_OUT
    )
    for cls, count in sorted(counts.items()):
        plan.targets(count, cls)


def _check_previous_run(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """An OUT is new, empty, or an earlier split with the same settings (with ``overwrite``,
    any earlier split). Anything else is refused: re-splitting deletes files there."""
    record = read_record(out)
    if not record:
        if has_content(out):
            raise SettingsMismatchError(
                f"{out} is not empty and has no cvprep run record (cvprep.json): "
                "split into a new output folder"
            )
        return
    if record.get("command") != COMMAND:
        raise SettingsMismatchError(
            f"{out} was made by `cvprep {record.get('command')}`, not `cvprep split`: "
            "split into a new output folder"
        )
    previous = record.get("settings", {})
    changed = [
        name
        for name, default in BINDING_SETTINGS.items()
        if previous.get(name, default) != settings[name]
    ]
    if changed and not overwrite:
        was = ", ".join(_setting_text(n, previous.get(n, BINDING_SETTINGS[n])) for n in changed)
        now = ", ".join(_setting_text(n, settings[n]) for n in changed)
        raise SettingsMismatchError(
            f"{out} holds a split made with {was}; this one has {now}. Use --overwrite "
            "(overwrite=True) to re-split it there (files move between splits), or a new "
            "output folder"
        )


def _setting_text(name: str, value: Any) -> str:
    if name == "kfold":
        return f"a {value}-fold layout" if value else "a train/val/test layout"
    if isinstance(value, dict):  # ratios or fixed counts, as typed on the command line
        value = ",".join(f"{v:g}" for v in value.values())
    return f"{name}={value}"


def _hashed_items(
    runner: Engine,
    source: Source,
    files: list[SourceFile],
    excluded: dict[str, str],
    progress: Progress | None,
) -> list[Item]:
    """An item per file: hashed, or excluded, or rejected (unreadable, a problem of the
    source, or a file without a class), sorted by name."""
    tasks = [HashTask(file) for file in files if file.name not in excluded]
    mapping = mapped(runner, hash_one, tasks, source)
    items = list(tracked(mapping, len(tasks), "hashing", progress))
    items += [_item(file, excluded=excluded[file.name]) for file in files if file.name in excluded]
    items += [_problem_item(problem) for problem in source.problems]
    items += [
        Item(
            file.name,
            ".",
            file.relative,
            file.split,
            file,
            rejected="not_in_class: a file outside the class folders",
        )
        for file in source.files
        if not file.cls
    ]
    items.sort(key=lambda item: item.path)  # the pool returns them in any order
    return items


def _assign(
    good: list[Item],
    plan: Plan,
    settings: dict[str, Any],
    previous: dict[str, tuple[str, str]],
    reasons: dict[int, str],
) -> None:
    assign_splits(
        good,
        plan,
        seed=settings["seed"],
        previous=previous,
        min_per_split=settings["min_per_split"],
        join_reasons=reasons,
    )


def _removal_reasons(
    removed: list[str], items: list[Item], manifest: dict[str, tuple[str, str, str]]
) -> dict[str, str]:
    """Why each file removed from OUT had to go (its path there starts with the split)."""
    by_relative: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_relative[item.relative].append(item)
    listed = {entry[2] for entry in manifest.values()}
    reasons = {}
    for relative in removed:
        parts = relative.split("/")
        path = "/".join(parts[2:] if parts[0].startswith("fold_") else parts[1:])
        candidates = by_relative.get(path, [])
        # The same path in two split folders of the source: the one this folder held.
        item = next((c for c in candidates if c.given == parts[0]), None) or next(
            iter(candidates), None
        )
        if item is None:
            why = "its input was deleted" if path in listed else "not part of this split"
        elif item.excluded:
            why = f"excluded: {item.excluded}"
        elif item.rejected:
            why = f"its input is now rejected: {item.rejected}"
        else:
            why = f"moved to {item.split}"
        reasons[relative] = why
    return reasons


def _problem_item(problem: Problem) -> Item:
    return Item(problem.name, problem.cls or ".", rejected=f"{problem.kind}: {problem.reason}")
