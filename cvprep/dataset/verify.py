"""``verify``: decode every file of a tree and list the ones that fail, with the reason."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.results import (
    FileResult,
    Progress,
    ReadTask,
    Summary,
    tracked,
    write_report,
)
from cvprep.errors import ImageError
from cvprep.files import EmptyTreeError, check_separate, list_tree
from cvprep.io import DEFAULT_MAX_PIXELS, read_image


def verify_one(task: ReadTask, data: bytes | None = None) -> FileResult:
    """Decode one file (or its already-read ``data``, as the Ray engine passes it)."""
    try:
        image = read_image(data if data is not None else task.source, max_pixels=task.max_pixels)
    except ImageError as exc:
        return FileResult(task.relative, "rejected", exc.kind, exc.reason)
    return FileResult(task.relative, "ok", width=image.shape[1], height=image.shape[0])


@dataclass
class VerifyResult:
    """Every file's result (sorted by path), counts per class, and what was quarantined."""

    source: Path
    results: list[FileResult]
    summary: Summary
    quarantined: list[Path] = field(default_factory=list)

    @property
    def rejected(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "rejected"]

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "quarantined": [str(p) for p in self.quarantined]}


def verify(
    source: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> VerifyResult:
    """Decode every image under ``source`` and list the ones that fail, with the reason.

    Reasons: ``empty``, ``truncated``, ``not_image``, ``too_large``, ``unreadable`` (and
    ``symlink_loop`` for a link back to its own ancestor folder). Hidden and system files are
    ignored. ``source`` is never modified, unless ``quarantine`` names a folder to move the
    rejected files to.

    Parameters
    ----------
    source : path
        A folder (usually of class subfolders).
    report : path, optional
        Write a CSV with every file's status and reason.
    quarantine : path, optional
        Move rejected files here, keeping their relative paths.
    workers : int, optional
        Worker processes (default: all cores; 0 runs in this process).
    engine : {"local", "ray"}
        Where the per-file work runs.
    max_pixels : int or None
        Reject images with more pixels (decompression-bomb guard).

    Returns
    -------
    VerifyResult

    Raises
    ------
    EmptyTreeError
        When ``source`` holds no files.

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset, verify
    >>> photos = make_shapes_dataset(tmp / "photos", per_class=3)
    >>> _ = (photos / "round" / "broken.jpg").write_bytes(b"not a jpeg")
    >>> result = verify(photos, report=tmp / "rejects.csv", workers=0)
    >>> result.summary.total
    {'ok': 6, 'skipped': 0, 'rejected': 1}
    >>> [(r.path, r.kind) for r in result.rejected]
    [('round/broken.jpg', 'not_image')]
    """
    root = Path(source)
    if quarantine is not None:
        check_separate(root, Path(quarantine))
    tree = list_tree(root)
    if not tree.files and not tree.problems:
        raise EmptyTreeError(root)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    tasks = [ReadTask(str(root), str(path), max_pixels) for path in tree.files]
    summary = Summary()
    results = [FileResult.from_problem(problem) for problem in tree.problems]
    start = time.perf_counter()
    for result in tracked(runner.map(verify_one, tasks), len(tasks), "verifying", progress):
        results.append(result)
    for result in results:
        summary.add(result)
    summary.seconds = time.perf_counter() - start
    results.sort(key=lambda r: r.path)
    if report is not None:
        write_report(Path(report), results)
    moved = []
    if quarantine is not None:
        movable = [r for r in results if r.status == "rejected" and r.kind != "symlink_loop"]
        moved = move_files(root, Path(quarantine), [r.path for r in movable])
    return VerifyResult(root, results, summary, moved)


def move_files(root: Path, destination: Path, relatives: list[str]) -> list[Path]:
    """Move files from ``root`` to ``destination``, keeping their relative paths."""
    moved = []
    for relative in relatives:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / relative, target)  # a rename when on the same file system
        moved.append(target)
    return moved
