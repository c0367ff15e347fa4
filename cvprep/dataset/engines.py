"""Where per-file work runs: a local process pool, or Ray for clusters (``cvprep[ray]``).

Every job hands an engine a per-file function and a list of tasks; the engine yields one
result per task, in any order. Both engines call the same function, so outputs and rejects
are identical (tested). Workers receive paths, not pixels: each decodes, processes, encodes
and writes its own file, so the parent only streams small result records (DESIGN.md: decode +
encode is most of the cost, and moving pixels between processes would double it).

Tasks must have a ``source`` attribute (the file's path); functions take ``(task, data=None)``
where ``data`` holds the file's bytes when the engine has already read them (Ray does).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import cv2

from cvprep import params
from cvprep.errors import CvprepError

ENGINES = ("local", "ray")
MAX_WORKERS = 512
CHUNK_SIZE = 32
RAY_BATCH_SIZE = 16


class Engine(Protocol):
    def map(self, function: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        """Yield ``function(task)`` for every task, in any order."""
        ...


def default_workers() -> int:
    return os.cpu_count() or 1


def make_engine(
    engine: str | Engine = "local", *, workers: int | None = None, ray_address: str | None = None
) -> Engine:
    """An engine by name (``"local"`` or ``"ray"``), or ``engine`` itself if it is one.

    Examples
    --------
    >>> from cvprep.dataset import make_engine
    >>> engine = make_engine("local", workers=0)  # 0: in this process
    >>> sorted(engine.map(abs, [-2, 1, -3]))
    [1, 2, 3]
    """
    if not isinstance(engine, str):
        if not callable(getattr(engine, "map", None)):
            raise params.fail("engine", f"one of {', '.join(ENGINES)} or an Engine", engine)
        return engine
    workers = params.check_optional_int("workers", workers, minimum=0, maximum=MAX_WORKERS)
    params.check_choice("engine", engine, ENGINES)
    if ray_address is not None and not isinstance(ray_address, str):
        raise params.fail("ray_address", "HOST:PORT text", ray_address)
    count = default_workers() if workers is None else workers
    if engine == "ray":
        return RayEngine(count, ray_address)
    return LocalEngine(count)


# --------------------------------------------------------------------------- local pool
def init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)
    _tune_malloc()


def _tune_malloc() -> None:
    """Keep freed image buffers in the heap instead of returning them to the OS after each
    image (glibc only; measured +18–30 % throughput in DESIGN.md)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)


class LocalEngine:
    """A process pool of ``workers`` processes; ``workers=0`` runs in this process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, function: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        if self.workers == 0 or len(tasks) <= 1 or not _workers_can_start():
            # The caller's process keeps its own OpenCV threads and malloc settings: the
            # worker initialiser is for pool workers only.
            yield from map(function, tasks)
            return
        # forkserver: safe even when the parent already imported TensorFlow (fork is not).
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has already imported the job's module.
            context.set_forkserver_preload([function.__module__])
        workers = min(self.workers, len(tasks))
        # Small chunks when there are few tasks, so that every worker gets some.
        chunk = max(1, min(CHUNK_SIZE, len(tasks) // (4 * workers)))
        with context.Pool(workers, initializer=init_worker) as pool:
            yield from pool.imap_unordered(function, tasks, chunksize=chunk)


def _workers_can_start() -> bool:
    """Worker processes re-import the main script: impossible when it is not a file (Python
    run from standard input), where they would fail and be restarted forever."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return getattr(getattr(main, "__spec__", None), "name", None) is not None or (
        path is None or os.path.exists(path)
    )


# --------------------------------------------------------------------------- Ray
class RayEngine:
    """Ray Data reads the files as bytes (``read_binary_files``) and the same per-file function
    decodes them with cvprep's reader, so a corrupt file is a reject, not a failed job.

    Without ``address`` a local Ray instance is started; with it, cvprep joins a cluster (the
    input and output folders must then be on storage every node sees).
    """

    def __init__(self, workers: int, address: str | None = None) -> None:
        self.workers = workers
        self.address = address

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise CvprepError("the Ray engine needs Ray: pip install 'cvprep[ray]'") from None
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=self.workers or None, **options)
        return ray

    def map(self, function: Callable[..., Any], tasks: Sequence[Any]) -> Iterator[Any]:
        if not tasks:
            return
        ray = self._ray()
        by_source = {task.source: task for task in tasks}
        ray.data.DataContext.get_current().enable_progress_bars = False

        def process(batch: dict[str, Any]) -> dict[str, list[bytes]]:
            results = []
            for path, data in zip(batch["path"], batch["bytes"], strict=True):
                task = by_source[_local_path(path, by_source)]
                results.append(pickle.dumps(function(task, bytes(data))))
            return {"result": results}

        dataset = ray.data.read_binary_files(list(by_source), include_paths=True)
        rows = dataset.map_batches(process, batch_size=RAY_BATCH_SIZE, batch_format="numpy")
        for row in rows.iter_rows():
            yield pickle.loads(row["result"])


def _local_path(path: str, known: dict[str, Any]) -> str:
    # Ray reports local paths without the leading slash on some versions.
    return path if path in known else "/" + path.lstrip("/")
