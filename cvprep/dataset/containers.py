"""What a source's files live in: a folder, a zip, or a tar — listed, and opened member by member.

A container lists its files as :class:`Entry` records (a path relative to its root, the name
reports give the file, its size and modification stamp, and an *opener*: a small picklable
object whose ``read()`` returns the file's bytes). Worker processes receive openers, never
pixels: a file is read where it is processed.

- A **folder** is walked with :func:`cvprep.files.list_tree` (symbolic links followed, loops
  and unreadable folders reported). Names are paths relative to the folder: ``cat/cat.0.jpg``.
- A **zip** is read in place: each member is inflated on its own, and every worker process
  keeps the archive open (one ``ZipFile`` per process). Names: ``train.zip:train/cat.0.jpg``.
- An uncompressed **tar** is read in place too: a member's bytes sit at a known offset.
- A compressed tar (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``) has no random access:
  it is streamed once, in order, by the parent process, which hands the bytes to the workers
  (:func:`stream_tar`).

An archive whose files all sit in one folder (``train.zip`` holding ``train/…``,
``PetImages.zip`` holding ``PetImages/Cat/…``) is read from inside that folder, as it would be
once extracted. A member whose path would leave the archive's folder (``../x``, ``/etc/x``)
is never read, and listed as ``unsafe_path``.
"""

from __future__ import annotations

import functools
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cvprep.errors import CvprepError, ImageError
from cvprep.files import ARTEFACT_NAMES, is_ignored, list_tree

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAX_MEMBER_BYTES = 1 << 30
"""Archive members larger than this are refused (``too_large``) before they are read:
cvprep reads a member into memory, and a declared size is all it knows beforehand."""
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz magic numbers
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    RuntimeError,  # zipfile: an encrypted member
    NotImplementedError,  # zipfile: an unsupported compression method
    ValueError,
)


class ArchiveError(CvprepError):
    """An archive that cannot be listed at all (not an archive, or damaged)."""


@dataclass(frozen=True)
class Problem:
    """A part of a source that is not a usable file, with the reason (reported like a
    rejected file)."""

    name: str  # its place in the original source
    kind: str
    reason: str
    cls: str = ""
    folder: bool = False  # a folder that could not be listed


# --------------------------------------------------------------------------- openers
@dataclass(frozen=True)
class FileOpener:
    """A file on disk."""

    path: str

    def read(self) -> bytes:
        try:
            return Path(self.path).read_bytes()
        except IsADirectoryError:
            raise ImageError(self.path, "unreadable", "is a directory, not an image file") from None
        except OSError as exc:
            raise ImageError(self.path, "unreadable", f"cannot read file ({exc.strerror})") from exc


@dataclass(frozen=True)
class ZipOpener:
    """A member of a zip archive; ``version`` tells a rewritten archive from the one listed."""

    archive: str
    member: str
    version: tuple[int, int]
    path = None  # not a file of its own: cannot be linked or moved

    def read(self) -> bytes:
        try:
            with _open_zip(self.archive, self.version).open(self.member) as handle:
                return handle.read()
        except _ARCHIVE_ERRORS as exc:
            raise _member_error(self.archive, self.member, exc) from exc


_OPENED: set[zipfile.ZipFile] = set()  # what _open_zip's cache holds, to close it


@functools.lru_cache(maxsize=4)
def _open_zip(archive: str, version: tuple[int, int]) -> zipfile.ZipFile:
    """One open archive per process and version (a worker reads thousands of members)."""
    archive_file = zipfile.ZipFile(archive)
    _OPENED.add(archive_file)
    return archive_file


def close_archives() -> None:
    """Close the archives this process keeps open (a job's end: no handle outlives it)."""
    _open_zip.cache_clear()
    while _OPENED:
        _OPENED.pop().close()


@dataclass(frozen=True)
class TarOpener:
    """A member of an uncompressed tar: ``size`` bytes at ``offset``."""

    archive: str
    member: str
    offset: int
    size: int
    path = None

    def read(self) -> bytes:
        try:
            with open(self.archive, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
        except OSError as exc:
            raise _member_error(self.archive, self.member, exc) from exc
        if len(data) != self.size:
            raise ImageError(
                f"{self.archive}:{self.member}",
                "truncated",
                "the archive ends inside this member",
            )
        return data


@dataclass(frozen=True)
class StreamedTarOpener:
    """A member of a compressed tar. Reading one member alone decompresses the archive up to
    it; jobs read them all in one pass instead (:func:`stream_tar`)."""

    archive: str
    member: str
    order: int
    path = None

    def read(self) -> bytes:
        for data in stream_tar(self.archive, [(self.order, self.member)]):
            if isinstance(data, ReadFailure):
                raise ImageError(f"{self.archive}:{self.member}", data.kind, data.reason)
            return data
        raise AssertionError("unreachable: stream_tar yields one item per wanted member")


def _member_error(archive: str, member: str, exc: BaseException) -> ImageError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RuntimeError) and "encrypted" in text:
        text = "an encrypted member (cvprep has no password)"
    return ImageError(f"{archive}:{member}", "unreadable", f"corrupt archive member ({text})")


# --------------------------------------------------------------------------- listings
@dataclass(frozen=True)
class Entry:
    path: str  # relative to the container's root, "/"-separated
    name: str  # its place in the original source
    opener: FileOpener | ZipOpener | TarOpener | StreamedTarOpener
    size: int = -1
    stamp: int = 0  # modification time in ns (see Container.stamps)
    order: int = 0  # position in the archive: the order a stream delivers it


@dataclass
class Container:
    """The files of a folder or an archive, and what could not be listed."""

    location: Path
    kind: str  # "folder", "zip", "tar" or "streamed tar"
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    prefix: str = ""  # the folder an archive was read from inside ("train/"), or ""

    @property
    def sequential(self) -> bool:
        """Whether bytes come in one ordered pass (a compressed tar)."""
        return self.kind == "streamed tar"

    def member_name(self, path: str) -> str:
        """The name reports give a path inside this container."""
        if self.kind == "folder":
            return path
        return f"{self.location.name}:{self.prefix}{path}"

    def find(self, path: str) -> Entry | None:
        wanted = str(PurePosixPath(path))
        return next((e for e in self.entries if e.path == wanted), None)


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def open_container(location: Path) -> Container:
    """List a folder or an archive (chosen by what the file holds, not by its name)."""
    if location.is_dir():
        return _folder(location)
    try:
        with open(location, "rb") as handle:
            head = handle.read(6)
        # The signature at the start decides first: a tar whose last member is a zip passes
        # zipfile.is_zipfile (it looks for the end record), but it is a tar.
        if head.startswith(_ZIP_STARTS):
            return _zip(location)
        if head.startswith(_COMPRESSED):
            return _tar(location, streamed=True)
        if tarfile.is_tarfile(location):
            return _tar(location, streamed=False)
        if zipfile.is_zipfile(location):  # a zip behind a prefix (a self-extracting archive)
            return _zip(location)
    except _ARCHIVE_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a file-system error (permissions, ...), not a damaged archive
        raise ArchiveError(f"{location}: damaged archive ({exc or type(exc).__name__})") from exc
    raise ArchiveError(f"{location}: not a zip or tar archive")


def _folder(root: Path) -> Container:
    tree = list_tree(root)
    container = Container(root, "folder")
    for relative in tree.files:
        path = root / relative
        try:
            info = path.stat()
            size, stamp = info.st_size, info.st_mtime_ns
        except OSError:  # a broken link: reading it reports why
            size, stamp = -1, 0
        name = relative.as_posix()
        container.entries.append(Entry(name, name, FileOpener(str(path)), size, stamp))
    for problem in tree.problems:
        container.problems.append(
            Problem(Path(problem.path).as_posix(), problem.kind, problem.reason, folder=True)
        )
    return container


@dataclass(frozen=True)
class _Member:
    name: str  # as stored
    size: int
    stamp: int
    opener: ZipOpener | TarOpener | StreamedTarOpener
    problem: str = ""  # why it cannot be read ("" when it can)


def _zip(location: Path) -> Container:
    info = location.stat()
    version = (info.st_mtime_ns, info.st_size)
    with zipfile.ZipFile(location) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
    members = []
    for item in infos:
        kind = stat.S_IFMT(item.external_attr >> 16)
        members.append(
            _Member(
                item.filename,
                item.file_size,
                _zip_stamp(item),
                ZipOpener(str(location), item.filename, version),
                "a link inside the archive (not followed)" if kind == stat.S_IFLNK else "",
            )
        )
    return _assemble(location, "zip", members)


def _zip_stamp(item: zipfile.ZipInfo) -> int:
    """Seconds from the stored date and time, with the CRC-32 as the nanoseconds: zip times
    have a 2-second resolution, so the CRC tells apart two versions stored in one moment."""
    import calendar

    try:
        seconds = calendar.timegm((*item.date_time, 0, 0, 0))
    except (ValueError, OverflowError):
        seconds = 0
    return seconds * 1_000_000_000 + item.CRC % 1_000_000_000


def _tar(location: Path, *, streamed: bool) -> Container:
    members: list[_Member] = []
    with tarfile.open(location, "r|*" if streamed else "r:") as archive:
        for item in archive:
            if item.isdir():
                continue
            opener: TarOpener | StreamedTarOpener = (
                StreamedTarOpener(str(location), item.name, len(members))
                if streamed
                else TarOpener(str(location), item.name, item.offset_data, item.size)
            )
            problem = ""
            if item.issym() or item.islnk():
                problem = "a link inside the archive (not followed)"
            elif not item.isreg() or item.issparse():
                problem = "not a regular file"
            # Whole seconds; the size as the nanoseconds tells apart most rewrites.
            stamp = int(item.mtime) * 1_000_000_000 + item.size % 1_000_000_000
            members.append(_Member(item.name, item.size, stamp, opener, problem))
    return _assemble(location, "streamed tar" if streamed else "tar", members)


def safe_parts(name: str) -> tuple[str, ...] | None:
    """The components of a member path, or None when it would leave the archive's folder
    (absolute, a drive letter, or a ``..`` component). Backslashes count as separators (zips
    made on Windows)."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


def _assemble(location: Path, kind: str, members: list[_Member]) -> Container:
    container = Container(location, kind)
    usable: list[tuple[tuple[str, ...], _Member, int]] = []
    for order, member in enumerate(members):
        parts = safe_parts(member.name)
        name = f"{location.name}:{member.name}"
        if parts is None:
            container.problems.append(
                Problem(
                    name,
                    "unsafe_path",
                    "a member outside the archive's folder (an absolute path or '..'): never "
                    "read or written",
                )
            )
        elif not any(is_ignored(part) for part in parts):
            usable.append((parts, member, order))
    prefix = _common_folder([parts for parts, _, _ in usable])
    container.prefix = "".join(f"{part}/" for part in prefix)
    for parts, member, order in usable:
        inside = parts[len(prefix) :]
        if len(inside) == 1 and inside[0] in ARTEFACT_NAMES:
            continue  # cvprep's own files at the top (a zipped cvprep output)
        name = f"{location.name}:{member.name}"
        if member.problem:
            container.problems.append(Problem(name, "unreadable", member.problem))
        elif member.size > MAX_MEMBER_BYTES:
            container.problems.append(
                Problem(
                    name,
                    "too_large",
                    f"an archive member of {member.size} bytes (more than the "
                    f"{MAX_MEMBER_BYTES >> 20} MiB cvprep reads into memory)",
                )
            )
        else:
            container.entries.append(
                Entry("/".join(inside), name, member.opener, member.size, member.stamp, order)
            )
    container.entries.sort(key=lambda entry: entry.path)
    return container


def _common_folder(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The folders every file sits in (an archive of one folder is read from inside it)."""
    prefix: tuple[str, ...] = ()
    while paths and all(len(p) > len(prefix) + 1 for p in paths):
        first = paths[0][len(prefix)]
        if any(p[len(prefix)] != first for p in paths):
            break
        prefix += (first,)
    return prefix


# --------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class ReadFailure:
    """Why a member's bytes could not be read, in place of its bytes (picklable)."""

    kind: str
    reason: str


def stream_tar(
    archive: str | os.PathLike[str], wanted: list[tuple[int, str]]
) -> Iterator[bytes | ReadFailure]:
    """The bytes of the ``wanted`` members of a (compressed) tar — ``(order, name)`` pairs in
    archive order, as :class:`Entry` has them — in one pass, one item per wanted member, in
    that order. A member that cannot be read gives a :class:`ReadFailure`; once the stream
    itself is damaged, so does every member not yet delivered."""
    delivered = 0
    try:
        with tarfile.open(archive, "r|*") as stream:
            order = -1
            for item in stream:
                if item.isdir():
                    continue
                order += 1
                if delivered == len(wanted):
                    return
                if (order, item.name) != wanted[delivered]:
                    continue
                handle = stream.extractfile(item)
                data = handle.read() if handle is not None else b""
                delivered += 1
                yield data
    except _ARCHIVE_ERRORS as exc:
        failure = ReadFailure("unreadable", f"the archive is damaged before this member ({exc})")
        for _ in wanted[delivered:]:
            delivered += 1
            yield failure
        return
    for _ in wanted[delivered:]:  # the archive changed since it was listed
        yield ReadFailure("unreadable", "no longer in the archive")
