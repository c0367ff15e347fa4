"""Run evidence on disk: learning curves, confusion matrix and a one-page HTML report."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np


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
                axis.plot(
                    epochs,
                    history[key],
                    style,
                    label=key.replace("val_", "validation ")
                    if key.startswith("val_")
                    else f"training {key}",
                )
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    values = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(values, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    threshold = values.max() / 2 if values.size else 0
    for (row, col), count in np.ndenumerate(values):
        axis.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(cls)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1-score']:.3f}</td><td>{int(m['support'])}</td></tr>"
        for cls, m in metrics["per_class"].items()
    )
    return (
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>images</th></tr>{rows}</table>"
    )


def write_run_report(out: Path, config: Any, metrics: dict[str, Any]) -> None:
    """curves.png, confusion_matrix.png and report.html in the run folder."""
    plot_curves(read_history(out / "history.csv"), out / "curves.png")
    plot_confusion(
        metrics["confusion_matrix"],
        metrics["classes"],
        out / "confusion_matrix.png",
        f"confusion matrix ({metrics['evaluated_on']})",
    )
    settings = json.loads((out / "config.json").read_text())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cvprep run: {html.escape(out.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px}}
img{{max-width:100%}}code{{background:#f4f4f4;padding:2px 4px}}</style></head><body>
<h1>{html.escape(config.model)} on {html.escape(config.data)}</h1>
<p>Accuracy on <b>{html.escape(str(metrics["evaluated_on"]))}</b>:
<b>{metrics["accuracy"]:.3f}</b> ({metrics["count"]} images, {metrics["epochs_run"]} epochs).
Preprocessing built into the model: <code>{html.escape(settings.get("data_spec") or "")}
{html.escape(config.ops)}</code> then resize to {config.size}×{config.size}.</p>
<h2>Per-class metrics</h2>{_metrics_table(metrics)}
<h2>Learning curves</h2><img src="curves.png" alt="loss and accuracy curves">
<h2>Confusion matrix</h2><img src="confusion_matrix.png" alt="confusion matrix">
<h2>Configuration</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre>
</body></html>
"""
    (out / "report.html").write_text(page)
