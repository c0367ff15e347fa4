"""Test-time augmentation (the image and its mirror, probabilities averaged): what it does to
accuracy, and what it costs.

    python benchmarks/tta.py RUN [RUN ...] [--data FOLDER]

For each run, evaluates on FOLDER (class subfolders of raw photos; default: the dev photos'
``val/``) without and with ``tta=True`` in the same process, and prints the two accuracies,
how many photos changed from wrong to right and back, the mean log loss, and the time ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cvprep.training import load_run  # noqa: E402
from cvprep.training.evaluate import Evaluation, Predictor, evaluate_folder  # noqa: E402

DEV_VAL = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev" / "val"


def correct_and_loss(result: Evaluation) -> tuple[np.ndarray, float]:
    pairs = [(p, t) for p, t in zip(result.predictions, result.truth, strict=True) if not p.error]
    correct = np.array([p.label == t for p, t in pairs])
    loss = -np.mean([np.log(max(p.probabilities[t], 1e-7)) for p, t in pairs])
    return correct, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=DEV_VAL)
    args = parser.parse_args()
    for folder in args.runs:
        run = load_run(folder)
        outcomes = {}
        for tta in (False, True):
            predictor = Predictor(run.model, run.classes, tta=tta)
            evaluate_folder(predictor, args.data)  # warm-up: trace, fill caches
            started = time.perf_counter()
            result = evaluate_folder(predictor, args.data)
            outcomes[tta] = (*correct_and_loss(result), time.perf_counter() - started)
        (plain, plain_loss, plain_s), (tta, tta_loss, tta_s) = outcomes[False], outcomes[True]
        print(
            f"{folder}: {len(plain)} photos; accuracy {plain.mean():.4f} -> {tta.mean():.4f} "
            f"with TTA ({np.sum(~plain & tta)} fixed, {np.sum(plain & ~tta)} broken); "
            f"log loss {plain_loss:.4f} -> {tta_loss:.4f}; time {plain_s:.1f} s -> "
            f"{tta_s:.1f} s ({tta_s / plain_s:.2f}x)"
        )


if __name__ == "__main__":
    main()
