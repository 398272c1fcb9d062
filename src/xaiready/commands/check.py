"""``xaiready check MODEL``: the readiness report as a table or JSON, exit code from --require."""

from __future__ import annotations

import json

from ._common import add_input_arguments, add_model_arguments, add_target_arguments


def add_arguments(p):
    add_model_arguments(p)
    add_input_arguments(p)
    add_target_arguments(p)
    p.add_argument("--layer", metavar="NAME", help="verify this layer for CAM methods")
    p.add_argument("--json", action="store_true", help="print the report as JSON (DESIGN 3.2)")
    p.add_argument("--require", choices=["full", "gradient-only"],
                   help="exit 1 unless the verdict reaches this level")


def run(args) -> int:
    from ..errors import RequirementError, XaiReadyError

    try:
        report = _load_and_check(args)
    except XaiReadyError as exc:
        if args.json:
            print(json.dumps({"model": {"path": args.model, "format": exc.format, "framework": None,
                                        "converted_from": None}, "error": exc.to_dict()}, indent=2))
        raise
    if args.json:
        print(report.to_json())
    else:
        from ..render.console import print_report

        print_report(report)
    if not report.meets(args.require):
        raise RequirementError(f"verdict '{report.verdict}' does not meet --require {args.require}",
                               path=args.model, format=report.model.get("format"))
    return 0


def _load_and_check(args):
    from ..errors import XaiReadyError
    from ..readiness.checks import run_check
    from ._common import load_model, make_target, read_input

    handle = load_model(args)
    x = read_input(args, handle)
    try:
        report = run_check(handle, x, target=make_target(args), task=args.task, layer=args.layer)
    except XaiReadyError as exc:  # name the file and format in the one-line error
        if exc.path is None:
            exc.path, exc.format = args.model, handle.source.format
        raise
    held = getattr(handle, "held_inputs", None)  # a multi-input model: which input was measured
    if held is not None:
        report.context["inputs"] = held.describe(x.shape)
    return report
