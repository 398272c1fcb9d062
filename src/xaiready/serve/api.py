"""The REST API under ``/api`` (DESIGN 3.5). Routes are thin: read the request, call service.py, answer.

Every route needs ``Authorization: Bearer TOKEN``. Job routes answer 202 with ``{"job": {id, status}}``;
the job runs in a worker process and is followed with ``GET /api/jobs/{id}`` or its event stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from . import service
from .auth import Principal, resolve

router = APIRouter(prefix="/api")
FINISHED = ("done", "failed")


def context(request: Request):
    """(session factory, settings) of the running app."""
    return request.app.state.factory, request.app.state.settings


_KNOWN_TOKENS: dict[tuple[int, str], tuple[float, Principal]] = {}
TOKEN_CACHE_S = 5.0  # a token's row is read again after this long; saves a query on busy clients


def principal(request: Request) -> Principal:
    """The caller, from its bearer token (remembered for a few seconds, by hash, per app)."""
    import time

    from .auth import token_hash

    header = request.headers.get("authorization") or ""
    key = (id(request.app), token_hash(header))
    hit = _KNOWN_TOKENS.get(key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    factory, _ = context(request)
    with factory() as s:
        who = resolve(s, header or None)
    if len(_KNOWN_TOKENS) > 10_000:
        _KNOWN_TOKENS.clear()
    _KNOWN_TOKENS[key] = (time.monotonic() + TOKEN_CACHE_S, who)
    return who


Caller = Depends(principal)


@router.post("/models", status_code=201, summary="Upload a model (a file, or a .zip of a folder)")
def upload_model(request: Request, file: Annotated[UploadFile, File(description="model file or .zip of a folder")],
                 name: Annotated[str | None, Form()] = None,
                 arch: Annotated[str | None, Form(description="MODULE:CLASS installed on the server")] = None,
                 arch_kwargs: Annotated[str | None, Form(description="JSON object")] = None,
                 who: Principal = Caller):
    factory, settings = context(request)
    return service.register_model(factory, settings, who, file.file, file.filename, name, arch, arch_kwargs)


@router.get("/models", summary="The team's models with their latest verdict")
def list_models(request: Request, who: Principal = Caller):
    return JSONResponse(service.list_models(context(request)[0], who))  # plain JSON data: no encoder pass


@router.get("/models/{model_id}", summary="A model with every readiness report run on it")
def get_model(model_id: int, request: Request, who: Principal = Caller):
    return JSONResponse(service.get_model(context(request)[0], who, model_id))


@router.post("/models/{model_id}/trust", summary="Set the trust flag (team admins only; recorded)")
async def set_trust(model_id: int, request: Request, who: Principal = Caller):
    await run_in_threadpool(service.require_model, context(request)[0], who, model_id)
    params, _ = await read_params(request)
    if "trusted" not in params:
        raise UsageError("give {\"trusted\": true|false}")
    trusted = _bool(params["trusted"], "trusted")
    return await run_in_threadpool(service.set_trust, context(request)[0], who, model_id, trusted)


_JOB_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "input": {"type": "string", "format": "binary"},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "methods": {"type": "string"}, "metrics": {"type": "string"}, "target": {"type": "integer"},
        "layer": {"type": "string"}, "task": {"type": "string"}, "input_shape": {"type": "string"},
        "resize": {"type": "string"}, "timeout_s": {"type": "number"}, "memory_mb": {"type": "integer"}}}}}}}


async def _submit(kind: str, model_id: int, request: Request, who: Principal):
    factory, settings = context(request)
    await run_in_threadpool(service.require_model, factory, who, model_id)
    params, files = await read_params(request)
    params = job_params(params)
    job = await run_in_threadpool(service.submit_job, factory, settings, who, model_id, kind, params, files)
    return JSONResponse({"job": job}, status_code=202)


@router.post("/models/{model_id}/check", status_code=202, openapi_extra=_JOB_BODY,
             summary="Queue a readiness check: {input_shape | input upload, task, target, layer}")
async def check(model_id: int, request: Request, who: Principal = Caller):
    return await _submit("check", model_id, request, who)


@router.post("/models/{model_id}/explain", status_code=202, openapi_extra=_JOB_BODY,
             summary="Queue explanations of uploaded images: images, methods, [target], [layer]")
async def explain(model_id: int, request: Request, who: Principal = Caller):
    return await _submit("explain", model_id, request, who)


@router.post("/models/{model_id}/evaluate", status_code=202, openapi_extra=_JOB_BODY,
             summary="Queue metrics of methods on uploaded images: images, methods, metrics")
async def evaluate(model_id: int, request: Request, who: Principal = Caller):
    return await _submit("evaluate", model_id, request, who)


@router.post("/models/{model_id}/run", status_code=202, openapi_extra=_JOB_BODY,
             summary="Queue a dataset run (DESIGN 3.4) over uploaded images")
async def dataset_run(model_id: int, request: Request, who: Principal = Caller):
    return await _submit("run", model_id, request, who)


@router.get("/jobs", summary="The team's latest jobs")
def list_jobs(request: Request, model_id: int | None = None, who: Principal = Caller):
    return service.list_jobs(context(request)[0], who, model_id)


@router.get("/jobs/{job_id}", summary="A job: {status: queued|running|done|failed, progress, result, error}")
def get_job(job_id: int, request: Request, who: Principal = Caller):
    return JSONResponse(service.get_job(context(request)[0], who, job_id))


@router.get("/jobs/{job_id}/events", summary="Server-sent events of the job's progress, until it ends",
            response_class=StreamingResponse)
async def job_events(job_id: int, request: Request, who: Principal = Caller):
    factory = context(request)[0]
    first = await run_in_threadpool(service.get_job, factory, who, job_id)  # 404 before the stream starts
    return StreamingResponse(event_stream(request, factory, who, job_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def event_stream(request: Request, factory, who: Principal, job_id: int, job: dict, poll_s: float = 0.3,
                       keepalive_s: float = 15.0):
    last, quiet = None, 0.0
    while True:
        state = (job["status"], job["progress"], job["message"])
        if state != last:
            event = job["status"] if job["status"] in FINISHED else "progress"
            yield f"event: {event}\ndata: {json.dumps(job)}\n\n"
            last, quiet = state, 0.0
        if job["status"] in FINISHED or await request.is_disconnected():
            return
        await asyncio.sleep(poll_s)
        quiet += poll_s
        if quiet >= keepalive_s:  # a comment line keeps proxies from closing an idle stream
            yield ": keep-alive\n\n"
            quiet = 0.0
        job = await run_in_threadpool(service.get_job, factory, who, job_id)


_MEDIA = {".png": "image/png", ".html": "text/html", ".npy": "application/octet-stream", ".json": "application/json"}


@router.get("/jobs/{job_id}/artifacts/{name}", summary="A PNG, HTML, NPY or JSON file the job produced")
def artifact(job_id: int, name: str, request: Request, who: Principal = Caller):
    factory, settings = context(request)
    path = service.artifact_path(factory, settings, who, job_id, name)
    return FileResponse(path, media_type=_MEDIA.get(path.suffix.lower(), "application/octet-stream"))


# ---- request parsing ---------------------------------------------------------------------------------------

async def read_params(request: Request) -> tuple[dict, dict]:
    """(fields, {field: [(filename, file)]}) from a JSON or multipart body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_files=256, max_fields=256)
        params, files = {}, {}
        for key, value in form.multi_items():
            if hasattr(value, "filename") and hasattr(value, "file"):
                if value.filename:
                    files.setdefault(key, []).append((value.filename, value.file))
            else:
                params[key] = value
        return params, files
    raw = await request.body()
    if not raw.strip():
        return {}, {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the body is not valid JSON ({exc.msg})") from None
    if not isinstance(params, dict):
        raise UsageError("the body must be a JSON object")
    return params, {}


def _bool(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"{what} must be true or false, not '{value}'")


def _names(value) -> list[str] | None:
    if value is None or value == "":
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _number(value, what: str, kind=int):
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number, not '{value}'") from None


def _csv(value) -> str | None:
    """'1,3,32,32' from a list or a string (the CLI's spelling of shapes and per-channel values)."""
    if value is None or value == "":
        return None
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


_KNOWN = {"input_shape", "task", "target", "layer", "methods", "metrics", "resize", "mean", "std", "layout",
          "output", "sanity", "timeout_s", "memory_mb", "chunk_size"}


def job_params(raw: dict) -> dict:
    """The job's params, typed and checked here so that a bad request is a 400, not a failed job."""
    unknown = set(raw) - _KNOWN - {"method"}
    if unknown:
        raise UsageError(f"unknown parameter '{sorted(unknown)[0]}'", hint=f"known: {', '.join(sorted(_KNOWN))}")
    task = raw.get("task") or None
    if task and task not in ("classification", "segmentation", "regression", "sequence"):
        raise UsageError(f"unknown task '{task}'", hint="classification, segmentation, regression or sequence")
    layout = raw.get("layout") or None
    if layout and layout not in ("NCHW", "NHWC"):
        raise UsageError(f"layout must be NCHW or NHWC, not '{layout}'")
    sanity = raw.get("sanity") or None
    if sanity and sanity not in ("cheap", "full", "off"):
        raise UsageError(f"sanity must be cheap, full or off, not '{sanity}'")
    output = raw.get("output")
    if isinstance(output, str) and output.lstrip("-").isdigit():
        output = int(output)
    return {"input_shape": _csv(raw.get("input_shape")), "task": task, "target": _number(raw.get("target"), "target"),
            "layer": raw.get("layer") or None, "methods": _names(raw.get("methods") or raw.get("method")),
            "metrics": _names(raw.get("metrics")), "resize": _csv(raw.get("resize")), "mean": _csv(raw.get("mean")),
            "std": _csv(raw.get("std")), "layout": layout, "output": output, "sanity": sanity,
            "timeout_s": _number(raw.get("timeout_s"), "timeout_s", float),
            "memory_mb": _number(raw.get("memory_mb"), "memory_mb"),
            "chunk_size": _number(raw.get("chunk_size"), "chunk_size")}
