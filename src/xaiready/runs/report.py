"""``write_report(run_dir)``: the run's HTML report, one self-contained file that opens offline.

The page reads only the run directory (DESIGN 3.4): ``run.json`` for the configuration, versions and
readiness, ``results.sqlite`` for every number, ``overlays/`` and the inputs for the pictures, embedded
as small PNG thumbnails. Nothing on the page fetches anything: CSS and the sort script are inline.
"""

from __future__ import annotations

import os
from pathlib import Path

from .report_data import ReportData, read_run

REPORT_NAME = "report.html"


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); its path.

    Works on a run still in progress (the page says how far it got). Raises ``UsageError`` when
    ``run_dir`` is not a run directory and ``CorruptError`` when its files cannot be read.
    """
    from .report_html import render_page

    run_dir = Path(run_dir)
    data: ReportData = read_run(run_dir)
    out = Path(out) if out is not None else run_dir / REPORT_NAME
    page = render_page(data, out.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and renamed, so a browser reloading the page never sees half of it
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
