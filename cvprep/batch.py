"""Batch jobs over image trees: verify and preprocess, in a process pool.

Workers receive paths, not pixels: each decodes, processes, encodes and writes its own file,
so the parent only streams small result records (measured in DESIGN.md: decode + encode is
most of the cost, and moving pixels between processes would double it).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2

from cvprep import __version__
from cvprep.errors import ImageError
from cvprep.files import class_of, iter_files
from cvprep.io import (
    DEFAULT_MAX_PIXELS,
    WRITE_FORMATS,
    atomic_write_bytes,
    encode_image,
    read_image,
)
from cvprep.ops import to_uint8
from cvprep.pipeline import Pipeline

CHUNK_SIZE = 16


@dataclass
class FileResult:
    """What happened to one input file."""

    path: str  # relative to the input folder
    status: str  # "ok", "skipped" (output already there) or "rejected"
    kind: str = ""
    reason: str = ""
    width: int = 0
    height: int = 0
    output: str = ""


@dataclass
class Summary:
    """Counts per class and the rejected files, built as results stream in."""

    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: FileResult) -> None:
        cls = class_of(Path(result.path)) or "."
        counts = self.per_class.setdefault(cls, {"ok": 0, "skipped": 0, "rejected": 0})
        counts[result.status] += 1
        if result.status == "rejected":
            self.rejected.append(result)

    @property
    def total(self) -> dict[str, int]:
        keys = ("ok", "skipped", "rejected")
        return {k: sum(c[k] for c in self.per_class.values()) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "per_class": self.per_class,
            "seconds": round(self.seconds, 3),
            "rejected": [asdict(r) for r in self.rejected],
        }


# --------------------------------------------------------------------------- the pool
def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)
    _tune_malloc()


def _tune_malloc() -> None:
    """Keep freed image buffers in the heap instead of returning them to the OS after each
    image (glibc only; measured +18–30 % throughput in DESIGN.md)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)


def run_in_pool(
    function: Callable[[Any], FileResult],
    tasks: Iterable[Any],
    workers: int,
) -> Iterator[FileResult]:
    """Apply ``function`` to every task with ``workers`` processes, yielding results as they
    finish (unordered). ``workers=0`` runs in this process (for debugging and tests)."""
    if workers == 0:
        _init_worker()
        yield from map(function, tasks)
        return
    # forkserver: safe even when the parent already imported TensorFlow (fork is not).
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has already imported cvprep, cv2 and NumPy.
        context.set_forkserver_preload(["cvprep.batch", "cvprep.augment", "cvprep.split"])
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(function, tasks, chunksize=CHUNK_SIZE)


ENGINES = ("local", "ray")


def run_tasks(
    function: Callable[..., FileResult],
    tasks: list[Any],
    workers: int,
    *,
    engine: str = "local",
    ray_address: str | None = None,
) -> Iterator[FileResult]:
    """Run file tasks on the local process pool or on Ray (``engine="ray"``, the [ray] extra).

    Both engines call the same per-file ``function``, so outputs and rejects are identical.
    """
    if engine == "ray":
        from cvprep.ray_engine import run_with_ray

        return run_with_ray(function, tasks, workers=workers, address=ray_address)
    if engine != "local":
        raise ValueError(f"`engine` should be one of {', '.join(ENGINES)}. Received: {engine!r}")
    return run_in_pool(function, tasks, workers)


# --------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class VerifyTask:
    root: str
    relative: str
    max_pixels: int | None

    @property
    def source(self) -> str:
        return os.path.join(self.root, self.relative)


def verify_one(task: VerifyTask, data: bytes | None = None) -> FileResult:
    """Decode one file (or its already-read ``data``, as the Ray engine passes it)."""
    source = data if data is not None else Path(task.root) / task.relative
    try:
        image = read_image(source, max_pixels=task.max_pixels)
    except ImageError as exc:
        return FileResult(task.relative, "rejected", exc.kind, exc.reason)
    return FileResult(task.relative, "ok", width=image.shape[1], height=image.shape[0])


def verify_tree(
    root: Path,
    *,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    engine: str = "local",
    ray_address: str | None = None,
) -> tuple[list[str], Iterator[FileResult]]:
    """The file list (for a progress total) and a stream of verification results."""
    files = [str(p) for p in iter_files(root)]
    tasks = [VerifyTask(str(root), f, max_pixels) for f in files]
    return files, run_tasks(verify_one, tasks, workers, engine=engine, ray_address=ray_address)


def write_report(path: Path, results: Iterable[FileResult]) -> None:
    """CSV with one row per file: path, class, status, kind, reason, width, height, output."""
    rows = [
        [
            r.path,
            class_of(Path(r.path)) or "",
            r.status,
            r.kind,
            r.reason,
            r.width,
            r.height,
            r.output,
        ]
        for r in results
    ]
    lines = [["path", "class", "status", "kind", "reason", "width", "height", "output"], *rows]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    atomic_write_bytes(path, buffer.getvalue().encode())


def quarantine(root: Path, destination: Path, rejected: Iterable[FileResult]) -> list[Path]:
    """Move rejected files from ``root`` to ``destination``, keeping their relative paths."""
    moved = []
    for result in rejected:
        target = destination / result.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / result.path, target)  # a rename when on the same file system
        moved.append(target)
    return moved


# --------------------------------------------------------------------------- preprocess
@dataclass(frozen=True)
class PreprocessTask:
    source_root: str
    output_root: str
    relative: str
    output_relative: str
    spec_json: str
    quality: int | None
    reduce: int
    max_pixels: int | None

    @property
    def source(self) -> str:
        return os.path.join(self.source_root, self.relative)


_PIPELINES: dict[str, Pipeline] = {}


def _pipeline(spec_json: str) -> Pipeline:
    # Parsed once per worker process, not once per image.
    if spec_json not in _PIPELINES:
        _PIPELINES[spec_json] = Pipeline.from_json(spec_json)
    return _PIPELINES[spec_json]


def preprocess_one(task: PreprocessTask, data: bytes | None = None) -> FileResult:
    """Decode, process, encode and atomically write one file (``data``: already-read bytes)."""
    target = Path(task.output_root) / task.output_relative
    if target.exists():
        return FileResult(task.relative, "skipped", output=task.output_relative)
    source = data if data is not None else Path(task.source_root) / task.relative
    try:
        image = read_image(source, reduce=task.reduce, max_pixels=task.max_pixels)
    except ImageError as exc:
        return FileResult(task.relative, "rejected", exc.kind, exc.reason)
    try:
        result = _pipeline(task.spec_json).apply(image)
        data = encode_image(to_uint8(result), target.suffix, quality=task.quality)
    except (ValueError, cv2.error) as exc:
        return FileResult(task.relative, "rejected", "unprocessable", f"pipeline failed: {exc}")
    atomic_write_bytes(target, data)
    return FileResult(
        task.relative,
        "ok",
        width=image.shape[1],
        height=image.shape[0],
        output=task.output_relative,
    )


def output_name(relative: Path, fmt: str | None) -> Path:
    """The output path of an input file: same relative path, extension from ``fmt`` (or the
    source's own if it is writable, else PNG)."""
    if fmt:
        return relative.with_suffix("." + fmt)
    return relative if relative.suffix.lower() in WRITE_FORMATS else relative.with_suffix(".png")


@dataclass
class PreprocessPlan:
    tasks: list[PreprocessTask]
    collisions: list[FileResult]


def plan_preprocess(
    source: Path,
    output: Path,
    pipeline: Pipeline,
    *,
    fmt: str | None,
    quality: int | None,
    reduce: int,
    max_pixels: int | None,
) -> PreprocessPlan:
    """List the work; two inputs that would write the same output are a reject, not a loss."""
    spec_json = pipeline.to_json()
    tasks, collisions, claimed = [], [], {}
    for relative in iter_files(source):
        out = output_name(relative, fmt)
        key = str(out).lower()  # case-insensitive file systems would collide too
        if key in claimed:
            collisions.append(
                FileResult(
                    str(relative),
                    "rejected",
                    "name_collision",
                    f"output {out} is already produced from {claimed[key]}",
                )
            )
            continue
        claimed[key] = str(relative)
        tasks.append(
            PreprocessTask(
                str(source),
                str(output),
                str(relative),
                str(out),
                spec_json,
                quality,
                reduce,
                max_pixels,
            )
        )
    return PreprocessPlan(tasks, collisions)


RUN_RECORD = "cvprep.json"


def check_run_record(output: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into an output folder made with other settings (mixed outputs)."""
    record = output / RUN_RECORD
    if not record.exists():
        return
    previous = json.loads(record.read_text()).get("settings", {})
    if previous and previous != settings:
        changed = sorted(
            k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
        )
        raise ValueError(
            f"{output} was produced with different settings ({', '.join(changed)}); "
            "use a new output folder or --overwrite"
        )


def write_run_record(
    output: Path, command: str, settings: dict[str, Any], summary: Summary | None = None
) -> None:
    record = {
        "cvprep_version": __version__,
        "command": command,
        "settings": settings,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if summary is not None:
        record["summary"] = {"total": summary.total, "per_class": summary.per_class}
    atomic_write_bytes(output / RUN_RECORD, json.dumps(record, indent=2).encode())


def remove_partial_writes(output: Path) -> int:
    """Delete temporary files left by an interrupted run (our ``.name.*.part`` files)."""
    removed = 0
    for path in output.rglob(".*.part"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
