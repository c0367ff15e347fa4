"""``preprocess``: apply a pipeline to every image of a source, writing the same tree elsewhere
(a folder's own tree; ``[split/]<class>/<file name>`` for other sources)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from cvprep import params
from cvprep.dataset.engines import Engine, make_engine
from cvprep.dataset.labels import LabelSpec
from cvprep.dataset.output import (
    SettingsMismatchError,
    check_record,
    has_content,
    output_lock,
    read_record,
    remove_stale,
    write_record,
)
from cvprep.dataset.results import (
    FileResult,
    Progress,
    SummarisedResult,
    Summary,
    tracked,
    write_report,
)
from cvprep.dataset.sources import (
    ReadFailure,
    Source,
    SourceFile,
    fetch,
    mapped,
    open_source,
    releases_readers,
)
from cvprep.errors import ImageError, filesystem_errors
from cvprep.files import EmptyTreeError, check_can_write, check_separate
from cvprep.io import (
    DEFAULT_MAX_PIXELS,
    REDUCE_FACTORS,
    atomic_write_bytes,
    check_max_pixels,
    encode_image,
    read_image,
    writable_name,
)
from cvprep.ops import to_uint8
from cvprep.pipeline import Pipeline, pipeline_from_json

COMMAND = "preprocess"
FORMATS = ("jpg", "png", "webp")
REJECTS_FILE = "rejected.csv"


@dataclass(frozen=True)
class PreprocessTask:
    file: SourceFile
    output_root: str
    output_relative: str
    spec_json: str
    quality: int | None
    reduce: int
    max_pixels: int | None


def preprocess_one(task: PreprocessTask, data: bytes | ReadFailure | None = None) -> FileResult:
    """Decode, process, encode and atomically write one file (``data``: already-read bytes).

    An output is up to date when its modification time is its input's (set when it is
    written; an archive member's stamp, see :mod:`cvprep.dataset.containers`): an input
    changed since is processed again."""
    file, target = task.file, os.path.join(task.output_root, task.output_relative)
    if file.stamp and _mtime_ns(target) == file.stamp:
        return FileResult.of(file, "skipped", output=task.output_relative)
    try:
        image = read_image(fetch(file, data), reduce=task.reduce, max_pixels=task.max_pixels)
    except ImageError as exc:
        Path(target).unlink(missing_ok=True)  # the output of what the input used to be
        return FileResult.of(file, "rejected", kind=exc.kind, reason=exc.reason)
    try:
        result = pipeline_from_json(task.spec_json).apply(image)
        encoded = encode_image(to_uint8(result), os.path.splitext(target)[1], quality=task.quality)
    except (ValueError, cv2.error) as exc:
        reason = f"pipeline failed: {exc}"
        return FileResult.of(file, "rejected", kind="unprocessable", reason=reason)
    atomic_write_bytes(Path(target), encoded)
    if file.stamp:
        os.utime(target, ns=(file.stamp, file.stamp))
    return FileResult.of(
        file, "ok", width=image.shape[1], height=image.shape[0], output=task.output_relative
    )


def _mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def output_name(relative: Path, fmt: str | None) -> Path:
    """The output path of an input file: same relative path, extension from ``fmt`` (or the
    source's own if cvprep writes it, else PNG)."""
    return relative.with_suffix("." + fmt) if fmt else writable_name(relative)


@dataclass
class PreprocessResult(SummarisedResult):
    """Counts per class (ok / skipped / rejected), the rejected files and the run record."""

    source: Path
    output: Path
    spec: str
    summary: Summary
    record: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # outputs whose input is gone

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "output": str(self.output),
            "spec": self.spec,
            "removed": self.removed,
        }


@filesystem_errors
@releases_readers
def preprocess(
    source: str | os.PathLike[str] | Source,
    output: str | os.PathLike[str],
    ops: str | Pipeline,
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
    quality: int | None = None,
    fast_decode: int = 1,
    overwrite: bool = False,
    workers: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> PreprocessResult:
    """Apply the pipeline ``ops`` to every image of ``source``, writing the same tree under
    ``output``: a folder's own tree, or ``[split/]<class>/<file name>`` for the images of an
    archive, a flat folder or a label table (``labels``, ``images``: as for
    :func:`cvprep.dataset.verify`).

    Writes are atomic, so an interrupted run leaves no broken file, and running it again with
    the same settings finishes the job: finished files are skipped, inputs changed since are
    processed again, and the outputs of deleted inputs are removed (``removed``). The run
    record ``output/cvprep.json`` is written before the first image: a folder made with other
    settings or from another source is refused, whether that run finished or not, unless
    ``overwrite``. Only one job at a time may write into ``output``. Rejected inputs are
    listed in ``output/rejected.csv``.

    Parameters
    ----------
    source, output : path
        The source (a folder, an archive, an ``.npz``) and the output folder (neither
        inside the other).
    ops : str or Pipeline
        The pipeline spec, e.g. ``"resize=150x150:fit=pad,equalize"``.
    fmt : {"jpg", "png", "webp"}, optional
        Output format (default: each file's own, PNG for formats cvprep does not write).
    quality : int, optional
        JPEG/WebP quality, 1–100.
    fast_decode : {1, 2, 4, 8}
        Decode JPEGs at 1/N size: much faster for large photos, not bit-exact (other
        formats are decoded at full size).
    overwrite : bool
        Reprocess everything, even into an output made with other settings.
    workers, engine, ray_address, max_pixels, progress
        As for :func:`cvprep.dataset.verify`.

    Returns
    -------
    PreprocessResult

    Raises
    ------
    EmptyTreeError
        When ``source`` holds no files.
    SettingsMismatchError
        When ``output`` was made with other settings (and not ``overwrite``).
    OutputBusyError
        When another job is writing into ``output``.
    FileSystemError
        When ``output`` cannot be written (read-only, full disk, a file in the way, ...).

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset, preprocess
    >>> photos = make_shapes_dataset(tmp / "photos", per_class=3, size=48)
    >>> result = preprocess(photos, tmp / "prepped", "resize=32x32,grayscale", workers=0)
    >>> result.summary.total
    {'ok': 6, 'skipped': 0, 'rejected': 0}
    >>> cvprep.read_image(tmp / "prepped" / "round" / "round_000.png", mode="grayscale").shape
    (32, 32)
    >>> preprocess(photos, tmp / "prepped", "resize=32x32,grayscale", workers=0).summary.total
    {'ok': 0, 'skipped': 6, 'rejected': 0}
    """
    data = open_source(source, labels=labels, images=images)
    root, out = data.location, Path(output)
    pipeline = ops if isinstance(ops, Pipeline) else Pipeline.parse(ops)
    settings = {**_settings(pipeline, fmt, quality, fast_decode, max_pixels), **data.settings()}
    params.check_bool("overwrite", overwrite)
    check_separate(root, out)
    check_can_write(out)
    if not data.files and not data.problems:
        raise EmptyTreeError(root)
    runner = make_engine(engine, workers=workers, ray_address=ray_address)
    with output_lock(out, COMMAND):
        owned = _check_output(out, settings, _where(root), overwrite)
        write_record(out, COMMAND, settings, status="in progress", extra=_where(root))
        tasks, collisions = _plan(data.files, out, pipeline, settings)
        wanted = {Path(task.output_relative).as_posix() for task in tasks}
        # Only in a folder that is ours: an --overwrite of a foreign folder keeps its files.
        removed = remove_stale(out, wanted) if owned else []
        if overwrite:
            for task in tasks:
                (out / task.output_relative).unlink(missing_ok=True)
        summary = _run(runner, tasks, data, progress)
        for extra in [*collisions, *map(FileResult.from_problem, data.problems)]:
            summary.add(extra)
        write_report(out / REJECTS_FILE, sorted(summary.rejected, key=lambda r: r.path))
        record = write_record(
            out,
            COMMAND,
            settings,
            status="finished",
            extra={
                **_where(root),
                "summary": {"total": summary.total, "per_class": summary.per_class},
            },
        )
    return PreprocessResult(root, out, pipeline.to_text(), summary, record, removed)


def _check_output(
    out: Path, settings: dict[str, Any], where: dict[str, str], overwrite: bool
) -> bool:
    """Refuse an OUT made otherwise (unless ``overwrite``); returns whether OUT is ours to
    tidy (a preprocess output, or empty)."""
    record = read_record(out)
    owned = record.get("command") == COMMAND or not has_content(out)
    if overwrite:
        return owned
    check_record(out, COMMAND, settings)
    if record.get("source") and record["source"] != where["source"]:
        raise SettingsMismatchError(
            f"{out} holds the preprocessed images of {record['source']}, not of "
            f"{where['source']}; use a new output folder or --overwrite"
        )
    return owned


def _run(
    runner: Engine, tasks: list[PreprocessTask], source: Source, progress: Progress | None
) -> Summary:
    summary = Summary()
    start = time.perf_counter()
    mapping = mapped(runner, preprocess_one, tasks, source)
    for result in tracked(mapping, len(tasks), "preprocessing", progress):
        summary.add(result)
    summary.seconds = time.perf_counter() - start
    return summary


def _settings(
    pipeline: Pipeline,
    fmt: str | None,
    quality: int | None,
    fast_decode: int,
    max_pixels: int | None,
) -> dict[str, Any]:
    if fmt is not None:
        params.check_choice("fmt", fmt, FORMATS)
    return {
        "spec": pipeline.to_text(),
        "format": fmt,
        "quality": params.check_optional_int("quality", quality, minimum=1, maximum=100),
        "fast_decode": params.check_choice("fast_decode", fast_decode, REDUCE_FACTORS),
        "max_pixels": check_max_pixels(max_pixels),
    }


def _where(root: Path) -> dict[str, str]:
    # Where the raw images are: training uses it to evaluate its model on raw test images
    # (a folder; for an archive, training scores the preprocessed test images instead).
    return {"source": str(root.resolve())}


def _plan(
    files: list[SourceFile], out: Path, pipeline: Pipeline, settings: dict[str, Any]
) -> tuple[list[PreprocessTask], list[FileResult]]:
    """The work; two inputs that would write the same output are a reject, not a loss."""
    spec_json = pipeline.to_json()
    tasks, collisions, claimed = [], [], {}
    for file in files:
        target = output_name(Path(file.output), settings["format"])
        key = str(target).lower()  # case-insensitive file systems would collide too
        if key in claimed:
            reason = f"output {target} is already produced from {claimed[key]}"
            collisions.append(FileResult.of(file, "rejected", kind="name_collision", reason=reason))
            continue
        claimed[key] = file.name
        tasks.append(
            PreprocessTask(
                file,
                str(out),
                str(target),
                spec_json,
                settings["quality"],
                settings["fast_decode"],
                settings["max_pixels"],
            )
        )
    return tasks, collisions


@dataclass(frozen=True)
class PreprocessingRecord:
    """What :func:`preprocess` recorded in a folder it wrote, as training needs it: the spec
    its images went through and the folder of the raw images. A folder that ``preprocess``
    did not write has the empty record (``spec=""``, ``source=None``)."""

    spec: str = ""
    source: Path | None = None


def read_preprocessing_record(folder: str | os.PathLike[str]) -> PreprocessingRecord:
    """The one reader of the preprocessing record (``folder/cvprep.json``) for training,
    evaluation and export.

    >>> read_preprocessing_record(tmp)  # a folder without a record
    PreprocessingRecord(spec='', source=None)
    """
    record = read_record(Path(folder))
    if record.get("command") != COMMAND:
        return PreprocessingRecord()
    settings = record.get("settings")
    spec = settings.get("spec") if isinstance(settings, dict) else None
    source = record.get("source")
    return PreprocessingRecord(
        spec if isinstance(spec, str) else "",
        Path(source) if isinstance(source, str) and source else None,
    )
