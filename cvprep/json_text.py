"""JSON that is always valid: NaN and infinities become ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no JSON parser outside
Python accepts (a model trained to NaN once made ``cvprep predict --json`` print
``"probability": NaN``). Every JSON file and every ``--json`` output of cvprep goes through
:func:`dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(data: Any) -> Any:
    """``data`` with every non-finite float (NumPy's too) replaced by ``None``.

    >>> finite({"p": float("nan"), "q": [1.5, float("inf")], "n": 2})
    {'p': None, 'q': [1.5, None], 'n': 2}
    """
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    if isinstance(data, float) or type(data).__name__ in ("float32", "float64", "float16"):
        return float(data) if math.isfinite(data) else None
    return data


def dumps(data: Any, *, indent: int | None = 2) -> str:
    """Valid JSON text for ``data`` (non-finite numbers as ``null``; other unknown objects,
    such as paths, as their text).

    >>> dumps([float("nan")], indent=None)
    '[null]'
    """
    return json.dumps(finite(data), indent=indent, default=str, allow_nan=False)
