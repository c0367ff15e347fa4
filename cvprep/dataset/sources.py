"""Sources: the files a dataset job reads, each with its class, from what people download.

Every dataset job (``verify``, ``inspect``, ``split``, ``preprocess``, ``augment``) reads a
:class:`Source`, built here and nowhere else by :func:`open_source` from its ``source`` and
``labels`` arguments:

============================================  =============================================
source                                        ``labels``
============================================  =============================================
a folder of class folders                     ``"folders"`` (the default)
split folders ``{train,val,test}/<class>/``   ``"folders"``: each file keeps its split
a flat folder, the class in the file names    ``"name"`` or ``"name:REGEX"``
images and a label table (CSV or TSV)         ``"labels.csv"`` or ``"labels.csv:FILE,LABEL"``
a ``.zip``, ``.tar`` or ``.tar.gz`` holding   any of the above, read in place
any of the above
an ``.npz`` in ``keras.datasets``' layout     (its own ``y_train``/``y_test``)
============================================  =============================================

A source is a list of :class:`SourceFile` — its name in the original source, its class, the
split it already belongs to, the path its outputs take, and an opener for its bytes — and a
list of problems (files that cannot be used, each with a reason, reported like a rejected
file). The jobs and the engines never ask which kind of source they read.

**Names** (what ``manifest.csv``, reports, findings and rejects show): a file of a folder is
named by its path in the folder (``cat/cat.0.jpg``); an archive member by the archive's file
name and its path inside (``train.zip:train/cat.0.jpg``); an array image by the file and its
index (``mnist.npz:x_train[17]``); a row of a label table by the table and its line number,
the header being line 1 (``labels.csv:17``).

**Outputs** take the path ``<class>/<file name>`` (files of class folders keep their
subfolders: ``cat/2019/a.jpg``), under the split folder the file already belongs to, if any.
Split folders may be called ``train``/``training``, ``val``/``valid``/``validation``,
``test``/``testing`` (any case); outputs use ``train``, ``val``, ``test``. Two files that
would get the same output path (compared without case: some file systems ignore it) are
never both written: the second, by name, is rejected as ``name_collision``, naming the first.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from cvprep import params
from cvprep.dataset.arrays import npz_members, release_arrays
from cvprep.dataset.containers import (
    ARCHIVE_SUFFIXES,
    Container,
    Entry,
    Problem,
    ReadFailure,
    close_archives,
    open_container,
    safe_parts,
    stream_tar,
)
from cvprep.dataset.engines import Engine
from cvprep.dataset.labels import (
    FOLDERS,
    NAME,
    LabelSpec,
    TableLabeller,
    file_name,
    label_by_name,
    parse_labels,
    read_table,
)
from cvprep.errors import ImageError, ParameterError
from cvprep.io import atomic_write_bytes, copy_atomic

F = TypeVar("F", bound=Callable[..., Any])
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_EXPECTED = "an existing folder, archive (" + ", ".join(ARCHIVE_SUFFIXES) + ") or .npz file"

__all__ = ["Problem", "ReadFailure", "Source", "SourceFile", "fetch", "open_source"]


class Opener(Protocol):
    path: str | None  # a plain file holding exactly these bytes, if there is one

    def read(self) -> bytes: ...


@dataclass(frozen=True)
class SourceFile:
    """One file of a source (see the module docstring). Small and picklable: worker
    processes receive it and read the bytes themselves."""

    name: str  # its place in the original source
    cls: str  # its class ("" when the source gives none: a top-level file of a folder)
    relative: str  # the path its outputs take inside a split folder
    split: str  # the split it already belongs to ("train", "val", "test"), or ""
    opener: Opener
    size: int = -1  # bytes, when known without reading it
    stamp: int = 0  # modification time in ns (outputs carry it: see preprocess)
    order: int = 0  # its position when the source is read in one pass

    @property
    def output(self) -> str:
        """The path of its output in a mirrored tree: ``[split/]relative``."""
        return f"{self.split}/{self.relative}" if self.split else self.relative

    @property
    def path(self) -> str | None:
        """The file on disk holding it (``None`` for an archive member or an array image)."""
        return self.opener.path

    def read(self) -> bytes:
        """Its bytes; an :class:`~cvprep.errors.ImageError` when they cannot be read."""
        return self.opener.read()


@dataclass
class Source:
    """The files of a source, and what in it cannot be used (see the module docstring)."""

    location: Path
    kind: str  # "folder", "zip", "tar", "streamed tar" or "arrays"
    labels: LabelSpec
    images: str | None = None  # the images folder of a label table, inside the source
    files: list[SourceFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def sequential(self) -> bool:
        """Whether the bytes come in one ordered pass (a compressed tar)."""
        return self.kind == "streamed tar"

    @property
    def on_disk(self) -> bool:
        """Whether every file is a file of its own (it can be linked or moved)."""
        return all(file.path is not None for file in self.files)

    def settings(self) -> dict[str, Any]:
        """What a run record keeps of the choice of labels (nothing for class folders, as
        before sources existed)."""
        if self.labels.kind == FOLDERS:
            return {}
        return {"labels": self.labels.text(), "images": self.images}

    def given_splits(self) -> set[str]:
        return {file.split for file in self.files if file.split}

    def schedule(self, tasks: Sequence[Any]) -> tuple[list[Any], Iterator[Any] | None]:
        """The tasks (each with a ``file``) in the order to run them, and their bytes when
        the parent must read them (one pass over a compressed tar); else ``None``: workers
        read their files themselves."""
        if not self.sequential:
            return list(tasks), None
        ordered = sorted(tasks, key=lambda task: task.file.order)
        return ordered, self._stream([task.file for task in ordered])

    def read_all(
        self, files: Iterable[SourceFile]
    ) -> Iterator[tuple[SourceFile, bytes | ReadFailure]]:
        """Each file with its bytes (or why they cannot be read), in the cheapest order."""
        if self.sequential:
            ordered = sorted(files, key=lambda file: file.order)
            yield from zip(ordered, self._stream(ordered), strict=True)
            return
        for file in files:
            try:
                yield file, file.read()
            except ImageError as exc:
                yield file, ReadFailure(exc.kind, exc.reason)

    def _stream(self, ordered: list[SourceFile]) -> Iterator[bytes | ReadFailure]:
        wanted = [(file.order, getattr(file.opener, "member", "")) for file in ordered]
        return stream_tar(self.location, wanted)


# --------------------------------------------------------------------------- building
def open_source(
    source: str | os.PathLike[str] | Source,
    *,
    labels: str | os.PathLike[str] | LabelSpec | None = None,
    images: str | os.PathLike[str] | None = None,
) -> Source:
    """The :class:`Source` of ``source`` with ``labels`` (see the module docstring).

    Raises
    ------
    ParameterError
        A source that does not exist or is no folder, archive or ``.npz``; a bad ``labels``
        (a regex without a group or matching no file name, a table that does not exist or
        whose columns cannot be told, rows naming no file); ``images`` without a table.
    CvprepError
        A damaged archive or ``.npz``.

    Examples
    --------
    >>> from cvprep.dataset.sources import open_source
    >>> for name in ("cat.0.jpg", "cat.1.jpg", "dog_12.png", "notes.txt"):
    ...     _ = (tmp / "flat").mkdir(exist_ok=True), (tmp / "flat" / name).write_bytes(b"")
    >>> source = open_source(tmp / "flat", labels="name")
    >>> [(f.name, f.cls, f.relative) for f in source.files]
    [('cat.0.jpg', 'cat', 'cat/cat.0.jpg'), ('cat.1.jpg', 'cat', 'cat/cat.1.jpg'),
     ('dog_12.png', 'dog', 'dog/dog_12.png')]
    >>> [(p.name, p.kind) for p in source.problems]
    [('notes.txt', 'no_label')]
    """
    if isinstance(source, Source):
        return source
    location = _check_location(source)
    spec = parse_labels(labels)
    if images is not None and (not isinstance(images, str | os.PathLike) or spec.kind != "table"):
        raise params.fail("images", "a folder inside the source, with a label table", images)
    if location.is_file() and location.suffix.lower() == ".npz":
        if spec.kind != FOLDERS:
            raise params.fail("labels", "left out: an .npz holds its own labels", labels)
        return _arrays(location, spec)
    container = open_container(location)
    problems = list(container.problems)
    if spec.kind == FOLDERS:
        placed, problems = _by_folders(container)
        images_dir = None
    elif spec.kind == NAME:
        labelled = label_by_name(container.entries, spec.pattern, problems)
        placed = [_flat(entry, cls) for entry, cls in labelled]
        images_dir = None
    else:
        placed, images_dir = _by_table(container, spec, images, problems)
    result = Source(location, container.kind, spec, images_dir)
    _collect(result, placed, problems)
    return result


def _check_location(source: object) -> Path:
    if not isinstance(source, str | os.PathLike):
        raise params.fail("source", _EXPECTED, source)
    location = Path(source)
    if not location.exists():
        what = "a broken link" if location.is_symlink() else "no such folder or file"
        raise ParameterError(
            f"`source` should be {_EXPECTED}. Received: source={os.fspath(source)!r} ({what})"
        )
    if not (location.is_dir() or location.is_file()):
        raise ParameterError(
            f"`source` should be {_EXPECTED}. Received: source={os.fspath(source)!r}"
        )
    return location


@dataclass(frozen=True)
class _Placed:
    entry: Entry
    cls: str
    relative: str
    split: str = ""


def _flat(entry: Entry, cls: str) -> _Placed:
    return _Placed(entry, cls, f"{cls}/{file_name(entry.path)}")


def _collect(source: Source, placed: list[_Placed], problems: list[Problem]) -> None:
    """The files, each output path used once (a collision is a problem naming both)."""
    taken: dict[tuple[str, str], str] = {}
    for item in sorted(placed, key=lambda p: p.entry.name):
        key = (item.split, item.relative.lower())
        if key in taken:
            output = f"{item.split}/{item.relative}" if item.split else item.relative
            problems.append(
                Problem(
                    item.entry.name,
                    "name_collision",
                    f"its output {output} is already {taken[key]}'s (never overwritten)",
                    item.cls,
                )
            )
            continue
        taken[key] = item.entry.name
        e = item.entry
        source.files.append(
            SourceFile(
                e.name, item.cls, item.relative, item.split, e.opener, e.size, e.stamp, e.order
            )
        )
    source.problems = sorted(problems, key=lambda p: p.name)


def _arrays(location: Path, spec: LabelSpec) -> Source:
    source = Source(location, "arrays", spec)
    placed = []
    for member in npz_members(location):
        entry = Entry(member.relative, member.name, member.opener, -1, member.stamp)
        placed.append(_Placed(entry, member.cls, member.relative, member.split))
    _collect(source, placed, [])
    return source


# --------------------------------------------------------------------------- folders
def is_split_layout(paths: Iterable[str]) -> bool:
    """Whether every top-level folder is a split folder holding class folders."""
    listed = list(paths)
    tops = {path.split("/", 1)[0] for path in listed if "/" in path}
    return (
        bool(tops)
        and all(top.lower() in SPLIT_FOLDERS for top in tops)
        and any(path.count("/") >= 2 for path in listed)
    )


def _by_folders(container: Container) -> tuple[list[_Placed], list[Problem]]:
    split_layout = is_split_layout(e.path for e in container.entries)
    # An archive read from inside its one folder: that folder is the class of the files at
    # its top, as it would be for the same folder on disk (a zip of cat/ holds class cat).
    top = container.prefix.rstrip("/").rpartition("/")[2]
    placed = [
        _Placed(entry, top, f"{top}/{entry.path}")
        if top and "/" not in entry.path
        else _Placed(entry, *_in_folders(entry.path, split_layout))
        for entry in container.entries
    ]
    problems = [
        replace(p, cls=_in_folders(f"{p.name}/.", split_layout)[0])
        if p.folder and p.name != "."
        else p
        for p in container.problems
    ]
    return placed, problems


def _in_folders(path: str, split_layout: bool) -> tuple[str, str, str]:
    """(class, output path inside its split, split) of a file in class or split folders."""
    parts = path.split("/")
    if split_layout and len(parts) > 1:
        return (
            (parts[1] if len(parts) > 2 else ""),
            "/".join(parts[1:]),
            SPLIT_FOLDERS[parts[0].lower()],
        )
    return (parts[0] if len(parts) > 1 else ""), path, ""


# --------------------------------------------------------------------------- label tables
def _by_table(
    container: Container,
    spec: LabelSpec,
    images: str | os.PathLike[str] | None,
    problems: list[Problem],
) -> tuple[list[_Placed], str]:
    """The files a table labels; the images folder is ``images``, else the table's own
    folder when the table is inside the source, else the source's top folder."""
    data, table_name, table_path = _table_bytes(container, spec)
    folder = table_path.rpartition("/")[0] if table_path is not None else ""
    images_dir = _images_folder(container, images) if images is not None else folder
    rows = read_table(data, table_name, spec.columns)
    entries = [e for e in container.entries if e.path != table_path]
    labelled = TableLabeller(entries, images_dir, table_name, container.prefix).label(
        rows, problems
    )
    return [_flat(entry, cls) for entry, cls in labelled], images_dir


def _table_bytes(container: Container, spec: LabelSpec) -> tuple[bytes, str, str | None]:
    """The table's bytes, its name in reports, and its path inside the source (None when it
    is outside: a file named on the command line)."""
    given = Path(spec.table)
    inside = _inside(container, spec.table)
    if inside is not None:
        entry = container.find(inside)
        if entry is not None:
            try:
                return entry.opener.read(), entry.name, inside
            except ImageError as exc:
                raise ParameterError(f"`labels` table {entry.name}: {exc.reason}") from None
    if given.is_file():
        try:
            return given.read_bytes(), spec.table, None
        except OSError as exc:
            raise ParameterError(f"`labels` table {spec.table}: {exc.strerror}") from None
    raise params.fail(
        "labels",
        "folders, name, name:REGEX, or an existing CSV/TSV label table (in the source or on disk)",
        spec.text(),
    )


def _inside(container: Container, given: str) -> str | None:
    """``given`` as a path inside the container: relative to its top folder (for an archive,
    also its full member path), or (for a folder) a path on disk that lies inside it."""
    if given.strip("/") in ("", "."):
        return ""
    parts = safe_parts(given)
    if container.kind == "folder":
        if parts is not None and (container.location / "/".join(parts)).exists():
            return "/".join(parts)
        with contextlib.suppress(OSError, ValueError):
            resolved = Path(given).resolve()
            if resolved.exists():
                return resolved.relative_to(container.location.resolve()).as_posix()
        return None
    if parts is None:
        return None
    relative = "/".join(parts)
    prefix = container.prefix.rstrip("/")
    if prefix and relative == prefix:
        return ""
    if prefix and relative.startswith(f"{prefix}/"):
        relative = relative[len(prefix) + 1 :]
    return relative


def _images_folder(container: Container, images: str | os.PathLike[str]) -> str:
    relative = _inside(container, os.fspath(images))
    if relative is None or (
        relative and not any(e.path.startswith(f"{relative}/") for e in container.entries)
    ):
        raise params.fail("images", "a folder of images inside the source", os.fspath(images))
    return "" if relative == "." else relative


# --------------------------------------------------------------------------- reading
def fetch(file: SourceFile, data: bytes | ReadFailure | None = None) -> bytes:
    """A file's bytes: ``data`` when the engine already has them, else read where it is.
    Raises :class:`~cvprep.errors.ImageError` when they cannot be read."""
    if isinstance(data, ReadFailure):
        raise ImageError(file.name, data.kind, data.reason)  # type: ignore[arg-type]
    return data if data is not None else file.read()


def mapped(runner: Engine, function: Any, tasks: Sequence[Any], source: Source) -> Iterator[Any]:
    """``runner.map`` over tasks that each carry a ``file`` of ``source``."""
    ordered, data = source.schedule(tasks)
    return runner.map(function, ordered) if data is None else runner.map(function, ordered, data)


def releases_readers(job: F) -> F:
    """A dataset job that, however it ends, closes the archives and drops the arrays its
    process opened to read the source (the workers' go with the workers)."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return job(*args, **kwargs)
        finally:
            close_archives()
            release_arrays()

    return cast(F, run)


# --------------------------------------------------------------------------- writing copies
def is_placed(file: SourceFile, target: Path) -> bool:
    """Whether ``target`` already holds ``file``: a hard link to it, or a copy of its size
    carrying its stamp."""
    try:
        there = target.stat()
    except FileNotFoundError:
        return False
    if file.path is not None:
        with contextlib.suppress(OSError):
            here = os.stat(file.path)
            if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
                return True
    return there.st_mtime_ns == file.stamp and (file.size < 0 or there.st_size == file.size)


def place(
    file: SourceFile, target: Path, *, link: bool = False, data: bytes | ReadFailure | None = None
) -> None:
    """Write ``target`` as ``file``, atomically: a hard link (``link``, when the file is a
    file of its own on the same file system), else a copy stamped with its modification
    time."""
    if file.path is not None:
        if link and _hard_link(Path(file.path), target):
            return
        copy_atomic(Path(file.path), target)
        return
    atomic_write_bytes(target, fetch(file, data))
    os.utime(target, ns=(file.stamp, file.stamp))


def _hard_link(source: Path, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        return False
    return True
