"""Property-based checks (hypothesis) of every parameter parser and of the Python API's
argument checks: any value is either accepted — and then valid — or refused with one
``ParameterError`` naming the parameter; never another exception, never a NaN let through.
The CLI's option types call the same checks (``cvprep.cli.common.Checked``)."""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvprep import dataset, params
from cvprep.cli import cli
from cvprep.dataset.labels import FOLDERS, NAME, TABLE, parse_labels
from cvprep.dataset.split import make_plan, parse_fixed, parse_ratios
from cvprep.errors import ParameterError
from cvprep.pipeline import OPERATIONS, Pipeline, SpecError
from tests.test_dataset_cli import make_classes

# Values a script or a config file can hand over by mistake: wrong types, NaN, infinities,
# numbers as text, out-of-range numbers, booleans, containers.
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 3), max_size=3),
    st.sampled_from(["2", "nan", "inf", "-1", "1e9", "0.5", " 3"]),
)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ the checks themselves
@fast
@given(anything, st.one_of(st.none(), st.integers(-5, 5)), st.one_of(st.none(), st.integers(5, 9)))
def test_check_number_accepts_only_finite_numbers_in_range(value, low, high):
    try:
        result = params.check_number("x", value, minimum=low, maximum=high)
    except ParameterError as exc:
        assert str(exc).startswith("`x` should be")
        return
    assert math.isfinite(result) and not isinstance(value, bool | str)
    assert (low is None or result >= low) and (high is None or result <= high)


@fast
@given(anything)
def test_check_int_and_seed(value):
    for check in (lambda v: params.check_int("n", v, minimum=0), params.check_seed):
        try:
            result = check(value)
        except ParameterError as exc:
            assert "should be an integer" in str(exc)
            continue
        assert isinstance(result, int) and result >= 0 and not isinstance(value, bool)
        assert result == value


@fast
@given(anything)
def test_check_choice_and_bool(value):
    try:
        assert params.check_choice("mode", value, ("copy", "hardlink")) in ("copy", "hardlink")
    except ParameterError as exc:
        assert "`mode` should be one of copy, hardlink" in str(exc)
    try:
        assert params.check_bool("flag", value) is value
    except ParameterError as exc:
        assert "`flag` should be True or False" in str(exc)


# ------------------------------------------------------------------ parsers of text settings
number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-3, 300).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e-9", "", " ", "x"]),
)


@fast
@given(st.lists(number_text, min_size=0, max_size=4).map(",".join) | anything)
def test_ratios_are_finite_shares_summing_to_one_or_refused(value):
    try:
        ratios = parse_ratios(value)
    except ParameterError as exc:
        assert "ratios" in str(exc)
        return
    values = list(ratios.values())
    assert all(math.isfinite(v) and v >= 0 for v in values) and values[0] > 0
    assert abs(sum(values) - 1) <= 1e-6


@fast
@given(st.lists(number_text, min_size=0, max_size=3).map(",".join) | anything)
def test_fixed_counts_are_whole_non_negative_numbers_or_refused(value):
    try:
        fixed = parse_fixed(value)
    except ParameterError as exc:
        assert "fixed" in str(exc)
        return
    assert all(isinstance(v, int) and v >= 0 for v in fixed.values()) and any(fixed.values())


@fast
@given(anything, anything, anything)
def test_a_split_plan_is_one_of_ratios_fixed_or_folds(ratios, fixed, kfold):
    try:
        plan = make_plan(ratios, fixed, kfold)
    except ParameterError:
        return
    assert plan.names and sum(x is not None for x in (plan.ratios, plan.fixed, plan.folds)) == 1


labels_text = st.one_of(
    st.text(max_size=24),
    st.builds(
        lambda head, tail: f"{head}:{tail}",
        st.sampled_from(["name", "labels.csv", "a/b.tsv", "", "folders"]),
        st.text(alphabet="()[]^$.*+?\\d_,:a-z ", max_size=12),
    ),
    st.sampled_from(["name", "folders", "name:(", "name:^x", "name:(.+)_", "t.csv:id,id"]),
)


@fast
@given(labels_text | anything)
def test_any_labels_setting_parses_and_round_trips_or_is_refused(value):
    try:
        spec = parse_labels(value)
    except ParameterError as exc:
        assert "`labels`" in str(exc)
        return
    assert spec.kind in (FOLDERS, NAME, TABLE)
    if spec.kind == NAME:
        assert re.compile(spec.pattern).groups >= 1
    if spec.kind == TABLE:
        assert spec.table and (spec.columns is None or all(spec.columns))
    assert parse_labels(spec.text()) == spec


step_text = st.builds(
    lambda name, args: name + (("=" + ":".join(args)) if args else ""),
    st.sampled_from([*sorted(OPERATIONS), "blur", ""]),
    st.lists(
        st.one_of(number_text, st.sampled_from(["fit=pad", "3x3", "true", "a=b", "0x5"])),
        max_size=3,
    ),
)


@fast
@given(st.lists(step_text, max_size=4).map(",".join) | st.text(max_size=20))
def test_any_spec_text_parses_and_round_trips_or_is_one_spec_error(text):
    try:
        pipeline = Pipeline.parse(text)
    except SpecError as exc:
        assert isinstance(exc, ParameterError)
        return
    assert Pipeline.parse(pipeline.to_text()) == pipeline
    assert Pipeline.from_json(pipeline.to_json()) == pipeline


@fast
@given(st.text(max_size=40) | st.sampled_from(['{"steps": 3}', '{"steps": [1]}', "[]", "{}"]))
def test_any_pipeline_json_loads_or_is_one_spec_error(text):
    with contextlib.suppress(SpecError):
        Pipeline.from_json(text)


# ------------------------------------------------------------------ the Python API
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("params") / "in"
    make_classes(root, {"a": 4, "b": 4})
    return root


def _out(tmp: Path) -> Path:
    import uuid

    return tmp / uuid.uuid4().hex


JOB_ARGUMENTS = {
    dataset.verify: ["workers", "max_pixels", "engine", "report", "quarantine", "labels"],
    dataset.inspect: ["workers", "max_pixels", "thresholds", "labels"],
    dataset.split: [
        "ratios", "fixed", "kfold", "seed", "mode", "group", "near_threshold",
        "min_per_split", "overwrite", "dry_run", "workers", "labels",
    ],
    dataset.preprocess: [
        "ops", "fmt", "quality", "fast_decode", "overwrite", "workers", "max_pixels", "labels",
    ],
    dataset.augment: [
        "per_image", "balance", "seed", "quality", "overwrite", "workers", "labels",
    ],
}  # fmt: skip
CASES = [(job, name) for job, names in JOB_ARGUMENTS.items() for name in names]


@pytest.mark.slow
@pytest.mark.parametrize(("job", "name"), CASES, ids=[f"{j.__name__}-{n}" for j, n in CASES])
def test_every_argument_of_the_api_is_checked(job, name, tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    values = anything
    if name in ("report", "quarantine"):  # paths: only wrong types are of interest here
        values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats())
    elif name == "thresholds":
        values = anything | st.dictionaries(st.sampled_from(["blurry", "dark", "x"]), anything)
    elif name == "labels":
        values = anything | labels_text

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values)
    def check(value):
        needs_out = job in (dataset.split, dataset.preprocess, dataset.augment)
        args = (tiny, _out(tmp)) if needs_out else (tiny,)
        options = {"workers": 0} if name != "workers" else {}
        if job is dataset.preprocess and name != "ops":
            options["ops"] = "grayscale"
        if job is dataset.augment:
            options["preset"] = "light"
        try:
            job(*args, **options, **{name: value})
        except ParameterError as exc:
            assert f"`{name}`" in str(exc) or name in ("ops", "thresholds", "ratios", "fixed"), exc
        except TypeError as exc:  # a path argument of the wrong type: Python's own message
            assert name in ("report", "quarantine") and "path" in str(exc).lower(), exc

    if name == "engine":
        values = st.sampled_from([None, 3, "", "local ", "spark", True])  # never start Ray
        check = given(values)(check.hypothesis.inner_test)
    check()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["split", "IN", "OUT", "--seed", "-1"], "`seed` should be an integer in [0, 4294967295]"),
        (["split", "IN", "OUT", "--ratios", "nan,0.5,0.5"], "ratios"),
        (["verify", "IN", "--workers", "2.5"], "is not a valid integer"),
        (["verify", "IN", "--workers", "-1"], "`workers` should be an integer in [0, 512]"),
        (["augment", "IN", "OUT", "--seed", "4294967296"], "`seed` should be"),
        (["inspect", "IN", "--threshold", "dark=inf"], "`dark` should be a finite number"),
    ],
)
def test_the_cli_refuses_what_the_api_refuses(args, words, tiny, tmp_path):
    filled = [str(tiny) if a == "IN" else str(tmp_path / "o") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(cli, [*filled, "-q"])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not (tmp_path / "o").exists()
