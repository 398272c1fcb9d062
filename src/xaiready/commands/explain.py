"""``xaiready explain MODEL --input FILE --method NAME``: attributions as a PNG overlay and/or .npy.

Several ``--method`` values give one grid image. Image inputs are read as float RGB in [0, 1], resized
with ``--resize H,W`` and normalized with ``--mean``/``--std`` (per channel, after scaling to [0, 1]),
exactly as ``xaiready check`` reads them; ``.npy`` inputs are taken as they are.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ._common import (
    add_input_arguments,
    add_method_arguments,
    add_model_arguments,
    add_target_arguments,
    method_options,
)


def add_arguments(p):
    add_model_arguments(p)
    add_input_arguments(p)
    add_target_arguments(p)
    p.add_argument("--method", action="append", required=True, metavar="NAME",
                   help="method name (repeatable): saliency, gradient, input-x-gradient, integrated-gradients, "
                        "smoothgrad, smoothgrad-sq, vargrad, guided-backprop, deconvnet, gradcam, gradcam++, "
                        "hirescam, layercam, xgradcam, guided-gradcam, and any black-box method installed")
    p.add_argument("--layer", metavar="NAME", help="layer for CAM methods (default: readiness's default layer)")
    p.add_argument("--out", metavar="FILE.png", help="write the heatmap overlay (a grid for several methods)")
    p.add_argument("--save", metavar="FILE.npy", help="save values (+ .json metadata); one file per method "
                   "as FILE-<method>.npy when several methods are given")
    p.add_argument("--sanity", choices=["cheap", "full", "off"], default="cheap",
                   help="health checks of each map: cheap (default: raw map, saturation, class sensitivity, "
                        "guided override), full (adds a randomized-model check), off")
    p.add_argument("--verbose", action="store_true",
                   help="also print how long each method and its health checks took")
    p.add_argument("--fallback", action="store_true",
                   help="if the model cannot serve a method, use the black-box 'occlusion' instead (labelled)")
    g = p.add_argument_group("method options")
    g.add_argument("--batch-size", type=int, metavar="N", help="rows per pass for IG/SmoothGrad (default: automatic)")
    add_method_arguments(g)
    g.add_argument("--seed", type=int, metavar="N", help="seed for noise and random baselines")
    g.add_argument("--cmap", default=None, metavar="NAME", help="matplotlib colormap for the heatmap")


def _options(args, method_cls) -> dict:
    """Only the flags the method understands (a smoothgrad wrapper also passes its base's)."""
    import numpy as np

    given = {**method_options(args), "batch_size": args.batch_size, "seed": args.seed}
    if args.baseline:
        given["baseline"] = (np.load(args.baseline, allow_pickle=False) if args.baseline.endswith(".npy")
                             else args.baseline)
    accepted = set(getattr(method_cls, "defaults", {}))
    if "base" in accepted:
        from ..methods.base import METHODS

        accepted |= set(getattr(METHODS.get(args.base or method_cls.defaults["base"]), "defaults", {}))
    return {k: v for k, v in given.items() if v is not None and k in accepted}


def run(args) -> int:
    from ..api import as_handle, with_health
    from ..errors import CapabilityError, UsageError
    from ..methods import load_methods
    from ._common import load_model, make_target, read_input

    methods = load_methods()
    classes = [methods.get(name) for name in args.method]  # unknown names fail before loading anything
    if not args.out and not args.save:
        raise UsageError("nothing to write", hint="give --out FILE.png and/or --save FILE.npy")
    handle = as_handle(load_model(args))
    x = read_input(args, handle)
    target = make_target(args, lambda: handle.forward(x).shape)
    results = []
    for name, cls in zip(args.method, classes, strict=True):
        started = time.perf_counter()
        try:
            attr = cls()(handle, x, target, layer=args.layer if cls.family == "cam" else None,
                         contrast=args.sanity == "cheap", **_options(args, cls))
        except CapabilityError as exc:
            if not args.fallback:
                if "--fallback" not in (exc.hint or ""):
                    exc.hint = (exc.hint + "; " if exc.hint else "") + "or pass --fallback"
                raise
            if "occlusion" not in methods:
                raise CapabilityError(exc.message, path=exc.path, format=exc.format,
                                      hint="no black-box fallback (occlusion) is installed") from exc
            print(f"note: {name} refused ({exc.message}); using black-box occlusion instead", file=sys.stderr)
            attr = methods.get("occlusion")()(handle, x, target, **_options(args, methods.get("occlusion")))
        took = time.perf_counter() - started
        attr = with_health(handle, x, attr, target, args.sanity, _options(args, methods.get(attr.method)))
        results.append(attr)
        _summary(attr)
        if args.verbose:
            health = attr.info.get("health_seconds", 0.0)
            print(f"{attr.method}: {took:.3f} s; health checks ({args.sanity}) {health:.3f} s more "
                  f"({health / max(took, 1e-9):.0%} of the method)")
    if args.save:
        _save(results, Path(args.save))
    if args.out:
        from ..render.heatmap import render

        out = render(results, x, args.out, model=Path(args.model).name, cmap=args.cmap)
        print(f"wrote {out}")
    return 0


def _summary(attr) -> None:
    from ..render.heatmap import describe_target

    score = "" if attr.scores is None else f", score {float(attr.scores[0]):.4g}"
    layer = f", layer {attr.layer}" if attr.layer else ""
    label = " [black-box]" if attr.black_box else ""
    extra = ""
    if "delta_rel_max" in attr.info:
        extra = f", completeness gap {attr.info['delta_rel_max']:.2%}"
    if "relu_override" in attr.info:
        o = attr.info["relu_override"]
        extra = f", relu overridden {o['overridden']}/{o['relu_calls']}"
    print(f"{attr.method}{label}: values {tuple(attr.values.shape)}, {describe_target(attr.target)}{layer}"
          f"{score}{extra}")
    for w in attr.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _save(results, path: Path) -> None:
    if path.suffix != ".npy":
        path = path.with_suffix(".npy")
    for attr in results:
        dest = path if len(results) == 1 else path.with_name(f"{path.stem}-{attr.method}.npy")
        print(f"saved {attr.save(dest)}")
