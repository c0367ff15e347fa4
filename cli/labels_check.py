"""The options of ``cvprep inspect --labels-check``, written once: they reach the command as
one ``labels_check`` argument (a :class:`cvprep.dataset.LabelCheck`, or ``None``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from cvprep.cli.common import load_tensorflow
from cvprep.dataset.label_check import LabelCheck, LabelCheckResult, describe_result
from cvprep.training.config import BACKBONES

DEFAULTS = LabelCheck()
OPTIONS = [
    click.option(
        "--labels-check",
        is_flag=True,
        help="Also find wrong labels (label_issue): class probabilities out of K folds, then "
        "confident learning. Two or more classes; a split folder is checked as one set.",
    ),
    click.option(
        "--weights",
        "label_weights",
        metavar="FILE|imagenet",
        help="Use a frozen backbone's features (far better than the default: a small CNN "
        "trained per fold). imagenet: Keras downloads them once; or a local weights file.",
    ),
    click.option(
        "--backbone",
        "label_backbone",
        type=click.Choice(list(BACKBONES)),
        help=f"The backbone of --weights [default: {DEFAULTS.backbone}].",
    ),
    click.option(
        "--alpha",
        "label_alpha",
        type=float,
        help=f"Width of mobilenet/mobilenet_v2 [default: {DEFAULTS.alpha:g}].",
    ),
    click.option(
        "--folds",
        "label_folds",
        type=click.IntRange(2, 50),
        help=f"K, the number of folds [default: {DEFAULTS.folds}].",
    ),
]


def labels_check_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options; call ``function`` with ``labels_check=LabelCheck(...)`` or ``None``."""

    @functools.wraps(function)
    def wrapper(
        *args: Any,
        labels_check: bool,
        label_weights: str | None,
        label_backbone: str | None,
        label_alpha: float | None,
        label_folds: int | None,
        **kwargs: Any,
    ) -> Any:
        given = {
            "weights": label_weights,
            "backbone": label_backbone,
            "alpha": label_alpha,
            "folds": label_folds,
        }
        settings = {name: value for name, value in given.items() if value is not None}
        if settings and not labels_check:
            names = ", ".join(f"--{name}" for name in settings)
            raise click.UsageError(f"{names} only apply with --labels-check")
        if labels_check:
            load_tensorflow(verbose=False)  # no start-up log lines from TensorFlow
        check = LabelCheck(**settings) if labels_check else None
        return function(*args, labels_check=check, **kwargs)

    wrapper.__click_params__ = list(getattr(function, "__click_params__", []))  # type: ignore[attr-defined]
    for option in reversed(OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def echo_labels_check(result: LabelCheckResult | None) -> None:
    """One line on what the check did (nothing when it did not run)."""
    if result is not None:
        click.echo(describe_result(result))
