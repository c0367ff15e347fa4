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
