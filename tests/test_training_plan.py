"""The training plan: a TrainConfig checked when it is made and resolved once against DATA;
the CLI's options and help built from the same definitions. Nothing here trains except the
one test that follows the config through a run."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvprep.cli import cli
from cvprep.dataset import make_shapes_dataset, preprocess, split
from cvprep.dataset.preprocess import PreprocessingRecord, read_preprocessing_record
from cvprep.errors import CvprepError, ParameterError
from cvprep.pipeline import Pipeline
from cvprep.training import TrainConfig, resolve_plan
from cvprep.training.config import BACKBONES, MODELS, check_setting
from tests.conftest import ROOT

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 3), max_size=3),
    st.sampled_from(["2", "nan", "inf", "-1", "0.5", "cnn", "pad", "medium", "imagenet"]),
)
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/ and test/ (no val/) of two classes of small generated PNGs."""
    root = tmp_path_factory.mktemp("plan")
    shapes = make_shapes_dataset(root / "shapes", per_class=10, size=40, seed=2)
    split(shapes, root / "data", ratios="0.8,0,0.2", seed=1, workers=0)
    return root / "data"


def test_resolving_fills_the_recipe_and_never_touches_the_config(data, tmp_path):
    config = TrainConfig(str(data), str(tmp_path / "run"), model="mobilenet", ops="grayscale")
    before = dataclasses.asdict(config)
    plan = resolve_plan(config)
    assert dataclasses.asdict(config) == before and config.epochs is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.config = config  # type: ignore[misc]
    assert plan.config.epochs == 5 and plan.config.fine_tune_epochs == 20
    assert plan.size == 288 and plan.config.augment == "medium"
    assert plan.classes == ("angular", "round") and plan.record == PreprocessingRecord()
    assert plan.preprocessing.ops_text == "grayscale" and plan.preprocessing.channels == 1
    assert plan.preprocessing.stored_channels == 3
    # No val/: a stratified, seeded share of train/ validates; test/ stays apart.
    assert plan.validation.to_dict() == {"source": "train", "images": 2, "fraction": 0.1,
                                         "seed": 1337}  # fmt: skip
    assert len(plan.train) + len(plan.val) == 16 and len(plan.test) == 4
    assert not set(plan.val.files) & set(plan.train.files)
    assert not (tmp_path / "run").exists()  # resolving writes nothing


def test_files_outside_the_classes_are_kept_in_the_plan_with_why(data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    image = next((copy / "train" / "round").iterdir())
    shutil.copy(image, copy / "train" / "loose.png")
    (copy / "test" / "bird").mkdir()
    shutil.copy(image, copy / "test" / "bird" / "b.png")
    plan = resolve_plan(TrainConfig(str(copy), "never-written"))
    assert plan.train.describe_outside() == {
        str(copy / "train" / "loose.png"): "not in a class folder"
    }
    assert list(plan.test.describe_outside().values()) == [
        "class folder 'bird' is not one of the model's classes"
    ]
    assert plan.classes == ("angular", "round")


def test_a_preprocessed_data_folder_is_read_through_its_record(data, tmp_path):
    prepped = tmp_path / "prepped"
    preprocess(data, prepped, "resize=32x32,grayscale", workers=0)
    record = read_preprocessing_record(prepped)
    assert record == PreprocessingRecord("resize=32x32,grayscale", data.resolve())
    plan = resolve_plan(TrainConfig(str(prepped), str(tmp_path / "run"), ops="equalize"))
    assert plan.preprocessing.full_text == "resize=32x32,grayscale,equalize"
    assert plan.preprocessing.stored_channels == plan.preprocessing.channels == 1
    assert plan.raw_test_folder == data.resolve() / "test"
    settings_ = plan.settings()
    assert settings_["data_spec"] == "resize=32x32,grayscale" and settings_["ops"] == "equalize"
    # Files preprocessed to 32 pixels train at 32 (from scratch, small images keep their size).
    assert settings_["classes"] == ["angular", "round"] and settings_["image_size"] == 32
    # A damaged record is refused as such, not read as "not preprocessed".
    (prepped / "cvprep.json").write_text(json.dumps({"command": "preprocess", "settings": 3}))
    assert read_preprocessing_record(prepped) == PreprocessingRecord()


def test_an_old_config_json_still_loads(data):
    """config.json of a cvprep 0.2 run (classes, data_spec and image_size are not settings)."""
    old = {
        "data": str(data), "out": "runs/cnn", "model": "cnn", "alpha": 1.0,
        "weights": "imagenet", "img_size": None, "resize": "stretch", "epochs": 60,
        "fine_tune_epochs": 0, "unfreeze": 0, "batch_size": 32, "learning_rate": 0.002,
        "fine_tune_learning_rate": 0.0, "label_smoothing": 0.1, "augment": "medium",
        "ops": "gaussian_blur=3", "val_fraction": 0.1, "patience": 10, "seed": 1337,
        "cache": "auto", "workers": None, "distribute": False, "coordinator": "",
        "num_processes": 1, "process_id": 0, "data_spec": "", "classes": ["a", "b"],
        "image_size": 150, "validation": {"source": "val", "images": 24},
    }  # fmt: skip
    config = TrainConfig.from_dict(old)
    assert config.ops == "gaussian_blur=3" and config.resolved() == config


FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("data", "out")]


@pytest.mark.parametrize("name", FIELDS)
@fast
@given(value=anything)
def test_every_setting_is_accepted_and_valid_or_refused_naming_it(name, value, data):
    """Any value of any setting, from the Python API: either the run's plan is made (and the
    setting holds a valid value) or one ParameterError names the setting."""
    try:
        config = TrainConfig(str(data), "never-written", **{name: value})
        plan = resolve_plan(config)
    except ParameterError as exc:
        assert f"`{name}`" in str(exc), str(exc)
        return
    held = getattr(plan.config, name)
    assert check_setting(name, held) == held  # what was kept is valid as it is
    assert not isinstance(held, float) or held == held  # never NaN


@fast
@given(value=anything)
def test_data_and_out_are_paths(value, data):
    for name, other in (("data", {"out": "never-written"}), ("out", {"data": str(data)})):
        try:
            config = TrainConfig(**{name: value}, **other)
        except ParameterError as exc:
            assert f"`{name}`" in str(exc)
            continue
        assert isinstance(getattr(config, name), str)
        try:
            resolve_plan(config)
        except ParameterError as exc:  # not an existing folder
            assert f"`{name}`" in str(exc)
        except CvprepError as exc:  # a folder, but not a DATA folder
            assert "train/" in str(exc)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--learning-rate", "nan"], "learning_rate"),
        (["--learning-rate", "0"], "learning_rate"),
        (["--fine-tune-learning-rate", "inf"], "fine_tune_learning_rate"),
        (["--label-smoothing", "1"], "label_smoothing"),
        (["--val-fraction", "nan"], "val_fraction"),
        (["--alpha", "nan"], "alpha"),
        (["--epochs", "0"], "epochs"),
        (["--img-size", "2000"], "img_size"),
        (["--seed", "-1"], "seed"),
        (["--workers", "-2"], "workers"),
        (["--model", "cnn", "--alpha", "0.5"], "alpha"),
        (["--num-processes", "2"], "coordinator"),
        (["--ops", "gaussian_blur=4"], "ops"),
    ],
)
def test_the_train_command_refuses_what_the_api_refuses(args, name, data, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(data), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert name.replace("_", "-") in result.output or name in result.output, result.output
    assert not (tmp_path / "r").exists()


OPTIONS = {
    "--img-size": "img_size",
    "--epochs": "epochs",
    "--learning-rate": "learning_rate",
    "--label-smoothing": "label_smoothing",
    "--augment": "augment",
    "--fine-tune-epochs": "fine_tune_epochs",
    "--fine-tune-learning-rate": "fine_tune_learning_rate",
    "--unfreeze": "unfreeze",
}


def test_the_train_help_shows_the_recipes_real_defaults():
    command = cli.commands["train"]
    helps = {opt: param.help for param in command.params for opt in param.opts}
    for option, name in OPTIONS.items():
        models = list(BACKBONES if name.startswith(("fine_tune", "unfreeze")) else MODELS)
        text = re.search(r"\[default: (.*)\]$", helps[option]).group(1)
        groups = re.findall(r"([^,()\s]+) \(([^)]*)\)", text) or [(text, ", ".join(models))]
        said = {model: value for value, names in groups for model in names.split(", ")}
        assert set(said) == set(models), (option, text)
        for model in models:
            config = TrainConfig("d", "o", model=model).resolved()
            value = config.size if name == "img_size" else getattr(config, name)
            assert said[model] == (f"{value:g}" if isinstance(value, float) else str(value))
    rendered = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "light for backbones" not in rendered and "224 for backbones" not in rendered


def test_no_function_in_training_is_long():
    for source in (ROOT / "cvprep" / "training").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{source.name}: {node.name} has {length} lines"


def test_every_run_file_is_written_through_the_atomic_writer():
    """No stray write_text/write_bytes/savefig in the training code: the run folder's files
    are whole after a kill and readable under the user's umask."""
    for source in (ROOT / "cvprep" / "training").glob("*.py"):
        text = source.read_text()
        assert not re.search(r"\.write_text\(|\.write_bytes\(|savefig\([^b]", text), source


@pytest.mark.slow
def test_following_the_config_through_a_run(data, tmp_path, monkeypatch):
    """The specs are parsed once, by the plan, and the steps after it only use what the
    plan parsed: pipeline.py is entered for the config from the plan's one function; the
    other entries are the per-image work (apply) and the saved model's layers (once)."""
    import cvprep.pipeline as pipeline_module

    calls: list[tuple[str, str, str]] = []

    def spy(name, function):
        def wrapper(*args, **kwargs):
            frame = __import__("sys")._getframe(1)
            caller = frame.f_globals.get("__name__", "")
            if caller.startswith("cvprep.") and caller != "cvprep.pipeline":
                calls.append((name, caller, frame.f_code.co_name))
            return function(*args, **kwargs)

        return wrapper

    cls = pipeline_module.Pipeline
    for name in ("apply", "layers", "to_text", "to_json", "to_dict", "intermediates"):
        monkeypatch.setattr(cls, name, spy(name, getattr(cls, name)))
    for name in ("parse", "from_json", "from_dict"):
        monkeypatch.setattr(cls, name, classmethod(spy(name, getattr(cls, name).__func__)))
    monkeypatch.setattr(cls, "__init__", spy("__init__", cls.__init__))
    monkeypatch.setattr(
        pipeline_module, "pipeline_from_json", spy("json", pipeline_module.pipeline_from_json)
    )
    from cvprep.training import train

    train(data, out=tmp_path / "run", ops="gaussian_blur=3", img_size=32, epochs=1,
          batch_size=8, workers=0)  # fmt: skip
    outside_plan = {(n, c, f) for n, c, f in calls if c != "cvprep.training.plan"}
    assert outside_plan == {
        ("apply", "cvprep.training.data", "prepare_image"),  # each image, once, when cached
        ("layers", "cvprep.training.models", "preprocessing_layers"),
    }, outside_plan
    in_plan = [(n, f) for n, c, f in calls if c == "cvprep.training.plan"]
    assert {f for _, f in in_plan} == {"_preprocessing"}  # one visit from the config's side
    assert [n for n, _ in in_plan].count("parse") == 2  # --ops and DATA's record, once each
    assert [n for n, _, _ in calls].count("layers") == 1
    assert Pipeline.from_json((tmp_path / "run" / "pipeline.json").read_text()).to_text() == (
        "gaussian_blur=3"
    )
