"""Latency of ``cvprep serve``: a real server, real HTTP, one photo per request.

    python benchmarks/serve_latency.py RUN [--data FOLDER] [--limit N] [--explain-limit M]

Starts ``cvprep serve RUN`` on a free port (as a user would), waits until it answers, then
posts the photos of FOLDER (default: the dev photos' ``val/``) one at a time as the request
body and times each request from the client: plain ``POST /predict`` for every photo, then
``?explain=true&steps=true`` (what the page asks for) for the first ``--explain-limit``.
Prints the start-up time and the median, 95th percentile and maximum latency of each.
The requirement: a plain prediction within 0.5 s on 2 cores after start-up.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV_VAL = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev" / "val"
sys.path.insert(0, str(ROOT))

from cvprep.files import list_tree  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(run: Path, port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "cvprep", "serve", str(run), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2)
            return process, time.perf_counter() - started
        except OSError:
            if process.poll() is not None:
                raise SystemExit(process.stderr.read().decode()) from None
            time.sleep(0.2)


def post(url: str, data: bytes) -> tuple[float, dict]:
    request = urllib.request.Request(url, data=data, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    return time.perf_counter() - started, body


def summary(name: str, seconds: list[float]) -> None:
    values = np.array(seconds) * 1000
    print(
        f"{name:<28} {len(values):>5} requests: median {np.median(values):6.1f} ms, "
        f"95th percentile {np.percentile(values, 95):6.1f} ms, max {values.max():6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=DEV_VAL)
    parser.add_argument("--limit", type=int, default=0, help="at most N photos (0: all)")
    parser.add_argument("--explain-limit", type=int, default=100)
    args = parser.parse_args()
    files = [args.data / p for p in list_tree(args.data).files]
    files = files[: args.limit] if args.limit else files
    port = free_port()
    process, startup = start(args.run, port)
    try:
        print(f"server up after {startup:.1f} s (model loaded and traced); {len(files)} photos")
        base = f"http://127.0.0.1:{port}/predict"
        plain, errors = [], 0
        for path in files:
            seconds, body = post(f"{base}?name={path.name}", path.read_bytes())
            plain.append(seconds)
            errors += bool(body.get("error"))
        summary("POST /predict", plain)
        explained = [
            post(f"{base}?explain=true&steps=true", path.read_bytes())[0]
            for path in files[: args.explain_limit]
        ]
        summary("  ?explain=true&steps=true", explained)
        print(f"{errors} refused upload(s)")
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
