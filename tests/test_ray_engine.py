"""The Ray engine gives the same outputs and rejects as the local engine."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cvprep.cli import cli
from tests.conftest import make_messy_folder, tree_snapshot

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_matches_the_local_engine(tmp_path, local_ray):
    source = tmp_path / "in"
    make_messy_folder(source)
    before = tree_snapshot(source)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        result = CliRunner().invoke(
            cli,
            [
                "preprocess",
                str(source),
                str(out),
                "--ops",
                "resize=40x40:fit=pad,equalize,median_blur=3",
                "--engine",
                engine,
                "--workers",
                "2",
                "--json",
            ],
        )
        assert result.exit_code == 1, result.output  # the messy folder has rejects
        runs[engine] = json.loads(result.stdout)
        (out / "cvprep.json").unlink()  # holds a timestamp
    assert tree_snapshot(tmp_path / "ray") == tree_snapshot(tmp_path / "local")  # byte-identical
    assert (
        runs["ray"]["total"] == runs["local"]["total"] == {"ok": 12, "skipped": 0, "rejected": 10}
    )
    rejects = {
        e: sorted((r["path"], r["kind"], r["reason"]) for r in runs[e]["rejected"]) for e in runs
    }
    assert rejects["ray"] == rejects["local"]
    verified = {}
    for engine in ("local", "ray"):
        result = CliRunner().invoke(cli, ["verify", str(source), "--engine", engine, "--json"])
        verified[engine] = sorted(
            (r["path"], r["kind"]) for r in json.loads(result.stdout)["rejected"]
        )
    assert verified["ray"] == verified["local"] and len(verified["ray"]) == 10
    assert tree_snapshot(source) == before


def test_inspect_and_split_on_ray_match_the_local_engine(tmp_path, local_ray):
    from cvprep import dataset

    source = tmp_path / "in"
    make_messy_folder(source)
    photo = source / "cats" / "plain.jpg"
    (source / "dogs" / "same_as_a_cat.jpg").write_bytes(photo.read_bytes())
    local = dataset.inspect(source, workers=2)
    on_ray = dataset.inspect(source, workers=2, engine="ray")
    assert on_ray.rows() == local.rows()
    assert {"label_conflict", "truncated", "too_large"} <= set(local.counts)
    split_local = dataset.split(source, tmp_path / "local", seed=3, workers=2)
    split_ray = dataset.split(source, tmp_path / "ray", seed=3, workers=2, engine="ray")
    assert split_ray.rows == split_local.rows
    assert tree_snapshot(tmp_path / "ray" / "train") == tree_snapshot(tmp_path / "local" / "train")


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_ray_reads_an_archive_like_the_local_engine(tmp_path, local_ray, suffix):
    """Ray's workers open the zip themselves; a compressed tar's bytes come from the parent."""
    from cvprep import dataset
    from tests.test_sources import tarred, zipped

    source = tmp_path / "in"
    make_messy_folder(source)
    files = {f"photos/{p.relative_to(source)}": p.read_bytes() for p in source.rglob("*.*")}
    archive = (zipped if suffix == ".zip" else tarred)(tmp_path / f"photos{suffix}", files)
    before = archive.read_bytes()
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        result = dataset.preprocess(archive, out, "resize=24x24", engine=engine, workers=2)
        verified = dataset.verify(archive, engine=engine, workers=2)
        runs[engine] = (
            sorted((r.path, r.status, r.kind) for r in result.summary.rejected),
            sorted((r.path, r.status, r.kind) for r in verified.results),
        )
        (out / "cvprep.json").unlink()
    assert runs["ray"] == runs["local"]
    assert len(runs["local"][0]) == 10 and runs["local"][0][0][0].startswith(f"photos{suffix}:")
    assert tree_snapshot(tmp_path / "ray") == tree_snapshot(tmp_path / "local")
    assert archive.read_bytes() == before
