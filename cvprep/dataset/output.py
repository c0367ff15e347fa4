"""Output folders of dataset jobs: one job at a time, and a run record written first.

A job that writes into OUT (``split``, ``preprocess``, ``augment``):

1. takes OUT's lock (``OUT/.cvprep.lock``). The lock is an ``flock`` held by the running
   process, so the operating system releases it when that process dies: a killed job never
   blocks the next one. A second job on the same OUT is refused with the first one named.
2. reads OUT's run record (``OUT/cvprep.json``) and refuses to continue a folder made by
   another command or with other settings, finished or not (``overwrite`` is the way out);
3. writes its own record, ``"status": "in progress"``, before the first output, and marks it
   ``"finished"`` with a summary at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cvprep import __version__
from cvprep.errors import CvprepError, ParameterError
from cvprep.files import ARTEFACT_NAMES, is_ignored
from cvprep.io import atomic_write_bytes

try:
    import fcntl
except ImportError:  # Windows: fall back to a lock file checked by process id
    fcntl = None  # type: ignore[assignment]

RUN_RECORD = "cvprep.json"
LOCK_FILE = ".cvprep.lock"


class OutputBusyError(CvprepError):
    """Another cvprep job is writing into the same output folder."""


class SettingsMismatchError(ParameterError):
    """The output folder was made by another command or with other settings."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- the lock
def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another cvprep job"
    return (
        f"`cvprep {info.get('command', '?')}` (pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')}, started {info.get('started', '?')})"
    )


def _busy(folder: Path, info: dict[str, Any]) -> OutputBusyError:
    return OutputBusyError(
        f"{folder} is in use by {_holder_text(info)}; wait for it to finish or use another "
        "output folder"
    )


def _read_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold OUT's lock for the duration of the block (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    info = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
    if fcntl is None:
        with _pid_lock(folder, path, info):
            yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy(folder, _read_info(path)) from None
        # The previous holder removes the file just before unlocking: if ours was removed
        # between open() and flock(), lock the new file instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def _pid_lock(folder: Path, path: Path, info: dict[str, Any]) -> Iterator[None]:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            holder = _read_info(path)
            stale = holder.get("host") == info["host"] and not _pid_alive(int(holder.get("pid", 0)))
            if not stale:
                raise _busy(folder, holder) from None
            path.unlink(missing_ok=True)
    else:
        raise _busy(folder, _read_info(path))
    try:
        os.write(fd, json.dumps(info).encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run record
def read_record(folder: Path) -> dict[str, Any]:
    """OUT's run record, or ``{}`` when there is none."""
    path = folder / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"command": "unknown", "settings": {"corrupt record": True}}


def has_content(folder: Path) -> bool:
    """Whether a folder holds anything but hidden files (our lock and temporary files)."""
    return folder.is_dir() and any(not is_ignored(entry.name) for entry in os.scandir(folder))


def check_record(folder: Path, command: str, settings: dict[str, Any]) -> None:
    """Refuse to continue an OUT made by another command, with other settings, or by
    something other than cvprep (mixed outputs); an empty or matching OUT is fine."""
    record = read_record(folder)
    if not record:
        if has_content(folder):
            raise SettingsMismatchError(
                f"{folder} is not empty and has no cvprep run record ({RUN_RECORD}); "
                "use a new output folder or --overwrite"
            )
        return
    previous = record.get("settings", {})
    if record.get("command") != command:
        raise SettingsMismatchError(
            f"{folder} was made by `cvprep {record.get('command')}`, not `cvprep {command}`; "
            "use a new output folder or --overwrite"
        )
    if previous != settings:
        changed = sorted(
            k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
        )
        state = "an unfinished run" if record.get("status") == "in progress" else "a run"
        raise SettingsMismatchError(
            f"{folder} holds {state} with different settings ({', '.join(changed)}); "
            "use a new output folder or --overwrite"
        )


def write_record(
    folder: Path,
    command: str,
    settings: dict[str, Any],
    *,
    status: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write OUT's run record atomically and return it."""
    previous = read_record(folder)
    started = previous.get("started") if previous.get("status") == "in progress" else None
    record = {
        "cvprep_version": __version__,
        "command": command,
        "settings": settings,
        "status": status,
        "started": started or _now(),
        **({"finished": _now()} if status == "finished" else {}),
        **(extra or {}),
    }
    atomic_write_bytes(folder / RUN_RECORD, json.dumps(record, indent=2, default=str).encode())
    return record


def remove_stale(folder: Path, wanted: set[str], roots: Iterable[str] = (".",)) -> list[str]:
    """Bring a job's output in line with its input: delete every file under ``folder/root``
    (for each root) that the job would not write now — the output of a deleted or moved
    input, a leftover of an interrupted run (temporary ``.part`` files included) — and the
    folders this empties. Returns the deleted paths, relative to ``folder``, sorted.

    ``wanted`` holds relative paths (``"train/cat/a.jpg"``); cvprep's own files at the top of
    ``folder`` (the run record, the lock, manifests and reports) are never touched.
    """
    removed = []
    for root in roots:
        top = folder / root
        if not top.is_dir():
            continue
        for directory, _subfolders, names in os.walk(top, topdown=False):
            here = Path(directory)
            for name in names:
                relative = (here / name).relative_to(folder).as_posix()
                if relative in wanted or (here == folder and _is_own_artefact(name)):
                    continue
                (here / name).unlink()
                if not name.endswith(".part"):
                    removed.append(relative)
            if here != folder and not any(here.iterdir()):
                here.rmdir()
    return sorted(removed)


def _is_own_artefact(name: str) -> bool:
    return name in ARTEFACT_NAMES or name == LOCK_FILE
