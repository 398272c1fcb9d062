"""``run_dataset``: a dataset through methods and metrics into a run directory (DESIGN 3.4).

The driver lists the dataset, loads the model once (its preprocessing, the readiness report and the
cost come from it), writes ``run.json`` and hands the batches the store does not hold yet to an
engine. Every result is written here, by the driver, one batch per transaction; the summary is
computed from the store at the end, so a resumed run's summary covers every batch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .config import config_hash, file_digest, refuse_changed, versions
from .dataset import Item, digest, discover, read_item

SCHEMA = 1
BASELINES = ("random", "center")
ENGINES = ("local", "ray")


def run_dataset(model: Any, inputs: str | Path, *, out: str | Path, methods: Sequence[str],
                metrics: Sequence[str] = (), labels: str | Path | None = None, masks: str | Path | None = None,
                resume: bool = False, engine: str = "local", workers: int = 1, ray_address: str | None = None,
                device: str | None = None, batch_size: int = 16, seed: int = 0, task: str | None = None,
                target: int | None = None, target_text: Sequence[int] | None = None, blank: int | None = None,
                target_from: str = "label", target_options: dict[str, Any] | None = None, layer: str | None = None, layout: str | None = None,
                resize: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, sanity: str = "cheap", overlays: bool = True,
                method_options: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None,
                limits: dict[str, Any] | None = None, chunk_size: int = 64,
                progress: Callable[[int, int], None] | None = None, show_progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Explain and score every image of ``inputs`` (a folder or a CSV manifest) into ``out``.

    ``model`` is a path (loaded with ``model_options``: arch, trust, ...) or a ModelHandle (then only
    the in-process local engine: workers load the model from its file). ``target_options`` are
    explain's other target flags (``target_fn``, ``box_index``, ``box``, ``box_format``,
    ``no_objectness``), used as explain uses them. ``progress(done, total)`` is
    called after every batch. Returns the final ``run.json`` object. Images that cannot be read are
    recorded in the store's ``failures`` table and counted in ``run.json["failed"]``.
    """
    from ..methods import load_methods
    from ..metrics.evaluate import metric_for
    from ..model import ModelHandle
    from .store import Store

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    registry = load_methods()
    for m in methods:
        registry.get(m)  # an unknown name fails before anything is loaded
    for m in metrics:
        metric_for(m)
    if not methods:
        raise UsageError("no methods to run", hint="e.g. --methods gradcam,saliency")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'", hint="use local or ray")
    if batch_size < 1 or workers < 1:
        raise UsageError("--batch-size and --workers must be at least 1")
    if target_from not in ("label", "predicted"):
        raise UsageError(f"unknown --target-from '{target_from}'", hint="use label or predicted")
    in_memory = isinstance(model, ModelHandle)
    if in_memory and (engine != "local" or workers > 1):
        raise UsageError("worker processes and Ray load the model from its file",
                         hint="pass a model path instead of a loaded handle, or use one local worker")

    run_dir = Path(out)
    old = _read_old(run_dir)
    if old is not None and not resume:
        raise UsageError(f"{run_dir} already holds a run ({old.get('status', '?')})", path=str(run_dir),
                         hint="pass --resume to continue it, or choose another --out")
    items = discover(inputs, labels=labels, masks=masks)

    handle = model if in_memory else _load(model, device, model_options, limits)
    if layout:
        handle.layout = layout
    preprocessing = _preprocessing(handle, resize, mean, std)
    config = {
        "model": str(model.source.path) if in_memory else str(model),
        "model_sha256": None if in_memory or not Path(model).exists() else file_digest(model),
        "model_options": dict(model_options or {}), "inputs": str(inputs), "inputs_digest": digest(items),
        "labels": None if labels is None else str(labels), "masks": None if masks is None else str(masks),
        "methods": list(methods), "metrics": list(metrics), "baselines": list(BASELINES) if metrics else [],
        "task": task, "target": target, "target_text": None if target_text is None else list(target_text),
        "blank": blank, "target_from": target_from, "target_options": dict(target_options or {}),
        "layer": layer, "layout": layout,
        "resize": None if resize is None else list(resize), "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std), "preprocessing": preprocessing,
        "batch_size": int(batch_size), "chunk_size": int(chunk_size), "sanity": sanity, "overlays": overlays,
        "method_options": dict(method_options or {}), "limits": dict(limits or {}),
        "engine": engine, "workers": int(workers), "ray_address": ray_address, "device": device, "seed": int(seed),
    }
    if old is not None:
        refuse_changed(run_dir, old.get("config") or {}, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store(run_dir)
    try:
        run = _run(handle, config, items, store, old, in_memory, log, progress, show_progress)
    finally:
        store.close(compact=True)
    from .report import write_report

    run["report"] = str(write_report(run_dir))  # RUN_DIR/report.html, as DESIGN 3.4 lays the folder out
    return run


def _run(handle, config, items: list[Item], store, old, in_memory: bool, log, progress, show_progress):
    from .cost import describe, measure
    from .pipeline import Context
    from .progress import RunProgress

    run_dir = store.run_dir
    size = config["batch_size"]
    batches = [(b, items[i:i + size]) for b, i in enumerate(range(0, len(items), size))]
    done = store.done_batches()
    todo = [(b, chunk) for b, chunk in batches if b not in done]
    ctx = Context(config, handle)
    first = _first_readable(ctx, items)
    readiness = old.get("readiness") if old else None
    cost = old.get("cost") if old else None
    if first is not None and readiness is None:
        readiness = _readiness(ctx, first)
    if first is not None and cost is None:
        ctx.task = ctx.task or _task_of(ctx, first)
        cost = measure(ctx, first)
    scored = len(config["methods"]) + len(config["baselines"])
    if cost is not None:
        log(describe(cost, len(items), scored))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run = {"schema": SCHEMA, "status": "running", "config": config, "config_hash": config_hash(config),
           "versions": versions(config["engine"]), "readiness": readiness, "cost": cost, "summary": {},
           "images": len(items), "batches": len(batches),
           "started_at": (old or {}).get("started_at", started), "finished_at": None, "seconds": None,
           "sessions": [*(old or {}).get("sessions", []), {"started_at": started, "engine": config["engine"],
                                                             "workers": config["workers"]}]}
    _write_json(run_dir / "run.json", run)
    already = sum(len(chunk) for b, chunk in batches if b in done)
    if done:
        log(f"resuming: {len(done)} of {len(batches)} batches already in the store, {len(todo)} to do")
    bar = RunProgress(len(items), already, show=show_progress, callback=progress)
    t0 = time.monotonic()

    def write(result):
        store.write(result)
        bar.advance(len(result.images) + len(result.failures))

    try:
        if config["engine"] == "ray":
            from .engine_ray import run_ray

            run_ray(config, todo, write)
        else:
            from .engine_local import run_local

            run_local(config, todo, write, handle=handle if in_memory or config["workers"] <= 1 else None)
    finally:
        bar.close()
    seconds = time.monotonic() - t0
    counts = store.counts()
    run.update(status="done", summary=store.summary(), failed=counts["failures"],
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=round(seconds, 3))
    run["sessions"][-1].update(finished_at=run["finished_at"], seconds=round(seconds, 3), batches=len(todo))
    _write_json(run_dir / "run.json", run)
    for image, error in store.failures()[:5]:
        log(f"warning: {image} was not processed: {error}")
    if counts["failures"]:
        log(f"warning: {counts['failures']} of {len(items)} images could not be read (table 'failures')")
    return run


def _load(model, device, model_options, limits):
    from .. import limits as _limits
    from ..api import load

    _limits.configure(**(limits or {}))
    return load(model, device=device, **(model_options or {}))


def _preprocessing(handle, resize, mean, std) -> dict[str, Any]:
    """The image options used: the given ones, the rest filled from what the model carries."""
    from ..commands._common import carried_options
    from ..inputs import ImageOptions

    opts = carried_options(handle, ImageOptions(resize=None if resize is None else tuple(resize), mean=mean, std=std))
    carried = getattr(handle, "preprocessing", None) or {}
    return {"resize": None if opts.resize is None else list(opts.resize),
            "mean": None if opts.mean is None else [float(v) for v in opts.mean],
            "std": None if opts.std is None else [float(v) for v in opts.std],
            "source": carried.get("source") if carried else None}


def _first_readable(ctx, items: list[Item]):
    from ..errors import XaiReadyError

    for item in items[:50]:
        try:
            return ctx.handle.as_input(read_item(item, layout=ctx.handle.layout, options=ctx.image))
        except XaiReadyError:
            continue
    return None


def _task_of(ctx, x):
    from ..targets import infer_task
    from .pipeline import _special_target

    if _special_target(ctx.config):
        return ctx.config.get("task") or ("custom" if ctx.config["target_options"].get("target_fn") else "detection")
    return infer_task(tuple(ctx.handle.forward(x).shape))


def _readiness(ctx, x) -> dict[str, Any]:
    from ..readiness.checks import run_check
    from ..targets import for_task
    from .pipeline import _special_target, _target

    target = None
    if _special_target(ctx.config):
        target = _target(ctx, [], x, None)[0]
    elif ctx.config.get("target") is not None or ctx.config.get("task"):
        target = for_task(ctx.config.get("task") or "classification", ctx.config.get("target"),
                          labels=ctx.config.get("target_text"), blank=ctx.config.get("blank"))
    report = run_check(ctx.handle, x, target=target, layer=ctx.config.get("layer"))
    return json.loads(report.to_json())


def _read_old(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        from ..errors import CorruptError

        raise CorruptError("run.json is not valid JSON", path=str(path),
                           hint="start a new run with another --out") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
