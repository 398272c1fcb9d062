"""Readable console output of a readiness report (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
_VERDICT_STYLE = {"full": "bold green", "gradient-only": "bold yellow", "inference-only": "bold red"}


def print_report(report, console: Console | None = None) -> None:
    console = console or Console()
    m = report.model
    title = f"{m.get('path')}  [{m.get('format')}]"
    if m.get("converted_from"):
        title += f" (converted from {m['converted_from']})"
    table = Table(title=title, show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    g, cam = report.gradient, report.cam
    console.print(f"gradient: {g['status']}" + (f", break: {g['break']['cause']} at '{g['break']['location']}'"
                                               if g.get("break") else ""))
    console.print(f"cam: {cam['status']}" + (f", default layer '{cam['default_layer']}' of {len(cam['layers'])}"
                                             if cam["status"] == "ok" else f" ({cam['reason']})"))
    inputs = report.context.get("inputs")  # a multi-input model: which input was measured
    if inputs:
        held = ", ".join(f"{k} {tuple(v)}" for k, v in inputs["held"].items()) or "none"
        console.print(f"inputs: explained {inputs['explained']['name']} {tuple(inputs['explained']['shape'])}; "
                      f"held fixed: {held}", markup=False)
    for note in report.context.get("notes") or []:  # what loading decided or guessed (output, preprocessing)
        console.print(f"note: {note}", markup=False)
    verdict = report.verdict
    console.print(f"verdict: [{_VERDICT_STYLE.get(verdict, 'bold')}]{verdict}[/]")
