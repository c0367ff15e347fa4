"""cvprep inspect: every issue kind planted in generated and real-photo trees is found,
untouched photos are rarely flagged, the CSV/JSON/HTML outputs, split --exclude."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import cvprep
from cvprep import dataset
from cvprep.cli import cli
from cvprep.dataset.inspect import DUPLICATE_KINDS, QUALITY_KINDS
from tests.conftest import ROOT, jpeg_bytes, tree_snapshot

DEV_PHOTOS = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev" / "train"
CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


def crop_aspect(image: np.ndarray, ratio: float) -> np.ndarray:
    height, width = image.shape[:2]
    return (
        image[: max(1, int(width / ratio))]
        if ratio > 1
        else image[:, : max(1, int(height * ratio))]
    )


PLANTS = {
    "blurry": lambda i: cv2.GaussianBlur(i, (0, 0), 3),
    "dark": lambda i: (i * 0.3).astype(np.uint8),
    "bright": lambda i: (0.35 * i + 0.65 * 255).astype(np.uint8),
    "low_information": lambda i: np.full_like(i, (110, 120, 90)),
    "odd_aspect_ratio": lambda i: crop_aspect(i, 4.0),
    "odd_size": lambda i: cv2.resize(
        i, (i.shape[1] // 6, i.shape[0] // 6), interpolation=cv2.INTER_AREA
    ),
    "grayscale": lambda i: cv2.cvtColor(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
}
# Exposure changes that keep part of the range (caught by the crushed-shadow and
# blown-highlight rules): planted name → (issue, transform).
EXPOSURE_PLANTS = {
    "gamma3": ("dark", lambda i: (255 * (i / 255.0) ** 3).astype(np.uint8)),
    "times2_5": ("bright", lambda i: np.clip(i * 2.5, 0, 255).astype(np.uint8)),
}


def plant(root: Path, source_class: str, other_class: str) -> dict[str, str]:
    """Plant every issue kind among the images of ``root``; returns {planted file: issue}."""
    originals = sorted((root / source_class).iterdir())
    planted: dict[str, str] = {}
    for index, (issue, transform) in enumerate(PLANTS.items()):
        image = cvprep.read_image(originals[index])
        name = f"{source_class}/planted_{issue}.jpg"
        (root / name).write_bytes(jpeg_bytes(transform(image)))
        planted[name] = issue
    for index, (label, (issue, transform)) in enumerate(EXPOSURE_PLANTS.items(), len(PLANTS)):
        name = f"{source_class}/planted_{label}.jpg"
        (root / name).write_bytes(jpeg_bytes(transform(cvprep.read_image(originals[index]))))
        planted[name] = issue
    copy = originals[-1]
    (root / source_class / "planted_copy.jpg").write_bytes(copy.read_bytes())
    planted[f"{source_class}/planted_copy.jpg"] = "exact_duplicate"
    near = cvprep.read_image(originals[-2])
    near = cv2.resize(near, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    (root / source_class / "planted_near.jpg").write_bytes(jpeg_bytes(near))
    planted[f"{source_class}/planted_near.jpg"] = "near_duplicate"
    (root / other_class / "planted_conflict.jpg").write_bytes(originals[-3].read_bytes())
    planted[f"{other_class}/planted_conflict.jpg"] = "label_conflict"
    planted[str(originals[-3].relative_to(root))] = "label_conflict"  # both sides are listed
    (root / source_class / "planted_broken.jpg").write_bytes(jpeg_bytes(near)[:2000])
    planted[f"{source_class}/planted_broken.jpg"] = "truncated"
    return planted


def issues_by_file(result: dataset.InspectResult) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in result.findings:
        found.setdefault(finding.path, set()).add(finding.issue)
    return found


@pytest.fixture
def shapes_tree(tmp_path) -> tuple[Path, dict[str, str]]:
    root = dataset.make_shapes_dataset(
        tmp_path / "shapes", per_class=30, size=160, extension=".jpg"
    )
    return root, plant(root, "round", "angular")


def test_every_planted_kind_is_found_in_generated_images(shapes_tree):
    root, planted = shapes_tree
    before = tree_snapshot(root)
    result = dataset.inspect(root, workers=2)
    found = issues_by_file(result)
    for path, issue in planted.items():
        assert issue in found.get(path, set()), (path, issue, found.get(path))
    untouched = [p for p in found if "planted" not in p and p not in planted]
    assert len(untouched) <= 3, {p: found[p] for p in untouched}
    assert tree_snapshot(root) == before  # inspect never writes into its input


@pytest.mark.skipif(not DEV_PHOTOS.is_dir(), reason="the dev photos in ../shared are not present")
def test_every_planted_kind_is_found_in_real_photos(tmp_path):
    root = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for source in sorted((DEV_PHOTOS / cls).glob("*.jpg"))[:40]:
            shutil.copyfile(source, root / cls / source.name)
    planted = plant(root, "cat", "dog")
    result = dataset.inspect(root, workers=2)
    found = issues_by_file(result)
    for path, issue in planted.items():
        assert issue in found.get(path, set()), (path, issue, found.get(path))
    quality = [p for p, issues in found.items() if p not in planted and issues & set(QUALITY_KINDS)]
    assert len(quality) <= 4  # untouched real photos: at most 5 % flagged (measured: README)


def test_crushed_shadows_and_blown_highlights_count_as_dark_and_bright():
    # Photos that keep a few highlights (shadows) escape the percentile rules: a median far
    # below (above) the dataset's with the shadows crushed (highlights blown) still counts.
    from dataclasses import replace

    from cvprep.dataset.inspect import FileInfo, _limits, _quality_findings
    from cvprep.dataset.quality import measure

    rng = np.random.default_rng(0)
    typical = measure(cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), np.uint8), (0, 0), 1))
    typical = replace(typical, luma_low=29.0, luma_median=113.0, luma_high=213.0)
    limits, medians = _limits([typical] * 20, {})

    def issues(**levels: float) -> set[str]:
        info = FileInfo("a/x.jpg", "a", stats=replace(typical, **levels))
        return {finding.issue for finding in _quality_findings(info, limits, medians)}

    assert issues() == set()
    assert "dark" in issues(luma_low=0.0, luma_median=55.0, luma_high=240.0)  # crushed
    assert "dark" not in issues(luma_low=6.0, luma_median=55.0, luma_high=240.0)  # just dim
    assert "bright" in issues(luma_low=70.0, luma_median=210.0, luma_high=255.0)  # blown
    assert "bright" not in issues(luma_low=70.0, luma_median=210.0, luma_high=240.0)
    off = _limits([typical] * 20, {"dark": 0.0, "bright": 0.0})[0]
    info = FileInfo("a/x.jpg", "a", stats=replace(typical, luma_low=0.0, luma_median=40.0))
    assert not _quality_findings(info, off, medians)


def test_findings_csv_json_and_thresholds(shapes_tree, tmp_path):
    root, _ = shapes_tree
    report = tmp_path / "findings.csv"
    result = CliRunner().invoke(
        cli, ["inspect", str(root), "--report", str(report), "--json", "-w", "2"]
    )
    assert result.exit_code == 1  # something was found
    rows = json.loads(result.stdout)
    with report.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "class", "issue", "score", "detail"]
        from_csv = list(reader)
    assert [r["path"] for r in rows] == [r["path"] for r in from_csv]
    assert {r["issue"] for r in rows} >= set(DUPLICATE_KINDS) | set(QUALITY_KINDS)
    conflict = next(r for r in rows if r["path"] == "angular/planted_conflict.jpg")
    assert conflict["class"] == "angular" and conflict["detail"].startswith("round/")
    for issue in QUALITY_KINDS:  # scores are sortable within a kind: in [0, 1]
        assert all(0 <= r["score"] <= 1 for r in rows if r["issue"] == issue)
    relaxed = dataset.inspect(root, thresholds={"blurry": 0.0, "odd_size": 0.0}, workers=2)
    assert "blurry" not in relaxed.counts and "odd_size" not in relaxed.counts
    assert "bright" in relaxed.counts and "odd_aspect_ratio" in relaxed.counts
    # 0 turns every quality rule off, the "above" rules (bright, odd_aspect_ratio) included.
    off = dataset.inspect(root, thresholds=dict.fromkeys(QUALITY_KINDS, 0.0), workers=2)
    assert not set(off.counts) & set(QUALITY_KINDS), off.counts
    bad = CliRunner().invoke(cli, ["inspect", str(root), "--threshold", "sharpness=3"])
    assert bad.exit_code == 2 and "blurry" in bad.output


def test_clean_folder_exits_zero_and_empty_folder_is_an_error(tmp_path):
    clean = dataset.make_shapes_dataset(tmp_path / "clean", per_class=6, size=96)
    result = CliRunner().invoke(cli, ["inspect", str(clean), "-w", "0"])
    assert result.exit_code == 0, result.output
    (tmp_path / "empty" / "a").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no image files" in result.output


def test_different_pictures_on_one_background_are_not_duplicates():
    # Two bundled sample images share a background crop but show different shapes: their
    # perceptual hashes are within 6 bits, their pixel signatures are not.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("angular/angular_166.jpg", "round/round_019.jpg"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / "sample_images" / "shapes" / name, root / name)
        result = dataset.inspect(root, workers=0)
        assert not any(f.issue in DUPLICATE_KINDS for f in result.findings)


def test_split_excludes_what_inspect_found(shapes_tree, tmp_path):
    root, _ = shapes_tree
    report = tmp_path / "findings.csv"
    dataset.inspect(root, report=report, workers=2)
    out = tmp_path / "split"
    result = dataset.split(root, out, exclude=f"{report}:exact_duplicate,near_duplicate", workers=2)
    excluded = result.to_dict()["excluded"]
    # The copies, and only planted files: a darkened, blurred or grayscale copy of a photo
    # still in the set is a near duplicate of it too.
    assert {"round/planted_copy.jpg", "round/planted_near.jpg"} <= set(excluded)
    assert all("planted" in path for path in excluded)
    assert not list(out.rglob("planted_copy.jpg")) and not list(out.rglob("planted_near.jpg"))
    # Label conflicts are only ever left out together, when asked: both copies stay here.
    assert list(out.rglob("planted_conflict.jpg"))


def test_html_report_shows_the_worst_cases_side_by_side(shapes_tree, tmp_path):
    root, _ = shapes_tree
    page = tmp_path / "report.html"
    result = dataset.inspect(root, html=page, workers=2)
    text = page.read_text()
    for issue in result.counts:
        assert f'id="{issue}"' in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert sources and all((tmp_path / s).is_file() for s in sources)
    assert text.count('class="pair"') >= 3  # duplicates and conflicts: both pictures


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium) installed")
def test_html_report_renders_in_a_real_browser(shapes_tree, tmp_path):
    root, _ = shapes_tree
    page = tmp_path / "report.html"
    result = dataset.inspect(root, html=page, workers=2)
    probe = tmp_path / "probe.html"  # the same page, plus a script that reports what loaded
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => { const images = [...document.images];"
            " document.title = 'RESULT' + JSON.stringify({images: images.length, sections:"
            " document.querySelectorAll('h2').length, broken: images.filter(i => !(i.complete"
            " && i.naturalWidth > 0)).map(i => i.getAttribute('src'))}); });</script></body>",
        )
    )
    profile = tmp_path / "profile"
    dump = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"<title>RESULT(.*?)</title>", dump.stdout)
    assert match, dump.stderr[-2000:]
    loaded = json.loads(match.group(1).replace("&quot;", '"'))
    assert loaded["broken"] == [] and loaded["images"] >= len(result.counts)
    assert loaded["sections"] == len(result.counts) + 1  # one per issue, and the thresholds
