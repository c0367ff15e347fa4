"""``verify``: decode every file of a tree and list the ones that fail, with the reason."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.labels import LabelSpec
from cvprep.dataset.results import (
    FileResult,
    Progress,
    ReadTask,
    Summary,
    tracked,
    write_report,
)
from cvprep.dataset.sources import ReadFailure, Source, fetch, mapped, open_source, releases_readers
from cvprep.errors import ImageError, ParameterError, RejectKind, filesystem_errors
from cvprep.files import EmptyTreeError, check_can_write, check_separate
from cvprep.io import DEFAULT_MAX_PIXELS, check_max_pixels, read_image

# What ``quarantine`` moves: files that do not decode (ImageError kinds) and links that loop.
QUARANTINED_KINDS = frozenset(get_args(RejectKind)) | {"symlink_loop"}


def verify_one(task: ReadTask, data: bytes | ReadFailure | None = None) -> FileResult:
    """Decode one file (or its already-read ``data``, as the Ray engine passes it)."""
    try:
        image = read_image(fetch(task.file, data), max_pixels=task.max_pixels)
    except ImageError as exc:
        return FileResult.of(task.file, "rejected", kind=exc.kind, reason=exc.reason)
    return FileResult.of(task.file, "ok", width=image.shape[1], height=image.shape[0])


@dataclass
class VerifyResult:
    """Every file's result (sorted by path), counts per class, and what was quarantined."""

    source: Path
    results: list[FileResult]
    summary: Summary
    quarantined: list[Path] = field(default_factory=list)  # where each moved file is now
    renamed: dict[str, str] = field(default_factory=dict)  # input → its new, free name
    not_moved: dict[str, str] = field(default_factory=dict)  # input → why it stayed

    @property
    def rejected(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "rejected"]

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "quarantined": [str(p) for p in self.quarantined],
            "renamed": self.renamed,
            "not_moved": self.not_moved,
        }


@filesystem_errors
@releases_readers
def verify(
    source: str | os.PathLike[str] | Source,
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
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
    files that do not decode to (a readable image the labels cannot place stays).

    Parameters
    ----------
    source : path
        A folder (usually of class subfolders), an archive or an ``.npz``
        (:mod:`cvprep.dataset.sources`).
    labels : str, optional
        Where classes come from: ``"folders"`` (default), ``"name"``, ``"name:REGEX"``, or a
        label table ``"labels.csv[:FILE_COLUMN,LABEL_COLUMN]"``. A file the labels leave
        without a class, or a table row naming no file, is rejected with its reason.
    images : path, optional
        With a label table: the folder of the images, inside ``source``.
    report : path, optional
        Write a CSV with every file's status and reason.
    quarantine : path, optional
        Move rejected files here, keeping their relative paths (a folder source only). A
        file never replaces another: a name already taken gets a number (``broken
        (1).jpg``), reported in ``renamed``; a file that cannot be moved stays, reported in
        ``not_moved``.
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
    FileSystemError
        When the report or the quarantine cannot be written (read-only, full disk, ...).

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
    data = open_source(source, labels=labels, images=images)
    root = data.location
    check_max_pixels(max_pixels)
    for target in (report, quarantine):
        if target is not None:
            check_can_write(target)
    if quarantine is not None:
        if data.kind != "folder":
            raise ParameterError(
                f"`quarantine` moves rejected files out of a folder; {root.name} is "
                f"{'an archive' if data.kind != 'arrays' else 'an array file'}: use a report"
            )
        check_separate(root, Path(quarantine))
    if not data.files and not data.problems:
        raise EmptyTreeError(root)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    tasks = [ReadTask(file, max_pixels) for file in data.files]
    summary = Summary()
    results = [FileResult.from_problem(problem) for problem in data.problems]
    start = time.perf_counter()
    mapping = mapped(runner, verify_one, tasks, data)
    for result in tracked(mapping, len(tasks), "verifying", progress):
        results.append(result)
    for result in results:
        summary.add(result)
    summary.seconds = time.perf_counter() - start
    results.sort(key=lambda r: r.path)
    if report is not None:
        write_report(Path(report), results)
    verified = VerifyResult(root, results, summary)
    if quarantine is not None:
        # Only files that do not decode: an image the labels cannot place (no_label,
        # unlabelled, name_collision, ...) is a good image and stays where it is.
        files = [
            r.path
            for r in results
            if r.status == "rejected"
            and r.kind in QUARANTINED_KINDS
            and not r.folder
            and os.path.lexists(root / r.path)
        ]
        _quarantine(root, Path(quarantine), files, verified)
    return verified


def _quarantine(root: Path, destination: Path, relatives: list[str], result: VerifyResult) -> None:
    """Move each file to ``destination`` under a free name; one that cannot be moved stays
    where it is and is reported, the others are still moved."""
    for relative in relatives:
        try:
            moved = move_to_free_name(root / relative, destination / relative)
        except OSError as exc:
            result.not_moved[relative] = exc.strerror or str(exc)
            continue
        result.quarantined.append(moved)
        if moved != destination / relative:
            result.renamed[relative] = str(moved.relative_to(destination))


def free_name(target: Path, attempt: int) -> Path:
    """``target`` itself, then ``name (1).ext``, ``name (2).ext``, ..."""
    return target if attempt == 0 else target.with_name(f"{target.stem} ({attempt}){target.suffix}")


def move_to_free_name(source: Path, target: Path) -> Path:
    """Move ``source`` to ``target``, or to the first free numbered name beside it: an
    existing file is never replaced (a rename would silently overwrite it). Returns where
    the file is now."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        candidate = free_name(target, attempt)
        try:
            _move_exclusive(source, candidate)
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def _move_exclusive(source: Path, target: Path) -> None:
    # A hard link is created only if the name is free (atomically); across file systems the
    # bytes go to a temporary file that is then linked under the name the same way.
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        _copy_exclusive(source, target)
    source.unlink()


def _copy_exclusive(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    shutil.copy2(source, temporary, follow_symlinks=False)
    try:
        os.link(temporary, target)
    finally:
        temporary.unlink()
