"""The pages of ``xaiready serve``: server-rendered Jinja2 templates on top of service.py, as the API.

    /login, /logout             a bearer token in an HttpOnly cookie
    /models                     the team's models with their verdict badges; the upload form
    /models/{id}                checks, CAM layers, the gradient break, conversion, verdict history, trust
    /models/{id}/explain        upload images, pick methods; the job page then shows the overlays
    /jobs, /jobs/{id}           job progress (server-sent events), then its result or the run's report

Jobs are only queued here; worker processes run them, exactly as for the API. Every value on a page
goes through Jinja2's autoescaping: model names, file names and messages come from users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse

from ..errors import UsageError, XaiReadyError
from . import service
from .api import event_stream, job_params
from .auth import Principal
from .errors import NotFoundError, status_of
from .web_session import (
    COOKIE,
    LoginNeeded,
    check_token,
    forget,
    make_page_route,
    page_principal,
    remember,
    safe_next,
)
from .web_views import (
    badge,
    duration,
    image_size,
    latest_check_jobs,
    method_catalogue,
    metric_names,
    own_warnings,
    report_view,
    short_when,
    size,
    when,
)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
RUN_METRICS = ("deletion", "insertion", "sparseness", "complexity")  # offered for dataset runs; cheap ones


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, short=short_when, size=size)
    env.globals.update(duration=duration, own_warnings=own_warnings)
    return env


_ENV = None


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    who = getattr(request.state, "principal", None)
    html = _ENV.get_template(name).render(request=request, who=who, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, kind: str, message: str) -> HTMLResponse:
    titles = {404: "Not found", 403: "Not allowed", 400: "That request is not valid", 413: "Too large"}
    return render(request, "error.html", status, title=titles.get(status, "Something went wrong"), kind=kind,
                  message=message, status_code=status)


router = APIRouter(route_class=make_page_route(error_page), include_in_schema=False)
Viewer = Depends(page_principal)


def mount(app) -> None:
    """Called by app.py: the pages and their stylesheet."""
    app.include_router(router)


def _factory(request: Request):
    return request.app.state.factory, request.app.state.settings


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---- signing in --------------------------------------------------------------------------------------------

@router.get("/")
def home(request: Request):
    return _see_other("/models" if request.cookies.get(COOKIE) else "/login")


@router.get("/login")
def login_form(request: Request, next: str | None = None, reason: str | None = None):
    return render(request, "login.html", next=safe_next(next), reason=reason)


@router.post("/login")
def login(request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/models"):
    try:
        check_token(request, token)
    except XaiReadyError as exc:
        return render(request, "login.html", status_of(exc.kind), next=safe_next(next),
                      error=exc.to_dict()["message"])
    response = _see_other(safe_next(next))
    remember(response, token)
    return response


@router.post("/logout")
def logout():
    response = _see_other("/login")
    forget(response)
    return response


@router.get("/static/{name}")
def static(name: str):
    path = STATIC / name
    if name.startswith(".") or "/" in name or not path.is_file():
        raise NotFoundError(f"no file '{name}'")
    media = {".css": "text/css", ".svg": "image/svg+xml", ".js": "text/javascript"}.get(path.suffix, "text/plain")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})


# ---- models ------------------------------------------------------------------------------------------------

def _models_page(request: Request, who: Principal, status: int = 200, **extra) -> HTMLResponse:
    factory, _ = _factory(request)
    models = service.list_models(factory, who)
    checks = latest_check_jobs(service.list_jobs(factory, who, limit=500))
    rows = [{**m, "badge": badge(m["verdict"], m["error"], checks.get(m["id"]))} for m in models]
    pending = any(r["badge"]["job"] for r in rows)
    return render(request, "models.html", status, models=rows, pending=pending, **extra)


@router.get("/models")
def models(request: Request, who: Principal = Viewer):
    return _models_page(request, who)


@router.post("/models")
def upload(request: Request, file: Annotated[UploadFile, File()], name: Annotated[str, Form()] = "",
           arch: Annotated[str, Form()] = "", input_shape: Annotated[str, Form()] = "",
           who: Principal = Viewer):
    """Register the upload and queue its readiness check; a refused upload is shown on the form."""
    factory, settings = _factory(request)
    form = {"name": name, "arch": arch, "input_shape": input_shape}
    try:
        if not file.filename:
            raise UsageError("choose a model file to upload")
        params = job_params({"input_shape": input_shape.strip() or None})
        model = service.register_model(factory, settings, who, file.file, file.filename, name or None, arch or None)
    except XaiReadyError as exc:
        return _models_page(request, who, status_of(exc.kind), upload_error=exc.to_dict()["message"], form=form)
    service.submit_job(factory, settings, who, model["id"], "check", params)
    return _see_other(f"/models/{model['id']}")


@router.get("/models/{model_id}")
def model_page(model_id: int, request: Request, who: Principal = Viewer):
    factory, _ = _factory(request)
    model = service.get_model(factory, who, model_id)
    jobs = service.list_jobs(factory, who, model_id=model_id, limit=50)
    check_job = next((j for j in jobs if j["kind"] == "check"), None)
    latest = model["reports"][0] if model["reports"] else None
    history = [{"verdict": r.get("verdict"), "error": r.get("error"), "checked_at": r.get("checked_at"),
                "job_id": r.get("job_id"), "input_shape": r.get("input_shape"),
                "failed": sum(1 for c in r.get("checks") or [] if c.get("status") == "fail")}
               for r in model["reports"]]
    view = report_view(latest)
    return render(request, "model.html", model=model, report=view, history=history, jobs=jobs,
                  badge=badge(model["verdict"], ((latest or {}).get("error") or {}).get("kind"), check_job),
                  input_shape=",".join(str(d) for d in (view or {}).get("input_shape") or []),
                  resize=image_size((view or {}).get("input_shape")), run_metrics=RUN_METRICS,
                  methods=method_catalogue(model["verdict"]))


@router.post("/models/{model_id}/check")
def recheck(model_id: int, request: Request, input_shape: Annotated[str, Form()] = "",
            task: Annotated[str, Form()] = "", target: Annotated[str, Form()] = "", who: Principal = Viewer):
    factory, settings = _factory(request)
    service.require_model(factory, who, model_id)
    params = job_params({"input_shape": input_shape.strip() or None, "task": task or None, "target": target or None})
    service.submit_job(factory, settings, who, model_id, "check", params)
    return _see_other(f"/models/{model_id}")


@router.post("/models/{model_id}/trust")
def trust(model_id: int, request: Request, trusted: Annotated[str, Form()], who: Principal = Viewer):
    factory, _ = _factory(request)
    service.set_trust(factory, who, model_id, trusted == "true")
    return _see_other(f"/models/{model_id}#trust")


@router.get("/models/{model_id}/explain")
def explain_form(model_id: int, request: Request, who: Principal = Viewer):
    factory, _ = _factory(request)
    model = service.get_model(factory, who, model_id)
    view = report_view(model["reports"][0] if model["reports"] else None)
    return render(request, "explain.html", model=model, report=view, methods=method_catalogue(model["verdict"]),
                  resize=image_size((view or {}).get("input_shape")),
                  layers=[row for row in (view or {}).get("layers", []) if row["usable"]])


def _uploads(images: list[UploadFile]) -> dict:
    chosen = [(f.filename, f.file) for f in images if f.filename]
    if not chosen:
        raise UsageError("choose at least one image", hint="PNG or JPEG, or a .npy array")
    return {"images": chosen}


@router.post("/models/{model_id}/explain")
def explain(model_id: int, request: Request, images: Annotated[list[UploadFile], File()],
            methods: Annotated[list[str], Form()] = (), target: Annotated[str, Form()] = "",
            layer: Annotated[str, Form()] = "", resize: Annotated[str, Form()] = "",
            sanity: Annotated[str, Form()] = "cheap", who: Principal = Viewer):
    factory, settings = _factory(request)
    service.require_model(factory, who, model_id)
    if not methods:
        raise UsageError("pick at least one method")
    params = job_params({"methods": list(methods), "target": target or None, "layer": layer or None,
                         "resize": resize.strip() or None, "sanity": sanity or None})
    job = service.submit_job(factory, settings, who, model_id, "explain", params, _uploads(images))
    return _see_other(f"/jobs/{job['id']}")


@router.post("/models/{model_id}/run")
def dataset_run(model_id: int, request: Request, images: Annotated[list[UploadFile], File()],
                methods: Annotated[list[str], Form()] = (), metrics: Annotated[list[str], Form()] = (),
                resize: Annotated[str, Form()] = "", who: Principal = Viewer):
    factory, settings = _factory(request)
    service.require_model(factory, who, model_id)
    known = set(metric_names())
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UsageError(f"unknown metric '{unknown[0]}'")
    params = job_params({"methods": list(methods) or None, "metrics": list(metrics) or None,
                         "resize": resize.strip() or None})
    job = service.submit_job(factory, settings, who, model_id, "run", params, _uploads(images))
    return _see_other(f"/jobs/{job['id']}")


# ---- jobs --------------------------------------------------------------------------------------------------

def _model_names(factory, who: Principal) -> dict[int, dict]:
    return {m["id"]: m for m in service.list_models(factory, who)}


@router.get("/jobs")
def jobs(request: Request, who: Principal = Viewer):
    factory, _ = _factory(request)
    listed = service.list_jobs(factory, who, limit=200)
    return render(request, "jobs.html", jobs=listed, models=_model_names(factory, who),
                  pending=any(j["status"] in ("queued", "running") for j in listed))


@router.get("/jobs/{job_id}")
def job_page(job_id: int, request: Request, who: Principal = Viewer):
    factory, _ = _factory(request)
    job = service.get_job(factory, who, job_id)
    model = service.get_model(factory, who, job["model_id"])
    result = job.get("result") or {}
    artifacts = set(result.get("artifacts") or [])
    return render(request, "job.html", job=job, model=model, result=result, artifacts=artifacts,
                  report_html="report.html" in artifacts and job["kind"] == "run")


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: int, request: Request, who: Principal = Viewer):
    """The API's event stream, authorised by the cookie (EventSource cannot send a header)."""
    from starlette.concurrency import run_in_threadpool

    factory, _ = _factory(request)
    first = await run_in_threadpool(service.get_job, factory, who, job_id)
    return StreamingResponse(event_stream(request, factory, who, job_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_MEDIA = {".png": "image/png", ".html": "text/html; charset=utf-8", ".json": "application/json",
          ".npy": "application/octet-stream"}


@router.get("/jobs/{job_id}/files/{name}")
def job_file(job_id: int, name: str, request: Request, who: Principal = Viewer):
    """A job's artifact, as ``/api/jobs/{id}/artifacts/{name}`` serves it, for the signed-in team."""
    factory, settings = _factory(request)
    path = service.artifact_path(factory, settings, who, job_id, name)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}
    if path.suffix.lower() == ".html":  # the run report: its own inline script may run, nothing else
        headers["Content-Security-Policy"] = "sandbox allow-scripts; default-src 'none'; img-src data:; " \
                                             "style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    disposition = "inline" if path.suffix.lower() in (".png", ".html") else "attachment"
    return FileResponse(path, media_type=_MEDIA.get(path.suffix.lower(), "application/octet-stream"),
                        headers=headers, content_disposition_type=disposition, filename=name)


__all__ = ["router", "mount", "LoginNeeded"]
