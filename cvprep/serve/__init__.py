"""``cvprep serve``: a local web page (and ``POST /predict`` for scripts) to try a run's model.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``pip install
"cvprep[serve]"``. Binds 127.0.0.1 unless told otherwise, loads nothing from the internet
(one self-contained page shipped in the package), and decodes uploads only with
:func:`cvprep.read_image`, within byte and pixel limits.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Callable

from cvprep.errors import CvprepError, ParameterError
from cvprep.io import DEFAULT_MAX_PIXELS

# Imported lazily: ``cvprep --help`` must not load TensorFlow (the service module does).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024

# Import name → the distribution that provides it.
REQUIRED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}
INSTALL_HINT = 'pip install "cvprep[serve]"  (or, in a checkout: pip install -e ".[serve]")'


def missing_packages() -> list[str]:
    """The distributions of the ``serve`` extra that are not installed."""
    return [dist for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tta: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Load RUN's model once and serve the page and the API until interrupted.

    Raises
    ------
    CvprepError
        When the ``serve`` extra is not installed (the message says what to install).
    ParameterError
        For a port outside 1–65535 or a non-positive limit.
    """
    missing = missing_packages()
    if missing:
        raise CvprepError(
            f"cvprep serve needs the serve extra ({', '.join(missing)} missing): {INSTALL_HINT}"
        )
    if not 1 <= port <= 65535:
        raise ParameterError(f"`port` should be between 1 and 65535. Received: port={port}")
    from cvprep.serve.app import run_server
    from cvprep.serve.service import PredictionService

    service = PredictionService(run, max_bytes=max_bytes, max_pixels=max_pixels, tta=tta)
    if not is_loopback(host):
        log(f"warning: listening on {host}: other machines can reach this page and upload")
    log(
        f"cvprep serve: http://{host}:{port}/ ({service.run}, classes {service.classes}); "
        "Ctrl+C stops"
    )
    run_server(service, host, port)


__all__ = ["DEFAULT_MAX_BYTES", "is_loopback", "missing_packages", "serve"]
