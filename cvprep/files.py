"""Finding image files in dataset trees, and the names cvprep writes there.

Trees are walked with symbolic links followed (a dataset is often assembled from links such
as ``data/cat -> /mnt/photos/cat``). A link that leads back to one of its own ancestors would
be followed forever: it is reported as a problem instead, like an unreadable folder.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from cvprep.errors import CvprepError, ParameterError

# Operating-system clutter: never an image, never a reject.
IGNORED_NAMES = frozenset(
    {
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        "ehthumbs.db",
        "Icon\r",
        "@eaDir",
        "__MACOSX",
        ".AppleDouble",
    }
)
# Files cvprep itself writes at the top of an output folder.
ARTEFACT_NAMES = frozenset(
    {"cvprep.json", "manifest.csv", "rejected.csv", "verify-report.csv", "findings.csv"}
)


class EmptyTreeError(CvprepError):
    """A folder that holds no candidate files (every tree command refuses it)."""

    def __init__(
        self, folder: str | os.PathLike[str], what: str = "no image files", hint: str = ""
    ) -> None:
        self.folder = os.fspath(folder)
        super().__init__(f"{self.folder}: {what} found" + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class TreeProblem:
    """A part of a tree that could not be listed: a symlink loop or an unreadable folder."""

    path: str  # relative to the root
    kind: str  # "symlink_loop" or "unreadable"
    reason: str


@dataclass
class Tree:
    """The candidate files of a folder (relative paths, sorted) and what could not be listed."""

    root: Path
    files: list[Path] = field(default_factory=list)
    problems: list[TreeProblem] = field(default_factory=list)

    def in_classes(self) -> list[Path]:
        """The files inside class subfolders (top-level files belong to no class)."""
        return [path for path in self.files if class_of(path) is not None]


def is_ignored(name: str) -> bool:
    """Hidden files, AppleDouble (``._x``), system clutter and partial writes."""
    return name.startswith(".") or name in IGNORED_NAMES


def list_tree(root: str | os.PathLike[str]) -> Tree:
    """Every candidate file under ``root`` in a stable (sorted) order, links followed.

    Hidden files and folders are skipped, and so are cvprep's own files at the top level.
    """
    tree = Tree(Path(root))
    _walk(tree, Path(root), Path("."), ancestors=frozenset())
    return tree


def _walk(
    tree: Tree, directory: Path, relative: Path, ancestors: frozenset[tuple[int, int]]
) -> None:
    try:
        info = directory.stat()
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        tree.problems.append(
            TreeProblem(str(relative), "unreadable", f"cannot list folder ({exc.strerror})")
        )
        return
    identity = (info.st_dev, info.st_ino)
    if identity in ancestors:
        tree.problems.append(
            TreeProblem(
                str(relative),
                "symlink_loop",
                f"symbolic link to its own ancestor {os.path.realpath(directory)} (not followed)",
            )
        )
        return
    inside = ancestors | {identity}
    for entry in entries:
        if is_ignored(entry.name):
            continue
        child = relative / entry.name
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            _walk(tree, directory / entry.name, child, inside)
        elif not (relative == Path(".") and entry.name in ARTEFACT_NAMES):
            tree.files.append(child)  # a broken link is listed: reading it reports why


def class_of(relative: Path) -> str | None:
    """The class of a file in a folder of class subfolders (None for top-level files)."""
    return relative.parts[0] if len(relative.parts) > 1 else None


def require_folder(path: str | os.PathLike[str], name: str = "source") -> Path:
    """``path`` as a ``Path`` when it is an existing folder; else a ``ParameterError`` naming
    the argument (a job never "succeeds" on a folder that does not exist)."""
    folder = Path(path)
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise ParameterError(
            f"`{name}` should be an existing folder. Received: {name}={os.fspath(path)!r} ({what})"
        )
    return folder


def check_can_write(path: str | os.PathLike[str]) -> None:
    """Fail before the work, not after it, when ``path`` (a file or folder to be written)
    cannot be created: its nearest existing ancestor is a file, or is not writable (a
    read-only disk, missing permissions). Raises ``OSError`` naming the ancestor, which the
    job turns into one ``FileSystemError``."""
    ancestor = Path(os.path.abspath(path))
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor == Path(os.path.abspath(path)) and ancestor.is_file():
        ancestor = ancestor.parent  # an existing file to be replaced: its folder counts
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(ancestor))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(ancestor) else errno.EACCES
        raise OSError(code, os.strerror(code), str(ancestor))


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_separate(source: Path, destination: Path) -> None:
    """Refuse an output folder inside the input folder (or the reverse): it would be read
    back as input, or the input would be overwritten."""
    src, dst = source.resolve(), destination.resolve()
    if dst == src or src in dst.parents:
        raise ParameterError(f"the output folder {destination} is inside the input folder {source}")
    if dst in src.parents:
        raise ParameterError(f"the input folder {source} is inside the output folder {destination}")
