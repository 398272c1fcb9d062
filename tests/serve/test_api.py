"""The REST API against a real ``xaiready serve`` (uvicorn on 127.0.0.1, a real database, real workers),
driven over HTTP with httpx: upload, check, explain, evaluate, KServe, SSE, auth and team isolation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from .servers import wait_job

ARCH = "xaiready.testing.zoo:HealthyCNN"


def upload(client, path, name, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/models", files={"file": (path.name, fh)}, data={"name": name, **fields})


@pytest.fixture(scope="module")
def healthy(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        r = upload(c, model_files["HealthyCNN"], "healthy", arch=ARCH)
        assert r.status_code == 201, r.text
        return r.json()


def test_healthz_needs_no_token(server):
    with server.client(None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer xr_not-a-token"}, {"Authorization": "Basic abc"}],
                         ids=["none", "unknown", "not-bearer"])
def test_every_api_route_needs_a_valid_token(server, healthy, headers):
    with server.client(None) as c:
        for method, url in [("GET", "/api/models"), ("GET", f"/api/models/{healthy['id']}"),
                            ("POST", f"/api/models/{healthy['id']}/check"), ("GET", "/api/jobs/1"),
                            ("POST", "/v1/models/healthy:explain")]:
            r = c.request(method, url, headers=headers)
            assert r.status_code == 401, (url, r.text)
            assert r.json()["error"]["kind"] == "auth"


def test_upload_answers_201_with_id_version_format_sha256(server, tokens, model_files, healthy):
    import hashlib

    assert healthy["name"] == "healthy" and healthy["format"] == "pytorch-state-dict"
    assert healthy["sha256"] == hashlib.sha256(model_files["HealthyCNN"].read_bytes()).hexdigest()
    with server.client(tokens["member"]) as c:
        again = upload(c, model_files["HealthyCNN"], "healthy", arch=ARCH).json()
        assert again["version"] == healthy["version"] + 1
        listed = {m["id"]: m for m in c.get("/api/models").json()}
        assert {healthy["id"], again["id"]} <= set(listed)
        assert set(listed[healthy["id"]]) >= {"id", "name", "version", "format", "verdict", "checked_at"}


def test_check_job_gives_the_verdict_and_joins_the_model_history(server, tokens, healthy):
    with server.client(tokens["member"]) as c:
        r = c.post(f"/api/models/{healthy['id']}/check", json={"input_shape": [1, 3, 32, 32]})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert job["status"] in ("queued", "running")
        done = wait_job(c, job["id"])
        assert done["status"] == "done", done
        assert done["progress"] == 1.0 and done["error"] is None
        assert done["result"]["verdict"] == "full"
        model = c.get(f"/api/models/{healthy['id']}").json()
        assert model["reports"][0]["verdict"] == "full" and model["reports"][0]["job_id"] == job["id"]
        assert model["reports"][0]["cam"]["status"] == "ok"
        assert next(m for m in c.get("/api/models").json() if m["id"] == healthy["id"])["verdict"] == "full"


def test_broken_model_is_inference_only_with_its_break(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        mid = upload(c, model_files["DetachBetweenBlocks"], "detached",
                     arch="xaiready.testing.zoo:DetachBetweenBlocks").json()["id"]
        job = c.post(f"/api/models/{mid}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        report = wait_job(c, job["id"])["result"]["report"]
        assert report["verdict"] == "inference-only"
        assert report["gradient"]["break"]["cause"] == "detach"


def test_check_with_an_uploaded_input(server, tokens, healthy, model_files):
    with server.client(tokens["member"]) as c:
        arr = io.BytesIO()
        np.save(arr, np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32))
        job = c.post(f"/api/models/{healthy['id']}/check", files={"input": ("x.npy", arr.getvalue())},
                     data={"task": "classification", "target": "2"}).json()["job"]
        done = wait_job(c, job["id"])
        assert done["status"] == "done", done
        assert done["result"]["report"]["verdict"] == "full"


def test_explain_job_writes_overlays_with_health_findings(server, tokens, healthy, model_files):
    with server.client(tokens["member"]) as c:
        with open(model_files["image"], "rb") as fh:
            r = c.post(f"/api/models/{healthy['id']}/explain", files=[("images", ("cat.png", fh.read()))],
                       data={"methods": "gradcam,saliency"})
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["job"]["id"])
        assert done["status"] == "done", done
        result = done["result"]
        assert {"cat__gradcam.png", "cat__saliency.png"} <= set(result["artifacts"])
        by_method = {e["method"]: e for e in result["explanations"]}
        assert by_method["gradcam"]["layer"] == "features" and by_method["gradcam"]["family"] == "cam"
        assert by_method["saliency"]["health"], "the health findings travel with each overlay"
        png = c.get(f"/api/jobs/{done['id']}/artifacts/cat__gradcam.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        values = np.load(io.BytesIO(c.get(f"/api/jobs/{done['id']}/artifacts/cat__saliency.npy").content))
        assert values.shape == (1, 3, 32, 32) and np.abs(values).sum() > 0


def test_artifacts_outside_the_list_are_not_found(server, tokens, healthy):
    with server.client(tokens["member"]) as c:
        job = c.post(f"/api/models/{healthy['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        wait_job(c, job["id"])
        for name in ("../../xaiready.db", "..%2F..%2Fxaiready.db", "nothing.png"):
            r = c.get(f"/api/jobs/{job['id']}/artifacts/{name}")
            assert r.status_code in (400, 404), (name, r.text)  # httpx folds "../" into another route: 400
            assert r.json()["error"]["kind"] in ("not-found", "usage") and b"SQLite" not in r.content


def test_evaluate_job_scores_methods(server, tokens, healthy, model_files):
    with server.client(tokens["member"]) as c:
        img = model_files["image"].read_bytes()
        r = c.post(f"/api/models/{healthy['id']}/evaluate", files=[("images", ("a.png", img)), ("images", ("b.png", img))],
                   data={"methods": "saliency,random", "metrics": "deletion,sparseness"})
        done = wait_job(c, r.json()["job"]["id"])
        assert done["status"] == "done", done
        rows = {(row["method"], row["metric"]): row for row in done["result"]["rows"]}
        assert set(rows) == {(m, k) for m in ("saliency", "random") for k in ("deletion", "sparseness")}
        assert all(row["n"] == 2 for row in rows.values())


def test_job_progress_streams_as_server_sent_events(server, tokens, healthy):
    with server.client(tokens["member"]) as c:
        job = c.post(f"/api/models/{healthy['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        events = []
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
        assert events[-1][0] == "done" and events[-1][1]["status"] == "done"
        progress = [e["progress"] for _, e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0


def test_kserve_v1_explain(server, tokens, healthy):
    x = np.random.default_rng(2).random((2, 3, 32, 32)).astype(np.float32)
    with server.client(tokens["member"]) as c:
        r = c.post("/v1/models/healthy:explain", json={"instances": x.tolist(), "parameters": {"method": "saliency"}})
        assert r.status_code == 200, r.text
        out = r.json()
        assert [e["instance"] for e in out["explanations"]] == [0, 1]
        values = np.asarray(out["explanations"][0]["values"])
        assert values.shape == (3, 32, 32) and np.abs(values).sum() > 0
        assert c.post("/v1/models/nosuch:explain", json={"instances": x.tolist()}).status_code == 404
        bad = c.post("/v1/models/healthy:explain", json={"inputs": []})
        assert bad.status_code == 400 and bad.json()["error"]["kind"] == "usage"


def test_another_team_gets_404_never_403(server, tokens, healthy):
    with server.client(tokens["member"]) as c:
        job = c.post(f"/api/models/{healthy['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
    with server.client(tokens["other"]) as c:
        assert healthy["id"] not in {m["id"] for m in c.get("/api/models").json()}
        for method, url in [("GET", f"/api/models/{healthy['id']}"), ("POST", f"/api/models/{healthy['id']}/check"),
                            ("POST", f"/api/models/{healthy['id']}/trust"), ("GET", f"/api/jobs/{job['id']}"),
                            ("GET", f"/api/jobs/{job['id']}/events"),
                            ("GET", f"/api/jobs/{job['id']}/artifacts/report.json")]:
            r = c.request(method, url, json={"trusted": True, "input_shape": "1,3,32,32"})
            assert r.status_code == 404, (url, r.text)
            assert r.json()["error"]["kind"] == "not-found"
        theirs, missing = c.get(f"/api/models/{healthy['id']}").json(), c.get("/api/models/999999").json()
        assert theirs["error"]["message"].replace(str(healthy["id"]), "N") == \
            missing["error"]["message"].replace("999999", "N")  # the same answer as an id that does not exist
        assert c.post("/v1/models/healthy:explain", json={"instances": [[[[0.0]]]]}).status_code == 404


def test_errors_are_json_with_a_kind(server, tokens, healthy, model_files):
    with server.client(tokens["member"]) as c:
        r = c.post(f"/api/models/{healthy['id']}/check", json={"input_shape": "1,3,32,32", "bogus": 1})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "usage"
        r = c.post("/api/models", files={"file": ("empty.pt", b"")}, data={"name": "empty"})
        assert r.status_code == 422 and r.json()["error"]["kind"] == "corrupt"
        assert "empty.pt" in r.json()["error"]["message"]
        r = c.post("/api/models", files={"file": ("weights.onnx", model_files["HealthyCNN"].read_bytes())})
        assert r.status_code == 422 and r.json()["error"]["kind"] == "corrupt", r.text  # content contradicts name
        r = c.post("/api/models", files={"file": ("m.pt", b"x")}, data={"arch": "/tmp/evil.py:Net"})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "usage"
        r = c.get("/api/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["kind"] == "not-found"


def test_uploads_are_size_limited(server, tokens):
    from .conftest import UPLOAD_MB

    big = UPLOAD_MB * 1024 * 1024 + 2 * 1024 * 1024
    with server.client(tokens["member"]) as c:
        r = c.post("/api/models", files={"file": ("big.pt", b"\0" * big)}, data={"name": "big"})
        assert r.status_code == 413 and r.json()["error"]["kind"] == "too-large"

        def chunks():  # no Content-Length: the limit is counted while the body arrives
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.pt"\r\n\r\n'
            for _ in range(big // (512 * 1024)):
                yield b"\0" * (512 * 1024)
            yield b"\r\n--x--\r\n"
        r = c.post("/api/models", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413 and r.json()["error"]["kind"] == "too-large"
        assert "big" not in {m["name"] for m in c.get("/api/models").json()}
        page = c.post("/models", files={"file": ("big.pt", b"\0" * big)}, data={"name": "big"})  # the upload form
        assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
        assert "over the upload limit" in page.text
    assert server.alive()


def _zip(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zip_is_unpacked_and_its_model_found(server, tokens, model_files):
    blob = _zip({"export/README.txt": b"our model", "export/weights/healthy.pt": model_files["HealthyCNN"].read_bytes()})
    with server.client(tokens["member"]) as c:
        r = c.post("/api/models", files={"file": ("export.zip", blob)}, data={"name": "zipped", "arch": ARCH})
        assert r.status_code == 201, r.text
        assert r.json()["format"] == "pytorch-state-dict"
        job = c.post(f"/api/models/{r.json()['id']}/check", json={"input_shape": "1,3,32,32"}).json()["job"]
        assert wait_job(c, job["id"])["result"]["verdict"] == "full"


def test_a_zip_escaping_its_folder_is_refused(server, tokens, model_files):
    with server.client(tokens["member"]) as c:
        r = c.post("/api/models", files={"file": ("evil.zip", _zip({"../../escaped.pt": b"x"}))}, data={"name": "evil"})
        assert r.status_code == 422 and r.json()["error"]["kind"] == "unsafe-path", r.text
        r = c.post("/api/models", files={"file": ("two.zip", _zip({"a.pt": b"x", "b.onnx": b"y"}))}, data={"name": "two"})
        assert r.status_code == 422 and r.json()["error"]["kind"] == "unsupported", r.text
    assert not list(server.data.rglob("escaped.pt"))


def test_openapi_documents_the_routes(server):
    with server.client(None) as c:
        paths = c.get("/openapi.json").json()["paths"]
    for path in ("/api/models", "/api/models/{model_id}", "/api/models/{model_id}/check", "/api/models/{model_id}/explain",
                 "/api/models/{model_id}/evaluate", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events",
                 "/api/jobs/{job_id}/artifacts/{name}", "/v1/models/{name}:explain", "/healthz"):
        assert path in paths, path


def test_dataset_run_job_writes_the_html_report(server, tokens, healthy, model_files):
    with server.client(tokens["member"]) as c:
        img = model_files["image"].read_bytes()
        r = c.post(f"/api/models/{healthy['id']}/run", files=[("images", (f"{i}.png", img)) for i in range(3)],
                   data={"methods": "saliency", "metrics": "deletion"})
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["job"]["id"], timeout_s=240)
        assert done["status"] == "done", done
        assert done["result"]["images"] == 3
        page = c.get(f"/api/jobs/{done['id']}/artifacts/report.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert b"saliency" in page.content
