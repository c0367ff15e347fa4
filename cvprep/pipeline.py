"""The pipeline spec: one text grammar for the CLI, Python and Keras.

Grammar::

    spec  := step ("," step)*
    step  := name ["=" arg (":" arg)*]
    arg   := value | key "=" value

Positional values are an operation's main settings, in a fixed order; everything else is
``key=value``. Examples: ``resize=224x224:fit=pad``, ``gaussian_blur=5:sigma=1.5``,
``canny=100:200:l2_gradient=true``, ``rotate=15:expand=true``.

``Pipeline.to_text()`` writes the canonical form: every positional value, and keyword values
only where they differ from the default. Parsing that text gives an equal pipeline.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cvprep import ops
from cvprep.errors import ParameterError

SPEC_VERSION = 1


class SpecError(ParameterError):
    """A pipeline spec that cannot be parsed or has an invalid step (a ``ValueError``)."""


# --------------------------------------------------------------------------- value codecs
def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected HEIGHTxWIDTH (e.g. 224x224), got {text!r}")
    values = [int(p) for p in parts]
    return (values[0], values[-1])


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _parse_fill(text: str) -> tuple[float, ...]:
    return tuple(_parse_float(part) for part in text.split("/"))


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, tuple):
        return "/".join(_format_number(v) for v in value)
    if isinstance(value, int | float):
        return _format_number(value)
    return str(value)


@dataclass(frozen=True)
class Param:
    name: str
    parse: Callable[[str], Any]
    help: str


@dataclass(frozen=True)
class Operation:
    """One registered operation: its function, validator, spec syntax and Keras layer."""

    name: str
    function: Callable[..., Any]
    check: Callable[..., dict[str, Any]]
    layer: str
    summary: str
    positional: tuple[Param, ...] = ()
    keywords: tuple[Param, ...] = ()
    example: str = ""

    @property
    def params(self) -> tuple[Param, ...]:
        return self.positional + self.keywords

    def syntax(self) -> str:
        if self.positional:
            pos = ":".join(p.name.upper() for p in self.positional)
            return f"{self.name}={pos}" + "".join(f"[:{p.name}=…]" for p in self.keywords)
        if self.keywords:
            return f"{self.name}[=" + ":".join(f"{p.name}=…" for p in self.keywords) + "]"
        return self.name


_INTERP = "|".join(ops.INTERPOLATIONS)
_BORDER = "|".join(ops.BORDERS)
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation(
            "resize",
            ops.resize,
            ops.check_resize,
            "Resize",
            "Resize to HEIGHTxWIDTH (stretch, letterbox-pad or centre-crop).",
            (Param("size", _parse_size, "HEIGHTxWIDTH, e.g. 224x224"),),
            (
                Param("interpolation", str, _INTERP + " (default area)"),
                Param("fit", str, "stretch|pad|crop (default stretch)"),
                Param("fill", _parse_fill, "pad value, 0-255 or R/G/B (default 0)"),
            ),
            "resize=224x224:fit=pad",
        ),
        Operation(
            "grayscale",
            ops.to_grayscale,
            ops.check_grayscale,
            "Grayscale",
            "RGB to luma (0.299R+0.587G+0.114B).",
            (),
            (Param("keep_channels", _parse_bool, "true to keep 3 channels (default false)"),),
            "grayscale=keep_channels=true",
        ),
        Operation(
            "equalize",
            ops.equalize_hist,
            ops.check_equalize,
            "HistogramEqualization",
            "Histogram equalisation per image (luminance only for colour).",
            (),
            (),
            "equalize",
        ),
        Operation(
            "clahe",
            ops.clahe,
            ops.check_clahe,
            "CLAHE",
            "Contrast-limited adaptive histogram equalisation (luminance).",
            (Param("clip_limit", _parse_float, "clip limit > 0 (default 2)"),),
            (Param("tile_grid", _parse_size, "ROWSxCOLS of tiles (default 8x8)"),),
            "clahe=2:tile_grid=8x8",
        ),
        Operation(
            "gaussian_blur",
            ops.gaussian_blur,
            ops.check_gaussian_blur,
            "GaussianBlur",
            "Gaussian blur, borders reflect-101 like OpenCV.",
            (Param("ksize", _parse_int, "odd kernel size, 0 = from sigma"),),
            (Param("sigma", _parse_float, "standard deviation, 0 = from ksize (default 0)"),),
            "gaussian_blur=5",
        ),
        Operation(
            "median_blur",
            ops.median_blur,
            ops.check_median_blur,
            "MedianBlur",
            "Median filter, borders replicate like OpenCV.",
            (Param("ksize", _parse_int, "odd kernel size"),),
            (),
            "median_blur=3",
        ),
        Operation(
            "canny",
            ops.canny,
            ops.check_canny,
            "CannyEdges",
            "Canny edge map (255 on edges), colour converted to gray first.",
            (
                Param("low", _parse_float, "low hysteresis threshold"),
                Param("high", _parse_float, "high hysteresis threshold"),
            ),
            (
                Param("aperture", _parse_int, "Sobel size 3|5|7 (default 3)"),
                Param("l2_gradient", _parse_bool, "true for the L2 gradient norm (default false)"),
            ),
            "canny=100:200",
        ),
        Operation(
            "rotate",
            ops.rotate,
            ops.check_rotate,
            "Rotate",
            "Rotate counter-clockwise by DEGREES about the centre.",
            (Param("angle", _parse_float, "degrees, counter-clockwise"),),
            (
                Param("expand", _parse_bool, "true to grow the canvas (default false)"),
                Param("interpolation", str, "nearest|linear (default linear)"),
                Param("border", str, _BORDER + " (default constant)"),
                Param("fill", _parse_fill, "border value, 0-255 or R/G/B (default 0)"),
            ),
            "rotate=15:expand=true",
        ),
    ]
}


@dataclass(frozen=True)
class Step:
    """One validated step: an operation name and its full, normalised parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def operation(self) -> Operation:
        return OPERATIONS[self.name]

    def apply(self, image: npt.ArrayLike) -> np.ndarray:
        return self.operation.function(image, **self.params)

    def to_text(self) -> str:
        op = self.operation
        defaults = {name: p.default for name, p in inspect.signature(op.check).parameters.items()}
        args = [_format(self.params[p.name]) for p in op.positional]
        # Compared as text so that 0 and (0.0,) count as the same default fill.
        args += [
            f"{p.name}={_format(self.params[p.name])}"
            for p in op.keywords
            if _format(self.params[p.name]) != _format(defaults[p.name])
        ]
        return self.name + ("=" + ":".join(args) if args else "")


def make_step(name: str, **params: Any) -> Step:
    """Validate ``params`` with the operation's own check and return a :class:`Step`.

    Parameters are bound by name: ``make_step("canny", high=150)`` keeps the default ``low``.
    """
    if name not in OPERATIONS:
        raise SpecError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    op = OPERATIONS[name]
    known = {p.name for p in op.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise SpecError(
            f"{name} has no parameter {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(sorted(known)) or 'none'} (syntax: {op.syntax()})"
        )
    signature = inspect.signature(op.check).parameters
    missing = [
        p.name
        for p in op.positional
        if p.name not in params and signature[p.name].default is inspect.Parameter.empty
    ]
    if missing:
        raise SpecError(f"{name}: missing {', '.join(missing)} (syntax: {op.syntax()})")
    return Step(name, op.check(**params))


def _parse_step(text: str) -> Step:
    name, _, rest = text.partition("=")
    name = name.strip()
    if name not in OPERATIONS:
        raise SpecError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    op = OPERATIONS[name]
    params: dict[str, Any] = {}
    args = [a.strip() for a in rest.split(":")] if rest.strip() else []
    positional_left = list(op.positional)
    by_name = {p.name: p for p in op.params}
    for arg in args:
        key, has_key, value = arg.partition("=")
        if has_key:
            param = by_name.get(key.strip())
            if param is None:
                raise SpecError(
                    f"{name} has no parameter {key.strip()!r}; it takes "
                    f"{', '.join(by_name) or 'none'}"
                )
        elif positional_left:
            param, value = positional_left.pop(0), arg
        else:
            raise SpecError(f"too many values for {name}; syntax: {op.syntax()}")
        if param.name in params:
            raise SpecError(f"{name}: {param.name} given twice")
        try:
            params[param.name] = param.parse(value.strip())
        except ValueError as exc:
            raise SpecError(f"{name}: {param.name}: {exc}") from None
    return make_step(name, **params)


class Pipeline:
    """An ordered list of validated operations, parsed from or written to the spec text.

    Examples
    --------
    >>> p = Pipeline.parse("resize=64x64,grayscale,gaussian_blur=5")
    >>> p.to_text()
    'resize=64x64,grayscale,gaussian_blur=5'
    >>> p.apply(np.zeros((100, 80, 3), np.uint8)).shape
    (64, 64)
    """

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.steps: tuple[Step, ...] = tuple(steps)

    @classmethod
    def parse(cls, spec: str) -> Pipeline:
        """Parse spec text; a bad step raises :class:`SpecError` naming it and its position."""
        if not isinstance(spec, str):
            raise SpecError(f"spec should be a string. Received: {spec!r}")
        parts = [part.strip() for part in spec.split(",")]
        if parts == [""]:
            return cls(())
        steps = []
        for index, part in enumerate(parts, start=1):
            if not part:
                raise SpecError(f"step {index} of {spec!r} is empty (stray comma?)")
            try:
                steps.append(_parse_step(part))
            except ValueError as exc:
                raise SpecError(f"step {index} {part!r} of {spec!r}: {exc}") from None
        return cls(steps)

    def to_text(self) -> str:
        return ",".join(step.to_text() for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cvprep_pipeline": SPEC_VERSION,
            "spec": self.to_text(),
            "steps": [{"op": s.name, "params": _jsonable(s.params)} for s in self.steps],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise SpecError("pipeline JSON should be an object with a list of 'steps'")
        steps = []
        for index, entry in enumerate(data["steps"], start=1):
            try:
                params = {
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in entry.get("params", {}).items()
                }
                steps.append(make_step(entry["op"], **params))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SpecError(f"step {index} of the pipeline JSON: {exc}") from None
        return cls(steps)

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or text that is not UTF-8
            raise SpecError(f"pipeline JSON cannot be read: {exc}") from None
        return cls.from_dict(data)

    def apply(self, image: npt.ArrayLike) -> np.ndarray:
        """Run every step on ``image`` (RGB or single-channel) and return the result."""
        result = np.asarray(image)
        for step in self.steps:
            result = step.apply(result)
        return result

    def intermediates(self, image: npt.ArrayLike) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(step text, image after that step)``, starting with the input."""
        result = np.asarray(image)
        yield "input", result
        for step in self.steps:
            result = step.apply(result)
            yield step.to_text(), result

    def layers(self) -> list[Any]:
        """One cvprep Keras layer per step."""
        from cvprep import keras_layers

        return [getattr(keras_layers, s.operation.layer)(**s.params) for s in self.steps]

    def to_keras(
        self,
        input_shape: tuple[int | None, int | None, int] = (None, None, 3),
        name: str = "cvprep_pipeline",
    ) -> Any:
        """A Keras model doing the same as :meth:`apply` (values in [0, 255], float32 out)."""
        import keras

        inputs = keras.Input(shape=input_shape, name="image")
        outputs = inputs
        for layer in self.layers():
            outputs = layer(outputs)
        return keras.Model(inputs, outputs, name=name)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.steps == other.steps

    def __hash__(self) -> int:
        return hash(self.to_text())

    def __repr__(self) -> str:
        return f"Pipeline({self.to_text()!r})"


@functools.lru_cache(maxsize=16)
def pipeline_from_json(text: str) -> Pipeline:
    """:meth:`Pipeline.from_json`, parsed once per process (worker processes and threads get
    the same spec for every image)."""
    return Pipeline.from_json(text)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
