"""`cvprep inspect --labels-check` on real photos with planted label errors.

    python benchmarks/label_check.py [--photos DIR] [--weights FILE|imagenet|none]
                                     [--seeds 0,1,2,3,4] [--fraction 0.05] [--workers 2]
    python benchmarks/label_check.py --sweep [--photos DIR] [--weights FILE] [--seeds 0,1,2,3,4]

Check (default): for every seed, a scratch copy of ``--photos`` (a folder of class
subfolders; default the dev photos' ``train/`` half) is made of hard links in the temporary
folder — the photos are never modified — with ``--fraction`` of the files, chosen at random
for the seed, filed under another class. ``dataset.inspect(..., labels_check=...)`` runs on
it; the script prints the precision (share of ``label_issue`` findings that are planted
flips) and recall (share of flips found), the time of the whole inspect, and that of a
plain inspect of the same tree (the baseline, same process), and lists the findings that
are not flips, for a person to look at.

Sweep (``--sweep``): the choices behind the defaults. Features are computed once per input
size, crop and mirror setting (with the check's own backbone loader), then for every seed of
flipping: a logistic regression for several C, K = 5 or 10 folds, and the flagging rules
(with ``noise_factor`` 1.0–1.2); prints mean and lowest precision and recall over the seeds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cvprep import dataset
from cvprep.dataset.label_check import LabelCheck

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def class_files(photos: Path) -> dict[str, list[Path]]:
    return {
        folder.name: sorted(p for p in folder.iterdir() if p.is_file())
        for folder in sorted(photos.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }


def flipped_copy(photos: Path, out: Path, fraction: float, seed: int) -> set[str]:
    """Hard-link every photo into ``out``, ``fraction`` of them under another class (chosen
    at random for ``seed``); returns the flipped files' paths relative to ``out``."""
    files = class_files(photos)
    everything = [(cls, path) for cls, paths in files.items() for path in paths]
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(everything), round(fraction * len(everything)), replace=False))
    classes = sorted(files)
    flipped = set()
    for index, (cls, path) in enumerate(everything):
        target = cls
        if index in chosen:
            target = str(rng.choice([c for c in classes if c != cls]))
            flipped.add(f"{target}/{path.name}")
        (out / target).mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out / target / path.name)
        except OSError:  # another file system: a copy
            shutil.copyfile(path, out / target / path.name)
    return flipped


def run_check(args: argparse.Namespace) -> None:
    check = LabelCheck(weights=args.weights)
    print(f"photos: {args.photos}; model: {check.describe()}; {os.cpu_count()} CPUs")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="cvprep-label-check-") as scratch:
            tree = Path(scratch) / "photos"
            flipped = flipped_copy(args.photos, tree, args.fraction, seed)
            started = time.perf_counter()
            plain = dataset.inspect(tree, workers=args.workers)
            baseline = time.perf_counter() - started
            started = time.perf_counter()
            result = dataset.inspect(tree, workers=args.workers, labels_check=check)
            seconds = time.perf_counter() - started
        found = {f.path for f in result.by_issue("label_issue")}
        hits = len(found & flipped)
        precision, recall = hits / max(1, len(found)), hits / len(flipped)
        rows.append((precision, recall, seconds, baseline))
        assert result.label_check is not None
        print(
            f"seed {seed}: {len(flipped)} flipped, {len(found)} flagged, precision "
            f"{precision:.3f}, recall {recall:.3f}; inspect {seconds:.1f} s "
            f"(plain inspect {baseline:.1f} s, {plain.files} files); out-of-fold accuracy "
            f"{result.label_check.accuracy:.3f}; {'; '.join(result.label_check.notes)}",
            flush=True,
        )
        for finding in result.by_issue("label_issue"):
            if finding.path not in flipped:
                print(f"    not a flip: {finding.path} {finding.score:.3f} {finding.detail}")
    mean = np.mean(rows, axis=0)
    print(
        f"mean over {len(rows)} seed(s): precision {mean[0]:.3f}, recall {mean[1]:.3f}, "
        f"inspect --labels-check {mean[2]:.1f} s = {mean[2] / mean[3]:.1f}× plain inspect"
    )


# --------------------------------------------------------------------------- sweep
def features(photos: list[Path], weights: str, size: int, fit: str, mirror: bool) -> np.ndarray:
    from cvprep import ops
    from cvprep.dataset.label_models import load_backbone
    from cvprep.io import read_image

    model = load_backbone(LabelCheck(weights=weights, size=size))
    rows = []
    for start in range(0, len(photos), 64):
        batch = np.stack(
            [
                ops.resize(read_image(p), (size, size), interpolation="area", fit=fit)
                for p in photos[start : start + 64]
            ]
        )
        pooled = np.asarray(model.predict_on_batch(batch), np.float32)
        if mirror:
            pooled = (pooled + np.asarray(model.predict_on_batch(batch[:, :, ::-1]))) / 2
        rows.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(rows)


RULES = [
    ("confident_learning", 1.0),
    ("prune_by_noise_rate", 1.0),
    ("prune_by_noise_rate", 1.1),
    ("prune_by_noise_rate", 1.2),
    ("both", 1.0),
]


def flipped_labels(truth: np.ndarray, classes: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of the labels, each moved to another class, and the labels."""
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(truth), round(fraction * len(truth)), replace=False)
    y = truth.copy()
    y[flip] = (y[flip] + rng.integers(1, classes, len(flip))) % classes
    return flip, y


def sweep(args: argparse.Namespace) -> None:
    from cvprep.dataset.confident import find_label_issues
    from cvprep.dataset.label_check import fold_assignment, linear_probabilities
    from cvprep.dataset.results import NoProgress

    files = class_files(args.photos)
    classes = sorted(files)
    photos = [p for c in classes for p in files[c]]
    truth = np.array([classes.index(c) for c in classes for _ in files[c]])
    settings = [(224, "crop", True), (288, "stretch", True), (288, "crop", False)]
    settings += [(288, "crop", True), (352, "crop", True)]
    for size, fit, mirror in settings:
        started = time.perf_counter()
        x = features(photos, args.weights, size, fit, mirror)
        took = time.perf_counter() - started
        print(f"{size} px {fit}{', mirrored' if mirror else ''}: features {took:.0f} s")
        for c, folds in [(1.0, 5), (3.0, 5), (10.0, 5), (3.0, 10)]:
            scores: dict[tuple[str, float], list[tuple[float, float]]] = {r: [] for r in RULES}
            for seed in args.seeds:
                flip, y = flipped_labels(truth, len(classes), args.fraction, seed)
                assignment = fold_assignment(y, np.arange(len(y)), folds, seed=0)
                p = linear_probabilities(
                    x, y, assignment, len(classes), NoProgress(), regularisation=c
                )
                for method, factor in RULES:
                    issues = find_label_issues(p, y, method=method, noise_factor=factor)  # type: ignore[arg-type]
                    hits = len(set(issues.indices.tolist()) & set(flip.tolist()))
                    scores[(method, factor)].append(
                        (hits / max(1, len(issues.indices)), hits / len(flip))
                    )
            for (method, factor), values in scores.items():
                mean, low = np.mean(values, axis=0), np.min(values, axis=0)
                print(
                    f"    C {c:g}, K {folds}, {method} ×{factor:g}: precision {mean[0]:.3f} "
                    f"(lowest {low[0]:.3f}), recall {mean[1]:.3f} (lowest {low[1]:.3f})",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEV / "train")
    parser.add_argument("--weights", default=str(WEIGHTS) if WEIGHTS.is_file() else "none")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if not args.photos.is_dir():
        sys.exit(f"{args.photos}: no such folder (the dev photos are not here)")
    sweep(args) if args.sweep else run_check(args)


if __name__ == "__main__":
    main()
