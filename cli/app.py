"""The cvprep Click group and its small commands (ops, preview).

Heavy libraries (TensorFlow, albumentations) are imported inside the commands that need them,
so that `cvprep --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

import cvprep
from cvprep.cli.common import emit_json, json_option, library_errors, ops_option
from cvprep.errors import ImageError
from cvprep.pipeline import OPERATIONS, Pipeline

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(cvprep.__version__, "-V", "--version", prog_name="cvprep")
def cli() -> None:
    """cvprep: OpenCV preprocessing for Keras image classifiers.

    \b
    A typical run on a folder of class subfolders (cats/, dogs/):
      cvprep verify photos/ --report rejects.csv
      cvprep split photos/ data/ --ratios 0.8,0.1,0.1 --seed 1
      cvprep preprocess data/ prepped/ --ops resize=150x150
      cvprep train prepped/ --model cnn --out runs/cnn
      cvprep evaluate runs/cnn prepped/
    Try `cvprep demo` for the whole path on the bundled sample images.
    """


@cli.command("ops")
@json_option
def ops_command(as_json: bool) -> None:
    """List every operation, its parameters and its spec syntax.

    \b
    Example:
      cvprep ops
    """
    if as_json:
        emit_json(
            [
                {
                    "name": op.name,
                    "summary": op.summary,
                    "syntax": op.syntax(),
                    "layer": f"cvprep.keras_layers.{op.layer}",
                    "function": f"cvprep.ops.{op.function.__name__}",
                    "params": {p.name: p.help for p in op.params},
                    "example": op.example,
                }
                for op in OPERATIONS.values()
            ]
        )
        return
    for op in OPERATIONS.values():
        click.secho(op.name, bold=True, nl=False)
        click.echo(f"  {op.summary}")
        click.echo(f"    syntax:  {op.syntax()}")
        for param in op.params:
            click.echo(f"    {param.name:<14} {param.help}")
        click.echo(
            f"    example: {op.example}    python: cvprep.ops.{op.function.__name__}"
            f"    keras: cvprep.keras_layers.{op.layer}\n"
        )
    click.echo(
        "Join steps with commas: resize=224x224:fit=pad,grayscale,equalize,"
        "gaussian_blur=5,canny=100:200"
    )


@cli.command("preview")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@ops_option()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("preview.png"),
    show_default=True,
    help="Contact sheet to write.",
)
@click.option(
    "--tile",
    type=click.IntRange(32, 2048),
    default=256,
    show_default=True,
    help="Cell size in pixels.",
)
@click.option("--columns", type=click.IntRange(1, 32), default=4, show_default=True)
@library_errors
def preview_command(image: Path, pipeline: Pipeline, output: Path, tile: int, columns: int) -> None:
    """Write a contact sheet of IMAGE after each step of the pipeline.

    \b
    Example:
      cvprep preview cat.jpg --ops resize=224x224,grayscale,equalize,canny=50:150 -o sheet.png
    """
    from cvprep.preview import preview_pipeline

    try:
        picture = cvprep.read_image(image)
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None
    sheet = preview_pipeline(picture, pipeline, tile=tile, columns=columns)
    try:
        cvprep.write_image(output, sheet)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--output") from None
    click.echo(f"wrote {output} ({len(pipeline) + 1} panels)")
