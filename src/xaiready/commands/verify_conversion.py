"""``xaiready verify-conversion ORIGINAL CONVERTED --input FILE``: are two models the same model?

ORIGINAL is loaded as stored; CONVERTED too, unless ``--convert`` asks to convert it (an ONNX file then
becomes its verified PyTorch conversion, so ``verify-conversion m.onnx m.onnx --convert`` checks
xaiready's own conversion). Both run on the same input and are compared on outputs, input gradients
(when both give them) and an occlusion map. Exit 0 when equivalent (or outputs-equivalent, when one
side has no gradients), 1 when not, with the verdict on stderr.
"""

from __future__ import annotations

import json


def add_arguments(p):
    from ._common import add_input_arguments, add_target_arguments

    p.add_argument("original", metavar="ORIGINAL", help="the reference model (any format)")
    p.add_argument("converted", metavar="CONVERTED", help="the model that should behave the same (any format)")
    p.add_argument("--arch", metavar="MODULE:CLASS", help="architecture for a state-dict file (either side)")
    p.add_argument("--arch-kwargs", metavar="JSON", help="constructor arguments for --arch, as a JSON object")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE|FILE.py",
                   help="import your code before loading; repeatable")
    p.add_argument("--trust", action="store_true", help="allow formats that run code from the file")
    p.add_argument("--output", metavar="NAME|INDEX", help="which output to compare, for multi-output models; for ONNX, any "
                   "tensor of the graph by name")
    p.add_argument("--convert", action="store_true",
                   help="convert CONVERTED (if ONNX) to PyTorch before comparing (default: as stored)")
    p.add_argument("--window", type=int, metavar="PX", help="occlusion window side (default 1/8 of the image)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    add_input_arguments(p)
    add_target_arguments(p)


def run(args) -> int:
    from ..api import load
    from ..convert.compare import compare
    from ..errors import RequirementError
    from ._common import make_target, read_input

    output = int(args.output) if args.output is not None and args.output.lstrip("-").isdigit() else args.output
    handles = [load(path, arch=args.arch, arch_kwargs=args.arch_kwargs, trust=args.trust, imports=args.imports,
                    output=output, convert=convert)
               for path, convert in ((args.original, False), (args.converted, args.convert))]
    x = read_input(args, handles[0])
    result = compare(handles[0], handles[1], x, make_target(args), window=args.window)
    _localise(result, handles[1], x, args.convert)
    if args.json:
        print(json.dumps({"original": handles[0].source.to_dict(), "converted": handles[1].source.to_dict(),
                          **result.to_dict()}, indent=2))
    else:
        for label, h in (("original", handles[0]), ("converted", handles[1])):
            print(f"{label:10} {h.source.path} [{h.source.format}, {h.framework}]")
        for aspect, status, detail in result.rows:
            print(f"  {status.upper():5} {aspect:12} {detail}")
        print(f"verdict: {result.verdict}")
        if result.verdict == "outputs-equivalent":
            print("note: gradients were not compared; `xaiready check` verifies the differentiable side's "
                  "gradients with finite differences")
    if result.verdict not in ("equivalent", "outputs-equivalent"):
        raise RequirementError(f"the models are not equivalent ({result.verdict})", path=args.converted,
                               format=handles[1].source.format,
                               hint="treat the converted model as inference-only, or fix the conversion")
    return 0


def _localise(result, converted, x, asked: bool) -> None:
    """Where a conversion diverges: the rejected conversion's reason (it names the first diverging node
    on a random input), or, when the outputs differ on this input, the first diverging node on it."""
    from ..convert.divergence import locate

    rejected = next((c for c in converted.extra_checks if c.name == "conversion" and c.status == "fail"), None)
    if asked and rejected is not None:
        result.add("conversion", "warn", rejected.detail)
    status = {a: s for a, s, _ in result.rows}
    if status.get("outputs") == "fail" and converted.source.converted_from == "onnx":
        try:
            where = locate(converted, x)
        except Exception as exc:  # noqa: BLE001 - localising is a courtesy; the verdict stands without it
            where = f"the diverging node could not be located ({type(exc).__name__})"
        result.add("divergence", "fail", where or "every node's output agrees; the difference is in the output "
                   "selection")
