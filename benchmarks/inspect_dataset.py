"""`cvprep inspect` on real photos: speed against `verify`, and what it finds.

    python benchmarks/inspect_dataset.py [--photos DIR] [--per-kind 40] [--repeats 2]

1. Throughput: inspect and verify on the same tree (the dev photos), same run, 2 workers,
   best of ``--repeats``; ratio = inspect / verify (both decode every file once).
2. Detection, on the photos of ``--photos`` (default: the dev photos' val/ half, which the
   thresholds were not tuned on): a scratch tree holds every photo untouched plus planted
   files — for every issue kind, ``--per-kind`` photos transformed as listed in PLANTS (each a
   new file, derived from a distinct photo, re-encoded as JPEG). Prints, per planted variant,
   the share of planted files flagged with their kind (recall), and the share of untouched
   photos with any quality flag (false alarms).
The near-duplicate index at scale: benchmarks/near_duplicates.py --count 1000000.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from cvprep import dataset
from cvprep.dataset.inspect import QUALITY_KINDS
from cvprep.io import encode_image, read_image

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"


def crop_aspect(image: np.ndarray, ratio: float) -> np.ndarray:
    height, width = image.shape[:2]
    if ratio > 1:
        return image[: max(1, int(width / ratio))]
    return image[:, : max(1, int(height * ratio))]


def gamma(image: np.ndarray, power: float) -> np.ndarray:
    return (255 * (image / 255.0) ** power).astype(np.uint8)


# variant → (issue it must be found as, transform of an RGB photo)
PLANTS = {
    "gaussian blur sigma 2": ("blurry", lambda i: cv2.GaussianBlur(i, (0, 0), 2)),
    "gaussian blur sigma 4": ("blurry", lambda i: cv2.GaussianBlur(i, (0, 0), 4)),
    "box blur 5x5": ("blurry", lambda i: cv2.blur(i, (5, 5))),
    "darker x0.3": ("dark", lambda i: (i * 0.3).astype(np.uint8)),
    "darker -100": ("dark", lambda i: np.clip(i.astype(int) - 100, 0, 255).astype(np.uint8)),
    "gamma 3 (darker)": ("dark", lambda i: gamma(i, 3.0)),
    "65% white blend": ("bright", lambda i: (0.35 * i + 0.65 * 255).astype(np.uint8)),
    "brighter +120": ("bright", lambda i: np.clip(i.astype(int) + 120, 0, 255).astype(np.uint8)),
    "gamma 0.3 (lighter)": ("bright", lambda i: gamma(i, 0.3)),
    "brighter x2.5": ("bright", lambda i: np.clip(i * 2.5, 0, 255).astype(np.uint8)),
    "uniform colour + noise": (
        "low_information",
        lambda i: np.clip(
            np.full_like(i, 128) + np.random.default_rng(0).normal(0, 3, i.shape), 0, 255
        ).astype(np.uint8),
    ),
    "4:1 crop": ("odd_aspect_ratio", lambda i: crop_aspect(i, 4.0)),
    "1:3 crop": ("odd_aspect_ratio", lambda i: crop_aspect(i, 1 / 3)),
    "1/6 size": ("odd_size", lambda i: cv2.resize(i, (i.shape[1] // 6, i.shape[0] // 6))),
    "grayscale": (
        "grayscale",
        lambda i: cv2.cvtColor(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
    ),
    "0.7x resized copy": ("near_duplicate", lambda i: cv2.resize(i, None, fx=0.7, fy=0.7)),
    "brighter +25 copy": (
        "near_duplicate",
        lambda i: np.clip(i.astype(int) + 25, 0, 255).astype(np.uint8),
    ),
}


def throughput(folder: Path, repeats: int) -> None:
    count = sum(1 for _ in folder.rglob("*.jpg"))
    rates: dict[str, float] = {"verify": 0.0, "inspect": 0.0}
    for _ in range(repeats):
        for name, job in (("verify", dataset.verify), ("inspect", dataset.inspect)):
            start = time.perf_counter()
            job(folder, workers=2)
            rates[name] = max(rates[name], count / (time.perf_counter() - start))
    print(f"{count} photos, {os.cpu_count()} CPUs, 2 workers, best of {repeats}")
    print(f"  verify  {rates['verify']:7.0f} images/s")
    ratio = rates["inspect"] / rates["verify"]
    print(f"  inspect {rates['inspect']:7.0f} images/s = {ratio:.2f} x verify")


def detection(folder: Path, per_kind: int) -> None:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    photos = {cls: sorted((folder / cls).glob("*.jpg")) for cls in classes}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for cls, files in photos.items():
            (root / cls).mkdir()
            for path in files:
                os.link(path, root / cls / path.name)
        planted: dict[str, tuple[str, str]] = {}  # file → (variant, issue)
        pool = [p for files in photos.values() for p in files]
        rng = np.random.default_rng(0)
        chosen = rng.permutation(len(pool))
        index = 0
        for variant, (issue, transform) in PLANTS.items():
            for _ in range(per_kind):
                source = pool[chosen[index % len(pool)]]
                index += 1
                image = transform(read_image(source))
                name = f"{source.parent.name}/planted_{len(planted):05d}.jpg"
                (root / name).write_bytes(encode_image(image, ".jpg", quality=90))
                planted[name] = (variant, issue)
        for _ in range(per_kind):  # exact copies, and the same photo under the other class
            source = pool[chosen[index % len(pool)]]
            index += 1
            name = f"{source.parent.name}/planted_{len(planted):05d}.jpg"
            (root / name).write_bytes(source.read_bytes())
            planted[name] = ("byte-identical copy", "exact_duplicate")
            other = next(c for c in classes if c != source.parent.name)
            name = f"{other}/planted_{len(planted):05d}.jpg"
            (root / name).write_bytes(source.read_bytes())
            planted[name] = ("copy filed under the other class", "label_conflict")
        result = dataset.inspect(root, workers=2)
    found: dict[str, set[str]] = {}
    for finding in result.findings:
        found.setdefault(finding.path, set()).add(finding.issue)
    print(f"\n{len(pool)} untouched photos + {len(planted)} planted files ({per_kind} per variant)")
    print(f"{'planted variant':36s} {'issue':18s} recall")
    for variant, issue in dict.fromkeys(planted.values()):
        files = [f for f, v in planted.items() if v == (variant, issue)]
        recall = np.mean([issue in found.get(f, set()) for f in files])
        print(f"{variant:36s} {issue:18s} {recall:6.3f}")
    untouched = [str(p.relative_to(folder)) for p in pool]
    flagged = [f for f in untouched if found.get(f, set()) & set(QUALITY_KINDS)]
    print(
        f"untouched photos with a quality flag: {len(flagged)}/{len(untouched)} = "
        f"{len(flagged) / len(untouched):.3f}"
    )
    by_kind = {k: sum(k in found.get(f, set()) for f in untouched) for k in QUALITY_KINDS}
    print("  by kind:", {k: v for k, v in by_kind.items() if v})
    duplicates = [f for f in untouched if found.get(f, set()) - set(QUALITY_KINDS)]
    print(f"untouched photos listed as duplicates or conflicts: {len(duplicates)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEV / "val")
    parser.add_argument("--speed-photos", type=Path, default=DEV)
    parser.add_argument("--per-kind", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.photos.is_dir():
        sys.exit(f"{args.photos} not found: pass --photos with a folder of class subfolders")
    throughput(args.speed_photos, args.repeats)
    detection(args.photos, args.per_kind)


if __name__ == "__main__":
    main()
