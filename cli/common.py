"""Options and helpers shared by the cvprep commands: parse → call → render."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from cvprep import params
from cvprep.dataset import engines
from cvprep.errors import CvprepError, FileSystemError, ParameterError
from cvprep.json_text import dumps
from cvprep.pipeline import Pipeline, SpecError

EXIT_REJECTED = 1

existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
new_dir = click.Path(file_okay=False, path_type=Path)


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
    """Valid JSON on stdout: NaN and infinities are ``null``."""
    click.echo(dumps(data))


def library_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn cvprep's errors into Click's: a bad argument is a usage error (exit 2), anything
    else cvprep refuses (empty folder, busy output, bad file, a file-system error such as a
    read-only or full disk) exits 1 with one line. Other exceptions are bugs and keep their
    traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ParameterError as exc:  # e.g. bad ratios, an OUT made with other settings
            raise click.UsageError(str(exc)) from None
        except CvprepError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # the jobs convert their own; this covers the commands' writes
            raise click.ClickException(str(FileSystemError.from_os_error(exc))) from None

    return wrapper


class Checked(click.ParamType):
    """A Click type that converts text with ``base`` and then checks the value with one of
    :mod:`cvprep.params`' functions: the CLI accepts and refuses exactly what the Python API
    does, with the same message (as a usage error, exit 2)."""

    def __init__(
        self, base: click.ParamType, check: Callable[[Any], Any], metavar: str = ""
    ) -> None:
        self.base, self.check, self.metavar = base, check, metavar
        self.name = base.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = self.base.convert(value, param, ctx)
        try:
            return self.check(value)
        except ParameterError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        return self.metavar or None


def checked_int(name: str, *, minimum: int | None = None, maximum: int | None = None) -> Checked:
    return Checked(click.INT, lambda v: params.check_int(name, v, minimum=minimum, maximum=maximum))


def checked_float(name: str, **bounds: Any) -> Checked:
    return Checked(click.FLOAT, lambda v: params.check_number(name, v, **bounds))


def seed_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--seed",
        type=Checked(click.INT, params.check_seed),
        default=params.DEFAULT_SEED,
        show_default=True,
        help=f"Random seed, 0 to {params.MAX_SEED}.",
    )(function)


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


class BarProgress:
    """A progress bar with rate and ETA on stderr (cvprep.dataset's Progress protocol)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def start(self, label: str, total: int) -> None:
        if self.quiet:
            return
        self.started, self.done = time.perf_counter(), 0
        self.bar = click.progressbar(
            length=total,
            label=label,
            file=sys.stderr,
            show_eta=True,
            show_pos=True,
            item_show_func=lambda rate: rate,
        )
        self.bar.__enter__()

    def advance(self, count: int = 1) -> None:
        if self.bar is None:
            return
        self.done += count
        elapsed = time.perf_counter() - self.started
        self.bar.update(count, f"{self.done / elapsed:.0f} files/s" if elapsed > 0 else None)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


# --------------------------------------------------------------------------- quiet TensorFlow
@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: TensorFlow's shared libraries print their start-up
    lines (oneDNN, CUDA) from C++ initialisers, before any log level can be applied."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tensorflow(verbose: bool) -> None:
    """Import TensorFlow and Keras once, silently unless ``verbose``."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ messages after start-up, errors included
    with _stderr_silenced():
        import keras  # noqa: F401  (imports TensorFlow, the default backend)
        import tensorflow  # noqa: F401
    # Python-side messages: absl's ("WARNING:absl:...") and TensorFlow's (retracing warnings).
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow)\b.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(keras|tensorflow)\b.*")


def workers_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-w",
        "--workers",
        type=checked_int("workers", minimum=0, maximum=engines.MAX_WORKERS),
        default=None,
        show_default="all cores",
        help="Parallel workers for the per-image work (0 = all in this process).",
    )(function)
