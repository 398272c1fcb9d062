"""Real servers for the platform's tests: ``xaiready serve`` under uvicorn on 127.0.0.1, and a throwaway
PostgreSQL cluster (Debian's ``postgresql`` package) that the tests start and stop themselves."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_token(data: Path, team: str, *, admin: bool = False, db: str | None = None) -> str:
    """``xaiready token create``, through the CLI's own entry point."""
    from xaiready.cli import main

    out = io.StringIO()
    argv = ["token", "create", "--team", team, "--data", str(data)] + (["--admin"] if admin else [])
    argv += ["--db", db] if db else []
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0
    return out.getvalue().strip()


class Server:
    """``python -m xaiready serve`` in a process of its own; ``start()`` waits for /healthz."""

    def __init__(self, data: Path, *, db: str | None = None, workers: int = 1, extra: tuple[str, ...] = ()):
        self.data, self.db, self.workers, self.extra = Path(data), db, workers, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.data / f"server-{self.port}.log"

    def start(self, workers: int | None = None, timeout_s: float = 60.0) -> Server:
        workers = self.workers if workers is None else workers
        cmd = [sys.executable, "-m", "xaiready", "serve", "--port", str(self.port), "--data", str(self.data),
               "--workers", str(workers), *self.extra]
        if self.db:
            cmd += ["--db", self.db]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.data.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and \
            httpx.get(self.url + "/healthz", timeout=5).json() == {"status": "ok"}

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def wait_job(client: httpx.Client, job_id: int, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {job}")


# ---- PostgreSQL -------------------------------------------------------------------------------------------

def _as_postgres(cmd: list[str]) -> list[str]:
    """Root may not run the server: the cluster belongs to the ``postgres`` user."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *cmd] if runuser else ["su", "postgres", "-c", " ".join(cmd)]


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway cluster in a temporary folder on a free port, trusting local connections."""

    def __init__(self):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="xaiready-pg-"))
        self.port = free_port()

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(data), "-U", "xaiready", "--auth=trust",
                                     "-E", "UTF8"]), check=True, capture_output=True)
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w",
                                     "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                                           "-c max_connections=300 -c fsync=off", "start"]),
                       check=True, capture_output=True)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://xaiready@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        import psycopg

        name = "xr_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w",
                                     "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def worker_pids(server: Server) -> list[int]:
    """The server's worker processes (its children running ``xaiready.serve.worker``), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid and b"xaiready.serve.worker" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)
