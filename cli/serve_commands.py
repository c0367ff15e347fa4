"""cvprep serve: parse, call cvprep.serve.serve, which runs until interrupted."""

from __future__ import annotations

from pathlib import Path

import click

from cvprep.cli.app import cli
from cvprep.cli.common import existing_dir, library_errors
from cvprep.cli.train_commands import tensorflow_command, tta_option
from cvprep.io import DEFAULT_MAX_PIXELS
from cvprep.serve import DEFAULT_MAX_BYTES


@cli.command("serve")
@click.argument("run", type=existing_dir)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (only this machine by default; 0.0.0.0 opens it to the network).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--max-bytes",
    type=click.IntRange(1),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="Larger uploads are refused (413) without reading them.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Larger images are refused (413) from their header, before decoding.",
)
@tta_option
@tensorflow_command
@library_errors
def serve_command(
    run: Path, host: str, port: int, max_bytes: int, max_pixels: int, tta: bool
) -> None:
    """Try RUN's model in a browser: a local page to drop, paste or draw an image.

    The page shows the class probabilities, the heatmap of the prediction and the image
    after each preprocessing step of the model. Scripts POST an image to /predict (the body,
    or the form field `file`) and get what `cvprep predict --json` prints for it; add
    ?explain=true for the heatmap, ?steps=true for the steps. Bad uploads get a 4xx and a
    message. Needs the serve extra: pip install "cvprep[serve]".

    Python: cvprep.serve.serve(RUN, host="127.0.0.1", port=8000)

    \b
    Examples:
      cvprep serve runs/cnn                      # then open http://127.0.0.1:8000/
      curl --data-binary @cat.jpg http://127.0.0.1:8000/predict
      curl -F file=@cat.jpg "http://127.0.0.1:8000/predict?explain=true"
    """
    from cvprep.serve import serve

    serve(
        run,
        host=host,
        port=port,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        tta=tta,
        log=click.echo,
    )
