"""The HTML page of ``inspect``: per issue, a count and thumbnails of the worst cases.

Built from the same findings as ``findings.csv``, with the pictures' bytes read from the
source (any kind: a folder, an archive). Thumbnails are small JPEGs in a folder next
to the page (``report_files/`` for ``report.html``), referenced by relative paths, so the page
works offline and can be moved together with its folder.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cvprep.dataset.label_check import describe_result
from cvprep.io import atomic_write_bytes
from cvprep.preview import write_thumbnail

if TYPE_CHECKING:
    from cvprep.dataset.inspect import Finding, InspectResult

SHOWN = 12  # worst cases shown per issue
THUMBNAIL = 150

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
h2{margin-top:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;font-size:12px}
.card img{display:block;max-width:150px;max-height:150px}.pair{display:flex;gap:4px}
.missing{width:150px;height:60px;background:#eee;display:flex;align-items:center;justify-content:center}"""


DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate", "label_conflict")


def shown(result: InspectResult) -> set[str]:
    """The names of the files the page shows (the worst of each issue, and their copies)."""
    names = set()
    for issue in result.counts:
        for finding in result.by_issue(issue)[:SHOWN]:
            names.add(finding.path)
            if finding.detail and finding.issue in DUPLICATE_KINDS:
                names.add(finding.detail)
    return names


def write_html(path: Path, result: InspectResult, pictures: Mapping[str, bytes]) -> None:
    """Write the page and its thumbnail folder (replacing an earlier one); ``pictures`` holds
    the bytes of the files :func:`shown` names."""
    assets = path.with_name(path.stem + "_files")
    shutil.rmtree(assets, ignore_errors=True)
    assets.mkdir(parents=True)
    made: dict[str, str] = {}

    def picture(relative: str) -> str:
        if relative not in made:
            name = f"{len(made):05d}.jpg"
            raw = pictures.get(relative)
            made[relative] = (
                name if raw is not None and write_thumbnail(raw, assets / name, THUMBNAIL) else ""
            )
        if not made[relative]:
            return f'<div class="missing">{html.escape(Path(relative).name)}</div>'
        return f'<img src="{assets.name}/{made[relative]}" alt="{html.escape(relative)}">'

    sections = []
    for issue, count in sorted(result.counts.items(), key=lambda item: -item[1]):
        cards = [_card(f, picture) for f in result.by_issue(issue)[:SHOWN]]
        more = f"<p>… and {count - SHOWN} more in the CSV.</p>" if count > SHOWN else ""
        sections.append(
            f'<h2 id="{issue}">{html.escape(issue)}: {count}</h2>'
            f'<div class="grid">{"".join(cards)}</div>{more}'
        )
    summary = "".join(
        f'<tr><td><a href="#{i}">{html.escape(i)}</a></td><td>{n}</td></tr>'
        for i, n in result.counts.items()
    )
    labels = (
        f"<p>{html.escape(describe_result(result.label_check))}.</p>" if result.label_check else ""
    )
    limits = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in result.thresholds.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cvprep inspect: {html.escape(str(result.source))}</title>
<style>{STYLE}</style></head><body>
<h1>Dataset audit of {html.escape(str(result.source))}</h1>
<p>{result.files} files, {len(result.findings)} findings. Scores are in [0, 1], higher is worse;
the worst {SHOWN} of each issue are shown.</p>
<table><tr><th>issue</th><th>files</th></tr>{summary}</table>
{labels}
{"".join(sections) or "<p>Nothing found.</p>"}
<h2>Thresholds used</h2><table>{limits}</table>
</body></html>
"""
    atomic_write_bytes(path, page.encode())


def _card(finding: Finding, picture: Callable[[str], str]) -> str:
    images = picture(finding.path)
    if finding.detail and finding.issue in DUPLICATE_KINDS:
        images = f'<div class="pair">{images}{picture(finding.detail)}</div>'
        caption = f"{html.escape(finding.path)}<br>= {html.escape(finding.detail)}"
    else:
        caption = f"{html.escape(finding.path)}<br>{html.escape(finding.detail)}"
    return f'<div class="card">{images}{caption}<br>score {finding.score:.3f}</div>'
