"""The FastAPI application of ``xaiready serve``: migrations and workers in its lifespan, JSON errors,
the API and KServe routers, and the pages when ``xaiready.serve.web`` is present.

Pages are a router module of their own (``web.py`` with its ``templates/``) that calls service.py
like the API does; this module only mounts it.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import XaiReadyError, first_line
from .config import ServeSettings
from .errors import body, status_of

_HTTP_KINDS = {401: "auth", 403: "forbidden", 404: "not-found", 405: "usage", 413: "too-large"}


class UploadLimit:
    """Refuse a request body over the upload limit: from Content-Length before reading, or while reading."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        limit = self.max_bytes + 1024 * 1024  # room for the multipart framing and the other fields
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, self.max_bytes, scope.get("path", ""))
        seen, exceeded = 0, False

        async def counted():
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # the app sees the client go away; the client gets the 413 below
                exceeded = True
                return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await _too_large(send, self.max_bytes, scope.get("path", ""))


async def _too_large(send, max_bytes: int, path: str = ""):
    """413: JSON for the API, a short page for a browser's form post (the pages live outside /api)."""
    import html
    import json

    message = f"the request body is over the upload limit of {max_bytes // 2**20} MiB (the server's --max-upload-mb)"
    if path.startswith(("/api", "/v1")):
        payload, kind = json.dumps(body("too-large", message)).encode(), b"application/json"
    else:
        payload = (f"<!doctype html><title>Too large</title><p>{html.escape(message)}.</p>"
                   "<p><a href=\"/\">Back to the models</a></p>").encode()
        kind = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def start_workers(settings: ServeSettings) -> list[subprocess.Popen]:
    from .worker import command

    return [subprocess.Popen(command(settings, i, os.getpid())) for i in range(settings.workers)]


async def _restart_dead_workers(settings: ServeSettings, procs: list[subprocess.Popen], every_s: float = 2.0):
    """A worker that died (killed, out of memory) is started again; its job comes back with its lease."""
    import sys

    from .worker import command

    while True:
        await asyncio.sleep(every_s)
        for i, p in enumerate(procs):
            if p.poll() is not None:
                print(f"xaiready serve: worker {i} exited with {p.returncode}; starting it again", file=sys.stderr,
                      flush=True)
                procs[i] = subprocess.Popen(command(settings, i, os.getpid()))


def stop_workers(procs: list[subprocess.Popen], wait_s: float = 10.0) -> None:
    """SIGTERM: each worker puts its running job back in the queue and exits; SIGKILL after ``wait_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def create_app(settings: ServeSettings | None = None, *, workers: bool = True) -> FastAPI:
    from .db import make_engine, sessions, upgrade

    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        upgrade(engine)
        app.state.engine, app.state.factory, app.state.settings = engine, sessions(engine), settings
        procs: list = []
        ray_engine = None
        if workers and settings.engine == "ray":
            from .ray_engine import RayDispatcher

            ray_engine = RayDispatcher(settings)
            ray_engine.start()
        elif workers:
            procs = start_workers(settings)
        app.state.workers = procs
        watchdog = asyncio.create_task(_restart_dead_workers(settings, procs)) if procs else None
        try:
            yield
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if ray_engine is not None:
                ray_engine.stop()
            stop_workers(procs)
            engine.dispose()

    app = FastAPI(title="xaiready", version=__version__, lifespan=lifespan,
                  description="Model registry, readiness verdicts, explanations and metrics as jobs (DESIGN 3.5).")

    @app.exception_handler(XaiReadyError)
    async def _xaiready_error(request: Request, exc: XaiReadyError):
        message = exc.to_dict()["message"]
        return JSONResponse(body(exc.kind, message), status_code=status_of(exc.kind),
                            headers={"WWW-Authenticate": "Bearer"} if exc.kind == "auth" else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(body("usage", f"{where}: {first.get('msg', 'invalid request')}"), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = _HTTP_KINDS.get(exc.status_code, "usage")
        return JSONResponse(body(kind, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return JSONResponse(body("internal", f"internal error {type(exc).__name__}: {first_line(exc, 300)}"),
                            status_code=500)

    @app.get("/healthz", summary="Liveness: {\"status\": \"ok\"} (no token)")
    def healthz():
        return {"status": "ok"}

    from .api import router as api_router
    from .kserve import router as kserve_router

    app.include_router(api_router)
    app.include_router(kserve_router)
    try:
        web = importlib.import_module("xaiready.serve.web")
    except ModuleNotFoundError as exc:
        if exc.name != "xaiready.serve.web":
            raise
    else:
        web.mount(app) if hasattr(web, "mount") else app.include_router(web.router)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    return app
