"""What a model can do to the platform: a hostile pickle is refused (nothing runs), and a trusted model
that aborts, hangs or eats memory fails its own job only; the server and the next job carry on."""

from __future__ import annotations

import pytest

from .servers import wait_job
from .test_api import ARCH, upload


def _check(c, model_id: int, **params) -> dict:
    r = c.post(f"/api/models/{model_id}/check", json={"input_shape": "1,3,32,32", **params})
    assert r.status_code == 202, r.text
    return wait_job(c, r.json()["job"]["id"])


@pytest.fixture(scope="module")
def healthy_id(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        return upload(c, model_files["HealthyCNN"], "healthy", arch=ARCH).json()["id"]


def test_hostile_pickle_is_refused_as_untrusted_and_nothing_runs(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        r = upload(c, model_files["hostile"], "hostile")
        assert r.status_code == 201, r.text
        assert r.json()["format"] in ("pytorch-pickle", "pytorch-eager", "pickle")
        job = _check(c, r.json()["id"])
        assert job["status"] == "failed"
        assert job["error"]["kind"] == "untrusted", job["error"]
        assert job["error"]["message"].startswith("hostile.pt") and str(server.data) not in job["error"]["message"]
        assert not model_files["marker"].exists(), "the pickle's payload ran"
        model = c.get(f"/api/models/{r.json()['id']}").json()
        assert model["trusted"] is False
        assert model["reports"][0]["error"]["kind"] == "untrusted"  # the refusal is part of its history
        assert next(m for m in c.get("/api/models").json() if m["id"] == model["id"])["error"] == "untrusted"
    assert server.alive()


def test_only_an_admin_sets_trust_and_every_change_is_recorded(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        mid = upload(c, model_files["sleep"], "sleepy").json()["id"]
        r = c.post(f"/api/models/{mid}/trust", json={"trusted": True})
        assert r.status_code == 403 and r.json()["error"]["kind"] == "forbidden"
        assert c.get(f"/api/models/{mid}").json()["trusted"] is False
    with server.client(tokens["admin"]) as c:
        assert c.post(f"/api/models/{mid}/trust", json={"trusted": True}).json()["trusted"] is True
        model = c.post(f"/api/models/{mid}/trust", json={"trusted": False}).json()
        assert model["trusted"] is False
        assert [e["trusted"] for e in model["trust_history"]] == [True, False]
        assert all(e["at"] for e in model["trust_history"])


def _trusted(server, tokens, path, name) -> int:
    with server.client(tokens["member"]) as c:
        mid = upload(c, path, name).json()["id"]
    with server.client(tokens["admin"]) as c:
        assert c.post(f"/api/models/{mid}/trust", json={"trusted": True}).status_code == 200
    return mid


def test_a_model_that_aborts_fails_its_job_and_the_next_job_succeeds(server, tokens, model_files, healthy_id):
    mid = _trusted(server, tokens, model_files["abort"], "aborts")
    with server.client(tokens["member"]) as c:
        job = _check(c, mid)
        assert job["status"] == "failed"
        assert job["error"]["kind"] == "crash" and "SIGABRT" in job["error"]["message"], job["error"]
        assert server.alive()
        assert _check(c, healthy_id)["status"] == "done"


def test_a_job_past_its_time_limit_is_stopped(server, tokens, model_files, healthy_id):
    mid = _trusted(server, tokens, model_files["sleep"], "hangs")
    with server.client(tokens["member"]) as c:
        job = _check(c, mid, timeout_s=3)
        assert job["status"] == "failed"
        assert job["error"]["kind"] == "timeout" and "3 s" in job["error"]["message"], job["error"]
        assert _check(c, healthy_id)["status"] == "done"


def test_a_job_over_its_memory_limit_fails_with_the_reason(server, tokens, model_files, healthy_id):
    mid = _trusted(server, tokens, model_files["hog"], "hog")
    with server.client(tokens["member"]) as c:
        job = _check(c, mid, memory_mb=256)
        assert job["status"] == "failed"
        assert job["error"]["kind"] == "too-large" and "256 MiB" in job["error"]["message"], job["error"]
        assert _check(c, healthy_id)["status"] == "done"


def test_a_killed_worker_is_started_again(server, tokens, healthy_id):
    import os
    import signal
    import time

    from .servers import worker_pids

    before = worker_pids(server)
    assert len(before) == 1
    os.kill(before[0], signal.SIGKILL)  # the worker itself, not a job: as the kernel's OOM killer would
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker_pids(server) in ([], before):
        time.sleep(0.2)
    after = worker_pids(server)
    assert len(after) == 1 and after != before
    with server.client(tokens["member"]) as c:
        assert _check(c, healthy_id)["status"] == "done"
    assert server.alive()
