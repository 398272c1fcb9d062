"""``xaiready report RUN_DIR [--out FILE.html]``: the HTML report of a dataset run."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `xaiready run` (also while it runs)")
    p.add_argument("--out", metavar="FILE.html", help="where to write the page (default RUN_DIR/report.html)")


def run(args) -> int:
    from ..runs.report import write_report

    print(f"report: {write_report(args.run_dir, args.out)}")
    return 0
