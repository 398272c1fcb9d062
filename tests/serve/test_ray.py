"""``--engine ray``: jobs run as Ray tasks on an existing cluster (a local head the test starts), with the
database on the PostgreSQL cluster that the services tests start. A crash fails its own job only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import Server, create_token, free_port, wait_job
from .test_api import ARCH, upload

pytestmark = pytest.mark.services
RAY = Path(sys.executable).parent / "ray"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head of its own (``ray start --block``), stopped by its process id: other Ray clusters on
    the machine are left alone."""
    import time

    import httpx

    pytest.importorskip("ray")
    port, client_port = free_port(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp = tmp_path_factory.mktemp("ray")
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", f"--ray-client-server-port={client_port}",
                             f"--temp-dir={temp}", "--disable-usage-stats"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the GCS answers once the head is up
        try:
            httpx.get(f"http://{address}", timeout=1)
        except httpx.RemoteProtocolError:
            break
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        break
    time.sleep(3)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def test_jobs_run_as_ray_tasks_and_a_crash_fails_only_its_job(tmp_path, postgres, ray_cluster, model_files):
    db = postgres.fresh_database()
    srv = Server(tmp_path, db=db, workers=2, extra=("--engine", "ray", "--ray-address", ray_cluster)).start()
    try:
        admin = create_token(tmp_path, "vision", admin=True, db=db)
        with srv.client(admin) as c:
            healthy = upload(c, model_files["HealthyCNN"], "healthy", arch=ARCH).json()["id"]
            aborts = upload(c, model_files["abort"], "aborts").json()["id"]
            assert c.post(f"/api/models/{aborts}/trust", json={"trusted": True}).status_code == 200
            crash = c.post(f"/api/models/{aborts}/check", json={"input_shape": "1,3,32,32"}).json()["job"]["id"]
            ok = c.post(f"/api/models/{healthy}/check", json={"input_shape": "1,3,32,32"}).json()["job"]["id"]
            failed = wait_job(c, crash, timeout_s=180)
            assert failed["status"] == "failed" and failed["error"]["kind"] == "crash", failed
            done = wait_job(c, ok, timeout_s=180)
            assert done["status"] == "done" and done["result"]["verdict"] == "full", done
            assert done["finished_at"] and srv.alive()
    finally:
        srv.stop()
