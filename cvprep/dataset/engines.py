"""Where per-file work runs: a local process pool, or Ray for clusters (``cvprep[ray]``).

Every job hands an engine a per-file function and a list of tasks; the engine yields one
result per task, in any order. Both engines call the same function, so outputs and rejects
are identical (tested). Workers receive paths, not pixels: each decodes, processes, encodes
and writes its own file, so the parent only streams small result records (DESIGN.md: decode +
encode is most of the cost, and moving pixels between processes would double it).

Tasks carry a ``file`` (a :class:`cvprep.dataset.sources.SourceFile`: something that opens
its bytes, whatever the source) or, as before sources existed, a ``source`` path. Functions
take ``(task, data=None)``, where ``data`` holds the file's bytes when they were read before
the function runs: by Ray (``read_binary_files``), or by the parent process, which streams a
compressed tar once, in order, and hands each task its bytes (``map``'s ``data``; at most a
few chunks per worker are in flight, so memory stays flat).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import cv2

from cvprep import params
from cvprep.errors import CvprepError

ENGINES = ("local", "ray")
MAX_WORKERS = 512
CHUNK_SIZE = 32
RAY_BATCH_SIZE = 16
RAY_WINDOW = 512  # tasks whose bytes the parent read, handed to Ray at once
IN_FLIGHT_CHUNKS = 4  # per worker, when the parent reads the bytes


class Engine(Protocol):
    def map(
        self,
        function: Callable[..., Any],
        tasks: Sequence[Any],
        data: Iterable[Any] | None = None,
    ) -> Iterator[Any]:
        """Yield ``function(task)`` for every task (``function(task, bytes)`` with ``data``,
        an iterable of each task's bytes in task order), in any order."""
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
STOP_GRACE_SECONDS = 10  # how long an abandoned job waits for its workers' current files
_stop: Any = None  # in a pool worker: set when the parent abandons the job


def init_worker(stop: Any = None) -> None:
    global _stop
    _stop = stop
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)
    _tune_malloc()


def _unless_stopped(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or nothing once the parent has abandoned the job."""
    if _stop is not None and _stop.is_set():
        return None
    return function(*args)


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

    def map(
        self,
        function: Callable[..., Any],
        tasks: Sequence[Any],
        data: Iterable[Any] | None = None,
    ) -> Iterator[Any]:
        if self.workers == 0 or len(tasks) <= 1 or not _workers_can_start():
            # The caller's process keeps its own OpenCV threads and malloc settings: the
            # worker initialiser is for pool workers only.
            yield from map(function, tasks) if data is None else map(function, tasks, data)
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
        stop = context.Event()
        guarded = functools.partial(_unless_stopped, function)
        pool = context.Pool(workers, initializer=init_worker, initargs=(stop,))
        try:
            if data is None:
                yield from pool.imap_unordered(guarded, tasks, chunksize=chunk)
            else:
                limit = IN_FLIGHT_CHUNKS * chunk * workers
                yield from _bounded(pool, guarded, zip(tasks, data, strict=True), chunk, limit)
        except (Exception, GeneratorExit):
            _wind_down(pool, stop)
            raise
        finally:
            pool.terminate()


def _wind_down(pool: Any, stop: Any) -> None:
    """Stop an abandoned job (an error, a full disk, a caller that stopped reading) without
    killing a worker in the middle of a file: queued tasks are skipped, the files being
    written are finished or removed by their own writer, for at most
    :data:`STOP_GRACE_SECONDS`. (Ctrl-C reaches the workers too: each removes its own
    temporary file, and the pool is terminated at once.)"""
    stop.set()
    pool.close()
    joiner = threading.Thread(target=pool.join, daemon=True)
    joiner.start()
    joiner.join(STOP_GRACE_SECONDS)


def _apply(function: Callable[..., Any], pair: tuple[Any, Any]) -> Any:
    return function(*pair)


def _bounded(
    pool: Any, function: Callable[..., Any], pairs: Iterator[Any], chunk: int, limit: int
) -> Iterator[Any]:
    """``imap_unordered`` over (task, bytes) pairs with at most ``limit`` of them handed out
    and not yet returned: the pool's feeder thread would otherwise read the whole archive
    into its queue."""
    slots = threading.Semaphore(limit)
    stopped = threading.Event()

    def feed() -> Iterator[Any]:
        for pair in pairs:
            while not slots.acquire(timeout=0.1):
                if stopped.is_set():
                    return
            yield pair

    try:
        for result in pool.imap_unordered(
            functools.partial(_apply, function), feed(), chunksize=chunk
        ):
            slots.release()
            yield result
    finally:
        stopped.set()


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

    def map(
        self,
        function: Callable[..., Any],
        tasks: Sequence[Any],
        data: Iterable[Any] | None = None,
    ) -> Iterator[Any]:
        if not tasks:
            return
        ray = self._ray()
        ray.data.DataContext.get_current().enable_progress_bars = False
        paths = [_path_of(task) for task in tasks]
        if data is None and all(paths):
            yield from self._read_files(ray, function, tasks, paths)
            return
        # Archive members and array images: Ray's workers open the archive themselves, or
        # receive the bytes the parent streamed, a window of tasks at a time.
        if data is None:
            windows: Iterable[list[Any]] = [list(tasks)]
        else:
            windows = _windows(zip(tasks, data, strict=True), RAY_WINDOW)
        for window in windows:
            process = _window_process(function, window, with_data=data is not None)
            items = [{"index": i} for i in range(len(window))]
            rows = ray.data.from_items(items).map_batches(
                process, batch_size=RAY_BATCH_SIZE, batch_format="numpy"
            )
            for row in rows.iter_rows():
                yield pickle.loads(row["result"])

    def _read_files(
        self, ray: Any, function: Callable[..., Any], tasks: Sequence[Any], paths: list[Any]
    ) -> Iterator[Any]:
        """Files of their own: Ray Data reads the bytes (``read_binary_files``)."""
        by_path = dict(zip(paths, tasks, strict=True))

        def process(batch: dict[str, Any]) -> dict[str, list[bytes]]:
            results = []
            for path, data in zip(batch["path"], batch["bytes"], strict=True):
                task = by_path[_local_path(path, by_path)]
                results.append(pickle.dumps(function(task, bytes(data))))
            return {"result": results}

        dataset = ray.data.read_binary_files(list(by_path), include_paths=True)
        rows = dataset.map_batches(process, batch_size=RAY_BATCH_SIZE, batch_format="numpy")
        for row in rows.iter_rows():
            yield pickle.loads(row["result"])


def _window_process(
    function: Callable[..., Any], window: list[Any], *, with_data: bool
) -> Callable[[dict[str, Any]], dict[str, list[bytes]]]:
    """Ray's batch function for a window of tasks (or of (task, bytes) pairs)."""

    def process(batch: dict[str, Any]) -> dict[str, list[bytes]]:
        results = []
        for index in batch["index"]:
            job = window[int(index)]
            results.append(pickle.dumps(_apply(function, job) if with_data else function(job)))
        return {"result": results}

    return process


def _path_of(task: Any) -> str | None:
    """The file holding a task's bytes, if it is a file of its own."""
    file = getattr(task, "file", None)
    return file.path if file is not None else getattr(task, "source", None)


def _windows(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window


def _local_path(path: str, known: dict[str, Any]) -> str:
    # Ray reports local paths without the leading slash on some versions.
    return path if path in known else "/" + path.lstrip("/")
