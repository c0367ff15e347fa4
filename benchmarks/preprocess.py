"""`cvprep preprocess` against a bare multiprocessing pool making the same cv2 calls, same run.

    python benchmarks/preprocess.py [--photos DIR] [--copies 2] [--repeats 3] [--memory]
                                    [--scratch /dev/shm]

Input: the real dev photos (``../shared/data/cats_vs_dogs_dev``, hard-linked ``--copies``
times under new names into a scratch folder) when present, else generated 500×375 JPEGs.

For each pipeline, alternating runs, best of ``--repeats``:
  bare pool  — ``multiprocessing.Pool(2)``, ``imap_unordered``: cv2.imread, the same cv2 calls
               as the spec, cv2.imencode, write (what a user would write by hand);
  cvprep     — ``cvprep.dataset.preprocess(..., workers=2)``: the whole job (listing, run record,
               lock, reader with EXIF/CMYK/16-bit handling, atomic writes, per-file results).
Ratio = cvprep / bare pool (1.0 = no overhead). ``--memory`` adds peak resident memory of the
whole process tree of the CLI for two dataset sizes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from cvprep import dataset

ROOT = Path(__file__).resolve().parents[1]
DEV_PHOTOS = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev"
WORKERS = 2


def _resize_gray_equalize_blur(image: np.ndarray) -> np.ndarray:
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(cv2.equalizeHist(gray), (5, 5), 0, borderType=cv2.BORDER_REFLECT_101)


def _pad_equalize(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(224 / height, 224 / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (224 - new_h) // 2, (224 - new_w) // 2
    padded = cv2.copyMakeBorder(
        small, top, 224 - new_h - top, left, 224 - new_w - left, cv2.BORDER_CONSTANT, value=0
    )
    ycrcb = cv2.cvtColor(padded, cv2.COLOR_BGR2YCrCb)
    ycrcb[:, :, 0] = cv2.equalizeHist(ycrcb[:, :, 0])
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


CASES = {
    "resize=224x224,grayscale,equalize,gaussian_blur=5": _resize_gray_equalize_blur,
    "resize=224x224:fit=pad,equalize": _pad_equalize,
}


def _bare_task(task: tuple[str, str, str]) -> None:
    source, target, spec = task
    result = CASES[spec](cv2.imread(source))
    _, data = cv2.imencode(os.path.splitext(target)[1], result)
    Path(target).write_bytes(data.tobytes())


def _init_bare() -> None:
    cv2.setNumThreads(1)


def bare_pool(files: list[Path], root: Path, out: Path, spec: str) -> float:
    tasks = []
    for path in files:
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        tasks.append((str(path), str(target), spec))
    start = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(WORKERS, initializer=_init_bare) as pool:
        for _ in pool.imap_unordered(_bare_task, tasks, chunksize=32):
            pass
    return len(files) / (time.perf_counter() - start)


def cvprep_job(root: Path, out: Path, spec: str, count: int) -> float:
    start = time.perf_counter()
    result = dataset.preprocess(root, out, spec, workers=WORKERS)
    elapsed = time.perf_counter() - start
    assert result.summary.total["ok"] == count, result.summary.total
    return count / elapsed


def prepare_photos(scratch: Path, photos: Path | None, copies: int) -> Path:
    root = scratch / "in"
    if photos is not None and photos.is_dir():
        for path in sorted(photos.rglob("*.jpg")):
            relative = path.relative_to(photos)
            for copy in range(copies):  # hard links: new names, the same real JPEG bytes
                target = root / relative.parent / f"{path.stem}.{copy}{path.suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:  # another file system (a RAM disk): copy
                    shutil.copyfile(path, target)
        return root
    rng = np.random.default_rng(0)
    sources = [
        cv2.imread(str(p)) for p in sorted((ROOT / "sample_images" / "photos").glob("*.jpg"))
    ]
    for index in range(1500 * copies):
        source = sources[index % len(sources)]
        top = rng.integers(0, max(1, source.shape[0] - 375))
        left = rng.integers(0, max(1, source.shape[1] - 500))
        crop = (
            cv2.resize(source, (500, 375))
            if min(source.shape[:2]) < 375
            else source[top : top + 375, left : left + 500]
        )
        folder = root / ("cats" if index % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


def throughput(root: Path, scratch: Path, repeats: int) -> None:
    files = sorted(root.rglob("*.jpg"))
    print(f"{len(files)} JPEGs, {os.cpu_count()} CPUs, {WORKERS} workers, best of {repeats}")
    print(f"{'spec':52s} {'bare img/s':>11s} {'cvprep img/s':>13s} {'ratio':>6s}")
    for spec in CASES:
        bare, ours = [], []
        for run in range(repeats):  # alternate, so that both see the same machine state
            # Outputs are deleted at the end, not between runs: on a disk mounted with
            # `discard`, deleting thousands of files slows whatever runs next.
            bare.append(bare_pool(files, root, scratch / f"bare-{spec}-{run}", spec))
            ours.append(cvprep_job(root, scratch / f"cvprep-{spec}-{run}", spec, len(files)))
        print(f"{spec:52s} {max(bare):11.0f} {max(ours):13.0f} {max(ours) / max(bare):6.2f}")


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
    print("peak resident memory of `cvprep preprocess --workers 2`, all processes (128x128 JPEGs):")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "in"
            shapes = dataset.make_shapes_dataset(
                root, per_class=size // 2, size=128, extension=".jpg"
            )
            command = [
                sys.executable,
                "-m",
                "cvprep",
                "preprocess",
                str(shapes),
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
    parser.add_argument("--photos", type=Path, default=DEV_PHOTOS)
    parser.add_argument("--copies", type=int, default=2, help="hard links of each photo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument(
        "--scratch",
        type=Path,
        help="where inputs and outputs go (e.g. /dev/shm: on this VM creating a file on disk "
        "costs ~0.6 ms, as much as decoding a photo, and its noise hides the jobs' own cost)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        scratch = Path(tmp)
        root = prepare_photos(scratch, args.photos, args.copies)
        throughput(root, scratch, args.repeats)
    if args.memory:
        memory([1000, 10000])


if __name__ == "__main__":
    main()
