"""Small generated datasets: for examples, doctests and trying cvprep without photos."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cvprep.io import write_image


def shape_image(rng: np.random.Generator, round_shape: bool, size: int) -> np.ndarray:
    """One RGB image: a filled ellipse (round) or polygon (angular) over a noisy gradient."""
    base = rng.uniform(40, 200, 3)
    ramp = np.linspace(-30, 30, size)[None, :, None] * rng.uniform(-1, 1, 3)
    image = np.clip(base + ramp + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(v) for v in (255 - base + rng.uniform(-30, 30, 3)).clip(0, 255))
    centre = rng.uniform(0.35, 0.65, 2) * size
    radius = rng.uniform(0.15, 0.3) * size
    if round_shape:
        axes = (int(radius), int(radius * rng.uniform(0.6, 1.0)))
        cv2.ellipse(
            image,
            tuple(int(c) for c in centre),
            axes,
            rng.uniform(0, 180),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
    else:
        corners = rng.integers(3, 5)
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
        points = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        cv2.fillPoly(image, [points.astype(np.int32)], colour, cv2.LINE_AA)
    return image


def make_shapes_dataset(
    folder: str | os.PathLike[str],
    *,
    per_class: int = 10,
    size: int = 64,
    seed: int = 0,
    extension: str = ".png",
) -> Path:
    """Write a two-class tree, ``round/`` and ``angular/``, of ``per_class`` generated images
    each (``size×size`` RGB) and return the folder.

    Examples
    --------
    >>> from cvprep.dataset import make_shapes_dataset
    >>> folder = make_shapes_dataset(tmp / "shapes", per_class=2, size=32)
    >>> sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    ['angular/angular_000.png', 'angular/angular_001.png',
     'round/round_000.png', 'round/round_001.png']
    """
    root = Path(folder)
    rng = np.random.default_rng(seed)
    for name, is_round in (("round", True), ("angular", False)):
        for index in range(per_class):
            write_image(
                root / name / f"{name}_{index:03d}{extension}", shape_image(rng, is_round, size)
            )
    return root
