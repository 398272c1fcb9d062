"""The job queue, persisted in the database: jobs are claimed with a lease that their worker renews.

A claim is a conditional UPDATE (``WHERE status = 'queued'``), so two workers never take the same
job, on SQLite and PostgreSQL alike. A job whose worker vanished (its lease ran out) is queued
again, up to ``MAX_ATTEMPTS`` times; so queued and interrupted jobs survive a server restart.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update

from .db import transaction
from .tables import Job, Model, ReadinessReport, now

LEASE_S = 30.0
MAX_ATTEMPTS = 3


def claim(factory, worker: str, lease_s: float = LEASE_S) -> dict | None:
    """Take the oldest claimable job for ``worker``; returns its spec (job, model) or None."""
    for _ in range(5):  # another worker may win the race for the first candidates
        with transaction(factory) as s:
            moment = now()
            candidates = s.scalars(select(Job.id).where(or_(
                Job.status == "queued", (Job.status == "running") & (Job.lease_until < moment)))
                .order_by(Job.id).limit(8)).all()
        if not candidates:
            return None
        for job_id in candidates:
            spec = _try_claim(factory, job_id, worker, lease_s)
            if spec is not None:
                return spec
    return None


def _try_claim(factory, job_id: int, worker: str, lease_s: float) -> dict | None:
    with transaction(factory) as s:
        moment = now()
        taken = s.execute(update(Job).where(Job.id == job_id).where(or_(
            Job.status == "queued", (Job.status == "running") & (Job.lease_until < moment)))
            .values(status="running", worker=worker, attempts=Job.attempts + 1, started_at=moment,
                    lease_until=moment + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False))
        if taken.rowcount != 1:
            return None
        job = s.get(Job, job_id)
        s.refresh(job)
        if job.attempts > MAX_ATTEMPTS:
            job.status, job.finished_at = "failed", moment
            job.error = {"kind": "worker", "message": f"the job's worker stopped {MAX_ATTEMPTS} times while "
                                                      "running it (server restarts or lost workers)"}
            return None
        model = s.get(Model, job.model_id)
        return {"job": {"id": job.id, "kind": job.kind, "params": dict(job.params or {}), "team_id": job.team_id,
                        "attempts": job.attempts},
                "model": {"id": model.id, "name": model.name, "version": model.version, "path": model.path,
                          "format": model.format, "arch": model.arch, "arch_kwargs": model.arch_kwargs,
                          "trusted": bool(model.trusted), "filename": model.filename}}


def _owned(s, job_id: int, worker: str) -> Job | None:
    job = s.get(Job, job_id, with_for_update=True)
    return job if job is not None and job.status == "running" and job.worker == worker else None


def renew(factory, job_id: int, worker: str, *, progress: float | None = None, message: str | None = None,
          lease_s: float = LEASE_S) -> bool:
    """Extend the lease (and record progress); False when the job is no longer this worker's."""
    with transaction(factory) as s:
        job = _owned(s, job_id, worker)
        if job is None:
            return False
        job.lease_until = now() + timedelta(seconds=lease_s)
        if progress is not None:
            job.progress = max(0.0, min(1.0, float(progress)))
        if message is not None:
            job.message = message[:500]
        return True


def finish(factory, job_id: int, worker: str, *, result: dict | None = None, error: dict | None = None,
           report: dict | None = None) -> None:
    """Record the outcome (done with ``result``, or failed with ``error``) and a check's readiness report."""
    with transaction(factory) as s:
        job = _owned(s, job_id, worker)
        if job is None:
            return
        job.status = "failed" if error else "done"
        job.result, job.error = result, error
        job.finished_at, job.lease_until = now(), None
        if not error:
            job.progress = 1.0
        if report is not None:
            s.add(ReadinessReport(model_id=job.model_id, job_id=job.id, verdict=report.get("verdict"),
                                  error_kind=(report.get("error") or {}).get("kind"), report=report))


def release(factory, job_id: int, worker: str, why: str) -> None:
    """Put an interrupted job back in the queue (the worker is shutting down)."""
    with transaction(factory) as s:
        job = _owned(s, job_id, worker)
        if job is not None:
            job.status, job.worker, job.lease_until, job.progress = "queued", None, None, 0.0
            job.attempts = max(0, job.attempts - 1)
            job.message = why
