"""Two-process data-parallel training on CPU (JAX backend, local coordinator)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import cvprep
from tests.conftest import ROOT

pytest.importorskip("jax")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_agree_on_the_final_weights(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4)):
        for cls, base in (("dark", 70), ("bright", 180)):
            for index in range(count):
                image = np.clip(rng.normal(base, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
                cvprep.write_image(tmp_path / "data" / split / cls / f"{index}.png", image)
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cvprep",
                "train",
                str(tmp_path / "data"),
                "--img-size",
                "48",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--seed",
                "5",
                "--coordinator",
                address,
                "--num-processes",
                "2",
                "--process-id",
                str(pid),
                "--out",
                str(tmp_path / f"run{pid}"),
                "--quiet",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    code = (
        "import sys, numpy as np, keras, cvprep.keras_layers; "
        "m = keras.saving.load_model(sys.argv[1]); "
        "np.savez(sys.argv[2], *m.get_weights())"
    )
    weights = []
    for pid in (0, 1):
        target = tmp_path / f"w{pid}.npz"
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"run{pid}" / "model.keras"), str(target)],
            check=True,
            cwd=ROOT,
            env={**env, "KERAS_BACKEND": "jax"},
        )
        weights.append(np.load(target))
    assert len(weights[0].files) > 0
    for name in weights[0].files:
        np.testing.assert_allclose(weights[0][name], weights[1][name], rtol=1e-6, atol=1e-6)
    for pid in (0, 1):  # one JAX device per process, joined into one data-parallel mesh
        metrics = json.loads((tmp_path / f"run{pid}" / "metrics.json").read_text())
        assert metrics["data_parallel_devices"] == 2
    history = (tmp_path / "run0" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs: training really ran
