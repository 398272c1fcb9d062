"""``xaiready demo``: example models in several formats, checked, in one table."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--out", default="demo-out", metavar="DIR", help="where models and JSON reports go")


def run(args) -> int:
    from ..demo import run_demo

    run_demo(args.out)
    return 0
