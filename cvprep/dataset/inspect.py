"""``inspect``: audit a dataset before training — duplicates, label conflicts, bad photos.

Every file is read once (local pool or Ray): its SHA-256, a 64-bit perceptual hash, a tiny
normalised gray signature and the measurements of :mod:`cvprep.dataset.quality`. Files that
do not decode get ``verify``'s reasons. Then, over the whole set:

- ``exact_duplicate``: the same bytes as another file of the same class; of two copies, the
  more recently modified is listed (then the one with fewer pixels, then by path);
- ``near_duplicate``: perceptual hashes within ``near_duplicate`` bits (resized, re-encoded,
  brightened copies) *and* signatures that agree everywhere (a different object drawn on the
  same background differs somewhere), same class;
- ``label_conflict``: an exact or near copy filed under another class: both files are listed;
- the quality kinds, each judged against the rest of the dataset with absolute limits
  (:data:`RULES`); scores are in [0, 1], higher is worse, comparable within a kind;
- ``label_issue`` (only with ``labels_check``): a label that out-of-fold class probabilities
  contradict, found by confident learning (:mod:`cvprep.dataset.label_check`).

Thresholds were chosen on the training half of the dev photos (README: measured recall and
false-alarm rates on the other half) and can be set one by one.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import params
from cvprep.dataset.duplicates import content_hash, near_duplicate_pairs
from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.label_check import (
    LabelCheck,
    LabelCheckResult,
    LabelCollector,
    as_label_check,
    sample_image,
)
from cvprep.dataset.labels import LabelSpec
from cvprep.dataset.quality import ImageStats, measure, thumbnail_distance
from cvprep.dataset.results import Progress, ReadTask, tracked
from cvprep.dataset.sources import ReadFailure, Source, fetch, mapped, open_source, releases_readers
from cvprep.errors import ImageError, ParameterError, filesystem_errors
from cvprep.files import EmptyTreeError, check_can_write
from cvprep.io import DEFAULT_MAX_PIXELS, atomic_write_bytes, check_max_pixels, read_image

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate", "label_conflict")
QUALITY_KINDS = (
    "blurry",
    "dark",
    "bright",
    "low_information",
    "odd_aspect_ratio",
    "odd_size",
    "grayscale",
)
LABEL_ISSUE = "label_issue"
FINDINGS_COLUMNS = ["path", "class", "issue", "score", "detail"]
SIGNATURE_LIMIT = 14.0  # thumbnail_distance of true copies: ≤ 10.5 measured; the shapes pair: 17

# What each threshold means, and its default (None: relative to the dataset, see _limits).
RULES = {
    "blurry": "sharpness below (default: 0.46 × the dataset's median, at most 0.11)",
    "dark": "95th-percentile gray level below (default: 0.55 × median, at most 110); by "
    "default also when the median gray level is below 0.3 × the dataset's median, or below "
    "0.55 × it with the shadows crushed (5th percentile at most 1)",
    "bright": "5th-percentile gray level above (default: dataset median + 90, at least 110); "
    "by default also when the median gray level is above the dataset's median + 0.6 × the "
    "room left to 255, with the highlights blown (95th percentile at least 254)",
    "low_information": "gray-level entropy below, in bits (default 3.5); by default also "
    "when the gradient energy is below 3 (a smooth ramp)",
    "odd_aspect_ratio": "long side / short side at or above (default: 1.8 × the dataset's "
    "median, at least 2.5)",
    "odd_size": "pixel count below this fraction of the dataset's median (default 1/20); by "
    "default also a longer side under 32 pixels",
    "grayscale": "mean colour difference below, in gray levels (default 1.0), in a set "
    "whose median is 5 or more",
    "near_duplicate": "perceptual-hash distance at most, in bits of 64 (default 6)",
}


@dataclass
class FileInfo:
    """What one file is: its hashes and measurements, or why it cannot be read."""

    path: str
    cls: str
    sha256: str = ""
    phash: int = 0
    stats: ImageStats | None = None
    kind: str = ""  # a verify reject kind, when it does not decode
    reason: str = ""
    modified: float = 0.0  # the newer of two copies is taken for the copy
    sample: np.ndarray | None = None  # what the label check's model sees, when it runs

    def copy_order(self) -> tuple[float, int, str]:
        """Sort key, original first: older, then more pixels, then path order."""
        pixels = self.stats.width * self.stats.height if self.stats else 0
        return (self.modified, -pixels, self.path)


@dataclass(frozen=True)
class InspectTask(ReadTask):
    sample_size: int = 0  # > 0: also keep a square sample of this size for the label check


def inspect_one(task: ReadTask, data: bytes | ReadFailure | None = None) -> FileInfo:
    file = task.file
    info = FileInfo(file.name, file.cls, modified=file.stamp / 1e9)
    try:
        raw = fetch(file, data)
        info.sha256 = content_hash(raw)
        image = read_image(raw, max_pixels=task.max_pixels)
    except ImageError as exc:
        info.kind, info.reason = exc.kind, exc.reason
        return info
    info.stats = measure(image)
    info.phash = info.stats.phash
    if isinstance(task, InspectTask) and task.sample_size:
        info.sample = sample_image(image, task.sample_size)
    return info


@dataclass
class Finding:
    path: str
    cls: str
    issue: str
    score: float
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.cls,
            "issue": self.issue,
            "score": round(self.score, 4),
            "detail": self.detail,
        }


@dataclass
class InspectResult:
    """Every finding (one per file and issue), the thresholds used, what is typical."""

    source: Path
    files: int
    findings: list[Finding]
    thresholds: dict[str, float] = field(default_factory=dict)
    typical: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    label_check: LabelCheckResult | None = None  # what the label check did, when it ran

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for finding in self.findings:
            counts[finding.issue] += 1
        return dict(sorted(counts.items()))

    def rows(self) -> list[dict[str, Any]]:
        return [finding.row() for finding in self.findings]

    def by_issue(self, issue: str) -> list[Finding]:
        """The findings of one kind, worst first."""
        return sorted((f for f in self.findings if f.issue == issue), key=lambda f: -f.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "counts": self.counts,
            "thresholds": self.thresholds,
            "typical": self.typical,
            "labels_check": self.label_check.to_dict() if self.label_check else None,
            "findings": self.rows(),
        }


@filesystem_errors
@releases_readers
def inspect(
    source: str | os.PathLike[str] | Source,
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    html: str | os.PathLike[str] | None = None,
    thresholds: dict[str, float] | None = None,
    workers: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    labels_check: bool | LabelCheck = False,
    progress: Progress | None = None,
) -> InspectResult:
    """Audit the images of ``source`` (class subfolders, a flat folder, or any source of
    :mod:`cvprep.dataset.sources`, with ``labels`` and ``images`` as for
    :func:`cvprep.dataset.verify`).

    Finds exact and near duplicates, the same picture filed under two classes
    (``label_conflict``), blurry, dark, bright, nearly uniform (``low_information``), strangely
    shaped or far too small images, grayscale pictures in a colour set, and every file
    ``verify`` would reject. ``source`` is never modified.

    Parameters
    ----------
    report : path, optional
        Write the findings as CSV: ``path,class,issue,score,detail`` (``detail`` names the
        other file of a duplicate or conflict); ``split --exclude`` reads it.
    html : path, optional
        Write a report with thumbnails of the worst cases (images in a folder beside it).
    thresholds : dict, optional
        Override a rule's cutoff, e.g. ``{"blurry": 0.09, "near_duplicate": 8}`` (see
        :data:`RULES` for what each number means; an override replaces the rule's default
        criteria, so 0 turns a quality rule off).
    labels_check : bool or LabelCheck
        Also look for wrong labels (``label_issue``, ``detail`` names the class the picture
        looks like) with out-of-fold probabilities and confident learning: ``True`` trains
        a small CNN per fold; ``LabelCheck(weights="imagenet")`` (or a weights file) uses a
        frozen MobileNet α 0.25's features, far more accurate (README). Needs two or more
        classes with two or more images each; a split folder is checked as one set.
        ``result.label_check`` says what the check did.
    workers, engine, ray_address, max_pixels, progress
        As for :func:`cvprep.dataset.verify`.

    Examples
    --------
    >>> from cvprep.dataset import inspect, make_shapes_dataset
    >>> photos = make_shapes_dataset(tmp / "photos", per_class=8, size=96)
    >>> copy = photos / "round" / "round_000.png"
    >>> _ = (photos / "angular" / "mislabeled.png").write_bytes(copy.read_bytes())
    >>> blank = np.full((96, 96, 3), (90, 120, 60), np.uint8)
    >>> _ = cvprep.write_image(photos / "round" / "blank.png", blank)
    >>> result = inspect(photos, report=tmp / "findings.csv", workers=0)
    >>> result.counts
    {'label_conflict': 2, 'low_information': 1}
    >>> for finding in result.by_issue("label_conflict"):
    ...     print(finding.path, "=", finding.detail)
    angular/mislabeled.png = round/round_000.png
    round/round_000.png = angular/mislabeled.png
    """
    started = time.perf_counter()
    data = open_source(source, labels=labels, images=images)
    check_max_pixels(max_pixels)
    if thresholds is not None and not isinstance(thresholds, Mapping):
        raise params.fail("thresholds", "a dict of issue names to numbers", thresholds)
    limits_override = dict(thresholds or {})
    unknown = [repr(name) for name in limits_override if name not in RULES]
    if unknown:
        raise ParameterError(
            f"`thresholds` has unknown issue(s) {', '.join(unknown)}; known: {', '.join(RULES)}"
        )
    check = as_label_check(labels_check)
    for target in (report, html):
        if target is not None:
            check_can_write(target)
    if not data.files and not data.problems:
        raise EmptyTreeError(data.location)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    # Before reading: a dataset the check cannot work on, or weights that do not load, fail fast.
    collector = LabelCollector(check, data.files) if check else None
    size = check.input_size if check else 0
    tasks = [InspectTask(file, max_pixels, size) for file in data.files]
    infos = []
    mapping = mapped(runner, inspect_one, tasks, data)
    for info in tracked(mapping, len(tasks), "inspecting", progress):
        if collector:
            collector.add(info.path, info.sample)
            info.sample = None
        infos.append(info)
    infos.sort(key=lambda info: info.path)
    findings = [Finding(p.name, p.cls, p.kind, 1.0, p.reason) for p in data.problems]
    findings += [Finding(i.path, i.cls, i.kind, 1.0, i.reason) for i in infos if i.kind]
    readable = [info for info in infos if info.stats is not None]
    limits, typical = _limits([info.stats for info in readable], limits_override)
    for info in readable:
        findings.extend(_quality_findings(info, limits, typical))
    copies = _duplicate_findings(readable, int(limits["near_duplicate"]))
    findings.extend(copies)
    checked = (
        collector.finish([(f.path, f.detail) for f in copies], progress) if collector else None
    )
    if checked:
        findings += [
            Finding(s.path, s.given, LABEL_ISSUE, s.score, s.detail) for s in checked.suspects
        ]
    findings.sort(key=lambda f: (f.path, f.issue))
    result = InspectResult(
        data.location, len(data.files), findings, limits, typical, label_check=checked
    )
    if report is not None:
        write_findings(Path(report), result)
    if html is not None:
        from cvprep.dataset.inspect_report import shown, write_html

        wanted = shown(result)
        pictures = {
            file.name: raw
            for file, raw in data.read_all(f for f in data.files if f.name in wanted)
            if isinstance(raw, bytes)
        }
        write_html(Path(html), result, pictures)
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- quality
def _limits(
    stats: list[ImageStats], override: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """The cutoffs for this dataset (see :data:`RULES`) and its typical values."""
    if not stats:
        return {"near_duplicate": override.get("near_duplicate", 6)}, {}
    column = lambda name: np.array([getattr(s, name) for s in stats], np.float64)  # noqa: E731
    long_side = np.maximum(column("width"), column("height"))
    short_side = np.maximum(1.0, np.minimum(column("width"), column("height")))
    typical = {
        "sharpness": float(np.median(column("sharpness"))),
        "luma_low": float(np.median(column("luma_low"))),
        "luma_median": float(np.median(column("luma_median"))),
        "luma_high": float(np.median(column("luma_high"))),
        "colour": float(np.median(column("colour"))),
        "aspect": float(np.median(long_side / short_side)),
        "pixels": float(np.median(column("width") * column("height"))),
    }
    limits = {
        "blurry": min(0.11, 0.46 * typical["sharpness"]),
        "dark": min(110.0, 0.55 * typical["luma_high"]),
        "bright": max(110.0, typical["luma_low"] + 90.0),
        "low_information": 3.5,
        "odd_aspect_ratio": max(2.5, 1.8 * typical["aspect"]),
        "odd_size": 1 / 20,
        "grayscale": 1.0,
        "near_duplicate": 6,
        # Second criteria of three rules; overriding the rule replaces them too.
        "dark_median": 0.0 if "dark" in override else 0.3 * typical["luma_median"],
        "crushed_median": 0.0 if "dark" in override else 0.55 * typical["luma_median"],
        "blown_median": 256.0
        if "bright" in override
        else typical["luma_median"] + 0.6 * (255.0 - typical["luma_median"]),
        "smallest_side": 0.0 if "odd_size" in override else 32.0,
        "least_detail": 0.0 if "low_information" in override else 3.0,
    }
    for name, value in override.items():
        limits[name] = params.check_number(name, value, minimum=0)
    if not 0 <= limits["near_duplicate"] <= 11:
        raise ParameterError(
            "`near_duplicate` should be between 0 and 11 bits. "
            f"Received: near_duplicate={limits['near_duplicate']}"
        )
    return limits, typical


def _below(value: float, limit: float) -> float:
    return min(1.0, max(0.0, (limit - value) / limit)) if limit > 0 else 0.0


def _quality_findings(
    info: FileInfo, limits: dict[str, float], typical: dict[str, float]
) -> list[Finding]:
    s = info.stats
    assert s is not None
    found: list[tuple[str, float, str]] = []
    plain = s.entropy < limits["low_information"] or s.detail < limits["least_detail"]
    if plain:
        score = max(
            _below(s.entropy, limits["low_information"]), _below(s.detail, limits["least_detail"])
        )
        found.append(
            ("low_information", score, f"entropy {s.entropy:.2f} bits, detail {s.detail:.1f}")
        )
    elif s.sharpness < limits["blurry"]:  # a plain picture has no edges, nor colour, to judge
        found.append(
            ("blurry", _below(s.sharpness, limits["blurry"]), f"sharpness {s.sharpness:.3f}")
        )
    # Shadows crushed to black (or highlights blown to white) with the middle pushed far
    # down (up): what darkening by subtraction or a strong gamma does, which keeps a few
    # highlights (shadows) and so escapes the percentile rules.
    crushed = s.luma_low <= 1 and s.luma_median < limits["crushed_median"]
    blown = s.luma_high >= 254 and s.luma_median > limits["blown_median"]
    if s.luma_high < limits["dark"] or s.luma_median < limits["dark_median"] or crushed:
        score = max(
            _below(s.luma_high, limits["dark"]),
            _below(s.luma_median, limits["dark_median"]),
            _below(s.luma_median, limits["crushed_median"]) if crushed else 0.0,
        )
        found.append(
            (
                "dark",
                score,
                f"gray levels 5%/50%/95% {s.luma_low:.0f}/{s.luma_median:.0f}/{s.luma_high:.0f}",
            )
        )
    # For the two "above" rules, 0 turns the rule off like the "below" rules' 0 does.
    if (s.luma_low > limits["bright"] > 0) or blown:
        scores = [(s.luma_low - limits["bright"]) / max(1.0, 255.0 - limits["bright"])]
        if blown:
            scores.append(
                (s.luma_median - limits["blown_median"]) / (256.0 - limits["blown_median"])
            )
        found.append(
            (
                "bright",
                min(1.0, max(scores)),
                f"gray levels 5%/50%/95% {s.luma_low:.0f}/{s.luma_median:.0f}/{s.luma_high:.0f}",
            )
        )
    ratio = max(s.width, s.height) / max(1, min(s.width, s.height))
    if ratio >= limits["odd_aspect_ratio"] > 0:
        score = 1 - limits["odd_aspect_ratio"] / ratio / 2
        found.append(("odd_aspect_ratio", score, f"{s.width}×{s.height}"))
    smallest = limits["odd_size"] * typical["pixels"]
    if s.width * s.height < smallest or max(s.width, s.height) < limits["smallest_side"]:
        found.append(
            ("odd_size", _below(s.width * s.height, max(smallest, 1.0)), f"{s.width}×{s.height}")
        )
    if s.colour < limits["grayscale"] and typical["colour"] >= 5.0 and not plain:
        found.append(("grayscale", _below(s.colour, limits["grayscale"]), f"colour {s.colour:.2f}"))
    return [Finding(info.path, info.cls, issue, score, detail) for issue, score, detail in found]


# --------------------------------------------------------------------------- duplicates
def _duplicate_findings(infos: list[FileInfo], threshold: int) -> list[Finding]:
    """One finding per file and kind, naming the closest other file."""
    best: dict[tuple[int, str], tuple[float, int]] = {}

    def note(index: int, issue: str, score: float, other: int) -> None:
        if (index, issue) not in best or score > best[(index, issue)][0]:
            best[(index, issue)] = (score, other)

    by_sha: dict[str, list[int]] = defaultdict(list)
    for index, info in enumerate(infos):
        by_sha[info.sha256].append(index)
    for group in by_sha.values():
        group.sort(key=lambda member: infos[member].copy_order())  # the original first
        first_of_class: dict[str, int] = {}
        for member in group:
            first_of_class.setdefault(infos[member].cls, member)
        for member in group:
            cls = infos[member].cls
            if first_of_class[cls] != member:
                note(member, "exact_duplicate", 1.0, first_of_class[cls])
            for other_cls, other in first_of_class.items():
                if other_cls != cls:  # never resolved: every copy is listed
                    note(member, "label_conflict", 1.0, other)
    for i, j in near_duplicate_pairs([info.phash for info in infos], threshold).tolist():
        if infos[i].sha256 == infos[j].sha256:
            continue
        signatures = thumbnail_distance(infos[i].stats.thumb, infos[j].stats.thumb)  # type: ignore[union-attr]
        if signatures > SIGNATURE_LIMIT:
            continue
        score = 1.0 - (infos[i].phash ^ infos[j].phash).bit_count() / 64.0 - signatures / 1000.0
        if infos[i].cls != infos[j].cls:
            note(i, "label_conflict", score, j)
            note(j, "label_conflict", score, i)
        else:
            original, copy = sorted((i, j), key=lambda member: infos[member].copy_order())
            note(copy, "near_duplicate", score, original)
    return [
        Finding(infos[i].path, infos[i].cls, issue, score, infos[other].path)
        for (i, issue), (score, other) in best.items()
    ]


# --------------------------------------------------------------------------- output
def write_findings(path: Path, result: InspectResult) -> None:
    """The findings as CSV (``path,class,issue,score,detail``), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, FINDINGS_COLUMNS)
    writer.writeheader()
    writer.writerows(result.rows())
    atomic_write_bytes(path, buffer.getvalue().encode())
