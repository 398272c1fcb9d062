"""``xaiready serve --engine ray``: jobs run as Ray tasks on an existing Ray cluster.

A dispatcher thread in the server claims jobs from the database, exactly like a local worker does,
and submits each as a task with ``max_calls=1``: every job gets a fresh Ray worker process, so its
memory limit (setrlimit) dies with it, and a crash is Ray's WorkerCrashedError, which fails that job
only. The dispatcher enforces the wall-clock limit with ``ray.cancel(force=True)`` and keeps at most
``--workers`` jobs in flight. The database must be one every node can reach (PostgreSQL) and the
data folder a path every node sees (a shared file system). Progress is reported when the job ends.
"""

from __future__ import annotations

import socket
import threading
import time

from . import queue
from .config import ServeSettings
from .limits import for_job
from .worker import RENEW_S, crash_error, execute


def _run_job(spec: dict, data: str, job_dir: str, memory_mb: int, timeout_s: float) -> tuple:
    from pathlib import Path

    Path(job_dir).mkdir(parents=True, exist_ok=True)
    return execute(spec, data, job_dir, memory_mb, timeout_s, lambda *_: None)


def connect(address: str | None) -> None:
    """Join the existing cluster (``auto``: the one this machine belongs to); one line when it cannot."""
    from .._lazy import import_optional
    from ..errors import UsageError

    ray = import_optional("ray")
    if ray.is_initialized():
        return
    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        from ..errors import first_line

        raise UsageError(f"cannot reach the Ray cluster at {address or 'auto'}: {first_line(exc, 200)}",
                         hint="start one with ray start --head, or pass --ray-address HOST:PORT") from None


class RayDispatcher:
    def __init__(self, settings: ServeSettings):
        from .db import make_engine, sessions

        self.settings = settings
        self.engine = make_engine(settings.db_url, pool_size=2)
        self.factory = sessions(self.engine)
        self.name = f"{socket.gethostname()}:ray"
        self.capacity = max(1, settings.workers)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="xaiready-ray-dispatcher", daemon=True)

    def start(self) -> None:
        import ray

        connect(self.settings.ray_address)
        self.remote = ray.remote(max_calls=1, num_cpus=1, max_retries=0)(_run_job)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.engine.dispose()

    def _loop(self) -> None:
        import ray

        running: dict = {}  # ObjectRef -> (job id, started, timeout)
        last_renew = time.monotonic()
        while not self.stopping.is_set():
            while len(running) < self.capacity:
                spec = queue.claim(self.factory, self.name)
                if spec is None:
                    break
                params = spec["job"]["params"]
                timeout, memory = for_job(self.settings.job_timeout_s, self.settings.job_memory_mb, params)
                job_dir = self.settings.jobs_dir / str(spec["job"]["id"])
                ref = self.remote.remote(spec, str(self.settings.data), str(job_dir), memory, timeout)
                running[ref] = (spec["job"]["id"], time.monotonic(), timeout)
            if not running:
                self.stopping.wait(self.settings.poll_s)
                continue
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0.3)
            for ref in ready:
                job_id, _, _ = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    outcome = ("failed", {**crash_error(None), "message": "the job's Ray worker died "
                                          f"({type(exc).__name__}); the model or its code crashed"}, None)
                self._record(job_id, outcome)
            now = time.monotonic()
            for ref, (job_id, started, timeout) in list(running.items()):
                if now - started > timeout:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    self._record(job_id, ("failed", {"kind": "timeout", "message": f"the job ran past its time "
                                                     f"limit of {timeout:g} s and was stopped"}, None))
            if now - last_renew > RENEW_S:
                for job_id, _, _ in running.values():
                    queue.renew(self.factory, job_id, self.name)
                last_renew = now
        for ref, (job_id, _, _) in running.items():  # shutting down: the jobs go back to the queue
            ray.cancel(ref, force=True)
            queue.release(self.factory, job_id, self.name, "the server stopped; the job was queued again")

    def _record(self, job_id: int, outcome: tuple) -> None:
        if outcome[0] == "done":
            payload = outcome[1]
            queue.finish(self.factory, job_id, self.name, result=payload.get("result"), report=payload.get("report"))
        else:
            queue.finish(self.factory, job_id, self.name, error=outcome[1], report=outcome[2])
