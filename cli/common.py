"""Options and helpers shared by the cvprep commands."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cvprep.pipeline import Pipeline, SpecError

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def parse_spec(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> Pipeline | None:
    """Click callback: spec text, or a path to a pipeline JSON file, to a Pipeline."""
    if value is None:
        return None
    try:
        if value.endswith(".json") and Path(value).is_file():
            return Pipeline.from_json(Path(value).read_text())
        return Pipeline.parse(value)
    except (SpecError, ValueError) as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def ops_option(required: bool = True) -> Callable[[Any], Any]:
    return click.option(
        "--ops",
        "pipeline",
        metavar="SPEC",
        required=required,
        callback=parse_spec,
        help="Pipeline spec, e.g. 'resize=224x224,equalize' "
        "(see `cvprep ops`), or a pipeline .json file.",
    )


def quiet_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar or tables.")(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (for scripts)."
    )(function)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[list[Any]], headers: list[str]) -> None:
    """Print a plain aligned table."""
    table = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        click.echo(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            click.echo("  ".join("-" * w for w in widths))


def progress(iterable: Any, *, length: int, label: str, quiet: bool) -> Any:
    """A progress bar with rate and ETA on stderr, or the bare iterable when quiet."""
    if quiet:
        return _NullBar(iterable)
    start, done = time.perf_counter(), [0]

    def rate(item: Any) -> str | None:
        if item is None:
            return None
        done[0] += 1
        elapsed = time.perf_counter() - start
        return f"{done[0] / elapsed:.0f} files/s" if elapsed > 0 else None

    return click.progressbar(
        iterable,
        length=length,
        label=label,
        file=sys.stderr,
        show_eta=True,
        show_pos=True,
        item_show_func=rate,
    )


class _NullBar:
    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __enter__(self) -> Any:
        return self.iterable

    def __exit__(self, *exc: object) -> None:
        return None
