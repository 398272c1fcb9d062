"""What each job kind does. This runs inside the job's own child process (see worker.py), never in
the web process: loading a model may run its code (when trusted) or crash.

Each task reads its files from the job's folder, calls the same functions as the CLI (so uploads go
through the same intake, limits and trust policy), writes artifacts next to them and returns a
JSON-ready result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError

Progress = Callable[[float, str], None]


def cli_args(model: dict, data: Path, params: dict, **extra) -> argparse.Namespace:
    """The Namespace ``xaiready.commands._common`` reads, from a stored model and a job's params."""
    values = {
        "model": str(data / model["path"]), "arch": model.get("arch"),
        "arch_kwargs": json.dumps(model["arch_kwargs"]) if model.get("arch_kwargs") else None,
        "imports": [], "trust": bool(model.get("trusted")),
        "output": None if params.get("output") is None else str(params["output"]),
        "device": params.get("device"), "signature": None, "inputs": None, "outputs": None, "convert": True,
        "max_unpacked_mb": None, "max_ratio": None, "max_image_pixels": None, "max_input_mb": None,
        "input": None, "input_shape": params.get("input_shape"), "layout": params.get("layout"),
        "resize": params.get("resize"), "mean": params.get("mean"), "std": params.get("std"),
        "task": params.get("task"), "target": params.get("target"), "target_text": None, "blank": None,
    }
    values.update(extra)
    return argparse.Namespace(**values)


def shown_path(path: str | None, model: dict, data: Path, job_dir: Path) -> str:
    """The path an error names, as the user knows it: the uploaded file's name, not the server's folders."""
    if path and str(path).startswith(str(job_dir)):
        return Path(path).name
    if not path or str(path).startswith(str(data)):
        return model["filename"]
    return str(path)


def run_task(spec: dict, data: Path, job_dir: Path, progress: Progress) -> dict:
    """Dispatch on the job's kind; returns ``{"result": ..., "report": ...}`` (report for checks)."""
    kind = spec["job"]["kind"]
    task = TASKS.get(kind)
    if task is None:
        raise UsageError(f"unknown job kind '{kind}'")
    return task(spec["model"], spec["job"]["params"], data, job_dir, progress)


def check(model: dict, params: dict, data: Path, job_dir: Path, progress: Progress) -> dict:
    from ..commands._common import load_model, make_target, read_input
    from ..errors import XaiReadyError
    from ..readiness.checks import run_check

    args = cli_args(model, data, params, input=str(job_dir / params["input"]) if params.get("input") else None)
    progress(0.1, "loading the model")
    try:
        handle = load_model(args)
        x = read_input(args, handle)
        progress(0.4, "measuring gradients and layers")
        report = run_check(handle, x, target=make_target(args), task=args.task, layer=params.get("layer"))
    except XaiReadyError as exc:
        exc.path = shown_path(exc.path, model, data, job_dir)
        failed = {"model": {"path": model["filename"], "format": exc.format or model["format"], "framework": None,
                            "converted_from": None}, "error": exc.to_dict()}
        exc.report = failed  # the worker stores it: a refused load is part of the model's history
        raise
    out = json.loads(report.to_json())
    out["model"]["path"] = model["filename"]  # the server's folder layout is not the user's business
    (job_dir / "report.json").write_text(json.dumps(out, indent=2))
    return {"result": {"verdict": out.get("verdict"), "report": out, "artifacts": ["report.json"]}, "report": out}


def _images(params: dict, job_dir: Path) -> list[Path]:
    names = params.get("images") or []
    if not names:
        raise UsageError("no images given", hint="upload one or more images (or .npy arrays) as 'images'")
    return [job_dir / n for n in names]


def _read(args, handle, path: Path):
    from ..commands._common import read_input

    args.input = str(path)
    return read_input(args, handle)


def explain(model: dict, params: dict, data: Path, job_dir: Path, progress: Progress) -> dict:
    from ..api import explain as xr_explain
    from ..commands._common import load_model, make_target
    from ..render.heatmap import render

    methods = params.get("methods") or ["gradcam"]
    args = cli_args(model, data, params)
    progress(0.05, "loading the model")
    handle = load_model(args)
    images = _images(params, job_dir)
    artifacts, explanations = [], []
    steps, done = len(images) * len(methods), 0
    for image in images:
        x = _read(args, handle, image)
        target = make_target(args, lambda x=x: handle.forward(x).shape)
        for method in methods:
            progress(0.1 + 0.85 * done / steps, f"{method} on {image.name}")
            attr = xr_explain(handle, x, method=method, target=target, layer=params.get("layer"),
                              sanity=params.get("sanity", "cheap"))
            name = f"{image.stem}__{method}.png"
            render([attr], x, job_dir / name, model=model["name"])
            attr.save(job_dir / f"{image.stem}__{method}.npy")
            artifacts += [name, f"{image.stem}__{method}.npy"]
            explanations.append(_describe(attr, image.name, name))
            done += 1
    return {"result": {"artifacts": artifacts, "explanations": explanations}}


def _describe(attr, image: str, artifact: str) -> dict:
    from .._jsonable import jsonable

    return {"image": image, "method": attr.method, "family": attr.family, "black_box": bool(attr.black_box),
            "layer": attr.layer, "target": jsonable(attr.target), "overlay": artifact,
            "warnings": list(attr.warnings), "health": jsonable(attr.info.get("health", []))}


def evaluate(model: dict, params: dict, data: Path, job_dir: Path, progress: Progress) -> dict:
    import numpy as np

    from ..api import explainer_for
    from ..commands._common import load_model, make_target
    from ..metrics.base import Settings
    from ..metrics.evaluate import evaluate_methods, rows

    methods = params.get("methods") or ["saliency"]
    metrics = params.get("metrics") or ["deletion", "insertion", "sparseness"]
    args = cli_args(model, data, params)
    progress(0.05, "loading the model")
    handle = load_model(args)
    arrays = [_read(args, handle, p) for p in _images(params, job_dir)]
    try:
        x = np.concatenate(arrays)
    except ValueError:
        raise UsageError("the inputs have different shapes", hint="pass resize=H,W for images") from None
    progress(0.2, f"{len(methods)} methods x {len(metrics)} metrics on {len(x)} inputs")
    explainers = {m: explainer_for(handle, m, layer=params.get("layer")) for m in methods}
    results = evaluate_methods(handle, x, explainers, metrics, make_target(args),
                               settings=Settings(chunk_size=int(params.get("chunk_size") or 64), seed=0,
                                                 progress=False))
    table = json.loads(json.dumps(rows(results), default=str))
    (job_dir / "scores.json").write_text(json.dumps(table, indent=2))
    return {"result": {"rows": table, "artifacts": ["scores.json"]}}


def _floats(text: str | None) -> list[float] | None:
    return None if not text else [float(v) for v in str(text).split(",")]


def dataset_run(model: dict, params: dict, data: Path, job_dir: Path, progress: Progress) -> dict:
    """A dataset run (DESIGN 3.4) over the uploaded images, with its HTML report, through ``xaiready.runs``."""
    import shutil

    from ..runs import run_dataset
    from ..runs.report import write_report

    inputs = job_dir / "inputs"
    inputs.mkdir(exist_ok=True)
    for image in _images(params, job_dir):
        shutil.move(str(image), inputs / image.name)
    options = {"arch": model.get("arch"), "arch_kwargs": model.get("arch_kwargs"), "trust": bool(model.get("trusted"))}
    resize = _floats(params.get("resize"))
    run_dir = job_dir / "run"
    progress(0.02, "loading the model")
    run = run_dataset(str(data / model["path"]), inputs, out=run_dir, methods=params.get("methods") or ["gradcam"],
                      metrics=params.get("metrics") or [], target_from="predicted", task=params.get("task"),
                      target=params.get("target"), layer=params.get("layer"), layout=params.get("layout"),
                      resize=None if resize is None else [int(v) for v in resize], mean=_floats(params.get("mean")),
                      std=_floats(params.get("std")), sanity=params.get("sanity") or "cheap",
                      model_options={k: v for k, v in options.items() if v}, show_progress=False,
                      progress=lambda done, total: progress(0.05 + 0.9 * done / max(total, 1),
                                                            f"{done} of {total} images"),
                      log=lambda line: None)
    write_report(run_dir, job_dir / "report.html")
    (job_dir / "run.json").write_text(json.dumps(run, indent=2, default=str))
    return {"result": {"artifacts": ["report.html", "run.json"], "summary": run.get("summary"),
                       "images": run.get("images"), "failed": run.get("failed")}}


TASKS = {"check": check, "explain": explain, "evaluate": evaluate, "run": dataset_run}
