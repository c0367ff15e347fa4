"""What dataset jobs return and report: one record per file, counts per class, progress."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cvprep.files import TreeProblem, class_of
from cvprep.io import atomic_write_bytes

if TYPE_CHECKING:
    from cvprep.dataset.sources import Problem, SourceFile

STATUSES = ("ok", "skipped", "rejected")


@dataclass(frozen=True)
class ReadTask:
    """One file to read, and the pixel limit of the job."""

    file: SourceFile
    max_pixels: int | None


@dataclass
class FileResult:
    """What happened to one input file."""

    path: str  # its name in the source (a path relative to a folder, "train.zip:a.jpg", ...)
    status: str  # "ok", "skipped" (output already there) or "rejected"
    kind: str = ""  # why it was rejected: "unreadable", "truncated", "symlink_loop", ...
    reason: str = ""
    width: int = 0
    height: int = 0
    output: str = ""
    folder: bool = False  # a folder that could not be listed, not a file
    class_name: str | None = None  # its class, when the source says (else from the path)

    @classmethod
    def from_problem(cls, problem: Problem | TreeProblem) -> FileResult:
        """A part of the source that is not a usable file, as a rejected file (a
        :class:`~cvprep.files.TreeProblem`: a folder, counted under the class it is)."""
        if isinstance(problem, TreeProblem):
            parts = Path(problem.path).parts
            folder_class = parts[0] if parts and problem.path != "." else ""
            return cls(
                problem.path,
                "rejected",
                problem.kind,
                problem.reason,
                folder=True,
                class_name=folder_class,
            )
        return cls(
            problem.name,
            "rejected",
            problem.kind,
            problem.reason,
            folder=problem.folder,
            class_name=problem.cls,
        )

    @classmethod
    def of(cls, file: SourceFile, status: str, **details: Any) -> FileResult:
        """The result of one file of a source."""
        return cls(file.name, status, class_name=file.cls, **details)

    @property
    def cls(self) -> str:
        """The class of the file, or "." when it has none (a file at the top level)."""
        if self.class_name is not None:
            return self.class_name or "."
        return class_of(Path(self.path)) or "."


@dataclass
class Summary:
    """Counts per class and the rejected files, built as results stream in."""

    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: FileResult) -> None:
        counts = self.per_class.setdefault(result.cls, dict.fromkeys(STATUSES, 0))
        counts[result.status] += 1
        if result.status == "rejected":
            self.rejected.append(result)

    @property
    def total(self) -> dict[str, int]:
        return {k: sum(c[k] for c in self.per_class.values()) for k in STATUSES}

    @property
    def rejected_by_path(self) -> list[FileResult]:
        return sorted(self.rejected, key=lambda r: r.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "per_class": self.per_class,
            "seconds": round(self.seconds, 3),
            "rejected": [asdict(r) for r in self.rejected_by_path],
        }


class SummarisedResult:
    """``rejected`` and ``ok`` of a job result that keeps a :class:`Summary` as ``summary``."""

    summary: Summary

    @property
    def rejected(self) -> list[FileResult]:
        return self.summary.rejected_by_path

    @property
    def ok(self) -> bool:
        return not self.summary.rejected


class Progress(Protocol):
    """How a job reports progress (the CLI draws a bar; the Python API is silent by default)."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, count: int = 1) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """The default: report nothing."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


def tracked(
    items: Iterable[Any], total: int, label: str, progress: Progress | None
) -> Iterator[Any]:
    """Yield ``items``, advancing ``progress`` after each."""
    bar = progress or NoProgress()
    bar.start(label, total)
    try:
        for item in items:
            yield item
            bar.advance()
    finally:
        bar.finish()


REPORT_COLUMNS = ["path", "class", "status", "kind", "reason", "width", "height", "output"]


def write_report(path: Path, results: Iterable[FileResult]) -> None:
    """CSV with one row per file: path, class, status, kind, reason, width, height, output."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REPORT_COLUMNS)
    for r in results:
        writer.writerow(
            [
                r.path,
                r.cls if r.cls != "." else "",
                r.status,
                r.kind,
                r.reason,
                r.width,
                r.height,
                r.output,
            ]
        )
    atomic_write_bytes(path, buffer.getvalue().encode())
