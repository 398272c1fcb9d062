"""Worker processes: each claims jobs from the database and runs every job in a child process of its own.

    xaiready serve --workers N   starts N of them on this machine;
    python -m xaiready.serve.worker --db URL --data DIR   starts one anywhere that sees the database
                                 and the data folder.

The worker imports the frameworks once and forks a child per job, so a job starts fast and everything
it does stays in the child: a segfault, an abort, an endless loop (killed at the wall-clock limit) or a
memory blow-up (refused by setrlimit) fails that job only. The worker, the server and the other jobs
keep going.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from . import queue
from .limits import apply as apply_limits
from .limits import for_job as job_limits
from .limits import is_out_of_memory

RENEW_S = 5.0        # lease renewal; well inside queue.LEASE_S
PROGRESS_S = 0.25    # at most this often a progress row is written


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def crash_error(exitcode: int | None) -> dict:
    if exitcode is not None and exitcode < 0:
        name = _signal_name(-exitcode)
        why = {"SIGSEGV": "a segmentation fault", "SIGABRT": "an abort", "SIGKILL": "killed (often: out of memory)",
               "SIGXCPU": "over its CPU time limit", "SIGBUS": "a bus error", "SIGILL": "an illegal instruction"}
        kind = "timeout" if name == "SIGXCPU" else "crash"
        return {"kind": kind, "message": f"the job's process died of {why.get(name, name)} ({name}); "
                                         "the model or its code crashed, the server is unaffected"}
    return {"kind": "crash", "message": f"the job's process exited with code {exitcode} before reporting"}


def execute(spec: dict, data: str, job_dir: str, memory_mb: int, timeout_s: float, progress) -> tuple:
    """Run one job in *this* process, under its limits: ("done", payload) or ("failed", error, report).

    Only ever called in a process made for the job (a forked child, or a single-use Ray worker), since
    the limits stay on the process."""
    from ..errors import XaiReadyError, first_line
    from .tasks import run_task, shown_path

    try:
        apply_limits(memory_mb, timeout_s)
        return ("done", run_task(spec, Path(data), Path(job_dir), progress))
    except XaiReadyError as exc:
        exc.path = shown_path(exc.path, spec["model"], Path(data), Path(job_dir))  # not the server's folders
        return ("failed", exc.to_dict(), getattr(exc, "report", None))
    except BaseException as exc:  # a bug or a framework error: reported as the job's failure, one line
        if is_out_of_memory(exc):
            return ("failed", {"kind": "too-large", "message": f"the job went over its memory limit of {memory_mb} "
                                                             f"MiB ({type(exc).__name__}: {first_line(exc, 200)})"},
                    None)
        if os.environ.get("XAIREADY_DEBUG"):
            traceback.print_exc()
        return ("failed", {"kind": "internal", "message": f"{type(exc).__name__}: {first_line(exc, 300)}"}, None)


def _child(spec: dict, data: str, job_dir: str, memory_mb: int, timeout_s: float, conn) -> None:
    """The forked process of one job; it reports through ``conn`` and never touches the database."""
    try:
        os.setpgid(0, 0)  # its own process group: the worker can kill the job and anything it started
    except OSError:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's handler: a job stops when told
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        outcome = execute(spec, data, job_dir, memory_mb, timeout_s,
                          lambda f, m="": conn.send(("progress", float(f), str(m))))
        conn.send(outcome)
    except Exception:  # the pipe is gone: the worker sees the exit code
        code = 1
    finally:
        try:
            conn.close()
        finally:
            os._exit(code)  # skip the atexit handlers inherited from the worker (its database pool)


class Worker:
    def __init__(self, db: str, data: str, *, name: str | None = None, timeout_s: float = 600.0,
                 memory_mb: int = 8192, poll_s: float = 0.2, parent_pid: int | None = None):
        from .db import make_engine, sessions

        self.engine = make_engine(db, pool_size=2)
        self.factory = sessions(self.engine)
        self.data = Path(data)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.timeout_s, self.memory_mb, self.poll_s = float(timeout_s), int(memory_mb), float(poll_s)
        self.parent_pid = parent_pid
        self.stopping = False
        self.fork = multiprocessing.get_context("fork")

    def orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        while not self.stopping and not self.orphaned():
            try:
                spec = queue.claim(self.factory, self.name)
                if spec is None:
                    time.sleep(self.poll_s)
                    continue
                self.run_one(spec)
            except Exception as exc:  # the database went away for a moment: the lease brings the job back
                from ..errors import first_line

                print(f"xaiready worker {self.name}: {type(exc).__name__}: {first_line(exc, 300)}; retrying",
                      file=sys.stderr, flush=True)
                time.sleep(1.0)
        self.engine.dispose()

    def _stop(self, *_):
        self.stopping = True

    def limits_for(self, params: dict) -> tuple[float, int]:
        return job_limits(self.timeout_s, self.memory_mb, params)

    def run_one(self, spec: dict) -> None:
        job_id = spec["job"]["id"]
        job_dir = self.data / "jobs" / str(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        timeout, memory = self.limits_for(spec["job"]["params"])
        receiver, sender = self.fork.Pipe(duplex=False)
        child = self.fork.Process(target=_child, args=(spec, str(self.data), str(job_dir), memory, timeout, sender),
                                  name=f"xaiready-job-{job_id}")
        child.start()
        sender.close()
        outcome = self._watch(job_id, child, receiver, timeout)
        receiver.close()
        if outcome == "released":
            return
        if outcome is None:
            child.join(5)
            outcome = ("failed", crash_error(child.exitcode), None)
        if outcome[0] == "done":
            payload = outcome[1]
            queue.finish(self.factory, job_id, self.name, result=payload.get("result"), report=payload.get("report"))
        else:
            queue.finish(self.factory, job_id, self.name, error=outcome[1], report=outcome[2])

    def _kill(self, child) -> None:
        for target in (-child.pid, child.pid):  # the process group first, then the child itself
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        child.join(5)

    def _watch(self, job_id: int, child, receiver, timeout: float):
        """Relay progress and renew the lease until the child reports, dies or runs out of time."""
        started = last_renew = last_progress = time.monotonic()
        pending: tuple | None = None
        while True:
            if self.stopping or self.orphaned():
                self._kill(child)
                queue.release(self.factory, job_id, self.name, "the worker stopped; the job was queued again")
                return "released"
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                self._kill(child)
                return ("failed", {"kind": "timeout", "message": f"the job ran past its time limit of {timeout:g} s "
                                                                 "and was stopped"}, None)
            try:
                ready = receiver.poll(0.2)
                message = receiver.recv() if ready else None
            except (EOFError, OSError):
                return None  # the child died without reporting
            now = time.monotonic()
            if message is not None and message[0] in ("done", "failed"):
                child.join(10)
                return message
            if message is not None:  # progress
                pending = message
            if pending and now - last_progress >= PROGRESS_S:
                if not queue.renew(self.factory, job_id, self.name, progress=pending[1], message=pending[2]):
                    self._kill(child)
                    return "released"
                pending, last_progress = None, now
                last_renew = now
            elif now - last_renew >= RENEW_S:
                if not queue.renew(self.factory, job_id, self.name):
                    self._kill(child)
                    return "released"
                last_renew = now
            if not child.is_alive() and not receiver.poll(0):
                return None


def preload() -> None:
    """Import the frameworks and xaiready's job code once, before any fork, so that each job's process
    starts with them in place instead of importing them again."""
    import importlib

    import numpy  # noqa: F401

    for name in ("torch", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        try:
            importlib.import_module(name)
        except ImportError:  # a framework that is not installed is not needed by this server's models
            pass
    from ..methods import load_methods

    load_methods()
    for name in ("xaiready.api", "xaiready.readiness.checks", "xaiready.metrics.evaluate", "xaiready.render.heatmap",
                 "xaiready.formats.pytorch", "xaiready.commands._common", "xaiready.serve.tasks"):
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiready.serve.worker",
                                description="run xaiready jobs from the platform's database")
    p.add_argument("--db", required=True, help="the server's database URL")
    p.add_argument("--data", required=True, help="the server's data folder (models and job files)")
    p.add_argument("--name", help="this worker's name in the jobs table (default HOST:PID)")
    p.add_argument("--job-timeout", type=float, default=600.0, metavar="S")
    p.add_argument("--job-memory-mb", type=int, default=8192, metavar="MB")
    p.add_argument("--poll", type=float, default=0.2, metavar="S")
    p.add_argument("--parent-pid", type=int, help="stop when this process (the server) is gone")
    args = p.parse_args(argv)
    preload()
    Worker(args.db, args.data, name=args.name, timeout_s=args.job_timeout, memory_mb=args.job_memory_mb,
           poll_s=args.poll, parent_pid=args.parent_pid).serve_forever()
    return 0


def command(settings, index: int, parent_pid: int) -> list[str]:
    """The command line ``xaiready serve`` starts worker ``index`` with."""
    return [sys.executable, "-m", "xaiready.serve.worker", "--db", settings.db_url, "--data", str(settings.data),
            "--name", f"{socket.gethostname()}:{parent_pid}:w{index}", "--job-timeout", str(settings.job_timeout_s),
            "--job-memory-mb", str(settings.job_memory_mb), "--poll", str(settings.poll_s),
            "--parent-pid", str(parent_pid)]


if __name__ == "__main__":
    sys.exit(main())
