"""Throughput and memory of `cvprep preprocess`, against baselines run in the same process.

    python benchmarks/preprocess.py [--images 400] [--memory-sizes 1000,10000]

Throughput, on generated 500×375 JPEG photos (crops of the bundled sample photos):
  (a) plain OpenCV decode + encode, in a process pool of the same size (the practical limit);
  (b) a naive single-process loop: cvprep.read_image → Pipeline.apply → cvprep.write_image;
  cvprep preprocess with 1 and 2 workers (and, with --ray, the Ray engine on a local
  2-CPU instance started beforehand, so its start-up is not counted).
Memory: peak RSS of the parent and of the largest worker for two dataset sizes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

import cvprep
from cvprep import batch
from cvprep.pipeline import Pipeline

SPECS = ["resize=224x224:fit=pad,equalize", "equalize,gaussian_blur=5"]
PHOTOS = Path(__file__).resolve().parents[1] / "sample_images" / "photos"


def make_dataset(root: Path, count: int, size: tuple[int, int] = (375, 500)) -> None:
    rng = np.random.default_rng(0)
    sources = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    for index in range(count):
        source = sources[index % len(sources)]
        scale = max(size[0] / source.shape[0], size[1] / source.shape[1]) * rng.uniform(1, 1.5)
        big = cv2.resize(source, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        top = rng.integers(0, big.shape[0] - size[0] + 1)
        left = rng.integers(0, big.shape[1] - size[1] + 1)
        crop = big[top : top + size[0], left : left + size[1]]
        folder = root / ("cats" if index % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _decode_encode(task: tuple[str, str]) -> None:
    source, target = task
    image = cv2.imread(source)
    _, data = cv2.imencode(".jpg", image)
    Path(target).write_bytes(data.tobytes())


def baseline_pool(files: list[Path], out: Path, workers: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(str(f), str(out / f"{i}.jpg")) for i, f in enumerate(files)]
    start = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        for _ in pool.imap_unordered(_decode_encode, tasks, chunksize=batch.CHUNK_SIZE):
            pass
    return len(files) / (time.perf_counter() - start)


def naive_loop(files: list[Path], root: Path, out: Path, pipeline: Pipeline) -> float:
    start = time.perf_counter()
    for path in files:
        result = pipeline.apply(cvprep.read_image(path))
        cvprep.write_image(out / path.relative_to(root), result)
    return len(files) / (time.perf_counter() - start)


def cvprep_run(
    root: Path, out: Path, pipeline: Pipeline, workers: int, engine: str = "local"
) -> float:
    plan = batch.plan_preprocess(
        root,
        out,
        pipeline,
        fmt=None,
        quality=None,
        reduce=1,
        max_pixels=cvprep.io.DEFAULT_MAX_PIXELS,
    )
    start = time.perf_counter()
    results = list(batch.run_tasks(batch.preprocess_one, plan.tasks, workers, engine=engine))
    elapsed = time.perf_counter() - start
    assert all(r.status == "ok" for r in results)
    return len(results) / elapsed


def throughput(count: int, repeats: int, with_ray: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        make_dataset(root, count)
        files = sorted(root.rglob("*.jpg"))
        print(f"{count} JPEGs of 500x375, {os.cpu_count()} CPUs, best of {repeats}")
        for workers in (1, 2):
            rate = max(
                baseline_pool(files, Path(tmp) / f"base{workers}-{r}", workers)
                for r in range(repeats)
            )
            print(f"  (a) OpenCV decode+encode pool, {workers} worker(s): {rate:7.1f} img/s")
            globals()[f"base{workers}"] = rate
        for spec in SPECS:
            pipeline = Pipeline.parse(spec)
            naive = naive_loop(files, root, Path(tmp) / "naive", pipeline)
            rates = {
                w: max(
                    cvprep_run(root, Path(tmp) / f"out-{spec}-{w}-{r}", pipeline, w)
                    for r in range(repeats)
                )
                for w in (1, 2)
            }
            print(f"  --ops {spec}")
            print(f"    (b) naive single-process loop:        {naive:7.1f} img/s")
            for w in (1, 2):
                base = globals()[f"base{w}"]
                print(
                    f"    cvprep preprocess, {w} worker(s):       {rates[w]:7.1f} img/s"
                    f"   = {rates[w] / base:.2f} x (a) with {w}, {rates[w] / naive:.2f} x (b)"
                )
            print(f"    scaling 2 workers / 1 worker:          {rates[2] / rates[1]:.2f} x")
            if with_ray:
                ray_rate = max(
                    cvprep_run(root, Path(tmp) / f"ray-{spec}-{r}", pipeline, 2, "ray")
                    for r in range(repeats)
                )
                print(
                    f"    Ray engine, local instance, 2 CPUs:    {ray_rate:7.1f} img/s"
                    f"   = {ray_rate / rates[2]:.2f} x the local engine with 2 workers"
                )


def _tree_rss_kib(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry.name)] = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    members, frontier = {root_pid}, [root_pid]
    while frontier:  # descendants, forkserver workers included
        current = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == current]
        members.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in members)


def memory(sizes: list[int]) -> None:
    print(
        "peak resident memory of `cvprep preprocess --workers 2`, all processes together "
        "(128x128 JPEGs, sampled every 20 ms):"
    )
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "in"
            make_dataset(root, size, size=(128, 128))
            command = [
                sys.executable,
                "-m",
                "cvprep",
                "preprocess",
                str(root),
                str(Path(tmp) / "out"),
                "--ops",
                "resize=64x64,equalize",
                "-w",
                "2",
                "-q",
            ]
            child = subprocess.Popen(command)
            peak = 0
            while child.poll() is None:
                peak = max(peak, _tree_rss_kib(child.pid))
                time.sleep(0.02)
            assert child.returncode == 0
            print(f"  {size:6d} images: {peak / 1024:6.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", default="1000,10000")
    parser.add_argument("--ray", action="store_true", help="also time the Ray engine")
    args = parser.parse_args()
    if args.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    throughput(args.images, args.repeats, args.ray)
    memory([int(s) for s in args.memory_sizes.split(",") if s])


if __name__ == "__main__":
    main()
