"""Run evidence on disk: curves, confusion matrix, mistakes, augmented inputs, suspects and a
one-page HTML report that works offline (every image is a file in the run folder)."""

from __future__ import annotations

import csv
import functools
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvprep.io import atomic_write_bytes, write_image
from cvprep.json_text import dumps
from cvprep.preview import contact_sheet, write_thumbnail
from cvprep.training.run import FIGURES_FOLDER, REPORT_FILE, SUSPECTS_FILE, run_settings

if TYPE_CHECKING:
    from cvprep.training.plan import TrainPlan

MAX_MISTAKES = 24
THUMBNAIL = 160
MISTAKE_SIDE = 240  # photo and heatmap side by side, each this large
SUSPECT_COLUMNS = ["path", "class", "predicted", "probability", "probability_of_class"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def read_history(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
        for key in (rows[0].keys() if rows else [])
    }


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training vs validation."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if history.get(key):
                epochs = np.arange(1, len(history[key]) + 1)
                label = f"validation {metric}" if key.startswith("val_") else f"training {metric}"
                axis.plot(epochs, history[key], style, markersize=3, label=label)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    """Write a figure as PNG atomically, and free it."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """The confusion matrix with the class names on its axes, or their numbers (``#1`` is
    the first class) when no installed font has their characters (the HTML report lists
    the names, which a browser draws in any script)."""
    plt = _pyplot()
    values = np.asarray(matrix)
    labels, fonts = class_labels(classes)
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(values, cmap="Blues")
    axis.set_xticks(range(len(classes)), labels, rotation=45, ha="right", fontfamily=fonts)
    axis.set_yticks(range(len(classes)), labels, fontfamily=fonts)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    title_fonts = font_families([title])
    axis.set_title(title if title_fonts is not None else "confusion matrix", fontfamily=title_fonts)
    threshold = values.max() / 2 if values.size else 0
    for (row, col), count in np.ndenumerate(values):
        colour = "white" if count > threshold else "black"
        axis.text(col, row, str(count), ha="center", va="center", color=colour)
    _save(figure, path)


def class_labels(classes: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Axis labels for ``classes`` and the fonts to draw them with: the names when some
    installed fonts have every character, else ``#1``, ``#2``, ... in the default font
    (matplotlib would warn "Glyph missing" and draw boxes)."""
    fonts = font_families(classes)
    if fonts is None:
        return [f"#{index}" for index in range(1, len(classes) + 1)], None
    return list(classes), fonts


def font_families(texts: Sequence[str]) -> list[str] | None:
    """Font families, the default one first, that together have every character of
    ``texts`` (matplotlib falls back along the list glyph by glyph); None when the installed
    fonts lack some."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    missing = {ord(c) for text in texts for c in text if not c.isspace()} - _characters(default)
    families = [font_manager.get_font(default).family_name]
    for entry in font_manager.fontManager.ttflist:
        if not missing:
            break
        if entry.name.startswith("Last Resort"):  # a box for every character: not a glyph
            continue
        covered = missing & _characters(entry.fname)
        if covered:
            families.append(entry.name)
            missing -= covered
    return None if missing else families


@functools.cache
def _characters(font_file: str) -> frozenset[int]:
    from matplotlib import font_manager

    try:
        return frozenset(font_manager.get_font(font_file).get_charmap())
    except (OSError, RuntimeError):  # an unreadable font file has no glyphs for us
        return frozenset()


def write_suspects(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``suspects.csv``: training images the model contradicts (likely mislabeled first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SUSPECT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / SUSPECTS_FILE, buffer.getvalue().encode())
    return rows


def _mistake_figure(
    out: Path, index: int, prediction: Any, truth: str, explainer: Any
) -> str | None:
    """One mistake: the photo and, with an explainer, the heatmap of the (wrong) prediction
    beside it; None when the photo cannot be read any more."""
    folder = out / FIGURES_FOLDER / "mistakes"
    name = f"{index:03d}.jpg"
    side = MISTAKE_SIDE if explainer is not None else THUMBNAIL
    if not write_thumbnail(prediction.path, folder / name, side):
        return None
    filename = html.escape(Path(prediction.path).name)
    images = f'<img src="{FIGURES_FOLDER}/mistakes/{name}" alt="{filename}">'
    if explainer is not None:
        from cvprep.training.explain import write_overlay_thumbnail

        heatmap = f"{index:03d}_heatmap.jpg"
        if write_overlay_thumbnail(
            explainer, prediction.path, prediction.label, folder / heatmap, side
        ):
            images += (
                f'<img src="{FIGURES_FOLDER}/mistakes/{heatmap}" '
                f'alt="heatmap of {html.escape(prediction.label)} on {filename}">'
            )
    return (
        f'<figure class="mistake">{images}'
        f"<figcaption><b>{html.escape(truth)}</b> → {html.escape(prediction.label)} "
        f"({prediction.probability:.2f})<br><small>{filename}</small></figcaption></figure>"
    )


def _mistakes_html(out: Path, mistakes: list[tuple[Any, str]], explainer: Any = None) -> str:
    if not mistakes:
        return "<p>No misclassified test images.</p>"
    cells = [
        figure
        for index, (prediction, truth) in enumerate(mistakes[:MAX_MISTAKES])
        if (figure := _mistake_figure(out, index, prediction, truth, explainer)) is not None
    ]
    more = len(mistakes) - MAX_MISTAKES
    tail = f"<p>… and {more} more (see metrics.json).</p>" if more > 0 else ""
    return f'<div class="grid">{"".join(cells)}</div>{tail}'


def _suspects_html(suspects: list[dict[str, Any]]) -> str:
    if not suspects:
        return "<p>The model agrees with every training label.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(Path(s['path']).name)}</td><td>{html.escape(s['class'])}</td>"
        f"<td>{html.escape(s['predicted'])}</td><td>{s['probability']:.3f}</td></tr>"
        for s in suspects[:20]
    )
    return (
        f"<p>{len(suspects)} training image(s) the model contradicts; all in "
        f'<a href="{SUSPECTS_FILE}">{SUSPECTS_FILE}</a>.</p>'
        f"<table><tr><th>file</th><th>label</th><th>model says</th><th>probability</th></tr>"
        f"{rows}</table>"
    )


def _metrics_table(metrics: dict[str, Any]) -> str:
    """Per-class figures; the number column is how the confusion matrix names a class when
    no installed font draws its name."""
    rows = "".join(
        f"<tr><td>#{index}</td><td>{html.escape(cls)}</td><td>{m['precision']:.3f}</td>"
        f"<td>{m['recall']:.3f}</td><td>{m['f1-score']:.3f}</td><td>{int(m['support'])}</td></tr>"
        for index, (cls, m) in enumerate(metrics["per_class"].items(), start=1)
    )
    return (
        "<table><tr><th></th><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>images</th></tr>{rows}</table>"
    )


_HEATMAP_NOTE = (
    "; beside each photo, the heatmap of the wrong prediction (red: where the model found "
    "the most evidence for it)"
)

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}
img{max-width:100%}code{background:#f4f4f4;padding:2px 4px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;width:170px;font-size:13px}
.grid figure.mistake{width:auto;max-width:100%}.mistake img{margin-right:4px;vertical-align:top}"""


def write_run_report(
    plan: TrainPlan,
    metrics: dict[str, Any],
    *,
    history: dict[str, list[float]],
    mistakes: list[tuple[Any, str]],
    augmented: np.ndarray,
    suspects: list[dict[str, Any]],
    explainer: Any = None,
) -> None:
    """Figures under ``OUT/figures`` and ``OUT/report.html`` that shows them; with an
    ``explainer`` (:class:`cvprep.training.explain.Explainer`), each mistake beside the
    heatmap of its prediction."""
    out = plan.out
    figures = out / FIGURES_FOLDER
    figures.mkdir(exist_ok=True)
    plot_curves(history, figures / "curves.png")
    plot_confusion(
        metrics["confusion_matrix"],
        metrics["classes"],
        figures / "confusion_matrix.png",
        f"confusion matrix ({metrics.get('split', metrics['evaluated_on'])})",
    )
    write_image(
        figures / "augmented.png",
        contact_sheet(
            [(f"#{i + 1}", image) for i, image in enumerate(augmented)], tile=128, columns=8
        ),
    )
    atomic_write_bytes(
        out / REPORT_FILE, _page(plan, metrics, mistakes, suspects, explainer).encode()
    )


def _page(
    plan: TrainPlan,
    metrics: dict[str, Any],
    mistakes: list[tuple[Any, str]],
    suspects: list[dict[str, Any]],
    explainer: Any = None,
) -> str:
    out, config, validation = plan.out, plan.config, plan.validation
    preprocessing = plan.preprocessing.full_text or "none"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cvprep run: {html.escape(plan.out.name)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(config.model)} on {html.escape(config.data)}</h1>
<p>Accuracy on <b>{html.escape(str(metrics["evaluated_on"]))}</b>:
<b>{metrics["accuracy"]:.3f}</b>, balanced accuracy (the mean of the per-class recalls)
<b>{metrics["balanced_accuracy"]:.3f}</b> ({metrics["count"]} images); validation accuracy
{metrics.get("validation_accuracy", float("nan")):.3f} on {validation.images} images
from {html.escape(validation.source)}/; {metrics.get("epochs_run", "?")} epochs,
{metrics.get("seconds", 0):.0f} s. Preprocessing built into the model:
<code>{html.escape(preprocessing)}</code>, then resize ({html.escape(config.resize)}) to
{plan.size}×{plan.size}.</p>
<h2>Per-class metrics</h2>{_metrics_table(metrics)}
<h2>Learning curves</h2><img src="{FIGURES_FOLDER}/curves.png" alt="loss and accuracy curves">
<h2>Confusion matrix</h2>
<img src="{FIGURES_FOLDER}/confusion_matrix.png" alt="confusion matrix">
<h2>Misclassified test images</h2><p>Most confident mistakes first: true class → prediction
(probability){_HEATMAP_NOTE if explainer is not None else ""}.</p>
{_mistakes_html(out, mistakes, explainer)}
<h2>Training inputs after augmentation ({html.escape(str(config.augment))})</h2>
<img src="{FIGURES_FOLDER}/augmented.png" alt="augmented training images">
<h2>Suspect training labels</h2>{_suspects_html(suspects)}
<h2>Configuration</h2><pre>{html.escape(dumps(run_settings(plan)))}</pre>
</body></html>
"""
