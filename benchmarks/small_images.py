"""Small images: ``cvprep train --model cnn`` with its defaults against a scikit-learn SVC.

    python benchmarks/small_images.py [--scratch DIR] [--seed 0] [--ratios 0.7,0.1,0.2]

Input: scikit-learn's ``load_digits`` (1,797 real handwritten digits, 8×8 pixels, 16 gray
levels, 10 classes; shipped with scikit-learn), scaled to 0–255 and written as class folders
of PNGs through :func:`cvprep.dataset.from_arrays`, then split with ``cvprep split`` (fixed
seed) into ``data/{train,val,test}``, all under ``--scratch`` (default: a new folder in the
system's temporary folder; never the project).

Then, on exactly those files, in the same run:

- ``cvprep train data/ --model cnn`` with every default (the input size comes from the data:
  8-pixel images train at 32 pixels), scored by cvprep on ``test/``;
- an SVC (RBF kernel) on the 64 raw pixels of the same ``train/`` files, its ``C`` and
  ``gamma`` chosen on ``val/`` from a small grid around scikit-learn's own digits example
  (``SVC(gamma=0.001)`` on pixels 0–16), scored on the same ``test/`` files.

Prints both test accuracies and the seconds each took (wall time: disturbed by other
programs on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvprep.dataset import from_arrays
from cvprep.io import read_image

GRID = {"C": (1.0, 10.0), "gamma": (0.0005, 0.001, 0.002)}  # on pixels scaled to 0-16


def write_digits(folder: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    from_arrays(images, digits.target, folder, class_names=[str(d) for d in range(10)])
    return folder


def cvprep_cli(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("cvprep")), *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def pixels(split: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 64 pixels (0-16, as load_digits has them) and the class of every file of a split."""
    files = sorted(split.glob("*/*.png"))
    x = np.stack([read_image(f, mode="grayscale").reshape(-1) for f in files]) * (16 / 255)
    y = np.array([int(f.parent.name) for f in files])
    return x, y


def svc_accuracy(data: Path) -> tuple[float, dict[str, float]]:
    """Test accuracy of the SVC whose C and gamma score best on val/ (trained on train/)."""
    from sklearn.svm import SVC

    x_train, y_train = pixels(data / "train")
    x_val, y_val = pixels(data / "val")
    x_test, y_test = pixels(data / "test")
    scored = []
    for c in GRID["C"]:
        for gamma in GRID["gamma"]:
            model = SVC(C=c, gamma=gamma).fit(x_train, y_train)
            scored.append((model.score(x_val, y_val), -c, -gamma, c, gamma))
    _, _, _, c, gamma = max(scored)
    model = SVC(C=c, gamma=gamma).fit(x_train, y_train)
    return float(model.score(x_test, y_test)), {"C": c, "gamma": gamma}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--ratios", default="0.7,0.1,0.2")
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cvprep-small-"))
    data = scratch / "data"
    digits = write_digits(scratch / "digits")
    cvprep_cli("split", str(digits), str(data), "--ratios", args.ratios, "--seed", args.seed)
    counts = {s: len(list((data / s).glob("*/*.png"))) for s in ("train", "val", "test")}
    print("images per split:", counts, flush=True)

    started = time.perf_counter()
    svc, chosen = svc_accuracy(data)
    svc_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cvprep_cli("train", str(data), "--model", "cnn", "--out", str(scratch / "run"), "--quiet")
    cnn_seconds = time.perf_counter() - started
    metrics = json.loads((scratch / "run" / "metrics.json").read_text())
    config = json.loads((scratch / "run" / "config.json").read_text())

    print(f"SVC {chosen}: test accuracy {svc:.4f} ({svc_seconds:.1f} s)")
    print(
        f"cvprep cnn (defaults, {config['image_size']}-pixel input, {metrics['epochs_run']} "
        f"epochs): test accuracy {metrics['accuracy']:.4f}, balanced "
        f"{metrics['balanced_accuracy']:.4f} on {metrics['count']} images ({cnn_seconds:.0f} s)"
    )
    print(f"difference cnn - svc: {metrics['accuracy'] - svc:+.4f}; scratch: {scratch}")


if __name__ == "__main__":
    main()
