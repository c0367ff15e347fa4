"""`cvprep demo`: the README's main job, run with the real commands on the bundled images."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from cvprep.errors import CvprepError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images" / "shapes"
DEMO_SPEC = "resize=64x64:fit=pad,equalize"


def _run(args: list[str], echo: Callable[[str], None], allowed: tuple[int, ...] = (0,)) -> None:
    from cvprep.cli import cli

    echo(f"\n$ cvprep {shlex.join(args)}")
    try:
        cli.main(args=args, prog_name="cvprep", standalone_mode=False)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    if code not in allowed:
        raise CvprepError(f"`cvprep {shlex.join(args)}` failed with exit status {code}")


def run_demo(out: Path, source: Path | None, epochs: int, echo: Callable[[str], None]) -> None:
    source = source or SAMPLES
    if not source.is_dir():
        raise CvprepError(
            f"sample images not found at {source}: run from a clone of the "
            "repository, or pass --data with a folder of class subfolders"
        )
    data, prepped, run = out / "data", out / "prepped", out / "run"
    # verify exits 1 when it rejects files; the demo goes on without them, as a user would.
    _run(["verify", str(source), "--report", str(out / "verify-report.csv")], echo, (0, 1))
    _run(
        ["split", str(source), str(data), "--ratios", "0.7,0.15,0.15", "--seed", "1", "-q"],
        echo,
        (0, 1),
    )
    # PNG: no second JPEG loss, so the training images equal what the model computes itself.
    _run(["preprocess", str(data), str(prepped), "--ops", DEMO_SPEC, "--format", "png", "-q"], echo)
    _run(
        [
            "train",
            str(prepped),
            "--model",
            "cnn",
            "--img-size",
            "64",
            "--patience",
            "8",
            "--epochs",
            str(epochs),
            "--batch-size",
            "16",
            "--augment",
            "light",
            "--seed",
            "1",
            "--out",
            str(run),
        ],
        echo,
    )
    _run(["evaluate", str(run), str(data)], echo)
    examples = sorted((data / "test").rglob("*.jpg"))[
        :: max(1, len(list((data / "test").rglob("*.jpg"))) // 4)
    ]
    _run(["predict", str(run), *map(str, examples[:4])], echo)
    echo(f"\nDone. Open {run / 'report.html'} for curves, confusion matrix and metrics.")
