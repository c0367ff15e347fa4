"""Training, evaluation, prediction and export as Python functions: the same work as
``cvprep train/evaluate/predict/export``, returning result objects. Nothing here imports Click.

Modules: :mod:`~cvprep.training.config` (settings and measured defaults),
:mod:`~cvprep.training.plan` (a config resolved once against DATA: what every step reads),
:mod:`~cvprep.training.data` (decode once, cache, tf.data), :mod:`~cvprep.training.models`,
:mod:`~cvprep.training.fit` (a run's steps), :mod:`~cvprep.training.phases` (the fit loop),
:mod:`~cvprep.training.backup` (resuming), :mod:`~cvprep.training.evaluate`,
:mod:`~cvprep.training.explain` (heatmaps),
:mod:`~cvprep.training.run` (the run folder), :mod:`~cvprep.training.report` and
:mod:`~cvprep.training.export`.
"""

from cvprep.training.config import BACKBONES, MODELS, RECIPES, TrainConfig
from cvprep.training.evaluate import Evaluation, Prediction, evaluate, predict
from cvprep.training.explain import Explanation, explain
from cvprep.training.export import ExportResult, export
from cvprep.training.fit import TrainResult, train, train_with_config
from cvprep.training.plan import TrainPlan, resolve_plan
from cvprep.training.run import Run, load_run

__all__ = [
    "BACKBONES",
    "MODELS",
    "RECIPES",
    "Evaluation",
    "Explanation",
    "ExportResult",
    "Prediction",
    "Run",
    "TrainConfig",
    "TrainPlan",
    "TrainResult",
    "evaluate",
    "explain",
    "export",
    "load_run",
    "predict",
    "resolve_plan",
    "train",
    "train_with_config",
]
