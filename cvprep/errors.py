"""cvprep's own exception types."""

from __future__ import annotations

import os
from typing import Literal

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
