"""The run folder without training: damaged files named as such, JSON that is always valid,
report figures for class names in any script, resuming from damaged backups."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cvprep.cli import cli
from cvprep.cli.common import emit_json
from cvprep.errors import CvprepError
from cvprep.json_text import dumps
from cvprep.training import load_run
from cvprep.training.run import write_json


def strict_json(text: str) -> object:
    """Parse as any JSON parser would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_always_valid(tmp_path, capsys):
    data = {"probability": float("nan"), "scores": [np.float32("inf"), 0.5], "path": tmp_path}
    expected = {"probability": None, "scores": [None, 0.5], "path": str(tmp_path)}
    write_json(tmp_path / "metrics.json", data)
    assert strict_json((tmp_path / "metrics.json").read_text()) == expected
    emit_json([data])
    assert strict_json(capsys.readouterr().out) == [expected]
    assert strict_json(dumps({"x": -float("inf")})) == {"x": None}


def fake_run(folder: Path, model: bytes = b"PK\x05\x06" + bytes(18)) -> Path:
    """A run folder with valid labels and settings and ``model`` as model.keras (by default an
    empty zip archive: a zip, but no Keras model)."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(model)
    (folder / "labels.json").write_text(json.dumps(["cat", "dog"]))
    (folder / "config.json").write_text(json.dumps({"data": "gone", "model": "cnn"}))
    return folder


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda run: (run / "model.keras").write_text("not a model"), "not a Keras model file"),
        (lambda run: None, "cannot be loaded as a Keras model"),
        (lambda run: (run / "labels.json").unlink(), "labels.json is missing"),
        (lambda run: (run / "labels.json").write_text("[1, 2]"), "should list two or more"),
        (lambda run: (run / "config.json").write_text("{oops"), "config.json is not valid JSON"),
        (lambda run: (run / "config.json").write_text("[]"), "should hold an object"),
    ],
)
def test_a_damaged_run_folder_names_the_file_and_what_is_wrong(damage, words, tmp_path):
    run = fake_run(tmp_path / "run")
    damage(run)
    with pytest.raises(CvprepError, match=words):
        load_run(run)
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG")
    for args in (["predict", str(run), str(image)], ["export", str(run)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and words in result.output, result.output
        assert "File not found" not in result.output and result.exception is not None
        assert isinstance(result.exception, SystemExit)  # a message, not a traceback


@pytest.mark.parametrize("classes", [["猫", "狗"], ["고양이", "개", "새"], ["cat", "chien"]])
def test_report_figures_draw_class_names_of_any_script_without_warnings(classes, tmp_path):
    from cvprep.training import report

    matrix = np.arange(len(classes) ** 2).reshape(len(classes), -1).tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.plot_confusion(matrix, classes, tmp_path / "cm.png", "confusion matrix (测试)")
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "cm.png").read_bytes().startswith(b"\x89PNG")
    labels, fonts = report.class_labels(classes)
    if fonts is None:  # no installed font has the characters: numbers, named in the HTML
        assert labels == [f"#{i}" for i in range(1, len(classes) + 1)]
    else:
        assert labels == classes
    metrics = {c: {"precision": 1, "recall": 1, "f1-score": 1, "support": 2} for c in classes}
    table = report._metrics_table({"per_class": metrics})
    assert all(f"<td>#{i}</td><td>{c}</td>" in table for i, c in enumerate(classes, start=1))


def test_a_font_that_has_the_glyphs_is_used_when_installed(monkeypatch):
    from matplotlib import font_manager

    from cvprep.training import report

    default = font_manager.findfont(font_manager.FontProperties())
    cjk = font_manager.FontEntry(fname="/fonts/cjk.ttf", name="Some CJK Sans")
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [cjk])
    real = report._characters

    def characters(path: str) -> frozenset[int]:
        return frozenset(map(ord, "猫狗")) if path == cjk.fname else real(path)

    monkeypatch.setattr(report, "_characters", characters)
    assert report.font_families(["猫", "狗 cat"])[1:] == ["Some CJK Sans"]
    assert report.font_families(["猫", "새"]) is None
    assert report.font_families(["cat"]) == [font_manager.get_font(default).family_name]


def test_a_zip_that_is_not_a_keras_model(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    run = fake_run(tmp_path / "run", buffer.getvalue())
    with pytest.raises(CvprepError, match=r"model\.keras cannot be loaded as a Keras model"):
        load_run(run)
