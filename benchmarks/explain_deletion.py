"""Deletion test of the heatmaps: does hiding what the heatmap points at hurt the prediction
more than hiding as many pixels elsewhere?

    python benchmarks/explain_deletion.py RUN [--data FOLDER] [--fraction 0.2]
        [--fill mean|blur] [--methods gradcam,gradcam++,layercam] [--limit N] [--seed 0]

FOLDER holds raw photos in class subfolders (default: the dev photos' ``val/``). For every
photo the run's model predicts a class c with probability p; then, per method, the
``--fraction`` of the raw image's pixels that the heatmap of c ranks highest are hidden
(filled with the photo's mean colour, or with a strong blur of it) and the probability of c
is measured again. Two baselines hide the same number of pixels chosen at random:

- ``random pixels``: scattered pixels, drawn uniformly;
- ``random blobs``: the top of a random map of the feature map's size, carried onto the photo
  exactly like a heatmap (same smoothness and geometry as the real masks: the fairer test).

Prints, per method, the mean probability of c before and after each deletion, the mean drops,
the ratio of the heatmap's drop to each baseline's (> 1: the heatmap finds what the model
uses) and the share of photos where the heatmap's deletion hurt more than the blobs'.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cvprep.errors import ImageError
from cvprep.files import list_tree
from cvprep.io import read_image
from cvprep.training import load_run
from cvprep.training.explain import METHODS, Explainer, hide, top_fraction

ROOT = Path(__file__).resolve().parents[1]
DEV_VAL = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev" / "val"
BATCH = 32


def probabilities_of(explainer: Explainer, images: list[np.ndarray]) -> np.ndarray:
    batch = np.stack([explainer.predictor.prepare(image) for image in images])
    return explainer.predictor.probabilities(batch)


def measure_batch(
    explainers: dict[str, Explainer],
    images: list[np.ndarray],
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Probability of the predicted class: before, after each method's and each baseline's
    deletion (one row per image)."""
    first = next(iter(explainers.values()))
    prepared = np.stack([first.predictor.prepare(image) for image in images])
    before = first.predictor.probabilities(prepared)
    targets = before.argmax(axis=1)
    rows = np.arange(len(images))
    result = {"before": before[rows, targets]}
    feature_shape = None
    for name, explainer in explainers.items():
        cams, _ = explainer.network_maps(prepared, targets)
        feature_shape = cams.shape[1:]
        masked = [
            hide(
                image,
                top_fraction(explainer.to_raw_image(cam, image.shape[:2]), args.fraction, rng),
                args.fill,
            )
            for image, cam in zip(images, cams, strict=True)
        ]
        result[name] = probabilities_of(explainer, masked)[rows, targets]
    pixels = [hide(i, rng.uniform(size=i.shape[:2]) < args.fraction, args.fill) for i in images]
    result["random pixels"] = probabilities_of(first, pixels)[rows, targets]
    blobs = [
        hide(
            image,
            top_fraction(
                first.to_raw_image(rng.uniform(size=feature_shape), image.shape[:2]),
                args.fraction,
                rng,
            ),
            args.fill,
        )
        for image in images
    ]
    result["random blobs"] = probabilities_of(first, blobs)[rows, targets]
    return result


def photos(folder: Path, limit: int | None) -> list[Path]:
    files = [folder / p for p in list_tree(folder).files]
    if limit:
        files = list(np.random.default_rng(0).permutation(files)[:limit])
    return files


def report(results: dict[str, np.ndarray], methods: list[str], seconds: float) -> None:
    before = results["before"]
    print(
        f"{len(before)} photos, {seconds:.0f} s; mean probability of the predicted class "
        f"{before.mean():.4f}"
    )
    for key in ("random pixels", "random blobs"):
        print(
            f"  hide {key:<14}: mean probability {results[key].mean():.4f}, "
            f"drop {np.mean(before - results[key]):.4f}"
        )
    print(f"{'method':<10} {'after':>7} {'drop':>7} {'÷ pixels':>9} {'÷ blobs':>8} {'wins':>6}")
    pixel_drop = np.mean(before - results["random pixels"])
    blob_drop = np.mean(before - results["random blobs"])
    for method in methods:
        drop = np.mean(before - results[method])
        wins = np.mean(results[method] < results["random blobs"])
        print(
            f"{method:<10} {results[method].mean():>7.4f} {drop:>7.4f} "
            f"{drop / pixel_drop:>9.2f} {drop / blob_drop:>8.2f} {wins:>6.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=DEV_VAL)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--fill", choices=("mean", "blur"), default="mean")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--limit", type=int, default=0, help="at most N photos (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    methods = args.methods.split(",")
    run = load_run(args.run)
    explainers = {m: Explainer(run.model, run.classes, method=m) for m in methods}
    rng = np.random.default_rng(args.seed)
    files = photos(args.data, args.limit)
    started = time.perf_counter()
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(files), BATCH):
        images = []
        for path in files[start : start + BATCH]:
            try:
                images.append(read_image(path))
            except ImageError as exc:
                print(f"skipped {exc}", file=sys.stderr)
        for key, values in measure_batch(explainers, images, args, rng).items():
            collected.setdefault(key, []).append(values)
    results = {key: np.concatenate(values) for key, values in collected.items()}
    print(f"run {args.run}, photos {args.data}, hiding {args.fraction:.0%} ({args.fill} fill)")
    report(results, methods, time.perf_counter() - started)


if __name__ == "__main__":
    main()
