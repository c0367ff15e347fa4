"""The web layer of ``cvprep serve`` (FastAPI): one static page, ``GET /info`` and
``POST /predict``. Needs the ``serve`` extra.

Every upload is hostile until cvprep's reader has decoded it: the body is read at most up to
the byte limit (a declared ``Content-Length`` over it is refused before reading anything),
and the bytes go to :func:`cvprep.read_image` with the pixel limit, nowhere else.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from cvprep.serve.service import PredictionService, UploadRejected, rejection

# Room for a multipart envelope (boundaries, part headers) around an image of max_bytes.
MULTIPART_SLACK = 64 * 1024
# The page's own script and style are inline; images are data: or blob: URLs. Nothing else
# may load, from anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'"
)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a POST body over ``limit`` bytes gets 413 and is not read further;
    the message names ``max_bytes``, the limit on the image itself."""

    def __init__(self, app: Any, limit: int, max_bytes: int) -> None:
        self.app, self.limit, self.max_bytes = app, limit, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        received, started = 0, False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        name = parse_qs(scope.get("query_string", b"").decode()).get("name", ["upload"])[0]
        refusal = rejection(
            name, "too_large", f"upload is over the limit of {self.max_bytes} bytes"
        )
        response = JSONResponse(refusal.body, status_code=refusal.status)
        await response(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _page() -> str:
    return (files("cvprep.serve") / "static" / "index.html").read_text(encoding="utf-8")


async def _upload(request: Request, name: str) -> tuple[bytes, str]:
    """The uploaded bytes and their name: the raw body, or the form field ``file``."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise rejection(name, "not_image", "no file in the form field `file`")
        return await upload.read(), upload.filename or name
    return await request.body(), name


def create_app(service: PredictionService) -> FastAPI:
    """The application around a loaded :class:`PredictionService`.

    ``POST /predict`` takes the image as the request body (any content type) or as the
    multipart form field ``file``; ``?explain=true`` adds ``heatmap`` and ``?steps=true``
    ``image`` and ``steps``; ``?name=`` names a raw-body upload. It answers the object that
    ``cvprep predict --json`` prints for an image, or that object with ``error`` and a 4xx
    status: 413 too many bytes or pixels, 415 not an image, 400 empty, 422 corrupt or
    truncated.
    """
    # No /docs or /redoc: their pages load scripts from a CDN.
    app = FastAPI(title="cvprep serve", docs_url=None, redoc_url=None)
    app.add_middleware(
        BodyLimit, limit=service.max_bytes + MULTIPART_SLACK, max_bytes=service.max_bytes
    )
    page = _page()
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get("/info")
    def info() -> dict[str, Any]:
        return service.info()

    @app.post("/predict")
    async def predict(
        request: Request, explain: bool = False, steps: bool = False, name: str = "upload"
    ) -> JSONResponse:
        try:
            data, name = await _upload(request, name)
            body = await run_in_threadpool(
                service.predict, data, name, explain=explain, steps=steps
            )
        except UploadRejected as refusal:
            return JSONResponse(refusal.body, status_code=refusal.status)
        return JSONResponse(body)

    return app


def run_server(service: PredictionService, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn, one process: the model is loaded once)."""
    import uvicorn

    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
