"""Finding image files in dataset trees, and the names cvprep writes there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
ARTEFACT_NAMES = frozenset({"cvprep.json", "manifest.csv", "rejected.csv", "verify-report.csv"})


def is_ignored(name: str) -> bool:
    """Hidden files, AppleDouble (``._x``), system clutter and partial writes."""
    return name.startswith(".") or name in IGNORED_NAMES


def iter_files(root: Path) -> Iterator[Path]:
    """Every candidate file under ``root``, relative to it, in a stable (sorted) order.

    Hidden files and folders are skipped; so are cvprep's own files at the top level.
    """
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not is_ignored(d))
        relative_dir = Path(directory).relative_to(root)
        for name in sorted(files):
            if is_ignored(name) or (relative_dir == Path(".") and name in ARTEFACT_NAMES):
                continue
            yield relative_dir / name


def class_of(relative: Path) -> str | None:
    """The class of a file in a folder of class subfolders (None for top-level files)."""
    return relative.parts[0] if len(relative.parts) > 1 else None


def check_separate(source: Path, destination: Path) -> None:
    """Refuse an output folder inside the input folder (or the reverse): it would be read
    back as input, or the input would be overwritten."""
    src, dst = source.resolve(), destination.resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"the output folder {destination} is inside the input folder {source}")
    if dst in src.parents:
        raise ValueError(f"the input folder {source} is inside the output folder {destination}")
