"""What the platform does, independent of HTTP: the API routes and the server-rendered pages both call
these functions, with the caller's Principal, so both see exactly the same registry and jobs.

Every lookup is scoped to the caller's team: another team's model or job is NotFoundError, the same
answer as an id that does not exist.
"""

from __future__ import annotations

import functools
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select

from ..errors import UsageError, XaiReadyError
from .auth import Principal
from .config import ServeSettings
from .db import transaction
from .errors import ForbiddenError, NotFoundError
from .storage import safe_name, save_stream, store_model
from .tables import Job, Model, ReadinessReport, TrustEvent

JOB_KINDS = ("check", "explain", "evaluate", "run")
_INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands datetimes back without their zone)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


# ---- registry ---------------------------------------------------------------------------------------------

def check_arch(arch: str | None) -> str | None:
    """An architecture is a module already installed on the server (MODULE:CLASS), never a file path."""
    if not arch:
        return None
    arch = arch.strip()
    module, sep, cls = arch.partition(":")
    if not sep or not module or not cls or "/" in arch or "\\" in arch or module.endswith(".py"):
        raise UsageError(f"arch '{arch}' is not MODULE:CLASS",
                         hint="name a module installed on the server, e.g. torchvision.models:resnet18")
    return arch


def parse_json_object(text: str | None, what: str) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def register_model(factory, settings: ServeSettings, who: Principal, source: BinaryIO, filename: str | None,
                   name: str | None, arch: str | None = None, arch_kwargs: str | dict | None = None) -> dict:
    """Store an uploaded model as the next version of ``name`` in the caller's team."""
    name = (name or Path(safe_name(filename, "model")).stem).strip()
    if not name or len(name) > 200:
        raise UsageError("a model needs a name of 1 to 200 characters")
    arch = check_arch(arch)
    kwargs = arch_kwargs if isinstance(arch_kwargs, dict) else parse_json_object(arch_kwargs, "arch_kwargs")
    folder_name = uuid.uuid4().hex
    folder = settings.models_dir / folder_name
    try:
        stored = store_model(source, filename, folder, settings.max_upload_bytes)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, XaiReadyError):  # name the upload as the user named it, not the server's path
            exc.path = safe_name(filename, "model")
        raise
    with transaction(factory) as s:
        latest = s.scalar(select(func.max(Model.version)).where(Model.team_id == who.team_id, Model.name == name))
        model = Model(team_id=who.team_id, name=name, version=(latest or 0) + 1, format=stored.format,
                      sha256=stored.sha256, path=str(stored.path.relative_to(settings.data)),
                      filename=stored.filename, size=stored.size, arch=arch, arch_kwargs=kwargs, trusted=False)
        s.add(model)
        s.flush()
        return model_summary(model)


def model_summary(model: Model) -> dict:
    return {"id": model.id, "name": model.name, "version": model.version, "format": model.format,
            "sha256": model.sha256}


def _own_model(s, who: Principal, model_id: int) -> Model:
    model = s.get(Model, model_id)
    if model is None or model.team_id != who.team_id:
        raise NotFoundError(f"no model {model_id}")
    return model


def require_model(factory, who: Principal, model_id: int) -> None:
    """NotFoundError unless the model is the caller's team's: checked before the request is read further,
    so that a bad request on another team's id answers like a missing id."""
    with factory() as s:
        _own_model(s, who, model_id)


@functools.cache
def _list_statement():
    """Built once: composing this select costs more than running it."""
    from sqlalchemy import bindparam

    latest = (select(ReadinessReport.model_id, func.max(ReadinessReport.id).label("rid"))
              .group_by(ReadinessReport.model_id).subquery())
    return (select(Model.id, Model.name, Model.version, Model.format, Model.sha256, Model.trusted,
                   Model.created_at, ReadinessReport.verdict, ReadinessReport.error_kind,
                   ReadinessReport.created_at.label("checked_at"))
            .outerjoin(latest, latest.c.model_id == Model.id)
            .outerjoin(ReadinessReport, ReadinessReport.id == latest.c.rid)
            .where(Model.team_id == bindparam("team")).order_by(Model.id.desc()))


def list_models(factory, who: Principal) -> list[dict]:
    """The team's models, newest first, each with the verdict of its latest readiness report."""
    with factory() as s:
        rows = s.execute(_list_statement(), {"team": who.team_id}).all()
        return [{"id": r.id, "name": r.name, "version": r.version, "format": r.format, "sha256": r.sha256,
                 "verdict": r.verdict, "error": r.error_kind, "checked_at": iso(r.checked_at),
                 "trusted": bool(r.trusted), "created_at": iso(r.created_at)} for r in rows]


def get_model(factory, who: Principal, model_id: int) -> dict:
    """One model with every readiness report ever run on it (newest first) and its trust history."""
    with factory() as s:
        model = _own_model(s, who, model_id)
        reports = s.scalars(select(ReadinessReport).where(ReadinessReport.model_id == model.id)
                            .order_by(ReadinessReport.id.desc())).all()
        events = s.scalars(select(TrustEvent).where(TrustEvent.model_id == model.id)
                           .order_by(TrustEvent.id)).all()
        return {**model_summary(model), "trusted": bool(model.trusted), "arch": model.arch,
                "arch_kwargs": model.arch_kwargs, "filename": model.filename, "size": model.size,
                "created_at": iso(model.created_at),
                "verdict": reports[0].verdict if reports else None,
                "reports": [{**r.report, "job_id": r.job_id, "checked_at": iso(r.created_at)} for r in reports],
                "trust_history": [{"trusted": e.trusted, "token_id": e.token_id, "at": iso(e.created_at)}
                                  for e in events]}


def set_trust(factory, who: Principal, model_id: int, trusted: bool) -> dict:
    """Only a team admin may let a model's code run; every change is recorded."""
    with transaction(factory) as s:
        model = _own_model(s, who, model_id)
        if not who.admin:
            raise ForbiddenError("only a team admin can set a model's trust flag",
                                 hint="use a token made with xaiready token create --team NAME --admin")
        model.trusted = bool(trusted)
        s.add(TrustEvent(model_id=model.id, token_id=who.token_id, trusted=bool(trusted)))
    return get_model(factory, who, model_id)


def model_by_name(factory, who: Principal, name: str) -> int:
    """The id of the latest version of ``name``, or of version V when given as ``name@V``."""
    base, _, version = name.partition("@")
    with factory() as s:
        query = select(Model.id).where(Model.team_id == who.team_id, Model.name == base)
        if version:
            if not version.isdigit():
                raise UsageError(f"version '{version}' is not a number")
            query = query.where(Model.version == int(version))
        found = s.scalar(query.order_by(Model.version.desc()).limit(1))
    if found is None:
        raise NotFoundError(f"no model named '{name}'")
    return found


# ---- jobs -------------------------------------------------------------------------------------------------

def submit_job(factory, settings: ServeSettings, who: Principal, model_id: int, kind: str, params: dict,
               files: dict[str, list[tuple[str | None, BinaryIO]]] | None = None) -> dict:
    """Queue a job on one of the team's models. ``files`` maps a parameter (``input``, ``images``) to
    uploads, which are saved into the job's folder and named in its params."""
    if kind not in JOB_KINDS:
        raise UsageError(f"unknown job kind '{kind}'")
    with factory() as s:
        _own_model(s, who, model_id)
    staging = settings.uploads_dir / uuid.uuid4().hex
    params = {k: v for k, v in params.items() if v is not None}
    try:
        for field, uploads in (files or {}).items():
            names = []
            for filename, source in uploads:
                name = safe_name(filename, "input")
                if Path(name).suffix.lower() not in _INPUT_SUFFIXES:
                    raise UsageError(f"'{name}' is not an input the server reads",
                                     hint="upload .png, .jpg or .npy files")
                while name in names:
                    name = f"{Path(name).stem}_{len(names)}{Path(name).suffix}"
                save_stream(source, staging / name, settings.max_upload_bytes)
                names.append(name)
            if names:
                params[field] = names[0] if field == "input" else names
        with transaction(factory) as s:
            job = Job(team_id=who.team_id, model_id=model_id, kind=kind, status="queued", params=params,
                      progress=0.0, attempts=0)
            s.add(job)
            s.flush()
            if staging.exists():  # before the commit: no worker sees the job without its files
                dest = settings.jobs_dir / str(job.id)
                dest.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(dest)
            return {"id": job.id, "kind": kind, "status": "queued"}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _own_job(s, who: Principal, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None or job.team_id != who.team_id:
        raise NotFoundError(f"no job {job_id}")
    return job


def job_view(job: Job) -> dict:
    return {"id": job.id, "kind": job.kind, "model_id": job.model_id, "status": job.status,
            "progress": round(float(job.progress or 0.0), 4), "message": job.message, "result": job.result,
            "error": job.error, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at)}


def get_job(factory, who: Principal, job_id: int) -> dict:
    with factory() as s:
        return job_view(_own_job(s, who, job_id))


def list_jobs(factory, who: Principal, model_id: int | None = None, limit: int = 100) -> list[dict]:
    with factory() as s:
        query = select(Job).where(Job.team_id == who.team_id)
        if model_id is not None:
            query = query.where(Job.model_id == model_id)
        return [job_view(j) for j in s.scalars(query.order_by(Job.id.desc()).limit(limit)).all()]


def artifact_path(factory, settings: ServeSettings, who: Principal, job_id: int, name: str) -> Path:
    """A file the job produced, by name; never a path outside the job's folder."""
    with factory() as s:
        job = _own_job(s, who, job_id)
        listed = set((job.result or {}).get("artifacts") or [])
    if name != safe_name(name) or name not in listed:
        raise NotFoundError(f"job {job_id} has no artifact '{name}'")
    path = settings.jobs_dir / str(job_id) / name
    if not path.is_file():
        raise NotFoundError(f"job {job_id} has no artifact '{name}'")
    return path
