"""The local engine: the worker initialiser runs in pool workers only."""

from __future__ import annotations

import cv2

from cvprep.dataset import engines


def test_work_in_this_process_leaves_its_settings_alone(monkeypatch):
    tuned = []
    monkeypatch.setattr(engines, "_tune_malloc", lambda: tuned.append(True))
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        # workers=0, and a single task (never worth a pool): both run here.
        for workers, tasks in ((0, [-1, 2, -3]), (2, [-4])):
            results = engines.make_engine("local", workers=workers).map(abs, tasks)
            assert sorted(results) == sorted(abs(t) for t in tasks)
            assert cv2.getNumThreads() == 2  # not left at the workers' 1
        assert not tuned  # glibc's malloc settings untouched in this process
    finally:
        cv2.setNumThreads(before)


def slow_write(target: str) -> str:
    """Writes ``target`` atomically, pausing between the temporary file and its rename: a
    worker is in the middle of a file when the parent gives up. (Runs in a pool worker, so
    slowing ``os.replace`` there touches nothing else.)"""
    import os
    import time
    from pathlib import Path

    from cvprep.io import atomic_write_bytes

    if not hasattr(os, "real_replace"):
        os.real_replace = os.replace
        os.replace = lambda source, target: (time.sleep(0.3), os.real_replace(source, target))
    atomic_write_bytes(Path(target), b"x" * 1000)
    return target


def test_an_abandoned_job_lets_its_workers_finish_their_files(tmp_path):
    tasks = [str(tmp_path / f"{i}.bin") for i in range(64)]
    results = engines.LocalEngine(2).map(slow_write, tasks)
    first = next(results)
    results.close()  # the caller stops reading (an error in the job, a full disk)
    assert not list(tmp_path.glob(".*.part"))  # nothing half-written is left behind
    written = sorted(tmp_path.glob("*.bin"))
    assert first in tasks and len(written) < len(tasks)  # the rest was skipped
    assert all(path.stat().st_size == 1000 for path in written)
