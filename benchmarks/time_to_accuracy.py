"""Time to a validation accuracy: one whole ``cvprep train`` run, timed epoch by epoch.

    python benchmarks/time_to_accuracy.py DATA [--model cnn] [--targets 0.85,0.88,0.9]
        [--set epochs=30 --set progressive=false ...] [--out RUN] [--peak-gflops N]

DATA is a split folder with ``train/`` and ``val/`` (for ``cnn``, the dev photos
preprocessed as the README says: ``cvprep preprocess DEV PREP --ops resize=150x150:fit=pad``;
for MobileNet, the raw dev photos with ``--set alpha=0.25 --set weights=FILE``). Leave
``test/`` out: the figures are validation accuracies, and the held-out photos stay held out.

It runs :func:`cvprep.training.train` with the model's defaults (``--set`` changes one
setting) and prints, from the run's ``history.csv`` (each epoch's input size and seconds):

- per epoch: the input size, its seconds (training and validation), the time since the
  command started at its end (start-up, decoding and a backbone's cached activations
  included; the row's appearance in ``history.csv``), the validation accuracy, and, for the
  networks trained on images (``cnn``, ``classic``), the achieved GFLOP/s of the whole epoch
  (training FLOPs of every training image plus forward FLOPs of every validation image,
  counted from the network at that size) and its share of the CPU's FP32 peak; and, on a
  virtual machine, the share of the CPUs' time its hypervisor gave to other guests since the
  previous epoch ended (the first epoch: since the command started; "stolen", from
  ``/proc/stat``, for every model), with the share of the peak the epoch reached on the time
  it was given (an epoch slowed down by its neighbours shows as such);
- the time from the command's start to the first epoch at or above each ``--targets``
  accuracy, and the whole run's time and final validation accuracy (the kept model is the
  one with the lowest validation loss of the last stage, so it may differ from the best
  epoch's accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvprep.training import train
from cvprep.training.compute import cpu_peak, cpu_ticks, forward_flops, training_flops
from cvprep.training.models import build_classic, build_cnn
from cvprep.training.report import read_history

BUILDERS = {"cnn": build_cnn, "classic": build_classic}
TRAINING_LINE = re.compile(r"^training \S+ on (\d+) images, validating on (\d+)")


def parse_settings(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values read as JSON when they parse (numbers, true/false)."""
    settings: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def epoch_gflop(builder, size: int, channels: int, classes: int, train: int, val: int) -> float:
    """GFLOP of one epoch at ``size``: training FLOPs of ``train`` images, forward of ``val``."""
    model = builder(size, channels, classes)
    return (train * training_flops(model) + val * sum(forward_flops(model).values())) / 1e9


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else "unknown CPU"


class EpochEnds(threading.Thread):
    """Notes the moment each row of ``history.csv`` appears (polled every 0.1 s): the time
    since the command started at each epoch's end, whatever ran between epochs (the cached
    activations of a backbone, the switch to another input size), and the CPUs' ticks then
    (``ticks[0]``: at the start)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.times, self.done = path, [], threading.Event()
        self.ticks = [cpu_ticks()]

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.poll()

    def poll(self) -> None:
        try:
            rows = self.path.read_text().count("\n") - 1
        except OSError:
            return
        now, ticks = time.perf_counter(), cpu_ticks()
        new = max(0, rows - len(self.times))
        self.times.extend([now] * new)
        self.ticks.extend([ticks] * new)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.poll()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--targets", default="0.8,0.85,0.88,0.9")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument("--peak-gflops", type=float, help="the CPU's peak, if known better")
    args = parser.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    settings = parse_settings(args.set)
    peak = cpu_peak()
    peak_gflops = args.peak_gflops or peak.gflops
    print(f"CPU: {cpu_name()}; peak {peak_gflops:.0f} GFLOP/s ({peak.describe()})")
    print(f"cvprep train {args.data} --model {args.model} {settings or '(defaults)'}")
    out = args.out or Path(tempfile.mkdtemp(prefix="time_to_accuracy_")) / "run"
    marks: dict[str, float] = {}
    counts: list[int] = []

    def log(message: str) -> None:
        match = TRAINING_LINE.match(message)
        if match:
            marks["epochs_start"] = time.perf_counter()
            counts.extend(int(n) for n in match.groups())
        print(f"  | {message}", flush=True)

    started = time.perf_counter()
    ends = EpochEnds(out / "history.csv")
    ends.start()
    try:
        result = train(args.data, out=out, model=args.model, log=log, **settings)
    finally:
        ends.stop()
    total = time.perf_counter() - started
    history = read_history(result.run / "history.csv")
    config = json.loads((result.run / "config.json").read_text())
    before = marks.get("epochs_start", started) - started
    builder = BUILDERS.get(args.model)
    channels = 1 if config.get("ops", "") and "grayscale" in config["ops"] else 3
    classes = len(config["classes"])

    print(f"\nstart-up and decoding: {before:.1f} s")
    print("epoch  size  seconds  since start  val acc  GFLOP/s  of peak  stolen  of peak given")
    reached = {}
    for index, seconds in enumerate(history.get("seconds", [])):
        size = int(history["img_size"][index])
        accuracy = history["val_accuracy"][index]
        elapsed = ends.times[index] - started
        rate = None
        speed = f"{'':7s}  {'':8s}"  # no FLOP count for a backbone's phases
        if builder is not None and counts:
            rate = epoch_gflop(builder, size, channels, classes, *counts) / seconds
            speed = f"{rate:7.1f}  {100 * rate / peak_gflops:6.1f} %"
        epoch_start, epoch_end = ends.ticks[index], ends.ticks[index + 1]
        if epoch_start is not None and epoch_end is not None:
            stolen = epoch_end.stolen_share_since(epoch_start)
            speed += f"  {100 * stolen:4.0f} %"
            if rate is not None and stolen < 1:
                speed += f"  {100 * rate / (peak_gflops * (1 - stolen)):8.1f} %"
        print(
            f"{index + 1:5d}  {size:4d}  {seconds:7.1f}  {elapsed:9.0f} s  {accuracy:7.3f}  {speed}"
        )
        for target in targets:
            if accuracy >= target and target not in reached:
                reached[target] = (elapsed, index + 1)
    print()
    for target in targets:
        if target in reached:
            seconds, epoch = reached[target]
            print(f"val accuracy >= {target:g}: {seconds / 60:.1f} min (epoch {epoch})")
        else:
            print(f"val accuracy >= {target:g}: not reached")
    after = total - (ends.times[-1] - started if ends.times else before)
    print(
        f"whole run: {total / 60:.1f} min ({after:.0f} s after the last epoch: saving, "
        f"scoring, the report); final validation accuracy "
        f"{result.metrics['validation_accuracy']:.3f}; run folder {result.run}"
    )


if __name__ == "__main__":
    main()
