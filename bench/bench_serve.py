"""Load test of ``xaiready serve`` on loopback: N concurrent httpx clients for D seconds.

Each client loops over ``GET /api/models`` and, one request in ``--submit-every``, a job submission
(``POST /api/models/{id}/check``). The server runs in its own process with 2 worker processes (real
uvicorn, a real SQLite file or ``--db postgresql://...``). Prints p50/p99 latency per route, the
request rate and the errors (any non-2xx answer or transport error; 0 expected), and how many of
the submitted jobs the workers finished meanwhile.

    python bench/bench_serve.py [--clients 50] [--seconds 60] [--workers 2] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(data: Path, db: str | None) -> str:
    from xaiready.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["token", "create", "--team", "bench", "--data", str(data), *(["--db", db] if db else [])])
    return out.getvalue().strip()


def start_server(data: Path, port: int, workers: int, db: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "xaiready", "serve", "--port", str(port), "--data", str(data),
           "--workers", str(workers), *(["--db", db] if db else [])]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


async def client(url: str, headers: dict, model_id: int, until: float, every: int, lat: dict, errors: dict, seq: int):
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
        i = seq
        while time.monotonic() < until:
            i += 1
            route = "POST /api/models/{id}/check" if i % every == 0 else "GET /api/models"
            t0 = time.perf_counter()
            try:
                if route.startswith("POST"):
                    r = await c.post(f"/api/models/{model_id}/check", json={"input_shape": "1,3,32,32"})
                else:
                    r = await c.get("/api/models")
                ok = r.status_code < 300
            except httpx.HTTPError as exc:
                ok, r = False, exc
            lat[route].append(time.perf_counter() - t0)
            if not ok:
                errors[route].append(getattr(r, "status_code", type(r).__name__))


def job_counts(url: str) -> dict[str, int]:
    """Jobs per status, read from the server's database."""
    from sqlalchemy import func, select

    from xaiready.serve.db import make_engine
    from xaiready.serve.tables import Job

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    finally:
        engine.dispose()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--submit-every", type=int, default=10, help="one job submission in N requests per client")
    p.add_argument("--models", type=int, default=20, help="models registered before the load starts")
    p.add_argument("--db", help="database URL (default: SQLite in a temporary data folder)")
    args = p.parse_args()

    import torch

    from xaiready.testing import zoo

    data = Path(tempfile.mkdtemp(prefix="xaiready-bench-"))
    weights = data / "healthy.pt"
    torch.save(zoo.build("HealthyCNN").state_dict(), weights)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tok = token(data, args.db)
    proc = start_server(data, port, args.workers, args.db)
    headers = {"Authorization": f"Bearer {tok}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            ids = [c.post("/api/models", files={"file": ("healthy.pt", weights.read_bytes())},
                          data={"name": f"m{i % 5}", "arch": "xaiready.testing.zoo:HealthyCNN"}).json()["id"]
                   for i in range(args.models)]
            warm = c.post(f"/api/models/{ids[0]}/check", json={"input_shape": "1,3,32,32"}).json()["job"]["id"]
            for _ in range(600 if args.workers else 0):  # the workers import their frameworks first: measure the steady state
                if c.get(f"/api/jobs/{warm}").json()["status"] in ("done", "failed"):
                    break
                time.sleep(0.2)
        lat: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, list] = defaultdict(list)
        until = time.monotonic() + args.seconds

        async def run():
            await asyncio.gather(*(client(url, headers, ids[0], until, args.submit_every, lat, errors, i)
                                   for i in range(args.clients)))

        t0 = time.monotonic()
        asyncio.run(run())
        wall = time.monotonic() - t0
        total_jobs = len(lat["POST /api/models/{id}/check"])
        counts = job_counts(args.db or f"sqlite:///{data / 'xaiready.db'}")
        print(f"{args.clients} clients, {wall:.1f} s, {args.workers} workers, "
              f"{'PostgreSQL' if args.db else 'SQLite'}, {args.models} models listed per GET")
        print(f"{'route':32s} {'requests':>9s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'errors':>7s}")
        for route in sorted(lat):
            v = lat[route]
            print(f"{route:32s} {len(v):9d} {len(v) / wall:8.1f} {1000 * statistics.median(v):8.1f} "
                  f"{1000 * pct(v, 0.99):8.1f} {1000 * max(v):8.1f} {len(errors[route]):7d}")
        everything = [x for v in lat.values() for x in v]
        print(f"{'all':32s} {len(everything):9d} {len(everything) / wall:8.1f} "
              f"{1000 * statistics.median(everything):8.1f} {1000 * pct(everything, 0.99):8.1f} "
              f"{1000 * max(everything):8.1f} {sum(len(e) for e in errors.values()):7d}")
        if any(errors.values()):
            print("errors:", {k: sorted(set(map(str, v)))[:5] for k, v in errors.items() if v})
        print(f"jobs submitted {total_jobs}; by the end: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return 1 if any(errors.values()) else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
