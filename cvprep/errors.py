"""cvprep's own exception types."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

RejectKind = Literal["empty", "truncated", "not_image", "too_large", "unreadable"]


class CvprepError(Exception):
    """Base class of every error cvprep raises on purpose."""


class ParameterError(CvprepError, ValueError):
    """A bad argument of a cvprep function (the CLI reports it as a usage error, exit 2).

    A ``ValueError``, so ``except ValueError`` keeps working for callers.
    """


class ImageError(CvprepError):
    """An image file (or byte string) that cvprep refuses to load.

    Attributes
    ----------
    source : str
        The file path, or ``"<bytes>"`` when decoding from memory.
    kind : {"empty", "truncated", "not_image", "too_large", "unreadable"}
        A short machine-readable reason, used in reports and summaries.
    reason : str
        A human-readable explanation.
    """

    def __init__(self, source: str | os.PathLike[str], kind: RejectKind, reason: str) -> None:
        self.source = os.fspath(source)
        self.kind = kind
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class FileSystemError(CvprepError):
    """An operating-system error on a file or folder (permission denied, disk full, a file
    where a folder should be, ...), as one line that names the path.

    Every job converts ``OSError`` into this at one place, its entry point
    (:func:`filesystem_errors`), so the Python API and the CLI report it the same way.

    Attributes
    ----------
    path : str
        The file or folder the operation failed on ("" when the system did not say).
    errno : int or None
        The system's error number (``errno.ENOSPC``, ``errno.EACCES``, ...).
    """

    def __init__(self, path: str, reason: str, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)

    @classmethod
    def from_os_error(cls, exc: OSError) -> FileSystemError:
        path = os.fspath(exc.filename) if exc.filename is not None else ""
        if exc.filename2 is not None:
            path = f"{path} -> {os.fspath(exc.filename2)}"
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(path, reason, exc.errno)


F = TypeVar("F", bound=Callable[..., Any])


def filesystem_errors(function: F) -> F:
    """Decorate a job's entry point: an ``OSError`` raised anywhere inside it (in worker
    processes too: the pool re-raises it here) becomes one :class:`FileSystemError`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FileSystemError:
            raise
        except OSError as exc:
            raise FileSystemError.from_os_error(exc) from exc

    return wrapper  # type: ignore[return-value]
