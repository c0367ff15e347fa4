"""Imbalanced classes: balanced accuracy of ``train`` with its default class weighting
(``auto``: balanced at 4:1) against ``--class-weight none``, same data, same seed, same run.

    python benchmarks/imbalance.py [--cats 1000] [--dogs 250] [--img-size 224] [--epochs 5]
        [--seeds 0] [--scratch DIR]

Input: the dev photos (``../shared/data/cats_vs_dogs_dev``). ``data/train`` is a 4:1 subset
of their ``train/`` (the first ``--cats`` cats and ``--dogs`` dogs by name); ``data/test`` is
their whole, balanced ``val/`` (500 + 500), scored once at the end of each run. Validation
(early stopping) is a stratified 10 % of ``data/train``, so it is imbalanced too. The files
are hard links in ``--scratch`` (default: a new folder in the system's temporary folder;
never the project).

Model, to keep two runs affordable on two shared cores: ``--model mobilenet`` (default),
MobileNet α 0.25 with the ImageNet weights file
``../shared/weights/mobilenet_2_5_224_tf_no_top.h5``, only the head trained on the frozen
backbone (``--epochs``, ``--fine-tune-epochs 0``); or ``--model cnn``, a short run from
scratch (``--epochs``). Both at ``--img-size`` pixels; every other setting is the default.

Prints, for each seed, accuracy, balanced accuracy and per-class recall on the 1,000
balanced test photos for both settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvprep.training import train

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTOS = SHARED / "data" / "cats_vs_dogs_dev"
WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def link_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.link(path, folder / path.name)


def imbalanced_data(scratch: Path, cats: int, dogs: int) -> Path:
    """``data/train`` 4:1 from the photos' train/, ``data/test`` = their balanced val/."""
    data = scratch / "data"
    for cls, count in (("cat", cats), ("dog", dogs)):
        link_files(sorted((PHOTOS / "train" / cls).glob("*.jpg"))[:count], data / "train" / cls)
        link_files(sorted((PHOTOS / "val" / cls).glob("*.jpg")), data / "test" / cls)
    return data


def run(data: Path, out: Path, class_weight: str, args: argparse.Namespace, seed: int) -> dict:
    model = (
        {"model": "mobilenet", "alpha": 0.25, "weights": str(WEIGHTS), "fine_tune_epochs": 0}
        if args.model == "mobilenet"
        else {"model": "cnn"}
    )
    result = train(
        data,
        out=out,
        img_size=args.img_size,
        epochs=args.epochs,
        class_weight=class_weight,
        seed=seed,
        log=print,
        **model,
    )
    return result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cats", type=int, default=1000)
    parser.add_argument("--dogs", type=int, default=250)
    parser.add_argument("--model", choices=("mobilenet", "cnn"), default="mobilenet")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    if not PHOTOS.is_dir() or not WEIGHTS.is_file():
        sys.exit(f"needs {PHOTOS} and {WEIGHTS}")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cvprep-imbalance-"))
    data = imbalanced_data(scratch, args.cats, args.dogs)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for setting in ("auto", "none"):
            metrics = run(data, scratch / f"run-{setting}-{seed}", setting, args, seed)
            rows.append((seed, setting, metrics))
    print(
        f"\n{args.model}, {args.img_size} px, {args.epochs} epochs; train {args.cats} cats : "
        f"{args.dogs} dogs; test = dev val/ (500 + 500)"
    )
    for seed, setting, m in rows:
        recall = ", ".join(f"{c} {r:.3f}" for c, r in m["per_class_recall"].items())
        print(
            f"seed {seed} --class-weight {setting:<4}: balanced accuracy "
            f"{m['balanced_accuracy']:.4f}, accuracy {m['accuracy']:.4f}, recall {recall} "
            f"({m['seconds']:.0f} s)"
        )


if __name__ == "__main__":
    main()
