"""Checks of scalar parameters: one place for the Python API and the CLI alike.

Every public function of cvprep checks its numbers, counts and choices with these, and the
CLI's option types call the same functions (``cvprep.cli.common.checked``), so a value is
accepted or refused, with the same message, whichever way it arrives. A refusal is a
:class:`~cvprep.errors.ParameterError` (a ``ValueError``) naming the parameter and the value
received, in Keras' words: "`seed` should be an integer in [0, 4294967295]. Received: seed=-1".

Numbers must be finite (NaN and infinities are refused everywhere: a NaN compares false
with every bound, so range checks alone let it through), of the right type (``True`` is not a
number; ``"2"`` is not an integer: the CLI converts text before it checks), and in range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

from cvprep.errors import ParameterError

DEFAULT_SEED = 1337
"""The seed every command and function uses unless told otherwise."""
MAX_SEED = 2**32 - 1  # NumPy's and Keras' seeding accept 32-bit unsigned seeds

__all__ = [
    "DEFAULT_SEED",
    "MAX_SEED",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_optional_int",
    "check_seed",
    "fail",
]


def fail(name: str, expectation: str, value: object) -> ParameterError:
    """The error for ``name``: "`name` should be EXPECTATION. Received: name=VALUE"."""
    return ParameterError(f"`{name}` should be {expectation}. Received: {name}={value!r}")


def _bounds_text(
    minimum: float | None, maximum: float | None, min_open: bool, max_open: bool
) -> str:
    low, high = _number_text(minimum), _number_text(maximum)
    if low is not None and high is not None:
        return f" in {'(' if min_open else '['}{low}, {high}{')' if max_open else ']'}"
    if low is not None:
        return f" {'>' if min_open else '>='} {low}"
    if high is not None:
        return f" {'<' if max_open else '<='} {high}"
    return ""


def _number_text(value: float | None) -> str | None:
    """Integers in full (a seed's 4294967295), other numbers in their shortest form."""
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _in_bounds(
    value: float,
    minimum: float | None,
    maximum: float | None,
    min_open: bool,
    max_open: bool,
) -> bool:
    if minimum is not None and (value <= minimum if min_open else value < minimum):
        return False
    return not (maximum is not None and (value >= maximum if max_open else value > maximum))


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """A finite real number within the bounds (``*_open``: the bound itself is excluded).

    >>> check_number("learning_rate", 1e-3, minimum=0, min_open=True)
    0.001
    >>> check_number("learning_rate", float("nan"), minimum=0, min_open=True)
    Traceback (most recent call last):
    cvprep.errors.ParameterError: `learning_rate` should be a finite number > 0. Received: ...=nan
    """
    bounds = _bounds_text(minimum, maximum, min_open, max_open)
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not _in_bounds(float(value), minimum, maximum, min_open, max_open)
    ):
        raise fail(name, f"a finite number{bounds}", value)
    return float(value)


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer (Python or NumPy, not ``bool``, not a float) within the bounds.

    >>> check_int("workers", 2, minimum=0)
    2
    >>> check_int("workers", 2.5, minimum=0)
    Traceback (most recent call last):
    cvprep.errors.ParameterError: `workers` should be an integer >= 0. Received: workers=2.5
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not _in_bounds(int(value), minimum, maximum, False, False)
    ):
        raise fail(name, f"an integer{_bounds_text(minimum, maximum, False, False)}", value)
    return int(value)


def check_optional_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """``None``, or an integer within the bounds (see :func:`check_int`)."""
    return None if value is None else check_int(name, value, minimum=minimum, maximum=maximum)


def check_seed(value: object, name: str = "seed") -> int:
    """A random seed: an integer in [0, 2**32 - 1], the range NumPy and Keras accept."""
    return check_int(name, value, minimum=0, maximum=MAX_SEED)


def check_choice(name: str, value: object, choices: Collection[Any]) -> Any:
    """One of ``choices`` (listed in the message when it is not).

    >>> check_choice("mode", "copy", ("copy", "hardlink", "symlink"))
    'copy'
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value tested against a set or dict
        known = False
    if not known:
        raise fail(name, "one of " + ", ".join(map(str, choices)), value)
    return value


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False`` (NumPy booleans too), not a truthy string or number."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise fail(name, "True or False", value)
    return bool(value)
