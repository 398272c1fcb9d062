"""The demo: save example models in several formats, check each through the real loaders.

A newcomer sees in one command what the tool finds: healthy models reach ``full``, TorchScript stays
``gradient-only`` (its layers cannot be hooked) unless rebuilt with ``--arch``, and every broken model
is ``inference-only`` with the layer and the cause of the break named.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DemoCase:
    name: str
    file: str
    load: dict  # keyword arguments of xr.load


def build_cases(out: Path) -> list[DemoCase]:
    import torch

    from .testing import zoo

    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(zoo.example_input())
    cases = []
    for name in zoo.EXPECTED:
        path = models / f"{name}.pt"
        torch.save(zoo.build(name).state_dict(), path)
        cases.append(DemoCase(name, path.name, {"arch": f"xaiready.testing.zoo:{name}"}))
    healthy = zoo.build("HealthyCNN")
    torch.save(healthy, models / "HealthyCNN-pickled.pt")
    cases.append(DemoCase("HealthyCNN (pickled module)", "HealthyCNN-pickled.pt", {"trust": True}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(healthy, x), models / "HealthyCNN-traced.pt")
        torch.jit.save(torch.jit.script(healthy), models / "HealthyCNN-scripted.pt")
        torch.jit.save(torch.jit.freeze(torch.jit.script(healthy)), models / "HealthyCNN-frozen.pt")
    for kind in ("traced", "scripted", "frozen"):
        cases.append(DemoCase(f"HealthyCNN ({kind} TorchScript)", f"HealthyCNN-{kind}.pt", {"trust": True}))
    cases.append(DemoCase("HealthyCNN (TorchScript + --arch)", "HealthyCNN-traced.pt",
                          {"trust": True, "arch": "xaiready.testing.zoo:HealthyCNN"}))
    cases.append(DemoCase("HealthyCNN (pickled, no --trust)", "HealthyCNN-pickled.pt", {}))
    return cases


def run_demo(out: str | Path = "demo-out", console=None, explain: bool = True) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    from .api import load
    from .errors import XaiReadyError
    from .readiness.checks import run_check
    from .testing import zoo

    out = Path(out)
    console = console or Console(width=140)
    reports_dir = out / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    x = zoo.example_input()
    for case in build_cases(out):
        path = out / "models" / case.file
        try:
            report = run_check(load(path, **case.load), x).to_dict()
        except XaiReadyError as exc:
            report = {"model": {"path": str(path), "format": exc.format}, "error": exc.to_dict(),
                      "exit_code": exc.exit_code}
        stem = case.name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "").replace("--", "")
        (reports_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
        rows.append({"case": case.name, **report})

    table = Table(title="xaiready demo: readiness of example models")
    for col in ("model", "format", "verdict", "gradient", "break (cause @ layer)", "CAM default layer"):
        table.add_column(col)
    for row in rows:
        if row.get("error"):
            table.add_row(row["case"], str(row["model"].get("format")), f"[red]refused (exit {row['exit_code']})[/]",
                          row["error"]["kind"], "", "")
            continue
        brk = row["gradient"]["break"]
        style = {"full": "green", "gradient-only": "yellow", "inference-only": "red"}[row["verdict"]]
        table.add_row(row["case"], row["model"]["format"] + (f" <- {row['model']['converted_from']}"
                                                             if row["model"].get("converted_from") else ""),
                      f"[{style}]{row['verdict']}[/]", row["gradient"]["status"],
                      f"{brk['cause']} @ {brk['location']}" if brk else "",
                      row["cam"]["default_layer"] or "")
    console.print(table)
    console.print(f"JSON reports: {reports_dir}/")
    if explain:
        explain_benchmark(out, console)
        from .runs.report_demo import benchmark_run

        benchmark_run(out, console)  # a dataset run over the benchmark set, and its HTML report
    return rows


def explain_benchmark(out: Path, console) -> Path:
    """Train the built-in benchmark classifier and explain a few test images with three families."""
    from . import targets
    from .api import evaluate, explain
    from .benchmark.models import handle_for, test_batch, train
    from .render.heatmap import render

    console.print("training the built-in benchmark classifier (shapes on clutter, CPU, seeded) ...")
    trained = train("classification")
    handle = handle_for(trained)
    x, y, masks = test_batch(trained, 16)
    target = targets.Class(y.tolist())
    methods = ("gradcam", "integrated-gradients", "guided-backprop", "occlusion")
    attrs = [explain(handle, x, method, target) for method in methods]
    hits = [evaluate(handle, x, a, ["pointing-game"], target, mask=masks)["pointing-game"].values for a in attrs]
    path = render([_first(a, 3) for a in attrs], x[:3], out / "explanations.png", model="benchmark CNN")
    console.print(f"benchmark CNN: held-out accuracy {trained.score:.3f}; pointing game on 16 test images: "
                  + ", ".join(f"{m} {np.nanmean(h):.2f}" for m, h in zip(methods, hits, strict=True)) + f"; heatmaps: {path}")
    for a in attrs:
        for w in a.warnings:
            console.print(f"[yellow]{a.method}: {w}[/]")
    return path


def _first(attr, n: int):
    """The attribution of the first ``n`` samples, for a compact picture."""
    import dataclasses

    cut = {k: getattr(attr, k)[:n] for k in ("values", "raw", "scores") if getattr(attr, k) is not None}
    return dataclasses.replace(attr, **cut)
