"""Training commands: train, evaluate, predict, export, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cvprep.cli.app import cli
from cvprep.cli.common import EXIT_REJECTED, emit_json, json_option, parse_spec, quiet_option
from cvprep.errors import CvprepError
from cvprep.train import AUGMENT_PRESETS, MODELS

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@cli.command("train")
@click.argument("data", type=existing_dir)
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default="cnn",
    show_default=True,
)
@click.option(
    "--alpha",
    type=click.FloatRange(0.1, 1.4),
    default=1.0,
    show_default=True,
    help="Width multiplier (mobilenet, mobilenet_v2).",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="imagenet (downloaded by Keras), none, or a local weights file.",
)
@click.option(
    "--img-size",
    type=click.IntRange(32, 1024),
    help="Square input size [default: 150 for cnn, 224 for backbones].",
)
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--fine-tune-epochs",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Second phase: unfreeze the top layers and train at a low learning rate.",
)
@click.option(
    "--unfreeze",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Backbone layers to unfreeze for fine-tuning.",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--learning-rate", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True
)
@click.option(
    "--ops",
    "ops_spec",
    metavar="SPEC",
    default="",
    callback=lambda c, p, v: parse_spec(c, p, v).to_text() if v else "",
    help="Extra preprocessing applied while training and built into the model.",
)
@click.option(
    "--augment",
    type=click.Choice(AUGMENT_PRESETS),
    default="none",
    show_default=True,
    help="Random Keras layers, training only.",
)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Early-stopping patience (epochs).",
)
@click.option("--distribute", is_flag=True, help="MirroredStrategy over all visible GPUs.")
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    default="",
    help="Multi-process data parallelism (JAX backend): address of process 0.",
)
@click.option("--num-processes", type=click.IntRange(1), default=1, show_default=True)
@click.option("--process-id", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder for the model and its evidence.",
)
@quiet_option
def train_command(
    data: Path,
    model: str,
    alpha: float,
    weights: str,
    img_size: int | None,
    epochs: int,
    fine_tune_epochs: int,
    unfreeze: int,
    batch_size: int,
    learning_rate: float,
    ops_spec: str,
    augment: str,
    seed: int,
    patience: int,
    distribute: bool,
    coordinator: str,
    num_processes: int,
    process_id: int,
    out: Path,
    quiet: bool,
) -> None:
    """Train a classifier on DATA (train/, val/, optional test/ as written by `cvprep split`).

    Two classes give a sigmoid output, more a softmax. Transfer learning freezes the backbone
    first, then (with --fine-tune-epochs) unfreezes the top --unfreeze layers, keeping
    BatchNormalization in inference mode. Re-running an interrupted command resumes it.
    The run folder gets model.keras, labels.json, pipeline.json, config.json, history.csv,
    curves.png, confusion_matrix.png, metrics.json and report.html.

    \b
    Example:
      cvprep train prepped/ --model mobilenet --alpha 0.25 --epochs 5 \\
          --fine-tune-epochs 5 --augment light --out runs/mobilenet
    """
    _quiet_tensorflow()
    from cvprep.train import TrainConfig, train

    config = TrainConfig(
        data=str(data),
        out=str(out),
        model=model,
        alpha=alpha,
        weights=weights,
        img_size=img_size,
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        unfreeze=unfreeze,
        batch_size=batch_size,
        learning_rate=learning_rate,
        ops=ops_spec,
        augment=augment,
        seed=seed,
        patience=patience,
        distribute=distribute,
        coordinator=coordinator,
        num_processes=num_processes,
        process_id=process_id,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        train(config, verbose=0 if quiet else 2, log=(lambda _: None) if quiet else click.echo)
    except CvprepError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("evaluate")
@click.argument("run", type=existing_dir)
@click.argument("data", type=existing_dir)
@json_option
def evaluate_command(run: Path, data: Path, as_json: bool) -> None:
    """Evaluate RUN's model on raw images: DATA/test (or DATA/val, or DATA's class folders).

    Writes RUN/evaluation/metrics.json and confusion_matrix.png.

    \b
    Example:
      cvprep evaluate runs/cnn data/
    """
    _quiet_tensorflow()
    from cvprep import report
    from cvprep.train import evaluate_folder, write_json

    try:
        metrics = evaluate_folder(run, data)
    except CvprepError as exc:
        raise click.ClickException(str(exc)) from None
    folder = run / "evaluation"
    folder.mkdir(exist_ok=True)
    write_json(folder / "metrics.json", metrics)
    report.plot_confusion(
        metrics["confusion_matrix"],
        metrics["classes"],
        folder / "confusion_matrix.png",
        f"confusion matrix ({metrics['split']})",
    )
    if as_json:
        emit_json(metrics)
    else:
        click.echo(
            f"accuracy {metrics['accuracy']:.3f} on {metrics['count']} images "
            f"({metrics['evaluated_on']})"
        )
        for cls, values in metrics["per_class"].items():
            click.echo(
                f"  {cls:>12}: precision {values['precision']:.3f}  "
                f"recall {values['recall']:.3f}  F1 {values['f1-score']:.3f}"
            )
        for path, error in metrics["rejected"].items():
            click.echo(f"  rejected {path}: {error}", err=True)
    sys.exit(EXIT_REJECTED if metrics["rejected"] else 0)


def _image_paths(sources: tuple[Path, ...]) -> list[Path]:
    from cvprep.files import iter_files

    paths: list[Path] = []
    for source in sources:
        paths.extend(source / p for p in iter_files(source)) if source.is_dir() else paths.append(
            source
        )
    return paths


@cli.command("predict")
@click.argument("run", type=existing_dir)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@json_option
def predict_command(run: Path, images: tuple[Path, ...], as_json: bool) -> None:
    """Predict the class of raw images (files or folders) with RUN's model.

    Bad files are reported, not fatal (exit status 1 if any).

    \b
    Example:
      cvprep predict runs/cnn photo1.jpg more_photos/ --json
    """
    _quiet_tensorflow()
    from dataclasses import asdict

    from cvprep.train import load_run, predict_files

    try:
        model, classes, _ = load_run(run)
    except CvprepError as exc:
        raise click.ClickException(str(exc)) from None
    predictions = predict_files(model, classes, _image_paths(images))
    if as_json:
        emit_json([asdict(p) for p in predictions])
    else:
        for p in predictions:
            if p.error:
                click.echo(f"{p.path}: rejected {p.error}", err=True)
            else:
                click.echo(f"{p.path}: {p.label} ({p.probability:.3f})")
    sys.exit(EXIT_REJECTED if any(p.error for p in predictions) else 0)


@cli.command("export")
@click.argument("run", type=existing_dir)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["savedmodel", "tflite"]),
    default="savedmodel",
    show_default=True,
)
@click.option("--quantize", is_flag=True, help="TFLite dynamic-range quantisation (int8 weights).")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write [default: RUN/export/savedmodel or RUN/export/model.tflite].",
)
def export_command(run: Path, fmt: str, quantize: bool, output: Path | None) -> None:
    """Export RUN's model (raw RGB images in, probabilities out) for serving.

    The SavedModel serves without cvprep installed; the TFLite model uses built-in ops only.

    \b
    Example:
      cvprep export runs/cnn --format tflite --quantize
    """
    _quiet_tensorflow()
    from cvprep.export import export_run

    if quantize and fmt != "tflite":
        raise click.BadParameter("--quantize applies to --format tflite", param_hint="--quantize")
    try:
        path = export_run(run, fmt, quantize=quantize, output=output)
    except CvprepError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {fmt} to {path}")


@cli.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("cvprep-demo"),
    show_default=True,
    help="Folder for everything.",
)
@click.option(
    "--data",
    "source",
    type=existing_dir,
    help="Class folders to use [default: the bundled sample_images/shapes].",
)
@click.option("--epochs", type=click.IntRange(1), default=25, show_default=True)
def demo_command(out: Path, source: Path | None, epochs: int) -> None:
    """Run the whole path on the bundled two-class sample set, in a minute or two.

    verify → split → preprocess → train (small CNN) → evaluate → predict.

    \b
    Example:
      cvprep demo --out cvprep-demo
    """
    _quiet_tensorflow()
    from cvprep.demo import run_demo

    try:
        run_demo(out, source, epochs, echo=click.echo)
    except CvprepError as exc:
        raise click.ClickException(str(exc)) from None
