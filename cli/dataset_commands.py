"""Dataset commands: verify, preprocess, split, augment."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from cvprep import batch
from cvprep.cli.app import cli
from cvprep.cli.common import (
    EXIT_REJECTED,
    echo_table,
    emit_json,
    json_option,
    ops_option,
    progress,
    quiet_option,
)
from cvprep.files import check_separate
from cvprep.io import DEFAULT_MAX_PIXELS
from cvprep.pipeline import Pipeline

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
new_dir = click.Path(file_okay=False, path_type=Path)


def workers_option(function: Any) -> Any:
    return click.option(
        "-w",
        "--workers",
        type=click.IntRange(0, 512),
        default=os.cpu_count() or 1,
        show_default="all cores",
        help="Worker processes (0 = run in this process).",
    )(function)


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
        type=click.Choice(batch.ENGINES),
        default="local",
        show_default=True,
        help="local process pool, or Ray (pip install 'cvprep[ray]').",
    )(function)


def check_engine(engine: str) -> None:
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise click.BadParameter(
                "needs Ray: pip install 'cvprep[ray]'", param_hint="--engine"
            ) from None


def separate_dirs(source: Path, output: Path) -> None:
    try:
        check_separate(source, output)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="OUT") from None


def collect(results: Any, total: int, label: str, quiet: bool) -> batch.Summary:
    summary = batch.Summary()
    start = time.perf_counter()
    with progress(results, length=total, label=label, quiet=quiet) as bar:
        for result in bar:
            summary.add(result)
    summary.seconds = time.perf_counter() - start
    return summary


def report_rejects(summary: batch.Summary, quiet: bool) -> None:
    if summary.rejected and not quiet:
        click.echo(f"\nrejected {len(summary.rejected)} file(s):", err=True)
        for result in sorted(summary.rejected, key=lambda r: r.path):
            click.echo(f"  {result.path}: [{result.kind}] {result.reason}", err=True)


def class_table(summary: batch.Summary, columns: tuple[str, ...]) -> None:
    rows = [
        [cls, sum(counts.values()), *(counts[c] for c in columns)]
        for cls, counts in sorted(summary.per_class.items())
    ]
    total = summary.total
    rows.append(["total", sum(total.values()), *(total[c] for c in columns)])
    echo_table(rows, ["class", "files", *columns])


@cli.command("verify")
@click.argument("directory", type=existing_dir)
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
def verify_command(
    directory: Path,
    report: Path | None,
    quarantine: Path | None,
    workers: int,
    engine: str,
    ray_address: str | None,
    max_pixels: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Decode every image under DIRECTORY and list the ones that fail, with the reason.

    Reasons: empty, truncated, not_image, too_large, unreadable. Hidden and system files
    (.DS_Store, Thumbs.db) are ignored. Exit status 1 when any file is rejected.

    \b
    Example:
      cvprep verify photos/ --report rejects.csv --quarantine photos-rejected/
    """
    if quarantine is not None:
        separate_dirs(directory, quarantine)
    check_engine(engine)
    files, results = batch.verify_tree(
        directory, workers=workers, max_pixels=max_pixels, engine=engine, ray_address=ray_address
    )
    all_results: list[batch.FileResult] = []

    def keep(stream: Any) -> Any:
        for result in stream:
            all_results.append(result)
            yield result

    summary = collect(keep(results), len(files), "verifying", quiet or as_json)
    if report is not None:
        batch.write_report(report, sorted(all_results, key=lambda r: r.path))
    moved = batch.quarantine(directory, quarantine, summary.rejected) if quarantine else []
    if as_json:
        emit_json({**summary.to_dict(), "quarantined": [str(p) for p in moved]})
    elif not quiet:
        class_table(summary, ("ok", "rejected"))
        report_rejects(summary, quiet)
        if moved:
            click.echo(f"moved {len(moved)} rejected file(s) to {quarantine}", err=True)
    sys.exit(EXIT_REJECTED if summary.rejected else 0)


@cli.command("preprocess")
@click.argument("source", metavar="IN", type=existing_dir)
@click.argument("output", metavar="OUT", type=new_dir)
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
def preprocess_command(
    source: Path,
    output: Path,
    pipeline: Pipeline,
    workers: int,
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
    """Apply a pipeline to every image under IN, writing the same tree under OUT.

    Runs in a process pool (or on Ray with --engine ray); writes are atomic, so an
    interrupted run leaves no broken file
    and running the same command again finishes the job (finished files are skipped).
    Rejected inputs are listed in OUT/rejected.csv; the spec is recorded in OUT/cvprep.json.

    \b
    Example:
      cvprep preprocess data/ prepped/ --ops resize=150x150:fit=pad,equalize --format jpg
    """
    separate_dirs(source, output)
    check_engine(engine)
    settings = {
        "spec": pipeline.to_text(),
        "format": fmt,
        "quality": quality,
        "fast_decode": int(reduce),
        "max_pixels": max_pixels,
    }
    if not overwrite:
        try:
            batch.check_run_record(output, settings)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="OUT") from None
    output.mkdir(parents=True, exist_ok=True)
    batch.remove_partial_writes(output)
    plan = batch.plan_preprocess(
        source,
        output,
        pipeline,
        fmt=fmt,
        quality=quality,
        reduce=int(reduce),
        max_pixels=max_pixels,
    )
    if overwrite:
        _remove_outputs(output, plan.tasks)
    results = batch.run_tasks(
        batch.preprocess_one, plan.tasks, workers, engine=engine, ray_address=ray_address
    )
    summary = collect(results, len(plan.tasks), "preprocessing", quiet or as_json)
    for collision in plan.collisions:
        summary.add(collision)
    batch.write_report(output / "rejected.csv", sorted(summary.rejected, key=lambda r: r.path))
    batch.write_run_record(output, "preprocess", settings, summary)
    if as_json:
        emit_json(summary.to_dict())
    elif not quiet:
        class_table(summary, ("ok", "skipped", "rejected"))
        rate = summary.total["ok"] / summary.seconds if summary.seconds else 0.0
        click.echo(
            f"{summary.total['ok']} written in {summary.seconds:.1f}s "
            f"({rate:.0f} images/s) to {output}"
        )
        report_rejects(summary, quiet)
    sys.exit(EXIT_REJECTED if summary.rejected else 0)


def _remove_outputs(output: Path, tasks: list[batch.PreprocessTask]) -> None:
    for task in tasks:
        (output / task.output_relative).unlink(missing_ok=True)


@cli.command("split")
@click.argument("source", metavar="IN", type=existing_dir)
@click.argument("output", metavar="OUT", type=new_dir)
@click.option(
    "--ratios",
    default="0.8,0.1,0.1",
    show_default=True,
    help="train,val[,test] shares summing to 1.",
)
@click.option("--seed", type=int, default=1337, show_default=True)
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
@click.option("--dry-run", is_flag=True, help="Print the table; write nothing.")
@workers_option
@quiet_option
@json_option
def split_command(
    source: Path,
    output: Path,
    ratios: str,
    seed: int,
    mode: str,
    group_regex: str | None,
    near_threshold: int,
    no_near: bool,
    min_per_split: int,
    dry_run: bool,
    workers: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Split class folders under IN into OUT/train, OUT/val and OUT/test.

    Stratified per class, reproducible for a seed, and stable: images listed in an existing
    OUT/manifest.csv keep their split when new images are added. Exact duplicates and near
    duplicates (resized or re-encoded copies) always land in the same split. OUT/manifest.csv
    records every file's class, split, hashes and the reason for the decision.

    \b
    Example:
      cvprep split photos/ data/ --ratios 0.8,0.1,0.1 --seed 1 --mode hardlink
    """
    from cvprep import split as splitting

    separate_dirs(source, output)
    try:
        shares = splitting.parse_ratios(ratios)
        if group_regex:
            re.compile(group_regex)
    except (ValueError, re.error) as exc:
        raise click.BadParameter(str(exc)) from None
    total, stream = splitting.scan_and_hash(source, workers=workers)
    items = []
    with progress(stream, length=total, label="hashing", quiet=quiet or as_json) as bar:
        items.extend(bar)
    items.sort(key=lambda item: item.path)  # the pool returns them in any order
    good = [item for item in items if not item.rejected]
    previous = splitting.read_manifest(output)
    reasons = splitting.group_items(
        good, near_threshold=None if no_near else near_threshold, group_regex=group_regex
    )
    try:
        splitting.assign_splits(
            good,
            shares,
            seed=seed,
            previous=previous,
            min_per_split=min_per_split,
            join_reasons=reasons,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-per-split") from None
    table = splitting.SplitTable.from_items(items, shares)
    written = 0
    if not dry_run:
        written = splitting.materialise(source, output, good, mode, previous)
        splitting.write_manifest(output, items)
        batch.write_run_record(
            output,
            "split",
            {
                "ratios": shares,
                "seed": seed,
                "mode": mode,
                "group": group_regex,
                "near_threshold": None if no_near else near_threshold,
            },
        )
    rejected = [item for item in items if item.rejected]
    if as_json:
        emit_json(
            {
                "per_class": table.rows,
                "written": written,
                "dry_run": dry_run,
                "rejected": {item.path: item.rejected for item in rejected},
                "grouped": len(reasons),
            }
        )
    elif not quiet:
        names = [*shares, "rejected"]
        rows = [
            [cls, sum(r.values()), *(r[n] for n in names)] for cls, r in sorted(table.rows.items())
        ]
        echo_table(rows, ["class", "files", *names])
        if reasons:
            click.echo(
                f"{len(reasons)} duplicate/grouped file(s) kept with their group (see manifest.csv)"
            )
        for item in rejected:
            click.echo(f"  rejected {item.path}: {item.rejected}", err=True)
        click.echo(
            "dry run: nothing written"
            if dry_run
            else f"wrote {written} file(s); manifest: {output / 'manifest.csv'}"
        )
    sys.exit(EXIT_REJECTED if rejected else 0)


@cli.command("augment")
@click.argument("source", metavar="IN", type=existing_dir)
@click.argument("output", metavar="OUT", type=new_dir)
@click.option(
    "--preset",
    "preset_name",
    default="medium",
    show_default=True,
    help="light, medium, heavy, or an albumentations pipeline saved as YAML/JSON.",
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
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--quality", type=click.IntRange(1, 100), help="JPEG/WebP quality.")
@workers_option
@quiet_option
@json_option
def augment_command(
    source: Path,
    output: Path,
    preset_name: str,
    per_image: int,
    balance: bool,
    seed: int,
    quality: int | None,
    workers: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Write OUT with IN's images plus augmented copies of the training images.

    IN is a split folder (train/ augmented; val/ and test/ passed through unchanged) or a
    folder of class subfolders (all augmented). Deterministic for a seed, whatever the
    number of workers.

    \b
    Example:
      cvprep augment data/ data-aug/ --preset medium --balance --seed 1
    """
    from albumentations import to_dict

    from cvprep import augment

    separate_dirs(source, output)
    try:
        transform = augment.load_transform(preset_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--preset") from None
    train, others = augment.training_root(source)
    train_out = output / train.relative_to(source)
    grouped = augment.files_by_class(train)
    if not grouped:
        raise click.BadParameter(f"no class folders with images under {train}", param_hint="IN")
    copies = augment.plan_copies(grouped, per_image=per_image, balance=balance, seed=seed)
    for other in others:
        augment.pass_through(other, output / other.name)
    augment.pass_through(train, train_out)
    serialised = json.dumps(to_dict(transform))
    tasks = [
        augment.AugmentTask(str(train), str(train_out), name, numbers, serialised, seed, quality)
        for name, numbers in sorted(copies.items())
    ]
    summary = collect(
        batch.run_in_pool(augment.augment_one, tasks, workers),
        len(tasks),
        "augmenting",
        quiet or as_json,
    )
    counts = {
        cls: {"originals": len(files), "augmented": sum(len(copies[f]) for f in files)}
        for cls, files in grouped.items()
    }
    batch.write_run_record(
        output,
        "augment",
        {
            "preset": preset_name,
            "per_image": per_image,
            "balance": balance,
            "seed": seed,
            "transform": json.loads(serialised),
        },
        summary,
    )
    if as_json:
        emit_json(
            {
                "per_class": counts,
                "passed_through": [p.name for p in others],
                "rejected": [r.path for r in summary.rejected],
            }
        )
    elif not quiet:
        echo_table(
            [
                [cls, c["originals"], c["augmented"], c["originals"] + c["augmented"]]
                for cls, c in sorted(counts.items())
            ],
            ["class", "originals", "augmented", "total"],
        )
        if others:
            click.echo(f"passed through unchanged: {', '.join(p.name for p in others)}")
        report_rejects(summary, quiet)
    sys.exit(EXIT_REJECTED if summary.rejected else 0)
