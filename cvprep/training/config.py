"""Every setting of a training run, with defaults measured on real photos (README).

:class:`TrainConfig` is what a caller asks for: frozen, checked when it is made (one
``ParameterError`` naming the setting, through :mod:`cvprep.params`), ``None`` meaning "the
model's default". :mod:`cvprep.training.plan` resolves it against DATA. The CLI's options and
their help are built from :data:`LIMITS` and :data:`RECIPES` here, so they cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from cvprep import params
from cvprep.augmentation import PRESET_NAMES
from cvprep.dataset.engines import MAX_WORKERS
from cvprep.errors import ParameterError
from cvprep.pipeline import Pipeline
from cvprep.training.compute import PRECISIONS


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    scaling: str  # InputScaling mode matching the backbone's preprocess_input
    default_size: int
    has_alpha: bool = False


BACKBONES = {
    b.name: b
    for b in [
        Backbone("mobilenet", "MobileNet", "tf", 224, has_alpha=True),
        Backbone("mobilenet_v2", "MobileNetV2", "tf", 224, has_alpha=True),
        Backbone("efficientnet_b0", "EfficientNetB0", "none", 224),
        Backbone("resnet50", "ResNet50", "caffe", 224),
        Backbone("vgg16", "VGG16", "caffe", 224),
    ]
}
FROM_SCRATCH = ("cnn", "classic")
MODELS = (*FROM_SCRATCH, *BACKBONES)
RESIZE_MODES = ("stretch", "pad", "crop")
CACHE_MODES = ("auto", "memory", "disk")
# auto: balanced when the largest class of the training images has at least
# IMBALANCE_RATIO × the images of the smallest, else none.
CLASS_WEIGHTS = ("auto", "balanced", "none")
IMBALANCE_RATIO = 1.5
# classic: four valid 3×3 convs + pools leave 1×1; cnn: its pooling adapts to the input.
MIN_SIZE = {"classic": 46, "cnn": 8}
SCRATCH_SIZE = 150
MAX_FEATURE_VIEWS = 16
DEFAULT_FEATURE_VIEWS = 2  # the image and its mirror (README: measured)


@dataclass(frozen=True)
class Recipe:
    """The defaults of one kind of model: what `cvprep train DATA --model M` does."""

    epochs: int
    learning_rate: float
    augment: str
    label_smoothing: float
    schedule: str  # "cosine" (warm-up, then cosine decay) or "constant"
    weight_decay: float = 0.0
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 0.0
    unfreeze: int = 0  # 0: every backbone layer (BatchNormalization stays frozen)
    img_size: int | None = None  # None: 150 from scratch, the backbone's own size otherwise
    progressive: bool = False  # progressive resizing (RESIZE_STAGES); cnn only


_BACKBONE = Recipe(
    5,  # the new head, on the frozen backbone
    1e-2,
    "medium",
    0.1,
    "cosine",
    fine_tune_epochs=20,
    fine_tune_learning_rate=1e-4,
)
RECIPES = {
    # Measured on the 2,000 + 1,000 dev photos (README: figures and the runs behind them).
    # 46 epochs, 20 at 64 px, 16 at 96 and 10 at 150 (progressive resizing): val 0.894-0.901
    # in 12.4-15.3 minutes on 2 cores (40 epochs: 0.875-0.881), where 60 epochs at 150 px
    # took about 45 for 0.896 and 20 epochs at 150 px 17 minutes for 0.782 (README).
    "cnn": Recipe(46, 2e-3, "medium", 0.1, "cosine", weight_decay=1e-4, progressive=True),
    # The course's recipe: its exact network, Adam at 1e-3, no schedule.
    "classic": Recipe(30, 1e-3, "medium", 0.0, "constant"),
    "backbone": _BACKBONE,
    # MobileNets are cheap: 288-pixel input measured better than 224 (0.969 vs 0.961).
    # MobileNet fine-tunes its blocks 10-13 (the top 25 layers) only, on activations cached
    # below them (features.py): val 0.973 and 0.968 (two seeds) in 20 epochs at 3e-4, as
    # high as fine-tuning every layer (0.968-0.970) in about a third of the time (README:
    # Training speed). 15 epochs gave 0.965; 4 cached views instead of 2, 0.962 and 1.4x the
    # time.
    "mobilenet": replace(
        _BACKBONE,
        img_size=288,
        unfreeze=25,
        fine_tune_learning_rate=3e-4,
    ),
    "mobilenet_v2": replace(_BACKBONE, img_size=288),
}
# Progressive resizing (`cnn`): the first epochs train on smaller copies of the images, which
# cost less per epoch, then the network (the same weights: it ends in global pooling) goes on
# at larger ones and ends at the full input size. (share of the epochs, share of the size)
# stages before the full size, the sizes rounded to a multiple of 8 pixels (150 → 64, 96);
# stages below PROGRESSIVE_MIN_SIZE pixels are skipped.
RESIZE_STAGES = ((0.45, 0.43), (0.35, 0.64))
PROGRESSIVE_MIN_SIZE = 64
# The settings a recipe fills in when they are left out (None).
RECIPE_SETTINGS = (
    "epochs",
    "learning_rate",
    "augment",
    "label_smoothing",
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "unfreeze",
    "progressive",
)


def recipe_for(model: str) -> Recipe:
    return RECIPES[model] if model in RECIPES else RECIPES["backbone"]


def image_size(model: str, img_size: int | None = None) -> int:
    """The square input size: ``img_size``, else the recipe's, else the model's own."""
    if img_size:
        return img_size
    recipe_size = recipe_for(model).img_size
    if recipe_size:
        return recipe_size
    return SCRATCH_SIZE if model in FROM_SCRATCH else BACKBONES[model].default_size


@dataclass(frozen=True)
class Stage:
    """Epochs of phase 1 that train on one input size."""

    epochs: int
    size: int


def resize_stages(epochs: int, size: int, progressive: bool) -> tuple[Stage, ...]:
    """Phase 1's input sizes in order, ending at ``size`` (one stage without progressive
    resizing, or when the smaller sizes would be under :data:`PROGRESSIVE_MIN_SIZE`).

    Examples
    --------
    >>> [(s.epochs, s.size) for s in resize_stages(46, 150, True)]
    [(20, 64), (16, 96), (10, 150)]
    >>> [(s.epochs, s.size) for s in resize_stages(30, 64, True)]  # digits: no smaller copies
    [(30, 64)]
    """
    stages, left = [], epochs
    for share, fraction in RESIZE_STAGES if progressive else ():
        smaller, count = 8 * round(size * fraction / 8), int(share * epochs + 1e-9)
        if count and PROGRESSIVE_MIN_SIZE <= smaller < size:
            stages.append(Stage(count, smaller))
            left -= count
    return (*stages, Stage(left, size))


def describe_stages() -> str:
    """:data:`RESIZE_STAGES` in words, for help texts.

    >>> describe_stages()[:60]
    'the first 45 % of the epochs at 43 % of the input size, the '
    """
    first, *rest = RESIZE_STAGES
    parts = [f"the first {first[0]:.0%} of the epochs at {first[1]:.0%} of the input size"]
    parts += [f"the next {share:.0%} at {fraction:.0%}" for share, fraction in rest]
    return ", ".join([*parts, "the rest at full size"]).replace("%", " %")


def default_for(model: str, name: str) -> Any:
    """The value setting ``name`` takes for ``model`` when it is left out."""
    return image_size(model) if name == "img_size" else getattr(recipe_for(model), name)


def describe_default(name: str, models: Sequence[str] = MODELS) -> str:
    """The defaults of ``name`` over ``models``, for help texts: ``"medium"`` when they all
    share it, else ``"60 (cnn), 30 (classic), 5 (mobilenet, …)"``."""
    groups: dict[str, list[str]] = {}
    for model in models:
        value = default_for(model, name)
        groups.setdefault(f"{value:g}" if isinstance(value, float) else str(value), []).append(
            model
        )
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{value} ({', '.join(models)})" for value, models in groups.items())


# --------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class Limit:
    """The allowed values of a numeric setting (the CLI's option types use the same)."""

    kind: Literal["int", "number"]
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    optional: bool = False  # None allowed: the recipe's default, or "all cores"

    def check(self, name: str, value: object) -> Any:
        if value is None and self.optional:
            return None
        if self.kind == "int":
            low, high = self.minimum, self.maximum
            return params.check_int(
                name,
                value,
                minimum=None if low is None else int(low),
                maximum=None if high is None else int(high),
            )
        return params.check_number(
            name,
            value,
            minimum=self.minimum,
            maximum=self.maximum,
            min_open=self.min_open,
            max_open=self.max_open,
        )


LIMITS = {
    "alpha": Limit("number", 0.1, 1.4),
    "img_size": Limit("int", 8, 1024, optional=True),  # per model: MIN_SIZE
    "epochs": Limit("int", 1, optional=True),
    "fine_tune_epochs": Limit("int", 0, optional=True),
    "unfreeze": Limit("int", 0, optional=True),
    "batch_size": Limit("int", 1),
    "learning_rate": Limit("number", 0, min_open=True, optional=True),
    # 0 is what the recipes of models without a backbone (nothing to fine-tune) record.
    "fine_tune_learning_rate": Limit("number", 0, optional=True),
    "label_smoothing": Limit("number", 0, 1, max_open=True, optional=True),
    "val_fraction": Limit("number", 0, 1, min_open=True, max_open=True),
    "patience": Limit("int", 1),
    "feature_views": Limit("int", 0, MAX_FEATURE_VIEWS),
    "workers": Limit("int", 0, MAX_WORKERS, optional=True),
    "num_processes": Limit("int", 1),
    "process_id": Limit("int", 0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODELS,
    "resize": RESIZE_MODES,
    "cache": CACHE_MODES,
    "augment": PRESET_NAMES,
    "precision": PRECISIONS,
    "class_weight": CLASS_WEIGHTS,
}


def check_setting(name: str, value: object) -> Any:
    """One setting of :class:`TrainConfig` on its own (its type and range): the value,
    normalised, or a ``ParameterError`` naming it. The CLI's option types call this."""
    if name in LIMITS:
        return LIMITS[name].check(name, value)
    if name in CHOICES:
        if value is None and name == "augment":
            return None
        return params.check_choice(name, value, CHOICES[name])
    if name == "seed":
        return params.check_seed(value)
    if name == "distribute":
        return params.check_bool(name, value)
    if name == "progressive":
        return None if value is None else params.check_bool(name, value)
    if name == "ops":
        if not isinstance(value, str | Pipeline):
            raise params.fail(name, "a pipeline spec (text) or a Pipeline", value)
        return value
    return _check_text(name, value)


def _check_text(name: str, value: object) -> str:
    """data, out, weights: a path or a word; coordinator: HOST:PORT or empty."""
    if isinstance(value, os.PathLike) and name in ("data", "out", "weights"):
        value = os.fspath(value)
    if not isinstance(value, str) or (not value and name != "coordinator"):
        expected = "HOST:PORT text" if name == "coordinator" else "a non-empty path or name"
        raise params.fail(name, expected, value)
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Every argument of a training run, checked when it is made.

    ``None`` means "the model's default" (see :data:`RECIPES`); :meth:`resolved` fills it
    in. Frozen: derive another with :func:`dataclasses.replace`. ``ops`` is spec text or a
    parsed :class:`~cvprep.pipeline.Pipeline` (parsed once, by the plan, when it is text).

    Examples
    --------
    >>> TrainConfig("data", "runs/cnn").resolved().epochs
    46
    >>> TrainConfig("data", "runs/cnn", learning_rate=float("nan"))
    Traceback (most recent call last):
    cvprep.errors.ParameterError: `learning_rate` should be a finite number > 0. Received: ...
    """

    data: str
    out: str
    model: str = "cnn"
    alpha: float = 1.0
    weights: str = "imagenet"
    img_size: int | None = None
    resize: str = "stretch"
    epochs: int | None = None
    fine_tune_epochs: int | None = None
    unfreeze: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None
    fine_tune_learning_rate: float | None = None
    label_smoothing: float | None = None
    augment: str | None = None
    # cnn: progressive resizing (RESIZE_STAGES); None: the recipe's choice.
    progressive: bool | None = None
    class_weight: str = "auto"
    ops: str | Pipeline = ""
    val_fraction: float = 0.1
    patience: int = 10
    # Backbones' frozen phase: the pooled backbone features of each training image are
    # computed once for this many views (the image, its mirror, then augmented copies) and
    # the head trains on them; 0: the backbone runs on augmented images every epoch.
    feature_views: int = DEFAULT_FEATURE_VIEWS
    # float32, bfloat16 (Keras' mixed_bfloat16; the last layer and the loss in float32), or
    # auto (cvprep.training.compute.resolve_precision); the plan records the choice.
    precision: str = "auto"
    seed: int = params.DEFAULT_SEED
    cache: str = "auto"
    workers: int | None = None
    distribute: bool = False
    coordinator: str = ""  # HOST:PORT of process 0, for multi-process data parallelism (JAX)
    num_processes: int = 1
    process_id: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            object.__setattr__(self, item.name, check_setting(item.name, getattr(self, item.name)))
        self._check_together()

    def _check_together(self) -> None:
        """Settings that are only wrong in combination (each message names both)."""
        if self.alpha != 1.0 and not (self.model in BACKBONES and BACKBONES[self.model].has_alpha):
            raise ParameterError(
                "`alpha` only applies to mobilenet and mobilenet_v2 (`model`). "
                f"Received: alpha={self.alpha} with model={self.model!r}"
            )
        minimum = MIN_SIZE.get(self.model, 32)
        if self.size < minimum:
            raise ParameterError(
                f"`img_size` should be >= {minimum} for {self.model}. "
                f"Received: img_size={self.size}"
            )
        if self.progressive and self.model != "cnn":
            raise ParameterError(
                "`progressive` (resizing) only applies to model 'cnn'. "
                f"Received: progressive=True with model={self.model!r}"
            )
        if self.num_processes > 1 and not self.coordinator:
            raise ParameterError(
                "`coordinator` (HOST:PORT) is needed with `num_processes` > 1. "
                f"Received: num_processes={self.num_processes}"
            )
        if self.process_id >= self.num_processes:
            raise ParameterError(
                f"`process_id` should be below `num_processes` ({self.num_processes}). "
                f"Received: process_id={self.process_id}"
            )
        if self.batch_size % self.num_processes:
            raise ParameterError(
                f"`batch_size` should be a multiple of `num_processes` ({self.num_processes}). "
                f"Received: batch_size={self.batch_size}"
            )

    @property
    def size(self) -> int:
        return image_size(self.model, self.img_size)

    @property
    def recipe(self) -> Recipe:
        return recipe_for(self.model)

    @property
    def schedule(self) -> str:
        return self.recipe.schedule

    @property
    def weight_decay(self) -> float:
        return self.recipe.weight_decay

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` of a recipe setting replaced by the model's default."""
        defaults = {n: getattr(self.recipe, n) for n in RECIPE_SETTINGS if getattr(self, n) is None}
        return replace(self, **defaults)

    def validate(self) -> None:
        """Check every setting again (they were checked when the config was made)."""
        replace(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From a ``config.json`` (keys that are not settings, such as ``classes``, are
        left out; a config without ``progressive`` is one of a run made before it existed,
        which trained without it)."""
        names = {f.name for f in fields(cls)}
        settings = {k: v for k, v in values.items() if k in names}
        settings.setdefault("progressive", False)
        return cls(**settings)
