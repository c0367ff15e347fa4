"""Reading a dataset straight from an archive against reading the extracted folder, same run.

    python benchmarks/sources.py [--photos DIR] [--repeats 3] [--workers 2] [--scratch DIR]

Input: the dev photos' ``train/`` (``../shared/data/cats_vs_dogs_dev/train``: 2,000 JPEGs in
``cat/`` and ``dog/``) laid out as Kaggle ships "Dogs vs. Cats": a flat ``train/`` of
``cat.0.jpg …``, hard-linked into a scratch folder (``--scratch``, default a new folder in
the system's temporary folder; never the project), and the same files in ``train.zip``
(stored, and deflated) and ``train.tar.gz`` built there. Without the dev photos, 2,000
generated 500×375 JPEGs stand in.

For each job — ``verify`` (decode every image) and ``split`` (hash every image, then copy it
into ``data/{train,val,test}/<class>/``) — every source is run in turn, ``--repeats`` rounds,
and the best of each is kept; all with ``labels="name"``. Two measures:

- wall: seconds with ``--workers`` processes (what a user waits);
- cpu: CPU seconds of the whole job run in one process (``workers=0``): the work itself,
  much less disturbed than wall time when other programs share the machine.

Ratio = archive / folder (1.0 = no cost for reading in place). The splits of every source
are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import cvprep
from cvprep import dataset

ROOT = Path(__file__).resolve().parents[1]
DEV_PHOTOS = ROOT.parent / "shared" / "data" / "cats_vs_dogs_dev" / "train"


def flat_folder(photos: Path, scratch: Path) -> Path:
    """Kaggle's layout: train/cat.0.jpg … (hard links to the photos, or generated JPEGs)."""
    flat = scratch / "train"
    flat.mkdir(parents=True)
    if photos.is_dir():
        for path in sorted(photos.rglob("*.jpg")):
            os.link(path, flat / path.name)
        return flat
    rng = np.random.default_rng(0)
    for index in range(2000):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        image = cvprep.ops.resize(small, (375, 500), interpolation="cubic")
        cvprep.write_image(flat / f"{('cat', 'dog')[index % 2]}.{index}.jpg", image, quality=90)
    return flat


def archives(flat: Path, scratch: Path) -> dict[str, Path]:
    files = sorted(flat.iterdir())
    made = {}
    for name, compression in (("zip (stored)", zipfile.ZIP_STORED), ("zip", zipfile.ZIP_DEFLATED)):
        path = scratch / f"train-{compression}.zip"
        with zipfile.ZipFile(path, "w", compression) as archive:
            for file in files:
                archive.write(file, f"train/{file.name}")
        made[name] = path
    path = scratch / "train.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for file in files:
            archive.add(file, f"train/{file.name}")
    made["tar.gz"] = path
    return made


def digest(folder: Path) -> str:
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name not in ("cvprep.json", "manifest.csv"):
            total.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return total.hexdigest()


def timed(function: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    function()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=DEV_PHOTOS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cvprep-sources-", dir=args.scratch))
    try:
        flat = flat_folder(args.photos, scratch)
        sources = {"folder": flat, **archives(flat, scratch)}
        count = len(list(flat.iterdir()))
        sizes = {
            name: path.stat().st_size >> 20 for name, path in sources.items() if path.is_file()
        }
        print(
            f"{count} photos ({'dev photos' if args.photos.is_dir() else 'generated'}); "
            f"archives (MiB): {sizes}; workers={args.workers}; cpus={os.cpu_count()}"
        )
        best: dict[tuple[str, str, str], float] = {}
        digests: dict[str, str] = {}

        def verify(source: Path, workers: int) -> None:
            result = dataset.verify(source, labels="name", workers=workers)
            assert result.ok and result.summary.total["ok"] == count, result.summary.total

        def split(source: Path, workers: int, name: str) -> None:
            out = scratch / "data"
            shutil.rmtree(out, ignore_errors=True)
            dataset.split(source, out, labels="name", seed=1, workers=workers)
            digests[name] = digest(out)

        measures = {"wall": (args.workers, time.perf_counter), "cpu": (0, time.process_time)}
        for _ in range(args.repeats):
            for name, source in sources.items():
                for measure, (workers, clock) in measures.items():
                    runs = {
                        "verify": lambda s=source, w=workers: verify(s, w),
                        "split": lambda s=source, w=workers, n=name: split(s, w, n),
                    }
                    for job, run in runs.items():
                        key = (job, name, measure)
                        best[key] = min(best.get(key, float("inf")), timed(run, clock))
        assert len(set(digests.values())) == 1, "the splits differ between sources"
        print(f"\n{'job':<8}{'source':<14}{'wall s':>8}{'images/s':>10}{'ratio':>7}", end="")
        print(f"{'cpu s':>8}{'ratio':>7}")
        for job in ("verify", "split"):
            for name in sources:
                wall, cpu = best[(job, name, "wall")], best[(job, name, "cpu")]
                print(
                    f"{job:<8}{name:<14}{wall:>8.2f}{count / wall:>10.0f}"
                    f"{wall / best[(job, 'folder', 'wall')]:>7.2f}"
                    f"{cpu:>8.2f}{cpu / best[(job, 'folder', 'cpu')]:>7.2f}"
                )
        print("\nsplits of every source: byte-identical")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
