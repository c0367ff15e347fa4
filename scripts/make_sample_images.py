"""Regenerate sample_images/ from permissively licensed package data (see sample_images/README.md).

Run from the repository root with scikit-image and scikit-learn installed:

    python scripts/make_sample_images.py

Photos: copied (re-encoded as JPEG, quality 90) from scikit-image's and scikit-learn's bundled
data. The two-class set ``shapes/`` is generated: a round or an angular shape, random colour,
size and position, drawn over a random, softened crop of those photos, so that a small CNN
can tell the classes apart in a minute while still seeing real photographic texture.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data
from sklearn.datasets import load_sample_image

ROOT = Path(__file__).resolve().parents[1] / "sample_images"
PER_CLASS = 200
SIZE = 128


def _save(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )


def photos() -> dict[str, np.ndarray]:
    return {
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "astronaut": skimage.data.astronaut(),
        "rocket": skimage.data.rocket(),
        "china": load_sample_image("china.jpg"),
    }


def _shape_image(rng: np.random.Generator, backgrounds: list[np.ndarray], kind: str) -> np.ndarray:
    source = backgrounds[rng.integers(len(backgrounds))]
    crop = int(rng.integers(SIZE, min(source.shape[:2]) + 1))
    top = int(rng.integers(0, source.shape[0] - crop + 1))
    left = int(rng.integers(0, source.shape[1] - crop + 1))
    canvas = cv2.resize(
        source[top : top + crop, left : left + crop], (SIZE, SIZE), interpolation=cv2.INTER_AREA
    ).copy()
    # A colour that stands out from the background, as a photographed subject usually does.
    colour = tuple(
        int((255 - m + j) % 256)
        for m, j in zip(canvas.reshape(-1, 3).mean(0), rng.integers(-40, 41, 3), strict=True)
    )
    center = rng.integers(2 * SIZE // 5, 3 * SIZE // 5, 2)
    radius = int(rng.integers(SIZE // 6, SIZE // 3))
    if kind == "round":
        axes = (radius, int(radius * rng.uniform(0.7, 1.0)))
        cv2.ellipse(
            canvas,
            tuple(int(c) for c in center),
            axes,
            float(rng.uniform(0, 180)),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
    else:
        corners = int(rng.integers(3, 5))
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
        points = center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [points.astype(np.int32)], colour, cv2.LINE_AA)
    return canvas


def main() -> None:
    rng = np.random.default_rng(20261122)
    images = photos()
    for name, image in images.items():
        _save(ROOT / "photos" / f"{name}.jpg", image)
    backgrounds = list(images.values())
    for kind in ("round", "angular"):
        for index in range(PER_CLASS):
            _save(
                ROOT / "shapes" / kind / f"{kind}_{index:03d}.jpg",
                _shape_image(rng, backgrounds, kind),
            )


if __name__ == "__main__":
    main()
