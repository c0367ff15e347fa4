"""Training commands: train, evaluate, predict, export, demo — parse, call cvprep.training,
render. TensorFlow is imported quietly (no start-up log lines) unless --verbose."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from cvprep.augmentation import PRESET_NAMES
from cvprep.cli.app import cli
from cvprep.cli.common import (
    EXIT_REJECTED,
    Checked,
    emit_json,
    existing_dir,
    json_option,
    library_errors,
    load_tensorflow,
    new_dir,
    parse_spec,
    quiet_option,
    seed_option,
    workers_option,
)
from cvprep.pipeline import Pipeline
from cvprep.training.compute import PRECISIONS
from cvprep.training.config import (
    BACKBONES,
    CACHE_MODES,
    CLASS_WEIGHTS,
    DEFAULT_FEATURE_VIEWS,
    IMBALANCE_RATIO,
    MODELS,
    PROGRESSIVE_MIN_SIZE,
    RESIZE_MODES,
    check_setting,
    describe_default,
    describe_stages,
)


def tensorflow_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add --verbose, and import TensorFlow silently before the command runs unless given."""

    def callback(ctx: click.Context, param: click.Parameter, verbose: bool) -> bool:
        load_tensorflow(verbose)
        return verbose

    return click.option(
        "--verbose",
        is_flag=True,
        is_eager=True,
        expose_value=False,
        callback=callback,
        help="Show TensorFlow's own log output.",
    )(function)


def setting_type(name: str, base: click.ParamType) -> Checked:
    """A Click type that accepts exactly what ``TrainConfig`` accepts for ``name`` (the same
    check, the same message; exit 2)."""
    return Checked(base, lambda value: check_setting(name, value))


def recipe_default(name: str, what: str = "", models: Sequence[str] = MODELS) -> str:
    """Help text ending in the recipes' own defaults for ``name``: they cannot drift."""
    return f"{what} [default: {describe_default(name, models)}]".strip()


@cli.command("train")
@click.argument("data", type=existing_dir)
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default="cnn",
    show_default=True,
    help="cnn (cvprep's), classic (the course's exact CNN) or a keras.applications backbone.",
)
@click.option(
    "--alpha",
    type=setting_type("alpha", click.FLOAT),
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
    type=setting_type("img_size", click.INT),
    help=recipe_default(
        "img_size",
        "Square input size; --model cnn trains images of at most 64 pixels at their own "
        "size (at least 32).",
    ),
)
@click.option(
    "--resize",
    type=click.Choice(RESIZE_MODES),
    default="stretch",
    show_default=True,
    help="How images of other shapes reach the input size (built into the model).",
)
@click.option(
    "--epochs",
    type=setting_type("epochs", click.INT),
    help=recipe_default("epochs", "Epochs (backbones: of the head on the frozen backbone)."),
)
@click.option(
    "--fine-tune-epochs",
    type=setting_type("fine_tune_epochs", click.INT),
    help=recipe_default(
        "fine_tune_epochs", "Backbones: epochs with the backbone unfrozen.", BACKBONES
    ),
)
@click.option(
    "--unfreeze",
    type=setting_type("unfreeze", click.INT),
    help=recipe_default(
        "unfreeze", "Backbone layers to unfreeze for fine-tuning, 0 = all.", BACKBONES
    ),
)
@click.option(
    "--batch-size", type=setting_type("batch_size", click.INT), default=32, show_default=True
)
@click.option(
    "--learning-rate",
    type=setting_type("learning_rate", click.FLOAT),
    help=recipe_default("learning_rate", "Peak learning rate."),
)
@click.option(
    "--fine-tune-learning-rate",
    type=setting_type("fine_tune_learning_rate", click.FLOAT),
    help=recipe_default(
        "fine_tune_learning_rate", "Backbones: peak learning rate of fine-tuning.", BACKBONES
    ),
)
@click.option(
    "--label-smoothing",
    type=setting_type("label_smoothing", click.FLOAT),
    help=recipe_default("label_smoothing"),
)
@click.option(
    "--ops",
    "ops_spec",
    metavar="SPEC",
    default=None,
    callback=parse_spec,
    help="Extra preprocessing applied while training and built into the model "
    "(spec text or a pipeline .json file).",
)
@click.option(
    "--augment",
    type=click.Choice(PRESET_NAMES),
    help=recipe_default(
        "augment", "Random transforms while training, the presets of `cvprep augment`."
    ),
)
@click.option(
    "--progressive/--no-progressive",
    default=None,
    help=recipe_default(
        "progressive",
        f"cnn: progressive resizing, cheaper epochs first: {describe_stages()} (smaller "
        f"copies only when at least {PROGRESSIVE_MIN_SIZE} pixels).",
        ("cnn",),
    ),
)
@click.option(
    "--class-weight",
    type=click.Choice(CLASS_WEIGHTS),
    default="auto",
    show_default=True,
    help="Weigh each class's images in the loss so that every class counts the same "
    "(balanced: n_images / (n_classes × images of the class)); auto: balanced when the "
    f"largest class of train/ has >= {IMBALANCE_RATIO:g}× the images of the smallest.",
)
@click.option(
    "--val-fraction",
    type=setting_type("val_fraction", click.FLOAT),
    default=0.1,
    show_default=True,
    help="Without DATA/val: the share of train/ held out for validation (test/ is never used).",
)
@seed_option
@click.option(
    "--patience",
    type=setting_type("patience", click.INT),
    default=10,
    show_default=True,
    help="Early-stopping patience (epochs without a better validation loss).",
)
@click.option(
    "--feature-views",
    type=setting_type("feature_views", click.INT),
    default=DEFAULT_FEATURE_VIEWS,
    show_default=True,
    help="Backbones: the frozen layers run once for this many views of each image (itself, "
    "its mirror, then augmented copies), and the head (and, with --unfreeze N, the top N "
    "layers when fine-tuning) trains on their cached outputs; 0 runs the backbone on "
    "augmented images every epoch.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="bfloat16: Keras' mixed_bfloat16 (the last layer and the loss in float32); auto: "
    "float32 (bfloat16 was not measured faster on any CPU yet: README). The saved model "
    "computes in float32.",
)
@click.option(
    "--cache",
    type=click.Choice(CACHE_MODES),
    default="auto",
    show_default=True,
    help="Decoded images: in memory, in a file in the run folder, or memory when they fit.",
)
@workers_option
@click.option("--distribute", is_flag=True, help="MirroredStrategy over all visible GPUs.")
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    default="",
    help="Multi-process data parallelism (JAX backend): address of process 0.",
)
@click.option(
    "--num-processes",
    type=setting_type("num_processes", click.INT),
    default=1,
    show_default=True,
)
@click.option(
    "--process-id", type=setting_type("process_id", click.INT), default=0, show_default=True
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder for the model and its evidence.",
)
@quiet_option
@tensorflow_command
@library_errors
def train_command(
    data: Path, out: Path, quiet: bool, ops_spec: Pipeline | None, **options: Any
) -> None:
    """Train a classifier on DATA (train/, optional val/ and test/, as written by `cvprep split`).

    With no other flag, --model cnn and --model mobilenet --alpha 0.25 --weights FILE use
    defaults measured on real photos (README). Without val/, a stratified share of train/
    (--val-fraction) validates; test/ is scored once, at the end, on the raw images through
    the saved model (the same figure as `cvprep evaluate`). Backbones train frozen, then
    fine-tune. Re-running an interrupted command resumes it. The run folder gets model.keras
    (raw images in: the preprocessing is inside), labels.json, pipeline.json, config.json,
    history.csv, metrics.json, suspects.csv, figures/ and report.html.

    Python: cvprep.training.train(DATA, out=..., model=..., epochs=...)

    \b
    Examples:
      cvprep train prepped/ --model cnn --out runs/cnn
      cvprep train data/ --model mobilenet --alpha 0.25 --weights imagenet --out runs/mobilenet
    """
    from cvprep.training import train

    result = train(
        data,
        out=out,
        ops=ops_spec or "",
        verbose=0 if quiet else 2,
        log=(lambda _: None) if quiet else click.echo,
        **options,
    )
    if not quiet and result.metrics.get("rejected"):
        for path, error in result.metrics["rejected"].items():
            click.echo(f"  skipped {path}: {error}", err=True)


tta_option = click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: average each image's probabilities with its mirror's "
    "(twice the network's work; measured effect in the README).",
)


@cli.command("evaluate")
@click.argument("run", type=existing_dir)
@click.argument("data", type=existing_dir)
@tta_option
@json_option
@tensorflow_command
@library_errors
def evaluate_command(run: Path, data: Path, tta: bool, as_json: bool) -> None:
    """Evaluate RUN's model on raw images: DATA/test (or DATA/val, or DATA's class folders).

    Writes RUN/evaluation/metrics.json and confusion_matrix.png.

    Python: cvprep.training.evaluate(RUN, DATA, tta=False)

    \b
    Examples:
      cvprep evaluate runs/cnn data/
      cvprep evaluate runs/cnn data/ --tta --json
    """
    from cvprep.training import evaluate

    metrics = evaluate(run, data, tta=tta).metrics
    if as_json:
        emit_json(metrics)
    else:
        click.echo(
            f"accuracy {metrics['accuracy']:.3f}, balanced accuracy "
            f"{metrics['balanced_accuracy']:.3f} on {metrics['count']} images "
            f"({metrics['evaluated_on']})"
        )
        for cls, values in metrics["per_class"].items():
            click.echo(
                f"  {cls:>12}: precision {values['precision']:.3f}  "
                f"recall {values['recall']:.3f}  F1 {values['f1-score']:.3f}"
            )
        for path, error in metrics["rejected"].items():
            click.echo(f"  rejected {path}: {error}", err=True)
        if metrics["unknown_classes"]:
            unknown = ", ".join(f"{c}/ ({n})" for c, n in metrics["unknown_classes"].items())
            click.echo(
                f"warning: class folders the model does not know were not scored: {unknown}; "
                f"the model's classes are {', '.join(metrics['classes'])}",
                err=True,
            )
    sys.exit(EXIT_REJECTED if metrics["rejected"] else 0)


@cli.command("predict")
@click.argument("run", type=existing_dir)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@tta_option
@click.option(
    "--explain",
    "explain_dir",
    type=new_dir,
    help="Write one heatmap overlay per image into this folder (where the model found the "
    "evidence for its prediction; named after the image and a hash of its path).",
)
@json_option
@tensorflow_command
@library_errors
def predict_command(
    run: Path, images: tuple[Path, ...], tta: bool, explain_dir: Path | None, as_json: bool
) -> None:
    """Predict the class of raw images (files or folders) with RUN's model.

    Bad files are reported, not fatal (exit status 1 if any).

    Python: cvprep.training.predict(RUN, [paths or arrays], tta=False, explain=None)

    \b
    Examples:
      cvprep predict runs/cnn photo1.jpg more_photos/ --json
      cvprep predict runs/cnn photo1.jpg --tta --explain heatmaps/
    """
    from cvprep.training import predict
    from cvprep.training.evaluate import predictions_as_dicts

    predictions = predict(run, images, tta=tta, explain=explain_dir)
    if as_json:
        emit_json(predictions_as_dicts(predictions))
    else:
        for p in predictions:
            if p.error:
                click.echo(f"{p.path}: rejected {p.error}", err=True)
            else:
                overlay = f" -> {p.overlay}" if p.overlay else ""
                click.echo(f"{p.path}: {p.label} ({p.probability:.3f}){overlay}")
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
@tensorflow_command
@library_errors
def export_command(run: Path, fmt: str, quantize: bool, output: Path | None) -> None:
    """Export RUN's model (raw RGB images in, probabilities out) for serving.

    The SavedModel serves without cvprep installed; the TFLite model uses built-in ops only.
    The export is checked against model.keras on the run's own images and generated ones
    before it is written: a failed check or an interrupted export keeps the previous one.
    A SavedModel replaces its whole folder: -o must be new, empty or an earlier export.

    Python: cvprep.training.export(RUN, "tflite", quantize=True)

    \b
    Example:
      cvprep export runs/cnn --format tflite --quantize
    """
    from cvprep.training import export

    if quantize and fmt != "tflite":
        raise click.BadParameter("--quantize applies to --format tflite", param_hint="--quantize")
    result = export(run, fmt, quantize=quantize, output=output)
    click.echo(
        f"exported {fmt} to {result.path} (checked on {result.checked} images, largest "
        f"difference {result.max_difference:.2g})"
    )


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
@click.option("--epochs", type=click.IntRange(1), help="[default: the demo's own]")
@tensorflow_command
@library_errors
def demo_command(out: Path, source: Path | None, epochs: int | None) -> None:
    """Run the whole path on the bundled two-class sample set, in a minute or two.

    verify → split → preprocess → train (cvprep's CNN) → evaluate → predict, through the
    Python API, printing the equivalent commands.

    \b
    Example:
      cvprep demo --out cvprep-demo
    """
    from cvprep.demo import run_demo

    run_demo(out, source, epochs, echo=click.echo)
