"""Pictures for reports: contact sheets (the image after each pipeline step, side by side and
labelled) and thumbnails."""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np

from cvprep.errors import ImageError
from cvprep.io import read_image, write_image
from cvprep.ops import resize, to_uint8
from cvprep.pipeline import Pipeline

_LABEL_HEIGHT = 28


def _to_display(image: np.ndarray) -> np.ndarray:
    array = to_uint8(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array[:, :, :3])


def _tile(image: np.ndarray, label: str, tile: int) -> np.ndarray:
    rgb = _to_display(image)
    scale = tile / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    cell = np.full((tile + _LABEL_HEIGHT, tile, 3), 255, np.uint8)
    top, left = _LABEL_HEIGHT + (tile - scaled.shape[0]) // 2, (tile - scaled.shape[1]) // 2
    cell[top : top + scaled.shape[0], left : left + scaled.shape[1]] = scaled
    text = label if len(label) <= tile // 8 else label[: tile // 8 - 1] + "…"
    cv2.putText(
        cell,
        text.replace("…", "~"),
        (4, 19),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return cell


def contact_sheet(
    items: Iterable[tuple[str, np.ndarray]], *, tile: int = 256, columns: int = 4
) -> np.ndarray:
    """Lay out ``(label, image)`` pairs in a grid of ``tile``-pixel cells; returns RGB ``uint8``."""
    if tile < 32:
        raise ValueError(f"`tile` should be >= 32. Received: tile={tile}")
    if columns < 1:
        raise ValueError(f"`columns` should be >= 1. Received: columns={columns}")
    cells = [_tile(image, label, tile) for label, image in items]
    if not cells:
        raise ValueError("contact_sheet needs at least one image")
    blank = np.full_like(cells[0], 255)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    if len(rows) > 1:
        rows[-1] = rows[-1] + [blank] * (columns - len(rows[-1]))
    gap = 4
    sheet_rows = [
        np.hstack([np.pad(c, ((0, 0), (0, gap), (0, 0)), constant_values=200) for c in row])
        for row in rows
    ]
    return np.vstack(
        [np.pad(r, ((0, gap), (0, 0), (0, 0)), constant_values=200) for r in sheet_rows]
    )


def preview_pipeline(
    image: np.ndarray, pipeline: Pipeline, *, tile: int = 256, columns: int = 4
) -> np.ndarray:
    """A contact sheet of ``image`` after each step of ``pipeline`` (cumulative)."""
    return contact_sheet(pipeline.intermediates(image), tile=tile, columns=columns)


def write_thumbnail(
    source: str | os.PathLike[str] | bytes, target: str | os.PathLike[str], side: int
) -> bool:
    """A JPEG copy of ``source`` (a file, or an image's bytes) whose longer side is at most
    ``side`` pixels (never enlarged), written atomically; False, and nothing written, when
    ``source`` cannot be read."""
    try:
        image = read_image(source)
    except ImageError:
        return False
    scale = side / max(image.shape[:2])
    if scale < 1:
        image = resize(
            image, (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
        )
    write_image(target, image, quality=85)
    return True
