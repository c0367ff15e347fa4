"""Dataset commands: verify, inspect, preprocess, split, augment — parse, call cvprep.dataset,
render. Each reads a source (IN): class folders, split folders, a flat folder labelled by
file names, a label table, an archive of any of these, or an .npz of arrays."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cvprep import dataset
from cvprep.cli.app import cli
from cvprep.cli.common import (
    EXIT_REJECTED,
    BarProgress,
    Checked,
    echo_table,
    emit_json,
    json_option,
    library_errors,
    new_dir,
    ops_option,
    quiet_option,
    seed_option,
    workers_option,
)
from cvprep.cli.labels_check import echo_labels_check, labels_check_options
from cvprep.dataset.labels import LabelSpec, parse_labels
from cvprep.dataset.results import FileResult, Summary
from cvprep.io import DEFAULT_MAX_PIXELS
from cvprep.pipeline import Pipeline

existing_source = click.Path(exists=True, path_type=Path)


def source_options(function: Any) -> Any:
    """IN's ``--labels`` and ``--images`` (parsed by cvprep.dataset.labels, as in Python)."""
    function = click.option(
        "--images",
        metavar="DIR",
        help="With a label table: the folder of the images, inside IN "
        "[default: the table's folder].",
    )(function)
    return click.option(
        "--labels",
        metavar="SPEC",
        type=Checked(click.STRING, parse_labels, "SPEC"),
        help="Where classes come from: folders (default); name (cat.0.jpg, dog_12.png: the "
        "name up to the last separator before a number); 'name:REGEX' (its first group); or "
        "a label table, TABLE[:FILE_COLUMN,LABEL_COLUMN] (CSV/TSV).",
    )(function)


def source_examples(command: str, output: str = "") -> str:
    """The help's list of sources, one example each (Click keeps ``\b`` blocks as typed)."""
    rest = f" {output}" if output else ""
    examples = [
        ("class folders (or train/ val/ test/ of class folders)", f"photos/{rest}"),
        ("flat, class in the name (cat.0.jpg, dog_12.png)", f"train/{rest} --labels name"),
        ("the class is a regex's first group", rf"pets/{rest} --labels 'name:^(.+)_\d+'"),
        ("a label table, CSV or TSV (id,label)", f"train/{rest} --labels labels.csv"),
        ("a .zip, .tar or .tar.gz, read in place", f"train.zip{rest} --labels name"),
        ("a table inside an archive", f"dogs.zip{rest} --labels labels.csv --images train"),
        ("keras.datasets arrays (x_train, y_train, ...)", f"mnist.npz{rest}"),
    ]
    lines = [f"  {what}:\n    cvprep {command} {example}" for what, example in examples]
    return "\b\nSources (IN), one example each:\n" + "\n".join(lines)


def max_pixels_option(function: Any) -> Any:
    return click.option(
        "--max-pixels",
        type=click.IntRange(1),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Reject images with more pixels (decompression-bomb guard).",
    )(function)


def engine_options(function: Any) -> Any:
    function = click.option(
        "--ray-address",
        metavar="ADDRESS",
        help="Connect the Ray engine to an existing cluster [default: start a local one].",
    )(function)
    return click.option(
        "--engine",
        type=click.Choice(dataset.ENGINES),
        default="local",
        show_default=True,
        callback=_check_engine,
        help="local process pool, or Ray (pip install 'cvprep[ray]').",
    )(function)


def _check_engine(ctx: click.Context, param: click.Parameter, engine: str) -> str:
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise click.BadParameter("needs Ray: pip install 'cvprep[ray]'", ctx, param) from None
    return engine


def report_rejects(rejected: list[FileResult], quiet: bool) -> None:
    if rejected and not quiet:
        click.echo(f"\nrejected {len(rejected)} file(s):", err=True)
        for result in sorted(rejected, key=lambda r: r.path):
            click.echo(f"  {result.path}: [{result.kind}] {result.reason}", err=True)


def report_removed(removed: list[str]) -> None:
    if removed:
        click.echo(f"removed {len(removed)} output(s) whose input is gone:")
        for path in removed:
            click.echo(f"  {path}")


def class_table(summary: Summary, columns: tuple[str, ...]) -> None:
    rows = [
        [cls, sum(counts.values()), *(counts[c] for c in columns)]
        for cls, counts in sorted(summary.per_class.items())
    ]
    total = summary.total
    rows.append(["total", sum(total.values()), *(total[c] for c in columns)])
    echo_table(rows, ["class", "files", *columns])


def finish(ok: bool) -> None:
    sys.exit(0 if ok else EXIT_REJECTED)


@cli.command("verify", epilog=source_examples("verify"))
@click.argument("source", metavar="IN", type=existing_source)
@source_options
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a CSV with every file's status and reason.",
)
@click.option(
    "--quarantine",
    type=new_dir,
    help="Move rejected files here (the only option that changes the input).",
)
@workers_option
@engine_options
@max_pixels_option
@quiet_option
@json_option
@library_errors
def verify_command(
    source: Path,
    labels: LabelSpec | None,
    images: str | None,
    report: Path | None,
    quarantine: Path | None,
    workers: int | None,
    engine: str,
    ray_address: str | None,
    max_pixels: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Decode every image of IN and list the ones that fail, with the reason.

    Reasons: empty, truncated, not_image, too_large, unreadable, symlink_loop, and what the
    source itself gets wrong: no_label, bad_label, unlabelled, missing_file, label_conflict,
    duplicate_row, name_collision, unsafe_path. Hidden and system files (.DS_Store,
    Thumbs.db) are ignored; symbolic links are followed. Exit status 1 when any file is
    rejected or IN holds no files.

    Python: cvprep.dataset.verify(IN, labels=..., report=..., quarantine=...)

    \b
    Example:
      cvprep verify photos/ --report rejects.csv --quarantine photos-rejected/
    """
    result = dataset.verify(
        source,
        labels=labels,
        images=images,
        report=report,
        quarantine=quarantine,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        max_pixels=max_pixels,
        progress=BarProgress(quiet or as_json),
    )
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        class_table(result.summary, ("ok", "rejected"))
        report_rejects(result.rejected, quiet)
        if result.quarantined:
            click.echo(
                f"moved {len(result.quarantined)} rejected file(s) to {quarantine}", err=True
            )
        for path, new_name in result.renamed.items():
            click.echo(f"  {path} -> {new_name} (that name was taken: nothing replaced)", err=True)
        for path, reason in result.not_moved.items():
            click.echo(f"  not moved {path}: {reason}", err=True)
    finish(result.ok)


@cli.command("preprocess", epilog=source_examples("preprocess", "prepped/ --ops grayscale"))
@click.argument("source", metavar="IN", type=existing_source)
@click.argument("output", metavar="OUT", type=new_dir)
@source_options
@ops_option()
@workers_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpg", "png", "webp"]),
    help="Output format (default: keep each file's own).",
)
@click.option("--quality", type=click.IntRange(1, 100), help="JPEG/WebP quality.")
@click.option(
    "--fast-decode",
    "reduce",
    type=click.Choice(["1", "2", "4", "8"]),
    default="1",
    help="Decode JPEGs at 1/N size: much faster for large photos, not bit-exact. "
    "Off (1) by default.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Reprocess everything, even into an OUT made with other settings.",
)
@engine_options
@max_pixels_option
@quiet_option
@json_option
@library_errors
def preprocess_command(
    source: Path,
    output: Path,
    labels: LabelSpec | None,
    images: str | None,
    pipeline: Pipeline,
    workers: int | None,
    engine: str,
    ray_address: str | None,
    fmt: str | None,
    quality: int | None,
    reduce: str,
    overwrite: bool,
    max_pixels: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Apply a pipeline to every image of IN, writing the same tree under OUT (for an
    archive, a flat folder or a table: OUT/[split/]<class>/<file name>).

    Runs in a process pool (or on Ray with --engine ray); writes are atomic, so an
    interrupted run leaves no broken file, and running the same command again finishes the
    job (finished files are skipped). OUT/cvprep.json records the settings before the first
    image: an OUT made with other settings is refused, finished or not (use --overwrite), and
    a second job on the same OUT is refused while the first runs. Rejected inputs are listed
    in OUT/rejected.csv.

    Python: cvprep.dataset.preprocess(IN, OUT, SPEC, fmt=..., workers=...)

    \b
    Example:
      cvprep preprocess data/ prepped/ --ops resize=150x150:fit=pad,equalize --format jpg
    """
    result = dataset.preprocess(
        source,
        output,
        pipeline,
        labels=labels,
        images=images,
        fmt=fmt,
        quality=quality,
        fast_decode=int(reduce),
        overwrite=overwrite,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        max_pixels=max_pixels,
        progress=BarProgress(quiet or as_json),
    )
    summary = result.summary
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        class_table(summary, ("ok", "skipped", "rejected"))
        rate = summary.total["ok"] / summary.seconds if summary.seconds else 0.0
        click.echo(
            f"{summary.total['ok']} written in {summary.seconds:.1f}s "
            f"({rate:.0f} images/s) to {output}"
        )
        report_removed(result.removed)
        report_rejects(result.rejected, quiet)
    finish(result.ok)


@cli.command("split", epilog=source_examples("split", "data/"))
@click.argument("source", metavar="IN", type=existing_source)
@click.argument("output", metavar="OUT", type=new_dir)
@source_options
@click.option(
    "--ratios",
    metavar="TRAIN,VAL[,TEST]",
    help="Shares summing to 1 [default: 0.8,0.1,0.1].",
)
@click.option(
    "--fixed",
    metavar="VAL[,TEST]",
    help="Fixed images per class for val (and test), the rest to train, e.g. 100,100.",
)
@click.option(
    "--kfold",
    type=click.IntRange(2, 100),
    help="K stratified folds: OUT/fold_i/train and OUT/fold_i/val.",
)
@seed_option
@click.option(
    "--mode",
    type=click.Choice(["copy", "hardlink", "symlink"]),
    default="copy",
    show_default=True,
    help="How files get into OUT.",
)
@click.option(
    "--group",
    "group_regex",
    metavar="REGEX",
    help="Files whose names give the same match (group 1 if any) stay together, "
    r"e.g. '^(\w+)_\d+' for bursts.",
)
@click.option(
    "--near-threshold",
    type=click.IntRange(0, 11),
    default=6,
    show_default=True,
    help="Max perceptual-hash distance (bits of 64) for near duplicates.",
)
@click.option("--no-near", is_flag=True, help="Only exact duplicates are kept together.")
@click.option(
    "--min-per-split",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="At least this many images of each class in each split.",
)
@click.option(
    "--exclude",
    metavar="CSV[:KINDS]",
    help="Leave out the files listed in a CSV (e.g. `cvprep inspect` findings), "
    "optionally only some issue kinds: findings.csv:blurry,exact_duplicate.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Re-split an OUT made with other settings (files move between splits).",
)
@click.option("--dry-run", is_flag=True, help="Print the table; write nothing.")
@workers_option
@quiet_option
@json_option
@library_errors
def split_command(
    source: Path,
    output: Path,
    labels: LabelSpec | None,
    images: str | None,
    ratios: str | None,
    fixed: str | None,
    kfold: int | None,
    seed: int,
    mode: str,
    group_regex: str | None,
    near_threshold: int,
    no_near: bool,
    min_per_split: int,
    exclude: str | None,
    overwrite: bool,
    dry_run: bool,
    workers: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Split the classes of IN into OUT/train, OUT/val and OUT/test (or K folds), the
    layout `cvprep train OUT` reads. A val/ or test/ that IN already has is kept as it is;
    the rest is split among the other splits, the ratios rescaled.

    Stratified per class, reproducible for a seed, and stable: images listed in an existing
    OUT/manifest.csv keep their split when new images are added. Exact duplicates and near
    duplicates (resized or re-encoded copies) always land in the same split or fold.
    OUT/manifest.csv records every file's class, split, hashes and the reason for the
    decision. The same picture filed under two classes is reported, never silently resolved.

    Running it again brings OUT in line with IN: changed images are copied again, copies of
    deleted or excluded ones are removed (each listed), and an interrupted run is finished,
    never leaving a file in two splits. Other settings (seed, ratios, ...) need --overwrite.

    Python: cvprep.dataset.split(IN, OUT, ratios=..., fixed=..., kfold=..., seed=...)

    \b
    Examples:
      cvprep split photos/ data/ --ratios 0.8,0.1,0.1 --seed 1 --mode hardlink
      cvprep split photos/ data/ --fixed 100,100
      cvprep split photos/ folds/ --kfold 5 --mode hardlink
      cvprep split photos/ data/ --exclude findings.csv:exact_duplicate,label_conflict
    """
    result = dataset.split(
        source,
        output,
        labels=labels,
        images=images,
        ratios=ratios,
        fixed=fixed,
        kfold=kfold,
        seed=seed,
        mode=mode,
        group=group_regex,
        near_threshold=None if no_near else near_threshold,
        min_per_split=min_per_split,
        exclude=exclude,
        overwrite=overwrite,
        dry_run=dry_run,
        workers=workers,
        progress=BarProgress(quiet or as_json),
    )
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        names = [*result.names, "rejected", "excluded"]
        rows = [[cls, sum(r.values()), *(r[n] for n in names)] for cls, r in result.rows.items()]
        echo_table(rows, ["class", "files", *names])
        if result.grouped:
            click.echo(
                f"{result.grouped} duplicate/grouped file(s) kept with their group "
                "(see manifest.csv)"
            )
        for path, reason in result.rejected.items():
            click.echo(f"  rejected {path}: {reason}", err=True)
        left_out = result.to_dict()["excluded"]
        if left_out:
            click.echo(f"{len(left_out)} file(s) left out (reasons in manifest.csv)")
        for path in result.replaced:
            click.echo(f"  replaced {path}: it was not a copy of its input as it is now")
        for path, reason in result.removed.items():
            click.echo(f"  removed {path}: {reason}")
        click.echo(
            "dry run: nothing written"
            if dry_run
            else f"wrote {result.written} file(s); manifest: {output / 'manifest.csv'}"
        )
    if result.conflicts and not quiet:
        click.echo(
            f"warning: {len(result.conflicts)} picture(s) are filed under more than one class "
            "(kept, in one split): "
            + "; ".join(" = ".join(g) for g in result.conflicts[:5])
            + (" ..." if len(result.conflicts) > 5 else "")
            + "\n  `cvprep inspect` lists them as label_conflict; fix the labels or use "
            "--exclude findings.csv:label_conflict",
            err=True,
        )
    finish(result.ok)


@cli.command("augment", epilog=source_examples("augment", "augmented/"))
@click.argument("source", metavar="IN", type=existing_source)
@click.argument("output", metavar="OUT", type=new_dir)
@source_options
@click.option(
    "--preset",
    "preset_name",
    default="medium",
    show_default=True,
    help="light, medium, heavy (the same transforms as `train --augment`), or an "
    "albumentations pipeline saved as YAML/JSON.",
)
@click.option(
    "--per-image",
    type=click.IntRange(0, 1000),
    default=1,
    show_default=True,
    help="Augmented copies of every training image.",
)
@click.option(
    "--balance",
    is_flag=True,
    help="Oversample minority classes (extra augmented copies) up to the largest.",
)
@seed_option
@click.option("--quality", type=click.IntRange(1, 100), help="JPEG/WebP quality.")
@click.option("--overwrite", is_flag=True, help="Write into an OUT made with other settings.")
@workers_option
@quiet_option
@json_option
@library_errors
def augment_command(
    source: Path,
    output: Path,
    labels: LabelSpec | None,
    images: str | None,
    preset_name: str,
    per_image: int,
    balance: bool,
    seed: int,
    quality: int | None,
    overwrite: bool,
    workers: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write OUT with IN's images plus augmented copies of the training images.

    IN is a split folder (train/ augmented; val/ and test/ passed through unchanged), a
    folder of class subfolders (all augmented), or any other source below. Deterministic for
    a seed, whatever the number of workers or the kind of source.

    Python: cvprep.dataset.augment(IN, OUT, preset=..., per_image=..., balance=...)

    \b
    Example:
      cvprep augment data/ data-aug/ --preset medium --balance --seed 1
    """
    try:
        from cvprep.dataset.augment import load_transform

        load_transform(preset_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--preset") from None
    result = dataset.augment(
        source,
        output,
        labels=labels,
        images=images,
        preset=preset_name,
        per_image=per_image,
        balance=balance,
        seed=seed,
        quality=quality,
        overwrite=overwrite,
        workers=workers,
        progress=BarProgress(quiet or as_json),
    )
    if as_json:
        emit_json(result.to_dict())
    elif not quiet:
        echo_table(
            [
                [cls, c["originals"], c["augmented"], c["originals"] + c["augmented"]]
                for cls, c in result.per_class.items()
            ],
            ["class", "originals", "augmented", "total"],
        )
        if result.passed_through:
            click.echo(f"passed through unchanged: {', '.join(result.passed_through)}")
        report_removed(result.removed)
        report_rejects(result.rejected, quiet)
    finish(result.ok)


def _parse_thresholds(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, float]:
    from cvprep.dataset.inspect import RULES

    parsed = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in RULES:
            raise click.BadParameter(
                f"{name!r} is not an issue with a threshold; known: {', '.join(RULES)}", ctx, param
            )
        try:
            parsed[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"expected ISSUE=NUMBER, got {value!r}", ctx, param) from None
    return parsed


@cli.command("inspect", epilog=source_examples("inspect"))
@click.argument("source", metavar="IN", type=existing_source)
@source_options
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the findings as CSV: path,class,issue,score,detail.",
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a page with thumbnails of the worst cases of each issue (works offline).",
)
@click.option(
    "--threshold",
    "thresholds",
    metavar="ISSUE=VALUE",
    multiple=True,
    callback=_parse_thresholds,
    help="Override a cutoff, e.g. --threshold blurry=0.09 --threshold near_duplicate=8 "
    "(repeatable; the README says what each number means).",
)
@labels_check_options
@workers_option
@engine_options
@max_pixels_option
@quiet_option
@json_option
@library_errors
def inspect_command(
    source: Path,
    labels: LabelSpec | None,
    images: str | None,
    report: Path | None,
    html: Path | None,
    thresholds: dict[str, float],
    labels_check: dataset.LabelCheck | None,
    workers: int | None,
    engine: str,
    ray_address: str | None,
    max_pixels: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Audit the images under IN before training: duplicates, label conflicts, bad photos.

    Issues: exact_duplicate, near_duplicate, label_conflict (the same or a near-same picture
    in two classes: both files listed), blurry, dark, bright, low_information, odd_aspect_ratio,
    odd_size, grayscale, and verify's rejects (unreadable, truncated, ...). Quality issues are
    judged against the rest of the dataset, with absolute limits. Exit status 0 when nothing
    is found, 1 when something is. IN is never modified.

    --labels-check adds label_issue: files whose label the class probabilities of a model
    that never saw them contradict (K folds, confident learning); detail names the class
    the picture looks like. With --weights, a frozen MobileNet α 0.25's features (about a
    minute for 2,000 photos on 2 cores; README: precision and recall measured with 5 % of
    the labels flipped); without, a small CNN trained per fold (slower, far weaker).

    Python: cvprep.dataset.inspect(IN, report=..., html=..., thresholds={...},
    labels_check=LabelCheck(weights=...))

    \b
    Examples:
      cvprep inspect photos/ --report findings.csv --html report.html
      cvprep split photos/ data/ --exclude findings.csv:exact_duplicate,near_duplicate
      cvprep inspect photos/ --labels-check --weights imagenet --report findings.csv
      cvprep split photos/ data/ --exclude findings.csv:label_issue
    """
    result = dataset.inspect(
        source,
        labels=labels,
        images=images,
        report=report,
        html=html,
        thresholds=thresholds,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        max_pixels=max_pixels,
        labels_check=labels_check or False,
        progress=BarProgress(quiet or as_json),
    )
    if as_json:
        emit_json(result.rows())
    elif not quiet:
        if result.findings:
            echo_table(
                [[issue, count] for issue, count in result.counts.items()], ["issue", "files"]
            )
        echo_labels_check(result.label_check)
        click.echo(
            f"{result.files} files inspected, {len(result.findings)} finding(s)"
            + (f"; CSV: {report}" if report else "")
            + (f"; report: {html}" if html else "")
        )
    finish(result.ok)
