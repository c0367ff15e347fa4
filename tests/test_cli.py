"""The CLI skeleton through Click's CliRunner: help, version, ops, preview."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import cvprep
from cvprep.cli import cli
from cvprep.pipeline import OPERATIONS
from tests.conftest import PHOTOS


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_and_version(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "cvprep demo" in result.output
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and cvprep.__version__ in result.output


def test_every_command_has_help_with_an_example(runner):
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in (command.help or ""), f"{name} --help has no example"


def test_ops_lists_every_operation(runner):
    result = runner.invoke(cli, ["ops"])
    assert result.exit_code == 0
    for name, op in OPERATIONS.items():
        assert name in result.output and op.syntax() in result.output
    listed = json.loads(runner.invoke(cli, ["ops", "--json"]).output)
    assert [entry["name"] for entry in listed] == list(OPERATIONS)


def test_preview_writes_a_labelled_sheet(runner, tmp_path):
    out = tmp_path / "sheet.png"
    result = runner.invoke(
        cli,
        [
            "preview",
            str(PHOTOS[0]),
            "--ops",
            "resize=64x64,grayscale,canny=50:150",
            "-o",
            str(out),
            "--tile",
            "64",
            "--columns",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    sheet = cvprep.read_image(out)
    assert sheet.shape[1] == 2 * (64 + 4)  # two columns of 64-pixel cells with gaps
    assert sheet.shape[0] == 2 * (64 + 28 + 4)  # four panels in two rows, with label bars


def test_preview_bad_spec_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(
        cli, ["preview", str(PHOTOS[0]), "--ops", "gaussian_blur=4", "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2
    assert "ksize" in result.output and not (tmp_path / "x.png").exists()


def test_preview_unreadable_image_names_it(runner, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    result = runner.invoke(cli, ["preview", str(bad), "--ops", "grayscale"])
    assert result.exit_code == 1 and "bad.jpg" in result.output
