"""The Ray engine for verify and preprocess (``pip install 'cvprep[ray]'``).

Files are read as bytes by Ray Data (``read_binary_files``) and handed to the same per-file
functions as the local engine, which decode them with cvprep's own reader: a corrupt file
becomes a reject in the report, exactly as locally, instead of failing the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from cvprep.batch import FileResult
from cvprep.errors import CvprepError

BATCH_SIZE = 16


def _ensure_ray(address: str | None, workers: int) -> Any:
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
        if address:
            ray.init(address=address, **options)  # an existing cluster
        else:
            ray.init(num_cpus=workers or None, **options)  # a local one, started here
    return ray


def run_with_ray(
    function: Callable[..., FileResult],
    tasks: list[Any],
    *,
    workers: int,
    address: str | None = None,
) -> Iterator[FileResult]:
    """Yield one result per task; each task must have a ``source`` path."""
    if not tasks:
        return iter(())
    ray = _ensure_ray(address, workers)
    by_source = {task.source: task for task in tasks}
    ray.data.DataContext.get_current().enable_progress_bars = False

    def process(batch: dict[str, Any]) -> dict[str, list[str]]:
        results = []
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            task = by_source[_local_path(path, by_source)]
            results.append(json.dumps(asdict(function(task, bytes(data)))))
        return {"result": results}

    dataset = ray.data.read_binary_files(list(by_source), include_paths=True)
    rows = dataset.map_batches(process, batch_size=BATCH_SIZE, batch_format="numpy")
    return (FileResult(**json.loads(row["result"])) for row in rows.iter_rows())


def _local_path(path: str, known: dict[str, Any]) -> str:
    # Ray reports local paths without the leading slash on some versions.
    return path if path in known else "/" + path.lstrip("/")
