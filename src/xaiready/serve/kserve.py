"""KServe V1 style explanations, so existing KServe clients work: ``POST /v1/models/{name}:explain``.

The request is ``{"instances": [...], "parameters": {"method", "target", "layer"}}``; each instance is one
input (nested lists, e.g. C x H x W). It runs as an explain job like any other (in a worker, under the
job limits) and the response waits for it: ``{"explanations": [{"instance", "method", "values", ...}], "job": id}``,
one explanation per instance and method.
"""

from __future__ import annotations

import asyncio
import io
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..errors import InputError, UsageError
from . import service
from .api import context, job_params, principal

router = APIRouter(prefix="/v1")
_RESULT_WAIT_S = 0.2


@router.post("/models/{name}:explain", summary="KServe V1 explain: {instances: [...]} -> {explanations: [...]}")
async def kserve_explain(name: str, request: Request):
    import numpy as np

    factory, settings = context(request)
    who = await run_in_threadpool(principal, request)
    try:
        body = await request.json()
    except ValueError:
        raise UsageError("the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise UsageError('the body must be {"instances": [...]} with at least one instance')
    options = body.get("parameters") or {}
    if not isinstance(options, dict):
        raise UsageError('"parameters" must be an object')
    try:
        batch = np.asarray(body["instances"], dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("the instances are not numbers of one common shape") from None
    buf = io.BytesIO()
    np.save(buf, batch, allow_pickle=False)
    buf.seek(0)
    model_id = await run_in_threadpool(service.model_by_name, factory, who, name)
    params = job_params({"sanity": "off", **options})
    params["methods"] = params["methods"] or ["saliency"]
    job = await run_in_threadpool(service.submit_job, factory, settings, who, model_id, "explain", params,
                                  {"images": [("instances.npy", buf)]})
    deadline = time.monotonic() + settings.job_timeout_s + 60
    while True:
        view = await run_in_threadpool(service.get_job, factory, who, job["id"])
        if view["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        await asyncio.sleep(_RESULT_WAIT_S)
    if view["status"] != "done":
        from fastapi.responses import JSONResponse

        from .errors import body as error_body
        from .errors import status_of

        error = view["error"] or {"kind": "timeout", "message": "the job did not finish in time"}
        out = error_body(error["kind"], error["message"])
        out["job"] = job["id"]
        return JSONResponse(out, status_code=status_of(error["kind"]) if error["kind"] in ("usage", "input") else 500)
    explanations = []  # one per instance and method, instance by instance
    per_method = []
    for item in view["result"]["explanations"]:
        npy = service.artifact_path(factory, settings, who, job["id"], item["overlay"].removesuffix(".png") + ".npy")
        per_method.append((item, np.load(npy, allow_pickle=False)))
    for i in range(len(batch)):
        for item, values in per_method:
            explanations.append({"instance": i, "method": item["method"], "family": item["family"],
                                 "layer": item["layer"], "black_box": item["black_box"], "target": item["target"],
                                 "values": values[i].tolist(), "warnings": item["warnings"]})
    return {"model_name": name, "job": job["id"], "explanations": explanations}
