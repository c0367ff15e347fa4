"""Faults every command that writes must survive: killed at random points (the re-run
finishes and the output is what an uninterrupted run makes), a read-only output folder, a
full disk, a file where a folder should be. Nothing is lost, no file is in two splits, no
partial file stays, and the CLI says what happened in one line (no traceback).

Read-only folders are made the way users meet them: as a user without write permission
(this suite runs the commands as ``nobody`` when it runs as root) and as a read-only mount.
Tests that need root (mounts) or ``setpriv`` skip cleanly without them.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cvprep
from tests.conftest import ROOT, tree_snapshot
from tests.test_dataset_cli import make_classes

pytestmark = pytest.mark.slow

IS_ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
COMMANDS = {
    "split": ["split", "{in}", "{out}", "--seed", "3"],
    "preprocess": ["preprocess", "{in}", "{out}", "--ops", "resize=64x64,gaussian_blur=5"],
    "augment": ["augment", "{in}", "{out}", "--preset", "heavy", "--per-image", "2"],
}


def cvprep_command(args: list[str], **paths: Path) -> list[str]:
    filled = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    return [sys.executable, "-m", "cvprep.cli", *filled, "--quiet"]


def run(command: list[str], *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if as_nobody:
        env.update(HOME="/tmp", MPLCONFIGDIR="/tmp")
        command = [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two classes of photo-like PNGs, big enough that the jobs take a moment."""
    root = tmp_path_factory.mktemp("faults") / "photos"
    make_classes(root, {"cat": 60, "dog": 40})
    return root


@contextlib.contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder every user can read (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="cvprep-faults-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ------------------------------------------------------------------ killed at random points
def output_files(out: Path) -> list[Path]:
    """The visible files of an output (not its temporary ``.part`` files or lock)."""
    return [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]


def kill_after(command: list[str], out: Path, files: int) -> None:
    """Start ``command`` and SIGKILL its whole process group once ``out`` holds ``files``
    files (or when it ends by itself)."""
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 120
    while child.poll() is None and time.time() < deadline:
        if out.is_dir() and len(output_files(out)) >= files:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def comparable(tree: dict[str, bytes]) -> dict[str, bytes]:
    """A tree without the files that hold times or decisions' wording (run record, reasons)."""
    return {k: v for k, v in tree.items() if k not in ("cvprep.json", "manifest.csv")}


@pytest.mark.parametrize("job", sorted(COMMANDS))
def test_a_job_killed_at_random_points_resumes_to_the_uninterrupted_output(photos, tmp_path, job):
    clean = tmp_path / "clean"
    assert run(cvprep_command(COMMANDS[job], **{"in": photos, "out": clean})).returncode == 0
    expected = comparable(tree_snapshot(clean))
    rng = random.Random(job)  # the kill points: random, but the same on every run
    out = tmp_path / "out"
    command = cvprep_command(COMMANDS[job], **{"in": photos, "out": out})
    for _ in range(2):  # killed twice before it may finish
        kill_after(command, out, rng.randrange(1, len(expected)))
        for path in output_files(out):  # what is visible is whole
            if path.suffix == ".png":
                cvprep.read_image(path)
    finished = run(command)
    assert finished.returncode == 0, finished.stderr
    assert comparable(tree_snapshot(out)) == expected
    assert not list(out.rglob("*.part"))


@pytest.mark.parametrize(("suffix", "kind"), [(".zip", "zip"), (".tar.gz", "gztar")])
def test_a_split_from_an_archive_killed_midway_resumes_to_the_same_output(
    photos, tmp_path, suffix, kind
):
    archive = Path(shutil.make_archive(str(tmp_path / "photos"), kind, photos))
    assert archive.name == f"photos{suffix}"
    before = archive.read_bytes()
    clean = tmp_path / "clean"
    assert run(cvprep_command(COMMANDS["split"], **{"in": archive, "out": clean})).returncode == 0
    expected = comparable(tree_snapshot(clean))
    rng = random.Random(suffix)
    out = tmp_path / "out"
    command = cvprep_command(COMMANDS["split"], **{"in": archive, "out": out})
    for _ in range(2):
        kill_after(command, out, rng.randrange(1, len(expected)))
    finished = run(command)
    assert finished.returncode == 0, finished.stderr
    assert comparable(tree_snapshot(out)) == expected
    assert not list(out.rglob("*.part")) and archive.read_bytes() == before


def test_a_killed_split_rerun_with_another_seed_never_leaks(photos, tmp_path):
    out = tmp_path / "out"
    kill_after(cvprep_command(COMMANDS["split"], **{"in": photos, "out": out}), out, 40)
    reseeded = cvprep_command(
        ["split", "{in}", "{out}", "--seed", "4"], **{"in": photos, "out": out}
    )
    refused = run(reseeded)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    kill_after([*reseeded, "--overwrite"], out, 60)
    assert run([*reseeded, "--overwrite"]).returncode == 0
    where: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        for path in (out / split).rglob("*.png"):
            where.setdefault(str(path.relative_to(out / split)), []).append(split)
    assert len(where) == 100 and all(len(splits) == 1 for splits in where.values())


# ------------------------------------------------------------------ file-system faults
@pytest.mark.skipif(not (IS_ROOT and SETPRIV), reason="needs root and setpriv to become nobody")
@pytest.mark.parametrize("job", sorted(COMMANDS))
def test_a_read_only_output_for_a_user_without_permission(job, photos):
    with shared_folder() as shared:
        source = shared / "photos"
        shutil.copytree(photos, source)
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)  # owned by root: nobody may not write
        for out in (locked, locked / "sub"):
            result = run(
                cvprep_command(COMMANDS[job], **{"in": source, "out": out}), as_nobody=True
            )
            assert_one_line_error(result, str(locked), "Permission denied")
        assert not any(locked.iterdir())


@pytest.mark.skipif(not IS_ROOT, reason="mounting a read-only tmpfs needs root")
@pytest.mark.parametrize("job", sorted(COMMANDS))
def test_a_read_only_file_system(job, photos, tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        result = run(cvprep_command(COMMANDS[job], **{"in": photos, "out": read_only / "out"}))
        assert_one_line_error(result, str(read_only), "Read-only file system")


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("job", sorted(COMMANDS))
def test_a_full_disk(job, photos, tmp_path):
    before = tree_snapshot(photos)
    with mounted_tmpfs(tmp_path / "small", "size=256k") as small:
        out = small / "out"
        result = run(cvprep_command(COMMANDS[job], **{"in": photos, "out": out}))
        assert_one_line_error(result, str(out), "No space left on device")
        assert not list(out.rglob("*.part"))
        for path in out.rglob("*.png"):  # what was written is whole
            cvprep.read_image(path)
    assert tree_snapshot(photos) == before


@pytest.mark.skipif(not (IS_ROOT and SETPRIV), reason="needs root and setpriv to become nobody")
def test_reports_and_quarantine_in_folders_a_user_cannot_write(photos):
    with shared_folder() as shared:
        source = shared / "photos"
        shutil.copytree(photos, source)
        (source / "cat" / "broken.png").write_bytes(b"broken")
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        for args in (
            ["verify", str(source), "--report", str(locked / "r.csv"), "-q", "-w", "0"],
            ["inspect", str(source), "--html", str(locked / "audit.html"), "-q", "-w", "0"],
            [
                "preview",
                str(source / "cat" / "cat_0000.png"),
                "--ops",
                "grayscale",
                "-o",
                str(locked / "sheet.png"),
            ],
        ):
            result = run([sys.executable, "-m", "cvprep.cli", *args], as_nobody=True)
            assert_one_line_error(result, str(locked), "Permission denied")
        # The input is writable by root only: quarantine cannot move the broken file; it
        # stays, and the run says so instead of failing.
        quarantine = shared / "q"
        quarantine.mkdir(mode=0o777)
        quarantine.chmod(0o777)
        result = run(
            [
                sys.executable,
                "-m",
                "cvprep.cli",
                "verify",
                str(source),
                "--quarantine",
                str(quarantine),
                "--workers",
                "0",
            ],
            as_nobody=True,
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "not moved cat/broken.png: Permission denied" in result.stderr
        assert (source / "cat" / "broken.png").exists()
