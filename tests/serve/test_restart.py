"""Jobs live in the database: queued jobs survive a server restart and run once workers are back."""

from __future__ import annotations

from .servers import Server, create_token, wait_job
from .test_api import ARCH, upload


def test_queued_jobs_survive_a_restart(tmp_path, db, model_files):
    srv = Server(tmp_path, db=db)
    srv.start(workers=0)  # nothing runs the jobs: they stay queued
    try:
        token = create_token(tmp_path, "vision", db=db)
        with srv.client(token) as c:
            mid = upload(c, model_files["HealthyCNN"], "healthy", arch=ARCH).json()["id"]
            jobs = [c.post(f"/api/models/{mid}/check", json={"input_shape": "1,3,32,32"}).json()["job"]["id"]
                    for _ in range(3)]
            assert {c.get(f"/api/jobs/{j}").json()["status"] for j in jobs} == {"queued"}
        srv.stop()
        srv.start(workers=1)
        with srv.client(token) as c:
            finished = [wait_job(c, j) for j in jobs]
            assert [j["status"] for j in finished] == ["done"] * 3
            assert len(c.get(f"/api/models/{mid}").json()["reports"]) == 3
    finally:
        srv.stop()
