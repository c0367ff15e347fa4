"""The pipeline spec: parsing, canonical text, JSON round trips and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvprep import Pipeline, SpecError, ops
from cvprep.pipeline import OPERATIONS, make_step
from tests.conftest import load_photo

ISSUE_SPEC = "resize=224x224,grayscale,equalize,gaussian_blur=5,canny=100:200,rotate=15"


def test_issue_spec_round_trips_to_identical_text():
    pipeline = Pipeline.parse(ISSUE_SPEC)
    assert pipeline.to_text() == ISSUE_SPEC
    again = Pipeline.from_json(pipeline.to_json())
    assert again == pipeline and again.to_text() == ISSUE_SPEC


def test_apply_equals_calling_the_ops():
    photo = load_photo("chelsea")
    pipeline = Pipeline.parse(
        "resize=120x160:fit=crop,equalize,gaussian_blur=0:sigma=1.5,"
        "median_blur=5,rotate=-20:expand=true"
    )
    expected = ops.rotate(
        ops.median_blur(
            ops.gaussian_blur(
                ops.equalize_hist(ops.resize(photo, (120, 160), fit="crop")), 0, sigma=1.5
            ),
            5,
        ),
        -20,
        expand=True,
    )
    np.testing.assert_array_equal(pipeline.apply(photo), expected)


def test_keywords_and_defaults_are_canonical():
    assert Pipeline.parse("median_blur").to_text() == "median_blur=3"
    assert Pipeline.parse("resize=64:interpolation=area").to_text() == "resize=64x64"
    assert (
        Pipeline.parse(" canny = 1:2 : l2_gradient=YES ").to_text() == "canny=1:2:l2_gradient=true"
    )
    assert Pipeline.parse("rotate=10:fill=255/0/0").steps[0].params["fill"] == (255, 0, 0)
    assert Pipeline.parse("") == Pipeline()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("resize=224x224,gaussian_blur=4", r"step 2 'gaussian_blur=4'.*`ksize` should be odd"),
        ("blur=3", "unknown operation 'blur'"),
        ("resize=abc", "HEIGHTxWIDTH"),
        ("resize=10x10:zoom=2", "no parameter 'zoom'"),
        ("median_blur=3:5", "too many values"),
        ("rotate", "syntax: rotate=ANGLE"),
        ("canny=1:2:aperture=4", "`aperture`"),
        ("resize=10x10,,equalize", "step 2 .* empty"),
        ("canny=1:2:low=3", "given twice"),
        ("grayscale=keep_channels=maybe", "true or false"),
    ],
)
def test_bad_specs_point_at_the_step(spec, match):
    with pytest.raises(SpecError, match=match):
        Pipeline.parse(spec)


def test_bad_json_points_at_the_step():
    with pytest.raises(SpecError, match="step 1"):
        Pipeline.from_dict({"steps": [{"op": "median_blur", "params": {"ksize": 4}}]})


def test_registry_is_complete():
    """Every operation has a function, a validator, a layer, an example and a parity case."""
    from cvprep import keras_layers
    from tests.test_layers import PARITY_CASES

    for name, op in OPERATIONS.items():
        assert callable(op.function) and callable(op.check)
        assert hasattr(keras_layers, op.layer), name
        assert Pipeline.parse(op.example).steps[0].name == name
        assert any(case.split(",")[-1].split("=")[0] == name for case in PARITY_CASES), name


# ------------------------------------------------------------------ round-trip property
fills = st.one_of(st.integers(0, 255), st.tuples(*[st.integers(0, 255)] * 3))
finite = st.floats(0, 500, allow_nan=False).map(lambda v: round(v, 3))
steps = st.one_of(
    st.builds(
        lambda s, i, f, fill: make_step("resize", size=s, interpolation=i, fit=f, fill=fill),
        st.tuples(st.integers(1, 999), st.integers(1, 999)),
        st.sampled_from(list(ops.INTERPOLATIONS)),
        st.sampled_from(ops.FIT_MODES),
        fills,
    ),
    st.builds(lambda k: make_step("grayscale", keep_channels=k), st.booleans()),
    st.just(make_step("equalize")),
    st.builds(
        lambda c, g: make_step("clahe", clip_limit=c, tile_grid=g),
        finite.filter(lambda v: v > 0),
        st.tuples(st.integers(1, 16), st.integers(1, 16)),
    ),
    st.builds(
        lambda k, s: make_step("gaussian_blur", ksize=k, sigma=s),
        st.sampled_from([1, 3, 5, 7, 31]),
        finite,
    ),
    st.builds(lambda k: make_step("median_blur", ksize=k), st.sampled_from([1, 3, 5, 9])),
    st.builds(
        lambda lo, hi, a, l2: make_step(
            "canny", low=min(lo, hi), high=max(lo, hi), aperture=a, l2_gradient=l2
        ),
        finite,
        finite,
        st.sampled_from([3, 5, 7]),
        st.booleans(),
    ),
    st.builds(
        lambda a, e, b, fill: make_step("rotate", angle=a, expand=e, border=b, fill=fill),
        st.floats(-720, 720, allow_nan=False),
        st.booleans(),
        st.sampled_from(list(ops.BORDERS)),
        fills,
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=6))
def test_text_and_json_round_trip(step_list):
    pipeline = Pipeline(step_list)
    text = pipeline.to_text()
    assert Pipeline.parse(text) == pipeline
    assert Pipeline.parse(text).to_text() == text
    assert Pipeline.from_json(pipeline.to_json()) == pipeline
