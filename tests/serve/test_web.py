"""The pages over plain HTTP against a real ``xaiready serve``: sign-in and its cookie, team isolation
(another team's ids are 404 pages), the admin-only trust toggle, upload errors shown on the form, and
hostile names escaped."""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import pytest

from .servers import wait_job

ARCH = "xaiready.testing.zoo:HealthyCNN"
HOSTILE = '<img src=x onerror="alert(1)">&<script>alert(2)</script>'


def api_upload(client, path, name, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/models", files={"file": (path.name, fh)}, data={"name": name, **fields})


@contextmanager
def signed_in(server, token: str):
    """A client that signed in through the login form, so that it carries the page cookie."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/login", data={"token": token, "next": "/models"})
        assert r.status_code == 303 and r.headers["location"] == "/models", r.text
        yield client


@pytest.fixture(scope="module")
def vision_model(server, tokens, model_files):
    """A model of team vision, with a finished check job."""
    with server.client(tokens["member"]) as c:
        model = api_upload(c, model_files["HealthyCNN"], HOSTILE, arch=ARCH).json()
        job = c.post(f"/api/models/{model['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        assert wait_job(c, job["id"])["status"] == "done"
        return {**model, "job": job["id"]}


def test_pages_need_a_signed_in_team(server, vision_model):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for url in ("/models", f"/models/{vision_model['id']}", f"/models/{vision_model['id']}/explain", "/jobs",
                    f"/jobs/{vision_model['job']}", f"/jobs/{vision_model['job']}/files/report.json"):
            r = c.get(url)
            assert r.status_code == 303, (url, r.status_code)
            assert r.headers["location"].startswith("/login?next=" + url.split("?")[0]), r.headers["location"]
        assert c.get("/login").status_code == 200
    with httpx.Client(base_url=server.url, timeout=30, cookies={"xaiready_token": "xr_not-a-token"}) as c:
        r = c.get("/models")
        assert r.status_code == 303 and "reason=" in r.headers["location"]


def test_login_sets_an_httponly_strict_cookie_and_logout_clears_it(server, tokens):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/login", data={"token": tokens["member"], "next": "/jobs"})
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = c.get("/models")
        assert page.status_code == 200 and "team <span class=\"team\">vision</span>" in page.text
        r = c.post("/logout")
        assert r.status_code == 303 and c.get("/models").status_code == 303


def test_login_refuses_a_bad_token_and_foreign_redirects(server, tokens):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/login", data={"token": "xr_wrong", "next": "/models"})
        assert r.status_code == 401 and 'id="login-error"' in r.text and "set-cookie" not in r.headers
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            r = c.post("/login", data={"token": tokens["member"], "next": target})
            assert r.headers["location"] == "/models", target


def test_another_teams_ids_are_404_pages(server, tokens, vision_model):
    with signed_in(server, tokens["other"]) as c:
        listed = c.get("/models")
        assert listed.status_code == 200 and "onerror" not in listed.text and "No models yet" in listed.text
        mid, jid = vision_model["id"], vision_model["job"]
        for method, url in (("GET", f"/models/{mid}"), ("GET", f"/models/{mid}/explain"), ("GET", f"/jobs/{jid}"),
                            ("GET", f"/jobs/{jid}/events"), ("GET", f"/jobs/{jid}/files/report.json"),
                            ("POST", f"/models/{mid}/check"), ("POST", f"/models/{mid}/trust")):
            r = c.request(method, url, data={"trusted": "true"} if method == "POST" else None)
            assert r.status_code == 404, (url, r.status_code)
            assert r.headers["content-type"].startswith("text/html") and 'id="error-message"' in r.text
        assert c.get("/models/999999").text.count("no model 999999") == 1  # same answer as a missing id


def test_hostile_model_names_are_escaped(server, tokens, vision_model):
    with signed_in(server, tokens["member"]) as c:
        for url in ("/models", f"/models/{vision_model['id']}", f"/models/{vision_model['id']}/explain",
                    f"/jobs/{vision_model['job']}", "/jobs"):
            page = c.get(url).text
            assert "<script>alert(2)" not in page and "<img src=x" not in page, url
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in c.get("/models").text


def test_the_page_shows_the_report_of_the_model(server, tokens, vision_model):
    with signed_in(server, tokens["member"]) as c:
        page = c.get(f"/models/{vision_model['id']}").text
        assert 'data-verdict="full"' in page
        for section in ('id="checks"', 'id="cam-layers"', 'id="break"', 'id="conversion"', 'id="history"'):
            assert section in page, section
        assert "gradient-correct" in page and "pill accent\">default" in page
        report = c.get(f"/jobs/{vision_model['job']}/files/report.json")
        assert report.status_code == 200 and report.json()["verdict"] == "full"


def test_only_an_admin_sets_trust_and_each_change_is_recorded(server, tokens, vision_model):
    mid = vision_model["id"]
    with signed_in(server, tokens["member"]) as c:
        assert 'id="trust-toggle"' not in c.get(f"/models/{mid}").text
        r = c.post(f"/models/{mid}/trust", data={"trusted": "true"})
        assert r.status_code == 403 and "only a team admin" in r.text
    with signed_in(server, tokens["admin"]) as c:
        assert 'id="trust-toggle"' in c.get(f"/models/{mid}").text
        assert c.post(f"/models/{mid}/trust", data={"trusted": "true"}).status_code == 303
        assert c.post(f"/models/{mid}/trust", data={"trusted": "false"}).status_code == 303
    with server.client(tokens["member"]) as api:
        model = api.get(f"/api/models/{mid}").json()
        assert model["trusted"] is False and [e["trusted"] for e in model["trust_history"]][-2:] == [True, False]


def test_a_refused_upload_is_shown_on_the_form(server, tokens, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with signed_in(server, tokens["member"]) as c, open(empty, "rb") as fh:
        r = c.post("/models", files={"file": ("empty.onnx", fh)}, data={"name": "x"})
        assert r.status_code == 422 and 'id="upload-error"' in r.text and "empty" in r.text
        r = c.post(f"/models/{1}/explain", data={"methods": "gradcam"})
        assert r.status_code in (400, 404) and r.headers["content-type"].startswith("text/html")


def test_a_dataset_run_from_the_page_ends_in_its_report(server, tokens, vision_model, model_files):
    with signed_in(server, tokens["member"]) as c:
        image = model_files["image"].read_bytes()
        r = c.post(f"/models/{vision_model['id']}/run", files=[("images", ("a.png", image)), ("images", ("b.png", image))],
                   data={"methods": "saliency", "metrics": "sparseness", "resize": "32,32"})
        assert r.status_code == 303, r.text
        job_id = int(r.headers["location"].rsplit("/", 1)[1])
        with server.client(tokens["member"]) as api:
            assert wait_job(api, job_id)["status"] == "done"
        page = c.get(f"/jobs/{job_id}").text
        assert f'src="/jobs/{job_id}/files/report.html"' in page and "2 images" in page
        report = c.get(f"/jobs/{job_id}/files/report.html")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "sandbox" in report.headers["content-security-policy"] and "<html" in report.text.lower()


def test_a_refused_model_shows_why_on_its_badge_page_and_job(server, tokens, model_files):
    with server.client(tokens["member"]) as api:
        model = api_upload(api, model_files["hostile"], "downloaded").json()
        job = api.post(f"/api/models/{model['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        assert wait_job(api, job["id"])["status"] == "failed"
    assert not model_files["marker"].exists(), "the pickle's payload ran"
    with signed_in(server, tokens["member"]) as c:
        row = c.get("/models").text.split(f'data-model-id="{model["id"]}"')[1].split("</tr>")[0]
        assert 'data-verdict="refused"' in row and "refused: untrusted" in row
        page = c.get(f"/models/{model['id']}").text
        assert 'id="load-error"' in page and "untrusted" in page and 'id="checks"' not in page
        failed = c.get(f"/jobs/{job['id']}").text
        assert 'id="job-error"' in failed and "untrusted" in failed


def test_job_progress_streams_to_the_page_with_the_cookie(server, tokens, vision_model):
    with signed_in(server, tokens["member"]) as c:
        r = c.post(f"/models/{vision_model['id']}/check", data={"input_shape": "1,3,32,32"})
        assert r.status_code == 303
        job_id = c.get("/jobs").text.split('href="/jobs/')[1].split('"')[0]  # the newest job is listed first
        events = []
        with c.stream("GET", f"/jobs/{job_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
        assert events[-1] == "done" and set(events[:-1]) <= {"progress"}, events
