"""`cvprep demo`: the README's main job on the bundled images, through the Python API.

Each step prints the command that does the same, so the demo doubles as a tour of the CLI.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvprep import dataset
from cvprep.errors import CvprepError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images" / "shapes"
# Round or angular is a matter of outlines: an edge map (Canny, after a light blur, at the
# images' own size) keeps them and drops most of the background, which a CNN trained from
# scratch on 280 images otherwise latches onto (measured, README: 0.85-0.93 test accuracy
# on the plain or equalised images, 0.95-0.98 on edges, for seeds 1 to 3).
DEMO_SPEC = "gaussian_blur=3,canny=40:120,resize=64x64:fit=pad"
DEMO_TRAINING = {
    "model": "cnn",
    "img_size": 64,
    "epochs": 60,
    "batch_size": 16,
    "augment": "heavy",  # shapes keep their class whatever the rotation, zoom, blur or noise
    "seed": 1,
}


def _command(echo: Callable[[str], None], *args: Any) -> None:
    echo(f"\n$ cvprep {shlex.join(str(a) for a in args)}")


def run_demo(
    out: Path, source: Path | None, epochs: int | None, echo: Callable[[str], None]
) -> dict[str, Any]:
    """verify → split → preprocess → train → evaluate → predict; returns the test metrics."""
    from cvprep import training

    source = source or SAMPLES
    if not source.is_dir():
        raise CvprepError(
            f"sample images not found at {source}: run from a clone of the "
            "repository, or pass --data with a folder of class subfolders"
        )
    data, prepped, run = out / "data", out / "prepped", out / "run"
    report = out / "verify-report.csv"
    _command(echo, "verify", source, "--report", report)
    verified = dataset.verify(source, report=report)
    echo(f"{verified.summary.total['ok']} images readable, {len(verified.rejected)} rejected")
    # The demo goes on without rejected files, as a user would.
    _command(echo, "split", source, data, "--ratios", "0.7,0.15,0.15", "--seed", 1)
    splitted = dataset.split(source, data, ratios="0.7,0.15,0.15", seed=1)
    echo("  ".join(f"{cls}: {row}" for cls, row in splitted.rows.items()))
    # PNG: no second JPEG loss, so the training images equal what the model computes itself.
    _command(echo, "preprocess", data, prepped, "--ops", DEMO_SPEC, "--format", "png")
    processed = dataset.preprocess(data, prepped, DEMO_SPEC, fmt="png")
    echo(f"{processed.summary.total['ok']} images written to {prepped}")
    settings = {**DEMO_TRAINING, **({"epochs": epochs} if epochs else {})}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    _command(echo, "train", prepped, *flags, "--out", run)
    result = training.train(prepped, out=run, verbose=0, log=echo, **settings)
    _command(echo, "evaluate", run, data)
    evaluation = training.evaluate(run, data)
    echo(f"accuracy {evaluation.accuracy:.3f} on {evaluation.metrics['count']} raw test images")
    # Test images of any format that the evaluation could read.
    examples = sorted(Path(p.path) for p in evaluation.predictions if not p.error)
    examples = examples[:: max(1, len(examples) // 4)][:4]
    _command(echo, "predict", run, *examples)
    for prediction in training.predict(run, examples):
        echo(f"{prediction.path}: {prediction.label} ({prediction.probability:.3f})")
    echo(
        f"\nDone in {result.seconds:.0f} s of training. Open {run / 'report.html'} for "
        "curves, the confusion matrix, misclassified images and suspect labels."
    )
    return evaluation.metrics
