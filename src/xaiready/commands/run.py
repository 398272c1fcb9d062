"""``xaiready run MODEL --inputs DIR|MANIFEST.csv --methods a,b --metrics x,y --out RUN_DIR``: a dataset
run, batched, resumable, into a run directory (DESIGN 3.4); ``xaiready report RUN_DIR`` draws it."""

from __future__ import annotations

import sys

from ._common import add_method_arguments, add_model_arguments, add_target_arguments, method_options


def add_arguments(p):
    add_model_arguments(p, short_graph_names=False)  # --inputs names the dataset here
    p.add_argument("--inputs", dest="input_files", required=True, metavar="DIR|MANIFEST.csv",
                   help="a folder of images (recursive: png, jpg, webp, tiff, npy) or a CSV with columns "
                        "path[,label][,mask][,box]")
    p.add_argument("--labels", metavar="FILE.csv", help="true classes: columns path (or image) and label")
    p.add_argument("--masks", metavar="DIR", help="ground-truth masks, at the images' relative paths (any image suffix)")
    p.add_argument("--methods", required=True, metavar="a,b", help="explanation methods, comma-separated")
    p.add_argument("--metrics", default="", metavar="x,y",
                   help="metrics per image (e.g. deletion,insertion,pointing-game); the random and center "
                        "baselines are scored beside the methods")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR (same configuration)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where batches run (default local)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local: worker processes (one model each); ray: actors (default 1)")
    p.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (default: start a local one)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch and transaction (16)")
    p.add_argument("--layer", metavar="NAME", help="layer for CAM methods (default: readiness's default layer)")
    add_target_arguments(p)
    p.add_argument("--target-from", choices=["label", "predicted"], default="label",
                   help="classification: explain each image's label where it has one (default), or the "
                        "predicted class; both are recorded")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout (default: the framework's)")
    p.add_argument("--resize", metavar="H,W", help="resize image inputs to H,W")
    p.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted from images in [0, 1]")
    p.add_argument("--std", metavar="R,G,B", help="per-channel std dividing images after the mean")
    p.add_argument("--sanity", choices=["cheap", "full", "off"], default="cheap",
                   help="health checks of each map (see explain; default cheap)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="do not draw overlays/*.png")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (metrics, noise)")
    p.add_argument("--chunk-size", type=int, default=64, metavar="N", help="rows per model call in metrics")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("method options")
    add_method_arguments(g, npy_baseline=False)


def run(args) -> int:
    from ..errors import UsageError
    from ..runs.runner import run_dataset
    from ._common import _floats
    from .evaluate import split

    if args.baseline and args.baseline.endswith(".npy"):
        raise UsageError("a .npy baseline cannot be used in a run (one baseline for images of every size)",
                         hint="use zeros, blur or uniform")
    resize = _floats(args.resize, "--resize")
    target_text = None
    if args.target_text is not None:
        try:
            target_text = [int(v) for v in args.target_text.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--target-text '{args.target_text}' is not a comma-separated list of class "
                             "indices") from None
    output = args.output
    if output is not None and output.lstrip("-").isdigit():
        output = int(output)
    model_options = {"arch": args.arch, "arch_kwargs": args.arch_kwargs, "trust": args.trust,
                     "imports": list(args.imports), "output": output, "convert": args.convert,
                     **{k: getattr(args, k) for k in ("signature", "inputs", "outputs") if getattr(args, k, None)}}
    mb = 1024 * 1024
    limits = {"max_unpacked_bytes": None if args.max_unpacked_mb is None else int(args.max_unpacked_mb * mb),
              "max_ratio": args.max_ratio, "max_image_pixels": args.max_image_pixels,
              "max_input_bytes": None if args.max_input_mb is None else int(args.max_input_mb * mb)}
    options = {**method_options(args), "seed": args.seed}
    run = run_dataset(
        args.model, args.input_files, out=args.out, methods=split(args.methods), metrics=split(args.metrics),
        labels=args.labels, masks=args.masks, resume=args.resume, engine=args.engine, workers=args.workers,
        ray_address=args.ray_address, device=args.device, batch_size=args.batch_size, seed=args.seed,
        task=args.task, target=args.target, target_text=target_text, blank=args.blank,
        target_from=args.target_from, layer=args.layer, layout=args.layout,
        target_options={k: getattr(args, k) for k in ("target_fn", "box_index", "box", "box_format", "no_objectness")
                        if getattr(args, k, None) not in (None, False)},
        resize=None if resize is None else [int(v) for v in resize], mean=_floats(args.mean, "--mean"),
        std=_floats(args.std, "--std"), sanity=args.sanity, overlays=args.overlays,
        method_options={k: v for k, v in options.items() if v is not None},
        model_options={k: v for k, v in model_options.items() if v is not None and v is not False and v != []
                       or k == "convert"},
        limits={k: v for k, v in limits.items() if v is not None}, chunk_size=args.chunk_size,
        show_progress=not args.quiet, log=None if not args.quiet else (lambda line: None))
    _print_summary(run)
    print(f"wrote {args.out}; open its report: {run['report']}")
    return 0


def _print_summary(run: dict) -> None:
    failed = run.get("failed") or 0
    print(f"{run['images'] - failed} images in {run['seconds']:.1f} s" + (f", {failed} not readable" if failed else ""))
    for method, per in run["summary"].items():
        parts = [f"{metric} {s['mean']:.4g} ± {s['std']:.3g} (n={s['n']})" for metric, s in per.items()
                 if s["mean"] is not None]
        if parts:
            print(f"  {method}: " + ", ".join(parts), file=sys.stdout)
